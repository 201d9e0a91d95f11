//! Ring 3, for guests that test what user code can do: a GDT with user segments and a TSS, the
//! user bit on the low identity map, and [`enter_user`], which runs code at CPL 3 until it
//! comes back with `INT` [`RETURN_VECTOR`].
//!
//! The GDT keeps the runtime's selectors (64-bit code 0x08, data 0x10) and adds user 64-bit
//! code ([`USER_CODE_SELECTOR`]), user data ([`USER_DATA_SELECTOR`]) and a 64-bit TSS (0x28)
//! whose RSP0 is a stack of its own: an interrupt or exception from ring 3 switches to it (Intel
//! SDM Vol. 3A 7.14.5 "Stack Switching in IA-32e Mode": "the processor ... loads the new stack
//! pointer from the TSS"). User code runs with IF = 0 and IOPL = 0, so its port I/O raises #GP.
//! Exceptions it raises go through the runtime's IDT as usual: a [`crate::probe!`] armed in
//! ring 3 recovers there, in ring 3.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::{self, DescriptorTablePointer};
use crate::{interrupts, paging};

/// The vector user code raises (`INT 0x80`) to come back to [`enter_user`]'s caller, with its
/// result in RDI.
pub const RETURN_VECTOR: u8 = 0x80;
/// User code segment: 64-bit, DPL 3 (RPL 3).
pub const USER_CODE_SELECTOR: u16 = 0x18 | 3;
/// User data segment: DPL 3 (RPL 3).
pub const USER_DATA_SELECTOR: u16 = 0x20 | 3;
/// The TSS's selector.
const TSS_SELECTOR: u16 = 0x28;
/// Size of the ring-0 stack interrupts from ring 3 use, and of the user stack.
const STACK_SIZE: usize = 16 << 10;
/// GDT descriptors (SDM Vol. 3A 3.4.5 "Segment Descriptors"): 64-bit code and flat data at DPL
/// 0 (as `entry` has them) and DPL 3, all present and accessed.
const KERNEL_CODE: u64 = 0x00AF_9B00_0000_FFFF;
const KERNEL_DATA: u64 = 0x00CF_9300_0000_FFFF;
const USER_CODE: u64 = 0x00AF_FB00_0000_FFFF;
const USER_DATA: u64 = 0x00CF_F300_0000_FFFF;
/// TSS descriptor type: available 64-bit TSS, present, DPL 0.
const TSS_AVAILABLE: u64 = 0x89;
/// Size of a 64-bit TSS (SDM Vol. 3A 9.7 "Task Management in 64-bit Mode").
const TSS_SIZE: usize = 104;
/// Offset of RSP0 in the TSS.
const TSS_RSP0: usize = 4;
/// Offset of the I/O map base in the TSS: pointing past the limit means no bitmap.
const TSS_IO_MAP_BASE: usize = 102;

/// A 16-byte-aligned stack.
#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK_SIZE]>);

// SAFETY: the stacks are only used by the processor (as RSP0 and as the user RSP), one at a
// time, on the guest's only CPU.
unsafe impl Sync for Stack {}

/// The GDT: null, kernel code, kernel data, user code, user data, TSS (two slots).
#[repr(C, align(16))]
struct Gdt(UnsafeCell<[u64; 7]>);

// SAFETY: written once by `init` before LGDT, with interrupts disabled; afterwards only the
// processor writes it (LTR sets the TSS busy bit).
unsafe impl Sync for Gdt {}

/// The TSS.
#[repr(C, align(16))]
struct Tss(UnsafeCell<[u8; TSS_SIZE]>);

// SAFETY: as for the GDT: written once by `init`, then only read by the processor.
unsafe impl Sync for Tss {}

static GDT: Gdt = Gdt(UnsafeCell::new([0; 7]));
static TSS: Tss = Tss(UnsafeCell::new([0; TSS_SIZE]));
static KERNEL_STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));
static USER_STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Where [`enter_user`] left the kernel stack, for the way back.
#[no_mangle]
static mut CAROUSEL_KERNEL_RSP: u64 = 0;

