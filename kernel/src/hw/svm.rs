//! The SVM backend of the vCPU seam: turning SVM on, the host's local APIC timer that ends
//! slices (SVM has no preemption timer), and [`SvmVcpu`], which implements
//! `carousel_kernel::vcpu::Vcpu` over a VMCB.
//!
//! Reference: AMD64 APM volume 2 (24593, rev. 3.40): 15.4 "Enabling SVM", 15.5 "VMRUN
//! Instruction", 15.13.1 "INTR Intercept", 15.20 "Event Injection", 15.21 "Interrupt and Local
//! APIC Support", 15.25 "Nested Paging"; 16.4 "Local APIC Timer" (the xAPIC registers).
//!
//! What differs from VMX, and where it is handled:
//! - No NRIP under QEMU: `Exit::from_svm` knows each intercepted instruction's length; string
//!   I/O's address size and segment come from the instruction (`exits::io::complete_string`).
//! - The guests' VMCALL is #UD here: the #UD intercept brings it to the hypercall handler.
//! - Preemption: the host LAPIC's one-shot timer, armed before each VMRUN for the cycles the run
//!   loop allows (the slice end or the next emulated-timer deadline, whichever is first), with
//!   the INTR intercept and V_INTR_MASKING.
//! - FS, GS, TR, LDTR and the syscall MSRs move with VMLOAD/VMSAVE; the VMCB keeps the guest's.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;
use core::ptr::addr_of;

use carousel_kernel::exit::Exit;
use carousel_kernel::vcpu::{
    Entered, Event, GuestRegisters, Msr, Reg, Segment as Seg, Vcpu, VcpuError,
};
use carousel_kernel::vm::{CpuFacts, NestedPaging, VcpuSetup};
use carousel_svm::event::{after_exit, EventInjection, EventType};
use carousel_svm::exit::{decode, RawExit};
use carousel_svm::features::{self, MissingSvm, SvmFeatures};
use carousel_svm::instructions as svm;
use carousel_svm::vmcb::{
    attributes, cr_intercepts, interrupt_control, interrupt_state, Intercepts, Intercepts2,
    Segment, TlbControl, Vmcb, NESTED_PAGING, PAT_POWER_ON,
};
use carousel_svm::{asid, EFER_SVME, MSR_VM_CR, MSR_VM_HSAVE_PA};

use super::arch::{self, DebugRegisters, FxState, IA32_EFER};

/// EFER.NXE: the NX bit in page tables (the nested tables mark non-executable pages with it).
const EFER_NXE: u64 = 1 << 11;
/// EFER.LMA.
const EFER_LMA: u64 = 1 << 10;

/// A 4 KiB-aligned page of the hypervisor's own (identity-mapped: its address is physical).
#[repr(C, align(4096))]
struct Page<const N: usize>([u8; N]);

/// The host-state save area VMRUN uses (VM_HSAVE_PA).
static mut HOST_SAVE: Page<4096> = Page([0; 4096]);
/// Where VMSAVE keeps the host's FS/GS/TR/LDTR and syscall MSRs while a guest runs.
static mut HOST_VMCB: Page<4096> = Page([0; 4096]);
/// The I/O permission map: 12 KiB, every port intercepted (15.10.1 "I/O Permissions Map").
static IOPM: Page<12288> = Page([0xFF; 12288]);
/// The MSR permission map: 8 KiB, every MSR intercepted (15.11 "MSR Intercepts").
static MSRPM: Page<8192> = Page([0xFF; 8192]);

/// SVM, turned on.
#[derive(Debug, Clone, Copy)]
pub struct Svm {
    pub features: SvmFeatures,
    pub timer: HostTimer,
}

/// Why SVM cannot be used.
#[derive(Debug, Clone, Copy)]
pub struct SvmError(pub MissingSvm);

impl fmt::Display for SvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "it lacks {}", self.0)
    }
}

/// True when CPUID offers SVM (the boot-time choice of backend).
pub fn offered() -> bool {
    arch::cpuid(0x8000_0000, 0)[0] >= 0x8000_000A
        && arch::cpuid(0x8000_0001, 0)[2] & features::CPUID_ECX_SVM != 0
}

