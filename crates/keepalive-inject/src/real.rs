//! The functions the hooks stand in front of, looked up once with `dlsym(RTLD_NEXT, ...)` so
//! that other preloaded libraries and libc itself still see every call.
//!
//! `resolve_all` runs in the constructor. A hook that runs before it (another library's
//! constructor making a socket, or a thread it started) never calls dlsym: dlsym takes the
//! dynamic loader's lock, which a dlopen in another thread holds while it runs constructors
//! that may be waiting for this very thread, and the program would hang for good. Until the
//! constructor has run, a hook makes the system call itself (the raw `syscall(2)` of the same
//! name, which sets errno as libc's wrapper does).

use core::ffi::{CStr, c_int, c_long, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use libc::{sockaddr, socklen_t};

struct Symbol {
    name: &'static CStr,
    addr: AtomicUsize,
}

impl Symbol {
    const fn new(name: &'static CStr) -> Self {
        Symbol {
            name,
            addr: AtomicUsize::new(0),
        }
    }

    /// The next definition, once the constructor has looked it up; 0 before.
    fn get(&self) -> usize {
        self.addr.load(Ordering::Acquire)
    }

    fn resolve(&self) {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name, from the constructor.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        self.addr.store(found, Ordering::Release);
    }
}

/// A system call's result as libc's wrappers give it: -1 with errno set on failure.
fn int(rc: c_long) -> c_int {
    rc as c_int
}

static SOCKET: Symbol = Symbol::new(c"socket");
static CONNECT: Symbol = Symbol::new(c"connect");
static BIND: Symbol = Symbol::new(c"bind");
static SETSOCKOPT: Symbol = Symbol::new(c"setsockopt");
static ACCEPT: Symbol = Symbol::new(c"accept");
static ACCEPT4: Symbol = Symbol::new(c"accept4");
static DUP: Symbol = Symbol::new(c"dup");
static DUP2: Symbol = Symbol::new(c"dup2");
static DUP3: Symbol = Symbol::new(c"dup3");
static FCNTL: Symbol = Symbol::new(c"fcntl");
static FCNTL64: Symbol = Symbol::new(c"fcntl64");
static SENDTO: Symbol = Symbol::new(c"sendto");
static SENDMSG: Symbol = Symbol::new(c"sendmsg");
static SENDMMSG: Symbol = Symbol::new(c"sendmmsg");

pub fn resolve_all() {
    for s in [
        &SOCKET,
        &CONNECT,
        &BIND,
        &SETSOCKOPT,
        &ACCEPT,
        &ACCEPT4,
        &DUP,
        &DUP2,
        &DUP3,
        &FCNTL,
        &FCNTL64,
        &SENDTO,
        &SENDMSG,
        &SENDMMSG,
    ] {
        s.resolve();
    }
}

// Each wrapper turns the stored address back into the function's C signature.

pub unsafe fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    match SOCKET.get() {
        // SAFETY: socket(2) takes three ints.
        0 => int(unsafe { libc::syscall(libc::SYS_socket, domain, ty, protocol) }),
        // SAFETY: the address is libc's (or the next library's) `socket`, which has this signature.
        addr => unsafe {
            let f: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int = core::mem::transmute(addr);
            f(domain, ty, protocol)
        },
    }
}

pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match CONNECT.get() {
        // SAFETY: connect(2) with the caller's arguments.
        0 => int(unsafe { libc::syscall(libc::SYS_connect, fd, addr, len) }),
        // SAFETY: the address is the next `connect`, which has this signature; the arguments are
        // the caller's, passed on unchanged.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int =
                core::mem::transmute(real);
            f(fd, addr, len)
        },
    }
}

pub unsafe fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match BIND.get() {
        // SAFETY: bind(2) with the caller's arguments.
        0 => int(unsafe { libc::syscall(libc::SYS_bind, fd, addr, len) }),
        // SAFETY: as for connect.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int =
                core::mem::transmute(real);
            f(fd, addr, len)
        },
    }
}

/// The next `setsockopt`, for callers that make several calls in a row.
pub type SetsockoptFn =
    unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;

pub fn setsockopt_fn() -> Option<SetsockoptFn> {
    match SETSOCKOPT.get() {
        0 => None,
        // SAFETY: the address is the next `setsockopt`, which has this signature.
        real => Some(unsafe { core::mem::transmute::<usize, SetsockoptFn>(real) }),
    }
}

pub unsafe fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    match setsockopt_fn() {
        // SAFETY: setsockopt(2) with the caller's arguments.
        None => int(unsafe { libc::syscall(libc::SYS_setsockopt, fd, level, name, value, len) }),
        // SAFETY: the caller vouches for `value` and `len`; the rest is passed on unchanged.
        Some(f) => unsafe { f(fd, level, name, value, len) },
    }
}

pub unsafe fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match ACCEPT.get() {
        // SAFETY: accept(2) is accept4(2) without flags.
        0 => int(unsafe { libc::syscall(libc::SYS_accept4, fd, addr, len, 0) }),
        // SAFETY: the address is the next `accept`, which has this signature; the caller's
        // arguments are passed on unchanged.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int =
                core::mem::transmute(real);
            f(fd, addr, len)
        },
    }
}

