//! Working-set sampling from the EPT's accessed and dirty flags: which guest pages a VM touched
//! since the last sample, which it wrote, which it has touched at all, and a coarse map of its
//! memory for the reports (one [`PageState`] byte per cell of pages). The EPT walk itself is
//! `carousel_vmx::ept::Tables::take_accessed_dirty`; this is what the flags mean.

use alloc::vec;
use alloc::vec::Vec;

use carousel_protocol::record::PageState;

/// Most cells a memory map has: a 224 MiB guest gets 56 pages per cell.
pub const MAX_CELLS: u64 = 1024;

/// One VM's page history.
#[derive(Debug, Clone)]
pub struct WorkingSet {
    pages: u64,
    /// One bit per page: touched at some sample.
    ever: Vec<u64>,
    /// The bits set in `ever`.
    ever_count: u64,
}

/// What one sample found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Pages accessed (read or written) since the last sample.
    pub accessed: u64,
    /// Pages written since the last sample.
    pub dirty: u64,
    /// Pages touched at any sample so far.
    pub ever: u64,
    /// Pages each cell of `cells` stands for.
    pub pages_per_cell: u64,
    /// Each cell's state: the "most" state of its pages (dirty over touched over idle over
    /// untouched), as [`PageState`] bytes.
    pub cells: Vec<u8>,
}

impl WorkingSet {
    /// A VM of `pages` 4 KiB pages, none touched yet.
    pub fn new(pages: u64) -> Self {
        Self {
            pages,
            ever: vec![0; pages.div_ceil(64) as usize],
            ever_count: 0,
        }
    }

    /// Pages a cell stands for.
    pub fn pages_per_cell(&self) -> u64 {
        self.pages.div_ceil(MAX_CELLS).max(1)
    }

    /// Takes one sample: `walk` calls its argument with `(page, dirty)` for each page accessed
    /// since the last sample (the EPT walk, which also clears the flags). Its cost follows the
    /// pages the walk reports and the cells, not the RAM: a cell no reported page falls in is
    /// idle when any of its pages was touched before, found a word of history at a time.
    /// Without `map` the sample has no cells (the memory map goes out with only some samples)
    /// and costs the walk alone.
    pub fn sample(&mut self, walk: impl FnOnce(&mut dyn FnMut(u64, bool)), map: bool) -> Sample {
        let per_cell = self.pages_per_cell();
        let cell_count = if map {
            self.pages.div_ceil(per_cell) as usize
        } else {
            0
        };
        let mut cells = vec![PageState::Untouched as u8; cell_count];
        let (mut accessed, mut dirty) = (0, 0);
        let ever = &mut self.ever;
        let ever_count = &mut self.ever_count;
        let pages = self.pages;
        walk(&mut |page, was_dirty| {
            if page >= pages {
                return;
            }
            accessed += 1;
            let state = if was_dirty {
                dirty += 1;
                PageState::Dirty
            } else {
                PageState::Touched
            };
            let (word, bit) = ((page / 64) as usize, page % 64);
            if ever[word] & (1 << bit) == 0 {
                ever[word] |= 1 << bit;
                *ever_count += 1;
            }
            if let Some(cell) = cells.get_mut((page / per_cell) as usize) {
                if rank(state) > rank(PageState::from_byte(*cell)) {
                    *cell = state as u8;
                }
            }
        });
        let mut sample = Sample {
            accessed,
            dirty,
            ever: self.ever_count,
            pages_per_cell: per_cell,
            cells,
        };
        if map {
            sample.raise(&self.ever, PageState::Idle);
        }
        sample
    }
}

