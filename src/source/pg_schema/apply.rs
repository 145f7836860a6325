//! Replays a snapshot inside the caller's transaction, and drops its
//! objects for a clean restore.

use sqlx::{AssertSqlSafe, PgConnection};

use super::catalog::Object;
use super::{ApplyOptions, SchemaSnapshot, Statement};
use crate::error::{Error, Result};

/// Creates schemas, extensions, types, functions, sequences, tables and
/// views (materialized views empty). Inside the caller's transaction: on
/// failure everything this call did is undone and the error names the object.
pub async fn apply_pre_data(
    conn: &mut PgConnection,
    snapshot: &SchemaSnapshot,
    _options: &ApplyOptions,
) -> Result<()> {
    run_all(conn, &[&snapshot.pre_data]).await
}

/// Adds keys, indexes, foreign keys and triggers, refreshes materialized
/// views, sets every sequence, adds comments, and, when asked, owners and
/// grants. Run after the rows are loaded.
pub async fn apply_post_data(
    conn: &mut PgConnection,
    snapshot: &SchemaSnapshot,
    options: &ApplyOptions,
) -> Result<()> {
    let none = Vec::new();
    let privileges = if options.owners_and_grants {
        &snapshot.owners_and_grants
    } else {
        &none
    };
    run_all(conn, &[&snapshot.post_data, privileges]).await
}

/// Drops the snapshot's tables, views, sequences, functions and types that
/// exist in the target, foreign keys first so no CASCADE is needed.
/// Schemas and extensions stay (other objects may live in them). An object
/// outside the snapshot that depends on one inside stops the drop with
/// PostgreSQL's dependency error, and nothing is dropped.
pub async fn drop_objects(conn: &mut PgConnection, snapshot: &SchemaSnapshot) -> Result<()> {
    run_all(conn, &[&snapshot.drops]).await
}

/// Every drop, in the order that needs no CASCADE: foreign keys, then the
/// created objects in reverse creation order.
pub(super) fn drop_statements(foreign_keys: &[Object], created: &[&[Object]]) -> Vec<Statement> {
    let as_drop = |o: &Object| {
        o.drop.as_ref().map(|sql| Statement {
            kind: o.statement.kind.clone(),
            schema: o.statement.schema.clone(),
            name: o.statement.name.clone(),
            sql: sql.clone(),
        })
    };
    let mut drops: Vec<Statement> = foreign_keys.iter().filter_map(as_drop).collect();
    for objects in created.iter().rev() {
        drops.extend(objects.iter().rev().filter_map(as_drop));
    }
    drops
}

/// Runs the lists in order under a savepoint with qualified names and
/// function bodies unchecked, then puts the settings back.
async fn run_all(conn: &mut PgConnection, lists: &[&Vec<Statement>]) -> Result<()> {
    // SAVEPOINT also refuses to run outside a transaction block, which is
    // what this module requires.
    exec(
        conn,
        "SAVEPOINT pg_schema_apply",
        "starting the schema step",
    )
    .await?;
    let saved: std::result::Result<(String, String), sqlx::Error> = sqlx::query_as(
        "SELECT pg_catalog.current_setting('search_path'), pg_catalog.current_setting('check_function_bodies')",
    )
    .fetch_one(&mut *conn)
    .await;
    let result = match saved {
        Ok(saved) => run_with_settings(conn, lists, &saved).await,
        Err(e) => Err(Error::database("reading settings", &e)),
    };
    match result {
        Ok(()) => {
            exec(
                conn,
                "RELEASE SAVEPOINT pg_schema_apply",
                "finishing the schema step",
            )
            .await
        }
        Err(e) => {
            // Undo this step only; the caller decides about its transaction.
            let _ = exec(
                conn,
                "ROLLBACK TO SAVEPOINT pg_schema_apply",
                "undoing the schema step",
            )
            .await;
            let _ = exec(
                conn,
                "RELEASE SAVEPOINT pg_schema_apply",
                "undoing the schema step",
            )
            .await;
            Err(e)
        }
    }
}

async fn run_with_settings(
    conn: &mut PgConnection,
    lists: &[&Vec<Statement>],
    saved: &(String, String),
) -> Result<()> {
    sqlx::query(
        "SELECT pg_catalog.set_config('search_path', '', true), \
                pg_catalog.set_config('check_function_bodies', 'off', true)",
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| Error::database("preparing the schema step", &e))?;
    for statement in lists.iter().flat_map(|l| l.iter()) {
        sqlx::raw_sql(AssertSqlSafe(statement.sql.clone()))
            .execute(&mut *conn)
            .await
            .map_err(|e| statement_error(statement, &e))?;
    }
    sqlx::query(
        "SELECT pg_catalog.set_config('search_path', $1, true), \
                pg_catalog.set_config('check_function_bodies', $2, true)",
    )
    .bind(&saved.0)
    .bind(&saved.1)
    .execute(&mut *conn)
    .await
    .map_err(|e| Error::database("restoring settings after the schema step", &e))?;
    Ok(())
}

async fn exec(conn: &mut PgConnection, sql: &'static str, what: &str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::database(what, &e))
}

/// Names the object, and keeps PostgreSQL's DETAIL and HINT.
fn statement_error(statement: &Statement, err: &sqlx::Error) -> Error {
    let what = if statement.schema.is_empty() {
        format!("{} {}", statement.kind, statement.name)
    } else {
        format!("{} {}.{}", statement.kind, statement.schema, statement.name)
    };
    let mut error = Error::database(&what, err);
    if let Some(pg) = err
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
    {
        if let Some(detail) = pg.detail() {
            error.message.push_str(&format!(" (detail: {detail})"));
        }
        if let Some(hint) = pg.hint() {
            error.message.push_str(&format!(" (hint: {hint})"));
        }
    }
    error
}
