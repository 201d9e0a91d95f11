//! Records the hypervisor streams to the host tool on COM2.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// How the hypervisor learned its TSC frequency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TscSource {
    /// The lab file set it (in Bochs: the `ips` setting, since the TSC counts instructions).
    LabFile,
    /// Measured against the PIT at boot.
    Pit,
    /// CPUID leaf 0x15 / 0x16.
    Cpuid,
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// First record of every run.
    Hello {
        /// [`crate::FORMAT_VERSION`] of the hypervisor.
        version: u16,
        /// Hash of the lab file, as the run configuration gave it.
        lab_hash: u64,
        /// TSC frequency in Hz.
        tsc_hz: u64,
        /// Where `tsc_hz` came from.
        tsc_source: TscSource,
        /// `IA32_VMX_MISC[4:0]`: the preemption timer ticks every 2^rate TSC cycles.
        preemption_timer_rate: u8,
        /// The CPU's brand string or vendor.
        cpu: String,
        /// VM names, indexed by VM id.
        vms: Vec<String>,
        /// The Carousel commit the host tool was built from (`git describe`), or "unknown".
        commit: String,
        /// What the stream carries beyond the aggregates (see [`TraceLevel`]).
        level: TraceLevel,
        /// Each VM's scheduling weight, indexed by VM id (reports read fairness from them).
        weights: Vec<u32>,
        /// What a quantum measured in this run.
        quantum_clock: crate::config::QuantumClock,
    },
    /// Scheduler (and, in full-rate traces, exit) events in time order, packed small: each
    /// event carries its time as the cycles since the previous event of the batch (the first:
    /// since `tsc`), and postcard writes every integer as a varint, so a switch costs a few
    /// bytes. The frame's sequence number, CRC and COBS overhead are shared by the batch.
    Events { tsc: u64, events: Vec<Event> },
    /// One VM's memory as Carousel can see it, at its start: RAM pages, and whether the CPU
    /// has EPT accessed/dirty flags (without them there are no working-set figures).
    MemoryInfo {
        vm: u16,
        ram_pages: u64,
        accessed_dirty: bool,
        /// Pages ballooned from the start (unbacked before the guest ran).
        initial_balloon: u64,
    },
    /// One working-set sample of one VM (from the EPT accessed/dirty flags): pages accessed and
    /// written since the previous sample, pages touched at all so far, and the root cycles the
    /// sample took (the walk, the memory map's cells and the flush; not this record).
    WorkingSet {
        tsc: u64,
        vm: u16,
        accessed: u64,
        dirty: u64,
        ever: u64,
        cycles: u64,
    },
    /// The balloon rule raised a VM's target: the host's pool was low (`available` of `pool`
    /// pages) and this VM had the most idle memory (`idle` pages outside its working set).
    BalloonTarget {
        tsc: u64,
        vm: u16,
        target: u64,
        idle: u64,
        available: u64,
        pool: u64,
    },
    /// A VM's balloon changed: it gave back (inflate) or took back (deflate) `pages` pages;
    /// `ballooned` is its balloon afterwards and `target` what the host asked for.
    Balloon {
        tsc: u64,
        vm: u16,
        inflate: bool,
        pages: u32,
        ballooned: u64,
        target: u64,
    },
    /// Host memory at the end of a metrics interval: guest pages backed by a frame (over all
    /// VMs; a shared frame counts once; the compressed pool's frames included), the most there
    /// ever were at any instant of the run so far (not only at interval ends), and frames free
    /// in the hypervisor's pool.
    HostMemory {
        tsc: u64,
        backed_pages: u64,
        peak_pages: u64,
        free_pages: u64,
    },
    /// Same-page merging over one metrics interval: pages scanned and the root cycles the scan
    /// took (a root-mode category of its own), and the state at its end: merges and copies on
    /// write so far, shared frames, frames saved, and each VM's pages sharing a frame.
    Merging {
        tsc: u64,
        scanned: u64,
        cycles: u64,
        merges: u64,
        cow_breaks: u64,
        shared_frames: u64,
        frames_saved: u64,
        merged_pages: Vec<u64>,
    },
    /// A sample of one VM's guest-physical memory: `cells` holds one [`PageState`] byte per
    /// `pages_per_cell` 4 KiB pages, from guest-physical 0 up.
    MemoryMap {
        tsc: u64,
        vm: u16,
        pages_per_cell: u32,
        cells: Vec<u8>,
    },
    /// A guest reported a named check through the CHECK hypercall.
    Check {
        tsc: u64,
        vm: u16,
        name: String,
        passed: bool,
    },
    /// A guest reported a named measurement through the METRIC hypercall.
    GuestMetric {
        tsc: u64,
        vm: u16,
        name: String,
        value: u64,
    },
    /// A VM's disk accepted a transfer (IDE command).
    DiskIo {
        tsc: u64,
        vm: u16,
        lba: u32,
        sectors: u16,
        write: bool,
    },
    /// One VM's exits during one interval, by basic exit reason (the interval ends at `tsc`
    /// and lasted `interval` cycles). Only reasons that occurred are listed.
    ExitInterval {
        tsc: u64,
        vm: u16,
        interval: u64,
        exits: Vec<ExitStat>,
    },
    /// LAPIC timer ticks of one VM, end of run: how many the timer raised, how many more
    /// expiries were folded into a tick still pending (the guest had not taken it: it waited
    /// for the CPU, or ran with interrupts off), and the lag from each raised tick's deadline to
    /// the hypervisor making it pending.
    TimerLag {
        vm: u16,
        ticks: u64,
        coalesced: u64,
        lag_total: u64,
        lag_max: u64,
    },
    /// Guest time by address space (CR3), end of run: the top entries, largest first.
    AddressSpaces { vm: u16, spaces: Vec<AddressSpace> },
    /// A VM left the run.
    VmStopped {
        tsc: u64,
        vm: u16,
        reason: StopReason,
    },
    /// End-of-run accounting of one VM (all times in TSC cycles).
    VmSummary(VmSummary),
    /// End-of-run accounting of the whole run (all times in TSC cycles).
    RunSummary(RunSummary),
    /// Last record of a run that ended in order.
    RunEnd { tsc: u64 },
    /// A scheduler setting changed mid-run, between two slices at `tsc`: every slice that
    /// starts after it has the new setting.
    SettingChanged {
        tsc: u64,
        setting: crate::config::Setting,
        source: ChangeSource,
    },
    /// A request to change a setting was refused (nothing changed); `refused` counts the
    /// refusals of the run so far, this one included.
    SettingRefused {
        tsc: u64,
        setting: crate::config::Setting,
        source: ChangeSource,
        reason: crate::config::SettingError,
        refused: u64,
    },
    /// `vm` answered console input: at `tsc` it transmitted its first console byte since an
    /// [`Event::Input`] reached it (the echo of a keystroke, or the answer to a line). Sent
    /// late, when the next input reaches the VM or at the end of the run (so that a VM's
    /// console output costs nothing more while no input waits), hence a record with its own
    /// time rather than an event.
    Answer { tsc: u64, vm: u16 },
    /// End-of-run figures of one VM's requests to the shared disk (all times in TSC cycles),
    /// for a run whose disk has a service time or a cap (`run.disk`, `vm.disk_mib_per_s`).
    DiskQueue(DiskQueueSummary),
    /// The shared disk completed one request of `vm` at `tsc`: it had waited `wait` cycles for
    /// the device, which then took `service` (so it arrived at `tsc - service - wait`). One per
    /// request of a timed disk, so their rate is the device's, whatever a guest does; dropped
    /// (and counted) like other high-rate records when the line falls behind. The tool builds
    /// the per-interval disk figures and the device's queue length over time from these.
    DiskServed {
        tsc: u64,
        vm: u16,
        sectors: u32,
        write: bool,
        wait: u64,
        service: u64,
    },
    /// Compression over one working-set sample's pass: pages compressed in it and the root
    /// cycles it took (a root-mode category of its own), and the state at its end: pages
    /// compressed and decompressed so far and the decompressions' root cycles, cold pages left
    /// as they were (incompressible, or the pool full), the pool's frames, blob bytes and the
    /// pages those blobs hold (the rest are patterns, in their entries), and each VM's
    /// compressed pages.
    Compression {
        tsc: u64,
        compressed_now: u64,
        cycles: u64,
        compressed: u64,
        decompressed: u64,
        decompress_cycles: u64,
        incompressible: u64,
        pool_full: u64,
        pool_frames: u64,
        pool_bytes: u64,
        blob_pages: u64,
        compressed_pages: Vec<u64>,
    },
}

