//! A 16550A UART for a guest's COM port: the registers, the divisor latch, a bounded receive queue
//! and interrupt identification, after the National Semiconductor PC16550D datasheet.
//!
//! Simplifications, each visible to a guest only as "a very fast, well-behaved UART":
//! - Transmission is instantaneous: a byte written to THR leaves through [`SerialSink`] at once, so
//!   LSR always shows THRE | TEMT. xv6 polls THRE and expects LSR to read 0x60 or 0x61.
//! - Received bytes wait in one bounded queue ([`RX_QUEUE_CAPACITY`]) whether or not FCR enables
//!   the FIFOs; the received-data interrupt holds while any byte waits (no trigger levels, no
//!   character timeout). Bytes that find the queue full are dropped, counted and flagged in LSR.OE.
//! - MCR.OUT2 does not gate the interrupt output: xv6 writes MCR = 0 and still expects IRQ 4.
//! - LCR and the divisor latch are stored and read back but do not change the data.
//! - Outside loopback the modem inputs read as a connected, ready line (DCD | DSR | CTS) that never
//!   changes; in loopback they follow the MCR outputs as the datasheet wires them.
//!
//! The interrupt output leaves through [`InterruptLine`]: the model reports every change of level,
//! so an edge-triggered interrupt controller injects on `set_level(true)`.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

// Register offsets from the base port. With LCR.DLAB set, offsets 0 and 1 reach the divisor latch.

/// Receiver Buffer Register (read, DLAB = 0).
pub const RBR: u8 = 0;
/// Transmitter Holding Register (write, DLAB = 0).
pub const THR: u8 = 0;
/// Divisor Latch, least significant byte (DLAB = 1).
pub const DLL: u8 = 0;
/// Interrupt Enable Register (DLAB = 0).
pub const IER: u8 = 1;
/// Divisor Latch, most significant byte (DLAB = 1).
pub const DLM: u8 = 1;
/// Interrupt Identification Register (read).
pub const IIR: u8 = 2;
/// FIFO Control Register (write).
pub const FCR: u8 = 2;
/// Line Control Register.
pub const LCR: u8 = 3;
/// Modem Control Register.
pub const MCR: u8 = 4;
/// Line Status Register (read; writes are ignored).
pub const LSR: u8 = 5;
/// Modem Status Register (read; writes are ignored).
pub const MSR: u8 = 6;
/// Scratch Register.
pub const SCR: u8 = 7;
/// Number of register offsets the UART decodes: the width of its bus range.
pub const REGISTER_COUNT: u16 = 8;

/// IER: Enable Received Data Available Interrupt.
pub const IER_ERBFI: u8 = 1 << 0;
/// IER: Enable Transmitter Holding Register Empty Interrupt.
pub const IER_ETBEI: u8 = 1 << 1;
/// IER: Enable Receiver Line Status Interrupt.
pub const IER_ELSI: u8 = 1 << 2;
/// IER: Enable Modem Status Interrupt.
pub const IER_EDSSI: u8 = 1 << 3;
/// IER: the bits that exist; bits 7:4 read as 0.
const IER_MASK: u8 = 0x0F;

/// IIR: no interrupt pending (bit 0 is active low).
pub const IIR_NO_INTERRUPT: u8 = 0x01;
/// IIR: receiver line status, priority 1 (highest); cleared by reading LSR.
pub const IIR_RECEIVER_LINE_STATUS: u8 = 0x06;
/// IIR: received data available, priority 2; cleared by reading RBR until the queue is empty.
pub const IIR_RECEIVED_DATA_AVAILABLE: u8 = 0x04;
/// IIR: transmitter holding register empty, priority 3; cleared by reading IIR or writing THR.
pub const IIR_THR_EMPTY: u8 = 0x02;
/// IIR: modem status, priority 4 (lowest); cleared by reading MSR.
pub const IIR_MODEM_STATUS: u8 = 0x00;
/// IIR bits 7:6: FIFOs enabled (FCR bit 0 set).
pub const IIR_FIFOS_ENABLED: u8 = 0xC0;

