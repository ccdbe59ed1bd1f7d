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

use crate::config::{self, Config};
use crate::fdset::{MANAGED, TCP};
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

/// Makes the policy's setsockopt calls on `fd`, stopping at the first failure so that a socket
/// never gets SO_KEEPALIVE with half a policy. errno is left as it was.
fn apply(fd: c_int, config: &Config) {
    let Some(setsockopt) = real::setsockopt_fn() else {
        MANAGED.set(fd, false);
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
    MANAGED.set(fd, ok);
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
        let tcp = is_tcp(domain, ty, protocol);
        TCP.set(fd, tcp);
        match config::get() {
            // apply() records whether the policy went on.
            Some(config) if tcp && !config.injection.is_filtered() => apply(fd, config),
            _ => MANAGED.set(fd, false),
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
        && TCP.contains(fd)
        && !MANAGED.contains(fd)
        // SAFETY: the caller vouches for addr and len, as connect(2) requires.
        && let Some((ip, port)) = unsafe { inet_addr(addr, len) }
        && config.injection.matches_remote(ip, port)
    {
        apply(fd, config);
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
        && TCP.contains(fd)
        && !MANAGED.contains(fd)
        // SAFETY: the caller vouches for addr and len, as bind(2) requires.
        && let Some((_, port)) = unsafe { inet_addr(addr, len) }
        && config.injection.matches_local(port)
    {
        apply(fd, config);
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
        && config.guards(level, name)
        && MANAGED.contains(fd)
    {
        // Force mode: the program believes its call worked; the policy stays.
        log::info(
            config,
            format_args!("fd {fd}: kept the policy against setsockopt({level}, {name})"),
        );
        return 0;
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::setsockopt(fd, level, name, value, len) }
}

/// Carries the listener's marks over to an accepted socket.
fn inherit(listener: c_int, fd: c_int) {
    if fd >= 0 {
        TCP.set(fd, TCP.contains(listener));
        MANAGED.set(fd, MANAGED.contains(listener));
    }
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
