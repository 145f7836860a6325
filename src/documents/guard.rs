//! The SSRF guard: which URLs the document fetcher may touch.
//!
//! - http and https only to hosts in `DOCUMENT_ALLOWED_HOSTS` (names compare
//!   case-insensitively; entries may also be IP addresses or CIDR ranges);
//! - addresses in private, loopback, link-local, unique-local, unspecified,
//!   multicast, CGNAT, documentation, discard-only, Teredo and other special
//!   ranges (also in their IPv4-mapped, IPv4-translated, NAT64, local-use
//!   NAT64 and 6to4 forms) are refused unless the address itself is listed
//!   (an IP or a CIDR entry). Listing a host *name* never unlocks a private
//!   address: that is what keeps DNS rebinding out. The rule runs in the DNS
//!   resolver the HTTP client uses, so every answer is checked, and directly
//!   for URLs with a literal IP;
//! - redirects go through the same checks (see `fetch`);
//! - `file://` only under `DOCUMENT_ROOT` after canonicalization, opened
//!   without blocking and kept only if a regular file.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use url::{Host, Url};

use crate::error::{Error, Result};

/// Why a URL or an address was refused; travels through the HTTP client's
/// error chain so the fetcher can report it as the reason.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Name(String),
    Net(IpAddr, u8),
}

#[derive(Debug, Clone)]
pub struct Policy {
    entries: Vec<Entry>,
    /// Canonical `DOCUMENT_ROOT`; `file://` is refused without one.
    root: Option<PathBuf>,
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let width = if net.is_ipv4() { 32 } else { 128 };
    if ip.is_ipv4() != net.is_ipv4() || prefix > width {
        return false;
    }
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(width - prefix);
    (bits(ip) >> shift) == (bits(net) >> shift)
}

fn v4_special(ip: Ipv4Addr) -> Option<&'static str> {
    let ranges: &[([u8; 4], u8, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified/this-network"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved/broadcast"),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_net(IpAddr::V4(ip), IpAddr::V4(Ipv4Addr::from(*net)), *prefix))
        .map(|(_, _, what)| *what)
}

/// The kind of special range `ip` is in, or None for a public address.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_special(v4),
        IpAddr::V6(v6) => {
            let raw = u128::from(v6);
            let embedded = |v: u128| Ipv4Addr::from((v & 0xffff_ffff) as u32);
            if v6.is_unspecified() {
                return Some("unspecified");
            }
            if v6.is_loopback() {
                return Some("loopback");
            }
            let net = |s: &str| s.parse::<Ipv6Addr>().map(IpAddr::V6);
            let check =
                |prefix: &str, len: u8| net(prefix).is_ok_and(|n| in_net(IpAddr::V6(v6), n, len));
            if check("::ffff:0:0", 96)
                || check("::ffff:0:0:0", 96)
                || check("64:ff9b::", 96)
                || check("64:ff9b:1::", 48)
            {
                // IPv4-mapped, IPv4-translated (SIIT), NAT64 and local-use
                // NAT64 forms: judge the IPv4 address in the last 32 bits
                // (local-use prefixes are taken as /96 ones, as deployed).
                return v4_special(embedded(raw));
            }
            if check("2001::", 32) {
                return Some("Teredo");
            }
            if check("100::", 64) {
                return Some("discard-only");
            }
            if check("::", 96) {
                return Some("IPv4-compatible (deprecated)");
            }
            if check("2002::", 16) {
                let v4 = Ipv4Addr::from(((raw >> 80) & 0xffff_ffff) as u32);
                return v4_special(v4);
            }
            if check("fe80::", 10) {
                return Some("link-local");
            }
            if check("fec0::", 10) {
                return Some("site-local");
            }
            if check("fc00::", 7) {
                return Some("unique-local");
            }
            if check("ff00::", 8) {
                return Some("multicast");
            }
            if check("2001:db8::", 32) {
                return Some("documentation");
            }
            None
        }
    }
}

