//! Progress of a running backup or restore.

use serde::{Deserialize, Serialize};

/// Progress of a backup, as the catalog records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub rows_done: u64,
    pub bytes_written: u64,
    pub tables_done: u32,
    pub tables_total: u32,
    pub current_table: String,
}

/// Progress of a restore: one table's rows so far.
#[derive(Debug, Clone, Default)]
pub struct TableProgress {
    pub table: String,
    pub rows_done: u64,
    pub tables_done: u32,
    pub tables_total: u32,
}
