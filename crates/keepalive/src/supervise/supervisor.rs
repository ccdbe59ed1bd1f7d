//! The supervisor: answers every call the filter traps.
//!
//! For each notification it finds the trapped thread, duplicates the socket the call is about
//! (pidfd_getfd(2), Linux 5.6: the same socket, so options set on the duplicate are the
//! program's own), decides, and answers. connect and listen are always let run
//! (SECCOMP_USER_NOTIF_FLAG_CONTINUE, Linux 5.5: the kernel then executes the call as if the
//! filter had allowed it); an owned setsockopt under force mode is answered "success" without
//! running. Whatever fails on the way, the answer is CONTINUE: the program never waits on the
//! supervisor's trouble and never sees an error the kernel itself would not have given.

use super::filter::owned_options;
use super::sys;
use crate::policy::grammar::{Log, Mode};
use crate::policy::injection::Injection;
use crate::retrofit::is_tcp;
use crate::socket;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::sockopt;
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What to tell the kernel about a trapped call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Run the call (SECCOMP_USER_NOTIF_FLAG_CONTINUE).
    Continue,
    /// Return 0 without running it.
    Success,
}

/// The supervisor's state: the listener, what to apply, and to whom.
pub struct Supervisor {
    listener: OwnedFd,
    injection: Injection,
    /// With `inherit=no`, only this thread group (the program itself) is acted on.
    only: Option<u32>,
}

impl Supervisor {
    /// A supervisor for the program `leader` (its pid), answering on `listener`.
    pub fn new(listener: OwnedFd, injection: Injection, leader: u32) -> Supervisor {
        let only = (!injection.inherit).then_some(leader);
        Supervisor {
            listener,
            injection,
            only,
        }
    }

