//! `keepalive run` through the seccomp supervisor, against real programs the shim cannot reach
//! (static Go binaries built here, busybox's static nc) and ones it could (python3, forced
//! through seccomp). Every program's sockets are read from outside, through pidfd_getfd
//! duplicates: what the kernel holds for the program's own sockets.

use keepalive::retrofit::{self, ProcessSocket};
use keepalive::socket::SocketKeepalive;
use keepalive::{Policy, Settings};
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use testkit::{
    PY_CLIENT, PY_TWO_CLIENTS, child_of, connected_socket_of, free_port, require_program, wait_for,
};

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");
const WAIT: Duration = Duration::from_secs(20);
/// The policy of these tests: values nobody else uses.
const POLICY: &str = "idle=37,interval=7,count=4";
const WARNING: &str = "Go sets its own keepalive (15 s idle and interval)";

fn policy() -> Settings {
    Policy::parse(POLICY)
        .unwrap()
        .resolve(&Settings::LINUX_DEFAULT)
        .unwrap()
}

fn keepalive() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("LD_PRELOAD")
        .env_remove("KEEPALIVE_POLICY");
    cmd
}

/// A `keepalive run` and the program it started. Dropping it kills both (the program first,
/// through a pidfd, since it outlives a killed launcher) and waits until both are gone, so a
/// failing test leaves nothing running.
struct Supervised {
    launcher: Child,
    program: Option<(u32, OwnedFd)>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Supervised {
    /// `keepalive run ARGS` with `cmd` adjusted by the caller (stdin held open, stdout piped,
    /// stderr to a file).
    fn start_with(mut cmd: Command, args: &[&str]) -> Supervised {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let child = cmd
            .env_remove("LD_PRELOAD")
            .env_remove("KEEPALIVE_POLICY")
            .arg("run")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn keepalive run");
        let mut s = Supervised {
            launcher: child,
            program: None,
            stderr,
            _dir: dir,
        };
        s.find_program();
        s
    }

    fn start(args: &[&str]) -> Supervised {
        Supervised::start_with(keepalive(), args)
    }

    /// The launcher's child, from /proc, with a pidfd to kill it by later; none if the
    /// launcher is gone first (a program that exits at once).
    fn find_program(&mut self) {
        let launcher = self.launcher.id();
        self.program = wait_for("keepalive run to start its program", WAIT, || {
            if let Ok(Some(_)) = self.launcher.try_wait() {
                return Some(None);
            }
            let pid = child_of(launcher)?;
            let pidfd = pidfd_open(Pid::from_raw(pid as i32)?, PidfdFlags::empty()).ok()?;
            Some(Some((pid, pidfd)))
        });
    }

    fn pid(&self) -> u32 {
        self.pidfd_and_pid().0
    }

    fn pidfd_and_pid(&self) -> (u32, &OwnedFd) {
        let (pid, pidfd) = self
            .program
            .as_ref()
            .unwrap_or_else(|| panic!("keepalive run exited early: {}", self.errors()));
        (*pid, pidfd)
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The program's stdout, one line at a time, through a reader thread.
    fn lines(&mut self) -> Lines {
        Lines::new(self.launcher.stdout.take().unwrap())
    }

    /// Waits for the launcher to end, bounded.
    fn wait(&mut self) -> ExitStatus {
        wait_for("keepalive run to exit", WAIT, || {
            self.launcher.try_wait().unwrap()
        })
    }
}

/// Whether the process behind `pidfd` has exited (a pidfd turns readable then).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let now = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&now)).unwrap_or(0) == 1
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some((_, pidfd)) = &self.program {
            let _ = pidfd_send_signal(pidfd, Signal::KILL);
        }
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        if let Some((pid, pidfd)) = &self.program {
            let start = std::time::Instant::now();
            while !exited(pidfd) && start.elapsed() < WAIT {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Not a panic inside a drop that may run during one: say it.
            if !exited(pidfd) {
                eprintln!("program {pid} still runs after SIGKILL");
            }
        }
    }
}

/// A program's stdout, read by a thread, so that waiting for a line is bounded.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn new(out: ChildStdout) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line, within `WAIT`.
    fn next(&self, what: &str) -> String {
        self.0
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no line from the program ({what}): {e}"))
    }

