//! VM-exit decoding: the raw exit-information fields become one complete [`VmExit`].
//!
//! Reference: Intel SDM, Order Number 325462-083US, March 2024: 26.9 "VM-Exit Information
//! Fields" (26.9.1 "Basic VM-Exit Information", 26.9.2 "Information for VM Exits Due to Vectored
//! Events", 26.9.4 "Information for VM Exits Due to Instruction Execution"), 26.8.3 "VM-Entry
//! Controls for Event Injection", 29.2.1 "Basic VM-Exit Information" (the exit-qualification
//! tables) and Appendix C "VMX Basic Exit Reasons".
//!
//! [`decode`] is the boundary: the kernel fills a [`RawExit`] by VMREAD, and from then on the
//! run loop, the scheduler and the metrics only see [`VmExit`]. Decoding never panics; a field
//! holding an encoding the SDM leaves unused becomes [`VmExit::Other`] with the raw data.

use core::fmt;

use crate::addr::GuestPhysAddr;

macro_rules! basic_exit_reasons {
    ($($number:literal => $variant:ident, $name:literal;)*) => {
        /// Basic exit reason, bits 15:0 of the exit-reason field (Appendix C), with the SDM's
        /// names. Numbers the SDM does not use are kept as [`BasicExitReason::Unknown`].
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub enum BasicExitReason {
            $(#[doc = $name] $variant,)*
            /// A number Appendix C of the revision above does not assign.
            Unknown(u16),
        }

        impl BasicExitReason {
            /// Decodes a basic exit-reason number.
            pub const fn from_raw(raw: u16) -> Self {
                match raw {
                    $($number => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }

            /// The basic exit-reason number.
            pub const fn number(self) -> u16 {
                match self {
                    $(Self::$variant => $number,)*
                    Self::Unknown(other) => other,
                }
            }

            /// The SDM's name, if the number is assigned.
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$variant => Some($name),)*
                    Self::Unknown(_) => None,
                }
            }
        }
    };
}

basic_exit_reasons! {
    0 => ExceptionOrNmi, "Exception or non-maskable interrupt (NMI)";
    1 => ExternalInterrupt, "External interrupt";
    2 => TripleFault, "Triple fault";
    3 => InitSignal, "INIT signal";
    4 => StartupIpi, "Start-up IPI (SIPI)";
    5 => IoSmi, "I/O system-management interrupt (SMI)";
    6 => OtherSmi, "Other SMI";
    7 => InterruptWindow, "Interrupt window";
    8 => NmiWindow, "NMI window";
    9 => TaskSwitch, "Task switch";
    10 => Cpuid, "CPUID";
    11 => Getsec, "GETSEC";
    12 => Hlt, "HLT";
    13 => Invd, "INVD";
    14 => Invlpg, "INVLPG";
    15 => Rdpmc, "RDPMC";
    16 => Rdtsc, "RDTSC";
    17 => Rsm, "RSM";
    18 => Vmcall, "VMCALL";
    19 => Vmclear, "VMCLEAR";
    20 => Vmlaunch, "VMLAUNCH";
    21 => Vmptrld, "VMPTRLD";
    22 => Vmptrst, "VMPTRST";
    23 => Vmread, "VMREAD";
    24 => Vmresume, "VMRESUME";
    25 => Vmwrite, "VMWRITE";
    26 => Vmxoff, "VMXOFF";
    27 => Vmxon, "VMXON";
    28 => ControlRegisterAccesses, "Control-register accesses";
    29 => MovDr, "MOV DR";
    30 => IoInstruction, "I/O instruction";
    31 => Rdmsr, "RDMSR";
    32 => Wrmsr, "WRMSR";
    33 => EntryFailureInvalidGuestState, "VM-entry failure due to invalid guest state";
    34 => EntryFailureMsrLoading, "VM-entry failure due to MSR loading";
    36 => Mwait, "MWAIT";
    37 => MonitorTrapFlag, "Monitor trap flag";
    39 => Monitor, "MONITOR";
    40 => Pause, "PAUSE";
    41 => EntryFailureMachineCheck, "VM-entry failure due to machine-check event";
    43 => TprBelowThreshold, "TPR below threshold";
    44 => ApicAccess, "APIC access";
    45 => VirtualizedEoi, "Virtualized EOI";
    46 => GdtrIdtrAccess, "Access to GDTR or IDTR";
    47 => LdtrTrAccess, "Access to LDTR or TR";
    48 => EptViolation, "EPT violation";
    49 => EptMisconfiguration, "EPT misconfiguration";
    50 => Invept, "INVEPT";
    51 => Rdtscp, "RDTSCP";
    52 => PreemptionTimerExpired, "VMX-preemption timer expired";
    53 => Invvpid, "INVVPID";
    54 => Wbinvd, "WBINVD or WBNOINVD";
    55 => Xsetbv, "XSETBV";
    56 => ApicWrite, "APIC write";
    57 => Rdrand, "RDRAND";
    58 => Invpcid, "INVPCID";
    59 => Vmfunc, "VMFUNC";
    60 => Encls, "ENCLS";
    61 => Rdseed, "RDSEED";
    62 => PageModificationLogFull, "Page-modification log full";
    63 => Xsaves, "XSAVES";
    64 => Xrstors, "XRSTORS";
    65 => Pconfig, "PCONFIG";
    66 => SppRelatedEvent, "SPP-related event";
    67 => Umwait, "UMWAIT";
    68 => Tpause, "TPAUSE";
    69 => Loadiwkey, "LOADIWKEY";
    70 => Enclv, "ENCLV";
    72 => EnqcmdPasidTranslationFailure, "ENQCMD PASID translation failure";
    73 => EnqcmdsPasidTranslationFailure, "ENQCMDS PASID translation failure";
    74 => BusLock, "Bus lock";
    75 => InstructionTimeout, "Instruction timeout";
    76 => Seamcall, "SEAMCALL";
    77 => Tdcall, "TDCALL";
}

