//! Guest page-table walks: turning a guest linear address (a RIP, a string-I/O buffer) into a
//! guest-physical address by reading the guest's own page tables out of guest RAM.
//!
//! The hypervisor only walks to read what the guest itself just used (the instruction that
//! faulted on MMIO, the buffer of a `rep outs`), so there are no permission checks: no U/S, R/W,
//! NX, protection keys or reserved-bit faults, and no accessed/dirty updates. What is checked is
//! everything that could hurt the hypervisor: a guest may point CR3 and every entry anywhere,
//! and any read outside RAM becomes a [`WalkError`], never a panic.
//!
//! Not here: 5-level paging (CR4.LA57, which Carousel does not expose to guests), and the
//! PAE PDPTE registers (a PAE walk reads the PDPT from memory; the processor uses the copy it
//! loaded at the last CR3 write, so the two differ only if the guest edits a live PDPT).
//!
//! Reference: Intel SDM 325462-083US (March 2024), volume 3A, chapter 4 "Paging".

use core::fmt;

use crate::PAGE_SIZE;

/// CR0.PG (bit 31): paging enabled.
const CR0_PG: u64 = 1 << 31;
/// CR4.PSE (bit 4): 4-MByte pages with 32-bit paging.
const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE (bit 5): physical address extension (64-bit entries).
const CR4_PAE: u64 = 1 << 5;
/// IA32_EFER.LMA (bit 10): IA-32e mode active.
const EFER_LMA: u64 = 1 << 10;

/// Entry bit 0: present.
const ENTRY_PRESENT: u64 = 1 << 0;
/// Entry bit 7 of a PDE (or 64-bit PDPTE): the entry maps a page instead of a table.
const ENTRY_PAGE_SIZE: u64 = 1 << 7;
/// Bits 51:12 of a 64-bit entry: the physical address of a table or 4-KByte page.
const ADDRESS_MASK_64: u64 = 0x000F_FFFF_FFFF_F000;
/// Bits 51:21 of a 64-bit entry mapping a 2-MByte page.
const ADDRESS_MASK_2M: u64 = 0x000F_FFFF_FFE0_0000;
/// Bits 51:30 of a PDPTE mapping a 1-GByte page.
const ADDRESS_MASK_1G: u64 = 0x000F_FFFF_C000_0000;
/// Bits 31:12 of a 32-bit entry (and of CR3 with 32-bit paging).
const ADDRESS_MASK_32: u64 = 0xFFFF_F000;
/// Bits 31:22 of a 32-bit PDE mapping a 4-MByte page: physical address bits 31:22.
const ADDRESS_MASK_4M: u64 = 0xFFC0_0000;
/// Bits 20:13 of a 32-bit PDE mapping a 4-MByte page: physical address bits 39:32 (PSE-36).
const PSE36_MASK: u64 = 0x001F_E000;
/// Bits 31:5 of CR3 with PAE paging: the page-directory-pointer table.
const PAE_CR3_MASK: u64 = 0xFFFF_FFE0;
/// Linear addresses outside IA-32e mode are 32 bits wide and wrap at 4 GiB.
const LINEAR_MASK_32: u64 = 0xFFFF_FFFF;

/// Guest-physical memory as a page-table walk reads it.
///
/// The kernel's `GuestMemory::read` has this shape already.
pub trait GuestPhysRead {
    /// Copies guest-physical [gpa, gpa + out.len()) into `out`. False, with `out` unspecified,
    /// if any byte of the range is not RAM.
    fn read_physical(&self, gpa: u64, out: &mut [u8]) -> bool;

    /// The little-endian 32-bit value at `gpa`, if all four bytes are RAM.
    fn read_u32(&self, gpa: u64) -> Option<u32> {
        let mut bytes = [0; 4];
        self.read_physical(gpa, &mut bytes)
            .then(|| u32::from_le_bytes(bytes))
    }

    /// The little-endian 64-bit value at `gpa`, if all eight bytes are RAM.
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        let mut bytes = [0; 8];
        self.read_physical(gpa, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }
}

