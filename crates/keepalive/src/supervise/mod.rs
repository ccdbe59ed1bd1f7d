//! Starting a program under a seccomp supervisor: keepalive for programs no LD_PRELOAD library
//! reaches (static binaries, Go programs), and for any other program on request.
//!
//! How it works, as the kernel does it (kernel/seccomp.c, seccomp_unotify(2)):
//!
//! - The launcher stays the program's parent. In the forked child, before exec, it sets
//!   no_new_privs when it lacks CAP_SYS_ADMIN (required then to install a filter; it also means
//!   a setuid program the program starts does not gain its privileges), installs a classic-BPF filter with
//!   SECCOMP_FILTER_FLAG_NEW_LISTENER, sends the listener descriptor the kernel returns to the
//!   parent over a socketpair (SCM_RIGHTS), closes its own copy and execs. The filter stays on
//!   across exec and is inherited by every process the program starts.
//! - The filter traps `connect` and `listen` (and in force mode the `setsockopt` calls for the
//!   options the policy owns) with SECCOMP_RET_USER_NOTIF: the calling thread stops and the
//!   call is queued on the listener.
//! - The supervisor, a thread of the launcher, receives each call, duplicates the socket with
//!   pidfd_getfd (Linux 5.6), applies the policy to the duplicate (the same socket), and lets
//!   the call run with SECCOMP_USER_NOTIF_FLAG_CONTINUE (Linux 5.5). See the `supervisor` module.
//! - When no task uses the filter any more the listener reports POLLHUP and the supervisor
//!   ends. The launcher waits for the program, passes on its exit status (re-raising a signal
//!   that killed it), and passes signals sent to the launcher on to the program.
//! - Signals reach the program once. The program runs in a process group of its own, so a
//!   signal sent to the launcher's group (a shell's `kill %1`, `timeout`) reaches the launcher
//!   alone, which passes it on. When the launcher is in the foreground of a terminal it hands
//!   the terminal to the program's group, as a shell does for a job: Ctrl-C and Ctrl-\ go to
//!   the program and never to the launcher; when Ctrl-Z stops the program, the launcher takes
//!   the terminal back and stops itself, so the shell sees the job stop, and on `fg` or `bg`
//!   gives it back and continues the program. (A signal sent to every process of a cgroup,
//!   systemd's KillMode=control-group, reaches both, and the program gets it twice.)
//! - If the launcher dies, the listener closes, and the kernel answers every trapped call,
//!   pending or later, with ENOSYS: the program never hangs, but its later connect() and
//!   listen() calls fail.

mod filter;
mod supervisor;
mod sys;

use crate::error::Error;
use crate::launch::{Exec, LaunchError, exec_failure};
use crate::policy::injection::Injection;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg, sendmsg, socketpair,
};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, Signal, pidfd_getfd, pidfd_open};
use std::ffi::{OsStr, OsString};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

pub use filter::AUDIT_ARCH;
pub use supervisor::Supervisor;

