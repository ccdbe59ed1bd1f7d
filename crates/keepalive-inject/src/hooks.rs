//! The exported functions that stand in for libc's. Each calls the real function and returns
//! what it returned, with errno as it left it; the policy's setsockopt calls happen around that
//! and leave no trace in errno.
//!
//! - `socket`: an AF_INET/AF_INET6 SOCK_STREAM socket (SOCK_NONBLOCK and SOCK_CLOEXEC masked
//!   off, then compared for equality, so SOCK_SEQPACKET or SOCK_RAW never match) is marked as
//!   TCP and, without filters, gets the policy at once.
//! - `bind` / `connect`: with `ports=` or `dest=`, the policy goes on when the address is known
//!   and matches; so it does for `sendto`/`sendmsg`/`sendmmsg` with MSG_FASTOPEN, which
//!   connect a TCP socket without connect() (TCP Fast Open).
//! - `accept` / `accept4`: the kernel copies a listener's options to the sockets it accepts;
//!   these only carry the shim's bookkeeping over, so force mode guards them too.
//! - `setsockopt`: in force mode, calls that would change an option the policy sets report
//!   success and do nothing; a call the kernel would refuse for its arguments (length, pointer,
//!   range) goes through to be refused, and every other call goes straight through.
//! - `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD)`: the mark follows the descriptor to its new
//!   number (see marks.rs); the shim acts on a marked descriptor only after the kernel confirms
//!   it still holds the socket that was marked.

use crate::config::{self, Config};
use crate::marks::{MARKS, socket_inode};
use crate::{log, real};
use core::ffi::{c_int, c_void};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use keepalive::policy::Mode;
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
    let saved = errno();
    let mut ok = true;
    for opt in config.options() {
        let value: c_int = opt.value;
        // SAFETY: the real setsockopt with a pointer to a live c_int and its size.
        let rc = unsafe {
            real::setsockopt(
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
    if ok {
        MARKS.mark_managed(fd, inode);
    } else {
        MARKS.mark(fd, inode, false);
    }
    if ok {
        log::info(config, format_args!("fd {fd}: keepalive on"));
    }
    set_errno(saved);
}

/// The address and port in the first bytes of a socket address: AF_INET from 16 bytes,
/// AF_INET6 from 24 (the kernel takes RFC 2133's sockaddr_in6 without sin6_scope_id), and,
/// where `unspec_is_inet` (bind on an IPv4 socket, which the kernel takes as AF_INET with
/// INADDR_ANY), AF_UNSPEC laid out as AF_INET.
fn parse(bytes: &[u8], unspec_is_inet: bool) -> Option<(IpAddr, u16)> {
    let family = c_int::from(u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]));
    let port = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
    match family {
        libc::AF_INET if bytes.len() >= 16 => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        libc::AF_UNSPEC if unspec_is_inet && bytes.len() >= 16 => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some((IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        libc::AF_INET6 if bytes.len() >= 24 => {
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            Some((IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// The address the program passed to a connect or bind the kernel has just taken: the kernel
/// copied `len` bytes from it in that same call (an unreadable one is EFAULT before anything
/// else), so reading them now cannot fault.
///
/// # Safety
/// The kernel read `len` bytes at `addr` in the call just made.
unsafe fn passed(
    addr: *const sockaddr,
    len: socklen_t,
    unspec_is_inet: bool,
) -> Option<(IpAddr, u16)> {
    if addr.is_null() {
        return None;
    }
    let mut buf = [0u8; 28];
    let n = (len as usize).min(buf.len());
    // SAFETY: `n` <= len bytes at `addr`, which the kernel has just read.
    unsafe { core::ptr::copy_nonoverlapping(addr.cast::<u8>(), buf.as_mut_ptr(), n) };
    parse(buf.get(..n)?, unspec_is_inet)
}

/// A socket's own address (`peer`: getpeername, else getsockname), as the kernel reports it.
fn socket_name(fd: c_int, peer: bool) -> Option<(IpAddr, u16)> {
    // SAFETY: an all-zero sockaddr_storage is a valid out-buffer.
    let mut storage: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    let saved = errno();
    let out = (&raw mut storage).cast::<sockaddr>();
    // SAFETY: out-buffers of the stated size; neither call is hooked.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, out, &mut len)
        } else {
            libc::getsockname(fd, out, &mut len)
        }
    };
    set_errno(saved);
    if rc != 0 {
        return None;
    }
    // SAFETY: the kernel wrote `len` bytes (at most the buffer's size) into `storage`.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (&raw const storage).cast::<u8>(),
            (len as usize).min(core::mem::size_of::<libc::sockaddr_storage>()),
        )
    };
    parse(bytes, false)
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

/// Whether a filtered policy is for this socket: a TCP socket the shim marked, neither
/// managed already nor configured by the program itself (its choice stands), unless force.
/// The program's choice is asked of the socket too (SO_KEEPALIVE on already), since it may
/// have made it through a duplicate whose mark this descriptor's does not share.
fn wants_filtered(config: &Config, fd: c_int) -> bool {
    let force = config.injection.mode == Mode::Force;
    config.injection.is_filtered()
        && MARKS
            .get(fd)
            .is_some_and(|m| !m.managed() && (force || !m.chose()))
        && (force || !keepalive_on(fd))
}

/// SO_KEEPALIVE as the socket holds it.
fn keepalive_on(fd: c_int) -> bool {
    get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE).is_some_and(|on| on != 0)
}

/// An int option as the socket holds it; errno left as it was.
fn get_int(fd: c_int, level: c_int, name: c_int) -> Option<c_int> {
    let saved = errno();
    let mut v: c_int = 0;
    let mut len = core::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: an int out-buffer and its size; getsockopt is not hooked.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut v).cast::<c_void>(), &mut len) };
    set_errno(saved);
    (rc == 0).then_some(v)
}

