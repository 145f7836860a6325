//! PostgreSQL (and CockroachDB, which speaks its protocol) as a backup source.
//!
//! Every table is read with text `COPY ... TO STDOUT` inside one REPEATABLE
//! READ READ ONLY transaction. With parallelism > 1 on PostgreSQL, extra
//! connections join the same exported snapshot and dump tables concurrently;
//! the file still lists tables in header order, so rows dumped ahead of their
//! table's turn wait in a small shared memory budget and then in an anonymous
//! temp file, which the writer follows while it grows once the table's turn
//! comes. The table the writer is on waits for the writer instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres, Row, Transaction};
use std::os::unix::fs::FileExt;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::order::parents_first;
use super::pg_copy::CopyTranscoder;
use super::{
    ColumnSchema, DumpSink, ForeignKey, Source, SourceInfo, TableSchema, ValueEncoding, quote_ident,
};
use crate::error::{Error, Result};

/// Encoded rows are handed on in pieces of about this size.
const CHUNK_BYTES: usize = 128 * 1024;
/// KiB of encoded rows that tables ahead of the writer may hold in memory,
/// all together, before they spill to temp files.
const AHEAD_QUEUE_KIB: usize = 2 * 1024;
/// KiB of encoded rows queued for the table the writer is on; also how far
/// the writer may lag behind a spill file before its table leaves the file.
const CURRENT_QUEUE_KIB: usize = 1024;
const CURRENT_QUEUE_BYTES: u64 = CURRENT_QUEUE_KIB as u64 * 1024;
/// Pieces one table's queue may hold; the byte budgets above bind first.
const QUEUE_PIECES: usize = (AHEAD_QUEUE_KIB + CURRENT_QUEUE_KIB) * 1024 / CHUNK_BYTES + 4;
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
    let options = super::engine::pg_options(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(Duration::from_secs(300))
        .after_connect(|conn, _meta| {
            async move {
                super::nodelay::set_on_tcp_sockets();
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
        super::ping_with_timeout(sqlx::query("SELECT 1").execute(&self.pool)).await
    }

    fn slot_lease(&self) -> Arc<dyn super::lease::SlotLease> {
        Arc::new(super::lease::AdvisoryLease::new(
            &self.pool.connect_options(),
        ))
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
        let tables = parents_first(read_schema(&mut lead, cockroach).await?);
        // Same transaction, so the same snapshot the tables are dumped in.
        if let Some(sql) = super::document_url_query(&tables, sink)? {
            let mut urls = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).fetch(&mut *lead);
            while let Some(url) = urls.next().await {
                let url = url.map_err(|e| Error::database("reading document URLs", &e))?;
                sink.document_url(&url).await?;
            }
        }
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
        let tables = Arc::new(tables);
        let readers = std::iter::once(lead)
            .chain(helpers)
            .map(|conn| SnapshotReader {
                conn,
                tables: tables.clone(),
            })
            .collect();
        dump_in_order(readers, tables.len(), sink).await?;
        Ok(())
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

/// Primary and foreign key columns, for CockroachDB: the portable
/// information_schema form.
const KEYS_INFORMATION_SCHEMA: &str =
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
         ORDER BY 1, 2, 3, kcu.ordinal_position";

/// The same rows from PostgreSQL's own catalog: about 7 ms instead of 80 ms
/// (information_schema.constraint_column_usage is slow), which is most of a
/// dump's start on the benchmark. Same rows, partition clones included.
const KEYS_PG_CATALOG: &str = "SELECT n.nspname::text, c.relname::text, con.conname::text,
                CASE con.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'FOREIGN KEY' END,
                a.attname::text, COALESCE(fn.nspname::text, ''), COALESCE(fc.relname::text, '')
         FROM pg_catalog.pg_constraint con
         JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
         LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid AND con.contype = 'f'
         LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
         WHERE con.contype IN ('p', 'f')
         ORDER BY 1, 2, 3, k.ord";

/// Whether the server is CockroachDB rather than PostgreSQL.
pub(crate) async fn is_cockroach(conn: &mut sqlx::PgConnection) -> Result<bool> {
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::database("reading server version", &e))?;
    Ok(version.contains("CockroachDB"))
}

/// Reads tables, columns, primary and foreign keys inside the snapshot.
pub(crate) async fn read_schema(
    conn: &mut sqlx::PgConnection,
    cockroach: bool,
) -> Result<Vec<TableSchema>> {
    let columns = sqlx::query(
        "SELECT c.table_schema::text, c.table_name::text, c.column_name::text,
                c.data_type::text,
                -- Only built-in types get a special encoding; a user type named int4 is text.
                CASE WHEN c.udt_schema = 'pg_catalog' THEN c.udt_name::text ELSE '' END,
                c.is_nullable::text,
                pg_catalog.format_type(a.atttypid, a.atttypmod)::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         JOIN pg_catalog.pg_namespace n ON n.nspname = c.table_schema
         JOIN pg_catalog.pg_class k ON k.relnamespace = n.oid AND k.relname = c.table_name
         JOIN pg_catalog.pg_attribute a ON a.attrelid = k.oid AND a.attname = c.column_name
         WHERE t.table_type = 'BASE TABLE'
           -- Partitioned parents hold no rows of their own: their partitions are dumped.
           AND k.relkind = 'r'
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

    let keys = sqlx::query(if cockroach {
        KEYS_INFORMATION_SCHEMA
    } else {
        KEYS_PG_CATALOG
    })
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
        // jsonb stays text: embedded as JSON, the JSON value `null` could not
        // be told from SQL NULL.
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

/// What a worker hands the writer for one table, in order.
enum Piece {
    /// Encoded rows; the permit holds their place in the memory budget
    /// until the writer has taken them.
    Rows(Bytes, u64, OwnedSemaphorePermit),
    /// The rows that follow are in this file, which the worker is still
    /// writing. Once it lets go of the file, the queue continues.
    Spill(SpillTail),
}

/// The writer's end of a spill file: the anonymous temp file, how far the
/// worker has written it and how far the writer has read it.
struct SpillTail {
    file: Arc<std::fs::File>,
    progress: watch::Receiver<SpillProgress>,
    read: Arc<AtomicU64>,
}

/// Bytes written to a spill file so far and the rows they hold. The worker
/// drops the sender when it is done with the file, whether the table is
/// finished, goes on through the queue, or failed (its `done` says which).
#[derive(Debug, Clone, Copy, Default)]
struct SpillProgress {
    bytes: u64,
    rows: u64,
}

/// The worker's end of a spill file.
struct SpillWriter {
    file: Arc<std::fs::File>,
    progress: watch::Sender<SpillProgress>,
    read: Arc<AtomicU64>,
    bytes: u64,
    rows: u64,
}

/// Memory shared by every table's queue, in permits of one KiB.
#[derive(Clone)]
struct QueueBudget {
    /// For tables ahead of the writer. When it runs out they spill.
    ahead: Arc<Semaphore>,
    /// For the table the writer is on. Its worker waits for room.
    current: Arc<Semaphore>,
    /// Index of the table the writer is on.
    writing: Arc<AtomicUsize>,
    stats: Arc<SpillStats>,
}

/// How much of a parallel dump went through temp files.
#[derive(Debug, Default)]
struct SpillStats {
    files: AtomicU64,
    bytes: AtomicU64,
    /// Spill files a table left for the queue once its turn came.
    left_early: AtomicU64,
}

/// Permits a piece of `len` bytes takes from a budget of `total` permits.
fn permits_for(len: usize, total: usize) -> u32 {
    let kib = len.div_ceil(1024).clamp(1, total);
    u32::try_from(kib).unwrap_or(u32::MAX)
}

/// Where a worker sends one table's pieces: the queue while the memory
/// budget allows or the writer is on the table, else a temp file the writer
/// reads as it grows.
struct TableOutput {
    index: usize,
    budget: QueueBudget,
    queue: mpsc::Sender<Piece>,
    spill: Option<SpillWriter>,
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

fn writer_stopped() -> Error {
    Error::internal("backup writer stopped")
}

#[async_trait]
impl RowsTarget for TableOutput {
    async fn put(&mut self, bytes: Bytes, rows: u64) -> Result<()> {
        let current = self.budget.writing.load(Ordering::Acquire) == self.index;
        if let Some(spill) = &self.spill {
            let unread = spill
                .bytes
                .saturating_sub(spill.read.load(Ordering::Acquire));
            if current && unread <= CURRENT_QUEUE_BYTES {
                // The writer is on this table and has nearly caught up with
                // the file: let go of it and go on through the queue.
                self.spill = None;
                self.budget.stats.left_early.fetch_add(1, Ordering::Relaxed);
            } else {
                return self.spill_to_file(bytes, rows);
            }
        }
        if current {
            // Wait for the writer rather than spill.
            let permits = permits_for(bytes.len(), CURRENT_QUEUE_KIB);
            let permit = tokio::select! {
                permit = self.budget.current.clone().acquire_many_owned(permits) => {
                    permit.map_err(|_| writer_stopped())?
                }
                () = self.queue.closed() => return Err(writer_stopped()),
            };
            return self
                .queue
                .send(Piece::Rows(bytes, rows, permit))
                .await
                .map_err(|_| writer_stopped());
        }
        let permits = permits_for(bytes.len(), AHEAD_QUEUE_KIB);
        if let Ok(permit) = self.budget.ahead.clone().try_acquire_many_owned(permits) {
            match self.queue.try_send(Piece::Rows(bytes, rows, permit)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(writer_stopped()),
                Err(mpsc::error::TrySendError::Full(Piece::Rows(bytes, rows, _))) => {
                    self.start_spill().await?;
                    return self.spill_to_file(bytes, rows);
                }
                Err(mpsc::error::TrySendError::Full(Piece::Spill(_))) => {
                    return Err(Error::internal("spill announcement out of place"));
                }
            }
        }
        self.start_spill().await?;
        self.spill_to_file(bytes, rows)
    }
}

impl TableOutput {
    /// Creates a spill file and queues it for the writer, which reads it
    /// while it grows.
    async fn start_spill(&mut self) -> Result<()> {
        let file =
            tempfile::tempfile().map_err(|e| Error::storage_io("creating spill file", &e))?;
        let file = Arc::new(file);
        let (progress, watcher) = watch::channel(SpillProgress::default());
        let read = Arc::new(AtomicU64::new(0));
        let tail = SpillTail {
            file: file.clone(),
            progress: watcher,
            read: read.clone(),
        };
        // Waits only if the queue is full of pieces the writer will take.
        self.queue
            .send(Piece::Spill(tail))
            .await
            .map_err(|_| writer_stopped())?;
        self.budget.stats.files.fetch_add(1, Ordering::Relaxed);
        self.spill = Some(SpillWriter {
            file,
            progress,
            read,
            bytes: 0,
            rows: 0,
        });
        Ok(())
    }

    fn spill_to_file(&mut self, bytes: Bytes, rows: u64) -> Result<()> {
        let Some(spill) = self.spill.as_mut() else {
            return Err(Error::internal("no spill file"));
        };
        // A page-cache write of one piece, not worth a blocking-pool round trip.
        spill
            .file
            .write_all_at(&bytes, spill.bytes)
            .map_err(|e| Error::storage_io("writing spill file", &e))?;
        spill.bytes += bytes.len() as u64;
        spill.rows += rows;
        self.budget
            .stats
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let now = SpillProgress {
            bytes: spill.bytes,
            rows: spill.rows,
        };
        // Nobody watching means the writer stopped; the queue reports that.
        spill.progress.send_replace(now);
        Ok(())
    }
}

/// The writer's end of one table.
struct TableChannel {
    queue: mpsc::Receiver<Piece>,
    done: oneshot::Receiver<Result<()>>,
}

/// The worker's end of one table.
struct TableSlot {
    queue: mpsc::Sender<Piece>,
    done: oneshot::Sender<Result<()>>,
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

/// Dumps tables on one connection of a shared snapshot.
#[async_trait]
trait TableReader: Send + 'static {
    /// Streams table `index` into `output`.
    async fn read_table(&mut self, index: usize, output: &mut dyn RowsTarget) -> Result<()>;
    /// Ends the reader's transaction after its last table.
    async fn finish(self) -> Result<()>;
}

struct SnapshotReader {
    conn: Transaction<'static, Postgres>,
    tables: Arc<Vec<TableSchema>>,
}

#[async_trait]
impl TableReader for SnapshotReader {
    async fn read_table(&mut self, index: usize, output: &mut dyn RowsTarget) -> Result<()> {
        let table = self
            .tables
            .get(index)
            .ok_or_else(|| Error::internal("unknown table index"))?;
        copy_table(&mut self.conn, table, output).await
    }

    async fn finish(self) -> Result<()> {
        self.conn
            .commit()
            .await
            .map_err(|e| Error::database("ending snapshot transaction", &e))
    }
}

/// Runs the readers concurrently, each taking the next table not yet taken,
/// and writes the tables into `sink` in index order.
async fn dump_in_order<R: TableReader>(
    readers: Vec<R>,
    table_count: usize,
    sink: &mut dyn DumpSink,
) -> Result<Arc<SpillStats>> {
    let budget = QueueBudget {
        ahead: Arc::new(Semaphore::new(AHEAD_QUEUE_KIB)),
        current: Arc::new(Semaphore::new(CURRENT_QUEUE_KIB)),
        writing: Arc::new(AtomicUsize::new(0)),
        stats: Arc::new(SpillStats::default()),
    };
    let mut channels = Vec::with_capacity(table_count);
    let mut slots = Vec::with_capacity(table_count);
    for _ in 0..table_count {
        let (queue_tx, queue_rx) = mpsc::channel(QUEUE_PIECES);
        let (done_tx, done_rx) = oneshot::channel();
        channels.push(TableChannel {
            queue: queue_rx,
            done: done_rx,
        });
        slots.push(std::sync::Mutex::new(Some(TableSlot {
            queue: queue_tx,
            done: done_tx,
        })));
    }
    let slots = Arc::new(slots);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = AbortOnDrop(Vec::new());
    for mut reader in readers {
        let (slots, next, budget) = (slots.clone(), next.clone(), budget.clone());
        workers.0.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(slot) = slots.get(index) else {
                    break;
                };
                let taken = slot.lock().ok().and_then(|mut slot| slot.take());
                let Some(TableSlot { queue, done }) = taken else {
                    return Err(Error::internal("table handed out twice"));
                };
                let mut output = TableOutput {
                    index,
                    budget: budget.clone(),
                    queue,
                    spill: None,
                };
                let result = reader.read_table(index, &mut output).await;
                // Closes the queue and lets go of any spill file.
                drop(output);
                let failed = result.is_err();
                let _ = done.send(result);
                if failed {
                    return Ok(());
                }
            }
            reader.finish().await
        }));
    }
    // Only workers hold the tables' slots now: if they all stop, the writer
    // sees every table they did not take as stopped rather than waiting.
    drop(slots);

    let mut buf = vec![0u8; CHUNK_BYTES];
    for (index, channel) in channels.into_iter().enumerate() {
        let TableChannel { mut queue, done } = channel;
        budget.writing.store(index, Ordering::Release);
        sink.begin_table(index).await?;
        // The queue closes when the worker finishes or fails the table.
        while let Some(piece) = queue.recv().await {
            match piece {
                Piece::Rows(bytes, rows, permit) => {
                    sink.rows(bytes, rows).await?;
                    drop(permit);
                }
                Piece::Spill(tail) => follow_spill(tail, &mut buf, sink).await?,
            }
        }
        done.await
            .map_err(|_| Error::internal("a table reader stopped unexpectedly"))??;
        sink.end_table().await?;
    }
    for handle in std::mem::take(&mut workers.0) {
        handle
            .await
            .map_err(|e| Error::internal(format!("table reader failed: {e}")))??;
    }
    let stats = &budget.stats;
    tracing::debug!(
        spill_files = stats.files.load(Ordering::Relaxed),
        spilled_bytes = stats.bytes.load(Ordering::Relaxed),
        spills_left_early = stats.left_early.load(Ordering::Relaxed),
        "parallel dump written in table order"
    );
    Ok(budget.stats)
}

/// Copies a spill file into the sink while its worker is still writing it,
/// until the worker lets go of it.
async fn follow_spill(tail: SpillTail, buf: &mut [u8], sink: &mut dyn DumpSink) -> Result<()> {
    let SpillTail {
        file,
        mut progress,
        read: shared_read,
    } = tail;
    let mut read = 0u64;
    let mut rows = 0u64;
    loop {
        let SpillProgress {
            bytes: written,
            rows: written_rows,
        } = *progress.borrow_and_update();
        while read < written {
            let want = usize::try_from(written - read)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            // Positional reads leave the worker's writes alone; the data was
            // just written, so it comes from the page cache.
            let n = file
                .read_at(&mut buf[..want], read)
                .map_err(|e| Error::storage_io("reading spill file", &e))?;
            if n == 0 {
                return Err(Error::internal("spill file shorter than written"));
            }
            read += n as u64;
            shared_read.store(read, Ordering::Release);
            let new_rows = if read == written {
                written_rows.saturating_sub(rows)
            } else {
                0
            };
            rows += new_rows;
            sink.rows(Bytes::copy_from_slice(&buf[..n]), new_rows)
                .await?;
        }
        if written_rows > rows {
            sink.rows(Bytes::new(), written_rows - rows).await?;
            rows = written_rows;
        }
        if progress.changed().await.is_err() {
            // The worker let go of the file and every update has been seen.
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fake table: `rows` rows of about `row_len` bytes, produced with a
    /// pause every `pause_every` rows, optionally failing or panicking.
    #[derive(Clone, Default)]
    struct FakeTable {
        rows: u64,
        row_len: usize,
        pause_every: u64,
        pause: Duration,
        fail_at: Option<u64>,
        panic_at: Option<u64>,
    }

    fn row(table: usize, i: u64, len: usize) -> Vec<u8> {
        let mut r = format!(",\n[{table},{i},\"").into_bytes();
        let fill = b'a' + ((i as usize + table) % 26) as u8;
        r.resize(r.len() + len.saturating_sub(r.len() + 2), fill);
        r.extend_from_slice(b"\"]");
        r
    }

    fn expected(table: usize, t: &FakeTable) -> Vec<u8> {
        (0..t.rows).flat_map(|i| row(table, i, t.row_len)).collect()
    }

    struct FakeReader {
        tables: Arc<Vec<FakeTable>>,
        fail_finish: bool,
    }

    #[async_trait]
    impl TableReader for FakeReader {
        async fn read_table(&mut self, index: usize, output: &mut dyn RowsTarget) -> Result<()> {
            let t = self.tables[index].clone();
            let mut out = Vec::new();
            let mut rows = 0;
            for i in 0..t.rows {
                if t.fail_at == Some(i) {
                    return Err(Error::internal(format!("boom in table {index}")));
                }
                assert!(t.panic_at != Some(i), "reader panics in table {index}");
                if t.pause_every > 0 && i % t.pause_every == 0 {
                    tokio::time::sleep(t.pause).await;
                }
                out.extend_from_slice(&row(index, i, t.row_len));
                rows += 1;
                if out.len() >= CHUNK_BYTES {
                    output
                        .put(Bytes::from(std::mem::take(&mut out)), rows)
                        .await?;
                    rows = 0;
                }
            }
            if !out.is_empty() || rows > 0 {
                output.put(Bytes::from(out), rows).await?;
            }
            Ok(())
        }

        async fn finish(self) -> Result<()> {
            if self.fail_finish {
                Err(Error::internal("commit failed"))
            } else {
                Ok(())
            }
        }
    }

    #[derive(Default)]
    struct MemorySink {
        tables: Vec<(Vec<u8>, u64)>,
        open: bool,
        fail_at_table: Option<usize>,
    }

    #[async_trait]
    impl DumpSink for MemorySink {
        async fn begin(&mut self, _: &SourceInfo, _: &[TableSchema]) -> Result<()> {
            Ok(())
        }
        async fn begin_table(&mut self, index: usize) -> Result<()> {
            assert!(!self.open && index == self.tables.len(), "tables in order");
            if self.fail_at_table == Some(index) {
                return Err(Error::internal("storage full"));
            }
            self.tables.push((Vec::new(), 0));
            self.open = true;
            Ok(())
        }
        async fn rows(&mut self, encoded: Bytes, rows: u64) -> Result<()> {
            assert!(self.open, "rows inside a table");
            let (bytes, count) = self.tables.last_mut().unwrap();
            bytes.extend_from_slice(&encoded);
            *count += rows;
            Ok(())
        }
        async fn end_table(&mut self) -> Result<()> {
            assert!(self.open);
            self.open = false;
            Ok(())
        }
    }

    fn readers(tables: &[FakeTable], count: usize) -> Vec<FakeReader> {
        let tables = Arc::new(tables.to_vec());
        (0..count)
            .map(|_| FakeReader {
                tables: tables.clone(),
                fail_finish: false,
            })
            .collect()
    }

    async fn run(
        readers: Vec<FakeReader>,
        count: usize,
        sink: &mut MemorySink,
    ) -> Result<Arc<SpillStats>> {
        tokio::time::timeout(Duration::from_secs(60), dump_in_order(readers, count, sink))
            .await
            .expect("the dump must not hang")
    }

    fn slow(rows: u64, row_len: usize) -> FakeTable {
        FakeTable {
            rows,
            row_len,
            pause_every: rows / 20 + 1,
            pause: Duration::from_millis(15),
            ..FakeTable::default()
        }
    }

    fn fast(rows: u64, row_len: usize) -> FakeTable {
        FakeTable {
            rows,
            row_len,
            ..FakeTable::default()
        }
    }

    /// Slow first table, so the next ones run ahead of the writer and spill;
    /// the last big one is still being written when its turn comes.
    fn mixed_tables() -> Vec<FakeTable> {
        vec![
            slow(2_000, 100),
            fast(60_000, 100),
            fast(0, 0),
            fast(3, 10),
            FakeTable {
                pause_every: 2_000,
                pause: Duration::from_millis(10),
                ..fast(80_000, 120)
            },
            fast(1, 300_000),
            fast(5_000, 40),
        ]
    }

    async fn assert_ordered_and_complete(readers_count: usize) -> Arc<SpillStats> {
        let tables = mixed_tables();
        let mut sink = MemorySink::default();
        let stats = run(readers(&tables, readers_count), tables.len(), &mut sink)
            .await
            .unwrap();
        assert_eq!(sink.tables.len(), tables.len());
        for (index, (t, (bytes, rows))) in tables.iter().zip(&sink.tables).enumerate() {
            assert_eq!(*rows, t.rows, "rows of table {index}");
            assert!(*bytes == expected(index, t), "bytes of table {index}");
        }
        stats
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tables_come_out_in_order_and_whole_through_spill_files() {
        let stats = assert_ordered_and_complete(2).await;
        assert!(stats.files.load(Ordering::Relaxed) > 0, "a table spilled");
        assert!(
            stats.left_early.load(Ordering::Relaxed) > 0,
            "a table went back to the queue once its turn came"
        );
        assert_ordered_and_complete(3).await;
        assert_ordered_and_complete(1).await;
    }

    #[tokio::test]
    async fn tables_come_out_in_order_on_a_single_threaded_runtime() {
        assert_ordered_and_complete(2).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_error_fails_the_dump_with_that_error() {
        // Fails while spilling ahead of its turn, while it is the writer's
        // table, and before producing anything.
        for (failing, fail_at) in [(1, 40_000), (0, 1_500), (3, 0)] {
            let mut tables = mixed_tables();
            tables[failing].fail_at = Some(fail_at);
            let mut sink = MemorySink::default();
            let err = run(readers(&tables, 2), tables.len(), &mut sink)
                .await
                .unwrap_err();
            assert_eq!(err.message, format!("boom in table {failing}"));
            assert!(sink.tables.len() <= failing + 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_panic_fails_the_dump() {
        for (panicking, panic_at) in [(1, 40_000), (0, 1_000), (4, 0)] {
            let mut tables = mixed_tables();
            tables[panicking].panic_at = Some(panic_at);
            let mut sink = MemorySink::default();
            let err = run(readers(&tables, 2), tables.len(), &mut sink)
                .await
                .unwrap_err();
            assert!(
                err.message.contains("stopped unexpectedly"),
                "{}",
                err.message
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_commit_fails_the_dump() {
        let tables = mixed_tables();
        let mut readers = readers(&tables, 2);
        readers[1].fail_finish = true;
        let mut sink = MemorySink::default();
        let err = run(readers, tables.len(), &mut sink).await.unwrap_err();
        assert_eq!(err.message, "commit failed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sink_error_stops_the_readers() {
        let crawling = FakeTable {
            pause_every: 1_000,
            pause: Duration::from_millis(50),
            ..fast(100_000, 100)
        };
        let tables = vec![fast(20_000, 100), crawling, fast(20_000, 100)];
        let mut sink = MemorySink {
            fail_at_table: Some(1),
            ..MemorySink::default()
        };
        let started = std::time::Instant::now();
        let err = run(readers(&tables, 2), tables.len(), &mut sink)
            .await
            .unwrap_err();
        assert_eq!(err.message, "storage full");
        // The crawling table alone would take five seconds.
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn permits_stay_within_the_budget() {
        assert_eq!(permits_for(0, 8), 1);
        assert_eq!(permits_for(1024, 8), 1);
        assert_eq!(permits_for(1025, 8), 2);
        assert_eq!(permits_for(100 * 1024 * 1024, 8), 8);
    }
}
