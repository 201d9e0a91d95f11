//! The rest of the PC port space xv6 touches: the 8259 PIC mask registers, the CMOS real-time
//! clock, the 8042 keyboard controller and the CRT controller's cursor registers.
//!
//! Each model is as small as xv6's use of the device (XV6-CONTRACT §5, §7, Appendix A) while still
//! reading back sensibly for a guest that looks closer:
//! - [`Pic8259Masks`]: both interrupt mask registers are stored and read back. There is no
//!   initialization sequence, no interrupt request or in-service state, and no interrupt output:
//!   the hypervisor never delivers PIC interrupts.
//! - [`Cmos`]: the clock reads a fixed, host-set [`DateTime`]; status registers A-D read as an
//!   idle, valid clock; the other bytes of the 128-byte RAM are stored.
//! - [`I8042`]: no commands, no keyboard; status shows only output-buffer-full, for scancodes
//!   the host queues with [`I8042::push_scancode`].
//! - [`CrtcCursor`]: a CRTC index/data pair that stores every register, so xv6's cursor
//!   read-modify-write of registers 14 and 15 round-trips.

use alloc::collections::VecDeque;

use crate::uart::{InterruptLine, LineLevel};

/// One of the two cascaded 8259A interrupt controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PicChip {
    /// The master, ports 0x20-0x21.
    Master,
    /// The slave, ports 0xA0-0xA1.
    Slave,
}

/// First port of the master 8259A.
pub const PIC_MASTER_BASE: u16 = 0x20;
/// First port of the slave 8259A.
pub const PIC_SLAVE_BASE: u16 = 0xA0;
/// Offset of the command port (ICW1, OCW2, OCW3) from a chip's base.
pub const PIC_COMMAND: u8 = 0;
/// Offset of the data port (the interrupt mask register, OCW1) from a chip's base.
pub const PIC_DATA: u8 = 1;
/// Number of port offsets each chip decodes.
pub const PIC_REGISTER_COUNT: u16 = 2;
/// Interrupt mask at power-on here: every line masked (the 8259A leaves it undefined).
pub const PIC_RESET_MASK: u8 = 0xFF;

/// The two 8259A interrupt mask registers. xv6 writes 0xFF to both and never reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pic8259Masks {
    /// The master's interrupt mask register.
    master: u8,
    /// The slave's interrupt mask register.
    slave: u8,
}

impl Pic8259Masks {
    /// Both chips with every line masked.
    pub const fn new() -> Self {
        Self {
            master: PIC_RESET_MASK,
            slave: PIC_RESET_MASK,
        }
    }

    /// The guest reads the port at `offset` from `chip`'s base: the data port returns the mask;
    /// the command port returns 0, an empty request (or in-service) register.
    pub fn read(&self, chip: PicChip, offset: u8) -> u8 {
        match offset {
            PIC_DATA => self.mask(chip),
            _ => 0,
        }
    }

    /// The guest writes `value` to the port at `offset` from `chip`'s base: a data-port write sets
    /// the mask; command-port writes (initialization, EOI, OCW3) are ignored.
    pub fn write(&mut self, chip: PicChip, offset: u8, value: u8) {
        if offset == PIC_DATA {
            match chip {
                PicChip::Master => self.master = value,
                PicChip::Slave => self.slave = value,
            }
        }
    }

    /// `chip`'s interrupt mask register.
    pub fn mask(&self, chip: PicChip) -> u8 {
        match chip {
            PicChip::Master => self.master,
            PicChip::Slave => self.slave,
        }
    }
}

impl Default for Pic8259Masks {
    fn default() -> Self {
        Self::new()
    }
}

/// First port of the CMOS/RTC: 0x70, the index register.
pub const CMOS_BASE: u16 = 0x70;
/// Offset of the index register (write-only) from [`CMOS_BASE`].
pub const CMOS_INDEX: u8 = 0;
/// Offset of the data register from [`CMOS_BASE`].
pub const CMOS_DATA: u8 = 1;
/// Number of port offsets the CMOS decodes.
pub const CMOS_REGISTER_COUNT: u16 = 2;
/// Index bit 7: NMI disable on the PC; ignored here (there are no NMIs to mask).
pub const CMOS_INDEX_NMI_DISABLE: u8 = 1 << 7;
/// Bytes of CMOS RAM, clock and status registers included.
pub const CMOS_RAM_SIZE: usize = 128;

