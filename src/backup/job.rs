//! One backup job: database snapshot -> file writer -> storage, then the
//! manifest. Runs as its own task so it finishes even if the caller leaves.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tracing::Instrument;

use super::Backups;
use super::catalog::{Manifest, manifest_name};
use super::record::{BackupRecord, BackupStatus, Progress, format_time};
use crate::documents::fetch::Outcome;
use crate::documents::{
    Collecting, FetchQueue, MAX_MISSING_IN_RECORD, MissingDocument, redact_document_url,
};
use crate::error::{Error, Result};
use crate::format::codec::{
    CompressingWriter, Compression, EncryptingWriter, HashingWriter, StoredDigest,
};
use crate::format::writer::{BackupFileWriter, FileIdentity, WrittenFile};
use crate::format::{DocumentsInfo, Layout};
use crate::source::Source;
use crate::storage::ObjectWriter;

/// Registers the record as running and starts the job; the receiver gets the
/// final record.
pub fn spawn(
    core: Arc<Backups>,
    source: Arc<dyn Source>,
    record: BackupRecord,
) -> oneshot::Receiver<BackupRecord> {
    let progress = Arc::new(Mutex::new(Progress::default()));
    core.catalog.put_running(record.clone(), progress.clone());
    let (done_tx, done_rx) = oneshot::channel();
    let span = tracing::info_span!("backup_job", backup_id = %record.backup_id);
    tokio::spawn(
        async move {
            let _slot = core.backup_slots.acquire().await;
            let started = std::time::Instant::now();
            let finished = run(&core, source.as_ref(), record, progress).await;
            match finished.status {
                BackupStatus::Completed => tracing::info!(
                    size = finished.size,
                    rows = finished.progress.rows_done,
                    seconds = started.elapsed().as_secs_f64(),
                    "backup completed"
                ),
                _ => tracing::error!(error = %finished.error, "backup failed"),
            }
            crate::telemetry::backup_finished(&finished, started.elapsed());
            let _ = done_tx.send(finished);
        }
        .instrument(span),
    );
    done_rx
}

async fn run(
    core: &Backups,
    source: &dyn Source,
    mut record: BackupRecord,
    progress: Arc<Mutex<Progress>>,
) -> BackupRecord {
    match write_file(core, source, &record, progress.clone()).await {
        Ok(written) => {
            record.status = BackupStatus::Completed;
            record.size = written.size;
            record.sha256 = written.sha256;
            record.row_counts = written.row_counts;
            record.cloudinary_url = written.stored.url;
            record.storage_parts = written.stored.parts;
            record.source_engine = written.source.engine;
            record.source_version = written.source.server_version;
            record.format_version = written.format_version;
            if let Some(documents) = written.documents {
                record.document_count = documents.count;
                record.document_bytes = documents.bytes;
                record.warning_count = documents.missing;
                record.missing_documents = written.missing;
                if documents.missing > 0 {
                    tracing::warn!(
                        missing = documents.missing,
                        stored = documents.count,
                        "backup completed without some documents (see missingDocuments)"
                    );
                }
            }
            record.completed_at = Some(chrono::Utc::now());
            record.progress = progress.lock().map(|p| p.clone()).unwrap_or_default();
            if let Err(e) = save_manifest(core, &record).await {
                // Without a manifest the data cannot be found again: remove it.
                let _ = core.storage.delete(&record.object_name).await;
                fail(&mut record, e);
            }
        }
        Err(e) => fail(&mut record, e),
    }
    if record.status == BackupStatus::Failed {
        record.progress = progress.lock().map(|p| p.clone()).unwrap_or_default();
        // A failed attempt keeps its record (no data) so it can be inspected.
        if let Err(e) = save_manifest(core, &record).await {
            tracing::warn!(error = %e, "could not store the failed backup's manifest");
        }
    }
    core.catalog.put(record.clone());
    record
}

fn fail(record: &mut BackupRecord, error: Error) {
    record.status = BackupStatus::Failed;
    record.error = error.message;
    record.size = 0;
    record.sha256.clear();
    record.storage_parts.clear();
    record.cloudinary_url.clear();
    record.completed_at = Some(chrono::Utc::now());
}

async fn save_manifest(core: &Backups, record: &BackupRecord) -> Result<()> {
    let id = record
        .id()
        .ok_or_else(|| Error::internal("record with an invalid id"))?;
    core.storage
        .put_small(&manifest_name(&id), Manifest::encode(record)?)
        .await
}