/// How the guest translates linear addresses (SDM 4.1.1 "Four Paging Modes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: linear = physical, 32 bits wide.
    None,
    /// 32-bit paging (SDM 4.3): two levels of 4-byte entries; `pse` (CR4.PSE) enables
    /// 4-MByte pages in PDEs with PS = 1.
    TwoLevel32 { pse: bool },
    /// PAE paging (SDM 4.4): a 4-entry PDPT, then two levels of 8-byte entries.
    Pae,
    /// 4-level paging (SDM 4.5): PML4, PDPT (1-GByte pages), PD (2-MByte pages), PT.
    FourLevel64,
}

impl PagingMode {
    /// The mode selected by CR0.PG, CR4.PAE, CR4.PSE and IA32_EFER.LMA (SDM Table 4-1).
    pub fn from_registers(cr0: u64, cr4: u64, efer: u64) -> Self {
        if cr0 & CR0_PG == 0 {
            Self::None
        } else if efer & EFER_LMA != 0 {
            Self::FourLevel64
        } else if cr4 & CR4_PAE != 0 {
            Self::Pae
        } else {
            Self::TwoLevel32 {
                pse: cr4 & CR4_PSE != 0,
            }
        }
    }

    /// True when linear addresses are 32 bits wide (everything but 4-level paging).
    fn is_32_bit(self) -> bool {
        !matches!(self, Self::FourLevel64)
    }
}

/// A level of the paging structures, named after its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingLevel {
    /// PML4 entry (4-level paging).
    Pml4,
    /// Page-directory-pointer-table entry (PAE and 4-level paging).
    PageDirectoryPointer,
    /// Page-directory entry.
    PageDirectory,
    /// Page-table entry.
    PageTable,
}

impl fmt::Display for PagingLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pml4 => "PML4E",
            Self::PageDirectoryPointer => "PDPTE",
            Self::PageDirectory => "PDE",
            Self::PageTable => "PTE",
        })
    }
}

/// Why a linear address could not be translated or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at `level` for `linear` has P = 0 (the guest would take a #PF).
    NotPresent { level: PagingLevel, linear: u64 },
    /// The entry at `level` would be read from `gpa`, which is not RAM.
    EntryOutsideRam { level: PagingLevel, gpa: u64 },
    /// The translated address `gpa` is not RAM (only when reading data).
    DataOutsideRam { gpa: u64 },
    /// Bits 63:47 of a 4-level linear address are not all equal (the guest would take a #GP).
    NonCanonical { linear: u64 },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPresent { level, linear } => {
                write!(f, "{level} for linear {linear:#x} is not present")
            }
            Self::EntryOutsideRam { level, gpa } => {
                write!(f, "{level} at guest-physical {gpa:#x} is outside RAM")
            }
            Self::DataOutsideRam { gpa } => write!(f, "guest-physical {gpa:#x} is outside RAM"),
            Self::NonCanonical { linear } => write!(f, "linear {linear:#x} is not canonical"),
        }
    }
}

/// Translates the guest linear address `linear` to a guest-physical address, walking the
/// tables rooted at `cr3` in `mem`. The result need not be RAM (it may be MMIO).
///
/// Outside 4-level paging, `linear` is taken modulo 4 GiB, as the processor does.
pub fn translate(
    mode: PagingMode,
    cr3: u64,
    linear: u64,
    mem: &impl GuestPhysRead,
) -> Result<u64, WalkError> {
    match mode {
        PagingMode::None => Ok(linear & LINEAR_MASK_32),
        PagingMode::TwoLevel32 { pse } => walk_32(pse, cr3, linear & LINEAR_MASK_32, mem),
        PagingMode::Pae => walk_pae(cr3, linear & LINEAR_MASK_32, mem),
        PagingMode::FourLevel64 => walk_4_level(cr3, linear, mem),
    }
}

/// 32-bit paging: SDM 4.3 "32-Bit Paging", Figures 4-2 and 4-3.
fn walk_32(pse: bool, cr3: u64, linear: u64, mem: &impl GuestPhysRead) -> Result<u64, WalkError> {
    // "A 4-KByte naturally aligned page directory is located at the physical address specified
    // in bits 31:12 of CR3."
    let pde_gpa = (cr3 & ADDRESS_MASK_32) | ((linear >> 22) << 2);
    let pde = read_entry_32(mem, pde_gpa, PagingLevel::PageDirectory, linear)?;
    if pse && pde & ENTRY_PAGE_SIZE != 0 {
        // "If CR4.PSE = 1 and the PDE's PS flag is 1, the PDE maps a 4-MByte page": bits 31:22
        // give address bits 31:22 and bits 20:13 give address bits 39:32 (Table 4-4).
        let high = (pde & PSE36_MASK) << (32 - 13);
        return Ok(high | (pde & ADDRESS_MASK_4M) | (linear & 0x3F_FFFF));
    }
    let pte_gpa = (pde & ADDRESS_MASK_32) | (((linear >> 12) & 0x3FF) << 2);
    let pte = read_entry_32(mem, pte_gpa, PagingLevel::PageTable, linear)?;
    Ok((pte & ADDRESS_MASK_32) | (linear & 0xFFF))
}

