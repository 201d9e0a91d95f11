//! The hypervisor's access to the machine outside VMX: ports, MSRs, control registers, CPUID,
//! the GDT/TSS and the exception IDT. VMX instructions live in `carousel_vmx::instructions`;
//! everything else privileged is here, behind typed functions.

use core::arch::{asm, global_asm};
use core::ptr::addr_of;

pub use x86::msr::{IA32_EFER, IA32_FEATURE_CONTROL};

/// Masks every line of both 8259 PICs: the hypervisor polls, and host interrupts have no
/// business in a guest.
pub fn mask_legacy_pic() {
    // SAFETY: writing the interrupt mask registers (OCW1) of the two PICs only masks lines.
    unsafe {
        outb(0x21, 0xFF);
        outb(0xA1, 0xFF);
    }
}

/// Waits (boundedly) until the 16550 at `base` has sent everything: LSR.TEMT set.
///
/// # Safety
/// `base` must be a UART the hypervisor owns (reading its LSR changes nothing else).
pub unsafe fn drain_uart(base: u16) {
    /// Line status register offset, and its "transmitter empty" bit.
    const LSR: u16 = 5;
    const LSR_TEMT: u8 = 1 << 6;
    /// Enough polls for a full 16-byte FIFO at 9600 baud even on a fast CPU; a missing UART
    /// (reading 0xFF) ends at once.
    const MAX_POLLS: u32 = 50_000_000;
    for _ in 0..MAX_POLLS {
        // SAFETY: the caller owns the UART; its LSR only reports status.
        if unsafe { inb(base + LSR) } & LSR_TEMT != 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns: a read can change a device's state
/// (a UART's receive buffer, a PIT latch).
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: forwarded to the caller.
    unsafe { x86::io::inb(port) }
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns, and the write must not break an
/// invariant the rest of the hypervisor relies on.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::io::outb(port, value) }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::io::outw(port, value) }
}

/// Reads a 16-bit word from an I/O port.
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    // SAFETY: forwarded to the caller.
    unsafe { x86::io::inw(port) }
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this CPU (reading a missing one raises #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    // SAFETY: forwarded to the caller.
    unsafe { x86::msr::rdmsr(msr) }
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must keep the hypervisor's own execution sound.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { x86::msr::wrmsr(msr, value) }
}

/// Current CR0.
pub fn cr0() -> u64 {
    // SAFETY: reading CR0 at CPL0 has no side effect.
    unsafe { x86::controlregs::cr0().bits() as u64 }
}

/// Current CR3.
pub fn cr3() -> u64 {
    // SAFETY: reading CR3 at CPL0 has no side effect.
    unsafe { x86::controlregs::cr3() }
}

/// Current CR4.
pub fn cr4() -> u64 {
    // SAFETY: reading CR4 at CPL0 has no side effect.
    unsafe { x86::controlregs::cr4().bits() as u64 }
}

/// Writes CR0.
///
/// # Safety
/// The new value must keep paging, protection and the hypervisor's mappings as they are.
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr0, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// Writes CR4.
///
/// # Safety
/// The new value must keep paging and the hypervisor's mappings as they are.
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) }
}

/// The 512-byte FXSAVE image of the x87, MMX and SSE state (MXCSR included).
#[derive(Debug, Clone)]
#[repr(C, align(16))]
pub struct FxState(pub [u8; 512]);

impl FxState {
    /// The state after reset: FCW 0x0040, MXCSR 0x1F80 (SDM vol. 3A, 10.1.1 "Processor State
    /// After Reset"), every register zero.
    pub fn reset() -> Self {
        let mut bytes = [0u8; 512];
        bytes[0..2].copy_from_slice(&0x0040u16.to_le_bytes());
        bytes[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        Self(bytes)
    }
}

/// An XSAVE area (standard format) for the components above SSE, 64-byte aligned.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct XState(pub [u8; XSTATE_BYTES]);

/// Bytes an [`XState`] holds: enough for every component Bochs' CPU models offer (AVX-512's
/// standard-format area ends at 2,688 bytes).
pub const XSTATE_BYTES: usize = 4096;

/// Saves the x87/MMX/SSE state into `area` (FXSAVE64).
///
/// # Safety
/// CR4.OSFXSR is set (the hypervisor sets it at start).
pub unsafe fn fxsave(area: &mut FxState) {
    // SAFETY: the area is 512 bytes, 16-byte aligned, and exclusively borrowed.
    unsafe { asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) }
}

/// Loads the x87/MMX/SSE state from `area` (FXRSTOR64).
///
/// # Safety
/// CR4.OSFXSR is set, and `area` holds an image FXSAVE made or [`FxState::reset`] (a reserved
/// MXCSR bit would raise #GP).
pub unsafe fn fxrstor(area: &FxState) {
    // SAFETY: the area is 512 bytes and 16-byte aligned.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack)) }
}

