//! Cuts a guest's serial output into lines, for forwarding to the host console.
//!
//! Lines end at `'\n'`; `'\r'` is dropped. A line that reaches [`LINE_CAPACITY`] bytes is emitted
//! as it stands and the rest continues on the next line, so no byte is lost and the buffer is
//! fixed-size.

/// Longest line emitted; longer output is cut into lines of this length.
pub const LINE_CAPACITY: usize = 200;

/// The unfinished line of a guest's serial output.
#[derive(Debug)]
pub struct LineBuffer {
    bytes: [u8; LINE_CAPACITY],
    len: usize,
    /// The last emitted line was cut at [`LINE_CAPACITY`], not ended by `'\n'`.
    cut: bool,
}

impl LineBuffer {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self {
            bytes: [0; LINE_CAPACITY],
            len: 0,
            cut: false,
        }
    }

    /// Adds one transmitted byte. Returns the completed line, without its `'\n'`, when this byte
    /// ends one.
    pub fn push(&mut self, byte: u8) -> Option<&[u8]> {
        if byte == b'\r' {
            return None;
        }
        let follows_cut = core::mem::replace(&mut self.cut, false);
        if byte == b'\n' {
            // A newline right after a cut ends the cut line; it is not an empty line of its own.
            return if follows_cut { None } else { Some(self.take()) };
        }
        self.bytes[self.len] = byte;
        self.len += 1;
        if self.len == LINE_CAPACITY {
            self.cut = true;
            return Some(self.take());
        }
        None
    }

    /// Takes the unfinished line, if it holds anything (say, when the guest stops).
    pub fn flush(&mut self) -> Option<&[u8]> {
        self.cut = false;
        if self.len == 0 {
            None
        } else {
            Some(self.take())
        }
    }

    fn take(&mut self) -> &[u8] {
        let len = core::mem::take(&mut self.len);
        &self.bytes[..len]
    }
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// Every line `input` yields, then the flushed remainder.
    fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        let mut buffer = LineBuffer::new();
        let mut lines: Vec<Vec<u8>> = input
            .iter()
            .filter_map(|&byte| buffer.push(byte).map(<[u8]>::to_vec))
            .collect();
        lines.extend(buffer.flush().map(<[u8]>::to_vec));
        lines
    }

    #[test]
    fn splits_on_newline_and_drops_carriage_returns() {
        assert_eq!(lines(b"xv6...\r\n$ ls\n"), [&b"xv6..."[..], b"$ ls"]);
    }

    #[test]
    fn empty_lines_are_lines() {
        assert_eq!(lines(b"\n\na\n"), [&b""[..], b"", b"a"]);
    }

    #[test]
    fn flush_yields_the_partial_line_once() {
        let mut buffer = LineBuffer::new();
        assert_eq!(buffer.push(b'$'), None);
        assert_eq!(buffer.push(b' '), None);
        assert_eq!(buffer.flush(), Some(&b"$ "[..]));
        assert_eq!(buffer.flush(), None);
    }

    #[test]
    fn long_lines_are_cut_without_loss() {
        let mut input = [b'a'; 2 * LINE_CAPACITY + 5].to_vec();
        input.push(b'\n');
        let lines = lines(&input);
        let lengths: Vec<usize> = lines.iter().map(Vec::len).collect();
        assert_eq!(lengths, [LINE_CAPACITY, LINE_CAPACITY, 5]);
    }

    #[test]
    fn newline_right_after_a_cut_adds_no_empty_line() {
        let mut input = [b'a'; LINE_CAPACITY].to_vec();
        input.extend_from_slice(b"\r\nb\n");
        assert_eq!(lines(&input), [&[b'a'; LINE_CAPACITY][..], b"b"]);
    }

    proptest! {
        /// Lines never exceed the capacity or hold line endings, and together they carry every
        /// other byte in order.
        #[test]
        fn lines_carry_every_byte(
            input in prop::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()],
                0..1000,
            )
        ) {
            let lines = lines(&input);
            for line in &lines {
                prop_assert!(line.len() <= LINE_CAPACITY);
                prop_assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
            }
            let carried: Vec<u8> = lines.concat();
            let expected: Vec<u8> =
                input.iter().copied().filter(|&byte| byte != b'\n' && byte != b'\r').collect();
            prop_assert_eq!(carried, expected);
        }
    }
}
