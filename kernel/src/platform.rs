//! The virtual platform of one VM: the device models (from `carousel-devices`), the port and
//! MMIO maps that reach them, and the wiring of their interrupt lines through the I/O APIC to
//! the local APIC. Everything here is state and routing; the exit handlers decode the guest's
//! instruction and call in.
//!
//! The map follows XV6-CONTRACT Appendix A: COM1, the primary IDE channel, the 8259 masks,
//! CMOS, the i8042, the CRTC cursor registers, the local APIC at 0xFEE00000 and the I/O APIC at
//! 0xFEC00000. Ports nobody claims read as all ones and ignore writes.

use carousel_devices::ide::{self, IdeChannel};

use crate::disk::{Backing, Drive, VmStore};
use carousel_devices::mptable::{IO_APIC_ADDRESS, LOCAL_APIC_ADDRESS};
use carousel_devices::{
    deliver_irq, Cmos, CrtcCursor, DataWidth, DateTime, DiskIo, DiskIoSink, InterruptLine, IoApic,
    Lapic, LineBuffer, MmioBus, Pic8259Masks, PicChip, PortBus, SerialSink, TimerClock, Uart16550,
    I8042,
};

/// IRQ of COM1 at the I/O APIC.
const COM1_IRQ: u8 = 4;
/// IRQ of the keyboard controller.
const KBD_IRQ: u8 = 1;
/// The I/O APIC's ID (the MP table carries the same value).
pub const IOAPIC_ID: u8 = 1;
/// The local APIC timer's input clock: 1 GHz, the QEMU/KVM convention, so xv6's initial count
/// of 10,000,000 ticks at 100 Hz (XV6-CONTRACT §9).
const APIC_TIMER_HZ: u64 = 1_000_000_000;
/// Size of the APIC register pages.
const APIC_PAGE: u64 = 0x1000;

/// COM1's first port.
const COM1_BASE: u16 = 0x3F8;

/// Devices on the port bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Com1,
    /// COM1 while console input waits for the guest's answer: its next transmitted byte is
    /// kept ([`Platform::take_answer`]) and COM1 is [`Port::Com1`] again. A mapping of its
    /// own, so that COM1 without input waiting runs exactly the code it ran before.
    Com1Answer,
    IdeCommand,
    IdeControl,
    Pic(PicChip),
    Cmos,
    Kbd,
    Crtc,
}

/// Which APIC an MMIO access reached, and where in its page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mmio {
    LocalApic { offset: u64 },
    IoApic { offset: u64 },
}

/// A device on the MMIO bus (the offset comes from the bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MmioDevice {
    LocalApic,
    IoApic,
}

impl Mmio {
    /// The device's name, for stop reasons.
    pub fn name(self) -> &'static str {
        match self {
            Self::LocalApic { .. } => "local APIC",
            Self::IoApic { .. } => "I/O APIC",
        }
    }
}

/// An interrupt line that remembers a rising edge until the platform routes it.
#[derive(Debug, Default)]
struct Edge(bool);

impl InterruptLine for Edge {
    fn set_level(&mut self, asserted: bool) {
        self.0 |= asserted;
    }
}

/// Where a platform's output goes: console lines and disk transfers, to the host's serial
/// lines and records (the run loop's adapter), or to a vector in tests.
pub trait PlatformOutput {
    /// A console line of this VM: `ended` when the guest ended it with a newline, false for an
    /// unfinished line sent after a quiet spell (a prompt).
    fn console_line(&mut self, line: &[u8], ended: bool);
    /// A disk transfer the IDE model accepted.
    fn disk_io(&mut self, io: DiskIo);
    /// The shared drive, if the machine has one.
    fn drive(&mut self) -> Option<&mut dyn Drive>;
    /// The TSC now.
    fn now(&mut self) -> u64;
}

/// A VM's console: bytes assembled into lines. A line the guest leaves unfinished (a shell
/// prompt) goes out once the guest has been quiet for a while of its own time
/// ([`Console::flush_idle`]).
#[derive(Debug)]
pub struct Console {
    pub line: LineBuffer,
    /// The VM's own time since the last byte of an unfinished line, if one waits.
    partial_quiet: Option<u64>,
}

