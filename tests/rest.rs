//! The REST gateway driven by real HTTP clients against the running server.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Api {
    base: String,
    http: reqwest::Client,
    token: String,
}

impl Api {
    fn new(addr: std::net::SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            token: token("ADMIN"),
        }
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }
    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
    }
    async fn create(&self, body: Value) -> Value {
        let r = self.post("/api/backup/create", body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }
    async fn total(&self) -> u64 {
        let list: Value = self
            .get("/api/backup/list")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["total"].as_u64().unwrap()
    }
}

async fn error_of(r: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.expect("JSON error body");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body
}

async fn seeded_sqlite() -> (tempfile::TempDir, String) {
    use sqlx::Connection;
    let dir = temp_dir();
    let url = sqlite_url(dir.path());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE member (id INTEGER PRIMARY KEY, name TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO member SELECT i, 'member number ' || i FROM n;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    (dir, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_paths_work() {
    let (dir, db) = seeded_sqlite().await;
    let server = start(&config(&db, &dir.path().join("backups"))).await;
    let api = Api::new(server.http_addr);

    let created = api
        .create(json!({"description": "Pre-deployment backup", "includeDocuments": true}))
        .await;
    for key in [
        "backupId",
        "filename",
        "size",
        "cloudinaryUrl",
        "createdAt",
        "description",
    ] {
        assert!(
            created.get(key).is_some(),
            "documented key {key} missing: {created}"
        );
    }
    assert!(created["size"].is_u64(), "size is a JSON number");
    let created_at = created["createdAt"].as_str().unwrap();
    assert!(created_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
    assert_eq!(created["status"], "COMPLETED");
    assert_eq!(created["rowCounts"]["member"], 20000);
    let id = created["backupId"].as_str().unwrap().to_string();

    let alias = api
        .post("/api/backup", json!({"description": "alias"}))
        .send()
        .await
        .unwrap();
    assert_eq!(alias.status(), StatusCode::CREATED);

    let r = api
        .post("/api/backup/create", json!({"async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let mut status = String::new();
    for _ in 0..200 {
        let rec: Value = api
            .get(&location)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = rec["status"].as_str().unwrap().to_string();
        assert!(rec["progress"].is_object());
        if status == "COMPLETED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "COMPLETED");

    let list: Value = api
        .get("/api/backup/list")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 3);
    assert_eq!(list["cloudinaryStats"]["count"], 3);
    assert!(list["cloudinaryStats"]["totalSize"].as_u64().unwrap() > 0);
    let ids: Vec<&str> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backupId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.last(), Some(&id.as_str()), "newest first");
    let page: Value = api
        .get("/api/backup/list?pageSize=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["backups"].as_array().unwrap().len(), 2);
    let token = page["nextPageToken"].as_str().unwrap();
    let rest: Value = api
        .get(&format!("/api/backup/list?pageSize=2&pageToken={token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["backups"][0]["backupId"], id);
    assert_eq!(rest["nextPageToken"], "");

    let one: Value = api
        .get(&format!("/api/backup/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["backupId"], id);

    let full = api
        .get(&format!("/api/backup/download/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), StatusCode::OK);
    let headers = full.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"{id}.json\"")
    );
    assert_eq!(
        headers["etag"].to_str().unwrap(),
        format!("\"{}\"", created["sha256"].as_str().unwrap())
    );
    let full = full.bytes().await.unwrap();
    assert_eq!(
        headers["content-length"].to_str().unwrap(),
        full.len().to_string()
    );
    assert_eq!(full.len() as u64, created["size"].as_u64().unwrap());
    assert_eq!(
        hex::encode(Sha256::digest(&full)),
        created["sha256"].as_str().unwrap()
    );

    // A broken download resumed from the middle matches the whole.
    let middle = full.len() / 2;
    let first = &full[..middle];
    let r = api
        .get(&format!("/api/backup/download/{id}"))
        .header("Range", format!("bytes={middle}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes {middle}-{}/{}", full.len() - 1, full.len())
    );
    let second = r.bytes().await.unwrap();
    assert_eq!([first, &second[..]].concat(), full.to_vec());
    let r = api
        .get(&format!("/api/backup/download/{id}"))
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), full.slice(10..20));
    let r = api
        .get(&format!("/api/backup/download/{id}"))
        .header("Range", format!("bytes={}-", full.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{}", full.len())
    );

    let head = api
        .http
        .head(api.url(&format!("/api/backup/download/{id}")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"].to_str().unwrap(),
        full.len().to_string()
    );
    assert_eq!(head.headers()["etag"], headers["etag"]);
    assert!(head.bytes().await.unwrap().is_empty());

    // Parallel downloads all get the same bytes.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = api.get(&format!("/api/backup/download/{id}"));
        tasks.push(tokio::spawn(async move {
            req.send().await.unwrap().bytes().await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), full);
    }

    let r = api
        .http
        .delete(api.url(&format!("/api/backup/{id}")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["deleted"], true);
    assert_eq!(body["backupId"], id);
    let r = api.get(&format!("/api/backup/{id}")).send().await.unwrap();
    error_of(r, StatusCode::NOT_FOUND).await;
    let r = api
        .http
        .delete(api.url(&format!("/api/backup/{id}")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::NOT_FOUND).await;
    let r = api
        .get(&format!("/api/backup/download/{id}"))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::NOT_FOUND).await;

    let health: Value = api
        .http
        .get(api.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = api.http.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let (dir, db) = seeded_sqlite().await;
    let mut cfg = config(&db, &dir.path().join("backups"));
    cfg.http_body_timeout_secs = 1;
    let server = start(&cfg).await;
    let api = Api::new(server.http_addr);

    // 401 with WWW-Authenticate, 403 for other roles.
    let r = api
        .http
        .get(api.url("/api/backup/list"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    error_of(r, StatusCode::UNAUTHORIZED).await;
    let r = api
        .http
        .get(api.url("/api/backup/list"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    error_of(r, StatusCode::UNAUTHORIZED).await;
    let r = api
        .http
        .post(api.url("/api/backup/create"))
        .bearer_auth(token("CREDIT_OFFICER"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::FORBIDDEN).await;

    // 400s.
    let send_raw = |body: &'static str| {
        api.http
            .post(api.url("/api/backup/create"))
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{not json",
        r#"{"description": 5}"#,
        r#"{"includeDocuments": "yes"}"#,
        r#"{"description": "x", "unknown": 1}"#,
        "[1,2]",
    ] {
        let r = send_raw(body).await.unwrap();
        let e = error_of(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(e["error"]["code"], "INVALID_ARGUMENT", "{body}");
    }
    let r = api
        .post(
            "/api/backup/create",
            json!({"description": "x".repeat(1001)}),
        )
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::BAD_REQUEST).await;
    assert!(e["error"]["message"].as_str().unwrap().contains("1000"));
    for path in [
        "/api/backup/not-an-id",
        "/api/backup/download/..%2F..%2Fetc%2Fpasswd",
        "/api/backup/backup_2026-99-11T12-00-00-000Z",
    ] {
        let r = api.get(path).send().await.unwrap();
        error_of(r, StatusCode::BAD_REQUEST).await;
    }
    let r = api
        .get("/api/backup/list?pageToken=bogus")
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::BAD_REQUEST).await;
    let r = api
        .get("/api/backup/list?pageSize=abc")
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::BAD_REQUEST).await;
    let r = api
        .get("/api/backup/backup_2026-03-11T12-00-00-000Z")
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::NOT_FOUND).await;

    // A known path with the wrong method: 405, the same error shape, and Allow.
    let r = api
        .http
        .put(api.url("/api/backup/list"))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let body = error_of(r, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(body["error"]["code"], "METHOD_NOT_ALLOWED", "{body}");
    assert!(
        allow.as_deref().is_some_and(|a| a.contains("GET")),
        "Allow header: {allow:?}"
    );

    // 413, declared and chunked.
    let big = format!("{{\"description\": \"{}\"}}", "y".repeat(100 * 1024));
    let r = api
        .http
        .post(api.url("/api/backup/create"))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let r = api
        .http
        .post(api.url("/api/backup/create"))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    // The server answers 413 as soon as the limit is crossed and closes the
    // connection; the client may still be writing the rest of the body and
    // then sees the close as a send error instead of the answer. Either is a
    // refusal; a success is not.
    match r {
        Ok(r) => {
            error_of(r, StatusCode::PAYLOAD_TOO_LARGE).await;
        }
        Err(e) => assert!(
            e.is_request() || e.is_body(),
            "unexpected client error for an oversized chunked body: {e:?}"
        ),
    }

    // A body that never finishes times out.
    let mut socket = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /api/backup/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"descr",
        api.token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), socket.read(&mut answer))
        .await
        .expect("server answers a stalled body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    assert_eq!(api.total().await, 0, "no bad request created anything");
    let entries = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .count();
    assert_eq!(entries, 0, "storage untouched");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_backups_are_409_and_failures_are_500_and_503() {
    let db = TestDatabase::create().await;
    db.exec("CREATE TABLE \"Loan\" (id serial PRIMARY KEY, amount numeric(14,2)); INSERT INTO \"Loan\" (amount) SELECT g FROM generate_series(1, 100) g;").await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let api = Api::new(server.http_addr);

    // Hold a lock so the backup's COPY waits: the backup stays RUNNING.
    let pool = db.pool().await;
    let mut locker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE \"Loan\" IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let r = api
        .post("/api/backup/create", json!({"async": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let running: Value = r.json().await.unwrap();
    assert_eq!(running["status"], "RUNNING");
    let id = running["backupId"].as_str().unwrap().to_string();
    let r = api
        .get(&format!("/api/backup/download/{id}"))
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::CONFLICT).await;
    let r = api
        .http
        .delete(api.url(&format!("/api/backup/{id}")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    error_of(r, StatusCode::CONFLICT).await;
    locker.commit().await.unwrap();
    let mut status = String::new();
    for _ in 0..200 {
        let rec: Value = api
            .get(&format!("/api/backup/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = rec["status"].as_str().unwrap().to_string();
        if status != "RUNNING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "COMPLETED");
    pool.close().await;
    server.shutdown().await;

    // The database is gone: readiness is 503, creating a backup is 500 with the cause.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead_url = format!("postgres://postgres:secret-pw@127.0.0.1:{dead}/nowhere");
    let server = start(&config(&dead_url, &dir.path().join("backups"))).await;
    let api = Api::new(server.http_addr);
    let r = api.http.get(api.url("/readyz")).send().await.unwrap();
    let e = error_of(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        !e.to_string().contains("secret-pw"),
        "no password in errors"
    );
    let r = api
        .post("/api/backup/create", json!({"description": "db down"}))
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::INTERNAL_SERVER_ERROR).await;
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("database connection"), "{message}");
    assert!(!message.contains("secret-pw"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".manifest.json") && !n.starts_with(&id))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a failed backup leaves no data: {leftovers:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_page_curl_example_works() {
    let (dir, db) = seeded_sqlite().await;
    let server = start(&config(&db, &dir.path().join("backups"))).await;
    // As on the page, with only host and token changed.
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            &format!("http://{}/api/backup/create", server.http_addr),
            "-H",
            &format!("Authorization: Bearer {}", token("ADMIN")),
            "-H",
            "Content-Type: application/json",
            "-d",
            "{\n    \"description\": \"Pre-deployment backup\",\n    \"includeDocuments\": true\n  }",
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    assert_eq!(code, "201", "{body}");
    let record: Value = serde_json::from_str(body).unwrap();
    assert_eq!(record["description"], "Pre-deployment backup");
    assert_eq!(record["includeDocuments"], true);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_valid_and_complete() {
    let dir = temp_dir();
    let server = start(&config(
        &sqlite_url(dir.path()),
        &dir.path().join("backups"),
    ))
    .await;
    let doc: Value = reqwest::get(format!("http://{}/api/openapi.json", server.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/api/backup/create", "post"),
        ("/api/backup", "post"),
        ("/api/backup/list", "get"),
        ("/api/backup/{backupId}", "get"),
        ("/api/backup/{backupId}", "delete"),
        ("/api/backup/download/{backupId}", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    // Validate with the reference validator (installed by .ci/run).
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json,sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')",
            file.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "OpenAPI validation failed (pip install openapi-spec-validator): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.shutdown().await;
}
