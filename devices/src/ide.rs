//! The primary IDE channel in ATA PIO mode: a master with no media and a slave holding the VM's
//! disk, after the ATA/ATAPI-6 command block and control block register descriptions. The
//! disk's sectors live behind a [`SectorStore`] the caller passes in (the hypervisor's extent of
//! its shared drive, or a byte slice): the model holds one sector at a time.
//!
//! The command block sits at ports 0x1F0-0x1F7 (offsets [`DATA`]..=[`COMMAND`] here); the control
//! block register (device control on write, alternate status on read) at port 0x3F6 is reached
//! through [`IdeChannel::write_control`] and [`IdeChannel::read_control`].
//!
//! What a guest sees:
//! - Drive 0 (master) is present but has no media: its status is always DRDY | DSC (0x50), because
//!   xv6's `idewait` polls with drive 0 selected until DRDY shows (XV6-CONTRACT §8). Every command
//!   sent to it is aborted (ERR | DRDY, error ABRT).
//! - Drive 1 (slave) is the disk, of a size fixed when the channel is made; its sectors are read
//!   from and written to the [`SectorStore`] each access passes. Without one, drive 1 does not
//!   answer: its status reads 0, which is how xv6's probe tells "no disk 1".
//! - Untimed (the default), the disk is infinitely fast: BSY never shows. READ SECTORS and READ MULTIPLE have the data
//!   ready (DRQ) as soon as the command is written (the first sector is fetched from the store
//!   then, each next one when the last byte of the one before has been read); WRITE SECTORS and
//!   WRITE MULTIPLE show DRQ at once too, since xv6 starts `rep outsl` without polling, and each
//!   sector goes to the store as its last byte arrives, before any completion interrupt.
//! - Timed ([`IdeChannel::set_timed`]), each command that moves data waits for the hypervisor's
//!   shared disk queue: a read shows BSY from its command until [`IdeChannel::complete`], which
//!   makes its first data block ready and raises INTRQ; a write takes its data at once as above
//!   (each sector reaches the store as it arrives), then shows BSY until `complete` raises its
//!   completion interrupt. The data moves as fast either way; only the completion waits, which
//!   is what a guest sees of a device's service time. A BSY drive ignores commands; SRST drops
//!   the waiting command and says so ([`IdeChannel::take_cancel`]).
//! - A store that fails (a sector beyond the extent it serves, a drive error) ends the command
//!   with ERR | DRDY and error IDNF (out of range) or ABRT (device error); no data moves.
//! - Only 28-bit LBA addressing is decoded. A command in CHS mode, an unknown command, or a
//!   transfer reaching past the end of the disk is aborted with ERR | DRDY (0x51) and error ABRT or
//!   IDNF; nothing moves. xv6 never sends one (it panics on a block number past FSSIZE first), and
//!   would ignore the ERR bit on a write and silently skip the data on a read, so an in-range
//!   transfer never reports an error.
//! - INTRQ follows ATA: it becomes pending when a read's DRQ data block is ready, when a write's
//!   DRQ data block has been taken (the last one included), and when a command is aborted; reading
//!   the status register or writing a command clears it; device-control nIEN keeps it off the
//!   line without clearing it. A DRQ data block is one sector for READ/WRITE SECTORS and the whole
//!   transfer for READ/WRITE MULTIPLE (there is no SET MULTIPLE; xv6 would send the MULTIPLE
//!   commands with one block's worth of sectors if BSIZE exceeded 512).
//! - The data port moves a byte stream: 1-, 2- and 4-byte accesses take that many bytes, little
//!   endian. With no DRQ the data port reads 0 and ignores writes.
//! - Device-control SRST resets the channel at once (no BSY phase): any transfer is dropped, drive
//!   0 is selected and the task file holds the ATA signature.
//! - The task-file registers read back what was last written; they do not track the transfer.
//!
//! The model counts the sectors moved and reports each accepted transfer through [`DiskIoSink`].

use alloc::vec::Vec;
use core::fmt;

use crate::uart::{InterruptLine, LineLevel};

// Command block register offsets from [`PRIMARY_COMMAND_BLOCK`].

/// Data register, 0x1F0 (read and write).
pub const DATA: u8 = 0;
/// Error register, 0x1F1 (read).
pub const ERROR: u8 = 1;
/// Features register, 0x1F1 (write); stored, no command here uses it.
pub const FEATURES: u8 = 1;
/// Sector Count register, 0x1F2; 0 means 256 sectors.
pub const SECTOR_COUNT: u8 = 2;
/// LBA Low register, 0x1F3: LBA bits 7:0.
pub const LBA_LOW: u8 = 3;
/// LBA Mid register, 0x1F4: LBA bits 15:8.
pub const LBA_MID: u8 = 4;
/// LBA High register, 0x1F5: LBA bits 23:16.
pub const LBA_HIGH: u8 = 5;
/// Device register, 0x1F6: drive select, LBA mode and LBA bits 27:24.
pub const DEVICE: u8 = 6;
/// Status register, 0x1F7 (read); reading it clears a pending interrupt.
pub const STATUS: u8 = 7;
/// Command register, 0x1F7 (write).
pub const COMMAND: u8 = 7;
/// Number of register offsets the command block decodes: the width of its bus range.
pub const REGISTER_COUNT: u16 = 8;

/// First port of the primary channel's command block.
pub const PRIMARY_COMMAND_BLOCK: u16 = 0x1F0;
/// The primary channel's control block register: device control (write), alternate status (read).
pub const PRIMARY_CONTROL_BLOCK: u16 = 0x3F6;
/// ISA IRQ of the primary channel.
pub const PRIMARY_IRQ: u8 = 14;

/// Bytes per sector.
pub const SECTOR_SIZE: usize = 512;
/// Sectors 28-bit LBA can address: the largest disk the model takes.
pub const LBA28_SECTORS: u64 = 1 << 28;

/// Status: Error, the last command failed; the error register says why.
pub const STATUS_ERR: u8 = 1 << 0;
/// Status: Data Request, the data port is ready to transfer a word.
pub const STATUS_DRQ: u8 = 1 << 3;
/// Status: Device Seek Complete (obsolete since ATA-4; drives still report it when idle).
pub const STATUS_DSC: u8 = 1 << 4;
/// Status: Device Fault; never set here.
pub const STATUS_DF: u8 = 1 << 5;
/// Status: Device Ready.
pub const STATUS_DRDY: u8 = 1 << 6;
/// Status: Busy; set only while a timed command waits for the shared disk
/// ([`IdeChannel::set_timed`]).
pub const STATUS_BSY: u8 = 1 << 7;
/// Status of a present drive with nothing to do: DRDY | DSC.
pub const STATUS_IDLE: u8 = STATUS_DRDY | STATUS_DSC;

/// Error: Aborted Command (unknown command, CHS addressing, or the drive has no media).
pub const ERROR_ABRT: u8 = 1 << 2;
/// Error: ID Not Found (the transfer reaches past the last sector).
pub const ERROR_IDNF: u8 = 1 << 4;

/// Device register: DEV, selects drive 1 (the slave).
pub const DEVICE_DEV: u8 = 1 << 4;
/// Device register: LBA addressing (bits 3:0 are then LBA bits 27:24).
pub const DEVICE_LBA: u8 = 1 << 6;
/// Device register: LBA bits 27:24.
const DEVICE_LBA_HIGH_NIBBLE: u8 = 0x0F;

/// Device control: nIEN, keep INTRQ off the line.
pub const CONTROL_NIEN: u8 = 1 << 1;
/// Device control: SRST, software reset of both drives.
pub const CONTROL_SRST: u8 = 1 << 2;

/// READ SECTORS (PIO data-in, one sector per DRQ data block).
pub const COMMAND_READ_SECTORS: u8 = 0x20;
/// WRITE SECTORS (PIO data-out, one sector per DRQ data block).
pub const COMMAND_WRITE_SECTORS: u8 = 0x30;
/// READ MULTIPLE (PIO data-in; here the whole transfer is one DRQ data block).
pub const COMMAND_READ_MULTIPLE: u8 = 0xC4;
/// WRITE MULTIPLE (PIO data-out; here the whole transfer is one DRQ data block).
pub const COMMAND_WRITE_MULTIPLE: u8 = 0xC5;

/// What a read of an offset past [`STATUS`] returns: nothing drives the data bus.
pub const OPEN_BUS: u8 = 0xFF;

/// The width of one data-port access: `in`/`out` of a byte, word or doubleword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataWidth {
    /// 1 byte (`inb` / `outb`).
    Byte,
    /// 2 bytes (`inw` / `outw`).
    Word,
    /// 4 bytes (`inl` / `outl`, and each step of `rep insl` / `rep outsl`).
    Dword,
}

impl DataWidth {
    /// The width of a `bytes`-byte access; `None` unless `bytes` is 1, 2 or 4.
    pub const fn from_bytes(bytes: u8) -> Option<Self> {
        match bytes {
            1 => Some(Self::Byte),
            2 => Some(Self::Word),
            4 => Some(Self::Dword),
            _ => None,
        }
    }

