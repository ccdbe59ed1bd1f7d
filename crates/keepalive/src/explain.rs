//! What happens to a connection under given keepalive settings, for every state the peer
//! can be in (seed 003's four, plus a hung application), and which middleboxes would forget
//! the connection before the first probe.

use crate::policy::Settings;
use crate::policy::timeline::{ProbeTimeline, RetransmitTimeout};
use crate::policy::{Policy, PolicyError};
use crate::reference::{self, Middlebox, OsDefaults};
use crate::sysctl::Defaults;

/// What a connection's program sees when the peer is in a given state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PeerOutcome {
    /// The peer's state.
    pub state: &'static str,
    /// What the peer does when probed.
    pub peer_does: &'static str,
    /// The error the program gets, or `None` when the connection stays open.
    pub error: Option<&'static str>,
    /// When, counted from the last segment received; `None` when never.
    pub after_ms: Option<u64>,
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
    /// `tcp_retries2` and `tcp_rto_max_ms`.
    pub fn linux(settings: Settings, kernel: &Defaults) -> Self {
        let unacked =
            RetransmitTimeout::new(kernel.retries2, kernel.rto_max_ms, settings.user_timeout_ms);
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
        let detect = Some(silent_peer.reset_ms);
        let peer_states = vec![
            PeerOutcome {
                state: "alive",
                peer_does: "ACKs probe 1; the timer starts over",
                error: None,
                after_ms: None,
            },
            PeerOutcome {
                state: "crashed",
                peer_does: "says nothing: down, powered off, cable pulled",
                error: Some("ETIMEDOUT"),
                after_ms: detect,
            },
            PeerOutcome {
                state: "rebooted",
                peer_does: "lost the connection: answers probe 1 with RST",
                error: Some("ECONNRESET"),
                after_ms: Some(silent_peer.first_probe_ms),
            },
            PeerOutcome {
                state: "unreachable",
                peer_does: "probes lost; ICMP errors about them are ignored",
                error: Some("ETIMEDOUT"),
                after_ms: detect,
            },
            PeerOutcome {
                state: "hung",
                peer_does: "program frozen; its kernel ACKs every probe",
                error: None,
                after_ms: None,
            },
        ];
        Explanation {
            settings,
            silent_peer,
            unacked_data: None,
            peer_states,
            middleboxes_outlasted: reference::middleboxes_outlasted_by(settings.idle.into())
                .collect(),
        }
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
        let kernel = Defaults {
            keepalive_time: 7200,
            keepalive_intvl: 75,
            keepalive_probes: 9,
            retries2: 15,
            rto_max_ms: 120_000,
        };
        let e = Explanation::linux(kernel.settings(), &kernel);
        assert_eq!(e.silent_peer.reset_ms, 7_875_000);
        assert_eq!(e.unacked_data.unwrap().give_up_ms, 924_600);
        let rebooted = e
            .peer_states
            .iter()
            .find(|p| p.state == "rebooted")
            .unwrap();
        assert_eq!(
            (rebooted.error, rebooted.after_ms),
            (Some("ECONNRESET"), Some(7_200_000))
        );
        assert_eq!(e.tightest_middlebox_s(), Some(60));
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
