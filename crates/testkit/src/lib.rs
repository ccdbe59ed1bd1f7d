//! Helpers for integration tests that need root: network namespaces and cgroups.
//!
//! Namespaces and cgroups are named `ka-t<pid>-<n>`, so two test runs never collide, and are
//! deleted when the guard drops, on success or on a failing assertion. `scripts/test.sh` also
//! removes namespaces left by a run that was killed (its pid no longer exists).

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

/// Where the cgroup v2 hierarchy is mounted, read from /proc/self/mountinfo (the first mount
/// of type cgroup2), independently of the code under test; fails the test when there is none.
pub fn cgroup2_mount() -> std::path::PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo");
    info.lines()
        .find_map(|line| {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let (left, right) = line.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2")).then(|| left.split(' ').nth(4))?
        })
        .map(|point| std::path::PathBuf::from(point.replace("\\040", " ")))
        .expect(
            "this test needs a cgroup v2 hierarchy mounted (no cgroup2 in /proc/self/mountinfo)",
        )
}

/// A cgroup v2 directory made for one test: `<cgroup2 mount>/ka-t<pid>-<n>`, or the same name
/// inside another `TempCgroup` ([`TempCgroup::child`]). On drop, even after a failed assertion,
/// it kills what is left inside (`cgroup.kill`, else SIGKILL to each pid of `cgroup.procs`),
/// waits (bounded) until no process is left, runs `keepalive unset --cgroup` on it so nothing
/// stays pinned, and removes the directory. Cgroups below it are cleaned up first.
pub struct TempCgroup {
    path: std::path::PathBuf,
    keepalive: std::path::PathBuf,
}

impl TempCgroup {
    /// A fresh cgroup at the top of the hierarchy; `keepalive` is the binary that unsets it.
    pub fn new(keepalive: &Path) -> TempCgroup {
        require_root();
        TempCgroup::make(&cgroup2_mount(), keepalive)
    }

    /// A fresh cgroup inside this one.
    pub fn child(&self) -> TempCgroup {
        TempCgroup::make(&self.path, &self.keepalive)
    }

    fn make(parent: &Path, keepalive: &Path) -> TempCgroup {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = parent.join(format!(
            "ka-t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempCgroup {
            path,
            keepalive: keepalive.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) {
        let procs = self.path.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", procs.display()));
    }

    /// The processes directly in the cgroup.
    pub fn procs(&self) -> Vec<u32> {
        procs_of(&self.path)
    }
}

fn procs_of(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Empties and removes `dir` and the cgroups below it, reporting (not panicking) what fails:
/// this runs in Drop, possibly while a test is already unwinding.
fn remove_cgroup(dir: &Path, keepalive: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path(), keepalive);
            }
        }
    }
    let kill = dir.join("cgroup.kill");
    if !kill.exists() || std::fs::write(&kill, "1").is_err() {
        for pid in procs_of(dir) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let start = std::time::Instant::now();
    while !procs_of(dir).is_empty() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match Command::new(keepalive)
        .args(["unset", "--cgroup"])
        .arg(dir)
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "cleanup: keepalive unset --cgroup {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("cleanup: {}: {e}", keepalive.display()),
    }
    // rmdir is refused (EBUSY) for a moment after the last process left.
    let start = std::time::Instant::now();
    while let Err(e) = std::fs::remove_dir(dir) {
        if start.elapsed() > std::time::Duration::from_secs(5) {
            eprintln!(
                "cleanup: rmdir {}: {e} (processes left: {:?})",
                dir.display(),
                procs_of(dir)
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path, &self.keepalive);
    }
}

/// Runs `cmd` to its end with stdin closed, collecting its output; kills it and fails the test
/// after `limit`.
pub fn bounded_output(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took more than {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}
