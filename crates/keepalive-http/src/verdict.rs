//! What the measurements mean for a client pool and for the middlebox in front of the server.

use crate::{Http2, Idle, Report};
use keepalive::reference::{Layer, Middlebox};

/// The shortest pool idle timeout advised, in seconds. Below it a margin cannot be kept: a
/// pool's idle timer runs on its own schedule (many check in whole seconds or coarser), and
/// a reused connection's request still needs its trip to the server, which must arrive before
/// the server's own timer fires.
pub const MIN_POOL_IDLE_S: f64 = 1.0;

/// How long a client should keep an idle connection for reuse.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "advice", rename_all = "kebab-case")]
pub enum Pool {
    /// Keep idle connections for less than `below_s`: the server's timeout less a tenth of it,
    /// and at least a second.
    Below {
        version: &'static str,
        below_s: f64,
        timeout_s: f64,
    },
    /// The server's timeout leaves no safe margin above [`MIN_POOL_IDLE_S`]: do not reuse
    /// idle connections (or retry idempotent requests on a fresh one), or raise the timeout.
    TooShort {
        version: &'static str,
        timeout_s: f64,
    },
}

/// The pool advice for a version's idle result.
pub fn pool(version: &'static str, idle: &Idle) -> Option<Pool> {
    let timeout_s = idle.timeout_s()?;
    let below_s = timeout_s - (timeout_s * 0.1).max(1.0);
    Some(if below_s < MIN_POOL_IDLE_S {
        Pool::TooShort { version, timeout_s }
    } else {
        Pool::Below {
            version,
            below_s,
            timeout_s,
        }
    })
}

/// Every version's pool advice.
pub fn pools(report: &Report) -> Vec<Pool> {
    let mut out = Vec::new();
    if let Some(h1) = &report.http1
        && h1.persistent
    {
        out.extend(pool("HTTP/1.1", &h1.idle));
    }
    if let Some(Http2::Measured(h2)) = &report.http2 {
        out.extend(pool("HTTP/2", &h2.idle));
    }
    out
}

/// How a finding about a middlebox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// Connections will break.
    Warning,
    /// The run ended before it could tell.
    Inconclusive,
    /// What to do on the path, whatever the server does.
    Advice,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub level: Level,
    pub text: String,
    /// A keepalive policy that keeps connections through the middlebox, for `keepalive run`,
    /// `sysctl set` and `set --pid`.
    pub policy: Option<String>,
}

