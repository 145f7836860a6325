//! SQLite, the embedded default, as a backup source. One read transaction
//! gives a consistent snapshot; values are written by their storage class.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Row, SqlitePool, TypeInfo, ValueRef};

use super::order::parents_first;
use super::{
    ColumnSchema, DumpSink, ForeignKey, Source, SourceInfo, TableSchema, ValueEncoding,
    push_json_string, quote_ident,
};
use crate::error::{Error, Result};

const CHUNK_BYTES: usize = 128 * 1024;

pub struct SqliteSource {
    pool: SqlitePool,
}

impl SqliteSource {
    /// Opens (creating if missing) the database file a `sqlite:` URL names.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid(format!("DATABASE_URL {url}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let path = options.get_filename().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| Error::storage_io(&format!("creating {}", dir.display()), &e))?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| Error::database("opening SQLite database", &e))?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Source for SqliteSource {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        super::ping_with_timeout(sqlx::query("SELECT 1").execute(&self.pool)).await
    }

    fn slot_lease(&self) -> std::sync::Arc<dyn super::lease::SlotLease> {
        std::sync::Arc::new(super::lease::LocalLease)
    }

    async fn dump(&self, sink: &mut dyn DumpSink) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| Error::database("starting read transaction", &e))?;
        // The first read fixes the snapshot for the rest of the transaction.
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::database("reading SQLite version", &e))?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| Error::database("listing tables", &e))?;
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            tables.push(read_table(&mut tx, name).await?);
        }
        let tables = parents_first(tables);
        if let Some(sql) = super::document_url_query(&tables, sink)? {
            let mut urls = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).fetch(&mut *tx);
            while let Some(url) = urls.next().await {
                let url = url.map_err(|e| Error::database("reading document URLs", &e))?;
                sink.document_url(&url).await?;
            }
        }
        let info = SourceInfo {
            engine: "sqlite".into(),
            server_version: version,
        };
        sink.begin(&info, &tables).await?;
        for (index, table) in tables.iter().enumerate() {
            sink.begin_table(index).await?;
            let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
            let sql = format!(
                "SELECT {} FROM {}",
                columns.join(", "),
                quote_ident(&table.name)
            );
            let what = format!("reading table {}", table.name);
            let encodings: Vec<ValueEncoding> = table.columns.iter().map(|c| c.encoding).collect();
            let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *tx);
            let mut out = Vec::with_capacity(CHUNK_BYTES + 4096);
            let mut count = 0;
            while let Some(row) = rows.next().await {
                let row = row.map_err(|e| Error::database(&what, &e))?;
                encode_row(&row, &encodings, &mut out)?;
                count += 1;
                if out.len() >= CHUNK_BYTES {
                    let piece = std::mem::replace(&mut out, Vec::with_capacity(CHUNK_BYTES + 4096));
                    sink.rows(Bytes::from(piece), count).await?;
                    count = 0;
                }
            }
            drop(rows);
            if count > 0 {
                sink.rows(Bytes::from(out), count).await?;
            }
            sink.end_table().await?;
        }
        tx.commit()
            .await
            .map_err(|e| Error::database("ending read transaction", &e))
    }
}

async fn read_table(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    name: String,
) -> Result<TableSchema> {
    let info =
        sqlx::query("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY cid")
            .bind(&name)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| Error::database("reading columns", &e))?;
    let mut columns = Vec::new();
    let mut keys = Vec::new();
    for row in info {
        let column: String = row.try_get(0).map_err(|e| Error::database("columns", &e))?;
        let sql_type: String = row.try_get(1).map_err(|e| Error::database("columns", &e))?;
        let not_null: i64 = row.try_get(2).map_err(|e| Error::database("columns", &e))?;
        let pk: i64 = row.try_get(3).map_err(|e| Error::database("columns", &e))?;
        if pk > 0 {
            keys.push((pk, column.clone()));
        }
        columns.push(ColumnSchema {
            encoding: affinity(&sql_type),
            name: column,
            sql_type,
            nullable: not_null == 0,
        });
    }
    keys.sort();
    let parents: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?)")
            .bind(&name)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| Error::database("reading foreign keys", &e))?;
    Ok(TableSchema {
        schema: String::new(),
        name,
        columns,
        primary_key: keys.into_iter().map(|(_, c)| c).collect(),
        foreign_keys: parents
            .into_iter()
            .map(|parent| ForeignKey {
                columns: Vec::new(),
                references_schema: String::new(),
                references_table: parent,
            })
            .collect(),
    })
}

/// SQLite's type affinity rules, as far as the file's column metadata goes.
fn affinity(declared: &str) -> ValueEncoding {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        ValueEncoding::Number
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        ValueEncoding::Text
    } else if t.contains("BLOB") || t.is_empty() {
        ValueEncoding::Base64
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ValueEncoding::Float
    } else {
        ValueEncoding::Text
    }
}

/// Writes one row by the values' storage classes. A value the column's
/// encoding would misread on restore is tagged: `{"blob": base64}`,
/// `{"text": string}` or `{"real": "Infinity"}` (docs/backup-format.md).
fn encode_row(
    row: &sqlx::sqlite::SqliteRow,
    encodings: &[ValueEncoding],
    out: &mut Vec<u8>,
) -> Result<()> {
    out.extend_from_slice(b",\n[");
    for (i, encoding) in encodings.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let raw = row
            .try_get_raw(i)
            .map_err(|e| Error::database("reading value", &e))?;
        if raw.is_null() {
            out.extend_from_slice(b"null");
            continue;
        }
        let class = raw.type_info().name().to_string();
        let decode = |e: sqlx::Error| Error::database("decoding value", &e);
        match class.as_str() {
            "INTEGER" => {
                let v: i64 = row.try_get_unchecked(i).map_err(decode)?;
                out.extend_from_slice(v.to_string().as_bytes());
            }
            "REAL" => {
                let v: f64 = row.try_get_unchecked(i).map_err(decode)?;
                if v.is_finite() {
                    out.extend_from_slice(format!("{v:?}").as_bytes());
                } else {
                    let name = if v.is_nan() {
                        "NaN"
                    } else if v > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    };
                    tagged(out, *encoding != ValueEncoding::Float, "real", name);
                }
            }
            "BLOB" => {
                let v: Vec<u8> = row.try_get_unchecked(i).map_err(decode)?;
                let encoded = base64::engine::general_purpose::STANDARD.encode(v);
                tagged(out, *encoding != ValueEncoding::Base64, "blob", &encoded);
            }
            _ => {
                let v: String = row.try_get_unchecked(i).map_err(decode)?;
                let ambiguous = matches!(encoding, ValueEncoding::Base64 | ValueEncoding::Float);
                tagged(out, ambiguous, "text", &v);
            }
        }
    }
    out.push(b']');
    Ok(())
}

/// A JSON string, wrapped as `{"tag": "..."}` when `tag_it`.
fn tagged(out: &mut Vec<u8>, tag_it: bool, tag: &str, value: &str) {
    if tag_it {
        out.push(b'{');
        push_json_string(out, tag);
        out.push(b':');
        push_json_string(out, value);
        out.push(b'}');
    } else {
        push_json_string(out, value);
    }
}
