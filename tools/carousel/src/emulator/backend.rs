//! Emulator backends: which one to use, and its configuration (bochsrc, QEMU arguments, what to
//! start); the process itself is [`super::process::Emulator`].
//!
//! Bochs (VMX) is the reference backend for repeatable figures (BOCHS.md). QEMU runs with KVM
//! where the host has nested virtualization (`qemu-kvm`), or in software (TCG), where it
//! emulates AMD SVM with nested paging (`qemu`, QEMU-SVM.md). TCG with neither VMX nor SVM,
//! `qemu-tcg`, only ever shows the hypervisor's clear message (the scenario tests use it for
//! exactly that).

use std::fmt;
use std::path::Path;

/// Bochs' system BIOS, from Debian's `bochsbios`.
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// Bochs' VGA BIOS, from Debian's `vgabios`.
pub const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";
/// The device through which QEMU reaches KVM.
pub const DEV_KVM: &str = "/dev/kvm";
/// `Y` or `1` when KVM lets guests use VMX themselves.
pub const KVM_INTEL_NESTED: &str = "/sys/module/kvm_intel/parameters/nested";
/// The Bochs executable.
pub const BOCHS: &str = "bochs";
/// The QEMU executable.
pub const QEMU: &str = "qemu-system-x86_64";

/// Largest `megs:` Bochs accepts (BOCHS.md).
pub const BOCHS_MEGS_MAX: u64 = 2048;
/// Smallest emulated RAM Carousel gives the emulator, MiB.
pub const MEGS_MIN: u64 = 256;
/// Emulated RAM is rounded up to a multiple of this, MiB.
pub const MEGS_GRANULE: u64 = 32;

/// The `--backend` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// QEMU with KVM when the host has nested VMX, else QEMU's software emulation (SVM) when
    /// QEMU is installed, else Bochs.
    Auto,
    /// Bochs (VMX): slower, instruction-counted and repeatable.
    Bochs,
    /// QEMU's software emulation (TCG) with AMD SVM and nested paging; no KVM needed.
    Qemu,
    /// QEMU with KVM; needs /dev/kvm and nested VMX.
    QemuKvm,
    /// QEMU software emulation with neither VMX nor SVM; only shows the hypervisor's
    /// no-virtualization message; used by tests.
    QemuTcg,
}

/// A backend that will actually run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Bochs,
    QemuKvm,
    /// TCG with SVM.
    QemuSvm,
    /// TCG with neither VMX nor SVM.
    QemuTcg,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Bochs => "bochs",
            Backend::QemuKvm => "qemu (KVM)",
            Backend::QemuSvm => "qemu (TCG, SVM)",
            Backend::QemuTcg => "qemu-tcg (no VMX, no SVM)",
        })
    }
}

impl Backend {
    /// The `--backend` choice that runs this backend.
    pub fn choice(self) -> BackendChoice {
        match self {
            Backend::Bochs => BackendChoice::Bochs,
            Backend::QemuKvm => BackendChoice::QemuKvm,
            Backend::QemuSvm => BackendChoice::Qemu,
            Backend::QemuTcg => BackendChoice::QemuTcg,
        }
    }

    /// The TSC frequency the run configuration announces. Bochs' TSC counts instructions, so
    /// its frequency is a choice: the lab's `tsc_hz`, else its `ips` (TSC time = emulated wall
    /// time). Elsewhere the TSC is real and the hypervisor calibrates it (0).
    pub fn tsc_hz(self, lab: &crate::lab::Lab) -> u64 {
        match self {
            Backend::Bochs => lab.tsc_hz.unwrap_or(lab.ips),
            Backend::QemuKvm | Backend::QemuSvm | Backend::QemuTcg => 0,
        }
    }

