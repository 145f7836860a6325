//! Restore, verify and maintenance mode end to end: a real server, real
//! PostgreSQL databases and SQLite files. Restored PostgreSQL data is
//! compared with `pg_dump --data-only` taken at backup time, byte for byte.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use backup_service::proto::{
    Backup, BackupStatus, CreateBackupRequest, DeleteBackupRequest, GetMaintenanceModeRequest,
    ListBackupsRequest, RestoreBackupRequest, RestorePhase, RestoreProgress,
    SetMaintenanceModeRequest, VerifyBackupRequest,
};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, Row, TypeInfo, ValueRef};
use tonic::Code;

/// Polls of 50 ms before something that should happen is taken as stuck.
const MAX_POLLS: usize = 1200;

// ---------------------------------------------------------------------------
// The loan-management schema
// ---------------------------------------------------------------------------

const LOAN_SCHEMA: &str = r##"
CREATE TYPE "Role" AS ENUM ('ADMIN', 'LOAN_OFFICER', 'CUSTOMER');
CREATE TYPE "LoanStatus" AS ENUM ('PENDING', 'APPROVED', 'ACTIVE', 'PAID', 'DEFAULTED');
CREATE TABLE "User" (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    "supervisorId" integer REFERENCES "User"(id),
    role "Role" NOT NULL DEFAULT 'CUSTOMER',
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deletedAt" timestamp(3),
    "passwordHash" text NOT NULL
);
CREATE TABLE "LoanType" (
    id serial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    "minAmount" decimal(14,2) NOT NULL,
    "maxAmount" decimal(14,2) NOT NULL,
    "interestRate" decimal(5,2) NOT NULL
);
CREATE TABLE "Loan" (
    id serial PRIMARY KEY,
    "userId" integer NOT NULL REFERENCES "User"(id),
    "loanTypeId" integer NOT NULL REFERENCES "LoanType"(id),
    amount decimal(14,2) NOT NULL,
    status "LoanStatus" NOT NULL DEFAULT 'PENDING',
    "auditData" jsonb,
    "createdAt" timestamp(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE "RepaymentScheduleItem" (
    id serial PRIMARY KEY,
    "loanId" integer NOT NULL REFERENCES "Loan"(id) ON DELETE CASCADE,
    "dueDate" date NOT NULL,
    amount decimal(14,2) NOT NULL,
    paid boolean NOT NULL DEFAULT false
);
CREATE TABLE "AuditLog" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "userId" integer REFERENCES "User"(id),
    payload jsonb NOT NULL,
    "createdAt" timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE "EveryType" (
    id serial PRIMARY KEY,
    c_smallint smallint,
    c_integer integer,
    c_bigint bigint,
    c_numeric numeric,
    c_real real,
    c_double double precision,
    c_text text,
    c_bool boolean,
    c_timestamp timestamp,
    c_timestamptz timestamptz,
    c_date date,
    c_time time,
    c_interval interval,
    c_uuid uuid,
    c_json json,
    c_jsonb jsonb,
    c_bytea bytea,
    c_int_array integer[],
    c_text_array text[],
    c_enum "Role",
    c_inet inet
);
"##;

const LOAN_DATA: &str = r##"
INSERT INTO "User" (email, role, "createdAt", "deletedAt", "passwordHash")
SELECT 'user' || i || '@example.com',
       (ARRAY['ADMIN', 'LOAN_OFFICER', 'CUSTOMER'])[1 + i % 3]::"Role",
       timestamp '2024-01-01 08:00:00' + i * interval '1 hour 17 minutes 3.123 seconds',
       CASE WHEN i % 17 = 0 THEN timestamp '2025-06-30 12:00:00.5' + i * interval '1 minute' END,
       '$2b$10$' || md5(i::text)
FROM generate_series(1, 300) AS i;
-- Supervisor chains: most rows point at a LATER row, a few at an earlier one.
UPDATE "User" SET "supervisorId" = id + 1 + id % 4 WHERE id <= 290 AND id % 3 <> 0;
UPDATE "User" SET "supervisorId" = 1 WHERE id > 295;

INSERT INTO "LoanType" (name, "minAmount", "maxAmount", "interestRate") VALUES
    ('Personal', 500.00, 25000.00, 12.50),
    ('Mortgage', 50000.00, 999999999999.99, 4.25),
    ('Auto', 2000.00, 80000.00, 6.90),
    ('Student', 100.00, 120000.00, 3.10),
    ('Business', 10000.00, 5000000.00, 8.75);

INSERT INTO "Loan" ("userId", "loanTypeId", amount, status, "auditData", "createdAt")
SELECT 1 + (i * 7) % 300, 1 + i % 5, round((i * 1234.567) % 900000 + 0.01, 2),
       (ARRAY['PENDING', 'APPROVED', 'ACTIVE', 'PAID', 'DEFAULTED'])[1 + i % 5]::"LoanStatus",
       CASE WHEN i % 9 = 0 THEN NULL
            ELSE jsonb_build_object('approvedBy', 1 + i % 300,
                                    'note', E'línea ' || i || E'\t"ok"\n\\',
                                    'checks', jsonb_build_array(true, i, 1.5, NULL))
       END,
       timestamp '2024-03-01' + i * interval '3 hours 0.001 seconds'
FROM generate_series(1, 600) AS i;

INSERT INTO "RepaymentScheduleItem" ("loanId", "dueDate", amount, paid)
SELECT 1 + i % 600, date '2024-04-01' + (i / 600) * 30, round((i * 77.7) % 5000 + 1, 2), i % 4 = 0
FROM generate_series(0, 1199) AS i;

INSERT INTO "AuditLog" ("userId", payload, "createdAt")
SELECT CASE WHEN i % 10 = 0 THEN NULL ELSE 1 + i % 300 END,
       jsonb_build_object('action', 'loan.update', 'seq', i,
                          'diff', jsonb_build_object('status', jsonb_build_array('PENDING', 'APPROVED'))),
       timestamptz '2024-05-01 00:00:00+02' + i * interval '61.000123 seconds'
FROM generate_series(1, 400) AS i;

INSERT INTO "EveryType" (c_smallint, c_integer, c_bigint, c_numeric, c_real, c_double, c_text,
    c_bool, c_timestamp, c_timestamptz, c_date, c_time, c_interval, c_uuid, c_json, c_jsonb,
    c_bytea, c_int_array, c_text_array, c_enum, c_inet)
SELECT (i * 163 % 65536 - 32768)::smallint,
       i * 10007 - 1000000,
       (i::bigint * 92233720368547) * (CASE WHEN i % 2 = 0 THEN -1 ELSE 1 END),
       i::numeric / 7,
       (i / 3.0)::real,
       i * pi() / 1e5,
       'row ' || i || E' tab\there nl\nhere cr\rhere bs\\ "q" ' || chr(1) || chr(31) || ' ünïcödé 日本語 🎉',
       i % 2 = 0,
       timestamp '2000-01-01 00:00:00.123456' + i * interval '37 days 3 hours 1.5 seconds',
       timestamptz '1999-12-31 23:59:59.999999+05:30' + i * interval '1 day 1 microsecond',
       date '1970-01-01' + i * 97,
       time '00:00:00' + i * interval '7 minutes 13.000123 seconds',
       (i - 100) * interval '1 year 2 mons 3 days 04:05:06.789',
       md5(i::text)::uuid,
       ('{"i": ' || i || ',  "dup": 1, "dup": 2 }')::json,
       jsonb_build_object('i', i, 'nested', jsonb_build_array(1, 'two', NULL, true), 'u', E'ü\n"'),
       decode(md5(i::text), 'hex') || '\x00ff00'::bytea,
       ARRAY[i, -i, NULL],
       ARRAY['a,b', 'quote"d', E'back\\slash', NULL, '', 'NULL', '{braces}', 'sp ace'],
       (ARRAY['ADMIN', 'LOAN_OFFICER', 'CUSTOMER'])[1 + i % 3]::"Role",
       CASE WHEN i % 2 = 0 THEN ('10.' || i % 256 || '.' || i * 7 % 256 || '.1')::inet
            ELSE ('2001:db8::' || to_hex(i) || '/64')::inet END
FROM generate_series(1, 200) AS i;

INSERT INTO "EveryType" (c_smallint, c_integer, c_bigint, c_numeric, c_real, c_double, c_text,
    c_bool, c_timestamp, c_timestamptz, c_date, c_time, c_interval, c_uuid, c_json, c_jsonb,
    c_bytea, c_int_array, c_text_array, c_enum, c_inet) VALUES
    (-32768, -2147483648, -9223372036854775808, 'NaN', 'NaN', 'NaN', '', false,
     '-infinity', '-infinity', '-infinity', '00:00:00', '-1000000 years',
     '00000000-0000-0000-0000-000000000000', '[]', '{}', '\x', '{}', '{}', 'ADMIN', '0.0.0.0/0'),
    (32767, 2147483647, 9223372036854775807,
     '-123456789012345678901234567890.123456789012345678901', 'Infinity', '-Infinity',
     E'\\N', true, 'infinity', 'infinity', 'infinity', '24:00:00', '1000000 years',
     'ffffffff-ffff-ffff-ffff-ffffffffffff', '"just a string"', '[1, "a", {"b": null}]',
     '\x5c0a09', '{NULL}', '{"\\N", "tab\there"}', 'CUSTOMER', '::1'),
    (0, 0, 0, '0.000000000000000000001', '-Infinity', 1.7976931348623157e308, 'null', NULL,
     '4713-01-01 00:00:00 BC', '1970-01-01 00:00:00+00', '4713-01-01 BC', '23:59:59.999999',
     '-1 days +00:00:00.000001', NULL, 'null', '"null"', NULL, NULL, NULL, NULL, NULL),
    (1, 1, 1, 1, '-0', 5e-324, E'\\\\x41 looks like bytea', true, '2026-03-11 12:00:00',
     '2026-03-11 12:00:00.000001+00', '2026-03-11', '12:00:00', '0', NULL, '{"a":1}',
     '{"deep": {"deeper": [[], {}, "\u00e9"]}}', '\x00', '{0}', '{"{}"}', 'LOAN_OFFICER',
     '192.168.0.1/24'),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL);
"##;

/// Deletes, updates and inserts across every table, and puts the sequences
/// behind the data, as after recreating a database.
const LOAN_MODIFY: &str = r##"
DELETE FROM "RepaymentScheduleItem" WHERE id % 7 = 0;
UPDATE "RepaymentScheduleItem" SET paid = NOT paid WHERE id % 5 = 0;
UPDATE "Loan" SET status = 'PAID', amount = amount + 1, "auditData" = '{"changed": true}' WHERE id % 5 = 0;
DELETE FROM "Loan" WHERE id % 50 = 0;
UPDATE "User" SET "deletedAt" = '2026-01-01 00:00:00', "supervisorId" = NULL WHERE id % 11 = 0;
INSERT INTO "User" (email, "passwordHash", "supervisorId")
SELECT 'new' || i || '@example.com', 'x', 1 FROM generate_series(1, 10) AS i;
INSERT INTO "AuditLog" (payload) SELECT jsonb_build_object('late', i) FROM generate_series(1, 20) AS i;
DELETE FROM "AuditLog" WHERE id % 3 = 0;
DELETE FROM "EveryType" WHERE id % 3 = 0;
UPDATE "EveryType" SET c_text = 'changed', c_double = 0 WHERE id % 4 = 0;
UPDATE "LoanType" SET "interestRate" = 99.99;
ALTER SEQUENCE "User_id_seq" RESTART WITH 1;
ALTER TABLE "AuditLog" ALTER COLUMN id RESTART WITH 1;
"##;

const LOAN_TABLES: [&str; 6] = [
    "public.AuditLog",
    "public.EveryType",
    "public.Loan",
    "public.LoanType",
    "public.RepaymentScheduleItem",
    "public.User",
];

async fn loan_database() -> TestDatabase {
    let db = TestDatabase::create().await;
    db.exec(LOAN_SCHEMA).await;
    db.exec(LOAN_DATA).await;
    db
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `pg_dump --data-only` in plain (COPY) format, without the random
/// `\restrict` key lines newer pg_dump versions add.
async fn pg_dump_data(url: &str) -> String {
    let url = url.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("pg_dump")
            .arg("--data-only")
            .arg("--dbname")
            .arg(&url)
            .output()
            .expect("run pg_dump")
    })
    .await
    .expect("pg_dump task");
    assert!(
        output.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("pg_dump output is UTF-8");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect();
    assert!(kept.len() > 20, "pg_dump printed almost nothing:\n{text}");
    kept.join("\n")
}

/// Asserts two dumps are identical, showing the first difference only.
fn assert_same_dump(expected: &str, actual: &str, what: &str) {
    if expected == actual {
        return;
    }
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let at = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let show = |lines: &[&str]| lines[at.min(lines.len())..(at + 5).min(lines.len())].join("\n");
    panic!(
        "{what}: dumps differ at line {} ({} vs {} lines)\nexpected:\n{}\nactual:\n{}",
        at + 1,
        e.len(),
        a.len(),
        show(&e),
        show(&a)
    );
}

/// The dump's lines in sorted order: the same rows regardless of their order.
fn sorted_lines(dump: &str) -> Vec<String> {
    let mut lines: Vec<String> = dump.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

async fn pg_connect(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url)
        .await
        .expect("connect to test database")
}

async fn pg_i64(url: &str, sql: &str) -> i64 {
    let mut conn = pg_connect(url).await;
    let value: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.expect("close");
    value
}

/// Rows per backup table, counted in the database itself.
async fn pg_row_counts(url: &str, tables: &[&str]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for table in tables {
        let name = table.trim_start_matches("public.");
        let n = pg_i64(url, &format!("SELECT count(*) FROM \"{name}\"")).await;
        counts.insert(table.to_string(), n as u64);
    }
    counts
}

fn sorted(map: &HashMap<String, u64>) -> BTreeMap<String, u64> {
    map.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

async fn backup_now(client: &mut Client, description: &str) -> Backup {
    let backup = client
        .create_backup(CreateBackupRequest {
            description: description.into(),
            include_documents: None,
            r#async: false,
            compression: String::new(),
        })
        .await
        .expect("create backup")
        .into_inner();
    assert_eq!(backup.status(), BackupStatus::Completed, "{backup:?}");
    backup
}

async fn set_maintenance(client: &mut Client, enabled: bool, reason: &str) {
    let state = client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled,
            reason: reason.into(),
        })
        .await
        .expect("set maintenance mode")
        .into_inner();
    assert_eq!(state.enabled, enabled);
}

