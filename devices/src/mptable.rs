//! The firmware tables xv6's `mpinit` reads: two BIOS data area words and an Intel MultiProcessor
//! Specification 1.4 floating pointer and configuration table describing one CPU and one I/O APIC.
//!
//! Pure builders: they return bytes and the guest-physical addresses they belong at; the
//! hypervisor copies them into guest RAM before the first VM entry. What xv6 needs of them
//! (XV6-CONTRACT §2):
//! - a non-zero BDA word at 0x40E (EBDA segment) or 0x413 (base memory in KiB), because with
//!   both 0 xv6 scans unmapped memory and triple-faults;
//! - a floating pointer in the first KiB of the EBDA (or the last KiB of base memory, or
//!   0xF0000-0xFFFFF) whose 16 bytes sum to 0, with a non-zero table address and IMCRP 0;
//! - a "PCMP" table, version 1 or 4, whose `length` bytes sum to 0, with the local APIC in the
//!   0xFE000000+ window xv6 maps, and only entry types xv6's parser steps over: an unknown type
//!   makes it loop forever. The table built here holds exactly one processor entry (type 0) with
//!   APIC ID 0, which xv6's `mycpu` looks up, and one I/O APIC entry (type 2): 72 bytes.
//!
//! Recommended placement: the EBDA at [`EBDA_ADDRESS`] (segment [`EBDA_SEGMENT`], base memory
//! [`BASE_MEMORY_KIB`] KiB), the floating pointer at its start and the table right after, all
//! below 1 MiB and clear of the AP trampoline xv6 writes at 0x7000-0x7089. xv6 finds the pointer
//! through the EBDA segment word; the base-memory word only matters when that is 0, and then xv6
//! scans the KiB *below* base × 1024 (0x9F800 for 639 KiB), not the EBDA.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// BIOS data area word: the EBDA's real-mode segment.
pub const BDA_EBDA_SEGMENT: u32 = 0x40E;
/// BIOS data area word: base (conventional) memory size in KiB.
pub const BDA_BASE_MEMORY_KIB: u32 = 0x413;
/// The BIOS data area.
pub const BDA: Range<u32> = 0x400..0x500;
/// Recommended EBDA segment: the EBDA is the last KiB of 640 KiB.
pub const EBDA_SEGMENT: u16 = 0x9FC0;
/// Guest-physical address of the recommended EBDA.
pub const EBDA_ADDRESS: u32 = (EBDA_SEGMENT as u32) << 4;
/// Recommended base memory size: 640 KiB less the 1 KiB EBDA.
pub const BASE_MEMORY_KIB: u16 = 639;
/// Recommended place for the floating pointer: the start of the EBDA.
pub const FLOATING_POINTER_GPA: u32 = EBDA_ADDRESS;
/// Recommended place for the configuration table: right after the floating pointer.
pub const CONFIG_TABLE_GPA: u32 = FLOATING_POINTER_GPA + FLOATING_POINTER_SIZE as u32;
/// Where xv6 copies its AP start-up code, even with one CPU (XV6-CONTRACT §1.4).
pub const AP_TRAMPOLINE: Range<u32> = 0x7000..0x708A;
/// End of low memory: the tables stay below it (xv6 frees and fills [end, 4 MiB) before mpinit).
pub const LOW_MEMORY_END: u32 = 0x10_0000;

/// Guest-physical base of the local APIC, inside xv6's DEVSPACE window.
pub const LOCAL_APIC_ADDRESS: u32 = 0xFEE0_0000;
/// Guest-physical base of the I/O APIC; xv6 hard-codes it and ignores the table's copy.
pub const IO_APIC_ADDRESS: u32 = 0xFEC0_0000;
/// APIC ID of the one processor: xv6's `mycpu` looks the local APIC ID up in the table.
pub const BSP_APIC_ID: u8 = 0;
/// Local APIC version reported in the processor entry (an integrated xAPIC, as QEMU's VER 0x14).
pub const LOCAL_APIC_VERSION: u8 = 0x14;
/// I/O APIC version reported in the I/O APIC entry (as QEMU's VER 0x20).
pub const IO_APIC_VERSION: u8 = 0x20;

