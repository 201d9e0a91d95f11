//! The virtual machine control block, typed: the control area (intercepts, ASID, interrupt
//! control, exit information, event injection, nested paging) and the state-save area (the
//! guest's segments, control registers, RIP, RSP, RAX and the MSRs VMLOAD and VMSAVE move).
//!
//! Reference: APM Appendix B "Layout of VMCB" (Table B-1 "VMCB Layout, Control Area", Table B-2
//! "VMCB Layout, State Save Area"), 15.9 "Instruction Intercepts", 15.13 "Interrupt Intercepts",
//! 15.16 "TLB Control", 15.21 "Interrupt and Local APIC Support".
//!
//! The VMCB is ordinary memory the CPU reads at VMRUN and writes at #VMEXIT: the kernel
//! places one in a 4 KiB frame of its own and edits it through these fields.

use bitflags::bitflags;

/// One segment register in the state-save area: selector, attributes, limit, base.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    pub selector: u16,
    /// The descriptor's attributes, compressed: bits 7:0 are descriptor bits 47:40 (type, S,
    /// DPL, P), bits 11:8 are descriptor bits 55:52 (AVL, L, D/B, G).
    pub attributes: u16,
    pub limit: u32,
    pub base: u64,
}

/// Segment attribute bits (the compressed format of [`Segment::attributes`]).
pub mod attributes {
    /// DPL, bits 6:5.
    pub const DPL_SHIFT: u16 = 5;
    /// Present.
    pub const PRESENT: u16 = 1 << 7;
    /// 64-bit code segment (L).
    pub const LONG: u16 = 1 << 9;
    /// Default operand size 32 (D/B).
    pub const DEFAULT_32: u16 = 1 << 10;
    /// Granularity 4 KiB.
    pub const GRANULARITY: u16 = 1 << 11;
    /// Flat 32-bit code, execute/read, accessed, present, DPL 0, 4 KiB granularity.
    pub const CODE32: u16 = 0xC9B;
    /// Flat 32-bit data, read/write, accessed, present, DPL 0, 4 KiB granularity.
    pub const DATA32: u16 = 0xC93;
    /// A busy 32-bit TSS, present.
    pub const TSS32_BUSY: u16 = 0x08B;
    /// An LDT, present (an LDTR with selector 0 is not checked).
    pub const LDT: u16 = 0x082;
}

impl Segment {
    /// The default operand size of code run from this segment as CS: 64, 32 or 16.
    pub fn code_bits(&self, long_mode_active: bool) -> u8 {
        if long_mode_active && self.attributes & attributes::LONG != 0 {
            64
        } else if self.attributes & attributes::DEFAULT_32 != 0 {
            32
        } else {
            16
        }
    }

    /// The descriptor privilege level.
    pub fn dpl(&self) -> u8 {
        ((self.attributes >> attributes::DPL_SHIFT) & 3) as u8
    }
}

bitflags! {
    /// Intercept vector 3, at offset 00Ch (Table B-1).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Intercepts: u32 {
        /// Physical maskable interrupts (INTR).
        const INTR = 1 << 0;
        /// Physical NMIs.
        const NMI = 1 << 1;
        /// SMIs.
        const SMI = 1 << 2;
        /// INIT.
        const INIT = 1 << 3;
        /// Virtual interrupts (VINTR): the guest can take the V_IRQ it was offered.
        const VINTR = 1 << 4;
        /// RDTSC.
        const RDTSC = 1 << 14;
        /// CPUID.
        const CPUID = 1 << 18;
        /// IRET.
        const IRET = 1 << 20;
        /// INVD.
        const INVD = 1 << 22;
        /// PAUSE.
        const PAUSE = 1 << 23;
        /// HLT.
        const HLT = 1 << 24;
        /// INVLPGA.
        const INVLPGA = 1 << 26;
        /// IN, OUT, INS, OUTS through the I/O permission map.
        const IOIO_PROT = 1 << 27;
        /// RDMSR and WRMSR through the MSR permission map.
        const MSR_PROT = 1 << 28;
        /// Task switches.
        const TASK_SWITCH = 1 << 29;
        /// Shutdown (a triple fault).
        const SHUTDOWN = 1 << 31;
    }
}