/// FCR: FIFO Enable. Changing it clears the receive queue.
pub const FCR_FIFO_ENABLE: u8 = 1 << 0;
/// FCR: Receiver FIFO Reset (self-clearing). The transmit side has no FIFO to reset.
pub const FCR_RCVR_FIFO_RESET: u8 = 1 << 1;

/// LCR: Divisor Latch Access Bit.
pub const LCR_DLAB: u8 = 1 << 7;

/// MCR: Data Terminal Ready output (DSR input in loopback).
pub const MCR_DTR: u8 = 1 << 0;
/// MCR: Request To Send output (CTS input in loopback).
pub const MCR_RTS: u8 = 1 << 1;
/// MCR: OUT1 output (RI input in loopback).
pub const MCR_OUT1: u8 = 1 << 2;
/// MCR: OUT2 output (DCD input in loopback); does not gate the interrupt here.
pub const MCR_OUT2: u8 = 1 << 3;
/// MCR: loopback; transmitted bytes return to the receiver instead of the line.
pub const MCR_LOOP: u8 = 1 << 4;
/// MCR: the bits that exist; bits 7:5 read as 0.
const MCR_MASK: u8 = 0x1F;

/// LSR: Data Ready, a received byte waits in RBR.
pub const LSR_DR: u8 = 1 << 0;
/// LSR: Overrun Error, a received byte was dropped; cleared by reading LSR.
pub const LSR_OE: u8 = 1 << 1;
/// LSR: Transmitter Holding Register Empty.
pub const LSR_THRE: u8 = 1 << 5;
/// LSR: Transmitter Empty (THR and shift register).
pub const LSR_TEMT: u8 = 1 << 6;

/// MSR: Delta Clear To Send.
pub const MSR_DCTS: u8 = 1 << 0;
/// MSR: Delta Data Set Ready.
pub const MSR_DDSR: u8 = 1 << 1;
/// MSR: Trailing Edge Ring Indicator.
pub const MSR_TERI: u8 = 1 << 2;
/// MSR: Delta Data Carrier Detect.
pub const MSR_DDCD: u8 = 1 << 3;
/// MSR: Clear To Send.
pub const MSR_CTS: u8 = 1 << 4;
/// MSR: Data Set Ready.
pub const MSR_DSR: u8 = 1 << 5;
/// MSR: Ring Indicator.
pub const MSR_RI: u8 = 1 << 6;
/// MSR: Data Carrier Detect.
pub const MSR_DCD: u8 = 1 << 7;

/// Bytes the receive queue holds; input beyond this is dropped and counted.
pub const RX_QUEUE_CAPACITY: usize = 4096;
/// Divisor latch at reset: 12, i.e. 9600 baud from the PC's 1.8432 MHz clock (the datasheet
/// leaves it undefined).
pub const RESET_DIVISOR: u16 = 12;
/// What a read of an offset past [`SCR`] returns: nothing drives the data bus.
pub const OPEN_BUS: u8 = 0xFF;

/// Where the bytes a guest transmits go (outside loopback).
pub trait SerialSink {
    /// Takes one byte the guest wrote to THR.
    fn transmit(&mut self, byte: u8);
}

impl SerialSink for Vec<u8> {
    fn transmit(&mut self, byte: u8) {
        self.push(byte);
    }
}

/// The UART's interrupt output, wired to the guest's interrupt controller.
pub trait InterruptLine {
    /// The output changed to `asserted`. Called only on a change, so `true` is a rising edge.
    fn set_level(&mut self, asserted: bool);
}

/// The level a device last put on its interrupt line, so the line hears only changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineLevel(bool);

impl LineLevel {
    /// A line not asserted (power-on).
    pub const LOW: Self = Self(false);

