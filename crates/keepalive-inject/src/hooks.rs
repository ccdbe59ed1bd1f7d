//! The exported functions that stand in for libc's. Each calls the real function and returns
//! what it returned, with errno as it left it; the policy's setsockopt calls happen around that
//! and leave no trace in errno.
//!
//! - `socket`: an AF_INET/AF_INET6 SOCK_STREAM socket (SOCK_NONBLOCK and SOCK_CLOEXEC masked
//!   off, then compared for equality, so SOCK_SEQPACKET or SOCK_RAW never match) is marked as
//!   TCP and, without filters, gets the policy at once.
//! - `bind` / `connect`: with `ports=` or `dest=`, the policy goes on when the address is known
//!   and matches.
//! - `accept` / `accept4`: the kernel copies a listener's options to the sockets it accepts;
//!   these only carry the shim's bookkeeping over, so force mode guards them too.
//! - `setsockopt`: in force mode, calls that would change an option the policy sets report
//!   success and do nothing; every other call goes straight through.
//! - `close`, `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD)`, `close_range`, `closefrom`: the marks
//!   follow the descriptor (see marks.rs); the shim acts on a marked descriptor only after the
//!   kernel confirms it still holds the socket that was marked.

use crate::config::{self, Config};
use crate::marks::{MARKS, socket_inode};
use crate::{log, real};
use core::ffi::{c_int, c_void};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use libc::{sockaddr, socklen_t};

pub fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(value: c_int) {
    // SAFETY: as in errno().
    unsafe { *libc::__errno_location() = value };
}

fn is_tcp(domain: c_int, ty: c_int, protocol: c_int) -> bool {
    (domain == libc::AF_INET || domain == libc::AF_INET6)
        && ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) == libc::SOCK_STREAM
        && (protocol == 0 || protocol == libc::IPPROTO_TCP)
}

/// Makes the policy's setsockopt calls on `fd`, the TCP socket with inode `inode`, stopping at
/// the first failure so that a socket never gets SO_KEEPALIVE with half a policy; marks it
/// with the outcome. errno is left as it was.
fn apply(fd: c_int, inode: u64, config: &Config) {
    let Some(setsockopt) = real::setsockopt_fn() else {
        MARKS.mark(fd, inode, false);
        return;
    };
    let saved = errno();
    let mut ok = true;
    for opt in config.options() {
        let value: c_int = opt.value;
        // SAFETY: the real setsockopt with a pointer to a live c_int and its size.
        let rc = unsafe {
            setsockopt(
                fd,
                opt.level,
                opt.name,
                (&raw const value).cast::<c_void>(),
                core::mem::size_of::<c_int>() as socklen_t,
            )
        };
        if rc != 0 {
            log::warn(
                config,
                format_args!(
                    "fd {fd}: {} = {} failed (errno {})",
                    opt.label,
                    opt.value,
                    errno()
                ),
            );
            ok = false;
            break;
        }
    }
    MARKS.mark(fd, inode, ok);
    if ok {
        log::info(config, format_args!("fd {fd}: keepalive on"));
    }
    set_errno(saved);
}

/// The address and port of an AF_INET or AF_INET6 socket address, read without trusting its
/// alignment; `None` for anything else or a length too short.
///
/// # Safety
/// `addr`, if not null, points to at least `len` readable bytes.
unsafe fn inet_addr(addr: *const sockaddr, len: socklen_t) -> Option<(IpAddr, u16)> {
    if addr.is_null() || (len as usize) < core::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least sizeof(sa_family_t) bytes are readable.
    let family = unsafe { core::ptr::read_unaligned(addr.cast::<libc::sa_family_t>()) };
    match c_int::from(family) {
        libc::AF_INET if len as usize >= core::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the length covers a sockaddr_in.
            let a = unsafe { core::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some((IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if len as usize >= core::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the length covers a sockaddr_in6.
            let a = unsafe { core::ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            Some((
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            ))
        }
        _ => None,
    }
}

/// # Safety
/// Called by C code as `socket(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let fd = unsafe { real::socket(domain, ty, protocol) };
    if fd >= 0 {
        match config::get() {
            Some(config) if is_tcp(domain, ty, protocol) => match socket_inode(fd) {
                // apply() records whether the policy went on.
                Some(inode) if !config.injection.is_filtered() => apply(fd, inode, config),
                Some(inode) => MARKS.mark(fd, inode, false),
                None => MARKS.clear(fd),
            },
            _ => MARKS.clear(fd),
        }
    }
    fd
}

/// # Safety
/// Called by C code as `connect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if let Some(config) = config::get()
        && config.injection.is_filtered()
        && MARKS.get(fd).is_some_and(|m| !m.managed())
        // SAFETY: the caller vouches for addr and len, as connect(2) requires.
        && let Some((ip, port)) = unsafe { inet_addr(addr, len) }
        && config.injection.matches_remote(ip, port)
        && let Some(mark) = MARKS.verified(fd)
    {
        apply(fd, mark.inode(), config);
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::connect(fd, addr, len) }
}

/// # Safety
/// Called by C code as `bind(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    if let Some(config) = config::get()
        && config.injection.is_filtered()
        && MARKS.get(fd).is_some_and(|m| !m.managed())
        // SAFETY: the caller vouches for addr and len, as bind(2) requires.
        && let Some((_, port)) = unsafe { inet_addr(addr, len) }
        && config.injection.matches_local(port)
        && let Some(mark) = MARKS.verified(fd)
    {
        apply(fd, mark.inode(), config);
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::bind(fd, addr, len) }
}

