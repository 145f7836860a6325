//! Post-data objects of tables: primary/unique/exclusion constraints,
//! indexes, checks marked NOT VALID, and foreign keys.

use sqlx::PgConnection;

use super::catalog::{Object, USER_NAMESPACE, not_extension_member, objects};
use crate::error::Result;

/// Constraints of one `contype` set defined on user tables themselves (not
/// the copies a partitioned table's constraint puts on its partitions).
fn table_constraints(contypes: &str, extra: &str, with_drop: bool) -> String {
    let member = not_extension_member("pg_class", "c.oid");
    let drop = if with_drop {
        "pg_catalog.format('ALTER TABLE IF EXISTS %I.%I DROP CONSTRAINT IF EXISTS %I', n.nspname, c.relname, con.conname)"
    } else {
        "NULL::text"
    };
    // A partitioned table's constraint must reach its partitions: no ONLY there.
    format!(
        "SELECT n.nspname::text, c.relname || '.' || con.conname, \
                pg_catalog.format('ALTER TABLE %s%I.%I ADD CONSTRAINT %I %s', \
                    CASE WHEN c.relkind = 'p' THEN '' ELSE 'ONLY ' END, \
                    n.nspname, c.relname, con.conname, pg_catalog.pg_get_constraintdef(con.oid)), \
                {drop} \
         FROM pg_catalog.pg_constraint con \
         JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE con.contype IN ({contypes}) AND con.conparentid = 0 AND c.relkind IN ('r', 'p') \
           AND {USER_NAMESPACE} AND {member} {extra} \
         ORDER BY n.nspname, c.relname, con.conname"
    )
}

/// Primary key, unique and exclusion constraints.
pub(super) async fn keys(conn: &mut PgConnection) -> Result<Vec<Object>> {
    objects(
        conn,
        "key constraint",
        table_constraints("'p', 'u', 'x'", "", false),
    )
    .await
}

/// CHECK constraints added NOT VALID (CREATE TABLE cannot hold those).
pub(super) async fn unvalidated_checks(conn: &mut PgConnection) -> Result<Vec<Object>> {
    let sql = table_constraints("'c'", "AND con.conislocal AND NOT con.convalidated", false);
    objects(conn, "check constraint", sql).await
}

/// Foreign keys, with their actions and deferrability; a clean restore
/// drops them first so tables can go in any order.
pub(super) async fn foreign_keys(conn: &mut PgConnection) -> Result<Vec<Object>> {
    objects(conn, "foreign key", table_constraints("'f'", "", true)).await
}

/// Indexes that no constraint owns, on tables and materialized views. An
/// index on a partitioned table is created without ONLY, so it reaches the
/// partitions the way it did in the source.
pub(super) async fn indexes(conn: &mut PgConnection) -> Result<Vec<Object>> {
    let member = not_extension_member("pg_class", "t.oid");
    let sql = format!(
        "SELECT n.nspname::text, ic.relname::text, \
                CASE WHEN ic.relkind = 'I' \
                     THEN pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON ') \
                     ELSE pg_catalog.pg_get_indexdef(i.indexrelid) END, \
                NULL::text \
         FROM pg_catalog.pg_index i \
         JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_catalog.pg_class t ON t.oid = i.indrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace \
         WHERE t.relkind IN ('r', 'p', 'm') AND NOT ic.relispartition \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con \
                           WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid \
                             AND con.contype IN ('p', 'u', 'x')) \
           AND {USER_NAMESPACE} AND {member} \
         ORDER BY n.nspname, ic.relname"
    );
    objects(conn, "index", sql).await
}
