//! `keepalive run` against real programs nobody here wrote: netcat-openbsd, socat, curl,
//! python3, java, node. Each program's socket is read from outside the program, through a
//! pidfd_getfd duplicate, to show the kernel holds exactly the policy.

use keepalive::socket::SocketKeepalive;
use keepalive::{Policy, Settings};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::{
    PY_CLIENT, PY_TWO_CLIENTS, Running, child_of, connected_socket_of, free_port, require_program,
    wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");
const WAIT: Duration = Duration::from_secs(20);

fn keepalive() -> Command {
    testkit::shim_next_to(Path::new(BIN));
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("LD_PRELOAD")
        .env_remove("KEEPALIVE_POLICY");
    cmd
}

/// `keepalive run ARGS -- PROGRAM...`, stdin held open, output discarded.
fn start(args: &[&str]) -> Running {
    let child = keepalive()
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn keepalive run");
    Running(child)
}

fn settings(policy: &str) -> Settings {
    Policy::parse(policy)
        .unwrap()
        .resolve(&Settings::LINUX_DEFAULT)
        .unwrap()
}

/// The program's connection, seen from outside: `local` means `port` is its local port.
fn socket_of(pid: u32, port: u16, local: bool) -> (SocketKeepalive, bool) {
    wait_for("the program's connection", WAIT, || {
        connected_socket_of(pid, port, local)
    })
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn seed_002_nc_listens_with_exactly_the_policy() {
    require_program("nc", "netcat-openbsd");
    let port = free_port();
    let p = start(&[
        "--idle",
        "30",
        "--interval",
        "10",
        "--count",
        "5",
        "--",
        "nc",
        "-l",
        "127.0.0.1",
        &port.to_string(),
    ]);
    let _client = wait_for("nc to listen", WAIT, || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let (state, _) = socket_of(p.pid(), port, true);
    assert!(
        state.enabled,
        "the accepted socket inherits SO_KEEPALIVE from nc's listener"
    );
    assert_eq!(
        state.settings,
        Settings {
            idle: 30,
            interval: 10,
            count: 5,
            user_timeout_ms: 0
        }
    );

    // iproute2's ss agrees: a keepalive timer armed for about 30 s, no probe out.
    let text = testkit::ss_established(&format!("sport = :{port}"));
    assert!(
        text.contains("timer:(keepalive,2") || text.contains("timer:(keepalive,30"),
        "{text}"
    );
}

#[test]
fn socat_client_gets_the_policy() {
    require_program("socat", "socat");
    let (l, port) = listener();
    let p = start(&[
        "idle=40s,interval=4s,count=2,user-timeout=9s",
        "--",
        "socat",
        "-",
        &format!("TCP:127.0.0.1:{port}"),
    ]);
    let _conn = l.accept().unwrap();
    let (state, _) = socket_of(p.pid(), port, false);
    assert_eq!(
        (state.enabled, state.settings),
        (true, settings("idle=40,interval=4,count=2,user-timeout=9s"))
    );
}

/// A server that accepts and never answers, so an HTTP client stays connected.
fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let (l, port) = listener();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        l.set_nonblocking(false).unwrap();
        for conn in l.incoming().take(1).flatten() {
            held.push(conn);
            std::thread::sleep(Duration::from_secs(8));
        }
    });
    (port, handle)
}

#[test]
fn curl_default_mode_lets_curl_win_and_force_mode_keeps_the_policy() {
    require_program("curl", "curl");
    // `keepalive run RUN_ARGS -- curl CURL_ARGS URL` against a server that never answers; the
    // state of curl's connection, read from outside.
    let curl = |run_args: &[&str], curl_args: &[&str]| {
        let (port, _server) = silent_server();
        let url = format!("http://127.0.0.1:{port}/");
        let mut args = run_args.to_vec();
        args.extend(["--", "curl", "-s", "-m", "8"]);
        args.extend_from_slice(curl_args);
        args.push(&url);
        let p = start(&args);
        socket_of(p.pid(), port, false).0
    };
    let policy = ["--idle", "33", "--interval", "7", "--count", "3"];
    // curl turns keepalive on itself with 60 s idle and interval (CURLOPT_TCP_KEEPIDLE).
    let s = curl(&policy, &[]).settings;
    assert_eq!((s.idle, s.interval, s.count), (60, 60, 3));
    let forced = [&["--force"][..], &policy].concat();
    let k = curl(&forced, &[]);
    assert_eq!(
        (k.enabled, k.settings.idle, k.settings.interval),
        (true, 33, 7)
    );
    // --no-keepalive makes curl leave the options alone: the policy stays in either mode.
    let k = curl(&["--idle", "34"], &["--no-keepalive"]);
    assert_eq!((k.enabled, k.settings.idle), (true, 34));
}

