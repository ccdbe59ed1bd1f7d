//! `keepalive explain`: the probe timeline and time to detect, rendered.

use crate::cli::ExplainArgs;
use crate::render::{duration_ms, duration_s, json, wrap};
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
    crate::render::out(&human(&report))?;
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
        line(format!(
            "  ETIMEDOUT {} after the first unanswered send: {probe}{} retransmission{plural}",
            duration_ms(u.give_up_ms),
            u.retransmissions,
        ));
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
        let text = format!(
            "The limit ({limit}) counts from the first retransmission, at {}, and the kernel \
             gives up at the first retransmission timer run past it. The RTO doubles up to {}; \
             these times are for the fastest path ({}ms RTO), on time.{sooner}",
            duration_ms(u.first_retransmission_ms),
            duration_ms(u.rto_max_ms),
            keepalive::policy::timeline::FASTEST_RTO_MS,
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
        for m in &e.middleboxes_outlasted {
            line(format!(
                "  {:<58}{:>10}  {}",
                m.name,
                duration_s(m.idle_timeout_s),
                m.id
            ));
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
