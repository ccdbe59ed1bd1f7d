//! What a user asks for ([`Policy`]) and what a socket's keepalive timer then runs on
//! ([`Settings`]).
//!
//! A policy may leave keys out: a socket whose `TCP_KEEPIDLE` was never set uses the
//! namespace's `net.ipv4.tcp_keepalive_time` (`keepalive_time_when()` in `include/net/tcp.h`
//! reads `tp->keepalive_time ? : net->ipv4.sysctl_tcp_keepalive_time`), and likewise for the
//! interval and the probe count. [`Policy::resolve`] fills the gaps from those defaults.

pub mod grammar;
pub mod injection;
pub mod timeline;

use core::fmt;
use core::str::FromStr;

pub use grammar::{Cidr, EXAMPLE, ErrorKind, Field, Key, Log, Mode, PolicyError, PortRange};

/// `TCP_USER_TIMEOUT` as a policy gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserTimeout {
    /// This many milliseconds; 0 switches the option off.
    Millis(u32),
    /// idle + interval x count: the user timeout agrees with the keepalive probes on
    /// an idle connection and also bounds a connection stuck retransmitting.
    Auto,
}

/// A keepalive policy as the user wrote it: every key optional.
///
/// Built only by the grammar ([`Policy::parse`], [`Policy::set`]), so every value it holds is
/// within the kernel's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    idle: Option<u32>,
    interval: Option<u32>,
    count: Option<u32>,
    user_timeout: Option<UserTimeout>,
}

impl Policy {
    /// A policy that sets nothing.
    pub const fn empty() -> Self {
        Policy {
            idle: None,
            interval: None,
            count: None,
            user_timeout: None,
        }
    }