impl Svm {
    /// Checks the CPU, sets EFER.SVME (and NXE, for the nested tables' NX bit), points
    /// VM_HSAVE_PA at the host save area and calibrates the host's LAPIC timer against the
    /// TSC (`tsc_hz`).
    pub fn enable(tsc_hz: u64) -> Result<Self, SvmError> {
        let ext_ecx = arch::cpuid(0x8000_0001, 0)[2];
        if ext_ecx & features::CPUID_ECX_SVM == 0 {
            return Err(SvmError(MissingSvm::NotInCpuid));
        }
        let [eax, ebx, _, edx] = arch::cpuid(0x8000_000A, 0);
        let features = SvmFeatures::from_cpuid(eax, ebx, edx);
        // SAFETY: VM_CR exists on every CPU with SVM in CPUID.
        let vm_cr = unsafe { arch::rdmsr(MSR_VM_CR) };
        features::check(ext_ecx, vm_cr, &features).map_err(SvmError)?;
        // SAFETY: SVME only permits the SVM instructions; NXE makes page-table bit 63 mean
        // no-execute, and the host's own tables never set it. HSAVE is the hypervisor's page,
        // used by VMRUN alone.
        unsafe {
            arch::wrmsr(IA32_EFER, arch::rdmsr(IA32_EFER) | EFER_SVME | EFER_NXE);
            // FXSAVE/FXRSTOR switch the guests' x87/SSE state (CR4.OSFXSR, OSXMMEXCPT).
            arch::write_cr4(arch::cr4() | 1 << 9 | 1 << 10);
            arch::wrmsr(MSR_VM_HSAVE_PA, addr_of!(HOST_SAVE) as u64);
        }
        Ok(Self {
            features,
            timer: HostTimer::calibrate(tsc_hz),
        })
    }

    /// What the exit handlers need to know of this CPU.
    pub fn cpu_facts(&self) -> CpuFacts {
        let physical_address_bits = (arch::cpuid(0x8000_0008, 0)[0] & 0xFF) as u8;
        // CR4 bits of a 64-bit-capable AMD CPU without XSAVE, PKE or CET (the guest writes CR4
        // without an exit under SVM; this is what the handlers check against otherwise).
        // CR4 bits this CPU has (what VMRUN accepts), less XSAVE (the SVM vCPU switches no
        // XCR0) and the protection keys and CET (not offered).
        let [_, _, ecx1, _] = arch::cpuid(1, 0);
        let [_, ebx7, _, _] = if arch::cpuid(0, 0)[0] >= 7 {
            arch::cpuid(7, 0)
        } else {
            [0; 4]
        };
        let has = |present: bool, bit: u64| if present { 1u64 << bit } else { 0 };
        let cr4_allowed = 0x0000_07FF
            | has(ecx1 & 1 << 17 != 0, 17)
            | has(ebx7 & 1 != 0, 16)
            | has(ebx7 & 1 << 7 != 0, 20)
            | has(ebx7 & 1 << 20 != 0, 21);
        CpuFacts {
            cr4_allowed,
            xcr0_supported: 0,
            accessed_dirty: true,
            physical_address_bits: if physical_address_bits == 0 {
                36
            } else {
                physical_address_bits
            },
            nested: NestedPaging::Npt { no_execute: true },
        }
    }
}

/// The host's local APIC (xAPIC, at its reset base) and its timer in one-shot mode: the one
/// timer that ends every guest run. TCG has no TSC-deadline mode (QEMU-SVM.md).
#[derive(Debug, Clone, Copy)]
pub struct HostTimer {
    /// LAPIC timer ticks (divide by 1) per 2^32 TSC cycles.
    ticks_per_2_32_cycles: u64,
}

/// The interrupt vector of the host's timer.
pub const TIMER_VECTOR: u8 = 0x30;
/// The spurious-interrupt vector (bits 3:0 all ones, as older APICs require).
pub const SPURIOUS_VECTOR: u8 = 0x3F;

const LAPIC_BASE: usize = 0xFEE0_0000;
const EOI: usize = 0xB0;
const SVR: usize = 0xF0;
const LVT_TIMER: usize = 0x320;
const INITIAL_COUNT: usize = 0x380;
const CURRENT_COUNT: usize = 0x390;
const DIVIDE: usize = 0x3E0;

