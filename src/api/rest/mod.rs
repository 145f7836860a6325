//! The REST gateway: the documented paths over the same core as gRPC. It
//! only translates; every rule lives in the core.

pub mod download;
pub mod dto;
pub mod error;
pub mod extract;
pub mod openapi;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tracing::Instrument;

use self::download::{RangeRequest, parse_range};
use self::dto::{
    BackupView, CreateBackupBody, DeletedView, HealthView, ListQuery, ListView, MaintenanceBody,
    MaintenanceView, PruneBody, PruneView, RestoreBody, RestoreView, ScheduleView, VerifyBody,
    VerifyView,
};
use self::error::ApiError;
use self::extract::{Admin, HasGateway, StrictJson};
use crate::api::auth::Authenticator;
use crate::api::readiness::Readiness;
use crate::backup::{Backups, CreateRequest, Principal};
use crate::config::ServeConfig;
use crate::error::Error;
use crate::telemetry::{Action, audit};

pub struct Gateway {
    core: Arc<Backups>,
    auth: Arc<Authenticator>,
    readiness: Arc<Readiness>,
    body_limit: usize,
    body_timeout: Duration,
}

type Shared = Arc<Gateway>;

impl HasGateway for Shared {
    fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }
    fn body_limit(&self) -> usize {
        self.body_limit
    }
    fn body_timeout(&self) -> Duration {
        self.body_timeout
    }
}

pub fn router(
    core: Arc<Backups>,
    auth: Arc<Authenticator>,
    readiness: Arc<Readiness>,
    config: &ServeConfig,
) -> Router {
    let state: Shared = Arc::new(Gateway {
        core,
        auth,
        readiness,
        body_limit: config.http_body_limit,
        body_timeout: Duration::from_secs(config.http_body_timeout_secs.max(1)),
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/status/ready", get(ready_details))
        .route("/api/openapi.json", get(openapi::serve))
        .route("/metrics", get(metrics))
        .route("/api/backup", post(create_backup))
        .route("/api/backup/create", post(create_backup_documented))
        .route("/api/backup/list", get(list_backups))
        // Static segments win over `/api/backup/{backup_id}` in axum's router.
        .route("/api/backup/prune", post(prune_backups))
        .route("/api/backup/schedule", get(get_schedule))
        .route(
            "/api/backup/download/{backup_id}",
            get(download_backup).head(head_backup),
        )
        .route(
            "/api/backup/{backup_id}",
            get(get_backup).delete(delete_backup),
        )
        .route("/api/backup/{backup_id}/restore", post(restore_backup))
        .route("/api/backup/{backup_id}/verify", post(verify_backup))
        .route(
            "/api/maintenance",
            get(get_maintenance).put(set_maintenance),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(meter))
        .with_state(state)
}

fn span(method: &'static str, who: &Principal, backup_id: &str) -> tracing::Span {
    tracing::info_span!("http", method, principal = %who.label(), backup_id = %backup_id)
}

async fn not_found() -> ApiError {
    ApiError(Error::not_found("no such path"))
}

/// A known path with the wrong method: the same JSON error shape as every
/// other error (the router adds the `Allow` header).
async fn method_not_allowed(method: http::Method) -> Response {
    let body = error::ErrorBody {
        error: error::ErrorDetail {
            code: "METHOD_NOT_ALLOWED".into(),
            message: format!("{method} is not allowed on this path"),
        },
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "health",
    security(()),
    responses((status = 200, description = "The process lives", body = HealthView)))]
pub async fn healthz() -> Json<HealthView> {
    Json(HealthView {
        status: "ok".into(),
        message: None,
    })
}

/// Database and storage answer (a ping, a storage write and delete). Says
/// only ready or not: the reason is for admins (`/api/status/ready`).
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses(
    (status = 200, description = "Ready", body = HealthView),
    (status = 503, description = "Database or storage unavailable (no details)", body = error::ErrorBody)))]
pub async fn readyz(State(g): State<Shared>) -> Result<Json<HealthView>, ApiError> {
    match g.readiness.check().await {
        Ok(()) => Ok(Json(HealthView {
            status: "ready".into(),
            message: None,
        })),
        Err(_) => Err(ApiError(Error::unavailable("not ready"))),
    }
}

