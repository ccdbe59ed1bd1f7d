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

/// The address and port of an AF_INET or AF_INET6 socket address the program passed, copied
/// in the way the kernel copies it (see [`copy_in`]): `None` for anything else, a length too
/// short, or memory the kernel could not read (connect and bind then answer EFAULT, as
/// without the shim).
fn inet_addr(addr: *const sockaddr, len: socklen_t) -> Option<(IpAddr, u16)> {
    const V4: usize = core::mem::size_of::<libc::sockaddr_in>();
    const V6: usize = core::mem::size_of::<libc::sockaddr_in6>();
    let mut buf = [0u8; V6];
    let want = (len as usize).min(V6);
    if want < core::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    let got = buf.get_mut(..want)?;
    if copy_in(addr.cast(), got) != Copied::All {
        return None;
    }
    let family = u16::from_ne_bytes([buf[0], buf[1]]);
    match c_int::from(family) {
        libc::AF_INET if want >= V4 => {
            // SAFETY: buf holds V4 copied bytes; read_unaligned takes any alignment.
            let a = unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some((IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 if want >= V6 => {
            // SAFETY: buf holds V6 copied bytes; read_unaligned takes any alignment.
            let a = unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<libc::sockaddr_in6>()) };
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
        // Neither managed already nor configured by the program itself: its choice stands.
        && MARKS
            .get(fd)
            .is_some_and(|m| !m.managed() && (config.injection.mode == Mode::Force || !m.chose()))
        && let Some((ip, port)) = inet_addr(addr, len)
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
        && MARKS
            .get(fd)
            .is_some_and(|m| !m.managed() && (config.injection.mode == Mode::Force || !m.chose()))
        && let Some((_, port)) = inet_addr(addr, len)
        && config.injection.matches_local(port)
        && let Some(mark) = MARKS.verified(fd)
    {
        apply(fd, mark.inode(), config);
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real::bind(fd, addr, len) }
}

/// A setsockopt argument as the kernel would find it.
enum Arg {
    Int(c_int),
    /// Null or unreadable: the kernel answers EFAULT.
    Fault,
    /// The copy itself was refused (see [`Copied::Unchecked`]).
    Unchecked,
}

fn read_int(value: *const c_void) -> Arg {
    let mut bytes = [0u8; core::mem::size_of::<c_int>()];
    match copy_in(value, &mut bytes) {
        Copied::All => Arg::Int(c_int::from_ne_bytes(bytes)),
        Copied::Fault => Arg::Fault,
        Copied::Unchecked => Arg::Unchecked,
    }
}

/// What [`copy_in`] found.
#[derive(PartialEq, Eq)]
enum Copied {
    All,
    /// Null, or not all readable: the kernel would answer EFAULT.
    Fault,
    /// process_vm_readv itself was refused (a seccomp profile such as Docker's default without
    /// CAP_SYS_PTRACE): the memory cannot be checked without risking a fault in the program.
    Unchecked,
}

/// Copies `dst.len()` bytes from the program's `src` the way the kernel reads a system call's
/// argument: through a system call, process_vm_readv on this very thread (its id, not the
/// process's: once the main thread has exited, the process's id names a zombie without
/// memory, ESRCH), so that an unmapped pointer is an answer and not a fault in the program.
/// errno is left as it was.
fn copy_in(src: *const c_void, dst: &mut [u8]) -> Copied {
    if src.is_null() {
        return Copied::Fault;
    }
    let saved = errno();
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast::<c_void>(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: src.cast_mut(),
        iov_len: dst.len(),
    };
    // SAFETY: one local iovec over `dst`; the remote range is only read, by the kernel.
    let n = unsafe {
        libc::process_vm_readv(libc::gettid(), &raw const local, 1, &raw const remote, 1, 0)
    };
    let copied = match usize::try_from(n) {
        Ok(got) if got == dst.len() => Copied::All,
        // A partial read: the range runs into memory the process cannot read.
        Ok(_) => Copied::Fault,
        Err(_) if errno() == libc::EFAULT => Copied::Fault,
        Err(_) => Copied::Unchecked,
    };
    set_errno(saved);
    copied
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
            // kernel would refuse for its arguments alone (short length, unreadable pointer,
            // value out of range) goes through, to be refused.
            Some(option)
                if len as usize >= core::mem::size_of::<c_int>()
                    && MARKS.get(fd).is_some_and(|m| m.managed())
                    && match read_int(value) {
                        Arg::Int(v) => Config::kernel_accepts(level, name, v),
                        Arg::Fault => false,
                        Arg::Unchecked => true,
                    }
                    && MARKS.verified(fd).is_some() =>
            {
                log::info(
                    config,
                    format_args!(
                        "fd {fd}: kept the policy against the program's setsockopt({})",
                        option.label
                    ),
                );
                return 0;
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
