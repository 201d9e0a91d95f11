//! Interrupts, for the guests that take them: a 64-bit IDT whose 256 entry stubs all lead to one
//! dispatcher, a handler per vector, enabling and disabling, and the local APIC's end of
//! interrupt.
//!
//! What happens to a vector:
//! - it has a handler ([`set_handler`]): the handler runs, with IF = 0, on the interrupted stack
//!   (the guests stay in ring 0 and use no IST), and must send its own EOI
//!   ([`end_of_interrupt`]) if the interrupt came from the local APIC;
//! - an exception (0–31) without a handler: the runtime prints the vector, RIP, error code and
//!   CR2, and exits with `EXIT_FAILURE`;
//! - any other vector without a handler: counted as unexpected ([`unexpected`]), then EOI, so
//!   that one stray vector cannot block every vector of equal or lower priority.
//!
//! An exception (0–31) that arrives while a recovery address is armed ([`RECOVERY`], which
//! [`crate::probe!`] arms around the one instruction it probes) goes neither to a handler nor to
//! the default: the runtime records it ([`take_fault`]) and resumes at the recovery address,
//! with RFLAGS.TF cleared. That is how a test guest executes an instruction the processor may
//! refuse and reports what happened.
//!
//! Guests that never call [`init`] never enable interrupts and see no change.
//!
//! Frame layout and alignment follow Intel SDM Vol. 3A (order no. 325462) 7.14 "Exception and
//! Interrupt Handling in 64-bit Mode": "the processor aligns the new stack pointer on a 16-byte
//! boundary" and "pushes the stack pointer (SS:RSP) unconditionally".

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use carousel_protocol::hypercall::EXIT_FAILURE;

use crate::arch::{self, DescriptorTablePointer};
use crate::mmio::Registers;
use crate::{hypercall, println};

/// Number of IDT entries (every vector).
pub const VECTORS: usize = 256;
/// First vector that is not a processor exception.
pub const FIRST_EXTERNAL_VECTOR: u8 = 32;
/// Physical base address of the local APIC (the architectural default, and where Carousel puts
/// it).
pub const LOCAL_APIC_BASE: usize = 0xFEE0_0000;

/// Local APIC register: ID.
const LOCAL_APIC_ID: usize = 0x20;
/// Local APIC register: EOI.
const LOCAL_APIC_EOI: usize = 0xB0;

/// Exceptions that push an error code: #DF 8, #TS 10, #NP 11, #SS 12, #GP 13, #PF 14, #AC 17,
/// #CP 21, #VC 29, #SX 30 (SDM Vol. 3A 7.3 "Sources of Interrupts", table "Protected-Mode
/// Exceptions and Interrupts").
const ERROR_CODE_VECTORS: u32 = (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 17)
    | (1 << 21)
    | (1 << 29)
    | (1 << 30);
/// Bytes between two entry stubs (each is aligned to this, and is at most 12 bytes long).
const STUB_SIZE: usize = 16;
/// Page-fault vector (#PF), whose report includes CR2.
const PAGE_FAULT: u64 = 14;
/// IDT gate type and attributes: present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const INTERRUPT_GATE: u64 = 0x8E;
/// The same gate with DPL 3: `INT n` from ring 3 may use it.
const USER_INTERRUPT_GATE: u64 = 0xEE;
/// RFLAGS.TF: single-step.
const RFLAGS_TF: u64 = 1 << 8;

