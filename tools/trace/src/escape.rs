//! Text a guest supplied, made safe to show: console lines, check and metric names, VM names and
//! the hypervisor's messages that quote the guest (stop reasons). A guest must not be able to
//! clear the terminal, move the cursor, forge a line of the tool's own (`[carousel] PANIC …`)
//! or flood a report: every control character becomes visible text (`\x1b`, `\x0a`,
//! `\u{202e}`) and every string has a length limit.
//!
//! The model applies [`name`] and [`message`] as it folds the records, so every report reads
//! safe strings; [`console_line`] is for COM1 as it is shown; [`html`] escapes for the HTML
//! pages on top. JSON and CSV quote what they must themselves (`serde_json`, `csv`).

use std::fmt::Write;

use carousel_protocol::hypercall::CHECK_NAME_MAX;

/// Most characters of a name shown (the hypervisor accepts CHECK and METRIC names this long).
pub const NAME_MAX: usize = CHECK_NAME_MAX as usize;
/// Most characters of a message shown (a stop reason's text, a CPU's name).
pub const MESSAGE_MAX: usize = 512;
/// Most characters of one console line shown.
pub const CONSOLE_LINE_MAX: usize = 4096;

/// True for the characters that must not reach a terminal or a report as they are: every
/// control character (C0, DEL, C1) and the Unicode ones that reorder or break lines
/// (bidirectional overrides and isolates, line and paragraph separators).
pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// `text` with every [`unsafe_char`] written visibly: `\xNN` below U+0080, else `\u{NNNN}`;
/// tabs too unless `keep_tabs`.
fn visible_with(text: &str, keep_tabs: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !unsafe_char(c) || (keep_tabs && c == '\t') {
            out.push(c);
        } else if u32::from(c) < 0x80 {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        }
    }
    out
}

/// `text` with every [`unsafe_char`] (tabs and newlines included) written visibly.
pub fn visible(text: &str) -> String {
    visible_with(text, false)
}

/// `text` cut to at most `max` characters, a marker saying how much was left out in the last of
/// them (`…[+9936 chars]`); unchanged when it fits, so cutting twice changes nothing more.
pub fn capped(text: &str, max: usize) -> String {
    let length = text.chars().count();
    if length <= max {
        return text.to_string();
    }
    for keep in (0..=max).rev() {
        let marker = format!("…[+{} chars]", length - keep);
        if keep + marker.chars().count() <= max {
            let mut out: String = text.chars().take(keep).collect();
            out.push_str(&marker);
            return out;
        }
    }
    // No room for a marker.
    text.chars().take(max).collect()
}

/// A name as reports show it: visible, at most [`NAME_MAX`] characters.
pub fn name(text: &str) -> String {
    capped(&visible(text), NAME_MAX)
}

/// A message as reports show it: visible, at most [`MESSAGE_MAX`] characters.
pub fn message(text: &str) -> String {
    capped(&visible(text), MESSAGE_MAX)
}

/// One console line as the terminal shows it: visible (tabs kept), at most
/// [`CONSOLE_LINE_MAX`] characters.
pub fn console_line(text: &str) -> String {
    capped(&visible_with(text, true), CONSOLE_LINE_MAX)
}

/// Text with the five HTML-special characters escaped, and every [`unsafe_char`] written
/// visibly: safe in element content and in quoted attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in visible(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(
            visible("\x1b[2J\n[carousel] PANIC"),
            "\\x1b[2J\\x0a[carousel] PANIC"
        );
        assert_eq!(
            visible("a\tb\rc\x7f\u{9b}d\u{202e}"),
            "a\\x09b\\x0dc\\x7f\\u{009b}d\\u{202e}"
        );
        assert_eq!(console_line("ls\t-l\x1b[0m"), "ls\t-l\\x1b[0m");
        assert_eq!(visible("plain · text é"), "plain · text é");
        assert_eq!(visible(&visible("\x1b")), visible("\x1b"));
    }

    #[test]
    fn long_text_is_capped_with_a_marker() {
        let long = "x".repeat(10_240);
        let name = name(&long);
        assert_eq!(name.chars().count(), NAME_MAX);
        assert!(name.ends_with("…[+10191 chars]"), "{name}");
        assert_eq!(capped(&name, NAME_MAX), name);
        assert_eq!(capped("short", 3).chars().count(), 3);
        assert_eq!(capped("fits", 4), "fits");
    }

    #[test]
    fn html_escapes_markup_and_controls() {
        assert_eq!(
            html(r#"<b a="1">'&'</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
        assert_eq!(html("a\x1bb"), "a\\x1bb");
    }

    proptest::proptest! {
        #[test]
        fn no_unsafe_character_survives(text in ".*", max in 0usize..100) {
            for shown in [name(&text), message(&text), console_line(&text), html(&text), capped(&visible(&text), max)] {
                proptest::prop_assert!(!shown.chars().any(|c| unsafe_char(c) && c != '\t'), "{shown:?}");
            }
            proptest::prop_assert!(capped(&text, max).chars().count() <= max);
        }
    }
}
