//! The shared drive: the emulator's extra ATA disk, which holds every VM's disk as an extent,
//! driven by PIO with 48-bit LBA and polling (its interrupt stays off: nIEN), after ATA/ATAPI-7
//! volume 1, 7.16 "IDENTIFY DEVICE", 7.36 "READ SECTOR(S) EXT" and 7.61 "WRITE SECTOR(S) EXT".
//!
//! The drive is found by probing the four legacy positions (primary and secondary channel,
//! master and slave) for an ATA (not ATAPI) device with 48-bit addressing whose sector 0
//! begins with `DRIVE_MAGIC` and this run's id: no other disk the machine has is ever written.
//! After GRUB has loaded the modules nothing else drives these ports (the guests' port I/O
//! always exits to their device models).
//!
//! A write returns once the drive has taken the sector's data and cleared BSY: the emulator has
//! then written it to its image file (Bochs and QEMU both write through to the file, so it
//! survives the emulator being killed).

use carousel_kernel::disk::{Drive, DriveError, Sector};
use carousel_protocol::config::{DriveConfig, DRIVE_MAGIC};

use super::arch;

/// Command block registers, as offsets from the channel's base port.
const DATA: u16 = 0;
const ERROR: u16 = 1;
const SECTOR_COUNT: u16 = 2;
const LBA_LOW: u16 = 3;
const LBA_MID: u16 = 4;
const LBA_HIGH: u16 = 5;
const DEVICE: u16 = 6;
const STATUS_COMMAND: u16 = 7;

/// Status bits.
const STATUS_ERR: u8 = 1 << 0;
const STATUS_DRQ: u8 = 1 << 3;
const STATUS_DF: u8 = 1 << 5;
const STATUS_BSY: u8 = 1 << 7;

/// Device register: LBA addressing, and the bit that selects the slave.
const DEVICE_LBA: u8 = 1 << 6;
const DEVICE_SLAVE: u8 = 1 << 4;
/// The obsolete bits 7 and 5 that ATA-1 devices want set.
const DEVICE_OBSOLETE: u8 = 0xA0;
/// Device control: nIEN, no interrupts.
const CONTROL_NIEN: u8 = 1 << 1;

/// IDENTIFY DEVICE, READ SECTOR(S) EXT, WRITE SECTOR(S) EXT.
const COMMAND_IDENTIFY: u8 = 0xEC;
const COMMAND_READ_EXT: u8 = 0x24;
const COMMAND_WRITE_EXT: u8 = 0x34;

/// IDENTIFY word 83 bit 10: the 48-bit Address feature set is supported.
const IDENTIFY_LBA48_WORD: usize = 83;
const IDENTIFY_LBA48_BIT: u16 = 1 << 10;
/// IDENTIFY words 100..=103: the maximum user LBA for 48-bit addressing, plus one.
const IDENTIFY_LBA48_SECTORS: usize = 100;

/// Polls of the status register before a wait is a timeout. Bochs needs a few thousand
/// instructions for a seek; this is generous on any machine.
const POLL_LIMIT: u32 = 50_000_000;

/// The legacy channels: command block base and control block port.
const CHANNELS: [(u16, u16); 2] = [(0x1F0, 0x3F6), (0x170, 0x376)];

/// One ATA drive at a legacy position.
#[derive(Debug)]
pub struct AtaDrive {
    base: u16,
    control: u16,
    slave: bool,
    sectors: u64,
}

/// Why no shared drive was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// No position holds an LBA48 ATA drive whose sector 0 names this run.
    NotFound,
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotFound => f.write_str(
                "no ATA drive with 48-bit addressing whose sector 0 names this run (probed the \
                 primary and secondary channels, master and slave)",
            ),
        }
    }
}

impl AtaDrive {
    /// Finds the drive `config` describes.
    pub fn probe(config: &DriveConfig) -> Result<Self, ProbeError> {
        for (base, control) in CHANNELS {
            for slave in [false, true] {
                // SAFETY: the legacy IDE ports are the hypervisor's once GRUB is done (module
                // doc); IDENTIFY and a read of sector 0 change no data.
                let Some(mut drive) = (unsafe { Self::identify(base, control, slave) }) else {
                    continue;
                };
                let mut sector = [0; 512];
                if drive.read(0, &mut sector).is_err() {
                    continue;
                }
                let id = config.run_id.to_le_bytes();
                if &sector[..16] == DRIVE_MAGIC && sector[16..24] == id {
                    if drive.sectors < config.sectors {
                        log::error!(
                            "shared drive at {base:#x}{}: {} sectors, the run needs {}",
                            if slave { " slave" } else { " master" },
                            drive.sectors,
                            config.sectors
                        );
                        continue;
                    }
                    log::info!(
                        "shared drive at {base:#x} {}: {} MiB",
                        if slave { "slave" } else { "master" },
                        drive.sectors >> 11
                    );
                    return Ok(drive);
                }
            }
        }
        Err(ProbeError::NotFound)
    }