/// One VM's requests through the shared disk's queue over the run: how many, how long each
/// waited for the device and how long the device took, and how long the VM sat blocked while
/// a request of its was outstanding ("blocked on disk").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskQueueSummary {
    pub vm: u16,
    /// Requests completed.
    pub requests: u64,
    /// Sectors those requests moved (read and written).
    pub sectors: u64,
    /// From a request's arrival to the start of its service: p50, p99, largest.
    pub wait_p50: u64,
    pub wait_p99: u64,
    pub wait_max: u64,
    /// From the start of a request's service to its completion: p50, p99, largest.
    pub service_p50: u64,
    pub service_p99: u64,
    pub service_max: u64,
    /// Cycles the VM was blocked with one of its requests outstanding.
    pub blocked_disk: u64,
}

/// Who asked for a setting change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeSource {
    /// A `[[run.change]]` of the lab file, at its time.
    Lab,
    /// The console's in-band control channel (`~quantum`, `~weight`, `~cap`).
    Console,
}

/// How much the stream carries: the aggregates always; per-slice scheduler events by default;
/// every VM exit as an event in full-rate traces (the 0xE9 debug port, which has no baud limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TraceLevel {
    /// Only the records verdicts and the report's totals need (Hello, checks, stops,
    /// end-of-run summaries): what `carousel bench export` measures the others against.
    Off,
    /// Interval aggregates and end-of-run summaries only.
    Aggregate,
    /// Also every switch, wake and console write as an [`Event`].
    Switches,
    /// Also every VM exit as an [`Event::Exit`].
    Full,
}

