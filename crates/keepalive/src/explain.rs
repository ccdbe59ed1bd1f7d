//! What happens to a connection under given keepalive settings, for every state the peer
//! can be in (seed 003's four, plus a hung application), and which middleboxes would forget
//! the connection before the first probe.

use crate::policy::Settings;
use crate::policy::timeline::{ProbeTimeline, RetransmitTimeout};
use crate::policy::{Key, Policy, PolicyError};
use crate::reference::{self, Middlebox, OsDefaults};
use crate::sysctl::Defaults;
use core::fmt;
use core::str::FromStr;

/// A state the peer of an idle connection can be in: seed 003's four, plus a hung
/// application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "kebab-case")
)]
pub enum PeerState {
    /// Up and answering: it ACKs the probe.
    Alive,
    /// Down, powered off or cut off by a pulled cable: nothing answers.
    Crashed,
    /// Back up without the connection: its kernel answers the probe with RST.
    Rebooted,
    /// No route to it: the probes are lost, and the ICMP errors about them are ignored
    /// (out of window).
    Unreachable,
    /// Its program is frozen while its kernel still ACKs every probe.
    Hung,
}

impl PeerState {
    /// Every state, in the order `keepalive explain` lists them.
    pub const ALL: [PeerState; 5] = [
        PeerState::Alive,
        PeerState::Crashed,
        PeerState::Rebooted,
        PeerState::Unreachable,
        PeerState::Hung,
    ];

