//! #VMEXIT decoding: EXITCODE, EXITINFO1 and EXITINFO2 become one complete [`SvmExit`].
//!
//! Reference: APM Appendix C "SVM Intercept Exit Codes", 15.6 "#VMEXIT", 15.10.2 "IN and OUT
//! Behavior" (Figure 15-2 "EXITINFO1 for IOIO Intercept"), 15.11 "MSR Intercepts", 15.25.6
//! "Nested versus Guest Page Faults, Fault Ordering", 15.33 "Decode Assists".
//!
//! [`decode`] never panics; a code Appendix C does not list becomes [`SvmExit::Other`].

/// Exit codes (Appendix C).
pub mod code {
    /// A read of CR0; CR`n` is this plus `n`.
    pub const CR0_READ: u64 = 0x00;
    /// A write of CR0; CR`n` is this plus `n`.
    pub const CR0_WRITE: u64 = 0x10;
    /// Exception vector 0; vector `n` is this plus `n`.
    pub const EXCEPTION_0: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const IRET: u64 = 0x74;
    pub const INVD: u64 = 0x76;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7A;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const TASK_SWITCH: u64 = 0x7D;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const RDTSCP: u64 = 0x87;
    pub const WBINVD: u64 = 0x89;
    pub const XSETBV: u64 = 0x8D;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID (-1): VMRUN refused the VMCB's state. Compared on its low 32 bits:
    /// QEMU writes it as 0x00000000_FFFFFFFF (QEMU-SVM.md).
    pub const INVALID: u32 = 0xFFFF_FFFF;
    /// VMEXIT_BUSY (-2).
    pub const BUSY: u32 = 0xFFFF_FFFE;
}

/// What #VMEXIT left in the control area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawExit {
    pub code: u64,
    pub info1: u64,
    pub info2: u64,
}

/// An IN, OUT, INS or OUTS the I/O permission map intercepted (Figure 15-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoExit {
    pub port: u16,
    /// Bytes per access: 1, 2 or 4.
    pub size: u8,
    /// IN or INS.
    pub input: bool,
    /// INS or OUTS.
    pub string: bool,
    /// REP prefixed.
    pub rep: bool,
    /// The address size, 16, 32 or 64, when the CPU reported one (bits 9:7). QEMU never does
    /// (QEMU-SVM.md): the instruction's prefixes and CS.D tell then.
    pub address_bits: Option<u8>,
    /// The instruction after this one (EXITINFO2), exact on every CPU.
    pub next_rip: u64,
}

/// A nested page fault: the guest-physical access the nested page table did not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedPageFault {
    /// The guest-physical address (EXITINFO2).
    pub gpa: u64,
    /// The entry was present (a protection fault, not a missing translation).
    pub present: bool,
    pub write: bool,
    /// An instruction fetch.
    pub fetch: bool,
    /// The fault happened while the CPU walked the guest's own page tables: `gpa` holds one of
    /// their entries (EXITINFO1 bit 33).
    pub page_walk: bool,
    /// EXITINFO1 as the CPU wrote it.
    pub info1: u64,
}

/// One #VMEXIT, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmExit {
    /// MOV from CR`cr`; `gpr` is the destination register when decode assists gave it.
    CrRead {
        cr: u8,
        gpr: Option<u8>,
    },
    /// MOV to CR`cr`; `gpr` is the source register when decode assists gave it.
    CrWrite {
        cr: u8,
        gpr: Option<u8>,
    },
    /// An intercepted exception.
    Exception {
        vector: u8,
        error_code: u32,
    },
    /// A physical maskable interrupt (the host's own LAPIC timer).
    Intr,
    /// A physical NMI.
    Nmi,
    /// The guest can take the virtual interrupt it was offered.
    Vintr,
    Cpuid,
    Hlt,
    Vmmcall,
    /// IRET (intercepted while an injected NMI's handler runs).
    Iret,
    Invd,
    Wbinvd,
    Xsetbv,
    Rdtscp,
    Io(IoExit),
    /// RDMSR (false) or WRMSR (true): EXITINFO1 is 0 or 1.
    Msr {
        write: bool,
    },
    Npf(NestedPageFault),
    /// The guest triple-faulted.
    Shutdown,
    TaskSwitch,
    /// VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT or INVLPGA: a guest must not use SVM itself.
    SvmInstruction,
    /// VMRUN refused the state in the VMCB: the guest never ran.
    Invalid,
    /// Anything else, with its code.
    Other {
        code: u64,
    },
}

