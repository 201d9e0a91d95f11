//! What the CPU's SVM offers (CPUID 8000_0001H and 8000_000AH), and whether Carousel can run on
//! it.
//!
//! Reference: APM 15.4 "Enabling SVM" (CPUID Fn8000_0001_ECX bit 2 (SVM), VM_CR.SVMDIS), CPUID
//! Fn8000_000A "SVM Revision and Feature Identification" (AMD's CPUID specification, publication
//! 25481).

use core::fmt;

/// CPUID 8000_0001H:ECX bit 2: SVM.
pub const CPUID_ECX_SVM: u32 = 1 << 2;

/// CPUID 8000_000AH:EDX feature bits.
pub mod edx {
    /// Nested paging.
    pub const NP: u32 = 1 << 0;
    /// nRIP saved on #VMEXIT.
    pub const NRIPS: u32 = 1 << 3;
    /// TLB_CONTROL can flush one ASID.
    pub const FLUSH_BY_ASID: u32 = 1 << 6;
    /// Decode assists: instruction bytes and MOV CRx registers in the VMCB.
    pub const DECODE_ASSISTS: u32 = 1 << 7;
    /// Virtual GIF.
    pub const VGIF: u32 = 1 << 16;
}

/// The CPU's SVM, as far as Carousel cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvmFeatures {
    /// SVM revision (8000_000AH:EAX bits 7:0).
    pub revision: u8,
    /// Number of ASIDs, the host's ASID 0 included (8000_000AH:EBX).
    pub asids: u32,
    pub nested_paging: bool,
    pub next_rip: bool,
    pub flush_by_asid: bool,
    pub decode_assists: bool,
    /// The raw 8000_000AH:EDX, for the log.
    pub edx: u32,
}

impl SvmFeatures {
    /// The features from CPUID 8000_000AH's EAX, EBX and EDX.
    pub const fn from_cpuid(eax: u32, ebx: u32, edx_bits: u32) -> Self {
        Self {
            revision: eax as u8,
            asids: ebx,
            nested_paging: edx_bits & edx::NP != 0,
            next_rip: edx_bits & edx::NRIPS != 0,
            flush_by_asid: edx_bits & edx::FLUSH_BY_ASID != 0,
            decode_assists: edx_bits & edx::DECODE_ASSISTS != 0,
            edx: edx_bits,
        }
    }
}

/// Why SVM cannot run Carousel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingSvm {
    /// CPUID 8000_0001H:ECX bit 2 (SVM) is clear.
    NotInCpuid,
    /// Firmware set VM_CR.SVMDIS.
    DisabledByFirmware,
    /// No nested paging (CPUID 8000_000AH:EDX bit 0 (NP)).
    NoNestedPaging,
    /// Fewer than two ASIDs: none for a guest.
    NoAsids,
}

impl fmt::Display for MissingSvm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotInCpuid => "SVM (CPUID.80000001H:ECX bit 2)",
            Self::DisabledByFirmware => "SVM enabled by firmware (VM_CR.SVMDIS is set)",
            Self::NoNestedPaging => "nested paging (CPUID.8000000AH:EDX bit 0)",
            Self::NoAsids => "an ASID for guests (CPUID.8000000AH:EBX < 2)",
        })
    }
}

/// Checks what SVM needs before EFER.SVME is set: the CPUID bit, VM_CR.SVMDIS, nested paging
/// and ASIDs.
pub fn check(cpuid_ext_ecx: u32, vm_cr: u64, features: &SvmFeatures) -> Result<(), MissingSvm> {
    if cpuid_ext_ecx & CPUID_ECX_SVM == 0 {
        return Err(MissingSvm::NotInCpuid);
    }
    if vm_cr & crate::VM_CR_SVMDIS != 0 {
        return Err(MissingSvm::DisabledByFirmware);
    }
    if !features.nested_paging {
        return Err(MissingSvm::NoNestedPaging);
    }
    if features.asids < 2 {
        return Err(MissingSvm::NoAsids);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_max_is_enough() {
        // `-cpu max` under TCG: revision 1, 16 ASIDs, EDX 0x10010001 (QEMU-SVM.md).
        let qemu = SvmFeatures::from_cpuid(1, 16, 0x1001_0001);
        assert!(qemu.nested_paging && !qemu.next_rip && !qemu.flush_by_asid);
        assert!(!qemu.decode_assists);
        assert_eq!((qemu.revision, qemu.asids), (1, 16));
        assert_eq!(check(CPUID_ECX_SVM, 0, &qemu), Ok(()));
    }

    #[test]
    fn each_missing_piece_is_named() {
        let good = SvmFeatures::from_cpuid(1, 16, edx::NP | edx::NRIPS);
        assert_eq!(check(0, 0, &good), Err(MissingSvm::NotInCpuid));
        assert_eq!(
            check(CPUID_ECX_SVM, crate::VM_CR_SVMDIS, &good),
            Err(MissingSvm::DisabledByFirmware)
        );
        let no_np = SvmFeatures::from_cpuid(1, 16, edx::NRIPS);
        assert_eq!(
            check(CPUID_ECX_SVM, 0, &no_np),
            Err(MissingSvm::NoNestedPaging)
        );
        let one = SvmFeatures::from_cpuid(1, 1, edx::NP);
        assert_eq!(check(CPUID_ECX_SVM, 0, &one), Err(MissingSvm::NoAsids));
        assert_eq!(
            MissingSvm::NotInCpuid.to_string(),
            "SVM (CPUID.80000001H:ECX bit 2)"
        );
    }
}
