//! A local Cloudinary for tests: an axum server on 127.0.0.1:0 that behaves
//! as Cloudinary's documentation describes the parts the backend uses, and
//! refuses what Cloudinary refuses. It checks every signature (its own
//! implementation, independent of the service's) and answers a bad one with
//! 401 and the string it signed; refuses timestamps over an hour old;
//! requires Basic auth on the Admin API and sends rate-limit headers (and 420
//! when told to); runs chunked uploads (`X-Unique-Upload-Id`,
//! `Content-Range`) with the 5 MB minimum for non-final chunks and
//! contiguity (it accepts a total of `-1` on non-final chunks, as the
//! service sends: an assumption from Cloudinary's SDKs, not from its
//! documentation, which only shows `bytes a-b/total`); enforces a
//! per-asset cap; pages listings with `next_cursor`;
//! checks `expires_at` on signed downloads; and fails chosen requests with a
//! 500 or a dropped connection, once or for good. Its assets are inspectable.
#![allow(dead_code)]
// Handlers return ready answers as errors; their size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

pub const MIN_CHUNK: usize = 5 * 1024 * 1024;
pub const FREE_PLAN_CAP: u64 = 10_485_760;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Any upload request (whole or chunk).
    Upload,
    /// Only chunk requests of chunked uploads.
    UploadChunk,
    Destroy,
    Download,
    List,
    Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// 500 with Cloudinary's error body.
    Status500,
    /// The answer starts, then the connection drops.
    Drop,
}

/// Fails the `nth` matching request from now (1-based); with `permanent`,
/// every later matching one too.
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: Op,
    pub nth: u32,
    pub kind: FaultKind,
    pub permanent: bool,
    /// Only requests whose public_id contains this count.
    pub target: Option<String>,
    seen: u32,
}

impl Fault {
    pub fn new(op: Op, nth: u32, kind: FaultKind, permanent: bool) -> Self {
        Self {
            op,
            nth,
            kind,
            permanent,
            target: None,
            seen: 0,
        }
    }
    pub fn on(mut self, target: &str) -> Self {
        self.target = Some(target.to_string());
        self
    }
}

#[derive(Debug, Clone)]
pub struct Asset {
    pub public_id: String,
    pub delivery_type: String,
    pub bytes: Vec<u8>,
    pub version: u64,
    pub created_at: SystemTime,
}

struct Pending {
    public_id: String,
    delivery_type: String,
    data: Vec<u8>,
}

struct Inner {
    cloud: String,
    api_key: String,
    secret: String,
    sha256: bool,
    cap: u64,
    page_size: usize,
    answer_420: u32,
    admin_limit: u64,
    admin_calls: u64,
    faults: Vec<Fault>,
    assets: BTreeMap<(String, String), Asset>,
    pending: HashMap<String, Pending>,
    /// Every request: "METHOD path".
    log: Vec<String>,
    /// How long a listing's answer is held back.
    list_delay: std::time::Duration,
    lists_in_flight: u32,
}

#[derive(Clone)]
pub struct CloudinaryServer {
    pub base: String,
    pub cloud: String,
    pub api_key: String,
    pub secret: String,
    inner: Arc<Mutex<Inner>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"message": message}}))).into_response()
}

fn dropped() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"res")),
        Err(std::io::Error::other(
            "connection dropped by the test server",
        )),
    ];
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Cloudinary's string to sign, written independently of the service's code.
pub fn string_to_sign(params: &BTreeMap<String, String>, exclude: &[&str]) -> String {
    let mut parts = Vec::new();
    for (k, v) in params {
        if v.is_empty() || exclude.contains(&k.as_str()) {
            continue;
        }
        parts.push(format!("{k}={}", v.replace('&', "%26")));
    }
    parts.join("&")
}

pub fn signature(to_sign: &str, secret: &str, sha256: bool) -> String {
    let text = format!("{to_sign}{secret}");
    if sha256 {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    } else {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(text.as_bytes()))
    }
}

const UPLOAD_UNSIGNED: [&str; 5] = [
    "file",
    "cloud_name",
    "resource_type",
    "api_key",
    "signature",
];

struct Form {
    fields: BTreeMap<String, String>,
    file: Option<Vec<u8>>,
}

