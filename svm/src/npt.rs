//! Nested page tables: the entry format of AMD's second-level translation, for the four-level
//! builder `carousel_vmx::ept::Tables`.
//!
//! Reference: APM 15.25 "Nested Paging" (15.25.5 "Nested Table Walk": nested page tables have
//! the format of the host's long-mode page tables, and "all guest accesses are considered user
//! accesses" for the nested walk), 5.4 "Page-Translation-Table Entry Fields" (Figure 5-21
//! "4-Kbyte PTE—Long Mode").
//!
//! A leaf maps a 4 KiB frame as write-back (PWT, PCD and PAT clear select the host's PAT entry
//! 0, write-back); the CPU sets the accessed flag on every walk and the dirty flag on writes,
//! in 4 KiB and 2 MiB entries alike (QEMU-SVM.md measured both).

use carousel_vmx::addr::HostPhysAddr;
use carousel_vmx::ept::{EntryFormat, Permissions};

/// Present.
const PRESENT: u64 = 1 << 0;
/// Writable.
const WRITABLE: u64 = 1 << 1;
/// User: every nested access is a user access, so every level needs it.
const USER: u64 = 1 << 2;
/// Accessed.
const ACCESSED: u64 = 1 << 5;
/// Dirty (leaf entries).
const DIRTY: u64 = 1 << 6;
/// No-execute: honoured only while the host runs with EFER.NXE; reserved (a fault) otherwise.
const NO_EXECUTE: u64 = 1 << 63;
/// Bits 51:12: the frame or next table.
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// The nested page-table entry format. `no_execute` uses the NX bit for pages without
/// EXECUTE, which is right only when the host runs with EFER.NXE set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NptFormat {
    pub no_execute: bool,
}

/// Nested page tables for a host with EFER.NXE: pages without EXECUTE cannot be fetched from.
pub static NPT: NptFormat = NptFormat { no_execute: true };
/// Nested page tables for a host without NX: every mapped page can be fetched from.
pub static NPT_WITHOUT_NX: NptFormat = NptFormat { no_execute: false };

impl EntryFormat for NptFormat {
    fn table(&self, next: HostPhysAddr) -> u64 {
        (next.as_u64() & ADDRESS_MASK) | PRESENT | WRITABLE | USER
    }

    fn page(&self, frame: HostPhysAddr, permissions: Permissions) -> u64 {
        let mut entry = (frame.as_u64() & ADDRESS_MASK) | PRESENT | USER;
        if permissions.contains(Permissions::WRITE) {
            entry |= WRITABLE;
        }
        if self.no_execute && !permissions.contains(Permissions::EXECUTE) {
            entry |= NO_EXECUTE;
        }
        entry
    }

    fn present_mask(&self) -> u64 {
        PRESENT
    }

    fn permissions(&self, raw: u64) -> Permissions {
        let mut permissions = Permissions::READ;
        if raw & WRITABLE != 0 {
            permissions |= Permissions::WRITE;
        }
        if !self.no_execute || raw & NO_EXECUTE == 0 {
            permissions |= Permissions::EXECUTE;
        }
        permissions
    }

    fn address(&self, raw: u64) -> HostPhysAddr {
        HostPhysAddr(raw & ADDRESS_MASK)
    }

    fn accessed_dirty(&self) -> (u64, u64) {
        (ACCESSED, DIRTY)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use carousel_vmx::addr::GuestPhysAddr;
    use carousel_vmx::ept::{FrameSource, Tables};
    use proptest::prelude::*;

    use super::*;

    /// Frames in a map, numbered from 1 MiB up.
    #[derive(Default)]
    struct MapFrames(BTreeMap<u64, Box<[u64; 512]>>);

    impl FrameSource for MapFrames {
        fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
            let address = 0x10_0000 + 0x1000 * self.0.len() as u64;
            self.0.insert(address, Box::new([0; 512]));
            Some(HostPhysAddr(address))
        }
        fn table_mut(&mut self, frame: HostPhysAddr) -> &mut [u64; 512] {
            self.0.get_mut(&frame.as_u64()).expect("a frame given out")
        }
        fn table(&self, frame: HostPhysAddr) -> &[u64; 512] {
            &self.0[&frame.as_u64()]
        }
    }

    #[test]
    fn entries_are_long_mode_page_table_entries() {
        let frame = HostPhysAddr(0x1234_5000);
        assert_eq!(NPT.table(frame), 0x1234_5007);
        assert_eq!(
            NPT.page(frame, Permissions::READ_WRITE_EXECUTE),
            0x1234_5007,
            "present, writable, user; executable"
        );
        assert_eq!(
            NPT.page(frame, Permissions::READ | Permissions::EXECUTE),
            0x1234_5005,
            "a merged page: read-only"
        );
        assert_eq!(
            NPT.page(frame, Permissions::READ),
            0x8000_0000_1234_5005,
            "the LAPIC page: no fetches"
        );
        assert_eq!(NPT_WITHOUT_NX.page(frame, Permissions::READ), 0x1234_5005);
    }

