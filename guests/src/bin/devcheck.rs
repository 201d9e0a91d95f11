//! `devcheck`: drives every device of the xv6 hardware contract (`XV6-CONTRACT.md`) the way
//! xv6-public does, and reports one check per step, so CI can test that contract without xv6.
//!
//! In order (each step reports `hypercall::check(name, passed)` and a console line
//! `devcheck: NAME: ok` or `devcheck: NAME: FAILED`):
//! 1. `bda`, `mp-table`: the BIOS data area words, then the MP floating pointer found as xv6's
//!    `mpsearch` finds it, the configuration table checked and parsed as `mpinit` does.
//! 2. `lapic-init`: xv6's `lapicinit` sequence, a dummy ID read after every write.
//! 3. The 8259s masked, as xv6's `picinit` does before `ioapicinit` (no check: write-only ports).
//! 4. `ioapic-init`: xv6's `ioapicinit` (every entry masked to vector 32 + i), then IRQ 1 enabled
//!    (`consoleinit`). IRQ 4 and 14 are enabled where xv6 enables them, in steps 5 and 8.
//! 5. `uart-init`: xv6's `uartinit`, then IRQ 4 enabled.
//! 6. `timer` (waiting in HLT), `timer-spin` (IF = 1, no HLT), `timer-windows` (IF = 1 only in
//!    the short windows of xv6's scheduler loop), `timer-hlt` (one `STI; HLT` wakes on the next
//!    tick): LAPIC timer interrupts at vector 32, each handler sending EOI.
//! 7. `crtc`, `cga`: the cursor registers as xv6's `cgaputc` uses them; text memory at 0xB8000.
//! 8. `ide-probe`, `ide-read`, `ide-write`, `ide-readback`: xv6's `ideinit`, `idestart` and
//!    `ideintr` on drive 1, interrupt-driven (vector 46), with xv6's idle loop while waiting.
//! 9. `kbd`: the i8042 status port reads "no data".
//! 10. `uart-rx`: prints `devcheck: waiting for input`, then takes one line through the COM1
//!     receive interrupt (vector 36), drained like xv6's `uartintr`.
//! 11. `no-unexpected-vectors`: nothing but 32, 33, 36, 46 and the spurious 39 / 63 arrived.
//!
//! Then `devcheck: all checks passed` and `EXIT_SUCCESS`, or `devcheck: FAILED: names` and
//! `EXIT_FAILURE`. Every wait is bounded by TSC time (`hypercall::tsc_hz`), so a missing device
//! fails its check instead of hanging the guest. An exception prints its vector and RIP and exits
//! with `EXIT_FAILURE` (the runtime's default, see `carousel_guests::interrupts`).
//!
//! Arguments (`key=value`, all optional):
//! - `disk_sectors=N`: size of the VM's disk (IDE drive 1) in 512-byte sectors. Absent: the IDE
//!   checks are skipped, and say so.
//! - `magic_lba=L` (default 0): the sector whose first 8 bytes must be `CAROUSEL`.
//! - `scratch_sectors=S` (default 8): devcheck writes and reads back the last S sectors.
//! - `expect_input=TEXT`: the line (one word; the arguments split at whitespace) `uart-rx` must
//!   receive. Absent: `uart-rx` is skipped, and says so.
//! - `input_timeout_ms` (default 20000): how long `uart-rx` waits for the line.
//! - `timer_ms` (default 300): how long each timer check counts ticks.
//! - `min_ticks` (default 3): how many ticks each timer check needs.
//! - `device_timeout_ms` (default 1000): the bound on every device wait (IDE status and
//!   interrupts, ICR delivery status).
//!
//! The disk image: raw, `disk_sectors` × 512 bytes; sector `magic_lba` begins with the ASCII
//! bytes `CAROUSEL` (the rest is free); the last `scratch_sectors` sectors are devcheck's and are
//! overwritten on every run with a pattern seeded by the TSC and the first scratch sector's old
//! contents, then read back. `magic_lba` must lie outside the scratch sectors. For example, for
//! 64 sectors: `printf CAROUSEL > disk.img && truncate -s 32768 disk.img`.
//!
//! The console input for `uart-rx`: the expected text followed by CR or LF (`ping\n`), sent
//! after `devcheck: waiting for input` appears (earlier input is kept too, from `uart-init` on).
//! devcheck echoes the line once it is complete (`devcheck: received "ping"`); the hypervisor
//! should not echo.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use carousel_guests::ide;
use carousel_guests::interrupts::{self, InterruptFrame, LOCAL_APIC_BASE};
use carousel_guests::mmio::Registers;
use carousel_guests::{arch, entry, hypercall, ioapic, println, serial, BootInfo};
use carousel_protocol::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

// ----- Vectors (xv6 traps.h) -----

/// T_IRQ0: IRQ n arrives at vector 32 + n.
const IRQ0_VECTOR: u8 = 32;
/// The LAPIC timer's vector (IRQ_TIMER 0).
const TIMER_VECTOR: u8 = IRQ0_VECTOR;
/// IRQ of the keyboard controller.
const KEYBOARD_IRQ: u8 = 1;
/// IRQ of COM1.
const COM1_IRQ: u8 = 4;
/// IRQ of the primary IDE channel.
const IDE_IRQ: u8 = 14;
/// The LAPIC's error vector (IRQ_ERROR 19): programmed, never expected.
const ERROR_VECTOR: u32 = IRQ0_VECTOR as u32 + 19;
/// The spurious vectors xv6 handles (IRQ_SPURIOUS 31, and IRQ 7 from an 8259).
const SPURIOUS_VECTORS: [u8; 2] = [IRQ0_VECTOR + 31, IRQ0_VECTOR + 7];

// ----- BIOS data area and MP tables (MultiProcessor Specification 1.4) -----

/// BDA word: segment of the extended BIOS data area.
const BDA_EBDA_SEGMENT: usize = 0x40E;
/// BDA word: base memory size in KiB.
const BDA_BASE_MEMORY_KIB: usize = 0x413;
/// Where xv6 scans last for the floating pointer: the BIOS ROM area.
const BIOS_ROM_START: usize = 0xF_0000;
/// Length of that scan.
const BIOS_ROM_LENGTH: usize = 0x1_0000;
/// Length of the EBDA / base-memory scans.
const LOW_SCAN_LENGTH: usize = 1024;
/// End of the first MiB (where base memory and the BIOS area end).
const FIRST_MIB: usize = 0x10_0000;
/// Size of the floating pointer structure, and the scan step.
const MP_FLOATING_SIZE: usize = 16;
/// Floating pointer: offset of the configuration table's physical address.
const MP_FLOATING_PHYSADDR: usize = 4;
/// Floating pointer: offset of the IMCR-present byte.
const MP_FLOATING_IMCRP: usize = 12;
/// Configuration table header size; entries follow.
const MP_CONFIG_HEADER_SIZE: usize = 44;
/// Configuration header: offset of the table length (u16).
const MP_CONFIG_LENGTH: usize = 4;
/// Configuration header: offset of the version byte.
const MP_CONFIG_VERSION: usize = 6;
/// Configuration header: offset of the local APIC address (u32).
const MP_CONFIG_LAPIC_ADDRESS: usize = 36;
/// Entry type: processor (20 bytes).
const MP_PROCESSOR: u8 = 0;
/// Entry type: bus (8 bytes).
const MP_BUS: u8 = 1;
/// Entry type: I/O APIC (8 bytes).
const MP_IOAPIC: u8 = 2;
/// Entry type: I/O interrupt assignment (8 bytes).
const MP_IO_INTERRUPT: u8 = 3;
/// Entry type: local interrupt assignment (8 bytes).
const MP_LOCAL_INTERRUPT: u8 = 4;
/// IMCR select port, and the value that selects the IMCR.
const IMCR_SELECT: u16 = 0x22;
/// IMCR data port.
const IMCR_DATA: u16 = 0x23;
/// IMCR register number.
const IMCR_REGISTER: u8 = 0x70;