/// Readiness with the reason it fails (storage location, database error).
#[utoipa::path(get, path = "/api/status/ready", tag = "health",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Ready", body = HealthView),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 503, description = "Not ready, with the reason", body = error::ErrorBody)))]
pub async fn ready_details(
    State(g): State<Shared>,
    Admin(_who, _peer): Admin,
) -> Result<Json<HealthView>, ApiError> {
    g.readiness
        .check()
        .await
        .map_err(|e| ApiError(Error::unavailable(e.message)))?;
    Ok(Json(HealthView {
        status: "ready".into(),
        message: Some(g.core.storage().describe()),
    }))
}

async fn create(
    g: Shared,
    who: Principal,
    peer: Option<std::net::SocketAddr>,
    body: CreateBackupBody,
) -> Result<Response, ApiError> {
    let run_async = body.run_async.unwrap_or(false);
    let request = CreateRequest {
        description: body.description.unwrap_or_default(),
        include_documents: body.include_documents,
        run_async,
        compression: body
            .compression
            .as_deref()
            .filter(|c| !c.is_empty())
            .map(crate::format::codec::Compression::parse)
            .transpose()?,
        ..Default::default()
    };
    let result = g
        .core
        .create(request, &who)
        .instrument(span("CreateBackup", &who, ""))
        .await;
    let backup_id = result
        .as_ref()
        .map(|r| r.backup_id.clone())
        .unwrap_or_default();
    audit(Action::Create, Some(&who), &backup_id, peer, &result);
    let record = result?;
    if run_async {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("/api/backup/{}", record.backup_id)) {
            headers.insert(header::LOCATION, v);
        }
        return Ok((
            StatusCode::ACCEPTED,
            headers,
            Json(BackupView::from(record)),
        )
            .into_response());
    }
    Ok((StatusCode::CREATED, Json(BackupView::from(record))).into_response())
}

/// Create a backup (waits for completion unless `async`).
#[utoipa::path(post, path = "/api/backup/create", tag = "backups",
    request_body(content = CreateBackupBody, description = "Optional: an empty body means {}", example = json!({"description": "Pre-deployment backup", "includeDocuments": true})),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Backup completed", body = BackupView, example = dto::backup_example),
        (status = 202, description = "Backup started (async); Location points to the record", body = BackupView),
        (status = 400, description = "Invalid input", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 408, description = "Request body too slow", body = error::ErrorBody),
        (status = 409, description = "Maintenance mode is on", body = error::ErrorBody),
        (status = 413, description = "Request body too large", body = error::ErrorBody),
        (status = 500, description = "Backup creation or upload failed", body = error::ErrorBody)))]
pub async fn create_backup_documented(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    StrictJson(body): StrictJson<CreateBackupBody>,
) -> Result<Response, ApiError> {
    create(g, who, peer, body).await
}

/// Create a backup (same as /api/backup/create).
#[utoipa::path(post, path = "/api/backup", tag = "backups",
    request_body(content = CreateBackupBody, description = "Optional: an empty body means {}", example = json!({"description": "Pre-deployment backup", "includeDocuments": true})),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Backup completed", body = BackupView, example = dto::backup_example),
        (status = 202, description = "Backup started (async)", body = BackupView),
        (status = 400, description = "Invalid input", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 408, description = "Request body too slow", body = error::ErrorBody),
        (status = 409, description = "Maintenance mode is on", body = error::ErrorBody),
        (status = 413, description = "Request body too large", body = error::ErrorBody),
        (status = 500, description = "Backup creation or upload failed", body = error::ErrorBody)))]
pub async fn create_backup(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    StrictJson(body): StrictJson<CreateBackupBody>,
) -> Result<Response, ApiError> {
    create(g, who, peer, body).await
}

/// List backups, newest first.
#[utoipa::path(get, path = "/api/backup/list", tag = "backups",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of backups", body = ListView, example = dto::list_example),
        (status = 400, description = "Invalid paging parameters", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody)))]
