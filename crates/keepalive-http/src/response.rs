//! Reading one HTTP/1.x response: headers parsed by httparse, the body framed by
//! Content-Length, chunked transfer coding, or the connection's end (RFC 9112 section 6.3),
//! and discarded as it streams: memory stays at the read-ahead buffer whatever the body's size.

use crate::HttpError;
use crate::conn::Conn;
use crate::tls;
use std::time::Instant;

/// Header fields in one response, at most: real servers send a few dozen; a site behind
/// several proxies with many cookies, a few hundred.
pub const MAX_HEADER_FIELDS: usize = 512;
/// Bytes of the status line and headers, at most (nginx's and Apache's own defaults for
/// what they accept are 8 to 64 KiB).
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct Response {
    /// Minor version: 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body ran to the connection's end, which closed.
    pub closed_after: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    pub fn says_close(&self) -> bool {
        self.connection_has("close")
    }

    /// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only with `keep-alive`.
    pub fn keeps_open(&self) -> bool {
        if self.version >= 1 {
            !self.says_close()
        } else {
            self.connection_has("keep-alive")
        }
    }

    /// `timeout=` and `max=` of the Keep-Alive header (RFC 2068 section 19.7.1.1, never
    /// standardised further; Apache's `max` is the number of requests it will still take
    /// on the connection after this response).
    pub fn keep_alive_params(&self) -> (Option<u64>, Option<u64>) {
        let Some(v) = self.header("keep-alive") else {
            return (None, None);
        };
        let param = |name: &str| {
            v.split(',').find_map(|p| {
                let (k, val) = p.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| val.trim().trim_matches('"').parse().ok())
                    .flatten()
            })
        };
        (param("timeout"), param("max"))
    }

    /// The body's length from Content-Length: a list of equal values counts as one (RFC 9110
    /// section 8.6); differing values or anything but digits are an error.
    fn content_length(&self) -> Result<Option<u64>, HttpError> {
        let mut length = None;
        for (_, v) in self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            for item in v.split(',').map(str::trim) {
                let n: u64 = item
                    .parse()
                    .ok()
                    .filter(|_| item.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        HttpError::Protocol(format!(
                            "Content-Length '{}' is not a number",
                            v.escape_debug()
                        ))
                    })?;
                match length {
                    Some(l) if l != n => {
                        return Err(HttpError::Protocol(format!(
                            "Content-Length gives two lengths, {l} and {n}"
                        )));
                    }
                    _ => length = Some(n),
                }
            }
        }
        Ok(length)
    }
}

