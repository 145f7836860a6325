//! Cloudinary's HTTP API over reqwest: signed Upload API calls (upload,
//! chunked upload, destroy, private download) and Basic-auth Admin API calls
//! (list, usage). Retries 420, 429, 5xx and connection failures with bounded
//! exponential backoff and jitter; never other 4xx. Tracks the Admin API's
//! `X-FeatureRateLimit-*` headers. No message ever carries the api_secret.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::config::CloudinaryConfig;
use super::sign;
use crate::error::{Error, Result};

/// Longest single wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Lifetime of a signed download request (only checked when it starts).
const DOWNLOAD_VALID_SECS: u64 = 600;

/// One asset as the Upload and Admin APIs describe it.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource {
    pub public_id: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub secure_url: String,
}

impl Resource {
    pub fn created(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.created_at)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    resources: Vec<Resource>,
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct MediaLimits {
    #[serde(default)]
    pub raw_max_size_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub media_limits: MediaLimits,
}

#[derive(Debug, Deserialize)]
struct ChunkAnswer {
    #[serde(default)]
    done: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct DestroyAnswer {
    #[serde(default)]
    result: String,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}

#[derive(Debug, Deserialize)]
struct ErrorMessage {
    message: String,
}

/// One request of a chunked upload.
#[derive(Debug, Clone)]
pub struct ChunkRange {
    pub upload_id: String,
    pub first: u64,
    pub last: u64,
    /// Known only on the asset's final chunk; `-1` is sent before that.
    pub total: Option<u64>,
}

pub enum UploadOutcome {
    /// An intermediate chunk was accepted.
    Partial,
    /// The asset exists.
    Done(Resource),
}

/// The Admin API's budget as its last answer stated it.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset: Option<SystemTime>,
}

pub struct Client {
    http: reqwest::Client,
    pub config: Arc<CloudinaryConfig>,
    rate: Mutex<RateLimit>,
    last_ok: Mutex<Option<Instant>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// A failure of one attempt: retry it or give up.
struct Attempt {
    retry: bool,
    status: Option<StatusCode>,
    message: String,
}

impl Client {
    pub fn new(config: Arc<CloudinaryConfig>) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("backup-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::internal(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            http,
            config,
            rate: Mutex::new(RateLimit::default()),
            last_ok: Mutex::new(None),
        })
    }

    /// When the Admin API budget is used up, until when.
    pub fn rate_limited_until(&self) -> Option<SystemTime> {
        let rate = self.rate.lock().map(|r| r.clone()).unwrap_or_default();
        match (rate.remaining, rate.reset) {
            (Some(0), Some(reset)) if reset > SystemTime::now() => Some(reset),
            _ => None,
        }
    }

    pub fn rate_limit(&self) -> RateLimit {
        self.rate.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// When Cloudinary last answered a request successfully.
    pub fn last_ok(&self) -> Option<Instant> {
        self.last_ok.lock().ok().and_then(|t| *t)
    }

    fn mark_ok(&self) {
        if let Ok(mut t) = self.last_ok.lock() {
            *t = Some(Instant::now());
        }
    }

    /// Masks the secret wherever it might have been echoed.
    fn scrub(&self, text: &str) -> String {
        if self.config.api_secret.is_empty() {
            return text.to_string();
        }
        text.replace(&self.config.api_secret, "***")
    }

    fn signed_params(
        &self,
        mut params: Vec<(&'static str, String)>,
    ) -> Vec<(&'static str, String)> {
        params.push(("timestamp", unix_now().to_string()));
        params.retain(|(_, v)| !v.is_empty());
        let signature = sign::sign(&params, &self.config.api_secret, self.config.algorithm);
        // SHA-1 or SHA-256 is an account setting on Cloudinary's side; the
        // configured algorithm must match it.
        params.push(("signature", signature));
        params.push(("api_key", self.config.api_key.clone()));
        params
    }

    fn track_rate_limit(&self, headers: &HeaderMap, status: StatusCode) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let reset = headers
            .get("x-featureratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
        if let Ok(mut rate) = self.rate.lock() {
            if let Some(limit) = number("x-featureratelimit-limit") {
                rate.limit = Some(limit);
            }
            if let Some(remaining) = number("x-featureratelimit-remaining") {
                rate.remaining = Some(remaining);
            }
            if reset.is_some() {
                rate.reset = reset;
            }
            if status.as_u16() == 420 || status == StatusCode::TOO_MANY_REQUESTS {
                rate.remaining = Some(0);
                if rate.reset.is_none_or(|r| r <= SystemTime::now()) {
                    rate.reset = Some(SystemTime::now() + Duration::from_secs(60));
                }
            }
            if rate.remaining.is_some_and(|r| r < 20) {
                tracing::warn!(
                    remaining = rate.remaining,
                    limit = rate.limit,
                    "Cloudinary Admin API budget is almost used up"
                );
            }
        }
    }

    /// Cloudinary's `{"error":{"message":...}}`, or the start of whatever else came back.
    fn message_of(&self, status: StatusCode, body: &[u8]) -> String {
        let text = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(parsed) => parsed.error.message,
            Err(_) => {
                let raw = String::from_utf8_lossy(body);
                let raw = raw.trim();
                if raw.is_empty() {
                    status
                        .canonical_reason()
                        .unwrap_or("no message")
                        .to_string()
                } else {
                    raw.chars().take(200).collect()
                }
            }
        };
        self.scrub(&text)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.retry_base.max(Duration::from_millis(1));
        let full = base
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_BACKOFF);
        // Jitter: between half and all of the exponential delay.
        let half = full / 2;
        let extra = rand::random::<f64>() * half.as_secs_f64();
        half + Duration::from_secs_f64(extra)
    }

