//! Why a guest stopped, in one vendor-neutral enum: the typed boundary between the hardware and
//! the exit handlers. The VMX backend builds an [`Exit`] from the VM-exit information fields
//! with [`Exit::from_vmx`], the SVM backend from the VMCB's exit fields with [`Exit::from_svm`]
//! (both pure, host-tested); everything after it (handlers, run loop, metrics) sees only this
//! enum.

use carousel_svm::exit::SvmExit;
use carousel_vmx::exit::{self as vmx, CrAccess, RawExit, VmExit};

/// An I/O instruction that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    /// The port.
    pub port: u16,
    /// Bytes per access: 1, 2 or 4.
    pub size: u8,
    /// IN/INS (true) or OUT/OUTS.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefixed.
    pub rep: bool,
    /// Address size of a string instruction in bits (16, 32 or 64), or 0 when the hardware
    /// did not say (SVM under QEMU): the handler decodes the instruction's prefixes then.
    pub address_bits: u8,
    /// Guest-linear address of a string instruction's memory operand (ES:rDI or seg:rSI);
    /// meaningless while `address_bits` is 0.
    pub linear: u64,
}

/// A guest-physical access the VM's EPT did not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The guest-physical address accessed.
    pub gpa: u64,
    /// The access was a write.
    pub write: bool,
    /// The access was an instruction fetch.
    pub fetch: bool,
    /// The access was the guest's own page-table walk (a paging-structure entry), not the
    /// access the instruction asked for.
    pub paging_structure: bool,
    /// The hardware's own description (the VMX exit qualification), for reports.
    pub detail: u64,
}

/// One VM exit, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The slice timer fired.
    Timer,
    /// A host interrupt arrived while the guest ran (the host handles it).
    HostInterrupt,
    /// The guest can take an interrupt now.
    InterruptWindow,
    /// CPUID (`length` bytes).
    Cpuid { length: u8 },
    /// HLT.
    Hlt { length: u8 },
    /// The hypercall instruction (VMCALL).
    Hypercall { length: u8 },
    /// IN, OUT, INS or OUTS.
    Io { io: Io, length: u8 },
    /// RDMSR or WRMSR.
    Msr { write: bool, length: u8 },
    /// MOV to CR`cr` from general-purpose register `gpr`.
    CrWrite { cr: u8, gpr: u8, length: u8 },
    /// MOV from CR`cr` to general-purpose register `gpr`.
    CrRead { cr: u8, gpr: u8, length: u8 },
    /// CLTS.
    Clts { length: u8 },
    /// LMSW with this source operand.
    Lmsw { source: u16, length: u8 },
    /// XSETBV.
    Xsetbv { length: u8 },
    /// INVD.
    Invd { length: u8 },
    /// WBINVD.
    Wbinvd { length: u8 },
    /// A virtualization instruction the guest may not use (VMXON, VMREAD, INVEPT, ...): the
    /// hardware answers with #UD where VMX is not offered.
    VirtualizationInstruction { length: u8 },
    /// A control-register access SVM intercepted without decoding it (no decode assists under
    /// QEMU): MOV to or from CR`cr`, CLTS or LMSW; the handler decodes the instruction.
    ControlRegister { cr: u8, write: bool },
    /// The guest raised #UD (intercepted under SVM, where VMCALL, the guests' hypercall, is an
    /// invalid opcode): the handler looks at the instruction.
    InvalidOpcode,
    /// An access EPT did not allow.
    Fault(Fault),
    /// An EPT entry is malformed: a hypervisor bug.
    Misconfigured { gpa: u64 },
    /// The guest triple-faulted.
    TripleFault,
    /// VM entry failed: the guest never ran.
    EntryFailed { reason: u16, detail: u64 },
    /// Anything else (the basic reason number and the raw qualification).
    Other { reason: u16, detail: u64 },
}

