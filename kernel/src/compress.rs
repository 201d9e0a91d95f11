//! Compressed cold pages: what a compressed page's entry holds, where the LZ4 blobs live, and
//! how long each page has gone untouched.
//!
//! - [`Packed`]: a compressed page, packed in the 64-bit entry of the VM's page table (the tag
//!   in its top two bits; an entry with tag 0 is a frame number). Two patterns need no storage
//!   at all: a page of one repeated 32-bit word, and a page of one repeated byte but for one
//!   word (each free xv6 page: kfree fills it with 0x01 and writes the free-list pointer in its
//!   first word). Anything else is an LZ4 block ([`lz4_flex`]) in a slot of the pool.
//! - [`Pool`]: the blob slots: size classes of 64 to 2,048 bytes, each class a set of host
//!   frames cut into equal slots. A frame goes back to the host when its last slot is freed.
//!   A blob over 2,048 bytes would save less than half a frame: the page stays as it is.
//! - [`Ages`]: per page, the working-set sample that last saw it touched.
//!
//! The frames and the VM's page table are the caller's (`memory`); this is the bookkeeping.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;

/// Bytes of a page.
const PAGE: usize = 4096;

/// Where an entry's tag sits.
const TAG_SHIFT: u32 = 62;
const TAG_WORD: u64 = 1;
const TAG_DIFF: u64 = 2;
const TAG_BLOB: u64 = 3;

/// Bytes a slot of class 0 holds; class `c` holds `64 << c`.
const SMALLEST_SLOT: usize = 64;
/// Size classes: 64, 128, 256, 512, 1,024 and 2,048 bytes.
pub const CLASSES: usize = 6;
/// The largest blob kept: half a page.
pub const LARGEST_BLOB: usize = SMALLEST_SLOT << (CLASSES - 1);
/// Room LZ4 may need for a page before it finds it does not compress.
const COMPRESS_ROOM: usize = lz4_flex::block::get_maximum_output_size(PAGE);

/// A compressed page, as its page-table entry holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packed {
    /// Every 32-bit word of the page is this one.
    Word(u32),
    /// Every byte is `fill` but 32-bit word `index`, which is `value`.
    Diff { fill: u8, index: u16, value: u32 },
    /// An LZ4 block of `len` bytes in slot `slot` of pool frame `frame` (frame number), class
    /// `class`.
    Blob {
        frame: u32,
        class: u8,
        slot: u8,
        len: u16,
    },
}

impl Packed {
    /// The page-table entry (never 0, and never a frame number: the tag is set).
    pub fn encode(self) -> u64 {
        match self {
            Self::Word(word) => TAG_WORD << TAG_SHIFT | u64::from(word),
            Self::Diff { fill, index, value } => {
                TAG_DIFF << TAG_SHIFT
                    | u64::from(fill) << 42
                    | u64::from(index & 0x3FF) << 32
                    | u64::from(value)
            }
            Self::Blob {
                frame,
                class,
                slot,
                len,
            } => {
                TAG_BLOB << TAG_SHIFT
                    | u64::from(len & 0x1FFF) << 41
                    | u64::from(class & 0x7) << 38
                    | u64::from(slot & 0x3F) << 32
                    | u64::from(frame)
            }
        }
    }

    /// The compressed page an entry holds; None for a frame number (tag 0).
    pub fn decode(entry: u64) -> Option<Self> {
        let low = entry as u32;
        match entry >> TAG_SHIFT {
            TAG_WORD => Some(Self::Word(low)),
            TAG_DIFF => Some(Self::Diff {
                fill: (entry >> 42) as u8,
                index: ((entry >> 32) & 0x3FF) as u16,
                value: low,
            }),
            TAG_BLOB => Some(Self::Blob {
                frame: low,
                class: ((entry >> 38) & 0x7) as u8,
                slot: ((entry >> 32) & 0x3F) as u8,
                len: ((entry >> 41) & 0x1FFF) as u16,
            }),
            _ => None,
        }
    }

    /// True when the entry is a compressed page (not a frame number, not empty).
    pub fn is_packed(entry: u64) -> bool {
        entry >> TAG_SHIFT != 0
    }

