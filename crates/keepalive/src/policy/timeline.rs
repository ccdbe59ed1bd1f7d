//! Detection math: when the kernel gives up on a peer, following `net/ipv4/tcp_timer.c`.
//!
//! Two cases decide who notices a dead peer:
//!
//! - **Idle connection** (nothing unacknowledged): `tcp_keepalive_timer()` measures the time
//!   since the last segment received (`keepalive_time_elapsed()`: the later of the last data
//!   and the last ACK). When that reaches `idle` it sends a probe (no data, ACK set, sequence
//!   number `snd_nxt - 1`) and re-arms itself for `interval`. Without `TCP_USER_TIMEOUT` the
//!   timer resets the connection once `count` probes are out unanswered: at
//!   `idle + count x interval`. With it, the timer resets at the first run where the elapsed
//!   time is at least the user timeout and one probe is out; `count` is then ignored.
//! - **Data unacknowledged**: the keepalive timer does nothing while `packets_out` is non-zero
//!   ("It is alive without keepalive 8)"). The retransmission timer decides: the user timeout
//!   if set (`tcp_clamp_rto_to_user_timeout()` makes it fire on time), otherwise
//!   `retransmits_timed_out()` with `tcp_model_timeout()`: `tcp_retries2` exponentially
//!   backed-off retransmissions starting from `TCP_RTO_MIN` (200 ms), capped at
//!   `tcp_rto_max_ms` (120 s), so 15 retries give at least 924.6 s; the connection fails at
//!   the first timer run past that ([`RetransmitTimeout`]).
//!
//! Times here are exact in the kernel's model; a real run lands a little later because timers
//! fire on jiffies (HZ=250 here: 4 ms) and are batched by the timer wheel. Expect measured
//! values up to a few hundred milliseconds over these figures.

use super::Settings;
use core::time::Duration;

/// `TCP_RTO_MIN` (`include/net/tcp.h`: HZ/5), the base of the retransmission model.
pub const RTO_MIN_MS: u64 = 200;
/// `TCP_RTO_MAX` (120 s), the default of `net.ipv4.tcp_rto_max_ms` where that sysctl exists.
pub const RTO_MAX_MS: u64 = 120_000;

/// What ends a connection to a silent peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "kebab-case")
)]
pub enum Decider {
    /// `count` keepalive probes went unanswered.
    ProbeCount,
    /// `TCP_USER_TIMEOUT` ran out.
    UserTimeout,
    /// `tcp_retries2` retransmissions went unanswered.
    Retries,
}

/// The keepalive probes sent to a silent peer on an idle connection, and the reset that ends it.
///
/// Times count from the last segment received from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ProbeTimeline {
    /// When probe 1 goes out (milliseconds).
    pub first_probe_ms: u64,
    /// Spacing of the later probes (milliseconds).
    pub interval_ms: u64,
    /// How many probes go out before the reset.
    pub probes: u64,
    /// When the kernel resets the connection and reports `ETIMEDOUT` (milliseconds).
    pub reset_ms: u64,
    /// Which rule ends it.
    pub decided_by: Decider,
}

impl ProbeTimeline {
    /// The timeline for a peer that answers nothing (crashed, cable pulled, black-holed).
    pub fn silent_peer(s: &Settings) -> Self {
        let idle = u64::from(s.idle) * 1000;
        let interval = u64::from(s.interval) * 1000;
        let user_timeout = u64::from(s.user_timeout_ms);
        // Timer runs happen at idle + k x interval, k = 0, 1, ...; the run at k sends probe k+1
        // unless it resets. The count rule resets at the run where k probes are out (k = count).
        // The user-timeout rule resets at the first run with k >= 1 and elapsed >= user timeout.
        let (runs, decided_by) = if user_timeout == 0 {
            (u64::from(s.count), Decider::ProbeCount)
        } else {
            let over = user_timeout.saturating_sub(idle);
            (over.div_ceil(interval.max(1)).max(1), Decider::UserTimeout)
        };
        ProbeTimeline {
            first_probe_ms: idle,
            interval_ms: interval,
            probes: runs,
            reset_ms: idle + runs * interval,
            decided_by,
        }
    }

