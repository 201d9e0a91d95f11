//! Every device model in `carousel-devices` under random guest traffic: the first byte picks the
//! model, the rest is a sequence of port / MMIO reads and writes (and host-side events: input
//! bytes, IRQ edges, time passing) decoded with `arbitrary`.
//!
//! Each model runs beside a small reference model of what the guest must observe, and every
//! interrupt line fails the run if a model reports a level that is not a change. Invariants:
//! - 16550 UART: LSR never reads 0xFF and always shows THR empty; IIR bit 0 is clear exactly
//!   when the interrupt line is high; every byte written to THR leaves once (or comes back in
//!   loopback), every received byte is read from RBR once, in order, and nothing else is; the
//!   line buffer cutting its output into lines loses and invents no byte.
//! - IDE: every accepted transfer lies inside the disk and is the one the task file asked for;
//!   data reads return the disk's bytes, writes land whole sectors where the transfer points and
//!   nowhere else; DRQ shows exactly while a transfer is in progress on the selected disk; BSY
//!   never shows; only the written sectors differ from the image.
//! - Local APIC with I/O APIC: only vectors the guest programmed (the LVT timer, unmasked I/O
//!   APIC pins routed to this APIC, the vector of an IPI it sent) are ever pending or in service, never one below 16; at most
//!   one vector per priority class is in service; the vector offered beats the processor
//!   priority and acknowledging it succeeds; ICR delivery status reads 0; the current count never
//!   exceeds the initial count; after `advance(now)` the next deadline is after `now` (until
//!   2^64 expiries have passed, where the counts saturate); the I/O APIC's read-only and
//!   reserved entry bits stay 0.
//! - Legacy: the PIC masks, CMOS RAM and CRTC registers read back what was written; the clock
//!   registers hold valid BCD (or binary) values; the i8042 delivers each scancode once, in order,
//!   with OBF and IRQ 1 up exactly while one waits.
//! - Port and MMIO bus: an insert succeeds exactly when the range is non-empty and overlaps no
//!   mapped range; a lookup finds the one range holding the address, with the right offset.
//! - MP tables and BDA words: built exactly when the placement is legal, with valid checksums and
//!   the addresses asked for.
#![no_main]

use std::collections::{BTreeSet, VecDeque};
use std::ops::Bound;

use arbitrary::{Result, Unstructured};
use carousel_devices::bus::{Bus, BusAddress, BusError};
use carousel_devices::ide::{self, DataWidth, DiskIo, DiskIoKind, IdeChannel, SECTOR_SIZE};
use carousel_devices::interrupts::{deliver_irq, programmed_vectors, IrqDelivery, VectorSet};
use carousel_devices::ioapic::{self, IoApic, REDIRECTION_ENTRIES};
use carousel_devices::lapic::{self, Lapic, TimerClock, TimerClockError};
use carousel_devices::legacy::{self, Cmos, CrtcCursor, DateTime, Pic8259Masks, PicChip, I8042};
use carousel_devices::line_buffer::{LineBuffer, LINE_CAPACITY};
use carousel_devices::mptable::{self, bda_words, mp_tables, MpTableError};
use carousel_devices::uart::{self, InterruptLine, Uart16550};
use libfuzzer_sys::fuzz_target;

/// Most operations one input runs (keeps each input fast).
const MAX_OPS: usize = 1024;

/// An interrupt line that checks what the model tells it: only changes are reported.
#[derive(Debug, Default)]
struct CheckedLine {
    level: bool,
}

impl InterruptLine for CheckedLine {
    fn set_level(&mut self, asserted: bool) {
        assert_ne!(asserted, self.level, "set_level must report changes only");
        self.level = asserted;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let _ = match which % 7 {
        0 => uart(&mut u),
        1 => ide(&mut u),
        2 => interrupts(&mut u),
        3 => legacy(&mut u),
        4 => bus::<u16>(&mut u),
        5 => bus::<u64>(&mut u),
        _ => mp_tables_and_bda(&mut u),
    };
});

/// Runs `step` until the input runs out (or [`MAX_OPS`]).
fn ops(u: &mut Unstructured, mut step: impl FnMut(&mut Unstructured) -> Result<()>) -> Result<()> {
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        step(u)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 16550 UART and its line buffer

#[derive(Debug, Default)]
struct UartModel {
    dlab: bool,
    loopback: bool,
    fifos: bool,
    queue: VecDeque<u8>,
    dropped: u64,
    transmitted: Vec<u8>,
}

impl UartModel {
    fn receive(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if self.queue.len() < uart::RX_QUEUE_CAPACITY {
                self.queue.push_back(byte);
            } else {
                self.dropped += 1;
            }
        }
    }
}

