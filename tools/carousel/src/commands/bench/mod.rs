//! `carousel bench …`: the seven benchmarks ([`sched`], [`export`], [`memory`], [`disk`],
//! [`decode`], [`xv6`], [`web`]) and what they share: running a generated lab quietly, several at a time, and
//! printing a result as text or one JSON object.

pub mod decode;
pub mod disk;
pub mod error;
pub mod export;
pub mod memory;
pub mod sched;
pub mod web;
pub mod xv6;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use carousel_trace::verdict::Verdict;
use serde::Serialize;

pub use error::{BenchError, InputProblem, Missing};

use crate::emulator::BackendChoice;
use crate::lab::{Kernel, Lab, Vm};
use crate::session::{self, Console, RunOptions};

/// Labs run side by side (Bochs uses one host core each).
pub const PARALLEL_RUNS: usize = 2;

/// `count` VMs `NAME0`, `NAME1`, … running the built-in guest `guest` in `memory_mib` MiB
/// each, with the command line `args(index)`.
pub fn guest_vms(
    name: &str,
    guest: &str,
    count: u32,
    memory_mib: u32,
    args: impl Fn(u32) -> String,
) -> Vec<Vm> {
    (0..count)
        .map(|index| {
            let mut vm = Vm::new(
                &format!("{name}{index}"),
                Kernel::Builtin(guest.to_string()),
                memory_mib,
            );
            vm.args = args(index);
            vm
        })
        .collect()
}

/// Runs a lab a bench generated (written, `comment` in its first line, as
/// `target/carousel/bench/NAME.toml`) quietly in `target/carousel/bench/NAME`, Bochs' debugger
/// reading `debugger` if given; the finished run, or why it did not pass.
pub fn run_generated_lab(
    name: &str,
    lab: Lab,
    comment: &str,
    backend: BackendChoice,
    debugger: Option<String>,
    interrupted: &AtomicBool,
) -> Result<session::Finished, BenchError> {
    let finished =
        run_generated_lab_to_its_end(name, lab, comment, backend, debugger, interrupted)?;
    if finished.outcome.verdict != Verdict::Passed {
        return Err(BenchError::Failed {
            run: name.to_string(),
            verdict: finished.outcome.verdict,
            problems: finished.outcome.problems.clone(),
            out: finished.out.clone(),
        });
    }
    Ok(finished)
}

/// [`run_generated_lab`], whatever its verdict: for a bench whose figure is how far a run got
/// (VMs that stop for want of host frames are part of what it measures).
pub fn run_generated_lab_to_its_end(
    name: &str,
    mut lab: Lab,
    comment: &str,
    backend: BackendChoice,
    debugger: Option<String>,
    interrupted: &AtomicBool,
) -> Result<session::Finished, BenchError> {
    let dir = crate::repo::repo_root().join("target/carousel/bench");
    std::fs::create_dir_all(&dir).map_err(BenchError::file(&dir))?;
    lab.path = dir.join(format!("{name}.toml"));
    lab.save(comment).map_err(BenchError::file(&lab.path))?;
    let out = dir.join(name);
    let options = RunOptions {
        bochs_debugger: debugger,
        ..RunOptions::generated(lab.path.clone(), backend, out.clone())
    };
    session::execute_lab(lab, &options, Console::Quiet, interrupted).map_err(|source| {
        BenchError::Run {
            run: name.to_string(),
            source: Box::new(source),
        }
    })
}

/// How a bench's header says where the TSC frequency came from.
pub fn tsc_said(source: carousel_protocol::record::TscSource) -> &'static str {
    use carousel_protocol::record::TscSource;
    match source {
        TscSource::LabFile => "the lab's, one cycle per instruction",
        TscSource::Pit => "measured against the PIT: cycles are host time",
        TscSource::Cpuid => "from CPUID: cycles are host time",
    }
}

/// Prints a bench's result (one JSON object, or its text) and returns the exit code.
pub fn print_result<T: Serialize>(
    bench: &str,
    result: Result<T, BenchError>,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> i32 {
    match result {
        Ok(report) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("numbers and strings serialise")
            );
            0
        }
        Ok(report) => {
            println!("{}", text(&report).trim_end());
            0
        }
        Err(error) => {
            eprintln!("carousel bench {bench}: {error}");
            error.exit_code()
        }
    }
}

/// Runs `run` on each of `jobs`, [`PARALLEL_RUNS`] at a time, taking them in order; the
/// results in the jobs' places, `None` for jobs not started because of an interrupt.
pub fn run_parallel<J: Sync, R: Send>(
    jobs: &[J],
    interrupted: &AtomicBool,
    run: impl Fn(&J) -> R + Sync,
) -> Vec<Option<R>> {
    run_parallel_by(jobs, PARALLEL_RUNS, interrupted, run)
}

/// [`run_parallel`] with `workers` runs at a time (at least one).
pub fn run_parallel_by<J: Sync, R: Send>(
    jobs: &[J],
    workers: usize,
    interrupted: &AtomicBool,
    run: impl Fn(&J) -> R + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(jobs.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(index) else { break };
                if interrupted.load(Ordering::SeqCst) {
                    break;
                }
                let result = run(job);
                results.lock().unwrap_or_else(|poison| poison.into_inner())[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_runs_put_each_result_in_its_place() {
        let jobs: Vec<u64> = (0..9).collect();
        let ran = AtomicUsize::new(0);
        let results = run_parallel(&jobs, &AtomicBool::new(false), |&job| {
            ran.fetch_add(1, Ordering::SeqCst);
            // Uneven lengths, so the two workers finish out of order.
            std::thread::sleep(std::time::Duration::from_millis(job % 3 * 5));
            job * job
        });
        assert_eq!(ran.load(Ordering::SeqCst), jobs.len());
        let squares: Vec<Option<u64>> = jobs.iter().map(|job| Some(job * job)).collect();
        assert_eq!(results, squares);

        // One worker takes them strictly in order.
        let order = Mutex::new(Vec::new());
        let serial = run_parallel_by(&jobs, 0, &AtomicBool::new(false), |&job| {
            order.lock().unwrap().push(job);
            job
        });
        assert_eq!(serial.len(), jobs.len());
        assert_eq!(order.into_inner().unwrap(), jobs);

        let stopped = AtomicBool::new(true);
        let none = run_parallel(&jobs, &stopped, |&job| job);
        assert!(none.iter().all(Option::is_none));
    }
}