/// Whether a connect (or Fast Open send) left the socket connected or connecting: it
/// succeeded, or the connection goes on without the call (non-blocking, or interrupted by a
/// signal). Then the kernel has read the address. A refused or failed one leaves the socket
/// unconnected, and the program may connect it again elsewhere: no policy from this one.
fn underway(ok: bool, errno: c_int) -> bool {
    ok || matches!(errno, libc::EINPROGRESS | libc::EINTR | libc::EALREADY)
}

/// After the kernel was asked to connect `fd` to the `len` bytes at `addr` (connect, or a TCP
/// Fast Open send) and answered `ok` or errno `after`: a filtered policy goes on if the peer
/// matches. The policy goes on a connection that is underway, which keepalive options take at
/// any time.
///
/// # Safety
/// `addr` and `len` are what the call passed, and the call has returned.
unsafe fn connected(fd: c_int, addr: *const sockaddr, len: socklen_t, ok: bool, after: c_int) {
    if let Some(config) = config::get()
        && underway(ok, after)
        && wants_filtered(config, fd)
        // Connected: the kernel's own record of the peer; otherwise what was passed.
        // SAFETY: the kernel took `len` bytes at `addr` in the call (see the errors).
        && let Some((ip, port)) = socket_name(fd, true).or_else(|| unsafe { passed(addr, len, false) })
        && config.injection.matches_remote(ip, port)
        && let Some(mark) = MARKS.verified(fd)
    {
        apply(fd, mark.inode(), config);
    }
}

/// # Safety
/// Called by C code as `connect(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // The kernel first: it reads the address (EFAULT for one it cannot read).
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::connect(fd, addr, len) };
    let after = errno();
    // SAFETY: the arguments of the call just made.
    unsafe { connected(fd, addr, len, rc == 0, after) };
    set_errno(after);
    rc
}