bitflags! {
    /// Intercept vector 4, at offset 010h (Table B-1).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct Intercepts2: u32 {
        /// VMRUN: "the VMRUN intercept bit must be set" (15.5.1, the consistency checks).
        const VMRUN = 1 << 0;
        const VMMCALL = 1 << 1;
        const VMLOAD = 1 << 2;
        const VMSAVE = 1 << 3;
        const STGI = 1 << 4;
        const CLGI = 1 << 5;
        const SKINIT = 1 << 6;
        const RDTSCP = 1 << 7;
        const ICEBP = 1 << 8;
        const WBINVD = 1 << 9;
        const MONITOR = 1 << 10;
        const MWAIT = 1 << 11;
        const MWAIT_CONDITIONAL = 1 << 12;
        const XSETBV = 1 << 13;
    }
}

/// Interrupt-control bits at offset 060h (Table B-1; 15.21.4 "Injecting Virtual (INTR)
/// Interrupts").
pub mod interrupt_control {
    /// V_TPR, bits 7:0.
    pub const V_TPR_MASK: u64 = 0xFF;
    /// V_IRQ: a virtual interrupt is pending.
    pub const V_IRQ: u64 = 1 << 8;
    /// V_INTR_PRIO, bits 19:16.
    pub const V_INTR_PRIO_SHIFT: u32 = 16;
    /// V_IGN_TPR: the virtual interrupt ignores the virtual TPR.
    pub const V_IGN_TPR: u64 = 1 << 20;
    /// V_INTR_MASKING: the guest's RFLAGS.IF masks only virtual interrupts; the host's IF at
    /// VMRUN governs physical ones.
    pub const V_INTR_MASKING: u64 = 1 << 24;
    /// V_INTR_VECTOR, bits 39:32.
    pub const V_INTR_VECTOR_SHIFT: u32 = 32;
    /// Every bit of a virtual interrupt: V_IRQ, its priority, V_IGN_TPR and its vector.
    pub const VIRTUAL_INTERRUPT: u64 =
        V_IRQ | 0xF << V_INTR_PRIO_SHIFT | V_IGN_TPR | 0xFF << V_INTR_VECTOR_SHIFT;
}

/// Interrupt-state bits at offset 068h.
pub mod interrupt_state {
    /// INTERRUPT_SHADOW: the guest is in an interrupt shadow (after STI or MOV SS).
    pub const SHADOW: u64 = 1 << 0;
}

/// NP_ENABLE, bit 0 of offset 090h: nested paging on (15.25.3 "Enabling Nested Paging").
pub const NESTED_PAGING: u64 = 1 << 0;

/// TLB_CONTROL values (15.16.1 "TLB Flush", Table 15-9 "TLB Control Byte Encodings").
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlbControl {
    /// Do nothing.
    Nothing = 0,
    /// Flush the entire TLB, every ASID's entries.
    FlushAll = 1,
    /// Flush this guest's ASID only (needs FlushByAsid, CPUID 8000_000AH:EDX bit 6).
    FlushAsid = 3,
}