    /// Where the blob lives: (frame number, byte range in it); None for a pattern.
    pub fn blob_range(self) -> Option<(u32, core::ops::Range<usize>)> {
        match self {
            Self::Blob {
                frame,
                class,
                slot,
                len,
            } => {
                let start = usize::from(slot) * slot_size(class);
                Some((frame, start..start + usize::from(len)))
            }
            _ => None,
        }
    }

    /// Writes the page back out into `out`; `blob` is the blob's bytes (empty for a pattern).
    /// False when the blob does not decode to a whole page (the pool is corrupt).
    pub fn expand(self, blob: &[u8], out: &mut [u8; PAGE]) -> bool {
        match self {
            Self::Word(word) => {
                for chunk in out.chunks_exact_mut(4) {
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                true
            }
            Self::Diff { fill, index, value } => {
                out.fill(fill);
                let at = usize::from(index) * 4;
                out[at..at + 4].copy_from_slice(&value.to_le_bytes());
                true
            }
            Self::Blob { .. } => {
                lz4_flex::block::decompress_into(blob, out).is_ok_and(|len| len == PAGE)
            }
        }
    }
}

/// A page that is one of the two patterns. Read 8 bytes at a time, and given up at the second
/// 8-byte word that differs from the fill, so a page that is no pattern costs little.
pub fn pattern(page: &[u8; PAGE]) -> Option<Packed> {
    let quad = |index: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&page[index * 8..index * 8 + 8]);
        u64::from_le_bytes(bytes)
    };
    // The odd word, if any, is in one 8-byte word: the first or the last is the fill.
    for fill in [quad(PAGE / 8 - 1), quad(0)] {
        let (low, high) = (fill as u32, (fill >> 32) as u32);
        if low != high {
            continue;
        }
        let mut odd = None;
        for index in 0..PAGE / 8 {
            if quad(index) != fill {
                if odd.is_some() {
                    odd = Some(usize::MAX);
                    break;
                }
                odd = Some(index);
            }
        }
        match odd {
            None => return Some(Packed::Word(low)),
            Some(usize::MAX) => continue,
            Some(index) => {
                let byte = low as u8;
                if low != u32::from_le_bytes([byte; 4]) {
                    continue;
                }
                let value = quad(index);
                let (first, second) = (value as u32, (value >> 32) as u32);
                let (word, value) = match (first == low, second == low) {
                    (false, true) => (index * 2, first),
                    (true, false) => (index * 2 + 1, second),
                    _ => continue,
                };
                return Some(Packed::Diff {
                    fill: byte,
                    index: word as u16,
                    value,
                });
            }
        }
    }
    None
}

/// An LZ4 block of `page` in `out`, if it fits in [`LARGEST_BLOB`] bytes: its length.
pub fn compress(page: &[u8; PAGE], out: &mut [u8; LARGEST_BLOB]) -> Option<usize> {
    let mut room = [0u8; COMPRESS_ROOM];
    let len = lz4_flex::block::compress_into(page, &mut room).ok()?;
    if len > LARGEST_BLOB {
        return None;
    }
    out[..len].copy_from_slice(&room[..len]);
    Some(len)
}

/// Bytes a slot of `class` holds.
pub fn slot_size(class: u8) -> usize {
    SMALLEST_SLOT << class
}

/// The smallest class whose slots hold `len` bytes.
pub fn class_for(len: usize) -> Option<u8> {
    (0..CLASSES as u8).find(|&class| slot_size(class) >= len)
}

/// Slots of one frame of `class`.
fn slots(class: u8) -> u32 {
    (PAGE / slot_size(class)) as u32
}

fn full_mask(class: u8) -> u64 {
    match slots(class) {
        64 => u64::MAX,
        slots => (1 << slots) - 1,
    }
}

/// One size class: its frames (frame number to the mask of slots in use) and those with a
/// free slot.
#[derive(Debug, Default)]
struct Class {
    used: BTreeMap<u32, u64>,
    partial: BTreeSet<u32>,
}

/// The blob slots over every VM.
#[derive(Debug, Default)]
pub struct Pool {
    classes: [Class; CLASSES],
    /// Frames the pool holds.
    frames: u64,
    /// Frames it may hold (0: no blobs, patterns only).
    pub limit: u64,
    /// Bytes of the blobs it holds, and how many there are.
    bytes: u64,
    blobs: u64,
}