impl From<u16> for BasicExitReason {
    fn from(raw: u16) -> Self {
        Self::from_raw(raw)
    }
}

impl fmt::Display for BasicExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (exit reason {})", self.number()),
            None => write!(f, "unknown (exit reason {})", self.number()),
        }
    }
}

/// The 32-bit exit-reason field (26.9.1, table "Format of Exit Reason").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExitReason {
    /// Bits 15:0.
    pub basic: BasicExitReason,
    /// Bit 27: the exit was incident to enclave mode.
    pub enclave_mode: bool,
    /// Bit 28: a monitor-trap-flag VM exit is pending.
    pub pending_mtf: bool,
    /// Bit 29: the exit came from VMX root operation (SMM monitor only).
    pub from_vmx_root: bool,
    /// Bit 31: VM-entry failure; the guest never ran.
    pub entry_failure: bool,
}

impl ExitReason {
    /// Splits the raw exit-reason field.
    pub const fn from_raw(raw: u32) -> Self {
        Self {
            basic: BasicExitReason::from_raw(raw as u16),
            enclave_mode: raw & (1 << 27) != 0,
            pending_mtf: raw & (1 << 28) != 0,
            from_vmx_root: raw & (1 << 29) != 0,
            entry_failure: raw & (1 << 31) != 0,
        }
    }
}

/// Interruption type, bits 10:8 of the interruption-information fields.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InterruptionType {
    /// 0: external interrupt.
    ExternalInterrupt,
    /// 2: non-maskable interrupt.
    Nmi,
    /// 3: hardware exception (#PF, #GP, ...).
    HardwareException,
    /// 4: software interrupt (INT n); injection only.
    SoftwareInterrupt,
    /// 5: privileged software exception (INT1).
    PrivilegedSoftwareException,
    /// 6: software exception (INT3, INTO).
    SoftwareException,
    /// 7: other event (pending MTF on injection).
    OtherEvent,
}

/// The VM-exit interruption-information field (26.9.2) and, in the same layout, the
/// IDT-vectoring information field (26.9.3) and the VM-entry interruption-information field used
/// to inject an event (26.8.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct InterruptionInfo {
    /// Bits 7:0.
    pub vector: u8,
    /// Bits 10:8.
    pub kind: InterruptionType,
    /// Bit 11: an error code is delivered (and, on exit, stored in the error-code field).
    pub error_code_valid: bool,
}

impl InterruptionInfo {
    /// Bit 31: the field is valid.
    const VALID: u32 = 1 << 31;

