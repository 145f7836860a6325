//! What a database dump is written into.

use async_trait::async_trait;
use bytes::Bytes;

use super::{ColumnRef, SourceInfo, TableSchema};
use crate::error::Result;

/// Receives a dump in file order: the document URLs if it asks for any,
/// `begin` once, then for every table in the
/// order given to `begin`, `begin_table`, any number of `rows`, `end_table`.
#[async_trait]
pub trait DumpSink: Send {
    /// Columns holding document URLs the source should read in its snapshot
    /// (see `documents`); none by default.
    fn document_columns(&self) -> &[ColumnRef] {
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
