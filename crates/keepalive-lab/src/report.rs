//! The report stage: what the run found, as data the CLI words, `--json` carries and the SVG
//! draws.

use crate::analysis::{self, Segment};
use crate::capture::Frame;
use crate::scenario::{Ending, Fault, Scenario, Topology};
use crate::server::ServerSide;
use crate::topology::Net;
use crate::verdict::{
    HZ, HeartbeatReport, Measure, ending_of, errno_name, expected_ending, measure,
};
use crate::wait::Watched;
use keepalive::policy::timeline::ProbeTimeline;
use keepalive::{Policy, Settings};
use std::net::{Ipv4Addr, SocketAddrV4};

/// What happened, as data: the CLI words it, the SVG draws it, `--json` carries its fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum What {
    /// The router's firewall is set to forget idle connections after `timeout_s`.
    Firewall { timeout_s: u64 },
    /// The client connected (and the lab's own client sent its greeting; a program of the
    /// user's, `program`, says what it says).
    Connected {
        client: Ipv4Addr,
        server: SocketAddrV4,
        #[serde(skip_serializing_if = "Option::is_none")]
        program: Option<String>,
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
    /// The server's read returned 0: the client closed its end.
    PeerClosed,
    /// A program of the user's at this end (`client` or `server`) exited by itself.
    ProgramExited { end: String, status: String },
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
    /// When the first resend was a tail-loss probe (net.ipv4.tcp_early_retrans 3 or 4,
    /// tcp_schedule_loss_probe()), not the retransmission timer's: its time.
    pub tail_loss_probe: Option<f64>,
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
    /// When the router's firewall forgot the connection, by its rule: its timeout into the
    /// first silence longer than that (seconds since the lab started).
    pub firewall_forgets: Option<f64>,
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
    /// The answer was a reset (the peer no longer knows the connection).
    pub reset: bool,
}

impl Report {
    /// The outcome is the one the scenario and policy call for, and every time is within
    /// tolerance of theory.
    pub fn as_expected(&self) -> bool {
        self.failure().is_none()
    }

    /// Why the run is not as the kernel's rules predict, in words; `None` when it is.
    pub fn failure(&self) -> Option<String> {
        if self.ending != self.expected {
            return Some(format!(
                "it ended {}, where the kernel's rules predict {}",
                self.ending.words(),
                self.expected.words()
            ));
        }
        if let Some(d) = self.detection.as_ref().filter(|d| !d.within_tolerance) {
            return Some(format!(
                "{} came {:.3}s after {}, where theory says {:.3}s ± {:.3}s",
                self.ending.words(),
                d.measured_s,
                d.from,
                d.theory_s,
                d.tolerance_s
            ));
        }
        if let Some(h) = self.heartbeat.as_ref().filter(|h| !h.as_theory_says()) {
            return Some(match (h.declared_s, h.theory_s) {
                (Some(d), Some(t)) => format!(
                    "the heartbeat declared the peer dead {d:.3}s after the fault, where theory \
                     says {t:.3}s ± {:.3}s",
                    h.tolerance_s
                ),
                _ => "the heartbeat never declared the hung peer dead".to_owned(),
            });
        }
        None
    }
}

/// What the run saw, handed from the stages before to this one.
pub(crate) struct Seen {
    /// The events the stages noted as they went.
    pub(crate) events: Vec<Event>,
    pub(crate) side: ServerSide,
    pub(crate) frames: Vec<Frame>,
    pub(crate) watched: Watched,
    pub(crate) heartbeat: Option<(u64, usize)>,
    pub(crate) fault_t: f64,
    /// The firewall's idle timeout, in seconds.
    pub(crate) firewall_s: Option<u64>,
    pub(crate) start_ns: u128,
    pub(crate) end_ns: u128,
}

