//! The VMX backend of the vCPU seam: [`VmxVcpu`] implements `carousel_kernel::vcpu::Vcpu` over a
//! VMCS. Every VMREAD and VMWRITE goes through a [`CurrentVmcs`] token, which only
//! [`Vmcs::current`] makes, after loading that VMCS if another was current.
//!
//! Reference: Intel SDM 325462-083US (March 2024), volume 3C: 26 "Virtual Machine Control
//! Structures", 28.6 "Event Injection", 29.2 "Recording VM-Exit Information and Updating VM-Entry
//! Control Fields".

use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use alloc::boxed::Box;

use carousel_kernel::exit::Exit;
use carousel_kernel::vcpu::{Entered, Event, GuestRegisters, Msr, Reg, Segment, Vcpu, VcpuError};
use carousel_kernel::vm::VcpuSetup;
use carousel_vmx::addr::HostPhysAddr;
use carousel_vmx::controls::{cycles_to_preemption_ticks, Negotiated, PrimaryProcessorBased};
use carousel_vmx::ept::EptPointer;
use carousel_vmx::exit::{InterruptionInfo, InterruptionType};
use carousel_vmx::fail::{VmFail, VmxFailure, VmxInstruction};
use carousel_vmx::fields::*;
use carousel_vmx::instructions as vmx;

use super::arch::{self, DebugRegisters, FxState, XState};
use super::vmm::{self, Vmx, CR0_NE};

/// The VMCS the CPU holds as current (its address; 0 when none).
static CURRENT: AtomicU64 = AtomicU64::new(0);

/// A VMCS region, owned by one vCPU.
#[derive(Debug)]
pub struct Vmcs {
    region: HostPhysAddr,
}

/// Proof that a VMCS is the CPU's current one, for as long as it lives: VMREAD and VMWRITE
/// reach that VMCS.
#[derive(Debug)]
pub struct CurrentVmcs<'a> {
    _vmcs: &'a mut Vmcs,
}

impl Vmcs {
    /// Makes this VMCS current (VMPTRLD, unless it already is) and returns the token.
    pub fn current(&mut self) -> Result<CurrentVmcs<'_>, VmxFailure> {
        let address = self.region.as_u64();
        if CURRENT.load(Ordering::Relaxed) != address {
            // SAFETY: the region was set up by VMCLEAR in `VmxVcpu::create` (revision written)
            // and is used on this CPU only.
            unsafe { vmx::vmptrld(self.region) }
                .map_err(|fail| VmxFailure::new(VmxInstruction::Vmptrld, fail))?;
            CURRENT.store(address, Ordering::Relaxed);
        }
        Ok(CurrentVmcs { _vmcs: self })
    }
}

/// A failed VMREAD of the field with `encoding`.
fn read_failed(encoding: u32) -> impl Fn(VmFail) -> VmxFailure {
    move |fail| VmxFailure::on_field(VmxInstruction::Vmread, encoding, fail)
}

/// A failed VMWRITE of the field with `encoding`.
fn write_failed(encoding: u32) -> impl Fn(VmFail) -> VmxFailure {
    move |fail| VmxFailure::on_field(VmxInstruction::Vmwrite, encoding, fail)
}

