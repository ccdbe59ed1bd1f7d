//! `keepalive explain` against the kernel's rules where they are easy to get wrong: the u8
//! counters of the keepalive and retransmission timers, the namespace's RTO floor, and human
//! output that fits 100 columns whatever the numbers.

use std::process::{Command, Output};
use testkit::TempNetns;

fn keepalive(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keepalive"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run keepalive")
}

/// Standard output of a run that must succeed.
fn explain(args: &[&str]) -> String {
    let out = keepalive(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_fits(text: &str) {
    for line in text.lines() {
        assert!(
            unicode_width::UnicodeWidthStr::width(line) <= 100,
            "line over 100 columns: {line:?}\n{text}"
        );
    }
}

#[test]
fn the_longest_user_timeout_fits_100_columns() {
    let text = explain(&[
        "explain",
        "idle=1,interval=1,count=1,user-timeout=2147483647ms",
    ]);
    assert_fits(&text);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(
            "ETIMEDOUT 596h31m24.051s after the first unanswered send: a tail-loss probe, then \
             17903 retransmissions"
        ),
        "{text}"
    );
}

#[test]
fn the_middlebox_table_keeps_its_columns() {
    // idle 2h4m outlasts the RFC 5382 floor, the longest name in docs/middleboxes.tsv.
    let text = explain(&["explain", "idle=7440"]);
    assert_fits(&text);
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("the connection before probe 1"))
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with("Behind any of them"))
        .collect();
    assert!(
        rows.iter().any(|r| r.contains("RFC 5382 NAT")),
        "no RFC 5382 row: {text}"
    );
    // Every row's time ends in the same column: the last non-blank before the id.
    let ends: Vec<usize> = rows
        .iter()
        .map(|r| r[..r.trim_end().rfind("  ").unwrap()].trim_end().len())
        .collect();
    assert!(ends.windows(2).all(|w| w[0] == w[1]), "{rows:#?}");
}

#[test]
fn the_probe_counter_wraps_after_256_probes() {
    // The run at 257 s comes after 256 probes: icsk_probes_out reads 0, probe 257 goes out,
    // and the reset waits for the run at 258 s.
    let text = explain(&["explain", "idle=1,interval=1,user-timeout=257s"]);
    assert_fits(&text);
    assert!(text.contains("4m17s  probe 257: no answer"), "{text}");
    assert!(text.contains("Time to detect: 4m18s"), "{text}");
    assert!(text.contains("wrapped to 0 after 256 probes"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&explain(&[
        "explain",
        "--json",
        "idle=1,interval=1,user-timeout=257s",
    ]))
    .unwrap();
    assert_eq!(v["silent_peer"]["probes"], 257);
    assert_eq!(v["silent_peer"]["reset_ms"], 258_000);
    assert_eq!(v["silent_peer"]["counter_wrapped"], true);
}

#[test]
fn the_namespace_rto_floor_sets_the_retransmission_schedule() {
    let ns = TempNetns::new();
    if ns
        .exec(&["test", "-e", "/proc/sys/net/ipv4/tcp_rto_min_us"])
        .status
        .code()
        != Some(0)
    {
        panic!("this kernel has no net.ipv4.tcp_rto_min_us (Linux 6.11 and later)");
    }
    let out = ns.exec(&[
        "sh",
        "-c",
        "echo 5 > /proc/sys/net/ipv4/tcp_retries2 && echo 1000 > /proc/sys/net/ipv4/tcp_rto_min_us",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = explain(&["explain", "--netns", ns.name(), "idle=5"]);
    assert_fits(&text);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // Probe at the 4 ms floor, first retransmission 8 ms later, the limit tcp_model_timeout(5)
    // = 12.6 s from TCP_RTO_MIN: first passed by the run at 16.38 s (measured: 17.088 s, the
    // timers a little late).
    assert!(flat.contains("ETIMEDOUT 16.38s after"), "{text}");
    assert!(flat.contains("modelled as 12.6s"), "{text}");
    assert!(
        flat.contains("(8ms RTO, from net.ipv4.tcp_rto_min_us = 1000)"),
        "{text}"
    );
    // A fresh namespace keeps the kernel's floor.
    let fresh = TempNetns::new();
    let text = explain(&["explain", "--netns", fresh.name(), "idle=5"]);
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("(204ms RTO, from net.ipv4.tcp_rto_min_us = 200000)"),
        "{text}"
    );
}
