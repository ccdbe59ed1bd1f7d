//! `keepalive lab`: every scenario with a short policy, checked against the kernel's rules, its
//! capture read back by tshark, and nothing left behind.

use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;
use testkit::require_program;

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");

fn lab(args: &[&str]) -> (Output, Value, tempfile::TempDir) {
    require_program("nft", "nftables");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("run.pcap");
    let out = Command::new(BIN)
        .arg("lab")
        .args(args)
        .args(["--json", "--pcap", pcap.to_str().unwrap()])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out, v, dir)
}

/// Frames tshark flags as TCP keep-alive in the run's capture.
fn tshark_keepalives(dir: &tempfile::TempDir) -> usize {
    require_program("tshark", "tshark");
    let out = Command::new("tshark")
        .args([
            "-r",
            dir.path().join("run.pcap").to_str().unwrap(),
            "-Y",
            "tcp.analysis.keep_alive",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn assert_as_expected(args: &[&str], ending: &str) -> (Value, tempfile::TempDir) {
    let (out, v, dir) = lab(args);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{v:#}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(v["ending"], ending, "{args:?}: {v:#}");
    assert_eq!(v["expected"], ending);
    if let Some(d) = v["detection"].as_object() {
        let (m, t, tol) = (
            d["measured_s"].as_f64().unwrap(),
            d["theory_s"].as_f64().unwrap(),
            d["tolerance_s"].as_f64().unwrap(),
        );
        assert!(
            (m - t).abs() <= tol,
            "{args:?}: measured {m}, theory {t}, tolerance {tol}"
        );
    }
    (v, dir)
}

/// `keepalive ARGS` is refused as bad input: exit 2, one line on stderr containing `needle`.
fn usage_error(args: &[&str], needle: &str) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

/// Probes spaced by `interval` after the first, which comes `idle` after the peer last spoke.
fn assert_probe_spacing(v: &Value, idle: f64, interval: f64, count: usize) {
    let probes = v["probes"].as_array().unwrap();
    assert_eq!(probes.len(), count, "{v:#}");
    let first = probes[0]["after_last_rx"].as_f64().unwrap();
    assert!(
        (first - idle).abs() <= 0.4,
        "probe 1 after {first}s, idle {idle}s"
    );
    for pair in probes.windows(2) {
        let gap = pair[1]["t"].as_f64().unwrap() - pair[0]["t"].as_f64().unwrap();
        assert!(
            (gap - interval).abs() <= 0.4,
            "probes {gap}s apart, interval {interval}s"
        );
    }
}

#[test]
fn crash_times_out_after_count_unanswered_probes() {
    let (v, dir) = assert_as_expected(&["crash"], "timeout");
    assert_eq!(v["error"], "ETIMEDOUT");
    assert_probe_spacing(&v, 3.0, 1.0, 3);
    assert!(
        v["probes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["answered"] == false)
    );
    assert_eq!(tshark_keepalives(&dir), 3);
}

#[test]
fn alive_peer_answers_every_probe() {
    let (v, dir) = assert_as_expected(&["alive"], "alive");
    let probes = v["probes"].as_array().unwrap();
    assert!(
        probes.len() >= 2 && probes.iter().all(|p| p["answered"] == true),
        "{v:#}"
    );
    for p in probes {
        let after = p["after_last_rx"].as_f64().unwrap();
        assert!(
            (after - 2.0).abs() <= 0.4,
            "each answer restarts the idle time: {after}"
        );
    }
    assert_eq!(tshark_keepalives(&dir), probes.len());
}

#[test]
fn rebooted_peer_resets_at_the_first_probe() {
    let (v, dir) = assert_as_expected(&["reboot"], "reset");
    assert_eq!(v["error"], "ECONNRESET");
    assert_eq!(v["probes"].as_array().unwrap().len(), 1);
    assert_eq!(tshark_keepalives(&dir), 1);
}

#[test]
fn unreachable_peer_is_indistinguishable_from_a_crash() {
    let (v, dir) = assert_as_expected(&["unreachable"], "timeout");
    assert_eq!(
        v["error"], "ETIMEDOUT",
        "ICMP errors about probes are ignored"
    );
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "icmp")
    );
    assert_probe_spacing(&v, 3.0, 1.0, 3);
    assert_eq!(tshark_keepalives(&dir), 3);
}

#[test]
fn firewall_keeps_a_connection_probed_below_its_timeout() {
    let (v, _) = assert_as_expected(&["firewall"], "alive");
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "server-reads" && e["text"] == "still there?")
    );
}

#[test]
fn firewall_kills_a_connection_probed_above_its_timeout() {
    let (v, dir) = assert_as_expected(
        &["firewall", "--idle", "7", "--interval", "1", "--count", "2"],
        "timeout",
    );
    assert_probe_spacing(&v, 7.0, 1.0, 2);
    assert_eq!(tshark_keepalives(&dir), 2);
}

#[test]
fn firewall_without_keepalive_is_a_silent_black_hole() {
    let (v, _) = assert_as_expected(&["firewall", "--no-keepalive"], "black-hole");
    assert!(v["probes"].as_array().unwrap().is_empty());
    assert!(v["error"].is_null(), "the server never hears of it");
}

#[test]
fn busy_connection_is_decided_by_retransmission_not_keepalive() {
    let (v, _) = assert_as_expected(&["busy"], "timeout");
    assert!(
        v["probes"].as_array().unwrap().is_empty(),
        "no probe while data is unacknowledged"
    );
    assert!(v["retransmissions"].as_u64().unwrap() >= 4);
    let slow = v["detection"]["measured_s"].as_f64().unwrap();
    // TCP_USER_TIMEOUT cuts it short.
    let (v, _) = assert_as_expected(
        &[
            "busy",
            "--idle",
            "3",
            "--interval",
            "1",
            "--count",
            "3",
            "--user-timeout",
            "3s",
        ],
        "timeout",
    );
    let fast = v["detection"]["measured_s"].as_f64().unwrap();
    assert!(
        fast < 4.0 && slow > 10.0,
        "user timeout {fast}s against tcp_retries2 {slow}s"
    );
    // User timeouts of no scenario's: the clock starts at the first retransmission the timer
    // makes (after the tail-loss probe), and the clamped timer gives up right at it. Theory
    // within the lab's tolerance (assert_as_expected), and later than the user timeout alone.
    for (ut, ms) in [("2500ms", 2500.0), ("7s", 7000.0)] {
        let (v, _) = assert_as_expected(&["busy", "--user-timeout", ut], "timeout");
        let theory = v["detection"]["theory_s"].as_f64().unwrap();
        assert!(theory > ms / 1000.0, "{ut}: theory {theory}");
    }
}

#[test]
fn hung_peer_looks_alive_to_keepalive_and_dead_to_a_heartbeat() {
    let (v, _) = assert_as_expected(&["hung"], "alive");
    // Every probe is answered by the frozen program's kernel; one sent as the run ends may have
    // its answer after the capture stopped.
    let end = v["duration_s"].as_f64().unwrap() - 1.0;
    assert!(
        v["probes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["t"].as_f64().unwrap() < end)
            .all(|p| p["answered"] == true),
        "{v:#}"
    );
    assert!(v["heartbeats_unanswered"].as_u64().unwrap() >= 2, "{v:#}");
    // Probes go out while the program is frozen, and its kernel answers every one.
    let fault_t = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "fault")
        .and_then(|e| e["t"].as_f64())
        .unwrap();
    let during = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["t"].as_f64().unwrap() > fault_t)
        .count();
    assert!(during >= 2, "probes answered during the freeze: {v:#}");
    // The heartbeat declares the peer dead when theory says (assert_as_expected checked the
    // tolerance through the exit status); here, that it did.
    let h = &v["heartbeat"];
    assert_eq!(h["misses"], 2, "{v:#}");
    assert!(h["declared_s"].as_f64().is_some(), "{v:#}");
    assert!(
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "heartbeat-dead"),
        "{v:#}"
    );
}

