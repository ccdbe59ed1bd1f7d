//! A keepalive policy attached to a cgroup: every TCP connection its processes make or
//! accept from now on gets the policy when it reaches ESTABLISHED (the sock_ops program), the
//! sockets that exist now get it through pidfd_getfd ([`crate::retrofit`]), and with force
//! the processes' own setsockopt calls for the policy's options do nothing (the cgroup
//! setsockopt program). See [`crate::bpf::programs`] for what each program does.
//!
//! The attachment outlives the command: both programs are attached through BPF links, and
//! the links and the record map are pinned in the BPF filesystem under
//! `/sys/fs/bpf/keepalive/cgroup-ID/` (`sock_ops`, `setsockopt`, `record`). A pinned link
//! stays attached until it is unpinned and its last descriptor closes, or it is detached
//! (`BPF_LINK_DETACH`), which [`unset`] does.
//!
//! Kernel versions (from the kernel's history): bpf_setsockopt accepts SO_KEEPALIVE,
//! TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and TCP_USER_TIMEOUT from sock_ops programs since
//! 5.9 (one commit: "bpf: Add SO_KEEPALIVE and related options to bpf_setsockopt"); cgroup
//! setsockopt programs and `optlen = -1` since 5.3 ("bpf: implement getsockopt and setsockopt
//! hooks"); BPF links for cgroups and `BPF_LINK_UPDATE` since 5.7, link info since 5.8,
//! `BPF_LINK_DETACH` since 5.9. So the whole needs 5.9.
//!
//! Several cgroups on one path may carry policies. The kernel runs a cgroup's own programs
//! first and its ancestors' after them (kernel/bpf/cgroup.c, `compute_effective_progs()`), so
//! for an option two policies both set, the outermost cgroup's value is the one a connection
//! keeps; [`View::effective`] works that out.

use super::Cgroup;
use crate::bpf::programs::{self, Record};
use crate::bpf::sys;
use crate::diag::{self, TcpState};
use crate::error::Error;
use crate::netns::NetNs;
use crate::policy::{Field, Key, Policy, Settings};
use crate::retrofit;
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where keepalive pins its objects.
pub const PIN_ROOT: &str = "/sys/fs/bpf/keepalive";
/// The BPF filesystem's mount point, by convention.
const BPFFS: &str = "/sys/fs/bpf";
/// `BPF_FS_MAGIC` (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The oldest kernel with everything this module uses (see the module's doc).
const NEEDS: (u32, u32) = (5, 9);
const NEEDS_TEXT: &str = "5.9";

const SOCK_OPS_PIN: &str = "sock_ops";
const FORCE_PIN: &str = "setsockopt";
const RECORD_PIN: &str = "record";

/// The directory holding the pins for cgroup `id`.
pub fn pin_dir(id: u64) -> PathBuf {
    Path::new(PIN_ROOT).join(format!("cgroup-{id}"))
}

/// A keepalive policy attached to one cgroup, as its record says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Attached {
    pub cgroup: Cgroup,
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::cgroup::policy::as_text")
    )]
    pub policy: Policy,
    /// The processes' own setsockopt calls for the policy's options do nothing.
    pub force: bool,
    /// Connections that got every option since the policy was set.
    pub connections: u64,
    /// Connections where the kernel refused an option.
    pub failed: u64,
    /// setsockopt calls of the processes' that were made no-ops.
    pub forced_calls: u64,
    /// The programs' ids (`bpftool prog show id N`).
    pub sock_ops_prog: u32,
    pub force_prog: Option<u32>,
}

#[cfg(feature = "serde")]
fn as_text<S: serde::Serializer>(p: &Policy, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// A BPF program attached to a cgroup on the hooks keepalive uses, that keepalive did not put
/// there.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Foreign {
    pub cgroup: PathBuf,
    /// "sock_ops" or "setsockopt".
    pub hook: &'static str,
    pub id: u32,
    pub name: String,
}

/// What applies to a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct View {
    pub cgroup: Cgroup,
    /// keepalive's policies on the cgroup and its ancestors, innermost first.
    pub policies: Vec<Attached>,
    /// Other programs on the same hooks.
    pub foreign: Vec<Foreign>,
}

