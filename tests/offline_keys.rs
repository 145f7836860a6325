//! Offline commands resolve encryption keys as `serve` does: a key given
//! only as a file (BACKUP_ENCRYPTION_KEY_FILE) opens an encrypted backup.

mod common;

use std::process::Command;

use backup_service::proto::CreateBackupRequest;
use base64::Engine;
use common::*;
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_backup-service");

async fn sqlite_exec(url: &str, sql: &str) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .expect("open sqlite");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut conn)
        .await
        .expect("run SQL");
    conn.close().await.ok();
}

async fn sqlite_count(url: &str) -> i64 {
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .expect("open sqlite");
    let n = sqlx::query_scalar("SELECT count(*) FROM member")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    conn.close().await.ok();
    n
}

/// Runs `restore-file` with only the given key variables set.
fn restore_file(file: &std::path::Path, target: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "restore-file",
        file.to_str().expect("utf-8 path"),
        "--target-url",
        target,
    ])
    .env_remove("BACKUP_ENCRYPTION_KEY")
    .env_remove("BACKUP_ENCRYPTION_KEY_FILE")
    .env_remove("BACKUP_DECRYPTION_KEYS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_file_opens_an_encrypted_backup_with_only_a_key_file() {
    let dir = temp_dir();
    let url = sqlite_url(dir.path());
    sqlite_exec(
        &url,
        "CREATE TABLE member (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO member VALUES (1, 'one'), (2, 'two'), (3, 'three');",
    )
    .await;
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let mut cfg = config(&url, &dir.path().join("backups"));
    cfg.keys.encryption_key = Some(key.clone());
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = client
        .create_backup(CreateBackupRequest::default())
        .await
        .expect("backup")
        .into_inner();
    assert!(
        !backup.encryption_key_id.is_empty(),
        "the backup is encrypted"
    );
    let file = dir.path().join(&backup.filename);
    std::fs::write(&file, download(&mut client, &backup.backup_id, 0).await).expect("write");
    server.shutdown().await;
    let key_file = dir.path().join("backup.key");
    std::fs::write(&key_file, format!("{key}\n")).expect("write key file");
    sqlite_exec(&url, "DELETE FROM member WHERE id > 1").await;

    // Without any key the file is refused and nothing changes.
    let (ok, stderr) = restore_file(&file, &url, &[]);
    assert!(!ok && stderr.contains("not configured"), "{stderr}");
    assert_eq!(sqlite_count(&url).await, 1);

    // A key file that does not exist is named in the error.
    let missing = dir.path().join("missing.key");
    let (ok, stderr) = restore_file(
        &file,
        &url,
        &[(
            "BACKUP_ENCRYPTION_KEY_FILE",
            missing.to_str().expect("utf-8"),
        )],
    );
    assert!(
        !ok && stderr.contains("BACKUP_ENCRYPTION_KEY_FILE"),
        "{stderr}"
    );
    assert_eq!(sqlite_count(&url).await, 1);

    // The key file alone opens it.
    let (ok, stderr) = restore_file(
        &file,
        &url,
        &[(
            "BACKUP_ENCRYPTION_KEY_FILE",
            key_file.to_str().expect("utf-8"),
        )],
    );
    assert!(ok, "{stderr}");
    assert_eq!(sqlite_count(&url).await, 3);
}
