//! The library's error type. Every message is one line that says what was wrong, with which
//! value, and what is allowed or needed.

use crate::policy::PolicyError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// What kind of failure an [`Error`] is; the command line maps these to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The input was wrong (exit code 2).
    BadInput,
    /// A permission or capability is missing (exit code 3).
    Permission,
    /// The operation failed for another reason (exit code 1).
    Failed,
}

/// Anything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A policy that does not follow the grammar or the kernel's limits.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A policy key that has no sysctl.
    #[error("{0}")]
    NotASysctl(&'static str),
    /// A namespace name that `ip netns` could not have made.
    #[error(
        "network namespace name '{0}' is not valid: give a name from `ip netns list` or a path such as /proc/PID/ns/net"
    )]
    BadNetnsName(String),
    /// No such named namespace.
    #[error("network namespace '{name}' not found (no {}); `ip netns list` shows the names", path.display())]
    NetnsNotFound {
        /// The name given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `setns` refused for lack of privilege.
    #[error(
        "entering network namespace '{name}' needs CAP_SYS_ADMIN both over it (in the user \
         namespace that owns it) and in this process's own user namespace (setns(2), \
         netns_install() in net/core/net_namespace.c) ({source})"
    )]
    NetnsPermission {
        /// The name given.
        name: String,
        /// The system's error.
        source: io::Error,
    },
    /// Any other failure to enter a namespace.
    #[error(
        "entering network namespace '{name}' failed: {}",
        netns_reason(name, source)
    )]
    Netns {
        /// The name given.
        name: String,
        /// The system's error.
        source: io::Error,
    },
    /// A sysctl could not be read.
    #[error("reading {key} in {scope} failed: {source}")]
    SysctlRead {
        /// The sysctl, as `sysctl(8)` names it.
        key: &'static str,
        /// Which namespace.
        scope: String,
        /// The system's error.
        source: io::Error,
    },
    /// A sysctl could not be written; see [`WriteFailure`].
    #[error(transparent)]
    SysctlWrite(Box<WriteFailure>),
    /// A sysctl value read back was not a number.
    #[error("{key} in {scope} holds '{value}', not a number")]
    SysctlValue {
        /// The sysctl, as `sysctl(8)` names it.
        key: &'static str,
        /// Which namespace.
        scope: String,
        /// What the file held.
        value: String,
    },
    /// A drop-in file could not be written.
    #[error("writing {} failed: {source}{}", path.display(), permission_hint(source, "needs root"))]
    Persist {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// `keepalive run` could not find the LD_PRELOAD shim.
    #[error(
        "the LD_PRELOAD shim libkeepalive_inject.so is not installed (looked in {looked}); build it with `cargo build --release` or install with scripts/install.sh"
    )]
    ShimNotFound {
        /// The places looked in.
        looked: String,
    },
    /// The shim's path cannot go into LD_PRELOAD.
    #[error("the shim's path {} contains ':' or ' ', which LD_PRELOAD treats as separators; move it", .0.display())]
    ShimPath(PathBuf),
    /// The shim cannot act inside the program (which seccomp can reach).
    #[error("the shim cannot reach {}: {why}; start it as it is and use `keepalive set --pid PID` on its sockets instead, or use --via seccomp", program.display())]
    Unreachable {
        /// The program (or a script's interpreter).
        program: PathBuf,
        /// Why.
        why: String,
    },
    /// Neither mechanism can start the program with its privileges.
    #[error("keepalive run cannot reach {}: {why}, and under --via seccomp no_new_privs would drop its privileges anyway; start it as it is and use `keepalive set --pid PID` on its sockets instead", program.display())]
    Privileged {
        /// The program (or a script's interpreter).
        program: PathBuf,
        /// Why.
        why: String,
    },
    /// A seccomp supervisor already watches the process, and the kernel allows one.
    #[error(
        "cannot supervise {}: a seccomp supervisor already watches this process (a `keepalive run` around it, a sandbox's or a container runtime's), and the kernel allows one; use --via shim",
        program.display()
    )]
    SupervisorBusy {
        /// The program.
        program: PathBuf,
    },
    /// The kernel (or this build) cannot run a seccomp supervisor.
    #[error(
        "keepalive run --via seccomp needs seccomp user notification with FLAG_CONTINUE (Linux 5.5) and pidfd_getfd (Linux 5.6): {why}"
    )]
    SeccompUnavailable {
        /// What was missing.
        why: String,
    },
    /// No such process.
    #[error("process {0} not found")]
    NoSuchProcess(u32),
    /// The process exited while its sockets were being read.
    #[error("process {0} exited while its sockets were being read")]
    Exited(u32),
    /// A number that cannot be a process id.
    #[error("PID {pid} is not a process id: expected 1 to {} (kernel.pid_max)", max - 1)]
    BadPid {
        /// What was given.
        pid: u64,
        /// kernel.pid_max.
        max: u64,
    },
    /// A thread id, not a process id.
    #[error("{pid} is a thread of process {tgid}, not a process: give --pid {tgid}")]
    Thread {
        /// What was given.
        pid: u32,
        /// Its process.
        tgid: u32,
    },
    /// A process that has exited and not been reaped.
    #[error(
        "process {pid} ({command}) has exited (a zombie waiting for its parent): it holds no sockets"
    )]
    Zombie {
        /// The process.
        pid: u32,
        /// Its name.
        command: String,
    },
    /// A kernel thread.
    #[error("pid {pid} ({command}) is a kernel thread: it has no sockets")]
    KernelThread {
        /// The thread.
        pid: u32,
        /// Its name.
        command: String,
    },
    /// Reading another process's sockets is not allowed.
    #[error("reading the sockets of pid {pid} needs ptrace-attach permission over it: {} ({source})", facts.advice())]
    Ptrace {
        /// The target.
        pid: u32,
        /// The system's error.
        source: io::Error,
        /// What explains the refusal, gathered when it happened.
        facts: PtraceFacts,
    },
    /// A chosen descriptor is not a TCP socket.
    #[error("fd {fd} of pid {pid} is {what}")]
    NotATcpSocket {
        /// The target.
        pid: u32,
        /// The descriptor.
        fd: i32,
        /// What it is instead.
        what: &'static str,
    },
    /// Reading a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The system's error.
        source: io::Error,
    },
    /// An output file the user asked for cannot be written there.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The file asked for.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// A path that is not a cgroup v2 directory.
    #[error("{} is not a cgroup v2 directory: {why}", path.display())]
    NotACgroup {
        /// The path given.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// Another run holds what this one needs, longer than it waits.
    #[error("{what}; try again when it has finished")]
    Busy {
        /// Who holds what, for how long.
        what: String,
    },
    /// A process whose cgroup this process's cgroup namespace and mounts cannot place.
    #[error("{why}")]
    CgroupOutOfView {
        /// What cannot be seen, and what to do.
        why: String,
    },
    /// A process whose cgroup is the root of the hierarchy, taken as a workload's.
    #[error(
        "process {pid} is in the root cgroup ({}), which holds every process on the machine; name it with --cgroup {} if that is what you mean",
        path.display(),
        path.display()
    )]
    RootCgroup {
        /// The process.
        pid: u32,
        /// The root's path.
        path: PathBuf,
    },
    /// The running kernel lacks what an operation needs.
    #[error("{what} needs Linux {needs} or later; this kernel is {running}")]
    KernelTooOld {
        /// What was asked for.
        what: &'static str,
        /// The first version that has it, e.g. "5.9".
        needs: &'static str,
        /// The running kernel's release.
        running: String,
    },
    /// Capabilities the caller lacks.
    #[error("{what} needs {missing} (this process has {have})")]
    Capability {
        /// What was asked for.
        what: String,
        /// The capabilities missing, e.g. "CAP_BPF and CAP_NET_ADMIN".
        missing: String,
        /// What the process has, of those that matter.
        have: String,
    },
    /// A bpf(2) command failed.
    #[error("{what} failed: {source}")]
    Bpf {
        /// What was being done.
        what: String,
        /// The system's error.
        source: io::Error,
    },
    /// The verifier refused a program.
    #[error("the kernel's verifier refused the {program} program ({source}); its log: {log}")]
    Verifier {
        /// Which program.
        program: &'static str,
        /// The system's error.
        source: io::Error,
        /// The verifier's log, lines joined with " | ".
        log: String,
    },
    /// A socket option could not be set or read.
    #[error("{option} on socket {fd} failed: {source}")]
    Socket {
        /// The option, as the kernel names it.
        option: &'static str,
        /// The socket's file descriptor.
        fd: i32,
        /// The system's error.
        source: io::Error,
    },
}

