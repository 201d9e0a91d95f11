//! COM1: the human-readable stream. The hypervisor's log lines start with `[carousel] `, each
//! VM's console lines with `[<vm name>] `; the host tool relies on both prefixes.

use core::fmt::{self, Write};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// Base port of COM1.
pub const COM1: u16 = 0x3F8;

static PORT: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Prefix of the hypervisor's own lines.
pub const PREFIX: &str = "[carousel] ";

struct Com1Writer<'a>(&'a mut Uart16550<PioBackend>);

impl Write for Com1Writer<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.send_bytes_exact(text.as_bytes());
        Ok(())
    }
}

/// Initialises COM1 and installs the logger. Without a working COM1 the hypervisor runs on
/// silently (the COM2 records still tell the host what happened).
pub fn init() {
    // SAFETY: COM1 is a standard port owned by the hypervisor; nothing else drives it.
    if let Ok(mut port) = unsafe { Uart16550::new_port(COM1) } {
        if port.init(Config::default()).is_ok() {
            *PORT.lock() = Some(port);
        }
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Writes formatted text to COM1 as it is.
pub fn write_fmt(arguments: fmt::Arguments<'_>) {
    if let Some(port) = PORT.lock().as_mut() {
        let _ = Com1Writer(port).write_fmt(arguments);
    }
}

/// Writes one console line of a VM, prefixed with its name. Bytes that are not printable
/// ASCII are shown as `\xNN` so a guest cannot forge another VM's prefix or control the
/// host terminal.
pub fn vm_line(name: &str, line: &[u8]) {
    let mut guard = PORT.lock();
    let Some(port) = guard.as_mut() else { return };
    let mut writer = Com1Writer(port);
    let _ = write!(writer, "[{name}] ");
    for &byte in line {
        let _ = if (0x20..0x7F).contains(&byte) || byte == b'\t' {
            writer.write_char(char::from(byte))
        } else {
            write!(writer, "\\x{byte:02x}")
        };
    }
    let _ = writer.write_str("\n");
}

/// Lets the panic handler print even if the panic struck while COM1 was locked.
pub fn unlock_for_panic() {
    if PORT.is_locked() {
        // SAFETY: called only from the panic handler on the one CPU: whoever held the lock will
        // never run again, so taking it over cannot race.
        unsafe { PORT.force_unlock() };
    }
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
