//! `keepalive lab`: run a scenario, render its timeline, write pcap and SVG.

use crate::UsageError;
use crate::cli::LabArgs;
use crate::render::json;
use keepalive::output::Pending;
use keepalive_lab::scenario::Fault;
use keepalive_lab::scenario::{self, Scenario};
use keepalive_lab::{Ending, Live, Options, Report, What};
use std::fmt::Write as _;
use std::io::IsTerminal;

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    if args.list {
        let all = Scenario::all();
        if args.json {
            return json(&all);
        }
        let mut out = String::new();
        for s in all {
            let _ = writeln!(
                out,
                "{:<12} {}\n{:<12} policy {}",
                s.name, s.summary, "", s.policy
            );
            let _ = writeln!(out, "{:<12} {}", "", s.seed);
        }
        return crate::render::out(&out);
    }
    let scenario = match &args.scenario_file {
        Some(path) => Scenario::from_file(path).map_err(UsageError::err)?,
        None => {
            let name = args.scenario.as_deref().unwrap_or(scenario::DEFAULT);
            Scenario::named(name).ok_or_else(|| {
                let names: Vec<String> = Scenario::all().into_iter().map(|s| s.name).collect();
                UsageError::err(format!(
                    "unknown scenario '{name}': choose {}",
                    names.join(", ")
                ))
            })?
        }
    };
    let policy = args.policy.to_policy(None)?;
    // A user timeout stands without keepalive (it bounds retransmission); the rest does not.
    let timer_keys = policy.idle().is_some()
        || policy.interval().is_some()
        || policy.count().is_some()
        || policy.user_timeout() == Some(keepalive::policy::UserTimeout::Auto);
    if args.no_keepalive && timer_keys {
        return Err(UsageError::err(
            "--no-keepalive and keepalive's idle, interval, count or user-timeout=auto contradict each other; give one (a user timeout in ms or s may go with --no-keepalive)",
        ));
    }
    // Without root, become root of a user namespace of our own.
    if !keepalive_lab::privileged_enough() {
        keepalive_lab::enter_user_namespace()
            .map_err(|e| anyhow::Error::new(crate::Denied(e.to_string())))?;
    }
    // On a terminal, what the wire shows as it happens, then the report.
    let live: Option<Box<dyn Fn(Live)>> = if std::io::stderr().is_terminal() && !args.json {
        Some(Box::new(|event| match event {
            Live::Probe { n, t, since_rx } => {
                let after = since_rx.map_or(String::new(), |s| {
                    format!(", {s:.3}s after the peer last spoke")
                });
                crate::render::note(&format!(
                    "\r{:60}\r  {t:9.3}s  keepalive probe {n}{after}\n",
                    ""
                ));
            }
            Live::Retransmission { n, t } => {
                crate::render::note(&format!(
                    "\r{:60}\r  {t:9.3}s  retransmission {n} of unacknowledged data\n",
                    ""
                ));
            }
            Live::Reset { t, by_server } => {
                let who = if by_server {
                    "the server"
                } else {
                    "the client"
                };
                crate::render::note(&format!("\r{:60}\r  {t:9.3}s  RST from {who}\n", ""));
            }
            Live::Waiting { t, expected } => {
                crate::render::note(&format!("\r  watching: {t:5.1}s of about {expected:.1}s "));
            }
        }))
    } else {
        None
    };
    // Output files are started before the run, so a path that cannot be written fails now.
    let pcap = args.pcap.as_deref().map(Pending::create).transpose()?;
    let svg = args.svg.as_deref().map(Pending::create).transpose()?;
    if let (Some(pcap), Some(svg)) = (&pcap, &svg)
        && pcap.same_target(svg)
    {
        let (a, b) = (pcap.path().display(), svg.path().display());
        let named = if pcap.path() == svg.path() {
            format!("{a}")
        } else {
            format!("{a} and {b}")
        };
        return Err(UsageError::err(format!(
            "--pcap and --svg name the same file ({named}): give each a file of its own"
        )));
    }
    let report = keepalive_lab::run(Options {
        scenario,
        policy: (!policy.is_empty()).then_some(policy),
        no_keepalive: args.no_keepalive,
        live,
        server_cmd: args.server_cmd.clone(),
        client_cmd: args.client_cmd.clone(),
        duration: duration_arg("--duration", &args.duration, 3_600_000)?,
        max_duration: duration_arg(
            "--max-duration",
            &args.max_duration,
            keepalive_lab::MAX_DURATION.as_millis() as u64,
        )?,
    })
    .map_err(|e| match e {
        keepalive_lab::LabError::Policy(p) => anyhow::Error::new(p),
        keepalive_lab::LabError::BadInput(why) => UsageError::err(why),
        keepalive_lab::LabError::Permission(why) => anyhow::Error::new(crate::Denied(why)),
        e => anyhow::anyhow!("{e}"),
    })?;
    if std::io::stderr().is_terminal() && !args.json {
        crate::render::note(&format!("\r{:60}\r", ""));
    }
    if let Some(pending) = pcap {
        let mut bytes = Vec::new();
        keepalive_lab::pcap::write(&mut bytes, &report.frames)?;
        pending.finish(&bytes)?;
    }
    if let Some(pending) = svg {
        pending.finish(keepalive_lab::svg::render(&report).as_bytes())?;
    }
    if args.json {
        json(&report)?;
    } else {
        crate::render::out(&crate::render::fit(&human(&report)))?;
    }
    match report.failure() {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!("not as the kernel's rules predict: {why}")),
    }
}

