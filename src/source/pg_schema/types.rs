//! Schemas, extensions and user-defined types (enum, range, domain, composite).

use sqlx::PgConnection;

use super::catalog::{Object, USER_NAMESPACE, collate_clause, not_extension_member, objects};
use crate::error::Result;

/// Non-system schemas. `public` is included (IF NOT EXISTS) so its comment
/// and grants have a home; schemas are never dropped by a clean restore.
pub(super) async fn schemas(conn: &mut PgConnection) -> Result<Vec<Object>> {
    let member = not_extension_member("pg_namespace", "n.oid");
    let sql = format!(
        "SELECT n.nspname::text, n.nspname::text, \
                pg_catalog.format('CREATE SCHEMA IF NOT EXISTS %I', n.nspname), NULL::text \
         FROM pg_catalog.pg_namespace n \
         WHERE {USER_NAMESPACE} AND {member} \
         ORDER BY n.nspname"
    );
    objects(conn, "schema", sql).await
}

/// Extensions other than the built-in plpgsql; their own objects are not
/// captured, the extension's script recreates them.
pub(super) async fn extensions(conn: &mut PgConnection) -> Result<Vec<Object>> {
    let sql = "SELECT n.nspname::text, e.extname::text, \
                pg_catalog.format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %I CASCADE', e.extname, n.nspname), \
                NULL::text \
         FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname <> 'plpgsql' \
         ORDER BY e.oid"
        .to_string();
    objects(conn, "extension", sql).await
}

/// Enum, range, domain and standalone composite types, in creation (oid)
/// order so a type built on another comes after it.
pub(super) async fn types(conn: &mut PgConnection) -> Result<Vec<Object>> {
    let member = not_extension_member("pg_type", "t.oid");
    let domain_collate = collate_clause("t.typcollation", "bt.typcollation");
    let attr_collate = collate_clause("a.attcollation", "at.typcollation");
    let range_collate = collate_clause("r.rngcollation", "st.typcollation");
    let sql = format!(
        "SELECT n.nspname::text, t.typname::text, \
           CASE t.typtype \
           WHEN 'e' THEN pg_catalog.format('CREATE TYPE %I.%I AS ENUM (%s)', n.nspname, t.typname, \
               (SELECT pg_catalog.string_agg(pg_catalog.quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder) \
                FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid)) \
           WHEN 'd' THEN pg_catalog.format('CREATE DOMAIN %I.%I AS %s', n.nspname, t.typname, \
               pg_catalog.format_type(t.typbasetype, t.typtypmod)) \
             || (SELECT {domain_collate} FROM pg_catalog.pg_type bt WHERE bt.oid = t.typbasetype) \
             || COALESCE(' DEFAULT ' || pg_catalog.pg_get_expr(t.typdefaultbin, 0), '') \
             || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END \
             || COALESCE((SELECT pg_catalog.string_agg(pg_catalog.format(' CONSTRAINT %I %s', c.conname, \
                      pg_catalog.pg_get_constraintdef(c.oid)), '' ORDER BY c.conname) \
                  FROM pg_catalog.pg_constraint c WHERE c.contypid = t.oid AND c.contype = 'c'), '') \
           WHEN 'c' THEN pg_catalog.format('CREATE TYPE %I.%I AS (%s)', n.nspname, t.typname, \
               COALESCE((SELECT pg_catalog.string_agg(pg_catalog.format('%I %s', a.attname, \
                        pg_catalog.format_type(a.atttypid, a.atttypmod)) || {attr_collate}, ', ' ORDER BY a.attnum) \
                  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type at ON at.oid = a.atttypid \
                  WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '')) \
           WHEN 'r' THEN (SELECT pg_catalog.format('CREATE TYPE %I.%I AS RANGE (subtype = %s', n.nspname, t.typname, \
                   pg_catalog.format_type(r.rngsubtype, NULL)) \
                 || {range_collate} \
                 || CASE WHEN opc.opcdefault THEN '' \
                    ELSE pg_catalog.format(', subtype_opclass = %I.%I', opcn.nspname, opc.opcname) END \
                 || CASE WHEN r.rngcanonical <> 0 THEN ', canonical = ' || r.rngcanonical::pg_catalog.regproc::text ELSE '' END \
                 || CASE WHEN r.rngsubdiff <> 0 THEN ', subtype_diff = ' || r.rngsubdiff::pg_catalog.regproc::text ELSE '' END \
                 || pg_catalog.format(', multirange_type_name = %I.%I)', mn.nspname, mt.typname) \
               FROM pg_catalog.pg_range r \
               JOIN pg_catalog.pg_type st ON st.oid = r.rngsubtype \
               JOIN pg_catalog.pg_opclass opc ON opc.oid = r.rngsubopc \
               JOIN pg_catalog.pg_namespace opcn ON opcn.oid = opc.opcnamespace \
               JOIN pg_catalog.pg_type mt ON mt.oid = r.rngmultitypid \
               JOIN pg_catalog.pg_namespace mn ON mn.oid = mt.typnamespace \
               WHERE r.rngtypid = t.oid) \
           END, \
           pg_catalog.format(CASE t.typtype WHEN 'd' THEN 'DROP DOMAIN IF EXISTS %I.%I' \
                             ELSE 'DROP TYPE IF EXISTS %I.%I' END, n.nspname, t.typname) \
         FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
         WHERE {USER_NAMESPACE} AND {member} \
           AND (t.typtype IN ('e', 'd', 'r') \
                OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')) \
         ORDER BY t.oid"
    );
    objects(conn, "type", sql).await
}
