//! Why a benchmark gave no figures: one error type for every bench, each variant a fact the
//! caller can act on, and the exit code that goes with it.

use std::path::PathBuf;

use carousel_trace::verdict::Verdict;

use crate::emulator::breakpoints::SymbolError;
use crate::session::{self, RunError};

/// Why a benchmark gave no figures. `run` names the generated run (its lab, or the quantum)
/// the error is about.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The run could not be carried out (lab, image, emulator, or an interrupt).
    #[error("{run}: {source}")]
    Run { run: String, source: Box<RunError> },
    /// The run ended, but did not pass.
    #[error("{run}: the run did not pass ({}); see {}", problems.join("; "), out.display())]
    Failed {
        run: String,
        verdict: Verdict,
        problems: Vec<String>,
        out: PathBuf,
    },
    /// The run passed, but a figure the bench needs is not in what it sent.
    #[error("{run}: {missing}; see {}", out.display())]
    Unmeasured {
        run: String,
        missing: Missing,
        out: PathBuf,
    },
    /// The user stopped the bench before this run began.
    #[error("{run}: interrupted")]
    Interrupted { run: String },
    #[error("{0}")]
    Build(#[from] crate::image::build::BuildError),
    /// A file or directory the bench reads or writes.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The xv6 files given to `bench xv6` are not what it needs.
    #[error("{what} {}: {problem}", path.display())]
    Input {
        what: &'static str,
        path: PathBuf,
        problem: InputProblem,
    },
    /// A native (hypervisor-less) emulator run that did not get where it had to.
    #[error("{problem}; see {}", out.display())]
    Native { problem: String, out: PathBuf },
}

/// What is wrong with an input file of a bench.
#[derive(Debug, thiserror::Error)]
pub enum InputProblem {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("no such file")]
    Missing,
    #[error("{0}; xv6's `make` builds xv6.img next to kernel, or pass --image")]
    NoImage(std::io::Error),
    #[error("{0}")]
    Symbol(SymbolError),
    #[error("it has no symbol `{0}` (is it an xv6 kernel?)")]
    NotXv6(&'static str),
    #[error("it has no boot sector (no 0x55 0xAA at byte 510)")]
    NoBootSector,
    #[error(
        "it does not hold this kernel from sector 1 (rebuild it with `make xv6.img`, or pass \
         the --image built with this kernel)"
    )]
    OtherKernel,
}

/// A figure a bench needs that a passed run did not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    #[error("the hypervisor sent no RunSummary")]
    RunSummary,
    #[error("VmSummary records arrived for {arrived} of {expected} VMs")]
    VmSummaries { arrived: usize, expected: usize },
    #[error("no VM was preempted")]
    Preemption,
    #[error("no VM got any guest cycles")]
    GuestCycles,
    #[error("the run's elapsed time is 0")]
    Elapsed,
    #[error("a spin VM printed no count")]
    SpinCount,
    #[error("no HostMemory records")]
    HostMemory,
    #[error("no Merging records")]
    Merging,
    #[error("no working-set samples")]
    MemorySamples,
    #[error("the guest reported no `{0}` metric")]
    Metric(&'static str),
    #[error("no timed console line says {0:?}")]
    Line(&'static str),
    #[error("the console lines could not be timed: {0}")]
    Timing(String),
    #[error(
        "Bochs' debugger did not stop at both `{from_name}` ({from:#x}) and `{to_name}` ({to:#x}) \
         ({stops} stops)"
    )]
    Breakpoints {
        from_name: &'static str,
        from: u64,
        to_name: &'static str,
        to: u64,
        stops: usize,
    },
}

impl BenchError {
    /// A file error at `path`.
    pub fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BenchError {
        let path = path.into();
        move |source| BenchError::File { path, source }
    }

    /// The process exit code: the failed run's, 3 when the hypervisor sent no usable figures,
    /// 130 for an interrupt, 5 for host trouble.
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Run { source, .. } => source.exit_code(),
            BenchError::Failed { verdict, .. } => verdict.exit_code(),
            BenchError::Unmeasured { .. } | BenchError::Native { .. } => {
                Verdict::HypervisorFailed.exit_code()
            }
            BenchError::Interrupted { .. } => RunError::Interrupted.exit_code(),
            BenchError::Input { .. } => session::EXIT_USAGE,
            BenchError::Build(_) | BenchError::File { .. } | BenchError::Spawn { .. } => {
                session::EXIT_SETUP
            }
        }
    }
}
