//! Text from outside (a process's name, a value someone typed, an environment variable) shown
//! to people: every control character written as an escape, so that it can neither break a
//! one-line message or a table row nor send the terminal a command. One scheme everywhere:
//! `\n`, `\r`, `\t`, `\xNN` for the other C0 controls and DEL, `\u{NN}` for C1 controls.
//! Allocation-free, for the shim's warnings too.

use core::fmt;

/// `text`, displayed with its control characters escaped.
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else {
                write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Bytes that should be text (a path, an argument), displayed as [`Printable`] does, with each
/// byte that is not part of valid UTF-8 written as `\xNN`.
pub struct PrintableBytes<'a>(pub &'a [u8]);

impl fmt::Display for PrintableBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            Printable(chunk.valid()).fmt(f)?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Unicode format characters (category Cf) that change how a line is shown without showing
/// themselves: bidirectional overrides and isolates (U+202E turns the rest of a line around),
/// zero-width spaces and joiners, the byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c as u32,
        0xAD | 0x061C | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064
        | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB)
}

/// Whether `c` is shown as itself.
pub fn plain(c: char) -> bool {
    c != '\\' && !c.is_control() && !invisible(c)
}

/// Writes `c`, escaped when it is a control or invisible format character. (A backslash is
/// written as it is; [`Printable`] doubles it, so that an escape it shows can only be one it
/// made.)
pub fn write_char(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        c if invisible(c) => write!(f, "\\u{{{:x}}}", c as u32),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if c.is_control() && (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32),
        c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32),
        c => f.write_char(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::format;

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_one_by_one() {
        assert_eq!(
            format!("{}", PrintableBytes(b"/tmp/\xff\xfe\xc3\xa9\n")),
            "/tmp/\\xff\\xfe\u{e9}\\n"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let show = |s: &str| format!("{}", Printable(s));
        assert_eq!(show("nginx"), "nginx");
        assert_eq!(show("evil\nFAKE"), "evil\\nFAKE");
        assert_eq!(show("\x1b]0;PWN\x07\r\x08"), "\\x1b]0;PWN\\x07\\r\\x08");
        assert_eq!(show("a\u{9b}b\x7f"), "a\\u{9b}b\\x7f");
        assert_eq!(show("héllo ✓"), "héllo ✓");
        // A real ESC and the text "\x1b" are told apart; a bidi override is shown, not obeyed.
        assert_eq!(show("A\\x1b"), "A\\\\x1b");
        assert_eq!(show("B\u{202e}A.exe"), "B\\u{202e}A.exe");
    }
}
