//! Owners and grants: recorded always, applied only when asked, since the
//! target may not have the source's roles.

use sqlx::PgConnection;

use super::Statement;
use super::catalog::{USER_NAMESPACE, not_extension_member, objects};
use crate::error::Result;

/// For every captured schema, type, relation and function: `ALTER ... OWNER
/// TO`, and when it has an explicit ACL, a REVOKE of everything from PUBLIC
/// and the owner followed by one GRANT per ACL entry, so the target's ACL
/// ends up equal to the source's.
pub(super) async fn owners_and_grants(conn: &mut PgConnection) -> Result<Vec<Statement>> {
    let namespace_member = not_extension_member("pg_namespace", "n.oid");
    let type_member = not_extension_member("pg_type", "t.oid");
    let class_member = not_extension_member("pg_class", "c.oid");
    let proc_member = not_extension_member("pg_proc", "p.oid");
    let sql = format!(
        "WITH owned(classid, objid, owner, acl, grant_kind) AS ( \
             SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, n.oid, n.nspowner, n.nspacl, 'SCHEMA' \
             FROM pg_catalog.pg_namespace n WHERE {USER_NAMESPACE} AND {namespace_member} \
           UNION ALL \
             SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, t.typowner, t.typacl, \
                    CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END \
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
             WHERE {USER_NAMESPACE} AND {type_member} AND (t.typtype IN ('e', 'd', 'r') \
               OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid) = 'c')) \
           UNION ALL \
             SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid, c.relowner, c.relacl, \
                    CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {USER_NAMESPACE} AND {class_member} \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                   WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'i') \
           UNION ALL \
             SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, p.proowner, p.proacl, \
                    CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END \
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             WHERE p.prokind IN ('f', 'p', 'w') AND {USER_NAMESPACE} AND {proc_member}) \
         SELECT COALESCE(o.schema, '')::text, o.identity::text, \
                pg_catalog.format('ALTER %s %s OWNER TO %I', \
                    CASE o.type WHEN 'composite type' THEN 'TYPE' ELSE pg_catalog.upper(o.type) END, \
                    o.identity, pg_catalog.pg_get_userbyid(owned.owner)) \
                || CASE WHEN owned.acl IS NULL THEN '' ELSE \
                     pg_catalog.format('; REVOKE ALL ON %s %s FROM PUBLIC; REVOKE ALL ON %s %s FROM %I', \
                         owned.grant_kind, o.identity, owned.grant_kind, o.identity, \
                         pg_catalog.pg_get_userbyid(owned.owner)) \
                     || COALESCE((SELECT pg_catalog.string_agg(pg_catalog.format('; GRANT %s ON %s %s TO %s%s', \
                            x.privilege_type, owned.grant_kind, o.identity, \
                            CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(x.grantee)) END, \
                            CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), '' \
                            ORDER BY x.grantee, x.privilege_type) \
                        FROM pg_catalog.aclexplode(owned.acl) x), '') \
                   END, \
                NULL::text \
         FROM owned CROSS JOIN LATERAL pg_catalog.pg_identify_object(owned.classid, owned.objid, 0) o \
         ORDER BY owned.classid, owned.objid"
    );
    Ok(objects(conn, "owner and grants", sql)
        .await?
        .into_iter()
        .map(|o| o.statement)
        .collect())
}
