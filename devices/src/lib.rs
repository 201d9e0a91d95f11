//! Carousel's device models: pure state machines behind a port/MMIO bus.
//!
//! What is here, everything XV6-CONTRACT.md says an xv6 guest touches:
//! - [`bus`]: routes port-I/O and MMIO addresses to the device handle mapped there.
//! - [`uart`]: a 16550A UART for a guest's COM port; [`line_buffer`] cuts its output into lines.
//! - [`ide`]: the primary IDE channel in PIO mode, the VM's disk as the slave.
//! - [`lapic`] and [`ioapic`]: the local APIC (timer on host time, IRR/ISR, EOI) and the I/O
//!   APIC; [`interrupts`] routes IRQ edges between them and says which vectors are injectable.
//! - [`legacy`]: 8259 masks, CMOS, the i8042 and the CRTC cursor registers.
//! - [`mptable`]: the BIOS data area words and the MP tables for one CPU.
//!
//! What is not: anything that touches real hardware or guest memory. A model changes state on
//! `read` / `write`; transmitted bytes and interrupt-line changes leave through small traits the
//! hypervisor implements (STYLE §5), so every model is unit-tested and fuzzed on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bus;
pub mod ide;
pub mod interrupts;
pub mod ioapic;
pub mod lapic;
pub mod legacy;
pub mod line_buffer;
pub mod mptable;
pub mod uart;

pub use bus::{Bus, BusAddress, BusError, BusRange, MmioBus, PortBus};
pub use ide::{DataWidth, DiskImageError, DiskIo, DiskIoKind, DiskIoSink, IdeChannel};
pub use interrupts::{
    deliver_irq, is_injectable, programmed_vectors, Destination, IrqDelivery, VectorSet,
};
pub use ioapic::{IoApic, IoApicCounters, RedirectionEntry, Route};
pub use lapic::{
    AcknowledgeError, Lapic, LapicCounters, RaiseError, TimerClock, TimerClockError, TimerFire,
};
pub use legacy::{Cmos, CrtcCursor, DateTime, Pic8259Masks, PicChip, I8042};
pub use line_buffer::LineBuffer;
pub use mptable::{bda_words, mp_tables, BdaWord, MpTableError, MpTables};
pub use uart::{InterruptLine, LineLevel, SerialSink, Uart16550};

#[cfg(test)]
mod testing;
