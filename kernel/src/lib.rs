//! The Carousel hypervisor's logic, host-tested: everything that decides what a guest's actions
//! do, kept apart from the privileged instructions so that it builds and runs in `cargo test`.
//!
//! The seams to the hardware are three traits the binary implements (`src/hw/`) and the tests
//! fake (`testing`, built for tests only): [`vcpu::Vcpu`] (one virtual CPU), [`memory::Frames`]
//! (the host's physical frames) and [`host::Host`] (clock, serial lines, CPUID, the shared
//! drive behind [`disk::Drive`]).
//!
//! - [`machine`]: the run loop: slices, blocking and waking, housekeeping, the end-of-run
//!   records.
//! - [`vm`]: one VM: its vCPU, memory, EPT, devices and run state.
//! - [`exit`]: the vendor-neutral exit enum, decoded from the hardware's exit information.
//! - [`exits`]: what each exit does (port I/O, hypercalls, control registers, EPT faults).
//! - [`platform`]: a VM's device models and the port/MMIO routing to them; [`disk`]: where each
//!   VM's disk sectors live (an extent of the shared drive, or memory) and the checks on them.
//! - [`memory`]: guest RAM over host frames, the guest-page budget, merging glue.
//! - [`console`] and [`export`]: what goes out on COM1 (text) and COM2 (records); [`feed`]:
//!   when the serial lines next want bytes.
//! - [`loader`], [`bootinfo`]: placing a multiboot guest in its RAM.
//! - [`paging`], [`mmio`]: walking the guest's page tables; decoding MMIO instructions.
//! - [`balloon`], [`merging`], [`workingset`], [`spaces`], [`exitstats`], [`input`], [`frames`]:
//!   the bookkeeping behind ballooning, same-page merging, working sets, address spaces, exit
//!   statistics, console input routing and the frame bitmap.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod balloon;
pub mod bootinfo;
pub mod compress;
pub mod console;
pub mod disk;
pub mod exit;
pub mod exits;
pub mod exitstats;
pub mod export;
pub mod feed;
pub mod frames;
pub mod host;
pub mod input;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod merging;
pub mod mmio;
pub mod paging;
pub mod platform;
pub mod ring;
pub mod spaces;
pub mod vcpu;
pub mod vm;
pub mod workingset;

#[cfg(test)]
pub mod testing;

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
