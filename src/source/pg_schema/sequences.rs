//! Sequences: their parameters, their OWNED BY link, and their exact
//! position (`last_value`, `is_called`) read from each sequence relation.

use sqlx::{AssertSqlSafe, PgConnection, Row};

use super::catalog::{Object, USER_NAMESPACE, not_extension_member, objects};
use super::{SequenceState, Statement};
use crate::error::{Error, Result};
use crate::source::quote_ident;

pub(super) struct Sequences {
    /// CREATE SEQUENCE for every sequence that is not an identity column's.
    pub create: Vec<Object>,
    /// ALTER SEQUENCE ... OWNED BY, run once the tables exist.
    pub owned_by: Vec<Object>,
}

/// The parameters `CREATE SEQUENCE` takes, from pg_sequence `s`.
pub(super) const SEQUENCE_OPTIONS: &str = "pg_catalog.format(' INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s%s', \
     s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache, \
     CASE WHEN s.seqcycle THEN ' CYCLE' ELSE ' NO CYCLE' END)";

/// Identity sequences are left out: their column's definition creates them.
pub(super) async fn definitions(conn: &mut PgConnection) -> Result<Sequences> {
    let member = not_extension_member("pg_class", "c.oid");
    let not_identity = "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'i')";
    let from = "FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid";
    let filter =
        format!("WHERE c.relkind = 'S' AND {USER_NAMESPACE} AND {member} AND {not_identity}");
    let create = objects(
        conn,
        "sequence",
        format!(
            "SELECT n.nspname::text, c.relname::text, \
                    pg_catalog.format('CREATE SEQUENCE %I.%I AS %s', n.nspname, c.relname, \
                        pg_catalog.format_type(s.seqtypid, NULL)) || {SEQUENCE_OPTIONS}, \
                    pg_catalog.format('DROP SEQUENCE IF EXISTS %I.%I', n.nspname, c.relname) \
             {from} {filter} ORDER BY c.oid"
        ),
    )
    .await?;
    let owned_by = objects(
        conn,
        "sequence owned by",
        format!(
            "SELECT n.nspname::text, c.relname::text, \
                    pg_catalog.format('ALTER SEQUENCE %I.%I OWNED BY %I.%I.%I', n.nspname, c.relname, \
                        tn.nspname, t.relname, a.attname), NULL::text \
             {from} \
             JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                  AND d.objid = c.oid AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                  AND d.deptype = 'a' AND d.refobjsubid > 0 \
             JOIN pg_catalog.pg_class t ON t.oid = d.refobjid \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
             {filter} ORDER BY c.oid"
        ),
    )
    .await?;
    Ok(Sequences { create, owned_by })
}

/// The position of every user sequence, identity sequences included, read
/// with one query over all of them.
pub(super) async fn states(conn: &mut PgConnection) -> Result<Vec<SequenceState>> {
    let member = not_extension_member("pg_class", "c.oid");
    let names: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND {USER_NAMESPACE} AND {member} ORDER BY n.nspname, c.relname"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("listing sequences", &e))?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let union = names
        .iter()
        .enumerate()
        .map(|(i, (schema, name))| {
            format!(
                "SELECT {i} AS i, last_value, is_called FROM {}.{}",
                quote_ident(schema),
                quote_ident(name)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = sqlx::query(AssertSqlSafe(format!("{union} ORDER BY i")))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("reading sequence positions", &e))?;
    let mut states = Vec::with_capacity(names.len());
    for (row, (schema, name)) in rows.iter().zip(names) {
        let read = |e: sqlx::Error| Error::database(&format!("sequence {schema}.{name}"), &e);
        states.push(SequenceState {
            last_value: row.try_get(1).map_err(read)?,
            is_called: row.try_get(2).map_err(read)?,
            schema,
            name,
        });
    }
    Ok(states)
}

/// `setval` for each state, so the next `nextval` hands out what the source would have.
pub(super) fn setval_statements(states: &[SequenceState]) -> Vec<Statement> {
    states
        .iter()
        .map(|s| {
            let qualified = format!("{}.{}", quote_ident(&s.schema), quote_ident(&s.name));
            Statement {
                kind: "sequence set".into(),
                schema: s.schema.clone(),
                name: s.name.clone(),
                sql: format!(
                    "SELECT pg_catalog.setval('{}'::pg_catalog.regclass, {}, {})",
                    qualified.replace('\'', "''"),
                    s.last_value,
                    s.is_called
                ),
            }
        })
        .collect()
}