fn parse_multipart(headers: &HeaderMap, body: &[u8]) -> Result<Form, String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .ok_or("no Content-Type")?;
    if !content_type.starts_with("multipart/form-data") {
        return Err(format!("unsupported Content-Type {content_type}"));
    }
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .ok_or("no boundary")?
        .trim_matches('"');
    let first = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    if !body.starts_with(first.as_bytes()) {
        return Err("body does not start with the boundary".into());
    }
    let mut form = Form {
        fields: BTreeMap::new(),
        file: None,
    };
    let mut pos = first.len();
    loop {
        let rest = &body[pos..];
        if rest.starts_with(b"--") {
            return Ok(form);
        }
        if !rest.starts_with(b"\r\n") {
            return Err("malformed boundary line".into());
        }
        pos += 2;
        let end = memchr::memmem::find(&body[pos..], delimiter.as_bytes())
            .ok_or("unterminated part")?
            + pos;
        let part = &body[pos..end];
        let split = memchr::memmem::find(part, b"\r\n\r\n").ok_or("part without headers")?;
        let head = String::from_utf8_lossy(&part[..split]).to_string();
        let content = &part[split + 4..];
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .ok_or("part without Content-Disposition")?;
        let name = disposition
            .split(';')
            .find_map(|p| p.trim().strip_prefix("name="))
            .ok_or("part without a name")?
            .trim_matches('"')
            .to_string();
        if disposition.contains("filename=") || name == "file" {
            form.file = Some(content.to_vec());
        } else {
            form.fields
                .insert(name, String::from_utf8_lossy(content).to_string());
        }
        pos = end + delimiter.len();
    }
}

impl Inner {
    /// Counts the request against the faults; the fault to apply, if any.
    /// The answer an injected fault gives instead of the real one, if any.
    fn injected(&mut self, op: Op, public_id: &str) -> Option<Response> {
        self.fault(op, public_id).map(|kind| match kind {
            FaultKind::Status500 => error(StatusCode::INTERNAL_SERVER_ERROR, "General Error"),
            FaultKind::Drop => dropped(),
        })
    }

    fn fault(&mut self, op: Op, public_id: &str) -> Option<FaultKind> {
        let mut hit = None;
        for f in &mut self.faults {
            let matches = (f.op == op || (f.op == Op::Upload && op == Op::UploadChunk))
                && f.target.as_deref().is_none_or(|t| public_id.contains(t));
            if !matches {
                continue;
            }
            f.seen += 1;
            if f.seen == f.nth || (f.permanent && f.seen > f.nth) {
                hit = Some(f.kind);
            }
        }
        hit
    }

    fn check_signed(
        &self,
        params: &BTreeMap<String, String>,
        exclude: &[&str],
    ) -> Result<(), Response> {
        if params.get("api_key").map(String::as_str) != Some(self.api_key.as_str()) {
            return Err(error(StatusCode::UNAUTHORIZED, "Invalid api_key"));
        }
        let Some(timestamp) = params.get("timestamp").and_then(|t| t.parse::<u64>().ok()) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Missing required parameter - timestamp",
            ));
        };
        if now().saturating_sub(timestamp) > 3600 {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Stale request - reported time is {timestamp} which is more than 1 hour ago"
                ),
            ));
        }
        let to_sign = string_to_sign(params, exclude);
        let expected = signature(&to_sign, &self.secret, self.sha256);
        let given = params.get("signature").cloned().unwrap_or_default();
        if given != expected {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                &format!("Invalid Signature {given}. String to sign - '{to_sign}'."),
            ));
        }
        Ok(())
    }

    fn check_basic(&self, headers: &HeaderMap) -> Result<(), Response> {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", self.api_key, self.secret))
        );
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some(given) if given == expected => Ok(()),
            Some(_) => Err(error(StatusCode::UNAUTHORIZED, "Invalid credentials")),
            None => Err(error(StatusCode::UNAUTHORIZED, "Missing credentials")),
        }
    }

    fn asset_json(&self, a: &Asset) -> Value {
        let secure_url = format!(
            "https://res.cloudinary.com/{}/raw/{}/v{}/{}",
            self.cloud, a.delivery_type, a.version, a.public_id
        );
        json!({
            "asset_id": format!("{:032x}", a.version),
            "public_id": a.public_id,
            "version": a.version,
            "version_id": format!("{:032x}", a.version),
            "resource_type": "raw",
            "type": a.delivery_type,
            "created_at": rfc3339(a.created_at),
            "bytes": a.bytes.len(),
            "etag": hex::encode(&sha2::Sha256::digest(&a.bytes)[..16]),
            "url": secure_url.replacen("https://", "http://", 1),
            "secure_url": secure_url,
            "original_filename": a.public_id.rsplit('/').next().unwrap_or_default(),
            "tags": [],
        })
    }

    fn store(&mut self, public_id: &str, delivery_type: &str, bytes: Vec<u8>) -> Value {
        let version = now() * 1000 + (self.assets.len() as u64 % 1000);
        let asset = Asset {
            public_id: public_id.to_string(),
            delivery_type: delivery_type.to_string(),
            bytes,
            version,
            created_at: SystemTime::now(),
        };
        let answer = self.asset_json(&asset);
        self.assets
            .insert((delivery_type.to_string(), public_id.to_string()), asset);
        answer
    }

    fn too_large(&self, size: u64) -> Option<Response> {
        (size > self.cap).then(|| {
            error(
                StatusCode::BAD_REQUEST,
                &format!("File size too large. Got {size}. Maximum is {}.", self.cap),
            )
        })
    }

    fn admin_headers(&mut self, remaining_override: Option<u64>) -> [(String, String); 3] {
        let remaining =
            remaining_override.unwrap_or(self.admin_limit.saturating_sub(self.admin_calls));
        let reset =
            httpdate::fmt_http_date(SystemTime::now() + std::time::Duration::from_secs(3600));
        [
            (
                "X-FeatureRateLimit-Limit".into(),
                self.admin_limit.to_string(),
            ),
            ("X-FeatureRateLimit-Remaining".into(), remaining.to_string()),
            ("X-FeatureRateLimit-Reset".into(), reset),
        ]
    }
}

