//! `DOCUMENT_COLUMNS`: which columns hold document URLs, e.g.
//! `"LoanDocument"."fileUrl","public"."UnionMemberDocument"."fileUrl"`.
//!
//! Identifiers follow SQL: a quoted identifier is taken exactly (`""` is a
//! quote inside it); an unquoted one is folded to lower case, as PostgreSQL
//! does. Two parts are `table.column`, three are `schema.table.column`.

use crate::error::{Error, Result};
pub use crate::schema::ColumnRef;
use crate::schema::{TableSchema, quote_ident};

fn syntax(raw: &str, at: usize, what: &str) -> Error {
    Error::invalid(format!(
        "DOCUMENT_COLUMNS {raw:?}: {what} at character {}; expected a comma-separated list of \"table\".\"column\" or \"schema\".\"table\".\"column\"",
        at + 1
    ))
}

/// Parses the whole list; an empty or blank string is an empty list.
pub fn parse_list(raw: &str) -> Result<Vec<ColumnRef>> {
    let chars: Vec<(usize, char)> = raw.char_indices().collect();
    let mut i = 0;
    let skip_space = |i: &mut usize| {
        while chars.get(*i).is_some_and(|(_, c)| c.is_whitespace()) {
            *i += 1;
        }
    };
    let mut refs = Vec::new();
    skip_space(&mut i);
    if i == chars.len() {
        return Ok(refs);
    }
    loop {
        let mut parts = Vec::new();
        loop {
            skip_space(&mut i);
            let at = chars.get(i).map(|(p, _)| *p).unwrap_or(raw.len());
            match chars.get(i).map(|(_, c)| *c) {
                Some('"') => {
                    i += 1;
                    let mut ident = String::new();
                    loop {
                        match chars.get(i).map(|(_, c)| *c) {
                            None => return Err(syntax(raw, at, "unterminated quoted identifier")),
                            Some('"') if chars.get(i + 1).map(|(_, c)| *c) == Some('"') => {
                                ident.push('"');
                                i += 2;
                            }
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some(c) => {
                                ident.push(c);
                                i += 1;
                            }
                        }
                    }
                    if ident.is_empty() {
                        return Err(syntax(raw, at, "empty identifier"));
                    }
                    parts.push(ident);
                }
                Some(c) if c.is_alphabetic() || c == '_' => {
                    let mut ident = String::new();
                    while let Some(c) = chars
                        .get(i)
                        .map(|(_, c)| *c)
                        .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                    {
                        ident.extend(c.to_lowercase());
                        i += 1;
                    }
                    parts.push(ident);
                }
                Some(_) => return Err(syntax(raw, at, "unexpected character")),
                None => return Err(syntax(raw, at, "missing identifier")),
            }
            skip_space(&mut i);
            if chars.get(i).map(|(_, c)| *c) == Some('.') {
                i += 1;
                continue;
            }
            break;
        }
        let at = chars.get(i).map(|(p, _)| *p).unwrap_or(raw.len());
        let column_ref = match parts.len() {
            2 => ColumnRef {
                schema: None,
                table: parts[0].clone(),
                column: parts[1].clone(),
            },
            3 => ColumnRef {
                schema: Some(parts[0].clone()),
                table: parts[1].clone(),
                column: parts[2].clone(),
            },
            n => {
                return Err(syntax(
                    raw,
                    at,
                    &format!("{n} name part(s) where 2 or 3 were expected"),
                ));
            }
        };
        if !refs.contains(&column_ref) {
            refs.push(column_ref);
        }
        match chars.get(i).map(|(_, c)| *c) {
            None => return Ok(refs),
            Some(',') => i += 1,
            Some(_) => return Err(syntax(raw, at, "expected ',' or the end")),
        }
    }
}

/// A configured column found in the snapshot's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedColumn {
    /// Empty for SQLite.
    pub schema: String,
    pub table: String,
    pub column: String,
}