impl Console {
    fn new() -> Self {
        Self {
            line: LineBuffer::new(),
            partial_quiet: None,
        }
    }

    /// `own` cycles of the VM's own time went by without a byte (time it ran, or waited for an
    /// event; not time it waited for the CPU): sends the unfinished line once they add up to
    /// `quiet`. Counting wall time instead split lines a VM was still printing whenever it
    /// waited long for the CPU (32 VMs sharing it: `ls` printed `READ` and `ME 2 2 2286`).
    pub fn flush_idle(&mut self, own: u64, quiet: u64, out: &mut dyn PlatformOutput) {
        let Some(waited) = self.partial_quiet.as_mut() else {
            return;
        };
        *waited = waited.saturating_add(own);
        if *waited >= quiet {
            self.flush(out);
        }
    }

    /// Sends the unfinished line, if any.
    pub fn flush(&mut self, out: &mut dyn PlatformOutput) {
        self.partial_quiet = None;
        if let Some(line) = self.line.flush() {
            out.console_line(line, false);
        }
    }

    /// True when an unfinished line waits.
    pub fn has_partial(&self) -> bool {
        self.partial_quiet.is_some()
    }

    /// One byte the guest transmitted.
    pub fn transmit(&mut self, byte: u8, out: &mut dyn PlatformOutput) {
        match self.line.push(byte) {
            Some(line) => {
                out.console_line(line, true);
                self.partial_quiet = None;
            }
            None => self.partial_quiet = Some(0),
        }
    }
}

/// The UART's transmitter, wired to the console.
struct Transmitter<'a> {
    console: &'a mut Console,
    out: &'a mut dyn PlatformOutput,
}

impl SerialSink for Transmitter<'_> {
    fn transmit(&mut self, byte: u8) {
        self.console.transmit(byte, self.out);
    }
}

/// The UART's transmitter while console input waits for an answer: the first byte is one.
struct AnswerTransmitter<'a> {
    console: &'a mut Console,
    out: &'a mut dyn PlatformOutput,
    /// When the first byte went out.
    answered: Option<u64>,
}

impl SerialSink for AnswerTransmitter<'_> {
    fn transmit(&mut self, byte: u8) {
        if self.answered.is_none() {
            self.answered = Some(self.out.now());
        }
        self.console.transmit(byte, self.out);
    }
}

/// The transfer the IDE model accepted during one access, reported once the access is over.
#[derive(Debug, Default)]
struct Accepted(Option<DiskIo>);

impl DiskIoSink for Accepted {
    fn record(&mut self, io: DiskIo) {
        self.0 = Some(io);
    }
}

/// Timer-injection lag of one VM: from a LAPIC timer deadline to the VM seeing the tick.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimerLag {
    pub ticks: u64,
    pub coalesced: u64,
    pub total_cycles: u64,
    pub max_cycles: u64,
}

/// One VM's devices.
#[derive(Debug)]
pub struct Platform {
    pub com1: Uart16550,
    pub console: Console,
    pub ide: IdeChannel,
    /// Where drive 1's sectors live.
    pub disk: Backing,
    pub lapic: Lapic,
    pub ioapic: IoApic,
    pic: Pic8259Masks,
    cmos: Cmos,
    kbd: I8042,
    crtc: CrtcCursor,
    ports: PortBus<Port>,
    mmio: MmioBus<MmioDevice>,
    pub timer_lag: TimerLag,
    /// When the guest answered console input (its first byte after it), until taken.
    answered_at: Option<u64>,
}

/// Why a platform could not be built.
#[derive(Debug)]
pub enum PlatformError {
    Disk(carousel_devices::DiskImageError),
    Clock(carousel_devices::TimerClockError),
    Bus(carousel_devices::BusError<u16>),
    MmioBus(carousel_devices::BusError<u64>),
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Disk(error) => write!(f, "disk image: {error:?}"),
            Self::Clock(error) => write!(f, "APIC timer clock: {error:?}"),
            Self::Bus(error) => write!(f, "port map: {error}"),
            Self::MmioBus(error) => write!(f, "MMIO map: {error}"),
        }
    }
}

