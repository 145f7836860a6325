//! Scheduled backups and retention: two real server processes sharing one
//! PostgreSQL database and one storage directory run each slot exactly once,
//! the survivor takes over when the leader is killed, retention prunes
//! exactly the grandfather-father-son set, and a dry run changes nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backup_service::backup::catalog::Manifest;
use backup_service::backup::id::BackupId;
use backup_service::backup::record::{BackupRecord, BackupStatus};
use backup_service::proto::{
    CreateBackupRequest, GetScheduleRequest, PruneBackupsRequest, SetMaintenanceModeRequest,
};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_backup-service");
/// Every three seconds.
const EVERY_3S: &str = "*/3 * * * * *";

/// A server process; killed when dropped.
struct Server {
    child: Child,
    grpc: std::net::SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(text))
    }

    fn kill(&mut self) {
        self.child.kill().expect("kill the server");
        self.child.wait().expect("reap the server");
    }
}

/// A field of a JSON log line.
fn field(line: &str, name: &str) -> Option<String> {
    let json = serde_json::from_str::<Value>(line).ok()?;
    json["fields"][name].as_str().map(str::to_string)
}

/// Starts the binary with `env` (JSON logs) and waits until it listens.
fn spawn(env: &[(&str, String)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_remove("BACKUP_SCHEDULE")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("JWT_SECRET", SECRET)
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("binary starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let _ = tx.send(line.clone());
            }
            sink.lock().unwrap().push(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("server did not start: {:?}", log.lock().unwrap()));
    let grpc = field(&line, "grpc_addr")
        .expect("grpc_addr logged")
        .parse()
        .expect("address");
    Server { child, grpc, log }
}

/// Every manifest in the storage directory, by backup id.
fn manifests(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("storage dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".manifest.json") || name.starts_with('.') {
            continue;
        }
        // Written atomically (temp name + rename): always whole.
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let m: Value = serde_json::from_slice(&bytes).expect("manifest is JSON");
        let record = m["record"].clone();
        out.insert(record["backupId"].as_str().unwrap().to_string(), record);
    }
    out
}

/// Scheduled backups on disk, grouped by slot.
fn by_slot(dir: &Path) -> BTreeMap<DateTime<Utc>, Vec<Value>> {
    let mut slots: BTreeMap<DateTime<Utc>, Vec<Value>> = BTreeMap::new();
    for record in manifests(dir).into_values() {
        if record["trigger"] != "scheduled" {
            continue;
        }
        let slot = record["scheduledFor"]
            .as_str()
            .expect("scheduled backups name their slot");
        let slot = DateTime::parse_from_rfc3339(slot)
            .unwrap()
            .with_timezone(&Utc);
        slots.entry(slot).or_default().push(record);
    }
    slots
}

/// Multiples of three seconds in (after, until].
fn three_second_slots(after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut t = after.timestamp() - after.timestamp().rem_euclid(3) + 3;
    let mut out = Vec::new();
    while t <= until.timestamp() {
        out.push(Utc.timestamp_opt(t, 0).unwrap());
        t += 3;
    }
    out
}

