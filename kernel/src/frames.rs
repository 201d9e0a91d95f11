//! Bookkeeping of physical frames: one bit per 4 KiB frame, set while the frame is in use.
//!
//! The bitmap starts all-used; the boot code frees the ranges the memory map calls available
//! and then marks the hypervisor image, the boot information and the modules used again.

/// A bitmap over frames 0..frames.
#[derive(Debug)]
pub struct FrameBitmap<'a> {
    words: &'a mut [u64],
    frames: u64,
    free: u64,
    /// No free frame exists below this word (a search hint, never wrong, sometimes early).
    hint: usize,
}

impl<'a> FrameBitmap<'a> {
    /// A bitmap with every frame in use, covering `words.len() * 64` frames.
    pub fn new_all_used(words: &'a mut [u64]) -> Self {
        words.fill(u64::MAX);
        let frames = words.len() as u64 * 64;
        Self {
            words,
            frames,
            free: 0,
            hint: 0,
        }
    }

    /// Number of frames the bitmap covers.
    pub fn capacity(&self) -> u64 {
        self.frames
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    fn set(&mut self, frame: u64, used: bool) {
        let (word, bit) = ((frame / 64) as usize, frame % 64);
        let was_used = self.words[word] & (1 << bit) != 0;
        if used && !was_used {
            self.words[word] |= 1 << bit;
            self.free -= 1;
        } else if !used && was_used {
            self.words[word] &= !(1 << bit);
            self.free += 1;
            self.hint = self.hint.min(word);
        }
    }

    /// Marks frames [first, first + count) free; frames beyond the bitmap are ignored.
    pub fn release_range(&mut self, first: u64, count: u64) {
        let end = first.saturating_add(count).min(self.frames);
        for frame in first..end {
            self.set(frame, false);
        }
    }

    /// Marks frames [first, first + count) used; frames beyond the bitmap are ignored.
    pub fn reserve_range(&mut self, first: u64, count: u64) {
        let end = first.saturating_add(count).min(self.frames);
        for frame in first..end {
            self.set(frame, true);
        }
    }

    /// True when `frame` is in use (or beyond the bitmap).
    pub fn is_used(&self, frame: u64) -> bool {
        frame >= self.frames || self.words[(frame / 64) as usize] & (1 << (frame % 64)) != 0
    }

    /// Takes one free frame, lowest first.
    pub fn allocate(&mut self) -> Option<u64> {
        let word = (self.hint..self.words.len()).find(|&w| self.words[w] != u64::MAX)?;
        self.hint = word;
        let frame = word as u64 * 64 + u64::from((!self.words[word]).trailing_zeros());
        self.set(frame, true);
        Some(frame)
    }

    /// Takes `count` free frames in a row, lowest first.
    pub fn allocate_contiguous(&mut self, count: u64) -> Option<u64> {
        if count == 0 {
            return None;
        }
        let mut run_start = self.hint as u64 * 64;
        let mut frame = run_start;
        while frame < self.frames {
            if self.is_used(frame) {
                frame += 1;
                run_start = frame;
                continue;
            }
            frame += 1;
            if frame - run_start == count {
                self.reserve_range(run_start, count);
                return Some(run_start);
            }
        }
        None
    }

    /// Returns a frame taken earlier. Returns false (and changes nothing) if it was free.
    pub fn free(&mut self, frame: u64) -> bool {
        if !self.is_used(frame) || frame >= self.frames {
            return false;
        }
        self.set(frame, false);
        true
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeSet;
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn allocates_only_released_frames() {
        let mut words = vec![0; 4];
        let mut bitmap = FrameBitmap::new_all_used(&mut words);
        assert_eq!(bitmap.allocate(), None);
        bitmap.release_range(10, 5);
        bitmap.reserve_range(12, 1);
        assert_eq!(bitmap.free_frames(), 4);
        let got: BTreeSet<_> = core::iter::from_fn(|| bitmap.allocate()).collect();
        assert_eq!(got, [10, 11, 13, 14].into_iter().collect());
        assert_eq!(bitmap.free_frames(), 0);
    }

    #[test]
    fn contiguous_skips_holes() {
        let mut words = vec![0; 4];
        let mut bitmap = FrameBitmap::new_all_used(&mut words);
        bitmap.release_range(0, 200);
        bitmap.reserve_range(5, 1);
        bitmap.reserve_range(70, 1);
        // Frames 6..70 are exactly 64 free ones between the two holes.
        assert_eq!(bitmap.allocate_contiguous(64), Some(6));
        assert_eq!(bitmap.allocate_contiguous(5), Some(0));
        assert_eq!(bitmap.allocate_contiguous(129), Some(71));
        assert_eq!(bitmap.allocate_contiguous(1), None);
        assert_eq!(bitmap.free_frames(), 0);
    }

    #[test]
    fn double_free_is_refused() {
        let mut words = vec![0; 1];
        let mut bitmap = FrameBitmap::new_all_used(&mut words);
        bitmap.release_range(0, 64);
        let frame = bitmap.allocate().unwrap();
        assert!(bitmap.free(frame));
        assert!(!bitmap.free(frame));
        assert!(!bitmap.free(1000));
        assert_eq!(bitmap.free_frames(), 64);
    }

    proptest! {
        #[test]
        fn never_hands_out_a_frame_twice(ops in proptest::collection::vec((any::<bool>(), 1u64..9), 1..300)) {
            let mut words = vec![0; 8];
            let mut bitmap = FrameBitmap::new_all_used(&mut words);
            bitmap.release_range(3, 400);
            let mut held = BTreeSet::new();
            for (take, count) in ops {
                if take {
                    if let Some(first) = bitmap.allocate_contiguous(count) {
                        for frame in first..first + count {
                            prop_assert!((3..403).contains(&frame));
                            prop_assert!(held.insert(frame), "frame {} handed out twice", frame);
                        }
                    }
                } else if let Some(&frame) = held.iter().next() {
                    held.remove(&frame);
                    prop_assert!(bitmap.free(frame));
                }
                prop_assert_eq!(bitmap.free_frames(), 400 - held.len() as u64);
            }
        }
    }
}