impl CurrentVmcs<'_> {
    pub fn read32(&self, field: Field32) -> Result<u32, VmxFailure> {
        vmx::vmread32(field).map_err(read_failed(field.encoding()))
    }
    pub fn read64(&self, field: Field64) -> Result<u64, VmxFailure> {
        vmx::vmread64(field).map_err(read_failed(field.encoding()))
    }
    pub fn natural(&self, field: FieldNatural) -> Result<u64, VmxFailure> {
        vmx::vmread_natural(field).map_err(read_failed(field.encoding()))
    }

    /// # Safety
    /// As for `carousel_vmx::instructions::vmwrite64`: the value keeps the host sound.
    pub unsafe fn write16(&mut self, field: Field16, value: u16) -> Result<(), VmxFailure> {
        // SAFETY: this VMCS is current (the token); the caller vouches for the value.
        unsafe { vmx::vmwrite16(field, value) }.map_err(write_failed(field.encoding()))
    }
    /// # Safety
    /// As for [`Self::write16`].
    pub unsafe fn write32(&mut self, field: Field32, value: u32) -> Result<(), VmxFailure> {
        // SAFETY: this VMCS is current (the token); the caller vouches for the value.
        unsafe { vmx::vmwrite32(field, value) }.map_err(write_failed(field.encoding()))
    }
    /// # Safety
    /// As for [`Self::write32`].
    pub unsafe fn write64(&mut self, field: Field64, value: u64) -> Result<(), VmxFailure> {
        // SAFETY: this VMCS is current (the token); the caller vouches for the value.
        unsafe { vmx::vmwrite64(field, value) }.map_err(write_failed(field.encoding()))
    }
    /// # Safety
    /// As for [`Self::write32`].
    pub unsafe fn write_natural(
        &mut self,
        field: FieldNatural,
        value: u64,
    ) -> Result<(), VmxFailure> {
        // SAFETY: this VMCS is current (the token); the caller vouches for the value.
        unsafe { vmx::vmwrite_natural(field, value) }.map_err(write_failed(field.encoding()))
    }
}

/// One VM's vCPU under VMX.
#[derive(Debug)]
pub struct VmxVcpu {
    vmcs: Vmcs,
    launched: bool,
    regs: GuestRegisters,
    /// Primary processor-based controls as last written (interrupt-window exiting toggles).
    primary_controls: u32,
    negotiated: Negotiated,
    vpid: u16,
    eptp: EptPointer,
    /// The guest's XCR0.
    xcr0: u64,
    /// The state VMX does not switch, while another VM runs: x87/SSE, the XSAVE components
    /// above SSE, DR0-DR3 and DR6, and the MSRs a guest owns that have no VMCS field.
    fx: Box<FxState>,
    xs: Box<XState>,
    debug: DebugRegisters,
    msrs: [u64; SWITCHED_MSRS.len()],
    /// The host has XSAVE (CR4.OSXSAVE set): XCR0 and the XSAVE area are switched.
    xsave: bool,
}

/// The guest-owned MSRs VMX does not switch, with their numbers: the vCPU keeps each VM's
/// value and loads it while that VM runs.
const SWITCHED_MSRS: [(Msr, u32); 5] = [
    (Msr::KernelGsBase, 0xC000_0102),
    (Msr::Star, 0xC000_0081),
    (Msr::Lstar, 0xC000_0082),
    (Msr::Cstar, 0xC000_0083),
    (Msr::Sfmask, 0xC000_0084),
];

/// An XSAVE area of zeros: XRSTOR from it puts components in their initial state.
static INITIAL_XSTATE: XState = XState([0; arch::XSTATE_BYTES]);

/// XCR0 components x87 and SSE, which FXSAVE and FXRSTOR switch.
const XCR0_LEGACY: u64 = 0b11;

/// CR0.PE | CR0.ET: protected mode, paging off (the multiboot machine state).
const GUEST_CR0_AT_ENTRY: u64 = 0x11;
/// RFLAGS bit 1 is always set; IF = 0.
const RFLAGS_RESERVED: u64 = 0x2;

impl VmxVcpu {
    /// Makes the VMCS of a VM: controls, host state, and the guest state a multiboot kernel
    /// expects at entry. `region` is a zeroed frame the VMCS lives in.
    pub fn create(vmx: &Vmx, setup: &VcpuSetup, region: HostPhysAddr) -> Result<Self, VmxFailure> {
        let mut vcpu = Self {
            vmcs: Vmcs { region },
            launched: false,
            regs: setup.registers.clone(),
            primary_controls: vmx.negotiated.primary.bits(),
            negotiated: vmx.negotiated,
            vpid: setup.tag,
            eptp: setup.eptp,
            xcr0: 1,
            fx: Box::new(FxState::reset()),
            xs: Box::new(XState([0; arch::XSTATE_BYTES])),
            debug: DebugRegisters::default(),
            msrs: [0; SWITCHED_MSRS.len()],
            xsave: vmx.xsave,
        };
        // SAFETY: the region is a fresh frame carrying the revision identifier (written by the
        // caller); VMCLEAR initialises it (26.11.3 "Initializing a VMCS").
        unsafe { vmx::vmclear(region) }
            .map_err(|fail| VmxFailure::new(VmxInstruction::Vmclear, fail))?;
        CURRENT.store(0, Ordering::Relaxed);
        let mut vmcs = vcpu.vmcs.current()?;
        // SAFETY: the VMCS is current (the token); every field written describes state this VM
        // owns (its EPT, its entry point) or the hypervisor's own host state.
        unsafe {
            vmx.write_controls(&mut vmcs, setup.eptp, setup.tag)?;
            vmx.write_host_state(&mut vmcs)?;
            vmm::write_guest_entry_state(&mut vmcs, setup.entry)?;
        }
        Ok(vcpu)
    }