fn lapic_read(register: usize) -> u32 {
    // SAFETY: the xAPIC page is identity-mapped (the boot tables map the first 4 GiB) and
    // reading a timer or control register has no side effect.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + register) as *const u32) }
}

fn lapic_write(register: usize, value: u32) {
    // SAFETY: as for `lapic_read`; the hypervisor owns the host's LAPIC.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + register) as *mut u32, value) }
}

impl HostTimer {
    /// Enables the LAPIC, points its timer at [`TIMER_VECTOR`] (one-shot, divide by 1) and
    /// measures its rate against 10 ms of TSC.
    fn calibrate(tsc_hz: u64) -> Self {
        lapic_write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
        lapic_write(DIVIDE, 0b1011);
        // Masked while measuring.
        lapic_write(LVT_TIMER, 1 << 16 | u32::from(TIMER_VECTOR));
        let cycles = (tsc_hz / 100).max(1);
        lapic_write(INITIAL_COUNT, u32::MAX);
        let start = arch::rdtsc();
        while arch::rdtsc() - start < cycles {
            core::hint::spin_loop();
        }
        let ticks = u64::from(u32::MAX - lapic_read(CURRENT_COUNT));
        lapic_write(INITIAL_COUNT, 0);
        lapic_write(LVT_TIMER, u32::from(TIMER_VECTOR));
        let ticks_per_2_32_cycles = ((u128::from(ticks) << 32) / u128::from(cycles)) as u64;
        log::info!("host LAPIC timer: {} ticks per 10 ms of TSC", ticks.max(1));
        Self {
            ticks_per_2_32_cycles: ticks_per_2_32_cycles.max(1),
        }
    }

    /// Arms the one-shot for `cycles` of TSC (at least one tick, at most the counter's range).
    fn arm(&self, cycles: u64) {
        let ticks = (u128::from(cycles) * u128::from(self.ticks_per_2_32_cycles)) >> 32;
        lapic_write(INITIAL_COUNT, ticks.clamp(1, u128::from(u32::MAX)) as u32);
    }

    /// Stops the one-shot; true when it had expired.
    fn disarm(&self) -> bool {
        let expired = lapic_read(CURRENT_COUNT) == 0;
        lapic_write(INITIAL_COUNT, 0);
        expired
    }
}

/// The host timer's interrupt handler: acknowledges it (the exit already told the run loop).
#[unsafe(no_mangle)]
extern "C" fn host_timer_interrupt() {
    lapic_write(EOI, 0);
}

/// CR0.PE | CR0.ET: protected mode, paging off (the multiboot machine state).
const GUEST_CR0_AT_ENTRY: u64 = 0x11;

/// One VM's vCPU under SVM.
#[derive(Debug)]
pub struct SvmVcpu {
    vmcb: Box<Vmcb>,
    regs: GuestRegisters,
    timer: HostTimer,
    /// The VM's index, which picks its ASID.
    vm: u16,
    flush_by_asid: bool,
    /// A flush is owed before the next VMRUN.
    flush: bool,
    fx: Box<FxState>,
    debug: DebugRegisters,
    /// The handler moved RIP past an instruction it emulated while RFLAGS.TF was set: the #DB
    /// trap the instruction would have raised is owed.
    single_step: bool,
    /// The external interrupt offered through V_IRQ and not yet taken
    /// ([`Vmcb::offer_interrupt`]).
    offered: Option<u8>,
}

/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;
/// DR6.BS: the #DB came from single-stepping.
const DR6_BS: u64 = 1 << 14;
/// EFER.LME.
const EFER_LME: u64 = 1 << 8;
/// CR0.PG.
const CR0_PG: u64 = 1 << 31;

/// Which VM last ran under each ASID (ASIDs are shared when there are fewer than VMs).
static mut OWNERS: asid::Owners = asid::Owners::new();

