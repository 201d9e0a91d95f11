//! Links every guest binary with `link.ld`, as a fixed-address (non-PIE) executable.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let script = manifest_dir.join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    // x86_64-unknown-none links static-pie by default; the 32-bit entry code uses absolute
    // addresses and the loader does no relocation, so link at the addresses the script gives.
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
