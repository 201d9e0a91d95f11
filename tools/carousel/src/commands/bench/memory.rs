//! `carousel bench memory`: what same-page merging saves and costs, and what a balloon round
//! trip costs.
//!
//! [`VMS`] `samepages` VMs of [`VM_MIB`] MiB each fill most of their RAM with 0x01 bytes, as
//! xv6's `kfree` fills every free page, and stamp a little with contents unique to each page.
//! The lab runs twice, merging off and on; the figure is the host memory the guests hold at
//! the end of the run (the hypervisor's `HostMemory` records: guest frames in use, a shared
//! frame counted once). Merging's cost is its root cycles per merged page. A third run has one
//! `balloon` VM time giving a page back and taking it back. Then one VM of [`SAMPLE_VM_MIB`]
//! MiB (xv6's size) fills its RAM with 0x01 pages and reads [`HOT_MIB`] MiB of them over and
//! over, with a working-set sample every [`SAMPLE_MS`] ms. Each sample's `WorkingSet` record
//! says the root cycles it took (the walk, the memory map's cells and the flush): the figure is
//! the last sample's, taken while the guest reads its hot MiB, per MiB it touched, beside the
//! goal of [`SAMPLE_GOAL_CYCLES`] for the sample; the samples during the fill are in the mean.
//!
//! Every VM's RAM is backed when it starts, so the peak is the same either way: merging lowers
//! what the guests hold once it has caught up, not the peak. Booting 16 xv6 VMs of 224 MiB
//! within 1 GiB also needs lazily backed RAM or a staggered boot, which Carousel does not have
//! yet.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use carousel_trace::format::group;
use carousel_trace::model::accounting::Accounting;
use serde::Serialize;

use super::{BenchError, Missing};
use crate::emulator::backend::BackendChoice;
use crate::lab::{Kernel, Lab, Vm};

/// Merging VMs per run.
pub const VMS: u32 = 8;
/// RAM of each, MiB.
pub const VM_MIB: u32 = 32;
/// MiB of 0x01 pages and of unique pages in each.
pub const FILL_MIB: u32 = 24;
pub const UNIQUE_MIB: u32 = 2;
/// Pages merging scans per 10 ms interval.
pub const SCAN_PAGES: u32 = 2_000;
/// TSC frequency of the generated labs.
pub const TSC_HZ: u64 = 100_000_000;
/// The sampled VM: RAM, MiB of it read over and over, sampling period, and the goal for one
/// sample of it (issue: a 224 MiB xv6 that touched 2 MiB since the last sample).
pub const SAMPLE_VM_MIB: u32 = 224;
pub const HOT_MIB: u32 = 2;
pub const SAMPLE_MS: u32 = 100;
pub const SAMPLE_GOAL_CYCLES: u64 = 200_000;
/// The balloon guest's metric for one inflate and deflate, in cycles.
const ROUND_TRIP_METRIC: &str = "balloon_round_trip_cycles";

/// The bench's figures, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryBench {
    pub vms: u32,
    pub vm_mib: u32,
    pub host_mib_merging_off: f64,
    pub host_mib_merging_on: f64,
    pub cycles_per_merged_page: u64,
    pub balloon_round_trip_cycles: u64,
    /// Pages merged, and the root cycles merging took, in the merging run.
    pub merges: u64,
    pub merge_cycles: u64,
    /// The sampled VM's working-set samples: how many, the last one's root cycles and the
    /// pages it found accessed, and the mean and most of all of them.
    pub samples: u64,
    pub last_sample_cycles: u64,
    pub last_sample_pages: u64,
    pub mean_sample_cycles: u64,
    pub max_sample_cycles: u64,
}

/// The merging lab, with merging on or off.
pub fn merge_lab(merging: bool) -> Lab {
    let vms = super::guest_vms("same", "samepages", VMS, VM_MIB, |index| {
        format!("fill_mib={FILL_MIB} unique_mib={UNIQUE_MIB} seed={index} wait_ms=800")
    });
    let mut lab = Lab::new(PathBuf::new(), vms);
    lab.ips = 1_000_000;
    lab.tsc_hz = Some(TSC_HZ);
    lab.timeout_s = 600;
    lab.merge_scan_pages = if merging { SCAN_PAGES } else { 0 };
    lab
}