// CMOS RAM indices of the MC146818 clock and status registers.

/// Seconds, 0-59.
pub const RTC_SECONDS: u8 = 0x00;
/// Seconds alarm.
pub const RTC_SECONDS_ALARM: u8 = 0x01;
/// Minutes, 0-59.
pub const RTC_MINUTES: u8 = 0x02;
/// Minutes alarm.
pub const RTC_MINUTES_ALARM: u8 = 0x03;
/// Hours, 0-23 (or 1-12 with bit 7 = PM in 12-hour mode).
pub const RTC_HOURS: u8 = 0x04;
/// Hours alarm.
pub const RTC_HOURS_ALARM: u8 = 0x05;
/// Day of the week, 1-7, Sunday = 1.
pub const RTC_DAY_OF_WEEK: u8 = 0x06;
/// Day of the month, 1-31.
pub const RTC_DAY_OF_MONTH: u8 = 0x07;
/// Month, 1-12.
pub const RTC_MONTH: u8 = 0x08;
/// Year within the century, 0-99.
pub const RTC_YEAR: u8 = 0x09;
/// Status register A: update in progress, divider and rate select.
pub const RTC_STATUS_A: u8 = 0x0A;
/// Status register B: data mode, hour mode and interrupt enables.
pub const RTC_STATUS_B: u8 = 0x0B;
/// Status register C: interrupt flags (read-only).
pub const RTC_STATUS_C: u8 = 0x0C;
/// Status register D: valid RAM and time (read-only).
pub const RTC_STATUS_D: u8 = 0x0D;
/// Century, 19-20 and on (the IBM PC AT location, also named by the ACPI FADT default).
pub const RTC_CENTURY: u8 = 0x32;

/// Status A: Update In Progress; never set, the clock never updates.
pub const RTC_A_UIP: u8 = 1 << 7;
/// Status A at reset: 32.768 kHz time base (divider 010), 1.024 kHz periodic rate (0110).
pub const RTC_A_RESET: u8 = 0x26;
/// Status B: Data Mode, binary instead of BCD.
pub const RTC_B_DM: u8 = 1 << 2;
/// Status B: 24-hour mode instead of 12-hour.
pub const RTC_B_24_HOUR: u8 = 1 << 1;
/// Status B at reset: BCD, 24-hour, no interrupts (the PC BIOS convention).
pub const RTC_B_RESET: u8 = RTC_B_24_HOUR;
/// Status D: Valid RAM and Time (the battery is good).
pub const RTC_D_VRT: u8 = 1 << 7;
/// 12-hour mode: hour bit 7 marks PM.
const RTC_HOURS_PM: u8 = 1 << 7;

/// A calendar date and time of day, as the RTC reports it. Fields out of their range are
/// reported modulo 100 (the clock registers hold two decimal digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, such as 2024.
    pub year: u16,
    /// Month, 1-12.
    pub month: u8,
    /// Day of the month, 1-31.
    pub day: u8,
    /// Day of the week, 1-7, Sunday = 1.
    pub weekday: u8,
    /// Hour, 0-23.
    pub hour: u8,
    /// Minute, 0-59.
    pub minute: u8,
    /// Second, 0-59.
    pub second: u8,
}

impl DateTime {
    /// 2000-01-01 00:00:00, a Saturday.
    pub const EPOCH_2000: Self = Self {
        year: 2000,
        month: 1,
        day: 1,
        weekday: 7,
        hour: 0,
        minute: 0,
        second: 0,
    };
}

