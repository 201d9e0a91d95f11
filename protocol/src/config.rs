//! The run configuration: everything the hypervisor needs to know about one run, validated by
//! the host tool before it is encoded.

use alloc::string::String;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::record::TraceLevel;
use crate::FORMAT_VERSION;

/// Default metrics interval: 10 ms of TSC time.
pub const DEFAULT_INTERVAL_US: u32 = 10_000;

/// Default working-set sampling period: off (each sample walks every EPT entry of every VM
/// and costs root time; labs turn it on with `run.memory_sample_ms`).
pub const DEFAULT_MEMORY_SAMPLE_US: u32 = 0;

/// Default rate limit of the credit policy: a running VM is not preempted by a boosted waker
/// before it has run 1 ms (Xen's `sched_ratelimit_us` default).
pub const DEFAULT_CREDIT_RATELIMIT_US: u32 = 1_000;

/// Default accounting period of the credit policy: 30 ms, as in Xen's credit1.
pub const DEFAULT_CREDIT_PERIOD_US: u32 = 30_000;

/// Allowed scheduler quanta, microseconds (the lab's `run.quantum_us`, a scheduled change and
/// `~quantum` alike).
pub const QUANTUM_US_RANGE: RangeInclusive<u32> = 1..=1_000_000;
/// Allowed scheduling weights.
pub const WEIGHT_RANGE: RangeInclusive<u32> = 1..=64;
/// Allowed caps, percent of the CPU (a VM without a cap has none at all).
pub const CAP_PCT_RANGE: RangeInclusive<u32> = 1..=100;
/// `run.disk.latency_us`: the shared disk's service time per request, microseconds of TSC time
/// (0: none).
pub const DISK_LATENCY_US_RANGE: RangeInclusive<u32> = 0..=1_000_000;
/// `run.disk.mib_per_s` and `vm.disk_mib_per_s`: a transfer rate in MiB per second of TSC time
/// (0: unlimited, for the device; no cap, for a VM).
pub const DISK_MIB_PER_S_RANGE: RangeInclusive<u32> = 0..=100_000;
/// `run.disk.anticipate_us`: how long a weighted fair queue may keep the device idle for the
/// VM whose request just completed, when that VM comes next (0: never).
pub const DISK_ANTICIPATE_US_RANGE: RangeInclusive<u32> = 0..=100_000;
/// Its default: off. A window makes weights hold for guests with one request at a time, but
/// the device's idling is not charged to the VM it waits for, so a VM that never comes back
/// in time could take a window per request from its neighbours (README known problems); a lab
/// turns it on knowingly (1000 µs serves Carousel's guests and xv6 in Bochs).
pub const DEFAULT_DISK_ANTICIPATE_US: u32 = 0;

/// A scheduler setting that may change while a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Setting {
    /// The quantum, microseconds (before weights scale it).
    Quantum { us: u32 },
    /// VM `vm`'s weight.
    Weight { vm: u16, weight: u32 },
    /// VM `vm`'s cap, percent (credit only).
    Cap { vm: u16, cap_pct: u32 },
}

/// Why a [`Setting`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettingError {
    /// The quantum lies outside [`QUANTUM_US_RANGE`].
    Quantum { us: u32 },
    /// The weight lies outside [`WEIGHT_RANGE`].
    Weight { weight: u32 },
    /// The cap lies outside [`CAP_PCT_RANGE`].
    Cap { cap_pct: u32 },
    /// There is no VM of that id.
    UnknownVm { vm: u16 },
    /// A cap, but the run's policy is not credit.
    CapNeedsCredit { policy: SchedulerPolicy },
}

impl core::fmt::Display for SettingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (quantum, weight, cap) = (&QUANTUM_US_RANGE, &WEIGHT_RANGE, &CAP_PCT_RANGE);
        match self {
            Self::Quantum { us } => write!(
                f,
                "a quantum of {us} us is outside {}..={} us",
                quantum.start(),
                quantum.end()
            ),
            Self::Weight { weight: value } => write!(
                f,
                "weight {value} is outside {}..={}",
                weight.start(),
                weight.end()
            ),
            Self::Cap { cap_pct } => {
                write!(
                    f,
                    "cap {cap_pct} % is outside {}..={} %",
                    cap.start(),
                    cap.end()
                )
            }
            Self::UnknownVm { vm } => write!(f, "there is no vm {vm}"),
            Self::CapNeedsCredit { policy } => write!(
                f,
                "caps need the credit policy; this run's is {}",
                policy.name()
            ),
        }
    }
}