    /// Drives the line to `level`, telling `irq` only when that is a change.
    pub fn drive(&mut self, level: bool, irq: &mut impl InterruptLine) {
        if level != self.0 {
            self.0 = level;
            irq.set_level(level);
        }
    }

    /// True while the line is asserted.
    pub fn is_high(self) -> bool {
        self.0
    }
}

/// One 16550A UART: the whole state, with no I/O of its own.
#[derive(Debug)]
pub struct Uart16550 {
    /// IER.
    interrupt_enable: u8,
    /// LCR.
    line_control: u8,
    /// MCR.
    modem_control: u8,
    /// SCR.
    scratch: u8,
    /// DLM:DLL.
    divisor: u16,
    /// FCR bit 0, reported in IIR bits 7:6.
    fifos_enabled: bool,
    /// THR has emptied since IIR last reported it or THR was last written.
    thr_empty_pending: bool,
    /// LSR.OE, latched until LSR is read.
    overrun: bool,
    /// MSR bits 3:0, latched until MSR is read.
    modem_status_deltas: u8,
    /// Received bytes not yet read from RBR; at most [`RX_QUEUE_CAPACITY`].
    receive_queue: VecDeque<u8>,
    /// Received bytes dropped because the queue was full.
    dropped_input_bytes: u64,
    /// The level last reported through [`InterruptLine::set_level`].
    /// The level last put on the interrupt line.
    line: LineLevel,
}

impl Uart16550 {
    /// A UART in its reset state: interrupts disabled, DLAB clear, nothing received.
    pub const fn new() -> Self {
        Self {
            interrupt_enable: 0,
            line_control: 0,
            modem_control: 0,
            scratch: 0,
            divisor: RESET_DIVISOR,
            fifos_enabled: false,
            thr_empty_pending: false,
            overrun: false,
            modem_status_deltas: 0,
            receive_queue: VecDeque::new(),
            dropped_input_bytes: 0,
            line: LineLevel::LOW,
        }
    }

    /// The guest reads the register at `offset` from the base port.
    pub fn read(&mut self, offset: u8, irq: &mut impl InterruptLine) -> u8 {
        let value = match offset {
            DLL if self.divisor_latch_selected() => self.divisor.to_le_bytes()[0],
            DLM if self.divisor_latch_selected() => self.divisor.to_le_bytes()[1],
            // An empty receiver reads as 0.
            RBR => self.receive_queue.pop_front().unwrap_or(0),
            IER => self.interrupt_enable,
            IIR => {
                let identified = self.pending_interrupt();
                // Reading IIR clears a THR-empty interrupt, but only when IIR reports it.
                if identified == Some(IIR_THR_EMPTY) {
                    self.thr_empty_pending = false;
                }
                let fifos = if self.fifos_enabled {
                    IIR_FIFOS_ENABLED
                } else {
                    0
                };
                identified.unwrap_or(IIR_NO_INTERRUPT) | fifos
            }
            LCR => self.line_control,
            MCR => self.modem_control,
            LSR => {
                let status = self.line_status();
                self.overrun = false;
                status
            }
            MSR => {
                let status = self.modem_inputs() | self.modem_status_deltas;
                self.modem_status_deltas = 0;
                status
            }
            SCR => self.scratch,
            _ => OPEN_BUS,
        };
        self.update_interrupt_line(irq);
        value
    }

