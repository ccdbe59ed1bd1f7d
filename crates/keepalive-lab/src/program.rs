//! A program of the user's at one end of the lab's connection (`--server-cmd`,
//! `--client-cmd`): its words, the program found, the environment that injects the policy, and
//! a start that ties its life to the lab's.

use crate::LabError;
use keepalive::Policy;
use std::ffi::OsString;
use std::path::PathBuf;

/// A program, ready to start.
pub(crate) struct Program {
    /// The command line as the user gave it, for messages.
    pub(crate) text: String,
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
        let mut words = shell_words::split(text)
            .map_err(|e| bad(format!("{e}; write it as a shell would, e.g. 'nc -l 8080'")))?
            .into_iter()
            .map(|w| {
                w.replace("{server}", &server.ip().to_string())
                    .replace("{port}", &server.port().to_string())
            });
        let name = words.next().ok_or_else(|| bad("no program given".into()))?;
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let program = launch::resolve_program(name.as_ref(), Some(&path))
            .filter(|p| p.is_file())
            .ok_or_else(|| bad(format!("program '{name}' not found")))?;
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
        Ok(Program {
            text: text.to_owned(),
            program,
            args: words.collect(),
            env,
        })
    }

    /// Starts the program as the first process of a PID namespace of its own, killed when the
    /// thread that starts it ends (PR_SET_PDEATHSIG), the lab's death included: when the
    /// first process of a PID namespace dies the kernel kills everything else in it, so nothing
    /// it started outlives the lab either. Its standard input is a pipe nobody writes to (it
    /// stays open: `nc` would end at EOF), its output goes nowhere. Call on a thread that
    /// lives until the program is reaped.
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

/// `child` if it has exited: its status in words.
pub(crate) fn exited(child: &mut std::process::Child) -> Option<String> {
    child.try_wait().ok().flatten().map(|s| s.to_string())
}
