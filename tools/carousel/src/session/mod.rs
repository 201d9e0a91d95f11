//! `carousel run`: validate the lab, build, make the ISO, start the emulator, stream COM1 to the
//! terminal and decode COM2 as they grow, type the scripted and the user's console input, end
//! the run, persist disks, and decide the outcome.

//!
//! What is here: the run's options and errors, its directory, and [`execute`]: validate, build,
//! make the shared drive and the ISO, start the emulator, run the loop ([`stream`]), persist
//! disks from the drive however the run ended ([`persist`]) and decide the outcome. The run's phases, from building to its end, are a
//! state machine ([`phase`]); Ctrl-C reaches it through [`interrupt`]. The loop's pieces: COM1
//! lines ([`lines`]), console scripts and the focus protocol ([`script`]), typed input
//! ([`interactive`]), the live figures' status line ([`status`]).

pub mod interactive;
pub mod interrupt;
pub mod lines;
pub mod persist;
pub mod phase;
pub mod script;
pub mod status;
pub mod stream;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use carousel_protocol::record::{Record, TraceLevel};
use carousel_trace::model::accounting::Accounting;
use carousel_trace::model::steps::{time_steps, StepsFile, STEPS_FILE};
use carousel_trace::model::Model;
use carousel_trace::verdict::{self, Ending, Outcome, RunFacts, Verdict};

use self::phase::Phase;
use self::stream::RunFiles;
use crate::emulator::backend::{self, Backend, BackendChoice, EmulatorMemory};
use crate::emulator::com1::{self, Com1, ConnectError};
use crate::emulator::Emulator;
use crate::image::build::{self, BuildError};
use crate::image::drive;
use crate::image::iso::{self, IsoError, VmFiles};
use crate::lab::{Disk, Kernel, Lab, LabError};

pub use self::stream::Console;

/// File in a run directory that marks it as the tool's, so it may be cleared on the next run.
pub const RUN_DIR_MARKER: &str = ".carousel-run";

/// Exit code of a lab or command-line problem (nothing was started).
pub const EXIT_USAGE: i32 = 2;
/// Exit code when the host could not set the run up (build, ISO, emulator missing or failing
/// to start).
pub const EXIT_SETUP: i32 = 5;

/// The `run` command's options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub lab: PathBuf,
    pub backend: BackendChoice,
    /// Overrides the lab's `timeout_s`.
    pub timeout_s: Option<u64>,
    /// Run directory; default `<repo>/target/carousel/runs/<lab stem>`.
    pub out: Option<PathBuf>,
    /// `--persist`: every VM with a disk persists (as `persist = true` in the lab).
    pub persist: bool,
    /// `--trace FILE`: keep the run's record stream there (for `carousel report`).
    pub trace: Option<PathBuf>,
    /// Commands for Bochs' debugger in place of [`backend::CONT_RC`] (`carousel bench xv6`
    /// stops at breakpoints to read the tick count). Bochs only.
    pub bochs_debugger: Option<String>,
    /// `--web [ADDR]`: serve the live page on ADDR while the run goes.
    pub web: Option<std::net::SocketAddr>,
}

impl RunOptions {
    /// A run the tool makes for itself (benches, sweeps): lab `lab` on `backend` into `out`,
    /// with the lab's timeout, no write-back, no trace copy and Bochs running at once.
    pub fn generated(lab: PathBuf, backend: BackendChoice, out: PathBuf) -> Self {
        RunOptions {
            lab,
            backend,
            timeout_s: None,
            out: Some(out),
            persist: false,
            trace: None,
            bochs_debugger: None,
            web: None,
        }
    }
}

/// Why a run could not get as far as a verdict.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Lab(#[from] LabError),
    #[error("{0}")]
    OutDir(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("ISO not built: {0}")]
    Iso(#[from] IsoError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("interrupted (Ctrl-C) before the emulator started")]
    Interrupted,
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Lab(_) | RunError::OutDir(_) => EXIT_USAGE,
            RunError::Unavailable(_)
            | RunError::Build(_)
            | RunError::Iso(_)
            | RunError::Io { .. } => EXIT_SETUP,
            RunError::Interrupted => Verdict::Interrupted.exit_code(),
        }
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// The run-directory file the record stream lands in: COM2's, or for a full-rate trace the
/// emulator's debug-port output.
pub fn record_stream_file(backend: Backend, lab: &Lab) -> &'static str {
    match lab.trace {
        TraceLevel::Full => backend.e9_file(),
        TraceLevel::Off | TraceLevel::Aggregate | TraceLevel::Switches => "com2.bin",
    }
}

