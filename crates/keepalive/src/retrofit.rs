//! Reaching into another process's sockets: its socket descriptors from /proc, and duplicates
//! of them through `pidfd_getfd(2)` (Linux 5.6). A duplicate is the same socket, so options
//! read or set on it are the target's own, and a listener changed this way passes its options
//! to the connections it accepts later. Duplicating needs ptrace-attach permission over the
//! target (`PTRACE_MODE_ATTACH_REALCREDS`): the same user, within what Yama's ptrace_scope
//! allows, or CAP_SYS_PTRACE. Every duplicate is closed before the function that made it
//! returns.

use crate::error::Error;
use crate::policy::Policy;
use crate::socket::{self, SocketKeepalive};
use rustix::fd::OwnedFd;
use rustix::net::{AddressFamily, sockopt};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
use std::io;
use std::net::SocketAddr;

/// The descriptors of `pid` that are sockets, with their inode numbers, in descriptor order.
pub fn socket_fds(pid: u32) -> Result<Vec<(i32, u64)>, Error> {
    let mut out = Vec::new();
    for fd in fd_numbers(pid)? {
        // The process may close it meanwhile: skip what vanished.
        let Ok(target) = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")) else {
            continue;
        };
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'));
        if let Some(Ok(inode)) = inode.map(str::parse) {
            out.push((fd, inode));
        }
    }
    Ok(out)
}

/// A handle on another process, for duplicating its descriptors.
pub struct Process {
    pid: u32,
    pidfd: OwnedFd,
}

impl Process {
    /// Opens a pidfd for `pid`, once [`crate::process::check`] says it is a process.
    pub fn open(pid: u32) -> Result<Process, Error> {
        crate::process::check(u64::from(pid))?;
        let target = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or(Error::NoSuchProcess(pid))?;
        let pidfd = pidfd_open(target, PidfdFlags::empty()).map_err(|e| match e {
            rustix::io::Errno::SRCH => Error::NoSuchProcess(pid),
            e => Error::Io {
                what: format!("pidfd_open({pid})"),
                source: e.into(),
            },
        })?;
        Ok(Process { pid, pidfd })
    }

    /// Whether the process still runs: a pidfd turns readable when its process exits.
    pub fn alive(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(poll(&mut fds, Some(&now)), Ok(0))
    }

    /// A duplicate of the process's descriptor `fd`. `Ok(None)` when the process closed it or
    /// exited meanwhile.
    pub fn duplicate(&self, fd: i32) -> Result<Option<OwnedFd>, Error> {
        if fd < 0 {
            // No descriptor has a negative number (and rustix asserts it).
            return Ok(None);
        }
        match pidfd_getfd(&self.pidfd, fd, PidfdGetfdFlags::empty()) {
            Ok(dup) => Ok(Some(dup)),
            Err(rustix::io::Errno::BADF | rustix::io::Errno::SRCH) => Ok(None),
            Err(rustix::io::Errno::PERM) => Err(crate::process::ptrace_denied(
                self.pid,
                io::Error::from_raw_os_error(libc_eperm()),
            )),
            Err(e) => Err(Error::Io {
                what: format!("pidfd_getfd(pid {}, fd {fd})", self.pid),
                source: e.into(),
            }),
        }
    }
}

fn libc_eperm() -> i32 {
    rustix::io::Errno::PERM.raw_os_error()
}

/// A duplicate of descriptor `fd` of process `pid`, owned by the caller.
pub fn duplicate(pid: u32, fd: i32) -> Result<OwnedFd, Error> {
    Process::open(pid)?
        .duplicate(fd)?
        .ok_or(Error::NoSuchProcess(pid))
}

/// One TCP socket of a process, with its keepalive state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ProcessSocket {
    pub fd: i32,
    pub local: Option<SocketAddr>,
    /// `None` for a listener or an unconnected socket.
    pub peer: Option<SocketAddr>,
    pub listening: bool,
    /// A Multipath TCP socket (IPPROTO_MPTCP: Go 1.24's listeners where the kernel has
    /// net.mptcp.enabled): its keepalive options go to every subflow
    /// (net/mptcp/sockopt.c), but it takes no TCP_USER_TIMEOUT.
    pub mptcp: bool,
    pub keepalive: SocketKeepalive,
}

/// `IPPROTO_MPTCP` (include/uapi/linux/in.h).
const IPPROTO_MPTCP: i32 = 262;