use sha2::Digest as _;

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

async fn upload(
    State(s): State<Shared>,
    Path((cloud, resource_type)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&s);
    st.log.push(format!(
        "POST upload {}",
        headers
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    ));
    if cloud != st.cloud {
        return error(StatusCode::NOT_FOUND, "Unknown cloud name");
    }
    if resource_type != "raw" {
        return error(
            StatusCode::BAD_REQUEST,
            "this test server stores raw assets only",
        );
    }
    let form = match parse_multipart(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let public_id = form.fields.get("public_id").cloned().unwrap_or_default();
    let upload_id = headers
        .get("x-unique-upload-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let op = if upload_id.is_some() {
        Op::UploadChunk
    } else {
        Op::Upload
    };
    if let Some(r) = st.injected(op, &public_id) {
        return r;
    }
    if let Err(r) = st.check_signed(&form.fields, &UPLOAD_UNSIGNED) {
        return r;
    }
    if public_id.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "this test server needs a public_id",
        );
    }
    let delivery_type = form
        .fields
        .get("type")
        .cloned()
        .unwrap_or_else(|| "upload".into());
    let Some(file) = form.file else {
        return error(StatusCode::BAD_REQUEST, "Missing required parameter - file");
    };
    let exists = st
        .assets
        .contains_key(&(delivery_type.clone(), public_id.clone()));
    let overwrite = form.fields.get("overwrite").map(String::as_str) != Some("0");
    let Some(upload_id) = upload_id else {
        if let Some(r) = st.too_large(file.len() as u64) {
            return r;
        }
        if exists && !overwrite {
            let a = &st.assets[&(delivery_type.clone(), public_id.clone())];
            return axum::Json(st.asset_json(a)).into_response();
        }
        return axum::Json(st.store(&public_id, &delivery_type, file)).into_response();
    };
    // A chunk: Content-Range: bytes first-last/total (total -1 while unknown).
    let range = headers
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| {
            let (span, total) = v.split_once('/')?;
            let (a, b) = span.split_once('-')?;
            Some((
                a.parse::<u64>().ok()?,
                b.parse::<u64>().ok()?,
                total.parse::<i64>().ok()?,
            ))
        });
    let Some((first, last, total)) = range else {
        return error(StatusCode::BAD_REQUEST, "Invalid Content-Range header");
    };
    if last < first || last - first + 1 != file.len() as u64 {
        return error(
            StatusCode::BAD_REQUEST,
            "Content-Range does not match the chunk's size",
        );
    }
    let so_far = st
        .pending
        .get(&upload_id)
        .map_or(0, |p| p.data.len() as u64);
    if first != so_far {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Chunk out of order: expected a chunk starting at byte {so_far}, got {first}"),
        );
    }
    if let Some(p) = st.pending.get(&upload_id)
        && (p.public_id != public_id || p.delivery_type != delivery_type)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Chunks of one upload must carry the same parameters",
        );
    }
    let is_final = total >= 0 && last + 1 == total as u64;
    if total >= 0 && last + 1 > total as u64 {
        return error(StatusCode::BAD_REQUEST, "Content-Range past the total size");
    }
    if !is_final && file.len() < MIN_CHUNK {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Chunk size {} is below the minimum of 5MB for all but the last chunk",
                file.len()
            ),
        );
    }
    if let Some(r) = st.too_large(last + 1) {
        st.pending.remove(&upload_id);
        return r;
    }
    let pending = st
        .pending
        .entry(upload_id.clone())
        .or_insert_with(|| Pending {
            public_id: public_id.clone(),
            delivery_type: delivery_type.clone(),
            data: Vec::new(),
        });
    pending.data.extend_from_slice(&file);
    if !is_final {
        let bytes = pending.data.len();
        return axum::Json(
            json!({"done": false, "bytes": bytes, "public_id": public_id, "upload_id": upload_id}),
        )
        .into_response();
    }
    let Some(done) = st.pending.remove(&upload_id) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "lost upload");
    };
    if exists && !overwrite {
        let a = &st.assets[&(delivery_type.clone(), public_id.clone())];
        return axum::Json(st.asset_json(a)).into_response();
    }
    axum::Json(st.store(&public_id, &delivery_type, done.data)).into_response()
}

