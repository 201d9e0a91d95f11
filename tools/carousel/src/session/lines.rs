//! COM1 as lines: the byte stream split into lines ([`LineSplitter`]), and the lines the run
//! loop watches for ([`Com1Watch`]: the hypervisor's error before the run started, its panic).

use carousel_trace::verdict::{ERROR_PREFIX, PANIC_PREFIX};

/// A COM1 "line" longer than this is passed on in pieces.
pub const LINE_MAX: usize = 64 * 1024;

/// Splits a byte stream into lines: `\n` ends a line, a `\r` before it is dropped, invalid
/// UTF-8 becomes U+FFFD.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`, returning the lines they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(Self::text(&std::mem::take(&mut self.partial)));
            } else {
                self.partial.push(byte);
                if self.partial.len() >= LINE_MAX {
                    lines.push(Self::text(&std::mem::take(&mut self.partial)));
                }
            }
        }
        lines
    }

    /// The unterminated rest, if any (at the end of the stream).
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            None
        } else {
            Some(Self::text(&std::mem::take(&mut self.partial)))
        }
    }

    fn text(bytes: &[u8]) -> String {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// What the run loop learns from COM1.
#[derive(Debug, Default)]
pub struct Com1Watch {
    pub error_line: Option<String>,
    pub panic_line: Option<String>,
}

impl Com1Watch {
    /// Looks at one line; true when it is fatal (an error before Hello, or a panic).
    pub fn observe(&mut self, line: &str, hello_seen: bool) -> bool {
        if line.starts_with(PANIC_PREFIX) {
            self.panic_line.get_or_insert_with(|| line.to_string());
            return true;
        }
        if line.starts_with(ERROR_PREFIX) {
            self.error_line.get_or_insert_with(|| line.to_string());
            return !hello_seen;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_joins_pieces_and_drops_cr() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.feed(b"[carousel] hel").is_empty());
        assert_eq!(
            splitter.feed(b"lo\r\n[vm] a\n\n[vm] b"),
            vec!["[carousel] hello", "[vm] a", ""]
        );
        assert_eq!(splitter.feed(b"c\n"), vec!["[vm] bc"]);
        assert_eq!(splitter.finish(), None);
        assert!(splitter.feed(b"tail").is_empty());
        assert_eq!(splitter.finish().as_deref(), Some("tail"));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn splitter_survives_bad_utf8_and_long_lines() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.feed(b"a\xffb\n"), vec!["a\u{fffd}b"]);
        let long = vec![b'x'; LINE_MAX + 10];
        let lines = splitter.feed(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), LINE_MAX);
        assert_eq!(splitter.finish().map(|rest| rest.len()), Some(10));
    }

    #[test]
    fn splitter_byte_by_byte_matches_whole() {
        let stream = b"[carousel] one\r\n[a] two\n[b] three\npartial";
        let mut whole = LineSplitter::default();
        let expected = whole.feed(stream);
        let mut bytewise = LineSplitter::default();
        let got: Vec<String> = stream.iter().flat_map(|b| bytewise.feed(&[*b])).collect();
        assert_eq!(got, expected);
        assert_eq!(whole.finish(), bytewise.finish());
    }

    proptest::proptest! {
        #[test]
        fn splitter_is_independent_of_chunking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut whole = LineSplitter::default();
            let mut expected = whole.feed(&bytes);
            expected.extend(whole.finish());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = LineSplitter::default();
            let mut got = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                got.extend(pieces.feed(&bytes[from..cut]));
                from = cut;
            }
            got.extend(pieces.finish());
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn watch_flags_fatal_lines() {
        let mut watch = Com1Watch::default();
        assert!(!watch.observe("[hello] error: not mine", false));
        assert!(!watch.observe("[carousel] booting", false));
        assert!(watch.observe(
            "[carousel] error: this CPU cannot run Carousel: no VMX",
            false
        ));
        assert!(!watch.observe("[carousel] error: later, after Hello", true));
        assert!(watch.observe("[carousel] PANIC at x.rs:1: boom", true));
        assert_eq!(
            watch.error_line.as_deref(),
            Some("[carousel] error: this CPU cannot run Carousel: no VMX")
        );
        assert_eq!(
            watch.panic_line.as_deref(),
            Some("[carousel] PANIC at x.rs:1: boom")
        );
    }
}
