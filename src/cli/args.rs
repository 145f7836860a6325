//! Arguments of every subcommand. `serve` takes the server's settings,
//! `ServeConfig`, which live in `config`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ServeConfig, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "backup-service",
    version,
    about = "Application-level database backups over gRPC and REST"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (also what happens with no subcommand).
    Serve(Box<ServeConfig>),
    /// Print an HS256 JWT signed with JWT_SECRET, for operators and scripts.
    Token(TokenArgs),
    /// Ask a running server for a backup and print the record as JSON.
    Create(CreateArgs),
    /// Restore a stored backup through the server (needs maintenance mode).
    Restore(RestoreArgs),
    /// Verify a stored backup through the server.
    Verify(VerifyArgs),
    /// Show or change maintenance mode through the server.
    Maintenance(MaintenanceArgs),
    /// Restore a downloaded backup file directly into a database (offline).
    RestoreFile(RestoreFileArgs),
    /// The uploaded documents inside backups (includeDocuments).
    Documents(DocumentsArgs),
}

#[derive(Debug, Args)]
pub struct DocumentsArgs {
    #[command(subcommand)]
    pub command: DocumentsCommand,
}

#[derive(Debug, Subcommand)]
pub enum DocumentsCommand {
    /// Write a backup's documents into a directory, each checked against
    /// its sha256, with an index.json mapping URL to file.
    Extract(ExtractArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ExtractArgs {
    /// A downloaded backup file, or the id of a backup to download from the server.
    pub source: String,
    /// Where the documents go (created if missing).
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// gRPC address of the server (backup ids only).
    #[arg(long, env = "BACKUP_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Admin token (backup ids only).
    #[arg(long, env = "BACKUP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// How CLI commands reach a running server.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// gRPC address of the server.
    #[arg(long, env = "BACKUP_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Admin token (see `backup-service token`).
    #[arg(long, env = "BACKUP_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    pub backup_id: String,
    /// Restore into this database instead of the server's configured one.
    #[arg(long)]
    pub target_url: Option<String>,
    /// Verify and compare schemas only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not take a safety backup of the target first.
    #[arg(long)]
    pub skip_safety_backup: bool,
    /// Also write the documents into this directory on the server (inside
    /// its DOCUMENT_RESTORE_ROOT).
    #[arg(long)]
    pub documents_dir: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    pub backup_id: String,
    /// A scratch database with the same tables, for a full test restore.
    #[arg(long)]
    pub scratch_database_url: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
    Status,
}

#[derive(Debug, Clone, Args)]
pub struct MaintenanceArgs {
    #[arg(value_enum, default_value = "status")]
    pub switch: Switch,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreFileArgs {
    /// A backup file as downloaded.
    pub path: std::path::PathBuf,
    /// The database to restore into (its tables must exist).
    #[arg(long, env = "TARGET_URL", hide_env_values = true)]
    pub target_url: String,
    /// Verify and compare schemas only; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[arg(long, default_value = "ADMIN")]
    pub role: String,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[arg(long, default_value = "backup-operator")]
    pub user_id: String,
    #[arg(long, default_value = "")]
    pub email: String,
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, default_value = "")]
    pub description: String,
    /// Leave uploaded documents out.
    #[arg(long)]
    pub no_documents: bool,
    /// Return at once instead of waiting for completion.
    #[arg(long = "async")]
    pub run_async: bool,
    /// none, gzip or zstd (default: the server's setting).
    #[arg(long)]
    pub compression: Option<String>,
}
