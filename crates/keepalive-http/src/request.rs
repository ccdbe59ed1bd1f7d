//! The request keepalive sends, and where it sends it: the URL, the method (GET or HEAD),
//! headers given with `-H` as curl takes them, and `--connect-to HOST:PORT`, which reaches one
//! address (a backend behind DNS or a load balancer) while the Host header and TLS's server
//! name stay the URL's. Every part is checked when it is parsed, so that no input can add a
//! header or break the request line.

use crate::{HttpError, Url};
use std::net::{SocketAddr, ToSocketAddrs};

/// GET, or HEAD (a response to HEAD has no body, whatever its headers say: RFC 9110 section
/// 9.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "HEAD")]
    Head,
}

impl Method {
    pub fn parse(text: &str) -> Result<Method, HttpError> {
        match text.to_ascii_uppercase().as_str() {
            "GET" => Ok(Method::Get),
            "HEAD" => Ok(Method::Head),
            _ => Err(HttpError::Input(format!(
                "--method {}: choose GET or HEAD (a measurement sends no body, and other \
                 methods may change what the server holds)",
                text.escape_debug()
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
        }
    }
}

/// One header field, `Name: value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Headers keepalive writes itself, or that belong to the connection and not the request:
/// given with -H they would contradict what is being measured.
const OWN: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "te",
    "proxy-connection",
    "http2-settings",
];

impl Header {
    /// `Name: value` as curl's `-H` takes it: the name a token (RFC 9110 section 5.1), the
    /// value without control characters but tab (section 5.5), blanks around it dropped.
    pub fn parse(text: &str) -> Result<Header, HttpError> {
        let bad = |why: &str| {
            HttpError::Input(format!(
                "-H '{}': {why}; expected 'Name: value'",
                text.escape_debug()
            ))
        };
        let (name, value) = text.split_once(':').ok_or_else(|| bad("no ':'"))?;
        let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(tchar) {
            return Err(bad("the name must be letters, digits and !#$%&'*+-.^_`|~"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(bad("the value holds a control character"));
        }
        // A Host replaces the URL's: it must be an authority, host[:port], and nothing else.
        if name.eq_ignore_ascii_case("host")
            && url::Url::parse(&format!("http://{value}/"))
                .ok()
                .filter(|u| u.path() == "/" && u.username().is_empty() && u.query().is_none())
                .filter(|_| !value.is_empty() && !value.contains(['/', '?', '#', '@', ' ']))
                .is_none()
        {
            return Err(bad("a Host value is host[:port]"));
        }
        if OWN.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(bad(
                "keepalive sets the connection's own headers itself (Connection, Keep-Alive, \
                 Transfer-Encoding, Content-Length, Upgrade, TE, HTTP2-Settings)",
            ));
        }
        Ok(Header {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// `--connect-to HOST:PORT`: the address to connect to instead of the URL's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    host: String,
    port: u16,
}

impl ConnectTo {
    pub fn parse(text: &str) -> Result<ConnectTo, HttpError> {
        let bad = |why: &str| {
            HttpError::Input(format!(
                "--connect-to {}: {why}; expected HOST:PORT ([ADDR]:PORT for IPv6)",
                text.escape_debug()
            ))
        };
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (h, p) = rest.split_once("]:").ok_or_else(|| bad("no ]:PORT"))?;
                (h, p)
            }
            None => text.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?,
        };
        if host.is_empty() || host.chars().any(|c| c.is_control() || c == ' ') {
            return Err(bad("no host"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("the port must be 1..=65535"))?;
        Ok(ConnectTo {
            host: host.to_owned(),
            port,
        })
    }
}

/// What to send, and where.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: Url,
    pub method: Method,
    pub headers: Vec<Header>,
    pub connect_to: Option<ConnectTo>,
}

impl Request {
    /// A GET of `url`, sent where it points.
    pub fn get(url: Url) -> Request {
        Request {
            url,
            method: Method::Get,
            headers: Vec::new(),
            connect_to: None,
        }
    }

    /// The addresses to try, in the resolver's order, looked up by `deadline`: getaddrinfo
    /// has no timeout of its own (a resolver that does not answer takes its retries' worth), so
    /// it runs on a thread of its own and an answer after the deadline is not waited for.
    pub fn addresses(&self, deadline: std::time::Instant) -> std::io::Result<Vec<SocketAddr>> {
        let (host, port) = match &self.connect_to {
            Some(c) => (c.host.clone(), c.port),
            None => return self.url.addresses_by(deadline),
        };
        resolve_by(host, port, deadline)
    }

    /// Where connections go, for messages.
    pub fn destination(&self) -> String {
        let (host, port) = match &self.connect_to {
            Some(c) => (c.host.clone(), c.port),
            None => (self.url.server_name(), self.url.port),
        };
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// The Host header: the URL's, unless -H gave one.
    fn host(&self) -> String {
        self.headers
            .iter()
            .find(|h| h.is("host"))
            .map_or_else(|| self.url.host_header(), |h| h.value.clone())
    }

    /// The HTTP/1.1 request, bytes on the wire.
    pub fn http1(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method.as_str(),
            self.url.target,
            self.host()
        );
        let given = |name: &str| self.headers.iter().any(|h| h.is(name));
        if !given("user-agent") {
            out.push_str("User-Agent: keepalive-http\r\n");
        }
        if !given("accept") {
            out.push_str("Accept: */*\r\n");
        }
        for h in self.headers.iter().filter(|h| !h.is("host")) {
            out.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        out.push_str("Connection: keep-alive\r\n\r\n");
        out.into_bytes()
    }

    /// The HTTP/2 request: the URL's scheme and path, the Host as :authority, the other
    /// headers in lower case (RFC 9113 section 8.2.1).
    pub fn http2(&self) -> Result<http::Request<()>, String> {
        let scheme = if self.url.tls { "https" } else { "http" };
        let mut builder = http::Request::builder()
            .method(self.method.as_str())
            .uri(format!("{scheme}://{}{}", self.host(), self.url.target));
        if !self.headers.iter().any(|h| h.is("user-agent")) {
            builder = builder.header("user-agent", "keepalive-http");
        }
        for h in self.headers.iter().filter(|h| !h.is("host")) {
            builder = builder.header(h.name.to_ascii_lowercase(), h.value.as_str());
        }
        builder.body(()).map_err(|e| e.to_string())
    }
}

/// `host:port` resolved by `deadline`, or TimedOut.
pub(crate) fn resolve_by(
    host: String,
    port: u16,
    deadline: std::time::Instant,
) -> std::io::Result<Vec<SocketAddr>> {
    // An address needs no lookup, and no thread.
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let found = (host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            let _ = tx.send(found);
        })?;
    let wait = deadline.saturating_duration_since(std::time::Instant::now());
    rx.recv_timeout(wait).unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the name was not resolved before --max-wait ran out",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_as_curl_takes_them_and_nothing_that_breaks_the_request() {
        let h = Header::parse("X-Trace:  abc def ").unwrap();
        assert_eq!((h.name.as_str(), h.value.as_str()), ("X-Trace", "abc def"));
        for (bad, why) in [
            ("X-A", "no ':'"),
            (": v", "the name"),
            ("X A: v", "the name"),
            ("X-A: v\r\nX-B: w", "control character"),
            ("Connection: close", "connection's own headers"),
            ("Host: evil host", "host[:port]"),
            ("Host:", "host[:port]"),
            ("Host: a/b", "host[:port]"),
            (
                "HTTP2-Settings: AAMAAABkAAQAAP__",
                "connection's own headers",
            ),
            ("transfer-encoding: chunked", "connection's own headers"),
        ] {
            let e = Header::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
        }
    }

    #[test]
    fn the_request_holds_the_urls_host_unless_told_and_the_method() {
        let mut r = Request::get(Url::parse("http://example.test:8080/a?b").unwrap());
        r.method = Method::Head;
        r.headers = vec![
            Header::parse("Host: backend.test").unwrap(),
            Header::parse("X-A: 1").unwrap(),
        ];
        r.connect_to = Some(ConnectTo::parse("127.0.0.1:9").unwrap());
        let text = String::from_utf8(r.http1()).unwrap();
        assert!(
            text.starts_with("HEAD /a?b HTTP/1.1\r\nHost: backend.test\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nX-A: 1\r\n") && text.ends_with("\r\n\r\n"),
            "{text}"
        );
        assert_eq!(r.destination(), "127.0.0.1:9");
        let h2 = r.http2().unwrap();
        assert_eq!(h2.method(), "HEAD");
        assert_eq!(h2.uri().authority().unwrap().as_str(), "backend.test");
        assert_eq!(h2.headers()["x-a"], "1");
        assert_eq!(
            ConnectTo::parse("[::1]:443").unwrap().port,
            443,
            "IPv6 in brackets"
        );
        for bad in ["host", "host:0", ":80", "host:x", "[::1]80"] {
            assert!(ConnectTo::parse(bad).is_err(), "{bad}");
        }
        assert!(Method::parse("post").is_err());
        assert_eq!(Method::parse("head").unwrap(), Method::Head);
    }
}