/// # Safety
/// Called by C code as `setsockopt(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    if let Some(config) = config::get()
        && let Some(option) = config.guarded(level, name)
        && MARKS.get(fd).is_some_and(|m| m.managed())
        && MARKS.verified(fd).is_some()
    {
        // Force mode: the program believes its call worked; the policy stays.
        log::info(
            config,
            format_args!(
                "fd {fd}: kept the policy against the program's setsockopt({})",
                option.label
            ),
        );
        return 0;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::setsockopt(fd, level, name, value, len) }
}

/// Marks a socket accepted from `listener` as the listener is marked: the kernel copied the
/// listener's options to it. A listener mark the kernel does not confirm is nobody's.
fn inherit(listener: c_int, fd: c_int) {
    if fd < 0 {
        return;
    }
    let saved = errno();
    match (
        MARKS.get(listener).and(MARKS.verified(listener)),
        socket_inode(fd),
    ) {
        (Some(mark), Some(inode)) => MARKS.mark(fd, inode, mark.managed()),
        _ => MARKS.clear(fd),
    }
    set_errno(saved);
}

/// # Safety
/// Called by C code as `accept(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let new = unsafe { real::accept(fd, addr, len) };
    inherit(fd, new);
    new
}

/// # Safety
/// Called by C code as `accept4(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let new = unsafe { real::accept4(fd, addr, len, flags) };
    inherit(fd, new);
    new
}

/// # Safety
/// Called by C code as `close(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // Before the real close: once it returns, another thread may get the number again.
    MARKS.clear(fd);
    // SAFETY: the caller's argument, passed on.
    unsafe { real::close(fd) }
}

/// # Safety
/// Called by C code as `dup(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: the caller's argument, passed on.
    let new = unsafe { real::dup(fd) };
    if new >= 0 {
        MARKS.copy(fd, new);
    }
    new
}

/// # Safety
/// Called by C code as `dup2(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::dup2(old, new) };
    if rc >= 0 && old != new {
        MARKS.copy(old, rc);
    }
    rc
}

/// # Safety
/// Called by C code as `dup3(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::dup3(old, new, flags) };
    if rc >= 0 {
        MARKS.copy(old, rc);
    }
    rc
}

/// fcntl's commands that make a new descriptor for the same open file.
fn duplicates(cmd: c_int) -> bool {
    cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC
}

/// # Safety
/// Called by C code as `fcntl(2)`. Declared `int fcntl(int, int, ...)`: every command takes
/// at most one argument, an int or a pointer, which arrives where a third integer argument
/// would on the Linux ABIs (x86-64 and AArch64 pass variadic integer arguments in the same
/// registers as named ones) and is passed on in full.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::fcntl(false, fd, cmd, arg) };
    if rc >= 0 && duplicates(cmd) {
        MARKS.copy(fd, rc);
    }
    rc
}

/// # Safety
/// As [`fcntl`], under the name glibc 2.28 and later give it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: usize) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::fcntl(true, fd, cmd, arg) };
    if rc >= 0 && duplicates(cmd) {
        MARKS.copy(fd, rc);
    }
    rc
}

/// # Safety
/// Called by C code as `close_range(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(
    first: libc::c_uint,
    last: libc::c_uint,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::close_range(first, last, flags) };
    // CLOSE_RANGE_CLOEXEC only sets close-on-exec; the descriptors stay.
    if rc == 0 && flags & (libc::CLOSE_RANGE_CLOEXEC as c_int) == 0 {
        let clamp = |v: libc::c_uint| c_int::try_from(v).unwrap_or(c_int::MAX);
        MARKS.clear_range(clamp(first), clamp(last));
    }
    rc
}

/// # Safety
/// Called by C code as `closefrom(3)`, which glibc implements without calling close_range
/// through its symbol.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(low: c_int) {
    // SAFETY: the caller's argument, passed on.
    if unsafe { real::closefrom(low) } {
        MARKS.clear_range(low, c_int::MAX);
    }
}
