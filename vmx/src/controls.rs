//! VM-execution, VM-exit and VM-entry controls, and their negotiation against the VMX
//! capability MSRs.
//!
//! Reference: Intel SDM, Order Number 325462-083US, March 2024: 25.7 "Enabling and Entering VMX
//! Operation", 25.8 "Restrictions on VMX Operation", 26.6 "VM-Execution Control Fields", 26.7
//! "VM-Exit Control Fields", 26.8 "VM-Entry Control Fields", 27.5.1 "VMX-Preemption Timer", and
//! Appendix A "VMX Capability Reporting Facility".
//!
//! Everything here is pure: [`Capabilities`] is plain data the kernel fills with RDMSR (through
//! [`Capabilities::from_msrs`]), and [`Capabilities::negotiate`] turns it into the control values
//! Carousel writes into every VMCS, or names the first feature the CPU lacks.

use core::fmt;

use bitflags::bitflags;

/// Architectural MSR numbers read before VMXON (SDM Appendix A).
pub mod msr {
    /// IA32_FEATURE_CONTROL: lock bit and "enable VMX outside SMX".
    pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
    /// IA32_VMX_BASIC: VMCS revision, region size, TRUE-control support (A.1).
    pub const IA32_VMX_BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS (A.3.1).
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS (A.3.2).
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS (A.4).
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS (A.5).
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    /// IA32_VMX_MISC: preemption-timer rate, activity states (A.6).
    pub const IA32_VMX_MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0: CR0 bits that must be 1 in VMX operation (A.7).
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1: CR0 bits that may be 1 in VMX operation (A.7).
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0: CR4 bits that must be 1 in VMX operation (A.8).
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1: CR4 bits that may be 1 in VMX operation (A.8).
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_PROCBASED_CTLS2 (A.3.3); exists only if secondary controls may be activated.
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
    /// IA32_VMX_EPT_VPID_CAP (A.10); exists only if EPT or VPID may be enabled.
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
    /// IA32_VMX_TRUE_PINBASED_CTLS (A.3.1); exists only if IA32_VMX_BASIC bit 55 is 1.
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
    /// IA32_VMX_TRUE_PROCBASED_CTLS (A.3.2).
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
    /// IA32_VMX_TRUE_EXIT_CTLS (A.4).
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
    /// IA32_VMX_TRUE_ENTRY_CTLS (A.5).
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
}

