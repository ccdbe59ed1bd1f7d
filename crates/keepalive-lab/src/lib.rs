//! The keepalive lab: build a throwaway network in namespaces, connect a client to a server
//! that runs a keepalive policy, make the peer fail the way a scenario says, capture what
//! crosses the wire, and measure it against the kernel's rules.
//!
//! Everything happens inside namespaces this process creates and that die with it; the host's
//! network is never touched. A run goes through its stages in order, each a module:
//! `build` (hosts, links, sysctls, firewall), `connect` (the two ends), `fault`, `wait`
//! (watching, live), `analysis` and `verdict` (what the wire shows, against theory), and
//! `report`.

pub mod analysis;
mod build;
pub mod capture;
mod client;
mod clock;
mod connect;
mod fault;
mod netlink;
pub mod pcap;
mod program;
pub mod report;
pub mod scenario;
mod server;
pub mod svg;
pub mod topology;
pub mod verdict;
mod wait;

use capture::Capture;
use clock::now_ns;
use keepalive::Policy;
pub use report::{Event, ProbeReport, Report, What, describe};
pub use scenario::Ending;
use scenario::{Fault, Scenario};
use std::time::Duration;
pub use verdict::{
    HZ, HeartbeatReport, Measure, TOLERANCE_S, errno_name, expected_ending, tolerance_s,
    watch_window,
};
pub use wait::Live;

/// The port the lab's server listens on.
pub const PORT: u16 = 8080;

/// The longest `max_duration` may be: a run expected to take longer cannot be made.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Why a run could not be made; the class says which exit code it earns.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "creating the lab's network namespaces failed: {0} (needs root, or unprivileged user namespaces)"
    )]
    Namespace(String),
    /// A program the lab needs is missing (nft for the firewall).
    #[error("{0}")]
    Tool(String),
    #[error("capture: {0}")]
    Capture(String),
    #[error("{0}")]
    Run(String),
    /// What the caller asked for cannot be done as asked (exit code 2).
    #[error("{0}")]
    BadInput(String),
    /// A privilege is missing (exit code 3).
    #[error("{0}")]
    Permission(String),
    #[error(transparent)]
    Policy(#[from] keepalive::PolicyError),
}

/// What to run.
pub struct Options {
    pub scenario: Scenario,
    /// Keys over the scenario's policy (each one given replaces the scenario's); `None` runs
    /// the scenario's as it is.
    pub policy: Option<Policy>,
    /// The server leaves keepalive off (for `firewall`: the silent black hole).
    pub no_keepalive: bool,
    /// Called as the run goes: what the wire shows as it shows it, and the time now and then.
    pub live: Option<Box<dyn Fn(Live)>>,
    /// How long to watch a connection that is expected to stay open because nothing would
    /// notice (keepalive off).
    pub duration: Duration,
    /// A run expected to take longer (the wait for the fault, then the watch) is refused
    /// before it starts; at most [`MAX_DURATION`].
    pub max_duration: Duration,
    /// Run this command (words as a POSIX shell splits them, no shell involved; `{port}` is
    /// the lab's port) as the server instead of the built-in one, with the policy injected by
    /// the LD_PRELOAD shim; it must listen on port 8080.
    pub server_cmd: Option<String>,
    /// Run this command as the client instead of the built-in one; it must connect to
    /// `{server}:{port}` (the server's address in the scenario's topology, and 8080).
    pub client_cmd: Option<String>,
}

/// Whether the lab can build its network here as it is: as root (or root of a user namespace
/// the process entered, [`enter_user_namespace`]).
pub fn privileged_enough() -> bool {
    rustix::process::geteuid().is_root()
}

/// Without root: makes this process root of a user namespace of its own (uid and gid mapped to
/// the caller's, no supplementary groups), in which the lab's network namespaces, veths,
/// capture sockets and sysctls are its to make. Must run before the process starts a thread:
/// the kernel refuses CLONE_NEWUSER to a multithreaded process.
pub fn enter_user_namespace() -> Result<(), LabError> {
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    // SAFETY: called while the process has one thread, so no other thread sees its
    // credentials change under it.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER) }.map_err(
        |e| {
            LabError::Permission(format!(
                "not root, and unprivileged user namespaces are not available ({e}); run as root, \
                 or allow them (sysctl kernel.unprivileged_userns_clone=1, or \
                 kernel.apparmor_restrict_unprivileged_userns=0)"
            ))
        },
    )?;
    // A user namespace's maps are written once; setgroups must be denied before an
    // unprivileged gid_map (user_namespaces(7)).
    for (file, text) in [
        ("/proc/self/setgroups", "deny".to_owned()),
        ("/proc/self/uid_map", format!("0 {uid} 1")),
        ("/proc/self/gid_map", format!("0 {gid} 1")),
    ] {
        std::fs::write(file, text)
            .map_err(|e| LabError::Namespace(format!("writing {file}: {e}")))?;
    }
    Ok(())
}

