//! The checks behind the fuzz targets, written once and run two ways: `fuzz/fuzz_targets/*.rs`
//! include this file with `#[path]` and hand it whatever libFuzzer makes up (nightly, by hand:
//! see fuzz/README.md), and `tests/fuzz_inputs.rs` includes it the same way and runs it over
//! the committed corpus in `fuzz/corpus/` and a fixed-seed generator, in every `cargo test`.
//!
//! A check panics when an invariant breaks; that is what libFuzzer reports as a crash. Cargo
//! also builds this file as a test target of its own, whose tests show that each check accepts
//! what it should.
//!
//! It uses only the policy grammar (`keepalive` without its `std` feature, as the shim links it).

use keepalive::policy::injection::{COMPAT_VARS, ENV, Injection};
use keepalive::policy::{ErrorKind, Key, Log, Mode, Policy, PolicyError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// libkeepalive's switch: `off` in any case turns the shim off.
pub const KEEPALIVE: &str = "KEEPALIVE";
/// libdontdie's switch: a value starting with `0` turns the shim off.
pub const DD_USE_KEEPALIVE: &str = "DD_USE_KEEPALIVE";
/// libdontdie's debug switch: a value starting with `1` logs to syslog.
pub const DD_DEBUG: &str = "DD_DEBUG";

/// Every variable `Injection::from_env` reads.
pub fn env_vars() -> impl Iterator<Item = &'static str> {
    [ENV, KEEPALIVE, DD_USE_KEEPALIVE, DD_DEBUG]
        .into_iter()
        .chain(COMPAT_VARS.iter().map(|(name, _)| *name))
}

/// The longest error message allowed: a value is cut to 40 bytes and its control characters
/// are escaped (at most 6 characters each), so even two such values stay well inside this.
const MAX_MESSAGE: usize = 1024;

/// Parses arbitrary bytes as an injection and checks the result. Bytes that are not UTF-8
/// are parsed as their lossy conversion, so that the replacement character and the text around
/// it still exercise the grammar. Returns what came out: accepted, or the kind of refusal.
pub fn check_parse(data: &[u8]) -> Result<(), ErrorKind> {
    match std::str::from_utf8(data) {
        Ok(text) => check_parse_text(text),
        Err(_) => check_parse_text(&String::from_utf8_lossy(data)),
    }
}

/// `Injection::parse` on `text`: no panic; an injection writes back to text that parses to an
/// equal injection; a refusal is one bounded line; and a policy is parsed the same way by
/// `Policy::parse` and `Injection::parse` (one grammar, one parser).
pub fn check_parse_text(text: &str) -> Result<(), ErrorKind> {
    let parsed = Injection::parse(text);
    match &parsed {
        Ok(injection) => {
            check_round_trip(text, injection);
            check_filters(injection);
        }
        Err(e) => check_error(text, e),
    }
    match Policy::parse(text) {
        Ok(policy) => {
            let mut same = Injection::default();
            same.policy = policy;
            assert_eq!(
                parsed,
                Ok(same),
                "{text:?}: Policy::parse accepts it as {policy}, Injection::parse differs"
            );
        }
        // Only an injection may be empty or carry the shim's keys; any other refusal of a
        // policy is the injection's refusal too, at the same field.
        Err(e) if matches!(e.kind(), ErrorKind::Empty | ErrorKind::NotASocketOption) => {}
        Err(e) => assert_eq!(
            parsed,
            Err(e),
            "{text:?}: Policy::parse refuses it ({e}), Injection::parse differs"
        ),
    }
    parsed.map(drop).map_err(|e| e.kind())
}

