//! The SVM instructions: VMRUN with VMLOAD / VMSAVE and CLGI / STGI around it, and INVLPGA.
//! The only SVM assembly in Carousel.
//!
//! Reference: APM 15.5 "VMRUN Instruction" (15.5.1 "Basic Operation": VMRUN saves the host's
//! segments, control registers, EFER, RFLAGS, RSP, RIP and RAX in the VM_HSAVE_PA area and
//! #VMEXIT restores them), 15.5.2 "VMSAVE and VMLOAD Instructions" (the state VMRUN does not
//! move: FS, GS, TR, LDTR with their hidden parts, KernelGsBase, STAR, LSTAR, CSTAR, SFMASK and
//! the SYSENTER MSRs), 15.17 "Global Interrupt Flag, STGI and CLGI Instructions", 15.21.1
//! "Physical (INTR) Interrupt Masking in EFLAGS" (with V_INTR_MASKING the host's RFLAGS.IF at
//! VMRUN governs physical interrupts while the guest runs), 15.16.2 "Invalidating Guest TLB
//! Entries" (INVLPGA).
//!
//! VMRUN reports nothing in RFLAGS: a VMCB it refuses comes back as a #VMEXIT with EXITCODE
//! VMEXIT_INVALID, decoded by [`crate::exit::decode`].

use core::arch::{asm, global_asm};
use core::mem::offset_of;

pub use carousel_vmx::instructions::GuestRegisters;

// carousel_svm_run(regs: *mut GuestRegisters [rdi], guest_vmcb: u64 [rsi], host_save: u64 [rdx])
//
// CLGI, then STI: physical interrupts stay held by GIF = 0 until VMRUN sets GIF, and the IF = 1
// VMRUN saves is what lets them (the host's LAPIC timer) end the guest's run under
// V_INTR_MASKING with the INTR intercept. VMSAVE keeps the host's FS/GS/TR/LDTR/syscall MSRs in
// `host_save`, VMLOAD brings the guest's; VMRUN with RAX = the guest VMCB. #VMEXIT restores the
// host's RSP, RIP, RFLAGS (IF = 1) and RAX (the guest VMCB again) with GIF = 0; VMSAVE stores the
// guest's VMLOAD state, VMLOAD restores the host's, CLI, then STGI: an interrupt that ended the
// run stays pending for the host to take when it enables interrupts. The guest's RAX is in the
// VMCB (the caller copies it); every other general-purpose register goes through `regs`.
global_asm!(
    ".pushsection .text.carousel_svm_run, \"ax\", @progbits",
    ".global carousel_svm_run",
    ".type carousel_svm_run, @function",
    "carousel_svm_run:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "push rdx",
    "push rsi",
    "clgi",
    "sti",
    "mov rax, rdx",
    "vmsave rax",
    "mov rax, rsi",
    "vmload rax",
    "mov rbx, [rdi + {rbx}]",
    "mov rcx, [rdi + {rcx}]",
    "mov rdx, [rdi + {rdx}]",
    "mov rsi, [rdi + {rsi}]",
    "mov rbp, [rdi + {rbp}]",
    "mov r8, [rdi + {r8}]",
    "mov r9, [rdi + {r9}]",
    "mov r10, [rdi + {r10}]",
    "mov r11, [rdi + {r11}]",
    "mov r12, [rdi + {r12}]",
    "mov r13, [rdi + {r13}]",
    "mov r14, [rdi + {r14}]",
    "mov r15, [rdi + {r15}]",
    "mov rdi, [rdi + {rdi}]",
    "vmrun rax",
    "vmsave rax",
    // Stack: guest VMCB, host save area, regs pointer, then the callee-saved registers.
    "push rdi",
    "mov rdi, [rsp + 24]",
    "mov [rdi + {rbx}], rbx",
    "mov [rdi + {rcx}], rcx",
    "mov [rdi + {rdx}], rdx",
    "mov [rdi + {rsi}], rsi",
    "mov [rdi + {rbp}], rbp",
    "mov [rdi + {r8}], r8",
    "mov [rdi + {r9}], r9",
    "mov [rdi + {r10}], r10",
    "mov [rdi + {r11}], r11",
    "mov [rdi + {r12}], r12",
    "mov [rdi + {r13}], r13",
    "mov [rdi + {r14}], r14",
    "mov [rdi + {r15}], r15",
    "pop qword ptr [rdi + {rdi}]",
    "add rsp, 8", // the guest VMCB
    "pop rax",    // the host save area
    "vmload rax",
    "cli",
    "stgi",
    "add rsp, 8", // the regs pointer
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size carousel_svm_run, . - carousel_svm_run",
    ".popsection",
    rbx = const offset_of!(GuestRegisters, rbx),
    rcx = const offset_of!(GuestRegisters, rcx),
    rdx = const offset_of!(GuestRegisters, rdx),
    rsi = const offset_of!(GuestRegisters, rsi),
    rdi = const offset_of!(GuestRegisters, rdi),
    rbp = const offset_of!(GuestRegisters, rbp),
    r8 = const offset_of!(GuestRegisters, r8),
    r9 = const offset_of!(GuestRegisters, r9),
    r10 = const offset_of!(GuestRegisters, r10),
    r11 = const offset_of!(GuestRegisters, r11),
    r12 = const offset_of!(GuestRegisters, r12),
    r13 = const offset_of!(GuestRegisters, r13),
    r14 = const offset_of!(GuestRegisters, r14),
    r15 = const offset_of!(GuestRegisters, r15),
);

