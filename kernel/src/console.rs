//! COM1: the human-readable stream. The hypervisor's log lines start with `[carousel] `, each
//! VM's console lines with `[<vm name>] `; the host tool relies on both prefixes.
//!
//! Once the heap is up ([`start_buffering`]), text goes into a ring that [`drain`] sends
//! without waiting, so a chatty guest does not stall the scheduler on the UART's baud rate.
//! Console text is never dropped: when the ring is full, the writer waits for room.

use core::fmt::{self, Write};

use spin::Mutex;

use crate::serial::{TxRing, RING_BYTES};

/// Base port of COM1.
pub const COM1: u16 = 0x3F8;
/// Prefix of the hypervisor's own lines.
pub const PREFIX: &str = "[carousel] ";

struct Console {
    tx: TxRing,
    buffered: bool,
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    tx: TxRing::new(),
    buffered: false,
});

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if !self.buffered {
            if let Some(port) = self.tx.port() {
                port.send_bytes_exact(text.as_bytes());
            }
            return Ok(());
        }
        // Never dropped: wait for room, a ring's worth at a time.
        for chunk in text.as_bytes().chunks(RING_BYTES) {
            self.tx.wait_for_room(chunk.len());
            self.tx.push(chunk);
        }
        Ok(())
    }
}

/// Initialises COM1 and installs the logger. Without a working COM1 the hypervisor runs on
/// silently (the COM2 records still tell the host what happened).
pub fn init() {
    // SAFETY: COM1 is a standard port owned by the hypervisor; nothing else drives it.
    unsafe { CONSOLE.lock().tx.open(COM1) };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Switches to buffered output (needs the heap).
pub fn start_buffering() {
    let mut console = CONSOLE.lock();
    console.tx.reserve();
    console.buffered = true;
}

/// Sends what COM1 takes now; returns at once.
pub fn drain() {
    let mut console = CONSOLE.lock();
    if !console.tx.is_empty() {
        console.tx.send_available();
    }
}

/// One byte of input from the host, if one waits on COM1.
pub fn poll_input() -> Option<u8> {
    CONSOLE.lock().tx.port()?.try_receive_byte().ok()
}

/// Sends everything buffered, waiting for the UART.
pub fn flush() {
    loop {
        let mut console = CONSOLE.lock();
        console.tx.send_available();
        if console.tx.is_empty() {
            return;
        }
        drop(console);
        core::hint::spin_loop();
    }
}

/// Writes formatted text to COM1 as it is.
pub fn write_fmt(arguments: fmt::Arguments<'_>) {
    let mut console = CONSOLE.lock();
    let _ = console.write_fmt(arguments);
    console.tx.send_available();
}

/// Writes one console line of a VM, prefixed with its name. Bytes that are not printable
/// ASCII are shown as `\xNN` so a guest cannot forge another VM's prefix or control the
/// host terminal.
pub fn vm_line(name: &str, line: &[u8]) {
    let mut console = CONSOLE.lock();
    let _ = write!(console, "[{name}] ");
    for &byte in line {
        let _ = if (0x20..0x7F).contains(&byte) || byte == b'\t' {
            console.write_char(char::from(byte))
        } else {
            write!(console, "\\x{byte:02x}")
        };
    }
    let _ = console.write_str("\n");
    console.tx.send_available();
}

/// Lets the panic handler print even if the panic struck while COM1 was locked: the lock is
/// taken over and output goes straight to the UART after what is buffered.
pub fn take_over_for_panic() {
    if CONSOLE.is_locked() {
        // SAFETY: called only from the panic handler on the one CPU: whoever held the lock will
        // never run again, so taking it over cannot race.
        unsafe { CONSOLE.force_unlock() };
    }
    flush();
    CONSOLE.lock().buffered = false;
}

/// `println!` for the hypervisor's own lines (no prefix added).
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
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