    /// The first line that satisfies `f`, within `limit`.
    fn until(&self, what: &str, limit: Duration, f: impl Fn(&str) -> bool) -> String {
        let start = std::time::Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match self.0.recv_timeout(left) {
                Ok(line) if f(&line) => return line,
                Ok(_) => {}
                Err(e) => panic!("timed out after {limit:?} waiting for {what}: {e}"),
            }
        }
    }
}

/// The listening socket of `pid` on `port`, read through a duplicate.
fn listener_of(pid: u32, port: u16) -> SocketKeepalive {
    wait_for("the program's listener", WAIT, || {
        retrofit::sockets(pid)
            .ok()?
            .into_iter()
            .find(|s: &ProcessSocket| s.listening && s.local.is_some_and(|a| a.port() == port))
            .map(|s| s.keepalive)
    })
}

/// The program's connection whose local (`local`) or remote port is `port`.
fn connection_of(pid: u32, port: u16, local: bool) -> SocketKeepalive {
    wait_for("the program's connection", WAIT, || {
        connected_socket_of(pid, port, local)
    })
    .0
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// The next connection to `l`, within `WAIT`.
fn accept(l: &TcpListener) -> TcpStream {
    wait_for("a connection from the program", WAIT, || {
        l.accept().ok().map(|(c, _)| c)
    })
}

fn go_build(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/go/{name}.go"));
    testkit::go_build(&src, dir)
}

/// A Go server and a Go client under `keepalive run POLICY [EXTRA]`; returns the state of the
/// server's listener, the connection it accepted, and the client's, and both launchers' stderr.
fn go_pair(
    extra: &[&str],
) -> (
    SocketKeepalive,
    SocketKeepalive,
    SocketKeepalive,
    String,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let (server_bin, client_bin) = (
        go_build("server", dir.path()),
        go_build("client", dir.path()),
    );
    let run_args = |bin: &Path, tail: &[&str]| {
        let mut args = vec![POLICY];
        args.extend_from_slice(extra);
        args.push("--");
        args.push(bin.to_str().unwrap());
        args.extend_from_slice(tail);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let args = run_args(&server_bin, &[]);
    let mut server = Supervised::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let server_out = server.lines();
    let port: u16 = server_out
        .next("the Go server's port")
        .parse()
        .expect("a port");
    let listening = listener_of(server.pid(), port);

    let target = format!("127.0.0.1:{port}");
    let args = run_args(&client_bin, &[&target]);
    let mut client = Supervised::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let client_out = client.lines();
    // Go has made its keepalive calls once Dial and Accept have returned.
    assert!(
        client_out
            .next("the client's dial")
            .starts_with("connected")
    );
    assert!(
        server_out
            .next("the server's accept")
            .starts_with("accepted")
    );
    let accepted = connection_of(server.pid(), port, true);
    let dialed = connection_of(client.pid(), port, false);
    (
        listening,
        accepted,
        dialed,
        server.errors(),
        client.errors(),
    )
}

#[test]
fn go_without_force_keeps_gos_own_15_seconds_and_says_so() {
    let (listening, accepted, dialed, server_err, client_err) = go_pair(&[]);
    assert_eq!(
        (listening.enabled, listening.settings),
        (true, policy()),
        "the policy is on the listener from listen() on"
    );
    for (who, s) in [("accepted", accepted), ("dialed", dialed)] {
        assert!(s.enabled, "{who}");
        assert_eq!(
            (s.settings.idle, s.settings.interval),
            (15, 15),
            "{who}: Go's own setsockopt wins in default mode"
        );
    }
    for err in [server_err, client_err] {
        assert_eq!(err.matches(WARNING).count(), 1, "{err}");
        assert!(err.contains("--force"), "{err}");
    }
}

#[test]
fn go_with_force_keeps_the_policy_on_dialed_and_accepted_sockets() {
    let (listening, accepted, dialed, server_err, client_err) = go_pair(&["--force"]);
    for (who, s) in [
        ("listener", listening),
        ("accepted", accepted),
        ("dialed", dialed),
    ] {
        assert_eq!((s.enabled, s.settings), (true, policy()), "{who}");
    }
    assert!(!server_err.contains(WARNING), "{server_err}");
    assert!(!client_err.contains(WARNING), "{client_err}");
}

#[test]
fn busybox_static_nc_listens_and_accepts_with_the_policy() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "this test needs /bin/busybox (Debian package busybox-static); scripts/test.sh installs it"
    );
    let port = free_port();
    // --via auto: busybox is static, so seccomp it is.
    let p = Supervised::start(&[
        POLICY,
        "--",
        "/bin/busybox",
        "nc",
        "-l",
        "-p",
        &port.to_string(),
    ]);
    let listening = listener_of(p.pid(), port);
    assert_eq!((listening.enabled, listening.settings), (true, policy()));
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let accepted = connection_of(p.pid(), port, true);
    assert_eq!(
        (accepted.enabled, accepted.settings),
        (true, policy()),
        "the accepted connection inherits the listener's options"
    );
    assert_eq!(p.errors(), "", "no warning for a program that is not Go");
}

