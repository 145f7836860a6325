//! Downloads of stored files that were tampered with after the backup:
//! neither transport may end such a download cleanly or send bytes past the
//! recorded size. Tampering edits the file in the local storage directory.

mod common;

use std::path::PathBuf;

use backup_service::proto::DownloadBackupRequest;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

/// A running server over a seeded SQLite database, and one uncompressed
/// backup of several storage read chunks.
struct Fixture {
    _dir: tempfile::TempDir,
    server: backup_service::app::Running,
    storage: PathBuf,
    id: String,
    size: u64,
    original: Vec<u8>,
}

impl Fixture {
    async fn new() -> Self {
        use sqlx::Connection;
        let dir = temp_dir();
        let url = sqlite_url(dir.path());
        let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .expect("sqlite");
        sqlx::raw_sql(
            "CREATE TABLE member (id INTEGER PRIMARY KEY, name TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
             INSERT INTO member SELECT i, 'member number ' || i FROM n;",
        )
        .execute(&mut conn)
        .await
        .expect("seed");
        let storage = dir.path().join("backups");
        let server = start(&config(&url, &storage)).await;
        let created: Value = RestClient::new()
            .post(format!("http://{}/api/backup/create", server.http_addr))
            .json(&json!({"compression": "none"}))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("created JSON");
        let id = created["backupId"].as_str().expect("id").to_string();
        let filename = created["filename"].as_str().expect("filename");
        let size = created["size"].as_u64().expect("size");
        let original = std::fs::read(storage.join(filename)).expect("stored file");
        assert_eq!(original.len() as u64, size);
        // Several 256 KiB storage chunks, so holding back the last one shows.
        assert!(size > 3 * 256 * 1024, "backup too small: {size} bytes");
        Self {
            storage: storage.join(filename),
            _dir: dir,
            server,
            id,
            size,
            original,
        }
    }

    fn flip_byte(&self, at: u64) {
        let mut bytes = self.original.clone();
        bytes[at as usize] ^= 0x01;
        std::fs::write(&self.storage, bytes).expect("tamper");
    }

    fn append(&self, extra: &[u8]) {
        let mut bytes = self.original.clone();
        bytes.extend_from_slice(extra);
        std::fs::write(&self.storage, bytes).expect("tamper");
    }

    fn url(&self) -> String {
        format!(
            "http://{}/api/backup/download/{}",
            self.server.http_addr, self.id
        )
    }

    /// Status (None: the connection closed before the response head, as
    /// when the fault comes before the first byte sent), body bytes
    /// received, and whether the body ended cleanly.
    async fn rest_get(&self, range: Option<&str>) -> (Option<StatusCode>, Vec<u8>, bool) {
        let mut req = RestClient::new().get(self.url());
        if let Some(range) = range {
            req = req.header("Range", range);
        }
        let mut response = match req.send().await {
            Ok(response) => response,
            Err(e) => {
                assert!(e.is_request(), "{e:?}");
                return (None, Vec::new(), false);
            }
        };
        let status = Some(response.status());
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => return (status, body, true),
                Err(_) => return (status, body, false),
            }
        }
    }

    /// Bytes received and the stream's final status (None: a clean end).
    async fn grpc_get(&self, offset: u64) -> (Vec<u8>, Option<tonic::Status>) {
        let mut client = admin_client(self.server.grpc_addr).await;
        let mut stream = client
            .download_backup(DownloadBackupRequest {
                backup_id: self.id.clone(),
                offset,
            })
            .await
            .expect("download starts")
            .into_inner();
        let mut out = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    assert_eq!(msg.offset, offset + out.len() as u64, "chunk offsets");
                    out.extend_from_slice(&msg.chunk);
                }
                Ok(None) => return (out, None),
                Err(status) => return (out, Some(status)),
            }
        }
    }
}

struct RestClient {
    http: reqwest::Client,
}

