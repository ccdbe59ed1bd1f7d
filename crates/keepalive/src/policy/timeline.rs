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
//!   the first timer run past that ([`RetransmitTimeout`]). The path's own RTO, which sets
//!   when those runs come, has the floor `net.ipv4.tcp_rto_min_us`; the limit does not.
//!
//! Both timers test a count that is a `__u8` in `struct inet_connection_sock`
//! (`include/net/inet_connection_sock.h`: `icsk_probes_out`, `icsk_retransmits`), and both
//! refuse to end the connection while that count reads 0. After 256 probes or 256
//! retransmissions it reads 0 again, so a run that would have ended the connection sends one
//! more instead ([`COUNTER_WRAP`]).
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
/// The default of `net.ipv4.tcp_rto_min_us` (Linux 6.11 and later; `tcp_sk_init()`:
/// `jiffies_to_usecs(TCP_RTO_MIN)`), and the floor kernels without that sysctl use.
pub const RTO_MIN_US: u64 = RTO_MIN_MS * 1000;
/// `icsk_probes_out` and `icsk_retransmits` are `__u8` (`include/net/inet_connection_sock.h`):
/// after this many increments they read 0 again.
pub const COUNTER_WRAP: u64 = 256;

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
    /// The timer run that first found the user timeout passed came after a multiple of 256
    /// probes: `icsk_probes_out` (a `__u8`) read 0, so it sent one more probe and the reset
    /// waited one more interval.
    pub counter_wrapped: bool,
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
        //
        // tcp_keepalive_timer() (net/ipv4/tcp_timer.c) resets under a user timeout only when
        //     elapsed >= msecs_to_jiffies(user_timeout) && icsk->icsk_probes_out > 0
        // and icsk_probes_out is a __u8 (include/net/inet_connection_sock.h), incremented per
        // probe sent and cleared only by an answer. The run at k sees k mod 256 probes out: when
        // the first run past the user timeout is at a multiple of 256, it reads 0, sends probe
        // k+1 instead (icsk_probes_out++ makes it 1), and the run one interval later resets.
        // The count rule cannot wrap: count is at most 255 (tcp_keepalive_probes is a u8,
        // TCP_KEEPCNT at most 127), so the run at k = count resets before the counter wraps.
        let (mut runs, decided_by) = if user_timeout == 0 {
            (u64::from(s.count), Decider::ProbeCount)
        } else {
            let over = user_timeout.saturating_sub(idle);
            (over.div_ceil(interval.max(1)).max(1), Decider::UserTimeout)
        };
        let counter_wrapped = decided_by == Decider::UserTimeout && runs % COUNTER_WRAP == 0;
        if counter_wrapped {
            runs += 1;
        }
        ProbeTimeline {
            first_probe_ms: idle,
            interval_ms: interval,
            probes: runs,
            reset_ms: idle + runs * interval,
            decided_by,
            counter_wrapped,
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
/// The schedule (net/ipv4/tcp_timer.c, tcp_output.c, tcp_input.c):
///
/// - The path's RTO has a floor: `tcp_init_sock()` sets `icsk_rto_min` to
///   `usecs_to_jiffies(net.ipv4.tcp_rto_min_us)` (whole jiffies, rounded up), and
///   `tcp_rto_min_us(sk)` is `jiffies_to_usecs()` of that ([`rto_floor_ms`]).
///   `tcp_rtt_estimator()` keeps `rttvar_us` at least `tcp_rto_min_us(sk)`, and
///   `__tcp_set_rto()` is `usecs_to_jiffies(srtt/8 + rttvar)`: on the fastest path the floor
///   plus a round trip, rounded up to the next jiffy ([`fastest_rto_ms`]), no more than
///   `tcp_rto_max_ms` (`tcp_bound_rto()`).
/// - With tail-loss probes on (`net.ipv4.tcp_early_retrans` 3 or 4, the default) a lone
///   unanswered segment is resent once by the probe, armed for `usecs_to_jiffies(srtt/4 +
///   tcp_rto_min_us(sk))` and no later than the RTO (`tcp_schedule_loss_probe()`); the timer
///   fires on a jiffy edge, so the probe goes out as soon as the floor after the send.
///   The retransmission timer is armed again from there for the RTO.
/// - Each timer run retransmits and doubles `icsk_rto` up to `tcp_rto_max_ms`
///   (`tcp_retransmit_timer()`).
/// - `retransmits_timed_out()` counts from the timer's first retransmission
///   (`tp->retrans_stamp`, set by `tcp_retransmit_skb()`, which the probe does not go through)
///   and gives up at the first run at least the limit after it: the user timeout, or
///   `tcp_model_timeout()` of `tcp_retries2` ([`model_timeout_ms`], a lower bound, as
///   Documentation/networking/ip-sysctl.rst says). That model starts from the constant
///   `TCP_RTO_MIN` (`unsigned int rto_base = TCP_RTO_MIN;` outside the SYN states), never from
///   `tcp_rto_min_us`: a lower floor makes the runs come faster, not the limit shorter.
/// - With a user timeout the timer is clamped to what is left of it
///   (`tcp_clamp_rto_to_user_timeout()`), so it gives up right at it; once it has passed, the
///   clamp is 1 jiffy ("fire ASAP").
/// - `retransmits_timed_out()` starts with `if (!inet_csk(sk)->icsk_retransmits) return
///   false;`, and `tcp_write_timeout()` runs before `icsk_retransmits++`. That is why the
///   first run never gives up; `icsk_retransmits` is a `__u8`, so it reads 0 again after every
///   256th retransmission, and a run that reaches the limit then retransmits once more instead
///   and gives up at the next run: 1 jiffy later under a user timeout, a doubled RTO later
///   under `tcp_retries2` ([`COUNTER_WRAP`]).
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
    /// The `net.ipv4.tcp_rto_min_us` the model used (microseconds).
    pub rto_min_us: u64,
    /// The fastest path's RTO under that floor, the first timer's span (milliseconds).
    pub rto_ms: u64,
    /// The run that reached the limit came after a multiple of 256 retransmissions:
    /// `icsk_retransmits` (a `__u8`) read 0, so the timer retransmitted once more and gave
    /// up at its next run.
    pub counter_wrapped: bool,
    /// When the limit falls just after a timer run, timers that run late (the timer wheel
    /// files each one with up to [`wheel_slack_ms`] of lateness, and the next is armed from
    /// when it ran) or a slower path's RTO can push that run past the limit: it then gives up
    /// one doubling sooner, somewhere in this window (milliseconds from the first send).
    pub sooner_ms: Option<(u64, u64)>,
}

