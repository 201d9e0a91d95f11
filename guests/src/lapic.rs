//! The local APIC's timer, as a guest programs it: the register offsets and bits the guests use,
//! and a periodic timer started and stopped in one call each. The timer's clock in Carousel's
//! device model runs at 1 GHz.

use crate::interrupts::LOCAL_APIC_BASE;
use crate::mmio::Registers;

/// The local APIC's registers.
pub const LOCAL_APIC: Registers = Registers::new(LOCAL_APIC_BASE);
/// Spurious-interrupt vector register, and its software-enable bit.
pub const SVR: usize = 0xF0;
pub const SVR_ENABLE: u32 = 0x100;
/// LVT timer, initial count, divide configuration.
pub const LVT_TIMER: usize = 0x320;
pub const INITIAL_COUNT: usize = 0x380;
pub const DIVIDE_CONFIGURATION: usize = 0x3E0;
/// LVT bits: masked; timer mode periodic.
pub const LVT_MASKED: u32 = 1 << 16;
pub const LVT_PERIODIC: u32 = 1 << 17;
/// Divide configuration: divide by 1.
pub const DIVIDE_BY_1: u32 = 0xB;
/// Counts of the timer's clock per millisecond (1 GHz).
pub const COUNTS_PER_MS: u64 = 1_000_000;

/// Enables the local APIC and starts its timer periodic at divide 1, every `count` counts, with
/// `lvt` as the LVT timer entry (the vector and the mode bits: [`LVT_PERIODIC`], maybe
/// [`LVT_MASKED`]).
///
/// # Safety
///
/// The timer's vector must have a handler (see [`crate::interrupts::set_handler`]) before
/// interrupts are enabled, and nothing else in the guest may be using the timer.
pub unsafe fn start_timer(lvt: u32, count: u32) {
    // SAFETY: the guest's own local APIC; the caller vouches for the vector and the timer.
    unsafe {
        LOCAL_APIC.write(SVR, SVR_ENABLE | 0xFF);
        LOCAL_APIC.write(DIVIDE_CONFIGURATION, DIVIDE_BY_1);
        LOCAL_APIC.write(LVT_TIMER, lvt);
        LOCAL_APIC.write(INITIAL_COUNT, count);
    }
}

/// Stops the local APIC timer (initial count 0).
pub fn stop_timer() {
    // SAFETY: a zero initial count only stops the guest's own timer.
    unsafe { LOCAL_APIC.write(INITIAL_COUNT, 0) };
}