/// Finds every configured column among the dumped tables. A table given
/// without a schema must be unique, or be in `public`. SQLite names compare
/// case-insensitively, as SQLite does.
pub fn resolve(refs: &[ColumnRef], tables: &[TableSchema]) -> Result<Vec<ResolvedColumn>> {
    let same = |a: &str, b: &str, loose: bool| {
        if loose {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let candidates: Vec<&TableSchema> = tables
            .iter()
            .filter(|t| {
                let loose = t.schema.is_empty();
                same(&t.name, &r.table, loose)
                    && r.schema
                        .as_deref()
                        .is_none_or(|s| same(&t.schema, s, loose))
            })
            .collect();
        let table = match candidates.as_slice() {
            [] => {
                return Err(Error::invalid(format!(
                    "DOCUMENT_COLUMNS: table {} not found in the database",
                    match &r.schema {
                        Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&r.table)),
                        None => quote_ident(&r.table),
                    }
                )));
            }
            [one] => *one,
            many => match many.iter().find(|t| t.schema == "public") {
                Some(public) => *public,
                None => {
                    return Err(Error::invalid(format!(
                        "DOCUMENT_COLUMNS: table {} exists in several schemas; name the schema",
                        quote_ident(&r.table)
                    )));
                }
            },
        };
        let column = table
            .columns
            .iter()
            .find(|c| same(&c.name, &r.column, table.schema.is_empty()))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "DOCUMENT_COLUMNS: column {} not found in table {}",
                    quote_ident(&r.column),
                    table.qualified_name()
                ))
            })?;
        let resolved = ResolvedColumn {
            schema: table.schema.clone(),
            table: table.name.clone(),
            column: column.name.clone(),
        };
        if !out.contains(&resolved) {
            out.push(resolved);
        }
    }
    Ok(out)
}

/// One query for every distinct non-null, non-empty URL in the columns,
/// sorted. Works on PostgreSQL, CockroachDB and SQLite.
pub fn url_query(columns: &[ResolvedColumn]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let table = if c.schema.is_empty() {
                quote_ident(&c.table)
            } else {
                format!("{}.{}", quote_ident(&c.schema), quote_ident(&c.table))
            };
            let column = quote_ident(&c.column);
            format!("SELECT CAST({column} AS TEXT) AS u FROM {table} WHERE {column} IS NOT NULL")
        })
        .collect();
    format!(
        "SELECT u FROM ({}) AS document_urls WHERE u <> '' ORDER BY u",
        parts.join(" UNION ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(schema: Option<&str>, table: &str, column: &str) -> ColumnRef {
        ColumnRef {
            schema: schema.map(str::to_string),
            table: table.into(),
            column: column.into(),
        }
    }

    #[test]
    fn parses_quoted_unquoted_and_schema_qualified_names() {
        let refs = parse_list(
            r#" "LoanDocument"."fileUrl" , "public"."Union""Member".url,docs.File_Url "#,
        )
        .unwrap();
        assert_eq!(
            refs,
            vec![
                r(None, "LoanDocument", "fileUrl"),
                r(Some("public"), "Union\"Member", "url"),
                r(None, "docs", "file_url"),
            ]
        );
        assert!(parse_list("").unwrap().is_empty());
        assert!(parse_list("   ").unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_syntax_with_a_clear_message() {
        for bad in [
            "\"Loan\"",
            "\"Loan\".\"url",
            "a.b.c.d",
            "a.b,",
            "a..b",
            "a.b c.d",
            "\"\".x",
            "a.b;drop",
        ] {
            let e = parse_list(bad).unwrap_err();
            assert!(
                e.message.contains("DOCUMENT_COLUMNS"),
                "{bad}: {}",
                e.message
            );
        }
    }

    fn table(schema: &str, name: &str, columns: &[&str]) -> TableSchema {
        TableSchema::of_text(schema, name, columns)
    }

    #[test]
    fn resolves_against_the_schema() {
        let tables = vec![
            table("public", "Doc", &["fileUrl"]),
            table("archive", "Doc", &["fileUrl"]),
            table("archive", "Old", &["url"]),
        ];
        let got = resolve(&[r(None, "Doc", "fileUrl")], &tables).unwrap();
        assert_eq!(got[0].schema, "public");
        let got = resolve(&[r(Some("archive"), "Doc", "fileUrl")], &tables).unwrap();
        assert_eq!(got[0].schema, "archive");
        let e = resolve(&[r(None, "Missing", "x")], &tables).unwrap_err();
        assert!(e.message.contains("\"Missing\" not found"), "{}", e.message);
        let e = resolve(&[r(None, "Old", "nope")], &tables).unwrap_err();
        assert!(e.message.contains("column \"nope\""), "{}", e.message);
        let sqlite = vec![table("", "LoanDocument", &["fileUrl"])];
        assert!(resolve(&[r(None, "loandocument", "fileurl")], &sqlite).is_ok());
    }

    #[test]
    fn query_quotes_identifiers() {
        let q = url_query(&[ResolvedColumn {
            schema: "public".into(),
            table: "a\"b".into(),
            column: "url".into(),
        }]);
        assert!(q.contains("FROM \"public\".\"a\"\"b\""), "{q}");
    }
}
