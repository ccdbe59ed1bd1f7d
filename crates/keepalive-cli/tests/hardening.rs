//! What independent testing broke in status, get, set and the CLI's output, each case with
//! the program it was found with: closed pipes and full disks for every subcommand, process
//! ids that name no process, another user's processes, SYN-SENT sockets, listeners whose
//! program sets its own values, files planted where the tools write.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::TempNetns;

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");

fn keepalive(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_BACKTRACE");
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Killed and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A python3 program running `code`, and the first line it prints (a pid, a port, "ready").
fn python_says(code: &str, args: &[&str]) -> (Running, String) {
    python_in(None, code, args)
}

/// [`python_says`] inside network namespace `ns` (`ip netns exec`, which execs python: the
/// child's pid is python's).
fn python_in(ns: Option<&TempNetns>, code: &str, args: &[&str]) -> (Running, String) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns.name()])
                .arg(testkit::python());
            cmd
        }
        None => Command::new(testkit::python()),
    };
    let mut child = cmd
        .arg("-c")
        .arg(code)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Running(child), line.trim().to_owned())
}

fn sleeper() -> Running {
    Running(Command::new("/bin/sleep").arg("60").spawn().unwrap())
}

/// The subcommands, each with arguments that make it print something and change nothing
/// outside `ns` and `dir`.
fn every_subcommand(ns: &str, dir: &Path, me: &str, url: &str) -> Vec<Vec<String>> {
    let d = dir.to_str().unwrap();
    let cmds: Vec<Vec<&str>> = vec![
        vec!["--help"],
        vec!["--version"],
        vec!["status", "--help"],
        vec!["http", url, "--max-wait", "2s"],
        vec!["lab", "reboot"],
        vec!["explain", "--idle", "30"],
        vec!["explain", "--idle", "30", "--json"],
        vec!["sysctl", "show"],
        vec!["sysctl", "show", "--json"],
        vec!["sysctl", "persist", "--idle", "30", "--dir", d],
        vec!["status"],
        vec!["status", "--json"],
        vec!["get", "--pid", me],
        vec!["get", "--pid", me, "--json"],
        vec!["get", "--cgroup-of", me],
        vec!["set", "--pid", me, "--all", "--idle", "60", "--dry-run"],
        vec!["lab", "--list"],
        vec!["lab", "--list", "--json"],
        vec!["completions", "bash"],
        vec!["sysctl", "set", "--netns", ns, "--idle", "61"],
        vec!["sysctl", "reset", "--netns", ns],
    ];
    cmds.into_iter()
        .map(|c| c.into_iter().map(String::from).collect())
        .collect()
}

/// Every subcommand with stdout a pipe nobody reads (EPIPE on the first write, as under
/// `| head` once head has its line): exit 0, nothing on stderr. With stdout /dev/full: exit
/// 1, one line naming the failure, never a panic; a change already made says so.
#[test]
fn every_subcommand_ends_quietly_on_a_closed_pipe_and_in_one_line_on_a_full_disk() {
    let ns = TempNetns::new();
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id().to_string();
    // Python's HTTP/1.0 file server: one response per connection, then it closes.
    let mut server = Command::new(testkit::python())
        .args([
            "-c",
            "import http.server,sys\n\
             s=http.server.HTTPServer(('127.0.0.1',0),http.server.SimpleHTTPRequestHandler)\n\
             print(s.server_address[1],flush=True); s.serve_forever()",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let _server = Running(server);
    let url = format!("http://127.0.0.1:{}/", port.trim());
    for args in every_subcommand(ns.name(), dir.path(), &me, &url) {
        let (read, write) = rustix::pipe::pipe().unwrap();
        drop(read);
        let out = keepalive(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::from(write))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr), "", "{args:?}");

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = keepalive(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::from(full))
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("writing to standard output: No space left on device")
                && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        if args[0] == "sysctl" && (args[1] == "set" || args[1] == "reset") {
            assert!(err.contains("the change was made"), "{args:?}: {err}");
        }
    }
    // The change was made, and reported as made.
    assert_eq!(ns.sysctl("net.ipv4.tcp_keepalive_time"), "7200");
}