/// What the entry stub and the common code push: the interrupted code's scratch registers, the
/// vector and error code (0 when the processor pushes none), then the processor's frame.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct InterruptFrame {
    /// Scratch registers, saved by the common entry code (callee-saved ones are kept by the
    /// Rust dispatcher itself).
    pub r11: u64,
    /// See `r11`.
    pub r10: u64,
    /// See `r11`.
    pub r9: u64,
    /// See `r11`.
    pub r8: u64,
    /// See `r11`.
    pub rdi: u64,
    /// See `r11`.
    pub rsi: u64,
    /// See `r11`.
    pub rdx: u64,
    /// See `r11`.
    pub rcx: u64,
    /// See `r11`.
    pub rax: u64,
    /// The vector, pushed by the entry stub.
    pub vector: u64,
    /// The exception's error code, or 0 (pushed by the stub) where the processor pushes none.
    pub error_code: u64,
    /// Where the interrupted code resumes.
    pub rip: u64,
    /// The interrupted code's CS.
    pub cs: u64,
    /// The interrupted code's RFLAGS.
    pub rflags: u64,
    /// The interrupted code's RSP.
    pub rsp: u64,
    /// The interrupted code's SS.
    pub ss: u64,
}

/// An interrupt handler. It runs with IF = 0 and must not print: the console has no lock, and
/// the interrupted code may be in the middle of a line.
pub type Handler = fn(&InterruptFrame);

/// Vectors that arrived without a handler, other than exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unexpected {
    /// How many arrived.
    pub count: u32,
    /// The most recent one.
    pub last_vector: Option<u8>,
}

/// One 16-byte IDT entry (SDM Vol. 3A 7.14.1 "64-Bit Mode IDT").
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct GateDescriptor {
    /// Offset 15:0, selector, IST, type and attributes, offset 31:16.
    low: u64,
    /// Offset 63:32; the upper doubleword is reserved (0).
    high: u64,
}

impl GateDescriptor {
    /// A ring-0 interrupt gate to `address` in the runtime's code segment, on the current stack.
    fn interrupt_gate(address: u64) -> Self {
        Self::gate(address, INTERRUPT_GATE)
    }

    /// An interrupt gate to `address` in the runtime's code segment with type and attributes
    /// `attributes`.
    fn gate(address: u64, attributes: u64) -> Self {
        let low = (address & 0xFFFF)
            | (u64::from(crate::entry::CODE_SELECTOR) << 16)
            | (attributes << 40)
            | ((address >> 16) & 0xFFFF) << 48;
        Self {
            low,
            high: address >> 32,
        }
    }
}

/// The IDT, filled once by [`init`].
#[repr(C, align(16))]
struct InterruptDescriptorTable(UnsafeCell<[GateDescriptor; VECTORS]>);

// SAFETY: only `init` (once, guarded by `INSTALLED`, before LIDT) and `set_user_gate` write
// the table, both with interrupts disabled on the guest's only CPU; otherwise only the processor
// reads it.
unsafe impl Sync for InterruptDescriptorTable {}

static IDT: InterruptDescriptorTable = InterruptDescriptorTable(UnsafeCell::new(
    [GateDescriptor { low: 0, high: 0 }; VECTORS],
));
/// Whether `init` has loaded the IDT.
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Each vector's handler as `Handler as usize`, or 0 for none.
static HANDLERS: [AtomicUsize; VECTORS] = [const { AtomicUsize::new(0) }; VECTORS];
/// Count of vectors 32–255 that arrived while the interrupted code had RFLAGS.IF clear, and the
/// last of them plus one (0: none): the processor never delivers an external interrupt then,
/// so each is one the hypervisor delivered against the guest's will (or twice).
static MASKED_COUNT: AtomicU32 = AtomicU32::new(0);
static MASKED_LAST: AtomicU32 = AtomicU32::new(0);
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// Count of vectors 32–255 that arrived without a handler.
static UNEXPECTED_COUNT: AtomicU32 = AtomicU32::new(0);
/// The last such vector, plus one (0: none yet).
static UNEXPECTED_LAST: AtomicU32 = AtomicU32::new(0);

