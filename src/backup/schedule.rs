//! Scheduled backups: a cron schedule, one runner per slot across replicas,
//! missed slots, and retention after each scheduled backup.
//!
//! # Schedule
//!
//! `BACKUP_SCHEDULE` is a cron expression parsed by the `croner` crate: five
//! fields (`minute hour day-of-month month day-of-week`, `0 * * * *` is
//! hourly) or six with seconds first (`*/10 * * * * *`), plus `@hourly`,
//! `@daily`, names (`MON`, `JAN`), `L`, `W` and `#`. It is read in
//! `BACKUP_SCHEDULE_TZ` (an IANA name, default `UTC`): `0 2 * * *` with
//! `Europe/Berlin` runs at 02:00 Berlin time; daylight-saving gaps and
//! repeats are resolved by croner (a time skipped by the clock runs at the
//! first instant after the gap; a repeated one runs once).
//!
//! A **slot** is one scheduled instant. A scheduled backup records
//! `trigger: scheduled`, the slot in `scheduledFor`, and a description naming
//! the slot and the schedule.
//!
//! # One runner per slot
//!
//! Every replica wakes at every slot and tries to *claim* it; the claim is a
//! PostgreSQL session advisory lock (`pg_try_advisory_lock`) taken on a
//! dedicated connection to the source database, held while the backup and
//! the pruning after it run. Whoever holds the lock first refreshes the catalog
//! from the shared storage and, if no backup for the slot exists there yet,
//! runs it; the others wait for the lock (polling, until the next slot), then
//! find the slot's manifest and do nothing. So:
//!
//! - exactly one backup per slot, as long as the replicas share storage (the
//!   slot's manifest is the record that it ran);
//! - nothing is written into the application's database (no table, no row; a
//!   role that may only connect and read is enough), and nothing extra shows
//!   up in backups or restores;
//! - if the replica running a slot dies, PostgreSQL drops its session and the
//!   lock with it; a replica still waiting takes the slot over (the dead one
//!   left no manifest), and in any case the next slot is run by whoever is
//!   alive.
//!
//! With SQLite (a single-instance database) the claim is local. CockroachDB
//! has no real advisory locks: there, when the lock function is refused, the
//! claim falls back to local and only one replica should have a schedule.
//!
//! # Missed slots
//!
//! With `BACKUP_RUN_MISSED` (default true), at start the most recent slot at
//! or before now runs once if storage holds no backup for it (every replica
//! was down, or this is the first start with this schedule). Older missed
//! slots are not run. Slots that pass while a scheduled backup is still
//! running are skipped (coalesced), with a warning.
//!
//! # Retention
//!
//! After each scheduled backup (completed or failed; not after a skipped
//! slot), the retention policy is applied while the claim is still held;
//! see `retention`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use tokio::sync::watch;
use tracing::Instrument;

use super::record::{BackupRecord, BackupStatus, Trigger, format_time};
use super::retention::RetentionPolicy;
use super::{Backups, CreateRequest, Principal};
use crate::error::{Error, Result};
use crate::source::lease::{SlotClaim, SlotLease};
use crate::telemetry::{self, Action};

/// First wait between two tries for the lock; it doubles up to `MAX_POLL`.
const FIRST_POLL: Duration = Duration::from_millis(250);
const MAX_POLL: Duration = Duration::from_secs(5);

/// A parsed cron expression in a time zone.
pub struct Schedule {
    expression: String,
    cron: Cron,
    time_zone: Tz,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("expression", &self.expression)
            .field("time_zone", &self.time_zone.name())
            .finish()
    }
}

/// Parses an IANA time zone name such as `UTC` or `Europe/Berlin`.
pub fn parse_time_zone(name: &str) -> Result<Tz> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    Tz::from_str(name).map_err(|_| {
        Error::invalid(format!(
            "BACKUP_SCHEDULE_TZ {name:?} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
        ))
    })
}

impl Schedule {
    /// Five fields, or six with seconds first; `@hourly` and friends too.
    pub fn parse(expression: &str, time_zone: Tz) -> Result<Self> {
        let expression = expression.trim();
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| {
                Error::invalid(format!(
                    "BACKUP_SCHEDULE {expression:?} is not a cron expression \
                     (5 fields, or 6 with seconds first): {e}"
                ))
            })?;
        let schedule = Self {
            expression: expression.to_string(),
            cron,
            time_zone,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(Error::invalid(format!(
                "BACKUP_SCHEDULE {expression:?} never fires"
            )));
        }
        Ok(schedule)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.time_zone), false)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The latest slot at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.time_zone), true)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The description of a scheduled backup.
    fn description(&self, slot: DateTime<Utc>) -> String {
        let expression: String = self.expression.chars().take(100).collect();
        format!(
            "Scheduled backup for {} (schedule \"{expression}\", {})",
            format_time(&slot),
            self.time_zone.name()
        )
    }
}

