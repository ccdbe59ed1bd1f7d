//! A program of the user's at one end of the lab's connection (`--server-cmd`,
//! `--client-cmd`): its words, the program found, the environment that injects the policy, and
//! a start that ties its life to the lab's.

use crate::LabError;
use keepalive::Policy;
use std::ffi::OsString;
use std::path::PathBuf;

/// A program, ready to start.
pub(crate) struct Program {
    /// The command line that runs (placeholders filled in), for messages.
    pub(crate) text: String,
    /// Where its standard error goes: a pipe whose reader (a thread started with the
    /// program, see [`label_stderr`]) passes each line on labelled with the program's end.
    stderr: std::os::fd::OwnedFd,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(OsString, OsString)>,
}

impl Program {
    /// Splits `text` as a POSIX shell would (quotes, backslashes; no expansions, no shell),
    /// puts the server's address and port for `{server}` and `{port}` in each word, finds the
    /// program (a path, or a name on the caller's PATH, /usr/bin:/bin when it has none) and,
    /// with `inject`, the LD_PRELOAD shim that gives its sockets the policy; refuses a program
    /// the shim cannot reach. `flag` names the option in messages.
    pub(crate) fn new(
        flag: &str,
        text: &str,
        inject: Option<Policy>,
        server: std::net::SocketAddrV4,
    ) -> Result<Program, LabError> {
        use keepalive::launch;
        let bad = |why: String| LabError::BadInput(format!("{flag} '{text}': {why}"));
        let words = shell_words::split(text)
            .map_err(|e| bad(format!("{e}; write it as a shell would, e.g. 'nc -l 8080'")))?;
        // Only {server} and {port}: anything else in braces is a mistake the program would
        // meet as a literal word.
        for word in &words {
            let mut rest = word.as_str();
            while let Some(open) = rest.find('{') {
                let after = &rest[open + 1..];
                let Some(close) = after.find('}') else { break };
                let name = &after[..close];
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && name != "server"
                    && name != "port"
                {
                    return Err(bad(format!(
                        "unknown placeholder {{{name}}}: the lab fills in {{server}} and {{port}}"
                    )));
                }
                rest = &after[close + 1..];
            }
        }
        let mut words = words.into_iter().map(|w| {
            w.replace("{server}", &server.ip().to_string())
                .replace("{port}", &server.port().to_string())
        });
        let name = words.next().ok_or_else(|| bad("no program given".into()))?;
        // A bare name is looked up in the caller's PATH, /usr/bin:/bin when it has none.
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let found = launch::resolve_program(name.as_ref(), Some(&path))
            .map_or_else(|| std::ffi::OsString::from(&name), PathBuf::into_os_string);
        let program = launch::locate(&found).map_err(|e| bad(e.to_string()))?;
        let args: Vec<String> = words.collect();
        // What runs, as a shell would write it: the placeholders filled in.
        let shown = shell_words::join(
            std::iter::once(name.as_str()).chain(args.iter().map(String::as_str)),
        );
        let mut env = Vec::new();
        if let Some(policy) = inject {
            let exe = std::env::current_exe().map_err(|e| LabError::Run(e.to_string()))?;
            let shim = launch::find_shim(&exe, std::env::var_os(launch::SHIM_ENV).as_deref())
                .map_err(|e| LabError::Run(e.to_string()))?;
            if let Some((blocked, why)) = launch::reach(&program).map_err(|e| bad(e.to_string()))? {
                return Err(bad(format!(
                    "the lab injects through the LD_PRELOAD shim, which cannot reach {}: {}",
                    blocked.display(),
                    why.reason()
                )));
            }
            let mut injection = keepalive::policy::injection::Injection::default();
            injection.policy = policy;
            env.extend(launch::environment(
                &shim,
                std::env::var_os("LD_PRELOAD").as_deref(),
                &injection,
            ));
        }
        let end = if flag.contains("server") {
            "server"
        } else {
            "client"
        };
        Ok(Program {
            stderr: label_stderr(format!("[{end} `{shown}`]"))
                .map_err(|e| LabError::Run(format!("a pipe for the program's stderr: {e}")))?,
            text: shown,
            program,
            args,
            env,
        })
    }

    /// Starts the program as the first process of a PID namespace of its own, killed when the
    /// thread that starts it ends (PR_SET_PDEATHSIG), the lab's death included: when the
    /// first process of a PID namespace dies the kernel kills everything else in it, so nothing
    /// it started outlives the lab either. Its standard input is a pipe nobody writes to (it
    /// stays open: `nc` would end at EOF), its output goes nowhere. Call on a thread that
    /// lives until the program is reaped. Its standard error is passed on, labelled.
    pub(crate) fn start(&self) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        // CLONE_NEWPID applies to the children this thread makes from now on.
        // SAFETY: no memory is involved; only this thread's later children are affected.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWPID)? };
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(self.stderr.try_clone()?))
            // A process group of its own, so that a fault can stop all of it at once.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command.spawn()
    }
}

/// The writing end of a pipe whose reader, a thread started here (not on the thread that
/// starts the program: after unshare(CLONE_NEWPID) the kernel refuses that thread new
/// threads), writes each line to the lab's stderr after `label`, so that what a program says
/// is not taken for the lab's own words. The reader ends when the last writer closes.
fn label_stderr(label: String) -> std::io::Result<std::os::fd::OwnedFd> {
    let (read, write) = std::io::pipe()?;
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let lines = std::io::BufReader::new(read).lines();
        for line in lines.map_while(Result::ok) {
            let _ = writeln!(std::io::stderr().lock(), "  {label} {line}");
        }
    });
    Ok(write.into())
}

/// `child` if it has exited: its status in words.
pub(crate) fn exited(child: &mut std::process::Child) -> Option<String> {
    child.try_wait().ok().flatten().map(|s| s.to_string())
}
