//! What Carousel's fuzz targets (`fuzz_targets/`) share.

/// Cuts `bytes` into pieces of 1 to `longest` bytes, in order, their lengths drawn from a
/// xorshift32 generator seeded with `seed`: a byte stream as a streaming decoder meets it, in
/// reads of arbitrary sizes.
pub fn pieces(bytes: &[u8], seed: u32, longest: usize) -> Pieces<'_> {
    Pieces {
        rest: bytes,
        state: seed | 1,
        longest: longest.max(1),
    }
}

/// The iterator [`pieces`] returns.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    rest: &'a [u8],
    state: u32,
    longest: usize,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let take = (self.state as usize % self.longest + 1).min(self.rest.len());
        let (piece, rest) = self.rest.split_at(take);
        self.rest = rest;
        Some(piece)
    }
}