/// Where an exception resumes, or 0 for none: armed by [`crate::probe!`] (from its own asm, so
/// ring-3 code can arm it too) and disarmed by the exception that uses it.
#[doc(hidden)]
pub static RECOVERY: AtomicU64 = AtomicU64::new(0);
/// The last exception taken through [`RECOVERY`]: its vector plus one (0: none since the last
/// [`take_fault`]), error code, RIP, CS, RFLAGS and CR2 (page faults only).
static FAULT_VECTOR: AtomicU64 = AtomicU64::new(0);
static FAULT_ERROR_CODE: AtomicU64 = AtomicU64::new(0);
static FAULT_RIP: AtomicU64 = AtomicU64::new(0);
static FAULT_CS: AtomicU64 = AtomicU64::new(0);
static FAULT_RFLAGS: AtomicU64 = AtomicU64::new(0);
static FAULT_CR2: AtomicU64 = AtomicU64::new(0);

/// An exception the runtime caught at a recovery address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The vector (6 #UD, 13 #GP, 14 #PF, ...).
    pub vector: u8,
    /// The error code (0 for exceptions without one).
    pub error_code: u64,
    /// The RIP the processor pushed: the faulting instruction (faults) or the next one (traps).
    pub rip: u64,
    /// The CS it pushed; its low two bits are the privilege level the exception came from.
    pub cs: u64,
    /// The RFLAGS it pushed.
    pub rflags: u64,
    /// CR2 for a page fault, else 0.
    pub cr2: u64,
}

impl Fault {
    /// The privilege level the exception interrupted.
    pub fn cpl(&self) -> u8 {
        (self.cs & 3) as u8
    }
}

/// Forgets any recorded fault (the probe calls this before its instruction).
#[doc(hidden)]
pub fn clear_fault() {
    FAULT_VECTOR.store(0, Ordering::Release);
}

/// The exception caught at the recovery address since the last [`clear_fault`], if one was.
pub fn take_fault() -> Option<Fault> {
    let vector = FAULT_VECTOR.swap(0, Ordering::AcqRel);
    (vector != 0).then(|| Fault {
        vector: (vector - 1) as u8,
        error_code: FAULT_ERROR_CODE.load(Ordering::Acquire),
        rip: FAULT_RIP.load(Ordering::Acquire),
        cs: FAULT_CS.load(Ordering::Acquire),
        rflags: FAULT_RFLAGS.load(Ordering::Acquire),
        cr2: FAULT_CR2.load(Ordering::Acquire),
    })
}

/// The local APIC's registers (EOI and the ID read after it).
const LOCAL_APIC: Registers = Registers::new(LOCAL_APIC_BASE);

global_asm!(
    ".section .text.carousel_interrupts, \"ax\"",
    // One stub per vector, each STUB_SIZE-aligned: push a zero error code where the processor
    // pushes none, push the vector, join the common code.
    ".macro carousel_interrupt_stub vector",
    ".balign {stub_size}",
    ".if \\vector < 32",
    ".if (({error_code_vectors} >> \\vector) & 1) == 0",
    "push 0",
    ".endif",
    ".else",
    "push 0",
    ".endif",
    "push \\vector",
    "jmp carousel_interrupt_common",
    ".endm",
    //
    ".balign {stub_size}",
    ".global carousel_interrupt_stubs",
    "carousel_interrupt_stubs:",
    ".irp high, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    ".irp low, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15",
    "carousel_interrupt_stub (\\high*16+\\low)",
    ".endr",
    ".endr",
    //
    // The processor pushed 5 quadwords on a 16-byte-aligned stack, the stub 2, and here 9: 16 in
    // all, so RSP is 16-byte aligned at the call, as the System V ABI wants.
    "carousel_interrupt_common:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "mov rdi, rsp",
    "cld",
    "call {dispatch}",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    // Vector and error code.
    "add rsp, 16",
    "iretq",
    stub_size = const STUB_SIZE,
    error_code_vectors = const ERROR_CODE_VECTORS,
    dispatch = sym dispatch,
);

extern "C" {
    /// The first of the 256 entry stubs, [`STUB_SIZE`] bytes apart.
    static carousel_interrupt_stubs: [u8; STUB_SIZE * VECTORS];
}

