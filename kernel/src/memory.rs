//! Guest memory: each VM's RAM as host frames, and the host's pool those frames come from.
//!
//! - [`Frames`]: the host's physical frames, as the hypervisor binary owns them (or a fake in
//!   tests). Every access to a frame's contents goes through it, so the borrow checker keeps
//!   two writers of one frame apart.
//! - [`GuestMemory`]: one VM's RAM, guest-physical [0, size): an entry per page (8 bytes a
//!   page), with four page states beside "backed and private": **shared** (same-page merging: a
//!   read-only frame several pages map), **lazy** (not backed yet, reads as zeros, gets a frame at
//!   its first touch), **compressed** (cold: its contents packed in the entry or in the pool of
//!   [`crate::compress`], no frame and no mapping; the next touch unpacks it into a fresh frame)
//!   and unbacked (ballooned out).
//! - [`HostMemory`]: the frames, the run's guest-page budget and the merging state together: the
//!   operations that move frames between VMs and the pool.
//!
//! Every frame a guest sees is zeroed first, so nothing one VM leaves in memory reaches another.

use alloc::vec::Vec;

use carousel_vmx::addr::HostPhysAddr;
use carousel_vmx::ept::FrameSource;

use crate::balloon::Budget;
use crate::compress::{self, Ages, Packed, Pool};
use crate::merging::{self, CowError, Merger, PageRef};
use crate::{range_in_ram, PAGE_SIZE};

/// One page's contents seen as page-table entries (the EPT's view).
pub type Table = [u64; 512];

/// The host's physical frames.
pub trait Frames {
    /// A zeroed frame, or None when none is left.
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr>;
    /// Returns a frame [`Self::allocate_zeroed`] gave out.
    fn free(&mut self, frame: HostPhysAddr);
    /// Frames left to give out.
    fn free_frames(&self) -> u64;
    /// The contents of a frame this store gave out, as 512 entries.
    fn table(&self, frame: HostPhysAddr) -> &Table;
    /// The same, writable.
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table;

    /// The contents of a frame, as bytes.
    fn bytes(&self, frame: HostPhysAddr) -> &[u8; PAGE_SIZE as usize] {
        bytemuck::cast_ref(self.table(frame))
    }

    /// The contents of a frame, as bytes, writable.
    fn bytes_mut(&mut self, frame: HostPhysAddr) -> &mut [u8; PAGE_SIZE as usize] {
        bytemuck::cast_mut(self.table_mut(frame))
    }
}

/// Why guest RAM could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory {
    pub wanted_bytes: u64,
    pub free_bytes: u64,
}

/// Bits of a frame entry holding the frame number (64 TiB of host memory). Above them, below
/// the compressed pages' tag, the page's merging key ([`merging::KEY_BITS`] bits, 0: none).
const FRAME_BITS: u32 = 34;
const FRAME_MASK: u64 = (1 << FRAME_BITS) - 1;
const KEY_MASK: u32 = (1 << merging::KEY_BITS) - 1;
const _: () = assert!(
    FRAME_BITS + merging::KEY_BITS <= 62,
    "the key must stay below the tag"
);

/// A frame number (address / 4 KiB) as a page entry, 0 for "no frame" (frame 0, the real-mode
/// IVT, is never handed out). An entry with its top bits set is a compressed page
/// ([`Packed`]).
fn frame_number(frame: HostPhysAddr) -> u64 {
    // Guest frames lie below 4 GiB (`hw::physical` identity-maps that much), far inside the
    // entry's 34 bits; a number beyond them would read back as another frame.
    let number = frame.as_u64() / PAGE_SIZE;
    debug_assert!(
        number <= FRAME_MASK,
        "frame {number:#x} beyond the entry's bits"
    );
    number
}

fn frame_at(entry: u64) -> Option<HostPhysAddr> {
    let number = entry & FRAME_MASK;
    (number != 0 && !Packed::is_packed(entry)).then(|| HostPhysAddr(number * PAGE_SIZE))
}

/// The merging key a frame entry holds (0: none).
fn key_of(entry: u64) -> u32 {
    if Packed::is_packed(entry) {
        0
    } else {
        (entry >> FRAME_BITS) as u32 & KEY_MASK
    }
}

/// Pages a lazy fault backs at once: its aligned group (Linux's `fault_around_bytes` is
/// 64 KiB too).
pub const FAULT_AROUND: u64 = 16;

/// A bit per page.
#[derive(Debug, Clone, Default)]
struct PageBits(Vec<u64>);

impl PageBits {
    fn new(pages: u64) -> Self {
        Self(alloc::vec![0; pages.div_ceil(64) as usize])
    }

    /// Every one of `pages` bits set.
    fn all(pages: u64) -> Self {
        let mut bits = Self(alloc::vec![u64::MAX; pages.div_ceil(64) as usize]);
        if let Some(last) = bits.0.last_mut() {
            if !pages.is_multiple_of(64) {
                *last = (1 << (pages % 64)) - 1;
            }
        }
        bits
    }

    fn get(&self, page: u64) -> bool {
        self.0
            .get((page / 64) as usize)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    fn set(&mut self, page: u64, value: bool) {
        if let Some(word) = self.0.get_mut((page / 64) as usize) {
            if value {
                *word |= 1 << (page % 64);
            } else {
                *word &= !(1 << (page % 64));
            }
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|word| u64::from(word.count_ones())).sum()
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    fn bytes(&self) -> usize {
        self.0.capacity() * core::mem::size_of::<u64>()
    }
}

/// A VM's RAM.
#[derive(Debug)]
pub struct GuestMemory {
    /// Each page's entry: its frame number (0: none) and merging key, or its compressed
    /// contents.
    frames: Vec<u64>,
    /// The frame is shared with identical pages and mapped read-only.
    shared: PageBits,
    /// Not backed yet; reads as zeros.
    lazy: PageBits,
    /// Compressed: the entry holds a [`Packed`].
    compressed: PageBits,
    /// Pages whose frame or sharing changed since the EPT last saw them (the VM rewrites their
    /// mappings before it runs again).
    pub pending: Vec<u64>,
    /// Working-set samples report this VM's writes (from its first sample on); then `hot` holds
    /// the pages the last sample saw touched or that got a frame since, and `clean` those not
    /// written since merging read them (their key is current).
    tracked: bool,
    hot: PageBits,
    clean: PageBits,
}

/// Splits [gpa, gpa + len) at page boundaries: (page, offset in page, bytes before this chunk,
/// chunk length).
pub fn page_chunks(gpa: u64, len: u64) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let mut done = 0u64;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = gpa + done;
        let offset = at % PAGE_SIZE;
        let chunk = (PAGE_SIZE - offset).min(len - done);
        let item = (
            at / PAGE_SIZE,
            offset as usize,
            done as usize,
            chunk as usize,
        );
        done += chunk;
        Some(item)
    })
}

impl GuestMemory {
    /// Bytes of RAM.
    pub fn size(&self) -> u64 {
        self.frames.len() as u64 * PAGE_SIZE
    }

    /// Pages of RAM (backed or not).
    pub fn size_pages(&self) -> u64 {
        self.frames.len() as u64
    }

    /// The frame backing `page` and whether it is shared.
    pub fn frame(&self, page: u64) -> Option<(HostPhysAddr, bool)> {
        let frame = frame_at(*self.frames.get(page as usize)?)?;
        Some((frame, self.shared.get(page)))
    }

    /// Pages backed by a frame (shared ones included).
    pub fn backed_pages(&self) -> u64 {
        self.frames
            .iter()
            .filter(|&&entry| frame_at(entry).is_some())
            .count() as u64
    }

