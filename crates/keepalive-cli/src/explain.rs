//! `keepalive explain`: the probe timeline and time to detect, rendered.

use crate::cli::ExplainArgs;
use crate::render::{WIDTH, cols, duration_ms, duration_s, fit, json, wrap};
use keepalive::explain::{Detected, Explanation};
use keepalive::netns::NetNs;
use keepalive::policy::timeline::{Decider, ProbeTimeline};
use keepalive::reference::{self, OsDefaults};
use keepalive::sysctl::Sysctls;
use serde::Serialize;

#[derive(Serialize)]
struct Report<'a> {
    /// The settings explained, in the policy grammar.
    policy: String,
    /// The policy as given, if any.
    given: Option<String>,
    /// Where keys the policy leaves out come from.
    defaults_from: String,
    #[serde(skip)]
    given_is_complete: bool,
    time_to_detect: String,
    #[serde(flatten)]
    explanation: &'a Explanation,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    os_defaults: Vec<OsDefaults>,
}

pub fn run(args: &ExplainArgs) -> anyhow::Result<()> {
    let policy = args.policy_args.to_policy(args.policy_text.as_deref())?;
    let (explanation, defaults_from, os_table) = match args.os {
        Some(os) => {
            let row = reference::os_default(os.id())
                .expect("every --os value has a row in docs/os-defaults.tsv");
            let from = format!("{} defaults ({})", os.id(), row.source);
            (
                Explanation::for_os(&row, &policy)?,
                from,
                reference::os_defaults().collect(),
            )
        }
        None => {
            let sysctls = match &args.netns {
                Some(name) => Sysctls::netns(NetNs::named(name)?),
                None => Sysctls::current(),
            };
            let kernel = sysctls.read()?;
            let settings = policy.resolve(&kernel.settings())?;
            let from = format!("net.ipv4.tcp_keepalive_* in {}", sysctls.scope());
            (Explanation::linux(settings, &kernel), from, Vec::new())
        }
    };
    let report = Report {
        policy: explanation.policy_text(),
        given: (!policy.is_empty()).then(|| policy.to_string()),
        defaults_from,
        given_is_complete: policy.idle().is_some()
            && policy.interval().is_some()
            && policy.count().is_some(),
        time_to_detect: duration_ms(explanation.silent_peer.reset_ms),
        explanation: &explanation,
        os_defaults: os_table,
    };
    if args.json {
        return json(&report);
    }
    crate::render::out(&fit(&human(&report)))?;
    Ok(())
}

/// Where a wrapped value of the policy's header continues: under the value.
const INDENT: &str = "               ";

