//! Carousel's shared vocabulary: what the host tool hands the hypervisor, what the hypervisor
//! streams back, and what a guest may ask of the hypervisor.
//!
//! What is here:
//! - [`config`]: the run configuration the host tool encodes (postcard) into a GRUB module.
//! - [`hypercall`]: hypercall numbers, argument layouts and result codes.
//! - [`record`]: the records streamed on COM2, and [`wire`]: their framing (COBS frames, each
//!   with a sequence number and a CRC-32).
//!
//! What is not: anything that touches hardware, and anything only one side needs.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
pub mod config;
pub mod hypercall;
#[cfg(feature = "alloc")]
pub mod record;
#[cfg(feature = "alloc")]
pub mod wire;

/// Version of the run configuration and record formats. Bump on any incompatible change.
pub const FORMAT_VERSION: u16 = 10;

/// Multiboot2 module command line of the run-configuration module.
pub const RUN_CONFIG_MODULE: &str = "carousel.run";
