//! Physical memory: the frame allocator (built from the multiboot2 memory map), the heap, and
//! guest RAM backed by frames.
//!
//! The boot code identity-maps the first 4 GiB, so a host-physical address below 4 GiB is also
//! the hypervisor's virtual address for it; frames above 4 GiB are not used.

use alloc::vec::Vec;

use carousel_kernel::balloon::Budget;
use carousel_kernel::frames::FrameBitmap;
use carousel_kernel::{range_in_ram, GuestRam, PAGE_SIZE};
use carousel_vmx::addr::{GuestPhysAddr, HostPhysAddr};
use linked_list_allocator::LockedHeap;
use multiboot2::{BootInformation, MemoryAreaType};
use spin::Mutex;

/// Frames the bitmap covers: the identity-mapped 4 GiB.
const MAX_FRAMES: usize = (4u64 << 30) as usize / PAGE_SIZE as usize;
/// The heap: hypervisor data structures (VM tables, buffers), not guest memory.
const HEAP_BYTES: u64 = 48 << 20;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

static mut FRAME_WORDS: [u64; MAX_FRAMES / 64] = [0; MAX_FRAMES / 64];
static FRAMES: Mutex<Option<FrameBitmap<'static>>> = Mutex::new(None);

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// Where memory stands after [`init`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    pub available_bytes: u64,
    pub free_after_heap_bytes: u64,
}

/// Builds the frame allocator and the heap. Called once, before any allocation.
pub fn init(boot_info: &BootInformation<'_>) -> Result<MemoryReport, &'static str> {
    // SAFETY: called once at boot, before anything else can reach FRAME_WORDS.
    let words = unsafe { &mut *core::ptr::addr_of_mut!(FRAME_WORDS) };
    let mut bitmap = FrameBitmap::new_all_used(words);
    let areas = boot_info
        .memory_map_tag()
        .ok_or("GRUB gave no memory map")?;
    for area in areas.memory_areas() {
        if area.typ() == MemoryAreaType::Available {
            let first = area.start_address().div_ceil(PAGE_SIZE);
            let end = area.end_address() / PAGE_SIZE;
            bitmap.release_range(first, end.saturating_sub(first));
        }
    }
    let available_bytes = bitmap.free_frames() * PAGE_SIZE;
    let mut reserve = |start: u64, end: u64| {
        let first = start / PAGE_SIZE;
        bitmap.reserve_range(first, end.div_ceil(PAGE_SIZE) - first);
    };
    // Real-mode area and BIOS data: never handed out.
    reserve(0, 0x10_0000);
    // The linker script defines both symbols; only their addresses are taken.
    let (image_start, image_end) = (
        &raw const __image_start as u64,
        &raw const __image_end as u64,
    );
    reserve(image_start, image_end);
    reserve(
        boot_info.start_address() as u64,
        boot_info.end_address() as u64,
    );
    for module in boot_info.module_tags() {
        reserve(
            u64::from(module.start_address()),
            u64::from(module.end_address()),
        );
    }
    let heap_frames = HEAP_BYTES / PAGE_SIZE;
    let heap_start = bitmap
        .allocate_contiguous(heap_frames)
        .ok_or("no room for the heap")?;
    let free_after_heap_bytes = bitmap.free_frames() * PAGE_SIZE;
    *FRAMES.lock() = Some(bitmap);
    // SAFETY: the frames were just taken from the allocator for the heap alone; they are
    // identity-mapped and nothing else refers to them.
    unsafe {
        HEAP.lock()
            .init((heap_start * PAGE_SIZE) as *mut u8, HEAP_BYTES as usize)
    };
    Ok(MemoryReport {
        available_bytes,
        free_after_heap_bytes,
    })
}

/// Takes one zeroed frame.
pub fn allocate_frame() -> Option<HostPhysAddr> {
    let frame = FRAMES.lock().as_mut()?.allocate()?;
    let address = HostPhysAddr(frame * PAGE_SIZE);
    frame_bytes(address).fill(0);
    Some(address)
}

/// Returns a frame taken with [`allocate_frame`].
pub fn free_frame(address: HostPhysAddr) {
    if let Some(bitmap) = FRAMES.lock().as_mut() {
        bitmap.free(address.0 / PAGE_SIZE);
    }
}

/// Free memory now, in bytes.
pub fn free_bytes() -> u64 {
    FRAMES
        .lock()
        .as_ref()
        .map_or(0, |bitmap| bitmap.free_frames() * PAGE_SIZE)
}

/// The bytes of a frame the allocator handed out.
pub fn frame_bytes(address: HostPhysAddr) -> &'static mut [u8; PAGE_SIZE as usize] {
    debug_assert!(address.0.is_multiple_of(PAGE_SIZE) && address.0 < (4 << 30));
    // SAFETY: the address is a 4 KiB-aligned frame below 4 GiB (identity-mapped), owned by the
    // caller through the allocator; the hypervisor runs on one CPU without preemption, so no
    // two live references to the same frame are used at once.
    unsafe { &mut *(address.0 as *mut [u8; PAGE_SIZE as usize]) }
}

