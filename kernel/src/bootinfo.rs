//! The multiboot (v1) information structure a guest finds through EBX at entry (Multiboot
//! 0.6.96, 3.3 "Boot information format"): memory sizes, a memory map and the command line
//! the lab file gave the VM.
//!
//! It sits at [`BOOT_INFO_GPA`], in low memory that neither xv6 nor Carousel's guests use:
//! below xv6's AP trampoline at 0x7000 and above the BIOS data area.

use crate::{range_in_ram, GuestRam};

/// Guest-physical address of the information structure (EBX at entry).
pub const BOOT_INFO_GPA: u64 = 0x6000;
/// Guest-physical address of the memory map entries.
const MMAP_GPA: u64 = BOOT_INFO_GPA + 0x80;
/// Guest-physical address of the NUL-terminated command line.
const CMDLINE_GPA: u64 = BOOT_INFO_GPA + 0x100;
/// End of the area this module writes (exclusive).
pub const BOOT_INFO_END: u64 = BOOT_INFO_GPA + 0x1000;
/// Longest command line, without its NUL.
pub const CMDLINE_MAX: usize = (BOOT_INFO_END - CMDLINE_GPA) as usize - 1;
/// Value of EAX at entry that tells a multiboot kernel it was booted by a compliant loader.
pub const MULTIBOOT1_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// `flags` bit: mem_lower and mem_upper are valid.
const FLAG_MEMORY: u32 = 1 << 0;
/// `flags` bit: cmdline is valid.
const FLAG_CMDLINE: u32 = 1 << 2;
/// `flags` bit: mmap_length and mmap_addr are valid.
const FLAG_MMAP: u32 = 1 << 6;
/// Conventional memory the guest is told it has below 1 MiB (the BIOS keeps 639 KiB usable).
const LOWER_MEMORY: u64 = 0x9_FC00;
/// Start of extended memory.
const ONE_MIB: u64 = 0x10_0000;
/// Memory-map entry type of usable RAM.
const MMAP_AVAILABLE: u32 = 1;

/// Why the information could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootInfoError {
    /// The command line is longer than [`CMDLINE_MAX`].
    CommandLineTooLong { length: usize },
    /// Guest RAM is too small to hold the structure (and anything else).
    RamTooSmall { ram: u64 },
    /// The guest image occupies the area the structure needs.
    Overlap { image_end: u64 },
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::CommandLineTooLong { length } => {
                write!(
                    f,
                    "command line of {length} bytes is longer than {CMDLINE_MAX}"
                )
            }
            Self::RamTooSmall { ram } => write!(f, "{ram:#x} bytes of RAM is too small"),
            Self::Overlap { image_end } => write!(
                f,
                "the guest image (up to {image_end:#x}) overlaps the boot information at \
                 {BOOT_INFO_GPA:#x}"
            ),
        }
    }
}

/// Writes the boot information into `ram` and returns its guest-physical address (for EBX).
///
/// `image_start`/`image_end` bound the loaded guest image, which must not overlap the area.
pub fn write(
    ram: &mut impl GuestRam,
    cmdline: &str,
    image_start: u64,
    image_end: u64,
) -> Result<u32, BootInfoError> {
    if cmdline.len() > CMDLINE_MAX {
        return Err(BootInfoError::CommandLineTooLong {
            length: cmdline.len(),
        });
    }
    let size = ram.size();
    if size < 2 * ONE_MIB || !range_in_ram(BOOT_INFO_GPA, BOOT_INFO_END - BOOT_INFO_GPA, size) {
        return Err(BootInfoError::RamTooSmall { ram: size });
    }
    if image_start < BOOT_INFO_END && image_end > BOOT_INFO_GPA {
        return Err(BootInfoError::Overlap { image_end });
    }
    let mut info = [0u8; 52];
    let mut put = |offset: usize, value: u32| {
        info[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    };
    put(0, FLAG_MEMORY | FLAG_CMDLINE | FLAG_MMAP);
    put(4, (LOWER_MEMORY / 1024) as u32);
    put(8, ((size - ONE_MIB) / 1024).min(u64::from(u32::MAX)) as u32);
    put(16, CMDLINE_GPA as u32);
    put(44, 2 * 24);
    put(48, MMAP_GPA as u32);
    ram.write(BOOT_INFO_GPA, &info);

    // Each entry: size (of the rest, 20), base, length, type.
    let mut mmap = [0u8; 48];
    for (index, (base, length)) in [(0, LOWER_MEMORY), (ONE_MIB, size - ONE_MIB)]
        .into_iter()
        .enumerate()
    {
        let entry = &mut mmap[index * 24..index * 24 + 24];
        entry[0..4].copy_from_slice(&20u32.to_le_bytes());
        entry[4..12].copy_from_slice(&base.to_le_bytes());
        entry[12..20].copy_from_slice(&length.to_le_bytes());
        entry[20..24].copy_from_slice(&MMAP_AVAILABLE.to_le_bytes());
    }
    ram.write(MMAP_GPA, &mmap);
    ram.write(CMDLINE_GPA, cmdline.as_bytes());
    ram.fill(CMDLINE_GPA + cmdline.len() as u64, 1, 0);
    Ok(BOOT_INFO_GPA as u32)
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;
    use crate::testing::VecRam;

    fn word(ram: &VecRam, gpa: u64) -> u32 {
        u32::from_le_bytes(ram.0[gpa as usize..gpa as usize + 4].try_into().unwrap())
    }

    #[test]
    fn writes_memory_sizes_and_cmdline() {
        let mut ram = VecRam(vec![0xEE; 8 << 20]);
        let ebx = write(&mut ram, "fail now", 0x10_0000, 0x20_0000).unwrap();
        assert_eq!(u64::from(ebx), BOOT_INFO_GPA);
        assert_eq!(word(&ram, BOOT_INFO_GPA), 0x45);
        assert_eq!(word(&ram, BOOT_INFO_GPA + 4), 639);
        assert_eq!(word(&ram, BOOT_INFO_GPA + 8), 7 * 1024);
        let cmdline = word(&ram, BOOT_INFO_GPA + 16) as usize;
        assert_eq!(&ram.0[cmdline..cmdline + 9], b"fail now\0");
        let mmap = word(&ram, BOOT_INFO_GPA + 48) as usize;
        assert_eq!(word(&ram, BOOT_INFO_GPA + 44), 48);
        assert_eq!(
            u64::from_le_bytes(ram.0[mmap + 28..mmap + 36].try_into().unwrap()),
            ONE_MIB
        );
    }

    #[test]
    fn refuses_overlap_long_cmdline_and_tiny_ram() {
        let mut ram = VecRam(vec![0; 8 << 20]);
        assert_eq!(
            write(&mut ram, "", 0x1000, 0x6800),
            Err(BootInfoError::Overlap { image_end: 0x6800 })
        );
        let long = "x".repeat(CMDLINE_MAX + 1);
        assert!(matches!(
            write(&mut ram, &long, 0x10_0000, 0x10_1000),
            Err(BootInfoError::CommandLineTooLong { .. })
        ));
        assert!(write(&mut ram, &"y".repeat(CMDLINE_MAX), 0x10_0000, 0x10_1000).is_ok());
        let mut tiny = VecRam(vec![0; 1 << 20]);
        assert!(matches!(
            write(&mut tiny, "", 0x8000, 0x9000),
            Err(BootInfoError::RamTooSmall { .. })
        ));
    }
}