impl core::fmt::Display for Setting {
    /// For the hypervisor's log, VMs by id (the host tool names them).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Quantum { us } => write!(f, "quantum {us} us"),
            Self::Weight { vm, weight } => write!(f, "weight of vm {vm} {weight}"),
            Self::Cap { vm, cap_pct } => write!(f, "cap of vm {vm} {cap_pct} %"),
        }
    }
}

impl Setting {
    /// Checks the setting against the ranges a lab file is held to, for a run of `vm_count`
    /// VMs under `policy`: the one check for lab files, scheduled changes and the console.
    pub fn check(&self, vm_count: usize, policy: SchedulerPolicy) -> Result<(), SettingError> {
        let known = |vm: u16| {
            if usize::from(vm) < vm_count {
                Ok(())
            } else {
                Err(SettingError::UnknownVm { vm })
            }
        };
        match *self {
            Self::Quantum { us } if !QUANTUM_US_RANGE.contains(&us) => {
                Err(SettingError::Quantum { us })
            }
            Self::Quantum { .. } => Ok(()),
            Self::Weight { vm, weight } => {
                known(vm)?;
                if WEIGHT_RANGE.contains(&weight) {
                    Ok(())
                } else {
                    Err(SettingError::Weight { weight })
                }
            }
            Self::Cap { vm, cap_pct } => {
                known(vm)?;
                if policy != SchedulerPolicy::Credit {
                    Err(SettingError::CapNeedsCredit { policy })
                } else if CAP_PCT_RANGE.contains(&cap_pct) {
                    Ok(())
                } else {
                    Err(SettingError::Cap { cap_pct })
                }
            }
        }
    }
}

/// Bytes of a setting request on the console's control channel (after its escape): a kind
/// byte, the VM id (u16, little endian; 0 for the quantum) and the value (u32, little endian:
/// microseconds, a weight, a percentage).
pub const SETTING_REQUEST_LEN: usize = 7;

impl Setting {
    /// The setting as a request on the console's control channel.
    pub fn to_request(self) -> [u8; SETTING_REQUEST_LEN] {
        let (kind, vm, value) = match self {
            Self::Quantum { us } => (1, 0, us),
            Self::Weight { vm, weight } => (2, vm, weight),
            Self::Cap { vm, cap_pct } => (3, vm, cap_pct),
        };
        let [v0, v1] = u16::to_le_bytes(vm);
        let [b0, b1, b2, b3] = value.to_le_bytes();
        [kind, v0, v1, b0, b1, b2, b3]
    }

    /// The setting a request asks for (not yet checked); Err(kind) for a kind there is none of.
    pub fn from_request(bytes: [u8; SETTING_REQUEST_LEN]) -> Result<Self, u8> {
        let vm = u16::from_le_bytes([bytes[1], bytes[2]]);
        let value = u32::from_le_bytes([bytes[3], bytes[4], bytes[5], bytes[6]]);
        match bytes[0] {
            1 => Ok(Self::Quantum { us: value }),
            2 => Ok(Self::Weight { vm, weight: value }),
            3 => Ok(Self::Cap { vm, cap_pct: value }),
            kind => Err(kind),
        }
    }
}

/// A change the lab scheduled: `setting` takes effect at the first clean point (between two
/// slices) `at_us` microseconds of TSC time into the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledChange {
    pub at_us: u64,
    pub setting: Setting,
}

/// Compressing cold pages: after each working-set sample, a pass over each VM compresses the
/// private pages no sample saw touched for `after_samples` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompressionConfig {
    /// Samples a page must go untouched before it is compressed (0: compression off).
    pub after_samples: u16,
    /// Pages each pass looks at, per VM.
    pub scan_pages: u32,
    /// Most host frames the pool of LZ4 blobs may hold (pattern pages need none).
    pub pool_pages: u32,
}