async fn write_file(
    core: &Backups,
    source: &dyn Source,
    record: &BackupRecord,
    progress: Arc<Mutex<Progress>>,
) -> Result<WrittenFile> {
    let object = core
        .storage
        .create(&record.object_name)
        .await
        .map_err(|e| e.context("creating backup file"))?;
    let identity = FileIdentity {
        backup_id: record.backup_id.clone(),
        created_at: format_time(&record.created_at),
        description: record.description.clone(),
        include_documents: record.include_documents,
        documents: DocumentsInfo {
            included: false,
            count: 0,
            note: if record.include_documents {
                "no document columns are configured (DOCUMENT_COLUMNS)".into()
            } else {
                "documents were not requested (includeDocuments=false)".into()
            },
        },
        // Compressed backups are stored column by column, which makes them
        // far smaller; the plain `.json` keeps one row per line.
        layout: if record.compression == Compression::None {
            Layout::Rows
        } else {
            Layout::Columns
        },
    };
    // format writer -> compression -> encryption -> hash of stored bytes -> storage
    // Plain files are hashed by the format writer already; hash the stored
    // bytes separately only when a layer changes them.
    let transformed = record.encrypted() || record.compression != Compression::None;
    let (mut chain, stored): (Box<dyn ObjectWriter>, Option<StoredDigest>) = if transformed {
        let (hashing, stored) = HashingWriter::new(object);
        (Box::new(hashing), Some(stored))
    } else {
        (object, None)
    };
    if !record.encryption_key_id.is_empty() {
        // Fails closed: without the key nothing is stored, never plaintext.
        let key = core
            .codec
            .keys
            .current
            .as_ref()
            .filter(|k| k.id == record.encryption_key_id)
            .ok_or_else(|| {
                Error::internal("the encryption key is unavailable; nothing was stored")
            })?;
        chain = EncryptingWriter::start(chain, key)
            .await
            .map_err(|e| e.context("encrypting backup"))?;
    }
    let chain = CompressingWriter::wrap(chain, record.compression)?;
    let mut writer = BackupFileWriter::new(chain, identity, progress);
    let fetcher = core.fetcher.clone().filter(|_| record.include_documents);
    let dumped = match &fetcher {
        None => source.dump(&mut writer).await.map(|()| None),
        Some(fetcher) => match Collecting::new(&mut writer, &core.documents, fetcher.clone()) {
            Ok(mut collecting) => match source.dump(&mut collecting).await {
                Ok(()) => collecting.into_queue().map(Some),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
    };
    let queue = match dumped {
        Ok(queue) => queue,
        Err(e) => {
            writer.abort().await;
            return Err(e.context("reading database"));
        }
    };
    let mut missing = Vec::new();
    if let Some(queue) = queue
        && let Err(e) =
            write_documents(&mut writer, queue, core.documents.strict, &mut missing).await
    {
        writer.abort().await;
        return Err(e);
    }
    let mut written = writer.finish().await?;
    written.missing = missing;
    if let Some(stored) = stored {
        let (sha256, size) = stored
            .lock()
            .map(|s| s.clone())
            .map_err(|_| Error::internal("stored digest unavailable"))?;
        written.sha256 = sha256;
        written.size = size;
    }
    Ok(written)
}

/// Copies the fetched documents into the file in URL order and lists the
/// missing ones; in strict mode the first missing one fails the backup.
async fn write_documents(
    writer: &mut BackupFileWriter,
    mut queue: FetchQueue,
    strict: bool,
    missing: &mut Vec<MissingDocument>,
) -> Result<()> {
    writer.begin_documents().await?;
    while let Some(outcome) = queue.next().await {
        match outcome? {
            Outcome::Fetched(doc) => {
                writer
                    .write_document(&doc.url, &doc.content_type, doc.file, doc.size, &doc.sha256)
                    .await?;
            }
            Outcome::Missing(doc) => {
                if strict {
                    return Err(Error::precondition(format!(
                        "document {} could not be fetched ({}) and DOCUMENTS_STRICT is on: the backup failed and nothing was stored",
                        redact_document_url(&doc.url),
                        doc.reason
                    )));
                }
                writer.add_missing(&doc)?;
                if missing.len() < MAX_MISSING_IN_RECORD {
                    // The record shows no query string (signed URLs keep
                    // tokens there); the file keeps the exact URL.
                    missing.push(MissingDocument {
                        url: redact_document_url(&doc.url),
                        reason: doc.reason,
                    });
                }
            }
        }
    }
    Ok(())
}