/// The balloon round-trip lab.
pub fn balloon_lab() -> Lab {
    let mut vm = Vm::new("balloon", Kernel::Builtin("balloon".into()), 16);
    vm.args = "round_trip=1".to_string();
    let mut lab = Lab::new(PathBuf::new(), vec![vm]);
    lab.ips = 1_000_000;
    lab.tsc_hz = Some(100_000_000);
    lab.timeout_s = 120;
    lab
}

/// The sampling lab: one VM of [`SAMPLE_VM_MIB`] MiB reading [`HOT_MIB`] MiB over and over,
/// with working-set samples every [`SAMPLE_MS`] ms.
pub fn sample_lab() -> Lab {
    let vms = super::guest_vms("hot", "samepages", 1, SAMPLE_VM_MIB, |_| {
        format!(
            "fill_mib={} unique_mib=0 hot_mib={HOT_MIB} wait_ms=1000",
            SAMPLE_VM_MIB - 8
        )
    });
    let mut lab = Lab::new(PathBuf::new(), vms);
    lab.ips = 1_000_000;
    lab.tsc_hz = Some(TSC_HZ);
    lab.timeout_s = 600;
    lab.memory_sample_ms = SAMPLE_MS;
    lab
}

/// Runs one generated lab quietly; its accounting.
fn run_lab(
    name: &str,
    lab: Lab,
    comment: &str,
    backend: BackendChoice,
    interrupted: &AtomicBool,
) -> Result<(Accounting, PathBuf), BenchError> {
    super::run_generated_lab(name, lab, comment, backend, None, interrupted)
        .map(|finished| (finished.model.accounting, finished.out))
}

/// A figure a passed run did not send.
fn unmeasured(run: &str, out: &Path, missing: Missing) -> BenchError {
    BenchError::Unmeasured {
        run: run.to_string(),
        missing,
        out: out.to_path_buf(),
    }
}

/// MiB of guest frames in use at the end of a run.
fn host_mib(name: &str, (accounting, out): &(Accounting, PathBuf)) -> Result<f64, BenchError> {
    let pages = accounting
        .host_pages
        .ok_or_else(|| unmeasured(name, out, Missing::HostMemory))?;
    Ok(pages.last as f64 / 256.0)
}

/// Runs the three labs one after another.
pub fn bench_memory(
    backend: BackendChoice,
    interrupted: &AtomicBool,
) -> Result<MemoryBench, BenchError> {
    eprintln!("bench: {VMS} samepages VMs of {VM_MIB} MiB, merging off…");
    let merge_comment = |on: &str| {
        format!("Generated by `carousel bench memory`: {VMS} samepages VMs, merging {on}.")
    };
    let off = run_lab(
        "memory-merging-off",
        merge_lab(false),
        &merge_comment("off"),
        backend,
        interrupted,
    )?;
    eprintln!("bench: the same, merging on…");
    let on = run_lab(
        "memory-merging-on",
        merge_lab(true),
        &merge_comment("on"),
        backend,
        interrupted,
    )?;
    eprintln!("bench: a balloon round trip…");
    let balloon = run_lab(
        "memory-balloon",
        balloon_lab(),
        "Generated by `carousel bench memory`: one balloon round trip.",
        backend,
        interrupted,
    )?;
    eprintln!("bench: one {SAMPLE_VM_MIB} MiB VM reading {HOT_MIB} MiB, working-set samples…");
    let sampled = run_lab(
        "memory-sampling",
        sample_lab(),
        "Generated by `carousel bench memory`: working-set samples of a VM with hot MiB.",
        backend,
        interrupted,
    )?;
    let memory = sampled
        .0
        .vms
        .first()
        .and_then(|vm| vm.memory)
        .filter(|memory| memory.samples > 0)
        .ok_or_else(|| unmeasured("memory-sampling", &sampled.1, Missing::MemorySamples))?;
    let merging =
        on.0.merging
            .ok_or_else(|| unmeasured("memory-merging-on", &on.1, Missing::Merging))?;
    let round_trip = balloon
        .0
        .vms
        .first()
        .and_then(|vm| vm.metric(ROUND_TRIP_METRIC))
        .map(|metric| metric.last)
        .ok_or_else(|| {
            unmeasured(
                "memory-balloon",
                &balloon.1,
                Missing::Metric(ROUND_TRIP_METRIC),
            )
        })?;
    Ok(MemoryBench {
        vms: VMS,
        vm_mib: VM_MIB,
        host_mib_merging_off: host_mib("memory-merging-off", &off)?,
        host_mib_merging_on: host_mib("memory-merging-on", &on)?,
        cycles_per_merged_page: merging.cycles / merging.merges.max(1),
        balloon_round_trip_cycles: round_trip,
        merges: merging.merges,
        merge_cycles: merging.cycles,
        samples: memory.samples,
        last_sample_cycles: memory.last_sample_cycles,
        last_sample_pages: memory.last_accessed,
        mean_sample_cycles: memory.sample_cycles / memory.samples,
        max_sample_cycles: memory.sample_cycles_max,
    })
}

