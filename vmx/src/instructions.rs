//! The VMX instructions and the VM entry/exit path: the only VMX assembly in Carousel.
//!
//! Reference: Intel SDM, Order Number 325462-083US, March 2024: 32.2 "Conventions", 32.3 "VMX
//! Instructions", 26.11.5 "VMXON Region", 28 "VM Entries" and 29.5 "Loading Host State".
//!
//! Every instruction reports through RFLAGS: CF = 1 is VMfailInvalid, ZF = 1 is VMfailValid (the
//! error number is then in the current VMCS). The flags are captured with SETC / SETZ inside the
//! same `asm!` as the instruction, never in a later statement.
//!
//! Reads are safe functions: VMREAD only copies VMCS state into a register, and outside VMX
//! operation it raises #UD, which the kernel's exception handler reports; nothing in memory
//! changes. Everything that changes hardware state is an `unsafe fn`.

use core::arch::{asm, global_asm};
use core::mem::offset_of;

use crate::addr::HostPhysAddr;
use crate::ept::EptPointer;
use crate::exit::RawExit;
use crate::fail::{VmFail, VmInstructionError, VmxFailure, VmxInstruction};
use crate::fields::{self, Field16, Field32, Field64, FieldNatural};

/// The outcome of a VMX instruction from the CF and ZF it left (32.2 "Conventions").
fn outcome(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        Err(VmFail::Valid(current_instruction_error()))
    } else {
        Ok(())
    }
}

/// VMREAD of `encoding`, returning the value with the CF and ZF it left.
fn vmread_flags(encoding: u32) -> (u64, u8, u8) {
    let value: u64;
    let cf: u8;
    let zf: u8;
    // SAFETY: VMREAD with register operands writes only the output register and RFLAGS, both
    // declared here; it touches no memory. Outside VMX operation it raises #UD, a reported fault,
    // not undefined behaviour.
    unsafe {
        asm!(
            "vmread {value}, {field}",
            "setc {cf}",
            "setz {zf}",
            field = in(reg) u64::from(encoding),
            value = out(reg) value,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack, nomem),
        );
    }
    (value, cf, zf)
}

/// The current VMCS's VM-instruction error, after a VMfailValid.
fn current_instruction_error() -> VmInstructionError {
    // 32.2: VMfailValid is used "only if there is a current VMCS", and VM_INSTRUCTION_ERROR
    // exists in every VMCS, so this read cannot fail.
    let (value, cf, zf) = vmread_flags(fields::VM_INSTRUCTION_ERROR.encoding());
    assert!(
        cf == 0 && zf == 0,
        "VMfailValid without a readable VM-instruction error field"
    );
    VmInstructionError::from_raw(value as u32)
}

fn vmread(encoding: u32) -> Result<u64, VmFail> {
    let (value, cf, zf) = vmread_flags(encoding);
    outcome(cf, zf).map(|()| value)
}

/// Reads a 16-bit field of the current VMCS.
pub fn vmread16(field: Field16) -> Result<u16, VmFail> {
    vmread(field.encoding()).map(|value| value as u16)
}

/// Reads a 32-bit field of the current VMCS.
pub fn vmread32(field: Field32) -> Result<u32, VmFail> {
    vmread(field.encoding()).map(|value| value as u32)
}

/// Reads a 64-bit field of the current VMCS.
pub fn vmread64(field: Field64) -> Result<u64, VmFail> {
    vmread(field.encoding())
}

/// Reads a natural-width field of the current VMCS.
pub fn vmread_natural(field: FieldNatural) -> Result<u64, VmFail> {
    vmread(field.encoding())
}

/// Reads the exit-information fields [`crate::exit::decode`] needs, right after a VM exit; a
/// failure names the field that could not be read.
pub fn read_exit() -> Result<RawExit, VmxFailure> {
    let read = |encoding: u32| {
        vmread(encoding)
            .map_err(|fail| VmxFailure::on_field(VmxInstruction::Vmread, encoding, fail))
    };
    Ok(RawExit {
        reason: read(fields::VM_EXIT_REASON.encoding())? as u32,
        qualification: read(fields::EXIT_QUALIFICATION.encoding())?,
        guest_physical: read(fields::GUEST_PHYSICAL_ADDRESS.encoding())?,
        guest_linear: read(fields::GUEST_LINEAR_ADDRESS.encoding())?,
        instruction_length: read(fields::VM_EXIT_INSTRUCTION_LENGTH.encoding())? as u32,
        instruction_info: read(fields::VM_EXIT_INSTRUCTION_INFORMATION.encoding())? as u32,
        interruption_info: read(fields::VM_EXIT_INTERRUPTION_INFORMATION.encoding())? as u32,
        interruption_error_code: read(fields::VM_EXIT_INTERRUPTION_ERROR_CODE.encoding())? as u32,
    })
}