/// The control area, offsets 000h-3FFh.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ControlArea {
    /// 000h: intercept CR reads (bits 15:0) and writes (bits 31:16).
    pub intercept_cr: u32,
    /// 004h: intercept DR reads (bits 15:0) and writes (bits 31:16).
    pub intercept_dr: u32,
    /// 008h: intercept exception vectors 0-31.
    pub intercept_exceptions: u32,
    /// 00Ch: [`Intercepts`].
    pub intercepts: u32,
    /// 010h: [`Intercepts2`].
    pub intercepts2: u32,
    /// 014h: intercept vector 5.
    pub intercepts3: u32,
    reserved_018: [u8; 0x24],
    /// 03Ch.
    pub pause_filter_threshold: u16,
    /// 03Eh.
    pub pause_filter_count: u16,
    /// 040h: the I/O permission map's physical address.
    pub iopm_base_pa: u64,
    /// 048h: the MSR permission map's physical address.
    pub msrpm_base_pa: u64,
    /// 050h.
    pub tsc_offset: u64,
    /// 058h: the guest's ASID (never 0, the host's).
    pub guest_asid: u32,
    /// 05Ch: [`TlbControl`].
    pub tlb_control: u8,
    reserved_05d: [u8; 3],
    /// 060h: [`interrupt_control`].
    pub interrupt_control: u64,
    /// 068h: [`interrupt_state`].
    pub interrupt_state: u64,
    /// 070h: EXITCODE.
    pub exit_code: u64,
    /// 078h: EXITINFO1.
    pub exit_info1: u64,
    /// 080h: EXITINFO2.
    pub exit_info2: u64,
    /// 088h: EXITINTINFO.
    pub exit_int_info: u64,
    /// 090h: [`NESTED_PAGING`] and the SEV bits.
    pub nested_control: u64,
    /// 098h: AVIC APIC_BAR.
    pub avic_apic_bar: u64,
    /// 0A0h: the GHCB's guest-physical address (SEV-ES).
    pub ghcb_pa: u64,
    /// 0A8h: EVENTINJ.
    pub event_injection: u64,
    /// 0B0h: N_CR3, the nested page table's root.
    pub nested_cr3: u64,
    /// 0B8h: LBR virtualization, virtual VMLOAD/VMSAVE.
    pub virtualization_extensions: u64,
    /// 0C0h: VMCB clean bits.
    pub clean_bits: u32,
    reserved_0c4: u32,
    /// 0C8h: nRIP, the next sequential instruction pointer (with NRIPS).
    pub next_rip: u64,
    /// 0D0h: bytes fetched (with decode assists).
    pub bytes_fetched: u8,
    /// 0D1h: the guest's instruction bytes (with decode assists).
    pub instruction_bytes: [u8; 15],
    reserved_0e0: [u8; 0x320],
}

/// The state-save area, offsets 400h-FFFh.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SaveArea {
    /// 400h.
    pub es: Segment,
    /// 410h.
    pub cs: Segment,
    /// 420h.
    pub ss: Segment,
    /// 430h.
    pub ds: Segment,
    /// 440h (VMLOAD/VMSAVE).
    pub fs: Segment,
    /// 450h (VMLOAD/VMSAVE).
    pub gs: Segment,
    /// 460h: only the limit and base count.
    pub gdtr: Segment,
    /// 470h (VMLOAD/VMSAVE).
    pub ldtr: Segment,
    /// 480h: only the limit and base count.
    pub idtr: Segment,
    /// 490h (VMLOAD/VMSAVE).
    pub tr: Segment,
    reserved_4a0: [u8; 0x2B],
    /// 4CBh: the current privilege level.
    pub cpl: u8,
    reserved_4cc: u32,
    /// 4D0h.
    pub efer: u64,
    reserved_4d8: [u8; 0x70],
    /// 548h.
    pub cr4: u64,
    /// 550h.
    pub cr3: u64,
    /// 558h.
    pub cr0: u64,
    /// 560h.
    pub dr7: u64,
    /// 568h.
    pub dr6: u64,
    /// 570h.
    pub rflags: u64,
    /// 578h.
    pub rip: u64,
    reserved_580: [u8; 0x58],
    /// 5D8h.
    pub rsp: u64,
    /// 5E0h.
    pub s_cet: u64,
    /// 5E8h.
    pub ssp: u64,
    /// 5F0h.
    pub isst_addr: u64,
    /// 5F8h.
    pub rax: u64,
    /// 600h-638h: the MSRs VMLOAD and VMSAVE move.
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    /// 640h.
    pub cr2: u64,
    reserved_648: [u8; 0x20],
    /// 668h: the guest's PAT.
    pub g_pat: u64,
    /// 670h: IA32_DEBUGCTL.
    pub dbgctl: u64,
    /// 678h-690h: last branch records.
    pub br_from: u64,
    pub br_to: u64,
    pub last_exception_from: u64,
    pub last_exception_to: u64,
    reserved_698: [u8; 0x968],
}

/// One VMCB: a 4 KiB-aligned page.
#[repr(C, align(4096))]
#[derive(Debug, Clone, Copy)]
pub struct Vmcb {
    pub control: ControlArea,
    pub save: SaveArea,
}

const _: () = assert!(core::mem::size_of::<Vmcb>() == 4096);

/// The power-on value of IA32_PAT: write-back, write-through, uncached-, uncached, repeated.
pub const PAT_POWER_ON: u64 = 0x0007_0406_0007_0406;