impl Platform {
    /// The devices of VM `vm`, with `disk` as the IDE slave unless it is [`Backing::None`].
    pub fn new(disk: Backing, tsc_hz: u64) -> Result<Self, PlatformError> {
        let ide = match disk {
            Backing::None => IdeChannel::without_disk(),
            ref backing => IdeChannel::new(backing.sectors()).map_err(PlatformError::Disk)?,
        };
        let clock = TimerClock::new(APIC_TIMER_HZ, tsc_hz).map_err(PlatformError::Clock)?;
        let mut ports = PortBus::new();
        let command = ide::PRIMARY_COMMAND_BLOCK;
        for (range, device) in [
            (COM1_BASE..0x400, Port::Com1),
            (command..command + ide::REGISTER_COUNT, Port::IdeCommand),
            (
                ide::PRIMARY_CONTROL_BLOCK..ide::PRIMARY_CONTROL_BLOCK + 1,
                Port::IdeControl,
            ),
            (0x20..0x22, Port::Pic(PicChip::Master)),
            (0xA0..0xA2, Port::Pic(PicChip::Slave)),
            (0x70..0x72, Port::Cmos),
            (0x60..0x65, Port::Kbd),
            (0x3D4..0x3D6, Port::Crtc),
        ] {
            ports.insert(range, device).map_err(PlatformError::Bus)?;
        }
        let mut mmio = MmioBus::new();
        for (base, device) in [
            (LOCAL_APIC_ADDRESS, MmioDevice::LocalApic),
            (IO_APIC_ADDRESS, MmioDevice::IoApic),
        ] {
            let base = u64::from(base);
            mmio.insert(base..base + APIC_PAGE, device)
                .map_err(PlatformError::MmioBus)?;
        }
        Ok(Self {
            com1: Uart16550::new(),
            console: Console::new(),
            ide,
            disk,
            lapic: Lapic::new(0, clock),
            ioapic: IoApic::new(IOAPIC_ID),
            pic: Pic8259Masks::new(),
            cmos: Cmos::new(DateTime::EPOCH_2000),
            kbd: I8042::new(),
            crtc: CrtcCursor::new(),
            ports,
            mmio,
            timer_lag: TimerLag::default(),
            answered_at: None,
        })
    }

    /// Routes an IRQ edge through the I/O APIC to the local APIC (masked pins stay quiet).
    fn raise(&mut self, irq: u8) {
        deliver_irq(irq, &mut self.ioapic, &mut self.lapic);
    }

    /// IN from `port` (`size` 1, 2 or 4 bytes); the disk's data comes through `drive`.
    pub fn port_in(&mut self, port: u16, size: u8, drive: Option<&mut dyn Drive>) -> u32 {
        let mut edge = Edge::default();
        let mut store = VmStore {
            backing: &mut self.disk,
            drive,
        };
        let (value, irq) = match self.ports.lookup(port) {
            Some((Port::Com1 | Port::Com1Answer, offset)) => {
                (self.com1.read(offset as u8, &mut edge).into(), COM1_IRQ)
            }
            Some((Port::IdeCommand, 0)) => match DataWidth::from_bytes(size) {
                Some(width) => (
                    self.ide.read_data(width, &mut edge, &mut store),
                    ide::PRIMARY_IRQ,
                ),
                None => (u32::MAX, ide::PRIMARY_IRQ),
            },
            Some((Port::IdeCommand, offset)) => (
                self.ide.read(offset as u8, &mut edge, &mut store).into(),
                ide::PRIMARY_IRQ,
            ),
            Some((Port::IdeControl, _)) => (self.ide.read_control().into(), ide::PRIMARY_IRQ),
            Some((Port::Pic(chip), offset)) => (self.pic.read(chip, offset as u8).into(), 0),
            Some((Port::Cmos, offset)) => (self.cmos.read(offset as u8).into(), 0),
            Some((Port::Kbd, offset)) => (self.kbd.read(offset as u8, &mut edge).into(), KBD_IRQ),
            Some((Port::Crtc, offset)) => (self.crtc.read(offset as u8).into(), 0),
            None => (u32::MAX, 0),
        };
        if edge.0 {
            self.raise(irq);
        }
        value & crate::mmio::size_mask(size) as u32
    }