    /// Idle detection's threshold for `lab` on this backend: the lab's own when it names one,
    /// else this backend's default (longer under TCG, whose emulated world switch counts as
    /// guest time: [`crate::lab::limits::TCG_IDLE_THRESHOLD_US`]). None: idle detection off.
    pub fn idle_threshold_us(self, lab: &crate::lab::Lab) -> Option<u32> {
        let threshold = lab.idle_threshold_us?;
        Some(match self {
            _ if lab.idle_threshold_given => threshold,
            Backend::QemuSvm | Backend::QemuTcg => crate::lab::limits::TCG_IDLE_THRESHOLD_US,
            Backend::Bochs | Backend::QemuKvm => threshold,
        })
    }

    /// The file that receives what the hypervisor writes to port 0xE9.
    pub fn e9_file(self) -> &'static str {
        match self {
            Backend::Bochs => "bochs.out",
            Backend::QemuKvm | Backend::QemuSvm | Backend::QemuTcg => "e9.txt",
        }
    }

    /// The emulator's own log, for failure hints.
    pub fn log_file(self) -> &'static str {
        match self {
            Backend::Bochs => "bochs.log",
            Backend::QemuKvm | Backend::QemuSvm | Backend::QemuTcg => "qemu.out",
        }
    }
}

/// Why QEMU with KVM cannot run Carousel here, if it cannot.
pub fn kvm_problem() -> Option<String> {
    if !Path::new(DEV_KVM).exists() {
        return Some(format!("{DEV_KVM} is missing (no KVM on this host)"));
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV_KVM)
        .is_err()
    {
        return Some(format!(
            "{DEV_KVM} exists but this user cannot open it (group kvm?)"
        ));
    }
    match std::fs::read_to_string(KVM_INTEL_NESTED) {
        Err(_) => Some(format!(
            "nested VMX is unavailable: {KVM_INTEL_NESTED} is missing (kvm_intel not loaded; \
             not an Intel host?)"
        )),
        Ok(value) if matches!(value.trim(), "Y" | "y" | "1") => None,
        Ok(value) => Some(format!(
            "nested VMX is off: {KVM_INTEL_NESTED} is {:?} (load kvm_intel with nested=1)",
            value.trim()
        )),
    }
}

/// Why `backend` cannot start here, if it cannot: missing emulator, BIOS files or KVM.
pub fn unavailable(backend: Backend) -> Option<String> {
    match backend {
        Backend::Bochs => {
            if crate::host::find_program(BOCHS).is_none() {
                return Some(format!(
                    "`{BOCHS}` is not installed: {}",
                    crate::host::APT_BOCHS
                ));
            }
            for file in [BOCHS_BIOS, VGA_BIOS] {
                if !Path::new(file).is_file() {
                    return Some(format!("{file} is missing: {}", crate::host::APT_BOCHS));
                }
            }
            None
        }
        Backend::QemuKvm | Backend::QemuSvm | Backend::QemuTcg => {
            if crate::host::find_program(QEMU).is_none() {
                return Some(format!(
                    "`{QEMU}` is not installed: {}",
                    crate::host::APT_QEMU
                ));
            }
            if backend == Backend::QemuKvm {
                return kvm_problem()
                    .map(|problem| format!("the qemu backend needs KVM: {problem}"));
            }
            None
        }
    }
}

/// The backend `choice` means on this host, given whether KVM with nested VMX works and
/// whether QEMU is installed.
pub fn resolve(choice: BackendChoice, kvm_nested_ok: bool, qemu_installed: bool) -> Backend {
    match choice {
        BackendChoice::Auto if kvm_nested_ok && qemu_installed => Backend::QemuKvm,
        BackendChoice::Auto if qemu_installed => Backend::QemuSvm,
        BackendChoice::Auto | BackendChoice::Bochs => Backend::Bochs,
        BackendChoice::Qemu => Backend::QemuSvm,
        BackendChoice::QemuKvm => Backend::QemuKvm,
        BackendChoice::QemuTcg => Backend::QemuTcg,
    }
}

/// [`resolve`] on this host.
pub fn resolve_here(choice: BackendChoice) -> Backend {
    resolve(
        choice,
        kvm_problem().is_none(),
        crate::host::find_program(QEMU).is_some(),
    )
}

