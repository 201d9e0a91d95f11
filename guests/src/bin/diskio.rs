//! `diskio`: an I/O-bound guest. It moves sectors to and from its disk in short bursts and
//! sleeps between them, for a fixed stretch of TSC time, and reports its progress through the
//! METRIC hypercall, so a sweep can compare its throughput with what the scheduler gave it.
//!
//! Each burst writes `batch` sectors with a pattern and reads each one back (polled PIO through
//! [`carousel_guests::ide`], every register access an exit), checking the data. Carousel's disk
//! model answers at once, so the sleep after each burst (SET_TIMER, then HLT) stands in for the
//! device's latency: the guest blocks after every burst, as an I/O-bound program does, and its
//! throughput depends on how soon the scheduler runs it again once it wakes.
//!
//! Interrupts stay disabled throughout, as in `spin`, unless `irq=1`: then each command runs as
//! xv6's driver runs it, with the drive's interrupt (IRQ 14 through the I/O APIC) on, and the
//! guest halts with interrupts enabled until the completion interrupt comes, so a disk that
//! takes time (a lab's `[run.disk]`) shows as the VM blocked on its disk.
//!
//! Metrics: `sectors`, the sectors moved so far (each write and each read counts one), every
//! `report_ms` and at the end.
//!
//! Arguments (`key=value`):
//! - `disk_sectors`: the disk's size in sectors (required); the guest uses all but sector 0.
//! - `ms`: how long to run, in milliseconds of TSC time (default 300).
//! - `batch`: sectors written and read back per burst (default 4).
//! - `wait_us`: sleep after each burst, in microseconds of TSC time (default 500; 0: none).
//! - `report_ms`: interval between progress reports (default 50).
//! - `irq`: 1 to wait for each command's interrupt, halted (default 0: poll the status).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

use carousel_guests::ide::{self, Sector};
use carousel_guests::interrupts::{self, InterruptFrame, LOCAL_APIC_BASE};
use carousel_guests::mmio::Registers;
use carousel_guests::{arch, entry, hypercall, ioapic, println, BootInfo};
use carousel_protocol::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

/// The first sector the guest writes; sector 0 keeps the image's magic.
const FIRST_SECTOR: u32 = 1;
/// Name of the progress metric.
const SECTORS_METRIC: &str = "sectors";
/// The disk's IRQ (the primary IDE channel) and its vector (xv6's T_IRQ0 + IRQ_IDE).
const IDE_IRQ: u8 = 14;
const IDE_VECTOR: u8 = 32 + IDE_IRQ;
/// The spurious-interrupt vector programmed in SVR.
const SPURIOUS_VECTOR: u8 = 63;
/// Local APIC registers.
const LOCAL_APIC: Registers = Registers::new(LOCAL_APIC_BASE);
/// Spurious interrupt vector register, and its APIC software enable bit.
const LAPIC_SVR: usize = 0xF0;
const LAPIC_SVR_ENABLE: u32 = 0x100;
/// The drive's completion interrupt came (set by its handler, taken by [`wait_for_interrupt`]).
static COMPLETED: AtomicBool = AtomicBool::new(false);

