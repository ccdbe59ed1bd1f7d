//! One HTTP/1.1 connection, plain TCP or TLS (rustls), with a bounded buffer of bytes read
//! ahead. Every wait has a deadline.
//!
//! Before each read the socket is set to acknowledge at once (TCP_QUICKACK, which the kernel
//! clears again by itself, so it is set each time: tcp(7)). A server that writes a response's
//! headers and body in two small writes with Nagle's algorithm on (Python's http.server, the
//! JDK's HttpServer) holds the second write until the first is acknowledged, and a delayed ACK
//! (40 ms minimum on Linux, TCP_DELACK_MIN) would put that into every request counted.

use crate::request::{Method, Request};
use crate::tls::{self, Trust};
use crate::{HttpError, Url};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// The most bytes read at once. A body is discarded as it arrives, never held, so the
/// buffer holds at most the headers (response::MAX_HEADER_BYTES) and one read.
const CHUNK: usize = 16 * 1024;

pub struct Conn {
    stream: Stream,
    /// Bytes read and not yet consumed.
    pub buf: Vec<u8>,
    /// When the last byte of the last response arrived.
    pub last_byte_at: Instant,
    request: Vec<u8>,
    /// The request is HEAD: its responses have no body.
    pub head: bool,
}

/// What an idle connection did within a wait.
pub enum Wait {
    Quiet,
    Data,
    Closed { reset: bool },
}

/// The time left until `deadline`, or a timeout error naming what was waited for.
pub fn left(deadline: Instant, what: &str) -> Result<Duration, HttpError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(HttpError::Deadline(what.to_owned()));
    }
    Ok(deadline - now)
}

impl Conn {
    pub fn open(req: &Request, trust: &Trust, deadline: Instant) -> Result<Conn, HttpError> {
        let url = &req.url;
        let shown = req.destination();
        let connect_err = |source| HttpError::Connect {
            addr: shown.clone(),
            source,
        };
        let mut last = std::io::Error::new(ErrorKind::NotFound, "the name has no address");
        let mut tcp = None;
        for a in req.addresses(deadline).map_err(connect_err)? {
            match TcpStream::connect_timeout(&a, left(deadline, "connecting")?) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or_else(|| connect_err(last))?;
        let _ = tcp.set_nodelay(true);
        let stream = if url.tls {
            Stream::Tls(Box::new(handshake(url, tcp, trust, deadline)?))
        } else {
            Stream::Plain(tcp)
        };
        // Built once, from parts each checked when it was parsed (request.rs), so that
        // nothing can add a header.
        Ok(Conn {
            stream,
            buf: Vec::new(),
            last_byte_at: Instant::now(),
            request: req.http1(),
            head: req.method == Method::Head,
        })
    }

    fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }

    pub fn send_request(&mut self, deadline: Instant) -> Result<(), HttpError> {
        let io = |source| HttpError::Io {
            what: "sending the request".into(),
            source,
        };
        self.tcp()
            .set_write_timeout(Some(left(deadline, "sending the request")?))
            .map_err(io)?;
        let request = std::mem::take(&mut self.request);
        let result = match &mut self.stream {
            Stream::Plain(s) => s.write_all(&request),
            Stream::Tls(s) => s.write_all(&request).and_then(|()| s.flush()),
        };
        self.request = request;
        result.map_err(io)
    }

    /// Reads more bytes into `buf`, waiting until `deadline`. `Ok(0)`: the server closed.
    pub fn fill(&mut self, deadline: Instant) -> std::io::Result<usize> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.tcp().set_read_timeout(Some(wait))?;
        let _ = rustix::net::sockopt::set_tcp_quickack(self.tcp(), true);
        let mut chunk = [0u8; CHUNK];
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut chunk)?,
            Stream::Tls(s) => match s.read(&mut chunk) {
                // A close without close_notify is still the server closing.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
                other => other?,
            },
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Whether the server speaks, closes, or stays quiet until `until`.
    pub fn wait_readable(&mut self, until: Instant) -> Wait {
        if !self.buf.is_empty() {
            return Wait::Data;
        }
        match self.fill(until) {
            Ok(0) => Wait::Closed { reset: false },
            Ok(_) => Wait::Data,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Wait::Quiet
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Wait::Closed { reset: true },
            Err(_) => Wait::Closed { reset: false },
        }
    }
}

fn handshake(
    url: &Url,
    tcp: TcpStream,
    trust: &Trust,
    deadline: Instant,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, HttpError> {
    let host = url.server_name();
    let config = tls::config(trust, &[tls::HTTP1])?;
    let conn = rustls::ClientConnection::new(config, tls::server_name(&host)?).map_err(|e| {
        HttpError::Tls(format!(
            "TLS with {host}: {}",
            tls::explain(&e, &host, trust, "HTTP/1.1")
        ))
    })?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // The handshake now, so that certificate problems are reported as such.
    while stream.conn.is_handshaking() {
        stream
            .get_ref()
            .set_read_timeout(Some(left(deadline, "the TLS handshake")?))
            .map_err(|e| HttpError::Tls(e.to_string()))?;
        stream.conn.complete_io(&mut stream.sock).map_err(|e| {
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                HttpError::Deadline("the TLS handshake".into())
            } else {
                HttpError::Tls(format!(
                    "TLS with {host}: {}",
                    tls::explain_io(&e, &host, trust, "HTTP/1.1")
                ))
            }
        })?;
    }
    Ok(stream)
}
