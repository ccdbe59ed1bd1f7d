//! `keepalive http URL`: measure, then advise.

use crate::UsageError;
use crate::cli::HttpArgs;
use crate::render::json;
use keepalive::policy::grammar::parse_duration_ms;
use keepalive::reference::{self, Middlebox};
use keepalive_http::{CountEnd, HttpError, Idle, Options, Report, Url};
use serde::Serialize;
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Serialize)]
struct Out<'a> {
    #[serde(flatten)]
    report: &'a Report,
    pool_idle_timeout_s: Option<f64>,
    behind: Option<Middlebox>,
    warnings: Vec<String>,
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
    let tty = std::io::stderr().is_terminal() && !args.json;
    let report = keepalive_http::inspect(&Options {
        url,
        max_wait: Duration::from_millis(max_wait),
        requests: args.requests,
        insecure: args.insecure,
        progress: tty.then(|| -> Box<dyn Fn(f64, f64)> {
            Box::new(|done, most| crate::render::note(&format!("\r  waiting for the server to close the idle connection: {done:5.1}s (at most {most:.0}s) ")))
        }),
    })
    .map_err(|e| match e {
        HttpError::Url(m) => UsageError::err(m),
        e => anyhow::anyhow!("{e}"),
    })?;
    if tty {
        crate::render::note(&format!("\r{:90}\r", ""));
    }
    let warnings: Vec<String> = behind
        .iter()
        .filter_map(|lb| keepalive_http::behind_warning(&report, lb.name, lb.idle_timeout_s))
        .collect();
    if args.json {
        return json(&Out {
            report: &report,
            pool_idle_timeout_s: report.pool_idle_timeout_s(),
            behind,
            warnings,
        });
    }
    crate::render::out(&human(&report, &warnings))?;
    Ok(())
}

fn human(r: &Report, warnings: &[String]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}  {} {}", r.url, r.version, r.status);
    let show = |h: &Option<String>| h.clone().unwrap_or_else(|| "(none)".into());
    let _ = writeln!(
        out,
        "  Connection: {}   Keep-Alive: {}",
        show(&r.connection_header),
        show(&r.keep_alive_header)
    );
    if !r.persistent {
        let _ = writeln!(
            out,
            "  persistence: none; the server closes the connection after each response"
        );
    } else {
        let _ = writeln!(
            out,
            "  persistence: yes; the connection stays open after a response"
        );
        let idle = match r.idle {
            Idle::Closed { after_s, reset } => {
                format!(
                    "{after_s:.2}s after the last response, then {}",
                    if reset {
                        "RST (a reset)"
                    } else {
                        "FIN (a clean close)"
                    }
                )
            }
            Idle::NotClosed { waited_s } => {
                format!("did not close within {waited_s:.0}s (--max-wait)")
            }
            Idle::NotPersistent => "-".into(),
        };
        let _ = writeln!(out, "  idle timeout: {idle}");
        let ended = match r.requests_ended_by {
            CountEnd::ConnectionClose => "then it said Connection: close",
            CountEnd::ServerClosed => "then it closed the connection",
            CountEnd::Limit => "and kept going (--requests reached)",
        };
        let _ = writeln!(
            out,
            "  requests per connection: {} {ended}",
            r.requests_served
        );
    }
    for d in &r.disagreements {
        let _ = writeln!(out, "  disagreement: {d}");
    }
    if let Some(pool) = r.pool_idle_timeout_s() {
        let _ = writeln!(
            out,
            "Advice: keep client pool connections idle for less than {pool:.1}s (below the server's {:.1}s), or \
             the pool will reuse a connection the server is closing (ECONNRESET, \"socket hang up\").",
            r.idle_timeout_s().unwrap_or(0.0)
        );
    }
    for w in warnings {
        let _ = writeln!(out, "Warning: {w}");
    }
    out
}
