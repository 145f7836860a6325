//! PostgreSQL (and CockroachDB, which speaks its protocol) as a backup source.
//!
//! Every table is read with text `COPY ... TO STDOUT` inside one REPEATABLE
//! READ READ ONLY transaction. With parallelism > 1 on PostgreSQL, extra
//! connections join the same exported snapshot and dump tables concurrently;
//! the file still lists tables in header order, so a table finished ahead of
//! its turn waits in a small queue and then in an anonymous temp file.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres, Row, Transaction};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::order::parents_first;
use super::pg_copy::CopyTranscoder;
use super::{
    ColumnSchema, DumpSink, ForeignKey, Source, SourceInfo, TableSchema, ValueEncoding, quote_ident,
};
use crate::error::{Error, Result};

/// Encoded rows are handed on in pieces of about this size.
const CHUNK_BYTES: usize = 128 * 1024;
/// Pieces a table finished ahead of its turn may hold in memory before spilling.
const QUEUED_CHUNKS: usize = 4;
const SNAPSHOT_TX: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// Session settings that make the text output canonical and lossless.
pub(crate) const SESSION_SETTINGS: &[&str] = &[
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET TimeZone = 'UTC'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET client_encoding = 'UTF8'",
];

pub struct PostgresSource {
    pool: PgPool,
    parallelism: usize,
}

impl PostgresSource {
    pub async fn connect(url: &str, parallelism: usize) -> Result<Self> {
        let parallelism = parallelism.clamp(1, 8);
        let pool = connect_pool(url, parallelism as u32 + 2)?;
        Ok(Self { pool, parallelism })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A lazily connecting pool whose sessions use the canonical text settings.
pub(crate) fn connect_pool(url: &str, max_connections: u32) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        Error::invalid(format!(
            "database URL {}: {}",
            crate::redact::redact_url(url),
            crate::redact::redact_text(&e.to_string())
        ))
    })?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(Duration::from_secs(300))
        .after_connect(|conn, _meta| {
            async move {
                for setting in SESSION_SETTINGS {
                    // CockroachDB lacks some of these; the defaults it has are the ones we want.
                    if let Err(e) = conn.execute(*setting).await {
                        tracing::debug!(setting, error = %e, "session setting not applied");
                    }
                }
                Ok(())
            }
            .boxed()
        })
        .connect_lazy_with(options))
}

#[async_trait]
impl Source for PostgresSource {
    fn engine(&self) -> &'static str {
        "postgresql"
    }

    async fn ping(&self) -> Result<()> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(super::PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::unavailable(Error::database("database", &e).message)),
            Err(_) => Err(Error::unavailable(format!(
                "database did not answer within {} s",
                super::PING_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn dump(&self, sink: &mut dyn DumpSink) -> Result<()> {
        let mut lead = self
            .pool
            .begin_with(SNAPSHOT_TX)
            .await
            .map_err(|e| Error::database("starting snapshot transaction", &e))?;
        let version: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut *lead)
            .await
            .map_err(|e| Error::database("reading server version", &e))?;
        let cockroach = version.contains("CockroachDB");
        let server_version = if cockroach {
            version.clone()
        } else {
            sqlx::query_scalar("SELECT current_setting('server_version')")
                .fetch_one(&mut *lead)
                .await
                .map_err(|e| Error::database("reading server version", &e))?
        };
        let tables = parents_first(read_schema(&mut lead).await?);
        let info = SourceInfo {
            engine: if cockroach {
                "cockroachdb"
            } else {
                "postgresql"
            }
            .to_string(),
            server_version,
        };
        sink.begin(&info, &tables).await?;

        let helpers = if self.parallelism > 1 && tables.len() > 1 && !cockroach {
            self.join_snapshot(&mut lead, self.parallelism - 1).await?
        } else {
            Vec::new()
        };
        if helpers.is_empty() {
            for (index, table) in tables.iter().enumerate() {
                sink.begin_table(index).await?;
                copy_table(&mut lead, table, &mut SinkTarget(&mut *sink)).await?;
                sink.end_table().await?;
            }
            lead.commit()
                .await
                .map_err(|e| Error::database("ending snapshot transaction", &e))?;
            return Ok(());
        }
        let mut connections = helpers;
        connections.insert(0, lead);
        dump_parallel(connections, tables, sink).await
    }
}

impl PostgresSource {
    /// Opens `count` more transactions on the lead's snapshot.
    async fn join_snapshot(
        &self,
        lead: &mut Transaction<'static, Postgres>,
        count: usize,
    ) -> Result<Vec<Transaction<'static, Postgres>>> {
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut **lead)
            .await
            .map_err(|e| Error::database("exporting snapshot", &e))?;
        let mut helpers = Vec::with_capacity(count);
        for _ in 0..count {
            let mut tx = self
                .pool
                .begin_with(SNAPSHOT_TX)
                .await
                .map_err(|e| Error::database("opening parallel reader", &e))?;
            // The snapshot id comes from the server and is quoted as a literal.
            let set = format!(
                "SET TRANSACTION SNAPSHOT '{}'",
                snapshot.replace('\'', "''")
            );
            tx.execute(AssertSqlSafe(set))
                .await
                .map_err(|e| Error::database("joining snapshot", &e))?;
            helpers.push(tx);
        }
        Ok(helpers)
    }
}

