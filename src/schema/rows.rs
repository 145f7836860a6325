//! How rows reach an engine during a restore: one table at a time, through
//! this trait rather than the file reader, so engines need not know the
//! file format.

use async_trait::async_trait;

use crate::error::Result;

/// The rows of one table, each a JSON array with one value per column.
#[async_trait]
pub trait RowSource: Send {
    /// The next row, or None once the table's rows are all read.
    async fn next_row(&mut self) -> Result<Option<&[u8]>>;
}