#[test]
fn a_java_server_through_seccomp_listens_and_accepts_with_the_policy() {
    // `java File.java` compiles in memory: it needs the JDK's compiler, not only a JRE.
    require_program("java", "openjdk-17-jdk-headless");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Server.java");
    // The JVM: dozens of threads, IPv6 sockets (IPv4-mapped), listen() from its main thread.
    std::fs::write(
        &src,
        "public class Server { public static void main(String[] a) throws Exception {\n\
         java.net.ServerSocket l = new java.net.ServerSocket(Integer.parseInt(a[0]));\n\
         java.net.Socket c = l.accept(); Thread.sleep(60000); } }\n",
    )
    .unwrap();
    let port = free_port();
    let p = Supervised::start(&[
        "--via",
        "seccomp",
        POLICY,
        "--",
        "java",
        "-XX:-UsePerfData",
        src.to_str().unwrap(),
        &port.to_string(),
    ]);
    let listening = listener_of(p.pid(), port);
    assert_eq!((listening.enabled, listening.settings), (true, policy()));
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let accepted = connection_of(p.pid(), port, true);
    assert_eq!((accepted.enabled, accepted.settings), (true, policy()));
}

#[test]
fn a_wrapper_script_that_execs_a_static_program_is_reached() {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "this test needs /bin/busybox (Debian package busybox-static); scripts/test.sh installs it"
    );
    // The shape of many service wrappers: a shell script (a dynamic /bin/sh) that ends by
    // exec'ing the real, static server. The shim would load into sh and be gone at the exec.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("start-server");
    std::fs::write(&wrapper, "#!/bin/sh\nexec /bin/busybox nc -l -p \"$1\"\n").unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let port = free_port();
    let p = Supervised::start(&[POLICY, "--", wrapper.to_str().unwrap(), &port.to_string()]);
    let listening = listener_of(p.pid(), port);
    assert_eq!((listening.enabled, listening.settings), (true, policy()));
}

/// `keepalive run --via seccomp [RUN_ARGS] -- python3 PY_CLIENT PORT MODE`, once it is ready.
fn python_client(cmd: Command, run_args: &[&str], l: &TcpListener, mode: &str) -> Supervised {
    require_program("python3", "python3");
    let port = l.local_addr().unwrap().port().to_string();
    let mut args = vec!["--via", "seccomp"];
    args.extend_from_slice(run_args);
    args.extend(["--", "python3", "-c", PY_CLIENT, &port, mode]);
    let mut p = Supervised::start_with(cmd, &args);
    let _ = accept(l);
    assert_eq!(
        p.lines().next("python's connect"),
        "ready",
        "{}",
        p.errors()
    );
    p
}

#[test]
fn python_through_seccomp_gets_the_policy_and_force_holds_against_its_own_calls() {
    let (l, port) = listener();
    let p = python_client(keepalive(), &[POLICY], &l, "on");
    let s = connection_of(p.pid(), port, false);
    assert_eq!((s.enabled, s.settings), (true, policy()));
    drop(p);

    let p = python_client(keepalive(), &[POLICY], &l, "off");
    let s = connection_of(p.pid(), port, false);
    assert_eq!(
        (s.enabled, s.settings.idle),
        (false, 999),
        "default mode: the program's own calls after connect take effect"
    );
    drop(p);

    let p = python_client(keepalive(), &[POLICY, "--force"], &l, "off");
    let s = connection_of(p.pid(), port, false);
    assert_eq!(
        (s.enabled, s.settings),
        (true, policy()),
        "force: its SO_KEEPALIVE=0 and TCP_KEEPIDLE=999 reported success and did nothing"
    );
}

