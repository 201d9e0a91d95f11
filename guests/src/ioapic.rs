//! The I/O APIC as a guest programs it, after xv6's `ioapic.c`: its registers, reads and writes
//! through the IOREGSEL / IOWIN pair, and routing an IRQ to a vector (`ioapicenable`).
//!
//! What is not here: deciding which IRQs a guest takes (each guest routes its own, with its
//! handlers registered first), level-triggered or logical-destination entries.

use crate::mmio::Registers;

/// The I/O APIC's registers, at the address xv6 fixes (and Carousel's platform uses).
pub const IOAPIC: Registers = Registers::new(0xFEC0_0000);
/// IOREGSEL: register select.
pub const REGSEL: usize = 0x00;
/// IOWIN: register data.
pub const WINDOW: usize = 0x10;
/// Register: ID (bits 27:24).
pub const REG_ID: u32 = 0x00;
/// Register: version (bits 7:0) and the highest redirection entry (bits 23:16).
pub const REG_VER: u32 = 0x01;
/// Register: redirection table, two registers per entry (low: vector and flags, high:
/// destination).
pub const REG_TABLE: u32 = 0x10;
/// Redirection entry: masked.
pub const INT_DISABLED: u32 = 0x10000;

/// xv6's `ioapicread`.
///
/// Safe because selecting a register only changes which one IOWIN shows: the guests program
/// their I/O APIC from their main code only, never from a handler that could interleave.
pub fn read(register: u32) -> u32 {
    // SAFETY: IOREGSEL selects which register IOWIN shows; it changes no routing.
    unsafe { IOAPIC.write(REGSEL, register) };
    IOAPIC.read(WINDOW)
}

/// xv6's `ioapicwrite`.
///
/// # Safety
///
/// The write reprograms the guest's I/O APIC: an entry it unmasks must send a vector that has
/// a handler (see [`crate::interrupts::set_handler`]) before interrupts are enabled, and no
/// other code of the guest may be programming the I/O APIC meanwhile.
pub unsafe fn write(register: u32, value: u32) {
    // SAFETY: the caller vouches for the entry; IOREGSEL only selects the register IOWIN
    // reaches.
    unsafe {
        IOAPIC.write(REGSEL, register);
        IOAPIC.write(WINDOW, value);
    }
}

/// xv6's `ioapicenable(irq, 0)`: IRQ `irq` to `vector`, edge-triggered, active high, unmasked,
/// to APIC ID 0.
///
/// # Safety
///
/// As for [`write()`]: `vector` must have a handler before interrupts are enabled.
pub unsafe fn enable(irq: u8, vector: u8) {
    let entry = REG_TABLE + 2 * u32::from(irq);
    // SAFETY: the caller vouches for the vector; these are the entry's two registers.
    unsafe {
        write(entry, u32::from(vector));
        write(entry + 1, 0);
    }
}
