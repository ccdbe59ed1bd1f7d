//! HTTP/1.1 measured on two connections at once: one sends requests one after another until
//! the server stops (persistence, requests per connection), the other sends one request and
//! waits, idle, for the server to close it (the idle timeout: from the response's last byte to
//! the server's FIN, RST or `408 Request Timeout`). Side by side, an idle timeout of T costs
//! about T of wall time whatever the count takes, and one deadline bounds both.

use crate::conn::{Conn, Wait};
use crate::request::Request;
use crate::response::{self, Response};
use crate::tls::Trust;
use crate::{Close, CountEnd, HttpError, Idle, Live, Spread};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What HTTP/1.1 did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Http1 {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// The server keeps a connection open after a response: it answered a second request on
    /// the same connection (or, with `--requests 1`, did not say `close`).
    pub persistent: bool,
    /// The `Connection` header of the first response.
    pub connection_header: Option<String>,
    /// The `Keep-Alive` header of the first response.
    pub keep_alive_header: Option<String>,
    /// `timeout=` from `Keep-Alive`, seconds.
    pub advertised_timeout_s: Option<u64>,
    /// `max=` from `Keep-Alive` on the first response: requests the server will still take
    /// on the connection after that one (Apache's meaning).
    pub advertised_max: Option<u64>,
    /// The idle connection's end; with `--repeat N`, the run the server ended soonest.
    pub idle: Idle,
    /// With `--repeat N`: the N idle connections' timeouts (waited side by side).
    pub idle_spread: Option<Spread>,
    /// Requests answered on one connection.
    pub requests_served: u32,
    pub requests_ended_by: CountEnd,
    /// Why a response on the counting connection could not be read, when one could not.
    pub count_error: Option<String>,
    /// Seconds the counting took, from the first request sent to the last response read.
    pub counting_s: f64,
    /// Connections opened: one counted, and one (or `--repeat`) waited.
    pub connections_used: u32,
    /// Where what the server says and what it does differ.
    pub disagreements: Vec<String>,
}

pub fn measure(
    req: &Request,
    trust: &Trust,
    deadline: Instant,
    requests: u32,
    repeat: u32,
    live: &Live,
) -> Result<Http1, HttpError> {
    let (counted, idles) = std::thread::scope(|s| {
        let waits: Vec<_> = (0..repeat.max(1))
            .map(|_| s.spawn(|| wait_idle(req, trust, deadline, live)))
            .collect();
        let counted = count(req, trust, deadline, requests, live);
        live.h1_counting_done.store(true, Ordering::Relaxed);
        let idles: Vec<_> = waits.into_iter().map(|w| w.join()).collect();
        (counted, idles)
    });
    let Counted {
        first,
        second_max,
        served,
        ended,
        error: count_error,
        counting_s,
    } = counted?;
    let mut runs = Vec::new();
    for idle in idles {
        match idle {
            Ok(idle) => runs.push(idle?),
            Err(_) => return Err(HttpError::Protocol("the idle measurement failed".into())),
        }
    }
    let (idle, idle_spread) = Spread::of(runs);
    // A server that closes after every response without saying so answers one request per
    // connection: the second, sent at once, finds the connection closed.
    let closes_silently = requests > 1 && served == 1 && ended == CountEnd::ServerClosed;
    let persistent = first.keeps_open() && !first.closed_after && !closes_silently;
    let (idle, idle_spread) = if persistent {
        (idle, idle_spread)
    } else {
        (Idle::NotPersistent, None)
    };
    let (advertised_timeout_s, advertised_max) = first.keep_alive_params();
    let mut disagreements = Vec::new();
    if let (Some(advertised), Idle::Closed { after_s, .. }) = (advertised_timeout_s, &idle)
        && (after_s - advertised as f64).abs() > 1.0
    {
        disagreements.push(format!(
            "Keep-Alive says timeout={advertised}, but the server closed the idle connection \
             after {after_s:.2}s"
        ));
    }
    // `max=` means two things in practice: Apache counts down the requests left after each
    // response (max=8, then 7, ...: 9 in all), Node repeats its maxRequestsPerSocket on every
    // one (max=10 each time: 10 in all). The second response tells which.
    if let Some(max) = advertised_max
        && persistent
    {
        let counts_down = second_max == Some(max.saturating_sub(1)) && max > 0;
        let (expected, meaning) = if counts_down {
            (max.saturating_add(1), "requests left after the first")
        } else {
            (max, "requests per connection")
        };
        let ended_by_server = matches!(ended, CountEnd::ConnectionClose | CountEnd::ServerClosed);
        if (ended_by_server && u64::from(served) != expected)
            || (!ended_by_server && u64::from(served) > expected)
        {
            disagreements.push(format!(
                "Keep-Alive says max={max} ({meaning}: {expected} in all), but the server \
                 served {served} on one connection"
            ));
        }
    }
    if first.keeps_open() && first.version >= 1 && closes_silently {
        disagreements.push(
            "the server closed the connection after the response without saying \
             Connection: close"
                .into(),
        );
    } else if first
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive"))
        && !persistent
    {
        disagreements.push(
            "the response says Connection: keep-alive, but the server closed the connection".into(),
        );
    }
    if let (Some(advertised), Idle::NotClosed { waited_s }) = (advertised_timeout_s, &idle)
        && *waited_s > advertised as f64 + 1.0
    {
        disagreements.push(format!(
            "Keep-Alive says timeout={advertised}, but the server kept the idle connection \
             for {waited_s:.0}s, until the wait ended"
        ));
    }
    let ended = if persistent {
        ended
    } else if first.says_close() {
        CountEnd::ConnectionClose
    } else {
        CountEnd::ServerClosed
    };
    Ok(Http1 {
        status: first.status,
        version: format!("HTTP/1.{}", first.version),
        persistent,
        connection_header: first.header("connection").map(str::to_owned),
        keep_alive_header: first.header("keep-alive").map(str::to_owned),
        advertised_timeout_s,
        advertised_max,
        idle,
        idle_spread,
        requests_served: served,
        requests_ended_by: ended,
        count_error,
        counting_s,
        connections_used: 1 + repeat.max(1),
        disagreements,
    })
}