/// VMWRITE of `value` to `encoding`.
///
/// # Safety
/// As for [`vmwrite64`].
unsafe fn vmwrite(encoding: u32, value: u64) -> Result<(), VmFail> {
    let cf: u8;
    let zf: u8;
    // SAFETY: VMWRITE with register operands changes only the current VMCS and RFLAGS; the
    // caller vouches that the new field value is sound (this function's contract).
    unsafe {
        asm!(
            "vmwrite {field}, {value}",
            "setc {cf}",
            "setz {zf}",
            field = in(reg) u64::from(encoding),
            value = in(reg) value,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack, nomem),
        );
    }
    outcome(cf, zf)
}

/// Writes a 16-bit field of the current VMCS.
///
/// # Safety
/// As for [`vmwrite64`].
pub unsafe fn vmwrite16(field: Field16, value: u16) -> Result<(), VmFail> {
    // SAFETY: forwarded contract.
    unsafe { vmwrite(field.encoding(), u64::from(value)) }
}

/// Writes a 32-bit field of the current VMCS.
///
/// # Safety
/// As for [`vmwrite64`].
pub unsafe fn vmwrite32(field: Field32, value: u32) -> Result<(), VmFail> {
    // SAFETY: forwarded contract.
    unsafe { vmwrite(field.encoding(), u64::from(value)) }
}

/// Writes a 64-bit field of the current VMCS.
///
/// # Safety
/// The value becomes part of the VMCS the next VM entry uses. Host-state fields decide the
/// stack, page tables, segments and code the CPU runs after every VM exit; control fields decide
/// which memory the guest reaches (EPT pointer) and which host frames the CPU reads (bitmaps,
/// MSR areas). The caller guarantees the value keeps the host sound: host fields describe valid
/// host state, and every address names a frame owned by this VM for as long as the VMCS may be
/// used.
pub unsafe fn vmwrite64(field: Field64, value: u64) -> Result<(), VmFail> {
    // SAFETY: forwarded contract.
    unsafe { vmwrite(field.encoding(), value) }
}

/// Writes a natural-width field of the current VMCS.
///
/// # Safety
/// As for [`vmwrite64`].
pub unsafe fn vmwrite_natural(field: FieldNatural, value: u64) -> Result<(), VmFail> {
    // SAFETY: forwarded contract.
    unsafe { vmwrite(field.encoding(), value) }
}

/// Enters VMX operation with `region` as the VMXON region.
///
/// # Safety
/// See: 25.7 "Enabling and Entering VMX Operation" and 26.11.5 "VMXON Region". CR4.VMXE is set,
/// CR0 and CR4 satisfy the VMX-fixed bits, IA32_FEATURE_CONTROL allows VMX outside SMX, and
/// `region` is a 4 KiB-aligned frame whose first 4 bytes hold the VMCS revision identifier.
/// "Software should not access or modify the VMXON region of a logical processor between
/// execution of VMXON and VMXOFF": the frame stays reserved for the CPU until [`vmxoff`].
pub unsafe fn vmxon(region: HostPhysAddr) -> Result<(), VmFail> {
    let pointer = region.as_u64();
    let cf: u8;
    let zf: u8;
    // SAFETY: the operand is a live local holding the region's address; the caller guarantees
    // the region and the processor state VMXON requires (this function's contract).
    unsafe {
        asm!(
            "vmxon qword ptr [{pointer}]",
            "setc {cf}",
            "setz {zf}",
            pointer = in(reg) &pointer,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    outcome(cf, zf)
}

/// Leaves VMX operation.
///
/// # Safety
/// No guest may be relying on VMX any more: every VMCS in use has been VMCLEARed (so its state is
/// in memory), and nothing afterwards executes a VMX instruction before the next [`vmxon`].
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let cf: u8;
    let zf: u8;
    // SAFETY: VMXOFF changes only VMX operation state and RFLAGS; the caller guarantees nothing
    // still depends on VMX (this function's contract).
    unsafe {
        asm!(
            "vmxoff",
            "setc {cf}",
            "setz {zf}",
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack, nomem),
        );
    }
    outcome(cf, zf)
}

