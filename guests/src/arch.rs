//! The guest runtime's one room for privileged and special instructions: port I/O, `CPUID`,
//! `VMCALL`, `HLT` and the deliberate triple fault. (The boot path in [`crate::entry`] is the
//! only other assembly.) Everything else in the runtime calls these typed functions.

use core::arch::asm;
pub use core::arch::x86_64::CpuidResult;

/// Writes one byte to an I/O port.
///
/// # Safety
///
/// The write must not break an invariant some other code relies on (for example, reprogram a
/// device behind the back of its driver). The guest runtime only writes to COM1.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: `out` touches no memory and no flags; the caller vouches for the effect of this
    // write on the device.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Reads one byte from an I/O port.
///
/// # Safety
///
/// Reading some ports has side effects (a UART's receive register pops its FIFO); the caller
/// must want them.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: `in` touches no memory and no flags; the caller accepts the read's side effects.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Executes `CPUID` with `leaf` in EAX and `subleaf` in ECX.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    // CPUID exists on every x86-64 processor; `__cpuid_count` has no other precondition.
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// Executes `VMCALL` with EAX = `number`, EBX/ECX/EDX/ESI = `arguments`, and returns EAX.
///
/// Safe because no hypercall of the ABI writes guest memory or changes guest state other than
/// EAX (`EXIT` does not return at all); the hypervisor only reads the buffers it is given. The
/// asm is still marked as reading memory, so that those buffers are written out before it.
pub fn vmcall(number: u32, arguments: [u32; 4]) -> u32 {
    let [ebx, ecx, edx, esi] = arguments;
    let result: u32;
    // SAFETY: VMCALL in VMX non-root operation exits to the hypervisor, which follows the
    // hypercall ABI described above. LLVM reserves RBX, so the first argument travels in a
    // scratch register swapped into RBX around the instruction and back out after it. The
    // argument registers are declared clobbered in case the hypervisor does not keep them.
    unsafe {
        asm!(
            "xchg {ebx:r}, rbx",
            "vmcall",
            "xchg {ebx:r}, rbx",
            ebx = inout(reg) u64::from(ebx) => _,
            inout("eax") number => result,
            inout("ecx") ecx => _,
            inout("edx") edx => _,
            inout("esi") esi => _,
            options(nostack),
        );
    }
    result
}

/// Reads the time-stamp counter (RDTSC does not exit: the guest sees the host's TSC).
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Executes HLT once. With interrupts off, the hypervisor resumes the guest after the HLT when
/// the VM's timer (see [`crate::hypercall::set_timer`]) expires.
pub fn halt() {
    // SAFETY: HLT only stops this virtual CPU until the hypervisor resumes it.
    unsafe { core::arch::asm!("hlt", options(nomem, nostack, preserves_flags)) }
}

/// Halts until the next interrupt; with IF = 0 (the guest never enables interrupts), forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `hlt` touches no memory; the loop covers a wake-up by an NMI or SMI.
        unsafe {
            asm!("hlt", options(nomem, nostack, preserves_flags));
        }
    }
}

/// Makes the processor triple-fault: loads an IDT with limit 0 and raises a breakpoint.
///
/// The breakpoint cannot be delivered (vector 3 lies outside the IDT), so the processor raises
/// #GP, which cannot be delivered either, so #DF, which ends in a triple fault: a shutdown, which
/// a hypervisor sees as a VM exit. Safe because nothing runs after it.
pub fn triple_fault() -> ! {
    /// IDTR image: limit 0, base 0 (no vector is inside the table).
    #[repr(C, packed)]
    struct EmptyIdt {
        limit: u16,
        base: u64,
    }
    static EMPTY_IDT: EmptyIdt = EmptyIdt { limit: 0, base: 0 };
    // SAFETY: loading the IDTR reads the 10-byte `EMPTY_IDT` static. The guest never enables
    // interrupts, and the breakpoint right after ends execution; the halt loop is only reached
    // if the shutdown does not stop the processor.
    unsafe {
        asm!(
            "lidt [{idt}]",
            "int3",
            "2:",
            "hlt",
            "jmp 2b",
            idt = in(reg) &raw const EMPTY_IDT,
            options(noreturn, nostack),
        );
    }
}