#[test]
fn filters_leave_non_matching_connections_alone() {
    require_program("python3", "python3");
    let script = PY_TWO_CLIENTS;
    let ((la, pa), (lb, pb)) = (listener(), listener());
    let (pa_s, pb_s) = (pa.to_string(), pb.to_string());
    let run = |filter: &[&str]| {
        let mut args = vec!["--via", "seccomp", POLICY];
        args.extend_from_slice(filter);
        args.extend(["--", "python3", "-c", script, &pa_s, &pb_s]);
        let mut p = Supervised::start(&args);
        let (_a, _b) = (accept(&la), accept(&lb));
        assert_eq!(p.lines().next("python's connects"), "ready");
        let a = connection_of(p.pid(), pa, false);
        let b = connection_of(p.pid(), pb, false);
        (a, b)
    };
    let (a, b) = run(&["--ports", &pa_s]);
    assert_eq!((a.enabled, a.settings), (true, policy()), "the listed port");
    assert!(!b.enabled, "another port is left alone");

    let (a, b) = run(&["--dest", "198.18.0.0/15"]);
    assert!(
        !a.enabled && !b.enabled,
        "127.0.0.1 is not in 198.18.0.0/15"
    );

    let (a, b) = run(&["--dest", "127.0.0.0/8", "--ports", &pb_s]);
    assert!(!a.enabled, "the right network, the wrong port");
    assert_eq!((b.enabled, b.settings), (true, policy()));
}

#[test]
fn force_with_a_dest_filter_leaves_accepted_connections_to_the_program() {
    require_program("python3", "python3");
    // A server: `dest` is about the connections a program makes, so its listener and what it
    // accepts are not the policy's, and force must not swallow its own keepalive calls there.
    let server = "import socket, sys\n\
                  l = socket.socket(); l.bind(('127.0.0.1', int(sys.argv[1]))); l.listen(4)\n\
                  c, _ = l.accept()\n\
                  c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)\n\
                  c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 15)\n\
                  print('ready', flush=True)\n\
                  sys.stdin.read()\n";
    let port = free_port();
    let port_s = port.to_string();
    let mut p = Supervised::start(&[
        "--via",
        "seccomp",
        "--force",
        "--dest",
        "127.0.0.0/8",
        POLICY,
        "--",
        "python3",
        "-c",
        server,
        &port_s,
    ]);
    let _client = wait_for("the server to listen", WAIT, || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert_eq!(
        p.lines().next("the server's setsockopt"),
        "ready",
        "{}",
        p.errors()
    );
    let accepted = connection_of(p.pid(), port, true);
    assert_eq!(
        (accepted.enabled, accepted.settings.idle),
        (true, 15),
        "the program's own calls on a socket the filters left alone take effect"
    );
}

#[test]
fn no_inherit_leaves_the_programs_children_alone() {
    require_program("python3", "python3");
    let (l, port) = listener();
    let grandchild = format!(
        "python3 -c \"{}\" {port} on",
        PY_CLIENT.replace('"', "\\\"")
    );
    for (extra, inherited) in [(None, true), (Some("--no-inherit"), false)] {
        let mut args = vec!["--via", "seccomp", POLICY];
        args.extend(extra);
        args.extend(["--", "sh", "-c", &grandchild]);
        let p = Supervised::start(&args);
        let _c = accept(&l);
        let sh = p.pid();
        let py = wait_for("python under sh", WAIT, || child_of(sh));
        let s = connection_of(py, port, false);
        assert_eq!(s.enabled, inherited, "{extra:?}");
    }
}

#[test]
fn an_unprivileged_user_can_run_through_seccomp() {
    testkit::require_root();
    let (l, port) = listener();
    let p = python_client(testkit::as_nobody(BIN), &[POLICY], &l, "on");
    let uid = std::fs::read_to_string(format!("/proc/{}/status", p.pid())).unwrap();
    assert!(
        uid.lines()
            .any(|line| line.starts_with("Uid:") && line.contains("65534")),
        "{uid}"
    );
    let s = connection_of(p.pid(), port, false);
    assert_eq!((s.enabled, s.settings), (true, policy()));
}

const CONNECT_LOOP: &str = "import socket, time, errno\n\
    l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()\n\
    while True:\n\
    \x20   s = socket.socket()\n\
    \x20   try:\n\
    \x20       s.connect(l.getsockname()); r = 'ok'\n\
    \x20   except OSError as e:\n\
    \x20       r = errno.errorcode.get(e.errno, str(e.errno))\n\
    \x20   s.close()\n\
    \x20   print(r, flush=True)\n\
    \x20   time.sleep(0.05)\n";

#[test]
fn after_the_launcher_is_killed_connect_fails_with_enosys_and_never_hangs() {
    require_program("python3", "python3");
    let mut p = Supervised::start(&["--via", "seccomp", "--", "python3", "-c", CONNECT_LOOP]);
    let lines = p.lines();
    assert_eq!(lines.next("a supervised connect"), "ok");
    p.launcher.kill().unwrap();
    p.launcher.wait().unwrap();
    // The listener is closed: the kernel answers every trapped call itself.
    lines.until(
        "a connect failing with ENOSYS",
        Duration::from_secs(5),
        |l| l == "ENOSYS",
    );
    let (pid, pidfd) = p.pidfd_and_pid();
    assert!(!exited(pidfd), "the program keeps running");
    assert_eq!(lines.next("the next connect"), "ENOSYS");
    let ours = pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty()).unwrap();
    drop(p);
    assert!(exited(&ours), "nothing is left running");
}

