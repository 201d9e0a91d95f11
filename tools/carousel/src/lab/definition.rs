//! A validated lab: the run's settings and its VMs, as [`Lab::parse`](super::Lab::parse) leaves
//! them (every value checked, every path resolved, every default filled in).

use std::path::{Path, PathBuf};

use carousel_protocol::config::{
    CreditConfig, DiskModelConfig, QuantumClock, SchedulerPolicy, DEFAULT_INTERVAL_US,
    DEFAULT_MEMORY_SAMPLE_US,
};
use carousel_protocol::record::TraceLevel;

use super::limits::{
    DEFAULT_CPU_MODEL, DEFAULT_IPS, DEFAULT_QUANTUM_US, DEFAULT_TIMEOUT_S, DEFAULT_WEIGHT,
    HYPERVISOR_MIB, MAX_TOTAL_MIB,
};
use super::script::Step;
use super::sweep::SweepTable;

/// A validated lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    /// The lab file.
    pub path: PathBuf,
    /// FNV-1a 64 of the lab file's text, carried into the run configuration and every trace.
    pub hash: u64,
    /// Scheduler quantum, microseconds.
    pub quantum_us: u32,
    /// Bochs instructions per emulated second.
    pub ips: u64,
    /// What Carousel counts as one second of TSC in Bochs (quanta, timers, reports). Bochs'
    /// TSC counts instructions: the default, `ips`, makes TSC time equal emulated wall time; a
    /// CPU's nominal clock (say 1_000_000_000) gives realistic instructions per quantum.
    pub tsc_hz: Option<u64>,
    /// Bochs CPU model, one of [`CPU_MODELS`](super::limits::CPU_MODELS).
    pub cpu_model: String,
    /// Whole-run limit, seconds.
    pub timeout_s: u64,
    /// `run.idle_detection`: a guest idle in its idle address space for this many
    /// microseconds counts as blocked (None: off).
    pub idle_threshold_us: Option<u32>,
    /// The lab file names `run.idle_threshold_us` (otherwise the backend's default applies:
    /// [`crate::emulator::backend::Backend::idle_threshold_us`]).
    pub idle_threshold_given: bool,
    /// `run.interval_us`: length of a metrics interval, microseconds of TSC time.
    pub interval_us: u32,
    /// `run.trace`: what the record stream carries beyond the aggregates. `full` (every exit
    /// an event) also sends the stream through the emulator's 0xE9 debug port.
    pub trace: TraceLevel,
    /// `run.policy`: the scheduling policy.
    pub policy: SchedulerPolicy,
    /// `[run.credit]`: the credit policy's rate limit and accounting period.
    pub credit: CreditConfig,
    /// `[run.disk]`: the shared disk's service time and queue policy.
    pub disk_model: DiskModelConfig,
    /// `run.quantum_clock`: `"wall"` (the default: a slice is TSC time, root work on the VM's
    /// exits included) or `"guest"` (guest-mode time only).
    pub quantum_clock: QuantumClock,
    /// `run.deterministic`: the guests' time counts instructions, so that a run repeats. Bochs
    /// always counts them; under QEMU's software emulation it adds `-icount` (slower); with
    /// KVM it is refused.
    pub deterministic: bool,
    /// `run.memory_sample_ms`: working-set sampling period, milliseconds of TSC time (0: off).
    pub memory_sample_ms: u32,
    /// `run.guest_memory_budget_mib`: most guest RAM backed at once over all VMs; balloon
    /// deflates beyond it wait until another VM gives pages back (None: no budget).
    pub guest_memory_budget_mib: Option<u32>,
    /// `run.merge_scan_pages`: same-page merging scans this many pages per metrics interval
    /// (0: off).
    pub merge_scan_pages: u32,
    /// `run.compress_after_samples`, `run.compress_scan_pages` and `run.compress_pool_mib`:
    /// compress the pages no working-set sample saw touched for that many samples (0: off),
    /// looking at that many pages of each VM per sample, with at most that many MiB of LZ4
    /// blobs.
    pub compression: Compression,
    /// `run.balloon_when_free_below_pct` and `run.balloon_step_mib`: the balloon rule (see
    /// `RunConfig`); None without the first.
    pub balloon_rule: Option<(u32, u32)>,
    /// `run.lazy_memory`: pages still all zeros at the start get a frame at their first touch.
    pub lazy_memory: bool,
    /// `run.boot_stagger_ms`: VM `i` starts `i ×` this many ms of TSC time into the run.
    pub boot_stagger_ms: u32,
    /// `run.disk_backend`: where the VMs' disks live.
    pub disk_backend: DiskBackend,
    /// The VMs, in file order (a VM's id is its index).
    pub vms: Vec<Vm>,
    /// `[sweep]`: what `carousel sweep` varies when its command line does not say (`carousel
    /// run` only checks it).
    pub sweep: SweepTable,
    /// `[[run.change]]`: settings the hypervisor changes at set times, in time order.
    pub changes: Vec<Change>,
}

