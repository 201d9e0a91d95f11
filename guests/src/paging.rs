//! The runtime's identity map (see `entry`), changed at run time: the user bit on its low part
//! (for [`crate::ring3`]) and a scratch window whose 2-MiB entries a test guest points anywhere
//! (guest-physical addresses beyond 4 GiB, page tables in device pages, reserved bits).
//!
//! The map: CR3 -> one PML4 entry -> a PDPT with four entries -> four page directories of 2-MiB
//! pages covering 0–4 GiB. Every table lies in the guest's `.bss`, identity-mapped, so a table's
//! physical address is its pointer. The scratch window is the second GiB (PDPT entry 1), which
//! holds no RAM in a VM of at most 1 GiB: only such guests may use it.

use crate::arch;

/// Page-table entry: present.
pub const PRESENT: u64 = 1 << 0;
/// Page-table entry: writable.
pub const WRITABLE: u64 = 1 << 1;
/// Page-table entry: user-accessible.
pub const USER: u64 = 1 << 2;
/// Page-table entry: page-level write-through.
pub const WRITE_THROUGH: u64 = 1 << 3;
/// Page-table entry: page-level cache disable.
pub const CACHE_DISABLE: u64 = 1 << 4;
/// Page-directory entry: maps a 2-MiB page.
pub const PAGE_SIZE_2MIB: u64 = 1 << 7;
/// Bits 51:12 of an entry: the next table's or the page's physical address.
pub const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Size of a page mapped by a page-table entry.
pub const PAGE_SIZE_4KIB: u64 = 4 << 10;
/// Size of a page mapped by a page-directory entry.
pub const LARGE_PAGE: u64 = 2 << 20;
/// Linear start of the scratch window (the second GiB).
pub const SCRATCH_START: u64 = 1 << 30;
/// How far the user bit reaches: the first 4 MiB, which hold the guest image, its stacks and
/// its statics.
pub const USER_MAPPED_END: u64 = 4 << 20;

/// Entry `index` of the table at physical (= linear) `table`.
fn entry(table: u64, index: usize) -> *mut u64 {
    assert!(index < 512, "a table has 512 entries");
    ((table & ADDRESS_MASK) as usize as *mut u64).wrapping_add(index)
}

/// The PML4's physical address.
fn pml4() -> u64 {
    arch::read_cr3() & ADDRESS_MASK
}

/// The page directory PDPT entry `gib` points at (`gib` < 4: the runtime's own four).
fn page_directory(gib: usize) -> u64 {
    assert!(gib < 4, "the runtime maps four page directories");
    // SAFETY: the runtime's PML4 entry 0 and PDPT entries 0-3 are present and point at its
    // identity-mapped tables in `.bss`.
    unsafe {
        let pdpt = entry(pml4(), 0).read_volatile();
        entry(pdpt, gib).read_volatile() & ADDRESS_MASK
    }
}

/// Gives the map's low [`USER_MAPPED_END`] (its PML4 and PDPT entry 0, and the page-directory
/// entries below it) the user bit, then flushes the TLB. Idempotent.
pub fn allow_user_low() {
    // SAFETY: the entries are the runtime's own identity map, in `.bss`; setting the user bit
    // only lets ring 3 use the same translations. Rewriting CR3 with its own value flushes them.
    unsafe {
        let pml4_entry = entry(pml4(), 0);
        pml4_entry.write_volatile(pml4_entry.read_volatile() | USER);
        let pdpt_entry = entry(pml4_entry.read_volatile(), 0);
        pdpt_entry.write_volatile(pdpt_entry.read_volatile() | USER);
        let directory = page_directory(0);
        for index in 0..(USER_MAPPED_END / LARGE_PAGE) as usize {
            let pde = entry(directory, index);
            pde.write_volatile(pde.read_volatile() | USER);
        }
        arch::write_cr3(arch::read_cr3());
    }
}

/// The linear address of scratch slot `slot` (0–511), each [`LARGE_PAGE`] long.
pub fn scratch_address(slot: usize) -> u64 {
    assert!(slot < 512, "the scratch window has 512 slots");
    SCRATCH_START + slot as u64 * LARGE_PAGE
}

/// Sets the page-directory entry of scratch slot `slot` to `value` (any value: a 2-MiB page
/// anywhere, a page table anywhere, reserved bits) and drops the slot's TLB entries. Returns the
/// slot's linear address.
///
/// # Safety
///
/// Nothing may be using the slot's old mapping (the runtime maps no RAM there).
pub unsafe fn set_scratch_entry(slot: usize, value: u64) -> u64 {
    let linear = scratch_address(slot);
    // SAFETY: the entry is in the runtime's second page directory, identity-mapped in `.bss`;
    // the caller vouches that nothing uses the old mapping.
    unsafe { entry(page_directory(1), slot).write_volatile(value) };
    arch::invlpg(linear);
    linear
}

/// Sets PDPT entry `index` (1–3: a whole GiB of the map; never 0, which maps the guest) to
/// `value` and flushes the TLB.
///
/// # Safety
///
/// Nothing may be using the GiB's old mapping (the guest's device window lies in the fourth, so
/// after changing entry 3 the local APIC is unreachable at its usual address).
pub unsafe fn set_pdpt_entry(index: usize, value: u64) {
    assert!(
        (1..4).contains(&index),
        "PDPT entry 0 maps the guest itself"
    );
    // SAFETY: the runtime's PML4 entry 0 points at its PDPT in `.bss`; the caller vouches for
    // the GiB. Rewriting CR3 flushes every translation of it.
    unsafe {
        let pdpt = entry(pml4(), 0).read_volatile();
        entry(pdpt, index).write_volatile(value);
        arch::write_cr3(arch::read_cr3());
    }
}
