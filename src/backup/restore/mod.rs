//! Restore and verify: a backup is checked whole (its own trailer and the
//! catalog's sha256) before anything is written, then loaded into the
//! target in one transaction that re-checks everything before commit.

mod driver;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::record::{BackupRecord, BackupStatus};
use super::{Backups, CreateRequest, Principal};
use crate::error::{Error, Result};
use crate::format::Header;
use crate::format::codec::{Keyring, decode, is_plain};
use crate::format::reader::BackupReader;
use crate::redact::redact_url;
use crate::schema::{TableProgress, corrupt};
use crate::source::Target;
use crate::storage::ByteStream;

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore here instead of the configured database.
    pub target_url: Option<String>,
    /// Verify and check the schema only.
    pub dry_run: bool,
    /// Do not take a safety backup of the target first.
    pub skip_safety_backup: bool,
    /// Also write the documents here; must be inside DOCUMENT_RESTORE_ROOT.
    pub documents_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestorePhase {
    Verifying,
    CheckingSchema,
    SafetyBackup,
    Loading,
    Committed,
    DryRunPassed,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreUpdate {
    pub phase: RestorePhase,
    pub table: String,
    pub rows_done: u64,
    pub rows_total: u64,
    pub tables_done: u32,
    pub tables_total: u32,
    pub safety_backup_id: String,
    pub message: String,
}

impl RestoreUpdate {
    fn phase(phase: RestorePhase, message: impl Into<String>) -> Self {
        Self {
            phase,
            table: String::new(),
            rows_done: 0,
            rows_total: 0,
            tables_done: 0,
            tables_total: 0,
            safety_backup_id: String::new(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOutcome {
    pub backup_id: String,
    /// The target, password masked.
    pub target: String,
    pub dry_run: bool,
    pub safety_backup_id: Option<String>,
    pub row_counts: BTreeMap<String, u64>,
    /// Documents written into `documents_dir`.
    pub documents_written: u64,
    /// The resolved documents directory, when one was asked for.
    pub documents_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub backup_id: String,
    pub ok: bool,
    pub size: u64,
    pub sha256: String,
    pub sha256_matches: bool,
    pub row_counts: BTreeMap<String, u64>,
    pub problems: Vec<String>,
    pub test_restore_performed: bool,
    pub test_restore_ok: bool,
}

/// Where progress goes; a closed receiver does not stop the restore.
pub type Updates = tokio::sync::mpsc::Sender<RestoreUpdate>;

/// Hashes every byte that passes through a stream.
fn hashing(stream: ByteStream) -> (ByteStream, Arc<Mutex<(Sha256, u64)>>) {
    let state = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let seen = state.clone();
    let stream = stream.map(move |chunk| {
        if let (Ok(bytes), Ok(mut s)) = (&chunk, seen.lock()) {
            s.0.update(bytes);
            s.1 += bytes.len() as u64;
        }
        chunk
    });
    (Box::pin(stream), state)
}

fn digest(state: &Arc<Mutex<(Sha256, u64)>>) -> (String, u64) {
    state
        .lock()
        .map(|s| (hex::encode(s.0.clone().finalize()), s.1))
        .unwrap_or_default()
}

/// Reads a whole file, checking structure and trailer; returns its header,
/// row counts and whole-file sha256 and size.
pub async fn check_file(
    stream: ByteStream,
    keys: &Keyring,
    encrypted: bool,
) -> Result<(Header, BTreeMap<String, u64>, String, u64)> {
    let (plain_file, stream) = is_plain(stream).await?;
    if plain_file && !encrypted {
        // One hash pass: the reader's digest covers the whole plain file.
        let mut reader = BackupReader::open(stream).await?;
        while reader.next().await?.is_some() {}
        let (sha, size) = reader.digest();
        let (header, trailer) = reader.verify_to_end().await?;
        return Ok((header, trailer.row_counts, sha, size));
    }
    let (stream, state) = hashing(stream);
    let plain = decode(stream, keys, encrypted).await?;
    let (header, trailer) = BackupReader::open(plain).await?.verify_to_end().await?;
    let (sha, size) = digest(&state);
    Ok((header, trailer.row_counts, sha, size))
}

/// The file's header must name the backup the record is about: a manifest
/// pointed at another backup's file is refused, not verified.
fn check_header_names(record: &BackupRecord, header: &Header) -> Result<()> {
    if header.backup_id != record.backup_id {
        return Err(corrupt(format!(
            "the stored file holds backup {}, not {}",
            header.backup_id, record.backup_id
        )));
    }
    Ok(())
}

fn check_against_record(record: &BackupRecord, sha: &str, size: u64) -> Result<()> {
    if sha != record.sha256 || size != record.size {
        return Err(corrupt(format!(
            "stored file has sha256 {sha} ({size} bytes) but the catalog records {} ({} bytes)",
            record.sha256, record.size
        )));
    }
    Ok(())
}

/// The target must be the backup's engine and hold its tables and columns.
async fn check_target(header: &Header, target: &dyn Target) -> Result<()> {
    if family(&header.source.engine) != family(target.engine()) {
        return Err(Error::precondition(format!(
            "a {} backup cannot be restored into {}",
            header.source.engine,
            target.engine()
        )));
    }
    let problems = target.schema_problems(&header.tables).await?;
    if !problems.is_empty() {
        return Err(Error::precondition(format!(
            "the target's schema does not match the backup; nothing was written: {}",
            problems.join("; ")
        )));
    }
    Ok(())
}

fn family(engine: &str) -> &str {
    match engine {
        "cockroachdb" => "postgresql",
        other => other,
    }
}

/// Loads a checked file into `target`, re-verifying before commit.
async fn load(
    target: &dyn Target,
    stream: ByteStream,
    keys: &Keyring,
    expected_sha: Option<String>,
    updates: &Updates,
    counts: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>> {
    let (stream, state) = hashing(stream);
    let plain = decode(stream, keys, false).await?;
    let mut reader = BackupReader::open(plain).await?;
    let mut progress = |p: TableProgress| {
        let _ = updates.try_send(RestoreUpdate {
            phase: RestorePhase::Loading,
            rows_total: counts.get(&p.table).copied().unwrap_or(0),
            table: p.table,
            rows_done: p.rows_done,
            tables_done: p.tables_done,
            tables_total: p.tables_total,
            safety_backup_id: String::new(),
            message: String::new(),
        });
    };
    let check_digest = move || -> Result<()> {
        if let Some(expected) = &expected_sha {
            let (sha, _) = digest(&state);
            if &sha != expected {
                return Err(corrupt("the file changed while it was being restored"));
            }
        }
        Ok(())
    };
    driver::load_file(target, &mut reader, &mut progress, check_digest).await
}

/// SHA-256 and size of a raw stream, read to the end.
async fn hash_all(mut stream: ByteStream) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The header alone: the first line of the decoded file.
async fn read_header(stream: ByteStream, keys: &Keyring, encrypted: bool) -> Result<Header> {
    let plain = decode(stream, keys, encrypted).await?;
    Ok(BackupReader::open(plain).await?.header().clone())
}

impl Backups {
    /// Restores a stored backup into the configured database or `target_url`.
    pub async fn restore(
        self: &Arc<Self>,
        raw_id: &str,
        options: RestoreOptions,
        by: &Principal,
        updates: Updates,
    ) -> Result<RestoreOutcome> {
        if !self.maintenance().await.enabled {
            return Err(Error::precondition(
                "restore requires maintenance mode: turn it on first (SetMaintenanceMode or PUT /api/maintenance)",
            ));
        }
        let record = self.get(raw_id).await?;
        if record.status != BackupStatus::Completed {
            return Err(Error::precondition(format!(
                "backup {} is {:?}; only completed backups can be restored",
                record.backup_id, record.status
            )));
        }
        let _running = self
            .restore_lock
            .try_lock()
            .map_err(|_| Error::precondition("another restore is running"))?;
        let target_url = options
            .target_url
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| self.database_url.clone());
        self.check_restore_target(&target_url)?;
        // Refused before anything is read or written.
        let documents_dir = match options.documents_dir.as_deref().filter(|d| !d.is_empty()) {
            Some(dir) => Some(crate::documents::extract::restore_dir(
                self.documents.restore_root.as_deref(),
                dir,
                !options.dry_run,
            )?),
            None => None,
        };
        tracing::warn!(backup_id = %record.backup_id, target = %redact_url(&target_url), by = %by.label(), dry_run = options.dry_run, "restore requested");

        let _ = updates.try_send(RestoreUpdate::phase(
            RestorePhase::Verifying,
            "verifying the stored file",
        ));
        let (target, counts) = if options.dry_run {
            // A dry run is the full check: structure, decryption and trailer too.
            let target = crate::source::open_target(&target_url).await?;
            let stream = self.storage.read(&record.object_name, 0).await?;
            let (header, counts, sha, size) =
                check_file(stream, &self.codec.keys, record.encrypted()).await?;
            check_against_record(&record, &sha, size)?;
            check_header_names(&record, &header)?;
            let _ = updates.try_send(RestoreUpdate::phase(
                RestorePhase::CheckingSchema,
                "comparing schemas",
            ));
            check_target(&header, target.as_ref()).await?;
            (target, counts)
        } else {
            let target = self.precheck(&record, &target_url, &updates).await?;
            (target, record.row_counts.clone())
        };
        let mut outcome = RestoreOutcome {
            backup_id: record.backup_id.clone(),
            target: redact_url(&target_url),
            dry_run: options.dry_run,
            safety_backup_id: None,
            row_counts: counts.clone(),
            documents_written: 0,
            documents_dir: documents_dir.as_ref().map(|d| d.display().to_string()),
        };
        if options.dry_run {
            let _ = updates.try_send(RestoreUpdate::phase(
                RestorePhase::DryRunPassed,
                "dry run passed; nothing was written",
            ));
            return Ok(outcome);
        }

        if !options.skip_safety_backup {
            let _ = updates.try_send(RestoreUpdate::phase(
                RestorePhase::SafetyBackup,
                "backing up the target first",
            ));
            let safety = self
                .create_from(
                    &target_url,
                    CreateRequest {
                        description: format!("safety backup before restoring {}", record.backup_id),
                        include_documents: Some(false),
                        ..Default::default()
                    },
                    by,
                )
                .await
                .map_err(|e| {
                    e.context("safety backup of the target failed; nothing was restored")
                })?;
            let mut update =
                RestoreUpdate::phase(RestorePhase::SafetyBackup, "safety backup completed");
            update.safety_backup_id = safety.backup_id.clone();
            let _ = updates.try_send(update);
            outcome.safety_backup_id = Some(safety.backup_id);
        }

        if let Some(dir) = &documents_dir {
            // Before the database changes: a failure here leaves it as it was.
            let _ = updates.try_send(RestoreUpdate::phase(
                RestorePhase::Loading,
                "writing documents",
            ));
            let stream = self.storage.read(&record.object_name, 0).await?;
            let plain = decode(stream, &self.codec.keys, record.encrypted()).await?;
            let report = crate::documents::extract::extract_documents(plain, dir)
                .await
                .map_err(|e| e.context("writing documents; nothing was restored"))?;
            outcome.documents_written = report.documents;
            tracing::info!(backup_id = %record.backup_id, documents = report.documents, "documents written");
        }

        let stream = self.storage.read(&record.object_name, 0).await?;
        let loaded = load(
            target.as_ref(),
            stream,
            &self.codec.keys,
            Some(record.sha256.clone()),
            &updates,
            &counts,
        )
        .await?;
        outcome.row_counts = loaded;
        let mut done = RestoreUpdate::phase(RestorePhase::Committed, "restore committed");
        done.safety_backup_id = outcome.safety_backup_id.clone().unwrap_or_default();
        done.tables_done = outcome.row_counts.len() as u32;
        done.tables_total = done.tables_done;
        let _ = updates.try_send(done);
        tracing::warn!(backup_id = %record.backup_id, target = %outcome.target, "restore committed");
        Ok(outcome)
    }

    /// What a restore checks before it writes anything, in one raw read plus
    /// a header read: every stored byte against the catalog's SHA-256 (the
    /// hash taken when the file was written, so a flipped, missing or added
    /// byte anywhere is caught), the format and header, and the target's
    /// schema; the hash and the schema check run side by side. Decryption,
    /// structure, row counts and the file's own trailer are checked again by
    /// the load itself before COMMIT, where any failure rolls everything back.
    async fn precheck(
        &self,
        record: &BackupRecord,
        target_url: &str,
        updates: &Updates,
    ) -> Result<Arc<dyn Target>> {
        let whole_file = async {
            let stream = self.storage.read(&record.object_name, 0).await?;
            let (sha, size) = hash_all(stream).await?;
            check_against_record(record, &sha, size)
        };
        let target_schema = async {
            let stream = self.storage.read(&record.object_name, 0).await?;
            let header = read_header(stream, &self.codec.keys, record.encrypted()).await?;
            check_header_names(record, &header)?;
            let _ = updates.try_send(RestoreUpdate::phase(
                RestorePhase::CheckingSchema,
                "comparing schemas while the file is verified",
            ));
            let target = crate::source::open_target(target_url).await?;
            check_target(&header, target.as_ref()).await?;
            Ok(target)
        };
        // Both run to the end so a damaged file is reported as such even when
        // its damaged header would also fail the schema check.
        let (whole_file, target) = tokio::join!(whole_file, target_schema);
        whole_file?;
        target
    }

    /// Re-reads a stored backup and checks it; with a scratch database, also
    /// restores it there.
    pub async fn verify(&self, raw_id: &str, scratch_url: Option<String>) -> Result<VerifyReport> {
        let record = self.get(raw_id).await?;
        if record.status != BackupStatus::Completed {
            return Err(Error::precondition(format!(
                "backup {} is {:?}; only completed backups can be verified",
                record.backup_id, record.status
            )));
        }
        let mut report = VerifyReport {
            backup_id: record.backup_id.clone(),
            ok: false,
            size: record.size,
            sha256: record.sha256.clone(),
            sha256_matches: false,
            row_counts: BTreeMap::new(),
            problems: Vec::new(),
            test_restore_performed: false,
            test_restore_ok: false,
        };
        let stream = self.storage.read(&record.object_name, 0).await?;
        let (header, counts) = match check_file(stream, &self.codec.keys, record.encrypted()).await
        {
            Ok((header, counts, sha, size)) => {
                report.sha256_matches = sha == record.sha256 && size == record.size;
                if !report.sha256_matches {
                    report.problems.push(format!(
                        "stored file has sha256 {sha} ({size} bytes), the catalog records {} ({} bytes)",
                        record.sha256, record.size
                    ));
                }
                if let Err(e) = check_header_names(&record, &header) {
                    report.problems.push(e.message);
                }
                (Some(header), counts)
            }
            Err(e) => {
                report.problems.push(e.message);
                (None, BTreeMap::new())
            }
        };
        if header.is_some() && counts != record.row_counts {
            report
                .problems
                .push("row counts in the file differ from those recorded at backup time".into());
        }
        report.row_counts = counts.clone();
        if let (Some(url), Some(_)) = (scratch_url.filter(|u| !u.is_empty()), &header) {
            // A test restore replaces the scratch database's rows: never the
            // service's own database, and never beside a real restore.
            if url == self.database_url {
                return Err(Error::invalid(
                    "scratch_database_url is the service's own database; give a scratch database",
                ));
            }
            self.check_restore_target(&url)?;
            let _running = self
                .restore_lock
                .try_lock()
                .map_err(|_| Error::precondition("a restore is running; verify again later"))?;
            report.test_restore_performed = true;
            let result = async {
                let target = crate::source::open_target(&url).await?;
                let stream = self.storage.read(&record.object_name, 0).await?;
                let (sink, _drain) = tokio::sync::mpsc::channel(1);
                load(
                    target.as_ref(),
                    stream,
                    &self.codec.keys,
                    Some(record.sha256.clone()),
                    &sink,
                    &counts,
                )
                .await
            }
            .await;
            match result {
                Ok(_) => report.test_restore_ok = true,
                Err(e) => report
                    .problems
                    .push(format!("test restore failed: {}", e.message)),
            }
        }
        report.ok = report.problems.is_empty();
        Ok(report)
    }
}

/// Restores a downloaded file (offline: no server, no catalog).
pub async fn restore_file(
    path: &std::path::Path,
    target_url: &str,
    dry_run: bool,
) -> Result<RestoreOutcome> {
    let open = || async {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::invalid(format!("cannot open {}: {e}", path.display())))?;
        let stream: ByteStream = Box::pin(
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map(|r| r.map_err(|e| Error::storage_io("reading backup file", &e))),
        );
        Ok::<_, Error>(stream)
    };
    let keys = keyring_from_env()?;
    let (header, counts, sha, _) = check_file(open().await?, &keys, false).await?;
    let target = crate::source::open_target(target_url).await?;
    check_target(&header, target.as_ref()).await?;
    let mut outcome = RestoreOutcome {
        backup_id: header.backup_id.clone(),
        target: redact_url(target_url),
        dry_run,
        safety_backup_id: None,
        row_counts: counts.clone(),
        documents_written: 0,
        documents_dir: None,
    };
    if !dry_run {
        let (sink, _drain) = tokio::sync::mpsc::channel(1);
        outcome.row_counts = load(
            target.as_ref(),
            open().await?,
            &keys,
            Some(sha),
            &sink,
            &counts,
        )
        .await?;
    }
    Ok(outcome)
}

/// Keys for offline commands, resolved as `serve` resolves them.
pub fn keyring_from_env() -> Result<Keyring> {
    crate::keyring::KeySettings::from_env()?.keyring()
}

/// A local file as a byte stream.
pub async fn open_file(path: &std::path::Path) -> Result<ByteStream> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::invalid(format!("cannot open {}: {e}", path.display())))?;
    Ok(Box::pin(
        tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .map(|r| r.map_err(|e| Error::storage_io("reading backup file", &e))),
    ))
}

/// Checks a downloaded backup file whole (structure, every document's
/// sha256, the trailer), then writes its documents into `dir`. Nothing is
/// written from a file that does not verify.
pub async fn extract_file(
    path: &std::path::Path,
    dir: &std::path::Path,
) -> Result<crate::documents::extract::ExtractReport> {
    let keys = keyring_from_env()?;
    check_file(open_file(path).await?, &keys, false).await?;
    let plain = decode(open_file(path).await?, &keys, false).await?;
    crate::documents::extract::extract_documents(plain, dir).await
}
