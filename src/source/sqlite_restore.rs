//! Restoring into SQLite: one transaction, foreign keys checked at commit,
//! rows emptied children first and inserted parents first.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Arguments, AssertSqlSafe, Executor, Row, Sqlite, SqlitePool, Transaction};

use super::{
    ColumnSchema, RowSource, TableLoader, TableSchema, Target, ValueEncoding, compare_schemas,
    quote_ident,
};
use crate::error::{Error, Result};
use crate::format::json_row::{decode_string, split_values};
use crate::schema::corrupt;

pub struct SqliteTarget {
    pool: SqlitePool,
}

impl SqliteTarget {
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("target URL {url}: {e}")))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| Error::database("opening the SQLite target", &e))?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Target for SqliteTarget {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn schema_problems(&self, tables: &[TableSchema]) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for table in tables {
            let rows = sqlx::query("SELECT name, type FROM pragma_table_info(?) ORDER BY cid")
                .bind(&table.name)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| Error::database("reading the target schema", &e))?;
            if rows.is_empty() {
                continue;
            }
            let mut columns = Vec::new();
            for row in rows {
                columns.push(ColumnSchema {
                    name: row.try_get(0).map_err(|e| Error::database("columns", &e))?,
                    sql_type: row.try_get(1).map_err(|e| Error::database("columns", &e))?,
                    encoding: ValueEncoding::Text,
                    nullable: true,
                });
            }
            found.push(TableSchema {
                schema: table.schema.clone(),
                name: table.name.clone(),
                columns,
                primary_key: Vec::new(),
                foreign_keys: Vec::new(),
            });
        }
        Ok(compare_schemas(tables, &found))
    }

    async fn prepare(&self, tables: &[TableSchema]) -> Result<Box<dyn TableLoader>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| Error::database("starting the restore transaction", &e))?;
        tx.execute("PRAGMA defer_foreign_keys = ON")
            .await
            .map_err(|e| Error::database("deferring foreign keys", &e))?;
        for table in tables.iter().rev() {
            let sql = format!("DELETE FROM {}", quote_ident(&table.name));
            tx.execute(AssertSqlSafe(sql))
                .await
                .map_err(|e| Error::database(&format!("emptying {}", table.name), &e))?;
        }
        Ok(Box::new(SqliteLoader { tx }))
    }
}

/// The restore transaction; rows are inserted one statement each.
struct SqliteLoader {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl TableLoader for SqliteLoader {
    async fn load_table(&mut self, table: &TableSchema, rows: &mut dyn RowSource) -> Result<u64> {
        let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let marks = vec!["?"; columns.len()].join(", ");
        let insert: Arc<str> = Arc::from(format!(
            "INSERT INTO {} ({}) VALUES ({marks})",
            quote_ident(&table.name),
            columns.join(", ")
        ));
        let encodings: Vec<ValueEncoding> = table.columns.iter().map(|c| c.encoding).collect();
        let mut text = Vec::new();
        let mut loaded = 0u64;
        while let Some(row) = rows.next_row().await? {
            let mut values = Vec::with_capacity(encodings.len());
            split_values(row, &mut values)?;
            let mut args = SqliteArguments::default();
            for (raw, encoding) in values.iter().zip(&encodings) {
                bind_value(&mut args, raw, *encoding, &mut text)?;
            }
            sqlx::query_with(AssertSqlSafe(insert.clone()), args)
                .execute(&mut *self.tx)
                .await
                .map_err(|e| Error::database("inserting a row", &e))?;
            loaded += 1;
        }
        Ok(loaded)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
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

/// A storage class tagged by the dump: `{"blob": b64}`, `{"text": s}`, `{"real": "Infinity"}`.
fn bind_tagged(args: &mut SqliteArguments, raw: &[u8]) -> Result<()> {
    let value: std::collections::BTreeMap<String, String> = serde_json::from_slice(raw)
        .map_err(|_| corrupt("unexpected object value in a SQLite backup"))?;
    let bound = match value.iter().next().map(|(k, v)| (k.as_str(), v.as_str())) {
        Some(("blob", b64)) if value.len() == 1 => args.add(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| corrupt(format!("bad base64 value: {e}")))?,
        ),
        Some(("text", text)) if value.len() == 1 => args.add(text.to_string()),
        Some(("real", name)) if value.len() == 1 => args.add(match name {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => return Err(corrupt("bad tagged real value")),
        }),
        _ => return Err(corrupt("unexpected object value in a SQLite backup")),
    };
    bound.map_err(|e| Error::internal(format!("binding a value: {e}")))
}

fn bind_value(
    args: &mut SqliteArguments,
    raw: &[u8],
    encoding: ValueEncoding,
    text: &mut Vec<u8>,
) -> Result<()> {
    if raw.first() == Some(&b'{') && encoding != ValueEncoding::Json {
        return bind_tagged(args, raw);
    }
    let bound = match raw.first() {
        _ if raw == b"null" => args.add(None::<i64>),
        _ if raw == b"true" => args.add(1i64),
        _ if raw == b"false" => args.add(0i64),
        Some(b'"') if encoding != ValueEncoding::Json => {
            text.clear();
            decode_string(raw, text)?;
            match encoding {
                ValueEncoding::Base64 => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(&*text)
                        .map_err(|e| corrupt(format!("bad base64 value: {e}")))?;
                    args.add(bytes)
                }
                ValueEncoding::Float => match text.as_slice() {
                    b"NaN" => args.add(f64::NAN),
                    b"Infinity" => args.add(f64::INFINITY),
                    b"-Infinity" => args.add(f64::NEG_INFINITY),
                    _ => args.add(String::from_utf8_lossy(text).into_owned()),
                },
                _ => args.add(
                    String::from_utf8(text.clone()).map_err(|_| corrupt("text is not UTF-8"))?,
                ),
            }
        }
        Some(b'{' | b'[' | b'"') => args.add(String::from_utf8_lossy(raw).into_owned()),
        _ => {
            let number = std::str::from_utf8(raw).map_err(|_| corrupt("bad number"))?;
            match number.parse::<i64>() {
                Ok(i) => args.add(i),
                Err(_) => args.add(number.parse::<f64>().map_err(|_| corrupt("bad number"))?),
            }
        }
    };
    bound.map_err(|e| Error::internal(format!("binding a value: {e}")))
}
