//! The server's settings: flag, environment variable, default, validated at
//! start. Command-line arguments of the other subcommands live in `cli::args`.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use clap::{Args, Parser, ValueEnum};

use crate::backup::retention::RetentionPolicy;
use crate::backup::schedule::ScheduleSettings;
use crate::documents::DocumentSettings;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Database to back up (postgres://..., sqlite:...). An SQLite file is created if missing.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/app.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Where backups are kept: a directory path, file:///abs/path,
    /// s3://bucket/prefix or cloudinary://key:secret@cloud?options.
    /// Unset or empty: CLOUDINARY_URL when that is set, else data/backups
    /// (see `storage_location`).
    #[arg(
        long,
        env = "STORAGE_URL",
        default_value = "",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub storage_url: String,
    /// Cloudinary credentials and options (cloudinary://key:secret@cloud),
    /// used as the storage when STORAGE_URL is unset.
    #[arg(long, env = "CLOUDINARY_URL", hide_env_values = true)]
    pub cloudinary_url: Option<String>,
    /// Cloudinary API host: a regional one (https://api-eu.cloudinary.com) or a test server.
    #[arg(
        long,
        env = "CLOUDINARY_API_BASE",
        default_value = crate::storage::cloudinary::config::DEFAULT_API_BASE
    )]
    pub cloudinary_api_base: String,
    /// gRPC listen address (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// REST gateway listen address.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// HS256 secret for bearer tokens, at least 32 bytes (e.g. `openssl rand
    /// -hex 32`). Unset: a random one is generated (dev mode, loopback only).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// In dev mode, listen on the configured addresses even when they are
    /// not loopback.
    #[arg(
        long,
        env = "DEV_LISTEN_ALL",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dev_listen_all: bool,
    /// Roles allowed to manage backups, comma-separated.
    #[arg(
        long,
        env = "ADMIN_ROLES",
        default_value = "ADMIN",
        value_delimiter = ','
    )]
    pub admin_roles: Vec<String>,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// PostgreSQL connections that dump tables in parallel on one snapshot.
    #[arg(long, env = "DUMP_PARALLELISM", default_value_t = 2)]
    pub dump_parallelism: usize,
    /// Seconds between database/storage reachability checks for health.
    #[arg(long, env = "HEALTH_CHECK_INTERVAL_SECS", default_value_t = 5)]
    pub health_check_interval_secs: u64,
    /// Largest REST request body, in bytes.
    #[arg(long, env = "HTTP_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub http_body_limit: usize,
    /// Seconds a REST client may take to send its request body.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub http_body_timeout_secs: u64,
    /// Compression of new backups when a request names none: none, gzip or zstd.
    #[arg(long, env = "BACKUP_COMPRESSION", default_value = "none")]
    pub compression: String,
    /// Encryption key, key file and older decryption keys.
    #[command(flatten)]
    pub keys: crate::keyring::KeySettings,
    /// Cron expression for scheduled backups: 5 fields (`0 * * * *` is hourly)
    /// or 6 with seconds first (`*/10 * * * * *`). Unset or empty: no schedule.
    #[arg(long, env = "BACKUP_SCHEDULE")]
    pub backup_schedule: Option<String>,
    /// IANA time zone the schedule is read in (also the days, weeks and
    /// months of retention), e.g. `Europe/Berlin`.
    #[arg(long, env = "BACKUP_SCHEDULE_TZ", default_value = "UTC")]
    pub backup_schedule_tz: String,
    /// Maximum age of backups (e.g. 30d): older completed ones go unless a
    /// keep rule holds them; older failed records go too. Unset: no age limit.
    #[arg(long, env = "BACKUP_RETENTION", value_parser = parse_duration)]
    pub backup_retention: Option<Duration>,
    /// Keep the N newest completed backups.
    #[arg(long, env = "BACKUP_KEEP_LAST", default_value_t = 0)]
    pub backup_keep_last: u32,
    /// Keep the newest backup of each of the N most recent days that have one.
    #[arg(long, env = "BACKUP_KEEP_DAILY", default_value_t = 0)]
    pub backup_keep_daily: u32,
    /// Keep the newest backup of each of the N most recent ISO weeks that have one.
    #[arg(long, env = "BACKUP_KEEP_WEEKLY", default_value_t = 0)]
    pub backup_keep_weekly: u32,
    /// Keep the newest backup of each of the N most recent months that have one.
    #[arg(long, env = "BACKUP_KEEP_MONTHLY", default_value_t = 0)]
    pub backup_keep_monthly: u32,
    /// At start, run the most recent slot once if no replica ran it.
    #[arg(
        long,
        env = "BACKUP_RUN_MISSED",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub backup_run_missed: bool,
    /// Columns holding document URLs, backed up with includeDocuments:
    /// `"LoanDocument"."fileUrl","public"."UnionMemberDocument"."fileUrl"`.
    /// Empty: no documents are backed up.
    #[arg(long, env = "DOCUMENT_COLUMNS", default_value = "")]
    pub document_columns: String,
    /// Directory `file://` document URLs may point into; unset: file:// is refused.
    #[arg(long, env = "DOCUMENT_ROOT")]
    pub document_root: Option<std::path::PathBuf>,
    /// Hosts documents may be fetched from (names, IP addresses or CIDR
    /// ranges, comma-separated). Private and loopback addresses are refused
    /// unless the address itself is listed.
    #[arg(
        long,
        env = "DOCUMENT_ALLOWED_HOSTS",
        default_value = "res.cloudinary.com",
        value_delimiter = ','
    )]
    pub document_allowed_hosts: Vec<String>,
    /// Fail the backup when any document cannot be fetched.
    #[arg(
        long,
        env = "DOCUMENTS_STRICT",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub documents_strict: bool,
    /// Documents fetched at once.
    #[arg(long, env = "DOCUMENT_CONCURRENCY", default_value_t = 4)]
    pub document_concurrency: usize,
    /// Time one attempt at one document may take, body included (e.g. 60s, 5m).
    #[arg(long, env = "DOCUMENT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub document_timeout: Duration,
    /// Largest document, in bytes; larger ones are reported missing.
    #[arg(long, env = "DOCUMENT_MAX_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub document_max_bytes: u64,
    /// Further attempts after a 5xx answer, a connection error or a timeout.
    #[arg(long, env = "DOCUMENT_RETRIES", default_value_t = 2)]
    pub document_retries: u32,
    /// Database servers (host or host:port, comma-separated) that restores
    /// and test restores may write to besides the configured database's
    /// own server.
    #[arg(long, env = "RESTORE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub restore_allowed_hosts: Vec<String>,
    /// Directory under which a restore may write documents (`documents_dir`);
    /// unset: restores do not write documents.
    #[arg(long, env = "DOCUMENT_RESTORE_ROOT")]
    pub document_restore_root: Option<std::path::PathBuf>,
}