impl Exit {
    /// Decodes the VMX exit-information fields (SDM 29.2 "Recording VM-Exit Information and
    /// Updating VM-Entry Control Fields").
    pub fn from_vmx(raw: &RawExit) -> Self {
        // The length is at most 15 for instruction exits (SDM 29.2.5 "Information for VM Exits
        // Due to Instruction Execution"); anything larger is clamped so it cannot skip far.
        let length = raw.instruction_length.min(15) as u8;
        match vmx::decode(raw) {
            VmExit::PreemptionTimer => Self::Timer,
            VmExit::ExternalInterrupt => Self::HostInterrupt,
            VmExit::InterruptWindow => Self::InterruptWindow,
            VmExit::Cpuid => Self::Cpuid { length },
            VmExit::Hlt => Self::Hlt { length },
            VmExit::Vmcall => Self::Hypercall { length },
            VmExit::Io(io) => Self::Io {
                io: Io {
                    port: io.port,
                    size: io.size,
                    input: io.direction == vmx::Direction::In,
                    string: io.string,
                    rep: io.rep,
                    // VM-exit instruction information bits 9:7: the address size (SDM
                    // 29.2.5, "Format of the VM-Exit Instruction-Information Field as Used
                    // for INS and OUTS").
                    address_bits: match (raw.instruction_info >> 7) & 7 {
                        0 => 16,
                        1 => 32,
                        _ => 64,
                    },
                    linear: raw.guest_linear,
                },
                length,
            },
            VmExit::Rdmsr => Self::Msr {
                write: false,
                length,
            },
            VmExit::Wrmsr => Self::Msr {
                write: true,
                length,
            },
            VmExit::ControlRegister(access) => match access.access {
                CrAccess::MovTo { gpr } => Self::CrWrite {
                    cr: access.cr,
                    gpr,
                    length,
                },
                CrAccess::MovFrom { gpr } => Self::CrRead {
                    cr: access.cr,
                    gpr,
                    length,
                },
                CrAccess::Clts => Self::Clts { length },
                CrAccess::Lmsw { source_data, .. } => Self::Lmsw {
                    source: source_data,
                    length,
                },
            },
            VmExit::EptViolation {
                gpa, qualification, ..
            } => Self::Fault(Fault {
                gpa: gpa.as_u64(),
                write: qualification.write,
                fetch: qualification.fetch,
                // Bit 8 clear with bit 7 set: the access was to a paging-structure entry
                // (SDM 29.2.1, "Exit Qualification for EPT Violations").
                paging_structure: qualification.guest_linear_valid
                    && !qualification.translated_access,
                detail: raw.qualification,
            }),
            VmExit::EptMisconfiguration { gpa } => Self::Misconfigured { gpa: gpa.as_u64() },
            VmExit::TripleFault => Self::TripleFault,
            VmExit::EntryFailure {
                reason,
                qualification,
            } => Self::EntryFailed {
                reason: reason.number(),
                detail: qualification,
            },
            VmExit::Other {
                reason,
                qualification,
            } => {
                use vmx::BasicExitReason as R;
                match reason {
                    R::Xsetbv => Self::Xsetbv { length },
                    R::Invd => Self::Invd { length },
                    R::Wbinvd => Self::Wbinvd { length },
                    R::Vmclear
                    | R::Vmlaunch
                    | R::Vmptrld
                    | R::Vmptrst
                    | R::Vmread
                    | R::Vmresume
                    | R::Vmwrite
                    | R::Vmxoff
                    | R::Vmxon
                    | R::Invept
                    | R::Invvpid
                    | R::Vmfunc => Self::VirtualizationInstruction { length },
                    other => Self::Other {
                        reason: other.number(),
                        detail: qualification,
                    },
                }
            }
            VmExit::Exception { .. } => Self::Other {
                reason: vmx::BasicExitReason::ExceptionOrNmi.number(),
                detail: raw.qualification,
            },
        }
    }