#[test]
fn exit_status_and_signals_pass_through() {
    let mut p = Supervised::start(&["--via", "seccomp", "--", "sh", "-c", "exit 7"]);
    assert_eq!(p.wait().code(), Some(7), "{}", p.errors());

    // A program killed by a signal: keepalive dies by the same one.
    let mut p = Supervised::start(&["--via", "seccomp", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(p.wait().signal(), Some(15), "{}", p.errors());

    // SIGTERM, and SIGINT sent by a process, go on to the program, which dies of them.
    for signal in [Signal::TERM, Signal::INT] {
        let mut p = Supervised::start(&["--via", "seccomp", "--", "sleep", "30"]);
        // Once sleep runs (exec done), a signal sent to keepalive has to reach it.
        let pid = p.pid();
        wait_for("sleep to be exec'd", WAIT, || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .filter(|c| c.trim() == "sleep")
        });
        let launcher = Pid::from_raw(p.launcher.id() as i32).unwrap();
        rustix::process::kill_process(launcher, signal).unwrap();
        let status = p.wait();
        assert_eq!(status.signal(), Some(signal.as_raw()), "{signal:?}");
        assert!(
            exited(p.pidfd_and_pid().1),
            "{signal:?}: the program ended too"
        );
    }
}

/// A python3 program that says "ready", then counts the SIGINTs it is sent, each taken as it
/// arrives (blocked and waited for, so two deliveries are two), until a second passes without
/// one; prints the count and exits with it.
const PY_COUNT_SIGINT: &str = "import signal, sys\n\
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])\n\
    print('ready', flush=True)\n\
    n = 0\n\
    while signal.sigtimedwait([signal.SIGINT], 60 if n == 0 else 1) is not None: n += 1\n\
    print('sigints', n, flush=True)\n\
    sys.exit(n)\n";

#[test]
fn a_signal_to_the_launchers_process_group_reaches_the_program_once() {
    // A shell's `kill -INT %1`, or timeout(1), signals the whole process group keepalive was
    // started in. The program has a group of its own, so it hears of it once: from keepalive.
    let py = testkit::python();
    let mut cmd = keepalive();
    // SAFETY: setsid in the child before exec; no memory is touched.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            rustix::process::setsid()?;
            Ok(())
        });
    }
    let mut p = Supervised::start_with(
        cmd,
        &[
            "--via",
            "seccomp",
            "--",
            py.to_str().unwrap(),
            "-c",
            PY_COUNT_SIGINT,
        ],
    );
    let lines = p.lines();
    assert_eq!(
        lines.next("the program to start"),
        "ready",
        "{}",
        p.errors()
    );
    let group = Pid::from_raw(p.launcher.id() as i32).unwrap();
    rustix::process::kill_process_group(group, Signal::INT).unwrap();
    assert_eq!(lines.next("the program's count"), "sigints 1");
    assert_eq!(p.wait().code(), Some(1));
}

