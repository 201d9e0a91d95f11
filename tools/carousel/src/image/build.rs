//! Building the hypervisor and the built-in guests by invoking cargo, which decides itself what
//! is stale. Cargo's output is shown only when a build fails.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use super::child::{self, Stopped};

/// The bare-metal target the kernel and the guests build for.
pub const TARGET: &str = "x86_64-unknown-none";
/// The hypervisor's package, and its binary's name.
pub const KERNEL_PACKAGE: &str = "carousel-kernel";
/// The package whose binaries are the built-in guests.
pub const GUESTS_PACKAGE: &str = "carousel-guests";
/// Overrides the cargo target directory of those builds (default `<root>/target`).
pub const TARGET_DIR_ENV: &str = "CAROUSEL_TARGET_DIR";

/// Why the build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot start cargo ({program}): {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cargo's output:\n{output}\nbuild failed: `cargo {args}` ({status})")]
    Failed {
        args: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("interrupted (Ctrl-C) while building")]
    Interrupted,
    #[error(
        "cargo built {package} but {path} is missing (is there a binary target of that name?)"
    )]
    MissingArtifact { package: String, path: PathBuf },
}

/// The target directory of the kernel and guest builds: `$CAROUSEL_TARGET_DIR`, else
/// `<root>/target` (the repository's normal one, whatever `CARGO_TARGET_DIR` says).
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os(TARGET_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => root.join("target"),
    }
}

/// Where cargo puts the release binary `name` for [`TARGET`].
pub fn artifact(target_dir: &Path, name: &str) -> PathBuf {
    target_dir.join(TARGET).join("release").join(name)
}

/// cargo's arguments to build `package` for [`TARGET`] into `target_dir`.
pub fn cargo_args(package: &str, target_dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["build", "--release", "-p", package, "--target", TARGET]
        .iter()
        .map(OsString::from)
        .collect();
    args.push("--target-dir".into());
    args.push(target_dir.into());
    args
}

/// The cargo to run: the one that started this tool (`$CARGO`), else `cargo` from `PATH`.
fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Builds `package` in `root`, quietly unless it fails; stops (killing cargo) when
/// `interrupted` is set.
pub fn cargo_build(
    root: &Path,
    target_dir: &Path,
    package: &str,
    interrupted: &AtomicBool,
) -> Result<(), BuildError> {
    let program = cargo_program();
    let args = cargo_args(package, target_dir);
    let mut command = Command::new(&program);
    command
        .args(&args)
        .current_dir(root)
        // The tool's own target directory (e.g. from `cargo run`) must not redirect the build.
        .env_remove("CARGO_TARGET_DIR");
    let output = child::run(&mut command, interrupted).map_err(|stopped| match stopped {
        Stopped::Interrupted => BuildError::Interrupted,
        Stopped::Spawn(source) => BuildError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        },
    })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let text = without_progress(&text);
    Err(BuildError::Failed {
        args: args
            .iter()
            .map(|arg| arg.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        status: output.status,
        output: text,
    })
}

/// cargo's output without its progress lines (`Compiling …`, `Downloaded …`), which bury
/// the errors.
pub fn without_progress(output: &str) -> String {
    const PROGRESS: [&str; 6] = [
        "Compiling ",
        "Downloading ",
        "Downloaded ",
        "Updating ",
        "Locking ",
        "Blocking ",
    ];
    output
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !PROGRESS.iter().any(|word| line.starts_with(word))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kernel and, if asked for, the built-in guests, built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The hypervisor ELF.
    pub kernel: PathBuf,
    /// The directory holding the built-in guest binaries.
    pub guests_dir: PathBuf,
}

impl Built {
    /// The built-in guest `name`.
    pub fn guest(&self, name: &str) -> PathBuf {
        self.guests_dir.join(name)
    }
}

/// Builds the hypervisor, and the guests package when `guests` is set; checks the named
/// binaries exist afterwards.
pub fn build(root: &Path, target_dir: &Path, guests: &[&str]) -> Result<Built, BuildError> {
    build_unless_interrupted(root, target_dir, guests, &AtomicBool::new(false))
}

/// [`build`], stopped (cargo killed) when `interrupted` is set: [`BuildError::Interrupted`].
pub fn build_unless_interrupted(
    root: &Path,
    target_dir: &Path,
    guests: &[&str],
    interrupted: &AtomicBool,
) -> Result<Built, BuildError> {
    cargo_build(root, target_dir, KERNEL_PACKAGE, interrupted)?;
    let kernel = artifact(target_dir, KERNEL_PACKAGE);
    if !kernel.is_file() {
        return Err(BuildError::MissingArtifact {
            package: KERNEL_PACKAGE.to_string(),
            path: kernel,
        });
    }
    if !guests.is_empty() {
        cargo_build(root, target_dir, GUESTS_PACKAGE, interrupted)?;
        for guest in guests {
            let path = artifact(target_dir, guest);
            if !path.is_file() {
                return Err(BuildError::MissingArtifact {
                    package: GUESTS_PACKAGE.to_string(),
                    path,
                });
            }
        }
    }
    Ok(Built {
        kernel,
        guests_dir: target_dir.join(TARGET).join("release"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_command() {
        let args = cargo_args("carousel-kernel", Path::new("/repo/target"));
        let args: Vec<&str> = args.iter().map(|arg| arg.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "build",
                "--release",
                "-p",
                "carousel-kernel",
                "--target",
                "x86_64-unknown-none",
                "--target-dir",
                "/repo/target"
            ]
        );
        assert_eq!(
            artifact(Path::new("/repo/target"), "hello"),
            Path::new("/repo/target/x86_64-unknown-none/release/hello")
        );
    }

    #[test]
    fn progress_lines_are_dropped() {
        let output = "   Compiling serde v1\n  Downloaded x v1\nerror[E0432]: unresolved import\n  --> kernel/src/a.rs:1:1\n";
        assert_eq!(
            without_progress(output),
            "error[E0432]: unresolved import\n  --> kernel/src/a.rs:1:1"
        );
    }

    #[test]
    fn default_root_is_the_workspace() {
        // Tests run without CAROUSEL_ROOT unless a developer set it on purpose.
        if std::env::var_os(crate::repo::ROOT_ENV).is_none() {
            let root = crate::repo::repo_root();
            assert!(
                root.join("protocol/Cargo.toml").is_file(),
                "{}",
                root.display()
            );
            assert!(root.join("tools/carousel/Cargo.toml").is_file());
        }
    }
}
