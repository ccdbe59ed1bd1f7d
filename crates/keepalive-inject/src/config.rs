//! The configuration, read from the environment once at load and never written again.

use crate::log;
use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char, c_int};
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use keepalive::policy::injection::{ENV, Injection};
use keepalive::policy::{Mode, Settings, UserTimeout};

/// One setsockopt the policy makes on every socket it manages.
#[derive(Clone, Copy)]
pub struct SockOpt {
    pub level: c_int,
    pub name: c_int,
    pub value: c_int,
    /// As the kernel names it, for the log.
    pub label: &'static str,
}

pub struct Config {
    pub injection: Injection,
    /// `log=` is not off: checked before any work is done for a message.
    pub logging: bool,
    /// The calls to make, in order: the values first, SO_KEEPALIVE last.
    options: [SockOpt; 5],
    n_options: usize,
}

impl Config {
    pub fn options(&self) -> &[SockOpt] {
        self.options.get(..self.n_options).unwrap_or(&[])
    }

    /// Whether setsockopt(level, name) is a keepalive option (SO_KEEPALIVE, TCP_KEEPIDLE,
    /// TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT), set by the policy or not.
    pub fn owns(&self, level: c_int, name: c_int) -> bool {
        (level == libc::SOL_SOCKET && name == libc::SO_KEEPALIVE)
            || (level == libc::IPPROTO_TCP
                && matches!(
                    name,
                    libc::TCP_KEEPIDLE
                        | libc::TCP_KEEPINTVL
                        | libc::TCP_KEEPCNT
                        | libc::TCP_USER_TIMEOUT
                ))
    }

    /// In force mode, the option the program's setsockopt(level, name) would change, when the
    /// policy owns it.
    pub fn guarded(&self, level: c_int, name: c_int) -> Option<&SockOpt> {
        if self.injection.mode != Mode::Force {
            return None;
        }
        self.options()
            .iter()
            .find(|o| o.level == level && o.name == name)
    }
}

const UNINIT: u8 = 0;
const LOADING: u8 = 1;
const READY: u8 = 2;
const OFF: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);

struct Slot(UnsafeCell<MaybeUninit<Config>>);
// SAFETY: written once by the thread that moved STATE from UNINIT to LOADING, read only after
// STATE is READY (Release/Acquire), never written again.
unsafe impl Sync for Slot {}
static CONFIG: Slot = Slot(UnsafeCell::new(MaybeUninit::uninit()));

/// The configuration, once loaded and when the shim is on. A hook that runs before the shim's
/// constructor (another preloaded library's constructor making a socket: the loader runs
/// those in an order of its own) loads it there and then from `environ`, as the constructor
/// would have; the constructor then finds it loaded.
pub fn get() -> Option<&'static Config> {
    let state = match STATE.load(Ordering::Acquire) {
        UNINIT => {
            load(live_environ(), false);
            // Another thread may have won the load: wait for it as below.
            match STATE.load(Ordering::Acquire) {
                LOADING => wait_for_load(),
                state => state,
            }
        }
        LOADING => wait_for_load(),
        state => state,
    };
    if state != READY {
        return None;
    }
    // SAFETY: READY is stored only after CONFIG was written (see `load`).
    Some(unsafe { (*CONFIG.0.get()).assume_init_ref() })
}

/// libc's `environ`, for a load that does not run from the constructor (which gets `envp`).
fn live_environ() -> *const *mut c_char {
    unsafe extern "C" {
        static environ: *const *mut c_char;
    }
    // SAFETY: libc's `environ`, initialised before any constructor runs.
    unsafe { environ }
}

/// The thread loading the configuration (its kernel thread id), while it does, and its
/// process: a child forked meanwhile inherits LOADING, and no thread of its own will finish.
static LOADER: AtomicI32 = AtomicI32::new(0);
static LOADER_PID: AtomicI32 = AtomicI32::new(0);