/// Why `--backend auto` picks what it picks on this host, in a sentence.
pub fn auto_reason() -> String {
    let qemu = crate::host::find_program(QEMU).is_some();
    match (kvm_problem(), qemu) {
        (None, true) => "KVM with nested VMX is available".to_string(),
        (Some(problem), true) => format!(
            "no KVM ({problem}); QEMU's software emulation runs Carousel on AMD SVM (--backend bochs for repeatable, instruction-counted figures)"
        ),
        (_, false) => format!("`{QEMU}` is not installed"),
    }
}

/// How much RAM the emulator gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmulatorMemory {
    /// `megs: N` (Bochs) / `-m N` (QEMU).
    Megs(u64),
    /// More than Bochs' `megs:` takes: `memory: guest=4096, host=256`; QEMU gets `total` MiB.
    Large { total: u64 },
}

impl EmulatorMemory {
    /// RAM for `guest_mib` MiB of guests plus the hypervisor: rounded up to
    /// [`MEGS_GRANULE`], at least [`MEGS_MIN`]; `None` above [`crate::lab::MAX_TOTAL_MIB`].
    pub fn for_guests(guest_mib: u64) -> Option<Self> {
        let total = guest_mib + crate::lab::HYPERVISOR_MIB;
        if total > crate::lab::MAX_TOTAL_MIB {
            return None;
        }
        let rounded = total.div_ceil(MEGS_GRANULE) * MEGS_GRANULE;
        let megs = rounded.max(MEGS_MIN);
        Some(if megs > BOCHS_MEGS_MAX {
            EmulatorMemory::Large { total: megs }
        } else {
            EmulatorMemory::Megs(megs)
        })
    }

    /// MiB for QEMU's `-m`.
    pub fn mib(self) -> u64 {
        match self {
            EmulatorMemory::Megs(megs) => megs,
            EmulatorMemory::Large { total } => total,
        }
    }
}

/// Everything a bochsrc needs.
#[derive(Debug, Clone)]
pub struct BochsConfig<'a> {
    pub memory: EmulatorMemory,
    pub cpu_model: &'a str,
    pub ips: u64,
    /// The run directory (absolute): COM2, the log and port 0xE9 output go there.
    pub out: &'a Path,
    pub iso: &'a Path,
    /// The run's shared drive (raw image), as the primary slave.
    pub drive: Option<&'a Path>,
    /// The TCP port on localhost where Bochs serves COM1 (`super::com1`).
    pub com1_port: u16,
}

/// Why a path cannot appear in a bochsrc, if it cannot: Bochs splits option values at commas
/// and blanks and expands `$NAME`.
pub fn bochsrc_path_problem(path: &Path) -> Option<String> {
    let text = path.to_str()?;
    text.chars()
        .find(|c| c.is_whitespace() || matches!(c, ',' | '$' | '"' | '#' | '\''))
        .map(|c| {
            format!(
                "{} contains {c:?}, which a bochsrc cannot carry; pass --out with a plainer path",
                path.display()
            )
        })
}

/// The bochsrc of a run (BOCHS.md's starting config, with the lab's CPU and memory). COM1 is a
/// socket server (two-way: the consoles out, console input in); Bochs waits for the tool to
/// connect before it runs.
pub fn bochsrc(config: &BochsConfig<'_>) -> String {
    let out = config.out.display();
    bochsrc_around(
        "carousel run",
        config.memory,
        config.cpu_model,
        config.ips,
        config.out,
        &format!(
            "ata0-master: type=cdrom, path={iso}, status=inserted\n\
             {drive}\
             boot: cdrom\n\
             com1: enabled=1, mode=socket-server, dev=localhost:{com1_port}\n\
             com2: enabled=1, mode=file, dev={out}/com2.bin\n",
            iso = config.iso.display(),
            drive = config.drive.map_or(String::new(), |drive| format!(
                "ata0-slave: type=disk, mode=flat, path={}\n",
                drive.display()
            )),
            com1_port = config.com1_port,
        ),
    )
}

/// Bytes in one cylinder of the flat disk images a native boot uses (16 heads × 63 sectors).
pub const CYLINDER_BYTES: u64 = 16 * 63 * 512;

