//! The S3-compatible backend against a real S3 implementation (moto's
//! server, started here on 127.0.0.1): the whole create, list, download,
//! delete and restore flow, every compression and encryption combination,
//! multipart uploads, and a catalog rebuilt from the bucket.
//!
//! One test function: the AWS_* variables are process-wide, so they are set
//! once before any server starts.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backup_service::proto::{
    CreateBackupRequest, DeleteBackupRequest, ListBackupsRequest, RestoreBackupRequest,
    SetMaintenanceModeRequest,
};
use base64::Engine;
use common::*;
use sha2::{Digest, Sha256};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is installed (pip install 'moto[server]'; .ci/run does this)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, endpoint };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not start");
}

async fn bucket_keys(endpoint: &str, bucket: &str) -> Vec<String> {
    let body = reqwest::get(format!("{endpoint}/{bucket}?list-type=2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

async fn fingerprint(db: &TestDatabase) -> (i64, String) {
    let pool = db.pool().await;
    let row: (i64, String) = sqlx::query_as(
        "SELECT count(*), md5(string_agg(id || payload, ',' ORDER BY id)) FROM \"Document\"",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    row
}

async fn restore(client: &mut Client, id: &str) {
    client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: true,
            reason: "s3 test".into(),
        })
        .await
        .unwrap();
    let mut stream = client
        .restore_backup(RestoreBackupRequest {
            backup_id: id.into(),
            skip_safety_backup: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: false,
            reason: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_end_to_end() {
    let moto = start_moto().await;
    let bucket = "backups-test";
    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", moto.endpoint))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    // SAFETY: set once, before any server of this test binary reads them.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test-access-key");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test-secret-key");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
    }

    let db = TestDatabase::create().await;
    // About 12 MB of JSON: more than one 8 MiB multipart part.
    db.exec(
        "CREATE TABLE \"Document\" (id serial PRIMARY KEY, payload text NOT NULL);
         INSERT INTO \"Document\" (payload) SELECT repeat(md5(g::text), 6) FROM generate_series(1, 60000) g;",
    )
    .await;
    let original = fingerprint(&db).await;
    let dir = temp_dir();
    let storage_url = format!("s3://{bucket}/prod/loans");
    let mut cfg = config(&db.url, std::path::Path::new(&storage_url));
    cfg.storage_url = storage_url.clone();
    let key = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);

    let mut ids = Vec::new();
    for encrypted in [false, true] {
        cfg.keys.encryption_key = encrypted.then(|| key.clone());
        let server = start(&cfg).await;
        let mut client = admin_client(server.grpc_addr).await;
        for compression in ["none", "gzip", "zstd"] {
            let what = format!("{compression}, encrypted={encrypted}");
            let b = client
                .create_backup(CreateBackupRequest {
                    description: what.clone(),
                    compression: compression.into(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"))
                .into_inner();
            assert_eq!(
                b.cloudinary_url,
                format!("s3://{bucket}/prod/loans/{}", b.filename),
                "{what}"
            );
            let bytes = download(&mut client, &b.backup_id, 0).await;
            assert_eq!(bytes.len() as u64, b.size, "{what}");
            assert_eq!(hex::encode(Sha256::digest(&bytes)), b.sha256, "{what}");
            let tail = download(&mut client, &b.backup_id, b.size / 2).await;
            assert_eq!(tail, bytes[(b.size / 2) as usize..], "{what}: ranged read");
            let report = verify(&mut client, &b.backup_id).await;
            assert!(report.ok, "{what}: {:?}", report.problems);
            db.exec("DELETE FROM \"Document\" WHERE id % 2 = 0;").await;
            restore(&mut client, &b.backup_id).await;
            assert_eq!(fingerprint(&db).await, original, "{what}: restored from S3");
            ids.push((b.backup_id, b.filename));
        }
        server.shutdown().await;
    }
    let keys = bucket_keys(&moto.endpoint, bucket).await;
    for (id, filename) in &ids {
        assert!(
            keys.contains(&format!("prod/loans/{filename}")),
            "{filename} in {keys:?}"
        );
        assert!(keys.contains(&format!("prod/loans/{id}.manifest.json")));
    }

    // A new server (as after losing its disk) rebuilds the catalog from the bucket.
    cfg.keys.encryption_key = Some(key.clone());
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 6);
    assert_eq!(list.cloudinary_stats.unwrap().count, 6);
    let newest = &list.backups[0];
    assert_eq!(newest.backup_id, ids[5].0, "newest first");

    // Delete removes data and manifest; a second delete is NOT_FOUND.
    let (id, filename) = &ids[0];
    client
        .delete_backup(DeleteBackupRequest {
            backup_id: id.clone(),
        })
        .await
        .unwrap();
    let keys = bucket_keys(&moto.endpoint, bucket).await;
    assert!(
        !keys
            .iter()
            .any(|k| k.ends_with(filename.as_str()) || k.contains(&format!("{id}.manifest"))),
        "{keys:?}"
    );
    let e = client
        .delete_backup(DeleteBackupRequest {
            backup_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // A failed backup leaves no data object in the bucket.
    let pool = db.pool().await;
    let failed = failed_backup(&mut client, &pool, "\"Document\"").await;
    let keys = bucket_keys(&moto.endpoint, bucket).await;
    let data: Vec<_> = keys
        .iter()
        .filter(|k| k.contains(&failed) && !k.ends_with(".manifest.json"))
        .collect();
    assert!(
        data.is_empty(),
        "no data object for the failed backup: {data:?}"
    );
    pool.close().await;
    server.shutdown().await;
    drop(dir);
}