/// A process id that names no process that could hold sockets: out of range, a thread, a
/// zombie, a kernel thread. Each is bad input (exit 2) named in one line, for status, get and
/// set alike, and status prints no header before saying so (and no half a JSON document).
#[test]
fn process_ids_that_are_not_processes_are_named_for_what_they_are() {
    // A zombie: a child that exited, not reaped until `zombie` is dropped.
    let mut zombie = Command::new("/bin/true").spawn().unwrap();
    let zpid = zombie.id();
    testkit::wait_for("the child to exit", Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{zpid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .trim_start()
            .starts_with('Z')
            .then_some(())
    });
    // A thread: one of python's.
    let (py, line) = python_says(
        "import threading,time\n\
             t=threading.Thread(target=time.sleep,args=(60,),daemon=True); t.start()\n\
             print(t.native_id, flush=True); time.sleep(60)",
        &[],
    );
    let tid = line.trim().to_owned();
    let ppid = py.0.id().to_string();
    let zpid = zpid.to_string();
    let cases: Vec<(String, String)> = vec![
        ("2147483648".into(), "is not a process id".into()),
        ("0".into(), "is not a process id".into()),
        (zpid.clone(), "has exited (a zombie".into()),
        (
            tid.clone(),
            format!("is a thread of process {ppid}, not a process: give --pid {ppid}"),
        ),
    ];
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    let cases = cases
        .into_iter()
        .chain(kthreadd.then(|| ("2".to_owned(), "is a kernel thread".to_owned())));
    for (pid, needle) in cases {
        for args in [
            vec!["status", "--pid", &pid],
            vec!["status", "--pid", &pid, "--json"],
            vec!["get", "--pid", &pid],
            vec!["set", "--pid", &pid, "--all", "--idle", "60"],
        ] {
            let out = keepalive(&args).output().unwrap();
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(err.contains(&needle), "{args:?}: {err}");
            assert_eq!(text(&out.stdout), "", "{args:?}: nothing before the error");
        }
    }
    drop(py);
    zombie.wait().unwrap();
}

/// Another user's process, unprivileged: the same permission error (exit 3, with the ptrace
/// reason) from status, get and set, and nothing on stdout.
#[test]
fn another_users_process_is_a_permission_error_everywhere() {
    testkit::require_root();
    let target = sleeper();
    let pid = target.0.id().to_string();
    for args in [
        vec!["status", "--pid", &pid],
        vec!["status", "--pid", &pid, "--json"],
        vec!["get", "--pid", &pid],
        vec!["set", "--pid", &pid, "--all", "--idle", "60"],
    ] {
        let out = Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                BIN,
            ])
            .args(&args)
            .current_dir("/")
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("ptrace-attach permission"), "{args:?}: {err}");
        assert_eq!(text(&out.stdout), "", "{args:?}");
    }
}