    fn vmcs(&mut self) -> Result<CurrentVmcs<'_>, VcpuError> {
        self.vmcs.current().map_err(VcpuError::from)
    }

    /// The guest-visible value of CR0 or CR4: owned bits from the register, the others from
    /// the read shadow (26.6.6 "Guest/Host Masks and Read Shadows for CR0 and CR4").
    fn visible(
        &mut self,
        register: FieldNatural,
        mask: FieldNatural,
        shadow: FieldNatural,
    ) -> Result<u64, VcpuError> {
        let vmcs = self.vmcs()?;
        let read = |field| vmcs.natural(field);
        let (value, mask, shadow) = (read(register)?, read(mask)?, read(shadow)?);
        Ok((value & !mask) | (shadow & mask))
    }
}

impl Vcpu for VmxVcpu {
    fn registers(&mut self) -> &mut GuestRegisters {
        &mut self.regs
    }

    fn read(&mut self, reg: Reg) -> Result<u64, VcpuError> {
        /// Segment access rights: DPL (6:5), L (13), D/B (14).
        const AR_DPL_SHIFT: u32 = 5;
        const AR_LONG: u32 = 1 << 13;
        const AR_DEFAULT_32: u32 = 1 << 14;
        /// EFER.LMA.
        const EFER_LMA: u64 = 1 << 10;
        match reg {
            Reg::Cr0 => return self.visible(GUEST_CR0, CR0_GUEST_HOST_MASK, CR0_READ_SHADOW),
            Reg::Cr4 => return self.visible(GUEST_CR4, CR4_GUEST_HOST_MASK, CR4_READ_SHADOW),
            Reg::Xcr0 => return Ok(self.xcr0),
            Reg::Msr(msr) => {
                if let Some(index) = SWITCHED_MSRS.iter().position(|&(m, _)| m == msr) {
                    // The vCPU runs (its values are in the hardware): SWAPGS may have changed
                    // KERNEL_GS_BASE without an exit.
                    // SAFETY: these MSRs exist on every CPU with long mode (VMX requires it).
                    return Ok(unsafe { arch::rdmsr(SWITCHED_MSRS[index].1) });
                }
            }
            _ => {}
        }
        let vmcs = self.vmcs()?;
        let value = match reg {
            Reg::Rip => vmcs.natural(GUEST_RIP),
            Reg::Rsp => vmcs.natural(GUEST_RSP),
            Reg::Rflags => vmcs.natural(GUEST_RFLAGS),
            Reg::Cr3 => vmcs.natural(GUEST_CR3),
            Reg::Efer => vmcs.read64(GUEST_IA32_EFER),
            Reg::CsBase => vmcs.natural(GUEST_CS_BASE),
            Reg::SegmentBase(segment) => vmcs.natural(segment_base(segment)),
            Reg::CodeBits => {
                let access = vmcs.read32(GUEST_CS_ACCESS_RIGHTS);
                let efer = vmcs.read64(GUEST_IA32_EFER);
                access.and_then(|access| {
                    efer.map(|efer| {
                        if efer & EFER_LMA != 0 && access & AR_LONG != 0 {
                            64
                        } else if access & AR_DEFAULT_32 != 0 {
                            32
                        } else {
                            16
                        }
                    })
                })
            }
            Reg::Cpl => vmcs
                .read32(GUEST_SS_ACCESS_RIGHTS)
                .map(|access| u64::from((access >> AR_DPL_SHIFT) & 3)),
            // Interruptibility state (26.4.2 "Guest Non-Register State", table "Format of
            // Interruptibility State"): bit 0 blocking by STI, bit 1 blocking by MOV SS.
            Reg::InterruptShadow => vmcs
                .read32(GUEST_INTERRUPTIBILITY_STATE)
                .map(|state| u64::from(state & 0b11 != 0)),
            // Interruptibility bit 3: blocking by NMI.
            Reg::NmiBlocked => vmcs
                .read32(GUEST_INTERRUPTIBILITY_STATE)
                .map(|state| u64::from(state & 0b1000 != 0)),
            Reg::Msr(Msr::SysenterCs) => vmcs.read32(GUEST_IA32_SYSENTER_CS).map(u64::from),
            Reg::Msr(Msr::SysenterEsp) => vmcs.natural(GUEST_IA32_SYSENTER_ESP),
            Reg::Msr(Msr::SysenterEip) => vmcs.natural(GUEST_IA32_SYSENTER_EIP),
            Reg::Msr(Msr::FsBase) => vmcs.natural(GUEST_FS_BASE),
            Reg::Msr(Msr::GsBase) => vmcs.natural(GUEST_GS_BASE),
            Reg::Msr(_) | Reg::Cr0 | Reg::Cr4 | Reg::Xcr0 => unreachable!("handled above"),
        };
        value.map_err(VcpuError::from)
    }

