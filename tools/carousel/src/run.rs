//! `carousel run`: validate the lab, build, make the ISO, start the emulator, stream COM1 to the
//! terminal and decode COM2 as they grow, type the scripted and the user's console input, end
//! the run, write back persisted disk sectors, and decide the outcome.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use carousel_protocol::record::{Record, TraceLevel};
use carousel_protocol::wire::{decode_all, encode_vec, Decoded, Decoder};
use carousel_protocol::FORMAT_VERSION;

use crate::backend::{self, Backend, BackendChoice, EmulatorMemory};
use crate::build::{self, BuildError};
use crate::com1::{self, Com1, ConnectError};
use crate::interactive::{self, Command};
use crate::iso::{self, IsoError, VmFiles};
use crate::lab::{Disk, Kernel, Lab, LabError};
use crate::script::{Event, FocusWriter, Scripts};
use carousel_trace::accounting::Accounting;
use carousel_trace::live::LiveSummary;
use carousel_trace::outcome::{
    self, Ending, Outcome, RunFacts, Verdict, ERROR_PREFIX, PANIC_PREFIX,
};

/// How often the run loop looks at the COM files and the emulator.
pub const POLL: Duration = Duration::from_millis(50);
/// How long the emulator may take to exit by itself after the RunEnd record.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long the hypervisor may keep writing after a fatal COM1 line (an error before Hello, or
/// a panic) before the tool ends the run.
pub const FATAL_GRACE: Duration = Duration::from_secs(2);
/// Once every VM has stopped or finished its script, how long the tool waits for the run to
/// end by itself (the VMs still running may stop, their last records arrive) before it ends
/// the emulator.
pub const SCRIPT_GRACE: Duration = Duration::from_secs(1);
/// How long the hypervisor gets to end the run in order once asked (it may be sending back
/// persisted disk sectors) before the tool ends the emulator itself.
pub const END_RUN_GRACE: Duration = Duration::from_secs(60);
/// At the timeout the hypervisor is asked to end the run, so that the report still comes (and
/// the log says where each VM stood); this long, before the tool ends the emulator itself.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(15);
/// File in a run directory that marks it as the tool's, so it may be cleared on the next run.
pub const RUN_DIR_MARKER: &str = ".carousel-run";
/// A COM1 "line" longer than this is passed on in pieces.
pub const LINE_MAX: usize = 64 * 1024;

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

/// Splits a byte stream into lines: `\n` ends a line, a `\r` before it is dropped, invalid
/// UTF-8 becomes U+FFFD.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`, returning the lines they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                lines.push(Self::text(&std::mem::take(&mut self.partial)));
            } else {
                self.partial.push(byte);
                if self.partial.len() >= LINE_MAX {
                    lines.push(Self::text(&std::mem::take(&mut self.partial)));
                }
            }
        }
        lines
    }

    /// The unterminated rest, if any (at the end of the stream).
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            None
        } else {
            Some(Self::text(&std::mem::take(&mut self.partial)))
        }
    }

    fn text(bytes: &[u8]) -> String {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Reads what a file gained since the last call (the emulator appends to it).
#[derive(Debug)]
struct Tail {
    path: PathBuf,
    file: Option<File>,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Self { path, file: None }
    }

    fn read_new(&mut self) -> Vec<u8> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(_) => return Vec::new(),
            }
        }
        let mut bytes = Vec::new();
        if let Some(file) = &mut self.file {
            // The emulator truncates the file when it (re)starts, e.g. after a port clash: read
            // again from the start rather than wait past the old end forever.
            let position = file.stream_position().unwrap_or(0);
            if file.metadata().is_ok_and(|meta| meta.len() < position) {
                let _ = file.seek(SeekFrom::Start(0));
            }
            // A read error leaves what was read; the next poll tries again.
            let _ = file.read_to_end(&mut bytes);
        }
        bytes
    }
}

/// What the run loop learns from COM1.
#[derive(Debug, Default)]
pub struct Com1Watch {
    pub error_line: Option<String>,
    pub panic_line: Option<String>,
}

impl Com1Watch {
    /// Looks at one line; true when it is fatal (an error before Hello, or a panic).
    pub fn observe(&mut self, line: &str, hello_seen: bool) -> bool {
        if line.starts_with(PANIC_PREFIX) {
            self.panic_line.get_or_insert_with(|| line.to_string());
            return true;
        }
        if line.starts_with(ERROR_PREFIX) {
            self.error_line.get_or_insert_with(|| line.to_string());
            return !hello_seen;
        }
        false
    }
}

/// How much of a run reaches the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Progress, every COM1 line and every stream warning as they happen (`carousel run`).
    Live,
    /// Nothing: the caller gets the records, the outcome and the warnings (`carousel bench`).
    /// COM1 is still in the run directory's `com1.txt`.
    Quiet,
}

