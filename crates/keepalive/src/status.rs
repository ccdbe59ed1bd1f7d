//! Every TCP connection with its keepalive state: the sock_diag listing, joined with owners,
//! optionally with each socket's true options read through pidfd_getfd, and judged for risk.

use crate::diag::{self, Owner, SocketEntry, TcpState, Verdict};
use crate::error::Error;
use crate::netns::NetNs;
use crate::retrofit::Process;
use crate::socket::{self, SocketKeepalive};
use std::collections::{BTreeMap, HashMap};

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Another network namespace; with `pid` and no `netns`, the process's own is used.
    pub netns: Option<NetNs>,
    /// States to show; empty means every connection (not listening, not TIME_WAIT).
    pub states: Vec<TcpState>,
    /// Only sockets of this process.
    pub pid: Option<u32>,
    /// Only sockets with one of these local or remote ports (none: every port).
    pub ports: Vec<u16>,
    /// Only connections with keepalive off.
    pub no_keepalive: bool,
    /// Find the owning processes.
    pub processes: bool,
    /// Read each socket's options through a duplicate (implies `processes`).
    pub exact: bool,
    /// An established connection idle at least this long with keepalive off is at risk.
    pub risk_idle_ms: u64,
}

/// The default risk threshold: five minutes, below which sit AWS's NAT gateway and NLB
/// (350 s) and Azure's load balancer (240 s) would not be, see docs/middleboxes.tsv.
pub const DEFAULT_RISK_IDLE_MS: u64 = 300_000;

/// One socket in the listing.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Row {
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub socket: SocketEntry,
    /// The processes holding it (with `processes`).
    pub owners: Vec<Owner>,
    /// Its true options (with `exact`, when the owner could be traced).
    pub exact: Option<SocketKeepalive>,
    /// On, off, unknown: from `exact` when known, else from the timer.
    pub keepalive: Verdict,
    /// Established, keepalive off, idle past the threshold.
    pub at_risk: bool,
    /// The cgroup whose keepalive policy covers the socket (`keepalive set --cgroup`), if any.
    pub cgroup_policy: Option<std::path::PathBuf>,
    /// When the next keepalive probe goes out if the peer stays silent, in milliseconds from
    /// now (with `exact`, where idle is known); see [`next_probe_ms`].
    pub next_probe_ms: Option<u64>,
}

/// When `tcp_keepalive_timer()` (net/ipv4/tcp_timer.c) next sends a probe if nothing is
/// received meanwhile. The timer shown by `inet_diag` is not that: when it fires it measures
/// the time since the peer last spoke (`keepalive_time_elapsed()`, the lesser of the times
/// since the last data and the last ACK received, which tcp_info reports), sends a probe only
/// if that reached the idle time, and otherwise re-arms itself for what is left
/// (`keepalive_time_when() - elapsed`). With probes out it fires every interval, each time
/// sending one. So the next probe comes at the later of the timer and `idle - idle_ms`; a
/// connection with traffic moves it on each time.
pub fn next_probe_ms(entry: &SocketEntry, settings: &crate::Settings) -> Option<u64> {
    if entry.timer != diag::Timer::Keepalive || !entry.state.keepalive_applies() {
        return None;
    }
    let timer = u64::from(entry.timer_ms);
    if entry.probes_out > 0 {
        return Some(timer);
    }
    let left = (u64::from(settings.idle) * 1000).saturating_sub(u64::from(entry.idle_ms?));
    Some(timer.max(left))
}

/// A process whose sockets could not be read exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NotTraced {
    pub pid: u32,
    pub command: String,
    pub reason: String,
}

/// Totals over the sockets listed.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Summary {
    pub sockets: usize,
    pub keepalive_on: usize,
    pub keepalive_off: usize,
    pub unknown: usize,
    pub at_risk: usize,
    /// Sockets in a cgroup with a keepalive policy (`keepalive set --cgroup`).
    pub cgroup_policy: usize,
    /// Keepalive probes sent and unanswered, over all sockets.
    pub probes_in_flight: u64,
    /// Sockets whose owner was asked for and not found (its process's descriptors were not
    /// readable, or it exited meanwhile).
    pub owner_unknown: usize,
    /// Processes whose descriptors could not be listed.
    pub unreadable_processes: usize,
    /// With `--pid` (and no namespace named): the process's TCP sockets in other network
    /// namespaces than the one listed (it created them before a setns()).
    pub sockets_elsewhere: usize,
    /// /proc shows a child PID namespace only: owners outside it cannot be found
    /// ([`crate::process::proc_is_a_child_pid_namespace`]).
    pub owners_outside_pid_namespace: bool,
    pub not_traced: Vec<NotTraced>,
}

/// Counts per owning command, for metrics.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// (command, verdict) → connections.
    pub connections: BTreeMap<(String, Verdict), u64>,
    /// command → probes in flight.
    pub probes: BTreeMap<String, u64>,
    /// command → connections at risk.
    pub at_risk: BTreeMap<String, u64>,
}

