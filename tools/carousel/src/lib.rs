//! `carousel`, Carousel's host tool: validates a lab file, builds the hypervisor and its guests,
//! packs them into a GRUB ISO, runs it in an emulator, shows the consoles (COM1) and decodes the
//! record stream (COM2), then says which VMs passed.
//!
//! What is here: one module per step ([`lab`], [`build`], [`iso`], [`backend`], [`run`],
//! [`outcome`], [`accounting`]); the console's two directions ([`com1`]: the emulator's COM1
//! socket, [`script`]: lab-file console scripts and the focus protocol, [`interactive`]: typed
//! input); disk images ([`disk`]: blank images, persisting written sectors);
//! [`bench`](mod@bench) (`carousel bench sched`: generated labs, run quietly), [`sweep`]
//! (`carousel sweep`: a lab across quanta, policies, weights and workloads, compared) and
//! [`doctor`], which checks the host. What is not: anything that runs inside the emulator; the wire format
//! itself lives in `carousel-protocol`.
//!
//! Exit codes of `carousel run`: 0 every VM passed (exited with success, or finished its console
//! script); 1 a VM failed, never stopped, or its script failed; 2 the lab file or command line is
//! wrong (nothing started); 3 the hypervisor could not run (error before Hello, panic, emulator
//! died without RunEnd); 4 the whole run timed out; 5 the host could not set the run up (build,
//! ISO, emulator missing), or a `--persist` write-back failed; 130 interrupted by Ctrl-C.

pub mod backend;
pub mod bench;
pub mod breakpoints;
pub mod build;
pub mod com1;
pub mod commands;
pub mod decode_bench;
pub mod disk;
pub mod doctor;
pub mod export_bench;
pub mod interactive;
pub mod iso;
pub mod lab;
pub mod memory_bench;
pub mod run;
pub mod script;
pub mod sweep;
pub mod xv6_bench;