async fn list_ids(client: &mut Client) -> BTreeSet<String> {
    let list = client
        .list_backups(ListBackupsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list backups")
        .into_inner();
    assert!(list.next_page_token.is_empty());
    list.backups.into_iter().map(|b| b.backup_id).collect()
}

/// A finished RestoreBackup call: what it streamed and how it ended. A
/// refusal of the call itself shows as no messages and its status.
struct RestoreRun {
    progress: Vec<RestoreProgress>,
    result: Result<(), tonic::Status>,
}

impl RestoreRun {
    fn error(&self) -> &tonic::Status {
        match &self.result {
            Err(status) => status,
            Ok(()) => panic!(
                "restore succeeded but should not have: {:?}",
                self.progress.last()
            ),
        }
    }

    fn last(&self) -> &RestoreProgress {
        if let Err(e) = &self.result {
            panic!("restore failed: {e:?}");
        }
        self.progress.last().expect("at least one progress message")
    }

    fn phases(&self) -> Vec<RestorePhase> {
        let mut phases: Vec<RestorePhase> = Vec::new();
        for p in &self.progress {
            if phases.last() != Some(&p.phase()) {
                phases.push(p.phase());
            }
        }
        phases
    }
}

async fn restore(client: &mut Client, request: RestoreBackupRequest) -> RestoreRun {
    let mut stream = match client.restore_backup(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return RestoreRun {
                progress: Vec::new(),
                result: Err(status),
            };
        }
    };
    let mut progress = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(message)) => progress.push(message),
            Ok(None) => {
                return RestoreRun {
                    progress,
                    result: Ok(()),
                };
            }
            Err(status) => {
                return RestoreRun {
                    progress,
                    result: Err(status),
                };
            }
        }
    }
}