/// Fills the IDT with the entry stubs and loads it. Interrupts stay disabled; call [`enable`]
/// when the handlers are registered. Idempotent.
///
/// Panics if interrupts are enabled (nothing in the runtime enables them before this).
pub fn init() {
    assert!(
        !arch::interrupts_enabled(),
        "interrupts::init with interrupts enabled"
    );
    if INSTALLED.load(Ordering::Acquire) {
        return;
    }
    let stubs = (&raw const carousel_interrupt_stubs) as u64;
    // SAFETY: `INSTALLED` is false, so the table is not loaded yet and the processor does not
    // read it; IF = 0 on the only CPU, so nothing else runs while we write it.
    let table = unsafe { &mut *IDT.0.get() };
    for (vector, gate) in table.iter_mut().enumerate() {
        *gate = GateDescriptor::interrupt_gate(stubs + (vector * STUB_SIZE) as u64);
    }
    let pointer = DescriptorTablePointer {
        limit: (size_of::<[GateDescriptor; VECTORS]>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the table is a complete 64-bit IDT in a static, never written again; every gate
    // leads to a stub whose common code saves what it clobbers and returns with IRETQ.
    unsafe { arch::load_interrupt_descriptor_table(&pointer) };
    INSTALLED.store(true, Ordering::Release);
}

/// Points `vector`'s gate at `address` with DPL 3, so that `INT vector` from ring 3 reaches it
/// (the processor's own exceptions ignore a gate's DPL). The code at `address` gets the
/// processor's frame, not the runtime's dispatch.
///
/// # Safety
///
/// [`init`] must have run, interrupts must be disabled, and `address` must be code that handles
/// an interrupt entry from any ring (see [`crate::ring3`]).
pub unsafe fn set_user_gate(vector: u8, address: u64) {
    assert_installed();
    assert!(
        !arch::interrupts_enabled(),
        "set_user_gate with interrupts enabled"
    );
    // SAFETY: IF = 0 on the only CPU, so no interrupt uses the table while one gate changes;
    // the caller vouches for the code at `address`.
    let table = unsafe { &mut *IDT.0.get() };
    table[usize::from(vector)] = GateDescriptor::gate(address, USER_INTERRUPT_GATE);
}

/// Makes `handler` run for `vector` from now on, replacing any earlier one.
pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[usize::from(vector)].store(handler as usize, Ordering::Release);
}

/// Enables interrupts (`STI`). Panics if [`init`] has not loaded the IDT.
pub fn enable() {
    assert_installed();
    // SAFETY: the IDT is loaded, and every vector has an entry that either runs a registered
    // handler or the runtime's default.
    unsafe { arch::enable_interrupts() }
}

/// Disables interrupts (`CLI`).
pub fn disable() {
    arch::disable_interrupts();
}

/// Enables interrupts and halts until the next one (`STI; HLT`, with no lost wake-up). Returns
/// after that interrupt's handler, with interrupts enabled. Panics if [`init`] has not run.
pub fn enable_and_halt() {
    assert_installed();
    // SAFETY: as in `enable`.
    unsafe { arch::enable_interrupts_and_halt() }
}

/// Signals end of interrupt to the local APIC, the way xv6 does: EOI ← 0, then a read of the ID
/// register.
///
/// A safe function, unlike the runtime's other device writes: at worst a misplaced EOI retires
/// an interrupt early, which changes which interrupts arrive, never memory. Handlers call it
/// last.
pub fn end_of_interrupt() {
    // SAFETY: writing EOI only retires the highest-priority in-service interrupt.
    unsafe { LOCAL_APIC.write(LOCAL_APIC_EOI, 0) };
    LOCAL_APIC.read(LOCAL_APIC_ID);
}

/// The vectors (32–255) that arrived without a handler so far.
pub fn unexpected() -> Unexpected {
    let last = UNEXPECTED_LAST.load(Ordering::Acquire);
    Unexpected {
        count: UNEXPECTED_COUNT.load(Ordering::Acquire),
        last_vector: last.checked_sub(1).map(|vector| vector as u8),
    }
}

/// Vectors 32–255 that arrived while the interrupted code had interrupts disabled. A guest that
/// raises such vectors itself with `INT n` (legal with IF = 0) must not count on this.
pub fn while_masked() -> Unexpected {
    let last = MASKED_LAST.load(Ordering::Acquire);
    Unexpected {
        count: MASKED_COUNT.load(Ordering::Acquire),
        last_vector: last.checked_sub(1).map(|vector| vector as u8),
    }
}

/// Panics unless [`init`] has loaded the IDT.
fn assert_installed() {
    assert!(
        INSTALLED.load(Ordering::Acquire),
        "interrupts enabled before interrupts::init"
    );
}

/// Called by the common entry code with the frame it built (which IRETQ then reads back, so
/// the recovery path can move RIP).
extern "C" fn dispatch(frame: &mut InterruptFrame) {
    let vector = frame.vector as usize;
    if vector >= usize::from(FIRST_EXTERNAL_VECTOR) && frame.rflags & RFLAGS_IF == 0 {
        MASKED_COUNT.fetch_add(1, Ordering::AcqRel);
        MASKED_LAST.store(vector as u32 + 1, Ordering::Release);
    }
    if vector < usize::from(FIRST_EXTERNAL_VECTOR) {
        let recovery = RECOVERY.swap(0, Ordering::AcqRel);
        if recovery != 0 {
            let cr2 = if frame.vector == PAGE_FAULT {
                arch::read_cr2()
            } else {
                0
            };
            FAULT_ERROR_CODE.store(frame.error_code, Ordering::Release);
            FAULT_RIP.store(frame.rip, Ordering::Release);
            FAULT_CS.store(frame.cs, Ordering::Release);
            FAULT_RFLAGS.store(frame.rflags, Ordering::Release);
            FAULT_CR2.store(cr2, Ordering::Release);
            FAULT_VECTOR.store(frame.vector + 1, Ordering::Release);
            frame.rip = recovery;
            frame.rflags &= !RFLAGS_TF;
            return;
        }
    }
    let raw = HANDLERS[vector].load(Ordering::Acquire);
    if raw != 0 {
        // SAFETY: `set_handler` is the only writer of `HANDLERS`, and it stores `Handler`s cast
        // to `usize`; casting back gives the same function pointer.
        let handler = unsafe { core::mem::transmute::<usize, Handler>(raw) };
        handler(frame);
    } else if vector < usize::from(FIRST_EXTERNAL_VECTOR) {
        exception(frame);
    } else {
        UNEXPECTED_COUNT.fetch_add(1, Ordering::AcqRel);
        UNEXPECTED_LAST.store(vector as u32 + 1, Ordering::Release);
        end_of_interrupt();
    }
}

/// Reports an exception that has no handler, and ends the guest.
fn exception(frame: &InterruptFrame) -> ! {
    let cr2 = if frame.vector == PAGE_FAULT {
        arch::read_cr2()
    } else {
        0
    };
    println!(
        "carousel guest: exception {} ({}) at RIP {:#x}, error code {:#x}, CR2 {cr2:#x}, RSP {:#x}",
        frame.vector,
        exception_name(frame.vector),
        frame.rip,
        frame.error_code,
        frame.rsp,
    );
    hypercall::exit(EXIT_FAILURE)
}

/// The SDM's mnemonic for exception `vector`.
fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE",
        "#DB",
        "NMI",
        "#BP",
        "#OF",
        "#BR",
        "#UD",
        "#NM",
        "#DF",
        "coprocessor overrun",
        "#TS",
        "#NP",
        "#SS",
        "#GP",
        "#PF",
        "reserved",
        "#MF",
        "#AC",
        "#MC",
        "#XM",
        "#VE",
        "#CP",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "reserved",
        "#HV",
        "#VC",
        "#SX",
        "reserved",
    ];
    NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("not an exception")
}
