//! `keepalive http` against Debian's nginx, started by the test with its own configuration (plain
//! and TLS with a self-signed certificate), and against hostile servers written here.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use testkit::{Running, require_program, wait_for};

const BIN: &str = env!("CARGO_BIN_EXE_keepalive");

fn http(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("http")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn http_json(args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .arg("http")
        .args(args)
        .arg("--json")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// nginx on a loopback port with `server_block` inside `http { server { listen ...; ... } }`.
struct Nginx {
    _proc: Running,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(server_block: &str, tls: bool) -> Nginx {
        require_program("nginx", "nginx");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = testkit::free_port();
        let listen = if tls {
            require_program("openssl", "openssl");
            let out = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=localhost",
                ])
                .arg("-keyout")
                .arg(dir.path().join("key.pem"))
                .arg("-out")
                .arg(dir.path().join("cert.pem"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            format!(
                "listen 127.0.0.1:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;"
            )
        } else {
            format!("listen 127.0.0.1:{port};")
        };
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log stderr warn;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
             uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
             server {{ {listen} {server_block} location / {{ return 200 \"hello\\n\"; }} }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let proc_ = Running(child);
        wait_for("nginx to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Nginx {
            _proc: proc_,
            _dir: dir,
            port,
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }
}

#[test]
fn measures_nginx_idle_timeout_and_requests() {
    let nginx = Nginx::start("keepalive_timeout 3s; keepalive_requests 7;", false);
    let v = http_json(&[&nginx.url("http")]);
    assert_eq!(v["persistent"], true);
    let idle = v["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 3.0).abs() <= 0.25, "idle timeout measured {idle}s");
    assert_eq!(v["idle"]["reset"], false, "nginx closes with FIN");
    assert_eq!(v["requests_served"], 7);
    assert_eq!(v["requests_ended_by"], "connection-close");
    // One connection waited for the close; one counted: no bisecting with new connections.
    assert_eq!(v["connections_used"], 2);
    assert!(v["pool_idle_timeout_s"].as_f64().unwrap() < idle);
}

#[test]
fn reports_a_keep_alive_header_that_lies() {
    let nginx = Nginx::start("keepalive_timeout 3s 60s;", false);
    let v = http_json(&[&nginx.url("http"), "--requests", "20"]);
    assert_eq!(v["advertised_timeout_s"], 60);
    assert_eq!(v["keep_alive_header"], "timeout=60");
    let d = v["disagreements"].as_array().unwrap();
    assert!(
        d.iter().any(|s| s.as_str().unwrap().contains("timeout=60")),
        "{v:#}"
    );
    assert_eq!(v["requests_ended_by"], "limit");
}

#[test]
fn no_persistence_with_keepalive_timeout_0() {
    let nginx = Nginx::start("keepalive_timeout 0;", false);
    let v = http_json(&[&nginx.url("http")]);
    assert_eq!(v["persistent"], false);
    assert_eq!(v["connection_header"], "close");
    assert_eq!(v["idle"]["result"], "not-persistent");
    let text = String::from_utf8_lossy(&http(&[&nginx.url("http")]).stdout).into_owned();
    assert!(text.contains("persistence: none"), "{text}");
}

#[test]
fn https_with_a_self_signed_certificate() {
    let nginx = Nginx::start("keepalive_timeout 2s; keepalive_requests 5;", true);
    let out = http(&[&nginx.url("https")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("TLS") && err.contains("--insecure"), "{err}");
    let v = http_json(&[&nginx.url("https"), "--insecure"]);
    let idle = v["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 2.0).abs() <= 0.25, "{idle}");
    assert_eq!(v["requests_served"], 5);
}

#[test]
fn behind_a_load_balancer_warns_when_the_server_gives_up_first() {
    let nginx = Nginx::start("keepalive_timeout 2s;", false);
    let v = http_json(&[&nginx.url("http"), "--behind", "aws-alb", "--requests", "3"]);
    let w = v["warnings"].as_array().unwrap();
    assert!(
        w.iter().any(|s| s
            .as_str()
            .unwrap()
            .contains("AWS Application Load Balancer")),
        "{v:#}"
    );
    assert_eq!(v["behind"]["idle_timeout_s"], 60);
}

/// A server that answers every connection with `reply`, then keeps the socket open for `hold`.
fn hostile(reply: Vec<u8>, hold: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(&reply);
                std::thread::sleep(hold);
            });
        }
    });
    port
}

#[test]
fn hostile_servers_get_one_line_errors_not_hangs() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            "not an HTTP/1.x response",
        ),
        (
            [
                b"HTTP/1.1 200 OK\r\n".to_vec(),
                b"X-Filler: ".to_vec(),
                vec![b'a'; 70_000],
            ]
            .concat(),
            "longer than 64 KiB",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial".to_vec(),
            "did not end within",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            "did not end within",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n".to_vec(),
            "Content-Length 'zz'",
        ),
    ];
    for (reply, needle) in cases {
        let port = hostile(reply, Duration::from_secs(4));
        let out = http(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "1s"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{needle}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected {needle:?}: {err}");
    }
}

#[test]
fn a_server_that_never_closes_is_a_result_not_an_error() {
    let port = hostile(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=1\r\n\r\nok".to_vec(),
        Duration::from_secs(6),
    );
    let v = http_json(&[
        &format!("http://127.0.0.1:{port}/"),
        "--max-wait",
        "2s",
        "--requests",
        "1",
    ]);
    assert_eq!(v["idle"]["result"], "not-closed");
    let waited = v["idle"]["waited_s"].as_f64().unwrap();
    assert!((2.0..3.0).contains(&waited), "{waited}");
    assert!(
        v["disagreements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("timeout=1"))
    );
}

#[test]
fn bad_input_is_one_line_exit_2() {
    for (args, needle) in [
        (vec!["ftp://x/"], "scheme must be http or https"),
        (vec!["http://h:0/"], "port"),
        (
            vec!["http://127.0.0.1:1/", "--max-wait", "soon"],
            "--max-wait soon",
        ),
        (vec!["http://127.0.0.1:1/", "--behind", "my-lb"], "choose"),
        (
            vec!["http://127.0.0.1:1/", "--requests", "0"],
            "--requests 0",
        ),
    ] {
        let out = http(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