/// One run, as the hypervisor receives it (GRUB module [`crate::RUN_CONFIG_MODULE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Must equal [`FORMAT_VERSION`]; the hypervisor refuses anything else.
    pub version: u16,
    /// Scheduler quantum in microseconds (before weights scale it).
    pub quantum_us: u32,
    /// TSC frequency the lab file chose, in Hz (0: calibrate against the PIT at boot).
    pub tsc_hz: u64,
    /// Hash of the lab file's text (FNV-1a 64), so traces can be matched to their lab.
    pub lab_hash: u64,
    /// Treat a guest that sits in its idle address space with nothing pending for
    /// `idle_threshold_us` as blocked until its next interrupt (for guests that never HLT,
    /// like xv6). None: off.
    pub idle_threshold_us: Option<u32>,
    /// Length of a metrics interval (exit statistics), microseconds of TSC time.
    pub interval_us: u32,
    /// What the record stream carries beyond the aggregates.
    pub trace: TraceLevel,
    /// Take a working-set sample of each VM (EPT accessed/dirty flags) this often,
    /// microseconds of TSC time (0: never).
    pub memory_sample_us: u32,
    /// The Carousel commit the host tool was built from, echoed in the Hello record.
    pub commit: String,
    /// The balloon rule: when the pages the host could still back fall below this percentage
    /// of its pool, raise the balloon target of the VM with the most idle memory by
    /// `balloon_step_pages` (checked at each working-set sample). None: no rule.
    pub balloon_when_free_below_pct: Option<u32>,
    pub balloon_step_pages: u64,
    /// The scheduling policy.
    pub policy: SchedulerPolicy,
    /// The credit policy's settings (read only when `policy` is [`SchedulerPolicy::Credit`]).
    pub credit: CreditConfig,
    /// What a quantum measures: wall time (root work on a VM's exits charged to its slice) or
    /// guest time.
    pub quantum_clock: QuantumClock,
    /// Start VM `i` only `i × boot_stagger_us` microseconds into the run (0: all at once), so
    /// that with lazy memory and merging the peak stays low while merging catches up.
    pub boot_stagger_us: u32,
    /// Same-page merging: pages scanned per metrics interval (0: off).
    pub merge_scan_pages: u32,
    /// Compressing cold pages (off unless `after_samples` is set).
    pub compression: CompressionConfig,
    /// Most guest pages the hypervisor backs at once over all VMs (None: what the machine
    /// has). Balloon deflates beyond it fail with NoMemory until another VM gives pages back.
    pub guest_page_budget: Option<u64>,
    /// The shared drive that holds the VMs' disks as extents, if any VM has one there.
    pub drive: Option<DriveConfig>,
    /// The shared disk's service time and queue policy.
    pub disk: DiskModelConfig,
    /// The VMs, in lab-file order; a VM's id is its index here.
    pub vms: Vec<VmConfig>,
    /// Setting changes at set times, in time order (the hypervisor checks each again, and
    /// refuses what does not hold).
    pub changes: Vec<ScheduledChange>,
}

/// What sector 0 of the shared drive begins with: [`DRIVE_MAGIC`], then the run's
/// [`DriveConfig::run_id`] (8 bytes, little endian). The hypervisor probes the ATA positions
/// for the drive whose sector 0 says this.
pub const DRIVE_MAGIC: &[u8; 16] = b"CAROUSEL-DRIVE\0\x01";

/// The emulator's extra ATA drive, which holds every VM's disk as its own extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveConfig {
    /// Names this run's drive (after [`DRIVE_MAGIC`] in its sector 0), so that no other disk
    /// the machine has is ever mistaken for it.
    pub run_id: u64,
    /// Its size in 512-byte sectors (the extents all lie inside).
    pub sectors: u64,
}

/// Where a VM's disk lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskSource {
    /// An extent of the shared drive: sectors [start, start + sectors) of it.
    Drive { start: u64, sectors: u64 },
    /// A GRUB module (this command line), served in place from the memory it was loaded into
    /// (`disk_backend = "memory"`, for machines without a legacy ATA drive).
    Module { name: String },
}

/// The credit policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditConfig {
    /// A running VM is not preempted by a boosted waker before it has run this long,
    /// microseconds of TSC time.
    pub ratelimit_us: u32,
    /// The accounting period: credit is handed back and caps renewed once per period,
    /// microseconds of TSC time (at least 1).
    pub period_us: u32,
}

impl Default for CreditConfig {
    fn default() -> Self {
        Self {
            ratelimit_us: DEFAULT_CREDIT_RATELIMIT_US,
            period_us: DEFAULT_CREDIT_PERIOD_US,
        }
    }
}