impl Tally {
    /// Adds one row, under its first owner's command ("" when unknown).
    pub fn add(&mut self, row: &Row) {
        let command = row
            .owners
            .first()
            .map(|o| o.command.clone())
            .unwrap_or_default();
        *self
            .connections
            .entry((command.clone(), row.keepalive))
            .or_default() += 1;
        *self.probes.entry(command.clone()).or_default() += u64::from(row.socket.probes_out);
        *self.at_risk.entry(command).or_default() += u64::from(row.at_risk);
    }
}

/// Lists sockets matching `query`, calling `each` for every one as it arrives from the kernel,
/// and returns the totals.
pub fn status(query: &Query, mut each: impl FnMut(&Row) + Send) -> Result<Summary, Error> {
    let netns = match (&query.netns, query.pid) {
        (Some(ns), _) => Some(ns.clone()),
        (None, Some(pid)) => NetNs::of_pid(pid)?,
        (None, None) => None,
    };
    let want_owners = query.processes || query.exact || query.pid.is_some();
    let owners = if want_owners {
        diag::owners()
    } else {
        diag::Owners::default()
    };
    let mut summary = Summary {
        unreadable_processes: owners.unreadable,
        owners_outside_pid_namespace: want_owners
            && crate::process::proc_is_a_child_pid_namespace(),
        ..Summary::default()
    };
    let states: Vec<TcpState> = if query.states.is_empty() {
        TcpState::connections()
    } else {
        query.states.clone()
    };

    let covered = crate::cgroup::policy::coverage();
    let mut traced: HashMap<u32, Result<Process, String>> = HashMap::new();
    let mut emit = |entry: &SocketEntry| {
        if !query.ports.is_empty()
            && !query
                .ports
                .iter()
                .any(|&p| entry.local.port() == p || entry.peer.port() == p)
        {
            return;
        }
        let holders = owners.holders(entry.inode);
        if let Some(pid) = query.pid
            && !holders.iter().any(|o| o.pid == pid)
        {
            return;
        }
        let exact = if query.exact {
            read_exact(entry.inode, &holders, &mut traced, &mut summary)
        } else {
            None
        };
        let keepalive = match (exact, entry.state.keepalive_applies()) {
            (Some(e), true) => {
                if e.enabled {
                    Verdict::On
                } else {
                    Verdict::Off
                }
            }
            _ => entry.verdict(),
        };
        if query.no_keepalive && keepalive != Verdict::Off {
            return;
        }
        let at_risk = entry.state == TcpState::Established
            && keepalive == Verdict::Off
            && entry
                .idle_ms
                .is_some_and(|ms| u64::from(ms) >= query.risk_idle_ms);
        let next_probe_ms = exact
            .as_ref()
            .filter(|k| k.enabled)
            .and_then(|k| next_probe_ms(entry, &k.settings));
        let row = Row {
            socket: entry.clone(),
            owners: holders,
            exact,
            keepalive,
            at_risk,
            cgroup_policy: entry.cgroup_id.and_then(|id| covered.get(&id).cloned()),
            next_probe_ms,
        };
        summary.sockets += 1;
        match keepalive {
            Verdict::On => summary.keepalive_on += 1,
            Verdict::Off => summary.keepalive_off += 1,
            Verdict::Unknown => summary.unknown += 1,
            Verdict::NotApplicable => {}
        }
        summary.at_risk += usize::from(at_risk);
        summary.cgroup_policy += usize::from(row.cgroup_policy.is_some());
        summary.owner_unknown +=
            usize::from(want_owners && row.owners.is_empty() && entry.inode != 0);
        summary.probes_in_flight += u64::from(entry.probes_out);
        each(&row);
    };
    diag::for_each_socket(netns.as_ref(), &states, &mut emit)?;
    if let Some(pid) = query.pid {
        // The namespace listed: the one named, or the process's own.
        let listed = match &query.netns {
            Some(ns) => ns.inode(),
            None => {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .ok()
                    .map(|m| m.ino())
            }
        };
        if let Some(ino) = listed {
            summary.sockets_elsewhere = crate::retrofit::sockets_outside(pid, ino).unwrap_or(0);
        }
    }
    Ok(summary)
}

/// The true options of the socket with `inode`, through the first owner we may trace. The
/// descriptor number comes from the /proc scan, and a process may have put another socket on
/// it since: the duplicate counts only when it is that socket (fstat's inode).
fn read_exact(
    inode: u32,
    holders: &[Owner],
    traced: &mut HashMap<u32, Result<Process, String>>,
    summary: &mut Summary,
) -> Option<SocketKeepalive> {
    for owner in holders {
        let process = traced
            .entry(owner.pid)
            .or_insert_with(|| Process::open(owner.pid).map_err(|e| e.to_string()));
        let Ok(process) = process else { continue };
        match process.duplicate(owner.fd) {
            Ok(Some(dup)) => {
                if rustix::fs::fstat(&dup).is_ok_and(|st| st.st_ino == u64::from(inode)) {
                    return socket::read(&dup).ok();
                }
                continue;
            }
            Ok(None) => continue,
            Err(e) => {
                if !summary.not_traced.iter().any(|n| n.pid == owner.pid) {
                    summary.not_traced.push(NotTraced {
                        pid: owner.pid,
                        command: owner.command.clone(),
                        reason: e.to_string(),
                    });
                }
                traced.insert(owner.pid, Err(e.to_string()));
            }
        }
    }
    None
}