pub async fn list_backups(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError(Error::invalid(format!("invalid query: {e}"))))?;
    // The documented bound: larger pages are refused, not silently cut.
    if let Some(size) = query.page_size
        && size as usize > crate::backup::MAX_PAGE_SIZE
    {
        return Err(ApiError(Error::invalid(format!(
            "pageSize {size} is over the maximum of {}",
            crate::backup::MAX_PAGE_SIZE
        ))));
    }
    let result = g
        .core
        .list(
            query.page_size.unwrap_or(0) as usize,
            query.page_token.as_deref().unwrap_or(""),
        )
        .instrument(span("ListBackups", &who, ""))
        .await;
    audit(Action::List, Some(&who), "", peer, &result);
    Ok(Json(ListView::from(result?)))
}

/// One backup, with status and progress.
#[utoipa::path(get, path = "/api/backup/{backupId}", tag = "backups",
    params(("backupId" = String, Path, description = "Backup identifier", pattern = r"^backup_[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3])-[0-5][0-9]-[0-5][0-9]-[0-9]{3}Z$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The backup", body = BackupView, example = dto::backup_example),
        (status = 400, description = "Malformed id", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 404, description = "Unknown backup", body = error::ErrorBody)))]
pub async fn get_backup(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    Path(backup_id): Path<String>,
) -> Result<Json<BackupView>, ApiError> {
    let result = g
        .core
        .get(&backup_id)
        .instrument(span("GetBackup", &who, &backup_id))
        .await;
    audit(Action::Get, Some(&who), &backup_id, peer, &result);
    Ok(Json(BackupView::from(result?)))
}

/// Delete a backup permanently.
#[utoipa::path(delete, path = "/api/backup/{backupId}", tag = "backups",
    params(("backupId" = String, Path, description = "Backup identifier", pattern = r"^backup_[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3])-[0-5][0-9]-[0-5][0-9]-[0-9]{3}Z$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deleted", body = DeletedView),
        (status = 400, description = "Malformed id", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 404, description = "Unknown backup", body = error::ErrorBody),
        (status = 409, description = "Backup still running", body = error::ErrorBody)))]
pub async fn delete_backup(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    Path(backup_id): Path<String>,
) -> Result<Json<DeletedView>, ApiError> {
    let result = g
        .core
        .delete(&backup_id)
        .instrument(span("DeleteBackup", &who, &backup_id))
        .await;
    audit(Action::Delete, Some(&who), &backup_id, peer, &result);
    let record = result?;
    Ok(Json(DeletedView {
        message: format!("backup {} deleted", record.backup_id),
        backup_id: record.backup_id,
        deleted: true,
    }))
}

/// Download the backup file (supports Range).
#[utoipa::path(get, path = "/api/backup/download/{backupId}", tag = "backups",
    params(("backupId" = String, Path, description = "Backup identifier", pattern = r"^backup_[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3])-[0-5][0-9]-[0-5][0-9]-[0-9]{3}Z$"),
           ("Range" = Option<String>, Header, description = "bytes=START-END to resume")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The backup file: JSON lines, or gzip/zstd when compressed, or octet-stream when encrypted. A stored file that does not match its recorded sha256 ends the body incomplete.",
            headers(("ETag" = String, description = "The file's sha256, quoted"),
                    ("Content-Disposition" = String, description = "attachment; filename=..."),
                    ("Accept-Ranges" = String, description = "bytes")),
            content((dto::BackupFile = "application/octet-stream"), (serde_json::Value = "application/json"),
                    (dto::BackupFile = "application/gzip"), (dto::BackupFile = "application/zstd"))),
        (status = 206, description = "Part of the backup file (Range)",
            headers(("Content-Range" = String, description = "bytes START-END/SIZE")),
            content((dto::BackupFile = "application/octet-stream"), (serde_json::Value = "application/json"),
                    (dto::BackupFile = "application/gzip"), (dto::BackupFile = "application/zstd"))),
        (status = 400, description = "Malformed id", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 404, description = "Unknown backup", body = error::ErrorBody),
        (status = 409, description = "Backup not completed", body = error::ErrorBody),
        (status = 416, description = "Range not satisfiable")))]