/// Saves the components of `mask` that XCR0 enables into `area` (XSAVE64).
///
/// # Safety
/// CR4.OSXSAVE is set, and the area is large enough for every component of `mask`.
pub unsafe fn xsave(area: &mut XState, mask: u64) {
    // SAFETY: the area is 64-byte aligned and exclusively borrowed; EDX:EAX carry the mask.
    unsafe {
        asm!("xsave64 [{}]", in(reg) area.0.as_mut_ptr(), in("eax") mask as u32,
            in("edx") (mask >> 32) as u32, options(nostack))
    }
}

/// Loads the components of `mask` from `area` (XRSTOR64): those whose bit is clear in the
/// area's XSTATE_BV come back in their initial state.
///
/// # Safety
/// CR4.OSXSAVE is set, and `area` holds an image XSAVE made or zeros (a valid header).
pub unsafe fn xrstor(area: &XState, mask: u64) {
    // SAFETY: the area is 64-byte aligned; EDX:EAX carry the mask.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) area.0.as_ptr(), in("eax") mask as u32,
            in("edx") (mask >> 32) as u32, options(nostack))
    }
}

/// Loads XCR0.
///
/// # Safety
/// CR4.OSXSAVE is set and `value` passes the processor's checks (x87 set, supported bits).
pub unsafe fn xsetbv(value: u64) {
    // SAFETY: ECX = 0 selects XCR0; the caller vouches for the value.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack))
    }
}

/// The debug registers that VMX does not switch: DR0-DR3 and DR6.
#[derive(Debug, Clone, Copy, Default)]
pub struct DebugRegisters(pub [u64; 5]);

impl DebugRegisters {
    /// Reads DR0-DR3 and DR6.
    pub fn read() -> Self {
        let (mut dr0, mut dr1, mut dr2, mut dr3, mut dr6): (u64, u64, u64, u64, u64);
        // SAFETY: reading debug registers at CPL 0 has no side effect.
        unsafe {
            asm!("mov {}, dr0", "mov {}, dr1", "mov {}, dr2", "mov {}, dr3", "mov {}, dr6",
                out(reg) dr0, out(reg) dr1, out(reg) dr2, out(reg) dr3, out(reg) dr6,
                options(nomem, nostack));
        }
        Self([dr0, dr1, dr2, dr3, dr6])
    }

    /// Loads DR0-DR3 and DR6.
    ///
    /// # Safety
    /// DR7 must not arm a breakpoint on the hypervisor's own addresses: the host runs with DR7
    /// 0x400 (VM exits load it), so these addresses arm nothing while it runs.
    pub unsafe fn write(&self) {
        let [dr0, dr1, dr2, dr3, dr6] = self.0;
        // SAFETY: with DR7 disabling every breakpoint (the caller's contract), the addresses
        // take effect only in the guest, which owns them.
        unsafe {
            asm!("mov dr0, {}", "mov dr1, {}", "mov dr2, {}", "mov dr3, {}", "mov dr6, {}",
                in(reg) dr0, in(reg) dr1, in(reg) dr2, in(reg) dr3, in(reg) dr6,
                options(nomem, nostack));
        }
    }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads a counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Executes CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let result = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [result.eax, result.ebx, result.ecx, result.edx]
}

