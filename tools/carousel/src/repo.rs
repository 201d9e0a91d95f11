//! The checkout the tool works in: the repository root (where the hypervisor and guests are
//! built, where run directories go by default) and the commit it is at.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Overrides the repository root the tool builds in.
pub const ROOT_ENV: &str = "CAROUSEL_ROOT";

/// The repository root: `$CAROUSEL_ROOT`, else where this tool's sources were (two levels
/// above its manifest).
pub fn repo_root() -> PathBuf {
    match std::env::var_os(ROOT_ENV) {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            let root = manifest.join("../..");
            root.canonicalize().unwrap_or(root)
        }
    }
}

/// The commit the repository is at (`git describe --always --dirty`), for traces and sweeps;
/// "unknown" outside a git checkout.
pub fn commit() -> String {
    Command::new("git")
        .arg("-C")
        .arg(repo_root())
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