// ----- Local APIC (xv6 lapic.c) -----

/// Where the MP table must say the local APIC is.
const EXPECTED_LAPIC_ADDRESS: u32 = LOCAL_APIC_BASE as u32;
/// The local APIC's registers.
const LOCAL_APIC: Registers = Registers::new(LOCAL_APIC_BASE);
/// ID register.
const LAPIC_ID: usize = 0x20;
/// Version register.
const LAPIC_VER: usize = 0x30;
/// Task priority register.
const LAPIC_TPR: usize = 0x80;
/// End of interrupt.
const LAPIC_EOI: usize = 0xB0;
/// Spurious interrupt vector register.
const LAPIC_SVR: usize = 0xF0;
/// SVR: APIC software enable.
const LAPIC_SVR_ENABLE: u32 = 0x100;
/// Error status register.
const LAPIC_ESR: usize = 0x280;
/// Interrupt command register, low doubleword.
const LAPIC_ICRLO: usize = 0x300;
/// Interrupt command register, high doubleword.
const LAPIC_ICRHI: usize = 0x310;
/// ICR: INIT delivery mode.
const ICR_INIT: u32 = 0x500;
/// ICR: delivery status (send pending).
const ICR_DELIVERY_STATUS: u32 = 0x1000;
/// ICR: level-triggered.
const ICR_LEVEL: u32 = 0x8000;
/// ICR: destination shorthand "all including self".
const ICR_BROADCAST: u32 = 0x80000;
/// LVT: timer.
const LAPIC_TIMER: usize = 0x320;
/// LVT timer: periodic mode.
const TIMER_PERIODIC: u32 = 0x20000;
/// LVT: performance counter.
const LAPIC_PCINT: usize = 0x340;
/// LVT: LINT0.
const LAPIC_LINT0: usize = 0x350;
/// LVT: LINT1.
const LAPIC_LINT1: usize = 0x360;
/// LVT: error.
const LAPIC_ERROR: usize = 0x370;
/// LVT: masked.
const LVT_MASKED: u32 = 0x10000;
/// Timer initial count.
const LAPIC_TICR: usize = 0x380;
/// Timer divide configuration.
const LAPIC_TDCR: usize = 0x3E0;
/// TDCR: divide by 1.
const TDCR_DIVIDE_BY_1: u32 = 0xB;
/// xv6's timer initial count.
const TIMER_INITIAL_COUNT: u32 = 10_000_000;

// The I/O APIC's registers and xv6's `ioapicread` / `ioapicwrite` are the runtime's
// (`carousel_guests::ioapic`); `ioapicinit` is devcheck's own (step 4).

// ----- 8259 PICs -----

/// Master PIC data (mask) port.
const PIC_MASTER_DATA: u16 = 0x21;
/// Slave PIC data (mask) port.
const PIC_SLAVE_DATA: u16 = 0xA1;

// ----- COM1 (xv6 uart.c) -----

/// COM1 base port.
const COM1: u16 = 0x3F8;
/// Receiver buffer (read) / divisor latch low (DLAB).
const UART_RBR: u16 = COM1;
/// Interrupt enable / divisor latch high (DLAB).
const UART_IER: u16 = COM1 + 1;
/// Interrupt identification (read) / FIFO control (write).
const UART_IIR_FCR: u16 = COM1 + 2;
/// Line control.
const UART_LCR: u16 = COM1 + 3;
/// Modem control.
const UART_MCR: u16 = COM1 + 4;
/// Line status.
const UART_LSR: u16 = COM1 + 5;
/// LSR: transmit holding register empty.
const LSR_THRE: u8 = 0x20;
/// What an unemulated port reads as.
const FLOATING_BUS: u8 = 0xFF;

// ----- CGA (xv6 console.c) -----

/// CRTC index port.
const CRTC_INDEX: u16 = 0x3D4;
/// CRTC data port.
const CRTC_DATA: u16 = 0x3D5;
/// CRTC register: cursor location high byte.
const CRTC_CURSOR_HIGH: u8 = 14;
/// CRTC register: cursor location low byte.
const CRTC_CURSOR_LOW: u8 = 15;
/// Text cells on the screen (80 × 25).
const CGA_CELLS: u16 = 80 * 25;
/// Text cells per row.
const CGA_COLUMNS: u16 = 80;
/// CGA text memory.
const CGA_TEXT: usize = 0xB_8000;
/// Attribute: light grey on black, as xv6 writes.
const CGA_ATTRIBUTE: u16 = 0x0700;
/// What `cga` writes at the top left.
const CGA_TEXT_PROBE: &[u8] = b"devcheck";

// ----- IDE (xv6 ide.c) -----

// The registers and their bits are the runtime's (`carousel_guests::ide`); the driver here is
// devcheck's own, interrupt-driven as xv6's is.

/// How many times xv6 polls status for drive 1.
const IDE_PROBE_POLLS: u32 = 1000;
/// The magic the disk image carries at `magic_lba`.
const DISK_MAGIC: &[u8; 8] = b"CAROUSEL";

// ----- i8042 -----

/// Keyboard controller status port.
const KBD_STATUS: u16 = 0x64;
/// Keyboard controller data port.
const KBD_DATA: u16 = 0x60;
/// Status: output buffer full (data waiting).
const KBD_DATA_IN_BUFFER: u8 = 0x01;

// ----- Timing -----

/// Rounds of `timer-hlt`, each of which must wake on a tick.
const HLT_ROUNDS: u32 = 3;
/// Process slots one pass of xv6's scheduler loop scans.
const SCHEDULER_SLOTS: u32 = 64;
/// Most failed check names the summary lists.
const MAX_FAILURES: usize = 32;

/// TSC ticks per second, set once at start (interrupt handlers bound their waits with it).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// `device_timeout_ms`, for the same reason.
static DEVICE_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

fn main(boot: &BootInfo) -> ! {
    let config = Config::from_arguments(boot);
    let tsc_hz = hypercall::tsc_hz().expect("TSC_KHZ hypercall");
    TSC_HZ.store(tsc_hz, Ordering::Release);
    DEVICE_TIMEOUT_MS.store(config.device_timeout_ms, Ordering::Release);
    println!("devcheck: args {:?}, TSC {tsc_hz} Hz", boot.cmdline);

    interrupts::init();
    interrupts::set_handler(TIMER_VECTOR, timer_interrupt);
    interrupts::set_handler(IRQ0_VECTOR + KEYBOARD_IRQ, keyboard_interrupt);
    interrupts::set_handler(IRQ0_VECTOR + COM1_IRQ, uart_interrupt);
    interrupts::set_handler(IRQ0_VECTOR + IDE_IRQ, ide_interrupt);
    for vector in SPURIOUS_VECTORS {
        interrupts::set_handler(vector, spurious_interrupt);
    }

    let mut report = Report::default();
    report.record("bda", check_bda());
    let mp = check_mp_table(ram_end(boot));
    report.record("mp-table", mp.is_some());
    report.record("lapic-init", check_lapic_init());
    // xv6's order: `picinit` before `ioapicinit`.
    mask_pics();
    report.record("ioapic-init", check_ioapic_init(mp.map(|mp| mp.ioapic_id)));
    report.record("uart-init", check_uart_init());

    // From here on, interrupts are enabled, as in xv6 once its scheduler runs.
    report.record("timer", check_timer_halting(&config));
    report.record("timer-spin", check_timer_spinning(&config));
    report.record("timer-windows", check_timer_windows(&config));
    report.record("timer-hlt", check_timer_hlt(&config));

    report.record("crtc", check_crtc());
    report.record("cga", check_cga());

    match config.disk {
        Some(disk) => {
            report.record("ide-probe", check_ide_probe());
            report.record("ide-read", check_ide_read(disk));
            let nonce = pattern_nonce(disk);
            report.record("ide-write", check_ide_write(disk, nonce));
            report.record("ide-readback", check_ide_readback(disk, nonce));
        }
        None => report.skip("ide", "no disk_sectors argument"),
    }

    report.record("kbd", check_keyboard_status());

    match config.expect_input {
        Some(expected) => report.record("uart-rx", check_uart_receive(&config, expected)),
        None => report.skip("uart-rx", "no expect_input argument"),
    }

    report.record("no-unexpected-vectors", check_no_unexpected_vectors());
    report.finish()
}

