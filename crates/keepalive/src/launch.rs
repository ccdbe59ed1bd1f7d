//! Starting a program with keepalive injected ([`run`], all of `keepalive run`): finding the
//! program and checking that it can run, choosing the mechanism (the LD_PRELOAD shim, or the
//! seccomp supervisor of [`crate::supervise`] for what the shim cannot reach), finding the
//! shim, and the environment to exec it with. A program that is not there or cannot run is a
//! [`LaunchError`] with env(1)'s exit status, 127 or 126.
//!
//! The dynamic loader honours LD_PRELOAD only for dynamically linked programs, and in secure
//! execution (a setuid or setgid program run by someone else, or one with file capabilities;
//! `AT_SECURE`, see ld.so(8)) only for libraries in the standard directories that are setuid
//! themselves. Go programs make their socket system calls directly, never through libc's
//! socket(), so a preloaded hook never sees them. `keepalive set --pid` reaches all of these.

use crate::error::Error;
use crate::policy::grammar::{Log, Mode};
use crate::policy::injection::{ENV, Injection};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use crate::supervise::Exit;
pub use elf::Go;

/// The shim's file name, as cargo builds it.
pub const SHIM_FILE: &str = "libkeepalive_inject.so";
/// Overrides where the shim is looked for.
pub const SHIM_ENV: &str = "KEEPALIVE_SHIM";

/// Where the shim is looked for, in order: `$KEEPALIVE_SHIM`, next to the `keepalive` binary
/// (a cargo build), and `../lib/keepalive/` from it (an installed prefix).
pub fn shim_candidates(exe: &Path, override_path: Option<&OsStr>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = override_path.map(PathBuf::from).into_iter().collect();
    if let Some(dir) = exe.parent() {
        out.push(dir.join(SHIM_FILE));
        out.push(dir.join("../lib/keepalive").join(SHIM_FILE));
    }
    out
}

/// The first candidate that exists, made absolute.
pub fn find_shim(exe: &Path, override_path: Option<&OsStr>) -> Result<PathBuf, Error> {
    let candidates = shim_candidates(exe, override_path);
    let found = candidates
        .iter()
        .find(|p| p.is_file())
        .ok_or_else(|| Error::ShimNotFound {
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let path = found.canonicalize().map_err(|source| Error::Io {
        what: found.display().to_string(),
        source,
    })?;
    // LD_PRELOAD splits on ':' and ' '.
    if path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| *b == b':' || *b == b' ')
    {
        return Err(Error::ShimPath(path));
    }
    check_shim(&path)?;
    Ok(path)
}

/// The loader skips a preloaded library it cannot open or map with one line of its own
/// ("cannot be preloaded ... ignored") and runs the program anyway, without keepalive: so the
/// shim must be readable by this process and an ELF shared object for this machine (class,
/// byte order, e_machine; `elf/dl-load.c` `open_verify` checks the same), or the run is refused.
fn check_shim(path: &Path) -> Result<(), Error> {
    let refused = |why: &str| Error::Io {
        what: format!(
            "the LD_PRELOAD shim {} cannot be preloaded (the loader would skip it and the program would run without keepalive)",
            path.display()
        ),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{why}; rebuild it with `cargo build --release` or reinstall with scripts/install.sh"
            ),
        ),
    };
    let mut file = File::open(path).map_err(|source| Error::Io {
        what: format!(
            "the LD_PRELOAD shim {} cannot be opened for reading by this user (uid {}), so the loader would skip it and the program would run without keepalive",
            path.display(),
            rustix::process::geteuid().as_raw()
        ),
        source,
    })?;
    let mut head = [0u8; 20];
    let n = read_up_to(&mut file, &mut head).map_err(|source| Error::Io {
        what: format!("reading the LD_PRELOAD shim {}", path.display()),
        source,
    })?;
    if n < head.len() || !head.starts_with(b"\x7fELF") {
        return Err(refused("it is not an ELF file"));
    }
    let class = if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    };
    let data = if cfg!(target_endian = "little") { 1 } else { 2 };
    if head[4] != class || head[5] != data {
        return Err(refused(&format!(
            "it is an ELF file of another class or byte order (EI_CLASS {}, EI_DATA {}; this machine needs {class}, {data})",
            head[4], head[5]
        )));
    }
    let half = |at: usize| {
        let b = [head[at], head[at + 1]];
        if data == 1 {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    // ET_DYN: a shared object.
    if half(0x10) != 3 {
        return Err(refused(&format!(
            "it is not a shared object (ELF type {}, a shared object is 3)",
            half(0x10)
        )));
    }
    if let Some(machine) = NATIVE_MACHINE.filter(|m| *m != half(0x12)) {
        return Err(refused(&format!(
            "it is built for another machine (e_machine {}, this one is {machine})",
            half(0x12)
        )));
    }
    match elf::is_pie(&file) {
        Ok(false) => Ok(()),
        Ok(true) => Err(refused(
            "it is a position-independent executable, not a shared object",
        )),
        Err(_) => Err(refused("its ELF program headers cannot be read")),
    }
}

/// This machine's ELF e_machine, where known.
const NATIVE_MACHINE: Option<u16> = if cfg!(target_arch = "x86_64") {
    Some(62)
} else if cfg!(target_arch = "aarch64") {
    Some(183)
} else if cfg!(target_arch = "riscv64") {
    Some(243)
} else if cfg!(target_arch = "x86") {
    Some(3)
} else if cfg!(target_arch = "arm") {
    Some(40)
} else {
    None
};

/// The shell execvp(3) hands a file the kernel cannot execute (ENOEXEC) to: `_PATH_BSHELL`.
const SHELL: &str = "/bin/sh";

/// The directories a name is looked up in: PATH, or, where PATH is not set at all, the default
/// path execvp(3) uses then, `confstr(_CS_PATH)` ("/bin:/usr/bin" in glibc). The second value
/// is true when it is that default.
pub fn search_path() -> (OsString, bool) {
    if let Some(path) = std::env::var_os("PATH") {
        return (path, false);
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; confstr writes at most that many,
    // NUL-terminated, and returns the length it needed (0 when the name is unknown).
    let needed = unsafe { libc::confstr(libc::_CS_PATH, buf.as_mut_ptr().cast(), buf.len()) };
    let default = match needed {
        1.. if needed <= buf.len() => OsStr::from_bytes(&buf[..needed - 1]).to_os_string(),
        _ => OsString::from("/bin:/usr/bin"),
    };
    (default, true)
}

/// Looks `name` up as a shell would: a name with a slash is a path, anything else is searched
/// in `path_var` (PATH).
pub fn resolve_program(name: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// Why the shim cannot act inside a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// Statically linked: no dynamic loader, so no LD_PRELOAD.
    Static,
    /// A Go program: its sockets bypass libc.
    Go,
    /// Setuid or setgid for someone else: the loader ignores LD_PRELOAD.
    SetId(&'static str),
    /// File capabilities: secure execution, as for setuid.
    FileCapabilities,
}

impl Unreachable {
    /// One line on why, for messages.
    pub fn reason(&self) -> String {
        match self {
            Unreachable::Static => {
                "it is statically linked, so the dynamic loader never reads LD_PRELOAD".into()
            }
            Unreachable::Go => {
                "it is a Go program, which makes its socket system calls without libc".into()
            }
            Unreachable::SetId(bit) => {
                format!("it is {bit} for another user, so the loader ignores LD_PRELOAD")
            }
            Unreachable::FileCapabilities => {
                "it has file capabilities, so the loader ignores LD_PRELOAD".into()
            }
        }
    }
}

/// How a policy reaches a program started by `keepalive run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// The LD_PRELOAD shim: the program is exec'd in place and keeps keepalive's pid.
    Shim,
    /// A seccomp supervisor ([`crate::supervise`]): keepalive stays the parent.
    Seccomp,
}

/// Which mechanism the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The shim, or a refusal.
    Shim,
    /// The supervisor, whatever the program is.
    Seccomp,
    /// The cheapest that reaches the program: the shim for dynamically linked programs, the
    /// supervisor for static and Go programs and for scripts (which may exec either).
    Auto,
}

/// How `keepalive run` will start a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// Whether the program (or a script's interpreter) is a Go program.
    pub go: Go,
    /// The file judged: the program, or a script's interpreter.
    pub judged: PathBuf,
    /// Whether the program is a script (it may start any program).
    pub script: bool,
}

