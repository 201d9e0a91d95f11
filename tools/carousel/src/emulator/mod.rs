//! The emulator a run boots in: which backend and how it is configured ([`backend`]: bochsrc,
//! QEMU arguments), the process itself ([`process`]), its COM1 socket ([`com1`]) and Bochs'
//! debugger breakpoints ([`breakpoints`]).
//!
//! Bochs is the CI backend (BOCHS.md). QEMU runs with KVM where the host has nested VMX; QEMU's
//! TCG has no VMX, so the `qemu-tcg` backend only ever shows the hypervisor's no-VMX message.

pub mod backend;
pub mod breakpoints;
pub mod com1;
pub mod process;

pub use self::backend::{Backend, BackendChoice};
pub use self::process::Emulator;