    /// Decodes an SVM #VMEXIT. SVM without NRIP saves no instruction length, so the exits
    /// Carousel intercepts carry the length of the one encoding each instruction has (CPUID
    /// `0F A2`, HLT `F4`, VMMCALL `0F 01 D9`, RDMSR/WRMSR `0F 32`/`0F 30`, INVD `0F 08`, WBINVD
    /// `0F 09`, XSETBV `0F 01 D1`); a guest that puts redundant prefixes on one only misleads
    /// itself. I/O has the next RIP in EXITINFO2. `rip` is the guest's RIP at the exit;
    /// `timer_expired` tells the host's slice timer (an INTR exit) from any other host
    /// interrupt. Returns the exit and the VMX basic exit-reason number its statistics count
    /// under.
    pub fn from_svm(exit: &SvmExit, rip: u64, timer_expired: bool) -> (Self, u16) {
        use vmx::BasicExitReason as R;
        let (exit, reason) = match *exit {
            SvmExit::Intr if timer_expired => (Self::Timer, R::PreemptionTimerExpired),
            SvmExit::Intr | SvmExit::Nmi => (Self::HostInterrupt, R::ExternalInterrupt),
            SvmExit::Vintr => (Self::InterruptWindow, R::InterruptWindow),
            SvmExit::Cpuid => (Self::Cpuid { length: 2 }, R::Cpuid),
            SvmExit::Hlt => (Self::Hlt { length: 1 }, R::Hlt),
            SvmExit::Vmmcall => (Self::Hypercall { length: 3 }, R::Vmcall),
            SvmExit::Io(io) => {
                let length = io.next_rip.wrapping_sub(rip).clamp(1, 15) as u8;
                let exit = Self::Io {
                    io: Io {
                        port: io.port,
                        size: io.size,
                        input: io.input,
                        string: io.string,
                        rep: io.rep,
                        address_bits: 0,
                        linear: 0,
                    },
                    length,
                };
                (exit, R::IoInstruction)
            }
            SvmExit::Msr { write } => (
                Self::Msr { write, length: 2 },
                if write { R::Wrmsr } else { R::Rdmsr },
            ),
            SvmExit::Xsetbv => (Self::Xsetbv { length: 3 }, R::Xsetbv),
            SvmExit::Invd => (Self::Invd { length: 2 }, R::Invd),
            SvmExit::Wbinvd => (Self::Wbinvd { length: 2 }, R::Wbinvd),
            SvmExit::Exception { vector: 6, .. } => (Self::InvalidOpcode, R::ExceptionOrNmi),
            SvmExit::SvmInstruction | SvmExit::Rdtscp => {
                (Self::VirtualizationInstruction { length: 3 }, R::Vmcall)
            }
            SvmExit::CrWrite { cr, .. } => (
                Self::ControlRegister { cr, write: true },
                R::ControlRegisterAccesses,
            ),
            SvmExit::CrRead { cr, .. } => (
                Self::ControlRegister { cr, write: false },
                R::ControlRegisterAccesses,
            ),
            SvmExit::Npf(fault) => (
                Self::Fault(Fault {
                    gpa: fault.gpa,
                    write: fault.write,
                    fetch: fault.fetch,
                    paging_structure: fault.page_walk,
                    detail: fault.info1,
                }),
                R::EptViolation,
            ),
            SvmExit::Shutdown => (Self::TripleFault, R::TripleFault),
            SvmExit::Invalid => (
                Self::EntryFailed {
                    reason: R::EntryFailureInvalidGuestState.number(),
                    detail: u64::from(carousel_svm::exit::code::INVALID),
                },
                R::EntryFailureInvalidGuestState,
            ),
            ref other => {
                let code = svm_code(other);
                (
                    Self::Other {
                        reason: SVM_REASON | (code as u16 & 0x0FFF),
                        detail: code,
                    },
                    R::ExceptionOrNmi,
                )
            }
        };
        (exit, reason.number())
    }

    /// The instruction's length, for exits caused by one instruction.
    pub fn length(&self) -> Option<u8> {
        match *self {
            Self::Cpuid { length }
            | Self::Hlt { length }
            | Self::Hypercall { length }
            | Self::Io { length, .. }
            | Self::Msr { length, .. }
            | Self::CrWrite { length, .. }
            | Self::CrRead { length, .. }
            | Self::Clts { length }
            | Self::Lmsw { length, .. }
            | Self::Xsetbv { length }
            | Self::Invd { length }
            | Self::Wbinvd { length }
            | Self::VirtualizationInstruction { length } => Some(length),
            _ => None,
        }
    }
}