/// Reads tables, columns, primary and foreign keys inside the snapshot.
pub(crate) async fn read_schema(conn: &mut sqlx::PgConnection) -> Result<Vec<TableSchema>> {
    let columns = sqlx::query(
        "SELECT c.table_schema::text, c.table_name::text, c.column_name::text,
                c.data_type::text, c.udt_name::text, c.is_nullable::text,
                pg_catalog.format_type(a.atttypid, a.atttypmod)::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         JOIN pg_catalog.pg_namespace n ON n.nspname = c.table_schema
         JOIN pg_catalog.pg_class k ON k.relnamespace = n.oid AND k.relname = c.table_name
         JOIN pg_catalog.pg_attribute a ON a.attrelid = k.oid AND a.attname = c.column_name
         WHERE t.table_type = 'BASE TABLE'
           AND c.table_schema NOT IN ('pg_catalog', 'information_schema', 'crdb_internal', 'pg_extension')
           AND c.table_schema NOT LIKE 'pg\\_temp%' AND c.table_schema NOT LIKE 'pg\\_toast%'
           AND COALESCE(c.is_generated::text, 'NEVER') = 'NEVER'
           AND NOT a.attisdropped
         ORDER BY c.table_schema, c.table_name, c.ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading columns", &e))?;

    let mut tables: BTreeMap<(String, String), TableSchema> = BTreeMap::new();
    for row in columns {
        let schema: String = row.try_get(0).map_err(|e| Error::database("columns", &e))?;
        let name: String = row.try_get(1).map_err(|e| Error::database("columns", &e))?;
        let column: String = row.try_get(2).map_err(|e| Error::database("columns", &e))?;
        let data_type: String = row.try_get(3).map_err(|e| Error::database("columns", &e))?;
        let udt: String = row.try_get(4).map_err(|e| Error::database("columns", &e))?;
        let nullable: String = row.try_get(5).map_err(|e| Error::database("columns", &e))?;
        let sql_type: String = row.try_get(6).map_err(|e| Error::database("columns", &e))?;
        let table = tables
            .entry((schema.clone(), name.clone()))
            .or_insert_with(|| TableSchema {
                schema,
                name,
                columns: Vec::new(),
                primary_key: Vec::new(),
                foreign_keys: Vec::new(),
            });
        table.columns.push(ColumnSchema {
            name: column,
            sql_type,
            encoding: encoding_for(&data_type, &udt),
            nullable: nullable == "YES",
        });
    }

    let keys = sqlx::query(
        "SELECT tc.table_schema::text, tc.table_name::text, tc.constraint_name::text,
                tc.constraint_type::text, kcu.column_name::text,
                COALESCE(ccu.table_schema::text, ''), COALESCE(ccu.table_name::text, '')
         FROM information_schema.table_constraints tc
         JOIN information_schema.key_column_usage kcu
           ON kcu.constraint_schema = tc.constraint_schema
          AND kcu.constraint_name = tc.constraint_name
          AND kcu.table_schema = tc.table_schema AND kcu.table_name = tc.table_name
         LEFT JOIN (SELECT DISTINCT constraint_schema, constraint_name, table_schema, table_name
                    FROM information_schema.constraint_column_usage) ccu
           ON tc.constraint_type = 'FOREIGN KEY'
          AND ccu.constraint_schema = tc.constraint_schema
          AND ccu.constraint_name = tc.constraint_name
         WHERE tc.constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')
         ORDER BY 1, 2, 3, kcu.ordinal_position",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading keys", &e))?;

    let mut foreign: BTreeMap<(String, String, String), ForeignKey> = BTreeMap::new();
    for row in keys {
        let get = |i: usize| -> Result<String> {
            row.try_get::<String, _>(i)
                .map_err(|e| Error::database("keys", &e))
        };
        let (schema, name, constraint, kind, column) =
            (get(0)?, get(1)?, get(2)?, get(3)?, get(4)?);
        let Some(table) = tables.get_mut(&(schema.clone(), name.clone())) else {
            continue;
        };
        if kind == "PRIMARY KEY" {
            table.primary_key.push(column);
        } else {
            let fk = foreign
                .entry((schema, name, constraint))
                .or_insert_with(|| ForeignKey {
                    columns: Vec::new(),
                    references_schema: String::new(),
                    references_table: String::new(),
                });
            fk.columns.push(column);
            fk.references_schema = get(5)?;
            fk.references_table = get(6)?;
        }
    }
    for ((schema, name, _), fk) in foreign {
        if let Some(table) = tables.get_mut(&(schema, name)) {
            table.foreign_keys.push(fk);
        }
    }
    Ok(tables.into_values().collect())
}

