//! The `bpf(2)` system call, command by command. `union bpf_attr` (include/uapi/linux/bpf.h)
//! is filled as bytes at the offsets the kernel defines, each command's layout written out
//! where it is used; the kernel requires every byte past the fields it knows to be zero
//! (`bpf_check_uarg_tail_zero`), which a zeroed buffer gives.

use super::insn::Insn;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// enum bpf_cmd
const MAP_CREATE: i32 = 0;
const MAP_LOOKUP_ELEM: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const PROG_LOAD: i32 = 5;
const OBJ_PIN: i32 = 6;
const OBJ_GET: i32 = 7;
const PROG_GET_FD_BY_ID: i32 = 13;
const OBJ_GET_INFO_BY_FD: i32 = 15;
const PROG_QUERY: i32 = 16;
const LINK_CREATE: i32 = 28;
const LINK_UPDATE: i32 = 29;
const LINK_DETACH: i32 = 34;

/// `BPF_MAP_TYPE_ARRAY`: fixed slots indexed by a u32, zero-filled at creation.
const MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_F_REPLACE`: a link update that fails unless the link still runs `old_prog_fd`.
const F_REPLACE: u32 = 1 << 2;
/// `BPF_F_QUERY_EFFECTIVE`: list what runs for the cgroup, its ancestors' programs included.
const F_QUERY_EFFECTIVE: u32 = 1;

/// Room for a verifier log.
const LOG_SIZE: usize = 1 << 16;

/// `union bpf_attr`, as bytes.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn ptr<T>(&mut self, off: usize, p: *const T) -> &mut Self {
        self.u64(off, p as usize as u64)
    }
    fn fd(&mut self, off: usize, fd: BorrowedFd<'_>) -> &mut Self {
        self.u32(off, fd.as_raw_fd() as u32)
    }
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
}

fn bpf(cmd: i32, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: attr is a live, writable, zero-padded buffer of the size passed; every pointer
    // placed in it (by the callers below) points to memory that outlives this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf_fd(cmd: i32, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)? as RawFd;
    // SAFETY: the commands passed here return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = b;
    }
    out
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// A one-slot-per-key array map (`BPF_MAP_CREATE`: map_type 0, key_size 4, value_size 8,
/// max_entries 12, map_name 28).
pub fn array_map(name: &str, value_size: u32, entries: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, MAP_TYPE_ARRAY)
        .u32(4, 4)
        .u32(8, value_size)
        .u32(12, entries);
    a.0[28..44].copy_from_slice(&name16(name));
    bpf_fd(MAP_CREATE, &mut a)
}

/// `BPF_MAP_UPDATE_ELEM` (map_fd 0, key 8, value 16, flags 24) with BPF_ANY.
pub fn map_update(map: BorrowedFd<'_>, key: u32, value: &[u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.fd(0, map).ptr(8, &key).ptr(16, value.as_ptr());
    bpf(MAP_UPDATE_ELEM, &mut a).map(drop)
}

/// `BPF_MAP_LOOKUP_ELEM` (map_fd 0, key 8, value 16): the value is copied into `value`,
/// which must be the map's value size.
pub fn map_lookup(map: BorrowedFd<'_>, key: u32, value: &mut [u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.fd(0, map).ptr(8, &key).ptr(16, value.as_mut_ptr());
    bpf(MAP_LOOKUP_ELEM, &mut a).map(drop)
}

/// Why a program did not load.
#[derive(Debug)]
pub struct LoadError {
    pub source: io::Error,
    /// The verifier's account, when it rejected the program.
    pub log: String,
}

/// `BPF_PROG_LOAD` (prog_type 0, insn_cnt 4, insns 8, license 16, log_level 24, log_size 28,
/// log_buf 32, prog_name 48, expected_attach_type 68). Loaded first without a log; if the
/// kernel refuses, loaded again with one so the verifier says why.
pub fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    name: &str,
    insns: &[Insn],
) -> Result<OwnedFd, LoadError> {
    let license = c"Dual MIT/GPL";
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut a = Attr::new();
        a.u32(0, prog_type)
            .u32(4, insns.len() as u32)
            .ptr(8, insns.as_ptr())
            .ptr(16, license.as_ptr())
            .u32(68, expected_attach_type);
        a.0[48..64].copy_from_slice(&name16(name));
        if let Some(log) = log {
            a.u32(24, 1)
                .u32(28, log.len() as u32)
                .ptr(32, log.as_mut_ptr());
            bpf_fd(PROG_LOAD, &mut a)
        } else {
            bpf_fd(PROG_LOAD, &mut a)
        }
    };
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; LOG_SIZE];
            match attempt(Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(source) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    let log = String::from_utf8_lossy(&log[..end]).trim().to_owned();
                    // Without a verifier log the first error is the one that matters
                    // (EPERM for missing capabilities, EINVAL for an unknown program type).
                    let source = if log.is_empty() { first } else { source };
                    Err(LoadError { source, log })
                }
            }
        }
    }
}

/// `BPF_LINK_CREATE` (prog_fd 0, target_fd 4, attach_type 8, flags 12): attaches `prog` to
/// the cgroup open as `target`. The link stays attached while a descriptor or a bpffs pin
/// holds it.
pub fn link_create(
    prog: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.fd(0, prog).fd(4, target).u32(8, attach_type);
    bpf_fd(LINK_CREATE, &mut a)
}

/// `BPF_LINK_UPDATE` (link_fd 0, new_prog_fd 4, flags 8, old_prog_fd 12): swaps the program a
/// link runs in one step, so no event goes without a program. With `old`, fails (EPERM) unless
/// the link still runs that program.
pub fn link_update(
    link: BorrowedFd<'_>,
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut a = Attr::new();
    a.fd(0, link).fd(4, new);
    if let Some(old) = old {
        a.u32(8, F_REPLACE).fd(12, old);
    }
    bpf(LINK_UPDATE, &mut a).map(drop)
}

/// `BPF_LINK_DETACH` (link_fd 0): detaches the link now, whoever else holds it.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut a = Attr::new();
    a.fd(0, link);
    bpf(LINK_DETACH, &mut a).map(drop)
}

/// `BPF_OBJ_PIN` (pathname 0, bpf_fd 8): makes `path` in a bpffs hold the object.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let path = c_path(path)?;
    let mut a = Attr::new();
    a.ptr(0, path.as_ptr()).fd(8, fd);
    bpf(OBJ_PIN, &mut a).map(drop)
}

/// `BPF_OBJ_GET` (pathname 0): opens a pinned object.
pub fn pinned(path: &Path) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    let mut a = Attr::new();
    a.ptr(0, path.as_ptr());
    bpf_fd(OBJ_GET, &mut a)
}

/// `BPF_OBJ_GET_INFO_BY_FD` (bpf_fd 0, info_len 4, info 8) into `info`.
fn info(fd: BorrowedFd<'_>, info: &mut [u8]) -> io::Result<()> {
    let mut a = Attr::new();
    a.fd(0, fd)
        .u32(4, info.len() as u32)
        .ptr(8, info.as_mut_ptr());
    bpf(OBJ_GET_INFO_BY_FD, &mut a).map(drop)
}

/// What `struct bpf_link_info` says of a cgroup link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    /// The cgroup's id (its cgroupfs inode number); 0 once detached.
    pub cgroup_id: u64,
    pub attach_type: u32,
}

/// `struct bpf_link_info`: type 0, id 4, prog_id 8, cgroup.cgroup_id 16, cgroup.attach_type 24.
pub fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut b = [0u64; 8];
    // SAFETY: [u64; 8] is 64 initialised bytes; viewing them as u8 is always valid.
    let bytes = unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<u8>(), 64) };
    info(link, bytes)?;
    let u32_at = |off: usize| {
        u32::from_ne_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
    };
    Ok(LinkInfo {
        id: u32_at(4),
        prog_id: u32_at(8),
        cgroup_id: b[2],
        attach_type: u32_at(24),
    })
}

/// What `struct bpf_prog_info` says of a program: id 4, name 64..80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    pub name: String,
}

pub fn prog_info(prog: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    let mut b = [0u64; 16];
    // SAFETY: [u64; 16] is 128 initialised bytes; viewing them as u8 is always valid.
    let bytes = unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<u8>(), 128) };
    info(prog, bytes)?;
    let name = &bytes[64..80];
    let end = name.iter().position(|c| *c == 0).unwrap_or(16);
    Ok(ProgInfo {
        id: u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

/// `BPF_PROG_GET_FD_BY_ID` (prog_id 0).
pub fn prog_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, id);
    bpf_fd(PROG_GET_FD_BY_ID, &mut a)
}

/// `BPF_PROG_QUERY` (target_fd 0, attach_type 4, query_flags 8, prog_ids 16, prog_cnt 24): the
/// ids of the programs attached to a cgroup at `attach_type`, links included; with
/// `effective`, every program that runs for it, its ancestors' included, in the order they run.
pub fn prog_query(
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    effective: bool,
) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut a = Attr::new();
        a.fd(0, cgroup)
            .u32(4, attach_type)
            .u32(8, if effective { F_QUERY_EFFECTIVE } else { 0 })
            .ptr(16, ids.as_mut_ptr())
            .u32(24, ids.len() as u32);
        match bpf(PROG_QUERY, &mut a) {
            Ok(_) => {
                ids.truncate(a.get_u32(24) as usize);
                return Ok(ids);
            }
            // ENOSPC: more programs than room; prog_cnt now says how many.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && ids.len() < 1 << 16 => {
                let need = a.get_u32(24).max(ids.len() as u32 * 2);
                ids = vec![0; need as usize];
            }
            Err(e) => return Err(e),
        }
    }
}
