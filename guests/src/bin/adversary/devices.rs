//! Device pages and ports, driven the way hardware allows.
//!
//! - `case=mmio op=xchg|cmpxchg|stos|movs-store|movs-load|cr8-tpr`: instructions other than MOV
//!   on the local APIC's task-priority register (0x80, read-write bits 7:0): XCHG, LOCK
//!   CMPXCHG, `rep stosd`, `movsd` from RAM to the register and from the version register to
//!   RAM. All work on hardware. `cr8-tpr`: CR8 and the TPR are one register (SDM Vol. 3A 11.8.6
//!   "Task Priority in IA-32e Mode": "CR8 ... bits 3:0 ... TPR\[7:4\]").
//! - `case=icr kind=nmi|init|sipi`: IPIs to itself through the ICR. An NMI must arrive (vector 2,
//!   whatever IF says); a SIPI outside wait-for-SIPI is ignored; an INIT would reset the vCPU:
//!   the guest exits with [`EXIT_SURVIVED`] if it is still running afterwards.
//! - `case=reset port=kbd|cf9|92`: the three reset paths of a PC (i8042 command 0xFE, the reset
//!   control register, port 92's fast reset). Still running a millisecond later, the guest exits
//!   with [`EXIT_SURVIVED`].
//! - `case=io-sweep`: IN of every port at every width, then OUT of 0 to every port at every
//!   width (0 resets nothing: 0xCF9 and port 92 reset on bits 2 and 0). 393,216 port exits.
//! - `case=mmio-sweep device=lapic|ioapic width=1|2|4|8`: a load of that width at every offset
//!   of the device page (offset + width <= 4096), and stores of 0 at every 16-byte register
//!   offset (the local APIC's EOI and ICR included).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use carousel_guests::interrupts::{self, Fault, InterruptFrame, LOCAL_APIC_BASE};
use carousel_guests::{arch, hypercall, probe, BootInfo};
use carousel_protocol::hypercall::EXIT_FAILURE;

use crate::{deadline_ms, say, Report, EXIT_SURVIVED, NMI};
use carousel_guests::lapic::{LOCAL_APIC, SVR as LAPIC_SVR, SVR_ENABLE};

/// Local APIC registers.
const LAPIC_ID: usize = 0x20;
const LAPIC_VERSION: usize = 0x30;
const LAPIC_TPR: usize = 0x80;
const LAPIC_ICR_LOW: usize = 0x300;
const LAPIC_ICR_HIGH: usize = 0x310;
/// ICR delivery modes (bits 10:8) and the level bit.
const ICR_NMI: u32 = 0b100 << 8;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_ASSERT: u32 = 1 << 14;
/// The I/O APIC page.
const IO_APIC_BASE: u64 = 0xFEC0_0000;