/// `Injection::from_env` with an environment made of `data`: entries `NAME=VALUE` separated by
/// NUL bytes, as in `environ` (a value cannot hold a NUL there either); the first entry with a
/// name wins, as the shim's own lookup does; an entry without `=` names nothing.
///
/// Checks: no panic; an error names a variable that is set, in one bounded line;
/// `KEEPALIVE_POLICY`, when set, decides alone and exactly as `Injection::parse`; otherwise the
/// compatibility variables mean what they meant to libkeepalive and libdontdie, and no value
/// that is not UTF-8 is taken for an absent variable; an injection writes back to text that
/// parses to an equal injection (apart from `enabled`, which the grammar does not carry).
/// Returns what came out: accepted, or the variable refused and the kind of refusal.
pub fn check_env(data: &[u8]) -> Result<(), (&'static str, ErrorKind)> {
    let env = Env::new(data);
    let got = Injection::from_env(|name| env.get(name));
    let shown = env.to_string();
    match &got {
        Ok(injection) => {
            let mut written = *injection;
            written.enabled = true;
            check_round_trip(&shown, &written);
            check_filters(injection);
        }
        Err((var, e)) => {
            assert!(
                env_vars().any(|v| v == *var),
                "{shown}: the error names {var}, which from_env does not read"
            );
            assert!(
                env.get(var).is_some(),
                "{shown}: the error names {var}, which is not set"
            );
            check_error(&shown, e);
        }
    }

    if let Some(bytes) = env.get(ENV) {
        let alone = match std::str::from_utf8(bytes) {
            Ok(text) => Injection::parse(text),
            Err(_) => Err(PolicyError::not_utf8(bytes)),
        };
        assert_eq!(
            got,
            alone.map_err(|e| (ENV, e)),
            "{shown}: {ENV} is set, so it alone decides"
        );
        return got.map(drop).map_err(|(var, e)| (var, e.kind()));
    }

    let text = |var: &str| env.get(var).and_then(|b| std::str::from_utf8(b).ok());
    let unreadable = env_vars().find(|var| {
        env.get(var)
            .is_some_and(|b| std::str::from_utf8(b).is_err())
    });
    let injection = match got {
        Ok(injection) => injection,
        Err((var, e)) => {
            if e.kind() == ErrorKind::Conflict {
                let key = COMPAT_VARS.iter().find(|(v, _)| *v == var).map(|(_, k)| *k);
                let both = COMPAT_VARS
                    .iter()
                    .filter(|(v, k)| Some(*k) == key && env.get(v).is_some())
                    .count();
                assert_eq!(both, 2, "{shown}: {var} conflicts with a variable not set");
            }
            return Err((var, e.kind()));
        }
    };
    assert_eq!(
        unreadable, None,
        "{shown}: a value that is not UTF-8 was taken for an absent variable"
    );
    let off = text(KEEPALIVE).is_some_and(|v| v.eq_ignore_ascii_case("off"))
        || text(DD_USE_KEEPALIVE).is_some_and(|v| v.starts_with('0'));
    assert_eq!(injection.enabled, !off, "{shown}: on or off");
    let syslog = text(DD_DEBUG).is_some_and(|v| v.starts_with('1'));
    let log = if syslog { Log::Syslog } else { Log::Off };
    assert_eq!(injection.log(), log, "{shown}: DD_DEBUG");
    assert_eq!(injection.mode, Mode::Default, "{shown}: mode");
    assert!(injection.inherit && !injection.is_filtered(), "{shown}");
    assert_eq!(injection.policy.user_timeout(), None, "{shown}");
    for key in [Key::Idle, Key::Interval, Key::Count] {
        let given = COMPAT_VARS
            .iter()
            .filter(|(_, k)| *k == key)
            .find_map(|(var, _)| text(var));
        let expected = given.map(|v| {
            let mut p = Policy::empty();
            p.set(key, v).expect("from_env accepted the value");
            value_of(&p, key)
        });
        assert_eq!(
            value_of(&injection.policy, key),
            expected.flatten(),
            "{shown}: {key:?} from the compatibility variables"
        );
    }
    Ok(())
}

fn value_of(p: &Policy, key: Key) -> Option<u32> {
    match key {
        Key::Idle => p.idle(),
        Key::Interval => p.interval(),
        Key::Count => p.count(),
        _ => None,
    }
}