    fn write(&mut self, reg: Reg, value: u64) -> Result<(), VcpuError> {
        let negotiated = self.negotiated;
        match reg {
            Reg::Xcr0 => {
                self.load_xcr0(value);
                return Ok(());
            }
            Reg::Msr(msr) => {
                if let Some(&(_, number)) = SWITCHED_MSRS.iter().find(|&&(m, _)| m == msr) {
                    // SAFETY: the vCPU runs, so its values are the hardware's; these MSRs only
                    // steer the guest's own SYSCALL/SWAPGS (the hypervisor uses neither).
                    unsafe { arch::wrmsr(number, value) };
                    return Ok(());
                }
            }
            Reg::Cr0 => {
                self.enter_or_leave_long_mode(value)?;
            }
            _ => {}
        }
        let mut vmcs = self.vmcs()?;
        // SAFETY: (every arm) the VMCS is current (the token); these are guest-state fields or
        // CR read shadows, which decide only what the guest sees and runs with. CR0 and CR4 get
        // the bits VMX operation fixes, so VM entry keeps working.
        let written = unsafe {
            match reg {
                Reg::Rip => vmcs.write_natural(GUEST_RIP, value),
                Reg::Rsp => vmcs.write_natural(GUEST_RSP, value),
                Reg::Rflags => vmcs.write_natural(GUEST_RFLAGS, value),
                Reg::Cr3 => vmcs.write_natural(GUEST_CR3, value),
                Reg::Efer => vmcs.write64(GUEST_IA32_EFER, value),
                Reg::CsBase => vmcs.write_natural(GUEST_CS_BASE, value),
                Reg::SegmentBase(segment) => vmcs.write_natural(segment_base(segment), value),
                Reg::Cr0 => vmcs
                    .write_natural(CR0_READ_SHADOW, value)
                    .and_then(|()| vmcs.write_natural(GUEST_CR0, negotiated.fixed_cr0(value))),
                Reg::Cr4 => vmcs
                    .write_natural(CR4_READ_SHADOW, value)
                    .and_then(|()| vmcs.write_natural(GUEST_CR4, negotiated.fixed_cr4(value))),
                Reg::InterruptShadow => {
                    vmcs.read32(GUEST_INTERRUPTIBILITY_STATE).and_then(|state| {
                        let state = if value == 0 {
                            state & !0b11
                        } else {
                            state | 0b01
                        };
                        vmcs.write32(GUEST_INTERRUPTIBILITY_STATE, state)
                    })
                }
                Reg::Msr(Msr::SysenterCs) => vmcs.write32(GUEST_IA32_SYSENTER_CS, value as u32),
                Reg::Msr(Msr::SysenterEsp) => vmcs.write_natural(GUEST_IA32_SYSENTER_ESP, value),
                Reg::Msr(Msr::SysenterEip) => vmcs.write_natural(GUEST_IA32_SYSENTER_EIP, value),
                Reg::Msr(Msr::FsBase) => vmcs.write_natural(GUEST_FS_BASE, value),
                Reg::Msr(Msr::GsBase) => vmcs.write_natural(GUEST_GS_BASE, value),
                Reg::CodeBits | Reg::Cpl | Reg::NmiBlocked | Reg::Xcr0 | Reg::Msr(_) => {
                    return Err(VcpuError::ReadOnlyRegister(reg))
                }
            }
        };
        written.map_err(VcpuError::from)
    }

