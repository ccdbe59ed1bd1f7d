//! Helpers for integration tests that need root and network namespaces.
//!
//! Namespaces are named `ka-t<pid>-<n>`, so two test runs never collide, and are deleted when the
//! guard drops, on success or on a failing assertion. `scripts/test.sh` also removes any left by
//! a run that was killed (its pid no longer exists).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Fails the test, with the reason, unless it runs as root: these tests create network
/// namespaces and write sysctls, and a skipped test must not pass silently.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (it creates network namespaces); run scripts/test.sh as root"
    );
}

/// A network namespace made by `ip netns add`, deleted on drop.
pub struct TempNetns {
    name: String,
}

impl TempNetns {
    /// Creates a fresh namespace with a unique name.
    pub fn new() -> TempNetns {
        require_root();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ka-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = run("ip", &["netns", "add", &name]);
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TempNetns { name }
    }

    /// Its name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads a sysctl inside the namespace with `ip netns exec ... cat`, independently of the code
    /// under test. `key` is dotted, as `net.ipv4.tcp_keepalive_time`.
    pub fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let out = self.exec(&["cat", &path]);
        assert!(
            out.status.success(),
            "reading {key} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs a command inside the namespace (`ip netns exec`, which also gives it a private
    /// mount namespace).
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }
}

impl Default for TempNetns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Reads a sysctl of the test's own namespace straight from /proc.
pub fn host_sysctl(key: &str) -> String {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {}: {e} (is iproute2 installed?)", args.join(" ")))
}