    /// Bytes per access.
    pub const fn bytes(self) -> usize {
        match self {
            Self::Byte => 1,
            Self::Word => 2,
            Self::Dword => 4,
        }
    }
}

/// Which way a transfer moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskIoKind {
    /// Disk to guest.
    Read,
    /// Guest to disk.
    Write,
}

/// A transfer the disk accepted: the record the hypervisor exports for disk I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskIo {
    /// Read or write.
    pub kind: DiskIoKind,
    /// First sector.
    pub lba: u32,
    /// Sectors requested, 1..=256.
    pub sectors: u16,
}

/// Where accepted transfers are reported.
pub trait DiskIoSink {
    /// The disk accepted `io`: the command was in range and its data phase begins.
    fn record(&mut self, io: DiskIo);
}

impl DiskIoSink for Vec<DiskIo> {
    fn record(&mut self, io: DiskIo) {
        self.push(io);
    }
}

/// Why a byte image cannot be the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskImageError {
    /// The image length is not a whole number of sectors.
    NotSectorMultiple {
        /// The image length in bytes.
        len: usize,
    },
    /// The image holds more sectors than 28-bit LBA addresses.
    TooLarge {
        /// The image length in sectors.
        sectors: u64,
    },
}

impl fmt::Display for DiskImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSectorMultiple { len } => write!(
                f,
                "disk image of {len} bytes is not a multiple of {SECTOR_SIZE}-byte sectors"
            ),
            Self::TooLarge { sectors } => write!(
                f,
                "disk image of {sectors} sectors exceeds the {LBA28_SECTORS} that LBA28 reaches"
            ),
        }
    }
}

impl core::error::Error for DiskImageError {}

impl DiskImageError {
    /// The sectors of a `len`-byte image, if it can be a disk: a whole number of sectors that
    /// LBA28 addresses.
    pub fn check(len: u64) -> Result<u64, Self> {
        if !len.is_multiple_of(SECTOR_SIZE as u64) {
            return Err(Self::NotSectorMultiple { len: len as usize });
        }
        let sectors = len / SECTOR_SIZE as u64;
        if sectors > LBA28_SECTORS {
            return Err(Self::TooLarge { sectors });
        }
        Ok(sectors)
    }
}

/// Why a [`SectorStore`] could not move a sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The sector lies beyond what the store serves.
    OutOfRange,
    /// The device behind the store failed.
    Device,
}

impl StoreError {
    /// The ATA error register value a command ends with when the store fails this way.
    pub const fn ata_error(self) -> u8 {
        match self {
            Self::OutOfRange => ERROR_IDNF,
            Self::Device => ERROR_ABRT,
        }
    }
}

/// Where drive 1's sectors live. Every access is bounds-checked by the store itself, whatever
/// the model believes the disk's size to be.
pub trait SectorStore {
    /// Reads sector `lba` into `buffer`.
    fn read_sector(&mut self, lba: u32, buffer: &mut [u8; SECTOR_SIZE]) -> Result<(), StoreError>;
    /// Writes `data` to sector `lba`; when this returns `Ok` the sector is stored.
    fn write_sector(&mut self, lba: u32, data: &[u8; SECTOR_SIZE]) -> Result<(), StoreError>;
}

/// A byte image as a store (tests, and disks served from memory).
impl SectorStore for [u8] {
    fn read_sector(&mut self, lba: u32, buffer: &mut [u8; SECTOR_SIZE]) -> Result<(), StoreError> {
        let start = lba as usize * SECTOR_SIZE;
        let sector = self
            .get(start..start + SECTOR_SIZE)
            .ok_or(StoreError::OutOfRange)?;
        buffer.copy_from_slice(sector);
        Ok(())
    }

    fn write_sector(&mut self, lba: u32, data: &[u8; SECTOR_SIZE]) -> Result<(), StoreError> {
        let start = lba as usize * SECTOR_SIZE;
        self.get_mut(start..start + SECTOR_SIZE)
            .ok_or(StoreError::OutOfRange)?
            .copy_from_slice(data);
        Ok(())
    }
}

impl SectorStore for Vec<u8> {
    fn read_sector(&mut self, lba: u32, buffer: &mut [u8; SECTOR_SIZE]) -> Result<(), StoreError> {
        self.as_mut_slice().read_sector(lba, buffer)
    }

    fn write_sector(&mut self, lba: u32, data: &[u8; SECTOR_SIZE]) -> Result<(), StoreError> {
        self.as_mut_slice().write_sector(lba, data)
    }
}

/// A store with nothing in it: every access is out of range (a channel without drive 1).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStore;

impl SectorStore for NoStore {
    fn read_sector(&mut self, _: u32, _: &mut [u8; SECTOR_SIZE]) -> Result<(), StoreError> {
        Err(StoreError::OutOfRange)
    }

    fn write_sector(&mut self, _: u32, _: &[u8; SECTOR_SIZE]) -> Result<(), StoreError> {
        Err(StoreError::OutOfRange)
    }
}

/// A command the shared disk must serve before it completes ([`IdeChannel::set_timed`]): a
/// read waits before its first data block, a write after its last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskRequest {
    /// Read or write.
    pub kind: DiskIoKind,
    /// Sectors the command moves, 1..=256.
    pub sectors: u32,
}

/// Drive 1's disk.
#[derive(Debug)]
struct Disk {
    /// Its size; at most [`LBA28_SECTORS`].
    sectors: u64,
    /// The error register; non-zero shows as ERR in status.
    error: u8,
}

/// The data phase of the command in progress; always drive 1's.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    kind: DiskIoKind,
    /// The sector moving now.
    lba: u32,
    /// Sectors still to move, the current one included; at least 1.
    remaining: u32,
    /// Bytes of the current sector moved so far; below [`SECTOR_SIZE`].
    position: usize,
    /// Sectors moved so far by this command.
    done: u32,
    /// Sectors per DRQ data block.
    block_sectors: u32,
}

/// Which drive the device register selects, and what answers there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Selected {
    /// Drive 0: present, no media.
    Master,
    /// Drive 1 with a disk.
    Disk,
    /// Drive 1 without a disk: nothing answers.
    Absent,
}

/// The primary IDE channel: the whole state of both drives, with no I/O of its own.
#[derive(Debug)]
pub struct IdeChannel {
    /// Features register (stored only).
    features: u8,
    /// Sector Count register.
    sector_count: u8,
    /// LBA Low register.
    lba_low: u8,
    /// LBA Mid register.
    lba_mid: u8,
    /// LBA High register.
    lba_high: u8,
    /// Device register.
    device: u8,
    /// Device control nIEN.
    interrupts_disabled: bool,
    /// Drive 0's error register.
    master_error: u8,
    /// Drive 1, if it has a disk.
    disk: Option<Disk>,
    /// The data phase in progress.
    transfer: Option<Transfer>,
    /// The sector moving now: a read's, fetched from the store; a write's, of which the first
    /// `transfer.position` bytes are valid.
    buffer: [u8; SECTOR_SIZE],
    /// INTRQ is pending (before nIEN).
    interrupt_pending: bool,
    /// The level last reported through [`InterruptLine::set_level`].
    /// The level last put on the interrupt line.
    line: LineLevel,
    /// Sectors moved from disk to guest.
    sectors_read: u64,
    /// Sectors moved from guest to disk.
    sectors_written: u64,
    /// Commands answered with ERR.
    aborted_commands: u64,
    /// Commands wait for the shared disk: BSY until [`IdeChannel::complete`].
    timed: bool,
    /// The command waiting for the shared disk (BSY shows), if any.
    busy: Option<DiskRequest>,
    /// A request the hypervisor has not taken yet ([`IdeChannel::take_request`]).
    request: Option<DiskRequest>,
    /// A reset dropped the command the shared disk was serving ([`IdeChannel::take_cancel`]).
    cancelled: bool,
}

impl IdeChannel {
    /// A channel whose drive 1 is a disk of `sectors` sectors, at most what LBA28 addresses;
    /// its data lives in the [`SectorStore`] each access passes.
    pub fn new(sectors: u64) -> Result<Self, DiskImageError> {
        if sectors > LBA28_SECTORS {
            return Err(DiskImageError::TooLarge { sectors });
        }
        let mut channel = Self::without_disk();
        channel.disk = Some(Disk { sectors, error: 0 });
        Ok(channel)
    }

    /// A channel with no drive 1.
    pub const fn without_disk() -> Self {
        Self {
            features: 0,
            sector_count: 0,
            lba_low: 0,
            lba_mid: 0,
            lba_high: 0,
            device: 0,
            interrupts_disabled: false,
            master_error: 0,
            disk: None,
            transfer: None,
            buffer: [0; SECTOR_SIZE],
            interrupt_pending: false,
            line: LineLevel::LOW,
            sectors_read: 0,
            sectors_written: 0,
            aborted_commands: 0,
            timed: false,
            busy: None,
            request: None,
            cancelled: false,
        }
    }

