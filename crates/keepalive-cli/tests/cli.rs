//! The `keepalive` binary as a user runs it: outputs, exit codes, one-line errors, and sysctl
//! changes seen from outside the tool.

use std::process::{Command, Output};
use testkit::{TempNetns, host_sysctl};

const KEYS: [&str; 3] = [
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn keepalive(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keepalive"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run keepalive")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code and the single line on stderr.
fn fails(out: &Output) -> (i32, String) {
    let err = stderr(out);
    assert_eq!(
        err.lines().count(),
        1,
        "expected a one-line error, got {err:?}"
    );
    assert!(err.starts_with("keepalive: "), "{err}");
    (out.status.code().unwrap_or(-1), err.trim_end().to_owned())
}

fn host() -> Vec<String> {
    KEYS.iter().map(|k| host_sysctl(k)).collect()
}

fn in_ns(ns: &TempNetns) -> Vec<String> {
    KEYS.iter().map(|k| ns.sysctl(k)).collect()
}

#[test]
fn explain_on_a_default_kernel_prints_2h11m15s() {
    let ns = TempNetns::new();
    let out = keepalive(&["explain", "--netns", ns.name()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Time to detect: 2h11m15s"), "{text}");
    assert!(
        text.starts_with("Policy  idle=7200s,interval=75s,count=9"),
        "{text}"
    );
    assert!(text.contains("ECONNRESET after 2h"), "{text}");
    assert!(text.contains("15m24.6s"), "{text}");
    assert!(
        text.contains("aws-nlb"),
        "the 2 h idle outlasts an NLB: {text}"
    );
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "line over 100 columns: {line:?}"
        );
    }
}

#[test]
fn explain_a_policy_as_argument_flags_or_policy_option_alike() {
    let a = stdout(&keepalive(&["explain", "idle=30,interval=10,count=5"]));
    let b = stdout(&keepalive(&[
        "explain",
        "--idle",
        "30s",
        "--interval",
        "10",
        "--count",
        "5",
    ]));
    let c = stdout(&keepalive(&[
        "explain",
        "--policy",
        "idle=30s,interval=10s,count=5",
    ]));
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert!(a.contains("Time to detect: 1m20s"), "{a}");
    assert!(
        !a.contains("Warning"),
        "30 s idle outlasts no middlebox: {a}"
    );
}

#[test]
fn explain_json_carries_the_timeline() {
    let out = keepalive(&[
        "explain",
        "--json",
        "idle=10,interval=5,count=3,user-timeout=12s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["policy"], "idle=10s,interval=5s,count=3,user-timeout=12s");
    assert_eq!(v["silent_peer"]["first_probe_ms"], 10_000);
    assert_eq!(v["silent_peer"]["probes"], 1);
    assert_eq!(v["silent_peer"]["reset_ms"], 15_000);
    assert_eq!(v["silent_peer"]["decided_by"], "user-timeout");
    // The user timeout counts from the timer's first retransmission: after the tail-loss
    // probe (0.2 s) and one fastest-path RTO (204 ms).
    assert_eq!(v["unacked_data"]["limit_ms"], 12_000);
    assert_eq!(v["unacked_data"]["first_retransmission_ms"], 404);
    assert_eq!(v["unacked_data"]["give_up_ms"], 12_404);
    assert_eq!(v["time_to_detect"], "15s");
}

#[test]
fn explain_other_systems() {
    let out = keepalive(&["explain", "--os", "windows"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.starts_with("Policy  idle=7200s,interval=1s,count=10"),
        "{text}"
    );
    assert!(text.contains("Time to detect: 2h10s"), "{text}");
    for os in ["linux", "freebsd", "macos", "windows"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(os)),
            "{os} missing from the table: {text}"
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&stdout(&keepalive(&["explain", "--os", "macos", "--json"]))).unwrap();
    assert_eq!(v["settings"]["count"], 8);
    assert!(
        v["unacked_data"].is_null(),
        "Linux's retransmission model is not claimed for macOS"
    );
}

#[test]
fn every_malformed_policy_is_one_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["explain", "idle=0"], "idle=0: out of range"),
        (&["explain", "idle=32768"], "1..=32767"),
        (&["explain", "count=128"], "count=128: out of range"),
        (&["explain", "count=5s"], "takes no unit"),
        (&["explain", "idle=5x"], "unknown unit"),
        (&["explain", "idle=-1"], "negative"),
        (
            &["explain", "idle=1.5"],
            "the kernel counts idle in whole seconds",
        ),
        (&["explain", "idle=1500ms"], "whole seconds"),
        (&["explain", "idel=5"], "unknown policy key 'idel'"),
        (&["explain", "idle=5,idle=6"], "given twice"),
        (&["explain", "idle=5,"], "empty field"),
        (&["explain", ""], "empty policy"),
        (
            &["explain", "user-timeout=3000000000ms"],
            "0..=2147483647 ms",
        ),
        (
            &[
                "explain",
                "idle=32767,interval=32767,count=127,user-timeout=auto",
            ],
            "past TCP_USER_TIMEOUT",
        ),
        (
            &["explain", "--policy", "interval=abc"],
            "interval=abc: not a number of seconds",
        ),
        (&["explain", "--count", "0"], "count=0: out of range"),
        (&["explain", "--idle", "-5"], "idle=-5: negative"),
        (
            &["explain", "--idle", "5", "--policy", "count=3"],
            "not both",
        ),
        (&["explain", "idle=5", "--policy", "count=3"], "given twice"),
        (&["explain", "--os", "plan9"], "possible values"),
        (&["sysctl", "set", "--idle", "0"], "idle=0"),
        (&["sysctl", "set", "--user-timeout", "5s"], "per socket"),
        (&["sysctl", "set"], "nothing to set"),
        (
            &[
                "sysctl",
                "persist",
                "--count",
                "999",
                "--dir",
                "/nonexistent",
            ],
            "count=999",
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = fails(&keepalive(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} should mention {needle:?}"
        );
    }
}

#[test]
fn sysctl_set_changes_the_namespace_and_not_the_host() {
    let host_before = host();
    let ns = TempNetns::new();
    let out = keepalive(&[
        "sysctl",
        "set",
        "--netns",
        ns.name(),
        "--idle",
        "60",
        "--interval",
        "10",
        "--count",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("now detected after 1m50s (was 2h11m15s) in network namespace"),
        "{}",
        stdout(&out)
    );
    assert_eq!(in_ns(&ns), ["60", "10", "5"]);
    assert_eq!(host(), host_before);

    let out = keepalive(&["sysctl", "show", "--netns", ns.name(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["values"]["keepalive_time"], 60);
    assert_eq!(v["rows"][0]["origin"]["kind"], "runtime");
    assert_eq!(v["detect"]["idle_connection_ms"], 110_000);

    let out = keepalive(&["sysctl", "reset", "--netns", ns.name()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(in_ns(&ns), ["7200", "75", "9"]);
    assert_eq!(host(), host_before);
}

#[test]
fn a_failed_write_restores_the_keys_written_before_it() {
    let ns = TempNetns::new();
    // Injected failure: inside `ip netns exec`'s private mount namespace, a read-only file is
    // bound over tcp_keepalive_probes, so the third write fails after two have succeeded.
    let value = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(value.path(), "9\n").unwrap();
    let script = format!(
        "mount --bind -o ro {} /proc/sys/net/ipv4/tcp_keepalive_probes && exec {} sysctl set --idle 60 --interval 10 --count 5",
        value.path().display(),
        env!("CARGO_BIN_EXE_keepalive")
    );
    let out = ns.exec(&["sh", "-c", &script]);
    let (code, err) = fails(&out);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("net.ipv4.tcp_keepalive_probes=5"), "{err}");
    assert!(
        err.contains("restored net.ipv4.tcp_keepalive_intvl, net.ipv4.tcp_keepalive_time"),
        "{err}"
    );
    assert_eq!(in_ns(&ns), ["7200", "75", "9"]);
}

#[test]
fn without_permission_exit_3_names_the_capability_and_changes_nothing() {
    let host_before = host();
    let ns = TempNetns::new();
    let nobody = |args: &[&str]| {
        testkit::as_nobody(env!("CARGO_BIN_EXE_keepalive"))
            .args(args)
            .output()
            .unwrap()
    };
    let (code, err) = fails(&nobody(&["sysctl", "set", "--idle", "30"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("needs CAP_NET_ADMIN"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(host(), host_before);

    let (code, err) = fails(&nobody(&[
        "sysctl",
        "set",
        "--netns",
        ns.name(),
        "--idle",
        "30",
    ]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("CAP_SYS_ADMIN"), "{err}");
    assert_eq!(in_ns(&ns), ["7200", "75", "9"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (code, err) = fails(&nobody(&[
        "sysctl",
        "persist",
        "--idle",
        "30",
        "--dir",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn persist_writes_a_drop_in_with_the_live_values_filling_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = keepalive(&["sysctl", "persist", "--idle", "45", "--dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("90-keepalive.conf")).unwrap();
    assert!(
        text.contains("net.ipv4.tcp_keepalive_time = 45\n"),
        "{text}"
    );
    let intvl = host_sysctl("net.ipv4.tcp_keepalive_intvl");
    assert!(
        text.contains(&format!("net.ipv4.tcp_keepalive_intvl = {intvl}\n")),
        "{text}"
    );
    // The live values are untouched: persist only writes the file.
    assert_ne!(host_sysctl("net.ipv4.tcp_keepalive_time"), "45");
    let (code, err) = fails(&keepalive(&[
        "sysctl", "persist", "--netns", "x", "--dir", d,
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("initial network namespace"), "{err}");
}

#[test]
fn shell_completions_know_every_subcommand() {
    let out = keepalive(&["completions", "bash"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for sub in [
        "explain", "sysctl", "run", "status", "get", "set", "lab", "http",
    ] {
        assert!(text.contains(sub), "{sub} missing");
    }
    let (code, err) = fails(&keepalive(&["completions", "tcsh"]));
    assert_eq!(code, 2);
    assert!(err.contains("possible values"), "{err}");
}

#[test]
fn a_reader_that_went_away_ends_the_output_quietly() {
    // stdout is a pipe whose reading end is closed before anything is written: every write
    // fails with EPIPE, as under `| head -1` once head has its line.
    let me = std::process::id().to_string();
    for args in [
        &["get", "--pid", &me][..],
        &["get", "--pid", &me, "--json"],
        &["get", "--cgroup-of", &me],
        &["get", "--cgroup-of", &me, "--json"],
        &["status"],
    ] {
        let (read, write) = rustix::pipe::pipe().unwrap();
        drop(read);
        let out = Command::new(env!("CARGO_BIN_EXE_keepalive"))
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}
