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
    pub source_engine: String,
    pub source_version: String,
    pub format_version: u32,
}

impl From<BackupRecord> for BackupView {
    fn from(r: BackupRecord) -> Self {
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
            trigger: match r.trigger {
                Trigger::Manual => "manual",
                Trigger::Scheduled => "scheduled",
            }
            .into(),
            source_engine: r.source_engine,
            source_version: r.source_version,
            format_version: r.format_version,
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
    /// At most 1,000; default 100.
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
