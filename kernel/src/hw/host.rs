//! The real machine behind `carousel_kernel::host::Host`: the TSC, COM1 (the hypervisor's log
//! and the VMs' consoles, through `ConsoleMux`), COM2 and the debug port (the record stream,
//! through the `Exporter`), CPUID, and the shared drive (`super::ata`).
//!
//! COM1 is a `static`: the logger and the panic handler reach it from anywhere.

use core::fmt::{self, Write};

use carousel_kernel::console::{ConsoleMux, PREFIX};
use carousel_kernel::export::Exporter;
use carousel_kernel::feed::{FeedClock, LineStatus};
use carousel_kernel::host::Host;
use spin::Mutex;

use super::arch;
use super::serial::{Serial, BAUD};

/// Base port of COM1.
pub const COM1: u16 = 0x3F8;
/// Base port of COM2.
pub const COM2: u16 = 0x2F8;
/// The emulators' debug port (Bochs `port_e9_hack`, QEMU `-debugcon`): full-rate traces go
/// here, with no baud limit.
pub const DEBUG_PORT: u16 = 0xE9;

/// COM1: the UART and what waits for it.
struct Com1 {
    serial: Serial,
    mux: ConsoleMux,
    /// Text goes through the mux (the heap is up); before that, straight to the UART.
    buffered: bool,
}

static COM1_LINE: Mutex<Com1> = Mutex::new(Com1 {
    serial: Serial::none(),
    mux: ConsoleMux::new(),
    buffered: false,
});

impl Com1 {
    fn feed(&mut self) {
        let serial = &mut self.serial;
        self.mux.drain(|bytes| serial.send(bytes));
    }
}

impl Write for Com1 {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if self.buffered {
            self.mux.log(text);
            self.feed();
        } else {
            self.serial.send_all(text.as_bytes());
        }
        Ok(())
    }
}

/// Opens COM1 and installs the logger. Without a working COM1 the hypervisor runs on silently
/// (the COM2 records still tell the host what happened).
pub fn init_console() {
    // SAFETY: COM1 is a standard port owned by the hypervisor; nothing else drives it.
    COM1_LINE.lock().serial = unsafe { Serial::open(COM1) };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Switches COM1 to buffered output (needs the heap), with a queue for each VM.
pub fn start_buffering<'a>(names: impl IntoIterator<Item = &'a str>) {
    let mut com1 = COM1_LINE.lock();
    com1.mux.set_vms(names);
    com1.buffered = true;
}

/// Writes formatted text to COM1 as it is.
pub fn write_fmt(arguments: fmt::Arguments<'_>) {
    let _ = COM1_LINE.lock().write_fmt(arguments);
}

/// Sends everything COM1 holds, waiting for the UART.
pub fn flush_console() {
    loop {
        let mut com1 = COM1_LINE.lock();
        com1.feed();
        if !com1.mux.pending() {
            return;
        }
        drop(com1);
        core::hint::spin_loop();
    }
}

/// Lets the panic handler print even if the panic struck while COM1 was locked: the lock is
/// taken over and output goes straight to the UART after what is buffered.
pub fn take_over_for_panic() {
    if COM1_LINE.is_locked() {
        // SAFETY: called only from the panic handler on the one CPU: whoever held the lock will
        // never run again, so taking it over cannot race.
        unsafe { COM1_LINE.force_unlock() };
    }
    flush_console();
    COM1_LINE.lock().buffered = false;
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match record.level() {
            log::Level::Info => write_fmt(format_args!("{PREFIX}{}\n", record.args())),
            level => write_fmt(format_args!(
                "{PREFIX}{}: {}\n",
                level.as_str().to_ascii_lowercase(),
                record.args()
            )),
        }
    }

    fn flush(&self) {}
}

/// The machine as the run loop sees it.
#[derive(Debug)]
pub struct HwHost {
    exporter: Exporter,
    com2: Serial,
    /// When COM1 and COM2 next want bytes.
    com1_clock: FeedClock,
    com2_clock: FeedClock,
    /// The shared drive, once found.
    drive: Option<super::ata::AtaDrive>,
}

