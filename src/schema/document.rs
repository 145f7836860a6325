//! Document vocabulary shared by the dump, the file format and the catalog.

use serde::{Deserialize, Serialize};

use super::quote_ident;

/// A document that could not be fetched, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingDocument {
    pub url: String,
    pub reason: String,
}

/// A column that holds document URLs (`DOCUMENT_COLUMNS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    pub schema: Option<String>,
    pub table: String,
    pub column: String,
}

impl std::fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{}.", quote_ident(schema))?;
        }
        write!(
            f,
            "{}.{}",
            quote_ident(&self.table),
            quote_ident(&self.column)
        )
    }
}
