//! Retention: which backups to keep (grandfather-father-son) and pruning the
//! rest.
//!
//! # Rules
//!
//! The policy is a union of *keep* rules, in the style of restic and borg
//! (`--keep-within`, `--keep-last`, `--keep-daily`, ...). A backup is deleted
//! only when no rule keeps it:
//!
//! - **Running or pending** records are never touched.
//! - **The newest completed backup** is always kept, whatever the rules say.
//! - `keep_last = N`: the N newest completed backups.
//! - `keep_daily = N`: for the N most recent calendar days *that have at least
//!   one completed backup*, the newest completed backup of that day. Days with
//!   no backup do not use up the count, so a pause in backups never empties the
//!   store. `keep_weekly` does the same per ISO week (Monday to Sunday) and
//!   `keep_monthly` per calendar month. Days, weeks and months are read in the
//!   schedule's time zone (`BACKUP_SCHEDULE_TZ`, default UTC).
//! - `max_age`: every completed backup younger than this is kept; an older one
//!   goes unless one of the rules above keeps it. With `max_age` alone, the
//!   newest completed backup is still kept however old it is.
//! - **Failed** records hold no data; they are never counted by the keep rules
//!   and are deleted once older than `max_age`. Without `max_age` they stay
//!   until deleted by hand.
//! - No rule set at all (no max age, every count 0): retention is off and
//!   nothing is ever pruned.
//!
//! The rules apply to every backup, manual and scheduled alike: a manual
//! backup counts towards `keep_last` and may fill a day's slot.
//!
//! `select` is the pure decision; `Backups::prune` refreshes the catalog from
//! storage (other replicas may have added or removed backups), applies it, and
//! deletes one backup at a time so that one failure does not stop the rest.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

use super::Backups;
use super::record::{BackupRecord, BackupStatus};
use crate::error::{ErrorCode, Result};

/// How many backups to keep; see the module documentation for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Completed backups younger than this are kept; failed ones older go.
    pub max_age: Option<Duration>,
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    /// Days, weeks and months are calendar periods in this zone.
    pub time_zone: Tz,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            max_age: None,
            keep_last: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            time_zone: Tz::UTC,
        }
    }
}

impl RetentionPolicy {
    /// Whether any rule is set; without one nothing is ever pruned.
    pub fn is_enabled(&self) -> bool {
        self.max_age.is_some_and(|a| !a.is_zero())
            || self.keep_last > 0
            || self.keep_daily > 0
            || self.keep_weekly > 0
            || self.keep_monthly > 0
    }

    /// One line for logs and the README's examples.
    pub fn describe(&self) -> String {
        if !self.is_enabled() {
            return "off".into();
        }
        let mut parts = Vec::new();
        if let Some(age) = self.max_age.filter(|a| !a.is_zero()) {
            parts.push(format!("max age {}", format_age(age)));
        }
        for (n, what) in [
            (self.keep_last, "last"),
            (self.keep_daily, "daily"),
            (self.keep_weekly, "weekly"),
            (self.keep_monthly, "monthly"),
        ] {
            if n > 0 {
                parts.push(format!("keep {what} {n}"));
            }
        }
        format!("{} ({})", parts.join(", "), self.time_zone.name())
    }
}

/// `30d`, `12h`, `90m` or `45s`: the largest unit that divides the age.
pub fn format_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// The newest completed backup: always kept.
    Newest,
    Last,
    Daily,
    Weekly,
    Monthly,
    /// Younger than the maximum age.
    MaxAge,
    /// Still running (or pending): never touched.
    Running,
    /// A failed record younger than the maximum age, or with no maximum age set.
    Failed,
    /// Retention is off.
    NoPolicy,
}

impl KeepReason {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepReason::Newest => "newest",
            KeepReason::Last => "last",
            KeepReason::Daily => "daily",
            KeepReason::Weekly => "weekly",
            KeepReason::Monthly => "monthly",
            KeepReason::MaxAge => "max-age",
            KeepReason::Running => "running",
            KeepReason::Failed => "failed",
            KeepReason::NoPolicy => "no-policy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub backup_id: String,
    pub reasons: Vec<KeepReason>,
}

/// What the policy keeps and deletes; both newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub keep: Vec<Kept>,
    pub delete: Vec<String>,
}

/// One calendar-period rule: the newest backup of each of the N most recent
/// periods that have one. Fed newest first.
struct Periods {
    remaining: u32,
    last: Option<i64>,
}

impl Periods {
    fn new(count: u32) -> Self {
        Self {
            remaining: count,
            last: None,
        }
    }