/// The CMOS RAM and MC146818-style real-time clock behind ports 0x70-0x71. xv6 with one CPU
/// never touches it; its unused `cmostime` reads registers 0x0B, 0x0A, then the clock.
#[derive(Clone, Debug)]
pub struct Cmos {
    /// The index register, bit 7 cleared.
    index: u8,
    /// The RAM; the clock registers and status C and D are served from `time` and constants.
    ram: [u8; CMOS_RAM_SIZE],
    /// What the clock reads.
    time: DateTime,
}

impl Cmos {
    /// A CMOS whose clock reads `time`, with status A and B at their reset values.
    pub fn new(time: DateTime) -> Self {
        let mut ram = [0; CMOS_RAM_SIZE];
        ram[usize::from(RTC_STATUS_A)] = RTC_A_RESET;
        ram[usize::from(RTC_STATUS_B)] = RTC_B_RESET;
        Self {
            index: 0,
            ram,
            time,
        }
    }

    /// Sets what the clock reads from now on.
    pub fn set_time(&mut self, time: DateTime) {
        self.time = time;
    }

    /// What the clock reads.
    pub fn time(&self) -> DateTime {
        self.time
    }

    /// The guest reads the port at `offset` from [`CMOS_BASE`]. The index register is write-only
    /// and reads 0xFF, as on most chipsets.
    pub fn read(&self, offset: u8) -> u8 {
        match offset {
            CMOS_DATA => self.register(self.index),
            _ => 0xFF,
        }
    }

    /// The guest writes `value` to the port at `offset` from [`CMOS_BASE`]. Clock registers and
    /// status C and D ignore writes (the host owns the time); status A keeps all but UIP.
    pub fn write(&mut self, offset: u8, value: u8) {
        match offset {
            CMOS_INDEX => self.index = value & !CMOS_INDEX_NMI_DISABLE,
            CMOS_DATA => match self.index {
                RTC_SECONDS | RTC_MINUTES | RTC_HOURS | RTC_DAY_OF_WEEK | RTC_DAY_OF_MONTH
                | RTC_MONTH | RTC_YEAR | RTC_CENTURY | RTC_STATUS_C | RTC_STATUS_D => {}
                RTC_STATUS_A => self.ram[usize::from(RTC_STATUS_A)] = value & !RTC_A_UIP,
                index => self.ram[usize::from(index)] = value,
            },
            _ => {}
        }
    }

    /// CMOS register `index` (below [`CMOS_RAM_SIZE`]).
    fn register(&self, index: u8) -> u8 {
        let time = &self.time;
        let field = |value: u8| self.encode(value % 100);
        match index {
            RTC_SECONDS => field(time.second),
            RTC_MINUTES => field(time.minute),
            RTC_HOURS => self.hours(),
            RTC_DAY_OF_WEEK => field(time.weekday),
            RTC_DAY_OF_MONTH => field(time.day),
            RTC_MONTH => field(time.month),
            RTC_YEAR => field((time.year % 100) as u8),
            RTC_CENTURY => field((time.year / 100 % 100) as u8),
            // No interrupt flags: the clock raises no interrupts.
            RTC_STATUS_C => 0,
            RTC_STATUS_D => RTC_D_VRT,
            index => self.ram[usize::from(index)],
        }
    }

    /// The hours register in the mode status B selects.
    fn hours(&self) -> u8 {
        let hour = self.time.hour % 24;
        if self.status_b() & RTC_B_24_HOUR != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { RTC_HOURS_PM } else { 0 };
        let hour = match hour % 12 {
            0 => 12,
            hour => hour,
        };
        self.encode(hour) | pm
    }