/// Everything received from the hypervisor during a run.
#[derive(Debug)]
struct Received {
    console: Console,
    /// VM names by id, to tell a VM's console lines (`[name] text`) apart.
    names: Vec<String>,
    /// The VMs' console scripts, fed with their lines.
    scripts: Scripts,
    /// What the scripts did since the run loop last looked.
    script_events: Vec<Event>,
    /// Which VMs have a VmStopped record.
    stopped: Vec<bool>,
    lines: LineSplitter,
    watch: Com1Watch,
    decoder: Decoder,
    /// The records come through the emulator's debug port (a full-rate trace), whose file
    /// also holds the emulator's own text: what is not a frame there is skipped silently.
    debug_port: bool,
    /// The once-a-second summary of what the records say.
    live: LiveSummary,
    records: Vec<Record>,
    hello_seen: bool,
    run_end_seen: bool,
    fatal_at: Option<Instant>,
    /// Problems with the COM2 stream and its Hello record, one sentence each.
    warnings: Vec<String>,
}

impl Received {
    fn new(console: Console, names: Vec<String>, scripts: Scripts, debug_port: bool) -> Self {
        Self {
            debug_port,
            live: LiveSummary::new(),
            console,
            stopped: vec![false; names.len()],
            names,
            scripts,
            script_events: Vec::new(),
            lines: LineSplitter::default(),
            watch: Com1Watch::default(),
            decoder: Decoder::default(),
            records: Vec::new(),
            hello_seen: false,
            run_end_seen: false,
            fatal_at: None,
            warnings: Vec::new(),
        }
    }

    fn warn(&mut self, warning: String) {
        if self.console == Console::Live {
            eprintln!("warning: {warning}");
        }
        self.warnings.push(warning);
    }

    fn com1(&mut self, bytes: &[u8]) {
        for line in self.lines.feed(bytes) {
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        if self.console == Console::Live {
            println!("{line}");
        }
        if self.watch.observe(line, self.hello_seen) && self.fatal_at.is_none() {
            self.fatal_at = Some(Instant::now());
        }
        if let Some((vm, text)) = carousel_trace::console_lines::split_vm_line(&self.names, line) {
            let events = self.scripts.line(vm, text, Instant::now());
            self.script_events.extend(events);
        }
    }

    /// True when every VM has stopped or (having a script) finished or failed it, and some VM
    /// has a script: then nothing more is awaited.
    fn scripts_done(&self) -> bool {
        self.scripts.any()
            && (0..self.names.len()).all(|vm| self.stopped[vm] || self.scripts.done(vm))
    }

    fn com2(&mut self, bytes: &[u8], lab: &Lab) {
        let mut decoded = Vec::new();
        self.decoder.feed(bytes, &mut decoded);
        for item in decoded {
            match item {
                Decoded::Frame(frame) => {
                    self.live.record(&frame.record);
                    self.record(frame.record, lab);
                }
                // The emulator's own text between frames on the debug port.
                Decoded::Corrupt { .. } if self.debug_port => {}
                Decoded::Corrupt { bytes } => {
                    self.warn(format!("COM2: skipped a corrupt frame of {bytes} bytes"));
                }
                Decoded::Gap { from, to } => {
                    self.live.gap(u64::from(to.wrapping_sub(from)));
                    self.warn(format!(
                        "COM2: records {from}..{to} ({} of them) never arrived",
                        to.wrapping_sub(from)
                    ));
                }
            }
        }
    }

    fn record(&mut self, record: Record, lab: &Lab) {
        match &record {
            Record::Hello {
                version,
                lab_hash,
                tsc_hz,
                ..
            } => {
                self.hello_seen = true;
                // The run starts: so do the scripts' clocks.
                self.scripts.start(Instant::now());
                if *version != FORMAT_VERSION {
                    self.warn(format!(
                        "the hypervisor speaks format version {version}, this tool \
                         {FORMAT_VERSION}"
                    ));
                }
                if *lab_hash != lab.hash {
                    self.warn(format!(
                        "the hypervisor reports lab hash {lab_hash:#x}, this lab is {:#x}",
                        lab.hash
                    ));
                }
                if *tsc_hz == 0 {
                    self.warn("the hypervisor reports a TSC frequency of 0 Hz".to_string());
                }
            }
            Record::RunEnd { .. } => self.run_end_seen = true,
            Record::VmStopped { vm, .. } => {
                if let Some(stopped) = self.stopped.get_mut(usize::from(*vm)) {
                    *stopped = true;
                }
            }
            Record::Check { .. }
            | Record::Events { .. }
            | Record::MemoryMap { .. }
            | Record::MemoryInfo { .. }
            | Record::Balloon { .. }
            | Record::BalloonTarget { .. }
            | Record::Merging { .. }
            | Record::HostMemory { .. }
            | Record::WorkingSet { .. }
            | Record::GuestMetric { .. }
            | Record::DiskIo { .. }
            | Record::DiskSector { .. }
            | Record::AddressSpaces { .. }
            | Record::TimerLag { .. }
            | Record::ExitInterval { .. }
            | Record::VmSummary(_)
            | Record::RunSummary(_) => {}
        }
        self.records.push(record);
    }

    /// End of the streams: the unterminated last line and frame.
    fn finish(&mut self) {
        if let Some(line) = self.lines.finish() {
            self.line(&line);
        }
        let pending = self.decoder.pending_bytes();
        if pending > 0 && !self.debug_port {
            self.warn(format!(
                "COM2: the stream ends inside a frame ({pending} bytes)"
            ));
        }
    }
}

/// How often `carousel run` prints its live summary.
const LIVE_PERIOD: Duration = Duration::from_secs(1);

/// The files a run's output lands in, in the run directory.
struct RunFiles {
    /// COM1's text.
    com1: PathBuf,
    /// The record stream: COM2's, or the debug port's ([`record_stream_file`]).
    records: PathBuf,
}

/// The run-directory file the record stream lands in: COM2's, or for a full-rate trace the
/// emulator's debug-port output.
pub fn record_stream_file(backend: Backend, lab: &Lab) -> &'static str {
    match lab.trace {
        TraceLevel::Full => backend.e9_file(),
        TraceLevel::Off | TraceLevel::Aggregate | TraceLevel::Switches => "com2.bin",
    }
}