/// What the measurement means behind `middlebox`.
///
/// - A proxy (layer 7) keeps its own idle connections to the server and reuses them: the
///   server must wait longer than the proxy before closing one, or the proxy sends a request
///   down a connection being closed (502s, resets).
/// - A NAT, firewall or layer-4 balancer forgets a connection idle longer than its timeout,
///   silently: the path must carry traffic, or TCP keepalive probes, more often than that, and
///   a server that keeps idle connections longer than the device remembers them holds
///   connections that are already dead in the middle.
pub fn behind(report: &Report, middlebox: &Middlebox) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut versions: Vec<(&str, &Idle)> = Vec::new();
    if let Some(h1) = &report.http1 {
        versions.push(("HTTP/1.1", &h1.idle));
    }
    if let Some(Http2::Measured(h2)) = &report.http2 {
        versions.push(("HTTP/2", &h2.idle));
    }
    let (name, limit) = (middlebox.name, middlebox.idle_timeout_s as f64);
    let wait_more = format!("--max-wait {}s", middlebox.idle_timeout_s + 10);
    let mut path_needs_keepalive = false;
    for (version, idle) in versions {
        let finding = match (middlebox.layer, idle) {
            // A device that only forwards connections has nothing to keep between requests.
            (Layer::Transport, Idle::NotPersistent) => None,
            (Layer::Application, Idle::NotPersistent) => Some((
                Level::Warning,
                format!(
                    "{version}: the server closes every connection: {name} opens a new one per \
                     request"
                ),
            )),
            (Layer::Application, Idle::Closed { after_s, .. }) if *after_s <= limit => Some((
                Level::Warning,
                format!(
                    "{version}: the server closes idle connections after {after_s:.1}s, not later \
                     than {name} ({limit:.0}s): it will send a request down a connection the \
                     server is closing (502s, resets); set the server's idle timeout above \
                     {limit:.0}s"
                ),
            )),
            (Layer::Application, Idle::NotClosed { waited_s }) if *waited_s <= limit => Some((
                Level::Inconclusive,
                format!(
                    "{version}: the server kept the idle connection for the {waited_s:.0}s the run \
                     waited, which says nothing about {name}'s {limit:.0}s: run again with \
                     {wait_more}"
                ),
            )),
            (Layer::Application, _) => None,
            (Layer::Transport, Idle::Closed { after_s, .. }) if *after_s >= limit => {
                path_needs_keepalive = true;
                Some((
                    Level::Warning,
                    format!(
                        "{version}: the server keeps idle connections for {after_s:.1}s, longer \
                         than {name} remembers them ({limit:.0}s): one idle for longer is dead in \
                         {name} while both ends think it open, and its next request hangs or is \
                         reset"
                    ),
                ))
            }
            (Layer::Transport, Idle::NotClosed { waited_s }) if *waited_s > limit => {
                path_needs_keepalive = true;
                Some((
                    Level::Warning,
                    format!(
                        "{version}: the server kept an idle connection for more than \
                         {waited_s:.0}s, longer than {name} remembers it ({limit:.0}s): one idle \
                         for longer is dead in {name} while both ends think it open"
                    ),
                ))
            }
            (Layer::Transport, Idle::NotClosed { waited_s }) => {
                path_needs_keepalive = true;
                Some((
                    Level::Inconclusive,
                    format!(
                        "{version}: the run ended after {waited_s:.0}s, before {name}'s \
                         {limit:.0}s: whether the server closes idle connections before {name} \
                         forgets them is unknown; run again with {wait_more}"
                    ),
                ))
            }
            // The server closes idle connections before the device forgets them.
            (Layer::Transport, Idle::Closed { .. }) => None,
        };
        if let Some((level, text)) = finding {
            out.push(Finding {
                level,
                text,
                policy: None,
            });
        }
    }
    if path_needs_keepalive {
        let policy = keepalive::advice::through(middlebox.idle_timeout_s).map(|p| p.to_string());
        let text = match &policy {
            Some(p) => format!(
                "connections through {name} need traffic, or TCP keepalive probes, more often \
                 than every {limit:.0}s: keepalive policy {p} (keepalive run '{p}' -- CLIENT, \
                 or keepalive sysctl set '{p}' on both ends)"
            ),
            None => format!(
                "{name} forgets idle connections within {limit:.0}s, too soon for TCP keepalive: \
                 an application heartbeat is needed"
            ),
        };
        out.push(Finding {
            level: Level::Advice,
            text,
            policy,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Close, CountEnd, Http1};

    fn report(idle: Idle) -> Report {
        Report {
            url: "http://h/".into(),
            max_wait_s: 120.0,
            http1: Some(Http1 {
                status: 200,
                version: "HTTP/1.1".into(),
                persistent: !matches!(idle, Idle::NotPersistent),
                connection_header: None,
                keep_alive_header: None,
                advertised_timeout_s: None,
                advertised_max: None,
                idle,
                idle_spread: None,
                requests_served: 10,
                requests_ended_by: CountEnd::Limit,
                count_error: None,
                counting_s: 0.01,
                connections_used: 2,
                disagreements: vec![],
            }),
            http1_error: None,
            http2: None,
        }
    }

    fn closed(after_s: f64) -> Idle {
        Idle::Closed {
            after_s,
            by: Close::Fin,
        }
    }

    fn levels(findings: &[Finding]) -> Vec<Level> {
        findings.iter().map(|f| f.level).collect()
    }

    #[test]
    fn layer_4_devices_want_traffic_more_often_than_their_timeout() {
        let nlb = keepalive::reference::middlebox("aws-nlb").unwrap();
        // The server outlasts the NLB: warned, and the path gets a policy.
        let f = behind(&report(closed(400.0)), &nlb);
        assert_eq!(levels(&f), [Level::Warning, Level::Advice]);
        assert!(
            f[0].text.contains("longer than AWS Network Load Balancer"),
            "{f:?}"
        );
        assert_eq!(
            f[1].policy.as_deref(),
            Some("idle=280s,interval=28s,count=3")
        );
        assert!(!f.iter().any(|f| f.text.contains("above")), "{f:?}");
        // Closes first: nothing to say.
        assert!(behind(&report(closed(60.0)), &nlb).is_empty());
        // Not closed within a wait past the timeout: outlasts it; within a shorter one: unknown.
        let f = behind(&report(Idle::NotClosed { waited_s: 400.0 }), &nlb);
        assert_eq!(levels(&f), [Level::Warning, Level::Advice]);
        let f = behind(&report(Idle::NotClosed { waited_s: 30.0 }), &nlb);
        assert_eq!(levels(&f), [Level::Inconclusive, Level::Advice]);
        assert!(f[0].text.contains("--max-wait 360s"), "{f:?}");
    }

    #[test]
    fn layer_7_proxies_want_the_server_to_wait_longer() {
        let alb = keepalive::reference::middlebox("aws-alb").unwrap();
        let f = behind(&report(closed(5.0)), &alb);
        assert_eq!(levels(&f), [Level::Warning]);
        assert!(f[0].text.contains("above 60s"), "{f:?}");
        assert!(behind(&report(closed(75.0)), &alb).is_empty());
        let f = behind(&report(Idle::NotClosed { waited_s: 10.0 }), &alb);
        assert_eq!(levels(&f), [Level::Inconclusive]);
        assert!(behind(&report(Idle::NotClosed { waited_s: 90.0 }), &alb).is_empty());
        let f = behind(&report(Idle::NotPersistent), &alb);
        assert!(f[0].text.contains("new one per request"), "{f:?}");
        // A NAT or layer-4 balancer opens nothing: short connections are no matter to it.
        let nlb = keepalive::reference::middlebox("aws-nlb").unwrap();
        assert!(behind(&report(Idle::NotPersistent), &nlb).is_empty());
    }

    #[test]
    fn pool_advice_has_a_floor() {
        let p = |t| pool("HTTP/1.1", &closed(t)).unwrap();
        assert_eq!(
            p(75.0),
            Pool::Below {
                version: "HTTP/1.1",
                below_s: 67.5,
                timeout_s: 75.0
            }
        );
        assert!(matches!(p(5.0), Pool::Below { below_s, .. } if below_s == 4.0));
        assert!(matches!(p(2.0), Pool::Below { below_s, .. } if below_s == 1.0));
        assert!(matches!(p(1.5), Pool::TooShort { .. }));
        assert!(matches!(p(0.5), Pool::TooShort { .. }));
        assert_eq!(pool("HTTP/1.1", &Idle::NotPersistent), None);
    }
}
