//! The one table from domain error codes to gRPC codes and HTTP statuses.

use http::StatusCode;
use tonic::Code;

use crate::error::{Error, ErrorCode};

/// (domain code, gRPC code, HTTP status, code string in JSON error bodies)
#[rustfmt::skip]
const TABLE: &[(ErrorCode, Code, StatusCode, &str)] = &[
    (
        ErrorCode::InvalidArgument,
        Code::InvalidArgument,
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
    ),
    (
        ErrorCode::Unauthenticated,
        Code::Unauthenticated,
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
    ),
    (
        ErrorCode::PermissionDenied,
        Code::PermissionDenied,
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
    ),
    (
        ErrorCode::NotFound,
        Code::NotFound,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    ),
    (
        ErrorCode::FailedPrecondition,
        Code::FailedPrecondition,
        StatusCode::CONFLICT,
        "FAILED_PRECONDITION",
    ),
    (
        ErrorCode::PayloadTooLarge,
        Code::ResourceExhausted,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
    ),
    (
        ErrorCode::Timeout,
        Code::DeadlineExceeded,
        StatusCode::REQUEST_TIMEOUT,
        "REQUEST_TIMEOUT",
    ),
    (
        ErrorCode::Internal,
        Code::Internal,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
    ),
    (
        ErrorCode::Unavailable,
        Code::Unavailable,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    ),
];

fn row(code: ErrorCode) -> (Code, StatusCode, &'static str) {
    TABLE
        .iter()
        .find(|r| r.0 == code)
        .map(|r| (r.1, r.2, r.3))
        .unwrap_or((
            Code::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
        ))
}

pub fn grpc_code(code: ErrorCode) -> Code {
    row(code).0
}

pub fn http_status(code: ErrorCode) -> StatusCode {
    row(code).1
}

pub fn code_name(code: ErrorCode) -> &'static str {
    row(code).2
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(grpc_code(e.code), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_row() {
        for code in [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::FailedPrecondition,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Timeout,
            ErrorCode::Internal,
            ErrorCode::Unavailable,
        ] {
            assert_eq!(TABLE.iter().filter(|r| r.0 == code).count(), 1, "{code:?}");
            // Distinct gRPC codes and HTTP statuses: no two rows collapse.
            let same = |r: &&(ErrorCode, Code, StatusCode, &str)| {
                r.1 == grpc_code(code) || r.2 == http_status(code)
            };
            assert_eq!(TABLE.iter().filter(same).count(), 1, "{code:?}");
        }
    }
}