    fn take(&mut self, period: i64) -> bool {
        if self.remaining == 0 || self.last == Some(period) {
            return false;
        }
        self.last = Some(period);
        self.remaining -= 1;
        true
    }
}

/// Decides which of `records` the policy keeps, as of `now`. Pure: no I/O.
pub fn select(records: &[BackupRecord], policy: &RetentionPolicy, now: DateTime<Utc>) -> Selection {
    let mut sorted: Vec<&BackupRecord> = records.iter().collect();
    sorted.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.backup_id.cmp(&a.backup_id))
    });
    let enabled = policy.is_enabled();
    let cutoff = policy
        .max_age
        .filter(|a| !a.is_zero())
        .and_then(|age| chrono::Duration::from_std(age).ok())
        .and_then(|age| now.checked_sub_signed(age));
    let young = |r: &BackupRecord| cutoff.is_none_or(|c| r.created_at >= c);

    let mut newest_seen = false;
    let mut last = policy.keep_last;
    let mut daily = Periods::new(policy.keep_daily);
    let mut weekly = Periods::new(policy.keep_weekly);
    let mut monthly = Periods::new(policy.keep_monthly);
    let mut selection = Selection::default();
    for record in sorted {
        let mut reasons = Vec::new();
        match record.status {
            BackupStatus::Running | BackupStatus::Pending => reasons.push(KeepReason::Running),
            _ if !enabled => reasons.push(KeepReason::NoPolicy),
            BackupStatus::Failed => {
                if young(record) {
                    reasons.push(KeepReason::Failed);
                }
            }
            BackupStatus::Completed => {
                if !newest_seen {
                    newest_seen = true;
                    reasons.push(KeepReason::Newest);
                }
                if last > 0 {
                    last -= 1;
                    reasons.push(KeepReason::Last);
                }
                let local = record.created_at.with_timezone(&policy.time_zone);
                let day = i64::from(local.year()) * 1000 + i64::from(local.ordinal());
                let week = local.iso_week();
                let week = i64::from(week.year()) * 100 + i64::from(week.week());
                let month = i64::from(local.year()) * 100 + i64::from(local.month());
                if daily.take(day) {
                    reasons.push(KeepReason::Daily);
                }
                if weekly.take(week) {
                    reasons.push(KeepReason::Weekly);
                }
                if monthly.take(month) {
                    reasons.push(KeepReason::Monthly);
                }
                if cutoff.is_some() && young(record) {
                    reasons.push(KeepReason::MaxAge);
                }
            }
        }
        if reasons.is_empty() {
            selection.delete.push(record.backup_id.clone());
        } else {
            selection.keep.push(Kept {
                backup_id: record.backup_id.clone(),
                reasons,
            });
        }
    }
    selection
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneFailure {
    pub backup_id: String,
    pub error: String,
}

/// The outcome of one prune (or dry run).
#[derive(Debug, Clone)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Deleted now (empty on a dry run).
    pub deleted: Vec<String>,
    /// What a real run would delete (dry run only).
    pub would_delete: Vec<String>,
    pub kept: Vec<Kept>,
    /// Backups the policy selected whose deletion failed; the rest went on.
    pub failures: Vec<PruneFailure>,
    pub policy: RetentionPolicy,
}

impl Backups {
    /// The retention policy in force (off unless configured).
    pub fn retention_policy(&self) -> RetentionPolicy {
        self.automation.retention.clone()
    }

