//! The command line, as clap sees it. Nothing here decides anything.

use crate::policy_args::PolicyArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Make TCP keepalive something you can set, inject, see, prove and tune.
#[derive(Debug, Parser)]
// Plain styles: clap's messages then carry no escape sequences of its own, and are rendered
// with the user's bytes kept (its stripping of styling also dropped a BEL or ESC the user
// typed), for main to escape.
#[command(name = "keepalive", version, max_term_width = 100, styles = clap::builder::Styles::plain())]
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
    /// Start an unmodified program with keepalive injected (LD_PRELOAD shim or seccomp).
    ///
    /// Exits with the program's own status. As with env(1), 127 means the program was not
    /// found (not in PATH, no such file, or its interpreter missing) and 126 that it was found
    /// but cannot be run (no execute permission, a directory, an exec format error); either
    /// comes with one line on stderr naming the program and what is wrong.
    Run(RunArgs),
    /// Every TCP connection with its keepalive state, timer, idle time and owner.
    Status(StatusArgs),
    /// The exact keepalive options of a running process's TCP sockets, or a cgroup's policy.
    Get(GetArgs),
    /// Set keepalive on a running process's sockets (pidfd_getfd), or on every connection of a
    /// cgroup, now and later (eBPF).
    Set(SetArgs),
    /// Remove a cgroup's keepalive policy: detach its programs, leave nothing pinned.
    Unset(UnsetArgs),
    /// Reproduce a peer state in throwaway network namespaces, capture it, measure it.
    Lab(LabArgs),
    /// What a server's HTTP keep-alive really does: idle timeout, requests per connection.
    Http(HttpArgs),
    /// Print a shell completion script (e.g. keepalive completions bash > /etc/bash_completion.d/keepalive).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// http://HOST[:PORT]/PATH or https://... (IPv6 as [ADDR], a zone as [ADDR%25IFACE])
    #[arg(value_name = "URL")]
    pub url: String,
    /// The whole run ends by then: every response, the idle waits and the counting.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub max_wait: String,
    /// Stop counting requests on one connection at this many.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub requests: u32,
    /// A load balancer, proxy or NAT in front of the server (an id from docs/middleboxes.tsv,
    /// e.g. aws-alb, aws-nlb): what the measurement means behind it.
    #[arg(long, value_name = "NAME")]
    pub behind: Option<String>,
    /// Trust the CA certificates in this PEM file instead of the system's store.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// Accept any TLS certificate (self-signed test servers).
    #[arg(long)]
    pub insecure: bool,
    /// Measure HTTP/2 in cleartext too, with prior knowledge (over TLS it is tried through
    /// ALPN without asking).
    #[arg(long, conflicts_with = "http1")]
    pub http2: bool,
    /// Measure HTTP/1.1 only.
    #[arg(long)]
    pub http1: bool,
    /// A header to send, 'Name: value', as curl's -H (repeatable; a Host header replaces the
    /// URL's, as with curl).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// GET or HEAD.
    #[arg(long, value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// Connect to HOST:PORT instead of the URL's host (one backend behind DNS or a load
    /// balancer); the Host header and TLS's server name stay the URL's.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect_to: Option<String>,
    /// Wait on N idle connections side by side (per version) and report the timeout's
    /// min, median and max.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub repeat: u32,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Scenarios: crash (default), alive, reboot, unreachable, firewall, busy, hung; --list describes them.\n\
                        Seed 002's experiment: keepalive lab crash --idle 30 --interval 10 --count 5"
)]
pub struct LabArgs {
    /// Which scenario (see --list).
    #[arg(value_name = "SCENARIO", conflicts_with = "scenario_file")]
    pub scenario: Option<String>,
    /// Run a scenario of your own: a TOML file with the keys the built-in ones have
    /// (crates/keepalive-lab/scenarios/*.toml).
    #[arg(long, value_name = "FILE")]
    pub scenario_file: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The server leaves keepalive off (firewall: the silent black hole; elsewhere the
    /// connection stays ESTABLISHED, for --duration).
    #[arg(long)]
    pub no_keepalive: bool,
    /// With --no-keepalive: how long to watch the connection nothing will ever check.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        requires = "no_keepalive"
    )]
    pub duration: String,
    /// Refuse, before starting, a run expected to take longer than this (the kernel's
    /// defaults take 2h11m15s to detect a dead peer).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        allow_hyphen_values = true
    )]
    pub max_duration: String,
    /// Run this program as the server, with the policy injected by the LD_PRELOAD shim (it
    /// must listen on port 8080), e.g. 'nc -l 8080': seed 002's experiment exactly. The words
    /// are split as a shell would (quotes, backslashes); no shell runs. The program and all it
    /// starts die with the lab.
    #[arg(long, value_name = "CMD")]
    pub server_cmd: Option<String>,
    /// Run this program as the client: it must connect to {server}:{port}, which the lab
    /// replaces with the server's address and 8080, e.g. 'nc {server} {port}' or
    /// 'socat - TCP:{server}:{port}'. Split as --server-cmd is; it dies with the lab.
    #[arg(long, value_name = "CMD")]
    pub client_cmd: Option<String>,
    /// Write every captured frame to FILE (pcap; Wireshark and tshark read it).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Draw the run's timeline to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List the scenarios and exit.
    #[arg(long, conflicts_with_all = ["scenario", "scenario_file", "pcap", "svg", "server_cmd", "client_cmd"])]
    pub list: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show the owning process of each socket (a /proc scan; like ss -p).
    #[arg(short = 'p', long)]
    pub processes: bool,
    /// Read each socket's true SO_KEEPALIVE, idle, interval, count and user timeout through a
    /// duplicate of its descriptor (needs ptrace-attach permission over its process).
    #[arg(long)]
    pub exact: bool,
    /// Only sockets of this process (and look in its network namespace).
    #[arg(long, value_name = "PID", allow_hyphen_values = true, value_parser = pid)]
    pub pid: Option<u32>,
    /// Only sockets with this local or remote port (repeatable, or comma-separated).
    #[arg(long, value_name = "PORT", value_delimiter = ',', allow_hyphen_values = true, value_parser = port)]
    pub port: Vec<u16>,
    /// Only these states (established, close-wait, listening, time-wait, ...; repeatable).
    #[arg(long, value_name = "STATE", value_delimiter = ',')]
    pub state: Vec<String>,
    /// Only connections with keepalive off.
    #[arg(long)]
    pub no_keepalive: bool,
    /// Listening sockets instead of connections.
    #[arg(long, conflicts_with = "state")]
    pub listening: bool,
    /// Look in this network namespace (a name from `ip netns list`, or /proc/PID/ns/net).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// A connection idle this long with keepalive off is flagged at risk.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5m",
        allow_hyphen_values = true
    )]
    pub idle_over: String,
    /// Print JSON instead of text.
    #[arg(long, conflicts_with_all = ["watch", "prometheus"])]
    pub json: bool,
    /// Refresh in place every SECONDS (default 2) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2", value_parser = seconds, allow_hyphen_values = true, conflicts_with = "prometheus")]
    pub watch: Option<u64>,
    /// With --watch, stop after this many refreshes.
    #[arg(long, value_name = "N", requires = "watch", value_parser = count)]
    pub iterations: Option<u64>,
    /// Write node-exporter textfile metrics to FILE (atomically) instead of printing.
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
}

