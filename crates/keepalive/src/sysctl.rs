//! The kernel's keepalive defaults, per network namespace.
//!
//! `net.ipv4.tcp_keepalive_time`, `_intvl` and `_probes` are what a socket uses for every
//! `TCP_KEEP*` option it has not set itself. They, `tcp_retries2` and `tcp_rto_max_ms` live in
//! `struct netns_ipv4`, so each network namespace has its own, and a new namespace starts from
//! the compiled-in defaults, not from its parent's values (`tcp_sk_init()`). Writing them needs
//! CAP_NET_ADMIN over the namespace's user namespace (`net_ctl_permissions()`).
//!
//! Writes are all or nothing: if one key fails, the keys already written are put back.

use crate::error::{Error, WriteFailure};
use crate::netns::NetNs;
use crate::policy::timeline::{ProbeTimeline, RTO_MAX_MS, RTO_MIN_US, RetransmitTimeout};
use crate::policy::{Policy, Settings};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A sysctl this crate reads or writes. Serializes as its `sysctl(8)` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(into = "&'static str")
)]
pub enum Key {
    /// `net.ipv4.tcp_keepalive_time`: idle seconds before the first probe.
    KeepaliveTime,
    /// `net.ipv4.tcp_keepalive_intvl`: seconds between probes.
    KeepaliveIntvl,
    /// `net.ipv4.tcp_keepalive_probes`: unanswered probes before the reset.
    KeepaliveProbes,
    /// `net.ipv4.tcp_retries2`: retransmissions of unacknowledged data before giving up.
    Retries2,
    /// `net.ipv4.tcp_rto_max_ms`: the retransmission timeout's ceiling (Linux 6.15 and later).
    RtoMaxMs,
}

impl From<Key> for &'static str {
    fn from(key: Key) -> Self {
        key.name()
    }
}

impl Key {
    /// Every key, in the order `show` lists them.
    pub const ALL: [Key; 5] = [
        Key::KeepaliveTime,
        Key::KeepaliveIntvl,
        Key::KeepaliveProbes,
        Key::Retries2,
        Key::RtoMaxMs,
    ];

    /// The three keepalive sysctls, in the order they are written.
    pub const KEEPALIVE: [Key; 3] = [
        Key::KeepaliveTime,
        Key::KeepaliveIntvl,
        Key::KeepaliveProbes,
    ];

    /// The name `sysctl(8)` uses.
    pub const fn name(self) -> &'static str {
        match self {
            Key::KeepaliveTime => "net.ipv4.tcp_keepalive_time",
            Key::KeepaliveIntvl => "net.ipv4.tcp_keepalive_intvl",
            Key::KeepaliveProbes => "net.ipv4.tcp_keepalive_probes",
            Key::Retries2 => "net.ipv4.tcp_retries2",
            Key::RtoMaxMs => "net.ipv4.tcp_rto_max_ms",
        }
    }

    /// The file under `/proc/sys`.
    pub fn path(self) -> String {
        self.name().replace('.', "/")
    }

    /// The compiled-in default (`include/net/tcp.h`: `TCP_KEEPALIVE_TIME`, `TCP_KEEPALIVE_INTVL`,
    /// `TCP_KEEPALIVE_PROBES`, `TCP_RETR2`, `TCP_RTO_MAX`).
    pub const fn kernel_default(self) -> u64 {
        match self {
            Key::KeepaliveTime => 7200,
            Key::KeepaliveIntvl => 75,
            Key::KeepaliveProbes => 9,
            Key::Retries2 => 15,
            Key::RtoMaxMs => RTO_MAX_MS,
        }
    }
}

/// The values of the sysctls that decide how long a dead peer goes unnoticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Defaults {
    /// `net.ipv4.tcp_keepalive_time`, seconds.
    pub keepalive_time: u32,
    /// `net.ipv4.tcp_keepalive_intvl`, seconds.
    pub keepalive_intvl: u32,
    /// `net.ipv4.tcp_keepalive_probes`.
    pub keepalive_probes: u32,
    /// `net.ipv4.tcp_retries2`.
    pub retries2: u32,
    /// `net.ipv4.tcp_rto_max_ms`, or 120000 on kernels without that sysctl.
    pub rto_max_ms: u64,
    /// `net.ipv4.tcp_rto_min_us`, the floor of a path's RTO (Linux 6.11 and later), or
    /// 200000 (`TCP_RTO_MIN`) on kernels without that sysctl.
    pub rto_min_us: u64,
    /// `net.ipv4.tcp_early_retrans` is 3 or 4 (the default 3): a tail-loss probe resends a
    /// silent tail before the retransmission timer does.
    pub tail_loss_probe: bool,
}