    /// Applies the retention policy now. The catalog is first refreshed from
    /// storage so that backups of other replicas count. A dry run changes
    /// nothing and lists what would go. Deletion goes backup by backup; one
    /// that fails is reported and the others still go.
    pub async fn prune(&self, dry_run: bool) -> Result<PruneReport> {
        if !dry_run {
            self.maintenance().await;
            self.maintenance.refuse_while_on("deleted")?;
        }
        let policy = self.retention_policy();
        self.reload().await?;
        let selection = select(&self.catalog.all(), &policy, Utc::now());
        let mut report = PruneReport {
            dry_run,
            deleted: Vec::new(),
            would_delete: Vec::new(),
            kept: selection.keep,
            failures: Vec::new(),
            policy,
        };
        if dry_run {
            report.would_delete = selection.delete;
            tracing::info!(
                would_delete = report.would_delete.len(),
                kept = report.kept.len(),
                "retention dry run"
            );
            return Ok(report);
        }
        for id in selection.delete {
            match self.delete(&id).await {
                Ok(_) => report.deleted.push(id),
                // Already gone (another replica pruned it): the goal is met.
                Err(e) if e.code == ErrorCode::NotFound => report.deleted.push(id),
                Err(e) => {
                    tracing::warn!(
                        backup_id = %id,
                        error = %e.message,
                        "retention could not delete a backup"
                    );
                    report.failures.push(PruneFailure {
                        backup_id: id,
                        error: e.message,
                    });
                }
            }
        }
        crate::telemetry::pruned(report.deleted.len(), report.failures.len());
        tracing::info!(
            deleted = report.deleted.len(),
            failed = report.failures.len(),
            kept = report.kept.len(),
            policy = %report.policy.describe(),
            "retention applied"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::id::BackupId;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    fn record(t: DateTime<Utc>, status: BackupStatus) -> BackupRecord {
        let mut r = BackupRecord::new(&BackupId::from_time(t), String::new(), true);
        r.status = status;
        r
    }

    fn id(t: DateTime<Utc>) -> String {
        BackupId::from_time(t).to_string()
    }

    fn kept_ids(s: &Selection) -> Vec<String> {
        s.keep.iter().map(|k| k.backup_id.clone()).collect()
    }

    fn reasons(s: &Selection, t: DateTime<Utc>) -> Vec<KeepReason> {
        s.keep
            .iter()
            .find(|k| k.backup_id == id(t))
            .map(|k| k.reasons.clone())
            .unwrap_or_default()
    }

    /// Two backups a day for 2025-01-01 .. 2025-03-31 (noon and 18:00 UTC).
    fn quarter() -> Vec<BackupRecord> {
        let mut out = Vec::new();
        let mut day = at(2025, 1, 1, 0);
        while day < at(2025, 4, 1, 0) {
            out.push(record(
                day + chrono::Duration::hours(12),
                BackupStatus::Completed,
            ));
            out.push(record(
                day + chrono::Duration::hours(18),
                BackupStatus::Completed,
            ));
            day += chrono::Duration::days(1);
        }
        out
    }

    #[test]
    fn no_policy_keeps_everything() {
        let records = quarter();
        let s = select(&records, &RetentionPolicy::default(), at(2026, 1, 1, 0));
        assert!(s.delete.is_empty());
        assert_eq!(s.keep.len(), records.len());
    }

    #[test]
    fn grandfather_father_son_keeps_exactly_the_expected_set() {
        let policy = RetentionPolicy {
            keep_last: 3,
            keep_daily: 4,
            keep_weekly: 3,
            keep_monthly: 3,
            ..Default::default()
        };
        let s = select(&quarter(), &policy, at(2026, 1, 1, 0));
        // last 3: Mar 31 18:00, Mar 31 12:00, Mar 30 18:00.
        // daily 4: newest of Mar 31, 30, 29, 28.
        // weekly 3 (ISO weeks, Monday start): Mar 31 is a Monday (its own week),
        //   then the weeks ending Sun Mar 30 and Sun Mar 23.
        // monthly 3: newest of March, February, January.
        let mut expected = vec![
            id(at(2025, 3, 31, 18)),
            id(at(2025, 3, 31, 12)),
            id(at(2025, 3, 30, 18)),
            id(at(2025, 3, 29, 18)),
            id(at(2025, 3, 28, 18)),
            id(at(2025, 3, 23, 18)),
            id(at(2025, 2, 28, 18)),
            id(at(2025, 1, 31, 18)),
        ];
        expected.sort();
        expected.reverse();
        assert_eq!(kept_ids(&s), expected);
        assert_eq!(s.delete.len(), 180 - expected.len());
        assert_eq!(
            reasons(&s, at(2025, 3, 31, 18)),
            vec![
                KeepReason::Newest,
                KeepReason::Last,
                KeepReason::Daily,
                KeepReason::Weekly,
                KeepReason::Monthly
            ]
        );
        assert_eq!(
            reasons(&s, at(2025, 3, 30, 18)),
            vec![KeepReason::Last, KeepReason::Daily, KeepReason::Weekly]
        );
        assert_eq!(reasons(&s, at(2025, 1, 31, 18)), vec![KeepReason::Monthly]);
    }

    #[test]
    fn periods_without_backups_do_not_use_up_the_count() {
        // Backups on Jan 1, Jan 2 and Mar 10 only: daily 3 keeps all three.
        let records = vec![
            record(at(2025, 1, 1, 9), BackupStatus::Completed),
            record(at(2025, 1, 2, 9), BackupStatus::Completed),
            record(at(2025, 1, 2, 8), BackupStatus::Completed),
            record(at(2025, 3, 10, 9), BackupStatus::Completed),
        ];
        let policy = RetentionPolicy {
            keep_daily: 3,
            ..Default::default()
        };
        let s = select(&records, &policy, at(2026, 1, 1, 0));
        assert_eq!(s.delete, vec![id(at(2025, 1, 2, 8))]);
    }

    #[test]
    fn days_are_read_in_the_time_zone() {
        // 23:30 UTC on Jan 1 is already Jan 2 in Berlin (UTC+1): same day as 08:00 UTC Jan 2.
        let late = Utc.with_ymd_and_hms(2025, 1, 1, 23, 30, 0).unwrap();
        let records = vec![
            record(late, BackupStatus::Completed),
            record(at(2025, 1, 2, 8), BackupStatus::Completed),
            record(at(2025, 1, 1, 8), BackupStatus::Completed),
        ];
        let utc = RetentionPolicy {
            keep_daily: 2,
            ..Default::default()
        };
        let s = select(&records, &utc, at(2026, 1, 1, 0));
        assert_eq!(s.delete, vec![id(at(2025, 1, 1, 8))]);
        let berlin = RetentionPolicy {
            keep_daily: 2,
            time_zone: chrono_tz::Europe::Berlin,
            ..Default::default()
        };
        let s = select(&records, &berlin, at(2026, 1, 1, 0));
        assert_eq!(s.delete, vec![id(late)]);
    }

    #[test]
    fn max_age_keeps_young_backups_and_rules_keep_old_ones() {
        let now = at(2025, 4, 1, 0);
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(10 * 86_400)),
            keep_monthly: 2,
            ..Default::default()
        };
        let s = select(&quarter(), &policy, now);
        // Everything from Mar 22 00:00 on (10 days) plus the newest of February.
        let kept = kept_ids(&s);
        assert_eq!(kept.len(), 10 * 2 + 1);
        assert!(kept.contains(&id(at(2025, 2, 28, 18))));
        assert!(kept.contains(&id(at(2025, 3, 22, 12))));
        assert!(!kept.contains(&id(at(2025, 3, 21, 18))));
        assert!(!kept.contains(&id(at(2025, 1, 31, 18))));
    }