/// Whether a duplicate is a TCP socket: protocol TCP or MPTCP (which only AF_INET and AF_INET6
/// stream sockets have; anything that is not a socket fails the first call) in an IP family.
pub(crate) fn is_tcp(fd: &OwnedFd) -> bool {
    let protocol = sockopt::socket_protocol(fd).ok().flatten();
    (protocol == Some(rustix::net::ipproto::TCP) || is_mptcp_protocol(protocol))
        && matches!(
            sockopt::socket_domain(fd),
            Ok(AddressFamily::INET | AddressFamily::INET6)
        )
}

/// How many TCP sockets of `pid` live in another network namespace than the one with inode
/// `netns_inode` (a process may create sockets, then setns() elsewhere and create more):
/// SIOCGSKNS (net/socket.c) gives a socket's namespace. `None` when the process cannot be
/// looked into (it is then not ours to count).
pub fn sockets_outside(pid: u32, netns_inode: u64) -> Option<usize> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    let process = Process::open(pid).ok()?;
    let mut outside = 0;
    for fd in fd_numbers(pid).ok()? {
        let Ok(Some(dup)) = process.duplicate(fd) else {
            continue;
        };
        if !is_tcp(&dup) {
            continue;
        }
        // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor, owned here.
        let ns = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dup), SIOCGSKNS) };
        if ns < 0 {
            continue;
        }
        // SAFETY: `ns` is the descriptor the ioctl just returned, closed with the OwnedFd.
        let ns = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ns) };
        if rustix::fs::fstat(&ns).is_ok_and(|st| st.st_ino != netns_inode) {
            outside += 1;
        }
    }
    Some(outside)
}

fn is_mptcp_protocol(protocol: Option<rustix::net::Protocol>) -> bool {
    protocol.is_some_and(|p| p.as_raw().get() as i32 == IPPROTO_MPTCP)
}

/// The descriptor numbers of `pid`, sorted (a directory listing, no per-descriptor system call).
pub fn fd_numbers(pid: u32) -> Result<Vec<i32>, Error> {
    let dir = format!("/proc/{pid}/fd");
    let read = std::fs::read_dir(&dir).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::NoSuchProcess(pid),
        io::ErrorKind::PermissionDenied => crate::process::ptrace_denied(pid, source),
        _ => Error::Io {
            what: dir.clone(),
            source,
        },
    })?;
    let mut fds: Vec<i32> = read
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

fn describe(fd: i32, dup: &OwnedFd) -> Result<ProcessSocket, Error> {
    let local = rustix::net::getsockname(dup)
        .ok()
        .and_then(|a| SocketAddr::try_from(a).ok());
    let peer = rustix::net::getpeername(dup)
        .ok()
        .flatten()
        .and_then(|a| SocketAddr::try_from(a).ok());
    let listening = sockopt::socket_acceptconn(dup).unwrap_or(false);
    Ok(ProcessSocket {
        fd,
        local,
        peer,
        listening,
        mptcp: is_mptcp_protocol(sockopt::socket_protocol(dup).ok().flatten()),
        keepalive: socket::read(dup)?,
    })
}

/// Every TCP socket of `pid`, read through duplicates.
pub fn sockets(pid: u32) -> Result<Vec<ProcessSocket>, Error> {
    let process = Process::open(pid)?;
    let mut out = Vec::new();
    for fd in fd_numbers(pid)? {
        let Some(dup) = process.duplicate(fd)? else {
            continue;
        };
        if is_tcp(&dup) {
            out.push(describe(fd, &dup)?);
        }
    }
    // A process exiting meanwhile closes its descriptors: the list is not the process's.
    if !process.alive() || crate::process::exiting(pid) {
        return Err(Error::Exited(pid));
    }
    Ok(out)
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    /// One entry per TCP socket seen.
    pub changes: Vec<Retrofit>,
    /// The process exited while its sockets were being changed, or right after: what was
    /// changed went with it.
    pub exited: bool,
    /// Ports of listeners changed whose accepted connections carry keepalive settings other
    /// than the listener's: the kernel copies a listener's options to what it accepts, so the
    /// program sets its own on each (Go's net.ListenConfig, redis's tcp-keepalive, haproxy's
    /// clitcpka do), and new connections will not get the policy from the listener.
    pub sets_its_own: Vec<u16>,
}

/// What `apply` does to each socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Keepalive on, with the policy's options (an empty policy keeps the socket's values).
    On(Policy),
    /// Keepalive off (SO_KEEPALIVE 0); the values stay for whoever turns it on again.
    Off,
}

impl Change {
    /// The state [`apply`] leaves a socket in that holds `before` now: what a dry run shows.
    pub fn outcome(&self, before: &SocketKeepalive) -> Result<SocketKeepalive, Error> {
        Ok(match self {
            Change::On(policy) => SocketKeepalive {
                enabled: true,
                settings: policy.resolve(&before.settings)?,
            },
            Change::Off => SocketKeepalive {
                enabled: false,
                ..*before
            },
        })
    }
}