    /// Makes commands wait for the shared disk: a command that moves data shows BSY once the
    /// guest's part is done (a read's command, a write's last data byte) and is handed out by
    /// [`Self::take_request`]; it completes, with its interrupt and a read's data, when the
    /// hypervisor calls [`Self::complete`]. Untimed (the default), commands complete at once.
    pub fn set_timed(&mut self, timed: bool) {
        self.timed = timed;
    }

    /// The command that began waiting for the shared disk since the last call, if any.
    pub fn take_request(&mut self) -> Option<DiskRequest> {
        self.request.take()
    }

    /// True once after a reset dropped a command the shared disk had been given: the
    /// hypervisor forgets it (a later [`Self::complete`] would find nothing to end anyway).
    pub fn take_cancel(&mut self) -> bool {
        core::mem::take(&mut self.cancelled)
    }

    /// Whether a command waits for the shared disk (BSY shows).
    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// The shared disk served the waiting command: BSY clears, a read's first data block is
    /// ready and INTRQ becomes pending (a write's completion, a read's data). Nothing happens
    /// when no command waits (a reset dropped it).
    pub fn complete(&mut self, irq: &mut impl InterruptLine) {
        if self.busy.take().is_some() {
            self.interrupt_pending = true;
            self.update_interrupt_line(irq);
        }
    }

    /// Puts `request` in front of the shared disk: BSY until it is served.
    fn wait_for_disk(&mut self, request: DiskRequest) {
        self.busy = Some(request);
        self.request = Some(request);
        self.interrupt_pending = false;
    }

    /// The guest reads the command block register at `offset` from [`PRIMARY_COMMAND_BLOCK`].
    /// [`DATA`] reads one byte of data; use [`Self::read_data`] for wider accesses.
    pub fn read(
        &mut self,
        offset: u8,
        irq: &mut impl InterruptLine,
        store: &mut dyn SectorStore,
    ) -> u8 {
        let value = match offset {
            DATA => self.read_data(DataWidth::Byte, irq, store) as u8,
            ERROR => match self.selected() {
                Selected::Master => self.master_error,
                Selected::Disk => self.disk.as_ref().map_or(0, |disk| disk.error),
                Selected::Absent => 0,
            },
            SECTOR_COUNT => self.sector_count,
            LBA_LOW => self.lba_low,
            LBA_MID => self.lba_mid,
            LBA_HIGH => self.lba_high,
            DEVICE => self.device,
            STATUS => {
                self.interrupt_pending = false;
                self.status()
            }
            _ => OPEN_BUS,
        };
        self.update_interrupt_line(irq);
        value
    }

    /// The guest writes `value` to the command block register at `offset` from
    /// [`PRIMARY_COMMAND_BLOCK`]. [`DATA`] writes one byte of data; use [`Self::write_data`] for
    /// wider accesses. A command the disk accepts is reported to `events`.
    pub fn write(
        &mut self,
        offset: u8,
        value: u8,
        irq: &mut impl InterruptLine,
        events: &mut impl DiskIoSink,
        store: &mut dyn SectorStore,
    ) {
        match offset {
            DATA => self.write_data(DataWidth::Byte, value.into(), irq, store),
            FEATURES => self.features = value,
            SECTOR_COUNT => self.sector_count = value,
            LBA_LOW => self.lba_low = value,
            LBA_MID => self.lba_mid = value,
            LBA_HIGH => self.lba_high = value,
            DEVICE => self.device = value,
            COMMAND => {
                // Writing the command register clears INTRQ before the command runs, so an
                // interrupt the guest never acknowledged (xv6 does not read the status after
                // a write completes) does not swallow the edge of this command's completion.
                self.interrupt_pending = false;
                self.update_interrupt_line(irq);
                self.command(value, events, store);
            }
            // Offsets past the command block decode nothing.
            _ => {}
        }
        self.update_interrupt_line(irq);
    }

    /// The guest reads the data register with a `width`-wide access. Bytes come little endian;
    /// with no read in its data phase the register reads 0.
    pub fn read_data(
        &mut self,
        width: DataWidth,
        irq: &mut impl InterruptLine,
        store: &mut dyn SectorStore,
    ) -> u32 {
        let mut bytes = [0; 4];
        self.read_data_block(&mut bytes[..width.bytes()], irq, store);
        u32::from_le_bytes(bytes)
    }

    /// The guest writes the low `width` bytes of `value` to the data register, little endian.
    /// Ignored unless a write is in its data phase.
    pub fn write_data(
        &mut self,
        width: DataWidth,
        value: u32,
        irq: &mut impl InterruptLine,
        store: &mut dyn SectorStore,
    ) {
        self.write_data_block(&value.to_le_bytes()[..width.bytes()], irq, store);
    }

    /// A string input from the data register (`rep insw` / `rep insl`) in one step: fills
    /// `buffer` from the data phase and returns how many bytes came from the disk. The transfer
    /// may cross sectors; bytes past its end read 0, as single accesses would.
    pub fn read_data_block(
        &mut self,
        buffer: &mut [u8],
        irq: &mut impl InterruptLine,
        store: &mut dyn SectorStore,
    ) -> usize {
        let mut filled = 0;
        while filled < buffer.len() {
            let Some(mut transfer) = self.active_transfer(DiskIoKind::Read) else {
                break;
            };
            let start = transfer.position;
            let count = (SECTOR_SIZE - start).min(buffer.len() - filled);
            buffer[filled..filled + count].copy_from_slice(&self.buffer[start..start + count]);
            filled += count;
            transfer.position += count;
            self.advance(transfer, store);
        }
        buffer[filled..].fill(0);
        self.update_interrupt_line(irq);
        filled
    }

    /// A string output to the data register (`rep outsw` / `rep outsl`) in one step: feeds `data`
    /// to the data phase and returns how many bytes it took. Each sector lands on the disk once
    /// its last byte arrives; bytes past the end of the transfer are dropped.
    pub fn write_data_block(
        &mut self,
        data: &[u8],
        irq: &mut impl InterruptLine,
        store: &mut dyn SectorStore,
    ) -> usize {
        let mut taken = 0;
        while taken < data.len() {
            let Some(mut transfer) = self.active_transfer(DiskIoKind::Write) else {
                break;
            };
            let count = (SECTOR_SIZE - transfer.position).min(data.len() - taken);
            self.buffer[transfer.position..transfer.position + count]
                .copy_from_slice(&data[taken..taken + count]);
            taken += count;
            transfer.position += count;
            self.advance(transfer, store);
        }
        self.update_interrupt_line(irq);
        taken
    }

    /// The guest reads the control block register: alternate status, which is the status of the
    /// selected drive without clearing a pending interrupt.
    pub fn read_control(&self) -> u8 {
        self.status()
    }

    /// The guest writes the device control register.
    pub fn write_control(&mut self, value: u8, irq: &mut impl InterruptLine) {
        self.interrupts_disabled = value & CONTROL_NIEN != 0;
        if value & CONTROL_SRST != 0 {
            self.reset();
        }
        self.update_interrupt_line(irq);
    }

    /// The selected drive's status register, without the side effect of reading it.
    pub fn status(&self) -> u8 {
        let error = match self.selected() {
            Selected::Master => self.master_error,
            Selected::Disk => self.disk.as_ref().map_or(0, |disk| disk.error),
            Selected::Absent => return 0,
        };
        if self.selected() == Selected::Disk && self.busy.is_some() {
            // While BSY is set the other bits are not valid (ATA); DRDY stays, as drives show.
            return STATUS_BSY | STATUS_DRDY;
        }
        let mut status = STATUS_IDLE;
        if error != 0 {
            status |= STATUS_ERR;
        }
        if self.selected() == Selected::Disk && self.transfer.is_some() {
            status |= STATUS_DRQ;
        }
        status
    }

    /// The interrupt output: INTRQ is pending and nIEN is clear.
    pub fn irq_level(&self) -> bool {
        self.interrupt_pending && !self.interrupts_disabled
    }

    /// Sectors moved from the disk to the guest so far.
    pub fn sectors_read(&self) -> u64 {
        self.sectors_read
    }

    /// Sectors moved from the guest to the disk so far.
    pub fn sectors_written(&self) -> u64 {
        self.sectors_written
    }

    /// Commands answered with ERR so far (none, for a well-behaved xv6).
    pub fn aborted_commands(&self) -> u64 {
        self.aborted_commands
    }

    /// Whether drive 1 has a disk.
    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// The disk's size in sectors; 0 without a disk.
    pub fn disk_sectors(&self) -> u64 {
        self.disk.as_ref().map_or(0, |disk| disk.sectors)
    }

    fn selected(&self) -> Selected {
        match (self.device & DEVICE_DEV != 0, self.disk.is_some()) {
            (false, _) => Selected::Master,
            (true, true) => Selected::Disk,
            (true, false) => Selected::Absent,
        }
    }

