//! The one policy grammar: `idle=60s,interval=10s,count=5,user-timeout=90s`.
//!
//! Everything that takes a policy (command-line flags, the LD_PRELOAD shim's environment,
//! files) goes through this module, and nothing here allocates: the shim calls it from a
//! library constructor inside someone else's process.
//!
//! - Fields are `key=value`, separated by commas; spaces around keys and values are ignored.
//! - Durations are a whole number with an optional unit `ms`, `s`, `m` or `h`; a bare number
//!   means seconds.
//! - `count` is a plain number; `user-timeout` also takes `auto`.
//! - The shim (`keepalive run`) also reads `mode=default|force`, `ports=LIST`, `dest=LIST`,
//!   `log=off|syslog|/path` and `inherit=yes|no`; see [`super::injection`]. A list goes on
//!   after a comma until the next `key=`: `ports=5432,6379,dest=198.18.0.0/15`.

use core::fmt;

/// A complete policy written in the grammar, for help texts and error messages.
pub const EXAMPLE: &str = "idle=60s,interval=10s,count=5,user-timeout=90s";

/// `TCP_KEEPIDLE` and `TCP_KEEPINTVL` accept 1..=`MAX_TCP_KEEPIDLE` seconds
/// (`include/net/tcp.h`: `MAX_TCP_KEEPIDLE` and `MAX_TCP_KEEPINTVL` are both 32767).
pub const MAX_KEEPIDLE_SECS: u32 = 32767;
/// See [`MAX_KEEPIDLE_SECS`].
pub const MAX_KEEPINTVL_SECS: u32 = 32767;
/// `TCP_KEEPCNT` accepts 1..=127 (`include/net/tcp.h`: `MAX_TCP_KEEPCNT`).
pub const MAX_KEEPCNT: u32 = 127;
/// `TCP_USER_TIMEOUT` takes a non-negative C `int` of milliseconds (`do_tcp_setsockopt`
/// rejects negative values); 0 switches it off.
pub const MAX_USER_TIMEOUT_MS: u64 = i32::MAX as u64;

/// The keys of the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `idle`: seconds without a received segment before the first probe (`TCP_KEEPIDLE`).
    Idle,
    /// `interval`: seconds between unanswered probes (`TCP_KEEPINTVL`).
    Interval,
    /// `count`: unanswered probes before the connection is reset (`TCP_KEEPCNT`).
    Count,
    /// `user-timeout`: milliseconds a connection may stay unanswered (`TCP_USER_TIMEOUT`).
    UserTimeout,
    /// `mode`: whether the program's own keepalive settings win (`default`) or not (`force`).
    Mode,
    /// `ports`: apply only to sockets whose local (listening) or remote port is listed.
    Ports,
    /// `dest`: apply only to connections to these addresses or networks.
    Dest,
    /// `log`: where the shim reports what it does: `off`, `syslog` or an absolute path.
    Log,
    /// `inherit`: whether the shim stays in the program's children.
    Inherit,
}

impl Key {
    /// Every key, in the order policies are written.
    pub const ALL: [Key; 9] = [
        Key::Idle,
        Key::Interval,
        Key::Count,
        Key::UserTimeout,
        Key::Mode,
        Key::Ports,
        Key::Dest,
        Key::Log,
        Key::Inherit,
    ];

    /// True for the keys that set a socket option; the others only steer the shim.
    pub const fn is_socket_option(self) -> bool {
        matches!(
            self,
            Key::Idle | Key::Interval | Key::Count | Key::UserTimeout
        )
    }

    /// True for keys whose value is a comma-separated list.
    pub const fn is_list(self) -> bool {
        matches!(self, Key::Ports | Key::Dest)
    }

