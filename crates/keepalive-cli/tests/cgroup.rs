//! `keepalive set/get/unset --cgroup` against real servers in throwaway cgroups: a static Go
//! binary (Go turns keepalive on by itself, 15 s), a JVM, nested cgroups. Every connection is
//! read from outside the server with `keepalive get --pid PID --json` and compared with what the
//! server reads on its own descriptors; detachment is checked with BPF_PROG_QUERY, the pins, and
//! bpftool when it is installed.
//!
//! A socket belongs to the cgroup of the task that created it, an accepted socket to its
//! listener's: so each server is moved into its cgroup before it listens (it waits for a
//! `listen` command on stdin).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use testkit::{Running, TempCgroup, require_program, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");
/// How long one server reply or one keepalive command may take.
const WAIT: Duration = Duration::from_secs(60);
const BPFTOOL: &str = "/usr/sbin/bpftool";

/// Runs `cmd` to its end, killed and failing the test after [`WAIT`].
fn bounded(mut cmd: Command) -> Output {
    testkit::bounded_output(&mut cmd, WAIT)
}

fn keepalive(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_BACKTRACE");
    bounded(cmd)
}

fn ok(args: &[&str]) -> String {
    let out = keepalive(args);
    assert!(
        out.status.success(),
        "keepalive {}: exit {:?}: {}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    // Reports fold at 100 columns: phrases are compared with the folds taken out.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn json(args: &[&str]) -> serde_json::Value {
    let text = ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One connection: its ports and [SO_KEEPALIVE, idle, interval, count].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Conn {
    local: u16,
    peer: u16,
    ka: [u32; 4],
}

/// A server that answers line commands on stdin (tests/go/cmdserver.go, tests/java/Server.java).
struct Server {
    proc_: Running,
    stdin: ChildStdin,
    lines: Receiver<String>,
    what: String,
}

impl Server {
    fn spawn(mut cmd: Command) -> Server {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Server {
            proc_: Running(child),
            stdin,
            lines,
            what,
        }
    }

    fn pid(&self) -> u32 {
        self.proc_.pid()
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}")
            .unwrap_or_else(|e| panic!("{}: writing {command:?}: {e}", self.what));
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("{}: no answer in {WAIT:?}", self.what),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.proc_.0.try_wait();
                panic!("{}: exited ({status:?})", self.what)
            }
        }
    }

    fn number(&mut self, command: &str) -> u16 {
        self.send(command);
        let line = self.line();
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}: {command}: {line:?}", self.what))
    }

    /// Listens on a free loopback port; returns it.
    fn listen(&mut self) -> u16 {
        self.number("listen")
    }

    /// Every connection the server holds, as it reads its own sockets, in port order.
    fn own_view(&mut self) -> Vec<Conn> {
        self.send("show");
        let mut out = Vec::new();
        loop {
            let line = self.line();
            if line == "end" {
                out.sort();
                return out;
            }
            let n: Vec<u32> = line
                .split_whitespace()
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{}: {line:?}", self.what))
                })
                .collect();
            assert_eq!(n.len(), 6, "{}: {line:?}", self.what);
            out.push(Conn {
                local: n[0] as u16,
                peer: n[1] as u16,
                ka: [n[2], n[3], n[4], n[5]],
            });
        }
    }

    /// Waits until the server has accepted the connection from `peer` (and so has done its own
    /// setsockopt calls on it); returns it as the server sees it.
    fn accepted(&mut self, peer: u16) -> Conn {
        let start = Instant::now();
        loop {
            if let Some(c) = self.own_view().into_iter().find(|c| c.peer == peer) {
                return c;
            }
            assert!(
                start.elapsed() < WAIT,
                "{}: no connection from port {peer} accepted in {WAIT:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The static Go server (tests/go/cmdserver.go), built with a private GOCACHE and GOPATH in
/// `dir`.
fn go_server(dir: &Path, plain: bool) -> Server {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/cmdserver.go");
    let exe = testkit::go_build(&src, dir);
    let mut cmd = Command::new(&exe);
    if plain {
        cmd.arg("-plain");
    }
    Server::spawn(cmd)
}

/// `tests/java/Server.java`, run as a single source file.
fn java_server() -> Server {
    // `java File.java` compiles in memory: it needs the JDK's compiler, not only a JRE.
    require_program("java", "openjdk-17-jdk-headless");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/java/Server.java");
    let mut cmd = Command::new("java");
    cmd.arg("-XX:-UsePerfData").arg(src);
    Server::spawn(cmd)
}

fn port_of(addr: &serde_json::Value) -> Option<u16> {
    addr.as_str()?.rsplit_once(':')?.1.parse().ok()
}

/// Every connection of process `pid`, read from outside with `keepalive get --pid --json`.
fn outside_view(pid: u32) -> Vec<Conn> {
    let v = json(&["get", "--pid", &pid.to_string(), "--json"]);
    let mut out: Vec<Conn> = v
        .as_array()
        .unwrap_or_else(|| panic!("get --pid: {v}"))
        .iter()
        .filter(|s| s["listening"] == false)
        .map(|s| {
            let k = &s["keepalive"];
            let n = |f: &str| k["settings"][f].as_u64().unwrap() as u32;
            Conn {
                local: port_of(&s["local"]).unwrap(),
                peer: port_of(&s["peer"]).unwrap(),
                ka: [
                    u32::from(k["enabled"].as_bool().unwrap()),
                    n("idle"),
                    n("interval"),
                    n("count"),
                ],
            }
        })
        .collect();
    out.sort();
    out
}

/// [SO_KEEPALIVE, idle, interval, count] of process `pid`'s listener on `port`, from
/// `keepalive get --pid --json`.
fn listener_of(pid: u32, port: u16) -> [u32; 4] {
    let v = json(&["get", "--pid", &pid.to_string(), "--json"]);
    let s = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["listening"] == true && port_of(&s["local"]) == Some(port))
        .unwrap_or_else(|| panic!("no listener on {port}: {v}"));
    let k = &s["keepalive"];
    let n = |f: &str| k["settings"][f].as_u64().unwrap() as u32;
    [
        u32::from(k["enabled"].as_bool().unwrap()),
        n("idle"),
        n("interval"),
        n("count"),
    ]
}

/// The server's connections, checked to be the same from inside and from outside.
fn both_views(server: &mut Server) -> Vec<Conn> {
    let inside = server.own_view();
    let outside = outside_view(server.pid());
    assert_eq!(
        outside, inside,
        "`keepalive get --pid` and the server's own getsockopt agree"
    );
    inside
}

fn find(conns: &[Conn], local: u16, peer: u16) -> Conn {
    *conns
        .iter()
        .find(|c| c.local == local && c.peer == peer)
        .unwrap_or_else(|| panic!("no connection {local} -> {peer} in {conns:?}"))
}

/// A loopback client connection to `port`, and its local port.
fn client(port: u16) -> (TcpStream, u16) {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = c.local_addr().unwrap().port();
    (c, local)
}

/// The kernel's defaults here: [off, tcp_keepalive_time, _intvl, _probes].
fn kernel_defaults() -> [u32; 4] {
    let n = |k: &str| testkit::host_sysctl(k).parse::<u32>().unwrap();
    [
        0,
        n("net.ipv4.tcp_keepalive_time"),
        n("net.ipv4.tcp_keepalive_intvl"),
        n("net.ipv4.tcp_keepalive_probes"),
    ]
}

/// Where keepalive pins a cgroup's objects: the cgroup's id is its directory's inode.
fn pin_dir(cg: &Path) -> PathBuf {
    let id = std::fs::metadata(cg).unwrap().ino();
    PathBuf::from(format!("/sys/fs/bpf/keepalive/cgroup-{id}"))
}

/// The ids of the programs attached to `cg` itself on (sock_ops, setsockopt), by
/// BPF_PROG_QUERY.
fn attached_programs(cg: &Path) -> (Vec<u32>, Vec<u32>) {
    use keepalive::bpf::{programs, sys};
    let dir = std::fs::File::open(cg).unwrap();
    let query = |attach_type| {
        sys::prog_query(dir.as_fd(), attach_type, false)
            .unwrap_or_else(|e| panic!("BPF_PROG_QUERY on {}: {e}", cg.display()))
    };
    (
        query(programs::ATTACH_SOCK_OPS),
        query(programs::ATTACH_SETSOCKOPT),
    )
}

/// `bpftool cgroup show PATH`, when bpftool is installed (it is an extra witness, not needed).
fn bpftool_show(cg: &Path) -> Option<String> {
    if !Path::new(BPFTOOL).is_file() {
        eprintln!("note: {BPFTOOL} is not installed; detachment checked by BPF_PROG_QUERY only");
        return None;
    }
    let mut cmd = Command::new(BPFTOOL);
    cmd.args(["cgroup", "show"]).arg(cg);
    let out = bounded(cmd);
    assert!(
        out.status.success(),
        "bpftool cgroup show {}: {}",
        cg.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn go_server_without_and_with_force_and_its_existing_connections() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cg = TempCgroup::new(Path::new(BIN));
    let mut go = go_server(dir.path(), false);
    cg.add(go.pid());
    let port = go.listen();
    let cgroup = path_str(cg.path());

    // Before any policy: Go's own 15 s, the kernel's count.
    let (_c0, p0) = client(port);
    let a0 = go.accepted(p0);
    let defaults = kernel_defaults();
    assert_eq!(a0.ka, [1, 15, 15, defaults[3]], "Go's default keepalive");

    // Without --force.
    let policy = ["--idle", "37", "--interval", "7", "--count", "4"];
    let mut args = vec!["set", "--cgroup", cgroup];
    args.extend(policy);
    let out = ok(&args);
    assert!(
        out.contains("attached idle=37s,interval=7s,count=4")
            && out.contains("existing sockets: changed 1 of 1 TCP sockets in 1 process"),
        "the connection accepted before (the cgroup's own listener is left to the program): {out}"
    );
    let now = both_views(&mut go);
    assert_eq!(
        find(&now, port, p0).ka,
        [1, 37, 7, 4],
        "the connection accepted before `set` got the policy (pidfd_getfd)"
    );
    let (_c1, p1) = client(port);
    go.accepted(p1);
    let now = both_views(&mut go);
    assert_eq!(
        find(&now, port, p1).ka,
        [1, 15, 15, 4],
        "without --force Go's own setsockopt wins for idle and interval; count, which Go \
         leaves alone, is the policy's"
    );

    // With --force: Go's setsockopt calls do nothing.
    args.extend(["--force", "--json"]);
    let report = json(&args);
    assert_eq!(report["force"], true, "{report}");
    assert_eq!(
        report["replaced"]["policy"], "idle=37s,interval=7s,count=4",
        "{report}"
    );
    assert_eq!(report["replaced"]["force"], false, "{report}");
    assert_eq!(report["existing"][0]["pid"], go.pid(), "{report}");
    assert_eq!(
        report["existing"][0]["changed"], 2,
        "the two connections (the listener is the cgroup's own, left to the program): {report}"
    );
    let (_c2, p2) = client(port);
    go.accepted(p2);
    let dialed = go.number("dial");
    go.accepted(dialed);
    let now = both_views(&mut go);
    for (what, local, peer) in [
        ("accepted before", port, p0),
        ("accepted without force, retrofitted", port, p1),
        ("accepted", port, p2),
        ("dialed", dialed, port),
        ("accepted from the dial", port, dialed),
    ] {
        assert_eq!(find(&now, local, peer).ka, [1, 37, 7, 4], "{what}: {now:?}");
    }

    let view = json(&["get", "--cgroup", cgroup, "--json"]);
    let policies = view["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{view}");
    let here = &policies[0];
    assert_eq!(here["policy"], "idle=37s,interval=7s,count=4", "{view}");
    assert_eq!(here["force"], true, "{view}");
    // Since the forced set: the client's accepted connection, the dialed one and its accepted
    // peer reached ESTABLISHED in the cgroup; Go made 3 owned calls (SO_KEEPALIVE,
    // TCP_KEEPINTVL, TCP_KEEPIDLE) on each of them.
    assert_eq!(here["connections"], 3, "{view}");
    assert_eq!(here["failed"], 0, "{view}");
    assert_eq!(here["forced_calls"], 9, "{view}");
    assert_eq!(view["effective"], "idle=37s,interval=7s,count=4", "{view}");
    let text = ok(&["get", "--cgroup", cgroup]);
    assert!(
        text.contains("here: idle=37s,interval=7s,count=4, force")
            && text.contains("3 connections given the policy, 0 refused by the kernel")
            && text.contains("9 setsockopt calls made no-ops"),
        "{text}"
    );
}

#[test]
fn java_server_by_cgroup_of_pid_and_a_second_set_replaces_the_first() {
    require_root();
    let cg = TempCgroup::new(Path::new(BIN));
    let mut java = java_server();
    cg.add(java.pid());
    let port = java.listen();
    let pid = java.pid().to_string();

    let out = ok(&[
        "set",
        "--cgroup-of",
        &pid,
        "--idle",
        "29",
        "--interval",
        "6",
        "--count",
        "5",
    ]);
    assert!(
        out.contains(&format!(
            "cgroup {} (id {})",
            cg.path().display(),
            std::fs::metadata(cg.path()).unwrap().ino()
        )),
        "--cgroup-of found the server's cgroup: {out}"
    );
    let (_c1, p1) = client(port);
    java.accepted(p1);
    let now = both_views(&mut java);
    assert_eq!(find(&now, port, p1).ka, [1, 29, 6, 5], "{now:?}");

    let out = ok(&[
        "set",
        "--cgroup-of",
        &pid,
        "--policy",
        "idle=44,interval=8,count=2",
    ]);
    assert!(
        out.contains("attached idle=44s,interval=8s,count=2")
            && out.contains("replaces idle=29s,interval=6s,count=5"),
        "{out}"
    );
    let (_c2, p2) = client(port);
    java.accepted(p2);
    let now = both_views(&mut java);
    assert_eq!(find(&now, port, p2).ka, [1, 44, 8, 2], "new: {now:?}");
    assert_eq!(
        find(&now, port, p1).ka,
        [1, 44, 8, 2],
        "the earlier connection got the new policy too (existing sockets): {now:?}"
    );

    let view = json(&["get", "--cgroup", path_str(cg.path()), "--json"]);
    let policies = view["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "only the new policy: {view}");
    assert_eq!(policies[0]["policy"], "idle=44s,interval=8s,count=2");
    assert_eq!(policies[0]["force"], false);
    assert_eq!(
        policies[0]["connections"], 1,
        "counted since the second set: {view}"
    );
    assert_eq!(view["effective"], "idle=44s,interval=8s,count=2");
    let text = ok(&["get", "--cgroup-of", &pid]);
    assert!(!text.contains("idle=29s"), "{text}");
}

#[test]
fn unset_leaves_nothing_attached_or_pinned() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cg = TempCgroup::new(Path::new(BIN));
    let mut go = go_server(dir.path(), true);
    cg.add(go.pid());
    let cgroup = path_str(cg.path());
    let pins = pin_dir(cg.path());
    let defaults = kernel_defaults();
    let with_policy = [1, 33, defaults[2], 2];

    // One listener from before the policy, one made after it. Both are the cgroup's sockets,
    // so `set` leaves them alone (the sock_ops program covers what they accept) and `unset`
    // has nothing to take back from them.
    let before = go.listen();
    let out = ok(&[
        "set", "--cgroup", cgroup, "--force", "--idle", "33", "--count", "2",
    ]);
    assert!(out.contains("changed 0 of 0 TCP sockets"), "{out}");
    assert_eq!(
        listener_of(go.pid(), before),
        defaults,
        "a cgroup's listener is left alone"
    );
    let port = go.listen();
    assert_eq!(listener_of(go.pid(), port), defaults);

    // What there is to remove.
    let mut pinned: Vec<String> = std::fs::read_dir(&pins)
        .unwrap_or_else(|e| panic!("{}: {e}", pins.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pinned.sort();
    assert_eq!(pinned, ["record", "setsockopt", "sock_ops"]);
    let (ops, force) = attached_programs(cg.path());
    assert_eq!((ops.len(), force.len()), (1, 1), "{ops:?} {force:?}");
    if let Some(text) = bpftool_show(cg.path()) {
        assert!(
            text.contains("keepalive_ops") && text.contains("keepalive_force"),
            "{text}"
        );
    }
    let (_c1, p1) = client(port);
    assert_eq!(go.accepted(p1).ka, with_policy, "from the sock_ops program");

    let out = ok(&["unset", "--cgroup", cgroup]);
    assert!(
        out.contains("removed idle=33s,count=2, force"),
        "unset says what it removed: {out}"
    );

    assert!(
        !pins.exists(),
        "{} is left: {:?}",
        pins.display(),
        std::fs::read_dir(&pins).map(|d| d.count())
    );
    assert_eq!(
        attached_programs(cg.path()),
        (vec![], vec![]),
        "BPF_PROG_QUERY: nothing attached"
    );
    if let Some(text) = bpftool_show(cg.path()) {
        assert!(!text.contains("keepalive"), "bpftool: {text}");
        assert!(
            text.lines()
                .all(|l| !l.trim_start().starts_with(char::is_numeric)),
            "bpftool lists no program: {text}"
        );
    }
    let view = json(&["get", "--cgroup", cgroup, "--json"]);
    assert_eq!(view["policies"], serde_json::json!([]), "{view}");
    assert_eq!(view["effective"], serde_json::Value::Null, "{view}");
    let text = ok(&["get", "--cgroup", cgroup]);
    assert!(text.contains("no keepalive policy here or above"), "{text}");

    // New connections, both sides, get the kernel's defaults; the old one keeps its options.
    let (_c2, p2) = client(port);
    go.accepted(p2);
    let dialed = go.number("dial");
    go.accepted(dialed);
    let now = both_views(&mut go);
    assert_eq!(find(&now, port, p1).ka, with_policy, "kept: {now:?}");
    for (what, local, peer) in [
        ("accepted", port, p2),
        ("dialed", dialed, port),
        ("accepted from the dial", port, dialed),
    ] {
        assert_eq!(find(&now, local, peer).ka, defaults, "{what}: {now:?}");
    }
    // The listener from before the policy hands out the kernel's defaults again.
    let (_c3, p3) = client(before);
    assert_eq!(
        go.accepted(p3).ka,
        defaults,
        "after unset, on the older listener"
    );

    // A second unset has nothing to do, and says so.
    let out = ok(&["unset", "--cgroup", cgroup]);
    assert!(out.contains("no keepalive policy was attached"), "{out}");
}

#[test]
fn a_listener_opened_before_the_process_joined_is_given_the_policy_and_named() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cg = TempCgroup::new(Path::new(BIN));
    let mut go = go_server(dir.path(), false);
    // Listening first, in the test's own cgroup: that listener is not the new cgroup's socket;
    // nor is a connection dialed then.
    let port = go.listen();
    let early = go.number("dial");
    go.accepted(early);
    cg.add(go.pid());
    let cgroup = path_str(cg.path());
    let out = ok(&[
        "set",
        "--cgroup",
        cgroup,
        "--force",
        "--idle",
        "37",
        "--interval",
        "7",
        "--count",
        "4",
    ]);
    assert!(
        out.contains("was opened before the process joined this cgroup"),
        "the listener outside the cgroup is named: {out}"
    );
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("made before the process joined this cgroup")
            && words.contains("--force cannot guard"),
        "connections made outside the cgroup are named: {out}"
    );
    assert_eq!(
        listener_of(go.pid(), port),
        [1, 37, 7, 4],
        "set on the listener itself"
    );
    // Its connections are not the cgroup's: they inherit the listener's options, and Go's own
    // 15 s wins on them, force or not. A connection Go dials now is the cgroup's: force holds.
    let (_c, p) = client(port);
    assert_eq!(
        go.accepted(p).ka,
        [1, 15, 15, 4],
        "accepted on the outside listener"
    );
    let dialed = go.number("dial");
    go.accepted(dialed);
    let now = both_views(&mut go);
    assert_eq!(
        find(&now, dialed, port).ka,
        [1, 37, 7, 4],
        "dialed from inside: {now:?}"
    );
}

#[test]
fn a_set_from_inside_a_forced_cgroup_says_its_own_calls_were_swallowed() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cg = TempCgroup::new(Path::new(BIN));
    let mut go = go_server(dir.path(), true);
    cg.add(go.pid());
    let port = go.listen();
    let cgroup = path_str(cg.path());
    let (_c, p) = client(port);
    go.accepted(p);
    ok(&["set", "--cgroup", cgroup, "--force", "--idle", "41"]);
    assert_eq!(go.accepted(p).ka[1], 41);
    // keepalive itself inside the cgroup: the force program in place answers its setsockopt
    // calls on the existing sockets with success and does nothing. It must say so, not count
    // them as changed.
    let inside = format!(
        "echo $$ > {}/cgroup.procs && exec {BIN} set --cgroup {cgroup} --force --idle 300",
        cgroup
    );
    let out = bounded({
        let mut c = Command::new("sh");
        c.args(["-c", &inside]).env_remove("RUST_BACKTRACE");
        c
    });
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{text}{err}");
    assert!(text.contains("changed 0 of 1 TCP sockets"), "{text}");
    assert!(text.contains("run it from outside"), "{text}");
    assert_eq!(go.accepted(p).ka[1], 41, "the socket kept what it had");
}

#[test]
fn refusals_change_nothing() {
    require_root();
    let cg = TempCgroup::new(Path::new(BIN));
    let cgroup = path_str(cg.path());
    for args in [
        &["set", "--cgroup", cgroup, "--idle", "5"][..],
        &["set", "--cgroup", cgroup, "--force", "--idle", "5"],
        &["unset", "--cgroup", cgroup],
    ] {
        let out = bounded({
            let mut c = testkit::as_nobody(BIN);
            c.args(args);
            c
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "as nobody {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("CAP_BPF") && err.contains("CAP_NET_ADMIN"),
            "{args:?}: {err}"
        );
    }
    assert!(!pin_dir(cg.path()).exists());
    assert_eq!(attached_programs(cg.path()), (vec![], vec![]));
    let view = json(&["get", "--cgroup", cgroup, "--json"]);
    assert_eq!(view["policies"], serde_json::json!([]), "{view}");

    let cases: &[(&[&str], &str)] = &[
        (&["set", "--cgroup", "/tmp", "--idle", "5"], "/tmp"),
        (&["get", "--cgroup", "/tmp"], "/tmp"),
        (&["unset", "--cgroup", "/tmp"], "/tmp"),
        (
            &["set", "--cgroup", "/nonexistent-ka-test", "--idle", "5"],
            "/nonexistent-ka-test",
        ),
        (
            &["set", "--cgroup-of", "99999999", "--idle", "5"],
            "99999999",
        ),
        (&["get", "--cgroup-of", "99999999"], "99999999"),
        // kthreadd lives in the root cgroup: a policy there would cover the whole machine.
        (
            &["set", "--cgroup-of", "2", "--idle", "5"],
            "is a kernel thread",
        ),
    ];
    for (args, needle) in cases {
        let out = keepalive(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!pin_dir(cg.path()).exists());
}

#[test]
fn nested_cgroups_the_outer_policy_wins_where_both_set_an_option() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let parent = TempCgroup::new(Path::new(BIN));
    let child = parent.child();
    let mut go = go_server(dir.path(), true);
    child.add(go.pid());
    let port = go.listen();
    let (outer, inner) = (path_str(parent.path()), path_str(child.path()));

    ok(&["set", "--cgroup", outer, "--idle", "41"]);
    ok(&["set", "--cgroup", inner, "--idle", "23", "--count", "3"]);

    let dialed = go.number("dial");
    go.accepted(dialed);
    let now = both_views(&mut go);
    let defaults = kernel_defaults();
    // The kernel runs the child's program first and the parent's after it
    // (compute_effective_progs): idle is the parent's, count the child's.
    for (what, local, peer) in [("dialed", dialed, port), ("accepted", port, dialed)] {
        assert_eq!(
            find(&now, local, peer).ka,
            [1, 41, defaults[2], 3],
            "{what}: {now:?}"
        );
    }

    let view = json(&["get", "--cgroup", inner, "--json"]);
    let policies = view["policies"].as_array().unwrap();
    let listed: Vec<(&str, &str)> = policies
        .iter()
        .map(|p| {
            (
                p["cgroup"]["path"].as_str().unwrap(),
                p["policy"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(inner, "idle=23s,count=3"), (outer, "idle=41s")],
        "innermost first: {view}"
    );
    for p in policies {
        assert_eq!(p["connections"], 2, "both programs ran for both: {view}");
    }
    assert_eq!(view["effective"], "idle=41s,count=3", "{view}");
    let text = ok(&["get", "--cgroup", inner]);
    assert!(
        text.contains("here: idle=23s,count=3")
            && text.contains(&format!("from {outer}: idle=41s"))
            && text.contains("in effect: idle=41s,count=3"),
        "{text}"
    );
    // The parent sees only its own.
    let view = json(&["get", "--cgroup", outer, "--json"]);
    assert_eq!(view["policies"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(view["effective"], "idle=41s", "{view}");
}

/// From inside a cgroup namespace whose view the host's cgroup2 mount does not share (a pod
/// agent with the host's /sys/fs/cgroup), `--cgroup-of` refuses in one line instead of
/// naming an unrelated cgroup; with cgroup2 mounted inside the namespace it names the right
/// one.
#[test]
fn cgroup_of_inside_a_cgroup_namespace_names_the_right_cgroup_or_none() {
    require_root();
    testkit::require_program("unshare", "util-linux");
    let outer = TempCgroup::new(Path::new(BIN));
    let inner = outer.child();
    let target = inner.child();
    // A top-level cgroup with the target's name: what the old resolution picked.
    let decoy_name = target
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let mount = target.path().ancestors().nth(3).unwrap().to_path_buf();
    let decoy = mount.join(&decoy_name);
    std::fs::create_dir(&decoy).unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    target.add(sleeper.id());
    let own = tempfile::tempdir().unwrap();
    // The shell moves itself into `inner`, then makes a cgroup namespace rooted there.
    let script = format!(
        "echo $$ > {inner}/cgroup.procs && exec unshare -C -m --propagation private sh -c \
         '{bin} set --cgroup-of {pid} --idle 77 --dry-run; echo rc=$?; \
          mount -t cgroup2 none {own} && {bin} set --cgroup-of {pid} --idle 77 --dry-run; echo rc=$?'",
        inner = inner.path().display(),
        bin = BIN,
        pid = sleeper.id(),
        own = own.path().display(),
    );
    let out = bounded({
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    });
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = std::fs::remove_dir(&decoy);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("rc=2"), "{text}\n{err}");
    assert!(
        err.contains("does not show") && err.contains("--cgroup PATH"),
        "{err}"
    );
    assert!(!text.contains(&decoy.display().to_string()), "{text}");
    // Mounted inside the namespace, the mount shows it from its root: the target is
    // /<target name> there.
    assert!(
        text.contains(&format!("cgroup {}/{decoy_name} (id", own.path().display()))
            && text.contains("rc=0"),
        "{text}\n{err}"
    );
}

/// A process with many connections, in a cgroup of its own, for the tests below.
fn many_sockets(cg: &TempCgroup, pairs: u32) -> Running {
    let script = format!(
        "import resource, socket, sys, time\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))\n\
         l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(4096)\n\
         keep = []\n\
         for _ in range({pairs}):\n\
         \x20   c = socket.create_connection(l.getsockname()); keep += [c, l.accept()[0]]\n\
         print('ready', flush=True)\n\
         time.sleep(120)\n"
    );
    let mut child = Command::new(testkit::python())
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cg.add(child.id());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Running(child)
}

/// The idle time of every TCP connection `pid` holds, as `get --pid` reads them.
fn idles_of(pid: u32) -> Vec<u64> {
    let v = json(&["get", "--pid", &pid.to_string(), "--json"]);
    v.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["listening"] == false)
        .map(|s| s["keepalive"]["settings"]["idle"].as_u64().unwrap())
        .collect()
}

/// SIGTERM in the middle of a `set --cgroup` over thousands of sockets: the change is made
/// whole and reported, and then the signal ends the run; never an attached policy with half
/// the sockets changed and nothing said.
#[test]
fn a_signal_during_set_waits_for_the_change_and_its_report() {
    require_root();
    let cg = TempCgroup::new(Path::new(BIN));
    let holder = many_sockets(&cg, 2000);
    let cgroup = path_str(cg.path()).to_owned();
    let child = Command::new(BIN)
        .args(["set", "--cgroup", &cgroup, "--idle", "45"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let idles = idles_of(holder.pid());
    let attached = json(&["get", "--cgroup", &cgroup, "--json"])["policies"]
        .as_array()
        .is_some_and(|p| !p.is_empty());
    if attached {
        assert!(
            text.contains("existing sockets: changed 4000 of 4000"),
            "{out:?}"
        );
        assert!(
            idles.iter().all(|&i| i == 45),
            "every socket changed: {out:?}"
        );
    } else {
        assert!(
            idles.iter().all(|&i| i != 45),
            "nothing attached, nothing changed"
        );
    }
    let _ = keepalive(&["unset", "--cgroup", &cgroup]);
}

/// Three `set --cgroup` at once on one cgroup: one at a time, so exactly one is the first
/// attach and the others say what they replaced, and the existing sockets carry the policy
/// that stays.
#[test]
fn concurrent_sets_on_one_cgroup_take_turns() {
    require_root();
    let cg = TempCgroup::new(Path::new(BIN));
    let holder = many_sockets(&cg, 200);
    let cgroup = path_str(cg.path()).to_owned();
    let runs: Vec<_> = ["50", "60", "70"]
        .iter()
        .map(|idle| {
            Command::new(BIN)
                .args(["set", "--cgroup", &cgroup, "--idle", idle])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = runs
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{o:?}");
    }
    let firsts = outs
        .iter()
        .filter(|o| !String::from_utf8_lossy(&o.stdout).contains("replaces"))
        .count();
    assert_eq!(firsts, 1, "{outs:?}");
    let v = json(&["get", "--cgroup", &cgroup, "--json"]);
    let idle: u64 = v["policies"][0]["policy"]
        .as_str()
        .and_then(|p| p.strip_prefix("idle=")?.strip_suffix('s')?.parse().ok())
        .unwrap();
    assert!(idles_of(holder.pid()).iter().all(|&i| i == idle), "{v}");
    let _ = keepalive(&["unset", "--cgroup", &cgroup]);
}

/// The lock that makes set and unset take turns is root's: another user holding a lock on the
/// cgroup's directory changes nothing. A run waiting for the lock (held here by the test) ends
/// at once on SIGTERM, having changed nothing: signals are held back only once the change has
/// begun.
#[test]
fn the_lock_is_roots_and_a_signal_during_the_wait_acts_at_once() {
    require_root();
    let cg = TempCgroup::new(Path::new(BIN));
    let cgroup = path_str(cg.path()).to_owned();
    let mut other = testkit::as_nobody("flock");
    other.arg(cg.path()).args(["sleep", "30"]);
    let mut other = Running(other.spawn().unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let out = keepalive(&["set", "--cgroup", &cgroup, "--idle", "33"]);
    assert!(out.status.success(), "{out:?}");
    let _ = other.0.kill();
    // keepalive's own lock, held by the test: the next set waits for it.
    let pins = Path::new(keepalive::cgroup::policy::PIN_ROOT);
    let held = rustix::fs::open(
        pins,
        // CLOEXEC: a lock inherited by another test's children would outlive this test.
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let child = Command::new(BIN)
        .args(["set", "--cgroup", &cgroup, "--idle", "44"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let waited = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        waited.elapsed() < Duration::from_secs(10),
        "it ended by the signal"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(rustix::process::Signal::TERM.as_raw()),
        "{out:?}"
    );
    drop(held);
    let v = json(&["get", "--cgroup", &cgroup, "--json"]);
    assert_eq!(
        v["policies"][0]["policy"], "idle=33s",
        "the waiting run changed nothing: {v}"
    );
    let _ = keepalive(&["unset", "--cgroup", &cgroup]);
}

/// Inside a cgroup namespace the force program cannot find a caller's cgroup by its level:
/// --force is refused there in one line; a cgroup set with no values is "nothing to set", as
/// with --pid.
#[test]
fn force_in_a_cgroup_namespace_and_a_bare_set_are_refused() {
    require_root();
    require_program("unshare", "util-linux");
    let cg = TempCgroup::new(Path::new(BIN));
    let cgroup = path_str(cg.path()).to_owned();
    let out = bounded({
        let mut c = Command::new("unshare");
        c.args([
            "-C", BIN, "set", "--cgroup", &cgroup, "--force", "--idle", "30",
        ]);
        c
    });
    testkit::assert_one_line_failure(&out, 2, &["--force", "cgroup namespace"]);
    let out = keepalive(&["set", "--cgroup", &cgroup]);
    testkit::assert_one_line_failure(&out, 2, &["nothing to set"]);
    assert!(!pin_dir(cg.path()).exists());
}