/// The whole frames of a stream, re-encoded (byte for byte what was sent) without whatever
/// else shares the stream: a debug-port file holds the emulator's own text too.
pub fn frames_only(bytes: &[u8]) -> Vec<u8> {
    decode_all(bytes)
        .into_iter()
        .filter_map(|item| match item {
            Decoded::Frame(frame) => Some(encode_vec(&frame)),
            Decoded::Corrupt { .. } | Decoded::Gap { .. } => None,
        })
        .flatten()
        .collect()
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
    /// How the run ended.
    pub ending: Ending,
    /// The verdict and one row per VM.
    pub outcome: Outcome,
    /// Problems with the COM2 stream (corrupt frames, gaps, a truncated frame) and with its
    /// Hello record, one sentence each.
    pub stream_warnings: Vec<String>,
    /// What became of each persisting VM's written sectors, one sentence each.
    pub persisted: Vec<String>,
    /// True when a write-back was due and failed (the image is unchanged).
    pub persist_failed: bool,
}

impl Finished {
    /// The accounting the records carry (the hypervisor's summaries and the guests' metrics).
    pub fn accounting(&self) -> Accounting {
        let weights: Vec<u32> = self.lab.vms.iter().map(|vm| vm.weight).collect();
        Accounting::from_records(&self.records, &weights)
    }
}

