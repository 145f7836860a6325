//! The Cloudinary backend end to end: the real server in-process with real
//! gRPC and REST clients, against the contract server in
//! `common/cloudinary.rs` (signatures, chunked uploads, the per-asset cap,
//! paging, rate limits and injected failures as Cloudinary documents them).

mod common;

use std::time::Duration;

use backup_service::proto::{
    BackupStatus, CreateBackupRequest, DeleteBackupRequest, GetBackupRequest, ListBackupsRequest,
};
use base64::Engine;
use common::cloudinary::{CloudinaryServer, Fault, FaultKind, Op};
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A database of `rows` rows of about 270 bytes of JSON each.
async fn database(rows: u32) -> TestDatabase {
    let db = TestDatabase::create().await;
    db.exec(&format!(
        "CREATE TABLE \"Document\" (id serial PRIMARY KEY, payload text NOT NULL);
         INSERT INTO \"Document\" (payload) SELECT repeat(md5(g::text), 8) FROM generate_series(1, {rows}) g;"
    ))
    .await;
    db
}

fn cloudinary_config(
    db: &TestDatabase,
    cld: &CloudinaryServer,
    options: &str,
) -> backup_service::config::ServeConfig {
    let mut cfg = config(&db.url, std::path::Path::new("unused"));
    cfg.storage_url = cld.url(options);
    cfg.cloudinary_api_base = cld.base.clone();
    cfg
}

