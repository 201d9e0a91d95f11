//! Control registers, MSRs and XCR0: MOV to CR0, CR3, CR4 and CR8 (the exits the guest/host
//! masks, CR3-load and CR8 exiting cause), MOV from CR8, RDMSR/WRMSR and XSETBV.
//!
//! Every write is checked the way the processor checks it, and what the processor answers with
//! #GP gets #GP here, with RIP on the instruction (SDM 325462-083US vol. 3A: 2.5 "Control
//! Registers", 4.1.1 "Four Paging Modes", 4.10.4.1 "Operations that Invalidate TLBs and
//! Paging-Structure Caches", 10.8.5 "Initializing IA-32e Mode"; vol. 1: 13.3 "Enabling the
//! XSAVE Feature Set and XSAVE-Enabled Features"; vol. 2 "MOV—Move to/from Control Registers",
//! "WRMSR", "XSETBV"). The checks themselves are pure functions over the values: [`check_cr0`],
//! [`check_cr3`], [`check_cr4`], [`check_efer`] and [`check_xcr0`].

use carousel_protocol::record::StopReason;

use super::{gpr_value, Context};
use crate::host::Host;
use crate::memory::Frames;
use crate::vcpu::{Event, Msr, Reg, Vcpu, VcpuError};

/// How an emulated write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: move RIP past the instruction.
    Done,
    /// It raised an exception in the guest instead (RIP stays).
    Fault,
    /// Not emulated: the VM stops.
    Stop(StopReason),
}

/// CR0 bits.
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
}

/// EFER bits.
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
}

/// CR4.VMXE, for the backends (set in the hardware register while VMX runs).
pub const CR4_VMXE: u64 = cr4::VMXE;

/// What the checks need to know of the vCPU's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
    /// Running 64-bit code (CS.L with EFER.LMA).
    pub long_code: bool,
    /// MAXPHYADDR: the CPU's physical-address width.
    pub physical_address_bits: u8,
}

/// A MOV to CR0 of `value`: the value to load, or None for #GP.
pub fn check_cr0(value: u64, mode: &Mode) -> Option<u64> {
    // Bits 63:32 are reserved (#GP when set); bits of 31:0 the processor does not define are
    // ignored.
    if value >> 32 != 0 {
        return None;
    }
    if value & cr0::PG != 0 && value & cr0::PE == 0 {
        return None;
    }
    if value & cr0::NW != 0 && value & cr0::CD == 0 {
        return None;
    }
    let paging_on = value & cr0::PG != 0 && mode.cr0 & cr0::PG == 0;
    let paging_off = value & cr0::PG == 0 && mode.cr0 & cr0::PG != 0;
    // Leaving paging from 64-bit code is #GP (long mode is left from compatibility mode).
    if paging_off && mode.long_code {
        return None;
    }
    // Entering long mode (EFER.LME set) needs CR4.PAE.
    if paging_on && mode.efer & efer::LME != 0 && mode.cr4 & cr4::PAE == 0 {
        return None;
    }
    Some(value)
}

/// A MOV to CR3 of `value`: the value to load and whether the TLB is flushed, or None for #GP.
/// With CR4.PCIDE, bit 63 asks for no flush and is not loaded.
pub fn check_cr3(value: u64, mode: &Mode) -> Option<(u64, bool)> {
    let long_mode = mode.efer & efer::LMA != 0;
    let (value, flush) = if mode.cr4 & cr4::PCIDE != 0 && value & 1 << 63 != 0 {
        (value & !(1 << 63), false)
    } else {
        (value, true)
    };
    if long_mode {
        // Bits 63:MAXPHYADDR are reserved in IA-32e mode.
        let bits = u32::from(mode.physical_address_bits.clamp(32, 52));
        if value >> bits != 0 {
            return None;
        }
        Some((value, flush))
    } else {
        // Outside IA-32e mode the register is 32 bits wide.
        Some((value & 0xFFFF_FFFF, flush))
    }
}

