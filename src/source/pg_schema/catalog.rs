//! Shared catalog plumbing: the qualified-names setting, the filters that
//! keep system and extension objects out, and one-query-per-kind fetching.

use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::Statement;
use crate::error::{Error, Result};

/// A captured object: how to create it and, for objects a clean restore
/// removes, how to drop it.
#[derive(Debug, Clone)]
pub(super) struct Object {
    pub statement: Statement,
    pub drop: Option<String>,
}

/// Namespaces that hold user objects (`n` is the pg_namespace alias).
pub(super) const USER_NAMESPACE: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname !~ '^pg_(toast|temp_)'";

/// A filter that drops objects created by an extension (pg_depend 'e').
pub(super) fn not_extension_member(catalog: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend ext_dep \
         WHERE ext_dep.classid = 'pg_catalog.{catalog}'::pg_catalog.regclass \
         AND ext_dep.objid = {oid} AND ext_dep.deptype = 'e')"
    )
}

/// `COLLATE schema.name` for a column whose collation differs from its
/// type's, else ''. `coll` and `type_coll` are SQL expressions.
pub(super) fn collate_clause(coll: &str, type_coll: &str) -> String {
    format!(
        "CASE WHEN {coll} <> 0 AND {coll} <> {type_coll} THEN \
         (SELECT pg_catalog.format(' COLLATE %I.%I', cn.nspname, co.collname) \
          FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
          WHERE co.oid = {coll}) ELSE '' END"
    )
}

/// Runs a query whose rows are `(schema, name, sql, drop)`; `drop` may be NULL.
pub(super) async fn objects(
    conn: &mut PgConnection,
    kind: &str,
    sql: String,
) -> Result<Vec<Object>> {
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database(&format!("reading {kind} definitions"), &e))?;
    let column = |e: sqlx::Error| Error::database(&format!("reading {kind} definitions"), &e);
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(Object {
            statement: Statement {
                kind: kind.to_string(),
                schema: row.try_get(0).map_err(column)?,
                name: row.try_get(1).map_err(column)?,
                sql: row.try_get(2).map_err(column)?,
            },
            drop: row.try_get(3).map_err(column)?,
        });
    }
    Ok(out)
}

/// The statements of `objects`, in order.
pub(super) fn statements(objects: &[Object]) -> impl Iterator<Item = Statement> + '_ {
    objects.iter().map(|o| o.statement.clone())
}

/// Sets an empty `search_path` for the rest of the transaction so every
/// name the server renders is schema-qualified; returns the old value.
pub(super) async fn qualify_everything(conn: &mut PgConnection) -> Result<String> {
    let old: String = sqlx::query_scalar(
        "SELECT pg_catalog.current_setting('search_path'), pg_catalog.set_config('search_path', '', true)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::database("qualifying names", &e))?;
    Ok(old)
}

/// Puts back the `search_path` `qualify_everything` replaced.
pub(super) async fn restore_search_path(conn: &mut PgConnection, old: &str) -> Result<()> {
    sqlx::query("SELECT pg_catalog.set_config('search_path', $1, true)")
        .bind(old)
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::database("restoring search_path", &e))?;
    Ok(())
}

pub(super) async fn server_version_num(conn: &mut PgConnection) -> Result<i32> {
    let text: String =
        sqlx::query_scalar("SELECT pg_catalog.current_setting('server_version_num')")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::database("reading server version", &e))?;
    text.trim()
        .parse()
        .map_err(|_| Error::internal(format!("server_version_num {text:?} is not a number")))
}
