//! The build stage: the scenario's hosts and links, the server's sysctls, the router's
//! firewall.

use crate::LabError;
use crate::scenario::{Scenario, Topology};
use crate::topology::{self, Net};

/// Builds the scenario's network; returns it with the firewall's idle timeout in seconds,
/// when it has one.
pub(crate) fn build(scenario: &Scenario) -> Result<(Net, Option<u64>), LabError> {
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
    let mut firewall = None;
    if let (Some(router), Some(timeout_ms)) = (&net.router, scenario.firewall_timeout_ms()) {
        // Forward only what conntrack knows; a connection it forgot is invalid, and dropped.
        router.nft(
            "table inet lab {\n chain forward {\n  type filter hook forward priority 0; policy drop;\n  \
             ct state established,related accept\n  ct state new tcp flags & (syn | ack | fin | rst) == syn accept\n  \
             ct state invalid drop\n }\n}\n",
        )?;
        // Loose tracking would pick a forgotten connection up again from its next segment.
        router.sysctl("net.netfilter.nf_conntrack_tcp_loose", "0")?;
        let timeout_s = (timeout_ms / 1000).max(1);
        router.sysctl(
            "net.netfilter.nf_conntrack_tcp_timeout_established",
            &timeout_s.to_string(),
        )?;
        firewall = Some(timeout_s);
    }
    Ok((net, firewall))
}
