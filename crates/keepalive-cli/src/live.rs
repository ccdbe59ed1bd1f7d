//! `keepalive status`, `get --pid` and `set --pid`: live connections, rendered.

use crate::UsageError;
use crate::cli::{GetArgs, SetArgs, StatusArgs};
use crate::render::{duration_ms, json};
use keepalive::diag::{TcpState, Timer, Verdict};
use keepalive::netns::NetNs;
use keepalive::policy::grammar::parse_duration_ms;
use keepalive::retrofit::{self, ProcessSocket, Selection};
use keepalive::socket::SocketKeepalive;
use keepalive::status::{self, Query, Row, Summary, Tally};
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;

fn query(args: &StatusArgs) -> anyhow::Result<Query> {
    let risk_idle_ms = parse_duration_ms(&args.idle_over).ok_or_else(|| {
        UsageError::err(format!(
            "--idle-over {}: expected a duration such as 300s or 5m",
            args.idle_over
        ))
    })?;
    let mut states = Vec::new();
    for name in &args.state {
        states.push(TcpState::parse(name).ok_or_else(|| {
            UsageError::err(format!(
                "--state {name}: not a TCP state; use established, syn-sent, syn-recv, fin-wait-1, \
                 fin-wait-2, time-wait, close-wait, last-ack, listening, closing"
            ))
        })?);
    }
    if args.listening {
        states.push(TcpState::Listen);
    }
    Ok(Query {
        netns: args.netns.as_deref().map(NetNs::named).transpose()?,
        states,
        pid: args.pid,
        port: args.port,
        no_keepalive: args.no_keepalive,
        processes: args.processes || args.prometheus.is_some(),
        exact: args.exact,
        risk_idle_ms,
    })
}

pub fn status(args: &StatusArgs) -> anyhow::Result<()> {
    let query = query(args)?;
    if let Some(path) = &args.prometheus {
        return prometheus(&query, path);
    }
    if args.json {
        return status_json(&query);
    }
    let mut left = args.iterations;
    loop {
        let mut out = String::new();
        if args.watch.is_some() {
            out.push_str("\x1b[H\x1b[2J");
        }
        let _ = writeln!(
            out,
            "{:<11} {:<21} {:<21} {:<16} {:<12} {:>5}  PROCESS",
            "STATE", "LOCAL", "PEER", "KEEPALIVE", "TIMER", "IDLE"
        );
        // Stdout itself (Send) behind a buffer: the listing may run on a namespace's thread.
        let mut lock = std::io::BufWriter::new(std::io::stdout());
        lock.write_all(out.as_bytes())?;
        let summary = status::status(&query, |row| {
            let _ = writeln!(lock, "{}", human_row(row, query.processes || query.exact));
        })?;
        writeln!(lock, "{}", human_summary(&summary, &args.idle_over))?;
        if summary.owner_unknown > 0 {
            writeln!(
                lock,
                "owner unknown for {} sockets: the descriptors of {} processes were not readable \
                 (another user's processes need CAP_SYS_PTRACE)",
                summary.owner_unknown, summary.unreadable_processes
            )?;
        }
        for n in &summary.not_traced {
            writeln!(
                lock,
                "not traced: pid {} ({}): {}",
                n.pid, n.command, n.reason
            )?;
        }
        lock.flush()?;
        drop(lock);
        let Some(every) = args.watch else {
            return Ok(());
        };
        if let Some(n) = left.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                return Ok(());
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(every.max(1)));
    }
}

/// Whole seconds past ten, tenths below.
fn short(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        duration_ms(ms / 1000 * 1000)
    }
}

fn addr(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some() => {
            format!(
                "{}:{}",
                v6.ip()
                    .to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                v6.port()
            )
        }
        a => a.to_string(),
    }
}

pub fn values(k: &SocketKeepalive) -> String {
    let s = &k.settings;
    let mut text = format!(
        "{}/{}/{}",
        short(u64::from(s.idle) * 1000),
        short(u64::from(s.interval) * 1000),
        s.count
    );
    if s.user_timeout_ms != 0 {
        let _ = write!(text, " ut={}", short(s.user_timeout_ms.into()));
    }
    text
}

