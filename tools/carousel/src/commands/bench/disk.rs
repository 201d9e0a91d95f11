//! `carousel bench disk`: what the shared disk's queue does to VMs that contend for it.
//!
//! Interrupt-driven `diskio` VMs (`irq=1`: each command waits halted for its interrupt, as
//! xv6's driver does), always waiting for their disk (no sleep between bursts), for
//! [`RUN_MS`] of TSC time each run:
//! - one VM alone, untimed (the drive's own speed), and the same with its disk in memory: root
//!   cycles per sector in I/O exits, the shared drive's against memory's (goal: at most 1.5×);
//! - four VMs, untimed, then before a device of [`LATENCY_US`] a request under FIFO: each
//!   VM's throughput, Jain's index across the four, and the queue wait p50/p99;
//! - four VMs of disk weights 1, 2, 4 and 8 under WFQ, same device, anticipating
//!   [`ANTICIPATE_US`]: each VM's share of the requests against 1/15, 2/15, 4/15 and 8/15 (goal:
//!   each within 5 %).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use carousel_protocol::config::{DiskModelConfig, DiskQueuePolicy};
use carousel_trace::format::group;
use carousel_trace::model::accounting::Accounting;
use serde::Serialize;

use super::{BenchError, Missing};
use crate::emulator::backend::BackendChoice;
use crate::lab::definition::DiskBackend;
use crate::lab::{Disk, Lab};

/// TSC frequency of the generated labs.
pub const TSC_HZ: u64 = 50_000_000;
/// How long each VM moves sectors, ms of TSC time.
pub const RUN_MS: u32 = 1_500;
/// The timed device's service time per request (one sector), µs.
pub const LATENCY_US: u32 = 1_000;
/// The WFQ run's disk weights.
pub const WEIGHTS: [u32; 4] = [1, 2, 4, 8];
/// A share within this fraction of its ideal meets the goal.
pub const SHARE_TOLERANCE: f64 = 0.05;
/// The drive against memory, root cycles per sector: at most this ratio.
pub const DRIVE_RATIO_GOAL: f64 = 1.5;
/// The `IO_INSTRUCTION` basic exit reason.
const IO_INSTRUCTION: u16 = 30;

/// One VM's figures in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskVm {
    pub name: String,
    pub sectors: u64,
    pub sectors_per_s: f64,
    /// Queue wait p50/p99, cycles (timed runs only).
    pub wait_p50: Option<u64>,
    pub wait_p99: Option<u64>,
}

/// One run's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskRun {
    pub name: String,
    pub vms: Vec<DiskVm>,
    pub jain: Option<f64>,
    /// Root cycles in I/O exits per sector moved.
    pub root_cycles_per_sector: f64,
}

/// The bench's figures, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskBench {
    pub runs: Vec<DiskRun>,
    pub drive_over_memory: f64,
    pub drive_ratio_goal: f64,
    /// The WFQ run's share of each VM, and its ideal.
    pub wfq_shares: Vec<(f64, f64)>,
    pub shares_within_goal: bool,
}

/// A lab of `count` diskio VMs with `weights` (or weight 1), the given disk model.
pub fn lab(count: u32, model: DiskModelConfig, weights: Option<[u32; 4]>, memory: bool) -> Lab {
    let mut vms = super::guest_vms("d", "diskio", count, 4, |_| {
        format!("disk_sectors=2048 ms={RUN_MS} batch=1 wait_us=0 irq=1 report_ms=100")
    });
    for (index, vm) in vms.iter_mut().enumerate() {
        vm.disk = Some(Disk::Blank { kib: 1024 });
        if let Some(weights) = weights {
            vm.disk_weight = weights[index % weights.len()];
        }
    }
    let mut lab = Lab::new(PathBuf::new(), vms);
    lab.quantum_us = 1_000;
    lab.ips = 1_000_000;
    lab.tsc_hz = Some(TSC_HZ);
    lab.timeout_s = 600;
    lab.disk_model = model;
    if memory {
        lab.disk_backend = DiskBackend::Memory;
    }
    lab
}

/// The WFQ run's anticipation window, µs (the lab key's default is off).
pub const ANTICIPATE_US: u32 = 1_000;

/// The timed device under `policy` (anticipating [`ANTICIPATE_US`] under WFQ).
fn timed(policy: DiskQueuePolicy) -> DiskModelConfig {
    DiskModelConfig {
        latency_us: LATENCY_US,
        mib_per_s: 0,
        policy,
        anticipate_us: if policy == DiskQueuePolicy::Wfq {
            ANTICIPATE_US
        } else {
            0
        },
    }
}

/// One run's figures from its accounting.
fn figures(
    name: &str,
    accounting: &Accounting,
    out: &std::path::Path,
) -> Result<DiskRun, BenchError> {
    let seconds = f64::from(RUN_MS) / 1_000.0;
    let mut vms = Vec::new();
    let mut io_cycles = 0u128;
    for vm in &accounting.vms {
        let sectors = vm
            .metric("sectors")
            .map(|metric| metric.last)
            .ok_or_else(|| BenchError::Unmeasured {
                run: name.to_string(),
                missing: Missing::Metric("sectors"),
                out: out.to_path_buf(),
            })?;
        io_cycles += vm
            .exits
            .get(&IO_INSTRUCTION)
            .map_or(0, |totals| totals.cycles);
        vms.push(DiskVm {
            name: vm.name.clone(),
            sectors,
            sectors_per_s: sectors as f64 / seconds,
            wait_p50: vm.disk_queue.map(|queue| queue.wait_p50),
            wait_p99: vm.disk_queue.map(|queue| queue.wait_p99),
        });
    }
    let moved: u64 = vms.iter().map(|vm| vm.sectors).sum();
    let rates: Vec<f64> = vms.iter().map(|vm| vm.sectors_per_s).collect();
    let jain = (rates.len() > 1).then(|| {
        let sum: f64 = rates.iter().sum();
        let squares: f64 = rates.iter().map(|rate| rate * rate).sum();
        sum * sum / (rates.len() as f64 * squares.max(f64::MIN_POSITIVE))
    });
    Ok(DiskRun {
        name: name.to_string(),
        vms,
        jain,
        root_cycles_per_sector: io_cycles as f64 / moved.max(1) as f64,
    })
}

