//! The thin edge to the system calls rustix does not wrap: seccomp(2), the notification
//! listener's ioctls (seccomp_unotify(2)), process_vm_readv(2), signalfd(2) and the signal mask.
//! Every `unsafe` block of the supervisor lives here.

use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use rustix::io::Errno;
use std::io;
use std::mem::{MaybeUninit, size_of};

/// seccomp(2) without the libc wrapper glibc may lack.
fn seccomp(op: libc::c_uint, flags: libc::c_ulong, arg: *mut libc::c_void) -> libc::c_long {
    // SAFETY: the raw system call; each caller passes the argument its `op` expects.
    unsafe { libc::syscall(libc::SYS_seccomp, op, flags, arg) }
}

fn last_errno() -> Errno {
    Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::INVAL)
}

/// Installs `program` as a seccomp filter on the calling thread and returns the notification
/// listener the kernel creates for it (SECCOMP_FILTER_FLAG_NEW_LISTENER, Linux 5.0; the fd is
/// close-on-exec). With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19) a trapped call, once the
/// supervisor has received it, waits through non-fatal signals instead of being interrupted and
/// restarted; older kernels refuse the flag with EINVAL and get the plain listener.
///
/// Allocation-free: it runs in a forked child before exec. The caller must have set
/// no_new_privs (or hold CAP_SYS_ADMIN), as seccomp(2) requires.
pub fn install_filter(program: &[libc::sock_filter]) -> Result<OwnedFd, Errno> {
    let mut fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| Errno::INVAL)?,
        filter: program.as_ptr().cast_mut(),
    };
    let arg = (&raw mut fprog).cast();
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let mut fd = seccomp(
        libc::SECCOMP_SET_MODE_FILTER,
        flags | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        arg,
    );
    if fd < 0 && last_errno() == Errno::INVAL {
        fd = seccomp(libc::SECCOMP_SET_MODE_FILTER, flags, arg);
    }
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: on success seccomp returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the kernel offers SECCOMP_RET_USER_NOTIF (SECCOMP_GET_ACTION_AVAIL, Linux 5.0).
pub fn user_notif_available() -> Result<(), Errno> {
    let mut action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    if seccomp(libc::SECCOMP_GET_ACTION_AVAIL, 0, (&raw mut action).cast()) < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// The sizes of the kernel's notification structures (SECCOMP_GET_NOTIF_SIZES): a newer kernel
/// may write a longer `seccomp_notif` than this build knows, so the receive buffer follows it.
pub fn notif_sizes() -> Result<libc::seccomp_notif_sizes, Errno> {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    if seccomp(libc::SECCOMP_GET_NOTIF_SIZES, 0, (&raw mut sizes).cast()) < 0 {
        return Err(last_errno());
    }
    Ok(sizes)
}

/// A receive buffer of at least `kernel_size` bytes, 8-byte aligned.
pub fn notif_buffer(kernel_size: u16) -> Vec<u64> {
    let bytes = usize::from(kernel_size).max(size_of::<libc::seccomp_notif>());
    vec![0; bytes.div_ceil(8)]
}

/// SECCOMP_IOCTL_NOTIF_RECV into `buf`, zeroed first as the kernel requires (it refuses a
/// non-zero buffer with EINVAL). ENOENT: the trapped call was interrupted before it was read.
pub fn recv(listener: BorrowedFd<'_>, buf: &mut [u64]) -> Result<libc::seccomp_notif, Errno> {
    buf.fill(0);
    // SAFETY: `buf` is at least as large as the kernel's seccomp_notif (notif_buffer) and
    // writable; the ioctl writes at most that many bytes into it.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    // SAFETY: the buffer is 8-byte aligned, at least size_of::<seccomp_notif>() long, and every
    // bit pattern is a valid seccomp_notif (integers only).
    Ok(unsafe { buf.as_ptr().cast::<libc::seccomp_notif>().read() })
}

/// SECCOMP_IOCTL_NOTIF_ID_VALID: whether the trapped call `id` still waits for an answer (its
/// thread is alive and was not interrupted).
pub fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads one u64 from the pointer.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &raw mut id,
        ) == 0
    }
}

/// SECCOMP_IOCTL_NOTIF_SEND: answers the trapped call. ENOENT: it was interrupted meanwhile.
pub fn send(listener: BorrowedFd<'_>, resp: &libc::seccomp_notif_resp) -> Result<(), Errno> {
    let mut resp = *resp;
    // SAFETY: the ioctl reads one seccomp_notif_resp from the pointer.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &raw mut resp,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Copies `buf.len()` bytes at `addr` in thread `tid`'s memory (process_vm_readv(2), which
/// needs ptrace-attach permission over it). Returns how many bytes were read.
pub fn read_memory(tid: u32, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, writable for its length; the remote range is only read
    // by the kernel, which checks it against the target's mappings.
    let n = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(last_errno());
    }
    Ok(n as usize)
}

