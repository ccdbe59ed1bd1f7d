//! Scenarios: small TOML files in `scenarios/`, each readable on its own, compiled in.

use keepalive::policy::grammar::parse_duration_ms;
use serde::Deserialize;

/// How the hosts are wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Client and server on one veth pair.
    Pair,
    /// Client, router, server: two veth pairs and a forwarding namespace between.
    Router,
}

/// What happens to the peer once the connection is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// Nothing.
    None,
    /// The client's namespace drops every packet in and out.
    Silence,
    /// The client's socket vanishes without a word (RST dropped), then its host answers again.
    Reboot,
    /// The router answers packets for the client with ICMP host unreachable.
    Reject,
    /// The client's program stops answering its application's heartbeat.
    Freeze,
}

/// One scenario, as its file says.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub summary: String,
    /// Which seed article describes it.
    pub seed: String,
    pub topology: Topology,
    pub fault: Fault,
    /// The policy used when the command line gives none.
    pub policy: String,
    /// A conntrack idle timeout in the router (`firewall`).
    pub firewall_timeout: Option<String>,
    /// `net.ipv4.tcp_retries2` in the server's namespace.
    pub retries2: Option<u32>,
    /// The server sends data after the fault, so it is unacknowledged.
    #[serde(default)]
    pub send_after_fault: bool,
    /// The server's application heartbeat interval.
    pub heartbeat: Option<String>,
}

const FILES: [(&str, &str); 7] = [
    ("crash", include_str!("../scenarios/crash.toml")),
    ("alive", include_str!("../scenarios/alive.toml")),
    ("reboot", include_str!("../scenarios/reboot.toml")),
    ("unreachable", include_str!("../scenarios/unreachable.toml")),
    ("firewall", include_str!("../scenarios/firewall.toml")),
    ("busy", include_str!("../scenarios/busy.toml")),
    ("hung", include_str!("../scenarios/hung.toml")),
];

/// The scenario `keepalive lab` runs without one named.
pub const DEFAULT: &str = "crash";

impl Scenario {
    /// Every built-in scenario, the default first.
    pub fn all() -> Vec<Scenario> {
        FILES.iter().map(|(name, text)| parse(name, text)).collect()
    }

    /// The scenario called `name`.
    pub fn named(name: &str) -> Option<Scenario> {
        FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| parse(n, text))
    }

    /// The firewall's conntrack timeout in milliseconds.
    pub fn firewall_timeout_ms(&self) -> Option<u64> {
        self.firewall_timeout.as_deref().and_then(parse_duration_ms)
    }

    /// The heartbeat interval in milliseconds.
    pub fn heartbeat_ms(&self) -> Option<u64> {
        self.heartbeat.as_deref().and_then(parse_duration_ms)
    }
}

/// The built-in files are part of the build; a broken one is a bug the tests catch.
fn parse(name: &str, text: &str) -> Scenario {
    match toml::from_str(text) {
        Ok(s) => s,
        Err(e) => panic!("scenarios/{name}.toml: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_parses_and_names_itself() {
        for s in Scenario::all() {
            assert_eq!(Scenario::named(&s.name).unwrap().name, s.name);
            keepalive::Policy::parse(&s.policy).unwrap();
        }
        assert_eq!(Scenario::all()[0].name, DEFAULT);
        assert_eq!(
            Scenario::named("firewall").unwrap().firewall_timeout_ms(),
            Some(5000)
        );
    }
}