    /// OUT of `value` to `port` (`size` 1, 2 or 4 bytes).
    pub fn port_out(&mut self, port: u16, size: u8, value: u32, out: &mut dyn PlatformOutput) {
        let mut edge = Edge::default();
        let byte = value as u8;
        let mut accepted = Accepted::default();
        let irq = match self.ports.lookup(port) {
            Some((Port::Com1, offset)) => {
                let mut transmitter = Transmitter {
                    console: &mut self.console,
                    out,
                };
                self.com1
                    .write(offset as u8, byte, &mut transmitter, &mut edge);
                COM1_IRQ
            }
            Some((Port::Com1Answer, offset)) => {
                let mut transmitter = AnswerTransmitter {
                    console: &mut self.console,
                    out,
                    answered: None,
                };
                self.com1
                    .write(offset as u8, byte, &mut transmitter, &mut edge);
                if let Some(at) = transmitter.answered {
                    self.answered_at = Some(at);
                    self.ports.remap(COM1_BASE, Port::Com1);
                }
                COM1_IRQ
            }
            Some((Port::IdeCommand, 0)) => {
                if let Some(width) = DataWidth::from_bytes(size) {
                    let mut store = VmStore {
                        backing: &mut self.disk,
                        drive: out.drive(),
                    };
                    self.ide.write_data(width, value, &mut edge, &mut store);
                }
                ide::PRIMARY_IRQ
            }
            Some((Port::IdeCommand, offset)) => {
                let mut store = VmStore {
                    backing: &mut self.disk,
                    drive: out.drive(),
                };
                self.ide
                    .write(offset as u8, byte, &mut edge, &mut accepted, &mut store);
                ide::PRIMARY_IRQ
            }
            Some((Port::IdeControl, _)) => {
                self.ide.write_control(byte, &mut edge);
                ide::PRIMARY_IRQ
            }
            Some((Port::Pic(chip), offset)) => {
                self.pic.write(chip, offset as u8, byte);
                0
            }
            Some((Port::Cmos, offset)) => {
                self.cmos.write(offset as u8, byte);
                0
            }
            Some((Port::Kbd, offset)) => {
                self.kbd.write(offset as u8, byte);
                0
            }
            Some((Port::Crtc, offset)) => {
                self.crtc.write(offset as u8, byte);
                0
            }
            None => 0,
        };
        if let Some(io) = accepted.0 {
            out.disk_io(io);
        }
        if edge.0 {
            self.raise(irq);
        }
    }

    /// True when `port` is the IDE data port, which string I/O serves in blocks.
    pub fn is_ide_data(port: u16) -> bool {
        port == ide::PRIMARY_COMMAND_BLOCK
    }

    /// `rep insl/insw` from the IDE data port: fills `buffer`, returns the bytes supplied.
    pub fn ide_read_block(&mut self, buffer: &mut [u8], drive: Option<&mut dyn Drive>) -> usize {
        let mut edge = Edge::default();
        let mut store = VmStore {
            backing: &mut self.disk,
            drive,
        };
        let done = self.ide.read_data_block(buffer, &mut edge, &mut store);
        if edge.0 {
            self.raise(ide::PRIMARY_IRQ);
        }
        done
    }

    /// The shared disk served the IDE command that waited for it: the channel completes it
    /// and its interrupt goes out through the I/O APIC.
    pub fn complete_disk(&mut self) {
        let mut edge = Edge::default();
        self.ide.complete(&mut edge);
        if edge.0 {
            self.raise(ide::PRIMARY_IRQ);
        }
    }

    /// `rep outsl/outsw` to the IDE data port: takes `data`, returns the bytes accepted.
    pub fn ide_write_block(&mut self, data: &[u8], drive: Option<&mut dyn Drive>) -> usize {
        let mut edge = Edge::default();
        let mut store = VmStore {
            backing: &mut self.disk,
            drive,
        };
        let done = self.ide.write_data_block(data, &mut edge, &mut store);
        if edge.0 {
            self.raise(ide::PRIMARY_IRQ);
        }
        done
    }

