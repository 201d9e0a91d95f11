//! Same-page merging on the machine: the [`Merger`] of `carousel_kernel::merging` over the
//! VMs' guest memory and the frame allocator. A scan changes only [`GuestMemory`]'s frames
//! and shared bits; each VM rewrites the changed EPT entries (and INVEPTs) before it runs again
//! ([`crate::vm::Vm::sync_ept`]).

use carousel_kernel::merging::{CowError, Host, Merger, PageRef};
use carousel_vmx::addr::HostPhysAddr;
use spin::Mutex;

use crate::memory::{self, GuestMemory};
use crate::vm::Vm;

/// The machine's merging state.
static MERGER: Mutex<Merger> = Mutex::new(Merger::new());

/// Frames for copies, and freeing, with the guest-page budget kept.
fn copy_frame(frame: u64) -> Option<u64> {
    let copy = memory::allocate_frame()?;
    memory::frame_bytes(copy).copy_from_slice(memory::frame_bytes(HostPhysAddr(frame)));
    memory::budget_backed(1);
    Some(copy.0)
}

fn free_frame(frame: u64) {
    memory::free_frame(HostPhysAddr(frame));
    memory::budget_backed(-1);
}

fn contents(frame: u64) -> &'static [u8; 4096] {
    memory::frame_bytes(HostPhysAddr(frame))
}

/// Every VM's memory, for a scan (a candidate of one VM may merge with a page of another).
struct AllVms<'a>(&'a mut [Option<Vm>]);

impl Host for AllVms<'_> {
    fn frame_of(&self, (vm, page): PageRef) -> Option<(u64, bool)> {
        let vm = self.0.get(usize::from(vm))?.as_ref()?;
        vm.memory
            .frame(page)
            .map(|(frame, shared)| (frame.0, shared))
    }
    fn contents(&self, frame: u64) -> &[u8; 4096] {
        contents(frame)
    }
    fn map(&mut self, (vm, page): PageRef, frame: u64, shared: bool) {
        if let Some(vm) = self.0.get_mut(usize::from(vm)).and_then(Option::as_mut) {
            vm.memory.set_frame(page, HostPhysAddr(frame), shared);
        }
    }
    fn swap_hash(&mut self, (vm, page): PageRef, hash: u32) -> u32 {
        self.0
            .get_mut(usize::from(vm))
            .and_then(Option::as_mut)
            .map_or(0, |vm| vm.memory.swap_hash(page, hash))
    }
    fn copy(&mut self, frame: u64) -> Option<u64> {
        copy_frame(frame)
    }
    fn free(&mut self, frame: u64) {
        free_frame(frame);
    }
}

/// One VM's memory, for its copies on write.
struct OneVm<'a>(&'a mut GuestMemory);

impl Host for OneVm<'_> {
    fn frame_of(&self, (_, page): PageRef) -> Option<(u64, bool)> {
        self.0.frame(page).map(|(frame, shared)| (frame.0, shared))
    }
    fn contents(&self, frame: u64) -> &[u8; 4096] {
        contents(frame)
    }
    fn map(&mut self, (_, page): PageRef, frame: u64, shared: bool) {
        self.0.set_frame(page, HostPhysAddr(frame), shared);
    }
    fn swap_hash(&mut self, (_, page): PageRef, hash: u32) -> u32 {
        self.0.swap_hash(page, hash)
    }
    fn copy(&mut self, frame: u64) -> Option<u64> {
        copy_frame(frame)
    }
    fn free(&mut self, frame: u64) {
        free_frame(frame);
    }
}

/// Gives shared `page` of `memory` a private copy (the EPT follows at the VM's next sync).
pub fn copy_on_write(memory: &mut GuestMemory, page: u64) -> Result<(), CowError> {
    MERGER
        .lock()
        .copy_on_write((0, page), &mut OneVm(memory))
        .map(|_| ())
}

/// A shared frame loses a mapping (its page was ballooned or its VM released).
pub fn unmap_shared(frame: HostPhysAddr) {
    struct FramesOnly;
    impl Host for FramesOnly {
        fn frame_of(&self, _: PageRef) -> Option<(u64, bool)> {
            None
        }
        fn contents(&self, frame: u64) -> &[u8; 4096] {
            contents(frame)
        }
        fn map(&mut self, _: PageRef, _: u64, _: bool) {}
        fn swap_hash(&mut self, _: PageRef, _: u32) -> u32 {
            0
        }
        fn copy(&mut self, frame: u64) -> Option<u64> {
            copy_frame(frame)
        }
        fn free(&mut self, frame: u64) {
            free_frame(frame);
        }
    }
    MERGER.lock().unmap(frame.0, &mut FramesOnly);
}

/// Where the scan goes on from: VM index and page.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    vm: usize,
    page: u64,
}

/// Scans up to `budget` pages from `cursor` on, round the VMs; returns the pages looked at.
pub fn scan(vms: &mut [Option<Vm>], cursor: &mut Cursor, budget: u64) -> u64 {
    let mut merger = MERGER.lock();
    let mut scanned = 0;
    let mut empty_rounds = 0;
    while scanned < budget && empty_rounds <= vms.len() {
        let pages = vms
            .get(cursor.vm)
            .and_then(Option::as_ref)
            .map_or(0, |vm| vm.memory.size_pages());
        if cursor.page >= pages {
            cursor.vm = (cursor.vm + 1) % vms.len().max(1);
            cursor.page = 0;
            empty_rounds += 1;
            if cursor.vm == 0 {
                merger.new_pass();
            }
            continue;
        }
        empty_rounds = 0;
        merger.scan((cursor.vm as u16, cursor.page), &mut AllVms(vms));
        cursor.page += 1;
        scanned += 1;
    }
    scanned
}

/// The figures of a `Merging` record: merges, copies on write, shared frames, frames saved.
pub fn totals() -> (u64, u64, u64, u64) {
    let merger = MERGER.lock();
    (
        merger.merges,
        merger.cow_breaks,
        merger.shared_frames(),
        merger.frames_saved(),
    )
}
