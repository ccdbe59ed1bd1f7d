//! `keepalive status`, `get --pid` and `set --pid` against real processes: python3 holding
//! sockets it can report on from the inside, nc, and iproute2's ss as the outside reference.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::Duration;
use testkit::{Running, TempNetns, require_program, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");
const WAIT: Duration = Duration::from_secs(20);

fn keepalive(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = keepalive(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// A python3 process that listens on a port, holds one connection to itself with keepalive
/// off and one with idle 40 s, and answers commands on stdin:
/// `show` prints its own view of every socket (fd, SO_KEEPALIVE, idle, interval, count);
/// `accept` accepts the next connection and keeps it.
const PY_SERVER: &str = r#"
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(8)
port = l.getsockname()[1]
plain = socket.create_connection(("127.0.0.1", port)); a, _ = l.accept()
kept = socket.create_connection(("127.0.0.1", port)); b, _ = l.accept()
kept.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
kept.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 40)
socks = [l, plain, a, kept, b]
print(port, plain.getsockname()[1], kept.getsockname()[1], flush=True)
for line in sys.stdin:
    if line.strip() == "accept":
        c, _ = l.accept(); socks.append(c)
    for s in socks:
        g = lambda lvl, opt: s.getsockopt(lvl, opt)
        print(s.fileno(), g(socket.SOL_SOCKET, socket.SO_KEEPALIVE), g(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
              g(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL), g(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))
    print("end", flush=True)
"#;

struct Server {
    proc_: Running,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    plain_port: u16,
    kept_port: u16,
}

impl Server {
    /// Starts the interpreter itself (not a wrapper script, so the pid is the socket owner's),
    /// after `wrapper` when one is given (`ip netns exec NAME`, which execs it).
    fn start(wrapper: &[&str]) -> Server {
        let python = testkit::python();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&python);
                c
            }
            None => Command::new(&python),
        };
        let mut child = cmd
            .args(["-c", PY_SERVER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        assert_eq!(ports.len(), 3, "{line:?}");
        Server {
            proc_: Running(child),
            stdin,
            stdout,
            port: ports[0],
            plain_port: ports[1],
            kept_port: ports[2],
        }
    }

    fn pid(&self) -> u32 {
        self.proc_.pid()
    }

    /// fd → (SO_KEEPALIVE, idle, interval, count), as the process itself reads them.
    fn own_view(&mut self, command: &str) -> Vec<(i32, [u32; 4])> {
        writeln!(self.stdin, "{command}").unwrap();
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            if line.trim() == "end" || line.is_empty() {
                return out;
            }
            let n: Vec<u32> = line
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            out.push((n[0] as i32, [n[1], n[2], n[3], n[4]]));
        }
    }
}

fn python_server() -> Server {
    require_program("python3", "python3");
    Server::start(&[])
}

/// (local, peer, keepalive timer?) for every established socket on `port`, from ss.
fn ss_view(port: u16) -> BTreeSet<(String, String, bool)> {
    testkit::ss_established(&format!("( sport = :{port} or dport = :{port} )"))
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (
                cols[2].to_owned(),
                cols[3].to_owned(),
                l.contains("timer:(keepalive"),
            )
        })
        .collect()
}

fn status_view(port: u16) -> BTreeSet<(String, String, bool)> {
    let v = json(&[
        "status",
        "--json",
        "--state",
        "established",
        "--port",
        &port.to_string(),
    ]);
    v["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["local"].as_str().unwrap().to_owned(),
                s["peer"].as_str().unwrap().to_owned(),
                s["keepalive"] == "on",
            )
        })
        .collect()
}

#[test]
fn status_matches_ss_for_the_same_sockets() {
    let server = python_server();
    let ours = status_view(server.port);
    assert_eq!(ours.len(), 4, "{ours:?}");
    assert_eq!(ours, ss_view(server.port));
    assert_eq!(
        ours.iter().filter(|(_, _, on)| *on).count(),
        1,
        "only `kept` has keepalive on"
    );
}

#[test]
fn status_shows_owners_exact_values_and_filters() {
    let mut server = python_server();
    let pid = server.pid().to_string();
    let v = json(&["status", "--json", "--exact", "--pid", &pid]);
    let sockets = v["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 4, "connections of the process: {v}");
    assert!(
        sockets
            .iter()
            .all(|s| s["owners"][0]["pid"] == server.pid())
    );
    let kept = sockets
        .iter()
        .find(|s| {
            s["local"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":{}", server.kept_port))
        })
        .unwrap();
    assert_eq!(kept["exact"]["enabled"], true);
    assert_eq!(kept["exact"]["settings"]["idle"], 40);
    // The exact values are what the process itself sees.
    let fd = server
        .own_view("show")
        .into_iter()
        .find(|(_, v)| v[0] == 1 && v[1] == 40);
    assert!(fd.is_some());

    let off = json(&["status", "--json", "--no-keepalive", "--pid", &pid]);
    assert_eq!(off["sockets"].as_array().unwrap().len(), 3);
    assert_eq!(off["summary"]["keepalive_off"], 3);
    let listening = json(&["status", "--json", "--listening", "--pid", &pid]);
    assert_eq!(listening["sockets"][0]["state"], "listening");

    // Every connection counts as at risk once the threshold is below its idle time.
    std::thread::sleep(Duration::from_millis(300));
    let risk = json(&["status", "--json", "--pid", &pid, "--idle-over", "100ms"]);
    assert_eq!(risk["summary"]["at_risk"], 3);
    let text = ok(&["status", "-p", "--pid", &pid, "--idle-over", "100ms"]);
    assert_eq!(text.matches("AT RISK").count(), 3, "{text}");
    assert!(text.contains(&format!("python3/{pid}")), "{text}");
}