/// A MOV to CR4 of `value` on a CPU whose guests may set `allowed`: the value, or None for #GP.
pub fn check_cr4(value: u64, allowed: u64, mode: &Mode, cr3: u64) -> Option<u64> {
    if value & !allowed != 0 {
        return None;
    }
    let long_mode = mode.efer & efer::LMA != 0;
    // Clearing PAE in IA-32e mode is #GP.
    if long_mode && value & cr4::PAE == 0 {
        return None;
    }
    // PCIDE can be set only in IA-32e mode and with CR3[11:0] = 0.
    if value & cr4::PCIDE != 0 && mode.cr4 & cr4::PCIDE == 0 && (!long_mode || cr3 & 0xFFF != 0) {
        return None;
    }
    Some(value)
}

/// A WRMSR of IA32_EFER with `value`: the value to load (LMA kept as the processor keeps it),
/// or None for #GP.
pub fn check_efer(value: u64, mode: &Mode) -> Option<u64> {
    /// Bits a guest may set: SCE, LME, NXE.
    const WRITABLE: u64 = efer::SCE | efer::LME | efer::NXE;
    if value & !(WRITABLE | efer::LMA) != 0 {
        return None;
    }
    // Changing LME while paging is on is #GP.
    if mode.cr0 & cr0::PG != 0 && (value ^ mode.efer) & efer::LME != 0 {
        return None;
    }
    Some((value & WRITABLE) | (mode.efer & efer::LMA))
}

/// An XSETBV of `value` into XCR0 on a CPU that supports `supported`: the value, or None for
/// #GP. x87 must stay on, AVX needs SSE, and the AVX-512 components come together with AVX.
pub fn check_xcr0(value: u64, supported: u64) -> Option<u64> {
    const X87: u64 = 1;
    const SSE: u64 = 1 << 1;
    const AVX: u64 = 1 << 2;
    const AVX512: u64 = 0b111 << 5;
    if value & !supported != 0 || value & X87 == 0 {
        return None;
    }
    if value & AVX != 0 && value & SSE == 0 {
        return None;
    }
    let avx512 = value & AVX512;
    if avx512 != 0 && (avx512 != AVX512 || value & AVX == 0) {
        return None;
    }
    Some(value)
}

/// The vCPU's mode, for the checks.
fn mode<V: Vcpu, F, H>(cx: &mut Context<'_, V, F, H>) -> Result<Mode, VcpuError> {
    let vcpu = &mut cx.vm.vcpu;
    let efer = vcpu.read(Reg::Efer)?;
    Ok(Mode {
        cr0: vcpu.read(Reg::Cr0)?,
        cr4: vcpu.read(Reg::Cr4)?,
        efer,
        long_code: vcpu.read(Reg::CodeBits)? == 64,
        physical_address_bits: cx.vm.cpu.physical_address_bits,
    })
}

/// The value of general-purpose register `gpr` as a MOV to a control register reads it:
/// outside 64-bit code only its low 32 bits.
fn source<V: Vcpu, F, H>(
    cx: &mut Context<'_, V, F, H>,
    gpr: u8,
    mode: &Mode,
) -> Result<u64, VcpuError> {
    let value = gpr_value(&mut cx.vm.vcpu, gpr)?;
    Ok(if mode.long_code {
        value
    } else {
        value & 0xFFFF_FFFF
    })
}

/// Raises #GP(0): the instruction does not complete.
fn general_protection<V: Vcpu, F, H>(cx: &mut Context<'_, V, F, H>) -> Result<Outcome, VcpuError> {
    cx.vm.vcpu.inject(Event::GENERAL_PROTECTION)?;
    Ok(Outcome::Fault)
}