/// Floating pointer signature.
pub const FLOATING_POINTER_SIGNATURE: [u8; 4] = *b"_MP_";
/// Configuration table signature.
pub const CONFIG_TABLE_SIGNATURE: [u8; 4] = *b"PCMP";
/// MP specification revision 1.4, in the floating pointer and the table header.
pub const SPEC_REVISION_1_4: u8 = 4;
/// Bytes in the floating pointer.
pub const FLOATING_POINTER_SIZE: usize = 16;
/// Bytes in the configuration table header; the entries follow it.
pub const CONFIG_HEADER_SIZE: usize = 44;
/// Entry type: processor.
pub const ENTRY_PROCESSOR: u8 = 0;
/// Entry type: I/O APIC.
pub const ENTRY_IO_APIC: u8 = 2;
/// Bytes in a processor entry.
pub const PROCESSOR_ENTRY_SIZE: usize = 20;
/// Bytes in an I/O APIC entry.
pub const IO_APIC_ENTRY_SIZE: usize = 8;
/// Bytes in the table built here: header, one processor, one I/O APIC.
pub const CONFIG_TABLE_SIZE: usize = CONFIG_HEADER_SIZE + PROCESSOR_ENTRY_SIZE + IO_APIC_ENTRY_SIZE;

/// Processor entry flags: EN, the processor is usable.
const PROCESSOR_ENABLED: u8 = 1 << 0;
/// Processor entry flags: BP, the bootstrap processor.
const PROCESSOR_BOOTSTRAP: u8 = 1 << 1;
/// Processor entry CPU signature: family 6, model 0, stepping 0 (informational only).
const PROCESSOR_SIGNATURE: u32 = 0x0600;
/// Processor entry feature flags: CPUID.1:EDX FPU (bit 0) and APIC (bit 9) (informational only).
const PROCESSOR_FEATURES: u32 = 1 << 0 | 1 << 9;
/// I/O APIC entry flags: EN, the I/O APIC is usable.
const IO_APIC_ENABLED: u8 = 1 << 0;
/// Table header OEM ID, 8 bytes.
const OEM_ID: [u8; 8] = *b"CAROUSEL";
/// Table header product ID, 12 bytes.
const PRODUCT_ID: [u8; 12] = *b"XV6 GUEST   ";

/// Why tables or BDA words would not work for xv6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MpTableError {
    /// Table address 0: xv6 takes it for a default configuration and rejects it.
    NullTable,
    /// The table would cover guest-physical `table`, which is not below [`LOW_MEMORY_END`].
    AboveLowMemory {
        /// The bytes the table would cover.
        table: Range<u32>,
    },
    /// The table would overlap `reserved`, which the guest or these builders write.
    Overlaps {
        /// The bytes the table would cover.
        table: Range<u32>,
        /// The range it hits: the BIOS data area or the AP trampoline.
        reserved: Range<u32>,
    },
    /// Both BDA words 0: xv6 would scan the KiB below address 0 and triple-fault.
    BothBdaWordsZero,
}

impl fmt::Display for MpTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NullTable => f.write_str("MP configuration table at address 0"),
            Self::AboveLowMemory { table } => write!(
                f,
                "MP configuration table at {:#x}..{:#x} is not below {LOW_MEMORY_END:#x}",
                table.start, table.end
            ),
            Self::Overlaps { table, reserved } => write!(
                f,
                "MP configuration table at {:#x}..{:#x} overlaps {:#x}..{:#x}",
                table.start, table.end, reserved.start, reserved.end
            ),
            Self::BothBdaWordsZero => {
                f.write_str("EBDA segment and base memory size are both 0 in the BDA")
            }
        }
    }
}

impl core::error::Error for MpTableError {}

