//! The keepalive lab: build a throwaway network in namespaces, connect a client to a server
//! that runs a keepalive policy, make the peer fail the way a scenario says, capture what
//! crosses the wire, and measure it against the library's theory.
//!
//! Everything happens inside namespaces this process creates and that die with it; the host's
//! network is never touched.

pub mod analysis;
pub mod capture;
mod netlink;
pub mod pcap;
pub mod scenario;
pub mod svg;
pub mod topology;

use analysis::{Findings, Segment};
use capture::{Capture, Frame};
use keepalive::policy::timeline::{ProbeTimeline, RetransmitTimeout};
use keepalive::{Policy, Settings};
use netlink::Kind;
pub use scenario::Ending;
use scenario::{Fault, Scenario, Topology};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use topology::Net;

/// The port the lab's server listens on.
pub const PORT: u16 = 8080;
/// How far a measured time may be from theory: timers fire on jiffies and the timer wheel
/// batches them (docs/kernel.md).
pub const TOLERANCE_S: f64 = 0.4;
/// The kernel tick assumed when working out how late long timers may run (the project's
/// machines run HZ=250).
pub const HZ: u64 = 250;

/// How far the detection may land from theory: 0.4 s, or more for long policies, whose timers
/// the timer wheel may fire up to one granularity late each (see `wheel_slack_ms`). The
/// keepalive timer re-arms itself from when it ran (`tcp_keepalive_timer()`), so lateness adds
/// up over the runs that happened: the first, after `idle`, and `interval_runs` after it.
pub fn tolerance_s(settings: &Settings, interval_runs: u64) -> f64 {
    use keepalive::policy::timeline::wheel_slack_ms;
    let slack = wheel_slack_ms(u64::from(settings.idle) * 1000, HZ)
        + interval_runs * wheel_slack_ms(u64::from(settings.interval) * 1000, HZ);
    (slack as f64 / 1000.0 + 0.05).max(TOLERANCE_S)
}

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

/// The application heartbeat's verdict (`hung`), in seconds from the fault.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HeartbeatReport {
    pub interval_s: f64,
    /// Unanswered pings in a row that make the peer dead.
    pub misses: usize,
    /// When it was declared dead; `None` if it never was in the run.
    pub declared_s: Option<f64>,
    /// The first ping after the fault goes unanswered, and the peer is dead when the ping due
    /// `misses` intervals later finds the last `misses` unanswered.
    pub theory_s: Option<f64>,
    /// The server's loop looks at the connection every 50 ms: how late it may notice.
    pub tolerance_s: f64,
}

impl HeartbeatReport {
    /// Declared dead, and when theory says, within the tolerance.
    pub fn as_theory_says(&self) -> bool {
        match (self.declared_s, self.theory_s) {
            (Some(d), Some(t)) => (d - t).abs() <= self.tolerance_s,
            _ => false,
        }
    }
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

/// Measured against theory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measure {
    /// From what the clock starts (the last segment from the peer, or the first unanswered send).
    pub from: String,
    pub measured_s: f64,
    pub theory_s: f64,
    /// How far apart they may be (timer granularity).
    pub tolerance_s: f64,
    pub within_tolerance: bool,
}

/// Everything a run found.
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

/// What the server thread saw.
struct ServerSide {
    settings: Settings,
    error: Option<(f64, std::io::Error)>,
    received: Vec<(f64, Vec<u8>)>,
    heartbeats_sent: usize,
    heartbeats_answered: usize,
    /// When each heartbeat ping went out.
    pings: Vec<f64>,
    /// When the application declared the peer dead: `heartbeat_misses` pings in a row went
    /// unanswered.
    declared_dead: Option<f64>,
    /// The connection's retransmission timeout when the unanswered data went out.
    rto_ms: Option<u64>,
    /// A `--server-cmd` program's connection went away at this time (its errno is not ours to
    /// see; the capture tells which).
    program_lost: Option<f64>,
}

