//! `carousel`, Carousel's host tool: validates a lab file, builds the hypervisor and its guests,
//! packs them into a GRUB ISO, runs it in an emulator, shows the consoles (COM1) and decodes the
//! record stream (COM2), then says which VMs passed.
//!
//! What is here: one module per step ([`lab`], [`build`], [`iso`], [`backend`], [`run`],
//! [`outcome`], [`accounting`]), [`bench`](mod@bench) (`carousel bench sched`: generated labs,
//! run quietly) and [`doctor`], which checks the host. What is not: anything that runs inside
//! the emulator; the wire format itself lives in `carousel-protocol`.
//!
//! Exit codes of `carousel run`: 0 every VM passed; 1 a VM failed or never stopped; 2 the lab
//! file or command line is wrong (nothing started); 3 the hypervisor could not run (error
//! before Hello, panic, emulator died without RunEnd); 4 the whole run timed out; 5 the host
//! could not set the run up (build, ISO, emulator missing); 130 interrupted by Ctrl-C.

pub mod accounting;
pub mod backend;
pub mod bench;
pub mod build;
pub mod doctor;
pub mod iso;
pub mod lab;
pub mod outcome;
pub mod run;