impl SvmVcpu {
    /// The VMCB of a VM: intercepts, nested paging, and the guest state a multiboot kernel
    /// expects at entry.
    pub fn create(svm: &Svm, setup: &VcpuSetup) -> Self {
        let mut vmcb = Box::new(Vmcb::ZERO);
        let control = &mut vmcb.control;
        control.intercepts = (Intercepts::INTR
            | Intercepts::NMI
            | Intercepts::SMI
            | Intercepts::INIT
            | Intercepts::CPUID
            | Intercepts::INVD
            | Intercepts::HLT
            | Intercepts::INVLPGA
            | Intercepts::IOIO_PROT
            | Intercepts::MSR_PROT
            | Intercepts::TASK_SWITCH
            | Intercepts::SHUTDOWN)
            .bits();
        control.intercepts2 = Intercepts2::all().bits() & !Intercepts2::ICEBP.bits();
        // MOV to CR0, CR3 and CR4 are checked (and CR3 loads counted) as under VMX; CR8 is the
        // emulated LAPIC's TPR.
        control.intercept_cr = cr_intercepts(&[8], &[0, 3, 4, 8]);
        // #UD: the guests' VMCALL (an invalid opcode on AMD) is their hypercall.
        control.intercept_exceptions = 1 << 6;
        control.iopm_base_pa = addr_of!(IOPM) as u64;
        control.msrpm_base_pa = addr_of!(MSRPM) as u64;
        control.guest_asid = asid::assign(setup.tag - 1, svm.features.asids);
        control.tlb_control = TlbControl::FlushAll as u8;
        control.interrupt_control = interrupt_control::V_INTR_MASKING;
        control.nested_control = NESTED_PAGING;
        control.nested_cr3 = setup.root.as_u64();
        let save = &mut vmcb.save;
        save.cs = Segment::flat(0x08, attributes::CODE32);
        for segment in [
            &mut save.ds,
            &mut save.es,
            &mut save.ss,
            &mut save.fs,
            &mut save.gs,
        ] {
            *segment = Segment::flat(0x10, attributes::DATA32);
        }
        save.tr = Segment {
            selector: 0,
            attributes: attributes::TSS32_BUSY,
            limit: 0x67,
            base: 0,
        };
        save.ldtr = Segment {
            attributes: attributes::LDT,
            ..Segment::ZERO
        };
        save.gdtr.limit = 0xFFFF;
        save.idtr.limit = 0xFFFF;
        save.cr0 = GUEST_CR0_AT_ENTRY;
        save.efer = EFER_SVME;
        save.dr6 = 0xFFFF_0FF0;
        save.dr7 = 0x400;
        save.rflags = 0x2;
        save.rip = setup.entry;
        save.rax = setup.registers.rax;
        save.g_pat = PAT_POWER_ON;
        Self {
            vmcb,
            regs: setup.registers.clone(),
            timer: svm.timer,
            vm: setup.tag - 1,
            flush_by_asid: svm.features.flush_by_asid,
            flush: true,
            fx: Box::new(FxState::reset()),
            debug: DebugRegisters::default(),
            single_step: false,
            offered: None,
        }
    }

    fn segment(&self, segment: Seg) -> &Segment {
        let save = &self.vmcb.save;
        match segment {
            Seg::Es => &save.es,
            Seg::Cs => &save.cs,
            Seg::Ss => &save.ss,
            Seg::Ds => &save.ds,
            Seg::Fs => &save.fs,
            Seg::Gs => &save.gs,
        }
    }
}

impl Vcpu for SvmVcpu {
    fn registers(&mut self) -> &mut GuestRegisters {
        &mut self.regs
    }

    fn read(&mut self, reg: Reg) -> Result<u64, VcpuError> {
        let save = &self.vmcb.save;
        Ok(match reg {
            Reg::Rip => save.rip,
            Reg::Rsp => save.rsp,
            Reg::Rflags => save.rflags,
            Reg::Cr0 => save.cr0,
            Reg::Cr3 => save.cr3,
            Reg::Cr4 => save.cr4,
            // SVME is the hypervisor's requirement, not the guest's setting.
            Reg::Efer => save.efer & !EFER_SVME,
            Reg::Xcr0 => 1,
            Reg::CsBase => save.cs.base,
            Reg::SegmentBase(segment) => self.segment(segment).base,
            Reg::CodeBits => u64::from(save.cs.code_bits(save.efer & EFER_LMA != 0)),
            Reg::Cpl => u64::from(save.cpl),
            Reg::InterruptShadow => self.vmcb.control.interrupt_state & interrupt_state::SHADOW,
            Reg::NmiBlocked => 0,
            Reg::Msr(msr) => match msr {
                Msr::KernelGsBase => save.kernel_gs_base,
                Msr::Star => save.star,
                Msr::Lstar => save.lstar,
                Msr::Cstar => save.cstar,
                Msr::Sfmask => save.sfmask,
                Msr::SysenterCs => save.sysenter_cs,
                Msr::SysenterEsp => save.sysenter_esp,
                Msr::SysenterEip => save.sysenter_eip,
                Msr::FsBase => save.fs.base,
                Msr::GsBase => save.gs.base,
            },
        })
    }

