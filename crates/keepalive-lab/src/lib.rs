//! The keepalive lab: build a throwaway network in namespaces, connect a client to a server
//! that runs a keepalive policy, make the peer fail the way a scenario says, capture what
//! crosses the wire, and measure it against the library's theory.
//!
//! Everything happens inside namespaces this process creates and that die with it; the host's
//! network is never touched.

pub mod analysis;
pub mod capture;
mod client;
mod clock;
mod netlink;
pub mod pcap;
pub mod scenario;
mod server;
pub mod svg;
pub mod topology;
pub mod verdict;

use analysis::Segment;
use capture::{Capture, Frame};
use client::Responder;
use clock::now_ns;
use keepalive::policy::timeline::ProbeTimeline;
use keepalive::{Policy, Settings};
pub use scenario::Ending;
use scenario::{Fault, Scenario, Topology};
use server::{ServerProgram, ToServer, serve, serve_program};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use topology::Net;
pub use verdict::{
    HZ, HeartbeatReport, Measure, TOLERANCE_S, errno_name, expected_ending, tolerance_s,
    watch_window,
};
use verdict::{ending_of, measure};

/// The port the lab's server listens on.
pub const PORT: u16 = 8080;
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "creating the lab's network namespaces failed: {0} (needs root, or unprivileged user namespaces)"
    )]
    Namespace(String),
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
    /// The server's policy; `None` takes the scenario's.
    pub policy: Option<Policy>,
    /// The server leaves keepalive off (for `firewall`: the silent black hole).
    pub no_keepalive: bool,
    /// Called as the run goes: what the wire shows as it shows it, and the time now and then.
    pub live: Option<Box<dyn Fn(Live)>>,
    /// How long to watch a connection that is expected to stay open because nothing would
    /// notice (keepalive off).
    pub duration: Duration,
    /// A run expected to take longer is refused before it starts.
    pub max_duration: Duration,
    /// Run this command (words as a POSIX shell splits them, no shell involved) as the server
    /// instead of the built-in one, with the policy injected by the LD_PRELOAD shim; it must
    /// listen on port 8080.
    pub server_cmd: Option<String>,
}

/// What a run shows while it goes on (times in seconds since the lab started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Live {
    /// Keepalive probe `n` went out, `since_rx` after the peer last spoke.
    Probe {
        n: usize,
        t: f64,
        since_rx: Option<f64>,
    },
    /// The server sent unacknowledged data again (retransmission `n`).
    Retransmission { n: usize, t: f64 },
    /// A reset crossed the wire.
    Reset { t: f64, by_server: bool },
    /// Still watching: `t` of about `expected` seconds.
    Waiting { t: f64, expected: f64 },
}

/// What happened, as data: the CLI words it, the SVG draws it, `--json` carries its fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum What {
    /// The router's firewall is set to forget idle connections after `timeout_s`.
    Firewall { timeout_s: u64 },
    /// The client connected and sent its greeting.
    Connected {
        client: Ipv4Addr,
        server: SocketAddrV4,
    },
    /// The scenario's fault happened.
    Fault { fault: Fault },
    /// The server sent data the client will never acknowledge.
    ServerSends { bytes: usize },
    /// The client sent `text`.
    ClientSends { text: String },
    /// The server's program read `text`.
    ServerReads { text: String },
    /// A router answered with ICMP destination unreachable (code), which TCP ignores for probes.
    Icmp { code: u8 },
    /// The server gave up and sent RST.
    ServerReset,
    /// The server's read failed with this errno.
    ServerError { errno: String },
    /// The application's heartbeat declared the peer dead after `misses` unanswered pings.
    HeartbeatDead { misses: usize },
}

/// One line of the timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    /// Seconds since the lab started.
    pub t: f64,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub summary: String,
    pub seed: String,
    pub topology: Topology,
    /// The settings the server's connection ran on, read back from its socket.
    pub policy: String,
    pub settings: Settings,
    pub keepalive: bool,
    pub client: Ipv4Addr,
    pub server: SocketAddrV4,
    pub events: Vec<Event>,
    pub probes: Vec<ProbeReport>,
    pub retransmissions: usize,
    pub ending: Ending,
    /// The error the server's program saw, if any.
    pub error: Option<String>,
    pub expected: Ending,
    pub detection: Option<Measure>,
    /// Application heartbeats the server sent that went unanswered (`hung`).
    pub heartbeats_unanswered: Option<usize>,
    /// When the application's heartbeat declared the peer dead, measured from the fault, and
    /// in theory (`hung`).
    pub heartbeat: Option<HeartbeatReport>,
    pub duration_s: f64,
    #[serde(skip)]
    pub frames: Vec<Frame>,
    #[serde(skip)]
    pub start_ns: u128,
}

