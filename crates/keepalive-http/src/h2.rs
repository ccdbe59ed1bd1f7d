//! HTTP/2 measured with the `h2` crate, on two connections at once as for HTTP/1.1: one counts
//! requests (after a PING, to see whether the server answers one), the other sends one request
//! and waits, idle, for the server to end the connection. A server ends an idle HTTP/2
//! connection with GOAWAY (RFC 9113 section 6.8), then closes it; the idle timeout is the time
//! from the end of the last response to the GOAWAY, or to the close if none came.
//!
//! Over TLS the connection offers only `h2` in ALPN (RFC 9113 section 3.2), so a server that
//! speaks both is measured in each version on connections of its own; in cleartext it starts
//! with the connection preface at once ("prior knowledge", section 3.3).
//!
//! What the `h2` crate does not hand out (the GOAWAY's arrival and code, every SETTINGS value
//! the server sent) is read off the bytes it receives by [`Tap`], which only looks: it reads
//! the nine-byte frame headers (section 4.1) and the payloads of SETTINGS and GOAWAY frames.

use crate::request::Request;
use crate::tls::{self, Trust};
use crate::{Close, CountEnd, Idle, Live, Spread};
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What HTTP/2 did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Http2 {
    /// TLS: the server did not choose `h2` in ALPN.
    NotOffered {
        /// The protocol it chose instead, if any.
        alpn: Option<String>,
    },
    /// The server did not speak HTTP/2 (prior knowledge on a server that does not), or the
    /// connection failed.
    Failed {
        error: String,
    },
    Measured(Measured),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub status: u16,
    /// The SETTINGS the server sent first (RFC 9113 section 6.5.2), by name; a setting it did
    /// not send has its default.
    pub settings: Vec<(String, u32)>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS; `None`: not sent, no limit.
    pub max_concurrent_streams: Option<u32>,
    /// The PING's round trip, ms; `None`: no answer within `ping_waited_s` (5 s, or what
    /// was left of --max-wait).
    pub ping_rtt_ms: Option<f64>,
    pub ping_waited_s: f64,
    /// The idle connection's end; with `--repeat N`, the run the server ended soonest.
    pub idle: Idle,
    /// With `--repeat N`: the N idle connections' timeouts (waited side by side).
    pub idle_spread: Option<Spread>,
    /// Requests answered on one connection.
    pub requests_served: u32,
    pub requests_ended_by: CountEnd,
    /// Seconds the counting took, from the first request sent to the last response read
    /// (the PING's round trip included).
    pub counting_s: f64,
    /// The error code of the GOAWAY that ended the counting connection, if one did.
    pub count_goaway: Option<String>,
}

/// Measures HTTP/2: over TLS (ALPN h2), or cleartext with prior knowledge.
pub fn measure(
    req: &Request,
    trust: &Trust,
    deadline: Instant,
    requests: u32,
    repeat: u32,
    live: &Live,
) -> Http2 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return Http2::Failed {
                error: format!("starting the HTTP/2 client: {e}"),
            };
        }
    };
    runtime.block_on(async {
        let deadline = tokio::time::Instant::from_std(deadline);
        let waits = (0..repeat.max(1))
            .map(|_| wait_idle(req, trust, deadline, live))
            .collect();
        let (idles, counted) = tokio::join!(join_all(waits), async {
            let c = count(req, trust, deadline, requests, live).await;
            live.h2_counting_done.store(true, Ordering::Relaxed);
            c
        });
        let idle = idles
            .into_iter()
            .collect::<Result<Vec<Idle>, Fail>>()
            .map(Spread::of);
        match (idle, counted) {
            (_, Err(Fail::NotOffered(alpn))) | (Err(Fail::NotOffered(alpn)), _) => {
                Http2::NotOffered { alpn }
            }
            (_, Err(Fail::Other(error))) | (Err(Fail::Other(error)), _) => Http2::Failed { error },
            (Ok((idle, idle_spread)), Ok(c)) => Http2::Measured(Measured {
                status: c.status,
                max_concurrent_streams: c
                    .settings
                    .iter()
                    .find(|(id, _)| *id == 0x3)
                    .map(|(_, v)| *v),
                settings: c
                    .settings
                    .iter()
                    .map(|(id, v)| (setting_name(*id), *v))
                    .collect(),
                ping_rtt_ms: c.ping_rtt_ms,
                ping_waited_s: c.ping_waited_s,
                idle,
                idle_spread,
                requests_served: c.served,
                requests_ended_by: c.ended,
                counting_s: c.counting_s,
                count_goaway: c.goaway.map(error_name),
            }),
        }
    })
}