impl Plan {
    /// A warning for the user, if the policy may not have the last word. Go's net package
    /// turns keepalive on with 15 s idle and interval on every TCP connection it dials or
    /// accepts (net.Dialer.KeepAlive, net.ListenConfig.KeepAlive; `defaultTCPKeepAlive`), after
    /// connect and accept, so in default mode Go's values replace the policy's; and a Go
    /// program's sockets bypass the shim. A program that may be Go ([`Go::Unknown`]) is
    /// mentioned only where that would change the outcome.
    pub fn warning(&self, injection: &Injection) -> Option<String> {
        let unsure = || {
            format!(
                "cannot tell whether {} is a Go program (it has no Go build-ID note, and its section headers are missing or cannot be read)",
                self.judged.display()
            )
        };
        let overridden = injection.mode != Mode::Force;
        match (self.go, self.mechanism) {
            (Go::Yes, Mechanism::Seccomp) if overridden => Some(
                "Go sets its own keepalive (15 s idle and interval) on every connection it dials or accepts, so Go's values win over the policy's; use --force to keep the policy".into(),
            ),
            (Go::Unknown, Mechanism::Seccomp) if overridden => Some(format!(
                "{}; if it is, Go's own keepalive (15 s idle and interval) wins over the policy's: use --force to keep the policy",
                unsure()
            )),
            (Go::Unknown, Mechanism::Shim) => Some(format!(
                "{}; if it is, its sockets bypass the shim: use --via seccomp",
                unsure()
            )),
            _ if self.script
                && self.mechanism == Mechanism::Seccomp
                && crate::supervise::needs_no_new_privs() =>
            {
                Some(
                    "the script runs under seccomp with no_new_privs (needed without \
                     CAP_SYS_ADMIN): a setuid or file-capability program it starts (sudo, su, \
                     ping) runs without its privileges; --via shim keeps them"
                        .into(),
                )
            }
            _ => None,
        }
    }
}

/// Chooses how to start `program`. setuid, setgid and file-capability programs are refused
/// whatever `via` says: the loader ignores LD_PRELOAD for them, and the no_new_privs that a
/// seccomp filter needs would start them without their privileges.
pub fn plan(program: &Path, via: Via) -> Result<Plan, Error> {
    let Examined {
        judged,
        blocked,
        go,
    } = examine(program)?;
    let script = is_script(program);
    let plan = |mechanism| Plan {
        mechanism,
        go,
        judged: judged.clone(),
        script,
    };
    match (blocked, via) {
        (Some(why @ (Unreachable::SetId(_) | Unreachable::FileCapabilities)), _) => {
            Err(Error::Privileged {
                program: judged,
                why: why.reason(),
            })
        }
        (Some(why), Via::Shim) => Err(Error::Unreachable {
            program: judged,
            why: why.reason(),
        }),
        (Some(_), Via::Seccomp | Via::Auto) | (None, Via::Seccomp) => Ok(plan(Mechanism::Seccomp)),
        // A script may exec anything, a Go or static program among them (a wrapper that ends in
        // `exec ./server`), and the shim would silently miss it: the supervisor reaches every
        // program the script starts.
        (None, Via::Auto) if script => Ok(plan(Mechanism::Seccomp)),
        (None, Via::Shim | Via::Auto) => Ok(plan(Mechanism::Shim)),
    }
}

/// Whether `program` is a script: it starts with `#!`, or it is not an ELF file at all, which
/// the kernel refuses (ENOEXEC) and [`run`] then hands to /bin/sh, as execvp(3) does.
fn is_script(program: &Path) -> bool {
    let mut head = [0u8; 4];
    File::open(program)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .is_ok_and(|n| n < 4 || head != *b"\x7fELF")
}

/// Whether `program` starts as an ELF file does. A file that cannot be read is not judged one.
fn is_elf(program: &Path) -> bool {
    let mut head = [0u8; 4];
    File::open(program)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .is_ok_and(|n| n == 4 && head == *b"\x7fELF")
}