/// PAE paging: SDM 4.4 "PAE Paging", Figures 4-5 and 4-6.
fn walk_pae(cr3: u64, linear: u64, mem: &impl GuestPhysRead) -> Result<u64, WalkError> {
    let pdpte_gpa = (cr3 & PAE_CR3_MASK) | ((linear >> 30) << 3);
    let pdpte = read_entry_64(mem, pdpte_gpa, PagingLevel::PageDirectoryPointer, linear)?;
    let pde_gpa = (pdpte & ADDRESS_MASK_64) | (((linear >> 21) & 0x1FF) << 3);
    let pde = read_entry_64(mem, pde_gpa, PagingLevel::PageDirectory, linear)?;
    if pde & ENTRY_PAGE_SIZE != 0 {
        return Ok((pde & ADDRESS_MASK_2M) | (linear & 0x1F_FFFF));
    }
    let pte_gpa = (pde & ADDRESS_MASK_64) | (((linear >> 12) & 0x1FF) << 3);
    let pte = read_entry_64(mem, pte_gpa, PagingLevel::PageTable, linear)?;
    Ok((pte & ADDRESS_MASK_64) | (linear & 0xFFF))
}

/// 4-level paging: SDM 4.5 "4-Level Paging and 5-Level Paging", Figures 4-8 to 4-10.
fn walk_4_level(cr3: u64, linear: u64, mem: &impl GuestPhysRead) -> Result<u64, WalkError> {
    // Bits 63:47 must be copies of bit 47 (SDM vol. 1, 3.3.7.1 "Canonical Addressing").
    let top = (linear as i64) >> 47;
    if top != 0 && top != -1 {
        return Err(WalkError::NonCanonical { linear });
    }
    let pml4e_gpa = (cr3 & ADDRESS_MASK_64) | (((linear >> 39) & 0x1FF) << 3);
    let pml4e = read_entry_64(mem, pml4e_gpa, PagingLevel::Pml4, linear)?;
    let pdpte_gpa = (pml4e & ADDRESS_MASK_64) | (((linear >> 30) & 0x1FF) << 3);
    let pdpte = read_entry_64(mem, pdpte_gpa, PagingLevel::PageDirectoryPointer, linear)?;
    if pdpte & ENTRY_PAGE_SIZE != 0 {
        return Ok((pdpte & ADDRESS_MASK_1G) | (linear & 0x3FFF_FFFF));
    }
    let pde_gpa = (pdpte & ADDRESS_MASK_64) | (((linear >> 21) & 0x1FF) << 3);
    let pde = read_entry_64(mem, pde_gpa, PagingLevel::PageDirectory, linear)?;
    if pde & ENTRY_PAGE_SIZE != 0 {
        return Ok((pde & ADDRESS_MASK_2M) | (linear & 0x1F_FFFF));
    }
    let pte_gpa = (pde & ADDRESS_MASK_64) | (((linear >> 12) & 0x1FF) << 3);
    let pte = read_entry_64(mem, pte_gpa, PagingLevel::PageTable, linear)?;
    Ok((pte & ADDRESS_MASK_64) | (linear & 0xFFF))
}

/// Reads a 4-byte entry and checks its present bit.
fn read_entry_32(
    mem: &impl GuestPhysRead,
    gpa: u64,
    level: PagingLevel,
    linear: u64,
) -> Result<u64, WalkError> {
    let entry = mem
        .read_u32(gpa)
        .ok_or(WalkError::EntryOutsideRam { level, gpa })?;
    present(u64::from(entry), level, linear)
}

