//! Accesses the hypervisor must stop the VM for, with a reason that says what happened. Each
//! case prints what it touches; still running afterwards, it exits with failure.
//!
//! - `case=touch where=W op=read|write`: guest-physical memory outside RAM. `W`: `past-end` (the
//!   first byte after RAM), `3g` (0xC000_0000), `below-lapic` (0xFEDF_F000), `above-lapic`
//!   (0xFEE0_1000), `beside-ioapic` (0xFEC0_1000), `64g` (through a 2-MiB mapping in the scratch
//!   window), `maxphys-top` (the last 8 bytes below 2^MAXPHYADDR, CPUID 0x8000_0008). The VM
//!   must stop as "outside its memory" at that address.
//! - `case=pt-in-mmio device=lapic|ioapic level=pt|pd|pml4 op=read|write`: a paging structure
//!   in a device page: a page table (a scratch-window PDE pointing at the device page), a page
//!   directory (PDPT entry 2), or the PML4 itself (CR3). The processor's page walk reads the
//!   device page: the hypervisor must stop the VM for a paging-structure access to MMIO
//!   (issue 12, "What was found" 8), not emulate the instruction as if it had touched the
//!   device.
//! - `case=exec-apic`: a call into the local APIC page: instruction fetch from a device.
//! - `case=mmio-straddle`: an 8-byte load at 0xFEE0_0FFC, half in the local APIC page and half
//!   in the page after it (outside RAM).

use core::arch::asm;

use carousel_guests::{arch, paging, BootInfo};

use crate::{ram_end, say, survived};

/// The local and I/O APIC pages.
const LOCAL_APIC_PAGE: u64 = 0xFEE0_0000;
const IO_APIC_PAGE: u64 = 0xFEC0_0000;

/// A volatile 8-byte load or store at linear `address`.
fn access(address: u64, write: bool) -> u64 {
    let value: u64;
    // SAFETY: the address is not Rust-managed memory: it is what the case means to touch, and
    // the hypervisor is expected to stop the VM on the way.
    unsafe {
        if write {
            asm!("mov qword ptr [{a}], {v}", a = in(reg) address, v = in(reg) 0x5A5A_5A5Au64,
                 options(nostack, preserves_flags));
            value = 0;
        } else {
            asm!("mov {v}, qword ptr [{a}]", a = in(reg) address, v = out(reg) value,
                 options(nostack, preserves_flags, readonly));
        }
    }
    value
}

pub fn touch(boot: &BootInfo) -> ! {
    let place = boot.arg("where").unwrap_or("past-end");
    let write = boot.arg("op") == Some("write");
    let maxphys = arch::cpuid(0x8000_0008, 0).eax & 0xFF;
    let (linear, gpa) = match place {
        "past-end" => (ram_end(boot), ram_end(boot)),
        "3g" => (0xC000_0000, 0xC000_0000),
        "below-lapic" => (0xFEDF_F000, 0xFEDF_F000),
        "above-lapic" => (0xFEE0_1000, 0xFEE0_1000),
        "beside-ioapic" => (0xFEC0_1000, 0xFEC0_1000),
        "64g" => map_large(64 << 30, 0),
        "maxphys-top" => {
            let (linear, gpa) = map_large((1 << maxphys) - paging::LARGE_PAGE, 0);
            (
                linear + paging::LARGE_PAGE - 8,
                gpa + paging::LARGE_PAGE - 8,
            )
        }
        other => {
            say!("unknown place {other:?}");
            carousel_guests::hypercall::exit(carousel_protocol::hypercall::EXIT_FAILURE)
        }
    };
    say!(
        "touching {place}: guest-physical {gpa:#x} (linear {linear:#x}, {}; MAXPHYADDR {maxphys})",
        if write { "write" } else { "read" }
    );
    let value = access(linear, write);
    survived(format_args!("the access to {gpa:#x} (read {value:#x})"))
}

/// Maps the 2-MiB page at guest-physical `gpa` into scratch slot `slot`; returns (linear, gpa).
fn map_large(gpa: u64, slot: usize) -> (u64, u64) {
    let entry = gpa | paging::PRESENT | paging::WRITABLE | paging::PAGE_SIZE_2MIB;
    // SAFETY: the scratch window maps nothing the guest uses.
    let linear = unsafe { paging::set_scratch_entry(slot, entry) };
    (linear, gpa)
}

pub fn page_table_in_mmio(boot: &BootInfo) -> ! {
    let device = match boot.arg("device") {
        Some("ioapic") => IO_APIC_PAGE,
        _ => LOCAL_APIC_PAGE,
    };
    let write = boot.arg("op") == Some("write");
    let table = device | paging::PRESENT | paging::WRITABLE;
    // Entry 6 of the device-page table: the walk reads offset 0x30 (the local APIC's version
    // register, an I/O APIC offset no register sits at).
    let index = 6;
    let level = boot.arg("level").unwrap_or("pt");
    let linear = match level {
        "pml4" => {
            say!("CR3 <- {device:#x}: the PML4 in a device page");
            // SAFETY: none: the next instruction fetch walks a PML4 in the device page; the
            // hypervisor is expected to stop the VM there.
            unsafe { arch::write_cr3(device) };
            survived(format_args!("loading CR3 with the device page {device:#x}"))
        }
        "pd" => {
            // SAFETY: the third GiB of the map holds no RAM and nothing the guest uses.
            unsafe { paging::set_pdpt_entry(2, table) };
            (2 << 30) + index * paging::LARGE_PAGE
        }
        _ => {
            // SAFETY: the scratch window maps nothing the guest uses.
            let base = unsafe { paging::set_scratch_entry(1, table) };
            base + index * paging::PAGE_SIZE_4KIB
        }
    };
    say!(
        "a {level} at {device:#x}: {} through linear {linear:#x} walks entry {index} of the \
         device page",
        if write { "store" } else { "load" }
    );
    let value = access(linear, write);
    survived(format_args!(
        "a {} through a {level} in the device page {device:#x} (read {value:#x})",
        if write { "store" } else { "load" }
    ))
}

pub fn execute_apic() -> ! {
    say!("calling into the local APIC page at {LOCAL_APIC_PAGE:#x}");
    // SAFETY: none: the fetch from the device page is the attack; the hypervisor is expected to
    // stop the VM. Nothing after the call relies on registers the callee would clobber.
    unsafe {
        asm!("call {}", in(reg) LOCAL_APIC_PAGE, clobber_abi("C"));
    }
    survived(format_args!("a call into the local APIC page"))
}

pub fn mmio_straddle() -> ! {
    let address = LOCAL_APIC_PAGE + 0xFFC;
    say!("an 8-byte load at {address:#x}: 4 bytes in the local APIC page, 4 beyond it");
    let value = access(address, false);
    survived(format_args!("the straddling load (read {value:#x})"))
}
