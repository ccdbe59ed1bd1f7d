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
            write_char(f, c)?;
        }
        Ok(())
    }
}

/// Writes `c`, escaped when it is a control character.
pub fn write_char(f: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
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
    fn control_characters_are_escaped() {
        let show = |s: &str| format!("{}", Printable(s));
        assert_eq!(show("nginx"), "nginx");
        assert_eq!(show("evil\nFAKE"), "evil\\nFAKE");
        assert_eq!(show("\x1b]0;PWN\x07\r\x08"), "\\x1b]0;PWN\\x07\\r\\x08");
        assert_eq!(show("a\u{9b}b\x7f"), "a\\u{9b}b\\x7f");
        assert_eq!(show("héllo ✓"), "héllo ✓");
    }
}