    /// The guest writes `value` to the register at `offset` from the base port.
    pub fn write(
        &mut self,
        offset: u8,
        value: u8,
        sink: &mut impl SerialSink,
        irq: &mut impl InterruptLine,
    ) {
        match offset {
            DLL if self.divisor_latch_selected() => {
                self.divisor = u16::from_le_bytes([value, self.divisor.to_le_bytes()[1]]);
            }
            DLM if self.divisor_latch_selected() => {
                self.divisor = u16::from_le_bytes([self.divisor.to_le_bytes()[0], value]);
            }
            THR => {
                // Writing THR clears the THR-empty interrupt; the byte leaves at once, so THR is
                // empty again and the interrupt re-arms. Report the fall before the rise, so an
                // edge-triggered controller sees a fresh edge for every byte, as on hardware.
                self.thr_empty_pending = false;
                self.update_interrupt_line(irq);
                if self.modem_control & MCR_LOOP != 0 {
                    self.receive(&[value]);
                } else {
                    sink.transmit(value);
                }
                self.thr_empty_pending = true;
            }
            IER => {
                // Enabling ETBEI while THR is empty (always, here) raises THR-empty at once.
                if value & IER_ETBEI != 0 && self.interrupt_enable & IER_ETBEI == 0 {
                    self.thr_empty_pending = true;
                }
                self.interrupt_enable = value & IER_MASK;
            }
            FCR => {
                let fifos_enabled = value & FCR_FIFO_ENABLE != 0;
                if fifos_enabled != self.fifos_enabled || value & FCR_RCVR_FIFO_RESET != 0 {
                    self.receive_queue.clear();
                }
                self.fifos_enabled = fifos_enabled;
            }
            LCR => self.line_control = value,
            MCR => {
                let before = self.modem_inputs();
                self.modem_control = value & MCR_MASK;
                let after = self.modem_inputs();
                // Each delta bit sits four bits below its input (DCTS/CTS, DDSR/DSR, TERI/RI,
                // DDCD/DCD). CTS, DSR and DCD report any change; RI only its trailing edge.
                let changed = (before ^ after) & (MSR_CTS | MSR_DSR | MSR_DCD);
                let ri_fell = before & !after & MSR_RI;
                self.modem_status_deltas |= (changed | ri_fell) >> 4;
            }
            SCR => self.scratch = value,
            // LSR and MSR writes (factory test only) are ignored; offsets past SCR decode nothing.
            _ => {}
        }
        self.update_interrupt_line(irq);
    }

    /// Bytes arrive on the line for the guest. Those that find the queue full are dropped and
    /// counted, and LSR.OE is set.
    pub fn push_input(&mut self, bytes: &[u8], irq: &mut impl InterruptLine) {
        self.receive(bytes);
        self.update_interrupt_line(irq);
    }

    /// The interrupt output: some enabled interrupt is pending.
    pub fn irq_level(&self) -> bool {
        self.pending_interrupt().is_some()
    }

    /// Received bytes dropped so far because the receive queue was full.
    pub fn dropped_input_bytes(&self) -> u64 {
        self.dropped_input_bytes
    }

    fn divisor_latch_selected(&self) -> bool {
        self.line_control & LCR_DLAB != 0
    }

    fn receive(&mut self, bytes: &[u8]) {
        let room = RX_QUEUE_CAPACITY - self.receive_queue.len();
        let (accepted, dropped) = bytes.split_at(bytes.len().min(room));
        self.receive_queue.extend(accepted);
        if !dropped.is_empty() {
            self.overrun = true;
            self.dropped_input_bytes += dropped.len() as u64;
        }
    }

    fn line_status(&self) -> u8 {
        let mut status = LSR_THRE | LSR_TEMT;
        if !self.receive_queue.is_empty() {
            status |= LSR_DR;
        }
        if self.overrun {
            status |= LSR_OE;
        }
        status
    }

    /// MSR bits 7:4.
    fn modem_inputs(&self) -> u8 {
        if self.modem_control & MCR_LOOP == 0 {
            return MSR_DCD | MSR_DSR | MSR_CTS;
        }
        [
            (MCR_DTR, MSR_DSR),
            (MCR_RTS, MSR_CTS),
            (MCR_OUT1, MSR_RI),
            (MCR_OUT2, MSR_DCD),
        ]
        .into_iter()
        .filter(|&(output, _)| self.modem_control & output != 0)
        .fold(0, |inputs, (_, input)| inputs | input)
    }

