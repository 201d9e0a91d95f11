//! A polled driver for the disk of a Carousel VM: drive 1 (slave) of the primary IDE channel,
//! one sector at a time in 28-bit LBA PIO mode, with the channel's interrupt kept off the line
//! (device control nIEN), so guests that run with interrupts disabled can use it.
//!
//! Each transfer is the register sequence xv6's `idestart` writes (count, LBA, drive, command),
//! then the data with one `rep insd` / `rep outsd` once the status shows DRQ. Every wait is
//! bounded by a number of status reads, so a missing disk is an error, never a hang.
//!
//! What is not here: interrupt-driven transfers (`devcheck` drives those as xv6 does, with the
//! register names from here), multi-sector commands, drive 0.
//!
//! Registers after the ATA/ATAPI-6 command block and control block descriptions, as Carousel's
//! model (`carousel-devices` `ide`) implements them.

use core::fmt;

use crate::arch;

/// Data port (32-bit string I/O).
pub const DATA: u16 = 0x1F0;
/// Sector count.
pub const SECTOR_COUNT: u16 = 0x1F2;
/// LBA bits 7:0.
pub const LBA_LOW: u16 = 0x1F3;
/// LBA bits 15:8.
pub const LBA_MID: u16 = 0x1F4;
/// LBA bits 23:16.
pub const LBA_HIGH: u16 = 0x1F5;
/// Drive / head: LBA bits 27:24, drive bit, LBA mode.
pub const DRIVE_HEAD: u16 = 0x1F6;
/// Status (read) / command (write).
pub const STATUS_COMMAND: u16 = 0x1F7;
/// Device control (write): nIEN.
pub const CONTROL: u16 = 0x3F6;
/// Device control: nIEN, the channel's interrupt kept off the line.
pub const CONTROL_NO_INTERRUPTS: u8 = 1 << 1;
/// Status: busy.
pub const STATUS_BSY: u8 = 0x80;
/// Status: drive ready.
pub const STATUS_DRDY: u8 = 0x40;
/// Status: drive fault.
pub const STATUS_DF: u8 = 0x20;
/// Status: data request (a sector may be moved through the data port).
pub const STATUS_DRQ: u8 = 0x08;
/// Status: error.
pub const STATUS_ERR: u8 = 0x01;
/// Drive / head: LBA mode, drive 0.
pub const SELECT_LBA: u8 = 0xE0;
/// Drive / head: the drive-1 bit (the VM's disk).
pub const DRIVE1: u8 = 1 << 4;
/// Command: READ SECTORS.
pub const COMMAND_READ: u8 = 0x20;
/// Command: WRITE SECTORS.
pub const COMMAND_WRITE: u8 = 0x30;
/// Status reads before a wait gives up.
const STATUS_POLLS: u32 = 100_000;
/// Largest sector number 28-bit LBA addresses, plus one.
pub const LBA28_SECTORS: u32 = 1 << 28;

/// Bytes in a sector.
pub const SECTOR_SIZE: usize = 512;
/// Doublewords in a sector (one `rep insd` / `rep outsd`).
pub const SECTOR_DWORDS: usize = SECTOR_SIZE / 4;

/// One sector's data, as the data port moves it.
pub type Sector = [u32; SECTOR_DWORDS];

/// Why a transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdeError {
    /// The LBA does not fit 28 bits.
    LbaOutOfRange(u32),
    /// The status never showed what the step waits for (the last status read).
    Timeout(u8),
    /// The status showed DF or ERR (the status read).
    Device(u8),
}

impl fmt::Display for IdeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LbaOutOfRange(lba) => write!(formatter, "LBA {lba} is beyond 28 bits"),
            Self::Timeout(status) => write!(formatter, "no answer (status {status:#x})"),
            Self::Device(status) => write!(formatter, "device error (status {status:#x})"),
        }
    }
}