/// How long a dead peer goes unnoticed under a namespace's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Detection {
    /// A silent peer on an idle connection with keepalive on (milliseconds).
    pub idle_connection_ms: u64,
    /// A silent peer while data is unacknowledged (milliseconds).
    pub unacked_data_ms: u64,
}

impl Defaults {
    /// The kernel's compiled-in values, which every new network namespace starts from.
    pub const LINUX: Defaults = Defaults {
        keepalive_time: Key::KeepaliveTime.kernel_default() as u32,
        keepalive_intvl: Key::KeepaliveIntvl.kernel_default() as u32,
        keepalive_probes: Key::KeepaliveProbes.kernel_default() as u32,
        retries2: Key::Retries2.kernel_default() as u32,
        rto_max_ms: Key::RtoMaxMs.kernel_default(),
        rto_min_us: RTO_MIN_US,
        tail_loss_probe: true,
    };

    /// How long a dead peer goes unnoticed with these values.
    pub fn detection(&self) -> Detection {
        Detection {
            idle_connection_ms: ProbeTimeline::silent_peer(&self.settings()).reset_ms,
            unacked_data_ms: RetransmitTimeout::with_rto_min(
                self.retries2,
                self.rto_max_ms,
                self.rto_min_us,
                0,
                self.tail_loss_probe,
            )
            .give_up_ms,
        }
    }

    /// What a socket that sets no keepalive option of its own runs on.
    pub fn settings(&self) -> Settings {
        Settings {
            idle: self.keepalive_time,
            interval: self.keepalive_intvl,
            count: self.keepalive_probes,
            user_timeout_ms: 0,
        }
    }

    /// The value of one key.
    pub fn get(&self, key: Key) -> u64 {
        match key {
            Key::KeepaliveTime => self.keepalive_time.into(),
            Key::KeepaliveIntvl => self.keepalive_intvl.into(),
            Key::KeepaliveProbes => self.keepalive_probes.into(),
            Key::Retries2 => self.retries2.into(),
            Key::RtoMaxMs => self.rto_max_ms,
        }
    }
}

/// The result of a write: the values before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Change {
    /// Before the write.
    pub before: Defaults,
    /// After the write, read back.
    pub after: Defaults,
    /// The keys that were written (keys that already held the value are skipped).
    pub written: Vec<Key>,
}

/// The sysctls of one network namespace.
#[derive(Debug, Clone)]
pub struct Sysctls {
    root: PathBuf,
    netns: Option<NetNs>,
    /// Unit tests make writes of this key fail, to check the rollback.
    #[cfg(test)]
    fail_writes_to: Option<Key>,
}

impl Sysctls {
    /// The caller's network namespace.
    pub fn current() -> Self {
        Self::at("/proc/sys")
    }

    /// A named network namespace.
    pub fn netns(netns: NetNs) -> Self {
        Sysctls {
            netns: Some(netns),
            ..Self::at("/proc/sys")
        }
    }

