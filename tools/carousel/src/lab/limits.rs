//! The limits and defaults of a lab file: every range a value must lie in, and what a key
//! that is left out stands for. Nothing here depends on the rest of the tool.

use std::ops::RangeInclusive;

use carousel_protocol::config;

/// Scheduler quantum when the lab file gives none, in microseconds.
pub const DEFAULT_QUANTUM_US: u32 = 1000;
/// Bochs instructions per emulated second when the lab file gives none.
pub const DEFAULT_IPS: u64 = 1_000_000;
/// Bochs CPU model when the lab file gives none (BOCHS.md: has every VMX feature Bochs offers).
pub const DEFAULT_CPU_MODEL: &str = "corei7_skylake_x";
/// Whole-run limit when the lab file gives none, in seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 120;
/// Scheduling weight of a VM whose table gives none.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Idle detection's threshold when the lab file turns it on without one, in microseconds
/// (Bochs and KVM).
pub const DEFAULT_IDLE_THRESHOLD_US: u32 = 100;
/// The same under QEMU's TCG (AMD SVM): TCG emulates each VMRUN and #VMEXIT, and that time
/// shows as the guest's (tens of µs a round trip), so 100 µs in the idle address space is a
/// few round trips, and xv6's scheduler was called idle with work waiting. Measured with
/// `ci/labs/xv6-usertests.example.toml` (usertests beside three idle xv6): usertests took
/// 133.9 s at 100 µs (blocked 72 % of the run on its timer), 52.9 s at 300 µs, 59.2 s at
/// 1,000 µs (the idle VMs ran more).
pub const TCG_IDLE_THRESHOLD_US: u32 = 300;

/// Allowed scheduler quanta, in microseconds: the hypervisor's own range (it checks a change
/// made during the run against the same one).
pub const QUANTUM_US_RANGE: RangeInclusive<i64> = wide(config::QUANTUM_US_RANGE);
/// Allowed instructions per emulated second.
pub const IPS_RANGE: RangeInclusive<i64> = 1_000..=2_000_000_000;
/// Allowed `run.tsc_hz` (1 kHz to 10 GHz).
pub const TSC_HZ_RANGE: RangeInclusive<i64> = 1_000..=10_000_000_000;
/// Allowed whole-run limits, in seconds (one day at most).
pub const TIMEOUT_S_RANGE: RangeInclusive<i64> = 1..=86_400;
/// Allowed guest RAM per VM, in MiB.
pub const MEMORY_MIB_RANGE: RangeInclusive<i64> = 2..=3072;
/// Allowed scheduling weights (the hypervisor's range).
pub const WEIGHT_RANGE: RangeInclusive<i64> = wide(config::WEIGHT_RANGE);
/// `vm.cap_pct`: a cap of 1 % to 100 % of the CPU (leave the key out for none; the
/// hypervisor's range).
pub const CAP_PCT_RANGE: RangeInclusive<i64> = wide(config::CAP_PCT_RANGE);
/// `run.disk.latency_us`: the shared disk's time per request (the hypervisor's range).
pub const DISK_LATENCY_US_RANGE: RangeInclusive<i64> = wide(config::DISK_LATENCY_US_RANGE);
/// `run.disk.mib_per_s` and `vm.disk_mib_per_s` (0: unlimited; the hypervisor's range).
pub const DISK_MIB_PER_S_RANGE: RangeInclusive<i64> = wide(config::DISK_MIB_PER_S_RANGE);
/// `run.disk.anticipate_us` (the hypervisor's range).
pub const DISK_ANTICIPATE_US_RANGE: RangeInclusive<i64> = wide(config::DISK_ANTICIPATE_US_RANGE);
/// `run.change[K].at_ms`: up to a day into the run.
pub const CHANGE_AT_MS_RANGE: RangeInclusive<i64> = 0..=86_400_000;

