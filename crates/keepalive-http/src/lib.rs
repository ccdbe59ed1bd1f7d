//! HTTP keep-alive, measured: does a server keep connections open (HTTP/1.1 persistence), what
//! do its `Connection` and `Keep-Alive` headers promise, how long does it really let an idle
//! connection live (from the end of the last response to its FIN or RST), and how many requests
//! does it serve on one connection.
//!
//! Two connections are used: one waits, idle, for the server to close it (no bisecting with new
//! connections, so an idle timeout of T costs about T of wall time); the other sends requests
//! one after another until the server closes it or the limit is reached.
//!
//! Seed 001 separates this from TCP keepalive: HTTP keep-alive reuses a connection for many
//! requests; TCP keepalive probes an idle one. A client pool that keeps a connection longer than
//! the server (or a load balancer in front of it) does gets ECONNRESET, "socket hang up" or a
//! 502 on its next request.

mod conn;
mod response;
mod url;

pub use url::Url;

use conn::Conn;
use response::Response;
use std::time::{Duration, Instant};

/// Response headers larger than this are refused.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS with {host}: {message}")]
    Tls { host: String, message: String },
    #[error("{0}")]
    Protocol(String),
    #[error("the response did not end within {0:?}")]
    Unfinished(Duration),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// What to measure.
pub struct Options {
    pub url: Url,
    /// The longest wait for anything: a response, or the server closing an idle connection.
    pub max_wait: Duration,
    /// Stop counting requests on one connection at this many.
    pub requests: u32,
    /// Accept any TLS certificate (self-signed test servers).
    pub insecure: bool,
    /// Called while waiting for the idle close: (seconds so far, seconds at most).
    pub progress: Option<Box<dyn Fn(f64, f64)>>,
}

/// How the idle connection ended.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Idle {
    /// The server closed it: FIN (a clean close) or RST.
    Closed { after_s: f64, reset: bool },
    /// Still open when the wait ran out.
    NotClosed { waited_s: f64 },
    /// Not measured: the server does not keep connections open.
    NotPersistent,
}

/// Why the request count stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountEnd {
    /// A response said `Connection: close`.
    ConnectionClose,
    /// The server closed the connection without saying so.
    ServerClosed,
    /// `--requests` was reached with the connection still open.
    Limit,
}

/// Everything measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub url: String,
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The server keeps the connection open after a response.
    pub persistent: bool,
    /// The `Connection` header of the first response.
    pub connection_header: Option<String>,
    /// The `Keep-Alive` header of the first response.
    pub keep_alive_header: Option<String>,
    /// `timeout=` from `Keep-Alive`, seconds.
    pub advertised_timeout_s: Option<u64>,
    /// `max=` from `Keep-Alive`.
    pub advertised_max: Option<u64>,
    pub idle: Idle,
    /// Requests answered on one connection.
    pub requests_served: u32,
    pub requests_ended_by: CountEnd,
    /// Connections opened for the whole measurement.
    pub connections_used: u32,
    /// Where what the server says and what it does differ.
    pub disagreements: Vec<String>,
}

impl Report {
    /// The idle timeout measured, in seconds.
    pub fn idle_timeout_s(&self) -> Option<f64> {
        match self.idle {
            Idle::Closed { after_s, .. } => Some(after_s),
            _ => None,
        }
    }

    /// The longest idle time a client pool should keep a connection: comfortably below the
    /// server's real idle timeout, so the pool never reuses a connection the server is closing.
    pub fn pool_idle_timeout_s(&self) -> Option<f64> {
        self.idle_timeout_s()
            .map(|t| (t - (t * 0.1).max(1.0)).max(0.0))
    }
}

/// What goes wrong when this server sits behind a load balancer or NAT that forgets idle
/// connections after `idle_timeout_s`: if the server gives up on an idle connection first, the
/// middlebox sends a request down a connection the server is closing.
pub fn behind_warning(report: &Report, name: &str, idle_timeout_s: u64) -> Option<String> {
    match report.idle {
        Idle::Closed { after_s, .. } if after_s <= idle_timeout_s as f64 => Some(format!(
            "the server closes idle connections after {after_s:.1}s, not later than {name} ({idle_timeout_s}s): \
             the load balancer will send a request down a connection the server is closing (502s, resets); \
             set the server's idle timeout above {idle_timeout_s}s"
        )),
        Idle::NotPersistent => Some(format!(
            "the server closes every connection: {name} opens a new one per request"
        )),
        _ => None,
    }
}