/// A cgroup, by path or by a process in it.
#[derive(Debug, Args)]
pub struct CgroupTarget {
    /// A cgroup v2 directory (a container's or a systemd service's, e.g.
    /// /sys/fs/cgroup/system.slice/nginx.service): every process in it and below.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// The cgroup process PID lives in (a container's main PID, a service's MainPID).
    #[arg(long, value_name = "PID", conflicts_with = "cgroup", allow_hyphen_values = true, value_parser = pid)]
    pub cgroup_of: Option<u32>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid", "cgroup", "cgroup_of"])))]
pub struct GetArgs {
    /// The process: the exact options of each of its TCP sockets.
    #[arg(long, value_name = "PID", allow_hyphen_values = true, value_parser = pid)]
    pub pid: Option<u32>,
    #[command(flatten)]
    pub target: CgroupTarget,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    group(clap::ArgGroup::new("target").required(true).args(["pid", "cgroup", "cgroup_of"])),
    after_help = "Examples:\n  keepalive set --pid 1234 --all --idle 60 --interval 10 --count 5\n  \
                  keepalive set --cgroup-of $(pidof myserver) --force --idle 60 --interval 10 --count 5"
)]
pub struct SetArgs {
    /// The process: change the sockets it holds now (listeners pass the policy on to the
    /// connections they accept later; the program's own setsockopt calls still win).
    #[arg(long, value_name = "PID", allow_hyphen_values = true, value_parser = pid)]
    pub pid: Option<u32>,
    /// With --pid: only this descriptor.
    #[arg(long, value_name = "N", requires = "pid", conflicts_with = "all", allow_hyphen_values = true, value_parser = fd)]
    pub fd: Option<i32>,
    /// With --pid: every TCP socket of the process, listeners included.
    #[arg(long, requires = "pid")]
    pub all: bool,
    /// Every TCP connection of a cgroup's processes, now and later (eBPF; needs CAP_BPF and
    /// CAP_NET_ADMIN, Linux 5.9).
    #[command(flatten)]
    pub target: CgroupTarget,
    /// With a cgroup: the processes' own setsockopt calls for the policy's options report
    /// success and change nothing (beats Go's 15 s, redis's tcp-keepalive...).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// With --pid: switch keepalive on (with the policy's values, or the socket's own when none
    /// is given) or off (SO_KEEPALIVE 0; the values stay).
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    pub keepalive: Option<String>,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["cgroup", "cgroup_of"])))]
pub struct UnsetArgs {
    #[command(flatten)]
    pub target: CgroupTarget,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example: keepalive run --idle 30 --interval 10 --count 5 -- nc -l 8080\n\
                  Through the shim the program keeps its pid, exit code and signals: keepalive execs it.\n\
                  Through seccomp keepalive stays the parent: it passes signals on to the program\n\
                  and exits with the program's exit status (or dies by the same signal)."
)]
pub struct RunArgs {
    /// A policy such as idle=30s,interval=10s,count=5,mode=force (same as --policy), in
    /// KEEPALIVE_POLICY's grammar: the socket options and mode, ports, dest, log, inherit.
    /// Keys left out keep the kernel's defaults; with none at all, keepalive is simply
    /// switched on.
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

