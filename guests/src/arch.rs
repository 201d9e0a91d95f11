//! The guest runtime's one room for privileged and special instructions: port I/O (byte and
//! string), `CPUID`, `VMCALL`, `RDTSC`, `HLT`, `STI` / `CLI`, `LIDT` / `LGDT` / `LTR`, the
//! control registers, `RDMSR` / `WRMSR`, `INVLPG` and the deliberate triple fault. (The boot path
//! in `entry`, the interrupt stubs in [`crate::interrupts`], the ring switch in [`crate::ring3`]
//! and the instructions [`crate::probe!`] executes on purpose are the only other assembly.)
//! Everything else in the runtime calls these typed functions.

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

/// Reads `buffer.len()` doublewords from an I/O port into `buffer` with one `rep insd` (the
/// `rep insl` of AT&T syntax, which xv6's IDE driver uses).
///
/// # Safety
///
/// As for [`inb`]: each read may have side effects (an IDE data port advances through its sector
/// buffer), which the caller must want.
pub unsafe fn insl(port: u16, buffer: &mut [u32]) {
    // SAFETY: `rep insd` writes exactly RCX = `buffer.len()` doublewords from RDI upwards, all
    // inside `buffer`, which we borrow mutably. DF = 0, as the Rust ABI guarantees at a call.
    unsafe {
        asm!(
            "rep insd",
            in("dx") port,
            inout("rdi") buffer.as_mut_ptr() => _,
            inout("rcx") buffer.len() => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Writes `buffer` to an I/O port with one `rep outsd` (the `rep outsl` of AT&T syntax).
///
/// # Safety
///
/// As for [`outb`]: the writes must not break an invariant some other code relies on.
pub unsafe fn outsl(port: u16, buffer: &[u32]) {
    // SAFETY: `rep outsd` reads exactly RCX = `buffer.len()` doublewords from RSI upwards, all
    // inside `buffer`. DF = 0, as the Rust ABI guarantees at a call.
    unsafe {
        asm!(
            "rep outsd",
            in("dx") port,
            inout("rsi") buffer.as_ptr() => _,
            inout("rcx") buffer.len() => _,
            options(nostack, preserves_flags, readonly),
        );
    }
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
/// the VM's timer (see [`crate::hypercall::set_timer`]) expires; with interrupts on, also when
/// an interrupt arrives (see [`enable_interrupts_and_halt`] for the race-free way to wait).
pub fn halt() {
    // SAFETY: HLT only stops this virtual CPU until the hypervisor resumes it. Not `nomem`: with
    // IF = 1 an interrupt handler may write memory during the halt.
    unsafe { core::arch::asm!("hlt", options(nostack, preserves_flags)) }
}

/// Executes `STI; HLT`: enables interrupts and halts until the next one. `STI` blocks interrupts
/// until after the next instruction, so an interrupt that becomes pending between a caller's
/// last check (made with IF = 0) and the `HLT` still wakes it: no wake-up is lost.
///
/// # Safety
///
/// As for [`enable_interrupts`].
pub unsafe fn enable_interrupts_and_halt() {
    // SAFETY: the caller installed an IDT whose handlers may run from here on. The asm is not
    // `nomem`: handlers that run during the halt write memory the caller reads afterwards.
    unsafe { asm!("sti", "hlt", options(nostack)) }
}

/// Sets RFLAGS.IF (`STI`): maskable interrupts are delivered from the next instruction on.
///
/// # Safety
///
/// An IDT must be loaded whose entries are ready to handle every vector that may arrive. The
/// asm is not `nomem`, so the compiler does not move memory accesses across it (handlers share
/// memory with the interrupted code).
pub unsafe fn enable_interrupts() {
    // SAFETY: the caller vouches for the IDT; STI changes nothing else.
    unsafe { asm!("sti", options(nostack)) }
}

/// Clears RFLAGS.IF (`CLI`): no maskable interrupt is delivered until interrupts are enabled
/// again. Safe: masking interrupts can delay, never break, the code that handles them. Not
/// `nomem`, for the same reason as [`enable_interrupts`].
pub fn disable_interrupts() {
    // SAFETY: CLI only clears RFLAGS.IF.
    unsafe { asm!("cli", options(nostack)) }
}

/// Whether RFLAGS.IF is set.
pub fn interrupts_enabled() -> bool {
    /// RFLAGS.IF: interrupt enable flag.
    const RFLAGS_IF: u64 = 1 << 9;
    let rflags: u64;
    // SAFETY: PUSHFQ / POP only move RFLAGS through the stack slot they use.
    unsafe { asm!("pushfq", "pop {}", out(reg) rflags, options(nomem, preserves_flags)) };
    rflags & RFLAGS_IF != 0
}

/// The IDTR image `LIDT` reads: limit (size - 1) and linear base address.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct DescriptorTablePointer {
    /// Size of the table in bytes, minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

/// Loads the IDTR (`LIDT`).
///
/// # Safety
///
/// `pointer` must describe a valid 64-bit IDT that stays in memory, unchanged except by code that
/// knows the processor uses it, for as long as the IDTR points at it.
pub unsafe fn load_interrupt_descriptor_table(pointer: &DescriptorTablePointer) {
    // SAFETY: LIDT reads the 10-byte image; the caller vouches for the table it describes.
    unsafe { asm!("lidt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) }
}

/// CR2: the linear address of the last page fault.
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Halts until the next interrupt; with IF = 0, forever.
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
    // SAFETY: loading the IDTR reads the 10-byte `EMPTY_IDT` static. Interrupts are disabled
    // first, and the breakpoint right after ends execution; the halt loop is only reached if the
    // shutdown does not stop the processor.
    unsafe {
        asm!(
            "cli",
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

/// CR0.
pub fn read_cr0() -> u64 {
    let value: u64;
    // SAFETY: reading CR0 has no side effect.
    unsafe { asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR0.
///
/// # Safety
///
/// The new value must keep the guest running: paging, protection and the caching and FPU bits
/// the code after it relies on. (A value the processor refuses raises #GP: see
/// [`crate::probe!`] for writes that are meant to fail.)
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller vouches for the value; the asm is not `nomem`, so memory accesses are
    // not moved across a change of caching or paging.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// CR3: the page-table root (and PCID when CR4.PCIDE = 1).
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effect.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR3 (and so flushes the non-global TLB entries).
///
/// # Safety
///
/// `value` must point at page tables that map the code, stack and data the guest goes on using.
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller vouches for the tables; not `nomem`, as for `write_cr0`.
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// CR4.
pub fn read_cr4() -> u64 {
    let value: u64;
    // SAFETY: reading CR4 has no side effect.
    unsafe { asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR4.
///
/// # Safety
///
/// As for [`write_cr0`]: the value must keep paging (PAE in long mode) and everything the
/// following code relies on.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller vouches for the value; not `nomem`, as for `write_cr0`.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// CR8: the task-priority class (TPR bits 7:4), 64-bit mode only.
pub fn read_cr8() -> u64 {
    let value: u64;
    // SAFETY: reading CR8 has no side effect.
    unsafe { asm!("mov {}, cr8", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes CR8.
///
/// # Safety
///
/// Raising the task priority holds back interrupts of lower priority classes; the caller must
/// not wait for one of those.
pub unsafe fn write_cr8(value: u64) {
    // SAFETY: the caller vouches for the interrupts it holds back.
    unsafe { asm!("mov cr8, {}", in(reg) value, options(nomem, nostack, preserves_flags)) }
}

/// Reads a model-specific register.
///
/// # Safety
///
/// The MSR must exist (RDMSR of another raises #GP, which ends the guest unless it is caught).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller vouches that the MSR exists; RDMSR only reads it.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high,
             options(nomem, nostack, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a model-specific register.
///
/// # Safety
///
/// The MSR must exist and accept `value`, and the change must not break code that relies on
/// the MSR.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags));
    }
}

/// Drops the TLB entries for the page that holds linear `address` (`INVLPG`). Safe: a flush
/// only makes the processor walk the page tables again.
pub fn invlpg(address: u64) {
    // SAFETY: INVLPG only invalidates cached translations. Not `nomem`: accesses after it must
    // see the page tables as they are now.
    unsafe { asm!("invlpg [{}]", in(reg) address, options(nostack, preserves_flags)) }
}

/// Loads the GDTR (`LGDT`).
///
/// # Safety
///
/// `pointer` must describe a GDT that stays in memory and whose descriptors at the selectors in
/// use (CS 0x08, SS/DS 0x10, and the TR selector if one is loaded later) are the ones the running
/// code needs.
pub unsafe fn load_global_descriptor_table(pointer: &DescriptorTablePointer) {
    // SAFETY: LGDT reads the 10-byte image; the caller vouches for the table.
    unsafe { asm!("lgdt [{}]", in(reg) pointer, options(readonly, nostack, preserves_flags)) }
}

/// Loads the task register (`LTR`).
///
/// # Safety
///
/// `selector` must name an available 64-bit TSS descriptor of the loaded GDT, for a TSS that
/// stays in memory.
pub unsafe fn load_task_register(selector: u16) {
    // SAFETY: the caller vouches for the descriptor; LTR marks it busy in the GDT.
    unsafe { asm!("ltr {:x}", in(reg) selector, options(nostack, preserves_flags)) }
}
