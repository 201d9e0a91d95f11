//! `carousel doctor`: what this host has for building and running Carousel, and the exact
//! line that installs whatever is missing.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use crate::emulator::backend::{self, BackendChoice};
use crate::host::{find_program, APT_BOCHS, APT_CHROMIUM, APT_GRUB, APT_QEMU, RUSTUP_TARGET};

/// Bochs' headless display plugin (Debian's bochs-term).
pub const BOCHS_TERM_PLUGIN: &str = "/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so";

/// One thing doctor looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    pub present: bool,
    /// What was found, or what is wrong.
    pub detail: String,
    /// The line that installs it.
    pub fix: &'static str,
    /// Needed for building and running with Bochs (the CI backend); the rest is optional.
    pub needed: bool,
}

fn program(name: &str, fix: &'static str, needed: bool) -> Item {
    let found = find_program(name);
    Item {
        name: name.to_string(),
        present: found.is_some(),
        detail: found
            .map(|path| path.display().to_string())
            .unwrap_or_else(|| "not on PATH".to_string()),
        fix,
        needed,
    }
}

fn file(name: &str, path: &str, fix: &'static str, needed: bool) -> Item {
    let present = Path::new(path).exists();
    Item {
        name: name.to_string(),
        present,
        detail: if present {
            path.to_string()
        } else {
            format!("{path} missing")
        },
        fix,
        needed,
    }
}

/// Whether rustup lists `x86_64-unknown-none` as installed (for the repo's toolchain, since
/// the check runs in the repository root).
fn rust_target(root: &Path) -> Item {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output();
    let (present, detail) = match output {
        Ok(output) if output.status.success() => {
            let list = String::from_utf8_lossy(&output.stdout);
            let present = list
                .lines()
                .any(|line| line.trim() == crate::image::build::TARGET);
            (
                present,
                if present {
                    "installed".to_string()
                } else {
                    "not installed".to_string()
                },
            )
        }
        Ok(output) => (
            false,
            format!(
                "rustup failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ),
        Err(error) => (false, format!("cannot run rustup: {error}")),
    };
    Item {
        name: format!("rust target {}", crate::image::build::TARGET),
        present,
        detail,
        fix: RUSTUP_TARGET,
        needed: true,
    }
}

/// Looks at this host.
pub fn examine(root: &Path) -> Vec<Item> {
    let kvm_problem = backend::kvm_problem();
    let dev_kvm = Path::new(backend::DEV_KVM).exists();
    vec![
        program(backend::BOCHS, APT_BOCHS, true),
        file("bochsbios", backend::BOCHS_BIOS, APT_BOCHS, true),
        file("vgabios", backend::VGA_BIOS, APT_BOCHS, true),
        file("bochs-term", BOCHS_TERM_PLUGIN, APT_BOCHS, true),
        program(crate::image::iso::GRUB_MKRESCUE, APT_GRUB, true),
        file(
            "grub-pc-bin",
            crate::image::iso::GRUB_I386_PC,
            APT_GRUB,
            true,
        ),
        program("xorriso", APT_GRUB, true),
        program("mformat", APT_GRUB, true),
        rust_target(root),
        program(backend::QEMU, APT_QEMU, false),
        program("chromium", APT_CHROMIUM, false),
        Item {
            name: backend::DEV_KVM.to_string(),
            present: dev_kvm,
            detail: if dev_kvm {
                "present"
            } else {
                "missing (no KVM)"
            }
            .to_string(),
            fix: "a Linux host with KVM (not installable from here)",
            needed: false,
        },
        Item {
            name: "nested VMX".to_string(),
            present: kvm_problem.is_none(),
            detail: kvm_problem.unwrap_or_else(|| "on".to_string()),
            fix: "an Intel host with `modprobe kvm_intel nested=1`",
            needed: false,
        },
    ]
}

/// The report and its exit code: 0 when everything the Bochs backend needs is present.
pub fn report(items: &[Item], auto_pick: backend::Backend) -> (String, i32) {
    let mut out = String::new();
    let width = items.iter().map(|item| item.name.len()).max().unwrap_or(0);
    for item in items {
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}  {}{}",
            item.name,
            if item.present { "ok" } else { "MISSING" },
            item.detail,
            if item.needed { "" } else { " (optional)" }
        );
    }
    let mut fixes: Vec<&str> = items
        .iter()
        .filter(|item| !item.present)
        .map(|item| item.fix)
        .collect();
    fixes.dedup();
    fixes.sort_unstable();
    fixes.dedup();
    if !fixes.is_empty() {
        out.push_str("\nto fix what is missing:\n");
        for fix in fixes {
            let _ = writeln!(out, "  {fix}");
        }
    }
    let ready = items.iter().all(|item| item.present || !item.needed);
    let _ = writeln!(
        out,
        "\nbochs backend: {}",
        if ready { "ready" } else { "NOT ready" }
    );
    let _ = write!(out, "--backend auto would pick: {auto_pick}");
    (out, if ready { 0 } else { 1 })
}

