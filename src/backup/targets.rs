//! Which databases a restore (or a verify's test restore) may write into:
//! the configured database, any database on the configured database's
//! server, and servers listed in RESTORE_ALLOWED_HOSTS. Without this check an
//! admin token could make the service connect to, and write into, any host
//! the service can reach.

use crate::error::{Error, Result};
use crate::source::engine::{Engine, pg_server, sqlite_dir};

/// Refuses `target` unless it is allowed; `configured` is DATABASE_URL.
pub fn check_allowed(configured: &str, target: &str, allowed_hosts: &[String]) -> Result<()> {
    if target == configured {
        return Ok(());
    }
    match (Engine::of(configured), Engine::of(target)) {
        (Some(Engine::Postgres), Some(Engine::Postgres)) => {
            check_postgres(configured, target, allowed_hosts)
        }
        (Some(Engine::Sqlite), Some(Engine::Sqlite)) => check_sqlite(configured, target),
        _ => Err(Error::invalid(
            "the target database must be of the same kind as the configured one",
        )),
    }
}

fn server(url: &str, what: &str) -> Result<(String, u16)> {
    pg_server(url).ok_or_else(|| Error::invalid(format!("{what} is not a valid PostgreSQL URL")))
}

fn check_postgres(configured: &str, target: &str, allowed_hosts: &[String]) -> Result<()> {
    let (host, port) = server(target, "the target URL")?;
    if server(configured, "DATABASE_URL")? == (host.clone(), port) {
        return Ok(());
    }
    let listed = allowed_hosts.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        match entry.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                h.trim_matches(['[', ']']) == host && p.parse::<u16>().ok() == Some(port)
            }
            _ => !entry.is_empty() && entry.trim_matches(['[', ']']) == host,
        }
    });
    if listed {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the target server {host}:{port} is not the configured database's server; \
         list it in RESTORE_ALLOWED_HOSTS to restore there"
    )))
}

/// SQLite targets are files: only those beside the configured database.
fn check_sqlite(configured: &str, target: &str) -> Result<()> {
    match (sqlite_dir(configured), sqlite_dir(target)) {
        (Some(a), Some(b)) if a == b => Ok(()),
        _ => Err(Error::invalid(
            "an SQLite target must be an existing database file in the configured database's directory",
        )),
    }
}

impl super::Backups {
    /// Refuses a restore or test-restore target outside what is allowed.
    pub(crate) fn check_restore_target(&self, target: &str) -> Result<()> {
        check_allowed(&self.database_url, target, &self.restore_allowed_hosts)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "postgres://app:secret@db.internal:5432/loans";

    #[test]
    fn same_server_any_database_is_allowed() {
        assert!(check_allowed(DB, DB, &[]).is_ok());
        assert!(check_allowed(DB, "postgresql://other:pw@DB.internal/loans_staging", &[]).is_ok());
    }

    #[test]
    fn other_servers_need_listing() {
        let elsewhere = "postgres://app:secret@10.0.0.9:5432/loans";
        let err = check_allowed(DB, elsewhere, &[]).unwrap_err();
        assert!(
            err.message.contains("RESTORE_ALLOWED_HOSTS"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("secret"), "{}", err.message);
        assert!(check_allowed(DB, elsewhere, &["10.0.0.9".into()]).is_ok());
        assert!(check_allowed(DB, elsewhere, &["10.0.0.9:5432".into()]).is_ok());
        assert!(check_allowed(DB, elsewhere, &["10.0.0.9:6432".into()]).is_err());
        assert!(check_allowed(DB, "postgres://app@db.internal:6432/loans", &[]).is_err());
    }

    #[test]
    fn engines_and_garbage_are_refused() {
        assert!(check_allowed(DB, "sqlite://data/app.db", &[]).is_err());
        assert!(check_allowed(DB, "mysql://db.internal/loans", &[]).is_err());
        assert!(check_allowed(DB, "postgres://[bad", &[]).is_err());
    }

    #[test]
    fn sqlite_targets_stay_beside_the_configured_file() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        for p in [
            dir.path().join("app.db"),
            dir.path().join("staging.db"),
            other.path().join("x.db"),
        ] {
            std::fs::write(&p, b"").unwrap();
        }
        let url = |p: std::path::PathBuf| format!("sqlite://{}", p.display());
        let configured = url(dir.path().join("app.db"));
        assert!(check_allowed(&configured, &url(dir.path().join("staging.db")), &[]).is_ok());
        assert!(check_allowed(&configured, &url(other.path().join("x.db")), &[]).is_err());
        assert!(check_allowed(&configured, &url(dir.path().join("missing.db")), &[]).is_err());
    }
}
