//! The one admin check, used by the gRPC interceptor and the REST extractor:
//! an HS256 JWT with `exp` (and `nbf` when present), whose `role` is in the
//! admin set.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::backup::Principal;
use crate::error::{Error, ErrorCode, Result};

/// Claims as the application issues them: `{userId, email, role, iat, exp}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Claims {
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
    exp: u64,
}

pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    admin_roles: HashSet<String>,
}

fn unauthenticated(message: &str) -> Error {
    Error::new(ErrorCode::Unauthenticated, message)
}

impl Authenticator {
    pub fn new(secret: &[u8], admin_roles: &[String]) -> Result<Self> {
        let bad_secret =
            |e: jsonwebtoken::errors::Error| Error::invalid(format!("JWT_SECRET is unusable: {e}"));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        // One leeway for both ends of the validity window, for clock skew.
        validation.leeway = 5;
        validation.validate_nbf = true;
        Ok(Self {
            decoding: DecodingKey::from_secret(secret).map_err(bad_secret)?,
            encoding: EncodingKey::from_secret(secret).map_err(bad_secret)?,
            validation,
            admin_roles: admin_roles
                .iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect(),
        })
    }

    /// Checks an `Authorization` header value; the principal on success.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal> {
        let header = authorization.ok_or_else(|| {
            unauthenticated("missing authorization: send 'Authorization: Bearer <token>'")
        })?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("authorization must be 'Bearer <token>'"))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| {
                unauthenticated(match e.kind() {
                    ErrorKind::ExpiredSignature => "token has expired",
                    ErrorKind::InvalidSignature => "token signature is invalid",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "token algorithm is not allowed (HS256 only)"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "token has no exp claim",
                    ErrorKind::ImmatureSignature => "token is not valid yet",
                    _ => "token is malformed",
                })
            })?;
        let claims = data.claims;
        let role = claims.role.unwrap_or_default();
        let principal = Principal {
            user_id: match claims.user_id {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            },
            email: claims.email.unwrap_or_default(),
            role: role.clone(),
        };
        if !self.admin_roles.contains(&role) {
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                format!("role {role:?} may not manage backups; an admin role is required"),
            ));
        }
        Ok(principal)
    }

    /// Signs a token in the application's shape.
    pub fn issue(&self, user_id: &str, email: &str, role: &str, ttl: Duration) -> Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            user_id: Some(serde_json::Value::String(user_id.to_string())),
            email: (!email.is_empty()).then(|| email.to_string()),
            role: Some(role.to_string()),
            iat: Some(now),
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::internal(format!("signing token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn auth() -> Authenticator {
        Authenticator::new(b"test-secret", &["ADMIN".to_string()]).unwrap()
    }

    #[test]
    fn admin_token_passes_and_other_roles_are_denied() {
        let a = auth();
        let t = a
            .issue("u1", "a@b.c", "ADMIN", Duration::from_secs(60))
            .unwrap();
        let p = a.authenticate(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!((p.user_id.as_str(), p.email.as_str()), ("u1", "a@b.c"));
        let t = a
            .issue("u2", "", "SUPERVISOR", Duration::from_secs(60))
            .unwrap();
        let e = a.authenticate(Some(&format!("Bearer {t}"))).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
    }

    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"test-secret").unwrap(),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn token_not_valid_yet_is_refused() {
        let t =
            signed(serde_json::json!({"role": "ADMIN", "nbf": now() + 3600, "exp": now() + 7200}));
        let e = auth()
            .authenticate(Some(&format!("Bearer {t}")))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert_eq!(e.message, "token is not valid yet");
    }

    #[test]
    fn nbf_in_the_past_or_within_leeway_passes() {
        let a = auth();
        for nbf in [now() - 60, now() + 2] {
            let t = signed(serde_json::json!({"role": "ADMIN", "nbf": nbf, "exp": now() + 600}));
            a.authenticate(Some(&format!("Bearer {t}")))
                .unwrap_or_else(|e| panic!("nbf {nbf}: {}", e.message));
        }
    }

    #[test]
    fn alg_none_is_refused() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(br#"{"role":"ADMIN","exp":99999999999}"#);
        let e = auth()
            .authenticate(Some(&format!("Bearer {header}.{body}.")))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
    }
}
