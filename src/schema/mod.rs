//! The ground floor: the words `format`, `source`, `documents` and `backup`
//! all speak (tables and their columns, dump sinks, progress, the JSON and
//! SQL quoting helpers, the error for a damaged file). It imports nothing
//! from those modules, so none of them needs another's internals.

mod document;
mod json;
mod progress;
mod rows;
mod sink;
mod table;

pub use document::{ColumnRef, MissingDocument};
pub use json::{push_json_escaped_byte, push_json_string};
pub use progress::{Progress, TableProgress};
pub use rows::RowSource;
pub use sink::DumpSink;
pub use table::{ColumnSchema, ForeignKey, SourceInfo, TableSchema, ValueEncoding, quote_ident};

use crate::error::{Error, ErrorCode};

/// The error for a file that is not a complete, untampered backup.
pub fn corrupt(message: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::FailedPrecondition,
        format!("backup file failed verification: {message}"),
    )
}
