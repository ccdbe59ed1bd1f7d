//! Applying a [`Policy`] to a socket and reading back what the kernel holds.
//!
//! The options, as `net/ipv4/tcp.c` and `net/core/sock.c` treat them:
//!
//! - `SO_KEEPALIVE` arms the keepalive timer (`tcp_set_keepalive()`); off, nothing is probed.
//! - `TCP_KEEPIDLE` (1..=32767 s) sets the idle time; on a socket that already has keepalive on
//!   it re-arms the timer for the remaining idle time at once.
//! - `TCP_KEEPINTVL` (1..=32767 s) and `TCP_KEEPCNT` (1..=127) set the probe spacing and count.
//! - `TCP_USER_TIMEOUT` (ms, 0 = off) caps how long sent data may stay unacknowledged and, on an
//!   idle connection, replaces the probe count (see [`crate::policy::timeline`]).
//!
//! Reading `TCP_KEEPIDLE`, `TCP_KEEPINTVL` or `TCP_KEEPCNT` returns the value in force: the
//! socket's own when it set one, the namespace's sysctl otherwise. An accepted socket starts
//! with a copy of its listener's options, `SO_KEEPALIVE` included (`sk_clone_lock()`,
//! `inet_csk_clone_lock()`).

use crate::error::Error;
use crate::policy::{Policy, Settings};
use rustix::net::sockopt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

/// A socket's keepalive state as the kernel holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SocketKeepalive {
    /// `SO_KEEPALIVE`.
    pub enabled: bool,
    /// The values in force (the socket's own, or the namespace's defaults).
    pub settings: Settings,
}

fn fail(fd: BorrowedFd<'_>, option: &'static str) -> impl FnOnce(rustix::io::Errno) -> Error {
    let fd = fd.as_raw_fd();
    move |errno| Error::Socket {
        option,
        fd,
        source: io::Error::from(errno),
    }
}

/// Reads `SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT` and `TCP_USER_TIMEOUT`.
pub fn read(fd: impl AsFd) -> Result<SocketKeepalive, Error> {
    let fd = fd.as_fd();
    let secs = |d: Duration| d.as_secs() as u32;
    Ok(SocketKeepalive {
        enabled: sockopt::socket_keepalive(fd).map_err(fail(fd, "SO_KEEPALIVE"))?,
        settings: Settings {
            idle: secs(sockopt::tcp_keepidle(fd).map_err(fail(fd, "TCP_KEEPIDLE"))?),
            interval: secs(sockopt::tcp_keepintvl(fd).map_err(fail(fd, "TCP_KEEPINTVL"))?),
            count: sockopt::tcp_keepcnt(fd).map_err(fail(fd, "TCP_KEEPCNT"))?,
            user_timeout_ms: sockopt::tcp_user_timeout(fd).map_err(fail(fd, "TCP_USER_TIMEOUT"))?,
        },
    })
}

/// Turns keepalive on with the policy's values; keys the policy leaves out keep the values in
/// force. If any option fails, the ones already set are put back and the error says which
/// option failed. Returns the state read back afterwards.
pub fn apply(fd: impl AsFd, policy: &Policy) -> Result<SocketKeepalive, Error> {
    let fd = fd.as_fd();
    let before = read(fd)?;
    let target = SocketKeepalive {
        enabled: true,
        settings: policy.resolve(&before.settings)?,
    };
    if let Err(e) = write(fd, &target) {
        // Best effort: the error that matters is the first one.
        let _ = write(fd, &before);
        return Err(e);
    }
    read(fd)
}

/// Sets every option to `state`: the values first, then `SO_KEEPALIVE`, so that the timer
/// starts with the new idle time. One setsockopt per option.
fn write(fd: BorrowedFd<'_>, state: &SocketKeepalive) -> Result<(), Error> {
    let s = &state.settings;
    let secs = |n: u32| Duration::from_secs(n.into());
    sockopt::set_tcp_keepidle(fd, secs(s.idle)).map_err(fail(fd, "TCP_KEEPIDLE"))?;
    sockopt::set_tcp_keepintvl(fd, secs(s.interval)).map_err(fail(fd, "TCP_KEEPINTVL"))?;
    sockopt::set_tcp_keepcnt(fd, s.count).map_err(fail(fd, "TCP_KEEPCNT"))?;
    sockopt::set_tcp_user_timeout(fd, s.user_timeout_ms).map_err(fail(fd, "TCP_USER_TIMEOUT"))?;
    sockopt::set_socket_keepalive(fd, state.enabled).map_err(fail(fd, "SO_KEEPALIVE"))
}