    /// The IIR identification of the highest-priority enabled interrupt pending, if any.
    fn pending_interrupt(&self) -> Option<u8> {
        let enabled = |bit: u8| self.interrupt_enable & bit != 0;
        if enabled(IER_ELSI) && self.overrun {
            Some(IIR_RECEIVER_LINE_STATUS)
        } else if enabled(IER_ERBFI) && !self.receive_queue.is_empty() {
            Some(IIR_RECEIVED_DATA_AVAILABLE)
        } else if enabled(IER_ETBEI) && self.thr_empty_pending {
            Some(IIR_THR_EMPTY)
        } else if enabled(IER_EDSSI) && self.modem_status_deltas != 0 {
            Some(IIR_MODEM_STATUS)
        } else {
            None
        }
    }

    fn update_interrupt_line(&mut self, irq: &mut impl InterruptLine) {
        self.line.drive(self.irq_level(), irq);
    }
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    use crate::testing::RecordingIrq as Irq;

    /// A UART, its output and its interrupt line.
    #[derive(Debug, Default)]
    struct Rig {
        uart: Uart16550,
        output: Vec<u8>,
        irq: Irq,
    }

    impl Rig {
        fn read(&mut self, offset: u8) -> u8 {
            self.uart.read(offset, &mut self.irq)
        }

        fn write(&mut self, offset: u8, value: u8) {
            self.uart
                .write(offset, value, &mut self.output, &mut self.irq);
        }

        fn push_input(&mut self, bytes: &[u8]) {
            self.uart.push_input(bytes, &mut self.irq);
        }

        /// The register writes of xv6's uartinit, in order (XV6-CONTRACT §6).
        fn xv6_init() -> Self {
            let mut rig = Self::default();
            rig.write(FCR, 0x00);
            rig.write(LCR, LCR_DLAB);
            rig.write(DLL, 12);
            rig.write(DLM, 0);
            rig.write(LCR, 0x03);
            rig.write(MCR, 0x00);
            rig.write(IER, IER_ERBFI);
            rig
        }
    }