    /// Decodes a valid field; `None` when bit 31 is clear or the type is the unused 1.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        use InterruptionType::*;
        if raw & Self::VALID == 0 {
            return None;
        }
        let kind = match (raw >> 8) & 7 {
            0 => ExternalInterrupt,
            2 => Nmi,
            3 => HardwareException,
            4 => SoftwareInterrupt,
            5 => PrivilegedSoftwareException,
            6 => SoftwareException,
            7 => OtherEvent,
            _ => return None,
        };
        Some(Self {
            vector: raw as u8,
            kind,
            error_code_valid: raw & (1 << 11) != 0,
        })
    }

    /// The raw field with the valid bit set, for `VM_ENTRY_INTERRUPTION_INFORMATION`.
    pub const fn to_raw(self) -> u32 {
        let kind = match self.kind {
            InterruptionType::ExternalInterrupt => 0,
            InterruptionType::Nmi => 2,
            InterruptionType::HardwareException => 3,
            InterruptionType::SoftwareInterrupt => 4,
            InterruptionType::PrivilegedSoftwareException => 5,
            InterruptionType::SoftwareException => 6,
            InterruptionType::OtherEvent => 7,
        };
        Self::VALID | (self.error_code_valid as u32) << 11 | kind << 8 | self.vector as u32
    }
}

/// Direction of an I/O instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// IN / INS: the guest reads the port.
    In,
    /// OUT / OUTS: the guest writes the port.
    Out,
}

/// Exit qualification for I/O instructions (29.2.1, table "Exit Qualification for I/O
/// Instructions").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IoQualification {
    /// Bytes per access: 1, 2 or 4 (bits 2:0 hold size - 1).
    pub size: u8,
    /// Bit 3 (1 = IN).
    pub direction: Direction,
    /// Bit 4: INS / OUTS.
    pub string: bool,
    /// Bit 5: REP prefixed.
    pub rep: bool,
    /// Bit 6: the port is an immediate operand (else DX).
    pub immediate: bool,
    /// Bits 31:16.
    pub port: u16,
}

impl IoQualification {
    /// Decodes the qualification; `None` for the unused size encodings.
    pub const fn from_raw(qualification: u64) -> Option<Self> {
        let size = match qualification & 7 {
            0 => 1,
            1 => 2,
            3 => 4,
            _ => return None,
        };
        Some(Self {
            size,
            direction: if qualification & (1 << 3) != 0 {
                Direction::In
            } else {
                Direction::Out
            },
            string: qualification & (1 << 4) != 0,
            rep: qualification & (1 << 5) != 0,
            immediate: qualification & (1 << 6) != 0,
            port: (qualification >> 16) as u16,
        })
    }
}

/// Exit qualification for EPT violations (29.2.1, table "Exit Qualification for EPT
/// Violations").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EptViolationQualification {
    /// Bit 0: the access was a data read.
    pub read: bool,
    /// Bit 1: the access was a data write.
    pub write: bool,
    /// Bit 2: the access was an instruction fetch.
    pub fetch: bool,
    /// Bit 3: the translation allowed reads.
    pub readable: bool,
    /// Bit 4: the translation allowed writes.
    pub writable: bool,
    /// Bit 5: the translation allowed (supervisor) execution.
    pub executable: bool,
    /// Bit 7: the guest-linear address field is valid.
    pub guest_linear_valid: bool,
    /// Bit 8 (when bit 7 is set): the access was to the translation of the linear address, not
    /// to a guest paging-structure entry.
    pub translated_access: bool,
    /// Bit 12: NMI unblocking due to IRET.
    pub nmi_unblocking: bool,
}

impl EptViolationQualification {
    /// Decodes the qualification (every bit pattern is defined or ignored).
    pub const fn from_raw(q: u64) -> Self {
        Self {
            read: q & (1 << 0) != 0,
            write: q & (1 << 1) != 0,
            fetch: q & (1 << 2) != 0,
            readable: q & (1 << 3) != 0,
            writable: q & (1 << 4) != 0,
            executable: q & (1 << 5) != 0,
            guest_linear_valid: q & (1 << 7) != 0,
            translated_access: q & (1 << 8) != 0,
            nmi_unblocking: q & (1 << 12) != 0,
        }
    }
}

