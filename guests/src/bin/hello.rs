//! `hello`: the first guest. It checks what a guest can see of Carousel (CPUID, the hypercalls
//! and their errors) and reports each check, or fails or triple-faults when its arguments ask.
//!
//! Arguments (the lab file's `args`):
//! - none: run the checks; exit with `EXIT_SUCCESS` if all pass, `EXIT_FAILURE` if not.
//! - `fail`: exit with `EXIT_FAILURE` at once.
//! - `triple-fault`: triple-fault at once.
#![no_std]
#![no_main]

use carousel_guests::hypercall::{self, HypercallError};
use carousel_guests::{arch, entry, println, BootInfo};
use carousel_protocol::hypercall::{
    Error, CONSOLE_WRITE, CPUID_HYPERVISOR_LEAF, CPUID_SIGNATURE, EXIT_FAILURE, EXIT_SUCCESS,
};
use carousel_protocol::FORMAT_VERSION;

entry!(main);

/// CPUID leaf 1: feature information.
const CPUID_FEATURES_LEAF: u32 = 1;
/// CPUID.1:ECX bit 5: VMX (a guest must not see it).
const CPUID_FEATURES_ECX_VMX: u32 = 1 << 5;
/// CPUID.1:ECX bit 31: a hypervisor is present.
const CPUID_FEATURES_ECX_HYPERVISOR: u32 = 1 << 31;
/// A hypercall number no Carousel hypercall has.
const UNKNOWN_HYPERCALL: u32 = 0x7fff;
/// A guest-physical address outside hello's RAM (and below the local APIC's page).
const ADDRESS_OUTSIDE_RAM: u32 = 0xF000_0000;
/// Length of the console write from [`ADDRESS_OUTSIDE_RAM`].
const OUTSIDE_RAM_LENGTH: u32 = 16;

fn main(boot: &BootInfo) -> ! {
    match boot.cmdline.trim() {
        "" => run_checks(boot),
        "fail" => {
            println!("hello: exiting with failure as asked");
            hypercall::exit(EXIT_FAILURE)
        }
        "triple-fault" => {
            println!("hello: triple-faulting as asked");
            arch::triple_fault()
        }
        other => {
            println!(
                "hello: unknown arguments {other:?} (expected none, \"fail\" or \"triple-fault\")"
            );
            hypercall::exit(EXIT_FAILURE)
        }
    }
}

/// Runs every check, reports each, and exits with the overall result.
fn run_checks(boot: &BootInfo) -> ! {
    println!("hello from carousel guest (args {:?})", boot.cmdline);
    if let Some(memory) = boot.memory {
        println!(
            "hello: memory {} KiB low, {} KiB from 1 MiB",
            memory.lower_kib, memory.upper_kib
        );
    }

    let mut all_passed = true;
    let mut check = |name: &str, passed: bool| {
        println!("check {name}: {}", if passed { "ok" } else { "FAILED" });
        if let Err(error) = hypercall::check(name, passed) {
            println!("check {name}: the CHECK hypercall failed: {error}");
            all_passed = false;
        }
        all_passed &= passed;
    };

    let vendor = cpuid_vendor();
    println!(
        "hello: CPU vendor {:?}",
        core::str::from_utf8(&vendor).unwrap_or("(not UTF-8)")
    );

    let features = arch::cpuid(CPUID_FEATURES_LEAF, 0);
    check(
        "cpuid-hypervisor-bit",
        features.ecx & CPUID_FEATURES_ECX_HYPERVISOR != 0,
    );
    check(
        "cpuid-vmx-hidden",
        features.ecx & CPUID_FEATURES_ECX_VMX == 0,
    );

    let signature = cpuid_hypervisor_signature();
    println!(
        "hello: hypervisor signature {:?}",
        core::str::from_utf8(&signature).unwrap_or("(not UTF-8)")
    );
    check("cpuid-signature", signature == CPUID_SIGNATURE);

    let version = hypercall::version();
    println!("hello: VERSION returned {version:?}");
    check("version", version == Ok(u32::from(FORMAT_VERSION)));

    let line = b"hello through a hypercall\n";
    let written = hypercall::console_write(line);
    check("console-write", written == Ok(line.len() as u32));

    let unknown = hypercall::decode_result(hypercall::hypercall(UNKNOWN_HYPERCALL, 0, 0, 0, 0));
    check(
        "unknown-call",
        unknown == Err(HypercallError::Defined(Error::UnknownCall)),
    );

    let outside = hypercall::decode_result(hypercall::hypercall(
        CONSOLE_WRITE,
        ADDRESS_OUTSIDE_RAM,
        OUTSIDE_RAM_LENGTH,
        0,
        0,
    ));
    check(
        "bad-address",
        outside == Err(HypercallError::Defined(Error::BadAddress)),
    );

    if all_passed {
        println!("hello: all checks passed");
        hypercall::exit(EXIT_SUCCESS)
    } else {
        println!("hello: some checks FAILED");
        hypercall::exit(EXIT_FAILURE)
    }
}

/// The vendor string of CPUID leaf 0 (EBX, EDX, ECX).
fn cpuid_vendor() -> [u8; 12] {
    let leaf = arch::cpuid(0, 0);
    registers_as_bytes([leaf.ebx, leaf.edx, leaf.ecx])
}

/// The hypervisor's signature at [`CPUID_HYPERVISOR_LEAF`] (EBX, ECX, EDX).
fn cpuid_hypervisor_signature() -> [u8; 12] {
    let leaf = arch::cpuid(CPUID_HYPERVISOR_LEAF, 0);
    registers_as_bytes([leaf.ebx, leaf.ecx, leaf.edx])
}

/// Three registers' bytes in order, each little-endian (how CPUID spells strings).
fn registers_as_bytes(registers: [u32; 3]) -> [u8; 12] {
    let mut bytes = [0; 12];
    for (chunk, register) in bytes.chunks_exact_mut(4).zip(registers) {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    bytes
}