/// Which sockets `apply` changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One descriptor; an error if it is not a TCP socket.
    Fd(i32),
    /// Every TCP socket, listeners included.
    All,
    /// These descriptors, those that are TCP sockets.
    Fds(Vec<i32>),
}

/// What `apply` did to one socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Retrofit {
    pub socket: ProcessSocket,
    /// The state afterwards; `None` on a dry run, or when the socket vanished meanwhile.
    pub after: Option<SocketKeepalive>,
    /// Why the socket was not changed, when it was not.
    pub skipped: Option<String>,
}

/// Makes `change` to the selected sockets of `pid` (or, with `dry_run`, only reads them).
/// A socket the process closes meanwhile is reported, not an error.
pub fn apply(
    pid: u32,
    selection: Selection,
    change: &Change,
    dry_run: bool,
) -> Result<Report, Error> {
    let process = Process::open(pid)?;
    let one = match selection {
        Selection::Fd(fd) => Some(fd),
        _ => None,
    };
    let fds: Vec<i32> = match selection {
        Selection::Fd(fd) => vec![fd],
        Selection::All => fd_numbers(pid)?,
        Selection::Fds(fds) => fds,
    };
    let mut out = Vec::new();
    if !dry_run {
        // The change begins: a signal waits until it is made and reported.
        crate::signals::hold_until_released();
    }
    for fd in fds {
        let Some(dup) = process.duplicate(fd)? else {
            if one == Some(fd) {
                return Err(Error::NotATcpSocket {
                    pid,
                    fd,
                    what: "not open",
                });
            }
            continue;
        };
        if !is_tcp(&dup) {
            if one == Some(fd) {
                return Err(Error::NotATcpSocket {
                    pid,
                    fd,
                    what: "not a TCP socket",
                });
            }
            continue;
        }
        let socket = describe(fd, &dup)?;
        if socket.mptcp && matches!(change, Change::On(p) if p.has(crate::policy::Key::UserTimeout))
        {
            out.push(Retrofit {
                socket,
                after: None,
                skipped: Some(
                    "an MPTCP socket takes no TCP_USER_TIMEOUT (net/mptcp/sockopt.c): give the \
                     policy without user-timeout"
                        .into(),
                ),
            });
            continue;
        }
        if dry_run {
            out.push(Retrofit {
                socket,
                after: None,
                skipped: Some("dry run".into()),
            });
            continue;
        }
        let done = match change {
            Change::On(policy) => socket::apply_over(&dup, &socket.keepalive, policy),
            Change::Off => socket::switch_off(&dup),
        };
        match done {
            Ok(after) => out.push(Retrofit {
                socket,
                after: Some(after),
                skipped: None,
            }),
            Err(e) => out.push(Retrofit {
                socket,
                after: None,
                skipped: Some(e.to_string()),
            }),
        }
    }
    let sets_its_own = sets_its_own(pid, &process, &out);
    Ok(Report {
        changes: out,
        exited: !process.alive() || crate::process::exiting(pid),
        sets_its_own,
    })
}

/// The ports of the listeners in `changes` whose accepted connections (the process's sockets
/// on the listener's local port) hold keepalive settings other than the listener had.
fn sets_its_own(pid: u32, process: &Process, changes: &[Retrofit]) -> Vec<u16> {
    let listeners: Vec<&ProcessSocket> = changes
        .iter()
        .map(|c| &c.socket)
        .filter(|s| s.listening)
        .collect();
    if listeners.is_empty() {
        return Vec::new();
    }
    // Every connection as it was before the change: from `changes` where it was changed,
    // read now where it was not selected.
    let mut accepted: Vec<ProcessSocket> = changes
        .iter()
        .map(|c| c.socket.clone())
        .filter(|s| !s.listening)
        .collect();
    for fd in fd_numbers(pid).unwrap_or_default() {
        if changes.iter().any(|c| c.socket.fd == fd) {
            continue;
        }
        if let Ok(Some(dup)) = process.duplicate(fd)
            && is_tcp(&dup)
            && let Ok(s) = describe(fd, &dup)
            && !s.listening
        {
            accepted.push(s);
        }
    }
    let mut ports: Vec<u16> = listeners
        .iter()
        .filter_map(|l| {
            let port = l.local?.port();
            accepted
                .iter()
                .filter(|a| a.local.is_some_and(|a| a.port() == port))
                .any(|a| a.keepalive != l.keepalive)
                .then_some(port)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
