//! `keepalive status`, `get --pid` and `set --pid`: live connections, rendered.

use crate::UsageError;
use crate::cli::{GetArgs, SetArgs, StatusArgs};
use crate::render::{WIDTH, cols, duration_ms, json, printable, wrap};
use keepalive::diag::{TcpState, Timer, Verdict};
use keepalive::netns::NetNs;
use keepalive::policy::grammar::parse_duration_ms;
use keepalive::retrofit::{self, ProcessSocket, Selection};
use keepalive::socket::SocketKeepalive;
use keepalive::status::{self, Query, Row, Summary, Tally};
use std::fmt::Write as _;
use std::net::SocketAddr;

fn query(args: &StatusArgs) -> anyhow::Result<Query> {
    let risk_idle_ms = parse_duration_ms(&args.idle_over).ok_or_else(|| {
        let digits = args.idle_over.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let huge = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        UsageError::err(if huge {
            format!(
                "--idle-over {}: too large; at most {}h (units ms, s, m, h)",
                args.idle_over,
                u64::MAX / 3_600_000
            )
        } else {
            format!(
                "--idle-over {}: expected a duration such as 300s, 5m or 1m30s (units ms, s, m, h; no fractions)",
                args.idle_over
            )
        })
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
        ports: args.port.clone(),
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
    let with_owner = query.processes || query.exact;
    let mut left = args.iterations;
    loop {
        // Everything is gathered first: an error leaves no header or half a table behind.
        let mut rows: Vec<Vec<String>> = Vec::new();
        let summary = status::status(&query, |row| rows.push(cells(row, with_owner)))?;
        let mut out = String::new();
        if args.watch.is_some() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            out.push_str("\x1b[H\x1b[2J");
        }
        let header = [
            "STATE",
            "LOCAL",
            "PEER",
            "KEEPALIVE",
            "TIMER",
            "IDLE",
            "PROCESS",
        ];
        out.push_str(&fitted_table(&header, &rows, &[5], STATUS_LAYOUTS));
        out.push_str(&wrap(&human_summary(&summary, &args.idle_over), "", "  "));
        if summary.owner_unknown > 0 {
            let text = format!(
                "owner unknown for {} socket{}: {}",
                summary.owner_unknown,
                if summary.owner_unknown == 1 { "" } else { "s" },
                owner_unknown_reason(&summary, query.exact)
            );
            out.push_str(&wrap(&text, "", "  "));
        }
        if summary.sockets_elsewhere > 0
            && let Some(pid) = args.pid
        {
            let text = format!(
                "pid {pid} also holds {} TCP socket{} in other network namespaces than the one \
                 listed: `keepalive get --pid {pid}` lists every one",
                summary.sockets_elsewhere,
                if summary.sockets_elsewhere == 1 {
                    ""
                } else {
                    "s"
                }
            );
            out.push_str(&wrap(&text, "", "  "));
        }
        for n in &summary.not_traced {
            let text = format!(
                "not traced: pid {} ({}): {}",
                n.pid,
                printable(&n.command),
                n.reason
            );
            out.push_str(&wrap(&text, "", "  "));
        }
        crate::render::out(&out)?;
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

/// Why owners are missing, every cause that may apply: unreadable processes (another
/// user's), processes outside the PID namespace /proc shows, and sockets whose process exited
/// between the socket dump and the /proc scan.
fn owner_unknown_reason(summary: &Summary, exact: bool) -> String {
    let mut causes = Vec::new();
    if summary.unreadable_processes > 0 {
        causes.push(format!(
            "the descriptors of {} processes were not readable (another user's processes need \
             CAP_SYS_PTRACE)",
            summary.unreadable_processes
        ));
    }
    if summary.owners_outside_pid_namespace {
        causes.push(
            "their processes are outside the PID namespace this /proc shows (run status from \
             the host's PID namespace to see them)"
                .to_owned(),
        );
    }
    causes.push(
        "their processes exited, or passed the sockets on, between the kernel's list and the \
         /proc scan; or no process holds them: a socket in flight in a UNIX socket's message \
         (SCM_RIGHTS) is nobody's until it is received"
            .to_owned(),
    );
    let mut text = causes.join("; or ");
    if exact {
        text.push_str(". Without an owner, --exact cannot read their options");
    }
    text
}

/// Columns as wide as their widest cell, two spaces apart; the columns in `right` aligned
/// right; the last column unpadded.
/// Returned as lines, the header's first, one per row whatever a cell holds.
fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> Vec<String> {
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| cols(c))
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let last = i + 1 == widths.len();
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cols(cell));
            if right.contains(&i) {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if !last {
                    text.push_str(&" ".repeat(pad));
                }
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = vec![line(&mut header.iter().copied())];
    for row in rows {
        out.push(line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// The status table's layouts, tried in order: one line per socket; state, addresses and
/// process, then keepalive, timer and idle; for long IPv6 addresses, state and process, the
/// addresses, then keepalive, timer and idle.
const STATUS_LAYOUTS: &[&[&[usize]]] = &[
    &[&[0, 1, 2, 3, 4, 5, 6]],
    &[&[0, 1, 2, 6], &[3, 4, 5]],
    &[&[0, 6], &[1, 2], &[3, 4, 5]],
    // Two long addresses (link-local IPv6 with a scope) do not fit on one line together.
    &[&[0, 6], &[1], &[2], &[3, 4, 5]],
];

/// get's and set's: descriptor and addresses, then the options (before and after, together
/// or on lines of their own).
const SOCKET_LAYOUTS: &[&[&[usize]]] = &[
    &[&[0, 1, 2, 3, 4]],
    &[&[0, 1, 2], &[3, 4]],
    &[&[0, 1, 2], &[3], &[4]],
    &[&[0, 1], &[2], &[3], &[4]],
];

/// The table in the first of `layouts` whose lines fit [`WIDTH`] (the last if none does).
/// A layout is groups of column indices, each group a line of the row and a table of its own;
/// lines after a row's first are indented.
fn fitted_table(
    header: &[&str],
    rows: &[Vec<String>],
    right: &[usize],
    layouts: &[&[&[usize]]],
) -> String {
    let render = |layout: &[&[usize]]| {
        let groups: Vec<Vec<String>> = layout
            .iter()
            // A group of columns this table does not have (get has no AFTER) is no line.
            .filter(|cols| cols.iter().any(|&i| i < header.len()))
            .map(|cols| {
                let cols: Vec<usize> = cols.iter().copied().filter(|&i| i < header.len()).collect();
                let head: Vec<&str> = cols.iter().map(|&i| header[i]).collect();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| cols.iter().map(|&i| r[i].clone()).collect())
                    .collect();
                let right: Vec<usize> = (0..cols.len())
                    .filter(|&j| right.contains(&cols[j]))
                    .collect();
                table(&head, &cells, &right)
            })
            .collect();
        let mut out = String::new();
        for line in 0..=rows.len() {
            for (g, group) in groups.iter().enumerate() {
                let indent = if g == 0 { "" } else { "  " };
                let _ = write!(out, "{indent}{}", group[line]);
            }
        }
        out
    };
    let mut text = String::new();
    for layout in layouts {
        text = render(layout);
        if text.lines().all(|l| cols(l) <= WIDTH) {
            break;
        }
    }
    text
}

/// A duration as every listing shows one: render::duration_ms, to a tenth of a second.
fn short(ms: u64) -> String {
    let tenths = (ms + 50) / 100 * 100;
    duration_ms(tenths)
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

/// The cells of one row: state, local, peer, keepalive, timer, idle, process.
fn cells(row: &Row, with_owner: bool) -> Vec<String> {
    let e = &row.socket;
    let keepalive = match (&row.exact, row.keepalive) {
        (Some(k), Verdict::On) => format!("on {}", values(k)),
        (Some(k), Verdict::NotApplicable) if k.enabled => format!("set {}", values(k)),
        (_, v) => v.name().to_owned(),
    };
    // The kernel's timer, named for what it is; with --exact, when the next probe would go
    // out if the peer stays silent (the keepalive timer re-arms itself until idle has passed).
    let timer = match e.timer {
        Timer::None => "-".to_owned(),
        // A closed (orphaned) socket in FIN-WAIT-2 has no owner's inode; the kernel runs the
        // rest of tcp_fin_timeout past TIME-WAIT's length on the same timer
        // (tcp_close() and tcp_keepalive_timer() in net/ipv4/tcp.c, tcp_timer.c).
        Timer::Keepalive if e.state == TcpState::FinWait2 && e.inode == 0 => {
            format!("fin-wait-2 {}", short(e.timer_ms.into()))
        }
        Timer::Keepalive if e.probes_out > 0 => {
            format!(
                "{} probes out, next {}",
                e.probes_out,
                short(e.timer_ms.into())
            )
        }
        Timer::Keepalive => match row.next_probe_ms {
            Some(next) => format!(
                "keepalive {}, probe in {}",
                short(e.timer_ms.into()),
                short(next)
            ),
            None => format!("keepalive {}", short(e.timer_ms.into())),
        },
        Timer::Retransmit => format!("retransmit {}", short(e.timer_ms.into())),
        Timer::ZeroWindowProbe => format!("zero-window {}", short(e.timer_ms.into())),
        Timer::TimeWait => format!("time-wait {}", short(e.timer_ms.into())),
    };
    let idle = e.idle_ms.map_or("-".to_owned(), |ms| short(ms.into()));
    // The first owner, and how many others share the socket (a prefork server's workers all
    // hold its listener); --json lists them all.
    let mut process = match row.owners.split_first() {
        Some((first, rest)) if with_owner => {
            let mut text = format!("{}/{}", printable(&first.command), first.pid);
            if !rest.is_empty() {
                let _ = write!(text, " +{}", rest.len());
            }
            text
        }
        _ => String::new(),
    };
    if row.at_risk {
        process.push_str("  AT RISK");
    }
    if row.cgroup_policy.is_some() {
        process.push_str("  cgroup policy");
    }
    vec![
        e.state.name().to_owned(),
        addr(&e.local),
        addr(&e.peer),
        keepalive,
        timer,
        idle,
        process.trim_start().to_owned(),
    ]
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

/// `{"sockets": [...], "summary": {...}}`, written whole once the listing is complete: an
/// error leaves no half document.
fn status_json(query: &Query) -> anyhow::Result<()> {
    let mut sockets = Vec::new();
    let mut failed = None;
    let summary = status::status(query, |row| match serde_json::to_value(row) {
        Ok(v) => sockets.push(v),
        Err(e) => {
            failed.get_or_insert(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    json(&serde_json::json!({ "sockets": sockets, "summary": summary }))
}

/// node-exporter textfile metrics, replaced whole (keepalive::output: mode 0644, never through
/// a planted name).
fn prometheus(query: &Query, path: &std::path::Path) -> anyhow::Result<()> {
    let mut tally = Tally::default();
    let summary = status::status(query, |row| tally.add(row))?;
    // The text format's label values escape backslash, double quote and line feed, and know
    // no other escape: other control characters become U+FFFD, so that no name puts terminal
    // commands into a file people `cat`.
    let label = |s: &str| {
        s.chars()
            .map(|c| match c {
                '\\' => "\\\\".to_owned(),
                '"' => "\\\"".to_owned(),
                '\n' => "\\n".to_owned(),
                c if c.is_control() => '\u{fffd}'.to_string(),
                c => c.to_string(),
            })
            .collect::<String>()
    };
    // Grouped by the label as written: two commands that differ only in characters the
    // format cannot carry make one series, summed (a duplicate series is refused by
    // node-exporter's textfile collector).
    let mut connections: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    for ((command, verdict), n) in &tally.connections {
        if *verdict != Verdict::NotApplicable {
            *connections
                .entry((label(command), verdict.name()))
                .or_default() += *n;
        }
    }
    let by_label = |counts: &std::collections::BTreeMap<String, _>| {
        let mut out: std::collections::BTreeMap<String, u64> = Default::default();
        for (command, n) in counts {
            *out.entry(label(command)).or_default() += *n;
        }
        out
    };
    let mut text = String::new();
    text.push_str(
        "# HELP keepalive_tcp_connections TCP connections by owning command and keepalive state.\n",
    );
    text.push_str("# TYPE keepalive_tcp_connections gauge\n");
    for ((command, verdict), n) in &connections {
        let _ = writeln!(
            text,
            "keepalive_tcp_connections{{command=\"{command}\",keepalive=\"{verdict}\"}} {n}"
        );
    }
    text.push_str(
        "# HELP keepalive_tcp_probes_in_flight Keepalive probes sent and not yet answered.\n",
    );
    text.push_str("# TYPE keepalive_tcp_probes_in_flight gauge\n");
    for (command, n) in &by_label(&tally.probes) {
        let _ = writeln!(
            text,
            "keepalive_tcp_probes_in_flight{{command=\"{command}\"}} {n}"
        );
    }
    text.push_str("# HELP keepalive_tcp_connections_at_risk Established connections idle past the threshold with keepalive off.\n");
    text.push_str("# TYPE keepalive_tcp_connections_at_risk gauge\n");
    for (command, n) in &by_label(&tally.at_risk) {
        let _ = writeln!(
            text,
            "keepalive_tcp_connections_at_risk{{command=\"{command}\"}} {n}"
        );
    }
    keepalive::output::Pending::create(path)?.finish(text.as_bytes())?;
    crate::render::note(&format!(
        "wrote {} ({} sockets)\n",
        crate::render::printable(&path.display().to_string()),
        summary.sockets
    ));
    Ok(())
}

/// Local and peer of a process's socket, as the listings show them.
fn endpoints(s: &ProcessSocket) -> (String, String) {
    let local = s.local.as_ref().map_or("-".into(), addr);
    let peer = if s.listening {
        "(listening)".into()
    } else {
        s.peer.as_ref().map_or("-".into(), addr)
    };
    (local, peer)
}

fn state(k: &SocketKeepalive) -> String {
    format!("{} {}", if k.enabled { "on" } else { "off" }, values(k))
}

pub fn get(args: &GetArgs) -> anyhow::Result<()> {
    let Some(pid) = args.pid else {
        return crate::cgroup::get(&args.target, args.json);
    };
    let sockets = retrofit::sockets(pid)?;
    if args.json {
        return json(&sockets);
    }
    let rows: Vec<Vec<String>> = sockets
        .iter()
        .map(|s| {
            let (local, peer) = endpoints(s);
            vec![s.fd.to_string(), local, peer, state(&s.keepalive)]
        })
        .collect();
    let mut out = if rows.is_empty() {
        String::new()
    } else {
        fitted_table(
            &["FD", "LOCAL", "PEER", "KEEPALIVE idle/interval/count"],
            &rows,
            &[0],
            SOCKET_LAYOUTS,
        )
    };
    let _ = writeln!(
        out,
        "{} TCP socket{} in pid {pid}",
        sockets.len(),
        if sockets.len() == 1 { "" } else { "s" }
    );
    crate::render::out(&out)
}

/// What `set --pid` is to do, from its flags.
fn change(args: &SetArgs, policy: keepalive::Policy) -> anyhow::Result<retrofit::Change> {
    match args.keepalive.as_deref() {
        Some("off") if !policy.is_empty() => Err(UsageError::err(format!(
            "--keepalive off and a policy ({policy}) contradict each other: give one"
        ))),
        Some("off") => Ok(retrofit::Change::Off),
        Some(_) => Ok(retrofit::Change::On(policy)),
        None if policy.is_empty() => Err(UsageError::err(
            "nothing to set: give --idle, --interval, --count, --user-timeout, --policy or --keepalive on|off",
        )),
        None => Ok(retrofit::Change::On(policy)),
    }
}

pub fn set(args: &SetArgs) -> anyhow::Result<()> {
    let policy = args.policy.to_policy(None)?;
    let Some(pid) = args.pid else {
        if args.keepalive.is_some() {
            return Err(UsageError::err(
                "--keepalive on|off works with --pid; a cgroup's policy switches keepalive on, and `keepalive unset --cgroup` removes it",
            ));
        }
        return crate::cgroup::set(args, &policy);
    };
    let change = change(args, policy)?;
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
    let report = retrofit::apply(pid, selection, &change, args.dry_run)?;
    let changes = &report.changes;
    let made = !args.dry_run && changes.iter().any(|c| c.after.is_some());
    let reported = |r: anyhow::Result<()>| {
        r.map_err(|e| {
            if made {
                let why = format!("the change was made, but its report could not be written: {e}");
                e.context(why)
            } else {
                e
            }
        })
    };
    if args.json {
        reported(json(&report))?;
    } else {
        let wanted = match change {
            retrofit::Change::On(p) if p.is_empty() => "keepalive on".to_owned(),
            retrofit::Change::On(p) => p.to_string(),
            retrofit::Change::Off => "keepalive off".to_owned(),
        };
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|c| {
                let after = match (&c.after, &c.skipped) {
                    (Some(after), _) => state(after),
                    // What the real run would leave, in the same words (or its refusal).
                    (None, Some(why)) if args.dry_run && why != "dry run" => {
                        format!("would be unchanged: {why}")
                    }
                    (None, Some(_)) if args.dry_run => match change.outcome(&c.socket.keepalive) {
                        Ok(same) if same == c.socket.keepalive => "already so".into(),
                        Ok(after) => format!("would be {}", state(&after)),
                        Err(_) => format!("would set {wanted}"),
                    },
                    (None, Some(why)) => format!("unchanged: {why}"),
                    (None, None) => "unchanged".into(),
                };
                let (local, peer) = endpoints(&c.socket);
                vec![
                    c.socket.fd.to_string(),
                    local,
                    peer,
                    state(&c.socket.keepalive),
                    after,
                ]
            })
            .collect();
        let mut out = if rows.is_empty() {
            String::new()
        } else {
            fitted_table(
                &["FD", "LOCAL", "PEER", "BEFORE", "AFTER"],
                &rows,
                &[0],
                SOCKET_LAYOUTS,
            )
        };
        // Changed means different afterwards: a socket already so is not counted.
        let changed = changes
            .iter()
            .filter(|c| c.after.as_ref().is_some_and(|a| *a != c.socket.keepalive))
            .count();
        let already = changes
            .iter()
            .filter(|c| c.after.as_ref().is_some_and(|a| *a == c.socket.keepalive))
            .count();
        let (n, verb) = if args.dry_run {
            (changes.len(), "to look at (dry run, nothing changed)")
        } else {
            (changed, "changed")
        };
        let already = if already > 0 && !args.dry_run {
            format!(", {already} already so")
        } else {
            String::new()
        };
        let plural = if changes.len() == 1 { "" } else { "s" };
        if report.exited {
            // The count is of what was reached before the process went, not of what it held.
            let _ = writeln!(
                out,
                "pid {pid} exited during the change: {changed} of the {} TCP socket{plural} \
                 reached had been changed, and went with it",
                changes.len(),
            );
        } else {
            let _ = writeln!(
                out,
                "{n} of {} TCP socket{plural} in pid {pid} {verb}{already}",
                changes.len(),
            );
        }
        for port in &report.sets_its_own {
            let text = format!(
                "note: the connections pid {pid} accepted on port {port} carry keepalive settings \
                 other than the listener's, which the kernel copies to them: something set them \
                 after accept (most often the program itself, as Go, redis and haproxy do), and \
                 new connections may not get this from the listener. `keepalive set --cgroup-of \
                 {pid} --force` holds the policy for every new connection."
            );
            out.push_str(&wrap(&text, "", "  "));
        }
        reported(crate::render::out(&crate::render::fit(&out)))?;
    }
    if report.exited {
        return Err(anyhow::anyhow!(
            "pid {pid} exited while its sockets were being changed (or right after): the changes went with it",
        ));
    }
    if args.dry_run
        && changes
            .iter()
            .any(|c| c.skipped.as_deref().is_some_and(|why| why != "dry run"))
    {
        return Err(anyhow::anyhow!(
            "some sockets of pid {pid} would not be changed (see above)",
        ));
    }
    if !args.dry_run && changes.iter().any(|c| c.after.is_none()) {
        return Err(anyhow::anyhow!(
            "some sockets of pid {pid} were not changed (see above)",
        ));
    }
    Ok(())
}
