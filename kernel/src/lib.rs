//! The pure half of the Carousel hypervisor: logic that needs no privileged instruction, kept
//! here so it is tested on the host.
//!
//! - [`loader`]: places a multiboot guest kernel (ELF32 or ELF64) into guest RAM.
//! - [`bootinfo`]: the multiboot information a guest finds in EBX at entry.
//! - [`exitstats`]: what each kind of VM exit cost, per interval.
//! - [`frames`]: the physical-frame bitmap behind the hypervisor's frame allocator.
//! - [`paging`]: walks a guest's page tables to read memory at a guest linear address.
//! - [`mmio`]: decodes the instruction behind an MMIO exit and completes its load or store.
//! - [`input`]: routing console input from the host to the focused VM.
//! - [`spaces`]: guest time by address space (CR3), and the idle one.
//!
//! Everything that touches hardware is in the binary (`main.rs` and its modules).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod balloon;
pub mod bootinfo;
pub mod exitstats;
pub mod frames;
pub mod input;
pub mod loader;
pub mod merging;
pub mod mmio;
pub mod paging;
pub mod spaces;
pub mod workingset;

/// Size of a page and of a physical frame.
pub const PAGE_SIZE: u64 = 4096;

/// Guest RAM as the loaders see it: a byte range [0, size) that can be written at any offset.
pub trait GuestRam {
    /// Bytes of RAM, starting at guest-physical 0.
    fn size(&self) -> u64;
    /// Copies `bytes` to guest-physical `gpa`. The caller has checked the range.
    fn write(&mut self, gpa: u64, bytes: &[u8]);
    /// Sets `len` bytes from `gpa` to `value`. The caller has checked the range.
    fn fill(&mut self, gpa: u64, len: u64, value: u8);
}

/// True when [start, start + len) lies inside guest RAM of `size` bytes.
pub fn range_in_ram(start: u64, len: u64, size: u64) -> bool {
    start.checked_add(len).is_some_and(|end| end <= size)
}

#[cfg(test)]
pub(crate) mod testing {
    use alloc::vec::Vec;

    /// Guest RAM backed by a vector, for loader tests.
    pub struct VecRam(pub Vec<u8>);

    impl crate::GuestRam for VecRam {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn write(&mut self, gpa: u64, bytes: &[u8]) {
            self.0[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
        }
        fn fill(&mut self, gpa: u64, len: u64, value: u8) {
            self.0[gpa as usize..(gpa + len) as usize].fill(value);
        }
    }
}
