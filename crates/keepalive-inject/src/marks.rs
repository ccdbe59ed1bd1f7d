//! Which descriptors hold a TCP socket the shim saw made, and whether that socket carries the
//! policy: a table of atomics in static memory (zero pages until touched), indexed by
//! descriptor number, holding the socket's inode number as fstat(2) reported it when it was
//! marked, shifted left three bits; bit 0 set when the policy went on, bit 1 when the program
//! set a keepalive option itself (a filter's bind or connect then leaves its choice alone), bit
//! 2 when the socket has more than one number (it was duplicated). 0 is "no mark".
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
//! copy a mark to the new number, so duplicates are guarded too; what later happens to the
//! socket through one number (the policy going on at a filtered connect, the program's own
//! choice) is spread to every number marked with the same inode: a search of the table up to
//! the highest number marked, made only for a socket that was duplicated.
//!
//! Descriptors past [`CAPACITY`] are never marked: the shim then treats them as sockets it did
//! not make, and leaves them alone.

use core::ffi::c_int;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Descriptors covered: 0..1_048_576 (the kernel's default `nr_open` ceiling).
pub const CAPACITY: usize = 1 << 20;

pub struct Marks {
    table: [AtomicU64; CAPACITY],
    /// One past the highest descriptor ever marked: how far a search for duplicates looks.
    end: AtomicUsize,
}

const MANAGED: u64 = 1;
const CHOSE: u64 = 2;
const SHARED: u64 = 4;
const SHIFT: u32 = 3;

/// The table every hook shares.
pub static MARKS: Marks = Marks {
    table: [const { AtomicU64::new(0) }; CAPACITY],
    end: AtomicUsize::new(0),
};

/// What the table says of a descriptor.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mark(u64);

impl Mark {
    /// The socket carries the policy.
    pub fn managed(self) -> bool {
        self.0 & MANAGED != 0
    }

    /// The program set a keepalive option on it itself.
    pub fn chose(self) -> bool {
        self.0 & CHOSE != 0
    }

    /// The socket's inode number.
    pub fn inode(self) -> u64 {
        self.0 >> SHIFT
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

    fn store(&self, fd: c_int, raw: u64) {
        if let Some(slot) = self.slot(fd) {
            slot.store(raw, Ordering::Relaxed);
            if let Ok(i) = usize::try_from(fd) {
                self.end.fetch_max(i.saturating_add(1), Ordering::Relaxed);
            }
        }
    }

    /// Marks `fd` as the TCP socket with inode `inode`, just made (one number), with or
    /// without the policy.
    pub fn mark(&self, fd: c_int, inode: u64, managed: bool) {
        self.store(fd, inode.wrapping_shl(SHIFT) | u64::from(managed));
    }

    /// Sets `bits` on every descriptor marked with `inode`: the policy went on, or the program
    /// chose, through one number of a socket the program had duplicated, and the socket's other
    /// numbers must say so too (force mode guards them; a filter leaves the choice alone).
    fn spread(&self, inode: u64, bits: u64) {
        let end = self.end.load(Ordering::Relaxed).min(CAPACITY);
        for slot in self.table.iter().take(end) {
            let raw = slot.load(Ordering::Relaxed);
            if raw != 0 && raw >> SHIFT == inode && raw & bits != bits {
                // Only if it still holds the same mark: a concurrent re-mark wins.
                let _ =
                    slot.compare_exchange(raw, raw | bits, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// The policy went on the socket `inode` through one of its numbers (a filter's connect or
    /// bind): `fd` is marked so, and so are its duplicates.
    pub fn mark_managed(&self, fd: c_int, inode: u64) {
        let Some(slot) = self.slot(fd) else {
            return;
        };
        let raw = slot.load(Ordering::Relaxed);
        if raw != 0 && raw >> SHIFT == inode {
            slot.fetch_or(MANAGED, Ordering::Relaxed);
            if raw & SHARED != 0 {
                self.spread(inode, MANAGED);
            }
        } else {
            self.mark(fd, inode, true);
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

    /// The program set a keepalive option on `fd` itself: on the socket, so on every number
    /// it has.
    pub fn note_choice(&self, fd: c_int) {
        if let Some(slot) = self.slot(fd) {
            let raw = slot.fetch_or(CHOSE, Ordering::Relaxed);
            if raw & SHARED != 0 {
                self.spread(raw >> SHIFT, CHOSE);
            }
        }
    }

    /// `to` now refers to what `from` refers to (dup and friends): the same open file, so the
    /// same socket and the same mark.
    pub fn copy(&self, from: c_int, to: c_int) {
        let mark = self.get(from).map_or(0, |m| m.0);
        if mark == 0 {
            self.clear(to);
        } else {
            if let Some(slot) = self.slot(from) {
                slot.fetch_or(SHARED, Ordering::Relaxed);
            }
            self.store(to, mark | SHARED);
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