async fn destroy(
    State(s): State<Shared>,
    Path((cloud, resource_type)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&s);
    st.log.push("POST destroy".into());
    if cloud != st.cloud {
        return error(StatusCode::NOT_FOUND, "Unknown cloud name");
    }
    let form = match parse_multipart(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let public_id = form.fields.get("public_id").cloned().unwrap_or_default();
    if let Some(r) = st.injected(Op::Destroy, &public_id) {
        return r;
    }
    if let Err(r) = st.check_signed(&form.fields, &UPLOAD_UNSIGNED) {
        return r;
    }
    let delivery_type = form
        .fields
        .get("type")
        .cloned()
        .unwrap_or_else(|| "upload".into());
    let result =
        if resource_type == "raw" && st.assets.remove(&(delivery_type, public_id)).is_some() {
            "ok"
        } else {
            "not found"
        };
    axum::Json(json!({"result": result})).into_response()
}

async fn download(
    State(s): State<Shared>,
    Path((cloud, resource_type)): Path<(String, String)>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let mut st = lock(&s);
    st.log.push("GET download".into());
    if cloud != st.cloud || resource_type != "raw" {
        return error(StatusCode::NOT_FOUND, "Unknown cloud name or resource type");
    }
    let public_id = params.get("public_id").cloned().unwrap_or_default();
    if let Some(r) = st.injected(Op::Download, &public_id) {
        return r;
    }
    // The download API signs everything but api_key (and the signature).
    if let Err(r) = st.check_signed(&params, &["api_key", "signature"]) {
        return r;
    }
    match params.get("expires_at").and_then(|e| e.parse::<u64>().ok()) {
        Some(e) if e > now() => {}
        Some(_) => return error(StatusCode::UNAUTHORIZED, "Download link has expired"),
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "Missing required parameter - expires_at",
            );
        }
    }
    let delivery_type = params
        .get("type")
        .cloned()
        .unwrap_or_else(|| "upload".into());
    match st.assets.get(&(delivery_type, public_id.clone())) {
        Some(a) => (
            [("content-type", "application/octet-stream")],
            a.bytes.clone(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Resource not found - {public_id}"),
        ),
    }
}

/// Admin API bookkeeping shared by list and usage: auth, rate limit, faults.
fn admin_gate(
    st: &mut Inner,
    headers: &HeaderMap,
    op: Op,
) -> Result<[(String, String); 3], Response> {
    st.admin_calls += 1;
    st.check_basic(headers)?;
    let over_budget = st.admin_calls > st.admin_limit;
    if st.answer_420 > 0 || over_budget {
        st.answer_420 = st.answer_420.saturating_sub(1);
        let h = st.admin_headers(Some(0));
        let mut r = error(
            StatusCode::from_u16(420).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            "Rate Limit Exceeded",
        );
        for (k, v) in h {
            if let (Ok(k), Ok(v)) = (
                axum::http::HeaderName::try_from(k),
                axum::http::HeaderValue::try_from(v),
            ) {
                r.headers_mut().insert(k, v);
            }
        }
        return Err(r);
    }
    if let Some(r) = st.injected(op, "") {
        return Err(r);
    }
    Ok(st.admin_headers(None))
}

