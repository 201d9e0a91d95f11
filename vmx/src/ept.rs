//! Extended page tables: entries, the EPT pointer, and a 4-level table builder shared with AMD's
//! nested page tables.
//!
//! Reference: Intel SDM, Order Number 325462-083US, March 2024: 26.6.11 "Extended-Page-Table
//! Pointer (EPTP)", 30.3.2 "EPT Translation Mechanism", 30.3.3.1 "EPT Misconfigurations" and
//! 30.3.7 "EPT and Memory Typing".
//!
//! The builder ([`Tables`]) never touches memory itself: tables live in frames a [`FrameSource`]
//! hands out and exposes, so the kernel backs it with real frames and the tests with a `Vec`.
//! It maps 4 KiB pages only; a guest's memory is write-back RAM, and whatever is not mapped (the
//! local APIC and I/O APIC pages) exits as an EPT violation. The walk is the same for every
//! four-level, 512-entry, 4 KiB-table format: how an entry is laid out is an [`EntryFormat`],
//! [`EPT`] here and the x86-64 page-table format of AMD's nested paging in `carousel-svm`.

use core::fmt;

use bitflags::bitflags;

use crate::addr::{GuestPhysAddr, HostPhysAddr};

bitflags! {
    /// Access rights of an EPT entry (bits 2:0).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Permissions: u64 {
        /// Reads allowed.
        const READ = 1 << 0;
        /// Writes allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches allowed (supervisor-mode fetches with mode-based control).
        const EXECUTE = 1 << 2;
        /// Everything: ordinary guest RAM.
        const READ_WRITE_EXECUTE = Self::READ.bits() | Self::WRITE.bits() | Self::EXECUTE.bits();
    }
}

/// Bits 51:12 of an entry or pointer: a host-physical frame address.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Memory type 6, write-back (30.3.7.1 "Memory Type Used for Accessing EPT Paging Structures").
const MEMORY_TYPE_WRITE_BACK: u64 = 6;
/// Bits 5:3 of a leaf entry: the EPT memory type.
const MEMORY_TYPE_SHIFT: u32 = 3;
/// Bit 6 of a leaf entry: ignore the guest PAT memory type.
const IGNORE_PAT: u64 = 1 << 6;
/// Bit 7 of a PDPTE or PDE: maps a 1 GiB or 2 MiB page.
const LARGE_PAGE: u64 = 1 << 7;
/// Bit 8: accessed (when A/D flags are enabled in the EPTP).
const ACCESSED: u64 = 1 << 8;
/// Bit 9 of a leaf entry: dirty (when A/D flags are enabled in the EPTP).
const DIRTY: u64 = 1 << 9;
/// Guest-physical addresses a 4-level EPT translates: 48 bits.
const GUEST_ADDRESS_LIMIT: u64 = 1 << 48;
/// Entries per table.
const ENTRIES: usize = 512;
/// Bytes of a 4 KiB page.
const PAGE_BYTES: u64 = 4096;

/// One 64-bit EPT paging-structure entry (30.3.2, "Format of an EPT ... Entry" tables).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct EptEntry(u64);

impl EptEntry {
    /// An entry pointing at the next-level table, allowing everything (the leaf decides).
    pub const fn table(next: HostPhysAddr) -> Self {
        Self((next.0 & ADDRESS_MASK) | Permissions::all().bits())
    }

    /// A leaf entry mapping a 4 KiB frame, write-back, combined with the guest's PAT.
    pub const fn page(frame: HostPhysAddr, permissions: Permissions) -> Self {
        Self(
            (frame.0 & ADDRESS_MASK)
                | (MEMORY_TYPE_WRITE_BACK << MEMORY_TYPE_SHIFT)
                | permissions.bits(),
        )
    }