    fn classify_status(&self, status: StatusCode, body: &[u8]) -> Attempt {
        let retry = status.as_u16() == 420
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        Attempt {
            retry,
            status: Some(status),
            message: self.message_of(status, body),
        }
    }

    fn classify_transport(&self, e: reqwest::Error) -> Attempt {
        Attempt {
            retry: true,
            status: None,
            message: self.scrub(&format!("connection failed: {}", e.without_url())),
        }
    }

    fn final_error(&self, what: &str, failure: Attempt, attempts: u32) -> Error {
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        let msg = failure.message;
        match failure.status {
            None => Error::unavailable(format!("{what}: Cloudinary unreachable{tries}: {msg}")),
            Some(StatusCode::NOT_FOUND) => Error::not_found(format!("{what}: {msg}")),
            Some(s) if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN => {
                Error::internal(format!(
                    "{what}: Cloudinary refused the credentials or signature ({}): {msg}",
                    s.as_u16()
                ))
            }
            Some(s) if s.as_u16() == 420 || s == StatusCode::TOO_MANY_REQUESTS => {
                Error::unavailable(format!(
                    "{what}: Cloudinary rate limit reached ({}){tries}: {msg}",
                    s.as_u16()
                ))
            }
            Some(s) => Error::internal(format!(
                "{what}: Cloudinary answered {}{tries}: {msg}",
                s.as_u16()
            )),
        }
    }