/// Signals the launcher passes on to the program. The program is never in the launcher's
/// process group, so none of these can have reached it already through a group.
pub const FORWARDED: [i32; 8] = [
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// How the program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Whether this kernel and build can supervise: SECCOMP_RET_USER_NOTIF (Linux 5.0), and
/// pidfd_getfd (Linux 5.6, so SECCOMP_USER_NOTIF_FLAG_CONTINUE of 5.5 is there too).
pub fn available() -> Result<(), Error> {
    let unavailable = |why: String| Error::SeccompUnavailable { why };
    if AUDIT_ARCH.is_none() {
        return Err(unavailable(format!(
            "this build is for {}; the filter knows x86_64 and aarch64",
            std::env::consts::ARCH
        )));
    }
    sys::user_notif_available()
        .map_err(|e| unavailable(format!("SECCOMP_RET_USER_NOTIF is not offered ({e})")))?;
    sys::notif_sizes().map_err(|e| unavailable(format!("SECCOMP_GET_NOTIF_SIZES failed ({e})")))?;
    let me = pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        .map_err(|e| unavailable(format!("pidfd_open failed ({e})")))?;
    pidfd_getfd(&me, me.as_raw_fd(), PidfdGetfdFlags::empty())
        .map_err(|e| unavailable(format!("pidfd_getfd failed ({e})")))?;
    Ok(())
}

/// Runs `program` (named `arg0`, with `args`) under the supervisor with `injection`, passes
/// signals on, and returns how it ended once it and every process it started are gone. A
/// terminating signal (SIGTERM, SIGINT, SIGHUP) that arrives after the program exited, while
/// processes it started still run, ends the wait early. A program the kernel will not exec is
/// [`LaunchError::NotFound`] or [`LaunchError::CannotRun`], as in [`crate::launch::run`].
pub fn run(
    program: &Path,
    arg0: &OsStr,
    args: &[OsString],
    injection: &Injection,
) -> Result<Exit, LaunchError> {
    available()?;
    let filter = filter::program(injection).ok_or(Error::SeccompUnavailable {
        why: "no filter for this architecture".into(),
    })?;
    let io_err = |what: &str| {
        let what = what.to_owned();
        move |source: io::Error| Error::Io { what, source }
    };
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io_err("socketpair")(e.into()))?;

    // SIGCHLD too: it says when the program stops (Ctrl-Z), which a pidfd does not.
    let signals: Vec<i32> = FORWARDED.iter().chain(&[libc::SIGCHLD]).copied().collect();
    let tty = sys::foreground_terminal();
    sys::block(&signals).map_err(io_err("blocking signals"))?;
    let sigfd = sys::signalfd(&signals).map_err(io_err("signalfd"))?;

    // The child execs the program itself, at the end of `child_setup`: exactly `program`,
    // without execvp's retry through /bin/sh on ENOEXEC (see [`Exec`]). Command still forks,
    // sets up stdio and the signal state, and reports the exec's error.
    let exec = Exec::new(program, arg0, args, std::env::vars_os())
        .map_err(io_err(&format!("starting {}", program.display())))?;
    let mut cmd = Command::new(program);
    let theirs_fd = theirs.as_raw_fd();
    let no_new_privs = needs_no_new_privs();
    // SAFETY: the closure runs in the forked child between fork and exec, where only
    // async-signal-safe work is allowed: it makes system calls (prctl, seccomp, sendmsg,
    // close, sigprocmask, execve) on stack data, the filter and the exec's strings built
    // before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            child_setup(theirs_fd, &filter, no_new_privs)?;
            Err(exec.exec())
        });
    }
    let spawned = cmd.spawn();
    drop(theirs);
    let mut child = match spawned {
        Ok(child) => child,
        // The child handed the listener over just before its execve: the exec itself failed.
        Err(e) if receive_listener(ours.as_fd(), RecvFlags::DONTWAIT).is_ok() => {
            return Err(exec_failure(arg0, program, e));
        }
        // The kernel takes one notifying filter per process (kernel/seccomp.c,
        // has_duplicate_listener()): something already supervises this one.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            return Err(Error::SupervisorBusy {
                program: program.to_path_buf(),
            }
            .into());
        }
        Err(e) => return Err(io_err(&format!("starting {}", program.display()))(e).into()),
    };
    let group = child.id() as i32;
    sys::own_group(group);
    if let Some(tty) = tty {
        sys::give_terminal(tty, group);
    }
    // SAFETY: getpgrp has no preconditions.
    let own_group = unsafe { libc::getpgrp() };
    let take_back = || {
        if let Some(tty) = tty {
            sys::give_terminal(tty, own_group);
        }
    };

    let started = start_supervisor(&ours, injection, child.id());
    let (hup, pidfd) = match started {
        Ok(fds) => fds,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            take_back();
            return Err(e.into());
        }
    };

    let mut status = None;
    let mut supervisor_done = false;
    loop {
        let mut fds = vec![
            PollFd::new(&sigfd, PollFlags::IN),
            PollFd::new(&hup, PollFlags::empty()),
        ];
        if status.is_none() {
            fds.push(PollFd::new(&pidfd, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(io_err("poll")(e.into()).into()),
        }
        let ready: Vec<PollFlags> = fds.iter().map(PollFd::revents).collect();
        if ready[1].intersects(PollFlags::HUP | PollFlags::ERR) {
            supervisor_done = true;
        }
        if ready.get(2).is_some_and(|r| !r.is_empty()) {
            status = child
                .try_wait()
                .map_err(io_err("waiting for the program"))?;
        }
        let mut stop = false;
        while let Some((signal, _)) = sys::read_signal(sigfd.as_fd()) {
            if signal == libc::SIGCHLD {
                // Ctrl-Z (or any stop) of the program, on a terminal: the job stops, as the
                // shell expects. Without a terminal there is no job to stop: whoever stopped
                // the program continues it, and keepalive must stay awake to answer its calls.
                if status.is_none() && tty.is_some() && sys::stopped(group) {
                    take_back();
                    sys::stop_self();
                    // Continued (fg, bg): the terminal goes back to the program if the shell
                    // gave it to us, and the program continues.
                    if let Some(tty) = tty.filter(|&t| sys::in_foreground(t)) {
                        sys::give_terminal(tty, group);
                    }
                    sys::continue_group(group);
                }
            } else if status.is_none() {
                if let Some(sig) = Signal::from_named_raw(signal) {
                    let _ = rustix::process::pidfd_send_signal(&pidfd, sig);
                }
            } else if matches!(signal, libc::SIGTERM | libc::SIGINT | libc::SIGHUP) {
                stop = true;
            }
        }
        if let Some(status) = status.filter(|_| supervisor_done || stop) {
            take_back();
            return Ok(match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(signal)) => Exit::Signal(signal),
                (None, None) => Exit::Code(1),
            });
        }
    }
}