    /// A directory laid out like `/proc/sys`, for tests.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Sysctls {
            root: root.into(),
            netns: None,
            #[cfg(test)]
            fail_writes_to: None,
        }
    }

    /// "network namespace 'NAME'" or "the current network namespace", for messages.
    pub fn scope(&self) -> String {
        match &self.netns {
            Some(ns) => format!("network namespace '{}'", ns.name()),
            None => "the current network namespace".to_owned(),
        }
    }

    /// The namespace, when one was named.
    pub fn netns_name(&self) -> Option<&str> {
        self.netns.as_ref().map(NetNs::name)
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
        match &self.netns {
            Some(ns) => ns.run(f)?,
            None => f(),
        }
    }

    /// Reads the current values.
    pub fn read(&self) -> Result<Defaults, Error> {
        self.run(|| self.read_here())
    }

    /// Writes the policy's idle, interval and count as the namespace's defaults, all or
    /// nothing. A user timeout is refused: there is no sysctl for it.
    pub fn apply(&self, policy: &Policy) -> Result<Change, Error> {
        let targets = sysctl_targets(policy)?;
        self.run(|| self.write_here(&targets))
    }

    /// Puts the three keepalive sysctls back to the kernel's compiled-in defaults.
    pub fn reset(&self) -> Result<Change, Error> {
        let targets: Vec<_> = Key::KEEPALIVE
            .iter()
            .map(|&k| (k, k.kernel_default()))
            .collect();
        self.run(|| self.write_here(&targets))
    }

    fn file(&self, key: Key) -> PathBuf {
        self.root.join(key.path())
    }

    fn read_key(&self, key: Key) -> Result<u64, Error> {
        let text = fs::read_to_string(self.file(key)).map_err(|source| Error::SysctlRead {
            key: key.name(),
            scope: self.scope(),
            source,
        })?;
        text.trim().parse().map_err(|_| Error::SysctlValue {
            key: key.name(),
            scope: self.scope(),
            value: text.trim().to_owned(),
        })
    }

    fn read_here(&self) -> Result<Defaults, Error> {
        let small = |key| -> Result<u32, Error> {
            let v = self.read_key(key)?;
            u32::try_from(v).map_err(|_| Error::SysctlValue {
                key: key.name(),
                scope: self.scope(),
                value: v.to_string(),
            })
        };
        let rto_max_ms = match self.read_key(Key::RtoMaxMs) {
            Err(Error::SysctlRead { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                RTO_MAX_MS
            }
            other => other?,
        };
        // Not one of the keys this tool sets (so not in Key::ALL); absent before Linux 6.11,
        // where the floor is TCP_RTO_MIN. Its minimum is 1 (sysctl_net_ipv4.c: extra1 =
        // SYSCTL_ONE).
        const RTO_MIN_US_KEY: &str = "net.ipv4.tcp_rto_min_us";
        let rto_min_us = match fs::read_to_string(self.root.join("net/ipv4/tcp_rto_min_us")) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => RTO_MIN_US,
            Err(source) => {
                return Err(Error::SysctlRead {
                    key: RTO_MIN_US_KEY,
                    scope: self.scope(),
                    source,
                });
            }
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&v| v >= 1)
                .ok_or_else(|| Error::SysctlValue {
                    key: RTO_MIN_US_KEY,
                    scope: self.scope(),
                    value: text.trim().to_owned(),
                })?,
        };
        Ok(Defaults {
            keepalive_time: small(Key::KeepaliveTime)?,
            keepalive_intvl: small(Key::KeepaliveIntvl)?,
            keepalive_probes: small(Key::KeepaliveProbes)?,
            retries2: small(Key::Retries2)?,
            rto_max_ms,
            rto_min_us,
            // Not one of the keys this tool sets; read as the kernel's default where absent.
            tail_loss_probe: fs::read_to_string(self.root.join("net/ipv4/tcp_early_retrans"))
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .is_none_or(|v| v == 3 || v == 4),
        })
    }

    fn write_key(&self, key: Key, value: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_writes_to == Some(key) {
            return Err(io::Error::from(io::ErrorKind::ReadOnlyFilesystem));
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.file(key))?;
        file.write_all(format!("{value}\n").as_bytes())
    }

    /// Writes `targets` in order; on the first failure, restores what was written.
    fn write_here(&self, targets: &[(Key, u64)]) -> Result<Change, Error> {
        let before = self.read_here()?;
        let mut written = Vec::new();
        for &(key, value) in targets {
            if before.get(key) == value {
                continue;
            }
            if let Err(source) = self.write_key(key, value) {
                let mut failure = WriteFailure {
                    key: key.name(),
                    value,
                    scope: self.scope(),
                    source,
                    restored: Vec::new(),
                    not_restored: Vec::new(),
                };
                for &done in written.iter().rev() {
                    match self.write_key(done, before.get(done)) {
                        Ok(()) => failure.restored.push(done.name()),
                        Err(e) => failure.not_restored.push((done.name(), e)),
                    }
                }
                return Err(Error::SysctlWrite(Box::new(failure)));
            }
            written.push(key);
        }
        Ok(Change {
            before,
            after: self.read_here()?,
            written,
        })
    }
}

