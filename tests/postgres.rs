//! End to end over gRPC against a real PostgreSQL: every column type round
//! trips losslessly, parallel and single-connection dumps agree byte for
//! byte, running/cancelled/failed backups behave, and a server whose
//! database is down still starts and says so.

mod common;

use std::path::Path;
use std::time::Duration;

use backup_service::format::reader::BackupReader;
use backup_service::proto::{
    Backup, BackupStatus, CreateBackupRequest, DeleteBackupRequest, DownloadBackupRequest,
    GetBackupRequest, ListBackupsRequest,
};
use base64::Engine;
use common::*;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Row};
use tonic::Code;

/// The session settings the dumper uses, so `::text` matches COPY output.
const DUMPER_SESSION: &str = "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
     SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// Polls of 50 ms before a backup that should finish is taken as stuck.
const MAX_POLLS: usize = 1200;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The whole backup file, rows kept as raw JSON text so nothing is lost.
#[derive(Deserialize)]
struct BackupFile {
    header: serde_json::Value,
    data: Vec<TableData>,
    trailer: serde_json::Value,
}

#[derive(Deserialize)]
struct TableData {
    schema: String,
    name: String,
    rows: Vec<Vec<Box<RawValue>>>,
}

async fn verify_file(
    bytes: Vec<u8>,
) -> (
    backup_service::format::Header,
    backup_service::format::Trailer,
) {
    let stream = futures::stream::iter(vec![Ok(bytes::Bytes::from(bytes))]).boxed();
    BackupReader::open(stream)
        .await
        .expect("header")
        .verify_to_end()
        .await
        .expect("file verifies")
}

async fn pg_connect(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url)
        .await
        .expect("connect to test database")
}

/// A connection with the dumper's session settings.
async fn dumper_session(url: &str) -> sqlx::PgConnection {
    let mut conn = pg_connect(url).await;
    sqlx::raw_sql(DUMPER_SESSION)
        .execute(&mut conn)
        .await
        .expect("session settings");
    conn
}

/// Opens a transaction holding an ACCESS EXCLUSIVE lock on `table`, so any
/// COPY of it blocks until `release`.
async fn lock_table(url: &str, table: &str) -> sqlx::PgConnection {
    let mut conn = pg_connect(url).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        quote(table)
    )))
    .execute(&mut conn)
    .await
    .expect("lock table");
    conn
}

async fn release(mut conn: sqlx::PgConnection) {
    sqlx::raw_sql("COMMIT")
        .execute(&mut conn)
        .await
        .expect("release lock");
    conn.close().await.expect("close locking connection");
}

