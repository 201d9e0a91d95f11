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
        }
    }

    /// Pages a cell stands for.
    pub fn pages_per_cell(&self) -> u64 {
        self.pages.div_ceil(MAX_CELLS).max(1)
    }

    /// Takes one sample: `walk` calls its argument with `(page, accessed, dirty)` for each
    /// mapped page (the EPT walk, which also clears the flags).
    pub fn sample(&mut self, walk: impl FnOnce(&mut dyn FnMut(u64, bool, bool))) -> Sample {
        let per_cell = self.pages_per_cell();
        let mut cells = vec![PageState::Untouched as u8; self.pages.div_ceil(per_cell) as usize];
        let (mut accessed, mut dirty) = (0, 0);
        let ever = &mut self.ever;
        let pages = self.pages;
        walk(&mut |page, was_accessed, was_dirty| {
            if page >= pages {
                return;
            }
            let (word, bit) = ((page / 64) as usize, page % 64);
            let state = if was_dirty {
                dirty += 1;
                accessed += 1;
                PageState::Dirty
            } else if was_accessed {
                accessed += 1;
                PageState::Touched
            } else if ever[word] & (1 << bit) != 0 {
                PageState::Idle
            } else {
                PageState::Untouched
            };
            if was_accessed || was_dirty {
                ever[word] |= 1 << bit;
            }
            let cell = &mut cells[(page / per_cell) as usize];
            if rank(state) > rank(PageState::from_byte(*cell)) {
                *cell = state as u8;
            }
        });
        Sample {
            accessed,
            dirty,
            ever: self
                .ever
                .iter()
                .map(|word| u64::from(word.count_ones()))
                .sum(),
            pages_per_cell: per_cell,
            cells,
        }
    }
}

/// Which state a cell shows when its pages differ.
fn rank(state: PageState) -> u8 {
    match state {
        PageState::Untouched => 0,
        PageState::Idle => 1,
        PageState::Touched => 2,
        PageState::Dirty => 3,
        PageState::Merged => 4,
        PageState::Ballooned => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk over `pages` pages where `flags(page)` gives (accessed, dirty).
    fn walk(
        pages: u64,
        flags: impl Fn(u64) -> (bool, bool),
    ) -> impl FnOnce(&mut dyn FnMut(u64, bool, bool)) {
        move |seen| {
            for page in 0..pages {
                let (accessed, dirty) = flags(page);
                seen(page, accessed, dirty);
            }
        }
    }

    #[test]
    fn counts_and_history() {
        let mut set = WorkingSet::new(100);
        let first = set.sample(walk(100, |page| (page < 10, page < 3)));
        assert_eq!((first.accessed, first.dirty, first.ever), (10, 3, 10));
        assert_eq!(first.pages_per_cell, 1);
        assert_eq!(PageState::from_byte(first.cells[0]), PageState::Dirty);
        assert_eq!(PageState::from_byte(first.cells[5]), PageState::Touched);
        assert_eq!(PageState::from_byte(first.cells[50]), PageState::Untouched);
        // Next sample: pages 5..15 touched; 0..5 are idle now, 15.. untouched.
        let second = set.sample(walk(100, |page| ((5..15).contains(&page), false)));
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
        let sample = set.sample(walk(pages, |page| {
            (page == per_cell + 7, page == per_cell + 7)
        }));
        assert!(sample.cells.len() as u64 <= MAX_CELLS);
        assert_eq!(PageState::from_byte(sample.cells[1]), PageState::Dirty);
        assert_eq!(PageState::from_byte(sample.cells[0]), PageState::Untouched);
    }

    #[test]
    fn pages_beyond_the_ram_are_ignored() {
        let mut set = WorkingSet::new(8);
        let sample = set.sample(walk(20, |_| (true, true)));
        assert_eq!((sample.accessed, sample.ever), (8, 8));
    }
}
