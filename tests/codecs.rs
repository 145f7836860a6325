//! Compression and encryption at rest, end to end on local storage: every
//! combination round-trips through backup, download and restore; tampering
//! is refused before anything is written; old keys keep old backups readable.

mod common;

use backup_service::proto::{CreateBackupRequest, RestoreBackupRequest, SetMaintenanceModeRequest};
use base64::Engine;
use common::*;
use sha2::{Digest, Sha256};

const MARKER: &str = "very-personal-data-marker";

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

async fn seeded() -> TestDatabase {
    let db = TestDatabase::create().await;
    db.exec(&format!(
        "CREATE TABLE \"Member\" (id serial PRIMARY KEY, name text NOT NULL, note jsonb);
         INSERT INTO \"Member\" (name, note) SELECT '{MARKER} ' || g, jsonb_build_object('n', g) FROM generate_series(1, 5000) g;"
    ))
    .await;
    db
}

async fn fingerprint(db: &TestDatabase) -> (i64, String) {
    let pool = db.pool().await;
    let row: (i64, String) = sqlx::query_as(
        "SELECT count(*), md5(string_agg(id || name || note::text, ',' ORDER BY id)) FROM \"Member\"",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

async fn restore(client: &mut Client, id: &str) -> Result<(), tonic::Status> {
    let mut stream = client
        .restore_backup(RestoreBackupRequest {
            backup_id: id.into(),
            skip_safety_backup: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_compression_and_encryption_combination_round_trips() {
    let db = seeded().await;
    let original = fingerprint(&db).await;
    for encrypted in [false, true] {
        let dir = temp_dir();
        let mut cfg = config(&db.url, &dir.path().join("backups"));
        if encrypted {
            cfg.keys.encryption_key = Some(key(1));
        }
        let server = start(&cfg).await;
        let mut client = admin_client(server.grpc_addr).await;
        for (compression, extension, content_type) in [
            ("none", ".json", "application/json"),
            ("gzip", ".json.gz", "application/gzip"),
            ("zstd", ".json.zst", "application/zstd"),
        ] {
            let what = format!("{compression}, encrypted={encrypted}");
            let b = client
                .create_backup(CreateBackupRequest {
                    compression: compression.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let expected_name = format!(
                "{}{extension}{}",
                b.backup_id,
                if encrypted { ".enc" } else { "" }
            );
            assert_eq!(b.filename, expected_name, "{what}");
            assert_eq!(b.compression, compression);
            assert_eq!(b.encryption_key_id.is_empty(), !encrypted);
            assert_eq!(
                b.content_type,
                if encrypted {
                    "application/octet-stream"
                } else {
                    content_type
                },
                "{what}"
            );
            let stored = std::fs::read(dir.path().join("backups").join(&b.filename)).unwrap();
            assert_eq!(
                hex::encode(Sha256::digest(&stored)),
                b.sha256,
                "record hashes the stored bytes"
            );
            assert_eq!(stored.len() as u64, b.size);
            let plain_visible = String::from_utf8_lossy(&stored).contains(MARKER);
            assert_eq!(
                plain_visible,
                compression == "none" && !encrypted,
                "{what}: plaintext visibility"
            );
            if encrypted {
                assert!(stored.starts_with(b"BSENC\x01"), "{what}");
            }
            let downloaded = download(&mut client, &b.backup_id, 0).await;
            assert_eq!(
                downloaded, stored,
                "{what}: download returns the stored bytes"
            );

            let report = verify(&mut client, &b.backup_id).await;
            assert!(report.ok, "{what}: {:?}", report.problems);
            assert_eq!(report.row_counts.get("public.Member"), Some(&5000));

            db.exec(
                "DELETE FROM \"Member\" WHERE id % 3 = 0; UPDATE \"Member\" SET name = 'changed';",
            )
            .await;
            client
                .set_maintenance_mode(SetMaintenanceModeRequest {
                    enabled: true,
                    reason: what.clone(),
                })
                .await
                .unwrap();
            restore(&mut client, &b.backup_id)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            client
                .set_maintenance_mode(SetMaintenanceModeRequest {
                    enabled: false,
                    reason: String::new(),
                })
                .await
                .unwrap();
            assert_eq!(fingerprint(&db).await, original, "{what}: restored data");
        }
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_encrypted_backup_is_refused_and_keys_rotate() {
    let db = seeded().await;
    let original = fingerprint(&db).await;
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let mut cfg = config(&db.url, &storage);
    cfg.keys.encryption_key = Some(key(1));
    cfg.compression = "zstd".into();
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let b = client
        .create_backup(CreateBackupRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.compression, "zstd", "the server default applies");
    server.shutdown().await;

    // Rotation: a new key, the old one listed for decryption.
    let mut rotated = cfg.clone();
    rotated.keys.encryption_key = Some(key(2));
    rotated.keys.decryption_keys = vec![key(1)];
    let server = start(&rotated).await;
    let mut client = admin_client(server.grpc_addr).await;
    let report = verify(&mut client, &b.backup_id).await;
    assert!(
        report.ok,
        "old backups stay readable: {:?}",
        report.problems
    );
    let newer = client
        .create_backup(CreateBackupRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        newer.encryption_key_id, b.encryption_key_id,
        "new backups use the new key"
    );
    server.shutdown().await;

    // Without the old key the old backup cannot be read, and says why.
    let mut forgotten = cfg.clone();
    forgotten.keys.encryption_key = Some(key(2));
    let server = start(&forgotten).await;
    let mut client = admin_client(server.grpc_addr).await;
    let report = verify(&mut client, &b.backup_id).await;
    assert!(!report.ok);
    assert!(
        report.problems.join(" ").contains("not configured"),
        "{:?}",
        report.problems
    );
    server.shutdown().await;

    // One flipped byte anywhere in the ciphertext: refused, nothing restored.
    let server = start(&rotated).await;
    let mut client = admin_client(server.grpc_addr).await;
    client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: true,
            reason: "drill".into(),
        })
        .await
        .unwrap();
    let path = storage.join(&b.filename);
    let good = std::fs::read(&path).unwrap();
    db.exec("DELETE FROM \"Member\" WHERE id > 4000;").await;
    let damaged_state = fingerprint(&db).await;
    for position in [40, good.len() / 2, good.len() - 3] {
        let mut bad = good.clone();
        bad[position] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let e = restore(&mut client, &b.backup_id).await.unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::FailedPrecondition,
            "byte {position}: {}",
            e.message()
        );
        assert_eq!(
            fingerprint(&db).await,
            damaged_state,
            "byte {position}: nothing restored"
        );
        let report = verify(&mut client, &b.backup_id).await;
        assert!(!report.ok && !report.sha256_matches);
    }
    std::fs::write(&path, &good).unwrap();
    restore(&mut client, &b.backup_id).await.unwrap();
    assert_eq!(fingerprint(&db).await, original);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_and_requests_are_refused() {
    let dir = temp_dir();
    let mut cfg = config(&sqlite_url(dir.path()), &dir.path().join("backups"));
    cfg.keys.encryption_key = Some("too-short".into());
    assert!(
        backup_service::app::start(&cfg).await.is_err(),
        "a malformed key stops the start"
    );
    cfg.keys.encryption_key = None;
    cfg.compression = "brotli".into();
    assert!(
        backup_service::app::start(&cfg).await.is_err(),
        "an unknown default compression stops the start"
    );
    cfg.compression = "none".into();
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let e = client
        .create_backup(CreateBackupRequest {
            compression: "lz4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let left = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "nothing stored");
    server.shutdown().await;
}
