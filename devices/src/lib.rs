//! Carousel's device models: pure state machines behind a port/MMIO bus.
//!
//! What is here:
//! - [`bus`]: routes port-I/O and MMIO addresses to the device handle mapped there.
//! - [`uart`]: a 16550A UART for a guest's COM port.
//! - [`line_buffer`]: cuts a guest's serial output into lines for console forwarding.
//!
//! What is not: anything that touches real hardware or guest memory. A model changes state on
//! `read` / `write`; transmitted bytes and interrupt-line changes leave through small traits the
//! hypervisor implements (STYLE §5), so every model is unit-tested and fuzzed on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bus;
pub mod line_buffer;
pub mod uart;

pub use bus::{Bus, BusAddress, BusError, BusRange, MmioBus, PortBus};
pub use line_buffer::LineBuffer;
pub use uart::{InterruptLine, SerialSink, Uart16550};