    fn write(&mut self, reg: Reg, value: u64) -> Result<(), VcpuError> {
        let save = &mut self.vmcb.save;
        match reg {
            Reg::Rip => {
                save.rip = value;
                self.single_step = save.rflags & RFLAGS_TF != 0;
            }
            Reg::Rsp => save.rsp = value,
            Reg::Rflags => save.rflags = value | 0x2,
            Reg::Cr0 => {
                // An emulated MOV to CR0 enters or leaves long mode as the CPU would: EFER.LMA
                // follows PG while LME is set.
                save.cr0 = value;
                if save.efer & EFER_LME != 0 {
                    if value & CR0_PG != 0 {
                        save.efer |= EFER_LMA;
                    } else {
                        save.efer &= !EFER_LMA;
                    }
                }
            }
            Reg::Cr3 => save.cr3 = value,
            Reg::Cr4 => save.cr4 = value,
            Reg::Efer => save.efer = value | EFER_SVME,
            Reg::CsBase => save.cs.base = value,
            Reg::SegmentBase(segment) => match segment {
                Seg::Es => save.es.base = value,
                Seg::Cs => save.cs.base = value,
                Seg::Ss => save.ss.base = value,
                Seg::Ds => save.ds.base = value,
                Seg::Fs => save.fs.base = value,
                Seg::Gs => save.gs.base = value,
            },
            Reg::InterruptShadow => {
                if value == 0 {
                    self.vmcb.control.interrupt_state &= !interrupt_state::SHADOW;
                } else {
                    self.vmcb.control.interrupt_state |= interrupt_state::SHADOW;
                }
            }
            Reg::Msr(msr) => match msr {
                Msr::KernelGsBase => save.kernel_gs_base = value,
                Msr::Star => save.star = value,
                Msr::Lstar => save.lstar = value,
                Msr::Cstar => save.cstar = value,
                Msr::Sfmask => save.sfmask = value,
                Msr::SysenterCs => save.sysenter_cs = value,
                Msr::SysenterEsp => save.sysenter_esp = value,
                Msr::SysenterEip => save.sysenter_eip = value,
                Msr::FsBase => save.fs.base = value,
                Msr::GsBase => save.gs.base = value,
            },
            Reg::Xcr0 | Reg::CodeBits | Reg::Cpl | Reg::NmiBlocked => {
                return Err(VcpuError::ReadOnlyRegister(reg))
            }
        }
        Ok(())
    }

    fn inject(&mut self, event: Event) -> Result<(), VcpuError> {
        let injection = match event {
            // External interrupts go through V_IRQ, not EVENTINJ (see `offer_interrupt`).
            Event::Interrupt(vector) => {
                self.offered = Some(vector);
                self.vmcb.offer_interrupt(vector);
                return Ok(());
            }
            Event::Nmi => EventInjection {
                vector: 2,
                kind: EventType::Nmi,
                error_code: None,
            },
            Event::Exception { vector, error_code } => EventInjection {
                vector,
                kind: EventType::Exception,
                error_code,
            },
        };
        self.vmcb.control.event_injection = injection.to_raw();
        Ok(())
    }

    fn event_queued(&mut self) -> Result<bool, VcpuError> {
        Ok(self.offered.is_some()
            || EventInjection::from_raw(self.vmcb.control.event_injection).is_some())
    }