fn human(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "keepalive lab: {}: {}", r.scenario, r.summary);
    let _ = writeln!(out, "  ({})", r.seed);
    let via = match r.topology {
        scenario::Topology::Pair => "one veth pair",
        scenario::Topology::Router => "a router between",
    };
    let keepalive = if r.keepalive {
        format!("server policy {}", r.policy)
    } else {
        "server keepalive off".into()
    };
    let _ = writeln!(
        out,
        "  client {} and server {} on {via}; {keepalive}",
        r.client, r.server
    );
    let _ = writeln!(out);
    // Events and probes, in time order.
    let mut lines: Vec<(f64, String)> = r
        .events
        .iter()
        .map(|e| (e.t, event_text(&e.what)))
        .collect();
    for p in &r.probes {
        let answer = if p.answered { "answered" } else { "no answer" };
        let theory = match p.after_last_rx {
            // On a line of its own, under the text: the row would pass 100 columns.
            Some(after) => format!(
                "\n{:13}{after:.3}s after the peer's last segment; theory {:.3}s",
                "", p.theory
            ),
            None => String::new(),
        };
        lines.push((
            p.t,
            format!(
                "server → client: keepalive probe {} seq={} (snd_nxt - 1), {answer}{theory}",
                p.n, p.seq
            ),
        ));
    }
    if r.retransmissions > 0 {
        let tlp = if r.tail_loss_probe.is_some() {
            ", the first a tail-loss probe, the rest the retransmission timer's"
        } else {
            ""
        };
        lines.push((
            f64::MAX,
            format!(
                "({} resends of the unacknowledged data{tlp})",
                r.retransmissions
            ),
        ));
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (t, what) in lines {
        if t == f64::MAX {
            let _ = writeln!(out, "  {:>9}  {what}", "");
        } else {
            let _ = writeln!(out, "  {t:>8.3}s  {what}");
        }
    }
    let _ = writeln!(out);
    let result = match (&r.detection, r.ending) {
        (Some(d), _) => format!(
            "{} {:.3}s after {}; theory {:.3}s ({:+.3}s, {} {:.1}s)",
            r.error.clone().unwrap_or_else(|| r.ending.words().to_owned()),
            d.measured_s,
            d.from,
            d.theory_s,
            d.measured_s - d.theory_s,
            if d.within_tolerance { "within" } else { "outside" },
            d.tolerance_s
        ),
        (None, Ending::Alive) => format!("the connection is still alive after {:.1}s", r.duration_s),
        (None, Ending::BlackHole) => {
            "black hole: the server still thinks the connection is open, but the client's data no longer arrives".into()
        }
        (None, e) => match &r.error {
            Some(error) => format!("{} ({error})", e.words()),
            None => e.words().to_owned(),
        },
    };
    let _ = writeln!(out, "Result: {result}");
    if let Some(missed) = r.heartbeats_unanswered {
        let answered = r.probes.iter().filter(|p| p.answered).count();
        let tcp = if answered > 0 {
            format!("TCP keepalive says alive ({answered} probes answered by the peer's kernel)")
        } else {
            "TCP sees nothing wrong (no keepalive probe went out in this run)".to_owned()
        };
        let _ = writeln!(
            out,
            "        {tcp}, yet {missed} application heartbeats went unanswered: only a heartbeat \
             sees a hung peer"
        );
    }
    if let Some(h) = &r.heartbeat {
        let declared = match (h.declared_s, h.theory_s) {
            (Some(d), Some(t)) => format!(
                "declared the peer dead {d:.3}s after the fault; theory {t:.3}s ({:+.3}s, {} {:.3}s)",
                d - t,
                if h.within_tolerance {
                    "within"
                } else {
                    "outside"
                },
                h.tolerance_s
            ),
            (Some(d), None) => format!("declared the peer dead {d:.3}s after the fault"),
            (None, _) => "never declared the peer dead in this run".into(),
        };
        let _ = writeln!(
            out,
            "        heartbeat (every {:.1}s, dead after {} missed): {declared}",
            h.interval_s, h.misses
        );
    }
    let verdict = if r.as_expected() {
        "as the kernel's rules predict"
    } else {
        "NOT as predicted"
    };
    let _ = writeln!(out, "        expected {}: {verdict}", r.expected.words());
    out
}