    /// When probe `n` (1-based) goes out.
    pub fn probe_at(&self, n: u64) -> Duration {
        Duration::from_millis(self.first_probe_ms + (n.saturating_sub(1)) * self.interval_ms)
    }

    /// Time from the last segment received until the program sees `ETIMEDOUT`.
    pub fn time_to_detect(&self) -> Duration {
        Duration::from_millis(self.reset_ms)
    }
}

/// How long a connection with unacknowledged data survives a silent peer, on the fastest path
/// the kernel allows.
///
/// The schedule (net/ipv4/tcp_timer.c, tcp_output.c): with tail-loss probes on
/// (`net.ipv4.tcp_early_retrans` 3 or 4, the default) a lone unanswered segment is resent once
/// by the probe, `TCP_RTO_MIN` after it went out (`tcp_schedule_loss_probe()`: 2 x srtt +
/// TCP_RTO_MIN, no later than the RTO), and the retransmission timer is armed again from
/// there. Each timer run retransmits and doubles `icsk_rto` up to `tcp_rto_max_ms`
/// (`tcp_retransmit_timer()`). The path's RTO is `srtt/8 + rttvar` with rttvar at least
/// TCP_RTO_MIN, rounded up to whole jiffies (`__tcp_set_rto()`, `usecs_to_jiffies()`): on the
/// fastest path [`FASTEST_RTO_MS`]. `retransmits_timed_out()` counts from the timer's first
/// retransmission (`tp->retrans_stamp`, set by `tcp_retransmit_skb()`, which the probe does not
/// go through) and gives up at the first run at least the limit after it: the user timeout, or
/// `tcp_model_timeout()` of `tcp_retries2` ([`model_timeout_ms`], a lower bound, as
/// Documentation/networking/ip-sysctl.rst says). With a user timeout the timer is clamped to
/// what is left of it (`tcp_clamp_rto_to_user_timeout()`), so it gives up right at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RetransmitTimeout {
    /// From the first unacknowledged transmission until the kernel gives up (milliseconds).
    pub give_up_ms: u64,
    /// The retransmission timer's retransmissions before it gives up (the tail-loss probe not
    /// counted).
    pub retransmissions: u64,
    /// A tail-loss probe goes first.
    pub tail_loss_probe: bool,
    /// When the timer's first retransmission goes out, from which the limit counts
    /// (milliseconds).
    pub first_retransmission_ms: u64,
    /// The limit: the user timeout, or tcp_model_timeout() of tcp_retries2 (milliseconds).
    pub limit_ms: u64,
    /// Which rule ends it.
    pub decided_by: Decider,
    /// The `tcp_retries2` the model used.
    pub retries2: u32,
    /// The ceiling of the retransmission timeout the model used (milliseconds).
    pub rto_max_ms: u64,
    /// When the limit falls just after a timer run, timers that run late (the timer wheel
    /// files each one with up to [`wheel_slack_ms`] of lateness, and the next is armed from
    /// when it ran) or a slower path's RTO can push that run past the limit: it then gives up
    /// one doubling sooner, somewhere in this window (milliseconds from the first send).
    pub sooner_ms: Option<(u64, u64)>,
}

/// The HZ of Debian's kernels (CONFIG_HZ_250), whose jiffy the fastest path's RTO rounds up to.
pub const DEBIAN_HZ: u64 = 250;
/// The RTO of the fastest path: TCP_RTO_MIN plus a round-trip time, rounded up to the next
/// jiffy at [`DEBIAN_HZ`] (on loopback, 51 jiffies).
pub const FASTEST_RTO_MS: u64 = RTO_MIN_MS + 1000 / DEBIAN_HZ;

