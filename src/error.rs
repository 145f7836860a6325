//! The one error type of the domain. Transports map `ErrorCode` to their own
//! status codes in one table (`api::status`).

use std::fmt;

/// What kind of failure this is, independent of any transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request itself is wrong (bad id, description too long, bad JSON).
    InvalidArgument,
    /// No or unusable credentials.
    Unauthenticated,
    /// Valid credentials without the needed role.
    PermissionDenied,
    /// The backup does not exist.
    NotFound,
    /// The backup exists but is not in a state that allows this (not completed).
    FailedPrecondition,
    /// The request body is larger than allowed.
    PayloadTooLarge,
    /// The client took too long to send its request.
    Timeout,
    /// A backup or upload failed (storage quota, database connection, disk space).
    Internal,
    /// The database or the storage cannot be reached right now.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// An I/O error on the storage side, with disk-full spelled out.
    pub fn storage_io(what: &str, err: &std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Self::internal(format!("{what}: insufficient disk space: {err}"))
            }
            std::io::ErrorKind::NotFound => Self::not_found(format!("{what}: {err}")),
            _ => Self::internal(format!("{what}: {err}")),
        }
    }

    /// A database error; connection problems are called that by name.
    pub fn database(what: &str, err: &sqlx::Error) -> Self {
        let message = crate::redact::redact_text(&err.to_string());
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => {
                Self::internal(format!("{what}: database connection failed: {message}"))
            }
            _ => Self::internal(format!("{what}: {message}")),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}