// ----- Configuration -----

/// The arguments, parsed and checked.
#[derive(Debug, Clone, Copy)]
struct Config {
    /// How long each timer check counts.
    timer_ms: u64,
    /// Ticks each timer check needs.
    min_ticks: u64,
    /// Bound on every device wait.
    device_timeout_ms: u64,
    /// The disk, if the VM has one.
    disk: Option<DiskLayout>,
    /// The line `uart-rx` must receive.
    expect_input: Option<&'static str>,
    /// How long `uart-rx` waits.
    input_timeout_ms: u64,
}

/// Where devcheck reads and writes on the disk.
#[derive(Debug, Clone, Copy)]
struct DiskLayout {
    /// The sector that starts with [`DISK_MAGIC`].
    magic_lba: u32,
    /// First scratch sector.
    scratch_first: u32,
    /// Number of scratch sectors (the disk's last ones).
    scratch_count: u32,
}

impl Config {
    /// Reads the arguments; panics (so exits with failure, naming the problem) on a bad one.
    fn from_arguments(boot: &BootInfo) -> Self {
        let disk = boot.arg("disk_sectors").map(|_| {
            let sectors = boot.number("disk_sectors", 0);
            let magic_lba = boot.number("magic_lba", 0);
            let scratch_count = boot.number("scratch_sectors", 8).max(1);
            assert!(
                sectors <= u64::from(ide::LBA28_SECTORS),
                "disk_sectors={sectors} is beyond LBA28"
            );
            assert!(
                scratch_count < sectors && magic_lba < sectors - scratch_count,
                "disk_sectors={sectors} must exceed scratch_sectors={scratch_count}, and \
                 magic_lba={magic_lba} must lie before the scratch sectors"
            );
            DiskLayout {
                magic_lba: magic_lba as u32,
                scratch_first: (sectors - scratch_count) as u32,
                scratch_count: scratch_count as u32,
            }
        });
        Self {
            timer_ms: boot.number("timer_ms", 300).max(1),
            min_ticks: boot.number("min_ticks", 3).max(1),
            device_timeout_ms: boot.number("device_timeout_ms", 1000).max(1),
            disk,
            expect_input: boot.arg("expect_input"),
            input_timeout_ms: boot.number("input_timeout_ms", 20_000),
        }
    }
}

/// End of the RAM the guest may read: 1 MiB plus the multiboot upper memory, or only the first
/// MiB if the loader gave no sizes (the guest itself is loaded at 1 MiB, so that much is RAM).
fn ram_end(boot: &BootInfo) -> usize {
    boot.memory.map_or(FIRST_MIB, |memory| {
        FIRST_MIB + memory.upper_kib as usize * 1024
    })
}

// ----- Reporting -----

/// The checks' results so far.
#[derive(Debug, Default)]
struct Report {
    /// Names of the failed checks (the first [`MAX_FAILURES`]).
    failed: [&'static str; MAX_FAILURES],
    /// Number of failed checks.
    failed_count: usize,
}

impl Report {
    /// Prints and reports one check.
    fn record(&mut self, name: &'static str, passed: bool) {
        println!("devcheck: {name}: {}", if passed { "ok" } else { "FAILED" });
        let reported = hypercall::check(name, passed);
        if let Err(error) = reported {
            println!("devcheck: {name}: the CHECK hypercall failed: {error}");
        }
        if !passed || reported.is_err() {
            if let Some(slot) = self.failed.get_mut(self.failed_count) {
                *slot = name;
            }
            self.failed_count += 1;
        }
    }

    /// Prints that a check was skipped (not reported: the hypercall has no "skipped").
    fn skip(&mut self, name: &str, reason: &str) {
        println!("devcheck: {name}: skipped ({reason})");
    }

    /// Prints the summary and exits with the overall result.
    fn finish(&self) -> ! {
        println!(
            "devcheck: {} timer ticks, {} spurious, {} keyboard, {} unsolicited IDE interrupts",
            TICKS.load(Ordering::Acquire),
            SPURIOUS.load(Ordering::Acquire),
            KEYBOARD.load(Ordering::Acquire),
            IDE.unsolicited.load(Ordering::Acquire),
        );
        if self.failed_count == 0 {
            println!("devcheck: all checks passed");
            hypercall::exit(EXIT_SUCCESS)
        }
        println!("devcheck: FAILED: {}", FailedNames(self));
        hypercall::exit(EXIT_FAILURE)
    }
}

/// The failed names, comma-separated.
struct FailedNames<'a>(&'a Report);

impl fmt::Display for FailedNames<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = self.0;
        let listed = report.failed_count.min(MAX_FAILURES);
        for (index, name) in report.failed[..listed].iter().enumerate() {
            if index > 0 {
                formatter.write_str(", ")?;
            }
            formatter.write_str(name)?;
        }
        if report.failed_count > listed {
            write!(formatter, " and {} more", report.failed_count - listed)?;
        }
        Ok(())
    }
}

// ----- Time -----

/// A TSC value to wait until.
#[derive(Debug, Clone, Copy)]
struct Deadline(u64);

impl Deadline {
    /// `milliseconds` of TSC time from now.
    fn after_ms(milliseconds: u64) -> Self {
        let hz = TSC_HZ.load(Ordering::Acquire);
        Self(arch::rdtsc().saturating_add(milliseconds.saturating_mul(hz) / 1000))
    }

    /// The device-wait bound from now.
    fn device() -> Self {
        Self::after_ms(DEVICE_TIMEOUT_MS.load(Ordering::Acquire))
    }

    /// Whether the TSC has reached the deadline.
    fn passed(self) -> bool {
        arch::rdtsc() >= self.0
    }
}

/// How a wait passes the time until its condition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// `STI; HLT` until an interrupt (or the VM's one-shot timer at the deadline) wakes it.
    Halt,
    /// xv6's scheduler loop: interrupts off while it scans, on only between two passes.
    SchedulerLoop,
}

/// Waits until `done()` holds or `deadline` passes, passing the time as `idle` says, and
/// returns whether `done()` held. `done()` is evaluated with interrupts disabled; interrupts
/// are enabled on return.
fn wait_until(deadline: Deadline, idle: Idle, done: impl Fn() -> bool) -> bool {
    let result = loop {
        interrupts::disable();
        if done() {
            break true;
        }
        if deadline.passed() {
            break false;
        }
        match idle {
            Idle::Halt => {
                // The one-shot timer ends the HLT at the deadline even if no interrupt comes.
                hypercall::set_timer(deadline.0).expect("SET_TIMER hypercall");
                interrupts::enable_and_halt();
            }
            Idle::SchedulerLoop => {
                scheduler_pass();
                interrupts::enable();
            }
        }
    };
    if idle == Idle::Halt {
        hypercall::set_timer(0).expect("SET_TIMER hypercall");
    }
    interrupts::enable();
    result
}

/// Polls `done()` until it holds or `deadline` passes, leaving RFLAGS.IF as it is; returns
/// whether `done()` held.
fn spin_until(deadline: Deadline, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if deadline.passed() {
            return false;
        }
        core::hint::spin_loop();
    }
}

/// The work of one pass of xv6's scheduler with nothing runnable: a scan of the process slots
/// with interrupts disabled (the ptable lock held).
fn scheduler_pass() {
    for slot in 0..SCHEDULER_SLOTS {
        core::hint::black_box(slot);
    }
}

// ----- Interrupt handlers -----

