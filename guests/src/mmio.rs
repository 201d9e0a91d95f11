//! Memory-mapped device registers: aligned 32-bit volatile loads and stores, the only width the
//! local APIC and the I/O APIC accept (and the only one xv6 uses on them).
//!
//! The runtime's identity map covers the device window 0xFE00_0000–0xFFFF_FFFF uncached (see
//! `entry`), so a register's physical address is its pointer value.

use core::ptr;

/// Start of the device window that `entry` maps uncached.
pub const DEVICE_WINDOW_START: usize = 0xFE00_0000;

/// A block of 32-bit device registers at a fixed physical address, inside the device window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers {
    /// Physical (= virtual) address of the register at offset 0.
    base: usize,
}

impl Registers {
    /// The registers at `base`.
    ///
    /// Panics if `base` lies outside the device window or is not 16-byte aligned: every register
    /// block the guests use (LAPIC, IOAPIC) is.
    pub const fn new(base: usize) -> Self {
        assert!(base >= DEVICE_WINDOW_START && base.is_multiple_of(16));
        Self { base }
    }

    /// Physical address of the register at offset 0.
    pub const fn base(&self) -> usize {
        self.base
    }

    /// The address of the register at `offset`, checked to stay aligned and in the window.
    fn address(&self, offset: usize) -> *mut u32 {
        assert!(
            offset.is_multiple_of(4),
            "register offset {offset:#x} is not 32-bit aligned"
        );
        let address = self
            .base
            .checked_add(offset)
            .expect("register address beyond 4 GiB");
        assert!(
            address <= u32::MAX as usize - 3,
            "register address beyond 4 GiB"
        );
        address as *mut u32
    }

    /// Reads the 32-bit register at `offset` (one aligned 32-bit load).
    ///
    /// Safe because the registers the guests read (APIC ID, version, ICR, IOAPIC window) have no
    /// read side effects, and the window is mapped: a read that no device answers is the
    /// hypervisor's to resolve, not a memory-safety issue inside the guest.
    pub fn read(&self, offset: usize) -> u32 {
        // SAFETY: the address is 4-byte aligned and inside the identity-mapped device window
        // (checked by `new` and `address`); it is not Rust-managed memory, so the volatile load
        // aliases nothing.
        unsafe { ptr::read_volatile(self.address(offset)) }
    }

    /// Writes the 32-bit register at `offset` (one aligned 32-bit store).
    ///
    /// # Safety
    ///
    /// The write must not break an invariant other code relies on (for example, redirect an
    /// interrupt that some handler is waiting for).
    pub unsafe fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`: aligned, mapped, not Rust-managed memory; the caller vouches for
        // the effect on the device.
        unsafe { ptr::write_volatile(self.address(offset), value) }
    }
}