/// A flat disk image for Bochs, whole cylinders long (Bochs takes the geometry from the size).
#[derive(Debug, Clone, Copy)]
pub struct FlatDisk<'a> {
    pub path: &'a Path,
    pub cylinders: u64,
}

/// The bochsrc of a native boot, no hypervisor: `boot` on the primary master, `second` (the
/// file system) on the primary slave, COM1 into `out/com1.txt`; the same BIOS, CPU and clock
/// as a run. `carousel bench xv6` boots xv6 this way for its baseline.
pub fn native_bochsrc(
    megs: u64,
    cpu_model: &str,
    ips: u64,
    out: &Path,
    boot: FlatDisk<'_>,
    second: FlatDisk<'_>,
) -> String {
    let disk = |slot: &str, disk: FlatDisk<'_>| {
        format!(
            "ata0-{slot}: type=disk, mode=flat, path={}, cylinders={}, heads=16, spt=63\n",
            disk.path.display(),
            disk.cylinders
        )
    };
    bochsrc_around(
        "carousel bench xv6",
        EmulatorMemory::Megs(megs),
        cpu_model,
        ips,
        out,
        &format!(
            "{}{}boot: disk\ncom1: enabled=1, mode=file, dev={}/com1.txt\n",
            disk("master", boot),
            disk("slave", second),
            out.display()
        ),
    )
}

/// A bochsrc (BOCHS.md's starting config) written by `writer`, with the primary IDE channel
/// on and `devices` (its drives, the boot device and the serial ports) in the middle.
fn bochsrc_around(
    writer: &str,
    memory: EmulatorMemory,
    cpu_model: &str,
    ips: u64,
    out: &Path,
    devices: &str,
) -> String {
    let memory = match memory {
        EmulatorMemory::Megs(megs) => format!("megs: {megs}"),
        EmulatorMemory::Large { .. } => "memory: guest=4096, host=256".to_string(),
    };
    let out = out.display();
    format!(
        "# Written by `{writer}`; see BOCHS.md.\n\
         {memory}\n\
         romimage: file={BOCHS_BIOS}\n\
         vgaromimage: file={VGA_BIOS}\n\
         display_library: term\n\
         cpu: model={cpu_model}, count=1, ips={ips}, reset_on_triple_fault=0, ignore_bad_msrs=0\n\
         ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14\n\
         {devices}\
         port_e9_hack: enabled=1\n\
         log: {out}/bochs.log\n\
         panic: action=fatal\n\
         error: action=report\n\
         clock: sync=none, time0=local\n"
    )
}

/// The `-cpu` of TCG with SVM: the plain qemu64 model with SVM and nested paging (QEMU-SVM.md:
/// `max`, `EPYC` and this all pass the probe; this one adds the least).
pub const QEMU_SVM_CPU: &str = "qemu64,+svm,+npt";

/// QEMU's accelerator and CPU for `backend` (a QEMU one).
fn accelerator_args(backend: Backend) -> Vec<String> {
    let tcg = |cpu: &str| -> Vec<String> {
        vec!["-accel".into(), "tcg".into(), "-cpu".into(), cpu.into()]
    };
    match backend {
        Backend::QemuKvm => vec!["-enable-kvm".into(), "-cpu".into(), "host".into()],
        Backend::QemuSvm => tcg(QEMU_SVM_CPU),
        // TCG offers no VMX on any model, and SVM only when asked for: qemu64 without it.
        _ => tcg("qemu64,-svm"),
    }
}

