//! `keepalive run`: validate everything, then exec the program with the shim preloaded, or
//! run it under the library's seccomp supervisor.

use crate::cli::{RunArgs, Via};
use keepalive::Error;
use keepalive::launch::{self, Mechanism, SHIM_ENV};
use keepalive::policy::Key;
use keepalive::policy::injection::Injection;
use keepalive::supervise::{self, Exit};
use keepalive::sysctl::Sysctls;
use std::env;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Returns the exit status for keepalive itself: 0 after --print-env, the program's own
/// after a seccomp run.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let mut injection = Injection::default();
    injection.policy = args.policy_args.to_policy(args.policy_text.as_deref())?;
    let flags = [
        (Key::Mode, args.force.then_some("force")),
        (Key::Ports, args.ports.as_deref()),
        (Key::Dest, args.dest.as_deref()),
        (Key::Log, args.log.as_deref()),
        (Key::Inherit, args.no_inherit.then_some("no")),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            injection.set(key, value)?;
        }
    }
    // `auto` is worked out in the program against these same sysctls; refuse it here if it
    // cannot be, rather than let the shim warn later.
    injection
        .policy
        .resolve(&Sysctls::current().read()?.settings())?;

    if args.print_env {
        if args.via == Via::Seccomp {
            return Err(crate::UsageError::err(
                "--print-env prints the LD_PRELOAD shim's settings; it does not go with --via seccomp, which has nothing to print",
            ));
        }
        let vars = shim_environment(&injection)?;
        let mut out = std::io::stdout().lock();
        for (key, value) in &vars {
            let written = writeln!(
                out,
                "{}={}",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            );
            match written {
                Ok(()) => {}
                // A closed pipe ends quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(0);
    }

    let Some((name, rest)) = args.command.split_first() else {
        return Err(crate::UsageError::err(
            "no command given: keepalive run [POLICY] -- CMD ARGS",
        ));
    };
    let program = launch::resolve_program(name, env::var_os("PATH").as_deref())
        .ok_or_else(|| Error::ProgramNotFound(name.to_string_lossy().into_owned()))?;
    let via = match args.via {
        Via::Shim => launch::Via::Shim,
        Via::Seccomp => launch::Via::Seccomp,
        Via::Auto => launch::Via::Auto,
    };
    let plan = launch::plan(&program, via)?;
    match plan.mechanism {
        Mechanism::Shim => {
            let vars = shim_environment(&injection)?;
            let failure = Command::new(&program)
                .arg0(name)
                .args(rest)
                .envs(vars)
                .exec();
            Err(Error::Io {
                what: format!("starting {}", program.display()),
                source: failure,
            }
            .into())
        }
        Mechanism::Seccomp => {
            if let Some(warning) = plan.warning(&injection) {
                let _ = writeln!(std::io::stderr(), "keepalive: warning: {warning}");
            }
            match supervise::run(&program, name, rest, &injection)? {
                Exit::Code(code) => Ok(u8::try_from(code).unwrap_or(1)),
                Exit::Signal(signal) => {
                    supervise::die_by(signal);
                    Ok(u8::try_from(128 + signal).unwrap_or(1))
                }
            }
        }
    }
}

/// LD_PRELOAD with the shim and KEEPALIVE_POLICY, for the shim's ways of starting a program.
fn shim_environment(injection: &Injection) -> anyhow::Result<[(OsString, OsString); 2]> {
    let exe = env::current_exe()?;
    let shim = launch::find_shim(&exe, env::var_os(SHIM_ENV).as_deref())?;
    Ok(launch::environment(
        &shim,
        env::var_os("LD_PRELOAD").as_deref(),
        injection,
    ))
}

/// Single quotes for a POSIX shell, when needed.
pub fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-=,:+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