impl Sample {
    /// Raises to `state` every cell with a page whose bit is set in `bits` (a bit per page,
    /// page 0 in bit 0 of word 0), unless the cell shows a state of higher rank already
    /// (ballooned over merged over dirty over touched over compressed over idle). The cost follows the words
    /// with a bit set and the cells they span (at most the words plus the cells in all), not
    /// the pages set: a fully touched 224 MiB guest is 896 words.
    pub fn raise(&mut self, bits: &[u64], state: PageState) {
        let per_cell = self.pages_per_cell.max(1);
        for (index, &word) in bits.iter().enumerate() {
            if word == 0 {
                continue;
            }
            let base = index as u64 * 64;
            let mut cell = base / per_cell;
            loop {
                // The bits of `word` that are pages of `cell`.
                let from = (cell * per_cell).max(base) - base;
                let to = ((cell + 1) * per_cell).min(base + 64) - base;
                let mask = if to - from == 64 {
                    u64::MAX
                } else {
                    ((1u64 << (to - from)) - 1) << from
                };
                if word & mask != 0 {
                    if let Some(shown) = self.cells.get_mut(cell as usize) {
                        if rank(state) > rank(PageState::from_byte(*shown)) {
                            *shown = state as u8;
                        }
                    }
                }
                if to == 64 {
                    break;
                }
                cell += 1;
            }
        }
    }
}