impl Vmcb {
    /// A VMCB of zeros.
    pub const ZERO: Self = Self {
        control: ControlArea {
            intercept_cr: 0,
            intercept_dr: 0,
            intercept_exceptions: 0,
            intercepts: 0,
            intercepts2: 0,
            intercepts3: 0,
            reserved_018: [0; 0x24],
            pause_filter_threshold: 0,
            pause_filter_count: 0,
            iopm_base_pa: 0,
            msrpm_base_pa: 0,
            tsc_offset: 0,
            guest_asid: 0,
            tlb_control: 0,
            reserved_05d: [0; 3],
            interrupt_control: 0,
            interrupt_state: 0,
            exit_code: 0,
            exit_info1: 0,
            exit_info2: 0,
            exit_int_info: 0,
            nested_control: 0,
            avic_apic_bar: 0,
            ghcb_pa: 0,
            event_injection: 0,
            nested_cr3: 0,
            virtualization_extensions: 0,
            clean_bits: 0,
            reserved_0c4: 0,
            next_rip: 0,
            bytes_fetched: 0,
            instruction_bytes: [0; 15],
            reserved_0e0: [0; 0x320],
        },
        save: SaveArea {
            es: Segment::ZERO,
            cs: Segment::ZERO,
            ss: Segment::ZERO,
            ds: Segment::ZERO,
            fs: Segment::ZERO,
            gs: Segment::ZERO,
            gdtr: Segment::ZERO,
            ldtr: Segment::ZERO,
            idtr: Segment::ZERO,
            tr: Segment::ZERO,
            reserved_4a0: [0; 0x2B],
            cpl: 0,
            reserved_4cc: 0,
            efer: 0,
            reserved_4d8: [0; 0x70],
            cr4: 0,
            cr3: 0,
            cr0: 0,
            dr7: 0,
            dr6: 0,
            rflags: 0,
            rip: 0,
            reserved_580: [0; 0x58],
            rsp: 0,
            s_cet: 0,
            ssp: 0,
            isst_addr: 0,
            rax: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            cr2: 0,
            reserved_648: [0; 0x20],
            g_pat: 0,
            dbgctl: 0,
            br_from: 0,
            br_to: 0,
            last_exception_from: 0,
            last_exception_to: 0,
            reserved_698: [0; 0x968],
        },
    };

    /// The intercept vector 3 as flags.
    pub fn intercepts(&self) -> Intercepts {
        Intercepts::from_bits_retain(self.control.intercepts)
    }

    /// Sets or clears `which` in intercept vector 3.
    pub fn set_intercept(&mut self, which: Intercepts, on: bool) {
        let mut intercepts = self.intercepts();
        intercepts.set(which, on);
        self.control.intercepts = intercepts.bits();
    }

    /// Offers the guest a virtual interrupt (V_IRQ, ignoring the virtual TPR, highest
    /// priority) with the VINTR intercept on, or withdraws both: the exit comes as soon as the
    /// guest can take an interrupt, and the hypervisor injects the real one through EVENTINJ
    /// (15.21.4 "Injecting Virtual (INTR) Interrupts").
    pub fn set_interrupt_window(&mut self, open: bool) {
        use interrupt_control::*;
        self.control.interrupt_control &= !VIRTUAL_INTERRUPT;
        if open {
            self.control.interrupt_control |= V_IRQ | V_IGN_TPR | 0xF << V_INTR_PRIO_SHIFT;
        }
        self.set_intercept(Intercepts::VINTR, open);
    }

    /// Offers the guest the interrupt `vector` as a virtual interrupt (V_IRQ and
    /// V_INTR_VECTOR, its priority class, ignoring the virtual TPR), with the VINTR intercept
    /// off: the processor delivers it through the guest's IDT as soon as RFLAGS.IF and the
    /// interrupt shadow allow, and clears V_IRQ when it does (15.21.4). This, not EVENTINJ, is
    /// how the hypervisor delivers external interrupts: QEMU's TCG delivers an EVENTINJ
    /// interrupt a second time, as an exception and whatever RFLAGS.IF says, when its
    /// execution loop is asked to stop before the guest's next exit (QEMU-SVM.md).
    pub fn offer_interrupt(&mut self, vector: u8) {
        use interrupt_control::*;
        self.control.interrupt_control &= !VIRTUAL_INTERRUPT;
        self.control.interrupt_control |= V_IRQ
            | V_IGN_TPR
            | u64::from(vector >> 4) << V_INTR_PRIO_SHIFT
            | u64::from(vector) << V_INTR_VECTOR_SHIFT;
        self.set_intercept(Intercepts::VINTR, false);
    }