fn refuse_user_timeout(policy: &Policy) -> Result<(), Error> {
    match policy.user_timeout() {
        Some(_) => Err(Error::NotASysctl(
            "user-timeout has no sysctl: TCP_USER_TIMEOUT is set per socket (keepalive run, keepalive set --pid)",
        )),
        None => Ok(()),
    }
}

/// The sysctl writes a policy asks for.
fn sysctl_targets(policy: &Policy) -> Result<Vec<(Key, u64)>, Error> {
    refuse_user_timeout(policy)?;
    let targets: Vec<_> = [
        (Key::KeepaliveTime, policy.idle()),
        (Key::KeepaliveIntvl, policy.interval()),
        (Key::KeepaliveProbes, policy.count()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, u64::from(v?))))
    .collect();
    if targets.is_empty() {
        return Err(Error::NotASysctl(
            "nothing to set: give --idle, --interval, --count or --policy",
        ));
    }
    Ok(targets)
}

/// Where systemd-sysctl and `sysctl --system` look for drop-ins, highest precedence first:
/// a file name in an earlier directory hides the same name in later ones.
pub const SYSCTL_D_DIRS: [&str; 5] = [
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];

/// The file systemd-sysctl and `sysctl --system` read after every drop-in.
pub const SYSCTL_CONF: &str = "/etc/sysctl.conf";

/// The file `persist` writes in a sysctl.d directory.
pub const DROP_IN: &str = "90-keepalive.conf";

/// A boot-time setting of a sysctl, found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct BootSetting {
    /// The file that sets it last.
    pub file: PathBuf,
    /// Its line number there.
    pub line: usize,
    /// The value it sets.
    pub value: String,
}

/// Which configuration file sets `key` at boot, if any: the files of `dirs` (as
/// [`SYSCTL_D_DIRS`]) applied in file-name order, then `/etc/sysctl.conf`-style `extra` files;
/// the last assignment wins, as in `sysctl --system`.
pub fn boot_setting(key: Key, dirs: &[&Path], extra: &[&Path]) -> Option<BootSetting> {
    let mut by_name: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(".conf") && !by_name.iter().any(|(n, _)| *n == name)
            {
                by_name.push((name, entry.path()));
            }
        }
    }
    by_name.sort();
    let files = by_name
        .into_iter()
        .map(|(_, p)| p)
        .chain(extra.iter().map(|p| p.to_path_buf()));
    let mut found = None;
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.trim().trim_start_matches('-');
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim().replace('/', ".") == key.name() {
                found = Some(BootSetting {
                    file: file.clone(),
                    line: i + 1,
                    value: v.trim().to_owned(),
                });
            }
        }
    }
    found
}

/// Where a sysctl's current value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "kind", rename_all = "kebab-case")
)]
pub enum Origin {
    /// The compiled-in default, set by nothing.
    KernelDefault,
    /// A configuration file read at boot sets this value.
    BootFile(BootSetting),
    /// Written since boot (`sysctl -w`, `keepalive sysctl set`, a container runtime); `boot` is
    /// the file that sets a different value at boot, if any.
    Runtime {
        /// The boot-time setting this value replaced.
        boot: Option<BootSetting>,
    },
}

/// One row of `keepalive sysctl show`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Row {
    /// The sysctl.
    pub key: &'static str,
    /// Its value now.
    pub value: u64,
    /// The compiled-in default.
    pub kernel_default: u64,
    /// Where the value comes from.
    pub origin: Origin,
}

impl Sysctls {
    /// The current values with where each comes from, the boot files looked up where
    /// systemd-sysctl and `sysctl --system` read them ([`SYSCTL_D_DIRS`], then
    /// [`SYSCTL_CONF`]).
    pub fn show(&self) -> Result<(Defaults, Vec<Row>), Error> {
        let dirs: Vec<&Path> = SYSCTL_D_DIRS.iter().map(Path::new).collect();
        self.show_with_boot_files(&dirs, &[Path::new(SYSCTL_CONF)])
    }

