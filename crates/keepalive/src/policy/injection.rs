//! What the LD_PRELOAD shim does inside a program: the policy, whose settings win, which
//! sockets it touches, where it logs, and whether it stays in the program's children.
//!
//! Written in the same grammar as a policy (`KEEPALIVE_POLICY=idle=30s,interval=10s,count=5,
//! mode=force,ports=5432`) and parsed by the same code. Everything here has a fixed size, so the
//! shim can hold it in a static and parse it without allocating.

use super::Policy;
use super::grammar::{self, Cidr, Field, Key, Log, Mode, PolicyError, PortRange};
use core::fmt;
use core::net::IpAddr;

/// Room for `ports` entries.
pub const MAX_PORTS: usize = 16;
/// Room for `dest` entries.
pub const MAX_DESTS: usize = 8;
/// Room for a log file path, in bytes.
pub const MAX_LOG_PATH: usize = 256;

/// The environment variable that carries an [`Injection`].
pub const ENV: &str = "KEEPALIVE_POLICY";

/// The variables of libkeepalive (`KEEPIDLE`, `KEEPINTVL`, `KEEPCNT`, `KEEPALIVE=off`) and of
/// libdontdie (`DD_TCP_KEEPALIVE_TIME`, `_INTVL`, `_PROBES`), read when [`ENV`] is not set so
/// that the shim can replace either library unchanged.
pub const COMPAT_VARS: [(&str, Key); 6] = [
    ("KEEPIDLE", Key::Idle),
    ("KEEPINTVL", Key::Interval),
    ("KEEPCNT", Key::Count),
    ("DD_TCP_KEEPALIVE_TIME", Key::Idle),
    ("DD_TCP_KEEPALIVE_INTVL", Key::Interval),
    ("DD_TCP_KEEPALIVE_PROBES", Key::Count),
];

/// The shim's whole configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// The socket options to apply.
    pub policy: Policy,
    /// Whose settings win.
    pub mode: Mode,
    /// False when `KEEPALIVE=off`: the shim leaves every socket alone.
    pub enabled: bool,
    /// Whether the shim stays in LD_PRELOAD for the program's children.
    pub inherit: bool,
    ports: [PortRange; MAX_PORTS],
    n_ports: u8,
    dests: [Option<Cidr>; MAX_DESTS],
    n_dests: u8,
    log: LogTarget,
}

/// Where the shim logs; a file's path is copied into a fixed buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
struct LogTarget {
    kind: LogKind,
    path: [u8; MAX_LOG_PATH],
    len: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogKind {
    Off,
    Syslog,
    File,
}

impl fmt::Debug for LogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_log())
    }
}

impl LogTarget {
    const OFF: LogTarget = LogTarget {
        kind: LogKind::Off,
        path: [0; MAX_LOG_PATH],
        len: 0,
    };

    fn as_log(&self) -> Log<'_> {
        match self.kind {
            LogKind::Off => Log::Off,
            LogKind::Syslog => Log::Syslog,
            LogKind::File => {
                let bytes = self.path.get(..usize::from(self.len)).unwrap_or(&[]);
                Log::File(core::str::from_utf8(bytes).unwrap_or(""))
            }
        }
    }
}

impl Default for Injection {
    fn default() -> Self {
        Injection {
            policy: Policy::empty(),
            mode: Mode::Default,
            enabled: true,
            inherit: true,
            ports: [PortRange { first: 0, last: 0 }; MAX_PORTS],
            n_ports: 0,
            dests: [None; MAX_DESTS],
            n_dests: 0,
            log: LogTarget::OFF,
        }
    }
}

