//! Sourced reference tables, kept as data in `docs/` so that every row carries its source:
//! middleboxes that forget idle connections, and other systems' keepalive defaults.

use crate::policy::Settings;

const MIDDLEBOXES: &str = include_str!("../../../docs/middleboxes.tsv");
const OS_DEFAULTS: &str = include_str!("../../../docs/os-defaults.tsv");

/// A device or service that drops a TCP connection's state after it has been idle for a while,
/// silently: the next packet from either side is dropped or answered with RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Middlebox {
    /// Short name for flags such as `--behind aws-alb`.
    pub id: &'static str,
    /// What it is.
    pub name: &'static str,
    /// Which connection it forgets.
    pub layer: Layer,
    /// Its default idle timeout in seconds.
    pub idle_timeout_s: u64,
    /// Whether and how the timeout can be changed.
    pub adjustable: &'static str,
    /// Where the number comes from.
    pub source: &'static str,
}

/// Where a middlebox sits, which decides what keeps a connection through it alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Layer {
    /// A NAT, firewall or layer-4 load balancer: it keeps state for the TCP connection that
    /// passes through it, and every segment refreshes it (a keepalive probe and its ACK
    /// included), so TCP keepalive below its timeout keeps the connection.
    Transport,
    /// A proxy that ends the client's TCP connection and keeps its own to the server: its idle
    /// timer counts requests and data, so only traffic keeps a connection, and toward the
    /// server the rule is that the server must wait longer than the proxy before closing an
    /// idle connection (else the proxy sends a request down a connection being closed).
    Application,
}

/// Keepalive defaults of an operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OsDefaults {
    /// `linux`, `freebsd`, `macos` or `windows`.
    pub os: &'static str,
    /// The defaults, in Linux's terms.
    pub settings: Settings,
    /// Where the numbers come from.
    pub source: &'static str,
    /// How that system exposes them.
    pub note: &'static str,
}

fn rows(table: &'static str) -> impl Iterator<Item = Vec<&'static str>> {
    table
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
}

/// Every middlebox in `docs/middleboxes.tsv`, in file order.
pub fn middleboxes() -> impl Iterator<Item = Middlebox> {
    rows(MIDDLEBOXES).filter_map(|c| match c[..] {
        [id, name, layer, secs, adjustable, source] => Some(Middlebox {
            id,
            name,
            layer: match layer {
                "transport" => Layer::Transport,
                "application" => Layer::Application,
                _ => return None,
            },
            idle_timeout_s: secs.parse().ok()?,
            adjustable,
            source,
        }),
        _ => None,
    })
}

/// The middlebox with this id.
pub fn middlebox(id: &str) -> Option<Middlebox> {
    middleboxes().find(|m| m.id == id)
}

/// The middleboxes that would forget a connection before a keepalive probe sent after `idle_s`
/// seconds of silence reaches them. A probe sent exactly at the timeout races the expiry, so
/// equal counts as too late.
pub fn middleboxes_outlasted_by(idle_s: u64) -> impl Iterator<Item = Middlebox> {
    middleboxes().filter(move |m| idle_s >= m.idle_timeout_s)
}

/// Every row of `docs/os-defaults.tsv`, in file order.
pub fn os_defaults() -> impl Iterator<Item = OsDefaults> {
    rows(OS_DEFAULTS).filter_map(|c| match c[..] {
        [os, idle, interval, count, source, note] => Some(OsDefaults {
            os,
            settings: Settings {
                idle: idle.parse().ok()?,
                interval: interval.parse().ok()?,
                count: count.parse().ok()?,
                user_timeout_ms: 0,
            },
            source,
            note,
        }),
        _ => None,
    })
}

/// The defaults of one operating system.
pub fn os_default(os: &str) -> Option<OsDefaults> {
    os_defaults().find(|o| o.os == os)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_data_row_parses_and_has_a_source() {
        assert_eq!(middleboxes().count(), rows(MIDDLEBOXES).count());
        assert_eq!(os_defaults().count(), rows(OS_DEFAULTS).count());
        for m in middleboxes() {
            assert!(!m.source.is_empty() && m.idle_timeout_s > 0, "{m:?}");
        }
        for o in os_defaults() {
            assert!(!o.source.is_empty(), "{o:?}");
        }
    }

    #[test]
    fn the_rows_the_issue_names() {
        let secs = |id| middlebox(id).unwrap().idle_timeout_s;
        assert_eq!(secs("linux-conntrack"), 5 * 86400);
        assert_eq!(secs("aws-nlb"), 350);
        assert_eq!(secs("aws-nat-gateway"), 350);
        assert_eq!(secs("azure-lb"), 240);
        assert_eq!(secs("gcp-cloud-nat"), 1200);
        assert_eq!(secs("rfc5382"), 2 * 3600 + 4 * 60);
        assert_eq!(
            os_default("linux").unwrap().settings,
            Settings::LINUX_DEFAULT
        );
        assert_eq!(os_default("windows").unwrap().settings.interval, 1);
    }

    #[test]
    fn outlasted_compares_idle_with_each_timeout() {
        let ids: Vec<_> = middleboxes_outlasted_by(7200).map(|m| m.id).collect();
        assert!(ids.contains(&"aws-nlb") && ids.contains(&"gcp-cloud-nat"));
        assert!(!ids.contains(&"rfc5382") && !ids.contains(&"linux-conntrack"));
        assert_eq!(middleboxes_outlasted_by(59).count(), 0);
        assert_eq!(
            middleboxes_outlasted_by(60)
                .map(|m| m.id)
                .collect::<Vec<_>>(),
            ["aws-alb", "nginx-upstream"]
        );
        assert_eq!(middlebox("aws-alb").unwrap().layer, Layer::Application);
        assert_eq!(middlebox("aws-nlb").unwrap().layer, Layer::Transport);
    }
}