pub fn mmio_instruction(boot: &BootInfo, report: &mut Report) {
    let tpr = LOCAL_APIC_BASE as u64 + LAPIC_TPR as u64;
    // SAFETY: the TPR of this guest's own local APIC; IF = 0, so the priority it sets holds
    // back nothing the guest waits for.
    unsafe { LOCAL_APIC.write(LAPIC_TPR, 0) };
    match boot.arg("op").unwrap_or("") {
        "xchg" => {
            let mut value: u32 = 0x20;
            // SAFETY: XCHG of a register with the TPR: no other memory.
            let fault = unsafe {
                probe!("xchg dword ptr [{a}], {v:e}", a = in(reg) tpr, v = inout(reg) value)
            };
            report.expect_no_fault("mmio-xchg-runs", fault);
            let now = LOCAL_APIC.read(LAPIC_TPR);
            report.check_detail(
                "mmio-xchg-swaps",
                value == 0 && now == 0x20,
                format_args!("(register got {now:#x}, EAX got {value:#x}; expected 0x20 and 0)"),
            );
        }
        "cmpxchg" => {
            // SAFETY: as above.
            unsafe { LOCAL_APIC.write(LAPIC_TPR, 0x20) };
            for (name, new, stored) in [
                ("mmio-cmpxchg-equal-stores", 0x30, 0x30),
                ("mmio-cmpxchg-unequal-loads", 0x40, 0x30),
            ] {
                let (fault, equal, accumulator) = compare_exchange(tpr, 0x20, new);
                report.expect_no_fault("mmio-cmpxchg-runs", fault);
                let now = LOCAL_APIC.read(LAPIC_TPR);
                let expected_equal = new == stored;
                let expected_accumulator = if expected_equal { 0x20 } else { stored };
                report.check_detail(
                    name,
                    equal == expected_equal && now == stored && accumulator == expected_accumulator,
                    format_args!("(ZF {equal}, register {now:#x}, EAX {accumulator:#x})"),
                );
            }
        }
        "stos" => {
            let rdi: u64;
            // SAFETY: `rep stosd` of one doubleword to the TPR (DF = 0).
            let fault = unsafe {
                probe!("rep stosd", inout("rdi") tpr => rdi, inout("rcx") 1u64 => _,
                       in("eax") 0x50u32)
            };
            report.expect_no_fault("mmio-rep-stos-runs", fault);
            let now = LOCAL_APIC.read(LAPIC_TPR);
            report.check_detail(
                "mmio-rep-stos-stores",
                now == 0x50 && rdi == tpr + 4,
                format_args!("(register {now:#x}, RDI {rdi:#x})"),
            );
        }
        "movs-store" => {
            let source: u32 = 0x60;
            // SAFETY: `rep movsd` of one doubleword from `source` to the TPR.
            let fault = unsafe {
                probe!("rep movsd", inout("rsi") &source as *const u32 as u64 => _,
                       inout("rdi") tpr => _, inout("rcx") 1u64 => _)
            };
            report.expect_no_fault("mmio-movs-store-runs", fault);
            let now = LOCAL_APIC.read(LAPIC_TPR);
            report.check_detail(
                "mmio-movs-store-stores",
                now == 0x60,
                format_args!("({now:#x})"),
            );
        }
        "movs-load" => {
            let mut target: u32 = 0;
            let version = LOCAL_APIC.read(LAPIC_VERSION);
            // SAFETY: `movsd` of one doubleword from the version register to `target`.
            let fault = unsafe {
                probe!("movsd", inout("rsi") LOCAL_APIC_BASE as u64 + LAPIC_VERSION as u64 => _,
                       inout("rdi") &mut target as *mut u32 as u64 => _)
            };
            report.expect_no_fault("mmio-movs-load-runs", fault);
            report.check_detail(
                "mmio-movs-load-loads",
                target == version,
                format_args!("(got {target:#x}, the register holds {version:#x})"),
            );
        }
        "cr8-tpr" => {
            // SAFETY: CR8 is the TPR's class; IF = 0 (see above).
            unsafe { arch::write_cr8(5) };
            let tpr_now = LOCAL_APIC.read(LAPIC_TPR);
            report.check_detail(
                "cr8-write-shows-in-tpr",
                tpr_now >> 4 == 5,
                format_args!("(CR8 5, TPR {tpr_now:#x})"),
            );
            // SAFETY: as above.
            unsafe { LOCAL_APIC.write(LAPIC_TPR, 0x70) };
            let cr8 = arch::read_cr8();
            report.check_detail(
                "tpr-write-shows-in-cr8",
                cr8 == 7,
                format_args!("(TPR 0x70, CR8 {cr8})"),
            );
            // SAFETY: as above.
            unsafe { arch::write_cr8(0) };
        }
        other => report.check_detail("mmio-op", false, format_args!("unknown {other:?}")),
    }
    // SAFETY: as above.
    unsafe { LOCAL_APIC.write(LAPIC_TPR, 0) };
}

/// LOCK CMPXCHG of the doubleword at `address` with EAX = `expected`, new value `new`: the
/// exception, ZF and EAX afterwards.
fn compare_exchange(address: u64, expected: u32, new: u32) -> (Option<Fault>, bool, u32) {
    let (accumulator, equal): (u32, u8);
    // SAFETY: LOCK CMPXCHG on a device register (the TPR): no other memory.
    let fault = unsafe {
        probe!("lock cmpxchg dword ptr [{a}], {n:e}", "sete {z}", a = in(reg) address,
               n = in(reg) new, z = out(reg_byte) equal, inout("eax") expected => accumulator)
    };
    (fault, equal == 1, accumulator)
}

static NMIS: AtomicU64 = AtomicU64::new(0);

fn nmi(_: &InterruptFrame) {
    NMIS.fetch_add(1, Ordering::AcqRel);
}

pub fn icr(boot: &BootInfo, report: &mut Report) {
    let kind = boot.arg("kind").unwrap_or("nmi");
    interrupts::set_handler(NMI, nmi);
    let own = LOCAL_APIC.read(LAPIC_ID) >> 24;
    let command = match kind {
        "init" => ICR_INIT | ICR_ASSERT,
        "sipi" => ICR_STARTUP | 0x10,
        _ => ICR_NMI | ICR_ASSERT,
    };
    say!("ICR: {kind} to APIC ID {own} (command {command:#x})");
    // SAFETY: an IPI to this guest's own vCPU: an NMI has a handler, a SIPI outside
    // wait-for-SIPI does nothing, and an INIT is the point of the case.
    unsafe {
        LOCAL_APIC.write(LAPIC_SVR, SVR_ENABLE | 0xFF);
        LOCAL_APIC.write(LAPIC_ICR_HIGH, own << 24);
        LOCAL_APIC.write(LAPIC_ICR_LOW, command);
    }
    let end = deadline_ms(1);
    while arch::rdtsc() < end && NMIS.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    let nmis = NMIS.load(Ordering::Acquire);
    match kind {
        "init" => {
            say!("still running after INIT to itself ({nmis} NMIs)");
            hypercall::exit(EXIT_SURVIVED)
        }
        "sipi" => report.check("sipi-ignored-outside-wait-for-sipi", nmis == 0),
        _ => report.check_detail(
            "nmi-self-delivered",
            nmis == 1,
            format_args!("({nmis} NMIs)"),
        ),
    }
}