fn human(r: &Report<'_>) -> String {
    let e = r.explanation;
    let t = &e.silent_peer;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("Policy  {}", r.policy));
    match &r.given {
        Some(_) if r.given_is_complete => {}
        Some(given) => {
            line(format!("        given  {given}"));
            line(
                wrap(&r.defaults_from, "        rest   ", INDENT)
                    .trim_end()
                    .to_owned(),
            );
        }
        None => line(
            wrap(&r.defaults_from, "        from   ", INDENT)
                .trim_end()
                .to_owned(),
        ),
    }
    if !r.os_defaults.is_empty() {
        line(String::new());
        line(format!(
            "  {:<9}{:>7}{:>10}{:>8}{:>16}",
            "system", "idle", "interval", "probes", "time to detect"
        ));
        for o in &r.os_defaults {
            let s = &o.settings;
            let detect = ProbeTimeline::silent_peer(s).reset_ms;
            line(format!(
                "  {:<9}{:>7}{:>10}{:>8}{:>16}",
                o.os,
                duration_s(s.idle.into()),
                duration_s(s.interval.into()),
                s.count,
                duration_ms(detect)
            ));
        }
        line("  (sources: docs/os-defaults.tsv; other systems' timers are modelled with Linux's rule)".into());
    }
    line(String::new());
    line(
        "A silent peer (crashed, powered off, cable pulled, black-holed), connection idle:".into(),
    );
    let at = |ms: u64| format!("{:>12}", duration_ms(ms));
    line(format!(
        "{}  last segment received from the peer; the keepalive timer starts",
        at(0)
    ));
    let shown: Vec<u64> = if t.probes <= 8 {
        (1..=t.probes).collect()
    } else {
        vec![1, 2, 3, 0, t.probes - 1, t.probes]
    };
    for n in shown {
        if n == 0 {
            line(format!(
                "{:>12}  ... one probe every {}",
                "",
                duration_ms(t.interval_ms)
            ));
            continue;
        }
        let what = if n == 1 {
            "probe 1: no data, ACK set, seq = snd_nxt - 1; no answer".into()
        } else {
            format!("probe {n}: no answer")
        };
        line(format!("{}  {what}", at(t.probe_at(n).as_millis() as u64)));
    }
    let why = match t.decided_by {
        Decider::UserTimeout => format!(
            "user timeout of {} passed",
            duration_ms(e.settings.user_timeout_ms.into())
        ),
        _ => format!("{} probes unanswered", t.probes),
    };
    line(format!(
        "{}  {why}: the kernel sends RST and drops the connection;",
        at(t.reset_ms)
    ));
    line(format!(
        "{:>12}  the program's next read, write or poll gets ETIMEDOUT",
        ""
    ));
    if t.counter_wrapped {
        let text = format!(
            "(the run that sent probe {} was already past the user timeout, but the kernel's \
             count of probes out, a u8, had wrapped to 0 after {} probes: it resets only with \
             a probe out, so one more went out and the reset waited one more interval)",
            t.probes,
            t.probes - 1
        );
        line(
            wrap(&text, &" ".repeat(14), &" ".repeat(15))
                .trim_end()
                .to_owned(),
        );
    }
    line(String::new());
    line(format!(
        "Time to detect: {} ({} s after the last segment received)",
        duration_ms(t.reset_ms),
        t.reset_ms as f64 / 1000.0
    ));
    line(String::new());
    line("Every state the peer can be in:".into());
    for p in &e.peer_states {
        let outcome = match p.detected() {
            Detected::After { error, after_ms } => {
                format!("{error} after {}", duration_ms(after_ms))
            }
            Detected::Never => "never; needs an app heartbeat".into(),
            Detected::NothingToDetect => "stays open".into(),
        };
        line(format!(
            "  {:<12}{:<50}{outcome}",
            p.state.name(),
            p.peer_does
        ));
    }
    if let Some(u) = &e.unacked_data {
        line(String::new());
        line(
            "With data unacknowledged the keepalive timer stays silent and retransmission decides:"
                .into(),
        );
        let plural = if u.retransmissions == 1 { "" } else { "s" };
        let probe = if u.tail_loss_probe {
            "a tail-loss probe, then "
        } else {
            ""
        };
        let text = format!(
            "ETIMEDOUT {} after the first unanswered send: {probe}{} retransmission{plural}",
            duration_ms(u.give_up_ms),
            u.retransmissions,
        );
        line(wrap(&text, "  ", "    ").trim_end().to_owned());
        let limit = match u.decided_by {
            Decider::UserTimeout => format!("TCP_USER_TIMEOUT {}", duration_ms(u.limit_ms)),
            _ => format!(
                "net.ipv4.tcp_retries2 = {}, modelled as {}",
                u.retries2,
                duration_ms(u.limit_ms)
            ),
        };
        let sooner = match u.sooner_ms {
            Some((from, to)) => format!(
                " The limit falls just after a run: timers the wheel runs late, or a slower \
                 path, can end it one doubling sooner, between {} and {}.",
                duration_ms(from),
                duration_ms(to)
            ),
            None => String::new(),
        };
        let wrapped = if u.counter_wrapped {
            format!(
                " The run that reached the limit had {} retransmissions behind it, and the \
                 kernel's count of them, a u8, read 0: it gives up only with one counted, so it \
                 retransmitted once more and gave up at the next run.",
                u.retransmissions - 1
            )
        } else {
            String::new()
        };
        let text = format!(
            "The limit ({limit}) counts from the first retransmission, at {}, and the kernel \
             gives up at the first retransmission timer run past it.{wrapped} The RTO doubles \
             up to {}; these times are for the fastest path ({} RTO, from \
             net.ipv4.tcp_rto_min_us = {}), on time.{sooner}",
            duration_ms(u.first_retransmission_ms),
            duration_ms(u.rto_max_ms),
            if u.rto_ms < 1000 {
                format!("{}ms", u.rto_ms)
            } else {
                duration_ms(u.rto_ms)
            },
            u.rto_min_us,
        );
        line(wrap(&text, "  ", "  ").trim_end().to_owned());
    }
    if !e.middleboxes_outlasted.is_empty() {
        line(String::new());
        line(format!(
            "Warning: idle {} is not shorter than these middleboxes' idle timeouts; they forget",
            duration_s(e.settings.idle.into())
        ));
        line(
            "the connection before probe 1 refreshes it, and the next packet is dropped or reset:"
                .into(),
        );
        let rows: Vec<[String; 3]> = e
            .middleboxes_outlasted
            .iter()
            .map(|m| {
                [
                    m.name.to_string(),
                    duration_s(m.idle_timeout_s),
                    m.id.to_string(),
                ]
            })
            .collect();
        for row in middlebox_table(&rows) {
            line(row);
        }
        if let Some(min) = e.tightest_middlebox_s() {
            line(format!(
                "  Behind any of them, keep idle below {} (sources: docs/middleboxes.tsv).",
                duration_s(min)
            ));
        }
    }
    out
}

