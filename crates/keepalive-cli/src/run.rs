//! `keepalive run`: the arguments become a [`Request`]; [`launch::run`] decides and starts the
//! program (exec'd with the shim preloaded, or under the seccomp supervisor); this renders what
//! comes back.

use crate::cli::{RunArgs, Via};
use crate::policy_args::PolicyArgs;
use crate::render;
use keepalive::launch::{self, Exit, LaunchError, Request};
use keepalive::policy::Key;
use keepalive::policy::grammar;
use keepalive::policy::injection::Injection;

/// Returns the exit status for keepalive itself: 0 after --print-env, the program's own after
/// a seccomp run, 127 for a program not found and 126 for one that cannot run (as env(1)).
/// Every refusal is one line on standard error with its control characters escaped (a
/// program's name, a path may hold a newline or a terminal's escape sequence), and the exit
/// status main would give it.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    match start(args) {
        Ok(code) => Ok(code),
        // Output to a reader that went away: main ends that quietly.
        Err(e) if crate::broken_pipe(&e) => Err(e),
        Err(e) => {
            refuse(&e.to_string());
            Ok(crate::exit_code(&e))
        }
    }
}

/// One line on standard error: the messages are one line each, and a newline in one comes
/// from a value quoted in it, which is escaped with every other control character.
fn refuse(message: &str) {
    render::note(&format!("keepalive: {}\n", render::message(message)));
}

fn start(args: &RunArgs) -> anyhow::Result<u8> {
    if args.print_env && !args.command.is_empty() {
        return Err(crate::UsageError::err(
            "--print-env prints the environment and runs nothing; drop the command, or drop --print-env",
        ));
    }
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
    let mut warn = |warning: &str| {
        render::note(&format!(
            "keepalive: warning: {}\n",
            render::message(warning)
        ))
    };
    match launch::run(&request, &mut warn) {
        Ok(Exit::Code(code)) => Ok(u8::try_from(code).unwrap_or(1)),
        Ok(Exit::Signal(signal)) => {
            keepalive::supervise::die_by(signal);
            Ok(u8::try_from(128 + signal).unwrap_or(1))
        }
        Err(LaunchError::Other(e)) => Err(e.into()),
        Err(e) => {
            refuse(&e.to_string());
            Ok(e.exit_status().unwrap_or(1))
        }
    }
}

/// The policy and the flags that are the shim's options, as one injection. The policy given
/// whole (POLICY, or --policy) is written in the injection's grammar, as `KEEPALIVE_POLICY`
/// is: the socket options and `mode`, `ports`, `dest`, `log`, `inherit`. A key given there and
/// as its flag too (`mode=force` and `--force`) is refused as given twice.
fn injection(args: &RunArgs) -> anyhow::Result<Injection> {
    let given = &args.policy_args;
    // The key flags alone, through the shared checks (`--idle --count 5`, a bad value).
    let key_flags = PolicyArgs {
        policy: None,
        idle: given.idle.clone(),
        interval: given.interval.clone(),
        count: given.count.clone(),
        user_timeout: given.user_timeout.clone(),
    };
    let from_flags = key_flags.to_policy(None)?;
    let any_key_flag = [
        &given.idle,
        &given.interval,
        &given.count,
        &given.user_timeout,
    ]
    .iter()
    .any(|v| v.is_some());
    let whole = match (args.policy_text.as_deref(), given.policy.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(crate::UsageError::err(
                "the policy is given twice: as an argument and as --policy; give one",
            ));
        }
        (p, q) => p.or(q),
    };
    let mut injection = match whole {
        Some(_) if any_key_flag => {
            return Err(crate::UsageError::err(
                "give the policy either whole (--policy or POLICY) or as --idle/--interval/--count/--user-timeout, not both",
            ));
        }
        Some(text) => Injection::parse(text)?,
        None => {
            let mut injection = Injection::default();
            injection.policy = from_flags;
            injection
        }
    };
    let in_text = |key: Key| {
        whole.is_some_and(|text| {
            grammar::fields(text).any(|field| field.is_ok_and(|f| f.key() == key))
        })
    };
    let flags = [
        (Key::Mode, "--force", args.force.then_some("force")),
        (Key::Ports, "--ports", args.ports.as_deref()),
        (Key::Dest, "--dest", args.dest.as_deref()),
        (Key::Log, "--log", args.log.as_deref()),
        (
            Key::Inherit,
            "--no-inherit",
            args.no_inherit.then_some("no"),
        ),
    ];
    for (key, flag, value) in flags {
        if let Some(value) = value {
            if in_text(key) {
                return Err(crate::UsageError::err(format!(
                    "'{}' is given twice: in the policy and as {flag}; give one",
                    key.name()
                )));
            }
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
