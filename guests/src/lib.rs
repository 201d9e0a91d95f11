//! The runtime Carousel's test guests share: multiboot entry and the switch to long mode, a
//! polled COM1 console, typed hypercalls, `CPUID`, optional interrupts, MMIO registers, and a
//! panic handler that reports failure.
//!
//! What is here:
//! - `entry` (private): the multiboot header and the 32-bit to 64-bit boot path (an identity map of
//!   the first 4 GiB with the device window 0xFE00_0000–0xFFFF_FFFF uncached, the guest's GDT and
//!   stack).
//! - [`multiboot`]: the loader's information, read into the [`BootInfo`] the guest's main gets.
//! - [`serial`]: COM1 and the [`print!`] / [`println!`] macros.
//! - [`hypercall`]: `VMCALL` wrappers for the hypercalls of [`carousel_protocol::hypercall`].
//! - [`ide`]: a polled driver for the VM's disk (IDE drive 1), one sector at a time.
//! - [`arch`]: the only instructions the runtime needs inline assembly for.
//! - [`interrupts`]: a 64-bit IDT, a handler per vector, `STI` / `CLI` and the local APIC's EOI,
//!   for guests that call [`interrupts::init`] (the others run with IF = 0 throughout).
//! - [`ioapic`]: the I/O APIC's registers and routing an IRQ to a vector, as xv6 does.
//! - [`lapic`]: the local APIC timer's registers, and a periodic timer started in one call.
//! - [`mmio`]: 32-bit volatile access to device registers in the device window.
//! - [`probe!`]: runs an instruction that may fault and returns the exception it raised
//!   ([`interrupts::Fault`]), for guests that test what the processor refuses.
//! - [`paging`]: changes to the identity map at run time (user bit, a scratch window).
//! - [`ring3`]: a GDT and TSS with user segments, and running code at CPL 3.
//!
//! What is not: a heap, more than one CPU, device drivers beyond [`ide`]'s polled one (a guest
//! that drives a device otherwise does so itself, with [`arch`] and [`mmio`]). Each guest binary
//! is `#![no_std]`, `#![no_main]`, and names its main with [`entry!`].
//!
//! Builds only for `x86_64-unknown-none`, linked by `link.ld` (see `build.rs`).
#![no_std]

pub mod arch;
mod entry;
pub mod hypercall;
pub mod ide;
pub mod interrupts;
pub mod ioapic;
pub mod lapic;
pub mod mmio;
pub mod multiboot;
pub mod paging;
pub mod probe;
pub mod ring3;
pub mod serial;

use core::panic::PanicInfo;

use carousel_protocol::hypercall::EXIT_FAILURE;
pub use multiboot::{BootInfo, MemorySize};

/// Declares the guest's main, `fn(&BootInfo) -> !`, which the runtime calls once in 64-bit
/// mode with the console ready.
///
/// ```ignore
/// carousel_guests::entry!(main);
///
/// fn main(boot: &carousel_guests::BootInfo) -> ! {
///     carousel_guests::hypercall::exit(carousel_protocol::hypercall::EXIT_SUCCESS)
/// }
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn carousel_guest_main(boot: &$crate::BootInfo) -> ! {
            let main: fn(&$crate::BootInfo) -> ! = $main;
            main(boot)
        }
    };
}

extern "Rust" {
    /// The guest binary's main, defined by [`entry!`].
    fn carousel_guest_main(boot: &BootInfo) -> !;
}

/// Called by the 64-bit entry code with EAX and EBX as the loader left them.
extern "C" fn carousel_start(magic: u32, information: u32) -> ! {
    serial::init();
    // SAFETY: called once, by the entry code, with the loader's EAX and EBX.
    let boot = unsafe { BootInfo::read(magic, information) };
    // SAFETY: every guest binary defines `carousel_guest_main` through `entry!`, which gives it
    // exactly the declared signature.
    unsafe { carousel_guest_main(&boot) }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    println!("carousel guest: {info}");
    hypercall::exit(EXIT_FAILURE)
}