/// How a scheduled run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Running,
    Completed,
    Failed,
    /// Not run (maintenance mode, storage unreadable).
    Skipped,
}

impl RunResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Running => "RUNNING",
            RunResult::Completed => "COMPLETED",
            RunResult::Failed => "FAILED",
            RunResult::Skipped => "SKIPPED",
        }
    }
}

/// The last scheduled run, by any replica.
#[derive(Debug, Clone)]
pub struct LastRun {
    pub slot: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub result: RunResult,
    /// Why it failed or was skipped.
    pub message: String,
    pub backup_id: String,
}

impl LastRun {
    fn from_record(r: &BackupRecord) -> Self {
        Self {
            slot: r.scheduled_for.unwrap_or(r.created_at),
            started_at: r.created_at,
            finished_at: r.completed_at,
            result: match r.status {
                BackupStatus::Completed => RunResult::Completed,
                BackupStatus::Failed => RunResult::Failed,
                BackupStatus::Running | BackupStatus::Pending => RunResult::Running,
            },
            message: r.error.clone(),
            backup_id: r.backup_id.clone(),
        }
    }

    fn skipped(slot: DateTime<Utc>, why: String) -> Self {
        let now = Utc::now();
        Self {
            slot,
            started_at: now,
            finished_at: Some(now),
            result: RunResult::Skipped,
            message: why,
            backup_id: String::new(),
        }
    }
}

/// What GetSchedule reports.
#[derive(Debug, Clone)]
pub struct ScheduleStatus {
    pub enabled: bool,
    pub expression: String,
    pub time_zone: String,
    pub run_missed: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run: Option<LastRun>,
    pub retention: RetentionPolicy,
}

/// Schedule and retention settings, and what the scheduler last did here.
pub struct Automation {
    pub schedule: Option<Schedule>,
    pub retention: RetentionPolicy,
    pub run_missed: bool,
    lease: Arc<dyn SlotLease>,
    /// This replica's last outcome that left no record (a skipped slot).
    last_skip: Mutex<Option<LastRun>>,
}

/// The schedule and retention settings, validated (see `config`).
#[derive(Debug, Default)]
pub struct ScheduleSettings {
    pub schedule: Option<Schedule>,
    pub retention: RetentionPolicy,
    pub run_missed: bool,
}

impl ScheduleSettings {
    /// Parses the cron expression and time zone; fails on a bad one.
    pub fn new(
        expression: Option<&str>,
        time_zone: &str,
        retention: impl FnOnce(Tz) -> RetentionPolicy,
        run_missed: bool,
    ) -> Result<Self> {
        let time_zone = parse_time_zone(time_zone)?;
        let schedule = match expression.map(str::trim) {
            None | Some("") => None,
            Some(expression) => Some(Schedule::parse(expression, time_zone)?),
        };
        Ok(Self {
            schedule,
            retention: retention(time_zone),
            run_missed,
        })
    }
}

impl Automation {
    /// The settings, and the lease the database offers for claiming slots.
    pub fn new(settings: ScheduleSettings, lease: Arc<dyn SlotLease>) -> Self {
        Self {
            schedule: settings.schedule,
            retention: settings.retention,
            run_missed: settings.run_missed,
            lease,
            last_skip: Mutex::new(None),
        }
    }