bitflags! {
    /// Pin-based VM-execution controls (26.6.1).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct PinBased: u32 {
        /// External interrupts cause VM exits.
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        /// NMIs cause VM exits.
        const NMI_EXITING = 1 << 3;
        /// NMIs are never blocked and "blocking by NMI" means virtual-NMI blocking.
        const VIRTUAL_NMIS = 1 << 5;
        /// The VMX-preemption timer counts down in non-root operation and exits at zero.
        const ACTIVATE_VMX_PREEMPTION_TIMER = 1 << 6;
        /// Posted-interrupt processing.
        const PROCESS_POSTED_INTERRUPTS = 1 << 7;
    }

    /// Primary processor-based VM-execution controls (26.6.2).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct PrimaryProcessorBased: u32 {
        /// Exit at the start of any instruction when RFLAGS.IF = 1 and nothing blocks interrupts.
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// RDTSC and friends add the TSC offset.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// HLT exits.
        const HLT_EXITING = 1 << 7;
        /// INVLPG exits.
        const INVLPG_EXITING = 1 << 9;
        /// MWAIT exits.
        const MWAIT_EXITING = 1 << 10;
        /// RDPMC exits.
        const RDPMC_EXITING = 1 << 11;
        /// RDTSC and RDTSCP exit.
        const RDTSC_EXITING = 1 << 12;
        /// MOV to CR3 exits (unless the value is a CR3-target value).
        const CR3_LOAD_EXITING = 1 << 15;
        /// MOV from CR3 exits.
        const CR3_STORE_EXITING = 1 << 16;
        /// The tertiary processor-based controls are used.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// MOV to CR8 exits.
        const CR8_LOAD_EXITING = 1 << 19;
        /// MOV from CR8 exits.
        const CR8_STORE_EXITING = 1 << 20;
        /// TPR virtualization through the virtual-APIC page.
        const USE_TPR_SHADOW = 1 << 21;
        /// Exit at the start of any instruction when there is no virtual-NMI blocking.
        const NMI_WINDOW_EXITING = 1 << 22;
        /// MOV DR exits.
        const MOV_DR_EXITING = 1 << 23;
        /// Every I/O instruction exits (ignored when I/O bitmaps are used).
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        /// The I/O bitmaps decide which I/O instructions exit.
        const USE_IO_BITMAPS = 1 << 25;
        /// The monitor trap flag is enabled.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// The MSR bitmaps decide which RDMSR / WRMSR exit.
        const USE_MSR_BITMAPS = 1 << 28;
        /// MONITOR exits.
        const MONITOR_EXITING = 1 << 29;
        /// PAUSE exits.
        const PAUSE_EXITING = 1 << 30;
        /// The secondary processor-based controls are used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }

    /// Secondary processor-based VM-execution controls (26.6.2).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct SecondaryProcessorBased: u32 {
        /// Accesses to the APIC-access page are treated specially.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Guest-physical addresses are translated through EPT.
        const ENABLE_EPT = 1 << 1;
        /// LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR exit.
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        /// RDTSCP does not raise #UD.
        const ENABLE_RDTSCP = 1 << 3;
        /// x2APIC MSR accesses are virtualized.
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        /// Linear translations are tagged with the VPID.
        const ENABLE_VPID = 1 << 5;
        /// WBINVD and WBNOINVD exit.
        const WBINVD_EXITING = 1 << 6;
        /// The guest may run in unpaged protected mode or real-address mode.
        const UNRESTRICTED_GUEST = 1 << 7;
        /// APIC-register virtualization.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        /// Virtual-interrupt delivery.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        /// PAUSE-loop exiting.
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// RDRAND exits.
        const RDRAND_EXITING = 1 << 11;
        /// INVPCID does not raise #UD.
        const ENABLE_INVPCID = 1 << 12;
        /// VMFUNC is enabled.
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        /// VMREAD / VMWRITE in non-root operation may use a shadow VMCS.
        const VMCS_SHADOWING = 1 << 14;
        /// ENCLS exits according to the ENCLS-exiting bitmap.
        const ENABLE_ENCLS_EXITING = 1 << 15;
        /// RDSEED exits.
        const RDSEED_EXITING = 1 << 16;
        /// Page-modification logging.
        const ENABLE_PML = 1 << 17;
        /// EPT violations may raise #VE instead of exiting.
        const EPT_VIOLATION_VE = 1 << 18;
        /// Intel PT suppresses VMX-related packets.
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        /// XSAVES / XRSTORS do not raise #UD.
        const ENABLE_XSAVES_XRSTORS = 1 << 20;
        /// RDTSC and friends apply the TSC multiplier.
        const USE_TSC_SCALING = 1 << 25;
    }

    /// Primary VM-exit controls (26.7.1).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct ExitControls: u32 {
        /// DR7 and IA32_DEBUGCTL are saved on exit.
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// The host runs in 64-bit mode after the exit.
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// IA32_PERF_GLOBAL_CTRL is loaded on exit.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12;
        /// An external interrupt causing an exit is acknowledged and its vector stored.
        const ACKNOWLEDGE_INTERRUPT_ON_EXIT = 1 << 15;
        /// IA32_PAT is saved on exit.
        const SAVE_IA32_PAT = 1 << 18;
        /// IA32_PAT is loaded on exit.
        const LOAD_IA32_PAT = 1 << 19;
        /// IA32_EFER is saved on exit.
        const SAVE_IA32_EFER = 1 << 20;
        /// IA32_EFER is loaded on exit.
        const LOAD_IA32_EFER = 1 << 21;
        /// The VMX-preemption timer value is saved on exit.
        const SAVE_VMX_PREEMPTION_TIMER_VALUE = 1 << 22;
        /// IA32_BNDCFGS is cleared on exit.
        const CLEAR_IA32_BNDCFGS = 1 << 23;
        /// Intel PT suppresses the VM-exit packet.
        const CONCEAL_VMX_FROM_PT = 1 << 24;
    }

    /// VM-entry controls (26.8.1).
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub struct EntryControls: u32 {
        /// DR7 and IA32_DEBUGCTL are loaded on entry.
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// The guest runs in IA-32e mode after the entry.
        const IA32E_MODE_GUEST = 1 << 9;
        /// The entry goes to SMM.
        const ENTRY_TO_SMM = 1 << 10;
        /// The dual-monitor treatment of SMIs and SMM is deactivated.
        const DEACTIVATE_DUAL_MONITOR_TREATMENT = 1 << 11;
        /// IA32_PERF_GLOBAL_CTRL is loaded on entry.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13;
        /// IA32_PAT is loaded on entry.
        const LOAD_IA32_PAT = 1 << 14;
        /// IA32_EFER is loaded on entry.
        const LOAD_IA32_EFER = 1 << 15;
        /// IA32_BNDCFGS is loaded on entry.
        const LOAD_IA32_BNDCFGS = 1 << 16;
        /// Intel PT suppresses the VM-entry packet.
        const CONCEAL_VMX_FROM_PT = 1 << 17;
    }
}

/// Adjusts a desired control value to a capability MSR.
///
/// See: A.3.1 "Pin-Based VM-Execution Controls": "Bits 31:0 indicate the allowed 0-settings of
/// these controls. VM entry allows control X to be 0 if bit X in the MSR is cleared to 0 ...
/// Bits 63:32 indicate the allowed 1-settings of these controls. VM entry allows control X to
/// be 1 if bit 32+X in the MSR is set to 1". The other control MSRs have the same layout.
///
/// Returns the desired bits plus every must-be-one bit, or the bits that would have to be 1 but
/// are not allowed to be.
pub fn adjust(desired: u32, capability_msr: u64) -> Result<u32, u32> {
    let must_be_one = capability_msr as u32;
    let may_be_one = (capability_msr >> 32) as u32;
    let value = desired | must_be_one;
    match value & !may_be_one {
        0 => Ok(value),
        missing => Err(missing),
    }
}