    /// The key as written in a policy.
    pub const fn name(self) -> &'static str {
        match self {
            Key::Idle => "idle",
            Key::Interval => "interval",
            Key::Count => "count",
            Key::UserTimeout => "user-timeout",
            Key::Mode => "mode",
            Key::Ports => "ports",
            Key::Dest => "dest",
            Key::Log => "log",
            Key::Inherit => "inherit",
        }
    }

    /// Looks a key up by its written name.
    pub fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The numbers accepted, in the key's unit: seconds for `idle` and `interval`, probes for
    /// `count`, milliseconds for `user-timeout`, port numbers for `ports`.
    /// `None` for keys that take words or addresses.
    pub const fn range(self) -> Option<core::ops::RangeInclusive<u64>> {
        match self {
            Key::Idle => Some(1..=MAX_KEEPIDLE_SECS as u64),
            Key::Interval => Some(1..=MAX_KEEPINTVL_SECS as u64),
            Key::Count => Some(1..=MAX_KEEPCNT as u64),
            Key::UserTimeout => Some(0..=MAX_USER_TIMEOUT_MS),
            Key::Ports => Some(1..=65535),
            Key::Mode | Key::Dest | Key::Log | Key::Inherit => None,
        }
    }

    fn admits(self, n: u64) -> bool {
        self.range().is_some_and(|r| r.contains(&n))
    }

    /// What the key accepts, for error messages.
    pub const fn allowed(self) -> &'static str {
        match self {
            Key::Idle => "1..=32767 s (TCP_KEEPIDLE, whole seconds)",
            Key::Interval => "1..=32767 s (TCP_KEEPINTVL, whole seconds)",
            Key::Count => "1..=127 probes (TCP_KEEPCNT, a plain number)",
            Key::UserTimeout => {
                "0..=2147483647 ms, a bare number being seconds (90000ms = 90s), or auto \
                 (TCP_USER_TIMEOUT; 0 switches it off)"
            }
            Key::Mode => "default or force",
            Key::Ports => "port numbers 1..=65535 or ranges such as 8000-8099, comma-separated",
            Key::Dest => {
                "IPv4 or IPv6 addresses or networks such as 198.18.0.0/15, comma-separated"
            }
            Key::Log => {
                "off, syslog, or an absolute file path without commas, control characters or blanks at its ends (a policy carries it between commas)"
            }
            Key::Inherit => "yes or no",
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The whole policy is empty.
    Empty,
    /// Two commas in a row, or a leading or trailing comma.
    EmptyField,
    /// A key the grammar does not know.
    UnknownKey,
    /// `key` or `key=` with nothing after it.
    MissingValue,
    /// The same key twice.
    Duplicate,
    /// The value does not start with a digit.
    NotANumber,
    /// The value starts with a minus sign.
    Negative,
    /// A unit other than ms, s, m, h.
    BadUnit,
    /// A unit on `count`.
    UnitNotAllowed,
    /// Milliseconds that are not whole seconds on a key the kernel counts in seconds.
    NotWholeSeconds,
    /// Zero, or past the kernel's limit.
    OutOfRange,
    /// `user-timeout=auto` works out past `TCP_USER_TIMEOUT`'s limit.
    AutoTooLarge,
    /// A word that is not one of the key's choices, or an address that does not parse.
    BadValue,
    /// A shim key (`mode`, `ports`, ...) where only a socket policy is meant.
    NotASocketOption,
    /// More list entries than the shim has room for.
    TooMany,
    /// The text is not UTF-8 (an environment variable's bytes).
    NotUtf8,
    /// Two compatibility variables give one key different values.
    Conflict,
}

/// Up to 40 bytes of the offending input, kept inline so that errors need no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Snippet {
    bytes: [u8; 40],
    len: u8,
    truncated: bool,
}

impl Snippet {
    const EMPTY: Snippet = Snippet {
        bytes: [0; 40],
        len: 0,
        truncated: false,
    };

    fn new(s: &str) -> Snippet {
        let mut end = s.len().min(40);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; 40];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        Snippet {
            bytes,
            len: end as u8,
            truncated: end < s.len(),
        }
    }

    fn as_str(&self) -> &str {
        // Built from a prefix of a &str cut at a char boundary.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

/// Appends up to the snippet's capacity, marking the rest as cut off.
impl fmt::Write for Snippet {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut take = s.len().min(self.bytes.len() - self.len as usize);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        let at = self.len as usize;
        self.bytes[at..at + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take as u8;
        self.truncated |= take < s.len();
        Ok(())
    }
}

/// Control characters (a newline, an escape sequence) are written escaped, so that a bad value
/// can neither break the one-line message nor drive the terminal.
impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.as_str().chars() {
            crate::printable::write_char(f, c)?;
        }
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A refused policy: what was wrong, with which key and value, and what is allowed.
///
/// Its `Display` is one line. It holds no heap memory, so the shim can build and print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyError {
    kind: ErrorKind,
    key: Option<Key>,
    /// The key as written, for unknown keys.
    raw_key: Snippet,
    value: Snippet,
    /// A derived number, for [`ErrorKind::AutoTooLarge`].
    amount: u64,
}

