//! `set`, `get` and `unset` for a cgroup: rendering what keepalive::cgroup::policy did.

use crate::UsageError;
use crate::cli::{CgroupTarget, SetArgs, UnsetArgs};
use crate::render::json;
use keepalive::Policy;
use keepalive::cgroup::Cgroup;
use keepalive::cgroup::policy::{self, Attached};
use keepalive::sysctl::Sysctls;
use std::fmt::Write;

/// The cgroup named; `--cgroup-of` a process in the root cgroup is refused for `set` (it
/// would cover the whole machine) and taken as it is for reading and removing.
fn resolve(target: &CgroupTarget, setting: bool) -> anyhow::Result<Cgroup> {
    Ok(match (&target.cgroup, target.cgroup_of) {
        (Some(path), _) => Cgroup::open(path)?,
        (None, Some(pid)) if setting => Cgroup::of_workload(pid)?,
        (None, Some(pid)) => Cgroup::of_pid(pid)?,
        (None, None) => return Err(UsageError::err("give --cgroup PATH or --cgroup-of PID")),
    })
}

fn describe(a: &Attached) -> String {
    let policy = if a.policy.is_empty() {
        "keepalive on".to_owned()
    } else {
        a.policy.to_string()
    };
    format!("{policy}{}", if a.force { ", force" } else { "" })
}

pub fn set(args: &SetArgs, policy: &Policy) -> anyhow::Result<()> {
    if args.fd.is_some() || args.all {
        return Err(UsageError::err(
            "--fd and --all go with --pid, not with a cgroup",
        ));
    }
    if policy.is_empty() {
        return Err(UsageError::err(
            "nothing to set: give --idle, --interval, --count, --user-timeout or --policy (a \
             cgroup's policy switches keepalive on with them)",
        ));
    }
    let cg = resolve(&args.target, true)?;
    let defaults = Sysctls::current().read()?.settings();
    let report = policy::set(&cg, policy, args.force, &defaults, args.dry_run)?;
    if args.json {
        json(&report)?;
    } else {
        let mut out = String::new();
        let what = if policy.is_empty() {
            "keepalive on".to_owned()
        } else {
            policy.to_string()
        };
        let force = if args.force { ", force" } else { "" };
        let verb = if report.dry_run {
            "would attach"
        } else {
            "attached"
        };
        writeln!(
            out,
            "cgroup {} (id {}): {verb} {what}{force}",
            cg.path.display(),
            cg.id
        )?;
        if let Some(old) = &report.replaced {
            writeln!(
                out,
                "  replaces {} (no gap: the link's program was swapped in one step)",
                describe(old)
            )?;
        }
        let processes = report.existing.len();
        let sockets: usize = report.existing.iter().map(|e| e.sockets).sum();
        let changed = report.changed_now();
        let verb = if report.dry_run {
            "would change"
        } else {
            "changed"
        };
        writeln!(
            out,
            "  existing sockets: {verb} {changed} of {sockets} TCP sockets in {processes} process{}",
            if processes == 1 { "" } else { "es" }
        )?;
        for e in report.existing.iter().filter(|e| e.error.is_some()) {
            writeln!(
                out,
                "    pid {}: {}",
                e.pid,
                e.error.as_deref().unwrap_or("")
            )?;
        }
        for e in report
            .existing
            .iter()
            .filter(|e| !e.outside_connections.is_empty() && args.force)
        {
            let fds: Vec<String> = e.outside_connections.iter().map(i32::to_string).collect();
            let (noun, verb, it) = if fds.len() == 1 {
                ("connection fd", "was", "it")
            } else {
                ("connection fds", "were", "they")
            };
            writeln!(
                out,
                "    pid {}: {noun} {} {verb} made before the process joined this cgroup: {it} \
                 {} the policy now, but {} another cgroup's, and --force cannot guard {} \
                 against the program's own setsockopt",
                e.pid,
                fds.join(", "),
                if fds.len() == 1 { "has" } else { "have" },
                if fds.len() == 1 { "it is" } else { "they are" },
                if fds.len() == 1 { "it" } else { "them" },
            )?;
        }
        for e in report
            .existing
            .iter()
            .filter(|e| !e.outside_listeners.is_empty())
        {
            let fds: Vec<String> = e.outside_listeners.iter().map(i32::to_string).collect();
            writeln!(
                out,
                "    pid {}: listener fd {} was opened before the process joined this cgroup, so its \
                 connections are not the cgroup's: the policy was set on the listener itself \
                 (they inherit it; --force cannot guard them and unset leaves it)",
                e.pid,
                fds.join(", ")
            )?;
        }
        if report.dry_run {
            writeln!(out, "  nothing was loaded or changed (dry run)")?;
        } else {
            writeln!(
                out,
                "  new connections: covered from now on, client and server side, IPv4 and IPv6{}",
                if args.force {
                    "; the processes' own setsockopt of these options on the cgroup's sockets now does nothing"
                } else {
                    "; the processes' own setsockopt calls still win (--force to stop them)"
                }
            )?;
            writeln!(
                out,
                "  pinned at {} (stays after this command; `keepalive unset --cgroup {}` removes it)",
                policy::pin_dir(cg.id).display(),
                crate::run::shell_quote(&cg.path.to_string_lossy())
            )?;
        }
        crate::render::out(&crate::render::fit(&out))?;
    }
    if !report.dry_run && report.existing.iter().any(|e| e.error.is_some()) {
        return Err(anyhow::anyhow!(
            "some existing sockets in cgroup {} were not changed (see above); new connections are covered",
            cg.path.display()
        ));
    }
    Ok(())
}