impl MemoryBench {
    pub fn text(&self) -> String {
        format!(
            "carousel bench memory: {} samepages VMs of {} MiB ({} MiB of 0x01 pages each)\n\
             host memory held by the guests at the end: {:.1} MiB merging off, {:.1} MiB merging on\n\
             merging: {} pages merged for {} root cycles = {} cycles per merged page\n\
             balloon: one page given back and taken back in {} cycles\n\
             working-set sample of a {} MiB VM that read {} MiB: the last one found {:.1} MiB \
             touched and took {} cycles (goal <= {}), {} cycles per MiB touched; {} samples, \
             mean {} cycles, most {} (while it filled its RAM)\n",
            self.vms,
            self.vm_mib,
            FILL_MIB,
            self.host_mib_merging_off,
            self.host_mib_merging_on,
            group(self.merges),
            group(self.merge_cycles),
            group(self.cycles_per_merged_page),
            group(self.balloon_round_trip_cycles),
            SAMPLE_VM_MIB,
            HOT_MIB,
            self.last_sample_pages as f64 / 256.0,
            group(self.last_sample_cycles),
            group(SAMPLE_GOAL_CYCLES),
            group(self.last_sample_cycles * 256 / self.last_sample_pages.max(1)),
            self.samples,
            group(self.mean_sample_cycles),
            group(self.max_sample_cycles),
        )
    }
}

/// `carousel bench memory`: runs the bench and prints its figures; returns the exit code.
pub fn memory_command(backend: BackendChoice, json: bool, interrupted: &AtomicBool) -> i32 {
    super::print_result(
        "memory",
        bench_memory(backend, interrupted),
        json,
        MemoryBench::text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_labs_are_valid() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for (name, text, scan) in [
            ("off", merge_lab(false), 0),
            ("on", merge_lab(true), SCAN_PAGES),
        ] {
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text.to_toml(name)).expect("written");
            let lab = crate::lab::Lab::load(&path).expect("a valid lab");
            assert_eq!(lab.merge_scan_pages, scan);
            assert_eq!(lab.vms.len(), VMS as usize);
        }
        let path = dir.path().join("sampling.toml");
        std::fs::write(&path, sample_lab().to_toml("sampling")).expect("written");
        let lab = crate::lab::Lab::load(&path).expect("a valid lab");
        assert_eq!(lab.memory_sample_ms, SAMPLE_MS);
        assert_eq!(lab.vms[0].memory_mib, SAMPLE_VM_MIB);
        let path = dir.path().join("balloon.toml");
        std::fs::write(&path, balloon_lab().to_toml("balloon")).expect("written");
        assert!(crate::lab::Lab::load(&path).is_ok());
    }
}