impl PolicyError {
    fn new(kind: ErrorKind, key: Option<Key>, raw_key: &str, value: &str) -> Self {
        PolicyError {
            kind,
            key,
            raw_key: Snippet::new(raw_key),
            value: Snippet::new(value),
            amount: 0,
        }
    }

    fn bare(kind: ErrorKind) -> Self {
        PolicyError {
            kind,
            key: None,
            raw_key: Snippet::EMPTY,
            value: Snippet::EMPTY,
            amount: 0,
        }
    }

    /// `n` is outside `key`'s range.
    pub(crate) fn out_of_range(key: Key, n: u64) -> Self {
        let mut value = Snippet::EMPTY;
        let _ = fmt::Write::write_fmt(&mut value, format_args!("{n}"));
        PolicyError {
            value,
            ..Self::new(ErrorKind::OutOfRange, Some(key), key.name(), "")
        }
    }

    pub(crate) fn not_a_socket_option(key: Key) -> Self {
        Self::new(ErrorKind::NotASocketOption, Some(key), key.name(), "")
    }

    pub(crate) fn too_many(key: Key, capacity: usize) -> Self {
        PolicyError {
            amount: capacity as u64,
            ..Self::new(ErrorKind::TooMany, Some(key), key.name(), "")
        }
    }

    pub(crate) fn duplicate(key: Key) -> Self {
        Self::new(ErrorKind::Duplicate, Some(key), key.name(), "")
    }

    pub(crate) fn auto_too_large(ms: u64) -> Self {
        PolicyError {
            amount: ms,
            ..Self::new(ErrorKind::AutoTooLarge, Some(Key::UserTimeout), "", "auto")
        }
    }

    /// `bytes` are not UTF-8: the message shows them with every byte past ASCII escaped.
    pub fn not_utf8(bytes: &[u8]) -> Self {
        let mut value = Snippet::EMPTY;
        for chunk in bytes.utf8_chunks() {
            let _ = fmt::Write::write_str(&mut value, chunk.valid());
            for b in chunk.invalid() {
                let _ = fmt::Write::write_fmt(&mut value, format_args!("\\x{b:02x}"));
            }
        }
        PolicyError {
            value,
            ..Self::bare(ErrorKind::NotUtf8)
        }
    }

    /// `value` for `key` disagrees with `given`, which variable `other` gave it.
    pub(crate) fn conflict(key: Key, other: &str, given: &str, value: &str) -> Self {
        let mut raw_key = Snippet::EMPTY;
        let _ = fmt::Write::write_fmt(&mut raw_key, format_args!("{other}={given}"));
        PolicyError {
            raw_key,
            ..Self::new(ErrorKind::Conflict, Some(key), "", value)
        }
    }