/// Lets a pending host interrupt (the SVM backend's LAPIC timer) run its handler: STI, one
/// instruction (STI's shadow), CLI.
pub fn take_interrupts() {
    // SAFETY: every vector the host's LAPIC can raise has a gate (`fill_idt`), whose handler
    // preserves the interrupted context; interrupts are off again afterwards.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: with interrupts off, HLT only stops the CPU; nothing is left to run.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// GDT selectors of the hypervisor (the VMCS host-state area needs them).
pub mod selector {
    /// 64-bit code.
    pub const CODE: u16 = 0x08;
    /// Data and stack.
    pub const DATA: u16 = 0x10;
    /// The TSS (VM exits need a non-null TR: SDM vol. 3C 28.2.3 "Checks on Host Segment and
    /// Descriptor-Table Registers": "The selector fields for CS and TR cannot be 0000H").
    pub const TSS: u16 = 0x18;
}

/// 64-bit TSS (SDM vol. 3A 8.7 "Task Management in 64-bit Mode"): unused but for being present.
#[repr(C, packed(4))]
struct TaskStateSegment {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

static TSS: TaskStateSegment = TaskStateSegment {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    io_map_base: core::mem::size_of::<TaskStateSegment>() as u16,
};

/// GDT: null, code, data, TSS (two slots).
static mut GDT: [u64; 5] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0, 0];

/// Descriptor-table register image for LGDT / LIDT.
#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

/// Base addresses the VMCS host-state area records.
#[derive(Debug, Clone, Copy)]
pub struct HostTables {
    pub gdt_base: u64,
    pub idt_base: u64,
    pub tss_base: u64,
}

/// Loads the hypervisor's GDT (with a TSS) and exception IDT. Called once, first thing.
pub fn init_tables() -> HostTables {
    let tss_base = addr_of!(TSS) as u64;
    let limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
    // 64-bit available TSS descriptor (type 9, present): SDM vol. 3A 8.2.3 "TSS Descriptor in
    // 64-bit mode".
    let low = (limit & 0xFFFF)
        | ((tss_base & 0xFF_FFFF) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((tss_base >> 24) & 0xFF) << 56);
    let high = tss_base >> 32;
    let gdt_base = addr_of!(GDT) as u64;
    let idt_base = addr_of!(IDT) as u64;
    let gdt_pointer = TablePointer {
        limit: (5 * 8 - 1) as u16,
        base: gdt_base,
    };
    let idt_pointer = TablePointer {
        limit: (IDT_ENTRIES * 16 - 1) as u16,
        base: idt_base,
    };
    // SAFETY: called once, before anything else reads GDT or IDT; the GDT keeps the selectors
    // the boot code loaded (0x08 code, 0x10 data), so reloading them is seamless; the IDT
    // entries point at the exception stubs below.
    unsafe {
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        gdt[3] = low;
        gdt[4] = high;
        fill_idt();
        asm!(
            "lgdt [{gdt}]",
            "lidt [{idt}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:x}, {data}",
            "mov ds, {tmp:x}",
            "mov es, {tmp:x}",
            "mov ss, {tmp:x}",
            "mov {tmp:x}, {tss}",
            "ltr {tmp:x}",
            gdt = in(reg) &gdt_pointer,
            idt = in(reg) &idt_pointer,
            code = const selector::CODE as u64,
            data = const selector::DATA,
            tss = const selector::TSS,
            tmp = out(reg) _,
        );
    }
    HostTables {
        gdt_base,
        idt_base,
        tss_base,
    }
}

/// Gates: the 32 exception vectors, then the host LAPIC's timer and spurious vectors (0x30 and
/// 0x3F, used by the SVM backend).
const IDT_ENTRIES: usize = 0x40;

/// Interrupt gate descriptors.
static mut IDT: [[u64; 2]; IDT_ENTRIES] = [[0; 2]; IDT_ENTRIES];

unsafe extern "C" {
    /// The host timer's and the spurious vector's stubs (the assembly below).
    fn host_timer_stub();
    fn spurious_stub();
}

unsafe extern "C" {
    /// Addresses of the 32 exception stubs (defined in the assembly below).
    static exception_stubs: [u64; 32];
}

/// Fills [`IDT`] with interrupt gates to the exception stubs.
///
/// # Safety
/// Must run before the IDT is loaded, with nothing else touching it.
unsafe fn fill_idt() {
    // SAFETY: the caller guarantees exclusive access; `exception_stubs` is initialised data.
    let (idt, stubs) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(IDT),
            &*addr_of!(exception_stubs),
        )
    };
    let extra = [
        (0x30, host_timer_stub as *const () as u64),
        (0x3F, spurious_stub as *const () as u64),
    ];
    let handlers = stubs
        .iter()
        .copied()
        .enumerate()
        .chain(extra.iter().map(|&(vector, handler)| (vector, handler)));
    for (vector, handler) in handlers {
        let gate = &mut idt[vector];
        // Present, DPL 0, 64-bit interrupt gate (type 14): SDM vol. 3A 6.14.1 "64-Bit Mode IDT".
        gate[0] = (handler & 0xFFFF)
            | (u64::from(selector::CODE) << 16)
            | (0x8E << 40)
            | (((handler >> 16) & 0xFFFF) << 48);
        gate[1] = handler >> 32;
    }
}

/// What the exception stubs push, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// An exception in the hypervisor itself is a bug: report it and stop.
#[unsafe(no_mangle)]
extern "C" fn host_exception(frame: &ExceptionFrame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    panic!(
        "exception {} in the hypervisor: error code {:#x}, rip {:#x}, rsp {:#x}, cr2 {:#x}",
        frame.vector, frame.error_code, frame.rip, frame.rsp, cr2
    );
}

// Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; the others get a 0 pushed so every
// frame has the same layout (SDM vol. 3A 6.13 "Error Code").
global_asm!(
    r#"
    .section .text.exceptions, "ax"
    .irp vector, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
exception_stub_\vector:
    push 0
    push \vector
    jmp exception_common
    .endr
    .irp vector, 8,10,11,12,13,14,17,21,29,30
exception_stub_\vector:
    push \vector
    jmp exception_common
    .endr
exception_common:
    mov rdi, rsp
    and rsp, -16
    call host_exception
    ud2

    .global host_timer_stub
host_timer_stub:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push rbp
    mov rbp, rsp
    and rsp, -16
    call host_timer_interrupt
    mov rsp, rbp
    pop rbp
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq

    .global spurious_stub
spurious_stub:
    iretq

    .section .rodata.exceptions, "a"
    .balign 8
    .global exception_stubs
exception_stubs:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exception_stub_\vector
    .endr
"#
);