/// Every future run to its end side by side on this task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

enum Fail {
    NotOffered(Option<String>),
    Other(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the tap saw of the server's frames and of the connection's end.
#[derive(Default)]
struct Seen {
    /// The first GOAWAY: when it came, its error code.
    goaway: Option<(Instant, u32)>,
    /// The first SETTINGS frame (not an ACK): (identifier, value) as sent.
    settings: Option<Vec<(u16, u32)>>,
    /// When the server closed the connection; whether with a reset.
    closed: Option<(Instant, bool)>,
    // The frame being read: its header, so far, and what of its payload is left.
    header: Vec<u8>,
    kind: u8,
    flags: u8,
    left: usize,
    payload: Vec<u8>,
}

impl Seen {
    /// Follows the frame layout over bytes from the server (RFC 9113 section 4.1: a 24-bit
    /// length, then type, flags, and a 31-bit stream id).
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left == 0 && self.header.len() < 9 {
                let take = (9 - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header.len() == 9 {
                    let h = &self.header;
                    self.left =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    self.kind = h[3];
                    self.flags = h[4];
                    self.payload.clear();
                    if self.left == 0 {
                        self.frame_done();
                    }
                }
                continue;
            }
            let take = self.left.min(bytes.len());
            // Only SETTINGS (0x4) and GOAWAY (0x7) payloads are kept, and of GOAWAY only the
            // last stream id and error code (its debug data can be long).
            let keep = match self.kind {
                0x4 => take,
                0x7 => take.min(8usize.saturating_sub(self.payload.len())),
                _ => 0,
            };
            self.payload.extend_from_slice(&bytes[..keep]);
            self.left -= take;
            bytes = &bytes[take..];
            if self.left == 0 {
                self.frame_done();
            }
        }
    }

    fn frame_done(&mut self) {
        match self.kind {
            0x4 if self.flags & 0x1 == 0 && self.settings.is_none() => {
                self.settings = Some(
                    self.payload
                        .chunks_exact(6)
                        .map(|c| {
                            (
                                u16::from_be_bytes([c[0], c[1]]),
                                u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                            )
                        })
                        .collect(),
                );
            }
            0x7 if self.goaway.is_none() && self.payload.len() >= 8 => {
                let p = &self.payload;
                self.goaway = Some((Instant::now(), u32::from_be_bytes([p[4], p[5], p[6], p[7]])));
            }
            _ => {}
        }
        self.header.clear();
    }
}

/// The connection as h2 sees it, with every byte read shown to [`Seen`], and the TCP socket
/// set to acknowledge at once before each read (see conn.rs: a server's Nagle waits on our
/// delayed ACK otherwise).
struct Tap {
    inner: Box<dyn Io>,
    tcp: std::os::fd::RawFd,
    seen: Arc<Mutex<Seen>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // SAFETY: the descriptor belongs to the TcpStream inside `inner`, which lives as long
        // as this Tap.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.tcp) };
        let _ = rustix::net::sockopt::set_tcp_quickack(fd, true);
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Ok(mut seen) = self.seen.lock() {
            match &result {
                Poll::Ready(Ok(())) if buf.filled().len() == before => {
                    seen.closed.get_or_insert((Instant::now(), false));
                }
                Poll::Ready(Ok(())) => seen.feed(&buf.filled()[before..]),
                Poll::Ready(Err(e)) => {
                    let reset = e.kind() == std::io::ErrorKind::ConnectionReset;
                    seen.closed.get_or_insert((Instant::now(), reset));
                }
                Poll::Pending => {}
            }
        }
        result
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/2 connection: the request handle (held: h2 ends a connection nobody holds) and
/// what the tap sees.
struct Conn {
    send: h2::client::SendRequest<Bytes>,
    ping: Option<h2::PingPong>,
    seen: Arc<Mutex<Seen>>,
    driver: tokio::task::JoinHandle<Result<(), h2::Error>>,
    request: http::Request<()>,
}

async fn open(req: &Request, trust: &Trust, deadline: tokio::time::Instant) -> Result<Conn, Fail> {
    let url = &req.url;
    let other = |e: String| Fail::Other(e);
    let shown = req.destination();
    let addrs = req
        .addresses(deadline.into_std())
        .map_err(|e| other(format!("connecting to {shown}: {e}")))?;
    let mut last = format!("connecting to {shown}: the name has no address");
    let mut tcp = None;
    for a in addrs {
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last = format!("connecting to {shown}: {e}"),
            Err(_) => return Err(other(format!("connecting to {shown}: --max-wait ran out"))),
        }
    }
    let tcp = tcp.ok_or_else(|| other(last))?;
    let _ = tcp.set_nodelay(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let inner: Box<dyn Io> = if url.tls {
        let host = url.server_name();
        let config = tls::config(trust, &[tls::H2]).map_err(|e| other(e.to_string()))?;
        let name = tls::server_name(&host).map_err(|e| other(e.to_string()))?;
        let stream = tokio::time::timeout_at(
            deadline,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| other("the TLS handshake: --max-wait ran out".into()))?
        .map_err(|e| {
            other(format!(
                "TLS with {host}: {}",
                tls::explain_io(&e, &host, trust, "HTTP/2")
            ))
        })?;
        match stream.get_ref().1.alpn_protocol() {
            Some(tls::H2) => {}
            chosen => {
                return Err(Fail::NotOffered(
                    chosen.map(|p| String::from_utf8_lossy(p).into_owned()),
                ));
            }
        }
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tap = Tap {
        inner,
        tcp: fd,
        seen: seen.clone(),
    };
    let (send, mut connection) = tokio::time::timeout_at(deadline, h2::client::handshake(tap))
        .await
        .map_err(|_| other("the HTTP/2 handshake: --max-wait ran out".into()))?
        .map_err(|e| other(format!("the HTTP/2 handshake: {e}")))?;
    let ping = connection.ping_pong();
    let driver = tokio::spawn(connection);
    let request = req
        .http2()
        .map_err(|e| other(format!("the request: {e}")))?;
    Ok(Conn {
        send,
        ping,
        seen,
        driver,
        request,
    })
}

/// Why a request on an HTTP/2 connection got no response.
enum Stop {
    GoAway,
    /// RST_STREAM from the server, with its error code's name.
    Reset(String),
    Closed,
    Deadline,
    Error(String),
}

impl Conn {
    /// One GET, its body read and let go as it streams: the response's status.
    async fn get(&mut self, deadline: tokio::time::Instant) -> Result<u16, Stop> {
        let stop = |e: h2::Error| {
            if e.is_go_away() {
                Stop::GoAway
            } else if e.is_reset() && e.is_remote() {
                Stop::Reset(e.reason().map_or("?".into(), |r| format!("{r:?}")))
            } else if let Some(words) = e.get_io().and_then(|io| tls::after_handshake(io, "HTTP/2"))
            {
                Stop::Error(format!("TLS: {words}"))
            } else if e.is_io() {
                Stop::Closed
            } else {
                Stop::Error(e.to_string())
            }
        };
        let mut ready = tokio::time::timeout_at(deadline, self.send.clone().ready())
            .await
            .map_err(|_| Stop::Deadline)?
            .map_err(stop)?;
        let mut request = http::Request::new(());
        *request.method_mut() = self.request.method().clone();
        *request.uri_mut() = self.request.uri().clone();
        *request.headers_mut() = self.request.headers().clone();
        let (response, _) = ready.send_request(request, true).map_err(stop)?;
        let response = tokio::time::timeout_at(deadline, response)
            .await
            .map_err(|_| Stop::Deadline)?
            .map_err(stop)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        loop {
            match tokio::time::timeout_at(deadline, body.data()).await {
                Err(_) => return Err(Stop::Deadline),
                Ok(None) => return Ok(status),
                Ok(Some(Err(e))) => return Err(stop(e)),
                Ok(Some(Ok(chunk))) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
            }
        }
    }

    fn goaway(&self) -> Option<(Instant, u32)> {
        self.seen.lock().ok().and_then(|s| s.goaway)
    }

    fn closed(&self) -> Option<(Instant, bool)> {
        self.seen.lock().ok().and_then(|s| s.closed)
    }
}

/// Why the first request got no answer: on a cleartext server that does not speak HTTP/2,
/// the connection preface is answered with an HTTP/1.1 error and a close (h2 reports that
/// as a GOAWAY or the connection's end).
fn stopped(stop: Stop) -> Fail {
    let how = match stop {
        Stop::GoAway => "it ended the connection (GOAWAY)".to_owned(),
        Stop::Reset(code) => format!("it refused the request (RST_STREAM {code})"),
        Stop::Closed => "it closed the connection".to_owned(),
        Stop::Deadline => {
            return Fail::Other("no HTTP/2 response before --max-wait ran out".into());
        }
        Stop::Error(e) => e,
    };
    Fail::Other(format!(
        "the server did not answer the first request in HTTP/2: {how}"
    ))
}

async fn wait_idle(
    req: &Request,
    trust: &Trust,
    deadline: tokio::time::Instant,
    live: &Live,
) -> Result<Idle, Fail> {
    let mut conn = open(req, trust, deadline).await?;
    conn.get(deadline).await.map_err(stopped)?;
    let since = Instant::now();
    live.set_h2_idle_since(since);
    loop {
        if let Some((at, code)) = conn.goaway() {
            return Ok(Idle::Closed {
                after_s: (at - since).as_secs_f64(),
                by: Close::GoAway {
                    code: error_name(code),
                },
            });
        }
        if let Some((at, reset)) = conn.closed() {
            return Ok(Idle::Closed {
                after_s: (at - since).as_secs_f64(),
                by: if reset { Close::Reset } else { Close::Fin },
            });
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Idle::NotClosed {
                waited_s: since.elapsed().as_secs_f64(),
            });
        }
        // The tap records what comes; the driver ending means nothing more will.
        let slice = deadline.min(now + Duration::from_millis(50));
        let _ = tokio::time::timeout_at(slice, &mut conn.driver).await;
        if conn.driver.is_finished() && conn.goaway().is_none() && conn.closed().is_none() {
            return Ok(Idle::Closed {
                after_s: since.elapsed().as_secs_f64(),
                by: Close::Fin,
            });
        }
    }
}

struct Counted {
    status: u16,
    settings: Vec<(u16, u32)>,
    ping_rtt_ms: Option<f64>,
    ping_waited_s: f64,
    served: u32,
    ended: CountEnd,
    counting_s: f64,
    goaway: Option<u32>,
}

async fn count(
    req: &Request,
    trust: &Trust,
    deadline: tokio::time::Instant,
    requests: u32,
    live: &Live,
) -> Result<Counted, Fail> {
    let mut conn = open(req, trust, deadline).await?;
    let start = Instant::now();
    let status = conn.get(deadline).await.map_err(stopped)?;
    let mut last = Instant::now();
    let mut served = 1u32;
    live.h2_requests.store(served, Ordering::Relaxed);
    // The PING goes beside the counting, so that a server that never answers one does not
    // hold the count back; it waits at most 5 s, and never past the deadline.
    let ping = conn.ping.take();
    let pinged = async move {
        let Some(mut ping) = ping else {
            return (None, 0.0);
        };
        let start = Instant::now();
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(5));
        match tokio::time::timeout_at(until, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => (Some(start.elapsed().as_secs_f64() * 1000.0), 0.0),
            _ => (None, start.elapsed().as_secs_f64()),
        }
    };
    let counted = async {
        loop {
            if conn.goaway().is_some() {
                return Ok(CountEnd::GoAway);
            }
            if served >= requests {
                return Ok(CountEnd::Limit);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(CountEnd::MaxWait);
            }
            match conn.get(deadline).await {
                Ok(_) => {
                    served += 1;
                    last = Instant::now();
                    live.h2_requests.store(served, Ordering::Relaxed);
                }
                Err(Stop::GoAway) => return Ok(CountEnd::GoAway),
                // A stream refused once a GOAWAY is on its way ends the count like the GOAWAY.
                Err(Stop::Reset(_)) if conn.goaway().is_some() => return Ok(CountEnd::GoAway),
                Err(Stop::Reset(code)) => {
                    return Err(Fail::Other(format!(
                        "HTTP/2 request {} on one connection: the server refused it \
                         (RST_STREAM {code})",
                        served + 1
                    )));
                }
                Err(Stop::Closed) => {
                    return Ok(if conn.goaway().is_some() {
                        CountEnd::GoAway
                    } else {
                        CountEnd::ServerClosed
                    });
                }
                Err(Stop::Deadline) => return Ok(CountEnd::MaxWait),
                Err(Stop::Error(e)) => {
                    return Err(Fail::Other(format!(
                        "HTTP/2 request {} on one connection: {e}",
                        served + 1
                    )));
                }
            }
        }
    };
    let ((ping_rtt_ms, ping_waited_s), ended) = tokio::join!(pinged, counted);
    let ended = ended?;
    let seen = conn.seen.lock().ok();
    Ok(Counted {
        status,
        settings: seen
            .as_ref()
            .and_then(|s| s.settings.clone())
            .unwrap_or_default(),
        ping_rtt_ms,
        ping_waited_s,
        served,
        ended,
        counting_s: last.duration_since(start).as_secs_f64(),
        goaway: seen.as_ref().and_then(|s| s.goaway).map(|(_, code)| code),
    })
}

/// SETTINGS identifiers (RFC 9113 section 6.5.2; 0x8 from RFC 8441, 0x9 from RFC 9218).
fn setting_name(id: u16) -> String {
    match id {
        0x1 => "HEADER_TABLE_SIZE".into(),
        0x2 => "ENABLE_PUSH".into(),
        0x3 => "MAX_CONCURRENT_STREAMS".into(),
        0x4 => "INITIAL_WINDOW_SIZE".into(),
        0x5 => "MAX_FRAME_SIZE".into(),
        0x6 => "MAX_HEADER_LIST_SIZE".into(),
        0x8 => "ENABLE_CONNECT_PROTOCOL".into(),
        0x9 => "NO_RFC7540_PRIORITIES".into(),
        other => format!("0x{other:x}"),
    }
}

/// Error codes (RFC 9113 section 7).
fn error_name(code: u32) -> String {
    match h2::Reason::from(code) {
        r if code <= 0xd => format!("{r:?}"),
        _ => format!("0x{code:x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tap_follows_frames_split_anywhere() {
        // SETTINGS (MAX_CONCURRENT_STREAMS=128, INITIAL_WINDOW_SIZE=65536), a DATA frame, a
        // SETTINGS ACK, then GOAWAY(last stream 1, NO_ERROR) with debug data.
        let mut bytes = vec![0, 0, 12, 0x4, 0, 0, 0, 0, 0];
        bytes.extend([0, 3, 0, 0, 0, 128, 0, 4, 0, 1, 0, 0]);
        bytes.extend([0, 0, 3, 0x0, 0x1, 0, 0, 0, 1, b'a', b'b', b'c']);
        bytes.extend([0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]);
        bytes.extend([
            0, 0, 12, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, b'i', b'd', b'l', b'e',
        ]);
        for split in 1..bytes.len() {
            let mut seen = Seen::default();
            for piece in bytes.chunks(split) {
                seen.feed(piece);
            }
            assert_eq!(seen.settings, Some(vec![(3, 128), (4, 65536)]), "{split}");
            assert_eq!(seen.goaway.map(|(_, c)| c), Some(0), "{split}");
        }
        assert_eq!(error_name(0), "NO_ERROR");
        assert_eq!(error_name(0xb), "ENHANCE_YOUR_CALM");
        assert_eq!(error_name(0x77), "0x77");
    }
}