/// Runs a lab (`carousel run`): shows it live, then prints the outcome table, the accounting,
/// what was persisted and the result line; returns the exit code of the verdict (or
/// [`EXIT_SETUP`] when the VMs passed but a disk write-back failed).
pub fn run(options: &RunOptions, interrupted: &AtomicBool) -> Result<i32, RunError> {
    let finished = execute(options, Console::Live, interrupted)?;
    let outcome = &finished.outcome;
    println!();
    print!("{}", outcome::table(outcome));
    let accounting = finished.accounting();
    if accounting.has_summaries() {
        println!();
        print!("{}", accounting.report());
        println!();
    } else if finished.ending == Ending::ScriptsFinished {
        println!();
        println!(
            "accounting: none (the tool ended the run once the scripts finished; the hypervisor \
             sends its summaries when every VM has stopped)"
        );
        println!();
    } else if outcome.verdict == Verdict::Passed {
        println!();
        print!("{}", accounting.report());
        println!();
    }
    if !finished.stream_warnings.is_empty() {
        let count = finished.stream_warnings.len();
        println!(
            "warning: COM2 had {count} problem{} (see above)",
            if count == 1 { "" } else { "s" }
        );
    }
    for line in &finished.persisted {
        println!("{line}");
    }
    println!("{}", outcome::result_line(outcome));
    if outcome.verdict == Verdict::HypervisorFailed {
        for hint in failure_hints(finished.backend, &finished.out) {
            println!("{hint}");
        }
    }
    println!("artifacts: {}", finished.out.display());
    if let Some(trace) = &options.trace {
        let stream = finished
            .out
            .join(record_stream_file(finished.backend, &finished.lab));
        let copied = match finished.lab.trace {
            TraceLevel::Full => fs::read(&stream)
                .map(|bytes| frames_only(&bytes))
                .and_then(|frames| fs::write(trace, &frames).map(|()| frames.len() as u64)),
            _ => fs::copy(&stream, trace),
        };
        match copied {
            Ok(bytes) => println!(
                "trace: {} ({bytes} bytes; `carousel report` reads it)",
                trace.display()
            ),
            Err(error) => println!(
                "warning: cannot write the trace {}: {error}",
                trace.display()
            ),
        }
    }
    if finished.persist_failed && outcome.exit_code() == 0 {
        println!("error: a disk write-back failed (see above); exit code {EXIT_SETUP}");
        return Ok(EXIT_SETUP);
    }
    Ok(outcome.exit_code())
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
        if console == Console::Live {
            println!("{text}");
        }
    };
    let timeout_s = options.timeout_s.unwrap_or(lab.timeout_s);
    let backend = backend::resolve(options.backend, backend::kvm_problem().is_none());
    if let Some(problem) = backend::unavailable(backend) {
        return Err(RunError::Unavailable(problem));
    }
    let memory = EmulatorMemory::for_guests(lab.guest_memory_mib()).ok_or_else(|| {
        RunError::Unavailable(format!(
            "the VMs' {} MiB do not fit in the emulator",
            lab.guest_memory_mib()
        ))
    })?;
    let root = build::repo_root();
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
    let built = build::build(&root, &build::target_dir(&root), &guests)?;
    if interrupted.load(Ordering::SeqCst) {
        return Err(RunError::Interrupted);
    }

    // Blank disks, in the run directory (persisted sectors land there too).
    for vm in &lab.vms {
        if let Some(Disk::Blank { kib }) = vm.disk {
            let path = crate::lab::blank_disk_path(&out, &vm.name);
            fs::write(&path, crate::disk::blank_image(kib))
                .map_err(io_error(format!("cannot write {}", path.display())))?;
        }
    }

    // Boot image.
    let run_config = lab
        .run_config(backend.tsc_hz(&lab), options.persist)
        .to_bytes()
        .map_err(|error| {
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
            disk: vm.disk.as_ref().map(|disk| disk.path(&out, &vm.name)),
        })
        .collect();
    let staging = out.join("iso-root");
    let iso_path = out.join("carousel.iso");
    iso::stage(&staging, &built.kernel, &run_config, &vm_files)?;
    let took = iso::mkrescue(&staging, &iso_path)?;
    say(format!("iso built in {:.1} s", took.as_secs_f64()));
    if interrupted.load(Ordering::SeqCst) {
        return Err(RunError::Interrupted);
    }

    // Emulator.
    let debugger = options
        .bochs_debugger
        .as_deref()
        .unwrap_or(backend::CONT_RC);
    let (mut emulator, link) = start_emulator(
        backend,
        &lab,
        memory,
        &out,
        &iso_path,
        debugger,
        interrupted,
    )?;
    say(format!(
        "running {} VM{} on {backend} (timeout {timeout_s} s); artifacts in {}",
        lab.vms.len(),
        if lab.vms.len() == 1 { "" } else { "s" },
        out.display()
    ));

    let (ending, received) = stream(
        &lab,
        &RunFiles {
            com1: out.join("com1.txt"),
            records: out.join(record_stream_file(backend, &lab)),
        },
        &mut emulator,
        link,
        Duration::from_secs(timeout_s),
        interrupted,
        console,
    );

    // Disks, then the verdict.
    let (persisted, persist_failed) = persist_disks(&lab, &out, options.persist, &received);
    let names: Vec<String> = lab.vms.iter().map(|vm| vm.name.clone()).collect();
    let scripts = received.scripts.results();
    let decided = outcome::decide(&RunFacts {
        vm_names: &names,
        records: &received.records,
        error_line: received.watch.error_line.as_deref(),
        panic_line: received.watch.panic_line.as_deref(),
        ending,
        timeout_s,
        scripts: &scripts,
    });
    Ok(Finished {
        lab,
        backend,
        out,
        records: received.records,
        ending,
        outcome: decided,
        stream_warnings: received.warnings,
        persisted,
        persist_failed,
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
    iso_path: &Path,
    debugger: &str,
    interrupted: &AtomicBool,
) -> Result<(backend::Emulator, Option<Com1>), RunError> {
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
                iso: iso_path,
                com1_port: port,
            });
            fs::write(&bochsrc, text)
                .map_err(io_error(format!("cannot write {}", bochsrc.display())))?;
            fs::write(&cont_rc, debugger)
                .map_err(io_error(format!("cannot write {}", cont_rc.display())))?;
        }
        let launch = backend::launch(backend, memory, iso_path, out, &bochsrc, &cont_rc, port);
        let output = out.join(launch.output);
        let mut emulator =
            backend::Emulator::spawn(launch.program, &launch.args, &launch.env, &output)
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