    #[test]
    fn the_table_builder_walks_nested_tables_and_takes_their_flags() {
        let mut frames = MapFrames::default();
        let mut tables = Tables::new(&mut frames, &NPT).unwrap();
        for page in 0..600u64 {
            tables
                .map_4k(
                    GuestPhysAddr(page << 12),
                    HostPhysAddr(0x4000_0000 + (page << 12)),
                    Permissions::READ_WRITE_EXECUTE,
                    &mut frames,
                )
                .unwrap();
        }
        // PML4, PDPT, PD and two page tables.
        assert_eq!(frames.0.len(), 5);
        let root = tables.root();
        let pdpt = frames.table(root)[0];
        assert_eq!(
            pdpt & 0xFFF,
            0x007,
            "non-leaf entries: present, writable, user"
        );
        assert_eq!(
            tables.translate(GuestPhysAddr(513 << 12 | 0x10), &frames),
            Some((
                HostPhysAddr(0x4000_0000 + (513 << 12) + 0x10),
                Permissions::READ_WRITE_EXECUTE
            ))
        );
        // The CPU's part: page 2 read, page 513 written (the dirty flag with the accessed one).
        let leaf = |tables: &Tables, frames: &MapFrames, page: u64| {
            let pml4 = frames.table(tables.root())[0] & ADDRESS_MASK;
            let pd = frames.table(HostPhysAddr(pml4))[0] & ADDRESS_MASK;
            let pt = frames.table(HostPhysAddr(pd))[(page / 512) as usize] & ADDRESS_MASK;
            (HostPhysAddr(pt), (page % 512) as usize)
        };
        let (table, slot) = leaf(&tables, &frames, 2);
        frames.table_mut(table)[slot] |= ACCESSED;
        let (table, slot) = leaf(&tables, &frames, 513);
        frames.table_mut(table)[slot] |= ACCESSED | DIRTY;
        // The walks set the directory entries' accessed flags too.
        for page in [2u64, 513] {
            let pml4 = frames.table(tables.root())[0] & ADDRESS_MASK;
            let pd = frames.table(HostPhysAddr(pml4))[0] & ADDRESS_MASK;
            frames.table_mut(HostPhysAddr(pd))[(page / 512) as usize] |= ACCESSED;
        }
        let mut seen = Vec::new();
        tables.take_accessed_dirty(600, &mut frames, |page, dirty| seen.push((page, dirty)));
        assert_eq!(seen, vec![(2, false), (513, true)]);
        let (table, slot) = leaf(&tables, &frames, 513);
        assert_eq!(frames.table(table)[slot] & (ACCESSED | DIRTY), 0, "cleared");
        // Merging makes a page read-only; the mapping stays.
        assert!(tables.remap_4k(
            GuestPhysAddr(7 << 12),
            HostPhysAddr(0x9000),
            Permissions::READ | Permissions::EXECUTE,
            &mut frames
        ));
        assert_eq!(
            tables.translate(GuestPhysAddr(7 << 12), &frames),
            Some((
                HostPhysAddr(0x9000),
                Permissions::READ | Permissions::EXECUTE
            ))
        );
        assert_eq!(
            tables.unmap_4k(GuestPhysAddr(7 << 12), &mut frames),
            Some(HostPhysAddr(0x9000))
        );
        assert_eq!(tables.translate(GuestPhysAddr(7 << 12), &frames), None);
    }

    fn permissions() -> impl Strategy<Value = Permissions> {
        prop::sample::select(vec![
            Permissions::READ,
            Permissions::READ | Permissions::WRITE,
            Permissions::READ_WRITE_EXECUTE,
            Permissions::READ | Permissions::EXECUTE,
        ])
    }

    proptest! {
        #[test]
        fn leaves_round_trip(frame in 0u64..(1 << 40), permissions in permissions()) {
            let raw = NPT.page(HostPhysAddr(frame << 12), permissions);
            prop_assert!(NPT.is_present(raw));
            prop_assert_eq!(NPT.address(raw), HostPhysAddr(frame << 12));
            prop_assert_eq!(NPT.permissions(raw), permissions);
            prop_assert_eq!(raw & (ACCESSED | DIRTY), 0);
            let without = NPT_WITHOUT_NX.page(HostPhysAddr(frame << 12), permissions);
            prop_assert_eq!(without & NO_EXECUTE, 0);
            prop_assert!(NPT_WITHOUT_NX.permissions(without).contains(Permissions::EXECUTE));
        }
    }
}
