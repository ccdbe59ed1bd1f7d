//! What a process id names, asked of /proc before anything is done to it: a running process,
//! or a number that is out of range, a thread of another process, a zombie or a kernel thread,
//! each refused with what to give instead. And the facts behind a ptrace refusal, gathered
//! where it happens so that the error only has to word them.

use crate::error::{Error, PtraceFacts};
use std::io;

/// The kernel's largest process id (`PID_MAX_LIMIT` on 64-bit, 4194304): `kernel.pid_max`
/// can be set no higher.
pub const PID_MAX_LIMIT: u64 = 4_194_304;

/// A /proc file as text, its bytes taken as they are: stat and status hold the process's comm,
/// which may be any bytes (PR_SET_NAME), so a strict UTF-8 read would fail for such a process
/// and make it look unreadable or gone.
pub(crate) fn read_proc(path: &str) -> io::Result<String> {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `kernel.pid_max`: process ids run from 1 to one less than it.
pub fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
}

/// Checks that `pid` is a process that may hold sockets: in range, existing, the leader of
/// its thread group, not a zombie, not a kernel thread.
pub fn check(pid: u64) -> Result<u32, Error> {
    let max = pid_max();
    let Some(pid32) = u32::try_from(pid)
        .ok()
        .filter(|&p| p >= 1 && u64::from(p) < max)
    else {
        return Err(Error::BadPid { pid, max });
    };
    // /proc/TID exists for a thread too (unlisted), with its process's Tgid.
    // Read as bytes: the Name: line is the process's comm, any bytes it chose (PR_SET_NAME),
    // not necessarily UTF-8.
    let status = match std::fs::read(format!("/proc/{pid}/status")) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoSuchProcess(pid32)),
        Err(source) if source.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ptrace_denied(pid32, source));
        }
        Err(source) => {
            return Err(Error::Io {
                what: format!("/proc/{pid}/status"),
                source,
            });
        }
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if let Some(tgid) = field("Tgid:").and_then(|t| t.parse::<u32>().ok())
        && tgid != pid32
    {
        return Err(Error::Thread { pid: pid32, tgid });
    }
    let command = field("Name:").unwrap_or("").to_owned();
    if field("State:").is_some_and(|s| s.starts_with('Z') || s.starts_with('X')) {
        return Err(Error::Zombie {
            pid: pid32,
            command,
        });
    }
    if kernel_thread(pid32) {
        return Err(Error::KernelThread {
            pid: pid32,
            command,
        });
    }
    Ok(pid32)
}

/// PF_KTHREAD (include/linux/sched.h) in the flags field of /proc/PID/stat (the 9th, counted
/// after the command, which may itself hold spaces and parentheses).
fn kernel_thread(pid: u32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = crate::process::read_proc(&format!("/proc/{pid}/stat")) else {
        return false;
    };
    let after_command = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // Fields after the command: state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9).
    after_command
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Whether `pid` is exiting or gone: PF_EXITING (include/linux/sched.h) is set when do_exit()
/// starts, before the process's descriptors are closed, while its pidfd turns readable only at
/// the end; a listing of /proc/PID/fd can meanwhile end early without an error.
pub fn exiting(pid: u32) -> bool {
    const PF_EXITING: u64 = 0x0000_0004;
    let Ok(stat) = crate::process::read_proc(&format!("/proc/{pid}/stat")) else {
        return true;
    };
    let after_command = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let mut fields = after_command.split_whitespace();
    let state = fields.next().unwrap_or("");
    let flags = fields
        .nth(5)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    state.starts_with(['Z', 'X']) || flags & PF_EXITING != 0
}

/// Whether the /proc in this mount namespace belongs to a PID namespace other than the
/// initial one (a container's, or `unshare --pid --mount-proc`), so that processes outside it,
/// which may share the network namespace and hold its sockets, are not listed. Told from two
/// facts readable without privilege: this process's PID namespace is not the initial one
/// (PROC_PID_INIT_INO, include/linux/proc_ns.h), and /proc/self/status lists one NSpid, which
/// the kernel prints from /proc's own namespace down to the process's (fs/proc/array.c).
pub fn proc_is_a_child_pid_namespace() -> bool {
    const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;
    let ours = std::fs::read_link("/proc/self/ns/pid").ok().and_then(|l| {
        let l = l.to_str()?.strip_prefix("pid:[")?.strip_suffix(']')?;
        l.parse::<u64>().ok()
    });
    let levels = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|ids| ids.split_whitespace().count())
        });
    matches!((ours, levels), (Some(ino), Some(1)) if ino != PROC_PID_INIT_INO)
}

/// A ptrace-attach refusal for `pid`, with the facts that explain it: Yama's ptrace_scope,
/// whether we are root, and whether we hold CAP_SYS_PTRACE.
pub(crate) fn ptrace_denied(pid: u32, source: io::Error) -> Error {
    Error::Ptrace {
        pid,
        source,
        facts: PtraceFacts {
            ptrace_scope: ptrace_scope(),
            root: rustix::process::geteuid().is_root(),
            cap_sys_ptrace: has_cap_sys_ptrace(),
        },
    }
}

/// Yama's ptrace_scope, if Yama is built in: 0 classic, 1 descendants only, 2 admin only,
/// 3 none.
pub fn ptrace_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// CAP_SYS_PTRACE (19) in this process's effective set.
fn has_cap_sys_ptrace() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 19) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_number_names() {
        let me = std::process::id();
        assert_eq!(check(u64::from(me)).unwrap(), me);
        assert!(matches!(check(0), Err(Error::BadPid { .. })));
        let e = check(2_147_483_648).unwrap_err();
        assert_eq!(e.class(), crate::Class::BadInput);
        assert!(e.to_string().contains("2147483648"), "{e}");
        assert!(matches!(
            check(4_194_303),
            Err(Error::NoSuchProcess(_)) | Err(Error::BadPid { .. })
        ));
        // A thread of this process.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get() as u64)
                .unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let e = check(tid).unwrap_err();
        assert!(matches!(e, Error::Thread { tgid, .. } if tgid == me), "{e}");
        assert!(e.to_string().contains(&format!("--pid {me}")), "{e}");
        drop(done_tx);
        t.join().unwrap();
        // kthreadd.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(matches!(check(2), Err(Error::KernelThread { .. })));
        }
        // A zombie: a child that exited and was not reaped yet.
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = u64::from(child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !crate::process::read_proc(&format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let e = check(pid).unwrap_err();
        assert!(matches!(e, Error::Zombie { .. }), "{e}");
        drop(child);
    }
}