impl RetransmitTimeout {
    /// The schedule for `tcp_retries2` = `retries2`, a maximum RTO of `rto_max_ms`, the user
    /// timeout (0 = none) and tail-loss probes on or off.
    pub fn new(
        retries2: u32,
        rto_max_ms: u64,
        user_timeout_ms: u32,
        tail_loss_probe: bool,
    ) -> Self {
        let probe_ms = if tail_loss_probe { RTO_MIN_MS } else { 0 };
        let first = probe_ms + FASTEST_RTO_MS;
        let (limit_ms, decided_by) = if user_timeout_ms > 0 {
            (u64::from(user_timeout_ms), Decider::UserTimeout)
        } else {
            (
                model_timeout_ms(retries2.into(), rto_max_ms),
                Decider::Retries,
            )
        };
        let give_up_at = first + limit_ms;
        // The runs on time, and as late as the wheel lets each be (the lateness adds up: each
        // run arms the next from when it ran).
        let schedule = |late: bool| {
            let (mut run, mut rto, mut retransmissions) = (first, FASTEST_RTO_MS, 0u64);
            // The first run never gives up (no retransmission yet); each run retransmits and
            // arms the next one the doubled RTO later, or, with a user timeout, no later than
            // when it runs out.
            loop {
                retransmissions += 1;
                rto = (rto * 2).min(rto_max_ms.max(1));
                let mut step = rto;
                if decided_by == Decider::UserTimeout {
                    step = step.min(give_up_at.saturating_sub(run));
                }
                run += step
                    + if late {
                        wheel_slack_ms(step, DEBIAN_HZ)
                    } else {
                        0
                    };
                if run >= give_up_at {
                    return (run, retransmissions);
                }
            }
        };
        let (run, retransmissions) = schedule(false);
        let (late_run, late_retransmissions) = schedule(true);
        let sooner_ms = (decided_by == Decider::Retries && late_retransmissions < retransmissions)
            .then_some((give_up_at, late_run));
        RetransmitTimeout {
            sooner_ms,
            give_up_ms: run,
            retransmissions,
            tail_loss_probe,
            first_retransmission_ms: first,
            limit_ms,
            decided_by,
            retries2,
            rto_max_ms,
        }
    }

    /// The give-up time as a duration.
    pub fn give_up(&self) -> Duration {
        Duration::from_millis(self.give_up_ms)
    }
}

/// How late a kernel timer of `span_ms` may fire: the timer wheel (`kernel/time/timer.c`) files
/// a timer in the level whose range covers it and rounds its expiry up to that level's
/// granularity, 8^level jiffies (levels of 64 slots). With HZ=250 a 1 s timer may be up to
/// 32 ms late, a 3 s one 256 ms, a 30 s one 2.048 s.
pub fn wheel_slack_ms(span_ms: u64, hz: u64) -> u64 {
    let jiffy_ms = 1000 / hz.max(1);
    let jiffies = span_ms / jiffy_ms.max(1);
    let mut granularity = 1u64;
    while jiffies >= 64 * granularity && granularity < 8u64.pow(8) {
        granularity *= 8;
    }
    granularity * jiffy_ms
}