    /// What kind of mistake this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The key the mistake is in, when the key is known.
    pub fn key(&self) -> Option<Key> {
        self.key
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.map_or("", Key::name);
        let allowed = self.key.map_or("", Key::allowed);
        let (v, raw) = (&self.value, &self.raw_key);
        match self.kind {
            ErrorKind::Empty => write!(
                f,
                "empty policy: expected key=value fields such as {EXAMPLE}"
            ),
            ErrorKind::EmptyField => {
                write!(
                    f,
                    "empty field in policy (a stray comma?): expected key=value fields such as {EXAMPLE}"
                )
            }
            ErrorKind::UnknownKey => write!(
                f,
                "unknown policy key '{raw}': allowed keys are idle, interval, count, user-timeout \
                 (and for keepalive run: mode, ports, dest, log, inherit)"
            ),
            ErrorKind::MissingValue => write!(
                f,
                "policy key '{raw}' has no value: write {raw}=VALUE, {allowed}"
            ),
            ErrorKind::Duplicate => write!(f, "policy key '{key}' is given twice"),
            // The hint is the key's own: idle and interval are whole seconds (a fraction is
            // never right), user-timeout is milliseconds (1500ms is), count and ports take no
            // unit at all.
            ErrorKind::NotANumber => match self.key {
                Some(Key::Idle | Key::Interval) if v.as_str().contains('.') => write!(
                    f,
                    "{key}={v}: the kernel counts {key} in whole seconds; {key} must be {allowed}"
                ),
                Some(Key::Idle | Key::Interval) => write!(
                    f,
                    "{key}={v}: not a number of seconds; {key} must be {allowed}, units ms, s, m, \
                     h (a bare number is seconds)"
                ),
                Some(Key::UserTimeout) => write!(
                    f,
                    "{key}={v}: not a duration; {key} must be {allowed}, units ms, s, m, h (a \
                     bare number is seconds; a fraction is written in ms, 1500ms)"
                ),
                _ => write!(f, "{key}={v}: not a whole number; {key} must be {allowed}"),
            },
            ErrorKind::Negative => write!(f, "{key}={v}: negative; {key} must be {allowed}"),
            ErrorKind::BadUnit => write!(
                f,
                "{key}={v}: unknown unit; allowed units are ms, s, m, h, largest first as in \
                 1m30s (a bare number is seconds)"
            ),
            ErrorKind::UnitNotAllowed => {
                write!(f, "{key}={v}: takes no unit; {key} must be {allowed}")
            }
            ErrorKind::NotWholeSeconds => {
                write!(
                    f,
                    "{key}={v}: the kernel counts {key} in whole seconds; {key} must be {allowed}"
                )
            }
            ErrorKind::OutOfRange => write!(f, "{key}={v}: out of range; {key} must be {allowed}"),
            ErrorKind::AutoTooLarge => write!(
                f,
                "user-timeout=auto: idle + interval x count is {} ms, past TCP_USER_TIMEOUT's limit of {} ms",
                self.amount, MAX_USER_TIMEOUT_MS
            ),
            ErrorKind::BadValue => write!(f, "{key}={v}: not valid; {key} must be {allowed}"),
            ErrorKind::NotASocketOption => write!(
                f,
                "'{key}' steers keepalive run and its LD_PRELOAD shim; it is not a socket option here"
            ),
            ErrorKind::TooMany if self.key == Some(Key::Log) => {
                write!(f, "log: the path is longer than {} bytes", self.amount)
            }
            ErrorKind::TooMany => write!(
                f,
                "{key}: more than {} entries; {key} must be {allowed}",
                self.amount
            ),
            ErrorKind::NotUtf8 => write!(f, "\"{v}\" is not valid UTF-8 text"),
            ErrorKind::Conflict => write!(
                f,
                "{v} for {key} disagrees with {raw}: give one of the two, or the same value"
            ),
        }
    }
}

impl core::error::Error for PolicyError {}

/// A policy value after checking, tagged with its key. Borrows from the text it came from
/// (a log path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// `idle`, in seconds.
    Idle(u32),
    /// `interval`, in seconds.
    Interval(u32),
    /// `count`, in probes.
    Count(u32),
    /// `user-timeout=N`, in milliseconds (0: off).
    UserTimeoutMs(u32),
    /// `user-timeout=auto`.
    UserTimeoutAuto,
    /// `mode`.
    Mode(Mode),
    /// One entry of `ports`.
    Ports(PortRange),
    /// One entry of `dest`.
    Dest(Cidr),
    /// `log`.
    Log(Log<'a>),
    /// `inherit`.
    Inherit(bool),
}

