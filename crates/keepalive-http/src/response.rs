//! Reading one HTTP/1.x response: headers parsed by httparse, the body framed by
//! Content-Length, chunked transfer coding, or the connection's end.

use crate::conn::Conn;
use crate::{HttpError, MAX_HEADER_BYTES};
use std::time::{Duration, Instant};

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
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
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

    /// `timeout=` and `max=` of the Keep-Alive header.
    pub fn keep_alive_params(&self) -> (Option<u64>, Option<u64>) {
        let Some(v) = self.header("keep-alive") else {
            return (None, None);
        };
        let param = |name: &str| {
            v.split(',').find_map(|p| {
                let (k, val) = p.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| val.trim().parse().ok())
                    .flatten()
            })
        };
        (param("timeout"), param("max"))
    }
}

fn more(
    conn: &mut Conn,
    deadline: Instant,
    max_wait: Duration,
    started: bool,
) -> Result<usize, HttpError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(HttpError::Unfinished(max_wait));
    }
    match conn.fill(deadline - now) {
        Ok(0) if !started => Err(HttpError::Protocol(
            "the server closed the connection before answering".into(),
        )),
        Ok(n) => Ok(n),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(HttpError::Unfinished(max_wait))
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !started => Err(
            HttpError::Protocol("the server closed the connection before answering (reset)".into()),
        ),
        Err(source) => Err(HttpError::Io {
            what: format!("reading the response from {}", conn.host()),
            source,
        }),
    }
}

/// Reads one complete response (skipping 1xx), or fails within `max_wait`.
pub fn read(conn: &mut Conn, max_wait: Duration) -> Result<Response, HttpError> {
    let deadline = Instant::now() + max_wait;
    loop {
        let (response, body_start) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 100];
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
                    break (response, len);
                }
                Ok(httparse::Status::Partial) => {
                    if conn.buf.len() > MAX_HEADER_BYTES {
                        return Err(HttpError::Protocol(format!(
                            "the response headers are longer than {} KiB",
                            MAX_HEADER_BYTES / 1024
                        )));
                    }
                    let started = !conn.buf.is_empty();
                    if more(conn, deadline, max_wait, started)? == 0 {
                        return Err(HttpError::Protocol(
                            "the server closed the connection in the middle of the headers".into(),
                        ));
                    }
                }
                Err(e) => {
                    let start: String =
                        String::from_utf8_lossy(&conn.buf[..conn.buf.len().min(40)])
                            .escape_debug()
                            .collect();
                    return Err(HttpError::Protocol(format!(
                        "not an HTTP/1.x response ({e}): it starts \"{start}\""
                    )));
                }
            }
        };
        conn.buf.drain(..body_start);
        if (100..200).contains(&response.status) {
            continue;
        }
        let mut response = response;
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if response.status == 204 || response.status == 304 {
        } else if chunked {
            read_chunked(conn, deadline, max_wait)?;
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.trim().parse().map_err(|_| {
                HttpError::Protocol(format!("Content-Length '{len}' is not a number"))
            })?;
            while conn.buf.len() < len {
                if more(conn, deadline, max_wait, true)? == 0 {
                    return Err(HttpError::Protocol(
                        "the server closed the connection in the middle of the body".into(),
                    ));
                }
            }
            conn.buf.drain(..len);
        } else {
            // No framing: the body runs to the end of the connection.
            while more(conn, deadline, max_wait, true)? > 0 {}
            conn.buf.clear();
            response.closed_after = true;
        }
        conn.last_byte_at = Instant::now();
        return Ok(response);
    }
}

fn read_chunked(conn: &mut Conn, deadline: Instant, max_wait: Duration) -> Result<(), HttpError> {
    let line = |conn: &mut Conn| -> Result<String, HttpError> {
        loop {
            if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                let text = String::from_utf8_lossy(&conn.buf[..i]).into_owned();
                conn.buf.drain(..i + 2);
                return Ok(text);
            }
            if conn.buf.len() > MAX_HEADER_BYTES {
                return Err(HttpError::Protocol(
                    "a chunk-size line is longer than 64 KiB".into(),
                ));
            }
            if more(conn, deadline, max_wait, true)? == 0 {
                return Err(HttpError::Protocol(
                    "the server closed the connection in the middle of a chunked body".into(),
                ));
            }
        }
    };
    loop {
        let size_line = line(conn)?;
        let hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| {
            HttpError::Protocol(format!("bad chunk size '{hex}' in a chunked body"))
        })?;
        if size == 0 {
            // Trailers, up to an empty line.
            while !line(conn)?.is_empty() {}
            return Ok(());
        }
        while conn.buf.len() < size + 2 {
            if more(conn, deadline, max_wait, true)? == 0 {
                return Err(HttpError::Protocol(
                    "the server closed the connection in the middle of a chunk".into(),
                ));
            }
        }
        conn.buf.drain(..size + 2);
    }
}
