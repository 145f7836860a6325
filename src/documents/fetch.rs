//! Fetches one document into an anonymous temp file, computing its size and
//! SHA-256 while it streams and enforcing the size cap, so no document is
//! ever held whole in memory.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use url::Url;

use super::guard::{GuardedResolver, Refused};
use super::{DocumentSettings, MissingDocument, redact_document_url};
use crate::error::{Error, Result};

/// Redirects followed per document, each checked like the first URL.
const MAX_REDIRECTS: usize = 5;
const WRITE_BUFFER: usize = 256 * 1024;
/// Longer URLs are not fetched (no server takes them) and are listed cut
/// short, so every line of the documents section stays far below the
/// reader's `MAX_DOCUMENT_LINE`.
pub const MAX_URL_BYTES: usize = 64 * 1024;
/// A longer Content-Type is replaced by `application/octet-stream`.
const MAX_CONTENT_TYPE_BYTES: usize = 1024;

/// A document in a temp file, rewound to its start.
pub struct Fetched {
    pub url: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub file: tokio::fs::File,
}

pub enum Outcome {
    Fetched(Fetched),
    Missing(MissingDocument),
}

/// Why one attempt failed, and whether another attempt may help.
struct Failure {
    reason: String,
    retry: bool,
}

impl Failure {
    fn permanent(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retry: false,
        }
    }
    fn transient(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            retry: true,
        }
    }
}

pub struct Fetcher {
    client: reqwest::Client,
    settings: Arc<DocumentSettings>,
}

impl Fetcher {
    pub fn new(settings: Arc<DocumentSettings>) -> Result<Self> {
        let policy = settings.policy.clone();
        let redirect_policy = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
            }
            match redirect_policy.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(Refused(why)) => attempt.error(Refused(format!("redirect: {why}"))),
            }
        });
        let client = reqwest::Client::builder()
            // A proxy would resolve names itself, past the guard.
            .no_proxy()
            .dns_resolver(GuardedResolver { policy })
            .redirect(redirects)
            .connect_timeout(settings.timeout.min(Duration::from_secs(30)))
            .user_agent(concat!("backup-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("building the document HTTP client: {e}")))?;
        Ok(Self { client, settings })
    }

    /// Fetches one document; never fails the caller, a problem becomes the
    /// reason of a missing document.
    pub async fn fetch(&self, url: &str) -> Outcome {
        let missing = |reason: String| {
            tracing::warn!(url = %redact_document_url(url), %reason, "document could not be fetched");
            Outcome::Missing(MissingDocument {
                url: url.to_string(),
                reason,
            })
        };
        if url.len() > MAX_URL_BYTES {
            let mut cut = MAX_URL_BYTES;
            while !url.is_char_boundary(cut) {
                cut -= 1;
            }
            let reason = format!("URL longer than {MAX_URL_BYTES} bytes (listed cut short)");
            tracing::warn!(url = %redact_document_url(url), %reason, "document could not be fetched");
            return Outcome::Missing(MissingDocument {
                url: url[..cut].to_string(),
                reason,
            });
        }
        let parsed = match Url::parse(url) {
            Ok(u) => u,
            Err(e) => return missing(format!("not a valid URL: {e}")),
        };
        let attempts = 1 + self.settings.retries;
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                let backoff = Duration::from_millis(500u64 << (attempt - 1).min(4));
                tokio::time::sleep(backoff).await;
            }
            let once = async {
                match parsed.scheme() {
                    "file" => self.fetch_file(&parsed).await,
                    "http" | "https" => self.fetch_http(&parsed).await,
                    other => Err(Failure::permanent(format!(
                        "refused: scheme {other:?} is not allowed"
                    ))),
                }
            };
            let result = match tokio::time::timeout(self.settings.timeout, once).await {
                Ok(result) => result,
                Err(_) => Err(Failure::transient(format!(
                    "timed out after {} s",
                    self.settings.timeout.as_secs_f64()
                ))),
            };
            match result {
                Ok(mut fetched) => {
                    fetched.url = url.to_string();
                    return Outcome::Fetched(fetched);
                }
                Err(f) if f.retry => last = f.reason,
                Err(f) => return missing(f.reason),
            }
        }
        if attempts > 1 {
            last = format!("{last} (after {attempts} attempts)");
        }
        missing(last)
    }

    async fn fetch_http(&self, url: &Url) -> std::result::Result<Fetched, Failure> {
        self.settings
            .policy
            .check_url(url)
            .map_err(|r| Failure::permanent(r.to_string()))?;
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            let reason = format!("HTTP {status}");
            return Err(if status.is_server_error() {
                Failure::transient(reason)
            } else {
                Failure::permanent(reason)
            });
        }
        let cap = self.settings.max_bytes;
        if let Some(length) = response.content_length().filter(|l| *l > cap) {
            return Err(too_large(length, cap));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_CONTENT_TYPE_BYTES)
            .map(str::to_string)
            .unwrap_or_else(|| "application/octet-stream".into());
        let mut body = response.bytes_stream();
        let mut sink = TempSink::new(cap).await?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(classify)?;
            sink.write(&chunk).await?;
        }
        sink.finish(content_type).await
    }

    async fn fetch_file(&self, url: &Url) -> std::result::Result<Fetched, Failure> {
        // Resolving, checking and opening touch the file system: off the
        // runtime's workers.
        let policy = self.settings.policy.clone();
        let checked = url.clone();
        let (file, path) = tokio::task::spawn_blocking(move || policy.open_file(&checked))
            .await
            .map_err(|e| Failure::permanent(format!("opening the file stopped: {e}")))?
            .map_err(|r| Failure::permanent(r.to_string()))?;
        let mut file = tokio::fs::File::from_std(file);
        let cap = self.settings.max_bytes;
        let mut sink = TempSink::new(cap).await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| Failure::permanent(format!("reading the file: {}", e.kind())))?;
            if n == 0 {
                break;
            }
            sink.write(&buf[..n]).await?;
        }
        sink.finish(content_type_for(&path).into()).await
    }
}

