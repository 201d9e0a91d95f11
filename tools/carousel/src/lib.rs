//! `carousel`, Carousel's host tool: validates a lab file, builds the hypervisor and its guests,
//! packs them into a GRUB ISO, runs it in an emulator, shows the consoles (COM1) and decodes the
//! record stream (COM2), then says which VMs passed.
//!
//! What is here, one folder per concern: [`lab`] (the lab file, validated), [`image`] (building
//! the hypervisor and guests, the GRUB ISO, disk images), [`emulator`] (backends, the emulator
//! process, its COM1 socket, Bochs' debugger), [`session`] (one run: the loop that streams the
//! consoles and the records, console scripts and input, persisted disks), [`commands`] (`run`,
//! `report`, `export`, `doctor` and the five benchmarks under [`commands::bench`]) and [`sweep`]
//! (`carousel sweep`); [`host`] says what this machine has and [`repo`] where the checkout is.
//! What is not: decoding and reporting traces (that is `carousel-trace`), and anything that runs
//! inside the emulator; the wire format itself lives in `carousel-protocol`.
//!
//! Exit codes of `carousel run`: 0 every VM passed (exited with success, or finished its console
//! script); 1 a VM failed, never stopped, or its script failed; 2 the lab file or command line is
//! wrong (nothing started); 3 the hypervisor could not run (error before Hello, panic, emulator
//! died without RunEnd); 4 the whole run timed out; 5 the host could not set the run up (build,
//! ISO, emulator missing), or a `--persist` write-back failed; 130 interrupted by Ctrl-C.

pub mod commands;
pub mod emulator;
pub mod host;
pub mod image;
pub mod lab;
pub mod repo;
pub mod session;
pub mod sweep;
pub mod web;