    /// IDENTIFY DEVICE at one position: the drive, if an ATA device with 48-bit addressing
    /// answers.
    ///
    /// # Safety
    /// The channel's ports must be the hypervisor's.
    unsafe fn identify(base: u16, control: u16, slave: bool) -> Option<Self> {
        let drive = Self {
            base,
            control,
            slave,
            sectors: 0,
        };
        // SAFETY: the caller owns the channel.
        unsafe {
            // An empty channel floats the bus high.
            if arch::inb(base + STATUS_COMMAND) == 0xFF {
                return None;
            }
            arch::outb(control, CONTROL_NIEN);
            arch::outb(base + DEVICE, DEVICE_OBSOLETE | drive.select());
            drive.settle();
            for register in [SECTOR_COUNT, LBA_LOW, LBA_MID, LBA_HIGH] {
                arch::outb(base + register, 0);
            }
            arch::outb(base + STATUS_COMMAND, COMMAND_IDENTIFY);
            if arch::inb(base + STATUS_COMMAND) == 0 {
                return None;
            }
            drive.wait_not_busy().ok()?;
            // An ATAPI device (the CD-ROM) aborts IDENTIFY DEVICE and shows its signature.
            if arch::inb(base + LBA_MID) != 0 || arch::inb(base + LBA_HIGH) != 0 {
                return None;
            }
            drive.wait_data().ok()?;
            let mut words = [0u16; 256];
            for word in &mut words {
                *word = arch::inw(base + DATA);
            }
            if words[IDENTIFY_LBA48_WORD] & IDENTIFY_LBA48_BIT == 0 {
                return None;
            }
            let sectors = (0..4).fold(0u64, |sectors, index| {
                sectors | u64::from(words[IDENTIFY_LBA48_SECTORS + index]) << (16 * index)
            });
            Some(Self { sectors, ..drive })
        }
    }

    /// The device register's drive-select bit.
    fn select(&self) -> u8 {
        if self.slave {
            DEVICE_SLAVE
        } else {
            0
        }
    }

    /// The 400 ns a drive needs after it is selected: four reads of alternate status.
    ///
    /// # Safety
    /// The channel must be the hypervisor's.
    unsafe fn settle(&self) {
        for _ in 0..4 {
            // SAFETY: alternate status has no side effect; the caller owns the channel.
            unsafe { arch::inb(self.control) };
        }
    }

    /// Waits until BSY clears; the status then, or why not.
    ///
    /// # Safety
    /// The channel must be the hypervisor's.
    unsafe fn wait_not_busy(&self) -> Result<u8, DriveError> {
        let mut status = 0;
        for _ in 0..POLL_LIMIT {
            // SAFETY: alternate status has no side effect; the caller owns the channel.
            status = unsafe { arch::inb(self.control) };
            if status & STATUS_BSY == 0 {
                return Ok(status);
            }
            core::hint::spin_loop();
        }
        Err(DriveError::Timeout { status })
    }

    /// Waits until the drive wants data (DRQ); an error if it reports one instead.
    ///
    /// # Safety
    /// The channel must be the hypervisor's.
    unsafe fn wait_data(&self) -> Result<(), DriveError> {
        // SAFETY: forwarded.
        let status = unsafe { self.wait_not_busy()? };
        if status & (STATUS_ERR | STATUS_DF) != 0 {
            // SAFETY: the error register only reports.
            let error = unsafe { arch::inb(self.base + ERROR) };
            return Err(DriveError::Device { status, error });
        }
        if status & STATUS_DRQ == 0 {
            return Err(DriveError::Device { status, error: 0 });
        }
        Ok(())
    }

    /// Issues a one-sector 48-bit command for `lba`.
    ///
    /// # Safety
    /// The channel must be the hypervisor's and `lba` inside the drive.
    unsafe fn issue(&self, command: u8, lba: u64) -> Result<(), DriveError> {
        let base = self.base;
        let bytes = lba.to_le_bytes();
        // SAFETY: the caller owns the channel; these are the task-file writes of a 48-bit
        // command (high-order bytes first, ATA/ATAPI-7 6.16 "48-bit Address feature set").
        unsafe {
            self.wait_not_busy()?;
            arch::outb(base + DEVICE, DEVICE_LBA | self.select());
            self.settle();
            arch::outb(base + SECTOR_COUNT, 0);
            arch::outb(base + LBA_LOW, bytes[3]);
            arch::outb(base + LBA_MID, bytes[4]);
            arch::outb(base + LBA_HIGH, bytes[5]);
            arch::outb(base + SECTOR_COUNT, 1);
            arch::outb(base + LBA_LOW, bytes[0]);
            arch::outb(base + LBA_MID, bytes[1]);
            arch::outb(base + LBA_HIGH, bytes[2]);
            arch::outb(base + STATUS_COMMAND, command);
            self.settle();
        }
        Ok(())
    }

    fn check(&self, lba: u64) -> Result<(), DriveError> {
        if lba >= self.sectors {
            return Err(DriveError::OutOfRange { lba });
        }
        Ok(())
    }
}

impl Drive for AtaDrive {
    fn sectors(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buffer: &mut Sector) -> Result<(), DriveError> {
        self.check(lba)?;
        // SAFETY: the channel is the hypervisor's (probe), `lba` lies inside the drive.
        unsafe {
            self.issue(COMMAND_READ_EXT, lba)?;
            self.wait_data()?;
            for pair in buffer.chunks_exact_mut(2) {
                pair.copy_from_slice(&arch::inw(self.base + DATA).to_le_bytes());
            }
            // Reading the status register ends the command (and clears its interrupt).
            arch::inb(self.base + STATUS_COMMAND);
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, data: &Sector) -> Result<(), DriveError> {
        self.check(lba)?;
        // SAFETY: the channel is the hypervisor's (probe), `lba` lies inside the drive.
        unsafe {
            self.issue(COMMAND_WRITE_EXT, lba)?;
            self.wait_data()?;
            for pair in data.chunks_exact(2) {
                arch::outw(self.base + DATA, u16::from_le_bytes([pair[0], pair[1]]));
            }
            let status = self.wait_not_busy()?;
            let status = status | arch::inb(self.base + STATUS_COMMAND);
            if status & (STATUS_ERR | STATUS_DF) != 0 {
                let error = arch::inb(self.base + ERROR);
                return Err(DriveError::Device { status, error });
            }
        }
        Ok(())
    }
}
