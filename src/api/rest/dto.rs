//! The JSON the REST gateway speaks, with the documented keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::backup::ListPage;
use crate::backup::record::{BackupRecord, BackupStatus, Trigger, format_time};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBackupBody {
    /// Optional description, at most 1,000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether to include uploaded documents (default true).
    #[serde(default)]
    pub include_documents: Option<bool>,
    /// Answer 202 at once instead of waiting for completion.
    #[serde(default, rename = "async")]
    pub run_async: Option<bool>,
    /// none, gzip or zstd (default: the server's setting).
    #[serde(default)]
    #[schema(pattern = r"^(|none|gzip|gz|zstd|zst)$", example = "zstd")]
    pub compression: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    pub rows_done: u64,
    pub bytes_written: u64,
    pub tables_done: u32,
    pub tables_total: u32,
    pub current_table: String,
}

/// One backup, with the keys the API page documents first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupView {
    /// Unique backup identifier, e.g. backup_2026-03-11T12-00-00-000Z.
    pub backup_id: String,
    pub filename: String,
    /// File size in bytes.
    pub size: u64,
    /// Storage URL of the file; empty where the storage has none.
    pub cloudinary_url: String,
    /// ISO 8601 UTC creation time.
    pub created_at: String,
    pub description: String,
    #[schema(example = "COMPLETED")]
    pub status: String,
    pub error: String,
    pub sha256: String,
    pub include_documents: bool,
    pub row_counts: BTreeMap<String, u64>,
    pub progress: ProgressView,
    pub completed_at: Option<String>,
    /// manual or scheduled.
    pub trigger: String,
    /// The schedule slot a scheduled backup was taken for (absent for manual ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    pub source_engine: String,
    pub source_version: String,
    pub format_version: u32,
    /// none, gzip or zstd.
    pub compression: String,
    /// Key id of the encryption key; empty when not encrypted.
    pub encryption_key_id: String,
    /// Media type of the stored file.
    pub content_type: String,
    /// Uploaded documents stored in the file.
    pub document_count: u64,
    /// Their bytes, before base64.
    pub document_bytes: u64,
    /// Documents that could not be fetched; the backup completed without them.
    pub warning_count: u64,
    /// Those documents with the reason (at most 1,000; the file lists all).
    pub missing_documents: Vec<MissingDocumentView>,
}

/// A document a backup could not fetch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MissingDocumentView {
    /// Its URL without query string or credentials (signed URLs keep tokens
    /// there); the backup file has the exact URL.
    pub url: String,
    /// HTTP status, refused host, too large, timeout, ...
    pub reason: String,
}