/// Measures `options.url`.
pub fn inspect(options: &Options) -> Result<Report, HttpError> {
    let url = &options.url;
    let mut connections = 0u32;

    // Connection 1: one request, then wait idle for the server to close.
    let mut conn = Conn::open(url, options.insecure, options.max_wait)?;
    connections += 1;
    let first = exchange(&mut conn, url, options.max_wait)?;
    let persistent = first.keeps_open() && !first.closed_after;
    let (advertised_timeout_s, advertised_max) = first.keep_alive_params();
    let idle = if persistent {
        wait_for_close(&mut conn, options)?
    } else {
        Idle::NotPersistent
    };
    drop(conn);

    // Connection 2: requests until the server stops.
    let (requests_served, requests_ended_by) = if persistent {
        let mut conn = Conn::open(url, options.insecure, options.max_wait)?;
        connections += 1;
        count_requests(&mut conn, url, options)?
    } else {
        (
            1,
            if first.says_close() {
                CountEnd::ConnectionClose
            } else {
                CountEnd::ServerClosed
            },
        )
    };

    let mut disagreements = Vec::new();
    if let (Some(advertised), Idle::Closed { after_s, .. }) = (advertised_timeout_s, idle)
        && (after_s - advertised as f64).abs() > 1.0
    {
        disagreements.push(format!(
            "Keep-Alive says timeout={advertised}, but the server closed the idle connection after {after_s:.2}s"
        ));
    }
    if let Some(max) = advertised_max
        && requests_ended_by != CountEnd::Limit
        && u64::from(requests_served) != max
    {
        disagreements.push(format!("Keep-Alive says max={max}, but the server served {requests_served} requests on one connection"));
    }
    if first
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive"))
        && !persistent
    {
        disagreements.push(
            "the response says Connection: keep-alive, but the server closed the connection".into(),
        );
    }
    if advertised_timeout_s.is_some() && matches!(idle, Idle::NotClosed { .. }) {
        disagreements.push(format!(
            "Keep-Alive says timeout={}, but the server kept the idle connection past the wait",
            advertised_timeout_s.unwrap_or(0)
        ));
    }

    Ok(Report {
        url: url.to_string(),
        status: first.status,
        version: format!("HTTP/1.{}", first.version),
        persistent,
        connection_header: first.header("connection").map(str::to_owned),
        keep_alive_header: first.header("keep-alive").map(str::to_owned),
        advertised_timeout_s,
        advertised_max,
        idle,
        requests_served,
        requests_ended_by,
        connections_used: connections,
        disagreements,
    })
}

fn exchange(conn: &mut Conn, url: &Url, max_wait: Duration) -> Result<Response, HttpError> {
    conn.send_request(url)?;
    response::read(conn, max_wait)
}

/// Waits on an idle connection until the server closes it, or `max_wait` runs out.
fn wait_for_close(conn: &mut Conn, options: &Options) -> Result<Idle, HttpError> {
    let since = conn.last_byte_at;
    let deadline = since + options.max_wait;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Idle::NotClosed {
                waited_s: (now - since).as_secs_f64(),
            });
        }
        if let Some(p) = &options.progress {
            p((now - since).as_secs_f64(), options.max_wait.as_secs_f64());
        }
        let slice = (deadline - now).min(Duration::from_millis(250));
        match conn.wait_readable(slice) {
            conn::Wait::Quiet => continue,
            conn::Wait::Data => {
                return Err(HttpError::Protocol(
                    "the server sent bytes on an idle connection, with no request".into(),
                ));
            }
            conn::Wait::Closed { reset } => {
                return Ok(Idle::Closed {
                    after_s: (Instant::now() - since).as_secs_f64(),
                    reset,
                });
            }
        }
    }
}

fn count_requests(
    conn: &mut Conn,
    url: &Url,
    options: &Options,
) -> Result<(u32, CountEnd), HttpError> {
    let mut served = 0u32;
    while served < options.requests {
        if conn.send_request(url).is_err() {
            return Ok((served, CountEnd::ServerClosed));
        }
        match response::read(conn, options.max_wait) {
            Ok(r) => {
                served += 1;
                if r.says_close() {
                    return Ok((served, CountEnd::ConnectionClose));
                }
                if r.closed_after {
                    return Ok((served, CountEnd::ServerClosed));
                }
            }
            Err(HttpError::Protocol(m))
                if m.starts_with("the server closed the connection before") =>
            {
                return Ok((served, CountEnd::ServerClosed));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((served, CountEnd::Limit))
}