/// # Safety
/// Called by C code as `sendto(2)`. With MSG_FASTOPEN on a TCP socket that is not connected,
/// the kernel connects it to `addr` (TCP Fast Open: the SYN carries the data), with no
/// connect() for the shim to see; a filter's policy goes on then. Every other send is passed
/// straight through.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const sockaddr,
    addr_len: socklen_t,
) -> isize {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::sendto(fd, buf, len, flags, addr, addr_len) };
    if flags & libc::MSG_FASTOPEN != 0 {
        let after = errno();
        // SAFETY: the arguments of the call just made.
        unsafe { connected(fd, addr, addr_len, rc >= 0, after) };
        set_errno(after);
    }
    rc
}

/// The destination a message names, if the kernel read it: only a call that connected or is
/// connecting ([`underway`]) got past copying the header and the name it points to (a bad
/// descriptor, a non-socket, a flag refused or an unreadable header all fail before), and only
/// a configured shim looks.
///
/// # Safety
/// `msg` is what a sendmsg or sendmmsg call that has returned was passed.
unsafe fn named(
    msg: *const libc::msghdr,
    after: c_int,
    ok: bool,
) -> Option<(*const sockaddr, socklen_t)> {
    if msg.is_null() || !underway(ok, after) || config::get().is_none() {
        return None;
    }
    // SAFETY: the kernel read the header at `msg` in that call.
    let header = unsafe { core::ptr::read(msg) };
    Some((
        header.msg_name.cast_const().cast::<sockaddr>(),
        header.msg_namelen,
    ))
}

/// # Safety
/// Called by C code as `sendmsg(2)`; MSG_FASTOPEN as for [`sendto`], the address being the
/// message's name.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::sendmsg(fd, msg, flags) };
    if flags & libc::MSG_FASTOPEN != 0 {
        let after = errno();
        // SAFETY: the arguments of the call just made.
        if let Some((addr, len)) = unsafe { named(msg, after, rc >= 0) } {
            // SAFETY: the name the kernel read in that call.
            unsafe { connected(fd, addr, len, rc >= 0, after) };
        }
        set_errno(after);
    }
    rc
}

/// # Safety
/// Called by C code as `sendmmsg(2)`; MSG_FASTOPEN as for [`sendmsg`], the first message
/// being the one that connects.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    count: core::ffi::c_uint,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::sendmmsg(fd, msgs, count, flags) };
    if flags & libc::MSG_FASTOPEN != 0 && count > 0 && !msgs.is_null() {
        let after = errno();
        // SAFETY: the first entry's header, which the kernel read first.
        if let Some((addr, len)) = unsafe { named(&raw const (*msgs).msg_hdr, after, rc >= 0) } {
            // SAFETY: the name the kernel read in that call.
            unsafe { connected(fd, addr, len, rc >= 0, after) };
        }
        set_errno(after);
    }
    rc
}

/// # Safety
/// Called by C code as `bind(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: the caller's arguments, passed on.
    let rc = unsafe { real::bind(fd, addr, len) };
    let after = errno();
    if rc == 0
        && let Some(config) = config::get()
        && wants_filtered(config, fd)
        // Bound: the kernel's own record of the port (AF_UNSPEC, port 0 and v4-mapped
        // addresses already resolved).
        && let Some((_, port)) = socket_name(fd, false)
        && config.injection.matches_local(port)
        && let Some(mark) = MARKS.verified(fd)
    {
        apply(fd, mark.inode(), config);
    }
    set_errno(after);
    rc
}

