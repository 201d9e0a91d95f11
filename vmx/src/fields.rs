//! VMCS field encodings, typed by field width.
//!
//! Reference: Intel SDM, Order Number 325462-083US, March 2024: Appendix B "Field Encoding in
//! VMCS", and 26.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields". Names are the SDM's field
//! names in upper snake case. 64-bit fields are listed by their "full" encoding (bit 0 = 0):
//! Carousel runs in 64-bit mode, where one VMREAD/VMWRITE moves all 64 bits.
//!
//! An encoding carries its width in bits 14:13 (0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 =
//! natural width); the types below make `vmread32(GUEST_CR0)` a compile error instead of a
//! VMfailValid at run time.

macro_rules! field_types {
    ($($(#[$doc:meta])* $name:ident = $width:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(u32);

        impl $name {
            /// Value of encoding bits 14:13 for fields of this width.
            pub const WIDTH: u32 = $width;

            /// The encoding handed to VMREAD / VMWRITE.
            pub const fn encoding(self) -> u32 {
                self.0
            }
        }
    )*};
}

field_types! {
    /// Encoding of a 16-bit VMCS field.
    Field16 = 0;
    /// Encoding of a 64-bit VMCS field (full access).
    Field64 = 1;
    /// Encoding of a 32-bit VMCS field.
    Field32 = 2;
    /// Encoding of a natural-width VMCS field (64 bits on Carousel's hosts).
    FieldNatural = 3;
}

/// Declares the fields of one width, and the list of all of them with their names.
macro_rules! fields {
    ($ty:ident, $all:ident; $($(#[$doc:meta])* $name:ident = $encoding:literal;)*) => {
        $($(#[$doc])* pub const $name: $ty = $ty($encoding);)*

        const $all: &[(&str, $ty)] = &[$((stringify!($name), $name)),*];
    };
}

/// The name of the field with `encoding` (as listed here, in the SDM's words), or `None` for an
/// encoding this module does not list.
pub fn name(encoding: u32) -> Option<&'static str> {
    fn find<F: Copy>(
        all: &[(&'static str, F)],
        encoding: u32,
        of: impl Fn(F) -> u32,
    ) -> Option<&'static str> {
        all.iter()
            .find(|&&(_, field)| of(field) == encoding)
            .map(|&(name, _)| name)
    }
    // Bits 14:13 give the width, and so the list.
    match (encoding >> 13) & 3 {
        Field16::WIDTH => find(ALL_16, encoding, Field16::encoding),
        Field64::WIDTH => find(ALL_64, encoding, Field64::encoding),
        Field32::WIDTH => find(ALL_32, encoding, Field32::encoding),
        _ => find(ALL_NATURAL, encoding, FieldNatural::encoding),
    }
}

fields! { Field16, ALL_16;
    /// Virtual-processor identifier (VPID); tags this VM's TLB entries.
    VIRTUAL_PROCESSOR_ID = 0x0000;
    /// Posted-interrupt notification vector.
    POSTED_INTERRUPT_NOTIFICATION_VECTOR = 0x0002;
    /// EPTP index (EPT-violation #VE).
    EPTP_INDEX = 0x0004;
    /// Guest ES selector.
    GUEST_ES_SELECTOR = 0x0800;
    /// Guest CS selector.
    GUEST_CS_SELECTOR = 0x0802;
    /// Guest SS selector.
    GUEST_SS_SELECTOR = 0x0804;
    /// Guest DS selector.
    GUEST_DS_SELECTOR = 0x0806;
    /// Guest FS selector.
    GUEST_FS_SELECTOR = 0x0808;
    /// Guest GS selector.
    GUEST_GS_SELECTOR = 0x080A;
    /// Guest LDTR selector.
    GUEST_LDTR_SELECTOR = 0x080C;
    /// Guest TR selector.
    GUEST_TR_SELECTOR = 0x080E;
    /// Guest interrupt status (virtual-interrupt delivery).
    GUEST_INTERRUPT_STATUS = 0x0810;
    /// PML index.
    PML_INDEX = 0x0812;
    /// Host ES selector.
    HOST_ES_SELECTOR = 0x0C00;
    /// Host CS selector.
    HOST_CS_SELECTOR = 0x0C02;
    /// Host SS selector.
    HOST_SS_SELECTOR = 0x0C04;
    /// Host DS selector.
    HOST_DS_SELECTOR = 0x0C06;
    /// Host FS selector.
    HOST_FS_SELECTOR = 0x0C08;
    /// Host GS selector.
    HOST_GS_SELECTOR = 0x0C0A;
    /// Host TR selector.
    HOST_TR_SELECTOR = 0x0C0C;
}

fields! { Field64, ALL_64;
    /// Address of I/O bitmap A (ports 0x0000-0x7FFF).
    IO_BITMAP_A = 0x2000;
    /// Address of I/O bitmap B (ports 0x8000-0xFFFF).
    IO_BITMAP_B = 0x2002;
    /// Address of the MSR bitmaps.
    MSR_BITMAP = 0x2004;
    /// VM-exit MSR-store address.
    VM_EXIT_MSR_STORE_ADDRESS = 0x2006;
    /// VM-exit MSR-load address.
    VM_EXIT_MSR_LOAD_ADDRESS = 0x2008;
    /// VM-entry MSR-load address.
    VM_ENTRY_MSR_LOAD_ADDRESS = 0x200A;
    /// Executive-VMCS pointer (dual-monitor treatment of SMM).
    EXECUTIVE_VMCS_POINTER = 0x200C;
    /// PML address.
    PML_ADDRESS = 0x200E;
    /// TSC offset.
    TSC_OFFSET = 0x2010;
    /// Virtual-APIC address.
    VIRTUAL_APIC_ADDRESS = 0x2012;
    /// APIC-access address.
    APIC_ACCESS_ADDRESS = 0x2014;
    /// Posted-interrupt descriptor address.
    POSTED_INTERRUPT_DESCRIPTOR_ADDRESS = 0x2016;
    /// VM-function controls.
    VM_FUNCTION_CONTROLS = 0x2018;
    /// EPT pointer (EPTP).
    EPT_POINTER = 0x201A;
    /// EOI-exit bitmap 0 (vectors 0-63).
    EOI_EXIT_BITMAP_0 = 0x201C;
    /// EOI-exit bitmap 1 (vectors 64-127).
    EOI_EXIT_BITMAP_1 = 0x201E;
    /// EOI-exit bitmap 2 (vectors 128-191).
    EOI_EXIT_BITMAP_2 = 0x2020;
    /// EOI-exit bitmap 3 (vectors 192-255).
    EOI_EXIT_BITMAP_3 = 0x2022;
    /// EPTP-list address.
    EPTP_LIST_ADDRESS = 0x2024;
    /// VMREAD-bitmap address (VMCS shadowing).
    VMREAD_BITMAP_ADDRESS = 0x2026;
    /// VMWRITE-bitmap address (VMCS shadowing).
    VMWRITE_BITMAP_ADDRESS = 0x2028;
    /// XSS-exiting bitmap.
    XSS_EXITING_BITMAP = 0x202C;
    /// TSC multiplier.
    TSC_MULTIPLIER = 0x2032;
    /// Guest-physical address of an EPT violation or misconfiguration (read-only).
    GUEST_PHYSICAL_ADDRESS = 0x2400;
    /// VMCS link pointer; must be all ones unless VMCS shadowing is used.
    VMCS_LINK_POINTER = 0x2800;
    /// Guest IA32_DEBUGCTL.
    GUEST_IA32_DEBUGCTL = 0x2802;
    /// Guest IA32_PAT.
    GUEST_IA32_PAT = 0x2804;
    /// Guest IA32_EFER.
    GUEST_IA32_EFER = 0x2806;
    /// Guest IA32_PERF_GLOBAL_CTRL.
    GUEST_IA32_PERF_GLOBAL_CTRL = 0x2808;
    /// Guest PDPTE0 (PAE paging with EPT).
    GUEST_PDPTE0 = 0x280A;
    /// Guest PDPTE1.
    GUEST_PDPTE1 = 0x280C;
    /// Guest PDPTE2.
    GUEST_PDPTE2 = 0x280E;
    /// Guest PDPTE3.
    GUEST_PDPTE3 = 0x2810;
    /// Guest IA32_BNDCFGS.
    GUEST_IA32_BNDCFGS = 0x2812;
    /// Host IA32_PAT.
    HOST_IA32_PAT = 0x2C00;
    /// Host IA32_EFER.
    HOST_IA32_EFER = 0x2C02;
    /// Host IA32_PERF_GLOBAL_CTRL.
    HOST_IA32_PERF_GLOBAL_CTRL = 0x2C04;
}

fields! { Field32, ALL_32;
    /// Pin-based VM-execution controls.
    PIN_BASED_VM_EXECUTION_CONTROLS = 0x4000;
    /// Primary processor-based VM-execution controls.
    PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS = 0x4002;
    /// Exception bitmap: bit n set makes exception n exit.
    EXCEPTION_BITMAP = 0x4004;
    /// Page-fault error-code mask.
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006;
    /// Page-fault error-code match.
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008;
    /// CR3-target count.
    CR3_TARGET_COUNT = 0x400A;
    /// Primary VM-exit controls.
    VM_EXIT_CONTROLS = 0x400C;
    /// VM-exit MSR-store count.
    VM_EXIT_MSR_STORE_COUNT = 0x400E;
    /// VM-exit MSR-load count.
    VM_EXIT_MSR_LOAD_COUNT = 0x4010;
    /// VM-entry controls.
    VM_ENTRY_CONTROLS = 0x4012;
    /// VM-entry MSR-load count.
    VM_ENTRY_MSR_LOAD_COUNT = 0x4014;
    /// VM-entry interruption-information field (event injection).
    VM_ENTRY_INTERRUPTION_INFORMATION = 0x4016;
    /// VM-entry exception error code.
    VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018;
    /// VM-entry instruction length (software interrupts and exceptions).
    VM_ENTRY_INSTRUCTION_LENGTH = 0x401A;
    /// TPR threshold.
    TPR_THRESHOLD = 0x401C;
    /// Secondary processor-based VM-execution controls.
    SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS = 0x401E;
    /// PLE_Gap (PAUSE-loop exiting).
    PLE_GAP = 0x4020;
    /// PLE_Window (PAUSE-loop exiting).
    PLE_WINDOW = 0x4022;
    /// VM-instruction error (read-only).
    VM_INSTRUCTION_ERROR = 0x4400;
    /// Exit reason (read-only).
    VM_EXIT_REASON = 0x4402;
    /// VM-exit interruption information (read-only).
    VM_EXIT_INTERRUPTION_INFORMATION = 0x4404;
    /// VM-exit interruption error code (read-only).
    VM_EXIT_INTERRUPTION_ERROR_CODE = 0x4406;
    /// IDT-vectoring information (read-only).
    IDT_VECTORING_INFORMATION = 0x4408;
    /// IDT-vectoring error code (read-only).
    IDT_VECTORING_ERROR_CODE = 0x440A;
    /// VM-exit instruction length (read-only).
    VM_EXIT_INSTRUCTION_LENGTH = 0x440C;
    /// VM-exit instruction information (read-only).
    VM_EXIT_INSTRUCTION_INFORMATION = 0x440E;
    /// Guest ES limit.
    GUEST_ES_LIMIT = 0x4800;
    /// Guest CS limit.
    GUEST_CS_LIMIT = 0x4802;
    /// Guest SS limit.
    GUEST_SS_LIMIT = 0x4804;
    /// Guest DS limit.
    GUEST_DS_LIMIT = 0x4806;
    /// Guest FS limit.
    GUEST_FS_LIMIT = 0x4808;
    /// Guest GS limit.
    GUEST_GS_LIMIT = 0x480A;
    /// Guest LDTR limit.
    GUEST_LDTR_LIMIT = 0x480C;
    /// Guest TR limit.
    GUEST_TR_LIMIT = 0x480E;
    /// Guest GDTR limit.
    GUEST_GDTR_LIMIT = 0x4810;
    /// Guest IDTR limit.
    GUEST_IDTR_LIMIT = 0x4812;
    /// Guest ES access rights.
    GUEST_ES_ACCESS_RIGHTS = 0x4814;
    /// Guest CS access rights.
    GUEST_CS_ACCESS_RIGHTS = 0x4816;
    /// Guest SS access rights.
    GUEST_SS_ACCESS_RIGHTS = 0x4818;
    /// Guest DS access rights.
    GUEST_DS_ACCESS_RIGHTS = 0x481A;
    /// Guest FS access rights.
    GUEST_FS_ACCESS_RIGHTS = 0x481C;
    /// Guest GS access rights.
    GUEST_GS_ACCESS_RIGHTS = 0x481E;
    /// Guest LDTR access rights.
    GUEST_LDTR_ACCESS_RIGHTS = 0x4820;
    /// Guest TR access rights.
    GUEST_TR_ACCESS_RIGHTS = 0x4822;
    /// Guest interruptibility state (blocking by STI / MOV SS / SMI / NMI).
    GUEST_INTERRUPTIBILITY_STATE = 0x4824;
    /// Guest activity state (0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI).
    GUEST_ACTIVITY_STATE = 0x4826;
    /// Guest SMBASE.
    GUEST_SMBASE = 0x4828;
    /// Guest IA32_SYSENTER_CS.
    GUEST_IA32_SYSENTER_CS = 0x482A;
    /// VMX-preemption timer value.
    VMX_PREEMPTION_TIMER_VALUE = 0x482E;
    /// Host IA32_SYSENTER_CS.
    HOST_IA32_SYSENTER_CS = 0x4C00;
}

fields! { FieldNatural, ALL_NATURAL;
    /// CR0 guest/host mask: set bits are owned by the host.
    CR0_GUEST_HOST_MASK = 0x6000;
    /// CR4 guest/host mask: set bits are owned by the host.
    CR4_GUEST_HOST_MASK = 0x6002;
    /// CR0 read shadow: what the guest reads in host-owned CR0 bits.
    CR0_READ_SHADOW = 0x6004;
    /// CR4 read shadow: what the guest reads in host-owned CR4 bits.
    CR4_READ_SHADOW = 0x6006;
    /// CR3-target value 0.
    CR3_TARGET_VALUE0 = 0x6008;
    /// CR3-target value 1.
    CR3_TARGET_VALUE1 = 0x600A;
    /// CR3-target value 2.
    CR3_TARGET_VALUE2 = 0x600C;
    /// CR3-target value 3.
    CR3_TARGET_VALUE3 = 0x600E;
    /// Exit qualification (read-only).
    EXIT_QUALIFICATION = 0x6400;
    /// I/O RCX (SMI after an I/O instruction; read-only).
    IO_RCX = 0x6402;
    /// I/O RSI (read-only).
    IO_RSI = 0x6404;
    /// I/O RDI (read-only).
    IO_RDI = 0x6406;
    /// I/O RIP (read-only).
    IO_RIP = 0x6408;
    /// Guest-linear address (read-only).
    GUEST_LINEAR_ADDRESS = 0x640A;
    /// Guest CR0.
    GUEST_CR0 = 0x6800;
    /// Guest CR3.
    GUEST_CR3 = 0x6802;
    /// Guest CR4.
    GUEST_CR4 = 0x6804;
    /// Guest ES base.
    GUEST_ES_BASE = 0x6806;
    /// Guest CS base.
    GUEST_CS_BASE = 0x6808;
    /// Guest SS base.
    GUEST_SS_BASE = 0x680A;
    /// Guest DS base.
    GUEST_DS_BASE = 0x680C;
    /// Guest FS base.
    GUEST_FS_BASE = 0x680E;
    /// Guest GS base.
    GUEST_GS_BASE = 0x6810;
    /// Guest LDTR base.
    GUEST_LDTR_BASE = 0x6812;
    /// Guest TR base.
    GUEST_TR_BASE = 0x6814;
    /// Guest GDTR base.
    GUEST_GDTR_BASE = 0x6816;
    /// Guest IDTR base.
    GUEST_IDTR_BASE = 0x6818;
    /// Guest DR7.
    GUEST_DR7 = 0x681A;
    /// Guest RSP.
    GUEST_RSP = 0x681C;
    /// Guest RIP.
    GUEST_RIP = 0x681E;
    /// Guest RFLAGS.
    GUEST_RFLAGS = 0x6820;
    /// Guest pending debug exceptions.
    GUEST_PENDING_DEBUG_EXCEPTIONS = 0x6822;
    /// Guest IA32_SYSENTER_ESP.
    GUEST_IA32_SYSENTER_ESP = 0x6824;
    /// Guest IA32_SYSENTER_EIP.
    GUEST_IA32_SYSENTER_EIP = 0x6826;
    /// Host CR0.
    HOST_CR0 = 0x6C00;
    /// Host CR3.
    HOST_CR3 = 0x6C02;
    /// Host CR4.
    HOST_CR4 = 0x6C04;
    /// Host FS base.
    HOST_FS_BASE = 0x6C06;
    /// Host GS base.
    HOST_GS_BASE = 0x6C08;
    /// Host TR base.
    HOST_TR_BASE = 0x6C0A;
    /// Host GDTR base.
    HOST_GDTR_BASE = 0x6C0C;
    /// Host IDTR base.
    HOST_IDTR_BASE = 0x6C0E;
    /// Host IA32_SYSENTER_ESP.
    HOST_IA32_SYSENTER_ESP = 0x6C10;
    /// Host IA32_SYSENTER_EIP.
    HOST_IA32_SYSENTER_EIP = 0x6C12;
    /// Host RSP: the stack pointer after a VM exit (written by [`crate::instructions::enter`]).
    HOST_RSP = 0x6C14;
    /// Host RIP: where a VM exit lands (written by [`crate::instructions::enter`]).
    HOST_RIP = 0x6C16;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn all() -> Vec<(&'static str, u32, u32)> {
        let mut all = Vec::new();
        all.extend(
            ALL_16
                .iter()
                .map(|(n, f)| (*n, f.encoding(), Field16::WIDTH)),
        );
        all.extend(
            ALL_64
                .iter()
                .map(|(n, f)| (*n, f.encoding(), Field64::WIDTH)),
        );
        all.extend(
            ALL_32
                .iter()
                .map(|(n, f)| (*n, f.encoding(), Field32::WIDTH)),
        );
        all.extend(
            ALL_NATURAL
                .iter()
                .map(|(n, f)| (*n, f.encoding(), FieldNatural::WIDTH)),
        );
        all
    }

    #[test]
    fn width_bits_match_the_type() {
        for (name, encoding, width) in all() {
            assert_eq!((encoding >> 13) & 3, width, "{name} = {encoding:#x}");
        }
    }

    /// 26.11.2: bit 0 is the access type (0 = full), bit 12 and bits 31:15 are reserved.
    #[test]
    fn encodings_are_full_access_and_reserved_bits_are_clear() {
        for (name, encoding, _) in all() {
            assert_eq!(encoding & 1, 0, "{name}");
            assert_eq!(encoding & !0x6fff, 0, "{name}");
        }
    }

    #[test]
    fn every_field_is_found_by_its_encoding() {
        for (field, encoding, _) in all() {
            assert_eq!(name(encoding), Some(field));
        }
        assert_eq!(name(GUEST_CR0.encoding()), Some("GUEST_CR0"));
        // Bit 0 set: the "high" access of a 64-bit field, which Carousel never uses.
        assert_eq!(name(EPT_POINTER.encoding() | 1), None);
    }

    #[test]
    fn encodings_are_distinct() {
        let all = all();
        let distinct: BTreeSet<u32> = all.iter().map(|(_, e, _)| *e).collect();
        assert_eq!(distinct.len(), all.len());
    }
}
