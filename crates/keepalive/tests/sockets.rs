//! Policies applied to real sockets and read back, checked from inside (getsockopt) and from
//! outside (iproute2's `ss` shows the keepalive timer the kernel armed).

use keepalive::policy::{Policy, Settings};
use keepalive::socket;
use std::net::{TcpListener, TcpStream, UdpSocket};

fn policy(s: &str) -> Policy {
    Policy::parse(s).unwrap()
}

#[test]
fn a_full_policy_is_what_the_kernel_then_holds() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let before = socket::read(&listener).unwrap();
    assert!(!before.enabled, "a new socket has SO_KEEPALIVE off");
    let got = socket::apply(
        &listener,
        &policy("idle=30s,interval=10s,count=5,user-timeout=90s"),
    )
    .unwrap();
    assert!(got.enabled);
    assert_eq!(
        got.settings,
        Settings {
            idle: 30,
            interval: 10,
            count: 5,
            user_timeout_ms: 90_000
        }
    );
    assert_eq!(socket::read(&listener).unwrap(), got);
}

#[test]
fn keys_left_out_keep_the_values_in_force() {
    let s = TcpListener::bind("127.0.0.1:0").unwrap();
    let before = socket::read(&s).unwrap().settings;
    let got = socket::apply(&s, &policy("count=4")).unwrap().settings;
    assert_eq!(got, Settings { count: 4, ..before });
}

#[test]
fn auto_user_timeout_is_worked_out_from_the_socket_values() {
    let s = TcpListener::bind("127.0.0.1:0").unwrap();
    let got = socket::apply(&s, &policy("idle=20,interval=5,count=3,user-timeout=auto")).unwrap();
    assert_eq!(got.settings.user_timeout_ms, 35_000);
}

#[test]
fn ipv6_sockets_take_the_same_options() {
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        panic!("no IPv6 loopback here: this test needs ::1 (Java's sockets are IPv6)");
    };
    let got = socket::apply(&listener, &policy("idle=7s,interval=3s,count=2")).unwrap();
    assert_eq!(
        (got.enabled, got.settings.idle, got.settings.count),
        (true, 7, 2)
    );
}

#[test]
fn accepted_connections_inherit_the_listeners_policy() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    socket::apply(
        &listener,
        &policy("idle=42s,interval=7s,count=3,user-timeout=5s"),
    )
    .unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let got = socket::read(&accepted).unwrap();
    assert!(got.enabled);
    assert_eq!(
        got.settings,
        Settings {
            idle: 42,
            interval: 7,
            count: 3,
            user_timeout_ms: 5000
        }
    );
}

#[test]
fn ss_sees_the_keepalive_timer_armed_with_the_idle_time() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_server, _) = listener.accept().unwrap();
    let port = client.local_addr().unwrap().port();
    socket::apply(&client, &policy("idle=1000s,interval=10s,count=5")).unwrap();
    let text = testkit::ss_established(&format!("sport = :{port}"));
    // "timer:(keepalive,16min39sec,0)": armed for the idle time, no probe out yet.
    let timer = text
        .split("timer:(")
        .nth(1)
        .unwrap_or_else(|| panic!("no timer in ss output: {text}"));
    assert!(timer.starts_with("keepalive,16min"), "{text}");
    assert!(timer.contains(",0)"), "{text}");
}

#[test]
fn a_socket_that_is_not_tcp_is_refused_and_left_alone() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = socket::apply(&udp, &policy("idle=30")).unwrap_err();
    assert!(
        err.to_string().starts_with("TCP_KEEPIDLE on socket"),
        "{err}"
    );
    let sock = rustix::net::sockopt::socket_keepalive(&udp).unwrap();
    assert!(!sock, "SO_KEEPALIVE must not have been turned on");
}
