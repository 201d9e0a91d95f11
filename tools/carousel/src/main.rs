//! The `carousel` command line; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use carousel::emulator::BackendChoice;
use carousel::session::{RunOptions, EXIT_SETUP};
use carousel::sweep::SweepArgs;
use clap::{Parser, Subcommand};

/// Carousel's host tool: run labs of VMs under the Carousel hypervisor in an emulator.
#[derive(Debug, Parser)]
#[command(name = "carousel", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build and boot a lab file, stream its consoles, report which VMs passed.
    ///
    /// A VM passes when it exits with success (EXIT hypercall) or, if the lab gives it a
    /// console script ([[vm.script]]), when every step matched. The run ends when every VM has
    /// stopped or finished its script. Ctrl-C ends it within a second (the hypervisor is asked
    /// to end the run first, so the accounting still comes); a second Ctrl-C at once.
    ///
    /// Exit codes: 0 all VMs passed, 1 a VM failed (or its script did), 2 bad lab file or
    /// arguments, 3 the hypervisor could not run, 4 timeout, 5 host setup failed (also: a
    /// --persist write-back failed), 130 Ctrl-C.
    #[command(after_help = carousel::session::interactive::HELP)]
    Run {
        /// The lab file (TOML).
        lab: PathBuf,
        /// Emulator: auto = QEMU with KVM if the host has nested VMX, else Bochs. qemu-tcg is
        /// software emulation without VMX; it only shows the hypervisor's no-VMX message and is
        /// used by tests.
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Whole-run limit in seconds (overrides the lab's timeout_s).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: Option<u64>,
        /// Run directory (recreated each run); default <repo>/target/carousel/runs/<lab stem>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Copy each VM's disk back into its image at the end of the run, however it ends (as
        /// `persist = true` on every VM with a disk): the lab's `disk` file itself, replaced
        /// atomically.
        #[arg(long)]
        persist: bool,
        /// Keep the run's record stream in FILE (for `carousel report`).
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        /// No live figures (on a terminal a status line on the bottom row, in a pipe a line
        /// each second).
        #[arg(long)]
        quiet: bool,
        /// Serve the live page while the run goes: every VM's console (type into it) and the
        /// contention charts. ADDR is IP:PORT, IP or PORT; default 127.0.0.1 with a free port.
        /// The URL printed carries the access token. Another address than loopback lets anyone
        /// who can reach it (and has the token) type into the VMs.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0", value_parser = web_addr)]
        web: Option<std::net::SocketAddr>,
    },
    /// The accounting of a finished run from its record stream (a `--trace` file, or a run
    /// directory's com2.bin): text, one JSON object or CSV; per-interval rows with --interval;
    /// also a self-contained HTML page with --html. Damage is named; the rest still counts.
    Report {
        trace: PathBuf,
        #[arg(long, value_enum, default_value_t = carousel::commands::report::Format::Text)]
        format: carousel::commands::report::Format,
        /// Report only this VM (by its lab name).
        #[arg(long, value_name = "NAME")]
        vm: Option<String>,
        /// Per-interval rows instead of the whole-run tables: each VM's running, runnable and
        /// blocked share, switches and exits over every MS milliseconds of TSC time (JSON adds
        /// an `intervals` array to the whole-run object). Needs the trace's scheduler events.
        #[arg(long, value_name = "MS", value_parser = positive_millis)]
        interval: Option<f64>,
        /// Also write the report as one self-contained HTML page (charts, timelines, memory and
        /// disk grids, the tables) to FILE.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// With --format csv: one row per VM and task latency (each timed script step, the
        /// keystroke response) instead of one row per VM.
        #[arg(long, conflicts_with = "settings")]
        latencies: bool,
        /// With --format csv: one row per setting change the hypervisor made or refused (time,
        /// source, setting, reason) instead of one row per VM.
        #[arg(long)]
        settings: bool,
    },
    /// The live page over a finished trace: every chart and console, with a time slider that
    /// scrubs them all to any moment. Consoles come from com1.txt beside the trace (a run
    /// directory's com2.bin) or --com1 FILE. Serves until Ctrl-C; prints the URL (with its
    /// access token).
    View {
        trace: PathBuf,
        /// Where to serve: IP:PORT, IP or PORT; default 127.0.0.1 with a free port.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = web_addr)]
        web: std::net::SocketAddr,
        /// The run's COM1 text (default: com1.txt beside the trace).
        #[arg(long, value_name = "FILE")]
        com1: Option<PathBuf>,
    },
    /// Convert a trace for other tools: `--perfetto FILE` writes Chrome trace-event JSON that
    /// ui.perfetto.dev and chrome://tracing load (a CPU track, a runstate track per VM, exits of
    /// full-rate traces, disk and memory counters).
    Export {
        trace: PathBuf,
        /// Where to write the Chrome trace-event JSON.
        #[arg(long, value_name = "FILE", required = true)]
        perfetto: PathBuf,
        /// Export only this VM (by its lab name).
        #[arg(long, value_name = "NAME")]
        vm: Option<String>,
    },
    /// Run a lab across quanta, policies, weight sets and workloads, each configuration in its
    /// own emulator, several at a time, and compare them.
    ///
    /// Writes DIR/runs/ID/ per run (its artifacts, trace.bin, report.json, result.json) and
    /// DIR/summary.{txt,csv,json,html}: one row per configuration with root-mode overhead,
    /// switches/s, Jain's index, wake latency per class of guest, the guests' own response times
    /// and throughput, and each line's knee. A failed run is recorded with its reason and the
    /// sweep goes on. Axes not given come from the lab's [sweep] table, else the lab itself.
    ///
    /// Exit codes: 0 every run measured, 1 some run failed, 2 bad lab file or arguments, 5 the
    /// build or the directory failed, 130 Ctrl-C.
    #[command(after_help = carousel::sweep::HELP)]
    Sweep(SweepArgs),
    /// Measure the hypervisor (generated labs, figures from its summary records).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Copy each persisting VM's disk from a run directory's shared drive back into its image
    /// (what `carousel run` does at every end; for a run whose tool was killed).
    ///
    /// Exit codes: 0 done, 2 not a run directory with a shared drive, 5 a copy failed (that
    /// image is unchanged).
    Persist {
        /// The run directory (it holds drive.img and disks.json).
        run_dir: PathBuf,
    },
    /// Check this host for the emulators and tools Carousel needs.
    Doctor,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Scheduling across quanta (500 to 10,000 µs, 8 spin VMs each): switch cost, quantum
    /// error, Jain's fairness index and root-mode overhead, beside their goals.
    ///
    /// Exit codes: 0 every run measured; otherwise that of the first run that failed, as for
    /// `run` (3 also when the hypervisor sent no summary records).
    Sched {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Emulator (as for `run`); the figures are Bochs' unless told otherwise.
        #[arg(long, value_enum, default_value_t = BackendChoice::Bochs)]
        backend: BackendChoice,
        /// Emulators run at a time (1 on a machine shared with other work).
        #[arg(long, default_value_t = carousel::commands::bench::PARALLEL_RUNS as u16,
              value_parser = clap::value_parser!(u16).range(1..=16))]
        jobs: u16,
    },
    /// What exporting costs the guests: 4 spin VMs at each trace level (off, aggregate,
    /// switches, full), their iterations against `off` (goal: at most 1% at the default).
    Export {
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Emulator (as for `run`).
        #[arg(long, value_enum, default_value_t = BackendChoice::Bochs)]
        backend: BackendChoice,
    },
    /// What same-page merging saves and costs (8 VMs filling their RAM as xv6 does, merging
    /// off and on), and a balloon round trip.
    Memory {
        /// Print one JSON object instead of the lines.
        #[arg(long)]
        json: bool,
        /// Emulator (as for `run`).
        #[arg(long, value_enum, default_value_t = BackendChoice::Bochs)]
        backend: BackendChoice,
    },
    /// What the shared disk's queue does to contending VMs: interrupt-driven diskio VMs alone
    /// and four at once, untimed and before a 1 ms device under FIFO and WFQ (weights 1:2:4:8);
    /// throughput, Jain's index, queue waits, the drive's root cycles a sector against memory's.
    Disk {
        /// Print one JSON object instead of the lines.
        #[arg(long)]
        json: bool,
        /// Emulator (as for `run`).
        #[arg(long, value_enum, default_value_t = BackendChoice::Bochs)]
        backend: BackendChoice,
    },
    /// How fast a trace becomes a report: decodes and reports a synthetic ~100 MB trace and
    /// prints MB/s (goal: at least 100).
    Decode {
        /// Print one JSON object (with `mb_per_s`) instead of a line.
        #[arg(long)]
        json: bool,
    },
    /// What the live page sustains: a synthetic 16-VM trace fed through the run's feed and hub
    /// to one headless Chromium; records per second (goal: twice the run's rate) and bytes sent
    /// per record (goal: at most twice the trace's own).
    Web {
        /// Print one JSON object instead of the lines.
        #[arg(long)]
        json: bool,
    },
    /// What Carousel costs a real xv6, in cycles (Bochs: about 10 minutes): boot from `main` to
    /// the shell's first console read under Carousel against the same xv6 booted natively in
    /// the same Bochs (goal: at most 1.2×), and `usertests` beside three idle xv6 against
    /// alone, idle detection off and on (goal: at most 1.3× with it on). Under QEMU (about 3
    /// minutes) every figure is host time, in cycles and seconds, and boot is counted from
    /// xv6's first console line to `init: starting sh`.
    ///
    /// The native boot uses xv6.img, the boot disk xv6's Makefile builds next to the kernel.
    Xv6 {
        /// xv6's `kernel` (with its symbol table, as xv6's Makefile leaves it).
        #[arg(long)]
        kernel: PathBuf,
        /// xv6's `fs.img` (never written: each run gets copies).
        #[arg(long)]
        disk: PathBuf,
        /// The native boot disk; default: xv6.img next to the kernel.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Print one JSON object (boot_ratio, usertests_ratio_idle_off,
        /// usertests_ratio_idle_on and the cycle counts) instead of the lines.
        #[arg(long)]
        json: bool,
        /// Emulator: Bochs counts instructions (repeatable); under QEMU every figure is host
        /// time, boot counted between two console lines.
        #[arg(long, value_enum, default_value_t = BackendChoice::Bochs)]
        backend: BackendChoice,
    },
}

