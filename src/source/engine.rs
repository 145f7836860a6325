//! Which engine a database URL names, decided in one place: the scheme.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use crate::error::{Error, Result};
use crate::redact::{redact_text, redact_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `postgres://` or `postgresql://` (CockroachDB speaks it too).
    Postgres,
    /// `sqlite:` or `sqlite://`.
    Sqlite,
}

impl Engine {
    /// The engine of `url`, or None for a scheme we do not speak.
    pub fn of(url: &str) -> Option<Engine> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Engine::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Engine::Sqlite)
        } else {
            None
        }
    }

    /// Like `of`, refusing an unknown scheme; `what` names the setting.
    pub fn require(url: &str, what: &str) -> Result<Engine> {
        Engine::of(url).ok_or_else(|| {
            Error::invalid(format!(
                "{what} {}: unsupported scheme (use postgres://, postgresql:// or sqlite:)",
                redact_url(url)
            ))
        })
    }
}

/// A PostgreSQL URL parsed once; errors never show the password.
pub(crate) fn pg_options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url).map_err(|e| {
        Error::invalid(format!(
            "database URL {}: {}",
            redact_url(url),
            redact_text(&e.to_string())
        ))
    })
}

/// The server a PostgreSQL URL points at: host (or socket directory) and port.
pub fn pg_server(url: &str) -> Option<(String, u16)> {
    let options = PgConnectOptions::from_str(url).ok()?;
    let host = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => options.get_host().to_ascii_lowercase(),
    };
    Some((host, options.get_port()))
}

/// The directory of an existing SQLite database file, canonicalised.
pub fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    Path::new(path)
        .canonicalize()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(Engine::of("postgres://h/db"), Some(Engine::Postgres));
        assert_eq!(Engine::of("postgresql://h/db"), Some(Engine::Postgres));
        assert_eq!(Engine::of("sqlite://data/app.db"), Some(Engine::Sqlite));
        assert_eq!(Engine::of("sqlite:app.db"), Some(Engine::Sqlite));
        assert_eq!(Engine::of("mysql://h/db"), None);
        let e = Engine::require("mysql://u:pw@h/db", "DATABASE_URL").unwrap_err();
        assert!(e.message.contains("unsupported scheme"));
        assert!(!e.message.contains("pw"), "{}", e.message);
    }

    #[test]
    fn servers() {
        assert_eq!(
            pg_server("postgres://u:p@DB.internal:6432/x"),
            Some(("db.internal".to_string(), 6432))
        );
        assert_eq!(pg_server("postgres://[bad"), None);
    }
}