/// The MP structures, ready to copy into guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpTables {
    /// The floating pointer; goes where xv6 scans, such as [`FLOATING_POINTER_GPA`].
    pub floating_pointer: [u8; FLOATING_POINTER_SIZE],
    /// The configuration table; goes at the `table_gpa` given to [`mp_tables`].
    pub config_table: Vec<u8>,
}

/// A 16-bit BIOS data area value and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BdaWord {
    /// Guest-physical address.
    pub gpa: u32,
    /// The value, stored little endian.
    pub value: u16,
}

impl BdaWord {
    /// The bytes to store at [`Self::gpa`].
    pub const fn bytes(self) -> [u8; 2] {
        self.value.to_le_bytes()
    }
}

/// The MP floating pointer and a configuration table for one CPU (APIC ID 0, local APIC at
/// [`LOCAL_APIC_ADDRESS`]) and one I/O APIC (`ioapic_id`, at [`IO_APIC_ADDRESS`]), with the table
/// at guest-physical `table_gpa`. `ioapic_id` should match bits 31:24 of the I/O APIC ID register,
/// or xv6 prints a harmless warning.
pub fn mp_tables(ioapic_id: u8, table_gpa: u32) -> Result<MpTables, MpTableError> {
    check_placement(table_gpa)?;

    let mut table = Vec::with_capacity(CONFIG_TABLE_SIZE);
    // Header (MP spec 1.4, table 4-2).
    table.extend_from_slice(&CONFIG_TABLE_SIGNATURE);
    table.extend_from_slice(&(CONFIG_TABLE_SIZE as u16).to_le_bytes());
    table.push(SPEC_REVISION_1_4);
    table.push(0); // checksum, set below
    table.extend_from_slice(&OEM_ID);
    table.extend_from_slice(&PRODUCT_ID);
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer: none
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&2u16.to_le_bytes()); // entry count
    table.extend_from_slice(&LOCAL_APIC_ADDRESS.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    debug_assert_eq!(table.len(), CONFIG_HEADER_SIZE);
    // Processor entry (table 4-4).
    table.push(ENTRY_PROCESSOR);
    table.push(BSP_APIC_ID);
    table.push(LOCAL_APIC_VERSION);
    table.push(PROCESSOR_ENABLED | PROCESSOR_BOOTSTRAP);
    table.extend_from_slice(&PROCESSOR_SIGNATURE.to_le_bytes());
    table.extend_from_slice(&PROCESSOR_FEATURES.to_le_bytes());
    table.extend_from_slice(&[0; 8]); // reserved
                                      // I/O APIC entry (table 4-6).
    table.push(ENTRY_IO_APIC);
    table.push(ioapic_id);
    table.push(IO_APIC_VERSION);
    table.push(IO_APIC_ENABLED);
    table.extend_from_slice(&IO_APIC_ADDRESS.to_le_bytes());
    debug_assert_eq!(table.len(), CONFIG_TABLE_SIZE);
    table[7] = checksum(&table);

    // Floating pointer (figure 4-1).
    let mut floating_pointer = [0; FLOATING_POINTER_SIZE];
    floating_pointer[..4].copy_from_slice(&FLOATING_POINTER_SIGNATURE);
    floating_pointer[4..8].copy_from_slice(&table_gpa.to_le_bytes());
    floating_pointer[8] = 1; // length in 16-byte units
    floating_pointer[9] = SPEC_REVISION_1_4;
    // Byte 10 is the checksum; byte 11, feature 1, is 0: the table is present, not a default
    // configuration; byte 12, feature 2, has IMCRP clear: no IMCR port traffic from xv6.
    floating_pointer[10] = checksum(&floating_pointer);

    Ok(MpTables {
        floating_pointer,
        config_table: table,
    })
}

