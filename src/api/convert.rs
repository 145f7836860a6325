//! Domain records to protobuf messages.

use prost_types::Timestamp;

use crate::backup::maintenance::MaintenanceState;
use crate::backup::record::{BackupRecord, BackupStatus, Trigger};
use crate::backup::restore::{RestorePhase, RestoreUpdate, VerifyReport};
use crate::proto;

fn timestamp(t: &chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn status(s: BackupStatus) -> proto::BackupStatus {
    match s {
        BackupStatus::Pending => proto::BackupStatus::Pending,
        BackupStatus::Running => proto::BackupStatus::Running,
        BackupStatus::Completed => proto::BackupStatus::Completed,
        BackupStatus::Failed => proto::BackupStatus::Failed,
    }
}

pub fn backup(r: BackupRecord) -> proto::Backup {
    proto::Backup {
        backup_id: r.backup_id,
        filename: r.filename,
        size: r.size,
        cloudinary_url: r.cloudinary_url,
        created_at: Some(timestamp(&r.created_at)),
        description: r.description,
        status: status(r.status) as i32,
        error: r.error,
        sha256: r.sha256,
        include_documents: r.include_documents,
        row_counts: r.row_counts.into_iter().collect(),
        progress: Some(proto::BackupProgress {
            rows_done: r.progress.rows_done,
            bytes_written: r.progress.bytes_written,
            tables_done: r.progress.tables_done,
            tables_total: r.progress.tables_total,
            current_table: r.progress.current_table,
        }),
        completed_at: r.completed_at.as_ref().map(timestamp),
        trigger: match r.trigger {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
        }
        .to_string(),
        source_engine: r.source_engine,
        source_version: r.source_version,
        format_version: r.format_version,
    }
}

pub fn maintenance(m: MaintenanceState) -> proto::MaintenanceMode {
    proto::MaintenanceMode {
        enabled: m.enabled,
        reason: m.reason,
        changed_at: m.changed_at.as_ref().map(timestamp),
        changed_by: m.changed_by,
    }
}

pub fn restore_progress(u: RestoreUpdate) -> proto::RestoreProgress {
    let phase = match u.phase {
        RestorePhase::Verifying => proto::RestorePhase::Verifying,
        RestorePhase::CheckingSchema => proto::RestorePhase::CheckingSchema,
        RestorePhase::SafetyBackup => proto::RestorePhase::SafetyBackup,
        RestorePhase::Loading => proto::RestorePhase::Loading,
        RestorePhase::Committed => proto::RestorePhase::Committed,
        RestorePhase::DryRunPassed => proto::RestorePhase::DryRunPassed,
    };
    proto::RestoreProgress {
        phase: phase as i32,
        table: u.table,
        rows_done: u.rows_done,
        rows_total: u.rows_total,
        tables_done: u.tables_done,
        tables_total: u.tables_total,
        safety_backup_id: u.safety_backup_id,
        message: u.message,
        row_counts: Default::default(),
    }
}

pub fn verify(r: VerifyReport) -> proto::VerifyBackupResponse {
    proto::VerifyBackupResponse {
        backup_id: r.backup_id,
        ok: r.ok,
        size: r.size,
        sha256: r.sha256,
        sha256_matches: r.sha256_matches,
        row_counts: r.row_counts.into_iter().collect(),
        problems: r.problems,
        test_restore_performed: r.test_restore_performed,
        test_restore_ok: r.test_restore_ok,
    }
}