fn uart(u: &mut Unstructured) -> Result<()> {
    let mut device = Uart16550::new();
    let mut line = CheckedLine::default();
    let mut sent: Vec<u8> = Vec::new();
    let mut model = UartModel::default();
    ops(u, |u| {
        match u.int_in_range(0..=3u8)? {
            0 => {
                let offset = u.int_in_range(0..=9u8)?;
                let level_before = device.irq_level();
                let value = device.read(offset, &mut line);
                match offset {
                    uart::RBR if !model.dlab => {
                        assert_eq!(value, model.queue.pop_front().unwrap_or(0), "RBR");
                    }
                    uart::IIR => {
                        assert_eq!(
                            value & 1 == 0,
                            level_before,
                            "IIR {value:#x} against the line"
                        );
                        assert_eq!(value & 0x30, 0, "IIR bits 5:4");
                        let fifos = if model.fifos {
                            uart::IIR_FIFOS_ENABLED
                        } else {
                            0
                        };
                        assert_eq!(value & 0xC0, fifos, "IIR FIFO bits");
                    }
                    uart::LSR => {
                        assert_ne!(value, 0xFF, "LSR reads 0xFF");
                        assert_eq!(value & uart::LSR_THRE, uart::LSR_THRE);
                        assert_eq!(value & uart::LSR_DR != 0, !model.queue.is_empty(), "LSR.DR");
                    }
                    8.. => assert_eq!(value, uart::OPEN_BUS),
                    _ => {}
                }
            }
            1 => {
                let offset = u.int_in_range(0..=9u8)?;
                let value: u8 = u.arbitrary()?;
                device.write(offset, value, &mut sent, &mut line);
                match offset {
                    uart::THR if !model.dlab => {
                        if model.loopback {
                            model.receive(&[value]);
                        } else {
                            model.transmitted.push(value);
                        }
                    }
                    uart::FCR => {
                        let fifos = value & uart::FCR_FIFO_ENABLE != 0;
                        if fifos != model.fifos || value & uart::FCR_RCVR_FIFO_RESET != 0 {
                            model.queue.clear();
                        }
                        model.fifos = fifos;
                    }
                    uart::LCR => model.dlab = value & uart::LCR_DLAB != 0,
                    uart::MCR => model.loopback = value & uart::MCR_LOOP != 0,
                    _ => {}
                }
            }
            2 => {
                let bytes: Vec<u8> = u.arbitrary()?;
                device.push_input(&bytes, &mut line);
                model.receive(&bytes);
            }
            _ => {
                // A flood past the queue's capacity.
                let count = u.int_in_range(0..=2 * uart::RX_QUEUE_CAPACITY)?;
                let bytes = vec![b'#'; count];
                device.push_input(&bytes, &mut line);
                model.receive(&bytes);
            }
        }
        assert_eq!(line.level, device.irq_level(), "interrupt line");
        assert_eq!(device.dropped_input_bytes(), model.dropped);
        assert_eq!(sent, model.transmitted, "transmitted bytes");
        Ok(())
    })?;
    check_lines(&sent);
    Ok(())
}

/// The line buffer over `output`: lines without CR or LF, none longer than its capacity, which
/// together hold every other byte, in order.
fn check_lines(output: &[u8]) {
    let mut buffer = LineBuffer::new();
    let mut joined = Vec::new();
    let mut take = |line: &[u8]| {
        assert!(line.len() <= LINE_CAPACITY);
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
        joined.extend_from_slice(line);
    };
    for &byte in output {
        if let Some(line) = buffer.push(byte) {
            take(line);
        }
    }
    if let Some(line) = buffer.flush() {
        take(line);
    }
    let expected: Vec<u8> = output
        .iter()
        .copied()
        .filter(|&byte| byte != b'\n' && byte != b'\r')
        .collect();
    assert_eq!(joined, expected, "the line buffer lost or invented bytes");
}

// ---------------------------------------------------------------------------------------------
// IDE

/// A transfer as the guest should see it: absolute byte positions on the disk.
#[derive(Debug, Clone)]
struct ModelTransfer {
    kind: DiskIoKind,
    position: usize,
    end: usize,
    /// The bytes of the sector being written.
    sector: Vec<u8>,
}

#[derive(Debug)]
struct IdeModel {
    disk: Option<Vec<u8>>,
    /// Task file: features, sector count, LBA low, mid, high, device (offsets 1..=6).
    task_file: [u8; 7],
    transfer: Option<ModelTransfer>,
    sectors_read: u64,
    sectors_written: u64,
    written: BTreeSet<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    Master,
    Disk,
    Absent,
}

impl IdeModel {
    fn selected(&self) -> Selected {
        match (
            self.task_file[6] & ide::DEVICE_DEV != 0,
            self.disk.is_some(),
        ) {
            (false, _) => Selected::Master,
            (true, true) => Selected::Disk,
            (true, false) => Selected::Absent,
        }
    }

    fn sectors(&self) -> usize {
        self.disk
            .as_ref()
            .map_or(0, |disk| disk.len() / SECTOR_SIZE)
    }

    /// The transfer moving data `kind`-wise, if the guest can reach it now.
    fn active(&mut self, kind: DiskIoKind) -> Option<&mut ModelTransfer> {
        if self.selected() != Selected::Disk {
            return None;
        }
        self.transfer
            .as_mut()
            .filter(|transfer| transfer.kind == kind)
    }

    /// A data-in access of `len` bytes: what the guest must read (zeros past the transfer).
    fn read(&mut self, len: usize) -> (Vec<u8>, usize) {
        let mut out = vec![0; len];
        let mut filled = 0;
        let mut finished_sectors = 0;
        let mut ended = false;
        if let Some(transfer) = self.active(DiskIoKind::Read) {
            let start = transfer.position;
            let count = len.min(transfer.end - start);
            transfer.position += count;
            finished_sectors = transfer.position / SECTOR_SIZE - start / SECTOR_SIZE;
            ended = transfer.position == transfer.end;
            filled = count;
            let disk = self.disk.as_ref().expect("a transfer needs the disk");
            out[..count].copy_from_slice(&disk[start..start + count]);
        }
        self.sectors_read += finished_sectors as u64;
        if ended {
            self.transfer = None;
        }
        (out, filled)
    }

