//! Same-page merging, the logic: pages of any VM with identical contents come to share one
//! read-only frame, and a write to a shared page gets its own copy again (copy on write).
//!
//! It merges only pages whose contents hold still (a page being filled or written would be
//! copied straight back). Where working-set samples report the guest's writes (the EPT's dirty
//! flags), that is a page the last sample saw untouched; it is read once, and not again until
//! it is written: a scan's cost follows what the guests change, not their RAM. Without dirty
//! flags, as Linux's KSM, a page is hashed at every scan and merged once its hash held from one
//! scan to the next. Merging keeps two kinds of entries by content key (a 28-bit hash, stored
//! in the page's own table entry): **shared** frames, already read-only and mapped by several
//! pages, and one **candidate** per key, a page seen whose contents may still change (it stays
//! writable). A scanned page that equals a shared frame
//! joins it; one that equals the candidate makes the candidate shared (the candidate's owner is
//! remapped read-only) and joins it. Contents are compared byte for byte before every merge: a
//! hash match alone never merges. The frames and the EPT are the caller's ([`Host`]); this
//! module is host-tested with a fake one.

use alloc::collections::BTreeMap;

/// A guest page: VM id and guest page number.
pub type PageRef = (u16, u64);

/// What merging needs from the hypervisor.
pub trait Host {
    /// The frame backing `page` and whether it is shared (read-only), if it is backed.
    fn frame_of(&self, page: PageRef) -> Option<(u64, bool)>;
    /// The contents of `frame`.
    fn contents(&self, frame: u64) -> &[u8; 4096];
    /// Maps `page` to `frame`, read-only and shared, or writable and private.
    fn map(&mut self, page: PageRef, frame: u64, shared: bool);
    /// A new frame holding a copy of `frame` (None: out of memory).
    fn copy(&mut self, frame: u64) -> Option<u64>;
    /// Returns `frame` to the host.
    fn free(&mut self, frame: u64);
    /// What merging knows of `page`'s writes.
    fn tracking(&self, page: PageRef) -> Tracking;
    /// Records `key` as `page`'s contents key at this scan (with dirty flags, the page counts
    /// as clean from now until it is written), returning the one recorded before (0: none).
    fn swap_key(&mut self, page: PageRef, key: u32) -> u32;
}

/// What merging knows of a page's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracking {
    /// Nothing: its VM takes no working-set samples (or its CPU sets no dirty flags).
    Hashes,
    /// Working-set samples report its VM's writes.
    Dirty {
        /// Touched in the last sample's period, or given a new frame since: it may still
        /// change, so it is left alone.
        hot: bool,
        /// Its key at its last scan, if it has not been written since.
        clean_key: Option<u32>,
    },
}

/// What a scan of one page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// The page now shares a frame with others; its own frame was freed.
    Merged,
    /// No page like it yet: it is the candidate for its contents.
    Candidate,
    /// Its contents changed since its previous scan: left alone this time.
    Changing,
    /// Touched in the last sample's period: left alone, unread.
    Hot,
    /// Read since it was last written: left alone, unread.
    Unchanged,
    /// Not backed, or shared already.
    Skipped,
}

/// Why a copy on write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CowError {
    /// The page is not a shared page.
    NotShared,
    /// No frame for the copy.
    OutOfMemory,
}

/// The merging state of the whole machine.
#[derive(Debug, Default)]
pub struct Merger {
    /// Shared frames by content key (several when keys collide).
    shared: BTreeMap<u32, alloc::vec::Vec<u64>>,
    /// Each shared frame's key and mappings (the key finds its entry in `shared` when the last
    /// mapping goes: a lookup, not a walk over every shared frame).
    refs: BTreeMap<u64, Shared>,
    /// One candidate page per content key.
    candidates: BTreeMap<u32, PageRef>,
    /// Pages merged and copies made over the run.
    pub merges: u64,
    pub cow_breaks: u64,
}

/// A shared frame's key and mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shared {
    key: u32,
    refs: u32,
}