    /// [`Sysctls::show`] with the boot files looked up in `dirs` and `extra` instead (see
    /// [`boot_setting`]). They count only for the initial namespace: nothing applies them to
    /// other namespaces, which start from the kernel defaults.
    pub fn show_with_boot_files(
        &self,
        dirs: &[&Path],
        extra: &[&Path],
    ) -> Result<(Defaults, Vec<Row>), Error> {
        let values = self.read()?;
        let rows = Key::ALL
            .into_iter()
            .map(|key| {
                let value = values.get(key);
                let boot = if self.netns.is_none() {
                    boot_setting(key, dirs, extra)
                } else {
                    None
                };
                let origin = match boot {
                    Some(b) if b.value == value.to_string() => Origin::BootFile(b),
                    None if value == key.kernel_default() => Origin::KernelDefault,
                    boot => Origin::Runtime { boot },
                };
                Row {
                    key: key.name(),
                    value,
                    kernel_default: key.kernel_default(),
                    origin,
                }
            })
            .collect();
        Ok((values, rows))
    }
}

/// What `persist` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Persisted {
    /// The drop-in file.
    pub path: PathBuf,
    /// The values it sets.
    pub settings: Settings,
    /// The live values, which `persist` does not change.
    pub live: Defaults,
}

impl Sysctls {
    /// Writes a drop-in into `dir` (normally `/etc/sysctl.d`) holding the policy, with keys it
    /// leaves out taken from the live values. Boot-time sysctl files apply to the initial
    /// network namespace only, so a named namespace is refused.
    pub fn persist(&self, dir: &Path, policy: &Policy) -> Result<Persisted, Error> {
        if self.netns.is_some() {
            return Err(Error::NotASysctl(
                "persist writes boot-time files, which apply to the initial network namespace only; \
                 run `keepalive sysctl set --netns NAME` after creating the namespace instead",
            ));
        }
        if !in_initial_netns() {
            return Err(Error::NotASysctl(
                "persist writes boot-time files, which apply to the initial network namespace \
                 only, and this process runs in another one (a container's, or `ip netns exec`): \
                 its live values are not the host's; run it on the host",
            ));
        }
        refuse_user_timeout(policy)?;
        let live = self.read()?;
        let settings = policy.resolve(&live.settings())?;
        let path = persist(dir, &settings)?;
        Ok(Persisted {
            path,
            settings,
            live,
        })
    }
}

/// Whether this process is in the initial network namespace: its /proc/self/ns/net is
/// PROC_NET_INIT_INO (include/linux/proc_ns.h, fixed since Linux 6.14), or, on older kernels
/// that numbered it dynamically, the same namespace as PID 1's (unreadable: assumed so).
pub fn in_initial_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    const PROC_NET_INIT_INO: u64 = 0xEFFF_FFF9;
    let Ok(mine) = fs::metadata("/proc/self/ns/net").map(|m| m.ino()) else {
        return true;
    };
    mine == PROC_NET_INIT_INO || fs::metadata("/proc/1/ns/net").is_ok_and(|m| m.ino() == mine)
}