global_asm!(
    ".section .text.carousel_ring3, \"ax\"",
    // carousel_enter_user(rip: RDI, rsp: RSI) -> RAX: saves the callee-saved registers and RSP,
    // then IRETQ to CPL 3 with IF = 0.
    ".global carousel_enter_user",
    "carousel_enter_user:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov qword ptr [rip + CAROUSEL_KERNEL_RSP], rsp",
    "mov eax, {user_data}",
    "push rax",
    "push rsi",
    "push 2",
    "mov eax, {user_code}",
    "push rax",
    "push rdi",
    "iretq",
    // The DPL-3 gate of RETURN_VECTOR: drop the interrupt frame, restore the kernel stack and
    // segments, and return from carousel_enter_user with the user's RDI.
    ".global carousel_user_return",
    "carousel_user_return:",
    "mov rax, rdi",
    "mov rsp, qword ptr [rip + CAROUSEL_KERNEL_RSP]",
    "mov ecx, {kernel_data}",
    "mov ss, ecx",
    "mov ds, ecx",
    "mov es, ecx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    user_data = const USER_DATA_SELECTOR,
    user_code = const USER_CODE_SELECTOR,
    kernel_data = const 0x10,
);

extern "C" {
    fn carousel_enter_user(rip: u64, rsp: u64) -> u64;
    fn carousel_user_return();
}

/// Loads the GDT and TSS above, gives the low identity map (the guest image, its stacks and
/// data, [`paging::USER_MAPPED_END`]) the user bit, and installs the [`RETURN_VECTOR`] gate.
/// Calls [`interrupts::init`] first. Idempotent. Panics with interrupts enabled.
pub fn init() {
    assert!(
        !arch::interrupts_enabled(),
        "ring3::init with interrupts enabled"
    );
    interrupts::init();
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    let tss_base = TSS.0.get() as u64;
    let rsp0 = KERNEL_STACK.0.get() as u64 + STACK_SIZE as u64;
    // SAFETY: `INSTALLED` is false, so neither table is loaded yet and only this code touches
    // them; IF = 0 on the only CPU.
    let (gdt, tss) = unsafe { (&mut *GDT.0.get(), &mut *TSS.0.get()) };
    tss[TSS_RSP0..TSS_RSP0 + 8].copy_from_slice(&rsp0.to_le_bytes());
    tss[TSS_IO_MAP_BASE..TSS_IO_MAP_BASE + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    let limit = (TSS_SIZE - 1) as u64;
    *gdt = [
        0,
        KERNEL_CODE,
        KERNEL_DATA,
        USER_CODE,
        USER_DATA,
        (limit & 0xFFFF)
            | ((tss_base & 0xFF_FFFF) << 16)
            | (TSS_AVAILABLE << 40)
            | ((limit >> 16) & 0xF) << 48
            | ((tss_base >> 24) & 0xFF) << 56,
        tss_base >> 32,
    ];
    let pointer = DescriptorTablePointer {
        limit: (size_of::<[u64; 7]>() - 1) as u16,
        base: GDT.0.get() as u64,
    };
    // SAFETY: the new GDT has the runtime's code and data descriptors at the selectors in use,
    // lives in a static, and its TSS descriptor describes the static TSS.
    unsafe {
        arch::load_global_descriptor_table(&pointer);
        arch::load_task_register(TSS_SELECTOR);
    }
    paging::allow_user_low();
    // SAFETY: the IDT is installed, IF = 0, and `carousel_user_return` handles an entry from
    // ring 3 (it abandons the frame and returns to `enter_user`'s caller); reached from ring 0
    // it would do the same, which only `enter_user`'s caller expects.
    unsafe {
        interrupts::set_user_gate(
            RETURN_VECTOR,
            (carousel_user_return as unsafe extern "C" fn()) as usize as u64,
        )
    };
    INSTALLED.store(true, Ordering::Release);
}

/// Runs the code at `rip` in ring 3 on the user stack until it executes `INT RETURN_VECTOR`,
/// and returns the RDI it had then.
///
/// # Safety
///
/// [`init`] must have run. The code at `rip` must lie in the user-accessible low map, must end
/// with `INT RETURN_VECTOR` on every path (an exception it does not recover from ends the
/// guest), and may change no memory the caller relies on. Interrupts stay disabled throughout.
pub unsafe fn enter_user(rip: u64) -> u64 {
    assert!(
        INSTALLED.load(Ordering::Acquire),
        "enter_user before ring3::init"
    );
    let rsp = USER_STACK.0.get() as u64 + STACK_SIZE as u64;
    // SAFETY: the caller vouches for the code; `carousel_enter_user` keeps the callee-saved
    // registers and returns through `carousel_user_return` with the kernel stack restored.
    unsafe { carousel_enter_user(rip, rsp) }
}