/// What the counting connection did.
struct Counted {
    first: Response,
    /// `max=` of the second response's Keep-Alive header.
    second_max: Option<u64>,
    served: u32,
    ended: CountEnd,
    error: Option<String>,
    counting_s: f64,
}

/// Requests one after another on one connection: the first response (which must be read:
/// it is the measurement's subject), how many were served, and why the count stopped; a
/// later response that cannot be read ends the count, and what was counted stands.
fn count(
    req: &Request,
    trust: &Trust,
    deadline: Instant,
    requests: u32,
    live: &Live,
) -> Result<Counted, HttpError> {
    let mut conn = Conn::open(req, trust, deadline)?;
    let start = Instant::now();
    conn.send_request(deadline)?;
    let first = response::read(&mut conn, deadline)?;
    let mut served = 1u32;
    live.h1_requests.store(served, Ordering::Relaxed);
    let mut last = first.clone();
    let mut second_max = None;
    let mut error = None;
    let ended = loop {
        if last.says_close() {
            break CountEnd::ConnectionClose;
        }
        if last.closed_after {
            break CountEnd::ServerClosed;
        }
        if served >= requests {
            break CountEnd::Limit;
        }
        if Instant::now() >= deadline {
            break CountEnd::MaxWait;
        }
        if conn.send_request(deadline).is_err() {
            break CountEnd::ServerClosed;
        }
        match response::read(&mut conn, deadline) {
            Ok(r) => {
                served += 1;
                if served == 2 {
                    second_max = r.keep_alive_params().1;
                }
                live.h1_requests.store(served, Ordering::Relaxed);
                last = r;
            }
            Err(HttpError::ClosedBeforeAnswer { .. }) => break CountEnd::ServerClosed,
            Err(HttpError::Deadline(_)) => break CountEnd::MaxWait,
            Err(e) => {
                error = Some(format!("response {}: {e}", served + 1));
                break CountEnd::BadResponse;
            }
        }
    };
    Ok(Counted {
        first,
        second_max,
        served,
        ended,
        error,
        counting_s: conn.last_byte_at.duration_since(start).as_secs_f64(),
    })
}

/// One request, then silence until the server closes the connection or `deadline`.
fn wait_idle(
    req: &Request,
    trust: &Trust,
    deadline: Instant,
    live: &Live,
) -> Result<Idle, HttpError> {
    let mut conn = Conn::open(req, trust, deadline)?;
    conn.send_request(deadline)?;
    let first = response::read(&mut conn, deadline)?;
    if !first.keeps_open() || first.closed_after {
        return Ok(Idle::NotPersistent);
    }
    let since = conn.last_byte_at;
    live.set_h1_idle_since(since);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Idle::NotClosed {
                waited_s: (now - since).as_secs_f64(),
            });
        }
        let slice = deadline.min(now + Duration::from_millis(250));
        match conn.wait_readable(slice) {
            Wait::Quiet => continue,
            Wait::Closed { reset } => {
                return Ok(Idle::Closed {
                    after_s: (Instant::now() - since).as_secs_f64(),
                    by: if reset { Close::Reset } else { Close::Fin },
                });
            }
            Wait::Data => {
                // Some servers answer an idle connection's timeout with a 408 before they
                // close it (RFC 9110 section 15.5.9): the idle timeout is when it came.
                let at = Instant::now();
                let answer = response::read(&mut conn, deadline.min(at + Duration::from_secs(5)));
                return match answer {
                    Ok(r) if r.status == 408 => Ok(Idle::Closed {
                        after_s: (at - since).as_secs_f64(),
                        by: Close::RequestTimeout,
                    }),
                    Ok(r) => Err(HttpError::Protocol(format!(
                        "the server sent a {} response on an idle connection, with no request",
                        r.status
                    ))),
                    Err(_) => Err(HttpError::Protocol(
                        "the server sent bytes on an idle connection, with no request".into(),
                    )),
                };
            }
        }
    }
}