impl Pool {
    /// Frames the pool holds now.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes of the blobs in it.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Blobs in it (each a compressed page).
    pub fn blobs(&self) -> u64 {
        self.blobs
    }

    /// A free slot of `class`: (frame number, slot), taken. None when every frame of the class
    /// is full (the caller may add one with [`Self::add_frame`]).
    pub fn take_slot(&mut self, class: u8, len: usize) -> Option<(u32, u8)> {
        let entry = self.classes.get_mut(usize::from(class))?;
        let &frame = entry.partial.first()?;
        let mask = entry.used.get_mut(&frame)?;
        let slot = (!*mask).trailing_zeros();
        *mask |= 1 << slot;
        if *mask == full_mask(class) {
            entry.partial.remove(&frame);
        }
        self.bytes += len as u64;
        self.blobs += 1;
        Some((frame, slot as u8))
    }

    /// True when the pool may take one more frame.
    pub fn has_room(&self) -> bool {
        self.frames < self.limit
    }

    /// Gives `class` a new, empty frame.
    pub fn add_frame(&mut self, class: u8, frame: u32) {
        if let Some(entry) = self.classes.get_mut(usize::from(class)) {
            entry.used.insert(frame, 0);
            entry.partial.insert(frame);
            self.frames += 1;
        }
    }

    /// Frees a blob's slot; returns its frame number when that frame is now empty and has left
    /// the pool (the caller gives it back to the host).
    pub fn release(&mut self, blob: Packed) -> Option<u32> {
        let Packed::Blob {
            frame,
            class,
            slot,
            len,
        } = blob
        else {
            return None;
        };
        let entry = self.classes.get_mut(usize::from(class))?;
        let mask = entry.used.get_mut(&frame)?;
        *mask &= !(1u64 << slot);
        self.bytes = self.bytes.saturating_sub(u64::from(len));
        self.blobs = self.blobs.saturating_sub(1);
        if *mask == 0 {
            entry.used.remove(&frame);
            entry.partial.remove(&frame);
            self.frames -= 1;
            return Some(frame);
        }
        entry.partial.insert(frame);
        None
    }
}

/// Per page, the working-set sample that last saw it touched, and the pages each recent sample
/// saw: so that a compression pass looks only at the pages that have just turned cold (seen
/// `after` samples ago and not since), and its cost follows what the guest touched, not its
/// RAM.
#[derive(Debug, Clone, Default)]
pub struct Ages {
    /// Each page's stamp: the sample that last saw it, plus one (0: none yet).
    last_seen: Vec<u32>,
    /// Samples taken so far.
    epoch: u32,
    /// The pages each of the last samples saw, by stamp modulo their number (after + 1). A
    /// page is in one bucket at most (`queued`): seen again, it moves to its newer stamp's
    /// bucket when its old one is drained, so a guest touching all its RAM every sample keeps
    /// one entry a page here, not one a sample.
    buckets: Vec<Vec<u32>>,
    queued: Vec<u64>,
    /// Pages due but not looked at yet (a pass looks at a bounded number).
    backlog: Vec<u32>,
    /// The start's sweep over every page (a page backed before the first sample need not be
    /// touched to turn cold): the pages from here up are still to be offered.
    sweep: u32,
    /// The epoch whose cold pages went to the backlog last.
    drained: Option<u32>,
    /// Pages LZ4 found incompressible, a bit each: not tried again until the guest writes
    /// them (reading a page does not change what LZ4 would make of it).
    refused: Vec<u64>,
}

impl Ages {
    /// `pages` pages, none seen; a page is cold after `after` samples (at least 1) unseen.
    pub fn new(pages: u64, after: u16) -> Self {
        Self {
            last_seen: vec![0; pages as usize],
            epoch: 0,
            buckets: vec![Vec::new(); usize::from(after.max(1)) + 1],
            queued: vec![0; pages.div_ceil(64) as usize],
            backlog: Vec::new(),
            sweep: 0,
            drained: None,
            refused: vec![0; pages.div_ceil(64) as usize],
        }
    }

