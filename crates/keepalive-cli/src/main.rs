//! `keepalive`: parse arguments, call the library, render. Exit codes: 0 ok, 1 the thing checked
//! failed, 2 bad usage or input, 3 missing permission.

mod cgroup;
mod cli;
mod explain;
mod http;
mod lab;
mod live;
mod policy_args;
mod render;
mod run;
mod sysctl;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

/// A mistake in how the command was called, found by the command line itself.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    pub fn err(msg: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(UsageError(msg.into()))
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A privilege the command needs and does not have (exit code 3), found outside the library's
/// own error type.
#[derive(Debug)]
pub struct Denied(pub String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Denied {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version: on stdout, which may fail like any output.
            return match render::out(&e.render().to_string()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            };
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `keepalive` or `keepalive sysctl` alone: which subcommand is missing, then the
            // help that lists them, as git and cargo do.
            render::note(&format!(
                "keepalive: a subcommand is needed\n\n{}",
                e.render()
            ));
            return ExitCode::from(2);
        }
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => {
            render::note(&format!("keepalive: {}\n", not_utf8()));
            return ExitCode::from(2);
        }
        Err(e) => {
            render::note(&format!(
                "keepalive: {}\n",
                one_line(&e.render().ansi().to_string())
            ));
            return ExitCode::from(2);
        }
    };
    if let Command::Run(args) = &cli.command {
        // Through seccomp, keepalive exits with the program's status.
        return match run::run(args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => fail(&e),
        };
    }
    let result = match &cli.command {
        Command::Explain(args) => explain::run(args),
        Command::Sysctl(cmd) => sysctl::run(cmd),
        // Handled above: it has an exit status of its own.
        Command::Run(_) => Ok(()),
        Command::Status(args) => live::status(args),
        Command::Get(args) => live::get(args),
        Command::Set(args) => live::set(args),
        Command::Unset(args) => cgroup::unset(args),
        Command::Lab(args) => lab::run(args),
        Command::Http(args) => http::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Generated whole first: clap_complete panics on a failed write.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "keepalive", &mut script);
            render::out(&String::from_utf8_lossy(&script))
        }
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    };
    // A change the library began held Ctrl-C and SIGTERM back until it was reported, or its
    // error was: now a signal that came meanwhile ends the run.
    keepalive::signals::release();
    code
}

/// clap's "invalid UTF-8 was detected in one or more arguments", with the argument named:
/// the first one before `--` (a command after `run --` may be any bytes) that is not UTF-8.
fn not_utf8() -> String {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let bad = args
        .iter()
        .take_while(|a| a.as_os_str() != "--")
        .enumerate()
        .find(|(_, a)| a.to_str().is_none());
    match bad {
        Some((i, a)) => {
            use std::os::unix::ffi::OsStrExt;
            format!(
                "argument {} '{}' is not UTF-8: options and values are read as text (a command \
                 after `run --` may be any bytes)",
                i + 1,
                keepalive::printable::PrintableBytes(a.as_bytes())
            )
        }
        None => "an argument is not UTF-8: options and values are read as text".into(),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    // The reader went away (`| head -1`): nothing more to say, and nobody to say it to.
    if broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    // The library's messages already name their cause; print only the outermost.
    // A value quoted in it may hold control characters: escaped, the message stays one line.
    render::note(&format!("keepalive: {}\n", render::message(&e.to_string())));
    ExitCode::from(exit_code(e))
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Denied>().is_some() {
        return 3;
    }
    if e.downcast_ref::<UsageError>().is_some()
        || e.downcast_ref::<keepalive::PolicyError>().is_some()
    {
        return 2;
    }
    match e
        .downcast_ref::<keepalive::Error>()
        .map(keepalive::Error::class)
    {
        Some(keepalive::Class::BadInput) => 2,
        Some(keepalive::Class::Permission) => 3,
        _ => 1,
    }
}

/// Clap's errors span paragraphs (the message, tips, usage); keep the message, with any
/// control characters of a quoted value escaped, and the tips on one line.
fn one_line(text: &str) -> String {
    let mut parts = text.split("\n\n").map(str::trim).filter(|p| {
        !p.is_empty() && !p.starts_with("Usage:") && !p.starts_with("For more information")
    });
    let message = parts.next().unwrap_or("").trim_start_matches("error: ");
    // Clap indents what it lists under the message (the missing arguments): those lines join
    // the message; any other line break is a quoted value's own, and is shown escaped.
    let mut out = String::new();
    for (i, line) in message.split('\n').enumerate() {
        if i > 0 && line.starts_with(' ') {
            out.push(' ');
            out.push_str(&render::message(line.trim()));
        } else {
            if i > 0 {
                out.push_str("\\n");
            }
            out.push_str(&render::message(line));
        }
    }
    for tip in parts {
        for line in tip.lines().map(str::trim).filter(|l| !l.is_empty()) {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
            out.push_str(&render::message(line));
        }
    }
    out
}
