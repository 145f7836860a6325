//! Restoring into PostgreSQL: one transaction that empties the backup's
//! tables, loads them parents first with `COPY ... FROM STDIN`, moves
//! sequences past the restored maximum and checks row counts before commit.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor, PgPool, Row};

use super::pg_load::CopyEncoder;
use super::postgres::{connect_pool, is_cockroach, read_schema};
use super::{
    CommitGuard, TableProgress, TableSchema, Target, ValueEncoding, compare_schemas, quote_ident,
};
use crate::error::{Error, Result};
use crate::format::reader::{BackupReader, Event};
use crate::schema::corrupt;

const SEND_BYTES: usize = 256 * 1024;

pub struct PostgresTarget {
    pool: PgPool,
}

impl PostgresTarget {
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self {
            pool: connect_pool(url, 2)?,
        })
    }
}

fn qualified(table: &TableSchema) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

#[async_trait]
impl Target for PostgresTarget {
    fn engine(&self) -> &'static str {
        "postgresql"
    }

    async fn schema_problems(&self, tables: &[TableSchema]) -> Result<Vec<String>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| Error::database("connecting to the restore target", &e))?;
        let cockroach = is_cockroach(&mut conn).await?;
        let found = read_schema(&mut conn, cockroach).await?;
        Ok(compare_schemas(tables, &found))
    }

    async fn load(
        &self,
        reader: &mut BackupReader,
        progress: &mut (dyn FnMut(TableProgress) + Send),
        before_commit: CommitGuard<'_>,
    ) -> Result<BTreeMap<String, u64>> {
        let tables = reader.header().tables.clone();
        let total = tables.len() as u32;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| Error::database("starting the restore transaction", &e))?;
        let cockroach = is_cockroach(&mut tx).await?;
        if !tables.is_empty() {
            if cockroach {
                for table in tables.iter().rev() {
                    let sql = format!("DELETE FROM {}", qualified(table));
                    tx.execute(AssertSqlSafe(sql)).await.map_err(|e| {
                        Error::database(&format!("emptying {}", table.qualified_name()), &e)
                    })?;
                }
            } else {
                // One statement empties every table at once, so foreign keys between them are no obstacle.
                let names: Vec<String> = tables.iter().map(qualified).collect();
                let sql = format!("TRUNCATE TABLE {}", names.join(", "));
                tx.execute(AssertSqlSafe(sql))
                    .await
                    .map_err(|e| Error::database("emptying the target tables", &e))?;
            }
        }

        let mut counts = BTreeMap::new();
        let mut buf: Vec<u8> = Vec::with_capacity(SEND_BYTES + 64 * 1024);
        let mut tables_done = 0u32;
        loop {
            let (index, empty) = match reader.next().await? {
                None => break,
                Some(Event::TableStart(index)) => (index, false),
                Some(Event::TableEnd(index)) => (index, true),
                Some(Event::Row(_)) => return Err(corrupt("row outside a table")),
                // Documents are checked by the reader, not loaded into the database.
                Some(Event::Document(_)) => continue,
            };
            let table = &tables[index];
            progress(TableProgress {
                table: table.qualified_name(),
                rows_done: 0,
                tables_done,
                tables_total: total,
            });
            let loaded = if empty {
                0
            } else {
                copy_rows(&mut tx, reader, table, &mut buf).await?
            };
            let expected = reader.rows_read(index);
            if loaded != expected {
                return Err(Error::internal(format!(
                    "table {}: loaded {loaded} rows but the backup holds {expected}",
                    table.qualified_name()
                )));
            }
            tables_done += 1;
            counts.insert(table.qualified_name(), loaded);
            progress(TableProgress {
                table: table.qualified_name(),
                rows_done: loaded,
                tables_done,
                tables_total: total,
            });
        }

        // Checked before sequences move: setval is not undone by a rollback.
        before_commit()?;
        for table in &tables {
            reset_sequences(&mut tx, table).await?;
        }
        tx.commit()
            .await
            .map_err(|e| Error::database("committing the restore", &e))?;
        Ok(counts)
    }
}

/// Streams one table's rows (up to its end marker) through `COPY FROM STDIN`.
async fn copy_rows(
    conn: &mut sqlx::PgConnection,
    reader: &mut BackupReader,
    table: &TableSchema,
    buf: &mut Vec<u8>,
) -> Result<u64> {
    let what = format!("loading {}", table.qualified_name());
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let sql = format!(
        "COPY {} ({}) FROM STDIN",
        qualified(table),
        columns.join(", ")
    );
    let mut encoder = CopyEncoder::new(table.columns.iter().map(|c| c.encoding).collect());
    let mut sink = conn
        .copy_in_raw(&sql)
        .await
        .map_err(|e| Error::database(&what, &e))?;
    buf.clear();
    loop {
        match reader.next().await? {
            Some(Event::Row(row)) => {
                encoder.encode(row, buf)?;
                if buf.len() >= SEND_BYTES {
                    sink.send(buf.as_slice())
                        .await
                        .map_err(|e| Error::database(&what, &e))?;
                    buf.clear();
                }
            }
            Some(Event::TableEnd(_)) => break,
            _ => return Err(corrupt("table section is not closed")),
        }
    }
    if !buf.is_empty() {
        sink.send(buf.as_slice())
            .await
            .map_err(|e| Error::database(&what, &e))?;
        buf.clear();
    }
    sink.finish().await.map_err(|e| Error::database(&what, &e))
}

/// Sets every sequence owned by an integer column (serial or identity) to
/// the largest restored value, as pg_restore leaves it. setval is not
/// transactional: it runs after every other check, right before COMMIT.
async fn reset_sequences(conn: &mut sqlx::PgConnection, table: &TableSchema) -> Result<()> {
    let name = qualified(table);
    for column in table
        .columns
        .iter()
        .filter(|c| c.encoding == ValueEncoding::Number)
    {
        let sequence: Option<String> = sqlx::query("SELECT pg_get_serial_sequence($1, $2)::text")
            .bind(&name)
            .bind(&column.name)
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|e| Error::database("looking up sequences", &e))?;
        let Some(sequence) = sequence else { continue };
        let sql = format!(
            "SELECT setval($1::regclass, m) FROM (SELECT MAX({}) AS m FROM {name}) s WHERE m IS NOT NULL",
            quote_ident(&column.name)
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(&sequence)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| Error::database(&format!("resetting sequence {sequence}"), &e))?;
    }
    Ok(())
}
