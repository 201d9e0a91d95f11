//! `case=ring3 call=CALL`: hypercalls and privileged instructions from CPL 3 (issue 12, "What was
//! found" 6). The guest drops to ring 3 ([`carousel_guests::ring3`]) and runs one stub there.
//!
//! - `exit`: VMCALL EXIT with success: a user process must not end the VM as "passed".
//! - `balloon`: VMCALL BALLOON_INFLATE of the page holding the guest kernel's own code.
//! - `console`: VMCALL CONSOLE_WRITE of a forged line.
//! - `privileged`: `in` from a port (IOPL 0, no I/O bitmap: #GP), HLT (#GP), MOV to CR3 (#GP),
//!   RDMSR (#GP), and CPUID (allowed at any CPL).
//!
//! VMCALL at CPL > 0 must raise #UD in the guest, as KVM does: each stub arms the recovery
//! address in ring 3, so the #UD returns to the stub, which comes back to ring 0 with
//! `INT 0x80` and RDI = 0 (faulted) or 1 (the instruction completed).

use core::arch::global_asm;

use carousel_guests::{ring3, BootInfo};
use carousel_protocol::hypercall::{BALLOON_INFLATE, CONSOLE_WRITE, EXIT, EXIT_SUCCESS};

use crate::{say, Report, Shown, GENERAL_PROTECTION, INVALID_OPCODE};

/// The page list ring 3 hands to BALLOON_INFLATE: the page of `run`'s code.
#[no_mangle]
static mut ADVERSARY_USER_LIST: [u32; 1] = [0];
/// The text ring 3 tries to print.
#[no_mangle]
static ADVERSARY_USER_TEXT: [u8; 32] = *b"[carousel] PANIC: from ring 3!!\n";

// Each stub: arm the recovery address (label 2), run the instruction, disarm; RDI = 1 if it
// completed, 0 if an exception brought it to label 2; back to ring 0.
macro_rules! user_stub {
    ($name:literal, $($instruction:literal),+) => {
        concat!(
            ".global ", $name, "\n",
            $name, ":\n",
            "lea rax, [rip + 2f]\n",
            "mov qword ptr [rip + {recovery}], rax\n",
            $($instruction, "\n",)+
            "mov qword ptr [rip + {recovery}], 0\n",
            "mov edi, 1\n",
            "int {ret}\n",
            "2:\n",
            "xor edi, edi\n",
            "int {ret}\n",
        )
    };
}

global_asm!(
    ".section .text.adversary_user, \"ax\"",
    user_stub!("adversary_user_exit", "mov eax, {exit}", "mov ebx, {success}", "vmcall"),
    user_stub!(
        "adversary_user_balloon",
        "mov eax, {inflate}",
        "lea rbx, [rip + ADVERSARY_USER_LIST]",
        "mov ecx, 1",
        "vmcall"
    ),
    user_stub!(
        "adversary_user_console",
        "mov eax, {console}",
        "lea rbx, [rip + ADVERSARY_USER_TEXT]",
        "mov ecx, 32",
        "vmcall"
    ),
    user_stub!("adversary_user_in", "mov edx, 0x80", "in al, dx"),
    user_stub!("adversary_user_hlt", "hlt"),
    user_stub!("adversary_user_cr3", "mov rax, cr3", "mov cr3, rax"),
    user_stub!("adversary_user_rdmsr", "mov ecx, 0xC0000080", "rdmsr"),
    user_stub!("adversary_user_cpuid", "xor eax, eax", "xor ecx, ecx", "cpuid"),
    recovery = sym carousel_guests::interrupts::RECOVERY,
    ret = const ring3::RETURN_VECTOR,
    exit = const EXIT,
    success = const EXIT_SUCCESS,
    inflate = const BALLOON_INFLATE,
    console = const CONSOLE_WRITE,
);

extern "C" {
    fn adversary_user_exit();
    fn adversary_user_balloon();
    fn adversary_user_console();
    fn adversary_user_in();
    fn adversary_user_hlt();
    fn adversary_user_cr3();
    fn adversary_user_rdmsr();
    fn adversary_user_cpuid();
}

/// Runs `stub` in ring 3 and checks what happened: `expected` is the vector it should raise at
/// CPL 3, or `None` when it should complete.
fn in_ring3(report: &mut Report, name: &str, stub: unsafe extern "C" fn(), expected: Option<u8>) {
    carousel_guests::interrupts::clear_fault();
    // SAFETY: each stub lies in the guest image (user-accessible after `ring3::init`), ends
    // every path with INT RETURN_VECTOR, and changes no memory but the recovery address.
    let completed = unsafe { ring3::enter_user(stub as usize as u64) };
    let fault = carousel_guests::interrupts::take_fault();
    let passed = match expected {
        Some(vector) => {
            completed == 0 && fault.is_some_and(|fault| fault.vector == vector && fault.cpl() == 3)
        }
        None => completed == 1 && fault.is_none(),
    };
    report.check_detail(
        name,
        passed,
        format_args!(
            "(completed {completed}, exception {}; expected {expected:?})",
            Shown(fault)
        ),
    );
}

pub fn run(boot: &BootInfo, report: &mut Report) {
    ring3::init();
    let call = boot.arg("call").unwrap_or("exit");
    say!("ring 3: {call}");
    match call {
        "exit" => in_ring3(
            report,
            "ring3-vmcall-exit-ud",
            adversary_user_exit,
            Some(INVALID_OPCODE),
        ),
        "balloon" => {
            let code_page = (run as fn(&BootInfo, &mut Report) as usize as u64 / 4096) as u32;
            // SAFETY: the list is read by ring 3's hypercall only; nothing else uses it.
            unsafe { ADVERSARY_USER_LIST = [code_page] };
            say!("ring 3 gives back the kernel's code page {code_page:#x}");
            in_ring3(
                report,
                "ring3-vmcall-balloon-ud",
                adversary_user_balloon,
                Some(INVALID_OPCODE),
            );
        }
        "console" => in_ring3(
            report,
            "ring3-vmcall-console-ud",
            adversary_user_console,
            Some(INVALID_OPCODE),
        ),
        "privileged" => {
            in_ring3(
                report,
                "ring3-in-gp",
                adversary_user_in,
                Some(GENERAL_PROTECTION),
            );
            in_ring3(
                report,
                "ring3-hlt-gp",
                adversary_user_hlt,
                Some(GENERAL_PROTECTION),
            );
            in_ring3(
                report,
                "ring3-mov-cr3-gp",
                adversary_user_cr3,
                Some(GENERAL_PROTECTION),
            );
            in_ring3(
                report,
                "ring3-rdmsr-gp",
                adversary_user_rdmsr,
                Some(GENERAL_PROTECTION),
            );
            in_ring3(report, "ring3-cpuid-works", adversary_user_cpuid, None);
        }
        other => report.check_detail("ring3-call", false, format_args!("unknown {other:?}")),
    }
}
