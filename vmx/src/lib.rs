//! Carousel's VMX mechanism: the one place that speaks Intel VMX.
//!
//! Reference: Intel 64 and IA-32 Architectures Software Developer's Manual, Order Number
//! 325462-083US, March 2024 (the "SDM"), volume 3C. Every section number in this crate and in
//! the kernel's VMX code is that revision's, where the VMX chapters are 25 "Introduction to
//! Virtual Machine Extensions", 26 "Virtual Machine Control Structures", 27 "VMX Non-Root
//! Operation", 28 "VM Entries", 29 "VM Exits", 30 "VMX Support for Address Translation", 31
//! "APIC Virtualization and Virtual Interrupts" and 32 "VMX Instruction Reference", with
//! Appendix A "VMX Capability Reporting Facility", B "Field Encoding in VMCS" and C "VMX Basic
//! Exit Reasons". Revisions up to 325462-078 (December 2022) number the same chapters one lower
//! (24 for the VMCS in 325462-067): titles are the stable key when numbers drift.
//!
//! What is here:
//! - [`addr`]: guest-physical and host-physical address newtypes.
//! - [`fields`]: VMCS field encodings (SDM Appendix B), typed by field width.
//! - [`instructions`]: the VMX instructions (VMXON, VMREAD, VMLAUNCH, INVEPT, ...) and the VM
//!   entry/exit path, the only VMX assembly in Carousel; [`fail`]: how they fail.
//! - [`controls`]: control-field bitflags and negotiation against the capability MSRs.
//! - [`ept`]: EPT entries, the EPT pointer and a page-table builder over caller-supplied frames.
//! - [`exit`]: exit reasons and qualifications, turned into one complete [`exit::VmExit`] enum.
//!
//! What is not: policy (which VM runs, what an exit means to a device), reading MSRs or CPUID,
//! allocating memory, and filling the VMCS guest/host state; those belong to the kernel. Apart
//! from [`instructions`], everything here is plain data and pure functions, tested on the host.
#![cfg_attr(not(test), no_std)]

pub mod addr;
pub mod controls;
pub mod ept;
pub mod exit;
pub mod fail;
pub mod fields;
#[cfg(target_arch = "x86_64")]
pub mod instructions;