/// The BIOS data area words that point xv6's floating-pointer search at the EBDA: the EBDA
/// segment at 0x40E and the base memory size in KiB at 0x413. At least one must be non-zero.
pub fn bda_words(ebda_segment: u16, base_kib: u16) -> Result<[BdaWord; 2], MpTableError> {
    if ebda_segment == 0 && base_kib == 0 {
        return Err(MpTableError::BothBdaWordsZero);
    }
    Ok([
        BdaWord {
            gpa: BDA_EBDA_SEGMENT,
            value: ebda_segment,
        },
        BdaWord {
            gpa: BDA_BASE_MEMORY_KIB,
            value: base_kib,
        },
    ])
}

/// The byte that makes `bytes` (with it in place of a 0) sum to 0 modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, &byte| sum.wrapping_add(byte))
        .wrapping_neg()
}

fn check_placement(table_gpa: u32) -> Result<(), MpTableError> {
    if table_gpa == 0 {
        return Err(MpTableError::NullTable);
    }
    let table = table_gpa..table_gpa.saturating_add(CONFIG_TABLE_SIZE as u32);
    if table.end > LOW_MEMORY_END {
        return Err(MpTableError::AboveLowMemory { table });
    }
    for reserved in [BDA, AP_TRAMPOLINE] {
        if table.start < reserved.end && reserved.start < table.end {
            return Err(MpTableError::Overlaps { table, reserved });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// What xv6's mpinit, then mycpu and ioapicinit, would make of low memory (XV6-CONTRACT
    /// §2), written from the contract's description.
    #[derive(Debug, PartialEq, Eq)]
    enum Xv6 {
        /// Found the configuration.
        Found {
            /// APIC IDs of the processor entries, in order.
            cpus: Vec<u8>,
            /// The last I/O APIC entry's ID.
            ioapic_id: u8,
            /// The table's local APIC address.
            lapic: u32,
        },
        /// Read unmapped memory before the IDT exists.
        TripleFault,
        /// "Expect to run on an SMP".
        NotSmp,
        /// Stuck on an entry type it does not step over.
        Hang,
    }

    /// Guest low memory for the mimic: the first MiB.
    fn low_memory() -> Vec<u8> {
        vec![0; LOW_MEMORY_END as usize]
    }

    fn put(memory: &mut [u8], gpa: u32, bytes: &[u8]) {
        memory[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
    }

    /// Low memory laid out as recommended, with `tables` in it.
    fn recommended_memory(tables: &MpTables) -> Vec<u8> {
        let mut memory = low_memory();
        for word in bda_words(EBDA_SEGMENT, BASE_MEMORY_KIB).unwrap() {
            put(&mut memory, word.gpa, &word.bytes());
        }
        put(&mut memory, FLOATING_POINTER_GPA, &tables.floating_pointer);
        put(&mut memory, CONFIG_TABLE_GPA, &tables.config_table);
        memory
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes
            .iter()
            .fold(0, |sum: u8, &byte| sum.wrapping_add(byte))
    }

    fn word(memory: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([memory[at], memory[at + 1]])
    }

    fn dword(memory: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(memory[at..at + 4].try_into().unwrap())
    }

    /// Scans `len` bytes at `start` in 16-byte steps for a checksummed "_MP_". `Err` when the
    /// range is not in memory (xv6 would fault on it).
    fn scan(memory: &[u8], start: u64, len: u64) -> Result<Option<usize>, Xv6> {
        if start + len > memory.len() as u64 {
            return Err(Xv6::TripleFault);
        }
        Ok((start..start + len)
            .step_by(16)
            .map(|at| at as usize)
            .find(|&at| {
                let candidate = &memory[at..at + FLOATING_POINTER_SIZE];
                candidate[..4] == FLOATING_POINTER_SIGNATURE && sum(candidate) == 0
            }))
    }

    fn xv6_mpinit(memory: &[u8]) -> Xv6 {
        let ebda = u64::from(word(memory, BDA_EBDA_SEGMENT as usize)) << 4;
        let first = if ebda != 0 {
            scan(memory, ebda, 1024)
        } else {
            let base = u64::from(word(memory, BDA_BASE_MEMORY_KIB as usize)) * 1024;
            // 0 - 1024 wraps to the top of the 32-bit address space.
            scan(memory, base.wrapping_sub(1024) & 0xFFFF_FFFF, 1024)
        };
        let found = match first {
            Err(fault) => return fault,
            Ok(Some(at)) => Some(at),
            Ok(None) => scan(memory, 0xF0000, 0x10000).unwrap(),
        };
        let Some(pointer) = found else {
            return Xv6::NotSmp;
        };
        assert_eq!(
            memory[pointer + 12],
            0,
            "IMCRP set: xv6 would touch ports 0x22/0x23"
        );
        let table = dword(memory, pointer + 4) as usize;
        if table == 0 || table + CONFIG_HEADER_SIZE > memory.len() {
            return Xv6::NotSmp;
        }
        let length = usize::from(word(memory, table + 4));
        if memory[table..table + 4] != CONFIG_TABLE_SIGNATURE
            || !matches!(memory[table + 6], 1 | 4)
            || table + length > memory.len()
            || sum(&memory[table..table + length]) != 0
        {
            return Xv6::NotSmp;
        }
        let lapic = dword(memory, table + 36);
        let (mut cpus, mut ioapic_id) = (Vec::new(), 0);
        let mut at = table + CONFIG_HEADER_SIZE;
        while at < table + length {
            match memory[at] {
                ENTRY_PROCESSOR => {
                    cpus.push(memory[at + 1]);
                    at += PROCESSOR_ENTRY_SIZE;
                }
                ENTRY_IO_APIC => {
                    ioapic_id = memory[at + 1];
                    at += 8;
                }
                1 | 3 | 4 => at += 8,
                _ => return Xv6::Hang,
            }
        }
        Xv6::Found {
            cpus,
            ioapic_id,
            lapic,
        }
    }

    /// What the recommended layout gives xv6.
    fn recommended(ioapic_id: u8) -> Xv6 {
        let tables = mp_tables(ioapic_id, CONFIG_TABLE_GPA).unwrap();
        xv6_mpinit(&recommended_memory(&tables))
    }

    #[test]
    fn checksums_signatures_and_sizes() {
        let tables = mp_tables(1, CONFIG_TABLE_GPA).unwrap();
        let pointer = &tables.floating_pointer;
        assert_eq!(&pointer[..4], b"_MP_");
        assert_eq!(sum(pointer), 0);
        assert_eq!(dword(pointer, 4), CONFIG_TABLE_GPA);
        assert_eq!(pointer[8..13], [1, SPEC_REVISION_1_4, pointer[10], 0, 0]);
        let table = &tables.config_table;
        assert_eq!(&table[..4], b"PCMP");
        assert_eq!(table.len(), 72);
        assert_eq!(word(table, 4), 72);
        assert_eq!(table[6], 4, "version");
        assert_eq!(sum(table), 0);
        assert_eq!(word(table, 34), 2, "entry count");
        assert_eq!((dword(table, 28), word(table, 32)), (0, 0), "no OEM table");
        assert_eq!((word(table, 40), table[42]), (0, 0), "no extended table");
        let io_apic = &table[CONFIG_HEADER_SIZE + PROCESSOR_ENTRY_SIZE..];
        assert_eq!(io_apic[..4], [ENTRY_IO_APIC, 1, IO_APIC_VERSION, 1]);
        assert_eq!(dword(io_apic, 4), IO_APIC_ADDRESS);
    }

    #[test]
    fn xv6_finds_one_cpu_and_the_io_apic() {
        assert_eq!(
            recommended(7),
            Xv6::Found {
                cpus: vec![0],
                ioapic_id: 7,
                lapic: LOCAL_APIC_ADDRESS,
            }
        );
    }

    /// Without an EBDA segment xv6 scans the KiB below base memory's end, which is not the EBDA:
    /// with 639 KiB it scans 0x9F800, misses the pointer at 0x9FC00 and then misses 0xF0000.
    #[test]
    fn base_memory_word_alone_scans_the_kib_below_it() {
        let tables = mp_tables(0, CONFIG_TABLE_GPA).unwrap();
        let with_bda = |ebda_segment, base_kib| {
            let mut memory = recommended_memory(&tables);
            for word in bda_words(ebda_segment, base_kib).unwrap() {
                put(&mut memory, word.gpa, &word.bytes());
            }
            xv6_mpinit(&memory)
        };
        assert!(matches!(with_bda(0, 640), Xv6::Found { .. }));
        assert_eq!(with_bda(0, BASE_MEMORY_KIB), Xv6::NotSmp);
        assert!(matches!(
            with_bda(EBDA_SEGMENT, BASE_MEMORY_KIB),
            Xv6::Found { .. }
        ));
    }

    #[test]
    fn recommended_placement_is_clear_of_xv6s_writes() {
        let table = CONFIG_TABLE_GPA..CONFIG_TABLE_GPA + CONFIG_TABLE_SIZE as u32;
        assert_eq!(
            FLOATING_POINTER_GPA + FLOATING_POINTER_SIZE as u32,
            table.start
        );
        assert!(table.end <= EBDA_ADDRESS + 1024, "inside the scanned KiB");
        assert!(FLOATING_POINTER_GPA >= AP_TRAMPOLINE.end && table.end <= LOW_MEMORY_END);
        assert_eq!(EBDA_ADDRESS, u32::from(BASE_MEMORY_KIB) * 1024);
    }

    /// Appendix B, "Both BDA words zero": triple fault.
    #[test]
    fn appendix_b_both_bda_words_zero_is_refused() {
        assert_eq!(bda_words(0, 0), Err(MpTableError::BothBdaWordsZero));
        assert!(bda_words(EBDA_SEGMENT, 0).is_ok() && bda_words(0, 1).is_ok());
        let tables = mp_tables(0, CONFIG_TABLE_GPA).unwrap();
        let mut memory = recommended_memory(&tables);
        put(&mut memory, BDA_EBDA_SEGMENT, &[0, 0]);
        put(&mut memory, BDA_BASE_MEMORY_KIB, &[0, 0]);
        assert_eq!(xv6_mpinit(&memory), Xv6::TripleFault, "the mimic agrees");
    }

    /// Appendix B, "Unknown MP entry type": hang. Only types 0 and 2 appear, each once.
    #[test]
    fn appendix_b_only_entry_types_xv6_steps_over() {
        let tables = mp_tables(3, CONFIG_TABLE_GPA).unwrap();
        let table = &tables.config_table;
        let types = [
            table[CONFIG_HEADER_SIZE],
            table[CONFIG_HEADER_SIZE + PROCESSOR_ENTRY_SIZE],
        ];
        assert_eq!(types, [ENTRY_PROCESSOR, ENTRY_IO_APIC]);
        assert!(matches!(recommended(3), Xv6::Found { .. }));
        // The mimic does hang on another type, checksum kept right.
        let mut bad = table.clone();
        bad[CONFIG_HEADER_SIZE + PROCESSOR_ENTRY_SIZE] = 5;
        bad[7] = 0;
        bad[7] = checksum(&bad);
        let mut memory = recommended_memory(&tables);
        put(&mut memory, CONFIG_TABLE_GPA, &bad);
        assert_eq!(xv6_mpinit(&memory), Xv6::Hang);
    }

    /// Appendix B, "APIC ID ≠ 0": "unknown apicid" panic. The only processor is APIC ID 0, enabled
    /// and the bootstrap processor.
    #[test]
    fn appendix_b_the_one_cpu_has_apic_id_0() {
        let Xv6::Found { cpus, .. } = recommended(0) else {
            panic!("not found");
        };
        assert_eq!(cpus, [BSP_APIC_ID]);
        assert_eq!(BSP_APIC_ID, 0);
        let entry = &mp_tables(0, CONFIG_TABLE_GPA).unwrap().config_table[CONFIG_HEADER_SIZE..];
        assert_eq!(entry[..4], [ENTRY_PROCESSOR, 0, LOCAL_APIC_VERSION, 0x03]);
    }

    /// Appendix B, "LAPIC base outside 0xFE000000+": not mapped by xv6's page tables.
    #[test]
    fn appendix_b_lapic_base_is_in_devspace() {
        let Xv6::Found { lapic, .. } = recommended(0) else {
            panic!("not found");
        };
        assert_eq!(lapic, 0xFEE0_0000);
        assert!(lapic >= 0xFE00_0000 && IO_APIC_ADDRESS >= 0xFE00_0000);
    }

    #[test]
    fn placements_xv6_would_lose_are_refused() {
        let size = CONFIG_TABLE_SIZE as u32;
        assert_eq!(mp_tables(0, 0), Err(MpTableError::NullTable));
        assert_eq!(
            mp_tables(0, LOW_MEMORY_END - size + 1),
            Err(MpTableError::AboveLowMemory {
                table: LOW_MEMORY_END - size + 1..LOW_MEMORY_END + 1
            })
        );
        assert!(matches!(
            mp_tables(0, u32::MAX),
            Err(MpTableError::AboveLowMemory { .. })
        ));
        assert_eq!(
            mp_tables(0, AP_TRAMPOLINE.start - size + 1),
            Err(MpTableError::Overlaps {
                table: AP_TRAMPOLINE.start - size + 1..AP_TRAMPOLINE.start + 1,
                reserved: AP_TRAMPOLINE,
            })
        );
        assert!(mp_tables(0, AP_TRAMPOLINE.start - size).is_ok());
        assert!(mp_tables(0, AP_TRAMPOLINE.end).is_ok());
        assert!(matches!(
            mp_tables(0, 0x410),
            Err(MpTableError::Overlaps { reserved, .. }) if reserved == BDA
        ));
        assert!(mp_tables(0, LOW_MEMORY_END - size).is_ok());
        let message = MpTableError::BothBdaWordsZero.to_string();
        assert!(message.contains("both 0"), "{message}");
    }

    proptest! {
        /// Any accepted placement and I/O APIC ID gives checksummed tables xv6 parses to one CPU
        /// with APIC ID 0 and that I/O APIC; a refused placement breaks one of the rules.
        #[test]
        fn every_accepted_placement_parses(ioapic_id in any::<u8>(), table_gpa in any::<u32>()) {
            let table_gpa = if table_gpa & 1 == 0 { table_gpa % LOW_MEMORY_END } else { table_gpa };
            let table = table_gpa..table_gpa.saturating_add(CONFIG_TABLE_SIZE as u32);
            let overlaps = |reserved: Range<u32>| {
                table.start < reserved.end && reserved.start < table.end
            };
            let pointer = FLOATING_POINTER_GPA..CONFIG_TABLE_GPA;
            match mp_tables(ioapic_id, table_gpa) {
                Err(_) => prop_assert!(
                    table_gpa == 0
                        || table.end > LOW_MEMORY_END
                        || overlaps(BDA)
                        || overlaps(AP_TRAMPOLINE)
                ),
                Ok(tables) => {
                    prop_assert_eq!(sum(&tables.floating_pointer), 0);
                    prop_assert_eq!(sum(&tables.config_table), 0);
                    prop_assume!(!overlaps(pointer));
                    let mut memory = recommended_memory(&tables);
                    memory[CONFIG_TABLE_GPA as usize..][..CONFIG_TABLE_SIZE].fill(0);
                    put(&mut memory, table_gpa, &tables.config_table);
                    prop_assert_eq!(
                        xv6_mpinit(&memory),
                        Xv6::Found { cpus: vec![0], ioapic_id, lapic: LOCAL_APIC_ADDRESS }
                    );
                }
            }
        }
    }
}
