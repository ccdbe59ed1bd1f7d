//! The URL to measure, parsed by the WHATWG URL standard (the `url` crate, as browsers parse):
//! schemes in any case, IPv6 literals, internationalised names in punycode, path and query
//! percent-encoded as they go on the wire, the fragment never sent. Two things the standard
//! does not do are done here: a control character anywhere is refused (the standard silently
//! drops tabs and newlines, which would hide what was typed), and an IPv6 zone id
//! (`[fe80::1%25eth0]`, RFC 6874; `%eth0` too, as curl takes it) is taken out before parsing
//! and kept for connecting.

use crate::HttpError;
use std::fmt;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    host: Host,
    pub port: u16,
    /// Whether the port was given and is not the scheme's default (then the Host header
    /// carries it).
    explicit_port: bool,
    /// Path and query as sent in the request line: starts with `/`, percent-encoded, no byte
    /// below 0x21 and no DEL.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    Ip(IpAddr),
    /// A link-local IPv6 address and its zone: an interface name or number.
    Scoped(std::net::Ipv6Addr, String),
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, HttpError> {
        let bad = |why: &str| {
            HttpError::Url(format!(
                "URL '{}': {why}; expected http://HOST[:PORT]/PATH or https://...",
                text.escape_debug()
            ))
        };
        if let Some((at, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
            return Err(bad(&format!(
                "it holds the control character {} at byte {at}: percent-encode it (%{:02X})",
                c.escape_debug(),
                u32::from(c)
            )));
        }
        let (cleaned, zone) = take_zone(text).map_err(bad)?;
        let parsed = url::Url::parse(&cleaned).map_err(|e| bad(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(bad(&format!("the scheme is {other}, not http or https"))),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad("user names and passwords in URLs are not supported"));
        }
        let host = match (parsed.host(), zone) {
            (Some(url::Host::Ipv6(ip)), Some(zone)) => Host::Scoped(ip, zone),
            (_, Some(_)) => return Err(bad("a zone id (%...) belongs to an IPv6 address")),
            (Some(url::Host::Domain(d)), None) => Host::Name(d.to_owned()),
            (Some(url::Host::Ipv4(ip)), None) => Host::Ip(IpAddr::V4(ip)),
            (Some(url::Host::Ipv6(ip)), None) => Host::Ip(IpAddr::V6(ip)),
            (None, None) => return Err(bad("no host")),
        };
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("no port"))?;
        if port == 0 {
            return Err(bad("the port must be 1..=65535"));
        }
        let target = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
        let target = if target.starts_with('/') {
            target.to_owned()
        } else {
            format!("/{target}")
        };
        // The standard encodes every byte that could end the request line or add a header;
        // this holds it to that.
        if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad(
                "the path holds a byte that cannot go in a request line",
            ));
        }
        Ok(Url {
            tls,
            host,
            port,
            explicit_port: parsed.port().is_some(),
            target,
        })
    }

    /// The name TLS sends and verifies the certificate against: the host name, or the IP
    /// address (without its zone).
    pub fn server_name(&self) -> String {
        match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
            Host::Scoped(ip, _) => ip.to_string(),
        }
    }

    /// `host` or `host:port` as the Host header (and HTTP/2's :authority) want it; an IPv6
    /// address in brackets, without its zone (RFC 6874 section 4: the zone means nothing to
    /// the server).
    pub fn host_header(&self) -> String {
        let host = match &self.host {
            Host::Name(n) => n.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) | Host::Scoped(ip, _) => format!("[{ip}]"),
        };
        if self.explicit_port {
            format!("{host}:{}", self.port)
        } else {
            host
        }
    }

    /// The addresses to try, in the resolver's order.
    pub fn addresses(&self) -> std::io::Result<Vec<SocketAddr>> {
        self.addresses_by(std::time::Instant::now() + std::time::Duration::from_secs(30))
    }

    /// [`Url::addresses`], a name resolved by `deadline` (request.rs, `resolve_by`).
    pub fn addresses_by(&self, deadline: std::time::Instant) -> std::io::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Name(n) => crate::request::resolve_by(n.clone(), self.port, deadline),
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Scoped(ip, zone) => {
                let scope = scope_id(zone)?;
                Ok(vec![SocketAddr::V6(SocketAddrV6::new(
                    *ip, self.port, 0, scope,
                ))])
            }
        }
    }
}