pub fn get(target: &CgroupTarget, as_json: bool) -> anyhow::Result<()> {
    let cg = resolve(target, false)?;
    let view = policy::get(&cg)?;
    if as_json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            view: &'a policy::View,
            effective: Option<String>,
        }
        return json(&Out {
            view: &view,
            effective: view.effective().map(|p| p.to_string()),
        });
    }
    let mut out = String::new();
    writeln!(out, "cgroup {} (id {})", cg.path.display(), cg.id)?;
    if view.policies.is_empty() {
        out.push_str(&crate::render::wrap(
            "no keepalive policy here or above: new connections get the program's own settings \
             or the kernel's defaults",
            "  ",
            "  ",
        ));
    }
    for a in &view.policies {
        let whose = if a.cgroup.id == cg.id {
            "here".to_owned()
        } else {
            format!("from {}", a.cgroup.path.display())
        };
        writeln!(out, "  {whose}: {}", describe(a))?;
        let plural = |n: u64| if n == 1 { "" } else { "s" };
        let forced = if a.force {
            format!(
                ", {} setsockopt call{} made no-ops",
                a.forced_calls,
                plural(a.forced_calls)
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "    since set: {} connection{} given the policy, {} refused by the kernel{forced}",
            a.connections,
            plural(a.connections),
            a.failed
        )?;
    }
    if view.policies.len() > 1
        && let Some(effective) = view.effective()
    {
        writeln!(
            out,
            "  in effect: {effective} (an outer cgroup's program runs last, so its values win)"
        )?;
    }
    for f in &view.foreign {
        writeln!(
            out,
            "  also on {}'s {} hook: program {} '{}' (not keepalive's; it may change the same options)",
            f.cgroup.display(),
            f.hook,
            f.id,
            f.name
        )?;
    }
    crate::render::out(&crate::render::fit(&out))?;
    Ok(())
}

pub fn unset(args: &UnsetArgs) -> anyhow::Result<()> {
    let cg = resolve(&args.target, false)?;
    let report = policy::unset(&cg)?;
    if args.json {
        return json(&report);
    }
    let mut out = String::new();
    match &report.removed {
        Some(a) => writeln!(
            out,
            "cgroup {}: removed {}; its programs are detached and nothing of keepalive's is pinned for it; \
             sockets keep the options they have",
            cg.path.display(),
            describe(a)
        )?,
        None => writeln!(
            out,
            "cgroup {}: no keepalive policy was attached; nothing to remove",
            cg.path.display()
        )?,
    }
    let removed = report.removed.is_some();
    crate::render::out(&crate::render::fit(&out)).map_err(|e| {
        if removed {
            let why = format!("the change was made, but its report could not be written: {e}");
            e.context(why)
        } else {
            e
        }
    })
}