fn thread_id() -> i32 {
    // SAFETY: gettid takes no argument and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Another thread is loading the configuration (threads another library's constructor started
/// before the shim's ran): wait until it is published, so that no socket made meanwhile goes
/// without the policy. The loading thread itself, if a hook runs inside the load, gets the
/// shim off for that call. A child forked during the load (its loader is a thread of the
/// parent) starts the load over for itself. The load reads the environment and at most a few
/// /proc/sys files, so the wait is short; it is bounded all the same, by the clock (one
/// second), after which the call goes on without the policy rather than hang.
fn wait_for_load() -> u8 {
    if LOADER.load(Ordering::Acquire) == thread_id() {
        return LOADING;
    }
    let start = now_ns();
    loop {
        let state = STATE.load(Ordering::Acquire);
        if state != LOADING {
            return state;
        }
        // SAFETY: getpid takes no argument.
        let me = unsafe { libc::getpid() };
        let loader = LOADER_PID.load(Ordering::Acquire);
        if loader != 0
            && loader != me
            && STATE
                .compare_exchange(LOADING, UNINIT, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            load(live_environ(), false);
            continue;
        }
        if now_ns().saturating_sub(start) > 1_000_000_000 {
            return LOADING;
        }
        // SAFETY: sched_yield takes no argument.
        unsafe { libc::sched_yield() };
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Reads the environment and publishes the configuration. Runs once, from the constructor
/// (`constructor`) or from the first hook that runs before it; a second call returns at once,
/// but the constructor's still does the one part a hook's leaves to it: `inherit=no`'s
/// cleaning of LD_PRELOAD, which needs dladdr and so the loader's lock, which a hook must not
/// take (another thread's dlopen may hold it while it waits for this one).
pub fn load(envp: *const *mut c_char, constructor: bool) {
    if STATE
        .compare_exchange(UNINIT, LOADING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        if constructor
            && let Some(c) = get()
            && !c.injection.inherit
        {
            leave_children_alone(envp);
        }
        return;
    }
    LOADER.store(thread_id(), Ordering::Release);
    // SAFETY: getpid takes no argument.
    LOADER_PID.store(unsafe { libc::getpid() }, Ordering::Release);
    let env = |name: &str| getenv(envp, name);
    let injection = match Injection::from_env(env) {
        Ok(i) => i,
        Err((var, e)) => {
            log::warn_at_load(format_args!(
                "{var}: {e}; the program runs with its sockets untouched"
            ));
            STATE.store(OFF, Ordering::Release);
            return;
        }
    };
    if !injection.enabled {
        STATE.store(OFF, Ordering::Release);
        return;
    }
    let settings = match injection.policy.user_timeout() {
        // `auto` needs every timer value; the ones the policy leaves out are the namespace's.
        Some(UserTimeout::Auto) => match injection.policy.resolve(&kernel_defaults()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn_at_load(format_args!(
                    "{ENV}: {e}; the program runs with its sockets untouched"
                ));
                STATE.store(OFF, Ordering::Release);
                return;
            }
        },
        _ => None,
    };
    let mut config = Config {
        injection,
        logging: injection.log() != keepalive::policy::Log::Off,
        options: [NO_OPT; 5],
        n_options: 0,
    };
    let p = &injection.policy;
    let opts = [
        (
            p.idle(),
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            "TCP_KEEPIDLE",
        ),
        (
            p.interval(),
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            "TCP_KEEPINTVL",
        ),
        (
            p.count(),
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            "TCP_KEEPCNT",
        ),
        (
            user_timeout_ms(p.user_timeout(), settings),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            "TCP_USER_TIMEOUT",
        ),
        (
            Some(1),
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            "SO_KEEPALIVE",
        ),
    ];
    for (value, level, name, label) in opts {
        let Some(value) = value.and_then(|v| c_int::try_from(v).ok()) else {
            continue;
        };
        if let Some(slot) = config.options.get_mut(config.n_options) {
            *slot = SockOpt {
                level,
                name,
                value,
                label,
            };
            config.n_options = config.n_options.saturating_add(1);
        }
    }
    if !config.injection.inherit && constructor {
        leave_children_alone(envp);
    }
    // SAFETY: only this thread got past the compare_exchange, and no reader looks before READY.
    unsafe { (*CONFIG.0.get()).write(config) };
    STATE.store(READY, Ordering::Release);
    if let Some(c) = get() {
        if c.injection.policy.is_empty() {
            log::info(
                c,
                format_args!(
                    "loaded: keepalive on with the kernel's defaults ({ENV}={})",
                    c.injection
                ),
            );
        } else {
            log::info(c, format_args!("loaded: {ENV}={}", c.injection));
        }
    }
}

const NO_OPT: SockOpt = SockOpt {
    level: 0,
    name: 0,
    value: 0,
    label: "",
};

fn user_timeout_ms(given: Option<UserTimeout>, resolved: Option<Settings>) -> Option<u32> {
    match given? {
        UserTimeout::Millis(ms) => Some(ms),
        UserTimeout::Auto => resolved.map(|s| s.user_timeout_ms),
    }
}

/// The namespace's keepalive sysctls, read at load for `user-timeout=auto`.
fn kernel_defaults() -> Settings {
    let d = Settings::LINUX_DEFAULT;
    let read = |path: &CStr, fallback: u32| read_number(path).unwrap_or(fallback);
    Settings {
        idle: read(c"/proc/sys/net/ipv4/tcp_keepalive_time", d.idle),
        interval: read(c"/proc/sys/net/ipv4/tcp_keepalive_intvl", d.interval),
        count: read(c"/proc/sys/net/ipv4/tcp_keepalive_probes", d.count),
        user_timeout_ms: 0,
    }
}

fn read_number(path: &CStr) -> Option<u32> {
    let mut buf = [0u8; 32];
    // SAFETY: a NUL-terminated path; the fd is ours and closed below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: reads at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: fd was opened above.
    unsafe { libc::close(fd) };
    let text = buf.get(..usize::try_from(n).ok()?)?;
    core::str::from_utf8(text).ok()?.trim().parse().ok()
}

/// `getenv` over the `envp` the loader handed the constructor: the value's bytes, UTF-8 or
/// not (the parser refuses what is not).
fn getenv(envp: *const *mut c_char, name: &str) -> Option<&'static [u8]> {
    let entry = find_env(envp, name)?;
    // SAFETY: environment strings are NUL-terminated and live as long as the process.
    let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
    bytes.get(name.len().saturating_add(1)..)
}

/// The `NAME=value` entry of `envp`, if any.
fn find_env(envp: *const *mut c_char, name: &str) -> Option<*mut c_char> {
    find_env_from(envp, name, 0).map(|(_, entry)| entry)
}

/// The first `name=` entry of `envp` at index `from` or later, with its index.
fn find_env_from(
    envp: *const *mut c_char,
    name: &str,
    from: usize,
) -> Option<(usize, *mut c_char)> {
    if envp.is_null() {
        return None;
    }
    let mut i = from;
    loop {
        // SAFETY: envp is the NULL-terminated array the loader passed; we stop at the NULL.
        let entry = unsafe { *envp.add(i) };
        if entry.is_null() {
            return None;
        }
        // SAFETY: each entry is a NUL-terminated string.
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        if bytes
            .strip_prefix(name.as_bytes())
            .is_some_and(|rest| rest.first() == Some(&b'='))
        {
            return Some((i, entry));
        }
        i = i.checked_add(1)?;
    }
}

/// `inherit=no`: take this library out of LD_PRELOAD so that programs this one starts run
/// without it; the loader has already read LD_PRELOAD for this process. The other entries are
/// kept, joined by ':', in place in the variable's own string (it only gets shorter, so it
/// fits); when none is left the variable is removed, because an `LD_PRELOAD=` of blanks is
/// still a variable every child sees (and a program that tests whether it is set, or copies
/// the environment somewhere, is not left alone).
///
/// Removal is glibc's (or musl's) `unsetenv`: this runs once, before `main` (from the
/// constructor, or from the first hook another library's constructor reached before it),
/// where the hooks' rules (no allocation, no locks) do not apply;
/// and `unsetenv` allocates nothing anyway: it moves the later pointers of `environ` down one
/// place, in the array itself. It acts on `environ`, which is the array the program's `main`
/// and `getenv` see, even if another library's constructor replaced it by a `setenv` before
/// this one ran; shifting `envp` ourselves would miss that case.
///
/// An environment may hold LD_PRELOAD more than once (execve takes any array); the loader
/// reads one of them, so every one is cleaned, and the variable is removed only when none
/// keeps an entry.
fn leave_children_alone(envp: *const *mut c_char) {
    let own = own_file();
    let (mut from, mut any_kept, mut seen) = (0usize, false, false);
    while let Some((i, entry)) = find_env_from(envp, "LD_PRELOAD", from) {
        seen = true;
        from = i.saturating_add(1);
        // SAFETY: the entry is a NUL-terminated string in the process's writable environment
        // block.
        let len = unsafe { CStr::from_ptr(entry) }.to_bytes().len();
        // SAFETY: `len` bytes starting at `entry` are that string; the byte after them is its
        // NUL, also ours to write.
        let bytes = unsafe { core::slice::from_raw_parts_mut(entry.cast::<u8>(), len) };
        let Some(value) = bytes.get_mut("LD_PRELOAD=".len()..) else {
            continue;
        };
        let kept = keep_others(value, own);
        any_kept |= kept > 0;
        if let Some(end) = value.get_mut(kept) {
            // The value ends after the entries kept; the bytes after the new NUL are unused.
            *end = 0;
        }
    }
    if seen && !any_kept {
        // SAFETY: a NUL-terminated name; see above for why unsetenv is safe to call here (it
        // removes every LD_PRELOAD entry).
        unsafe { libc::unsetenv(c"LD_PRELOAD".as_ptr()) };
    }
}

/// The device and inode of this library's file, as the loader mapped it: dladdr(3) of one of
/// its own functions names the file.
fn own_file() -> Option<(u64, u64)> {
    // SAFETY: an all-zero Dl_info is a valid out-buffer; dladdr fills it for an address in a
    // mapped object.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    let here = own_file as *const () as *const libc::c_void;
    // SAFETY: `here` is this function's own address.
    if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    file_id(info.dli_fname)
}

/// The device and inode of the file at a NUL-terminated path.
fn file_id(path: *const c_char) -> Option<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; stat writes into `st` only.
    (unsafe { libc::stat(path, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Whether an LD_PRELOAD entry is this library: by its file name, or, under another name (a
/// symlink, a copy renamed), by being the same file.
fn is_this_library(token: &[u8], own: Option<(u64, u64)>) -> bool {
    let base = token.rsplit(|b| *b == b'/').next().unwrap_or(&[]);
    if base == b"libkeepalive_inject.so" {
        return true;
    }
    let Some(own) = own else { return false };
    let mut path = [0u8; 4096];
    let Some(dst) = path.get_mut(..token.len()) else {
        return false;
    };
    dst.copy_from_slice(token);
    // The byte after the token is still 0: the buffer is longer than the token.
    path.len() > token.len() && file_id(path.as_ptr().cast()) == Some(own)
}

/// Rewrites an LD_PRELOAD value in place, leaving out this library and empty entries, the
/// others joined by ':'. Returns the new length, which is at most the old one. Separators are
/// ':' and ' ', as for the loader.
fn keep_others(value: &mut [u8], own: Option<(u64, u64)>) -> usize {
    let mut write = 0usize;
    let mut read = 0usize;
    while read < value.len() {
        let start = read;
        while value.get(read).is_some_and(|b| *b != b':' && *b != b' ') {
            read = read.saturating_add(1);
        }
        let end = read;
        read = read.saturating_add(1);
        let Some(token) = value.get(start..end) else {
            break;
        };
        if token.is_empty() || is_this_library(token, own) {
            continue;
        }
        if write > 0 {
            if let Some(b) = value.get_mut(write) {
                *b = b':';
            }
            write = write.saturating_add(1);
        }
        // The token moves left (or stays): `write` never passes `start`.
        value.copy_within(start..end, write);
        write = write.saturating_add(end.saturating_sub(start));
    }
    write
}