/// What a control-register access did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CrAccess {
    /// MOV to CR from general-purpose register `gpr` (0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX,
    /// 4 = RSP, 5 = RBP, 6 = RSI, 7 = RDI, 8-15 = R8-R15).
    MovTo {
        /// Source register number.
        gpr: u8,
    },
    /// MOV from CR to general-purpose register `gpr` (numbered as for `MovTo`).
    MovFrom {
        /// Destination register number.
        gpr: u8,
    },
    /// CLTS.
    Clts,
    /// LMSW.
    Lmsw {
        /// The 16-bit source operand.
        source_data: u16,
        /// The operand was in memory (its linear address is in the guest-linear field).
        memory_operand: bool,
    },
}

/// Exit qualification for control-register accesses (29.2.1, table "Exit Qualification for
/// Control-Register Accesses").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CrAccessQualification {
    /// Bits 3:0: the control register (0 for CLTS and LMSW).
    pub cr: u8,
    /// Bits 5:4 with bits 6, 11:8 and 31:16.
    pub access: CrAccess,
}

impl CrAccessQualification {
    /// Decodes the qualification (all four access types are defined).
    pub const fn from_raw(q: u64) -> Self {
        let gpr = ((q >> 8) & 0xf) as u8;
        let access = match (q >> 4) & 3 {
            0 => CrAccess::MovTo { gpr },
            1 => CrAccess::MovFrom { gpr },
            2 => CrAccess::Clts,
            _ => CrAccess::Lmsw {
                source_data: (q >> 16) as u16,
                memory_operand: q & (1 << 6) != 0,
            },
        };
        Self {
            cr: (q & 0xf) as u8,
            access,
        }
    }
}

/// The exit-information fields, as the kernel reads them after an exit (plain data).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RawExit {
    /// `VM_EXIT_REASON`.
    pub reason: u32,
    /// `EXIT_QUALIFICATION`.
    pub qualification: u64,
    /// `GUEST_PHYSICAL_ADDRESS`.
    pub guest_physical: u64,
    /// `GUEST_LINEAR_ADDRESS`.
    pub guest_linear: u64,
    /// `VM_EXIT_INSTRUCTION_LENGTH`: how far to advance RIP past an emulated instruction.
    pub instruction_length: u32,
    /// `VM_EXIT_INSTRUCTION_INFORMATION` (for INS / OUTS, bits 9:7 give the address size;
    /// not decoded here).
    pub instruction_info: u32,
    /// `VM_EXIT_INTERRUPTION_INFORMATION`.
    pub interruption_info: u32,
    /// `VM_EXIT_INTERRUPTION_ERROR_CODE`.
    pub interruption_error_code: u32,
}

/// Why the guest stopped, fully decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmExit {
    /// IN, OUT, INS or OUTS to a port the I/O bitmaps trap.
    Io(IoQualification),
    /// CPUID.
    Cpuid,
    /// HLT.
    Hlt,
    /// VMCALL: a hypercall.
    Vmcall,
    /// RDMSR of an MSR the MSR bitmaps trap.
    Rdmsr,
    /// WRMSR of an MSR the MSR bitmaps trap.
    Wrmsr,
    /// MOV to/from a control register, CLTS or LMSW.
    ControlRegister(CrAccessQualification),
    /// A guest-physical access EPT did not allow (an unmapped page: MMIO).
    EptViolation {
        /// The guest-physical address accessed.
        gpa: GuestPhysAddr,
        /// The guest-linear address, when the qualification says it is valid.
        guest_linear: Option<u64>,
        /// What the access was and what EPT allowed.
        qualification: EptViolationQualification,
    },
    /// An EPT entry is malformed: a hypervisor bug.
    EptMisconfiguration {
        /// The guest-physical address whose walk met the bad entry.
        gpa: GuestPhysAddr,
    },
    /// The guest triple-faulted.
    TripleFault,
    /// An external interrupt arrived (with external-interrupt exiting).
    ExternalInterrupt,
    /// The guest can take an interrupt now (interrupt-window exiting).
    InterruptWindow,
    /// The VMX-preemption timer reached zero: the quantum is over.
    PreemptionTimer,
    /// An exception in the exception bitmap, or an NMI.
    Exception {
        /// The vector.
        vector: u8,
        /// Hardware exception, software exception, NMI, ...
        kind: InterruptionType,
        /// The error code, if the exception has one.
        error_code: Option<u32>,
    },
    /// VM entry failed (exit-reason bit 31): the guest never ran.
    EntryFailure {
        /// Invalid guest state, MSR loading or machine-check event.
        reason: BasicExitReason,
        /// For MSR loading, the failing entry's index (1-based); otherwise details.
        qualification: u64,
    },
    /// Any other exit, undecoded.
    Other {
        /// The basic exit reason.
        reason: BasicExitReason,
        /// The raw exit qualification.
        qualification: u64,
    },
}

