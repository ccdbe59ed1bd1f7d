//! cgroup v2 directories: finding the hierarchy, naming a cgroup by path or by a process in
//! it, and the processes inside. A cgroup is what a container or a systemd service is made
//! of, so a policy attached to one reaches everything the service runs ([`policy`]).
//!
//! The kernel names a cgroup by its id, which is the inode number of its directory in the
//! cgroup2 filesystem (kernfs; `cgroup_id()`), the number sock_diag reports for a socket
//! (`INET_DIAG_CGROUP_ID`) and BPF link info carries. A socket belongs to the cgroup of the
//! task that created it (`sk->sk_cgrp_data`, set in `sk_alloc()`); an accepted socket to its
//! listener's.

pub mod policy;

use crate::error::Error;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// `CGROUP2_SUPER_MAGIC` (include/uapi/linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A cgroup v2 directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Cgroup {
    /// Absolute, without symlinks.
    pub path: PathBuf,
    /// The kernel's cgroup id.
    pub id: u64,
    /// Depth below the hierarchy's root (the root is 0), as `cgroup->level` counts.
    pub level: u32,
    /// Where the cgroup2 hierarchy is mounted.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub mount: PathBuf,
}

/// The cgroup2 mounts of this mount namespace, from /proc/self/mountinfo, with the path
/// within the hierarchy each one shows (field 4, "root").
fn cgroup2_mounts() -> Result<Vec<(PathBuf, PathBuf)>, Error> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Io {
        what: "/proc/self/mountinfo".into(),
        source,
    })?;
    let mut out = Vec::new();
    for line in info.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let fields: Vec<&str> = left.split(' ').collect();
        if let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) {
            out.push((
                PathBuf::from(unescape(point)),
                PathBuf::from(unescape(root)),
            ));
        }
    }
    Ok(out)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the cgroup2 hierarchy is mounted (the first mount: /sys/fs/cgroup on most hosts,
/// /sys/fs/cgroup/unified on hybrid ones).
pub fn mount_point() -> Result<PathBuf, Error> {
    cgroup2_mounts()?
        .into_iter()
        .next()
        .map(|(point, _)| point)
        .ok_or_else(|| Error::NotACgroup {
            path: PathBuf::from("/sys/fs/cgroup"),
            why: "no cgroup2 filesystem is mounted (see /proc/self/mountinfo)".into(),
        })
}

/// The filesystem type (`statfs`'s `f_type`, a magic number) of what holds `path`.
pub(crate) fn fs_type(path: &Path) -> io::Result<i64> {
    // f_type is a long on some architectures and an int on others.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::statfs(path)
        .map(|s| s.f_type as i64)
        .map_err(io::Error::from)
}

fn depth(p: &Path) -> u32 {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count() as u32
}

impl Cgroup {
    /// The cgroup at `path`; an error (bad input) if it is not a directory of a cgroup2 mount.
    pub fn open(path: &Path) -> Result<Cgroup, Error> {
        let not = |why: String| Error::NotACgroup {
            path: path.to_path_buf(),
            why,
        };
        let real = path.canonicalize().map_err(|e| not(e.to_string()))?;
        let meta = real.metadata().map_err(|e| not(e.to_string()))?;
        if !meta.is_dir() {
            return Err(not("not a directory".into()));
        }
        let fs = fs_type(&real).map_err(|e| not(e.to_string()))?;
        let mounts = cgroup2_mounts()?;
        let (mount, root) = mounts
            .iter()
            .filter(|(point, _)| real.starts_with(point))
            .max_by_key(|(point, _)| point.as_os_str().len())
            .filter(|_| fs == CGROUP2_SUPER_MAGIC)
            .ok_or_else(|| {
                let at = mounts.first().map_or_else(
                    || "no cgroup2 filesystem is mounted".to_owned(),
                    |(p, _)| format!("cgroup v2 is mounted at {}", p.display()),
                );
                not(format!("not in a cgroup v2 hierarchy ({at})"))
            })?;
        let below = real.strip_prefix(mount).unwrap_or(Path::new(""));
        Ok(Cgroup {
            id: meta.ino(),
            level: depth(root) + depth(below),
            mount: mount.clone(),
            path: real,
        })
    }

    /// The cgroup process `pid` lives in (its `0::` line in /proc/PID/cgroup).
    pub fn of_pid(pid: u32) -> Result<Cgroup, Error> {
        crate::process::check(u64::from(pid))?;
        let file = format!("/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&file).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::NoSuchProcess(pid),
            _ => Error::Io {
                what: file.clone(),
                source,
            },
        })?;
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| Error::NotACgroup {
                path: PathBuf::from(&file),
                why: format!("process {pid} is in no cgroup v2 cgroup (no 0:: line)"),
            })?;
        let rel = Path::new(rel.trim_end());
        let outside = |why: String| Error::CgroupOutOfView { why };
        // The path is relative to this process's cgroup namespace, and so is each mount's root
        // (mountinfo field 4): the cgroup is under the mount that shows that root. A root or a
        // path that climbs out of the namespace (`/..`) names cgroups whose place in the
        // hierarchy this namespace cannot see.
        if rel.components().any(|c| c == Component::ParentDir) {
            return Err(outside(format!(
                "process {pid} is in cgroup {}, outside this cgroup namespace: run keepalive in \
                 the namespace that holds it, or give --cgroup PATH",
                rel.display()
            )));
        }
        let mounts = cgroup2_mounts()?;
        let found = mounts
            .iter()
            .filter(|(_, root)| !root.components().any(|c| c == Component::ParentDir))
            .filter_map(|(point, root)| Some((point, rel.strip_prefix(root).ok()?)))
            .max_by_key(|(point, _)| point.as_os_str().len());
        match found {
            Some((point, below)) => Cgroup::open(&point.join(below)),
            None => Err(outside(match mounts.first() {
                Some((point, root)) => format!(
                    "process {pid} is in cgroup {}, which the cgroup2 mount at {} does not show \
                     (it shows {} of this cgroup namespace): run keepalive in the namespace \
                     that mounted it, or give --cgroup PATH",
                    rel.display(),
                    point.display(),
                    root.display()
                ),
                None => "no cgroup2 filesystem is mounted (see /proc/self/mountinfo)".into(),
            })),
        }
    }

    /// The cgroup that process `pid` is the workload of (a container's main process, a
    /// service's MainPID): [`Cgroup::of_pid`], but a process in the hierarchy's root (pid 1 on
    /// most hosts, every kernel thread) is refused, since its cgroup is the whole machine.
    pub fn of_workload(pid: u32) -> Result<Cgroup, Error> {
        let cg = Cgroup::of_pid(pid)?;
        if cg.path == cg.mount {
            return Err(Error::RootCgroup { pid, path: cg.path });
        }
        Ok(cg)
    }

    /// This cgroup and its ancestors up to the hierarchy's root, innermost first.
    pub fn lineage(&self) -> Vec<Cgroup> {
        let mut out = vec![self.clone()];
        let mut at = self.path.clone();
        while at != self.mount && at.pop() {
            match Cgroup::open(&at) {
                Ok(cg) => out.push(cg),
                Err(_) => break,
            }
        }
        out
    }

    /// The ids of this cgroup and every cgroup below it.
    pub fn subtree_ids(&self) -> Vec<u64> {
        let mut ids = Vec::new();
        walk(&self.path, &mut |_, meta| ids.push(meta.ino()));
        ids
    }

    /// Every process in this cgroup and the cgroups below it (they are all under a policy
    /// attached here).
    pub fn processes(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        walk(&self.path, &mut |dir, _| {
            if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        });
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// Visits `dir` and every directory below it; cgroup directories vanish at any time, so what
/// cannot be read is skipped.
fn walk(dir: &Path, each: &mut impl FnMut(&Path, &std::fs::Metadata)) {
    let Ok(meta) = dir.symlink_metadata() else {
        return;
    };
    each(dir, &meta);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&entry.path(), each);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/sys/fs/cgroup/a\040b"), "/sys/fs/cgroup/a b");
        assert_eq!(unescape(r"/x\\y"), r"/x\\y");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
    }

    #[test]
    fn this_process_has_a_cgroup() {
        let me = Cgroup::of_pid(std::process::id()).unwrap();
        assert!(me.path.starts_with(&me.mount), "{me:?}");
        assert_eq!(me.lineage().last().unwrap().path, me.mount);
        assert!(me.subtree_ids().contains(&me.id));
        assert!(me.processes().contains(&std::process::id()));
    }

    #[test]
    fn a_plain_directory_is_not_a_cgroup() {
        let e = Cgroup::open(Path::new("/tmp")).unwrap_err();
        assert!(
            e.to_string().contains("not in a cgroup v2 hierarchy"),
            "{e}"
        );
        assert_eq!(e.class(), crate::Class::BadInput);
    }
}
