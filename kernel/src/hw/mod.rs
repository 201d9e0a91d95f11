//! The hardware: everything privileged the hypervisor does outside the VMX instruction module,
//! and the implementations of the library's seams over it.
//!
//! - [`boot`]: from GRUB to long mode; [`arch`]: ports, MSRs, control registers, GDT/IDT.
//! - [`physical`]: the frame allocator and the heap ([`physical::HwFrames`]).
//! - [`serial`]: the hypervisor's UARTs; [`host`]: the clock, COM1, COM2 and CPUID behind
//!   `carousel_kernel::host::Host`.
//! - [`ata`]: the shared drive (the emulator's extra ATA disk holding the VMs' disks), PIO.
//! - [`vmm`]: turning VMX on, the VMCS controls and host state; [`vcpu`]: the VMX vCPU.
//! - [`svm`]: turning SVM on, the host LAPIC timer, the SVM vCPU.

pub mod arch;
pub mod ata;
pub mod boot;
pub mod host;
pub mod physical;
pub mod serial;
pub mod svm;
pub mod vcpu;
pub mod vmm;