    fn inject(&mut self, event: Event) -> Result<(), VcpuError> {
        let (info, code) = match event {
            Event::Interrupt(vector) => (
                InterruptionInfo {
                    vector,
                    kind: InterruptionType::ExternalInterrupt,
                    error_code_valid: false,
                },
                None,
            ),
            Event::Nmi => (
                InterruptionInfo {
                    vector: 2,
                    kind: InterruptionType::Nmi,
                    error_code_valid: false,
                },
                None,
            ),
            Event::Exception { vector, error_code } => (
                InterruptionInfo {
                    vector,
                    kind: InterruptionType::HardwareException,
                    error_code_valid: error_code.is_some(),
                },
                error_code,
            ),
        };
        let mut vmcs = self.vmcs()?;
        // SAFETY: the VMCS is current (the token); an external interrupt of a vector the guest
        // programmed, or an architectural exception, is a valid event to inject (28.6.1
        // "Vectored-Event Injection").
        unsafe {
            if let Some(code) = code {
                vmcs.write32(VM_ENTRY_EXCEPTION_ERROR_CODE, code)?;
            }
            vmcs.write32(VM_ENTRY_INTERRUPTION_INFORMATION, info.to_raw())
                .map_err(VcpuError::from)
        }
    }

    fn event_queued(&mut self) -> Result<bool, VcpuError> {
        let vmcs = self.vmcs()?;
        let info = vmcs.read32(VM_ENTRY_INTERRUPTION_INFORMATION)?;
        Ok(InterruptionInfo::from_raw(info).is_some())
    }

    fn set_interrupt_window(&mut self, open: bool) -> Result<(), VcpuError> {
        let bit = PrimaryProcessorBased::INTERRUPT_WINDOW_EXITING.bits();
        let wanted = if open {
            self.primary_controls | bit
        } else {
            self.primary_controls & !bit
        };
        if wanted != self.primary_controls {
            let mut vmcs = self.vmcs()?;
            // SAFETY: the VMCS is current (the token); only the interrupt-window bit changes,
            // which the capability MSRs allow (negotiated at VMX start).
            unsafe { vmcs.write32(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, wanted) }?;
            self.primary_controls = wanted;
        }
        Ok(())
    }

    fn flush_linear(&mut self) -> Result<(), VcpuError> {
        // SAFETY: flushing this VM's VPID only drops cached translations.
        unsafe { vmx::invvpid_single_context(self.vpid) }
            .map_err(|fail| VmxFailure::new(VmxInstruction::Invvpid, fail).into())
    }

    fn flush_physical(&mut self) -> Result<(), VcpuError> {
        // SAFETY: the pointer is this VM's own EPT, as loaded into its VMCS; INVEPT only drops
        // cached translations.
        unsafe { vmx::invept_single_context(self.eptp) }
            .map_err(|fail| VmxFailure::new(VmxInstruction::Invept, fail).into())
    }

