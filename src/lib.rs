//! backup-service: application-level backups of a relational database,
//! served over gRPC and REST.
//!
//! The domain core (`backup`, `format`, `source`, `storage`) knows nothing of
//! transports; `api` holds the thin gRPC and REST adapters over it.

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
