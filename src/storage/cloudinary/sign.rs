//! Cloudinary's request signatures, as its documentation describes them:
//! every sent parameter except `file`, `cloud_name`, `resource_type`,
//! `api_key` and `signature`; empty values dropped; sorted by name; joined as
//! `name=value` with `&` (values not URL-encoded, but a literal `&` inside a
//! value becomes `%26`, as current SDKs do); the api_secret appended; SHA-1
//! or SHA-256 in lowercase hex. The Admin API uses HTTP Basic auth instead.

use base64::Engine;
use sha2::Digest as _;

use crate::error::{Error, Result};

/// Parameters that are sent but never signed.
const UNSIGNED: [&str; 5] = [
    "file",
    "cloud_name",
    "resource_type",
    "api_key",
    "signature",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    Sha1,
    Sha256,
}

impl Algorithm {
    pub fn parse(raw: &str) -> Result<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "sha1" | "sha-1" => Ok(Self::Sha1),
            "sha256" | "sha-256" => Ok(Self::Sha256),
            other => Err(Error::invalid(format!(
                "Cloudinary signature_algorithm {other:?}: use sha1 or sha256"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
        }
    }
}

/// The string Cloudinary hashes, without the secret.
pub fn string_to_sign<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut kept: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, v)| !v.is_empty() && !UNSIGNED.contains(k))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(b.0));
    kept.iter()
        .map(|(k, v)| format!("{k}={}", v.replace('&', "%26")))
        .collect::<Vec<_>>()
        .join("&")
}

/// The signature of `params` with `secret`, lowercase hex.
pub fn sign<K: AsRef<str>, V: AsRef<str>>(
    params: &[(K, V)],
    secret: &str,
    algorithm: Algorithm,
) -> String {
    let mut text = string_to_sign(params);
    text.push_str(secret);
    match algorithm {
        Algorithm::Sha1 => {
            use sha1::Digest;
            hex::encode(sha1::Sha1::digest(text.as_bytes()))
        }
        Algorithm::Sha256 => hex::encode(sha2::Sha256::digest(text.as_bytes())),
    }
}

/// The `Authorization` header value of the Admin API.
pub fn basic_auth(api_key: &str, api_secret: &str) -> String {
    let raw = format!("{api_key}:{api_secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EAGER: &str = "w_400,h_300,c_pad|w_260,h_200,c_crop";

    #[test]
    fn published_example_sha1_and_sha256() {
        let params = [
            ("eager", EAGER),
            ("public_id", "sample_image"),
            ("timestamp", "1315060510"),
        ];
        assert_eq!(
            format!("{}abcd", string_to_sign(&params)),
            "eager=w_400,h_300,c_pad|w_260,h_200,c_crop&public_id=sample_image&timestamp=1315060510abcd"
        );
        assert_eq!(
            sign(&params, "abcd", Algorithm::Sha1),
            "bfd09f95f331f558cbd1320e67aa8d488770583e"
        );
        assert_eq!(
            sign(&params, "abcd", Algorithm::Sha256),
            "cc927e1290f9e3ae4c1a741eda21a4630b4ce80f9ce0bc0296337d25cf40f91e"
        );
    }

    #[test]
    fn order_exclusions_and_empty_values() {
        // Unsorted input, excluded and empty parameters: same signature.
        let params = [
            ("timestamp", "1315060510"),
            ("api_key", "123"),
            ("file", "data"),
            ("resource_type", "raw"),
            ("cloud_name", "demo"),
            ("tags", ""),
            ("public_id", "sample_image"),
        ];
        assert_eq!(
            sign(&params, "abcd", Algorithm::Sha1),
            "b4ad47fb4e25c7bf5f92a20089f9db59bc302313"
        );
    }

    #[test]
    fn destroy_example() {
        let params = [
            ("public_id", "backups/db-2024-01-01.tar.gz"),
            ("type", "private"),
            ("invalidate", "1"),
            ("timestamp", "1700000000"),
        ];
        assert_eq!(
            sign(&params, "abcd", Algorithm::Sha1),
            "04e909d53c55aefacc027197ce780fb18a8b7b98"
        );
    }

    #[test]
    fn private_download_example() {
        let params = [
            ("public_id", "backups/db-2024-01-01.tar.gz"),
            ("type", "private"),
            ("attachment", "1"),
            ("expires_at", "1700003600"),
            ("timestamp", "1700000000"),
            ("api_key", "not signed"),
        ];
        assert_eq!(
            sign(&params, "abcd", Algorithm::Sha1),
            "bad91d3e6c8223d2beb23a4bce27da834b2b81a9"
        );
    }

    #[test]
    fn ampersand_in_a_value_is_escaped() {
        assert_eq!(
            string_to_sign(&[("context", "a=b&c"), ("timestamp", "1")]),
            "context=a=b%26c&timestamp=1"
        );
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(basic_auth("key", "secret"), "Basic a2V5OnNlY3JldA==");
    }
}