fn restore_request(backup_id: &str) -> RestoreBackupRequest {
    RestoreBackupRequest {
        backup_id: backup_id.into(),
        ..Default::default()
    }
}

fn stored_file(storage: &Path, backup_id: &str) -> std::path::PathBuf {
    storage.join(format!("{backup_id}.json"))
}

fn flip_middle_byte(bytes: &[u8]) -> Vec<u8> {
    let mut tampered = bytes.to_vec();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    tampered
}

fn assert_verification_refusal(status: &tonic::Status, what: &str) {
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{what}: {status:?}"
    );
    assert!(
        status.message().contains("failed verification"),
        "{what}: {}",
        status.message()
    );
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loan_schema_round_trip_matches_pg_dump() {
    let db = loan_database().await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;

    let backup = backup_now(&mut client, "before the migration").await;
    let at_backup = pg_dump_data(&db.url).await;
    let expected_counts = pg_row_counts(&db.url, &LOAN_TABLES).await;
    assert_eq!(sorted(&backup.row_counts), expected_counts);
    // A supervisor chain really points forward in id order.
    assert!(
        pg_i64(
            &db.url,
            "SELECT count(*) FROM \"User\" WHERE \"supervisorId\" > id"
        )
        .await
            > 100
    );

    db.exec(LOAN_MODIFY).await;
    let modified = pg_dump_data(&db.url).await;
    assert_ne!(modified, at_backup, "the modification changed the data");

    set_maintenance(&mut client, true, "restoring yesterday's backup").await;
    let run = restore(&mut client, restore_request(&backup.backup_id)).await;
    let last = run.last();
    assert_eq!(last.phase(), RestorePhase::Committed, "{last:?}");
    assert_eq!(sorted(&last.row_counts), expected_counts);
    assert_eq!(
        run.phases(),
        vec![
            RestorePhase::Verifying,
            RestorePhase::CheckingSchema,
            RestorePhase::SafetyBackup,
            RestorePhase::Loading,
            RestorePhase::Committed,
        ]
    );
    let loading: BTreeSet<&str> = run
        .progress
        .iter()
        .filter(|p| p.phase() == RestorePhase::Loading)
        .map(|p| p.table.as_str())
        .collect();
    assert_eq!(loading, LOAN_TABLES.iter().copied().collect());
    for (table, rows) in &expected_counts {
        assert!(
            run.progress
                .iter()
                .any(|p| p.phase() == RestorePhase::Loading
                    && &p.table == table
                    && p.rows_done == *rows
                    && p.rows_total == *rows),
            "a LOADING message reports {table} done with {rows} rows"
        );
    }
    assert!(
        run.progress
            .iter()
            .all(|p| p.tables_total == 0 || p.tables_total == LOAN_TABLES.len() as u32)
    );

    // The safety backup exists and holds the modified data.
    let safety_id = last.safety_backup_id.clone();
    assert!(!safety_id.is_empty(), "{last:?}");
    assert!(list_ids(&mut client).await.contains(&safety_id));
    let safety = client
        .get_backup(backup_service::proto::GetBackupRequest {
            backup_id: safety_id.clone(),
        })
        .await
        .expect("safety backup record")
        .into_inner();
    assert_eq!(safety.status(), BackupStatus::Completed);
    assert_eq!(safety.row_counts.get("public.User"), Some(&310));
    assert_ne!(sorted(&safety.row_counts), expected_counts);

    let restored = pg_dump_data(&db.url).await;
    assert_same_dump(&at_backup, &restored, "after restore vs at backup time");

    // Sequences moved past the restored maximum, serial and identity alike.
    let max_user = pg_i64(&db.url, "SELECT max(id)::bigint FROM \"User\"").await;
    let new_user = pg_i64(
        &db.url,
        "INSERT INTO \"User\" (email, \"passwordHash\") VALUES ('after@example.com', 'x') RETURNING id::bigint",
    )
    .await;
    assert!(
        new_user > max_user,
        "new User id {new_user} <= restored max {max_user}"
    );
    let max_audit = pg_i64(&db.url, "SELECT max(id) FROM \"AuditLog\"").await;
    let new_audit = pg_i64(
        &db.url,
        "INSERT INTO \"AuditLog\" (payload) VALUES ('{}') RETURNING id",
    )
    .await;
    assert!(
        new_audit > max_audit,
        "new AuditLog id {new_audit} <= restored max {max_audit}"
    );
    server.shutdown().await;
}