impl VmExit {
    /// The basic exit reason this exit was decoded from (for per-reason exit counts).
    pub const fn basic_reason(&self) -> BasicExitReason {
        match self {
            Self::Io(_) => BasicExitReason::IoInstruction,
            Self::Cpuid => BasicExitReason::Cpuid,
            Self::Hlt => BasicExitReason::Hlt,
            Self::Vmcall => BasicExitReason::Vmcall,
            Self::Rdmsr => BasicExitReason::Rdmsr,
            Self::Wrmsr => BasicExitReason::Wrmsr,
            Self::ControlRegister(_) => BasicExitReason::ControlRegisterAccesses,
            Self::EptViolation { .. } => BasicExitReason::EptViolation,
            Self::EptMisconfiguration { .. } => BasicExitReason::EptMisconfiguration,
            Self::TripleFault => BasicExitReason::TripleFault,
            Self::ExternalInterrupt => BasicExitReason::ExternalInterrupt,
            Self::InterruptWindow => BasicExitReason::InterruptWindow,
            Self::PreemptionTimer => BasicExitReason::PreemptionTimerExpired,
            Self::Exception { .. } => BasicExitReason::ExceptionOrNmi,
            Self::EntryFailure { reason, .. } | Self::Other { reason, .. } => *reason,
        }
    }
}