impl Field<'_> {
    /// The key this field belongs to.
    pub fn key(&self) -> Key {
        match self {
            Field::Idle(_) => Key::Idle,
            Field::Interval(_) => Key::Interval,
            Field::Count(_) => Key::Count,
            Field::UserTimeoutMs(_) | Field::UserTimeoutAuto => Key::UserTimeout,
            Field::Mode(_) => Key::Mode,
            Field::Ports(_) => Key::Ports,
            Field::Dest(_) => Key::Dest,
            Field::Log(_) => Key::Log,
            Field::Inherit(_) => Key::Inherit,
        }
    }
}

/// Whose keepalive settings win on a socket the shim manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The program's own later setsockopt calls take effect, as with libkeepalive.
    #[default]
    Default,
    /// The program's calls that would turn keepalive off or change an option the policy sets
    /// report success but are not applied.
    Force,
}

/// A port or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// True when `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// An IPv4 or IPv6 network. IPv4 networks also match IPv4-mapped IPv6 addresses
/// (`::ffff:a.b.c.d`), which is how a dual-stack socket (Java's) connects to an IPv4 peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: core::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` is inside the network.
    pub fn contains(&self, ip: core::net::IpAddr) -> bool {
        use core::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        // A network written IPv4-mapped (::ffff:127.0.0.0/104) is the IPv4 network it maps.
        let (addr, prefix) = match self.addr {
            IpAddr::V6(v6) if self.prefix >= 96 && v6.to_ipv4_mapped().is_some() => (
                v6.to_ipv4_mapped().map_or(self.addr, IpAddr::V4),
                self.prefix - 96,
            ),
            a => (a, self.prefix),
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let (whole, bits) = (usize::from(prefix / 8), prefix % 8);
    if a.get(..whole) != b.get(..whole) {
        return false;
    }
    if bits == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - bits);
    matches!((a.get(whole), b.get(whole)), (Some(x), Some(y)) if x & mask == y & mask)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Where the shim reports what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Log<'a> {
    /// Nowhere (the default).
    #[default]
    Off,
    /// The system log, through `/dev/log`.
    Syslog,
    /// Appended to this file (an absolute path).
    File(&'a str),
}

/// Splits a policy into checked fields, in order, without allocating.
///
/// Duplicate keys are the caller's concern (see `Policy::parse`), since a caller that layers
/// fields (the shim's compatibility variables) may allow them.
pub fn fields(policy: &str) -> Fields<'_> {
    Fields {
        rest: Some(policy),
        first: true,
        list: None,
    }
}

/// The iterator returned by [`fields`].
pub struct Fields<'a> {
    rest: Option<&'a str>,
    first: bool,
    /// The list key whose entries may go on after a comma.
    list: Option<Key>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, PolicyError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        if self.first && rest.trim().is_empty() {
            self.rest = None;
            return Some(Err(PolicyError::bare(ErrorKind::Empty)));
        }
        self.first = false;
        let (item, rest) = match rest.split_once(',') {
            Some((item, rest)) => (item, Some(rest)),
            None => (rest, None),
        };
        self.rest = rest;
        let result = match self.list {
            Some(key) if !item.contains('=') && !item.trim().is_empty() => parse_value(key, item),
            _ => parse_field(item),
        };
        match &result {
            Ok(field) => self.list = Some(field.key()).filter(|k| k.is_list()),
            Err(_) => self.rest = None,
        }
        Some(result)
    }
}

/// Parses one `key=value` field.
pub fn parse_field(item: &str) -> Result<Field<'_>, PolicyError> {
    let item = item.trim();
    if item.is_empty() {
        return Err(PolicyError::bare(ErrorKind::EmptyField));
    }
    let (raw_key, value) = match item.split_once('=') {
        Some((k, v)) => (k.trim(), v.trim()),
        None => (item, ""),
    };
    let Some(key) = Key::from_name(raw_key) else {
        return Err(PolicyError::new(
            ErrorKind::UnknownKey,
            None,
            raw_key,
            value,
        ));
    };
    parse_value(key, value)
}

