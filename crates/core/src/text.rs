//! Strings from the cluster or a client, made safe to log.

use std::borrow::Cow;

/// `text` with every control character escaped (`\n`, `\r`, `\t`, else `\u{..}`), and the
/// Unicode line and paragraph separators and bidirectional overrides too, so a value from
/// the cluster or a client (a pod name holding `\n2026-11-29T00:00:00Z ERROR ...`) can
/// never start a forged line in the log or reorder what a terminal shows. Borrows when
/// there is nothing to escape.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        assert!(matches!(
            printable("loco-loco-emulator-0"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            printable("a\n2026-11-29T00:00:00Z ERROR forged\r\t\u{1b}[31m\u{2028}\u{202e}"),
            "a\\n2026-11-29T00:00:00Z ERROR forged\\r\\t\\u{1b}[31m\\u{2028}\\u{202e}"
        );
        assert_eq!(printable("héllo ünïcode"), "héllo ünïcode");
    }
}