/// Reads the status register (which also clears a pending interrupt; the line is off anyway).
fn status() -> u8 {
    // SAFETY: reading the status register has no effect beyond clearing INTRQ, which nothing in a
    // polled guest waits for.
    unsafe { arch::inb(STATUS_COMMAND) }
}

/// Polls until BSY is clear and every bit of `want` is set; fails on DF or ERR.
fn wait_for(want: u8) -> Result<(), IdeError> {
    let mut last = 0;
    for _ in 0..STATUS_POLLS {
        last = status();
        if last & STATUS_BSY == 0 {
            if last & (STATUS_DF | STATUS_ERR) != 0 {
                return Err(IdeError::Device(last));
            }
            if last & want == want {
                return Ok(());
            }
        }
    }
    Err(IdeError::Timeout(last))
}

/// Selects drive 1 and writes the task file and `command` for one sector at `lba`, with the
/// drive's interrupt off (polled).
fn start(lba: u32, command: u8) -> Result<(), IdeError> {
    start_with(lba, command, CONTROL_NO_INTERRUPTS)
}

/// [`start`] with device control `control` (0: the drive interrupts at completion).
fn start_with(lba: u32, command: u8, control: u8) -> Result<(), IdeError> {
    if lba >= LBA28_SECTORS {
        return Err(IdeError::LbaOutOfRange(lba));
    }
    wait_for(STATUS_DRDY)?;
    let [low, mid, high, top] = lba.to_le_bytes();
    // SAFETY: the guest owns the channel and has no transfer in flight; these are the register
    // writes of one single-sector command to its own disk.
    unsafe {
        arch::outb(CONTROL, control);
        arch::outb(SECTOR_COUNT, 1);
        arch::outb(LBA_LOW, low);
        arch::outb(LBA_MID, mid);
        arch::outb(LBA_HIGH, high);
        arch::outb(DRIVE_HEAD, SELECT_LBA | DRIVE1 | (top & 0x0F));
        arch::outb(STATUS_COMMAND, command);
    }
    Ok(())
}

/// Reads sector `lba` of the VM's disk into `sector`.
pub fn read(lba: u32, sector: &mut Sector) -> Result<(), IdeError> {
    start(lba, COMMAND_READ)?;
    wait_for(STATUS_DRQ)?;
    // SAFETY: the drive shows DRQ for the sector this guest asked for; reading the data port is
    // the transfer.
    unsafe { arch::insl(DATA, sector) };
    Ok(())
}

/// [`read()`] as xv6 does it: the drive's interrupt on, and `wait` called once the command is
/// out, to block until the interrupt came (the data is ready then), before the status and the
/// data are read.
pub fn read_after(lba: u32, sector: &mut Sector, wait: &mut dyn FnMut()) -> Result<(), IdeError> {
    start_with(lba, COMMAND_READ, 0)?;
    wait();
    wait_for(STATUS_DRQ)?;
    // SAFETY: as in `read`.
    unsafe { arch::insl(DATA, sector) };
    Ok(())
}

/// [`write()`] as xv6 does it: the drive's interrupt on, the data sent at once after the
/// command, and `wait` called to block until the completion interrupt came.
pub fn write_after(lba: u32, sector: &Sector, wait: &mut dyn FnMut()) -> Result<(), IdeError> {
    start_with(lba, COMMAND_WRITE, 0)?;
    wait_for(STATUS_DRQ)?;
    // SAFETY: as in `write`.
    unsafe { arch::outsl(DATA, sector) };
    wait();
    wait_for(STATUS_DRDY)
}

/// Writes `sector` to sector `lba` of the VM's disk.
pub fn write(lba: u32, sector: &Sector) -> Result<(), IdeError> {
    start(lba, COMMAND_WRITE)?;
    wait_for(STATUS_DRQ)?;
    // SAFETY: the drive shows DRQ for the write this guest started; the data port takes the
    // sector.
    unsafe { arch::outsl(DATA, sector) };
    // The write is done when the drive is ready again.
    wait_for(STATUS_DRDY)
}