    /// Wraps a raw entry, as read from a table.
    pub const fn from_bits(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw entry, as stored in a table.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// "If bits 2:0 of an EPT paging-structure entry are all 0, the entry is not present".
    pub const fn is_present(self) -> bool {
        self.0 & Permissions::all().bits() != 0
    }

    /// Access rights, bits 2:0.
    pub const fn permissions(self) -> Permissions {
        Permissions::from_bits_truncate(self.0)
    }

    /// The frame or next table, bits 51:12.
    pub const fn address(self) -> HostPhysAddr {
        HostPhysAddr(self.0 & ADDRESS_MASK)
    }

    /// EPT memory type, bits 5:3 (meaningful in leaf entries).
    pub const fn memory_type(self) -> u8 {
        ((self.0 >> MEMORY_TYPE_SHIFT) & 0b111) as u8
    }

    /// Ignore-PAT, bit 6 (meaningful in leaf entries).
    pub const fn ignore_pat(self) -> bool {
        self.0 & IGNORE_PAT != 0
    }

    /// Large page, bit 7 (in a PDPTE or PDE).
    pub const fn is_large_page(self) -> bool {
        self.0 & LARGE_PAGE != 0
    }

    /// Accessed flag, bit 8.
    pub const fn accessed(self) -> bool {
        self.0 & ACCESSED != 0
    }

    /// Dirty flag, bit 9 (leaf entries).
    pub const fn dirty(self) -> bool {
        self.0 & DIRTY != 0
    }
}

/// The EPT pointer written to `EPT_POINTER` (26.6.11).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EptPointer(u64);

impl EptPointer {
    /// Bits 5:3: "This value is 1 less than the EPT page-walk length".
    const WALK_LENGTH_4: u64 = 3 << 3;
    /// Bit 6: "Setting this control to 1 enables accessed and dirty flags for EPT".
    const ACCESSED_DIRTY: u64 = 1 << 6;

    /// A pointer to a 4-level, write-back EPT rooted at `pml4`.
    pub const fn new(pml4: HostPhysAddr, accessed_dirty: bool) -> Self {
        let ad = if accessed_dirty {
            Self::ACCESSED_DIRTY
        } else {
            0
        };
        Self((pml4.0 & ADDRESS_MASK) | ad | Self::WALK_LENGTH_4 | MEMORY_TYPE_WRITE_BACK)
    }

    /// The raw value for `EPT_POINTER` and INVEPT descriptors.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The PML4 table's frame.
    pub const fn pml4(self) -> HostPhysAddr {
        HostPhysAddr(self.0 & ADDRESS_MASK)
    }

    /// Whether accessed and dirty flags are enabled.
    pub const fn accessed_dirty(self) -> bool {
        self.0 & Self::ACCESSED_DIRTY != 0
    }
}

/// Where EPT tables live: the kernel hands out host frames and a view of their contents.
pub trait FrameSource {
    /// A fresh 4 KiB-aligned frame, zero-filled, or `None` when memory is exhausted.
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr>;

    /// The contents of `frame`, a frame this source allocated: writes must land in that very
    /// host-physical frame, since the CPU walks it.
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut [u64; ENTRIES];

    /// The contents of `frame`, read-only.
    fn table(&self, frame: HostPhysAddr) -> &[u64; ENTRIES];
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EptError {
    /// The guest-physical address is not 4 KiB aligned.
    MisalignedGuestAddress(GuestPhysAddr),
    /// The host-physical address is not 4 KiB aligned.
    MisalignedHostAddress(HostPhysAddr),
    /// The guest-physical address needs more than the 48 bits a 4-level EPT translates.
    GuestAddressTooLarge(GuestPhysAddr),
    /// The host-physical address needs more than the 52 bits an entry holds.
    HostAddressTooLarge(HostPhysAddr),
    /// The guest page is already mapped.
    AlreadyMapped(GuestPhysAddr),
    /// The frame source is exhausted.
    OutOfFrames,
    /// Permissions without read. Write-without-read is an EPT misconfiguration (30.3.3.1 "EPT
    /// Misconfigurations"), execute-only needs a CPU feature, and no access is no mapping.
    InvalidPermissions(Permissions),
}

impl fmt::Display for EptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MisalignedGuestAddress(gpa) => {
                write!(f, "guest address {gpa} is not 4 KiB aligned")
            }
            Self::MisalignedHostAddress(hpa) => {
                write!(f, "host address {hpa} is not 4 KiB aligned")
            }
            Self::GuestAddressTooLarge(gpa) => write!(f, "guest address {gpa} is beyond 48 bits"),
            Self::HostAddressTooLarge(hpa) => write!(f, "host address {hpa} is beyond 52 bits"),
            Self::AlreadyMapped(gpa) => write!(f, "guest page {gpa} is already mapped"),
            Self::OutOfFrames => f.write_str("out of frames for EPT tables"),
            Self::InvalidPermissions(p) => write!(f, "invalid EPT permissions {p:?}"),
        }
    }
}