    /// Bytes of the per-page state: the entries and the page bits.
    pub fn table_bytes(&self) -> usize {
        self.frames.capacity() * core::mem::size_of::<u64>()
            + [
                &self.shared,
                &self.lazy,
                &self.compressed,
                &self.hot,
                &self.clean,
            ]
            .iter()
            .map(|bits| bits.bytes())
            .sum::<usize>()
    }

    /// A working-set sample begins: from now on merging goes by what samples report.
    pub fn begin_sample(&mut self) {
        self.tracked = true;
        self.hot.clear();
    }

    /// The sample found `page` accessed (and `dirty`: written) since the last one.
    pub fn sampled(&mut self, page: u64, dirty: bool) {
        self.hot.set(page, true);
        if dirty {
            self.clean.set(page, false);
        }
    }

    /// What merging knows of `page`'s writes.
    fn tracking(&self, page: u64) -> merging::Tracking {
        if !self.tracked {
            return merging::Tracking::Hashes;
        }
        let key = self
            .frames
            .get(page as usize)
            .map_or(0, |&entry| key_of(entry));
        merging::Tracking::Dirty {
            hot: self.hot.get(page),
            clean_key: (self.clean.get(page) && key != 0).then_some(key),
        }
    }

    /// The first page from `from` on that merging should look at: backed, private, not
    /// compressed, and, where samples report writes, neither hot nor clean. It goes over a word
    /// of page bits at a time, counting the words down in `words_left`. Err: none found; the
    /// page to go on from when the words ran out, or `u64::MAX` at the end of the RAM. A word
    /// is counted when the search leaves it.
    fn next_to_merge(&self, from: u64, words_left: &mut u64) -> Result<u64, u64> {
        let pages = self.size_pages();
        let mut word = (from / 64) as usize;
        let mut mask = u64::MAX << (from % 64);
        while (word as u64) * 64 < pages {
            let word_of = |bits: &PageBits| bits.0.get(word).copied().unwrap_or(0);
            let mut wanted =
                !(word_of(&self.lazy) | word_of(&self.compressed) | word_of(&self.shared));
            if self.tracked {
                wanted &= !(word_of(&self.hot) | word_of(&self.clean));
            }
            wanted &= mask;
            while wanted != 0 {
                let page = word as u64 * 64 + u64::from(wanted.trailing_zeros());
                if page >= pages {
                    break;
                }
                if frame_at(self.frames[page as usize]).is_some() {
                    return Ok(page);
                }
                wanted &= wanted - 1;
            }
            word += 1;
            mask = u64::MAX;
            if *words_left == 0 {
                return Err(word as u64 * 64);
            }
            *words_left -= 1;
        }
        Err(u64::MAX)
    }

    /// `page`'s entry changed: its key is gone, and it counts as touched until the next
    /// sample.
    fn changed(&mut self, page: u64) {
        self.clean.set(page, false);
        self.hot.set(page, true);
        self.pending.push(page);
    }

    /// True when `page` is compressed: no frame, its contents packed.
    pub fn is_compressed(&self, page: u64) -> bool {
        self.compressed.get(page)
    }

    /// Pages compressed now.
    pub fn compressed_pages(&self) -> u64 {
        self.compressed.count()
    }

    /// The compressed pages now, as bits (page 0 in bit 0 of word 0).
    pub fn compressed_bits(&self) -> &[u64] {
        &self.compressed.0
    }

    /// The packed contents of compressed `page`.
    fn packed(&self, page: u64) -> Option<Packed> {
        Packed::decode(*self.frames.get(page as usize)?)
    }

    /// Sets `page`'s entry to packed contents or a frame (the EPT follows at the next sync).
    fn set_entry(&mut self, page: u64, entry: u64) {
        let Some(slot) = self.frames.get_mut(page as usize) else {
            return;
        };
        *slot = entry;
        self.compressed.set(page, Packed::is_packed(entry));
        self.changed(page);
    }

    /// True when `page` shares its frame (read-only) with identical pages.
    pub fn is_shared(&self, page: u64) -> bool {
        self.shared.get(page)
    }

    /// The pages sharing a frame now, as bits (page 0 in bit 0 of word 0).
    pub fn shared_bits(&self) -> &[u64] {
        &self.shared.0
    }

    /// Pages sharing a frame now.
    pub fn shared_pages(&self) -> u64 {
        self.shared.count()
    }

    /// True when `page` has no frame yet and reads as zeros.
    pub fn is_lazy(&self, page: u64) -> bool {
        self.lazy.get(page)
    }

    /// Host frames backing the pages, in guest-physical order (guest page, frame).
    pub fn frames(&self) -> impl Iterator<Item = (u64, HostPhysAddr)> + '_ {
        self.frames
            .iter()
            .enumerate()
            .filter_map(|(page, &frame)| frame_at(frame).map(|frame| (page as u64, frame)))
    }

    /// Records `page`'s contents key at this merging scan in its entry (and, with samples, that
    /// it is clean from now); returns the previous one.
    fn swap_key(&mut self, page: u64, key: u32) -> u32 {
        let Some(slot) = self.frames.get_mut(page as usize) else {
            return 0;
        };
        if frame_at(*slot).is_none() {
            return 0;
        }
        let old = key_of(*slot);
        *slot = (*slot & FRAME_MASK) | u64::from(key & KEY_MASK) << FRAME_BITS;
        if self.tracked {
            self.clean.set(page, true);
        }
        old
    }

    /// Points `page` at `frame`, shared or private; the EPT follows at the next sync.
    fn set_frame(&mut self, page: u64, frame: HostPhysAddr, shared: bool) {
        let Some(slot) = self.frames.get_mut(page as usize) else {
            return;
        };
        *slot = frame_number(frame);
        self.shared.set(page, shared);
        self.changed(page);
    }

    /// Copies guest RAM [gpa, gpa + out.len()) into `out`. False if any byte is outside RAM or
    /// on a page without a frame (ballooned out).
    pub fn read(&self, frames: &impl Frames, gpa: u64, out: &mut [u8]) -> bool {
        if !range_in_ram(gpa, out.len() as u64, self.size()) {
            return false;
        }
        for (page, offset, done, len) in page_chunks(gpa, out.len() as u64) {
            match frame_at(self.frames[page as usize]) {
                Some(frame) => out[done..done + len]
                    .copy_from_slice(&frames.bytes(frame)[offset..offset + len]),
                None if self.is_lazy(page) => out[done..done + len].fill(0),
                None => {
                    let mut contents = [0u8; PAGE_SIZE as usize];
                    if !self.unpack(frames, page, &mut contents) {
                        return false;
                    }
                    out[done..done + len].copy_from_slice(&contents[offset..offset + len]);
                }
            }
        }
        true
    }

    /// Writes compressed `page`'s contents into `out`; false if it is not compressed (or its
    /// blob does not decode, which only a bug in the pool could cause).
    fn unpack(&self, frames: &impl Frames, page: u64, out: &mut [u8; PAGE_SIZE as usize]) -> bool {
        let Some(packed) = self.packed(page) else {
            return false;
        };
        match packed.blob_range() {
            Some((frame, range)) => {
                let Some(frame) = frame_at(u64::from(frame)) else {
                    return false;
                };
                packed.expand(&frames.bytes(frame)[range], out)
            }
            None => packed.expand(&[], out),
        }
    }

    /// The guest page holding `gpa` reads back: backed, compressed, or lazy (zeros).
    pub fn readable(&self, page: u64) -> bool {
        self.frames
            .get(page as usize)
            .is_some_and(|&entry| entry != 0)
            || self.is_lazy(page)
    }
}

/// The host's frames, the guest-page budget and same-page merging.
#[derive(Debug)]
pub struct HostMemory<F> {
    pub frames: F,
    budget: Budget,
    merger: Merger,
    /// The compressed pages' blobs, and what compression did so far.
    compressor: Pool,
    compression: CompressTotals,
}