/// One scheduler event. `dt` is the cycles since the previous event of its batch. A switch is a
/// [`Event::Descheduled`] of one VM followed by a [`Event::Run`] of the next (root time, such as
/// the switch itself, lies between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The CPU switched to `vm`: runnable to running.
    Run { dt: u64, vm: u16 },
    /// `vm`'s slice ended: running to runnable (preempted, yielded), blocked or stopped.
    Descheduled { dt: u64, vm: u16, why: SliceEnd },
    /// A blocked VM became runnable (its timer expired or an interrupt arrived).
    Wake { dt: u64, vm: u16 },
    /// One VM exit (full-rate traces): basic exit reason and root-mode cycles until the next
    /// entry, saturated at `u32::MAX`.
    Exit {
        dt: u64,
        vm: u16,
        reason: u16,
        cycles: u32,
    },
    /// `vm` wrote `bytes` bytes to its console (one event per forwarded line or flush).
    Console { dt: u64, vm: u16, bytes: u32 },
    /// Records dropped so far in the run because the export ring was full (sent when it grows).
    Dropped { dt: u64, total: u64 },
    /// The hypervisor put `bytes` bytes of console input from the host into `vm`'s UART (its
    /// receive buffer): a keystroke, or a script's `send`.
    Input { dt: u64, vm: u16, bytes: u32 },
}

impl Event {
    /// Cycles since the previous event of the batch.
    pub fn dt(&self) -> u64 {
        match *self {
            Self::Run { dt, .. }
            | Self::Descheduled { dt, .. }
            | Self::Wake { dt, .. }
            | Self::Exit { dt, .. }
            | Self::Console { dt, .. }
            | Self::Dropped { dt, .. }
            | Self::Input { dt, .. } => dt,
        }
    }

    /// The same event `dt` cycles after the previous one.
    #[must_use]
    pub fn with_dt(mut self, cycles: u64) -> Self {
        match &mut self {
            Self::Run { dt, .. }
            | Self::Descheduled { dt, .. }
            | Self::Wake { dt, .. }
            | Self::Exit { dt, .. }
            | Self::Console { dt, .. }
            | Self::Dropped { dt, .. }
            | Self::Input { dt, .. } => *dt = cycles,
        }
        self
    }

    /// The VM the event is about (none for drop counters).
    pub fn vm(&self) -> Option<u16> {
        match *self {
            Self::Run { vm, .. }
            | Self::Descheduled { vm, .. }
            | Self::Wake { vm, .. }
            | Self::Exit { vm, .. }
            | Self::Console { vm, .. }
            | Self::Input { vm, .. } => Some(vm),
            Self::Dropped { .. } => None,
        }
    }
}

/// Absolute times of a batch's events: `(tsc, event)` in order.
pub fn timed_events(tsc: u64, events: &[Event]) -> impl Iterator<Item = (u64, &Event)> + '_ {
    events.iter().scan(tsc, |now, event| {
        *now = now.wrapping_add(event.dt());
        Some((*now, event))
    })
}

