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

/// A network namespace made by `ip netns add`, with its loopback up, deleted on drop.
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
        let ns = TempNetns { name };
        let out = run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        assert!(
            out.status.success(),
            "lo up in {}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr)
        );
        ns
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

/// Fails the test unless `program` is on PATH, naming the Debian package that provides it.
pub fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "this test needs `{program}` (Debian package {package}); scripts/test.sh installs it"
    );
}

/// The LD_PRELOAD shim next to a binary cargo built, failing the test with the fix if missing.
pub fn shim_next_to(bin: &Path) -> std::path::PathBuf {
    let shim = bin.with_file_name("libkeepalive_inject.so");
    assert!(
        shim.is_file(),
        "{} is missing: the shim is built by `cargo build --workspace` (scripts/test.sh runs it before the tests)",
        shim.display()
    );
    shim
}

/// A child process that is killed and reaped when dropped, so a failing test leaves nothing.
pub struct Running(pub std::process::Child);

impl Running {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`; panics with `what` then.
pub fn wait_for<T>(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A free loopback TCP port (bound and released; fine for tests that bind it right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Compiles a C test program from `tests/c/NAME.c` of the calling crate into `out`, with `cc`.
pub fn compile_c(src: &Path, out: &Path, flags: &[&str]) -> std::path::PathBuf {
    require_program("cc", "gcc");
    let exe = out.join(src.file_stem().unwrap());
    let mut cc = Command::new("cc");
    cc.args(["-O2", "-Wall", "-o"])
        .arg(&exe)
        .arg(src)
        .args(flags);
    build(cc, src);
    exe
}

/// Builds a Go source file into `out` as a static binary (CGO_ENABLED=0, so no libc: Go's own
/// system calls), with Go's build cache and GOPATH inside `out`.
pub fn go_build(src: &Path, out: &Path) -> std::path::PathBuf {
    require_program("go", "golang-go");
    let exe = out.join(src.file_stem().unwrap());
    let mut go = Command::new("go");
    go.args(["build", "-o"])
        .arg(&exe)
        .arg(src)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", out.join("gocache"))
        .env("GOPATH", out.join("gopath"))
        .env("GO111MODULE", "off");
    build(go, src);
    exe
}

/// Runs a compiler, failing the test with its errors.
fn build(mut compiler: Command, src: &Path) {
    let name = compiler.get_program().to_string_lossy().into_owned();
    let result = compiler
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    assert!(
        result.status.success(),
        "{name} {}: {}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// The first child of `pid`, from /proc.
pub fn child_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A python3 client: connects to 127.0.0.1:ARGV[1]; with ARGV[2] `off` it then turns keepalive
/// off and sets TCP_KEEPIDLE to 999 itself; prints `ready` and holds the connection.
pub const PY_CLIENT: &str = "import socket, sys, time\n\
    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
    if sys.argv[2] == 'off': s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0); \
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 999)\n\
    print('ready', flush=True)\n\
    time.sleep(30)\n";

/// A python3 client of two servers, 127.0.0.1:ARGV[1] and 127.0.0.1:ARGV[2]; prints `ready`
/// once connected to both and holds the connections.
pub const PY_TWO_CLIENTS: &str = "import socket, sys, time\n\
    a = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
    b = socket.create_connection(('127.0.0.1', int(sys.argv[2])))\n\
    print('ready', flush=True)\n\
    time.sleep(30)\n";

/// Asserts `out` failed with exit code `code` and one line on stderr holding every needle.
pub fn assert_one_line_failure(out: &Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
}

/// The keepalive state of the socket in process `pid` whose local port is `port` and that is
/// connected (a listener's accepted connection, or a client's), read through a pidfd_getfd
/// duplicate: what the kernel holds for the program's own socket.
pub fn connected_socket_of(
    pid: u32,
    port: u16,
    local: bool,
) -> Option<(keepalive::socket::SocketKeepalive, bool)> {
    for (fd, _) in keepalive::retrofit::socket_fds(pid).ok()? {
        let Ok(dup) = keepalive::retrofit::duplicate(pid, fd) else {
            continue;
        };
        let (Ok(here), Ok(there)) = (
            rustix::net::getsockname(&dup),
            rustix::net::getpeername(&dup),
        ) else {
            continue;
        };
        let (Ok(here), Some(there)) = (std::net::SocketAddr::try_from(here), there) else {
            continue;
        };
        let Ok(there) = std::net::SocketAddr::try_from(there) else {
            continue;
        };
        let matches = if local {
            here.port() == port
        } else {
            there.port() == port
        };
        if matches {
            let state = keepalive::socket::read(&dup).ok()?;
            return Some((state, here.is_ipv6()));
        }
    }
    None
}

/// The python3 interpreter binary itself (`sys.executable`), not a wrapper such as pyenv's
/// shim scripts, for tests that preload the shim into exactly one process.
pub fn python() -> std::path::PathBuf {
    require_program("python3", "python3");
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// `program` run as uid and gid 65534 (nobody) with no supplementary groups, through util-linux's
/// setpriv: a user without any capability, for permission tests.
pub fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    require_program("setpriv", "util-linux");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program)
        .env_remove("RUST_BACKTRACE");
    cmd
}

/// `ss -tnoH state established FILTER`: iproute2's view of established TCP sockets, the outside
/// reference the tests compare against (FILTER as ss takes it, e.g. `sport = :8080`).
pub fn ss_established(filter: &str) -> String {
    require_program("ss", "iproute2");
    let out = Command::new("ss")
        .args(["-tnoH", "state", "established", filter])
        .output()
        .expect("run ss");
    assert!(
        out.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
