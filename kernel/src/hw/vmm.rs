//! Turning VMX on: capability checks (with a clear message for whatever is missing), VMXON,
//! and the VMCS parts every VM shares: controls, bitmaps and host state.
//!
//! Reference: Intel SDM 325462-083US (March 2024), volume 3C, chapters 25-29.

use alloc::string::String;
use core::fmt;

use carousel_kernel::memory::Frames;
use carousel_protocol::record::TscSource;
use carousel_vmx::addr::HostPhysAddr;
use carousel_vmx::controls::{self, Capabilities, MissingFeature, Negotiated, Wanted};
use carousel_vmx::ept::EptPointer;
use carousel_vmx::fail::{VmFail, VmxFailure};
use carousel_vmx::fields::*;
use carousel_vmx::instructions as vmx;

use super::arch::{self, selector, HostTables, IA32_EFER, IA32_FEATURE_CONTROL};
use super::physical::HwFrames;
use super::vcpu::{entry_cr0, CurrentVmcs, ENTRY_RFLAGS};

/// CR0.NE: VMX operation requires it (IA32_VMX_CR0_FIXED0); the guest does not see it.
pub const CR0_NE: u64 = 1 << 5;
/// CR4.VMXE: VMX operation requires it (IA32_VMX_CR4_FIXED0); the guest does not see it.
pub const CR4_VMXE: u64 = 1 << 13;
/// CR4.OSFXSR and CR4.OSXMMEXCPT: FXSAVE/FXRSTOR and SSE are enabled.
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.OSXSAVE: XSAVE and XSETBV are enabled.
const CR4_OSXSAVE: u64 = 1 << 18;
/// CPUID.1:ECX bit 26: XSAVE.
const CPUID_ECX_XSAVE: u32 = 1 << 26;

/// What the exit handlers need to know of this CPU: the CR4 bits a guest may set, the XCR0
/// components its vCPUs can switch, EPT A/D flags, MAXPHYADDR.
pub fn cpu_facts(vmx: &Vmx) -> carousel_kernel::vm::CpuFacts {
    let xcr0_supported = if vmx.xsave {
        let [eax, _, _, edx] = arch::cpuid(0xD, 0);
        let supported = u64::from(eax) | u64::from(edx) << 32;
        // Only components whose place in the standard format fits the vCPU's area.
        (0..64u32)
            .filter(|&bit| supported & 1 << bit != 0)
            .filter(|&bit| {
                bit < 2 || {
                    let [size, offset, _, _] = arch::cpuid(0xD, bit);
                    (offset as usize) + (size as usize) <= super::arch::XSTATE_BYTES
                }
            })
            .fold(0, |mask, bit| mask | 1 << bit)
    } else {
        0
    };
    // SMX is not offered (CPUID hides it), nor VMX.
    const CR4_SMXE: u64 = 1 << 14;
    let mut cr4_allowed = vmx.negotiated.cr4_fixed1 & !CR4_VMXE & !CR4_SMXE;
    if !vmx.xsave {
        cr4_allowed &= !CR4_OSXSAVE;
    }
    let physical_address_bits = (arch::cpuid(0x8000_0008, 0)[0] & 0xFF) as u8;
    carousel_kernel::vm::CpuFacts {
        cr4_allowed,
        xcr0_supported,
        accessed_dirty: vmx.negotiated.ept_accessed_dirty,
        physical_address_bits: if physical_address_bits == 0 {
            36
        } else {
            physical_address_bits
        },
        nested: carousel_kernel::vm::NestedPaging::Ept,
    }
}

/// CR0.PE and CR0.PG: free for the guest under "unrestricted guest".
const CR0_PE_PG: u64 = (1 << 0) | (1 << 31);

/// Why VMX cannot be used.
#[derive(Debug)]
pub enum VmxError {
    /// The CPU or its firmware lacks something Carousel needs.
    Missing(MissingFeature),
    /// VMXON itself failed.
    VmxonFailed(VmFail),
    /// No frame for the VMXON region or the bitmaps.
    OutOfMemory,
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(feature) => write!(f, "it lacks {feature}"),
            Self::VmxonFailed(error) => write!(f, "VMXON failed: {error}"),
            Self::OutOfMemory => write!(f, "no memory for the VMX regions"),
        }
    }
}