/// Which state a cell shows when its pages differ.
fn rank(state: PageState) -> u8 {
    match state {
        PageState::Untouched => 0,
        PageState::Idle => 1,
        PageState::Compressed => 2,
        PageState::Touched => 3,
        PageState::Dirty => 4,
        PageState::Merged => 5,
        PageState::Ballooned => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk over `pages` pages where `flags(page)` gives (accessed, dirty): it reports the
    /// accessed ones, as the EPT walk does.
    fn walk(
        pages: u64,
        flags: impl Fn(u64) -> (bool, bool),
    ) -> impl FnOnce(&mut dyn FnMut(u64, bool)) {
        move |seen| {
            for page in 0..pages {
                let (accessed, dirty) = flags(page);
                if accessed || dirty {
                    seen(page, dirty);
                }
            }
        }
    }

    #[test]
    fn counts_and_history() {
        let mut set = WorkingSet::new(100);
        let first = set.sample(walk(100, |page| (page < 10, page < 3)), true);
        assert_eq!((first.accessed, first.dirty, first.ever), (10, 3, 10));
        assert_eq!(first.pages_per_cell, 1);
        assert_eq!(PageState::from_byte(first.cells[0]), PageState::Dirty);
        assert_eq!(PageState::from_byte(first.cells[5]), PageState::Touched);
        assert_eq!(PageState::from_byte(first.cells[50]), PageState::Untouched);
        // Next sample: pages 5..15 touched; 0..5 are idle now, 15.. untouched.
        let second = set.sample(walk(100, |page| ((5..15).contains(&page), false)), true);
        assert_eq!((second.accessed, second.dirty, second.ever), (10, 0, 15));
        assert_eq!(PageState::from_byte(second.cells[0]), PageState::Idle);
        assert_eq!(PageState::from_byte(second.cells[14]), PageState::Touched);
        assert_eq!(PageState::from_byte(second.cells[15]), PageState::Untouched);
    }

    #[test]
    fn big_guests_get_at_most_max_cells_and_a_cell_shows_its_busiest_page() {
        let pages = 224 * 256; // 224 MiB
        let mut set = WorkingSet::new(pages);
        let per_cell = set.pages_per_cell();
        assert_eq!(per_cell, 56);
        let sample = set.sample(
            walk(pages, |page| (page == per_cell + 7, page == per_cell + 7)),
            true,
        );
        assert!(sample.cells.len() as u64 <= MAX_CELLS);
        assert_eq!(PageState::from_byte(sample.cells[1]), PageState::Dirty);
        assert_eq!(PageState::from_byte(sample.cells[0]), PageState::Untouched);
    }

    #[test]
    fn cells_are_raised_by_a_bit_map_unless_they_show_more() {
        let mut set = WorkingSet::new(300);
        // 300 pages fit 1,024 cells: a page a cell.
        assert_eq!(set.pages_per_cell(), 1);
        let mut sample = set.sample(walk(300, |page| (page == 70, page == 70)), true);
        let mut bits = vec![0u64; 5];
        for page in [3u64, 64, 70, 299] {
            bits[(page / 64) as usize] |= 1 << (page % 64);
        }
        sample.raise(&bits, PageState::Merged);
        let merged: Vec<usize> = (0..300)
            .filter(|&cell| PageState::from_byte(sample.cells[cell]) == PageState::Merged)
            .collect();
        assert_eq!(merged, [3, 64, 70, 299], "merged outranks dirty");
        sample.raise(&bits, PageState::Idle);
        assert_eq!(
            PageState::from_byte(sample.cells[3]),
            PageState::Merged,
            "not lowered"
        );
        // Many pages a cell: a cell is raised when any of its pages is set, across words.
        let mut big = WorkingSet::new(224 * 256);
        let mut sample = big.sample(walk(0, |_| (false, false)), true);
        let mut bits = vec![0u64; (224 * 256) / 64];
        let page = 56 * 5 + 55; // the last page of cell 5, in word 4
        bits[page / 64] |= 1 << (page % 64);
        sample.raise(&bits, PageState::Ballooned);
        let raised: Vec<usize> = (0..sample.cells.len())
            .filter(|&cell| sample.cells[cell] == PageState::Ballooned as u8)
            .collect();
        assert_eq!(raised, [5]);
        // Cells of 128 pages: a word's bits fall in one cell or two.
        let mut huge = WorkingSet::new(1024 * 128);
        assert_eq!(huge.pages_per_cell(), 128);
        let mut sample = huge.sample(walk(0, |_| (false, false)), true);
        let mut bits = vec![0u64; 1024 * 2];
        for page in [127u64, 128, 64 * 5 + 3, 1024 * 128 - 1] {
            bits[(page / 64) as usize] |= 1 << (page % 64);
        }
        sample.raise(&bits, PageState::Idle);
        let raised: Vec<usize> = (0..sample.cells.len())
            .filter(|&cell| sample.cells[cell] == PageState::Idle as u8)
            .collect();
        assert_eq!(raised, [0, 1, 2, 1023]);
    }

    proptest::proptest! {
        /// Raising by a bit map gives what looking at every page would: each cell with a set
        /// page shows `state` unless it showed more, whatever the cell size.
        #[test]
        fn raising_matches_a_page_by_page_look(
            pages in 1u64..200_000,
            set in proptest::collection::vec(0u64..200_000, 0..64),
            dense in 0u64..3_000,
        ) {
            let mut working = WorkingSet::new(pages);
            let mut sample = working.sample(walk(pages, |page| (page % 97 == 0, page % 194 == 0)), true);
            let before = sample.cells.clone();
            let mut bits = vec![0u64; pages.div_ceil(64) as usize];
            let chosen: Vec<u64> = set.into_iter().chain(0..dense).filter(|&page| page < pages).collect();
            for &page in &chosen {
                bits[(page / 64) as usize] |= 1 << (page % 64);
            }
            sample.raise(&bits, PageState::Merged);
            let per_cell = sample.pages_per_cell;
            for (cell, (&after, &was)) in sample.cells.iter().zip(&before).enumerate() {
                let hit = chosen.iter().any(|&page| page / per_cell == cell as u64);
                let expected = if hit && rank(PageState::Merged) > rank(PageState::from_byte(was)) {
                    PageState::Merged as u8
                } else {
                    was
                };
                proptest::prop_assert_eq!(after, expected, "cell {} of {} pages a cell", cell, per_cell);
            }
        }
    }

    #[test]
    fn a_sample_without_its_map_counts_the_same_and_has_no_cells() {
        let flags = |page: u64| (page % 3 == 0, page % 6 == 0);
        let (mut with, mut without) = (WorkingSet::new(5_000), WorkingSet::new(5_000));
        for _ in 0..2 {
            let mapped = with.sample(walk(5_000, flags), true);
            let bare = without.sample(walk(5_000, flags), false);
            assert_eq!(
                (bare.accessed, bare.dirty, bare.ever),
                (mapped.accessed, mapped.dirty, mapped.ever)
            );
            assert!(bare.cells.is_empty() && !mapped.cells.is_empty());
        }
    }

    #[test]
    fn pages_beyond_the_ram_are_ignored() {
        let mut set = WorkingSet::new(8);
        let sample = set.sample(walk(20, |_| (true, true)), true);
        assert_eq!((sample.accessed, sample.ever), (8, 8));
    }
}