/// VMCLEAR: writes the VMCS at `vmcs` back to memory, makes it not current and "clear".
///
/// # Safety
/// `vmcs` is a 4 KiB-aligned frame owned by one VM, holding (or about to be given) the VMCS
/// revision identifier in its first 4 bytes; the CPU writes VMCS data into it.
pub unsafe fn vmclear(vmcs: HostPhysAddr) -> Result<(), VmFail> {
    let pointer = vmcs.as_u64();
    let cf: u8;
    let zf: u8;
    // SAFETY: the operand is a live local holding the VMCS address; the caller guarantees the
    // frame may be written by the CPU (this function's contract).
    unsafe {
        asm!(
            "vmclear qword ptr [{pointer}]",
            "setc {cf}",
            "setz {zf}",
            pointer = in(reg) &pointer,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    outcome(cf, zf)
}

/// VMPTRLD: makes the VMCS at `vmcs` the current VMCS.
///
/// # Safety
/// `vmcs` has been VMCLEARed at least once, starts with the VMCS revision identifier, is not
/// current on another CPU, and stays allocated and untouched by software while it is current.
pub unsafe fn vmptrld(vmcs: HostPhysAddr) -> Result<(), VmFail> {
    let pointer = vmcs.as_u64();
    let cf: u8;
    let zf: u8;
    // SAFETY: the operand is a live local holding the VMCS address; the caller guarantees the
    // frame is a VMCS the CPU may cache and use (this function's contract).
    unsafe {
        asm!(
            "vmptrld qword ptr [{pointer}]",
            "setc {cf}",
            "setz {zf}",
            pointer = in(reg) &pointer,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    outcome(cf, zf)
}

/// INVEPT with a 128-bit descriptor `[first, 0]`.
///
/// # Safety
/// As for [`invept_single_context`].
unsafe fn invept(kind: u64, first: u64) -> Result<(), VmFail> {
    let descriptor: [u64; 2] = [first, 0];
    let cf: u8;
    let zf: u8;
    // SAFETY: the descriptor is a live local the instruction only reads; INVEPT only discards
    // cached EPT-derived translations.
    unsafe {
        asm!(
            "invept {kind}, [{descriptor}]",
            "setc {cf}",
            "setz {zf}",
            kind = in(reg) kind,
            descriptor = in(reg) &descriptor,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    outcome(cf, zf)
}

/// INVEPT, single-context: drops cached translations derived from `eptp`, as needed after
/// removing or narrowing a mapping (30.4.3.1 "Operations that Invalidate Cached Mappings").
///
/// # Safety
/// The CPU is in VMX root operation. Discarding cached translations cannot break memory safety
/// by itself; the function is `unsafe` because it changes processor state, like every VMX
/// instruction here.
pub unsafe fn invept_single_context(eptp: EptPointer) -> Result<(), VmFail> {
    // SAFETY: forwarded contract; type 1 is single-context (32.3 "INVEPT").
    unsafe { invept(1, eptp.bits()) }
}

/// INVEPT, all-context: drops cached translations derived from any EPTP. Needs
/// IA32_VMX_EPT_VPID_CAP bit 26 (else VMfailValid, error 28).
///
/// # Safety
/// As for [`invept_single_context`].
pub unsafe fn invept_all() -> Result<(), VmFail> {
    // SAFETY: forwarded contract; type 2 is all-context and ignores the descriptor's EPTP.
    unsafe { invept(2, 0) }
}

/// INVVPID, single-context: drops cached linear translations tagged with `vpid` (not 0).
///
/// # Safety
/// As for [`invept_single_context`].
pub unsafe fn invvpid_single_context(vpid: u16) -> Result<(), VmFail> {
    // 32.3 "INVVPID": descriptor bits 15:0 are the VPID, 63:16 reserved, 127:64 the linear
    // address (ignored by the single-context type, 1).
    let descriptor: [u64; 2] = [u64::from(vpid), 0];
    let cf: u8;
    let zf: u8;
    // SAFETY: the descriptor is a live local the instruction only reads; INVVPID only discards
    // cached translations; the caller is in VMX root operation (this function's contract).
    unsafe {
        asm!(
            "invvpid {kind}, [{descriptor}]",
            "setc {cf}",
            "setz {zf}",
            kind = in(reg) 1u64,
            descriptor = in(reg) &descriptor,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    outcome(cf, zf)
}

/// The guest's general-purpose registers and CR2, which VM entry and exit leave to software
/// (RSP, RIP and RFLAGS live in the VMCS).
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestRegisters {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
    /// CR2: the guest's last page-fault address (no VMCS field holds it).
    pub cr2: u64,
}

// carousel_vmx_enter(regs: *mut GuestRegisters [rdi], launched: u64 [rsi]) -> u64 [rax]
//
// Returns 0 after a VM exit, or 1 | CF << 1 | ZF << 2 when VMWRITE / VMLAUNCH / VMRESUME failed.
// It saves the SysV callee-saved registers and the regs pointer on the stack, points HOST_RSP
// at that pointer and HOST_RIP at .Lcarousel_vm_exit, loads the guest registers and enters.
// A VM exit arrives at .Lcarousel_vm_exit with RSP = HOST_RSP, RFLAGS = 0x2 (29.5.3 "Loading
// Host RIP, RSP, RFLAGS, and SSP": "RFLAGS is cleared, except bit 1, which is always set") and
// every general-purpose register still holding the guest's
// value, so the regs pointer is fetched from the stack after one push frees a register.
global_asm!(
    ".pushsection .text.carousel_vmx_enter, \"ax\", @progbits",
    ".global carousel_vmx_enter",
    ".type carousel_vmx_enter, @function",
    "carousel_vmx_enter:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, {host_rsp}",
    "vmwrite rax, rsp",
    "jbe .Lcarousel_vm_fail", // CF or ZF: VMfail
    "lea rdx, [rip + .Lcarousel_vm_exit]",
    "mov rax, {host_rip}",
    "vmwrite rax, rdx",
    "jbe .Lcarousel_vm_fail",
    // MOV to CR2 leaves the arithmetic flags undefined: test `launched` after it.
    "mov rax, [rdi + {cr2}]",
    "mov cr2, rax",
    "test rsi, rsi",
    "mov rax, [rdi + {rax}]",
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
    "jz .Lcarousel_vmlaunch",
    "vmresume",
    "jmp .Lcarousel_vm_fail",
    ".Lcarousel_vmlaunch:",
    "vmlaunch",
    // Reached only when the entry instruction (or a VMWRITE above) fell through with VMfail.
    ".Lcarousel_vm_fail:",
    "setc al",
    "setz cl",
    "movzx eax, al",
    "movzx ecx, cl",
    "lea eax, [rax * 2 + 1]",
    "lea eax, [rax + rcx * 4]",
    "add rsp, 8", // the regs pointer
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".Lcarousel_vm_exit:",
    "push rdi",
    "mov rdi, [rsp + 8]",
    "mov [rdi + {rax}], rax",
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
    "mov rax, cr2",
    "mov [rdi + {cr2}], rax",
    "add rsp, 8", // the regs pointer
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "xor eax, eax",
    "ret",
    ".size carousel_vmx_enter, . - carousel_vmx_enter",
    ".popsection",
    host_rsp = const fields::HOST_RSP.encoding(),
    host_rip = const fields::HOST_RIP.encoding(),
    rax = const offset_of!(GuestRegisters, rax),
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
    cr2 = const offset_of!(GuestRegisters, cr2),
);

unsafe extern "sysv64" {
    /// Defined in the `global_asm!` above.
    fn carousel_vmx_enter(regs: *mut GuestRegisters, launched: u64) -> u64;
}

/// Runs the guest of the current VMCS until its next VM exit: VMLAUNCH if `launched` is false,
/// else VMRESUME. Writes HOST_RSP and HOST_RIP itself; on return `regs` holds the guest's
/// registers at the exit.
///
/// # Safety
/// - A VMCS is current, and its host-state fields (other than RSP / RIP) describe this very
///   execution context: HOST_CR3, the selectors, GDTR / IDTR / TR / FS / GS bases, IA32_EFER and
///   HOST_CR0 / CR4 are the ones the calling code runs with, so that it continues correctly
///   after the exit (29.5 "Loading Host State").
/// - The guest cannot reach host memory: EPT maps only frames owned by this VM, and the I/O and
///   MSR bitmaps trap everything the host depends on.
/// - Interrupts are disabled. The host relies on nothing VMX does not restore: x87 / SSE state,
///   DR0-DR3 / DR6, and MSRs such as STAR, LSTAR and IA32_KERNEL_GS_BASE stay as the guest left
///   them (Carousel's kernel is soft-float and uses none of them).
pub unsafe fn enter(regs: &mut GuestRegisters, launched: bool) -> Result<(), VmFail> {
    // SAFETY: `regs` is a valid, exclusive GuestRegisters for the whole call (the asm reads it
    // before entry and writes it after the exit); the routine preserves every register the SysV
    // ABI calls callee-saved and returns on the same stack; the caller guarantees the VMCS host
    // and guest state (this function's contract).
    let status = unsafe { carousel_vmx_enter(regs, u64::from(launched)) };
    if status == 0 {
        return Ok(());
    }
    let failure = outcome((status & 2) as u8, (status & 4) as u8);
    assert!(
        failure.is_err(),
        "VM entry fell through without VMfail (status {status:#x})"
    );
    failure
}
