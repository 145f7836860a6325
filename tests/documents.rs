//! includeDocuments end to end: real PostgreSQL, a local document server
//! (axum on 127.0.0.1:0), the real backup server in process and, for
//! extraction and memory, the real binary.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backup_service::config::ServeConfig;
use backup_service::proto::{
    Backup, CreateBackupRequest, ListBackupsRequest, RestoreBackupRequest,
    SetMaintenanceModeRequest, VerifyBackupRequest,
};
use base64::Engine;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_backup-service");
const COLUMNS: &str = r#""LoanDocument"."fileUrl","public"."UnionMemberDocument"."fileUrl""#;
const SCHEMA: &str = r#"
CREATE TABLE "LoanDocument" (id serial PRIMARY KEY, "fileUrl" text);
CREATE TABLE "UnionMemberDocument" (id serial PRIMARY KEY, "fileUrl" text, note text);
"#;
const BIG: usize = 50 * 1024 * 1024;

/// What the document server serves: name -> (content type, bytes).
#[derive(Clone, Default)]
struct Served {
    files: Arc<HashMap<String, (String, Vec<u8>)>>,
    flaky_hits: Arc<AtomicUsize>,
}

fn bytes_of(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn served_files() -> HashMap<String, (String, Vec<u8>)> {
    let mut files = HashMap::new();
    files.insert(
        "contract.pdf".to_string(),
        ("application/pdf".to_string(), bytes_of(200_000, 1)),
    );
    // Not a multiple of 3 nor of the chunk size: the last line is padded.
    files.insert(
        "id-card.png".to_string(),
        ("image/png".to_string(), bytes_of(100_001, 2)),
    );
    files.insert(
        "empty.txt".to_string(),
        ("text/plain".to_string(), Vec::new()),
    );
    // Every byte value, twice.
    files.insert(
        "all-bytes.bin".to_string(),
        (
            "application/octet-stream".to_string(),
            (0..512u32).map(|i| (i % 256) as u8).collect(),
        ),
    );
    files
}

async fn serve_doc(State(s): State<Served>, UrlPath(name): UrlPath<String>) -> Response {
    match s.files.get(&name) {
        Some((ct, bytes)) => ([(header::CONTENT_TYPE, ct.clone())], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn flaky(State(s): State<Served>) -> Response {
    if s.flaky_hits.fetch_add(1, Ordering::SeqCst) == 0 {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/plain")], "second time lucky").into_response()
    }
}

async fn big() -> Response {
    let chunks = futures::stream::iter(0..BIG / (1024 * 1024)).map(|i| {
        Ok::<_, std::io::Error>(bytes::Bytes::from(bytes_of(1024 * 1024, 1000 + i as u64)))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/pdf")
        .header(header::CONTENT_LENGTH, BIG.to_string())
        .body(Body::from_stream(chunks))
        .unwrap_or_default()
}

fn big_sha() -> String {
    let mut h = Sha256::new();
    for i in 0..BIG / (1024 * 1024) {
        h.update(bytes_of(1024 * 1024, 1000 + i as u64));
    }
    hex::encode(h.finalize())
}

use futures::StreamExt;

/// Starts the document server; returns its address and state.
async fn document_server() -> (SocketAddr, Served) {
    let served = Served {
        files: Arc::new(served_files()),
        flaky_hits: Arc::new(AtomicUsize::new(0)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind document server");
    let addr = listener.local_addr().expect("address");
    let app = Router::new()
        .route("/docs/{name}", get(serve_doc))
        .route("/flaky", get(flaky))
        .route("/big.pdf", get(big))
        .route(
            "/slow.pdf",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(120)).await;
                "too late"
            }),
        )
        .route(
            "/redirect-out",
            get(|| async { axum::response::Redirect::temporary("http://evil.example/x.pdf") }),
        )
        .route(
            "/redirect-metadata",
            get(|| async {
                axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data")
            }),
        )
        .with_state(served.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, served)
}

fn documents_config(db: &TestDatabase, storage: &Path) -> ServeConfig {
    let mut c = config(&db.url, storage);
    c.document_columns = COLUMNS.into();
    c.document_allowed_hosts = vec!["127.0.0.1".into()];
    c.document_retries = 1;
    c.document_timeout = Duration::from_secs(60);
    c
}

async fn insert_urls(db: &TestDatabase, loan: &[String], member: &[String]) {
    let pool = db.pool().await;
    for url in loan {
        sqlx::query(r#"INSERT INTO "LoanDocument" ("fileUrl") VALUES ($1)"#)
            .bind(url)
            .execute(&pool)
            .await
            .expect("insert");
    }
    for url in member {
        sqlx::query(r#"INSERT INTO "UnionMemberDocument" ("fileUrl") VALUES ($1)"#)
            .bind(url)
            .execute(&pool)
            .await
            .expect("insert");
    }
    sqlx::query(r#"INSERT INTO "LoanDocument" ("fileUrl") VALUES (NULL), ('')"#)
        .execute(&pool)
        .await
        .expect("insert");
    pool.close().await;
}

async fn create(client: &mut Client, include: bool) -> Result<Backup, tonic::Status> {
    client
        .create_backup(CreateBackupRequest {
            include_documents: Some(include),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

fn documents_of(file: &Value) -> HashMap<String, (String, Vec<u8>, u64, String)> {
    let mut out = HashMap::new();
    for doc in file["documents"].as_array().expect("documents section") {
        let mut bytes = Vec::new();
        for chunk in doc["chunks"].as_array().expect("chunks") {
            bytes.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(chunk.as_str().expect("base64 string"))
                    .expect("valid base64"),
            );
        }
        out.insert(
            doc["url"].as_str().expect("url").to_string(),
            (
                doc["contentType"].as_str().expect("type").to_string(),
                bytes,
                doc["size"].as_u64().expect("size"),
                doc["sha256"].as_str().expect("sha").to_string(),
            ),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_embedded_with_their_bytes_and_hashes_or_left_out_on_request() {
    let (addr, served) = document_server().await;
    let db = TestDatabase::create().await;
    db.exec(SCHEMA).await;
    let url = |name: &str| format!("http://{addr}/docs/{name}");
    let shared = url("contract.pdf");
    insert_urls(
        &db,
        &[
            shared.clone(),
            url("id-card.png"),
            url("empty.txt"),
            shared.clone(),
        ],
        &[
            shared.clone(),
            url("all-bytes.bin"),
            format!("http://{addr}/flaky"),
        ],
    )
    .await;
    let storage = temp_dir();
    let server = start(&documents_config(&db, storage.path())).await;
    let mut client = admin_client(server.grpc_addr).await;

    let with = create(&mut client, true)
        .await
        .expect("backup with documents");
    assert_eq!(with.document_count, 5, "distinct URLs: {with:?}");
    assert_eq!(with.warning_count, 0, "{:?}", with.missing_documents);
    assert_eq!(with.format_version, 2);
    let bytes = download(&mut client, &with.backup_id, 0).await;
    // The whole file is one JSON document.
    let file: Value = serde_json::from_slice(&bytes).expect("the backup is JSON");
    assert_eq!(file["header"]["formatVersion"], 2);
    assert_eq!(file["header"]["documents"]["included"], true);
    assert_eq!(file["header"]["documents"]["count"], 5);
    assert_eq!(file["missingDocuments"], serde_json::json!([]));
    assert_eq!(file["trailer"]["documents"]["count"], 5);
    let docs = documents_of(&file);
    let mut total = 0;
    for (name, (ct, expected)) in served.files.iter() {
        let (got_ct, got, size, hash) = docs.get(&url(name)).expect("document embedded");
        assert_eq!(got_ct, ct, "{name}");
        assert!(got == expected, "{name}: bytes differ");
        assert_eq!(*size, expected.len() as u64);
        assert_eq!(*hash, sha(expected));
        total += expected.len() as u64;
    }
    let (_, flaky_bytes, _, _) = docs
        .get(&format!("http://{addr}/flaky"))
        .expect("a 503 is retried");
    assert_eq!(flaky_bytes, b"second time lucky");
    assert_eq!(with.document_bytes, total + flaky_bytes.len() as u64);
    let urls: Vec<&str> = file["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["url"].as_str().unwrap())
        .collect();
    let mut sorted = urls.clone();
    sorted.sort();
    assert_eq!(urls, sorted, "documents in URL order");

    let without = create(&mut client, false).await.expect("backup without");
    assert_eq!(without.document_count, 0);
    assert_eq!(without.format_version, 1);
    let bytes = download(&mut client, &without.backup_id, 0).await;
    let plain: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(plain["header"]["formatVersion"], 1);
    assert_eq!(plain["header"]["documents"]["included"], false);
    assert!(
        plain["header"]["documents"]["note"]
            .as_str()
            .unwrap()
            .contains("includeDocuments=false")
    );
    assert!(plain.get("documents").is_none());
    assert!(plain["trailer"].get("documents").is_none());

    // Verify checks the documents too, and the rows restore fine.
    let scratch = TestDatabase::create().await;
    scratch.exec(SCHEMA).await;
    let report = client
        .verify_backup(VerifyBackupRequest {
            backup_id: with.backup_id.clone(),
            scratch_database_url: scratch.url.clone(),
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(report.ok, "{:?}", report.problems);
    assert!(report.test_restore_ok);
    let pool = scratch.pool().await;
    let n: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "LoanDocument""#)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 6);
    pool.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfetchable_documents_are_warnings_and_strict_mode_fails_the_backup() {
    let (addr, served) = document_server().await;
    let db = TestDatabase::create().await;
    db.exec(SCHEMA).await;
    let root = temp_dir();
    let outside = temp_dir();
    std::fs::write(root.path().join("scan.pdf"), b"%PDF local upload").unwrap();
    std::fs::write(outside.path().join("secret.txt"), b"not yours").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        root.path().join("escape.pdf"),
    )
    .unwrap();
    // A FIFO under the root: refused, and the backup does not hang on it.
    let fifo = root.path().join("pipe.pdf");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let ok = format!("http://{addr}/docs/contract.pdf");
    let inside = url::Url::from_file_path(root.path().join("scan.pdf"))
        .unwrap()
        .to_string();
    let bad: Vec<(String, &str)> = vec![
        (format!("http://{addr}/docs/nope.pdf"), "404"),
        (
            "http://evil.example/a.pdf".into(),
            "not in DOCUMENT_ALLOWED_HOSTS",
        ),
        (format!("http://{addr}/redirect-out"), "redirect"),
        (
            format!("http://{addr}/redirect-metadata?token=abc"),
            "redirect",
        ),
        (
            format!("http://127.0.0.2:{}/docs/contract.pdf", addr.port()),
            "not in DOCUMENT_ALLOWED_HOSTS",
        ),
        (
            url::Url::from_file_path(outside.path().join("secret.txt"))
                .unwrap()
                .to_string(),
            "outside DOCUMENT_ROOT",
        ),
        (
            url::Url::from_file_path(root.path().join("escape.pdf"))
                .unwrap()
                .to_string(),
            "outside DOCUMENT_ROOT",
        ),
        ("ftp://127.0.0.1/a.pdf".into(), "scheme"),
        (
            url::Url::from_file_path(&fifo).unwrap().to_string(),
            "not a regular file",
        ),
    ];
    let member: Vec<String> = bad.iter().map(|(u, _)| u.clone()).collect();
    insert_urls(&db, &[ok.clone(), inside.clone()], &member).await;

    let storage = temp_dir();
    let mut cfg = documents_config(&db, storage.path());
    cfg.document_root = Some(root.path().to_path_buf());
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = tokio::time::timeout(Duration::from_secs(600), create(&mut client, true))
        .await
        .expect("the backup does not hang")
        .expect("completes despite warnings");
    assert_eq!(backup.document_count, 2);
    assert_eq!(backup.warning_count, bad.len() as u64);
    for (url, why) in &bad {
        let shown = backup_service::documents::redact_document_url(url);
        let entry = backup
            .missing_documents
            .iter()
            .find(|m| m.url == shown)
            .unwrap_or_else(|| panic!("{url} listed: {:?}", backup.missing_documents));
        assert!(entry.reason.contains(why), "{url}: {}", entry.reason);
    }
    assert!(
        backup
            .missing_documents
            .iter()
            .all(|m| !m.url.contains("abc")),
        "no query strings in the record"
    );
    let file: Value =
        serde_json::from_slice(&download(&mut client, &backup.backup_id, 0).await).expect("JSON");
    let docs = documents_of(&file);
    assert_eq!(docs[&inside].1, b"%PDF local upload");
    assert_eq!(docs[&ok].1, served.files["contract.pdf"].1);
    assert_eq!(
        file["missingDocuments"].as_array().unwrap().len(),
        bad.len()
    );
    assert!(
        !docs.values().any(|d| d.1 == b"not yours"),
        "nothing from outside the root"
    );
    server.shutdown().await;

    // Strict: the first missing document fails the backup; no data is kept.
    let strict_storage = temp_dir();
    let mut cfg = documents_config(&db, strict_storage.path());
    cfg.document_root = Some(root.path().to_path_buf());
    cfg.documents_strict = true;
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let e = create(&mut client, true).await.unwrap_err();
    assert!(e.message().contains("DOCUMENTS_STRICT"), "{}", e.message());
    assert!(
        e.message().contains("could not be fetched"),
        "{}",
        e.message()
    );
    let listed = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.backups.len(), 1);
    assert_eq!(listed.backups[0].size, 0);
    let data_files: Vec<_> = walk(strict_storage.path())
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".manifest.json"))
        .filter(|p| p.to_string_lossy().contains("backup_"))
        .collect();
    assert!(data_files.is_empty(), "nothing stored: {data_files:?}");
    // Without documents a strict server still backs up.
    create(&mut client, false)
        .await
        .expect("no documents, no problem");
    server.shutdown().await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_name_does_not_unlock_a_loopback_address() {
    let (addr, _) = document_server().await;
    let db = TestDatabase::create().await;
    db.exec(SCHEMA).await;
    let by_name = format!("http://localhost:{}/docs/contract.pdf", addr.port());
    insert_urls(&db, std::slice::from_ref(&by_name), &[]).await;
    let storage = temp_dir();
    let mut cfg = documents_config(&db, storage.path());
    cfg.document_allowed_hosts = vec!["localhost".into()];
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = create(&mut client, true).await.expect("completes");
    assert_eq!(backup.document_count, 0);
    assert_eq!(backup.warning_count, 1);
    let reason = &backup.missing_documents[0].reason;
    assert!(reason.contains("loopback"), "{reason}");
    server.shutdown().await;

    // Unknown columns are a clear error at backup time.
    let mut cfg = documents_config(&db, storage.path());
    cfg.document_columns = r#""LoanDocument"."nope""#.into();
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let e = create(&mut client, true).await.unwrap_err();
    assert!(
        e.message().contains("column \"nope\" not found"),
        "{}",
        e.message()
    );
    server.shutdown().await;

    // Bad syntax stops the start with a clear message.
    let mut cfg = documents_config(&db, storage.path());
    cfg.document_columns = r#""LoanDocument"."fileUrl","Unclosed"#.into();
    match backup_service::app::start(&cfg).await {
        Ok(_) => panic!("a bad DOCUMENT_COLUMNS must stop the start"),
        Err(e) => assert!(
            e.message.contains("DOCUMENT_COLUMNS") && e.message.contains("unterminated"),
            "{}",
            e.message
        ),
    }
}

/// Runs the binary to completion; returns (success, stdout, stderr).
fn run_bin(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("BACKUP_ENCRYPTION_KEY")
        .env_remove("BACKUP_DECRYPTION_KEYS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every document listed in index.json matches what was served.
fn check_extracted(dir: &Path, expected: &HashMap<String, Vec<u8>>) {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("index is JSON");
    let listed = index["documents"].as_object().expect("documents map");
    assert_eq!(listed.len(), expected.len(), "{index}");
    for (url, bytes) in expected {
        let entry = &listed[url];
        let name = entry["file"].as_str().unwrap();
        assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
        let got = std::fs::read(dir.join(name)).expect("document file");
        assert!(got == *bytes, "{url}: bytes differ");
        assert_eq!(entry["sha256"], sha(bytes));
        assert_eq!(entry["size"], bytes.len() as u64);
    }
    let leftovers: Vec<_> = walk(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_come_back_out_byte_for_byte_and_tampering_is_refused() {
    let (addr, served) = document_server().await;
    let db = TestDatabase::create().await;
    db.exec(SCHEMA).await;
    let urls: Vec<String> = served
        .files
        .keys()
        .map(|n| format!("http://{addr}/docs/{n}"))
        .collect();
    insert_urls(&db, &urls, &[format!("http://{addr}/docs/gone.pdf")]).await;
    let expected: HashMap<String, Vec<u8>> = served
        .files
        .iter()
        .map(|(n, (_, b))| (format!("http://{addr}/docs/{n}"), b.clone()))
        .collect();
    let storage = temp_dir();
    let restore_root = temp_dir();
    let mut cfg = documents_config(&db, storage.path());
    // Compressed and encrypted: extraction has to undo both.
    cfg.compression = "zstd".into();
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    cfg.keys.encryption_key = Some(key.clone());
    cfg.document_restore_root = Some(restore_root.path().to_path_buf());
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = create(&mut client, true).await.expect("backup");
    assert_eq!(backup.warning_count, 1);

    // From a downloaded file.
    let work = temp_dir();
    let file = work.path().join("backup.json.zst.enc");
    std::fs::write(&file, download(&mut client, &backup.backup_id, 0).await).unwrap();
    let out1 = work.path().join("from-file");
    let (ok, stdout, stderr) = run_bin(
        &[
            "documents",
            "extract",
            file.to_str().unwrap(),
            "--dir",
            out1.to_str().unwrap(),
        ],
        &[("BACKUP_ENCRYPTION_KEY", &key)],
    );
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("report JSON");
    assert_eq!(report["documents"], expected.len() as u64);
    assert_eq!(report["missing"], 1);
    check_extracted(&out1, &expected);
    let index: Value =
        serde_json::from_slice(&std::fs::read(out1.join("index.json")).unwrap()).unwrap();
    assert!(
        index["missingDocuments"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("404")
    );

    // Without the key it is refused.
    let (ok, _, stderr) = run_bin(
        &[
            "documents",
            "extract",
            file.to_str().unwrap(),
            "--dir",
            work.path().join("nokey").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && stderr.contains("not configured"), "{stderr}");

    // Through the server by backup id.
    let out2 = work.path().join("from-server");
    let token = token("ADMIN");
    let (ok, _, stderr) = run_bin(
        &[
            "documents",
            "extract",
            &backup.backup_id,
            "--dir",
            out2.to_str().unwrap(),
            "--server",
            &format!("http://{}", server.grpc_addr),
            "--token",
            &token,
        ],
        &[("BACKUP_ENCRYPTION_KEY", &key)],
    );
    assert!(ok, "{stderr}");
    check_extracted(&out2, &expected);

    // Restore with documents_dir writes them on the server, inside the root only.
    client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: true,
            reason: "documents test".into(),
        })
        .await
        .expect("maintenance on");
    let target = TestDatabase::create().await;
    target.exec(SCHEMA).await;
    let refused = client
        .restore_backup(RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            target_url: target.url.clone(),
            skip_safety_backup: true,
            documents_dir: "/etc/cron.d".into(),
            ..Default::default()
        })
        .await;
    let refused = match refused {
        Err(status) => status,
        Ok(stream) => {
            let mut stream = stream.into_inner();
            loop {
                match stream.message().await {
                    Err(status) => break status,
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("a documents_dir outside the root must be refused"),
                }
            }
        }
    };
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("DOCUMENT_RESTORE_ROOT"));
    // A dry run checks documents_dir but creates nothing.
    let mut stream = client
        .restore_backup(RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            target_url: target.url.clone(),
            dry_run: true,
            documents_dir: "dry-run/docs".into(),
            ..Default::default()
        })
        .await
        .expect("dry run starts")
        .into_inner();
    while stream.message().await.expect("dry run progress").is_some() {}
    assert!(
        !restore_root.path().join("dry-run").exists(),
        "a dry run created documents_dir"
    );
    let mut stream = client
        .restore_backup(RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            target_url: target.url.clone(),
            skip_safety_backup: true,
            documents_dir: "restore-1".into(),
            ..Default::default()
        })
        .await
        .expect("restore starts")
        .into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await.expect("restore progress") {
        last = Some(update);
    }
    let last = last.expect("final message");
    assert_eq!(last.documents_written, expected.len() as u64);
    check_extracted(&restore_root.path().join("restore-1"), &expected);
    let pool = target.pool().await;
    let n: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "UnionMemberDocument""#)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    pool.close().await;

    // A tampered chunk: one base64 character changed in a plain file.
    let plain_storage = temp_dir();
    let plain_server = start(&documents_config(&db, plain_storage.path())).await;
    let mut plain_client = admin_client(plain_server.grpc_addr).await;
    let plain = create(&mut plain_client, true).await.expect("plain backup");
    let mut bytes = download(&mut plain_client, &plain.backup_id, 0).await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    let start_of_chunk = text.find("\"chunks\":[\n\"").expect("a chunk line") + 12;
    bytes[start_of_chunk] = if bytes[start_of_chunk] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = work.path().join("tampered.json");
    std::fs::write(&tampered, &bytes).unwrap();
    let out3 = work.path().join("tampered-out");
    let (ok, _, stderr) = run_bin(
        &[
            "documents",
            "extract",
            tampered.to_str().unwrap(),
            "--dir",
            out3.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok, "tampering must be refused");
    assert!(stderr.contains("does not match"), "{stderr}");
    assert!(walk(&out3).is_empty(), "nothing written: {:?}", walk(&out3));
    plain_server.shutdown().await;
    server.shutdown().await;
}

/// VmHWM and VmRSS of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("memory field")
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_document_keeps_memory_flat() {
    let (addr, _) = document_server().await;
    let db = TestDatabase::create().await;
    db.exec(SCHEMA).await;
    let big_url = format!("http://{addr}/big.pdf");
    insert_urls(&db, std::slice::from_ref(&big_url), &[]).await;
    let storage = temp_dir();
    let mut child = Command::new(BIN)
        .env("DATABASE_URL", &db.url)
        .env("STORAGE_URL", storage.path())
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("JWT_SECRET", SECRET)
        .env("DOCUMENT_COLUMNS", COLUMNS)
        .env("DOCUMENT_ALLOWED_HOSTS", "127.0.0.1")
        .env("LOG_FORMAT", "json")
        .env_remove("BACKUP_ENCRYPTION_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let grpc: SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server logs its addresses");
        if line.contains("listening") {
            let json: Value = serde_json::from_str(&line).expect("JSON log");
            break json["fields"]["grpc_addr"]
                .as_str()
                .expect("grpc_addr")
                .parse()
                .expect("address");
        }
    };
    let pid = child.id();
    let mut client = admin_client(grpc).await;
    // Warm up the same code paths with a small backup first.
    create(&mut client, false).await.expect("warm-up backup");
    let (before, rss) = memory_kib(pid);
    let backup = create(&mut client, true).await;
    let (after, _) = memory_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    let backup = backup.expect("backup with a 50 MB document");
    assert_eq!(backup.document_count, 1, "{:?}", backup.missing_documents);
    assert_eq!(backup.document_bytes, BIG as u64);
    let growth_mib = after.saturating_sub(before) / 1024;
    eprintln!("VmHWM before {before} KiB (RSS {rss} KiB), after {after} KiB: +{growth_mib} MiB");
    assert!(
        growth_mib < 20,
        "peak memory grew by {growth_mib} MiB for a 50 MiB document"
    );
    let stored = walk(storage.path())
        .into_iter()
        .find(|p| {
            p.to_string_lossy().contains(&backup.backup_id)
                && !p.to_string_lossy().ends_with(".manifest.json")
        })
        .expect("stored file");
    // Check the embedded document without loading the file whole.
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(stored).unwrap());
    let mut hasher = Sha256::new();
    let mut inside = false;
    for line in reader.split(b'\n') {
        let line = line.unwrap();
        if line.starts_with(b"{\"url\":") {
            inside = true;
            continue;
        }
        if inside && line.starts_with(b"],") {
            break;
        }
        if inside {
            let b64 = line.strip_suffix(b",").unwrap_or(&line);
            let b64 = &b64[1..b64.len() - 1];
            hasher.update(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            );
        }
    }
    assert_eq!(hex::encode(hasher.finalize()), big_sha());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sources_back_up_documents_too_and_rest_shows_the_warnings() {
    use sqlx::Connection;
    let (addr, served) = document_server().await;
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{db}?mode=rwc"))
        .await
        .expect("open sqlite");
    let ok = format!("http://{addr}/docs/id-card.png");
    let gone = format!("http://{addr}/docs/gone.pdf?signature=s3cret");
    let large = format!("http://{addr}/docs/contract.pdf");
    let slow = format!("http://{addr}/slow.pdf");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE LoanDocument (id INTEGER PRIMARY KEY, fileUrl TEXT);
         CREATE TABLE UnionMemberDocument (id INTEGER PRIMARY KEY, fileUrl TEXT);
         INSERT INTO LoanDocument (fileUrl) VALUES ('{ok}'), (NULL), ('{gone}'), ('{large}');
         INSERT INTO UnionMemberDocument (fileUrl) VALUES ('{ok}'), ('{slow}');"
    )))
    .execute(&mut conn)
    .await
    .expect("seed sqlite");
    conn.close().await.expect("close");
    let mut cfg = config(&db, &dir.path().join("backups"));
    // Unquoted: folded to lower case, matched case-insensitively by SQLite.
    cfg.document_columns = "LoanDocument.fileUrl, UnionMemberDocument.fileUrl".into();
    cfg.document_allowed_hosts = vec!["127.0.0.1".into()];
    cfg.document_retries = 0;
    cfg.document_max_bytes = 150_000;
    cfg.document_timeout = Duration::from_secs(3);
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = create(&mut client, true).await.expect("backup");
    assert_eq!(backup.document_count, 1);
    assert_eq!(backup.warning_count, 3, "{:?}", backup.missing_documents);
    let reason = |url: &str| {
        backup
            .missing_documents
            .iter()
            .find(|m| m.url == backup_service::documents::redact_document_url(url))
            .map(|m| m.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason(&large).contains("too large"), "{}", reason(&large));
    assert!(reason(&slow).contains("timed out"), "{}", reason(&slow));
    let file: Value =
        serde_json::from_slice(&download(&mut client, &backup.backup_id, 0).await).expect("JSON");
    assert_eq!(documents_of(&file)[&ok].1, served.files["id-card.png"].1);

    let record: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/backup/{}",
            server.http_addr, backup.backup_id
        ))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON record");
    assert_eq!(record["documentCount"], 1);
    assert_eq!(record["warningCount"], 3);
    assert_eq!(record["documentBytes"], 100_001);
    let missing = record["missingDocuments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["url"].as_str().unwrap().contains("gone.pdf"))
        .unwrap();
    assert!(missing["reason"].as_str().unwrap().contains("404"));
    assert!(
        !missing["url"].as_str().unwrap().contains("s3cret"),
        "{missing}"
    );
    server.shutdown().await;
}
