//! A byte ring for the serial lines' queues: bytes go in and come out with whole-slice copies
//! (a `VecDeque<u8>` moves them one at a time, which on the exit path shows).

use alloc::vec::Vec;

/// A FIFO of bytes that grows when a push does not fit.
#[derive(Debug, Default)]
pub struct ByteRing {
    buffer: Vec<u8>,
    /// Index of the first byte.
    head: usize,
    len: usize,
}

impl ByteRing {
    /// An empty ring that has not allocated (fit for a `static`).
    pub const fn new() -> Self {
        Self {
            buffer: Vec::new(),
            head: 0,
            len: 0,
        }
    }

    /// Makes room for `bytes` bytes in all without growing later.
    pub fn reserve(&mut self, bytes: usize) {
        if bytes > self.buffer.len() {
            self.grow(bytes);
        }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `bytes` at the back.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.len + bytes.len() > self.buffer.len() {
            self.grow((self.len + bytes.len()).max(2 * self.buffer.len()));
        }
        let capacity = self.buffer.len();
        let tail = (self.head + self.len) % capacity;
        let first = bytes.len().min(capacity - tail);
        self.buffer[tail..tail + first].copy_from_slice(&bytes[..first]);
        self.buffer[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        self.len += bytes.len();
    }

    /// The queued bytes from the front up to where the buffer wraps (never empty unless the
    /// ring is).
    pub fn front(&self) -> &[u8] {
        let end = (self.head + self.len).min(self.buffer.len());
        &self.buffer[self.head..end]
    }

    /// Drops `count` bytes from the front.
    pub fn consume(&mut self, count: usize) {
        let count = count.min(self.len);
        self.len -= count;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + count) % self.buffer.len()
        };
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Moves the contents into a buffer of `capacity` bytes, the first byte at 0.
    fn grow(&mut self, capacity: usize) {
        let mut buffer = alloc::vec![0; capacity];
        let mut done = 0;
        while done < self.len {
            let piece = self.front_at(done);
            buffer[done..done + piece.len()].copy_from_slice(piece);
            done += piece.len();
        }
        self.buffer = buffer;
        self.head = 0;
    }

    /// The contiguous queued bytes starting `skip` bytes after the front.
    fn front_at(&self, skip: usize) -> &[u8] {
        let start = (self.head + skip) % self.buffer.len();
        let left = self.len - skip;
        &self.buffer[start..(start + left).min(self.buffer.len())]
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against a `VecDeque`: whatever is pushed comes out in order, however the pushes and
        /// partial takes interleave and however the ring grows.
        #[test]
        fn behaves_as_a_deque(ops in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..50), 0usize..60), 1..100), capacity in 0usize..64) {
            let mut ring = ByteRing::new();
            ring.reserve(capacity);
            let mut model = VecDeque::new();
            for (bytes, take) in ops {
                ring.push(&bytes);
                model.extend(&bytes);
                let mut taken = 0;
                while taken < take && !ring.is_empty() {
                    let front = ring.front();
                    prop_assert!(!front.is_empty());
                    let n = front.len().min(take - taken);
                    let expected: alloc::vec::Vec<u8> = model.drain(..n).collect();
                    prop_assert_eq!(&front[..n], &expected[..]);
                    ring.consume(n);
                    taken += n;
                }
                prop_assert_eq!(ring.len(), model.len());
            }
        }
    }
}