impl From<MissingFeature> for VmxError {
    fn from(feature: MissingFeature) -> Self {
        Self::Missing(feature)
    }
}

/// VMX operation, entered: what every VMCS shares.
#[derive(Debug)]
pub struct Vmx {
    pub negotiated: Negotiated,
    /// The CPU has XSAVE and the host turned it on (CR4.OSXSAVE): vCPUs switch XCR0 and the
    /// XSAVE components.
    pub xsave: bool,
    io_bitmap_a: HostPhysAddr,
    io_bitmap_b: HostPhysAddr,
    msr_bitmap: HostPhysAddr,
    host: HostTables,
}

fn filled_frame(frames: &mut HwFrames, value: u8) -> Result<HostPhysAddr, VmxError> {
    let frame = frames.allocate_zeroed().ok_or(VmxError::OutOfMemory)?;
    frames.bytes_mut(frame).fill(value);
    Ok(frame)
}

impl Vmx {
    /// Checks the CPU, enables VMX and executes VMXON.
    ///
    /// See: 25.7 "Enabling and Entering VMX Operation" and 25.8 "Restrictions on VMX
    /// Operation" (the CR0/CR4 fixed bits; paraphrased: a bit that is 1 in IA32_VMX_CR0_FIXED0
    /// must be 1 in CR0 in VMX operation, and a bit that is 0 in IA32_VMX_CR0_FIXED1 must be 0;
    /// likewise for CR4).
    pub fn enable(host: HostTables, frames: &mut HwFrames) -> Result<Self, VmxError> {
        controls::check_cpuid(arch::cpuid(1, 0)[2])?;
        // SAFETY: IA32_FEATURE_CONTROL exists on every CPU that reports VMX in CPUID.
        let feature_control = unsafe { arch::rdmsr(IA32_FEATURE_CONTROL) };
        if let Some(value) = controls::feature_control(feature_control)? {
            // SAFETY: setting the lock and "VMX outside SMX" bits only permits VMXON.
            unsafe { arch::wrmsr(IA32_FEATURE_CONTROL, value) };
        }
        // SAFETY: every capability MSR read is guarded by the bits that announce it.
        let capabilities = Capabilities::from_msrs(|msr| unsafe { arch::rdmsr(msr) });
        // Host interrupts must never reach a guest's IDT: they exit (and are acknowledged) instead.
        // The host masks its PIC, so none should come.
        // CR3 loads exit so that guest time is known per address space (and idle guests
        // that never HLT can be recognised).
        let wanted = Wanted {
            external_interrupt_exiting: true,
            acknowledge_interrupt_on_exit: true,
            cr3_load_exiting: true,
        };
        let negotiated = capabilities.negotiate(&wanted)?;
        // The guests' x87/SSE and XSAVE state is switched with FXSAVE/XSAVE, which need
        // CR4.OSFXSR and CR4.OSXSAVE (the hypervisor itself uses neither: it is soft-float).
        let xsave = arch::cpuid(1, 0)[2] & CPUID_ECX_XSAVE != 0;
        let mut cr4 = arch::cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT;
        if xsave {
            cr4 |= CR4_OSXSAVE;
        }
        // SAFETY: the fixed bits only add CR0.NE and CR4.VMXE on a running long-mode system, and
        // the FXSAVE/XSAVE enables change nothing the hypervisor's code relies on; paging,
        // protection and the mappings stay as they are.
        unsafe {
            arch::write_cr0(negotiated.fixed_cr0(arch::cr0()));
            arch::write_cr4(negotiated.fixed_cr4(cr4));
        }
        let vmxon_region = filled_frame(frames, 0)?;
        frames.bytes_mut(vmxon_region)[..4]
            .copy_from_slice(&negotiated.vmcs_revision.to_le_bytes());
        // SAFETY: CR0/CR4 satisfy the fixed bits, IA32_FEATURE_CONTROL allows VMXON, and the
        // region is a zeroed 4 KiB frame starting with the revision identifier (26.11.5 "VMXON
        // Region": "Before executing VMXON, software should write the VMCS revision identifier
        // ... to the VMXON region"); the frame is never freed.
        unsafe { vmx::vmxon(vmxon_region) }.map_err(VmxError::VmxonFailed)?;
        Ok(Self {
            negotiated,
            xsave,
            // Every port and every MSR exits: all bitmap bits set (26.6.4 "I/O-Bitmap
            // Addresses", 26.6.9 "MSR-Bitmap Address").
            io_bitmap_a: filled_frame(frames, 0xFF)?,
            io_bitmap_b: filled_frame(frames, 0xFF)?,
            msr_bitmap: filled_frame(frames, 0xFF)?,
            host,
        })
    }