fn human_row(row: &Row, with_owner: bool) -> String {
    let e = &row.socket;
    let keepalive = match (&row.exact, row.keepalive) {
        (Some(k), Verdict::On) => format!("on {}", values(k)),
        (Some(k), Verdict::NotApplicable) if k.enabled => format!("set {}", values(k)),
        (_, v) => v.name().to_owned(),
    };
    let timer = match e.timer {
        Timer::None => "-".to_owned(),
        Timer::Keepalive if e.probes_out > 0 => {
            format!("{} out, {}", e.probes_out, short(e.timer_ms.into()))
        }
        Timer::Keepalive => format!("probe in {}", short(e.timer_ms.into())),
        Timer::Retransmit => format!("retrans {}", short(e.timer_ms.into())),
        Timer::ZeroWindowProbe => format!("0-window {}", short(e.timer_ms.into())),
        Timer::TimeWait => format!("time-wait {}", short(e.timer_ms.into())),
    };
    let idle = e.idle_ms.map_or("-".to_owned(), |ms| short(ms.into()));
    let owner = if with_owner {
        row.owners
            .iter()
            .map(|o| format!("{}/{}", o.command, o.pid))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        String::new()
    };
    let risk = if row.at_risk { "  AT RISK" } else { "" };
    let risk = if row.cgroup_policy.is_some() {
        format!("{risk}  cgroup policy")
    } else {
        risk.to_owned()
    };
    format!(
        "{:<11} {:<21} {:<21} {:<16} {:<12} {:>5}  {owner}{risk}",
        e.state.name(),
        addr(&e.local),
        addr(&e.peer),
        keepalive,
        timer,
        idle
    )
}

fn human_summary(s: &Summary, idle_over: &str) -> String {
    let plural = if s.sockets == 1 { "" } else { "s" };
    let hidden = if s.unknown > 0 {
        " (a retransmission hides the timer)"
    } else {
        ""
    };
    let covered = if s.cgroup_policy > 0 {
        format!(
            "; {} in a cgroup with a keepalive policy (keepalive get --cgroup-of PID shows it)",
            s.cgroup_policy
        )
    } else {
        String::new()
    };
    format!(
        "{} socket{plural}: keepalive on {}, off {}, unknown {}{hidden}; \
         {} at risk (established, keepalive off, idle over {idle_over}){covered}",
        s.sockets, s.keepalive_on, s.keepalive_off, s.unknown, s.at_risk
    )
}