/// One `[[run.change]]`: `setting` from `at_ms` milliseconds of TSC time into the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub at_ms: u32,
    pub setting: carousel_protocol::config::Setting,
}

/// One validated VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub name: String,
    pub kernel: Kernel,
    pub memory_mib: u32,
    pub disk: Option<Disk>,
    pub weight: u32,
    /// `cap_pct`: under the credit policy, at most this percentage of the CPU over each
    /// accounting period (0: uncapped).
    pub cap_pct: u32,
    /// `disk_weight`: the VM's share of the shared disk when it is contended (WFQ).
    pub disk_weight: u32,
    /// `disk_mib_per_s`: at most this rate through the shared disk, MiB/s (0: no cap).
    pub disk_mib_per_s: u32,
    pub args: String,
    /// `persist = true`: the VM's disk is copied back into its image when the run ends.
    pub persist: bool,
    /// `balloon_mib`: RAM ballooned from the start (the top, unbacked), MiB.
    pub balloon_mib: u32,
    /// `balloon_target_mib`: the balloon size the host asks for, MiB.
    pub balloon_target_mib: u32,
    /// `[[vm.script]]`: console input steps, in order (empty: none).
    pub script: Vec<Step>,
}

impl Vm {
    /// VM `name` running `kernel` in `memory_mib` MiB, with every other setting as a `[[vm]]`
    /// table that leaves it out has it.
    pub fn new(name: &str, kernel: Kernel, memory_mib: u32) -> Self {
        Vm {
            name: name.to_string(),
            kernel,
            memory_mib,
            disk: None,
            weight: DEFAULT_WEIGHT,
            cap_pct: 0,
            disk_weight: DEFAULT_WEIGHT,
            disk_mib_per_s: 0,
            args: String::new(),
            persist: false,
            balloon_mib: 0,
            balloon_target_mib: 0,
            script: Vec::new(),
        }
    }
}

/// Where the VMs' disks live during a run (`run.disk_backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiskBackend {
    /// `"drive"`: every VM's disk is an extent of one extra ATA drive the emulator gets; the
    /// hypervisor drives it (PIO) and the VMs' writes reach its image as they complete.
    #[default]
    Drive,
    /// `"memory"`: each disk travels in the boot image as a GRUB module and is served in place
    /// from the memory it was loaded into (machines without a legacy ATA drive). Nothing
    /// written survives the run; `persist` is refused.
    Memory,
}

impl DiskBackend {
    /// Both backends, in the order lab files list them.
    pub const ALL: [DiskBackend; 2] = [DiskBackend::Drive, DiskBackend::Memory];

    /// The backend's name in lab files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Drive => "drive",
            Self::Memory => "memory",
        }
    }

    /// The backend called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|backend| backend.name() == name)
    }
}

/// Where a VM's disk comes from. Either way the VM works on a copy: an extent of the run's
/// shared drive, or a module inside the boot image; only `persist` writes the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// `disk`: an image file (absolute, or resolved against the lab file's directory).
    File(PathBuf),
    /// `blank_disk_kib`: a fresh disk of this many KiB ([`crate::image::disk::BLANK_MAGIC`] at
    /// the start, zeros elsewhere), written to the run directory only when persisted (or, with
    /// `disk_backend = "memory"`, to travel as a module).
    Blank { kib: u32 },
}

impl Disk {
    /// The image file a run uses for this disk: the lab's file, or the blank image in the
    /// run directory `out` ([`blank_disk_path`]).
    pub fn path(&self, out: &Path, vm: &str) -> PathBuf {
        match self {
            Disk::File(path) => path.clone(),
            Disk::Blank { .. } => blank_disk_path(out, vm),
        }
    }
}

