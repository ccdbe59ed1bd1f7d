//! The fuzz targets' checks (`fuzz_checks.rs`), run deterministically in every `cargo test`:
//! over the committed corpus in `fuzz/corpus/<target>/`, then over inputs from a fixed-seed
//! generator that writes policies and environments the way people and fuzzers get them wrong.
//! The fuzzer itself (nightly, open-ended) is run by hand: see fuzz/README.md.

#[path = "fuzz_checks.rs"]
mod fuzz_checks;

use fuzz_checks::{DD_DEBUG, DD_USE_KEEPALIVE, KEEPALIVE, check_env, check_parse};
use keepalive::policy::ErrorKind::*;
use keepalive::policy::injection::{COMPAT_VARS, ENV};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

/// Generated inputs per target.
const GENERATED: u64 = 100_000;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; the corpus is part of the tree", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let files: Vec<_> = files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    assert!(
        files.len() >= 10,
        "{}: {} files, expected the committed corpus",
        dir.display(),
        files.len()
    );
    files
}

/// Runs `check` on `data`; a panic (a broken invariant, or one inside the library) is
/// reported with the input, escaped, so it can be added to the corpus.
fn run<R>(check: fn(&[u8]) -> R, what: &dyn std::fmt::Display, data: &[u8]) -> R {
    match catch_unwind(AssertUnwindSafe(|| check(data))) {
        Ok(outcome) => outcome,
        Err(_) => panic!(
            "{what} fails; input (add it to fuzz/corpus/): b\"{}\"",
            data.escape_ascii()
        ),
    }
}

/// How often each outcome came up.
struct Tally<T>(Vec<(T, u64)>);

impl<T: PartialEq + std::fmt::Debug> Tally<T> {
    fn add(&mut self, outcome: T) {
        match self.0.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => self.0.push((outcome, 1)),
        }
    }

    fn count(&self, pred: impl Fn(&T) -> bool) -> u64 {
        self.0.iter().filter(|(o, _)| pred(o)).map(|(_, n)| n).sum()
    }
}

#[test]
fn corpus_injection_parse() {
    for (path, data) in corpus("injection_parse") {
        let _ = run(check_parse, &path.display(), &data);
    }
}

#[test]
fn corpus_injection_env() {
    for (path, data) in corpus("injection_env") {
        let _ = run(check_env, &path.display(), &data);
    }
}

#[test]
fn generated_injection_parse() {
    let mut g = Gen::new(0x6b65_6570_616c_6976);
    let mut data = Vec::new();
    let mut tally = Tally(Vec::new());
    for i in 0..GENERATED {
        data.clear();
        g.policy(&mut data);
        g.mutate(&mut data);
        tally.add(run(
            check_parse,
            &format_args!("generated input {i}"),
            &data,
        ));
    }
    // The generator reaches every way a policy can be refused, and accepts enough.
    let kinds = [
        EmptyField,
        UnknownKey,
        MissingValue,
        Duplicate,
        NotANumber,
        Negative,
        BadUnit,
        UnitNotAllowed,
        NotWholeSeconds,
        OutOfRange,
        AutoTooLarge,
        BadValue,
        TooMany,
    ];
    for kind in kinds {
        assert!(
            tally.count(|o| *o == Err(kind)) > 0,
            "no {kind:?}: {:?}",
            tally.0
        );
    }
    assert!(tally.count(Result::is_ok) > GENERATED / 10, "{:?}", tally.0);
}

#[test]
fn generated_injection_env() {
    let mut g = Gen::new(0x656e_7669_726f_6e73);
    let mut data = Vec::new();
    let mut tally = Tally(Vec::new());
    for i in 0..GENERATED {
        data.clear();
        g.env(&mut data);
        tally.add(run(
            check_env,
            &format_args!("generated environment {i}"),
            &data,
        ));
    }
    // Every variable is refused at times, both families disagree at times, and enough passes.
    for var in fuzz_checks::env_vars() {
        assert!(
            tally.count(|o| o.is_err_and(|(v, _)| v == var)) > 0,
            "{var} never refused"
        );
    }
    assert!(
        tally.count(|o| o.is_err_and(|(_, k)| k == Conflict)) > 0,
        "no conflict"
    );
    assert!(tally.count(Result::is_ok) > GENERATED / 10, "{:?}", tally.0);
}

