//! VM disks: where each VM's sectors live, and the checks that keep every VM inside its own.
//!
//! A VM's disk is an extent of the emulator's shared ATA drive ([`Drive`], driven by the
//! hypervisor itself: `hw::ata` on the machine, `FakeDrive` in the tests), or a GRUB module
//! served in place from the memory GRUB loaded it into (`disk_backend = "memory"`). The IDE
//! model reaches either through [`VmStore`], which refuses any sector beyond the VM's own disk
//! before the drive is touched: a request past a VM's extent is an ATA error in that VM and
//! never reaches another VM's sectors.

#[cfg(test)]
use alloc::vec::Vec;
use core::fmt;

use carousel_devices::ide::{SectorStore, StoreError, SECTOR_SIZE};

/// One sector's bytes.
pub type Sector = [u8; SECTOR_SIZE];

/// Why the shared drive did not move a sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveError {
    /// The sector lies beyond the drive.
    OutOfRange { lba: u64 },
    /// The drive reported an error (its status and error registers).
    Device { status: u8, error: u8 },
    /// The drive did not become ready in time.
    Timeout { status: u8 },
}

impl fmt::Display for DriveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { lba } => write!(f, "sector {lba} lies beyond the drive"),
            Self::Device { status, error } => {
                write!(f, "drive error (status {status:#x}, error {error:#x})")
            }
            Self::Timeout { status } => write!(f, "drive timed out (status {status:#x})"),
        }
    }
}

/// The shared drive, one sector at a time, by 48-bit LBA.
pub trait Drive {
    /// Its size in sectors.
    fn sectors(&self) -> u64;
    /// Reads sector `lba` into `buffer`.
    fn read(&mut self, lba: u64, buffer: &mut Sector) -> Result<(), DriveError>;
    /// Writes sector `lba`; when this returns `Ok` the drive has taken the data.
    fn write(&mut self, lba: u64, data: &Sector) -> Result<(), DriveError>;
}

/// A VM's part of the shared drive: sectors [start, start + sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    start: u64,
    sectors: u64,
}

/// Why an extent cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentError {
    /// It reaches past the end of the drive (or overflows).
    BeyondDrive {
        start: u64,
        sectors: u64,
        drive_sectors: u64,
    },
}

impl fmt::Display for ExtentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BeyondDrive {
                start,
                sectors,
                drive_sectors,
            } => write!(
                f,
                "its extent (sector {start}, {sectors} sectors) reaches past the shared drive's \
                 {drive_sectors} sectors"
            ),
        }
    }
}

impl Extent {
    /// The extent of `sectors` sectors from `start`, which must lie inside a drive of
    /// `drive_sectors` sectors.
    pub fn new(start: u64, sectors: u64, drive_sectors: u64) -> Result<Self, ExtentError> {
        match start.checked_add(sectors) {
            Some(end) if end <= drive_sectors => Ok(Self { start, sectors }),
            _ => Err(ExtentError::BeyondDrive {
                start,
                sectors,
                drive_sectors,
            }),
        }
    }

    /// Its size in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// The drive sector of the VM's sector `lba`, if `lba` lies inside.
    pub fn drive_lba(&self, lba: u32) -> Option<u64> {
        (u64::from(lba) < self.sectors).then(|| self.start + u64::from(lba))
    }
}

/// Where one VM's sectors live.
#[derive(Debug)]
pub enum Backing {
    /// No disk.
    None,
    /// An extent of the shared drive.
    Extent(Extent),
    /// The module's bytes, in place (a whole number of sectors).
    Memory(&'static mut [u8]),
}

impl Backing {
    /// The disk's size in sectors.
    pub fn sectors(&self) -> u64 {
        match self {
            Self::None => 0,
            Self::Extent(extent) => extent.sectors(),
            Self::Memory(bytes) => (bytes.len() / SECTOR_SIZE) as u64,
        }
    }
}

/// One VM's disk as the IDE model sees it: its backing, with the shared drive when there is
/// one. Every sector number is checked against the VM's own disk first.
#[allow(missing_debug_implementations)]
pub struct VmStore<'a, 'd> {
    pub backing: &'a mut Backing,
    pub drive: Option<&'d mut dyn Drive>,
}

impl SectorStore for VmStore<'_, '_> {
    fn read_sector(&mut self, lba: u32, buffer: &mut Sector) -> Result<(), StoreError> {
        match self.backing {
            Backing::None => Err(StoreError::OutOfRange),
            Backing::Memory(bytes) => bytes.read_sector(lba, buffer),
            Backing::Extent(extent) => {
                let at = extent.drive_lba(lba).ok_or(StoreError::OutOfRange)?;
                let drive = self.drive.as_deref_mut().ok_or(StoreError::Device)?;
                drive.read(at, buffer).map_err(|error| {
                    log::error!("shared drive: reading sector {at}: {error}");
                    StoreError::Device
                })
            }
        }
    }

