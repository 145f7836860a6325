//! The domain core: creating, listing, reading, downloading and deleting
//! backups. Transports call `Backups`; nothing here knows gRPC or HTTP.

pub mod catalog;
pub mod id;
pub mod job;
pub mod maintenance;
pub mod record;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod targets;

use std::sync::Arc;

use base64::Engine;

use crate::error::{Error, Result};
use crate::source::Source;
use crate::storage::{ByteStream, Storage};
use catalog::Catalog;
use id::{BackupId, IdGenerator};
use record::{BackupRecord, BackupStatus, Trigger};

pub const MAX_DESCRIPTION_CHARS: usize = 1000;
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1000;
/// More would starve the connection pool (and the health check) on a small database server.
pub const MAX_CONCURRENT_BACKUPS: usize = 2;

/// Who asked: filled in from the verified token by the transport.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    pub user_id: String,
    pub email: String,
    pub role: String,
}

impl Principal {
    /// A short name for records and logs.
    pub fn label(&self) -> String {
        if !self.email.is_empty() {
            self.email.clone()
        } else if !self.user_id.is_empty() {
            self.user_id.clone()
        } else {
            self.role.clone()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub description: String,
    pub include_documents: Option<bool>,
    /// Return at once (status RUNNING) instead of waiting.
    pub run_async: bool,
    pub trigger: Trigger,
    /// None: the server's default.
    pub compression: Option<crate::format::codec::Compression>,
    /// The schedule slot a scheduled backup is taken for.
    pub scheduled_for: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone)]
pub struct ListPage {
    pub backups: Vec<BackupRecord>,
    pub total: u64,
    /// Completed backups: count and bytes.
    pub completed_count: u64,
    pub completed_bytes: u64,
    pub next_page_token: String,
}

pub struct Download {
    pub record: BackupRecord,
    pub offset: u64,
    pub stream: ByteStream,
}

/// Everything the core is built from; `app` assembles it from the settings.
pub struct CoreParts {
    pub source: Arc<dyn Source>,
    pub storage: Arc<dyn Storage>,
    /// The configured database: the default restore target.
    pub database_url: String,
    /// Compression default and encryption keys.
    pub codec: crate::format::codec::CodecSettings,
    pub documents: crate::documents::DocumentSettings,
    pub schedule: schedule::ScheduleSettings,
    /// Servers besides the configured database's that restores may write to.
    pub restore_allowed_hosts: Vec<String>,
}

pub struct Backups {
    source: Arc<dyn Source>,
    storage: Arc<dyn Storage>,
    catalog: Catalog,
    maintenance: maintenance::Maintenance,
    /// The configured database: the default restore target.
    database_url: String,
    /// Compression default and encryption keys.
    codec: crate::format::codec::CodecSettings,
    restore_lock: tokio::sync::Mutex<()>,
    /// Backups that may run at once; more wait their turn (RUNNING, 0 rows).
    backup_slots: tokio::sync::Semaphore,
    ids: IdGenerator,
    /// includeDocuments: columns, fetch limits, the SSRF guard.
    documents: Arc<crate::documents::DocumentSettings>,
    /// The document fetcher (one HTTP client for every backup); None when
    /// no document columns are configured.
    fetcher: Option<Arc<crate::documents::fetch::Fetcher>>,
    /// Schedule and retention settings, and the slot lease.
    automation: Arc<schedule::Automation>,
    /// Servers besides the configured database's that restores may write to.
    restore_allowed_hosts: Vec<String>,
}

impl Backups {
    /// Builds the core and rebuilds the catalog from storage.
    pub async fn open(parts: CoreParts) -> Result<Arc<Self>> {
        let CoreParts {
            source,
            storage,
            database_url,
            codec,
            documents,
            schedule,
            restore_allowed_hosts,
        } = parts;
        let documents = Arc::new(documents);
        let fetcher = if documents.columns.is_empty() {
            None
        } else {
            Some(Arc::new(crate::documents::fetch::Fetcher::new(
                documents.clone(),
            )?))
        };
        let catalog = Catalog::load(storage.as_ref()).await?;
        let maintenance = maintenance::Maintenance::load(storage.as_ref()).await?;
        let automation = Arc::new(schedule::Automation::new(schedule, source.slot_lease()));
        Ok(Arc::new(Self {
            source,
            storage,
            catalog,
            maintenance,
            database_url,
            codec,
            documents,
            fetcher,
            restore_lock: tokio::sync::Mutex::new(()),
            backup_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_BACKUPS),
            ids: IdGenerator::default(),
            automation,
            restore_allowed_hosts,
        }))
    }

    /// Schedule and retention settings (for the scheduler task).
    pub fn automation(&self) -> &Arc<schedule::Automation> {
        &self.automation
    }

    /// Maintenance mode as storage holds it now (replicas share it).
    pub async fn maintenance(&self) -> maintenance::MaintenanceState {
        self.maintenance.refresh(self.storage.as_ref()).await
    }

