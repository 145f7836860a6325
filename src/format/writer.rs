//! Streams a dump into a storage object in the backup file format, hashing
//! every byte on the way and keeping only one small buffer in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::block_gather::BlockGather;
use super::{
    DOCUMENT_CHUNK_BYTES, DocumentTotals, DocumentsInfo, FORMAT_NAME, FORMAT_VERSION_COLUMNS,
    FORMAT_VERSION_DOCUMENTS, FORMAT_VERSION_NO_DOCUMENTS, Header, Layout, Trailer,
};
use crate::error::{Error, Result};
use crate::schema::{
    DumpSink, MissingDocument, Progress, SourceInfo, TableSchema, push_json_string,
};
use crate::storage::{ObjectWriter, StoredObject};

const FLUSH_BYTES: usize = 256 * 1024;
/// Pieces of rows at least this big skip the buffer.
const FORWARD_BYTES: usize = 64 * 1024;

/// What the file is about, known before the dump starts.
pub struct FileIdentity {
    pub backup_id: String,
    pub created_at: String,
    pub description: String,
    pub include_documents: bool,
    pub documents: DocumentsInfo,
    pub layout: Layout,
}

/// What a finished file holds.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub size: u64,
    pub sha256: String,
    pub row_counts: BTreeMap<String, u64>,
    pub source: SourceInfo,
    pub stored: StoredObject,
    pub format_version: u32,
    /// Set when the file has a documents section.
    pub documents: Option<DocumentTotals>,
    /// Missing documents for the record (filled in by the job).
    pub missing: Vec<MissingDocument>,
}