/// Where VM `vm`'s blank disk image lives in the run directory `out`.
pub fn blank_disk_path(out: &Path, vm: &str) -> PathBuf {
    out.join(format!("{vm}.disk"))
}

/// Where a VM's kernel comes from. A `kernel` value that names a built-in guest means the
/// built-in; to use a file of that name, write it as a path (`./hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kernel {
    /// A binary of the `carousel-guests` package, built by the tool.
    Builtin(String),
    /// An ELF file (path resolved against the lab file's directory).
    File(PathBuf),
}

impl Lab {
    /// A lab of `vms` at `path` with every other setting as a lab file that leaves it out
    /// has it (its hash is 0 until [`Lab::save`] writes it).
    pub fn new(path: PathBuf, vms: Vec<Vm>) -> Self {
        Lab {
            path,
            hash: 0,
            quantum_us: DEFAULT_QUANTUM_US,
            ips: DEFAULT_IPS,
            tsc_hz: None,
            cpu_model: DEFAULT_CPU_MODEL.to_string(),
            timeout_s: DEFAULT_TIMEOUT_S,
            idle_threshold_us: None,
            idle_threshold_given: false,
            deterministic: false,
            interval_us: DEFAULT_INTERVAL_US,
            trace: TraceLevel::Switches,
            policy: SchedulerPolicy::default(),
            credit: CreditConfig::default(),
            disk_model: DiskModelConfig::default(),
            quantum_clock: QuantumClock::default(),
            memory_sample_ms: DEFAULT_MEMORY_SAMPLE_US / 1000,
            guest_memory_budget_mib: None,
            merge_scan_pages: 0,
            compression: Compression::default(),
            balloon_rule: None,
            lazy_memory: false,
            boot_stagger_ms: 0,
            disk_backend: DiskBackend::Drive,
            vms,
            sweep: SweepTable::default(),
            changes: Vec::new(),
        }
    }

    /// The lab file's name without extension: names the default run directory.
    pub fn stem(&self) -> String {
        self.path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lab".to_string())
    }

    /// Guest RAM over all VMs, in MiB.
    /// MiB of guest RAM the emulator must hold: all of it, or with lazily backed RAM at most
    /// what the emulator can give.
    pub fn guest_memory_mib(&self) -> u64 {
        let total: u64 = self.vms.iter().map(|vm| u64::from(vm.memory_mib)).sum();
        if self.lazy_memory {
            total.min(MAX_TOTAL_MIB - HYPERVISOR_MIB)
        } else {
            total
        }
    }

    /// True when some VM runs a built-in guest (the guests package must be built).
    pub fn uses_builtin_guests(&self) -> bool {
        self.vms
            .iter()
            .any(|vm| matches!(vm.kernel, Kernel::Builtin(_)))
    }

    /// The built-in guests the VMs run, sorted, each once.
    pub fn builtin_guests(&self) -> Vec<&str> {
        let mut guests: Vec<&str> = self
            .vms
            .iter()
            .filter_map(|vm| match &vm.kernel {
                Kernel::Builtin(name) => Some(name.as_str()),
                Kernel::File(_) => None,
            })
            .collect();
        guests.sort_unstable();
        guests.dedup();
        guests
    }

    /// True when some VM has a console script.
    pub fn has_scripts(&self) -> bool {
        self.vms.iter().any(|vm| !vm.script.is_empty())
    }

    /// Whether VM `vm`'s disk is copied back into its image: its own `persist`, or `persist_all`
    /// (`carousel run --persist`) for a VM with a disk.
    pub fn persists(&self, vm: usize, persist_all: bool) -> bool {
        self.vms
            .get(vm)
            .is_some_and(|vm| vm.persist || (persist_all && vm.disk.is_some()))
    }
}

/// Compressing cold pages, as the lab sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub after_samples: u16,
    pub scan_pages: u32,
    pub pool_mib: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            after_samples: 0,
            scan_pages: super::limits::DEFAULT_COMPRESS_SCAN_PAGES as u32,
            pool_mib: super::limits::DEFAULT_COMPRESS_POOL_MIB as u32,
        }
    }
}
