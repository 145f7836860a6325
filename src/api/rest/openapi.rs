//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::dto::{
    BackupFile, BackupView, CloudinaryStatsView, CreateBackupBody, DeletedView, HealthView,
    KeptView, ListView, MaintenanceBody, MaintenanceView, MissingDocumentView, ProgressView,
    PruneBody, PruneFailureView, PruneView, RestoreBody, RestoreView, RetentionView, ScheduleView,
    VerifyBody, VerifyView,
};
use super::error::{ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "backup-service",
        description = "Application-level database backups: create, list, download and delete."
    ),
    paths(
        super::healthz,
        super::readyz,
        super::ready_details,
        super::create_backup_documented,
        super::create_backup,
        super::list_backups,
        super::get_backup,
        super::delete_backup,
        super::download_backup,
        super::restore_backup,
        super::verify_backup,
        super::get_maintenance,
        super::set_maintenance,
        super::prune_backups,
        super::get_schedule,
    ),
    components(schemas(
        BackupFile, BackupView, ProgressView, CreateBackupBody, ListView, CloudinaryStatsView, DeletedView,
        HealthView, ErrorBody, ErrorDetail, RestoreBody, RestoreView, VerifyBody, VerifyView,
        MaintenanceBody, MaintenanceView, PruneBody, PruneView, KeptView, PruneFailureView,
        RetentionView, ScheduleView, MissingDocumentView
    )),
    servers((url = "/", description = "The server this document is served from")),
    security(("bearer" = [])),
    modifiers(&BearerAuth, &OptionalBodies),
    tags(
        (name = "backups", description = "Create, list, download and delete backups"),
        (name = "restore", description = "Restore, verify and maintenance mode"),
        (name = "health", description = "Liveness and readiness probes (no token)")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every request body but maintenance's may be left out (an empty body
/// means `{}`); utoipa marks them all required.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if path == "/api/maintenance" {
                continue;
            }
            for operation in [&mut item.post, &mut item.put].into_iter().flatten() {
                if let Some(body) = operation.request_body.as_mut() {
                    body.required = Some(utoipa::openapi::Required::False);
                }
            }
        }
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