/// A frame source for the EPT builder over the host's frames.
impl<F: Frames> FrameSource for HostMemory<F> {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        self.frames.allocate_zeroed()
    }
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut [u64; 512] {
        self.frames.table_mut(frame)
    }
    fn table(&self, frame: HostPhysAddr) -> &[u64; 512] {
        self.frames.table(frame)
    }
}

/// The figures of a `Merging` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MergeTotals {
    pub merges: u64,
    pub cow_breaks: u64,
    pub shared_frames: u64,
    pub frames_saved: u64,
}

/// What compression did so far, and the pool now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompressTotals {
    /// Pages compressed, and compressed pages brought back into a frame.
    pub compressed: u64,
    pub decompressed: u64,
    /// Root cycles of the decompressions on a guest's touch.
    pub decompress_cycles: u64,
    /// Cold pages left as they were: their contents would not save space, or the pool was full.
    pub incompressible: u64,
    pub pool_full: u64,
    /// Frames the pool holds, and bytes of the blobs in them.
    pub pool_frames: u64,
    pub pool_bytes: u64,
    /// Pages held as blobs (the other compressed pages are patterns, in their entries).
    pub blob_pages: u64,
}

/// What compressing a page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressed {
    /// Packed in its entry (a pattern) or in the pool; its frame went back.
    Packed,
    /// Not a private, backed page.
    NotPrivate,
    /// Its contents would not save space.
    Incompressible,
    /// The pool is at its limit (or the host has no frame for a new pool frame).
    PoolFull,
    /// It needs LZ4 and the pass has run LZ4 as often as it may.
    Later,
}

/// Pages a compression pass may put through LZ4, per VM.
pub const LZ4_PER_PASS: u64 = 64;

/// Where the merging scan goes on from: VM index and page.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanCursor {
    vm: usize,
    page: u64,
}

impl<F: Frames> HostMemory<F> {
    /// The pool over `frames`, with at most `limit` guest pages backed at once (None: the
    /// frames are the limit).
    pub fn new(frames: F, limit: Option<u64>) -> Self {
        Self {
            frames,
            budget: Budget {
                limit,
                backed: 0,
                peak: 0,
            },
            merger: Merger::new(),
            compressor: Pool::default(),
            compression: CompressTotals::default(),
        }
    }

    /// True when the compressed pool may take another frame of blobs.
    pub fn compress_pool_has_room(&self) -> bool {
        self.compressor.has_room()
    }

    /// Lets the compressed pool hold at most `frames` frames of blobs (0: patterns only).
    pub fn set_pool_limit(&mut self, frames: u64) {
        self.compressor.limit = frames;
    }

    /// Guest frames in use over all VMs (a shared frame counts once).
    pub fn guest_pages_backed(&self) -> u64 {
        self.budget.backed
    }

    /// The most guest frames in use at any instant so far.
    pub fn guest_pages_peak(&self) -> u64 {
        self.budget.peak
    }

    /// Guest pages that could be backed now: free frames, within the budget.
    pub fn guest_pages_available(&self) -> u64 {
        self.budget.available(self.frames.free_frames())
    }

    /// Free host frames now.
    pub fn free_frames(&self) -> u64 {
        self.frames.free_frames()
    }

    /// A zeroed frame for the hypervisor's own use (a table, a VMCS), outside the budget.
    pub fn allocate(&mut self) -> Option<HostPhysAddr> {
        self.frames.allocate_zeroed()
    }

    /// A zeroed frame for guest RAM, within the budget.
    fn allocate_guest(&mut self) -> Option<HostPhysAddr> {
        if self.guest_pages_available() == 0 {
            return None;
        }
        let frame = self.frames.allocate_zeroed()?;
        self.budget.backed += 1;
        self.budget.peak = self.budget.peak.max(self.budget.backed);
        Some(frame)
    }

    fn free_guest(&mut self, frame: HostPhysAddr) {
        self.frames.free(frame);
        self.budget.backed = self.budget.backed.saturating_sub(1);
    }

    /// RAM of `size` bytes (whole pages), every page backed by a zeroed frame. The frames do
    /// not count against the budget's limit (a lab is checked against it before the run), but
    /// they count as backed.
    pub fn guest_memory(&mut self, size: u64) -> Result<GuestMemory, OutOfMemory> {
        let pages = size / PAGE_SIZE;
        let mut frames = Vec::with_capacity(pages as usize);
        for _ in 0..pages {
            match self.frames.allocate_zeroed() {
                Some(frame) => frames.push(frame_number(frame)),
                None => {
                    let taken = frames.len() as u64 * PAGE_SIZE;
                    for frame in frames.into_iter().filter_map(frame_at) {
                        self.frames.free(frame);
                    }
                    return Err(OutOfMemory {
                        wanted_bytes: size,
                        free_bytes: self.frames.free_frames() * PAGE_SIZE + taken,
                    });
                }
            }
        }
        self.budget.backed += pages;
        self.budget.peak = self.budget.peak.max(self.budget.backed);
        Ok(GuestMemory {
            frames,
            shared: PageBits::new(pages),
            lazy: PageBits::new(pages),
            compressed: PageBits::new(pages),
            pending: Vec::new(),
            tracked: false,
            hot: PageBits::new(pages),
            clean: PageBits::new(pages),
        })
    }

    /// RAM of `size` bytes (whole pages) with no frame yet: every page lazy, reading as zeros
    /// and backed at its first write or touch (within the budget). A lazily backed VM starts
    /// so, rather than with frames it would give back: at 224 MiB that is 57,344 frames not
    /// zeroed, mapped, scanned and unmapped.
    pub fn lazy_guest_memory(&mut self, size: u64) -> GuestMemory {
        let pages = size / PAGE_SIZE;
        GuestMemory {
            frames: alloc::vec![0; pages as usize],
            shared: PageBits::new(pages),
            lazy: PageBits::all(pages),
            compressed: PageBits::new(pages),
            pending: Vec::new(),
            tracked: false,
            hot: PageBits::new(pages),
            clean: PageBits::new(pages),
        }
    }

    /// Copies `bytes` into guest RAM at `gpa`. A shared page gets its own copy first and a
    /// lazy one its frame (both mapped before the guest runs again); returns false when the
    /// range is outside RAM, touches a ballooned-out page, or no frame is left for a copy (then
    /// nothing past that page is written).
    pub fn write(&mut self, memory: &mut GuestMemory, gpa: u64, bytes: &[u8]) -> bool {
        if !range_in_ram(gpa, bytes.len() as u64, memory.size()) {
            return false;
        }
        for (page, offset, done, len) in page_chunks(gpa, bytes.len() as u64) {
            let Some(frame) = self.make_private(memory, page) else {
                return false;
            };
            self.frames.bytes_mut(frame)[offset..offset + len]
                .copy_from_slice(&bytes[done..done + len]);
        }
        true
    }

    /// Sets [gpa, gpa + len) of guest RAM to `value` (as [`Self::write`]).
    pub fn fill(&mut self, memory: &mut GuestMemory, gpa: u64, len: u64, value: u8) -> bool {
        if !range_in_ram(gpa, len, memory.size()) {
            return false;
        }
        for (page, offset, _, len) in page_chunks(gpa, len) {
            let Some(frame) = self.make_private(memory, page) else {
                return false;
            };
            self.frames.bytes_mut(frame)[offset..offset + len].fill(value);
        }
        true
    }

    /// The private, backed frame of `page`, making it so first (a copy of a shared frame, a
    /// fresh frame for a lazy page). None for a ballooned page or when no frame is left.
    fn make_private(&mut self, memory: &mut GuestMemory, page: u64) -> Option<HostPhysAddr> {
        // The hypervisor's writes set no dirty flag: merging reads the page again.
        memory.clean.set(page, false);
        if memory.is_lazy(page) {
            return self.back(memory, page);
        }
        if memory.is_compressed(page) {
            return self.decompress(memory, page);
        }
        match memory.frame(page)? {
            (frame, false) => Some(frame),
            (_, true) => self.copy_on_write(memory, page).ok(),
        }
    }