/// Compressed backups are stored column by column (format version 3, uuid
/// columns packed); restoring one gives back every value byte for byte,
/// across block boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_columns_layout_round_trips_every_type() {
    let db = loan_database().await;
    db.exec(
        "CREATE TABLE \"Event\" (id uuid PRIMARY KEY, \"loanId\" integer REFERENCES \"Loan\"(id) ON DELETE CASCADE,
                               \"parentId\" uuid, note text);
         INSERT INTO \"Event\" SELECT md5('e' || g)::uuid, 1 + g % 600,
                CASE WHEN g % 4 = 0 THEN NULL ELSE md5('e' || (g / 2))::uuid END,
                CASE WHEN g % 3 = 0 THEN NULL ELSE 'note, \"' || g || E'\"\\n]' END
         FROM generate_series(1, 70000) g;",
    )
    .await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = client
        .create_backup(CreateBackupRequest {
            description: "columns".into(),
            compression: "zstd".into(),
            ..Default::default()
        })
        .await
        .expect("create backup")
        .into_inner();
    assert_eq!(backup.status(), BackupStatus::Completed, "{backup:?}");
    assert_eq!(backup.format_version, 3);
    let at_backup = pg_dump_data(&db.url).await;

    let stored = download(&mut client, &backup.backup_id, 0).await;
    let plain = zstd::decode_all(stored.as_slice()).expect("a zstd stream");
    let file: Value = serde_json::from_slice(&plain).expect("still one JSON document");
    assert_eq!(file["header"]["formatVersion"], 3);
    assert_eq!(file["header"]["layout"], "columns");
    let event = file["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Event")
        .unwrap();
    let blocks = event["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2, "70,000 rows make two blocks");
    assert_eq!(
        blocks[0]["rows"].as_u64().unwrap() + blocks[1]["rows"].as_u64().unwrap(),
        70_000
    );
    let parent = &blocks[0]["columns"][2];
    assert_eq!(
        parent["uuid"].as_str().unwrap().len(),
        32 * (blocks[0]["rows"].as_u64().unwrap() as usize
            - parent["nulls"].as_array().unwrap().len())
    );

    db.exec(LOAN_MODIFY).await;
    db.exec("DELETE FROM \"Event\" WHERE note IS NULL; UPDATE \"Event\" SET \"parentId\" = NULL;")
        .await;
    set_maintenance(&mut client, true, "restoring a compressed backup").await;
    let run = restore(&mut client, restore_request(&backup.backup_id)).await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_same_dump(
        &at_backup,
        &pg_dump_data(&db.url).await,
        "after restore vs at backup time",
    );
    let report = verify(&mut client, &backup.backup_id).await;
    assert!(report.ok, "{:?}", report.problems);
    assert_eq!(report.row_counts.get("public.Event"), Some(&70_000));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_backup_is_refused_and_nothing_changes() {
    let db = loan_database().await;
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let server = start(&config(&db.url, &storage)).await;
    let mut client = admin_client(server.grpc_addr).await;

    let backup = backup_now(&mut client, "to be tampered with").await;
    let at_backup = pg_dump_data(&db.url).await;
    let downloaded = download(&mut client, &backup.backup_id, 0).await;
    let path = stored_file(&storage, &backup.backup_id);
    let good = std::fs::read(&path).expect("stored backup file");
    assert_eq!(downloaded, good);

    db.exec(LOAN_MODIFY).await;
    let before = pg_dump_data(&db.url).await;
    set_maintenance(&mut client, true, "").await;
    let ids_before = list_ids(&mut client).await;

    let tampered = flip_middle_byte(&good);
    let truncated = good[..good.len() - 100].to_vec();
    for (what, bytes) in [("one flipped byte", &tampered), ("truncated", &truncated)] {
        std::fs::write(&path, bytes).expect("tamper");
        let run = restore(&mut client, restore_request(&backup.backup_id)).await;
        assert_verification_refusal(run.error(), what);
        assert!(
            // The schema is compared while the file is hashed; nothing
            // beyond those two checks may start.
            run.progress.iter().all(|p| matches!(
                p.phase(),
                RestorePhase::Verifying | RestorePhase::CheckingSchema
            )),
            "{what}: nothing past verification: {:?}",
            run.progress
        );
        assert_same_dump(&before, &pg_dump_data(&db.url).await, what);
        assert_eq!(
            list_ids(&mut client).await,
            ids_before,
            "{what}: no safety backup"
        );

        let report = client
            .verify_backup(VerifyBackupRequest {
                backup_id: backup.backup_id.clone(),
                scratch_database_url: String::new(),
            })
            .await
            .expect("verify")
            .into_inner();
        assert!(!report.ok, "{what}: {report:?}");
        assert!(!report.sha256_matches, "{what}: {report:?}");
        assert!(!report.problems.is_empty(), "{what}: {report:?}");
        assert!(!report.test_restore_performed);
    }

    // Offline: a downloaded copy restores into a fresh database with the same
    // schema, unless it was tampered with.
    let target = TestDatabase::create().await;
    target.exec(LOAN_SCHEMA).await;
    target
        .exec("INSERT INTO \"LoanType\" (name, \"minAmount\", \"maxAmount\", \"interestRate\") VALUES ('Existing', 1, 2, 3)")
        .await;
    let target_before = pg_dump_data(&target.url).await;
    let files = temp_dir();
    let bad_copy = files.path().join("tampered.json");
    std::fs::write(&bad_copy, flip_middle_byte(&downloaded)).unwrap();
    let e = backup_service::backup::restore::restore_file(&bad_copy, &target.url, false)
        .await
        .expect_err("a tampered file is refused");
    assert!(e.message.contains("failed verification"), "{}", e.message);
    let cut_copy = files.path().join("truncated.json");
    std::fs::write(&cut_copy, &downloaded[..downloaded.len() - 100]).unwrap();
    let e = backup_service::backup::restore::restore_file(&cut_copy, &target.url, false)
        .await
        .expect_err("a truncated file is refused");
    assert!(e.message.contains("failed verification"), "{}", e.message);
    assert_same_dump(
        &target_before,
        &pg_dump_data(&target.url).await,
        "target after refused offline restores",
    );

    let good_copy = files.path().join(&backup.filename);
    std::fs::write(&good_copy, &downloaded).unwrap();
    let dry = backup_service::backup::restore::restore_file(&good_copy, &target.url, true)
        .await
        .expect("offline dry run");
    assert!(dry.dry_run);
    assert_same_dump(
        &target_before,
        &pg_dump_data(&target.url).await,
        "target after offline dry run",
    );
    let outcome = backup_service::backup::restore::restore_file(&good_copy, &target.url, false)
        .await
        .expect("offline restore of a good copy");
    assert_eq!(outcome.backup_id, backup.backup_id);
    assert_eq!(outcome.row_counts, sorted(&backup.row_counts));
    assert!(
        !outcome.target.contains("postgres:postgres"),
        "password masked"
    );
    assert_same_dump(
        &at_backup,
        &pg_dump_data(&target.url).await,
        "offline restore vs source at backup time",
    );

    // The put-back original is accepted again, and the source was never touched.
    std::fs::write(&path, &good).unwrap();
    let report = client
        .verify_backup(VerifyBackupRequest {
            backup_id: backup.backup_id.clone(),
            scratch_database_url: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(report.ok, "{report:?}");
    assert_same_dump(&before, &pg_dump_data(&db.url).await, "source at the end");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_on_other_servers_are_refused_unless_listed() {
    let db = loan_database().await;
    let dir = temp_dir();
    let mut cfg = config(&db.url, &dir.path().join("backups"));
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "source").await;
    set_maintenance(&mut client, true, "target checks").await;
    let ids_before = list_ids(&mut client).await;

    // A documentation address: refused before any connection is tried.
    let elsewhere = "postgres://postgres:pw@192.0.2.10:5432/loans";
    let run = restore(
        &mut client,
        RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            target_url: elsewhere.into(),
            ..Default::default()
        },
    )
    .await;
    let e = run.error();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("RESTORE_ALLOWED_HOSTS"), "{e:?}");
    assert!(!e.message().contains("pw"), "{e:?}");
    assert!(run.progress.is_empty(), "{:?}", run.progress);
    assert_eq!(list_ids(&mut client).await, ids_before, "no safety backup");

    let e = client
        .verify_backup(VerifyBackupRequest {
            backup_id: backup.backup_id.clone(),
            scratch_database_url: elsewhere.into(),
        })
        .await
        .expect_err("a scratch database elsewhere is refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    server.shutdown().await;

    // Listed, the same server is accepted: here the restore gets past the
    // check and fails only on connecting (nothing listens there).
    cfg.restore_allowed_hosts = vec!["127.0.0.1:1".into()];
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let listed = format!("postgres://postgres@127.0.0.1:1/{}", "loans");
    let run = restore(
        &mut client,
        RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            target_url: listed,
            skip_safety_backup: true,
            ..Default::default()
        },
    )
    .await;
    let e = run.error();
    assert_ne!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(!e.message().contains("RESTORE_ALLOWED_HOSTS"), "{e:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_mismatch_is_reported_and_nothing_written() {
    let db = loan_database().await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "source").await;
    set_maintenance(&mut client, true, "schema checks").await;
    let ids_before = list_ids(&mut client).await;

    let mismatched = TestDatabase::create().await;
    mismatched.exec(LOAN_SCHEMA).await;
    mismatched
        .exec(
            r#"DROP TABLE "AuditLog";
               ALTER TABLE "Loan" ALTER COLUMN amount TYPE text;
               ALTER TABLE "Loan" DROP COLUMN "auditData";
               ALTER TABLE "User" DROP COLUMN "deletedAt";
               INSERT INTO "User" (email, "passwordHash") VALUES ('target@example.com', 'x');
               INSERT INTO "LoanType" (name, "minAmount", "maxAmount", "interestRate")
                   VALUES ('Target only', 1, 2, 3);
               INSERT INTO "Loan" ("userId", "loanTypeId", amount) VALUES (1, 1, 'lots');"#,
        )
        .await;
    let mismatched_before = pg_dump_data(&mismatched.url).await;

    for dry_run in [false, true] {
        let run = restore(
            &mut client,
            RestoreBackupRequest {
                backup_id: backup.backup_id.clone(),
                target_url: mismatched.url.clone(),
                dry_run,
                skip_safety_backup: false,
                documents_dir: String::new(),
            },
        )
        .await;
        let e = run.error();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let message = e.message();
        assert!(message.contains("nothing was written"), "{message}");
        let problems: BTreeSet<&str> = message
            .split_once("nothing was written: ")
            .expect("problem list")
            .1
            .split("; ")
            .collect();
        let expected: BTreeSet<&str> = [
            "table public.AuditLog: missing in the target",
            "table public.Loan: column \"amount\" is numeric(14,2) in the backup but text in the target",
            "table public.Loan: column \"auditData\" missing in the target",
            "table public.User: column \"deletedAt\" missing in the target",
        ]
        .into_iter()
        .collect();
        assert_eq!(problems, expected, "dry run {dry_run}: {message}");
        assert!(
            run.progress
                .iter()
                .all(|p| p.phase() != RestorePhase::Loading
                    && p.phase() != RestorePhase::SafetyBackup),
            "{:?}",
            run.progress
        );
    }
    assert_same_dump(
        &mismatched_before,
        &pg_dump_data(&mismatched.url).await,
        "mismatched target",
    );
    assert_eq!(list_ids(&mut client).await, ids_before, "no safety backup");

    // A matching target: the dry run passes and writes nothing.
    let matching = TestDatabase::create().await;
    matching.exec(LOAN_SCHEMA).await;
    matching
        .exec("INSERT INTO \"User\" (email, \"passwordHash\") VALUES ('keep@example.com', 'x')")
        .await;
    let matching_before = pg_dump_data(&matching.url).await;
    let source_before = pg_dump_data(&db.url).await;
    let run = restore(
        &mut client,
        RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            target_url: matching.url.clone(),
            dry_run: true,
            skip_safety_backup: false,
            documents_dir: String::new(),
        },
    )
    .await;
    let last = run.last();
    assert_eq!(last.phase(), RestorePhase::DryRunPassed, "{last:?}");
    assert_eq!(sorted(&last.row_counts), sorted(&backup.row_counts));
    assert!(last.safety_backup_id.is_empty());
    assert!(
        run.progress
            .iter()
            .all(|p| p.phase() != RestorePhase::Loading && p.phase() != RestorePhase::SafetyBackup),
        "{:?}",
        run.progress
    );
    assert_same_dump(
        &matching_before,
        &pg_dump_data(&matching.url).await,
        "matching target after dry run",
    );
    assert_same_dump(
        &source_before,
        &pg_dump_data(&db.url).await,
        "configured database after dry runs elsewhere",
    );
    assert_eq!(list_ids(&mut client).await, ids_before, "no safety backup");
    server.shutdown().await;
}