/// A socket still in SYN-SENT has never heard from its peer: no IDLE (the kernel's "last
/// received" is the time since boot there). Made in a network namespace of the test's own,
/// where 198.18.0.1 is routed to lo and never answers.
#[test]
fn a_syn_sent_socket_has_no_idle_time() {
    let ns = TempNetns::new();
    for cmd in [
        &["link", "set", "lo", "up"][..],
        &["route", "add", "198.18.0.1/32", "dev", "lo"],
    ] {
        let ok = Command::new("ip")
            .args(["-n", ns.name()])
            .args(cmd)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let mut py = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(testkit::python())
        .args([
            "-c",
            "import socket,time,os\n\
             s=socket.socket(); s.setblocking(False)\n\
             try: s.connect(('198.18.0.1', 9))\n\
             except BlockingIOError: pass\n\
             print(os.getpid(), flush=True); time.sleep(60)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(py.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let py = Running(py);
    let pid = line.trim().to_owned();
    let out = keepalive(&["status", "--pid", &pid, "--state", "syn-sent", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sockets = v["sockets"].as_array().unwrap();
    assert_eq!(sockets.len(), 1, "{v:#}");
    assert_eq!(sockets[0]["state"], "syn-sent", "{v:#}");
    assert!(sockets[0]["idle_ms"].is_null(), "{v:#}");
    let out = keepalive(&["status", "--pid", &pid, "--state", "syn-sent"])
        .output()
        .unwrap();
    let table = text(&out.stdout);
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with("syn-sent"), "{table}");
    drop(py);
}

/// A Go server (net.Listen sets 15 s keepalive on every connection it accepts): `set --pid`
/// changes its listener, and says that new connections will not get the policy from it;
/// `--keepalive off|on` switches without values; `status --port` takes several ports, and with
/// --exact says when the next probe goes out.
#[test]
fn set_says_when_the_program_sets_its_own_and_switches_keepalive() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/cmdserver.go");
    let exe = testkit::go_build(&src, dir.path());
    let mut go = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = go.stdin.take().unwrap();
    let mut output = BufReader::new(go.stdout.take().unwrap());
    let go = Running(go);
    let mut ask = |cmd: &str| {
        writeln!(input, "{cmd}").unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        line.trim().to_owned()
    };
    let port = ask("listen");
    let local = ask("dial");
    let pid = go.0.id().to_string();
    let out = keepalive(&["set", "--pid", &pid, "--all", "--idle", "40"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    // The note is folded at 100 columns: compared as one line.
    let unfolded = said.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        unfolded.contains(&format!(
            "accepted on port {port} carry keepalive settings other than the listener"
        )) && said.contains("--force"),
        "{said}"
    );
    for line in said.lines() {
        assert!(line.chars().count() <= 100, "{line:?}");
    }
    // A program that leaves accepted connections alone (python's socket module) gets no note.
    let (py, _ready) = python_says(
        "import socket,time\n\
             l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
             c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
             print(1, flush=True); time.sleep(60)",
        &[],
    );
    let out = keepalive(&[
        "set",
        "--pid",
        &py.0.id().to_string(),
        "--all",
        "--idle",
        "40",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("note:"),
        "{}",
        text(&out.stdout)
    );
    drop(py);

    // Off, then on again with the socket's own values.
    let out = keepalive(&["set", "--pid", &pid, "--all", "--keepalive", "off"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let get = |pid: &str| -> Vec<Value> {
        let out = keepalive(&["get", "--pid", pid, "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(
        get(&pid).iter().all(|s| s["keepalive"]["enabled"] == false),
        "{:#?}",
        get(&pid)
    );
    let out = keepalive(&["set", "--pid", &pid, "--all", "--keepalive", "on"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sockets = get(&pid);
    assert!(sockets.iter().all(|s| s["keepalive"]["enabled"] == true));
    // Again: nothing is different, and the count says so.
    let out = keepalive(&["set", "--pid", &pid, "--all", "--keepalive", "on"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(
        said.contains("0 of 3 TCP sockets") && said.contains("3 already so"),
        "{said}"
    );
    assert!(
        sockets
            .iter()
            .all(|s| s["keepalive"]["settings"]["idle"] == 40),
        "the values stayed: {sockets:#?}"
    );
    let out = keepalive(&[
        "set",
        "--pid",
        &pid,
        "--all",
        "--keepalive",
        "off",
        "--idle",
        "5",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Both connections' ports, and the next probe.
    let out = keepalive(&["status", "--port", &port, "--port", &local, "--exact"])
        .output()
        .unwrap();
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("established"))
            .count(),
        2,
        "{table}"
    );
    assert!(table.contains("probe in"), "{table}");
}

/// `status --prometheus` into a shared directory where another user planted a symlink at the
/// target: refused (exit 2), what it points to untouched; then the file is 0644 whatever the
/// umask; a command name with a line feed cannot inject a metric line. A device node is
/// refused too (the rename would replace /dev/full with a file).
#[test]
fn prometheus_file_is_written_safely() {
    testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let target = shared.join("keepalive.prom");
    let planted = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "ln",
            "-s",
        ])
        .arg(&victim)
        .arg(&target)
        .status()
        .unwrap();
    assert!(planted.success());
    // A python process named "evil\nkeepalive_tcp_connections{...} 999" holding a connection.
    let name = "ev\nka_x 999";
    let (py, line) = python_says(
        "import socket,time,ctypes,sys\n\
             ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n\
             l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
             c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
             print(l.getsockname()[1], flush=True); time.sleep(60)",
        &[name],
    );
    let out = Command::new("/bin/sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", BIN])
        .args(["status", "--port", line.trim(), "--prometheus"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is a symbolic link"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let out = keepalive(&["status", "--prometheus", "/dev/full"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        std::fs::symlink_metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device()
    );
    std::fs::remove_file(&target).unwrap();
    let out = Command::new("/bin/sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", BIN])
        .args(["status", "--port", line.trim(), "--prometheus"])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = std::fs::symlink_metadata(&target).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o644
    );
    let metrics = std::fs::read_to_string(&target).unwrap();
    assert!(!metrics.lines().any(|l| l.starts_with("ka_x")), "{metrics}");
    assert!(metrics.contains("command=\"ev\\nka_x 999\""), "{metrics}");
    drop(py);
}

/// `sysctl persist` under umask 000 still writes 0644: the file is applied as root at boot.
#[test]
fn persist_is_0644_under_any_umask() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("/bin/sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", BIN])
        .args(["sysctl", "persist", "--idle", "45", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let meta = std::fs::metadata(dir.path().join("90-keepalive.conf")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o644
    );
}

/// Human output fits 100 columns where the second pass found it wider: status with IPv6
/// addresses, exact values and a user timeout (two lines per socket then), its notes, explain
/// for another system, get for a cgroup without a policy. The notes say what applies: owners
/// outside the PID namespace /proc shows, or --exact without an owner. `--port 0` is refused:
/// every listener's peer port is 0.
#[test]
fn human_output_fits_100_columns_and_notes_say_what_applies() {
    let ns = TempNetns::new();
    let long = "2001:db8:ffff:ffff:ffff:ffff:ffff:1";
    let out = Command::new("ip")
        .args([
            "-n",
            ns.name(),
            "addr",
            "add",
            &format!("{long}/128"),
            "dev",
            "lo",
            "nodad",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let code = "import socket,sys,time\n\
                l=socket.socket(socket.AF_INET6); l.bind((sys.argv[1],0)); l.listen()\n\
                c=socket.socket(socket.AF_INET6)\n\
                c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)\n\
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 45)\n\
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 90000)\n\
                c.connect(l.getsockname()[:2]); a,_=l.accept()\n\
                print(l.getsockname()[1], flush=True); time.sleep(60)";
    let (py, port) = python_in(Some(&ns), code, &[long]);
    let pid = py.0.id().to_string();
    let sleeping = sleeper();
    let sleeping = sleeping.0.id().to_string();
    let runs: Vec<Vec<&str>> = vec![
        vec!["status", "-p", "--exact", "--netns", ns.name()],
        vec!["status", "--exact", "--pid", &pid],
        vec!["status", "-p", "--netns", ns.name(), "--port", &port],
        vec!["explain", "--os", "macos", "idle=60"],
        vec!["explain", "--os", "windows", "idle=60"],
        vec!["get", "--cgroup-of", &sleeping],
        vec!["get", "--pid", &pid],
        vec!["set", "--pid", &pid, "--all", "--idle", "50", "--dry-run"],
    ];
    for args in &runs {
        let out = keepalive(args).output().unwrap();
        let said = text(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {said}{}",
            text(&out.stderr)
        );
        for line in said.lines() {
            assert!(line.chars().count() <= 100, "{args:?}: {line:?}");
        }
        if args[0] == "status" && args.contains(&"--exact") {
            assert!(
                said.contains(&format!("[{long}]:{port}")) && said.contains("ut=1m30s"),
                "{args:?}: {said}"
            );
        }
    }

    // Seen from a child PID namespace's /proc, the owner is outside it.
    let out = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            BIN,
            "status",
            "-p",
            "--netns",
        ])
        .arg(ns.name())
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.contains("outside the PID namespace this /proc shows"),
        "{said}{}",
        text(&out.stderr)
    );
    // Another user's sockets, --exact, unprivileged: the note says --exact could not read them.
    let (_host, port) = python_says(
        "import socket,time\n\
         l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
         c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
         print(l.getsockname()[1], flush=True); time.sleep(60)",
        &[],
    );
    let out = testkit::as_nobody(BIN)
        .args(["status", "--exact", "--port", &port])
        .current_dir("/")
        .output()
        .unwrap();
    // Folded at 100 columns: read as words.
    let said = text(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        out.status.success()
            && said.contains("not readable")
            && said.contains("--exact cannot read their options"),
        "{said}{}",
        text(&out.stderr)
    );

    let out = keepalive(&["status", "--listening", "--port", "0"])
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 2, &["'0'", "1 to 65535"]);
}

/// A name another user chose reaches no terminal raw and breaks no table: a process named
/// `evil\nFAKE` with a terminal escape, sharing its sockets with three forked children (a
/// prefork server), shows as one escaped row per socket with its first owner and "+3", in
/// every layout and in the metrics file.
#[test]
fn hostile_process_names_are_escaped_and_shared_sockets_fit() {
    let (py, port) = python_says(
        "import ctypes,os,socket,time\n\
         l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
         c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
         c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)\n\
         ctypes.CDLL(None).prctl(15, b'evil\\nFAKE\\x1b[31m', 0, 0, 0)\n\
         kids=[os.fork() for _ in range(3)]\n\
         if 0 in kids: time.sleep(60); os._exit(0)\n\
         print(l.getsockname()[1], flush=True); time.sleep(60)",
        &[],
    );
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("k.prom");
    for args in [
        vec!["status", "-p", "--port", &port],
        vec!["status", "--exact", "--port", &port],
        vec!["status", "-p", "--listening", "--port", &port],
    ] {
        let out = keepalive(&args).output().unwrap();
        let said = text(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {said}{}",
            text(&out.stderr)
        );
        assert!(
            !said.contains('\x1b') && !said.contains("\nFAKE"),
            "{args:?}: {said:?}"
        );
        let rows = said
            .lines()
            .filter(|l| l.starts_with("established") || l.starts_with("listening"))
            .count();
        let owned = said.matches("evil\\nFAKE\\x1b[31m/").count();
        let want = if args.contains(&"--listening") { 1 } else { 2 };
        assert!(rows == want && owned == want, "{args:?}: {said}");
        assert!(
            said.contains(" +"),
            "{args:?}: the children share the sockets: {said}"
        );
        for line in said.lines() {
            assert!(line.chars().count() <= 100, "{args:?}: {line:?}");
        }
    }
    let out = keepalive(&["status", "--port", &port, "--prometheus"])
        .arg(&prom)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        !metrics.contains('\x1b') && metrics.contains("command=\"evil\\nFAKE\u{fffd}[31m\""),
        "{metrics}"
    );
    drop(py);
}

/// Numbers the second pass found unguarded: a negative descriptor reached pidfd_getfd and
/// panicked; negative pids and ports were taken for flags; `--watch 0` and `--iterations 0`
/// meant something else; `sysctl persist` into a missing directory was a failure, not bad
/// input. A dry run names the sockets already so.
#[test]
fn numbers_out_of_range_are_refused_by_name() {
    let me = std::process::id().to_string();
    for (args, needles) in [
        (
            vec!["set", "--pid", &me, "--fd", "-1", "--idle", "5"],
            vec!["'-1'", "--fd"],
        ),
        (vec!["get", "--pid", "-1"], vec!["'-1'", "kernel.pid_max"]),
        (vec!["status", "--pid", "0"], vec!["'0'", "kernel.pid_max"]),
        (
            vec!["set", "--cgroup-of", "-5", "--idle", "5"],
            vec!["'-5'", "kernel.pid_max"],
        ),
        (vec!["status", "--port", "-1"], vec!["'-1'", "1 to 65535"]),
        (vec!["status", "--watch", "0"], vec!["'0'", "--watch"]),
        (
            vec!["status", "--watch", "1", "--iterations", "0"],
            vec!["'0'", "--iterations"],
        ),
        (
            vec![
                "sysctl",
                "persist",
                "--dir",
                "/nonexistent/keepalive",
                "--idle",
                "60",
            ],
            vec!["/nonexistent/keepalive"],
        ),
    ] {
        let out = keepalive(&args).output().unwrap();
        testkit::assert_one_line_failure(&out, 2, &needles);
    }

    let (py, port) = python_says(
        "import socket,time\n\
         l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
         c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
         print(l.getsockname()[1], flush=True); time.sleep(60)",
        &[],
    );
    let pid = py.0.id().to_string();
    let out = keepalive(&["set", "--pid", &pid, "--all", "--idle", "44"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = keepalive(&["set", "--pid", &pid, "--all", "--idle", "44", "--dry-run"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.matches("already so").count() == 3 && !said.contains("would"),
        "{said}"
    );
    let _ = port;
}

/// A process killed while `set` works through its sockets: the report never says "N of N
/// changed", whenever the kill lands.
#[test]
fn set_on_a_process_killed_meanwhile_says_it_exited() {
    let (mut py, _ready) = python_says(
        "import socket,time\n\
         l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen(4096)\n\
         keep=[]\n\
         for _ in range(3000):\n\
         \x20   keep.append(socket.create_connection(l.getsockname())); keep.append(l.accept()[0])\n\
         print('ready', flush=True); time.sleep(60)",
        &[],
    );
    let pid = py.0.id();
    let set = keepalive(&["set", "--pid", &pid.to_string(), "--all", "--idle", "77"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let _ = py.0.kill();
    let _ = py.0.wait();
    let out = set.wait_with_output().unwrap();
    let (said, err) = (text(&out.stdout), text(&out.stderr));
    if out.status.success() {
        // The set finished before the kill: every socket changed, honestly.
        assert!(said.contains("6001 of 6001 TCP sockets"), "{said}{err}");
    } else {
        assert!(
            !said.contains(" of ") || said.contains("exited during the change"),
            "{said}{err}"
        );
        assert!(
            err.contains("exited") || err.contains("not found"),
            "{said}{err}"
        );
    }
}

/// A directory on the output's path that is another user's symbolic link is not followed
/// (`shared/evil -> protected`, planted by uid 65534): status --prometheus and sysctl persist
/// refuse in one line, and nothing lands where nobody chose. The caller's own links are
/// followed.
#[test]
fn outputs_refuse_a_directory_link_another_user_planted() {
    let dir = tempfile::tempdir().unwrap();
    let protected = dir.path().join("protected");
    std::fs::create_dir(&protected).unwrap();
    let evil = dir.path().join("evil");
    std::os::unix::fs::symlink(&protected, &evil).unwrap();
    std::os::unix::fs::lchown(&evil, Some(65534), Some(65534)).unwrap();
    let prom = evil.join("k.prom");
    let out = keepalive(&["status", "--prometheus"])
        .arg(&prom)
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 2, &["symbolic link owned by uid 65534"]);
    let out = keepalive(&["sysctl", "persist", "--idle", "60", "--dir"])
        .arg(&evil)
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 2, &["symbolic link owned by uid 65534"]);
    assert_eq!(std::fs::read_dir(&protected).unwrap().count(), 0);

    let mine = dir.path().join("mine");
    std::os::unix::fs::symlink(&protected, &mine).unwrap();
    let out = keepalive(&["status", "--prometheus"])
        .arg(mine.join("k.prom"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(protected.join("k.prom").exists());
}

/// The CLI-wide third pass: a flag that swallowed the next flag, a value with a newline or an
/// escape (one line, escaped, as typed), an option that would be silently ignored, a scenario
/// file that never ends, a persist report that could not be written, bare `keepalive`.
#[test]
fn third_pass_inputs_get_one_line_naming_what_was_given() {
    for (args, code, needles) in [
        (
            vec!["explain", "--idle", "--count", "5"],
            2,
            vec!["--idle needs a value", "--count"],
        ),
        (
            vec!["status", "--port", "1\n2"],
            2,
            vec!["'1\\n2'", "1 to 65535"],
        ),
        (vec!["status", "--state", "x\ny"], 2, vec!["x\\ny"]),
        (
            vec!["explain", "idle=5\x1b[31m"],
            2,
            vec!["idle=5\\x1b[31m"],
        ),
        (vec!["explain", "idle=1.5s"], 2, vec!["whole seconds"]),
        (vec!["bad\x07cmd"], 2, vec!["'bad\\x07cmd'"]),
        (vec!["explain", "--os", "x\x1b"], 2, vec!["'x\\x1b'"]),
        (vec!["status", "--port", "80,"], 2, vec!["stray comma"]),
        (
            vec!["lab", "reboot", "--duration", "5s"],
            2,
            vec!["--no-keepalive"],
        ),
        (
            vec!["lab", "--scenario-file", "/dev/zero"],
            2,
            vec!["/dev/zero", "not a regular file"],
        ),
        // Fifth pass: values out of any range say so.
        (
            vec!["status", "--idle-over", "99999999999999h"],
            2,
            vec!["too large", "5124095576030h"],
        ),
        (
            vec!["set", "--pid", "1", "--fd", "abc", "--idle", "5"],
            2,
            vec!["'abc' is not a file descriptor"],
        ),
        // Fifth pass: a log path the policy text cannot carry.
        (
            vec!["run", "--log", "/tmp/e,idle=9", "idle=5", "--", "true"],
            2,
            vec!["log=/tmp/e,idle=9", "without commas"],
        ),
        (
            vec!["run", "--log", "/tmp/a\nb", "idle=5", "--print-env"],
            2,
            vec!["log=/tmp/a\\nb", "control characters"],
        ),
    ] {
        let out = keepalive(&args).output().unwrap();
        testkit::assert_one_line_failure(&out, code, &needles);
        assert!(!text(&out.stderr).contains('\x1b'), "{args:?}");
    }
    let long = "n".repeat(300);
    let out = keepalive(&["sysctl", "show", "--netns", &long])
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 2, &["is not valid"]);
    // An argument that is not UTF-8 is named, its bytes escaped.
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(BIN)
        .arg("explain")
        .arg(std::ffi::OsStr::from_bytes(b"idle=\xff"))
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 2, &["argument 2 'idle=\\xff' is not UTF-8"]);
    let out = Command::new(BIN)
        .args(["run", "--"])
        .arg(std::ffi::OsStr::from_bytes(b"/nonexistent/\xfe"))
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 127, &["/nonexistent/\\xfe"]);
    // A dry run over the root cgroup (every process on the host, kernel threads too) names
    // no kernel thread: they hold no sockets.
    let root = testkit::cgroup2_mount();
    let out = keepalive(&["set", "--idle", "60", "--dry-run", "--cgroup"])
        .arg(&root)
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(
        out.status.success() && !said.contains("kernel thread") && said.contains("dry run"),
        "{said}{}",
        text(&out.stderr)
    );
    // Another user's namespace file, unprivileged: why, not only "Permission denied".
    let out = testkit::as_nobody(BIN)
        .args(["status", "--netns", "/proc/1/ns/net"])
        .current_dir("/")
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 3, &["/proc/1/ns/net", "ptrace access"]);
    let out = keepalive(&[]).output().unwrap();
    let err = text(&out.stderr);
    assert!(
        out.status.code() == Some(2)
            && err.starts_with("keepalive: a subcommand is needed\n")
            && err.contains("Commands:"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = keepalive(&["sysctl", "persist", "--idle", "60", "--dir"])
        .arg(dir.path())
        .stdout(full)
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 1, &["90-keepalive.conf was written, but the report"]);
}

/// Multipath TCP sockets (Go 1.24's listeners where net.mptcp.enabled is 1): status listed
/// them while get and set saw none. Their keepalive options go to every subflow; they take no
/// TCP_USER_TIMEOUT, which set says instead of failing on it.
#[test]
fn mptcp_sockets_are_tcp_sockets_to_get_and_set() {
    if std::fs::read_to_string("/proc/sys/net/mptcp/enabled").map_or(true, |v| v.trim() != "1") {
        eprintln!("skipped: net.mptcp.enabled is not 1 here");
        return;
    }
    let mut child = Command::new(testkit::python())
        .arg("-c")
        .arg(
            "import socket,sys\n\
             l=socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)\n\
             l.bind(('127.0.0.1',0)); l.listen()\n\
             c=socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); c.connect(l.getsockname())\n\
             a,_=l.accept()\n\
             print('ready', flush=True); sys.stdin.readline()\n\
             print(*[s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) for s in (l,c,a)], flush=True)\n\
             sys.stdin.readline()",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let py = Running(child);
    let mut line = String::new();
    output.read_line(&mut line).unwrap();
    let pid = py.0.id().to_string();

    let out = keepalive(&["get", "--pid", &pid, "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sockets = v.as_array().unwrap();
    assert!(
        sockets.len() == 3 && sockets.iter().all(|s| s["mptcp"] == true),
        "{v}"
    );
    let out = keepalive(&["set", "--pid", &pid, "--all", "--idle", "61"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.contains("3 of 3 TCP sockets"),
        "{said}"
    );
    writeln!(input).unwrap();
    line.clear();
    output.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "61 61 61", "the program's own getsockopt");

    let out = keepalive(&["set", "--pid", &pid, "--all", "--user-timeout", "5s"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        said.contains("an MPTCP socket takes no TCP_USER_TIMEOUT"),
        "{said}"
    );
    // The dry run foretells the same.
    let out = keepalive(&[
        "set",
        "--pid",
        &pid,
        "--all",
        "--user-timeout",
        "5s",
        "--dry-run",
    ])
    .output()
    .unwrap();
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("would be unchanged: an MPTCP socket"),
        "{said}"
    );
    drop(input);
}

/// A process that made sockets, then moved to another network namespace (setns) and made
/// more: `status --pid` lists the namespace it is in now and says how many it holds elsewhere.
#[test]
fn status_pid_tells_of_sockets_in_other_namespaces() {
    let ns = TempNetns::new();
    let (py, _ready) = python_says(
        "import ctypes,os,socket,sys,time\n\
         l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
         c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
         fd=os.open('/run/netns/'+sys.argv[1], os.O_RDONLY)\n\
         assert ctypes.CDLL(None).setns(fd, 0x40000000) == 0\n\
         m=socket.socket(); m.bind(('127.0.0.1',0)); m.listen()\n\
         print('ready', flush=True); time.sleep(60)",
        &[ns.name()],
    );
    let pid = py.0.id().to_string();
    let out = keepalive(&["status", "--pid", &pid, "--listening"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    let unfolded = said.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        out.status.success()
            && said.lines().filter(|l| l.starts_with("listening")).count() == 1
            && unfolded.contains(&format!(
                "pid {pid} also holds 3 TCP sockets in other network"
            )),
        "{said}"
    );
}

/// A process whose name is not UTF-8 (PR_SET_NAME takes any bytes) is an ordinary process:
/// get, set and status read it (a strict read of /proc/PID/status had blamed ptrace, exit 3).
#[test]
fn a_process_named_in_bytes_that_are_not_utf8_is_read_like_any() {
    let (py, _port) = python_says(
        "import ctypes,socket,time\n\
         l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
         ctypes.CDLL(None).prctl(15, b'\\xff\\xfebad', 0, 0, 0)\n\
         print(l.getsockname()[1], flush=True); time.sleep(60)",
        &[],
    );
    let pid = py.0.id().to_string();
    for args in [
        vec!["get", "--pid", &pid],
        vec!["set", "--pid", &pid, "--all", "--idle", "60", "--dry-run"],
        vec!["status", "--exact", "--listening", "--pid", &pid],
    ] {
        let out = keepalive(&args).output().unwrap();
        assert!(
            out.status.success() && text(&out.stdout).contains("TCP socket")
                || text(&out.stdout).contains("listening"),
            "{args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// `sysctl persist` run inside another network namespace (`ip netns exec`, a container)
/// would write that namespace's live values into the host's boot file: refused, nothing
/// written.
#[test]
fn persist_from_inside_another_namespace_is_refused() {
    let ns = TempNetns::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = ns.exec(&[BIN, "sysctl", "persist", "--idle", "100", "--dir", d]);
    testkit::assert_one_line_failure(
        &out,
        2,
        &["initial network namespace", "run it on the host"],
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A link-local IPv6 address names its interface: status shows the scope the kernel reports
/// (the socket's device) as get does, so connections on two links are told apart.
#[test]
fn link_local_addresses_keep_their_interface() {
    let ns = TempNetns::new();
    for args in [
        vec![
            "link", "add", "ka4a", "type", "veth", "peer", "name", "ka4b",
        ],
        vec!["link", "set", "ka4a", "up"],
        vec!["link", "set", "ka4b", "up"],
        vec!["addr", "add", "fe80::a/64", "dev", "ka4a", "nodad"],
    ] {
        let out = Command::new("ip")
            .args(["-n", ns.name()])
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    let code = "import socket,sys,time\n\
                i=socket.if_nametoindex('ka4a')\n\
                l=socket.socket(socket.AF_INET6); l.bind(('fe80::a',0,0,i)); l.listen()\n\
                c=socket.socket(socket.AF_INET6); c.connect(('fe80::a',l.getsockname()[1],0,i))\n\
                a,_=l.accept()\n\
                print(l.getsockname()[1], flush=True); time.sleep(60)";
    let (py, port) = python_in(Some(&ns), code, &[]);
    let pid = py.0.id().to_string();
    let status = keepalive(&["status", "--pid", &pid, "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let get = keepalive(&["get", "--pid", &pid, "--json"])
        .output()
        .unwrap();
    let g: Value = serde_json::from_slice(&get.stdout).unwrap();
    let listener = g
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["listening"] == true)
        .unwrap()["local"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        listener.contains('%') && listener.ends_with(&format!(":{port}")),
        "{g}"
    );
    let rows = v["sockets"].as_array().unwrap();
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| r["local"].as_str().unwrap().contains('%')),
        "{v}"
    );
    assert!(
        rows.iter().any(|r| r["local"] == listener.as_str()),
        "status and get write the address alike: {v} {g}"
    );
}

/// A closed socket in FIN-WAIT-2 (orphaned: its program let go) runs the rest of
/// tcp_fin_timeout on the kernel's keepalive timer; status names the timer for what it does.
#[test]
fn an_orphaned_fin_wait_2_timer_is_named_for_what_it_is() {
    let ns = TempNetns::new();
    let out = ns.exec(&["sh", "-c", "echo 120 > /proc/sys/net/ipv4/tcp_fin_timeout"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let code = "import socket,time\n\
                l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
                c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
                a.close(); time.sleep(0.5)\n\
                print('ready', flush=True); time.sleep(60)";
    let (_py, _ready) = python_in(Some(&ns), code, &[]);
    let out = keepalive(&["status", "--netns", ns.name(), "--state", "fin-wait-2"])
        .output()
        .unwrap();
    let said = text(&out.stdout);
    let row = said
        .lines()
        .find(|l| l.starts_with("fin-wait-2"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        row.contains(" fin-wait-2 ") && !row.contains("keepalive"),
        "{said}"
    );
}

/// Two commands whose names differ only in control characters, which the text format cannot
/// carry, make one series, summed: never the same series twice (node-exporter refuses the
/// whole file then).
#[test]
fn prometheus_series_are_unique_after_escaping() {
    let code = "import socket,time,ctypes,sys\n\
        ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)\n\
        l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()\n\
        c=socket.create_connection(l.getsockname()); a,_=l.accept()\n\
        print(l.getsockname()[1], flush=True); time.sleep(60)";
    let (_a, p1) = python_says(code, &["x\x1by"]);
    let (_b, p2) = python_says(code, &["x\x07y"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.prom");
    let out = keepalive(&["status", "-p", "--port", &p1, "--port", &p2, "--prometheus"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    let unique: std::collections::HashSet<&&str> = series.iter().collect();
    assert_eq!(unique.len(), series.len(), "{text}");
    assert!(
        text.contains("keepalive_tcp_connections{command=\"x\u{fffd}y\",keepalive=\"off\"} 4"),
        "{text}"
    );
}

/// sysctl.d files whose names and values hold escapes and newlines: `sysctl show` escapes
/// them and keeps its columns (a bind mount over /etc/sysctl.d in a mount namespace of the
/// test's own).
#[test]
fn sysctl_show_escapes_what_files_say() {
    testkit::require_root();
    testkit::require_program("unshare", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("50-\x1b[31mx\nz.conf"),
        "net.ipv4.tcp_keepalive_time = 9\x1b[2J\n",
    )
    .unwrap();
    let script = format!(
        "mount --bind {} /etc/sysctl.d && exec {BIN} sysctl show",
        dir.path().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!shown.contains('\x1b'), "{shown}");
    let words = shown.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("50-\\x1b[31mx\\nz.conf:1 says 9\\x1b[2J"),
        "{shown}"
    );
    let row = shown
        .lines()
        .find(|l| l.contains("tcp_keepalive_time"))
        .unwrap();
    assert!(
        row.starts_with("  net.ipv4.tcp_keepalive_time     "),
        "{shown}"
    );
}

/// The longest addresses there are (link-local IPv6, every group four digits, with a scope)
/// still give rows of 100 columns at most in status, get and set's dry run, and no empty
/// lines between them.
#[test]
fn the_longest_addresses_fit_100_columns() {
    let ns = TempNetns::new();
    let long = "fe80:ffff:ffff:ffff:ffff:ffff:ffff:fff3";
    for args in [
        vec![
            "link", "add", "ka5a", "type", "veth", "peer", "name", "ka5b",
        ],
        vec!["link", "set", "ka5a", "up"],
        vec!["link", "set", "ka5b", "up"],
        vec!["addr", "add", &format!("{long}/64"), "dev", "ka5a", "nodad"],
    ] {
        let out = Command::new("ip")
            .args(["-n", ns.name()])
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
    let code = format!(
        "import socket,sys,time\n\
         i=socket.if_nametoindex('ka5a')\n\
         l=socket.socket(socket.AF_INET6); l.bind(('{long}',65023,0,i)); l.listen()\n\
         c=socket.socket(socket.AF_INET6); c.bind(('{long}',65024,0,i)); c.connect(('{long}',65023,0,i))\n\
         a,_=l.accept()\n\
         print('ready', flush=True); time.sleep(60)"
    );
    let (py, _) = python_in(Some(&ns), &code, &[]);
    let pid = py.0.id().to_string();
    for args in [
        vec!["status", "--pid", &pid],
        vec!["status", "--pid", &pid, "--exact"],
        vec!["get", "--pid", &pid],
        vec!["set", "--pid", &pid, "--all", "--idle", "60", "--dry-run"],
    ] {
        let out = keepalive(&args).output().unwrap();
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(shown.contains("fff3"), "{args:?}: {shown}");
        for line in shown.lines() {
            assert!(
                line.chars().count() <= 100,
                "{args:?}: {} columns: {line}",
                line.len()
            );
            assert!(!line.trim().is_empty(), "{args:?}: an empty line\n{shown}");
        }
    }
}
