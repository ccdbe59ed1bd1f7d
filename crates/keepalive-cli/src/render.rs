//! Shared rendering: durations for people, JSON for programs.

use serde::Serialize;

/// A duration in milliseconds the way people read it: `2h11m15s`, `5m50s`, `924.6s` as
/// `15m24.6s`, `0s`.
pub fn duration_ms(ms: u64) -> String {
    let (h, m, s, frac) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if frac > 0 {
        let frac = format!("{frac:03}");
        out += &format!("{s}.{}s", frac.trim_end_matches('0'));
    } else if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

/// Seconds as [`duration_ms`] does.
pub fn duration_s(s: u64) -> String {
    duration_ms(s.saturating_mul(1000))
}

/// Prints `value` as pretty JSON on stdout.
pub fn json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    out(&text)
}

/// Writes `text` to standard output in one go and flushes it. A reader that went away
/// (`| head`) is a broken pipe, which main ends quietly on; any other failure (/dev/full) is
/// an error naming what failed, never a panic.
pub fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| {
            let kind = e.kind();
            anyhow::Error::new(std::io::Error::new(
                kind,
                format!("writing to standard output: {e}"),
            ))
        })
}

/// Writes `text` to standard error, for progress and notes; a failure there has nobody to
/// be told to, and is ignored.
pub fn note(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_s(7875), "2h11m15s");
        assert_eq!(duration_s(7200), "2h");
        assert_eq!(duration_s(350), "5m50s");
        assert_eq!(duration_ms(924_600), "15m24.6s");
        assert_eq!(duration_ms(1_500), "1.5s");
        assert_eq!(duration_ms(0), "0s");
        assert_eq!(duration_s(3601), "1h1s");
    }
}