impl RestClient {
    fn new() -> Self {
        Self {
            http: reqwest::Client::new(),
        }
    }
    fn get(&self, url: String) -> reqwest::RequestBuilder {
        self.http.get(url).bearer_auth(token("ADMIN"))
    }
    fn post(&self, url: String) -> reqwest::RequestBuilder {
        self.http.post(url).bearer_auth(token("ADMIN"))
    }
}

fn assert_data_loss(status: Option<tonic::Status>) {
    let status = status.expect("the download must not end cleanly");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intact_file_downloads_cleanly_on_both_transports() {
    let f = Fixture::new().await;
    let (status, body, clean) = f.rest_get(None).await;
    assert_eq!(status, Some(StatusCode::OK));
    assert!(clean);
    assert_eq!(body, f.original);
    let (body, end) = f.grpc_get(0).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(body, f.original);
    let middle = f.size / 2;
    let (body, end) = f.grpc_get(middle).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(body, f.original[middle as usize..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_ends_grpc_download_with_data_loss() {
    let f = Fixture::new().await;
    f.flip_byte(f.size / 2);
    let (body, end) = f.grpc_get(0).await;
    assert_data_loss(end);
    assert!(body.len() < f.original.len(), "{} bytes sent", body.len());
    // What was sent is the file as stored, up to the fault.
    let mut tampered = f.original.clone();
    tampered[(f.size / 2) as usize] ^= 0x01;
    assert_eq!(body, tampered[..body.len()]);

    // A resumed download (past the flipped byte) checks the whole file too.
    let (body, end) = f.grpc_get(f.size - 1000).await;
    assert_data_loss(end);
    assert!(body.len() < 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longer_file_never_sends_past_the_recorded_size_over_grpc() {
    let f = Fixture::new().await;
    f.append(&[b'x'; 70_000]);
    let (body, end) = f.grpc_get(0).await;
    assert_data_loss(end);
    assert!(body.len() as u64 <= f.size, "{} > {}", body.len(), f.size);
    assert_eq!(body, f.original[..body.len()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_aborts_the_rest_body() {
    let f = Fixture::new().await;
    // The very last byte: the body is cut before it reaches the client.
    f.flip_byte(f.size - 1);
    let (status, body, clean) = f.rest_get(None).await;
    assert!(matches!(status, None | Some(StatusCode::OK)), "{status:?}");
    assert!(!clean, "a tampered file must not end cleanly");
    assert!(body.len() < f.original.len());
    assert_eq!(body, f.original[..body.len()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longer_file_aborts_the_rest_body_within_the_recorded_size() {
    let f = Fixture::new().await;
    f.append(b"appended after the backup");
    let (status, body, clean) = f.rest_get(None).await;
    assert!(matches!(status, None | Some(StatusCode::OK)), "{status:?}");
    assert!(!clean);
    assert!(body.len() as u64 <= f.size);
}

/// The README's decision for ranges: a range that reaches the end of the
/// file (a resume, `curl -C -`) verifies the whole file by hashing the
/// prefix too; a range that ends earlier is served capped, unverified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_reaching_the_end_verify_the_whole_file() {
    let f = Fixture::new().await;
    // Tamper with the prefix that a resume does not send.
    f.flip_byte(10);
    let resume_from = f.size - 100;
    let (status, body, clean) = f.rest_get(Some(&format!("bytes={resume_from}-"))).await;
    assert!(
        matches!(status, None | Some(StatusCode::PARTIAL_CONTENT)),
        "{status:?}"
    );
    assert!(!clean, "a resume of a tampered file must not end cleanly");
    assert!(body.len() < 100);
    let (status, body, clean) = f.rest_get(Some("bytes=-50")).await;
    assert!(
        matches!(status, None | Some(StatusCode::PARTIAL_CONTENT)),
        "{status:?}"
    );
    assert!(!clean);
    assert!(body.len() < 50);

    // A range inside the file cannot be checked without reading it all:
    // it is served as stored, and never more than asked for.
    let (status, body, clean) = f.rest_get(Some("bytes=100-199")).await;
    assert_eq!(status, Some(StatusCode::PARTIAL_CONTENT));
    assert!(clean);
    assert_eq!(body, f.original[100..200]);
}
