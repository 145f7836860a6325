//! Backup ids: `backup_` + the UTC creation time with `:` and `.` replaced by
//! `-`, e.g. `backup_2026-03-11T12-00-00-000Z`. Ids sort chronologically.

use std::sync::Mutex;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::error::{Error, Result};

const PREFIX: &str = "backup_";
const TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S-%3fZ";

/// A validated backup id. Constructing one is the only way to name a storage
/// object, so no unchecked string ever reaches a path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(String);

impl BackupId {
    /// Parses and validates an id given by a client.
    pub fn parse(raw: &str) -> Result<Self> {
        let invalid = || {
            Error::invalid(format!(
                "malformed backup id {:?}: expected backup_YYYY-MM-DDTHH-MM-SS-mmmZ",
                truncate(raw, 80)
            ))
        };
        let time = raw.strip_prefix(PREFIX).ok_or_else(invalid)?;
        // Exactly the digits and separators of the format: no path characters.
        if time.len() != 24
            || !time
                .bytes()
                .all(|b| b.is_ascii_digit() || b"-TZ".contains(&b))
        {
            return Err(invalid());
        }
        NaiveDateTime::parse_from_str(time, TIME_FORMAT).map_err(|_| invalid())?;
        Ok(Self(raw.to_string()))
    }

    pub fn from_time(time: DateTime<Utc>) -> Self {
        Self(format!("{PREFIX}{}", time.format(TIME_FORMAT)))
    }

    /// The creation time encoded in the id.
    pub fn created_at(&self) -> DateTime<Utc> {
        let time = &self.0[PREFIX.len()..];
        NaiveDateTime::parse_from_str(time, TIME_FORMAT)
            .map(|t| Utc.from_utc_datetime(&t))
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Hands out ids that are unique even for two creates in the same
/// millisecond: a clash moves the new id one millisecond later.
#[derive(Default)]
pub struct IdGenerator {
    last_millis: Mutex<i64>,
}

impl IdGenerator {
    /// The next id; `taken` says whether an id is already in use (in storage).
    pub fn next(&self, taken: impl Fn(&BackupId) -> bool) -> BackupId {
        let mut last = self.last_millis.lock().unwrap_or_else(|e| e.into_inner());
        let mut millis = Utc::now().timestamp_millis().max(*last + 1);
        loop {
            let time = Utc
                .timestamp_millis_opt(millis)
                .single()
                .unwrap_or_default();
            let id = BackupId::from_time(time);
            if !taken(&id) {
                *last = millis;
                return id;
            }
            millis += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_parses() {
        let id = BackupId::parse("backup_2026-03-11T12-00-00-000Z").unwrap();
        assert_eq!(id.created_at().to_rfc3339(), "2026-03-11T12:00:00+00:00");
    }

    #[test]
    fn rejects_traversal_and_garbage() {
        for bad in [
            "",
            "backup_",
            "../etc/passwd",
            "backup_2026-03-11T12-00-00-000Z/../../x",
            "backup_2026-13-11T12-00-00-000Z",
            "backup_2026-03-11T12:00:00.000Z",
            "BACKUP_2026-03-11T12-00-00-000Z",
            "backup_2026-03-11T12-00-00-000Z.json",
        ] {
            assert!(BackupId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_are_unique_within_a_millisecond() {
        let ids = IdGenerator::default();
        let a = ids.next(|_| false);
        let b = ids.next(|_| false);
        assert_ne!(a, b);
        assert!(a < b);
        BackupId::parse(b.as_str()).unwrap();
    }

    #[test]
    fn taken_ids_are_skipped() {
        let ids = IdGenerator::default();
        let first = ids.next(|_| false);
        let next = ids.next(|id| {
            id.as_str() <= first.as_str() || id.created_at().timestamp_subsec_millis() % 2 == 0
        });
        assert!(next > first);
    }
}