/// QEMU's arguments for a run of `backend` (a QEMU one). COM1 is a TCP server on `com1_port`
/// that waits for the tool's connection before the guest starts (`wait=on`); COM2 stays a file.
pub fn qemu_args(
    backend: Backend,
    memory: EmulatorMemory,
    iso: &Path,
    drive: Option<&Path>,
    out: &Path,
    com1_port: u16,
) -> Vec<String> {
    let mut args = accelerator_args(backend);
    let file = |name: &str| format!("file:{}", out.join(name).display());
    args.extend([
        "-m".to_string(),
        memory.mib().to_string(),
        "-cdrom".to_string(),
        iso.display().to_string(),
        "-display".to_string(),
        "none".to_string(),
        "-no-reboot".to_string(),
        "-chardev".to_string(),
        format!("socket,id=com1,host=127.0.0.1,port={com1_port},server=on,wait=on"),
        "-serial".to_string(),
        "chardev:com1".to_string(),
        "-serial".to_string(),
        file("com2.bin"),
        "-device".to_string(),
        "isa-debug-exit,iobase=0xf4,iosize=0x04".to_string(),
        "-debugcon".to_string(),
        file("e9.txt"),
    ]);
    if let Some(drive) = drive {
        // The primary slave, as in Bochs (-cdrom is the secondary master). A comma in the path
        // is doubled, as QEMU's option syntax wants.
        args.extend([
            "-drive".to_string(),
            format!(
                "file={},if=ide,index=1,media=disk,format=raw",
                drive.display().to_string().replace(',', ",,")
            ),
        ]);
    }
    args
}

/// QEMU's arguments for a native boot under `backend` (a QEMU one), no hypervisor: `boot` on
/// the primary master, `second` (the file system) on the primary slave, as xv6's own Makefile
/// runs it; COM1 into `out/com1.txt`; the same CPU, accelerator and memory as a run gives its
/// VMs, and one CPU, as Carousel has. `carousel bench xv6 --backend qemu` boots xv6 this way for
/// its baseline.
pub fn native_qemu_args(
    backend: Backend,
    megs: u64,
    out: &Path,
    boot: &Path,
    second: &Path,
) -> Vec<String> {
    let mut args = accelerator_args(backend);
    let drive = |path: &Path, index: u8| {
        format!(
            "file={},if=ide,index={index},media=disk,format=raw",
            path.display().to_string().replace(',', ",,")
        )
    };
    args.extend([
        "-m".to_string(),
        megs.to_string(),
        "-smp".to_string(),
        "1".to_string(),
        "-display".to_string(),
        "none".to_string(),
        "-monitor".to_string(),
        "none".to_string(),
        "-no-reboot".to_string(),
        "-serial".to_string(),
        format!("file:{}", out.join("com1.txt").display()),
        "-drive".to_string(),
        drive(boot, 0),
        "-drive".to_string(),
        drive(second, 1),
    ]);
    args
}

/// What to start for a run: program, arguments and extra environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, &'static str)>,
    /// Where the emulator's stdout and stderr go (file name in the run directory).
    pub output: &'static str,
}

/// What the emulator boots from (the ISO), the run's shared drive if any, and how its clock
/// runs.
#[derive(Debug, Clone, Copy)]
pub struct Media<'a> {
    pub iso: &'a Path,
    pub drive: Option<&'a Path>,
    /// `run.deterministic`: the clock counts instructions (QEMU's software emulation gets
    /// [`INSTRUCTION_COUNTING`]; Bochs always counts them).
    pub deterministic: bool,
}

/// QEMU's instruction counting for `run.deterministic`: each instruction is 2^3 = 8 ns of
/// virtual time (125 M a second, as fast as TCG runs guest code here), the virtual clock never
/// waits for the host's (`align=off`), and an idle CPU jumps to its next timer at once
/// (`sleep=off`). Time then follows the instruction stream, not the host's load.
pub const INSTRUCTION_COUNTING: [&str; 2] = ["-icount", "shift=3,align=off,sleep=off"];

/// Why `backend` cannot count instructions for `run.deterministic`, if it cannot.
pub fn deterministic_problem(backend: Backend) -> Option<String> {
    (backend == Backend::QemuKvm).then(|| {
        "run.deterministic needs instruction counting, which KVM (the host's own CPU) does not \
         do: use --backend qemu (QEMU's software emulation, -icount) or --backend bochs"
            .to_string()
    })
}