/// Reads an 8-byte entry and checks its present bit.
fn read_entry_64(
    mem: &impl GuestPhysRead,
    gpa: u64,
    level: PagingLevel,
    linear: u64,
) -> Result<u64, WalkError> {
    let entry = mem
        .read_u64(gpa)
        .ok_or(WalkError::EntryOutsideRam { level, gpa })?;
    present(entry, level, linear)
}

/// `entry` if its P flag is set.
fn present(entry: u64, level: PagingLevel, linear: u64) -> Result<u64, WalkError> {
    if entry & ENTRY_PRESENT == 0 {
        return Err(WalkError::NotPresent { level, linear });
    }
    Ok(entry)
}

/// Fills `buf` from guest linear memory starting at `linear`, translating each page separately
/// (the range may straddle pages that map to unrelated physical frames, or wrap at 4 GiB
/// outside 4-level paging). Fails if any byte is unmapped or not RAM.
pub fn read_linear(
    mode: PagingMode,
    cr3: u64,
    linear: u64,
    buf: &mut [u8],
    mem: &impl GuestPhysRead,
) -> Result<(), WalkError> {
    let mut done = 0;
    for (at, chunk) in page_chunks(mode, linear, buf.len()) {
        let gpa = translate(mode, cr3, at, mem)?;
        if !mem.read_physical(gpa, &mut buf[done..done + chunk]) {
            return Err(WalkError::DataOutsideRam { gpa });
        }
        done += chunk;
    }
    Ok(())
}