/// Marks an [`Exit::Other`] reason as an SVM exit code (its low 12 bits), apart from the VMX
/// basic reasons (all below 0x100).
pub const SVM_REASON: u16 = 0x8000;

/// The SVM exit code of an exit [`Exit::from_svm`] has no variant for.
fn svm_code(exit: &SvmExit) -> u64 {
    use carousel_svm::exit::code;
    match *exit {
        SvmExit::Exception { vector, .. } => code::EXCEPTION_0 + u64::from(vector),
        SvmExit::Iret => code::IRET,
        SvmExit::TaskSwitch => code::TASK_SWITCH,
        SvmExit::Other { code } => code,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use carousel_svm::exit::{decode, RawExit as SvmRaw};

    use super::*;

    fn svm(code: u64, info1: u64, info2: u64) -> Exit {
        let raw = SvmRaw { code, info1, info2 };
        Exit::from_svm(&decode(&raw, false), 0x1000, false).0
    }

    #[test]
    fn svm_exits_carry_the_lengths_of_their_instructions() {
        assert_eq!(svm(0x72, 0, 0), Exit::Cpuid { length: 2 });
        assert_eq!(svm(0x78, 0, 0), Exit::Hlt { length: 1 });
        assert_eq!(svm(0x81, 0, 0), Exit::Hypercall { length: 3 });
        assert_eq!(
            svm(0x7C, 1, 0),
            Exit::Msr {
                write: true,
                length: 2
            }
        );
        assert_eq!(
            svm(0x7C, 0, 0),
            Exit::Msr {
                write: false,
                length: 2
            }
        );
        // `rep outsb` to 0x3F8 with a 0x67 prefix: three bytes, from EXITINFO2.
        let Exit::Io { io, length } = svm(0x7B, 0x3F8 << 16 | 1 << 4 | 1 << 3 | 1 << 2, 0x1003)
        else {
            panic!("not I/O");
        };
        assert_eq!(length, 3);
        assert!(io.string && io.rep && !io.input);
        assert_eq!(io.address_bits, 0, "the handler decodes the prefixes");
        // A next RIP behind RIP (a guest that wrapped) is clamped, never a huge skip.
        let Exit::Io { length, .. } = svm(0x7B, 0x60 << 16 | 1 << 4 | 1, 0x0FFF) else {
            panic!("not I/O");
        };
        assert_eq!(length, 15);
    }

    #[test]
    fn svm_control_register_exits_are_left_to_decode() {
        assert_eq!(
            svm(0x14, 0, 0),
            Exit::ControlRegister { cr: 4, write: true }
        );
        assert_eq!(
            svm(0x08, 0, 0),
            Exit::ControlRegister {
                cr: 8,
                write: false
            }
        );
    }

    #[test]
    fn svm_interrupts_faults_and_failures() {
        let intr = decode(
            &SvmRaw {
                code: 0x60,
                info1: 0,
                info2: 0,
            },
            false,
        );
        assert_eq!(Exit::from_svm(&intr, 0, true), (Exit::Timer, 52));
        assert_eq!(Exit::from_svm(&intr, 0, false), (Exit::HostInterrupt, 1));
        assert_eq!(svm(0x64, 0, 0), Exit::InterruptWindow);
        assert_eq!(svm(0x46, 0, 0), Exit::InvalidOpcode);
        assert_eq!(svm(0x7F, 0, 0), Exit::TripleFault);
        assert_eq!(
            svm(0x400, 0x1_0000_0007, 0xFEE0_0030),
            Exit::Fault(Fault {
                gpa: 0xFEE0_0030,
                write: true,
                fetch: false,
                paging_structure: false,
                detail: 0x1_0000_0007,
            })
        );
        let Exit::Fault(walk) = svm(0x400, 1 << 33 | 4, 0xFEE0_0000) else {
            panic!("not a fault");
        };
        assert!(walk.paging_structure);
        // VMEXIT_INVALID as QEMU writes it.
        assert!(matches!(svm(0xFFFF_FFFF, 0, 0), Exit::EntryFailed { .. }));
        assert!(matches!(svm(u64::MAX, 0, 0), Exit::EntryFailed { .. }));
        assert_eq!(
            svm(0x4E, 0, 0),
            Exit::Other {
                reason: SVM_REASON | 0x4E,
                detail: 0x4E
            },
            "an intercepted #PF no handler expects"
        );
    }

    fn raw(reason: u32, qualification: u64) -> RawExit {
        RawExit {
            reason,
            qualification,
            instruction_length: 2,
            ..RawExit::default()
        }
    }

    #[test]
    fn string_io_carries_its_address_size_and_linear_address() {
        // OUTSB with REP to port 0x3F8 (DX), address size 32 (bits 9:7 = 1).
        let mut exit = raw(30, 0x3F8 << 16 | 1 << 5 | 1 << 4);
        exit.instruction_info = 1 << 7;
        exit.guest_linear = 0x1234;
        let Exit::Io { io, length } = Exit::from_vmx(&exit) else {
            panic!("not an I/O exit");
        };
        assert_eq!(length, 2);
        assert_eq!(
            io,
            Io {
                port: 0x3F8,
                size: 1,
                input: false,
                string: true,
                rep: true,
                address_bits: 32,
                linear: 0x1234,
            }
        );
    }

    #[test]
    fn a_guest_page_walk_through_mmio_is_a_paging_structure_fault() {
        // Read, linear address valid (bit 7), bit 8 clear: an access to a paging-structure
        // entry.
        let mut exit = raw(48, 1 | 1 << 7);
        exit.guest_physical = 0xFEE0_0008;
        let Exit::Fault(fault) = Exit::from_vmx(&exit) else {
            panic!("not a fault");
        };
        assert!(fault.paging_structure);
        assert_eq!(fault.gpa, 0xFEE0_0008);
        // Bit 8 set: the access the instruction made.
        let exit = raw(48, 1 | 1 << 7 | 1 << 8);
        let Exit::Fault(fault) = Exit::from_vmx(&exit) else {
            panic!("not a fault");
        };
        assert!(!fault.paging_structure);
    }

    #[test]
    fn vmx_instructions_are_virtualization_instructions() {
        for reason in [19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53, 59] {
            assert_eq!(
                Exit::from_vmx(&raw(reason, 0)),
                Exit::VirtualizationInstruction { length: 2 },
                "reason {reason}"
            );
        }
    }

    #[test]
    fn xsetbv_invd_and_wbinvd_are_their_own_exits() {
        assert_eq!(Exit::from_vmx(&raw(55, 0)), Exit::Xsetbv { length: 2 });
        assert_eq!(Exit::from_vmx(&raw(13, 0)), Exit::Invd { length: 2 });
        assert_eq!(Exit::from_vmx(&raw(54, 0)), Exit::Wbinvd { length: 2 });
    }

    #[test]
    fn an_absurd_instruction_length_is_clamped() {
        let mut exit = raw(10, 0);
        exit.instruction_length = 0xFFFF;
        assert_eq!(Exit::from_vmx(&exit).length(), Some(15));
    }

    #[test]
    fn control_register_moves_name_the_register() {
        // MOV to CR4 from RBX (gpr 3).
        assert_eq!(
            Exit::from_vmx(&raw(28, 4 | 3 << 8)),
            Exit::CrWrite {
                cr: 4,
                gpr: 3,
                length: 2
            }
        );
        // MOV from CR8 to RAX.
        assert_eq!(
            Exit::from_vmx(&raw(28, 8 | 1 << 4)),
            Exit::CrRead {
                cr: 8,
                gpr: 0,
                length: 2
            }
        );
    }
}