/// Timer interrupts so far.
static TICKS: AtomicU64 = AtomicU64::new(0);
/// Spurious-vector interrupts so far.
static SPURIOUS: AtomicU32 = AtomicU32::new(0);
/// Keyboard interrupts so far.
static KEYBOARD: AtomicU32 = AtomicU32::new(0);

/// Vector 32: counts the tick and sends EOI, as xv6's `trap` does for IRQ_TIMER.
fn timer_interrupt(_frame: &InterruptFrame) {
    TICKS.fetch_add(1, Ordering::AcqRel);
    interrupts::end_of_interrupt();
}

/// Vector 33: xv6's `kbdgetc`: status, and the scancode only if one waits.
fn keyboard_interrupt(_frame: &InterruptFrame) {
    KEYBOARD.fetch_add(1, Ordering::AcqRel);
    // SAFETY: reading the i8042's status has no side effect.
    if unsafe { arch::inb(KBD_STATUS) } & KBD_DATA_IN_BUFFER != 0 {
        // SAFETY: popping the scancode is what this handler is for; nobody else reads it.
        unsafe { arch::inb(KBD_DATA) };
    }
    interrupts::end_of_interrupt();
}

/// Vectors 39 and 63: counted and acknowledged with EOI, as xv6 does.
fn spurious_interrupt(_frame: &InterruptFrame) {
    SPURIOUS.fetch_add(1, Ordering::AcqRel);
    interrupts::end_of_interrupt();
}

// ----- 1. BIOS data area and MP table -----

/// Reads byte `address` of low memory.
///
/// # Safety
///
/// `address` must lie in the VM's RAM (which the runtime identity-maps).
unsafe fn physical_byte(address: usize) -> u8 {
    // SAFETY: the caller promises RAM; a byte read needs no alignment. Volatile, because this is
    // memory the hypervisor wrote and Rust knows nothing of.
    unsafe { core::ptr::read_volatile(address as *const u8) }
}

/// Reads the little-endian word at `address` of low memory byte by byte, as xv6 reads the BDA.
///
/// # Safety
///
/// As for [`physical_byte`], for both bytes.
unsafe fn physical_word(address: usize) -> u16 {
    // SAFETY: passed on to the caller.
    unsafe { u16::from_le_bytes([physical_byte(address), physical_byte(address + 1)]) }
}

/// `bda`: the EBDA segment and the base memory size are non-zero.
fn check_bda() -> bool {
    // SAFETY: the BDA lies in the first page of RAM.
    let (ebda_segment, base_kib) = unsafe {
        (
            physical_word(BDA_EBDA_SEGMENT),
            physical_word(BDA_BASE_MEMORY_KIB),
        )
    };
    println!("devcheck: BDA EBDA segment {ebda_segment:#x}, base memory {base_kib} KiB");
    ebda_segment != 0 && base_kib != 0
}

/// What `mpinit` keeps from the MP configuration.
#[derive(Debug, Clone, Copy)]
struct MpConfiguration {
    /// The I/O APIC's ID.
    ioapic_id: u8,
}

/// `mp-table`: finds and parses the MP tables as xv6's `mpinit` does, and checks what xv6 needs:
/// one processor with APIC ID 0, the local APIC at 0xFEE00000, and an I/O APIC.
fn check_mp_table(ram_end: usize) -> Option<MpConfiguration> {
    let Some(floating) = mp_search(ram_end) else {
        println!("devcheck: mp-table: no MP floating pointer");
        return None;
    };
    // SAFETY: `mp_search` only returns structures that lie in RAM.
    let (table, imcrp) = unsafe {
        let physaddr = u32::from_le_bytes(core::array::from_fn(|index| {
            physical_byte(floating + MP_FLOATING_PHYSADDR + index)
        }));
        (
            physaddr as usize,
            physical_byte(floating + MP_FLOATING_IMCRP),
        )
    };
    println!("devcheck: MP floating pointer at {floating:#x}, table at {table:#x}, imcrp {imcrp}");
    if imcrp != 0 {
        select_apic_mode_through_imcr();
    }
    let configuration = mp_configuration(table, ram_end)?;
    parse_mp_entries(configuration)
}

/// xv6's `mpsearch`: the first KiB of the EBDA if its segment is set, otherwise the last KiB of
/// base memory; then the BIOS ROM area.
fn mp_search(ram_end: usize) -> Option<usize> {
    // SAFETY: the BDA lies in the first page of RAM.
    let ebda_segment = usize::from(unsafe { physical_word(BDA_EBDA_SEGMENT) });
    let low = if ebda_segment != 0 {
        Some(ebda_segment << 4)
    } else {
        // SAFETY: as above.
        let base_kib = usize::from(unsafe { physical_word(BDA_BASE_MEMORY_KIB) });
        // xv6 would scan below address 0 (and fault) if both words were 0.
        (base_kib * 1024).checked_sub(LOW_SCAN_LENGTH)
    };
    low.and_then(|start| mp_search_range(start, LOW_SCAN_LENGTH, ram_end))
        .or_else(|| mp_search_range(BIOS_ROM_START, BIOS_ROM_LENGTH, ram_end))
}

/// xv6's `mpsearch1`: a floating pointer ("_MP_", 16-byte sum 0) at a 16-byte step in
/// `[start, start + length)`. Refuses (prints, returns `None`) a range outside RAM.
fn mp_search_range(start: usize, length: usize, ram_end: usize) -> Option<usize> {
    if start + length > ram_end.min(FIRST_MIB) {
        println!(
            "devcheck: mp-table: not scanning {start:#x}+{length:#x}: outside the first MiB of RAM"
        );
        return None;
    }
    (start..start + length)
        .step_by(MP_FLOATING_SIZE)
        .find(|&candidate| {
            // SAFETY: the whole range lies in RAM, checked above.
            let bytes: [u8; MP_FLOATING_SIZE] =
                core::array::from_fn(|index| unsafe { physical_byte(candidate + index) });
            &bytes[..4] == b"_MP_" && checksum(&bytes) == 0
        })
}

/// The 8-bit sum of `bytes`.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |sum, byte| sum.wrapping_add(*byte))
}

/// xv6's `mpconfig` after the search: the table at `table` has signature "PCMP", version 1 or
/// 4, and a zero sum over its length. Returns the table's bytes.
fn mp_configuration(table: usize, ram_end: usize) -> Option<&'static [u8]> {
    if table == 0 || table + MP_CONFIG_HEADER_SIZE > ram_end {
        println!("devcheck: mp-table: configuration table address {table:#x} is not in RAM");
        return None;
    }
    // SAFETY: the header lies in RAM (checked above).
    let length = usize::from(unsafe { physical_word(table + MP_CONFIG_LENGTH) });
    if length < MP_CONFIG_HEADER_SIZE || table + length > ram_end {
        println!("devcheck: mp-table: configuration table length {length} is impossible");
        return None;
    }
    // SAFETY: the table lies in RAM (checked above), and nothing in the guest writes it.
    let bytes = unsafe { core::slice::from_raw_parts(table as *const u8, length) };
    let version = bytes[MP_CONFIG_VERSION];
    if &bytes[..4] != b"PCMP" || !(version == 1 || version == 4) || checksum(bytes) != 0 {
        println!(
            "devcheck: mp-table: bad configuration table (signature {:?}, version {version}, \
             sum {})",
            &bytes[..4],
            checksum(bytes)
        );
        return None;
    }
    Some(bytes)
}