    /// A data-out access: how many bytes the disk must take.
    fn write(&mut self, data: &[u8]) -> usize {
        let Some(transfer) = self.active(DiskIoKind::Write) else {
            return 0;
        };
        let mut finished = Vec::new();
        let mut taken = 0;
        for &byte in data {
            if transfer.position == transfer.end {
                break;
            }
            transfer.sector.push(byte);
            transfer.position += 1;
            taken += 1;
            if transfer.position.is_multiple_of(SECTOR_SIZE) {
                finished.push((
                    transfer.position / SECTOR_SIZE - 1,
                    std::mem::take(&mut transfer.sector),
                ));
            }
        }
        let ended = transfer.position == transfer.end;
        let disk = self.disk.as_mut().expect("a transfer needs the disk");
        for (lba, bytes) in finished {
            disk[lba * SECTOR_SIZE..(lba + 1) * SECTOR_SIZE].copy_from_slice(&bytes);
            self.written.insert(lba as u32);
            self.sectors_written += 1;
        }
        if ended {
            self.transfer = None;
        }
        taken
    }

    /// A command write: the transfer it must start, if the disk accepts it.
    fn command(&mut self, command: u8) -> Option<DiskIo> {
        match self.selected() {
            Selected::Absent => return None,
            Selected::Master => {
                self.transfer = None;
                return None;
            }
            Selected::Disk => self.transfer = None,
        }
        let kind = match command {
            ide::COMMAND_READ_SECTORS | ide::COMMAND_READ_MULTIPLE => DiskIoKind::Read,
            ide::COMMAND_WRITE_SECTORS | ide::COMMAND_WRITE_MULTIPLE => DiskIoKind::Write,
            _ => return None,
        };
        let device = self.task_file[6];
        if device & ide::DEVICE_LBA == 0 {
            return None;
        }
        let lba = u32::from_le_bytes([
            self.task_file[3],
            self.task_file[4],
            self.task_file[5],
            device & 0x0F,
        ]);
        let sectors = match self.task_file[2] {
            0 => 256,
            count => u32::from(count),
        };
        if lba as usize + sectors as usize > self.sectors() {
            return None;
        }
        self.transfer = Some(ModelTransfer {
            kind,
            position: lba as usize * SECTOR_SIZE,
            end: (lba + sectors) as usize * SECTOR_SIZE,
            sector: Vec::new(),
        });
        Some(DiskIo {
            kind,
            lba,
            sectors: sectors as u16,
        })
    }

    fn reset(&mut self) {
        self.transfer = None;
        self.task_file = [0, 0, 1, 1, 0, 0, 0];
    }
}

fn width(u: &mut Unstructured) -> Result<DataWidth> {
    Ok(*u.choose(&[DataWidth::Byte, DataWidth::Word, DataWidth::Dword])?)
}