    pub async fn set_maintenance(
        &self,
        enabled: bool,
        reason: String,
        by: &Principal,
    ) -> Result<maintenance::MaintenanceState> {
        self.maintenance
            .set(self.storage.as_ref(), enabled, reason, by.label())
            .await
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// Starts a backup. Unless `run_async`, waits for it and returns the
    /// finished record; the job finishes even if this future is dropped.
    pub async fn create(
        self: &Arc<Self>,
        request: CreateRequest,
        by: &Principal,
    ) -> Result<BackupRecord> {
        self.maintenance().await;
        self.maintenance.refuse_while_on("created")?;
        self.start_backup(self.source.clone(), request, by).await
    }

    /// Backs up another database (a restore target) into this service's storage.
    pub(crate) async fn create_from(
        self: &Arc<Self>,
        database_url: &str,
        request: CreateRequest,
        by: &Principal,
    ) -> Result<BackupRecord> {
        let source = if database_url == self.database_url {
            self.source.clone()
        } else {
            crate::source::open(database_url, 2).await?
        };
        self.start_backup(source, request, by).await
    }

    async fn start_backup(
        self: &Arc<Self>,
        source: Arc<dyn Source>,
        request: CreateRequest,
        by: &Principal,
    ) -> Result<BackupRecord> {
        let chars = request.description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(Error::invalid(format!(
                "description is {chars} characters long; at most {MAX_DESCRIPTION_CHARS} are allowed"
            )));
        }
        let id = self.ids.next(|id| self.catalog.contains(id.as_str()));
        let mut record = BackupRecord::new(
            &id,
            request.description,
            request.include_documents.unwrap_or(true),
        );
        record.trigger = request.trigger;
        record.scheduled_for = request.scheduled_for;
        record.created_by = by.label();
        record.status = BackupStatus::Running;
        record.compression = request
            .compression
            .unwrap_or(self.codec.default_compression);
        if let Some(key) = &self.codec.keys.current {
            record.encryption_key_id = key.id.clone();
        }
        record.filename = format!(
            "{id}.json{}{}",
            record.compression.extension(),
            if record.encryption_key_id.is_empty() {
                ""
            } else {
                ".enc"
            }
        );
        record.object_name = record.filename.clone();
        let done = job::spawn(self.clone(), source, record.clone());
        if request.run_async {
            return self.get(id.as_str()).await;
        }
        let finished = done
            .await
            .map_err(|_| Error::internal("backup job ended unexpectedly"))?;
        if finished.status == BackupStatus::Failed {
            return Err(Error::internal(format!(
                "backup {} failed: {}",
                finished.backup_id, finished.error
            )));
        }
        Ok(finished)
    }

    pub async fn get(&self, raw_id: &str) -> Result<BackupRecord> {
        let id = BackupId::parse(raw_id)?;
        self.catalog
            .get(id.as_str())
            .ok_or_else(|| Error::not_found(format!("backup {id} not found")))
    }

    pub async fn list(&self, page_size: usize, page_token: &str) -> Result<ListPage> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let before = if page_token.is_empty() {
            None
        } else {
            Some(decode_page_token(page_token)?)
        };
        let (backups, more) = self
            .catalog
            .page(before.as_ref().map(|id| id.as_str()), size);
        let next_page_token = match (more, backups.last()) {
            (true, Some(last)) => encode_page_token(&last.backup_id),
            _ => String::new(),
        };
        let stats = self.catalog.stats();
        Ok(ListPage {
            backups,
            total: stats.total,
            completed_count: stats.completed,
            completed_bytes: stats.completed_bytes,
            next_page_token,
        })
    }

    /// Removes a backup's manifest, then its data.
    pub async fn delete(&self, raw_id: &str) -> Result<BackupRecord> {
        let id = BackupId::parse(raw_id)?;
        self.maintenance().await;
        self.maintenance.refuse_while_on("deleted")?;
        let record = self
            .catalog
            .get(id.as_str())
            .ok_or_else(|| Error::not_found(format!("backup {id} not found")))?;
        if matches!(record.status, BackupStatus::Running | BackupStatus::Pending) {
            return Err(Error::precondition(format!(
                "backup {id} is still running; delete it once it has finished"
            )));
        }
        // Manifest first: a data object left without one is cleaned at the next start.
        ignore_missing(self.storage.delete(&catalog::manifest_name(&id)).await)?;
        self.catalog.remove(id.as_str());
        ignore_missing(self.storage.delete(&record.object_name).await)?;
        tracing::info!(backup_id = %id, "backup deleted");
        Ok(record)
    }

    /// A backup that exists and is completed, so it can be downloaded.
    pub async fn downloadable(&self, raw_id: &str) -> Result<BackupRecord> {
        let record = self.get(raw_id).await?;
        if record.status != BackupStatus::Completed {
            return Err(Error::precondition(format!(
                "backup {} is {:?}, not COMPLETED; only completed backups can be downloaded",
                record.backup_id, record.status
            )));
        }
        Ok(record)
    }

    /// Opens a completed backup's bytes from `offset`.
    pub async fn download(&self, raw_id: &str, offset: u64) -> Result<Download> {
        let record = self.downloadable(raw_id).await?;
        if offset > record.size {
            return Err(Error::invalid(format!(
                "offset {offset} is past the end of the file ({} bytes)",
                record.size
            )));
        }
        let stream = self.storage.read(&record.object_name, offset).await?;
        Ok(Download {
            record,
            offset,
            stream,
        })
    }

    /// Merges backups that other replicas sharing the storage added or
    /// removed since the catalog was loaded.
    pub async fn reload(&self) -> Result<()> {
        self.catalog
            .refresh(self.storage.as_ref())
            .await
            .map(|_| ())
    }
}

fn ignore_missing(result: Result<()>) -> Result<()> {
    match result {
        Err(e) if e.code == crate::error::ErrorCode::NotFound => Ok(()),
        other => other,
    }
}

const PAGE_TOKEN_PREFIX: &str = "before:";

fn encode_page_token(last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}{last_id}"))
}

fn decode_page_token(token: &str) -> Result<BackupId> {
    let invalid =
        || Error::invalid("invalid page token; pass nextPageToken from the previous page");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(raw).map_err(|_| invalid())?;
    let id = text.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(invalid)?;
    BackupId::parse(id).map_err(|_| invalid())
}