    /// `page` did not compress: it is left out until it is written.
    pub fn refuse(&mut self, page: u64) {
        if let Some(word) = self.refused.get_mut((page / 64) as usize) {
            *word |= 1 << (page % 64);
        }
    }

    /// The guest wrote `page` since the last sample: LZ4 may try it again.
    pub fn written(&mut self, page: u64) {
        if let Some(word) = self.refused.get_mut((page / 64) as usize) {
            *word &= !(1 << (page % 64));
        }
    }

    /// Pages LZ4 refused and the guest has not written since.
    pub fn refused_pages(&self) -> u64 {
        self.refused
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    /// True when LZ4 refused `page` and the guest has not written it since.
    pub fn is_refused(&self, page: u64) -> bool {
        self.refused
            .get((page / 64) as usize)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    /// `page` was due but a pass had no room for it: it is offered again first.
    pub fn defer(&mut self, page: u64) {
        self.backlog.push(page as u32);
    }

    /// Page `page` was touched since the last sample (or just now).
    pub fn seen(&mut self, page: u64) {
        let stamp = self.epoch + 1;
        let Some(slot) = self.last_seen.get_mut(page as usize) else {
            return;
        };
        if *slot == stamp {
            return;
        }
        *slot = stamp;
        let (word, bit) = ((page / 64) as usize, 1u64 << (page % 64));
        if self.queued[word] & bit == 0 {
            self.queued[word] |= bit;
            self.queue(page as u32, stamp);
        }
    }

    /// Puts `page` in the bucket of `stamp`.
    fn queue(&mut self, page: u32, stamp: u32) {
        let count = self.buckets.len();
        if let Some(bucket) = self.buckets.get_mut(stamp as usize % count.max(1)) {
            bucket.push(page);
        }
    }

    /// A sample ended: the pages it saw no longer count as unseen.
    pub fn tick(&mut self) {
        self.epoch += 1;
    }

    /// Samples since `page` was last seen touched.
    pub fn idle(&self, page: u64) -> u32 {
        self.last_seen
            .get(page as usize)
            .map_or(0, |&seen| self.epoch.saturating_sub(seen))
    }

    /// Up to `budget` pages that have gone `after` samples unseen: the pages the sample
    /// `after` samples ago saw and those that waited (either left out if seen again since:
    /// they are due later, from a newer sample), then the start's sweep (its pages that a
    /// sample saw are left to their sample).
    /// Call after each sample; a sample that did not tick (the VM did not run) adds no page.
    /// What does not fit waits in the backlog.
    pub fn take_cold(&mut self, budget: u64) -> Vec<u32> {
        let after = self.buckets.len().saturating_sub(1) as u32;
        if self.epoch >= after && self.drained != Some(self.epoch) {
            self.drained = Some(self.epoch);
            let stamp = self.epoch - after;
            let count = self.buckets.len();
            let bucket = self
                .buckets
                .get_mut(stamp as usize % count.max(1))
                .map(core::mem::take)
                .unwrap_or_default();
            for page in bucket {
                let last = self.last_seen[page as usize];
                if last == stamp {
                    self.queued[(page / 64) as usize] &= !(1 << (page % 64));
                    self.backlog.push(page);
                } else {
                    // Seen since: due from its newer sample (not drained yet: it is younger).
                    self.queue(page, last);
                }
            }
        }
        let mut cold = Vec::new();
        while (cold.len() as u64) < budget {
            let Some(page) = self.backlog.pop() else {
                break;
            };
            if self.idle(u64::from(page)) >= after {
                cold.push(page);
            }
        }
        let pages = self.last_seen.len() as u32;
        while (cold.len() as u64) < budget && self.sweep < pages {
            let page = self.sweep;
            self.sweep += 1;
            if self.last_seen[page as usize] == 0 {
                cold.push(page);
            }
        }
        cold
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kfree_page(next: u32) -> [u8; PAGE] {
        let mut page = [1u8; PAGE];
        page[..4].copy_from_slice(&next.to_le_bytes());
        page
    }

    fn round_trip(page: &[u8; PAGE]) -> [u8; PAGE] {
        let mut out = [0xEEu8; PAGE];
        match pattern(page) {
            Some(packed) => {
                assert_eq!(Packed::decode(packed.encode()), Some(packed));
                assert!(packed.expand(&[], &mut out));
            }
            None => {
                let mut blob = [0u8; LARGEST_BLOB];
                let len = compress(page, &mut blob).expect("compressible");
                let packed = Packed::Blob {
                    frame: 7,
                    class: class_for(len).unwrap(),
                    slot: 3,
                    len: len as u16,
                };
                assert_eq!(Packed::decode(packed.encode()), Some(packed));
                assert!(packed.expand(&blob[..len], &mut out));
            }
        }
        out
    }

    #[test]
    fn a_free_xv6_page_is_a_pattern() {
        let page = kfree_page(0x8012_3000);
        assert_eq!(
            pattern(&page),
            Some(Packed::Diff {
                fill: 1,
                index: 0,
                value: 0x8012_3000
            })
        );
        assert_eq!(round_trip(&page), page);
        assert_eq!(pattern(&[0; PAGE]), Some(Packed::Word(0)));
    }

    #[test]
    fn patterns_are_exact() {
        // The odd word last, the odd word second, a repeated non-byte word.
        let mut page = [0x5Au8; PAGE];
        page[PAGE - 4..].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(round_trip(&page), page);
        let mut page = [0u8; PAGE];
        page[4] = 9;
        assert_eq!(round_trip(&page), page);
        let page: [u8; PAGE] = core::array::from_fn(|at| (at % 4) as u8 + 1);
        assert!(matches!(pattern(&page), Some(Packed::Word(0x0403_0201))));
        // Two odd words: not a pattern (LZ4 takes it).
        let mut page = [1u8; PAGE];
        page[0] = 2;
        page[100] = 3;
        assert_eq!(pattern(&page), None);
        assert_eq!(round_trip(&page), page);
    }

    #[test]
    fn random_bytes_do_not_compress() {
        let mut state = 0x1234_5678u32;
        let page: [u8; PAGE] = core::array::from_fn(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        });
        assert_eq!(pattern(&page), None);
        assert_eq!(compress(&page, &mut [0; LARGEST_BLOB]), None);
    }

    #[test]
    fn a_corrupt_blob_does_not_expand() {
        let packed = Packed::Blob {
            frame: 1,
            class: 0,
            slot: 0,
            len: 3,
        };
        assert!(!packed.expand(&[0xFF, 0xFF, 0xFF], &mut [0; PAGE]));
    }

    #[test]
    fn slots_fill_and_frames_leave_when_empty() {
        let mut pool = Pool {
            limit: 4,
            ..Pool::default()
        };
        assert_eq!(pool.take_slot(5, 2000), None);
        pool.add_frame(5, 40);
        let a = pool.take_slot(5, 2000).unwrap();
        let b = pool.take_slot(5, 1500).unwrap();
        assert_eq!((a, b), ((40, 0), (40, 1)));
        assert_eq!(pool.take_slot(5, 2000), None, "two slots of 2 KiB a frame");
        assert_eq!((pool.bytes(), pool.blobs()), (3500, 2));
        let blob = |slot, len| Packed::Blob {
            frame: 40,
            class: 5,
            slot,
            len,
        };
        assert_eq!(pool.release(blob(0, 2000)), None);
        assert_eq!(pool.take_slot(5, 100), Some((40, 0)));
        assert_eq!(pool.release(blob(0, 100)), None);
        assert_eq!(pool.release(blob(1, 1500)), Some(40));
        assert_eq!((pool.frames(), pool.bytes(), pool.blobs()), (0, 0, 0));
        // Class 0: 64 slots of 64 bytes.
        pool.add_frame(0, 41);
        for slot in 0..64 {
            assert_eq!(pool.take_slot(0, 10), Some((41, slot)));
        }
        assert_eq!(pool.take_slot(0, 10), None);
        assert!(pool.has_room());
    }

    #[test]
    fn the_cold_pages_are_those_a_sample_saw_after_samples_ago_and_none_since() {
        let mut ages = Ages::new(6, 2);
        // At the start every page is in the backlog, bounded by the budget.
        ages.tick();
        assert_eq!(ages.take_cold(4), [0, 1, 2, 3]);
        assert_eq!(ages.take_cold(10), [4, 5]);
        ages.seen(1);
        ages.seen(2);
        ages.seen(2);
        ages.tick();
        assert!(ages.take_cold(10).is_empty());
        ages.seen(2);
        ages.tick();
        assert!(
            ages.take_cold(10).is_empty(),
            "one sample unseen is not two"
        );
        assert_eq!((ages.idle(1), ages.idle(2)), (1, 0));
        ages.tick();
        // Page 1 was seen two samples ago and not since; page 2 once more after.
        assert_eq!(ages.take_cold(10), [1]);
        // A pass without a sample between (the VM did not run) finds nothing new, and loses
        // nothing seen meanwhile.
        ages.seen(4);
        assert!(ages.take_cold(10).is_empty());
        ages.tick();
        assert_eq!(ages.take_cold(10), [2]);
        ages.tick();
        assert!(ages.take_cold(10).is_empty());
        ages.tick();
        assert_eq!(ages.take_cold(10), [4]);
        ages.seen(9); // outside: ignored
        assert_eq!(
            ages.idle(0),
            7,
            "page 0 was never seen: every sample so far"
        );
    }

    #[test]
    fn a_page_touched_while_it_waited_is_not_offered_and_the_sweep_leaves_seen_pages_alone() {
        let mut ages = Ages::new(8, 1);
        ages.seen(6);
        ages.tick();
        // The sweep offers the pages no sample saw; 6 comes from its own sample.
        assert_eq!(ages.take_cold(3), [0, 1, 2]);
        assert_eq!(ages.take_cold(10), [3, 4, 5, 7]);
        ages.tick();
        assert_eq!(ages.take_cold(10), [6]);
        // Two pages due, one deferred by a full pass, then touched: it waits for its new
        // sample instead.
        ages.defer(2);
        ages.defer(3);
        ages.seen(3);
        ages.tick();
        assert_eq!(ages.take_cold(10), [2]);
        ages.tick();
        assert_eq!(ages.take_cold(10), [3]);
    }

    #[test]
    fn a_page_touched_every_sample_has_one_entry_and_turns_cold_once_left() {
        let mut ages = Ages::new(4, 3);
        ages.tick();
        ages.take_cold(10); // the start's sweep
        for _ in 0..50 {
            ages.seen(1);
            ages.tick();
            assert!(ages.take_cold(10).is_empty());
            let entries: usize = ages.buckets.iter().map(Vec::len).sum();
            assert_eq!(entries, 1, "one entry for page 1, whatever the samples");
        }
        for _ in 0..2 {
            ages.tick();
            assert!(ages.take_cold(10).is_empty());
        }
        ages.tick();
        assert_eq!(ages.take_cold(10), [1]);
        assert!(ages.buckets.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_refused_page_stays_refused_until_written() {
        let mut ages = Ages::new(130, 1);
        ages.refuse(129);
        assert!(ages.is_refused(129) && !ages.is_refused(128));
        ages.seen(129);
        assert!(ages.is_refused(129), "a read changes nothing");
        ages.written(129);
        assert!(!ages.is_refused(129));
        ages.refuse(500); // outside: ignored
        assert!(!ages.is_refused(500));
    }

    proptest! {
        /// A page of one byte but for one 32-bit word, wherever it lies, is a pattern.
        #[test]
        fn one_odd_word_anywhere_is_a_pattern(fill in any::<u8>(), index in 0..PAGE / 4, value in any::<u32>()) {
            let mut page = [fill; PAGE];
            page[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
            let packed = pattern(&page);
            prop_assert!(packed.is_some());
            prop_assert_eq!(round_trip(&page), page);
        }

        /// Any page with a few runs of other bytes reads back exactly, patterned or packed.
        #[test]
        fn pages_read_back_exactly(
            fill in any::<u8>(),
            spots in proptest::collection::vec((0..PAGE, any::<u8>()), 0..40),
        ) {
            let mut page = [fill; PAGE];
            for (at, byte) in spots {
                page[at] = byte;
            }
            prop_assert_eq!(round_trip(&page), page);
        }
    }
}