/// The documents section while it is written.
struct DocumentsSection {
    totals: DocumentTotals,
    /// Missing documents, one JSON object per line, copied into the file
    /// after the documents (memory does not grow with their number).
    missing: Option<std::io::BufWriter<std::fs::File>>,
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
    documents: Option<DocumentsSection>,
    /// The current table's rows while they are gathered into column
    /// blocks (`columns` layout only).
    gather: Option<BlockGather>,
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
            documents: None,
            gather: None,
        }
    }

    /// What the header says about documents; call before the dump begins.
    pub fn set_documents(&mut self, info: DocumentsInfo) {
        self.identity.documents = info;
    }

    fn format_version(&self) -> u32 {
        if self.identity.layout == Layout::Columns {
            FORMAT_VERSION_COLUMNS
        } else if self.identity.documents.included {
            FORMAT_VERSION_DOCUMENTS
        } else {
            FORMAT_VERSION_NO_DOCUMENTS
        }
    }

    fn tables_done(&self) -> bool {
        self.source.is_some() && self.current.is_none() && self.next_table == self.tables.len()
    }

    /// Ends the data section and opens the documents section.
    pub async fn begin_documents(&mut self) -> Result<()> {
        if !self.tables_done() || self.documents.is_some() || !self.identity.documents.included {
            return Err(Error::internal("documents section out of place"));
        }
        let spool = tempfile::tempfile()
            .map_err(|e| Error::storage_io("creating the missing-documents list", &e))?;
        self.push(b"\n],\n");
        self.push(super::DOCUMENTS_LINE);
        self.documents = Some(DocumentsSection {
            totals: DocumentTotals::default(),
            missing: Some(std::io::BufWriter::new(spool)),
        });
        self.maybe_flush().await
    }

    /// Copies one fetched document from its temp file into the file as
    /// base64 lines; its size and sha256 are checked again on the way.
    pub async fn write_document(
        &mut self,
        url: &str,
        content_type: &str,
        mut file: tokio::fs::File,
        size: u64,
        sha256: &str,
    ) -> Result<()> {
        use base64::Engine;
        use tokio::io::AsyncReadExt;
        let first = match &self.documents {
            Some(section) => section.totals.count == 0,
            None => return Err(Error::internal("document outside the documents section")),
        };
        self.push(if first { b"\n" } else { b",\n" });
        self.push(b"{\"url\":");
        push_json_string(&mut self.buf, url);
        self.push(b",\"contentType\":");
        push_json_string(&mut self.buf, content_type);
        self.push(b",\"chunks\":[");
        let mut raw = vec![0u8; DOCUMENT_CHUNK_BYTES];
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        loop {
            // Fill the whole chunk so every line but the last is a multiple of 3.
            let mut filled = 0;
            while filled < raw.len() {
                let n = file
                    .read(&mut raw[filled..])
                    .await
                    .map_err(|e| Error::storage_io("reading a fetched document", &e))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let chunk = &raw[..filled];
            hasher.update(chunk);
            self.push(if written == 0 { b"\n\"" } else { b",\n\"" });
            let start = self.buf.len();
            let len = base64::encoded_len(chunk.len(), true)
                .ok_or_else(|| Error::internal("document chunk too large"))?;
            self.buf.resize(start + len, 0);
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(chunk, &mut self.buf[start..])
                .map_err(|e| Error::internal(format!("encoding a document: {e}")))?;
            self.buf.truncate(start + n);
            self.push(b"\"");
            written += filled as u64;
            self.maybe_flush().await?;
            if filled < raw.len() {
                break;
            }
        }
        let digest = hex::encode(hasher.finalize());
        if written != size || digest != sha256 {
            return Err(Error::internal(
                "a fetched document changed in its temp file; nothing was stored",
            ));
        }
        self.push(format!("\n],\"size\":{size},\"sha256\":").as_bytes());
        push_json_string(&mut self.buf, sha256);
        self.push(b"}");
        if let Some(section) = self.documents.as_mut() {
            section.totals.count += 1;
            section.totals.bytes += size;
        }
        self.maybe_flush().await
    }

    /// Notes a document that could not be fetched, for `missingDocuments`.
    pub fn add_missing(&mut self, missing: &MissingDocument) -> Result<()> {
        use std::io::Write;
        let section = self
            .documents
            .as_mut()
            .ok_or_else(|| Error::internal("missing document outside the documents section"))?;
        let spool = section
            .missing
            .as_mut()
            .ok_or_else(|| Error::internal("missing-documents list already written"))?;
        let line = serde_json::to_vec(missing)
            .map_err(|e| Error::internal(format!("encoding a missing document: {e}")))?;
        spool
            .write_all(&line)
            .and_then(|()| spool.write_all(b"\n"))
            .map_err(|e| Error::storage_io("writing the missing-documents list", &e))?;
        section.totals.missing += 1;
        Ok(())
    }

    /// Closes the documents section and writes the missing-documents list.
    async fn end_documents(&mut self) -> Result<Option<DocumentTotals>> {
        use std::io::BufRead;
        let Some(section) = self.documents.as_mut() else {
            return Ok(None);
        };
        let totals = section.totals;
        let spool = section
            .missing
            .take()
            .ok_or_else(|| Error::internal("missing-documents list already written"))?;
        let mut file = spool
            .into_inner()
            .map_err(|e| Error::storage_io("writing the missing-documents list", e.error()))?;
        std::io::Seek::rewind(&mut file)
            .map_err(|e| Error::storage_io("reading the missing-documents list", &e))?;
        self.push(b"\n],\n");
        self.push(super::MISSING_LINE);
        let mut first = true;
        for line in std::io::BufReader::new(file).lines() {
            let line =
                line.map_err(|e| Error::storage_io("reading the missing-documents list", &e))?;
            self.push(if first { b"\n" } else { b",\n" });
            self.push(line.as_bytes());
            first = false;
            self.maybe_flush().await?;
        }
        Ok(Some(totals))
    }

    /// Feeds rows to the current table's column blocks, writing each block
    /// as it fills.
    async fn gather_rows(&mut self, mut data: &[u8]) -> Result<()> {
        let mut gather = self
            .gather
            .take()
            .ok_or_else(|| Error::internal("rows outside a table"))?;
        let result = async {
            while !data.is_empty() {
                let used = gather.feed(data)?;
                data = &data[used..];
                if gather.is_full() {
                    self.write_block(&mut gather).await?;
                }
            }
            Ok(())
        }
        .await;
        self.gather = Some(gather);
        result
    }

    /// Writes a full (or the table's last) block, one column line at a time.
    async fn write_block(&mut self, gather: &mut BlockGather) -> Result<()> {
        gather.write_block_start(&mut self.buf);
        for i in 0..gather.width() {
            gather.write_column(i, &mut self.buf)?;
            self.maybe_flush().await?;
        }
        gather.write_block_end(&mut self.buf)?;
        self.maybe_flush().await
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    async fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_BYTES + 64 * 1024));
        self.send(Bytes::from(piece)).await
    }

    /// Hashes `piece` and hands it to storage; everything in the file
    /// passes through here, in order.
    async fn send(&mut self, piece: Bytes) -> Result<()> {
        self.hasher.update(&piece);
        self.bytes += piece.len() as u64;
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::internal("backup file already closed"))?;
        out.write(piece).await?;
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
        if !self.tables_done() {
            return Err(Error::internal("dump ended before every table was written"));
        }
        if self.identity.documents.included && self.documents.is_none() {
            return Err(Error::internal("the documents section was not written"));
        }
        let documents = self.end_documents().await?;
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
            documents,
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
            format_version: self.format_version(),
            documents,
            missing: Vec::new(),
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
            format_version: self.format_version(),
            backup_id: self.identity.backup_id.clone(),
            created_at: self.identity.created_at.clone(),
            description: self.identity.description.clone(),
            include_documents: self.identity.include_documents,
            documents: self.identity.documents.clone(),
            layout: self.identity.layout,
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
        let width = table.columns.len();
        self.push(if index == 0 { b"\n" } else { b",\n" });
        self.push(b"{\"schema\":");
        push_json_string(&mut self.buf, &schema);
        self.push(b",\"name\":");
        push_json_string(&mut self.buf, &name);
        if self.identity.layout == Layout::Columns {
            self.push(b",\"blocks\":[");
            self.gather = Some(BlockGather::new(width));
        } else {
            self.push(b",\"rows\":[");
        }
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
        // Each row arrives as `,\n[...]`; the table's very first drops its
        // comma (column blocks skip the empty piece before it themselves).
        let data = if *first && !encoded.is_empty() && self.gather.is_none() {
            *first = false;
            encoded.slice(1..)
        } else {
            encoded
        };
        self.row_counts[index] += rows;
        if let (true, Ok(mut p)) = (rows > 0, self.progress.lock()) {
            p.rows_done += rows;
        }
        if self.gather.is_some() {
            return self.gather_rows(&data).await;
        }
        if data.len() < FORWARD_BYTES {
            self.buf.extend_from_slice(&data);
            return self.maybe_flush().await;
        }
        // Big pieces go on as they are, without a copy into the buffer.
        self.flush().await?;
        self.send(data).await
    }

    async fn end_table(&mut self) -> Result<()> {
        let Some((index, first)) = self.current.take() else {
            return Err(Error::internal("end of a table that was not begun"));
        };
        if let Some(mut gather) = self.gather.take() {
            gather.finish_table()?;
            // Twice when the last row did not fit the block before it.
            while !gather.is_empty() {
                self.write_block(&mut gather).await?;
            }
            if gather.table_rows() != self.row_counts[index] {
                return Err(Error::internal(format!(
                    "{} rows were reported but {} were written",
                    self.row_counts[index],
                    gather.table_rows()
                )));
            }
            gather.write_table_end(&mut self.buf);
        } else {
            self.push(if first { b"]}" } else { b"\n]}" });
        }
        self.next_table = index + 1;
        if let Ok(mut p) = self.progress.lock() {
            p.tables_done = self.next_table as u32;
        }
        self.maybe_flush().await
    }
}