/// Like [`read_linear`], but stops at the first page that cannot be read and returns how many
/// bytes of `buf` were filled. For instruction fetch: an instruction that ends before an
/// unmapped page decodes from the bytes before it. Fails only if not even the first byte can
/// be read (or `buf` is empty, which reads nothing and returns 0).
pub fn read_linear_prefix(
    mode: PagingMode,
    cr3: u64,
    linear: u64,
    buf: &mut [u8],
    mem: &impl GuestPhysRead,
) -> Result<usize, WalkError> {
    let mut done = 0;
    for (at, chunk) in page_chunks(mode, linear, buf.len()) {
        let read = translate(mode, cr3, at, mem).and_then(|gpa| {
            if mem.read_physical(gpa, &mut buf[done..done + chunk]) {
                Ok(())
            } else {
                Err(WalkError::DataOutsideRam { gpa })
            }
        });
        match read {
            Ok(()) => done += chunk,
            Err(error) if done == 0 => return Err(error),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// Splits `len` bytes from `linear` at 4-KByte boundaries into (linear address, length)
/// pieces; each piece lies in one page whatever the page size.
fn page_chunks(mode: PagingMode, linear: u64, len: usize) -> impl Iterator<Item = (u64, usize)> {
    let wrap = if mode.is_32_bit() {
        LINEAR_MASK_32
    } else {
        u64::MAX
    };
    let mut at = linear & wrap;
    let mut left = len;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let room = (PAGE_SIZE - at % PAGE_SIZE) as usize;
        let chunk = room.min(left);
        let piece = (at, chunk);
        at = at.wrapping_add(chunk as u64) & wrap;
        left -= chunk;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// Guest RAM backed by a vector: [0, len) is RAM.
    #[derive(Debug)]
    struct TestMemory(Vec<u8>);

    impl TestMemory {
        fn new(size: usize) -> Self {
            Self(vec![0; size])
        }
        fn put_u32(&mut self, gpa: u64, value: u32) {
            self.0[gpa as usize..gpa as usize + 4].copy_from_slice(&value.to_le_bytes());
        }
        fn put_u64(&mut self, gpa: u64, value: u64) {
            self.0[gpa as usize..gpa as usize + 8].copy_from_slice(&value.to_le_bytes());
        }
        fn put(&mut self, gpa: u64, bytes: &[u8]) {
            self.0[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
        }
    }

    impl GuestPhysRead for TestMemory {
        fn read_physical(&self, gpa: u64, out: &mut [u8]) -> bool {
            let Some(end) = gpa.checked_add(out.len() as u64) else {
                return false;
            };
            if end > self.0.len() as u64 {
                return false;
            }
            out.copy_from_slice(&self.0[gpa as usize..end as usize]);
            true
        }
    }

    /// Present + writable.
    const PW: u64 = 0b11;
    /// Present + writable + page size.
    const PW_PS: u64 = 0x83;
    const KERNBASE: u64 = 0x8000_0000;
    const TWO_LEVEL_PSE: PagingMode = PagingMode::TwoLevel32 { pse: true };
    const TWO_LEVEL: PagingMode = PagingMode::TwoLevel32 { pse: false };

    /// xv6's entrypgdir: VA 0 and KERNBASE map PA 0-4 MiB with one 4-MiB page each.
    fn entry_page_directory() -> (TestMemory, u64) {
        let mut mem = TestMemory::new(0x10_0000);
        let pgdir = 0x1_0000;
        mem.put_u32(pgdir, PW_PS as u32);
        mem.put_u32(pgdir + (KERNBASE >> 22) * 4, PW_PS as u32);
        (mem, pgdir)
    }

    /// A two-level 4-KiB mapping: 0x8010_3000 -> 0x5000 and 0xFEE0_0000 -> 0xFEE0_0000.
    fn small_pages() -> (TestMemory, u64) {
        let mut mem = TestMemory::new(0x10_0000);
        let pgdir = 0x2_0000;
        let table_a = 0x2_1000;
        let table_b = 0x2_2000;
        mem.put_u32(pgdir + (0x8010_3000u64 >> 22) * 4, (table_a | PW) as u32);
        mem.put_u32(table_a + ((0x8010_3000 >> 12) & 0x3FF) * 4, 0x5003);
        mem.put_u32(pgdir + (0xFEE0_0000u64 >> 22) * 4, (table_b | PW) as u32);
        mem.put_u32(table_b + ((0xFEE0_0000 >> 12) & 0x3FF) * 4, 0xFEE0_001B);
        (mem, pgdir)
    }

    /// 64-bit identity map of the first 4 GiB with 2-MiB pages; returns CR3.
    fn identity_2m(mem: &mut TestMemory) -> u64 {
        let pml4 = 0x1000;
        let pdpt = 0x2000;
        mem.put_u64(pml4, pdpt | PW);
        for gib in 0..4 {
            let pd = 0x3000 + gib * 0x1000;
            mem.put_u64(pdpt + gib * 8, pd | PW);
            for entry in 0..512 {
                let base = (gib << 30) | (entry << 21);
                mem.put_u64(pd + entry * 8, base | PW_PS);
            }
        }
        pml4
    }

    #[test]
    fn modes_follow_control_registers() {
        let pg = CR0_PG | 1;
        assert_eq!(PagingMode::from_registers(1, 0, 0), PagingMode::None);
        assert_eq!(
            PagingMode::from_registers(1, CR4_PAE, EFER_LMA),
            PagingMode::None
        );
        assert_eq!(PagingMode::from_registers(pg, 0, 0), TWO_LEVEL);
        assert_eq!(PagingMode::from_registers(pg, CR4_PSE, 0), TWO_LEVEL_PSE);
        assert_eq!(
            PagingMode::from_registers(pg, CR4_PAE | CR4_PSE, 0),
            PagingMode::Pae
        );
        assert_eq!(
            PagingMode::from_registers(pg, CR4_PAE, EFER_LMA | 1 << 8),
            PagingMode::FourLevel64
        );
    }

    #[test]
    fn paging_off_is_identity_modulo_4_gib() {
        let mem = TestMemory::new(0);
        assert_eq!(
            translate(PagingMode::None, 0, 0xFEE0_0020, &mem),
            Ok(0xFEE0_0020)
        );
        assert_eq!(
            translate(PagingMode::None, 0, 0x1_0000_0010, &mem),
            Ok(0x10)
        );
    }

    #[test]
    fn xv6_entry_page_directory_maps_kernbase_with_4_mib_pages() {
        let (mem, pgdir) = entry_page_directory();
        // CR3 may carry PWT/PCD and ignored bits.
        let cr3 = pgdir | 0x18;
        assert_eq!(
            translate(TWO_LEVEL_PSE, cr3, 0x8010_0000, &mem),
            Ok(0x10_0000)
        );
        assert_eq!(
            translate(TWO_LEVEL_PSE, cr3, 0x803F_FFFF, &mem),
            Ok(0x3F_FFFF)
        );
        assert_eq!(translate(TWO_LEVEL_PSE, cr3, 0x1234, &mem), Ok(0x1234));
        assert_eq!(
            translate(TWO_LEVEL_PSE, cr3, 0x8040_0000, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageDirectory,
                linear: 0x8040_0000
            })
        );
    }

    #[test]
    fn pse_36_bits_give_physical_bits_39_to_32() {
        let mut mem = TestMemory::new(0x2000);
        mem.put_u32(0x1000, 0x0040_0000 | (0x3 << 13) | PW_PS as u32);
        assert_eq!(
            translate(TWO_LEVEL_PSE, 0x1000, 0x12_3456, &mem),
            Ok(0x3_0052_3456)
        );
    }

    #[test]
    fn page_size_bit_is_ignored_without_cr4_pse() {
        let (mem, pgdir) = entry_page_directory();
        // The PDE 0x83 is then a page-table pointer to frame 0, whose entries are zero.
        assert_eq!(
            translate(TWO_LEVEL, pgdir, 0x8010_0000, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageTable,
                linear: 0x8010_0000
            })
        );
    }

    #[test]
    fn two_level_4_kib_pages() {
        let (mem, pgdir) = small_pages();
        for mode in [TWO_LEVEL, TWO_LEVEL_PSE] {
            assert_eq!(translate(mode, pgdir, 0x8010_3ABC, &mem), Ok(0x5ABC));
            assert_eq!(translate(mode, pgdir, 0xFEE0_00B0, &mem), Ok(0xFEE0_00B0));
            assert_eq!(
                translate(mode, pgdir, 0x8010_4000, &mem),
                Err(WalkError::NotPresent {
                    level: PagingLevel::PageTable,
                    linear: 0x8010_4000
                })
            );
            assert_eq!(
                translate(mode, pgdir, 0x4000_0000, &mem),
                Err(WalkError::NotPresent {
                    level: PagingLevel::PageDirectory,
                    linear: 0x4000_0000
                })
            );
        }
        // Upper linear bits are dropped outside 4-level paging.
        assert_eq!(
            translate(TWO_LEVEL, pgdir, 0xFFFF_FFFF_8010_3000, &mem),
            Ok(0x5000)
        );
    }

    #[test]
    fn pae_walks_three_levels() {
        let mut mem = TestMemory::new(0x10_0000);
        let pdpt = 0x1020; // 32-byte aligned, not page aligned.
        mem.put_u64(pdpt + 2 * 8, 0x3000 | 1); // PDPTEs have no R/W bit.
        mem.put_u64(0x3000 + 5 * 8, 0x4000 | PW);
        mem.put_u64(0x4000 + 7 * 8, 0xA_B000 | PW);
        mem.put_u64(0x3000 + 6 * 8, 0x1_4000_0000 | PW_PS);
        let cr3 = pdpt | 0x8; // PWT.
        let linear = (2 << 30) | (5 << 21) | (7 << 12) | 0x123;
        assert_eq!(translate(PagingMode::Pae, cr3, linear, &mem), Ok(0xA_B123));
        let big = (2 << 30) | (6 << 21) | 0x1_2345;
        assert_eq!(
            translate(PagingMode::Pae, cr3, big, &mem),
            Ok(0x1_4001_2345)
        );
        assert_eq!(
            translate(PagingMode::Pae, cr3, 1 << 30, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageDirectoryPointer,
                linear: 1 << 30
            })
        );
    }

    #[test]
    fn four_level_identity_map_with_2_mib_pages() {
        let mut mem = TestMemory::new(0x10_0000);
        let cr3 = identity_2m(&mut mem);
        let mode = PagingMode::FourLevel64;
        for linear in [0, 0x20_0000, 0x12_3456, 0xFEE0_00F0, 0xFFFF_FFFF] {
            assert_eq!(translate(mode, cr3, linear, &mem), Ok(linear));
        }
        assert_eq!(
            translate(mode, cr3, 0x1_0000_0000, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageDirectoryPointer,
                linear: 0x1_0000_0000
            })
        );
        assert_eq!(
            translate(mode, cr3, 1 << 39, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::Pml4,
                linear: 1 << 39
            })
        );
    }

    #[test]
    fn four_level_1_gib_and_4_kib_pages() {
        let mut mem = TestMemory::new(0x10_0000);
        let mode = PagingMode::FourLevel64;
        // Higher half: PML4[511] -> PDPT at 0x2000; PDPT[510] is a 1-GiB page at 0x4000_0000,
        // PDPT[0] -> PD at 0x3000 -> PT at 0x4000 with one 4-KiB page.
        mem.put_u64(0x1000 + 511 * 8, 0x2000 | PW);
        mem.put_u64(0x2000 + 510 * 8, 0x4000_0000 | PW_PS);
        mem.put_u64(0x2000, 0x3000 | PW);
        mem.put_u64(0x3000 + 8, 0x4000 | PW);
        // NX (bit 63) and ignored high bits do not leak into the address.
        mem.put_u64(0x4000 + 3 * 8, (1 << 63) | 0x7_7000 | PW);
        let kernel = 0xFFFF_FFFF_8000_0000u64;
        assert_eq!(
            translate(mode, 0x1000, kernel + 0x1234, &mem),
            Ok(0x4000_1234)
        );
        let small = 0xFFFF_FF80_0000_0000u64 | (1 << 21) | (3 << 12) | 0x56;
        assert_eq!(translate(mode, 0x1000, small, &mem), Ok(0x7_7056));
        let missing = small + 0x1000;
        assert_eq!(
            translate(mode, 0x1000, missing, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageTable,
                linear: missing
            })
        );
        let no_pd = 0xFFFF_FF80_4000_0000u64;
        assert_eq!(
            translate(mode, 0x1000, no_pd, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageDirectoryPointer,
                linear: no_pd
            })
        );
        let no_pt = 0xFFFF_FF80_0040_0000u64;
        assert_eq!(
            translate(mode, 0x1000, no_pt, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageDirectory,
                linear: no_pt
            })
        );
    }

    #[test]
    fn non_canonical_addresses_are_refused() {
        let mut mem = TestMemory::new(0x10_0000);
        let cr3 = identity_2m(&mut mem);
        let linear = 0x0000_8000_0000_0000;
        assert_eq!(
            translate(PagingMode::FourLevel64, cr3, linear, &mem),
            Err(WalkError::NonCanonical { linear })
        );
    }

    #[test]
    fn tables_outside_ram_are_errors() {
        let mem = TestMemory::new(0x1000);
        assert_eq!(
            translate(TWO_LEVEL, 0xFFFF_F000, 0x8000_0000, &mem),
            Err(WalkError::EntryOutsideRam {
                level: PagingLevel::PageDirectory,
                gpa: 0xFFFF_F800
            })
        );
        assert_eq!(
            translate(PagingMode::FourLevel64, 0x000F_FFFF_FFFF_F000, 0, &mem),
            Err(WalkError::EntryOutsideRam {
                level: PagingLevel::Pml4,
                gpa: 0x000F_FFFF_FFFF_F000
            })
        );
        // A present PDE pointing outside RAM fails at the next level.
        let mut mem = TestMemory::new(0x2000);
        mem.put_u32(0x1000, 0x0900_0000 | PW as u32);
        assert_eq!(
            translate(TWO_LEVEL, 0x1000, 0x5000, &mem),
            Err(WalkError::EntryOutsideRam {
                level: PagingLevel::PageTable,
                gpa: 0x0900_0014
            })
        );
    }

    #[test]
    fn read_linear_crosses_pages_mapped_to_unrelated_frames() {
        let mut mem = TestMemory::new(0x10_0000);
        let pgdir = 0x1000;
        mem.put_u32(pgdir, 0x2000 | PW as u32);
        // Linear page 5 -> frame 0x9000, page 6 -> frame 0x7000.
        mem.put_u32(0x2000 + 5 * 4, 0x9000 | PW as u32);
        mem.put_u32(0x2000 + 6 * 4, 0x7000 | PW as u32);
        mem.put(0x9FFD, &[0xC7, 0x80, 0xB0]);
        mem.put(0x7000, &[0x00, 0x00, 0x00]);
        let mut buf = [0; 6];
        assert_eq!(
            read_linear(TWO_LEVEL, pgdir, 0x5FFD, &mut buf, &mem),
            Ok(())
        );
        assert_eq!(buf, [0xC7, 0x80, 0xB0, 0, 0, 0]);

        // Page 7 is not mapped: the whole read fails, the prefix read returns what it got.
        let mut buf = [0xEE; 15];
        assert_eq!(
            read_linear(TWO_LEVEL, pgdir, 0x6FFE, &mut buf, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageTable,
                linear: 0x7000
            })
        );
        mem.put(0x7FFE, &[0x89, 0x01]);
        assert_eq!(
            read_linear_prefix(TWO_LEVEL, pgdir, 0x6FFE, &mut buf, &mem),
            Ok(2)
        );
        assert_eq!(buf[..2], [0x89, 0x01]);
        assert_eq!(
            read_linear_prefix(TWO_LEVEL, pgdir, 0x7000, &mut buf, &mem),
            Err(WalkError::NotPresent {
                level: PagingLevel::PageTable,
                linear: 0x7000
            })
        );
        assert_eq!(
            read_linear_prefix(TWO_LEVEL, pgdir, 0x7000, &mut [], &mem),
            Ok(0)
        );
    }

    #[test]
    fn read_linear_reports_data_outside_ram() {
        let mem = TestMemory::new(0x1000);
        let mut buf = [0; 4];
        assert_eq!(
            read_linear(PagingMode::None, 0, 0xFFE, &mut buf, &mem),
            Err(WalkError::DataOutsideRam { gpa: 0x1000 })
        );
        assert_eq!(
            read_linear_prefix(PagingMode::None, 0, 0xFFE, &mut buf, &mem),
            Ok(2)
        );
    }

    #[test]
    fn read_linear_wraps_at_4_gib_outside_long_mode() {
        let mut mem = TestMemory::new(0x1000);
        mem.put(0, &[1, 2]);
        let mut buf = [0; 2];
        // Linear 4 GiB is linear 0 outside 4-level paging.
        assert_eq!(
            read_linear(PagingMode::None, 0, 0x1_0000_0000, &mut buf, &mem),
            Ok(())
        );
        assert_eq!(buf, [1, 2]);
        let chunks: Vec<_> = page_chunks(PagingMode::None, 0xFFFF_FFFE, 4).collect();
        assert_eq!(chunks, [(0xFFFF_FFFE, 2), (0, 2)]);
    }

    #[test]
    fn errors_display_their_level() {
        let error = WalkError::NotPresent {
            level: PagingLevel::PageDirectory,
            linear: 0x8040_0000,
        };
        assert_eq!(
            alloc::format!("{error}"),
            "PDE for linear 0x80400000 is not present"
        );
    }

    /// 16 KiB of table entries that mostly point back into themselves, with random flags.
    fn tables() -> impl Strategy<Value = TestMemory> {
        proptest::collection::vec(any::<u64>(), 2048).prop_map(|words| {
            let mut mem = TestMemory::new(0);
            for word in words {
                let entry = if word >> 60 == 0xF {
                    word
                } else {
                    word & 0x3FFF
                };
                mem.0.extend_from_slice(&entry.to_le_bytes());
            }
            mem
        })
    }

    fn mode() -> impl Strategy<Value = PagingMode> {
        prop_oneof![
            Just(PagingMode::None),
            Just(TWO_LEVEL),
            Just(TWO_LEVEL_PSE),
            Just(PagingMode::Pae),
            Just(PagingMode::FourLevel64),
        ]
    }

    proptest! {
        #[test]
        fn random_tables_never_panic(
            mem in tables(),
            mode in mode(),
            cr3 in prop_oneof![any::<u64>(), 0u64..0x4000],
            // Half of them canonical, so that 4-level walks get past the first check.
            linear in any::<u64>().prop_map(|x| if x & 1 == 0 { x } else { ((x as i64) << 16 >> 16) as u64 }),
            len in 0usize..20,
        ) {
            let _ = translate(mode, cr3, linear, &mem);
            let mut buf = [0; 20];
            let whole = read_linear(mode, cr3, linear, &mut buf[..len], &mem);
            let prefix = read_linear_prefix(mode, cr3, linear, &mut buf[..len], &mem);
            if whole.is_ok() {
                prop_assert_eq!(prefix, Ok(len));
            } else {
                prop_assert!(prefix.map_or(true, |read| read < len));
            }
        }

        #[test]
        fn identity_map_translates_every_address_below_4_gib(linear in 0u64..0x1_0000_0000) {
            let mut mem = TestMemory::new(0x10_0000);
            let cr3 = identity_2m(&mut mem);
            prop_assert_eq!(translate(PagingMode::FourLevel64, cr3, linear, &mem), Ok(linear));
        }
    }
}
