//! The command line, as clap sees it. Nothing here decides anything.

use crate::policy_args::PolicyArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Make TCP keepalive something you can set, inject, see, prove and tune.
#[derive(Debug, Parser)]
#[command(name = "keepalive", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe timeline and time to detect a dead peer, for a policy or the kernel's defaults.
    Explain(ExplainArgs),
    /// The kernel's keepalive defaults, per network namespace.
    #[command(subcommand)]
    Sysctl(SysctlCommand),
    /// Start an unmodified program with keepalive injected through the LD_PRELOAD shim.
    Run(RunArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: keepalive run --idle 30 --interval 10 --count 5 -- nc -l 8080\n\
                  The program keeps its pid, exit code and signals: keepalive execs it."
)]
pub struct RunArgs {
    /// A policy such as idle=30s,interval=10s,count=5 (same as --policy). Keys left out keep
    /// the kernel's defaults; with none at all, keepalive is simply switched on.
    #[arg(value_name = "POLICY")]
    pub policy_text: Option<String>,

    #[command(flatten)]
    pub policy_args: PolicyArgs,

    /// The program cannot turn keepalive off or change the policy's options: its setsockopt
    /// calls for them report success and do nothing.
    #[arg(long)]
    pub force: bool,

    /// Only sockets listening on, or connecting to, these ports (e.g. 5432,6379 or 8000-8099).
    #[arg(long, value_name = "LIST")]
    pub ports: Option<String>,

    /// Only connections to these addresses or networks (e.g. 198.18.0.0/15,::1).
    #[arg(long, value_name = "LIST")]
    pub dest: Option<String>,

    /// Report what the shim does: syslog, or an absolute file path (default: off).
    #[arg(long, value_name = "TARGET")]
    pub log: Option<String>,

    /// Keep the shim out of the programs CMD starts.
    #[arg(long)]
    pub no_inherit: bool,

    /// Print the LD_PRELOAD and KEEPALIVE_POLICY settings instead of running anything (for
    /// systemd units, /etc/ld.so.preload setups, or scripts).
    #[arg(long)]
    pub print_env: bool,

    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD", required_unless_present = "print_env")]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A policy such as idle=60s,interval=10s,count=5 (same as --policy). Keys left out come from
    /// the kernel's defaults (or --os's). Without one, the defaults themselves are explained.
    #[arg(value_name = "POLICY")]
    pub policy_text: Option<String>,

    #[command(flatten)]
    pub policy_args: PolicyArgs,

    /// Explain another operating system's defaults (seed 003's table).
    #[arg(long, value_enum, conflicts_with = "netns")]
    pub os: Option<Os>,

    /// Take the defaults from this network namespace (a name from `ip netns list`).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Os {
    Linux,
    Freebsd,
    Macos,
    Windows,
}

impl Os {
    pub fn id(self) -> &'static str {
        match self {
            Os::Linux => "linux",
            Os::Freebsd => "freebsd",
            Os::Macos => "macos",
            Os::Windows => "windows",
        }
    }
}

/// Where the sysctls live.
#[derive(Debug, Args)]
pub struct NetnsArg {
    /// Act inside this network namespace (a name from `ip netns list`, or a path such as
    /// /proc/PID/ns/net) instead of the current one.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SysctlCommand {
    /// The values, where they come from, and how long a dead peer goes unnoticed.
    Show(NetnsArg),
    /// Write new defaults: all keys or none (a failed write puts the earlier ones back).
    Set {
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        target: NetnsArg,
    },
    /// Write a sysctl.d drop-in so the values survive a reboot (keys left out: the live values).
    Persist {
        #[command(flatten)]
        policy: PolicyArgs,
        /// The sysctl.d directory to write into.
        #[arg(long, value_name = "DIR", default_value = "/etc/sysctl.d")]
        dir: PathBuf,
        #[command(flatten)]
        target: NetnsArg,
    },
    /// Put the keepalive sysctls back to the kernel's compiled-in defaults (7200/75/9).
    Reset(NetnsArg),
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