    /// Claims `slot`: tries until `deadline` (the next slot).
    /// `None` when the deadline passed or the service is stopping.
    async fn claim(
        &self,
        deadline: DateTime<Utc>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<SlotClaim> {
        let mut attempt = self.lease.attempt();
        let mut wait = FIRST_POLL;
        loop {
            if let Some(claim) = attempt.try_once().await {
                return Some(claim);
            }
            if *stop.borrow() || Utc::now() + wait >= deadline {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped(stop) => return None,
            }
            wait = (wait * 2).min(MAX_POLL);
        }
    }
}

impl Backups {
    /// The schedule, its next slot, and the last scheduled run by any
    /// replica (the catalog is refreshed from storage first).
    pub async fn schedule_status(&self) -> Result<ScheduleStatus> {
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e.message, "could not refresh the catalog from storage");
        }
        let automation = &self.automation;
        let schedule = automation.schedule.as_ref();
        let from_record = self
            .catalog
            .last_scheduled()
            .map(|r| LastRun::from_record(&r));
        let skipped = automation.last_skip.lock().ok().and_then(|l| l.clone());
        let last_run = match (from_record, skipped) {
            (Some(r), Some(s)) if s.slot > r.slot => Some(s),
            (Some(r), _) => Some(r),
            (None, s) => s,
        };
        Ok(ScheduleStatus {
            enabled: schedule.is_some(),
            expression: schedule.map(|s| s.expression.clone()).unwrap_or_default(),
            time_zone: automation.retention.time_zone.name().to_string(),
            run_missed: automation.run_missed,
            next_run_at: schedule.and_then(|s| s.next_after(Utc::now())),
            last_run,
            retention: self.retention_policy(),
        })
    }
}

/// The scheduler task: sleeps until each slot, claims it, runs it. Returns
/// when `stop` turns true (or the schedule has no further slot).
pub async fn run(core: Arc<Backups>, automation: Arc<Automation>, mut stop: watch::Receiver<bool>) {
    let Some(schedule) = automation.schedule.as_ref() else {
        return;
    };
    let now = Utc::now();
    let mut next = schedule.next_after(now);
    if automation.run_missed
        && let Some(missed) = schedule.latest_at_or_before(now)
        && core.catalog.for_slot(missed).is_none()
    {
        tracing::info!(
            slot = %format_time(&missed),
            "no backup for the most recent slot: running it now"
        );
        next = Some(missed);
    }
    tracing::info!(
        schedule = %schedule.expression,
        time_zone = %schedule.time_zone.name(),
        next = %next.as_ref().map(format_time).unwrap_or_default(),
        retention = %automation.retention.describe(),
        "backup schedule active"
    );
    while let Some(slot) = next {
        if !sleep_until(slot, &mut stop).await {
            return;
        }
        let Some(deadline) = schedule.next_after(slot) else {
            return;
        };
        let span = tracing::info_span!("scheduled_slot", slot = %format_time(&slot));
        run_slot(&core, &automation, schedule, slot, deadline, &mut stop)
            .instrument(span)
            .await;
        if *stop.borrow() {
            return;
        }
        let after = Utc::now().max(slot);
        next = schedule.next_after(after);
        if let Some(n) = next
            && n > deadline
        {
            tracing::warn!(
                from = %format_time(&deadline),
                next = %format_time(&n),
                "scheduled slots passed while the previous one ran: skipped"
            );
        }
    }
}

/// Claims and runs one slot; another replica may already have run it.
async fn run_slot(
    core: &Arc<Backups>,
    automation: &Automation,
    schedule: &Schedule,
    slot: DateTime<Utc>,
    deadline: DateTime<Utc>,
    stop: &mut watch::Receiver<bool>,
) {
    let Some(claim) = automation.claim(deadline, stop).await else {
        tracing::info!("slot not claimed: another replica held it until the next slot");
        return;
    };
    let work = run_claimed(core, automation, schedule, slot);
    tokio::select! {
        skipped = work => {
            if let Some(skip) = skipped
                && let Ok(mut last) = automation.last_skip.lock()
            {
                *last = Some(skip);
            }
        }
        // A backup already started finishes in its own task.
        _ = stopped(stop) => {}
    }
    claim.release().await;
}