    /// Gives `page` a fresh zeroed frame (it is deflated, or touched for the first time) and
    /// returns it; None if it is backed already, out of range, or no frame is left.
    pub fn back(&mut self, memory: &mut GuestMemory, page: u64) -> Option<HostPhysAddr> {
        if memory
            .frames
            .get(page as usize)
            .is_none_or(|&frame| frame != 0)
        {
            return None;
        }
        let frame = self.allocate_guest()?;
        memory.frames[page as usize] = frame_number(frame);
        memory.lazy.set(page, false);
        memory.changed(page);
        Some(frame)
    }

    /// The first touch of lazy `page`: backs it, and the other lazy pages of its aligned group
    /// of [`FAULT_AROUND`] pages while frames last (one exit instead of sixteen for a guest
    /// that fills its RAM in order, as xv6's `kfree` does). Returns the neighbours backed
    /// (they count as touched: if the guest leaves them alone they turn cold), or None when
    /// `page` itself got no frame.
    pub fn back_around(&mut self, memory: &mut GuestMemory, page: u64) -> Option<Vec<u64>> {
        self.back(memory, page)?;
        let first = page - page % FAULT_AROUND;
        let group = first..(first + FAULT_AROUND).min(memory.size_pages());
        Some(
            group
                .filter(|&other| {
                    other != page && memory.is_lazy(other) && self.back(memory, other).is_some()
                })
                .collect(),
        )
    }

    /// Takes `page`'s frame away (it is ballooned out) and returns it to the host (a shared
    /// frame loses one mapping); the page is then neither backed nor lazy. Returns whether it
    /// had a frame.
    pub fn unback(&mut self, memory: &mut GuestMemory, page: u64) -> bool {
        memory.lazy.set(page, false);
        if let Some(packed) = memory.packed(page) {
            self.release_packed(packed);
            memory.set_entry(page, 0);
            return true;
        }
        let Some((frame, shared)) = memory.frame(page) else {
            return false;
        };
        memory.frames[page as usize] = 0;
        memory.clean.set(page, false);
        memory.shared.set(page, false);
        if shared {
            let mut merger = core::mem::take(&mut self.merger);
            merger.unmap(frame.as_u64(), &mut PoolOnly(self));
            self.merger = merger;
        } else {
            self.free_guest(frame);
        }
        true
    }

    /// Compresses private `page`: packs its contents in its entry (a pattern) or in the pool,
    /// and gives its frame back. Its EPT entry goes at the next sync.
    pub fn compress(&mut self, memory: &mut GuestMemory, page: u64) -> Compressed {
        let mut unbounded = u64::MAX;
        self.compress_within(memory, page, &mut unbounded)
    }

    /// [`Self::compress`], running LZ4 only while `lz4_left` is above 0 (and counting it down).
    fn compress_within(
        &mut self,
        memory: &mut GuestMemory,
        page: u64,
        lz4_left: &mut u64,
    ) -> Compressed {
        let Some((frame, false)) = memory.frame(page) else {
            return Compressed::NotPrivate;
        };
        let contents = self.frames.bytes(frame);
        let packed = match compress::pattern(contents) {
            Some(packed) => packed,
            None => {
                if *lz4_left == 0 {
                    return Compressed::Later;
                }
                *lz4_left -= 1;
                let mut blob = [0u8; compress::LARGEST_BLOB];
                let Some(len) = compress::compress(contents, &mut blob) else {
                    self.compression.incompressible += 1;
                    return Compressed::Incompressible;
                };
                let Some(packed) = self.store_blob(&blob[..len]) else {
                    self.compression.pool_full += 1;
                    return Compressed::PoolFull;
                };
                packed
            }
        };
        memory.set_entry(page, packed.encode());
        self.free_guest(frame);
        self.compression.compressed += 1;
        Compressed::Packed
    }

    /// Puts a blob in a slot of its class, adding a pool frame if the pool may grow.
    fn store_blob(&mut self, blob: &[u8]) -> Option<Packed> {
        let class = compress::class_for(blob.len())?;
        let (frame, slot) = match self.compressor.take_slot(class, blob.len()) {
            Some(taken) => taken,
            None => {
                if !self.compressor.has_room() {
                    return None;
                }
                let frame = self.allocate_guest()?;
                let Ok(number) = u32::try_from(frame_number(frame)) else {
                    self.free_guest(frame);
                    return None;
                };
                self.compressor.add_frame(class, number);
                self.compressor.take_slot(class, blob.len())?
            }
        };
        let packed = Packed::Blob {
            frame,
            class,
            slot,
            len: blob.len() as u16,
        };
        let (number, range) = packed.blob_range()?;
        let pool_frame = frame_at(u64::from(number))?;
        self.frames.bytes_mut(pool_frame)[range].copy_from_slice(blob);
        Some(packed)
    }

    /// Frees a compressed page's blob slot (a pattern holds none); an emptied pool frame goes
    /// back to the host.
    fn release_packed(&mut self, packed: Packed) {
        if let Some(frame) = self.compressor.release(packed) {
            if let Some(frame) = frame_at(u64::from(frame)) {
                self.free_guest(frame);
            }
        }
    }

    /// Brings compressed `page` back into a fresh private frame (the guest touched it, or the
    /// hypervisor writes it) and returns the frame; None if it is not compressed or no frame
    /// is left (it stays compressed).
    pub fn decompress(&mut self, memory: &mut GuestMemory, page: u64) -> Option<HostPhysAddr> {
        let packed = memory.packed(page)?;
        let frame = self.allocate_guest()?;
        let mut contents = [0u8; PAGE_SIZE as usize];
        if !memory.unpack(&self.frames, page, &mut contents) {
            self.free_guest(frame);
            return None;
        }
        *self.frames.bytes_mut(frame) = contents;
        self.release_packed(packed);
        memory.set_entry(page, frame_number(frame));
        self.compression.decompressed += 1;
        Some(frame)
    }

    /// One compression pass over a VM, after a working-set sample: compresses up to `budget`
    /// of the private pages that have just gone [`Ages`]' number of samples untouched. A page
    /// left as it was is tried again only once it has been touched and turned cold again, and
    /// one LZ4 refused only once it has been written. At most [`LZ4_PER_PASS`] pages go
    /// through LZ4 (a pattern costs a read of the page, LZ4 tens of thousands of cycles: a guest
    /// that keeps writing random bytes to pages it then leaves must not stall the others
    /// between two slices); the rest wait for the next pass. Returns the pages compressed.
    pub fn compress_cold(&mut self, memory: &mut GuestMemory, ages: &mut Ages, budget: u64) -> u64 {
        let mut compressed = 0;
        let mut lz4_left = LZ4_PER_PASS;
        for page in ages.take_cold(budget).into_iter().map(u64::from) {
            if ages.is_refused(page) {
                continue;
            }
            match self.compress_within(memory, page, &mut lz4_left) {
                Compressed::Packed => compressed += 1,
                Compressed::NotPrivate | Compressed::PoolFull => {}
                Compressed::Incompressible => ages.refuse(page),
                Compressed::Later => ages.defer(page),
            }
        }
        compressed
    }

    /// Root cycles a decompression on a guest's touch took.
    pub fn count_decompress_cycles(&mut self, cycles: u64) {
        self.compression.decompress_cycles += cycles;
    }

    /// The compression figures so far, and the pool now.
    pub fn compress_totals(&self) -> CompressTotals {
        CompressTotals {
            pool_frames: self.compressor.frames(),
            pool_bytes: self.compressor.bytes(),
            blob_pages: self.compressor.blobs(),
            ..self.compression
        }
    }