/// Decodes a #VMEXIT. With `decode_assists` (CPUID 8000_000AH:EDX bit 7) EXITINFO1 of a MOV
/// CRx names its register (bit 63 valid, bits 3:0 the register; 15.33.1 "MOV CRx/DRx
/// Intercepts").
pub fn decode(raw: &RawExit, decode_assists: bool) -> SvmExit {
    let low = raw.code as u32;
    if low == code::INVALID {
        return SvmExit::Invalid;
    }
    let register = (decode_assists && raw.info1 & 1 << 63 != 0).then_some((raw.info1 & 0xF) as u8);
    match raw.code {
        c @ 0x00..=0x0F => SvmExit::CrRead {
            cr: c as u8,
            gpr: register,
        },
        c @ 0x10..=0x1F => SvmExit::CrWrite {
            cr: (c - code::CR0_WRITE) as u8,
            gpr: register,
        },
        c @ 0x40..=0x5F => SvmExit::Exception {
            vector: (c - code::EXCEPTION_0) as u8,
            error_code: raw.info1 as u32,
        },
        code::INTR => SvmExit::Intr,
        code::NMI => SvmExit::Nmi,
        code::VINTR => SvmExit::Vintr,
        code::CPUID => SvmExit::Cpuid,
        code::HLT => SvmExit::Hlt,
        code::VMMCALL => SvmExit::Vmmcall,
        code::IRET => SvmExit::Iret,
        code::INVD => SvmExit::Invd,
        code::WBINVD => SvmExit::Wbinvd,
        code::XSETBV => SvmExit::Xsetbv,
        code::RDTSCP => SvmExit::Rdtscp,
        code::IOIO => SvmExit::Io(io(raw)),
        code::MSR => SvmExit::Msr {
            write: raw.info1 & 1 != 0,
        },
        code::NPF => SvmExit::Npf(NestedPageFault {
            gpa: raw.info2,
            present: raw.info1 & 1 != 0,
            write: raw.info1 & 1 << 1 != 0,
            fetch: raw.info1 & 1 << 4 != 0,
            page_walk: raw.info1 & 1 << 33 != 0,
            info1: raw.info1,
        }),
        code::SHUTDOWN => SvmExit::Shutdown,
        code::TASK_SWITCH => SvmExit::TaskSwitch,
        code::VMRUN
        | code::VMLOAD
        | code::VMSAVE
        | code::STGI
        | code::CLGI
        | code::SKINIT
        | code::INVLPGA => SvmExit::SvmInstruction,
        other => SvmExit::Other { code: other },
    }
}

