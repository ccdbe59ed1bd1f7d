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
use crate::policy::{Key, Policy, Settings};
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

impl SocketKeepalive {
    /// Whether this is `policy` in force: keepalive on, and every key the policy sets at its
    /// value.
    pub fn holds(&self, policy: &Policy) -> bool {
        self.enabled
            && policy
                .resolve(&self.settings)
                .is_ok_and(|s| s == self.settings)
    }
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
            // An MPTCP socket has no TCP_USER_TIMEOUT (EOPNOTSUPP): none is in force.
            user_timeout_ms: match sockopt::tcp_user_timeout(fd) {
                Err(rustix::io::Errno::OPNOTSUPP) => 0,
                other => other.map_err(fail(fd, "TCP_USER_TIMEOUT"))?,
            },
        },
    })
}

/// Turns keepalive on with the policy's values; keys the policy leaves out keep the values in
/// force. If any option fails, the ones already set are put back and the error says which
/// option failed. Returns the state read back afterwards.
pub fn apply(fd: impl AsFd, policy: &Policy) -> Result<SocketKeepalive, Error> {
    let fd = fd.as_fd();
    let before = read(fd)?;
    apply_over(fd, &before, policy)
}

/// [`apply`] for a socket whose current state the caller has just read. Sets only the options
/// the policy gives (and SO_KEEPALIVE when it is off), one setsockopt each, values first so
/// that the timer starts with the new idle time.
pub fn apply_over(
    fd: impl AsFd,
    before: &SocketKeepalive,
    policy: &Policy,
) -> Result<SocketKeepalive, Error> {
    let fd = fd.as_fd();
    let target = policy.resolve(&before.settings)?;
    let options = [
        (Key::Idle, Opt::Idle, target.idle),
        (Key::Interval, Opt::Interval, target.interval),
        (Key::Count, Opt::Count, target.count),
        (Key::UserTimeout, Opt::UserTimeout, target.user_timeout_ms),
    ];
    let mut done: Vec<Opt> = Vec::new();
    let mut steps = options
        .iter()
        .filter(|(k, _, _)| policy.has(*k))
        .map(|&(_, o, v)| (o, v))
        .collect::<Vec<_>>();
    if !before.enabled {
        steps.push((Opt::Keepalive, 1));
    }
    for (opt, value) in steps {
        if let Err(e) = opt.set(fd, value) {
            // Best effort: the error that matters is the first one.
            for undo in done.iter().rev() {
                let _ = undo.set(fd, undo.get(before));
            }
            return Err(e);
        }
        done.push(opt);
    }
    read(fd)
}

/// Switches keepalive off (SO_KEEPALIVE 0), leaving the values; returns the state after.
pub fn switch_off(fd: impl AsFd) -> Result<SocketKeepalive, Error> {
    let fd = fd.as_fd();
    Opt::Keepalive.set(fd, 0)?;
    read(fd)
}

/// One keepalive option.
#[derive(Debug, Clone, Copy)]
enum Opt {
    Idle,
    Interval,
    Count,
    UserTimeout,
    Keepalive,
}

impl Opt {
    fn get(self, state: &SocketKeepalive) -> u32 {
        let s = &state.settings;
        match self {
            Opt::Idle => s.idle,
            Opt::Interval => s.interval,
            Opt::Count => s.count,
            Opt::UserTimeout => s.user_timeout_ms,
            Opt::Keepalive => u32::from(state.enabled),
        }
    }

    fn set(self, fd: BorrowedFd<'_>, value: u32) -> Result<(), Error> {
        let secs = Duration::from_secs(value.into());
        match self {
            Opt::Idle => sockopt::set_tcp_keepidle(fd, secs).map_err(fail(fd, "TCP_KEEPIDLE")),
            Opt::Interval => {
                sockopt::set_tcp_keepintvl(fd, secs).map_err(fail(fd, "TCP_KEEPINTVL"))
            }
            Opt::Count => sockopt::set_tcp_keepcnt(fd, value).map_err(fail(fd, "TCP_KEEPCNT")),
            Opt::UserTimeout => {
                sockopt::set_tcp_user_timeout(fd, value).map_err(fail(fd, "TCP_USER_TIMEOUT"))
            }
            Opt::Keepalive => {
                sockopt::set_socket_keepalive(fd, value != 0).map_err(fail(fd, "SO_KEEPALIVE"))
            }
        }
    }
}