#[test]
fn python_turning_keepalive_off_wins_by_default_and_loses_under_force() {
    // The interpreter itself: `keepalive run` would start a wrapper script (pyenv's shims)
    // under the seccomp supervisor, as a parent with another pid.
    let py = testkit::python();
    let py = py.to_str().unwrap();
    let (l, port) = listener();
    let port_arg = port.to_string();
    // `keepalive run [--force] --idle 21 -- python3 PY_CLIENT PORT off`, once it is connected.
    let python = |force: bool| {
        let mut args = if force { vec!["--force"] } else { vec![] };
        args.extend(["--idle", "21", "--", py, "-c", PY_CLIENT, &port_arg, "off"]);
        let p = start(&args);
        let _ = l.accept().unwrap();
        p
    };
    let p = python(false);
    let state = wait_for("python's setsockopt", WAIT, || {
        Some(socket_of(p.pid(), port, false).0).filter(|s| !s.enabled)
    });
    assert_eq!(
        state.settings.idle, 999,
        "default mode: the program's own call takes effect"
    );
    drop(p);

    let p = python(true);
    // Give python time to make its calls, then check they changed nothing.
    std::thread::sleep(Duration::from_millis(500));
    let (state, _) = socket_of(p.pid(), port, false);
    assert_eq!(
        (state.enabled, state.settings.idle),
        (true, 21),
        "force mode keeps the policy"
    );
}

#[test]
fn java_uses_ipv6_sockets_and_gets_the_policy() {
    // `java File.java` compiles in memory: it needs the JDK's compiler, not only a JRE.
    require_program("java", "openjdk-17-jdk-headless");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Client.java");
    std::fs::write(
        &src,
        "public class Client { public static void main(String[] a) throws Exception {\n\
         java.net.Socket s = new java.net.Socket(\"127.0.0.1\", Integer.parseInt(a[0]));\n\
         Thread.sleep(60000); } }\n",
    )
    .unwrap();
    let (l, port) = listener();
    let p = start(&[
        "--idle",
        "17",
        "--interval",
        "3",
        "--count",
        "4",
        "--",
        "java",
        src.to_str().unwrap(),
        &port.to_string(),
    ]);
    let _c = l.accept().unwrap();
    let (state, ipv6) = socket_of(p.pid(), port, false);
    assert!(
        ipv6,
        "the JVM's sockets are AF_INET6 (IPv4-mapped), which the shim must handle"
    );
    assert_eq!(
        (state.enabled, state.settings),
        (true, settings("idle=17,interval=3,count=4"))
    );
}

#[test]
fn node_gets_the_policy() {
    require_program("node", "nodejs");
    let (l, port) = listener();
    let script =
        format!("require('net').connect({port}, '127.0.0.1'); setTimeout(() => {{}}, 60000);");
    let p = start(&["--idle", "19", "--count", "6", "--", "node", "-e", &script]);
    let _c = l.accept().unwrap();
    let (state, _) = socket_of(p.pid(), port, false);
    assert_eq!(
        (state.enabled, state.settings.idle, state.settings.count),
        (true, 19, 6)
    );
}

#[test]
fn filters_choose_the_connections() {
    // The interpreter itself: `keepalive run` would start a wrapper script (pyenv's shims)
    // under the seccomp supervisor, as a parent with another pid.
    let py = testkit::python();
    let py = py.to_str().unwrap();
    let script = PY_TWO_CLIENTS;
    let ((la, pa), (lb, pb)) = (listener(), listener());
    let p = start(&[
        "--idle",
        "23",
        "--ports",
        &pa.to_string(),
        "--",
        py,
        "-c",
        script,
        &pa.to_string(),
        &pb.to_string(),
    ]);
    let (_a, _b) = (la.accept().unwrap(), lb.accept().unwrap());
    // The shim puts a filtered policy on once the kernel has taken the connect (accept can
    // return a moment before the client's connect() does): waited for, bounded.
    testkit::wait_for(
        "the policy on the listed port",
        Duration::from_secs(5),
        || socket_of(p.pid(), pa, false).0.enabled.then_some(()),
    );
    assert!(
        !socket_of(p.pid(), pb, false).0.enabled,
        "the other connection is left alone"
    );
    drop(p);

    let p = start(&[
        "--idle",
        "23",
        "--dest",
        "198.18.0.0/15",
        "--",
        py,
        "-c",
        script,
        &pa.to_string(),
        &pb.to_string(),
    ]);
    let (_a, _b) = (la.accept().unwrap(), lb.accept().unwrap());
    assert!(
        !socket_of(p.pid(), pa, false).0.enabled,
        "127.0.0.1 is not in 198.18.0.0/15"
    );
    drop(p);

    let p = start(&[
        "--idle",
        "23",
        "--dest",
        "127.0.0.0/8",
        "--ports",
        &pb.to_string(),
        "--",
        py,
        "-c",
        script,
        &pa.to_string(),
        &pb.to_string(),
    ]);
    let (_a, _b) = (la.accept().unwrap(), lb.accept().unwrap());
    testkit::wait_for("the policy on pb", Duration::from_secs(5), || {
        (socket_of(p.pid(), pb, false).0.settings.idle == 23).then_some(())
    });
    assert!(!socket_of(p.pid(), pa, false).0.enabled);
}

