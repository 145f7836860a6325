//! Streams a dump into a storage object in the backup file format, hashing
//! every byte on the way and keeping only one small buffer in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{DocumentsInfo, FORMAT_NAME, FORMAT_VERSION, Header, Trailer};
use crate::backup::record::Progress;
use crate::error::{Error, Result};
use crate::source::{DumpSink, SourceInfo, TableSchema, push_json_string};
use crate::storage::{ObjectWriter, StoredObject};

const FLUSH_BYTES: usize = 256 * 1024;

/// What the file is about, known before the dump starts.
pub struct FileIdentity {
    pub backup_id: String,
    pub created_at: String,
    pub description: String,
    pub include_documents: bool,
    pub documents: DocumentsInfo,
}

/// What a finished file holds.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub size: u64,
    pub sha256: String,
    pub row_counts: BTreeMap<String, u64>,
    pub source: SourceInfo,
    pub stored: StoredObject,
}

pub struct BackupFileWriter {
    out: Option<Box<dyn ObjectWriter>>,
    identity: FileIdentity,
    buf: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
    tables: Vec<TableSchema>,
    source: Option<SourceInfo>,
    next_table: usize,
    current: Option<(usize, bool)>,
    row_counts: Vec<u64>,
    progress: Arc<Mutex<Progress>>,
}

impl BackupFileWriter {
    pub fn new(
        out: Box<dyn ObjectWriter>,
        identity: FileIdentity,
        progress: Arc<Mutex<Progress>>,
    ) -> Self {
        Self {
            out: Some(out),
            identity,
            buf: Vec::with_capacity(FLUSH_BYTES + 64 * 1024),
            hasher: Sha256::new(),
            bytes: 0,
            tables: Vec::new(),
            source: None,
            next_table: 0,
            current: None,
            row_counts: Vec::new(),
            progress,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.hasher.update(&self.buf);
        self.bytes += self.buf.len() as u64;
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_BYTES + 64 * 1024));
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::internal("backup file already closed"))?;
        out.write(Bytes::from(piece)).await?;
        if let Ok(mut p) = self.progress.lock() {
            p.bytes_written = self.bytes;
        }
        Ok(())
    }

    async fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= FLUSH_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the trailer and commits the object; on failure nothing stays
    /// in storage.
    pub async fn finish(mut self) -> Result<WrittenFile> {
        match self.write_trailer_and_commit().await {
            Ok(written) => Ok(written),
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    async fn write_trailer_and_commit(&mut self) -> Result<WrittenFile> {
        if self.source.is_none() || self.current.is_some() || self.next_table != self.tables.len() {
            return Err(Error::internal("dump ended before every table was written"));
        }
        self.push(b"\n],\n");
        self.flush().await?;
        let body_hash = hex::encode(self.hasher.clone().finalize());
        let mut row_counts = BTreeMap::new();
        for (table, count) in self.tables.iter().zip(&self.row_counts) {
            row_counts.insert(table.qualified_name(), *count);
        }
        let trailer = Trailer {
            total_rows: self.row_counts.iter().sum(),
            row_counts: row_counts.clone(),
            hashed_bytes: self.bytes,
            sha256: body_hash,
        };
        let trailer_json = serde_json::to_vec(&trailer)
            .map_err(|e| Error::internal(format!("encoding trailer: {e}")))?;
        self.push(super::TRAILER_PREFIX);
        self.buf.extend_from_slice(&trailer_json);
        self.push(b"}\n");
        self.flush().await?;
        let sha256 = hex::encode(self.hasher.clone().finalize());
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::internal("backup file already closed"))?;
        let stored = out.finish().await?;
        Ok(WrittenFile {
            size: self.bytes,
            sha256,
            row_counts,
            source: self.source.take().unwrap_or_else(|| SourceInfo {
                engine: String::new(),
                server_version: String::new(),
            }),
            stored,
        })
    }

    /// Discards the object; nothing stays in storage.
    pub async fn abort(mut self) {
        if let Some(out) = self.out.take() {
            out.abort().await;
        }
    }
}

#[async_trait]
impl DumpSink for BackupFileWriter {
    async fn begin(&mut self, source: &SourceInfo, tables: &[TableSchema]) -> Result<()> {
        if self.source.is_some() {
            return Err(Error::internal("dump started twice"));
        }
        let header = Header {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            backup_id: self.identity.backup_id.clone(),
            created_at: self.identity.created_at.clone(),
            description: self.identity.description.clone(),
            include_documents: self.identity.include_documents,
            documents: self.identity.documents.clone(),
            source: source.clone(),
            tables: tables.to_vec(),
        };
        let json = serde_json::to_vec(&header)
            .map_err(|e| Error::internal(format!("encoding header: {e}")))?;
        self.push(b"{\"header\":");
        self.buf.extend_from_slice(&json);
        self.push(b",\n\"data\":[");
        self.tables = tables.to_vec();
        self.row_counts = vec![0; tables.len()];
        self.source = Some(source.clone());
        if let Ok(mut p) = self.progress.lock() {
            p.tables_total = tables.len() as u32;
        }
        self.maybe_flush().await
    }

    async fn begin_table(&mut self, index: usize) -> Result<()> {
        if index != self.next_table || self.current.is_some() {
            return Err(Error::internal("tables written out of order"));
        }
        let table = self
            .tables
            .get(index)
            .ok_or_else(|| Error::internal("unknown table index"))?;
        let (schema, name) = (table.schema.clone(), table.name.clone());
        self.push(if index == 0 { b"\n" } else { b",\n" });
        self.push(b"{\"schema\":");
        push_json_string(&mut self.buf, &schema);
        self.push(b",\"name\":");
        push_json_string(&mut self.buf, &name);
        self.push(b",\"rows\":[");
        self.current = Some((index, true));
        if let Ok(mut p) = self.progress.lock() {
            p.current_table = self.tables[index].qualified_name();
        }
        Ok(())
    }

    async fn rows(&mut self, encoded: Bytes, rows: u64) -> Result<()> {
        let Some((index, first)) = self.current.as_mut() else {
            return Err(Error::internal("rows outside a table"));
        };
        let index = *index;
        // Each row arrives as `,\n[...]`; the table's very first drops its comma.
        let data: &[u8] = if *first && !encoded.is_empty() {
            *first = false;
            encoded.get(1..).unwrap_or_default()
        } else {
            &encoded
        };
        self.buf.extend_from_slice(data);
        self.row_counts[index] += rows;
        if let (true, Ok(mut p)) = (rows > 0, self.progress.lock()) {
            p.rows_done += rows;
        }
        self.maybe_flush().await
    }

    async fn end_table(&mut self) -> Result<()> {
        let Some((index, first)) = self.current.take() else {
            return Err(Error::internal("end of a table that was not begun"));
        };
        self.push(if first { b"]}" } else { b"\n]}" });
        self.next_table = index + 1;
        if let Ok(mut p) = self.progress.lock() {
            p.tables_done = self.next_table as u32;
        }
        self.maybe_flush().await
    }
}