pub async fn download_backup(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    Path(backup_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let span = span("DownloadBackup", &who, &backup_id);
    let found = g
        .core
        .downloadable(&backup_id)
        .instrument(span.clone())
        .await;
    if found.is_err() {
        audit(Action::Download, Some(&who), &backup_id, peer, &found);
    }
    let record = found?;
    let range = match parse_range(&headers, record.size, &download::etag(&record)) {
        RangeRequest::Unsatisfiable => return Ok(download::unsatisfiable(&record)),
        RangeRequest::Full => None,
        RangeRequest::Partial(r) => Some(r),
    };
    let offset = download::read_offset(range, record.size);
    let opened = g
        .core
        .download(&backup_id, offset)
        .instrument(span.clone())
        .await;
    audit(Action::Download, Some(&who), &backup_id, peer, &opened);
    let opened = opened?;
    span.in_scope(|| tracing::info!(offset, "download started"));
    Ok(download::body_response(opened, range))
}

/// Headers of the download, without the body.
pub async fn head_backup(
    State(g): State<Shared>,
    Admin(who, _peer): Admin,
    Path(backup_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = g
        .core
        .downloadable(&backup_id)
        .instrument(span("HeadBackup", &who, &backup_id))
        .await?;
    let range = match parse_range(&headers, record.size, &download::etag(&record)) {
        RangeRequest::Unsatisfiable => return Ok(download::unsatisfiable(&record)),
        RangeRequest::Full => None,
        RangeRequest::Partial(r) => Some(r),
    };
    Ok(download::head_response(&record, range).into_response())
}

/// Restore a backup into the configured database (or `targetUrl`), in one
/// transaction. Needs maintenance mode.
#[utoipa::path(post, path = "/api/backup/{backupId}/restore", tag = "restore",
    params(("backupId" = String, Path, description = "Backup identifier", pattern = r"^backup_[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3])-[0-5][0-9]-[0-5][0-9]-[0-9]{3}Z$")),
    request_body(content = RestoreBody, description = "Optional: an empty body means {}"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Restored (or dry run passed)", body = RestoreView),
        (status = 400, description = "Invalid input", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 404, description = "Unknown backup", body = error::ErrorBody),
        (status = 409, description = "Maintenance mode off, backup not completed, corrupt file or schema mismatch", body = error::ErrorBody),
        (status = 500, description = "Restore failed and was rolled back", body = error::ErrorBody)))]
pub async fn restore_backup(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    Path(backup_id): Path<String>,
    StrictJson(body): StrictJson<RestoreBody>,
) -> Result<Json<RestoreView>, ApiError> {
    let options = crate::backup::restore::RestoreOptions {
        target_url: body.target_url.filter(|u| !u.is_empty()),
        dry_run: body.dry_run.unwrap_or(false),
        skip_safety_backup: body.skip_safety_backup.unwrap_or(false),
        documents_dir: body.documents_dir.filter(|d| !d.is_empty()),
    };
    let (updates, _ignored) = tokio::sync::mpsc::channel(1);
    let core = g.core.clone();
    let span = span("RestoreBackup", &who, &backup_id);
    // Runs to commit or rollback even if the client disconnects.
    let outcome = tokio::spawn(
        async move {
            let result = core.restore(&backup_id, options, &who, updates).await;
            audit(Action::Restore, Some(&who), &backup_id, peer, &result);
            result
        }
        .instrument(span),
    )
    .await
    .map_err(|e| ApiError(Error::internal(format!("restore task failed: {e}"))))??;
    Ok(Json(RestoreView {
        restored: !outcome.dry_run,
        backup_id: outcome.backup_id,
        dry_run: outcome.dry_run,
        target: outcome.target,
        safety_backup_id: outcome.safety_backup_id,
        row_counts: outcome.row_counts,
        documents_written: outcome.documents_written,
        documents_dir: outcome.documents_dir,
    }))
}

/// Re-read a stored backup and check it; optionally test-restore it.
#[utoipa::path(post, path = "/api/backup/{backupId}/verify", tag = "restore",
    params(("backupId" = String, Path, description = "Backup identifier", pattern = r"^backup_[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3])-[0-5][0-9]-[0-5][0-9]-[0-9]{3}Z$")),
    request_body(content = VerifyBody, description = "Optional: an empty body means {}"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Verification report (ok tells the verdict)", body = VerifyView),
        (status = 400, description = "Invalid input", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 404, description = "Unknown backup", body = error::ErrorBody),
        (status = 409, description = "Backup not completed", body = error::ErrorBody)))]