/// MOV to CR`cr` from general-purpose register `gpr`.
///
/// - CR0/CR4: the guest sees its own value; the backend gives the hardware the bits VMX fixes
///   (SDM 26.6.6 "Guest/Host Masks and Read Shadows for CR0 and CR4").
/// - CR3: the new root; the guest's cached translations go (unless PCIDE's bit 63 says not),
///   and the address-space clock moves on.
/// - CR8: the task priority, kept in the VM's local APIC (TPR = CR8 << 4).
pub fn write<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    cr: u8,
    gpr: u8,
) -> Result<Outcome, VcpuError> {
    let mode = mode(cx)?;
    let value = source(cx, gpr, &mode)?;
    match cr {
        0 => match check_cr0(value, &mode) {
            Some(value) => cx.vm.vcpu.write(Reg::Cr0, value)?,
            None => return general_protection(cx),
        },
        3 => match check_cr3(value, &mode) {
            Some((value, flush)) => {
                cx.vm.vcpu.write(Reg::Cr3, value)?;
                if flush {
                    cx.vm.vcpu.flush_linear()?;
                }
                cx.vm.spaces.load(value);
            }
            None => return general_protection(cx),
        },
        4 => {
            let cr3 = cx.vm.vcpu.read(Reg::Cr3)?;
            match check_cr4(value, cx.vm.cpu.cr4_allowed, &mode, cr3) {
                Some(value) => {
                    // Paging-mode bits change the translations a TLB may hold.
                    if (value ^ mode.cr4) & (cr4::PAE | cr4::PCIDE | 1 << 4 | 1 << 7) != 0 {
                        cx.vm.vcpu.flush_linear()?;
                    }
                    cx.vm.vcpu.write(Reg::Cr4, value)?;
                }
                None => return general_protection(cx),
            }
        }
        8 => {
            // Bits 63:4 are reserved.
            if value >> 4 != 0 {
                return general_protection(cx);
            }
            let now = cx.host.now();
            cx.vm
                .platform
                .lapic
                .write(carousel_devices::lapic::TPR, (value as u32) << 4, now);
        }
        cr => {
            let rip = cx.vm.vcpu.read(Reg::Rip)?;
            return Ok(Outcome::Stop(StopReason::UnhandledExit {
                reason: super::REASON_CONTROL_REGISTER,
                rip,
                qualification: u64::from(cr),
            }));
        }
    }
    Ok(Outcome::Done)
}

/// MOV from CR8 into general-purpose register `gpr` (the only control-register read that exits).
/// Returns false for a register it does not emulate.
pub fn read<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    cr: u8,
    gpr: u8,
) -> Result<bool, VcpuError> {
    if cr != 8 {
        return Ok(false);
    }
    let now = cx.host.now();
    let tpr = cx.vm.platform.lapic.read(carousel_devices::lapic::TPR, now);
    let value = u64::from(tpr >> 4);
    match crate::mmio::Gpr::ALL.get(usize::from(gpr)) {
        Some(crate::mmio::Gpr::Rsp) => cx.vm.vcpu.write(Reg::Rsp, value)?,
        Some(&register) => {
            let mut regs = super::EmulatedRegisters {
                regs: cx.vm.vcpu.registers(),
                rsp: 0,
            };
            crate::mmio::Registers::set(&mut regs, register, value);
        }
        None => return Ok(false),
    }
    Ok(true)
}

/// IA32_EFER.
pub const IA32_EFER: u32 = 0xC000_0080;

/// True when `value` is a canonical 48-bit linear address.
fn canonical(value: u64) -> bool {
    let top = value >> 47;
    top == 0 || top == (1 << 17) - 1
}

