//! Database engines. Each reads every user table in one consistent snapshot
//! and hands rows, already encoded as JSON arrays, to a `DumpSink`.

pub mod json_row;
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
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

/// How the values of a column appear in the rows of a backup file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// A JSON number (integers).
    Number,
    /// A JSON number, or "NaN", "Infinity", "-Infinity" as strings.
    Float,
    /// true or false.
    Bool,
    /// The database's canonical text form, as a JSON string.
    Text,
    /// Binary data as a base64 string.
    Base64,
    /// A JSON value embedded as is (jsonb).
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnSchema {
    pub name: String,
    /// The SQL type as the database spells it, e.g. `numeric(14,2)`.
    #[serde(rename = "type")]
    pub sql_type: String,
    pub encoding: ValueEncoding,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub references_schema: String,
    pub references_table: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableSchema {
    pub schema: String,
    pub name: String,
    pub columns: Vec<ColumnSchema>,
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub foreign_keys: Vec<ForeignKey>,
}

impl TableSchema {
    /// A table of nullable text columns and no keys, for unit tests.
    #[cfg(test)]
    pub(crate) fn of_text(schema: &str, name: &str, columns: &[&str]) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
            columns: columns
                .iter()
                .map(|c| ColumnSchema {
                    name: (*c).into(),
                    sql_type: "text".into(),
                    encoding: ValueEncoding::Text,
                    nullable: true,
                })
                .collect(),
            primary_key: vec![],
            foreign_keys: vec![],
        }
    }

    /// `schema.name`, the key of row counts.
    pub fn qualified_name(&self) -> String {
        if self.schema.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceInfo {
    pub engine: String,
    pub server_version: String,
}

/// Receives a dump in file order: the document URLs if it asks for any,
/// `begin` once, then for every table in the
/// order given to `begin`, `begin_table`, any number of `rows`, `end_table`.
#[async_trait]
pub trait DumpSink: Send {
    /// Columns holding document URLs the source should read in its snapshot
    /// (see `documents`); none by default.
    fn document_columns(&self) -> &[crate::documents::columns::ColumnRef] {
        &[]
    }
    /// One distinct document URL from those columns, sorted, all before `begin`.
    async fn document_url(&mut self, _url: &str) -> Result<()> {
        Ok(())
    }
    async fn begin(&mut self, source: &SourceInfo, tables: &[TableSchema]) -> Result<()>;
    async fn begin_table(&mut self, index: usize) -> Result<()>;
    /// `encoded` holds `rows` rows, each written as `,\n[v1,v2,...]`.
    async fn rows(&mut self, encoded: Bytes, rows: u64) -> Result<()>;
    async fn end_table(&mut self) -> Result<()>;
}

/// A database that can be backed up.
#[async_trait]
pub trait Source: Send + Sync {
    fn engine(&self) -> &'static str;
    /// Fails when the database cannot be reached.
    async fn ping(&self) -> Result<()>;
    /// Streams every user table, in one snapshot, into `sink`.
    async fn dump(&self, sink: &mut dyn DumpSink) -> Result<()>;
}

/// Progress of a restore: one table's rows so far.
#[derive(Debug, Clone, Default)]
pub struct TableProgress {
    pub table: String,
    pub rows_done: u64,
    pub tables_done: u32,
    pub tables_total: u32,
}

/// A check run just before commit; failing it rolls the restore back.
pub type CommitGuard<'a> = &'a (dyn Fn() -> Result<()> + Send + Sync);

/// A database a backup can be restored into.
#[async_trait]
pub trait Target: Send + Sync {
    fn engine(&self) -> &'static str;
    /// Why these tables cannot be restored here, table by table and column
    /// by column; empty when they can.
    async fn schema_problems(&self, tables: &[TableSchema]) -> Result<Vec<String>>;
    /// Replaces the rows of every table in the file with the file's rows, in
    /// one transaction; returns rows loaded per table.
    async fn load(
        &self,
        reader: &mut crate::format::reader::BackupReader,
        progress: &mut (dyn FnMut(TableProgress) + Send),
        before_commit: CommitGuard<'_>,
    ) -> Result<std::collections::BTreeMap<String, u64>>;
}

/// Opens a restore target by URL.
pub async fn open_target(url: &str) -> Result<Arc<dyn Target>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(pg_restore::PostgresTarget::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite_restore::SqliteTarget::open(url).await?))
    } else {
        Err(Error::invalid(format!(
            "target URL {}: unsupported scheme (use postgres://, postgresql:// or sqlite:)",
            crate::redact::redact_url(url)
        )))
    }
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
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresSource::connect(url, parallelism).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteSource::open(url).await?))
    } else {
        Err(Error::invalid(format!(
            "DATABASE_URL {}: unsupported scheme (use postgres://, postgresql:// or sqlite:)",
            crate::redact::redact_url(url)
        )))
    }
}

/// Appends `s` as a JSON string literal (quotes included).
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        push_json_escaped_byte(out, b);
    }
    out.push(b'"');
}

/// Appends one byte of a UTF-8 string, escaped for a JSON string body.
#[inline]
pub fn push_json_escaped_byte(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        0..=0x1f => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
        }
        _ => out.push(b),
    }
}

/// Quotes an SQL identifier: `"User"`, `"my ""odd"" name"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
