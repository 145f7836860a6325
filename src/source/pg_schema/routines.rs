//! Functions, procedures and triggers, rendered by the server itself.

use sqlx::PgConnection;

use super::catalog::{Object, USER_NAMESPACE, not_extension_member, objects};
use crate::error::Result;

/// Plain and window functions and procedures (aggregates are not captured),
/// in creation order. Created before tables, which may use them in
/// defaults and checks; bodies are not checked while applying.
pub(super) async fn functions(conn: &mut PgConnection) -> Result<Vec<Object>> {
    let member = not_extension_member("pg_proc", "p.oid");
    let sql = format!(
        "SELECT n.nspname::text, \
                p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', \
                pg_catalog.rtrim(pg_catalog.pg_get_functiondef(p.oid), E'\\n'), \
                pg_catalog.format(CASE p.prokind WHEN 'p' THEN 'DROP PROCEDURE IF EXISTS %I.%I(%s)' \
                                  ELSE 'DROP FUNCTION IF EXISTS %I.%I(%s)' END, \
                                  n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE {USER_NAMESPACE} AND {member} AND p.prokind IN ('f', 'p', 'w') \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
               WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'i') \
         ORDER BY p.oid"
    );
    objects(conn, "function", sql).await
}

/// User triggers (not the internal ones behind foreign keys, not the clones
/// a partitioned table's trigger makes on its partitions), with their
/// enabled state.
pub(super) async fn triggers(conn: &mut PgConnection) -> Result<Vec<Object>> {
    let member = not_extension_member("pg_class", "c.oid");
    let sql = format!(
        "SELECT n.nspname::text, c.relname || '.' || tg.tgname, \
                pg_catalog.pg_get_triggerdef(tg.oid) \
                || CASE tg.tgenabled \
                   WHEN 'D' THEN pg_catalog.format('; ALTER TABLE %I.%I DISABLE TRIGGER %I', n.nspname, c.relname, tg.tgname) \
                   WHEN 'R' THEN pg_catalog.format('; ALTER TABLE %I.%I ENABLE REPLICA TRIGGER %I', n.nspname, c.relname, tg.tgname) \
                   WHEN 'A' THEN pg_catalog.format('; ALTER TABLE %I.%I ENABLE ALWAYS TRIGGER %I', n.nspname, c.relname, tg.tgname) \
                   ELSE '' END, \
                NULL::text \
         FROM pg_catalog.pg_trigger tg \
         JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT tg.tgisinternal AND tg.tgparentid = 0 AND {USER_NAMESPACE} AND {member} \
           AND c.relkind IN ('r', 'p', 'v') \
         ORDER BY n.nspname, c.relname, tg.tgname"
    );
    objects(conn, "trigger", sql).await
}