fn ide(u: &mut Unstructured) -> Result<()> {
    for bytes in 0..=8 {
        let expected = match bytes {
            1 => Some(DataWidth::Byte),
            2 => Some(DataWidth::Word),
            4 => Some(DataWidth::Dword),
            _ => None,
        };
        assert_eq!(DataWidth::from_bytes(bytes), expected);
    }
    let odd = u.int_in_range(1..=SECTOR_SIZE - 1)?;
    assert!(ide::DiskImageError::check(odd as u64).is_err());

    let sectors = u.int_in_range(0..=64usize)?;
    let image: Vec<u8> = (0..sectors * SECTOR_SIZE)
        .map(|index| (index.wrapping_mul(31) ^ (index >> 9)) as u8)
        .collect();
    let (mut device, disk) = if sectors == 0 && u.arbitrary()? {
        (IdeChannel::without_disk(), None)
    } else {
        (
            IdeChannel::new(sectors as u64).expect("LBA28 reaches it"),
            Some(image.clone()),
        )
    };
    // The sectors behind drive 1, as the hypervisor's store holds them.
    let mut store: Vec<u8> = disk.clone().unwrap_or_default();
    let mut model = IdeModel {
        disk,
        task_file: [0; 7],
        transfer: None,
        sectors_read: 0,
        sectors_written: 0,
        written: BTreeSet::new(),
    };
    let mut line = CheckedLine::default();
    let mut events: Vec<DiskIo> = Vec::new();
    ops(u, |u| {
        match u.int_in_range(0..=7u8)? {
            0 => {
                let offset = u.int_in_range(0..=9u8)?;
                let value = device.read(offset, &mut line, &mut store);
                match offset {
                    ide::DATA => assert_eq!(value, model.read(1).0[0], "data byte"),
                    ide::SECTOR_COUNT..=ide::DEVICE => {
                        assert_eq!(
                            value,
                            model.task_file[usize::from(offset)],
                            "task file {offset}"
                        );
                    }
                    8.. => assert_eq!(value, ide::OPEN_BUS),
                    _ => {}
                }
            }
            1 => {
                let offset = u.int_in_range(0..=9u8)?;
                // Mostly the commands the model knows, sometimes any byte.
                let value = if offset == ide::COMMAND && u.arbitrary()? {
                    *u.choose(&[
                        ide::COMMAND_READ_SECTORS,
                        ide::COMMAND_READ_MULTIPLE,
                        ide::COMMAND_WRITE_SECTORS,
                        ide::COMMAND_WRITE_MULTIPLE,
                    ])?
                } else {
                    u.arbitrary()?
                };
                let before = events.len();
                device.write(offset, value, &mut line, &mut events, &mut store);
                let accepted = events.get(before).copied();
                match offset {
                    ide::DATA => {
                        model.write(&[value]);
                    }
                    ide::FEATURES..=ide::DEVICE => model.task_file[usize::from(offset)] = value,
                    ide::COMMAND => {
                        assert_eq!(accepted, model.command(value), "command {value:#x}");
                        assert!(events.len() <= before + 1);
                    }
                    _ => {}
                }
                if offset != ide::COMMAND {
                    assert_eq!(events.len(), before, "a transfer started without a command");
                }
            }
            2 => {
                let width = width(u)?;
                let value = device.read_data(width, &mut line, &mut store);
                let (bytes, _) = model.read(width.bytes());
                let mut expected = [0; 4];
                expected[..bytes.len()].copy_from_slice(&bytes);
                assert_eq!(value, u32::from_le_bytes(expected), "{width:?} data read");
            }
            3 => {
                let width = width(u)?;
                let value: u32 = u.arbitrary()?;
                device.write_data(width, value, &mut line, &mut store);
                model.write(&value.to_le_bytes()[..width.bytes()]);
            }
            4 => {
                let len = u.int_in_range(0..=3 * SECTOR_SIZE)?;
                let mut buffer = vec![0xA5; len];
                let filled = device.read_data_block(&mut buffer, &mut line, &mut store);
                let (expected, expected_filled) = model.read(len);
                assert_eq!(filled, expected_filled, "bytes from a block read");
                assert!(buffer == expected, "block read data");
            }
            5 => {
                let len = u.int_in_range(0..=3 * SECTOR_SIZE)?;
                let fill: u8 = u.arbitrary()?;
                let data: Vec<u8> = (0..len)
                    .map(|index| fill.wrapping_add(index as u8))
                    .collect();
                let taken = device.write_data_block(&data, &mut line, &mut store);
                assert_eq!(taken, model.write(&data), "bytes a block write took");
            }
            6 => {
                let value: u8 = u.arbitrary()?;
                device.write_control(value, &mut line);
                if value & ide::CONTROL_SRST != 0 {
                    model.reset();
                }
            }
            _ => {
                // xv6's set-up of a transfer in one go: LBA, count, drive 1, command.
                let lba: u32 = u.int_in_range(0..=(model.sectors() as u32 + 2))?;
                let count: u8 = u.int_in_range(0..=4u8)?;
                let command =
                    *u.choose(&[ide::COMMAND_READ_SECTORS, ide::COMMAND_WRITE_SECTORS])?;
                let device_register = 0xE0 | ide::DEVICE_DEV | ((lba >> 24) as u8 & 0x0F);
                let writes = [
                    (ide::SECTOR_COUNT, count),
                    (ide::LBA_LOW, lba as u8),
                    (ide::LBA_MID, (lba >> 8) as u8),
                    (ide::LBA_HIGH, (lba >> 16) as u8),
                    (ide::DEVICE, device_register),
                ];
                for (offset, value) in writes {
                    device.write(offset, value, &mut line, &mut events, &mut store);
                    model.task_file[usize::from(offset)] = value;
                }
                let before = events.len();
                device.write(ide::COMMAND, command, &mut line, &mut events, &mut store);
                assert_eq!(events.get(before).copied(), model.command(command));
            }
        }
        let status = device.status();
        assert_eq!(device.read_control(), status);
        match model.selected() {
            Selected::Absent => assert_eq!(status, 0, "absent drive 1 answers"),
            selected => {
                assert_eq!(
                    status & (ide::STATUS_BSY | ide::STATUS_DF),
                    0,
                    "status {status:#x}"
                );
                assert_ne!(status & ide::STATUS_DRDY, 0, "status {status:#x}");
                let drq = selected == Selected::Disk && model.transfer.is_some();
                assert_eq!(
                    status & ide::STATUS_DRQ != 0,
                    drq,
                    "DRQ in status {status:#x}"
                );
            }
        }
        assert_eq!(line.level, device.irq_level(), "interrupt line");
        Ok(())
    })?;
    for io in &events {
        assert!(
            (1..=256).contains(&io.sectors)
                && io.lba as usize + usize::from(io.sectors) <= model.sectors(),
            "{io:?} outside a disk of {} sectors",
            model.sectors()
        );
    }
    assert!(
        store == model.disk.as_deref().unwrap_or(&[]),
        "disk contents"
    );
    assert_eq!(device.has_disk(), model.disk.is_some());
    assert_eq!(device.sectors_read(), model.sectors_read);
    assert_eq!(device.sectors_written(), model.sectors_written);
    // Only sectors the model saw written differ from the image.
    for (lba, (now, then)) in store
        .chunks(SECTOR_SIZE)
        .zip(image.chunks(SECTOR_SIZE))
        .enumerate()
    {
        assert!(
            now == then || model.written.contains(&(lba as u32)),
            "sector {lba}"
        );
    }
    assert_eq!(device.disk_sectors(), model.sectors() as u64);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Local APIC and I/O APIC

/// Every register offset of the local APIC page, so most accesses hit one.
const LAPIC_REGISTERS: [u64; 24] = [
    lapic::ID,
    lapic::VERSION,
    lapic::TPR,
    lapic::APR,
    lapic::PPR,
    lapic::EOI,
    lapic::RRD,
    lapic::LDR,
    lapic::DFR,
    lapic::SVR,
    lapic::ISR,
    lapic::TMR,
    lapic::IRR,
    lapic::ESR,
    lapic::ICR_LOW,
    lapic::ICR_HIGH,
    lapic::LVT_TIMER,
    lapic::LVT_THERMAL_SENSOR,
    lapic::LVT_PERFORMANCE_MONITORING,
    lapic::LVT_LINT0,
    lapic::LVT_LINT1,
    lapic::LVT_ERROR,
    lapic::TIMER_INITIAL_COUNT,
    lapic::TIMER_DIVIDE_CONFIGURATION,
];

fn size(u: &mut Unstructured) -> Result<u8> {
    // Mostly the 32-bit accesses the registers take.
    if u.ratio(3, 4)? {
        Ok(4)
    } else {
        u.arbitrary()
    }
}

fn lapic_offset(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => u64::from(u.arbitrary::<u16>()?),
        1 => lapic::ISR + 16 * u.int_in_range(0..=23u64)?,
        2 => lapic::TIMER_CURRENT_COUNT,
        _ => *u.choose(&LAPIC_REGISTERS)?,
    })
}