/// Runs the five labs, two at a time where they are independent.
pub fn bench_disk(
    backend: BackendChoice,
    interrupted: &AtomicBool,
) -> Result<DiskBench, BenchError> {
    let untimed = DiskModelConfig::default();
    let plan = [
        ("disk-alone-drive", lab(1, untimed, None, false)),
        ("disk-alone-memory", lab(1, untimed, None, true)),
        ("disk-four-untimed", lab(4, untimed, None, false)),
        (
            "disk-four-fifo",
            lab(4, timed(DiskQueuePolicy::Fifo), None, false),
        ),
        (
            "disk-four-wfq",
            lab(4, timed(DiskQueuePolicy::Wfq), Some(WEIGHTS), false),
        ),
    ];
    let mut runs = Vec::new();
    for (name, lab) in plan {
        eprintln!("bench: {name}…");
        let finished = super::run_generated_lab(
            name,
            lab,
            &format!("Generated by `carousel bench disk`: {name}."),
            backend,
            None,
            interrupted,
        )?;
        runs.push(figures(name, &finished.model.accounting, &finished.out)?);
    }
    let drive_over_memory =
        runs[0].root_cycles_per_sector / runs[1].root_cycles_per_sector.max(1.0);
    let wfq = &runs[4];
    let total: u64 = wfq.vms.iter().map(|vm| vm.sectors).sum();
    let weight_sum: u32 = WEIGHTS.iter().sum();
    let wfq_shares: Vec<(f64, f64)> = wfq
        .vms
        .iter()
        .zip(WEIGHTS)
        .map(|(vm, weight)| {
            (
                vm.sectors as f64 / total.max(1) as f64,
                f64::from(weight) / f64::from(weight_sum),
            )
        })
        .collect();
    let shares_within_goal = wfq_shares
        .iter()
        .all(|(share, ideal)| (share / ideal - 1.0).abs() <= SHARE_TOLERANCE);
    Ok(DiskBench {
        runs,
        drive_over_memory,
        drive_ratio_goal: DRIVE_RATIO_GOAL,
        wfq_shares,
        shares_within_goal,
    })
}

impl DiskBench {
    pub fn text(&self) -> String {
        let mut out = format!(
            "carousel bench disk: interrupt-driven diskio VMs, always waiting, {RUN_MS} ms each; \
             timed device: {LATENCY_US} us a request\n"
        );
        let us = |cycles: Option<u64>| {
            cycles.map_or("-".to_string(), |cycles| {
                format!("{:.0}", cycles as f64 * 1e6 / TSC_HZ as f64)
            })
        };
        for run in &self.runs {
            out.push_str(&format!(
                "{}: {:.0} root cycles a sector in I/O exits{}\n",
                run.name,
                run.root_cycles_per_sector,
                run.jain
                    .map_or(String::new(), |jain| format!(", Jain {jain:.4}")),
            ));
            for vm in &run.vms {
                out.push_str(&format!(
                    "  {:<4} {:>8} sectors  {:>9.0} sectors/s  wait p50/p99 {}/{} us\n",
                    vm.name,
                    group(vm.sectors),
                    vm.sectors_per_s,
                    us(vm.wait_p50),
                    us(vm.wait_p99),
                ));
            }
        }
        out.push_str(&format!(
            "shared drive against memory: {:.2}x the root cycles a sector (goal: at most {:.1}x)\n",
            self.drive_over_memory, self.drive_ratio_goal
        ));
        let shares: Vec<String> = self
            .wfq_shares
            .iter()
            .map(|(share, ideal)| format!("{:.1} % (ideal {:.1} %)", share * 100.0, ideal * 100.0))
            .collect();
        out.push_str(&format!(
            "wfq shares, weights 1:2:4:8: {} - {} (goal: each within {:.0} %)\n",
            shares.join(", "),
            if self.shares_within_goal {
                "met"
            } else {
                "NOT met"
            },
            SHARE_TOLERANCE * 100.0
        ));
        out
    }
}

/// `carousel bench disk`: runs the bench and prints its figures; returns the exit code.
pub fn disk_command(backend: BackendChoice, json: bool, interrupted: &AtomicBool) -> i32 {
    super::print_result(
        "disk",
        bench_disk(backend, interrupted),
        json,
        DiskBench::text,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_labs_are_valid() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let wfq = lab(4, timed(DiskQueuePolicy::Wfq), Some(WEIGHTS), false);
        let path = dir.path().join("wfq.toml");
        std::fs::write(&path, wfq.to_toml("wfq")).expect("written");
        let read = crate::lab::Lab::load(&path).expect("a valid lab");
        assert_eq!(read.disk_model, timed(DiskQueuePolicy::Wfq));
        let weights: Vec<u32> = read.vms.iter().map(|vm| vm.disk_weight).collect();
        assert_eq!(weights, WEIGHTS);
        let memory = lab(1, DiskModelConfig::default(), None, true);
        let path = dir.path().join("memory.toml");
        std::fs::write(&path, memory.to_toml("memory")).expect("written");
        assert_eq!(
            crate::lab::Lab::load(&path).expect("valid").disk_backend,
            DiskBackend::Memory
        );
    }
}