/// Whether the shim can act inside `program`; a script is judged by its interpreter.
/// `None` means nothing stands in the way.
pub fn reach(program: &Path) -> Result<Option<(PathBuf, Unreachable)>, Error> {
    let examined = examine(program)?;
    Ok(examined.blocked.map(|why| (examined.judged, why)))
}

/// What [`examine`] found.
struct Examined {
    /// The program, or a script's interpreter.
    judged: PathBuf,
    /// What keeps the shim out, if anything.
    blocked: Option<Unreachable>,
    go: Go,
}

fn examine(program: &Path) -> Result<Examined, Error> {
    let mut current = program.to_path_buf();
    let found = |judged, blocked, go| Examined {
        judged,
        blocked,
        go,
    };
    for depth in 0..4 {
        // An interpreter that is missing or unreadable decides nothing here: exec reports it
        // (ENOENT, EACCES) as the kernel sees it.
        if depth > 0 && File::open(&current).is_err() {
            return Ok(found(program.to_path_buf(), None, Go::No));
        }
        let io = |source| Error::Io {
            what: current.display().to_string(),
            source,
        };
        let meta = current.metadata().map_err(io)?;
        if let Some(why) = setid(&meta) {
            return Ok(found(current, Some(why), Go::No));
        }
        if !rustix::process::getuid().is_root() && has_file_caps(&current) {
            return Ok(found(current, Some(Unreachable::FileCapabilities), Go::No));
        }
        let mut file = File::open(&current).map_err(io)?;
        let mut head = [0u8; 256];
        let n = read_up_to(&mut file, &mut head).map_err(io)?;
        let head = &head[..n];
        if let Some(interpreter) = shebang(head) {
            current = interpreter;
            continue;
        }
        if head.starts_with(b"\x7fELF") {
            // ELF headers we cannot read are headers the kernel cannot read either: nothing is
            // decided here, and exec reports the kernel's verdict (exec format error).
            let Ok(elf) = elf::inspect(&file) else {
                return Ok(found(current, None, Go::No));
            };
            let blocked = if elf.go == Go::Yes {
                Some(Unreachable::Go)
            } else if elf.interpreter.is_none() {
                Some(Unreachable::Static)
            } else {
                None
            };
            return Ok(found(current, blocked, elf.go));
        }
        // Neither ELF nor `#!`: the kernel says ENOEXEC and [`run`] hands the file to /bin/sh,
        // as execvp(3) does, so the shell is what runs.
        if current != Path::new(SHELL) {
            current = PathBuf::from(SHELL);
            continue;
        }
        return Ok(found(current, None, Go::No));
    }
    Ok(found(current, None, Go::No))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn setid(meta: &std::fs::Metadata) -> Option<Unreachable> {
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    if meta.mode() & 0o4000 != 0 && meta.uid() != uid {
        return Some(Unreachable::SetId("setuid"));
    }
    if meta.mode() & 0o2000 != 0 && meta.mode() & 0o010 != 0 && meta.gid() != gid {
        return Some(Unreachable::SetId("setgid"));
    }
    None
}

fn has_file_caps(path: &Path) -> bool {
    let mut buf = [0u8; 64];
    rustix::fs::getxattr(path, "security.capability", &mut buf).is_ok()
}

/// `#!/path/interp [arg]`: the program that will really run. `/usr/bin/env NAME` is followed
/// to NAME on PATH.
fn shebang(head: &[u8]) -> Option<PathBuf> {
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let mut words = line
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|w| !w.is_empty());
    let interpreter = Path::new(OsStr::from_bytes(words.next()?));
    if interpreter.file_name() == Some(OsStr::new("env")) {
        let name = words.find(|w| !w.starts_with(b"-"))?;
        return resolve_program(OsStr::from_bytes(name), Some(&search_path().0));
    }
    Some(interpreter.to_path_buf())
}

/// The environment additions for running a program under the shim: LD_PRELOAD with the shim
/// appended to whatever is there (once), and the injection in `KEEPALIVE_POLICY`.
pub fn environment(
    shim: &Path,
    existing_preload: Option<&OsStr>,
    injection: &Injection,
) -> [(OsString, OsString); 2] {
    let mut preload = OsString::new();
    if let Some(existing) = existing_preload.filter(|e| !e.is_empty()) {
        let already = existing
            .as_bytes()
            .split(|b| *b == b':' || *b == b' ')
            .any(|entry| entry == shim.as_os_str().as_bytes());
        if already {
            preload.push(existing);
        } else {
            preload.push(existing);
            preload.push(":");
            preload.push(shim);
        }
    } else {
        preload.push(shim);
    }
    [
        ("LD_PRELOAD".into(), preload),
        (ENV.into(), injection.to_string().into()),
    ]
}

