//! The shim under stress and in hostile hosts: many threads, fork and exec chains, programs
//! that reuse fds 0-2 as sockets, errno, and random configurations. The C programs are in
//! tests/c/ and are compiled by the tests.

use proptest::prelude::*;
use std::io::Read;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");

fn c_program(name: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    testkit::compile_c(&src, dir, &["-pthread"])
}

fn shim() -> PathBuf {
    testkit::shim_next_to(Path::new(BIN))
}

fn under_shim(program: &Path, policy: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LD_PRELOAD", shim())
        .env("KEEPALIVE_POLICY", policy)
        .env_remove("RUST_BACKTRACE");
    cmd
}

fn show(out: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn eight_threads_creating_and_closing_100k_sockets_each() {
    let dir = tempfile::tempdir().unwrap();
    let stress = c_program("stress", dir.path());
    let out = under_shim(&stress, "idle=30,interval=10,count=5")
        .args(["8", "100000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sockets=800000") && text.contains("bad_keepalive=0"),
        "{text}"
    );
    // Without the shim the same program must fail its keepalive check: the test can fail.
    let out = Command::new(&stress).args(["1", "12"]).output().unwrap();
    assert!(!out.status.success(), "{}", show(&out));
}

#[test]
fn fork_and_exec_chains_keep_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let chain = c_program("forkexec", dir.path());
    let out = under_shim(&chain, "idle=30").arg("6").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn programs_that_reuse_fds_0_to_2_as_sockets_get_no_stray_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let prog = c_program("closefds", dir.path());
    let log = dir.path().join("shim.log");
    // Force mode, so the program's 100 attempts to switch keepalive off each get logged.
    let policies = [
        format!("idle=30,mode=force,log={}", log.display()),
        "idle=30,mode=force,log=syslog".into(),
    ];
    for policy in policies {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut child = under_shim(&prog, &policy)
            .arg(port.to_string())
            .spawn()
            .unwrap();
        let (mut conn, _) = l.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{policy}");
        assert!(
            got.is_empty(),
            "{policy}: the program's socket received {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("loaded: KEEPALIVE_POLICY=idle=30s") && text.contains("fd 0: keepalive on"),
        "{text}"
    );
}

#[test]
fn a_socket_on_fd_2_at_load_never_receives_the_warning() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let stderr_socket = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut peer, _) = l.accept().unwrap();
    let out = under_shim(Path::new("/bin/true"), "idle=0")
        .stderr(Stdio::from(OwnedFd::from(stderr_socket)))
        .status()
        .unwrap();
    assert!(out.success());
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert!(
        got.is_empty(),
        "the warning went into the socket: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn errno_is_what_the_real_call_left() {
    let dir = tempfile::tempdir().unwrap();
    let prog = c_program("errno", dir.path());
    let closed = testkit::free_port();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = l.local_addr().unwrap().port();
    let policy = format!("idle=30,ports={closed},{open}");
    let out = under_shim(&prog, &policy)
        .args([closed.to_string(), open.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn hooks_never_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let prog = c_program("nomalloc", dir.path());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || for _ in l.incoming() {});
    let log = dir.path().join("shim.log");
    // Every hook path: socket(), filtered connect() and bind(), force-mode setsockopt, accept,
    // and logging to a file.
    for policy in [
        "idle=30,interval=10,count=5,user-timeout=auto".to_owned(),
        format!("idle=30,mode=force,ports=1-65535,log={}", log.display()),
    ] {
        let out = under_shim(&prog, &policy).arg(&port).output().unwrap();
        assert!(out.status.success(), "{policy}: {}", show(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "allocations=0");
    }
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("kept the policy")
    );
    // The counter works: the same program counts what a plain malloc costs.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{} {port}", prog.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

/// Any configuration text, valid or not, leaves a program running normally: a valid one
/// applies, an invalid one warns on stderr and changes nothing.
fn run_true_under(policy: &str) -> Output {
    under_shim(Path::new("/bin/sh"), policy)
        .args(["-c", "exit 0"])
        .output()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn random_configurations_never_hurt_the_host(text in "[a-z=,0-9./:\\- ]{0,60}") {
        prop_assume!(!text.contains('\0'));
        let out = run_true_under(&text);
        prop_assert!(out.status.success(), "{text:?}: {}", show(&out));
        let valid = keepalive::policy::injection::Injection::parse(&text)
            .and_then(|i| i.policy.resolve(&keepalive::Settings::LINUX_DEFAULT));
        let warned = !out.stderr.is_empty();
        prop_assert_eq!(warned, valid.is_err(), "{:?}: {}", text, show(&out));
    }
}

/// Descriptor numbers the program frees behind the shim's back (raw close, close_range) and
/// then reuses for a file, a raw TCP socket or a UDP socket, and duplicates of a managed
/// socket (dup, dup2, dup3, fcntl F_DUPFD): the shim acts only on the socket it marked, and
/// guards every number that refers to it.
#[test]
fn marks_follow_the_descriptor_not_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let exe = c_program("fdreuse", &dir.path().join(""));
    for (mode, policy) in [
        ("force", "idle=30,mode=force"),
        ("threads", "idle=30,mode=force"),
        ("racing", "idle=30,mode=force"),
        ("leader", "idle=30,mode=force"),
        ("bind", "ports=1-65535"),
        ("seccomp", "idle=30,mode=force"),
        ("udp", "idle=30,dest=127.0.0.0/8"),
        ("dupforce", "idle=30,dest=127.0.0.1/32,mode=force"),
        ("dupchoice", "idle=30,dest=127.0.0.1/32"),
        ("fastopen", "idle=30,dest=127.0.0.1/32"),
        ("badsend", "idle=30,dest=127.0.0.1/32"),
        ("refused", "idle=30,dest=127.0.0.2/32"),
    ] {
        let out = under_shim(&exe, policy).arg(mode).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("FAIL") && text.contains("ok "),
            "{mode}: {}",
            show(&out)
        );
    }
}