    /// `value` (0-99) in the data mode status B selects.
    fn encode(&self, value: u8) -> u8 {
        if self.status_b() & RTC_B_DM != 0 {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    fn status_b(&self) -> u8 {
        self.ram[usize::from(RTC_STATUS_B)]
    }
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new(DateTime::EPOCH_2000)
    }
}

/// First port of the 8042: 0x60, the data port.
pub const I8042_BASE: u16 = 0x60;
/// Offset of the data port (0x60) from [`I8042_BASE`].
pub const I8042_DATA: u8 = 0;
/// Offset of the status (read) / command (write) port (0x64) from [`I8042_BASE`].
pub const I8042_STATUS: u8 = 4;
/// Number of port offsets from [`I8042_BASE`] to the status port, inclusive. Offsets 1-3 (port
/// 0x61, system control port B, and 0x62-0x63) are not the 8042's; the model reads them as 0.
pub const I8042_REGISTER_COUNT: u16 = 5;
/// Status: Output Buffer Full, a byte waits at the data port.
pub const I8042_STATUS_OBF: u8 = 1 << 0;
/// ISA IRQ of the keyboard.
pub const KEYBOARD_IRQ: u8 = 1;
/// Scancodes the queue holds; more are dropped and counted. The 8042 itself holds one byte and
/// the keyboard about 16; a host pasting text gets more room.
pub const SCANCODE_QUEUE_CAPACITY: usize = 256;

/// The 8042 keyboard controller at ports 0x60 and 0x64, reduced to an output queue.
///
/// Writes (controller commands, keyboard commands) are ignored. Scancodes the host pushes wait in
/// a bounded queue; status bit 0 shows one is waiting and a data-port read takes it. The IRQ 1
/// output is high while a byte waits, as the 8042 drives it from OBF; when a read leaves more
/// bytes waiting, the next one "arrives" with a fresh edge, as the 8042 reloads its output buffer.
/// xv6 reads every waiting byte in one interrupt, so the extra edge costs it one empty interrupt.
#[derive(Clone, Debug, Default)]
pub struct I8042 {
    /// Scancodes not yet read; at most [`SCANCODE_QUEUE_CAPACITY`].
    queue: VecDeque<u8>,
    /// Scancodes dropped because the queue was full.
    dropped_scancodes: u64,
    /// The level last reported through [`InterruptLine::set_level`].
    /// The level last put on the interrupt line.
    line: LineLevel,
}

impl I8042 {
    /// A controller with nothing to read.
    pub const fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            dropped_scancodes: 0,
            line: LineLevel::LOW,
        }
    }

    /// The guest reads the port at `offset` from [`I8042_BASE`]: the status port shows OBF while a
    /// scancode waits; the data port takes it (0 when none waits).
    pub fn read(&mut self, offset: u8, irq: &mut impl InterruptLine) -> u8 {
        match offset {
            I8042_STATUS => self.status(),
            I8042_DATA => {
                let Some(scancode) = self.queue.pop_front() else {
                    return 0;
                };
                if !self.queue.is_empty() && self.line.is_high() {
                    // The output buffer empties, then refills with the next byte: a new edge.
                    self.line.drive(false, irq);
                }
                self.update_interrupt_line(irq);
                scancode
            }
            _ => 0,
        }
    }

    /// The guest writes to the port at `offset` from [`I8042_BASE`]: ignored.
    pub fn write(&mut self, _offset: u8, _value: u8) {}

    /// A key event arrives: queues `scancode` (set 1) and raises IRQ 1 if nothing was waiting.
    /// Dropped and counted when the queue is full.
    pub fn push_scancode(&mut self, scancode: u8, irq: &mut impl InterruptLine) {
        if self.queue.len() < SCANCODE_QUEUE_CAPACITY {
            self.queue.push_back(scancode);
        } else {
            self.dropped_scancodes += 1;
        }
        self.update_interrupt_line(irq);
    }

    /// The status register: OBF while a scancode waits, otherwise 0.
    pub fn status(&self) -> u8 {
        if self.queue.is_empty() {
            0
        } else {
            I8042_STATUS_OBF
        }
    }

    /// The IRQ 1 output: a scancode waits.
    pub fn irq_level(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Scancodes dropped so far because the queue was full.
    pub fn dropped_scancodes(&self) -> u64 {
        self.dropped_scancodes
    }

    fn update_interrupt_line(&mut self, irq: &mut impl InterruptLine) {
        self.line.drive(self.irq_level(), irq);
    }
}

