//! Tables with their columns, defaults, identity and generated columns,
//! NOT NULL and CHECK, partitioning and inheritance. Keys, indexes and
//! foreign keys come after the data (see `constraints`).

use sqlx::{AssertSqlSafe, PgConnection};

use super::TableName;
use super::catalog::{Object, USER_NAMESPACE, collate_clause, not_extension_member, objects};
use super::sequences::SEQUENCE_OPTIONS;
use crate::error::{Error, Result};

pub(super) struct Tables {
    /// CREATE TABLE, parents before partitions and inheriting children.
    pub create: Vec<Object>,
    /// The tables that hold rows, in the same order.
    pub data_tables: Vec<TableName>,
}

/// One column's definition for CREATE TABLE (`a` pg_attribute, `ad`
/// pg_attrdef, `t` the column's pg_type, `c` the table).
fn column_definition() -> String {
    let collate = collate_clause("a.attcollation", "t.typcollation");
    format!(
        "pg_catalog.format('%I %s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) \
         || {collate} \
         || CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) || ') STORED' \
                 WHEN ad.adbin IS NOT NULL THEN ' DEFAULT ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) \
                 ELSE '' END \
         || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END \
         || CASE WHEN a.attidentity IN ('a', 'd') THEN \
              (SELECT pg_catalog.format(' GENERATED %s AS IDENTITY (SEQUENCE NAME %I.%I', \
                         CASE a.attidentity WHEN 'a' THEN 'ALWAYS' ELSE 'BY DEFAULT' END, sn.nspname, sc.relname) \
                      || {SEQUENCE_OPTIONS} || ')' \
               FROM pg_catalog.pg_depend d \
               JOIN pg_catalog.pg_class sc ON sc.oid = d.objid \
               JOIN pg_catalog.pg_namespace sn ON sn.oid = sc.relnamespace \
               JOIN pg_catalog.pg_sequence s ON s.seqrelid = sc.oid \
               WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                 AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                 AND d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.deptype = 'i') \
            ELSE '' END"
    )
}

/// For columns a table inherits: its own default and NOT NULL, which may
/// differ from what the parent passed down.
const INHERITED_COLUMN_FIXES: &str = "(SELECT pg_catalog.string_agg( \
       CASE WHEN a.attgenerated <> '' OR a.attidentity <> '' THEN '' \
            WHEN ad.adbin IS NOT NULL THEN pg_catalog.format('; ALTER TABLE ONLY %I.%I ALTER COLUMN %I SET DEFAULT %s', \
                 n.nspname, c.relname, a.attname, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)) \
            ELSE pg_catalog.format('; ALTER TABLE ONLY %I.%I ALTER COLUMN %I DROP DEFAULT', n.nspname, c.relname, a.attname) END \
       || CASE WHEN a.attnotnull THEN pg_catalog.format('; ALTER TABLE ONLY %I.%I ALTER COLUMN %I SET NOT NULL', \
                 n.nspname, c.relname, a.attname) ELSE '' END, '' ORDER BY a.attnum) \
     FROM pg_catalog.pg_attribute a \
     LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND NOT a.attislocal)";

pub(super) async fn tables(conn: &mut PgConnection) -> Result<Tables> {
    let member = not_extension_member("pg_class", "c.oid");
    let column = column_definition();
    let sql = format!(
        "WITH RECURSIVE level(oid, depth) AS ( \
             SELECT c.oid, 0 FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p') \
             UNION ALL \
             SELECT i.inhrelid, level.depth + 1 FROM level JOIN pg_catalog.pg_inherits i ON i.inhparent = level.oid), \
         depth AS (SELECT oid, max(depth) AS depth FROM level GROUP BY oid) \
         SELECT n.nspname::text, c.relname::text, \
           CASE WHEN c.relispartition THEN \
               pg_catalog.format('CREATE %sTABLE %I.%I PARTITION OF %s', persistence, n.nspname, c.relname, parents) \
               || COALESCE(' (' || checks || ')', '') || ' ' || pg_catalog.pg_get_expr(c.relpartbound, c.oid) \
           ELSE \
               pg_catalog.format('CREATE %sTABLE %I.%I (%s)', persistence, n.nspname, c.relname, \
                   pg_catalog.concat_ws(', ', columns, checks)) \
               || COALESCE(' INHERITS (' || parents || ')', '') \
           END \
           || CASE WHEN c.relkind = 'p' THEN ' PARTITION BY ' || pg_catalog.pg_get_partkeydef(c.oid) ELSE '' END \
           || COALESCE(' WITH (' || pg_catalog.array_to_string(c.reloptions, ', ') || ')', '') \
           || CASE WHEN parents IS NOT NULL THEN COALESCE({INHERITED_COLUMN_FIXES}, '') ELSE '' END, \
           pg_catalog.format('DROP TABLE IF EXISTS %I.%I', n.nspname, c.relname) \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN depth ON depth.oid = c.oid \
         CROSS JOIN LATERAL (SELECT \
             CASE c.relpersistence WHEN 'u' THEN 'UNLOGGED ' ELSE '' END AS persistence, \
             (SELECT pg_catalog.string_agg({column}, ', ' ORDER BY a.attnum) \
              FROM pg_catalog.pg_attribute a \
              JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
              LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attislocal) AS columns, \
             (SELECT pg_catalog.string_agg(pg_catalog.format('CONSTRAINT %I %s', con.conname, \
                       pg_catalog.pg_get_constraintdef(con.oid)), ', ' ORDER BY con.conname) \
              FROM pg_catalog.pg_constraint con \
              WHERE con.conrelid = c.oid AND con.contype = 'c' AND con.conislocal AND con.convalidated) AS checks, \
             (SELECT pg_catalog.string_agg(pg_catalog.format('%I.%I', pn.nspname, p.relname), ', ' ORDER BY i.inhseqno) \
              FROM pg_catalog.pg_inherits i \
              JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
              JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
              WHERE i.inhrelid = c.oid) AS parents) parts \
         WHERE c.relkind IN ('r', 'p') AND {USER_NAMESPACE} AND {member} \
         ORDER BY depth.depth, c.oid"
    );
    let create = objects(conn, "table", sql).await?;
    let partitioned: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p'",
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("listing partitioned tables", &e))?;
    let data_tables = create
        .iter()
        .map(|o| &o.statement)
        .filter(|s| {
            !partitioned
                .iter()
                .any(|(schema, name)| *schema == s.schema && *name == s.name)
        })
        .map(|s| TableName {
            schema: s.schema.clone(),
            name: s.name.clone(),
        })
        .collect();
    Ok(Tables {
        create,
        data_tables,
    })
}
