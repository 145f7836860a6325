//! End to end over gRPC against a real in-process server: every RPC, auth
//! failures, bad input, restart, cancellation, failure paths.

mod common;

use std::time::Duration;

use backup_service::format::reader::BackupReader;
use backup_service::proto::{
    BackupStatus, CreateBackupRequest, DeleteBackupRequest, DownloadBackupRequest,
    GetBackupRequest, ListBackupsRequest,
};
use common::*;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tonic::Code;

async fn seed_sqlite(url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .expect("open sqlite");
    sqlx::raw_sql(
        "CREATE TABLE \"User\" (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, \"createdAt\" TEXT, avatar BLOB, score REAL);
         CREATE TABLE \"Loan\" (id INTEGER PRIMARY KEY, \"userId\" INTEGER REFERENCES \"User\"(id), amount TEXT);
         INSERT INTO \"User\" VALUES (1, 'a@example.com', '2026-01-01T00:00:00Z', x'00ff10', 1.5),
                                     (2, 'b\"q\\\n@example.com', NULL, NULL, -0.25);
         INSERT INTO \"Loan\" VALUES (10, 1, '1500.00'), (11, 2, '99.99'), (12, 1, NULL);",
    )
    .execute(&mut conn)
    .await
    .expect("seed sqlite");
}