/// First port of the color CRT controller: 0x3D4, the index register.
pub const CRTC_BASE: u16 = 0x3D4;
/// Offset of the index register (0x3D4) from [`CRTC_BASE`].
pub const CRTC_INDEX: u8 = 0;
/// Offset of the data register (0x3D5) from [`CRTC_BASE`].
pub const CRTC_DATA: u8 = 1;
/// Number of port offsets the CRTC decodes.
pub const CRTC_REGISTER_COUNT: u16 = 2;
/// CRTC register 14: Cursor Location High.
pub const CRTC_CURSOR_LOCATION_HIGH: u8 = 0x0E;
/// CRTC register 15: Cursor Location Low.
pub const CRTC_CURSOR_LOCATION_LOW: u8 = 0x0F;

/// The CRT controller's index/data pair at 0x3D4-0x3D5, storing every register.
///
/// xv6 reads registers 14 and 15 (the cursor position) before every character and writes them
/// back after; an unemulated port's 0xFF there is a cursor at 65535 and a recursive panic
/// (XV6-CONTRACT §7). Every register powers on as 0 and reads back the last value written to it,
/// so 0xFF appears only where the guest put it. Nothing is displayed: the registers only hold
/// values.
#[derive(Clone, Debug)]
pub struct CrtcCursor {
    /// The index register.
    index: u8,
    /// Every register an 8-bit index reaches (the VGA decodes 0x00-0x18; the rest are kept too).
    registers: [u8; 256],
}

impl CrtcCursor {
    /// All registers 0: the cursor in the top-left cell.
    pub const fn new() -> Self {
        Self {
            index: 0,
            registers: [0; 256],
        }
    }

    /// The guest reads the port at `offset` from [`CRTC_BASE`]: the index, or the indexed
    /// register.
    pub fn read(&self, offset: u8) -> u8 {
        match offset {
            CRTC_INDEX => self.index,
            CRTC_DATA => self.registers[usize::from(self.index)],
            _ => 0,
        }
    }

    /// The guest writes `value` to the port at `offset` from [`CRTC_BASE`].
    pub fn write(&mut self, offset: u8, value: u8) {
        match offset {
            CRTC_INDEX => self.index = value,
            CRTC_DATA => self.registers[usize::from(self.index)] = value,
            _ => {}
        }
    }

    /// The cursor position, in cells from the top left: registers 14 (high) and 15 (low).
    pub fn cursor_position(&self) -> u16 {
        u16::from_be_bytes([
            self.registers[usize::from(CRTC_CURSOR_LOCATION_HIGH)],
            self.registers[usize::from(CRTC_CURSOR_LOCATION_LOW)],
        ])
    }
}

impl Default for CrtcCursor {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    use crate::testing::RecordingIrq as Irq;

    #[test]
    fn xv6_picinit_masks_both_chips() {
        let mut pic = Pic8259Masks::new();
        pic.write(PicChip::Master, PIC_DATA, 0xFF);
        pic.write(PicChip::Slave, PIC_DATA, 0xFF);
        assert_eq!(pic.mask(PicChip::Master), 0xFF);
        pic.write(PicChip::Master, PIC_DATA, 0xFB);
        pic.write(PicChip::Slave, PIC_COMMAND, 0x11);
        assert_eq!(pic.read(PicChip::Master, PIC_DATA), 0xFB);
        assert_eq!(
            pic.read(PicChip::Slave, PIC_DATA),
            0xFF,
            "ICW1 changes no mask"
        );
        assert_eq!(pic.read(PicChip::Slave, PIC_COMMAND), 0);
    }

    /// 2024-07-09 21:05:38, a Tuesday.
    const TUESDAY_EVENING: DateTime = DateTime {
        year: 2024,
        month: 7,
        day: 9,
        weekday: 3,
        hour: 21,
        minute: 5,
        second: 38,
    };

    fn cmos_read(cmos: &mut Cmos, index: u8) -> u8 {
        cmos.write(CMOS_INDEX, index);
        cmos.read(CMOS_DATA)
    }