/// How a PostgreSQL type is written into the backup file.
fn encoding_for(data_type: &str, udt: &str) -> ValueEncoding {
    if data_type == "ARRAY" {
        return ValueEncoding::Text;
    }
    match udt {
        "int2" | "int4" | "int8" | "oid" => ValueEncoding::Number,
        "float4" | "float8" => ValueEncoding::Float,
        "bool" => ValueEncoding::Bool,
        "bytea" => ValueEncoding::Base64,
        "jsonb" => ValueEncoding::Json,
        _ => ValueEncoding::Text,
    }
}

fn copy_statement(table: &TableSchema) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    format!(
        "COPY {}.{} ({}) TO STDOUT",
        quote_ident(&table.schema),
        quote_ident(&table.name),
        columns.join(", ")
    )
}

/// Streams one table through the transcoder, handing on pieces of encoded rows.
async fn copy_table(
    conn: &mut Transaction<'static, Postgres>,
    table: &TableSchema,
    target: &mut dyn RowsTarget,
) -> Result<()> {
    let what = format!("copying table {}", table.qualified_name());
    let mut transcoder = CopyTranscoder::new(table.columns.iter().map(|c| c.encoding).collect());
    let mut stream = conn
        .copy_out_raw(&copy_statement(table))
        .await
        .map_err(|e| Error::database(&what, &e))?;
    let mut out = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut rows = 0;
    while let Some(data) = stream.next().await {
        let data = data.map_err(|e| Error::database(&what, &e))?;
        rows += transcoder.feed(&data, &mut out)?;
        if out.len() >= CHUNK_BYTES {
            let piece = std::mem::replace(&mut out, Vec::with_capacity(CHUNK_BYTES + 4096));
            target.put(Bytes::from(piece), rows).await?;
            rows = 0;
        }
    }
    transcoder.finish()?;
    if !out.is_empty() || rows > 0 {
        target.put(Bytes::from(out), rows).await?;
    }
    Ok(())
}

/// A table's output when its worker finished: rows that did not fit the
/// queue went to an anonymous temp file.
struct Spill {
    file: Option<tokio::fs::File>,
    rows: u64,
}

/// Where a worker sends one table's pieces: the queue while it has room,
/// then a temp file.
struct TableOutput {
    queue: Option<mpsc::Sender<(Bytes, u64)>>,
    spill: Spill,
}

/// Receives the encoded pieces of one table.
#[async_trait]
trait RowsTarget: Send {
    async fn put(&mut self, bytes: Bytes, rows: u64) -> Result<()>;
}

/// Sequential dumps write straight into the sink.
struct SinkTarget<'a>(&'a mut dyn DumpSink);

