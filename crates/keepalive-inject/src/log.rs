//! Reporting without allocating and without touching the program's file descriptors.
//!
//! Messages are formatted into a stack buffer, one line each (control characters escaped),
//! file lines stamped with the UTC time. With `log=/path` each message opens the file,
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

    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len().saturating_sub(self.len);
        let take = bytes.len().min(room);
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len.saturating_add(take)),
            bytes.get(..take),
        ) {
            dst.copy_from_slice(src);
            self.len = self.len.saturating_add(take);
        }
    }

    /// Ends the line: a newline, kept even when the message filled the buffer.
    fn end(&mut self) {
        if self.len >= self.buf.len() {
            self.len = self.buf.len().saturating_sub(1);
        }
        self.push(b"\n");
    }
}

/// Keeps what fits; a longer message is cut, never an error. Control characters (from a value
/// the user gave) are written escaped, `\n` as `\\n`, so that a message stays one line and
/// sends the terminal no escape sequence.
impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for part in s.split_inclusive(|c: char| c.is_control()) {
            match part.char_indices().last() {
                Some((at, c)) if c.is_control() => {
                    self.push(part.as_bytes().get(..at).unwrap_or(&[]));
                    let mut esc = [0u8; 12];
                    let mut n = 0usize;
                    for e in c.escape_default() {
                        if let Some(slot) = esc.get_mut(n) {
                            *slot = e as u8;
                            n = n.saturating_add(1);
                        }
                    }
                    self.push(esc.get(..n).unwrap_or(&[]));
                }
                _ => self.push(part.as_bytes()),
            }
        }
        Ok(())
    }
}

/// Writes the time now, UTC, as 2026-12-01T21:40:12.345Z, from clock_gettime(CLOCK_REALTIME)
/// and the proleptic Gregorian calendar (days to civil date, Howard Hinnant's algorithm).
fn timestamp(line: &mut Line) {
    // SAFETY: an all-zero timespec is a valid out-buffer.
    let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
    // SAFETY: clock_gettime writes into `ts` only.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) } != 0 {
        return;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let millis = u64::try_from(ts.tv_nsec)
        .unwrap_or(0)
        .wrapping_div(1_000_000);
    let (days, rem) = (secs.wrapping_div(86_400), secs.wrapping_rem(86_400));
    let (h, m, s) = (
        rem.wrapping_div(3600),
        rem.wrapping_rem(3600).wrapping_div(60),
        rem.wrapping_rem(60),
    );
    // Days since 0000-03-01: eras of 400 years (146097 days), years starting in March.
    let z = days.wrapping_add(719_468);
    let era = z.wrapping_div(146_097);
    let doe = z.wrapping_sub(era.wrapping_mul(146_097));
    let yoe = doe
        .wrapping_sub(doe.wrapping_div(1460))
        .wrapping_add(doe.wrapping_div(36_524))
        .wrapping_sub(doe.wrapping_div(146_096))
        .wrapping_div(365);
    let doy = doe.wrapping_sub(
        yoe.wrapping_mul(365)
            .wrapping_add(yoe.wrapping_div(4))
            .wrapping_sub(yoe.wrapping_div(100)),
    );
    let mp = doy.wrapping_mul(5).wrapping_add(2).wrapping_div(153);
    let day = doy
        .wrapping_sub(mp.wrapping_mul(153).wrapping_add(2).wrapping_div(5))
        .wrapping_add(1);
    let month = if mp < 10 {
        mp.wrapping_add(3)
    } else {
        mp.wrapping_sub(9)
    };
    let year = yoe
        .wrapping_add(era.wrapping_mul(400))
        .wrapping_add(u64::from(month <= 2));
    let _ = write!(
        line,
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z "
    );
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
            timestamp(&mut line);
            let _ = write!(line, "{IDENT}[{pid}]: {args}");
            line.end();
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
        let _ = write!(line, "{IDENT}: {args}");
        line.end();
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
    // Never through a symlink planted at the log's path (as root, into someone's file).
    // Never blocking either: a FIFO at the path would wait in open() for a reader (and a full
    // pipe in write()), inside the program's socket call or before its main; O_NONBLOCK opens
    // it at once (or fails), and anything but a regular file is left unwritten.
    let flags = libc::O_WRONLY
        | libc::O_APPEND
        | libc::O_CREAT
        | libc::O_CLOEXEC
        | libc::O_NOCTTY
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK;
    // SAFETY: cpath is NUL-terminated (the buffer is one byte longer than any accepted path).
    let fd = unsafe { libc::open(cpath.as_ptr().cast(), flags, 0o644) };
    if fd < 0 {
        return;
    }
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fd is the one just opened; fstat writes into `st` only.
    let stat = unsafe { libc::fstat(fd, &mut st) };
    if stat != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        // SAFETY: closes only the descriptor opened above.
        unsafe { libc::close(fd) };
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
