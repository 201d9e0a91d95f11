//! Same-page merging, the logic: pages of any VM with identical contents come to share one
//! read-only frame, and a write to a shared page gets its own copy again (copy on write).
//!
//! Like Linux's KSM it merges only pages whose contents did not change since their previous
//! scan (a page being filled or written would be copied straight back), and keeps two kinds of entries by content hash: **shared** frames, already
//! read-only and mapped by several pages, and one **candidate** per hash, a page seen once whose
//! contents may still change (it stays writable). A scanned page that equals a shared frame
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
    /// Records `hash` as `page`'s contents hash at this scan, returning the one recorded at
    /// its previous scan (0 at the first).
    fn swap_hash(&mut self, page: PageRef, hash: u32) -> u32;
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
    /// Shared frames by content hash (several when hashes collide).
    shared: BTreeMap<u64, alloc::vec::Vec<u64>>,
    /// Mappings of each shared frame.
    refs: BTreeMap<u64, u32>,
    /// One candidate page per content hash.
    candidates: BTreeMap<u64, PageRef>,
    /// Pages merged and copies made over the run.
    pub merges: u64,
    pub cow_breaks: u64,
}

/// Most candidates kept at once, so that the hypervisor's memory for merging never grows with
/// what guests write (each shared frame, in turn, saves at least a frame). Like KSM's unstable
/// tree the candidates last one pass over the VMs ([`Merger::new_pass`]); when the cache is full
/// new pages wait for the next pass, and the ones kept can still find their twins.
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
            .map(|&refs| u64::from(refs.saturating_sub(1)))
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
        let hash = page_hash(host.contents(frame));
        // Only pages that kept their contents since their previous scan (0 stands for "never
        // scanned", so a page whose hash folds to 0 waits one scan more: harmless).
        let folded = (hash ^ (hash >> 32)) as u32;
        if host.swap_hash(page, folded) != folded || folded == 0 {
            return Scanned::Changing;
        }
        // A shared frame with these contents: join it.
        let same = self.shared.get(&hash).and_then(|frames| {
            frames
                .iter()
                .copied()
                .find(|&shared| host.contents(shared) == host.contents(frame))
        });
        if let Some(shared) = same {
            host.map(page, shared, true);
            host.free(frame);
            *self.refs.entry(shared).or_insert(0) += 1;
            self.merges += 1;
            return Scanned::Merged;
        }
        // The candidate for these contents, if it is still backed, private and the same.
        match self.candidates.get(&hash).copied() {
            Some(other) if other != page => {
                let alive = host
                    .frame_of(other)
                    .filter(|&(_, shared)| !shared)
                    .map(|(frame, _)| frame)
                    .filter(|&candidate| host.contents(candidate) == host.contents(frame));
                if let Some(candidate) = alive {
                    self.candidates.remove(&hash);
                    host.map(other, candidate, true);
                    host.map(page, candidate, true);
                    host.free(frame);
                    self.shared.entry(hash).or_default().push(candidate);
                    self.refs.insert(candidate, 2);
                    self.merges += 1;
                    return Scanned::Merged;
                }
                self.remember(hash, page);
                Scanned::Candidate
            }
            _ => {
                self.remember(hash, page);
                Scanned::Candidate
            }
        }
    }

    /// Keeps `page` as the candidate for `hash`, unless the cache is full.
    fn remember(&mut self, hash: u64, page: PageRef) {
        if self.candidates.len() < MAX_CANDIDATES || self.candidates.contains_key(&hash) {
            self.candidates.insert(hash, page);
        }
    }

    /// A new pass over the VMs begins: the candidates of the last one are dropped (pages
    /// still unchanged become candidates again as the pass reaches them).
    pub fn new_pass(&mut self) {
        self.candidates.clear();
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

    /// A shared page leaves (its VM is released): one mapping fewer.
    pub fn unmap(&mut self, frame: u64, host: &mut impl Host) {
        self.unref(frame, host);
    }

    fn unref(&mut self, frame: u64, host: &mut impl Host) {
        let Some(refs) = self.refs.get_mut(&frame) else {
            return;
        };
        *refs -= 1;
        if *refs == 0 {
            self.refs.remove(&frame);
            for frames in self.shared.values_mut() {
                frames.retain(|&shared| shared != frame);
            }
            self.shared.retain(|_, frames| !frames.is_empty());
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
        hashes: Map<PageRef, u32>,
        next: u64,
        out_of_memory: bool,
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
        }
    }

    impl Host for FakeHost {
        fn frame_of(&self, page: PageRef) -> Option<(u64, bool)> {
            self.pages.get(&page).copied()
        }
        fn contents(&self, frame: u64) -> &[u8; 4096] {
            &self.frames[&frame]
        }
        fn map(&mut self, page: PageRef, frame: u64, shared: bool) {
            self.pages.insert(page, (frame, shared));
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
        fn swap_hash(&mut self, page: PageRef, hash: u32) -> u32 {
            self.hashes.insert(page, hash).unwrap_or(0)
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
        let hash = page_hash(host.contents(host.pages[&(0, 1)].0));
        merger.candidates.insert(hash, (0, 0));
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
        assert_eq!(merger.candidates(), MAX_CANDIDATES);
        // The cache keeps its first pages: their twins still merge with them.
        host.page((1, 0), 0);
        let twin = host.pages[&(1, 0)].0;
        host.frames.get_mut(&twin).unwrap()[..8].copy_from_slice(&0u64.to_le_bytes());
        host.frames.get_mut(&twin).unwrap()[8] = 1;
        merger.scan((1, 0), &mut host);
        assert_eq!(merger.scan((1, 0), &mut host), Scanned::Merged);
        merger.new_pass();
        assert_eq!(merger.candidates(), 0);
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
        /// Whatever pages are scanned and written, every page reads what was last written to
        /// it, no frame is freed while mapped (the fake host asserts it), and the frames in
        /// use are the pages minus the frames saved.
        #[test]
        fn guests_always_read_their_own_writes(
            fills in proptest::collection::vec(0u8..3, 1..24),
            ops in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>(), 0u8..3), 0..80),
        ) {
            let mut host = FakeHost::default();
            let mut merger = Merger::new();
            let pages: Vec<PageRef> = (0..fills.len()).map(|i| ((i % 3) as u16, i as u64)).collect();
            let mut expected: Map<PageRef, u8> = Map::new();
            for (&page, &fill) in pages.iter().zip(&fills) {
                host.page(page, fill);
                expected.insert(page, fill);
            }
            for (scan, index, value) in ops {
                let page = pages[index.index(pages.len())];
                if scan {
                    merger.scan(page, &mut host);
                } else {
                    host.write(&mut merger, page, value);
                    expected.insert(page, value);
                }
                for (&page, &value) in &expected {
                    prop_assert_eq!(host.read(page), value);
                }
                prop_assert_eq!(host.frames.len() as u64, pages.len() as u64 - merger.frames_saved());
            }
        }
    }
}