impl View {
    /// What a new connection of the cgroup ends up with: per option, the outermost policy that
    /// sets it; `None` when no policy applies.
    pub fn effective(&self) -> Option<Policy> {
        let mut it = self.policies.iter().rev();
        let mut out = it.next()?.policy;
        for inner in it {
            for key in [Key::Idle, Key::Interval, Key::Count, Key::UserTimeout] {
                if !out.has(key) && inner.policy.has(key) {
                    let value = value_of(&inner.policy, key);
                    if let Some(field) = value.and_then(|v| Field::checked(key, v.into())) {
                        let _ = out.insert(field);
                    }
                }
            }
        }
        Some(out)
    }
}

fn value_of(p: &Policy, key: Key) -> Option<u32> {
    match key {
        Key::Idle => p.idle(),
        Key::Interval => p.interval(),
        Key::Count => p.count(),
        Key::UserTimeout => match p.user_timeout() {
            Some(crate::policy::UserTimeout::Millis(ms)) => Some(ms),
            _ => None,
        },
        _ => None,
    }
}

/// What [`set`] did to one process's existing sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Existing {
    pub pid: u32,
    /// Sockets changed (or, on a dry run, that would be).
    pub changed: usize,
    /// TCP sockets seen.
    pub sockets: usize,
    /// Why the process's sockets could not be reached, when they could not.
    pub error: Option<String>,
    /// Listeners (descriptors) made before the process joined the cgroup: their sockets
    /// belong to another cgroup, so its programs do not see their connections. They were given
    /// the policy directly; force does not guard their connections and `unset` leaves them.
    pub outside_listeners: Vec<i32>,
    /// Connections (descriptors) made before the process joined the cgroup: they got the
    /// policy now, but they are another cgroup's sockets, so force does not guard them.
    pub outside_connections: Vec<i32>,
}

/// What [`set`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SetReport {
    pub cgroup: Cgroup,
    #[cfg_attr(
        feature = "serde",
        serde(serialize_with = "crate::cgroup::policy::as_text")
    )]
    pub policy: Policy,
    pub force: bool,
    /// The policy this one replaced.
    pub replaced: Option<Attached>,
    /// The existing sockets, process by process.
    pub existing: Vec<Existing>,
    pub dry_run: bool,
}

impl SetReport {
    /// Existing sockets changed now.
    pub fn changed_now(&self) -> usize {
        self.existing.iter().map(|e| e.changed).sum()
    }
}

/// Refuses a kernel older than `NEEDS`.
fn kernel_check(what: &'static str) -> Result<(), Error> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    check_release(what, release.trim())
}

fn check_release(what: &'static str, release: &str) -> Result<(), Error> {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < NEEDS {
        return Err(Error::KernelTooOld {
            what,
            needs: NEEDS_TEXT,
            running: release.to_owned(),
        });
    }
    Ok(())
}

/// CAP_BPF (or, before 5.8, CAP_SYS_ADMIN) loads the programs; CAP_NET_ADMIN loads network
/// programs and attaches them to cgroups (`bpf_net_capable()`).
fn capability_check(what: &str) -> Result<(), Error> {
    use rustix::thread::CapabilitySet as C;
    let have = rustix::thread::capabilities(None)
        .map(|c| c.effective)
        .unwrap_or(C::empty());
    let admin = have.contains(C::SYS_ADMIN);
    let mut missing = Vec::new();
    if !admin && !have.contains(C::BPF) {
        missing.push("CAP_BPF");
    }
    if !admin && !have.contains(C::NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let held: Vec<&str> = [
        (C::BPF, "CAP_BPF"),
        (C::NET_ADMIN, "CAP_NET_ADMIN"),
        (C::SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(c, _)| have.contains(*c))
    .map(|(_, n)| n)
    .collect();
    Err(Error::Capability {
        what: what.to_owned(),
        missing: missing.join(" and "),
        have: if held.is_empty() {
            "none of them".into()
        } else {
            held.join(", ")
        },
    })
}

fn bpf_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Bpf { what, source }
}

/// Mounts the BPF filesystem at /sys/fs/bpf when nothing is mounted there (as `bpftool`
/// does), and makes keepalive's directory in it, readable by root only.
fn ensure_pin_dir(id: u64) -> Result<PathBuf, Error> {
    ensure_pin_root()?;
    let dir = pin_dir(id);
    match rustix::fs::mkdir(&dir, rustix::fs::Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(dir),
        Err(e) => Err(bpf_err(format!("creating {}", dir.display()))(e.into())),
    }
}

/// The BPF filesystem mounted, and keepalive's directory in it (0700).
fn ensure_pin_root() -> Result<(), Error> {
    let mounted = super::fs_type(Path::new(BPFFS)).is_ok_and(|t| t == BPF_FS_MAGIC);
    if !mounted {
        rustix::mount::mount(
            "bpf",
            BPFFS,
            "bpf",
            rustix::mount::MountFlags::empty(),
            c"mode=0700",
        )
        .map_err(|e| bpf_err(format!("mounting the BPF filesystem at {BPFFS}"))(e.into()))?;
    }
    match rustix::fs::mkdir(PIN_ROOT, rustix::fs::Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(bpf_err(format!("creating {PIN_ROOT}"))(e.into())),
    }
}

/// Removes what [`ensure_pin_dir`] made, if it is empty.
fn remove_pin_dir(id: u64) {
    let _ = std::fs::remove_dir(pin_dir(id));
    let _ = std::fs::remove_dir(PIN_ROOT);
}

fn open_pinned(path: &Path) -> Result<Option<OwnedFd>, Error> {
    match sys::pinned(path) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(bpf_err(format!(
            "reading {} (keepalive's pins are root's alone, and bpf(2) needs CAP_BPF)",
            path.display()
        ))(e)),
        Err(e) => Err(bpf_err(format!("opening {}", path.display()))(e)),
    }
}