fn interrupts(u: &mut Unstructured) -> Result<()> {
    let apic_hz: u64 = if u.arbitrary()? {
        lapic::DEFAULT_APIC_TIMER_HZ
    } else {
        u.arbitrary()?
    };
    let tsc_hz: u64 = if u.arbitrary()? {
        2_000_000_000
    } else {
        u.arbitrary()?
    };
    let clock = match TimerClock::new(apic_hz, tsc_hz) {
        Ok(clock) => clock,
        Err(error) => {
            let expected = if apic_hz == 0 {
                TimerClockError::ZeroApicHz
            } else {
                TimerClockError::ZeroTscHz
            };
            assert_eq!(error, expected);
            return Ok(());
        }
    };
    let apic_id: u8 = if u.arbitrary()? { 0 } else { u.arbitrary()? };
    let mut lapic = Lapic::new(apic_id, clock);
    let mut ioapic = IoApic::new(u.arbitrary()?);
    let mut select: u8 = 0;
    // Timer expiries reported so far (saturating: a timer clock far faster than the TSC).
    let mut expirations = 0u64;
    let mut now: u64 = if u.arbitrary()? { 0 } else { u.arbitrary()? };
    // Every vector the guest's programming ever allowed.
    let mut programmed = VectorSet::new();
    let remember = |set: VectorSet, programmed: &mut VectorSet| {
        for vector in set.iter() {
            programmed.insert(vector);
        }
    };
    ops(u, |u| {
        remember(programmed_vectors(&lapic, &ioapic), &mut programmed);
        match u.int_in_range(0..=11u8)? {
            0 | 1 => {
                let offset = lapic_offset(u)?;
                let size = size(u)?;
                let value = lapic.read_sized(offset, size, now);
                if size != 4 {
                    assert_eq!(value, 0, "a {size}-byte read");
                } else if offset == lapic::ICR_LOW {
                    assert_eq!(
                        value as u32 & lapic::DELIVERY_STATUS,
                        0,
                        "ICR delivery status"
                    );
                } else if offset == lapic::VERSION {
                    assert_eq!(value as u32, lapic::VERSION_VALUE);
                }
            }
            2..=4 => {
                let offset = lapic_offset(u)?;
                let size = size(u)?;
                let value: u64 = u.arbitrary()?;
                lapic.write_sized(offset, size, value, now);
                // An ICR write is the guest naming a vector: a fixed self-IPI raises it.
                if size == 4 && offset == lapic::ICR_LOW {
                    programmed.insert(value as u8);
                }
            }
            5 => {
                let offset = *u.choose(&[ioapic::IOREGSEL, ioapic::IOWIN, 0x20, 0x04])?;
                let size = size(u)?;
                let value = ioapic.read_sized(offset, size) as u32;
                if size == 4 && offset == ioapic::IOWIN {
                    match u32::from(select) {
                        ioapic::IOAPICVER => assert_eq!(value, ioapic::VERSION_VALUE),
                        ioapic::IOAPICID | ioapic::IOAPICARB => {
                            assert_eq!(value, u32::from(ioapic.id()) << 24);
                        }
                        _ => {}
                    }
                } else if size == 4 && offset == ioapic::IOREGSEL {
                    assert_eq!(value, u32::from(select));
                } else {
                    assert_eq!(value, 0);
                }
            }
            6 => {
                let offset = *u.choose(&[ioapic::IOREGSEL, ioapic::IOWIN, 0x20, 0x04])?;
                let size = size(u)?;
                let value: u32 = if offset == ioapic::IOREGSEL && u.arbitrary()? {
                    // A redirection register or one of the three others.
                    u.int_in_range(0..=(ioapic::IOREDTBL + 2 * REDIRECTION_ENTRIES as u32))?
                } else {
                    u.arbitrary()?
                };
                ioapic.write_sized(offset, size, u64::from(value));
                if size == 4 && offset == ioapic::IOREGSEL {
                    select = value as u8;
                }
            }
            7 => {
                let cycles: u64 = match u.int_in_range(0..=3u8)? {
                    0 => u.arbitrary()?,
                    _ => u64::from(u.arbitrary::<u32>()?),
                };
                now = now.saturating_add(cycles);
            }
            8 => {
                let fire = lapic.advance(now);
                // The counts saturate at u64::MAX (a timer clock far faster than the TSC).
                let unraised = fire.coalesced.saturating_add(fire.dropped);
                assert!(unraised <= fire.expirations, "{fire:?}");
                assert!(
                    fire.first_deadline.is_none_or(|deadline| deadline <= now),
                    "{fire:?}"
                );
                if fire.expirations < u64::MAX {
                    assert_eq!(fire.raised, fire.expirations > unraised, "{fire:?}");
                }
                // Past 2^64 expiries of one count the model no longer knows the next one: that
                // takes more than 2^64 expiries reported in all.
                expirations = expirations.saturating_add(fire.expirations);
                let saturated = expirations == u64::MAX;
                let deadline = lapic.next_deadline();
                assert!(
                    saturated
                        || deadline.is_none_or(|deadline| deadline > now || deadline == u64::MAX),
                    "next deadline {deadline:?} at {now}: {lapic:?}"
                );
            }
            9 => {
                let irq = u.int_in_range(0..=REDIRECTION_ENTRIES as u8 + 2)?;
                let allowed = programmed_vectors(&lapic, &ioapic);
                match deliver_irq(irq, &mut ioapic, &mut lapic) {
                    IrqDelivery::Raised(vector) | IrqDelivery::AlreadyPending(vector) => {
                        assert!(allowed.contains(vector), "IRQ {irq} raised vector {vector}");
                    }
                    IrqDelivery::NotRouted | IrqDelivery::Rejected(_) => {}
                }
            }
            10 => {
                let priority = lapic.processor_priority();
                if let Some(vector) = lapic.pending_vector() {
                    assert!(
                        vector >> 4 > priority >> 4,
                        "vector {vector} at priority {priority}"
                    );
                    assert_eq!(lapic.acknowledge(vector), Ok(()));
                    assert!(lapic.in_service().contains(vector));
                } else {
                    let vector: u8 = u.arbitrary()?;
                    assert!(lapic.acknowledge(vector).is_err());
                }
            }
            _ => lapic.write(lapic::EOI, 0, now),
        }
        remember(programmed_vectors(&lapic, &ioapic), &mut programmed);

        let requested = lapic.requested();
        let in_service = lapic.in_service();
        for vector in requested.iter().chain(in_service.iter()) {
            assert!(vector >= 16, "vector {vector} pending or in service");
            assert!(
                programmed.contains(vector),
                "vector {vector} was never programmed"
            );
        }
        let mut classes = [false; 16];
        for vector in in_service.iter() {
            let class = usize::from(vector >> 4);
            assert!(!classes[class], "two vectors of class {class} in service");
            classes[class] = true;
        }
        if let Some(vector) = lapic.pending_vector() {
            assert!(requested.contains(vector));
            assert!(vector >> 4 > lapic.processor_priority() >> 4);
        }
        assert_eq!(
            lapic.read(lapic::ICR_LOW, now) & lapic::DELIVERY_STATUS,
            0,
            "ICR"
        );
        let current = lapic.read(lapic::TIMER_CURRENT_COUNT, now);
        let initial = lapic.read(lapic::TIMER_INITIAL_COUNT, now);
        assert!(
            current <= initial,
            "current count {current} above initial {initial}"
        );
        if !lapic.apic_enabled() {
            assert!(lapic.pending_vector().is_none());
            assert!(
                lapic.timer_vector().is_none(),
                "LVT timer unmasked while disabled"
            );
        }
        for irq in 0..REDIRECTION_ENTRIES as u8 {
            let bits = ioapic.entry(irq).expect("an entry").bits();
            let fixed =
                ioapic::ENTRY_DELIVERY_STATUS | ioapic::ENTRY_REMOTE_IRR | 0x00FF_FFFF_FFFE_0000;
            assert_eq!(bits & fixed, 0, "entry {irq} = {bits:#x}");
        }
        assert!(ioapic.entry(REDIRECTION_ENTRIES as u8).is_none());
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// 8259 masks, CMOS, i8042, CRTC

const CLOCK_REGISTERS: [u8; 8] = [
    legacy::RTC_SECONDS,
    legacy::RTC_MINUTES,
    legacy::RTC_HOURS,
    legacy::RTC_DAY_OF_WEEK,
    legacy::RTC_DAY_OF_MONTH,
    legacy::RTC_MONTH,
    legacy::RTC_YEAR,
    legacy::RTC_CENTURY,
];

fn date_time(u: &mut Unstructured) -> Result<DateTime> {
    Ok(DateTime {
        year: u.arbitrary()?,
        month: u.arbitrary()?,
        day: u.arbitrary()?,
        weekday: u.arbitrary()?,
        hour: u.arbitrary()?,
        minute: u.arbitrary()?,
        second: u.arbitrary()?,
    })
}

fn legacy(u: &mut Unstructured) -> Result<()> {
    let mut pic = Pic8259Masks::new();
    let mut masks = [legacy::PIC_RESET_MASK; 2];
    let mut cmos = Cmos::new(date_time(u)?);
    let mut cmos_index: u8 = 0;
    let mut cmos_ram = [0u8; legacy::CMOS_RAM_SIZE];
    cmos_ram[usize::from(legacy::RTC_STATUS_A)] = legacy::RTC_A_RESET;
    cmos_ram[usize::from(legacy::RTC_STATUS_B)] = legacy::RTC_B_RESET;
    let mut keyboard = I8042::new();
    let mut keyboard_line = CheckedLine::default();
    let mut scancodes: VecDeque<u8> = VecDeque::new();
    let mut dropped_scancodes = 0u64;
    let mut crtc = CrtcCursor::new();
    let mut crtc_index: u8 = 0;
    let mut crtc_registers = [0u8; 256];
    ops(u, |u| {
        match u.int_in_range(0..=9u8)? {
            0 => {
                let chip = *u.choose(&[PicChip::Master, PicChip::Slave])?;
                let offset = u.int_in_range(0..=2u8)?;
                let value: u8 = u.arbitrary()?;
                pic.write(chip, offset, value);
                if offset == legacy::PIC_DATA {
                    masks[chip as usize] = value;
                }
            }
            1 => {
                let chip = *u.choose(&[PicChip::Master, PicChip::Slave])?;
                let offset = u.int_in_range(0..=2u8)?;
                let expected = if offset == legacy::PIC_DATA {
                    masks[chip as usize]
                } else {
                    0
                };
                assert_eq!(pic.read(chip, offset), expected, "{chip:?} port {offset}");
                assert_eq!(pic.mask(chip), masks[chip as usize]);
            }
            2 => {
                let offset = u.int_in_range(0..=2u8)?;
                let value: u8 = if offset == legacy::CMOS_INDEX && u.arbitrary()? {
                    *u.choose(&CLOCK_REGISTERS)? | if u.arbitrary()? { 0x80 } else { 0 }
                } else {
                    u.arbitrary()?
                };
                cmos.write(offset, value);
                match offset {
                    legacy::CMOS_INDEX => cmos_index = value & 0x7F,
                    legacy::CMOS_DATA => match cmos_index {
                        index if CLOCK_REGISTERS.contains(&index) => {}
                        legacy::RTC_STATUS_C | legacy::RTC_STATUS_D => {}
                        legacy::RTC_STATUS_A => {
                            cmos_ram[usize::from(cmos_index)] = value & !legacy::RTC_A_UIP;
                        }
                        index => cmos_ram[usize::from(index)] = value,
                    },
                    _ => {}
                }
            }
            3 => {
                let offset = u.int_in_range(0..=2u8)?;
                let value = cmos.read(offset);
                if offset != legacy::CMOS_DATA {
                    assert_eq!(value, 0xFF);
                    return Ok(());
                }
                let status_b = cmos_ram[usize::from(legacy::RTC_STATUS_B)];
                match cmos_index {
                    index if CLOCK_REGISTERS.contains(&index) => {
                        let mut digits = value;
                        if index == legacy::RTC_HOURS && status_b & legacy::RTC_B_24_HOUR == 0 {
                            digits &= 0x7F;
                        }
                        if status_b & legacy::RTC_B_DM == 0 {
                            assert!(
                                digits >> 4 <= 9 && digits & 0xF <= 9,
                                "BCD {value:#x} at {index:#x}"
                            );
                        } else {
                            assert!(digits < 100, "binary {value} at {index:#x}");
                        }
                    }
                    legacy::RTC_STATUS_C => assert_eq!(value, 0),
                    legacy::RTC_STATUS_D => assert_eq!(value, legacy::RTC_D_VRT),
                    index => assert_eq!(value, cmos_ram[usize::from(index)], "CMOS {index:#x}"),
                }
            }
            4 => {
                let time = date_time(u)?;
                cmos.set_time(time);
                assert_eq!(cmos.time(), time);
            }
            5 => {
                let scancode: u8 = u.arbitrary()?;
                let count = if u.ratio(1, 16)? { 300 } else { 1 };
                for _ in 0..count {
                    keyboard.push_scancode(scancode, &mut keyboard_line);
                    if scancodes.len() < legacy::SCANCODE_QUEUE_CAPACITY {
                        scancodes.push_back(scancode);
                    } else {
                        dropped_scancodes += 1;
                    }
                }
            }
            6 => {
                let offset = u.int_in_range(0..=5u8)?;
                let value = keyboard.read(offset, &mut keyboard_line);
                let expected = match offset {
                    legacy::I8042_DATA => scancodes.pop_front().unwrap_or(0),
                    legacy::I8042_STATUS if scancodes.is_empty() => 0,
                    legacy::I8042_STATUS => legacy::I8042_STATUS_OBF,
                    _ => 0,
                };
                assert_eq!(value, expected, "i8042 port offset {offset}");
                keyboard.write(offset, u.arbitrary()?);
            }
            7 => {
                let offset = u.int_in_range(0..=2u8)?;
                let value: u8 = if offset == legacy::CRTC_INDEX && u.arbitrary()? {
                    *u.choose(&[
                        legacy::CRTC_CURSOR_LOCATION_HIGH,
                        legacy::CRTC_CURSOR_LOCATION_LOW,
                    ])?
                } else {
                    u.arbitrary()?
                };
                crtc.write(offset, value);
                match offset {
                    legacy::CRTC_INDEX => crtc_index = value,
                    legacy::CRTC_DATA => crtc_registers[usize::from(crtc_index)] = value,
                    _ => {}
                }
            }
            _ => {
                let offset = u.int_in_range(0..=2u8)?;
                let expected = match offset {
                    legacy::CRTC_INDEX => crtc_index,
                    legacy::CRTC_DATA => crtc_registers[usize::from(crtc_index)],
                    _ => 0,
                };
                assert_eq!(crtc.read(offset), expected, "CRTC offset {offset}");
            }
        }
        assert_eq!(keyboard_line.level, !scancodes.is_empty(), "IRQ 1");
        assert_eq!(keyboard.irq_level(), !scancodes.is_empty());
        assert_eq!(
            keyboard.status() & legacy::I8042_STATUS_OBF != 0,
            !scancodes.is_empty()
        );
        assert_eq!(keyboard.dropped_scancodes(), dropped_scancodes);
        let cursor = u16::from_be_bytes([crtc_registers[14], crtc_registers[15]]);
        assert_eq!(crtc.cursor_position(), cursor);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Port and MMIO bus

/// What the fuzzer needs of an address type beyond [`BusAddress`].
trait Address: BusAddress + for<'a> arbitrary::Arbitrary<'a> + Into<u128> {
    fn from_u128(value: u128) -> Self;
}

impl Address for u16 {
    fn from_u128(value: u128) -> Self {
        value as u16
    }
}

impl Address for u64 {
    fn from_u128(value: u128) -> Self {
        value as u64
    }
}

fn address<A: Address>(u: &mut Unstructured) -> Result<A> {
    // Mostly small addresses, so ranges meet; sometimes the ends of the space.
    Ok(match u.int_in_range(0..=5u8)? {
        0 => A::MIN,
        1 => A::MAX,
        2 => u.arbitrary()?,
        _ => A::from_u128(u128::from(u.arbitrary::<u8>()?)),
    })
}

fn bus<A: Address>(u: &mut Unstructured) -> Result<()> {
    let mut bus: Bus<A, u8> = Bus::new();
    // The reference: every mapped range as (first, last, device), in u128.
    let mut mapped: Vec<(u128, u128, u8)> = Vec::new();
    let max: u128 = A::MAX.into();
    ops(u, |u| {
        if u.ratio(1, 2)? {
            let device: u8 = u.arbitrary()?;
            let a: A = address(u)?;
            let b: A = address(u)?;
            let (start, end) = match u.int_in_range(0..=5u8)? {
                0 => (Bound::Included(a), Bound::Excluded(b)),
                1 => (Bound::Included(a), Bound::Included(b)),
                2 => (Bound::Included(a), Bound::Unbounded),
                3 => (Bound::Unbounded, Bound::Excluded(b)),
                4 => (Bound::Excluded(a), Bound::Included(b)),
                _ => (Bound::Unbounded, Bound::Unbounded),
            };
            let first: Option<u128> = match start {
                Bound::Included(a) => Some(a.into()),
                Bound::Excluded(a) => Some(a.into() + 1).filter(|&first| first <= max),
                Bound::Unbounded => Some(0),
            };
            let last: Option<u128> = match end {
                Bound::Included(b) => Some(b.into()),
                Bound::Excluded(b) => b.into().checked_sub(1),
                Bound::Unbounded => Some(max),
            };
            let range = first.zip(last).filter(|(first, last)| first <= last);
            let result = bus.insert((start, end), device);
            match (range, result) {
                (None, Err(BusError::EmptyRange { .. })) => {}
                (Some((first, last)), Ok(())) => {
                    assert!(
                        mapped.iter().all(|&(f, l, _)| l < first || last < f),
                        "{first:#x}..={last:#x} inserted over a mapped range"
                    );
                    mapped.push((first, last, device));
                }
                (Some((first, last)), Err(BusError::Overlap { new, existing })) => {
                    assert_eq!((new.first().into(), new.last().into()), (first, last));
                    let (existing_first, existing_last) =
                        (existing.first().into(), existing.last().into());
                    assert!(mapped
                        .iter()
                        .any(|&(f, l, _)| (f, l) == (existing_first, existing_last)));
                    assert!(
                        existing_first <= last && first <= existing_last,
                        "no overlap"
                    );
                    let _ = BusError::Overlap { new, existing }.to_string();
                }
                (range, result) => panic!("insert {range:?}: {result:?}"),
            }
        } else {
            let at: A = address(u)?;
            let at_wide: u128 = at.into();
            let expected = mapped
                .iter()
                .find(|&&(first, last, _)| first <= at_wide && at_wide <= last)
                .map(|&(first, _, device)| (device, at_wide - first));
            let found = bus
                .lookup(at)
                .map(|(device, offset)| (device, offset.into()));
            assert_eq!(found, expected, "lookup {at_wide:#x}");
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// MP tables and BDA words

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte)) == 0
}

fn mp_tables_and_bda(u: &mut Unstructured) -> Result<()> {
    ops(u, |u| {
        let ioapic_id: u8 = u.arbitrary()?;
        let gpa: u32 = if u.arbitrary()? {
            u.int_in_range(0..=0x10_0000)?
        } else {
            u.arbitrary()?
        };
        let table = gpa..gpa.saturating_add(mptable::CONFIG_TABLE_SIZE as u32);
        let legal = gpa != 0
            && table.end <= mptable::LOW_MEMORY_END
            && [mptable::BDA, mptable::AP_TRAMPOLINE]
                .iter()
                .all(|reserved| table.end <= reserved.start || reserved.end <= table.start);
        match mp_tables(ioapic_id, gpa) {
            Ok(tables) => {
                assert!(legal, "table at {gpa:#x} accepted");
                let config = &tables.config_table;
                assert_eq!(config.len(), mptable::CONFIG_TABLE_SIZE);
                assert!(checksum_ok(config), "configuration table checksum");
                assert!(
                    checksum_ok(&tables.floating_pointer),
                    "floating pointer checksum"
                );
                assert_eq!(
                    tables.floating_pointer[..4],
                    mptable::FLOATING_POINTER_SIGNATURE
                );
                assert_eq!(config[..4], mptable::CONFIG_TABLE_SIGNATURE);
                assert_eq!(tables.floating_pointer[4..8], gpa.to_le_bytes());
                let io_apic_entry = mptable::CONFIG_HEADER_SIZE + mptable::PROCESSOR_ENTRY_SIZE;
                assert_eq!(config[io_apic_entry], mptable::ENTRY_IO_APIC);
                assert_eq!(config[io_apic_entry + 1], ioapic_id);
                assert_eq!(
                    config[io_apic_entry + 4..io_apic_entry + 8],
                    mptable::IO_APIC_ADDRESS.to_le_bytes()
                );
            }
            Err(error) => {
                assert!(!legal, "legal table at {gpa:#x} refused: {error}");
                if gpa == 0 {
                    assert_eq!(error, MpTableError::NullTable);
                }
            }
        }
        let (segment, kib): (u16, u16) = (u.arbitrary()?, u.arbitrary()?);
        match bda_words(segment, kib) {
            Ok(words) => {
                assert!(segment != 0 || kib != 0);
                assert_eq!(words[0].gpa, mptable::BDA_EBDA_SEGMENT);
                assert_eq!(words[0].bytes(), segment.to_le_bytes());
                assert_eq!(words[1].gpa, mptable::BDA_BASE_MEMORY_KIB);
                assert_eq!(words[1].bytes(), kib.to_le_bytes());
            }
            Err(error) => {
                assert_eq!((segment, kib), (0, 0));
                assert_eq!(error, MpTableError::BothBdaWordsZero);
            }
        }
        Ok(())
    })
}