pub fn reset(boot: &BootInfo) -> ! {
    let port = boot.arg("port").unwrap_or("kbd");
    say!("asking for a reset through {port}");
    // SAFETY: the VM's own (virtual) reset paths: resetting it is what the case asks for.
    unsafe {
        match port {
            "cf9" => {
                arch::outb(0xCF9, 0x02);
                arch::outb(0xCF9, 0x06);
            }
            "92" => {
                let value = arch::inb(0x92);
                arch::outb(0x92, value | 1);
            }
            _ => arch::outb(0x64, 0xFE),
        }
    }
    let end = deadline_ms(1);
    while arch::rdtsc() < end {
        core::hint::spin_loop();
    }
    say!("still running a millisecond after the reset request");
    hypercall::exit(EXIT_SURVIVED)
}

pub fn io_sweep(report: &mut Report) {
    let mut ones = 0u64;
    for port in 0..=u16::MAX {
        // SAFETY: IN from the VM's own (virtual) ports: at worst a receive FIFO pops or a
        // status clears, in devices this guest does not use (its console is the hypercall).
        unsafe {
            let byte: u8;
            let word: u16;
            let dword: u32;
            asm!("in al, dx", in("dx") port, out("al") byte, options(nomem, nostack));
            asm!("in ax, dx", in("dx") port, out("ax") word, options(nomem, nostack));
            asm!("in eax, dx", in("dx") port, out("eax") dword, options(nomem, nostack));
            ones += u64::from(byte == 0xFF && word == 0xFFFF && dword == u32::MAX);
        }
    }
    say!("IN of all 65,536 ports at 3 widths: {ones} ports read all ones");
    for port in 0..=u16::MAX {
        // SAFETY: OUT of 0 to the VM's own (virtual) ports: no reset path triggers on 0; COM1's
        // settings change, which only the runtime's polled console uses (this guest prints
        // through the hypercall).
        unsafe {
            asm!("out dx, al", in("dx") port, in("al") 0u8, options(nomem, nostack));
            asm!("out dx, ax", in("dx") port, in("ax") 0u16, options(nomem, nostack));
            asm!("out dx, eax", in("dx") port, in("eax") 0u32, options(nomem, nostack));
        }
    }
    say!("OUT of 0 to all 65,536 ports at 3 widths: still running");
    report.check("io-sweep-survived", true);
}

/// A load of `width` bytes at `address`.
fn load(address: u64, width: u64) -> u64 {
    let value: u64;
    // SAFETY: a device-page load; the caller keeps it inside the page.
    unsafe {
        match width {
            1 => asm!("movzx {v:e}, byte ptr [{a}]", a = in(reg) address, v = out(reg) value,
                      options(nostack, readonly)),
            2 => asm!("movzx {v:e}, word ptr [{a}]", a = in(reg) address, v = out(reg) value,
                      options(nostack, readonly)),
            4 => asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) address, v = out(reg) value,
                      options(nostack, readonly)),
            _ => asm!("mov {v}, qword ptr [{a}]", a = in(reg) address, v = out(reg) value,
                      options(nostack, readonly)),
        }
    }
    value
}

/// A store of 0, `width` bytes, at `address`.
fn store_zero(address: u64, width: u64) {
    // SAFETY: a device-page store; the caller keeps it inside the page.
    unsafe {
        match width {
            1 => asm!("mov byte ptr [{a}], 0", a = in(reg) address, options(nostack)),
            2 => asm!("mov word ptr [{a}], 0", a = in(reg) address, options(nostack)),
            4 => asm!("mov dword ptr [{a}], 0", a = in(reg) address, options(nostack)),
            _ => asm!("mov qword ptr [{a}], 0", a = in(reg) address, options(nostack)),
        }
    }
}

pub fn mmio_sweep(boot: &BootInfo, report: &mut Report) {
    let base = match boot.arg("device") {
        Some("ioapic") => IO_APIC_BASE,
        _ => LOCAL_APIC_BASE as u64,
    };
    let width = boot.number("width", 4);
    if ![1, 2, 4, 8].contains(&width) {
        say!("width {width} is not 1, 2, 4 or 8");
        hypercall::exit(EXIT_FAILURE)
    }
    say!("stores of 0 at every register of {base:#x}, {width} bytes wide");
    for offset in (0..4096).step_by(16) {
        store_zero(base + offset, width);
    }
    say!("loads at every offset of {base:#x}, {width} bytes wide");
    let mut nonzero = 0u64;
    for offset in 0..=(4096 - width) {
        nonzero += u64::from(load(base + offset, width) != 0);
    }
    report.check_detail(
        "mmio-sweep-survived",
        true,
        format_args!("({nonzero} loads read non-zero)"),
    );
}