fn with_headers(mut r: Response, headers: [(String, String); 3]) -> Response {
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::try_from(k),
            axum::http::HeaderValue::try_from(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

async fn list(
    State(s): State<Shared>,
    Path((cloud, resource_type, delivery_type)): Path<(String, String, String)>,
    Query(params): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // The page is what the folder held when the request came; the answer
    // may then be held back (`set_list_delay`).
    let (answer, delay) = {
        let mut st = lock(&s);
        let answer = list_now(
            &mut st,
            &cloud,
            &resource_type,
            &delivery_type,
            &params,
            &headers,
        );
        (answer, st.list_delay)
    };
    if !delay.is_zero() {
        lock(&s).lists_in_flight += 1;
        tokio::time::sleep(delay).await;
        lock(&s).lists_in_flight -= 1;
    }
    answer
}

fn list_now(
    st: &mut Inner,
    cloud: &str,
    resource_type: &str,
    delivery_type: &str,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    st.log.push("GET list".into());
    if cloud != st.cloud {
        return error(StatusCode::NOT_FOUND, "Unknown cloud name");
    }
    let rate = match admin_gate(st, headers, Op::List) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let max_results = match params.get("max_results").map(|m| m.parse::<usize>()) {
        None => 10,
        Some(Ok(m)) if (1..=500).contains(&m) => m,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "max_results must be between 1 and 500",
            );
        }
    };
    let page = max_results.min(st.page_size);
    let prefix = params.get("prefix").cloned().unwrap_or_default();
    let after = match params.get("next_cursor") {
        Some(c) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(after) => Some(after),
            None => return error(StatusCode::BAD_REQUEST, "Invalid next_cursor"),
        },
        None => None,
    };
    let matching: Vec<&Asset> = st
        .assets
        .values()
        .filter(|a| resource_type == "raw" && a.delivery_type == delivery_type)
        .filter(|a| a.public_id.starts_with(&prefix))
        .filter(|a| after.as_ref().is_none_or(|after| &a.public_id > after))
        .collect();
    let mut sorted = matching;
    sorted.sort_by(|a, b| a.public_id.cmp(&b.public_id));
    let more = sorted.len() > page;
    let shown: Vec<&Asset> = sorted.into_iter().take(page).collect();
    let resources: Vec<Value> = shown.iter().map(|a| st.asset_json(a)).collect();
    let mut answer = json!({"resources": resources});
    if more && let Some(last) = shown.last() {
        answer["next_cursor"] =
            Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&last.public_id));
    }
    with_headers(axum::Json(answer).into_response(), rate)
}

async fn usage(State(s): State<Shared>, Path(cloud): Path<String>, headers: HeaderMap) -> Response {
    let mut st = lock(&s);
    st.log.push("GET usage".into());
    if cloud != st.cloud {
        return error(StatusCode::NOT_FOUND, "Unknown cloud name");
    }
    let rate = match admin_gate(&mut st, &headers, Op::Usage) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let bytes: usize = st.assets.values().map(|a| a.bytes.len()).sum();
    let answer = json!({
        "plan": "Test",
        "storage": {"usage": bytes},
        "objects": {"usage": st.assets.len()},
        "media_limits": {
            "image_max_size_bytes": st.cap,
            "video_max_size_bytes": st.cap,
            "raw_max_size_bytes": st.cap,
        }
    });
    with_headers(axum::Json(answer).into_response(), rate)
}