    fn enter(&mut self, timer: u64) -> Result<Entered, VcpuError> {
        let rate = self.negotiated.preemption_timer_rate;
        let ticks = cycles_to_preemption_ticks(timer, rate).max(1);
        {
            let mut vmcs = self.vmcs()?;
            // SAFETY: the VMCS is current (the token); the value is a count.
            unsafe { vmcs.write32(VMX_PREEMPTION_TIMER_VALUE, ticks) }?;
        }
        // SAFETY: this VM's VMCS is current (just used) and holds a complete host and guest
        // state; `regs` is this VM's register file.
        unsafe { vmx::enter(&mut self.regs, self.launched) }.map_err(|fail| {
            let instruction = if self.launched {
                VmxInstruction::Vmresume
            } else {
                VmxInstruction::Vmlaunch
            };
            VmxFailure::new(instruction, fail)
        })?;
        self.launched = true;
        // The timer counts only in guest mode; its saved value is what is left of `ticks`.
        let left = self.vmcs()?.read32(VMX_PREEMPTION_TIMER_VALUE)?;
        let raw = vmx::read_exit()?;
        self.reinject_interrupted_event()?;
        Ok(Entered {
            exit: Exit::from_vmx(&raw),
            reason: (raw.reason & 0xFFFF) as u16,
            timer_used: u64::from(ticks.saturating_sub(left)) << rate,
        })
    }

    fn switch_in(&mut self) -> Result<(), VcpuError> {
        self.vmcs()?;
        // SAFETY: the host set CR4.OSFXSR (and OSXSAVE when `xsave`) at start; the images are
        // this VM's own, saved by `switch_out` or set to the reset state. DR7 is the host's
        // 0x400 here (VM exits load it), so DR0-DR3 arm nothing in the hypervisor. The MSRs
        // only steer the guest's SYSCALL and SWAPGS.
        unsafe {
            if self.xsave {
                arch::xsetbv(self.xcr0);
            }
            arch::fxrstor(&self.fx);
            if self.xsave && self.xcr0 & !XCR0_LEGACY != 0 {
                arch::xrstor(&self.xs, self.xcr0 & !XCR0_LEGACY);
            }
            self.debug.write();
            for (&(_, number), &value) in SWITCHED_MSRS.iter().zip(&self.msrs) {
                arch::wrmsr(number, value);
            }
        }
        Ok(())
    }

    fn switch_out(&mut self) -> Result<(), VcpuError> {
        // SAFETY: as for `switch_in`; the areas are this VM's, large enough for its components.
        unsafe {
            arch::fxsave(&mut self.fx);
            if self.xsave && self.xcr0 & !XCR0_LEGACY != 0 {
                arch::xsave(&mut self.xs, self.xcr0 & !XCR0_LEGACY);
            }
            self.debug = DebugRegisters::read();
            for (&(_, number), value) in SWITCHED_MSRS.iter().zip(&mut self.msrs) {
                *value = arch::rdmsr(number);
            }
        }
        Ok(())
    }

    fn describe(&mut self) -> String {
        let primary = self.primary_controls;
        let state = self.vmcs().and_then(|vmcs| {
            Ok((
                vmcs.natural(GUEST_RIP)?,
                vmcs.natural(GUEST_RFLAGS)?,
                vmcs.read32(GUEST_INTERRUPTIBILITY_STATE)?,
                vmcs.read32(VM_ENTRY_INTERRUPTION_INFORMATION)?,
            ))
        });
        let window = primary & PrimaryProcessorBased::INTERRUPT_WINDOW_EXITING.bits() != 0;
        match state {
            Ok((rip, rflags, blocking, queued)) => alloc::format!(
                "rip {rip:#x} rflags {rflags:#x} blocking {blocking:#x} queued {queued:#x} \
                 window {window}"
            ),
            Err(error) => alloc::format!("VMCS unreadable ({error})"),
        }
    }
}

impl VmxVcpu {
    /// XSETBV on the vCPU's behalf (it runs: its XCR0 is the hardware's). Components it turns
    /// on start in their initial state, never with what another VM left in the registers.
    fn load_xcr0(&mut self, value: u64) {
        let added = value & !self.xcr0 & !XCR0_LEGACY;
        self.xcr0 = value;
        if !self.xsave {
            return;
        }
        // SAFETY: the host set CR4.OSXSAVE; the value passed the architectural checks
        // (`check_xcr0`); the initial area is all zeros (XSTATE_BV = 0: initial state).
        unsafe {
            arch::xsetbv(value);
            if added != 0 {
                arch::xrstor(&INITIAL_XSTATE, added);
            }
        }
    }