/// xv6's entry loop in `mpinit`, with xv6's sizes; an unknown entry type fails (xv6 would loop
/// forever). Then the checks on what it found.
fn parse_mp_entries(table: &[u8]) -> Option<MpConfiguration> {
    let lapic_address = u32::from_le_bytes(
        table[MP_CONFIG_LAPIC_ADDRESS..MP_CONFIG_LAPIC_ADDRESS + 4]
            .try_into()
            .expect("four bytes"),
    );
    let mut processors = 0;
    let mut first_apic_id = None;
    let mut ioapic_id = None;
    let mut offset = MP_CONFIG_HEADER_SIZE;
    while offset < table.len() {
        let kind = table[offset];
        let size = match kind {
            MP_PROCESSOR => 20,
            MP_BUS | MP_IOAPIC | MP_IO_INTERRUPT | MP_LOCAL_INTERRUPT => 8,
            other => {
                println!("devcheck: mp-table: entry type {other} at offset {offset} (xv6 hangs)");
                return None;
            }
        };
        if offset + size > table.len() {
            println!("devcheck: mp-table: entry at offset {offset} runs past the table");
            return None;
        }
        match kind {
            MP_PROCESSOR => {
                processors += 1;
                first_apic_id.get_or_insert(table[offset + 1]);
            }
            MP_IOAPIC => ioapic_id = Some(table[offset + 1]),
            _ => {}
        }
        offset += size;
    }
    println!(
        "devcheck: MP: {processors} processor(s), first APIC ID {first_apic_id:?}, LAPIC at \
         {lapic_address:#x}, I/O APIC ID {ioapic_id:?}"
    );
    let good = processors == 1
        && first_apic_id == Some(0)
        && lapic_address == EXPECTED_LAPIC_ADDRESS
        && ioapic_id.is_some();
    ioapic_id
        .filter(|_| good)
        .map(|ioapic_id| MpConfiguration { ioapic_id })
}

/// What xv6 does when the floating pointer's IMCRP byte is set: switch the IMCR to APIC mode.
fn select_apic_mode_through_imcr() {
    println!("devcheck: MP imcrp set: selecting APIC mode through the IMCR, as xv6 does");
    // SAFETY: the IMCR only routes the 8259 and the APIC's interrupt lines, which devcheck has
    // not programmed yet.
    unsafe {
        arch::outb(IMCR_SELECT, IMCR_REGISTER);
        let value = arch::inb(IMCR_DATA);
        arch::outb(IMCR_DATA, value | 1);
    }
}

// ----- 2. Local APIC -----

/// xv6's `lapicw`: the write, then a read of ID to wait for it.
fn lapic_write(register: usize, value: u32) {
    // SAFETY: devcheck owns the local APIC; each write is a step of xv6's `lapicinit`, or an EOI.
    unsafe { LOCAL_APIC.write(register, value) };
    LOCAL_APIC.read(LAPIC_ID);
}