/// The shim's environment as bytes: a value that is not UTF-8 is a bad value (one warning,
/// sockets untouched), never an absent one; libkeepalive's and libdontdie's switches mean what
/// they meant there; a warning shows a bad value's control characters escaped.
#[test]
fn environment_values_are_read_as_their_libraries_read_them() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = c_program("sockopts", &dir.path().join(""));
    let run = |vars: &[(&str, &[u8])]| {
        let mut cmd = Command::new(&exe);
        cmd.env_clear().env("LD_PRELOAD", shim());
        for (k, v) in vars {
            cmd.env(k, OsStr::from_bytes(v));
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Untouched: SO_KEEPALIVE 0, the namespace's idle.
    let untouched = {
        let out = Command::new(&exe).env_clear().output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    for (vars, var) in [
        (
            vec![("KEEPALIVE_POLICY", &b"idle=3\xff0"[..])],
            "KEEPALIVE_POLICY",
        ),
        (
            vec![("KEEPALIVE_POLICY", &b"\xfe"[..]), ("KEEPIDLE", b"77")],
            "KEEPALIVE_POLICY",
        ),
        (vec![("KEEPIDLE", &b"7\x807"[..])], "KEEPIDLE"),
    ] {
        let (got, err) = run(&vars);
        assert_eq!(got, untouched, "{vars:?}: the sockets must be left alone");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{var}: "))
                && err.contains("not valid UTF-8")
                && err.contains("\\x"),
            "{err}"
        );
    }
    for off in ["OFF", "Off", "off"] {
        assert_eq!(
            run(&[("KEEPALIVE", off.as_bytes())]).0,
            untouched,
            "KEEPALIVE={off}"
        );
    }
    assert_eq!(run(&[("DD_USE_KEEPALIVE", b"0")]).0, untouched);
    assert_eq!(run(&[("DD_TCP_KEEPALIVE_TIME", b"41")]).0, "1 41");
    assert_eq!(
        run(&[("KEEPIDLE", b"42"), ("DD_TCP_KEEPALIVE_TIME", b"42")]).0,
        "1 42",
        "both families agreeing"
    );
    let (got, err) = run(&[("KEEPIDLE", b"42"), ("DD_TCP_KEEPALIVE_TIME", b"43")]);
    assert_eq!(got, untouched);
    assert!(err.contains("disagrees with KEEPIDLE=42"), "{err}");
    // A newline and an escape sequence in a bad value are shown escaped, on one line.
    let (_, err) = run(&[("KEEPALIVE_POLICY", b"idle=5\n\x1b[31mx")]);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(!err.contains('\x1b') && err.contains("\\n"), "{err:?}");
}

/// `log=FILE`: each line stamped with the UTC time, options named as the kernel names them.
#[test]
fn the_log_names_options_and_stamps_each_line() {
    let dir = tempfile::tempdir().unwrap();
    let exe = c_program("fdreuse", &dir.path().join(""));
    let log = dir.path().join("shim.log");
    let policy = format!("idle=30,mode=force,log={}", log.display());
    let out = under_shim(&exe, &policy).arg("force").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("kept the policy against the program's setsockopt(SO_KEEPALIVE)")
            && text.contains("setsockopt(TCP_KEEPIDLE)"),
        "{text}"
    );
    for line in text.lines() {
        // 2026-12-01T21:40:12.345Z keepalive-inject[PID]: ...
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(
            stamp.len() == 24
                && stamp.ends_with('Z')
                && stamp.as_bytes()[10] == b'T'
                && rest.starts_with("keepalive-inject["),
            "{line}"
        );
    }
    // A symlink planted at the log's path is not followed.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let planted = dir.path().join("planted.log");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let policy = format!("idle=30,mode=force,log={}", planted.display());
    let out = under_shim(&exe, &policy).arg("force").output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // The stamp is today's date, as the system clock says.
    let today = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    let today = String::from_utf8_lossy(&today.stdout).trim().to_owned();
    assert!(text.starts_with(&today), "{today} vs {text}");
}