    /// The device behind guest-physical `gpa`, if any.
    pub fn mmio_at(&self, gpa: u64) -> Option<Mmio> {
        self.mmio.lookup(gpa).map(|(device, offset)| match device {
            MmioDevice::LocalApic => Mmio::LocalApic { offset },
            MmioDevice::IoApic => Mmio::IoApic { offset },
        })
    }

    /// An MMIO read of `size` bytes.
    pub fn mmio_read(&mut self, device: Mmio, size: u8, now: u64) -> u64 {
        match device {
            Mmio::LocalApic { offset } => self.lapic.read_sized(offset, size, now),
            Mmio::IoApic { offset } => self.ioapic.read_sized(offset, size),
        }
    }

    /// An MMIO write of `size` bytes.
    pub fn mmio_write(&mut self, device: Mmio, size: u8, value: u64, now: u64) {
        match device {
            Mmio::LocalApic { offset } => self.lapic.write_sized(offset, size, value, now),
            Mmio::IoApic { offset } => self.ioapic.write_sized(offset, size, value),
        }
    }

    /// When the guest last answered console input (its first transmitted byte after input
    /// reached it), once: the run loop sends it as a record when it is not busy.
    pub fn take_answer(&mut self) -> Option<u64> {
        self.answered_at.take()
    }

    /// Console input from the host.
    pub fn push_console_input(&mut self, bytes: &[u8]) {
        let mut edge = Edge::default();
        self.com1.push_input(bytes, &mut edge);
        self.ports.remap(COM1_BASE, Port::Com1Answer);
        if edge.0 {
            self.raise(COM1_IRQ);
        }
    }

    /// Runs the local APIC timer up to `now` (it runs on host time, descheduled or not) and
    /// records the injection lag of any tick it raised: from the deadline of the expiry that
    /// made the vector pending to now. Expiries that fold into a vector still pending (the
    /// guest has not taken the last tick: interrupts off, or it waited for the CPU) are counted
    /// as coalesced, not as ticks of their own: their delay is the pending tick's.
    pub fn advance_timer(&mut self, now: u64) {
        let fire = self.lapic.advance(now);
        let lag = &mut self.timer_lag;
        lag.coalesced += fire.coalesced;
        if fire.raised {
            lag.ticks += 1;
            lag.total_cycles += fire.lag_cycles;
            lag.max_cycles = lag.max_cycles.max(fire.lag_cycles);
        }
    }

    /// True when console input could raise an interrupt in this VM: its I/O APIC routes the
    /// COM1 or keyboard line (the pin is unmasked) and its local APIC is on. A VM halted with
    /// interrupts on and nothing else to wake it waits for input only then.
    pub fn input_can_interrupt(&self) -> bool {
        self.lapic.apic_enabled()
            && [COM1_IRQ, KBD_IRQ]
                .iter()
                .any(|&irq| self.ioapic.entry(irq).is_some_and(|entry| !entry.masked()))
    }