impl Injection {
    /// Parses the grammar, policy keys and shim keys alike. Unlike a policy, an injection may be
    /// empty: keepalive on with the namespace's defaults, as libkeepalive does.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let mut injection = Injection::default();
        if s.trim().is_empty() {
            return Ok(injection);
        }
        let mut seen = [false; Key::ALL.len()];
        let mut last_list: Option<Key> = None;
        for field in grammar::fields(s) {
            let field = field?;
            let key = field.key();
            let index = key as usize;
            // A list key may repeat only as the continuation of its own list.
            let continuing = key.is_list() && last_list == Some(key);
            if seen.get(index).copied().unwrap_or(false) && !continuing {
                return Err(PolicyError::duplicate(key));
            }
            if let Some(flag) = seen.get_mut(index) {
                *flag = true;
            }
            last_list = Some(key).filter(|k| k.is_list());
            injection.insert(field)?;
        }
        injection.policy.check_auto()?;
        Ok(injection)
    }

    /// Sets one key from a written value, as a flag gives it. List keys take the whole list
    /// (`5432,6379`) and add to what is there.
    pub fn set(&mut self, key: Key, value: &str) -> Result<(), PolicyError> {
        if key.is_list() {
            for item in value.split(',') {
                self.insert(grammar::parse_value(key, item)?)?;
            }
            return Ok(());
        }
        self.insert(grammar::parse_value(key, value)?)?;
        self.policy.check_auto()
    }

    /// Adds one parsed field.
    pub fn insert(&mut self, field: Field<'_>) -> Result<(), PolicyError> {
        match field {
            Field::Mode(mode) => self.mode = mode,
            Field::Inherit(inherit) => self.inherit = inherit,
            Field::Ports(range) => {
                let slot = self.ports.get_mut(usize::from(self.n_ports));
                *slot.ok_or(PolicyError::too_many(Key::Ports, MAX_PORTS))? = range;
                self.n_ports += 1;
            }
            Field::Dest(cidr) => {
                let slot = self.dests.get_mut(usize::from(self.n_dests));
                *slot.ok_or(PolicyError::too_many(Key::Dest, MAX_DESTS))? = Some(cidr);
                self.n_dests += 1;
            }
            Field::Log(Log::Off) => self.log = LogTarget::OFF,
            Field::Log(Log::Syslog) => {
                self.log = LogTarget {
                    kind: LogKind::Syslog,
                    ..LogTarget::OFF
                }
            }
            Field::Log(Log::File(p)) => {
                let mut log = LogTarget {
                    kind: LogKind::File,
                    len: p.len() as u16,
                    ..LogTarget::OFF
                };
                let dst = log
                    .path
                    .get_mut(..p.len())
                    .ok_or(PolicyError::too_many(Key::Log, MAX_LOG_PATH))?;
                dst.copy_from_slice(p.as_bytes());
                self.log = log;
            }
            socket_option => self.policy.insert(socket_option)?,
        }
        Ok(())
    }

    /// Reads the configuration from the environment (`get` gives a variable's bytes): [`ENV`]
    /// if set, else the compatibility variables of libkeepalive and libdontdie, else
    /// keepalive on with the kernel's defaults. On error, names the variable; a value that is
    /// not UTF-8 is an error, not an absent variable.
    ///
    /// The compatibility variables mean what they meant to their libraries: libkeepalive's
    /// `KEEPALIVE=off` (any case) turns the shim off, and `KEEPIDLE`, `KEEPINTVL`, `KEEPCNT`
    /// set the values; libdontdie's `DD_USE_KEEPALIVE` starting with `0` turns it off,
    /// `DD_DEBUG` starting with `1` logs to syslog (where libdontdie logs), and
    /// `DD_TCP_KEEPALIVE_TIME`, `_INTVL`, `_PROBES` set the values. Both families may be set
    /// at once; where both give one key, they must agree.
    pub fn from_env<'e>(
        get: impl Fn(&str) -> Option<&'e [u8]>,
    ) -> Result<Self, (&'static str, PolicyError)> {
        let text = |var: &'static str| match get(var) {
            None => Ok(None),
            Some(bytes) => core::str::from_utf8(bytes)
                .map(Some)
                .map_err(|_| (var, PolicyError::not_utf8(bytes))),
        };
        if let Some(t) = text(ENV)? {
            return Injection::parse(t).map_err(|e| (ENV, e));
        }
        let mut injection = Injection::default();
        if let Some(v) = text("KEEPALIVE")? {
            // libkeepalive: strcasecmp(value, "off") == 0 disables it; anything else leaves it on.
            injection.enabled &= !v.eq_ignore_ascii_case("off");
        }
        if text("DD_USE_KEEPALIVE")?.is_some_and(|v| v.starts_with('0')) {
            injection.enabled = false;
        }
        if text("DD_DEBUG")?.is_some_and(|v| v.starts_with('1')) {
            injection
                .insert(Field::Log(Log::Syslog))
                .map_err(|e| ("DD_DEBUG", e))?;
        }
        for (i, (var, key)) in COMPAT_VARS.iter().enumerate() {
            let Some(v) = text(var)? else { continue };
            // The other family's variable for the same key, if it came first and was set.
            let earlier = COMPAT_VARS
                .iter()
                .take(i)
                .find(|(_, k)| k == key)
                .and_then(|(other, _)| Some((*other, text(other).ok()??)));
            match earlier {
                Some((other, given)) => {
                    let mine = grammar::parse_value(*key, v).map_err(|e| (*var, e))?;
                    if grammar::parse_value(*key, given).ok() != Some(mine) {
                        return Err((*var, PolicyError::conflict(*key, other, given, v)));
                    }
                }
                None => injection.set(*key, v).map_err(|e| (*var, e))?,
            }
        }
        Ok(injection)
    }

    /// True when `ports` or `dest` restricts which sockets get the policy; the shim then
    /// applies it once the address is known (bind, connect) instead of at socket().
    pub fn is_filtered(&self) -> bool {
        self.n_ports > 0 || self.n_dests > 0
    }

    /// The `ports` entries.
    pub fn ports(&self) -> &[PortRange] {
        self.ports.get(..usize::from(self.n_ports)).unwrap_or(&[])
    }

    /// The `dest` entries.
    pub fn dests(&self) -> impl Iterator<Item = &Cidr> {
        self.dests.iter().flatten()
    }

    /// Where to log.
    pub fn log(&self) -> Log<'_> {
        self.log.as_log()
    }

    /// Whether a socket bound to local port `port` gets the policy: `ports` lists it and no
    /// `dest` restricts the peer (a listener has none yet).
    pub fn matches_local(&self, port: u16) -> bool {
        self.n_dests == 0 && self.ports().iter().any(|r| r.contains(port))
    }

    /// Whether a connection to `ip`:`port` gets the policy: every filter given admits it.
    pub fn matches_remote(&self, ip: IpAddr, port: u16) -> bool {
        self.is_filtered()
            && (self.n_ports == 0 || self.ports().iter().any(|r| r.contains(port)))
            && (self.n_dests == 0 || self.dests().any(|c| c.contains(ip)))
    }
}