fn record_of(
    policy: &Policy,
    force: bool,
    cgroup: &Cgroup,
    defaults: &Settings,
) -> Result<Record, Error> {
    let settings = policy.resolve(defaults)?;
    let mut options = Record::KEEPALIVE;
    for (key, bit) in [
        (Key::Idle, Record::IDLE),
        (Key::Interval, Record::INTERVAL),
        (Key::Count, Record::COUNT),
        (Key::UserTimeout, Record::USER_TIMEOUT),
    ] {
        if policy.has(key) {
            options |= bit;
        }
    }
    if force {
        options |= Record::FORCE;
    }
    Ok(Record {
        options,
        settings,
        cgroup_id: cgroup.id,
        cgroup_level: cgroup.level,
        applied: 0,
        failed: 0,
        forced: 0,
    })
}

/// The policy a record holds.
fn policy_of(r: &Record) -> Policy {
    let mut p = Policy::empty();
    let s = &r.settings;
    for (bit, key, v) in [
        (Record::IDLE, Key::Idle, s.idle),
        (Record::INTERVAL, Key::Interval, s.interval),
        (Record::COUNT, Key::Count, s.count),
        (Record::USER_TIMEOUT, Key::UserTimeout, s.user_timeout_ms),
    ] {
        if r.has(bit)
            && let Some(field) = Field::checked(key, v.into())
        {
            let _ = p.insert(field);
        }
    }
    p
}

/// A loaded record map and programs, not attached yet: dropped, the kernel frees them.
struct Loaded {
    map: OwnedFd,
    sock_ops: OwnedFd,
    force: Option<OwnedFd>,
}

fn load(record: &Record, force: bool) -> Result<Loaded, Error> {
    let map = sys::array_map("keepalive_rec", Record::SIZE as u32, 1)
        .map_err(bpf_err("creating the policy's BPF map"))?;
    sys::map_update(map.as_fd(), 0, &record.to_bytes())
        .map_err(bpf_err("writing the policy's BPF map"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&map);
    let verifier = |program: &'static str| {
        move |e: sys::LoadError| {
            if e.log.is_empty() {
                bpf_err(format!("loading the {program} program"))(e.source)
            } else {
                Error::Verifier {
                    program,
                    source: e.source,
                    log: e.log.lines().collect::<Vec<_>>().join(" | "),
                }
            }
        }
    };
    let sock_ops = sys::prog_load(
        programs::PROG_TYPE_SOCK_OPS,
        programs::ATTACH_SOCK_OPS,
        "keepalive_ops",
        &programs::sock_ops(fd),
    )
    .map_err(verifier("sock_ops"))?;
    let force = if force {
        Some(
            sys::prog_load(
                programs::PROG_TYPE_CGROUP_SOCKOPT,
                programs::ATTACH_SETSOCKOPT,
                "keepalive_force",
                &programs::force(fd),
            )
            .map_err(verifier("setsockopt (force)"))?,
        )
    } else {
        None
    };
    Ok(Loaded {
        map,
        sock_ops,
        force,
    })
}

