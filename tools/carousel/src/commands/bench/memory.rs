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
//! what the guests hold once it has caught up, not the peak.
//!
//! Last, the scale runs: [`KFREE_COUNTS`] VMs of [`KFREE_VM_MIB`] MiB (xv6's size), lazily
//! backed, each filling its RAM exactly as xv6's `kfree` leaves it (0x01 pages, the next page's
//! address in each first word: no two alike), then writing and checking every 16th page. Each count runs with
//! merging alone, compression alone and both; the figures are the peak and final host frames
//! (against the goal of [`KFREE_GOAL_MIB`] MiB at peak for 32) and compression's root cycles
//! per compressed and per decompressed page.

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
/// The scale runs: VMs of this many MiB, this many of them, and the goal for the peak.
pub const KFREE_VM_MIB: u32 = 224;
pub const KFREE_COUNTS: [u32; 2] = [16, 32];
pub const KFREE_GOAL_MIB: f64 = 1024.0;
/// The scale runs' working-set period and compression settings.
pub const KFREE_SAMPLE_MS: u32 = 20;
pub const KFREE_AFTER_SAMPLES: u16 = 2;
pub const KFREE_SCAN_PAGES: u32 = 16_384;
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
    /// The scale runs, each count with merging alone, compression alone and both.
    pub scale: Vec<ScaleRun>,
}

/// What reclaims memory in a scale run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reclaim {
    Merging,
    Compression,
    Both,
}

impl Reclaim {
    pub const ALL: [Self; 3] = [Self::Merging, Self::Compression, Self::Both];

    /// The run's name in `target/carousel/runs`.
    fn slug(self) -> &'static str {
        match self {
            Self::Merging => "merging",
            Self::Compression => "compression",
            Self::Both => "both",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Merging => "merging alone",
            Self::Compression => "compression alone",
            Self::Both => "merging and compression",
        }
    }
}

/// One scale run's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaleRun {
    pub vms: u32,
    pub reclaim: Reclaim,
    pub peak_mib: f64,
    pub final_mib: f64,
    pub compressed: u64,
    pub decompressed: u64,
    pub cycles_per_compressed_page: u64,
    pub cycles_per_decompressed_page: u64,
    pub merges: u64,
    /// VMs that did not pass (a VM that finds no host frame stops), and the first reason.
    pub failed_vms: usize,
    pub first_problem: Option<String>,
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
            // One page checked and one written after the wait: the last samples are the
            // steady state's (a full read-back would touch 216 MiB in them).
            "fill_mib={} unique_mib=0 hot_mib={HOT_MIB} wait_ms=1000 check_stride=100000 \
             write_stride=100000",
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

/// A scale run's lab: `vms` kfree-pattern VMs of [`KFREE_VM_MIB`] MiB, lazily backed.
pub fn kfree_lab(vms: u32, reclaim: Reclaim) -> Lab {
    let vms = super::guest_vms("kfree", "samepages", vms, KFREE_VM_MIB, |_| {
        format!(
            "fill_mib={} unique_mib=0 kfree=1 wait_ms=500 settle_ms=500 check_stride=16",
            KFREE_VM_MIB - 8
        )
    });
    let mut lab = Lab::new(PathBuf::new(), vms);
    lab.ips = 1_000_000;
    // A 1 GHz TSC, as the xv6 labs have: a 20 ms sample period is 20 M instructions.
    lab.tsc_hz = Some(1_000_000_000);
    lab.timeout_s = 3_600;
    lab.lazy_memory = true;
    lab.memory_sample_ms = KFREE_SAMPLE_MS;
    if reclaim != Reclaim::Compression {
        lab.merge_scan_pages = SCAN_PAGES;
    }
    if reclaim != Reclaim::Merging {
        lab.compression.after_samples = KFREE_AFTER_SAMPLES;
        lab.compression.scan_pages = KFREE_SCAN_PAGES;
    }
    lab
}