pub unsafe fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int {
    match ACCEPT4.get() {
        // SAFETY: accept4(2) with the caller's arguments.
        0 => int(unsafe { libc::syscall(libc::SYS_accept4, fd, addr, len, flags) }),
        // SAFETY: as for accept, with accept4's extra flags argument.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int =
                core::mem::transmute(real);
            f(fd, addr, len, flags)
        },
    }
}

pub unsafe fn dup(fd: c_int) -> c_int {
    match DUP.get() {
        // SAFETY: dup(2) takes an int.
        0 => int(unsafe { libc::syscall(libc::SYS_dup, fd) }),
        // SAFETY: the address is the next `dup`, which has this signature.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int) -> c_int = core::mem::transmute(real);
            f(fd)
        },
    }
}

pub unsafe fn dup2(old: c_int, new: c_int) -> c_int {
    match DUP2.get() {
        0 => raw_dup2(old, new),
        // SAFETY: the address is the next `dup2`, which has this signature.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, c_int) -> c_int = core::mem::transmute(real);
            f(old, new)
        },
    }
}

pub unsafe fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    match DUP3.get() {
        // SAFETY: dup3(2) takes three ints.
        0 => int(unsafe { libc::syscall(libc::SYS_dup3, old, new, flags) }),
        // SAFETY: the address is the next `dup3`, which has this signature.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int = core::mem::transmute(real);
            f(old, new, flags)
        },
    }
}

/// The next `fcntl` (or `fcntl64`, the name programs built against glibc 2.28 and later call),
/// called as the variadic function it is, with the one argument every command takes at most
/// (an int or a pointer, passed on in full).
pub unsafe fn fcntl(sixty_four: bool, fd: c_int, cmd: c_int, arg: usize) -> c_int {
    let symbol = if sixty_four { &FCNTL64 } else { &FCNTL };
    match symbol.get() {
        // SAFETY: fcntl(2) with the caller's argument, passed on in full.
        0 => int(unsafe { libc::syscall(libc::SYS_fcntl, fd, cmd, arg) }),
        // SAFETY: the address is the next `fcntl`/`fcntl64`, declared
        // `int fcntl(int, int, ...)`; the caller's third argument is passed on unchanged.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, c_int, ...) -> c_int = core::mem::transmute(real);
            f(fd, cmd, arg)
        },
    }
}

pub unsafe fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const sockaddr,
    addr_len: socklen_t,
) -> isize {
    match SENDTO.get() {
        0 => {
            // SAFETY: sendto(2) with the caller's arguments.
            let rc =
                unsafe { libc::syscall(libc::SYS_sendto, fd, buf, len, flags, addr, addr_len) };
            rc as isize
        }
        // SAFETY: the address is the next `sendto`, which has this signature; the caller's
        // arguments are passed on unchanged.
        real => unsafe {
            let f: unsafe extern "C" fn(
                c_int,
                *const c_void,
                usize,
                c_int,
                *const sockaddr,
                socklen_t,
            ) -> isize = core::mem::transmute(real);
            f(fd, buf, len, flags, addr, addr_len)
        },
    }
}

pub unsafe fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    match SENDMSG.get() {
        // SAFETY: sendmsg(2) with the caller's arguments.
        0 => (unsafe { libc::syscall(libc::SYS_sendmsg, fd, msg, flags) }) as isize,
        // SAFETY: the address is the next `sendmsg`, which has this signature.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, *const libc::msghdr, c_int) -> isize =
                core::mem::transmute(real);
            f(fd, msg, flags)
        },
    }
}

pub unsafe fn sendmmsg(
    fd: c_int,
    msgs: *mut libc::mmsghdr,
    count: core::ffi::c_uint,
    flags: c_int,
) -> c_int {
    match SENDMMSG.get() {
        // SAFETY: sendmmsg(2) with the caller's arguments.
        0 => int(unsafe { libc::syscall(libc::SYS_sendmmsg, fd, msgs, count, flags) }),
        // SAFETY: the address is the next `sendmmsg`, which has this signature.
        real => unsafe {
            let f: unsafe extern "C" fn(
                c_int,
                *mut libc::mmsghdr,
                core::ffi::c_uint,
                c_int,
            ) -> c_int = core::mem::transmute(real);
            f(fd, msgs, count, flags)
        },
    }
}

/// dup2(2) by system calls: dup2 itself where the architecture has it; elsewhere dup3, which
/// refuses old == new, so that case is dup2's own: `old` if it is open.
fn raw_dup2(old: c_int, new: c_int) -> c_int {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: dup2(2) takes two ints.
        int(unsafe { libc::syscall(libc::SYS_dup2, old, new) })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        if old == new {
            // SAFETY: fcntl(F_GETFD) only asks whether `old` is open.
            let rc = int(unsafe { libc::syscall(libc::SYS_fcntl, old, libc::F_GETFD, 0) });
            return if rc < 0 { rc } else { old };
        }
        // SAFETY: dup3(2) takes three ints.
        int(unsafe { libc::syscall(libc::SYS_dup3, old, new, 0) })
    }
}