/// A VMX feature Carousel needs and this CPU (or its firmware) does not offer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MissingFeature {
    /// CPUID.1:ECX.VMX[bit 5] is 0.
    VmxNotInCpuid,
    /// IA32_FEATURE_CONTROL is locked with "enable VMX outside SMX" clear.
    VmxDisabledByFirmware,
    /// Pin-based control bit 0 (only when [`Wanted::external_interrupt_exiting`]).
    ExternalInterruptExiting,
    /// Pin-based control bit 6.
    PreemptionTimer,
    /// Primary processor-based control bit 7.
    HltExiting,
    /// Primary processor-based control bit 15 (only when [`Wanted::cr3_load_exiting`]).
    Cr3LoadExiting,
    /// Primary processor-based control bit 25.
    IoBitmaps,
    /// Primary processor-based control bit 28.
    MsrBitmaps,
    /// Primary processor-based control bit 31.
    SecondaryControls,
    /// Secondary processor-based control bit 1.
    Ept,
    /// Secondary processor-based control bit 5.
    Vpid,
    /// Secondary processor-based control bit 7.
    UnrestrictedGuest,
    /// VM-exit control bit 9.
    HostAddressSpaceSize,
    /// VM-exit control bit 15 (only when [`Wanted::acknowledge_interrupt_on_exit`]).
    AcknowledgeInterruptOnExit,
    /// VM-exit control bit 20.
    SaveEferOnExit,
    /// VM-exit control bit 21.
    LoadEferOnExit,
    /// VM-exit control bit 22.
    SavePreemptionTimer,
    /// VM-entry control bit 15.
    LoadEferOnEntry,
    /// IA32_VMX_EPT_VPID_CAP bit 6 (4-level walk) or bit 14 (write-back EPT structures).
    EptWalkOrWriteBack,
    /// IA32_VMX_EPT_VPID_CAP bit 20 (INVEPT) or bit 25 (single-context type).
    InveptSingleContext,
    /// IA32_VMX_EPT_VPID_CAP bit 32 (INVVPID) or bit 41 (single-context type).
    InvvpidSingleContext,
    /// A capability MSR requires control bits it does not allow (an inconsistent MSR).
    UnsatisfiableControls {
        /// The capability MSR.
        msr: u32,
        /// The bits that must be 1 but may not be.
        bits: u32,
    },
}

impl fmt::Display for MissingFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::VmxNotInCpuid => "VMX (CPUID.1:ECX bit 5)",
            Self::VmxDisabledByFirmware => {
                "VMX outside SMX (IA32_FEATURE_CONTROL is locked with bit 2 clear)"
            }
            Self::ExternalInterruptExiting => {
                "external-interrupt exiting (pin-based control bit 0)"
            }
            Self::PreemptionTimer => "the VMX-preemption timer (pin-based control bit 6)",
            Self::HltExiting => "HLT exiting (primary processor-based control bit 7)",
            Self::Cr3LoadExiting => "CR3-load exiting (primary processor-based control bit 15)",
            Self::IoBitmaps => "I/O bitmaps (primary processor-based control bit 25)",
            Self::MsrBitmaps => "MSR bitmaps (primary processor-based control bit 28)",
            Self::SecondaryControls => {
                "secondary controls (primary processor-based control bit 31)"
            }
            Self::Ept => "EPT (secondary processor-based control bit 1)",
            Self::Vpid => "VPID (secondary processor-based control bit 5)",
            Self::UnrestrictedGuest => {
                "unrestricted guest (secondary processor-based control bit 7)"
            }
            Self::HostAddressSpaceSize => "host address-space size (VM-exit control bit 9)",
            Self::AcknowledgeInterruptOnExit => {
                "acknowledge interrupt on exit (VM-exit control bit 15)"
            }
            Self::SaveEferOnExit => "save IA32_EFER on exit (VM-exit control bit 20)",
            Self::LoadEferOnExit => "load IA32_EFER on exit (VM-exit control bit 21)",
            Self::SavePreemptionTimer => "save VMX-preemption timer value (VM-exit control bit 22)",
            Self::LoadEferOnEntry => "load IA32_EFER on entry (VM-entry control bit 15)",
            Self::EptWalkOrWriteBack => {
                "EPT 4-level page walk or write-back memory type (IA32_VMX_EPT_VPID_CAP bits 6, 14)"
            }
            Self::InveptSingleContext => {
                "single-context INVEPT (IA32_VMX_EPT_VPID_CAP bits 20, 25)"
            }
            Self::InvvpidSingleContext => {
                "single-context INVVPID (IA32_VMX_EPT_VPID_CAP bits 32, 41)"
            }
            Self::UnsatisfiableControls { msr, bits } => {
                return write!(
                    f,
                    "consistent controls (MSR {msr:#x} requires bits {bits:#x} it does not allow)"
                );
            }
        };
        f.write_str(what)
    }
}

/// Checks CPUID.1:ECX for VMX (25.6 "Discovering Support for VMX").
pub fn check_cpuid(cpuid_1_ecx: u32) -> Result<(), MissingFeature> {
    match cpuid_1_ecx & (1 << 5) {
        0 => Err(MissingFeature::VmxNotInCpuid),
        _ => Ok(()),
    }
}

/// Decides what to do with IA32_FEATURE_CONTROL before VMXON.
///
/// See: 25.7 "Enabling and Entering VMX Operation": "If the lock bit is clear, VMXON causes a
/// general-protection exception"; with the lock bit set, "enable VMX outside SMX" (bit 2) must be
/// set. Returns `Ok(None)` when the MSR is already usable, `Ok(Some(value))` with the value to
/// write (lock + enable) when firmware left it unlocked.
pub fn feature_control(current: u64) -> Result<Option<u64>, MissingFeature> {
    const LOCK: u64 = 1 << 0;
    const ENABLE_VMX_OUTSIDE_SMX: u64 = 1 << 2;
    match (current & LOCK != 0, current & ENABLE_VMX_OUTSIDE_SMX != 0) {
        (true, true) => Ok(None),
        (true, false) => Err(MissingFeature::VmxDisabledByFirmware),
        (false, _) => Ok(Some(current | LOCK | ENABLE_VMX_OUTSIDE_SMX)),
    }
}

