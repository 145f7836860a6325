//! Shared test harness: a real server on ephemeral ports, real clients, a
//! fresh PostgreSQL database per test.
#![allow(dead_code)]

pub mod cloudinary;

use std::path::{Path, PathBuf};
use std::time::Duration;

use backup_service::api::auth::Authenticator;
use backup_service::app::{self, Running};
use backup_service::config::ServeConfig;
use backup_service::proto::backup_service_client::BackupServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const SECRET: &str = "integration-test-secret-of-32-bytes-or-more";

pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty PostgreSQL database, dropped when this goes out of scope.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin = pg_admin_url();
        let name = format!("bs_test_{:016x}", rand::random::<u64>());
        let mut conn = connect(&admin).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = replace_database(&admin, &name);
        Self { name, url }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Runs a script of several statements.
    pub async fn exec(&self, sql: &str) {
        let pool = self.pool().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .expect("run SQL");
        pool.close().await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(mut conn) = try_connect(&admin).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

async fn try_connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await
}

async fn connect(url: &str) -> sqlx::PgConnection {
    try_connect(url)
        .await
        .expect("connect to TEST_DATABASE_URL")
}

fn replace_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("TEST_DATABASE_URL is a URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

pub fn config(database_url: &str, storage: &Path) -> ServeConfig {
    let mut config = ServeConfig::from_env();
    config.database_url = database_url.to_string();
    config.storage_url = storage.display().to_string();
    config.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.jwt_secret = Some(SECRET.to_string());
    config.admin_roles = vec!["ADMIN".into()];
    config.health_check_interval_secs = 1;
    config
}

pub async fn start(config: &ServeConfig) -> Running {
    app::start(config).await.expect("server starts")
}

pub fn token(role: &str) -> String {
    Authenticator::new(SECRET.as_bytes(), &[])
        .expect("secret")
        .issue("42", "admin@example.com", role, Duration::from_secs(600))
        .expect("token")
}

pub type AuthInterceptor =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
pub type Client = BackupServiceClient<InterceptedService<Channel, AuthInterceptor>>;

pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect gRPC")
}

/// A client that sends `authorization` exactly as given (None: no header).
pub async fn client_with(addr: std::net::SocketAddr, authorization: Option<String>) -> Client {
    let channel = channel(addr).await;
    let interceptor: AuthInterceptor = Box::new(move |mut req: tonic::Request<()>| {
        if let Some(value) = &authorization {
            req.metadata_mut()
                .insert("authorization", value.parse().expect("metadata"));
        }
        Ok(req)
    });
    BackupServiceClient::with_interceptor(channel, interceptor)
        .max_decoding_message_size(64 * 1024 * 1024)
}

pub async fn admin_client(addr: std::net::SocketAddr) -> Client {
    client_with(addr, Some(format!("Bearer {}", token("ADMIN")))).await
}

/// Downloads a whole backup over gRPC.
pub async fn download(client: &mut Client, id: &str, offset: u64) -> Vec<u8> {
    use backup_service::proto::DownloadBackupRequest;
    let mut stream = client
        .download_backup(DownloadBackupRequest {
            backup_id: id.to_string(),
            offset,
        })
        .await
        .expect("download starts")
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await.expect("download chunk") {
        out.extend_from_slice(&msg.chunk);
    }
    out
}

/// Verifies a stored backup (no scratch restore) and returns the report.
pub async fn verify(client: &mut Client, id: &str) -> backup_service::proto::VerifyBackupResponse {
    use backup_service::proto::VerifyBackupRequest;
    client
        .verify_backup(VerifyBackupRequest {
            backup_id: id.to_string(),
            ..Default::default()
        })
        .await
        .expect("verify runs")
        .into_inner()
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("app.db").display())
}

pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Makes a backup fail for real: its COPY waits on a lock held here, its
/// database backend is terminated, and the backup ends FAILED. Returns its id.
pub async fn failed_backup(client: &mut Client, pool: &sqlx::PgPool, quoted_table: &str) -> String {
    use backup_service::proto::{BackupStatus, CreateBackupRequest, GetBackupRequest};
    let mut locker = pool.begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {quoted_table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *locker)
    .await
    .expect("lock");
    let running = client
        .create_backup(CreateBackupRequest {
            r#async: true,
            ..Default::default()
        })
        .await
        .expect("create")
        .into_inner();
    for _ in 0..200 {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'COPY%' AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(pool)
        .await
        .expect("terminate");
        if !killed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    locker.rollback().await.expect("rollback");
    for _ in 0..200 {
        let got = client
            .get_backup(GetBackupRequest {
                backup_id: running.backup_id.clone(),
            })
            .await
            .expect("get")
            .into_inner();
        if got.status() == BackupStatus::Failed {
            return running.backup_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backup {} did not fail", running.backup_id);
}