impl CloudinaryServer {
    /// Starts with a generous per-asset cap (200 MB); see `set_cap`.
    pub async fn start() -> Self {
        let cloud = "test-cloud".to_string();
        let api_key = "614335564976464".to_string();
        let secret = format!("s3cr3t-{:016x}", rand::random::<u64>());
        let inner = Arc::new(Mutex::new(Inner {
            cloud: cloud.clone(),
            api_key: api_key.clone(),
            secret: secret.clone(),
            sha256: false,
            cap: 200 * 1024 * 1024,
            page_size: 500,
            answer_420: 0,
            admin_limit: 500,
            admin_calls: 0,
            faults: Vec::new(),
            assets: BTreeMap::new(),
            pending: HashMap::new(),
            log: Vec::new(),
            list_delay: std::time::Duration::ZERO,
            lists_in_flight: 0,
        }));
        let app = Router::new()
            .route("/v1_1/{cloud}/{resource_type}/upload", post(upload))
            .route("/v1_1/{cloud}/{resource_type}/destroy", post(destroy))
            .route("/v1_1/{cloud}/{resource_type}/download", get(download))
            .route(
                "/v1_1/{cloud}/resources/{resource_type}/{delivery_type}",
                get(list),
            )
            .route("/v1_1/{cloud}/usage", get(usage))
            .layer(DefaultBodyLimit::max(120 * 1024 * 1024))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Cloudinary test server");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{addr}"),
            cloud,
            api_key,
            secret,
            inner,
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// `cloudinary://key:secret@cloud?<options>` for this server (options
    /// such as `folder=x&part_size=...`; fast retries are added).
    pub fn url(&self, options: &str) -> String {
        let mut url = format!(
            "cloudinary://{}:{}@{}?retry_base_ms=50",
            self.api_key, self.secret, self.cloud
        );
        if !options.is_empty() {
            url.push('&');
            url.push_str(options);
        }
        url
    }

    pub fn set_cap(&self, cap: u64) {
        self.st().cap = cap;
    }
    pub fn set_page_size(&self, page: usize) {
        self.st().page_size = page.max(1);
    }
    pub fn use_sha256(&self, on: bool) {
        self.st().sha256 = on;
    }
    /// The account's secret changes (the service's copy becomes wrong).
    pub fn rotate_secret(&self, secret: &str) {
        self.st().secret = secret.to_string();
    }
    /// The next `n` Admin API calls answer 420.
    pub fn answer_420(&self, n: u32) {
        self.st().answer_420 = n;
    }
    /// 420 answers still to give.
    pub fn pending_420(&self) -> u32 {
        self.st().answer_420
    }
    /// The hourly Admin API budget; calls beyond it answer 420.
    pub fn set_admin_limit(&self, limit: u64) {
        self.st().admin_limit = limit;
    }
    pub fn fail(&self, fault: Fault) {
        self.st().faults.push(fault);
    }
    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }
    pub fn admin_calls(&self) -> u64 {
        self.st().admin_calls
    }
    pub fn log(&self) -> Vec<String> {
        self.st().log.clone()
    }
    /// Every stored asset: (public_id, size), sorted.
    pub fn assets(&self) -> Vec<(String, usize)> {
        self.st()
            .assets
            .values()
            .map(|a| (a.public_id.clone(), a.bytes.len()))
            .collect()
    }
    pub fn public_ids(&self) -> Vec<String> {
        self.assets().into_iter().map(|(p, _)| p).collect()
    }
    pub fn asset(&self, public_id: &str) -> Option<Asset> {
        self.st()
            .assets
            .values()
            .find(|a| a.public_id == public_id)
            .cloned()
    }
    /// Removes an asset behind the service's back.
    pub fn remove(&self, public_id: &str) -> bool {
        let mut st = self.st();
        let key = st.assets.keys().find(|(_, p)| p == public_id).cloned();
        key.is_some_and(|k| st.assets.remove(&k).is_some())
    }
    /// Stores an asset behind the service's back (e.g. a crash's leftover).
    pub fn insert(&self, public_id: &str, delivery_type: &str, bytes: &[u8]) {
        self.st().store(public_id, delivery_type, bytes.to_vec());
    }
    /// Makes an asset look `secs` older.
    pub fn age(&self, public_id: &str, secs: u64) {
        let mut st = self.st();
        for a in st.assets.values_mut() {
            if a.public_id == public_id {
                a.created_at -= std::time::Duration::from_secs(secs);
            }
        }
    }
    /// Holds every listing's answer back this long (a slow Admin API); the
    /// page is taken when the request arrives.
    pub fn set_list_delay(&self, delay: std::time::Duration) {
        self.st().list_delay = delay;
    }
    /// Listings being held back right now.
    pub fn lists_in_flight(&self) -> u32 {
        self.st().lists_in_flight
    }
    /// Uploads that were started and never finished.
    pub fn pending_uploads(&self) -> usize {
        self.st().pending.len()
    }
}
