//! The functions the hooks stand in front of, looked up once with `dlsym(RTLD_NEXT, ...)` so
//! that other preloaded libraries and libc itself still see every call.
//!
//! `resolve_all` runs in the constructor; a hook that runs before it (another library's
//! constructor calling socket()) looks its own symbol up on the spot. Races are harmless: every
//! thread stores the same address.

use core::ffi::{CStr, c_int, c_void};
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

    fn get(&self) -> usize {
        let addr = self.addr.load(Ordering::Acquire);
        if addr != 0 {
            return addr;
        }
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name is thread-safe.
        let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
        self.addr.store(found, Ordering::Release);
        found
    }
}

static SOCKET: Symbol = Symbol::new(c"socket");
static CONNECT: Symbol = Symbol::new(c"connect");
static BIND: Symbol = Symbol::new(c"bind");
static SETSOCKOPT: Symbol = Symbol::new(c"setsockopt");
static ACCEPT: Symbol = Symbol::new(c"accept");
static ACCEPT4: Symbol = Symbol::new(c"accept4");

pub fn resolve_all() {
    for s in [&SOCKET, &CONNECT, &BIND, &SETSOCKOPT, &ACCEPT, &ACCEPT4] {
        s.get();
    }
}

/// What a hook returns when the real function cannot be found: -1 with ENOSYS.
fn missing() -> c_int {
    crate::hooks::set_errno(libc::ENOSYS);
    -1
}

// Each wrapper turns the stored address back into the function's C signature.

pub unsafe fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    match SOCKET.get() {
        0 => missing(),
        // SAFETY: the address is libc's (or the next library's) `socket`, which has this signature.
        addr => unsafe {
            let f: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int = core::mem::transmute(addr);
            f(domain, ty, protocol)
        },
    }
}

pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    match CONNECT.get() {
        0 => missing(),
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
        0 => missing(),
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
        None => missing(),
        // SAFETY: the caller vouches for `value` and `len`; the rest is passed on unchanged.
        Some(f) => unsafe { f(fd, level, name, value, len) },
    }
}

pub unsafe fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    match ACCEPT.get() {
        0 => missing(),
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
        0 => missing(),
        // SAFETY: as for accept, with accept4's extra flags argument.
        real => unsafe {
            let f: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int =
                core::mem::transmute(real);
            f(fd, addr, len, flags)
        },
    }
}