/// `tcp_model_timeout()`: the time `boundary` retransmissions take when the RTO starts at
/// `TCP_RTO_MIN`, doubles, and stops doubling at `rto_max_ms`.
pub fn model_timeout_ms(boundary: u64, rto_max_ms: u64) -> u64 {
    let thresh = u64::from((rto_max_ms / RTO_MIN_MS).max(1).ilog2());
    if boundary <= thresh {
        ((2u64 << boundary) - 1) * RTO_MIN_MS
    } else {
        ((2u64 << thresh) - 1) * RTO_MIN_MS + (boundary - thresh) * rto_max_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(idle: u32, interval: u32, count: u32, user_timeout_ms: u32) -> Settings {
        Settings {
            idle,
            interval,
            count,
            user_timeout_ms,
        }
    }

    #[test]
    fn linux_defaults_take_2h11m15s() {
        let t = ProbeTimeline::silent_peer(&Settings::LINUX_DEFAULT);
        assert_eq!(t.time_to_detect(), Duration::from_secs(7875));
        assert_eq!(t.probes, 9);
        assert_eq!(t.probe_at(1), Duration::from_secs(7200));
        assert_eq!(t.probe_at(9), Duration::from_secs(7200 + 8 * 75));
        assert_eq!(t.decided_by, Decider::ProbeCount);
    }

    #[test]
    fn seed_002_policy() {
        // 30 s idle, 10 s apart, 5 probes: the capture shows 5 probes then RST at 80 s.
        let t = ProbeTimeline::silent_peer(&settings(30, 10, 5, 0));
        assert_eq!((t.probes, t.reset_ms), (5, 80_000));
    }

    #[test]
    fn user_timeout_overrides_count() {
        // Reset at the first run idle + k*interval >= 25 s with k >= 1: 10 + 2*10 = 30 s.
        let t = ProbeTimeline::silent_peer(&settings(10, 10, 9, 25_000));
        assert_eq!(
            (t.probes, t.reset_ms, t.decided_by),
            (2, 30_000, Decider::UserTimeout)
        );
        // A user timeout below idle still needs one probe out: reset at idle + interval.
        let t = ProbeTimeline::silent_peer(&settings(10, 5, 9, 1_000));
        assert_eq!((t.probes, t.reset_ms), (1, 15_000));
        // Exactly on a run.
        let t = ProbeTimeline::silent_peer(&settings(10, 5, 1, 20_000));
        assert_eq!((t.probes, t.reset_ms), (2, 20_000));
        // Longer than count x interval: more probes than count.
        let t = ProbeTimeline::silent_peer(&settings(3, 1, 3, 10_000));
        assert_eq!((t.probes, t.reset_ms), (7, 10_000));
    }

    #[test]
    fn timer_wheel_slack() {
        assert_eq!(wheel_slack_ms(200, 250), 4);
        assert_eq!(wheel_slack_ms(1_000, 250), 32);
        assert_eq!(wheel_slack_ms(3_000, 250), 256);
        assert_eq!(wheel_slack_ms(30_000, 250), 2_048);
    }

    #[test]
    fn retransmission_model_matches_the_kernel() {
        assert_eq!(model_timeout_ms(15, RTO_MAX_MS), 924_600);
        assert_eq!(model_timeout_ms(8, RTO_MAX_MS), 102_200);
        assert_eq!(model_timeout_ms(3, RTO_MAX_MS), 3_000);
        // Measured on loopback (nft dropping the peer's input, recv() timed to ETIMEDOUT):
        // tcp_retries2 3 gave up after 6.75 and 6.84 s with 5 resends (the probe and 4),
        // tcp_retries2 0 after 0.83 s, user timeout 1 ms after 0.42 s, 500 ms after 0.92 s.
        // The schedule: probe at 0.2 s, timer runs at 0.404, 0.812, 1.628, 3.26, 6.524 s.
        let r = RetransmitTimeout::new(3, RTO_MAX_MS, 0, true);
        assert_eq!((r.give_up_ms, r.retransmissions), (6_524, 4));
        assert_eq!(r.first_retransmission_ms, 404);
        assert_eq!(
            RetransmitTimeout::new(0, RTO_MAX_MS, 0, true).give_up_ms,
            812
        );
        // tcp_retries2 4: on time the run at 6.524 s is just short of the limit (0.404 +
        // 6.2 s), and it gives up at 13.052 s; measured 6.676-6.775 s in four runs, where the
        // timers ran a few ms late each: the window for that says so.
        let r = RetransmitTimeout::new(4, RTO_MAX_MS, 0, true);
        assert_eq!(r.give_up_ms, 13_052);
        let (from, to) = r.sooner_ms.unwrap();
        assert!(from == 6_604 && (6_775..7_000).contains(&to), "{r:?}");
        assert_eq!(
            RetransmitTimeout::new(2, RTO_MAX_MS, 0, true).sooner_ms,
            None
        );
        let r = RetransmitTimeout::new(15, RTO_MAX_MS, 1, true);
        assert_eq!(
            (r.give_up_ms, r.retransmissions, r.decided_by),
            (405, 1, Decider::UserTimeout)
        );
        assert_eq!(
            RetransmitTimeout::new(15, RTO_MAX_MS, 500, true).give_up_ms,
            904
        );
        // The defaults: at least 924.6 s after the first retransmission; with the fastest
        // RTO's doublings the run that passes it comes 16 retransmissions in.
        let r = RetransmitTimeout::new(15, RTO_MAX_MS, 0, true);
        assert!(r.give_up_ms >= 404 + 924_600, "{r:?}");
        assert_eq!(r.decided_by, Decider::Retries);
        let r = RetransmitTimeout::new(15, RTO_MAX_MS, 30_000, false);
        // Timer runs at 0.204, 0.612, 1.428, 3.06, 6.324, 12.852, 25.908 s, then the clamped
        // timer gives up at 30.204 s.
        assert_eq!(
            (r.give_up_ms, r.retransmissions, r.decided_by),
            (30_204, 7, Decider::UserTimeout)
        );
    }
}