/// The launch of `backend` with `media`; for Bochs, `bochsrc` (which names the COM1 port and the drive) and
/// `cont_rc` are the files written next to it; QEMU gets `com1_port` and `drive` on its
/// command line.
pub fn launch(
    backend: Backend,
    memory: EmulatorMemory,
    media: Media<'_>,
    out: &Path,
    bochsrc: &Path,
    cont_rc: &Path,
    com1_port: u16,
) -> Launch {
    match backend {
        Backend::Bochs => Launch {
            program: BOCHS,
            args: vec![
                "-q".into(),
                "-f".into(),
                bochsrc.display().to_string(),
                "-rc".into(),
                cont_rc.display().to_string(),
            ],
            // Bochs' term display exits at once without TERM (BOCHS.md).
            env: vec![("TERM", "dumb")],
            output: "bochs.out",
        },
        Backend::QemuKvm | Backend::QemuSvm | Backend::QemuTcg => {
            let mut args = qemu_args(backend, memory, media.iso, media.drive, out, com1_port);
            if media.deterministic && backend != Backend::QemuKvm {
                args.extend(INSTRUCTION_COUNTING.map(String::from));
            }
            Launch {
                program: QEMU,
                args,
                env: Vec::new(),
                output: "qemu.out",
            }
        }
    }
}