    /// The transfer in progress if it moves data `kind`-wise and its drive is selected.
    fn active_transfer(&self, kind: DiskIoKind) -> Option<Transfer> {
        self.transfer.filter(|transfer| {
            transfer.kind == kind && self.selected() == Selected::Disk && self.busy.is_none()
        })
    }

    fn command(&mut self, command: u8, events: &mut impl DiskIoSink, store: &mut dyn SectorStore) {
        let selected = self.selected();
        if selected == Selected::Absent {
            return;
        }
        // A drive that is BSY ignores commands (ATA); only SRST gets it back.
        if selected == Selected::Disk && self.busy.is_some() {
            return;
        }
        // A new command ends any data phase and clears the pending interrupt and the error.
        self.transfer = None;
        self.interrupt_pending = false;
        match selected {
            Selected::Master => {
                self.master_error = 0;
                self.abort(ERROR_ABRT);
            }
            _ => {
                if let Some(disk) = self.disk.as_mut() {
                    disk.error = 0;
                }
                match command {
                    COMMAND_READ_SECTORS => self.start(DiskIoKind::Read, false, events, store),
                    COMMAND_READ_MULTIPLE => self.start(DiskIoKind::Read, true, events, store),
                    COMMAND_WRITE_SECTORS => self.start(DiskIoKind::Write, false, events, store),
                    COMMAND_WRITE_MULTIPLE => self.start(DiskIoKind::Write, true, events, store),
                    _ => self.abort(ERROR_ABRT),
                }
            }
        }
    }

    /// Starts a data phase on drive 1 from the task file.
    fn start(
        &mut self,
        kind: DiskIoKind,
        multiple: bool,
        events: &mut impl DiskIoSink,
        store: &mut dyn SectorStore,
    ) {
        if self.device & DEVICE_LBA == 0 {
            return self.abort(ERROR_ABRT);
        }
        let lba = u32::from_le_bytes([
            self.lba_low,
            self.lba_mid,
            self.lba_high,
            self.device & DEVICE_LBA_HIGH_NIBBLE,
        ]);
        let sectors = match self.sector_count {
            0 => 256,
            count => u32::from(count),
        };
        let disk_sectors = self.disk.as_ref().map_or(0, |disk| disk.sectors);
        if u64::from(lba) + u64::from(sectors) > disk_sectors {
            return self.abort(ERROR_IDNF);
        }
        if kind == DiskIoKind::Read {
            if let Err(error) = store.read_sector(lba, &mut self.buffer) {
                return self.abort(error.ata_error());
            }
        }
        events.record(DiskIo {
            kind,
            lba,
            sectors: sectors as u16,
        });
        self.transfer = Some(Transfer {
            kind,
            lba,
            remaining: sectors,
            position: 0,
            done: 0,
            block_sectors: if multiple { sectors } else { 1 },
        });
        // Data-in: the first block is ready at once (timed: once the shared disk served the
        // command). Data-out: the first block needs no interrupt.
        self.interrupt_pending = kind == DiskIoKind::Read;
        if self.timed && kind == DiskIoKind::Read {
            self.wait_for_disk(DiskRequest { kind, sectors });
        }
    }

    /// Ends the command with ERR and `error` on the selected drive.
    fn abort(&mut self, error: u8) {
        match self.selected() {
            Selected::Master => self.master_error = error,
            Selected::Disk => {
                if let Some(disk) = self.disk.as_mut() {
                    disk.error = error;
                }
            }
            Selected::Absent => return,
        }
        self.aborted_commands += 1;
        self.interrupt_pending = true;
    }

    /// Stores `transfer` after bytes moved; finishes its sector when the last byte has: a
    /// written sector goes to the store, a read's next sector comes from it. A store error ends
    /// the command with ERR.
    fn advance(&mut self, mut transfer: Transfer, store: &mut dyn SectorStore) {
        if transfer.position < SECTOR_SIZE {
            self.transfer = Some(transfer);
            return;
        }
        match transfer.kind {
            DiskIoKind::Read => self.sectors_read += 1,
            DiskIoKind::Write => {
                if let Err(error) = store.write_sector(transfer.lba, &self.buffer) {
                    self.transfer = None;
                    return self.abort(error.ata_error());
                }
                self.sectors_written += 1;
            }
        }
        transfer.done += 1;
        transfer.remaining -= 1;
        transfer.lba += 1;
        transfer.position = 0;
        if transfer.remaining == 0 {
            self.transfer = None;
            // Data-out ends with an interrupt (timed: once the shared disk served the whole
            // write); data-in ends silently after its last block.
            if transfer.kind == DiskIoKind::Write {
                self.interrupt_pending = true;
                if self.timed {
                    self.wait_for_disk(DiskRequest {
                        kind: DiskIoKind::Write,
                        sectors: transfer.done,
                    });
                }
            }
        } else {
            if transfer.kind == DiskIoKind::Read {
                if let Err(error) = store.read_sector(transfer.lba, &mut self.buffer) {
                    self.transfer = None;
                    return self.abort(error.ata_error());
                }
            }
            self.transfer = Some(transfer);
            if transfer.done.is_multiple_of(transfer.block_sectors) {
                self.interrupt_pending = true;
            }
        }
    }

    /// Software reset (SRST), completed at once.
    fn reset(&mut self) {
        self.transfer = None;
        self.interrupt_pending = false;
        self.request = None;
        if self.busy.take().is_some() {
            self.cancelled = true;
        }
        self.master_error = 0;
        if let Some(disk) = self.disk.as_mut() {
            disk.error = 0;
        }
        // The ATA device signature, and drive 0 selected.
        self.features = 0;
        self.sector_count = 1;
        self.lba_low = 1;
        self.lba_mid = 0;
        self.lba_high = 0;
        self.device = 0;
    }

    fn update_interrupt_line(&mut self, irq: &mut impl InterruptLine) {
        self.line.drive(self.irq_level(), irq);
    }
}