/// Parses the value of one key, as given by a field or by a flag such as `--idle 30`.
pub fn parse_value(key: Key, value: &str) -> Result<Field<'_>, PolicyError> {
    let value = value.trim();
    let err = |kind| PolicyError::new(kind, Some(key), key.name(), value);
    if value.is_empty() {
        return Err(err(ErrorKind::MissingValue));
    }
    // The number in the key's own unit: seconds, probes, milliseconds or a port.
    let n = match key {
        Key::Mode => match value {
            "default" => return Ok(Field::Mode(Mode::Default)),
            "force" => return Ok(Field::Mode(Mode::Force)),
            _ => return Err(err(ErrorKind::BadValue)),
        },
        Key::Inherit => match value {
            "yes" => return Ok(Field::Inherit(true)),
            "no" => return Ok(Field::Inherit(false)),
            _ => return Err(err(ErrorKind::BadValue)),
        },
        Key::Log => match value {
            "off" => return Ok(Field::Log(Log::Off)),
            "syslog" => return Ok(Field::Log(Log::Syslog)),
            // A path the text form cannot carry is refused here too, when it comes from a
            // flag: the policy is handed on as text (KEEPALIVE_POLICY), where a comma ends
            // the value and blanks around it are dropped.
            path if path.starts_with('/')
                && !path.contains(',')
                && path.trim() == path
                && !path.chars().any(char::is_control) =>
            {
                return Ok(Field::Log(Log::File(path)));
            }
            _ => return Err(err(ErrorKind::BadValue)),
        },
        Key::Dest => {
            return cidr(value)
                .map(Field::Dest)
                .ok_or_else(|| err(ErrorKind::BadValue));
        }
        Key::Ports => {
            let (first, last) = value.split_once('-').unwrap_or((value, value));
            let port = |text: &str| match number(key, text.trim()) {
                Ok((Some(n), "")) if key.admits(n) => Ok(n as u16),
                Ok((_, "")) => Err(err(ErrorKind::OutOfRange)),
                Ok(_) => Err(err(ErrorKind::BadValue)),
                Err(e) => Err(PolicyError {
                    value: Snippet::new(value),
                    ..e
                }),
            };
            let (first, last) = (port(first)?, port(last)?);
            if first > last {
                return Err(err(ErrorKind::BadValue));
            }
            return Ok(Field::Ports(PortRange { first, last }));
        }
        Key::UserTimeout if value == "auto" => return Ok(Field::UserTimeoutAuto),
        Key::UserTimeout => millis(key, value)?,
        Key::Count => match number(key, value)? {
            (n, "") => n,
            _ => return Err(err(ErrorKind::UnitNotAllowed)),
        },
        Key::Idle | Key::Interval => match millis(key, value)? {
            Some(ms) if !ms.is_multiple_of(1000) => return Err(err(ErrorKind::NotWholeSeconds)),
            ms => ms.map(|ms| ms / 1000),
        },
    };
    n.and_then(|n| Field::checked(key, n))
        .ok_or_else(|| err(ErrorKind::OutOfRange))
}

impl Field<'_> {
    /// The field for a socket-option `key` holding `n` in the key's unit (seconds, probes,
    /// milliseconds), if `n` is within the kernel's limits.
    pub fn checked(key: Key, n: u64) -> Option<Field<'static>> {
        if !key.admits(n) {
            return None;
        }
        let n = n as u32;
        match key {
            Key::Idle => Some(Field::Idle(n)),
            Key::Interval => Some(Field::Interval(n)),
            Key::Count => Some(Field::Count(n)),
            Key::UserTimeout => Some(Field::UserTimeoutMs(n)),
            _ => None,
        }
    }
}

/// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address, or `v6/n`.
fn cidr(value: &str) -> Option<Cidr> {
    let (addr, prefix) = match value.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (value, None),
    };
    let addr: core::net::IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
            p.parse::<u8>().ok().filter(|&p| p <= max)?
        }
        Some(_) => return None,
    };
    Some(Cidr { addr, prefix })
}

/// A duration in the grammar's units (`300s`, `5m`, `1500ms`, a bare number is seconds), in
/// milliseconds; `None` if it is not one.
pub fn parse_duration_ms(value: &str) -> Option<u64> {
    millis(Key::UserTimeout, value.trim()).ok().flatten()
}

