//! Physical memory: the frame allocator (built from the multiboot2 memory map), the heap, and
//! [`HwFrames`], the one way to reach a frame's contents.
//!
//! The boot code identity-maps the first 4 GiB, so a host-physical address below 4 GiB is also
//! the hypervisor's virtual address for it; frames above 4 GiB are not used.

use core::fmt;

use carousel_kernel::frames::FrameBitmap;
use carousel_kernel::memory::{Frames, Table};
use carousel_kernel::PAGE_SIZE;
use carousel_vmx::addr::HostPhysAddr;
use linked_list_allocator::LockedHeap;
use multiboot2::{BootInformation, MemoryAreaType};

/// Frames the bitmap covers: the identity-mapped 4 GiB.
const MAX_FRAMES: usize = (4u64 << 30) as usize / PAGE_SIZE as usize;
/// The heap: hypervisor data structures (VM tables, buffers), not guest memory.
const HEAP_BYTES: u64 = 48 << 20;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Where memory stands after [`init`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    pub available_bytes: u64,
    pub free_after_heap_bytes: u64,
}

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The host's frames: the allocator's bitmap, and a second bitmap of the frames it handed out
/// (the only ones whose contents [`Frames`] gives access to).
#[derive(Debug)]
pub struct HwFrames {
    bitmap: FrameBitmap<'static>,
    handed_out: &'static mut [u64],
}

/// Why the frame allocator and the heap could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryInitError {
    /// [`init`] ran before; its statics are taken.
    InitialisedTwice,
    /// The multiboot2 information has no memory-map tag.
    NoMemoryMap,
    /// No run of free frames is large enough for the heap, of `bytes`.
    NoRoomForHeap { bytes: u64 },
}

impl fmt::Display for MemoryInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InitialisedTwice => f.write_str("memory initialised twice"),
            Self::NoMemoryMap => f.write_str("GRUB gave no memory map"),
            Self::NoRoomForHeap { bytes } => {
                write!(f, "no room for the heap ({} MiB contiguous)", bytes >> 20)
            }
        }
    }
}

/// Builds the frame allocator and the heap. Called once, before any allocation; a second call
/// fails.
pub fn init(boot_info: &BootInformation<'_>) -> Result<(HwFrames, MemoryReport), MemoryInitError> {
    static mut FRAME_WORDS: [u64; MAX_FRAMES / 64] = [0; MAX_FRAMES / 64];
    static mut HANDED_OUT: [u64; MAX_FRAMES / 64] = [0; MAX_FRAMES / 64];
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, core::sync::atomic::Ordering::SeqCst) {
        return Err(MemoryInitError::InitialisedTwice);
    }
    // SAFETY: the flag above lets this run once; nothing else names these statics, so the two
    // references are the only ones ever made.
    let (words, handed_out) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(FRAME_WORDS),
            &mut *core::ptr::addr_of_mut!(HANDED_OUT),
        )
    };
    let mut bitmap = FrameBitmap::new_all_used(words);
    let areas = boot_info
        .memory_map_tag()
        .ok_or(MemoryInitError::NoMemoryMap)?;
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
        .ok_or(MemoryInitError::NoRoomForHeap { bytes: HEAP_BYTES })?;
    let free_after_heap_bytes = bitmap.free_frames() * PAGE_SIZE;
    // SAFETY: the frames were just taken from the allocator for the heap alone; they are
    // identity-mapped and nothing else refers to them.
    unsafe {
        HEAP.lock()
            .init((heap_start * PAGE_SIZE) as *mut u8, HEAP_BYTES as usize)
    };
    Ok((
        HwFrames { bitmap, handed_out },
        MemoryReport {
            available_bytes,
            free_after_heap_bytes,
        },
    ))
}

impl HwFrames {
    /// The frame number of `frame`, which must be one this store handed out: the invariant
    /// behind every access to a frame's contents. A violation is a hypervisor bug.
    fn owned(&self, frame: HostPhysAddr) -> u64 {
        let number = frame.as_u64() / PAGE_SIZE;
        let owned = frame.as_u64().is_multiple_of(PAGE_SIZE)
            && (number as usize) < MAX_FRAMES
            && self.handed_out[(number / 64) as usize] & (1 << (number % 64)) != 0;
        assert!(owned, "frame {frame} used but not handed out");
        number
    }

    fn mark(&mut self, number: u64, handed_out: bool) {
        let word = &mut self.handed_out[(number / 64) as usize];
        if handed_out {
            *word |= 1 << (number % 64);
        } else {
            *word &= !(1 << (number % 64));
        }
    }
}

impl Frames for HwFrames {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        let number = self.bitmap.allocate()?;
        self.mark(number, true);
        let frame = HostPhysAddr(number * PAGE_SIZE);
        self.table_mut(frame).fill(0);
        Some(frame)
    }

    fn free(&mut self, frame: HostPhysAddr) {
        let number = self.owned(frame);
        self.mark(number, false);
        self.bitmap.free(number);
    }

    fn free_frames(&self) -> u64 {
        self.bitmap.free_frames()
    }

    fn table(&self, frame: HostPhysAddr) -> &Table {
        let number = self.owned(frame);
        // SAFETY: the frame is a 4 KiB-aligned frame below 4 GiB (identity-mapped) that this
        // store handed out and still owns (checked just now); the reference borrows the store,
        // which is the only way to reach a frame's contents, so no `&mut` to it lives now.
        unsafe { &*((number * PAGE_SIZE) as *const Table) }
    }

    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        let number = self.owned(frame);
        // SAFETY: as for `table`; the reference borrows the store exclusively, so it is the only
        // one to this frame while it lives.
        unsafe { &mut *((number * PAGE_SIZE) as *mut Table) }
    }
}