    /// The next instant this VM's devices need attention (its LAPIC timer).
    pub fn next_deadline(&self) -> Option<u64> {
        self.lapic.next_deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mmio_bus_finds_each_apic_page_and_nothing_beside_them() {
        let platform = Platform::new(Backing::None, 1_000_000_000).expect("a platform");
        let lapic = u64::from(LOCAL_APIC_ADDRESS);
        let ioapic = u64::from(IO_APIC_ADDRESS);
        assert_eq!(
            platform.mmio_at(lapic + 0xB0),
            Some(Mmio::LocalApic { offset: 0xB0 })
        );
        assert_eq!(
            platform.mmio_at(lapic + APIC_PAGE - 1),
            Some(Mmio::LocalApic {
                offset: APIC_PAGE - 1
            })
        );
        assert_eq!(platform.mmio_at(lapic + APIC_PAGE), None);
        assert_eq!(platform.mmio_at(lapic - 1), None);
        assert_eq!(
            platform.mmio_at(ioapic + 0x10),
            Some(Mmio::IoApic { offset: 0x10 })
        );
        assert_eq!(platform.mmio_at(ioapic + APIC_PAGE), None);
        assert_eq!(platform.mmio_at(0), None);
        assert_eq!(platform.mmio_at(u64::MAX), None);
    }

    /// Console lines, and whether each ended with a newline.
    struct Lines(alloc::vec::Vec<(alloc::vec::Vec<u8>, bool)>);

    impl PlatformOutput for Lines {
        fn console_line(&mut self, line: &[u8], ended: bool) {
            self.0.push((line.to_vec(), ended));
        }
        fn disk_io(&mut self, _: DiskIo) {}
        fn drive(&mut self) -> Option<&mut dyn Drive> {
            None
        }
        fn now(&mut self) -> u64 {
            0
        }
    }

    #[test]
    fn an_unfinished_line_goes_out_after_a_quiet_spell_of_the_vms_own_time() {
        let mut console = Console::new();
        let mut out = Lines(alloc::vec::Vec::new());
        for &byte in b"READ" {
            console.transmit(byte, &mut out);
        }
        // The VM waited for the CPU (no own time passed) for as long as it liked: still one
        // line in the making.
        for _ in 0..100 {
            console.flush_idle(0, 50, &mut out);
        }
        assert!(out.0.is_empty() && console.has_partial());
        console.flush_idle(30, 50, &mut out);
        for &byte in b"ME\n$ " {
            console.transmit(byte, &mut out);
        }
        assert_eq!(out.0, [(b"README".to_vec(), true)]);
        // A byte starts the quiet spell again; 30 + 20 of own time sends the prompt.
        console.flush_idle(30, 50, &mut out);
        assert_eq!(out.0.len(), 1);
        console.flush_idle(20, 50, &mut out);
        assert_eq!(out.0[1], (b"$ ".to_vec(), false));
        assert!(!console.has_partial());
        console.flush_idle(1_000, 50, &mut out);
        assert_eq!(out.0.len(), 2, "nothing waits");
    }
}

#[cfg(test)]
mod disk_tests {
    use alloc::vec::Vec;

    use carousel_devices::ide::{
        COMMAND, COMMAND_READ_SECTORS, COMMAND_WRITE_SECTORS, DEVICE, ERROR, ERROR_IDNF, LBA_HIGH,
        LBA_LOW, LBA_MID, SECTOR_COUNT, SECTOR_SIZE, STATUS, STATUS_ERR,
    };

    use super::*;
    use crate::disk::{Extent, FakeDrive};

    /// The output of one VM's platform, over the shared fake drive.
    struct Out<'a> {
        drive: &'a mut FakeDrive,
        accepted: Vec<DiskIo>,
        clock: u64,
    }