#[test]
fn text_output_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let out = Command::new(BIN)
        .args(["lab", "reboot", "--svg", svg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("keepalive probe 1")
            && text.contains("ECONNRESET")
            && text.contains("as the kernel's rules predict"),
        "{text}"
    );
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "line over 100 columns: {line:?}"
        );
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    let labels = assert_svg_inside(&picture);
    for label in ["P1", "RST", "fault: reboot", "handshake at", "SYN-ACK +"] {
        assert!(
            labels.iter().any(|l| l.starts_with(label)),
            "no {label:?} in {labels:?}"
        );
    }
    assert!(
        labels.iter().any(|l| l.starts_with("theory: ends 3.00s")),
        "the reset's theory marker: {labels:?}"
    );
}

/// Parses `svg` as XML and checks that every label and line lies inside its view box (text
/// widths estimated at 7 px a character of the 12 px font); returns the labels.
fn assert_svg_inside(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    let root = doc.root_element();
    let num = |n: roxmltree::Node, a: &str| n.attribute(a).and_then(|v| v.parse::<f64>().ok());
    let (w, h) = (num(root, "width").unwrap(), num(root, "height").unwrap());
    let mut labels = Vec::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "text" => {
                let text = n.text().unwrap_or_default().to_owned();
                let (x, y) = (num(n, "x").unwrap(), num(n, "y").unwrap());
                let width = text.chars().count() as f64 * 7.0;
                let (from, to) = match n.attribute("text-anchor") {
                    Some("end") => (x - width, x),
                    Some("middle") => (x - width / 2.0, x + width / 2.0),
                    _ => (x, x + width),
                };
                assert!(
                    from >= 0.0 && to <= w + 8.0 && (10.0..=h).contains(&y),
                    "{text:?} at x {x}, y {y} leaves the {w}x{h} picture"
                );
                labels.push(text);
            }
            "line" => {
                for (a, max) in [("x1", w), ("x2", w), ("y1", h), ("y2", h)] {
                    let v = num(n, a).unwrap();
                    assert!((0.0..=max).contains(&v), "line {a}={v} outside {w}x{h}");
                }
            }
            _ => {}
        }
    }
    labels
}