/// `lapic-init`: xv6's `lapicinit` in order, then ID = 0 and a plausible version.
fn check_lapic_init() -> bool {
    lapic_write(LAPIC_SVR, LAPIC_SVR_ENABLE | u32::from(SPURIOUS_VECTORS[0]));
    lapic_write(LAPIC_TDCR, TDCR_DIVIDE_BY_1);
    lapic_write(LAPIC_TIMER, TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    lapic_write(LAPIC_TICR, TIMER_INITIAL_COUNT);
    lapic_write(LAPIC_LINT0, LVT_MASKED);
    lapic_write(LAPIC_LINT1, LVT_MASKED);
    let version = LOCAL_APIC.read(LAPIC_VER);
    let max_lvt = (version >> 16) & 0xFF;
    if max_lvt >= 4 {
        lapic_write(LAPIC_PCINT, LVT_MASKED);
    }
    lapic_write(LAPIC_ERROR, ERROR_VECTOR);
    lapic_write(LAPIC_ESR, 0);
    lapic_write(LAPIC_ESR, 0);
    lapic_write(LAPIC_EOI, 0);
    lapic_write(LAPIC_ICRHI, 0);
    lapic_write(LAPIC_ICRLO, ICR_BROADCAST | ICR_INIT | ICR_LEVEL);
    // xv6 spins here without a bound, with interrupts still disabled.
    let delivered = spin_until(Deadline::device(), || {
        LOCAL_APIC.read(LAPIC_ICRLO) & ICR_DELIVERY_STATUS == 0
    });
    lapic_write(LAPIC_TPR, 0);

    let id = LOCAL_APIC.read(LAPIC_ID);
    let apic_version = version & 0xFF;
    println!(
        "devcheck: LAPIC ID {id:#x}, VER {version:#x} (version {apic_version:#x}, max LVT \
         {max_lvt}), ICR delivery {}",
        if delivered { "idle" } else { "STUCK PENDING" }
    );
    // Integrated APICs report versions 0x10–0x1F; they have at least the timer, LINT0, LINT1
    // and error LVT entries (max LVT ≥ 3).
    let plausible = (0x10..=0x1F).contains(&apic_version) && (3..=7).contains(&max_lvt);
    delivered && id >> 24 == 0 && plausible
}

// ----- 4. I/O APIC -----

/// xv6's `ioapicwrite`.
fn ioapic_write(register: u32, value: u32) {
    // SAFETY: devcheck owns the I/O APIC; each write is a step of xv6's `ioapicinit` or
    // `ioapicenable`, for an IRQ whose handler is registered.
    unsafe { ioapic::write(register, value) };
}

/// xv6's `ioapicenable(irq, 0)`: edge-triggered, active high, unmasked, to APIC ID 0.
fn ioapic_enable(irq: u8) {
    // SAFETY: as in `ioapic_write`: vector 32 + irq has its handler (registered in `main`).
    unsafe { ioapic::enable(irq, IRQ0_VECTOR + irq) };
}

/// `ioapic-init`: xv6's `ioapicinit`, then the keyboard IRQ enabled as `consoleinit` does. Fails
/// if the ID differs from the MP table's (xv6 only warns) or the entries cannot reach IRQ 14.
fn check_ioapic_init(mp_ioapic_id: Option<u8>) -> bool {
    let version = ioapic::read(ioapic::REG_VER);
    let max_entry = (version >> 16) & 0xFF;
    let id = (ioapic::read(ioapic::REG_ID) >> 24) as u8;
    println!(
        "devcheck: I/O APIC VER {version:#x} (max entry {max_entry}), ID {id}, MP table ID \
         {mp_ioapic_id:?}"
    );
    // Vectors 32 + i must stay below 256.
    let entries = max_entry.min(255 - u32::from(IRQ0_VECTOR));
    for entry in 0..=entries {
        ioapic_write(
            ioapic::REG_TABLE + 2 * entry,
            ioapic::INT_DISABLED | (u32::from(IRQ0_VECTOR) + entry),
        );
        ioapic_write(ioapic::REG_TABLE + 2 * entry + 1, 0);
    }
    ioapic_enable(KEYBOARD_IRQ);
    mp_ioapic_id == Some(id) && max_entry >= u32::from(IDE_IRQ) && max_entry == entries
}

// ----- 3. 8259 PICs -----

/// xv6's `picinit`: mask every line of both 8259s.
fn mask_pics() {
    // SAFETY: masking the 8259s only stops interrupts devcheck never wants from them.
    unsafe {
        arch::outb(PIC_MASTER_DATA, 0xFF);
        arch::outb(PIC_SLAVE_DATA, 0xFF);
    }
    println!("devcheck: 8259 PICs masked");
}

// ----- 5. COM1 -----

/// `uart-init`: xv6's `uartinit` writes, the presence test, and IRQ 4 enabled.
fn check_uart_init() -> bool {
    for (port, value) in [
        (UART_IIR_FCR, 0x00), // FIFOs off.
        (UART_LCR, 0x80),     // DLAB on.
        (UART_RBR, 12),       // Divisor 12: 9600 baud.
        (UART_IER, 0x00),
        (UART_LCR, 0x03), // 8N1, DLAB off.
        (UART_MCR, 0x00), // OUT2 clear: xv6 still expects IRQ 4.
        (UART_IER, 0x01), // Received-data interrupt.
    ] {
        // SAFETY: devcheck owns COM1; this is xv6's initialisation, after which the runtime's
        // polled output still works (it only needs THRE).
        unsafe { arch::outb(port, value) };
    }
    // SAFETY: LSR has no read side effect; IIR and RBR are read and discarded as xv6 does (the
    // receive queue is empty: FCR just cleared it).
    let (line_status, identification, buffer) = unsafe {
        let line_status = arch::inb(UART_LSR);
        if line_status == FLOATING_BUS {
            (line_status, 0, 0)
        } else {
            (line_status, arch::inb(UART_IIR_FCR), arch::inb(UART_RBR))
        }
    };
    if line_status == FLOATING_BUS {
        println!("devcheck: uart-init: LSR reads {FLOATING_BUS:#x}: xv6 would find no UART");
        return false;
    }
    ioapic_enable(COM1_IRQ);
    println!(
        "devcheck: COM1 programmed as xv6 does (LSR {line_status:#x}, IIR {identification:#x}, \
         RBR {buffer:#x})"
    );
    line_status & LSR_THRE != 0
}

// ----- 6. LAPIC timer -----

/// Counts the ticks that arrive while `wait` runs; reports the mean tick interval as a metric.
fn count_ticks(metric: &str, wait: impl FnOnce()) -> u64 {
    let start = arch::rdtsc();
    let before = TICKS.load(Ordering::Acquire);
    wait();
    let ticks = TICKS.load(Ordering::Acquire) - before;
    let elapsed = arch::rdtsc() - start;
    if let Some(interval) = elapsed.checked_div(ticks) {
        let _ = hypercall::metric(metric, interval);
    }
    println!("devcheck: {ticks} ticks in {elapsed} TSC cycles");
    ticks
}

/// `timer`: ticks arrive while the guest waits in `STI; HLT`.
fn check_timer_halting(config: &Config) -> bool {
    let ticks = count_ticks("timer_tick_cycles", || {
        wait_until(Deadline::after_ms(config.timer_ms), Idle::Halt, || false);
    });
    ticks >= config.min_ticks
}

/// `timer-spin`: ticks arrive while the guest spins with IF = 1 and never exits on its own.
fn check_timer_spinning(config: &Config) -> bool {
    let ticks = count_ticks("timer_spin_tick_cycles", || {
        let deadline = Deadline::after_ms(config.timer_ms);
        interrupts::enable();
        while !deadline.passed() {
            core::hint::spin_loop();
        }
    });
    ticks >= config.min_ticks
}

/// `timer-windows`: ticks arrive while the guest runs xv6's idle scheduler loop, where IF = 1
/// only for a few instructions per pass (the hypervisor needs interrupt-window exiting).
fn check_timer_windows(config: &Config) -> bool {
    let ticks = count_ticks("timer_window_tick_cycles", || {
        wait_until(
            Deadline::after_ms(config.timer_ms),
            Idle::SchedulerLoop,
            || false,
        );
    });
    ticks >= config.min_ticks
}

/// `timer-hlt`: each of a few `STI; HLT`s ends with a tick, before the VM's one-shot timer (set
/// `timer_ms` ahead) would have ended it.
fn check_timer_hlt(config: &Config) -> bool {
    (0..HLT_ROUNDS).all(|round| {
        // With IF = 0 no tick can slip in between this read and the HLT.
        interrupts::disable();
        let before = TICKS.load(Ordering::Acquire);
        let woke = wait_until(Deadline::after_ms(config.timer_ms), Idle::Halt, || {
            TICKS.load(Ordering::Acquire) != before
        });
        if !woke {
            println!("devcheck: timer-hlt: no tick ended HLT round {round}");
        }
        woke
    })
}

// ----- 7. CGA -----

/// Reads CRTC register `register` as xv6 does: index, then data.
fn crtc_read(register: u8) -> u8 {
    // SAFETY: the CRTC index only selects what the data port shows; devcheck is its only user.
    unsafe {
        arch::outb(CRTC_INDEX, register);
        arch::inb(CRTC_DATA)
    }
}

/// Writes CRTC register `register` as xv6 does.
fn crtc_write(register: u8, value: u8) {
    // SAFETY: devcheck owns the CRTC; only the cursor registers are written.
    unsafe {
        arch::outb(CRTC_INDEX, register);
        arch::outb(CRTC_DATA, value);
    }
}

/// xv6's cursor read in `cgaputc`: high byte from register 14, low from 15.
fn cursor_position() -> (u8, u8) {
    (crtc_read(CRTC_CURSOR_HIGH), crtc_read(CRTC_CURSOR_LOW))
}

/// `crtc`: the cursor reads as a position on the screen (never 0xFF), and a new position written
/// the way xv6 writes it reads back.
fn check_crtc() -> bool {
    let (high, low) = cursor_position();
    let position = u16::from_be_bytes([high, low]);
    let sane = high != FLOATING_BUS && low != FLOATING_BUS && position <= CGA_CELLS;
    let moved = (position % CGA_CELLS + CGA_COLUMNS) % CGA_CELLS;
    let [moved_high, moved_low] = moved.to_be_bytes();
    crtc_write(CRTC_CURSOR_HIGH, moved_high);
    crtc_write(CRTC_CURSOR_LOW, moved_low);
    let read_back = cursor_position();
    println!(
        "devcheck: CRTC cursor {position} ({high:#x}, {low:#x}); wrote {moved}, read back \
         {read_back:?}"
    );
    sane && read_back == (moved_high, moved_low)
}

/// `cga`: a string written to text memory with attribute 0x07 reads back.
fn check_cga() -> bool {
    let cells = CGA_TEXT as *mut u16;
    for (index, byte) in CGA_TEXT_PROBE.iter().enumerate() {
        // SAFETY: CGA text memory is RAM in every Carousel VM, and nothing else in the guest
        // uses it. Volatile: a device may be watching it.
        unsafe {
            cells
                .add(index)
                .write_volatile(CGA_ATTRIBUTE | u16::from(*byte))
        };
    }
    CGA_TEXT_PROBE.iter().enumerate().all(|(index, byte)| {
        // SAFETY: as above.
        let cell = unsafe { cells.add(index).read_volatile() };
        cell == CGA_ATTRIBUTE | u16::from(*byte)
    })
}

// ----- 8. IDE -----

/// Why an IDE transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdeError {
    /// The status never showed BSY clear and DRDY set (the last status read).
    NotReady(u8),
    /// The status showed DF or ERR.
    DeviceError(u8),
    /// No interrupt came within the device timeout.
    NoInterrupt,
}

impl IdeError {
    /// The status register value behind the error, if one was read.
    fn status(self) -> Option<u8> {
        match self {
            Self::NotReady(status) | Self::DeviceError(status) => Some(status),
            Self::NoInterrupt => None,
        }
    }
}

impl fmt::Display for IdeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady(status) => write!(formatter, "never ready (status {status:#x})"),
            Self::DeviceError(status) => write!(formatter, "device error (status {status:#x})"),
            Self::NoInterrupt => formatter.write_str("no interrupt"),
        }
    }
}

/// No request in flight.
const IDE_IDLE: u8 = 0;
/// A read is in flight: the interrupt handler transfers the data.
const IDE_READING: u8 = 1;
/// A write is in flight.
const IDE_WRITING: u8 = 2;

/// What the main code and the IDE interrupt handler share.
#[derive(Debug)]
struct IdeState {
    /// `IDE_IDLE`, `IDE_READING` or `IDE_WRITING`. Whoever swaps a request out of here (the
    /// handler on completion, the main code on timeout) owns finishing it.
    request: AtomicU8,
    /// Requests the handler completed.
    completions: AtomicU32,
    /// The last status the handler's `idewait(1)` read for the last read it completed.
    read_status: AtomicU8,
    /// Whether that `idewait(1)` succeeded (and the data was transferred).
    read_ready: AtomicBool,
    /// Interrupts with no request in flight.
    unsolicited: AtomicU32,
}