/// Decodes the exit-information fields into a [`VmExit`]. Never panics.
pub fn decode(raw: &RawExit) -> VmExit {
    let reason = ExitReason::from_raw(raw.reason);
    let qualification = raw.qualification;
    let other = VmExit::Other {
        reason: reason.basic,
        qualification,
    };
    if reason.entry_failure {
        return VmExit::EntryFailure {
            reason: reason.basic,
            qualification,
        };
    }
    match reason.basic {
        BasicExitReason::ExceptionOrNmi => {
            match InterruptionInfo::from_raw(raw.interruption_info) {
                Some(info) if info.kind != InterruptionType::ExternalInterrupt => {
                    VmExit::Exception {
                        vector: info.vector,
                        kind: info.kind,
                        error_code: info.error_code_valid.then_some(raw.interruption_error_code),
                    }
                }
                _ => other,
            }
        }
        BasicExitReason::ExternalInterrupt => VmExit::ExternalInterrupt,
        BasicExitReason::TripleFault => VmExit::TripleFault,
        BasicExitReason::InterruptWindow => VmExit::InterruptWindow,
        BasicExitReason::Cpuid => VmExit::Cpuid,
        BasicExitReason::Hlt => VmExit::Hlt,
        BasicExitReason::Vmcall => VmExit::Vmcall,
        BasicExitReason::Rdmsr => VmExit::Rdmsr,
        BasicExitReason::Wrmsr => VmExit::Wrmsr,
        BasicExitReason::PreemptionTimerExpired => VmExit::PreemptionTimer,
        BasicExitReason::ControlRegisterAccesses => {
            VmExit::ControlRegister(CrAccessQualification::from_raw(qualification))
        }
        BasicExitReason::IoInstruction => match IoQualification::from_raw(qualification) {
            Some(io) => VmExit::Io(io),
            None => other,
        },
        BasicExitReason::EptViolation => {
            let qualification = EptViolationQualification::from_raw(qualification);
            VmExit::EptViolation {
                gpa: GuestPhysAddr(raw.guest_physical),
                guest_linear: qualification.guest_linear_valid.then_some(raw.guest_linear),
                qualification,
            }
        }
        BasicExitReason::EptMisconfiguration => VmExit::EptMisconfiguration {
            gpa: GuestPhysAddr(raw.guest_physical),
        },
        _ => other,
    }
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(q) => {
                let (verb, to) = match q.direction {
                    Direction::In => ("IN", "from"),
                    Direction::Out => ("OUT", "to"),
                };
                let kind = match (q.string, q.rep) {
                    (false, _) => "",
                    (true, false) => "S",
                    (true, true) => "S (REP)",
                };
                write!(
                    f,
                    "I/O instruction: {verb}{kind} {} byte(s) {to} port {:#x}",
                    q.size, q.port
                )
            }
            Self::Cpuid => f.write_str("CPUID"),
            Self::Hlt => f.write_str("HLT"),
            Self::Vmcall => f.write_str("VMCALL"),
            Self::Rdmsr => f.write_str("RDMSR"),
            Self::Wrmsr => f.write_str("WRMSR"),
            Self::ControlRegister(q) => {
                let cr = q.cr;
                match q.access {
                    CrAccess::MovTo { gpr } => write!(f, "MOV to CR{cr} from GPR {gpr}"),
                    CrAccess::MovFrom { gpr } => write!(f, "MOV from CR{cr} to GPR {gpr}"),
                    CrAccess::Clts => f.write_str("CLTS"),
                    CrAccess::Lmsw { source_data, .. } => write!(f, "LMSW {source_data:#x}"),
                }
            }
            Self::EptViolation {
                gpa,
                qualification: q,
                ..
            } => {
                let access = match (q.read, q.write, q.fetch) {
                    (_, true, _) => "write",
                    (_, _, true) => "instruction fetch",
                    (true, _, _) => "read",
                    _ => "access",
                };
                write!(f, "EPT violation: {access} at guest-physical {gpa}")
            }
            Self::EptMisconfiguration { gpa } => {
                write!(f, "EPT misconfiguration at guest-physical {gpa}")
            }
            Self::TripleFault => f.write_str("Triple fault"),
            Self::ExternalInterrupt => f.write_str("External interrupt"),
            Self::InterruptWindow => f.write_str("Interrupt window"),
            Self::PreemptionTimer => f.write_str("VMX-preemption timer expired"),
            Self::Exception {
                vector,
                kind,
                error_code,
            } => {
                write!(f, "Exception or NMI: vector {vector} ({kind:?})")?;
                match error_code {
                    Some(code) => write!(f, ", error code {code:#x}"),
                    None => Ok(()),
                }
            }
            Self::EntryFailure {
                reason,
                qualification,
            } => {
                write!(
                    f,
                    "VM-entry failure: {reason}, qualification {qualification:#x}"
                )
            }
            Self::Other {
                reason,
                qualification,
            } => {
                write!(f, "{reason}, qualification {qualification:#x}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// The inverse of [`IoQualification::from_raw`], for tests only.
    fn encode_io(q: &IoQualification) -> u64 {
        let size = match q.size {
            1 => 0,
            2 => 1,
            4 => 3,
            other => panic!("size {other}"),
        };
        size | u64::from(q.direction == Direction::In) << 3
            | u64::from(q.string) << 4
            | u64::from(q.rep) << 5
            | u64::from(q.immediate) << 6
            | u64::from(q.port) << 16
    }

    fn io_qualification() -> impl Strategy<Value = IoQualification> {
        (
            prop::sample::select(vec![1u8, 2, 4]),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<u16>(),
        )
            .prop_map(
                |(size, is_in, string, rep, immediate, port)| IoQualification {
                    size,
                    direction: if is_in { Direction::In } else { Direction::Out },
                    string,
                    rep,
                    immediate,
                    port,
                },
            )
    }

    fn raw_exit() -> impl Strategy<Value = RawExit> {
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<[u32; 4]>(),
        )
            .prop_map(
                |(reason, qualification, guest_physical, guest_linear, words)| RawExit {
                    reason,
                    qualification,
                    guest_physical,
                    guest_linear,
                    instruction_length: words[0],
                    instruction_info: words[1],
                    interruption_info: words[2],
                    interruption_error_code: words[3],
                },
            )
    }

    #[test]
    fn every_basic_number_maps_to_a_distinct_variant_and_back() {
        let unused = [35, 38, 42, 71];
        let mut seen = BTreeSet::new();
        for number in 0..=77u16 {
            let reason = BasicExitReason::from(number);
            assert_eq!(reason.number(), number);
            assert_eq!(
                reason.name().is_none(),
                unused.contains(&number),
                "{number}"
            );
            assert!(
                seen.insert(format!("{reason:?}")),
                "{number} repeats {reason:?}"
            );
        }
        assert_eq!(
            BasicExitReason::from_raw(48).to_string(),
            "EPT violation (exit reason 48)"
        );
        assert_eq!(
            BasicExitReason::from_raw(0xffff),
            BasicExitReason::Unknown(0xffff)
        );
    }

    #[test]
    fn decodes_the_exits_carousel_handles() {
        let exit = |reason, qualification| RawExit {
            reason,
            qualification,
            ..RawExit::default()
        };
        // OUT DX, AL to COM1.
        let out = decode(&exit(30, 0x03f8_0000));
        assert_eq!(
            out.to_string(),
            "I/O instruction: OUT 1 byte(s) to port 0x3f8"
        );
        // REP INSD from the IDE data port.
        assert_eq!(
            decode(&exit(30, 0x01f0_0000 | 0x3b)),
            VmExit::Io(IoQualification {
                size: 4,
                direction: Direction::In,
                string: true,
                rep: true,
                immediate: false,
                port: 0x1f0
            })
        );
        assert_eq!(decode(&exit(12, 0)), VmExit::Hlt);
        assert_eq!(decode(&exit(52, 0)), VmExit::PreemptionTimer);
        assert_eq!(
            decode(&exit(28, 0x0000_0300)),
            VmExit::ControlRegister(CrAccessQualification {
                cr: 0,
                access: CrAccess::MovTo { gpr: 3 }
            })
        );
        let lmsw = CrAccessQualification::from_raw(0x0001_0070);
        assert_eq!(
            lmsw.access,
            CrAccess::Lmsw {
                source_data: 1,
                memory_operand: true
            }
        );
        let ept = RawExit {
            guest_physical: 0xfee0_0020,
            guest_linear: 0xfee0_0020,
            ..exit(48, 0x182)
        };
        assert_eq!(ept.qualification, 0x182);
        let VmExit::EptViolation {
            gpa,
            guest_linear,
            qualification,
        } = decode(&ept)
        else {
            panic!("not an EPT violation");
        };
        assert_eq!(
            (gpa, guest_linear),
            (GuestPhysAddr(0xfee0_0020), Some(0xfee0_0020))
        );
        assert!(qualification.write && !qualification.readable && qualification.translated_access);
        assert_eq!(
            decode(&ept).to_string(),
            "EPT violation: write at guest-physical 0xfee00020"
        );
        // #GP(0) with the exception bitmap.
        let gp = RawExit {
            interruption_info: 0x8000_0b0d,
            ..exit(0, 0)
        };
        assert_eq!(
            decode(&gp),
            VmExit::Exception {
                vector: 13,
                kind: InterruptionType::HardwareException,
                error_code: Some(0)
            }
        );
        assert_eq!(
            decode(&exit(0x8000_0021, 0)),
            VmExit::EntryFailure {
                reason: BasicExitReason::EntryFailureInvalidGuestState,
                qualification: 0
            }
        );
        assert_eq!(
            decode(&exit(10 | (1 << 28), 0)),
            VmExit::Cpuid,
            "flag bits do not change the reason"
        );
        // An unused I/O size encoding is kept raw, not guessed.
        assert_eq!(
            decode(&exit(30, 2)),
            VmExit::Other {
                reason: BasicExitReason::IoInstruction,
                qualification: 2
            }
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(raw in raw_exit()) {
            let exit = decode(&raw);
            prop_assert!(!exit.to_string().is_empty());
            prop_assert_eq!(exit.basic_reason(), ExitReason::from_raw(raw.reason).basic);
        }

        #[test]
        fn io_qualification_round_trips(q in io_qualification()) {
            prop_assert_eq!(IoQualification::from_raw(encode_io(&q)), Some(q));
        }

        #[test]
        fn interruption_info_round_trips(raw: u32) {
            // Bits 30:12 are reserved (or NMI unblocking), which to_raw does not carry.
            if let Some(info) = InterruptionInfo::from_raw(raw) {
                prop_assert_eq!(info.to_raw(), raw & 0x8000_0fff);
                prop_assert_eq!(InterruptionInfo::from_raw(info.to_raw()), Some(info));
            }
        }
    }
}
