//! The vCPU seam: what the exit handlers and the run loop need from one virtual CPU, whatever
//! the hardware behind it. The VMX backend in the binary (`vmx_vcpu.rs`) implements [`Vcpu`] over
//! a VMCS; the host tests implement it with a fake (`testing::FakeVcpu`), as cloud-hypervisor's
//! mock VMM does for its instruction emulator.
//!
//! Everything a guest can influence is decided above this trait, in code the host tests reach:
//! the trait only moves values between the handlers and the hardware.

use core::fmt;

use carousel_vmx::ept::EptError;
use carousel_vmx::fail::VmxFailure;
pub use carousel_vmx::instructions::GuestRegisters;

use crate::exit::Exit;

/// A model-specific register the guest owns (the backend keeps each VM's own value and gives
/// the hardware that VM's value while it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Msr {
    /// IA32_KERNEL_GS_BASE (SWAPGS exchanges it with GS.base).
    KernelGsBase,
    /// IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK: SYSCALL's targets and flag mask.
    Star,
    Lstar,
    Cstar,
    Sfmask,
    /// IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP.
    SysenterCs,
    SysenterEsp,
    SysenterEip,
    /// IA32_FS_BASE and IA32_GS_BASE (the segments' bases).
    FsBase,
    GsBase,
}

impl Msr {
    /// The MSR with architectural number `number`, if the guest owns it.
    pub fn from_number(number: u32) -> Option<Self> {
        Some(match number {
            0xC000_0102 => Self::KernelGsBase,
            0xC000_0081 => Self::Star,
            0xC000_0082 => Self::Lstar,
            0xC000_0083 => Self::Cstar,
            0xC000_0084 => Self::Sfmask,
            0x174 => Self::SysenterCs,
            0x175 => Self::SysenterEsp,
            0x176 => Self::SysenterEip,
            0xC000_0100 => Self::FsBase,
            0xC000_0101 => Self::GsBase,
            _ => return None,
        })
    }

    /// True for MSRs that hold a linear address, which must be canonical (WRMSR of a
    /// non-canonical one raises #GP).
    pub fn is_address(self) -> bool {
        !matches!(self, Self::Star | Self::Sfmask | Self::SysenterCs)
    }
}

/// A piece of guest state the handlers read or write, named architecturally (the backend knows
/// where it lives: a VMCS field, a read shadow, the register file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reg {
    /// RIP.
    Rip,
    /// RSP (the register file leaves it to the hardware's guest-state area).
    Rsp,
    /// RFLAGS.
    Rflags,
    /// CR0 as the guest sees it (the backend adds the bits the hardware forces on writes).
    Cr0,
    /// CR3: the guest's page-table root. Writing it does not flush translations.
    Cr3,
    /// CR4 as the guest sees it (the backend adds the bits the hardware forces on writes).
    Cr4,
    /// IA32_EFER as the guest sees it (LMA included).
    Efer,
    /// XCR0, the guest's extended-feature mask (XSETBV).
    Xcr0,
    /// The base of CS (instruction fetches are CS-relative).
    CsBase,
    /// The base of a segment register (string I/O's memory operand is segment-relative).
    SegmentBase(Segment),
    /// The default operand size of the code being run: 16, 32 or 64. Read only.
    CodeBits,
    /// The current privilege level, 0 to 3. Read only.
    Cpl,
    /// Blocking by STI or MOV SS (1) or none (0); writing 0 ends it.
    InterruptShadow,
    /// NMIs are blocked (an NMI handler runs until its IRET): 1, else 0. Read only.
    NmiBlocked,
    /// A model-specific register the guest owns.
    Msr(Msr),
}

/// A segment register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

/// An event for the next entry to deliver through the guest's IDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An external interrupt with this vector (from the virtual LAPIC).
    Interrupt(u8),
    /// A hardware exception with this vector and, for those that push one, an error code.
    Exception { vector: u8, error_code: Option<u32> },
    /// A non-maskable interrupt (vector 2).
    Nmi,
}

/// Architectural exception vectors the handlers inject.
pub mod vector {
    /// #UD: invalid opcode.
    pub const INVALID_OPCODE: u8 = 6;
    /// #GP: general protection.
    pub const GENERAL_PROTECTION: u8 = 13;
}

impl Event {
    /// #GP(0).
    pub const GENERAL_PROTECTION: Self = Self::Exception {
        vector: vector::GENERAL_PROTECTION,
        error_code: Some(0),
    };
    /// #UD.
    pub const INVALID_OPCODE: Self = Self::Exception {
        vector: vector::INVALID_OPCODE,
        error_code: None,
    };
}