static IDE: IdeState = IdeState {
    request: AtomicU8::new(IDE_IDLE),
    completions: AtomicU32::new(0),
    read_status: AtomicU8::new(0),
    read_ready: AtomicBool::new(false),
    unsolicited: AtomicU32::new(0),
};

/// The sector the IDE handler reads into.
struct SectorBuffer(UnsafeCell<[u32; ide::SECTOR_DWORDS]>);

// SAFETY: an ownership protocol instead of a lock: the handler writes the buffer only after it
// swapped `IDE_READING` out of `IDE.request`, and publishes it by incrementing
// `IDE.completions` (release); the main code reads it only after seeing that increment
// (acquire), and starts the next read (the only way to give the handler the buffer again) only
// after it has copied the data out.
unsafe impl Sync for SectorBuffer {}

static SECTOR: SectorBuffer = SectorBuffer(UnsafeCell::new([0; ide::SECTOR_DWORDS]));

/// Reads the IDE status register.
fn ide_status() -> u8 {
    // SAFETY: reading the status register only clears the pending interrupt, which xv6's
    // `idewait` does just the same.
    unsafe { arch::inb(ide::STATUS_COMMAND) }
}

/// xv6's `idewait`, bounded: until BSY is clear and DRDY set; with `check_error`, fails on DF or
/// ERR.
fn ide_wait(check_error: bool) -> Result<u8, IdeError> {
    let deadline = Deadline::device();
    loop {
        let status = ide_status();
        if status & (ide::STATUS_BSY | ide::STATUS_DRDY) == ide::STATUS_DRDY {
            if check_error && status & (ide::STATUS_DF | ide::STATUS_ERR) != 0 {
                return Err(IdeError::DeviceError(status));
            }
            return Ok(status);
        }
        if deadline.passed() {
            return Err(IdeError::NotReady(status));
        }
    }
}

/// Vector 46: xv6's `ideintr`: for a read, `idewait(1)` and 128 doublewords with one `rep insl`;
/// for a write, nothing to read. Then EOI.
fn ide_interrupt(_frame: &InterruptFrame) {
    match IDE.request.swap(IDE_IDLE, Ordering::AcqRel) {
        IDE_READING => {
            let waited = ide_wait(true);
            if waited.is_ok() {
                // SAFETY: we swapped IDE_READING out, so the buffer is ours (see SectorBuffer);
                // reading the data port is the transfer the drive waits for.
                unsafe { arch::insl(ide::DATA, &mut *SECTOR.0.get()) };
            }
            let status = match waited {
                Ok(status) => status,
                Err(error) => error.status().unwrap_or(0),
            };
            IDE.read_status.store(status, Ordering::Release);
            IDE.read_ready.store(waited.is_ok(), Ordering::Release);
            IDE.completions.fetch_add(1, Ordering::AcqRel);
        }
        IDE_WRITING => {
            IDE.completions.fetch_add(1, Ordering::AcqRel);
        }
        _ => {
            IDE.unsolicited.fetch_add(1, Ordering::AcqRel);
        }
    }
    interrupts::end_of_interrupt();
}

/// `ide-probe`: xv6's `ideinit`: IRQ 14 enabled, `idewait(0)` with drive 0 selected, drive 1
/// selected and polled up to 1000 times for a non-zero status, drive 0 selected again.
fn check_ide_probe() -> bool {
    ioapic_enable(IDE_IRQ);
    let drive0 = ide_wait(false);
    // SAFETY: selecting a drive only changes which one the registers address.
    unsafe { arch::outb(ide::DRIVE_HEAD, ide::SELECT_LBA | ide::DRIVE1) };
    let drive1 = (0..IDE_PROBE_POLLS).find_map(|_| match ide_status() {
        0 => None,
        status => Some(status),
    });
    // SAFETY: as above.
    unsafe { arch::outb(ide::DRIVE_HEAD, ide::SELECT_LBA) };
    match drive0 {
        Ok(status) => println!("devcheck: IDE drive 0 ready (status {status:#x})"),
        Err(error) => println!("devcheck: ide-probe: drive 0 {error}"),
    }
    match drive1 {
        Some(status) => println!("devcheck: IDE drive 1 present (status {status:#x})"),
        None => println!("devcheck: ide-probe: drive 1 status stayed 0 (xv6: disk 1 not present)"),
    }
    drive0.is_ok() && drive1.is_some()
}

/// xv6's `idestart` for one sector of drive 1, with interrupts disabled (xv6 holds `idelock`):
/// `idewait(0)`, nIEN = 0, count 1, the LBA, the drive, then the command; for a write, the data
/// at once with one `rep outsl`, without waiting for DRQ.
fn ide_start(lba: u32, write: Option<&[u32; ide::SECTOR_DWORDS]>) -> Result<(), IdeError> {
    ide_wait(false)?;
    let [lba_low, lba_mid, lba_high, lba_top] = lba.to_le_bytes();
    // SAFETY: devcheck owns the IDE channel and has no other request in flight; these are the
    // register writes of one xv6 request.
    unsafe {
        arch::outb(ide::CONTROL, 0);
        arch::outb(ide::SECTOR_COUNT, 1);
        arch::outb(ide::LBA_LOW, lba_low);
        arch::outb(ide::LBA_MID, lba_mid);
        arch::outb(ide::LBA_HIGH, lba_high);
        arch::outb(
            ide::DRIVE_HEAD,
            ide::SELECT_LBA | ide::DRIVE1 | (lba_top & 0x0F),
        );
        match write {
            Some(data) => {
                IDE.request.store(IDE_WRITING, Ordering::Release);
                arch::outb(ide::STATUS_COMMAND, ide::COMMAND_WRITE);
                arch::outsl(ide::DATA, data);
            }
            None => {
                IDE.request.store(IDE_READING, Ordering::Release);
                arch::outb(ide::STATUS_COMMAND, ide::COMMAND_READ);
            }
        }
    }
    Ok(())
}

/// One request: started with interrupts disabled, then xv6's idle loop until the interrupt
/// handler completes it (bounded).
fn ide_request(lba: u32, write: Option<&[u32; ide::SECTOR_DWORDS]>) -> Result<(), IdeError> {
    interrupts::disable();
    let before = IDE.completions.load(Ordering::Acquire);
    let started = ide_start(lba, write);
    if let Err(error) = started {
        interrupts::enable();
        return Err(error);
    }
    let completed = wait_until(Deadline::device(), Idle::SchedulerLoop, || {
        IDE.completions.load(Ordering::Acquire) != before
    });
    if !completed {
        // Take the request back, so that a late interrupt finds nothing to do.
        IDE.request.swap(IDE_IDLE, Ordering::AcqRel);
        return Err(IdeError::NoInterrupt);
    }
    Ok(())
}

/// Reads sector `lba` of drive 1.
fn ide_read(lba: u32) -> Result<[u32; ide::SECTOR_DWORDS], IdeError> {
    ide_request(lba, None)?;
    if !IDE.read_ready.load(Ordering::Acquire) {
        let status = IDE.read_status.load(Ordering::Acquire);
        return Err(
            if status & (ide::STATUS_BSY | ide::STATUS_DRDY) == ide::STATUS_DRDY {
                IdeError::DeviceError(status)
            } else {
                IdeError::NotReady(status)
            },
        );
    }
    // SAFETY: the handler completed this read and published the buffer (see SectorBuffer); no
    // read is in flight, so nothing writes it now.
    Ok(unsafe { *SECTOR.0.get() })
}

/// Writes sector `lba` of drive 1.
fn ide_write(lba: u32, data: &[u32; ide::SECTOR_DWORDS]) -> Result<(), IdeError> {
    ide_request(lba, Some(data))
}

/// The first bytes of a sector, in disk order.
fn sector_prefix(sector: &[u32; ide::SECTOR_DWORDS]) -> [u8; 8] {
    let [low, high] = [sector[0].to_le_bytes(), sector[1].to_le_bytes()];
    core::array::from_fn(|index| {
        if index < 4 {
            low[index]
        } else {
            high[index - 4]
        }
    })
}