/// Raw VMX capability MSR values: plain data, filled by [`Capabilities::from_msrs`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Capabilities {
    /// IA32_VMX_BASIC.
    pub basic: u64,
    /// IA32_VMX_TRUE_PINBASED_CTLS, or IA32_VMX_PINBASED_CTLS when BASIC bit 55 is 0.
    pub pin_based: u64,
    /// IA32_VMX_TRUE_PROCBASED_CTLS, or IA32_VMX_PROCBASED_CTLS when BASIC bit 55 is 0.
    pub processor_based: u64,
    /// IA32_VMX_PROCBASED_CTLS2, or 0 when the CPU does not report it.
    pub secondary: u64,
    /// IA32_VMX_TRUE_EXIT_CTLS, or IA32_VMX_EXIT_CTLS when BASIC bit 55 is 0.
    pub exit: u64,
    /// IA32_VMX_TRUE_ENTRY_CTLS, or IA32_VMX_ENTRY_CTLS when BASIC bit 55 is 0.
    pub entry: u64,
    /// IA32_VMX_MISC.
    pub misc: u64,
    /// IA32_VMX_EPT_VPID_CAP, or 0 when the CPU does not report it.
    pub ept_vpid: u64,
    /// IA32_VMX_CR0_FIXED0.
    pub cr0_fixed0: u64,
    /// IA32_VMX_CR0_FIXED1.
    pub cr0_fixed1: u64,
    /// IA32_VMX_CR4_FIXED0.
    pub cr4_fixed0: u64,
    /// IA32_VMX_CR4_FIXED1.
    pub cr4_fixed1: u64,
}

/// IA32_VMX_BASIC bit 55: the TRUE control MSRs exist (A.1 "Basic VMX Information").
const BASIC_TRUE_CONTROLS: u64 = 1 << 55;

/// Optional controls the kernel may ask for; each one asked for becomes required.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Wanted {
    /// Set "external-interrupt exiting", so host interrupts never reach the guest's IDT.
    pub external_interrupt_exiting: bool,
    /// Set "acknowledge interrupt on exit", so the exit reports the interrupt vector.
    pub acknowledge_interrupt_on_exit: bool,
    /// Set "CR3-load exiting", so the hypervisor sees every address-space switch.
    pub cr3_load_exiting: bool,
}

/// The control values Carousel writes into every VMCS, and the facts it needs alongside.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Negotiated {
    /// PIN_BASED_VM_EXECUTION_CONTROLS (may hold must-be-one bits without a name).
    pub pin: PinBased,
    /// PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.
    pub primary: PrimaryProcessorBased,
    /// SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS.
    pub secondary: SecondaryProcessorBased,
    /// VM_EXIT_CONTROLS.
    pub exit: ExitControls,
    /// VM_ENTRY_CONTROLS.
    pub entry: EntryControls,
    /// Whether "interrupt-window exiting" may be set (on demand, when injecting).
    pub interrupt_window_supported: bool,
    /// IA32_VMX_MISC bits 4:0: the preemption timer counts down once per 2^rate TSC cycles.
    pub preemption_timer_rate: u8,
    /// IA32_VMX_BASIC bits 30:0: the revision identifier for VMXON and VMCS regions.
    pub vmcs_revision: u32,
    /// IA32_VMX_EPT_VPID_CAP bit 21: EPT accessed and dirty flags may be enabled.
    pub ept_accessed_dirty: bool,
    /// IA32_VMX_CR0_FIXED0: CR0 bits that must be 1.
    pub cr0_fixed0: u64,
    /// IA32_VMX_CR0_FIXED1: CR0 bits that may be 1.
    pub cr0_fixed1: u64,
    /// IA32_VMX_CR4_FIXED0: CR4 bits that must be 1.
    pub cr4_fixed0: u64,
    /// IA32_VMX_CR4_FIXED1: CR4 bits that may be 1.
    pub cr4_fixed1: u64,
}

/// Adjusts one control, naming the missing feature from `names` (bit, feature).
fn negotiate_control(
    desired: u32,
    capability: u64,
    msr: u32,
    names: &[(u32, MissingFeature)],
) -> Result<u32, MissingFeature> {
    adjust(desired, capability).map_err(|missing| {
        names.iter().find(|(bits, _)| missing & bits != 0).map_or(
            MissingFeature::UnsatisfiableControls { msr, bits: missing },
            |&(_, f)| f,
        )
    })
}