/// Receives the listener from the child, starts the supervisor thread, and returns a
/// duplicate of the listener (to see POLLHUP) and a pidfd for the program.
fn start_supervisor(
    ours: &OwnedFd,
    injection: &Injection,
    pid: u32,
) -> Result<(OwnedFd, OwnedFd), Error> {
    let fail = |what: &str, e: io::Error| Error::Io {
        what: what.to_owned(),
        source: e,
    };
    let listener = receive_listener(ours.as_fd(), RecvFlags::empty())
        .map_err(|e| fail("receiving the listener", e))?;
    let hup = listener
        .try_clone()
        .map_err(|e| fail("duplicating the listener", e))?;
    let program = Pid::from_raw(pid as i32).ok_or(Error::NoSuchProcess(pid))?;
    let pidfd = pidfd_open(program, PidfdFlags::empty())
        .map_err(|e| fail("pidfd_open of the program", e.into()))?;
    let supervisor = Supervisor::new(listener, *injection, pid);
    std::thread::Builder::new()
        .name("keepalive-supervise".into())
        .spawn(move || supervisor.serve())
        .map_err(|e| fail("starting the supervisor thread", e))?;
    Ok((hup, pidfd))
}

/// Whether installing the filter needs no_new_privs: seccomp(2) takes a filter from a thread
/// that has CAP_SYS_ADMIN in its user namespace, or no_new_privs (kernel/seccomp.c,
/// seccomp_prepare_filter()). no_new_privs is inherited by every process the program starts and
/// makes execve ignore setuid bits and file capabilities, so it is set only where it must be:
/// run by root, a script's `sudo`, `ping` or `su` keep their privileges.
pub fn needs_no_new_privs() -> bool {
    !rustix::thread::capabilities(None).is_ok_and(|c| {
        c.effective
            .contains(rustix::thread::CapabilitySet::SYS_ADMIN)
    })
}

/// In the forked child: no_new_privs where needed, the filter, the listener to the parent,
/// exec. Only system calls on the stack: nothing here may allocate.
fn child_setup(
    to_parent: RawFd,
    filter: &[libc::sock_filter],
    no_new_privs: bool,
) -> io::Result<()> {
    sys::unblock_all();
    sys::own_group(0);
    if no_new_privs {
        rustix::thread::set_no_new_privs(true)?;
    }
    let listener = sys::install_filter(filter)?;
    // SAFETY: `to_parent` is the child's end of the socketpair, inherited across fork and open
    // until exec closes it (close-on-exec).
    let sock = unsafe { BorrowedFd::borrow_raw(to_parent) };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    cmsg.push(SendAncillaryMessage::ScmRights(&fds));
    sendmsg(sock, &[IoSlice::new(b"L")], &mut cmsg, SendFlags::empty())?;
    // The program must not hold the listener: if it did, the launcher's death would not close
    // it, and the program's trapped calls would wait for an answer that never comes.
    drop(listener);
    Ok(())
}

/// The listener the child sent; EOF (the child died first) is an error, and so is nothing
/// there yet with `flags` DONTWAIT.
fn receive_listener(sock: BorrowedFd<'_>, flags: RecvFlags) -> io::Result<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut byte)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC | flags,
    )?;
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the program exited before handing over the seccomp listener",
    ))
}

/// Ends this process the way the program ended: by the same signal, with its default action
/// (and no core file of the launcher's own). Returns only for a signal whose default action
/// does not end a process (SIGCHLD, SIGWINCH...); the caller then exits with 128 + signal.
pub fn die_by(signal: i32) {
    sys::die_by(signal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_can_supervise() {
        available().unwrap();
    }
}