/// `inherit=no` knows the shim under another name too (a symlink to it, as a package or a
/// user may make): the children get no LD_PRELOAD of it.
#[test]
fn inherit_no_knows_the_shim_by_its_file_not_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let alias = dir.path().join("libka.so");
    std::os::unix::fs::symlink(shim(), &alias).unwrap();
    let out = Command::new("/usr/bin/env")
        .env_clear()
        .env("LD_PRELOAD", &alias)
        .env("KEEPALIVE_POLICY", "inherit=no")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!text.contains("LD_PRELOAD"), "{text}");
}

/// An environment with LD_PRELOAD twice (execve takes any array; the loader reads one): with
/// `inherit=no` the shim leaves every entry, so the program's children never load it, and the
/// other library stays.
#[test]
fn inherit_no_cleans_every_ld_preload_entry() {
    let dir = tempfile::tempdir().unwrap();
    let exe = c_program("dupenv", &dir.path().join(""));
    let other = "/lib/x86_64-linux-gnu/libm.so.6";
    let out = Command::new(&exe).arg(shim()).arg(other).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        !text.contains("libkeepalive_inject") && text.contains(&format!("LD_PRELOAD={other}\n")),
        "{text}"
    );
}

/// `log=` naming a FIFO nobody reads: the shim never waits (an open for writing would block
/// for a reader before the program's main), and writes nothing into a FIFO, a directory or a
/// device.
#[test]
fn a_log_path_that_is_no_regular_file_never_blocks_the_program() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let exe = c_program("sockopts", &dir.path().join(""));
    for path in [fifo.clone(), dir.path().to_path_buf(), "/dev/full".into()] {
        let mut cmd = under_shim(&exe, &format!("idle=30,log={}", path.display()));
        let out = testkit::bounded_output(&mut cmd, std::time::Duration::from_secs(20));
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1 30",
            "{}: {}",
            path.display(),
            show(&out)
        );
    }
}

/// A socket made by another preloaded library's constructor gets the policy in either order
/// of LD_PRELOAD: the loader runs that constructor before or after the shim's, and a hook that
/// runs first reads the configuration there and then.
#[test]
fn a_socket_made_in_an_earlier_constructor_gets_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/early.c");
    let early = testkit::compile_c(&src, dir.path(), &["-shared", "-fPIC", "-pthread"]);
    for order in [
        format!("{}:{}", early.display(), shim().display()),
        format!("{}:{}", shim().display(), early.display()),
    ] {
        let out = Command::new("/bin/true")
            .env("LD_PRELOAD", &order)
            .env("KEEPALIVE_POLICY", "idle=31")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "early keepalive=1 idle=31\n",
            "LD_PRELOAD={order}: {}",
            show(&out)
        );
    }
}

/// Threads another preloaded library's constructor starts make sockets while one of them
/// loads the shim's configuration: every socket gets the policy (a hook that finds the load
/// underway waits for it).
#[test]
fn sockets_made_while_the_configuration_loads_get_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/early.c");
    let early = testkit::compile_c(&src, dir.path(), &["-shared", "-fPIC", "-pthread"]);
    let order = format!("{}:{}", shim().display(), early.display());
    for _ in 0..20 {
        let out = Command::new("/bin/true")
            .env("LD_PRELOAD", &order)
            .env("KEEPALIVE_POLICY", "idle=31")
            .env("EARLY_THREADS", "4")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("early threads without keepalive: 0\n"),
            "{}",
            show(&out)
        );
    }
}

/// A constructor that runs before the shim's dlopens a library whose constructor waits for a
/// thread that makes a socket: the dlopen holds the loader's lock meanwhile, and the hook in
/// that thread must not wait for it (dlsym takes it; the program hung for good). It makes the
/// system call itself, and the socket gets the policy.
#[test]
fn a_hook_during_a_dlopen_in_a_constructor_never_waits_for_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let c = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let early = testkit::compile_c(
        &c.join("early.c"),
        dir.path(),
        &["-shared", "-fPIC", "-pthread"],
    );
    let thread = testkit::compile_c(
        &c.join("early_thread.c"),
        dir.path(),
        &["-shared", "-fPIC", "-pthread"],
    );
    let mut child = Command::new("/bin/true")
        .env(
            "LD_PRELOAD",
            format!("{}:{}", shim().display(), early.display()),
        )
        .env("KEEPALIVE_POLICY", "idle=31")
        .env("EARLY_DLOPEN", &thread)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the program hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("thread socket=1 keepalive=1"),
        "{}",
        show(&out)
    );
}