    /// A guest CR0 write that turns paging on with EFER.LME set enters IA-32e mode, one that
    /// turns it off leaves it: EFER.LMA and the "IA-32e mode guest" entry control follow (the
    /// processor does this itself for writes that do not exit; SDM vol. 3A 10.8.5 "Initializing
    /// IA-32e Mode", vol. 3C 28.3.2.1 "Loading Guest Control Registers, Debug Registers, and
    /// MSRs").
    fn enter_or_leave_long_mode(&mut self, cr0: u64) -> Result<(), VcpuError> {
        const PG: u64 = 1 << 31;
        const LME: u64 = 1 << 8;
        const LMA: u64 = 1 << 10;
        let entry = self.negotiated.entry.bits();
        let long_mode = carousel_vmx::controls::EntryControls::IA32E_MODE_GUEST.bits();
        let mut vmcs = self.vmcs()?;
        let efer = vmcs.read64(GUEST_IA32_EFER)?;
        let lma = efer & LME != 0 && cr0 & PG != 0;
        if lma == (efer & LMA != 0) {
            return Ok(());
        }
        let (efer, entry) = if lma {
            (efer | LMA, entry | long_mode)
        } else {
            (efer & !LMA, entry & !long_mode)
        };
        // SAFETY: the VMCS is current (the token); EFER.LMA and the IA-32e entry control agree
        // with the guest's CR0 and EFER.LME, as VM entry requires (28.3.1.1 "Checks on Guest
        // Control Registers, Debug Registers, and MSRs", paraphrased: with "load IA32_EFER" set,
        // EFER.LMA must equal the "IA-32e mode guest" control, and must equal EFER.LME when
        // CR0.PG is 1).
        unsafe {
            vmcs.write64(GUEST_IA32_EFER, efer)?;
            vmcs.write32(VM_ENTRY_CONTROLS, entry)
                .map_err(VcpuError::from)
        }
    }

    /// After a VM exit: an event whose delivery the exit interrupted (IDT-vectoring information
    /// valid) is delivered again at the next entry (29.2.4 "Information for VM Exits During
    /// Event Delivery"). The IDT-vectoring field has the layout of the entry field (26.9.3
    /// "Information for VM Exits That Occur During Event Delivery") except bit 12, which is
    /// undefined there and reserved in the entry field (28.2.1.3 "VM-Entry Control Fields",
    /// paraphrased: bits 30:12 of the VM-entry interruption-information field must be 0), so
    /// the event goes through [`InterruptionInfo`], which carries neither. The reserved type 1
    /// is never reported, and `from_raw` refuses it.
    fn reinject_interrupted_event(&mut self) -> Result<(), VcpuError> {
        let mut vmcs = self.vmcs()?;
        let Some(event) = InterruptionInfo::from_raw(vmcs.read32(IDT_VECTORING_INFORMATION)?)
        else {
            return Ok(());
        };
        let code = vmcs.read32(IDT_VECTORING_ERROR_CODE)?;
        let length = vmcs.read32(VM_EXIT_INSTRUCTION_LENGTH)?;
        // SAFETY: the VMCS is current (the token); the event is the one the CPU was delivering.
        unsafe {
            if event.error_code_valid {
                vmcs.write32(VM_ENTRY_EXCEPTION_ERROR_CODE, code)?;
            }
            vmcs.write32(VM_ENTRY_INSTRUCTION_LENGTH, length)?;
            vmcs.write32(VM_ENTRY_INTERRUPTION_INFORMATION, event.to_raw())?;
        }
        Ok(())
    }
}

/// The VMCS field holding a segment's base.
fn segment_base(segment: Segment) -> FieldNatural {
    match segment {
        Segment::Es => GUEST_ES_BASE,
        Segment::Cs => GUEST_CS_BASE,
        Segment::Ss => GUEST_SS_BASE,
        Segment::Ds => GUEST_DS_BASE,
        Segment::Fs => GUEST_FS_BASE,
        Segment::Gs => GUEST_GS_BASE,
    }
}

/// The guest's CR0 at entry, with the bit VMX forces.
pub const fn entry_cr0() -> (u64, u64) {
    (GUEST_CR0_AT_ENTRY | CR0_NE, GUEST_CR0_AT_ENTRY)
}

/// RFLAGS at entry.
pub const ENTRY_RFLAGS: u64 = RFLAGS_RESERVED;