    /// Sends a request (rebuilt for every attempt) and reads its whole answer.
    async fn call(
        &self,
        what: &str,
        admin: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Bytes> {
        let mut attempt = 0;
        loop {
            let failure = match build().send().await {
                Err(e) => self.classify_transport(e),
                Ok(response) => {
                    let status = response.status();
                    if admin {
                        self.track_rate_limit(response.headers(), status);
                    }
                    match response.bytes().await {
                        // A connection dropped in the middle of the answer.
                        Err(e) => self.classify_transport(e),
                        Ok(body) if status.is_success() => {
                            self.mark_ok();
                            return Ok(body);
                        }
                        Ok(body) => self.classify_status(status, &body),
                    }
                }
            };
            if !failure.retry || attempt >= self.config.retries {
                return Err(self.final_error(what, failure, attempt + 1));
            }
            let wait = self.backoff(attempt);
            tracing::warn!(
                what,
                status = failure.status.map(|s| s.as_u16()),
                error = %failure.message,
                retry_in_ms = wait.as_millis() as u64,
                "Cloudinary request failed; retrying"
            );
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Uploads one asset, or one chunk of it, as a signed raw upload.
    pub async fn upload(
        &self,
        public_id: &str,
        data: Bytes,
        chunk: Option<&ChunkRange>,
    ) -> Result<UploadOutcome> {
        let params = self.signed_params(vec![
            ("public_id", public_id.to_string()),
            ("type", self.config.delivery_type.as_str().to_string()),
            ("overwrite", "1".into()),
            ("invalidate", "1".into()),
        ]);
        let filename = public_id
            .rsplit('/')
            .next()
            .unwrap_or(public_id)
            .to_string();
        let (content_type, body) = multipart(&params, Some((&filename, &data)));
        let url = self.config.endpoint("raw/upload");
        let what = match chunk {
            Some(c) => format!("uploading {public_id} (bytes {}-{})", c.first, c.last),
            None => format!("uploading {public_id}"),
        };
        let answer = self
            .call(&what, false, || {
                let mut request = self
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, &content_type)
                    .body(body.clone());
                if let Some(c) = chunk {
                    let total = c.total.map_or("-1".to_string(), |t| t.to_string());
                    request = request.header("X-Unique-Upload-Id", &c.upload_id).header(
                        reqwest::header::CONTENT_RANGE,
                        format!("bytes {}-{}/{total}", c.first, c.last),
                    );
                }
                request
            })
            .await?;
        if chunk.is_some_and(|c| c.total.is_none()) {
            let partial: ChunkAnswer = serde_json::from_slice(&answer).map_err(|e| {
                Error::internal(format!("{what}: unexpected answer from Cloudinary: {e}"))
            })?;
            if partial.done == Some(true) {
                return Err(Error::internal(format!(
                    "{what}: Cloudinary finished the asset before its last chunk"
                )));
            }
            return Ok(UploadOutcome::Partial);
        }
        let resource: Resource = serde_json::from_slice(&answer).map_err(|e| {
            Error::internal(format!("{what}: unexpected answer from Cloudinary: {e}"))
        })?;
        Ok(UploadOutcome::Done(resource))
    }

    /// Destroys an asset: true when it existed, false for "not found".
    pub async fn destroy(&self, public_id: &str) -> Result<bool> {
        let params = self.signed_params(vec![
            ("public_id", public_id.to_string()),
            ("type", self.config.delivery_type.as_str().to_string()),
            ("invalidate", "1".into()),
        ]);
        let (content_type, body) = multipart(&params, None);
        let url = self.config.endpoint("raw/destroy");
        let what = format!("destroying {public_id}");
        let answer = self
            .call(&what, false, || {
                self.http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, &content_type)
                    .body(body.clone())
            })
            .await?;
        let parsed: DestroyAnswer = serde_json::from_slice(&answer).map_err(|e| {
            Error::internal(format!("{what}: unexpected answer from Cloudinary: {e}"))
        })?;
        match parsed.result.as_str() {
            "ok" => Ok(true),
            "not found" => Ok(false),
            other => Err(Error::internal(format!(
                "{what}: Cloudinary answered {other:?}"
            ))),
        }
    }

    /// A signed private download URL for an asset, valid for a few minutes.
    fn download_url(&self, public_id: &str) -> Result<url::Url> {
        let expires = unix_now() + DOWNLOAD_VALID_SECS;
        let params = self.signed_params(vec![
            ("public_id", public_id.to_string()),
            ("type", self.config.delivery_type.as_str().to_string()),
            ("expires_at", expires.to_string()),
        ]);
        let mut url = url::Url::parse(&self.config.endpoint("raw/download"))
            .map_err(|e| Error::internal(format!("building the download URL: {e}")))?;
        url.query_pairs_mut().extend_pairs(params.iter());
        Ok(url)
    }

    /// Starts downloading an asset through the signed private download API;
    /// `None` when Cloudinary has no such asset.
    pub async fn download(&self, public_id: &str) -> Result<Option<reqwest::Response>> {
        let what = format!("downloading {public_id}");
        let mut attempt = 0;
        loop {
            // A fresh signature (and timestamp) for every attempt.
            let url = self.download_url(public_id)?;
            let failure = match self.http.get(url).send().await {
                Err(e) => self.classify_transport(e),
                Ok(response) if response.status().is_success() => {
                    self.mark_ok();
                    return Ok(Some(response));
                }
                Ok(response) if response.status() == StatusCode::NOT_FOUND => return Ok(None),
                Ok(response) => {
                    let status = response.status();
                    let body = response.bytes().await.unwrap_or_default();
                    self.classify_status(status, &body)
                }
            };
            if !failure.retry || attempt >= self.config.retries {
                return Err(self.final_error(&what, failure, attempt + 1));
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Downloads a small asset whole; `None` when there is none.
    pub async fn download_bytes(&self, public_id: &str) -> Result<Option<Bytes>> {
        let Some(response) = self.download(public_id).await? else {
            return Ok(None);
        };
        response.bytes().await.map(Some).map_err(|e| {
            Error::unavailable(format!(
                "downloading {public_id}: {}",
                self.scrub(&e.without_url().to_string())
            ))
        })
    }

    /// One page of the raw assets whose public_id starts with `prefix`
    /// (Admin API).
    pub async fn list_page(
        &self,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<Resource>, Option<String>)> {
        let mut url = url::Url::parse(&self.config.endpoint(&format!(
            "resources/raw/{}",
            self.config.delivery_type.as_str()
        )))
        .map_err(|e| Error::internal(format!("building the list URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("prefix", prefix);
            query.append_pair("max_results", "500");
            if let Some(cursor) = cursor {
                query.append_pair("next_cursor", cursor);
            }
        }
        let auth = sign::basic_auth(&self.config.api_key, &self.config.api_secret);
        let body = self
            .call("listing Cloudinary assets", true, || {
                self.http
                    .get(url.clone())
                    .header(reqwest::header::AUTHORIZATION, &auth)
            })
            .await?;
        let page: Page = serde_json::from_slice(&body).map_err(|e| {
            Error::internal(format!("listing Cloudinary assets: unexpected answer: {e}"))
        })?;
        Ok((page.resources, page.next_cursor.filter(|c| !c.is_empty())))
    }

    /// The account's usage and limits (Admin API).
    pub async fn usage(&self) -> Result<Usage> {
        let url = self.config.endpoint("usage");
        let auth = sign::basic_auth(&self.config.api_key, &self.config.api_secret);
        let body = self
            .call("reading Cloudinary usage", true, || {
                self.http
                    .get(&url)
                    .header(reqwest::header::AUTHORIZATION, &auth)
            })
            .await?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::internal(format!("reading Cloudinary usage: unexpected answer: {e}"))
        })
    }
}

/// A `multipart/form-data` body: the fields, then the file when there is one.
fn multipart(fields: &[(&str, String)], file: Option<(&str, &Bytes)>) -> (String, Bytes) {
    let boundary = format!("----backup-service-{:032x}", rand::random::<u128>());
    let mut body = Vec::with_capacity(file.map_or(0, |(_, d)| d.len()) + 1024);
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((filename, data)) = file {
        let filename = filename.replace(['"', '\r', '\n'], "_");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/form-data; boundary={boundary}"),
        Bytes::from(body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn client() -> Client {
        let config =
            CloudinaryConfig::parse("cloudinary://key:the-secret@demo", "http://127.0.0.1:9")
                .unwrap();
        Client::new(Arc::new(config)).unwrap()
    }

    #[test]
    fn rate_limit_headers_are_tracked() {
        let c = client();
        let reset = SystemTime::now() + Duration::from_secs(1800);
        let mut headers = HeaderMap::new();
        headers.insert("x-featureratelimit-limit", "500".parse().unwrap());
        headers.insert("x-featureratelimit-remaining", "0".parse().unwrap());
        headers.insert(
            "x-featureratelimit-reset",
            httpdate::fmt_http_date(reset).parse().unwrap(),
        );
        c.track_rate_limit(&headers, StatusCode::OK);
        assert!(c.rate_limited_until().is_some());
        headers.insert("x-featureratelimit-remaining", "12".parse().unwrap());
        c.track_rate_limit(&headers, StatusCode::OK);
        assert!(c.rate_limited_until().is_none());
        assert_eq!(c.rate_limit().limit, Some(500));
        // A 420 without headers still counts as used up, for a while.
        c.track_rate_limit(&HeaderMap::new(), StatusCode::from_u16(420).unwrap());
        assert!(c.rate_limited_until().is_some());
    }

    #[test]
    fn error_bodies_json_or_not_and_never_the_secret() {
        let c = client();
        let json =
            br#"{"error":{"message":"Invalid Signature abc. String to sign - 'x=1the-secret'."}}"#;
        let m = c.message_of(StatusCode::UNAUTHORIZED, json);
        assert!(m.starts_with("Invalid Signature abc"), "{m}");
        assert!(!m.contains("the-secret"), "{m}");
        let m = c.message_of(StatusCode::BAD_GATEWAY, b"<html>Bad gateway</html>");
        assert_eq!(m, "<html>Bad gateway</html>");
        let m = c.message_of(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(m, "Service Unavailable");
        let e = c.final_error(
            "uploading x",
            c.classify_status(
                StatusCode::BAD_REQUEST,
                br#"{"error":{"message":"File size too large. Got 2. Maximum is 1."}}"#,
            ),
            1,
        );
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("File size too large"), "{}", e.message);
        assert!(!c.classify_status(StatusCode::BAD_REQUEST, b"").retry);
        assert!(!c.classify_status(StatusCode::NOT_FOUND, b"").retry);
        assert!(
            c.classify_status(StatusCode::from_u16(420).unwrap(), b"")
                .retry
        );
        assert!(c.classify_status(StatusCode::TOO_MANY_REQUESTS, b"").retry);
        assert!(c.classify_status(StatusCode::BAD_GATEWAY, b"").retry);
    }

    #[test]
    fn backoff_is_bounded_and_jittered() {
        let c = client();
        for attempt in 0..40 {
            let d = c.backoff(attempt);
            assert!(d <= MAX_BACKOFF, "{d:?}");
            assert!(
                d >= Duration::from_millis(250).min(MAX_BACKOFF / 2),
                "{d:?}"
            );
        }
    }

    #[test]
    fn multipart_body_shape() {
        let (content_type, body) = multipart(
            &[("public_id", "backups/x.json".into())],
            Some(("x.json", &Bytes::from_static(b"DATA"))),
        );
        let boundary = content_type.split("boundary=").nth(1).unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.contains("name=\"public_id\"\r\n\r\nbackups/x.json\r\n"));
        assert!(text.contains("filename=\"x.json\""));
        assert!(text.ends_with(&format!("\r\nDATA\r\n--{boundary}--\r\n")));
    }
}
