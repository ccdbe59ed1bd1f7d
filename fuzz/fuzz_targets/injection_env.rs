//! `Injection::from_env` on an arbitrary environment (`NAME=VALUE` entries separated by NUL):
//! see `check_env` in crates/keepalive/tests/fuzz_checks.rs, which `cargo test` also runs over
//! fuzz/corpus/.
#![no_main]

#[path = "../../crates/keepalive/tests/fuzz_checks.rs"]
#[allow(dead_code)]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_checks::check_env(data);
});
