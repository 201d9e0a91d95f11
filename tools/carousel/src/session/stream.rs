//! The run loop: COM1 and the record stream read as the emulator writes them, the consoles shown
//! and the scripts followed, console input typed, the run ended. What it received goes back to
//! the session ([`Received`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use carousel_protocol::record::{Record, TraceLevel};
use carousel_protocol::FORMAT_VERSION;
use carousel_trace::decode::{Damage, Item, Stream, StreamDecoder};
use carousel_trace::escape;
use carousel_trace::model::console::split_vm_line;
use carousel_trace::model::{Keep, ModelBuilder};
use carousel_trace::render::live;
use carousel_trace::verdict::Ending;

use super::interactive::{self, Command};
use super::lines::{Com1Watch, LineSplitter};
use super::script::{Event, FocusWriter, Scripts};
use crate::emulator::com1::Com1;
use crate::emulator::Emulator;
use crate::lab::Lab;

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
pub struct Received {
    pub(super) console: Console,
    /// VM names by id, to tell a VM's console lines (`[name] text`) apart.
    pub(super) names: Vec<String>,
    /// The VMs' console scripts, fed with their lines.
    pub(super) scripts: Scripts,
    /// What the scripts did since the run loop last looked.
    pub(super) script_events: Vec<Event>,
    pub(super) lines: LineSplitter,
    pub(super) watch: Com1Watch,
    /// None once the stream has ended.
    pub(super) decoder: Option<StreamDecoder>,
    /// Everything the records say so far (the live line's window among it).
    pub(super) model: ModelBuilder,
    /// Every record, in arrival order.
    pub(super) records: Vec<Record>,
    pub(super) fatal_at: Option<Instant>,
    /// Problems with the COM2 stream and its Hello record, one sentence each.
    pub(super) warnings: Vec<String>,
}

impl Received {
    /// Nothing received yet from a run of the VMs `names` (their lab weights `weights`); the
    /// records come through the emulator's debug port when `debug_port` (a full-rate trace).
    pub(super) fn new(
        console: Console,
        names: Vec<String>,
        weights: Vec<u32>,
        scripts: Scripts,
        debug_port: bool,
    ) -> Self {
        let stream = if debug_port {
            Stream::SharedPort
        } else {
            Stream::Frames
        };
        Self {
            console,
            names,
            scripts,
            script_events: Vec::new(),
            lines: LineSplitter::default(),
            watch: Com1Watch::default(),
            decoder: Some(StreamDecoder::new(stream)),
            model: ModelBuilder::with_weights(Keep::Live, weights),
            records: Vec::new(),
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
            println!("{}", escape::console_line(line));
        }
        let hello_seen = self.model.hello().is_some();
        if self.watch.observe(line, hello_seen) && self.fatal_at.is_none() {
            self.fatal_at = Some(Instant::now());
        }
        if let Some((vm, text)) = split_vm_line(&self.names, line) {
            let events = self.scripts.line(vm, text, Instant::now());
            self.script_events.extend(events);
        }
    }

    /// True when every VM has stopped or (having a script) finished or failed it, and some VM
    /// has a script: then nothing more is awaited.
    fn scripts_done(&self) -> bool {
        let verdict = self.model.verdict();
        self.scripts.any()
            && (0..self.names.len()).all(|vm| verdict.stopped(vm as u16) || self.scripts.done(vm))
    }

    /// True once the RunEnd record arrived.
    pub(super) fn run_end_seen(&self) -> bool {
        self.model.verdict().run_end_seen()
    }

    fn com2(&mut self, bytes: &[u8], lab: &Lab) {
        let mut items = Vec::new();
        if let Some(decoder) = &mut self.decoder {
            decoder.feed(bytes, |item| items.push(item));
        }
        for item in items {
            self.item(item, lab);
        }
    }