    #[test]
    fn xv6_init_finds_the_uart_and_transmits() {
        let mut rig = Rig::xv6_init();
        assert_eq!(rig.read(LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(rig.read(IIR), IIR_NO_INTERRUPT);
        assert_eq!(rig.read(RBR), 0);
        for &byte in b"xv6...\n" {
            assert_ne!(rig.read(LSR) & LSR_THRE, 0);
            rig.write(THR, byte);
        }
        assert_eq!(rig.output, b"xv6...\n");
        assert_eq!(rig.irq.raises, 0, "IER enables received data only");
    }

    #[test]
    fn input_raises_the_interrupt_once_and_draining_clears_it() {
        let mut rig = Rig::xv6_init();
        rig.push_input(b"ls");
        assert_eq!(rig.read(LSR), LSR_THRE | LSR_TEMT | LSR_DR);
        assert!(rig.irq.level);
        rig.push_input(b"\n");
        assert_eq!(rig.irq.raises, 1, "raised on empty to non-empty only");
        assert_eq!(rig.read(IIR), IIR_RECEIVED_DATA_AVAILABLE);
        let mut received = Vec::new();
        while rig.read(LSR) & LSR_DR != 0 {
            received.push(rig.read(RBR));
        }
        assert_eq!(received, b"ls\n");
        assert!(!rig.irq.level);
        assert_eq!(rig.read(IIR), IIR_NO_INTERRUPT);
        rig.push_input(b"x");
        assert_eq!(rig.irq.raises, 2, "raised again once the queue refills");
    }

    #[test]
    fn input_without_erbfi_raises_nothing() {
        let mut rig = Rig::default();
        rig.push_input(b"x");
        assert_eq!(rig.read(LSR) & LSR_DR, LSR_DR);
        assert_eq!(rig.irq.raises, 0);
        rig.write(IER, IER_ERBFI);
        assert!(
            rig.irq.level,
            "enabling ERBFI with data waiting raises the line"
        );
    }

    #[test]
    fn overflow_is_counted_flagged_and_bounded() {
        let mut rig = Rig::xv6_init();
        rig.write(IER, IER_ERBFI | IER_ELSI);
        rig.push_input(&vec![b'a'; RX_QUEUE_CAPACITY + 10]);
        assert_eq!(rig.uart.receive_queue.len(), RX_QUEUE_CAPACITY);
        assert_eq!(rig.uart.dropped_input_bytes(), 10);
        assert_eq!(rig.read(IIR), IIR_RECEIVER_LINE_STATUS);
        assert_eq!(rig.read(LSR), LSR_THRE | LSR_TEMT | LSR_DR | LSR_OE);
        assert_eq!(
            rig.read(LSR),
            LSR_THRE | LSR_TEMT | LSR_DR,
            "reading LSR clears OE"
        );
        assert_eq!(rig.read(IIR), IIR_RECEIVED_DATA_AVAILABLE);
    }

    #[test]
    fn divisor_latch_round_trips_behind_dlab() {
        let mut rig = Rig::default();
        rig.write(IER, IER_ERBFI);
        rig.write(LCR, LCR_DLAB | 0x03);
        assert_eq!((rig.read(DLL), rig.read(DLM)), (12, 0), "reset divisor");
        rig.write(DLL, 0x34);
        rig.write(DLM, 0x12);
        assert_eq!((rig.read(DLL), rig.read(DLM)), (0x34, 0x12));
        rig.write(LCR, 0x03);
        assert_eq!(rig.read(IER), IER_ERBFI, "IER untouched by divisor writes");
        assert!(rig.output.is_empty(), "DLL writes transmit nothing");
        rig.write(LCR, LCR_DLAB);
        assert_eq!((rig.read(DLL), rig.read(DLM)), (0x34, 0x12));
    }

    #[test]
    fn thr_empty_interrupt_follows_16550_rules() {
        let mut rig = Rig::default();
        rig.write(IER, IER_ETBEI);
        assert!(
            rig.irq.level,
            "enabling ETBEI with THR empty raises at once"
        );
        assert_eq!(rig.read(IIR), IIR_THR_EMPTY);
        assert!(!rig.irq.level, "reading IIR clears THR empty");
        assert_eq!(rig.read(IIR), IIR_NO_INTERRUPT);
        rig.write(THR, b'a');
        rig.write(THR, b'b');
        assert_eq!(
            rig.irq.raises, 3,
            "every transmitted byte gives a fresh edge"
        );
        assert_eq!(rig.output, b"ab");
        rig.write(IER, IER_ETBEI);
        assert_eq!(rig.irq.raises, 3, "rewriting ETBEI does not re-raise");
    }

    #[test]
    fn iir_reports_the_highest_priority_interrupt() {
        let mut rig = Rig::default();
        rig.write(IER, IER_ERBFI | IER_ETBEI | IER_ELSI | IER_EDSSI);
        rig.write(MCR, MCR_LOOP | MCR_RTS);
        rig.push_input(&vec![0; RX_QUEUE_CAPACITY + 1]);
        assert_eq!(rig.read(IIR), IIR_RECEIVER_LINE_STATUS);
        rig.read(LSR);
        assert_eq!(rig.read(IIR), IIR_RECEIVED_DATA_AVAILABLE);
        rig.write(FCR, FCR_RCVR_FIFO_RESET);
        assert_eq!(rig.read(IIR), IIR_THR_EMPTY);
        assert_eq!(rig.read(IIR), IIR_MODEM_STATUS);
        assert_eq!(
            rig.read(MSR),
            MSR_CTS | MSR_DDSR | MSR_DDCD,
            "DSR and DCD dropped"
        );
        assert_eq!(rig.read(IIR), IIR_NO_INTERRUPT);
        assert!(!rig.irq.level);
    }

    #[test]
    fn loopback_returns_bytes_and_wires_modem_lines() {
        let mut rig = Rig::xv6_init();
        assert_eq!(rig.read(MSR), MSR_DCD | MSR_DSR | MSR_CTS);
        rig.write(MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        assert_eq!(rig.read(MSR) & 0xF0, MSR_DCD | MSR_CTS);
        rig.write(MCR, MCR_LOOP | MCR_OUT1);
        rig.write(MCR, MCR_LOOP);
        assert_eq!(rig.read(MSR), MSR_DCTS | MSR_DDCD | MSR_TERI);
        rig.write(THR, 0xA5);
        assert!(rig.output.is_empty(), "loopback keeps bytes off the line");
        assert!(rig.irq.level);
        assert_eq!(rig.read(LSR) & LSR_DR, LSR_DR);
        assert_eq!(rig.read(RBR), 0xA5);
        rig.write(MCR, 0);
        rig.write(THR, b'z');
        assert_eq!(rig.output, b"z");
    }

    #[test]
    fn scratch_fcr_and_unused_offsets() {
        let mut rig = Rig::default();
        rig.write(SCR, 0x5A);
        assert_eq!(rig.read(SCR), 0x5A);
        rig.write(FCR, FCR_FIFO_ENABLE);
        assert_eq!(rig.read(IIR), IIR_FIFOS_ENABLED | IIR_NO_INTERRUPT);
        rig.write(LSR, 0xFF);
        rig.write(MSR, 0xFF);
        rig.write(REGISTER_COUNT as u8, 0xFF);
        assert_eq!(rig.read(LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(rig.read(REGISTER_COUNT as u8), OPEN_BUS);
        assert_eq!(rig.read(IER), 0);
        rig.write(IER, 0xFF);
        rig.write(MCR, 0xFF);
        assert_eq!((rig.read(IER), rig.read(MCR)), (IER_MASK, MCR_MASK));
    }

    #[test]
    fn fifo_mode_change_clears_the_receive_queue() {
        let mut rig = Rig::default();
        rig.push_input(b"stale");
        rig.write(FCR, 0);
        assert_eq!(rig.read(LSR) & LSR_DR, LSR_DR, "no mode change, no reset");
        rig.write(FCR, FCR_FIFO_ENABLE);
        assert_eq!(rig.read(LSR) & LSR_DR, 0);
    }

    /// One step of a guest (or the host) poking the UART.
    #[derive(Clone, Debug)]
    enum Step {
        Read(u8),
        Write(u8, u8),
        Input(Vec<u8>),
        Flood(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0u8..10).prop_map(Step::Read),
            8 => (0u8..10, any::<u8>()).prop_map(|(offset, value)| Step::Write(offset, value)),
            2 => prop::collection::vec(any::<u8>(), 0..32).prop_map(Step::Input),
            1 => (0..2 * RX_QUEUE_CAPACITY).prop_map(Step::Flood),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Random register traffic never panics, never breaks xv6's view of LSR, never grows the
        /// queue past its bound, and the line only ever reports the model's level.
        #[test]
        fn random_traffic_keeps_the_invariants(steps in prop::collection::vec(step(), 0..64)) {
            let mut rig = Rig::default();
            for step in steps {
                match step {
                    Step::Read(offset) => {
                        let value = rig.read(offset);
                        if offset == LSR {
                            prop_assert_ne!(value, 0xFF);
                        }
                    }
                    Step::Write(offset, value) => rig.write(offset, value),
                    Step::Input(bytes) => rig.push_input(&bytes),
                    Step::Flood(count) => rig.push_input(&vec![b'#'; count]),
                }
                let status = rig.uart.line_status();
                prop_assert_ne!(status, 0xFF);
                prop_assert_eq!(status & LSR_THRE, LSR_THRE);
                prop_assert!(rig.uart.receive_queue.len() <= RX_QUEUE_CAPACITY);
                prop_assert_eq!(rig.irq.level, rig.uart.irq_level());
            }
        }
    }
}
