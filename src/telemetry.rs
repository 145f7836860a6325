//! Prometheus metrics and the audit trail. Both transports report through
//! these functions, so names and labels are defined once.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::backup::Principal;
use crate::backup::record::{BackupRecord, BackupStatus, Trigger};
use crate::error::{Error, Result};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls reuse it.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let seconds = [
                0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
            ];
            let bytes = [1e3, 1e4, 1e5, 1e6, 1e7, 5e7, 1e8, 5e8, 1e9, 5e9, 1e10, 5e10];
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), &bytes))
                .and_then(|b| b.install_recorder());
            match built {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

const TRIGGERS: [&str; 2] = ["manual", "scheduled"];

/// HELP text for every metric, and counters present at zero from the start
/// (so `rate()` and alerts see them before the first event).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "backup_service_backups_created_total",
        "Backups that completed, by trigger."
    );
    describe_counter!(
        "backup_service_backups_failed_total",
        "Backups that failed, by trigger."
    );
    describe_histogram!(
        "backup_service_backup_duration_seconds",
        Unit::Seconds,
        "Time a completed backup took, by trigger."
    );
    describe_histogram!(
        "backup_service_backup_size_bytes",
        Unit::Bytes,
        "Stored size of completed backups, by trigger."
    );
    describe_counter!(
        "backup_service_storage_uploaded_bytes_total",
        Unit::Bytes,
        "Bytes of completed backups written to storage."
    );
    describe_gauge!(
        "backup_service_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time the newest completed backup finished."
    );
    describe_counter!(
        "backup_service_pruned_backups_total",
        "Backups deleted by retention."
    );
    describe_counter!(
        "backup_service_prune_failures_total",
        "Backups retention failed to delete."
    );
    describe_counter!(
        "backup_service_downloaded_bytes_total",
        Unit::Bytes,
        "Bytes of backup files sent to clients (gRPC and REST)."
    );
    describe_counter!(
        "backup_service_requests_total",
        "Finished requests by transport, method, route (HTTP) and status code."
    );
    describe_histogram!(
        "backup_service_request_duration_seconds",
        Unit::Seconds,
        "Request handling time by transport, method and route (HTTP)."
    );
    for trigger in TRIGGERS {
        metrics::counter!("backup_service_backups_created_total", "trigger" => trigger)
            .increment(0);
        metrics::counter!("backup_service_backups_failed_total", "trigger" => trigger).increment(0);
    }
    for name in [
        "backup_service_storage_uploaded_bytes_total",
        "backup_service_pruned_backups_total",
        "backup_service_prune_failures_total",
        "backup_service_downloaded_bytes_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// The newest completed backup finished at `unix_secs` (from the catalog at
/// start, so the gauge survives a restart).
pub fn last_success_at(unix_secs: i64) {
    metrics::gauge!("backup_service_last_success_timestamp_seconds").set(unix_secs as f64);
}

fn trigger_label(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Manual => "manual",
        Trigger::Scheduled => "scheduled",
    }
}

/// A backup job ended.
pub fn backup_finished(record: &BackupRecord, took: Duration) {
    let trigger = trigger_label(record.trigger);
    match record.status {
        BackupStatus::Completed => {
            metrics::counter!("backup_service_backups_created_total", "trigger" => trigger)
                .increment(1);
            metrics::histogram!("backup_service_backup_duration_seconds", "trigger" => trigger)
                .record(took.as_secs_f64());
            metrics::histogram!("backup_service_backup_size_bytes", "trigger" => trigger)
                .record(record.size as f64);
            metrics::counter!("backup_service_storage_uploaded_bytes_total").increment(record.size);
            last_success_at(chrono::Utc::now().timestamp());
        }
        _ => {
            metrics::counter!("backup_service_backups_failed_total", "trigger" => trigger)
                .increment(1);
        }
    }
}

/// Retention deleted `deleted` backups and failed to delete `failed`.
pub fn pruned(deleted: usize, failed: usize) {
    metrics::counter!("backup_service_pruned_backups_total").increment(deleted as u64);
    metrics::counter!("backup_service_prune_failures_total").increment(failed as u64);
}

/// Bytes sent to a client from a backup file.
pub fn downloaded(bytes: u64) {
    metrics::counter!("backup_service_downloaded_bytes_total").increment(bytes);
}

/// One HTTP request: `method` and `route` come from fixed sets (known
/// methods and route templates, else `other`), never from raw input.
pub fn http_request_finished(method: &'static str, route: &str, code: &str, took: Duration) {
    metrics::counter!(
        "backup_service_requests_total",
        "transport" => "http", "method" => method, "route" => route.to_string(),
        "code" => code.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "backup_service_request_duration_seconds",
        "transport" => "http", "method" => method, "route" => route.to_string()
    )
    .record(took.as_secs_f64());
}

/// One RPC, by method name (a fixed set) and status code.
pub fn request_finished(transport: &'static str, method: &str, code: &str, took: Duration) {
    metrics::counter!(
        "backup_service_requests_total",
        "transport" => transport, "method" => method.to_string(), "code" => code.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "backup_service_request_duration_seconds",
        "transport" => transport, "method" => method.to_string()
    )
    .record(took.as_secs_f64());
}

/// What an admin did, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Authenticate,
    Create,
    List,
    Get,
    Download,
    Delete,
    Restore,
    Verify,
    Maintenance,
    /// Retention applied (or dry-run) on demand or after a scheduled backup.
    Prune,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Authenticate => "authenticate",
            Action::Create => "create",
            Action::List => "list",
            Action::Get => "get",
            Action::Download => "download",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Verify => "verify",
            Action::Maintenance => "maintenance",
            Action::Prune => "prune",
        }
    }

    /// Reads are not audited unless refused; changes and data access always are.
    fn always(self) -> bool {
        !matches!(self, Action::List | Action::Get)
    }
}

/// Emits one audit event on the `audit` target: who, what, which backup,
/// from where, and how it ended.
pub fn audit<T>(
    action: Action,
    who: Option<&Principal>,
    backup_id: &str,
    peer: Option<std::net::SocketAddr>,
    outcome: &Result<T>,
) {
    if !action.always() && outcome.is_ok() {
        return;
    }
    let (user_id, email, role) = who
        .map(|p| (p.user_id.as_str(), p.email.as_str(), p.role.as_str()))
        .unwrap_or(("", "", ""));
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    match outcome {
        Ok(_) => tracing::info!(
            target: "audit", action = action.as_str(), user_id, email, role, backup_id, peer, at,
            outcome = "ok", "admin action"
        ),
        Err(Error { code, message }) => tracing::warn!(
            target: "audit", action = action.as_str(), user_id, email, role, backup_id, peer, at,
            outcome = "refused", code = crate::api::status::code_name(*code), reason = %message,
            "admin action"
        ),
    }
}