    /// Report what the shim or the supervisor does: syslog, or an absolute file path (default:
    /// off). The file's directory must exist and let this user create or append to it; a
    /// symbolic link is refused (the shim never opens its log through one).
    #[arg(long, value_name = "TARGET")]
    pub log: Option<String>,

    /// Keep the policy out of the programs CMD starts (the shim takes itself out of their
    /// LD_PRELOAD, while KEEPALIVE_POLICY stays in their environment, unused without the shim;
    /// the seccomp supervisor lets their calls run untouched).
    #[arg(long)]
    pub no_inherit: bool,

    /// Print the LD_PRELOAD and KEEPALIVE_POLICY settings instead of running anything (for
    /// systemd units, /etc/ld.so.preload setups, or scripts; the shim only). Takes no CMD.
    #[arg(long)]
    pub print_env: bool,

    /// How the policy reaches the program: shim (LD_PRELOAD, dynamic programs), seccomp (a
    /// supervisor that traps connect and listen: static and Go programs, anything), or auto:
    /// the shim for a dynamically linked program, seccomp for static and Go programs and for
    /// scripts (a wrapper may exec either).
    #[arg(long, value_enum, value_name = "HOW", default_value = "auto")]
    pub via: Via,

    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "CMD", required_unless_present = "print_env", value_hint = clap::ValueHint::CommandWithArguments)]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    Shim,
    Seccomp,
    Auto,
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

/// A TCP port a socket can have: 1 to 65535.
fn port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| match text {
            "" => "an empty port (a stray comma?): expected 1 to 65535".to_owned(),
            _ => format!("'{text}' is not a port: expected 1 to 65535"),
        })
}

/// Whole seconds, 1 or more.
fn seconds(text: &str) -> Result<u64, String> {
    text.parse::<u64>().ok().filter(|&s| s != 0).ok_or_else(|| {
        format!("'{text}' is not a number of seconds: expected a whole number, 1 or more")
    })
}

/// A count, 1 or more.
fn count(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|&n| n != 0)
        .ok_or_else(|| format!("'{text}' is not a count: expected a whole number, 1 or more"))
}

/// A process id as the command line gives one: a whole number from 1 to below kernel.pid_max,
/// refused here with the range (a negative number too, which clap would take for a flag).
/// A file descriptor number, 0 or more.
fn fd(text: &str) -> Result<i32, String> {
    text.parse::<i32>()
        .ok()
        .filter(|&fd| fd >= 0)
        .ok_or_else(|| format!("'{text}' is not a file descriptor: expected a number, 0 or more"))
}

fn pid(text: &str) -> Result<u32, String> {
    let max = keepalive::process::pid_max();
    text.parse::<u64>()
        .ok()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|&p| p >= 1 && u64::from(p) < max)
        .ok_or_else(|| {
            format!(
                "'{text}' is not a process id: expected 1 to {} (kernel.pid_max)",
                max - 1
            )
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