/// Writes the sectors each persisting VM wrote back into its image (the lab's `disk` file, or
/// the blank image in the run directory). Only after a RunEnd: the hypervisor sends the
/// sectors just before it, so without it the set may be incomplete. Returns one sentence per
/// persisting VM, and whether a write-back failed.
fn persist_disks(
    lab: &Lab,
    out: &Path,
    persist_all: bool,
    received: &Received,
) -> (Vec<String>, bool) {
    let mut sectors: BTreeMap<u16, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    for record in &received.records {
        if let Record::DiskSector { vm, lba, data } = record {
            sectors.entry(*vm).or_default().insert(*lba, data.clone());
        }
    }
    let mut lines = Vec::new();
    let mut failed = false;
    for (id, vm) in lab.vms.iter().enumerate() {
        let Some(disk) = vm.disk.as_ref().filter(|_| lab.persists(id, persist_all)) else {
            if sectors.contains_key(&(id as u16)) {
                lines.push(format!(
                    "warning: vm {}: DiskSector records arrived but the VM does not persist; \
                     ignored",
                    vm.name
                ));
            }
            continue;
        };
        let path = disk.path(out, &vm.name);
        let written = sectors.remove(&(id as u16)).unwrap_or_default();
        if !received.run_end_seen {
            lines.push(format!(
                "vm {}: not persisted: the run did not end in order (no RunEnd record; the \
                 hypervisor sends written sectors only then); {} unchanged",
                vm.name,
                path.display()
            ));
        } else if written.is_empty() {
            lines.push(format!(
                "vm {}: wrote no sectors; {} unchanged",
                vm.name,
                path.display()
            ));
        } else {
            match crate::disk::persist(&path, &written) {
                Ok(target) => lines.push(format!(
                    "vm {}: persisted {} sector{} to {}",
                    vm.name,
                    written.len(),
                    if written.len() == 1 { "" } else { "s" },
                    target.display()
                )),
                Err(error) => {
                    failed = true;
                    lines.push(format!("error: vm {}: not persisted: {error}", vm.name));
                }
            }
        }
    }
    (lines, failed)
}

/// The run loop: stream both COM files until the run ends, type scripted and typed console
/// input; the emulator is dead on return.
fn stream(
    lab: &Lab,
    files: &RunFiles,
    emulator: &mut backend::Emulator,
    mut link: Option<Com1>,
    timeout: Duration,
    interrupted: &AtomicBool,
    console: Console,
) -> (Ending, Received) {
    let mut com1 = Tail::new(files.com1.clone());
    let mut com2 = Tail::new(files.records.clone());
    let start = Instant::now();
    let names: Vec<String> = lab.vms.iter().map(|vm| vm.name.clone()).collect();
    let scripts = Scripts::new(lab.vms.iter().map(|vm| vm.script.clone()).collect());
    let debug_port = lab.trace == TraceLevel::Full;
    let mut received = Received::new(console, names.clone(), scripts, debug_port);
    let mut input = Input {
        writer: link
            .as_mut()
            .map(|link| FocusWriter::new(link.writer(), names.len())),
        names,
        user_focus: 0,
        live: console == Console::Live,
    };
    let typed = if console == Console::Live {
        interactive::spawn_reader()
    } else {
        None
    };
    if typed.is_some() {
        if input.writer.is_some() {
            println!(
                "[carousel] typed lines go to {} (~N or ~NAME to switch, ~? for help)",
                input.names[0]
            );
        } else {
            println!("[carousel] no COM1 connection: typed lines go nowhere");
        }
    }
    let mut next_live = start + LIVE_PERIOD;
    let mut run_end_at: Option<Instant> = None;
    let mut scripts_done_at: Option<Instant> = None;
    let mut end_requested_at: Option<Instant> = None;
    let mut timed_out_at: Option<Instant> = None;
    let ending = loop {
        received.com1(&com1.read_new());
        received.com2(&com2.read_new(), lab);
        let now = Instant::now();
        if now >= next_live {
            next_live = now + LIVE_PERIOD;
            if let Some(line) = received.live.line().filter(|_| input.live) {
                println!("{line}");
            }
        }
        let mut events = std::mem::take(&mut received.script_events);
        events.extend(received.scripts.tick(now));
        for event in events {
            input.script_event(&event);
        }
        if let Some(typed) = &typed {
            input.typed(typed);
        }
        if let Some(asked) = timed_out_at {
            // The run is over either way; the hypervisor's own end only adds its records.
            let ended = received.run_end_seen && now - *run_end_at.get_or_insert(now) >= EXIT_GRACE;
            if ended || emulator.try_exited().is_some() || now - asked >= TIMEOUT_GRACE {
                break Ending::TimedOut;
            }
        } else if received.run_end_seen {
            let since = *run_end_at.get_or_insert(now);
            if emulator.try_exited().is_some() || now - since >= EXIT_GRACE {
                break Ending::RunEnd;
            }
        } else if emulator.try_exited().is_some() {
            break Ending::EmulatorExited;
        } else if received.fatal_at.is_some_and(|at| now - at >= FATAL_GRACE) {
            break Ending::FatalLine;
        } else if received.scripts_done()
            && now - *scripts_done_at.get_or_insert(now) >= SCRIPT_GRACE
        {
            // Ask the hypervisor to end the run in order (summaries, persisted sectors,
            // RunEnd); end the emulator ourselves only if it does not within the grace.
            let asked = *end_requested_at.get_or_insert_with(|| {
                if input.live {
                    let failed = (0..lab.vms.len())
                        .filter(|&vm| received.scripts.failed_step(vm).is_some())
                        .count();
                    if failed == 0 {
                        println!("[carousel] all scripts finished; ending the run");
                    } else {
                        println!(
                            "[carousel] all scripts finished ({failed} failed); ending the run"
                        );
                    }
                }
                input.end_run();
                now
            });
            if now - asked >= END_RUN_GRACE {
                break Ending::ScriptsFinished;
            }
        } else if now - start >= timeout {
            if input.live {
                println!("[carousel] the timeout has come; ending the run");
            }
            input.end_run();
            timed_out_at = Some(now);
        } else if interrupted.load(Ordering::SeqCst) {
            break Ending::Interrupted;
        }
        std::thread::sleep(POLL);
    };
    emulator.kill();
    drop(input);
    if let Some(link) = link {
        link.finish();
    }
    // What the emulator wrote before it died.
    received.com1(&com1.read_new());
    received.com2(&com2.read_new(), lab);
    received.finish();
    let ending = if ending == Ending::EmulatorExited && received.run_end_seen {
        Ending::RunEnd
    } else {
        ending
    };
    (ending, received)
}