    #[test]
    fn cmostime_reads_bcd_fields_and_a_settled_clock() {
        let mut cmos = Cmos::new(TUESDAY_EVENING);
        // The register order of xv6's cmostime (XV6-CONTRACT §3), with NMI-disable set on some.
        assert_eq!(cmos_read(&mut cmos, RTC_STATUS_B), RTC_B_24_HOUR);
        assert_eq!(cmos_read(&mut cmos, RTC_STATUS_A) & RTC_A_UIP, 0);
        let fields = [
            RTC_SECONDS,
            RTC_MINUTES,
            RTC_HOURS,
            RTC_DAY_OF_MONTH,
            RTC_MONTH,
            RTC_YEAR,
        ]
        .map(|index| cmos_read(&mut cmos, index | CMOS_INDEX_NMI_DISABLE));
        assert_eq!(fields, [0x38, 0x05, 0x21, 0x09, 0x07, 0x24]);
        assert_eq!(cmos_read(&mut cmos, RTC_CENTURY), 0x20);
        assert_eq!(cmos_read(&mut cmos, RTC_DAY_OF_WEEK), 0x03);
        assert_eq!(cmos_read(&mut cmos, RTC_STATUS_C), 0);
        assert_eq!(cmos_read(&mut cmos, RTC_STATUS_D), RTC_D_VRT);
        assert_eq!(cmos.read(CMOS_INDEX), 0xFF, "the index is write-only");
        cmos.set_time(DateTime::EPOCH_2000);
        assert_eq!(cmos_read(&mut cmos, RTC_YEAR), 0x00);
        assert_eq!(cmos.time(), DateTime::EPOCH_2000);
    }

    #[test]
    fn status_b_selects_binary_and_12_hour_modes() {
        let mut cmos = Cmos::new(TUESDAY_EVENING);
        cmos.write(CMOS_INDEX, RTC_STATUS_B);
        cmos.write(CMOS_DATA, RTC_B_DM);
        assert_eq!(cmos_read(&mut cmos, RTC_SECONDS), 38);
        assert_eq!(cmos_read(&mut cmos, RTC_HOURS), RTC_HOURS_PM | 9);
        cmos.set_time(DateTime::EPOCH_2000);
        assert_eq!(cmos_read(&mut cmos, RTC_HOURS), 12, "midnight is 12 AM");
        cmos.write(CMOS_INDEX, RTC_STATUS_B);
        cmos.write(CMOS_DATA, 0);
        cmos.set_time(TUESDAY_EVENING);
        assert_eq!(cmos_read(&mut cmos, RTC_HOURS), RTC_HOURS_PM | 0x09);
    }

    #[test]
    fn lapicstartap_shutdown_code_and_ram_are_stored_clock_is_not() {
        let mut cmos = Cmos::default();
        cmos.write(CMOS_INDEX, 0x0F);
        cmos.write(CMOS_DATA, 0x0A);
        assert_eq!(cmos_read(&mut cmos, 0x0F), 0x0A);
        for index in [RTC_SECONDS, RTC_STATUS_C, RTC_STATUS_D] {
            let before = cmos_read(&mut cmos, index);
            cmos.write(CMOS_DATA, 0x77);
            assert_eq!(cmos_read(&mut cmos, index), before, "register {index:#x}");
        }
        cmos.write(CMOS_INDEX, RTC_STATUS_A);
        cmos.write(CMOS_DATA, 0xFF);
        assert_eq!(cmos.read(CMOS_DATA), 0x7F, "UIP stays clear");
    }

    #[test]
    fn keyboard_reads_nothing_until_a_scancode_arrives() {
        let mut kbd = I8042::new();
        let mut irq = Irq::default();
        assert_eq!(kbd.read(I8042_STATUS, &mut irq), 0);
        assert_eq!(kbd.read(I8042_DATA, &mut irq), 0);
        kbd.write(I8042_STATUS, 0xAD);
        kbd.write(I8042_DATA, 0xFF);
        assert_eq!(kbd.status(), 0, "writes are ignored");
        kbd.push_scancode(0x1E, &mut irq);
        assert_eq!(
            (irq.level, irq.raises),
            (true, 1),
            "IRQ 1 on empty to non-empty"
        );
        kbd.push_scancode(0x9E, &mut irq);
        assert_eq!(irq.raises, 1);
        // xv6's kbdgetc loop: status bit 0, then a data read, until the status says empty.
        let mut received = Vec::new();
        while kbd.read(I8042_STATUS, &mut irq) & I8042_STATUS_OBF != 0 {
            received.push(kbd.read(I8042_DATA, &mut irq));
        }
        assert_eq!(received, [0x1E, 0x9E]);
        assert!(!irq.level);
        assert_eq!(irq.raises, 2, "the second byte arrived with its own edge");
        assert_eq!(kbd.read(1, &mut irq), 0, "port 0x61 is not the 8042's");
    }