fn cgroup_fd(cg: &Cgroup) -> Result<OwnedFd, Error> {
    rustix::fs::open(
        &cg.path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::Io {
        what: cg.path.display().to_string(),
        source: e.into(),
    })
}

/// One `set` or `unset` at a time: an exclusive flock(2) on keepalive's pin directory in the
/// BPF filesystem (mode 0700, root's: no other user can take the lock and hold root's runs
/// back), held until the returned descriptor closes. Two runs at once would each read
/// "nothing attached", both report a first attach, race on the pins and leave the sockets with
/// whichever retrofit came last. `create` makes the directory (set); without it (unset) a
/// missing one means nothing is pinned, and nothing to lock. The wait is bounded: a run holds
/// the lock only while it attaches and changes the existing sockets.
fn lock(create: bool) -> Result<Option<OwnedFd>, Error> {
    use rustix::fs::FlockOperation;
    if create {
        ensure_pin_root()?;
    }
    let fd = match rustix::fs::open(
        PIN_ROOT,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
        Err(e) => return Err(bpf_err(format!("opening {PIN_ROOT}"))(e.into())),
    };
    let start = std::time::Instant::now();
    loop {
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(fd)),
            Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::Busy {
                    what: format!(
                        "another keepalive set or unset has held {PIN_ROOT} for {}s",
                        LOCK_WAIT.as_secs()
                    ),
                });
            }
            Err(e) => return Err(bpf_err(format!("locking {PIN_ROOT}"))(e.into())),
        }
    }
}

/// Whether this process is in the initial cgroup namespace: its inode is
/// PROC_CGROUP_INIT_INO (include/linux/proc_ns.h), or, on kernels that numbered namespaces
/// dynamically, the same as PID 1's.
fn in_initial_cgroupns() -> bool {
    use std::os::unix::fs::MetadataExt;
    const PROC_CGROUP_INIT_INO: u64 = 0xEFFF_FFFB;
    let Ok(mine) = std::fs::metadata("/proc/self/ns/cgroup").map(|m| m.ino()) else {
        return true;
    };
    mine == PROC_CGROUP_INIT_INO
        || std::fs::metadata("/proc/1/ns/cgroup").is_ok_and(|m| m.ino() == mine)
}

/// How long [`lock`] waits for another run.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Attaches `prog` at `hook` through the link pinned at `pin`: the pinned link's program is
/// swapped in one step when there is one, a new link is made and pinned otherwise. Returns
/// how to undo it.
fn attach(cg_fd: &OwnedFd, prog: &OwnedFd, attach_type: u32, pin: &Path) -> Result<Undo, Error> {
    if let Some(link) = open_pinned(pin)? {
        let info =
            sys::link_info(link.as_fd()).map_err(bpf_err(format!("reading {}", pin.display())))?;
        let old = sys::prog_by_id(info.prog_id).ok();
        sys::link_update(link.as_fd(), prog.as_fd(), old.as_ref().map(AsFd::as_fd)).map_err(
            bpf_err(format!("replacing the program of {}", pin.display())),
        )?;
        return Ok(Undo::Restore { link, old });
    }
    let link = sys::link_create(prog.as_fd(), cg_fd.as_fd(), attach_type)
        .map_err(bpf_err("attaching to the cgroup (BPF_LINK_CREATE)"))?;
    sys::pin(link.as_fd(), pin).map_err(bpf_err(format!("pinning {}", pin.display())))?;
    Ok(Undo::Unpin {
        link,
        pin: pin.to_path_buf(),
    })
}

/// How to take back one [`attach`] when a later step fails.
enum Undo {
    Restore { link: OwnedFd, old: Option<OwnedFd> },
    Unpin { link: OwnedFd, pin: PathBuf },
}

impl Undo {
    fn run(self) {
        match self {
            Undo::Restore {
                link,
                old: Some(old),
            } => {
                let _ = sys::link_update(link.as_fd(), old.as_fd(), None);
            }
            Undo::Restore { old: None, .. } => {}
            Undo::Unpin { link, pin } => {
                let _ = sys::link_detach(link.as_fd());
                let _ = std::fs::remove_file(pin);
            }
        }
    }
}

