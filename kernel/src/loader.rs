//! Loading a guest kernel: a multiboot ELF (class 32 or 64, x86) whose PT_LOAD segments are
//! placed at their *physical* addresses (p_paddr), as xv6's boot sector and GRUB do, with the
//! bytes from p_filesz to p_memsz zeroed.
//!
//! The image must carry a multiboot header (v1 within its first 8 KiB, or v2 within 32 KiB), so
//! that a file that is not meant to boot is refused with a reason instead of started.

use core::fmt;

use elf::endian::AnyEndian;
use elf::file::Class;
use elf::ElfBytes;

use crate::{range_in_ram, GuestRam};

/// Multiboot 1 header magic (in the image).
pub const MULTIBOOT1_HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Multiboot 2 header magic (in the image).
pub const MULTIBOOT2_HEADER_MAGIC: u32 = 0xE852_50D6;
/// How far into the file a multiboot 1 header may start (Multiboot 0.6.96, 3.1.1).
const MULTIBOOT1_SEARCH: usize = 8192;
/// How far into the file a multiboot 2 header may start (Multiboot2 1.6, 3.1.1).
const MULTIBOOT2_SEARCH: usize = 32768;
/// ELF machine: Intel 80386.
const EM_386: u16 = 3;
/// ELF machine: AMD x86-64.
const EM_X86_64: u16 = 62;
/// Segment type of a loadable segment.
const PT_LOAD: u32 = 1;

/// Which multiboot header the image carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultibootVersion {
    V1,
    V2,
}

/// What was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Guest-physical entry point (always below 4 GiB: guests start in 32-bit mode).
    pub entry: u32,
    /// ELF class of the image: 32 or 64.
    pub class_bits: u8,
    pub multiboot: MultibootVersion,
    /// One past the highest guest-physical byte any segment occupies.
    pub end: u64,
}

/// Why an image cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// No valid multiboot header (magic plus checksum) where the specifications allow one.
    NoMultibootHeader,
    /// The ELF headers do not parse.
    Elf(alloc::string::String),
    /// Not an x86 or x86-64 ELF (e_machine given).
    WrongMachine(u16),
    /// The image has no PT_LOAD segment.
    NoSegments,
    /// p_filesz exceeds p_memsz in segment `index`.
    BadSegment { index: usize },
    /// Segment `index` does not fit in the guest's RAM.
    SegmentOutsideRam {
        index: usize,
        paddr: u64,
        memsz: u64,
        ram: u64,
    },
    /// The entry point is not inside guest RAM below 4 GiB.
    EntryOutsideRam { entry: u64 },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMultibootHeader => write!(f, "no multiboot header in the image"),
            Self::Elf(message) => write!(f, "not a usable ELF file: {message}"),
            Self::WrongMachine(machine) => write!(f, "ELF machine {machine} is not x86 or x86-64"),
            Self::NoSegments => write!(f, "the ELF file has no loadable segment"),
            Self::BadSegment { index } => write!(f, "segment {index} has filesz > memsz"),
            Self::SegmentOutsideRam {
                index,
                paddr,
                memsz,
                ram,
            } => write!(
                f,
                "segment {index} at physical {paddr:#x} (+{memsz:#x}) does not fit in {ram:#x} \
                 bytes of guest RAM"
            ),
            Self::EntryOutsideRam { entry } => {
                write!(f, "entry point {entry:#x} is not in guest RAM below 4 GiB")
            }
        }
    }
}