/// The words the grammar is made of, and near misses.
const KEYS: &[&str] = &[
    "idle",
    "interval",
    "count",
    "user-timeout",
    "mode",
    "ports",
    "dest",
    "log",
    "inherit",
    "idel",
    "IDLE",
    "user_timeout",
    "",
    " idle ",
    "port",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "5",
    "30",
    "60",
    "75",
    "127",
    "128",
    "255",
    "1000",
    "1500",
    "7200",
    "32767",
    "32768",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999999999999999",
    "-1",
    "-0",
    "+5",
    "00000000000000000000000000000000000000000030",
    "1.5",
    "0x10",
];
const UNITS: &[&str] = &["", "", "", "ms", "s", "m", "h", "x", " s", "S", "sec", "µs"];
const WORDS: &[&str] = &[
    "auto", "force", "default", "syslog", "off", "yes", "no", "on", "AUTO", "Off", "maybe",
];
const ADDRESSES: &[&str] = &[
    "198.18.0.0/15",
    "198.18.0.1",
    "0.0.0.0/0",
    "10.0.0.0/33",
    "10.0.0.0/",
    "10.0.0.0/008",
    "::1/128",
    "::/0",
    "::ffff:198.18.0.1/96",
    "2001:db8::/33",
    "fe80::1%eth0",
    "example.com",
    "80-90",
    "90-80",
    "1-65535",
    "0-1",
    "5432-5432",
];
const PATHS: &[&str] = &[
    "/tmp/ka.log",
    "/",
    "/var/log/a=b",
    "/tmp/é",
    "relative.log",
    "/a b",
];
/// Characters that trouble parsers: whitespace of every kind, controls, separators, and
/// multi-byte characters that land across the 40-byte cut of error messages.
const ODD: &[&str] = &[
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x1b[31m",
    "\x7f",
    "\u{85}",
    "\u{a0}",
    "\u{2028}",
    "\u{feff}",
    ",",
    "=",
    "-",
    "/",
    ":",
    "é",
    "💥",
    "\u{10ffff}",
    "ß",
];

/// xorshift64*: small, fast and the same on every machine.
struct Gen(u64);

impl Gen {
    fn new(seed: u64) -> Self {
        Gen(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, in_: usize) -> bool {
        self.below(in_) == 0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }

    /// A value for any key: mostly well-formed, sometimes odd, sometimes long.
    fn value(&mut self, out: &mut Vec<u8>) {
        match self.below(10) {
            0..=3 => {
                out.extend_from_slice(self.pick(NUMBERS).as_bytes());
                out.extend_from_slice(self.pick(UNITS).as_bytes());
            }
            4 => out.extend_from_slice(self.pick(WORDS).as_bytes()),
            5 | 6 => out.extend_from_slice(self.pick(ADDRESSES).as_bytes()),
            7 => out.extend_from_slice(self.pick(PATHS).as_bytes()),
            8 => {
                // Past the 40 bytes an error message keeps.
                let (piece, times) = (self.pick(ODD), 20 + self.below(300));
                out.extend(std::iter::repeat_n(piece.as_bytes(), times).flatten());
            }
            _ => {
                for _ in 0..self.below(6) {
                    out.extend_from_slice(self.pick(ODD).as_bytes());
                }
            }
        }
        if self.chance(8) {
            out.extend_from_slice(self.pick(ODD).as_bytes());
        }
    }

    /// A value that suits `key`, or is just past what it takes.
    fn value_for(&mut self, key: &str, out: &mut Vec<u8>) {
        let mut put = |s: &str| out.extend_from_slice(s.as_bytes());
        match key {
            "idle" | "interval" => {
                let secs = self.pick(&["1", "3", "10", "30", "75", "7200", "32767", "32768", "0"]);
                match self.below(6) {
                    0 => put(&format!("{secs}000ms")),
                    1 => put(&format!("{secs}001ms")),
                    2 => put(&format!("{secs}s")),
                    3 => put(&format!("{}m", self.below(600))),
                    4 => put(&format!("{}h", self.below(12))),
                    _ => put(secs),
                }
            }
            "count" => put(self.pick(&["1", "3", "5", "9", "100", "127", "128", "0", "5s"])),
            "user-timeout" if self.chance(3) => put("auto"),
            "user-timeout" => put(&format!("{}{}", self.below(1 << 31), self.pick(UNITS))),
            "mode" => put(self.pick(&["default", "force", "forced", ""])),
            "inherit" => put(self.pick(&["yes", "no", "true"])),
            "log" => match self.below(5) {
                0 => put("syslog"),
                1 => put("off"),
                // Past the 256 bytes the shim keeps for a path.
                2 => put(&format!("/{}", "x".repeat(250 + self.below(12)))),
                _ => put(self.pick(PATHS)),
            },
            "ports" | "dest" => {
                // A list, sometimes longer than the shim has room for (16 ports, 8 networks).
                let most = if self.chance(4) { 20 } else { 4 };
                for i in 0..1 + self.below(most) {
                    if i > 0 {
                        put(",");
                    }
                    if key == "ports" {
                        let first = self.below(70_000);
                        match self.below(3) {
                            0 => put(&format!("{first}-{}", first + self.below(100))),
                            1 => put(&format!("{}", 1 + self.below(65_535))),
                            _ => put(&format!("{first}")),
                        }
                    } else {
                        put(self.pick(ADDRESSES));
                    }
                }
            }
            _ => self.value(out),
        }
    }

    /// Fields in the grammar: every key, lists, duplicates, empty fields, stray spaces.
    fn policy(&mut self, out: &mut Vec<u8>) {
        if self.chance(50) {
            // user-timeout=auto past TCP_USER_TIMEOUT's limit, or just inside it.
            let count = self.pick(&["65", "66", "127"]);
            out.extend_from_slice(
                format!("idle=32767,interval=32767,count={count},user-timeout=auto").as_bytes(),
            );
            return;
        }
        let fields = self.below(8);
        for i in 0..fields {
            if i > 0 {
                out.extend_from_slice(match self.below(30) {
                    0 => b", ",
                    1 => b",,",
                    2 => b" ,",
                    _ => b",",
                });
            }
            match self.below(16) {
                // A list goes on after a comma.
                0 => self.value(out),
                1 if self.chance(4) => {}
                2 | 3 => {
                    let key = self.pick(KEYS);
                    out.extend_from_slice(key.as_bytes());
                    if !self.chance(8) {
                        out.push(b'=');
                    }
                    self.value(out);
                }
                _ => {
                    let key = self.pick(&KEYS[..9]);
                    out.extend_from_slice(key.as_bytes());
                    out.push(b'=');
                    if self.chance(20) {
                        out.push(b' ');
                    }
                    self.value_for(key, out);
                }
            }
        }
        if self.chance(40) {
            out.push(b',');
        }
    }

    /// Byte-level damage, sometimes: flips, cuts, inserted bytes (invalid UTF-8 included).
    fn mutate(&mut self, data: &mut Vec<u8>) {
        if !self.chance(4) {
            return;
        }
        for _ in 0..1 + self.below(3) {
            let at = self.below(data.len() + 1);
            match self.below(4) {
                0 if at < data.len() => data[at] ^= 1 << self.below(8),
                1 if at < data.len() => {
                    data.remove(at);
                }
                2 => data.truncate(at),
                _ => data.insert(at, self.next() as u8),
            }
        }
    }

    /// An environment: the variables `from_env` reads, with values it takes and values it
    /// refuses (not UTF-8 among them), duplicates, and names it does not read.
    fn env(&mut self, out: &mut Vec<u8>) {
        let names: Vec<&str> = [ENV, KEEPALIVE, DD_USE_KEEPALIVE, DD_DEBUG]
            .into_iter()
            .chain(COMPAT_VARS.iter().map(|(n, _)| *n))
            .collect();
        for i in 0..self.below(7) {
            if i > 0 {
                out.push(0);
            }
            let name = match self.below(12) {
                0 => "PATH",
                1 => "KEEPIDLE ",
                2 => "keepidle",
                // KEEPALIVE_POLICY is rarer, so the compatibility variables get their turn.
                3..=5 if self.chance(3) => ENV,
                _ => names[1 + self.below(names.len() - 1)],
            };
            out.extend_from_slice(name.as_bytes());
            if self.chance(30) {
                continue;
            }
            out.push(b'=');
            let value = out.len();
            match name {
                ENV => self.policy(out),
                DD_USE_KEEPALIVE | DD_DEBUG if self.chance(2) => {
                    out.extend_from_slice(self.pick(&["0", "1", "01", "10", "", "true"]).as_bytes())
                }
                KEEPALIVE if self.chance(2) => out.extend_from_slice(
                    self.pick(&["off", "OFF", "oFf", "on", "", "of"]).as_bytes(),
                ),
                _ => match COMPAT_VARS.iter().find(|(n, _)| *n == name) {
                    Some((_, key)) if self.chance(2) => self.value_for(key.name(), out),
                    _ => self.value(out),
                },
            }
            if self.chance(10) {
                // Not UTF-8: a lone byte past ASCII, a cut sequence, an encoded surrogate.
                let bad: &[u8] = match self.below(4) {
                    0 => b"\xff",
                    1 => b"\xc3",
                    2 => b"\xed\xa0\x80",
                    _ => b"\xe2\x82",
                };
                let at = value + self.below(out.len() - value + 1);
                out.splice(at..at, bad.iter().copied());
            }
        }
    }
}