/// The shared disk in front of every VM's virtual IDE: its service time and how its queue is
/// scheduled (`carousel-scheduler`'s disk queue). With no service time and no VM capped, a
/// request completes as soon as the guest has made it (the disk is as fast as the drive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskModelConfig {
    /// Per request, microseconds of TSC time ([`DISK_LATENCY_US_RANGE`]).
    pub latency_us: u32,
    /// The device's transfer rate, MiB per second of TSC time (0: unlimited).
    pub mib_per_s: u32,
    /// How the queue picks the next request when several wait.
    pub policy: DiskQueuePolicy,
    /// Under [`DiskQueuePolicy::Wfq`]: how long the device may wait for the VM whose request
    /// just completed, when it comes next by its weight, microseconds of TSC time
    /// ([`DISK_ANTICIPATE_US_RANGE`]). A VM has one request at a time, so without it a VM
    /// gets at most every other request, whatever its weight.
    pub anticipate_us: u32,
}

impl Default for DiskModelConfig {
    fn default() -> Self {
        Self {
            latency_us: 0,
            mib_per_s: 0,
            policy: DiskQueuePolicy::default(),
            anticipate_us: DEFAULT_DISK_ANTICIPATE_US,
        }
    }
}

impl DiskModelConfig {
    /// Whether the device takes time to serve a request.
    pub fn has_service_time(&self) -> bool {
        self.latency_us > 0 || self.mib_per_s > 0
    }
}

/// How the shared disk's queue picks the next request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskQueuePolicy {
    /// In arrival order.
    #[default]
    Fifo,
    /// Weighted fair queueing: contended, each VM gets the device in proportion to its
    /// `disk_weight`.
    Wfq,
}

impl DiskQueuePolicy {
    /// Every queue policy, in the order lab files list them.
    pub const ALL: [DiskQueuePolicy; 2] = [DiskQueuePolicy::Fifo, DiskQueuePolicy::Wfq];

    /// The policy's name in lab files and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Wfq => "wfq",
        }
    }

    /// The policy called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.name() == name)
    }
}

/// Which scheduling policy the hypervisor runs (`carousel-scheduler`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulerPolicy {
    /// Weighted round robin: a woken VM goes to the tail of the run queue.
    #[default]
    RoundRobin,
    /// Weighted round robin with the wake-up boost: a woken VM takes back the place in the run
    /// queue it gave up when it blocked.
    Boost,
    /// Xen-style credit: weights and caps through credit handed back every accounting period,
    /// BOOST/UNDER/OVER priorities, a rate-limited boost for wakers.
    Credit,
}

impl SchedulerPolicy {
    /// Every policy, in the order lab files and reports list them.
    pub const ALL: [SchedulerPolicy; 3] = [
        SchedulerPolicy::RoundRobin,
        SchedulerPolicy::Boost,
        SchedulerPolicy::Credit,
    ];

    /// The policy's name in lab files, on the command line and in reports (what the scheduler's
    /// `Policy::name` says).
    pub const fn name(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::Boost => "boost",
            Self::Credit => "credit",
        }
    }

    /// The policy called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.name() == name)
    }
}

/// What a quantum measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuantumClock {
    /// A slice is its length of TSC time from its VM entry; the root-mode cycles of the VM's
    /// own exits count against it.
    #[default]
    Wall,
    /// A slice is its length of guest-mode time; root time comes on top (the behaviour before
    /// format version 3).
    Guest,
}

impl QuantumClock {
    /// Both clocks, in the order lab files and reports list them.
    pub const ALL: [QuantumClock; 2] = [QuantumClock::Wall, QuantumClock::Guest];

    /// The clock's name in lab files and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Wall => "wall",
            Self::Guest => "guest",
        }
    }

    /// The clock called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|clock| clock.name() == name)
    }
}

/// One VM of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Name shown as the console prefix and in reports.
    pub name: String,
    /// Multiboot2 module command line of the guest kernel image.
    pub kernel_module: String,
    /// The guest's disk, if it has one.
    pub disk: Option<DiskSource>,
    /// Guest-physical RAM size in bytes: guest-physical [0, memory_bytes) is RAM.
    pub memory_bytes: u64,
    /// Relative share of the CPU; scales the quantum (round robin) or the credit (credit).
    pub weight: u32,
    /// Under the credit policy, at most this percentage of the CPU over each accounting
    /// period, even when the CPU is otherwise idle (1 to 100; 0: uncapped).
    pub cap_pct: u32,
    /// Relative share of the shared disk when it is contended ([`WEIGHT_RANGE`]; read by the
    /// [`DiskQueuePolicy::Wfq`] queue).
    pub disk_weight: u32,
    /// At most this many MiB per second of TSC time through the shared disk (0: no cap).
    pub disk_mib_per_s: u32,
    /// Command line handed to the guest through its multiboot information.
    pub args: String,
    /// Pages ballooned from the start (the top of RAM, left unbacked): the VM may grow into
    /// them by deflating.
    pub initial_balloon_pages: u64,
    /// The balloon size the host asks for (BALLOON_TARGET), in pages.
    pub balloon_target_pages: u64,
    /// Back the RAM lazily: pages that hold only zeros at the start get a frame at their first
    /// touch (an EPT violation) instead of at VM creation.
    pub lazy_memory: bool,
}