fn main(boot: &BootInfo) -> ! {
    let disk_sectors = boot.number("disk_sectors", 0);
    if disk_sectors <= u64::from(FIRST_SECTOR) || disk_sectors > u64::from(ide::LBA28_SECTORS) {
        println!("diskio: disk_sectors={disk_sectors}: give the disk's size, 2 sectors or more");
        hypercall::exit(EXIT_FAILURE)
    }
    let duration_ms = boot.number("ms", 300);
    let batch = boot.number("batch", 4).max(1);
    let wait_us = boot.number("wait_us", 500);
    let report_ms = boot.number("report_ms", 50).max(1);
    let irq = boot.number("irq", 0) == 1;
    if irq {
        interrupts::init();
        interrupts::set_handler(IDE_VECTOR, ide_interrupt);
        // SAFETY: the local APIC enable only lets interrupts through; the IDE vector has its
        // handler, and interrupts stay off until a command waits.
        unsafe {
            LOCAL_APIC.write(LAPIC_SVR, LAPIC_SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
            ioapic::enable(IDE_IRQ, IDE_VECTOR);
        }
    }
    let tsc_hz = hypercall::tsc_hz().expect("TSC_KHZ hypercall");
    let cycles_per_ms = tsc_hz / 1000;
    let wait = wait_us * tsc_hz / 1_000_000;
    println!(
        "diskio: {duration_ms} ms, bursts of {batch} sectors, {wait_us} us apart, \
         {disk_sectors}-sector disk"
    );
    let start = arch::rdtsc();
    let end = start + duration_ms * cycles_per_ms;
    let mut next_report = start + report_ms * cycles_per_ms;
    let mut moved: u64 = 0;
    let mut lba = FIRST_SECTOR;
    let mut round: u32 = 0;
    let mut sector: Sector = [0; ide::SECTOR_DWORDS];
    while arch::rdtsc() < end {
        round = round.wrapping_add(1);
        for _ in 0..batch {
            let pattern = pattern(round, lba);
            let written = if irq {
                ide::write_after(lba, &pattern, &mut wait_for_interrupt)
                    .and_then(|()| ide::read_after(lba, &mut sector, &mut wait_for_interrupt))
            } else {
                ide::write(lba, &pattern).and_then(|()| ide::read(lba, &mut sector))
            };
            if let Err(error) = written {
                println!("diskio: sector {lba}: {error}");
                hypercall::exit(EXIT_FAILURE)
            }
            if sector != pattern {
                println!("diskio: sector {lba} read back other data than was written");
                hypercall::exit(EXIT_FAILURE)
            }
            moved += 2;
            lba = if u64::from(lba) + 1 >= disk_sectors {
                FIRST_SECTOR
            } else {
                lba + 1
            };
        }
        let now = arch::rdtsc();
        if now >= next_report {
            hypercall::metric(SECTORS_METRIC, moved).expect("METRIC hypercall");
            next_report += report_ms * cycles_per_ms;
        }
        if wait > 0 {
            let deadline = now + wait;
            hypercall::set_timer(deadline).expect("SET_TIMER hypercall");
            // Interrupts are off: the hypervisor resumes the guest after the HLT at the
            // deadline; the loop covers an early resume.
            while arch::rdtsc() < deadline {
                arch::halt();
            }
        }
    }
    hypercall::metric(SECTORS_METRIC, moved).expect("METRIC hypercall");
    println!("diskio: done, {moved} sectors moved");
    hypercall::exit(EXIT_SUCCESS)
}

/// The drive's interrupt: note it, clear the drive's INTRQ (reading the status does) and end
/// the interrupt.
fn ide_interrupt(_frame: &InterruptFrame) {
    // SAFETY: reading the status register only acknowledges the drive's interrupt.
    unsafe { arch::inb(ide::STATUS_COMMAND) };
    COMPLETED.store(true, Ordering::Release);
    interrupts::end_of_interrupt();
}

/// Halts with interrupts enabled until the drive's interrupt came; returns with them off.
fn wait_for_interrupt() {
    loop {
        interrupts::disable();
        if COMPLETED.swap(false, Ordering::AcqRel) {
            return;
        }
        // STI; HLT: an interrupt that comes between the check and the halt still wakes it.
        interrupts::enable_and_halt();
    }
}

/// What burst `round` writes to sector `lba`: every word differs from the last round's.
fn pattern(round: u32, lba: u32) -> Sector {
    core::array::from_fn(|index| {
        let word = round.wrapping_mul(0x9E37_79B9) ^ lba.rotate_left(16) ^ index as u32;
        word.wrapping_mul(0x85EB_CA6B)
    })
}