fn output(args: &[&str]) -> std::process::Output {
    keepalive().arg("run").args(args).output().unwrap()
}

#[test]
fn pid_exit_code_and_signals_pass_through() {
    let child = keepalive()
        .args(["run", "--", "sh", "-c", "echo $$; exit 7"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pid.to_string(),
        "exec keeps the pid"
    );
    let out = output(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(15)
    );
}

#[test]
fn ld_preload_is_appended_and_no_inherit_keeps_children_clean() {
    require_program("python3", "python3");
    let out = keepalive()
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo \"$LD_PRELOAD|$KEEPALIVE_POLICY\"",
        ])
        .env("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libc.so.6")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("/usr/lib/x86_64-linux-gnu/libc.so.6:/"),
        "{text}"
    );
    assert!(text.contains("libkeepalive_inject.so|"), "{text}");

    // A grandchild: with inheritance it gets the policy, with --no-inherit it does not.
    let (l, port) = listener();
    let grandchild = format!(
        "python3 -c \"{}\" {port} on",
        PY_CLIENT.replace('"', "\\\"")
    );
    let p = start(&["--idle", "25", "--", "sh", "-c", &grandchild]);
    let _c = l.accept().unwrap();
    let py = wait_for("python under sh", WAIT, || child_of(p.pid()));
    assert!(socket_of(py, port, false).0.enabled);
    drop(p);
    let p = start(&[
        "--idle",
        "25",
        "--no-inherit",
        "--",
        "sh",
        "-c",
        &grandchild,
    ]);
    let _c = l.accept().unwrap();
    let py = wait_for("python under sh", WAIT, || child_of(p.pid()));
    assert!(
        !socket_of(py, port, false).0.enabled,
        "--no-inherit: the shim is not in the grandchild"
    );
}

