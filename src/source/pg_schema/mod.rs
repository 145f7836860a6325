//! PostgreSQL schema capture and apply, without pg_dump.
//!
//! `capture` reads the catalogs inside the caller's snapshot transaction and
//! renders every object as SQL, mostly through the server's own `pg_get_*def`
//! functions. The result is plain data (ordered statements per restore phase)
//! so it can travel in a backup file's header. `apply_pre_data` and
//! `apply_post_data` replay it inside the caller's transaction, in pg_dump's
//! restore order: pre-data, rows, post-data. See docs/schema-capture.md.

mod apply;
mod catalog;
mod comments;
mod constraints;
mod not_captured;
mod privileges;
mod routines;
mod sequences;
mod tables;
mod types;
mod views;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::error::Result;

pub use apply::{apply_post_data, apply_pre_data, drop_objects};

/// One SQL statement that creates (or alters) one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// What the object is, e.g. `table`, `index`, `foreign key`.
    pub kind: String,
    pub schema: String,
    /// The object's name; `table.name` for objects named per table
    /// (constraints, triggers), `name(args)` for functions.
    pub name: String,
    /// Already quoted and fully schema-qualified; may hold several
    /// statements separated by `;`.
    pub sql: String,
}

/// A table whose rows are loaded between the two phases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

/// A sequence's exact position, as `setval(seq, last_value, is_called)` needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequenceState {
    pub schema: String,
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
}

/// An object the snapshot does not reproduce, so a header can say so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotCaptured {
    pub kind: String,
    /// Empty for objects that live outside schemas (publications, ...).
    pub schema: String,
    pub name: String,
}

/// Everything needed to recreate a database's schema around its rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaSnapshot {
    /// `server_version_num` of the source, e.g. 150020.
    pub server_version_num: i32,
    /// Schemas, extensions, types, functions, sequences, tables, views and
    /// materialized views (WITH NO DATA), in creation order.
    pub pre_data: Vec<Statement>,
    /// Tables that hold rows (no partitioned parents), parents before children.
    pub data_tables: Vec<TableName>,
    /// Keys, indexes, foreign keys, triggers, materialized view refreshes,
    /// sequence positions and comments, in that order.
    pub post_data: Vec<Statement>,
    /// Every sequence's position at the snapshot (also set in `post_data`).
    pub sequences: Vec<SequenceState>,
    /// Owners and grants, applied only with `ApplyOptions::owners_and_grants`.
    pub owners_and_grants: Vec<Statement>,
    /// Drops of the snapshot's objects, in reverse dependency order.
    pub drops: Vec<Statement>,
    /// What the snapshot does not reproduce.
    pub not_captured: Vec<NotCaptured>,
}

/// How a snapshot is replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Also set owners and grants (the target must have the roles).
    pub owners_and_grants: bool,
}

/// Reads the schema of the connected database. Runs inside the caller's
/// transaction (REPEATABLE READ, so schema and rows share one snapshot);
/// the transaction's `search_path` is left as it was.
pub async fn capture(conn: &mut PgConnection) -> Result<SchemaSnapshot> {
    let saved = catalog::qualify_everything(conn).await?;
    let result = capture_qualified(conn).await;
    let restored = catalog::restore_search_path(conn, &saved).await;
    let snapshot = result?;
    restored?;
    Ok(snapshot)
}

async fn capture_qualified(conn: &mut PgConnection) -> Result<SchemaSnapshot> {
    let server_version_num = catalog::server_version_num(conn).await?;
    let schemas = types::schemas(conn).await?;
    let extensions = types::extensions(conn).await?;
    let user_types = types::types(conn).await?;
    let functions = routines::functions(conn).await?;
    let sequence_defs = sequences::definitions(conn).await?;
    let table_defs = tables::tables(conn).await?;
    let view_defs = views::views(conn).await?;

    let created: [&[catalog::Object]; 8] = [
        &schemas,
        &extensions,
        &user_types,
        &functions,
        &sequence_defs.create,
        &table_defs.create,
        &sequence_defs.owned_by,
        &view_defs.create,
    ];
    let pre_data = created
        .iter()
        .flat_map(|objects| catalog::statements(objects))
        .collect();

    let sequence_states = sequences::states(conn).await?;
    let foreign_keys = constraints::foreign_keys(conn).await?;
    let mut post_data = Vec::new();
    post_data.extend(catalog::statements(&constraints::keys(conn).await?));
    post_data.extend(catalog::statements(&constraints::indexes(conn).await?));
    post_data.extend(catalog::statements(
        &constraints::unvalidated_checks(conn).await?,
    ));
    post_data.extend(catalog::statements(&foreign_keys));
    post_data.extend(catalog::statements(&routines::triggers(conn).await?));
    post_data.extend(view_defs.refresh.iter().cloned());
    post_data.extend(sequences::setval_statements(&sequence_states));
    post_data.extend(comments::comments(conn).await?);
    let drops = apply::drop_statements(&foreign_keys, &created);

    Ok(SchemaSnapshot {
        server_version_num,
        pre_data,
        data_tables: table_defs.data_tables,
        post_data,
        sequences: sequence_states,
        owners_and_grants: privileges::owners_and_grants(conn).await?,
        drops,
        not_captured: not_captured::not_captured(conn).await?,
    })
}
