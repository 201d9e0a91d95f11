//! The boot image: a GRUB 2 rescue ISO whose menu entry loads the hypervisor with multiboot2
//! and passes the run configuration and each VM's kernel as modules; with `disk_backend =
//! "memory"` each VM's disk too (otherwise the disks are on the run's shared drive,
//! [`super::drive`]).
//!
//! Disk images are copied into the staging directory, so the emulator never writes the user's
//! file; only `persist` writes it ([`super::drive::persist_extent`]).

use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use carousel_protocol::RUN_CONFIG_MODULE;

use super::child::{self, Stopped};

/// Where GRUB's BIOS modules live (Debian's grub-pc-bin); without them grub-mkrescue makes an
/// image no BIOS boots.
pub const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";
/// The ISO builder.
pub const GRUB_MKRESCUE: &str = "grub-mkrescue";

/// One VM's files as they go into the image.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub kernel: PathBuf,
    pub disk: Option<PathBuf>,
}

/// Why the image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("cannot stage {path}: {source}")]
    Stage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{GRUB_I386_PC} is missing: {}", crate::host::APT_GRUB)]
    NoBiosGrub,
    #[error("cannot start {GRUB_MKRESCUE}: {source}; {}", crate::host::APT_GRUB)]
    Spawn { source: std::io::Error },
    #[error("interrupted (Ctrl-C) while making the ISO")]
    Interrupted,
    #[error("{GRUB_MKRESCUE} failed ({status}):\n{stderr}")]
    Failed {
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The GRUB menu: boot at once into the hypervisor with its modules. `disks[i]` says whether
/// VM `i` has a disk image.
pub fn grub_cfg(disks: &[bool]) -> String {
    let mut cfg = String::from(
        "set timeout=0\nset default=0\nmenuentry \"carousel\" {\n  multiboot2 /boot/carousel.elf\n",
    );
    let _ = writeln!(cfg, "  module2 /boot/run.cfg {RUN_CONFIG_MODULE}");
    for (index, has_disk) in disks.iter().enumerate() {
        let _ = writeln!(
            cfg,
            "  module2 /boot/vm{index}.elf {}",
            kernel_module(index)
        );
        if *has_disk {
            let _ = writeln!(cfg, "  module2 /boot/vm{index}.disk {}", disk_module(index));
        }
    }
    cfg.push_str("  boot\n}\n");
    cfg
}

/// Fills `staging` (which must not exist yet) with the image's files.
pub fn stage(
    staging: &Path,
    kernel: &Path,
    run_config: &[u8],
    vms: &[VmFiles],
) -> Result<(), IsoError> {
    let boot = staging.join("boot");
    let wrap = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IsoError::Stage { path, source }
    };
    let grub = boot.join("grub");
    fs::create_dir_all(&grub).map_err(wrap(&grub))?;
    fs::copy(kernel, boot.join("carousel.elf")).map_err(wrap(kernel))?;
    fs::write(boot.join("run.cfg"), run_config).map_err(wrap(&boot.join("run.cfg")))?;
    for (index, vm) in vms.iter().enumerate() {
        fs::copy(&vm.kernel, boot.join(format!("vm{index}.elf"))).map_err(wrap(&vm.kernel))?;
        if let Some(disk) = &vm.disk {
            fs::copy(disk, boot.join(format!("vm{index}.disk"))).map_err(wrap(disk))?;
        }
    }
    let disks: Vec<bool> = vms.iter().map(|vm| vm.disk.is_some()).collect();
    fs::write(grub.join("grub.cfg"), grub_cfg(&disks)).map_err(wrap(&grub.join("grub.cfg")))?;
    Ok(())
}

/// Runs grub-mkrescue on `staging`, writing `iso`; returns how long it took. Stops (killing
/// it) when `interrupted` is set.
pub fn mkrescue(
    staging: &Path,
    iso: &Path,
    interrupted: &AtomicBool,
) -> Result<Duration, IsoError> {
    if !Path::new(GRUB_I386_PC).is_dir() {
        return Err(IsoError::NoBiosGrub);
    }
    let start = Instant::now();
    let mut command = Command::new(GRUB_MKRESCUE);
    command.arg("-o").arg(iso).arg(staging);
    let output = child::run(&mut command, interrupted).map_err(|stopped| match stopped {
        Stopped::Interrupted => IsoError::Interrupted,
        Stopped::Spawn(source) => IsoError::Spawn { source },
    })?;
    if !output.status.success() {
        return Err(IsoError::Failed {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(start.elapsed())
}

/// Multiboot2 module command line of VM `index`'s kernel.
pub fn kernel_module(index: usize) -> String {
    format!("vm{index}.kernel")
}

/// Multiboot2 module command line of VM `index`'s disk image (`disk_backend = "memory"`).
pub fn disk_module(index: usize) -> String {
    format!("vm{index}.disk")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_one_vm() {
        assert_eq!(
            grub_cfg(&[false]),
            "set timeout=0\nset default=0\nmenuentry \"carousel\" {\n  multiboot2 /boot/carousel.elf\n  module2 /boot/run.cfg carousel.run\n  module2 /boot/vm0.elf vm0.kernel\n  boot\n}\n"
        );
    }

    #[test]
    fn grub_cfg_disks() {
        let cfg = grub_cfg(&[true, false, true]);
        let modules: Vec<&str> = cfg
            .lines()
            .filter(|line| line.trim_start().starts_with("module2"))
            .map(str::trim)
            .collect();
        assert_eq!(
            modules,
            [
                "module2 /boot/run.cfg carousel.run",
                "module2 /boot/vm0.elf vm0.kernel",
                "module2 /boot/vm0.disk vm0.disk",
                "module2 /boot/vm1.elf vm1.kernel",
                "module2 /boot/vm2.elf vm2.kernel",
                "module2 /boot/vm2.disk vm2.disk",
            ]
        );
        assert!(cfg.starts_with("set timeout=0\n"));
    }

    #[test]
    fn staging_copies_everything() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k");
        let guest = dir.path().join("g");
        let disk = dir.path().join("d");
        fs::write(&kernel, b"kernel").unwrap();
        fs::write(&guest, b"guest").unwrap();
        fs::write(&disk, b"disk").unwrap();
        let staging = dir.path().join("staging");
        let vms = [
            VmFiles {
                kernel: guest.clone(),
                disk: Some(disk.clone()),
            },
            VmFiles {
                kernel: guest,
                disk: None,
            },
        ];
        stage(&staging, &kernel, b"cfg", &vms).unwrap();
        let boot = staging.join("boot");
        assert_eq!(fs::read(boot.join("carousel.elf")).unwrap(), b"kernel");
        assert_eq!(fs::read(boot.join("run.cfg")).unwrap(), b"cfg");
        assert_eq!(fs::read(boot.join("vm0.elf")).unwrap(), b"guest");
        assert_eq!(fs::read(boot.join("vm0.disk")).unwrap(), b"disk");
        assert_eq!(fs::read(boot.join("vm1.elf")).unwrap(), b"guest");
        assert!(!boot.join("vm1.disk").exists());
        assert_eq!(
            fs::read_to_string(boot.join("grub/grub.cfg")).unwrap(),
            grub_cfg(&[true, false])
        );
        // The copy is a copy: writing it leaves the user's image alone.
        fs::write(boot.join("vm0.disk"), b"scribbled").unwrap();
        assert_eq!(fs::read(&disk).unwrap(), b"disk");
    }
}
