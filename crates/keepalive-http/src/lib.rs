//! HTTP keep-alive, measured: does a server keep connections open (HTTP/1.1 persistence), what
//! do its `Connection` and `Keep-Alive` headers promise, how long does it really let an idle
//! connection live (from the end of the last response to its FIN, RST, 408 or, in HTTP/2, its
//! GOAWAY), how many requests does it serve on one connection, and over HTTP/2 its SETTINGS
//! and whether it answers PING.
//!
//! Every phase runs at once, on connections of its own (for each version: one waits idle for
//! the server to close it, one counts requests), so an idle timeout of T costs about T of wall
//! time, and one deadline (`max_wait`) bounds the whole run.
//!
//! Seed 001 separates this from TCP keepalive: HTTP keep-alive reuses a connection for many
//! requests; TCP keepalive probes an idle one. A client pool that keeps a connection longer than
//! the server (or a load balancer in front of it) does gets ECONNRESET, "socket hang up" or a
//! 502 on its next request.

mod conn;
mod h1;
mod h2;
mod request;
mod response;
mod tls;
mod url;
pub mod verdict;

pub use crate::h1::Http1;
pub use crate::h2::{Http2, Measured as Http2Measured};
pub use crate::request::{ConnectTo, Header, Method, Request};
pub use crate::response::{MAX_HEADER_BYTES, MAX_HEADER_FIELDS};
pub use crate::tls::Trust;
pub use crate::url::Url;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL given cannot be measured.
    #[error("{0}")]
    Url(String),
    /// An option's value cannot be used (a --cacert file that holds no certificate).
    #[error("{0}")]
    Input(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Protocol(String),
    /// `max_wait` ran out while waiting for this.
    #[error("--max-wait ran out while waiting for {0}")]
    Deadline(String),
    /// The answer to an HTTP/1.1 request was an HTTP/2 SETTINGS frame.
    /// `advise`: say to measure it with --http2 (when HTTP/2 was not measured).
    #[error(
        "the server answered in HTTP/2 (a SETTINGS frame): it speaks only HTTP/2 here{}",
        if *advise { "; measure it with --http2" } else { "" }
    )]
    Http2Only { advise: bool },
    #[error("the server closed the connection before answering{}", if *reset { " (reset)" } else { "" })]
    ClosedBeforeAnswer { reset: bool },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Which HTTP/2 to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2Mode {
    /// Over TLS, a connection offering `h2` in ALPN; in cleartext, none.
    Auto,
    /// In cleartext too, with prior knowledge (RFC 9113 section 3.3).
    PriorKnowledge,
    /// HTTP/1.1 only.
    Off,
}

/// What to measure.
pub struct Options {
    pub request: Request,
    /// Idle connections waited side by side per version, for the timeout's spread (1: one).
    pub repeat: u32,
    /// The whole run ends by then: every response, the idle waits and the counting.
    pub max_wait: Duration,
    /// Stop counting requests on one connection at this many.
    pub requests: u32,
    pub trust: Trust,
    pub http2: Http2Mode,
    /// Called every quarter second while measuring, on the calling thread.
    pub progress: Option<ProgressFn>,
}

/// What shows the progress.
pub type ProgressFn = Box<dyn Fn(&Progress)>;

/// How far the measurement is.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed_s: f64,
    pub max_wait_s: f64,
    /// HTTP/1.1: requests counted so far; the count has ended; seconds the idle connection has
    /// waited (once its response came).
    pub h1_requests: u32,
    pub h1_counting_done: bool,
    pub h1_idle_s: Option<f64>,
    /// The same for HTTP/2, when it is measured.
    pub h2: Option<(u32, bool, Option<f64>)>,
}

/// Counters the measuring threads update and the progress display reads.
#[derive(Default)]
pub(crate) struct Live {
    h1_requests: AtomicU32,
    h1_counting_done: AtomicBool,
    h1_idle_since: Mutex<Option<Instant>>,
    h2_requests: AtomicU32,
    h2_counting_done: AtomicBool,
    h2_idle_since: Mutex<Option<Instant>>,
}

impl Live {
    fn set_h1_idle_since(&self, at: Instant) {
        if let Ok(mut s) = self.h1_idle_since.lock() {
            *s = Some(at);
        }
    }

    fn set_h2_idle_since(&self, at: Instant) {
        if let Ok(mut s) = self.h2_idle_since.lock() {
            *s = Some(at);
        }
    }

    fn snapshot(&self, start: Instant, max_wait: Duration, h2: bool) -> Progress {
        let since = |m: &Mutex<Option<Instant>>| {
            m.lock()
                .ok()
                .and_then(|s| *s)
                .map(|at| at.elapsed().as_secs_f64())
        };
        Progress {
            elapsed_s: start.elapsed().as_secs_f64(),
            max_wait_s: max_wait.as_secs_f64(),
            h1_requests: self.h1_requests.load(Ordering::Relaxed),
            h1_counting_done: self.h1_counting_done.load(Ordering::Relaxed),
            h1_idle_s: since(&self.h1_idle_since),
            h2: h2.then(|| {
                (
                    self.h2_requests.load(Ordering::Relaxed),
                    self.h2_counting_done.load(Ordering::Relaxed),
                    since(&self.h2_idle_since),
                )
            }),
        }
    }
}