/// Analyses the capture and the server's side against theory, and puts the report together.
pub(crate) fn report(scenario: &Scenario, net: &Net, keepalive_on: bool, seen: Seen) -> Report {
    let Seen {
        mut events,
        side,
        frames,
        watched,
        heartbeat,
        fault_t,
        firewall_s,
        start_ns,
        end_ns,
    } = seen;
    let server = SocketAddrV4::new(net.server_ip, crate::PORT);
    let wire = analysis::parse(&frames, start_ns, server, net.client_ip);
    let mut found = analysis::findings(&wire);
    found.server_rst = found.server_rst.filter(|&t| t <= watched.until);
    found.client_rst = found.client_rst.filter(|&t| t <= watched.until);
    let settings = side.settings;
    let timeline = ProbeTimeline::silent_peer(&settings);

    for icmp in wire.icmp.iter().filter(|i| i.kind == 3) {
        events.push(Event {
            t: icmp.t,
            what: What::Icmp { code: icmp.code },
        });
    }
    if let Some(t) = watched.still_there {
        events.push(Event {
            t,
            what: What::ClientSends {
                text: "still there?".into(),
            },
        });
    }
    for (t, data) in &side.received {
        events.push(Event {
            t: *t,
            what: What::ServerReads {
                text: String::from_utf8_lossy(data).trim().to_owned(),
            },
        });
    }
    let (ending, error) = ending_of(&side, &found, watched.still_there);
    let expected = expected_ending(scenario, &settings, keepalive_on);
    let detection = measure(&found, &side, &settings, scenario, ending, net);
    if let Some(t) = found.server_rst {
        events.push(Event {
            t,
            what: What::ServerReset,
        });
    }
    if let (Some(t), Some((_, misses))) = (side.declared_dead, heartbeat) {
        events.push(Event {
            t,
            what: What::HeartbeatDead { misses },
        });
    }
    if let Some(t) = side.peer_closed {
        events.push(Event {
            t,
            what: What::PeerClosed,
        });
    }
    if let Some((t, status)) = &side.program_exit {
        events.push(Event {
            t: *t,
            what: What::ProgramExited {
                end: "server".into(),
                status: status.clone(),
            },
        });
    }
    if let Some((t, e)) = &side.error {
        events.push(Event {
            t: *t,
            what: What::ServerError {
                errno: errno_name(e),
            },
        });
    }
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
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
            reset: p.reset,
        })
        .collect();
    let tlp = scenario.send_after_fault
        && crate::verdict::read_sysctl_u32(net, "net.ipv4.tcp_early_retrans")
            .is_some_and(|v| v == 3 || v == 4);
    let tail_loss_probe = found.retransmissions.first().copied().filter(|_| tlp);
    // The server's data as it crossed the wire, not when the lab asked for it.
    if let (Some(wire_t), Some(e)) = (
        found.first_unacked,
        events
            .iter_mut()
            .find(|e| matches!(e.what, What::ServerSends { .. })),
    ) {
        e.t = wire_t;
    }
    // Conntrack refreshes an entry's timeout with every segment it accepts
    // (nf_conntrack_tcp_packet() → nf_ct_refresh_acct() with the state's timeout), so the
    // router forgets the connection at the first silence longer than its timeout.
    let firewall_forgets = firewall_s.and_then(|timeout| {
        let timeout = timeout as f64;
        let times: Vec<f64> = wire.segments.iter().map(|s| s.t).collect();
        let gap = times
            .windows(2)
            .find(|w| w[1] - w[0] > timeout)
            .map(|w| w[0]);
        gap.or_else(|| {
            times
                .last()
                .copied()
                .filter(|&t| watched.until - t > timeout)
        })
        .map(|t| t + timeout)
    });
    Report {
        scenario: scenario.name.clone(),
        summary: scenario.summary.clone(),
        seed: scenario.seed.clone(),
        topology: scenario.topology,
        policy: Policy::from_settings(&settings)
            .map_or_else(|_| format!("{settings:?}"), |p| p.to_string()),
        settings,
        keepalive: keepalive_on,
        client: net.client_ip,
        server,
        events,
        probes,
        retransmissions: found.retransmissions.len(),
        tail_loss_probe,
        ending,
        error,
        expected,
        detection,
        heartbeat: heartbeat.map(|(ms, misses)| {
            let interval = ms as f64 / 1000.0;
            let first_after = side.pings.iter().copied().find(|&p| p > fault_t);
            let declared_s = side.declared_dead.map(|t| t - fault_t);
            let theory_s = first_after.map(|p| p + misses as f64 * interval - fault_t);
            // The loop notices a due ping within its poll, and as late as it was seen to wake
            // in this run (a loaded machine schedules it late): measured, not assumed.
            let tolerance_s = crate::verdict::HEARTBEAT_POLL_S.max(side.loop_late_s) + 1.0 / HZ as f64;
            HeartbeatReport {
                interval_s: interval,
                misses,
                declared_s,
                theory_s,
                tolerance_s,
                within_tolerance: matches!((declared_s, theory_s), (Some(d), Some(t)) if (d - t).abs() <= tolerance_s),
            }
        }),
        heartbeats_unanswered: heartbeat.map(|_| {
            side.heartbeats_sent
                .saturating_sub(side.heartbeats_answered)
        }),
        firewall_forgets,
        duration_s: (end_ns - start_ns) as f64 / 1e9,
        frames,
        start_ns,
    }
}

/// A segment in words: flags, sequence and acknowledgement numbers, length.
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