/// Reads more, or says why not.
fn more(conn: &mut Conn, deadline: Instant, started: bool, what: &str) -> Result<usize, HttpError> {
    if Instant::now() >= deadline {
        return Err(HttpError::Deadline(what.to_owned()));
    }
    match conn.fill(deadline) {
        Ok(0) if !started => Err(HttpError::ClosedBeforeAnswer { reset: false }),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(HttpError::Deadline(what.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !started => {
            Err(HttpError::ClosedBeforeAnswer { reset: true })
        }
        Err(source) => Err(match tls::after_handshake(&source, "HTTP/1.1") {
            Some(words) => HttpError::Tls(format!("TLS, reading {what}: {words}")),
            None => HttpError::Io {
                what: format!("reading {what}"),
                source,
            },
        }),
    }
}

/// Reads the status line and headers of one response (1xx included).
fn head(conn: &mut Conn, deadline: Instant) -> Result<Response, HttpError> {
    loop {
        let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADER_FIELDS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&conn.buf) {
            Ok(httparse::Status::Complete(len)) => {
                let response = Response {
                    version: parsed.version.unwrap_or(1),
                    status: parsed.code.unwrap_or(0),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                    closed_after: false,
                };
                conn.buf.drain(..len);
                return Ok(response);
            }
            Ok(httparse::Status::Partial) => {
                if conn.buf.len() >= MAX_HEADER_BYTES {
                    return Err(HttpError::Protocol(format!(
                        "the response's headers are longer than {} KiB, the most keepalive reads",
                        MAX_HEADER_BYTES / 1024
                    )));
                }
                let started = !conn.buf.is_empty();
                if more(conn, deadline, started, "the response's headers")? == 0 {
                    return Err(HttpError::Protocol(
                        "the server closed the connection in the middle of the headers".into(),
                    ));
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::Protocol(format!(
                    "the response has more than {MAX_HEADER_FIELDS} header fields, the most \
                     keepalive reads"
                )));
            }
            // A SETTINGS frame's header (RFC 9113 section 4.1: type 0x4 at byte 3, on
            // stream 0): the server speaks HTTP/2 only, as a cleartext h2c listener does.
            Err(_) if conn.buf.len() >= 9 && conn.buf[3] == 0x4 && conn.buf[5..9] == [0; 4] => {
                return Err(HttpError::Http2Only { advise: true });
            }
            Err(e) => {
                let start: String = String::from_utf8_lossy(&conn.buf[..conn.buf.len().min(40)])
                    .escape_debug()
                    .collect();
                return Err(HttpError::Protocol(format!(
                    "not an HTTP/1.x response ({e}): it starts \"{start}\""
                )));
            }
        }
    }
}

/// Drops `n` bytes of body, reading as needed, holding none of them.
fn discard(conn: &mut Conn, mut n: u64, deadline: Instant, what: &str) -> Result<(), HttpError> {
    loop {
        let here = (conn.buf.len() as u64).min(n);
        conn.buf.drain(..here as usize);
        n -= here;
        if n == 0 {
            return Ok(());
        }
        if more(conn, deadline, true, "the response's body")? == 0 {
            return Err(HttpError::Protocol(format!(
                "the server closed the connection in the middle of {what}"
            )));
        }
    }
}

/// Reads one complete response (skipping 1xx), or fails by `deadline`.
pub fn read(conn: &mut Conn, deadline: Instant) -> Result<Response, HttpError> {
    loop {
        let mut response = head(conn, deadline)?;
        // 101 ends HTTP/1.1 on the connection (RFC 9110 section 15.2.2); keepalive never
        // asks for an upgrade, so a server that sends one cannot be measured.
        if response.status == 101 {
            return Err(HttpError::Protocol(format!(
                "the server switched protocols (101, Upgrade: {}) although keepalive asked for \
                 no upgrade",
                response
                    .header("upgrade")
                    .unwrap_or("(none)")
                    .escape_debug()
            )));
        }
        if (100..200).contains(&response.status) {
            continue;
        }
        let chunked = response
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .any(|(_, v)| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            });
        if response.status == 204 || response.status == 304 || conn.head {
        } else if chunked {
            read_chunked(conn, deadline)?;
        } else if let Some(len) = response.content_length()? {
            discard(conn, len, deadline, "the body")?;
        } else {
            // No framing: the body runs to the end of the connection.
            loop {
                conn.buf.clear();
                if more(conn, deadline, true, "the response's body")? == 0 {
                    break;
                }
            }
            response.closed_after = true;
        }
        conn.last_byte_at = Instant::now();
        return Ok(response);
    }
}

/// A line of a chunked body (size line or trailer), without its CRLF.
fn line(conn: &mut Conn, deadline: Instant) -> Result<String, HttpError> {
    loop {
        if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
            let text = String::from_utf8_lossy(&conn.buf[..i]).into_owned();
            conn.buf.drain(..i + 2);
            return Ok(text);
        }
        if conn.buf.len() >= MAX_HEADER_BYTES {
            return Err(HttpError::Protocol(format!(
                "a chunk-size or trailer line is longer than {} KiB",
                MAX_HEADER_BYTES / 1024
            )));
        }
        if more(conn, deadline, true, "a chunked body")? == 0 {
            return Err(HttpError::Protocol(
                "the server closed the connection in the middle of a chunked body".into(),
            ));
        }
    }
}

fn read_chunked(conn: &mut Conn, deadline: Instant) -> Result<(), HttpError> {
    loop {
        let size_line = line(conn, deadline)?;
        let hex = size_line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(hex, 16).map_err(|_| {
            HttpError::Protocol(format!(
                "bad chunk size '{}' in a chunked body",
                hex.escape_debug()
            ))
        })?;
        if size == 0 {
            // Trailers, up to an empty line.
            while !line(conn, deadline)?.is_empty() {}
            return Ok(());
        }
        discard(conn, size.saturating_add(2), deadline, "a chunk")?;
    }
}
