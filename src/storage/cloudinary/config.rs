//! `cloudinary://<api_key>:<api_secret>@<cloud_name>?option=value&...`:
//! credentials (percent-decoded) and options, validated at start.

use std::fmt;
use std::time::Duration;

use super::sign::Algorithm;
use crate::error::{Error, Result};

pub const DEFAULT_API_BASE: &str = "https://api.cloudinary.com";
pub const DEFAULT_FOLDER: &str = "backups";
/// Chunk of a chunked upload; an asset no larger than this is one request.
/// 20,000,000 bytes, as the official SDKs use.
pub const DEFAULT_CHUNK_SIZE: u64 = 20_000_000;
/// Cloudinary refuses non-final chunks under 5 MB.
pub const MIN_CHUNK_SIZE: u64 = 5 * 1024 * 1024;
/// Largest chunk accepted: a chunk is held in memory and sent as one request.
pub const MAX_CHUNK_SIZE: u64 = 100_000_000;
/// Smallest part size accepted from configuration.
pub const MIN_PART_SIZE: u64 = 1024 * 1024;
pub const DEFAULT_RETRIES: u32 = 5;
/// How long a folder listing is reused (own writes and deletes keep it current).
pub const DEFAULT_LIST_TTL: Duration = Duration::from_secs(60);

/// Who may fetch a stored asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryType {
    /// Every delivery needs a signed URL (the default).
    Authenticated,
    /// The original only through the signed download API.
    Private,
    /// Public: anyone with the URL. Only with `allow_public=true`.
    Upload,
}

impl DeliveryType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Private => "private",
            Self::Upload => "upload",
        }
    }
}

#[derive(Clone)]
pub struct CloudinaryConfig {
    pub cloud_name: String,
    pub api_key: String,
    pub api_secret: String,
    /// Public ids are `<folder>/<object name>`.
    pub folder: String,
    pub delivery_type: DeliveryType,
    pub algorithm: Algorithm,
    /// Largest asset we write; the plan's `raw_max_size_bytes` may lower it.
    pub part_size: Option<u64>,
    pub chunk_size: u64,
    /// Attempts after the first for retryable failures (420, 429, 5xx, connection).
    pub retries: u32,
    pub retry_base: Duration,
    /// How long a folder listing (Admin API) is reused.
    pub list_ttl: Duration,
    /// e.g. `https://api.cloudinary.com`, `https://api-eu.cloudinary.com`, no trailing slash.
    pub api_base: String,
}

/// Never prints the secret.
impl fmt::Debug for CloudinaryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn truthy(raw: &str) -> Result<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(Error::invalid(format!(
            "Cloudinary allow_public={other:?}: use true or false"
        ))),
    }
}

fn bytes_option(name: &str, raw: &str) -> Result<u64> {
    raw.trim().replace('_', "").parse::<u64>().map_err(|_| {
        Error::invalid(format!(
            "Cloudinary {name}={raw:?}: expected a number of bytes"
        ))
    })
}

fn decode(what: &str, raw: &str) -> Result<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            Error::invalid(format!(
                "the Cloudinary {what} is not valid UTF-8 once decoded"
            ))
        })
}

/// `CLOUDINARY_API_BASE` must be https: the Admin API sends the secret as
/// Basic auth. Plain http only reaches this machine (a local test server).
fn check_api_base(raw: &str) -> Result<()> {
    let base = url::Url::parse(raw)
        .map_err(|_| Error::invalid(format!("CLOUDINARY_API_BASE {raw:?} is not a URL")))?;
    let loopback = match base.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match base.scheme() {
        "https" if base.host().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(Error::invalid(format!(
            "CLOUDINARY_API_BASE {raw:?}: plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https, the API key and secret would cross the network unencrypted"
        ))),
        _ => Err(Error::invalid(format!(
            "CLOUDINARY_API_BASE {raw:?} must be an https URL"
        ))),
    }
}

