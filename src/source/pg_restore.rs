//! Restoring into PostgreSQL: one transaction that empties the backup's
//! tables, loads them parents first with `COPY ... FROM STDIN`, moves
//! sequences past the restored maximum right before commit.

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Executor, PgPool, Postgres, Row, Transaction};

use super::pg_load::CopyEncoder;
use super::postgres::{connect_pool, is_cockroach, read_schema};
use super::{
    RowSource, TableLoader, TableSchema, Target, ValueEncoding, compare_schemas, quote_ident,
};
use crate::error::{Error, Result};

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

    async fn prepare(&self, tables: &[TableSchema]) -> Result<Box<dyn TableLoader>> {
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
        Ok(Box::new(PostgresLoader {
            tx,
            tables: tables.to_vec(),
            buf: Vec::with_capacity(SEND_BYTES + 64 * 1024),
        }))
    }
}

/// The restore transaction; tables are loaded with `COPY ... FROM STDIN`.
struct PostgresLoader {
    tx: Transaction<'static, Postgres>,
    tables: Vec<TableSchema>,
    buf: Vec<u8>,
}

#[async_trait]
impl TableLoader for PostgresLoader {
    async fn load_table(&mut self, table: &TableSchema, rows: &mut dyn RowSource) -> Result<u64> {
        copy_rows(&mut self.tx, rows, table, &mut self.buf).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        // setval is not undone by a rollback, so sequences move only now.
        for table in &self.tables {
            reset_sequences(&mut self.tx, table).await?;
        }
        self.tx
            .commit()
            .await
            .map_err(|e| Error::database("committing the restore", &e))
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.tx
            .rollback()
            .await
            .map_err(|e| Error::database("rolling back the restore", &e))
    }
}

/// Streams one table's rows through `COPY FROM STDIN`.
async fn copy_rows(
    conn: &mut sqlx::PgConnection,
    rows: &mut dyn RowSource,
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
    while let Some(row) = rows.next_row().await? {
        encoder.encode(row, buf)?;
        if buf.len() >= SEND_BYTES {
            sink.send(buf.as_slice())
                .await
                .map_err(|e| Error::database(&what, &e))?;
            buf.clear();
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