fn check_round_trip(input: &str, injection: &Injection) {
    let written = injection.to_string();
    assert_eq!(
        Injection::parse(&written).as_ref(),
        Ok(injection),
        "{input:?} gives {injection:?}, written {written:?}, which parses to something else"
    );
}

/// The filters answer for any address without panicking, and admit nothing when unset.
fn check_filters(injection: &Injection) {
    let ips = [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped()),
        IpAddr::V6(Ipv6Addr::new(0xffff, 0, 0, 0, 0, 0, 0, 0xffff)),
    ];
    for port in [0, 1, 80, 5432, 65535] {
        let local = injection.matches_local(port);
        let remote = ips.iter().any(|&ip| injection.matches_remote(ip, port));
        if !injection.is_filtered() {
            assert!(
                !local && !remote,
                "{injection:?} admits port {port} unfiltered"
            );
        }
        if local {
            assert!(
                injection.ports().iter().any(|r| r.contains(port)),
                "{injection:?} admits local port {port}, not listed"
            );
        }
    }
}

/// A refusal is one line, bounded, with every control character of the input escaped.
fn check_error(input: &str, e: &PolicyError) {
    let msg = e.to_string();
    assert!(!msg.is_empty(), "{input:?}: empty message for {e:?}");
    assert!(
        !msg.chars().any(char::is_control),
        "{input:?}: the message holds a control character: {msg:?}"
    );
    assert!(
        msg.len() <= MAX_MESSAGE,
        "{input:?}: a message of {} bytes: {msg:?}",
        msg.len()
    );
}

/// An environment as `environ` holds it, borrowed from the fuzz input.
pub struct Env<'a> {
    entries: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Env<'a> {
    /// Splits `data` into `NAME=VALUE` entries at NUL bytes.
    pub fn new(data: &'a [u8]) -> Self {
        let entries = data
            .split(|&b| b == 0)
            .filter_map(|entry| {
                let eq = entry.iter().position(|&b| b == b'=')?;
                Some((&entry[..eq], &entry[eq + 1..]))
            })
            .collect();
        Env { entries }
    }

    /// The value of the first entry named `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.entries
            .iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| *v)
    }
}

/// The entries, escaped, for messages.
impl std::fmt::Display for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("env [")?;
        for (i, (n, v)) in self.entries.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{}={}", n.escape_ascii(), v.escape_ascii())?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_pass_what_the_grammar_accepts() {
        let full = b"idle=30s,interval=10s,count=5,mode=force,ports=5432,6379,dest=::1/128";
        assert_eq!(check_parse(full), Ok(()));
        assert_eq!(check_parse(b""), Ok(()));
        assert_eq!(check_parse(b"idle=5\n\x1b[31m"), Err(ErrorKind::BadUnit));
        assert_eq!(check_parse(b"idle=5,\xff"), Err(ErrorKind::UnknownKey));
        let compat = b"KEEPIDLE=30\0DD_TCP_KEEPALIVE_TIME=30s\0KEEPALIVE=Off\0DD_DEBUG=1";
        assert_eq!(check_env(compat), Ok(()));
        assert_eq!(
            check_env(b"KEEPALIVE_POLICY=\xff\0KEEPIDLE=5"),
            Err((ENV, ErrorKind::NotUtf8))
        );
        assert_eq!(
            check_env(b"KEEPINTVL=5\xc3"),
            Err(("KEEPINTVL", ErrorKind::NotUtf8))
        );
    }

    #[test]
    fn environment_entries_split_like_environ() {
        let env = Env::new(b"A=1\0B\0A=2\0=x\0C==\0D=");
        assert_eq!(env.get("A"), Some(&b"1"[..]));
        assert_eq!(env.get("B"), None);
        assert_eq!(env.get(""), Some(&b"x"[..]));
        assert_eq!(env.get("C"), Some(&b"="[..]));
        assert_eq!(env.get("D"), Some(&b""[..]));
        assert_eq!(env.to_string(), "env [A=1 A=2 =x C== D=]");
    }
}