/// The slot is ours: run it unless storage shows it ran. Returns a skip to
/// remember (outcomes with a record are read from the catalog).
async fn run_claimed(
    core: &Arc<Backups>,
    automation: &Automation,
    schedule: &Schedule,
    slot: DateTime<Utc>,
) -> Option<LastRun> {
    if let Err(e) = core.reload().await {
        // Without the storage listing a duplicate cannot be ruled out.
        tracing::error!(error = %e.message, "scheduled backup skipped: storage cannot be listed");
        return Some(LastRun::skipped(
            slot,
            format!("storage cannot be listed: {}", e.message),
        ));
    }
    if let Some(done) = core.catalog.for_slot(slot) {
        tracing::info!(backup_id = %done.backup_id, "slot already run by another replica");
        return None;
    }
    core.maintenance().await;
    if let Err(e) = core.maintenance.refuse_while_on("created") {
        tracing::warn!(reason = %e.message, "scheduled backup skipped");
        return Some(LastRun::skipped(slot, e.message));
    }
    let who = Principal {
        user_id: "scheduler".into(),
        email: String::new(),
        role: String::new(),
    };
    let request = CreateRequest {
        description: schedule.description(slot),
        include_documents: None,
        run_async: false,
        trigger: Trigger::Scheduled,
        scheduled_for: Some(slot),
        ..Default::default()
    };
    tracing::info!("scheduled backup starting");
    let result = core.create(request, &who).await;
    let backup_id = core
        .catalog
        .for_slot(slot)
        .map(|r| r.backup_id)
        .unwrap_or_default();
    telemetry::audit(Action::Create, Some(&who), &backup_id, None, &result);
    match &result {
        Ok(record) => {
            tracing::info!(
                backup_id = %record.backup_id,
                size = record.size,
                "scheduled backup completed"
            )
        }
        Err(e) => {
            tracing::error!(backup_id = %backup_id, error = %e.message, "scheduled backup failed")
        }
    }
    if backup_id.is_empty() {
        // Refused before a record existed (maintenance turned on meanwhile).
        let why = result.err().map(|e| e.message).unwrap_or_default();
        return Some(LastRun::skipped(slot, why));
    }
    if automation.retention.is_enabled() {
        let pruned = core.prune(false).await;
        telemetry::audit(Action::Prune, Some(&who), "", None, &pruned);
        if let Err(e) = pruned {
            tracing::warn!(error = %e.message, "retention after the scheduled backup failed");
        }
    }
    None
}

/// Sleeps until `t` by the wall clock; false when stopping.
async fn sleep_until(t: DateTime<Utc>, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        let left = t - Utc::now();
        let Ok(left) = left.to_std() else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        // Re-read the clock at least every minute (suspend, clock steps).
        tokio::select! {
            _ = tokio::time::sleep(left.min(Duration::from_secs(60))) => {}
            _ = stopped(stop) => return false,
        }
    }
}

/// Resolves when `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn five_and_six_field_expressions() {
        let hourly = Schedule::parse("0 * * * *", Tz::UTC).unwrap();
        let t = utc(2026, 3, 11, 12, 30, 5);
        assert_eq!(hourly.next_after(t), Some(utc(2026, 3, 11, 13, 0, 0)));
        assert_eq!(
            hourly.latest_at_or_before(t),
            Some(utc(2026, 3, 11, 12, 0, 0))
        );
        let slot = utc(2026, 3, 11, 13, 0, 0);
        assert_eq!(hourly.next_after(slot), Some(utc(2026, 3, 11, 14, 0, 0)));
        assert_eq!(hourly.latest_at_or_before(slot), Some(slot));

        let every3 = Schedule::parse("*/3 * * * * *", Tz::UTC).unwrap();
        assert_eq!(
            every3.next_after(utc(2026, 1, 1, 0, 0, 1)),
            Some(utc(2026, 1, 1, 0, 0, 3))
        );
        assert_eq!(
            every3.next_after(utc(2026, 1, 1, 0, 0, 3)),
            Some(utc(2026, 1, 1, 0, 0, 6))
        );
        let sub = utc(2026, 1, 1, 0, 0, 3) + chrono::Duration::milliseconds(400);
        assert_eq!(
            every3.latest_at_or_before(sub),
            Some(utc(2026, 1, 1, 0, 0, 3))
        );

        assert!(Schedule::parse("@daily", Tz::UTC).is_ok());
        for bad in ["", "* * *", "61 * * * *", "0 0 0 * * * 2030", "every hour"] {
            let e = Schedule::parse(bad, Tz::UTC).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn time_zones_move_the_slots() {
        let berlin = parse_time_zone("Europe/Berlin").unwrap();
        let s = Schedule::parse("0 2 * * *", berlin).unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 0, 0, 0)),
            Some(utc(2026, 1, 10, 1, 0, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 7, 9, 23, 0, 0)),
            Some(utc(2026, 7, 10, 0, 0, 0))
        );
        assert!(parse_time_zone("Mars/Olympus").is_err());
        assert_eq!(parse_time_zone("").unwrap(), Tz::UTC);
    }

    #[test]
    fn descriptions_name_the_slot() {
        let s = Schedule::parse("0 * * * *", Tz::UTC).unwrap();
        let d = s.description(utc(2026, 3, 11, 12, 0, 0));
        assert_eq!(
            d,
            "Scheduled backup for 2026-03-11T12:00:00Z (schedule \"0 * * * *\", UTC)"
        );
    }
}
