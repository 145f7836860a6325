//! Database engines. Each reads every user table in one consistent snapshot
//! and hands rows, already encoded as JSON arrays, to a `DumpSink`.

pub mod engine;
pub mod lease;
mod nodelay;
pub mod order;
pub mod pg_copy;
pub mod pg_load;
pub mod pg_restore;
pub mod pg_schema;
pub mod postgres;
pub mod sqlite;
pub mod sqlite_restore;

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
pub use crate::schema::{
    ColumnSchema, DumpSink, ForeignKey, RowSource, SourceInfo, TableProgress, TableSchema,
    ValueEncoding, push_json_escaped_byte, push_json_string, quote_ident,
};

/// How long a reachability check may wait for the database.
pub const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs a reachability query, bounded by `PING_TIMEOUT`.
pub async fn ping_with_timeout<T>(
    query: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
) -> Result<()> {
    match tokio::time::timeout(PING_TIMEOUT, query).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::unavailable(Error::database("database", &e).message)),
        Err(_) => Err(Error::unavailable(format!(
            "database did not answer within {} s",
            PING_TIMEOUT.as_secs()
        ))),
    }
}

/// A database that can be backed up.
#[async_trait]
pub trait Source: Send + Sync {
    fn engine(&self) -> &'static str;
    /// Fails when the database cannot be reached.
    async fn ping(&self) -> Result<()>;
    /// Streams every user table, in one snapshot, into `sink`.
    async fn dump(&self, sink: &mut dyn DumpSink) -> Result<()>;
    /// How replicas agree on who runs a schedule slot on this database.
    fn slot_lease(&self) -> Arc<dyn lease::SlotLease>;
}

/// A database a backup can be restored into.
#[async_trait]
pub trait Target: Send + Sync {
    fn engine(&self) -> &'static str;
    /// Why these tables cannot be restored here, table by table and column
    /// by column; empty when they can.
    async fn schema_problems(&self, tables: &[TableSchema]) -> Result<Vec<String>>;
    /// Opens the one restore transaction and empties `tables` in it. Work
    /// that must come before the rows (schema) belongs here.
    async fn prepare(&self, tables: &[TableSchema]) -> Result<Box<dyn TableLoader>>;
}

/// One restore transaction, fed table by table by the core's driver.
#[async_trait]
pub trait TableLoader: Send {
    /// Loads every row `rows` yields into `table`; returns how many it wrote.
    async fn load_table(&mut self, table: &TableSchema, rows: &mut dyn RowSource) -> Result<u64>;
    /// Makes the restore permanent. Called only after every check passed;
    /// work that must follow the rows (sequences, later indexes and
    /// constraints) belongs here.
    async fn commit(self: Box<Self>) -> Result<()>;
    /// Undoes everything since `prepare`.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// Opens a restore target by URL.
pub async fn open_target(url: &str) -> Result<Arc<dyn Target>> {
    Ok(match engine::Engine::require(url, "target URL")? {
        engine::Engine::Postgres => Arc::new(pg_restore::PostgresTarget::connect(url).await?),
        engine::Engine::Sqlite => Arc::new(sqlite_restore::SqliteTarget::open(url).await?),
    })
}

/// Compares a backup's tables with the target's, naming every difference.
pub fn compare_schemas(backup: &[TableSchema], target: &[TableSchema]) -> Vec<String> {
    let mut problems = Vec::new();
    for table in backup {
        let Some(found) = target
            .iter()
            .find(|t| t.schema == table.schema && t.name == table.name)
        else {
            problems.push(format!(
                "table {}: missing in the target",
                table.qualified_name()
            ));
            continue;
        };
        for column in &table.columns {
            match found.columns.iter().find(|c| c.name == column.name) {
                None => problems.push(format!(
                    "table {}: column {:?} missing in the target",
                    table.qualified_name(),
                    column.name
                )),
                Some(c) if !same_type(&c.sql_type, &column.sql_type) => problems.push(format!(
                    "table {}: column {:?} is {} in the backup but {} in the target",
                    table.qualified_name(),
                    column.name,
                    column.sql_type,
                    c.sql_type
                )),
                Some(_) => {}
            }
        }
    }
    problems
}

fn same_type(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Connects to the database a `DATABASE_URL` names.
pub async fn open(url: &str, parallelism: usize) -> Result<Arc<dyn Source>> {
    Ok(match engine::Engine::require(url, "DATABASE_URL")? {
        engine::Engine::Postgres => {
            Arc::new(postgres::PostgresSource::connect(url, parallelism).await?)
        }
        engine::Engine::Sqlite => Arc::new(sqlite::SqliteSource::open(url).await?),
    })
}

/// The query for the distinct document URLs of the sink's columns, or None
/// when the sink wants none. Unknown tables or columns fail the backup.
pub(crate) fn document_url_query(
    tables: &[TableSchema],
    sink: &dyn DumpSink,
) -> Result<Option<String>> {
    if sink.document_columns().is_empty() {
        return Ok(None);
    }
    let resolved = crate::documents::columns::resolve(sink.document_columns(), tables)?;
    Ok(Some(crate::documents::columns::url_query(&resolved)))
}