#[async_trait]
impl RowsTarget for SinkTarget<'_> {
    async fn put(&mut self, bytes: Bytes, rows: u64) -> Result<()> {
        self.0.rows(bytes, rows).await
    }
}

#[async_trait]
impl RowsTarget for TableOutput {
    async fn put(&mut self, bytes: Bytes, rows: u64) -> Result<()> {
        if let Some(queue) = &self.queue {
            match queue.try_send((bytes, rows)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(Error::internal("backup writer stopped"));
                }
                Err(mpsc::error::TrySendError::Full((bytes, rows))) => {
                    // Closing the queue tells the writer to continue from the file.
                    self.queue = None;
                    return self.spill_to_file(bytes, rows).await;
                }
            }
        }
        self.spill_to_file(bytes, rows).await
    }
}

impl TableOutput {
    async fn spill_to_file(&mut self, bytes: Bytes, rows: u64) -> Result<()> {
        if self.spill.file.is_none() {
            let file =
                tempfile::tempfile().map_err(|e| Error::storage_io("creating spill file", &e))?;
            self.spill.file = Some(tokio::fs::File::from_std(file));
        }
        if let Some(file) = self.spill.file.as_mut() {
            file.write_all(&bytes)
                .await
                .map_err(|e| Error::storage_io("writing spill file", &e))?;
        }
        self.spill.rows += rows;
        Ok(())
    }
}

struct TableChannel {
    queue: mpsc::Receiver<(Bytes, u64)>,
    done: oneshot::Receiver<Result<Spill>>,
}

/// Aborts the worker tasks if the dump stops early.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<Result<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

async fn dump_parallel(
    connections: Vec<Transaction<'static, Postgres>>,
    tables: Vec<TableSchema>,
    sink: &mut dyn DumpSink,
) -> Result<()> {
    let tables = Arc::new(tables);
    let mut channels = Vec::with_capacity(tables.len());
    let mut outputs = Vec::with_capacity(tables.len());
    for _ in 0..tables.len() {
        let (queue_tx, queue_rx) = mpsc::channel(QUEUED_CHUNKS);
        let (done_tx, done_rx) = oneshot::channel();
        channels.push(TableChannel {
            queue: queue_rx,
            done: done_rx,
        });
        outputs.push(std::sync::Mutex::new(Some((queue_tx, done_tx))));
    }
    let outputs = Arc::new(outputs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = AbortOnDrop(Vec::new());
    for mut conn in connections {
        let (tables, outputs, next) = (tables.clone(), outputs.clone(), next.clone());
        workers.0.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(table) = tables.get(index) else {
                    break;
                };
                let taken = outputs[index].lock().ok().and_then(|mut slot| slot.take());
                let Some((queue, done)) = taken else {
                    return Err(Error::internal("table handed out twice"));
                };
                let mut output = TableOutput {
                    queue: Some(queue),
                    spill: Spill {
                        file: None,
                        rows: 0,
                    },
                };
                let result = copy_table(&mut conn, table, &mut output).await;
                output.queue = None;
                let failed = result.is_err();
                let _ = done.send(result.map(|_| output.spill));
                if failed {
                    return Ok(());
                }
            }
            conn.commit()
                .await
                .map_err(|e| Error::database("ending snapshot transaction", &e))
        }));
    }

    for (index, channel) in channels.into_iter().enumerate() {
        let TableChannel { mut queue, done } = channel;
        sink.begin_table(index).await?;
        while let Some((bytes, rows)) = queue.recv().await {
            sink.rows(bytes, rows).await?;
        }
        let spill = done
            .await
            .map_err(|_| Error::internal("a table reader stopped unexpectedly"))??;
        if let Some(mut file) = spill.file {
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(|e| Error::storage_io("reading spill file", &e))?;
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .map_err(|e| Error::storage_io("reading spill file", &e))?;
                if n == 0 {
                    break;
                }
                sink.rows(Bytes::copy_from_slice(&buf[..n]), 0).await?;
            }
            sink.rows(Bytes::new(), spill.rows).await?;
        }
        sink.end_table().await?;
    }
    for handle in std::mem::take(&mut workers.0) {
        handle
            .await
            .map_err(|e| Error::internal(format!("table reader failed: {e}")))??;
    }
    Ok(())
}
