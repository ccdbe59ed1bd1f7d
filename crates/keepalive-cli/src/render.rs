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

/// The widest line the human output writes, in terminal columns.
pub const WIDTH: usize = 100;

/// The columns `text` takes on a terminal: East Asian wide characters take two, combining
/// marks none (unicode-width, after Unicode's East Asian Width).
pub fn cols(text: &str) -> usize {
    unicode_width::UnicodeWidthStr::width(text)
}

/// `text` folded at spaces into lines of at most [`WIDTH`] columns, the first starting with
/// `first`, the others with `rest`; each line ends in a newline. A word wider than a line (a
/// long path) stands on a line of its own.
pub fn wrap(text: &str, first: &str, rest: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !empty && cols(&line) + 1 + cols(word) > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest.to_owned();
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// `text` with every line wider than [`WIDTH`] folded ([`wrap`]): its continuation lines are
/// indented two more spaces than the line itself.
pub fn fit(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if cols(line) <= WIDTH {
            out.push_str(line);
            out.push('\n');
        } else {
            let body = line.trim_start_matches(' ');
            let indent = &line[..line.len() - body.len()];
            out.push_str(&wrap(body, indent, &format!("{indent}  ")));
        }
    }
    out
}

/// `text` with every control character written as an escape ([`keepalive::printable`]).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().all(keepalive::printable::plain) {
        keepalive::printable::Printable(text).to_string().into()
    } else {
        text.into()
    }
}

/// A message for one line of standard error: control and invisible characters escaped as in
/// [`printable`], backslashes left alone (the values quoted in it are escaped already where
/// they were quoted; escaping again would double them).
pub fn message(text: &str) -> std::borrow::Cow<'_, str> {
    if text
        .chars()
        .all(|c| c == '\\' || keepalive::printable::plain(c))
    {
        return text.into();
    }
    let mut out = String::new();
    for c in text.chars() {
        let _ = keepalive::printable::write_char(&mut out, c);
    }
    out.into()
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

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("nginx"), "nginx");
        assert_eq!(printable("evil\nFAKE"), "evil\\nFAKE");
        assert_eq!(
            printable("\x1b]0;PWN\x07\r\x08"),
            "\\x1b]0;PWN\\x07\\r\\x08"
        );
        assert_eq!(printable("a\u{9b}b\x7f"), "a\\u{9b}b\\x7f");
        assert_eq!(printable("héllo ✓"), "héllo ✓");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        assert_eq!(cols("漢字"), 4);
        let out = wrap(&"漢字 ".repeat(30), "", "");
        assert!(out.lines().all(|l| cols(l) <= WIDTH) && out.lines().count() == 2);
    }

    #[test]
    fn fitting() {
        let long = format!("  {}", "word ".repeat(30));
        let out = fit(&format!("short\n{long}\n"));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "short");
        assert!(lines[1].starts_with("  word") && lines[2].starts_with("    word"));
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH));
    }

    #[test]
    fn wrapping() {
        let text = "word ".repeat(60);
        let out = wrap(&text, "note: ", "  ");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() == 4 && lines.iter().all(|l| l.chars().count() <= WIDTH));
        assert!(lines[0].starts_with("note: word") && lines[1].starts_with("  word"));
        assert_eq!(out.matches("word").count(), 60);
        let long = "x".repeat(150);
        assert_eq!(
            wrap(&format!("a {long} b"), "", ""),
            format!("a\n{long}\nb\n")
        );
        assert_eq!(wrap("short", "- ", "  "), "- short\n");
    }
}