/// A signal set holding `signals`.
fn sigset(signals: &[i32]) -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initializes the set; sigaddset only writes into it.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &s in signals {
            libc::sigaddset(set.as_mut_ptr(), s);
        }
        set.assume_init()
    }
}

/// Blocks `signals` in the calling thread (threads started later inherit the mask), so that
/// they queue for a signalfd instead of running their default action.
pub fn block(signals: &[i32]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: a valid set; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Unblocks every signal in the calling thread. Async-signal-safe (a forked child calls it).
pub fn unblock_all() {
    let set = sigset(&[]);
    // SAFETY: a valid, empty set.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
}

/// A signalfd for `signals` (which the caller has blocked), non-blocking and close-on-exec.
pub fn signalfd(signals: &[i32]) -> io::Result<OwnedFd> {
    let set = sigset(signals);
    // SAFETY: a valid set; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The next queued signal on a signalfd: its number and `ssi_code` (SI_USER, SI_QUEUE,
/// SI_KERNEL...). `None` when nothing is queued.
pub fn read_signal(fd: BorrowedFd<'_>) -> Option<(i32, i32)> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::zeroed();
    let size = size_of::<libc::signalfd_siginfo>();
    // SAFETY: reads at most `size` bytes into `info`.
    let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
    if n != size as isize {
        return None;
    }
    // SAFETY: zeroed first and fully written by the read; integers only.
    let info = unsafe { info.assume_init() };
    Some((info.ssi_signo as i32, info.ssi_code))
}

/// Ends this process by `signal`'s default action, as the program it ran ended: no core file
/// of our own (RLIMIT_CORE 0), the signal's default disposition, unblocked, raised on this
/// thread. Returns only for a signal whose default action does not end a process.
pub fn die_by(signal: i32) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut core = getrlimit(Resource::Core);
    core.current = Some(0);
    let _ = setrlimit(Resource::Core, core);
    let set = sigset(&[signal]);
    // SAFETY: restoring the default disposition, unblocking and raising a signal have no memory
    // preconditions; nothing else in this process depends on a handler for `signal`.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// The terminal this process's group is in the foreground of, found on stdin, stdout or
/// stderr: the one whose Ctrl-C and Ctrl-Z would reach the program.
pub fn foreground_terminal() -> Option<RawFd> {
    // SAFETY: isatty, tcgetpgrp and getpgrp only read the state of the descriptor and process.
    (0..3).find(|&fd| unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == libc::getpgrp() })
}

/// Makes process group `pgrp` the foreground of `tty`. SIGTTOU, which the kernel sends to a
/// background process that does this, is blocked around the call (as shells do).
pub fn give_terminal(tty: RawFd, pgrp: i32) {
    let set = sigset(&[libc::SIGTTOU]);
    let mut old = sigset(&[]);
    // SAFETY: valid sets; the old mask is restored right after.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        libc::tcsetpgrp(tty, pgrp);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// Whether `tty`'s foreground is this process's group.
pub fn in_foreground(tty: RawFd) -> bool {
    // SAFETY: reads only.
    unsafe { libc::tcgetpgrp(tty) == libc::getpgrp() }
}

/// Puts process `pid` at the head of a process group of its own. Async-signal-safe (the forked
/// child calls it on itself with 0 as well as the parent on it: whichever runs first wins, the
/// other finds it done or the child already exec'd, EACCES).
pub fn own_group(pid: i32) {
    // SAFETY: no memory is involved.
    unsafe { libc::setpgid(pid, pid) };
}

/// Whether child `pid` has stopped since last asked (waitid WSTOPPED, not reaping an exit).
pub fn stopped(pid: i32) -> bool {
    let mut info = MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: `info` is a writable siginfo_t; WNOHANG keeps the call from waiting.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            info.as_mut_ptr(),
            libc::WSTOPPED | libc::WNOHANG,
        )
    };
    // SAFETY: zeroed first; waitid fills it when a child changed state.
    r == 0 && unsafe { info.assume_init().si_pid() } == pid
}

/// Stops this process until a SIGCONT (which the shell sends on `fg` or `bg`).
pub fn stop_self() {
    // SAFETY: no memory is involved; SIGSTOP cannot be caught or blocked.
    unsafe { libc::raise(libc::SIGSTOP) };
}

/// Sends SIGCONT to every process of group `pgrp`.
pub fn continue_group(pgrp: i32) {
    // SAFETY: no memory is involved.
    unsafe { libc::kill(-pgrp, libc::SIGCONT) };
}
