//! Wiring: build the core once, hand it to both transports, serve, shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::api::auth::Authenticator;
use crate::api::{grpc, rest};
use crate::backup::{Backups, CoreParts};
use crate::config::ServeConfig;
use crate::error::{Error, Result};
use crate::redact::redact_url;

pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub core: Arc<Backups>,
    /// Set when no JWT_SECRET was configured: a ready admin token.
    pub dev_token: Option<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn wait_for_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Opens database and storage, rebuilds the catalog, binds both ports and serves.
pub async fn start(config: &ServeConfig) -> Result<Running> {
    tracing::info!(
        database = %redact_url(&config.database_url),
        storage = %redact_url(&config.storage_location()),
        "starting backup-service"
    );
    crate::telemetry::prometheus();
    // Settings are checked first: a bad DOCUMENT_COLUMNS or cron expression
    // stops the start before anything is opened.
    let documents = config.document_settings()?;
    let schedule = config.schedule_settings()?;
    let codec = config.codec_settings()?;
    let source = crate::source::open(&config.database_url, config.dump_parallelism).await?;
    let storage =
        crate::storage::open(&config.storage_location(), &config.cloudinary_api_base).await?;
    let core = Backups::open(CoreParts {
        source,
        storage,
        database_url: config.database_url.clone(),
        codec,
        documents,
        schedule,
        // Blank entries (a trailing comma) match nothing in the check.
        restore_allowed_hosts: config.restore_allowed_hosts.clone(),
    })
    .await?;
    let automation = core.automation().clone();
    restore_last_success_metric(&core).await;

    let (secret, dev_token) = match &config.jwt_secret {
        Some(secret) => {
            crate::config::check_jwt_secret(secret)?;
            (secret.as_bytes().to_vec(), None)
        }
        None => {
            let secret: [u8; 32] = rand::random();
            let secret = hex::encode(secret).into_bytes();
            let auth = Authenticator::new(&secret, &config.admin_roles)?;
            let role = config
                .admin_roles
                .first()
                .map(String::as_str)
                .unwrap_or("ADMIN");
            let token = auth.issue(
                "dev-admin",
                "",
                role,
                std::time::Duration::from_secs(24 * 3600),
            )?;
            (secret, Some(token))
        }
    };
    let auth = Arc::new(Authenticator::new(&secret, &config.admin_roles)?);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let dev_mode = dev_token.is_some();
    let grpc_listener = bind(listen_addr(config, config.grpc_addr, dev_mode), "gRPC").await?;
    let http_listener = bind(listen_addr(config, config.http_addr, dev_mode), "HTTP").await?;
    let grpc_addr = local_addr(&grpc_listener)?;
    let http_addr = local_addr(&http_listener)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    // The reporter starts "" at SERVING; nothing is known until the first check.
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(grpc::SERVICE_NAME, ServingStatus::NotServing)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::internal(format!("building reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::internal(format!("building reflection: {e}")))?;

    let mut tasks = Vec::new();
    if automation.schedule.is_some() {
        tasks.push(tokio::spawn(crate::backup::schedule::run(
            core.clone(),
            automation,
            shutdown_rx.clone(),
        )));
    }
    let readiness = Arc::new(crate::api::readiness::Readiness::of(core.clone()));
    tasks.push(tokio::spawn(watch_health(
        readiness.clone(),
        health,
        config.health_check_interval(),
        shutdown_rx.clone(),
    )));

    let grpc_server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(grpc::service(core.clone(), auth.clone()))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc_listener),
            signalled(shutdown_rx.clone()),
        );
    tasks.push(tokio::spawn(async move {
        if let Err(e) = grpc_server.await {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));

    let router = rest::router(core.clone(), auth, readiness, config);
    let http_server = axum::serve(
        http_listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signalled(shutdown_rx));
    tasks.push(tokio::spawn(async move {
        if let Err(e) = http_server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));

    tracing::info!(%grpc_addr, %http_addr, storage = %core.storage().describe(), "listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        core,
        dev_token,
        shutdown,
        tasks,
    })
}

/// Sets the last-success gauge from the newest completed backup in the
/// catalog, so a restart does not reset it.
async fn restore_last_success_metric(core: &Backups) {
    let mut token = String::new();
    loop {
        let page = match core.list(crate::backup::MAX_PAGE_SIZE, &token).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e.message, "reading the catalog for metrics");
                return;
            }
        };
        let newest = page
            .backups
            .iter()
            .filter(|r| r.status == crate::backup::record::BackupStatus::Completed)
            .filter_map(|r| r.completed_at)
            .max();
        if let Some(at) = newest {
            crate::telemetry::last_success_at(at.timestamp());
            return;
        }
        if page.next_page_token.is_empty() {
            return;
        }
        token = page.next_page_token;
    }
}

/// Dev mode hands out an admin token for a secret nobody chose: it listens
/// on loopback only, unless DEV_LISTEN_ALL says otherwise.
fn listen_addr(config: &ServeConfig, addr: SocketAddr, dev_mode: bool) -> SocketAddr {
    if dev_mode && addr.ip().is_unspecified() && !config.dev_listen_all {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        tracing::warn!(%addr, "dev mode: bound to loopback only (set JWT_SECRET, or DEV_LISTEN_ALL=true)");
        return SocketAddr::new(loopback, addr.port());
    }
    addr
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::unavailable(format!("cannot bind {what} address {addr}: {e}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::internal(format!("reading bound address: {e}")))
}

async fn signalled(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Reports SERVING while database and storage answer, NOT_SERVING otherwise.
async fn watch_health(
    readiness: Arc<crate::api::readiness::Readiness>,
    health: tonic_health::server::HealthReporter,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<bool> = None;
    loop {
        let ready = readiness.check().await;
        let ok = ready.is_ok();
        let status = if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health.set_service_status(grpc::SERVICE_NAME, status).await;
        if last != Some(ok) {
            match &ready {
                Ok(()) => tracing::info!("database and storage reachable: SERVING"),
                Err(e) => tracing::warn!(error = %e.message, "NOT_SERVING"),
            }
            last = Some(ok);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