/// The HZ of Debian's kernels (CONFIG_HZ_250), whose jiffy the fastest path's RTO rounds up to.
pub const DEBIAN_HZ: u64 = 250;
/// One jiffy at [`DEBIAN_HZ`] (milliseconds).
const JIFFY_MS: u64 = 1000 / DEBIAN_HZ;

/// The floor of a path's RTO when `net.ipv4.tcp_rto_min_us` is `rto_min_us`: whole jiffies,
/// rounded up (`tcp_init_sock()`: `icsk_rto_min = usecs_to_jiffies(rto_min_us)`). 200000 µs
/// gives 200 ms, 1000 µs one jiffy (4 ms at [`DEBIAN_HZ`]).
pub const fn rto_floor_ms(rto_min_us: u64) -> u64 {
    rto_min_us.div_ceil(JIFFY_MS * 1000) * JIFFY_MS
}

/// The RTO of the fastest path: the floor ([`rto_floor_ms`]) plus a round trip, rounded up to
/// the next jiffy at [`DEBIAN_HZ`] (`__tcp_set_rto()`: `usecs_to_jiffies(srtt/8 + rttvar)`,
/// rttvar at least the floor). 200000 µs gives 204 ms (on loopback, 51 jiffies); 1000 µs 8 ms.
pub const fn fastest_rto_ms(rto_min_us: u64) -> u64 {
    rto_floor_ms(rto_min_us) + JIFFY_MS
}

/// The RTO of the fastest path under the default floor ([`RTO_MIN_US`]): 204 ms.
pub const FASTEST_RTO_MS: u64 = fastest_rto_ms(RTO_MIN_US);

impl RetransmitTimeout {
    /// The schedule for `tcp_retries2` = `retries2`, a maximum RTO of `rto_max_ms`, the user
    /// timeout (0 = none) and tail-loss probes on or off, under the default RTO floor
    /// ([`RTO_MIN_US`]).
    pub fn new(
        retries2: u32,
        rto_max_ms: u64,
        user_timeout_ms: u32,
        tail_loss_probe: bool,
    ) -> Self {
        Self::with_rto_min(
            retries2,
            rto_max_ms,
            RTO_MIN_US,
            user_timeout_ms,
            tail_loss_probe,
        )
    }

