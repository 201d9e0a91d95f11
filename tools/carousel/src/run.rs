//! `carousel run`: validate the lab, build, make the ISO, start the emulator, stream COM1 to the
//! terminal and decode COM2 as they grow, end the run, and decide the outcome.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use carousel_protocol::record::Record;
use carousel_protocol::wire::{Decoded, Decoder};
use carousel_protocol::FORMAT_VERSION;

use crate::accounting::Accounting;
use crate::backend::{self, Backend, BackendChoice, EmulatorMemory};
use crate::build::{self, BuildError};
use crate::iso::{self, IsoError, VmFiles};
use crate::lab::{Kernel, Lab, LabError};
use crate::outcome::{self, Ending, Outcome, RunFacts, Verdict, ERROR_PREFIX, PANIC_PREFIX};

/// How often the run loop looks at the COM files and the emulator.
pub const POLL: Duration = Duration::from_millis(50);
/// How long the emulator may take to exit by itself after the RunEnd record.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long the hypervisor may keep writing after a fatal COM1 line (an error before Hello, or
/// a panic) before the tool ends the run.
pub const FATAL_GRACE: Duration = Duration::from_secs(2);
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
    lines: LineSplitter,
    watch: Com1Watch,
    decoder: Decoder,
    records: Vec<Record>,
    hello_seen: bool,
    run_end_seen: bool,
    fatal_at: Option<Instant>,
    /// Problems with the COM2 stream and its Hello record, one sentence each.
    warnings: Vec<String>,
}

