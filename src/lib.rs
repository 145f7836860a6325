//! backup-service: application-level backups of a relational database,
//! served over gRPC and REST.
//!
//! Rooms, from the ground floor up:
//! - `schema`: the vocabulary every floor speaks (tables, columns, progress,
//!   the dump sink, JSON/SQL quoting). Imports nothing of the others.
//! - `format`: the backup file (writer, verifying reader, codecs).
//! - `source`: database engines (`Engine::of(url)`), their readers, restore
//!   loaders and slot leases; `storage`: one trait, local/S3/Cloudinary.
//! - `documents`: includeDocuments (columns, SSRF guard, fetcher).
//! - `backup`: the domain core (jobs, catalog, restore driver, schedule,
//!   retention). Knows no transport and no engine.
//! - `api`: thin gRPC and REST adapters, one auth check, one error table.
//! - `config` (settings), `keyring`, `cli` (subcommands), `app` (wiring),
//!   `telemetry` (metrics, audit), `redact`.

pub mod api;
pub mod app;
pub mod backup;
pub mod cli;
pub mod config;
pub mod documents;
pub mod error;
pub mod format;
pub mod keyring;
pub mod redact;
pub mod schema;
pub mod source;
pub mod storage;
pub mod telemetry;

/// Code generated from `proto/backup/v1/backup.proto`.
pub mod proto {
    tonic::include_proto!("backup.v1");

    /// Encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/backup_descriptor.bin"));
}