    /// True while V_IRQ is set: an offered interrupt not yet taken, or an open window
    /// ([`Self::set_interrupt_window`]).
    pub fn interrupt_window(&self) -> bool {
        self.control.interrupt_control & interrupt_control::V_IRQ != 0
    }
}

impl Segment {
    /// A segment of zeros.
    pub const ZERO: Self = Self {
        selector: 0,
        attributes: 0,
        limit: 0,
        base: 0,
    };

    /// A flat (base 0, 4 GiB) segment with `selector` and `attributes`.
    pub const fn flat(selector: u16, attributes: u16) -> Self {
        Self {
            selector,
            attributes,
            limit: 0xFFFF_FFFF,
            base: 0,
        }
    }
}

/// CR intercept bits: a read of CR`n` is bit `n`, a write bit `16 + n` (Table B-1).
pub const fn cr_intercepts(reads: &[u8], writes: &[u8]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < reads.len() {
        bits |= 1 << reads[i];
        i += 1;
    }
    let mut i = 0;
    while i < writes.len() {
        bits |= 1 << (16 + writes[i]);
        i += 1;
    }
    bits
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    /// Offsets from Appendix B, Tables B-1 and B-2.
    #[test]
    fn fields_sit_where_appendix_b_puts_them() {
        assert_eq!(offset_of!(ControlArea, intercept_exceptions), 0x008);
        assert_eq!(offset_of!(ControlArea, intercepts), 0x00C);
        assert_eq!(offset_of!(ControlArea, intercepts2), 0x010);
        assert_eq!(offset_of!(ControlArea, pause_filter_count), 0x03E);
        assert_eq!(offset_of!(ControlArea, iopm_base_pa), 0x040);
        assert_eq!(offset_of!(ControlArea, msrpm_base_pa), 0x048);
        assert_eq!(offset_of!(ControlArea, tsc_offset), 0x050);
        assert_eq!(offset_of!(ControlArea, guest_asid), 0x058);
        assert_eq!(offset_of!(ControlArea, tlb_control), 0x05C);
        assert_eq!(offset_of!(ControlArea, interrupt_control), 0x060);
        assert_eq!(offset_of!(ControlArea, interrupt_state), 0x068);
        assert_eq!(offset_of!(ControlArea, exit_code), 0x070);
        assert_eq!(offset_of!(ControlArea, exit_info1), 0x078);
        assert_eq!(offset_of!(ControlArea, exit_info2), 0x080);
        assert_eq!(offset_of!(ControlArea, exit_int_info), 0x088);
        assert_eq!(offset_of!(ControlArea, nested_control), 0x090);
        assert_eq!(offset_of!(ControlArea, event_injection), 0x0A8);
        assert_eq!(offset_of!(ControlArea, nested_cr3), 0x0B0);
        assert_eq!(offset_of!(ControlArea, clean_bits), 0x0C0);
        assert_eq!(offset_of!(ControlArea, next_rip), 0x0C8);
        assert_eq!(offset_of!(ControlArea, instruction_bytes), 0x0D1);
        assert_eq!(core::mem::size_of::<ControlArea>(), 0x400);
        let save = |field: usize| 0x400 + field;
        assert_eq!(save(offset_of!(SaveArea, es)), 0x400);
        assert_eq!(save(offset_of!(SaveArea, cs)), 0x410);
        assert_eq!(save(offset_of!(SaveArea, ds)), 0x430);
        assert_eq!(save(offset_of!(SaveArea, gdtr)), 0x460);
        assert_eq!(save(offset_of!(SaveArea, tr)), 0x490);
        assert_eq!(save(offset_of!(SaveArea, cpl)), 0x4CB);
        assert_eq!(save(offset_of!(SaveArea, efer)), 0x4D0);
        assert_eq!(save(offset_of!(SaveArea, cr4)), 0x548);
        assert_eq!(save(offset_of!(SaveArea, cr3)), 0x550);
        assert_eq!(save(offset_of!(SaveArea, cr0)), 0x558);
        assert_eq!(save(offset_of!(SaveArea, dr7)), 0x560);
        assert_eq!(save(offset_of!(SaveArea, rflags)), 0x570);
        assert_eq!(save(offset_of!(SaveArea, rip)), 0x578);
        assert_eq!(save(offset_of!(SaveArea, rsp)), 0x5D8);
        assert_eq!(save(offset_of!(SaveArea, rax)), 0x5F8);
        assert_eq!(save(offset_of!(SaveArea, star)), 0x600);
        assert_eq!(save(offset_of!(SaveArea, kernel_gs_base)), 0x620);
        assert_eq!(save(offset_of!(SaveArea, sysenter_eip)), 0x638);
        assert_eq!(save(offset_of!(SaveArea, cr2)), 0x640);
        assert_eq!(save(offset_of!(SaveArea, g_pat)), 0x668);
        assert_eq!(save(offset_of!(SaveArea, dbgctl)), 0x670);
        assert_eq!(save(offset_of!(SaveArea, last_exception_to)), 0x690);
        assert_eq!(core::mem::size_of::<Segment>(), 16);
    }

    #[test]
    fn the_interrupt_window_offers_v_irq_with_the_vintr_intercept() {
        let mut vmcb = Vmcb::ZERO;
        vmcb.control.interrupt_control = interrupt_control::V_INTR_MASKING | 0x5;
        vmcb.set_interrupt_window(true);
        assert!(vmcb.interrupt_window());
        assert!(vmcb.intercepts().contains(Intercepts::VINTR));
        assert_eq!(
            vmcb.control.interrupt_control,
            interrupt_control::V_INTR_MASKING
                | 0x5
                | interrupt_control::V_IRQ
                | interrupt_control::V_IGN_TPR
                | 0xF << 16
        );
        vmcb.set_interrupt_window(false);
        assert!(!vmcb.interrupt_window());
        assert!(!vmcb.intercepts().contains(Intercepts::VINTR));
        // The masking bit and the virtual TPR stay.
        assert_eq!(
            vmcb.control.interrupt_control,
            interrupt_control::V_INTR_MASKING | 0x5
        );
    }

    #[test]
    fn an_offered_interrupt_carries_its_vector_and_priority_without_the_vintr_intercept() {
        let mut vmcb = Vmcb::ZERO;
        vmcb.control.interrupt_control = interrupt_control::V_INTR_MASKING | 0x5;
        vmcb.set_interrupt_window(true);
        vmcb.offer_interrupt(0x2E);
        assert!(vmcb.interrupt_window());
        assert!(!vmcb.intercepts().contains(Intercepts::VINTR));
        assert_eq!(
            vmcb.control.interrupt_control,
            interrupt_control::V_INTR_MASKING
                | 0x5
                | interrupt_control::V_IRQ
                | interrupt_control::V_IGN_TPR
                | 0x2 << 16
                | 0x2E << 32
        );
        // A window opened after an offer leaves no stale vector behind, nor does withdrawing.
        vmcb.set_interrupt_window(true);
        assert_eq!(vmcb.control.interrupt_control >> 32, 0);
        assert!(vmcb.intercepts().contains(Intercepts::VINTR));
        vmcb.offer_interrupt(0xFF);
        vmcb.set_interrupt_window(false);
        assert_eq!(
            vmcb.control.interrupt_control,
            interrupt_control::V_INTR_MASKING | 0x5
        );
    }

    #[test]
    fn code_size_and_privilege_come_from_the_attributes() {
        let code32 = Segment::flat(0x08, attributes::CODE32);
        assert_eq!(code32.code_bits(false), 32);
        assert_eq!(code32.code_bits(true), 32);
        assert_eq!(code32.dpl(), 0);
        let code64 = Segment::flat(0x08, 0xA9B);
        assert_eq!(code64.code_bits(true), 64);
        assert_eq!(code64.code_bits(false), 16, "L without LMA: D clear");
        let user16 = Segment::flat(0x1B, 0x0FB);
        assert_eq!(user16.code_bits(false), 16);
        assert_eq!(user16.dpl(), 3);
    }

    #[test]
    fn cr_intercept_bits() {
        assert_eq!(cr_intercepts(&[8], &[3, 8]), 1 << 8 | 1 << 19 | 1 << 24);
        assert_eq!(cr_intercepts(&[], &[]), 0);
    }
}