/// Takes the zone id out of a bracketed IPv6 host: the URL without it, and the zone.
fn take_zone(text: &str) -> Result<(String, Option<String>), &'static str> {
    let Some(open) = text.find("://[").map(|i| i + 4) else {
        return Ok((text.to_owned(), None));
    };
    let Some(close) = text[open..].find(']').map(|i| open + i) else {
        return Ok((text.to_owned(), None));
    };
    let inside = &text[open..close];
    let Some((addr, zone)) = inside.split_once('%') else {
        return Ok((text.to_owned(), None));
    };
    let zone = zone.strip_prefix("25").unwrap_or(zone);
    if zone.is_empty()
        || !zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    {
        return Err("the zone id after % must be an interface name or number");
    }
    Ok((
        format!("{}{addr}{}", &text[..open], &text[close..]),
        Some(zone.to_owned()),
    ))
}

/// An interface name or number as a scope id.
fn scope_id(zone: &str) -> std::io::Result<u32> {
    if let Ok(n) = zone.parse::<u32>() {
        return Ok(n);
    }
    let name = std::ffi::CString::new(zone)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated string; if_nametoindex only reads it.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no network interface {zone} for the zone id"),
        )),
        n => Ok(n),
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        match &self.host {
            Host::Scoped(ip, zone) => {
                let port = if self.explicit_port {
                    format!(":{}", self.port)
                } else {
                    String::new()
                };
                write!(f, "{scheme}://[{ip}%25{zone}]{port}{}", self.target)
            }
            _ => write!(f, "{scheme}://{}{}", self.host_header(), self.target),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_the_standard_reads_them() {
        let u = Url::parse("http://127.0.0.1:8080/x?y=1").unwrap();
        assert_eq!(
            (u.tls, u.port, u.target.as_str(), u.host_header().as_str()),
            (false, 8080, "/x?y=1", "127.0.0.1:8080")
        );
        assert_eq!(Url::parse("https://example.test").unwrap().port, 443);
        assert_eq!(
            Url::parse("HTTPS://Example.TEST/").unwrap().host_header(),
            "example.test"
        );
        assert_eq!(Url::parse("http://h:80/").unwrap().host_header(), "h");
        assert_eq!(
            Url::parse("http://[::1]:81").unwrap().host_header(),
            "[::1]:81"
        );
        assert_eq!(Url::parse("http://h?q").unwrap().target, "/?q");
        // The fragment is the client's: never sent, and it does not hide a port.
        let u = Url::parse("http://host:9#frag").unwrap();
        assert_eq!((u.port, u.target.as_str()), (9, "/"));
        assert_eq!(Url::parse("http://h/page#frag").unwrap().target, "/page");
        // Spaces and other bytes a request line cannot carry are percent-encoded.
        assert_eq!(
            Url::parse("http://h/a b\"<>").unwrap().target,
            "/a%20b%22%3C%3E"
        );
        assert_eq!(Url::parse("http://h/é").unwrap().target, "/%C3%A9");
        assert_eq!(
            Url::parse("http://bücher.test/").unwrap().server_name(),
            "xn--bcher-kva.test"
        );
        assert_eq!(u.to_string(), "http://host:9/");
    }

    #[test]
    fn zone_ids_are_kept_for_connecting_and_left_out_of_the_host_header() {
        for text in ["http://[fe80::1%25lo]:8080/x", "http://[fe80::1%lo]:8080/x"] {
            let u = Url::parse(text).unwrap();
            assert_eq!(u.host_header(), "[fe80::1]:8080");
            assert_eq!(u.to_string(), "http://[fe80::1%25lo]:8080/x");
            let a = u.addresses().unwrap();
            assert!(
                matches!(a[..], [SocketAddr::V6(v6)] if v6.scope_id() == 1),
                "{a:?}"
            );
        }
        assert!(
            Url::parse("http://[fe80::1%25nosuch0]/")
                .unwrap()
                .addresses()
                .is_err()
        );
        assert!(Url::parse("http://[fe80::1%25a b]/").is_err());
    }

    #[test]
    fn what_is_refused_says_why() {
        for (bad, why) in [
            ("ftp://x", "the scheme is ftp"),
            ("http://", "empty host"),
            ("http://h:0/", "1..=65535"),
            ("http://h:99999/", "invalid port"),
            ("http://u@h/", "user names"),
            ("x", "relative URL"),
            (
                "http://h/a\r\nX-Injected: 1",
                "control character \\r at byte 10",
            ),
            ("http://h/\ta", "control character \\t"),
            ("http://h/\u{7f}", "control character"),
        ] {
            let e = Url::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(!e.contains('\r') && !e.contains('\n'), "{e}");
        }
    }
}