impl Policy {
    /// `allowed`: host names, IP addresses or CIDR ranges. `root`: where
    /// `file://` documents may be read from.
    pub fn new(allowed: &[String], root: Option<&Path>) -> Result<Self> {
        let mut entries = Vec::new();
        for raw in allowed.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let raw = raw.trim_start_matches('[').trim_end_matches(']');
            let entry = if let Some((ip, prefix)) = raw.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| {
                    Error::invalid(format!(
                        "DOCUMENT_ALLOWED_HOSTS: {raw:?} is not a CIDR range"
                    ))
                })?;
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= if ip.is_ipv4() { 32 } else { 128 })
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "DOCUMENT_ALLOWED_HOSTS: bad prefix length in {raw:?}"
                        ))
                    })?;
                Entry::Net(ip, prefix)
            } else if let Ok(ip) = raw.parse::<IpAddr>() {
                Entry::Net(ip, if ip.is_ipv4() { 32 } else { 128 })
            } else {
                let name = raw.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
                {
                    return Err(Error::invalid(format!(
                        "DOCUMENT_ALLOWED_HOSTS: {raw:?} is not a host name, IP address or CIDR range"
                    )));
                }
                Entry::Name(name)
            };
            entries.push(entry);
        }
        let root = match root {
            Some(dir) => Some(
                std::fs::canonicalize(dir)
                    .map_err(|e| Error::invalid(format!("DOCUMENT_ROOT {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        Ok(Self { entries, root })
    }

    fn listed_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.entries.iter().any(|e| match e {
            Entry::Net(net, prefix) => in_net(ip, canonical_ip(*net), *prefix),
            Entry::Name(_) => false,
        })
    }

    fn listed_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Name(n) if *n == name))
    }

    /// Whether the fetcher may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> std::result::Result<(), Refused> {
        match special_range(ip) {
            Some(kind) if !self.listed_ip(ip) => Err(Refused(format!(
                "address {ip} is {kind} and not listed in DOCUMENT_ALLOWED_HOSTS"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether an http(s) URL (first request or redirect target) may be
    /// requested. Names are checked against the list here and their
    /// addresses in the resolver.
    pub fn check_url(&self, url: &Url) -> std::result::Result<(), Refused> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Refused(format!("scheme {other:?} is not allowed"))),
        }
        match url.host() {
            None => Err(Refused("URL has no host".into())),
            Some(Host::Domain(name)) => {
                if self.listed_name(name) {
                    Ok(())
                } else {
                    Err(Refused(format!(
                        "host {name} is not in DOCUMENT_ALLOWED_HOSTS"
                    )))
                }
            }
            Some(Host::Ipv4(v4)) => self.check_literal(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => self.check_literal(IpAddr::V6(v6)),
        }
    }

    fn check_literal(&self, ip: IpAddr) -> std::result::Result<(), Refused> {
        if !self.listed_ip(ip) {
            return Err(Refused(format!(
                "host {ip} is not in DOCUMENT_ALLOWED_HOSTS"
            )));
        }
        self.check_ip(ip)
    }

    /// The file a `file://` URL names, if it is a regular file under
    /// `DOCUMENT_ROOT` once every symlink and `..` is resolved.
    pub fn check_file(&self, url: &Url) -> std::result::Result<PathBuf, Refused> {
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| Refused("file:// documents need DOCUMENT_ROOT".into()))?;
        if url.host().is_some_and(|h| h.to_string() != "localhost") {
            return Err(Refused("file:// URLs must not name a host".into()));
        }
        let path = url
            .to_file_path()
            .map_err(|_| Refused("not a usable file path".into()))?;
        let real = std::fs::canonicalize(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Refused("file not found".into()),
            _ => Refused(format!("cannot resolve the file: {}", e.kind())),
        })?;
        if !real.starts_with(root) {
            return Err(Refused("file is outside DOCUMENT_ROOT".into()));
        }
        if !real.is_file() {
            return Err(Refused("not a regular file".into()));
        }
        Ok(real)
    }
}

/// Opens `path` for reading without ever blocking on it (a FIFO or device
/// swapped in after a check would otherwise hang the open), and keeps it only
/// when what was opened is a regular file. `O_NONBLOCK` has no effect on
/// reading a regular file.
pub fn open_regular(path: &Path) -> std::result::Result<std::fs::File, Refused> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Refused(format!("cannot open the file: {}", e.kind())))?;
    let metadata = file
        .metadata()
        .map_err(|e| Refused(format!("cannot check the opened file: {}", e.kind())))?;
    if !metadata.is_file() {
        return Err(Refused("not a regular file".into()));
    }
    Ok(file)
}

impl Policy {
    /// Checks a `file://` URL, opens the file and checks what was opened
    /// (blocking: call it off the async runtime's workers).
    pub fn open_file(&self, url: &Url) -> std::result::Result<(std::fs::File, PathBuf), Refused> {
        let path = self.check_file(url)?;
        let file = open_regular(&path)?;
        // The path was checked before it was opened; make sure what was
        // opened is still inside the root (a directory swapped for a
        // symlink in between would otherwise lead out).
        self.check_opened(&file)?;
        Ok((file, path))
    }