/// Index into the table at `level` (3 = PML4, 0 = page table) for `gpa`.
const fn index(gpa: GuestPhysAddr, level: u32) -> usize {
    ((gpa.0 >> (12 + 9 * level)) & 0x1ff) as usize
}

/// Allocates a table frame, checking the one promise the hardware depends on.
fn allocate(frames: &mut impl FrameSource) -> Result<HostPhysAddr, EptError> {
    let frame = frames.allocate_zeroed().ok_or(EptError::OutOfFrames)?;
    assert!(
        frame.is_page_aligned() && frame.0 & !ADDRESS_MASK == 0,
        "FrameSource returned {frame}, not a 4 KiB frame below 2^52"
    );
    Ok(frame)
}

/// How the entries of one kind of four-level second-level table are laid out: EPT ([`EPT`]) or,
/// in `carousel-svm`, AMD's nested page tables. [`Tables`] walks and edits either through it.
pub trait EntryFormat: fmt::Debug + Sync {
    /// A non-leaf entry pointing at the next-level table `next`, allowing everything (the leaf
    /// decides).
    fn table(&self, next: HostPhysAddr) -> u64;
    /// A leaf entry mapping the 4 KiB frame `frame` with `permissions` (READ included).
    fn page(&self, frame: HostPhysAddr, permissions: Permissions) -> u64;
    /// The bits of which any one set makes an entry present (it maps something or points at a
    /// table).
    fn present_mask(&self) -> u64;
    /// The entry maps something or points at a table.
    fn is_present(&self, raw: u64) -> bool {
        raw & self.present_mask() != 0
    }
    /// What a present leaf entry allows.
    fn permissions(&self, raw: u64) -> Permissions;
    /// The frame or next table an entry holds.
    fn address(&self, raw: u64) -> HostPhysAddr {
        HostPhysAddr(raw & ADDRESS_MASK)
    }
    /// The accessed and the dirty flag of a leaf entry, as masks.
    fn accessed_dirty(&self) -> (u64, u64);
}

/// The EPT entry format (30.3.2 "EPT Translation Mechanism").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptFormat;

/// EPT's entry format, for [`Tables::new`].
pub static EPT: EptFormat = EptFormat;

impl EntryFormat for EptFormat {
    fn table(&self, next: HostPhysAddr) -> u64 {
        EptEntry::table(next).bits()
    }
    fn page(&self, frame: HostPhysAddr, permissions: Permissions) -> u64 {
        EptEntry::page(frame, permissions).bits()
    }
    fn present_mask(&self) -> u64 {
        Permissions::all().bits()
    }
    fn permissions(&self, raw: u64) -> Permissions {
        EptEntry(raw).permissions()
    }
    fn accessed_dirty(&self) -> (u64, u64) {
        (ACCESSED, DIRTY)
    }
}

/// One guest's second-level tables (an EPT, or a nested page table with another
/// [`EntryFormat`]): a 4-level hierarchy of 4 KiB mappings.
#[derive(Debug)]
pub struct Tables {
    pml4: HostPhysAddr,
    format: &'static dyn EntryFormat,
    /// The format's present bits, kept here so that the walks need no call through `format`
    /// (the accessed/dirty scan visits every page of a VM).
    present: u64,
}