impl Error {
    /// The kind of failure.
    pub fn class(&self) -> Class {
        match self {
            Error::Policy(_)
            | Error::NotASysctl(_)
            | Error::BadNetnsName(_)
            | Error::NetnsNotFound { .. }
            | Error::NoSuchProcess(_)
            | Error::BadPid { .. }
            | Error::Thread { .. }
            | Error::Zombie { .. }
            | Error::KernelThread { .. }
            | Error::NotATcpSocket { .. }
            | Error::NotACgroup { .. }
            | Error::CgroupOutOfView { .. }
            | Error::RootCgroup { .. } => Class::BadInput,
            Error::Ptrace { .. } | Error::Capability { .. } => Class::Permission,
            Error::Output { source, .. } | Error::Persist { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied => Class::Permission,
                io::ErrorKind::NotFound
                | io::ErrorKind::NotADirectory
                | io::ErrorKind::IsADirectory
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::AlreadyExists => Class::BadInput,
                _ => Class::Failed,
            },
            Error::Netns { source, .. } if source.raw_os_error() == Some(einval()) => {
                Class::BadInput
            }
            Error::NetnsPermission { .. } => Class::Permission,
            Error::SysctlWrite(w) if is_permission(&w.source) => Class::Permission,
            Error::SysctlRead { source, .. }
            | Error::Socket { source, .. }
            | Error::Io { source, .. }
            | Error::Bpf { source, .. }
            | Error::Netns { source, .. }
                if is_permission(source) =>
            {
                Class::Permission
            }
            _ => Class::Failed,
        }
    }
}