#[test]
fn status_in_another_namespace_by_name_or_by_pid() {
    require_program("python3", "python3");
    let ns = TempNetns::new();
    let mut server = Server::start(&["ip", "netns", "exec", ns.name()]);
    let _ = server.own_view("show");
    let v = json(&[
        "status",
        "--json",
        "--netns",
        ns.name(),
        "--port",
        &server.port.to_string(),
    ]);
    assert_eq!(v["summary"]["sockets"], 4, "{v}");
    // The host namespace has no such sockets.
    let host = json(&["status", "--json", "--port", &server.port.to_string()]);
    assert!(
        host["sockets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["owners"].as_array().unwrap().is_empty())
    );
    // --pid enters the process's namespace by itself. `ip netns exec` execs python: same pid.
    let v = json(&["status", "--json", "--pid", &server.pid().to_string()]);
    assert_eq!(v["summary"]["sockets"], 4, "{v}");
}

#[test]
fn get_reads_what_the_process_sees() {
    let mut server = python_server();
    let pid = server.pid();
    let v = json(&["get", "--pid", &pid.to_string(), "--json"]);
    let inside = server.own_view("show");
    let got: Vec<(i32, [u32; 4])> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let k = &s["keepalive"];
            let n = |f: &str| k["settings"][f].as_u64().unwrap() as u32;
            (
                s["fd"].as_i64().unwrap() as i32,
                [
                    k["enabled"].as_bool().unwrap() as u32,
                    n("idle"),
                    n("interval"),
                    n("count"),
                ],
            )
        })
        .collect();
    assert_eq!(got, inside);
    assert!(v.as_array().unwrap().iter().any(|s| s["listening"] == true));
}

#[test]
fn set_changes_a_live_process_and_its_later_connections() {
    let mut server = python_server();
    let pid = server.pid().to_string();
    let before = server.own_view("show");

    let dry = ok(&["set", "--pid", &pid, "--all", "--idle", "25", "--dry-run"]);
    assert!(dry.contains("would be on 25s/"), "{dry}");
    assert_eq!(server.own_view("show"), before, "--dry-run changed nothing");

    let out = ok(&[
        "set",
        "--pid",
        &pid,
        "--all",
        "--idle",
        "25",
        "--interval",
        "5",
        "--count",
        "3",
    ]);
    assert!(out.contains("5 of 5 TCP sockets"), "{out}");
    for (fd, v) in server.own_view("show") {
        assert_eq!(v, [1, 25, 5, 3], "fd {fd} as the process sees it");
    }
    // ss agrees: every connection now has a keepalive timer.
    assert!(ss_view(server.port).iter().all(|(_, _, on)| *on));

    // The listener passes the policy to the next connection it accepts.
    let _client = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let after = server.own_view("accept");
    assert_eq!(
        after.last().unwrap().1,
        [1, 25, 5, 3],
        "the accepted socket inherited from the listener"
    );
}