    /// Gives back the frames of pages that hold only zeros: they read as zeros and get a frame
    /// at their first touch. Returns the pages made lazy (their EPT entries must go).
    pub fn make_lazy(&mut self, memory: &mut GuestMemory) -> Vec<u64> {
        let mut lazy = Vec::new();
        for page in 0..memory.size_pages() {
            let zero = memory.frame(page).is_some_and(|(frame, shared)| {
                // Eight bytes at a time: this reads every byte of every VM's RAM at its start.
                !shared && self.frames.table(frame).iter().all(|&word| word == 0)
            });
            if zero {
                self.unback(memory, page);
                memory.lazy.set(page, true);
                lazy.push(page);
            }
        }
        lazy
    }

    /// Returns every frame of a VM's RAM.
    pub fn release(&mut self, mut memory: GuestMemory) {
        for page in 0..memory.size_pages() {
            self.unback(&mut memory, page);
        }
    }

    /// Gives shared `page` a private, writable copy (a write reached it).
    pub fn copy_on_write(
        &mut self,
        memory: &mut GuestMemory,
        page: u64,
    ) -> Result<HostPhysAddr, CowError> {
        let mut merger = core::mem::take(&mut self.merger);
        let copied = merger.copy_on_write((0, page), &mut OneVm { pool: self, memory });
        self.merger = merger;
        copied.map(HostPhysAddr)
    }

    /// Same-page merging: scans from `cursor` on, round the VMs (a candidate of one VM may
    /// merge with a page of another), until it has looked at `budget` pages; returns the pages
    /// looked at. It finds the pages to look at a word of page bits at a time, passing those
    /// it need not read (not backed, compressed, shared, or, where working-set samples report
    /// writes, touched in the last sample's period or unwritten since merging read them):
    /// it goes over at most `budget` words (64 pages each) of them per call.
    pub fn merge_scan(
        &mut self,
        memories: &mut [Option<&mut GuestMemory>],
        cursor: &mut ScanCursor,
        budget: u64,
    ) -> u64 {
        let mut merger = core::mem::take(&mut self.merger);
        let mut scanned = 0;
        let mut words_left = budget;
        let count = memories.len().max(1);
        while scanned < budget && words_left > 0 {
            let next = memories
                .get(cursor.vm)
                .and_then(Option::as_ref)
                .map_or(Err(u64::MAX), |memory| {
                    memory.next_to_merge(cursor.page, &mut words_left)
                });
            match next {
                Ok(page) => {
                    merger.scan(
                        (cursor.vm as u16, page),
                        &mut AllVms {
                            pool: self,
                            memories,
                        },
                    );
                    cursor.page = page + 1;
                    scanned += 1;
                }
                Err(resume) if resume != u64::MAX => cursor.page = resume,
                // The end of this VM's RAM (or no VM here): on to the next.
                Err(_) => {
                    words_left = words_left.saturating_sub(1);
                    cursor.vm = (cursor.vm + 1) % count;
                    cursor.page = 0;
                    if cursor.vm == 0 {
                        merger.new_pass(&AllVms {
                            pool: self,
                            memories,
                        });
                    }
                }
            }
        }
        self.merger = merger;
        scanned
    }

    /// The merging figures so far.
    pub fn merge_totals(&self) -> MergeTotals {
        MergeTotals {
            merges: self.merger.merges,
            cow_breaks: self.merger.cow_breaks,
            shared_frames: self.merger.shared_frames(),
            frames_saved: self.merger.frames_saved(),
        }
    }

    /// A copy of `frame` in a new guest frame (within the budget).
    fn copy_frame(&mut self, frame: u64) -> Option<u64> {
        let copy = self.allocate_guest()?;
        let contents = *self.frames.bytes(HostPhysAddr(frame));
        *self.frames.bytes_mut(copy) = contents;
        Some(copy.as_u64())
    }
}

/// Merging over the pool alone (a shared frame loses a mapping).
struct PoolOnly<'a, F>(&'a mut HostMemory<F>);

impl<F: Frames> merging::Host for PoolOnly<'_, F> {
    fn frame_of(&self, _: PageRef) -> Option<(u64, bool)> {
        None
    }
    fn contents(&self, frame: u64) -> &[u8; 4096] {
        self.0.frames.bytes(HostPhysAddr(frame))
    }
    fn map(&mut self, _: PageRef, _: u64, _: bool) {}
    fn copy(&mut self, frame: u64) -> Option<u64> {
        self.0.copy_frame(frame)
    }
    fn free(&mut self, frame: u64) {
        self.0.free_guest(HostPhysAddr(frame));
    }
    fn tracking(&self, _: PageRef) -> merging::Tracking {
        merging::Tracking::Hashes
    }
    fn swap_key(&mut self, _: PageRef, _: u32) -> u32 {
        0
    }
}

/// Merging over one VM's memory (its copies on write).
struct OneVm<'a, F> {
    pool: &'a mut HostMemory<F>,
    memory: &'a mut GuestMemory,
}

impl<F: Frames> merging::Host for OneVm<'_, F> {
    fn frame_of(&self, (_, page): PageRef) -> Option<(u64, bool)> {
        self.memory
            .frame(page)
            .map(|(frame, shared)| (frame.as_u64(), shared))
    }
    fn contents(&self, frame: u64) -> &[u8; 4096] {
        self.pool.frames.bytes(HostPhysAddr(frame))
    }
    fn map(&mut self, (_, page): PageRef, frame: u64, shared: bool) {
        self.memory.set_frame(page, HostPhysAddr(frame), shared);
    }
    fn copy(&mut self, frame: u64) -> Option<u64> {
        self.pool.copy_frame(frame)
    }
    fn free(&mut self, frame: u64) {
        self.pool.free_guest(HostPhysAddr(frame));
    }
    fn tracking(&self, (_, page): PageRef) -> merging::Tracking {
        self.memory.tracking(page)
    }
    fn swap_key(&mut self, (_, page): PageRef, key: u32) -> u32 {
        self.memory.swap_key(page, key)
    }
}

/// Merging over every VM's memory (a scan).
struct AllVms<'a, 'm, F> {
    pool: &'a mut HostMemory<F>,
    memories: &'a mut [Option<&'m mut GuestMemory>],
}

impl<F: Frames> merging::Host for AllVms<'_, '_, F> {
    fn frame_of(&self, (vm, page): PageRef) -> Option<(u64, bool)> {
        let memory = self.memories.get(usize::from(vm))?.as_ref()?;
        memory
            .frame(page)
            .map(|(frame, shared)| (frame.as_u64(), shared))
    }
    fn contents(&self, frame: u64) -> &[u8; 4096] {
        self.pool.frames.bytes(HostPhysAddr(frame))
    }
    fn map(&mut self, (vm, page): PageRef, frame: u64, shared: bool) {
        if let Some(memory) = self
            .memories
            .get_mut(usize::from(vm))
            .and_then(Option::as_mut)
        {
            memory.set_frame(page, HostPhysAddr(frame), shared);
        }
    }
    fn copy(&mut self, frame: u64) -> Option<u64> {
        self.pool.copy_frame(frame)
    }
    fn free(&mut self, frame: u64) {
        self.pool.free_guest(HostPhysAddr(frame));
    }
    fn tracking(&self, (vm, page): PageRef) -> merging::Tracking {
        self.memories
            .get(usize::from(vm))
            .and_then(Option::as_ref)
            .map_or(merging::Tracking::Hashes, |memory| memory.tracking(page))
    }
    fn swap_key(&mut self, (vm, page): PageRef, key: u32) -> u32 {
        self.memories
            .get_mut(usize::from(vm))
            .and_then(Option::as_mut)
            .map_or(0, |memory| memory.swap_key(page, key))
    }
}

