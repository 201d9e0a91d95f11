//! Control registers and MSRs: MOV to CR0, CR3 and CR4 (the exits the guest/host masks and
//! CR3-load exiting cause), RDMSR and WRMSR.

use carousel_protocol::record::StopReason;

use super::{gpr_value, Context};
use crate::host::Host;
use crate::memory::Frames;
use crate::vcpu::{Event, Reg, Vcpu, VcpuError};

/// How an emulated control-register write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: move RIP past the instruction.
    Done,
    /// It raised an exception in the guest instead (RIP stays).
    Fault,
    /// Not emulated: the VM stops.
    Stop(StopReason),
}

/// CR4.VMXE: set in the hardware register while VMX runs, hidden from the guest.
pub const CR4_VMXE: u64 = 1 << 13;

/// MOV to CR`cr` from general-purpose register `gpr`.
///
/// - CR3: the new root, the guest's cached translations dropped (a real MOV to CR3 flushes
///   them), and the address-space clock moves on.
/// - CR0/CR4: the guest sees its own value; the backend gives the hardware the bits VMX fixes
///   (SDM 25.6.6 "Guest/Host Masks and Read Shadows for CR0 and CR4"). A CR4 value with a bit
///   this CPU cannot have raises #GP, as it would natively.
pub fn write<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    cr: u8,
    gpr: u8,
) -> Result<Outcome, VcpuError> {
    let vcpu = &mut cx.vm.vcpu;
    let value = gpr_value(vcpu, gpr)?;
    match cr {
        3 => {
            vcpu.write(Reg::Cr3, value)?;
            vcpu.flush_linear()?;
            cx.vm.spaces.load(value);
        }
        0 => vcpu.write(Reg::Cr0, value)?,
        4 => {
            if value & !cx.vm.cpu.cr4_allowed & !CR4_VMXE != 0 {
                vcpu.inject(Event::GENERAL_PROTECTION)?;
                return Ok(Outcome::Fault);
            }
            vcpu.write(Reg::Cr4, value)?;
        }
        cr => {
            let rip = vcpu.read(Reg::Rip)?;
            return Ok(Outcome::Stop(StopReason::UnhandledExit {
                reason: super::REASON_CONTROL_REGISTER,
                rip,
                qualification: u64::from(cr),
            }));
        }
    }
    Ok(Outcome::Done)
}

/// IA32_EFER.
pub const IA32_EFER: u32 = 0xC000_0080;

/// RDMSR/WRMSR. Only IA32_EFER is the guest's; any other MSR raises #GP in the guest, as on a
/// CPU without it. Returns false when #GP is due.
pub fn msr<V: Vcpu, F, H>(cx: &mut Context<'_, V, F, H>, write: bool) -> Result<bool, VcpuError> {
    /// EFER bits a guest may set: SCE (0), LME (8), NXE (11).
    const EFER_WRITABLE: u64 = (1 << 0) | (1 << 8) | (1 << 11);
    /// EFER.LMA (10): maintained by the CPU, read-only to software.
    const EFER_LMA: u64 = 1 << 10;
    let vcpu = &mut cx.vm.vcpu;
    if vcpu.registers().rcx as u32 != IA32_EFER {
        return Ok(false);
    }
    let current = vcpu.read(Reg::Efer)?;
    if write {
        let regs = vcpu.registers();
        let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
        if value & !(EFER_WRITABLE | EFER_LMA) != 0 {
            return Ok(false);
        }
        vcpu.write(Reg::Efer, (value & EFER_WRITABLE) | (current & EFER_LMA))?;
    } else {
        let regs = vcpu.registers();
        regs.rax = current & 0xFFFF_FFFF;
        regs.rdx = current >> 32;
    }
    Ok(true)
}
