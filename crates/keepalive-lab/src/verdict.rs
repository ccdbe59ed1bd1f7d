//! What the kernel's rules predict for a run, and how the run is judged against them: the
//! ending to expect, how long to watch, how far measured times may be from theory.

use crate::analysis::Findings;
use crate::scenario::{Ending, Fault, Scenario};
use crate::server::ServerSide;
use crate::topology::Net;
use keepalive::policy::timeline::{ProbeTimeline, RetransmitTimeout};
use keepalive::{Policy, PolicyError, Settings};
use std::time::Duration;

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
    /// How far the declaration may be from theory: the server's loop looks at the
    /// connection every [`HEARTBEAT_POLL_S`] (or, when it was seen waking later than that for
    /// a ping in this run, that lateness), and a tick.
    pub tolerance_s: f64,
    pub within_tolerance: bool,
}

/// How often the built-in server's loop wakes to send pings and check for answers.
pub const HEARTBEAT_POLL_S: f64 = 0.01;

impl HeartbeatReport {
    /// Declared dead, and when theory says, within the tolerance.
    pub fn as_theory_says(&self) -> bool {
        self.within_tolerance
    }
}

/// Measured against theory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measure {
    /// From what the clock starts (the last segment from the peer, or the first unanswered send).
    pub from: String,
    /// When the clock started, in seconds since the lab started.
    pub origin_t: f64,
    pub measured_s: f64,
    pub theory_s: f64,
    /// How far apart they may be (timer granularity).
    pub tolerance_s: f64,
    pub within_tolerance: bool,
}

/// Everything a run found.
/// How long the run watches the connection after the fault, in seconds: until the ending
/// theory predicts, and a little more.
pub fn watch_window(
    scenario: &Scenario,
    policy: &Policy,
    keepalive_on: bool,
    duration: Duration,
) -> Result<f64, PolicyError> {
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
            RetransmitTimeout::new(retries2, 120_000, settings.user_timeout_ms, true).give_up_ms
                as f64
                / 1000.0
                + 3.0
        }
        _ => keepalive_end + 3.0,
    };
    Ok(window.max(heartbeat_s))
}

/// What the scenario, with these settings, should end in.
pub fn expected_ending(scenario: &Scenario, settings: &Settings, keepalive_on: bool) -> Ending {
    let e = &scenario.expect;
    match scenario.firewall_timeout_ms() {
        _ if !keepalive_on => e.no_keepalive,
        _ if settings.user_timeout_ms > 0 && e.user_timeout.is_some() => {
            e.user_timeout.unwrap_or(e.keepalive)
        }
        // The first probe goes out after `idle`; a firewall that forgot the connection by then
        // drops it (conntrack: invalid).
        Some(timeout_ms) if u64::from(settings.idle) * 1000 >= timeout_ms => {
            e.idle_over_firewall.unwrap_or(e.keepalive)
        }
        _ => e.keepalive,
    }
}

pub(crate) fn ending_of(
    side: &ServerSide,
    found: &Findings,
    still_there: Option<f64>,
) -> (Ending, Option<String>) {
    if side.program_lost.is_some() {
        // A program's errno, inferred from what crossed the wire: a reset by the server's
        // kernel after unanswered probes or retransmissions is the kernel giving up; one with
        // nothing unanswered, or a FIN, is the program closing its connection itself.
        let gave_up =
            found.probes.last().is_some_and(|p| !p.answered) || !found.retransmissions.is_empty();
        return match (found.server_rst, found.client_rst, found.client_fin) {
            (_, Some(_), _) => (
                Ending::Reset,
                Some("ECONNRESET (the peer's RST; inferred from the capture)".into()),
            ),
            (_, None, Some(_)) => (
                Ending::Closed,
                Some("EOF (the peer's FIN; inferred from the capture)".into()),
            ),
            (Some(_), None, None) if gave_up => (
                Ending::Timeout,
                Some(
                    "ETIMEDOUT (the kernel reset the connection; inferred from the capture)".into(),
                ),
            ),
            (Some(_), None, None) => (
                Ending::Other,
                Some(
                    "the server program reset the connection itself (closed it with data unread)"
                        .into(),
                ),
            ),
            (None, None, None) if found.server_fin.is_some() => (
                Ending::Other,
                Some("the server program closed the connection itself (FIN)".into()),
            ),
            (None, None, None) => (Ending::Other, Some("the program's connection ended".into())),
        };
    }
    if side.peer_closed.is_some() && side.error.is_none() {
        return (Ending::Closed, Some("EOF: the peer closed its end".into()));
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
pub(crate) fn measure(
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
    // The last timer run before the end, seen on the wire, from which the last (unseen) run
    // was armed: the one timer whose lateness is not already in the times measured.
    let mut last_seen_run = None;
    let (from, origin, theory) = if scenario.send_after_fault {
        let retries2 = read_retries2(net).unwrap_or(scenario.retries2.unwrap_or(15));
        let model = RetransmitTimeout::new(retries2, 120_000, 0, true);
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
        last_seen_run = Some(found.retransmissions.last().copied().unwrap_or(first_rto));
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
            let limit = first_rto + model.limit_ms as f64 / 1000.0;
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
    // The timer runs that happened since the clock started: one per probe seen after it (an
    // answer to an earlier probe restarted the timer, and the runs before it are not in the
    // time measured), and, for a timeout, the run after the last probe that gave up (after
    // `count` probes, or once the user timeout had passed).
    let probes_since = found.probes.iter().filter(|p| p.t > origin).count() as u64;
    let interval_runs = probes_since.saturating_sub(1) + u64::from(ending == Ending::Timeout);
    let tolerance = match last_seen_run {
        // The retransmission timer that gave up was armed at the last retransmission for what
        // remained (icsk_rto, or the user timeout's rest), and the timer wheel may run it up
        // to one granularity of that timeout late; the runs before it are on the wire.
        Some(last) => {
            use keepalive::policy::timeline::wheel_slack_ms;
            let armed_ms = ((origin + theory - last).max(0.0) * 1000.0) as u64;
            (wheel_slack_ms(armed_ms, HZ) as f64 / 1000.0 + 0.05).max(TOLERANCE_S)
        }
        None => tolerance_s(settings, interval_runs),
    };
    Some(Measure {
        from: from.into(),
        origin_t: origin,
        measured_s: measured,
        theory_s: theory,
        tolerance_s: tolerance,
        within_tolerance: (measured - theory).abs() <= tolerance,
    })
}

pub(crate) fn read_retries2(net: &Net) -> Option<u32> {
    read_sysctl_u32(net, "net.ipv4.tcp_retries2")
}

pub(crate) fn read_sysctl_u32(net: &Net, key: &str) -> Option<u32> {
    net.server.read_sysctl(key).ok()?.parse().ok()
}

/// The errno's name (ETIMEDOUT...), or its text.
pub fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) => "ETIMEDOUT".into(),
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        _ => e.to_string(),
    }
}
