//! Tables as a backup file describes them, and SQL identifier quoting.

use serde::{Deserialize, Serialize};

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

/// Quotes an SQL identifier: `"User"`, `"my ""odd"" name"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