/// `--interval MS`: a finite number of milliseconds above 0.
fn web_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    carousel::web::parse_addr(text)
}

fn positive_millis(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err(format!("{text:?} is not a number of milliseconds above 0")),
    }
}

/// Routes Ctrl-C into `flag`; false (after saying why) when that is impossible.
fn catch_interrupt(flag: &Arc<AtomicBool>) -> bool {
    match carousel::session::interrupt::catch(flag) {
        Ok(()) => true,
        Err(error) => {
            eprintln!("carousel: cannot catch Ctrl-C: {error}");
            false
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Doctor => {
            let (report, code) = carousel::commands::doctor::doctor();
            println!("{report}");
            code
        }
        Command::Run {
            lab,
            backend,
            timeout,
            out,
            persist,
            trace,
            quiet,
            web,
        } => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            let options = RunOptions {
                lab,
                backend,
                timeout_s: timeout,
                out,
                persist,
                trace,
                bochs_debugger: None,
                web,
            };
            match carousel::commands::run::run(&options, quiet, &interrupted) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("carousel: {error}");
                    error.exit_code()
                }
            }
        }
        Command::Persist { run_dir } => carousel::commands::persist::persist_command(&run_dir),
        Command::Sweep(args) => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            carousel::sweep::sweep_command(&args, &interrupted)
        }
        Command::Report {
            trace,
            format,
            vm,
            interval,
            html,
            latencies,
            settings,
        } => {
            let options = carousel::commands::report::ReportOptions {
                format,
                vm: vm.as_deref(),
                interval_ms: interval,
                html: html.as_deref(),
                latencies,
                settings,
            };
            carousel::commands::report::report_command(&trace, &options)
        }
        Command::View { trace, web, com1 } => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            let options = carousel::commands::view::ViewOptions {
                trace,
                com1,
                addr: web,
            };
            carousel::commands::view::view_command(&options, &interrupted)
        }
        Command::Export {
            trace,
            perfetto,
            vm,
        } => carousel::commands::export::export_command(&trace, &perfetto, vm.as_deref()),
        Command::Bench {
            bench: Bench::Decode { json },
        } => carousel::commands::bench::decode::decode_command(json),
        Command::Bench {
            bench: Bench::Web { json },
        } => carousel::commands::bench::web::web_command(json),
        Command::Bench {
            bench:
                Bench::Xv6 {
                    kernel,
                    disk,
                    image,
                    json,
                    backend,
                },
        } => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            let files = carousel::commands::bench::xv6::Xv6Files::new(kernel, disk, image);
            carousel::commands::bench::xv6::xv6_command(&files, backend, json, &interrupted)
        }
        Command::Bench {
            bench:
                Bench::Sched {
                    json,
                    backend,
                    jobs,
                },
        } => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            carousel::commands::bench::sched::sched_command(
                backend,
                json,
                usize::from(jobs),
                &interrupted,
            )
        }
        Command::Bench {
            bench: Bench::Memory { json, backend },
        } => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            carousel::commands::bench::memory::memory_command(backend, json, &interrupted)
        }
        Command::Bench {
            bench: Bench::Disk { json, backend },
        } => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            carousel::commands::bench::disk::disk_command(backend, json, &interrupted)
        }
        Command::Bench {
            bench: Bench::Export { json, backend },
        } => {
            let interrupted = Arc::new(AtomicBool::new(false));
            if !catch_interrupt(&interrupted) {
                return ExitCode::from(EXIT_SETUP as u8);
            }
            carousel::commands::bench::export::export_command(backend, json, &interrupted)
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}