    /// Writes the execution, exit and entry controls of the current VMCS.
    ///
    /// # Safety
    /// The bitmaps and the EPT must stay allocated for as long as the VMCS is used.
    pub unsafe fn write_controls(
        &self,
        vmcs: &mut CurrentVmcs<'_>,
        ept: EptPointer,
        vpid: u16,
    ) -> Result<(), VmxFailure> {
        let n = &self.negotiated;
        let low32 = |value: u64| value & 0xFFFF_FFFF;
        // The guest owns every CR0/CR4 bit but those VMX fixes (26.6.6 "Guest/Host Masks and
        // Read Shadows for CR0 and CR4"): writes to those exit and are checked.
        let cr0_mask = (n.cr0_fixed0 & !CR0_PE_PG) | low32(!n.cr0_fixed1);
        let cr4_mask = n.cr4_fixed0 | low32(!n.cr4_fixed1);
        // SAFETY: the token makes this VMCS current; these are its control fields, with values
        // negotiated against this CPU's capability MSRs.
        unsafe {
            vmcs.write32(PIN_BASED_VM_EXECUTION_CONTROLS, n.pin.bits())?;
            vmcs.write32(
                PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
                n.primary.bits(),
            )?;
            vmcs.write32(
                SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
                n.secondary.bits(),
            )?;
            vmcs.write32(VM_EXIT_CONTROLS, n.exit.bits())?;
            vmcs.write32(VM_ENTRY_CONTROLS, n.entry.bits())?;
            vmcs.write32(EXCEPTION_BITMAP, 0)?;
            vmcs.write32(PAGE_FAULT_ERROR_CODE_MASK, 0)?;
            vmcs.write32(PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
            vmcs.write32(CR3_TARGET_COUNT, 0)?;
            vmcs.write32(VM_EXIT_MSR_STORE_COUNT, 0)?;
            vmcs.write32(VM_EXIT_MSR_LOAD_COUNT, 0)?;
            vmcs.write32(VM_ENTRY_MSR_LOAD_COUNT, 0)?;
            vmcs.write64(IO_BITMAP_A, self.io_bitmap_a.as_u64())?;
            vmcs.write64(IO_BITMAP_B, self.io_bitmap_b.as_u64())?;
            vmcs.write64(MSR_BITMAP, self.msr_bitmap.as_u64())?;
            vmcs.write64(EPT_POINTER, ept.bits())?;
            vmcs.write16(VIRTUAL_PROCESSOR_ID, vpid)?;
            vmcs.write_natural(CR0_GUEST_HOST_MASK, cr0_mask)?;
            vmcs.write_natural(CR4_GUEST_HOST_MASK, cr4_mask)?;
        }
        Ok(())
    }

    /// Writes the host-state area of the current VMCS: where a VM exit lands (26.5 "Host-State
    /// Area"). HOST_RSP and HOST_RIP are written by `enter` itself.
    ///
    /// # Safety
    /// The host tables must stay as they are for as long as the VMCS is used.
    pub unsafe fn write_host_state(&self, vmcs: &mut CurrentVmcs<'_>) -> Result<(), VmxFailure> {
        // SAFETY: the token makes this VMCS current; the values are the hypervisor's own state,
        // which does not change after boot.
        unsafe {
            vmcs.write_natural(HOST_CR0, arch::cr0())?;
            vmcs.write_natural(HOST_CR3, arch::cr3())?;
            vmcs.write_natural(HOST_CR4, arch::cr4())?;
            vmcs.write16(HOST_CS_SELECTOR, selector::CODE)?;
            for field in [HOST_SS_SELECTOR, HOST_DS_SELECTOR, HOST_ES_SELECTOR] {
                vmcs.write16(field, selector::DATA)?;
            }
            vmcs.write16(HOST_FS_SELECTOR, 0)?;
            vmcs.write16(HOST_GS_SELECTOR, 0)?;
            vmcs.write16(HOST_TR_SELECTOR, selector::TSS)?;
            vmcs.write_natural(HOST_FS_BASE, 0)?;
            vmcs.write_natural(HOST_GS_BASE, 0)?;
            vmcs.write_natural(HOST_TR_BASE, self.host.tss_base)?;
            vmcs.write_natural(HOST_GDTR_BASE, self.host.gdt_base)?;
            vmcs.write_natural(HOST_IDTR_BASE, self.host.idt_base)?;
            vmcs.write32(HOST_IA32_SYSENTER_CS, 0)?;
            vmcs.write_natural(HOST_IA32_SYSENTER_ESP, 0)?;
            vmcs.write_natural(HOST_IA32_SYSENTER_EIP, 0)?;
            vmcs.write64(HOST_IA32_EFER, arch::rdmsr(IA32_EFER))?;
        }
        Ok(())
    }
}

/// The CPU's brand string, or its vendor when it has none.
pub fn cpu_name() -> String {
    let cpuid = raw_cpuid::CpuId::new();
    if let Some(brand) = cpuid.get_processor_brand_string() {
        return String::from(brand.as_str().trim());
    }
    cpuid.get_vendor_info().map_or_else(
        || String::from("unknown"),
        |vendor| String::from(vendor.as_str()),
    )
}

/// The TSC frequency: the lab file's choice when it made one (in Bochs the TSC counts
/// instructions, so the lab's `ips` is the only meaningful value), else measured against the
/// PIT.
pub fn tsc_frequency(configured_hz: u64) -> (u64, TscSource) {
    if configured_hz != 0 {
        return (configured_hz, TscSource::LabFile);
    }
    (calibrate_against_pit(), TscSource::Pit)
}

/// Counts TSC cycles across 10 ms of PIT channel 2 (one-shot, gate through port 0x61).
fn calibrate_against_pit() -> u64 {
    /// PIT input clock, Hz.
    const PIT_HZ: u64 = 1_193_182;
    /// 10 ms in PIT ticks.
    const TICKS: u16 = (PIT_HZ / 100) as u16;
    // SAFETY: ports 0x61 (speaker gate) and 0x42/0x43 (PIT channel 2) belong to the hypervisor;
    // channel 2 only drives the PC speaker, which stays disabled (bit 1 of 0x61 cleared).
    unsafe {
        let gate = arch::inb(0x61);
        arch::outb(0x61, (gate & !0x02) | 0x01);
        arch::outb(0x43, 0xB0); // channel 2, lobyte/hibyte, mode 0 (one-shot), binary
        arch::outb(0x42, TICKS as u8);
        arch::outb(0x42, (TICKS >> 8) as u8);
        let start = arch::rdtsc();
        while arch::inb(0x61) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        let cycles = arch::rdtsc() - start;
        arch::outb(0x61, gate);
        cycles * 100
    }
}

/// Access rights (SDM 26.4.1 "Guest Register State", Table 26-2): flat 32-bit code, execute/read,
/// accessed, present, DPL 0, 4 KiB granularity.
const CODE32_ACCESS: u32 = 0xC09B;
/// Flat 32-bit data, read/write, accessed, present, DPL 0.
const DATA32_ACCESS: u32 = 0xC093;
/// Busy 32-bit TSS, present: TR must be usable at VM entry (SDM 28.3.1.2 "Checks on Guest
/// Segment Registers", paraphrased: TR must not be unusable, and outside IA-32e mode its type
/// must be 3 (16-bit busy TSS) or 11 (32-bit busy TSS)).
const TSS32_BUSY_ACCESS: u32 = 0x008B;
/// Segment-unusable bit.
const UNUSABLE: u32 = 1 << 16;

/// Guest state of a multiboot entry (Multiboot 0.6.96, 3.2 "Machine state"; xv6 also needs
/// CS = 0x08 and DS/ES/SS = 0x10, XV6-CONTRACT 1.3).
///
/// # Safety
/// `vmcs` is a new VM's VMCS: these are its guest-state fields only.
pub unsafe fn write_guest_entry_state(
    vmcs: &mut CurrentVmcs<'_>,
    entry: u64,
) -> Result<(), VmxFailure> {
    let (cr0, cr0_shadow) = entry_cr0();
    // SAFETY: the token makes this VMCS current; these are guest-state fields only, with the
    // values a multiboot kernel expects.
    unsafe {
        vmcs.write16(GUEST_CS_SELECTOR, 0x08)?;
        vmcs.write32(GUEST_CS_ACCESS_RIGHTS, CODE32_ACCESS)?;
        for (selector, access) in [
            (GUEST_DS_SELECTOR, GUEST_DS_ACCESS_RIGHTS),
            (GUEST_ES_SELECTOR, GUEST_ES_ACCESS_RIGHTS),
            (GUEST_SS_SELECTOR, GUEST_SS_ACCESS_RIGHTS),
            (GUEST_FS_SELECTOR, GUEST_FS_ACCESS_RIGHTS),
            (GUEST_GS_SELECTOR, GUEST_GS_ACCESS_RIGHTS),
        ] {
            vmcs.write16(selector, 0x10)?;
            vmcs.write32(access, DATA32_ACCESS)?;
        }
        for (base, limit) in [
            (GUEST_CS_BASE, GUEST_CS_LIMIT),
            (GUEST_DS_BASE, GUEST_DS_LIMIT),
            (GUEST_ES_BASE, GUEST_ES_LIMIT),
            (GUEST_SS_BASE, GUEST_SS_LIMIT),
            (GUEST_FS_BASE, GUEST_FS_LIMIT),
            (GUEST_GS_BASE, GUEST_GS_LIMIT),
        ] {
            vmcs.write_natural(base, 0)?;
            vmcs.write32(limit, 0xFFFF_FFFF)?;
        }
        vmcs.write16(GUEST_LDTR_SELECTOR, 0)?;
        vmcs.write_natural(GUEST_LDTR_BASE, 0)?;
        vmcs.write32(GUEST_LDTR_LIMIT, 0)?;
        vmcs.write32(GUEST_LDTR_ACCESS_RIGHTS, UNUSABLE)?;
        vmcs.write16(GUEST_TR_SELECTOR, 0)?;
        vmcs.write_natural(GUEST_TR_BASE, 0)?;
        vmcs.write32(GUEST_TR_LIMIT, 0x67)?;
        vmcs.write32(GUEST_TR_ACCESS_RIGHTS, TSS32_BUSY_ACCESS)?;
        vmcs.write_natural(GUEST_GDTR_BASE, 0)?;
        vmcs.write32(GUEST_GDTR_LIMIT, 0xFFFF)?;
        vmcs.write_natural(GUEST_IDTR_BASE, 0)?;
        vmcs.write32(GUEST_IDTR_LIMIT, 0xFFFF)?;

        vmcs.write_natural(GUEST_CR0, cr0)?;
        vmcs.write_natural(CR0_READ_SHADOW, cr0_shadow)?;
        vmcs.write_natural(GUEST_CR3, 0)?;
        vmcs.write_natural(GUEST_CR4, CR4_VMXE)?;
        vmcs.write_natural(CR4_READ_SHADOW, 0)?;
        vmcs.write_natural(GUEST_DR7, 0x400)?;
        vmcs.write_natural(GUEST_RSP, 0)?;
        vmcs.write_natural(GUEST_RIP, entry)?;
        vmcs.write_natural(GUEST_RFLAGS, ENTRY_RFLAGS)?;
        vmcs.write64(GUEST_IA32_EFER, 0)?;
        vmcs.write64(GUEST_IA32_DEBUGCTL, 0)?;
        vmcs.write32(GUEST_IA32_SYSENTER_CS, 0)?;
        vmcs.write_natural(GUEST_IA32_SYSENTER_ESP, 0)?;
        vmcs.write_natural(GUEST_IA32_SYSENTER_EIP, 0)?;
        vmcs.write_natural(GUEST_PENDING_DEBUG_EXCEPTIONS, 0)?;
        vmcs.write32(GUEST_INTERRUPTIBILITY_STATE, 0)?;
        vmcs.write32(GUEST_ACTIVITY_STATE, 0)?;
        // No shadow VMCS: 28.3.1.5 "Checks on Guest Non-Register State" checks the VMCS link
        // pointer only if it is not FFFFFFFF_FFFFFFFFH (paraphrased).
        vmcs.write64(VMCS_LINK_POINTER, u64::MAX)?;
        vmcs.write32(VM_ENTRY_INTERRUPTION_INFORMATION, 0)?;
    }
    Ok(())
}