/// A range of the run configuration's as the lab's integers.
const fn wide(range: RangeInclusive<u32>) -> RangeInclusive<i64> {
    (*range.start() as i64)..=(*range.end() as i64)
}
/// `run.credit.ratelimit_us`: up to a second.
pub const CREDIT_RATELIMIT_US_RANGE: RangeInclusive<i64> = 0..=1_000_000;
/// `run.credit.period_us`: 100 µs to 10 s.
pub const CREDIT_PERIOD_US_RANGE: RangeInclusive<i64> = 100..=10_000_000;
/// Allowed idle-detection thresholds, in microseconds.
pub const IDLE_THRESHOLD_US_RANGE: RangeInclusive<i64> = 1..=100_000;
/// Largest disk of one VM, in bytes: what the guest's 28-bit LBA addresses (128 GiB).
pub const DISK_MAX_BYTES: u64 = (1 << 28) * 512;
/// Allowed sizes of a blank disk, in KiB: up to [`DISK_MAX_BYTES`].
pub const BLANK_DISK_KIB_RANGE: RangeInclusive<i64> = 1..=(DISK_MAX_BYTES / 1024) as i64;
/// Largest shared drive a run may have (every VM's disk together, each aligned to a MiB), in
/// GiB. Bochs 2.7 takes a flat image this size (tested with 130 GiB); 64 VMs of 4 GiB fit.
pub const DRIVE_MAX_GIB: u64 = 512;
/// Allowed script step timeouts, in seconds.
pub const STEP_TIMEOUT_S_RANGE: RangeInclusive<i64> = 1..=86_400;
/// `vm.script[].repeat`.
pub const STEP_REPEAT_RANGE: RangeInclusive<i64> = 1..=10_000;
/// Allowed number of VMs in one lab.
/// Allowed `run.interval_us` (metrics interval, microseconds of TSC time).
pub const INTERVAL_US_RANGE: RangeInclusive<i64> = 100..=10_000_000;
/// Allowed `run.memory_sample_ms` (0: no working-set samples).
pub const MEMORY_SAMPLE_MS_RANGE: RangeInclusive<i64> = 0..=60_000;
/// Allowed `run.merge_scan_pages` (0: no same-page merging).
pub const MERGE_SCAN_PAGES_RANGE: RangeInclusive<i64> = 0..=1_000_000;
/// Allowed `run.compress_after_samples` (0: no compression).
pub const COMPRESS_AFTER_SAMPLES_RANGE: RangeInclusive<i64> = 0..=1_000;
/// Allowed `run.compress_scan_pages` (pages each pass looks at, per VM).
pub const COMPRESS_SCAN_PAGES_RANGE: RangeInclusive<i64> = 1..=1_000_000;
/// `run.compress_scan_pages` when the lab does not say: a 224 MiB xv6 in 14 passes.
pub const DEFAULT_COMPRESS_SCAN_PAGES: i64 = 4_096;
/// Allowed `run.compress_pool_mib` (host memory for LZ4 blobs; pattern pages need none).
pub const COMPRESS_POOL_MIB_RANGE: RangeInclusive<i64> = 0..=65_536;
/// `run.compress_pool_mib` when the lab does not say.
pub const DEFAULT_COMPRESS_POOL_MIB: i64 = 64;
/// Allowed number of VMs in a lab.
pub const VM_COUNT_RANGE: RangeInclusive<usize> = 1..=64;
/// Longest VM name, in bytes.
pub const NAME_MAX: usize = 32;
/// Longest guest command line, in bytes.
pub const ARGS_MAX: usize = 1024;
/// Memory the hypervisor itself keeps for its code, heap and VMX structures, in MiB.
pub const HYPERVISOR_MIB: u64 = 64;
/// Most emulated RAM a run may need (guests plus [`HYPERVISOR_MIB`]), in MiB: Bochs'
/// `memory: guest=4096` leaves about 3 GiB of RAM below 4 GiB (BOCHS.md), minus headroom.
pub const MAX_TOTAL_MIB: u64 = 2900;

/// Carousel's built-in guests (binaries of the `carousel-guests` package), by name.
pub const BUILTIN_GUESTS: &[&str] = &[
    "hello",
    "spin",
    "sleepy",
    "devcheck",
    "diskio",
    "interactive",
    "keyecho",
    "balloon",
    "samepages",
];

/// Bochs CPU models with the VMX features Carousel needs (BOCHS.md, "What this Bochs build
/// offers").
pub const CPU_MODELS: &[&str] = &[
    "corei7_sandy_bridge_2600k",
    "corei7_ivy_bridge_3770k",
    "corei7_haswell_4770",
    "broadwell_ult",
    "corei7_skylake_x",
    "corei3_cnl",
    "corei7_icelake_u",
    "tigerlake",
    "corei5_arrandale_m520",
];