/// Force mode's answer to the program's setsockopt(level, name, value, len) of an option the
/// policy holds at `ours`: `Err(errno)` where the kernel refuses the call, `Ok` (the policy
/// kept) where it takes it. The kernel judges the arguments itself, with no system call the
/// program could not make (a process_vm_readv would be killed by an allowlist seccomp filter
/// that leaves it out):
/// - TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT: the program's call is made,
///   and where it succeeds the policy's value is set again at once. Each only stores a value,
///   and TCP_KEEPIDLE re-arms the timer from the time already idle (net/ipv4/tcp.c,
///   tcp_sock_set_keepidle_locked()), so the socket ends exactly as it was.
/// - SO_KEEPALIVE takes any int, and switching it off and on again would restart the timer;
///   so its argument is tried on TCP_KEEPCNT, which copies an int the same way (EFAULT for a
///   pointer it cannot read; a value out of 1..=127 is EINVAL, after the copy, and stores
///   nothing) and whose old value is put back.
///
/// errno is left as it was on `Ok`.
fn keep(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
    ours: c_int,
) -> Result<(), c_int> {
    let saved = errno();
    let set = |level: c_int, name: c_int, v: c_int| {
        // SAFETY: the real setsockopt with a live c_int and its size.
        unsafe {
            real::setsockopt(
                fd,
                level,
                name,
                (&raw const v).cast::<c_void>(),
                core::mem::size_of::<c_int>() as socklen_t,
            )
        }
    };
    let result = if level == libc::SOL_SOCKET && name == libc::SO_KEEPALIVE {
        let count = get_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT);
        // SAFETY: the program's own pointer and length, judged by the kernel.
        let rc = unsafe { real::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, value, len) };
        if rc == 0 {
            if let Some(count) = count {
                set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, count);
            }
            Ok(())
        } else {
            match errno() {
                libc::EFAULT => Err(libc::EFAULT),
                // Read, and out of TCP_KEEPCNT's range: nothing stored, and any int is a
                // valid SO_KEEPALIVE.
                _ => Ok(()),
            }
        }
    } else {
        // SAFETY: the caller's arguments, passed on.
        let rc = unsafe { real::setsockopt(fd, level, name, value, len) };
        if rc == 0 {
            set(level, name, ours);
            Ok(())
        } else {
            Err(errno())
        }
    };
    if result.is_ok() {
        set_errno(saved);
    }
    result
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
        && config.owns(level, name)
        && MARKS.get(fd).is_some()
    {
        match config.guarded(level, name) {
            // Force mode: the program believes its call worked; the policy stays. A call the
            // kernel refuses for its arguments (length, pointer, range) is refused as without
            // the shim: the kernel itself judges it (see `keep`). A length the kernel's int
            // takes for negative or short goes straight through.
            Some(option)
                if (len as i32) >= core::mem::size_of::<c_int>() as i32
                    && MARKS.get(fd).is_some_and(|m| m.managed())
                    && MARKS.verified(fd).is_some() =>
            {
                return match keep(fd, level, name, value, len, option.value) {
                    Ok(()) => {
                        log::info(
                            config,
                            format_args!(
                                "fd {fd}: kept the policy against the program's setsockopt({})",
                                option.label
                            ),
                        );
                        0
                    }
                    Err(refusal) => {
                        set_errno(refusal);
                        -1
                    }
                };
            }
            Some(_) => {}
            // Default mode: the program chose a keepalive option itself, once the kernel took
            // it; a filter's later bind or connect leaves it be. TCP_USER_TIMEOUT alone turns
            // no keepalive on, and is no such choice.
            None => {
                // SAFETY: the caller's arguments, passed on.
                let rc = unsafe { real::setsockopt(fd, level, name, value, len) };
                if rc == 0 && !(level == libc::IPPROTO_TCP && name == libc::TCP_USER_TIMEOUT) {
                    MARKS.note_choice(fd);
                }
                return rc;
            }
        }
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
    // One fstat for a marked listener, one for the new socket: none when the listener is not
    // the shim's (socket_inode leaves errno as it was).
    match MARKS
        .verified(listener)
        .and_then(|mark| Some((mark, socket_inode(fd)?)))
    {
        Some((mark, inode)) => MARKS.mark(fd, inode, mark.managed()),
        None => MARKS.clear(fd),
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