    /// Answers notifications until the listener reports POLLHUP: the kernel does that once no
    /// task uses the filter any more (kernel/seccomp.c, `seccomp_notify_poll`), so the program
    /// and everything it started have exited. An error the loop cannot get past ends it too;
    /// the program's later trapped calls then fail with ENOSYS, as after the launcher's death.
    pub fn serve(self) {
        let sizes = match sys::notif_sizes() {
            Ok(sizes) => sizes,
            Err(_) => return,
        };
        let mut buf = sys::notif_buffer(sizes.seccomp_notif);
        loop {
            let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(_) => return,
            }
            let revents = fds[0].revents();
            if !revents.contains(PollFlags::IN) {
                if revents.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                    return;
                }
                continue;
            }
            let notif = match sys::recv(self.listener.as_fd(), &mut buf) {
                Ok(n) => n,
                // Interrupted before we read it (ENOENT), or raced with another reader.
                Err(Errno::NOENT | Errno::INTR | Errno::AGAIN) => continue,
                Err(_) => return,
            };
            let answer = self.decide(&notif);
            let resp = libc::seccomp_notif_resp {
                id: notif.id,
                val: 0,
                error: 0,
                flags: match answer {
                    Answer::Continue => libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                    Answer::Success => 0,
                },
            };
            // ENOENT: the call was interrupted meanwhile; the kernel restarts or fails it
            // without us.
            let _ = sys::send(self.listener.as_fd(), &resp);
        }
    }

    fn valid(&self, id: u64) -> bool {
        sys::id_valid(self.listener.as_fd(), id)
    }

    fn decide(&self, notif: &libc::seccomp_notif) -> Answer {
        if !self.injection.enabled || notif.pid == 0 {
            return Answer::Continue;
        }
        let Some(task) = Task::open(notif.pid, self.only.is_some()) else {
            return Answer::Continue;
        };
        // The thread could have died and its id been reused before pidfd_open: a call still
        // pending means the pidfd is for the thread that made it.
        if !self.valid(notif.id) {
            return Answer::Continue;
        }
        if self.only.is_some() && task.tgid != self.only {
            return Answer::Continue;
        }
        let args = notif.data.args;
        // The descriptor is an int: the kernel ignores the register's high half.
        let fd = args[0] as u32 as i32;
        let Ok(dup) = pidfd_getfd(&task.pidfd, fd, PidfdGetfdFlags::empty()) else {
            return Answer::Continue;
        };
        if !is_tcp(&dup) {
            return Answer::Continue;
        }
        let nr = i64::from(notif.data.nr);
        let log = Logger {
            injection: &self.injection,
            pid: notif.pid,
            fd,
        };
        if nr == libc::SYS_connect {
            let matches = !self.injection.is_filtered()
                || self
                    .peer_of(notif, args[1], args[2])
                    .is_some_and(|peer| self.injection.matches_remote(peer.ip(), peer.port()));
            if matches {
                self.apply(&dup, "connect", &log);
            }
        } else if let Some(name) = fast_open_name(nr, &args) {
            // TCP Fast Open: the kernel connects an unconnected socket to the name given; on a
            // connected one (its peer known) the send is only a send.
            let unconnected = rustix::net::getpeername(&dup) == Err(Errno::NOTCONN);
            let matches = || {
                !self.injection.is_filtered()
                    || self
                        .message_name(notif, name)
                        .and_then(|(addr, len)| self.peer_of(notif, addr, len))
                        .is_some_and(|peer| self.injection.matches_remote(peer.ip(), peer.port()))
            };
            if unconnected && matches() {
                self.apply(&dup, "fast open", &log);
            }
        } else if nr == libc::SYS_listen {
            let matches = !self.injection.is_filtered()
                || local_port(&dup).is_some_and(|port| self.injection.matches_local(port));
            if matches {
                self.apply(&dup, "listen", &log);
            }
        } else if nr == libc::SYS_setsockopt {
            let (level, opt) = (args[1] as u32 as i32, args[2] as u32 as i32);
            if self.injection.mode == Mode::Force
                && owned_options(&self.injection).any(|o| o == (level, opt))
                && self.manages(&dup)
            {
                log.line(format_args!(
                    "setsockopt {} ignored (mode=force)",
                    option_name(level, opt)
                ));
                return Answer::Success;
            }
        }
        Answer::Continue
    }

    /// Turns the policy on, unless (default mode) the program already turned keepalive on
    /// itself: its own choice wins, as with the shim.
    fn apply(&self, dup: &OwnedFd, call: &str, log: &Logger<'_>) {
        if self.injection.mode != Mode::Force && sockopt::socket_keepalive(dup).unwrap_or(true) {
            log.line(format_args!(
                "{call}: keepalive already on, the program's own settings kept"
            ));
            return;
        }
        match socket::apply(dup, &self.injection.policy) {
            Ok(after) => log.line(format_args!(
                "{call}: keepalive on, idle={}s,interval={}s,count={},user-timeout={}ms",
                after.settings.idle,
                after.settings.interval,
                after.settings.count,
                after.settings.user_timeout_ms
            )),
            Err(e) => log.line(format_args!("{call}: {e}")),
        }
    }

    /// Whether a socket is one the policy covers, for force mode: every TCP socket without
    /// filters (a socket not yet connected or listening gets the policy over the program's
    /// values at connect or listen). With filters, only a socket that holds the policy now: the
    /// supervisor put it there at connect or listen, or the socket was accepted from a listener
    /// that holds it. An accepted socket whose listener the filters left alone is the
    /// program's, though its peer may match `dest` (a filter for the connections it makes).
    fn manages(&self, dup: &OwnedFd) -> bool {
        if !self.injection.is_filtered() {
            return true;
        }
        socket::read(dup).is_ok_and(|state| state.holds(&self.injection.policy))
    }

    /// The destination a Fast Open send names: sendto's own arguments, or the name in the
    /// (first) message header, read from the program's memory.
    fn message_name(&self, notif: &libc::seccomp_notif, name: Name) -> Option<(u64, u64)> {
        match name {
            Name::Direct(addr, len) => Some((addr, len)),
            Name::InHeader(header) => {
                // struct msghdr begins { void *msg_name; socklen_t msg_namelen; ... }, and
                // struct mmsghdr begins with a msghdr.
                let mut raw = [0u8; 12];
                let n = sys::read_memory(notif.pid, header, &mut raw).ok()?;
                if n != raw.len() {
                    return None;
                }
                let addr = u64::from_ne_bytes(raw.get(0..8)?.try_into().ok()?);
                let len = u32::from_ne_bytes(raw.get(8..12)?.try_into().ok()?);
                Some((addr, u64::from(len)))
            }
        }
    }

    /// The address a trapped connect() is for, read from the program's memory: at most a
    /// sockaddr_in6, and only if the call is still pending after the read (the memory was
    /// the caller's at the time of the call, not some later reuse).
    fn peer_of(&self, notif: &libc::seccomp_notif, addr: u64, len: u64) -> Option<SocketAddr> {
        let mut raw = [0u8; size_of::<libc::sockaddr_in6>()];
        let want = usize::try_from(len).ok()?.min(raw.len());
        let n = sys::read_memory(notif.pid, addr, raw.get_mut(..want)?).ok()?;
        if !self.valid(notif.id) {
            return None;
        }
        parse_sockaddr(raw.get(..n)?)
    }
}

/// A pidfd for the thread that made a trapped call.
struct Task {
    pidfd: OwnedFd,
    /// Its thread group, when it was needed (inherit=no) or found on the way.
    tgid: Option<u32>,
}