/// Why a ptrace-attach was refused, as far as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtraceFacts {
    /// Yama's ptrace_scope, when Yama is built in.
    pub ptrace_scope: Option<u8>,
    /// The caller's effective uid is 0.
    pub root: bool,
    /// The caller holds CAP_SYS_PTRACE.
    pub cap_sys_ptrace: bool,
}

impl PtraceFacts {
    /// What to do about it, in words.
    fn advice(&self) -> String {
        match (self.ptrace_scope, self.cap_sys_ptrace, self.root) {
            (Some(3), _, _) => "Yama's ptrace_scope is 3 here, which forbids it to everyone, root included, until reboot".into(),
            (Some(2), false, _) => "Yama's ptrace_scope is 2 here: only with CAP_SYS_PTRACE".into(),
            (_, true, _) => "this process holds CAP_SYS_PTRACE and was refused anyway: the target is protected (a security module, or a process of a user namespace this one does not own)".into(),
            (_, false, true) => "this root lacks CAP_SYS_PTRACE (a container's root?): run where root holds it".into(),
            (Some(1), false, false) => "Yama's ptrace_scope is 1 here: only for your own descendants, or with CAP_SYS_PTRACE".into(),
            _ => "run as the same user, or with CAP_SYS_PTRACE".into(),
        }
    }
}

fn einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

fn netns_reason(name: &str, source: &io::Error) -> String {
    if source.raw_os_error() == Some(einval()) {
        "it is not a network namespace".to_owned()
    } else if is_permission(source) && name.starts_with("/proc/") {
        // /proc/PID/ns/* opens only with ptrace read access over PID (fs/proc/namespaces.c).
        format!(
            "opening it needs ptrace access over its process: run as that process's user, or \
             with CAP_SYS_PTRACE ({source})"
        )
    } else {
        source.to_string()
    }
}

pub(crate) fn is_permission(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

fn permission_hint(e: &io::Error, need: &str) -> String {
    if is_permission(e) {
        format!(" ({need})")
    } else {
        String::new()
    }
}

/// A sysctl write that failed, and what became of the writes before it.
#[derive(Debug)]
pub struct WriteFailure {
    /// The sysctl, as `sysctl(8)` names it.
    pub key: &'static str,
    /// The value that was being written.
    pub value: u64,
    /// Which namespace.
    pub scope: String,
    /// The system's error.
    pub source: io::Error,
    /// The sysctls written earlier in the same operation, now restored.
    pub restored: Vec<&'static str>,
    /// Sysctls whose restore failed too, with why.
    pub not_restored: Vec<(&'static str, io::Error)>,
}

impl std::error::Error for WriteFailure {}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writing {}={} in {} ", self.key, self.value, self.scope)?;
        if is_permission(&self.source) {
            write!(
                f,
                "needs CAP_NET_ADMIN over that network namespace ({})",
                self.source
            )?;
        } else {
            write!(f, "failed: {}", self.source)?;
        }
        if !self.not_restored.is_empty() {
            f.write_str("; restoring failed for")?;
            for (key, e) in &self.not_restored {
                write!(f, " {key} ({e})")?;
            }
        } else if self.restored.is_empty() {
            f.write_str("; nothing was changed")?;
        } else {
            write!(
                f,
                "; restored {}, so nothing was changed",
                self.restored.join(", ")
            )?;
        }
        Ok(())
    }
}