/// Most candidates kept at once, so that the hypervisor's memory for merging never grows with
/// what guests write (each shared frame, in turn, saves at least a frame). Like KSM's unstable
/// tree the candidates last one pass over the VMs ([`Merger::new_pass`]); when the cache is full
/// new pages wait for the next pass, and the ones kept can still find their twins. Where dirty
/// flags tell a candidate has not changed, it stays over passes (and is not read again).
pub const MAX_CANDIDATES: usize = 1 << 18;

/// A fast hash of a page, eight bytes at a time (the contents are compared before merging, so
/// a collision only costs a comparison).
pub fn page_hash(bytes: &[u8; 4096]) -> u64 {
    bytes
        .chunks_exact(8)
        .fold(0x9E37_79B9_7F4A_7C15u64, |hash, word| {
            let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            (hash.rotate_left(5) ^ word).wrapping_mul(0x0100_0000_01B3)
        })
}

/// Bits of a content key: what a page's table entry has room for beside its frame number.
pub const KEY_BITS: u32 = 28;

/// A page's content key: its hash folded to [`KEY_BITS`] bits, never 0 (0 stands for "none").
pub fn page_key(bytes: &[u8; 4096]) -> u32 {
    let hash = page_hash(bytes);
    let key = ((hash ^ (hash >> 32)) as u32) & ((1 << KEY_BITS) - 1);
    key.max(1)
}

impl Merger {
    pub const fn new() -> Self {
        Self {
            shared: BTreeMap::new(),
            refs: BTreeMap::new(),
            candidates: BTreeMap::new(),
            merges: 0,
            cow_breaks: 0,
        }
    }

    /// Frames saved: mappings of shared frames beyond the first of each.
    pub fn frames_saved(&self) -> u64 {
        self.refs
            .values()
            .map(|shared| u64::from(shared.refs.saturating_sub(1)))
            .sum()
    }

    /// Shared frames in use.
    pub fn shared_frames(&self) -> u64 {
        self.refs.len() as u64
    }

    /// Looks at one page and merges it if a page with the same contents is known.
    pub fn scan(&mut self, page: PageRef, host: &mut impl Host) -> Scanned {
        let Some((frame, false)) = host.frame_of(page) else {
            return Scanned::Skipped;
        };
        let tracking = host.tracking(page);
        let tracked = matches!(tracking, Tracking::Dirty { .. });
        let key = match tracking {
            // Only pages that kept their contents since their previous scan.
            Tracking::Hashes => {
                let key = page_key(host.contents(frame));
                if host.swap_key(page, key) != key {
                    return Scanned::Changing;
                }
                key
            }
            Tracking::Dirty { hot: true, .. } => return Scanned::Hot,
            // Read since it was last written: a candidate if there was room, and left alone
            // (its twins find it; one evicted from a full cache waits until it is written).
            Tracking::Dirty {
                clean_key: Some(_), ..
            } => return Scanned::Unchanged,
            // Cold since the last sample at least: its contents held still that long.
            Tracking::Dirty {
                clean_key: None, ..
            } => {
                let key = page_key(host.contents(frame));
                host.swap_key(page, key);
                key
            }
        };
        // A shared frame with these contents: join it.
        let same = self.shared.get(&key).and_then(|frames| {
            frames
                .iter()
                .copied()
                .find(|&shared| host.contents(shared) == host.contents(frame))
        });
        if let Some(shared) = same {
            host.map(page, shared, true);
            host.free(frame);
            self.refs
                .entry(shared)
                .or_insert(Shared { key, refs: 0 })
                .refs += 1;
            self.merges += 1;
            return Scanned::Merged;
        }
        // The candidate for these contents, if it is still backed, private and the same.
        match self.candidates.get(&key).copied() {
            Some(other) if other != page => {
                let alive = host
                    .frame_of(other)
                    .filter(|&(_, shared)| !shared)
                    .map(|(frame, _)| frame)
                    .filter(|&candidate| host.contents(candidate) == host.contents(frame));
                if let Some(candidate) = alive {
                    self.candidates.remove(&key);
                    host.map(other, candidate, true);
                    host.map(page, candidate, true);
                    host.free(frame);
                    self.shared.entry(key).or_default().push(candidate);
                    self.refs.insert(candidate, Shared { key, refs: 2 });
                    self.merges += 1;
                    return Scanned::Merged;
                }
                self.remember(key, page, tracked);
                Scanned::Candidate
            }
            _ => {
                self.remember(key, page, tracked);
                Scanned::Candidate
            }
        }
    }

