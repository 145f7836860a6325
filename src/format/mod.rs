//! The backup file: one JSON document laid out one row per line, so it can be
//! written and checked as a stream. See docs/backup-format.md.

pub mod codec;
pub mod reader;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::source::{SourceInfo, TableSchema};

pub const FORMAT_NAME: &str = "backup-service";
pub const FORMAT_VERSION: u32 = 1;
/// Start of the last line; everything before it is covered by its sha256.
pub const TRAILER_PREFIX: &[u8] = b"\"trailer\":";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub format: String,
    pub format_version: u32,
    pub backup_id: String,
    pub created_at: String,
    pub description: String,
    pub include_documents: bool,
    pub documents: DocumentsInfo,
    pub source: SourceInfo,
    pub tables: Vec<TableSchema>,
}

/// Whether uploaded documents are in the file, and why not when they are not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentsInfo {
    pub included: bool,
    pub count: u64,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trailer {
    pub row_counts: BTreeMap<String, u64>,
    pub total_rows: u64,
    /// Bytes before the trailer line, all covered by `sha256`.
    pub hashed_bytes: u64,
    pub sha256: String,
}