#[test]
fn bad_input_is_one_line() {
    for (args, needle) in [
        (vec!["lab", "nosuch"], "unknown scenario 'nosuch'"),
        (vec!["lab", "--idle", "0"], "idle=0"),
        (vec!["lab", "--no-keepalive", "--idle", "5"], "contradict"),
        // Output paths are checked before the run, which then does not start.
        (
            vec!["lab", "--pcap", "/nonexistent-ka-dir/x.pcap"],
            "cannot write /nonexistent-ka-dir/x.pcap",
        ),
        (
            vec!["lab", "--svg", "/nonexistent-ka-dir/x.svg"],
            "cannot write /nonexistent-ka-dir/x.svg",
        ),
        (
            vec!["lab", "--no-keepalive", "--duration", "forever"],
            "--duration forever",
        ),
        // The kernel's defaults take 2h11m15s: refused before anything is built.
        (
            vec!["lab", "crash", "--idle", "7200"],
            "raise --max-duration",
        ),
        (
            vec!["lab", "--server-cmd", "nc -l \"8080"],
            "missing closing quote",
        ),
    ] {
        usage_error(&args, needle);
    }
    let out = Command::new(BIN).args(["lab", "--list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "crash",
        "alive",
        "reboot",
        "unreachable",
        "firewall",
        "busy",
        "hung",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

/// The lab's namespaces are held by processes that die with it: interrupting it mid-run
/// leaves no process, namespace or veth behind.
#[test]
fn interrupted_lab_leaves_nothing_behind() {
    // The lab's namespaces exist only through descriptors the lab holds: once it is gone,
    // Ctrl-C or SIGKILL alike, nothing on the machine refers to them and the kernel frees them.
    // A --server-cmd program (seed 002's nc) dies with it too, and what it started.
    require_program("nc", "netcat-openbsd");
    for (signal, server, client) in [
        ("-INT", None, None),
        ("-KILL", None, None),
        ("-KILL", Some("nc -l 8080"), None),
        ("-KILL", Some("nc -l 8080"), Some("nc {server} {port}")),
    ] {
        let mut args = vec!["lab", "crash"];
        if let Some(cmd) = server {
            args.extend(["--server-cmd", cmd]);
        }
        if let Some(cmd) = client {
            args.extend(["--client-cmd", cmd]);
        }
        let mut lab = Command::new(BIN)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = lab.id();
        let ours = testkit::wait_for("the lab's namespaces", Duration::from_secs(10), || {
            let held = net_namespaces_held_by(pid);
            (held.len() >= 2).then_some(held)
        });
        let expected = usize::from(server.is_some()) + usize::from(client.is_some());
        let programs = testkit::wait_for("the programs", Duration::from_secs(10), || {
            let kids = descendants(pid);
            (kids.len() >= expected).then_some(kids)
        });
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        lab.wait().unwrap();
        testkit::wait_for(
            "nothing to refer to the lab's namespaces",
            Duration::from_secs(5),
            || {
                let left: Vec<String> = every_net_namespace_reference()
                    .into_iter()
                    .filter(|n| ours.contains(n))
                    .collect();
                left.is_empty().then_some(())
            },
        );
        testkit::wait_for("the programs to die", Duration::from_secs(5), || {
            programs
                .iter()
                .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
                .then_some(())
        });
    }
}

/// Every process below `pid`, from /proc's children lists.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// The network namespaces process `pid` holds open (`net:[INODE]` descriptors).
fn net_namespaces_held_by(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.to_string_lossy().into_owned())
                .filter(|t| t.starts_with("net:["))
                .collect()
        })
        .unwrap_or_default()
}

