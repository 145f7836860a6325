//! includeDocuments: the uploaded document files a database refers to by URL
//! (`DOCUMENT_COLUMNS`), fetched and stored inside the backup file.
//!
//! Flow of a backup with documents: the source reads every distinct URL of
//! the configured columns inside its snapshot, before any table, and hands
//! them to the `Collecting` sink, which spools them to a temp file (memory
//! does not grow with their number). When the header is written the fetch
//! pipeline starts: up to `DOCUMENT_CONCURRENCY` documents stream into temp
//! files at once (`fetch`), through the SSRF guard (`guard`), while the
//! tables are dumped. After the data section the job copies each fetched
//! document from its temp file into the backup file, in URL order, and lists
//! the ones that could not be fetched. `extract` gets them back out.

pub mod columns;
pub mod extract;
pub mod fetch;
pub mod guard;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::format::DocumentsInfo;
use crate::format::writer::BackupFileWriter;
pub use crate::redact::redact_document_url;
pub use crate::schema::MissingDocument;
use crate::schema::{DumpSink, SourceInfo, TableSchema};
use columns::ColumnRef;
use fetch::{Fetcher, Outcome};

/// Missing documents the record (and so the manifest and API) lists one by
/// one; the backup file lists them all and `warningCount` counts them all.
pub const MAX_MISSING_IN_RECORD: usize = 1000;

/// The document settings, validated at start.
#[derive(Debug, Clone)]
pub struct DocumentSettings {
    pub columns: Vec<ColumnRef>,
    pub policy: Arc<guard::Policy>,
    /// Any missing document fails the backup.
    pub strict: bool,
    pub concurrency: usize,
    /// Per attempt of one document, body included.
    pub timeout: Duration,
    pub max_bytes: u64,
    /// Further attempts after a 5xx answer, a connection error or a timeout.
    pub retries: u32,
    /// Canonical directory restores may write documents under.
    pub restore_root: Option<PathBuf>,
}

/// Distinct URLs read in the snapshot, one JSON string per line in an
/// anonymous temp file.
struct UrlSpool {
    out: std::io::BufWriter<std::fs::File>,
    count: u64,
}

impl UrlSpool {
    fn new() -> Result<Self> {
        let file = tempfile::tempfile()
            .map_err(|e| Error::storage_io("creating the document URL list", &e))?;
        Ok(Self {
            out: std::io::BufWriter::with_capacity(64 * 1024, file),
            count: 0,
        })
    }

    fn push(&mut self, url: &str) -> Result<()> {
        let line = serde_json::to_string(url)
            .map_err(|e| Error::internal(format!("encoding a URL: {e}")))?;
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| Error::storage_io("writing the document URL list", &e))?;
        self.count += 1;
        Ok(())
    }

    fn into_file(self) -> Result<std::fs::File> {
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::storage_io("writing the document URL list", e.error()))?;
        std::io::Seek::rewind(&mut file)
            .map_err(|e| Error::storage_io("reading the document URL list", &e))?;
        Ok(file)
    }
}

/// A spawned task that is aborted when dropped.
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Task<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetched documents (or why not), in URL order, as the pipeline produces
/// them. Dropping it stops every fetch.
pub struct FetchQueue {
    rx: mpsc::Receiver<Result<Outcome>>,
    _pipeline: Task<()>,
}

impl FetchQueue {
    pub async fn next(&mut self) -> Option<Result<Outcome>> {
        self.rx.recv().await
    }
}

/// Starts fetching the spooled URLs: at most `concurrency` at once, each in
/// its own task so it progresses while the writer is busy; results wait in
/// their temp files until the writer takes them in order.
fn start_fetching(urls: std::fs::File, fetcher: Arc<Fetcher>, concurrency: usize) -> FetchQueue {
    let (tx, rx) = mpsc::channel(1);
    let pipeline = tokio::spawn(async move {
        let lines = tokio::io::BufReader::new(tokio::fs::File::from_std(urls)).lines();
        let mut outcomes = tokio_stream::wrappers::LinesStream::new(lines)
            .map(|line| {
                let fetcher = fetcher.clone();
                Task(tokio::spawn(async move {
                    let line =
                        line.map_err(|e| Error::storage_io("reading the document URL list", &e))?;
                    let url: String = serde_json::from_str(&line).map_err(|e| {
                        Error::internal(format!("reading the document URL list: {e}"))
                    })?;
                    Ok(fetcher.fetch(&url).await)
                }))
            })
            .buffered(concurrency);
        while let Some(joined) = outcomes.next().await {
            let outcome = joined
                .map_err(|e| Error::internal(format!("a document fetch stopped: {e}")))
                .and_then(|r| r);
            if tx.send(outcome).await.is_err() {
                return;
            }
        }
    });
    FetchQueue {
        rx,
        _pipeline: Task(pipeline),
    }
}

/// Wraps the file writer during the dump: collects the document URLs the
/// source reads in its snapshot, fills in the header's documents entry and
/// starts the fetches as soon as the header is written.
pub struct Collecting<'a> {
    inner: &'a mut BackupFileWriter,
    columns: &'a [ColumnRef],
    fetcher: Arc<Fetcher>,
    concurrency: usize,
    spool: Option<UrlSpool>,
    queue: Option<FetchQueue>,
}

impl<'a> Collecting<'a> {
    pub fn new(
        inner: &'a mut BackupFileWriter,
        settings: &'a DocumentSettings,
        fetcher: Arc<Fetcher>,
    ) -> Result<Self> {
        Ok(Self {
            inner,
            columns: &settings.columns,
            fetcher,
            concurrency: settings.concurrency,
            spool: Some(UrlSpool::new()?),
            queue: None,
        })
    }

    /// The fetches started when the dump began.
    pub fn into_queue(self) -> Result<FetchQueue> {
        self.queue
            .ok_or_else(|| Error::internal("the dump ended before document fetching started"))
    }
}

#[async_trait]
impl DumpSink for Collecting<'_> {
    fn document_columns(&self) -> &[ColumnRef] {
        self.columns
    }

    async fn document_url(&mut self, url: &str) -> Result<()> {
        self.spool
            .as_mut()
            .ok_or_else(|| Error::internal("document URL after the dump began"))?
            .push(url)
    }

    async fn begin(&mut self, source: &SourceInfo, tables: &[TableSchema]) -> Result<()> {
        let spool = self
            .spool
            .take()
            .ok_or_else(|| Error::internal("dump started twice"))?;
        let count = spool.count;
        self.inner.set_documents(DocumentsInfo {
            included: true,
            count,
            note: format!(
                "{count} distinct document URL(s) in {}; the documents follow the data section, those that could not be fetched are listed in missingDocuments",
                self.columns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
        self.queue = Some(start_fetching(
            spool.into_file()?,
            self.fetcher.clone(),
            self.concurrency,
        ));
        self.inner.begin(source, tables).await
    }

    async fn begin_table(&mut self, index: usize) -> Result<()> {
        self.inner.begin_table(index).await
    }

    async fn rows(&mut self, encoded: Bytes, rows: u64) -> Result<()> {
        self.inner.rows(encoded, rows).await
    }

    async fn end_table(&mut self) -> Result<()> {
        self.inner.end_table().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_query_strings_and_credentials() {
        let s = redact_document_url("https://u:p@res.cloudinary.com/a/b.pdf?token=abc#x");
        assert_eq!(s, "https://res.cloudinary.com/a/b.pdf?…");
        assert_eq!(redact_document_url("nonsense"), "<not a URL>");
    }
}