    fn set_interrupt_window(&mut self, open: bool) -> Result<(), VcpuError> {
        // An offer not yet taken is its own window: the processor delivers it when it can.
        if self.offered.is_none() {
            self.vmcb.set_interrupt_window(open);
        }
        Ok(())
    }

    fn flush_linear(&mut self) -> Result<(), VcpuError> {
        self.flush = true;
        Ok(())
    }

    fn flush_physical(&mut self) -> Result<(), VcpuError> {
        self.flush = true;
        Ok(())
    }

    fn enter(&mut self, timer: u64) -> Result<Entered, VcpuError> {
        if core::mem::take(&mut self.single_step) && !self.event_queued()? {
            self.vmcb.save.dr6 |= DR6_BS;
            self.inject(Event::Exception {
                vector: 1,
                error_code: None,
            })?;
        }
        let asid = self.vmcb.control.guest_asid;
        // SAFETY: one CPU, and the run loop is the only caller: no other reference exists.
        let stale = unsafe { (*core::ptr::addr_of_mut!(OWNERS)).switch_in(asid, self.vm) };
        self.vmcb.control.tlb_control = if self.flush || stale {
            asid::flush(self.flush_by_asid) as u8
        } else {
            TlbControl::Nothing as u8
        };
        self.flush = false;
        self.vmcb.save.rax = self.regs.rax;
        let vmcb = &mut *self.vmcb as *mut Vmcb as u64;
        let start = arch::rdtsc();
        self.timer.arm(timer);
        // SAFETY: SVM is on (`Svm::enable`); the VMCB is this VM's, built by `create` with every
        // port and MSR intercepted and nested paging over this VM's own frames; the host save
        // page is the hypervisor's; interrupts are off and the IDT has the timer's vector.
        unsafe { svm::run(&mut self.regs, vmcb, addr_of!(HOST_VMCB) as u64) };
        let used = arch::rdtsc() - start;
        let expired = self.timer.disarm();
        // Take a timer interrupt that arrived (its handler acknowledges it).
        arch::take_interrupts();
        self.regs.rax = self.vmcb.save.rax;
        self.regs.cr2 = self.vmcb.save.cr2;
        let control = &self.vmcb.control;
        let raw = RawExit {
            code: control.exit_code,
            info1: control.exit_info1,
            info2: control.exit_info2,
        };
        // The injected event was delivered, or is in EXITINTINFO if the exit interrupted it;
        // the offered interrupt was taken (V_IRQ clear), or still waits.
        let after = after_exit(
            self.offered,
            self.vmcb.interrupt_window(),
            self.vmcb.control.exit_int_info,
        );
        self.vmcb.control.event_injection = after.inject.map_or(0, |event| event.to_raw());
        match after.offered {
            Some(vector) => self.vmcb.offer_interrupt(vector),
            None if self.offered.is_some() => self.vmcb.set_interrupt_window(false),
            None => {}
        }
        self.offered = after.offered;
        let exit = decode(&raw, false);
        let (exit, reason) = Exit::from_svm(&exit, self.vmcb.save.rip, expired);
        Ok(Entered {
            exit,
            reason,
            timer_used: used,
        })
    }

    fn switch_in(&mut self) -> Result<(), VcpuError> {
        // SAFETY: the host set CR4.OSFXSR at start; the image is this VM's own. DR7 is the
        // host's here, so DR0-DR3 arm nothing in the hypervisor.
        unsafe {
            arch::fxrstor(&self.fx);
            self.debug.write();
        }
        Ok(())
    }

    fn switch_out(&mut self) -> Result<(), VcpuError> {
        // SAFETY: as for `switch_in`.
        unsafe { arch::fxsave(&mut self.fx) };
        self.debug = DebugRegisters::read();
        Ok(())
    }

    fn describe(&mut self) -> String {
        let control = &self.vmcb.control;
        let save = &self.vmcb.save;
        alloc::format!(
            "rip {:#x} rflags {:#x} shadow {:#x} queued {:#x} offered {:?} v_irq {} exit \
             {:#x}/{:#x}/{:#x}",
            save.rip,
            save.rflags,
            control.interrupt_state,
            control.event_injection,
            self.offered,
            self.vmcb.interrupt_window(),
            control.exit_code,
            control.exit_info1,
            control.exit_info2,
        )
    }
}