impl Received {
    fn new(console: Console) -> Self {
        Self {
            console,
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
    }

    fn com2(&mut self, bytes: &[u8], lab: &Lab) {
        let mut decoded = Vec::new();
        self.decoder.feed(bytes, &mut decoded);
        for item in decoded {
            match item {
                Decoded::Frame(frame) => self.record(frame.record, lab),
                Decoded::Corrupt { bytes } => {
                    self.warn(format!("COM2: skipped a corrupt frame of {bytes} bytes"));
                }
                Decoded::Gap { from, to } => self.warn(format!(
                    "COM2: records {from}..{to} ({} of them) never arrived",
                    to.wrapping_sub(from)
                )),
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
            Record::Check { .. }
            | Record::VmStopped { .. }
            | Record::GuestMetric { .. }
            | Record::DiskIo { .. }
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
        if pending > 0 {
            self.warn(format!(
                "COM2: the stream ends inside a frame ({pending} bytes)"
            ));
        }
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
    if dir.exists() {
        let empty = fs::read_dir(dir)
            .map_err(io_error(format!("cannot read {}", dir.display())))?
            .next()
            .is_none();
        if !empty && !dir.join(RUN_DIR_MARKER).is_file() {
            return Err(RunError::OutDir(format!(
                "refusing to clear {}: it is not empty and not a carousel run directory \
                 (no {RUN_DIR_MARKER}); pick another --out",
                dir.display()
            )));
        }
        fs::remove_dir_all(dir).map_err(io_error(format!("cannot clear {}", dir.display())))?;
    }
    fs::create_dir_all(dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    fs::write(
        dir.join(RUN_DIR_MARKER),
        b"made by `carousel run`; cleared by the next run\n",
    )
    .map_err(io_error(format!("cannot write in {}", dir.display())))?;
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
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
    /// The verdict and one row per VM.
    pub outcome: Outcome,
    /// Problems with the COM2 stream (corrupt frames, gaps, a truncated frame) and with its
    /// Hello record, one sentence each.
    pub stream_warnings: Vec<String>,
}

impl Finished {
    /// The accounting the records carry (the hypervisor's summaries and the guests' metrics).
    pub fn accounting(&self) -> Accounting {
        let weights: Vec<u32> = self.lab.vms.iter().map(|vm| vm.weight).collect();
        Accounting::from_records(&self.records, &weights)
    }
}

/// Runs a lab (`carousel run`): shows it live, then prints the outcome table, the accounting
/// and the result line; returns the exit code of the verdict.
pub fn run(options: &RunOptions, interrupted: &AtomicBool) -> Result<i32, RunError> {
    let finished = execute(options, Console::Live, interrupted)?;
    let outcome = &finished.outcome;
    println!();
    print!("{}", outcome::table(outcome));
    let accounting = finished.accounting();
    if accounting.has_summaries() || outcome.verdict == Verdict::Passed {
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
    println!("{}", outcome::result_line(outcome));
    if outcome.verdict == Verdict::HypervisorFailed {
        for hint in failure_hints(finished.backend, &finished.out) {
            println!("{hint}");
        }
    }
    println!("artifacts: {}", finished.out.display());
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
    let say = |text: String| {
        if console == Console::Live {
            println!("{text}");
        }
    };
    let lab = Lab::load(&options.lab)?;
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
    let mut guests: Vec<&str> = lab
        .vms
        .iter()
        .filter_map(|vm| match &vm.kernel {
            Kernel::Builtin(name) => Some(name.as_str()),
            Kernel::File(_) => None,
        })
        .collect();
    guests.sort_unstable();
    guests.dedup();
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

    // Boot image.
    let run_config = lab
        .run_config(backend.tsc_hz(&lab))
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
            disk: vm.disk.clone(),
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
    let bochsrc = out.join("bochsrc");
    let cont_rc = out.join("cont.rc");
    if backend == Backend::Bochs {
        let text = backend::bochsrc(&backend::BochsConfig {
            memory,
            cpu_model: &lab.cpu_model,
            ips: lab.ips,
            out: &out,
            iso: &iso_path,
        });
        fs::write(&bochsrc, text)
            .map_err(io_error(format!("cannot write {}", bochsrc.display())))?;
        fs::write(&cont_rc, backend::CONT_RC)
            .map_err(io_error(format!("cannot write {}", cont_rc.display())))?;
    }
    let launch = backend::launch(backend, memory, &iso_path, &out, &bochsrc, &cont_rc);
    let mut emulator = backend::Emulator::spawn(
        launch.program,
        &launch.args,
        &launch.env,
        &out.join(launch.output),
    )
    .map_err(io_error(format!("cannot start {}", launch.program)))?;
    say(format!(
        "running {} VM{} on {backend} (timeout {timeout_s} s); artifacts in {}",
        lab.vms.len(),
        if lab.vms.len() == 1 { "" } else { "s" },
        out.display()
    ));

    let ending = stream(
        &lab,
        &out,
        &mut emulator,
        Duration::from_secs(timeout_s),
        interrupted,
        console,
    );
    let received = ending.1;
    let ending = ending.0;

    // Verdict.
    let names: Vec<String> = lab.vms.iter().map(|vm| vm.name.clone()).collect();
    let decided = outcome::decide(&RunFacts {
        vm_names: &names,
        records: &received.records,
        error_line: received.watch.error_line.as_deref(),
        panic_line: received.watch.panic_line.as_deref(),
        ending,
        timeout_s,
    });
    Ok(Finished {
        lab,
        backend,
        out,
        records: received.records,
        outcome: decided,
        stream_warnings: received.warnings,
    })
}

/// The run loop: stream both COM files until the run ends; the emulator is dead on return.
fn stream(
    lab: &Lab,
    out: &Path,
    emulator: &mut backend::Emulator,
    timeout: Duration,
    interrupted: &AtomicBool,
    console: Console,
) -> (Ending, Received) {
    let mut com1 = Tail::new(out.join("com1.txt"));
    let mut com2 = Tail::new(out.join("com2.bin"));
    let mut received = Received::new(console);
    let start = Instant::now();
    let mut run_end_at: Option<Instant> = None;
    let ending = loop {
        received.com1(&com1.read_new());
        received.com2(&com2.read_new(), lab);
        let now = Instant::now();
        if received.run_end_seen {
            let since = *run_end_at.get_or_insert(now);
            if emulator.try_exited().is_some() || now - since >= EXIT_GRACE {
                break Ending::RunEnd;
            }
        } else if emulator.try_exited().is_some() {
            break Ending::EmulatorExited;
        } else if received.fatal_at.is_some_and(|at| now - at >= FATAL_GRACE) {
            break Ending::FatalLine;
        } else if now - start >= timeout {
            break Ending::TimedOut;
        } else if interrupted.load(Ordering::SeqCst) {
            break Ending::Interrupted;
        }
        std::thread::sleep(POLL);
    };
    emulator.kill();
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
        let mut received = Received::new(Console::Quiet);
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
    }
}