pub async fn verify_backup(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    Path(backup_id): Path<String>,
    StrictJson(body): StrictJson<VerifyBody>,
) -> Result<Json<VerifyView>, ApiError> {
    let result = g
        .core
        .verify(&backup_id, body.scratch_database_url)
        .instrument(span("VerifyBackup", &who, &backup_id))
        .await;
    audit(Action::Verify, Some(&who), &backup_id, peer, &result);
    let report = result?;
    Ok(Json(VerifyView::from(report)))
}

/// Whether maintenance mode is on.
#[utoipa::path(get, path = "/api/maintenance", tag = "restore",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Maintenance mode", body = MaintenanceView),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody)))]
pub async fn get_maintenance(
    State(g): State<Shared>,
    Admin(_who, _peer): Admin,
) -> Json<MaintenanceView> {
    Json(MaintenanceView::from(g.core.maintenance().await))
}

/// Turn maintenance mode on or off (it survives restarts).
#[utoipa::path(put, path = "/api/maintenance", tag = "restore",
    request_body = MaintenanceBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Maintenance mode", body = MaintenanceView),
        (status = 400, description = "Invalid input", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody)))]
pub async fn set_maintenance(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    StrictJson(body): StrictJson<MaintenanceBody>,
) -> Result<Json<MaintenanceView>, ApiError> {
    let result = g
        .core
        .set_maintenance(body.enabled, body.reason.unwrap_or_default(), &who)
        .instrument(span("SetMaintenanceMode", &who, ""))
        .await;
    audit(Action::Maintenance, Some(&who), "", peer, &result);
    let state = result?;
    Ok(Json(MaintenanceView::from(state)))
}

/// Apply the retention policy now, or with `dryRun` list what would go.
#[utoipa::path(post, path = "/api/backup/prune", tag = "backups",
    request_body(content = PruneBody, description = "Optional: an empty body means {}"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "What was deleted (or would be) and what is kept, with reasons; failed deletions are listed and did not stop the others", body = PruneView),
        (status = 400, description = "Invalid input", body = error::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody),
        (status = 409, description = "Maintenance mode is on (a dry run still works)", body = error::ErrorBody),
        (status = 500, description = "Storage could not be listed", body = error::ErrorBody)))]
pub async fn prune_backups(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
    StrictJson(body): StrictJson<PruneBody>,
) -> Result<Json<PruneView>, ApiError> {
    let result = g
        .core
        .prune(body.dry_run.unwrap_or(false))
        .instrument(span("PruneBackups", &who, ""))
        .await;
    audit(Action::Prune, Some(&who), "", peer, &result);
    Ok(Json(PruneView::from(result?)))
}

/// The backup schedule, its next run and the last scheduled run.
#[utoipa::path(get, path = "/api/backup/schedule", tag = "backups",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 401, description = "Missing or invalid token", body = error::ErrorBody),
        (status = 403, description = "Not an admin", body = error::ErrorBody)))]
pub async fn get_schedule(
    State(g): State<Shared>,
    Admin(who, peer): Admin,
) -> Result<Json<ScheduleView>, ApiError> {
    let result = g
        .core
        .schedule_status()
        .instrument(span("GetSchedule", &who, ""))
        .await;
    audit(Action::Get, Some(&who), "", peer, &result);
    Ok(Json(ScheduleView::from(result?)))
}

/// Prometheus text format.
pub async fn metrics() -> Response {
    match crate::telemetry::prometheus() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => ApiError(Error::unavailable("metrics are not available")).into_response(),
    }
}

/// HTTP methods counted under their own name; any other is `other`, so
/// made-up methods cannot grow the label set.
const METERED_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

fn method_label(method: &http::Method) -> &'static str {
    METERED_METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// Counts every HTTP request by method, route template and status, and
/// times it. Paths no route matched count as route `other`.
async fn meter(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let method = method_label(request.method());
    let response = next.run(request).await;
    crate::telemetry::http_request_finished(
        method,
        &route,
        response.status().as_str(),
        started.elapsed(),
    );
    response
}