    /// [`RetransmitTimeout::new`] under the RTO floor `net.ipv4.tcp_rto_min_us` =
    /// `rto_min_us`.
    pub fn with_rto_min(
        retries2: u32,
        rto_max_ms: u64,
        rto_min_us: u64,
        user_timeout_ms: u32,
        tail_loss_probe: bool,
    ) -> Self {
        let rto_max = rto_max_ms.max(1);
        let rto_ms = fastest_rto_ms(rto_min_us).min(rto_max);
        let probe_ms = if tail_loss_probe {
            rto_floor_ms(rto_min_us).min(rto_ms)
        } else {
            0
        };
        let first = probe_ms + rto_ms;
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
            let (mut run, mut rto, mut retransmissions) = (first, rto_ms, 0u64);
            let mut wrapped = false;
            loop {
                // tcp_write_timeout() at this run sees icsk_retransmits = retransmissions so
                // far, mod 256: at 0 (the first run, and after every 256th) it does not give up.
                if run >= give_up_at {
                    if retransmissions % COUNTER_WRAP != 0 {
                        return (run, retransmissions, wrapped, rto >= rto_max);
                    }
                    wrapped = true;
                }
                // The run retransmits and arms the next one the doubled RTO later, or, with a
                // user timeout, no later than when it runs out (1 jiffy once it has).
                retransmissions += 1;
                rto = (rto * 2).min(rto_max);
                let mut step = rto;
                if decided_by == Decider::UserTimeout {
                    let left = give_up_at.saturating_sub(run);
                    step = if left == 0 { JIFFY_MS } else { step.min(left) };
                }
                run += step
                    + if late {
                        wheel_slack_ms(step, DEBIAN_HZ)
                    } else {
                        0
                    };
            }
        };
        let (run, retransmissions, counter_wrapped, _) = schedule(false);
        let (late_run, late_retransmissions, _, late_capped) = schedule(true);
        // Late runs can reach the limit one retransmission early only while the RTO still
        // doubles: once it is at the ceiling every step is the same, and lateness only makes
        // each run later (the "on time" figure is then the earliest, not the latest).
        let sooner_ms = (decided_by == Decider::Retries
            && late_retransmissions < retransmissions
            && !late_capped)
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
            rto_min_us,
            rto_ms,
            counter_wrapped,
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
/// `TCP_RTO_MIN`, doubles, and stops doubling at `rto_max_ms`. `retransmits_timed_out()` passes
/// the constant `TCP_RTO_MIN` as `rto_base` on an established connection, whatever
/// `net.ipv4.tcp_rto_min_us` says.
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
    fn the_probe_counter_wraps_after_256_probes() {
        // idle 1 s, interval 1 s, user timeout 257 s: the run at 257 s is the first past the
        // user timeout, but it comes after 256 probes and icsk_probes_out (a u8) reads 0: it
        // sends probe 257, and the run at 258 s resets.
        let t = ProbeTimeline::silent_peer(&settings(1, 1, 9, 257_000));
        assert_eq!(
            (t.probes, t.reset_ms, t.counter_wrapped),
            (257, 258_000, true)
        );
        assert_eq!(t.probe_at(257), Duration::from_secs(257));
        // Anywhere in (256 s, 257 s] the same; at 256 s the run after 255 probes resets.
        let t = ProbeTimeline::silent_peer(&settings(1, 1, 9, 256_001));
        assert_eq!((t.probes, t.reset_ms), (257, 258_000));
        let t = ProbeTimeline::silent_peer(&settings(1, 1, 9, 256_000));
        assert_eq!(
            (t.probes, t.reset_ms, t.counter_wrapped),
            (255, 256_000, false)
        );
        // Every 256: the run after 512 probes reads 0 too.
        let t = ProbeTimeline::silent_peer(&settings(1, 1, 9, 513_000));
        assert_eq!((t.probes, t.reset_ms), (513, 514_000));
        // The count rule never gets that far (count <= 255).
        let t = ProbeTimeline::silent_peer(&settings(1, 1, 255, 0));
        assert_eq!(
            (t.probes, t.reset_ms, t.counter_wrapped),
            (255, 256_000, false)
        );
    }

