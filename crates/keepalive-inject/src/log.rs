//! Reporting without allocating and without touching the program's file descriptors.
//!
//! Messages are formatted into a stack buffer. With `log=/path` each message opens the file,
//! appends and closes it; with `log=syslog` each opens a datagram socket to /dev/log, sends and
//! closes it. Holding a descriptor open between messages would be unsafe: the program may
//! close it and reuse the number for its own data. Nothing is logged unless `log=` asks.

use crate::config::Config;
use crate::{hooks, real};
use core::fmt::{self, Write};
use keepalive::policy::Log;
use keepalive::policy::injection::MAX_LOG_PATH;

const IDENT: &str = "keepalive-inject";

struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// Keeps what fits; a longer message is cut, never an error.
impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(self.len);
        let take = s.len().min(room);
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len.saturating_add(take)),
            s.as_bytes().get(..take),
        ) {
            dst.copy_from_slice(src);
            self.len = self.len.saturating_add(take);
        }
        Ok(())
    }
}

/// An informational line, when logging is on.
#[inline]
pub fn info(config: &Config, args: fmt::Arguments<'_>) {
    if config.logging {
        emit(config.injection.log(), 6, args);
    }
}

/// A failure, when logging is on.
#[inline]
pub fn warn(config: &Config, args: fmt::Arguments<'_>) {
    if config.logging {
        emit(config.injection.log(), 4, args);
    }
}

#[cold]
fn emit(target: Log<'_>, severity: u8, args: fmt::Arguments<'_>) {
    let saved = hooks::errno();
    match target {
        Log::Off => {}
        Log::File(path) => {
            let mut line = Line::new();
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            let _ = writeln!(line, "{IDENT}[{pid}]: {args}");
            append(path, line.bytes());
        }
        Log::Syslog => syslog(severity, args),
    }
    hooks::set_errno(saved);
}

/// The one message that may go to standard error: a bad configuration, at load, before the
/// program's own code has run. Even then, not if fd 2 is a socket (a program started by inetd
/// has its client there); the system log gets it instead.
pub fn warn_at_load(args: fmt::Arguments<'_>) {
    let saved = hooks::errno();
    // SAFETY: an all-zero stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes into `st` only.
    let is_file =
        unsafe { libc::fstat(2, &mut st) } == 0 && (st.st_mode & libc::S_IFMT) != libc::S_IFSOCK;
    if is_file {
        let mut line = Line::new();
        let _ = writeln!(line, "{IDENT}: {args}");
        let bytes = line.bytes();
        // SAFETY: writes `bytes` to fd 2, which fstat just showed is open and not a socket.
        let _ = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
    } else {
        syslog(4, args);
    }
    hooks::set_errno(saved);
}

fn append(path: &str, bytes: &[u8]) {
    let mut cpath = [0u8; MAX_LOG_PATH + 1];
    let Some(dst) = cpath.get_mut(..path.len()) else {
        return;
    };
    dst.copy_from_slice(path.as_bytes());
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: cpath is NUL-terminated (the buffer is one byte longer than any accepted path).
    let fd = unsafe { libc::open(cpath.as_ptr().cast(), flags, 0o644) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd is the one just opened; bytes is a valid buffer.
    let _ = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    // SAFETY: closes only the descriptor opened above.
    unsafe { libc::close(fd) };
}

fn syslog(severity: u8, args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    // Facility LOG_USER (1 << 3).
    let _ = write!(
        line,
        "<{}>{IDENT}[{pid}]: {args}",
        8u8.saturating_add(severity)
    );
    // SAFETY: the real socket(), not our hook; the descriptor is ours and closed below.
    let fd = unsafe { real::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: an all-zero sockaddr_un is valid; the path is filled in below.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(b"/dev/log") {
        *dst = *src as libc::c_char;
    }
    let bytes = line.bytes();
    // SAFETY: sends `bytes` on our own socket to a valid sockaddr_un of the given size.
    let _ = unsafe {
        libc::sendto(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            (&raw const addr).cast(),
            core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    // SAFETY: closes only the socket opened above.
    unsafe { libc::close(fd) };
}