    #[test]
    fn keyboard_queue_is_bounded() {
        let mut kbd = I8042::default();
        let mut irq = Irq::default();
        for _ in 0..SCANCODE_QUEUE_CAPACITY + 3 {
            kbd.push_scancode(0x1C, &mut irq);
        }
        assert_eq!(kbd.dropped_scancodes(), 3);
        assert_eq!(kbd.queue.len(), SCANCODE_QUEUE_CAPACITY);
    }

    /// xv6's cputc cursor handling (XV6-CONTRACT §7): read 14 and 15, write them back.
    fn xv6_read_cursor(crtc: &mut CrtcCursor) -> u16 {
        crtc.write(CRTC_INDEX, CRTC_CURSOR_LOCATION_HIGH);
        let high = crtc.read(CRTC_DATA);
        crtc.write(CRTC_INDEX, CRTC_CURSOR_LOCATION_LOW);
        let low = crtc.read(CRTC_DATA);
        u16::from(high) << 8 | u16::from(low)
    }

    fn xv6_write_cursor(crtc: &mut CrtcCursor, position: u16) {
        crtc.write(CRTC_INDEX, CRTC_CURSOR_LOCATION_HIGH);
        crtc.write(CRTC_DATA, (position >> 8) as u8);
        crtc.write(CRTC_INDEX, CRTC_CURSOR_LOCATION_LOW);
        crtc.write(CRTC_DATA, position as u8);
    }

    /// Appendix B, "CRTC 0x3D5 reads 0xFF": the cursor starts at 0 and follows xv6's writes, so
    /// printing a screenful never sees a position outside 0..25*80.
    #[test]
    fn appendix_b_cursor_round_trips_and_never_reads_0xff() {
        let mut crtc = CrtcCursor::new();
        assert_eq!(xv6_read_cursor(&mut crtc), 0, "power-on position");
        for _ in 0..24 * 80 - 1 {
            let position = xv6_read_cursor(&mut crtc);
            assert!(position < 25 * 80, "pos under/overflow");
            crtc.write(CRTC_INDEX, CRTC_CURSOR_LOCATION_HIGH);
            assert_ne!(crtc.read(CRTC_DATA), 0xFF, "the high byte is what panics");
            xv6_write_cursor(&mut crtc, position + 1);
        }
        assert_eq!(crtc.cursor_position(), 24 * 80 - 1);
        assert_eq!(crtc.read(CRTC_INDEX), CRTC_CURSOR_LOCATION_LOW);
        crtc.write(CRTC_INDEX, 0x0A);
        crtc.write(CRTC_DATA, 0x20);
        crtc.write(CRTC_INDEX, 0x40);
        assert_eq!(crtc.read(CRTC_DATA), 0, "an unwritten index reads 0");
        crtc.write(CRTC_INDEX, 0x0A);
        assert_eq!(
            crtc.read(CRTC_DATA),
            0x20,
            "other registers keep their value"
        );
        assert_eq!(crtc.cursor_position(), 24 * 80 - 1);
    }

    /// One step on the legacy ports.
    #[derive(Clone, Debug)]
    enum Step {
        Read(u8),
        Write(u8, u8),
        Push(u8),
        SetTime(DateTime),
    }