unsafe extern "sysv64" {
    /// Defined in the `global_asm!` above.
    fn carousel_svm_run(regs: *mut GuestRegisters, guest_vmcb: u64, host_save: u64);
}

/// Runs the guest of the VMCB at physical address `guest_vmcb` until its next #VMEXIT. `regs`
/// holds the guest's general-purpose registers other than RAX (which is in the VMCB's save
/// area) before and after; the VMCB holds the exit. CR2 is in the VMCB too.
///
/// Returns with interrupts disabled and GIF set; an interrupt that ended the run is still
/// pending at the local APIC.
///
/// # Safety
/// - EFER.SVME is set, VM_HSAVE_PA names a 4 KiB frame the host owns, and `host_save` is
///   another such frame (VMSAVE writes the host's FS/GS/TR/LDTR state there).
/// - `guest_vmcb` is a valid VMCB in a frame the host owns, whose nested page table maps only
///   this VM's frames and whose I/O and MSR permission maps trap what the host depends on.
/// - The caller runs with interrupts disabled and has an IDT entry for every interrupt the
///   local APIC may raise (they become deliverable while VMRUN runs).
/// - The host relies on nothing #VMEXIT does not restore: x87/SSE state and DR0-DR3/DR6 stay
///   as the guest left them.
pub unsafe fn run(regs: &mut GuestRegisters, guest_vmcb: u64, host_save: u64) {
    // SAFETY: `regs` is valid and exclusive for the call; the routine preserves the SysV
    // callee-saved registers and returns on the same stack; the caller guarantees the SVM
    // state and the VMCB (this function's contract).
    unsafe { carousel_svm_run(regs, guest_vmcb, host_save) }
}

/// INVLPGA: drops the TLB entries for linear address `address` in ASID `asid`.
///
/// # Safety
/// EFER.SVME is set (else #UD). Only cached translations are discarded.
pub unsafe fn invlpga(address: u64, asid: u32) {
    // SAFETY: INVLPGA takes RAX and ECX and only invalidates TLB entries; the caller has SVM
    // enabled (this function's contract).
    unsafe { asm!("invlpga rax, ecx", in("rax") address, in("ecx") asid, options(nostack)) }
}

/// STGI: sets the global interrupt flag.
///
/// # Safety
/// EFER.SVME is set (else #UD); interrupts held by GIF = 0 become deliverable.
pub unsafe fn stgi() {
    // SAFETY: STGI only sets GIF; the caller has SVM enabled (this function's contract).
    unsafe { asm!("stgi", options(nomem, nostack)) }
}
