//! Log-safe rendering of strings that came from a client or a peer (realms, route names, close
//! reasons, certificate names).
//!
//! Log lines are one event per line of `key=value` fields. A value a remote party chose must not
//! be able to end the line (`\n`, `\r`, U+2028), start a fake one, move the cursor or recolour a
//! terminal (ESC and the other C0/C1 controls), hide text (bidi overrides, zero-width
//! characters), or fake a field of its own (`realm=x peer=admin`). [`Escaped`] therefore writes
//! the value in double quotes, with `"` and `\` backslash-escaped and everything that is not a
//! printable character written as `\n`, `\r`, `\t` or `\u{XXXX}`. What it prints never contains
//! a raw control character, whatever the input.
//!
//! Why not rely on tracing: `tracing-subscriber`'s formatter writes a `%value` field verbatim,
//! newlines and ESC included; it escapes ESC, BEL, BS, FF, DEL and C1 controls in the message
//! only, and never newlines. `?value` of a `&str` uses `Debug`, which is safe but easy to forget
//! and unavailable inside a composed message. Use `%Escaped(s)` (or [`escaped`]) for every string
//! from the wire, in fields and in messages alike.

use std::fmt::{self, Write};

/// Displays a string quoted and escaped so that it can go into a log line as one value. See the
/// module documentation for the rules.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

/// Shorthand for [`Escaped`]: `tracing::info!(realm = %escaped(&realm), ...)`.
pub fn escaped(s: &str) -> Escaped<'_> {
    Escaped(s)
}

/// Like [`Escaped`] for bytes that should be UTF-8 but may not be (a close reason, a realm
/// before it was checked): valid UTF-8 is shown as text, every other byte as `\xNN`.
#[derive(Clone, Copy, Debug)]
pub struct EscapedBytes<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        write_escaped(f, self.0)?;
        f.write_char('"')
    }
}

impl fmt::Display for EscapedBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for chunk in self.0.utf8_chunks() {
            write_escaped(f, chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_char('"')
    }
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    // Runs of plain characters are written in one call; only the rest is looked at closely.
    let mut plain_from = 0;
    for (i, c) in s.char_indices() {
        if is_plain(c) {
            continue;
        }
        f.write_str(&s[plain_from..i])?;
        plain_from = i + c.len_utf8();
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            _ => write!(f, "\\u{{{:x}}}", c as u32)?,
        }
    }
    f.write_str(&s[plain_from..])
}

/// Printable ASCII except the quote and the backslash, and non-ASCII characters that Rust's
/// own `escape_debug` leaves alone: it escapes control (Cc), format (Cf: bidi overrides,
/// zero-width joiners, BOM), line and paragraph separators, private-use, surrogate and
/// unassigned code points, and combining marks.
fn is_plain(c: char) -> bool {
    if c.is_ascii() {
        return (c == ' ' || c.is_ascii_graphic()) && c != '"' && c != '\\';
    }
    let mut e = c.escape_debug();
    e.next() == Some(c) && e.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn esc(s: &str) -> String {
        Escaped(s).to_string()
    }

    #[test]
    fn plain_values_are_only_quoted() {
        assert_eq!(esc("com.example.realm1"), "\"com.example.realm1\"");
        assert_eq!(esc(""), "\"\"");
        assert_eq!(esc("a b"), "\"a b\"");
        assert_eq!(esc("réalm-ü"), "\"réalm-ü\"");
        assert_eq!(escaped("x").to_string(), "\"x\"");
    }

    #[test]
    fn line_breaks_controls_and_terminal_escapes_are_escaped() {
        assert_eq!(
            esc("r\nINFO forged line"),
            "\"r\\nINFO forged line\"",
            "a newline must not start a line of the client's choosing"
        );
        assert_eq!(esc("a\r\tb"), "\"a\\r\\tb\"");
        assert_eq!(esc("\x1b[31mred\x1b[0m"), "\"\\u{1b}[31mred\\u{1b}[0m\"");
        assert_eq!(esc("\0\x07\x7f"), "\"\\u{0}\\u{7}\\u{7f}\"");
        assert_eq!(esc("\u{85}\u{9b}"), "\"\\u{85}\\u{9b}\"", "C1 controls");
        assert_eq!(esc("a\u{2028}b\u{2029}"), "\"a\\u{2028}b\\u{2029}\"");
        assert_eq!(esc("\u{202e}evil\u{200b}"), "\"\\u{202e}evil\\u{200b}\"");
        assert_eq!(esc("\u{feff}"), "\"\\u{feff}\"");
    }

    #[test]
    fn quotes_and_backslashes_cannot_fake_a_field() {
        assert_eq!(
            esc("x\" peer=\"admin"),
            "\"x\\\" peer=\\\"admin\"",
            "the value stays one quoted string"
        );
        assert_eq!(esc("a\\b"), "\"a\\\\b\"");
        assert_eq!(esc("\\\""), "\"\\\\\\\"\"");
    }

    #[test]
    fn bytes_show_invalid_utf8_as_hex() {
        assert_eq!(
            EscapedBytes(b"ok\xff\n\xc3\xa9").to_string(),
            "\"ok\\xff\\né\""
        );
        assert_eq!(EscapedBytes(b"").to_string(), "\"\"");
    }

    /// Undoes the escaping, to show that nothing is lost.
    fn unescape(s: &str) -> String {
        let inner = &s[1..s.len() - 1];
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    let n = u32::from_str_radix(&hex, 16).unwrap();
                    out.push(char::from_u32(n).unwrap());
                }
                Some(other) => out.push(other),
                None => panic!("dangling backslash in {s:?}"),
            }
        }
        out
    }

    /// Whether `s` (an escaped value) has a `"` that is not preceded by an escaping backslash,
    /// other than the two delimiting ones.
    fn has_unescaped_quote_inside(s: &str) -> bool {
        let inner = &s[1..s.len() - 1];
        let mut backslashes = 0;
        for c in inner.chars() {
            if c == '"' && backslashes % 2 == 0 {
                return true;
            }
            backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        }
        false
    }

    proptest! {
        #[test]
        fn no_output_contains_a_line_break_or_escape(s in any::<String>()) {
            let out = esc(&s);
            prop_assert!(!out.contains(['\n', '\r', '\x1b', '\u{2028}', '\u{2029}']), "{out:?}");
            prop_assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
            prop_assert!(out.starts_with('"') && out.ends_with('"') && out.len() >= 2);
            prop_assert!(!has_unescaped_quote_inside(&out), "{out:?}");
            prop_assert_eq!(unescape(&out), s);
        }

        #[test]
        fn controls_heavy_input_is_escaped_too(s in "[\\x00-\\x1f\\x7f-\\u{a0}\"\\\\a ]{0,40}") {
            let out = esc(&s);
            prop_assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
            prop_assert!(!has_unescaped_quote_inside(&out), "{out:?}");
            prop_assert_eq!(unescape(&out), s);
        }

        #[test]
        fn bytes_never_yield_a_control_character(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let out = EscapedBytes(&b).to_string();
            prop_assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
            prop_assert!(!has_unescaped_quote_inside(&out), "{out:?}");
        }
    }
}