impl HwHost {
    /// Opens COM2 and allocates the exporter (the heap must be up).
    pub fn new() -> Self {
        let mut exporter = Exporter::new();
        exporter.reserve();
        // SAFETY: COM2 is a standard port owned by the hypervisor; nothing else drives it.
        let com2 = unsafe { Serial::open(COM2) };
        Self {
            exporter,
            com2,
            com1_clock: FeedClock::for_uart(u64::from(BAUD), 1_000_000_000),
            com2_clock: FeedClock::for_uart(u64::from(BAUD), 1_000_000_000),
            drive: None,
        }
    }

    /// The shared drive the VMs' extents live on.
    pub fn set_drive(&mut self, drive: super::ata::AtaDrive) {
        self.drive = Some(drive);
    }

    /// The TSC rate the run uses: the feed clocks' first guess follows from it.
    pub fn set_tsc_hz(&mut self, tsc_hz: u64) {
        self.com1_clock = FeedClock::for_uart(u64::from(BAUD), tsc_hz);
        self.com2_clock = FeedClock::for_uart(u64::from(BAUD), tsc_hz);
    }
}

/// Feeds one line if bytes wait for it, and tells its clock what the UART was doing.
fn feed_line(
    clock: &mut FeedClock,
    now: u64,
    serial: &mut Serial,
    waiting: bool,
    feed: impl FnOnce(&mut Serial) -> bool,
) {
    if !waiting {
        clock.fed(now, LineStatus::Draining, false);
        return;
    }
    let status = serial.status();
    let still_waiting = feed(serial);
    clock.fed(now, status, still_waiting);
}

impl Host for HwHost {
    fn now(&mut self) -> u64 {
        arch::rdtsc()
    }

    fn exporter(&mut self) -> &mut Exporter {
        &mut self.exporter
    }

    fn console_has_room(&mut self, vm: u16) -> bool {
        COM1_LINE.lock().mux.vm_has_room(vm)
    }

    fn console_line(&mut self, vm: u16, line: &[u8]) {
        let mut com1 = COM1_LINE.lock();
        com1.mux.vm_line(vm, line);
        com1.feed();
    }

    fn feed_serial(&mut self) {
        let now = arch::rdtsc();
        {
            let mut com1 = COM1_LINE.lock();
            let Com1 { serial, mux, .. } = &mut *com1;
            let waiting = mux.pending();
            feed_line(&mut self.com1_clock, now, serial, waiting, |serial| {
                mux.drain(|bytes| serial.send(bytes));
                mux.pending()
            });
        }
        if !self.com2.is_present() {
            self.exporter.discard();
        }
        let exporter = &mut self.exporter;
        let waiting = exporter.queued_bytes() > 0;
        feed_line(&mut self.com2_clock, now, &mut self.com2, waiting, |com2| {
            exporter.drain(|bytes| com2.send(bytes));
            exporter.queued_bytes() > 0
        });
        self.exporter.drain_debug(|bytes| {
            for &byte in bytes {
                // SAFETY: port 0xE9 is the emulator's debug port; writing it has no other effect.
                unsafe { arch::outb(DEBUG_PORT, byte) };
            }
        });
    }

    fn next_feed(&mut self) -> Option<u64> {
        match (self.com1_clock.next(), self.com2_clock.next()) {
            (Some(com1), Some(com2)) => Some(com1.min(com2)),
            (com1, com2) => com1.or(com2),
        }
    }

    fn flush_serial(&mut self) {
        loop {
            self.feed_serial();
            if !self.exporter.pending() && !COM1_LINE.lock().mux.pending() {
                break;
            }
            core::hint::spin_loop();
        }
        // Out of the UARTs' FIFOs too: "flushed" means on the line, so what is sent next
        // (RunEnd after the console's last bytes) arrives after it.
        // SAFETY: COM1 and COM2 are the hypervisor's own UARTs.
        unsafe {
            arch::drain_uart(COM1);
            arch::drain_uart(COM2);
        }
    }

    fn poll_input(&mut self) -> Option<u8> {
        COM1_LINE.lock().serial.receive()
    }

    fn wait(&mut self, _deadline: u64) {
        core::hint::spin_loop();
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        arch::cpuid(leaf, subleaf)
    }

    fn drive(&mut self) -> Option<&mut dyn carousel_kernel::disk::Drive> {
        self.drive
            .as_mut()
            .map(|drive| drive as &mut dyn carousel_kernel::disk::Drive)
    }
}