/// RDMSR/WRMSR. IA32_EFER and the MSRs a guest owns ([`Msr`]) are emulated; any other MSR
/// raises #GP in the guest, as on a CPU without it. Returns false when #GP is due.
pub fn msr<V: Vcpu, F, H>(cx: &mut Context<'_, V, F, H>, write: bool) -> Result<bool, VcpuError> {
    let number = cx.vm.vcpu.registers().rcx as u32;
    let reg = if number == IA32_EFER {
        Reg::Efer
    } else {
        match Msr::from_number(number) {
            Some(msr) => Reg::Msr(msr),
            None => return Ok(false),
        }
    };
    if write {
        let regs = cx.vm.vcpu.registers();
        let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
        let value = match reg {
            Reg::Efer => match check_efer(value, &mode(cx)?) {
                Some(value) => value,
                None => return Ok(false),
            },
            Reg::Msr(msr) if msr.is_address() && !canonical(value) => return Ok(false),
            Reg::Msr(Msr::SysenterCs) => value & 0xFFFF_FFFF,
            _ => value,
        };
        cx.vm.vcpu.write(reg, value)?;
    } else {
        let value = cx.vm.vcpu.read(reg)?;
        let regs = cx.vm.vcpu.registers();
        regs.rax = value & 0xFFFF_FFFF;
        regs.rdx = value >> 32;
    }
    Ok(true)
}

/// XSETBV: ECX = 0 (XCR0), EDX:EAX = the value. #UD without CR4.OSXSAVE, #GP at CPL > 0, for
/// another ECX or a value the CPU does not support. Returns false when the instruction raised
/// an exception (injected).
pub fn xsetbv<V: Vcpu, F, H>(cx: &mut Context<'_, V, F, H>) -> Result<bool, VcpuError> {
    if cx.vm.vcpu.read(Reg::Cr4)? & cr4::OSXSAVE == 0 {
        cx.vm.vcpu.inject(Event::INVALID_OPCODE)?;
        return Ok(false);
    }
    let regs = cx.vm.vcpu.registers();
    let (index, value) = (regs.rcx as u32, (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF));
    let checked = (index == 0)
        .then(|| check_xcr0(value, cx.vm.cpu.xcr0_supported))
        .flatten();
    match checked {
        Some(value) if cx.vm.vcpu.read(Reg::Cpl)? == 0 => {
            cx.vm.vcpu.write(Reg::Xcr0, value)?;
            Ok(true)
        }
        _ => {
            cx.vm.vcpu.inject(Event::GENERAL_PROTECTION)?;
            Ok(false)
        }
    }
}

/// A control-register instruction, decoded from its bytes (for SVM, which does not say which
/// register an intercepted MOV CR used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrInstruction {
    /// MOV CR`cr`, r`gpr`.
    Write { cr: u8, gpr: u8 },
    /// MOV r`gpr`, CR`cr`.
    Read { cr: u8, gpr: u8 },
    /// CLTS.
    Clts,
    /// LMSW from general-purpose register `gpr`.
    Lmsw { gpr: u8 },
}