#[test]
fn ctrl_c_on_a_terminal_reaches_the_program_once() {
    // keepalive in the foreground of a terminal of its own (python's pty module: a new session
    // whose controlling terminal is the pty), Ctrl-C typed on it.
    let py = testkit::python();
    let driver = format!(
        "import os, pty, select, sys, time\n\
         pid, fd = pty.fork()\n\
         if pid == 0:\n\
         \x20   os.execv({bin:?}, [{bin:?}, 'run', '--via', 'seccomp', '--', {py:?}, '-c', sys.argv[1]])\n\
         out = b''\n\
         def until(word, limit):\n\
         \x20   global out\n\
         \x20   end = time.time() + limit\n\
         \x20   while word not in out and time.time() < end:\n\
         \x20       if select.select([fd], [], [], 0.1)[0]:\n\
         \x20           try: out += os.read(fd, 4096)\n\
         \x20           except OSError: break\n\
         until(b'ready', 20)\n\
         os.write(fd, b'\\x03')\n\
         until(b'sigints ', 20)\n\
         until(b'sigints 1', 3)\n\
         _, status = os.waitpid(pid, 0)\n\
         print(out.decode(errors='replace').replace('\\r', ''))\n\
         print('status', os.waitstatus_to_exitcode(status))\n",
        bin = BIN,
        py = py.to_str().unwrap(),
    );
    let out = testkit::bounded_output(
        Command::new(&py).args(["-c", &driver, PY_COUNT_SIGINT]),
        WAIT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sigints 1"),
        "one SIGINT, from the terminal: {text}"
    );
    assert!(
        text.contains("status 1"),
        "keepalive exits as the program did: {text}"
    );
}

#[test]
fn print_env_is_the_shims_alone() {
    let out = keepalive()
        .args(["run", "--print-env", "--via", "seccomp"])
        .output()
        .unwrap();
    testkit::assert_one_line_failure(&out, 2, &["--print-env", "seccomp"]);
}

/// A static C program (glibc, no LD_PRELOAD possible) that connects by TCP Fast Open: sendto
/// and sendmsg with MSG_FASTOPEN and no connect() are trapped as connect is, matched against
/// `dest=`, and get the policy; a send to a peer outside the filter does not.
#[test]
fn fast_open_sends_connect_through_seccomp_too() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/fdreuse.c");
    let exe = testkit::compile_c(&src, dir.path(), &["-pthread", "-static"]);
    let out = keepalive()
        .args(["run", "idle=30,dest=127.0.0.1/32", "--"])
        .arg(&exe)
        .arg("fastopen")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("FAIL") && text.contains("ok fastopen-sendmsg"),
        "{out:?}"
    );
}

/// A script under seccomp that starts a setuid program: run by root (CAP_SYS_ADMIN, so no
/// no_new_privs) the program gains its owner's identity as without keepalive; run by a user
/// without CAP_SYS_ADMIN, who needs no_new_privs, keepalive warns that it will not.
#[test]
fn setuid_programs_a_script_starts_keep_their_privileges_where_they_can() {
    testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let id = dir.path().join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::os::unix::fs::chown(&id, Some(65534), None).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("wrapper.sh");
    std::fs::write(&script, format!("#!/bin/sh\n{} -u\n", id.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = keepalive()
        .args(["run", POLICY, "--"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n", "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let out = testkit::as_nobody(BIN)
        .args(["run", POLICY, "--"])
        .arg(&script)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        err.contains("no_new_privs") && err.contains("--via shim"),
        "{err}"
    );
}

/// Without a terminal (a service, a pipeline), stopping and continuing the program is its own
/// business: keepalive stays awake and answers its calls (it used to stop itself with the
/// program and leave its next connect waiting for ever).
#[test]
fn a_program_stopped_and_continued_without_a_terminal_keeps_running() {
    require_program("python3", "python3");
    let mut p = Supervised::start(&["--via", "seccomp", "--", "python3", "-c", CONNECT_LOOP]);
    let lines = p.lines();
    assert_eq!(lines.next("a supervised connect"), "ok");
    let (pid, _) = p.pidfd_and_pid();
    let program = Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(program, Signal::STOP).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    rustix::process::kill_process(program, Signal::CONT).unwrap();
    // Lines printed before the stop may still be buffered: two more connects prove it runs.
    let start = std::time::Instant::now();
    let mut after = 0;
    while after < 2 {
        let line = lines.until("a connect after the stop", Duration::from_secs(5), |_| true);
        assert_eq!(line, "ok");
        if start.elapsed() > Duration::from_millis(100) {
            after += 1;
        }
    }
    let state = std::fs::read_to_string(format!("/proc/{}/stat", p.launcher.id())).unwrap();
    let state = state.rsplit_once(") ").unwrap().1.chars().next().unwrap();
    assert_ne!(state, 'T', "keepalive itself is not stopped");
}
