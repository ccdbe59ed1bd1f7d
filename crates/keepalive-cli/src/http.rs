//! `keepalive http URL`: measure, then advise.

use crate::UsageError;
use crate::cli::HttpArgs;
use crate::render::{duration_ms, json};
use keepalive::policy::grammar::parse_duration_ms;
use keepalive::reference::{self, Middlebox};
use keepalive_http::verdict::{self, Finding, Level, Pool};
use keepalive_http::{
    Close, ConnectTo, CountEnd, Header, Http1, Http2, Http2Measured, Http2Mode, HttpError, Idle,
    Method, Options, Progress, Report, Request, Spread, Trust, Url,
};
use serde::Serialize;
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Serialize)]
struct Out<'a> {
    #[serde(flatten)]
    report: &'a Report,
    pool: Vec<Pool>,
    behind: Option<Middlebox>,
    findings: Vec<Finding>,
}

pub fn run(args: &HttpArgs) -> anyhow::Result<()> {
    let url = Url::parse(&args.url).map_err(|e| UsageError::err(e.to_string()))?;
    let max_wait = parse_duration_ms(&args.max_wait)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| {
            UsageError::err(format!(
                "--max-wait {}: expected a duration such as 120s, 2m or 1500ms (units ms, s, m, h; no fractions)",
                args.max_wait
            ))
        })?;
    if args.requests == 0 {
        return Err(UsageError::err("--requests 0: count at least 1 request"));
    }
    let behind = match &args.behind {
        None => None,
        Some(id) => Some(reference::middlebox(id).ok_or_else(|| {
            let ids: Vec<&str> = reference::middleboxes().map(|m| m.id).collect();
            UsageError::err(format!(
                "--behind {id}: not in docs/middleboxes.tsv; choose {}",
                ids.join(", ")
            ))
        })?),
    };
    let usage = |e: HttpError| UsageError::err(e.to_string());
    let request = Request {
        url,
        method: Method::parse(&args.method).map_err(usage)?,
        headers: args
            .headers
            .iter()
            .map(|h| Header::parse(h))
            .collect::<Result<_, _>>()
            .map_err(usage)?,
        connect_to: args
            .connect_to
            .as_deref()
            .map(ConnectTo::parse)
            .transpose()
            .map_err(usage)?,
    };
    let tty = std::io::stderr().is_terminal() && !args.json;
    let options = Options {
        request,
        repeat: args.repeat,
        max_wait: Duration::from_millis(max_wait),
        requests: args.requests,
        trust: Trust {
            insecure: args.insecure,
            cacert: args.cacert.clone(),
        },
        http2: if args.http1 {
            Http2Mode::Off
        } else if args.http2 {
            Http2Mode::PriorKnowledge
        } else {
            Http2Mode::Auto
        },
        progress: tty.then(|| -> Box<dyn Fn(&Progress)> {
            Box::new(|p| crate::render::note(&format!("\r{}", progress_line(p))))
        }),
    };
    let report = keepalive_http::inspect(&options);
    if tty {
        crate::render::note(&format!("\r{:99}\r", ""));
    }
    let report = report.map_err(|e| match e {
        HttpError::Url(m) | HttpError::Input(m) => UsageError::err(m),
        e => anyhow::anyhow!("{e}"),
    })?;
    let pool = verdict::pools(&report);
    let findings = behind
        .as_ref()
        .map(|m| verdict::behind(&report, m))
        .unwrap_or_default();
    if args.json {
        return json(&Out {
            report: &report,
            pool,
            behind,
            findings,
        });
    }
    crate::render::out(&crate::render::fit(&human(&report, &pool, &findings)))?;
    Ok(())
}

/// One line on the terminal while measuring: each phase and the bound.
fn progress_line(p: &Progress) -> String {
    let phase = |requests: u32, done: bool, idle: Option<f64>| {
        let idle = idle.map_or("connecting".into(), |s| format!("idle {s:.1}s"));
        let mark = if done { ", done" } else { "" };
        format!("{requests} requests{mark}; {idle}")
    };
    let mut line = format!(
        "  HTTP/1.1: {}",
        phase(p.h1_requests, p.h1_counting_done, p.h1_idle_s)
    );
    if let Some((requests, done, idle)) = p.h2 {
        line += &format!("  HTTP/2: {}", phase(requests, done, idle));
    }
    line += &format!("  (at most {:.0}s)", p.max_wait_s);
    format!("{line:98}")
}

fn seconds(s: f64) -> String {
    duration_ms((s * 1000.0).round() as u64)
}

/// A short span as measured: milliseconds with a decimal below a second.
fn took(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1}ms", s * 1000.0)
    } else {
        seconds(s)
    }
}

fn idle_text(idle: &Idle) -> String {
    match idle {
        Idle::Closed { after_s, by } => {
            let how = match by {
                Close::Fin => "FIN (a clean close)".to_owned(),
                Close::Reset => "RST (a reset)".to_owned(),
                Close::RequestTimeout => "408 Request Timeout, then the close".to_owned(),
                Close::GoAway { code } => format!("GOAWAY {code}"),
            };
            format!("{} after the last response, then {how}", seconds(*after_s))
        }
        Idle::NotClosed { waited_s } => {
            format!("did not close within {} (--max-wait)", seconds(*waited_s))
        }
        Idle::NotPersistent => "-".into(),
    }
}