/// One scale run's figures from its accounting.
fn scale_figures(
    vms: u32,
    reclaim: Reclaim,
    name: &str,
    run: &(Accounting, PathBuf),
    problems: &[String],
) -> Result<ScaleRun, BenchError> {
    let pages = run
        .0
        .host_pages
        .ok_or_else(|| unmeasured(name, &run.1, Missing::HostMemory))?;
    let compression = run.0.compression.unwrap_or_default();
    Ok(ScaleRun {
        vms,
        reclaim,
        peak_mib: pages.peak as f64 / 256.0,
        final_mib: pages.last as f64 / 256.0,
        compressed: compression.compressed,
        decompressed: compression.decompressed,
        cycles_per_compressed_page: compression.cycles / compression.compressed.max(1),
        cycles_per_decompressed_page: compression.decompress_cycles
            / compression.decompressed.max(1),
        merges: run.0.merging.map_or(0, |merging| merging.merges),
        failed_vms: problems.len(),
        first_problem: problems.first().cloned(),
    })
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
    let mut scale = Vec::new();
    for vms in KFREE_COUNTS {
        for reclaim in Reclaim::ALL {
            eprintln!(
                "bench: {vms} kfree-pattern VMs of {KFREE_VM_MIB} MiB, {}…",
                reclaim.name()
            );
            let name = format!("memory-kfree{vms}-{}", reclaim.slug());
            let finished = super::run_generated_lab_to_its_end(
                &name,
                kfree_lab(vms, reclaim),
                &format!(
                    "Generated by `carousel bench memory`: {vms} kfree-pattern VMs, {}.",
                    reclaim.name()
                ),
                backend,
                None,
                interrupted,
            )?;
            let problems = finished.outcome.problems.clone();
            let run = (finished.model.accounting, finished.out);
            scale.push(scale_figures(vms, reclaim, &name, &run, &problems)?);
        }
    }
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
        scale,
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
        ) + &self.scale_text()
    }

    fn scale_text(&self) -> String {
        let mut out = String::new();
        for run in &self.scale {
            let goal = if run.vms == 32 {
                format!(
                    " (goal <= {KFREE_GOAL_MIB:.0} MiB: {})",
                    if run.peak_mib <= KFREE_GOAL_MIB {
                        "met"
                    } else {
                        "not met"
                    }
                )
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{} kfree-pattern VMs of {KFREE_VM_MIB} MiB ({} MiB promised), {}: host frames \
                 peak {:.1} MiB{goal}, final {:.1} MiB",
                run.vms,
                run.vms * KFREE_VM_MIB,
                run.reclaim.name(),
                run.peak_mib,
                run.final_mib,
            ));
            if run.reclaim != Reclaim::Merging {
                out.push_str(&format!(
                    "; {} pages compressed at {} cycles each, {} decompressed at {} cycles each",
                    group(run.compressed),
                    group(run.cycles_per_compressed_page),
                    group(run.decompressed),
                    group(run.cycles_per_decompressed_page),
                ));
            }
            if run.reclaim != Reclaim::Compression {
                out.push_str(&format!("; {} merges", group(run.merges)));
            }
            if let Some(problem) = &run.first_problem {
                out.push_str(&format!(
                    "; did not pass ({} problems), the first: {problem}",
                    run.failed_vms
                ));
            }
            out.push('\n');
        }
        out
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
        for reclaim in Reclaim::ALL {
            let path = dir.path().join("kfree.toml");
            std::fs::write(&path, kfree_lab(32, reclaim).to_toml("kfree")).expect("written");
            let lab = crate::lab::Lab::load(&path).expect("a valid lab");
            assert_eq!(lab.vms.len(), 32);
            assert!(lab.lazy_memory && lab.memory_sample_ms > 0);
            assert_eq!(lab.merge_scan_pages > 0, reclaim != Reclaim::Compression);
            assert_eq!(
                lab.compression.after_samples > 0,
                reclaim != Reclaim::Merging
            );
        }
        let path = dir.path().join("balloon.toml");
        std::fs::write(&path, balloon_lab().to_toml("balloon")).expect("written");
        assert!(crate::lab::Lab::load(&path).is_ok());
    }
}