/// Why a slice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SliceEnd {
    /// The preemption timer ended it: the VM is runnable.
    Preempted,
    /// The VM gave the CPU up but can run: runnable.
    Yielded,
    /// The VM halted (or idle detection found it idle, or it waits for a line to leave):
    /// blocked, on what it waits for.
    Blocked(BlockedOn),
    /// The VM left the run.
    Stopped,
}

/// What a blocked VM waits for: the runstate's reason. Decided when it blocks, in this order: a
/// request to the shared disk outstanding makes it blocked on disk whatever else could wake it
/// (an operating system's periodic tick does not make a disk wait a timer wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BlockedOn {
    /// A request of its to the shared disk waits for the device or is being served.
    Disk,
    /// A deadline: its LAPIC timer, its PIT, a SET_TIMER, or a staggered start.
    Timer,
    /// An interrupt with no deadline: console input or a device (or nothing: a HLT with
    /// interrupts on and no source armed waits here until the run ends it).
    Interrupt,
    /// Its console lines to leave: its share of COM1 is full.
    Console,
    /// Its records to leave: its quota of COM2 is full.
    Records,
}

impl BlockedOn {
    /// Every reason, in report order.
    pub const ALL: [BlockedOn; 5] = [
        BlockedOn::Disk,
        BlockedOn::Timer,
        BlockedOn::Interrupt,
        BlockedOn::Console,
        BlockedOn::Records,
    ];

    /// Lower-case name, as reports print it after "blocked on".
    pub fn name(self) -> &'static str {
        match self {
            BlockedOn::Disk => "disk",
            BlockedOn::Timer => "timer",
            BlockedOn::Interrupt => "interrupt",
            BlockedOn::Console => "console",
            BlockedOn::Records => "records",
        }
    }
}

/// The state of a memory cell in a [`Record::MemoryMap`] (the "most" state of its pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum PageState {
    /// Never touched since the VM started.
    Untouched = 0,
    /// Read (accessed) since the last sample.
    Touched = 1,
    /// Written since the last sample.
    Dirty = 2,
    /// Shared with identical pages (same-page merging).
    Merged = 3,
    /// Given back to the host (balloon).
    Ballooned = 4,
    /// Touched at some point, but not in the last sample.
    Idle = 5,
    /// Compressed: cold, its frame given back, its contents in the compressed pool.
    Compressed = 6,
}

impl PageState {
    /// The state a cell byte stands for (unknown bytes read as untouched).
    pub fn from_byte(byte: u8) -> Self {
        match byte {
            1 => Self::Touched,
            2 => Self::Dirty,
            3 => Self::Merged,
            4 => Self::Ballooned,
            5 => Self::Idle,
            6 => Self::Compressed,
            _ => Self::Untouched,
        }
    }
}

/// One exit reason's count and cost over an interval: root-mode cycles from the VM exit to
/// the next VM entry (or the end of the slice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStat {
    /// Basic exit reason (SDM Appendix C).
    pub reason: u16,
    pub count: u64,
    /// Total root-mode cycles.
    pub cycles: u64,
    pub min: u64,
    pub max: u64,
    /// Log2 histogram of the cycles of each exit: `(bucket, count)` for non-empty buckets,
    /// bucket b holding exits of [2^b, 2^(b+1)) cycles (bucket 0 also holds 0).
    pub log2: Vec<(u8, u32)>,
}

/// Guest time spent in one address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpace {
    /// The CR3 value (the page-directory base the guest loaded).
    pub cr3: u64,
    /// Guest cycles spent with this CR3 loaded.
    pub cycles: u64,
    /// Times the guest loaded it.
    pub loads: u64,
}

