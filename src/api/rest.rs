//! The REST gateway over the same core.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use super::auth::Authenticator;
use crate::backup::Backups;
use crate::config::ServeConfig;

pub fn router(core: Arc<Backups>, _auth: Arc<Authenticator>, _config: &ServeConfig) -> Router {
    let ready_core = core.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let core = ready_core.clone();
                async move {
                    match core.ready().await {
                        Ok(()) => (http::StatusCode::OK, "ready".to_string()),
                        Err(e) => (http::StatusCode::SERVICE_UNAVAILABLE, e.message),
                    }
                }
            }),
        )
}