/// What `keepalive run` is asked to do: start `program` (as typed: a path, or a name looked up
/// in PATH) with `args`, and `injection` reaching it through `via`.
#[derive(Debug, Clone)]
pub struct Request {
    /// The policy and the shim's options.
    pub injection: Injection,
    /// The mechanism asked for.
    pub via: Via,
    /// The program, as typed; it is also its `argv[0]`.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// Why a program was not started. A program that is not there or cannot be run gets env(1)'s
/// exit statuses, 127 and 126, so that they cannot be taken for one of the program's own.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No such program (exit status 127): not in PATH, no such file, or the interpreter it
    /// names (`#!`, or an ELF's PT_INTERP) does not exist.
    #[error("cannot run {program}: {why}")]
    NotFound {
        /// The program, as typed.
        program: String,
        /// What is missing.
        why: String,
    },
    /// The program is there but cannot be run (exit status 126): no execute permission, a
    /// directory, an exec format error.
    #[error("cannot run {program}: {why}")]
    CannotRun {
        /// The program, as typed.
        program: String,
        /// What is wrong with it.
        why: String,
        /// The errno of the execve(2) that failed, when one did.
        errno: Option<i32>,
    },
    /// Anything else: a bad policy, no shim, no seccomp, a program the mechanism cannot reach.
    #[error(transparent)]
    Other(#[from] Error),
}

/// env(1)'s exit status for a program it cannot find.
pub const EXIT_NOT_FOUND: u8 = 127;
/// env(1)'s exit status for a program it finds but cannot run.
pub const EXIT_CANNOT_RUN: u8 = 126;

impl LaunchError {
    /// The exit status for a program that was not found (127) or cannot be run (126); `None`
    /// for [`LaunchError::Other`], whose [`Error::class`] decides.
    pub fn exit_status(&self) -> Option<u8> {
        match self {
            LaunchError::NotFound { .. } => Some(EXIT_NOT_FOUND),
            LaunchError::CannotRun { .. } => Some(EXIT_CANNOT_RUN),
            LaunchError::Other(_) => None,
        }
    }
}

/// `keepalive run`: checks the policy against this network namespace's sysctls (so that
/// `user-timeout=auto` cannot fail later in the program), finds the program and checks that it
/// can run, chooses the mechanism ([`plan`]), then starts it. Through the shim the program
/// replaces this process (same pid, exit status and signals) and this returns only on failure;
/// through seccomp this process stays its parent, and the result is how the program ended.
/// `warn` hears anything the user should know before the program starts ([`Plan::warning`]).
///
/// As execvp(3) (and so env(1)): a name without a slash is looked up in PATH, or in the
/// default path when PATH is not set ([`search_path`]); a file that is not an ELF and that the
/// kernel refuses with ENOEXEC (a script without `#!`) is run by /bin/sh, as
/// `/bin/sh FILE ARGS`. A log file (`log=/path`) must be one the shim can open for appending;
/// if the run is refused after that check created it, it is removed again.
pub fn run(request: &Request, warn: &mut dyn FnMut(&str)) -> Result<Exit, LaunchError> {
    check(&request.injection)?;
    let program = locate(&request.program)?;
    let plan = plan(&program, request.via)?;
    // Everything that can refuse the run comes before the warning, so that a refusal is the
    // only line; the log's check last, so that little can fail after it.
    match plan.mechanism {
        Mechanism::Shim => {
            let vars = shim_environment(&request.injection)?;
            let env: Vec<_> = std::env::vars_os()
                .filter(|(key, _)| vars.iter().all(|(ours, _)| ours != key))
                .chain(vars.clone())
                .collect();
            let exec = Exec::new(&program, &request.program, &request.args, env.clone())
                .map_err(|source| starting(&program, source))?;
            let log = check_log(&request.injection)?;
            if let Some(warning) = plan.warning(&request.injection) {
                warn(&warning);
            }
            let error = exec.replace_process();
            let mut failure = exec_failure(&request.program, &program, error);
            if failure.is_exec_format_error() && !is_elf(&program) {
                // execvp(3)'s retry: `/bin/sh FILE ARGS`, with the same environment.
                let args: Vec<OsString> = std::iter::once(program.clone().into_os_string())
                    .chain(request.args.iter().cloned())
                    .collect();
                let shell = Path::new(SHELL);
                if let Ok(exec) = Exec::new(shell, shell.as_os_str(), &args, env) {
                    let error = exec.replace_process();
                    // No shell to run it with: the file's own failure stands, as it would in
                    // execvp(3) for ENOENT.
                    if error.raw_os_error() != Some(libc::ENOENT) {
                        failure = exec_failure(shell.as_os_str(), shell, error);
                    }
                }
            }
            if let Some(log) = log {
                log.remove_if_untouched();
            }
            Err(failure)
        }
        Mechanism::Seccomp => {
            let log = check_log(&request.injection)?;
            if let Some(warning) = plan.warning(&request.injection) {
                warn(&warning);
            }
            let supervise = |program: &Path, arg0: &OsStr, args: &[OsString]| {
                crate::supervise::run(program, arg0, args, &request.injection)
            };
            let result = match supervise(&program, &request.program, &request.args) {
                Err(e) if e.is_exec_format_error() && !is_elf(&program) => {
                    let args: Vec<OsString> = std::iter::once(program.clone().into_os_string())
                        .chain(request.args.iter().cloned())
                        .collect();
                    let shell = Path::new(SHELL);
                    match supervise(shell, shell.as_os_str(), &args) {
                        Err(LaunchError::NotFound { .. }) => Err(e),
                        other => other,
                    }
                }
                other => other,
            };
            if let (Err(_), Some(log)) = (&result, log) {
                log.remove_if_untouched();
            }
            result
        }
    }
}

impl LaunchError {
    /// Whether this is execve(2)'s ENOEXEC: the kernel knows no way to run the file.
    fn is_exec_format_error(&self) -> bool {
        matches!(self, LaunchError::CannotRun { errno: Some(e), .. } if *e == libc::ENOEXEC)
    }
}

/// A log file that [`check_log`] created, so that a run refused afterwards leaves nothing.
struct CreatedLog {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl CreatedLog {
    /// Removes the file if it is still the one created and nothing was written to it.
    fn remove_if_untouched(self) {
        if std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino && m.len() == 0)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// `log=/path`: the shim opens the file for every line with O_WRONLY, O_APPEND, O_CREAT and
/// O_NOFOLLOW, and says nothing when that fails (it must not write to the program's
/// descriptors), so a log that cannot be opened would be silently empty. Open it the same way
/// now (O_NONBLOCK too: a FIFO nobody reads would block the shim's open), and refuse with
/// why: bad input (exit 2) for a path that cannot hold a log, missing permission (3). The
/// file, if this created it, is returned so that a later refusal can remove it.
fn check_log(injection: &Injection) -> Result<Option<CreatedLog>, Error> {
    use rustix::fs::{Mode as FileMode, OFlags, open};
    use rustix::io::Errno;
    let Log::File(path) = injection.log() else {
        return Ok(None);
    };
    let path = Path::new(path);
    let flags = OFlags::WRONLY
        | OFlags::APPEND
        | OFlags::CLOEXEC
        | OFlags::NOCTTY
        | OFlags::NOFOLLOW
        | OFlags::NONBLOCK;
    let refuse = |errno: Errno| Error::Output {
        path: path.to_path_buf(),
        source: log_problem(path, errno),
    };
    for _ in 0..2 {
        match open(path, flags, FileMode::empty()) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(refuse)?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    != rustix::fs::FileType::RegularFile
                {
                    return Err(Error::Output {
                        path: path.to_path_buf(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidInput,
                            "it is not a regular file (a FIFO, a device or a socket); the shim logs only to a regular file, and never blocks on one",
                        ),
                    });
                }
                return Ok(None);
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(refuse(e)),
        }
        match open(
            path,
            flags | OFlags::CREATE | OFlags::EXCL,
            FileMode::from_raw_mode(0o644),
        ) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).map_err(refuse)?;
                return Ok(Some(CreatedLog {
                    path: path.to_path_buf(),
                    dev: st.st_dev,
                    ino: st.st_ino,
                }));
            }
            // Made by someone else in between: open it as it is.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(refuse(e)),
        }
    }
    Err(refuse(Errno::EXIST))
}