async fn verify_file(
    bytes: Vec<u8>,
) -> (
    backup_service::format::Header,
    backup_service::format::Trailer,
) {
    let stream = futures::stream::iter(vec![Ok(bytes::Bytes::from(bytes))]).boxed();
    BackupReader::open(stream)
        .await
        .expect("header")
        .verify_to_end()
        .await
        .expect("file verifies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_create_list_get_download_delete() {
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    seed_sqlite(&db).await;
    let server = start(&config(&db, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;

    let created = client
        .create_backup(CreateBackupRequest {
            description: "Pre-deployment backup".into(),
            include_documents: None,
            r#async: false,
            compression: String::new(),
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(created.status(), BackupStatus::Completed);
    assert!(created.backup_id.starts_with("backup_"));
    assert_eq!(created.filename, format!("{}.json", created.backup_id));
    assert!(
        created.include_documents,
        "includeDocuments defaults to true"
    );
    assert_eq!(created.row_counts.get("User"), Some(&2));
    assert_eq!(created.row_counts.get("Loan"), Some(&3));
    assert_eq!(created.description, "Pre-deployment backup");
    assert!(created.size > 0);

    let got = client
        .get_backup(GetBackupRequest {
            backup_id: created.backup_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.sha256, created.sha256);

    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total, 1);
    let stats = list.cloudinary_stats.expect("stats");
    assert_eq!((stats.count, stats.total_size), (1, created.size));

    let bytes = download(&mut client, &created.backup_id, 0).await;
    assert_eq!(bytes.len() as u64, created.size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), created.sha256);
    let tail = download(&mut client, &created.backup_id, 100).await;
    assert_eq!(tail, bytes[100..]);
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).expect("the file is one JSON document");
    let users = &json["data"][0];
    assert_eq!(users["name"], "User");
    assert_eq!(users["rows"][0][3], "AP8Q", "blob as base64");
    assert_eq!(users["rows"][1][1], "b\"q\\\n@example.com");
    let (header, trailer) = verify_file(bytes).await;
    assert_eq!(header.tables[0].name, "User", "parents first");
    assert_eq!(trailer.total_rows, 5);

    let deleted = client
        .delete_backup(DeleteBackupRequest {
            backup_id: created.backup_id.clone(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.deleted);
    let err = client
        .get_backup(GetBackupRequest {
            backup_id: created.backup_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .delete_backup(DeleteBackupRequest {
            backup_id: created.backup_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "delete removes data and manifest: {left:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_changes_nothing() {
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    let server = start(&config(&db, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;

    for bad in [
        "",
        "../../etc/passwd",
        "backup_2026-03-11T12-00-00-000Z/../x",
        "backup_x",
        "backup_2026-03-11T12-00-00-000Z.json",
    ] {
        let e = client
            .get_backup(GetBackupRequest {
                backup_id: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "get {bad:?}");
        let e = client
            .delete_backup(DeleteBackupRequest {
                backup_id: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "delete {bad:?}");
        let e = client
            .download_backup(DownloadBackupRequest {
                backup_id: bad.into(),
                offset: 0,
            })
            .await
            .map(|_| ())
            .expect_err("download refused");
        assert_eq!(e.code(), Code::InvalidArgument, "download {bad:?}");
    }
    let e = client
        .get_backup(GetBackupRequest {
            backup_id: "backup_2026-03-11T12-00-00-000Z".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let e = client
        .create_backup(CreateBackupRequest {
            description: "x".repeat(1001),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("1000"), "{}", e.message());
    // 1,000 multi-byte characters are fine: the limit counts characters.
    client
        .create_backup(CreateBackupRequest {
            description: "é".repeat(1000),
            ..Default::default()
        })
        .await
        .expect("1000 characters accepted");

    for token in ["garbage", "YmVmb3Jl", "before:backup_x"] {
        let e = client
            .list_backups(ListBackupsRequest {
                page_size: 10,
                page_token: token.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "token {token:?}");
    }
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1, "refused requests created nothing");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_is_newest_first_and_restart_keeps_the_catalog() {
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    seed_sqlite(&db).await;
    let cfg = config(&db, &dir.path().join("backups"));
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let b = client
            .create_backup(CreateBackupRequest {
                description: format!("backup {i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        ids.push(b.backup_id);
    }
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 5, "ids are unique");
    server.shutdown().await;

    // Leftovers of interrupted writes and data files without a manifest:
    // stale ones are cleaned at start, fresh ones (another replica may be
    // writing them right now) are left alone.
    let backups = dir.path().join("backups");
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for (name, old) in [
        (".incomplete-00-backup_x.json", true),
        ("backup_2020-01-01T00-00-00-000Z.json", true),
        (".incomplete-01-backup_y.json", false),
        ("backup_2020-01-02T00-00-00-000Z.json.zst", false),
    ] {
        std::fs::write(backups.join(name), b"leftover").unwrap();
        if old {
            std::fs::File::options()
                .write(true)
                .open(backups.join(name))
                .unwrap()
                .set_modified(hour_ago)
                .unwrap();
        }
    }

    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_backups(ListBackupsRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total, 5);
        assert!(page.backups.len() <= 2);
        seen.extend(page.backups.into_iter().map(|b| b.backup_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert!(!backups.join(".incomplete-00-backup_x.json").exists());
    assert!(
        !backups
            .join("backup_2020-01-01T00-00-00-000Z.json")
            .exists()
    );
    assert!(
        backups.join(".incomplete-01-backup_y.json").exists(),
        "fresh temp kept"
    );
    assert!(
        backups
            .join("backup_2020-01-02T00-00-00-000Z.json.zst")
            .exists(),
        "fresh orphan kept"
    );
    server.shutdown().await;
}

fn expired_token() -> String {
    #[derive(serde::Serialize)]
    struct Claims {
        role: &'static str,
        exp: u64,
    }
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims {
            role: "ADMIN",
            exp: 1_000_000_000,
        },
        &key,
    )
    .unwrap()
}

fn app_shaped_token(role: &str, secret: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "userId": 7, "email": "ops@loans.example", "role": role, "iat": now, "exp": now + 600
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures() {
    use base64::Engine;
    let dir = temp_dir();
    let server = start(&config(
        &sqlite_url(dir.path()),
        &dir.path().join("backups"),
    ))
    .await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none_token = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(br#"{"role":"ADMIN","exp":99999999999}"#)
    );
    let cases: Vec<(Option<String>, Code)> = vec![
        (None, Code::Unauthenticated),
        (Some("Bearer".into()), Code::Unauthenticated),
        (Some("Basic YWRtaW46YWRtaW4=".into()), Code::Unauthenticated),
        (Some("Bearer not.a.jwt".into()), Code::Unauthenticated),
        (
            Some(format!("Bearer {}", expired_token())),
            Code::Unauthenticated,
        ),
        (
            Some(format!(
                "Bearer {}",
                app_shaped_token("ADMIN", "wrong-secret")
            )),
            Code::Unauthenticated,
        ),
        (Some(format!("Bearer {none_token}")), Code::Unauthenticated),
        (
            Some(format!("Bearer {}", app_shaped_token("SUPERVISOR", SECRET))),
            Code::PermissionDenied,
        ),
        (
            Some(format!(
                "Bearer {}",
                app_shaped_token("CREDIT_OFFICER", SECRET)
            )),
            Code::PermissionDenied,
        ),
    ];
    for (header, code) in cases {
        let mut client = client_with(server.grpc_addr, header.clone()).await;
        let e = client
            .list_backups(ListBackupsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{header:?}");
        let e = client
            .create_backup(CreateBackupRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{header:?}");
    }
    // The application's own token shape (numeric userId) works.
    let mut client = client_with(
        server.grpc_addr,
        Some(format!("Bearer {}", app_shaped_token("ADMIN", SECRET))),
    )
    .await;
    let created = client
        .create_backup(CreateBackupRequest::default())
        .await
        .expect("admin with app-shaped token")
        .into_inner();
    assert_eq!(
        server
            .core
            .get(&created.backup_id)
            .await
            .unwrap()
            .created_by,
        "ops@loans.example",
        "the principal reaches the handler"
    );
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1, "refused creates made nothing");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_need_no_token() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = temp_dir();
    let server = start(&config(
        &sqlite_url(dir.path()),
        &dir.path().join("backups"),
    ))
    .await;
    let channel = channel(server.grpc_addr).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "backup.v1.BackupService"] {
        let mut status = ServingStatus::Unknown;
        for _ in 0..50 {
            if let Ok(r) = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
            {
                status = r.into_inner().status();
                if status == ServingStatus::Serving {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection without token")
        .into_inner();
    let response = responses.message().await.unwrap().expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"backup.v1.BackupService"), "{names:?}");

    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    let mut alpha = AlphaClient::new(channel);
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "backup.v1.BackupService".into(),
            ),
        ),
    };
    let mut responses = alpha
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    assert!(responses.message().await.unwrap().is_some());
    server.shutdown().await;
}