/// One line per backend: whether it can start here, and why not.
pub fn backends_report(backends: &[(&str, Option<String>)]) -> String {
    let mut out = String::from("backends:\n");
    for (name, problem) in backends {
        let _ = match problem {
            None => writeln!(out, "  {name:<9} ready"),
            Some(problem) => writeln!(out, "  {name:<9} not available: {problem}"),
        };
    }
    out
}

/// Runs doctor on this host.
pub fn doctor() -> (String, i32) {
    let items = examine(&crate::repo::repo_root());
    let auto = backend::resolve_here(BackendChoice::Auto);
    let backends = [
        ("bochs", backend::Backend::Bochs),
        ("qemu", backend::Backend::QemuSvm),
        ("qemu-kvm", backend::Backend::QemuKvm),
    ]
    .map(|(name, which)| (name, backend::unavailable(which)));
    let (text, code) = report(&items, auto);
    (
        format!(
            "{}\n{text} ({})",
            backends_report(&backends),
            backend::auto_reason()
        ),
        code,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, present: bool, needed: bool, fix: &'static str) -> Item {
        Item {
            name: name.to_string(),
            present,
            detail: String::new(),
            fix,
            needed,
        }
    }

    #[test]
    fn each_backend_says_whether_it_can_start() {
        let text = backends_report(&[
            ("bochs", None),
            ("qemu", None),
            ("qemu-kvm", Some("/dev/kvm is missing".to_string())),
        ]);
        assert_eq!(
            text,
            "backends:\n  bochs     ready\n  qemu      ready\n  \
             qemu-kvm  not available: /dev/kvm is missing\n"
        );
    }

    #[test]
    fn ready_when_only_optional_things_are_missing() {
        let items = [
            item("bochs", true, true, APT_BOCHS),
            item("qemu-system-x86_64", false, false, APT_QEMU),
        ];
        let (text, code) = report(&items, backend::Backend::Bochs);
        assert_eq!(code, 0);
        assert!(text.contains("bochs backend: ready"), "{text}");
        assert!(text.contains(APT_QEMU), "{text}");
        assert!(text.ends_with("--backend auto would pick: bochs"), "{text}");
    }

    #[test]
    fn not_ready_lists_each_install_line_once() {
        let items = [
            item("bochs", false, true, APT_BOCHS),
            item("vgabios", false, true, APT_BOCHS),
            item("xorriso", false, true, APT_GRUB),
            item("rust target", false, true, RUSTUP_TARGET),
        ];
        let (text, code) = report(&items, backend::Backend::Bochs);
        assert_eq!(code, 1);
        assert_eq!(text.matches(APT_BOCHS).count(), 1, "{text}");
        assert!(
            text.contains(APT_GRUB) && text.contains(RUSTUP_TARGET),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|line| line.starts_with("bochs ") && line.contains(" MISSING")),
            "{text}"
        );
    }

    #[test]
    fn finds_sh() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-not-a-program-carousel").is_none());
    }
}