impl From<BackupRecord> for BackupView {
    fn from(r: BackupRecord) -> Self {
        let content_type = r.content_type().to_string();
        Self {
            backup_id: r.backup_id,
            filename: r.filename,
            size: r.size,
            cloudinary_url: r.cloudinary_url,
            created_at: format_time(&r.created_at),
            description: r.description,
            status: match r.status {
                BackupStatus::Pending => "PENDING",
                BackupStatus::Running => "RUNNING",
                BackupStatus::Completed => "COMPLETED",
                BackupStatus::Failed => "FAILED",
            }
            .into(),
            error: r.error,
            sha256: r.sha256,
            include_documents: r.include_documents,
            row_counts: r.row_counts,
            progress: ProgressView {
                rows_done: r.progress.rows_done,
                bytes_written: r.progress.bytes_written,
                tables_done: r.progress.tables_done,
                tables_total: r.progress.tables_total,
                current_table: r.progress.current_table,
            },
            completed_at: r.completed_at.as_ref().map(format_time),
            scheduled_for: r.scheduled_for.as_ref().map(format_time),
            trigger: match r.trigger {
                Trigger::Manual => "manual",
                Trigger::Scheduled => "scheduled",
            }
            .into(),
            source_engine: r.source_engine,
            source_version: r.source_version,
            format_version: r.format_version,
            content_type,
            compression: r.compression.as_str().to_string(),
            encryption_key_id: r.encryption_key_id,
            document_count: r.document_count,
            document_bytes: r.document_bytes,
            warning_count: r.warning_count,
            missing_documents: r
                .missing_documents
                .into_iter()
                .map(|m| MissingDocumentView {
                    url: m.url,
                    reason: m.reason,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudinaryStatsView {
    /// Bytes held by completed backups.
    pub total_size: u64,
    /// Number of completed backups.
    pub count: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListView {
    pub backups: Vec<BackupView>,
    pub total: u64,
    pub cloudinary_stats: CloudinaryStatsView,
    /// Pass as pageToken for the next page; empty on the last page.
    pub next_page_token: String,
}

impl From<ListPage> for ListView {
    fn from(page: ListPage) -> Self {
        Self {
            backups: page.backups.into_iter().map(BackupView::from).collect(),
            total: page.total,
            cloudinary_stats: CloudinaryStatsView {
                total_size: page.completed_bytes,
                count: page.completed_count,
            },
            next_page_token: page.next_page_token,
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 1,000 (more is refused with 400); absent or 0: 100.
    #[param(minimum = 0, maximum = 1000, example = 20)]
    pub page_size: Option<u32>,
    /// nextPageToken of the previous page.
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedView {
    pub backup_id: String,
    pub deleted: bool,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    /// ok, ready or unavailable.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreBody {
    /// Restore into this database instead of the configured one.
    #[serde(default)]
    pub target_url: Option<String>,
    /// Verify and compare schemas only.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Skip the safety backup of the target.
    #[serde(default)]
    pub skip_safety_backup: Option<bool>,
    /// Also write the backup's documents (and index.json) into this
    /// directory on the server; must be inside DOCUMENT_RESTORE_ROOT
    /// (relative paths are taken relative to it).
    #[serde(default)]
    pub documents_dir: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreView {
    pub backup_id: String,
    pub restored: bool,
    pub dry_run: bool,
    /// The target, password masked.
    pub target: String,
    pub safety_backup_id: Option<String>,
    pub row_counts: BTreeMap<String, u64>,
    /// Documents written into documentsDir.
    pub documents_written: u64,
    /// The resolved documents directory, when one was given.
    pub documents_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifyBody {
    /// A scratch database with the same tables, for a full test restore.
    #[serde(default)]
    pub scratch_database_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyView {
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceBody {
    pub enabled: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceView {
    pub enabled: bool,
    pub reason: String,
    pub changed_at: Option<String>,
    pub changed_by: String,
}

impl From<crate::backup::maintenance::MaintenanceState> for MaintenanceView {
    fn from(m: crate::backup::maintenance::MaintenanceState) -> Self {
        Self {
            enabled: m.enabled,
            reason: m.reason,
            changed_at: m.changed_at.as_ref().map(format_time),
            changed_by: m.changed_by,
        }
    }
}

impl From<crate::backup::restore::VerifyReport> for VerifyView {
    fn from(r: crate::backup::restore::VerifyReport) -> Self {
        Self {
            backup_id: r.backup_id,
            ok: r.ok,
            size: r.size,
            sha256: r.sha256,
            sha256_matches: r.sha256_matches,
            row_counts: r.row_counts,
            problems: r.problems,
            test_restore_performed: r.test_restore_performed,
            test_restore_ok: r.test_restore_ok,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneBody {
    /// List what would be deleted; delete nothing.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionView {
    /// False when no rule is set: nothing is ever pruned.
    pub enabled: bool,
    /// Completed backups younger than this are kept; null = no maximum age.
    #[schema(example = "30d")]
    pub max_age: Option<String>,
    pub max_age_seconds: u64,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    /// Days, weeks and months are read in this IANA time zone.
    pub time_zone: String,
    pub summary: String,
}

impl From<&crate::backup::retention::RetentionPolicy> for RetentionView {
    fn from(p: &crate::backup::retention::RetentionPolicy) -> Self {
        Self {
            enabled: p.is_enabled(),
            max_age: p.max_age.map(crate::backup::retention::format_age),
            max_age_seconds: p.max_age.map(|a| a.as_secs()).unwrap_or(0),
            keep_last: p.keep_last,
            keep_daily: p.keep_daily,
            keep_weekly: p.keep_weekly,
            keep_monthly: p.keep_monthly,
            time_zone: p.time_zone.name().to_string(),
            summary: p.describe(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeptView {
    pub backup_id: String,
    /// newest, last, daily, weekly, monthly, max-age, running, failed or no-policy.
    pub reasons: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneFailureView {
    pub backup_id: String,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneView {
    pub dry_run: bool,
    /// Deleted now (empty on a dry run).
    pub deleted: Vec<String>,
    /// What a real run would delete (dry run only).
    pub would_delete: Vec<String>,
    /// Kept, newest first, with the rules that keep each.
    pub kept: Vec<KeptView>,
    /// Selected backups whose deletion failed; the others were still deleted.
    pub failures: Vec<PruneFailureView>,
    pub retention: RetentionView,
}

impl From<crate::backup::retention::PruneReport> for PruneView {
    fn from(r: crate::backup::retention::PruneReport) -> Self {
        Self {
            dry_run: r.dry_run,
            retention: RetentionView::from(&r.policy),
            deleted: r.deleted,
            would_delete: r.would_delete,
            kept: r
                .kept
                .into_iter()
                .map(|k| KeptView {
                    backup_id: k.backup_id,
                    reasons: k.reasons.iter().map(|r| r.as_str().to_string()).collect(),
                })
                .collect(),
            failures: r
                .failures
                .into_iter()
                .map(|f| PruneFailureView {
                    backup_id: f.backup_id,
                    error: f.error,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// False when BACKUP_SCHEDULE is unset.
    pub enabled: bool,
    /// Cron expression: 5 fields, or 6 with seconds first.
    #[schema(example = "0 * * * *")]
    pub expression: String,
    #[schema(example = "UTC")]
    pub time_zone: String,
    /// The next slot (ISO 8601 UTC); null when disabled.
    pub next_run_at: Option<String>,
    /// The slot of the last scheduled run, by any replica.
    pub last_run_at: Option<String>,
    /// RUNNING, COMPLETED, FAILED or SKIPPED; null when none ran yet.
    pub last_result: Option<String>,
    pub last_backup_id: Option<String>,
    /// Why the last run failed or was skipped.
    pub last_message: Option<String>,
    pub last_finished_at: Option<String>,
    /// Whether a slot missed while every replica was down runs at start.
    pub run_missed: bool,
    pub retention: RetentionView,
}

impl From<crate::backup::schedule::ScheduleStatus> for ScheduleView {
    fn from(s: crate::backup::schedule::ScheduleStatus) -> Self {
        let last = s.last_run.as_ref();
        Self {
            enabled: s.enabled,
            expression: s.expression,
            time_zone: s.time_zone,
            next_run_at: s.next_run_at.as_ref().map(format_time),
            last_run_at: last.map(|l| format_time(&l.slot)),
            last_result: last.map(|l| l.result.as_str().to_string()),
            last_backup_id: last
                .map(|l| l.backup_id.clone())
                .filter(|id| !id.is_empty()),
            last_message: last.map(|l| l.message.clone()).filter(|m| !m.is_empty()),
            last_finished_at: last.and_then(|l| l.finished_at.as_ref()).map(format_time),
            run_missed: s.run_missed,
            retention: RetentionView::from(&s.retention),
        }
    }
}

/// The backup file's bytes, as stored (documented as a binary file).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct BackupFile(pub Vec<u8>);

/// A completed backup record, as the create and get operations show it.
pub fn backup_example() -> serde_json::Value {
    serde_json::json!({
        "backupId": "backup_2026-03-11T12-00-00-000Z",
        "filename": "backup_2026-03-11T12-00-00-000Z.json.zst",
        "size": 524288, "cloudinaryUrl": "", "createdAt": "2026-03-11T12:00:00Z",
        "description": "Pre-deployment backup", "status": "COMPLETED", "error": "",
        "sha256": "41c78b516fdd0ef2ed5e4103cb1af95fb89e93c3ff81a8873a9e6109872e139b",
        "includeDocuments": true, "rowCounts": {"member": 20000},
        "progress": {"rowsDone": 20000, "bytesWritten": 524288, "tablesDone": 1,
                     "tablesTotal": 1, "currentTable": ""},
        "completedAt": "2026-03-11T12:00:02.512Z", "trigger": "manual",
        "sourceEngine": "postgres", "sourceVersion": "16.4", "formatVersion": 1,
        "compression": "zstd", "encryptionKeyId": "", "contentType": "application/zstd",
        "documentCount": 0, "documentBytes": 0, "warningCount": 0, "missingDocuments": []
    })
}

/// One page of the list operation.
pub fn list_example() -> serde_json::Value {
    serde_json::json!({
        "backups": [backup_example()],
        "total": 1,
        "cloudinaryStats": {"totalSize": 524288, "count": 1},
        "nextPageToken": ""
    })
}