/// Why a log file cannot be opened, in words; the kind decides the exit status
/// ([`Error::class`]): permission 3, anything about the path itself 2.
fn log_problem(path: &Path, errno: rustix::io::Errno) -> std::io::Error {
    use rustix::io::Errno;
    use std::io::{Error as IoError, ErrorKind};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    let (kind, why) = match errno {
        Errno::NOENT => (
            ErrorKind::NotFound,
            format!(
                "the log's directory {} does not exist; log= needs a file in an existing directory",
                dir.display()
            ),
        ),
        Errno::NOTDIR => (
            ErrorKind::NotADirectory,
            format!(
                "{} is not a directory (a part of the log's path is a file)",
                dir.display()
            ),
        ),
        Errno::LOOP => (
            ErrorKind::InvalidInput,
            "it is a symbolic link, and the shim opens its log with O_NOFOLLOW, never through a link; give the file's own path".into(),
        ),
        Errno::ISDIR => (
            ErrorKind::IsADirectory,
            "it is a directory; log= takes the path of a file".into(),
        ),
        Errno::ACCESS | Errno::PERM => (
            ErrorKind::PermissionDenied,
            format!(
                "permission denied: this user (uid {}) cannot append to it or create it in {}",
                rustix::process::geteuid().as_raw(),
                dir.display()
            ),
        ),
        Errno::ROFS => (
            ErrorKind::InvalidInput,
            "its file system is mounted read-only".into(),
        ),
        Errno::NXIO => (
            ErrorKind::InvalidInput,
            "it is a FIFO or device nothing reads; the shim's open would block the program".into(),
        ),
        Errno::TXTBSY => (
            ErrorKind::InvalidInput,
            "it is a program that is running (text file busy)".into(),
        ),
        other => return other.into(),
    };
    IoError::new(kind, why)
}

/// The LD_PRELOAD and KEEPALIVE_POLICY that [`run`] would start a program with through the
/// shim, for other launchers (`keepalive run --print-env`), after the same checks.
pub fn shim_variables(injection: &Injection) -> Result<[(OsString, OsString); 2], Error> {
    check(injection)?;
    shim_environment(injection)
}

/// `user-timeout=auto` is worked out in the program against these same sysctls; refuse it here
/// if it cannot be, rather than let the shim warn later.
fn check(injection: &Injection) -> Result<(), Error> {
    let defaults = crate::sysctl::Sysctls::current().read()?;
    injection.policy.resolve(&defaults.settings())?;
    Ok(())
}

/// The shim found from this executable, appended to this process's LD_PRELOAD.
fn shim_environment(injection: &Injection) -> Result<[(OsString, OsString); 2], Error> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        what: "finding the keepalive executable".into(),
        source,
    })?;
    let shim = find_shim(&exe, std::env::var_os(SHIM_ENV).as_deref())?;
    Ok(environment(
        &shim,
        std::env::var_os("LD_PRELOAD").as_deref(),
        injection,
    ))
}

/// The program `name` names, checked as execve(2) would before anything starts: there (or
/// [`LaunchError::NotFound`]), a regular file this process may execute (or
/// [`LaunchError::CannotRun`]).
pub fn locate(name: &OsStr) -> Result<PathBuf, LaunchError> {
    // As env(1) and execvp(3) (ENOENT): an empty name is no program, and is not looked up.
    if name.is_empty() {
        return Err(LaunchError::NotFound {
            program: "\"\"".into(),
            why: "the program name is empty: give the program to run after --".into(),
        });
    }
    let shown = {
        use std::os::unix::ffi::OsStrExt;
        crate::printable::PrintableBytes(name.as_bytes()).to_string()
    };
    let (path_var, default_path) = search_path();
    let Some(program) = resolve_program(name, Some(&path_var)) else {
        // As execvp(3) and env(1): something of that name in PATH that cannot run is 126.
        if let Some(found) = std::env::split_paths(&path_var)
            .map(|dir| dir.join(name))
            .find(|p| p.symlink_metadata().is_ok())
        {
            return Err(LaunchError::CannotRun {
                program: shown,
                why: format!(
                    "{} is in PATH but cannot run: {}",
                    found.display(),
                    if found.is_dir() {
                        "it is a directory"
                    } else {
                        "it has no execute permission for this user"
                    }
                ),
                errno: None,
            });
        }
        return Err(LaunchError::NotFound {
            program: shown,
            why: if default_path {
                format!(
                    "no such command in execvp's default path {} (PATH is not set)",
                    path_var.to_string_lossy()
                )
            } else {
                format!("no such command in PATH ({})", path_var.to_string_lossy())
            },
        });
    };
    let cannot = |why: String| LaunchError::CannotRun {
        program: shown.clone(),
        why,
        errno: None,
    };
    let meta = match program.metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LaunchError::NotFound {
                program: shown.clone(),
                why: "no such file or directory".into(),
            });
        }
        Err(e) => return Err(cannot(e.to_string())),
    };
    if meta.is_dir() {
        return Err(cannot("it is a directory".into()));
    }
    if !meta.is_file() {
        return Err(cannot("it is not a regular file".into()));
    }
    if rustix::fs::access(&program, rustix::fs::Access::EXEC_OK).is_err() {
        return Err(cannot(format!(
            "it has no execute permission for this user (mode {:04o})",
            meta.mode() & 0o7777
        )));
    }
    Ok(program)
}

