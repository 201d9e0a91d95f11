//! What this host offers: programs on `PATH`, and the exact line that installs each thing
//! Carousel needs (Debian's packages, the bare-metal Rust target). `carousel doctor` lists them;
//! the emulator backends and the image builder name them when something is missing.

use std::path::{Path, PathBuf};

/// Installs Bochs with its BIOS images and the headless display.
pub const APT_BOCHS: &str = "apt-get install -y bochs bochsbios vgabios bochs-term";
/// Installs what grub-mkrescue needs for a BIOS-bootable ISO.
pub const APT_GRUB: &str = "apt-get install -y grub-pc-bin grub-common xorriso mtools";
/// Installs QEMU.
pub const APT_QEMU: &str = "apt-get install -y qemu-system-x86";
/// Installs headless Chromium (the report page's browser test).
pub const APT_CHROMIUM: &str = "apt-get install -y chromium";
/// Installs the bare-metal Rust target.
pub const RUSTUP_TARGET: &str = "rustup target add x86_64-unknown-none";

/// `name` on `PATH`, if there.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
