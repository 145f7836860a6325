//! The backup file: one JSON document laid out in lines (one row per line, or
//! column blocks for compressed backups), so it can be written and checked
//! as a stream. See docs/backup-format.md.

mod block_gather;
mod block_rows;
pub mod codec;
pub mod json_row;
#[cfg(test)]
mod layout_tests;
pub mod reader;
pub mod writer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::{SourceInfo, TableSchema};

pub const FORMAT_NAME: &str = "backup-service";
/// Uncompressed files without documents are still written as version 1,
/// byte for byte as before, so older readers keep reading them.
pub const FORMAT_VERSION_NO_DOCUMENTS: u32 = 1;
/// Files with a documents section, in the `rows` layout. Readers accept
/// every version from `FORMAT_VERSION_NO_DOCUMENTS` to `FORMAT_VERSION_COLUMNS`.
pub const FORMAT_VERSION_DOCUMENTS: u32 = 2;
/// Files in the `columns` layout (compressed backups), with or without
/// documents.
pub const FORMAT_VERSION_COLUMNS: u32 = 3;
/// A column block ends after this many rows...
pub const BLOCK_MAX_ROWS: usize = 65_536;
/// ...or before its values would pass this many bytes, whichever comes
/// first; only a block of a single row may be longer. It bounds the
/// writer's memory.
pub const BLOCK_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Readers refuse a block of more than one row whose column lines are
/// longer than this (the values plus brackets, commas and newlines, with
/// room to spare); it bounds the reader's memory.
pub const BLOCK_MAX_TEXT: usize = 2 * BLOCK_MAX_BYTES;
/// Hex digits of one uuid in a packed uuid column.
pub const UUID_HEX_LEN: usize = 32;

/// How rows are laid out in the data section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One row per line (format versions 1 and 2): the plain `.json` file.
    #[default]
    Rows,
    /// Blocks of up to `BLOCK_MAX_ROWS` rows stored column by column
    /// (format version 3): what compressed backups use, because it makes
    /// them far smaller.
    Columns,
}

impl Layout {
    fn is_rows(&self) -> bool {
        *self == Layout::Rows
    }
}

/// Raw bytes per base64 line of a document: a multiple of 3, so every line
/// but the last is unpadded, and a line stays 64 KiB.
pub const DOCUMENT_CHUNK_BYTES: usize = 48 * 1024;
/// The line that opens the documents section (version 2).
pub const DOCUMENTS_LINE: &[u8] = b"\"documents\":[";
/// The line that opens the list of documents that could not be fetched.
pub const MISSING_LINE: &[u8] = b"\"missingDocuments\":[";
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
    /// Absent in versions 1 and 2, which are always `rows`.
    #[serde(default, skip_serializing_if = "Layout::is_rows")]
    pub layout: Layout,
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
    /// Present exactly when the file has a documents section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<DocumentTotals>,
}

/// What the documents section holds, for the trailer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentTotals {
    /// Documents stored in the file.
    pub count: u64,
    /// Their raw bytes, before base64.
    pub bytes: u64,
    /// Entries of `missingDocuments`.
    pub missing: u64,
}