/// `ide-read`: sector `magic_lba` arrives through the interrupt and starts with "CAROUSEL".
fn check_ide_read(disk: DiskLayout) -> bool {
    let start = arch::rdtsc();
    match ide_read(disk.magic_lba) {
        Ok(sector) => {
            let _ = hypercall::metric("ide_read_cycles", arch::rdtsc() - start);
            let prefix = sector_prefix(&sector);
            println!(
                "devcheck: sector {} starts with {:?}",
                disk.magic_lba,
                core::str::from_utf8(&prefix).unwrap_or("(not UTF-8)")
            );
            &prefix == DISK_MAGIC
        }
        Err(error) => {
            println!("devcheck: ide-read: sector {}: {error}", disk.magic_lba);
            false
        }
    }
}

/// The word `index` of the pattern for sector `lba` in the run with `nonce`.
fn pattern_word(nonce: u32, lba: u32, index: usize) -> u32 {
    let mut word = nonce ^ lba.wrapping_mul(0x9E37_79B9) ^ (index as u32).wrapping_mul(0x85EB_CA6B);
    word ^= word >> 16;
    word = word.wrapping_mul(0x7FEB_352D);
    word ^ (word >> 15)
}

/// The run's pattern seed: the TSC mixed with what the first scratch sector holds now (read
/// first, through the same interrupt-driven path). Bochs runs repeat tick for tick, so the TSC
/// alone could repeat on a reused image and let a lost write pass; mixing in the old contents
/// makes this run's pattern differ from the one already on the disk.
fn pattern_nonce(disk: DiskLayout) -> u32 {
    let old = ide_read(disk.scratch_first).map_or(0, |sector| {
        sector.iter().fold(0x811C_9DC5_u32, |hash, word| {
            (hash ^ word).wrapping_mul(0x0100_0193)
        })
    });
    (arch::rdtsc() as u32 ^ old) | 1
}

/// The pattern for sector `lba`.
fn pattern(nonce: u32, lba: u32) -> [u32; ide::SECTOR_DWORDS] {
    core::array::from_fn(|index| pattern_word(nonce, lba, index))
}

/// The scratch sectors' LBAs.
fn scratch_sectors(disk: DiskLayout) -> core::ops::Range<u32> {
    disk.scratch_first..disk.scratch_first + disk.scratch_count
}

/// `ide-write`: every scratch sector written (command 0x30, data at once), each completed by an
/// interrupt.
fn check_ide_write(disk: DiskLayout, nonce: u32) -> bool {
    scratch_sectors(disk).all(|lba| match ide_write(lba, &pattern(nonce, lba)) {
        Ok(()) => true,
        Err(error) => {
            println!("devcheck: ide-write: sector {lba}: {error}");
            false
        }
    })
}

/// `ide-readback`: every scratch sector reads back as written.
fn check_ide_readback(disk: DiskLayout, nonce: u32) -> bool {
    scratch_sectors(disk).all(|lba| match ide_read(lba) {
        Ok(sector) => {
            let expected = pattern(nonce, lba);
            let mismatch = (0..ide::SECTOR_DWORDS).find(|&index| sector[index] != expected[index]);
            if let Some(index) = mismatch {
                println!(
                    "devcheck: ide-readback: sector {lba} word {index} is {:#x}, wrote {:#x}",
                    sector[index], expected[index]
                );
            }
            mismatch.is_none()
        }
        Err(error) => {
            println!("devcheck: ide-readback: sector {lba}: {error}");
            false
        }
    })
}

// ----- 9. Keyboard controller -----

/// `kbd`: the i8042 status reads as "no data waiting" (bit 0 clear, so never 0xFF).
fn check_keyboard_status() -> bool {
    // SAFETY: reading the status register has no side effect.
    let status = unsafe { arch::inb(KBD_STATUS) };
    println!("devcheck: i8042 status {status:#x}");
    status & KBD_DATA_IN_BUFFER == 0
}

// ----- 10. COM1 receive -----

/// Longest line `uart-rx` keeps.
const LINE_CAPACITY: usize = 64;

/// The line the COM1 handler collects.
#[derive(Debug)]
struct LineBuffer {
    /// The bytes before the line end.
    bytes: [AtomicU8; LINE_CAPACITY],
    /// How many of `bytes` are filled.
    length: AtomicUsize,
    /// Whether a CR or LF ended the line.
    complete: AtomicBool,
    /// Bytes dropped: past the capacity or after the line ended.
    dropped: AtomicU32,
}

static LINE: LineBuffer = LineBuffer {
    bytes: [const { AtomicU8::new(0) }; LINE_CAPACITY],
    length: AtomicUsize::new(0),
    complete: AtomicBool::new(false),
    dropped: AtomicU32::new(0),
};

impl LineBuffer {
    /// Adds one received byte (called by the handler only).
    fn push(&self, byte: u8) {
        if self.complete.load(Ordering::Acquire) {
            self.dropped.fetch_add(1, Ordering::AcqRel);
        } else if byte == b'\r' || byte == b'\n' {
            self.complete.store(true, Ordering::Release);
        } else {
            let length = self.length.load(Ordering::Acquire);
            match self.bytes.get(length) {
                Some(slot) => {
                    slot.store(byte, Ordering::Release);
                    self.length.store(length + 1, Ordering::Release);
                }
                None => {
                    self.dropped.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Whether the line so far equals `expected`.
    fn equals(&self, expected: &[u8]) -> bool {
        let length = self.length.load(Ordering::Acquire);
        length == expected.len()
            && expected
                .iter()
                .zip(&self.bytes)
                .all(|(byte, slot)| slot.load(Ordering::Acquire) == *byte)
    }
}

/// Vector 36: xv6's `uartintr`: read RBR while LSR shows data (bounded), then EOI.
fn uart_interrupt(_frame: &InterruptFrame) {
    serial::drain_received(|byte| LINE.push(byte));
    interrupts::end_of_interrupt();
}

/// `uart-rx`: one line, typed at the console, arrives through the receive interrupt and equals
/// `expected`.
fn check_uart_receive(config: &Config, expected: &str) -> bool {
    println!("devcheck: waiting for input");
    let complete = wait_until(
        Deadline::after_ms(config.input_timeout_ms),
        Idle::Halt,
        || LINE.complete.load(Ordering::Acquire),
    );
    let length = LINE.length.load(Ordering::Acquire);
    let received: [u8; LINE_CAPACITY] =
        core::array::from_fn(|index| LINE.bytes[index].load(Ordering::Acquire));
    let text = core::str::from_utf8(&received[..length]).unwrap_or("(not UTF-8)");
    if complete {
        println!("devcheck: received {text:?}");
    } else {
        println!(
            "devcheck: uart-rx: no complete line within {} ms (have {text:?})",
            config.input_timeout_ms
        );
    }
    let dropped = LINE.dropped.load(Ordering::Acquire);
    if dropped > 0 {
        println!("devcheck: uart-rx: {dropped} bytes after the line or past {LINE_CAPACITY}");
    }
    complete && LINE.equals(expected.as_bytes())
}

// ----- 11. Vectors -----

/// `no-unexpected-vectors`: no vector arrived without a handler, and none while this guest had
/// interrupts disabled (it raises no vector itself).
fn check_no_unexpected_vectors() -> bool {
    let unexpected = interrupts::unexpected();
    if unexpected.count > 0 {
        println!(
            "devcheck: {} unexpected interrupt(s), the last at vector {:?}",
            unexpected.count, unexpected.last_vector
        );
    }
    let masked = interrupts::while_masked();
    if masked.count > 0 {
        println!(
            "devcheck: {} interrupt(s) arrived with interrupts disabled, the last at vector {:?}",
            masked.count, masked.last_vector
        );
    }
    unexpected.count == 0 && masked.count == 0
}