impl ServerSide {
    fn new(settings: Settings) -> Self {
        ServerSide {
            settings,
            error: None,
            received: Vec::new(),
            heartbeats_sent: 0,
            heartbeats_answered: 0,
            pings: Vec::new(),
            declared_dead: None,
            rto_ms: None,
            program_lost: None,
        }
    }
}

enum ToServer {
    /// Send this much data now (busy).
    Send(usize),
    Stop,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
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

/// How long the run watches the connection after the fault, in seconds: until the ending
/// theory predicts, and a little more.
pub fn watch_window(
    scenario: &Scenario,
    policy: &Policy,
    keepalive_on: bool,
    duration: Duration,
) -> Result<f64, LabError> {
    let settings = policy.resolve(&Settings::LINUX_DEFAULT)?;
    let keepalive_end = ProbeTimeline::silent_peer(&settings).reset_ms as f64 / 1000.0;
    let firewall_s = scenario.firewall_timeout_ms().map(|ms| ms as f64 / 1000.0);
    // A heartbeat that should declare a hung peer dead: long enough to see it do so.
    let heartbeat_s = match (scenario.fault, scenario.heartbeat_ms()) {
        (Fault::Freeze, Some(ms)) => {
            (f64::from(scenario.heartbeat_misses.unwrap_or(3)) + 2.0) * ms as f64 / 1000.0 + 1.0
        }
        _ => 0.0,
    };
    let window = match expected_ending(scenario, &settings, keepalive_on) {
        Ending::Alive if firewall_s.is_some() => {
            (firewall_s.unwrap_or(0.0) * 2.0).max(keepalive_end) + 1.0
        }
        Ending::Alive if !keepalive_on => duration.as_secs_f64(),
        Ending::Alive => keepalive_end + 1.0,
        Ending::BlackHole => firewall_s.unwrap_or(5.0) + 2.0,
        Ending::Reset => f64::from(settings.idle) + 3.0,
        _ if scenario.send_after_fault => {
            let retries2 = scenario.retries2.unwrap_or(15);
            RetransmitTimeout::new(retries2, 120_000, settings.user_timeout_ms).give_up_ms as f64
                / 1000.0
                + 3.0
        }
        _ => keepalive_end + 3.0,
    };
    Ok(window.max(heartbeat_s))
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
    let net = match scenario.topology {
        Topology::Pair => Net::pair()?,
        Topology::Router => Net::router()?,
    };
    if let Some(r) = scenario.retries2 {
        net.server.sysctl("net.ipv4.tcp_retries2", &r.to_string())?;
    }
    if let (Some(router), Some(timeout_ms)) = (&net.router, scenario.firewall_timeout_ms()) {
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
        note(
            secs(now_ns()),
            What::Firewall {
                timeout_s: timeout_ms / 1000,
            },
        );
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
    let server_ip = net.server_ip;
    // A blackhole route in the client for the server's address (longer than the connected
    // /24, so it wins): everything the client's kernel sends there is discarded before it
    // reaches the wire, with no ICMP (`dst_discard_out`), so the client goes silent for the
    // server.
    let silence = |on: bool| {
        net.client.rtnl("the client's blackhole route", move |r| {
            if on {
                r.add_route(server_ip, 32, Kind::Blackhole, None)
            } else {
                r.delete_route(server_ip, 32, Kind::Blackhole)
            }
        })
    };
    match scenario.fault {
        Fault::None => {}
        Fault::Silence => {
            silence(true)?;
            note(
                fault_t,
                What::Fault {
                    fault: scenario.fault,
                },
            );
        }
        Fault::Reboot => {
            // The socket goes away with its RST discarded, then the host answers again.
            silence(true)?;
            if let Some(c) = client.take() {
                let _ = socket_linger_zero(&c);
                drop(c);
            }
            std::thread::sleep(Duration::from_millis(100));
            silence(false)?;
            note(
                fault_t,
                What::Fault {
                    fault: scenario.fault,
                },
            );
        }
        Fault::Reject => {
            if let Some(router) = &net.router {
                // An unreachable route for the client's address: the router answers what it
                // would forward there with ICMP host unreachable (`ip_error()`).
                let client_ip = net.client_ip;
                router.rtnl("the router's unreachable route", move |r| {
                    r.add_route(client_ip, 32, Kind::Unreachable, None)
                })?;
            }
            note(
                fault_t,
                What::Fault {
                    fault: scenario.fault,
                },
            );
        }
        Fault::Freeze => {
            if let Some(r) = &responder {
                r.freeze();
            }
            note(
                fault_t,
                What::Fault {
                    fault: scenario.fault,
                },
            );
        }
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

/// What the scenario, with these settings, should end in.
pub fn expected_ending(scenario: &Scenario, settings: &Settings, keepalive_on: bool) -> Ending {
    let e = &scenario.expect;
    match scenario.firewall_timeout_ms() {
        _ if !keepalive_on => e.no_keepalive,
        // The first probe goes out after `idle`; a firewall that forgot the connection by then
        // drops it (conntrack: invalid).
        Some(timeout_ms) if u64::from(settings.idle) * 1000 >= timeout_ms => {
            e.idle_over_firewall.unwrap_or(e.keepalive)
        }
        _ => e.keepalive,
    }
}

fn ending_of(
    side: &ServerSide,
    found: &Findings,
    still_there: Option<f64>,
) -> (Ending, Option<String>) {
    if side.program_lost.is_some() {
        // A program's errno, inferred from what crossed the wire.
        return match (found.server_rst, found.client_rst) {
            (_, Some(_)) => (
                Ending::Reset,
                Some("ECONNRESET (the peer's RST; inferred from the capture)".into()),
            ),
            (Some(_), None) => (
                Ending::Timeout,
                Some(
                    "ETIMEDOUT (the kernel reset the connection; inferred from the capture)".into(),
                ),
            ),
            (None, None) => (Ending::Other, Some("the program's connection ended".into())),
        };
    }
    match &side.error {
        Some((_, e)) => {
            let ending = match e.raw_os_error() {
                Some(libc::ETIMEDOUT) => Ending::Timeout,
                Some(libc::ECONNRESET) => Ending::Reset,
                _ => Ending::Other,
            };
            (ending, Some(errno_name(e)))
        }
        None if still_there.is_some()
            && !side
                .received
                .iter()
                .any(|(_, d)| d.starts_with(b"still there")) =>
        {
            (Ending::BlackHole, None)
        }
        None if found.client_rst.is_some() => (Ending::Reset, None),
        None => (Ending::Alive, None),
    }
}

/// Time to detect, measured and in theory.
fn measure(
    found: &Findings,
    side: &ServerSide,
    settings: &Settings,
    scenario: &Scenario,
    ending: Ending,
    net: &Net,
) -> Option<Measure> {
    let end = found
        .server_rst
        .or(found.client_rst)
        .or(side.error.as_ref().map(|(t, _)| *t))
        .or(side.program_lost)?;
    if !matches!(ending, Ending::Timeout | Ending::Reset) {
        return None;
    }
    let (from, origin, theory) = if scenario.send_after_fault {
        let retries2 = read_retries2(net).unwrap_or(scenario.retries2.unwrap_or(15));
        let model = RetransmitTimeout::new(retries2, 120_000, 0);
        let origin = found.first_unacked?;
        // The clock starts at the first retransmission the retransmission timer makes
        // (tcp_retransmit_skb() sets tp->retrans_stamp then; a tail-loss probe goes through
        // __tcp_retransmit_skb(), which does not), and retransmits_timed_out() counts from it
        // (net/ipv4/tcp_timer.c). With tail-loss probes on (net.ipv4.tcp_early_retrans 3 or
        // 4, tcp_schedule_loss_probe() in tcp_output.c) the first resend of a silent tail is
        // the probe, about TCP_RTO_MIN after one lone segment, and the timer's first comes
        // after it.
        let tlp =
            read_sysctl_u32(net, "net.ipv4.tcp_early_retrans").is_some_and(|v| v == 3 || v == 4);
        let first_rto = found.retransmissions.get(usize::from(tlp)).copied()?;
        let end = if settings.user_timeout_ms > 0 {
            // With TCP_USER_TIMEOUT the timer is clamped to what is left of it
            // (tcp_clamp_rto_to_user_timeout()), so it runs, and gives up, right at it.
            first_rto + f64::from(settings.user_timeout_ms) / 1000.0
        } else {
            // Otherwise the limit (tcp_model_timeout() of tcp_retries2) is checked when the
            // timer runs: at the retransmissions seen on the wire, then on the backoff
            // schedule; the kernel gives up at the first run past it. Each run arms the next
            // one icsk_rto later, and icsk_rto doubles per run (tcp_retransmit_timer(), capped
            // at TCP_RTO_MAX): the nominal first RTO is the smallest step seen divided by its
            // doubling (a late timer only lengthens a step).
            let limit = first_rto + model.give_up_ms as f64 / 1000.0;
            let rto_runs: Vec<f64> = found
                .retransmissions
                .iter()
                .copied()
                .filter(|&t| t >= first_rto)
                .collect();
            let rto0 = rto_runs
                .windows(2)
                .enumerate()
                .map(|(k, w)| (w[1] - w[0]) / f64::from(1u32 << k.min(30)))
                .fold(f64::INFINITY, f64::min);
            let rto0 = if rto0.is_finite() {
                rto0
            } else {
                side.rto_ms.unwrap_or(200) as f64 / 1000.0
            };
            let rto_max = model.rto_max_ms as f64 / 1000.0;
            let mut n = rto_runs.len().saturating_sub(1);
            let mut next = rto_runs.last().copied().unwrap_or(first_rto);
            while next < limit {
                next += (rto0 * f64::from(1u32 << n.min(30))).min(rto_max);
                n += 1;
            }
            next
        };
        ("the first unacknowledged send", origin, end - origin)
    } else if ending == Ending::Reset {
        (
            "the last segment from the peer",
            found.last_rx?,
            f64::from(settings.idle),
        )
    } else {
        (
            "the last segment from the peer",
            found.last_rx?,
            ProbeTimeline::silent_peer(settings).reset_ms as f64 / 1000.0,
        )
    };
    let measured = end - origin;
    // The timer runs that happened: one per probe seen, and, for a timeout, the run after the
    // last probe that gave up (after `count` probes, or once the user timeout had passed).
    let interval_runs =
        (found.probes.len() as u64).saturating_sub(1) + u64::from(ending == Ending::Timeout);
    let tolerance = if scenario.send_after_fault {
        TOLERANCE_S
    } else {
        tolerance_s(settings, interval_runs)
    };
    Some(Measure {
        from: from.into(),
        measured_s: measured,
        theory_s: theory,
        tolerance_s: tolerance,
        within_tolerance: (measured - theory).abs() <= tolerance,
    })
}

fn read_retries2(net: &Net) -> Option<u32> {
    read_sysctl_u32(net, "net.ipv4.tcp_retries2")
}

fn read_sysctl_u32(net: &Net, key: &str) -> Option<u32> {
    net.server.read_sysctl(key).ok()?.parse().ok()
}

pub fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        _ => e.to_string(),
    }
}

/// tcp_info's `tcpi_rto`, in milliseconds.
fn tcp_rto_ms(s: &TcpStream) -> Option<u64> {
    // SAFETY: an all-zero tcp_info is a valid out-buffer; getsockopt writes at most `len` bytes.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO on a socket we own, into `info`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| u64::from(info.tcpi_rto) / 1000)
}

fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_linger(
        s,
        Some(Duration::ZERO),
    )?)
}