    /// Whether an opened file really is under `DOCUMENT_ROOT`, by what the
    /// kernel says the descriptor points at (Linux; elsewhere the path check
    /// before opening stands alone).
    pub fn check_opened(&self, file: &std::fs::File) -> std::result::Result<(), Refused> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let root = self
                .root
                .as_ref()
                .ok_or_else(|| Refused("file:// documents need DOCUMENT_ROOT".into()))?;
            let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map_err(|e| Refused(format!("cannot check the opened file: {}", e.kind())))?;
            if !opened.starts_with(root) {
                return Err(Refused("file is outside DOCUMENT_ROOT".into()));
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses compare as their IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The HTTP client's DNS resolver: resolves with the system resolver and
/// keeps only addresses the policy allows, so a name that (now) points at a
/// private address is refused however it got there.
pub struct GuardedResolver {
    pub policy: Arc<Policy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                .collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(r) => {
                        refused.get_or_insert(r);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let reason = match refused {
                    Some(Refused(why)) => Refused(format!("{host} resolves to {why}")),
                    None => Refused(format!("{host} has no address")),
                };
                return Err(Box::new(reason) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> Policy {
        Policy::new(
            &list.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            None,
        )
        .unwrap()
    }

    #[test]
    fn special_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.200",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:ffff::7f00:1",
            "64:ff9b:1::c0a8:101",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            "::ffff:0:a9fe:a9fe",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(special_range(ip).is_some(), "{ip} is special");
        }
        for ip in [
            "8.8.8.8",
            "151.101.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b:1::808:808",
            "::ffff:0:808:808",
            "100:0:0:1::1",
            "2001:4860:4860::8888",
            "198.51.101.1",
            "203.0.114.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(special_range(ip).is_none(), "{ip} is public");
        }
    }

    #[test]
    fn hosts_and_literal_ips() {
        let p = policy(&["res.cloudinary.com", "127.0.0.1"]);
        let ok = |u: &str| p.check_url(&Url::parse(u).unwrap()).is_ok();
        assert!(ok("https://RES.cloudinary.com/x/raw/upload/a.pdf"));
        assert!(ok("http://127.0.0.1:8080/a"));
        assert!(!ok("https://evil.example/a"));
        assert!(!ok("https://res.cloudinary.com.evil.example/a"));
        assert!(!ok("http://127.0.0.2/a"));
        assert!(!ok("http://[::1]/a"));
        assert!(!ok("ftp://res.cloudinary.com/a"));
        // Listed IP unlocks its mapped form too; a name never unlocks an address.
        assert!(p.check_ip("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        let names_only = policy(&["localhost"]);
        assert!(names_only.check_ip("127.0.0.1".parse().unwrap()).is_err());
        assert!(
            names_only
                .check_ip("93.184.216.34".parse().unwrap())
                .is_ok()
        );
        let net = policy(&["10.0.0.0/8"]);
        assert!(net.check_ip("10.9.9.9".parse().unwrap()).is_ok());
        assert!(net.check_ip("192.168.0.1".parse().unwrap()).is_err());
        assert!(Policy::new(&["bad host!".into()], None).is_err());
        assert!(Policy::new(&["10.0.0.0/40".into()], None).is_err());
    }

    #[test]
    fn files_stay_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.pdf"), b"a").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let p = Policy::new(&[], Some(&root)).unwrap();
        let file = |path: &Path| Url::from_file_path(path).unwrap();
        let real = p.check_file(&file(&root.join("sub/a.pdf"))).unwrap();
        assert!(p.check_opened(&std::fs::File::open(real).unwrap()).is_ok());
        let secret = std::fs::File::open(dir.path().join("secret")).unwrap();
        assert!(p.check_opened(&secret).is_err());
        let escape = Url::parse(&format!("file://{}/sub/../../secret", root.display())).unwrap();
        assert!(p.check_file(&escape).is_err());
        assert!(p.check_file(&file(&root.join("link"))).is_err());
        assert!(p.check_file(&file(&dir.path().join("secret"))).is_err());
        assert!(p.check_file(&file(&root.join("sub"))).is_err());
        let none = Policy::new(&[], None).unwrap();
        assert!(none.check_file(&file(&root.join("sub/a.pdf"))).is_err());
        let (_, path) = p.open_file(&file(&root.join("sub/a.pdf"))).unwrap();
        assert!(path.ends_with("sub/a.pdf"));
    }

    #[test]
    fn opening_a_fifo_neither_blocks_nor_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("swapped.pdf");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opened directly, as after a check that saw a regular file: a
        // blocking open would wait for a writer forever.
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open_regular(&path).map(|_| ()));
        });
        let opened = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("opening a FIFO must not block");
        let refused = opened.unwrap_err();
        assert!(refused.0.contains("not a regular file"), "{refused}");
        let p = Policy::new(&[], Some(dir.path())).unwrap();
        assert!(p.open_file(&Url::from_file_path(&fifo).unwrap()).is_err());
    }
}