impl Task {
    /// `tid` is a thread id (the kernel reports the trapped thread). PIDFD_THREAD (Linux 6.9)
    /// opens that thread; before it, pidfd_open takes only a thread-group leader, so the
    /// group is read from /proc/TID/status. The descriptor table is the group's either way
    /// (unless the thread unshared it).
    fn open(tid: u32, want_tgid: bool) -> Option<Task> {
        let pid = Pid::from_raw(tid as i32)?;
        if let Ok(pidfd) = pidfd_open(pid, PidfdFlags::from_bits_retain(libc::PIDFD_THREAD)) {
            let tgid = if want_tgid { tgid_of(tid) } else { None };
            return Some(Task { pidfd, tgid });
        }
        let tgid = tgid_of(tid)?;
        let pidfd = pidfd_open(Pid::from_raw(tgid as i32)?, PidfdFlags::empty()).ok()?;
        Some(Task {
            pidfd,
            tgid: Some(tgid),
        })
    }
}

fn tgid_of(tid: u32) -> Option<u32> {
    let status = crate::process::read_proc(&format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Where a trapped send finds its destination.
#[derive(Clone, Copy)]
enum Name {
    /// sendto's address and length arguments.
    Direct(u64, u64),
    /// The msghdr (sendmsg) or first mmsghdr (sendmmsg) at this address.
    InHeader(u64),
}

/// For a send that connects by TCP Fast Open (MSG_FASTOPEN in its flags: the filter traps
/// only those), where its destination is.
fn fast_open_name(nr: i64, args: &[u64; 6]) -> Option<Name> {
    let flag = libc::MSG_FASTOPEN as u64;
    match nr {
        libc::SYS_sendto if args[3] & flag != 0 => Some(Name::Direct(args[4], args[5])),
        libc::SYS_sendmsg if args[2] & flag != 0 => Some(Name::InHeader(args[1])),
        libc::SYS_sendmmsg if args[3] & flag != 0 && args[2] as u32 > 0 => {
            Some(Name::InHeader(args[1]))
        }
        _ => None,
    }
}

fn local_port(fd: impl AsFd) -> Option<u16> {
    let local = rustix::net::getsockname(fd).ok()?;
    SocketAddr::try_from(local).ok().map(|a| a.port())
}

/// A sockaddr_in or sockaddr_in6 as the program wrote it (family in host order, port and
/// address in network order). Anything else, AF_UNSPEC included, is `None`.
fn parse_sockaddr(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    let ip = match i32::from(family) {
        libc::AF_INET => {
            let octets: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        libc::AF_INET6 => {
            let octets: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn option_name(level: i32, opt: i32) -> &'static str {
    match (level, opt) {
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => "SO_KEEPALIVE",
        (_, libc::TCP_KEEPIDLE) => "TCP_KEEPIDLE",
        (_, libc::TCP_KEEPINTVL) => "TCP_KEEPINTVL",
        (_, libc::TCP_KEEPCNT) => "TCP_KEEPCNT",
        (_, libc::TCP_USER_TIMEOUT) => "TCP_USER_TIMEOUT",
        _ => "an option",
    }
}

/// One line per decision to the injection's `log=` target, opened, written and closed each
/// time, as the shim does; off by default.
struct Logger<'a> {
    injection: &'a Injection,
    pid: u32,
    fd: i32,
}

impl Logger<'_> {
    fn line(&self, what: std::fmt::Arguments<'_>) {
        use std::io::Write;
        let text = format!(
            "keepalive-supervise[{}]: pid {} fd {}: {what}",
            std::process::id(),
            self.pid,
            self.fd
        );
        match self.injection.log() {
            Log::Off => {}
            Log::File(path) => {
                // As the shim opens its log: never through a symlink, never blocking on a
                // FIFO, and only into a regular file (mode 0644 when created).
                use std::os::unix::fs::OpenOptionsExt;
                let opened = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o644)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
                    .open(path);
                if let Ok(mut f) = opened
                    && f.metadata().is_ok_and(|m| m.is_file())
                {
                    let _ = writeln!(f, "{text}");
                }
            }
            Log::Syslog => {
                if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
                    // LOG_USER | LOG_INFO.
                    let _ = sock.send_to(format!("<14>{text}").as_bytes(), "/dev/log");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_as_programs_write_them() {
        let mut v4 = [0u8; 16];
        v4[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(parse_sockaddr(&v4), Some("127.0.0.1:8080".parse().unwrap()));
        let mut v6 = [0u8; 28];
        v6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[23] = 1;
        assert_eq!(parse_sockaddr(&v6), Some("[::1]:443".parse().unwrap()));
        assert_eq!(parse_sockaddr(&v4[..6]), None, "short");
        assert_eq!(parse_sockaddr(&[0, 0, 0, 0]), None, "AF_UNSPEC");
    }
}