const EVENTS_SCHEMA: &str = r#"
CREATE TABLE "Account" (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE "Event" (
    id bigserial PRIMARY KEY,
    "accountId" integer NOT NULL REFERENCES "Account"(id),
    kind text NOT NULL,
    amount numeric(14,2) NOT NULL,
    at timestamptz NOT NULL
);
INSERT INTO "Account" (name) SELECT 'account ' || i FROM generate_series(1, 1000) AS i;
INSERT INTO "Event" ("accountId", kind, amount, at)
SELECT 1 + i % 1000, (ARRAY['deposit', 'withdrawal', 'fee'])[1 + i % 3], (i % 100000) / 100.0,
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second'
FROM generate_series(1, 300000) AS i;
"#;

/// The row the restore is stopped at.
const GATE_ROW: i64 = 250_000;
const GATE_LOCK: i64 = 727_001;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_killed_midway_leaves_target_unchanged() {
    let db = TestDatabase::create().await;
    db.exec(EVENTS_SCHEMA).await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "300k events").await;
    assert_eq!(backup.row_counts.get("public.Event"), Some(&300_000));
    let at_backup = pg_dump_data(&db.url).await;

    db.exec(
        r#"DELETE FROM "Event" WHERE id % 10 = 0;
           UPDATE "Account" SET name = name || ' (renamed)' WHERE id % 2 = 0;
           INSERT INTO "Account" (name) VALUES ('opened after the backup');
           INSERT INTO "Event" ("accountId", kind, amount, at)
               VALUES (1001, 'deposit', 1, now());"#,
    )
    .await;
    // A gate: loading the row with id GATE_ROW waits for an advisory lock the
    // test holds, so the restore is reliably caught mid-COPY.
    db.exec(&format!(
        r#"CREATE FUNCTION restore_gate() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_advisory_xact_lock_shared({GATE_LOCK}); RETURN NEW; END $$;
           CREATE TRIGGER restore_gate BEFORE INSERT ON "Event" FOR EACH ROW
               WHEN (NEW.id = {GATE_ROW}) EXECUTE FUNCTION restore_gate();"#
    ))
    .await;
    let before = pg_dump_data(&db.url).await;
    let mut gate = pg_connect(&db.url).await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(GATE_LOCK)
        .execute(&mut gate)
        .await
        .expect("close the gate");

    set_maintenance(&mut client, true, "").await;
    let mut stream = client
        .restore_backup(RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            skip_safety_backup: true,
            ..Default::default()
        })
        .await
        .expect("restore starts")
        .into_inner();
    let mut progress = Vec::new();
    while !progress
        .iter()
        .any(|p: &RestoreProgress| p.phase() == RestorePhase::Loading && p.table == "public.Event")
    {
        let message = stream
            .message()
            .await
            .expect("progress")
            .expect("the stream reaches public.Event");
        progress.push(message);
    }
    assert!(
        progress.iter().any(|p| p.phase() == RestorePhase::Loading
            && p.table == "public.Account"
            && p.rows_done == 1000),
        "Account was loaded before Event: {progress:?}"
    );

    // Find the restoring backend, stuck at the gate mid-COPY, and kill it.
    let mut watcher = pg_connect(&db.url).await;
    let mut stuck: Option<(i32, i64)> = None;
    for _ in 0..MAX_POLLS {
        let row = sqlx::query(
            "SELECT a.pid, COALESCE(p.tuples_processed, 0)
             FROM pg_stat_activity a LEFT JOIN pg_stat_progress_copy p ON p.pid = a.pid
             WHERE a.datname = current_database() AND a.query LIKE 'COPY%FROM STDIN%'
               AND a.wait_event_type = 'Lock' AND a.wait_event = 'advisory'",
        )
        .fetch_optional(&mut watcher)
        .await
        .expect("pg_stat_activity");
        if let Some(row) = row {
            stuck = Some((row.get(0), row.get(1)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (pid, processed) = stuck.expect("the restore's COPY reaches the gate");
    assert!(
        processed > 0 && processed < 300_000,
        "the COPY is midway: {processed} rows processed"
    );
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut watcher)
        .await
        .expect("terminate backend");
    assert!(killed);
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(GATE_LOCK)
        .execute(&mut gate)
        .await
        .expect("open the gate");

    let error = loop {
        match stream.message().await {
            Ok(Some(message)) => {
                assert_ne!(message.phase(), RestorePhase::Committed, "{message:?}");
                progress.push(message);
            }
            Ok(None) => panic!("the stream ended without an error: {progress:?}"),
            Err(status) => break status,
        }
    };
    assert_ne!(error.code(), Code::Ok);
    assert!(
        error.message().contains("Event"),
        "names the table: {error:?}"
    );
    assert_same_dump(
        &before,
        &pg_dump_data(&db.url).await,
        "after the killed restore",
    );

    // Nothing is left wedged: without the gate the same restore commits.
    db.exec("DROP TRIGGER restore_gate ON \"Event\"").await;
    let run = restore(
        &mut client,
        RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            skip_safety_backup: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(run.last().phase(), RestorePhase::Committed);
    assert!(run.last().safety_backup_id.is_empty());
    // Row order of a large table may differ (synchronized scans); the rows may not.
    assert_eq!(
        sorted_lines(&pg_dump_data(&db.url).await),
        sorted_lines(&at_backup),
        "after the second restore vs at backup time"
    );
    gate.close().await.ok();
    watcher.close().await.ok();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_with_scratch_database() {
    let db = loan_database().await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "to verify").await;
    let at_backup = pg_dump_data(&db.url).await;

    // Verification needs no maintenance mode.
    let report = client
        .verify_backup(VerifyBackupRequest {
            backup_id: backup.backup_id.clone(),
            scratch_database_url: String::new(),
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(report.ok, "{report:?}");
    assert!(report.sha256_matches);
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.sha256, backup.sha256);
    assert_eq!(report.size, backup.size);
    assert_eq!(sorted(&report.row_counts), sorted(&backup.row_counts));
    assert!(!report.test_restore_performed);
    assert!(!report.test_restore_ok);

    let scratch = TestDatabase::create().await;
    scratch.exec(LOAN_SCHEMA).await;
    let report = client
        .verify_backup(VerifyBackupRequest {
            backup_id: backup.backup_id.clone(),
            scratch_database_url: scratch.url.clone(),
        })
        .await
        .expect("verify with scratch")
        .into_inner();
    assert!(report.ok, "{report:?}");
    assert!(report.test_restore_performed);
    assert!(report.test_restore_ok, "{report:?}");
    assert_eq!(
        pg_row_counts(&scratch.url, &LOAN_TABLES).await,
        sorted(&backup.row_counts)
    );
    assert_same_dump(
        &at_backup,
        &pg_dump_data(&scratch.url).await,
        "scratch database vs source",
    );

    // A scratch database that does not fit: the file is fine, the test restore is not.
    let unfit = TestDatabase::create().await;
    unfit.exec(LOAN_SCHEMA).await;
    unfit.exec("DROP TABLE \"AuditLog\"").await;
    let report = client
        .verify_backup(VerifyBackupRequest {
            backup_id: backup.backup_id.clone(),
            scratch_database_url: unfit.url.clone(),
        })
        .await
        .expect("verify with unfit scratch")
        .into_inner();
    assert!(!report.ok, "{report:?}");
    assert!(report.sha256_matches);
    assert!(report.test_restore_performed);
    assert!(!report.test_restore_ok);
    assert_eq!(
        pg_i64(&unfit.url, "SELECT count(*) FROM \"User\"").await,
        0,
        "the failed test restore left nothing behind"
    );

    // The same over REST.
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/api/backup/{}/verify",
        server.http_addr, backup.backup_id
    );
    let r = http
        .post(&url)
        .bearer_auth(token("ADMIN"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["sha256Matches"], true, "{body}");
    assert_eq!(body["testRestorePerformed"], false, "{body}");
    assert_eq!(body["rowCounts"]["public.User"], 300, "{body}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Maintenance mode (SQLite, no PostgreSQL needed)
// ---------------------------------------------------------------------------

async fn seed_small_sqlite(url: &str) {
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .expect("open sqlite");
    sqlx::raw_sql(
        "CREATE TABLE member (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO member VALUES (1, 'one'), (2, 'two'), (3, 'three');",
    )
    .execute(&mut conn)
    .await
    .expect("seed sqlite");
    conn.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_requires_maintenance_mode_and_maintenance_blocks_changes() {
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    seed_small_sqlite(&db).await;
    let cfg = config(&db, &dir.path().join("backups"));
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "before maintenance").await;

    let state = client
        .get_maintenance_mode(GetMaintenanceModeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!state.enabled);

    let run = restore(&mut client, restore_request(&backup.backup_id)).await;
    let e = run.error();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("maintenance mode"), "{}", e.message());
    assert!(run.progress.is_empty(), "{:?}", run.progress);

    let on = client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: true,
            reason: "database upgrade".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(on.enabled);
    assert_eq!(on.reason, "database upgrade");
    assert!(on.changed_at.is_some());
    assert!(!on.changed_by.is_empty());
    let state = client
        .get_maintenance_mode(GetMaintenanceModeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state, on);

    let check_refusals = |e: tonic::Status, what: &str| {
        assert_eq!(e.code(), Code::FailedPrecondition, "{what}: {e:?}");
        assert!(
            e.message().contains("maintenance"),
            "{what}: {}",
            e.message()
        );
        assert!(
            e.message().contains("database upgrade"),
            "{what}: {}",
            e.message()
        );
    };
    let e = client
        .create_backup(CreateBackupRequest::default())
        .await
        .unwrap_err();
    check_refusals(e, "create");
    let e = client
        .delete_backup(DeleteBackupRequest {
            backup_id: backup.backup_id.clone(),
        })
        .await
        .unwrap_err();
    check_refusals(e, "delete");
    assert_eq!(
        list_ids(&mut client).await,
        BTreeSet::from([backup.backup_id.clone()])
    );

    // Maintenance mode survives a restart.
    server.shutdown().await;
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let state = client
        .get_maintenance_mode(GetMaintenanceModeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(state.enabled, "{state:?}");
    assert_eq!(state.reason, "database upgrade");
    let e = client
        .create_backup(CreateBackupRequest::default())
        .await
        .unwrap_err();
    check_refusals(e, "create after restart");
    let run = restore(
        &mut client,
        RestoreBackupRequest {
            backup_id: backup.backup_id.clone(),
            skip_safety_backup: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(run.last().phase(), RestorePhase::Committed);

    // The same over REST.
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.http_addr);
    let admin = token("ADMIN");
    let put = |enabled: bool| {
        http.put(format!("{base}/api/maintenance"))
            .bearer_auth(&admin)
            .json(&json!({"enabled": enabled, "reason": "via REST"}))
            .send()
    };
    let restore_url = format!("{base}/api/backup/{}/restore", backup.backup_id);

    let r = put(false).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["enabled"], false, "{body}");
    let r = http
        .get(format!("{base}/api/maintenance"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["enabled"], false);
    let r = http
        .post(&restore_url)
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "FAILED_PRECONDITION", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("maintenance mode"),
        "{body}"
    );

    let r = put(true).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["enabled"], true, "{body}");
    assert_eq!(body["reason"], "via REST", "{body}");
    let r = http
        .post(&restore_url)
        .bearer_auth(&admin)
        .json(&json!({"skipSafetyBackup": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["restored"], true, "{body}");
    assert_eq!(body["backupId"], backup.backup_id.as_str(), "{body}");
    assert_eq!(body["rowCounts"]["member"], 3, "{body}");
    let safety = body["safetyBackupId"].as_str().expect("safety backup id");
    assert!(list_ids(&mut client).await.contains(safety));
    let r = http
        .post(format!("{base}/api/backup/create"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);

    // Off again: creating and deleting work.
    set_maintenance(&mut client, false, "").await;
    let state = client
        .get_maintenance_mode(GetMaintenanceModeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!state.enabled);
    let created = backup_now(&mut client, "after maintenance").await;
    client
        .delete_backup(DeleteBackupRequest {
            backup_id: created.backup_id,
        })
        .await
        .expect("delete allowed again");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------

/// Every table's rows in rowid order, each value with its storage class.
async fn sqlite_snapshot(url: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut conn = sqlx::SqliteConnection::connect(url)
        .await
        .expect("open sqlite");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut snapshot = BTreeMap::new();
    for table in tables {
        let sql = format!("SELECT * FROM \"{table}\" ORDER BY rowid");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let mut values = Vec::new();
        for row in rows {
            let mut out = Vec::new();
            for i in 0..row.len() {
                let raw = row.try_get_raw(i).unwrap();
                let class = if raw.is_null() {
                    "NULL".to_string()
                } else {
                    raw.type_info().name().to_string()
                };
                let value = match class.as_str() {
                    "NULL" => String::new(),
                    "INTEGER" => row.try_get_unchecked::<i64, _>(i).unwrap().to_string(),
                    "REAL" => {
                        let v: f64 = row.try_get_unchecked(i).unwrap();
                        format!("{:016x}", v.to_bits())
                    }
                    "BLOB" => hex::encode(row.try_get_unchecked::<Vec<u8>, _>(i).unwrap()),
                    _ => format!("{:?}", row.try_get_unchecked::<String, _>(i).unwrap()),
                };
                out.push(format!("{class}:{value}"));
            }
            values.push(out);
        }
        snapshot.insert(table, values);
    }
    conn.close().await.ok();
    snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restore_round_trip() {
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    {
        let mut conn = sqlx::SqliteConnection::connect(&format!("{db}?mode=rwc"))
            .await
            .unwrap();
        sqlx::raw_sql(
            r#"CREATE TABLE "User" (
                   id INTEGER PRIMARY KEY,
                   email TEXT NOT NULL UNIQUE,
                   "supervisorId" INTEGER REFERENCES "User"(id),
                   avatar BLOB,
                   score REAL,
                   "createdAt" TEXT
               );
               CREATE TABLE "Loan" (
                   id INTEGER PRIMARY KEY,
                   "userId" INTEGER NOT NULL REFERENCES "User"(id),
                   amount NUMERIC,
                   note TEXT,
                   document BLOB
               );
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
               INSERT INTO "User" (id, email, "supervisorId", avatar, score, "createdAt")
               SELECT i, 'user' || i || '@example.com', NULL,
                      CASE WHEN i % 7 = 0 THEN NULL ELSE randomblob(1 + i % 40) END,
                      CASE WHEN i % 5 = 0 THEN NULL ELSE i / 3.0 END,
                      '2026-01-01T00:00:00.' || printf('%03d', i % 1000) || 'Z'
               FROM n;
               -- Rows referencing LATER rows of the same table.
               UPDATE "User" SET "supervisorId" = id + 1 + id % 3 WHERE id <= 490;
               UPDATE "User" SET avatar = x'00ff000a0d09', score = 9e999 WHERE id = 1;
               UPDATE "User" SET score = -9e999, email = 'ünï ' || char(1, 9, 10, 13) || ' "q" \ 🎉' WHERE id = 2;
               UPDATE "User" SET score = 0.1, avatar = x'' WHERE id = 3;
               UPDATE "User" SET score = -0.0 WHERE id = 4;
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
               INSERT INTO "Loan" (id, "userId", amount, note, document)
               SELECT i, 1 + i % 500,
                      CASE WHEN i % 2 = 0 THEN i * 100 ELSE i + 0.25 END,
                      CASE WHEN i % 3 = 0 THEN NULL ELSE 'note ' || i || char(10) || 'line' END,
                      CASE WHEN i % 4 = 0 THEN randomblob(64) END
               FROM n;"#,
        )
        .execute(&mut conn)
        .await
        .expect("seed sqlite");
        conn.close().await.ok();
    }
    let storage = dir.path().join("backups");
    let server = start(&config(&db, &storage)).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "sqlite").await;
    assert_eq!(backup.row_counts.get("User"), Some(&500));
    assert_eq!(backup.row_counts.get("Loan"), Some(&1500));
    let at_backup = sqlite_snapshot(&db).await;

    {
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        sqlx::raw_sql(
            r#"DELETE FROM "Loan" WHERE id % 4 = 1;
               UPDATE "Loan" SET amount = 0, document = x'deadbeef' WHERE id % 10 = 0;
               UPDATE "User" SET "supervisorId" = NULL WHERE id % 3 = 0;
               UPDATE "User" SET avatar = NULL, score = 1 WHERE id % 2 = 0;
               INSERT INTO "User" (id, email) VALUES (501, 'late@example.com'), (502, 'later@example.com');
               INSERT INTO "Loan" (id, "userId", amount) VALUES (1501, 501, 7);
               DELETE FROM "User" WHERE id = 500 AND NOT EXISTS (SELECT 1 FROM "Loan" WHERE "userId" = 500);"#,
        )
        .execute(&mut conn)
        .await
        .expect("modify sqlite");
        conn.close().await.ok();
    }
    assert_ne!(sqlite_snapshot(&db).await, at_backup);

    set_maintenance(&mut client, true, "sqlite restore").await;
    let run = restore(&mut client, restore_request(&backup.backup_id)).await;
    let last = run.last();
    assert_eq!(last.phase(), RestorePhase::Committed, "{last:?}");
    assert_eq!(sorted(&last.row_counts), sorted(&backup.row_counts));
    let loading: BTreeSet<&str> = run
        .progress
        .iter()
        .filter(|p| p.phase() == RestorePhase::Loading)
        .map(|p| p.table.as_str())
        .collect();
    assert_eq!(loading, BTreeSet::from(["Loan", "User"]));
    assert!(list_ids(&mut client).await.contains(&last.safety_backup_id));

    let restored = sqlite_snapshot(&db).await;
    for (table, rows) in &at_backup {
        let got = &restored[table];
        assert_eq!(got.len(), rows.len(), "{table}: row count");
        for (i, (want, have)) in rows.iter().zip(got).enumerate() {
            assert_eq!(want, have, "{table}: row {i}");
        }
    }
    assert_eq!(restored, at_backup);
    let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
    let violations = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(violations.is_empty(), "foreign keys hold after the restore");
    conn.close().await.ok();
    server.shutdown().await;
}

/// SQLite lets any column hold any storage class; each must come back as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_values_keep_their_storage_class() {
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    {
        let mut conn = sqlx::SqliteConnection::connect(&format!("{db}?mode=rwc"))
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE mixed (id INTEGER PRIMARY KEY, anything, b BLOB, t TEXT, r REAL, n INTEGER);
             INSERT INTO mixed VALUES
               (1, 'abcd', 'QUJD', x'0102', 'Infinity', 'not a number'),
               (2, x'00ff', 'not base64 !', x'', 9e999, x'0a'),
               (3, 1.5, x'414243', 'plain', -9e999, 7),
               (4, 'NaN', NULL, 'QUJD', 'NaN', 2.5);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let before = sqlite_snapshot(&db).await;
    let server = start(&config(&db, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "mixed storage classes").await;
    {
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        sqlx::raw_sql("DELETE FROM mixed WHERE id > 1; UPDATE mixed SET anything = 'changed';")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    set_maintenance(&mut client, true, "restore drill").await;
    let run = restore(&mut client, restore_request(&backup.backup_id)).await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_eq!(sqlite_snapshot(&db).await, before);
    server.shutdown().await;
}

/// jsonb `null` versus SQL NULL, partitioned tables, and a user type whose
/// name shadows a built-in: all survive backup and restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_edge_cases_round_trip() {
    let db = TestDatabase::create().await;
    db.exec(
        "CREATE TYPE public.int4 AS ENUM ('a', 'b');
         CREATE TABLE \"Doc\" (id int PRIMARY KEY, body jsonb, kind public.int4);
         INSERT INTO \"Doc\" VALUES (1, 'null', 'a'), (2, NULL, 'b'), (3, '\"null\"', NULL),
                                  (4, '{\"n\": null}', 'a');
         CREATE TABLE \"Payment\" (id int NOT NULL, amount numeric(14,2)) PARTITION BY RANGE (id);
         CREATE TABLE \"Payment_low\" PARTITION OF \"Payment\" FOR VALUES FROM (0) TO (100);
         CREATE TABLE \"Payment_high\" PARTITION OF \"Payment\" FOR VALUES FROM (100) TO (1000);
         INSERT INTO \"Payment\" SELECT g, g * 1.5 FROM generate_series(1, 300) g;",
    )
    .await;
    let before = pg_dump_data(&db.url).await;
    let dir = temp_dir();
    let server = start(&config(&db.url, &dir.path().join("backups"))).await;
    let mut client = admin_client(server.grpc_addr).await;
    let backup = backup_now(&mut client, "edge cases").await;
    assert_eq!(backup.row_counts.get("public.Payment_low"), Some(&99));
    assert_eq!(backup.row_counts.get("public.Payment_high"), Some(&201));
    assert!(
        !backup.row_counts.contains_key("public.Payment"),
        "the partitioned parent holds no rows"
    );
    let file = download(&mut client, &backup.backup_id, 0).await;
    serde_json::from_slice::<serde_json::Value>(&file).expect("still one valid JSON document");

    db.exec("UPDATE \"Doc\" SET body = NULL; DELETE FROM \"Payment\" WHERE id % 2 = 0;")
        .await;
    set_maintenance(&mut client, true, "edge cases").await;
    let run = restore(&mut client, restore_request(&backup.backup_id)).await;
    assert!(run.result.is_ok(), "{:?}", run.result);
    assert_same_dump(&before, &pg_dump_data(&db.url).await, "after restore");
    let pool = db.pool().await;
    let nulls: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE body IS NULL), count(*) FILTER (WHERE body = 'null'::jsonb) FROM \"Doc\"",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(nulls, (1, 1), "SQL NULL and jsonb null stay distinct");
    pool.close().await;
    server.shutdown().await;
}

/// Points backup A's manifest at backup B's file (object, sha256 and size
/// made to match), as anyone who can write to the storage could.
fn forge_manifest(storage: &Path, a: &str, b: &str) {
    let read = |id: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(storage.join(format!("{id}.manifest.json")))
            .expect("read manifest");
        serde_json::from_str(&text).expect("manifest is JSON")
    };
    let mut forged = read(a);
    let other = read(b);
    for field in ["objectName", "sha256", "size", "filename"] {
        forged["record"][field] = other["record"][field].clone();
    }
    std::fs::write(
        storage.join(format!("{a}.manifest.json")),
        serde_json::to_vec_pretty(&forged).expect("encode"),
    )
    .expect("write forged manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_dry_run_refuse_a_file_that_names_another_backup() {
    let dir = temp_dir();
    let db = sqlite_url(dir.path());
    seed_small_sqlite(&db).await;
    let storage = dir.path().join("backups");
    let cfg = config(&db, &storage);
    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let a = backup_now(&mut client, "a").await;
    let b = backup_now(&mut client, "b").await;
    server.shutdown().await;
    forge_manifest(&storage, &a.backup_id, &b.backup_id);

    let server = start(&cfg).await;
    let mut client = admin_client(server.grpc_addr).await;
    let report = common::verify(&mut client, &a.backup_id).await;
    assert!(
        !report.ok,
        "a file of another backup must not verify: {report:?}"
    );
    assert!(
        report.problems.iter().any(|p| p.contains(&b.backup_id)),
        "{:?}",
        report.problems
    );

    set_maintenance(&mut client, true, "dry run").await;
    let refused = client
        .restore_backup(RestoreBackupRequest {
            backup_id: a.backup_id.clone(),
            dry_run: true,
            ..Default::default()
        })
        .await;
    let message = match refused {
        Err(status) => status.message().to_string(),
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let mut error = None;
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(status) => {
                        error = Some(status.message().to_string());
                        break;
                    }
                }
            }
            error.expect("the dry run must fail")
        }
    };
    assert!(message.contains(&b.backup_id), "{message}");
    server.shutdown().await;
}