/// The middlebox rows (name, idle timeout, id) as a table whose columns are as wide as their
/// widest cell: names left, times right, ids left. Where that would pass [`WIDTH`] the name
/// column narrows and a longer name folds at spaces onto lines of its own, the time staying on
/// the name's last line.
fn middlebox_table(rows: &[[String; 3]]) -> Vec<String> {
    let widest = |i: usize| rows.iter().map(|r| cols(&r[i])).max().unwrap_or(0);
    let (time_w, id_w) = (widest(1), widest(2));
    // "  " name "  " time "  " id
    let fixed = 2 + 2 + time_w + 2 + id_w;
    let name_w = widest(0).min(WIDTH.saturating_sub(fixed).max(20));
    let mut out = Vec::new();
    for [name, time, id] in rows {
        let mut parts: Vec<String> = Vec::new();
        for word in name.split(' ').filter(|w| !w.is_empty()) {
            match parts.last_mut() {
                Some(last) if cols(last) + 1 + cols(word) <= name_w => {
                    last.push(' ');
                    last.push_str(word);
                }
                _ => parts.push(word.to_owned()),
            }
        }
        let last = parts.pop().unwrap_or_default();
        for part in parts {
            out.push(format!("  {part}"));
        }
        let pad = " ".repeat(name_w.saturating_sub(cols(&last)));
        out.push(format!("  {last}{pad}  {time:>time_w$}  {id}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, time: &str, id: &str) -> [String; 3] {
        [name.into(), time.into(), id.into()]
    }

    #[test]
    fn the_middlebox_table_measures_its_columns() {
        let rows = [
            row("AWS NAT gateway", "5m50s", "aws-nat-gateway"),
            row(
                "RFC 5382 NAT, the least it may keep an idle established connection",
                "2h4m",
                "rfc5382",
            ),
        ];
        let out = middlebox_table(&rows);
        assert_eq!(out.len(), 2);
        // The times end in one column, the ids start in one.
        let end = |l: &str, t: &str| l.find(t).unwrap() + t.len();
        assert_eq!(end(&out[0], "5m50s"), end(&out[1], "2h4m"));
        assert_eq!(out[0].find("aws-nat"), out[1].find("rfc5382"));
        assert!(out.iter().all(|l| cols(l) <= WIDTH), "{out:#?}");
        // A name that cannot fit folds, and the time stays in its column.
        let long = "word ".repeat(30);
        let rows = [row(&long, "1m", "x"), row("short", "10m", "y")];
        let out = middlebox_table(&rows);
        assert!(
            out.len() > 2 && out.iter().all(|l| cols(l) <= WIDTH),
            "{out:#?}"
        );
        let last = &out[out.len() - 2];
        assert_eq!(end(last, "1m"), end(&out[out.len() - 1], "10m"));
    }
}
