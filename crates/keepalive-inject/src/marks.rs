//! Which descriptors hold a TCP socket the shim saw made, and whether that socket carries the
//! policy: a table of atomics in static memory (zero pages until touched), indexed by
//! descriptor number, holding the socket's inode number as fstat(2) reported it when it was
//! marked, shifted left two bits; bit 0 set when the policy went on, bit 1 when the program set
//! a keepalive option itself (a filter's bind or connect then leaves its choice alone). 0 is
//! "no mark".
//!
//! Descriptor numbers are reused as soon as they are closed, and a program can close or make
//! one without the shim seeing it (raw `syscall(SYS_close)`, io_uring, a library calling the
//! kernel directly). So a mark is a claim to be checked, never trusted: before the shim acts
//! on a marked descriptor, [`Marks::verified`] asks the kernel for the inode it holds now, and
//! only the same socket passes (sockfs gives every socket its own inode number). That check is
//! the authority, so closing a descriptor does not clear its mark: a close can happen where
//! clearing would be wrong (a vfork child shares this table but not the descriptors,
//! `close_range(CLOSE_RANGE_UNSHARE)` closes another table's, and a clear after the real call
//! races with a new socket taking the number). The hooks on dup, dup2, dup3 and fcntl(F_DUPFD)
//! copy a mark to the new number, so duplicates are guarded too.
//!
//! Descriptors past [`CAPACITY`] are never marked: the shim then treats them as sockets it did
//! not make, and leaves them alone.

use core::ffi::c_int;
use core::sync::atomic::{AtomicU64, Ordering};

/// Descriptors covered: 0..1_048_576 (the kernel's default `nr_open` ceiling).
pub const CAPACITY: usize = 1 << 20;

pub struct Marks {
    table: [AtomicU64; CAPACITY],
}

/// The table every hook shares.
pub static MARKS: Marks = Marks {
    table: [const { AtomicU64::new(0) }; CAPACITY],
};

/// What the table says of a descriptor.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mark(u64);

impl Mark {
    /// The socket carries the policy.
    pub fn managed(self) -> bool {
        self.0 & 1 == 1
    }

    /// The program set a keepalive option on it itself.
    pub fn chose(self) -> bool {
        self.0 & 2 == 2
    }

    /// The socket's inode number.
    pub fn inode(self) -> u64 {
        self.0 >> 2
    }
}

/// The inode of the socket `fd` holds now; `None` if it holds no socket. errno is left as it
/// was.
pub fn socket_inode(fd: c_int) -> Option<u64> {
    let saved = crate::hooks::errno();
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes into `st` only.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    crate::hooks::set_errno(saved);
    (rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(st.st_ino)
}

impl Marks {
    fn slot(&self, fd: c_int) -> Option<&AtomicU64> {
        self.table.get(usize::try_from(fd).ok()?)
    }

    /// Marks `fd` as the TCP socket with inode `inode`, with or without the policy.
    pub fn mark(&self, fd: c_int, inode: u64, managed: bool) {
        if let Some(slot) = self.slot(fd) {
            slot.store(
                inode.wrapping_shl(2) | u64::from(managed),
                Ordering::Relaxed,
            );
        }
    }

    /// `fd` is no TCP socket of the shim's.
    pub fn clear(&self, fd: c_int) {
        if let Some(slot) = self.slot(fd)
            && slot.load(Ordering::Relaxed) != 0
        {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// The program set a keepalive option on `fd` itself.
    pub fn note_choice(&self, fd: c_int) {
        if let Some(slot) = self.slot(fd) {
            slot.fetch_or(2, Ordering::Relaxed);
        }
    }

    /// `to` now refers to what `from` refers to (dup and friends): the same open file, so the
    /// same socket and the same mark.
    pub fn copy(&self, from: c_int, to: c_int) {
        let mark = self.get(from).map_or(0, |m| m.0);
        if mark == 0 {
            self.clear(to);
        } else if let Some(slot) = self.slot(to) {
            slot.store(mark, Ordering::Relaxed);
        }
    }

    /// The mark of `fd`, unchecked: only for deciding whether there is anything to check.
    pub fn get(&self, fd: c_int) -> Option<Mark> {
        let raw = self.slot(fd)?.load(Ordering::Relaxed);
        (raw != 0).then_some(Mark(raw))
    }

    /// The mark of `fd` if it still holds the socket that was marked (one fstat); a mark left
    /// over from a socket closed behind the shim's back is dropped.
    pub fn verified(&self, fd: c_int) -> Option<Mark> {
        let mark = self.get(fd)?;
        if socket_inode(fd) == Some(mark.inode()) {
            Some(mark)
        } else {
            self.clear(fd);
            None
        }
    }
}