/// Shortest JWT_SECRET accepted: HS256 wants a key of at least its 256-bit
/// output; a short one can be guessed offline from any token.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Refuses an empty or short JWT_SECRET with a message that says what to do.
pub fn check_jwt_secret(secret: &str) -> Result<()> {
    if secret.is_empty() {
        return Err(Error::invalid(
            "JWT_SECRET is set but empty; set a secret of at least 32 bytes \
             (e.g. `openssl rand -hex 32`), or unset it for dev mode",
        ));
    }
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(Error::invalid(format!(
            "JWT_SECRET is {} bytes; it must be at least {MIN_JWT_SECRET_BYTES} \
             (e.g. `openssl rand -hex 32`)",
            secret.len()
        )));
    }
    Ok(())
}

/// Where backups go when neither STORAGE_URL nor CLOUDINARY_URL is set.
pub const DEFAULT_STORAGE_URL: &str = "data/backups";

impl ServeConfig {
    /// The defaults plus whatever the environment sets.
    pub fn from_env() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: ServeConfig,
        }
        Only::parse_from(["backup-service"]).config
    }

    /// Compression default and keys, validated.
    pub fn codec_settings(&self) -> Result<crate::format::codec::CodecSettings> {
        use crate::format::codec::{CodecSettings, Compression};
        Ok(CodecSettings {
            default_compression: Compression::parse(&self.compression)?,
            keys: self.keys.keyring()?,
        })
    }

    /// The storage to use: STORAGE_URL, else CLOUDINARY_URL, else the
    /// local default.
    pub fn storage_location(&self) -> String {
        let set = |s: &str| !s.trim().is_empty();
        if set(&self.storage_url) {
            return self.storage_url.clone();
        }
        match &self.cloudinary_url {
            Some(url) if set(url) => url.clone(),
            _ => DEFAULT_STORAGE_URL.to_string(),
        }
    }

    /// Schedule and retention, validated: a bad cron expression or time
    /// zone stops the start.
    pub fn schedule_settings(&self) -> Result<ScheduleSettings> {
        ScheduleSettings::new(
            self.backup_schedule.as_deref(),
            &self.backup_schedule_tz,
            |time_zone| RetentionPolicy {
                max_age: self.backup_retention.filter(|a| !a.is_zero()),
                keep_last: self.backup_keep_last,
                keep_daily: self.backup_keep_daily,
                keep_weekly: self.backup_keep_weekly,
                keep_monthly: self.backup_keep_monthly,
                time_zone,
            },
            self.backup_run_missed,
        )
    }

    /// includeDocuments settings, validated; creates DOCUMENT_RESTORE_ROOT.
    pub fn document_settings(&self) -> Result<DocumentSettings> {
        let restore_root = match &self.document_restore_root {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::invalid(format!("DOCUMENT_RESTORE_ROOT {}: {e}", dir.display()))
                })?;
                Some(std::fs::canonicalize(dir).map_err(|e| {
                    Error::invalid(format!("DOCUMENT_RESTORE_ROOT {}: {e}", dir.display()))
                })?)
            }
            None => None,
        };
        Ok(DocumentSettings {
            columns: crate::documents::columns::parse_list(&self.document_columns)?,
            policy: Arc::new(crate::documents::guard::Policy::new(
                &self.document_allowed_hosts,
                self.document_root.as_deref(),
            )?),
            strict: self.documents_strict,
            concurrency: self.document_concurrency.clamp(1, 64),
            timeout: self.document_timeout.max(Duration::from_secs(1)),
            max_bytes: self.document_max_bytes,
            retries: self.document_retries.min(10),
            restore_root,
        })
    }

    pub fn health_check_interval(&self) -> Duration {
        Duration::from_secs(self.health_check_interval_secs.max(1))
    }
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {raw:?}: expected e.g. 30m, 1h, 7d"))?;
    let factor: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "invalid duration unit in {raw:?}: use s, m, h or d"
            ));
        }
    };
    let seconds = n
        .checked_mul(factor)
        .ok_or_else(|| format!("duration {raw:?} is too long"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeConfig {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: ServeConfig,
        }
        let mut all = vec!["backup-service"];
        all.extend_from_slice(args);
        Only::parse_from(all).config
    }

    #[test]
    fn storage_falls_back_to_cloudinary_url_then_the_default() {
        let both = serve(&[
            "--storage-url",
            "/srv/backups",
            "--cloudinary-url",
            "cloudinary://k:s@demo",
        ]);
        assert_eq!(both.storage_location(), "/srv/backups");
        let cloudinary = serve(&["--cloudinary-url", "cloudinary://k:s@demo"]);
        assert_eq!(cloudinary.storage_location(), "cloudinary://k:s@demo");
        let neither = serve(&[]);
        if std::env::var_os("STORAGE_URL").is_none() && std::env::var_os("CLOUDINARY_URL").is_none()
        {
            assert_eq!(neither.storage_location(), DEFAULT_STORAGE_URL);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(
            parse_duration("99999999999999999d").is_err(),
            "overflow is refused"
        );
    }
}