/// Where one VM's time went, modelled on Xen's runstates (xenalyze).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    pub vm: u16,
    /// Runstate times: running (guest plus the root time spent for it while it held the
    /// CPU), runnable (waiting for the CPU), blocked (halted, waiting for an event), stopped.
    pub running: u64,
    pub runnable: u64,
    pub blocked: u64,
    pub stopped: u64,
    /// Cycles in guest mode (VM entry to VM exit).
    pub guest: u64,
    /// Root-mode cycles spent handling this VM's exits.
    pub root: u64,
    /// Slices begun, slices ended by the timer, slices given up (HLT or yield).
    pub slices: u64,
    pub preemptions: u64,
    pub yields: u64,
    /// Wake-to-run latency: count of wakes, and p50/p95/p99/max in cycles.
    pub wakes: u64,
    pub wake_p50: u64,
    pub wake_p95: u64,
    pub wake_p99: u64,
    pub wake_max: u64,
    /// Quantum error of preempted slices (guest cycles against the configured slice), parts
    /// per million: signed median and largest magnitude.
    pub quantum_error_median_ppm: i64,
    pub quantum_error_max_ppm: i64,
    /// Of `blocked`: cycles the VM waited for room on COM1 (its console share was full) and
    /// for room in its record quota on COM2. Guest-driven work that must wait blocks the VM,
    /// never the machine.
    pub blocked_console: u64,
    pub blocked_records: u64,
    /// Records the VM asked for (METRIC) dropped because its quota on COM2 was full; other VMs'
    /// records never drop for it.
    pub guest_records_dropped: u64,
}

/// The whole run's accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The scheduling policy's name and its base quantum.
    pub policy: String,
    pub quantum_cycles: u64,
    /// From the first VM's start to the end of the run.
    pub elapsed: u64,
    /// Root-mode cycles in all (per-VM root plus time spent for no VM: switching).
    pub root: u64,
    /// Cycles the CPU waited with no VM runnable.
    pub idle: u64,
    /// Switch cost: cycles from a preemption exit to the next VM's entry, median and max,
    /// leaving out periodic housekeeping done between slices (console input, metric export).
    pub switch_median: u64,
    pub switch_max: u64,
    pub switches: u64,
    /// Records produced but not sent (the export ring was full).
    pub dropped_records: u64,
}

/// Why a VM stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The guest called the EXIT hypercall with this status.
    Exited { status: u32 },
    /// The guest triple-faulted (shutdown).
    TripleFault { rip: u64 },
    /// The guest wrote to a merged page and there was no frame for its own copy.
    OutOfMemory { gpa: u64, rip: u64 },
    /// The guest touched a page it had given back through the balloon.
    BalloonedPageTouched { gpa: u64, rip: u64 },
    /// The guest touched guest-physical memory it does not have.
    EptViolation {
        gpa: u64,
        rip: u64,
        qualification: u64,
    },
    /// The guest caused a VM exit Carousel does not handle (basic exit reason number).
    UnhandledExit {
        reason: u16,
        rip: u64,
        qualification: u64,
    },
    /// VM entry failed (basic exit reason 33, 34 or 41, or VMfail with an instruction error).
    EntryFailed { reason: u16, detail: u64 },
    /// The guest image could not be loaded.
    LoadFailed { message: String },
    /// The guest touched a device page with an instruction Carousel cannot emulate.
    BadMmio { gpa: u64, rip: u64, message: String },
    /// The guest halted with nothing left that could wake it.
    HaltedForever { rip: u64 },
    /// The host tool ended the run (its console scripts were done) while this VM still ran.
    EndedByHost,
    /// A VMX instruction failed for this VM (the hypervisor's view of the error).
    VmxError { message: String },
    /// The guest did something no hardware would let it go on from, that is not a VMX failure
    /// (a string I/O buffer outside its RAM, a page walk through a device page).
    GuestFault { rip: u64, message: String },
}

impl StopReason {
    /// True when the guest exited through the EXIT hypercall with [`crate::hypercall::EXIT_SUCCESS`].
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Exited { status } if *status == crate::hypercall::EXIT_SUCCESS)
    }
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use crate::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};
        match self {
            Self::Exited { status: EXIT_SUCCESS } => write!(f, "exited with success (0x10)"),
            Self::Exited { status: EXIT_FAILURE } => write!(f, "exited with failure (0x11)"),
            Self::Exited { status } => write!(f, "exited with status {status:#x}"),
            Self::TripleFault { rip } => write!(f, "triple fault at rip {rip:#x}"),
            Self::OutOfMemory { gpa, rip } => write!(
                f,
                "wrote to merged page {gpa:#x} at rip {rip:#x} and the host had no frame for \
                 its copy"
            ),
            Self::BalloonedPageTouched { gpa, rip } => write!(
                f,
                "touched guest-physical {gpa:#x}, a page it gave back through the balloon, at rip \
                 {rip:#x}"
            ),
            Self::EptViolation { gpa, rip, qualification } => write!(
                f,
                "touched guest-physical {gpa:#x} outside its memory at rip {rip:#x} \
                 (qualification {qualification:#x})"
            ),
            Self::UnhandledExit { reason, rip, qualification } => write!(
                f,
                "unhandled VM exit {} ({reason}) at rip {rip:#x} (qualification {qualification:#x})",
                exit_reason_name(*reason)
            ),
            Self::EntryFailed { reason, detail } => {
                write!(f, "VM entry failed: {} ({reason}), detail {detail:#x}", exit_reason_name(*reason))
            }
            Self::LoadFailed { message } => write!(f, "guest image not loaded: {message}"),
            Self::BadMmio { gpa, rip, message } => {
                write!(f, "device access at {gpa:#x} from rip {rip:#x} not emulated: {message}")
            }
            Self::HaltedForever { rip } => {
                write!(f, "halted at rip {rip:#x} with nothing left to wake it")
            }
            Self::VmxError { message } => write!(f, "VMX instruction failed: {message}"),
            Self::GuestFault { rip, message } => write!(f, "guest fault at rip {rip:#x}: {message}"),
            Self::EndedByHost => write!(f, "ended by the host"),
        }
    }
}