impl RunConfig {
    /// A configuration of the current format version.
    pub fn new(quantum_us: u32, tsc_hz: u64, lab_hash: u64, vms: Vec<VmConfig>) -> Self {
        Self {
            version: FORMAT_VERSION,
            quantum_us,
            tsc_hz,
            lab_hash,
            idle_threshold_us: None,
            interval_us: DEFAULT_INTERVAL_US,
            trace: TraceLevel::Switches,
            memory_sample_us: DEFAULT_MEMORY_SAMPLE_US,
            commit: String::from("unknown"),
            policy: SchedulerPolicy::RoundRobin,
            credit: CreditConfig::default(),
            quantum_clock: QuantumClock::Wall,
            guest_page_budget: None,
            merge_scan_pages: 0,
            compression: CompressionConfig::default(),
            boot_stagger_us: 0,
            balloon_when_free_below_pct: None,
            balloon_step_pages: 0,
            drive: None,
            disk: DiskModelConfig::default(),
            vms,
            changes: Vec::new(),
        }
    }

    /// Encodes with postcard, as the GRUB module carries it.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Decodes a module's bytes, refusing another format version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: RunConfig = postcard::from_bytes(bytes).map_err(ConfigError::Decode)?;
        if config.version != FORMAT_VERSION {
            return Err(ConfigError::Version {
                found: config.version,
            });
        }
        Ok(config)
    }
}

