//! The real binary as operators run it: dev mode, the token command, log
//! formats, and no secrets in logs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use backup_service::api::auth::Authenticator;
use backup_service::proto::{CreateBackupRequest, ListBackupsRequest};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_backup-service");

struct Server {
    child: Child,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stdout_first_line: Option<String>,
    log: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Everything logged so far.
    fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        self.log.try_iter().collect::<Vec<_>>().join("\n")
    }
}

/// A field of a log line, in text (`name=value`) or JSON format.
fn field(line: &str, name: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json["fields"][name].as_str().map(str::to_string);
    }
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[start..];
    Some(rest.split([' ', '"', ',']).next()?.to_string())
}

fn spawn(args: &[&str], env: &[(&str, String)]) -> Server {
    let dir = temp_dir().keep();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("JWT_SECRET")
        .env_remove("LOG_FORMAT")
        .env("DATABASE_URL", sqlite_url(&dir))
        .env("STORAGE_URL", dir.join("backups"))
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let (grpc, http) = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server logs its addresses");
        seen.push(line.clone());
        if line.contains("listening") {
            let grpc = field(&line, "grpc_addr").expect("grpc_addr logged");
            let http = field(&line, "http_addr").expect("http_addr logged");
            break (
                grpc.parse().expect("address"),
                http.parse().expect("address"),
            );
        }
    };
    let (line_tx, line_rx) = mpsc::channel();
    for line in seen {
        let _ = line_tx.send(line);
    }
    std::thread::spawn(move || {
        for line in rx.iter() {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdout_first_line = if env.iter().any(|(k, _)| *k == "JWT_SECRET") {
        None
    } else {
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        Some(line.trim().to_string())
    };
    Server {
        child,
        grpc,
        http,
        stdout_first_line,
        log: line_rx,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_prints_a_working_admin_token_and_never_serves_unauthenticated() {
    for args in [&["serve"][..], &[][..]] {
        let server = spawn(args, &[]);
        let token = server
            .stdout_first_line
            .clone()
            .expect("dev token on stdout");
        assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
        let logs = server.logs();
        assert!(logs.contains("dev mode"), "warning logged: {logs}");
        assert!(
            logs.contains("next step") && logs.contains(&server.http.to_string()),
            "the next step names the HTTP address: {logs}"
        );
        let mut client = client_with(server.grpc, Some(format!("Bearer {token}"))).await;
        client
            .list_backups(ListBackupsRequest::default())
            .await
            .expect("dev token works");
        let mut anonymous = client_with(server.grpc, None).await;
        let e = anonymous
            .list_backups(ListBackupsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_command_and_secrets_stay_out_of_logs() {
    let secret = "process-test-secret-value-long-enough-for-hs256-keys";
    let out = Command::new(BIN)
        .args([
            "token",
            "--role",
            "ADMIN",
            "--ttl",
            "1h",
            "--email",
            "ops@example.com",
        ])
        .env("JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let bad = Command::new(BIN)
        .args(["token", "--ttl", "1y"])
        .env("JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "invalid ttl refused");

    // PostgreSQL with trust auth accepts any password: this one must never be logged.
    let db = TestDatabase::create().await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
        .await;
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some("hunter2-db-password")).unwrap();
    let server = spawn(
        &["serve"],
        &[
            ("JWT_SECRET", secret.to_string()),
            ("DATABASE_URL", url.to_string()),
            ("LOG_FORMAT", "json".to_string()),
        ],
    );
    let mut client = client_with(server.grpc, Some(format!("Bearer {token}"))).await;
    let created = client
        .create_backup(CreateBackupRequest::default())
        .await
        .expect("token from the token command works")
        .into_inner();
    assert_eq!(created.row_counts.get("public.t"), Some(&2));
    let mut wrong = client_with(server.grpc, Some("Bearer abc.def.ghi".into())).await;
    let _ = wrong.list_backups(ListBackupsRequest::default()).await;
    let logs = server.logs();
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    assert!(logs.contains("backup completed"), "{logs}");
    assert!(logs.contains("ops@example.com"), "principal in the logs");
    for secret_text in ["hunter2-db-password", secret, &token, "abc.def.ghi"] {
        assert!(
            !logs.contains(secret_text),
            "{secret_text} leaked into logs"
        );
    }
}

fn cli(args: &[&str], server: &Server, token: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("BACKUP_SERVER", format!("http://{}", server.grpc))
        .env("BACKUP_TOKEN", token)
        .output()
        .expect("cli runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_create_maintenance_restore_verify_and_offline_restore() {
    let secret = "cli-test-secret-long-enough-for-hs256-keys";
    let token = Authenticator::new(secret.as_bytes(), &[])
        .unwrap()
        .issue("1", "", "ADMIN", Duration::from_secs(600))
        .unwrap();
    let db = TestDatabase::create().await;
    db.exec("CREATE TABLE \"Member\" (id serial PRIMARY KEY, name text NOT NULL); INSERT INTO \"Member\" (name) SELECT 'm' || g FROM generate_series(1, 500) g;").await;
    let server = spawn(
        &["serve"],
        &[
            ("JWT_SECRET", secret.to_string()),
            ("DATABASE_URL", db.url.clone()),
        ],
    );

    let (ok, out, err) = cli(
        &["create", "--description", "from the CLI"],
        &server,
        &token,
    );
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = created["backupId"].as_str().unwrap().to_string();
    assert_eq!(created["rowCounts"]["public.Member"], 500);

    let (ok, _, err) = cli(&["restore", &id, "--skip-safety-backup"], &server, &token);
    assert!(
        !ok && err.contains("maintenance"),
        "refused without maintenance: {err}"
    );

    db.exec("DELETE FROM \"Member\" WHERE id > 100;").await;
    let (ok, out, _) = cli(
        &["maintenance", "on", "--reason", "restore drill"],
        &server,
        &token,
    );
    assert!(ok && out.contains("\"enabled\":true"), "{out}");
    let (ok, out, err) = cli(&["restore", &id, "--dry-run"], &server, &token);
    assert!(ok && out.contains("DRY_RUN_PASSED"), "{out} {err}");
    let (ok, out, err) = cli(&["restore", &id], &server, &token);
    assert!(ok, "{err}");
    let done: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(done["phase"], "RESTORE_PHASE_COMMITTED");
    assert_eq!(done["rowCounts"]["public.Member"], 500);
    assert!(
        done["safetyBackupId"]
            .as_str()
            .unwrap()
            .starts_with("backup_")
    );
    assert!(
        err.contains("RESTORE_PHASE_LOADING"),
        "progress on stderr: {err}"
    );
    let pool = db.pool().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM \"Member\"")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 500);

    let (ok, out, err) = cli(&["verify", &id], &server, &token);
    assert!(ok && out.contains("\"ok\":true"), "{out} {err}");

    // Offline: a downloaded file restored straight into the database.
    let mut client = client_with(server.grpc, Some(format!("Bearer {token}"))).await;
    let bytes = download(&mut client, &id, 0).await;
    let dir = temp_dir();
    let file = dir.path().join(format!("{id}.json"));
    std::fs::write(&file, &bytes).unwrap();
    sqlx::query("DELETE FROM \"Member\"")
        .execute(&pool)
        .await
        .unwrap();
    let out = Command::new(BIN)
        .args([
            "restore-file",
            file.to_str().unwrap(),
            "--target-url",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM \"Member\"")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 500);

    // A tampered file is refused offline and nothing changes.
    let mut tampered = bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'1' { b'2' } else { b'1' };
    std::fs::write(&file, &tampered).unwrap();
    sqlx::query("DELETE FROM \"Member\" WHERE id > 10")
        .execute(&pool)
        .await
        .unwrap();
    let out = Command::new(BIN)
        .args([
            "restore-file",
            file.to_str().unwrap(),
            "--target-url",
            &db.url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("verification"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM \"Member\"")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 10, "target untouched");
    pool.close().await;
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_admin_actions_are_audited() {
    let secret = "metrics-test-secret-long-enough-for-hs256-keys";
    let token = Authenticator::new(secret.as_bytes(), &[])
        .unwrap()
        .issue(
            "77",
            "auditor@example.com",
            "ADMIN",
            Duration::from_secs(600),
        )
        .unwrap();
    let db = TestDatabase::create().await;
    db.exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000);")
        .await;
    let server = spawn(
        &["serve"],
        &[
            ("JWT_SECRET", secret.to_string()),
            ("DATABASE_URL", db.url.clone()),
            ("LOG_FORMAT", "json".to_string()),
        ],
    );
    let scrape = || async {
        reqwest::get(format!("http://{}/metrics", server.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let mut client = client_with(server.grpc, Some(format!("Bearer {token}"))).await;
    let created = client
        .create_backup(CreateBackupRequest::default())
        .await
        .unwrap()
        .into_inner();
    let bytes = download(&mut client, &created.backup_id, 0).await;
    // Make the next backup fail: its COPY waits on a lock and its backend is killed.
    let pool = db.pool().await;
    failed_backup(&mut client, &pool, "t").await;
    let mut anonymous = client_with(server.grpc, None).await;
    let _ = anonymous.list_backups(ListBackupsRequest::default()).await;
    let _ = client
        .delete_backup(backup_service::proto::DeleteBackupRequest {
            backup_id: created.backup_id.clone(),
        })
        .await
        .unwrap();
    pool.close().await;

    let after = scrape().await;
    let moved = |name: &str| metric(&after, name) - metric(&before, name);
    assert_eq!(
        moved("backup_service_backups_created_total{trigger=\"manual\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        moved("backup_service_backups_failed_total{trigger=\"manual\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(moved("backup_service_backup_duration_seconds_count"), 1.0);
    assert_eq!(
        moved("backup_service_backup_size_bytes_sum"),
        created.size as f64
    );
    assert_eq!(
        moved("backup_service_storage_uploaded_bytes_total"),
        created.size as f64
    );
    assert_eq!(
        moved("backup_service_downloaded_bytes_total"),
        bytes.len() as f64
    );
    assert!(metric(&after, "backup_service_last_success_timestamp_seconds") > 1.7e9);
    assert!(
        moved(
            "backup_service_requests_total{transport=\"grpc\",method=\"CreateBackup\",code=\"OK\"}"
        ) >= 2.0,
        "{after}"
    );
    assert!(
        moved(
            "backup_service_request_duration_seconds_count{transport=\"grpc\",method=\"CreateBackup\"}"
        ) >= 2.0
    );
    assert!(
        after.contains("method=\"GET\",route=\"/metrics\""),
        "HTTP requests are counted too"
    );

    let logs = server.logs();
    let audits: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    let find = |action: &str, outcome: &str| {
        audits
            .iter()
            .find(|a| a["fields"]["action"] == action && a["fields"]["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} {action} audit event in {audits:#?}"))
            .clone()
    };
    let create = find("create", "ok");
    assert_eq!(create["fields"]["user_id"], "77");
    assert_eq!(create["fields"]["email"], "auditor@example.com");
    assert_eq!(create["fields"]["role"], "ADMIN");
    assert_eq!(create["fields"]["backup_id"], created.backup_id);
    assert!(
        create["fields"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(create["fields"]["at"].is_string());
    find("download", "ok");
    find("delete", "ok");
    let refused = find("authenticate", "refused");
    assert_eq!(refused["fields"]["code"], "UNAUTHENTICATED");
}

/// Runs `serve` with `env` and expects it to refuse to start.
fn refused_start(env: &[(&str, &str)]) -> String {
    let dir = temp_dir();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_remove("JWT_SECRET")
        .env("DATABASE_URL", sqlite_url(dir.path()))
        .env("STORAGE_URL", dir.path().join("backups"))
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with a weak secret");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "a weak secret must stop the start");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    stderr
}

#[test]
fn weak_or_empty_jwt_secrets_are_refused_at_start() {
    let short = refused_start(&[("JWT_SECRET", "change-me")]);
    assert!(short.contains("at least 32"), "{short}");
    assert!(
        !short.contains("change-me"),
        "the secret is not echoed: {short}"
    );
    let empty = refused_start(&[("JWT_SECRET", "")]);
    assert!(empty.contains("empty"), "{empty}");
    let token = Command::new(BIN)
        .args(["token", "--role", "ADMIN"])
        .env("JWT_SECRET", "12345")
        .output()
        .expect("binary runs");
    assert!(!token.status.success(), "token refuses a short secret too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_listens_on_loopback_unless_told_otherwise() {
    let wildcard = [
        ("GRPC_ADDR", "0.0.0.0:0".to_string()),
        ("HTTP_ADDR", "0.0.0.0:0".to_string()),
    ];
    let server = spawn(&["serve"], &wildcard);
    assert!(server.grpc.ip().is_loopback(), "{}", server.grpc);
    assert!(server.http.ip().is_loopback(), "{}", server.http);
    drop(server);
    let mut all = wildcard.to_vec();
    all.push(("DEV_LISTEN_ALL", "true".to_string()));
    let server = spawn(&["serve"], &all);
    assert!(server.grpc.ip().is_unspecified(), "{}", server.grpc);
}
