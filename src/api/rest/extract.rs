//! Request extractors: the admin check (shared with gRPC) and a strict JSON
//! body reader with a size limit and a deadline.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::api::auth::Authenticator;
use crate::backup::Principal;
use crate::error::{Error, ErrorCode};

/// What the extractors need from the router's state.
pub trait HasGateway {
    fn authenticator(&self) -> &Arc<Authenticator>;
    fn body_limit(&self) -> usize;
    fn body_timeout(&self) -> Duration;
}

/// An authenticated admin, and the peer address the request came from.
pub struct Admin(pub Principal, pub Option<std::net::SocketAddr>);

impl<S: HasGateway + Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        match state.authenticator().authenticate(header) {
            Ok(principal) => Ok(Admin(principal, peer)),
            Err(e) => {
                let refused: crate::error::Result<()> = Err(e.clone());
                crate::telemetry::audit(
                    crate::telemetry::Action::Authenticate,
                    None,
                    "",
                    peer,
                    &refused,
                );
                Err(e.into())
            }
        }
    }
}

/// A JSON body decoded strictly (unknown fields refused). An empty body
/// decodes as `{}`.
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned, S: HasGateway + Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = state.body_limit();
        let too_large = || {
            ApiError(Error::new(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {limit} bytes"),
            ))
        };
        let (parts, body) = request.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes = read_body(body, limit, state.body_timeout()).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return serde_json::from_slice(b"{}")
                .map(StrictJson)
                .map_err(|e| ApiError(Error::invalid(format!("invalid request body: {e}"))));
        }
        let is_json = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !is_json {
            return Err(ApiError(Error::invalid(
                "request body must be JSON with Content-Type: application/json",
            )));
        }
        // serde reads structs from arrays too; a body must be an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError(Error::invalid(
                "invalid JSON body: expected a JSON object",
            )));
        }
        serde_json::from_slice(&bytes)
            .map(StrictJson)
            .map_err(|e| ApiError(Error::invalid(format!("invalid JSON body: {e}"))))
    }
}

async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError(Error::new(
            ErrorCode::Timeout,
            format!("request body not received within {} s", timeout.as_secs()),
        ))),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError(Error::new(
                        ErrorCode::PayloadTooLarge,
                        format!("request body is larger than {limit} bytes"),
                    )));
                }
                source = err.source();
            }
            Err(ApiError(Error::invalid(format!(
                "could not read request body: {e}"
            ))))
        }
    }
}