/// Detaches the link pinned at `pin`, if any, and removes the pin.
fn detach_pinned(pin: &Path) -> Result<bool, Error> {
    let Some(link) = open_pinned(pin)? else {
        return Ok(false);
    };
    sys::link_detach(link.as_fd()).map_err(bpf_err(format!("detaching {}", pin.display())))?;
    std::fs::remove_file(pin).map_err(bpf_err(format!("removing {}", pin.display())))?;
    Ok(true)
}

/// Puts `map` at `dir/record`, replacing what is there in one rename.
fn pin_record(map: &OwnedFd, dir: &Path) -> Result<(), Error> {
    // bpffs refuses names with a dot (bpf_lookup() in kernel/bpf/inode.c).
    let tmp = dir.join(format!("{RECORD_PIN}-new-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    sys::pin(map.as_fd(), &tmp).map_err(bpf_err(format!("pinning {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(RECORD_PIN)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        bpf_err(format!("pinning {}", dir.join(RECORD_PIN).display()))(e)
    })
}

/// Removes the pins of policies whose cgroup is gone: the kernel detaches a cgroup's links
/// when the cgroup is destroyed (`cgroup_bpf_release()`), and link info then reports cgroup id
/// 0, but the pins would keep the programs and the record loaded.
fn prune() {
    let Ok(entries) = std::fs::read_dir(PIN_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(Some(link)) = open_pinned(&dir.join(SOCK_OPS_PIN)) else {
            continue;
        };
        if sys::link_info(link.as_fd()).is_ok_and(|i| i.cgroup_id == 0) {
            for pin in [FORCE_PIN, SOCK_OPS_PIN, RECORD_PIN] {
                let _ = std::fs::remove_file(dir.join(pin));
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// The listening sockets of the namespace `pid` lives in, by inode, with the cgroup each
/// belongs to, asked of sock_diag once per namespace (`seen`, keyed by the namespace's inode).
/// Empty when sock_diag cannot be asked there.
/// The TCP sockets of `pid`'s network namespace, by inode: the cgroup each was made in and
/// whether it listens (sock_diag's INET_DIAG_CGROUP_ID, Linux 5.7).
fn sockets_of(
    pid: u32,
    seen: &mut HashMap<u64, HashMap<u32, (u64, bool)>>,
) -> &HashMap<u32, (u64, bool)> {
    use std::os::unix::fs::MetadataExt;
    let key = std::fs::metadata(format!("/proc/{pid}/ns/net")).map_or(0, |m| m.ino());
    seen.entry(key)
        .or_insert_with(|| dump_sockets(pid).unwrap_or_default())
}

fn dump_sockets(pid: u32) -> Option<HashMap<u32, (u64, bool)>> {
    let netns = NetNs::of_pid(pid).ok()?;
    let mut out = HashMap::new();
    diag::for_each_socket(netns.as_ref(), &[], |e| {
        if let Some(id) = e.cgroup_id {
            out.insert(e.inode, (id, e.state == TcpState::Listen));
        }
    })
    .ok()?;
    Some(out)
}

/// Every process in the cgroup (and below), its existing TCP sockets given `policy`: the
/// connections, and the listeners whose socket is not the cgroup's. A listener of the cgroup
/// is left alone: the sock_ops program gives its new connections the policy as they are
/// accepted, and `unset` then leaves nothing behind. A listener a process made before it joined
/// the cgroup belongs to its old cgroup, so no program runs for its connections: it gets the
/// policy itself, which later accepted connections inherit.
fn retrofit_all(cg: &Cgroup, policy: &Policy, dry_run: bool) -> Vec<Existing> {
    let me = std::process::id();
    let ours: HashSet<u64> = cg.subtree_ids().into_iter().collect();
    let failed = |pid, e: Error| Existing {
        pid,
        sockets: 0,
        changed: 0,
        error: Some(e.to_string()),
        outside_listeners: Vec::new(),
        outside_connections: Vec::new(),
    };
    let mut out = Vec::new();
    let mut namespaces = HashMap::new();
    for pid in cg.processes().into_iter().filter(|&pid| pid != me) {
        let fds = match retrofit::socket_fds(pid) {
            Ok(fds) => fds,
            // Kernel threads (the root cgroup holds them all) have no descriptors: nothing to
            // change and nothing to report (here or below).
            Err(Error::KernelThread { .. }) => continue,
            Err(e) => {
                out.push(failed(pid, e));
                continue;
            }
        };
        let sockets = sockets_of(pid, &mut namespaces);
        let made_outside = |listen: bool| -> Vec<i32> {
            fds.iter()
                .filter(|(_, inode)| {
                    sockets
                        .get(&(*inode as u32))
                        .is_some_and(|&(id, l)| l == listen && !ours.contains(&id))
                })
                .map(|&(fd, _)| fd)
                .collect()
        };
        let outside_listeners = made_outside(true);
        let outside_connections = made_outside(false);
        let is_listener = |inode: u64| {
            sockets
                .get(&(inode as u32))
                .is_some_and(|&(_, listen)| listen)
        };
        let chosen: Vec<i32> = fds
            .iter()
            .filter(|(fd, inode)| !is_listener(*inode) || outside_listeners.contains(fd))
            .map(|&(fd, _)| fd)
            .collect();
        let change = retrofit::Change::On(*policy);
        match retrofit::apply(pid, retrofit::Selection::Fds(chosen), &change, dry_run) {
            Ok(report) => {
                // A socket that reads back without the policy was not changed, whatever the
                // calls returned: a force program (this cgroup's or an ancestor's) answers
                // keepalive's own setsockopt with success and does nothing when keepalive runs
                // inside the cgroup.
                let took = |c: &retrofit::Retrofit| c.after.is_some_and(|a| a.holds(policy));
                let refused = report.changes.iter().any(|c| c.after.is_some() && !took(c));
                out.push(Existing {
                    pid,
                    sockets: report.changes.len(),
                    changed: report
                        .changes
                        .iter()
                        .filter(|c| took(c) || (dry_run && c.skipped.as_deref() == Some("dry run")))
                        .count(),
                    error: report
                        .changes
                        .iter()
                        .find_map(|c| c.skipped.clone().filter(|_| !dry_run))
                        .or_else(|| {
                            refused.then(|| {
                                "some sockets did not take the policy: a force policy already here makes \
                                 keepalive's own setsockopt calls no-ops when keepalive runs inside the \
                                 cgroup; run it from outside"
                                    .to_owned()
                            })
                        }),
                    outside_listeners,
                    outside_connections,
                })
            }
            Err(Error::KernelThread { .. }) => {}
            Err(e) => out.push(failed(pid, e)),
        }
    }
    out
}

/// Attaches `policy` to `cg` (replacing keepalive's policy there, if any, with no moment in
/// which new connections go without one) and applies it to the sockets its processes hold
/// now. With `dry_run`, checks everything, loads nothing and reports what would change.
/// `defaults` resolves `user-timeout=auto` for keys the policy leaves out.
pub fn set(
    cg: &Cgroup,
    policy: &Policy,
    force: bool,
    defaults: &Settings,
    dry_run: bool,
) -> Result<SetReport, Error> {
    kernel_check("a cgroup keepalive policy (bpf_setsockopt of keepalive options from sock_ops)")?;
    let record = record_of(policy, force, cg, defaults)?;
    if !dry_run {
        capability_check(&format!(
            "attaching a keepalive policy to cgroup {}",
            cg.path.display()
        ))?;
    }
    if force && !in_initial_cgroupns() {
        return Err(Error::CgroupOutOfView {
            why: format!(
                "--force on {} from inside a cgroup namespace: the force program finds a \
                 caller's cgroup by its level below the hierarchy's real root, which a cgroup \
                 namespace hides; run keepalive in the host's cgroup namespace, or set without \
                 --force",
                cg.path.display()
            ),
        });
    }
    let _lock = if dry_run { None } else { lock(true)? };
    let replaced = read_attached(cg)?;
    if dry_run {
        return Ok(SetReport {
            cgroup: cg.clone(),
            policy: *policy,
            force,
            replaced,
            existing: retrofit_all(cg, policy, true),
            dry_run,
        });
    }
    prune();
    let loaded = load(&record, force)?;
    let cg_fd = cgroup_fd(cg)?;
    let dir = ensure_pin_dir(cg.id)?;
    // From here on the change is under way: a signal waits until it is made and reported.
    crate::signals::hold_until_released();
    // A force program swallows this process's own setsockopt calls too when it runs inside
    // the cgroup: then the existing sockets are changed before it is in place.
    let inside =
        Cgroup::of_pid(std::process::id()).is_ok_and(|me| cg.subtree_ids().contains(&me.id));
    let mut existing = Vec::new();
    let mut undo = Vec::new();
    let step = |undo: &mut Vec<Undo>, existing: &mut Vec<Existing>| -> Result<(), Error> {
        undo.push(attach(
            &cg_fd,
            &loaded.sock_ops,
            programs::ATTACH_SOCK_OPS,
            &dir.join(SOCK_OPS_PIN),
        )?);
        if inside {
            *existing = retrofit_all(cg, policy, false);
        }
        match &loaded.force {
            Some(prog) => undo.push(attach(
                &cg_fd,
                prog,
                programs::ATTACH_SETSOCKOPT,
                &dir.join(FORCE_PIN),
            )?),
            None => {
                detach_pinned(&dir.join(FORCE_PIN))?;
            }
        }
        pin_record(&loaded.map, &dir)
    };
    if let Err(e) = step(&mut undo, &mut existing) {
        for u in undo.into_iter().rev() {
            u.run();
        }
        remove_pin_dir(cg.id);
        return Err(e);
    }
    if !inside {
        existing = retrofit_all(cg, policy, false);
    }
    Ok(SetReport {
        cgroup: cg.clone(),
        policy: *policy,
        force,
        replaced,
        existing,
        dry_run,
    })
}

/// keepalive's policy attached to exactly this cgroup, if any.
fn read_attached(cg: &Cgroup) -> Result<Option<Attached>, Error> {
    let dir = pin_dir(cg.id);
    let Some(map) = open_pinned(&dir.join(RECORD_PIN))? else {
        return Ok(None);
    };
    let mut bytes = [0u8; Record::SIZE];
    sys::map_lookup(map.as_fd(), 0, &mut bytes).map_err(bpf_err(format!(
        "reading {}",
        dir.join(RECORD_PIN).display()
    )))?;
    let record = Record::from_bytes(&bytes);
    let prog_of = |pin: &str| -> Result<Option<u32>, Error> {
        let Some(link) = open_pinned(&dir.join(pin))? else {
            return Ok(None);
        };
        Ok(sys::link_info(link.as_fd()).ok().map(|i| i.prog_id))
    };
    let sock_ops_prog = prog_of(SOCK_OPS_PIN)?.unwrap_or(0);
    let force_prog = prog_of(FORCE_PIN)?;
    Ok(Some(Attached {
        cgroup: cg.clone(),
        policy: policy_of(&record),
        force: force_prog.is_some(),
        connections: record.applied,
        failed: record.failed,
        forced_calls: record.forced,
        sock_ops_prog,
        force_prog,
    }))
}

/// The programs on `cg`'s two hooks that are not keepalive's.
fn foreign(cg: &Cgroup, ours: &[u32]) -> Vec<Foreign> {
    let Ok(fd) = cgroup_fd(cg) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (hook, attach_type) in [
        ("sock_ops", programs::ATTACH_SOCK_OPS),
        ("setsockopt", programs::ATTACH_SETSOCKOPT),
    ] {
        for id in sys::prog_query(fd.as_fd(), attach_type, false).unwrap_or_default() {
            if ours.contains(&id) {
                continue;
            }
            let name = sys::prog_by_id(id)
                .and_then(|p| sys::prog_info(p.as_fd()))
                .map(|i| i.name)
                .unwrap_or_default();
            out.push(Foreign {
                cgroup: cg.path.clone(),
                hook,
                id,
                name,
            });
        }
    }
    out
}

/// What applies to `cg`: keepalive's policies on it and its ancestors, and other programs on
/// the same hooks.
pub fn get(cg: &Cgroup) -> Result<View, Error> {
    let mut policies = Vec::new();
    let mut others = Vec::new();
    for at in cg.lineage() {
        let attached = read_attached(&at)?;
        let ours: Vec<u32> = attached
            .iter()
            .flat_map(|a| [Some(a.sock_ops_prog), a.force_prog])
            .flatten()
            .collect();
        others.extend(foreign(&at, &ours));
        policies.extend(attached);
    }
    Ok(View {
        cgroup: cg.clone(),
        policies,
        foreign: others,
    })
}

/// What [`unset`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct UnsetReport {
    /// The policy that was attached, if one was.
    pub removed: Option<Attached>,
}

/// Detaches keepalive's programs from `cg` and removes every pin it made there. Sockets keep
/// the options they were given; connections made from now on get the kernel's defaults (or an
/// ancestor's policy).
pub fn unset(cg: &Cgroup) -> Result<UnsetReport, Error> {
    capability_check(&format!(
        "removing the keepalive policy of cgroup {}",
        cg.path.display()
    ))?;
    let _lock = lock(false)?;
    prune();
    let removed = read_attached(cg)?;
    crate::signals::hold_until_released();
    let dir = pin_dir(cg.id);
    detach_pinned(&dir.join(FORCE_PIN))?;
    detach_pinned(&dir.join(SOCK_OPS_PIN))?;
    match std::fs::remove_file(dir.join(RECORD_PIN)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(bpf_err(format!(
                "removing {}",
                dir.join(RECORD_PIN).display()
            ))(e));
        }
    }
    remove_pin_dir(cg.id);
    Ok(UnsetReport { removed })
}

/// Which cgroup policy covers a socket of cgroup id N: the ids of every cgroup at or below a
/// cgroup with a keepalive policy, each with the outermost such cgroup's path (its values
/// win). Empty when no policy is pinned or the pins cannot be read.
pub fn coverage() -> std::collections::HashMap<u64, PathBuf> {
    let mut out = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir(PIN_ROOT) else {
        return out;
    };
    let ids: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("cgroup-")?
                .parse()
                .ok()
        })
        .collect();
    if ids.is_empty() {
        return out;
    }
    let Ok(mount) = super::mount_point() else {
        return out;
    };
    let Ok(root) = Cgroup::open(&mount) else {
        return out;
    };
    // Outermost first, so that an inner policy does not take over a cgroup an outer one set.
    let mut found: Vec<Cgroup> = Vec::new();
    super::walk(&root.path, &mut |dir, meta| {
        use std::os::unix::fs::MetadataExt;
        if ids.contains(&meta.ino())
            && let Ok(cg) = Cgroup::open(dir)
        {
            found.push(cg);
        }
    });
    found.sort_by_key(|c| c.level);
    for cg in found {
        for id in cg.subtree_ids() {
            out.entry(id).or_insert_with(|| cg.path.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_before_5_9_are_refused_by_name() {
        let e = check_release("x", "5.8.18-100.fc33.x86_64").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x needs Linux 5.9 or later; this kernel is 5.8.18-100.fc33.x86_64"
        );
        assert!(check_release("x", "5.9.0").is_ok());
        assert!(check_release("x", "6.18.44-fc-v1045").is_ok());
        assert!(check_release("x", "4.19.0-27-amd64").is_err());
    }

    #[test]
    fn records_hold_only_the_keys_given() {
        let cg = Cgroup {
            path: "/x".into(),
            id: 9,
            level: 1,
            mount: "/".into(),
        };
        let defaults = Settings::LINUX_DEFAULT;
        let p: Policy = "idle=37,count=4".parse().unwrap();
        let r = record_of(&p, true, &cg, &defaults).unwrap();
        assert_eq!(
            r.options,
            Record::KEEPALIVE | Record::IDLE | Record::COUNT | Record::FORCE
        );
        assert_eq!(policy_of(&r), p);
        let auto: Policy = "idle=10,interval=2,count=3,user-timeout=auto"
            .parse()
            .unwrap();
        let r = record_of(&auto, false, &cg, &defaults).unwrap();
        assert_eq!(r.settings.user_timeout_ms, 16_000);
        assert_eq!(
            policy_of(&r).to_string(),
            "idle=10s,interval=2s,count=3,user-timeout=16s"
        );
    }

    #[test]
    fn outer_values_win() {
        let at = |id, p: &str| Attached {
            cgroup: Cgroup {
                path: format!("/c{id}").into(),
                id,
                level: id as u32,
                mount: "/".into(),
            },
            policy: p.parse().unwrap(),
            force: false,
            connections: 0,
            failed: 0,
            forced_calls: 0,
            sock_ops_prog: 1,
            force_prog: None,
        };
        let view = View {
            cgroup: at(2, "idle=1").cgroup,
            policies: vec![at(2, "idle=23,count=3"), at(1, "idle=41")],
            foreign: vec![],
        };
        assert_eq!(view.effective().unwrap().to_string(), "idle=41s,count=3");
    }
}
