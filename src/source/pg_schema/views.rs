//! Views and materialized views, each after every view it reads from.

use sqlx::PgConnection;

use super::Statement;
use super::catalog::{Object, USER_NAMESPACE, not_extension_member, objects};
use crate::error::Result;

pub(super) struct Views {
    /// CREATE VIEW / CREATE MATERIALIZED VIEW ... WITH NO DATA.
    pub create: Vec<Object>,
    /// REFRESH of the materialized views that were populated.
    pub refresh: Vec<Statement>,
}

/// Views and materialized views, ordered by how deep they stack on other
/// views (a view's `_RETURN` rule depends on the relations it reads).
pub(super) async fn views(conn: &mut PgConnection) -> Result<Views> {
    let member = not_extension_member("pg_class", "c.oid");
    let sql = format!(
        "WITH RECURSIVE view_rel AS ( \
             SELECT c.oid, c.relname, c.relkind, c.reloptions, c.relispopulated, n.nspname \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('v', 'm') AND {USER_NAMESPACE} AND {member}), \
         reads(view_oid, read_oid) AS ( \
             SELECT DISTINCT r.ev_class, d.refobjid \
             FROM pg_catalog.pg_rewrite r \
             JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                  AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                  AND d.refobjid <> r.ev_class \
             WHERE r.rulename = '_RETURN'), \
         depth(oid, level) AS ( \
             SELECT oid, 0 FROM view_rel \
             UNION ALL \
             SELECT reads.view_oid, depth.level + 1 FROM depth JOIN reads ON reads.read_oid = depth.oid) \
         SELECT v.nspname::text, v.relname::text, \
                pg_catalog.format(CASE v.relkind WHEN 'v' THEN 'CREATE VIEW %I.%I%s AS %s' \
                                  ELSE 'CREATE MATERIALIZED VIEW %I.%I%s AS %s WITH NO DATA' END, \
                    v.nspname, v.relname, \
                    COALESCE(' WITH (' || pg_catalog.array_to_string(v.reloptions, ', ') || ')', ''), \
                    pg_catalog.rtrim(pg_catalog.pg_get_viewdef(v.oid), E'; \\n')), \
                pg_catalog.format(CASE v.relkind WHEN 'v' THEN 'DROP VIEW IF EXISTS %I.%I' \
                                  ELSE 'DROP MATERIALIZED VIEW IF EXISTS %I.%I' END, v.nspname, v.relname) \
         FROM view_rel v JOIN (SELECT oid, max(level) AS level FROM depth GROUP BY oid) d ON d.oid = v.oid \
         ORDER BY d.level, v.oid"
    );
    let mut create = objects(conn, "view", sql).await?;
    for object in &mut create {
        if object.statement.sql.starts_with("CREATE MATERIALIZED VIEW") {
            object.statement.kind = "materialized view".into();
        }
    }
    let refresh = materialized_refreshes(conn, &create).await?;
    Ok(Views { create, refresh })
}

/// REFRESH statements for the populated materialized views among `create`,
/// in the same dependency order.
async fn materialized_refreshes(
    conn: &mut PgConnection,
    create: &[Object],
) -> Result<Vec<Statement>> {
    let populated: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'm' AND c.relispopulated",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| crate::error::Error::database("reading materialized views", &e))?;
    Ok(create
        .iter()
        .map(|o| &o.statement)
        .filter(|s| {
            populated
                .iter()
                .any(|(schema, name)| *schema == s.schema && *name == s.name)
        })
        .filter(|s| s.sql.starts_with("CREATE MATERIALIZED VIEW"))
        .map(|s| Statement {
            kind: "materialized view refresh".into(),
            schema: s.schema.clone(),
            name: s.name.clone(),
            sql: format!(
                "REFRESH MATERIALIZED VIEW {}.{}",
                crate::source::quote_ident(&s.schema),
                crate::source::quote_ident(&s.name)
            ),
        })
        .collect())
}