async fn create(
    client: &mut Client,
    description: &str,
    compression: &str,
) -> backup_service::proto::Backup {
    client
        .create_backup(CreateBackupRequest {
            description: description.into(),
            compression: compression.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{description}: {e}"))
        .into_inner()
}

async fn rest_get(server: &backup_service::app::Running, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{}{path}", server.http_addr))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .unwrap()
}

/// Public ids on the contract server that belong to a backup.
fn assets_of(cld: &CloudinaryServer, backup_id: &str) -> Vec<String> {
    cld.public_ids()
        .into_iter()
        .filter(|p| p.contains(backup_id))
        .collect()
}

/// Downloads over gRPC and REST and checks both against the record.
async fn check_download(
    server: &backup_service::app::Running,
    client: &mut Client,
    b: &backup_service::proto::Backup,
) {
    let bytes = download(client, &b.backup_id, 0).await;
    assert_eq!(bytes.len() as u64, b.size, "{}", b.backup_id);
    assert_eq!(
        sha(&bytes),
        b.sha256,
        "gRPC download has the record's sha256"
    );
    let offset = b.size * 2 / 3;
    let tail = download(client, &b.backup_id, offset).await;
    assert!(
        tail == bytes[offset as usize..],
        "ranged read from {offset}"
    );
    let r = rest_get(server, &format!("/api/backup/download/{}", b.backup_id)).await;
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let rest = r.bytes().await.unwrap();
    assert_eq!(
        sha(&rest),
        b.sha256,
        "REST download has the record's sha256"
    );
}

#[test]
fn contract_server_signs_like_the_published_examples() {
    use common::cloudinary::{signature, string_to_sign};
    let params: std::collections::BTreeMap<String, String> = [
        ("eager", "w_400,h_300,c_pad|w_260,h_200,c_crop"),
        ("public_id", "sample_image"),
        ("timestamp", "1315060510"),
        ("api_key", "ignored"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let text = string_to_sign(
        &params,
        &[
            "file",
            "cloud_name",
            "resource_type",
            "api_key",
            "signature",
        ],
    );
    assert_eq!(
        signature(&text, "abcd", false),
        "bfd09f95f331f558cbd1320e67aa8d488770583e"
    );
    assert_eq!(
        signature(&text, "abcd", true),
        "cc927e1290f9e3ae4c1a741eda21a4630b4ce80f9ce0bc0296337d25cf40f91e"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_backup_create_list_get_download_delete() {
    let cld = CloudinaryServer::start().await;
    let db = database(2000).await;
    let cfg = cloudinary_config(&db, &cld, "");
    let server = start(&cfg).await;
    let describe = server.core.storage().describe();
    assert!(!describe.contains(&cld.secret), "{describe}");
    assert!(describe.contains("type=authenticated"), "{describe}");
    let mut client = admin_client(server.grpc_addr).await;

    let b = create(&mut client, "small", "none").await;
    assert_eq!(b.status(), BackupStatus::Completed);
    let public_id = format!("backups/{}", b.filename);
    let asset = cld.asset(&public_id).expect("the backup is a raw asset");
    assert_eq!(
        asset.delivery_type, "authenticated",
        "never public by default"
    );
    assert_eq!(asset.bytes.len() as u64, b.size);
    assert!(
        b.cloudinary_url
            .starts_with("https://res.cloudinary.com/test-cloud/raw/authenticated/v")
    );
    assert!(
        b.cloudinary_url.ends_with(&public_id),
        "{}",
        b.cloudinary_url
    );
    let manifest = cld
        .asset(&format!("backups/{}.manifest.json", b.backup_id))
        .expect("the manifest is its own raw asset");
    let manifest: Value = serde_json::from_slice(&manifest.bytes).unwrap();
    assert_eq!(manifest["record"]["sha256"], b.sha256.as_str());
    assert!(
        manifest["record"].get("storageParts").is_none(),
        "one asset: no parts"
    );

    let got = client
        .get_backup(GetBackupRequest {
            backup_id: b.backup_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.sha256, b.sha256);
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    let stats = list.cloudinary_stats.unwrap();
    assert_eq!((stats.count, stats.total_size), (1, b.size));
    let rest: Value = rest_get(&server, "/api/backup/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        rest["backups"][0]["cloudinaryUrl"],
        b.cloudinary_url.as_str()
    );
    assert_eq!(rest["cloudinaryStats"]["count"], 1);
    assert_eq!(rest["cloudinaryStats"]["totalSize"], b.size);
    check_download(&server, &mut client, &b).await;

    // Health checks every second do not spend the Admin API budget.
    let before = cld.admin_calls();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        cld.admin_calls() <= before + 1,
        "health checks called the Admin API {} times",
        cld.admin_calls() - before
    );
    let ready = rest_get(&server, "/readyz").await;
    assert!(ready.status().is_success());

    // Delete over REST: data and manifest go; again, and unknown ids, are NOT_FOUND.
    let r = reqwest::Client::new()
        .delete(format!(
            "http://{}/api/backup/{}",
            server.http_addr, b.backup_id
        ))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(
        assets_of(&cld, &b.backup_id).is_empty(),
        "{:?}",
        cld.public_ids()
    );
    let e = client
        .delete_backup(DeleteBackupRequest {
            backup_id: b.backup_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = client
        .delete_backup(DeleteBackupRequest {
            backup_id: "backup_2020-01-01T00-00-00-000Z".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // The storage contract itself: deleting an object Cloudinary does not have is NotFound.
    let e = server
        .core
        .storage()
        .delete("backup_2020-01-01T00-00-00-000Z.json")
        .await
        .unwrap_err();
    assert_eq!(e.code, backup_service::error::ErrorCode::NotFound);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_over_20_mb_is_a_chunked_upload_and_survives_transient_failures() {
    let cld = CloudinaryServer::start().await;
    let db = database(100_000).await;
    let cfg = cloudinary_config(&db, &cld, "signature_algorithm=sha256");
    cld.use_sha256(true);
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    // The first chunk's connection drops, the second chunk gets a 500: both once.
    cld.fail(Fault::new(Op::UploadChunk, 1, FaultKind::Drop, false).on(".json"));
    cld.fail(Fault::new(Op::UploadChunk, 3, FaultKind::Status500, false).on(".json"));
    let b = create(&mut client, "large", "none").await;
    assert!(b.size > 20_000_000, "{} bytes is not over 20 MB", b.size);
    let chunks: Vec<String> = cld
        .log()
        .into_iter()
        .filter(|l| l.starts_with("POST upload bytes"))
        .collect();
    assert!(
        chunks.contains(&"POST upload bytes 0-19999999/-1".to_string()),
        "{chunks:?}"
    );
    let sent = b.size.div_ceil(20_000_000) as usize;
    assert_eq!(
        chunks.len(),
        sent + 2,
        "two chunk requests were retried: {chunks:?}"
    );
    assert!(
        chunks
            .iter()
            .any(|c| c.ends_with(&format!("-{}/{}", b.size - 1, b.size))),
        "the last chunk names the total: {chunks:?}"
    );
    // One asset under the object's own name, no index.
    let assets = assets_of(&cld, &b.backup_id);
    assert_eq!(
        assets,
        vec![
            format!("backups/{}", b.filename),
            format!("backups/{}.manifest.json", b.backup_id)
        ]
    );
    assert_eq!(cld.pending_uploads(), 0);
    check_download(&server, &mut client, &b).await;
    client
        .delete_backup(DeleteBackupRequest {
            backup_id: b.backup_id.clone(),
        })
        .await
        .unwrap();
    assert!(assets_of(&cld, &b.backup_id).is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_over_the_per_asset_cap_is_stored_in_parts() {
    let cld = CloudinaryServer::start().await;
    cld.set_cap(common::cloudinary::FREE_PLAN_CAP);
    let db = database(100_000).await;
    let cfg = cloudinary_config(&db, &cld, "type=private");
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let b = create(&mut client, "parts", "none").await;
    let n = b.size.div_ceil(common::cloudinary::FREE_PLAN_CAP) as usize;
    assert!(n >= 2, "{} bytes fit the cap", b.size);
    let mut expected = vec![format!("backups/{}", b.filename)];
    for k in 2..=n {
        expected.push(format!("backups/{}.part{k:04}", b.filename));
    }
    expected.push(format!("backups/{}.parts.json", b.filename));
    expected.push(format!("backups/{}.manifest.json", b.backup_id));
    expected.sort();
    assert_eq!(assets_of(&cld, &b.backup_id), expected);
    for (id, size) in cld.assets() {
        assert!(
            size as u64 <= common::cloudinary::FREE_PLAN_CAP,
            "{id} is {size} bytes"
        );
        assert_eq!(cld.asset(&id).unwrap().delivery_type, "private");
    }
    assert!(
        b.cloudinary_url
            .ends_with(&format!("{}.parts.json", b.filename)),
        "{}",
        b.cloudinary_url
    );
    // The manifest holds the record plus the parts with sizes and sha256.
    let manifest = cld
        .asset(&format!("backups/{}.manifest.json", b.backup_id))
        .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let parts = manifest["record"]["storageParts"]
        .as_array()
        .expect("storageParts")
        .clone();
    assert_eq!(parts.len(), n);
    let mut whole = Vec::new();
    for (k, part) in parts.iter().enumerate() {
        let name = part["name"].as_str().unwrap();
        let stored = cld.asset(&format!("backups/{name}")).unwrap();
        assert_eq!(part["bytes"], stored.bytes.len() as u64, "part {k}");
        assert_eq!(part["sha256"], sha(&stored.bytes).as_str(), "part {k}");
        whole.extend_from_slice(&stored.bytes);
    }
    assert_eq!(sha(&whole), b.sha256, "the parts in order are the file");
    check_download(&server, &mut client, &b).await;
    let report = verify(&mut client, &b.backup_id).await;
    assert!(report.ok, "{:?}", report.problems);

    // A part already gone does not fail the delete; everything else goes.
    assert!(cld.remove(&format!("backups/{}.part0002", b.filename)));
    client
        .delete_backup(DeleteBackupRequest {
            backup_id: b.backup_id.clone(),
        })
        .await
        .unwrap();
    assert!(
        assets_of(&cld, &b.backup_id).is_empty(),
        "{:?}",
        cld.public_ids()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_encrypted_backups_round_trip() {
    let cld = CloudinaryServer::start().await;
    let db = database(12_000).await;
    // 1 MiB parts so the encrypted files are multi-part too.
    let mut cfg = cloudinary_config(&db, &cld, "part_size=1048576");
    cfg.keys.encryption_key = Some(base64::engine::general_purpose::STANDARD.encode([7u8; 32]));
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    for compression in ["none", "zstd", "gzip"] {
        let b = create(&mut client, compression, compression).await;
        assert!(b.filename.ends_with(".enc"), "{}", b.filename);
        let data = cld
            .asset(&format!("backups/{}", b.filename))
            .expect("data asset");
        assert!(
            !String::from_utf8_lossy(&data.bytes).contains("Document"),
            "stored encrypted"
        );
        check_download(&server, &mut client, &b).await;
        let report = verify(&mut client, &b.backup_id).await;
        assert!(report.ok, "{compression}: {:?}", report.problems);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_is_rebuilt_from_cloudinary_alone() {
    let cld = CloudinaryServer::start().await;
    cld.set_page_size(2);
    let db = database(8000).await;
    let cfg = cloudinary_config(&db, &cld, "folder=prod/loans&part_size=1048576");
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let mut made = Vec::new();
    for (i, compression) in ["none", "zstd", "none"].into_iter().enumerate() {
        made.push(create(&mut client, &format!("b{i}"), compression).await);
    }
    let pool = db.pool().await;
    let failed = failed_backup(&mut client, &pool, "\"Document\"").await;
    pool.close().await;
    // The aborted upload left nothing but the failed record's manifest.
    assert_eq!(
        assets_of(&cld, &failed),
        vec![format!("prod/loans/{failed}.manifest.json")]
    );
    assert!(
        cld.public_ids()
            .iter()
            .all(|p| p.starts_with("prod/loans/")),
        "{:?}",
        cld.public_ids()
    );
    let before = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    server.shutdown().await;

    // Leftovers of a crash: an old part without an index, an old data asset
    // without a manifest (both go), a fresh part (may be mid-write: stays).
    let old_part = "prod/loans/backup_2020-01-01T00-00-00-000Z.json.part0002";
    let old_data = "prod/loans/backup_2020-01-02T00-00-00-000Z.json";
    let fresh_part = "prod/loans/backup_2020-01-03T00-00-00-000Z.json.part0002";
    for id in [old_part, old_data, fresh_part] {
        cld.insert(id, "authenticated", b"leftover");
    }
    cld.age(old_part, 3600);
    cld.age(old_data, 3600);

    // A new server with nothing on its local disk.
    let lists_before = cld.log().iter().filter(|l| *l == "GET list").count();
    let dir = temp_dir();
    let mut cfg2 = cfg.clone();
    cfg2.database_url = sqlite_url(dir.path());
    let server = start(&cfg2).await;
    let pages = cld.log().iter().filter(|l| *l == "GET list").count() - lists_before;
    assert!(pages >= 3, "listing went through several pages ({pages})");
    let ids = cld.public_ids();
    assert!(
        !ids.iter().any(|p| p == old_part || p == old_data),
        "{ids:?}"
    );
    assert!(ids.iter().any(|p| p == fresh_part), "{ids:?}");
    let mut client = admin_client(server.grpc_addr).await;
    let after = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.total, 4);
    assert_eq!(after.backups, before.backups);
    let stats = after.cloudinary_stats.unwrap();
    assert_eq!(stats.count, 3);
    assert_eq!(stats.total_size, made.iter().map(|b| b.size).sum::<u64>());
    assert!(
        after
            .backups
            .iter()
            .any(|b| b.backup_id == failed && b.status() == BackupStatus::Failed)
    );
    for b in &made {
        let bytes = download(&mut client, &b.backup_id, 0).await;
        assert_eq!(sha(&bytes), b.sha256);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_clear_retried_or_cleaned_up() {
    let cld = CloudinaryServer::start().await;
    let db = database(8000).await;
    let cfg = cloudinary_config(&db, &cld, "part_size=1048576&retries=2");

    // 420 from the Admin API, then success: retried (start lists the folder).
    cld.answer_420(2);
    let server = start(&cfg).await;
    assert_eq!(
        cld.pending_420(),
        0,
        "both 420 answers were met and retried"
    );
    let mut client = admin_client(server.grpc_addr).await;

    // A request failing for good mid-upload (the second part) fails the
    // backup with a clear message and leaves no asset of its data behind.
    cld.fail(Fault::new(Op::Upload, 2, FaultKind::Status500, true).on(".json.part"));
    let e = client
        .create_backup(CreateBackupRequest {
            description: "doomed".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    assert!(
        e.message().contains("Cloudinary answered 500"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("General Error"), "{}", e.message());
    cld.clear_faults();
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let failed = &list.backups[0];
    assert_eq!(failed.status(), BackupStatus::Failed);
    assert_eq!(
        assets_of(&cld, &failed.backup_id),
        vec![format!("backups/{}.manifest.json", failed.backup_id)],
        "only the failed record's manifest stays"
    );
    assert_eq!(list.cloudinary_stats.unwrap().count, 0);

    // The size cap: a clear 500 naming Cloudinary's reason, nothing left.
    cld.set_cap(1000);
    let e = client
        .create_backup(CreateBackupRequest {
            description: "too big".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    assert!(
        e.message().contains("File size too large"),
        "{}",
        e.message()
    );
    cld.set_cap(200 * 1024 * 1024);

    // The account's secret changed: refused signatures, named, never the secret.
    cld.rotate_secret("a-new-secret-value");
    let e = client
        .create_backup(CreateBackupRequest {
            description: "bad signature".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("Invalid Signature"), "{}", e.message());
    assert!(e.message().contains("String to sign"), "{}", e.message());
    assert!(!e.message().contains(&cld.secret) && !e.message().contains("a-new-secret-value"));
    server.shutdown().await;

    // A wrong secret from the start: the server refuses to start, clearly.
    let mut wrong = cfg.clone();
    wrong.storage_url = wrong.storage_url.replace(&cld.secret, "wrong-secret-123");
    let e = backup_service::app::start(&wrong)
        .await
        .err()
        .expect("refused");
    assert!(
        e.message.contains("401") && e.message.contains("Invalid credentials"),
        "{}",
        e.message
    );
    assert!(
        !e.message.contains("wrong-secret-123") && !e.message.contains(&cld.secret),
        "{}",
        e.message
    );
    let data: Vec<String> = cld
        .public_ids()
        .into_iter()
        .filter(|p| !p.ends_with(".manifest.json"))
        .collect();
    assert!(data.is_empty(), "no orphan data assets: {data:?}");
    assert_eq!(cld.pending_uploads(), 0, "no half-finished chunked uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_public_type_and_cloudinary_url_fallback() {
    let cld = CloudinaryServer::start().await;
    let db = database(100).await;
    // Public delivery only with an explicit opt-in.
    let cfg = cloudinary_config(&db, &cld, "type=upload");
    let e = backup_service::app::start(&cfg)
        .await
        .err()
        .expect("refused");
    assert!(e.message.contains("allow_public=true"), "{}", e.message);
    assert!(!e.message.contains(&cld.secret));
    let cfg = cloudinary_config(&db, &cld, "type=upload&allow_public=true");
    let server = start(&cfg).await;
    server.shutdown().await;

    // STORAGE_URL unset: the binary uses CLOUDINARY_URL (and CLOUDINARY_API_BASE),
    // and its logs never show the secret.
    let dir = temp_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backup-service"))
        .arg("serve")
        .env_remove("STORAGE_URL")
        .env("CLOUDINARY_URL", cld.url("folder=from-env"))
        .env("CLOUDINARY_API_BASE", &cld.base)
        .env("DATABASE_URL", &db.url)
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "debug")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    let mut listed = false;
    for _ in 0..100 {
        if cld.log().iter().any(|l| l == "GET list") {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.kill();
    let output = child.wait_with_output().expect("logs");
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(listed, "the binary never listed Cloudinary: {logs}");
    assert!(logs.contains("cloudinary://"), "{logs}");
    assert!(
        !logs.contains(&cld.secret),
        "the secret is in the logs: {logs}"
    );
    assert!(
        !dir.path().join("data/backups").exists(),
        "nothing went to the local default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_budget_is_respected_and_replicas_see_each_other() {
    let cld = CloudinaryServer::start().await;
    let db = database(200).await;
    let cfg = cloudinary_config(&db, &cld, "list_cache_secs=1");
    let a = start(&cfg).await;
    let b = start(&cfg).await;
    let mut on_b = admin_client(b.grpc_addr).await;
    let mut on_a = admin_client(a.grpc_addr).await;
    let first = create(&mut on_b, "from b", "none").await;

    // A sees B's backup once its listing is older than list_cache_secs (a
    // refresh happens on GetSchedule, at schedule slots and before pruning).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        rest_get(&a, "/api/backup/schedule")
            .await
            .status()
            .is_success()
    );
    let list = on_a
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.backups.len(), 1);
    assert_eq!(list.backups[0].backup_id, first.backup_id);

    // The next Admin call uses up the hour's budget (X-FeatureRateLimit-Remaining: 0).
    cld.set_admin_limit(cld.admin_calls() + 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        rest_get(&a, "/api/backup/schedule")
            .await
            .status()
            .is_success()
    );
    let calls = cld.admin_calls();
    create(&mut on_b, "second from b", "none").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        rest_get(&a, "/api/backup/schedule")
            .await
            .status()
            .is_success()
    );
    assert_eq!(
        cld.admin_calls(),
        calls,
        "no Admin call until the budget resets"
    );
    let list = on_a
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        list.backups.len(),
        1,
        "the cached listing is used meanwhile"
    );
    // Uploads are not rate limited, and health stays SERVING.
    create(&mut on_a, "from a", "none").await;
    assert!(rest_get(&a, "/readyz").await.status().is_success());
    a.shutdown().await;
    b.shutdown().await;
}

/// A signed multipart request to the contract server, as a client would send it.
fn signed_form(
    cld: &CloudinaryServer,
    fields: &[(&str, String)],
    sign_with: &str,
) -> (String, Vec<u8>) {
    signed_upload(cld, fields, sign_with, None)
}

fn signed_upload(
    cld: &CloudinaryServer,
    fields: &[(&str, String)],
    sign_with: &str,
    file: Option<&[u8]>,
) -> (String, Vec<u8>) {
    use common::cloudinary::{signature, string_to_sign};
    let mut params: std::collections::BTreeMap<String, String> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let text = string_to_sign(
        &params,
        &[
            "file",
            "cloud_name",
            "resource_type",
            "api_key",
            "signature",
        ],
    );
    params.insert("signature".into(), signature(&text, sign_with, false));
    params.insert("api_key".into(), cld.api_key.clone());
    let boundary = "contract-test-boundary";
    let mut body = Vec::new();
    for (k, v) in &params {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    if let Some(file) = file {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_server_refuses_what_cloudinary_refuses() {
    let cld = CloudinaryServer::start().await;
    let http = reqwest::Client::new();
    let destroy = format!("{}/v1_1/{}/raw/destroy", cld.base, cld.cloud);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let post = |form: (String, Vec<u8>)| {
        http.post(&destroy)
            .header("content-type", form.0)
            .body(form.1)
            .send()
    };
    let fields = |ts: u64| {
        vec![
            ("public_id", "backups/x.json".to_string()),
            ("timestamp", ts.to_string()),
            ("type", "authenticated".to_string()),
        ]
    };

    // Correctly signed: answered.
    let r = post(signed_form(&cld, &fields(now), &cld.secret))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["result"], "not found");
    // Wrong secret: 401 naming the string to sign.
    let r = post(signed_form(&cld, &fields(now), "not-the-secret"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("String to sign - 'public_id=backups/x.json&timestamp="),
        "{message}"
    );
    // Over an hour old: stale.
    let r = post(signed_form(&cld, &fields(now - 3700), &cld.secret))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Stale request")
    );
    // Admin API: Basic auth required, max_results at most 500.
    let list = format!(
        "{}/v1_1/{}/resources/raw/authenticated",
        cld.base, cld.cloud
    );
    assert_eq!(http.get(&list).send().await.unwrap().status(), 401);
    let r = http
        .get(format!("{list}?max_results=501"))
        .basic_auth(&cld.api_key, Some(&cld.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(&list)
        .basic_auth(&cld.api_key, Some(&cld.secret))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-featureratelimit-remaining"));

    // Chunked uploads: non-final chunks of at least 5 MB, contiguous.
    let upload = format!("{}/v1_1/{}/raw/upload", cld.base, cld.cloud);
    let chunk = |range: &str, data: &[u8]| {
        let form = signed_upload(&cld, &fields(now), &cld.secret, Some(data));
        http.post(&upload)
            .header("content-type", form.0)
            .header("x-unique-upload-id", "u1")
            .header("content-range", range.to_string())
            .body(form.1)
            .send()
    };
    let small = vec![1u8; 1024];
    let r = chunk("bytes 0-1023/-1", &small).await.unwrap();
    assert_eq!(r.status(), 400, "a small non-final chunk is refused");
    let big = vec![2u8; common::cloudinary::MIN_CHUNK];
    let last = big.len() - 1;
    let r = chunk(&format!("bytes 0-{last}/-1"), &big).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["done"], false);
    let r = chunk("bytes 10-1033/99999999", &small).await.unwrap();
    assert_eq!(r.status(), 400, "a gap is refused");
    let (first, end) = (big.len(), big.len() + small.len());
    let r = chunk(&format!("bytes {first}-{}/{end}", end - 1), &small)
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the last chunk may be small");
    let asset: Value = r.json().await.unwrap();
    assert_eq!(asset["bytes"], end as u64);
    assert_eq!(cld.asset("backups/x.json").unwrap().bytes.len(), end);
}

/// The storage itself, on the contract server.
async fn open_storage(
    cld: &CloudinaryServer,
    options: &str,
) -> std::sync::Arc<dyn backup_service::storage::Storage> {
    backup_service::storage::open(&cld.url(options), &cld.base)
        .await
        .expect("open the Cloudinary storage")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_multi_part_upload_is_judged_by_its_newest_part() {
    use backup_service::storage::STALE_AFTER;
    let cld = CloudinaryServer::start().await;
    let storage = open_storage(&cld, "").await;
    // Another replica's upload, running for an hour: parts 1 and 2 are old,
    // part 3 was just written, the index is not there yet.
    let running = "backup_2026-01-01T00-00-00-000Z.json";
    let running_ids: Vec<String> = ["", ".part0002", ".part0003"]
        .iter()
        .map(|s| format!("backups/{running}{s}"))
        .collect();
    // A crash long ago: every asset old, no index.
    let crashed = "backup_2020-01-01T00-00-00-000Z.json";
    let crashed_ids = [
        format!("backups/{crashed}"),
        format!("backups/{crashed}.part0002"),
    ];
    for id in running_ids.iter().chain(&crashed_ids) {
        cld.insert(id, "authenticated", b"part");
    }
    for id in running_ids[..2].iter().chain(&crashed_ids) {
        cld.age(id, 3600);
    }
    assert_eq!(storage.clean_incomplete().await.unwrap(), 1);
    let ids = cld.public_ids();
    for id in &running_ids {
        assert!(ids.contains(id), "{id} kept: {ids:?}");
    }
    assert!(!ids.contains(&crashed_ids[1]), "{ids:?}");
    // An object's age is its newest asset's.
    assert!(storage.age(running).await.unwrap() < STALE_AFTER);
    assert!(storage.age(crashed).await.unwrap() >= STALE_AFTER);
    // Start-up cleaning as a whole leaves the running upload alone.
    backup_service::backup::catalog::Catalog::load(storage.as_ref())
        .await
        .unwrap();
    let ids = cld.public_ids();
    assert_eq!(ids, running_ids, "only the crash's leftovers went");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_fails_and_cleans_up_when_a_part_vanished() {
    let cld = CloudinaryServer::start().await;
    let storage = open_storage(&cld, "part_size=1048576").await;
    let name = "backup_2026-01-02T00-00-00-000Z.json";
    let data = bytes::Bytes::from(vec![7u8; 2_500_000]);

    // Untouched, the same write finishes in three parts and an index.
    let mut w = storage.create(name).await.unwrap();
    w.write(data.clone()).await.unwrap();
    let stored = w.finish().await.unwrap();
    assert_eq!(stored.parts.len(), 3);
    storage.delete(name).await.unwrap();
    assert!(cld.public_ids().is_empty(), "{:?}", cld.public_ids());

    // Part 2 destroyed while the upload runs (another replica's cleaning).
    let mut w = storage.create(name).await.unwrap();
    w.write(data).await.unwrap();
    assert!(cld.remove(&format!("backups/{name}.part0002")));
    let e = w.finish().await.unwrap_err();
    assert!(e.message.contains("vanished"), "{}", e.message);
    assert!(
        cld.public_ids().is_empty(),
        "no index and no other part left: {:?}",
        cld.public_ids()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_write_goes_out_in_chunks_of_chunk_size() {
    let chunk = common::cloudinary::MIN_CHUNK;
    let cld = CloudinaryServer::start().await;
    let storage = open_storage(&cld, &format!("chunk_size={chunk}")).await;
    let name = "backup_2026-01-03T00-00-00-000Z.json";
    let data: Vec<u8> = (0..3 * chunk + 1000).map(|i| (i % 251) as u8).collect();
    let mut w = storage.create(name).await.unwrap();
    // One write of more than three chunks.
    w.write(bytes::Bytes::from(data.clone())).await.unwrap();
    w.finish().await.unwrap();
    let sizes: Vec<u64> = cld
        .log()
        .iter()
        .filter_map(|l| l.strip_prefix("POST upload bytes "))
        .map(|range| {
            let (span, _) = range.split_once('/').unwrap();
            let (a, b) = span.split_once('-').unwrap();
            b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1
        })
        .collect();
    assert_eq!(sizes.len(), 4, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s <= chunk as u64), "{sizes:?}");
    assert!(cld.asset(&format!("backups/{name}")).unwrap().bytes == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_do_not_wait_for_a_slow_listing_and_are_not_lost_from_it() {
    let cld = CloudinaryServer::start().await;
    let storage = open_storage(&cld, "").await;
    cld.set_list_delay(Duration::from_secs(20));
    let lister = storage.clone();
    let listing = tokio::spawn(async move { lister.list("").await });
    while cld.lists_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Written while the listing is held back: done before it answers.
    let name = "backup_2026-01-04T00-00-00-000Z.manifest.json";
    storage
        .put_small(name, bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(
        cld.lists_in_flight(),
        1,
        "the write waited for the listing to finish"
    );
    // The listing was taken before the write; the cache has the write anyway.
    let listed = listing.await.unwrap().unwrap();
    assert!(listed.iter().any(|n| n == name), "{listed:?}");
    cld.set_list_delay(Duration::ZERO);
    let lists = cld.log().iter().filter(|l| *l == "GET list").count();
    assert_eq!(storage.list("").await.unwrap(), listed);
    assert_eq!(
        cld.log().iter().filter(|l| *l == "GET list").count(),
        lists,
        "served from the cache"
    );
}
