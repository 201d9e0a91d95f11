//! Carousel's AMD SVM mechanism: the one place that speaks AMD's Secure Virtual Machine, as
//! `carousel-vmx` speaks Intel VMX.
//!
//! Reference: "AMD64 Architecture Programmer's Manual Volume 2: System Programming", publication
//! 24593, revision 3.40 (January 2023), the "APM". Every section cited in this crate and in the
//! kernel's SVM code is that revision's: chapter 15 "Secure Virtual Machine", Appendix B "Layout
//! of VMCB" and Appendix C "SVM Intercept Exit Codes". Titles are the stable key when numbers
//! drift between revisions.
//!
//! What is here:
//! - [`vmcb`]: the VMCB, typed: the control area, the state-save area and the segment format;
//!   the intercept vectors as bitflags.
//! - [`exit`]: exit codes and their information fields, decoded into one complete
//!   [`exit::SvmExit`]; the EXITINTINFO of an interrupted event delivery.
//! - [`event`]: the EVENTINJ / EXITINTINFO encoding.
//! - [`npt`]: the nested page tables' entry format (the x86-64 page-table format, with accessed
//!   and dirty flags), for `carousel_vmx::ept::Tables`.
//! - [`asid`]: one ASID per VM, shared round the VMs when there are fewer ASIDs than VMs, and
//!   the TLB flushes that follows from it.
//! - [`features`]: what CPUID leaf 8000_000AH says the CPU offers, and what Carousel needs.
//! - [`instructions`]: VMRUN with VMLOAD/VMSAVE and CLGI/STGI around it, the only SVM assembly
//!   in Carousel.
//!
//! What is not: policy (which VM runs, what an exit means to a device), reading MSRs or CPUID,
//! allocating memory, and the host's local APIC timer; those belong to the kernel. Apart from
//! [`instructions`], everything here is plain data and pure functions, tested on the host.
//!
//! Shared with `carousel-vmx` rather than written twice: the address newtypes, the four-level
//! table builder (its entry format is a parameter) and the guest register file.
#![cfg_attr(not(test), no_std)]

pub mod asid;
pub mod event;
pub mod exit;
pub mod features;
#[cfg(target_arch = "x86_64")]
pub mod instructions;
pub mod npt;
pub mod vmcb;

/// IA32_EFER.SVME (bit 12): SVM enabled. VMRUN requires it in the host's EFER and in the
/// guest's (APM 15.4 "Enabling SVM"; 15.5.1 "Basic Operation", the consistency checks: "EFER.SVME
/// is zero" makes VMRUN fail with VMEXIT_INVALID).
pub const EFER_SVME: u64 = 1 << 12;
/// The VM_CR MSR (APM 15.30.1 "VM_CR MSR (C001_0114h)").
pub const MSR_VM_CR: u32 = 0xC001_0114;
/// VM_CR.SVMDIS (bit 4): firmware disabled SVM; EFER.SVME cannot be set.
pub const VM_CR_SVMDIS: u64 = 1 << 4;
/// The VM_HSAVE_PA MSR: where VMRUN saves the host's state (APM 15.30.4 "VM_HSAVE_PA MSR
/// (C001_0117h)").
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