/// A probe with its theory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    pub n: usize,
    pub t: f64,
    /// Seconds after the last segment from the peer.
    pub after_last_rx: Option<f64>,
    pub theory: f64,
    pub seq: u32,
    pub answered: bool,
}

impl Report {
    /// The outcome is the one the scenario and policy call for, and every time is within
    /// tolerance of theory.
    pub fn as_expected(&self) -> bool {
        self.ending == self.expected
            && self.detection.as_ref().is_none_or(|d| d.within_tolerance)
            && self
                .heartbeat
                .as_ref()
                .is_none_or(HeartbeatReport::as_theory_says)
    }
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

/// Tells `live` what the wire shows that it has not been told yet: probes, retransmissions
/// and resets so far (`shown` counts what was told).
fn show_live(
    live: &dyn Fn(Live),
    capture: &Capture,
    start_ns: u128,
    server: SocketAddrV4,
    client: Ipv4Addr,
    shown: &mut (usize, usize, bool, bool),
) {
    let found = analysis::findings(&analysis::parse(
        &capture.so_far(),
        start_ns,
        server,
        client,
    ));
    for p in found.probes.iter().skip(shown.0) {
        live(Live::Probe {
            n: p.n,
            t: p.t,
            since_rx: p.since_rx,
        });
    }
    for (i, t) in found.retransmissions.iter().enumerate().skip(shown.1) {
        live(Live::Retransmission { n: i + 1, t: *t });
    }
    for (seen, at, by_server) in [
        (&mut shown.2, found.server_rst, true),
        (&mut shown.3, found.client_rst, false),
    ] {
        if let (false, Some(t)) = (*seen, at) {
            *seen = true;
            live(Live::Reset { t, by_server });
        }
    }
    shown.0 = found.probes.len();
    shown.1 = found.retransmissions.len();
}

/// The scenario's hosts and links, and its server's sysctls and router's firewall; the
/// firewall's event, when there is one.
fn build(scenario: &Scenario) -> Result<(Net, Option<What>), LabError> {
    let net = match scenario.topology {
        Topology::Pair => Net::pair()?,
        Topology::Router => Net::router()?,
    };
    if let Some(r) = scenario.retries2 {
        net.server.sysctl("net.ipv4.tcp_retries2", &r.to_string())?;
    }
    let mut firewall = None;
    if let (Some(router), Some(timeout_ms)) = (&net.router, scenario.firewall_timeout_ms()) {
        // Forward only what conntrack knows; a connection it forgot is invalid, and dropped.
        router.nft(
            "table inet lab {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n  \
             ct state established,related accept\n  ct state new tcp flags & (syn | ack | fin | rst) == syn accept\n  \
             ct state invalid drop\n }\n}\n",
        )?;
        router.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")?;
        router.sysctl(
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            &(timeout_ms / 1000).max(1).to_string(),
        )?;
        firewall = Some(What::Firewall {
            timeout_s: timeout_ms / 1000,
        });
    }
    Ok((net, firewall))
}

/// Runs a scenario. Blocks for its duration (seconds, for the built-in policies).
pub fn run(options: Options) -> Result<Report, LabError> {
    let scenario = &options.scenario;
    let policy = match &options.policy {
        Some(p) => *p,
        None => Policy::parse(&scenario.policy)?,
    };
    let keepalive_on = !options.no_keepalive;
    let start_ns = now_ns();
    let secs = move |ns: u128| ns.saturating_sub(start_ns) as f64 / 1e9;
    let mut events: Vec<Event> = Vec::new();
    let mut note = |t: f64, what: What| events.push(Event { t, what });

    let expected_s = watch_window(scenario, &policy, keepalive_on, options.duration)?;
    if expected_s > options.max_duration.as_secs_f64() {
        return Err(LabError::BadInput(format!(
            "this run would take about {:.0} s, more than --max-duration {:.0} s allows; raise \
             --max-duration to run it",
            expected_s.ceil(),
            options.max_duration.as_secs_f64()
        )));
    }
    if scenario.firewall_timeout_ms().is_some() {
        topology::require_nft()?;
    }
    let (net, firewall) = build(scenario)?;
    if let Some(what) = firewall {
        note(secs(now_ns()), what);
    }
    let server_addr = SocketAddrV4::new(net.server_ip, PORT);
    let capture = Capture::start(&net.server, net.server_if)?;

    // The server: a listener with the policy; accepted connections inherit it.
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (cmd_tx, cmd_rx) = mpsc::channel::<ToServer>();
    let heartbeat = if scenario.fault == Fault::Freeze {
        scenario
            .heartbeat_ms()
            .map(|ms| (ms, scenario.heartbeat_misses.unwrap_or(3) as usize))
    } else {
        None
    };
    if options.server_cmd.is_some() && (scenario.send_after_fault || heartbeat.is_some()) {
        return Err(LabError::BadInput(format!(
            "--server-cmd runs a program that only waits; scenario '{}' needs the built-in server to send",
            scenario.name
        )));
    }
    let program = match &options.server_cmd {
        Some(cmd) => Some(ServerProgram::new(cmd, policy, keepalive_on)?),
        None => None,
    };
    let server = net.server.spawn(move || match program {
        Some(program) => serve_program(&program, server_addr, ready_tx, cmd_rx, start_ns),
        None => serve(
            server_addr,
            policy,
            keepalive_on,
            heartbeat,
            ready_tx,
            cmd_rx,
            start_ns,
        ),
    })?;
    match ready_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(LabError::Run(format!("server: {e}"))),
        Err(_) => return Err(LabError::Run("the server did not start within 10 s".into())),
    }