    fn write_sector(&mut self, lba: u32, data: &Sector) -> Result<(), StoreError> {
        match self.backing {
            Backing::None => Err(StoreError::OutOfRange),
            Backing::Memory(bytes) => bytes.write_sector(lba, data),
            Backing::Extent(extent) => {
                let at = extent.drive_lba(lba).ok_or(StoreError::OutOfRange)?;
                let drive = self.drive.as_deref_mut().ok_or(StoreError::Device)?;
                drive.write(at, data).map_err(|error| {
                    log::error!("shared drive: writing sector {at}: {error}");
                    StoreError::Device
                })
            }
        }
    }
}

/// A drive in memory for the host tests: its bytes, and every access made to it.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct FakeDrive {
    pub bytes: Vec<u8>,
    /// (written, drive LBA) of each access, in order.
    pub accesses: Vec<(bool, u64)>,
}

#[cfg(test)]
impl FakeDrive {
    /// A zeroed drive of `sectors` sectors.
    pub fn new(sectors: u64) -> Self {
        Self {
            bytes: alloc::vec![0; sectors as usize * SECTOR_SIZE],
            accesses: Vec::new(),
        }
    }

    fn range(&self, lba: u64) -> Result<core::ops::Range<usize>, DriveError> {
        if lba >= self.sectors() {
            return Err(DriveError::OutOfRange { lba });
        }
        let start = lba as usize * SECTOR_SIZE;
        Ok(start..start + SECTOR_SIZE)
    }
}

#[cfg(test)]
impl Drive for FakeDrive {
    fn sectors(&self) -> u64 {
        (self.bytes.len() / SECTOR_SIZE) as u64
    }

    fn read(&mut self, lba: u64, buffer: &mut Sector) -> Result<(), DriveError> {
        self.accesses.push((false, lba));
        let range = self.range(lba)?;
        buffer.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn write(&mut self, lba: u64, data: &Sector) -> Result<(), DriveError> {
        self.accesses.push((true, lba));
        let range = self.range(lba)?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_must_lie_inside_the_drive() {
        assert!(Extent::new(0, 10, 10).is_ok());
        assert!(Extent::new(5, 5, 10).is_ok());
        assert!(Extent::new(5, 6, 10).is_err());
        assert!(Extent::new(u64::MAX, 2, u64::MAX).is_err());
        let extent = Extent::new(100, 4, 1000).unwrap();
        assert_eq!(extent.drive_lba(0), Some(100));
        assert_eq!(extent.drive_lba(3), Some(103));
        assert_eq!(extent.drive_lba(4), None);
        assert_eq!(extent.drive_lba(u32::MAX), None);
    }

    #[test]
    fn a_store_never_reaches_past_its_extent() {
        let mut drive = FakeDrive::new(16);
        drive.bytes[8 * SECTOR_SIZE] = 0xAB;
        let mut backing = Backing::Extent(Extent::new(8, 4, 16).unwrap());
        let mut store = VmStore {
            backing: &mut backing,
            drive: Some(&mut drive),
        };
        let mut buffer = [0; SECTOR_SIZE];
        assert_eq!(store.read_sector(0, &mut buffer), Ok(()));
        assert_eq!(buffer[0], 0xAB);
        assert_eq!(store.write_sector(3, &[7; SECTOR_SIZE]), Ok(()));
        assert_eq!(
            store.read_sector(4, &mut buffer),
            Err(StoreError::OutOfRange)
        );
        assert_eq!(
            store.write_sector(4, &[9; SECTOR_SIZE]),
            Err(StoreError::OutOfRange)
        );
        assert_eq!(drive.accesses, [(false, 8), (true, 11)], "nothing else");
        assert!(drive.bytes[12 * SECTOR_SIZE..]
            .iter()
            .all(|&byte| byte == 0));
    }

    #[test]
    fn without_a_drive_or_disk_nothing_moves() {
        let mut backing = Backing::Extent(Extent::new(0, 4, 4).unwrap());
        let mut store = VmStore {
            backing: &mut backing,
            drive: None,
        };
        let mut buffer = [0; SECTOR_SIZE];
        assert_eq!(store.read_sector(0, &mut buffer), Err(StoreError::Device));
        let mut none = Backing::None;
        let mut store = VmStore {
            backing: &mut none,
            drive: None,
        };
        assert_eq!(store.write_sector(0, &buffer), Err(StoreError::OutOfRange));
        let memory: &'static mut [u8] = alloc::vec![1u8; 2 * SECTOR_SIZE].leak();
        let mut backing = Backing::Memory(memory);
        assert_eq!(backing.sectors(), 2);
        let mut store = VmStore {
            backing: &mut backing,
            drive: None,
        };
        assert_eq!(store.write_sector(1, &[5; SECTOR_SIZE]), Ok(()));
        assert_eq!(store.read_sector(1, &mut buffer), Ok(()));
        assert_eq!(buffer, [5; SECTOR_SIZE]);
        assert_eq!(
            store.read_sector(2, &mut buffer),
            Err(StoreError::OutOfRange)
        );
    }
}