/// Why a run-configuration module could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The bytes are not a postcard-encoded [`RunConfig`].
    Decode(postcard::Error),
    /// Encoded by a host tool of another format version.
    Version { found: u16 },
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Decode(error) => write!(f, "run configuration does not decode: {error}"),
            Self::Version { found } => write!(
                f,
                "run configuration has format version {found}, this hypervisor reads {FORMAT_VERSION}"
            ),
        }
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free hash for lab-file identity (not for security).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    fn vm(name: &str) -> VmConfig {
        VmConfig {
            name: name.to_string(),
            kernel_module: "vm0.kernel".to_string(),
            disk: None,
            memory_bytes: 8 << 20,
            weight: 1,
            cap_pct: 0,
            disk_weight: 1,
            disk_mib_per_s: 0,
            args: String::new(),
            initial_balloon_pages: 0,
            balloon_target_pages: 0,
            lazy_memory: false,
        }
    }

    #[test]
    fn rejects_other_version() {
        let mut config = RunConfig::new(1000, 1_000_000, 7, vec![vm("a")]);
        config.version = FORMAT_VERSION + 1;
        let bytes = config.to_bytes().unwrap();
        assert_eq!(
            RunConfig::from_bytes(&bytes),
            Err(ConfigError::Version {
                found: FORMAT_VERSION + 1
            })
        );
    }

    #[test]
    fn rejects_truncated_bytes() {
        let bytes = RunConfig::new(1000, 0, 7, vec![vm("a")])
            .to_bytes()
            .unwrap();
        assert!(matches!(
            RunConfig::from_bytes(&bytes[..bytes.len() - 3]),
            Err(ConfigError::Decode(_))
        ));
    }

    #[test]
    fn policies_go_by_their_names() {
        for policy in SchedulerPolicy::ALL {
            assert_eq!(SchedulerPolicy::from_name(policy.name()), Some(policy));
        }
        assert_eq!(SchedulerPolicy::from_name("fifo"), None);
        assert_eq!(SchedulerPolicy::default(), SchedulerPolicy::RoundRobin);
        let mut config = RunConfig::new(1000, 0, 7, vec![vm("a")]);
        config.policy = SchedulerPolicy::Boost;
        let bytes = config.to_bytes().unwrap();
        assert_eq!(
            RunConfig::from_bytes(&bytes).unwrap().policy,
            SchedulerPolicy::Boost
        );
        assert_eq!(
            SchedulerPolicy::from_name("credit"),
            Some(SchedulerPolicy::Credit)
        );
        config.policy = SchedulerPolicy::Credit;
        config.credit = CreditConfig {
            ratelimit_us: 250,
            period_us: 10_000,
        };
        config.vms[0].cap_pct = 25;
        let decoded = RunConfig::from_bytes(&config.to_bytes().unwrap()).unwrap();
        assert_eq!(decoded.policy, SchedulerPolicy::Credit);
        assert_eq!(decoded.credit.ratelimit_us, 250);
        assert_eq!(decoded.vms[0].cap_pct, 25);
        assert_eq!(
            CreditConfig::default(),
            CreditConfig {
                ratelimit_us: 1_000,
                period_us: 30_000
            }
        );
    }

    #[test]
    fn settings_are_checked_against_the_lab_ranges() {
        let credit = SchedulerPolicy::Credit;
        let check = |setting: Setting, policy| setting.check(2, policy);
        assert_eq!(check(Setting::Quantum { us: 1 }, credit), Ok(()));
        assert_eq!(check(Setting::Quantum { us: 1_000_000 }, credit), Ok(()));
        assert_eq!(
            check(Setting::Quantum { us: 0 }, credit),
            Err(SettingError::Quantum { us: 0 })
        );
        assert_eq!(
            check(Setting::Quantum { us: 1_000_001 }, credit),
            Err(SettingError::Quantum { us: 1_000_001 })
        );
        assert_eq!(check(Setting::Weight { vm: 1, weight: 64 }, credit), Ok(()));
        assert_eq!(
            check(Setting::Weight { vm: 1, weight: 65 }, credit),
            Err(SettingError::Weight { weight: 65 })
        );
        assert_eq!(
            check(Setting::Weight { vm: 2, weight: 1 }, credit),
            Err(SettingError::UnknownVm { vm: 2 })
        );
        assert_eq!(
            check(
                Setting::Cap {
                    vm: 0,
                    cap_pct: 100
                },
                credit
            ),
            Ok(())
        );
        assert_eq!(
            check(Setting::Cap { vm: 0, cap_pct: 0 }, credit),
            Err(SettingError::Cap { cap_pct: 0 })
        );
        assert_eq!(
            check(Setting::Cap { vm: 0, cap_pct: 50 }, SchedulerPolicy::Boost),
            Err(SettingError::CapNeedsCredit {
                policy: SchedulerPolicy::Boost
            })
        );
        assert_eq!(
            Setting::Cap { vm: 1, cap_pct: 5 }.to_string(),
            "cap of vm 1 5 %"
        );
        let message = SettingError::Quantum { us: 0 }.to_string();
        assert_eq!(message, "a quantum of 0 us is outside 1..=1000000 us");
        let mut config = RunConfig::new(1000, 0, 7, vec![vm("a")]);
        config.changes.push(ScheduledChange {
            at_us: 2_000_000,
            setting: Setting::Weight { vm: 0, weight: 4 },
        });
        let decoded = RunConfig::from_bytes(&config.to_bytes().unwrap()).unwrap();
        assert_eq!(decoded.changes, config.changes);
    }

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    proptest! {
        #[test]
        fn round_trips(
            quantum in any::<u32>(),
            hz in any::<u64>(),
            names in proptest::collection::vec("[a-z0-9-]{1,12}", 0..17),
            memory in any::<u64>(),
            disk in proptest::option::of("[a-z.]{1,10}"),
            extent in proptest::option::of((any::<u64>(), any::<u64>())),
            args in ".{0,40}",
        ) {
            let vms = names
                .iter()
                .map(|name| VmConfig {
                    name: name.clone(),
                    kernel_module: name.clone() + ".kernel",
                    disk: match (&disk, extent) {
                        (_, Some((start, sectors))) => Some(DiskSource::Drive { start, sectors }),
                        (Some(name), None) => Some(DiskSource::Module { name: name.clone() }),
                        (None, None) => None,
                    },
                    memory_bytes: memory,
                    weight: 3,
                    cap_pct: 25,
                    disk_weight: 5,
                    disk_mib_per_s: 7,
                    args: args.clone(),
                    initial_balloon_pages: 3,
                    balloon_target_pages: 5,
                    lazy_memory: true,
                })
                .collect();
            let mut config = RunConfig::new(quantum, hz, 42, vms);
            config.drive = extent.map(|(run_id, sectors)| DriveConfig { run_id, sectors });
            config.disk = DiskModelConfig {
                latency_us: quantum,
                mib_per_s: 40,
                policy: DiskQueuePolicy::Wfq,
                anticipate_us: 77,
            };
            prop_assert_eq!(RunConfig::from_bytes(&config.to_bytes().unwrap()).unwrap(), config);
        }
    }
}