/// The default run directory of `lab`.
pub fn default_out_dir(root: &Path, lab: &Lab) -> PathBuf {
    root.join("target/carousel/runs").join(lab.stem())
}

/// Makes `dir` an empty run directory. An existing directory is cleared only when it is
/// empty or was made by this tool (it holds [`RUN_DIR_MARKER`]): `--out` never wipes a user's
/// directory.
pub fn prepare_out_dir(dir: &Path) -> Result<(), RunError> {
    prepare_marked_dir(
        dir,
        RUN_DIR_MARKER,
        "a carousel run directory",
        "made by `carousel run`; cleared by the next run\n",
    )
}

/// Makes `dir` an empty directory of the tool's, marked with the file `marker` (holding
/// `note`). An existing directory is cleared only when it is empty or holds `marker`; otherwise
/// the error says it is not `what`.
pub fn prepare_marked_dir(
    dir: &Path,
    marker: &str,
    what: &str,
    note: &str,
) -> Result<(), RunError> {
    if dir.exists() {
        let empty = fs::read_dir(dir)
            .map_err(io_error(format!("cannot read {}", dir.display())))?
            .next()
            .is_none();
        if !empty && !dir.join(marker).is_file() {
            return Err(RunError::OutDir(format!(
                "refusing to clear {}: it is not empty and not {what} (no {marker}); pick \
                 another --out",
                dir.display()
            )));
        }
        fs::remove_dir_all(dir).map_err(io_error(format!("cannot clear {}", dir.display())))?;
    }
    fs::create_dir_all(dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    fs::write(dir.join(marker), note)
        .map_err(io_error(format!("cannot write in {}", dir.display())))?;
    Ok(())
}

/// `path` made absolute against the current directory.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|dir| dir.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// What a finished run left behind.
#[derive(Debug)]
pub struct Finished {
    pub lab: Lab,
    pub backend: Backend,
    /// The run directory (absolute).
    pub out: PathBuf,
    /// Every record decoded from COM2, in arrival order.
    pub records: Vec<Record>,
    /// The model of the run: everything the records say.
    pub model: Model,
    /// How the run ended.
    pub ending: Ending,
    /// The verdict and one row per VM.
    pub outcome: Outcome,
    /// Problems with the COM2 stream (corrupt frames, gaps, a truncated frame) and with its
    /// Hello record, one sentence each.
    pub stream_warnings: Vec<String>,
    /// What became of each persisting VM's disk, one sentence each.
    pub persisted: Vec<String>,
    /// True when a write-back was due and failed (the image is unchanged).
    pub persist_failed: bool,
}

impl Finished {
    /// The accounting the records carry (the hypervisor's summaries and the guests' metrics),
    /// with the lab's weights.
    pub fn accounting(&self) -> &Accounting {
        &self.model.accounting
    }
}

/// Runs a lab to its end: validate, build, make the ISO, run the emulator, decode COM2 and
/// decide. With [`Console::Quiet`] nothing is printed; the records and the outcome come back
/// either way.
pub fn execute(
    options: &RunOptions,
    console: Console,
    interrupted: &AtomicBool,
) -> Result<Finished, RunError> {
    let lab = Lab::load(&options.lab)?;
    execute_lab(lab, options, console, interrupted)
}

/// [`execute`] for a lab already loaded (and perhaps changed: `carousel sweep` runs a lab's
/// configurations this way); `options.lab` is not read again.
pub fn execute_lab(
    lab: Lab,
    options: &RunOptions,
    console: Console,
    interrupted: &AtomicBool,
) -> Result<Finished, RunError> {
    let say = |text: String| {
        if console.prints() {
            println!("{text}");
        }
    };
    let timeout_s = options.timeout_s.unwrap_or(lab.timeout_s);
    let auto = options.backend == backend::BackendChoice::Auto;
    let backend = match backend::resolve_here(options.backend) {
        // KVM cannot count instructions; QEMU's software emulation can.
        Backend::QemuKvm if auto && lab.deterministic => Backend::QemuSvm,
        backend => backend,
    };
    if auto {
        let why = match lab.deterministic {
            true => "run.deterministic: instruction-counted".to_string(),
            false => backend::auto_reason(),
        };
        say(format!("backend: {backend} ({why})"));
    }
    if let Some(problem) = backend::unavailable(backend) {
        return Err(RunError::Unavailable(problem));
    }
    if let Some(problem) = lab
        .deterministic
        .then(|| backend::deterministic_problem(backend))
        .flatten()
    {
        return Err(RunError::Unavailable(problem));
    }
    // With `disk_backend = "memory"` the disks sit in the emulator's RAM beside the VMs'.
    let needed_mib = lab.guest_memory_mib() + lab.memory_disk_mib();
    let memory = EmulatorMemory::for_guests(needed_mib).ok_or_else(|| {
        RunError::Unavailable(format!(
            "the VMs' {needed_mib} MiB (RAM and disks in memory) do not fit in the emulator"
        ))
    })?;
    let root = crate::repo::repo_root();
    let out = absolute(
        &options
            .out
            .clone()
            .unwrap_or_else(|| default_out_dir(&root, &lab)),
    );
    if backend == Backend::Bochs {
        if let Some(problem) = backend::bochsrc_path_problem(&out) {
            return Err(RunError::OutDir(problem));
        }
    }
    prepare_out_dir(&out)?;

    // The web page, from the start: it can be opened while the hypervisor builds.
    let web = match options.web {
        Some(addr) => Some(start_web(addr, &lab)?),
        None => None,
    };

    // Build.
    let guests = lab.builtin_guests();
    say(format!(
        "building the hypervisor{}…",
        if guests.is_empty() {
            ""
        } else {
            " and the guests"
        }
    ));
    let built =
        build::build_unless_interrupted(&root, &build::target_dir(&root), &guests, interrupted)
            .map_err(|error| match error {
                BuildError::Interrupted => RunError::Interrupted,
                error => RunError::Build(error),
            })?;
    // Until the emulator runs ([`Phase::Building`]) Ctrl-C ends the run at once: cargo and
    // grub-mkrescue are killed as the flag is set, and each step looks at it.
    if interrupted.load(Ordering::SeqCst) {
        return Err(RunError::Interrupted);
    }

    // The shared drive (every VM's disk an extent of it), or, with `disk_backend = "memory"`,
    // blank disks as files to travel in the ISO.
    let drive = lab.drive_manifest(&out, drive::fresh_run_id(), options.persist);
    if let Some((manifest, sources)) = &drive {
        drive::build(&out.join(drive::DRIVE_FILE), manifest, sources)
            .map_err(|error| RunError::Unavailable(format!("the shared drive: {error}")))?;
    } else {
        for vm in &lab.vms {
            if let Some(Disk::Blank { kib }) = vm.disk {
                let path = crate::lab::blank_disk_path(&out, &vm.name);
                fs::write(&path, crate::image::disk::blank_image(kib))
                    .map_err(io_error(format!("cannot write {}", path.display())))?;
            }
        }
    }
    let manifest = drive.as_ref().map(|(manifest, _)| manifest);

    // Boot image.
    let mut run_config = lab.run_config(backend.tsc_hz(&lab), manifest);
    run_config.idle_threshold_us = backend.idle_threshold_us(&lab);
    let run_config = run_config.to_bytes().map_err(|error| {
        RunError::Unavailable(format!("cannot encode the run configuration: {error}"))
    })?;
    let vm_files: Vec<VmFiles> = lab
        .vms
        .iter()
        .map(|vm| VmFiles {
            kernel: match &vm.kernel {
                Kernel::Builtin(name) => built.guest(name),
                Kernel::File(path) => path.clone(),
            },
            disk: vm
                .disk
                .as_ref()
                .filter(|_| manifest.is_none())
                .map(|disk| disk.path(&out, &vm.name)),
        })
        .collect();
    let staging = out.join("iso-root");
    let iso_path = out.join("carousel.iso");
    iso::stage(&staging, &built.kernel, &run_config, &vm_files)?;
    let took = iso::mkrescue(&staging, &iso_path, interrupted).map_err(|error| match error {
        IsoError::Interrupted => RunError::Interrupted,
        error => RunError::Iso(error),
    })?;
    say(format!("iso built in {:.1} s", took.as_secs_f64()));
    if interrupted.load(Ordering::SeqCst) {
        return Err(RunError::Interrupted);
    }

    // Emulator.
    let debugger = options
        .bochs_debugger
        .as_deref()
        .unwrap_or(backend::CONT_RC);
    let drive_path = manifest.map(|_| out.join(drive::DRIVE_FILE));
    let (mut emulator, link) = start_emulator(
        backend,
        &lab,
        memory,
        &out,
        backend::Media {
            iso: &iso_path,
            drive: drive_path.as_deref(),
            deterministic: lab.deterministic,
        },
        debugger,
        interrupted,
    )?;
    let (phase, _) = Phase::Building.next(
        phase::Event::EmulatorStarted {
            timeout: Duration::from_secs(timeout_s),
        },
        Instant::now(),
    );
    say(format!(
        "running {} VM{} on {backend} (timeout {timeout_s} s); artifacts in {}",
        lab.vms.len(),
        if lab.vms.len() == 1 { "" } else { "s" },
        out.display()
    ));

    let (ending, received) = stream::stream(
        &lab,
        &RunFiles {
            com1: out.join("com1.txt"),
            records: out.join(record_stream_file(backend, &lab)),
        },
        &mut emulator,
        link,
        phase,
        interrupted,
        console,
        web.as_ref().map(|web| web.link()),
    );

    // Disks (the emulator is gone: nothing writes the drive any more), then the verdict.
    let mut model = received.model.finish();
    if received.scripts.any() {
        let matches = StepsFile {
            vms: (0..lab.vms.len())
                .map(|vm| received.scripts.matches(vm).to_vec())
                .collect(),
        };
        let file = out.join(STEPS_FILE);
        let text = serde_json::to_string(&matches).expect("matches serialize");
        if let Err(error) = fs::write(&file, text) {
            say(format!("warning: cannot write {}: {error}", file.display()));
        }
        match time_steps(&matches.vms, &model.console, &model.keys) {
            Ok(steps) => model.steps = Some(steps),
            Err(problem) => say(format!("warning: script steps are not timed: {problem}")),
        }
    }
    let (persisted, persist_failed) = persist::persist_disks(&out, manifest);
    let names: Vec<String> = lab.vms.iter().map(|vm| vm.name.clone()).collect();
    let scripts = received.scripts.results();
    let decided = verdict::decide(&RunFacts {
        vm_names: &names,
        inputs: model.verdict.clone(),
        error_line: received.watch.error_line.as_deref(),
        panic_line: received.watch.panic_line.as_deref(),
        ending,
        timeout_s,
        scripts: &scripts,
    });
    if let Some(web) = web {
        web.finish(&decided);
    }
    Ok(Finished {
        lab,
        backend,
        out,
        records: received.records,
        model,
        ending,
        outcome: decided,
        stream_warnings: received.warnings,
        persisted,
        persist_failed,
    })
}

/// The live page of a run: its server and what the session feeds it.
#[derive(Debug)]
struct Web {
    server: crate::web::Server,
    hub: std::sync::Arc<crate::web::hub::Hub>,
    controls: std::sync::Mutex<Option<std::sync::mpsc::Receiver<crate::web::hub::Control>>>,
}

/// How long the page may take to receive the end of the run before the tool exits.
const WEB_LINGER: Duration = Duration::from_secs(2);

impl Web {
    /// What the run loop feeds and reads (once).
    fn link(&self) -> stream::WebLink {
        stream::WebLink {
            hub: self.hub.clone(),
            controls: self
                .controls
                .lock()
                .ok()
                .and_then(|mut controls| controls.take()),
        }
    }

    /// Tells the page how the run ended, and gives it a moment to get it all.
    fn finish(self, outcome: &Outcome) {
        for line in carousel_trace::render::outcome::table(outcome).lines() {
            self.hub
                .console(None, &carousel_trace::escape::console_line(line), None);
        }
        self.hub
            .status(&carousel_trace::render::outcome::result_line(outcome), true);
        self.server.linger(WEB_LINGER);
    }
}

/// Starts the live page's server on `addr` and says where it is.
fn start_web(addr: std::net::SocketAddr, lab: &Lab) -> Result<Web, RunError> {
    let names: Vec<String> = lab
        .vms
        .iter()
        .map(|vm| carousel_trace::escape::name(&vm.name))
        .collect();
    let (hub, controls) = crate::web::hub::Hub::new(
        crate::web::hub::Mode::Live,
        &names,
        crate::web::hub::Limits::LIVE,
    );
    let server = crate::web::Server::start(addr, hub.clone())
        .map_err(io_error(format!("cannot serve the web page on {addr}")))?;
    if let Some(warning) = crate::web::exposure_warning(server.addr()) {
        eprintln!("{warning}");
    }
    // The URL is printed even with a quiet console: without it the page cannot be opened.
    println!("[carousel] web page: {}", server.url());
    hub.status("building", false);
    Ok(Web {
        server,
        hub,
        controls: std::sync::Mutex::new(Some(controls)),
    })
}

/// Starts the emulator with COM1 served on a free local port and connects to it, trying
/// another port when the emulator finds its port taken. Without a connection (the emulator
/// exited first) the run loop sees the exit and the failure hints say why. Bochs' debugger
/// reads `debugger` (its commands) at start.
fn start_emulator(
    backend: Backend,
    lab: &Lab,
    memory: EmulatorMemory,
    out: &Path,
    media: backend::Media<'_>,
    debugger: &str,
    interrupted: &AtomicBool,
) -> Result<(Emulator, Option<Com1>), RunError> {
    let bochsrc = out.join("bochsrc");
    let cont_rc = out.join("cont.rc");
    let com1_file = out.join("com1.txt");
    for attempt in 1..=com1::PORT_ATTEMPTS {
        let port = com1::free_port().map_err(io_error("cannot find a free local port for COM1"))?;
        if backend == Backend::Bochs {
            let text = backend::bochsrc(&backend::BochsConfig {
                memory,
                cpu_model: &lab.cpu_model,
                ips: lab.ips,
                out,
                iso: media.iso,
                drive: media.drive,
                com1_port: port,
            });
            fs::write(&bochsrc, text)
                .map_err(io_error(format!("cannot write {}", bochsrc.display())))?;
            fs::write(&cont_rc, debugger)
                .map_err(io_error(format!("cannot write {}", cont_rc.display())))?;
        }
        let launch = backend::launch(backend, memory, media, out, &bochsrc, &cont_rc, port);
        let output = out.join(launch.output);
        let mut emulator = Emulator::spawn(launch.program, &launch.args, &launch.env, &output)
            .map_err(io_error(format!("cannot start {}", launch.program)))?;
        let logs = [output, out.join(backend.log_file())];
        match com1::connect(port, &com1_file, &mut emulator, &logs, interrupted) {
            Ok(link) => return Ok((emulator, Some(link))),
            Err(ConnectError::PortTaken { .. }) if attempt < com1::PORT_ATTEMPTS => continue,
            Err(ConnectError::EmulatorExited { .. }) => return Ok((emulator, None)),
            Err(ConnectError::Interrupted) => return Err(RunError::Interrupted),
            Err(
                error @ (ConnectError::PortTaken { .. }
                | ConnectError::TimedOut { .. }
                | ConnectError::File { .. }),
            ) => return Err(RunError::Unavailable(format!("COM1: {error}"))),
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_dir_is_fresh_and_never_wipes_foreign_directories() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("runs/lab");
        prepare_out_dir(&out).unwrap();
        fs::write(out.join("com1.txt"), b"old").unwrap();
        prepare_out_dir(&out).unwrap();
        assert!(!out.join("com1.txt").exists());
        assert!(out.join(RUN_DIR_MARKER).is_file());

        // An empty directory (e.g. a fresh tempdir) is fine.
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        prepare_out_dir(&empty).unwrap();

        // Someone's directory with files in it is not.
        let mine = dir.path().join("mine");
        fs::create_dir(&mine).unwrap();
        fs::write(mine.join("thesis.tex"), b"precious").unwrap();
        let error = prepare_out_dir(&mine).unwrap_err();
        assert_eq!(error.exit_code(), EXIT_USAGE);
        assert!(mine.join("thesis.tex").is_file());
    }
}