/// A duration flag, from 1 ms to `max_ms`.
fn duration_arg(flag: &str, text: &str, max_ms: u64) -> anyhow::Result<std::time::Duration> {
    keepalive::policy::grammar::parse_duration_ms(text)
        .filter(|ms| (1..=max_ms).contains(ms))
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| {
            UsageError::err(format!(
                "{flag} {text}: expected a duration from 1ms to {}, such as 10s, 2m, 1m30s or \
                 1500ms (units ms, s, m, h; no fractions)",
                crate::render::duration_ms(max_ms)
            ))
        })
}

/// One event in words.
fn event_text(what: &What) -> String {
    match what {
        What::Firewall { timeout_s } => {
            format!("router: firewall forgets idle connections after {timeout_s}s (conntrack)")
        }
        What::Connected {
            client,
            server,
            program: None,
        } => format!("client {client} connected to server {server} and sent \"hello\""),
        What::Connected {
            client,
            server,
            program: Some(program),
        } => format!("client {client} (`{program}`) connected to server {server}"),
        What::Fault { fault } => match fault {
            Fault::None => "fault: none".into(),
            Fault::Silence => {
                "fault: the client goes silent (its kernel discards everything it sends)".into()
            }
            Fault::Reboot => "fault: the client reboots: its socket is gone without a word, \
                              the host answers again"
                .into(),
            Fault::Reject => {
                "fault: the router answers everything for the client with ICMP host unreachable"
                    .into()
            }
            Fault::Freeze => "fault: the client's program hangs; its kernel still runs".into(),
        },
        What::ServerSends { bytes } => {
            format!("server sends {bytes} bytes the client will never acknowledge")
        }
        What::ClientSends { text } => format!("client sends {text:?}"),
        What::ServerReads { text } => format!("server reads {text:?}"),
        What::Icmp { code } => {
            format!("router → server: ICMP destination unreachable (code {code}), ignored by TCP")
        }
        What::ServerReset => "server → client: RST, the server gives up".into(),
        What::ServerError { errno } => format!("server's read() fails: {errno}"),
        What::PeerClosed => "server's read() returns 0: the client closed its end (FIN)".into(),
        What::ProgramExited { end, status } => format!("the {end}'s program exited ({status})"),
        What::HeartbeatDead { misses } => format!(
            "server's application: {misses} heartbeats in a row unanswered, the peer is dead to it"
        ),
    }
}