/// Waits until some backend of this database is stuck in a COPY waiting for a lock.
async fn wait_for_blocked_copy(url: &str) {
    let mut conn = pg_connect(url).await;
    for _ in 0..MAX_POLLS {
        let blocked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'COPY%'
               AND state = 'active' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        if blocked > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the backup's COPY never waited for the lock");
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

async fn create(client: &mut Client, description: &str, run_async: bool) -> Backup {
    client
        .create_backup(CreateBackupRequest {
            description: description.into(),
            include_documents: None,
            r#async: run_async,
            compression: String::new(),
        })
        .await
        .expect("create backup")
        .into_inner()
}

async fn get(client: &mut Client, id: &str) -> Backup {
    client
        .get_backup(GetBackupRequest {
            backup_id: id.into(),
        })
        .await
        .expect("get backup")
        .into_inner()
}

/// Polls GetBackup until the backup leaves RUNNING; panics if it never does.
async fn wait_until_finished(client: &mut Client, id: &str) -> Backup {
    for _ in 0..MAX_POLLS {
        let backup = get(client, id).await;
        if backup.status() != BackupStatus::Running && backup.status() != BackupStatus::Pending {
            return backup;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backup {id} never finished");
}

async fn download_error(client: &mut Client, id: &str) -> tonic::Status {
    client
        .download_backup(DownloadBackupRequest {
            backup_id: id.into(),
            offset: 0,
        })
        .await
        .map(|_| ())
        .expect_err("download refused")
}

fn storage_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("storage directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts a completed backup downloads whole, matches its sha256 and verifies.
async fn download_verified(client: &mut Client, backup: &Backup) -> Vec<u8> {
    assert_eq!(backup.status(), BackupStatus::Completed, "{backup:?}");
    let bytes = download(client, &backup.backup_id, 0).await;
    assert_eq!(bytes.len() as u64, backup.size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), backup.sha256);
    verify_file(bytes.clone()).await;
    bytes
}

// ---------------------------------------------------------------------------
// 1. Every column type round trips
// ---------------------------------------------------------------------------

const ALL_TYPES_SCHEMA: &str = r#"
CREATE TYPE "LoanStatus" AS ENUM ('sad', 'ok', 'it''s "odd"', 'ünï 😀');
CREATE TABLE "AllTypes" (
    id integer PRIMARY KEY,
    "createdAt" timestamptz,
    "order" text,
    "odd "" name" text,
    c_smallint smallint,
    c_integer integer,
    c_bigint bigint,
    c_numeric numeric(14,2),
    c_decimal decimal,
    c_numeric_big numeric,
    c_real real,
    c_double double precision,
    c_text text,
    c_varchar varchar(20),
    c_char char(5),
    c_bool boolean,
    c_ts timestamp,
    c_ts3 timestamp(3),
    c_tstz timestamptz,
    c_date date,
    c_time time,
    c_timetz timetz,
    c_interval interval,
    c_uuid uuid,
    c_json json,
    c_jsonb jsonb,
    c_bytea bytea,
    c_int_arr integer[],
    c_text_arr text[],
    c_enum "LoanStatus",
    c_inet inet,
    c_cidr cidr,
    c_required text NOT NULL DEFAULT 'required'
);
CREATE SCHEMA "Billing";
CREATE TABLE "Billing"."Line Items" (
    id integer PRIMARY KEY,
    "allTypesId" integer REFERENCES "AllTypes"(id),
    "select" text
);
"#;

const ALL_TYPES_ROWS: &str = r#"
INSERT INTO "AllTypes" (id, "createdAt", "order", "odd "" name", c_smallint, c_integer, c_bigint,
    c_numeric, c_decimal, c_numeric_big, c_real, c_double, c_text, c_varchar, c_char, c_bool,
    c_ts, c_ts3, c_tstz, c_date, c_time, c_timetz, c_interval, c_uuid, c_json, c_jsonb, c_bytea,
    c_int_arr, c_text_arr, c_enum, c_inet, c_cidr)
VALUES
(1, '2026-03-11 12:00:00.123456+02', 'first', 'odd', -32768, -2147483648, -9223372036854775808,
    '12345678901.20', '0.000000000000000000001',
    '123456789012345678901234567890.123456789012345678901234567890',
    'NaN', 'NaN',
    E'emoji 😀 CJK 漢字 tab\there newline\nline2 cr\r backslash\\ quotes "\' ctrl\x01 del\x7f',
    'héllo wörld', 'ab', true,
    '2026-03-11 12:00:00', '2026-03-11 12:00:00.123456', '2026-03-11 12:00:00.123456+02',
    '2026-03-11', '23:59:59.999999', '12:34:56.789+05:30', '1 year 2 mons 3 days 04:05:06.789',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    E'{"a" :  1,\n  "a": 2, "b":[1 ,2 ],\t"s": "x\\u00e9"}',
    '{"nested": {"deep": {"x": [1, 2, {"y": null}]}}, "big": 12345678901234567890.123456789, "s": "tab\there \"q\" \\ é 😀", "tiny": -0.000000000000000000001}',
    (SELECT decode(string_agg(lpad(to_hex(i), 2, '0'), '' ORDER BY i), 'hex') FROM generate_series(0, 255) AS i),
    '{1,NULL,-3}', ARRAY['a"b', NULL, 'c,d', 'NULL', '', E'back\\slash', 'sp ace', '{}'],
    'it''s "odd"', '::1', '10.0.0.0/8'),
(2, '1970-01-01 00:00:00+00', 'second', E'tab\tin value', 32767, 2147483647, 9223372036854775807,
    '-99999999999.99', 'NaN', 'Infinity',
    'Infinity', '-Infinity',
    '', '', '', false,
    'infinity', '-infinity', 'infinity', 'infinity', '00:00:00', '00:00:00-12',
    '-1 days +00:00:00.000001',
    '00000000-0000-0000-0000-000000000000',
    'null', '"just a string"', '',
    '{}', '{}', 'ünï 😀', '192.168.0.1/24', '2001:db8::/32'),
(3, NULL, 'third', NULL, 0, 0, 0, '0.00', '-0.5', '-Infinity', '0.1', '0.1',
    E'\\N', 'x', 'abcde', NULL,
    '4713-01-01 00:00:00 BC', '2000-02-29 23:59:59.9996', '0001-01-01 00:00:00+00', '0001-01-01 BC',
    '12:00', '12:00+00', '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
    '[]', '[1.0, 1e2, -0, 0.1, 1e-7, true, false, null, "\u00e9\n"]', '\x00',
    '{{1,2},{3,4}}', ARRAY[E'line\nbreak', E'tab\t', 'x'], 'sad', '10.0.0.1', '192.168.0.0/24'),
(4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-0', '1e-300',
    E'\\', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    E'"\\\\ \\"" ', '{}', '\x5c4e', NULL, NULL, NULL, NULL, NULL),
(5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '3.4028235e38', '1.7976931348623157e308',
    E'\u2028\u2029 \ufeff zero-width\u200b', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
(6, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '1.17549435e-38', '-0',
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL),
(7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '1e-45', '5e-324',
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL),
(8, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL);
INSERT INTO "Billing"."Line Items" VALUES (1, 1, 'one'), (2, NULL, E'two\nlines'), (3, 2, NULL);
"#;

/// (column, type as the header spells it, encoding, nullable)
const ALL_TYPES_COLUMNS: &[(&str, &str, &str, bool)] = &[
    ("id", "integer", "number", false),
    ("createdAt", "timestamp with time zone", "text", true),
    ("order", "text", "text", true),
    ("odd \" name", "text", "text", true),
    ("c_smallint", "smallint", "number", true),
    ("c_integer", "integer", "number", true),
    ("c_bigint", "bigint", "number", true),
    ("c_numeric", "numeric(14,2)", "text", true),
    ("c_decimal", "numeric", "text", true),
    ("c_numeric_big", "numeric", "text", true),
    ("c_real", "real", "float", true),
    ("c_double", "double precision", "float", true),
    ("c_text", "text", "text", true),
    ("c_varchar", "character varying(20)", "text", true),
    ("c_char", "character(5)", "text", true),
    ("c_bool", "boolean", "bool", true),
    ("c_ts", "timestamp without time zone", "text", true),
    ("c_ts3", "timestamp(3) without time zone", "text", true),
    ("c_tstz", "timestamp with time zone", "text", true),
    ("c_date", "date", "text", true),
    ("c_time", "time without time zone", "text", true),
    ("c_timetz", "time with time zone", "text", true),
    ("c_interval", "interval", "text", true),
    ("c_uuid", "uuid", "text", true),
    ("c_json", "json", "text", true),
    ("c_jsonb", "jsonb", "text", true),
    ("c_bytea", "bytea", "base64", true),
    ("c_int_arr", "integer[]", "text", true),
    ("c_text_arr", "text[]", "text", true),
    ("c_enum", "\"LoanStatus\"", "text", true),
    ("c_inet", "inet", "text", true),
    ("c_cidr", "cidr", "text", true),
    ("c_required", "text", "text", false),
];

/// Checks one backup value against PostgreSQL's own text for it; returns
/// whether it was a non-null value.
fn check_value(what: &str, encoding: &str, raw: &RawValue, pg: Option<&str>) -> bool {
    let raw = raw.get();
    let Some(pg) = pg else {
        assert_eq!(raw, "null", "{what}: SQL NULL must be null");
        return false;
    };
    match encoding {
        "number" => {
            let n: serde_json::Value = serde_json::from_str(raw).unwrap();
            assert!(n.is_number(), "{what}: {raw} is not a JSON number");
            assert_eq!(raw, pg, "{what}");
        }
        "float" => match pg {
            "NaN" | "Infinity" | "-Infinity" => {
                assert_eq!(raw, format!("\"{pg}\""), "{what}");
            }
            _ => {
                let n: serde_json::Value = serde_json::from_str(raw).unwrap();
                assert!(n.is_number(), "{what}: {raw} is not a JSON number");
                assert_eq!(raw, pg, "{what}");
                let (a, b): (f64, f64) = (raw.parse().unwrap(), pg.parse().unwrap());
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{what}: same float, sign included"
                );
            }
        },
        "bool" => {
            let expected = match pg {
                "true" => "true",
                "false" => "false",
                other => panic!("{what}: PostgreSQL bool text {other:?}"),
            };
            assert_eq!(raw, expected, "{what}");
        }
        "text" => {
            let s: String = serde_json::from_str(raw)
                .unwrap_or_else(|e| panic!("{what}: {raw} is not a JSON string: {e}"));
            assert_eq!(s, pg, "{what}");
        }
        "base64" => {
            let s: String = serde_json::from_str(raw).unwrap();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&s)
                .unwrap_or_else(|e| panic!("{what}: {s:?} is not base64: {e}"));
            let hex = pg.strip_prefix("\\x").expect("bytea hex output");
            assert_eq!(bytes, hex::decode(hex).unwrap(), "{what}");
        }
        "json" => {
            let a: serde_json::Value = serde_json::from_str(raw).unwrap();
            let b: serde_json::Value = serde_json::from_str(pg).unwrap();
            assert_eq!(a, b, "{what}");
            // Embedded as is: the exact text, so big numbers keep every digit.
            assert_eq!(raw, pg, "{what}");
        }
        other => panic!("{what}: unknown encoding {other:?}"),
    }
    true
}

/// The expression whose value is PostgreSQL's text for a column.
fn text_expr(column: &str, sql_type: &str) -> String {
    let q = quote(column);
    if sql_type.starts_with("character(") || sql_type == "inet" {
        // `::text` trims char(n) padding and adds /128 to an inet host;
        // COPY (the type's output function, as concat uses) does neither.
        format!("CASE WHEN {q} IS NULL THEN NULL ELSE concat({q}) END")
    } else {
        format!("{q}::text")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips() {
    let db = TestDatabase::create().await;
    db.exec(ALL_TYPES_SCHEMA).await;
    db.exec(ALL_TYPES_ROWS).await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;

    let created = create(&mut client, "all types", false).await;
    assert_eq!(created.status(), BackupStatus::Completed);
    assert_eq!(created.source_engine, "postgresql");
    assert_eq!(created.row_counts.get("public.AllTypes"), Some(&8));
    assert_eq!(created.row_counts.get("Billing.Line Items"), Some(&3));
    let bytes = download_verified(&mut client, &created).await;

    let file: BackupFile = serde_json::from_slice(&bytes).expect("the file is one JSON document");
    assert_eq!(file.header["backupId"], created.backup_id.as_str());
    assert_eq!(file.header["source"]["engine"], "postgresql");
    assert_eq!(file.trailer["totalRows"], 11);
    assert_eq!(file.trailer["sha256"].as_str().unwrap().len(), 64);
    let tables = file.header["tables"].as_array().expect("header.tables");
    let names: Vec<(&str, &str)> = tables
        .iter()
        .map(|t| (t["schema"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    let pos = |schema: &str, name: &str| names.iter().position(|n| *n == (schema, name));
    let all_types = pos("public", "AllTypes").expect("AllTypes in the header");
    let items = pos("Billing", "Line Items").expect("Line Items in the header");
    assert!(all_types < items, "parents first: {names:?}");
    assert_eq!(file.data.len(), tables.len());

    // Header columns: names, SQL types, encodings, nullability.
    let columns = tables[all_types]["columns"].as_array().unwrap();
    let got: Vec<(String, String, String, bool)> = columns
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
                c["encoding"].as_str().unwrap().to_string(),
                c["nullable"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String, bool)> = ALL_TYPES_COLUMNS
        .iter()
        .map(|(n, t, e, null)| (n.to_string(), t.to_string(), e.to_string(), *null))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(tables[all_types]["primaryKey"], serde_json::json!(["id"]));
    assert_eq!(
        tables[items]["foreignKeys"],
        serde_json::json!([{"columns": ["allTypesId"], "referencesSchema": "public", "referencesTable": "AllTypes"}])
    );

    // Every value of every table against PostgreSQL's own text.
    let mut pg = dumper_session(&db.url).await;
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for (index, table) in file.data.iter().enumerate() {
        let header = &tables[index];
        assert_eq!(table.schema, header["schema"].as_str().unwrap());
        assert_eq!(table.name, header["name"].as_str().unwrap());
        let columns = header["columns"].as_array().unwrap();
        assert_eq!(columns[0]["name"], "id");
        let exprs: Vec<String> = columns
            .iter()
            .map(|c| text_expr(c["name"].as_str().unwrap(), c["type"].as_str().unwrap()))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}.{} WHERE id = $1",
            exprs.join(", "),
            quote(&table.schema),
            quote(&table.name)
        );
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.{}",
            quote(&table.schema),
            quote(&table.name)
        )))
        .fetch_one(&mut pg)
        .await
        .unwrap();
        assert_eq!(table.rows.len() as i64, count, "{}", table.name);
        for row in &table.rows {
            assert_eq!(row.len(), columns.len());
            let id: i32 = row[0].get().parse().expect("integer id");
            let pg_row = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id)
                .fetch_one(&mut pg)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            for (i, column) in columns.iter().enumerate() {
                let name = column["name"].as_str().unwrap();
                let encoding = column["encoding"].as_str().unwrap();
                let text: Option<String> = pg_row.try_get(i).unwrap();
                let what = format!("{}.{} row {id} column {name:?}", table.schema, table.name);
                if check_value(&what, encoding, &row[i], text.as_deref()) {
                    *checked.entry(encoding.to_string()).or_default() += 1;
                }
            }
        }
    }
    for encoding in ["number", "float", "bool", "text", "base64"] {
        assert!(
            checked.get(encoding).copied().unwrap_or(0) > 0,
            "no {encoding} value checked: {checked:?}"
        );
    }

    // Spot checks of the trickiest values, independent of `::text`.
    let all = &file.data[all_types];
    let by_id = |id: i32| {
        all.rows
            .iter()
            .find(|r| r[0].get() == id.to_string())
            .unwrap_or_else(|| panic!("row {id}"))
    };
    let col = |name: &str| ALL_TYPES_COLUMNS.iter().position(|c| c.0 == name).unwrap();
    let text = |raw: &RawValue| serde_json::from_str::<String>(raw.get()).unwrap();
    assert_eq!(by_id(1)[col("c_numeric")].get(), "\"12345678901.20\"");
    assert_eq!(
        text(&by_id(1)[col("c_numeric_big")]),
        "123456789012345678901234567890.123456789012345678901234567890"
    );
    assert_eq!(by_id(1)[col("c_bigint")].get(), "-9223372036854775808");
    assert_eq!(by_id(2)[col("c_bigint")].get(), "9223372036854775807");
    assert_eq!(
        text(&by_id(1)[col("c_text")]),
        "emoji 😀 CJK 漢字 tab\there newline\nline2 cr\r backslash\\ quotes \"' ctrl\u{1} del\u{7f}"
    );
    assert_eq!(
        text(&by_id(3)[col("c_text")]),
        "\\N",
        "a literal \\N is not NULL"
    );
    assert_eq!(text(&by_id(4)[col("c_text")]), "\\");
    assert_eq!(
        text(&by_id(2)[col("c_char")]),
        "     ",
        "char(n) keeps its padding"
    );
    assert_eq!(text(&by_id(1)[col("c_char")]), "ab   ");
    assert_eq!(
        text(&by_id(1)[col("c_json")]),
        "{\"a\" :  1,\n  \"a\": 2, \"b\":[1 ,2 ],\t\"s\": \"x\\u00e9\"}",
        "json keeps its exact text"
    );
    let jsonb = text(&by_id(1)[col("c_jsonb")]);
    assert!(
        jsonb.contains("\"big\": 12345678901234567890.123456789"),
        "jsonb keeps every digit: {jsonb}"
    );
    assert!(
        bytes
            .windows(b"12345678901234567890.123456789".len())
            .any(|w| w == b"12345678901234567890.123456789")
    );
    let all_bytes = base64::engine::general_purpose::STANDARD
        .decode(text(&by_id(1)[col("c_bytea")]))
        .unwrap();
    assert_eq!(all_bytes, (0..=255u8).collect::<Vec<_>>());
    assert_eq!(by_id(2)[col("c_bytea")].get(), "\"\"", "empty bytea");
    assert_eq!(by_id(4)[col("c_bytea")].get(), "\"XE4=\"");
    assert_eq!(by_id(1)[col("c_real")].get(), "\"NaN\"");
    assert_eq!(by_id(2)[col("c_double")].get(), "\"-Infinity\"");
    assert_eq!(by_id(3)[col("c_double")].get(), "0.1");
    assert_eq!(by_id(4)[col("c_double")].get(), "1e-300");
    assert_eq!(by_id(6)[col("c_double")].get(), "-0");
    assert_eq!(text(&by_id(2)[col("c_date")]), "infinity");
    assert_eq!(text(&by_id(1)[col("c_ts3")]), "2026-03-11 12:00:00.123");
    assert_eq!(
        text(&by_id(1)[col("c_tstz")]),
        "2026-03-11 10:00:00.123456+00"
    );
    assert_eq!(text(&by_id(1)[col("c_int_arr")]), "{1,NULL,-3}");
    assert_eq!(
        text(&by_id(1)[col("c_text_arr")]),
        r#"{"a\"b",NULL,"c,d","NULL","","back\\slash","sp ace","{}"}"#
    );
    assert_eq!(text(&by_id(1)[col("c_inet")]), "::1");
    assert_eq!(text(&by_id(2)[col("c_inet")]), "192.168.0.1/24");
    assert_eq!(text(&by_id(1)[col("c_enum")]), "it's \"odd\"");
    for (i, value) in by_id(8).iter().enumerate() {
        let expected = match ALL_TYPES_COLUMNS[i].0 {
            "id" => "8",
            "c_required" => "\"required\"",
            _ => "null",
        };
        assert_eq!(value.get(), expected, "row 8 {}", ALL_TYPES_COLUMNS[i].0);
    }

    pg.close().await.unwrap();
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. Parallel and single-connection dumps are identical
// ---------------------------------------------------------------------------

const RELATED_TABLES: &str = r#"
CREATE TABLE "Branch" (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE "User" (
    id integer PRIMARY KEY,
    "branchId" integer NOT NULL REFERENCES "Branch"(id),
    "supervisorId" integer REFERENCES "User"(id),
    email text NOT NULL UNIQUE,
    "createdAt" timestamptz NOT NULL
);
CREATE TABLE "Loan" (
    id bigint PRIMARY KEY,
    "userId" integer NOT NULL REFERENCES "User"(id),
    amount numeric(14,2) NOT NULL,
    rate double precision,
    active boolean NOT NULL,
    meta jsonb,
    scan bytea
);
CREATE TABLE "Repayment" (
    id bigint PRIMARY KEY,
    "loanId" bigint NOT NULL REFERENCES "Loan"(id),
    amount numeric(14,2) NOT NULL,
    note text
);
CREATE TABLE "Event" (id bigint PRIMARY KEY, kind smallint NOT NULL);

INSERT INTO "Branch" SELECT i, 'Branch ' || i || E' \t"ü"' FROM generate_series(1, 2000) i;
INSERT INTO "User" SELECT i, 1 + i % 2000, CASE WHEN i > 1 THEN 1 + i / 10 END,
    'user' || i || '@example.com', timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute'
    FROM generate_series(1, 5000) i;
INSERT INTO "Loan" SELECT i, 1 + i % 5000, (i * 37.5)::numeric(14,2), i / 7.0,
    i % 3 = 0, CASE WHEN i % 5 = 0 THEN jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i)) END,
    CASE WHEN i % 4 = 0 THEN int4send(i) END
    FROM generate_series(1, 6000) i;
INSERT INTO "Repayment" SELECT i, 1 + i % 6000, (i % 1000 + 0.01)::numeric(14,2),
    CASE WHEN i % 2 = 0 THEN E'paid\n' || i END
    FROM generate_series(1, 8000) i;
INSERT INTO "Event" SELECT i, (i % 7)::smallint FROM generate_series(1, 200000) i;
"#;

const RELATED_NAMES: [&str; 5] = ["Branch", "Event", "User", "Loan", "Repayment"];

/// Open file descriptors of this process that point at deleted temp files
/// (the parallel dump's anonymous spill files).
fn open_spill_files() -> usize {
    let tmp = std::env::temp_dir();
    let tmp = tmp.to_string_lossy();
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| p.starts_with(&*tmp) && p.ends_with(" (deleted)"))
                .count()
        })
        .unwrap_or(0)
}