#[test]
fn set_one_descriptor_and_refuse_the_wrong_ones() {
    let mut server = python_server();
    let pid = server.pid().to_string();
    let view = server.own_view("show");
    let (fd, _) = view[1];
    ok(&[
        "set",
        "--pid",
        &pid,
        "--fd",
        &fd.to_string(),
        "--count",
        "2",
    ]);
    let after = server.own_view("show");
    assert_eq!(after[1].1[3], 2);
    assert_eq!(after[2].1, view[2].1, "other sockets untouched");

    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["set", "--pid", &pid, "--fd", "0", "--idle", "5"],
            2,
            "not a TCP socket",
        ),
        (
            &["set", "--pid", &pid, "--fd", "999", "--idle", "5"],
            2,
            "not open",
        ),
        (
            &["set", "--pid", "999999999", "--all", "--idle", "5"],
            2,
            "is not a process id",
        ),
        (&["get", "--pid", "999999999"], 2, "is not a process id"),
        (&["set", "--pid", &pid, "--all"], 2, "nothing to set"),
        (&["set", "--pid", &pid, "--idle", "5"], 2, "--fd"),
        (&["status", "--state", "bogus"], 2, "not a TCP state"),
        (&["status", "--idle-over", "soon"], 2, "expected a duration"),
    ];
    for (args, code, needle) in cases {
        let out = keepalive(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn without_ptrace_permission_exit_3_and_nothing_changes() {
    testkit::require_root();
    let mut server = python_server();
    let before = server.own_view("show");
    let pid = server.pid().to_string();
    for args in [
        vec!["get", "--pid", &pid],
        vec!["set", "--pid", &pid, "--all", "--idle", "9"],
    ] {
        let out = testkit::as_nobody(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("ptrace-attach") && err.contains("CAP_SYS_PTRACE"),
            "{err}"
        );
    }
    assert_eq!(server.own_view("show"), before);
    // status --exact says whose sockets it could not read, and still lists the sockets.
    let out = testkit::as_nobody(BIN)
        .args(["status", "--exact", "--port"])
        .arg(server.port.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("owner unknown for 4 sockets") && text.contains("CAP_SYS_PTRACE"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("established"))
            .count(),
        4,
        "{text}"
    );
}

/// OpenBSD nc listening on a loopback port, once its listener is there. A port from
/// `free_port` can be taken by another test between its release and nc's bind (nc then exits),
/// so a few ports are tried; connecting only after the listener is seen also keeps a client
/// from connecting to itself on a port nobody listens on yet.
fn nc_listening() -> (Running, u16) {
    for _ in 0..5 {
        let port = testkit::free_port();
        let mut nc = Running(
            Command::new("nc")
                .args(["-l", "127.0.0.1", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = nc.pid().to_string();
        let listening = wait_for("nc to listen or exit", WAIT, || {
            if nc.0.try_wait().unwrap().is_some() {
                return Some(false);
            }
            let v = json(&["status", "--json", "--listening", "--pid", &pid]);
            (v["summary"]["sockets"] == 1).then_some(true)
        });
        if listening {
            return (nc, port);
        }
    }
    panic!("nc could not listen on any of 5 free ports");
}

#[test]
fn nc_connection_found_and_fixed_without_restarting_it() {
    require_program("nc", "netcat-openbsd");
    let (nc, port) = nc_listening();
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let pid = nc.pid().to_string();
    let mut last = serde_json::Value::Null;
    let start = std::time::Instant::now();
    let v = loop {
        let v = json(&["status", "--json", "--pid", &pid]);
        if v["summary"]["sockets"] == 1 {
            break v;
        }
        assert!(
            start.elapsed() < WAIT,
            "nc's connection on port {port} not seen in {WAIT:?}; status said {last}"
        );
        last = v;
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(v["sockets"][0]["keepalive"], "off");
    ok(&[
        "set",
        "--pid",
        &pid,
        "--all",
        "--idle",
        "30",
        "--interval",
        "10",
        "--count",
        "5",
    ]);
    let v = json(&["status", "--json", "--exact", "--pid", &pid]);
    assert_eq!(v["sockets"][0]["keepalive"], "on");
    assert_eq!(v["sockets"][0]["exact"]["settings"]["idle"], 30);
    let (state, _) = testkit::connected_socket_of(nc.pid(), port, true).unwrap();
    assert_eq!((state.settings.interval, state.settings.count), (10, 5));
}

#[test]
fn prometheus_watch_and_units() {
    let server = python_server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keepalive.prom");
    let out = keepalive(&[
        "status",
        "--prometheus",
        file.to_str().unwrap(),
        "--port",
        &server.port.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("keepalive_tcp_connections{command=\"python3\",keepalive=\"off\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("keepalive_tcp_connections{command=\"python3\",keepalive=\"on\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE keepalive_tcp_probes_in_flight gauge"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );

    let text = ok(&[
        "status",
        "--watch",
        "1",
        "--iterations",
        "2",
        "--port",
        &server.port.to_string(),
    ]);
    assert_eq!(text.matches("STATE").count(), 2, "{text}");

    // The timer is in seconds, not "ms" as ss before 6.11 printed: idle 40 s shows as ~40 s.
    // (The server's own sockets only: another test's connection can use the same port number
    // as a peer port.)
    let v = json(&[
        "status",
        "--json",
        "--pid",
        &server.pid().to_string(),
        "--port",
        &server.kept_port.to_string(),
        "--state",
        "established",
    ]);
    let kept = v["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["keepalive"] == "on")
        .unwrap();
    let ms = kept["timer_ms"].as_u64().unwrap();
    assert!((35_000..=40_000).contains(&ms), "{ms}");
    let _ = server.plain_port;
}

#[test]
fn set_reaches_a_static_binary_the_shim_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/holder.c");
    let prog = testkit::compile_c(&src, dir.path(), &["-static"]);
    // The shim cannot reach it, and says what can...
    let out = keepalive(&[
        "run",
        "--via",
        "shim",
        "--idle",
        "30",
        "--",
        prog.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("keepalive set --pid"));
    // ...and `set --pid` changes it once it runs.
    let mut child = Command::new(&prog)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let held = Running(child);
    let pid = held.pid().to_string();
    let v = json(&[
        "set", "--pid", &pid, "--all", "--json", "--idle", "31", "--count", "4",
    ]);
    assert_eq!(v["changes"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["exited"], false);
    let (state, _) = testkit::connected_socket_of(held.pid(), port, true).unwrap();
    assert_eq!(
        (state.enabled, state.settings.idle, state.settings.count),
        (true, 31, 4)
    );
}