#[test]
fn unreachable_programs_are_refused_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("hello.c");
    std::fs::write(&c, "int main(void) { return 0; }\n").unwrap();
    let st = testkit::compile_c(&c, dir.path(), &["-static"]);
    let out = output(&["--via", "shim", "--", st.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("statically linked")
            && err.contains("keepalive set --pid")
            && err.contains("use --via seccomp"),
        "{err}"
    );
    // By default (--via auto) seccomp reaches it.
    let out = output(&["--", st.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    // A binary with Go's build-info section is taken for Go.
    let go = dir.path().join("gofake.c");
    std::fs::write(&go, "__attribute__((section(\".go.buildinfo\"), used)) static const char b[] = \"go\";\nint main(void) { return 0; }\n").unwrap();
    let go = testkit::compile_c(&go, dir.path(), &[]);
    let out = output(&["--via", "shim", "--", go.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Go program"),
        "{out:?}"
    );

    // setuid for another user: the loader would ignore LD_PRELOAD.
    testkit::require_root();
    let suid = dir.path().join("true-suid");
    std::fs::copy("/bin/true", &suid).unwrap();
    std::os::unix::fs::chown(&suid, Some(65534), None).unwrap();
    std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    for via in ["auto", "shim", "seccomp"] {
        let out = output(&["--via", via, "--", suid.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--via {via}: {err}");
        assert!(
            err.contains("setuid") && err.contains("no_new_privs"),
            "--via {via}: {err}"
        );
    }

    // Scripts are judged by their interpreter, which is fine here.
    let out = output(&["--", "sh", "-c", "exit 0"]);
    assert!(out.status.success());
}

#[test]
fn bad_input_is_one_line_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    for (args, needle) in [
        (vec!["--idle", "0"], "idle=0"),
        (vec!["--ports", "http"], "ports=http"),
        (vec!["--dest", "10.0.0.0/40"], "dest=10.0.0.0/40"),
        (vec!["--log", "relative"], "absolute"),
        (
            vec!["--policy", "idle=5,bogus=1"],
            "unknown policy key 'bogus'",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--", "sh", "-c", &touch]);
        let out = output(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!marker.exists(), "{args:?} ran the program");
    }
    // A program that is not there is not bad usage: env(1)'s 127 (tests/run_exit.rs).
    let out = output(&["--", "no-such-program-here"]);
    assert_eq!(out.status.code(), Some(127));
}

#[test]
fn print_env_gives_the_settings_for_other_launchers() {
    let out = output(&["--print-env", "--idle", "30", "--force"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("LD_PRELOAD=/") && text.contains("KEEPALIVE_POLICY=idle=30s,mode=force"),
        "{text}"
    );
}

/// libkeepalive's and libdontdie's variables drive the shim when it is preloaded directly.
#[test]
fn compatibility_variables_without_the_launcher() {
    require_program("python3", "python3");
    let shim = testkit::shim_next_to(Path::new(BIN));
    let (l, port) = listener();
    let spawn = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(testkit::python());
        cmd.args(["-c", PY_CLIENT, &port.to_string(), "on"])
            .env("LD_PRELOAD", &shim)
            .env_remove("KEEPALIVE_POLICY");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        Running(cmd.stdout(Stdio::null()).spawn().unwrap())
    };
    let p = spawn(&[("KEEPIDLE", "45"), ("KEEPINTVL", "5"), ("KEEPCNT", "2")]);
    let _c = l.accept().unwrap();
    assert_eq!(
        socket_of(p.pid(), port, false).0.settings,
        settings("idle=45,interval=5,count=2")
    );
    drop(p);
    let p = spawn(&[("DD_TCP_KEEPALIVE_TIME", "46")]);
    let _c = l.accept().unwrap();
    assert_eq!(socket_of(p.pid(), port, false).0.settings.idle, 46);
    drop(p);
    let p = spawn(&[]);
    let _c = l.accept().unwrap();
    assert!(
        socket_of(p.pid(), port, false).0.enabled,
        "no variables: keepalive on, as libkeepalive"
    );
    drop(p);
    let p = spawn(&[("KEEPALIVE", "off"), ("KEEPIDLE", "45")]);
    let _c = l.accept().unwrap();
    assert!(!socket_of(p.pid(), port, false).0.enabled, "KEEPALIVE=off");
}

/// A bad configuration: one warning on stderr at load, then the program runs untouched.
#[test]
fn invalid_configuration_warns_once_and_changes_nothing() {
    require_program("python3", "python3");
    let shim = testkit::shim_next_to(Path::new(BIN));
    let (l, port) = listener();
    // The interpreter itself, not a wrapper script (pyenv's shims would each warn once too).
    let child = Command::new(testkit::python())
        .args(["-c", PY_CLIENT, &port.to_string(), "on"])
        .env("LD_PRELOAD", &shim)
        .env("KEEPALIVE_POLICY", "idle=0,count=3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Running(child);
    let _c = l.accept().unwrap();
    assert!(
        !socket_of(p.pid(), port, false).0.enabled,
        "no half-applied policy"
    );
    let mut stderr = p.0.stderr.take().unwrap();
    drop(p);
    let mut text = String::new();
    stderr.read_to_string(&mut text).unwrap();
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(
        text.starts_with("keepalive-inject: KEEPALIVE_POLICY: idle=0: out of range"),
        "{text}"
    );
}

#[test]
fn an_installed_layout_finds_its_shim() {
    // scripts/install.sh puts the binary in PREFIX/bin and the shim in PREFIX/lib/keepalive.
    let prefix = tempfile::tempdir().unwrap();
    let (bin, lib) = (
        prefix.path().join("bin"),
        prefix.path().join("lib/keepalive"),
    );
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::copy(BIN, bin.join("keepalive")).unwrap();
    std::fs::copy(
        testkit::shim_next_to(Path::new(BIN)),
        lib.join("libkeepalive_inject.so"),
    )
    .unwrap();
    let out = Command::new(bin.join("keepalive"))
        .args(["run", "--print-env"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = lib.canonicalize().unwrap().join("libkeepalive_inject.so");
    assert!(
        text.contains(&format!("LD_PRELOAD={}", expected.display())),
        "{text}"
    );

    std::fs::remove_file(lib.join("libkeepalive_inject.so")).unwrap();
    let out = Command::new(bin.join("keepalive"))
        .args(["run", "--", "true"])
        .env_remove("KEEPALIVE_SHIM")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not installed") && err.contains("scripts/install.sh"),
        "{err}"
    );
}