/// Console input during a run: the scripts' sends and the user's typed lines, both through
/// one [`FocusWriter`] (the user's focus is restored before each typed line).
struct Input<W: Write> {
    writer: Option<FocusWriter<W>>,
    names: Vec<String>,
    /// The VM the user's lines go to.
    user_focus: usize,
    /// Print what happens (`Console::Live`).
    live: bool,
}

impl<W: Write> Input<W> {
    fn say(&self, text: String) {
        if self.live {
            println!("{text}");
        }
    }

    fn send(&mut self, vm: usize, text: &str) {
        let Some(writer) = self.writer.as_mut() else {
            self.say(format!(
                "[carousel] cannot send to {}: no COM1 connection",
                self.names[vm]
            ));
            return;
        };
        if let Err(error) = writer.send(vm as u16, text.as_bytes()) {
            self.say(format!(
                "[carousel] cannot send to {}: {error}",
                self.names[vm]
            ));
        }
    }

    /// Asks the hypervisor to end the run (see [`FocusWriter::end_run`]).
    fn end_run(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            if let Err(error) = writer.end_run() {
                eprintln!("[carousel] cannot ask the hypervisor to end the run: {error}");
            }
        }
    }

    fn script_event(&mut self, event: &Event) {
        match event {
            Event::Matched {
                vm,
                step,
                send: Some(text),
                ..
            } => {
                self.say(format!(
                    "[carousel] script {} step {step}: sending {text:?}",
                    self.names[*vm]
                ));
                self.send(*vm, text);
            }
            Event::Matched { .. } => {}
            Event::Finished { vm } => {
                self.say(format!("[carousel] script {} finished", self.names[*vm]));
            }
            Event::Failed {
                vm,
                reason,
                last_lines,
                ..
            } => {
                self.say(format!(
                    "[carousel] script {} FAILED: {reason}; its last console lines:",
                    self.names[*vm]
                ));
                for line in last_lines {
                    self.say(format!("[carousel]   | {line}"));
                }
            }
        }
    }

    /// Carries out what the user typed since the last poll.
    fn typed(&mut self, typed: &Receiver<String>) {
        while let Ok(line) = typed.try_recv() {
            match interactive::parse(&line, &self.names) {
                Command::Send(text) => {
                    self.send(self.user_focus, &format!("{text}\n"));
                }
                Command::Focus(vm) => {
                    let result = match self.writer.as_mut() {
                        Some(writer) => writer.focus(vm as u16).map_err(|e| e.to_string()),
                        None => Err("no COM1 connection".to_string()),
                    };
                    match result {
                        Ok(()) => {
                            self.user_focus = vm;
                            self.say(format!("[carousel] focus: {}", self.names[vm]));
                        }
                        Err(error) => self.say(format!(
                            "[carousel] cannot focus {}: {error}",
                            self.names[vm]
                        )),
                    }
                }
                Command::Help => self.say(interactive::HELP.to_string()),
                Command::Unknown(what) => self.say(format!(
                    "[carousel] no VM {what:?} (VMs: {}); ~? for help",
                    self.names
                        .iter()
                        .enumerate()
                        .map(|(id, name)| format!("{id} {name}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// Where to look when the hypervisor could not run: the files, and the emulator's own
/// complaints (Bochs' VMFAIL lines: failed VM-entry checks).
fn failure_hints(backend: Backend, out: &Path) -> Vec<String> {
    let log = out.join(backend.log_file());
    let mut hints = vec![format!(
        "look at {} and {} (and {} for port 0xE9 output)",
        log.display(),
        out.join("com1.txt").display(),
        out.join(backend.e9_file()).display()
    )];
    let text = fs::read(&log)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| {
            line.contains("VMFAIL")
                || (line.contains(">>PANIC<<") && !line.contains("shutdown requested"))
        })
        .collect();
    let shown = &lines[lines.len().saturating_sub(5)..];
    if !shown.is_empty() {
        hints.push(format!("from {}:", log.display()));
        hints.extend(shown.iter().map(|line| format!("  {}", printable(line))));
    }
    hints
}

/// `line` without control characters (terminal escapes in emulator output), at most 300 chars.
fn printable(line: &str) -> String {
    line.chars().filter(|c| !c.is_control()).take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitter_joins_pieces_and_drops_cr() {
        let mut splitter = LineSplitter::default();
        assert!(splitter.feed(b"[carousel] hel").is_empty());
        assert_eq!(
            splitter.feed(b"lo\r\n[vm] a\n\n[vm] b"),
            vec!["[carousel] hello", "[vm] a", ""]
        );
        assert_eq!(splitter.feed(b"c\n"), vec!["[vm] bc"]);
        assert_eq!(splitter.finish(), None);
        assert!(splitter.feed(b"tail").is_empty());
        assert_eq!(splitter.finish().as_deref(), Some("tail"));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn splitter_survives_bad_utf8_and_long_lines() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.feed(b"a\xffb\n"), vec!["a\u{fffd}b"]);
        let long = vec![b'x'; LINE_MAX + 10];
        let lines = splitter.feed(&long);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), LINE_MAX);
        assert_eq!(splitter.finish().map(|rest| rest.len()), Some(10));
    }

    #[test]
    fn splitter_byte_by_byte_matches_whole() {
        let stream = b"[carousel] one\r\n[a] two\n[b] three\npartial";
        let mut whole = LineSplitter::default();
        let expected = whole.feed(stream);
        let mut bytewise = LineSplitter::default();
        let got: Vec<String> = stream.iter().flat_map(|b| bytewise.feed(&[*b])).collect();
        assert_eq!(got, expected);
        assert_eq!(whole.finish(), bytewise.finish());
    }

    proptest::proptest! {
        #[test]
        fn splitter_is_independent_of_chunking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut whole = LineSplitter::default();
            let mut expected = whole.feed(&bytes);
            expected.extend(whole.finish());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = LineSplitter::default();
            let mut got = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                got.extend(pieces.feed(&bytes[from..cut]));
                from = cut;
            }
            got.extend(pieces.finish());
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn watch_flags_fatal_lines() {
        let mut watch = Com1Watch::default();
        assert!(!watch.observe("[hello] error: not mine", false));
        assert!(!watch.observe("[carousel] booting", false));
        assert!(watch.observe(
            "[carousel] error: this CPU cannot run Carousel: no VMX",
            false
        ));
        assert!(!watch.observe("[carousel] error: later, after Hello", true));
        assert!(watch.observe("[carousel] PANIC at x.rs:1: boom", true));
        assert_eq!(
            watch.error_line.as_deref(),
            Some("[carousel] error: this CPU cannot run Carousel: no VMX")
        );
        assert_eq!(
            watch.panic_line.as_deref(),
            Some("[carousel] PANIC at x.rs:1: boom")
        );
    }

    #[test]
    fn quiet_runs_keep_stream_warnings_for_the_caller() {
        use carousel_protocol::wire::{encode_vec, Frame};
        let lab = Lab::parse(
            Path::new("lab.toml"),
            "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n",
        )
        .unwrap();
        let mut received = Received::new(
            Console::Quiet,
            vec!["a".to_string()],
            Scripts::new(vec![Vec::new()]),
            false,
        );
        let mut bytes = encode_vec(&Frame {
            seq: 0,
            record: Record::RunEnd { tsc: 1 },
        });
        bytes.extend_from_slice(b"garbage\0");
        bytes.extend(encode_vec(&Frame {
            seq: 5,
            record: Record::RunEnd { tsc: 2 },
        }));
        bytes.extend_from_slice(b"trailing");
        received.com2(&bytes, &lab);
        received.com1(b"[a] hello\n");
        received.finish();
        assert_eq!(received.records.len(), 2);
        assert!(received.run_end_seen);
        assert_eq!(received.warnings.len(), 3, "{:?}", received.warnings);
        assert!(received.warnings[0].contains("corrupt frame"));
        assert!(received.warnings[1].contains("records 1..5 (4 of them)"));
        assert!(received.warnings[2].contains("ends inside a frame"));
    }

    /// A lab in `dir` with VM "a" (a `disk.img` there, persisting as `persist` says) and VM "b"
    /// (a blank disk, persisting); the received stream holds `records`.
    fn persist_case(dir: &Path, persist: bool, records: Vec<Record>) -> (Lab, Received) {
        fs::write(dir.join("disk.img"), crate::disk::blank_image(4)).unwrap();
        let text = format!(
            "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\ndisk = \"disk.img\"\n\
             persist = {persist}\n\
             [[vm]]\nname = \"b\"\nkernel = \"hello\"\nmemory_mib = 8\nblank_disk_kib = 1\n\
             persist = true\n"
        );
        let lab = Lab::parse(&dir.join("lab.toml"), &text).unwrap();
        let mut received = Received::new(
            Console::Quiet,
            vec!["a".to_string(), "b".to_string()],
            Scripts::new(vec![Vec::new(), Vec::new()]),
            false,
        );
        for record in records {
            received.record(record, &lab);
        }
        (lab, received)
    }

    fn sector(vm: u16, lba: u32, fill: u8) -> Record {
        Record::DiskSector {
            vm,
            lba,
            data: vec![fill; crate::disk::SECTOR_BYTES],
        }
    }

    #[test]
    fn persisted_sectors_land_in_the_lab_disk_only_after_run_end() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let image = dir.path().join("disk.img");

        // No RunEnd: nothing is written, and the lines say why.
        let (lab, received) = persist_case(dir.path(), true, vec![sector(0, 7, 0xEE)]);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(!failed);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("not persisted") && lines[0].contains("RunEnd"));
        assert_eq!(fs::read(&image).unwrap(), crate::disk::blank_image(4));

        // With RunEnd: a's sector 7 changes; b wrote nothing.
        let records = vec![sector(0, 7, 0xEE), Record::RunEnd { tsc: 1 }];
        let (lab, received) = persist_case(dir.path(), true, records);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(!failed, "{lines:?}");
        assert!(
            lines[0].starts_with("vm a: persisted 1 sector to "),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            format!(
                "vm b: wrote no sectors; {} unchanged",
                out.join("b.disk").display()
            )
        );
        let mut expected = crate::disk::blank_image(4);
        expected[7 * 512..8 * 512].fill(0xEE);
        assert_eq!(fs::read(&image).unwrap(), expected);
    }

    #[test]
    fn without_persist_the_lab_disk_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let records = vec![sector(0, 1, 0x11), Record::RunEnd { tsc: 1 }];
        let (lab, received) = persist_case(dir.path(), false, records);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(!failed);
        assert!(lines[0].contains("does not persist"), "{lines:?}");
        assert_eq!(
            fs::read(dir.path().join("disk.img")).unwrap(),
            crate::disk::blank_image(4)
        );
        // --persist makes it persist.
        let (lines, _) = persist_disks(&lab, &out, true, &received);
        assert!(
            lines[0].starts_with("vm a: persisted 1 sector"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_failed_write_back_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let records = vec![sector(0, 99, 0x11), Record::RunEnd { tsc: 1 }];
        let (lab, received) = persist_case(dir.path(), true, records);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(failed);
        assert!(
            lines[0].starts_with("error: vm a: not persisted"),
            "{lines:?}"
        );
    }

    #[test]
    fn scripts_are_done_when_every_vm_stopped_or_finished() {
        use crate::script::{Pattern, Step};
        let lab = Lab::parse(
            Path::new("lab.toml"),
            "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n\
             [[vm]]\nname = \"b\"\nkernel = \"hello\"\nmemory_mib = 8\n",
        )
        .unwrap();
        let step = Step {
            expect: Pattern::new(r"^\$ $").unwrap(),
            send: Some("ls\n".to_string()),
            timeout: Duration::from_secs(60),
        };
        let mut received = Received::new(
            Console::Quiet,
            vec!["a".to_string(), "b".to_string()],
            Scripts::new(vec![vec![step], Vec::new()]),
            false,
        );
        received.com1(b"[a] $ \n");
        assert!(!received.scripts_done(), "b runs on");
        assert_eq!(received.script_events.len(), 2);
        received.record(
            Record::VmStopped {
                tsc: 1,
                vm: 1,
                reason: carousel_protocol::record::StopReason::Exited { status: 0x10 },
            },
            &lab,
        );
        assert!(received.scripts_done());
    }

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

    #[test]
    fn tail_reads_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("com1.txt");
        let mut tail = Tail::new(path.clone());
        assert!(tail.read_new().is_empty());
        fs::write(&path, b"ab").unwrap();
        assert_eq!(tail.read_new(), b"ab");
        assert!(tail.read_new().is_empty());
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, b"cd").unwrap();
        assert_eq!(tail.read_new(), b"cd");
        // A restarted emulator truncates the file and writes it anew.
        fs::write(&path, b"x").unwrap();
        assert_eq!(tail.read_new(), b"x");
    }
}