/// Finds the multiboot header the specifications allow, checking its checksum.
pub fn multiboot_version(image: &[u8]) -> Option<MultibootVersion> {
    let word = |offset: usize| -> Option<u32> {
        let bytes = image.get(offset..offset + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let v1 = (0..MULTIBOOT1_SEARCH.min(image.len()))
        .step_by(4)
        .any(|offset| {
            word(offset) == Some(MULTIBOOT1_HEADER_MAGIC)
                && matches!((word(offset + 4), word(offset + 8)), (Some(flags), Some(checksum))
                if MULTIBOOT1_HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0)
        });
    if v1 {
        return Some(MultibootVersion::V1);
    }
    let v2 = (0..MULTIBOOT2_SEARCH.min(image.len()))
        .step_by(8)
        .any(|offset| {
            word(offset) == Some(MULTIBOOT2_HEADER_MAGIC)
                && matches!(
                    (word(offset + 4), word(offset + 8), word(offset + 12)),
                    (Some(arch), Some(length), Some(checksum))
                        if MULTIBOOT2_HEADER_MAGIC
                            .wrapping_add(arch)
                            .wrapping_add(length)
                            .wrapping_add(checksum)
                            == 0
                )
        });
    v2.then_some(MultibootVersion::V2)
}

/// Loads `image` into `ram`. Nothing is written unless every segment fits.
pub fn load(image: &[u8], ram: &mut impl GuestRam) -> Result<LoadedImage, LoadError> {
    let multiboot = multiboot_version(image).ok_or(LoadError::NoMultibootHeader)?;
    let file = ElfBytes::<AnyEndian>::minimal_parse(image)
        .map_err(|error| LoadError::Elf(alloc::format!("{error}")))?;
    if file.ehdr.e_machine != EM_386 && file.ehdr.e_machine != EM_X86_64 {
        return Err(LoadError::WrongMachine(file.ehdr.e_machine));
    }
    let segments = file.segments().ok_or(LoadError::NoSegments)?;
    let ram_size = ram.size();
    let mut end = 0;
    let mut loadable = 0;
    // First pass: check everything, so a bad image leaves RAM untouched.
    for (index, segment) in segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.p_type == PT_LOAD)
    {
        if segment.p_filesz > segment.p_memsz {
            return Err(LoadError::BadSegment { index });
        }
        if !range_in_ram(segment.p_paddr, segment.p_memsz, ram_size) {
            return Err(LoadError::SegmentOutsideRam {
                index,
                paddr: segment.p_paddr,
                memsz: segment.p_memsz,
                ram: ram_size,
            });
        }
        file.segment_data(&segment)
            .map_err(|error| LoadError::Elf(alloc::format!("segment {index}: {error}")))?;
        end = end.max(segment.p_paddr + segment.p_memsz);
        loadable += 1;
    }
    if loadable == 0 {
        return Err(LoadError::NoSegments);
    }
    let entry = file.ehdr.e_entry;
    if entry >= ram_size || entry > u64::from(u32::MAX) {
        return Err(LoadError::EntryOutsideRam { entry });
    }
    for segment in segments.iter().filter(|s| s.p_type == PT_LOAD) {
        let data = file.segment_data(&segment).unwrap_or_default();
        ram.write(segment.p_paddr, data);
        ram.fill(
            segment.p_paddr + segment.p_filesz,
            segment.p_memsz - segment.p_filesz,
            0,
        );
    }
    Ok(LoadedImage {
        entry: entry as u32,
        class_bits: if file.ehdr.class == Class::ELF64 {
            64
        } else {
            32
        },
        multiboot,
        end,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::VecRam;

    /// One PT_LOAD segment description for [`build_elf`].
    pub struct Seg {
        pub paddr: u64,
        pub data: Vec<u8>,
        pub memsz: u64,
    }

    fn put(out: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
        if out.len() < offset + bytes.len() {
            out.resize(offset + bytes.len(), 0);
        }
        out[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// Builds a minimal little-endian ELF executable (32 or 64 bit) with a multiboot 1 header at
    /// file offset 0x1000 followed by the segments' data.
    pub fn build_elf(class64: bool, entry: u64, segments: &[Seg], multiboot: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let (ehsize, phentsize) = if class64 {
            (64usize, 56usize)
        } else {
            (52, 32)
        };
        put(
            &mut out,
            0,
            &[0x7f, b'E', b'L', b'F', if class64 { 2 } else { 1 }, 1, 1, 0],
        );
        put(&mut out, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(
            &mut out,
            18,
            &(if class64 { EM_X86_64 } else { EM_386 }).to_le_bytes(),
        );
        put(&mut out, 20, &1u32.to_le_bytes());
        let phoff = ehsize;
        if class64 {
            put(&mut out, 24, &entry.to_le_bytes());
            put(&mut out, 32, &(phoff as u64).to_le_bytes());
            put(&mut out, 52, &(ehsize as u16).to_le_bytes());
            put(&mut out, 54, &(phentsize as u16).to_le_bytes());
            put(&mut out, 56, &(segments.len() as u16).to_le_bytes());
        } else {
            put(&mut out, 24, &(entry as u32).to_le_bytes());
            put(&mut out, 28, &(phoff as u32).to_le_bytes());
            put(&mut out, 40, &(ehsize as u16).to_le_bytes());
            put(&mut out, 42, &(phentsize as u16).to_le_bytes());
            put(&mut out, 44, &(segments.len() as u16).to_le_bytes());
        }
        if multiboot {
            let checksum = 0u32.wrapping_sub(MULTIBOOT1_HEADER_MAGIC);
            put(&mut out, 0x1000, &MULTIBOOT1_HEADER_MAGIC.to_le_bytes());
            put(&mut out, 0x1004, &0u32.to_le_bytes());
            put(&mut out, 0x1008, &checksum.to_le_bytes());
        }
        let mut offset = 0x2000usize;
        for (index, seg) in segments.iter().enumerate() {
            let ph = phoff + index * phentsize;
            let filesz = seg.data.len() as u64;
            if class64 {
                put(&mut out, ph, &PT_LOAD.to_le_bytes());
                put(&mut out, ph + 4, &7u32.to_le_bytes());
                put(&mut out, ph + 8, &(offset as u64).to_le_bytes());
                put(&mut out, ph + 16, &seg.paddr.to_le_bytes());
                put(&mut out, ph + 24, &seg.paddr.to_le_bytes());
                put(&mut out, ph + 32, &filesz.to_le_bytes());
                put(&mut out, ph + 40, &seg.memsz.to_le_bytes());
                put(&mut out, ph + 48, &4096u64.to_le_bytes());
            } else {
                put(&mut out, ph, &PT_LOAD.to_le_bytes());
                put(&mut out, ph + 4, &(offset as u32).to_le_bytes());
                // p_vaddr is deliberately different from p_paddr, as in xv6 (high half).
                put(
                    &mut out,
                    ph + 8,
                    &((seg.paddr as u32) | 0x8000_0000).to_le_bytes(),
                );
                put(&mut out, ph + 12, &(seg.paddr as u32).to_le_bytes());
                put(&mut out, ph + 16, &(filesz as u32).to_le_bytes());
                put(&mut out, ph + 20, &(seg.memsz as u32).to_le_bytes());
                put(&mut out, ph + 24, &7u32.to_le_bytes());
            }
            put(&mut out, offset, &seg.data);
            offset += seg.data.len().max(1);
        }
        out
    }

    fn ram(size: usize) -> VecRam {
        VecRam(vec![0xAA; size])
    }

    #[test]
    fn elf32_loads_at_paddr_and_zeroes_bss() {
        let segs = [Seg {
            paddr: 0x10_0000,
            data: vec![1, 2, 3, 4],
            memsz: 0x10,
        }];
        let image = build_elf(false, 0x10_000C, &segs, true);
        let mut ram = ram(0x20_0000);
        let loaded = load(&image, &mut ram).unwrap();
        assert_eq!(loaded.entry, 0x10_000C);
        assert_eq!(loaded.class_bits, 32);
        assert_eq!(loaded.end, 0x10_0010);
        assert_eq!(&ram.0[0x10_0000..0x10_0004], &[1, 2, 3, 4]);
        assert!(ram.0[0x10_0004..0x10_0010].iter().all(|&b| b == 0));
        assert_eq!(ram.0[0x10_0010], 0xAA, "bytes past memsz untouched");
    }

    #[test]
    fn elf64_loads_too() {
        let segs = [
            Seg {
                paddr: 0x10_0000,
                data: vec![9; 100],
                memsz: 100,
            },
            Seg {
                paddr: 0x10_2000,
                data: vec![7; 10],
                memsz: 0x1000,
            },
        ];
        let image = build_elf(true, 0x10_0000, &segs, true);
        let mut ram = ram(0x40_0000);
        let loaded = load(&image, &mut ram).unwrap();
        assert_eq!(loaded.class_bits, 64);
        assert_eq!(loaded.end, 0x10_3000);
        assert_eq!(ram.0[0x10_2009], 7);
        assert_eq!(ram.0[0x10_200A], 0);
    }

    #[test]
    fn refuses_image_without_multiboot_header() {
        let segs = [Seg {
            paddr: 0x10_0000,
            data: vec![1],
            memsz: 1,
        }];
        let image = build_elf(false, 0x10_0000, &segs, false);
        assert_eq!(
            load(&image, &mut ram(0x20_0000)),
            Err(LoadError::NoMultibootHeader)
        );
    }

    #[test]
    fn refuses_segment_beyond_ram_and_leaves_ram_untouched() {
        let segs = [
            Seg {
                paddr: 0x1000,
                data: vec![5; 16],
                memsz: 16,
            },
            Seg {
                paddr: 0x1F_F000,
                data: vec![1; 16],
                memsz: 0x2000,
            },
        ];
        let image = build_elf(false, 0x1000, &segs, true);
        let mut ram = ram(0x20_0000);
        assert!(matches!(
            load(&image, &mut ram),
            Err(LoadError::SegmentOutsideRam {
                index: 1,
                paddr: 0x1F_F000,
                ..
            })
        ));
        assert!(ram.0.iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn refuses_entry_outside_ram() {
        let segs = [Seg {
            paddr: 0x1000,
            data: vec![5; 16],
            memsz: 16,
        }];
        let image = build_elf(true, 0x1_0000_0000, &segs, true);
        assert_eq!(
            load(&image, &mut ram(0x20_0000)),
            Err(LoadError::EntryOutsideRam {
                entry: 0x1_0000_0000
            })
        );
    }

    #[test]
    fn refuses_garbage() {
        let mut garbage = vec![0u8; 0x2000];
        garbage[0x100..0x10C]
            .copy_from_slice(&[0x02, 0xB0, 0xAD, 0x1B, 0, 0, 0, 0, 0xFE, 0x4F, 0x52, 0xE4]);
        assert!(matches!(
            load(&garbage, &mut ram(0x1000)),
            Err(LoadError::Elf(_))
        ));
    }

    #[test]
    fn multiboot2_header_is_recognised() {
        let mut image = vec![0u8; 64];
        let length = 16u32;
        let checksum = 0u32.wrapping_sub(MULTIBOOT2_HEADER_MAGIC.wrapping_add(length));
        image[8..12].copy_from_slice(&MULTIBOOT2_HEADER_MAGIC.to_le_bytes());
        image[16..20].copy_from_slice(&length.to_le_bytes());
        image[20..24].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(multiboot_version(&image), Some(MultibootVersion::V2));
        image[20] ^= 1;
        assert_eq!(multiboot_version(&image), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_corrupted_images(flips in proptest::collection::vec((0usize..0x2100, any::<u8>()), 1..20)) {
            let segs = [Seg { paddr: 0x10_0000, data: vec![3; 200], memsz: 0x400 }];
            let mut image = build_elf(false, 0x10_0000, &segs, true);
            for (offset, value) in flips {
                if offset < image.len() {
                    image[offset] = value;
                }
            }
            let mut ram = ram(0x20_0000);
            if let Ok(loaded) = load(&image, &mut ram) {
                prop_assert!(loaded.end <= 0x20_0000);
            }
        }
    }
}