/// The file split into header line, data section and trailer line.
fn split_file(bytes: &[u8]) -> (serde_json::Value, &[u8], serde_json::Value) {
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let body = &bytes[..bytes.len() - 1];
    let trailer_start = body.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let header_line = &bytes[..header_end - 1];
    let header_json = header_line
        .strip_prefix(b"{\"header\":")
        .and_then(|l| l.strip_suffix(b","))
        .expect("header line");
    let trailer_json = bytes[trailer_start..]
        .strip_prefix(b"\"trailer\":")
        .and_then(|l| l.strip_suffix(b"}\n"))
        .expect("trailer line");
    (
        serde_json::from_slice(header_json).unwrap(),
        &bytes[header_end..trailer_start],
        serde_json::from_slice(trailer_json).unwrap(),
    )
}

fn assert_same_data(a: &[u8], b: &[u8], what: &str) {
    if a != b {
        let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0);
        let show = |s: &[u8]| {
            String::from_utf8_lossy(&s[at.saturating_sub(80)..(at + 80).min(s.len())]).into_owned()
        };
        panic!(
            "{what}: data sections differ (lengths {} and {}) at byte {at}:\n{}\n---\n{}",
            a.len(),
            b.len(),
            show(a),
            show(b)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_and_single_connection_dumps_are_identical() {
    let db = TestDatabase::create().await;
    db.exec(RELATED_TABLES).await;
    let dir = temp_dir();

    let mut single_config = config(&db.url, &dir.path().join("single"));
    single_config.dump_parallelism = 1;
    let single = start(&single_config).await;
    let mut single_client = admin_client(single.grpc_addr).await;
    let mut parallel_config = config(&db.url, &dir.path().join("parallel"));
    parallel_config.dump_parallelism = 2;
    let parallel = start(&parallel_config).await;
    let mut parallel_client = admin_client(parallel.grpc_addr).await;

    let one = create(&mut single_client, "one connection", false).await;
    let one_bytes = download_verified(&mut single_client, &one).await;
    let two = create(&mut parallel_client, "two connections", false).await;
    let two_bytes = download_verified(&mut parallel_client, &two).await;

    // Force the spill: the first table is locked, so the writer waits on it
    // while the other connection dumps the rest, 200k-row "Event" included.
    let spills_before = open_spill_files();
    let lock = lock_table(&db.url, "Branch").await;
    let spilled = create(&mut parallel_client, "spilled", true).await;
    assert_eq!(spilled.status(), BackupStatus::Running);
    wait_for_blocked_copy(&db.url).await;
    let mut saw_spill = false;
    for _ in 0..MAX_POLLS {
        if open_spill_files() > spills_before {
            saw_spill = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_spill,
        "the table dumped ahead of its turn spilled to a temp file"
    );
    assert_eq!(
        get(&mut parallel_client, &spilled.backup_id).await.status(),
        BackupStatus::Running
    );
    release(lock).await;
    let spilled = wait_until_finished(&mut parallel_client, &spilled.backup_id).await;
    let spilled_bytes = download_verified(&mut parallel_client, &spilled).await;
    assert_eq!(open_spill_files(), spills_before, "spill files are closed");

    let (one_header, one_data, one_trailer) = split_file(&one_bytes);
    let mut pg = pg_connect(&db.url).await;
    for (name, bytes, backup) in [
        ("parallel", &two_bytes, &two),
        ("spilled", &spilled_bytes, &spilled),
    ] {
        let (header, data, trailer) = split_file(bytes);
        assert_same_data(one_data, data, name);
        assert_eq!(trailer["rowCounts"], one_trailer["rowCounts"], "{name}");
        assert_eq!(trailer["totalRows"], one_trailer["totalRows"], "{name}");
        assert_eq!(backup.row_counts, one.row_counts, "{name}");
        // Headers differ only in what identifies the backup.
        let mut a = one_header.clone();
        let mut b = header.clone();
        for key in ["backupId", "createdAt", "description"] {
            assert_ne!(a[key], b[key], "{name}: {key}");
            a.as_object_mut().unwrap().remove(key);
            b.as_object_mut().unwrap().remove(key);
        }
        assert_eq!(a, b, "{name}: headers");
    }

    // Parents first, the self-reference noted, counts as PostgreSQL has them.
    let tables = one_header["tables"].as_array().unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, RELATED_NAMES);
    let user = &tables[2];
    let refs: Vec<&str> = user["foreignKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fk| fk["referencesTable"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 2);
    assert!(
        refs.contains(&"User") && refs.contains(&"Branch"),
        "{refs:?}"
    );
    for name in RELATED_NAMES {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            quote(name)
        )))
        .fetch_one(&mut pg)
        .await
        .unwrap();
        assert_eq!(
            one_trailer["rowCounts"][format!("public.{name}")],
            count,
            "{name}"
        );
        assert_eq!(
            one.row_counts.get(&format!("public.{name}")).copied(),
            Some(count as u64)
        );
    }
    let file: BackupFile = serde_json::from_slice(&spilled_bytes).unwrap();
    let events = &file.data[1];
    assert_eq!(events.name, "Event");
    assert_eq!(events.rows.len(), 200_000);
    let ids: Vec<i64> = events
        .rows
        .iter()
        .map(|r| r[0].get().parse().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (1..=200_000).collect::<Vec<_>>(), "every row once");

    pg.close().await.unwrap();
    single.shutdown().await;
    parallel.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3-5. Running, cancelled and failed backups
// ---------------------------------------------------------------------------

const SMALL_TABLES: &str = r#"
CREATE TABLE "Account" (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE "Note" (id integer PRIMARY KEY, "accountId" integer REFERENCES "Account"(id), body text);
INSERT INTO "Account" SELECT i, 'account ' || i FROM generate_series(1, 500) i;
INSERT INTO "Note" SELECT i, 1 + i % 500, 'note ' || i FROM generate_series(1, 300) i;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_backup_refuses_download_and_delete_then_completes() {
    let db = TestDatabase::create().await;
    db.exec(SMALL_TABLES).await;
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let server = start(&config(&db.url, &storage)).await;
    let mut client = admin_client(server.grpc_addr).await;

    let lock = lock_table(&db.url, "Account").await;
    let created = create(&mut client, "held up", true).await;
    assert_eq!(created.status(), BackupStatus::Running);
    assert!(created.sha256.is_empty() && created.size == 0);
    wait_for_blocked_copy(&db.url).await;

    let got = get(&mut client, &created.backup_id).await;
    assert_eq!(got.status(), BackupStatus::Running);
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    assert_eq!(list.backups[0].status(), BackupStatus::Running);
    assert_eq!(list.cloudinary_stats.unwrap().count, 0, "not completed yet");

    let e = download_error(&mut client, &created.backup_id).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = client
        .delete_backup(DeleteBackupRequest {
            backup_id: created.backup_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        !storage_files(&storage).contains(&format!("{}.json", created.backup_id)),
        "no data file under its real name while running"
    );

    release(lock).await;
    let done = wait_until_finished(&mut client, &created.backup_id).await;
    assert_eq!(done.status(), BackupStatus::Completed, "{}", done.error);
    assert_eq!(done.row_counts.get("public.Account"), Some(&500));
    assert_eq!(done.row_counts.get("public.Note"), Some(&300));
    let bytes = download_verified(&mut client, &done).await;
    assert_eq!(hex::encode(Sha256::digest(&bytes)), done.sha256);
    assert_eq!(
        storage_files(&storage),
        [
            format!("{}.json", done.backup_id),
            format!("{}.manifest.json", done.backup_id)
        ]
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_create_still_completes() {
    let db = TestDatabase::create().await;
    db.exec(SMALL_TABLES).await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;

    let lock = lock_table(&db.url, "Account").await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        create(&mut client, "client gives up", false),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "create cannot finish while the table is locked"
    );
    wait_for_blocked_copy(&db.url).await;
    release(lock).await;

    let mut found = None;
    for _ in 0..MAX_POLLS {
        let list = client
            .list_backups(ListBackupsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.total, 1);
        let backup = list.backups.into_iter().next().unwrap();
        if backup.status() != BackupStatus::Running {
            found = Some(backup);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let backup = found.expect("the backup finished");
    assert_eq!(backup.status(), BackupStatus::Completed, "{}", backup.error);
    assert_eq!(backup.description, "client gives up");
    assert_eq!(backup.row_counts.get("public.Account"), Some(&500));
    let bytes = download_verified(&mut client, &backup).await;
    let (_, trailer) = verify_file(bytes).await;
    assert_eq!(trailer.total_rows, 800);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_backup_leaves_no_data() {
    let db = TestDatabase::create().await;
    db.exec(SMALL_TABLES).await;
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let server = start(&config(&db.url, &storage)).await;
    let mut client = admin_client(server.grpc_addr).await;

    let lock = lock_table(&db.url, "Account").await;
    let created = create(&mut client, "doomed", true).await;
    assert_eq!(created.status(), BackupStatus::Running);
    wait_for_blocked_copy(&db.url).await;
    let mut admin = pg_connect(&db.url).await;
    let mut terminated = 0;
    for _ in 0..MAX_POLLS {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE 'COPY%' AND datname = current_database()",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        terminated = killed.into_iter().filter(|&k| k).count();
        if terminated > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminated > 0, "found the backend running the COPY");
    release(lock).await;

    let failed = wait_until_finished(&mut client, &created.backup_id).await;
    assert_eq!(failed.status(), BackupStatus::Failed);
    assert!(
        failed.error.contains("database") && failed.error.contains("Account"),
        "error names the database and the table: {:?}",
        failed.error
    );
    assert!(
        failed.error.contains("terminat") || failed.error.contains("connection"),
        "error says what happened: {:?}",
        failed.error
    );
    assert!(failed.sha256.is_empty() && failed.size == 0);
    assert_eq!(
        storage_files(&storage),
        [format!("{}.manifest.json", failed.backup_id)],
        "no data file and no temp file"
    );
    let e = download_error(&mut client, &failed.backup_id).await;
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    assert_eq!(list.cloudinary_stats.unwrap().count, 0);

    let deleted = client
        .delete_backup(DeleteBackupRequest {
            backup_id: failed.backup_id.clone(),
        })
        .await
        .expect("a failed backup can be deleted")
        .into_inner();
    assert!(deleted.deleted);
    assert!(storage_files(&storage).is_empty());
    let e = client
        .get_backup(GetBackupRequest {
            backup_id: failed.backup_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // The service recovers: the next backup works.
    let next = create(&mut client, "after the failure", false).await;
    download_verified(&mut client, &next).await;
    admin.close().await.unwrap();
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Database down
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_not_serving_while_database_down() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:secret-pw@127.0.0.1:{port}/postgres");
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let server = start(&config(&url, &storage)).await;

    let mut health = HealthClient::new(channel(server.grpc_addr).await);
    for service in ["", "backup.v1.BackupService"] {
        let mut answers = Vec::new();
        let mut status = None;
        for _ in 0..MAX_POLLS {
            match health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
            {
                Ok(r) => {
                    let s = r.into_inner().status();
                    answers.push(format!("{s:?}"));
                    if s == ServingStatus::NotServing {
                        status = Some(s);
                        break;
                    }
                }
                Err(e) => answers.push(format!("{:?}", e.code())),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, Some(ServingStatus::NotServing), "{service:?}");
        assert!(
            !answers.iter().any(|a| a == "Serving"),
            "{service:?} reported SERVING while the database is down: {answers:?}"
        );
    }

    let mut client = admin_client(server.grpc_addr).await;
    let e = client
        .create_backup(CreateBackupRequest {
            description: "no database".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(
        e.message().contains("database connection"),
        "clear error: {:?}",
        e.message()
    );
    assert!(!e.message().contains("secret-pw"), "{:?}", e.message());
    let list = client
        .list_backups(ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 1);
    let failed = &list.backups[0];
    assert_eq!(failed.status(), BackupStatus::Failed);
    assert!(
        failed.error.contains("database connection"),
        "{:?}",
        failed.error
    );
    assert_eq!(
        storage_files(&storage),
        [format!("{}.manifest.json", failed.backup_id)],
        "no data file and no temp file"
    );
    server.shutdown().await;
}
