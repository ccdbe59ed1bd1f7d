//! Scenarios: small TOML files in `scenarios/`, each readable on its own, every one compiled
//! in by build.rs (adding a scenario is adding a file), or a user's own (`--scenario-file`).

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

/// How the connection ended, as the server saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// Still open at the end of the run.
    Alive,
    /// The server's read failed with ETIMEDOUT.
    Timeout,
    /// The server's read failed with ECONNRESET.
    Reset,
    /// Open as far as the server knows, but the client's data no longer arrives.
    BlackHole,
    /// The peer closed its end (FIN; the server's read returned 0).
    Closed,
    /// Another error.
    Other,
}

impl Ending {
    /// In words, for a person.
    pub fn words(self) -> &'static str {
        match self {
            Ending::Alive => "still open",
            Ending::Timeout => "ETIMEDOUT",
            Ending::Reset => "ECONNRESET",
            Ending::BlackHole => "a black hole",
            Ending::Closed => "closed by the peer",
            Ending::Other => "another ending",
        }
    }
}

/// The endings the kernel's rules predict, by kind of policy: the scenario file's `[expect]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Keepalive on (with idle below the firewall's timeout, where there is one).
    pub keepalive: Ending,
    /// Keepalive on with idle at or above the firewall's timeout: its first probe finds the
    /// connection forgotten.
    pub idle_over_firewall: Option<Ending>,
    /// Keepalive off (`--no-keepalive`).
    pub no_keepalive: Ending,
    /// Keepalive on with TCP_USER_TIMEOUT set (default: as `keepalive`, or
    /// `idle_over_firewall`).
    pub user_timeout: Option<Ending>,
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
    /// Unanswered heartbeats in a row after which the application declares the peer dead
    /// (default 3).
    pub heartbeat_misses: Option<u32>,
    /// How long after the connection is up the fault comes (default 300ms).
    pub fault_after: Option<String>,
    pub expect: Expect,
}

include!(concat!(env!("OUT_DIR"), "/scenarios.rs"));

/// The scenario `keepalive lab` runs without one named.
pub const DEFAULT: &str = "crash";

impl Scenario {
    /// Every built-in scenario, the default first, then by name.
    pub fn all() -> Vec<Scenario> {
        let default = FILES.iter().filter(|(n, _)| *n == DEFAULT);
        let rest = FILES.iter().filter(|(n, _)| *n != DEFAULT);
        default
            .chain(rest)
            .map(|(name, text)| parse(name, text))
            .collect()
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

    /// How long after the connection is up the fault comes.
    pub fn fault_after(&self) -> std::time::Duration {
        let ms = self.fault_after.as_deref().and_then(parse_duration_ms);
        std::time::Duration::from_millis(ms.unwrap_or(300))
    }

    /// A scenario file of the user's: the same keys as the built-in ones (one line naming the
    /// key and the line on error).
    pub fn from_file(path: &std::path::Path) -> Result<Scenario, String> {
        // Read with a bound: /dev/zero must not hold the lab for ever.
        const LIMIT: u64 = 1 << 20;
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let not_a_file = || {
            format!(
                "{}: not a regular file (a directory, device, FIFO or socket): give a scenario \
                 file",
                path.display()
            )
        };
        // Only a regular file is read, and what is not one is refused before it is opened:
        // opening a FIFO waits for a writer (for ever), and opening a device may act on it.
        // The open is non-blocking in case the name was swapped for a FIFO in between; what
        // was opened is checked again.
        if !std::fs::metadata(path).map_err(fail)?.is_file() {
            return Err(not_a_file());
        }
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(fail)?
        };
        if !file.metadata().map_err(fail)?.is_file() {
            return Err(not_a_file());
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, LIMIT + 1), &mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if text.len() as u64 > LIMIT {
            return Err(format!(
                "{}: larger than a scenario file can be (1 MiB)",
                path.display()
            ));
        }
        let scenario: Scenario = toml::from_str(&text).map_err(|e| {
            let msg = e.message().trim().replace('\n', "; ");
            let at = e.span().map(|s| s.start.min(text.len()));
            match at {
                Some(at) => {
                    let line = text[..at].matches('\n').count() + 1;
                    let key = text[..at]
                        .rsplit('\n')
                        .next()
                        .and_then(|l| l.split('=').next())
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(|k| format!(" ({k})"))
                        .unwrap_or_default();
                    format!("{}, line {line}{key}: {msg}", path.display())
                }
                None => format!("{}: {msg}", path.display()),
            }
        })?;
        scenario.check().map_err(|(key, e)| {
            // The line that sets the key (or the file, for a key that is missing).
            let line = text.lines().position(|l| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            match line {
                Some(n) => format!("{}, line {} ({key}): {e}", path.display(), n + 1),
                None => format!("{} ({key}): {e}", path.display()),
            }
        })?;
        Ok(scenario)
    }

    /// What the types cannot say: values in the grammar, faults the topology can play. An
    /// error names the key it is about.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        keepalive::Policy::parse(&self.policy).map_err(|e| ("policy", e.to_string()))?;
        for (key, value) in [
            ("firewall_timeout", &self.firewall_timeout),
            ("heartbeat", &self.heartbeat),
            ("fault_after", &self.fault_after),
        ] {
            if let Some(v) = value
                && parse_duration_ms(v).is_none()
            {
                return Err((
                    key,
                    format!("\"{v}\": expected a duration such as 5s or 300ms"),
                ));
            }
        }
        if self.topology != Topology::Router {
            if self.fault == Fault::Reject {
                return Err((
                    "fault",
                    "\"reject\" happens in a router (it answers with ICMP): give topology = \"router\""
                        .into(),
                ));
            }
            if self.firewall_timeout.is_some() {
                return Err((
                    "firewall_timeout",
                    "the firewall runs in a router: give topology = \"router\"".into(),
                ));
            }
        }
        if self.fault == Fault::Freeze && self.heartbeat.is_none() {
            return Err((
                "heartbeat",
                "fault \"freeze\" is seen only by a heartbeat: give heartbeat = \"1s\"".into(),
            ));
        }
        Ok(())
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
            // The file's name is the scenario's.
            assert_eq!(Scenario::named(&s.name).unwrap().name, s.name);
            assert!(FILES.iter().any(|(n, _)| *n == s.name), "{}", s.name);
            s.check().unwrap();
        }
        assert_eq!(Scenario::all()[0].name, DEFAULT);
        assert_eq!(
            Scenario::named("firewall").unwrap().firewall_timeout_ms(),
            Some(5000)
        );
    }
}
