//! File downloads over HTTP: headers, `Range` (206/416), `If-Range`, HEAD.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::api::checked_stream::{Expected, Fault, Window, checked};
use crate::backup::Download;
use crate::backup::record::BackupRecord;

/// A byte range to serve, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: serve the whole file.
    Full,
    Partial(ByteRange),
    Unsatisfiable,
}

/// Parses a single `bytes=` range; anything else is ignored (whole file),
/// as RFC 9110 allows.
pub fn parse_range(headers: &HeaderMap, size: u64, etag: &str) -> RangeRequest {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Full;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range != etag
    {
        return RangeRequest::Full;
    }
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return RangeRequest::Full;
        };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        }
    } else {
        let Ok(start) = first.parse::<u64>() else {
            return RangeRequest::Full;
        };
        let end = if last.is_empty() {
            size.saturating_sub(1)
        } else {
            match last.parse::<u64>() {
                Ok(end) if end >= start => end.min(size.saturating_sub(1)),
                _ => return RangeRequest::Full,
            }
        };
        if start >= size {
            return RangeRequest::Unsatisfiable;
        }
        ByteRange { start, end }
    };
    RangeRequest::Partial(range)
}

pub fn etag(record: &BackupRecord) -> String {
    format!("\"{}\"", record.sha256)
}

/// Headers every answer about the file carries.
pub fn file_headers(record: &BackupRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(record.content_type()),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Filenames come from validated ids: no quotes or control characters.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", record.filename)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag(record)) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    headers
}

pub fn unsatisfiable(record: &BackupRecord) -> Response {
    let mut headers = file_headers(record);
    headers.remove(header::CONTENT_TYPE);
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", record.size)) {
        headers.insert(header::CONTENT_RANGE, v);
    }
    (StatusCode::RANGE_NOT_SATISFIABLE, headers).into_response()
}

/// Headers (and status) for serving `range` (or all) of the file.
pub fn head_response(record: &BackupRecord, range: Option<ByteRange>) -> (StatusCode, HeaderMap) {
    let mut headers = file_headers(record);
    let (status, length) = match range {
        Some(r) => {
            if let Ok(v) =
                HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end, record.size))
            {
                headers.insert(header::CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, r.end - r.start + 1)
        }
        None => (StatusCode::OK, record.size),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    (status, headers)
}

/// Where to open the stored file for `range` of a file of `size` bytes.
/// A read that reaches the end of the file starts at byte 0, so the whole
/// file is hashed (the prefix is read but not sent); a range that ends
/// earlier is read from its start and only capped.
pub fn read_offset(range: Option<ByteRange>, size: u64) -> u64 {
    match range {
        Some(r) if !reaches_end(r, size) => r.start,
        _ => 0,
    }
}

fn reaches_end(range: ByteRange, size: u64) -> bool {
    range.end + 1 >= size
}

/// Streams the opened download (opened at `read_offset`): never more than
/// the recorded size, and a whole-file read is checked against the recorded
/// sha256. On a mismatch the body errors before its last chunk, so the
/// client sees an incomplete transfer, never a clean end.
pub fn body_response(download: Download, range: Option<ByteRange>) -> Response {
    let (status, headers) = head_response(&download.record, range);
    let size = download.record.size;
    let window = match range {
        Some(r) if !reaches_end(r, size) => Window::capped(download.offset, r.end + 1),
        _ => Window::verified_tail(
            range.map(|r| r.start).unwrap_or(0),
            Expected {
                size,
                sha256: download.record.sha256.clone(),
            },
        ),
    };
    let stream = checked(download.stream, window).map(|item| {
        if let Ok(bytes) = &item {
            crate::telemetry::downloaded(bytes.len() as u64);
        }
        item.map_err(|fault| match fault {
            Fault::Storage(e) => std::io::Error::other(e.message),
            Fault::DataLoss(message) => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, message)
            }
        })
    });
    (status, headers, Body::from_stream(stream)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn ranges() {
        let p = |a, b| RangeRequest::Partial(ByteRange { start: a, end: b });
        assert_eq!(parse_range(&req("bytes=0-9"), 100, ""), p(0, 9));
        assert_eq!(parse_range(&req("bytes=50-"), 100, ""), p(50, 99));
        assert_eq!(parse_range(&req("bytes=-10"), 100, ""), p(90, 99));
        assert_eq!(parse_range(&req("bytes=90-500"), 100, ""), p(90, 99));
        assert_eq!(
            parse_range(&req("bytes=100-"), 100, ""),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(&req("bytes=5-1"), 100, ""), RangeRequest::Full);
        assert_eq!(parse_range(&req("items=0-1"), 100, ""), RangeRequest::Full);
        assert_eq!(
            parse_range(&req("bytes=0-1,5-6"), 100, ""),
            RangeRequest::Full
        );
        assert_eq!(parse_range(&HeaderMap::new(), 100, ""), RangeRequest::Full);
        let mut h = req("bytes=0-9");
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"old\""));
        assert_eq!(parse_range(&h, 100, "\"new\""), RangeRequest::Full);
    }
}