/// Decodes the control-register instruction at the start of `bytes` (legacy prefixes, REX in
/// 64-bit code, then `0F 22` / `0F 20` / `0F 06` / `0F 01 /6` with a register operand), with
/// its length. LOCK MOV CR0 is AMD's alternative encoding of CR8. None for anything else (LMSW
/// from memory among them).
pub fn decode_cr_instruction(bytes: &[u8], code_bits: u8) -> Option<(CrInstruction, u8)> {
    let mut at = 0;
    let mut rex = 0u8;
    let mut lock = false;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            0x66 | 0x67 | 0xF2 | 0xF3 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 => rex = 0,
            0xF0 => {
                lock = true;
                rex = 0;
            }
            0x40..=0x4F if code_bits == 64 => rex = byte,
            _ => break,
        }
        at += 1;
        if at >= 15 {
            return None;
        }
    }
    if *bytes.get(at)? != 0x0F {
        return None;
    }
    let opcode = *bytes.get(at + 1)?;
    if opcode == 0x06 {
        return Some((CrInstruction::Clts, (at + 2) as u8));
    }
    let modrm = *bytes.get(at + 2)?;
    let reg = (modrm >> 3) & 7 | (rex & 0b100) << 1;
    let rm = modrm & 7 | (rex & 0b001) << 3;
    let length = (at + 3) as u8;
    let cr = if lock && reg == 0 { 8 } else { reg };
    match opcode {
        // MOV CR ignores the mod field: the operand is always a register.
        0x22 => Some((CrInstruction::Write { cr, gpr: rm }, length)),
        0x20 => Some((CrInstruction::Read { cr, gpr: rm }, length)),
        0x01 if modrm >> 6 == 3 && (modrm >> 3) & 7 == 6 => {
            Some((CrInstruction::Lmsw { gpr: rm }, length))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_register_instructions_decode() {
        // mov cr4, eax; mov cr3, ebx; mov eax, cr0 (32-bit code).
        assert_eq!(
            decode_cr_instruction(&[0x0F, 0x22, 0xE0], 32),
            Some((CrInstruction::Write { cr: 4, gpr: 0 }, 3))
        );
        assert_eq!(
            decode_cr_instruction(&[0x0F, 0x22, 0xDB, 0x90], 32),
            Some((CrInstruction::Write { cr: 3, gpr: 3 }, 3))
        );
        assert_eq!(
            decode_cr_instruction(&[0x0F, 0x20, 0xC0], 32),
            Some((CrInstruction::Read { cr: 0, gpr: 0 }, 3))
        );
        // mov cr8, r9 (REX.B) and mov r10, cr8 (REX.R for CR8, REX.B for r10) in 64-bit code.
        assert_eq!(
            decode_cr_instruction(&[0x41, 0x0F, 0x22, 0xC1], 64),
            Some((CrInstruction::Write { cr: 0, gpr: 9 }, 4))
        );
        assert_eq!(
            decode_cr_instruction(&[0x45, 0x0F, 0x20, 0xC2], 64),
            Some((CrInstruction::Read { cr: 8, gpr: 10 }, 4))
        );
        // LOCK MOV CR0: CR8 on AMD.
        assert_eq!(
            decode_cr_instruction(&[0xF0, 0x0F, 0x22, 0xC0], 32),
            Some((CrInstruction::Write { cr: 8, gpr: 0 }, 4))
        );
        assert_eq!(
            decode_cr_instruction(&[0x0F, 0x06], 32),
            Some((CrInstruction::Clts, 2))
        );
        // lmsw ax; lmsw [eax] is not decoded.
        assert_eq!(
            decode_cr_instruction(&[0x0F, 0x01, 0xF0], 32),
            Some((CrInstruction::Lmsw { gpr: 0 }, 3))
        );
        assert_eq!(decode_cr_instruction(&[0x0F, 0x01, 0x30], 32), None);
        // A REX byte in 32-bit code is INC: not a CR instruction.
        assert_eq!(decode_cr_instruction(&[0x41, 0x0F, 0x22, 0xC1], 32), None);
        assert_eq!(decode_cr_instruction(&[0x0F], 32), None);
        assert_eq!(decode_cr_instruction(&[0x66; 20], 32), None);
    }

    fn protected() -> Mode {
        Mode {
            cr0: cr0::PE,
            cr4: 0,
            efer: 0,
            long_code: false,
            physical_address_bits: 39,
        }
    }

    fn long() -> Mode {
        Mode {
            cr0: cr0::PE | cr0::PG,
            cr4: cr4::PAE,
            efer: efer::LME | efer::LMA,
            long_code: true,
            physical_address_bits: 39,
        }
    }

    #[test]
    fn cr0_writes_the_hardware_refuses() {
        let mode = protected();
        assert_eq!(check_cr0(cr0::PG, &mode), None, "PG without PE");
        assert_eq!(check_cr0(cr0::PE | 1 << 32, &mode), None, "bit 32");
        assert_eq!(check_cr0(cr0::PE | cr0::NW, &mode), None, "NW without CD");
        assert_eq!(
            check_cr0(cr0::PE | cr0::NW | cr0::CD, &mode),
            Some(cr0::PE | cr0::NW | cr0::CD)
        );
        assert_eq!(check_cr0(cr0::PE | cr0::PG, &mode), Some(cr0::PE | cr0::PG));
        // Leaving paging from 64-bit code.
        assert_eq!(check_cr0(cr0::PE, &long()), None);
        // Entering long mode without PAE.
        let lme = Mode {
            efer: efer::LME,
            ..protected()
        };
        assert_eq!(check_cr0(cr0::PE | cr0::PG, &lme), None);
    }

    #[test]
    fn cr3_reserved_bits_and_the_no_flush_hint() {
        let mode = long();
        assert_eq!(check_cr3(1 << 40, &mode), None, "beyond MAXPHYADDR");
        assert_eq!(
            check_cr3(1 << 63 | 0x1000, &mode),
            None,
            "bit 63 without PCIDE"
        );
        let pcide = Mode {
            cr4: cr4::PAE | cr4::PCIDE,
            ..long()
        };
        assert_eq!(check_cr3(1 << 63 | 0x1000, &pcide), Some((0x1000, false)));
        assert_eq!(check_cr3(0x1000, &pcide), Some((0x1000, true)));
        // 32-bit paging: the upper half is not there.
        assert_eq!(
            check_cr3(0xDEAD_0000_0000_1000, &protected()),
            Some((0x1000, true))
        );
    }

    #[test]
    fn cr4_writes_the_hardware_refuses() {
        let allowed = 0x3F_FFFF & !cr4::VMXE & !cr4::SMXE;
        assert_eq!(check_cr4(cr4::VMXE, allowed, &protected(), 0), None, "VMXE");
        assert_eq!(check_cr4(cr4::SMXE, allowed, &protected(), 0), None, "SMXE");
        assert_eq!(
            check_cr4(1 << 15, allowed & !(1 << 15), &protected(), 0),
            None
        );
        assert_eq!(
            check_cr4(0, allowed, &long(), 0),
            None,
            "PAE off in long mode"
        );
        assert_eq!(
            check_cr4(cr4::PAE | cr4::PCIDE, allowed, &long(), 0x1001),
            None,
            "PCIDE with CR3[11:0] set"
        );
        assert_eq!(
            check_cr4(cr4::PCIDE, allowed, &protected(), 0),
            None,
            "PCIDE outside long mode"
        );
        assert_eq!(
            check_cr4(cr4::PAE | cr4::PCIDE, allowed, &long(), 0x1000),
            Some(cr4::PAE | cr4::PCIDE)
        );
    }

    #[test]
    fn efer_changes_the_hardware_refuses() {
        let paging = Mode {
            cr0: cr0::PE | cr0::PG,
            ..protected()
        };
        assert_eq!(check_efer(efer::LME, &paging), None, "LME while paging");
        assert_eq!(check_efer(1 << 3, &protected()), None, "a reserved bit");
        assert_eq!(check_efer(efer::LME, &protected()), Some(efer::LME));
        // LMA stays what the processor says.
        assert_eq!(
            check_efer(efer::LME | efer::NXE, &long()),
            Some(efer::LME | efer::LMA | efer::NXE)
        );
    }

    #[test]
    fn xcr0_values_the_hardware_refuses() {
        let supported = 0b1110_0111;
        assert_eq!(check_xcr0(0, supported), None, "x87 off");
        assert_eq!(check_xcr0(0b101, supported), None, "AVX without SSE");
        assert_eq!(check_xcr0(0b0010_0111, supported), None, "part of AVX-512");
        assert_eq!(check_xcr0(0b1000, supported), None, "unsupported");
        assert_eq!(check_xcr0(0b111, supported), Some(0b111));
        assert_eq!(check_xcr0(0b1110_0111, supported), Some(0b1110_0111));
    }
}
