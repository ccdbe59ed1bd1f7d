//! `keepalive run`: the arguments become a [`Request`]; [`launch::run`] decides and starts the
//! program (exec'd with the shim preloaded, or under the seccomp supervisor); this renders what
//! comes back.

use crate::cli::{RunArgs, Via};
use crate::render;
use keepalive::launch::{self, Exit, LaunchError, Request};
use keepalive::policy::Key;
use keepalive::policy::injection::Injection;

/// Returns the exit status for keepalive itself: 0 after --print-env, the program's own after
/// a seccomp run, 127 for a program not found and 126 for one that cannot run (as env(1)).
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let injection = injection(args)?;
    if args.print_env {
        if args.via == Via::Seccomp {
            return Err(crate::UsageError::err(
                "--print-env prints the LD_PRELOAD shim's settings; it does not go with --via seccomp, which has nothing to print",
            ));
        }
        let mut text = String::new();
        for (key, value) in launch::shim_variables(&injection)? {
            text.push_str(&format!(
                "{}={}\n",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            ));
        }
        render::out(&text)?;
        return Ok(0);
    }

    let Some((program, rest)) = args.command.split_first() else {
        return Err(crate::UsageError::err(
            "no command given: keepalive run [POLICY] -- CMD ARGS",
        ));
    };
    let request = Request {
        injection,
        via: match args.via {
            Via::Shim => launch::Via::Shim,
            Via::Seccomp => launch::Via::Seccomp,
            Via::Auto => launch::Via::Auto,
        },
        program: program.clone(),
        args: rest.to_vec(),
    };
    let mut warn = |warning: &str| render::note(&format!("keepalive: warning: {warning}\n"));
    match launch::run(&request, &mut warn) {
        Ok(Exit::Code(code)) => Ok(u8::try_from(code).unwrap_or(1)),
        Ok(Exit::Signal(signal)) => {
            keepalive::supervise::die_by(signal);
            Ok(u8::try_from(128 + signal).unwrap_or(1))
        }
        Err(LaunchError::Other(e)) => Err(e.into()),
        Err(e) => {
            render::note(&format!("keepalive: {e}\n"));
            Ok(e.exit_status().unwrap_or(1))
        }
    }
}

/// The policy and the flags that are the shim's options, as one injection.
fn injection(args: &RunArgs) -> anyhow::Result<Injection> {
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
    Ok(injection)
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