    fn item(&mut self, item: Item, lab: &Lab) {
        match item {
            Item::Record(record) => self.record(record, lab),
            Item::Damage(damage) => {
                self.warn(match damage {
                    Damage::Corrupt { bytes } => {
                        format!("COM2: skipped a corrupt frame of {bytes} bytes")
                    }
                    Damage::Gap { from, to } => format!(
                        "COM2: records {from}..{to} ({} of them) never arrived",
                        damage.lost_records()
                    ),
                    Damage::Truncated { bytes } => {
                        format!("COM2: the stream ends inside a frame ({bytes} bytes)")
                    }
                });
                self.model.add_damage(damage);
            }
        }
    }

    pub(super) fn record(&mut self, record: Record, lab: &Lab) {
        let hello_seen = self.model.hello().is_some();
        self.model.add(&record);
        self.records.push(record);
        if let (false, Some(hello)) = (hello_seen, self.model.hello()) {
            let (version, lab_hash, tsc_hz) = (hello.version, hello.lab_hash, hello.tsc_hz);
            // The run starts: so do the scripts' clocks.
            self.scripts.start(Instant::now());
            if version != FORMAT_VERSION {
                self.warn(format!(
                    "the hypervisor speaks format version {version}, this tool {FORMAT_VERSION}"
                ));
            }
            if lab_hash != lab.hash {
                self.warn(format!(
                    "the hypervisor reports lab hash {lab_hash:#x}, this lab is {:#x}",
                    lab.hash
                ));
            }
            if tsc_hz == 0 {
                self.warn("the hypervisor reports a TSC frequency of 0 Hz".to_string());
            }
        }
    }

    /// End of the streams: the unterminated last line and frame.
    fn finish(&mut self, lab: &Lab) {
        if let Some(line) = self.lines.finish() {
            self.line(&line);
        }
        let mut items = Vec::new();
        if let Some(decoder) = self.decoder.take() {
            decoder.finish(|item| items.push(item));
        }
        for item in items {
            self.item(item, lab);
        }
    }
}

/// How often `carousel run` prints its live summary.
const LIVE_PERIOD: Duration = Duration::from_secs(1);

/// The files a run's output lands in, in the run directory.
#[derive(Debug)]
pub struct RunFiles {
    /// COM1's text.
    pub(super) com1: PathBuf,
    /// The record stream: COM2's, or the debug port's ([`record_stream_file`]).
    pub(super) records: PathBuf,
}

/// The run loop: stream both COM files until the run ends, type scripted and typed console
/// input; the emulator is dead on return.
pub fn stream(
    lab: &Lab,
    files: &RunFiles,
    emulator: &mut Emulator,
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
    let weights = lab.vms.iter().map(|vm| vm.weight).collect();
    let mut received = Received::new(console, names.clone(), weights, scripts, debug_port);
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
            if let Some(figures) = received.model.live().take().filter(|_| input.live) {
                println!("{}", live::line(&figures));
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
            let ended =
                received.run_end_seen() && now - *run_end_at.get_or_insert(now) >= EXIT_GRACE;
            if ended || emulator.try_exited().is_some() || now - asked >= TIMEOUT_GRACE {
                break Ending::TimedOut;
            }
        } else if received.run_end_seen() {
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
    received.finish(lab);
    let ending = if ending == Ending::EmulatorExited && received.run_end_seen() {
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
                    self.say(format!("[carousel]   | {}", escape::console_line(line)));
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;

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
            Vec::new(),
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
        received.finish(&lab);
        assert_eq!(received.records.len(), 2);
        assert!(received.run_end_seen());
        assert_eq!(received.warnings.len(), 3, "{:?}", received.warnings);
        assert!(received.warnings[0].contains("corrupt frame"));
        assert!(received.warnings[1].contains("records 1..5 (4 of them)"));
        assert!(received.warnings[2].contains("ends inside a frame"));
    }

    /// A lab in `dir` with VM "a" (a `disk.img` there, persisting as `persist` says) and VM "b"
    /// (a blank disk, persisting); the received stream holds `records`.

    #[test]
    fn scripts_are_done_when_every_vm_stopped_or_finished() {
        use crate::lab::script::{Pattern, Step};
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
            Vec::new(),
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
