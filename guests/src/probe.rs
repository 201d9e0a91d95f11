//! Executing an instruction that may fault, and learning what it did: [`crate::probe!`].
//!
//! A probe arms the runtime's recovery address ([`crate::interrupts::RECOVERY`]) with the
//! address just after the probed instructions, runs them, and disarms it. An exception on the
//! way (a #GP for a control-register value the processor refuses, a #UD for an instruction it
//! does not offer, a #PF, a #DB trap) resumes at that address, and the probe returns it as a
//! [`crate::interrupts::Fault`]; without one the probe returns `None`. The guest must have
//! called [`crate::interrupts::init`].
//!
//! Registers keep the values they had at the exception: a faulting instruction changes nothing
//! before it faults, and the interrupt entry saves and restores every register it uses. The
//! probed instructions must therefore leave the stack as they found it whether or not they
//! fault (no `push` before a faulting instruction), and their operands are the probe's.

/// Runs the given asm template lines with the recovery address armed; returns
/// `Option<carousel_guests::interrupts::Fault>`: the exception that interrupted them, or `None`.
///
/// Operands follow the template lines and must be named or explicit registers (`in("ecx") msr`,
/// `value = in(reg) x`), never positional; the probe adds the named operands `probe_scratch`
/// and `probe_recovery`. The caller writes it inside `unsafe`, with a `SAFETY:` comment for what
/// the instructions do when they do not fault.
///
/// ```ignore
/// // SAFETY: writing a reserved CR4 bit either faults or changes nothing the guest relies on.
/// let fault = unsafe { probe!("mov cr4, {value}", value = in(reg) cr4 | 1 << 31) };
/// assert_eq!(fault.map(|fault| fault.vector), Some(13));
/// ```
///
/// `probe!(tail: ["..."], "...", ...)` adds template lines after the recovery address, run on
/// both paths (to restore a register such as RBX, which LLVM reserves, after an instruction
/// that writes it).
#[macro_export]
macro_rules! probe {
    // Template lines are string literals, operands never start with one: take literals (each
    // followed by a comma) until something else comes.
    (@munch [$($tail:literal),*] [$($template:literal),*] $next:literal, $($rest:tt)+) => {
        $crate::probe!(@munch [$($tail),*] [$($template,)* $next] $($rest)+)
    };
    (@munch [$($tail:literal),*] [$($template:literal),*] $next:literal $(,)?) => {
        $crate::probe!(@emit [$($tail),*] [$($template,)* $next])
    };
    (@munch [$($tail:literal),*] [$($template:literal),+] $($operands:tt)+) => {
        $crate::probe!(@emit [$($tail),*] [$($template),+] $($operands)+)
    };
    (@emit [$($tail:literal),*] [$($template:literal),+] $($operands:tt)*) => {{
        $crate::interrupts::clear_fault();
        ::core::arch::asm!(
            "lea {probe_scratch}, [rip + 66f]",
            "mov qword ptr [rip + {probe_recovery}], {probe_scratch}",
            $($template),+,
            "66:",
            "mov qword ptr [rip + {probe_recovery}], 0",
            $($tail,)*
            probe_scratch = out(reg) _,
            probe_recovery = sym $crate::interrupts::RECOVERY,
            $($operands)*
        );
        $crate::interrupts::take_fault()
    }};
    (tail: [$($tail:literal),+], $($rest:tt)+) => {
        $crate::probe!(@munch [$($tail),+] [] $($rest)+)
    };
    ($($rest:tt)+) => {
        $crate::probe!(@munch [] [] $($rest)+)
    };
}
