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
    let content_type = r.content_type().to_string();
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
        scheduled_for: r.scheduled_for.as_ref().map(timestamp),
        trigger: match r.trigger {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
        }
        .to_string(),
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
            .map(|m| proto::MissingDocument {
                url: m.url,
                reason: m.reason,
            })
            .collect(),
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
        documents_written: 0,
        documents_dir: String::new(),
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

pub fn retention(p: &crate::backup::retention::RetentionPolicy) -> proto::RetentionPolicy {
    proto::RetentionPolicy {
        enabled: p.is_enabled(),
        max_age_seconds: p.max_age.map(|a| a.as_secs()).unwrap_or(0),
        keep_last: p.keep_last,
        keep_daily: p.keep_daily,
        keep_weekly: p.keep_weekly,
        keep_monthly: p.keep_monthly,
        time_zone: p.time_zone.name().to_string(),
        summary: p.describe(),
    }
}

pub fn prune(r: crate::backup::retention::PruneReport) -> proto::PruneBackupsResponse {
    proto::PruneBackupsResponse {
        dry_run: r.dry_run,
        deleted: r.deleted,
        would_delete: r.would_delete,
        kept: r
            .kept
            .into_iter()
            .map(|k| proto::KeptBackup {
                backup_id: k.backup_id,
                reasons: k.reasons.iter().map(|r| r.as_str().to_string()).collect(),
            })
            .collect(),
        failures: r
            .failures
            .into_iter()
            .map(|f| proto::PruneFailure {
                backup_id: f.backup_id,
                error: f.error,
            })
            .collect(),
        retention: Some(retention(&r.policy)),
    }
}

pub fn schedule(s: crate::backup::schedule::ScheduleStatus) -> proto::Schedule {
    let last = s.last_run.as_ref();
    proto::Schedule {
        enabled: s.enabled,
        expression: s.expression,
        time_zone: s.time_zone,
        next_run_at: s.next_run_at.as_ref().map(timestamp),
        last_run_at: last.map(|l| timestamp(&l.slot)),
        last_result: last
            .map(|l| l.result.as_str().to_string())
            .unwrap_or_default(),
        last_backup_id: last.map(|l| l.backup_id.clone()).unwrap_or_default(),
        last_message: last.map(|l| l.message.clone()).unwrap_or_default(),
        last_finished_at: last.and_then(|l| l.finished_at.as_ref()).map(timestamp),
        run_missed: s.run_missed,
        retention: Some(retention(&s.retention)),
    }
}
