//! Works around sqlx 0.9.0 leaving Nagle's algorithm on for PostgreSQL
//! connections (fixed upstream after that release): every small message
//! that follows another one waits for a delayed ACK, ~40 ms per COPY
//! statement. sqlx does not expose its sockets, so after each new
//! connection every TCP socket of this process gets TCP_NODELAY. That is
//! what the servers (tonic, hyper) set on theirs anyway.

/// Sets TCP_NODELAY on all TCP sockets of the process; failures (non-TCP
/// descriptors, descriptors closed meanwhile) are ignored.
#[cfg(target_os = "linux")]
pub fn set_on_tcp_sockets() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .map(|target| target.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let on: libc::c_int = 1;
        // SAFETY: setsockopt only reads `on`; on a descriptor that is not a
        // TCP socket (or no longer open) it fails with an error we ignore.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn set_on_tcp_sockets() {}