impl Tables {
    /// Empty tables of `format`: one zeroed PML4 table.
    pub fn new(
        frames: &mut impl FrameSource,
        format: &'static dyn EntryFormat,
    ) -> Result<Self, EptError> {
        Ok(Self {
            pml4: allocate(frames)?,
            format,
            present: format.present_mask(),
        })
    }

    /// The PML4 table's frame: the root the EPT pointer or nested CR3 names.
    pub const fn root(&self) -> HostPhysAddr {
        self.pml4
    }

    /// The EPT pointer for `EPT_POINTER`; enable `accessed_dirty` only when
    /// [`crate::controls::Negotiated::ept_accessed_dirty`] says the CPU has it.
    pub const fn pointer(&self, accessed_dirty: bool) -> EptPointer {
        EptPointer::new(self.pml4, accessed_dirty)
    }

    /// Maps the 4 KiB guest page at `gpa` to the host frame at `hpa`, allocating tables on the
    /// way; `permissions` must include READ. On `OutOfFrames` tables allocated so far stay in
    /// place, empty.
    pub fn map_4k(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        permissions: Permissions,
        frames: &mut impl FrameSource,
    ) -> Result<(), EptError> {
        if !gpa.is_page_aligned() {
            return Err(EptError::MisalignedGuestAddress(gpa));
        }
        if !hpa.is_page_aligned() {
            return Err(EptError::MisalignedHostAddress(hpa));
        }
        if gpa.0 >= GUEST_ADDRESS_LIMIT {
            return Err(EptError::GuestAddressTooLarge(gpa));
        }
        if hpa.0 & !ADDRESS_MASK != 0 {
            return Err(EptError::HostAddressTooLarge(hpa));
        }
        if !permissions.contains(Permissions::READ) {
            return Err(EptError::InvalidPermissions(permissions));
        }
        let format = self.format;
        let mut table = self.pml4;
        for level in (1..=3).rev() {
            let slot = index(gpa, level);
            let entry = frames.table(table)[slot];
            table = if format.is_present(entry) {
                format.address(entry)
            } else {
                let next = allocate(frames)?;
                frames.table_mut(table)[slot] = format.table(next);
                next
            };
        }
        let slot = &mut frames.table_mut(table)[index(gpa, 0)];
        if format.is_present(*slot) {
            return Err(EptError::AlreadyMapped(gpa));
        }
        *slot = format.page(hpa, permissions);
        Ok(())
    }

    /// Removes the mapping of the 4 KiB guest page holding `gpa` and returns its host frame.
    /// The caller must then flush (INVEPT single context, or the ASID's TLB entries) before the
    /// guest runs again: the CPU may still hold the old translation.
    pub fn unmap_4k(
        &mut self,
        gpa: GuestPhysAddr,
        frames: &mut impl FrameSource,
    ) -> Option<HostPhysAddr> {
        let table = self.page_table(gpa, frames)?;
        let slot = &mut frames.table_mut(table)[index(gpa, 0)];
        let entry = core::mem::take(slot);
        self.format
            .is_present(entry)
            .then(|| self.format.address(entry))
    }

    /// Points the existing 4 KiB mapping of `gpa` at `hpa` with `permissions` (same-page
    /// merging makes pages read-only and shared, copy on write makes them private again).
    /// False when `gpa` is not mapped. The caller must flush before the guest runs again.
    pub fn remap_4k(
        &mut self,
        gpa: GuestPhysAddr,
        hpa: HostPhysAddr,
        permissions: Permissions,
        frames: &mut impl FrameSource,
    ) -> bool {
        let Some(table) = self.page_table(gpa, frames) else {
            return false;
        };
        let slot = &mut frames.table_mut(table)[index(gpa, 0)];
        if !self.format.is_present(*slot) || !permissions.contains(Permissions::READ) {
            return false;
        }
        *slot = self.format.page(hpa, permissions);
        true
    }