fn starting(program: &Path, source: std::io::Error) -> LaunchError {
    LaunchError::Other(Error::Io {
        what: format!("starting {}", program.display()),
        source,
    })
}

/// What a failed execve(2) of `program` (typed as `name`) means, in env(1)'s terms: ENOENT
/// after [`locate`] found the file is its interpreter missing (127), anything else is a program
/// that cannot run (126).
pub(crate) fn exec_failure(name: &OsStr, program: &Path, error: std::io::Error) -> LaunchError {
    let program_shown = name.to_string_lossy().into_owned();
    match rustix::io::Errno::from_io_error(&error) {
        Some(rustix::io::Errno::NOENT) => LaunchError::NotFound {
            program: program_shown,
            why: match interpreter_of(program) {
                Some(interpreter) => {
                    format!("its interpreter {} does not exist", interpreter.display())
                }
                None => "no such file or directory".into(),
            },
        },
        errno => LaunchError::CannotRun {
            program: program_shown,
            errno: error.raw_os_error(),
            why: match errno {
                Some(rustix::io::Errno::NOEXEC) => "exec format error: the kernel cannot run it (not a program for this machine, or a script without a #! line)".into(),
                Some(rustix::io::Errno::ACCESS) => "permission denied (no execute permission for it or its interpreter, or its file system is mounted noexec)".into(),
                Some(rustix::io::Errno::TXTBSY) => "it is open for writing (text file busy)".into(),
                _ => error.to_string(),
            },
        },
    }
}

/// The interpreter the kernel would start for `program`: a `#!` line's, or an ELF's PT_INTERP.
fn interpreter_of(program: &Path) -> Option<PathBuf> {
    let mut file = File::open(program).ok()?;
    let mut head = [0u8; 256];
    let n = read_up_to(&mut file, &mut head).ok()?;
    let head = head.get(..n)?;
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|b| *b == b'\n').next()?;
        let word = line
            .split(|b| *b == b' ' || *b == b'\t')
            .find(|w| !w.is_empty())?;
        return Some(PathBuf::from(OsStr::from_bytes(word)));
    }
    elf::inspect(&file).ok()?.interpreter
}

/// An execve(2) made ready before any fork: the path, `argv` and `envp` as C strings and the
/// pointer arrays over them, so that [`Exec::exec`] allocates nothing and may run in a forked
/// child. It execs exactly `path`: no PATH search, and no retry with /bin/sh on ENOEXEC;
/// [`run`] makes execvp(3)'s retry itself, for files that are not ELF, so that an ELF the
/// kernel cannot run (another machine's) is reported as such (126).
pub(crate) struct Exec {
    path: std::ffi::CString,
    /// Owns the strings `argv` and `envp` point into (a CString's bytes never move).
    _strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into the CStrings the struct owns, which are never changed or
// freed while it lives; sharing or sending them is sharing or sending read-only bytes.
unsafe impl Send for Exec {}
// SAFETY: as for Send; nothing is ever written through the pointers.
unsafe impl Sync for Exec {}

impl Exec {
    /// `arg0` is `argv[0]`; `env` the whole environment, as `KEY=VALUE`.
    pub(crate) fn new(
        path: &Path,
        arg0: &OsStr,
        args: &[OsString],
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> std::io::Result<Exec> {
        use std::ffi::CString;
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an argument or environment variable contains a NUL byte",
                )
            })
        };
        let argv: Vec<CString> = std::iter::once(arg0)
            .chain(args.iter().map(OsString::as_os_str))
            .map(|a| c(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env
            .into_iter()
            .map(|(key, value)| c(&[key.as_bytes(), b"=", value.as_bytes()].concat()))
            .collect::<Result<_, _>>()?;
        let pointers = |strings: &[CString]| {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let (argv_ptrs, envp_ptrs) = (pointers(&argv), pointers(&envp));
        Ok(Exec {
            path: c(path.as_os_str().as_bytes())?,
            _strings: argv.into_iter().chain(envp).collect(),
            argv: argv_ptrs,
            envp: envp_ptrs,
        })
    }

    /// execve(2); returns only if it failed, with why. Async-signal-safe: no allocation.
    pub(crate) fn exec(&self) -> std::io::Error {
        // SAFETY: a NUL-terminated path and NULL-terminated arrays of NUL-terminated strings,
        // all owned by `self`, which outlives the call.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        std::io::Error::last_os_error()
    }

    /// Replaces this process with the program, as `Command::exec` does: the signal mask
    /// emptied and SIGPIPE back to its default action (Rust ignores it; the program must not
    /// inherit that), both restored if the exec fails.
    pub(crate) fn replace_process(&self) -> std::io::Error {
        // SAFETY: sigset_t is plain data, filled by sigemptyset before use; pthread_sigmask and
        // signal change only this thread's mask and the process's SIGPIPE disposition, and are
        // given valid pointers.
        unsafe {
            let mut empty = std::mem::zeroed::<libc::sigset_t>();
            let mut old = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut empty);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, &mut old);
            let pipe = libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let error = self.exec();
            libc::signal(libc::SIGPIPE, pipe);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            error
        }
    }
}

/// Just enough ELF to answer two questions, from the program headers first, as the kernel and
/// the loader do (they never look at section headers): dynamically linked (a PT_INTERP program
/// header names the loader; a static-pie program has PT_DYNAMIC but no PT_INTERP, relocates
/// itself, and no loader reads LD_PRELOAD for it)? Go (a PT_NOTE segment with Go's build-ID
/// note, which the Go linker always writes, or else a `.go.buildinfo` or `.note.go.buildid`
/// section)? Section headers are optional in an executable (a truncated or `sstrip`ped file
/// runs without them), so when they are missing or cannot be read, Go is [`Go::Unknown`].
mod elf {
    use std::ffi::OsStr;
    use std::fs::File;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;