    /// The state's name, as written on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            PeerState::Alive => "alive",
            PeerState::Crashed => "crashed",
            PeerState::Rebooted => "rebooted",
            PeerState::Unreachable => "unreachable",
            PeerState::Hung => "hung",
        }
    }

    /// What the connection's program sees in this state on a connection whose timer runs
    /// `silent_peer` (the timeline for a peer that answers nothing).
    pub fn outcome(self, silent_peer: &ProbeTimeline) -> PeerOutcome {
        let (peer_does, error, after_ms) = match self {
            PeerState::Alive => ("ACKs probe 1; the timer starts over", None, None),
            PeerState::Crashed => (
                "says nothing: down, powered off, cable pulled",
                Some("ETIMEDOUT"),
                Some(silent_peer.reset_ms),
            ),
            PeerState::Rebooted => (
                "lost the connection: answers probe 1 with RST",
                Some("ECONNRESET"),
                Some(silent_peer.first_probe_ms),
            ),
            PeerState::Unreachable => (
                "probes lost; ICMP errors about them are ignored",
                Some("ETIMEDOUT"),
                Some(silent_peer.reset_ms),
            ),
            PeerState::Hung => ("program frozen; its kernel ACKs every probe", None, None),
        };
        PeerOutcome {
            state: self,
            peer_does,
            error,
            after_ms,
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A peer state name that is none of [`PeerState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown peer state '{0}': one of alive, crashed, rebooted, unreachable, hung")]
pub struct UnknownPeerState(pub String);

impl FromStr for PeerState {
    type Err = UnknownPeerState;

    fn from_str(s: &str) -> Result<Self, UnknownPeerState> {
        PeerState::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPeerState(s.to_owned()))
    }
}

/// What a connection's program sees when the peer is in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerOutcome {
    /// The peer's state.
    pub state: PeerState,
    /// What the peer does when probed.
    pub peer_does: &'static str,
    /// The error the program gets, or `None` when the connection stays open.
    pub error: Option<&'static str>,
    /// When, counted from the last segment received; `None` when never.
    pub after_ms: Option<u64>,
}

/// Whether and when keepalive tells the program about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// The program gets `error` this long after the last segment received.
    After {
        /// The errno the program's next call gets.
        error: &'static str,
        /// Milliseconds after the last segment received.
        after_ms: u64,
    },
    /// Nothing to detect: the peer is alive and the connection rightly stays open.
    NothingToDetect,
    /// Never: the peer's kernel answers for a program that is gone, so the connection stays
    /// open; only an application heartbeat notices.
    Never,
}

impl PeerOutcome {
    /// Whether and when keepalive tells the program.
    pub fn detected(&self) -> Detected {
        match (self.error, self.after_ms, self.state) {
            (Some(error), Some(after_ms), _) => Detected::After { error, after_ms },
            (_, _, PeerState::Alive) => Detected::NothingToDetect,
            _ => Detected::Never,
        }
    }
}

/// Everything `keepalive explain` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Explanation {
    /// The settings explained.
    pub settings: Settings,
    /// Probes and reset for a silent peer on an idle connection.
    pub silent_peer: ProbeTimeline,
    /// What happens while data is unacknowledged; `None` when the kernel's retransmission
    /// model does not apply (another operating system).
    pub unacked_data: Option<RetransmitTimeout>,
    /// The outcome for each state the peer can be in.
    pub peer_states: Vec<PeerOutcome>,
    /// Middleboxes whose idle timeout is not longer than the idle time: they forget the
    /// connection before probe 1 refreshes it.
    pub middleboxes_outlasted: Vec<Middlebox>,
}

impl Explanation {
    /// Explains `settings` on Linux, with retransmission governed by `kernel`'s
    /// `tcp_retries2`, `tcp_rto_max_ms` and `tcp_rto_min_us`.
    pub fn linux(settings: Settings, kernel: &Defaults) -> Self {
        let unacked = RetransmitTimeout::with_rto_min(
            kernel.retries2,
            kernel.rto_max_ms,
            kernel.rto_min_us,
            settings.user_timeout_ms,
            kernel.tail_loss_probe,
        );
        Explanation {
            unacked_data: Some(unacked),
            ..Self::timer_only(settings)
        }
    }

    /// Explains `settings` on another operating system (keys not set taken from its defaults).
    /// Its keepalive timer is modelled with Linux's rule; retransmission only for Linux itself.
    pub fn for_os(os: &OsDefaults, policy: &Policy) -> Result<Self, PolicyError> {
        let settings = policy.resolve(&os.settings)?;
        Ok(if os.os == "linux" {
            Self::linux(settings, &Defaults::LINUX)
        } else {
            Self::timer_only(settings)
        })
    }

    /// Explains `settings` with the keepalive timer alone, for systems whose retransmission
    /// rules are not modelled here.
    pub fn timer_only(settings: Settings) -> Self {
        let silent_peer = ProbeTimeline::silent_peer(&settings);
        let peer_states = PeerState::ALL
            .into_iter()
            .map(|p| p.outcome(&silent_peer))
            .collect();
        Explanation {
            settings,
            silent_peer,
            unacked_data: None,
            peer_states,
            middleboxes_outlasted: reference::middleboxes_outlasted_by(settings.idle.into())
                .collect(),
        }
    }

    /// The settings explained, in the policy grammar. Settings the grammar refuses (the
    /// `tcp_keepalive_probes` sysctl may hold 255 probes, `TCP_KEEPCNT` only 127) are written
    /// the same way all the same.
    pub fn policy_text(&self) -> String {
        let s = &self.settings;
        if let Ok(policy) = Policy::from_settings(s) {
            return policy.to_string();
        }
        let mut text = format!(
            "idle={}s,interval={}s,count={}",
            s.idle, s.interval, s.count
        );
        let mut user_timeout = Policy::empty();
        if s.user_timeout_ms != 0
            && user_timeout
                .set(Key::UserTimeout, &format!("{}ms", s.user_timeout_ms))
                .is_ok()
        {
            text = format!("{text},{user_timeout}");
        }
        text
    }

    /// The smallest idle timeout among the middleboxes outlasted, in seconds.
    pub fn tightest_middlebox_s(&self) -> Option<u64> {
        self.middleboxes_outlasted
            .iter()
            .map(|m| m.idle_timeout_s)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_explained() {
        let kernel = Defaults::LINUX;
        let e = Explanation::linux(kernel.settings(), &kernel);
        assert_eq!(e.silent_peer.reset_ms, 7_875_000);
        let u = e.unacked_data.unwrap();
        assert_eq!((u.limit_ms, u.first_retransmission_ms), (924_600, 404));
        let rebooted = e
            .peer_states
            .iter()
            .find(|p| p.state == PeerState::Rebooted)
            .unwrap();
        assert_eq!(
            (rebooted.error, rebooted.after_ms),
            (Some("ECONNRESET"), Some(7_200_000))
        );
        assert_eq!(e.tightest_middlebox_s(), Some(60));
        assert_eq!(
            rebooted.detected(),
            Detected::After {
                error: "ECONNRESET",
                after_ms: 7_200_000
            }
        );
    }

    #[test]
    fn a_namespace_rto_floor_reaches_the_retransmission_schedule() {
        // tcp_retries2 5, tcp_rto_min_us 1000: the limit stays tcp_model_timeout(5) from
        // TCP_RTO_MIN (12.6 s), the runs come 8 ms, 16 ms, ... apart from 12 ms (probe at the
        // 4 ms floor, then one 8 ms RTO): the first run past 12.612 s is at 16.38 s. Measured
        // over a veth pair: 17.088 s, the timers each a little late (up to 0.88 s in all).
        let kernel = Defaults {
            retries2: 5,
            rto_min_us: 1000,
            ..Defaults::LINUX
        };
        let e = Explanation::linux(Settings::LINUX_DEFAULT, &kernel);
        let u = e.unacked_data.unwrap();
        assert_eq!(
            (
                u.limit_ms,
                u.first_retransmission_ms,
                u.rto_ms,
                u.give_up_ms
            ),
            (12_600, 12, 8, 16_380)
        );
        assert_eq!((u.retransmissions, u.rto_min_us), (10, 1000));
        let default_floor = Defaults {
            retries2: 5,
            ..Defaults::LINUX
        };
        let u = Explanation::linux(Settings::LINUX_DEFAULT, &default_floor)
            .unacked_data
            .unwrap();
        assert_eq!((u.give_up_ms, u.rto_ms), (13_052, 204));
    }

    #[test]
    fn every_state_is_listed_once_in_order_and_parses_back() {
        let e = Explanation::timer_only(Settings::LINUX_DEFAULT);
        let states: Vec<_> = e.peer_states.iter().map(|p| p.state).collect();
        assert_eq!(states, PeerState::ALL);
        for state in PeerState::ALL {
            assert_eq!(state.to_string().parse(), Ok(state));
        }
        let e = "frozen".parse::<PeerState>().unwrap_err();
        assert!(e.to_string().contains("'frozen'") && e.to_string().contains("hung"));
    }

    #[test]
    fn only_a_hung_peer_goes_unnoticed_for_ever() {
        let e = Explanation::timer_only(Settings::LINUX_DEFAULT);
        let detected = |state| {
            e.peer_states
                .iter()
                .find(|p| p.state == state)
                .unwrap()
                .detected()
        };
        assert_eq!(detected(PeerState::Hung), Detected::Never);
        assert_eq!(detected(PeerState::Alive), Detected::NothingToDetect);
        let timed_out = Detected::After {
            error: "ETIMEDOUT",
            after_ms: e.silent_peer.time_to_detect().as_millis() as u64,
        };
        assert_eq!(detected(PeerState::Crashed), timed_out);
        assert_eq!(detected(PeerState::Unreachable), timed_out);
    }

    #[test]
    fn settings_past_the_grammar_are_still_written_whole() {
        let s = Settings {
            count: 200,
            user_timeout_ms: 90_000,
            ..Settings::LINUX_DEFAULT
        };
        let e = Explanation::timer_only(s);
        assert_eq!(
            e.policy_text(),
            "idle=7200s,interval=75s,count=200,user-timeout=90s"
        );
        let e = Explanation::timer_only(Settings {
            user_timeout_ms: 1500,
            ..s
        });
        assert!(e.policy_text().ends_with(",user-timeout=1500ms"));
        let e = Explanation::timer_only(Settings::LINUX_DEFAULT);
        assert_eq!(e.policy_text(), "idle=7200s,interval=75s,count=9");
    }

    #[test]
    fn short_idle_outlasts_nothing() {
        let e = Explanation::timer_only(Settings {
            idle: 30,
            interval: 10,
            count: 5,
            user_timeout_ms: 0,
        });
        assert!(e.middleboxes_outlasted.is_empty());
        assert_eq!(e.unacked_data, None);
    }
}
