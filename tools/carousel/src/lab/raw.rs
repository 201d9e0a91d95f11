//! The lab file as written: its TOML tables, read strictly (an unknown key is an error) with
//! the position of every value, before any rule is checked. [`template`](super::template)
//! makes the `[[vm]]` tables into one per VM, [`parse`](super::parse) checks them, and
//! [`write`](super::write) writes labs in the same form.

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The `[run]` table as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRun {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) quantum_us: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ips: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tsc_hz: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cpu_model: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) timeout_s: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) idle_detection: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) idle_threshold_us: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) interval_us: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) trace: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) policy: Option<Spanned<String>>,
    pub(super) quantum_clock: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) deterministic: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory_sample_ms: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) guest_memory_budget_mib: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) merge_scan_pages: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) compress_after_samples: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) compress_scan_pages: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) compress_pool_mib: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) balloon_when_free_below_pct: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) balloon_step_mib: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) lazy_memory: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) boot_stagger_ms: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disk_backend: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) credit: Option<RawCredit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disk: Option<RawDiskModel>,
    /// `[[run.change]]`: settings changed at set times during the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) change: Vec<Spanned<RawChange>>,
}

/// One `[[run.change]]` table as written: `at_ms`, and one of `quantum_us`, `weight` or
/// `cap_pct` (the last two with `vm`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChange {
    pub(super) at_ms: Spanned<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) vm: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) quantum_us: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) weight: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cap_pct: Option<Spanned<i64>>,
}

/// The `[run.credit]` table as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ratelimit_us: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) period_us: Option<Spanned<i64>>,
}

/// The `[run.disk]` table as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiskModel {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) latency_us: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mib_per_s: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) policy: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) anticipate_us: Option<Spanned<i64>>,
}

/// The `[sweep]` table as written.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) quantum: Option<Spanned<Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) policy: Option<Spanned<Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) weights: Option<Spanned<Vec<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) repeat: Option<Spanned<i64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) workload: Vec<Spanned<RawWorkload>>,
}

/// One `[[sweep.workload]]` table as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) name: Spanned<String>,
    pub(super) vms: Spanned<Vec<String>>,
}

/// One `[[vm]]` table, or the `[vm_defaults]` table, as written. `name`, `kernel` and
/// `memory_mib` are required of a VM, but may come from the defaults (not `name`): the
/// [`template`](super::template) step checks them.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<Spanned<String>>,
    /// Any TOML value, so that a count that is not a whole number gets its own message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) count: Option<Spanned<toml::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) kernel: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) memory_mib: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disk: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) blank_disk_kib: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) persist: Option<Spanned<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) weight: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cap_pct: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disk_weight: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) disk_mib_per_s: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) balloon_mib: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) balloon_target_mib: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) args: Option<Spanned<String>>,
    /// None: no `[[vm.script]]` (a VM takes the defaults' script); `script = []`: none at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) script: Option<Vec<Spanned<RawStep>>>,
}

/// One `[[vm.script]]` table as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) expect: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) send: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) timeout_s: Option<Spanned<i64>>,
    /// The step's name in reports (`{i}` is replaced in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) label: Option<Spanned<String>>,
    /// How many times the step waits and sends (a distribution of durations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) repeat: Option<Spanned<i64>>,
}

/// The whole file as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLab {
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) run: Option<RawRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) vm_defaults: Option<RawVm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) vm: Vec<Spanned<RawVm>>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) sweep: Option<RawSweep>,
}