    /// Translates `gpa` (any offset) the way the CPU would.
    pub fn translate(
        &self,
        gpa: GuestPhysAddr,
        frames: &impl FrameSource,
    ) -> Option<(HostPhysAddr, Permissions)> {
        let table = self.page_table(gpa, frames)?;
        let entry = frames.table(table)[index(gpa, 0)];
        self.format.is_present(entry).then(|| {
            (
                HostPhysAddr(self.format.address(entry).0 + gpa.page_offset()),
                self.format.permissions(entry),
            )
        })
    }

    /// Reads and clears the accessed and dirty flags of the mappings of guest pages
    /// `[0, pages)`, calling `seen(page, dirty)` for each page accessed since the last take, in
    /// order. The cost follows what the guest touched, not its size: a page-directory entry's
    /// accessed flag is set by every walk through it (the CPU sets the accessed flag of each
    /// paging-structure entry a translation uses: SDM 30.3.5, "Accessed and Dirty Flags for
    /// EPT"; AMD's nested tables are x86-64 page tables, whose walks do the same), so a page
    /// table under a clear one holds no flagged page and is skipped, and the directory entry's
    /// flag is cleared with its table's. The CPU sets the flags again on the next access only
    /// once its cached translations are gone: the caller must flush before the guest runs
    /// again.
    pub fn take_accessed_dirty(
        &mut self,
        pages: u64,
        frames: &mut impl FrameSource,
        mut seen: impl FnMut(u64, bool),
    ) {
        let per_table = ENTRIES as u64;
        let (accessed, dirty) = self.format.accessed_dirty();
        for first in (0..pages).step_by(ENTRIES) {
            let Some((directory, slot)) =
                self.directory_entry(GuestPhysAddr(first * PAGE_BYTES), frames)
            else {
                continue;
            };
            let entry = frames.table(directory)[slot];
            if entry & self.present == 0 || entry & accessed == 0 {
                continue;
            }
            frames.table_mut(directory)[slot] = entry & !accessed;
            let table = HostPhysAddr(entry & ADDRESS_MASK);
            let count = (pages - first).min(per_table) as usize;
            for (offset, leaf) in frames.table_mut(table)[..count].iter_mut().enumerate() {
                if *leaf & self.present != 0 && *leaf & (accessed | dirty) != 0 {
                    seen(first + offset as u64, *leaf & dirty != 0);
                    *leaf &= !(accessed | dirty);
                }
            }
        }
    }

    /// The page-directory table (level 1) covering `gpa` and the index of `gpa`'s entry in it,
    /// if the walk down to it is present.
    fn directory_entry(
        &self,
        gpa: GuestPhysAddr,
        frames: &impl FrameSource,
    ) -> Option<(HostPhysAddr, usize)> {
        if gpa.0 >= GUEST_ADDRESS_LIMIT {
            return None;
        }
        let directory = (2..=3).rev().try_fold(self.pml4, |table, level| {
            let entry = frames.table(table)[index(gpa, level)];
            (entry & self.present != 0).then_some(HostPhysAddr(entry & ADDRESS_MASK))
        })?;
        Some((directory, index(gpa, 1)))
    }