    #[test]
    fn max_age_alone_still_keeps_the_newest_completed_backup() {
        let records = vec![
            record(at(2025, 1, 1, 0), BackupStatus::Completed),
            record(at(2025, 1, 2, 0), BackupStatus::Completed),
            record(at(2025, 1, 3, 0), BackupStatus::Failed),
        ];
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_secs(86_400)),
            ..Default::default()
        };
        let s = select(&records, &policy, at(2026, 1, 1, 0));
        assert_eq!(kept_ids(&s), vec![id(at(2025, 1, 2, 0))]);
        assert_eq!(
            s.delete,
            vec![id(at(2025, 1, 3, 0)), id(at(2025, 1, 1, 0))],
            "the old failed record goes too"
        );
    }

    #[test]
    fn running_records_are_never_touched_and_failed_ones_never_counted() {
        let now = at(2025, 6, 1, 0);
        let records = vec![
            record(at(2025, 1, 1, 0), BackupStatus::Running),
            record(at(2025, 1, 2, 0), BackupStatus::Pending),
            record(at(2025, 5, 31, 0), BackupStatus::Failed),
            record(at(2025, 5, 30, 0), BackupStatus::Completed),
            record(at(2025, 5, 29, 0), BackupStatus::Completed),
        ];
        let policy = RetentionPolicy {
            keep_last: 1,
            ..Default::default()
        };
        let s = select(&records, &policy, now);
        assert_eq!(s.delete, vec![id(at(2025, 5, 29, 0))]);
        assert_eq!(reasons(&s, at(2025, 1, 1, 0)), vec![KeepReason::Running]);
        assert_eq!(reasons(&s, at(2025, 1, 2, 0)), vec![KeepReason::Running]);
        assert_eq!(
            reasons(&s, at(2025, 5, 31, 0)),
            vec![KeepReason::Failed],
            "no max age: failed records stay"
        );
        assert_eq!(
            reasons(&s, at(2025, 5, 30, 0)),
            vec![KeepReason::Newest, KeepReason::Last]
        );
    }

    #[test]
    fn ages_format_with_the_largest_unit() {
        assert_eq!(format_age(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_age(Duration::from_secs(7200)), "2h");
        assert_eq!(format_age(Duration::from_secs(90)), "90s");
    }
}