/// The debugger script that makes Bochs run instead of stopping at its prompt.
pub const CONT_RC: &str = "c\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_rounds_up_with_a_floor() {
        assert_eq!(
            EmulatorMemory::for_guests(8),
            Some(EmulatorMemory::Megs(256))
        );
        assert_eq!(
            EmulatorMemory::for_guests(192),
            Some(EmulatorMemory::Megs(256))
        );
        assert_eq!(
            EmulatorMemory::for_guests(193),
            Some(EmulatorMemory::Megs(288))
        );
        assert_eq!(
            EmulatorMemory::for_guests(1000),
            Some(EmulatorMemory::Megs(1088))
        );
        assert_eq!(
            EmulatorMemory::for_guests(1984),
            Some(EmulatorMemory::Megs(2048))
        );
        assert_eq!(
            EmulatorMemory::for_guests(1985),
            Some(EmulatorMemory::Large { total: 2080 })
        );
        assert_eq!(
            EmulatorMemory::for_guests(2836),
            Some(EmulatorMemory::Large { total: 2912 })
        );
        assert_eq!(EmulatorMemory::for_guests(2837), None);
        assert_eq!(EmulatorMemory::Megs(256).mib(), 256);
    }

    fn config<'a>(memory: EmulatorMemory) -> BochsConfig<'a> {
        BochsConfig {
            memory,
            cpu_model: "corei7_skylake_x",
            ips: 1_000_000,
            out: Path::new("/tmp/run"),
            iso: Path::new("/tmp/run/carousel.iso"),
            drive: None,
            com1_port: 40123,
        }
    }

    #[test]
    fn the_shared_drive_is_the_primary_slave() {
        let mut with_drive = config(EmulatorMemory::Megs(256));
        with_drive.drive = Some(Path::new("/tmp/run/drive.img"));
        let text = bochsrc(&with_drive);
        assert!(
            text.lines()
                .any(|line| line == "ata0-slave: type=disk, mode=flat, path=/tmp/run/drive.img"),
            "{text}"
        );
        assert!(!bochsrc(&config(EmulatorMemory::Megs(256))).contains("ata0-slave"));
        let args = qemu_args(
            Backend::QemuKvm,
            EmulatorMemory::Megs(256),
            Path::new("/r/carousel.iso"),
            Some(Path::new("/r,s/drive.img")),
            Path::new("/r"),
            1,
        )
        .join(" ");
        assert!(
            args.ends_with("-drive file=/r,,s/drive.img,if=ide,index=1,media=disk,format=raw"),
            "{args}"
        );
    }

    #[test]
    fn bochsrc_key_lines() {
        let text = bochsrc(&config(EmulatorMemory::Megs(256)));
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "megs: 256",
            "romimage: file=/usr/share/bochs/BIOS-bochs-latest",
            "vgaromimage: file=/usr/share/vgabios/vgabios.bin",
            "display_library: term",
            "cpu: model=corei7_skylake_x, count=1, ips=1000000, reset_on_triple_fault=0, ignore_bad_msrs=0",
            "ata0-master: type=cdrom, path=/tmp/run/carousel.iso, status=inserted",
            "boot: cdrom",
            "com1: enabled=1, mode=socket-server, dev=localhost:40123",
            "com2: enabled=1, mode=file, dev=/tmp/run/com2.bin",
            "port_e9_hack: enabled=1",
            "log: /tmp/run/bochs.log",
            "panic: action=fatal",
            "error: action=report",
            "clock: sync=none, time0=local",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("memory:"));
        assert!(!text.contains("nogui"));
    }

    #[test]
    fn bochsrc_large_memory() {
        let text = bochsrc(&config(EmulatorMemory::Large { total: 2080 }));
        assert!(text
            .lines()
            .any(|line| line == "memory: guest=4096, host=256"));
        assert!(!text.contains("megs:"));
    }

    #[test]
    fn bochsrc_paths() {
        assert_eq!(
            bochsrc_path_problem(Path::new("/work/main/target/run")),
            None
        );
        for bad in ["/a b", "/a,b", "/a$B", "/a\"b"] {
            assert!(bochsrc_path_problem(Path::new(bad)).is_some(), "{bad}");
        }
    }

    #[test]
    fn qemu_arguments() {
        let iso = Path::new("/r/carousel.iso");
        let out = Path::new("/r");
        let kvm = qemu_args(
            Backend::QemuKvm,
            EmulatorMemory::Megs(256),
            iso,
            None,
            out,
            40123,
        )
        .join(" ");
        assert_eq!(
            kvm,
            "-enable-kvm -cpu host -m 256 -cdrom /r/carousel.iso -display none -no-reboot \
             -chardev socket,id=com1,host=127.0.0.1,port=40123,server=on,wait=on \
             -serial chardev:com1 -serial file:/r/com2.bin \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -debugcon file:/r/e9.txt"
        );
        let tcg = qemu_args(
            Backend::QemuTcg,
            EmulatorMemory::Large { total: 2080 },
            iso,
            None,
            out,
            1,
        )
        .join(" ");
        assert!(
            tcg.starts_with("-accel tcg -cpu qemu64,-svm -m 2080 "),
            "{tcg}"
        );
        assert!(!tcg.contains("kvm"));
        let svm = qemu_args(
            Backend::QemuSvm,
            EmulatorMemory::Megs(256),
            iso,
            None,
            out,
            1,
        )
        .join(" ");
        assert!(
            svm.starts_with("-accel tcg -cpu qemu64,+svm,+npt -m 256 "),
            "{svm}"
        );
    }

    #[test]
    fn a_native_boot_under_qemu_has_xv6s_two_disks_one_cpu_and_the_runs_accelerator() {
        let args = native_qemu_args(
            Backend::QemuSvm,
            256,
            Path::new("/r"),
            Path::new("/r/xv6.img"),
            Path::new("/r/a,b/fs.img"),
        )
        .join(" ");
        assert_eq!(
            args,
            "-accel tcg -cpu qemu64,+svm,+npt -m 256 -smp 1 -display none -monitor none \
             -no-reboot -serial file:/r/com1.txt \
             -drive file=/r/xv6.img,if=ide,index=0,media=disk,format=raw \
             -drive file=/r/a,,b/fs.img,if=ide,index=1,media=disk,format=raw"
        );
        let kvm = native_qemu_args(
            Backend::QemuKvm,
            256,
            Path::new("/r"),
            Path::new("/b"),
            Path::new("/f"),
        );
        assert_eq!(kvm[..3], ["-enable-kvm", "-cpu", "host"]);
    }

    #[test]
    fn bochs_launch_follows_bochs_md() {
        let launch = launch(
            Backend::Bochs,
            EmulatorMemory::Megs(256),
            Media {
                iso: Path::new("/r/carousel.iso"),
                drive: None,
                deterministic: true,
            },
            Path::new("/r"),
            Path::new("/r/bochsrc"),
            Path::new("/r/cont.rc"),
            40123,
        );
        assert_eq!(launch.program, "bochs");
        assert_eq!(launch.args, ["-q", "-f", "/r/bochsrc", "-rc", "/r/cont.rc"]);
        assert_eq!(launch.env, [("TERM", "dumb")]);
        assert_eq!(CONT_RC, "c\n");
    }

    #[test]
    fn a_deterministic_run_counts_instructions_wherever_it_can() {
        let media = |deterministic| Media {
            iso: Path::new("/r/carousel.iso"),
            drive: None,
            deterministic,
        };
        let args = |backend, deterministic| {
            let out = Path::new("/r");
            launch(
                backend,
                EmulatorMemory::Megs(256),
                media(deterministic),
                out,
                out,
                out,
                1,
            )
            .args
            .join(" ")
        };
        assert!(args(Backend::QemuSvm, true).ends_with(" -icount shift=3,align=off,sleep=off"));
        assert!(!args(Backend::QemuSvm, false).contains("icount"));
        assert!(args(Backend::QemuTcg, true).contains("-icount"));
        // Bochs counts instructions anyway; KVM cannot, and says so before anything starts.
        assert!(!args(Backend::Bochs, true).contains("icount"));
        assert!(!args(Backend::QemuKvm, true).contains("icount"));
        assert!(deterministic_problem(Backend::QemuKvm)
            .is_some_and(|problem| problem.contains("--backend qemu")));
        for backend in [Backend::Bochs, Backend::QemuSvm, Backend::QemuTcg] {
            assert_eq!(deterministic_problem(backend), None);
        }
    }

    #[test]
    fn native_bochsrc_boots_the_first_disk_with_the_second_beside_it() {
        let text = native_bochsrc(
            256,
            "corei7_skylake_x",
            1_000_000,
            Path::new("/r"),
            FlatDisk {
                path: Path::new("/r/xv6.img"),
                cylinders: 10,
            },
            FlatDisk {
                path: Path::new("/r/fs.img"),
                cylinders: 1,
            },
        );
        for line in [
            "megs: 256",
            "cpu: model=corei7_skylake_x, count=1, ips=1000000, reset_on_triple_fault=0, ignore_bad_msrs=0",
            "ata0-master: type=disk, mode=flat, path=/r/xv6.img, cylinders=10, heads=16, spt=63",
            "ata0-slave: type=disk, mode=flat, path=/r/fs.img, cylinders=1, heads=16, spt=63",
            "boot: disk",
            "com1: enabled=1, mode=file, dev=/r/com1.txt",
            "log: /r/bochs.log",
            "clock: sync=none, time0=local",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(!text.contains("cdrom") && !text.contains("com2"), "{text}");
    }

    #[test]
    fn auto_prefers_kvm() {
        assert_eq!(resolve(BackendChoice::Auto, true, true), Backend::QemuKvm);
        assert_eq!(resolve(BackendChoice::Auto, false, true), Backend::QemuSvm);
        assert_eq!(resolve(BackendChoice::Auto, false, false), Backend::Bochs);
        assert_eq!(resolve(BackendChoice::Auto, true, false), Backend::Bochs);
        assert_eq!(resolve(BackendChoice::Bochs, true, true), Backend::Bochs);
        assert_eq!(resolve(BackendChoice::Qemu, true, true), Backend::QemuSvm);
        assert_eq!(
            resolve(BackendChoice::QemuKvm, false, true),
            Backend::QemuKvm
        );
        assert_eq!(
            resolve(BackendChoice::QemuTcg, true, true),
            Backend::QemuTcg
        );
        let text = "[run]\nips = 5_000\n[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n";
        let mut lab = crate::lab::Lab::parse(std::path::Path::new("lab.toml"), text).unwrap();
        assert_eq!(Backend::Bochs.tsc_hz(&lab), 5_000);
        assert_eq!(Backend::QemuKvm.tsc_hz(&lab), 0);
        lab.tsc_hz = Some(1_000_000_000);
        assert_eq!(Backend::Bochs.tsc_hz(&lab), 1_000_000_000);
    }
}
