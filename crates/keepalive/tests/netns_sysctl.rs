//! Sysctls read and written inside throwaway network namespaces (needs root). The host's own
//! values are checked before and after: they never change.

use keepalive::netns::NetNs;
use keepalive::sysctl::Sysctls;
use keepalive::{Class, Policy, Settings};
use testkit::{TempNetns, host_sysctl};

const KEYS: [&str; 3] = [
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn host() -> Vec<String> {
    KEYS.iter().map(|k| host_sysctl(k)).collect()
}

#[test]
fn a_new_namespace_starts_from_the_kernel_defaults_and_reads_back_the_same() {
    let ns = TempNetns::new();
    let read = Sysctls::netns(NetNs::named(ns.name()).unwrap())
        .read()
        .unwrap();
    assert_eq!(read.settings(), Settings::LINUX_DEFAULT);
    assert_eq!(
        read.retries2.to_string(),
        ns.sysctl("net.ipv4.tcp_retries2")
    );
}

#[test]
fn apply_changes_the_namespace_and_not_the_host() {
    let host_before = host();
    let ns = TempNetns::new();
    let sysctls = Sysctls::netns(NetNs::named(ns.name()).unwrap());
    let change = sysctls
        .apply(&Policy::parse("idle=60,interval=10,count=5").unwrap())
        .unwrap();
    assert_eq!(change.before.settings(), Settings::LINUX_DEFAULT);
    assert_eq!(
        change.after.settings(),
        Settings {
            idle: 60,
            interval: 10,
            count: 5,
            user_timeout_ms: 0
        }
    );
    let seen: Vec<_> = KEYS.iter().map(|k| ns.sysctl(k)).collect();
    assert_eq!(seen, ["60", "10", "5"]);
    assert_eq!(host(), host_before);

    sysctls.reset().unwrap();
    let seen: Vec<_> = KEYS.iter().map(|k| ns.sysctl(k)).collect();
    assert_eq!(seen, ["7200", "75", "9"]);
    assert_eq!(host(), host_before);
}

#[test]
fn a_missing_namespace_is_bad_input() {
    let err = Sysctls::netns(NetNs::named("ka-no-such-namespace").unwrap())
        .read()
        .unwrap_err();
    assert_eq!(err.class(), Class::BadInput);
    assert!(err.to_string().contains("not found"), "{err}");
    let err = NetNs::named("a/b").unwrap_err();
    assert_eq!(err.class(), Class::BadInput);
}

#[test]
fn a_file_that_is_not_a_namespace_is_bad_input() {
    testkit::require_root();
    let err = Sysctls::netns(NetNs::named("/proc/self/ns/uts").unwrap())
        .read()
        .unwrap_err();
    assert_eq!(err.class(), Class::BadInput);
    assert!(err.to_string().contains("not a network namespace"), "{err}");
}