    /// Keeps `page` as the candidate for `key`. When the cache is full, a page read from its
    /// hash alone waits for the next pass (the cache empties at each); one dirty flags follow
    /// is not read again until written, so it takes the place of the candidate of the
    /// smallest key (as good as a random one).
    fn remember(&mut self, key: u32, page: PageRef, tracked: bool) {
        if self.candidates.len() >= MAX_CANDIDATES && !self.candidates.contains_key(&key) {
            if !tracked {
                return;
            }
            self.candidates.pop_first();
        }
        self.candidates.insert(key, page);
    }

    /// A new pass over the VMs begins: the candidates of the last one are dropped (pages
    /// still unchanged become candidates again as the pass reaches them), but for those dirty
    /// flags show unwritten since they were read (they are not read again). The cost is a look
    /// at each candidate (at most [`MAX_CANDIDATES`]) per pass, however short the pass.
    pub fn new_pass(&mut self, host: &impl Host) {
        self.candidates.retain(|&key, &mut page| {
            host.frame_of(page).is_some_and(|(_, shared)| !shared)
                && matches!(
                    host.tracking(page),
                    Tracking::Dirty { clean_key: Some(clean), .. } if clean == key
                )
        });
    }

    /// Candidates kept now.
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }

    /// A write to shared `page`: it gets a private, writable copy. A shared frame left with
    /// no mapping is freed.
    pub fn copy_on_write(&mut self, page: PageRef, host: &mut impl Host) -> Result<u64, CowError> {
        let Some((shared, true)) = host.frame_of(page) else {
            return Err(CowError::NotShared);
        };
        let copy = host.copy(shared).ok_or(CowError::OutOfMemory)?;
        host.map(page, copy, false);
        self.cow_breaks += 1;
        self.unref(shared, host);
        Ok(copy)
    }

    /// True when every shared frame is listed under its own key, once, and every listed frame
    /// has mappings (what the last mapping's leaving relies on to find it).
    #[cfg(test)]
    fn consistent(&self) -> bool {
        let listed: usize = self.shared.values().map(alloc::vec::Vec::len).sum();
        listed == self.refs.len()
            && self.refs.iter().all(|(frame, shared)| {
                shared.refs >= 1
                    && self
                        .shared
                        .get(&shared.key)
                        .is_some_and(|frames| frames.contains(frame))
            })
    }

    /// A shared page leaves (its VM is released): one mapping fewer.
    pub fn unmap(&mut self, frame: u64, host: &mut impl Host) {
        self.unref(frame, host);
    }

    fn unref(&mut self, frame: u64, host: &mut impl Host) {
        let Some(shared) = self.refs.get_mut(&frame) else {
            return;
        };
        shared.refs -= 1;
        if shared.refs == 0 {
            let key = shared.key;
            self.refs.remove(&frame);
            if let Some(frames) = self.shared.get_mut(&key) {
                frames.retain(|&other| other != frame);
                if frames.is_empty() {
                    self.shared.remove(&key);
                }
            }
            host.free(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::boxed::Box;
    use alloc::vec::Vec;
    use std::collections::BTreeMap as Map;

    use proptest::prelude::*;

    use super::*;

    /// Frames in a map; pages in another; counts what was freed.
    #[derive(Default)]
    struct FakeHost {
        frames: Map<u64, Box<[u8; 4096]>>,
        pages: Map<PageRef, (u64, bool)>,
        keys: Map<PageRef, u32>,
        next: u64,
        out_of_memory: bool,
        /// Dirty flags: whether samples report writes, the pages written (or given a frame)
        /// since the last sample, those the last sample saw, and those clean since their scan.
        tracked: bool,
        written: std::collections::BTreeSet<PageRef>,
        hot: std::collections::BTreeSet<PageRef>,
        clean: std::collections::BTreeSet<PageRef>,
        /// Pages' contents read so far.
        reads: core::cell::Cell<u64>,
    }

    impl FakeHost {
        fn page(&mut self, page: PageRef, fill: u8) {
            let frame = self.next;
            self.next += 1;
            self.frames.insert(frame, Box::new([fill; 4096]));
            self.pages.insert(page, (frame, false));
        }

        /// What the guest reads at `page`.
        fn read(&self, page: PageRef) -> u8 {
            self.frames[&self.pages[&page].0][0]
        }

        /// The guest writes `value` at `page` (through copy on write when shared).
        fn write(&mut self, merger: &mut Merger, page: PageRef, value: u8) {
            if self.pages[&page].1 {
                merger.copy_on_write(page, self).expect("a copy");
            }
            let (frame, shared) = self.pages[&page];
            assert!(!shared);
            self.frames.get_mut(&frame).unwrap()[0] = value;
            self.written.insert(page);
        }

        /// A working-set sample: the pages written since the last one are hot, and no longer
        /// clean; the others are cold.
        fn sample(&mut self) {
            self.tracked = true;
            self.hot = core::mem::take(&mut self.written);
            for page in &self.hot {
                self.clean.remove(page);
            }
        }
    }

    impl Host for FakeHost {
        fn frame_of(&self, page: PageRef) -> Option<(u64, bool)> {
            self.pages.get(&page).copied()
        }
        fn contents(&self, frame: u64) -> &[u8; 4096] {
            self.reads.set(self.reads.get() + 1);
            &self.frames[&frame]
        }
        fn map(&mut self, page: PageRef, frame: u64, shared: bool) {
            self.pages.insert(page, (frame, shared));
            self.keys.remove(&page);
            self.clean.remove(&page);
            // A new frame counts as touched from now (as GuestMemory marks it).
            self.hot.insert(page);
            self.written.insert(page);
        }
        fn copy(&mut self, frame: u64) -> Option<u64> {
            if self.out_of_memory {
                return None;
            }
            let copy = self.next;
            self.next += 1;
            let contents = self.frames[&frame].clone();
            self.frames.insert(copy, contents);
            Some(copy)
        }
        fn tracking(&self, page: PageRef) -> Tracking {
            if !self.tracked {
                return Tracking::Hashes;
            }
            Tracking::Dirty {
                hot: self.hot.contains(&page),
                clean_key: self
                    .clean
                    .contains(&page)
                    .then(|| self.keys.get(&page).copied())
                    .flatten(),
            }
        }
        fn swap_key(&mut self, page: PageRef, key: u32) -> u32 {
            if self.tracked {
                self.clean.insert(page);
            }
            self.keys.insert(page, key).unwrap_or(0)
        }
        fn free(&mut self, frame: u64) {
            assert!(
                self.frames.remove(&frame).is_some(),
                "frame {frame} freed twice"
            );
            assert!(
                self.pages.values().all(|&(mapped, _)| mapped != frame),
                "frame {frame} freed while mapped"
            );
        }
    }

    #[test]
    fn identical_pages_share_one_frame_and_writes_copy() {
        let mut host = FakeHost::default();
        let mut merger = Merger::new();
        host.page((0, 0), 1);
        host.page((1, 0), 1);
        host.page((2, 5), 1);
        host.page((2, 6), 9);
        // First scans only note each page's contents.
        for page in [(0, 0), (1, 0), (2, 5), (2, 6)] {
            assert_eq!(merger.scan(page, &mut host), Scanned::Changing);
        }
        assert_eq!(merger.scan((0, 0), &mut host), Scanned::Candidate);
        assert_eq!(merger.scan((1, 0), &mut host), Scanned::Merged);
        assert_eq!(merger.scan((2, 5), &mut host), Scanned::Merged);
        assert_eq!(merger.scan((2, 6), &mut host), Scanned::Candidate);
        assert_eq!(merger.scan((1, 0), &mut host), Scanned::Skipped);
        assert_eq!(host.frames.len(), 2);
        assert_eq!((merger.shared_frames(), merger.frames_saved()), (1, 2));
        // A write breaks the sharing for that page only.
        host.write(&mut merger, (1, 0), 7);
        assert_eq!(host.read((1, 0)), 7);
        assert_eq!(host.read((0, 0)), 1);
        assert_eq!(host.read((2, 5)), 1);
        assert_eq!(merger.frames_saved(), 1);
        // The last two writers free the shared frame.
        host.write(&mut merger, (0, 0), 3);
        host.write(&mut merger, (2, 5), 4);
        assert_eq!(merger.shared_frames(), 0);
        assert_eq!(host.frames.len(), 4);
        assert_eq!(merger.cow_breaks, 3);
    }

    #[test]
    fn a_changed_candidate_is_not_merged() {
        let mut host = FakeHost::default();
        let mut merger = Merger::new();
        host.page((0, 0), 1);
        host.page((1, 0), 1);
        merger.scan((0, 0), &mut host);
        merger.scan((1, 0), &mut host);
        assert_eq!(merger.scan((0, 0), &mut host), Scanned::Candidate);
        // The candidate is written after the scan (it was still writable).
        host.write(&mut merger, (0, 0), 2);
        assert_eq!(merger.scan((1, 0), &mut host), Scanned::Candidate);
        // A page written between its scans is not merged at all.
        host.write(&mut merger, (1, 0), 2);
        assert_eq!(merger.scan((1, 0), &mut host), Scanned::Changing);
        assert_eq!(host.read((0, 0)), 2);
        assert_eq!(merger.merges, 0);
    }

    #[test]
    fn hash_collisions_never_merge_different_pages() {
        // Different contents under one hash: planted by scanning with the real hash, then
        // checking equality decides. Simulate by two pages whose first bytes differ but whose
        // candidates collide only if the hash were weak; the byte comparison is what matters.
        let mut host = FakeHost::default();
        let mut merger = Merger::new();
        host.page((0, 0), 1);
        host.page((0, 1), 2);
        merger.scan((0, 0), &mut host);
        merger.scan((0, 1), &mut host);
        merger.scan((0, 0), &mut host);
        let key = page_key(host.contents(host.pages[&(0, 1)].0));
        merger.candidates.insert(key, (0, 0));
        assert_eq!(merger.scan((0, 1), &mut host), Scanned::Candidate);
        assert_eq!((host.read((0, 0)), host.read((0, 1))), (1, 2));
    }

    #[test]
    fn the_candidates_never_outgrow_their_cap() {
        let mut host = FakeHost::default();
        let mut merger = Merger::new();
        // Distinct pages, each scanned twice: every one becomes a candidate.
        let pages = MAX_CANDIDATES as u64 + 10;
        for page in 0..pages {
            let frame = host.next;
            host.next += 1;
            let mut contents = Box::new([0u8; 4096]);
            contents[..8].copy_from_slice(&page.to_le_bytes());
            contents[8] = 1;
            host.frames.insert(frame, contents);
            host.pages.insert((0, page), (frame, false));
        }
        for _ in 0..2 {
            for page in 0..pages {
                merger.scan((0, page), &mut host);
                assert!(merger.candidates() <= MAX_CANDIDATES);
            }
        }
        assert_eq!(merger.merges, 0);
        // Full, but for the keys two of these pages share (28-bit keys: about a hundred
        // collisions among 2^18 pages, each a candidate the later page replaced).
        assert!(merger.candidates() <= MAX_CANDIDATES);
        assert!(merger.candidates() > MAX_CANDIDATES - MAX_CANDIDATES / 100);
        // The cache keeps its first pages: their twins still merge with them.
        host.page((1, 0), 0);
        let twin = host.pages[&(1, 0)].0;
        host.frames.get_mut(&twin).unwrap()[..8].copy_from_slice(&0u64.to_le_bytes());
        host.frames.get_mut(&twin).unwrap()[8] = 1;
        merger.scan((1, 0), &mut host);
        assert_eq!(merger.scan((1, 0), &mut host), Scanned::Merged);
        merger.new_pass(&host);
        assert_eq!(merger.candidates(), 0);
    }

    #[test]
    fn with_dirty_flags_a_cold_page_merges_at_its_first_scan_and_a_hot_one_waits() {
        let mut host = FakeHost::default();
        let mut merger = Merger::new();
        for page in 0..3 {
            host.page((page as u16, 0), 1);
        }
        host.write(&mut merger, (2, 0), 1);
        host.sample();
        // Cold since the sample: read once, and merged at once.
        assert_eq!(merger.scan((0, 0), &mut host), Scanned::Candidate);
        assert_eq!(merger.scan((1, 0), &mut host), Scanned::Merged);
        // Written in the sample's period: left alone, unread, until a sample finds it cold.
        let reads = host.reads.get();
        assert_eq!(merger.scan((2, 0), &mut host), Scanned::Hot);
        assert_eq!(host.reads.get(), reads);
        host.sample();
        assert_eq!(merger.scan((2, 0), &mut host), Scanned::Merged);
        assert_eq!(merger.frames_saved(), 2);
    }

    #[test]
    fn with_dirty_flags_a_pass_over_unchanged_pages_reads_none_of_them() {
        let mut host = FakeHost::default();
        let mut merger = Merger::new();
        let pages = 64u64;
        // Pages that differ in their first byte only.
        for page in 0..pages {
            host.page((0, page), 0);
            let frame = host.pages[&(0, page)].0;
            host.frames.get_mut(&frame).unwrap()[0] = page as u8;
        }
        host.sample();
        for page in 0..pages {
            assert_eq!(merger.scan((0, page), &mut host), Scanned::Candidate);
        }
        assert_eq!(host.reads.get(), pages);
        // The next passes read nothing: no page was written.
        for _ in 0..3 {
            merger.new_pass(&host);
            host.sample();
            let reads = host.reads.get();
            for page in 0..pages {
                assert_eq!(merger.scan((0, page), &mut host), Scanned::Unchanged);
            }
            assert_eq!(host.reads.get(), reads);
        }
        // One page written to equal another: hot for a sample, then read once and merged.
        host.write(&mut merger, (0, 9), 3);
        host.sample();
        merger.new_pass(&host);
        assert_eq!(merger.candidates() as u64, pages - 1);
        assert_eq!(merger.scan((0, 9), &mut host), Scanned::Hot);
        host.sample();
        let reads = host.reads.get();
        assert_eq!(merger.scan((0, 9), &mut host), Scanned::Merged);
        assert_eq!(host.reads.get() - reads, 3, "its hash and one comparison");
        assert_eq!((host.read((0, 3)), host.read((0, 9))), (3, 3));
    }

    #[test]
    fn copy_on_write_without_memory_fails_and_keeps_the_mapping() {
        let mut host = FakeHost::default();
        let mut merger = Merger::new();
        host.page((0, 0), 1);
        host.page((1, 0), 1);
        for _ in 0..2 {
            merger.scan((0, 0), &mut host);
            merger.scan((1, 0), &mut host);
        }
        host.out_of_memory = true;
        assert_eq!(
            merger.copy_on_write((1, 0), &mut host),
            Err(CowError::OutOfMemory)
        );
        assert!(host.pages[&(1, 0)].1);
        assert_eq!(
            merger.copy_on_write((5, 5), &mut host),
            Err(CowError::NotShared)
        );
    }

    proptest! {
        /// Whatever pages are scanned, written and sampled, every page reads what was last written to
        /// it, no frame is freed while mapped (the fake host asserts it), and the frames in
        /// use are the pages minus the frames saved.
        #[test]
        fn guests_always_read_their_own_writes(
            fills in proptest::collection::vec(0u8..3, 1..24),
            ops in proptest::collection::vec((0u8..4, any::<prop::sample::Index>(), 0u8..3), 0..80),
        ) {
            let mut host = FakeHost::default();
            let mut merger = Merger::new();
            let pages: Vec<PageRef> = (0..fills.len()).map(|i| ((i % 3) as u16, i as u64)).collect();
            let mut expected: Map<PageRef, u8> = Map::new();
            for (&page, &fill) in pages.iter().zip(&fills) {
                host.page(page, fill);
                expected.insert(page, fill);
            }
            for (op, index, value) in ops {
                let page = pages[index.index(pages.len())];
                match op {
                    0 => {
                        merger.scan(page, &mut host);
                    }
                    1 => {
                        host.write(&mut merger, page, value);
                        expected.insert(page, value);
                    }
                    // From the first sample on, merging goes by dirty flags.
                    2 => host.sample(),
                    _ => merger.new_pass(&host),
                }
                for (&page, &value) in &expected {
                    prop_assert_eq!(host.read(page), value);
                }
                prop_assert_eq!(host.frames.len() as u64, pages.len() as u64 - merger.frames_saved());
                prop_assert!(merger.consistent());
            }
        }
    }
}