/// Written back in the grammar; parses to an equal injection. Keys at their defaults are left
/// out.
impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = if self.policy.is_empty() { "" } else { "," };
        write!(f, "{}", self.policy)?;
        let mut next = |f: &mut fmt::Formatter<'_>| {
            let s = sep;
            sep = ",";
            f.write_str(s)
        };
        if self.mode == Mode::Force {
            next(f)?;
            f.write_str("mode=force")?;
        }
        for (i, r) in self.ports().iter().enumerate() {
            next(f)?;
            if i == 0 {
                f.write_str("ports=")?;
            }
            write!(f, "{r}")?;
        }
        for (i, c) in self.dests().enumerate() {
            next(f)?;
            if i == 0 {
                f.write_str("dest=")?;
            }
            write!(f, "{c}")?;
        }
        match self.log() {
            Log::Off => {}
            Log::Syslog => {
                next(f)?;
                f.write_str("log=syslog")?;
            }
            Log::File(path) => {
                next(f)?;
                write!(f, "log={path}")?;
            }
        }
        if !self.inherit {
            next(f)?;
            f.write_str("inherit=no")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ErrorKind;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_key_and_round_trips() {
        let text = "idle=30s,interval=10s,count=5,mode=force,ports=5432,6379,8000-8099,\
                    dest=198.18.0.0/15,::1/128,log=/tmp/ka.log,inherit=no";
        let inj = Injection::parse(text).unwrap();
        assert_eq!(inj.mode, Mode::Force);
        assert_eq!(inj.ports().len(), 3);
        assert_eq!(inj.dests().count(), 2);
        assert_eq!(inj.log(), Log::File("/tmp/ka.log"));
        assert!(!inj.inherit);
        assert_eq!(inj.to_string(), text);
        assert_eq!(Injection::parse(&inj.to_string()), Ok(inj));
    }

    #[test]
    fn empty_means_keepalive_on_with_defaults() {
        let inj = Injection::parse("").unwrap();
        assert!(inj.enabled && inj.policy.is_empty() && !inj.is_filtered());
        assert_eq!(inj.to_string(), "");
    }

    #[test]
    fn lists_continue_only_after_their_own_key() {
        assert_eq!(
            Injection::parse("ports=80,443,idle=5")
                .unwrap()
                .ports()
                .len(),
            2
        );
        let e = Injection::parse("idle=5,80").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownKey);
        let e = Injection::parse("ports=80,idle=5,ports=443").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Duplicate);
        let e = Injection::parse("ports=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooMany);
        assert!(e.to_string().contains("more than 16"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_choices() {
        let msg = |s| Injection::parse(s).unwrap_err().to_string();
        assert!(
            msg("mode=hard").starts_with("mode=hard: not valid; mode must be default or force")
        );
        assert!(msg("ports=0").contains("out of range"));
        assert!(msg("ports=70000").contains("out of range"));
        assert!(msg("ports=90-80").contains("not valid"));
        assert!(msg("ports=http").contains("ports=http"));
        assert!(msg("dest=10.0.0.0/33").contains("not valid"));
        assert!(msg("dest=example.com").contains("not valid"));
        assert!(msg("log=relative.log").contains("absolute"));
        assert!(msg("inherit=maybe").contains("yes or no"));
    }

    #[test]
    fn a_policy_refuses_shim_keys() {
        let e = Policy::parse("idle=5,mode=force").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotASocketOption);
        assert!(e.to_string().contains("'mode' steers keepalive run"), "{e}");
    }

    #[test]
    fn filters() {
        let inj = Injection::parse("ports=5432,8000-8099").unwrap();
        assert!(inj.matches_local(8050) && !inj.matches_local(80));
        assert!(inj.matches_remote(ip("203.0.113.1"), 5432));
        assert!(!inj.matches_remote(ip("203.0.113.1"), 5433));
        let inj = Injection::parse("dest=198.18.0.0/15").unwrap();
        assert!(inj.matches_remote(ip("198.19.255.1"), 1));
        assert!(
            inj.matches_remote(ip("::ffff:198.18.0.9"), 1),
            "IPv4-mapped IPv6"
        );
        assert!(!inj.matches_remote(ip("198.20.0.1"), 1));
        assert!(!inj.matches_local(1), "dest says nothing about listeners");
        let inj = Injection::parse("dest=198.18.0.0/15,ports=22").unwrap();
        assert!(inj.matches_remote(ip("198.18.0.1"), 22));
        assert!(!inj.matches_remote(ip("198.18.0.1"), 23));
        assert!(!inj.matches_local(22));
        // Written IPv4-mapped, a network is the IPv4 one it maps, for either kind of peer.
        let inj = Injection::parse("dest=::ffff:127.0.0.0/104").unwrap();
        assert!(inj.matches_remote(ip("127.0.0.1"), 1));
        assert!(inj.matches_remote(ip("::ffff:127.0.0.1"), 1));
        assert!(!inj.matches_remote(ip("128.0.0.1"), 1));
        let inj = Injection::parse("dest=::ffff:127.0.0.1").unwrap();
        assert!(inj.matches_remote(ip("127.0.0.1"), 1));
        let inj = Injection::parse("dest=2001:db8::/33").unwrap();
        assert!(inj.matches_remote(ip("2001:db8:7fff::1"), 1));
        assert!(!inj.matches_remote(ip("2001:db8:8000::1"), 1));
        assert!(
            !Injection::parse("")
                .unwrap()
                .matches_remote(ip("1.2.3.4"), 1)
        );
    }

    #[test]
    fn environment_and_compatibility_variables() {
        let env = |pairs: &'static [(&'static str, &'static [u8])]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
        };
        let inj = Injection::from_env(env(&[("KEEPIDLE", b"30"), ("KEEPCNT", b"4")])).unwrap();
        assert_eq!((inj.policy.idle(), inj.policy.count()), (Some(30), Some(4)));
        // libkeepalive compares with strcasecmp.
        for off in [&b"off"[..], b"OFF", b"Off"] {
            let pairs: &'static [(&str, &[u8])] = Box::leak(Box::new([("KEEPALIVE", off)]));
            assert!(!Injection::from_env(env(pairs)).unwrap().enabled);
        }
        assert!(
            Injection::from_env(env(&[("KEEPALIVE", b"on")]))
                .unwrap()
                .enabled
        );
        // libdontdie: DD_USE_KEEPALIVE starting with 0 is off; DD_DEBUG starting with 1 logs
        // to syslog.
        assert!(
            !Injection::from_env(env(&[("DD_USE_KEEPALIVE", b"0")]))
                .unwrap()
                .enabled
        );
        assert!(
            Injection::from_env(env(&[("DD_USE_KEEPALIVE", b"1")]))
                .unwrap()
                .enabled
        );
        let inj = Injection::from_env(env(&[("DD_DEBUG", b"1")])).unwrap();
        assert_eq!(inj.log(), Log::Syslog);
        let inj = Injection::from_env(env(&[("DD_TCP_KEEPALIVE_TIME", b"60")])).unwrap();
        assert_eq!(inj.policy.idle(), Some(60));
        let (var, e) = Injection::from_env(env(&[("KEEPIDLE", b"abc")])).unwrap_err();
        assert_eq!(var, "KEEPIDLE");
        assert_eq!(e.kind(), ErrorKind::NotANumber);
        // Both families at once: agreeing is fine, disagreeing names both.
        let inj = Injection::from_env(env(&[
            ("KEEPIDLE", b"5"),
            ("DD_TCP_KEEPALIVE_TIME", b"5"),
            ("DD_TCP_KEEPALIVE_PROBES", b"3"),
        ]))
        .unwrap();
        assert_eq!((inj.policy.idle(), inj.policy.count()), (Some(5), Some(3)));
        let (var, e) =
            Injection::from_env(env(&[("KEEPIDLE", b"5"), ("DD_TCP_KEEPALIVE_TIME", b"6")]))
                .unwrap_err();
        assert_eq!(var, "DD_TCP_KEEPALIVE_TIME");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.to_string().contains("disagrees with KEEPIDLE=5"), "{e}");
        // KEEPALIVE_POLICY wins over the compatibility variables.
        let inj = Injection::from_env(env(&[(ENV, b"idle=7"), ("KEEPIDLE", b"abc")])).unwrap();
        assert_eq!(inj.policy.idle(), Some(7));
        assert_eq!(Injection::from_env(env(&[])).unwrap(), Injection::default());
    }

    #[test]
    fn unreadable_text_is_a_bad_value_not_an_absent_one() {
        let env = |pairs: &'static [(&'static str, &'static [u8])]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
        };
        let (var, e) = Injection::from_env(env(&[(ENV, b"idle=3\xff0")])).unwrap_err();
        assert_eq!((var, e.kind()), (ENV, ErrorKind::NotUtf8));
        assert_eq!(e.to_string(), "\"idle=3\\xff0\" is not valid UTF-8 text");
        // An unreadable KEEPALIVE_POLICY does not fall back to the compatibility variables.
        let (var, _) =
            Injection::from_env(env(&[(ENV, b"\xfe"), ("KEEPIDLE", b"77")])).unwrap_err();
        assert_eq!(var, ENV);
        let (var, _) = Injection::from_env(env(&[("KEEPCNT", b"4\x80")])).unwrap_err();
        assert_eq!(var, "KEEPCNT");
    }

    #[test]
    fn control_characters_in_a_bad_value_are_escaped() {
        let e = Injection::parse("idle=5\n\x1b[31mred")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && !e.contains('\x1b'), "{e:?}");
        assert!(e.contains("\\n\\x1b[31mred"), "{e:?}");
    }
}