/// The server: listen with the policy, accept one connection, read until it ends.
fn serve(
    addr: SocketAddrV4,
    policy: Policy,
    keepalive_on: bool,
    heartbeat: Option<(u64, usize)>,
    ready: mpsc::Sender<Result<(), String>>,
    commands: mpsc::Receiver<ToServer>,
    start_ns: u128,
) -> Result<ServerSide, String> {
    let secs = |ns: u128| ns.saturating_sub(start_ns) as f64 / 1e9;
    let heartbeat_ms = heartbeat.map(|(ms, _)| ms);
    let allowed_misses = heartbeat.map_or(usize::MAX, |(_, n)| n);
    let (mut answered_since_ping, mut misses) = (true, 0usize);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("bind {addr}: {e}")));
            return Err(e.to_string());
        }
    };
    if keepalive_on && let Err(e) = keepalive::socket::apply(&listener, &policy) {
        let _ = ready.send(Err(e.to_string()));
        return Err(e.to_string());
    }
    let _ = ready.send(Ok(()));
    let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
    let settings = keepalive::socket::read(&conn)
        .map_err(|e| e.to_string())?
        .settings;
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let mut side = ServerSide::new(settings);
    let mut buf = [0u8; 4096];
    let mut next_beat = heartbeat_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    loop {
        match commands.try_recv() {
            Ok(ToServer::Stop) | Err(mpsc::TryRecvError::Disconnected) => return Ok(side),
            Ok(ToServer::Send(n)) => {
                side.rto_ms = tcp_rto_ms(&conn);
                if let Err(e) = conn.write_all(&vec![b'x'; n]) {
                    side.error = Some((secs(now_ns()), e));
                    return Ok(side);
                }
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if let (Some(at), Some(ms)) = (next_beat, heartbeat_ms)
            && Instant::now() >= at
        {
            // The application's own heartbeat: a ping the peer's program should answer
            // before the next is due; `allowed_misses` in a row and the peer is dead to it.
            if side.heartbeats_sent > 0 && !answered_since_ping {
                misses += 1;
                if misses >= allowed_misses && side.declared_dead.is_none() {
                    side.declared_dead = Some(secs(now_ns()));
                }
            } else {
                misses = 0;
            }
            if conn.write_all(b"ping\n").is_ok() {
                side.heartbeats_sent += 1;
                side.pings.push(secs(now_ns()));
                answered_since_ping = false;
            }
            next_beat = Some(at + Duration::from_millis(ms));
        }
        match conn.read(&mut buf) {
            Ok(0) => return Ok(side),
            Ok(n) => {
                let data = buf[..n].to_vec();
                let pongs = data.windows(4).filter(|w| w == b"pong").count();
                side.heartbeats_answered += pongs;
                answered_since_ping |= pongs > 0;
                side.received.push((secs(now_ns()), data));
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) => {
                side.error = Some((secs(now_ns()), e));
                return Ok(side);
            }
        }
    }
}

/// The client's program in `hung`: a forked process holding the client's socket, answering
/// each "ping" with "pong" until stopped. Between fork and its end it makes only read, write,
/// prctl and _exit calls on stack memory (async-signal-safe: the lab has other threads).
struct Responder {
    pid: libc::pid_t,
}

impl Responder {
    fn start(socket: &TcpStream) -> std::io::Result<Responder> {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        // SAFETY: fork(2); the child runs only the async-signal-safe loop below and never
        // returns into Rust code that could allocate or take a lock.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child: prctl, read, write and _exit on a stack buffer and the
            // inherited socket.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let mut buf = [0u8; 256];
                loop {
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        libc::_exit(0);
                    }
                    let got = &buf[..n as usize];
                    if got.windows(4).any(|w| w == b"ping") {
                        libc::write(fd, b"pong\n".as_ptr().cast(), 5);
                    }
                }
            }
        }
        Ok(Responder { pid })
    }

    /// The program hangs: SIGSTOP. Its kernel still ACKs data and probes.
    fn freeze(&self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.pid, libc::SIGSTOP) };
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // SAFETY: kills and reaps our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// A `--server-cmd` program, ready to start: its words, the program found, and the
/// environment that preloads the shim with the policy.
struct ServerProgram {
    text: String,
    program: std::path::PathBuf,
    args: Vec<String>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl ServerProgram {
    /// Splits `text` as a POSIX shell would (quotes, backslashes; no expansions), finds the
    /// program (a path, or a name on the caller's PATH, /usr/bin:/bin when it has none) and
    /// the shim; refuses what the shim cannot reach.
    fn new(text: &str, policy: Policy, keepalive_on: bool) -> Result<ServerProgram, LabError> {
        use keepalive::launch;
        let bad = |why: String| LabError::BadInput(format!("--server-cmd '{text}': {why}"));
        let mut words = shell_words::split(text)
            .map_err(|e| bad(format!("{e}; write it as a shell would, e.g. 'nc -l 8080'")))?
            .into_iter();
        let name = words.next().ok_or_else(|| bad("no program given".into()))?;
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let program = launch::resolve_program(name.as_ref(), Some(&path))
            .filter(|p| p.is_file())
            .ok_or_else(|| bad(format!("program '{name}' not found")))?;
        let mut env = Vec::new();
        if keepalive_on {
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
        Ok(ServerProgram {
            text: text.to_owned(),
            program,
            args: words.collect(),
            env,
        })
    }

    /// Starts the program as the first process of a PID namespace of its own, killed when the
    /// thread that starts it ends (PR_SET_PDEATHSIG), the lab's death included: when the
    /// first process of a PID namespace dies the kernel kills everything else in it, so nothing
    /// it started outlives the lab either. Call on a thread that lives until the program is
    /// reaped.
    fn start(&self) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        // CLONE_NEWPID applies to the children this thread makes from now on.
        // SAFETY: no memory is involved; only this thread's later children are affected.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWPID)? };
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null());
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

fn serve_program(
    program: &ServerProgram,
    addr: SocketAddrV4,
    ready: mpsc::Sender<Result<(), String>>,
    commands: mpsc::Receiver<ToServer>,
    start_ns: u128,
) -> Result<ServerSide, String> {
    use keepalive::diag::{self, TcpState};
    let secs = |ns: u128| ns.saturating_sub(start_ns) as f64 / 1e9;
    let cmd = &program.text;
    let mut child = match program.start() {
        Ok(child) => child,
        Err(e) => {
            let _ = ready.send(Err(format!("`{cmd}`: {e}")));
            return Err(format!("`{cmd}`: {e}"));
        }
    };
    let port = addr.port();
    let find = |state: TcpState| {
        let mut found = None;
        let _ = diag::for_each_socket(None, &[state], |e| {
            if e.local.port() == port {
                found = Some(e.inode);
            }
        });
        found
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while find(TcpState::Listen).is_none() {
        let exited = child.try_wait().ok().flatten();
        if Instant::now() > deadline || exited.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            let why = match exited {
                Some(status) => {
                    format!("`{cmd}` exited ({status}) without listening on port {port}")
                }
                None => format!("`{cmd}` did not listen on port {port} within 10 s"),
            };
            let _ = ready.send(Err(why.clone()));
            return Err(why);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ready.send(Ok(()));
    let mut side = ServerSide::new(Settings::LINUX_DEFAULT);
    let (mut seen, mut read) = (false, false);
    loop {
        if matches!(
            commands.try_recv(),
            Ok(ToServer::Stop) | Err(mpsc::TryRecvError::Disconnected)
        ) {
            break;
        }
        match find(TcpState::Established) {
            Some(inode) => {
                seen = true;
                // The program's own socket, read through a duplicate of its descriptor, once
                // it has one: a connection still in the accept queue has no inode yet.
                if !read && inode != 0 {
                    let owners = diag::owners();
                    if let Some(o) = owners.holders(inode).first()
                        && let Ok(dup) = keepalive::retrofit::duplicate(o.pid, o.fd)
                        && let Ok(k) = keepalive::socket::read(&dup)
                    {
                        side.settings = k.settings;
                        read = true;
                    }
                }
            }
            None if seen => {
                side.program_lost = Some(secs(now_ns()));
                break;
            }
            None => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    if seen && !read {
        return Err(format!(
            "the options of `{cmd}`'s connection could not be read back (pidfd_getfd)"
        ));
    }
    Ok(side)
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