impl CloudinaryConfig {
    /// Parses a `cloudinary://` URL; `api_base` comes from `CLOUDINARY_API_BASE`.
    /// Errors never contain the secret.
    pub fn parse(raw: &str, api_base: &str) -> Result<Self> {
        let shape = "STORAGE_URL/CLOUDINARY_URL must look like cloudinary://<api_key>:<api_secret>@<cloud_name>";
        if !raw.starts_with("cloudinary://") {
            return Err(Error::invalid(shape));
        }
        let url = url::Url::parse(raw).map_err(|_| Error::invalid(shape))?;
        let api_key = decode("api_key", url.username())?;
        let api_secret = decode("api_secret", url.password().unwrap_or_default())?;
        let cloud_name = url.host_str().unwrap_or_default().to_string();
        if api_key.is_empty() || api_secret.is_empty() || cloud_name.is_empty() {
            return Err(Error::invalid(format!(
                "{shape} (api_key, api_secret and cloud_name are all required)"
            )));
        }
        if !url.path().is_empty() && url.path() != "/" {
            return Err(Error::invalid(
                "a cloudinary:// URL takes options as query parameters (?folder=...), not a path",
            ));
        }
        let mut config = Self {
            cloud_name,
            api_key,
            api_secret,
            folder: DEFAULT_FOLDER.to_string(),
            delivery_type: DeliveryType::Authenticated,
            algorithm: Algorithm::Sha1,
            part_size: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            retries: DEFAULT_RETRIES,
            retry_base: Duration::from_millis(500),
            list_ttl: DEFAULT_LIST_TTL,
            api_base: api_base.trim_end_matches('/').to_string(),
        };
        let mut requested_type = None;
        let mut allow_public = false;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "folder" => config.folder = value.trim_matches('/').to_string(),
                "type" => requested_type = Some(value.to_string()),
                "allow_public" => allow_public = truthy(&value)?,
                "signature_algorithm" => config.algorithm = Algorithm::parse(&value)?,
                "part_size" => config.part_size = Some(bytes_option("part_size", &value)?),
                "chunk_size" => config.chunk_size = bytes_option("chunk_size", &value)?,
                "retries" => {
                    config.retries = bytes_option("retries", &value)?.min(10) as u32;
                }
                "retry_base_ms" => {
                    config.retry_base =
                        Duration::from_millis(bytes_option("retry_base_ms", &value)?.min(60_000));
                }
                "list_cache_secs" => {
                    config.list_ttl =
                        Duration::from_secs(bytes_option("list_cache_secs", &value)?.min(3600));
                }
                other => {
                    return Err(Error::invalid(format!(
                        "unknown Cloudinary option {other:?} (known: folder, type, allow_public, signature_algorithm, part_size, chunk_size, retries, retry_base_ms, list_cache_secs)"
                    )));
                }
            }
        }
        if config.folder.is_empty()
            || config
                .folder
                .split('/')
                .any(|s| s.is_empty() || s.starts_with('.'))
            || !config
                .folder
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(Error::invalid(format!(
                "Cloudinary folder {:?}: use letters, digits, '-', '_', '.' and '/' between segments",
                config.folder
            )));
        }
        config.delivery_type = match requested_type.as_deref() {
            None | Some("authenticated") => DeliveryType::Authenticated,
            Some("private") => DeliveryType::Private,
            Some("upload") if allow_public => DeliveryType::Upload,
            Some("upload") => {
                return Err(Error::invalid(
                    "Cloudinary type=upload makes every backup public (backups hold password hashes and personal data); use type=authenticated or private, or add allow_public=true to accept that",
                ));
            }
            Some(other) => {
                return Err(Error::invalid(format!(
                    "Cloudinary type {other:?}: use authenticated (default), private, or upload with allow_public=true"
                )));
            }
        };
        if let Some(part) = config.part_size
            && part < MIN_PART_SIZE
        {
            return Err(Error::invalid(format!(
                "Cloudinary part_size {part} is below the minimum of {MIN_PART_SIZE} bytes"
            )));
        }
        if config.chunk_size < MIN_CHUNK_SIZE {
            return Err(Error::invalid(format!(
                "Cloudinary chunk_size {} is below Cloudinary's minimum chunk of {MIN_CHUNK_SIZE} bytes",
                config.chunk_size
            )));
        }
        if config.chunk_size > MAX_CHUNK_SIZE {
            return Err(Error::invalid(format!(
                "Cloudinary chunk_size {} is above the maximum of {MAX_CHUNK_SIZE} bytes (a chunk is held in memory and sent as one request)",
                config.chunk_size
            )));
        }
        check_api_base(&config.api_base)?;
        Ok(config)
    }

    /// The location with the secret masked.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "cloudinary://{}:***@{}?folder={}&type={}&signature_algorithm={}",
            self.api_key,
            self.cloud_name,
            self.folder,
            self.delivery_type.as_str(),
            self.algorithm.as_str()
        );
        if let Some(part) = self.part_size {
            s.push_str(&format!("&part_size={part}"));
        }
        if self.api_base != DEFAULT_API_BASE {
            s.push_str(&format!(" via {}", self.api_base));
        }
        s
    }

    pub fn public_id(&self, name: &str) -> String {
        format!("{}/{name}", self.folder)
    }

    /// `{api_base}/v1_1/{cloud}/{path}`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}/v1_1/{}/{path}", self.api_base, self.cloud_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials_and_defaults() {
        let c = CloudinaryConfig::parse("cloudinary://1234:s%2Fecr%40et@demo", DEFAULT_API_BASE)
            .unwrap();
        assert_eq!(c.api_key, "1234");
        assert_eq!(c.api_secret, "s/ecr@et");
        assert_eq!(c.cloud_name, "demo");
        assert_eq!(c.folder, "backups");
        assert_eq!(c.delivery_type, DeliveryType::Authenticated);
        assert_eq!(c.algorithm, Algorithm::Sha1);
        assert_eq!(c.chunk_size, DEFAULT_CHUNK_SIZE);
        assert!(!c.describe().contains("ecr"), "{}", c.describe());
        assert!(!format!("{c:?}").contains("ecr"));
    }

    #[test]
    fn options() {
        let c = CloudinaryConfig::parse(
            "cloudinary://k:s@demo?folder=/prod/loans/&type=private&signature_algorithm=sha256&part_size=10485760",
            "http://127.0.0.1:9/",
        )
        .unwrap();
        assert_eq!(c.folder, "prod/loans");
        assert_eq!(c.delivery_type, DeliveryType::Private);
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.part_size, Some(10_485_760));
        assert_eq!(c.api_base, "http://127.0.0.1:9");
        assert_eq!(c.public_id("x.json"), "prod/loans/x.json");
    }

    #[test]
    fn public_delivery_needs_opt_in() {
        let e = CloudinaryConfig::parse("cloudinary://k:s@demo?type=upload", DEFAULT_API_BASE)
            .unwrap_err();
        assert!(e.message.contains("allow_public=true"), "{}", e.message);
        let c = CloudinaryConfig::parse(
            "cloudinary://k:s@demo?type=upload&allow_public=true",
            DEFAULT_API_BASE,
        )
        .unwrap();
        assert_eq!(c.delivery_type, DeliveryType::Upload);
    }

    #[test]
    fn refusals_never_show_the_secret() {
        for bad in [
            "cloudinary://k@demo",
            "cloudinary://k:topsecret@demo?type=public",
            "cloudinary://k:topsecret@demo?folder=../x",
            "cloudinary://k:topsecret@demo?chunk_size=100",
            "cloudinary://k:topsecret@demo?part_size=10",
            "cloudinary://k:topsecret@demo?color=blue",
            "cloudinary://k:topsecret@demo/path",
            "cloudinary://k:topsecret@demo?chunk_size=100000001",
        ] {
            let e = CloudinaryConfig::parse(bad, DEFAULT_API_BASE).unwrap_err();
            assert!(!e.message.contains("topsecret"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn chunk_size_is_bounded() {
        let parse = |size: u64| {
            CloudinaryConfig::parse(
                &format!("cloudinary://k:s@demo?chunk_size={size}"),
                DEFAULT_API_BASE,
            )
        };
        assert_eq!(parse(MAX_CHUNK_SIZE).unwrap().chunk_size, MAX_CHUNK_SIZE);
        let e = parse(MAX_CHUNK_SIZE + 1).unwrap_err();
        assert!(e.message.contains("above the maximum"), "{}", e.message);
        assert!(parse(MIN_CHUNK_SIZE - 1).is_err());
    }

    #[test]
    fn plain_http_api_base_only_to_loopback() {
        let parse = |base: &str| CloudinaryConfig::parse("cloudinary://k:s@demo", base);
        for ok in [
            "https://api.cloudinary.com",
            "https://api-eu.cloudinary.com/",
            "http://127.0.0.1:9",
            "http://127.8.9.10",
            "http://[::1]:8080",
            "http://localhost:9",
            "http://LOCALHOST",
        ] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.cloudinary.com",
            "http://10.0.0.5:9",
            "http://[fe80::1]",
            "http://localhost.evil.example",
            "http://128.0.0.1",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.message.contains("CLOUDINARY_API_BASE"),
                "{bad}: {}",
                e.message
            );
        }
        let e = parse("http://api.cloudinary.com").unwrap_err();
        assert!(e.message.contains("loopback"), "{}", e.message);
    }
}