/// The same frame seen as 512 page-table entries.
pub fn frame_table(address: HostPhysAddr) -> &'static mut [u64; 512] {
    debug_assert!(address.0.is_multiple_of(PAGE_SIZE) && address.0 < (4 << 30));
    // SAFETY: as for frame_bytes; u64 has the frame's alignment.
    unsafe { &mut *(address.0 as *mut [u64; 512]) }
}

/// Why guest RAM could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory {
    pub wanted_bytes: u64,
    pub free_bytes: u64,
}

/// A VM's RAM: guest-physical [0, size), one host frame per page, except for the pages the
/// guest gave back through its balloon (no frame: reads of them fail, writes are dropped).
#[derive(Debug)]
pub struct GuestMemory {
    frames: Vec<Option<HostPhysAddr>>,
    /// One bit per page: its frame is shared with identical pages (same-page merging) and
    /// mapped read-only.
    shared: Vec<u64>,
    /// Pages whose frame or sharing changed since the EPT last saw them (the VM rewrites
    /// their mappings before it runs again: [`crate::vm::Vm::sync_ept`]).
    pub pending: Vec<u64>,
    /// Each page's contents hash at its last merging scan (empty until merging first looks).
    hashes: Vec<u32>,
    /// One bit per page: not backed yet, and reads as zeros (lazily backed RAM: the frame
    /// comes at the first touch).
    lazy: Vec<u64>,
}

/// Guest pages the hypervisor backs over all VMs, against the run's budget.
static BUDGET: Mutex<Budget> = Mutex::new(Budget {
    limit: None,
    backed: 0,
});

/// Sets the most guest pages backed at once over all VMs (the run configuration's budget).
pub fn set_guest_page_budget(limit: Option<u64>) {
    BUDGET.lock().limit = limit;
}

/// Guest frames in use over all VMs (a shared frame counts once).
pub fn guest_pages_backed() -> u64 {
    BUDGET.lock().backed
}

/// Guest pages that could be backed now: free frames, within the budget.
pub fn guest_pages_available() -> u64 {
    BUDGET.lock().available(free_bytes() / PAGE_SIZE)
}

impl GuestMemory {
    /// Takes zeroed frames for `size` bytes (a multiple of the page size). Nothing one VM
    /// leaves in memory can reach another: every frame is zeroed before a guest sees it.
    pub fn new(size: u64) -> Result<Self, OutOfMemory> {
        let pages = size / PAGE_SIZE;
        let mut frames = Vec::with_capacity(pages as usize);
        for _ in 0..pages {
            match allocate_frame() {
                Some(frame) => frames.push(frame),
                None => {
                    let taken = frames.len() as u64 * PAGE_SIZE;
                    frames.into_iter().for_each(free_frame);
                    return Err(OutOfMemory {
                        wanted_bytes: size,
                        free_bytes: free_bytes() + taken,
                    });
                }
            }
        }
        BUDGET.lock().backed += pages;
        Ok(Self {
            frames: frames.into_iter().map(Some).collect(),
            shared: alloc::vec![0; pages.div_ceil(64) as usize],
            pending: Vec::new(),
            hashes: Vec::new(),
            lazy: alloc::vec![0; pages.div_ceil(64) as usize],
        })
    }

