//! `keepalive sysctl show|set|persist|reset`, rendered.

use crate::cli::{NetnsArg, SysctlCommand};
use crate::render::{duration_ms, json, out};
use keepalive::netns::NetNs;
use keepalive::sysctl::{self, Change, Defaults, Detection, Origin, Sysctls};
use serde::Serialize;
use std::fmt::Write;

fn sysctls(target: &NetnsArg) -> anyhow::Result<Sysctls> {
    Ok(match &target.netns {
        Some(name) => Sysctls::netns(NetNs::named(name)?),
        None => Sysctls::current(),
    })
}

pub fn run(cmd: &SysctlCommand) -> anyhow::Result<()> {
    match cmd {
        SysctlCommand::Show(target) => show(target),
        SysctlCommand::Set { policy, target } => {
            let s = sysctls(target)?;
            let change = s.apply(&policy.to_policy(None)?)?;
            print_change(&s, &change, target.json)
        }
        SysctlCommand::Reset(target) => {
            let s = sysctls(target)?;
            let change = s.reset()?;
            print_change(&s, &change, target.json)
        }
        SysctlCommand::Persist {
            policy,
            dir,
            target,
        } => {
            let persisted = sysctls(target)?.persist(dir, &policy.to_policy(None)?)?;
            // The file is written; a report that cannot be written says so.
            let written = |r: anyhow::Result<()>| {
                r.map_err(|e| {
                    let why = format!(
                        "{} was written, but the report could not be: {e}",
                        persisted.path.display()
                    );
                    e.context(why)
                })
            };
            if target.json {
                return written(json(&persisted));
            }
            let s = persisted.settings;
            let mut o = String::new();
            let _ = writeln!(
                o,
                "wrote {}",
                crate::render::printable(&persisted.path.display().to_string())
            );
            let _ = writeln!(
                o,
                "  net.ipv4.tcp_keepalive_time = {}, _intvl = {}, _probes = {} (applied at boot)",
                s.idle, s.interval, s.count
            );
            if persisted.live.settings() != s {
                let _ = writeln!(
                    o,
                    "  the live values differ; `keepalive sysctl set` applies them now"
                );
            }
            written(out(&crate::render::fit(&o)))
        }
    }
}

fn show(target: &NetnsArg) -> anyhow::Result<()> {
    let s = sysctls(target)?;
    let (values, rows) = s.show()?;
    let detect = values.detection();
    if target.json {
        #[derive(Serialize)]
        struct Show<'a> {
            netns: Option<&'a str>,
            values: Defaults,
            rows: Vec<sysctl::Row>,
            detect: Detection,
        }
        return json(&Show {
            netns: s.netns_name(),
            values,
            rows,
            detect,
        });
    }
    let mut o = String::new();
    let _ = writeln!(o, "Keepalive defaults in {}", s.scope());
    let _ = writeln!(o, "  {:<32}{:>9}{:>9}  set by", "sysctl", "value", "kernel");
    // A file's name and what it says come from the file system: escaped. The origin folds
    // under its own column, so the other columns stay aligned.
    let shown =
        |p: &std::path::Path| crate::render::printable(&p.display().to_string()).into_owned();
    for row in &rows {
        let origin = match &row.origin {
            Origin::KernelDefault => "kernel default".to_owned(),
            Origin::BootFile(b) => format!("{}:{}", shown(&b.file), b.line),
            Origin::Runtime { boot: None } => "changed at runtime".to_owned(),
            Origin::Runtime { boot: Some(b) } => {
                format!(
                    "changed at runtime ({}:{} says {})",
                    shown(&b.file),
                    b.line,
                    crate::render::printable(&b.value)
                )
            }
        };
        let columns = format!(
            "  {:<32}{:>9}{:>9}  ",
            row.key, row.value, row.kernel_default
        );
        let indent = " ".repeat(columns.len());
        o.push_str(&crate::render::wrap(&origin, &columns, &indent));
    }
    let _ = writeln!(
        o,
        "A dead peer goes unnoticed for {} on an idle connection with keepalive on,",
        duration_ms(detect.idle_connection_ms)
    );
    let _ = writeln!(
        o,
        "and for {} while data is unacknowledged.",
        duration_ms(detect.unacked_data_ms)
    );
    out(&crate::render::fit(&o))
}

fn print_change(s: &Sysctls, change: &Change, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        #[derive(Serialize)]
        struct Out<'a> {
            netns: Option<&'a str>,
            #[serde(flatten)]
            change: &'a Change,
        }
        return json(&Out {
            netns: s.netns_name(),
            change,
        })
        .map_err(|e| {
            let why = format!("the change was made, but its report could not be written: {e}");
            e.context(why)
        });
    }
    let mut o = String::new();
    if change.written.is_empty() {
        let _ = writeln!(o, "{}: already set, nothing written", s.scope());
    }
    for key in &change.written {
        let _ = writeln!(
            o,
            "  {:<32}{:>7} -> {}",
            key.name(),
            change.before.get(*key),
            change.after.get(*key)
        );
    }
    let (before, after) = (change.before.detection(), change.after.detection());
    let _ = writeln!(
        o,
        "A silent peer on an idle connection is now detected after {} (was {}) in {}.",
        duration_ms(after.idle_connection_ms),
        duration_ms(before.idle_connection_ms),
        s.scope(),
    );
    if s.netns_name().is_none() && !change.written.is_empty() && sysctl::in_initial_netns() {
        let _ = writeln!(
            o,
            "Not kept across a reboot: `keepalive sysctl persist` writes a sysctl.d drop-in."
        );
    }
    // The change is made; a report that cannot be written says so (exit 1), and main keeps
    // a broken pipe quiet.
    out(&crate::render::fit(&o)).map_err(|e| {
        let why = format!("the change was made, but its report could not be written: {e}");
        e.context(why)
    })
}