/// EXITINFO1 of an IOIO intercept (Figure 15-2).
fn io(raw: &RawExit) -> IoExit {
    let info = raw.info1;
    let size = match (info >> 4) & 0b111 {
        0b001 => 1,
        0b010 => 2,
        // SZ32, or (never written) several bits: the widest.
        _ => 4,
    };
    let address_bits = match (info >> 7) & 0b111 {
        0b001 => Some(16),
        0b010 => Some(32),
        0b100 => Some(64),
        _ => None,
    };
    IoExit {
        port: (info >> 16) as u16,
        size,
        input: info & 1 != 0,
        string: info & 1 << 2 != 0,
        rep: info & 1 << 3 != 0,
        address_bits,
        next_rip: raw.info2,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn raw(code: u64, info1: u64, info2: u64) -> RawExit {
        RawExit { code, info1, info2 }
    }

    #[test]
    fn vmexit_invalid_is_compared_on_its_low_32_bits() {
        assert_eq!(decode(&raw(u64::MAX, 0, 0), false), SvmExit::Invalid);
        assert_eq!(decode(&raw(0xFFFF_FFFF, 0, 0), false), SvmExit::Invalid);
        assert_eq!(
            decode(&raw(0xFFFF_FFFE, 0, 0), false),
            SvmExit::Other { code: 0xFFFF_FFFE }
        );
    }

    #[test]
    fn io_as_qemu_reports_it() {
        // `rep insl` from port 0x1F0: IN, STR, REP, SZ32, no address size (QEMU-SVM.md).
        let exit = decode(
            &raw(0x7B, 0x1F0 << 16 | 1 << 6 | 1 << 3 | 1 << 2 | 1, 0x1234),
            false,
        );
        assert_eq!(
            exit,
            SvmExit::Io(IoExit {
                port: 0x1F0,
                size: 4,
                input: true,
                string: true,
                rep: true,
                address_bits: None,
                next_rip: 0x1234,
            })
        );
        // `out dx, al` to 0x3F8, with A32 as real hardware sets it.
        let SvmExit::Io(out) = decode(&raw(0x7B, 0x3F8 << 16 | 1 << 8 | 1 << 4, 0x11), false)
        else {
            panic!("not I/O");
        };
        assert_eq!((out.port, out.size, out.input), (0x3F8, 1, false));
        assert_eq!(
            (out.string, out.rep, out.address_bits),
            (false, false, Some(32))
        );
        let SvmExit::Io(word) = decode(&raw(0x7B, 1 << 5 | 1 << 9, 0), false) else {
            panic!("not I/O");
        };
        assert_eq!((word.size, word.address_bits), (2, Some(64)));
    }

    #[test]
    fn nested_page_faults_as_qemu_reports_them() {
        let exit = |info1| {
            let SvmExit::Npf(fault) = decode(&raw(0x400, info1, 0xFEE0_00B0), false) else {
                panic!("not a #NPF");
            };
            fault
        };
        let read = exit(0x1_0000_0004);
        assert!(!read.present && !read.write && !read.fetch && !read.page_walk);
        assert_eq!(read.gpa, 0xFEE0_00B0);
        let write = exit(0x1_0000_0007);
        assert!(write.present && write.write && !write.fetch);
        let fetch = exit(0x1_0000_0015);
        assert!(fetch.present && fetch.fetch && !fetch.write);
        let walk = exit(0x2_0000_0006);
        assert!(walk.page_walk && walk.write);
    }

    #[test]
    fn control_registers_name_their_register_only_with_decode_assists() {
        let write_cr3 = raw(0x13, 1 << 63 | 5, 0);
        assert_eq!(
            decode(&write_cr3, true),
            SvmExit::CrWrite {
                cr: 3,
                gpr: Some(5)
            }
        );
        assert_eq!(
            decode(&write_cr3, false),
            SvmExit::CrWrite { cr: 3, gpr: None }
        );
        assert_eq!(
            decode(&raw(0x08, 0, 0), true),
            SvmExit::CrRead { cr: 8, gpr: None },
            "bit 63 clear: no register"
        );
    }

    #[test]
    fn instructions_and_events() {
        let cases = [
            (0x60, SvmExit::Intr),
            (0x61, SvmExit::Nmi),
            (0x64, SvmExit::Vintr),
            (0x72, SvmExit::Cpuid),
            (0x74, SvmExit::Iret),
            (0x76, SvmExit::Invd),
            (0x78, SvmExit::Hlt),
            (0x7F, SvmExit::Shutdown),
            (0x7D, SvmExit::TaskSwitch),
            (0x81, SvmExit::Vmmcall),
            (0x87, SvmExit::Rdtscp),
            (0x89, SvmExit::Wbinvd),
            (0x8D, SvmExit::Xsetbv),
            (
                0x4E,
                SvmExit::Exception {
                    vector: 14,
                    error_code: 0,
                },
            ),
            (0x401, SvmExit::Other { code: 0x401 }),
        ];
        for (code, exit) in cases {
            assert_eq!(decode(&raw(code, 0, 0), false), exit, "code {code:#x}");
        }
        for code in [0x80, 0x82, 0x83, 0x84, 0x85, 0x86, 0x7A] {
            assert_eq!(decode(&raw(code, 0, 0), false), SvmExit::SvmInstruction);
        }
        assert_eq!(
            decode(&raw(0x7C, 1, 0), false),
            SvmExit::Msr { write: true }
        );
        assert_eq!(
            decode(&raw(0x7C, 0, 0), false),
            SvmExit::Msr { write: false }
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(code: u64, info1: u64, info2: u64, assists: bool) {
            let _ = decode(&RawExit { code, info1, info2 }, assists);
        }
    }
}