fn too_large(size: u64, cap: u64) -> Failure {
    Failure::permanent(format!(
        "too large: more than DOCUMENT_MAX_BYTES ({cap} bytes){}",
        if size > cap {
            format!(", {size} bytes announced")
        } else {
            String::new()
        }
    ))
}

/// The reason for an HTTP client error, without the URL (it may carry a
/// token); refusals by the guard come out as such.
fn classify(e: reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Failure::permanent(refused.to_string());
        }
        source = err.source();
    }
    let retry = e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    Failure {
        reason: parts.join(": "),
        retry,
    }
}

/// The temp file a document streams into, with its running size and hash.
struct TempSink {
    out: tokio::io::BufWriter<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
    cap: u64,
}

impl TempSink {
    async fn new(cap: u64) -> std::result::Result<Self, Failure> {
        let file = tempfile::tempfile()
            .map_err(|e| Failure::permanent(format!("creating a temp file: {e}")))?;
        Ok(Self {
            out: tokio::io::BufWriter::with_capacity(WRITE_BUFFER, tokio::fs::File::from_std(file)),
            hasher: Sha256::new(),
            size: 0,
            cap,
        })
    }

    async fn write(&mut self, data: &[u8]) -> std::result::Result<(), Failure> {
        self.size += data.len() as u64;
        if self.size > self.cap {
            return Err(too_large(0, self.cap));
        }
        self.hasher.update(data);
        self.out
            .write_all(data)
            .await
            .map_err(|e| Failure::permanent(format!("writing a temp file: {e}")))
    }

    async fn finish(mut self, content_type: String) -> std::result::Result<Fetched, Failure> {
        let io = |e: std::io::Error| Failure::permanent(format!("writing a temp file: {e}"));
        self.out.flush().await.map_err(io)?;
        let mut file = self.out.into_inner();
        file.rewind().await.map_err(io)?;
        Ok(Fetched {
            url: String::new(),
            content_type,
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            file,
        })
    }
}

/// Media type of a local file, from its extension.
fn content_type_for(path: &std::path::Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        _ => "application/octet-stream",
    }
}
