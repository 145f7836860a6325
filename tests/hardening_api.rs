//! The API edge under hostile or strict clients (issue 17): bounded metric
//! labels, `nbf`, object-only JSON bodies, readiness that says nothing to
//! strangers and probes storage for real, and metrics promtool accepts.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backup_service::proto::ListBackupsRequest;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_backup-service");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn admin_token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
    )
    .expect("token")
}

/// The value of one label in a Prometheus sample line, if present.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &line[start..];
    Some(&rest[..rest.find('"')?])
}

async fn scrape(http: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_do_not_grow_metric_labels() {
    let dir = temp_dir();
    let server = start(&config(
        &sqlite_url(dir.path()),
        &dir.path().join("backups"),
    ))
    .await;
    let http = reqwest::Client::new();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).expect("method");
        let r = http
            .request(
                method,
                format!("http://{}/no/such/path/{i}", server.http_addr),
            )
            .send()
            .await
            .expect("request");
        assert!(r.status().is_client_error(), "{}", r.status());
        // Known routes with unknown methods, and raw ids, stay templates too.
        let r = http
            .request(
                reqwest::Method::from_bytes(format!("ODD{i}").as_bytes()).expect("method"),
                format!("http://{}/api/backup/{i}", server.http_addr),
            )
            .send()
            .await
            .expect("request");
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let text = scrape(server.http_addr).await;
    let known_methods: BTreeSet<&str> = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
    ]
    .into_iter()
    .collect();
    let known_routes: BTreeSet<&str> = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/openapi.json",
        "/api/status/ready",
        "/api/backup",
        "/api/backup/create",
        "/api/backup/list",
        "/api/backup/prune",
        "/api/backup/schedule",
        "/api/backup/download/{backup_id}",
        "/api/backup/{backup_id}",
        "/api/backup/{backup_id}/restore",
        "/api/backup/{backup_id}/verify",
        "/api/maintenance",
        "other",
    ]
    .into_iter()
    .collect();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("backup_service_request"))
        .filter(|l| label(l, "transport") == Some("http"))
        .collect();
    assert!(!series.is_empty(), "HTTP requests are metered: {text}");
    for line in &series {
        let method = label(line, "method").unwrap_or_default();
        let route = label(line, "route").unwrap_or_default();
        assert!(
            known_methods.contains(method),
            "method label {method:?} in {line}"
        );
        assert!(
            known_routes.contains(route),
            "route label {route:?} in {line}"
        );
    }
    let counted: BTreeSet<_> = series
        .iter()
        .filter(|l| l.starts_with("backup_service_requests_total"))
        .collect();
    // method x route x status, far below the 600 distinct requests sent.
    assert!(counted.len() < 20, "{} series: {counted:#?}", counted.len());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_not_valid_yet_is_refused_on_both_transports() {
    let dir = temp_dir();
    let server = start(&config(
        &sqlite_url(dir.path()),
        &dir.path().join("backups"),
    ))
    .await;
    let early = admin_token_with(json!({
        "userId": "1", "role": "ADMIN", "nbf": now() + 3600, "exp": now() + 7200
    }));
    let started = admin_token_with(json!({
        "userId": "1", "role": "ADMIN", "nbf": now() - 60, "exp": now() + 600
    }));

    let mut client = client_with(server.grpc_addr, Some(format!("Bearer {early}"))).await;
    let e = client
        .list_backups(ListBackupsRequest::default())
        .await
        .expect_err("nbf in an hour is refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let mut client = client_with(server.grpc_addr, Some(format!("Bearer {started}"))).await;
    client
        .list_backups(ListBackupsRequest::default())
        .await
        .expect("nbf in the past is fine");

    let http = reqwest::Client::new();
    let list = format!("http://{}/api/backup/list", server.http_addr);
    let r = http
        .get(&list)
        .bearer_auth(&early)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.expect("error body");
    assert_eq!(body["error"]["message"], "token is not valid yet", "{body}");
    let r = http
        .get(&list)
        .bearer_auth(&started)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_must_be_objects_on_every_route() {
    let dir = temp_dir();
    let server = start(&config(
        &sqlite_url(dir.path()),
        &dir.path().join("backups"),
    ))
    .await;
    let http = reqwest::Client::new();
    let token = token("ADMIN");
    let url = |path: &str| format!("http://{}{path}", server.http_addr);
    let id = "20260101T000000Z-0000";
    let routes = [
        (
            reqwest::Method::POST,
            "/api/backup/create".to_string(),
            json!(["x", false]),
        ),
        (
            reqwest::Method::POST,
            "/api/backup".to_string(),
            json!(["x", false]),
        ),
        (
            reqwest::Method::PUT,
            "/api/maintenance".to_string(),
            json!([true, "why"]),
        ),
        (
            reqwest::Method::POST,
            "/api/backup/prune".to_string(),
            json!([false]),
        ),
        (
            reqwest::Method::POST,
            format!("/api/backup/{id}/restore"),
            json!([null, true]),
        ),
        (
            reqwest::Method::POST,
            format!("/api/backup/{id}/verify"),
            json!([]),
        ),
        (
            reqwest::Method::POST,
            "/api/backup/create".to_string(),
            json!("a string"),
        ),
        (
            reqwest::Method::POST,
            "/api/backup/create".to_string(),
            json!(7),
        ),
    ];
    for (method, path, body) in routes {
        let r = http
            .request(method.clone(), url(&path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}"
        );
        let e: Value = r.json().await.expect("error body");
        assert_eq!(e["error"]["code"], "INVALID_ARGUMENT", "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("JSON object"),
            "{method} {path}: {e}"
        );
    }
    let list: Value = http
        .get(url("/api/backup/list"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("list body");
    assert_eq!(list["total"], 0, "nothing was created: {list}");
    let maintenance: Value = http
        .get(url("/api/maintenance"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("maintenance")
        .json()
        .await
        .expect("maintenance body");
    assert_eq!(maintenance["enabled"], false, "{maintenance}");
    // An object still works.
    let r = http
        .post(url("/api/backup/create"))
        .bearer_auth(&token)
        .json(&json!({"description": "object body"}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    server.shutdown().await;
}

async fn grpc_health(addr: std::net::SocketAddr) -> ServingStatus {
    let mut health = HealthClient::new(channel(addr).await);
    match health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(r) => r.into_inner().status(),
        Err(_) => ServingStatus::Unknown,
    }
}

/// Polls gRPC health until it reports `want` (the watcher runs every second).
async fn wait_for_health(addr: std::net::SocketAddr, want: ServingStatus) -> ServingStatus {
    let mut seen = ServingStatus::Unknown;
    for _ in 0..150 {
        seen = grpc_health(addr).await;
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_tells_strangers_nothing_and_admins_the_reason() {
    let db = TestDatabase::create().await;
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let server = start(&config(&db.url, &storage)).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.http_addr);
    let r = http.get(url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        wait_for_health(server.grpc_addr, ServingStatus::Serving).await,
        ServingStatus::Serving
    );

    // Storage breaks in a way root cannot write through: its directory is
    // now a regular file.
    std::fs::remove_dir_all(&storage).expect("remove storage");
    std::fs::write(&storage, b"not a directory").expect("file in its place");

    let mut status = StatusCode::OK;
    let mut body = String::new();
    for _ in 0..150 {
        let r = http.get(url("/readyz")).send().await.expect("readyz");
        status = r.status();
        body = r.text().await.expect("body");
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let storage_text = storage.display().to_string();
    for secret in [
        storage_text.as_str(),
        "backups",
        db.name.as_str(),
        "postgres",
        "directory",
        "127.0.0.1",
    ] {
        assert!(
            !body.contains(secret),
            "unauthenticated /readyz reveals {secret:?}: {body}"
        );
    }
    let parsed: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(
        parsed,
        json!({"error": {"code": "UNAVAILABLE", "message": "not ready"}})
    );

    let r = http
        .get(url("/api/status/ready"))
        .send()
        .await
        .expect("details");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "details need a token");
    let r = http
        .get(url("/api/status/ready"))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .expect("details");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let details: Value = r.json().await.expect("details body");
    let reason = details["error"]["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&storage_text),
        "admin sees the reason: {details}"
    );

    assert_eq!(
        wait_for_health(server.grpc_addr, ServingStatus::NotServing).await,
        ServingStatus::NotServing,
        "gRPC health probes storage the same way"
    );
    server.shutdown().await;
}

/// Whether this process can create a file in `dir` (root can despite 555).
fn can_write_in(dir: &std::path::Path) -> bool {
    let probe = dir.join("write-test");
    let ok = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_real_writes_not_mode_bits() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    std::fs::create_dir(&storage).expect("storage dir");
    let server = start(&config(&sqlite_url(dir.path()), &storage)).await;
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let writable = can_write_in(&storage);
    let r = reqwest::get(format!("http://{}/readyz", server.http_addr))
        .await
        .expect("readyz");
    let want = if writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    assert_eq!(
        r.status(),
        want,
        "mode 555, writable by this user: {writable}"
    );
    let want_health = if writable {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    assert_eq!(
        wait_for_health(server.grpc_addr, want_health).await,
        want_health
    );
    // The probe leaves nothing behind.
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let left: Vec<_> = std::fs::read_dir(&storage)
        .expect("read storage")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("probe"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    server.shutdown().await;
}

/// The real binary, on ports chosen here.
struct Child(std::process::Child, std::net::SocketAddr);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

async fn spawn_binary(database_url: &str, storage: &std::path::Path) -> Child {
    let http = free_addr();
    let child = std::process::Command::new(BIN)
        .arg("serve")
        .env("JWT_SECRET", SECRET)
        .env("DATABASE_URL", database_url)
        .env("STORAGE_URL", storage)
        .env("GRPC_ADDR", free_addr().to_string())
        .env("HTTP_ADDR", http.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    let child = Child(child, http);
    for _ in 0..300 {
        if reqwest::get(format!("http://{http}/healthz")).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not come up on {http}");
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `promtool check metrics` on `text`. Absent promtool fails under CI.
fn promtool_check(text: &str) -> bool {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is required in CI (apt-get install prometheus): {e}"
            );
            eprintln!("promtool not installed: `promtool check metrics` NOT run ({e})");
            return false;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_conform_from_a_fresh_start_and_keep_the_last_success() {
    let dir = temp_dir();
    let database = sqlite_url(dir.path());
    let storage = dir.path().join("backups");
    // One completed backup, by an earlier server.
    let first = start(&config(&database, &storage)).await;
    let record: Value = reqwest::Client::new()
        .post(format!("http://{}/api/backup/create", first.http_addr))
        .bearer_auth(token("ADMIN"))
        .json(&json!({"description": "before the restart"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("record");
    first.shutdown().await;
    let completed = chrono::DateTime::parse_from_rfc3339(
        record["completedAt"]
            .as_str()
            .unwrap_or_else(|| panic!("completedAt in {record}")),
    )
    .expect("timestamp")
    .timestamp() as f64;

    // A new process: nothing happened in it yet.
    let server = spawn_binary(&database, &storage).await;
    let text = scrape(server.1).await;
    assert_eq!(
        sample(&text, "backup_service_last_success_timestamp_seconds"),
        Some(completed),
        "{text}"
    );
    for series in [
        "backup_service_backups_created_total{trigger=\"manual\"}",
        "backup_service_backups_created_total{trigger=\"scheduled\"}",
        "backup_service_backups_failed_total{trigger=\"manual\"}",
        "backup_service_backups_failed_total{trigger=\"scheduled\"}",
        "backup_service_storage_uploaded_bytes_total",
        "backup_service_downloaded_bytes_total",
        "backup_service_pruned_backups_total",
        "backup_service_prune_failures_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} at zero: {text}");
    }
    // Every metric family has HELP, also those that only appear later.
    let _ = reqwest::get(format!("http://{}/no/such", server.1)).await;
    let text = scrape(server.1).await;
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.contains("backup_service_requests_total"), "{text}");
    for family in &families {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }
    let request = text
        .lines()
        .find(|l| l.starts_with("backup_service_requests_total{") && l.contains("/metrics"))
        .unwrap_or_else(|| panic!("GET /metrics counted: {text}"));
    assert_eq!(label(request, "method"), Some("GET"), "{request}");
    assert_eq!(label(request, "route"), Some("/metrics"), "{request}");
    promtool_check(&text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_downloads_count_in_downloaded_bytes() {
    let dir = temp_dir();
    let server = start(&config(
        &sqlite_url(dir.path()),
        &dir.path().join("backups"),
    ))
    .await;
    let http = reqwest::Client::new();
    let record: Value = http
        .post(format!("http://{}/api/backup/create", server.http_addr))
        .bearer_auth(token("ADMIN"))
        .json(&json!({}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("record");
    let id = record["backupId"].as_str().expect("backupId");
    let counter = "backup_service_downloaded_bytes_total";
    let before = sample(&scrape(server.http_addr).await, counter).unwrap_or(0.0);
    let bytes = http
        .get(format!(
            "http://{}/api/backup/download/{id}",
            server.http_addr
        ))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .expect("download")
        .bytes()
        .await
        .expect("body");
    assert!(!bytes.is_empty());
    let after = sample(&scrape(server.http_addr).await, counter).unwrap_or(0.0);
    assert_eq!(after - before, bytes.len() as f64);
    server.shutdown().await;
}
