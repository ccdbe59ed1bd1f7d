//! Which file descriptors are TCP sockets the shim saw created, and which carry its policy:
//! two bitmaps of atomics in static memory (zero pages until touched), no locks.
//!
//! File descriptors past [`CAPACITY`] are never marked: the shim then treats them as sockets
//! it did not create, and leaves them alone.

use core::ffi::c_int;
use core::sync::atomic::{AtomicU64, Ordering};

/// File descriptors covered: 0..1_048_576 (the kernel's default `nr_open` ceiling).
pub const CAPACITY: usize = 1 << 20;
const WORDS: usize = CAPACITY / 64;

pub struct FdSet([AtomicU64; WORDS]);

/// TCP sockets (AF_INET or AF_INET6, SOCK_STREAM) created through the shim's socket() or
/// accepted from such a listener.
pub static TCP: FdSet = FdSet::new();
/// Sockets that carry the policy.
pub static MANAGED: FdSet = FdSet::new();

impl FdSet {
    const fn new() -> Self {
        FdSet([const { AtomicU64::new(0) }; WORDS])
    }

    fn slot(&self, fd: c_int) -> Option<(&AtomicU64, u64)> {
        let fd = usize::try_from(fd).ok()?;
        let word = self.0.get(fd / 64)?;
        Some((word, 1u64 << (fd % 64)))
    }

    pub fn set(&self, fd: c_int, on: bool) {
        if let Some((word, bit)) = self.slot(fd) {
            if on {
                word.fetch_or(bit, Ordering::Relaxed);
            } else {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    pub fn contains(&self, fd: c_int) -> bool {
        self.slot(fd)
            .is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
    }
}