    // The client connects and says hello.
    let client = net
        .client
        .spawn(move || -> std::io::Result<(TcpStream, u128)> {
            let mut s = TcpStream::connect_timeout(&server_addr.into(), Duration::from_secs(10))?;
            let at = now_ns();
            s.write_all(b"hello\n")?;
            Ok((s, at))
        })?
        .join()
        .map_err(|_| LabError::Run("client thread panicked".into()))??
        .map_err(|e| LabError::Run(format!("client: connecting to {server_addr}: {e}")))?;
    let (client, connected_ns) = client;
    // For `hung`, the client's program is a process of its own that answers each ping with a
    // pong until the fault stops it (SIGSTOP); its kernel goes on answering TCP.
    let responder = match scenario.fault {
        Fault::Freeze => Some(
            Responder::start(&client).map_err(|e| LabError::Run(format!("client program: {e}")))?,
        ),
        _ => None,
    };
    note(
        secs(connected_ns),
        What::Connected {
            client: net.client_ip,
            server: server_addr,
        },
    );
    std::thread::sleep(scenario.fault_after());

    // The fault.
    let fault_t = secs(now_ns());
    let mut client = Some(client);
    client::fault(&net, scenario.fault, &mut client, responder.as_ref())?;
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
        let _ = cmd_tx.send(ToServer::Send(1000));
        note(secs(now_ns()), What::ServerSends { bytes: 1000 });
    }

    let window = watch_window(scenario, &policy, keepalive_on, options.duration)?;
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs_f64(window);
    let mut shown = (0, 0, false, false);
    while Instant::now() < deadline && !server.is_finished() {
        if let Some(live) = &options.live {
            show_live(
                live,
                &capture,
                start_ns,
                server_addr,
                net.client_ip,
                &mut shown,
            );
            live(Live::Waiting {
                t: begin.elapsed().as_secs_f64(),
                expected: window,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // An idle firewall path, or a black hole: does the client's data still arrive?
    let mut probe_sent_t = None;
    if scenario.firewall_timeout.is_some()
        && !server.is_finished()
        && let Some(c) = client.as_mut()
    {
        let _ = c.write_all(b"still there?\n");
        probe_sent_t = Some(secs(now_ns()));
        note(
            probe_sent_t.unwrap_or(0.0),
            What::ClientSends {
                text: "still there?".into(),
            },
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // What the lab does from here on (its server closing, the client's kernel answering that
    // with RST when its socket is gone) is not the run's.
    let watched_until = secs(now_ns());
    let _ = cmd_tx.send(ToServer::Stop);
    let side = server
        .join()
        .map_err(|_| LabError::Run("server thread panicked".into()))??
        .map_err(|e| LabError::Run(format!("server: {e}")))?;
    // Stop capturing before the client's socket goes: closing it with unread data sends RST.
    let frames = capture.stop()?;
    drop(responder);
    drop(client);
    let end_ns = now_ns();

    let wire = analysis::parse(&frames, start_ns, server_addr, net.client_ip);
    let mut found = analysis::findings(&wire);
    found.server_rst = found.server_rst.filter(|&t| t <= watched_until);
    found.client_rst = found.client_rst.filter(|&t| t <= watched_until);
    let settings = side.settings;
    let timeline = ProbeTimeline::silent_peer(&settings);

    let mut report_events = events;
    for icmp in wire.icmp.iter().filter(|i| i.kind == 3) {
        report_events.push(Event {
            t: icmp.t,
            what: What::Icmp { code: icmp.code },
        });
    }
    for (t, data) in &side.received {
        report_events.push(Event {
            t: *t,
            what: What::ServerReads {
                text: String::from_utf8_lossy(data).trim().to_owned(),
            },
        });
    }
    let (ending, error) = ending_of(&side, &found, probe_sent_t);
    let expected = expected_ending(scenario, &settings, keepalive_on);
    let detection = measure(&found, &side, &settings, scenario, ending, &net);
    if let Some(t) = found.server_rst {
        report_events.push(Event {
            t,
            what: What::ServerReset,
        });
    }
    if let (Some(t), Some((_, misses))) = (side.declared_dead, heartbeat) {
        report_events.push(Event {
            t,
            what: What::HeartbeatDead { misses },
        });
    }
    if let Some((t, e)) = &side.error {
        report_events.push(Event {
            t: *t,
            what: What::ServerError {
                errno: errno_name(e),
            },
        });
    }
    let probes = found
        .probes
        .iter()
        .map(|p| ProbeReport {
            n: p.n,
            t: p.t,
            after_last_rx: p.since_rx,
            // Each answered probe restarts the timer: the next comes `idle` after the answer.
            theory: timeline.probe_at(p.in_run as u64).as_secs_f64(),
            seq: p.seq,
            answered: p.answered,
        })
        .collect();
    report_events.sort_by(|a, b| a.t.total_cmp(&b.t));
    Ok(Report {
        scenario: scenario.name.clone(),
        summary: scenario.summary.clone(),
        seed: scenario.seed.clone(),
        topology: scenario.topology,
        policy: Policy::from_settings(&settings)
            .map_or_else(|_| format!("{settings:?}"), |p| p.to_string()),
        settings,
        keepalive: keepalive_on,
        client: net.client_ip,
        server: server_addr,
        events: report_events,
        probes,
        retransmissions: found.retransmissions.len(),
        ending,
        error,
        expected,
        detection,
        heartbeat: heartbeat.map(|(ms, misses)| {
            let interval = ms as f64 / 1000.0;
            let first_after = side.pings.iter().copied().find(|&p| p > fault_t);
            HeartbeatReport {
                interval_s: interval,
                misses,
                declared_s: side.declared_dead.map(|t| t - fault_t),
                theory_s: first_after.map(|p| p + misses as f64 * interval - fault_t),
                tolerance_s: 0.05 + 1.0 / HZ as f64,
            }
        }),
        heartbeats_unanswered: heartbeat.map(|_| {
            side.heartbeats_sent
                .saturating_sub(side.heartbeats_answered)
        }),
        duration_s: (end_ns - start_ns) as f64 / 1e9,
        frames,
        start_ns,
    })
}

/// Segments as timeline lines, for renderers that want the wire too.
pub fn describe(s: &Segment) -> String {
    let mut flags = Vec::new();
    for (bit, name) in [
        (analysis::SYN, "SYN"),
        (analysis::FIN, "FIN"),
        (analysis::RST, "RST"),
        (analysis::ACK, "ACK"),
    ] {
        if s.has(bit) {
            flags.push(name);
        }
    }
    format!(
        "[{}] seq={} ack={} len={}",
        flags.join(","),
        s.seq,
        s.ack,
        s.len
    )
}