impl Default for IdeChannel {
    fn default() -> Self {
        Self::without_disk()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use crate::testing::RecordingIrq as Irq;

    /// Sectors on the test disk: FSSIZE, as xv6's fs.img.
    const FS_SECTORS: usize = 1000;
    /// Polls of an `idewait` before the test calls it a hang (xv6 loops without limit).
    const IDEWAIT_POLLS: usize = 10_000;

    /// A disk whose every byte depends on its sector and position, so misplaced data shows.
    fn patterned_disk(sectors: usize) -> Vec<u8> {
        (0..sectors * SECTOR_SIZE)
            .map(|index| (index / SECTOR_SIZE * 31 + index % SECTOR_SIZE) as u8)
            .collect()
    }

    /// A channel, its interrupt line, the transfers it reported and the store behind drive 1.
    #[derive(Debug)]
    struct Rig {
        ide: IdeChannel,
        irq: Irq,
        events: Vec<DiskIo>,
        disk: Vec<u8>,
    }

    impl Rig {
        fn with_disk(disk: Vec<u8>) -> Self {
            let sectors = DiskImageError::check(disk.len() as u64).unwrap();
            let mut rig = Self::of(IdeChannel::new(sectors).unwrap());
            rig.disk = disk;
            rig
        }

        fn of(ide: IdeChannel) -> Self {
            Self {
                ide,
                irq: Irq::default(),
                events: Vec::new(),
                disk: Vec::new(),
            }
        }

        fn read(&mut self, offset: u8) -> u8 {
            self.ide.read(offset, &mut self.irq, &mut self.disk)
        }

        fn write(&mut self, offset: u8, value: u8) {
            self.ide.write(
                offset,
                value,
                &mut self.irq,
                &mut self.events,
                &mut self.disk,
            );
        }

        fn read_data(&mut self, width: DataWidth) -> u32 {
            self.ide.read_data(width, &mut self.irq, &mut self.disk)
        }

        fn control(&mut self, value: u8) {
            self.ide.write_control(value, &mut self.irq);
        }

        fn insl(&mut self, dwords: usize) -> (usize, Vec<u8>) {
            let mut buffer = vec![0xAA; dwords * 4];
            let filled = self
                .ide
                .read_data_block(&mut buffer, &mut self.irq, &mut self.disk);
            (filled, buffer)
        }

        fn outsl(&mut self, data: &[u8]) -> usize {
            self.ide
                .write_data_block(data, &mut self.irq, &mut self.disk)
        }

        /// xv6's idewait: poll status until BSY is clear and DRDY set; the final status.
        fn idewait(&mut self) -> u8 {
            for _ in 0..IDEWAIT_POLLS {
                let status = self.read(STATUS);
                if status & (STATUS_BSY | STATUS_DRDY) == STATUS_DRDY {
                    return status;
                }
            }
            panic!("idewait would spin forever");
        }

        /// xv6's ideinit probe (XV6-CONTRACT §8): whether it finds disk 1.
        fn ideinit(&mut self) -> bool {
            self.idewait();
            self.write(DEVICE, 0xE0 | DEVICE_DEV);
            let present = (0..1000).any(|_| self.read(STATUS) != 0);
            self.write(DEVICE, 0xE0);
            present
        }

        /// xv6's idestart for one block on drive 1: the register writes of §8 in order, and for a
        /// write the `rep outsl` that follows the command at once.
        fn idestart(&mut self, block: u32, write: Option<&[u8]>) {
            self.idewait();
            self.control(0);
            self.write(SECTOR_COUNT, 1);
            self.write(LBA_LOW, block as u8);
            self.write(LBA_MID, (block >> 8) as u8);
            self.write(LBA_HIGH, (block >> 16) as u8);
            self.write(DEVICE, 0xE0 | DEVICE_DEV | ((block >> 24) as u8 & 0x0F));
            match write {
                Some(data) => {
                    self.write(COMMAND, COMMAND_WRITE_SECTORS);
                    assert_eq!(self.ide.read_control(), STATUS_IDLE | STATUS_DRQ);
                    assert_eq!(self.outsl(data), SECTOR_SIZE);
                }
                None => self.write(COMMAND, COMMAND_READ_SECTORS),
            }
        }

        /// xv6's ideintr for a read: idewait(1), then `rep insl` of 128 dwords unless it saw
        /// ERR or DF. `None` when the data would be skipped.
        fn ideintr_read(&mut self) -> Option<Vec<u8>> {
            let status = self.idewait();
            if status & (STATUS_DF | STATUS_ERR) != 0 {
                return None;
            }
            let (filled, data) = self.insl(SECTOR_SIZE / 4);
            assert_eq!(filled, SECTOR_SIZE);
            Some(data)
        }
    }

    fn sector_of(disk: &[u8], lba: usize) -> &[u8] {
        &disk[lba * SECTOR_SIZE..(lba + 1) * SECTOR_SIZE]
    }

    /// A timed read waits for the shared disk: BSY and no data or interrupt until `complete`,
    /// then xv6's ideintr finds the sector.
    #[test]
    fn a_timed_read_waits_for_the_shared_disk() {
        let mut rig = Rig::with_disk(patterned_disk(FS_SECTORS));
        rig.ide.set_timed(true);
        assert!(rig.ideinit());
        rig.idestart(7, None);
        assert_eq!(
            rig.ide.take_request(),
            Some(DiskRequest {
                kind: DiskIoKind::Read,
                sectors: 1
            })
        );
        assert_eq!(rig.ide.take_request(), None, "handed out once");
        assert!(rig.ide.is_busy());
        assert_eq!(rig.irq.raises, 0, "no interrupt before the disk served it");
        assert_eq!(rig.read(STATUS) & STATUS_BSY, STATUS_BSY);
        let (filled, _) = rig.insl(4);
        assert_eq!(filled, 0, "no data while BSY");
        rig.ide.complete(&mut rig.irq);
        assert!(!rig.ide.is_busy());
        assert_eq!(rig.irq.raises, 1);
        let data = rig.ideintr_read().expect("the data is there");
        assert_eq!(data, rig.disk[7 * SECTOR_SIZE..8 * SECTOR_SIZE]);
        // Completing again does nothing.
        rig.ide.complete(&mut rig.irq);
        assert_eq!(rig.irq.raises, 1);
    }

    /// A timed write takes its data at once (the sector is stored before the completion), then
    /// shows BSY until `complete` raises its interrupt.
    #[test]
    fn a_timed_write_stores_at_once_and_completes_when_served() {
        let mut rig = Rig::with_disk(vec![0; FS_SECTORS * SECTOR_SIZE]);
        rig.ide.set_timed(true);
        assert!(rig.ideinit());
        let data = [0x5A; SECTOR_SIZE];
        rig.idestart(3, Some(&data));
        assert_eq!(rig.disk[3 * SECTOR_SIZE..4 * SECTOR_SIZE], data);
        assert_eq!(
            rig.ide.take_request(),
            Some(DiskRequest {
                kind: DiskIoKind::Write,
                sectors: 1
            })
        );
        assert_eq!(rig.irq.raises, 0);
        assert_eq!(rig.ide.read_control(), STATUS_BSY | STATUS_DRDY);
        // A BSY drive ignores a command.
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(rig.ide.take_request(), None);
        assert_eq!(rig.events.len(), 1);
        rig.ide.complete(&mut rig.irq);
        assert_eq!(rig.irq.raises, 1);
        assert_eq!(rig.idewait() & STATUS_ERR, 0);
    }

    /// SRST drops the command the shared disk was serving and says so once; the late
    /// completion then finds nothing, and the next command is served normally.
    #[test]
    fn a_reset_cancels_the_waiting_command() {
        let mut rig = Rig::with_disk(patterned_disk(FS_SECTORS));
        rig.ide.set_timed(true);
        assert!(rig.ideinit());
        rig.idestart(1, None);
        assert!(rig.ide.take_request().is_some());
        rig.control(CONTROL_SRST);
        rig.control(0);
        assert!(!rig.ide.is_busy());
        assert!(rig.ide.take_cancel());
        assert!(!rig.ide.take_cancel(), "said once");
        rig.ide.complete(&mut rig.irq);
        assert_eq!(rig.irq.raises, 0, "the dropped command does not complete");
        rig.idestart(2, None);
        assert!(rig.ide.take_request().is_some());
        rig.ide.complete(&mut rig.irq);
        assert_eq!(
            rig.ideintr_read().expect("data"),
            rig.disk[2 * SECTOR_SIZE..3 * SECTOR_SIZE]
        );
    }

    /// Drive 0, selected while drive 1's command waits, aborts a command of its own with an
    /// interrupt on the shared line; drive 1 stays BSY until the shared disk completes it.
    #[test]
    fn drive_0_answers_while_drive_1_waits() {
        let mut rig = Rig::with_disk(patterned_disk(FS_SECTORS));
        rig.ide.set_timed(true);
        rig.write(SECTOR_COUNT, 1);
        rig.write(DEVICE, 0xF0);
        rig.write(COMMAND, COMMAND_READ_MULTIPLE);
        assert!(rig.ide.take_request().is_some());
        rig.write(DEVICE, 0xE0);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(rig.irq.raises, 1, "drive 0's abort");
        assert!(rig.ide.is_busy());
        assert_eq!(rig.ide.take_request(), None);
        rig.write(DEVICE, 0xF0);
        assert_eq!(rig.ide.read_control(), STATUS_BSY | STATUS_DRDY);
        rig.ide.complete(&mut rig.irq);
        assert!(!rig.ide.is_busy());
        assert!(rig.ide.irq_level());
    }

    /// Untimed, nothing waits: no request is handed out and BSY never shows.
    #[test]
    fn an_untimed_channel_hands_out_no_requests() {
        let mut rig = Rig::with_disk(patterned_disk(FS_SECTORS));
        assert!(rig.ideinit());
        rig.idestart(5, None);
        assert_eq!(rig.ide.take_request(), None);
        assert!(!rig.ide.is_busy());
        assert_eq!(rig.irq.raises, 1);
    }

    #[test]
    fn xv6_probe_finds_disk_1_and_raises_nothing() {
        let mut rig = Rig::with_disk(patterned_disk(FS_SECTORS));
        assert_eq!(rig.read(STATUS), STATUS_IDLE, "drive 0 after reset");
        rig.write(DEVICE, 0xF0);
        assert_eq!(rig.read(STATUS), STATUS_IDLE, "drive 1 answers");
        rig.write(DEVICE, 0xE0);
        assert_eq!(rig.read(STATUS), STATUS_IDLE);
        assert!(Rig::with_disk(patterned_disk(1)).ideinit());
        assert_eq!(rig.irq.raises, 0);
        assert!(rig.events.is_empty());
    }

    /// Appendix B, "No drive-1 response": xv6 panics at the first file-system access. With a
    /// disk, drive 1 must answer the probe; without one it reads 0, as xv6 expects of "absent".
    #[test]
    fn appendix_b_drive_1_answers_the_probe_only_with_a_disk() {
        assert!(Rig::with_disk(patterned_disk(FS_SECTORS)).ideinit());
        let mut rig = Rig::of(IdeChannel::without_disk());
        assert!(!rig.ideinit());
        rig.write(DEVICE, 0xF0);
        assert_eq!(rig.ide.read_control(), 0);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(rig.read(STATUS), 0, "an absent drive takes no command");
        assert_eq!((rig.irq.raises, rig.events.len()), (0, 0));
        assert!(&rig.disk[..].is_empty());
    }

    #[test]
    fn idestart_read_then_insl_returns_the_sector() {
        let disk = patterned_disk(FS_SECTORS);
        let mut rig = Rig::with_disk(disk.clone());
        assert!(rig.ideinit());
        rig.idestart(59, None);
        assert_eq!(
            rig.events,
            [DiskIo {
                kind: DiskIoKind::Read,
                lba: 59,
                sectors: 1
            }]
        );
        assert_eq!((rig.irq.raises, rig.irq.level), (1, true), "IRQ 14 raised");
        assert_eq!(rig.ide.read_control(), STATUS_IDLE | STATUS_DRQ);
        assert!(
            rig.irq.level,
            "alternate status leaves the interrupt pending"
        );
        let data = rig.ideintr_read().expect("no error on an in-range read");
        assert!(!rig.irq.level, "reading status cleared the interrupt");
        assert_eq!(data, sector_of(&disk, 59));
        assert_eq!(
            rig.read(STATUS),
            STATUS_IDLE,
            "back to idle after 512 bytes"
        );
        assert_eq!((rig.ide.sectors_read(), rig.ide.sectors_written()), (1, 0));
    }

    #[test]
    fn single_accesses_of_every_width_read_the_same_stream() {
        let disk = patterned_disk(4);
        for width in [DataWidth::Byte, DataWidth::Word, DataWidth::Dword] {
            let mut rig = Rig::with_disk(disk.clone());
            rig.idestart(3, None);
            let mut data = Vec::new();
            while rig.ide.status() & STATUS_DRQ != 0 {
                let value = rig.read_data(width);
                data.extend_from_slice(&value.to_le_bytes()[..width.bytes()]);
            }
            assert_eq!(data, sector_of(&disk, 3), "{width:?}");
            assert_eq!(rig.read_data(DataWidth::Dword), 0);
        }
        assert_eq!(DataWidth::from_bytes(4), Some(DataWidth::Dword));
        assert_eq!(DataWidth::from_bytes(3), None);
    }

    #[test]
    fn idestart_write_lands_on_the_disk_and_raises_irq_14() {
        let mut rig = Rig::with_disk(patterned_disk(FS_SECTORS));
        assert!(rig.ideinit());
        let block: Vec<u8> = (0..SECTOR_SIZE).map(|i| (i * 3) as u8).collect();
        rig.idestart(2, Some(&block));
        assert_eq!(sector_of(&rig.disk[..], 2), &block[..]);
        assert_eq!((rig.irq.raises, rig.irq.level), (1, true));
        assert_eq!(rig.ide.status(), STATUS_IDLE);
        assert_eq!(
            rig.events,
            [DiskIo {
                kind: DiskIoKind::Write,
                lba: 2,
                sectors: 1
            }]
        );
        assert_eq!(rig.ide.sectors_written(), 1);
        // xv6's ideintr reads no status after a write; the next idestart's idewait does, and the
        // next completion is a fresh edge.
        rig.idestart(3, Some(&block));
        assert_eq!(rig.irq.raises, 2);
    }

    #[test]
    fn a_command_after_an_unacknowledged_interrupt_raises_a_fresh_edge() {
        let mut rig = Rig::with_disk(patterned_disk(8));
        let block = vec![7u8; SECTOR_SIZE];
        // A write completes; the guest never reads the status, so INTRQ stays asserted.
        rig.write(DEVICE, 0xF0);
        rig.write(SECTOR_COUNT, 1);
        rig.write(LBA_LOW, 1);
        rig.write(COMMAND, COMMAND_WRITE_SECTORS);
        rig.outsl(&block);
        assert_eq!((rig.irq.raises, rig.irq.level), (1, true));
        // A read command goes straight in: its completion must be an edge of its own.
        rig.write(LBA_LOW, 2);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!((rig.irq.raises, rig.irq.level), (2, true));
    }

    #[test]
    fn nien_keeps_the_interrupt_off_the_line() {
        let mut rig = Rig::with_disk(patterned_disk(8));
        rig.idestart(1, None);
        rig.read(STATUS);
        rig.insl(128);
        rig.control(CONTROL_NIEN);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(rig.irq.raises, 1, "only the first read interrupted");
        assert_eq!(
            rig.ide.read_control(),
            STATUS_IDLE | STATUS_DRQ,
            "data still ready"
        );
        assert_eq!(rig.insl(128).0, SECTOR_SIZE);
        rig.write(COMMAND, COMMAND_WRITE_SECTORS);
        rig.outsl(&[0; SECTOR_SIZE]);
        assert_eq!(rig.irq.raises, 1, "nor did the write");
        rig.control(0);
        assert_eq!(
            rig.irq.raises, 2,
            "clearing nIEN lets the pending interrupt through"
        );
        rig.read(STATUS);
        rig.control(CONTROL_NIEN);
        rig.control(0);
        assert_eq!(rig.irq.raises, 2, "nothing pending after a status read");
    }

    #[test]
    fn drive_0_always_shows_drdy() {
        let mut rig = Rig::with_disk(patterned_disk(8));
        let drdy = |status: u8| status & (STATUS_BSY | STATUS_DRDY) == STATUS_DRDY;
        assert!(drdy(rig.read(STATUS)));
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(
            rig.read(STATUS),
            STATUS_IDLE | STATUS_ERR,
            "no media: aborted"
        );
        assert_eq!(rig.read(ERROR), ERROR_ABRT);
        assert!(rig.events.is_empty());
        // A transfer in progress on drive 1 does not show on drive 0.
        rig.write(DEVICE, 0xF0);
        rig.write(SECTOR_COUNT, 1);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        rig.write(DEVICE, 0xE0);
        assert_eq!(rig.read(STATUS), STATUS_IDLE | STATUS_ERR);
        assert_eq!(rig.insl(1), (0, vec![0; 4]), "drive 0 has no data");
        rig.control(CONTROL_SRST);
        assert_eq!(rig.read(STATUS), STATUS_IDLE);
        rig.control(CONTROL_NIEN);
        assert!(drdy(rig.ide.read_control()));
    }

    /// Appendix B, "IDE status never shows DRDY": xv6 hangs in idewait. Every idewait of a run of
    /// xv6-style requests, on either drive, must see DRDY on its first poll.
    #[test]
    fn appendix_b_every_idewait_sees_drdy_at_once() {
        let mut rig = Rig::with_disk(patterned_disk(FS_SECTORS));
        let first_poll_ready = |rig: &mut Rig| rig.read(STATUS) & 0xC0 == STATUS_DRDY;
        assert!(first_poll_ready(&mut rig), "drive 0, before ideinit");
        assert!(rig.ideinit());
        for block in 0..40u32 {
            assert!(first_poll_ready(&mut rig), "before block {block}");
            if block % 3 == 0 {
                rig.idestart(block, Some(&[block as u8; SECTOR_SIZE]));
            } else {
                rig.idestart(block, None);
                assert!(first_poll_ready(&mut rig), "in ideintr for block {block}");
                rig.insl(128);
            }
        }
    }

    /// Appendix B, "IDE ERR on a read": xv6 skips the data and still marks the buffer valid. No
    /// in-range read may report ERR; only one past the end does, with no data and no record.
    #[test]
    fn appendix_b_in_range_reads_never_report_err() {
        let sectors = 64;
        let disk = patterned_disk(sectors);
        let mut rig = Rig::with_disk(disk.clone());
        for block in 0..sectors {
            rig.idestart(block as u32, None);
            let data = rig.ideintr_read().expect("ERR on an in-range read");
            assert_eq!(data, sector_of(&disk, block));
        }
        assert_eq!(rig.ide.aborted_commands(), 0);
        let records = rig.events.len();
        rig.idestart(sectors as u32, None);
        assert_eq!(rig.ide.read_control(), STATUS_IDLE | STATUS_ERR, "0x51");
        assert_eq!(rig.read(ERROR), ERROR_IDNF);
        assert_eq!(rig.irq.raises, sectors + 1, "the abort still interrupts");
        assert_eq!(rig.ideintr_read(), None);
        assert_eq!(rig.insl(128).0, 0, "no data phase");
        assert_eq!(rig.events.len(), records);
        assert_eq!(rig.ide.aborted_commands(), 1);
        rig.idestart(0, None);
        assert_eq!(rig.read(ERROR), 0, "the next command clears the error");
    }

    #[test]
    fn read_sectors_interrupts_per_sector_and_read_multiple_once() {
        let disk = patterned_disk(8);
        let mut rig = Rig::with_disk(disk.clone());
        rig.write(DEVICE, 0xF0);
        rig.write(SECTOR_COUNT, 2);
        rig.write(LBA_LOW, 4);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(rig.irq.raises, 1);
        rig.read(STATUS);
        assert_eq!(rig.insl(128).1, sector_of(&disk, 4));
        assert_eq!(rig.irq.raises, 2, "second DRQ block ready");
        assert_eq!(rig.read(STATUS), STATUS_IDLE | STATUS_DRQ);
        assert_eq!(rig.insl(128).1, sector_of(&disk, 5));
        assert_eq!(rig.read(STATUS), STATUS_IDLE);
        assert_eq!(
            rig.irq.raises, 2,
            "no interrupt after the last data-in block"
        );

        rig.write(COMMAND, COMMAND_READ_MULTIPLE);
        assert_eq!(rig.irq.raises, 3);
        rig.read(STATUS);
        let (filled, data) = rig.insl(256 + 4);
        assert_eq!(filled, 2 * SECTOR_SIZE, "one block crosses the sector");
        assert_eq!(&data[..filled], &disk[4 * SECTOR_SIZE..6 * SECTOR_SIZE]);
        assert_eq!(&data[filled..], &[0; 16], "past the end reads 0");
        assert_eq!(rig.irq.raises, 3);
        assert_eq!(rig.ide.sectors_read(), 4);
        let kinds: Vec<(u32, u16)> = rig.events.iter().map(|io| (io.lba, io.sectors)).collect();
        assert_eq!(kinds, [(4, 2), (4, 2)]);
    }

    #[test]
    fn write_sectors_interrupts_per_sector_and_write_multiple_at_the_end() {
        let mut rig = Rig::with_disk(vec![0; 8 * SECTOR_SIZE]);
        let data: Vec<u8> = (0..2 * SECTOR_SIZE).map(|i| (i % 251) as u8).collect();
        rig.write(DEVICE, 0xF0);
        rig.write(SECTOR_COUNT, 2);
        rig.write(LBA_LOW, 6);
        rig.write(COMMAND, COMMAND_WRITE_SECTORS);
        assert_eq!(rig.outsl(&data[..SECTOR_SIZE]), SECTOR_SIZE);
        assert_eq!(rig.irq.raises, 1, "ready for the second block");
        assert_eq!(rig.read(STATUS), STATUS_IDLE | STATUS_DRQ);
        assert_eq!(rig.outsl(&data[SECTOR_SIZE..]), SECTOR_SIZE);
        assert_eq!((rig.irq.raises, rig.read(STATUS)), (2, STATUS_IDLE));
        assert_eq!(&rig.disk[6 * SECTOR_SIZE..], &data[..]);

        rig.write(LBA_LOW, 0);
        rig.write(COMMAND, COMMAND_WRITE_MULTIPLE);
        let mut padded = data.clone();
        padded.extend_from_slice(&[0xEE; 8]);
        assert_eq!(rig.outsl(&padded), 2 * SECTOR_SIZE, "extra bytes dropped");
        assert_eq!(rig.irq.raises, 3, "one interrupt for the one block");
        assert_eq!(&rig.disk[..2 * SECTOR_SIZE], &data[..]);
        assert_eq!(rig.ide.sectors_written(), 4);
    }

    #[test]
    fn sector_count_0_means_256() {
        let disk = patterned_disk(300);
        let mut rig = Rig::with_disk(disk.clone());
        rig.write(DEVICE, 0xF0 | DEVICE_LBA);
        rig.write(SECTOR_COUNT, 0);
        rig.write(LBA_LOW, 10);
        rig.write(COMMAND, COMMAND_READ_MULTIPLE);
        assert_eq!(rig.events[0].sectors, 256);
        let (filled, data) = rig.insl(256 * 128);
        assert_eq!(filled, 256 * SECTOR_SIZE);
        assert_eq!(data, &disk[10 * SECTOR_SIZE..266 * SECTOR_SIZE]);
        rig.write(LBA_LOW, 45);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(rig.read(ERROR), ERROR_IDNF, "45 + 256 > 300");
    }

    #[test]
    fn every_lba_byte_is_decoded() {
        // 65,542 sectors: enough for a non-zero LBA High byte.
        let lba = 0x01_0203;
        let mut disk = vec![0; (lba + 3) * SECTOR_SIZE];
        disk[lba * SECTOR_SIZE] = 0x5A;
        let mut rig = Rig::with_disk(disk);
        rig.idestart(lba as u32, None);
        assert_eq!(rig.read_data(DataWidth::Byte), 0x5A);
        rig.idestart(lba as u32 | 1 << 24, None);
        assert_eq!(
            rig.read(ERROR),
            ERROR_IDNF,
            "bits 27:24 come from the device register"
        );
    }

    #[test]
    fn a_partial_sector_never_lands() {
        let mut rig = Rig::with_disk(vec![0; 2 * SECTOR_SIZE]);
        rig.write(DEVICE, 0xF0);
        rig.write(SECTOR_COUNT, 1);
        rig.write(COMMAND, COMMAND_WRITE_SECTORS);
        assert_eq!(rig.outsl(&[0xFF; 100]), 100);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(&rig.disk[..], &[0; 2 * SECTOR_SIZE]);
        rig.control(CONTROL_SRST);
        assert_eq!(
            rig.ide.status() & STATUS_DRQ,
            0,
            "reset ends the data phase"
        );
        assert_eq!(rig.read(DEVICE), 0, "drive 0 selected after reset");
        let signature = [SECTOR_COUNT, LBA_LOW, LBA_MID, LBA_HIGH].map(|offset| rig.read(offset));
        assert_eq!(signature, [1, 1, 0, 0]);
    }

    /// The store has the last word on where a sector may go: a store smaller than the disk the
    /// model was made with (an extent that ends early) makes reads and writes past its end fail
    /// with IDNF, no data phase for the read, nothing stored for the write.
    #[test]
    fn a_store_that_refuses_ends_the_command_with_an_error() {
        let mut rig = Rig::of(IdeChannel::new(8).unwrap());
        rig.disk = patterned_disk(4);
        rig.idestart(5, None);
        assert_eq!((rig.read(STATUS), rig.read(ERROR)), (0x51, ERROR_IDNF));
        assert_eq!(rig.insl(128).0, 0, "no data phase");
        rig.idestart(6, Some(&[0xEE; SECTOR_SIZE]));
        assert_eq!((rig.read(STATUS), rig.read(ERROR)), (0x51, ERROR_IDNF));
        assert_eq!(rig.disk, patterned_disk(4));
        assert_eq!(rig.ide.sectors_written(), 0);
        // A two-sector read whose second sector lies beyond the store: the first comes, then
        // the error.
        rig.write(SECTOR_COUNT, 2);
        rig.write(LBA_LOW, 3);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!(rig.insl(128).1, sector_of(&patterned_disk(4), 3));
        assert_eq!((rig.read(STATUS), rig.read(ERROR)), (0x51, ERROR_IDNF));
        assert_eq!(rig.insl(128).0, 0);
        assert_eq!(rig.ide.aborted_commands(), 3);
        assert_eq!(StoreError::Device.ata_error(), ERROR_ABRT);
        let mut none = NoStore;
        assert_eq!(
            none.read_sector(0, &mut [0; SECTOR_SIZE]),
            Err(StoreError::OutOfRange)
        );
    }

    #[test]
    fn chs_mode_and_unknown_commands_are_aborted() {
        let mut rig = Rig::with_disk(patterned_disk(8));
        rig.write(DEVICE, 0xA0 | DEVICE_DEV);
        rig.write(SECTOR_COUNT, 1);
        rig.write(COMMAND, COMMAND_READ_SECTORS);
        assert_eq!((rig.read(STATUS), rig.read(ERROR)), (0x51, ERROR_ABRT));
        rig.write(DEVICE, 0xF0);
        rig.write(COMMAND, 0xEC);
        assert_eq!((rig.read(STATUS), rig.read(ERROR)), (0x51, ERROR_ABRT));
        assert!(rig.events.is_empty());
        assert_eq!(rig.ide.aborted_commands(), 2);
    }

    #[test]
    fn unused_registers_read_sensibly() {
        let mut rig = Rig::with_disk(patterned_disk(8));
        assert_eq!(rig.read(ERROR), 0);
        rig.write(FEATURES, 0x33);
        assert_eq!(rig.read(ERROR), 0, "features is write-only");
        for (offset, value) in [(SECTOR_COUNT, 9), (LBA_LOW, 8), (LBA_MID, 7), (LBA_HIGH, 6)] {
            rig.write(offset, value);
            assert_eq!(rig.read(offset), value);
        }
        rig.write(DEVICE, 0xF3);
        assert_eq!(rig.read(DEVICE), 0xF3);
        assert_eq!(rig.read(REGISTER_COUNT as u8), OPEN_BUS);
        rig.write(REGISTER_COUNT as u8, 0);
        assert_eq!(rig.ide.read_control(), STATUS_IDLE);
        rig.write(DATA, 0x12);
        assert_eq!(rig.read(DATA), 0, "no data phase");
        assert_eq!(rig.ide.disk_sectors(), 8);
        assert!(rig.ide.has_disk());
    }

    #[test]
    fn images_must_be_whole_sectors() {
        assert_eq!(
            DiskImageError::check(1000).unwrap_err(),
            DiskImageError::NotSectorMultiple { len: 1000 }
        );
        assert_eq!(DiskImageError::check(1024), Ok(2));
        assert!(IdeChannel::new(0).is_ok());
        assert_eq!(
            IdeChannel::new(LBA28_SECTORS + 1).unwrap_err(),
            DiskImageError::TooLarge {
                sectors: LBA28_SECTORS + 1
            }
        );
        let message = alloc::string::ToString::to_string(&DiskImageError::TooLarge {
            sectors: LBA28_SECTORS + 1,
        });
        assert!(message.contains("LBA28"), "{message}");
    }

    /// One step of a guest poking the channel.
    #[derive(Clone, Debug)]
    enum Step {
        Read(u8),
        Write(u8, u8),
        ReadData(DataWidth),
        WriteData(DataWidth, u32),
        ReadBlock(usize),
        WriteBlock(usize, u8),
        Control(u8),
    }

    fn width() -> impl Strategy<Value = DataWidth> {
        prop_oneof![
            Just(DataWidth::Byte),
            Just(DataWidth::Word),
            Just(DataWidth::Dword)
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let command = prop_oneof![
            Just(COMMAND_READ_SECTORS),
            Just(COMMAND_WRITE_SECTORS),
            Just(COMMAND_READ_MULTIPLE),
            Just(COMMAND_WRITE_MULTIPLE),
            any::<u8>(),
        ];
        let device = prop_oneof![Just(0xE0u8), Just(0xF0), any::<u8>()];
        prop_oneof![
            6 => (0u8..10).prop_map(Step::Read),
            3 => (0u8..10, any::<u8>()).prop_map(|(offset, value)| Step::Write(offset, value)),
            3 => command.prop_map(|value| Step::Write(COMMAND, value)),
            3 => device.prop_map(|value| Step::Write(DEVICE, value)),
            3 => (0u8..4).prop_map(|count| Step::Write(SECTOR_COUNT, count)),
            2 => (0u8..8).prop_map(|lba| Step::Write(LBA_LOW, lba)),
            4 => width().prop_map(Step::ReadData),
            4 => (width(), any::<u32>()).prop_map(|(width, value)| Step::WriteData(width, value)),
            3 => (0usize..1200).prop_map(Step::ReadBlock),
            3 => (0usize..1200, any::<u8>()).prop_map(|(len, byte)| Step::WriteBlock(len, byte)),
            1 => prop_oneof![Just(0u8), Just(CONTROL_NIEN), any::<u8>()].prop_map(Step::Control),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Timed, random register traffic with the shared disk completing at random moments:
        /// a request is handed out exactly when BSY begins and at most one is outstanding;
        /// drive 1 shows BSY exactly while it is, and no data moves; a completion ends it with
        /// INTRQ (unless nIEN holds it off the line); a reset cancels it; the line only reports
        /// the model's level. (Found by CI's run: drive 0, selected while drive 1 is BSY,
        /// aborts a command with an interrupt of its own; the channel's line is shared.)
        #[test]
        fn timed_traffic_hands_out_one_request_at_a_time(
            steps in prop::collection::vec((step(), any::<bool>()), 0..96),
        ) {
            let mut rig = Rig::with_disk(patterned_disk(6));
            rig.ide.set_timed(true);
            let mut outstanding = false;
            for (step, complete) in steps {
                let was_busy = rig.ide.is_busy();
                match step {
                    Step::Read(offset) => {
                        rig.read(offset);
                    }
                    Step::Write(offset, value) => rig.write(offset, value),
                    Step::ReadData(width) => {
                        let value = rig.read_data(width);
                        if was_busy {
                            prop_assert_eq!(value, 0, "no data while BSY");
                        }
                    }
                    Step::WriteData(width, value) => rig.ide.write_data(width, value, &mut rig.irq, &mut rig.disk),
                    Step::ReadBlock(len) => {
                        let mut buffer = vec![0xAA; len];
                        let filled = rig.ide.read_data_block(&mut buffer, &mut rig.irq, &mut rig.disk);
                        if was_busy {
                            prop_assert_eq!(filled, 0, "no data while BSY");
                        }
                    }
                    Step::WriteBlock(len, byte) => {
                        let taken = rig.outsl(&vec![byte; len]);
                        if was_busy {
                            prop_assert_eq!(taken, 0, "no data while BSY");
                        }
                    }
                    Step::Control(value) => rig.control(value),
                }
                if rig.ide.take_cancel() {
                    prop_assert!(outstanding, "a cancel without a request");
                    outstanding = false;
                }
                if let Some(request) = rig.ide.take_request() {
                    prop_assert!(!outstanding, "a second request before the first completed");
                    prop_assert!((1..=256).contains(&request.sectors));
                    outstanding = true;
                }
                prop_assert_eq!(rig.ide.is_busy(), outstanding);
                // Drive 1 BSY shows while its command waits (drive 0, selected meanwhile, may
                // still abort a command of its own with an interrupt: the line is shared).
                if outstanding && rig.ide.device & DEVICE_DEV != 0 {
                    prop_assert_eq!(rig.ide.status(), STATUS_BSY | STATUS_DRDY);
                }
                if complete && outstanding {
                    rig.ide.complete(&mut rig.irq);
                    outstanding = false;
                    prop_assert!(rig.ide.interrupt_pending, "a completion raises INTRQ");
                    prop_assert_eq!(rig.irq.level, !rig.ide.interrupts_disabled);
                }
                prop_assert_eq!(rig.irq.level, rig.ide.irq_level());
            }
        }

        /// Random register traffic never panics; each drive's status stays what xv6 relies on;
        /// the line only reports the model's level; no more sectors change than were written.
        #[test]
        fn random_traffic_keeps_the_invariants(
            with_disk in any::<bool>(),
            steps in prop::collection::vec(step(), 0..64),
        ) {
            let original = patterned_disk(6);
            let mut rig = if with_disk {
                Rig::with_disk(original.clone())
            } else {
                Rig::of(IdeChannel::without_disk())
            };
            for step in steps {
                match step {
                    Step::Read(offset) => {
                        rig.read(offset);
                    }
                    Step::Write(offset, value) => rig.write(offset, value),
                    Step::ReadData(width) => {
                        let value = rig.read_data(width);
                        prop_assert!(u64::from(value) < 1 << (8 * width.bytes()));
                    }
                    Step::WriteData(width, value) => rig.ide.write_data(width, value, &mut rig.irq, &mut rig.disk),
                    Step::ReadBlock(len) => {
                        let mut buffer = vec![0xAA; len];
                        let filled = rig.ide.read_data_block(&mut buffer, &mut rig.irq, &mut rig.disk);
                        prop_assert!(filled <= len);
                        prop_assert!(buffer[filled..].iter().all(|&byte| byte == 0));
                    }
                    Step::WriteBlock(len, byte) => {
                        prop_assert!(rig.outsl(&vec![byte; len]) <= len);
                    }
                    Step::Control(value) => rig.control(value),
                }
                let ide = &rig.ide;
                let status = ide.status();
                prop_assert_eq!(status, ide.read_control());
                if ide.device & DEVICE_DEV == 0 || with_disk {
                    prop_assert_eq!(status & (STATUS_BSY | STATUS_DRDY | STATUS_DF), STATUS_DRDY);
                } else {
                    prop_assert_eq!(status, 0, "absent drive 1 reads 0");
                }
                if ide.device & DEVICE_DEV == 0 {
                    prop_assert_eq!(status & STATUS_DRQ, 0, "drive 0 never has data");
                }
                prop_assert_eq!(rig.irq.level, ide.irq_level());
                if with_disk {
                    prop_assert_eq!(rig.disk.len(), original.len());
                    let changed = (0..6)
                        .filter(|&lba| sector_of(&rig.disk, lba) != sector_of(&original, lba))
                        .count();
                    prop_assert!(changed as u64 <= ide.sectors_written());
                } else {
                    prop_assert!(rig.disk.is_empty());
                    prop_assert_eq!(ide.sectors_read() + ide.sectors_written(), 0);
                }
                if let Some(transfer) = ide.transfer {
                    prop_assert!(transfer.position < SECTOR_SIZE && transfer.remaining >= 1);
                    prop_assert!(u64::from(transfer.lba + transfer.remaining) <= 6);
                }
            }
        }

        /// xv6-style requests against a shadow copy: reads see every earlier write, each request
        /// interrupts exactly once, and the records list the requests.
        #[test]
        fn xv6_requests_match_a_shadow_disk(
            requests in prop::collection::vec((0u32..16, prop::option::of(any::<u8>())), 1..48),
        ) {
            let mut shadow = patterned_disk(16);
            let mut rig = Rig::with_disk(shadow.clone());
            prop_assert!(rig.ideinit());
            for (index, &(block, write)) in requests.iter().enumerate() {
                match write {
                    Some(seed) => {
                        let data: Vec<u8> =
                            (0..SECTOR_SIZE).map(|i| seed.wrapping_add(i as u8)).collect();
                        rig.idestart(block, Some(&data));
                        let start = block as usize * SECTOR_SIZE;
                        shadow[start..start + SECTOR_SIZE].copy_from_slice(&data);
                    }
                    None => {
                        rig.idestart(block, None);
                        let data = rig.ideintr_read();
                        prop_assert_eq!(data.as_deref(), Some(sector_of(&shadow, block as usize)));
                    }
                }
                prop_assert_eq!(rig.irq.raises, index + 1);
                prop_assert_eq!(rig.ide.status(), STATUS_IDLE);
            }
            prop_assert_eq!(&rig.disk[..], &shadow[..]);
            prop_assert_eq!(rig.events.len(), requests.len());
            let writes = requests.iter().filter(|(_, write)| write.is_some()).count() as u64;
            prop_assert_eq!(rig.ide.sectors_written(), writes);
            prop_assert_eq!(rig.ide.sectors_read(), requests.len() as u64 - writes);
        }
    }
}