/// SDM name of a basic exit reason (Appendix C, "VMX Basic Exit Reasons"), for reports.
pub fn exit_reason_name(reason: u16) -> &'static str {
    const NAMES: [&str; 78] = [
        "EXCEPTION_OR_NMI",
        "EXTERNAL_INTERRUPT",
        "TRIPLE_FAULT",
        "INIT",
        "SIPI",
        "IO_SMI",
        "OTHER_SMI",
        "INTERRUPT_WINDOW",
        "NMI_WINDOW",
        "TASK_SWITCH",
        "CPUID",
        "GETSEC",
        "HLT",
        "INVD",
        "INVLPG",
        "RDPMC",
        "RDTSC",
        "RSM",
        "VMCALL",
        "VMCLEAR",
        "VMLAUNCH",
        "VMPTRLD",
        "VMPTRST",
        "VMREAD",
        "VMRESUME",
        "VMWRITE",
        "VMXOFF",
        "VMXON",
        "CR_ACCESS",
        "DR_ACCESS",
        "IO_INSTRUCTION",
        "RDMSR",
        "WRMSR",
        "ENTRY_FAILURE_GUEST_STATE",
        "ENTRY_FAILURE_MSR_LOADING",
        "RESERVED_35",
        "MWAIT",
        "MONITOR_TRAP_FLAG",
        "RESERVED_38",
        "MONITOR",
        "PAUSE",
        "ENTRY_FAILURE_MACHINE_CHECK",
        "RESERVED_42",
        "TPR_BELOW_THRESHOLD",
        "APIC_ACCESS",
        "VIRTUALIZED_EOI",
        "GDTR_IDTR_ACCESS",
        "LDTR_TR_ACCESS",
        "EPT_VIOLATION",
        "EPT_MISCONFIGURATION",
        "INVEPT",
        "RDTSCP",
        "PREEMPTION_TIMER",
        "INVVPID",
        "WBINVD",
        "XSETBV",
        "APIC_WRITE",
        "RDRAND",
        "INVPCID",
        "VMFUNC",
        "ENCLS",
        "RDSEED",
        "PML_FULL",
        "XSAVES",
        "XRSTORS",
        "RESERVED_65",
        "SPP",
        "UMWAIT",
        "TPAUSE",
        "LOADIWKEY",
        "RESERVED_70",
        "RESERVED_71",
        "ENQCMD_PASID",
        "ENQCMDS_PASID",
        "BUS_LOCK",
        "INSTRUCTION_TIMEOUT",
        "SEAMCALL",
        "TDCALL",
    ];
    NAMES.get(usize::from(reason)).copied().unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_sdm_numbering() {
        assert_eq!(exit_reason_name(2), "TRIPLE_FAULT");
        assert_eq!(exit_reason_name(18), "VMCALL");
        assert_eq!(exit_reason_name(30), "IO_INSTRUCTION");
        assert_eq!(exit_reason_name(48), "EPT_VIOLATION");
        assert_eq!(exit_reason_name(52), "PREEMPTION_TIMER");
        assert_eq!(exit_reason_name(500), "UNKNOWN");
    }

    #[test]
    fn success_is_only_the_success_status() {
        assert!(StopReason::Exited { status: 0x10 }.is_success());
        assert!(!StopReason::Exited { status: 0 }.is_success());
        assert!(!StopReason::TripleFault { rip: 0 }.is_success());
    }
}