async fn wait_until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_one_per_slot(slots: &BTreeMap<DateTime<Utc>, Vec<Value>>) {
    for (slot, records) in slots {
        assert_eq!(
            records.len(),
            1,
            "slot {slot} ran {} times: {records:#?}",
            records.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_run_each_slot_once_and_the_survivor_takes_over() {
    let db = TestDatabase::create().await;
    db.exec(
        "CREATE TABLE loan (id int PRIMARY KEY, amount numeric(12,2));
         INSERT INTO loan SELECT i, i * 10 FROM generate_series(1, 200) i;",
    )
    .await;
    let storage = temp_dir();
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("STORAGE_URL", storage.path().display().to_string()),
        ("BACKUP_SCHEDULE", EVERY_3S.to_string()),
    ];
    let mut servers = [spawn(&env), spawn(&env)];
    // Steady state starts a little after both listen: at start each replica
    // first catches up the most recent slot (BACKUP_RUN_MISSED), and a slot
    // that passes while that runs is skipped by design, so on a slow machine
    // the first slot or two after start may legitimately not run.
    let both_up = Utc::now() + chrono::Duration::seconds(5);

    // Four slots after both replicas are up, each run by exactly one of them.
    let seen = wait_until(
        "four slots with both replicas",
        Duration::from_secs(90),
        || {
            let slots = by_slot(storage.path());
            let after: Vec<_> = slots.keys().filter(|s| **s > both_up).copied().collect();
            (after.len() >= 4).then_some((slots, after))
        },
    )
    .await;
    let (slots, after) = seen;
    assert_one_per_slot(&slots);
    let last = *after.last().unwrap();
    assert_eq!(
        after,
        three_second_slots(both_up, last),
        "no slot missed between both replicas starting and {last}"
    );
    for slot in &after {
        let record = &slots[slot][0];
        assert_eq!(record["status"], "COMPLETED", "{record:#}");
        assert_eq!(record["rowCounts"]["public.loan"], 200);
        assert!(
            record["description"]
                .as_str()
                .unwrap()
                .starts_with("Scheduled backup for"),
            "{record:#}"
        );
    }
    // Each slot was run by one of the two processes: its log says so.
    let runner = |id: &str, server: &Server| {
        server.logged(id) && server.logged("scheduled backup completed")
    };
    for slot in &after {
        let id = slots[slot][0]["backupId"].as_str().unwrap().to_string();
        assert!(
            runner(&id, &servers[0]) || runner(&id, &servers[1]),
            "{id} was run by one of the servers"
        );
    }

    // Kill whoever ran the latest slot; the other one runs the next slots.
    let latest = by_slot(storage.path());
    let (_, records) = latest.iter().next_back().unwrap();
    let id = records[0]["backupId"].as_str().unwrap().to_string();
    let completed_line = |s: &Server| {
        s.log.lock().unwrap().iter().any(|l| {
            l.contains("scheduled backup completed")
                && field(l, "backup_id").as_deref() == Some(&id)
        })
    };
    let leader = wait_until("the leader's log line", Duration::from_secs(10), || {
        (0..2).find(|&i| completed_line(&servers[i]))
    })
    .await;
    servers[leader].kill();
    let killed_at = Utc::now();
    let survivor = &servers[1 - leader];

    let after_kill = wait_until("two slots after the kill", Duration::from_secs(60), || {
        let slots = by_slot(storage.path());
        let after: Vec<_> = slots.keys().filter(|s| **s > killed_at).copied().collect();
        (after.len() >= 2).then_some((slots, after))
    })
    .await;
    let (slots, after) = after_kill;
    assert_one_per_slot(&slots);
    let last = *after.last().unwrap();
    assert_eq!(
        after,
        three_second_slots(killed_at, last),
        "the survivor ran the very next slot after the kill and every one since"
    );
    for slot in &after {
        let record = &slots[slot][0];
        assert_eq!(record["status"], "COMPLETED", "{record:#}");
        let id = record["backupId"].as_str().unwrap();
        assert!(survivor.logged(id), "{id} run by the survivor");
    }

    // GetSchedule on the survivor: next run ahead, last run completed.
    let mut client = admin_client(survivor.grpc).await;
    let schedule = client
        .get_schedule(GetScheduleRequest {})
        .await
        .expect("GetSchedule")
        .into_inner();
    assert!(schedule.enabled);
    assert_eq!(schedule.expression, EVERY_3S);
    assert_eq!(schedule.time_zone, "UTC");
    let next = schedule.next_run_at.expect("next run");
    let last_run = schedule.last_run_at.expect("last run");
    assert!(next.seconds > last_run.seconds);
    assert_eq!(next.seconds % 3, 0);
    assert!(
        ["COMPLETED", "RUNNING"].contains(&schedule.last_result.as_str()),
        "{schedule:?}"
    );
    assert!(!schedule.last_backup_id.is_empty());
}

/// A manifest (and a small data object) as a backup taken at `t` leaves.
fn plant(dir: &Path, t: DateTime<Utc>, status: BackupStatus) -> String {
    let id = BackupId::from_time(t);
    let mut record = BackupRecord::new(&id, format!("planted {t}"), true);
    record.status = status;
    if status == BackupStatus::Completed {
        std::fs::write(dir.join(&record.object_name), b"{}").unwrap();
        record.size = 2;
        record.completed_at = Some(t);
    }
    let manifest = Manifest::encode(&record).unwrap();
    std::fs::write(dir.join(format!("{id}.manifest.json")), &manifest).unwrap();
    id.to_string()
}

fn noon(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 12, 0, 0).unwrap()
}

/// Every file and folder under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        let bytes = if entry.file_type().unwrap().is_dir() {
            None
        } else {
            Some(std::fs::read(entry.path()).unwrap())
        };
        out.insert(name, bytes);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_exactly_the_gfs_set_and_dry_run_changes_nothing() {
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    std::fs::create_dir_all(&storage).unwrap();
    // One completed backup a day at noon UTC, 2025-01-01 .. 2025-03-31.
    let mut all = Vec::new();
    let mut day = noon(2025, 1, 1);
    while day <= noon(2025, 3, 31) {
        all.push(plant(&storage, day, BackupStatus::Completed));
        day += chrono::Duration::days(1);
    }
    let running = plant(
        &storage,
        Utc.with_ymd_and_hms(2025, 1, 10, 18, 0, 0).unwrap(),
        BackupStatus::Running,
    );
    let failed = plant(
        &storage,
        Utc.with_ymd_and_hms(2025, 2, 15, 18, 0, 0).unwrap(),
        BackupStatus::Failed,
    );
    // This one is due to go, but its data object cannot be removed.
    let stuck = BackupId::from_time(noon(2025, 3, 1)).to_string();
    let stuck_data = storage.join(format!("{stuck}.json"));
    std::fs::remove_file(&stuck_data).unwrap();
    std::fs::create_dir(&stuck_data).unwrap();
    std::fs::write(stuck_data.join("occupied"), b"x").unwrap();

    let mut config = config(&sqlite_url(dir.path()), &storage);
    config.backup_retention = Some(Duration::from_secs(30 * 86_400));
    config.backup_keep_last = 2;
    config.backup_keep_daily = 3;
    config.backup_keep_weekly = 4;
    config.backup_keep_monthly = 3;
    let server = start(&config).await;

    // last 2: Mar 31, 30. daily 3: Mar 31, 30, 29. weekly 4 (ISO weeks;
    // Mar 31 2025 is a Monday): Mar 31, 30, 23, 16. monthly 3: Mar 31, Feb 28,
    // Jan 31. The running record stays; the failed one is older than 30 days.
    let id = |m, d| BackupId::from_time(noon(2025, m, d)).to_string();
    let expected_kept: BTreeSet<String> = [
        id(3, 31),
        id(3, 30),
        id(3, 29),
        id(3, 23),
        id(3, 16),
        id(2, 28),
        id(1, 31),
        running.clone(),
    ]
    .into_iter()
    .collect();
    let expected_gone: BTreeSet<String> = all
        .iter()
        .chain([&failed])
        .filter(|id| !expected_kept.contains(*id))
        .cloned()
        .collect();
    assert_eq!(expected_gone.len(), 90 - 7 + 1);

    // Dry run, over gRPC and REST: the lists, and not one byte changed.
    let before = snapshot(&storage);
    let mut client = admin_client(server.grpc_addr).await;
    let dry = client
        .prune_backups(PruneBackupsRequest { dry_run: true })
        .await
        .expect("dry run")
        .into_inner();
    assert!(dry.dry_run);
    assert!(dry.deleted.is_empty());
    assert!(dry.failures.is_empty());
    assert_eq!(
        dry.would_delete.iter().cloned().collect::<BTreeSet<_>>(),
        expected_gone
    );
    assert_eq!(
        dry.kept
            .iter()
            .map(|k| k.backup_id.clone())
            .collect::<BTreeSet<_>>(),
        expected_kept
    );
    let reasons = |backup: &str| {
        dry.kept
            .iter()
            .find(|k| k.backup_id == backup)
            .map(|k| k.reasons.clone())
            .unwrap()
    };
    assert_eq!(
        reasons(&id(3, 31)),
        ["newest", "last", "daily", "weekly", "monthly"]
    );
    assert_eq!(reasons(&id(3, 16)), ["weekly"]);
    assert_eq!(reasons(&id(1, 31)), ["monthly"]);
    assert_eq!(reasons(&running), ["running"]);
    let retention = dry.retention.expect("policy");
    assert!(retention.enabled);
    assert_eq!(retention.max_age_seconds, 30 * 86_400);
    assert_eq!(retention.keep_weekly, 4);

    let http = reqwest::Client::new();
    let rest: Value = http
        .post(format!("http://{}/api/backup/prune", server.http_addr))
        .bearer_auth(token("ADMIN"))
        .json(&json!({"dryRun": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["dryRun"], true);
    assert_eq!(
        rest["wouldDelete"].as_array().unwrap().len(),
        expected_gone.len()
    );
    assert_eq!(rest["retention"]["maxAge"], "30d");
    assert_eq!(snapshot(&storage), before, "a dry run changes nothing");

    // Unknown fields are refused like everywhere else.
    let bad = http
        .post(format!("http://{}/api/backup/prune", server.http_addr))
        .bearer_auth(token("ADMIN"))
        .json(&json!({"dryrun": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);

    // Maintenance mode refuses a real prune; a dry run still answers.
    client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: true,
            reason: "test".into(),
        })
        .await
        .unwrap();
    let refused = client
        .prune_backups(PruneBackupsRequest { dry_run: false })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: false,
            reason: String::new(),
        })
        .await
        .unwrap();
    let mut unchanged = snapshot(&storage);
    unchanged.remove("maintenance-mode.json");
    let mut before_no_mode = before.clone();
    before_no_mode.remove("maintenance-mode.json");
    assert_eq!(unchanged, before_no_mode);

    // The real thing: exactly the expected set goes; the stuck one is
    // reported and did not stop the others.
    let pruned = client
        .prune_backups(PruneBackupsRequest { dry_run: false })
        .await
        .expect("prune")
        .into_inner();
    assert!(!pruned.dry_run);
    assert!(pruned.would_delete.is_empty());
    assert_eq!(pruned.failures.len(), 1, "{:?}", pruned.failures);
    assert_eq!(pruned.failures[0].backup_id, stuck);
    let mut gone_now: BTreeSet<String> = pruned.deleted.iter().cloned().collect();
    gone_now.insert(stuck.clone());
    assert_eq!(gone_now, expected_gone);

    let on_disk: BTreeSet<String> = manifests(&storage).into_keys().collect();
    assert_eq!(on_disk, expected_kept, "manifests left are the kept set");
    for kept in &expected_kept {
        if *kept != running {
            assert!(
                storage.join(format!("{kept}.json")).is_file(),
                "{kept} data kept"
            );
        }
    }
    for gone in &expected_gone {
        if *gone != stuck {
            assert!(
                !storage.join(format!("{gone}.json")).exists(),
                "{gone} data removed"
            );
        }
    }
    let list = client
        .list_backups(backup_service::proto::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, expected_kept.len() as u64);

    // A second prune finds nothing more to do.
    let again = client
        .prune_backups(PruneBackupsRequest { dry_run: false })
        .await
        .unwrap()
        .into_inner();
    assert!(again.deleted.is_empty() && again.failures.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_prune_after_each_slot_and_report_through_get_schedule() {
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let mut config = config(&sqlite_url(dir.path()), &storage);
    config.backup_schedule = Some("*/2 * * * * *".into());
    config.backup_run_missed = false;
    config.backup_keep_last = 2;
    let server = start(&config).await;
    let mut client = admin_client(server.grpc_addr).await;

    let manual = client
        .create_backup(CreateBackupRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(manual.trigger, "manual");
    assert!(manual.scheduled_for.is_none(), "{manual:?}");

    // Four slots run, each followed by pruning to the two newest.
    let started = Instant::now();
    let mut first_slot = None;
    loop {
        let schedule = client
            .get_schedule(GetScheduleRequest {})
            .await
            .unwrap()
            .into_inner();
        if let Some(last) = schedule.last_run_at {
            let first = *first_slot.get_or_insert(last.seconds);
            if last.seconds >= first + 6 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "slots did not run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = client
        .list_backups(backup_service::proto::ListBackupsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        list.backups.iter().all(|b| b.backup_id != manual.backup_id),
        "retention applies to manual backups too"
    );
    for b in &list.backups {
        assert_eq!(b.trigger, "scheduled");
        // The slot is a whole even second, at or before the backup's creation.
        let slot = b
            .scheduled_for
            .as_ref()
            .expect("scheduled backups name their slot");
        let created = b.created_at.as_ref().expect("created_at");
        assert_eq!(slot.nanos, 0, "{b:?}");
        assert_eq!(slot.seconds % 2, 0, "{b:?}");
        assert!(slot.seconds <= created.seconds, "{b:?}");
        assert!(b.description.starts_with("Scheduled backup for"), "{b:?}");
        assert!(b.description.contains("*/2 * * * * *"), "{b:?}");
    }

    // Maintenance mode: the next slot is skipped, and says why.
    client
        .set_maintenance_mode(SetMaintenanceModeRequest {
            enabled: true,
            reason: "restore drill".into(),
        })
        .await
        .unwrap();
    let started = Instant::now();
    let skipped = loop {
        let schedule = client
            .get_schedule(GetScheduleRequest {})
            .await
            .unwrap()
            .into_inner();
        if schedule.last_result == "SKIPPED" {
            break schedule;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no skipped slot: {schedule:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(skipped.last_message.contains("maintenance"), "{skipped:?}");
    assert!(skipped.last_backup_id.is_empty());
    // Slots run one after another, so the pruning of the last real one is done.
    let completed = manifests(&storage)
        .into_values()
        .filter(|r| r["status"] == "COMPLETED")
        .count();
    assert_eq!(completed, 2, "keep-last 2 after every scheduled backup");

    let schedule: Value = reqwest::Client::new()
        .get(format!("http://{}/api/backup/schedule", server.http_addr))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(schedule["enabled"], true, "{schedule}");
    assert_eq!(schedule["expression"], "*/2 * * * * *");
    assert_eq!(schedule["timeZone"], "UTC");
    assert_eq!(schedule["lastResult"], "SKIPPED");
    assert_eq!(schedule["retention"]["keepLast"], 2);
    let next = DateTime::parse_from_rfc3339(schedule["nextRunAt"].as_str().unwrap()).unwrap();
    let last = DateTime::parse_from_rfc3339(schedule["lastRunAt"].as_str().unwrap()).unwrap();
    assert!(next > last);
    assert_eq!(next.timestamp() % 2, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_slot_runs_once_at_start() {
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let mut config = config(&sqlite_url(dir.path()), &storage);
    // Yearly: the most recent slot (Jan 1, 00:00 UTC) has surely been missed.
    config.backup_schedule = Some("0 0 1 1 *".into());
    let now = Utc::now();
    let missed = Utc.with_ymd_and_hms(now.year(), 1, 1, 0, 0, 0).unwrap();
    let scheduled =
        |storage: &Path| -> Vec<Value> { by_slot(storage).into_values().flatten().collect() };

    let server = start(&config).await;
    let records = wait_until("the missed slot's backup", Duration::from_secs(30), || {
        let records = scheduled(&storage);
        records
            .iter()
            .any(|r| r["status"] == "COMPLETED")
            .then_some(records)
    })
    .await;
    assert_eq!(records.len(), 1);
    let slot = DateTime::parse_from_rfc3339(records[0]["scheduledFor"].as_str().unwrap()).unwrap();
    assert_eq!(slot, missed);
    let mut client = admin_client(server.grpc_addr).await;
    let schedule = client
        .get_schedule(GetScheduleRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(schedule.last_run_at.unwrap().seconds, missed.timestamp());
    assert_eq!(schedule.last_result, "COMPLETED");
    assert_eq!(
        schedule.next_run_at.unwrap().seconds,
        Utc.with_ymd_and_hms(now.year() + 1, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp()
    );
    server.shutdown().await;

    // Restarted: that slot has its backup; it does not run again.
    let server = start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(scheduled(&storage).len(), 1);
    server.shutdown().await;

    // BACKUP_RUN_MISSED=false: nothing at start.
    let other = temp_dir();
    let mut config = common::config(&sqlite_url(other.path()), &other.path().join("backups"));
    config.backup_schedule = Some("0 0 1 1 *".into());
    config.backup_run_missed = false;
    let server = start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(scheduled(&other.path().join("backups")).is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_at_start_and_no_schedule_reports_disabled() {
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let mut bad = config(&sqlite_url(dir.path()), &storage);
    bad.backup_schedule = Some("every hour".into());
    let e = backup_service::app::start(&bad)
        .await
        .err()
        .expect("refused");
    assert!(e.message.contains("BACKUP_SCHEDULE"), "{}", e.message);
    let mut bad_tz = config(&sqlite_url(dir.path()), &storage);
    bad_tz.backup_schedule = Some("0 * * * *".into());
    bad_tz.backup_schedule_tz = "Mars/Olympus".into();
    let e = backup_service::app::start(&bad_tz)
        .await
        .err()
        .expect("refused");
    assert!(e.message.contains("BACKUP_SCHEDULE_TZ"), "{}", e.message);

    let server = start(&config(&sqlite_url(dir.path()), &storage)).await;
    let schedule: Value = reqwest::Client::new()
        .get(format!("http://{}/api/backup/schedule", server.http_addr))
        .bearer_auth(token("ADMIN"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(schedule["enabled"], false, "{schedule}");
    let doc: Value = reqwest::get(format!("http://{}/api/openapi.json", server.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/backup/prune"]["post"].is_object());
    assert!(doc["paths"]["/api/backup/schedule"]["get"].is_object());
    assert!(doc["components"]["schemas"]["ScheduleView"].is_object());
    assert_eq!(schedule["nextRunAt"], Value::Null);
    assert_eq!(schedule["lastRunAt"], Value::Null);
    assert_eq!(schedule["retention"]["enabled"], false);
    // Retention off: a prune keeps everything.
    let mut client = admin_client(server.grpc_addr).await;
    client
        .create_backup(CreateBackupRequest::default())
        .await
        .unwrap();
    let pruned = client
        .prune_backups(PruneBackupsRequest { dry_run: false })
        .await
        .unwrap()
        .into_inner();
    assert!(pruned.deleted.is_empty());
    assert_eq!(pruned.kept.len(), 1);
    assert_eq!(pruned.kept[0].reasons, ["no-policy"]);
    server.shutdown().await;
}