/// A duration in milliseconds; `None` when it overflows u64. Parts combine largest unit first,
/// each unit once, as explain prints them (`1m30s`, `2h11m15s`, `1s500ms`); a bare number
/// stands alone and is seconds.
fn millis(key: Key, value: &str) -> Result<Option<u64>, PolicyError> {
    let err = |kind| PolicyError::new(kind, Some(key), key.name(), value);
    let (mut rest, mut total, mut last, mut parts) = (value, Some(0u64), u64::MAX, 0);
    loop {
        // After a unit only another part may follow ("1m30s"): anything else is a bad unit.
        let (n, after) = number(key, rest).map_err(|e| {
            err(if parts > 0 {
                ErrorKind::BadUnit
            } else {
                e.kind
            })
        })?;
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = after.split_at(letters);
        let scale: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "" if parts == 0 && tail.is_empty() => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            // 1.5s: a fraction, not a unit (1500ms says it).
            "" if tail.starts_with('.') => return Err(err(ErrorKind::NotANumber)),
            _ => return Err(err(ErrorKind::BadUnit)),
        };
        if scale >= last {
            return Err(err(ErrorKind::BadUnit));
        }
        total = total.and_then(|t| t.checked_add(n?.checked_mul(scale)?));
        (last, parts) = (scale, parts + 1);
        if tail.is_empty() {
            return Ok(total);
        }
        rest = tail;
    }
}

/// Leading decimal digits and the rest; `None` for a number that overflows u64.
fn number(key: Key, value: &str) -> Result<(Option<u64>, &str), PolicyError> {
    let err = |kind| PolicyError::new(kind, Some(key), key.name(), value);
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(err(if value.starts_with('-') {
            ErrorKind::Negative
        } else {
            ErrorKind::NotANumber
        }));
    }
    let mut n: Option<u64> = Some(0);
    for b in value[..digits].bytes() {
        n = n
            .and_then(|n| n.checked_mul(10))
            .and_then(|n| n.checked_add(u64::from(b - b'0')));
    }
    Ok((n, &value[digits..]))
}