fn ended_text(end: CountEnd) -> &'static str {
    match end {
        CountEnd::ConnectionClose => "then it said Connection: close",
        CountEnd::ServerClosed => "then it closed the connection",
        CountEnd::GoAway => "then it sent GOAWAY",
        CountEnd::Limit => "and kept going (--requests reached)",
        CountEnd::MaxWait => "and kept going (--max-wait reached)",
        CountEnd::BadResponse => "then a response could not be read",
    }
}

fn human(r: &Report, pools: &[Pool], findings: &[Finding]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.url);
    match (&r.http1, &r.http1_error) {
        (Some(h1), _) => http1(&mut out, h1),
        (None, Some(e)) => {
            let _ = writeln!(out, "HTTP/1.1: {e}");
        }
        (None, None) => {}
    }
    match &r.http2 {
        None => {}
        Some(Http2::NotOffered { alpn }) => {
            let chosen = alpn.as_deref().map_or("none".to_owned(), |p| p.to_owned());
            let _ = writeln!(
                out,
                "HTTP/2: not offered (the server's ALPN choice: {chosen})"
            );
        }
        Some(Http2::Failed { error }) => {
            let _ = writeln!(out, "HTTP/2: {error}");
        }
        Some(Http2::Measured(h2)) => http2(&mut out, h2),
    }
    for p in pools {
        let _ = match p {
            Pool::Below {
                version,
                below_s,
                timeout_s,
            } => writeln!(
                out,
                "Advice ({version}): keep idle pooled connections for less than {} (below the \
                 server's {}), or the pool will reuse a connection the server is closing \
                 (ECONNRESET, \"socket hang up\").",
                seconds(*below_s),
                seconds(*timeout_s)
            ),
            Pool::TooShort { version, timeout_s } => writeln!(
                out,
                "Advice ({version}): the server's idle timeout of {} leaves no safe margin for a \
                 pool (at least {} is needed: a pool's timer and the request's trip to the \
                 server must both fit under it): do not reuse idle connections, retry \
                 idempotent requests on a fresh one, or raise the server's timeout.",
                seconds(*timeout_s),
                seconds(verdict::MIN_POOL_IDLE_S)
            ),
        };
    }
    for f in findings {
        let label = match f.level {
            Level::Warning => "Warning",
            Level::Inconclusive => "Inconclusive",
            Level::Advice => "Advice",
        };
        let _ = writeln!(out, "{label}: {}", f.text);
    }
    out
}

/// `--repeat`'s spread, under the median run.
fn spread_line(out: &mut String, spread: Option<&Spread>) {
    use std::fmt::Write;
    if let Some(s) = spread {
        let _ = writeln!(
            out,
            "  over {} idle connections ({} closed): min {}, median {}, max {}",
            s.runs,
            s.closed,
            seconds(s.min_s),
            seconds(s.median_s),
            seconds(s.max_s)
        );
    }
}

fn http1(out: &mut String, h: &Http1) {
    use std::fmt::Write;
    let show = |v: &Option<String>| {
        v.as_deref().map_or("(none)".to_owned(), |s| {
            crate::render::printable(s).into_owned()
        })
    };
    let _ = writeln!(out, "{} {}", h.version, h.status);
    let _ = writeln!(
        out,
        "  Connection: {}   Keep-Alive: {}",
        show(&h.connection_header),
        show(&h.keep_alive_header)
    );
    if !h.persistent {
        let how = if h.requests_ended_by == CountEnd::ConnectionClose {
            "it says Connection: close"
        } else {
            "without saying so"
        };
        let _ = writeln!(
            out,
            "  persistence: none; the server closes the connection after each response ({how})"
        );
    } else {
        let _ = writeln!(
            out,
            "  persistence: yes; the connection stays open after a response"
        );
        let _ = writeln!(out, "  idle timeout: {}", idle_text(&h.idle));
        spread_line(out, h.idle_spread.as_ref());
        let _ = writeln!(
            out,
            "  requests per connection: {} {} ({} counting)",
            h.requests_served,
            ended_text(h.requests_ended_by),
            took(h.counting_s)
        );
        if let Some(e) = &h.count_error {
            let _ = writeln!(out, "  counting stopped at {}", crate::render::printable(e));
        }
    }
    for d in &h.disagreements {
        let _ = writeln!(out, "  disagreement: {}", crate::render::printable(d));
    }
}

fn http2(out: &mut String, h: &Http2Measured) {
    use std::fmt::Write;
    let _ = writeln!(out, "HTTP/2 {}", h.status);
    let streams = h
        .max_concurrent_streams
        .map_or("no limit sent".to_owned(), |n| n.to_string());
    let _ = writeln!(out, "  max concurrent streams: {streams}");
    let others: Vec<String> = h
        .settings
        .iter()
        .filter(|(name, _)| name != "MAX_CONCURRENT_STREAMS")
        .map(|(name, v)| format!("{name}={v}"))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(out, "  SETTINGS: {}", others.join(" "));
    }
    let ping = h.ping_rtt_ms.map_or_else(
        || format!("no answer within {}", seconds(h.ping_waited_s)),
        |ms| format!("answered in {ms:.2}ms"),
    );
    let _ = writeln!(out, "  PING: {ping}");
    let _ = writeln!(out, "  idle timeout: {}", idle_text(&h.idle));
    spread_line(out, h.idle_spread.as_ref());
    let goaway = h
        .count_goaway
        .as_deref()
        .map_or(String::new(), |c| format!(" ({c})"));
    let _ = writeln!(
        out,
        "  requests per connection: {} {}{goaway} ({} counting)",
        h.requests_served,
        ended_text(h.requests_ended_by),
        took(h.counting_s)
    );
}
