//! COMMENT ON for every captured object that has one, in one query.

use sqlx::PgConnection;

use super::Statement;
use super::catalog::{Object, objects};
use crate::error::Result;

/// `pg_identify_object` renders each object's quoted, qualified identity;
/// the CASE maps its type to the COMMENT ON keyword and leaves out kinds
/// that are not captured (their comment would have no object to land on).
pub(super) async fn comments(conn: &mut PgConnection) -> Result<Vec<Statement>> {
    let sql = "SELECT COALESCE(o.schema, '')::text, o.identity::text, \
                  'COMMENT ON ' || target || ' IS ' || pg_catalog.quote_literal(d.description), NULL::text \
         FROM pg_catalog.pg_description d \
         CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classoid, d.objoid, d.objsubid) o \
         CROSS JOIN LATERAL (SELECT CASE o.type \
             WHEN 'schema' THEN 'SCHEMA ' || o.identity \
             WHEN 'type' THEN 'TYPE ' || o.identity \
             WHEN 'composite type' THEN 'TYPE ' || o.identity \
             WHEN 'domain' THEN 'DOMAIN ' || o.identity \
             WHEN 'table' THEN 'TABLE ' || o.identity \
             WHEN 'view' THEN 'VIEW ' || o.identity \
             WHEN 'materialized view' THEN 'MATERIALIZED VIEW ' || o.identity \
             WHEN 'sequence' THEN 'SEQUENCE ' || o.identity \
             WHEN 'index' THEN 'INDEX ' || o.identity \
             WHEN 'table column' THEN 'COLUMN ' || o.identity \
             WHEN 'view column' THEN 'COLUMN ' || o.identity \
             WHEN 'materialized view column' THEN 'COLUMN ' || o.identity \
             WHEN 'composite type column' THEN 'COLUMN ' || o.identity \
             WHEN 'function' THEN 'FUNCTION ' || o.identity \
             WHEN 'procedure' THEN 'PROCEDURE ' || o.identity \
             WHEN 'trigger' THEN 'TRIGGER ' || o.identity \
             WHEN 'table constraint' THEN (SELECT pg_catalog.format('CONSTRAINT %I ON %I.%I', con.conname, cn.nspname, cc.relname) \
                 FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class cc ON cc.oid = con.conrelid \
                 JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace WHERE con.oid = d.objoid) \
             WHEN 'domain constraint' THEN (SELECT pg_catalog.format('CONSTRAINT %I ON DOMAIN %I.%I', con.conname, tn.nspname, ty.typname) \
                 FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_type ty ON ty.oid = con.contypid \
                 JOIN pg_catalog.pg_namespace tn ON tn.oid = ty.typnamespace WHERE con.oid = d.objoid) \
             END AS target) k \
         WHERE target IS NOT NULL \
           AND d.classoid IN ('pg_catalog.pg_namespace'::pg_catalog.regclass, 'pg_catalog.pg_class'::pg_catalog.regclass, \
                              'pg_catalog.pg_type'::pg_catalog.regclass, 'pg_catalog.pg_proc'::pg_catalog.regclass, \
                              'pg_catalog.pg_constraint'::pg_catalog.regclass, 'pg_catalog.pg_trigger'::pg_catalog.regclass) \
           AND COALESCE(o.schema, CASE WHEN o.type = 'schema' THEN o.identity END, '') \
               NOT IN ('pg_catalog', 'information_schema') \
           AND COALESCE(o.schema, CASE WHEN o.type = 'schema' THEN o.identity END, '') !~ '^pg_(toast|temp_)' \
           AND (d.classoid <> 'pg_catalog.pg_type'::pg_catalog.regclass \
                OR (SELECT ty.typtype FROM pg_catalog.pg_type ty WHERE ty.oid = d.objoid) IN ('e', 'd', 'c', 'r')) \
           AND (d.classoid <> 'pg_catalog.pg_class'::pg_catalog.regclass \
                OR (SELECT cl.relkind FROM pg_catalog.pg_class cl WHERE cl.oid = d.objoid) IN ('r', 'p', 'v', 'm', 'S', 'i', 'I', 'c')) \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = d.classoid \
                           AND e.objid = d.objoid AND e.deptype = 'e') \
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class cl JOIN pg_catalog.pg_depend e \
                             ON e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = cl.oid AND e.deptype = 'e' \
                           WHERE d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass \
                             AND cl.oid = (SELECT conrelid FROM pg_catalog.pg_constraint WHERE oid = d.objoid)) \
         ORDER BY 1, 2, 3"
        .to_string();
    Ok(objects(conn, "comment", sql)
        .await?
        .into_iter()
        .map(|o: Object| o.statement)
        .collect())
}