/// Guest RAM through the host's frames, for the page-table walker and the loaders.
#[derive(Debug)]
pub struct RamView<'a, F> {
    pub memory: &'a GuestMemory,
    pub frames: &'a F,
}

impl<F: Frames> crate::paging::GuestPhysRead for RamView<'_, F> {
    fn read_physical(&self, gpa: u64, out: &mut [u8]) -> bool {
        self.memory.read(self.frames, gpa, out)
    }
}

/// Guest RAM, writable, for the loaders.
#[derive(Debug)]
pub struct RamWriter<'a, F> {
    pub memory: &'a mut GuestMemory,
    pub pool: &'a mut HostMemory<F>,
}

impl<F: Frames> crate::GuestRam for RamWriter<'_, F> {
    fn size(&self) -> u64 {
        self.memory.size()
    }
    fn write(&mut self, gpa: u64, bytes: &[u8]) {
        self.pool.write(self.memory, gpa, bytes);
    }
    fn fill(&mut self, gpa: u64, len: u64, value: u8) {
        self.pool.fill(self.memory, gpa, len, value);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::FakeFrames;

    fn pool(frames: u64) -> HostMemory<FakeFrames> {
        HostMemory::new(FakeFrames::new(frames), None)
    }

    #[test]
    fn a_page_costs_eight_bytes_of_table() {
        // The per-page table is a 64-bit entry (a frame number and its merging key, or a
        // compressed page) and five bits of state, merging on or off (the issue allows at most
        // 8 bytes a page).
        let pages = 4096;
        let mut pool = pool(pages + 16);
        let mut memory = pool.guest_memory(pages * PAGE_SIZE).unwrap();
        let bound = pages as usize * 8 + pages as usize * 5 / 8;
        assert_eq!(memory.table_bytes(), bound);
        let mut cursor = ScanCursor::default();
        for _ in 0..3 {
            pool.merge_scan(&mut [Some(&mut memory)], &mut cursor, pages);
        }
        assert_eq!(
            pool.merge_totals().merges,
            pages - 1,
            "all zeros: one frame"
        );
        memory.begin_sample();
        pool.merge_scan(&mut [Some(&mut memory)], &mut cursor, pages);
        assert_eq!(memory.table_bytes(), bound);
    }

    #[test]
    fn a_merge_scan_spends_its_budget_on_backed_pages() {
        // Ten identical pages 50 apart among 4,096 lazy ones: a budget of ten reads all ten.
        let mut pool = pool(64);
        let mut memory = pool.lazy_guest_memory(4096 * PAGE_SIZE);
        for page in 0..10 {
            assert!(pool.fill(&mut memory, page * 50 * PAGE_SIZE, PAGE_SIZE, 1));
        }
        let mut cursor = ScanCursor::default();
        assert_eq!(
            pool.merge_scan(&mut [Some(&mut memory)], &mut cursor, 10),
            10
        );
        // Back round the lazy pages (a budget of 100 may pass 6,400 unread) to merge them.
        assert_eq!(
            pool.merge_scan(&mut [Some(&mut memory)], &mut cursor, 100),
            10
        );
        assert_eq!(pool.merge_totals().merges, 9);
        assert_eq!(pool.guest_pages_backed(), 1);
    }

    #[test]
    fn with_samples_merging_reads_a_page_once_until_it_is_written() {
        let pages = 64;
        let mut pool = pool(pages + 16);
        let mut memory = pool.guest_memory(pages * PAGE_SIZE).unwrap();
        for page in 0..pages {
            pool.write(
                &mut memory,
                page * PAGE_SIZE,
                &page_of(1, page as u32, false),
            );
        }
        // A sample that saw nothing touched: every page is cold, read once, a candidate.
        memory.begin_sample();
        let mut cursor = ScanCursor::default();
        fn scan(
            pool: &mut HostMemory<FakeFrames>,
            memory: &mut GuestMemory,
            cursor: &mut ScanCursor,
        ) -> u64 {
            pool.merge_scan(&mut [Some(memory)], cursor, 64)
        }
        assert_eq!(scan(&mut pool, &mut memory, &mut cursor), pages);
        // Unwritten since: later passes read none of them.
        for _ in 0..3 {
            memory.begin_sample();
            assert_eq!(scan(&mut pool, &mut memory, &mut cursor), 0);
        }
        // The guest writes page 5 as page 4 (a sample reports it), the hypervisor page 7.
        pool.write(&mut memory, 5 * PAGE_SIZE, &page_of(1, 4, false));
        memory.begin_sample();
        memory.sampled(5, true);
        pool.write(&mut memory, 7 * PAGE_SIZE, &page_of(1, 4, false));
        assert_eq!(
            scan(&mut pool, &mut memory, &mut cursor),
            1,
            "page 5 is hot"
        );
        assert_eq!(pool.merge_totals().merges, 1);
        memory.begin_sample();
        assert_eq!(scan(&mut pool, &mut memory, &mut cursor), 1);
        assert_eq!(pool.merge_totals().merges, 2);
        let mut out = [0u8; PAGE_SIZE as usize];
        for page in [4, 5, 7] {
            assert!(memory.read(&pool.frames, page * PAGE_SIZE, &mut out));
            assert_eq!(out, page_of(1, 4, false));
        }
    }

    /// A page of `byte` with a distinct first word, as xv6's kfree leaves it, or (with
    /// `noise`) one LZ4 must take.
    fn page_of(byte: u8, first: u32, noise: bool) -> [u8; PAGE_SIZE as usize] {
        let mut page = [byte; PAGE_SIZE as usize];
        page[..4].copy_from_slice(&first.to_le_bytes());
        if noise {
            for at in (64..PAGE_SIZE as usize).step_by(97) {
                page[at] = at as u8;
            }
        }
        page
    }

    #[test]
    fn a_compressed_page_gives_its_frame_back_and_reads_and_writes_as_before() {
        let mut pool = pool(32);
        pool.set_pool_limit(4);
        let mut memory = pool.guest_memory(4 * PAGE_SIZE).unwrap();
        let pages = [
            page_of(1, 0x8000_1000, false),
            page_of(1, 0x8000_2000, true),
            page_of(7, 7, false),
        ];
        for (page, contents) in pages.iter().enumerate() {
            assert!(pool.write(&mut memory, page as u64 * PAGE_SIZE, contents));
        }
        memory.pending.clear();
        assert_eq!(pool.compress(&mut memory, 0), Compressed::Packed);
        assert_eq!(pool.compress(&mut memory, 1), Compressed::Packed);
        assert_eq!(pool.compress(&mut memory, 2), Compressed::Packed);
        assert_eq!(pool.compress(&mut memory, 2), Compressed::NotPrivate);
        assert_eq!(memory.pending, [0, 1, 2], "their EPT entries go");
        assert_eq!(memory.compressed_pages(), 3);
        assert_eq!(memory.backed_pages(), 1);
        assert!(memory.frame(0).is_none() && memory.readable(0));
        // Patterns need no pool; the noisy page took one slot of one pool frame.
        let totals = pool.compress_totals();
        assert_eq!((totals.compressed, totals.pool_frames), (3, 1));
        assert!(totals.pool_bytes > 0 && totals.pool_bytes <= 512);
        assert_eq!(pool.guest_pages_backed(), 2);
        assert_eq!(pool.frames.in_use(), 2);
        for (page, contents) in pages.iter().enumerate() {
            let mut out = [0u8; PAGE_SIZE as usize];
            assert!(memory.read(&pool.frames, page as u64 * PAGE_SIZE, &mut out));
            assert_eq!(&out, contents);
        }
        // A read across the boundary of two compressed pages.
        let mut out = [0u8; 8];
        assert!(memory.read(&pool.frames, PAGE_SIZE - 4, &mut out));
        assert_eq!(out, [1, 1, 1, 1, 0x00, 0x20, 0x00, 0x80]);
        // A write decompresses first; the rest of the page is kept.
        assert!(pool.write(&mut memory, PAGE_SIZE + 8, b"hi"));
        assert!(!memory.is_compressed(1));
        let mut out = [0u8; PAGE_SIZE as usize];
        assert!(memory.read(&pool.frames, PAGE_SIZE, &mut out));
        let mut expected = pages[1];
        expected[8..10].copy_from_slice(b"hi");
        assert_eq!(out, expected);
        assert_eq!(
            pool.compress_totals().pool_frames,
            0,
            "its pool frame went back"
        );
        // Ballooning a compressed page frees it.
        assert!(pool.unback(&mut memory, 0));
        assert!(!memory.readable(0) && memory.compressed_pages() == 1);
    }

    #[test]
    fn a_full_pool_and_random_pages_are_left_as_they_are() {
        let mut pool = pool(32);
        let mut memory = pool.guest_memory(2 * PAGE_SIZE).unwrap();
        pool.write(&mut memory, 0, &page_of(3, 1, true));
        let mut state = 77u32;
        let random: [u8; PAGE_SIZE as usize] = core::array::from_fn(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        });
        pool.write(&mut memory, PAGE_SIZE, &random);
        assert_eq!(pool.compress(&mut memory, 0), Compressed::PoolFull);
        assert_eq!(pool.compress(&mut memory, 1), Compressed::Incompressible);
        assert_eq!(memory.compressed_pages(), 0);
        assert_eq!(pool.guest_pages_backed(), 2);
        let totals = pool.compress_totals();
        assert_eq!((totals.pool_full, totals.incompressible), (1, 1));
    }

    #[test]
    fn a_compression_pass_takes_the_pages_no_sample_saw_for_long_enough() {
        let mut pool = pool(32);
        let mut memory = pool.guest_memory(8 * PAGE_SIZE).unwrap();
        for page in 0..8 {
            pool.write(
                &mut memory,
                page * PAGE_SIZE,
                &page_of(1, page as u32, false),
            );
        }
        let mut ages = Ages::new(8, 2);
        ages.seen(3);
        ages.seen(5);
        ages.tick();
        // The start's sweep offers every page, a bounded number a pass: a page backed before
        // the first sample need not be touched to be compressed.
        let mut sweep = Ages::new(8, 2);
        sweep.tick();
        let mut other = pool.guest_memory(8 * PAGE_SIZE).unwrap();
        for page in 0..8 {
            pool.write(
                &mut other,
                page * PAGE_SIZE,
                &page_of(2, page as u32, false),
            );
        }
        assert_eq!(pool.compress_cold(&mut other, &mut sweep, 5), 5);
        assert_eq!(pool.compress_cold(&mut other, &mut sweep, 5), 3);
        assert_eq!(other.compressed_pages(), 8);
        // A touched page goes cold two samples after its last touch.
        ages.take_cold(100); // the start's sweep
        pool.decompress(&mut memory, 3);
        pool.decompress(&mut memory, 5);
        ages.seen(3);
        ages.seen(5);
        ages.tick();
        assert_eq!(pool.compress_cold(&mut memory, &mut ages, 100), 0);
        ages.seen(5);
        ages.tick();
        assert_eq!(pool.compress_cold(&mut memory, &mut ages, 100), 0);
        ages.tick();
        assert_eq!(pool.compress_cold(&mut memory, &mut ages, 100), 1);
        assert!(memory.is_compressed(3) && !memory.is_compressed(5));
        ages.tick();
        assert_eq!(pool.compress_cold(&mut memory, &mut ages, 100), 1);
        assert!(memory.is_compressed(5));
    }

    #[test]
    fn writes_and_reads_cross_pages() {
        let mut pool = pool(16);
        let mut memory = pool.guest_memory(4 * PAGE_SIZE).unwrap();
        assert!(pool.write(&mut memory, PAGE_SIZE - 2, b"abcd"));
        let mut out = [0u8; 4];
        assert!(memory.read(&pool.frames, PAGE_SIZE - 2, &mut out));
        assert_eq!(&out, b"abcd");
        assert!(!pool.write(&mut memory, 4 * PAGE_SIZE - 1, b"xy"));
        assert!(!memory.read(&pool.frames, u64::MAX - 1, &mut out));
    }

    #[test]
    fn a_ballooned_page_neither_reads_nor_takes_writes() {
        let mut pool = pool(16);
        let mut memory = pool.guest_memory(4 * PAGE_SIZE).unwrap();
        assert_eq!(pool.guest_pages_backed(), 4);
        assert!(pool.unback(&mut memory, 2));
        assert_eq!(pool.guest_pages_backed(), 3);
        let mut out = [0u8; 8];
        assert!(!memory.read(&pool.frames, 2 * PAGE_SIZE + 8, &mut out));
        assert!(!pool.write(&mut memory, 2 * PAGE_SIZE, b"x"));
        assert!(!memory.readable(2) && memory.readable(1));
    }

    #[test]
    fn lazy_pages_read_zeros_and_get_a_frame_when_written() {
        let mut pool = pool(16);
        let mut memory = pool.guest_memory(4 * PAGE_SIZE).unwrap();
        pool.write(&mut memory, 0, b"kernel");
        let lazy = pool.make_lazy(&mut memory);
        assert_eq!(lazy, [1, 2, 3]);
        assert_eq!(memory.backed_pages(), 1);
        let mut out = [0xFFu8; 4];
        assert!(memory.read(&pool.frames, 3 * PAGE_SIZE, &mut out));
        assert_eq!(out, [0; 4]);
        memory.pending.clear();
        assert!(pool.write(&mut memory, 3 * PAGE_SIZE, b"hi"));
        assert!(!memory.is_lazy(3));
        assert_eq!(memory.pending, [3]);
        assert_eq!(memory.backed_pages(), 2);
    }

    #[test]
    fn lazy_ram_starts_without_frames_and_backs_what_is_written() {
        let mut pool = pool(16);
        // Bits past the last page stay clear (70 pages: 64 + 6).
        assert_eq!(pool.lazy_guest_memory(70 * PAGE_SIZE).lazy.count(), 70);
        let mut memory = pool.lazy_guest_memory(4 * PAGE_SIZE);
        assert_eq!((memory.backed_pages(), pool.frames.in_use()), (0, 0));
        assert!((0..4).all(|page| memory.is_lazy(page) && memory.readable(page)));
        assert!(pool.write(&mut memory, PAGE_SIZE + 10, b"image"));
        assert_eq!(memory.backed_pages(), 1);
        assert_eq!(pool.guest_pages_backed(), 1);
        let mut out = [0u8; 5];
        assert!(memory.read(&pool.frames, PAGE_SIZE + 10, &mut out));
        assert_eq!(&out, b"image");
        assert!(memory.read(&pool.frames, 3 * PAGE_SIZE, &mut out));
        assert_eq!(out, [0; 5]);
        pool.release(memory);
        assert_eq!(pool.frames.in_use(), 0);
    }

    #[test]
    fn a_lazy_fault_backs_the_lazy_pages_of_its_group() {
        let mut pool = HostMemory::new(FakeFrames::new(64), Some(20));
        let mut memory = pool.lazy_guest_memory(40 * PAGE_SIZE);
        pool.write(&mut memory, 17 * PAGE_SIZE, b"image");
        let around = pool.back_around(&mut memory, 20).expect("a frame");
        // 16..32 but 20 itself and 17, backed already.
        let expected: Vec<u64> = (16..32).filter(|&p| p != 20 && p != 17).collect();
        assert_eq!(around, expected);
        assert!((16..32).all(|page| !memory.is_lazy(page)));
        assert!(memory.is_lazy(15) && memory.is_lazy(32));
        // The last group is cut at the end of RAM; the budget (20 pages) stops it early.
        let around = pool.back_around(&mut memory, 39).expect("a frame");
        assert_eq!(around, [32, 33, 34]);
        assert_eq!(pool.guest_pages_available(), 0);
        assert!(pool.back_around(&mut memory, 0).is_none());
    }

    #[test]
    fn the_budget_bounds_new_frames() {
        let mut pool = HostMemory::new(FakeFrames::new(64), Some(5));
        let mut memory = pool.guest_memory(4 * PAGE_SIZE).unwrap();
        pool.make_lazy(&mut memory);
        assert_eq!(pool.guest_pages_backed(), 0);
        for page in 0..4 {
            assert!(pool.back(&mut memory, page).is_some());
        }
        let mut other = pool.guest_memory(PAGE_SIZE).unwrap();
        pool.make_lazy(&mut other);
        assert!(pool.back(&mut other, 0).is_some());
        assert_eq!(pool.guest_pages_available(), 0);
        assert!(pool.unback(&mut memory, 0));
        assert_eq!(pool.guest_pages_available(), 1);
    }

    /// A page of pseudo-random bytes (no pattern, and LZ4 cannot shrink it).
    fn random_page(seed: u32) -> [u8; PAGE_SIZE as usize] {
        let mut state = seed.wrapping_mul(2_654_435_761) | 1;
        core::array::from_fn(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
    }

    #[test]
    fn a_pass_runs_lz4_a_bounded_number_of_times_and_not_again_on_a_refused_page() {
        let pages = LZ4_PER_PASS + 36;
        let mut pool = pool(2 * pages + 8);
        let mut memory = pool.guest_memory(pages * PAGE_SIZE).unwrap();
        for page in 0..pages {
            pool.write(&mut memory, page * PAGE_SIZE, &random_page(page as u32));
        }
        let mut ages = Ages::new(pages, 1);
        ages.tick();
        assert_eq!(pool.compress_cold(&mut memory, &mut ages, pages), 0);
        assert_eq!(pool.compress_totals().incompressible, LZ4_PER_PASS);
        // The rest waited for the next pass; the refused ones are not tried again.
        ages.tick();
        pool.compress_cold(&mut memory, &mut ages, pages);
        assert_eq!(pool.compress_totals().incompressible, pages);
        for page in 0..pages {
            ages.seen(page);
        }
        ages.tick();
        ages.tick();
        pool.compress_cold(&mut memory, &mut ages, pages);
        assert_eq!(
            pool.compress_totals().incompressible,
            pages,
            "read, not written"
        );
        // Page 0 written (a pattern now): the next time it is cold it is compressed.
        pool.write(&mut memory, 0, &[7; PAGE_SIZE as usize]);
        ages.seen(0);
        ages.written(0);
        ages.tick();
        ages.tick();
        assert_eq!(pool.compress_cold(&mut memory, &mut ages, pages), 1);
        assert!(memory.is_compressed(0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write {
            vm: usize,
            page: u64,
            byte: u8,
        },
        Scan(u64),
        Balloon {
            vm: usize,
            page: u64,
        },
        Back {
            vm: usize,
            page: u64,
        },
        Compress {
            vm: usize,
            page: u64,
        },
        Decompress {
            vm: usize,
            page: u64,
        },
        /// A working-set sample of `vm` that saw the pages of `touched` (bit per page) written.
        Sample {
            vm: usize,
            touched: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..2usize, 0..8u64, 0..6u8).prop_map(|(vm, page, byte)| Op::Write { vm, page, byte }),
            2 => (1..20u64).prop_map(Op::Scan),
            1 => (0..2usize, 0..8u64).prop_map(|(vm, page)| Op::Balloon { vm, page }),
            1 => (0..2usize, 0..8u64).prop_map(|(vm, page)| Op::Back { vm, page }),
            3 => (0..2usize, 0..8u64).prop_map(|(vm, page)| Op::Compress { vm, page }),
            1 => (0..2usize, 0..8u64).prop_map(|(vm, page)| Op::Decompress { vm, page }),
            1 => (0..2usize, any::<u8>()).prop_map(|(vm, touched)| Op::Sample { vm, touched }),
        ]
    }

    proptest! {
        /// Through any mix of writes, merging scans (with working-set samples or without),
        /// copies on write, ballooning, backing, compression and decompression, every page reads its own last write (or zeros once
        /// given back and taken back), and the frames in use are the pages backed less the
        /// frames sharing saves, plus the compressed pool's.
        #[test]
        fn every_page_reads_its_last_write(ops in proptest::collection::vec(op(), 1..120)) {
            let mut pool = pool(64);
            pool.set_pool_limit(2);
            let mut memories = [
                pool.guest_memory(8 * PAGE_SIZE).unwrap(),
                pool.guest_memory(8 * PAGE_SIZE).unwrap(),
            ];
            let mut expected = [[Some([0u8; PAGE_SIZE as usize]); 8]; 2];
            let mut cursor = ScanCursor::default();
            for op in ops {
                match op {
                    Op::Write { vm, page, byte } => {
                        // Bytes 0..3 fill the page (merging and patterns); 3..6 leave a trace of
                        // the page and VM in it, so LZ4 must take it and no other page matches.
                        let mut contents = [byte % 3; PAGE_SIZE as usize];
                        if byte >= 3 {
                            for at in (0..PAGE_SIZE as usize).step_by(61) {
                                contents[at] = at as u8 ^ page as u8 ^ (vm as u8) << 4;
                            }
                        }
                        let written = pool.write(&mut memories[vm], page * PAGE_SIZE, &contents);
                        prop_assert_eq!(written, expected[vm][page as usize].is_some());
                        if written {
                            expected[vm][page as usize] = Some(contents);
                        }
                    }
                    Op::Compress { vm, page } => {
                        pool.compress(&mut memories[vm], page);
                    }
                    Op::Decompress { vm, page } => {
                        let was = memories[vm].is_compressed(page);
                        prop_assert_eq!(pool.decompress(&mut memories[vm], page).is_some(), was);
                    }
                    Op::Sample { vm, touched } => {
                        memories[vm].begin_sample();
                        for page in (0..8).filter(|page| touched & (1 << page) != 0) {
                            memories[vm].sampled(page, true);
                        }
                    }
                    Op::Scan(budget) => {
                        let [a, b] = &mut memories;
                        pool.merge_scan(&mut [Some(a), Some(b)], &mut cursor, budget);
                    }
                    Op::Balloon { vm, page } => {
                        pool.unback(&mut memories[vm], page);
                        expected[vm][page as usize] = None;
                    }
                    Op::Back { vm, page } => {
                        if pool.back(&mut memories[vm], page).is_some() {
                            expected[vm][page as usize] = Some([0; PAGE_SIZE as usize]);
                        }
                    }
                }
                for (vm, memory) in memories.iter().enumerate() {
                    for page in 0..8u64 {
                        let mut out = [0u8; PAGE_SIZE as usize];
                        let read = memory.read(&pool.frames, page * PAGE_SIZE, &mut out);
                        match &expected[vm][page as usize] {
                            Some(contents) => {
                                prop_assert!(read);
                                prop_assert_eq!(&out, contents);
                            }
                            None => prop_assert!(!read),
                        }
                    }
                }
                let backed: u64 = memories.iter().map(GuestMemory::backed_pages).sum();
                let totals = pool.merge_totals();
                let pool_frames = pool.compress_totals().pool_frames;
                prop_assert!(pool_frames <= 2);
                prop_assert_eq!(
                    pool.guest_pages_backed(),
                    backed - totals.frames_saved + pool_frames
                );
                prop_assert_eq!(pool.frames.in_use(), pool.guest_pages_backed());
                prop_assert!(pool.guest_pages_peak() >= pool.guest_pages_backed());
            }
        }
    }
}