/// Writes a duration in milliseconds in the grammar's shortest exact form for the key:
/// whole seconds as `Ns`, anything else as `Nms`.
pub(crate) fn write_millis(f: &mut fmt::Formatter<'_>, ms: u64) -> fmt::Result {
    if ms.is_multiple_of(1000) {
        write!(f, "{}s", ms / 1000)
    } else {
        write!(f, "{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Result<Field<'_>, PolicyError> {
        parse_field(s)
    }

    #[test]
    fn units() {
        assert_eq!(one("idle=60"), Ok(Field::Idle(60)));
        assert_eq!(one("idle=60s"), Ok(Field::Idle(60)));
        assert_eq!(one("idle=2m"), Ok(Field::Idle(120)));
        assert_eq!(one("idle=2h"), Ok(Field::Idle(7200)));
        assert_eq!(one("idle=3000ms"), Ok(Field::Idle(3)));
        assert_eq!(one(" interval = 10s "), Ok(Field::Interval(10)));
        assert_eq!(one("count=5"), Ok(Field::Count(5)));
        assert_eq!(one("user-timeout=1500ms"), Ok(Field::UserTimeoutMs(1500)));
        assert_eq!(one("user-timeout=0"), Ok(Field::UserTimeoutMs(0)));
        assert_eq!(one("user-timeout=auto"), Ok(Field::UserTimeoutAuto));
        // Combined, largest unit first, as explain prints durations.
        assert_eq!(one("idle=1m30s"), Ok(Field::Idle(90)));
        assert_eq!(one("idle=2h11m15s"), Ok(Field::Idle(7875)));
        assert_eq!(one("user-timeout=1s500ms"), Ok(Field::UserTimeoutMs(1500)));
        for bad in [
            "idle=30s1m",
            "idle=1m1m",
            "idle=1m30",
            "idle=1m 30s",
            "idle=1x",
        ] {
            assert_eq!(one(bad).unwrap_err().kind(), ErrorKind::BadUnit, "{bad}");
        }
        assert_eq!(
            one("idle=1s500ms").unwrap_err().kind(),
            ErrorKind::NotWholeSeconds
        );
    }

    #[test]
    fn limits() {
        assert_eq!(one("idle=32767"), Ok(Field::Idle(32767)));
        assert_eq!(one("idle=32768").unwrap_err().kind(), ErrorKind::OutOfRange);
        assert_eq!(one("interval=0").unwrap_err().kind(), ErrorKind::OutOfRange);
        assert_eq!(one("count=127"), Ok(Field::Count(127)));
        assert_eq!(one("count=128").unwrap_err().kind(), ErrorKind::OutOfRange);
        assert_eq!(one("count=0").unwrap_err().kind(), ErrorKind::OutOfRange);
        assert_eq!(
            one("user-timeout=2147483647ms"),
            Ok(Field::UserTimeoutMs(i32::MAX as u32))
        );
        assert_eq!(
            one("user-timeout=2147483648ms").unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        assert_eq!(
            one("idle=99999999999999999999999").unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        assert_eq!(
            one("idle=18446744073709551615h").unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
    }

    #[test]
    fn mistakes() {
        let kind = |s| one(s).unwrap_err().kind();
        assert_eq!(kind("idle=-5"), ErrorKind::Negative);
        assert_eq!(kind("idle=5x"), ErrorKind::BadUnit);
        assert_eq!(kind("idle=5 s"), ErrorKind::BadUnit);
        assert_eq!(kind("idle=1.5s"), ErrorKind::NotANumber);
        assert_eq!(kind("idle=abc"), ErrorKind::NotANumber);
        assert_eq!(kind("idle=+5"), ErrorKind::NotANumber);
        assert_eq!(kind("idle=1500ms"), ErrorKind::NotWholeSeconds);
        assert_eq!(kind("idle="), ErrorKind::MissingValue);
        assert_eq!(kind("idle"), ErrorKind::MissingValue);
        assert_eq!(kind("count=5s"), ErrorKind::UnitNotAllowed);
        assert_eq!(kind("idel=5"), ErrorKind::UnknownKey);
        assert_eq!(kind(""), ErrorKind::EmptyField);
    }

    #[test]
    fn messages_name_key_value_and_range() {
        let msg = one("idle=0").unwrap_err().to_string();
        assert_eq!(
            msg,
            "idle=0: out of range; idle must be 1..=32767 s (TCP_KEEPIDLE, whole seconds)"
        );
        let msg = one("idel=5").unwrap_err().to_string();
        assert!(
            msg.contains("'idel'") && msg.contains("allowed keys"),
            "{msg}"
        );
        let msg = one("count=200").unwrap_err().to_string();
        assert!(
            msg.starts_with("count=200: out of range") && msg.contains("1..=127"),
            "{msg}"
        );
        let long = format!("idle={}", "9".repeat(100));
        let msg = one(&long).unwrap_err().to_string();
        assert!(msg.contains("...") && !msg.contains('\n'), "{msg}");
        let msg = one("idle=ééééééééééééééééééééééééééééééé")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not a number of seconds"), "{msg}");
        // Each key's own hint: no ms advice for whole seconds, no units for a count.
        let msg = one("idle=1.5s").unwrap_err().to_string();
        assert!(
            msg.contains("whole seconds") && !msg.contains("1500ms"),
            "{msg}"
        );
        let msg = one("count=+5").unwrap_err().to_string();
        assert!(
            msg.contains("not a whole number") && !msg.contains("units"),
            "{msg}"
        );
        let msg = one("user-timeout=1.5s").unwrap_err().to_string();
        assert!(msg.contains("1500ms"), "{msg}");
    }

    #[test]
    fn fields_iterate_and_stop_at_the_first_error() {
        let got: Vec<_> = fields("idle=1,count=2").collect();
        assert_eq!(got, vec![Ok(Field::Idle(1)), Ok(Field::Count(2))]);
        let got: Vec<_> = fields("idle=1,,count=2").collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].unwrap_err().kind(), ErrorKind::EmptyField);
        let got: Vec<_> = fields("idle=1,").collect();
        assert_eq!(got[1].unwrap_err().kind(), ErrorKind::EmptyField);
        let got: Vec<_> = fields("  ").collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].unwrap_err().kind(), ErrorKind::Empty);
    }
}