/// Writes the three keepalive sysctls to `dir/90-keepalive.conf`, whole or not at all, mode
/// 0644 whatever the umask ([`crate::output::Pending`]). Returns the path.
pub fn persist(dir: &Path, settings: &Settings) -> Result<PathBuf, Error> {
    let path = dir.join(DROP_IN);
    let detect = ProbeTimeline::silent_peer(settings).time_to_detect();
    let text = format!(
        "# Written by `keepalive sysctl persist`: idle={}s,interval={}s,count={}\n\
         # A silent peer on an idle connection is detected after {} s.\n\
         # Applied at boot by systemd-sysctl or `sysctl --system`, in the initial network namespace.\n\
         {} = {}\n{} = {}\n{} = {}\n",
        settings.idle,
        settings.interval,
        settings.count,
        detect.as_secs(),
        Key::KeepaliveTime.name(),
        settings.idle,
        Key::KeepaliveIntvl.name(),
        settings.interval,
        Key::KeepaliveProbes.name(),
        settings.count,
    );
    crate::output::Pending::create(&path)
        .and_then(|pending| pending.finish(text.as_bytes()))
        .map_err(|e| match e {
            Error::Output { path, source } => Error::Persist { path, source },
            e => e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Class;

    /// A fake /proc/sys with the kernel's defaults.
    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("net/ipv4")).unwrap();
        for key in [
            Key::KeepaliveTime,
            Key::KeepaliveIntvl,
            Key::KeepaliveProbes,
            Key::Retries2,
        ] {
            fs::write(
                dir.path().join(key.path()),
                format!("{}\n", key.kernel_default()),
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn reads_and_defaults_rto_max_when_absent() {
        let dir = fake_proc();
        let d = Sysctls::at(dir.path()).read().unwrap();
        assert_eq!(d.settings(), Settings::LINUX_DEFAULT);
        assert_eq!((d.retries2, d.rto_max_ms), (15, 120_000));
        assert_eq!(d.rto_min_us, 200_000, "no tcp_rto_min_us before Linux 6.11");
    }

    #[test]
    fn reads_tcp_rto_min_us_where_present() {
        let dir = fake_proc();
        let file = dir.path().join("net/ipv4/tcp_rto_min_us");
        fs::write(&file, "1000\n").unwrap();
        let d = Sysctls::at(dir.path()).read().unwrap();
        assert_eq!(d.rto_min_us, 1000);
        // The floor reaches the retransmission model: tcp_retries2 5 under a 1 ms floor gives
        // up at 16.38 s, not the 13.052 s of the 200 ms floor.
        let d = Defaults { retries2: 5, ..d };
        assert_eq!(d.detection().unacked_data_ms, 16_380);
        fs::write(&file, "soon\n").unwrap();
        let e = Sysctls::at(dir.path()).read().unwrap_err().to_string();
        assert!(e.contains("tcp_rto_min_us") && e.contains("soon"), "{e}");
    }

    #[test]
    fn apply_writes_only_what_changes() {
        let dir = fake_proc();
        let s = Sysctls::at(dir.path());
        let change = s
            .apply(&Policy::parse("idle=60,interval=75,count=3").unwrap())
            .unwrap();
        assert_eq!(change.written, [Key::KeepaliveTime, Key::KeepaliveProbes]);
        assert_eq!(
            change.after.settings(),
            Settings {
                idle: 60,
                interval: 75,
                count: 3,
                user_timeout_ms: 0
            }
        );
        let change = s.reset().unwrap();
        assert_eq!(change.after.settings(), Settings::LINUX_DEFAULT);
    }

    #[test]
    fn a_failed_write_restores_the_keys_written_before_it() {
        let dir = fake_proc();
        let s = Sysctls {
            fail_writes_to: Some(Key::KeepaliveProbes),
            ..Sysctls::at(dir.path())
        };
        let err = s
            .apply(&Policy::parse("idle=60,interval=10,count=3").unwrap())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("net.ipv4.tcp_keepalive_probes=3"), "{msg}");
        assert!(
            msg.contains("restored net.ipv4.tcp_keepalive_intvl, net.ipv4.tcp_keepalive_time"),
            "{msg}"
        );
        assert_eq!(err.class(), Class::Failed);
        let read = |k: Key| fs::read_to_string(dir.path().join(k.path())).unwrap();
        assert_eq!(read(Key::KeepaliveTime).trim(), "7200");
        assert_eq!(read(Key::KeepaliveIntvl).trim(), "75");
    }

    #[test]
    fn refuses_user_timeout_and_empty_policies() {
        let dir = fake_proc();
        let s = Sysctls::at(dir.path());
        let err = s
            .apply(&Policy::parse("idle=60,user-timeout=5s").unwrap())
            .unwrap_err();
        assert_eq!(err.class(), Class::BadInput);
        assert!(err.to_string().contains("per socket"));
        assert_eq!(read_time(&dir), "7200");
        assert_eq!(
            s.apply(&Policy::empty()).unwrap_err().class(),
            Class::BadInput
        );
    }

    fn read_time(dir: &tempfile::TempDir) -> String {
        fs::read_to_string(dir.path().join(Key::KeepaliveTime.path()))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn persist_is_atomic_and_found_as_the_boot_setting() {
        let etc = tempfile::tempdir().unwrap();
        let lib = tempfile::tempdir().unwrap();
        fs::write(
            lib.path().join("50-default.conf"),
            "net.ipv4.tcp_keepalive_time = 600\n",
        )
        .unwrap();
        let found = boot_setting(Key::KeepaliveTime, &[etc.path(), lib.path()], &[]).unwrap();
        assert_eq!((found.value.as_str(), found.line), ("600", 1));

        let s = Settings {
            idle: 60,
            interval: 10,
            count: 5,
            user_timeout_ms: 0,
        };
        let path = persist(etc.path(), &s).unwrap();
        assert_eq!(path, etc.path().join(DROP_IN));
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("net.ipv4.tcp_keepalive_time = 60\n"),
            "{text}"
        );
        assert!(text.contains("after 110 s"), "{text}");
        // Written again: replaced, and no temporary file is left.
        persist(etc.path(), &Settings { idle: 30, ..s }).unwrap();
        let names: Vec<_> = fs::read_dir(etc.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [DROP_IN]);
        let found = boot_setting(Key::KeepaliveTime, &[etc.path(), lib.path()], &[]).unwrap();
        assert_eq!((found.file, found.value.as_str()), (path, "30"));
        // A later file, or sysctl.conf, overrides.
        let conf = etc.path().join("sysctl.conf");
        fs::write(&conf, "# comment\nnet/ipv4/tcp_keepalive_time=45\n").unwrap();
        let found = boot_setting(Key::KeepaliveTime, &[etc.path()], &[&conf]).unwrap();
        assert_eq!((found.line, found.value.as_str()), (2, "45"));
    }

    #[test]
    fn show_says_where_each_value_comes_from() {
        let dir = fake_proc();
        fs::write(dir.path().join(Key::KeepaliveTime.path()), "600\n").unwrap();
        fs::write(dir.path().join(Key::KeepaliveIntvl.path()), "30\n").unwrap();
        let etc = tempfile::tempdir().unwrap();
        fs::write(
            etc.path().join("50-ka.conf"),
            "net.ipv4.tcp_keepalive_time = 600\nnet.ipv4.tcp_keepalive_intvl = 60\n",
        )
        .unwrap();
        let (values, rows) = Sysctls::at(dir.path())
            .show_with_boot_files(&[etc.path()], &[])
            .unwrap();
        assert_eq!((values.keepalive_time, values.keepalive_intvl), (600, 30));
        let origin = |key: Key| &rows.iter().find(|r| r.key == key.name()).unwrap().origin;
        let boot = |line: usize, value: &str| BootSetting {
            file: etc.path().join("50-ka.conf"),
            line,
            value: value.to_owned(),
        };
        assert_eq!(
            origin(Key::KeepaliveTime),
            &Origin::BootFile(boot(1, "600"))
        );
        assert_eq!(
            origin(Key::KeepaliveIntvl),
            &Origin::Runtime {
                boot: Some(boot(2, "60"))
            }
        );
        assert_eq!(origin(Key::KeepaliveProbes), &Origin::KernelDefault);
        assert_eq!(rows.len(), Key::ALL.len());
    }

    #[test]
    fn show_reads_the_system_locations() {
        assert!(SYSCTL_D_DIRS.contains(&"/etc/sysctl.d"));
        assert!(SYSCTL_D_DIRS.contains(&"/usr/lib/sysctl.d"));
        let dir = fake_proc();
        let s = Sysctls::at(dir.path());
        let dirs: Vec<&Path> = SYSCTL_D_DIRS.iter().map(Path::new).collect();
        assert_eq!(
            s.show().unwrap(),
            s.show_with_boot_files(&dirs, &[Path::new(SYSCTL_CONF)])
                .unwrap()
        );
    }

    #[test]
    fn persist_takes_live_values_the_grammar_would_not_and_a_planted_name_is_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let etc = tempfile::tempdir().unwrap();
        // tcp_keepalive_probes takes up to 255; TCP_KEEPCNT only 127.
        let s = Settings {
            idle: 60,
            interval: 75,
            count: 200,
            user_timeout_ms: 0,
        };
        let path = persist(etc.path(), &s).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("net.ipv4.tcp_keepalive_probes = 200\n"),
            "{text}"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let tmp = etc
            .path()
            .join(format!(".{DROP_IN}.{}.tmp", std::process::id()));
        fs::write(&tmp, b"someone else's").unwrap();
        let e = persist(etc.path(), &Settings { idle: 30, ..s }).unwrap_err();
        assert!(e.to_string().contains(&tmp.display().to_string()), "{e}");
        assert_eq!(fs::read(&tmp).unwrap(), b"someone else's");
        assert!(fs::read_to_string(&path).unwrap().contains("= 60\n"));
    }

    #[test]
    fn persist_into_a_missing_directory_fails_cleanly() {
        let err = persist(
            Path::new("/nonexistent/keepalive-test"),
            &Settings::LINUX_DEFAULT,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("writing /nonexistent/keepalive-test/90-keepalive.conf failed")
        );
    }
}
