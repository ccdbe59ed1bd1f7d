//! `libkeepalive_inject.so`: an LD_PRELOAD shim that gives TCP keepalive to programs that never
//! ask for it (seed 002's `nc -l 8080`), configured by `KEEPALIVE_POLICY` in the policy grammar
//! or by libkeepalive's and libdontdie's variables.
//!
//! Rules for everything reachable from a hook, because it runs inside someone else's process:
//! no allocation, no panic (lints in Cargo.toml forbid indexing, unwrap and overflowing
//! arithmetic), no thread-locals beyond libc's own errno, errno as the caller left it, no
//! syscall but the setsockopt calls the policy needs, the fstat that confirms which socket a
//! descriptor holds and socket queries that change nothing (getsockopt, getpeername,
//! getsockname), and no write to any file descriptor the program owns. Configuration is parsed
//! once, at load, by the same parser as everywhere else.
//!
//! `keepalive run` is the launcher; see crates/keepalive-cli.

mod config;
mod hooks;
mod log;
mod marks;
mod real;

use core::ffi::{c_char, c_int};

/// Runs when the dynamic loader maps the library, before the program's `main`. glibc passes
/// `argc`, `argv` and `envp` to `.init_array` functions.
extern "C" fn init(_argc: c_int, _argv: *const *const c_char, envp: *const *mut c_char) {
    real::resolve_all();
    config::load(envp, true);
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn(c_int, *const *const c_char, *const *mut c_char) = init;