    /// Parses the grammar (see [`grammar`]). Allocation-free.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let mut policy = Policy::empty();
        for field in grammar::fields(s) {
            policy.insert(field?)?;
        }
        policy.check_auto()?;
        Ok(policy)
    }

    /// Sets one key from its written value, as a flag such as `--idle 30` gives it.
    /// A key that is already set is an error.
    pub fn set(&mut self, key: Key, value: &str) -> Result<(), PolicyError> {
        self.insert(grammar::parse_value(key, value)?)?;
        self.check_auto()
    }

    /// Adds a parsed field; a key that is already set, or one that is not a socket option, is
    /// an error.
    pub fn insert(&mut self, field: Field<'_>) -> Result<(), PolicyError> {
        let key = field.key();
        if self.has(key) {
            return Err(PolicyError::duplicate(key));
        }
        match field {
            Field::Idle(s) => self.idle = Some(s),
            Field::Interval(s) => self.interval = Some(s),
            Field::Count(n) => self.count = Some(n),
            Field::UserTimeoutMs(ms) => self.user_timeout = Some(UserTimeout::Millis(ms)),
            Field::UserTimeoutAuto => self.user_timeout = Some(UserTimeout::Auto),
            _ => return Err(PolicyError::not_a_socket_option(key)),
        }
        Ok(())
    }

    /// True when the policy sets `key`.
    pub fn has(&self, key: Key) -> bool {
        match key {
            Key::Idle => self.idle.is_some(),
            Key::Interval => self.interval.is_some(),
            Key::Count => self.count.is_some(),
            Key::UserTimeout => self.user_timeout.is_some(),
            _ => false,
        }
    }

    /// With all three timer keys present, `auto` can be checked now rather than at resolve.
    pub(crate) fn check_auto(&self) -> Result<(), PolicyError> {
        if let (Some(idle), Some(interval), Some(count)) = (self.idle, self.interval, self.count) {
            let base = Settings {
                idle,
                interval,
                count,
                user_timeout_ms: 0,
            };
            self.resolve(&base)?;
        }
        Ok(())
    }

    /// The policy that sets exactly these settings; an error if one is outside the kernel's
    /// limits for the socket option (a sysctl may hold 255 probes, `TCP_KEEPCNT` only 127).
    pub fn from_settings(s: &Settings) -> Result<Self, PolicyError> {
        let pairs = [
            Some((Key::Idle, u64::from(s.idle))),
            Some((Key::Interval, u64::from(s.interval))),
            Some((Key::Count, u64::from(s.count))),
            (s.user_timeout_ms != 0).then_some((Key::UserTimeout, u64::from(s.user_timeout_ms))),
        ];
        let mut policy = Policy::empty();
        for (key, n) in pairs.into_iter().flatten() {
            policy
                .insert(Field::checked(key, n).ok_or_else(|| PolicyError::out_of_range(key, n))?)?;
        }
        Ok(policy)
    }

    /// `TCP_KEEPIDLE` in seconds, if the policy sets it.
    pub fn idle(&self) -> Option<u32> {
        self.idle
    }

    /// `TCP_KEEPINTVL` in seconds, if the policy sets it.
    pub fn interval(&self) -> Option<u32> {
        self.interval
    }

    /// `TCP_KEEPCNT`, if the policy sets it.
    pub fn count(&self) -> Option<u32> {
        self.count
    }

    /// `TCP_USER_TIMEOUT`, if the policy sets it.
    pub fn user_timeout(&self) -> Option<UserTimeout> {
        self.user_timeout
    }

    /// This policy's keys, and `base`'s where this one gives none (a scenario's policy with the
    /// command line's flags over it).
    pub fn over(&self, base: &Policy) -> Policy {
        Policy {
            idle: self.idle.or(base.idle),
            interval: self.interval.or(base.interval),
            count: self.count.or(base.count),
            user_timeout: self.user_timeout.or(base.user_timeout),
        }
    }

    /// True when the policy sets no key.
    pub fn is_empty(&self) -> bool {
        *self == Policy::empty()
    }

    /// What a socket runs on under this policy, with unset keys taken from `defaults`
    /// (normally the namespace's sysctls) and `auto` worked out.
    pub fn resolve(&self, defaults: &Settings) -> Result<Settings, PolicyError> {
        let idle = self.idle.unwrap_or(defaults.idle);
        let interval = self.interval.unwrap_or(defaults.interval);
        let count = self.count.unwrap_or(defaults.count);
        let user_timeout_ms = match self.user_timeout {
            None => defaults.user_timeout_ms,
            Some(UserTimeout::Millis(ms)) => ms,
            Some(UserTimeout::Auto) => {
                let ms = (u64::from(idle) + u64::from(interval) * u64::from(count)) * 1000;
                if ms > grammar::MAX_USER_TIMEOUT_MS {
                    return Err(PolicyError::auto_too_large(ms));
                }
                ms as u32
            }
        };
        Ok(Settings {
            idle,
            interval,
            count,
            user_timeout_ms,
        })
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Policy::parse(s)
    }
}

/// Written back in the grammar, keys in their usual order; parses to an equal policy.
/// An empty policy writes as the empty string, which `parse` refuses.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut field = |f: &mut fmt::Formatter<'_>, key: Key| {
            let s = sep;
            sep = ",";
            write!(f, "{s}{key}=")
        };
        if let Some(s) = self.idle {
            field(f, Key::Idle)?;
            write!(f, "{s}s")?;
        }
        if let Some(s) = self.interval {
            field(f, Key::Interval)?;
            write!(f, "{s}s")?;
        }
        if let Some(n) = self.count {
            field(f, Key::Count)?;
            write!(f, "{n}")?;
        }
        match self.user_timeout {
            None => {}
            Some(UserTimeout::Auto) => {
                field(f, Key::UserTimeout)?;
                f.write_str("auto")?;
            }
            Some(UserTimeout::Millis(ms)) => {
                field(f, Key::UserTimeout)?;
                grammar::write_millis(f, ms.into())?;
            }
        }
        Ok(())
    }
}

