//! Reaching into another process's sockets: its socket descriptors from /proc, and duplicates
//! of them through `pidfd_getfd(2)` (Linux 5.6). A duplicate is the same socket, so options
//! read or set on it are the target's own. Duplicating needs ptrace-attach permission over the
//! target (same user under Yama ptrace_scope 0 or 1 for a descendant, or CAP_SYS_PTRACE).

use crate::error::Error;
use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
use std::io;

/// The descriptors of `pid` that are sockets, with their inode numbers, in descriptor order.
pub fn socket_fds(pid: u32) -> Result<Vec<(i32, u64)>, Error> {
    let dir = format!("/proc/{pid}/fd");
    let io_err = |source| Error::Io {
        what: dir.clone(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // The process may close it meanwhile: skip what vanished.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let inode = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'));
        if let Some(Ok(inode)) = inode.map(str::parse) {
            out.push((fd, inode));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A duplicate of descriptor `fd` of process `pid`, owned by the caller.
pub fn duplicate(pid: u32, fd: i32) -> Result<OwnedFd, Error> {
    let fail = |source: io::Error| Error::Io {
        what: format!("duplicating fd {fd} of pid {pid}"),
        source,
    };
    let target =
        Pid::from_raw(pid as i32).ok_or_else(|| fail(io::ErrorKind::InvalidInput.into()))?;
    let pidfd = pidfd_open(target, PidfdFlags::empty()).map_err(|e| fail(e.into()))?;
    pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).map_err(|e| fail(e.into()))
}