    #[test]
    fn the_retransmission_counter_wraps_after_256_retransmissions() {
        // The fastest path's runs: 0.404 s, then 408 ms, 816 ms, ... up to 120 s apart; the
        // run after retransmission 255 is at 0.404 + 208.488 + 246 x 120 s = 29728.892 s.
        // A user timeout of 29800 s: the clamped run at 29800.404 s has 256 retransmissions
        // behind it, icsk_retransmits (a u8) reads 0 and retransmits_timed_out() says no; it
        // retransmits once more, the clamp arms 1 jiffy, and the run 4 ms later gives up.
        let r = RetransmitTimeout::new(15, RTO_MAX_MS, 29_800_000, true);
        assert_eq!(
            (r.give_up_ms, r.retransmissions, r.counter_wrapped),
            (29_800_408, 257, true)
        );
        // One run earlier it gives up where the limit says.
        let r = RetransmitTimeout::new(15, RTO_MAX_MS, 29_700_000, true);
        assert_eq!(
            (r.give_up_ms, r.retransmissions, r.counter_wrapped),
            (29_700_404, 255, false)
        );
        // tcp_retries2 256 without a user timeout: its limit is reached at the run after
        // retransmission 256 (29848.892 s), which reads 0; the next is a full 120 s later.
        let r = RetransmitTimeout::new(256, RTO_MAX_MS, 0, true);
        assert_eq!(
            (r.give_up_ms, r.retransmissions, r.counter_wrapped),
            (29_968_892, 257, true)
        );
        let r = RetransmitTimeout::new(255, RTO_MAX_MS, 0, true);
        assert_eq!(
            (r.give_up_ms, r.retransmissions, r.counter_wrapped),
            (29_728_892, 255, false)
        );
    }

    #[test]
    fn the_rto_floor_follows_tcp_rto_min_us() {
        assert_eq!(
            (rto_floor_ms(RTO_MIN_US), fastest_rto_ms(RTO_MIN_US)),
            (200, 204)
        );
        assert_eq!(FASTEST_RTO_MS, 204);
        // usecs_to_jiffies() rounds up: 1 us to 4 ms is one jiffy, 4.001 ms two.
        assert_eq!(
            (rto_floor_ms(1), rto_floor_ms(1000), rto_floor_ms(4000)),
            (4, 4, 4)
        );
        assert_eq!((rto_floor_ms(4001), fastest_rto_ms(1000)), (8, 8));
        // The default floor is what new() uses.
        assert_eq!(
            RetransmitTimeout::new(15, RTO_MAX_MS, 0, true),
            RetransmitTimeout::with_rto_min(15, RTO_MAX_MS, RTO_MIN_US, 0, true)
        );
        // tcp_retries2 5 under a 1 ms floor: probe at 4 ms, first retransmission at 12 ms,
        // runs 16, 32, ... 8192 ms apart; the limit (12.6 s from TCP_RTO_MIN, not the floor)
        // is first passed at 16.38 s.
        let r = RetransmitTimeout::with_rto_min(5, RTO_MAX_MS, 1000, 0, true);
        assert_eq!(
            (
                r.first_retransmission_ms,
                r.limit_ms,
                r.give_up_ms,
                r.retransmissions
            ),
            (12, 12_600, 16_380, 10)
        );
        assert_eq!(r.sooner_ms, None);
        // Without the probe the first retransmission is one RTO after the send.
        let r = RetransmitTimeout::with_rto_min(5, RTO_MAX_MS, 1000, 0, false);
        assert_eq!((r.first_retransmission_ms, r.give_up_ms), (8, 16_376));
        // A floor above tcp_rto_max_ms: the RTO stays at the ceiling (tcp_bound_rto()).
        let r = RetransmitTimeout::with_rto_min(0, 1_000, 5_000_000, 0, true);
        assert_eq!((r.rto_ms, r.first_retransmission_ms), (1_000, 2_000));
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
        // With the RTO at its ceiling every step is the same: lateness only delays, and no
        // window "one doubling sooner" is given (it was, for tcp_retries2 57 and up, with an
        // upper end past the on-time figure).
        for retries2 in [57, 120, 125, 255] {
            assert_eq!(
                RetransmitTimeout::new(retries2, RTO_MAX_MS, 0, true).sooner_ms,
                None,
                "{retries2}"
            );
        }
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
