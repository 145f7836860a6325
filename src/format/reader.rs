//! Reads a backup file as a stream of events, checking its structure, row
//! widths, row counts and the trailer's sha256 as it goes. Memory is bounded
//! by the longest single row.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::block_rows::{BlockRows, is_canonical_count};
use super::{
    BLOCK_MAX_ROWS, BLOCK_MAX_TEXT, DOCUMENTS_LINE, DocumentTotals, FORMAT_NAME,
    FORMAT_VERSION_COLUMNS, FORMAT_VERSION_NO_DOCUMENTS, Header, Layout, MISSING_LINE,
    TRAILER_PREFIX, Trailer,
};
use crate::error::Result;
use crate::schema::{MissingDocument, SourceInfo, corrupt, push_json_string};
use crate::storage::ByteStream;

/// A row longer than this is taken as a broken file, not a row; a column
/// block of one row has the same bound, longer blocks `BLOCK_MAX_TEXT`.
const MAX_LINE: usize = 1 << 30;
/// The longest line of the documents section: a base64 chunk is 64 KiB, and
/// a document start or missing-document line holds one URL (at most
/// `MAX_URL_BYTES`, escaped) and a content type or a reason.
pub const MAX_DOCUMENT_LINE: usize = 1 << 20;

pub enum Event<'a> {
    /// One row of the current table: a JSON array, one value per column.
    Row(&'a [u8]),
    TableStart(usize),
    TableEnd(usize),
    /// Only after `emit_documents(true)`; otherwise documents are checked
    /// and skipped.
    Document(DocumentEvent<'a>),
}

pub enum DocumentEvent<'a> {
    Start {
        url: &'a str,
        content_type: &'a str,
    },
    /// The next decoded bytes of the current document (at most 48 KiB).
    Chunk(&'a [u8]),
    /// The document ended and its size and sha256 were checked.
    End {
        size: u64,
        sha256: &'a str,
    },
    /// An entry of `missingDocuments`.
    Missing(&'a MissingDocument),
}

#[derive(PartialEq)]
enum State {
    Data,
    InTable(usize),
    /// Giving the rows of a column block of this table.
    InBlock(usize),
    AfterData,
    Documents,
    InDocument,
    MissingStart,
    Missing,
    Trailer,
    Done,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DocumentStart {
    url: String,
    content_type: String,
}

#[derive(serde::Deserialize)]
struct DocumentEnd {
    size: u64,
    sha256: String,
}

/// The document being read.
struct CurrentDocument {
    hasher: Sha256,
    size: u64,
    chunks: u64,
    url: String,
    content_type: String,
}

pub struct BackupReader {
    stream: ByteStream,
    /// What is left of the last chunk read; never more than one chunk.
    buf: Bytes,
    line: Vec<u8>,
    eof: bool,
    hasher: Sha256,
    hashed: u64,
    header: Header,
    state: State,
    next_table: usize,
    counts: Vec<u64>,
    expect_more: bool,
    trailer: Option<Trailer>,
    emit_documents: bool,
    document: Option<CurrentDocument>,
    decoded: Vec<u8>,
    end_sha: String,
    missing: MissingDocument,
    totals: Option<DocumentTotals>,
    block: BlockRows,
    /// Column blocks read so far in the current table.
    blocks: u64,
}

impl BackupReader {
    /// Reads and checks the header line.
    pub async fn open(stream: ByteStream) -> Result<Self> {
        let mut reader = Self {
            stream,
            buf: Bytes::new(),
            line: Vec::new(),
            eof: false,
            hasher: Sha256::new(),
            hashed: 0,
            header: Header {
                format: String::new(),
                format_version: 0,
                backup_id: String::new(),
                created_at: String::new(),
                description: String::new(),
                include_documents: false,
                documents: super::DocumentsInfo {
                    included: false,
                    count: 0,
                    note: String::new(),
                },
                layout: Layout::Rows,
                source: SourceInfo {
                    engine: String::new(),
                    server_version: String::new(),
                },
                tables: Vec::new(),
            },
            state: State::Data,
            next_table: 0,
            counts: Vec::new(),
            expect_more: false,
            trailer: None,
            emit_documents: false,
            document: None,
            decoded: Vec::new(),
            end_sha: String::new(),
            missing: MissingDocument {
                url: String::new(),
                reason: String::new(),
            },
            totals: None,
            block: BlockRows::new(),
            blocks: 0,
        };
        if !reader.next_line(true, MAX_LINE).await? {
            return Err(corrupt("empty file"));
        }
        let header_json = reader
            .line
            .strip_prefix(b"{\"header\":")
            .and_then(|l| l.strip_suffix(b","))
            .ok_or_else(|| corrupt("not a backup-service file (no header line)"))?;
        let header: Header =
            serde_json::from_slice(header_json).map_err(|e| corrupt(format!("header: {e}")))?;
        if header.format != FORMAT_NAME {
            return Err(corrupt(format!("unknown format {:?}", header.format)));
        }
        if !(FORMAT_VERSION_NO_DOCUMENTS..=FORMAT_VERSION_COLUMNS).contains(&header.format_version)
        {
            return Err(corrupt(format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION_NO_DOCUMENTS} to {FORMAT_VERSION_COLUMNS})",
                header.format_version
            )));
        }
        if (header.layout == Layout::Columns) != (header.format_version == FORMAT_VERSION_COLUMNS) {
            return Err(corrupt(
                "the columns layout is format version 3, and version 3 is the columns layout",
            ));
        }
        if header.documents.included && header.format_version < 2 {
            return Err(corrupt("a version 1 file cannot hold documents"));
        }
        reader.counts = vec![0; header.tables.len()];
        reader.header = header;
        if !reader.next_line(true, MAX_LINE).await? || reader.line != b"\"data\":[" {
            return Err(corrupt("missing data section"));
        }
        Ok(reader)
    }

    /// Makes `next` return the documents section as events instead of only
    /// checking it.
    pub fn emit_documents(&mut self, on: bool) {
        self.emit_documents = on;
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Rows read so far from table `index`.
    pub fn rows_read(&self, index: usize) -> u64 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// The next event, or None after the trailer has been checked.
    pub async fn next(&mut self) -> Result<Option<Event<'_>>> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::AfterData | State::Trailer => {
                    let body = (hex::encode(self.hasher.clone().finalize()), self.hashed);
                    if !self.next_line(true, MAX_LINE).await? {
                        return Err(corrupt("file is truncated before its trailer"));
                    }
                    let documents_next = self.state == State::AfterData
                        && self.header.documents.included
                        && self.line == DOCUMENTS_LINE;
                    if documents_next {
                        self.totals = Some(DocumentTotals::default());
                        self.expect_more = false;
                        self.state = State::Documents;
                        continue;
                    }
                    if self.header.documents.included && self.totals.is_none() {
                        return Err(corrupt("the documents section is missing"));
                    }
                    self.read_trailer(body).await?;
                    self.state = State::Done;
                    return Ok(None);
                }
                State::Documents => {
                    if !self.next_line(true, MAX_DOCUMENT_LINE).await? {
                        return Err(corrupt("file is truncated"));
                    }
                    if self.line == b"]," {
                        if self.expect_more {
                            return Err(corrupt("document list ends after a comma"));
                        }
                        self.state = State::MissingStart;
                        continue;
                    }
                    if self.totals.is_some_and(|t| t.count > 0) && !self.expect_more {
                        return Err(corrupt("documents are not separated by commas"));
                    }
                    let start = self
                        .line
                        .strip_suffix(b"\"chunks\":[")
                        .filter(|_| self.line.starts_with(b"{\"url\":"))
                        .ok_or_else(|| corrupt("malformed document start"))?;
                    let mut json = start.to_vec();
                    json.extend_from_slice(b"\"chunks\":[]}");
                    let start: DocumentStart = serde_json::from_slice(&json)
                        .map_err(|e| corrupt(format!("document start: {e}")))?;
                    self.document = Some(CurrentDocument {
                        hasher: Sha256::new(),
                        size: 0,
                        chunks: 0,
                        url: start.url,
                        content_type: start.content_type,
                    });
                    self.expect_more = false;
                    self.state = State::InDocument;
                    if self.emit_documents {
                        let doc = self
                            .document
                            .as_ref()
                            .ok_or_else(|| corrupt("no document"))?;
                        return Ok(Some(Event::Document(DocumentEvent::Start {
                            url: &doc.url,
                            content_type: &doc.content_type,
                        })));
                    }
                }
                State::InDocument => {
                    if !self.next_line(true, MAX_DOCUMENT_LINE).await? {
                        return Err(corrupt("file is truncated"));
                    }
                    if let Some(end) = self.line.strip_prefix(b"],") {
                        if self.expect_more {
                            return Err(corrupt("chunk list ends after a comma"));
                        }
                        let (end, more) = match end.strip_suffix(b",") {
                            Some(end) => (end, true),
                            None => (end, false),
                        };
                        let mut json = b"{".to_vec();
                        json.extend_from_slice(end);
                        let end: DocumentEnd = serde_json::from_slice(&json)
                            .map_err(|e| corrupt(format!("document end: {e}")))?;
                        let doc = self.document.take().ok_or_else(|| corrupt("no document"))?;
                        let digest = hex::encode(doc.hasher.finalize());
                        if doc.size != end.size || digest != end.sha256 {
                            return Err(corrupt(format!(
                                "document {} does not match its size and sha256 (corrupt or tampered)",
                                crate::redact::redact_document_url(&doc.url)
                            )));
                        }
                        if let Some(t) = self.totals.as_mut() {
                            t.count += 1;
                            t.bytes += end.size;
                        }
                        self.expect_more = more;
                        self.state = State::Documents;
                        if self.emit_documents {
                            self.end_sha = end.sha256;
                            return Ok(Some(Event::Document(DocumentEvent::End {
                                size: end.size,
                                sha256: &self.end_sha,
                            })));
                        }
                        continue;
                    }
                    let (chunk, more) = match self.line.strip_suffix(b",") {
                        Some(chunk) => (chunk, true),
                        None => (&self.line[..], false),
                    };
                    let b64 = chunk
                        .strip_prefix(b"\"")
                        .and_then(|c| c.strip_suffix(b"\""))
                        .ok_or_else(|| corrupt("malformed document chunk"))?;
                    self.decoded.clear();
                    base64::Engine::decode_vec(
                        &base64::engine::general_purpose::STANDARD,
                        b64,
                        &mut self.decoded,
                    )
                    .map_err(|e| corrupt(format!("document chunk: {e}")))?;
                    let doc = self
                        .document
                        .as_mut()
                        .ok_or_else(|| corrupt("no document"))?;
                    if doc.chunks > 0 && !self.expect_more {
                        return Err(corrupt("document chunks are not separated by commas"));
                    }
                    doc.hasher.update(&self.decoded);
                    doc.size += self.decoded.len() as u64;
                    doc.chunks += 1;
                    self.expect_more = more;
                    if self.emit_documents {
                        return Ok(Some(Event::Document(DocumentEvent::Chunk(&self.decoded))));
                    }
                }
                State::MissingStart => {
                    if !self.next_line(true, MAX_DOCUMENT_LINE).await? || self.line != MISSING_LINE
                    {
                        return Err(corrupt("missing the missingDocuments list"));
                    }
                    self.expect_more = false;
                    self.state = State::Missing;
                }
                State::Missing => {
                    if !self.next_line(true, MAX_DOCUMENT_LINE).await? {
                        return Err(corrupt("file is truncated"));
                    }
                    if self.line == b"]," {
                        if self.expect_more {
                            return Err(corrupt("missingDocuments ends after a comma"));
                        }
                        self.state = State::Trailer;
                        continue;
                    }
                    if self.totals.is_some_and(|t| t.missing > 0) && !self.expect_more {
                        return Err(corrupt("missing documents are not separated by commas"));
                    }
                    let (entry, more) = match self.line.strip_suffix(b",") {
                        Some(entry) => (entry, true),
                        None => (&self.line[..], false),
                    };
                    self.missing = serde_json::from_slice(entry)
                        .map_err(|e| corrupt(format!("missing document: {e}")))?;
                    if let Some(t) = self.totals.as_mut() {
                        t.missing += 1;
                    }
                    self.expect_more = more;
                    if self.emit_documents {
                        return Ok(Some(Event::Document(DocumentEvent::Missing(&self.missing))));
                    }
                }
                State::Data => {
                    if !self.next_line(true, MAX_LINE).await? {
                        return Err(corrupt("file is truncated"));
                    }
                    if self.line == b"]," {
                        if self.expect_more || self.next_table != self.header.tables.len() {
                            return Err(corrupt("tables are missing from the data section"));
                        }
                        self.state = State::AfterData;
                        continue;
                    }
                    let index = self.next_table;
                    let table = self
                        .header
                        .tables
                        .get(index)
                        .ok_or_else(|| corrupt("more tables than the header lists"))?;
                    let mut prefix = b"{\"schema\":".to_vec();
                    push_json_string(&mut prefix, &table.schema);
                    prefix.extend_from_slice(b",\"name\":");
                    push_json_string(&mut prefix, &table.name);
                    prefix.extend_from_slice(if self.header.layout == Layout::Columns {
                        b",\"blocks\":["
                    } else {
                        b",\"rows\":["
                    });
                    let rest = self.line.strip_prefix(prefix.as_slice()).ok_or_else(|| {
                        corrupt(format!("expected table {}", table.qualified_name()))
                    })?;
                    self.next_table += 1;
                    self.blocks = 0;
                    self.expect_more = false;
                    match rest {
                        b"" => self.state = State::InTable(index),
                        b"]}" | b"]}," => {
                            self.expect_more = rest.len() == 3;
                            return Ok(Some(Event::TableEnd(index)));
                        }
                        _ => return Err(corrupt("malformed table start")),
                    }
                    return Ok(Some(Event::TableStart(index)));
                }
                State::InBlock(index) => {
                    if !self.block.advance()? {
                        self.state = State::InTable(index);
                        continue;
                    }
                    self.counts[index] += 1;
                    return Ok(Some(Event::Row(self.block.row())));
                }
                State::InTable(index) if self.header.layout == Layout::Columns => {
                    self.read_block(index).await?;
                    if self.state == State::Data {
                        return Ok(Some(Event::TableEnd(index)));
                    }
                }
                State::InTable(index) => {
                    if !self.next_line(true, MAX_LINE).await? {
                        return Err(corrupt("file is truncated"));
                    }
                    if self.closes_list("row list")? {
                        self.state = State::Data;
                        return Ok(Some(Event::TableEnd(index)));
                    }
                    let (row, more) = match self.line.strip_suffix(b",") {
                        Some(row) => (row, true),
                        None => (&self.line[..], false),
                    };
                    // The values are checked one by one where they are used;
                    // here the row must split into the right number of them.
                    let width = self.header.tables[index].columns.len();
                    let mut values = Vec::with_capacity(width);
                    crate::format::json_row::split_values(row, &mut values)?;
                    if values.len() != width {
                        return Err(corrupt(format!(
                            "row of table {} has {} values, expected {width}",
                            self.header.tables[index].qualified_name(),
                            values.len()
                        )));
                    }
                    self.expect_more = more;
                    self.counts[index] += 1;
                    let len = row.len();
                    return Ok(Some(Event::Row(&self.line[..len])));
                }
            }
        }
    }

    /// True when the line just read closes a table's list (`]}`, or `]},`
    /// when another table follows); a list may not end right after a comma.
    fn closes_list(&mut self, what: &str) -> Result<bool> {
        if self.line != b"]}" && self.line != b"]}," {
            return Ok(false);
        }
        if self.expect_more {
            return Err(corrupt(format!("{what} ends after a comma")));
        }
        self.expect_more = self.line.len() == 3;
        Ok(true)
    }

    /// Reads a column block of table `index` into `self.block` (state
    /// `InBlock`), or the table's end (state `Data`).
    async fn read_block(&mut self, index: usize) -> Result<()> {
        if !self.next_line(true, MAX_LINE).await? {
            return Err(corrupt("file is truncated"));
        }
        if self.closes_list("block list")? {
            // The next table's columns differ: give the block's memory back.
            self.block.release();
            self.line.shrink_to(64 * 1024);
            self.state = State::Data;
            return Ok(());
        }
        if self.blocks > 0 && !self.expect_more {
            return Err(corrupt("blocks are not separated by commas"));
        }
        let rows: usize = self
            .line
            .strip_prefix(b"{\"rows\":")
            .and_then(|l| l.strip_suffix(b",\"columns\":["))
            .and_then(|n| std::str::from_utf8(n).ok())
            .filter(|n| is_canonical_count(n))
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=BLOCK_MAX_ROWS).contains(n))
            .ok_or_else(|| corrupt("malformed block start"))?;
        let width = self.header.tables[index].columns.len();
        self.block.begin(rows);
        // Only a block of one row may be as long as a row may be.
        let block_limit = if rows == 1 { MAX_LINE } else { BLOCK_MAX_TEXT };
        for column in 0..width {
            let limit = block_limit.saturating_sub(self.block.len());
            if !self.next_line(true, limit).await? {
                return Err(corrupt("file is truncated"));
            }
            let last = column + 1 == width;
            let len = match (self.line.last() == Some(&b','), last) {
                (true, false) => self.line.len() - 1,
                (false, true) => self.line.len(),
                _ => return Err(corrupt("malformed block: columns and commas do not match")),
            };
            self.block.add_column(&mut self.line, len)?;
        }
        if !self.next_line(true, MAX_LINE).await? {
            return Err(corrupt("file is truncated"));
        }
        if self.line != b"]}" && self.line != b"]}," {
            return Err(corrupt(format!(
                "a block of table {} has more columns than the header lists",
                self.header.tables[index].qualified_name()
            )));
        }
        self.expect_more = self.line.len() == 3;
        self.blocks += 1;
        self.state = State::InBlock(index);
        Ok(())
    }

    /// SHA-256 and size of every byte read, trailer included: the whole file
    /// once the trailer has been checked.
    pub fn digest(&self) -> (String, u64) {
        (hex::encode(self.hasher.clone().finalize()), self.hashed)
    }

    /// Reads to the end and returns the checked trailer.
    pub async fn verify_to_end(mut self) -> Result<(Header, Trailer)> {
        while self.next().await?.is_some() {}
        let trailer = self.trailer.take().ok_or_else(|| corrupt("no trailer"))?;
        Ok((self.header, trailer))
    }

    /// Checks the trailer line just read against the hash of everything
    /// before it, `body`. The trailer is hashed too, so the reader also
    /// knows the SHA-256 of the whole file.
    async fn read_trailer(&mut self, body: (String, u64)) -> Result<()> {
        let (body_hash, hashed) = body;
        let json = self
            .line
            .strip_prefix(TRAILER_PREFIX)
            .and_then(|l| l.strip_suffix(b"}"))
            .ok_or_else(|| corrupt("malformed trailer"))?;
        let trailer: Trailer =
            serde_json::from_slice(json).map_err(|e| corrupt(format!("trailer: {e}")))?;
        if self.next_line(true, MAX_LINE).await? {
            return Err(corrupt("data after the trailer"));
        }
        if trailer.hashed_bytes != hashed || trailer.sha256 != body_hash {
            return Err(corrupt(
                "sha256 does not match the file's contents (corrupt or tampered)",
            ));
        }
        let mut counts = BTreeMap::new();
        for (table, count) in self.header.tables.iter().zip(&self.counts) {
            counts.insert(table.qualified_name(), *count);
        }
        if counts != trailer.row_counts {
            return Err(corrupt("row counts differ from the trailer"));
        }
        if trailer.documents != self.totals {
            return Err(corrupt("documents differ from the trailer"));
        }
        if let Some(t) = self.totals
            && t.count + t.missing != self.header.documents.count
        {
            return Err(corrupt(
                "documents stored and missing do not add up to the header's count",
            ));
        }
        self.trailer = Some(trailer);
        Ok(())
    }

    /// Loads the next line (without its newline) into `self.line`; a line
    /// longer than `limit` is refused before more than that is read. A long
    /// line is gathered chunk by chunk straight into `self.line`, so it is
    /// held once, scanned once and never copied twice.
    async fn next_line(&mut self, hash: bool, limit: usize) -> Result<bool> {
        self.line.clear();
        loop {
            let (taken, complete) = match memchr::memchr(b'\n', &self.buf) {
                Some(pos) => (self.buf.split_to(pos + 1), true),
                None => (std::mem::take(&mut self.buf), false),
            };
            if hash {
                self.hasher.update(&taken);
                self.hashed += taken.len() as u64;
            }
            let content = if complete {
                &taken[..taken.len() - 1]
            } else {
                &taken[..]
            };
            self.line.extend_from_slice(content);
            if complete {
                return Ok(true);
            }
            if self.eof {
                return Ok(!self.line.is_empty());
            }
            if self.line.len() > limit {
                return Err(corrupt(format!("a line is longer than {limit} bytes")));
            }
            match self.stream.next().await {
                Some(chunk) => self.buf = chunk?,
                None => self.eof = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;
    use crate::format::DocumentsInfo;
    use crate::format::writer::{BackupFileWriter, FileIdentity};
    use crate::schema::{
        ColumnSchema, DumpSink, MissingDocument, SourceInfo, TableSchema, ValueEncoding,
    };
    use crate::storage::MemoryWriter;

    async fn file_with_documents(declared: u64, document: &[u8]) -> Vec<u8> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let identity = FileIdentity {
            backup_id: "backup_2026-03-11T12-00-00-000Z".into(),
            created_at: "2026-03-11T12:00:00Z".into(),
            description: String::new(),
            include_documents: true,
            documents: DocumentsInfo {
                included: false,
                count: 0,
                note: String::new(),
            },
            layout: crate::format::Layout::Rows,
        };
        let mut w = BackupFileWriter::new(
            Box::new(MemoryWriter(out.clone())),
            identity,
            Arc::new(Mutex::new(Default::default())),
        );
        w.set_documents(DocumentsInfo {
            included: true,
            count: declared,
            note: "test".into(),
        });
        let table = TableSchema {
            schema: "public".into(),
            name: "Doc".into(),
            columns: vec![ColumnSchema {
                name: "url".into(),
                sql_type: "text".into(),
                encoding: ValueEncoding::Text,
                nullable: true,
            }],
            primary_key: vec![],
            foreign_keys: vec![],
        };
        let source = SourceInfo {
            engine: "postgresql".into(),
            server_version: "17".into(),
        };
        w.begin(&source, &[table]).await.unwrap();
        w.begin_table(0).await.unwrap();
        w.rows(Bytes::from_static(b",\n[\"https://h/a.pdf\"]"), 1)
            .await
            .unwrap();
        w.end_table().await.unwrap();
        w.begin_documents().await.unwrap();
        let mut temp = tempfile::tempfile().unwrap();
        temp.write_all(document).unwrap();
        std::io::Seek::rewind(&mut temp).unwrap();
        let sha = hex::encode(Sha256::digest(document));
        w.write_document(
            "https://h/a.pdf",
            "application/pdf",
            tokio::fs::File::from_std(temp),
            document.len() as u64,
            &sha,
        )
        .await
        .unwrap();
        w.add_missing(&MissingDocument {
            url: "https://h/b.pdf".into(),
            reason: "HTTP 404 Not Found".into(),
        })
        .unwrap();
        let written = w.finish().await.unwrap();
        assert_eq!(written.format_version, 2);
        out.lock().unwrap().clone()
    }

    fn stream(bytes: Vec<u8>) -> ByteStream {
        // Small pieces, so lines span several reads.
        let pieces: Vec<Result<Bytes>> = bytes
            .chunks(7_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(pieces))
    }

    async fn read_documents(bytes: Vec<u8>) -> Result<(Vec<u8>, Vec<String>)> {
        let mut reader = BackupReader::open(stream(bytes)).await?;
        reader.emit_documents(true);
        let mut doc = Vec::new();
        let mut missing = Vec::new();
        while let Some(event) = reader.next().await? {
            match event {
                Event::Document(DocumentEvent::Chunk(c)) => doc.extend_from_slice(c),
                Event::Document(DocumentEvent::Missing(m)) => missing.push(m.reason.clone()),
                _ => {}
            }
        }
        Ok((doc, missing))
    }

    #[tokio::test]
    async fn documents_round_trip_and_are_checked() {
        let document: Vec<u8> = (0..150_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let bytes = file_with_documents(2, &document).await;
        let (doc, missing) = read_documents(bytes.clone()).await.unwrap();
        assert!(doc == document);
        assert_eq!(missing, vec!["HTTP 404 Not Found".to_string()]);
        // Checked and skipped when not emitted; the whole file is JSON.
        let (_, trailer) = BackupReader::open(stream(bytes.clone()))
            .await
            .unwrap()
            .verify_to_end()
            .await
            .unwrap();
        let totals = trailer.documents.unwrap();
        assert_eq!(
            (totals.count, totals.bytes, totals.missing),
            (1, 150_001, 1)
        );
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["documents"][0]["chunks"].as_array().unwrap().len(), 4);

        // One changed base64 character.
        let text = String::from_utf8(bytes.clone()).unwrap();
        let at = text.find("\"chunks\":[\n\"").unwrap() + 20;
        let mut bad = bytes.clone();
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let e = read_documents(bad).await.unwrap_err();
        assert!(e.message.contains("does not match"), "{}", e.message);

        // Stored plus missing must add up to what the header declares.
        let e = read_documents(file_with_documents(3, &document).await)
            .await
            .unwrap_err();
        assert!(e.message.contains("add up"), "{}", e.message);
    }

    #[tokio::test]
    async fn an_over_long_documents_line_is_refused_without_reading_it_whole() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let bytes = file_with_documents(2, b"small document").await;
        let text = String::from_utf8(bytes).unwrap();
        // Up to the first chunk line, then a "chunk" of 8 MiB.
        let cut = text.find("\"chunks\":[\n").unwrap() + 11;
        let mut head = text.as_bytes()[..cut].to_vec();
        head.push(b'"');
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = pulled.clone();
        let long_line = futures::stream::iter(0..128).map(move |i| {
            let piece = if i == 127 {
                Bytes::from_static(b"\"\n")
            } else {
                Bytes::from(vec![b'A'; 64 * 1024])
            };
            counter.fetch_add(piece.len(), Ordering::SeqCst);
            Ok(piece)
        });
        let stream: ByteStream = Box::pin(stream(head).chain(long_line));
        let mut reader = BackupReader::open(stream).await.unwrap();
        let e = loop {
            match reader.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("an 8 MiB documents line must be refused"),
                Err(e) => break e,
            }
        };
        assert!(e.message.contains("longer than"), "{}", e.message);
        assert!(e.message.contains("failed verification"), "{}", e.message);
        let pulled = pulled.load(Ordering::SeqCst);
        assert!(
            pulled <= MAX_DOCUMENT_LINE + 64 * 1024,
            "{pulled} bytes of the line were read"
        );
    }
}
