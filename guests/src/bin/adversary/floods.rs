//! `case=flood kind=KIND ms=M`: one kind of work as fast as the guest can, for `ms` ms of TSC
//! time (default 300), then `EXIT_SUCCESS`. The VMs beside it must keep their share of the CPU
//! (issue 13) and every one of their records (issue 12, "What was found" 3).
//!
//! Record floods: `check` (CHECK, passed), `metric` (METRIC), `metric-names` (METRIC with a new
//! name each time), `balloon` (inflate and deflate one page, each a Balloon record).
//! Exit floods: `pio` (IN from port 0x80), `cpuid`, `vmcall` (VERSION), `console` (lines to COM1,
//! polled as a driver does), `console-hc` (4 KiB CONSOLE_WRITEs), `ipi` (self-IPIs through the
//! ICR), `rep-outsb` (one `rep outsb` to port 0x80 over all RAM from 2 MiB, again and again).

use core::arch::asm;

use carousel_guests::lapic::{LOCAL_APIC, SVR as LAPIC_SVR, SVR_ENABLE};
use carousel_guests::{arch, hypercall, println, BootInfo};

use crate::{check_name, deadline_ms, ram_end, say, Report, FREE_RAM, PAGE};

/// ICR low and high.
const LAPIC_ICR_LOW: usize = 0x300;
const LAPIC_ICR_HIGH: usize = 0x310;
/// ICR: destination shorthand "self" (bits 19:18 = 01), fixed delivery.
const ICR_SELF: u32 = 1 << 18;
/// The self-IPI's vector (never delivered: IF = 0).
const IPI_VECTOR: u32 = 0x41;
/// A port nothing answers on.
const POST_PORT: u16 = 0x80;
/// Where `rep-outsb` starts reading.
const REP_OUTSB_START: u64 = 2 << 20;

pub fn run(boot: &BootInfo, report: &mut Report) {
    let kind = boot.arg("kind").unwrap_or("");
    let ms = boot.number("ms", 300);
    say!("flooding {kind} for {ms} ms");
    let end = deadline_ms(ms);
    let mut tally = Tally::default();
    match kind {
        "check" => {
            while arch::rdtsc() < end {
                tally.add(hypercall::check("flood-check", true).is_ok());
            }
        }
        "metric" => {
            while arch::rdtsc() < end {
                tally.add(hypercall::metric("flood_metric", tally.operations).is_ok());
            }
        }
        "metric-names" => {
            while arch::rdtsc() < end {
                let name = check_name(format_args!("flood_{:06}", tally.operations));
                tally.add(hypercall::metric(&name, tally.operations).is_ok());
            }
        }
        "balloon" => {
            let page = [(FREE_RAM / PAGE) as u32];
            while arch::rdtsc() < end {
                let inflated = hypercall::balloon_inflate(&page).is_ok();
                tally.add(inflated && hypercall::balloon_deflate(&page).is_ok());
            }
        }
        "pio" => {
            while arch::rdtsc() < end {
                // SAFETY: nothing answers on the POST port; reading it has no effect.
                core::hint::black_box(unsafe { arch::inb(POST_PORT) });
                tally.add(true);
            }
        }
        "cpuid" => {
            while arch::rdtsc() < end {
                core::hint::black_box(arch::cpuid(0, 0));
                tally.add(true);
            }
        }
        "vmcall" => {
            while arch::rdtsc() < end {
                tally.add(hypercall::version().is_ok());
            }
        }
        "console" => {
            while arch::rdtsc() < end {
                println!(
                    "flood {:08} ................................................",
                    tally.operations
                );
                tally.add(true);
            }
        }
        "console-hc" => {
            let mut text = [b'.'; 4096];
            for line in text.chunks_mut(64) {
                line[..6].copy_from_slice(b"flood ");
                line[63] = b'\n';
            }
            while arch::rdtsc() < end {
                tally.add(hypercall::console_write(&text).is_ok());
            }
        }
        "ipi" => {
            // SAFETY: the guest's own local APIC: enabled, and self-IPIs of a vector that stays
            // pending (IF = 0) change nothing else.
            unsafe { LOCAL_APIC.write(LAPIC_SVR, SVR_ENABLE | 0xFF) };
            while arch::rdtsc() < end {
                // SAFETY: as above.
                unsafe {
                    LOCAL_APIC.write(LAPIC_ICR_HIGH, 0);
                    LOCAL_APIC.write(LAPIC_ICR_LOW, ICR_SELF | IPI_VECTOR);
                }
                tally.add(true);
            }
        }
        "rep-outsb" => {
            let length = ram_end(boot) - REP_OUTSB_START;
            while arch::rdtsc() < end {
                // SAFETY: reads [2 MiB, end of RAM), all RAM, and writes it to a port nothing
                // answers on; DF = 0 as the ABI leaves it.
                unsafe {
                    asm!(
                        "rep outsb",
                        in("dx") POST_PORT,
                        inout("rsi") REP_OUTSB_START => _,
                        inout("rcx") length => _,
                        options(nostack, readonly, preserves_flags),
                    );
                }
                tally.add(true);
            }
        }
        other => report.check_detail("flood-kind", false, format_args!("unknown {other:?}")),
    }
    say!(
        "flood {kind}: {} operations, {} refused",
        tally.operations,
        tally.failures
    );
    let _ = hypercall::metric("flood_operations", tally.operations);
    report.check("flood-ran", tally.operations > 0);
}

/// Operations done, and how many of them the hypervisor refused.
#[derive(Default)]
struct Tally {
    operations: u64,
    failures: u64,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.operations += 1;
        self.failures += u64::from(!ok);
    }
}
