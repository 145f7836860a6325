//! The one restore driver: walks a backup file with the reader, hands each
//! table's rows to the engine's `TableLoader`, reports progress, checks rows
//! loaded against rows read and, before commit, the caller's last check
//! (the file's digest). Any failure rolls the whole restore back.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::format::reader::{BackupReader, Event};
use crate::schema::{RowSource, TableProgress, TableSchema, corrupt};
use crate::source::{TableLoader, Target};

/// Replaces the rows of every table in the file with the file's rows, in one
/// transaction; returns rows loaded per table.
pub(super) async fn load_file(
    target: &dyn Target,
    reader: &mut BackupReader,
    progress: &mut (dyn FnMut(TableProgress) + Send),
    before_commit: impl FnOnce() -> Result<()>,
) -> Result<BTreeMap<String, u64>> {
    let tables = reader.header().tables.clone();
    let mut loader = target.prepare(&tables).await?;
    let loaded = load_tables(loader.as_mut(), reader, &tables, progress).await;
    match loaded.and_then(|counts| before_commit().map(|()| counts)) {
        Ok(counts) => {
            loader.commit().await?;
            Ok(counts)
        }
        Err(e) => {
            // The first error is the one worth reporting; dropping the
            // transaction rolls it back as well.
            let _ = loader.rollback().await;
            Err(e)
        }
    }
}

async fn load_tables(
    loader: &mut dyn TableLoader,
    reader: &mut BackupReader,
    tables: &[TableSchema],
    progress: &mut (dyn FnMut(TableProgress) + Send),
) -> Result<BTreeMap<String, u64>> {
    let total = tables.len() as u32;
    let mut counts = BTreeMap::new();
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
        let table = tables
            .get(index)
            .ok_or_else(|| corrupt("table index outside the header"))?;
        progress(TableProgress {
            table: table.qualified_name(),
            rows_done: 0,
            tables_done,
            tables_total: total,
        });
        let loaded = if empty {
            0
        } else {
            load_one(loader, reader, table).await?
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
    Ok(counts)
}

/// One table's rows, from its start marker to its end marker.
async fn load_one(
    loader: &mut dyn TableLoader,
    reader: &mut BackupReader,
    table: &TableSchema,
) -> Result<u64> {
    let mut rows = TableRows {
        reader,
        passed: 0,
        ended: false,
    };
    let loaded = loader.load_table(table, &mut rows).await?;
    if !rows.ended || loaded != rows.passed {
        return Err(Error::internal(format!(
            "table {}: loaded {loaded} of {} rows handed over",
            table.qualified_name(),
            rows.passed
        )));
    }
    Ok(loaded)
}

/// The reader, limited to the rows of the current table.
struct TableRows<'r> {
    reader: &'r mut BackupReader,
    passed: u64,
    ended: bool,
}

#[async_trait]
impl RowSource for TableRows<'_> {
    async fn next_row(&mut self) -> Result<Option<&[u8]>> {
        if self.ended {
            return Ok(None);
        }
        match self.reader.next().await? {
            Some(Event::Row(row)) => {
                self.passed += 1;
                Ok(Some(row))
            }
            Some(Event::TableEnd(_)) => {
                self.ended = true;
                Ok(None)
            }
            _ => Err(corrupt("table section is not closed")),
        }
    }
}
