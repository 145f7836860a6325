//! The one JSON error shape: `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::WWW_AUTHENTICATE;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::status::{code_name, http_status};
use crate::error::{Error, ErrorCode};

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. NOT_FOUND.
    pub code: String,
    pub message: String,
}

/// A domain error on its way out over HTTP.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code;
        let body = ErrorBody {
            error: ErrorDetail {
                code: code_name(code).to_string(),
                message: self.0.message,
            },
        };
        let mut response = (http_status(code), Json(body)).into_response();
        if code == ErrorCode::Unauthenticated {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"backup-service\", error=\"invalid_token\"",
                ),
            );
        }
        response
    }
}