/// Runs a scenario. Blocks for its duration (seconds, for the built-in policies).
pub fn run(options: Options) -> Result<Report, LabError> {
    let scenario = &options.scenario;
    // The command line's keys over the scenario's: `--idle 7` changes idle and nothing else.
    let base = Policy::parse(&scenario.policy)?;
    let policy = options.policy.map_or(base, |p| p.over(&base));
    let keepalive_on = !options.no_keepalive;
    let window = watch_window(scenario, &policy, keepalive_on, options.duration)?;
    // The run waits for the fault first (the scenario's fault_after), then watches.
    let to_fault = scenario.fault_after().as_secs_f64();
    let needed = to_fault + window;
    if needed > options.max_duration.as_secs_f64() {
        let what = if keepalive_on {
            format!("policy {policy}")
        } else {
            "keepalive off".to_owned()
        };
        let parts = if to_fault >= 1.0 {
            format!(
                " ({:.0} s to the fault, then about {:.0} s of watching)",
                to_fault.ceil(),
                window.ceil()
            )
        } else {
            String::new()
        };
        if needed > MAX_DURATION.as_secs_f64() {
            return Err(LabError::BadInput(format!(
                "this run ({what}) would take about {:.0} s{parts}, more than the {} h limit \
                 of --max-duration: it cannot run in the lab; give a shorter policy{}",
                needed.ceil(),
                MAX_DURATION.as_secs() / 3600,
                if to_fault >= 1.0 {
                    " or fault_after"
                } else {
                    ""
                }
            )));
        }
        return Err(LabError::BadInput(format!(
            "this run ({what}) would take about {:.0} s{parts}, more than --max-duration {} \
             allows; raise --max-duration to run it (up to {} h)",
            needed.ceil(),
            // As given: 1500ms is not "2 s".
            match options.max_duration.subsec_millis() {
                0 => format!("{} s", options.max_duration.as_secs()),
                _ => format!("{} ms", options.max_duration.as_millis()),
            },
            MAX_DURATION.as_secs() / 3600,
        )));
    }
    let programs = connect::programs(&options, policy, keepalive_on)?;
    let start_ns = now_ns();
    let secs = move |ns: u128| ns.saturating_sub(start_ns) as f64 / 1e9;
    let mut events: Vec<Event> = Vec::new();
    let mut note = |t: f64, what: What| events.push(Event { t, what });

    let (net, firewall_s) = build::build(scenario)?;
    if let Some(timeout_s) = firewall_s {
        note(secs(now_ns()), What::Firewall { timeout_s });
    }
    let capture = Capture::start(&net.server, net.server_if)?;

    let mut ends = connect::connect(&net, scenario, policy, keepalive_on, programs, start_ns)?;
    note(
        secs(ends.client.connected_ns),
        What::Connected {
            client: net.client_ip,
            server: std::net::SocketAddrV4::new(net.server_ip, PORT),
            program: ends.client.program.clone(),
        },
    );
    std::thread::sleep(scenario.fault_after());

    let fault_t = secs(now_ns());
    fault::fault(&net, scenario.fault, &mut ends.client)?;
    if scenario.fault != Fault::None {
        note(
            fault_t,
            What::Fault {
                fault: scenario.fault,
            },
        );
    }
    if scenario.send_after_fault {
        std::thread::sleep(Duration::from_millis(100));
        ends.server_sends(1000);
        note(secs(now_ns()), What::ServerSends { bytes: 1000 });
    }

    let watch = wait::Watch {
        capture: &capture,
        start_ns,
        server: std::net::SocketAddrV4::new(net.server_ip, PORT),
        client: net.client_ip,
        live: options.live.as_deref(),
    };
    let watched = wait::watch(&watch, window, &mut ends, firewall_s.is_some());
    if ends.server_done() {
        // The client's program may be why: give its watcher (20 ms) time to see it exit.
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some((at, status)) = ends.client.program_exit() {
        note(
            secs(at),
            What::ProgramExited {
                end: "client".into(),
                status,
            },
        );
    }
    let (side, client) = ends.stop_server()?;
    // Stop capturing before the client's socket goes: closing it with unread data sends RST.
    let frames = capture.stop()?;
    drop(client);
    // hung needs a client that answers: one that never did cannot show a heartbeat noticing
    // it stop.
    if let Some(cmd) = &options.client_cmd
        && connect::heartbeat(scenario).is_some()
        && side.heartbeats_sent > 0
        && side.heartbeats_answered == 0
    {
        return Err(LabError::BadInput(format!(
            "--client-cmd '{cmd}' never answered the server's \"ping\" with \"pong\" before the \
             fault: in scenario '{}' the client must, e.g. 'socat TCP:{{server}}:{{port}} \
             EXEC:\"sed -u s/ping/pong/\"'",
            scenario.name
        )));
    }
    let seen = report::Seen {
        events,
        side,
        frames,
        watched,
        heartbeat: connect::heartbeat(scenario),
        fault_t,
        firewall_s,
        start_ns,
        end_ns: now_ns(),
    };
    Ok(report::report(scenario, &net, keepalive_on, seen))
}
