//! `keepalive run`: validate everything, then exec the program with the shim preloaded.

use crate::cli::RunArgs;
use keepalive::Error;
use keepalive::launch::{self, SHIM_ENV};
use keepalive::policy::Key;
use keepalive::policy::injection::Injection;
use keepalive::sysctl::Sysctls;
use std::env;
use std::os::unix::process::CommandExt;
use std::process::Command;

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
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

    let exe = env::current_exe()?;
    let shim = launch::find_shim(&exe, env::var_os(SHIM_ENV).as_deref())?;
    let vars = launch::environment(&shim, env::var_os("LD_PRELOAD").as_deref(), &injection);
    if args.print_env {
        for (key, value) in &vars {
            println!(
                "{}={}",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            );
        }
        return Ok(());
    }

    let Some((name, rest)) = args.command.split_first() else {
        return Err(crate::UsageError::err(
            "no command given: keepalive run [POLICY] -- CMD ARGS",
        ));
    };
    let program = launch::resolve_program(name, env::var_os("PATH").as_deref())
        .ok_or_else(|| Error::ProgramNotFound(name.to_string_lossy().into_owned()))?;
    if let Some((blocked, why)) = launch::reach(&program)? {
        return Err(Error::Unreachable {
            program: blocked,
            why: why.reason(),
        }
        .into());
    }
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

/// Single quotes for a POSIX shell, when needed.
fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-=,:+".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