/// The values a socket's keepalive timer runs on, every one known.
///
/// Read back from the kernel these may lie outside the grammar's limits (the
/// `tcp_keepalive_probes` sysctl goes to 255, `TCP_KEEPCNT` only to 127), so the fields are
/// plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Settings {
    /// Seconds without a received segment before the first probe.
    pub idle: u32,
    /// Seconds between probes.
    pub interval: u32,
    /// Unanswered probes before the connection is reset (ignored while a user timeout is set).
    pub count: u32,
    /// `TCP_USER_TIMEOUT` in milliseconds; 0 when off.
    pub user_timeout_ms: u32,
}

impl Settings {
    /// Linux's compiled-in defaults (`include/net/tcp.h`: `TCP_KEEPALIVE_TIME` 2 h,
    /// `TCP_KEEPALIVE_INTVL` 75 s, `TCP_KEEPALIVE_PROBES` 9), which every new network
    /// namespace starts with (`tcp_sk_init()` in `net/ipv4/tcp_ipv4.c`).
    pub const LINUX_DEFAULT: Settings = Settings {
        idle: 7200,
        interval: 75,
        count: 9,
        user_timeout_ms: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let p = Policy::parse("idle=1m,interval=10s,count=5,user-timeout=90s").unwrap();
        assert_eq!(p.idle(), Some(60));
        assert_eq!(
            p.to_string(),
            "idle=60s,interval=10s,count=5,user-timeout=90s"
        );
        assert_eq!(Policy::parse(&p.to_string()), Ok(p));
        let p = Policy::parse("user-timeout=1500ms").unwrap();
        assert_eq!(p.to_string(), "user-timeout=1500ms");
        let p = Policy::parse("count=3,user-timeout=auto").unwrap();
        assert_eq!(p.to_string(), "count=3,user-timeout=auto");
    }

    #[test]
    fn duplicates_are_refused() {
        let e = Policy::parse("idle=1,idle=2").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Duplicate);
        assert_eq!(e.to_string(), "policy key 'idle' is given twice");
        let mut p = Policy::parse("idle=1").unwrap();
        assert_eq!(
            p.set(Key::Idle, "2").unwrap_err().kind(),
            ErrorKind::Duplicate
        );
    }

    #[test]
    fn resolve_fills_gaps_and_works_out_auto() {
        let p = Policy::parse("idle=30,user-timeout=auto").unwrap();
        let s = p.resolve(&Settings::LINUX_DEFAULT).unwrap();
        assert_eq!(
            s,
            Settings {
                idle: 30,
                interval: 75,
                count: 9,
                user_timeout_ms: (30 + 75 * 9) * 1000
            }
        );
        assert_eq!(
            Policy::empty().resolve(&Settings::LINUX_DEFAULT),
            Ok(Settings::LINUX_DEFAULT)
        );
    }

    #[test]
    fn auto_past_the_limit_is_refused_at_parse_when_it_can_be() {
        let e = Policy::parse("idle=32767,interval=32767,count=127,user-timeout=auto").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AutoTooLarge);
        assert!(e.to_string().contains("4194176000 ms"), "{e}");
        // Without all three keys the defaults decide, at resolve time.
        let p = Policy::parse("interval=32767,count=127,user-timeout=auto").unwrap();
        assert!(p.resolve(&Settings::LINUX_DEFAULT).is_err());
    }

    #[test]
    fn from_settings_round_trips() {
        let s = Settings {
            idle: 7200,
            interval: 75,
            count: 9,
            user_timeout_ms: 0,
        };
        let p = Policy::from_settings(&s).unwrap();
        assert_eq!(p.to_string(), "idle=7200s,interval=75s,count=9");
        assert_eq!(p.resolve(&Settings::LINUX_DEFAULT), Ok(s));
        let bad = Settings { count: 255, ..s };
        assert_eq!(
            Policy::from_settings(&bad).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
    }
}
