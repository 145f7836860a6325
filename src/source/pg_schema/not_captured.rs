//! The objects a snapshot does not reproduce, listed so a backup can say
//! so instead of silently dropping them.

use sqlx::{AssertSqlSafe, PgConnection};

use super::NotCaptured;
use super::catalog::{USER_NAMESPACE, not_extension_member};
use crate::error::{Error, Result};

/// One `(kind, schema, name)` query per catalog, joined with UNION ALL.
fn query() -> String {
    let class = not_extension_member("pg_class", "c.oid");
    let parts = [
        format!(
            "SELECT 'rule', n.nspname::text, c.relname || '.' || r.rulename \
             FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE r.rulename <> '_RETURN' AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'policy', n.nspname::text, c.relname || '.' || p.polname \
             FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'row level security', n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE (c.relrowsecurity OR c.relforcerowsecurity) AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'foreign table', n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'f' AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'typed table (captured as a plain table)', n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.reloftype <> 0 AND c.relkind IN ('r', 'p') AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'replica identity', n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND c.relreplident <> 'd' AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'tablespace placement', n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.reltablespace <> 0 AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'cluster mark', n.nspname::text, c.relname::text \
             FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.indisclustered AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'column setting (statistics, storage, compression, options)', n.nspname::text, \
                    c.relname || '.' || a.attname \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'm') \
               AND (a.attstattarget <> -1 OR a.attstorage <> t.typstorage OR a.attcompression <> '' \
                    OR a.attoptions IS NOT NULL OR a.attfdwoptions IS NOT NULL) \
               AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'column privileges', n.nspname::text, c.relname || '.' || a.attname \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attnum > 0 AND a.attacl IS NOT NULL AND {USER_NAMESPACE} AND {class}"
        ),
        format!(
            "SELECT 'extended statistics', n.nspname::text, s.stxname::text \
             FROM pg_catalog.pg_statistic_ext s JOIN pg_catalog.pg_namespace n ON n.oid = s.stxnamespace \
             WHERE {USER_NAMESPACE} AND {}",
            not_extension_member("pg_statistic_ext", "s.oid")
        ),
        in_namespace("aggregate", "pg_proc", "proname", "pronamespace", "prokind = 'a'"),
        in_namespace("base or shell type", "pg_type", "typname", "typnamespace",
            "typtype IN ('b', 'p') AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = x.oid)"),
        in_namespace("operator", "pg_operator", "oprname", "oprnamespace", "true"),
        in_namespace("operator class", "pg_opclass", "opcname", "opcnamespace", "true"),
        in_namespace("operator family", "pg_opfamily", "opfname", "opfnamespace", "true"),
        in_namespace("collation", "pg_collation", "collname", "collnamespace", "true"),
        in_namespace("conversion", "pg_conversion", "conname", "connamespace", "true"),
        in_namespace("text search configuration", "pg_ts_config", "cfgname", "cfgnamespace", "true"),
        in_namespace("text search dictionary", "pg_ts_dict", "dictname", "dictnamespace", "true"),
        in_namespace("text search parser", "pg_ts_parser", "prsname", "prsnamespace", "true"),
        in_namespace("text search template", "pg_ts_template", "tmplname", "tmplnamespace", "true"),
        global("publication", "pg_publication", "pubname", "true"),
        global("event trigger", "pg_event_trigger", "evtname", "true"),
        global("foreign data wrapper", "pg_foreign_data_wrapper", "fdwname", "true"),
        global("foreign server", "pg_foreign_server", "srvname", "true"),
        global("procedural language", "pg_language", "lanname", "x.oid >= 16384"),
        global("access method", "pg_am", "amname", "x.oid >= 16384"),
        global("cast", "pg_cast", "x.castsource::pg_catalog.regtype::text || ' AS ' || x.casttarget::pg_catalog.regtype::text", "x.oid >= 16384"),
        global("transform", "pg_transform", "x.trftype::pg_catalog.regtype::text", "true"),
        "SELECT 'default privileges', COALESCE(n.nspname::text, ''), \
                pg_catalog.pg_get_userbyid(d.defaclrole) || ' on ' || d.defaclobjtype::text \
         FROM pg_catalog.pg_default_acl d LEFT JOIN pg_catalog.pg_namespace n ON n.oid = d.defaclnamespace"
            .to_string(),
        "SELECT 'security label', '', pg_catalog.count(*)::text || ' labels' FROM pg_catalog.pg_seclabel \
         HAVING pg_catalog.count(*) > 0"
            .to_string(),
        "SELECT 'large objects', '', pg_catalog.count(*)::text || ' large objects' \
         FROM pg_catalog.pg_largeobject_metadata HAVING pg_catalog.count(*) > 0"
            .to_string(),
        "SELECT 'subscription', '', s.subname::text FROM pg_catalog.pg_subscription s \
         WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"
            .to_string(),
    ];
    format!("{} ORDER BY 1, 2, 3", parts.join(" UNION ALL "))
}

/// Objects of a schema-qualified catalog `x` that match `filter`.
fn in_namespace(kind: &str, catalog: &str, name: &str, namespace: &str, filter: &str) -> String {
    format!(
        "SELECT '{kind}', n.nspname::text, x.{name}::text FROM pg_catalog.{catalog} x \
         JOIN pg_catalog.pg_namespace n ON n.oid = x.{namespace} \
         WHERE {filter} AND {USER_NAMESPACE} AND {}",
        not_extension_member(catalog, "x.oid")
    )
}

/// Database-wide objects of catalog `x` (no schema) that match `filter`.
fn global(kind: &str, catalog: &str, name: &str, filter: &str) -> String {
    let name = if name.contains('.') {
        name.to_string()
    } else {
        format!("x.{name}::text")
    };
    format!(
        "SELECT '{kind}', '', ({name})::text FROM pg_catalog.{catalog} x WHERE {filter} AND {}",
        not_extension_member(catalog, "x.oid")
    )
}

pub(super) async fn not_captured(conn: &mut PgConnection) -> Result<Vec<NotCaptured>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(AssertSqlSafe(query()))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("listing objects that are not captured", &e))?;
    Ok(rows
        .into_iter()
        .map(|(kind, schema, name)| NotCaptured { kind, schema, name })
        .collect())
}