/// A hardware operation on the vCPU failed: a hypervisor fault, never the guest's doing. The VM
/// it happened to stops, reporting this error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuError {
    /// A VMX instruction failed: which one, on which VMCS field, and the VM-instruction error.
    Vmx(VmxFailure),
    /// The VM's EPT could not map the guest page at `gpa`.
    EptMapping { gpa: u64, error: EptError },
    /// A write to a register the vCPU only reads ([`Reg::CodeBits`], [`Reg::Cpl`], ...).
    ReadOnlyRegister(Reg),
}

impl fmt::Display for VcpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vmx(failure) => write!(f, "{failure}"),
            Self::EptMapping { gpa, error } => {
                write!(f, "EPT mapping of guest page {gpa:#x}: {error}")
            }
            Self::ReadOnlyRegister(reg) => write!(f, "read-only register {reg:?} written"),
        }
    }
}

impl From<VmxFailure> for VcpuError {
    fn from(failure: VmxFailure) -> Self {
        Self::Vmx(failure)
    }
}

/// How one stay in the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entered {
    /// Why the guest stopped.
    pub exit: Exit,
    /// The exit reason's number for the per-reason statistics (VMX basic exit reasons; another
    /// backend maps its own codes onto these).
    pub reason: u16,
    /// Cycles of the slice timer the guest used (the timer counts guest time only).
    pub timer_used: u64,
}

/// One virtual CPU.
pub trait Vcpu {
    /// The general-purpose registers (RSP apart: [`Reg::Rsp`]).
    fn registers(&mut self) -> &mut GuestRegisters;
    /// Reads guest state.
    fn read(&mut self, reg: Reg) -> Result<u64, VcpuError>;
    /// Writes guest state. Read-only registers ([`Reg::CodeBits`], [`Reg::Cpl`]) are an error.
    fn write(&mut self, reg: Reg, value: u64) -> Result<(), VcpuError>;
    /// Queues an event for the next entry, replacing any queued one.
    fn inject(&mut self, event: Event) -> Result<(), VcpuError>;
    /// True when an event is queued for the next entry (the hardware's or an injected one).
    fn event_queued(&mut self) -> Result<bool, VcpuError>;
    /// Asks for an exit as soon as the guest can take an interrupt (or stops asking).
    fn set_interrupt_window(&mut self, open: bool) -> Result<(), VcpuError>;
    /// Drops the guest's cached linear translations (a MOV to CR3 does this natively).
    fn flush_linear(&mut self) -> Result<(), VcpuError>;
    /// Drops cached guest-physical translations after a change to the VM's EPT.
    fn flush_physical(&mut self) -> Result<(), VcpuError>;
    /// Runs the guest until its next exit, with the slice timer armed for `timer` cycles of
    /// guest time. Before returning, an event whose delivery the exit interrupted is queued
    /// again for the next entry.
    fn enter(&mut self, timer: u64) -> Result<Entered, VcpuError>;
    /// The vCPU is about to run after another VM's: make it the hardware's current one and
    /// bring in the state the hardware does not switch by itself.
    fn switch_in(&mut self) -> Result<(), VcpuError>;
    /// Another VM's vCPU is about to run: save the state the hardware does not switch by
    /// itself.
    fn switch_out(&mut self) -> Result<(), VcpuError>;
    /// A line of the vCPU's state for the log at the end of a run (RIP, flags, blocking...).
    fn describe(&mut self) -> alloc::string::String;
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use carousel_vmx::fail::{VmFail, VmInstructionError, VmxInstruction};
    use carousel_vmx::fields;

    use super::*;

    #[test]
    fn errors_keep_their_facts_and_say_them() {
        let entry = VcpuError::from(VmxFailure::new(
            VmxInstruction::Vmlaunch,
            VmFail::Valid(VmInstructionError::from_raw(7)),
        ));
        assert_eq!(
            entry.to_string(),
            "VMLAUNCH: VMfailValid: VM-instruction error 7: VM entry with invalid control field(s)"
        );
        let write = VcpuError::from(VmxFailure::on_field(
            VmxInstruction::Vmwrite,
            fields::GUEST_CR0.encoding(),
            VmFail::Invalid,
        ));
        assert_eq!(
            write.to_string(),
            "VMWRITE GUEST_CR0: VMfailInvalid (no current VMCS or bad pointer)"
        );
        let mapping = VcpuError::EptMapping {
            gpa: 0x20_0000,
            error: EptError::OutOfFrames,
        };
        assert_eq!(
            mapping.to_string(),
            "EPT mapping of guest page 0x200000: out of frames for EPT tables"
        );
        assert_eq!(
            VcpuError::ReadOnlyRegister(Reg::Cpl).to_string(),
            "read-only register Cpl written"
        );
    }
}