    /// Whether a program is written in Go.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Go {
        /// It carries Go's build-ID note or Go's sections.
        Yes,
        /// Its section headers say it is not.
        No,
        /// No Go note in its program headers, and no section headers that could be read.
        Unknown,
    }

    pub struct Facts {
        /// PT_INTERP: the dynamic loader the kernel starts for it; `None` is static.
        pub interpreter: Option<PathBuf>,
        pub go: Go,
    }

    const PT_INTERP: u64 = 3;
    const PT_NOTE: u64 = 4;
    /// ELF_NOTE_GOBUILDID_TAG in Go's cmd/link (`.note.go.buildid`, owner "Go").
    const NT_GO_BUILDID: u64 = 4;

    fn bad() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, "malformed ELF headers")
    }

    struct Reader<'a> {
        file: &'a File,
        le: bool,
        wide: bool,
    }

    impl<'a> Reader<'a> {
        /// A reader for the file's class (ELF32/ELF64) and byte order, and the ELF header's
        /// first 64 bytes (fewer for a shorter file).
        fn open(file: &'a File) -> io::Result<(Reader<'a>, Vec<u8>)> {
            let mut header = vec![0u8; 64];
            let n = file.read_at(&mut header, 0)?;
            header.truncate(n);
            let r = Reader {
                file,
                wide: match header.get(4) {
                    Some(1) => false,
                    Some(2) => true,
                    _ => return Err(bad()),
                },
                le: match header.get(5) {
                    Some(1) => true,
                    Some(2) => false,
                    _ => return Err(bad()),
                },
            };
            Ok((r, header))
        }

        /// The program header table: its bytes, and the number and size of its entries.
        fn program_headers(&self, header: &[u8]) -> io::Result<(Vec<u8>, u64, u64)> {
            let (phoff_at, base) = if self.wide {
                (0x20, 0x36)
            } else {
                (0x1c, 0x2a)
            };
            let phoff = self.addr(header, phoff_at)?;
            let phentsize = self.uint(header, base, 2)?;
            let phnum = self.uint(header, base + 2, 2)?;
            Ok((self.bytes(phoff, phnum * phentsize)?, phnum, phentsize))
        }

        fn bytes(&self, at: u64, n: u64) -> io::Result<Vec<u8>> {
            if n > 1 << 24 {
                return Err(bad());
            }
            let mut buf = vec![0; n as usize];
            self.file.read_exact_at(&mut buf, at)?;
            Ok(buf)
        }
        /// An `n`-byte integer at `at` in `buf`, in the file's byte order.
        fn uint(&self, buf: &[u8], at: u64, n: usize) -> io::Result<u64> {
            let at = usize::try_from(at).map_err(|_| bad())?;
            let b = buf
                .get(at..at.checked_add(n).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            let mut v = 0u64;
            for i in 0..n {
                let byte = if self.le { b[n - 1 - i] } else { b[i] };
                v = (v << 8) | u64::from(byte);
            }
            Ok(v)
        }
        /// An address-sized field: 8 bytes in ELF64, 4 in ELF32.
        fn addr(&self, buf: &[u8], at: u64) -> io::Result<u64> {
            self.uint(buf, at, if self.wide { 8 } else { 4 })
        }
    }

    /// Fails only when the ELF header or the program headers cannot be read: then the kernel
    /// cannot start the program either.
    pub fn inspect(file: &File) -> io::Result<Facts> {
        let (r, header) = Reader::open(file)?;
        let header = &header[..];
        let (shoff_at, base) = if r.wide { (0x28, 0x36) } else { (0x20, 0x2a) };
        let (table, phnum, phentsize) = r.program_headers(header)?;
        // p_offset, p_filesz and p_align in a program header.
        let (off_at, size_at, align_at) = if r.wide {
            (0x08, 0x20, 0x30)
        } else {
            (0x04, 0x10, 0x1c)
        };
        let mut interpreter = None;
        let mut go_note = false;
        for i in 0..phnum {
            let ph = i * phentsize;
            let kind = r.uint(&table, ph, 4)?;
            let (offset, size) = (r.addr(&table, ph + off_at)?, r.addr(&table, ph + size_at)?);
            if kind == PT_INTERP {
                let path = r.bytes(offset, size.min(4096))?;
                let path = path.split(|b| *b == 0).next().unwrap_or(&[]);
                interpreter = Some(PathBuf::from(OsStr::from_bytes(path)));
            } else if kind == PT_NOTE && !go_note {
                let align = if r.addr(&table, ph + align_at)? == 8 {
                    8
                } else {
                    4
                };
                // A note segment that cannot be read holds no note we can use.
                if let Ok(notes) = r.bytes(offset, size.min(1 << 16)) {
                    go_note = has_go_note(&r, &notes, align);
                }
            }
        }
        let go = if go_note {
            Go::Yes
        } else {
            match go_sections(&r, header, shoff_at, base) {
                Ok(true) => Go::Yes,
                Ok(false) => Go::No,
                Err(_) => Go::Unknown,
            }
        };
        Ok(Facts { interpreter, go })
    }

    /// Whether the file is a position-independent executable (DF_1_PIE in its PT_DYNAMIC
    /// segment's DT_FLAGS_1): of type ET_DYN like a shared object, but one the loader refuses
    /// to preload ("cannot dynamically load position-independent executable").
    pub fn is_pie(file: &File) -> io::Result<bool> {
        const PT_DYNAMIC: u64 = 2;
        const DT_NULL: u64 = 0;
        const DT_FLAGS_1: u64 = 0x6fff_fffb;
        const DF_1_PIE: u64 = 0x0800_0000;
        let (r, header) = Reader::open(file)?;
        let header = &header[..];
        let (table, phnum, phentsize) = r.program_headers(header)?;
        let (off_at, size_at) = if r.wide { (0x08, 0x20) } else { (0x04, 0x10) };
        let entry = if r.wide { 16 } else { 8 };
        for i in 0..phnum {
            let ph = i * phentsize;
            if r.uint(&table, ph, 4)? != PT_DYNAMIC {
                continue;
            }
            let (offset, size) = (r.addr(&table, ph + off_at)?, r.addr(&table, ph + size_at)?);
            let dynamic = r.bytes(offset, size.min(1 << 16))?;
            let mut at = 0;
            while at + entry <= dynamic.len() as u64 {
                let tag = r.addr(&dynamic, at)?;
                if tag == DT_NULL {
                    break;
                }
                if tag == DT_FLAGS_1 {
                    return Ok(r.addr(&dynamic, at + entry / 2)? & DF_1_PIE != 0);
                }
                at += entry;
            }
        }
        Ok(false)
    }

    /// Whether a note segment holds Go's build ID: entries of namesz, descsz and type (4 bytes
    /// each), then the name and the description, each padded to `align`.
    fn has_go_note(r: &Reader<'_>, notes: &[u8], align: u64) -> bool {
        let pad = |n: u64| n.checked_add(align - 1).map(|n| n & !(align - 1));
        let mut at = 0u64;
        while let (Ok(namesz), Ok(descsz), Ok(kind)) = (
            r.uint(notes, at, 4),
            r.uint(notes, at + 4, 4),
            r.uint(notes, at + 8, 4),
        ) {
            let name_at = at + 12;
            let name = usize::try_from(name_at)
                .ok()
                .and_then(|from| notes.get(from..from.checked_add(namesz as usize)?));
            if kind == NT_GO_BUILDID
                && name.is_some_and(|n| n.split(|b| *b == 0).next() == Some(b"Go"))
            {
                return true;
            }
            let next = pad(namesz)
                .and_then(|n| n.checked_add(pad(descsz)?))
                .and_then(|n| n.checked_add(name_at));
            match next {
                Some(next) if next > at => at = next,
                _ => return false,
            }
        }
        false
    }

    /// Whether the section headers name a Go section; an error when there are none or they
    /// cannot be read (a truncated file, an offset past its end).
    fn go_sections(r: &Reader<'_>, header: &[u8], shoff_at: u64, base: u64) -> io::Result<bool> {
        let shoff = r.addr(header, shoff_at)?;
        let shentsize = r.uint(header, base + 4, 2)?;
        let shnum = r.uint(header, base + 6, 2)?;
        let shstrndx = r.uint(header, base + 8, 2)?;
        if shoff == 0 || shnum == 0 || shstrndx >= shnum {
            return Err(bad());
        }
        let table = r.bytes(shoff, shnum * shentsize)?;
        // sh_offset and sh_size of the section-name string table.
        let (off_at, size_at) = if r.wide { (0x18, 0x20) } else { (0x10, 0x14) };
        let strtab = shstrndx * shentsize;
        let names = r.bytes(
            r.addr(&table, strtab + off_at)?,
            r.addr(&table, strtab + size_at)?,
        )?;
        for i in 0..shnum {
            let name_at = r.uint(&table, i * shentsize, 4)? as usize;
            let name = names.get(name_at..).unwrap_or(&[]);
            let name = name.split(|b| *b == 0).next().unwrap_or(&[]);
            if name == b".go.buildinfo" || name == b".note.go.buildid" {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_is_appended_once() {
        let inj = Injection::parse("idle=30").unwrap();
        let shim = Path::new("/opt/k/libkeepalive_inject.so");
        let [(k, v), (p, q)] = environment(shim, None, &inj);
        assert_eq!(
            (k.as_os_str(), v.as_os_str()),
            (OsStr::new("LD_PRELOAD"), shim.as_os_str())
        );
        assert_eq!(
            (p.as_os_str(), q.as_os_str()),
            (OsStr::new("KEEPALIVE_POLICY"), OsStr::new("idle=30s"))
        );
        let [(_, v), _] = environment(shim, Some(OsStr::new("/x/other.so")), &inj);
        assert_eq!(v, "/x/other.so:/opt/k/libkeepalive_inject.so");
        let [(_, v), _] = environment(
            shim,
            Some(OsStr::new("/x/a.so /opt/k/libkeepalive_inject.so")),
            &inj,
        );
        assert_eq!(v, "/x/a.so /opt/k/libkeepalive_inject.so");
    }

    #[test]
    fn shebangs() {
        assert_eq!(
            shebang(b"#!/bin/sh -e\necho"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(
            shebang(b"#! /usr/bin/python3\n"),
            Some(PathBuf::from("/usr/bin/python3"))
        );
        assert_eq!(shebang(b"\x7fELF"), None);
        let sh = shebang(b"#!/usr/bin/env -S sh\n").unwrap();
        assert!(sh.ends_with("sh"), "{sh:?}");
    }

    #[test]
    fn this_test_binary_is_dynamic_and_not_go() {
        let me = std::env::current_exe().unwrap();
        assert_eq!(reach(&me).unwrap(), None);
        let elf = elf::inspect(&File::open(&me).unwrap()).unwrap();
        assert!(elf.interpreter.is_some());
        assert_eq!(elf.go, Go::No);
    }

    #[test]
    fn program_headers_answer_without_section_headers() {
        let bytes = std::fs::read("/bin/true").unwrap();
        let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("true");
        std::fs::write(&cut, &bytes[..shoff]).unwrap();
        let elf = elf::inspect(&File::open(&cut).unwrap()).unwrap();
        assert!(elf.interpreter.is_some_and(|i| i.is_absolute()));
        assert_eq!(elf.go, Go::Unknown);
        assert_eq!(reach(&cut).unwrap(), None);
        // Not even program headers: nothing decided, the kernel will say ENOEXEC.
        std::fs::write(&cut, &bytes[..0x40]).unwrap();
        assert!(elf::inspect(&File::open(&cut).unwrap()).is_err());
        assert_eq!(reach(&cut).unwrap(), None);
    }

    #[test]
    fn exec_failures_in_env_terms() {
        let name = OsStr::new("prog");
        let status = |errno: i32| {
            exec_failure(
                name,
                Path::new("/nonexistent"),
                std::io::Error::from_raw_os_error(errno),
            )
            .exit_status()
        };
        assert_eq!(status(libc::ENOENT), Some(EXIT_NOT_FOUND));
        for errno in [libc::EACCES, libc::ENOEXEC, libc::ETXTBSY, libc::E2BIG] {
            assert_eq!(status(errno), Some(EXIT_CANNOT_RUN), "errno {errno}");
        }
    }
}