    fn step() -> impl Strategy<Value = Step> {
        let time = (any::<u16>(), any::<[u8; 6]>()).prop_map(|(year, fields)| DateTime {
            year,
            month: fields[0],
            day: fields[1],
            weekday: fields[2],
            hour: fields[3],
            minute: fields[4],
            second: fields[5],
        });
        prop_oneof![
            4 => (0u8..6).prop_map(Step::Read),
            4 => (0u8..6, any::<u8>()).prop_map(|(offset, value)| Step::Write(offset, value)),
            2 => any::<u8>().prop_map(Step::Push),
            1 => time.prop_map(Step::SetTime),
        ]
    }

    fn is_bcd(value: u8) -> bool {
        value >> 4 <= 9 && value & 0xF <= 9
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The same random traffic goes to every model at once: none panics; the PIC masks and
        /// CRTC registers read back what was written; the clock's BCD fields are valid BCD and
        /// its status registers read as a settled clock; the keyboard's status and line follow
        /// its queue.
        #[test]
        fn random_traffic_keeps_the_invariants(steps in prop::collection::vec(step(), 0..96)) {
            let mut pic = Pic8259Masks::new();
            let mut cmos = Cmos::default();
            let mut kbd = I8042::new();
            let mut crtc = CrtcCursor::new();
            let mut irq = Irq::default();
            let mut masks = [PIC_RESET_MASK; 2];
            let mut crtc_shadow = [0u8; 256];
            let mut crtc_index = 0u8;
            for step in steps {
                match step {
                    Step::Read(offset) => {
                        let chip = if offset & 2 == 0 { PicChip::Master } else { PicChip::Slave };
                        if offset & 1 == PIC_DATA {
                            prop_assert_eq!(pic.read(chip, offset & 1), masks[usize::from(offset >> 1 & 1)]);
                        }
                        cmos.read(offset);
                        let value = kbd.read(offset, &mut irq);
                        if offset == I8042_STATUS {
                            prop_assert!(value == 0 || value == I8042_STATUS_OBF);
                        }
                        let value = crtc.read(offset);
                        if offset == CRTC_DATA {
                            prop_assert_eq!(value, crtc_shadow[usize::from(crtc_index)]);
                        }
                    }
                    Step::Write(offset, value) => {
                        let chip = if offset & 2 == 0 { PicChip::Master } else { PicChip::Slave };
                        pic.write(chip, offset & 1, value);
                        if offset & 1 == PIC_DATA {
                            masks[usize::from(offset >> 1 & 1)] = value;
                        }
                        cmos.write(offset, value);
                        kbd.write(offset, value);
                        crtc.write(offset, value);
                        match offset {
                            CRTC_INDEX => crtc_index = value,
                            CRTC_DATA => crtc_shadow[usize::from(crtc_index)] = value,
                            _ => {}
                        }
                    }
                    Step::Push(scancode) => kbd.push_scancode(scancode, &mut irq),
                    Step::SetTime(time) => cmos.set_time(time),
                }
                prop_assert_eq!(pic.mask(PicChip::Master), masks[0]);
                prop_assert_eq!(pic.mask(PicChip::Slave), masks[1]);
                let saved_index = cmos.index;
                let status_b = cmos.register(RTC_STATUS_B);
                for index in [RTC_SECONDS, RTC_MINUTES, RTC_DAY_OF_MONTH, RTC_MONTH, RTC_YEAR] {
                    let value = cmos.register(index);
                    if status_b & RTC_B_DM == 0 {
                        prop_assert!(is_bcd(value), "{:#x} = {:#x}", index, value);
                    } else {
                        prop_assert!(value < 100);
                    }
                }
                prop_assert_eq!(cmos.register(RTC_STATUS_A) & RTC_A_UIP, 0);
                prop_assert_eq!(cmos.register(RTC_STATUS_D), RTC_D_VRT);
                prop_assert_eq!(cmos.index, saved_index);
                prop_assert!(cmos.index < 0x80);
                prop_assert_eq!(kbd.status() & I8042_STATUS_OBF != 0, !kbd.queue.is_empty());
                prop_assert_eq!(irq.level, kbd.irq_level());
                prop_assert!(kbd.queue.len() <= SCANCODE_QUEUE_CAPACITY);
                prop_assert_eq!(crtc.read(CRTC_INDEX), crtc_index);
            }
        }
    }
}