    /// The frame backing `page` and whether it is shared.
    pub fn frame(&self, page: u64) -> Option<(HostPhysAddr, bool)> {
        let frame = (*self.frames.get(page as usize)?)?;
        Some((frame, self.is_shared(page)))
    }

    /// Records `page`'s contents hash at this merging scan; returns the previous one.
    pub fn swap_hash(&mut self, page: u64, hash: u32) -> u32 {
        if self.hashes.is_empty() {
            self.hashes.resize(self.frames.len(), 0);
        }
        self.hashes
            .get_mut(page as usize)
            .map_or(0, |slot| core::mem::replace(slot, hash))
    }

    /// Pages backed by a frame (shared ones included).
    pub fn backed_pages(&self) -> u64 {
        self.frames.iter().filter(|frame| frame.is_some()).count() as u64
    }

    /// Pages of RAM (backed or not).
    pub fn size_pages(&self) -> u64 {
        self.frames.len() as u64
    }

    /// True when `page` shares its frame (read-only) with identical pages.
    pub fn is_shared(&self, page: u64) -> bool {
        self.shared
            .get((page / 64) as usize)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    /// Pages sharing a frame now.
    pub fn shared_pages(&self) -> u64 {
        self.shared
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    /// Points `page` at `frame`, shared or private; the EPT follows at the next sync.
    pub fn set_frame(&mut self, page: u64, frame: HostPhysAddr, shared: bool) {
        let Some(slot) = self.frames.get_mut(page as usize) else {
            return;
        };
        *slot = Some(frame);
        let word = &mut self.shared[(page / 64) as usize];
        if shared {
            *word |= 1 << (page % 64);
        } else {
            *word &= !(1 << (page % 64));
        }
        self.pending.push(page);
    }

    /// Takes guest page `page`'s frame away (the page is being ballooned) and returns it to
    /// the host; None if it had none.
    pub fn unback(&mut self, page: u64) -> Option<HostPhysAddr> {
        let shared = self.is_shared(page);
        let frame = self.frames.get_mut(page as usize)?.take()?;
        if shared {
            self.shared[(page / 64) as usize] &= !(1 << (page % 64));
            crate::merge::unmap_shared(frame);
        } else {
            free_frame(frame);
            BUDGET.lock().backed -= 1;
        }
        Some(frame)
    }

    /// Gives guest page `page` a fresh zeroed frame (the page is being deflated, or touched
    /// for the first time) and returns it; None if the page is backed already, out of range,
    /// or the host has no frame.
    pub fn back(&mut self, page: u64) -> Option<HostPhysAddr> {
        let slot = self.frames.get_mut(page as usize)?;
        if slot.is_some() {
            return None;
        }
        let frame = allocate_frame()?;
        *slot = Some(frame);
        self.lazy[(page / 64) as usize] &= !(1 << (page % 64));
        BUDGET.lock().backed += 1;
        Some(frame)
    }

    /// Gives back the frames of pages that hold only zeros: they read as zeros and get a frame
    /// at their first touch ([`Self::is_lazy`]). Returns the pages given back.
    pub fn make_lazy(&mut self) -> Vec<u64> {
        let mut lazy = Vec::new();
        for page in 0..self.frames.len() as u64 {
            let zero = self.frames[page as usize]
                .is_some_and(|frame| frame_bytes(frame).iter().all(|&byte| byte == 0));
            if zero && !self.is_shared(page) {
                self.unback(page);
                self.lazy[(page / 64) as usize] |= 1 << (page % 64);
                lazy.push(page);
            }
        }
        lazy
    }

    /// True when `page` has no frame yet and reads as zeros.
    pub fn is_lazy(&self, page: u64) -> bool {
        self.lazy
            .get((page / 64) as usize)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    /// Takes lazy page `page` out of the lazy set without backing it (it is being ballooned).
    pub fn forget_lazy(&mut self, page: u64) {
        if let Some(word) = self.lazy.get_mut((page / 64) as usize) {
            *word &= !(1 << (page % 64));
        }
    }

    /// Host frames backing the pages, in guest-physical order.
    pub fn frames(&self) -> impl Iterator<Item = (GuestPhysAddr, HostPhysAddr)> + '_ {
        self.frames.iter().enumerate().filter_map(|(page, &frame)| {
            frame.map(|frame| (GuestPhysAddr(page as u64 * PAGE_SIZE), frame))
        })
    }

    /// Copies guest RAM [gpa, gpa + out.len()) into `out`. False if any byte is outside RAM.
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> bool {
        if !range_in_ram(gpa, out.len() as u64, self.size()) {
            return false;
        }
        for (page, offset, done, len) in page_chunks(gpa, out.len() as u64) {
            match self.frames[page] {
                Some(frame) => {
                    out[done..done + len].copy_from_slice(&frame_bytes(frame)[offset..offset + len])
                }
                None if self.is_lazy(page as u64) => out[done..done + len].fill(0),
                None => return false,
            }
        }
        true
    }

    /// Frees the frames.
    pub fn release(mut self) {
        for page in 0..self.frames.len() as u64 {
            self.unback(page);
        }
    }
}

impl GuestRam for GuestMemory {
    fn size(&self) -> u64 {
        self.frames.len() as u64 * PAGE_SIZE
    }

    fn write(&mut self, gpa: u64, bytes: &[u8]) {
        for (page, offset, done, len) in page_chunks(gpa, bytes.len() as u64) {
            if !self.make_private(page as u64) {
                continue;
            }
            if let Some(frame) = self.frames[page] {
                frame_bytes(frame)[offset..offset + len].copy_from_slice(&bytes[done..done + len]);
            }
        }
    }

    fn fill(&mut self, gpa: u64, len: u64, value: u8) {
        for (page, offset, _, len) in page_chunks(gpa, len) {
            if !self.make_private(page as u64) {
                continue;
            }
            if let Some(frame) = self.frames[page] {
                frame_bytes(frame)[offset..offset + len].fill(value);
            }
        }
    }
}

impl GuestMemory {
    /// Gives a shared page its own copy before the hypervisor writes into it (an emulated
    /// string input, say); false when there is no frame for the copy (the write is dropped
    /// rather than seen by the other pages sharing the frame).
    fn make_private(&mut self, page: u64) -> bool {
        if self.is_lazy(page) {
            // Its first touch: a frame now, mapped before the guest runs again.
            if self.back(page).is_none() {
                return false;
            }
            self.pending.push(page);
            return true;
        }
        !self.is_shared(page) || crate::merge::copy_on_write(self, page).is_ok()
    }
}

/// Takes `count` pages for a copy or releases them, in the budget (same-page merging).
pub fn budget_backed(change: i64) {
    let mut budget = BUDGET.lock();
    budget.backed = budget.backed.saturating_add_signed(change);
}

/// Splits [gpa, gpa + len) at page boundaries: (page index, offset in page, bytes done
/// before this chunk, chunk length).
fn page_chunks(gpa: u64, len: u64) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    let mut done = 0u64;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = gpa + done;
        let offset = at % PAGE_SIZE;
        let chunk = (PAGE_SIZE - offset).min(len - done);
        let item = (
            (at / PAGE_SIZE) as usize,
            offset as usize,
            done as usize,
            chunk as usize,
        );
        done += chunk;
        Some(item)
    })
}

impl carousel_kernel::paging::GuestPhysRead for GuestMemory {
    fn read_physical(&self, gpa: u64, out: &mut [u8]) -> bool {
        self.read(gpa, out)
    }
}