/// `{"sockets": [...], "summary": {...}}`, written as the rows arrive.
fn status_json(query: &Query) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    out.write_all(b"{\"sockets\":[")?;
    let mut first = true;
    let mut failed: Option<std::io::Error> = None;
    let summary = status::status(query, |row| {
        let sep: &[u8] = if first { b"\n" } else { b",\n" };
        first = false;
        let written = out
            .write_all(sep)
            .and_then(|()| serde_json::to_writer(&mut out, row).map_err(std::io::Error::other));
        if let Err(e) = written {
            failed.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    out.write_all(b"\n],\"summary\":")?;
    serde_json::to_writer(&mut out, &summary)?;
    out.write_all(b"}\n")?;
    out.flush()?;
    Ok(())
}

/// node-exporter textfile metrics, replaced whole (keepalive::output: mode 0644, never through
/// a planted name).
fn prometheus(query: &Query, path: &std::path::Path) -> anyhow::Result<()> {
    let mut tally = Tally::default();
    let summary = status::status(query, |row| tally.add(row))?;
    // The text format's label values escape backslash, double quote and line feed.
    let label = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut text = String::new();
    text.push_str(
        "# HELP keepalive_tcp_connections TCP connections by owning command and keepalive state.\n",
    );
    text.push_str("# TYPE keepalive_tcp_connections gauge\n");
    for ((command, verdict), n) in &tally.connections {
        if *verdict != Verdict::NotApplicable {
            let _ = writeln!(
                text,
                "keepalive_tcp_connections{{command=\"{}\",keepalive=\"{}\"}} {n}",
                label(command),
                verdict.name()
            );
        }
    }
    text.push_str(
        "# HELP keepalive_tcp_probes_in_flight Keepalive probes sent and not yet answered.\n",
    );
    text.push_str("# TYPE keepalive_tcp_probes_in_flight gauge\n");
    for (command, n) in &tally.probes {
        let _ = writeln!(
            text,
            "keepalive_tcp_probes_in_flight{{command=\"{}\"}} {n}",
            label(command)
        );
    }
    text.push_str("# HELP keepalive_tcp_connections_at_risk Established connections idle past the threshold with keepalive off.\n");
    text.push_str("# TYPE keepalive_tcp_connections_at_risk gauge\n");
    for (command, n) in &tally.at_risk {
        let _ = writeln!(
            text,
            "keepalive_tcp_connections_at_risk{{command=\"{}\"}} {n}",
            label(command)
        );
    }
    keepalive::output::Pending::create(path)?.finish(text.as_bytes())?;
    crate::render::note(&format!(
        "wrote {} ({} sockets)\n",
        path.display(),
        summary.sockets
    ));
    Ok(())
}

fn socket_line(s: &ProcessSocket) -> String {
    let local = s.local.as_ref().map_or("-".into(), addr);
    let peer = if s.listening {
        "(listening)".into()
    } else {
        s.peer.as_ref().map_or("-".into(), addr)
    };
    format!("fd {:<4} {:<22} {:<22}", s.fd, local, peer)
}

fn state(k: &SocketKeepalive) -> String {
    format!("{} {}", if k.enabled { "on " } else { "off" }, values(k))
}

pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    let Some(pid) = args.pid else {
        return crate::cgroup::get(&args.target, args.json);
    };
    let sockets = retrofit::sockets(pid)?;
    if args.json {
        return json(&sockets);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{:<7} {:<22} {:<22} KEEPALIVE idle/interval/count",
        "FD", "LOCAL", "PEER"
    )?;
    for s in &sockets {
        writeln!(out, "{} {}", socket_line(s), state(&s.keepalive))?;
    }
    writeln!(out, "{} TCP sockets in pid {pid}", sockets.len())?;
    out.flush()?;
    Ok(())
}

pub fn set(args: &SetArgs) -> anyhow::Result<()> {
    let policy = args.policy.to_policy(None)?;
    let Some(pid) = args.pid else {
        return crate::cgroup::set(args, &policy);
    };
    if policy.is_empty() {
        return Err(UsageError::err(
            "nothing to set: give --idle, --interval, --count, --user-timeout or --policy",
        ));
    }
    if args.force {
        return Err(UsageError::err(
            "--force needs --cgroup or --cgroup-of: with --pid the program's own setsockopt calls always win",
        ));
    }
    let selection = match (args.fd, args.all) {
        (Some(fd), _) => Selection::Fd(fd),
        (None, true) => Selection::All,
        (None, false) => {
            return Err(UsageError::err(
                "--pid needs --fd N (one socket) or --all (every TCP socket of the process)",
            ));
        }
    };
    let report = retrofit::apply(pid, selection, &policy, args.dry_run)?;
    let changes = &report.changes;
    if args.json {
        json(&report)?;
    } else {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for c in changes {
            let after = match (&c.after, &c.skipped) {
                (Some(after), _) => format!("-> {}", state(after)),
                (None, Some(why)) if args.dry_run => format!("(would set {policy}; {why})"),
                (None, Some(why)) => format!("unchanged: {why}"),
                (None, None) => "unchanged".into(),
            };
            writeln!(
                out,
                "{} {} {after}",
                socket_line(&c.socket),
                state(&c.socket.keepalive)
            )?;
        }
        let changed = changes.iter().filter(|c| c.after.is_some()).count();
        writeln!(
            out,
            "{changed} of {} TCP sockets in pid {pid} changed",
            changes.len(),
        )?;
        out.flush()?;
    }
    if report.exited {
        return Err(anyhow::anyhow!(
            "pid {pid} exited while its sockets were being changed; the list above may be partial",
        ));
    }
    if !args.dry_run && changes.iter().any(|c| c.after.is_none()) {
        return Err(anyhow::anyhow!(
            "some sockets of pid {pid} were not changed (see above)",
        ));
    }
    Ok(())
}