/// Every network namespace some task is in or holds a descriptor of.
fn every_net_namespace_reference() -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = p.path();
        if let Ok(tasks) = std::fs::read_dir(path.join("task")) {
            for t in tasks.flatten() {
                if let Ok(l) = std::fs::read_link(t.path().join("ns/net")) {
                    out.push(l.to_string_lossy().into_owned());
                }
            }
        }
        if let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str()?.parse::<u32>().ok())
        {
            out.extend(net_namespaces_held_by(pid));
        }
    }
    out
}

#[test]
fn runs_without_root_in_a_user_namespace() {
    testkit::require_root();
    let out = testkit::as_nobody(BIN)
        .args(["lab", "firewall", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{v:#}");
    assert_eq!(v["ending"], "alive");
}

#[test]
fn a_scenario_file_of_the_tests_own_runs_and_bad_ones_name_the_key() {
    // Adding a scenario is adding a file: this one is the test's, not the lab's.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("late-crash.toml");
    std::fs::write(
        &file,
        "name = \"late-crash\"\nsummary = \"the peer goes silent a second in\"\n\
         seed = \"the test's own\"\ntopology = \"pair\"\nfault = \"silence\"\n\
         fault_after = \"1s\"\npolicy = \"idle=2s,interval=1s,count=2\"\n\
         [expect]\nkeepalive = \"timeout\"\nno_keepalive = \"alive\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (v, _) = assert_as_expected(&["--scenario-file", path], "timeout");
    assert_eq!(v["scenario"], "late-crash", "{v:#}");
    assert_eq!(v["probes"].as_array().unwrap().len(), 2, "{v:#}");

    for (body, needle) in [
        ("fault = \"explode\"", "(fault): unknown variant `explode`"),
        (
            "fault_after = \"soon\"",
            "line 6 (fault_after): \"soon\": expected a duration",
        ),
        (
            "firewall_timeout = \"5s\"",
            "line 6 (firewall_timeout): the firewall runs in a router",
        ),
        ("colour = \"red\"", "unknown field `colour`"),
    ] {
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("fault_after = \"1s\"", body)
            .replace(
                "fault = \"silence\"",
                if body.starts_with("fault =") {
                    ""
                } else {
                    "fault = \"silence\""
                },
            );
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        usage_error(&["lab", "--scenario-file", bad.to_str().unwrap()], needle);
    }

    // --list --json: every built-in scenario with what it expects.
    let out = Command::new(BIN)
        .args(["lab", "--list", "--json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 7);
    assert!(
        list.iter().all(|s| s["expect"]["keepalive"].is_string()),
        "{list:?}"
    );
}

#[test]
fn on_a_terminal_the_timeline_shows_as_it_happens() {
    // keepalive lab on a pty of its own (python's pty module): each probe is told on the
    // terminal as it crosses the wire, before the report, which comes once the run is over.
    let driver = format!(
        "import os, pty, select, time\n\
         pid, fd = pty.fork()\n\
         if pid == 0:\n\
         \x20   os.execv({bin:?}, [{bin:?}, 'lab', 'crash', '--idle', '2', '--interval', '1', '--count', '2'])\n\
         out = b''\n\
         end = time.time() + 60\n\
         while time.time() < end:\n\
         \x20   if select.select([fd], [], [], 0.1)[0]:\n\
         \x20       try: out += os.read(fd, 4096)\n\
         \x20       except OSError: break\n\
         os.waitpid(pid, 0)\n\
         print(out.decode(errors='replace').replace('\\r', '\\n'))\n",
        bin = BIN,
    );
    let py = testkit::python();
    let out = testkit::bounded_output(
        Command::new(py).args(["-c", &driver]),
        Duration::from_secs(90),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let live = text
        .find("keepalive probe 1,")
        .unwrap_or_else(|| panic!("no live probe line: {text}"));
    let report = text
        .find("keepalive lab: crash")
        .unwrap_or_else(|| panic!("no report: {text}"));
    assert!(live < report, "probe 1 was told before the report: {text}");
    assert!(text.contains("keepalive probe 2,"), "{text}");
}

#[test]
fn without_keepalive_every_scenario_ends_as_the_kernel_says() {
    // Nothing probes an idle connection: the server never learns the peer crashed, rebooted
    // or became unreachable (seed 002's "still ESTABLISHED"); a firewall turns it into a
    // black hole; data in flight is still decided by retransmission.
    for (scenario, ending) in [
        ("crash", "alive"),
        ("alive", "alive"),
        ("reboot", "alive"),
        ("unreachable", "alive"),
        ("hung", "alive"),
        ("firewall", "black-hole"),
        ("busy", "timeout"),
    ] {
        assert_as_expected(&[scenario, "--no-keepalive", "--duration", "3s"], ending);
    }
}

#[test]
fn every_scenario_needs_nothing_from_path_as_root_or_nobody() {
    // A fresh machine's ordinary user has no /usr/sbin on PATH; the lab must find nothing
    // through PATH at all. Every scenario, both ways, one after the other (a loaded machine
    // makes timers late, and this is not a test of load).
    testkit::require_root();
    let scenarios = [
        "crash",
        "alive",
        "reboot",
        "unreachable",
        "firewall",
        "busy",
        "hung",
    ];
    for scenario in scenarios {
        for nobody in [false, true] {
            let mut cmd = if nobody {
                testkit::as_nobody("env")
            } else {
                Command::new("env")
            };
            cmd.args(["-i", "PATH=/nonexistent", BIN, "lab", scenario, "--json"]);
            let out = testkit::bounded_output(&mut cmd, Duration::from_secs(120));
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "{scenario} (nobody: {nobody}): {e}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert!(
                out.status.success(),
                "{scenario} (nobody: {nobody}) did not end as predicted: {v:#}"
            );
        }
    }
}

/// Seed 002 exactly: `nc -l 8080` as the server, keepalive injected by the shim.
#[test]
fn nc_as_the_server_through_the_shim() {
    require_program("nc", "netcat-openbsd");
    testkit::shim_next_to(std::path::Path::new(BIN));
    let (v, dir) = assert_as_expected(&["crash", "--server-cmd", "nc -l 8080"], "timeout");
    assert_eq!(
        v["policy"], "idle=3s,interval=1s,count=3",
        "read from nc's own socket: {v:#}"
    );
    assert_probe_spacing(&v, 3.0, 1.0, 3);
    assert_eq!(tshark_keepalives(&dir), 3);
    let out = Command::new(BIN)
        .args(["lab", "busy", "--server-cmd", "nc -l 8080"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a scenario the program cannot play is bad input"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the built-in server"));

    // The read-back of nc's options holds with both CPUs busy, for a policy of no scenario's.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    // (Only the read-back is asserted: busy CPUs make timers late, which is not this test's.)
    let (_, v, _dir) = lab(&[
        "crash",
        "--idle",
        "4",
        "--interval",
        "2",
        "--count",
        "2",
        "--server-cmd",
        "nc -l 8080",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    assert_eq!(v["policy"], "idle=4s,interval=2s,count=2", "{v:#}");
    assert_eq!(v["ending"], "timeout", "{v:#}");
}

/// Both ends real programs nobody here wrote: nc serves (keepalive injected), socat, nc and a
/// python3 client connect; each fault acts on the program's own socket.
#[test]
fn real_programs_at_both_ends() {
    require_program("nc", "netcat-openbsd");
    require_program("socat", "socat");
    testkit::shim_next_to(std::path::Path::new(BIN));
    let (v, dir) = assert_as_expected(
        &[
            "crash",
            "--idle",
            "2",
            "--interval",
            "1",
            "--count",
            "2",
            "--server-cmd",
            "nc -l {port}",
            "--client-cmd",
            "socat - TCP:{server}:{port}",
        ],
        "timeout",
    );
    assert_eq!(v["policy"], "idle=2s,interval=1s,count=2", "{v:#}");
    assert_probe_spacing(&v, 2.0, 1.0, 2);
    assert_eq!(tshark_keepalives(&dir), 2);
    let connected = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "connected")
        .cloned()
        .unwrap();
    assert_eq!(connected["program"], "socat - TCP:198.18.0.2:8080", "{v:#}");

    // reboot: the program is killed and its socket goes with a reset the fault discards, so
    // the server's first probe meets the rebooted host's RST.
    assert_as_expected(&["reboot", "--client-cmd", "nc {server} {port}"], "reset");

    // firewall: the client's data goes out through the program's own socket.
    assert_as_expected(&["firewall", "--client-cmd", "nc {server} {port}"], "alive");

    // hung: a python3 client answers the heartbeat until the fault stops it (SIGSTOP).
    let pong = "import socket,sys\n\
                s=socket.create_connection((sys.argv[1],int(sys.argv[2])))\n\
                f=s.makefile('rwb',0)\n\
                for line in f:\n    \
                    if b'ping' in line: f.write(b'pong\\n')\n";
    let python = testkit::python();
    let cmd = format!("{} -c \"{pong}\" {{server}} {{port}}", python.display());
    let (v, _dir) = assert_as_expected(&["hung", "--client-cmd", &cmd], "alive");
    let h = &v["heartbeat"];
    assert!(h["declared_s"].as_f64().is_some(), "{v:#}");
    assert!(
        (h["declared_s"].as_f64().unwrap() - h["theory_s"].as_f64().unwrap()).abs()
            <= h["tolerance_s"].as_f64().unwrap(),
        "{v:#}"
    );
}

/// A client program that ends before it connects is reported with its exit status.
#[test]
fn a_client_program_that_never_connects_is_named_with_its_status() {
    require_program("nc", "netcat-openbsd");
    let out = Command::new(BIN)
        .args(["lab", "crash", "--client-cmd", "nc -z 198.18.0.9 1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "`nc -z 198.18.0.9 1` exited (exit status: 1) before the lab found it connected to 198.18.0.2:8080"
        ),
        "{err}"
    );
    usage_error(
        &["lab", "--client-cmd", "/nonexistent/prog {server}"],
        "--client-cmd '/nonexistent/prog {server}': cannot run /nonexistent/prog",
    );
}

/// Idle above the firewall's timeout: the picture marks where the firewall forgets the
/// connection (its timeout into the silence), before the first probe it then drops.
#[test]
fn the_picture_marks_where_the_firewall_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("fw.svg");
    let (v, _d) = assert_as_expected(
        &[
            "firewall",
            "--idle",
            "6",
            "--interval",
            "1",
            "--count",
            "2",
            "--svg",
            svg.to_str().unwrap(),
        ],
        "timeout",
    );
    let forgets = v["firewall_forgets"].as_f64().unwrap();
    let first_probe = v["probes"][0]["t"].as_f64().unwrap();
    assert!(forgets < first_probe, "{v:#}");
    let labels = assert_svg_inside(&std::fs::read_to_string(&svg).unwrap());
    for label in ["firewall forgets the connection", "P1", "P2", "RST"] {
        assert!(
            labels.iter().any(|l| l == label),
            "no {label:?}: {labels:?}"
        );
    }
}

/// `--count 2` changes the scenario's count and nothing else: its idle and interval stay.
#[test]
fn command_line_keys_go_over_the_scenarios_policy() {
    let (v, _dir) = assert_as_expected(&["crash", "--count", "2"], "timeout");
    assert_eq!(v["policy"], "idle=3s,interval=1s,count=2", "{v:#}");
    assert_probe_spacing(&v, 3.0, 1.0, 2);
}

/// A user timeout long enough that the retransmission timer's last run is ~18 s: the timer
/// wheel may run it up to 2 s late (HZ=250), and the tolerance says so.
#[test]
fn busy_with_a_long_user_timeout_allows_the_last_timers_slack() {
    let (v, _dir) = assert_as_expected(&["busy", "--user-timeout", "45s"], "timeout");
    let tolerance = v["detection"]["tolerance_s"].as_f64().unwrap();
    assert!(tolerance > 1.0 && tolerance <= 2.1, "{v:#}");
}

/// Programs at either end that end the connection themselves are reported for what they did,
/// not taken for the kernel's verdict; a hung client that never answers ping is refused.
#[test]
fn programs_that_end_the_connection_themselves_are_seen_for_what_they_did() {
    let python = testkit::python();
    let py = python.display();
    // The client connects, and exits after a second: its FIN ends the connection.
    let client = format!(
        "{py} -c \"import socket,sys,time; s=socket.create_connection((sys.argv[1],int(sys.argv[2]))); time.sleep(1)\" {{server}} {{port}}"
    );
    let (out, v, _dir) = lab(&["alive", "--client-cmd", &client]);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(v["ending"], "closed", "{v:#}");
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"peer-closed"), "{kinds:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it ended closed by the peer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server accepts, and closes after a second with the client's hello unread: its
    // kernel sends RST, which is the program's doing, not keepalive's.
    testkit::shim_next_to(std::path::Path::new(BIN));
    let server = format!(
        "{py} -c \"import socket,time; l=socket.socket(); l.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); l.bind(('0.0.0.0',8080)); l.listen(); c,_=l.accept(); time.sleep(1); c.close(); time.sleep(30)\""
    );
    let (out, v, _dir) = lab(&["crash", "--server-cmd", &server]);
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(v["ending"], "other", "{v:#}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("reset the connection itself"),
        "{v:#}"
    );

    // hung with a client that never says pong.
    let out = Command::new(BIN)
        .args(["lab", "hung", "--client-cmd", "nc {server} {port}"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("never answered the server's \"ping\""),
        "{err}"
    );
}

/// A user timeout bounds retransmission with keepalive off too: busy ends after it.
#[test]
fn a_user_timeout_without_keepalive_still_decides_busy() {
    let (v, _dir) = assert_as_expected(
        &["busy", "--no-keepalive", "--user-timeout", "2500ms"],
        "timeout",
    );
    assert_eq!(v["keepalive"], false, "{v:#}");
    assert_eq!(v["settings"]["user_timeout_ms"], 2500, "{v:#}");
    usage_error(
        &["lab", "crash", "--no-keepalive", "--idle", "3"],
        "contradict",
    );
}

/// `keepalive ARGS` ends within `limit` (killed and failed otherwise) as bad input: exit 2,
/// one line on stderr containing `needle`.
fn usage_error_within(args: &[&str], needle: &str, limit: Duration) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn a_scenario_file_that_is_not_a_regular_file_is_refused_before_it_is_opened() {
    // A FIFO would hold open() until a writer comes: refused at once, as a directory and a
    // device are.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("scenario.toml");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .unwrap();
    let dir_path = dir.path().to_str().unwrap();
    for path in [fifo.to_str().unwrap(), dir_path, "/dev/null"] {
        usage_error_within(
            &["lab", "--scenario-file", path],
            &format!("{path}: not a regular file"),
            Duration::from_secs(10),
        );
    }
}

/// Crash's scenario with the fault `fault_after` in.
fn crash_with_fault_after(dir: &tempfile::TempDir, fault_after: &str) -> String {
    let file = dir.path().join(format!("crash-after-{fault_after}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"late\"\nsummary = \"the peer goes silent later\"\nseed = \"the test's own\"\n\
             topology = \"pair\"\nfault = \"silence\"\nfault_after = \"{fault_after}\"\n\
             policy = \"idle=3s,interval=1s,count=3\"\n\
             [expect]\nkeepalive = \"timeout\"\nno_keepalive = \"alive\"\n"
        ),
    )
    .unwrap();
    file.to_str().unwrap().to_owned()
}

#[test]
fn fault_after_counts_in_the_estimate_and_the_clock_starts_at_the_last_answer() {
    let dir = tempfile::tempdir().unwrap();
    // The wait for the fault is part of the run: refused before it starts.
    let far = crash_with_fault_after(&dir, "1h");
    usage_error_within(
        &["lab", "--scenario-file", &far, "--max-duration", "1m"],
        "would take about 3609 s (3600 s to the fault, then about 9 s of watching), more than \
         --max-duration 60 s allows; raise --max-duration",
        Duration::from_secs(10),
    );
    let never = crash_with_fault_after(&dir, "99999h");
    usage_error_within(
        &["lab", "--scenario-file", &never, "--max-duration", "1m"],
        "more than the 24 h limit of --max-duration",
        Duration::from_secs(10),
    );
    let late = crash_with_fault_after(&dir, "10s");
    usage_error_within(
        &["lab", "--scenario-file", &late, "--max-duration", "11s"],
        "would take about 19 s",
        Duration::from_secs(10),
    );
    // Probes 1-3 are answered, the fault comes at 10 s, probes 4-6 go unanswered: the RST
    // comes `idle + count x interval` after the answer to probe 3, the peer's last segment.
    let (v, _) = assert_as_expected(&["--scenario-file", &late], "timeout");
    let probes = v["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 6, "{v:#}");
    assert!(probes[..3].iter().all(|p| p["answered"] == true), "{v:#}");
    assert!(probes[3..].iter().all(|p| p["answered"] == false), "{v:#}");
    let d = &v["detection"];
    assert_eq!(d["theory_s"].as_f64(), Some(6.0), "{v:#}");
    let origin = d["origin_t"].as_f64().unwrap();
    let (p3, p4) = (
        probes[2]["t"].as_f64().unwrap(),
        probes[3]["t"].as_f64().unwrap(),
    );
    assert!(
        origin > p3 && origin < p4,
        "the clock starts at probe 3's answer: {v:#}"
    );
}

#[test]
fn output_names_are_checked_before_the_run_and_errors_name_them() {
    let dir = tempfile::tempdir().unwrap();
    // A name of 250 bytes is legal: the lab's temporary name for it must be too.
    let long = dir.path().join("b".repeat(250));
    let out = Command::new(BIN)
        .args(["lab", "reboot", "--json", "--pcap", long.to_str().unwrap()])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&long).unwrap().len() > 0);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // One of 256 is not: refused before the run, naming it.
    let too_long = dir.path().join("b".repeat(256));
    usage_error_within(
        &["lab", "reboot", "--pcap", too_long.to_str().unwrap()],
        &format!(
            "cannot write {}: its file name is 256 bytes",
            too_long.display()
        ),
        Duration::from_secs(10),
    );
    // An error names the path given, not the lab's temporary name for it.
    usage_error_within(
        &["lab", "reboot", "--pcap", "/proc/ka-x.pcap"],
        "cannot write /proc/ka-x.pcap: ",
        Duration::from_secs(10),
    );
}

#[test]
fn pcap_and_svg_on_the_same_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.pcap");
    let x = x.to_str().unwrap();
    let again = format!("{}/./x.pcap", dir.path().display());
    std::fs::write(dir.path().join("old.pcap"), b"").unwrap();
    std::fs::hard_link(dir.path().join("old.pcap"), dir.path().join("link.svg")).unwrap();
    let (old, link) = (
        dir.path().join("old.pcap").to_str().unwrap().to_owned(),
        dir.path().join("link.svg").to_str().unwrap().to_owned(),
    );
    for (pcap, svg) in [(x, x), (x, again.as_str()), (old.as_str(), link.as_str())] {
        usage_error_within(
            &["lab", "reboot", "--pcap", pcap, "--svg", svg],
            "--pcap and --svg name the same file",
            Duration::from_secs(10),
        );
    }
    assert!(!dir.path().join("x.pcap").exists());
}

#[test]
fn a_run_past_the_longest_max_duration_says_it_cannot_run() {
    // No --max-duration can let it run: say so, with the limit, rather than "raise it".
    usage_error_within(
        &[
            "lab",
            "busy",
            "--user-timeout",
            "2147483647ms",
            "--max-duration",
            "1h",
        ],
        "more than the 24 h limit of --max-duration: it cannot run in the lab",
        Duration::from_secs(10),
    );
    // idle takes ms (3000ms), and the hint says so.
    usage_error_within(
        &["lab", "--idle", "abc"],
        "units ms, s, m, h",
        Duration::from_secs(10),
    );
}