/// How the server ended an idle connection.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub enum Close {
    /// A clean close.
    Fin,
    /// A reset.
    Reset,
    /// `408 Request Timeout`, then the close (HTTP/1.1).
    #[serde(rename = "408")]
    RequestTimeout,
    /// GOAWAY with this error code (HTTP/2).
    GoAway { code: String },
}

/// How the idle connection ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Idle {
    /// The server ended it, this long after the last response.
    Closed { after_s: f64, by: Close },
    /// Still open when `max_wait` ran out.
    NotClosed { waited_s: f64 },
    /// Not measured: the server does not keep connections open.
    NotPersistent,
}

/// The idle timeouts of `--repeat` connections waited side by side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Connections waited.
    pub runs: u32,
    /// Of them, the ones the server ended (the others were still open at the end).
    pub closed: u32,
    pub min_s: f64,
    pub median_s: f64,
    pub max_s: f64,
}

impl Spread {
    /// The run to report, and the spread when there was more than one. The run reported is
    /// the one the server ended soonest (the first when none closed): that is the timeout a
    /// client must stay under, and what the advice is built on.
    pub(crate) fn of(mut runs: Vec<Idle>) -> (Idle, Option<Spread>) {
        let n = runs.len() as u32;
        let mut closed: Vec<f64> = runs.iter().filter_map(Idle::timeout_s).collect();
        closed.sort_by(f64::total_cmp);
        let spread = (n > 1 && !closed.is_empty()).then(|| Spread {
            runs: n,
            closed: closed.len() as u32,
            min_s: closed[0],
            median_s: closed[closed.len() / 2],
            max_s: closed[closed.len() - 1],
        });
        let soonest = closed.first().copied();
        let at = runs
            .iter()
            .position(|r| r.timeout_s().is_some() && r.timeout_s() == soonest)
            .unwrap_or(0);
        if runs.is_empty() {
            return (Idle::NotPersistent, None);
        }
        (runs.swap_remove(at), spread)
    }
}

impl Idle {
    /// The idle timeout measured, in seconds.
    pub fn timeout_s(&self) -> Option<f64> {
        match self {
            Idle::Closed { after_s, .. } => Some(*after_s),
            _ => None,
        }
    }
}

/// Why the request count stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountEnd {
    /// A response said `Connection: close`.
    ConnectionClose,
    /// The server closed the connection without saying so.
    ServerClosed,
    /// HTTP/2: the server sent GOAWAY.
    GoAway,
    /// `--requests` was reached with the connection still open.
    Limit,
    /// `max_wait` ran out first.
    MaxWait,
    /// A response could not be read (see `count_error`): the count so far stands.
    BadResponse,
}

/// Everything measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub url: String,
    pub max_wait_s: f64,
    /// `None` when HTTP/1.1 failed and HTTP/2 did not (a server that speaks only HTTP/2, as
    /// gRPC servers do): then `http1_error` says why.
    pub http1: Option<Http1>,
    pub http1_error: Option<String>,
    /// `None` when HTTP/2 was not tried (cleartext without prior knowledge, or turned off).
    pub http2: Option<Http2>,
}

/// Measures `options.url`: HTTP/1.1 always, HTTP/2 as `options.http2` says, side by side.
pub fn inspect(options: &Options) -> Result<Report, HttpError> {
    let req = &options.request;
    let url = &req.url;
    let start = Instant::now();
    let deadline = start + options.max_wait;
    let with_h2 = match options.http2 {
        Http2Mode::Off => false,
        Http2Mode::Auto => url.tls,
        Http2Mode::PriorKnowledge => true,
    };
    // A --cacert that cannot be used is bad input, before any connection.
    if url.tls && !options.trust.insecure {
        tls::config(&options.trust, &[])?;
    }
    let live = Live::default();
    let (trust, requests, repeat) = (&options.trust, options.requests, options.repeat);
    let (http1, http2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| h1::measure(req, trust, deadline, requests, repeat, &live));
        let h2 =
            with_h2.then(|| s.spawn(|| h2::measure(req, trust, deadline, requests, repeat, &live)));
        if let Some(progress) = &options.progress {
            while !h1.is_finished() || h2.as_ref().is_some_and(|h| !h.is_finished()) {
                progress(&live.snapshot(start, options.max_wait, with_h2));
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        let http1 = h1.join().unwrap_or_else(|_| {
            Err(HttpError::Protocol(
                "the HTTP/1.1 measurement failed".into(),
            ))
        });
        let http2 = h2.map(|h| {
            h.join().unwrap_or_else(|_| Http2::Failed {
                error: "the HTTP/2 measurement failed".into(),
            })
        });
        (http1, http2)
    });
    // Advice to measure HTTP/2 is for when it was not measured.
    let http1 = http1.map_err(|e| match e {
        HttpError::Http2Only { .. } if with_h2 => HttpError::Http2Only { advise: false },
        e => e,
    });
    let (http1, http1_error) = match (http1, &http2) {
        (Ok(h1), _) => (Some(h1), None),
        (Err(e), Some(Http2::Measured(_))) => (None, Some(e.to_string())),
        (Err(e), _) => return Err(e),
    };
    Ok(Report {
        url: url.to_string(),
        max_wait_s: options.max_wait.as_secs_f64(),
        http1,
        http1_error,
        http2,
    })
}