    /// The page table (level 0) covering `gpa`, if the walk down to it is present.
    fn page_table(&self, gpa: GuestPhysAddr, frames: &impl FrameSource) -> Option<HostPhysAddr> {
        if gpa.0 >= GUEST_ADDRESS_LIMIT {
            return None;
        }
        (1..=3).rev().try_fold(self.pml4, |table, level| {
            let entry = frames.table(table)[index(gpa, level)];
            (entry & self.present != 0).then_some(HostPhysAddr(entry & ADDRESS_MASK))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::addr::PAGE_SIZE;

    /// Frames at 0x1000_0000 upwards, backed by a `Vec`, at most `limit` of them.
    struct FakeFrames {
        tables: Vec<Box<[u64; ENTRIES]>>,
        limit: usize,
    }

    const BASE: u64 = 0x1000_0000;

    impl FakeFrames {
        fn new(limit: usize) -> Self {
            Self {
                tables: Vec::new(),
                limit,
            }
        }

        fn slot(frame: HostPhysAddr) -> usize {
            ((frame.0 - BASE) / PAGE_SIZE) as usize
        }
    }

    impl FrameSource for FakeFrames {
        fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
            if self.tables.len() == self.limit {
                return None;
            }
            self.tables.push(Box::new([0; ENTRIES]));
            Some(HostPhysAddr(
                BASE + (self.tables.len() as u64 - 1) * PAGE_SIZE,
            ))
        }

        fn table_mut(&mut self, frame: HostPhysAddr) -> &mut [u64; ENTRIES] {
            &mut self.tables[Self::slot(frame)]
        }

        fn table(&self, frame: HostPhysAddr) -> &[u64; ENTRIES] {
            &self.tables[Self::slot(frame)]
        }
    }

    const RW: Permissions = Permissions::READ.union(Permissions::WRITE);
    const RWX: Permissions = Permissions::all();

    #[test]
    fn map_translate_unmap() {
        let mut frames = FakeFrames::new(16);
        let mut ept = Tables::new(&mut frames, &EPT).unwrap();
        let gpa = GuestPhysAddr(0x7fff_f000);
        ept.map_4k(gpa, HostPhysAddr(0xabc_d000), RW, &mut frames)
            .unwrap();
        assert_eq!(frames.tables.len(), 4);
        assert_eq!(
            ept.translate(GuestPhysAddr(0x7fff_f123), &frames),
            Some((HostPhysAddr(0xabc_d123), RW))
        );
        assert_eq!(ept.translate(GuestPhysAddr(0x7fff_e000), &frames), None);
        assert_eq!(
            ept.map_4k(gpa, HostPhysAddr(0x1000), RW, &mut frames),
            Err(EptError::AlreadyMapped(gpa))
        );
        assert_eq!(
            ept.unmap_4k(gpa, &mut frames),
            Some(HostPhysAddr(0xabc_d000))
        );
        assert_eq!(ept.unmap_4k(gpa, &mut frames), None);
        assert_eq!(ept.translate(gpa, &frames), None);
        // Neighbours share the tables already built.
        ept.map_4k(
            GuestPhysAddr(0x7fff_e000),
            HostPhysAddr(0x5000),
            RWX,
            &mut frames,
        )
        .unwrap();
        assert_eq!(frames.tables.len(), 4);
    }

    #[test]
    fn remap_changes_frame_and_permissions_of_mapped_pages_only() {
        let mut frames = FakeFrames::new(16);
        let mut ept = Tables::new(&mut frames, &EPT).unwrap();
        let gpa = GuestPhysAddr(0x5000);
        ept.map_4k(gpa, HostPhysAddr(0x9000), RWX, &mut frames)
            .unwrap();
        let read_execute = Permissions::READ | Permissions::EXECUTE;
        assert!(ept.remap_4k(gpa, HostPhysAddr(0xA000), read_execute, &mut frames));
        assert_eq!(
            ept.translate(gpa, &frames),
            Some((HostPhysAddr(0xA000), read_execute))
        );
        assert!(!ept.remap_4k(
            GuestPhysAddr(0x6000),
            HostPhysAddr(0xA000),
            RWX,
            &mut frames
        ));
        assert!(!ept.remap_4k(gpa, HostPhysAddr(0xA000), Permissions::WRITE, &mut frames));
    }

    #[test]
    fn accessed_dirty_flags_are_read_and_cleared() {
        let mut frames = FakeFrames::new(16);
        let mut ept = Tables::new(&mut frames, &EPT).unwrap();
        // 600 pages: the walk crosses a page-table boundary; page 3 is left unmapped.
        for page in (0..600u64).filter(|&page| page != 3) {
            ept.map_4k(
                GuestPhysAddr(page * PAGE_SIZE),
                HostPhysAddr(page * PAGE_SIZE),
                RWX,
                &mut frames,
            )
            .unwrap();
        }
        // The CPU's part: page 1 read, page 2 and 513 written.
        fn mark(ept: &Tables, frames: &mut FakeFrames, page: u64, bits: u64) {
            let table = ept
                .page_table(GuestPhysAddr(page * PAGE_SIZE), frames)
                .unwrap();
            frames.table_mut(table)[index(GuestPhysAddr(page * PAGE_SIZE), 0)] |= bits;
        }
        mark(&ept, &mut frames, 1, ACCESSED);
        mark(&ept, &mut frames, 2, ACCESSED | DIRTY);
        mark(&ept, &mut frames, 513, ACCESSED | DIRTY);
        // The walks that set them set their directory entries' accessed flags too.
        let directory = |ept: &Tables, frames: &FakeFrames, page: u64| {
            ept.directory_entry(GuestPhysAddr(page * PAGE_SIZE), frames)
                .unwrap()
        };
        for page in [1, 513] {
            let (table, slot) = directory(&ept, &frames, page);
            frames.table_mut(table)[slot] |= ACCESSED;
        }
        let mut flagged = Vec::new();
        ept.take_accessed_dirty(600, &mut frames, |page, dirty| flagged.push((page, dirty)));
        assert_eq!(flagged, vec![(1, false), (2, true), (513, true)]);
        // Cleared, the directory entries too: a second look finds nothing, and the mappings
        // are intact.
        for page in [1, 513] {
            let (table, slot) = directory(&ept, &frames, page);
            assert_eq!(
                frames.table(table)[slot] & ACCESSED,
                0,
                "page {page}'s directory"
            );
        }
        ept.take_accessed_dirty(600, &mut frames, |page, _| {
            panic!("page {page} still flagged")
        });
        // A page flagged under a directory entry no walk went through since the last take
        // (which the CPU never leaves) is not looked at: the scan skips the whole table.
        mark(&ept, &mut frames, 514, ACCESSED);
        ept.take_accessed_dirty(600, &mut frames, |page, _| panic!("page {page} looked at"));
        assert_eq!(
            ept.translate(GuestPhysAddr(513 * PAGE_SIZE), &frames),
            Some((HostPhysAddr(513 * PAGE_SIZE), RWX))
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut frames = FakeFrames::new(4);
        let mut ept = Tables::new(&mut frames, &EPT).unwrap();
        let ok_gpa = GuestPhysAddr(0x2000);
        let ok_hpa = HostPhysAddr(0x3000);
        let cases = [
            (
                GuestPhysAddr(0x2001),
                ok_hpa,
                RW,
                EptError::MisalignedGuestAddress(GuestPhysAddr(0x2001)),
            ),
            (
                ok_gpa,
                HostPhysAddr(0x3800),
                RW,
                EptError::MisalignedHostAddress(HostPhysAddr(0x3800)),
            ),
            (
                GuestPhysAddr(1 << 48),
                ok_hpa,
                RW,
                EptError::GuestAddressTooLarge(GuestPhysAddr(1 << 48)),
            ),
            (
                ok_gpa,
                HostPhysAddr(1 << 52),
                RW,
                EptError::HostAddressTooLarge(HostPhysAddr(1 << 52)),
            ),
            (
                ok_gpa,
                ok_hpa,
                Permissions::WRITE,
                EptError::InvalidPermissions(Permissions::WRITE),
            ),
            (
                ok_gpa,
                ok_hpa,
                Permissions::EXECUTE,
                EptError::InvalidPermissions(Permissions::EXECUTE),
            ),
            (
                ok_gpa,
                ok_hpa,
                Permissions::empty(),
                EptError::InvalidPermissions(Permissions::empty()),
            ),
        ];
        for (gpa, hpa, permissions, error) in cases {
            assert_eq!(ept.map_4k(gpa, hpa, permissions, &mut frames), Err(error));
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(frames.tables.len(), 1, "refusals allocate nothing");
        ept.map_4k(ok_gpa, ok_hpa, Permissions::READ, &mut frames)
            .unwrap();
    }

    #[test]
    fn running_out_of_frames_is_an_error() {
        let mut frames = FakeFrames::new(3);
        let mut ept = Tables::new(&mut frames, &EPT).unwrap();
        assert_eq!(
            ept.map_4k(GuestPhysAddr(0), HostPhysAddr(0), RW, &mut frames),
            Err(EptError::OutOfFrames)
        );
        assert_eq!(
            Tables::new(&mut FakeFrames::new(0), &EPT).unwrap_err(),
            EptError::OutOfFrames
        );
    }

    #[test]
    fn pointer_layout() {
        let mut frames = FakeFrames::new(1);
        let ept = Tables::new(&mut frames, &EPT).unwrap();
        assert_eq!(ept.pointer(false).bits(), BASE | 0x1e);
        let pointer = ept.pointer(true);
        assert_eq!(pointer.bits(), BASE | 0x5e);
        assert_eq!(pointer.pml4(), HostPhysAddr(BASE));
        assert!(pointer.accessed_dirty());
    }

    fn permissions() -> impl Strategy<Value = Permissions> {
        prop::sample::select(vec![
            Permissions::READ,
            RW,
            RWX,
            Permissions::READ | Permissions::EXECUTE,
        ])
    }

    proptest! {
        #[test]
        fn leaf_entries_round_trip(frame in 0u64..(1 << 40), permissions in permissions()) {
            let entry = EptEntry::page(HostPhysAddr(frame << 12), permissions);
            let entry = EptEntry::from_bits(entry.bits());
            prop_assert_eq!(entry.address(), HostPhysAddr(frame << 12));
            prop_assert_eq!(entry.permissions(), permissions);
            prop_assert_eq!(entry.memory_type(), 6);
            prop_assert!(entry.is_present());
            prop_assert!(!entry.ignore_pat() && !entry.is_large_page());
            prop_assert!(!entry.accessed() && !entry.dirty());
        }

        #[test]
        fn raw_entries_split_into_their_fields(raw: u64) {
            let entry = EptEntry::from_bits(raw);
            let rebuilt = entry.permissions().bits()
                | u64::from(entry.memory_type()) << 3
                | u64::from(entry.ignore_pat()) << 6
                | u64::from(entry.is_large_page()) << 7
                | u64::from(entry.accessed()) << 8
                | u64::from(entry.dirty()) << 9
                | entry.address().0;
            prop_assert_eq!(rebuilt, raw & (ADDRESS_MASK | 0x3ff));
        }

        #[test]
        fn mapped_pages_translate_back(
            pages in prop::collection::btree_map(0u64..(1 << 36), (0u64..(1 << 40), permissions()), 1..64)
        ) {
            let mut frames = FakeFrames::new(usize::MAX);
            let mut ept = Tables::new(&mut frames, &EPT).unwrap();
            for (&gfn, &(hfn, p)) in &pages {
                ept.map_4k(GuestPhysAddr(gfn << 12), HostPhysAddr(hfn << 12), p, &mut frames)
                    .unwrap();
            }
            let mut unmapped = BTreeMap::new();
            for (&gfn, &(hfn, p)) in &pages {
                let gpa = GuestPhysAddr((gfn << 12) | 0xfff);
                prop_assert_eq!(
                    ept.translate(gpa, &frames),
                    Some((HostPhysAddr((hfn << 12) | 0xfff), p))
                );
                if gfn % 2 == 0 {
                    unmapped.insert(gfn, ept.unmap_4k(gpa, &mut frames));
                }
            }
            for (gfn, hpa) in unmapped {
                prop_assert_eq!(hpa, Some(HostPhysAddr(pages[&gfn].0 << 12)));
                prop_assert_eq!(ept.translate(GuestPhysAddr(gfn << 12), &frames), None);
            }
        }
    }
}
