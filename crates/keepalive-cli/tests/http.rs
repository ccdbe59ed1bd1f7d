//! `keepalive http` against Debian's nginx and h2o, started by the test with their own
//! configuration (plain, TLS with a self-signed certificate, HTTP/2 over TLS and in cleartext),
//! Python's ThreadingHTTPServer, and servers written here that do one thing each.

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
    http_json_env(args, &[])
}

fn http_json_env(args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = Command::new(BIN)
        .arg("http")
        .args(args)
        .arg("--json")
        .envs(env.iter().copied())
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
                "listen 127.0.0.1:{port} ssl http2; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;"
            )
        } else if server_block.contains("#h2c") {
            format!("listen 127.0.0.1:{port} http2;")
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

    fn cert(&self) -> std::path::PathBuf {
        self._dir.path().join("cert.pem")
    }
}

#[test]
fn measures_nginx_idle_timeout_and_requests() {
    let nginx = Nginx::start("keepalive_timeout 3s; keepalive_requests 7;", false);
    let v = http_json(&[&nginx.url("http")]);
    let h1 = &v["http1"];
    assert_eq!(h1["persistent"], true);
    let idle = h1["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 3.0).abs() <= 0.25, "idle timeout measured {idle}s");
    assert_eq!(h1["idle"]["by"]["how"], "fin", "nginx closes with FIN");
    assert_eq!(h1["requests_served"], 7);
    assert_eq!(h1["requests_ended_by"], "connection-close");
    // One connection waited for the close; one counted: no bisecting with new connections.
    assert_eq!(h1["connections_used"], 2);
    assert!(v["http2"].is_null(), "cleartext: no HTTP/2 unless asked");
    assert_eq!(v["pool"][0]["advice"], "below");
    assert!(v["pool"][0]["below_s"].as_f64().unwrap() < idle);
}

#[test]
fn reports_a_keep_alive_header_that_lies() {
    let nginx = Nginx::start("keepalive_timeout 3s 60s;", false);
    let v = http_json(&[&nginx.url("http"), "--requests", "20"]);
    let h1 = &v["http1"];
    assert_eq!(h1["advertised_timeout_s"], 60);
    assert_eq!(h1["keep_alive_header"], "timeout=60");
    let d = h1["disagreements"].as_array().unwrap();
    assert!(
        d.iter().any(|s| s.as_str().unwrap().contains("timeout=60")),
        "{v:#}"
    );
    assert_eq!(h1["requests_ended_by"], "limit");
}

#[test]
fn no_persistence_with_keepalive_timeout_0() {
    let nginx = Nginx::start("keepalive_timeout 0;", false);
    let v = http_json(&[&nginx.url("http")]);
    assert_eq!(v["http1"]["persistent"], false);
    assert_eq!(v["http1"]["connection_header"], "close");
    assert_eq!(v["http1"]["idle"]["result"], "not-persistent");
    let text = String::from_utf8_lossy(&http(&[&nginx.url("http")]).stdout).into_owned();
    assert!(text.contains("persistence: none"), "{text}");
}

/// TLS: a self-signed certificate is refused in words (what to pass), trusted through
/// --cacert or SSL_CERT_FILE as curl does, or taken with --insecure; over TLS HTTP/2 is
/// measured beside HTTP/1.1 through ALPN: nginx's GOAWAY after keepalive_timeout and after
/// keepalive_requests, its SETTINGS and its PING answer.
#[test]
fn https_measures_http1_and_http2_side_by_side() {
    let nginx = Nginx::start("keepalive_timeout 2s; keepalive_requests 5;", true);
    let out = http(&[&nginx.url("https")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("certificate") && err.contains("--cacert FILE") && err.contains("--insecure"),
        "{err}"
    );
    assert!(!err.contains("OtherError"), "{err}");
    let cert = nginx.cert();
    let localhost = nginx.url("https").replace("127.0.0.1", "localhost");
    for v in [
        http_json(&[&nginx.url("https"), "--insecure"]),
        http_json(&[&localhost, "--cacert", cert.to_str().unwrap()]),
        http_json_env(&[&localhost], &[("SSL_CERT_FILE", cert.to_str().unwrap())]),
    ] {
        let idle = v["http1"]["idle"]["after_s"].as_f64().unwrap();
        assert!((idle - 2.0).abs() <= 0.25, "{idle}");
        assert_eq!(v["http1"]["requests_served"], 5);
        let h2 = &v["http2"];
        assert_eq!(h2["result"], "measured", "{v:#}");
        let idle = h2["idle"]["after_s"].as_f64().unwrap();
        assert!((idle - 2.0).abs() <= 0.25, "{idle}");
        assert_eq!(h2["idle"]["by"]["how"], "go-away");
        assert_eq!(h2["idle"]["by"]["code"], "NO_ERROR");
        assert_eq!(h2["requests_served"], 5);
        assert_eq!(h2["requests_ended_by"], "go-away");
        assert_eq!(h2["max_concurrent_streams"], 128);
        assert!(h2["ping_rtt_ms"].as_f64().is_some(), "nginx answers PING");
    }
    let bad = http(&[&localhost, "--cacert", "/nonexistent/ca.pem"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--cacert /nonexistent/ca.pem"));
}

/// h2o keeps an idle HTTP/1.1 connection 5 s and an idle HTTP/2 one 3 s: both measured, side
/// by side, in one run of about 5 s.
#[test]
fn h2o_has_one_idle_timeout_per_version() {
    require_program("h2o", "h2o");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(dir.path().join("index.html"), "hi\n").unwrap();
    let port = testkit::free_port();
    let user = if rustix::process::geteuid().is_root() {
        "user: root\n"
    } else {
        ""
    };
    std::fs::write(
        dir.path().join("h2o.conf"),
        format!(
            "listen:\n  host: 127.0.0.1\n  port: {port}\n  ssl:\n    certificate-file: {d}/cert.pem\n    \
             key-file: {d}/key.pem\n    ocsp-update-interval: 0\n{user}http1-request-timeout: 5\n\
             http2-idle-timeout: 3\nerror-log: {d}/error.log\nhosts:\n  default:\n    paths:\n      \
             /:\n        file.dir: {d}\n"
        ),
    )
    .unwrap();
    let _h2o = Running(
        Command::new("h2o")
            .arg("-c")
            .arg(dir.path().join("h2o.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("h2o to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let v = http_json(&[
        &format!("https://127.0.0.1:{port}/"),
        "--insecure",
        "--max-wait",
        "20s",
    ]);
    let h1 = v["http1"]["idle"]["after_s"].as_f64().unwrap();
    let h2 = v["http2"]["idle"]["after_s"].as_f64().unwrap();
    assert!(
        (h1 - 5.0).abs() <= 0.25 && (h2 - 3.0).abs() <= 0.25,
        "{v:#}"
    );
    assert_eq!(v["http2"]["idle"]["by"]["how"], "go-away");
    let text = String::from_utf8_lossy(
        &http(&[
            &format!("https://127.0.0.1:{port}/"),
            "--insecure",
            "--max-wait",
            "20s",
        ])
        .stdout,
    )
    .into_owned();
    assert!(
        text.contains("HTTP/1.1 200")
            && text.contains("HTTP/2 200")
            && text.contains("GOAWAY NO_ERROR"),
        "{text}"
    );
}

/// Cleartext HTTP/2 with prior knowledge (--http2) on nginx's h2c listener: HTTP/2 measured,
/// HTTP/1.1 said to be absent in words; on a listener that speaks only HTTP/1.1, the other way
/// round.
#[test]
fn cleartext_http2_with_prior_knowledge() {
    let h2c = Nginx::start("#h2c\n keepalive_timeout 2s; keepalive_requests 4;", false);
    let v = http_json(&[&h2c.url("http"), "--http2"]);
    assert!(v["http1"].is_null(), "{v:#}");
    assert!(
        v["http1_error"]
            .as_str()
            .unwrap()
            .contains("speaks only HTTP/2"),
        "{v:#}"
    );
    assert_eq!(v["http2"]["requests_served"], 4);
    let idle = v["http2"]["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 2.0).abs() <= 0.25, "{idle}");
    let h1 = Nginx::start("keepalive_timeout 2s;", false);
    let v = http_json(&[&h1.url("http"), "--http2"]);
    assert_eq!(v["http1"]["persistent"], true);
    assert_eq!(v["http2"]["result"], "failed");
    assert!(
        v["http2"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer the first request in HTTP/2")
    );
}

#[test]
fn behind_a_proxy_warns_when_the_server_gives_up_first() {
    let nginx = Nginx::start("keepalive_timeout 2s;", false);
    let v = http_json(&[&nginx.url("http"), "--behind", "aws-alb", "--requests", "3"]);
    let f = v["findings"].as_array().unwrap();
    assert!(
        f.iter().any(|f| f["level"] == "warning"
            && f["text"]
                .as_str()
                .unwrap()
                .contains("AWS Application Load Balancer")),
        "{v:#}"
    );
    assert_eq!(v["behind"]["idle_timeout_s"], 60);
    assert_eq!(v["behind"]["layer"], "application");
}

/// Behind a layer-4 device whose timeout the run did not reach: inconclusive, and the path
/// gets the keepalive policy that keeps connections through it.
#[test]
fn behind_a_nat_a_short_run_is_inconclusive_and_gets_a_policy() {
    let nginx = Nginx::start("keepalive_timeout 75s;", false);
    let v = http_json(&[
        &nginx.url("http"),
        "--behind",
        "aws-nlb",
        "--max-wait",
        "2s",
    ]);
    let f = v["findings"].as_array().unwrap();
    assert!(f.iter().any(|f| f["level"] == "inconclusive"), "{v:#}");
    let advice = f.iter().find(|f| f["level"] == "advice").unwrap();
    assert_eq!(advice["policy"], "idle=280s,interval=28s,count=3");
    assert!(
        !f.iter()
            .any(|f| f["text"].as_str().unwrap().contains("above 350")),
        "{v:#}"
    );
}

/// A server of a few lines: for each connection, `serve` gets the stream.
fn scripted(serve: fn(std::net::TcpStream)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    port
}

/// Reads one request's head; `None` at the end of the connection.
fn read_request(conn: &mut std::net::TcpStream) -> Option<String> {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The URL as the standard reads it: the fragment never sent, spaces and quotes
/// percent-encoded, a Host header that is the URL's; a control character refused before any
/// connection.
#[test]
fn the_request_line_is_the_urls_and_nothing_else() {
    let port = scripted(|mut c| {
        if let Some(head) = read_request(&mut c) {
            SEEN.lock().unwrap().push(head);
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let v = http_json(&[
        &format!("HTTP://127.0.0.1:{port}/a b\"?q=1 2#frag"),
        "--requests",
        "1",
    ]);
    assert_eq!(
        v["url"],
        format!("http://127.0.0.1:{port}/a%20b%22?q=1%202")
    );
    let seen = SEEN.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for head in seen {
        let mut lines = head.lines();
        assert_eq!(
            lines.next().unwrap(),
            "GET /a%20b%22?q=1%202 HTTP/1.1",
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
        assert!(!head.contains("frag"), "{head}");
    }
    for url in [
        format!("http://127.0.0.1:{port}/a\r\nX-Injected: 1"),
        format!("http://127.0.0.1:{port}/\nx"),
    ] {
        let out = http(&[&url]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("control character"), "{err}");
    }
    let v = http_json(&[&format!("http://127.0.0.1:{port}#frag"), "--requests", "1"]);
    assert_eq!(v["url"], format!("http://127.0.0.1:{port}/"));
}

/// A server that closes after every response without `Connection: close` is not persistent,
/// and gets no pool advice.
#[test]
fn closing_after_each_response_without_saying_so_is_no_persistence() {
    let port = scripted(|mut c| {
        if read_request(&mut c).is_some() {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let v = http_json(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(v["http1"]["persistent"], false, "{v:#}");
    assert_eq!(v["http1"]["idle"]["result"], "not-persistent");
    assert_eq!(v["pool"].as_array().unwrap().len(), 0, "{v:#}");
    let text =
        String::from_utf8_lossy(&http(&[&format!("http://127.0.0.1:{port}/")]).stdout).into_owned();
    assert!(
        text.contains("persistence: none") && text.contains("without saying so"),
        "{text}"
    );
}

/// A half-second idle timeout leaves no margin for a pool: the advice says so instead of
/// "less than 0.0s".
#[test]
fn a_short_timeout_gets_no_pool_number_below_the_floor() {
    let nginx = Nginx::start("keepalive_timeout 500ms;", false);
    let v = http_json(&[&nginx.url("http")]);
    assert_eq!(v["pool"][0]["advice"], "too-short", "{v:#}");
    let text = String::from_utf8_lossy(&http(&[&nginx.url("http")]).stdout).into_owned();
    assert!(
        text.contains("leaves no safe margin") && !text.contains("less than 0"),
        "{text}"
    );
}

/// Apache's `Keep-Alive: max=N` counts the requests left after this one: a server that says
/// max=7 and serves 8 agrees with itself.
#[test]
fn keep_alive_max_counts_the_requests_left() {
    let port = scripted(|mut c| {
        for left in (0..8).rev() {
            if read_request(&mut c).is_none() {
                return;
            }
            let close = if left == 0 {
                "Connection: close\r\n"
            } else {
                ""
            };
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5, max={left}\r\n{close}\r\nok"
            );
            let _ = c.write_all(reply.as_bytes());
        }
    });
    let v = http_json(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "2s"]);
    assert_eq!(v["http1"]["advertised_max"], 7);
    assert_eq!(v["http1"]["requests_served"], 8);
    assert!(
        !v["http1"]["disagreements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("max=")),
        "{v:#}"
    );
}

/// A `408 Request Timeout` on the idle connection before the close is the idle timeout, not
/// an error.
#[test]
fn a_408_before_the_close_is_the_idle_timeout() {
    let port = scripted(|mut c| {
        if read_request(&mut c).is_none() {
            return;
        }
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            // Another request (the counting connection): answer, then close.
            Ok(n) if n > 0 => {
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
            _ => {
                let _ = c.write_all(
                    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    let v = http_json(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "5s"]);
    assert_eq!(v["http1"]["idle"]["by"]["how"], "408", "{v:#}");
    let after = v["http1"]["idle"]["after_s"].as_f64().unwrap();
    assert!((after - 1.0).abs() <= 0.25, "{after}");
}

/// Python's ThreadingHTTPServer on a loopback port, answering every GET with "ok"; with
/// `timeout`, its handler's socket timeout (seconds), which closes an idle connection.
fn python_server(timeout: Option<u32>) -> (Running, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let script = dir.path().join("server.py");
    let timeout = timeout.map_or(String::new(), |t| format!("    timeout = {t}\n"));
    std::fs::write(
        &script,
        format!(
            "import http.server, sys\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   protocol_version = 'HTTP/1.1'\n\
             {timeout}\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
        ),
    )
    .unwrap();
    let py = Running(
        Command::new(testkit::python())
            .arg(&script)
            .arg(port.to_string())
            .spawn()
            .unwrap(),
    );
    wait_for("python to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (py, port, dir)
}

/// Python's ThreadingHTTPServer writes headers and body in two writes with Nagle on: 1000
/// requests on one connection still fit in a 2-second run (no delayed ACK in each).
#[test]
fn counting_does_not_wait_on_delayed_acks() {
    let (_py, port, _dir) = python_server(None);
    let v = http_json(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "2s"]);
    assert_eq!(v["http1"]["requests_served"], 1000, "{v:#}");
    assert_eq!(v["http1"]["requests_ended_by"], "limit");
    assert_eq!(v["http1"]["idle"]["result"], "not-closed");
}

/// A 2 GiB body is read and let go as it streams: the measuring process stays under 32 MiB.
#[test]
fn a_2_gib_body_is_discarded_as_it_streams() {
    let port = scripted(|mut c| {
        while read_request(&mut c).is_some() {
            let len: u64 = 2 << 30;
            if c.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
                .is_err()
            {
                return;
            }
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..(len >> 20) {
                if c.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
    });
    let child = Command::new(BIN)
        .args([
            "http",
            &format!("http://127.0.0.1:{port}/"),
            "--requests",
            "1",
        ])
        .args(["--max-wait", "60s", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let peak = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            } else {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["http1"]["status"], 200, "{v:#}");
    let peak_kb = peak.join().unwrap();
    assert!(peak_kb > 0 && peak_kb < 32 * 1024, "peak RSS {peak_kb} kB");
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
    let many = |n: usize| {
        let mut r = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..n {
            r.extend(format!("X-H{i}: v\r\n").into_bytes());
        }
        r.extend(b"Content-Length: 0\r\n\r\n");
        r
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            "not an HTTP/1.x response",
        ),
        (
            [
                b"HTTP/1.1 200 OK\r\n".to_vec(),
                b"X-Filler: ".to_vec(),
                vec![b'a'; 300_000],
            ]
            .concat(),
            "longer than 256 KiB",
        ),
        (many(600), "more than 512 header fields"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial".to_vec(),
            "--max-wait ran out",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            "--max-wait ran out",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n".to_vec(),
            "Content-Length 'zz'",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok".to_vec(),
            "two lengths, 2 and 3",
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
    // What real servers send is read: 150 header fields, a Content-Length list of one value.
    for reply in [
        many(150),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok".to_vec(),
    ] {
        let port = hostile(reply, Duration::from_secs(2));
        let out = http(&[
            &format!("http://127.0.0.1:{port}/"),
            "--max-wait",
            "1s",
            "--requests",
            "1",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
    assert_eq!(v["http1"]["idle"]["result"], "not-closed");
    let waited = v["http1"]["idle"]["waited_s"].as_f64().unwrap();
    assert!((2.0..3.0).contains(&waited), "{waited}");
    assert!(
        v["http1"]["disagreements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("timeout=1"))
    );
}

#[test]
fn bad_input_is_one_line_exit_2() {
    for (args, needle) in [
        (vec!["ftp://x/"], "the scheme is ftp, not http or https"),
        (vec!["http://h:0/"], "port"),
        (vec!["http://u:p@h/"], "user names"),
        (
            vec!["http://127.0.0.1:1/", "--max-wait", "soon"],
            "--max-wait soon",
        ),
        (vec!["http://127.0.0.1:1/", "--behind", "my-lb"], "choose"),
        (
            vec!["http://127.0.0.1:1/", "--requests", "0"],
            "--requests 0",
        ),
        (
            vec!["http://127.0.0.1:1/", "--http1", "--http2"],
            "cannot be used with",
        ),
    ] {
        let out = http(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Runs `keepalive http` with a bound of its own: a hang is a failure, not a stuck test.
fn bounded_http(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("http")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("keepalive http {args:?} did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A directory any user can read, for servers that drop to nobody.
fn public_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Apache with MaxKeepAliveRequests 8: its first response says `max=8` (requests left after
/// it), it serves 9, and the report agrees with it.
#[test]
fn apache_max_and_timeout() {
    require_program("apache2", "apache2");
    let dir = public_dir();
    let d = dir.path().display();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "hi\n").unwrap();
    let port = testkit::free_port();
    let modules = "/usr/lib/apache2/modules";
    std::fs::write(
        dir.path().join("httpd.conf"),
        format!(
            "LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
             LoadModule authz_core_module {modules}/mod_authz_core.so\n\
             ServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\n\
             ErrorLog {d}/error.log\nDocumentRoot {d}/www\nUser nobody\nGroup nogroup\n\
             KeepAlive On\nMaxKeepAliveRequests 8\nKeepAliveTimeout 2\n\
             <Directory {d}/www>\n  Require all granted\n</Directory>\n"
        ),
    )
    .unwrap();
    let _apache = Running(
        Command::new("apache2")
            .arg("-f")
            .arg(dir.path().join("httpd.conf"))
            // One process (no forked workers that would outlive a killed parent).
            .arg("-X")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("apache to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let v = http_json(&[
        &format!("http://127.0.0.1:{port}/index.html"),
        "--max-wait",
        "10s",
    ]);
    let h1 = &v["http1"];
    assert_eq!(h1["advertised_max"], 8, "{v:#}");
    assert_eq!(h1["requests_served"], 9);
    assert_eq!(h1["requests_ended_by"], "connection-close");
    assert_eq!(h1["disagreements"], serde_json::json!([]), "{v:#}");
    let idle = h1["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 2.0).abs() <= 0.25, "{idle}");
}

/// Node's keepAliveTimeout of 3 s: its Keep-Alive header says timeout=3, and it closes the
/// idle connection a second later: Node arms the socket's timer with keepAliveTimeout plus
/// `server.keepAliveTimeoutBuffer` (1000 ms by default), so that a client trusting the header
/// never races the close.
#[test]
fn node_keep_alive_timeout() {
    require_program("node", "nodejs");
    let port = testkit::free_port();
    let code = format!(
        "const s = require('http').createServer((q, r) => r.end('ok'));\
         s.keepAliveTimeout = 3000; s.listen({port}, '127.0.0.1');"
    );
    let _node = Running(Command::new("node").args(["-e", &code]).spawn().unwrap());
    wait_for("node to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let v = http_json(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "10s"]);
    let h1 = &v["http1"];
    assert_eq!(h1["advertised_timeout_s"], 3, "{v:#}");
    let idle = h1["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 4.0).abs() <= 0.25, "{idle}");
    assert_eq!(h1["requests_ended_by"], "limit");
}

/// haproxy routing by Host to nginx: `--connect-to` reaches it with the URL's Host, and the
/// idle timeout measured is haproxy's `timeout http-keep-alive`; --repeat gives its spread.
#[test]
fn haproxy_by_host_through_connect_to() {
    require_program("haproxy", "haproxy");
    let nginx = Nginx::start("keepalive_timeout 60s;", false);
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    std::fs::write(
        dir.path().join("haproxy.cfg"),
        format!(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
             timeout http-keep-alive 2s\n\
             frontend f\n  bind 127.0.0.1:{port}\n  use_backend b if {{ hdr(host) -i backend.test }}\n  \
             default_backend refuse\n\
             backend b\n  server s1 127.0.0.1:{}\n\
             backend refuse\n  http-request deny deny_status 404\n",
            nginx.port
        ),
    )
    .unwrap();
    let _haproxy = Running(
        Command::new("haproxy")
            .arg("-f")
            .arg(dir.path().join("haproxy.cfg"))
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("haproxy to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let to = format!("127.0.0.1:{port}");
    let v = http_json(&[
        "http://backend.test/",
        "--connect-to",
        &to,
        "--repeat",
        "3",
        "--max-wait",
        "10s",
    ]);
    let h1 = &v["http1"];
    assert_eq!(h1["status"], 200, "routed by the URL's Host: {v:#}");
    let idle = h1["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 2.0).abs() <= 0.25, "{idle}");
    assert_eq!(h1["idle_spread"]["runs"], 3);
    assert_eq!(h1["connections_used"], 4);
    // Another Host, through -H, goes to the other backend.
    let v = http_json(&[
        "http://backend.test/",
        "--connect-to",
        &to,
        "-H",
        "Host: other.test",
        "--requests",
        "1",
        "--max-wait",
        "3s",
    ]);
    assert_eq!(v["http1"]["status"], 404, "{v:#}");
}

/// Python's server with a 2 s socket timeout: 1000 requests and the 2 s timeout, both within
/// a 4 s --max-wait (the run reports what it measured, not that the bound ran out).
#[test]
fn python_with_a_2_second_timeout_is_measured_within_4_seconds() {
    let (_py, port, _dir) = python_server(Some(2));
    let v = http_json(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "4s"]);
    let h1 = &v["http1"];
    assert_eq!(h1["requests_served"], 1000, "{v:#}");
    assert_eq!(h1["requests_ended_by"], "limit");
    let idle = h1["idle"]["after_s"].as_f64().unwrap();
    assert!((idle - 2.0).abs() <= 0.25, "{v:#}");
}

/// Servers that never end a response or trickle it: each run ends by --max-wait with one
/// line (exit 1), whatever they send.
#[test]
fn endless_and_trickling_responses_end_by_the_bound() {
    let endless_chunks = scripted(|mut c| {
        if read_request(&mut c).is_some() {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            while c.write_all(b"400\r\n").is_ok() && c.write_all(&[b'x'; 1026]).is_ok() {}
        }
    });
    let header_flood = scripted(|mut c| {
        if read_request(&mut c).is_some() {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\n");
            while c.write_all(b"X-Flood: aaaaaaaaaaaaaaaa\r\n").is_ok() {}
        }
    });
    let trickle = scripted(|mut c| {
        if read_request(&mut c).is_some() {
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" {
                if c.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
    let bad_chunk = scripted(|mut c| {
        if read_request(&mut c).is_some() {
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    });
    for (port, needle) in [
        (endless_chunks, "--max-wait ran out"),
        (header_flood, "header fields"),
        (trickle, "--max-wait ran out"),
        (bad_chunk, "bad chunk size 'zz'"),
    ] {
        let out = bounded_http(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "2s"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{needle}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected {needle:?}: {err}");
    }
}

/// Request controls: HEAD reads no body (a server that answers HEAD with a Content-Length of
/// a body it does not send is measured, not waited on), -H is sent as given, and what could
/// break the request is refused.
#[test]
fn head_and_headers_as_curl_sends_them() {
    let port = scripted(|mut c| {
        while let Some(head) = read_request(&mut c) {
            SEEN_H.lock().unwrap().push(head.clone());
            let reply = if head.starts_with("HEAD ") {
                "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if c.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    });
    let v = http_json(&[
        &format!("http://127.0.0.1:{port}/"),
        "--method",
        "head",
        "-H",
        "X-Trace: abc",
        "--requests",
        "5",
        "--max-wait",
        "2s",
    ]);
    assert_eq!(v["http1"]["requests_served"], 5, "{v:#}");
    let seen = SEEN_H.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|h| h.starts_with("HEAD / HTTP/1.1\r\n") && h.contains("\r\nX-Trace: abc\r\n")),
        "{seen:?}"
    );
    for (args, needle) in [
        (vec!["-H", "X-A: b\r\nX-Injected: 1"], "control character"),
        (vec!["-H", "Connection: close"], "connection's own headers"),
        (vec!["--method", "DELETE"], "choose GET or HEAD"),
        (vec!["--connect-to", "127.0.0.1"], "expected HOST:PORT"),
        (vec!["--repeat", "0"], "--repeat"),
    ] {
        let mut all = vec!["http://127.0.0.1:1/"];
        all.extend(args.iter().copied());
        let out = http(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

static SEEN_H: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

static CONNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// With --repeat, the run reported (and the advice) is the one the server ended soonest: a
/// pool must stay under the shortest timeout, not the median.
#[test]
fn repeat_reports_the_soonest_close() {
    let port = scripted(|mut c| {
        if read_request(&mut c).is_none() {
            return;
        }
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        // The first connection waited on closes after 1 s, the others after 3 s; the counting
        // one gets its answers.
        let n = CONNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let idle = Duration::from_secs(if n == 0 { 1 } else { 3 });
        // Answers what comes within `idle`, then closes (an idle timeout of its own).
        let mut buf = [0u8; 4096];
        loop {
            let _ = c.set_read_timeout(Some(idle));
            match c.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if c.write_all(ok).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    let v = http_json(&[
        &format!("http://127.0.0.1:{port}/"),
        "--repeat",
        "4",
        "--requests",
        "3",
        "--max-wait",
        "8s",
    ]);
    let h1 = &v["http1"];
    let soonest = h1["idle_spread"]["min_s"].as_f64().unwrap();
    assert_eq!(h1["idle"]["after_s"].as_f64().unwrap(), soonest, "{v:#}");
    assert_eq!(
        v["pool"][0]["timeout_s"].as_f64().unwrap(),
        soonest,
        "{v:#}"
    );
}

/// Keep-Alive's max= as Node sends it (the same maxRequestsPerSocket on every response) is
/// read as requests per connection; a bad response midway ends the count and keeps the rest
/// of the measurement.
#[test]
fn a_constant_max_and_a_broken_response_midway() {
    let port = scripted(|mut c| {
        for i in 0..10 {
            if read_request(&mut c).is_none() {
                return;
            }
            let close = if i == 9 { "Connection: close\r\n" } else { "" };
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=1, max=10\r\n{close}\r\nok"
            );
            if c.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    });
    let v = http_json(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "4s"]);
    assert_eq!(v["http1"]["requests_served"], 10, "{v:#}");
    assert!(
        !v["http1"]["disagreements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("max=")),
        "{v:#}"
    );
    let port = scripted(|mut c| {
        let mut n = 0;
        while read_request(&mut c).is_some() {
            n += 1;
            let reply: &[u8] = if n == 3 {
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if c.write_all(reply).is_err() || n == 3 {
                return;
            }
        }
    });
    let v = http_json(&[&format!("http://127.0.0.1:{port}/"), "--max-wait", "2s"]);
    let h1 = &v["http1"];
    assert_eq!(h1["requests_served"], 2, "{v:#}");
    assert_eq!(h1["requests_ended_by"], "bad-response");
    assert!(
        h1["count_error"].as_str().unwrap().contains("response 3"),
        "{v:#}"
    );
}