    impl PlatformOutput for Out<'_> {
        fn console_line(&mut self, _: &[u8], _: bool) {}
        fn disk_io(&mut self, io: DiskIo) {
            self.accepted.push(io);
        }
        fn drive(&mut self) -> Option<&mut dyn Drive> {
            Some(self.drive)
        }
        fn now(&mut self) -> u64 {
            self.clock
        }
    }

    #[test]
    fn the_first_byte_after_input_is_an_answer() {
        let mut drive = FakeDrive::new(64);
        let mut platform = vm_on(0, 8, &drive);
        let mut out = Out {
            drive: &mut drive,
            accepted: Vec::new(),
            clock: 0,
        };
        // Output with no input before it answers nothing.
        out.clock = 10;
        platform.port_out(0x3F8, 1, u32::from(b'$'), &mut out);
        assert_eq!(platform.take_answer(), None);
        platform.push_console_input(b"l");
        platform.push_console_input(b"s");
        assert_eq!(platform.take_answer(), None, "input alone is no answer");
        out.clock = 20;
        platform.port_out(0x3F8, 1, u32::from(b'l'), &mut out);
        out.clock = 30;
        platform.port_out(0x3F8, 1, u32::from(b's'), &mut out);
        assert_eq!(
            platform.take_answer(),
            Some(20),
            "the first byte after the input"
        );
        assert_eq!(platform.take_answer(), None, "taken once");
        platform.push_console_input(b"\n");
        out.clock = 40;
        platform.port_out(0x3F8, 1, u32::from(b'\n'), &mut out);
        assert_eq!(platform.take_answer(), Some(40));
    }

    /// A VM whose disk is sectors [start, start + sectors) of the drive.
    fn vm_on(start: u64, sectors: u64, drive: &FakeDrive) -> Platform {
        let extent = Extent::new(start, sectors, drive.sectors()).unwrap();
        Platform::new(Backing::Extent(extent), 1_000_000_000).unwrap()
    }

    /// xv6's idestart on drive 1 for `lba`, then for a write its `rep outsl`, for a read its
    /// `rep insl`; the status after, and the data read.
    fn request(
        platform: &mut Platform,
        drive: &mut FakeDrive,
        lba: u32,
        write: Option<&[u8]>,
    ) -> (u8, Vec<u8>) {
        let command = ide::PRIMARY_COMMAND_BLOCK;
        let mut out = Out {
            drive,
            accepted: Vec::new(),
            clock: 0,
        };
        for (offset, value) in [
            (SECTOR_COUNT, 1),
            (LBA_LOW, lba as u8),
            (LBA_MID, (lba >> 8) as u8),
            (LBA_HIGH, (lba >> 16) as u8),
            (DEVICE, 0xF0 | ((lba >> 24) as u8 & 0x0F)),
        ] {
            platform.port_out(command + u16::from(offset), 1, value.into(), &mut out);
        }
        let opcode = if write.is_some() {
            COMMAND_WRITE_SECTORS
        } else {
            COMMAND_READ_SECTORS
        };
        platform.port_out(command + u16::from(COMMAND), 1, opcode.into(), &mut out);
        let mut data = alloc::vec![0; SECTOR_SIZE];
        match write {
            Some(bytes) => {
                platform.ide_write_block(bytes, Some(&mut *out.drive));
            }
            None => {
                platform.ide_read_block(&mut data, Some(&mut *out.drive));
            }
        }
        let status = platform.port_in(command + u16::from(STATUS), 1, Some(&mut *out.drive));
        (status as u8, data)
    }

    /// Two VMs share one drive, each on its own extent: each sees only its own sectors, and a
    /// request one sector past its extent is an IDNF error in that VM that never reaches the
    /// drive, let alone the neighbour's sectors.
    #[test]
    fn each_vm_stays_inside_its_extent() {
        let mut drive = FakeDrive::new(1 + 8 + 8);
        let (mut a, mut b) = (vm_on(1, 8, &drive), vm_on(9, 8, &drive));
        let (status, _) = request(&mut a, &mut drive, 7, Some(&[0xAA; SECTOR_SIZE]));
        assert_eq!(status & STATUS_ERR, 0);
        let (status, _) = request(&mut b, &mut drive, 0, Some(&[0xBB; SECTOR_SIZE]));
        assert_eq!(status & STATUS_ERR, 0);
        assert_eq!(drive.bytes[8 * SECTOR_SIZE], 0xAA, "a's last sector");
        assert_eq!(drive.bytes[9 * SECTOR_SIZE], 0xBB, "b's first sector");
        assert_eq!(request(&mut a, &mut drive, 7, None).1, [0xAA; SECTOR_SIZE]);
        assert_eq!(request(&mut b, &mut drive, 0, None).1, [0xBB; SECTOR_SIZE]);

        // One past a's end is b's first sector on the drive: refused, by the model and by the
        // store.
        drive.accesses.clear();
        let before = drive.bytes.clone();
        let (status, data) = request(&mut a, &mut drive, 8, None);
        assert_ne!(status & STATUS_ERR, 0);
        assert_eq!(data, [0; SECTOR_SIZE], "no data phase");
        let command = ide::PRIMARY_COMMAND_BLOCK;
        assert_eq!(
            a.port_in(command + u16::from(ERROR), 1, None),
            ERROR_IDNF.into()
        );
        let (status, _) = request(&mut a, &mut drive, 8, Some(&[0xEE; SECTOR_SIZE]));
        assert_ne!(status & STATUS_ERR, 0);
        let (status, _) = request(
            &mut a,
            &mut drive,
            u32::MAX >> 4,
            Some(&[0xEE; SECTOR_SIZE]),
        );
        assert_ne!(status & STATUS_ERR, 0);
        assert!(drive.accesses.is_empty(), "{:?}", drive.accesses);
        assert_eq!(drive.bytes, before);
        assert_eq!(b.ide.aborted_commands(), 0);
    }
}