impl Capabilities {
    /// Reads the capability MSRs through `rdmsr`, touching only MSRs that exist.
    ///
    /// See: A.1 "Basic VMX Information" (bit 55 announces the TRUE MSRs), A.3.3 "Secondary
    /// Processor-Based VM-Execution Controls" (IA32_VMX_PROCBASED_CTLS2 exists only if bit 63 of
    /// the processor-based MSR is 1) and A.10 "VPID and EPT Capabilities" (IA32_VMX_EPT_VPID_CAP
    /// exists only if EPT or VPID may be enabled). Reading a missing MSR raises #GP.
    pub fn from_msrs(mut rdmsr: impl FnMut(u32) -> u64) -> Self {
        let basic = rdmsr(msr::IA32_VMX_BASIC);
        let [pin, processor, exit, entry] = if basic & BASIC_TRUE_CONTROLS != 0 {
            [
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                msr::IA32_VMX_TRUE_EXIT_CTLS,
                msr::IA32_VMX_TRUE_ENTRY_CTLS,
            ]
        } else {
            [
                msr::IA32_VMX_PINBASED_CTLS,
                msr::IA32_VMX_PROCBASED_CTLS,
                msr::IA32_VMX_EXIT_CTLS,
                msr::IA32_VMX_ENTRY_CTLS,
            ]
        };
        let processor_based = rdmsr(processor);
        let secondary_allowed =
            u64::from(PrimaryProcessorBased::ACTIVATE_SECONDARY_CONTROLS.bits()) << 32;
        let secondary = match processor_based & secondary_allowed {
            0 => 0,
            _ => rdmsr(msr::IA32_VMX_PROCBASED_CTLS2),
        };
        let ept_or_vpid_allowed = u64::from(
            (SecondaryProcessorBased::ENABLE_EPT | SecondaryProcessorBased::ENABLE_VPID).bits(),
        ) << 32;
        let ept_vpid = match secondary & ept_or_vpid_allowed {
            0 => 0,
            _ => rdmsr(msr::IA32_VMX_EPT_VPID_CAP),
        };
        Self {
            basic,
            pin_based: rdmsr(pin),
            processor_based,
            secondary,
            exit: rdmsr(exit),
            entry: rdmsr(entry),
            misc: rdmsr(msr::IA32_VMX_MISC),
            ept_vpid,
            cr0_fixed0: rdmsr(msr::IA32_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(msr::IA32_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(msr::IA32_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(msr::IA32_VMX_CR4_FIXED1),
        }
    }

    /// Settles Carousel's controls against these capabilities.
    ///
    /// Always required: the VMX-preemption timer (pin); HLT exiting, I/O bitmaps, MSR bitmaps and
    /// secondary controls (primary); EPT, VPID and unrestricted guest (secondary); host
    /// address-space size, save/load IA32_EFER and save VMX-preemption timer value (exit); load
    /// IA32_EFER (entry); a 4-level write-back EPT, single-context INVEPT and INVVPID. `wanted`
    /// adds optional controls. Must-be-one bits are always set in the result.
    pub fn negotiate(&self, wanted: &Wanted) -> Result<Negotiated, MissingFeature> {
        let true_controls = self.basic & BASIC_TRUE_CONTROLS != 0;
        let msr_for = |plain: u32, true_msr: u32| if true_controls { true_msr } else { plain };

        let mut pin = PinBased::ACTIVATE_VMX_PREEMPTION_TIMER;
        pin.set(
            PinBased::EXTERNAL_INTERRUPT_EXITING,
            wanted.external_interrupt_exiting,
        );
        let pin = negotiate_control(
            pin.bits(),
            self.pin_based,
            msr_for(
                msr::IA32_VMX_PINBASED_CTLS,
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
            ),
            &[
                (
                    PinBased::EXTERNAL_INTERRUPT_EXITING.bits(),
                    MissingFeature::ExternalInterruptExiting,
                ),
                (
                    PinBased::ACTIVATE_VMX_PREEMPTION_TIMER.bits(),
                    MissingFeature::PreemptionTimer,
                ),
            ],
        )?;

        type Primary = PrimaryProcessorBased;
        // CR8 exits so that a 64-bit guest's task priority lives in its own virtual LAPIC,
        // never in the real one.
        let mut primary = Primary::HLT_EXITING
            | Primary::USE_IO_BITMAPS
            | Primary::USE_MSR_BITMAPS
            | Primary::ACTIVATE_SECONDARY_CONTROLS
            | Primary::CR8_LOAD_EXITING
            | Primary::CR8_STORE_EXITING;
        primary.set(Primary::CR3_LOAD_EXITING, wanted.cr3_load_exiting);
        let primary = negotiate_control(
            primary.bits(),
            self.processor_based,
            msr_for(
                msr::IA32_VMX_PROCBASED_CTLS,
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            ),
            &[
                (Primary::HLT_EXITING.bits(), MissingFeature::HltExiting),
                (
                    Primary::CR3_LOAD_EXITING.bits(),
                    MissingFeature::Cr3LoadExiting,
                ),
                (Primary::USE_IO_BITMAPS.bits(), MissingFeature::IoBitmaps),
                (Primary::USE_MSR_BITMAPS.bits(), MissingFeature::MsrBitmaps),
                (
                    Primary::ACTIVATE_SECONDARY_CONTROLS.bits(),
                    MissingFeature::SecondaryControls,
                ),
            ],
        )?;

        type Secondary = SecondaryProcessorBased;
        let secondary = negotiate_control(
            (Secondary::ENABLE_EPT | Secondary::ENABLE_VPID | Secondary::UNRESTRICTED_GUEST).bits(),
            self.secondary,
            msr::IA32_VMX_PROCBASED_CTLS2,
            &[
                (Secondary::ENABLE_EPT.bits(), MissingFeature::Ept),
                (Secondary::ENABLE_VPID.bits(), MissingFeature::Vpid),
                (
                    Secondary::UNRESTRICTED_GUEST.bits(),
                    MissingFeature::UnrestrictedGuest,
                ),
            ],
        )?;

        // The guest's DR7 and IA32_DEBUGCTL are saved at every exit and loaded at every entry
        // (they are guest state, not the host's).
        let mut exit = ExitControls::HOST_ADDRESS_SPACE_SIZE
            | ExitControls::SAVE_DEBUG_CONTROLS
            | ExitControls::SAVE_IA32_EFER
            | ExitControls::LOAD_IA32_EFER
            | ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE;
        exit.set(
            ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT,
            wanted.acknowledge_interrupt_on_exit,
        );
        let exit = negotiate_control(
            exit.bits(),
            self.exit,
            msr_for(msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS),
            &[
                (
                    ExitControls::HOST_ADDRESS_SPACE_SIZE.bits(),
                    MissingFeature::HostAddressSpaceSize,
                ),
                (
                    ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT.bits(),
                    MissingFeature::AcknowledgeInterruptOnExit,
                ),
                (
                    ExitControls::SAVE_IA32_EFER.bits(),
                    MissingFeature::SaveEferOnExit,
                ),
                (
                    ExitControls::LOAD_IA32_EFER.bits(),
                    MissingFeature::LoadEferOnExit,
                ),
                (
                    ExitControls::SAVE_VMX_PREEMPTION_TIMER_VALUE.bits(),
                    MissingFeature::SavePreemptionTimer,
                ),
            ],
        )?;

        let entry = negotiate_control(
            (EntryControls::LOAD_IA32_EFER | EntryControls::LOAD_DEBUG_CONTROLS).bits(),
            self.entry,
            msr_for(msr::IA32_VMX_ENTRY_CTLS, msr::IA32_VMX_TRUE_ENTRY_CTLS),
            &[(
                EntryControls::LOAD_IA32_EFER.bits(),
                MissingFeature::LoadEferOnEntry,
            )],
        )?;

        // See: A.10 "VPID and EPT Capabilities".
        let has = |bits: &[u32]| bits.iter().all(|&bit| self.ept_vpid & (1 << bit) != 0);
        if !has(&[6, 14]) {
            return Err(MissingFeature::EptWalkOrWriteBack);
        }
        if !has(&[20, 25]) {
            return Err(MissingFeature::InveptSingleContext);
        }
        if !has(&[32, 41]) {
            return Err(MissingFeature::InvvpidSingleContext);
        }

        let interrupt_window = u64::from(Primary::INTERRUPT_WINDOW_EXITING.bits()) << 32;
        Ok(Negotiated {
            pin: PinBased::from_bits_retain(pin),
            primary: Primary::from_bits_retain(primary),
            secondary: Secondary::from_bits_retain(secondary),
            exit: ExitControls::from_bits_retain(exit),
            entry: EntryControls::from_bits_retain(entry),
            interrupt_window_supported: self.processor_based & interrupt_window != 0,
            // See: A.6 "Miscellaneous Data": bits 4:0 report the preemption-timer rate.
            preemption_timer_rate: (self.misc & 0x1f) as u8,
            vmcs_revision: (self.basic & 0x7fff_ffff) as u32,
            ept_accessed_dirty: has(&[21]),
            cr0_fixed0: self.cr0_fixed0,
            cr0_fixed1: self.cr0_fixed1,
            cr4_fixed0: self.cr4_fixed0,
            cr4_fixed1: self.cr4_fixed1,
        })
    }
}

/// CR0.PE (bit 0).
const CR0_PE: u64 = 1 << 0;
/// CR0.PG (bit 31).
const CR0_PG: u64 = 1 << 31;

impl Negotiated {
    /// Forces the VMX-fixed CR0 bits onto `cr0`, except PE and PG.
    ///
    /// See: 28.3.1.1 "Checks on Guest Control Registers, Debug Registers, and MSRs": the CR0
    /// field "must not set any bit to a value not supported in VMX operation", except that "Bit 0
    /// (corresponding to CR0.PE) and bit 31 (PG) are not checked if the 'unrestricted guest'
    /// VM-execution control is 1". Carousel always has unrestricted guest; for the host's own
    /// CR0, PE and PG are already 1.
    pub fn fixed_cr0(&self, cr0: u64) -> u64 {
        (cr0 | (self.cr0_fixed0 & !(CR0_PE | CR0_PG))) & self.cr0_fixed1
    }

    /// Forces the VMX-fixed CR4 bits (at least CR4.VMXE) onto `cr4`.
    pub fn fixed_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0) & self.cr4_fixed1
    }
}

/// Converts TSC cycles to VMX-preemption-timer ticks, rounding down and saturating.
///
/// See: 27.5.1 "VMX-Preemption Timer": "the VMX-preemption timer counts down by 1 every time bit
/// X in the TSC changes due to a TSC increment. The value of X is in the range 0-31 and can be
/// determined by consulting the VMX capability MSR IA32_VMX_MISC". Only `rate` bits 4:0 count.
pub fn cycles_to_preemption_ticks(cycles: u64, rate: u8) -> u32 {
    u32::try_from(cycles >> (rate & 0x1f)).unwrap_or(u32::MAX)
}

/// Converts VMX-preemption-timer ticks to TSC cycles (the inverse of
/// [`cycles_to_preemption_ticks`], exact; never overflows since `rate` < 32).
pub fn preemption_ticks_to_cycles(ticks: u32, rate: u8) -> u64 {
    u64::from(ticks) << (rate & 0x1f)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Bochs 2.7, `corei7_skylake_x`, as measured (BOCHS.md) — except TRUE_EXIT, TRUE_ENTRY,
    /// CR0_FIXED1 and CR4_FIXED1, which were not measured. Those are assumed values shaped like
    /// real Skylake parts: exit allowed-0 0x00036dfb (the default1 class minus "save debug
    /// controls"), allowed-1 bits 0-11 and 13-23; entry allowed-0 0x000011fb, allowed-1 bits
    /// 0-9, 12 and 14-16; CR0 may be anything, CR4 allows the common Skylake bits plus VMXE.
    fn skylake_x_msr(msr: u32) -> u64 {
        match msr {
            msr::IA32_VMX_BASIC => 0x00d8_1000_0000_002b,
            msr::IA32_VMX_TRUE_PINBASED_CTLS => 0x0000_007f_0000_0016,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS => 0xf7f9_fffe_0400_6172,
            msr::IA32_VMX_PROCBASED_CTLS2 => 0x0217_7fff_0000_0000,
            msr::IA32_VMX_MISC => 0x0000_0000_6004_01e0,
            msr::IA32_VMX_EPT_VPID_CAP => 0x0000_0f01_0633_4141,
            msr::IA32_VMX_CR0_FIXED0 => 0x8000_0021,
            msr::IA32_VMX_CR4_FIXED0 => 0x2000,
            // Assumed, see above.
            msr::IA32_VMX_TRUE_EXIT_CTLS => 0x00ff_efff_0003_6dfb,
            msr::IA32_VMX_TRUE_ENTRY_CTLS => 0x0001_d3ff_0000_11fb,
            msr::IA32_VMX_CR0_FIXED1 => 0xffff_ffff,
            msr::IA32_VMX_CR4_FIXED1 => 0x0037_27ff,
            other => panic!("read of MSR {other:#x}, which this test CPU does not have"),
        }
    }

    fn skylake_x() -> Capabilities {
        Capabilities::from_msrs(skylake_x_msr)
    }

    #[test]
    fn bochs_skylake_x_negotiates() {
        let n = skylake_x().negotiate(&Wanted::default()).unwrap();
        assert_eq!(n.preemption_timer_rate, 0);
        assert_eq!(n.vmcs_revision, 0x2b);
        assert!(n.ept_accessed_dirty);
        assert!(n.interrupt_window_supported);
        assert_eq!(
            n.pin.bits(),
            0x16 | PinBased::ACTIVATE_VMX_PREEMPTION_TIMER.bits()
        );
        assert!(n
            .secondary
            .contains(SecondaryProcessorBased::UNRESTRICTED_GUEST));
        assert!(!n
            .primary
            .contains(PrimaryProcessorBased::INTERRUPT_WINDOW_EXITING));
        assert!(!n.primary.contains(PrimaryProcessorBased::CR3_LOAD_EXITING));
        assert!(n.entry.contains(EntryControls::LOAD_IA32_EFER));
        assert!(!n.exit.contains(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT));
        assert_eq!(n.fixed_cr0(0x11), 0x31);
        assert_eq!(n.fixed_cr4(0), 0x2000);

        let wanted = Wanted {
            external_interrupt_exiting: true,
            acknowledge_interrupt_on_exit: true,
            cr3_load_exiting: true,
        };
        let n = skylake_x().negotiate(&wanted).unwrap();
        assert!(n.pin.contains(PinBased::EXTERNAL_INTERRUPT_EXITING));
        assert!(n.exit.contains(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT));
        assert!(n.primary.contains(PrimaryProcessorBased::CR3_LOAD_EXITING));

        // A CPU that cannot exit on CR3 loads is refused only when the exits are wanted.
        let mut no_cr3_exits = skylake_x();
        no_cr3_exits.processor_based &=
            !(u64::from(PrimaryProcessorBased::CR3_LOAD_EXITING.bits()) << 32);
        assert!(no_cr3_exits.negotiate(&Wanted::default()).is_ok());
        assert_eq!(
            no_cr3_exits.negotiate(&wanted),
            Err(MissingFeature::Cr3LoadExiting)
        );
    }

    #[test]
    fn must_be_one_bits_are_always_set() {
        let caps = skylake_x();
        let n = caps.negotiate(&Wanted::default()).unwrap();
        let pairs = [
            (n.pin.bits(), caps.pin_based),
            (n.primary.bits(), caps.processor_based),
            (n.secondary.bits(), caps.secondary),
            (n.exit.bits(), caps.exit),
            (n.entry.bits(), caps.entry),
        ];
        for (value, capability) in pairs {
            let must_be_one = capability as u32;
            assert_eq!(value & must_be_one, must_be_one);
            assert_eq!(value & !((capability >> 32) as u32), 0);
        }
    }

    #[test]
    fn each_missing_feature_is_named() {
        type Get = fn(&mut Capabilities) -> &mut u64;
        let pin: Get = |c| &mut c.pin_based;
        let primary: Get = |c| &mut c.processor_based;
        let secondary: Get = |c| &mut c.secondary;
        let exit: Get = |c| &mut c.exit;
        let entry: Get = |c| &mut c.entry;
        let ept: Get = |c| &mut c.ept_vpid;
        let cases: [(Get, u32, MissingFeature); 22] = [
            (pin, 32 + 6, MissingFeature::PreemptionTimer),
            (primary, 32 + 7, MissingFeature::HltExiting),
            (primary, 32 + 25, MissingFeature::IoBitmaps),
            (primary, 32 + 28, MissingFeature::MsrBitmaps),
            (primary, 32 + 31, MissingFeature::SecondaryControls),
            (secondary, 32 + 1, MissingFeature::Ept),
            (secondary, 32 + 5, MissingFeature::Vpid),
            (secondary, 32 + 7, MissingFeature::UnrestrictedGuest),
            (exit, 32 + 9, MissingFeature::HostAddressSpaceSize),
            (exit, 32 + 20, MissingFeature::SaveEferOnExit),
            (exit, 32 + 21, MissingFeature::LoadEferOnExit),
            (exit, 32 + 22, MissingFeature::SavePreemptionTimer),
            (entry, 32 + 15, MissingFeature::LoadEferOnEntry),
            (ept, 6, MissingFeature::EptWalkOrWriteBack),
            (ept, 14, MissingFeature::EptWalkOrWriteBack),
            (ept, 20, MissingFeature::InveptSingleContext),
            (ept, 25, MissingFeature::InveptSingleContext),
            (ept, 32, MissingFeature::InvvpidSingleContext),
            (ept, 41, MissingFeature::InvvpidSingleContext),
            // The optional ones, when wanted.
            (pin, 32, MissingFeature::ExternalInterruptExiting),
            (exit, 32 + 15, MissingFeature::AcknowledgeInterruptOnExit),
            (primary, 32 + 15, MissingFeature::Cr3LoadExiting),
        ];
        let wanted = Wanted {
            external_interrupt_exiting: true,
            acknowledge_interrupt_on_exit: true,
            cr3_load_exiting: true,
        };
        for (get, bit, feature) in cases {
            let mut caps = skylake_x();
            *get(&mut caps) &= !(1 << bit);
            assert_eq!(caps.negotiate(&wanted), Err(feature), "bit {bit}");
            assert!(!feature.to_string().is_empty());
        }
        assert_eq!(
            MissingFeature::PreemptionTimer.to_string(),
            "the VMX-preemption timer (pin-based control bit 6)"
        );
    }

    #[test]
    fn inconsistent_msr_is_reported() {
        let mut caps = skylake_x();
        caps.pin_based |= 1 << 9; // must be one, but not allowed to be
        assert_eq!(
            caps.negotiate(&Wanted::default()),
            Err(MissingFeature::UnsatisfiableControls {
                msr: msr::IA32_VMX_TRUE_PINBASED_CTLS,
                bits: 1 << 9
            })
        );
    }

    #[test]
    fn without_true_controls_the_plain_msrs_are_read() {
        let caps = Capabilities::from_msrs(|msr| match msr {
            msr::IA32_VMX_BASIC => 0x0058_1000_0000_0010, // bit 55 clear
            msr::IA32_VMX_PINBASED_CTLS => 0x0000_007f_0000_0016,
            // No secondary controls: PROCBASED_CTLS2 and EPT_VPID_CAP must not be read.
            msr::IA32_VMX_PROCBASED_CTLS => 0x77f9_fffe_0401_e172,
            msr::IA32_VMX_EXIT_CTLS | msr::IA32_VMX_ENTRY_CTLS | msr::IA32_VMX_MISC => 0,
            m if (msr::IA32_VMX_CR0_FIXED0..=msr::IA32_VMX_CR4_FIXED1).contains(&m) => 0,
            other => panic!("unexpected MSR {other:#x}"),
        });
        assert_eq!(caps.secondary, 0);
        assert_eq!(caps.ept_vpid, 0);
        assert_eq!(
            caps.negotiate(&Wanted::default()),
            Err(MissingFeature::SecondaryControls)
        );
    }

    #[test]
    fn firmware_and_cpuid_checks() {
        assert_eq!(check_cpuid(1 << 5), Ok(()));
        assert_eq!(check_cpuid(!(1 << 5)), Err(MissingFeature::VmxNotInCpuid));
        assert_eq!(feature_control(0x5), Ok(None));
        assert_eq!(
            feature_control(0x1),
            Err(MissingFeature::VmxDisabledByFirmware)
        );
        assert_eq!(feature_control(0x0), Ok(Some(0x5)));
    }

    #[test]
    fn preemption_conversions() {
        assert_eq!(cycles_to_preemption_ticks(1_000, 0), 1_000);
        assert_eq!(cycles_to_preemption_ticks(1_000, 5), 31);
        assert_eq!(cycles_to_preemption_ticks(u64::MAX, 0), u32::MAX);
        assert_eq!(preemption_ticks_to_cycles(31, 5), 992);
        assert_eq!(
            preemption_ticks_to_cycles(u32::MAX, 31),
            u64::from(u32::MAX) << 31
        );
    }

    proptest! {
        #[test]
        fn adjust_result_satisfies_the_capability(desired: u32, capability: u64) {
            let must_be_one = capability as u32;
            let may_be_one = (capability >> 32) as u32;
            match adjust(desired, capability) {
                Ok(value) => {
                    prop_assert_eq!(value & must_be_one, must_be_one);
                    prop_assert_eq!(value & desired, desired);
                    prop_assert_eq!(value & !may_be_one, 0);
                }
                Err(missing) => {
                    prop_assert_ne!(missing, 0);
                    prop_assert_eq!(missing & may_be_one, 0);
                    prop_assert_eq!(missing & !(desired | must_be_one), 0);
                }
            }
        }

        #[test]
        fn ticks_round_trip_below_the_saturation_point(ticks: u32, rate in 0u8..32) {
            let cycles = preemption_ticks_to_cycles(ticks, rate);
            prop_assert_eq!(cycles_to_preemption_ticks(cycles, rate), ticks);
            prop_assert!(
                cycles_to_preemption_ticks(cycles + (1 << rate) - 1, rate) == ticks
            );
        }
    }
}
