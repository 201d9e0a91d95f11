//! The run loop: COM1 and the record stream read as the emulator writes them, the consoles shown
//! and the scripts followed, console input typed, the run ended. What it received goes back to
//! the session ([`Received`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carousel_protocol::config::{SchedulerPolicy, Setting};
use carousel_protocol::record::{Record, TraceLevel};
use carousel_protocol::FORMAT_VERSION;
use carousel_trace::decode::{Damage, Item, Stream, StreamDecoder};
use carousel_trace::escape;
use carousel_trace::model::console::split_vm_line;
use carousel_trace::model::feed::Feed;
use carousel_trace::model::settings::describe as describe_setting;
use carousel_trace::model::{Keep, ModelBuilder};
use carousel_trace::render::live;
use carousel_trace::verdict::Ending;

use super::interactive::{self, Command};
use super::lines::{Com1Watch, LineSplitter};
use super::phase::{self, Action, Phase, Why};
use super::script::{Event, FocusWriter, Scripts};
use super::status::{self, StatusLine};
use crate::emulator::com1::Com1;
use crate::emulator::Emulator;
use crate::lab::Lab;
use crate::web::hub::{Control, Hub};

/// What the run loop feeds the live page (`--web`), and what the page asks back.
#[derive(Debug)]
pub struct WebLink {
    pub hub: Arc<Hub>,
    /// The page's controls; `None` when another loop took them.
    pub controls: Option<Receiver<Control>>,
}

/// The live page's side of the records: the feed folds each record the session decoded, and
/// the hub gets what is new every poll.
#[derive(Debug)]
struct WebFeed {
    hub: Arc<Hub>,
    feed: Feed,
}

/// How often the run loop looks at the COM files and the emulator.
pub const POLL: Duration = Duration::from_millis(50);

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
    /// Progress, every COM1 line and every stream warning as they happen, and the live figures
    /// ([`status`]: a status line on a terminal, a line each second in a pipe) (`carousel run`).
    Live,
    /// [`Console::Live`] without the live figures (`carousel run --quiet`).
    LiveQuiet,
    /// Nothing: the caller gets the records, the outcome and the warnings (`carousel bench`).
    /// COM1 is still in the run directory's `com1.txt`.
    Quiet,
}

impl Console {
    /// True unless [`Console::Quiet`]: progress and consoles are printed.
    pub fn prints(self) -> bool {
        self != Console::Quiet
    }
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
    /// The live page, with `--web`.
    web: Option<WebFeed>,
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
            web: None,
        }
    }

    /// Feeds the live page too, from now on.
    fn with_web(mut self, hub: Option<Arc<Hub>>) -> Self {
        self.web = hub.map(|hub| WebFeed {
            hub,
            feed: Feed::new(),
        });
        self
    }

    /// Hands the live page what is new.
    fn publish_web(&mut self) {
        if let Some(web) = &mut self.web {
            web.hub.publish(&web.feed.take());
        }
    }

    fn warn(&mut self, warning: String) {
        if self.console.prints() {
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
        if self.console.prints() {
            println!("{}", escape::console_line(line));
        }
        let hello_seen = self.model.hello().is_some();
        if self.watch.observe(line, hello_seen) && self.fatal_at.is_none() {
            self.fatal_at = Some(Instant::now());
        }
        let vm_line = split_vm_line(&self.names, line);
        if let Some(web) = &self.web {
            match vm_line {
                Some((vm, text)) => web.hub.console(Some(vm), &escape::console_line(text), None),
                None => web.hub.console(None, &escape::console_line(line), None),
            }
        }
        if let Some((vm, text)) = vm_line {
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
                if let Some(web) = &mut self.web {
                    web.feed.lost(damage.lost_records());
                }
                self.model.add_damage(damage);
            }
        }
    }

    pub(super) fn record(&mut self, record: Record, lab: &Lab) {
        let hello_seen = self.model.hello().is_some();
        self.model.add(&record);
        if let Some(web) = &mut self.web {
            web.feed.add(&record);
        }
        self.setting_news(&record);
        self.records.push(record);
        if let (false, Some(hello)) = (hello_seen, self.model.hello()) {
            let (version, lab_hash, tsc_hz) = (hello.version, hello.lab_hash, hello.tsc_hz);
            // The run starts: so do the scripts' clocks.
            self.scripts.start(Instant::now());
            if let Some(web) = &self.web {
                web.hub.status("running", false);
            }
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

    /// A setting the hypervisor changed or refused: told on the console. (The live page's marker
    /// comes with the feed, [`carousel_trace::model::feed::Delta::Setting`], as a trace's does.)
    fn setting_news(&self, record: &Record) {
        let Some((_, text)) = carousel_trace::model::settings::news(record, &self.names) else {
            return;
        };
        if self.console.prints() {
            println!("[carousel] {text}");
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
/// input; the emulator is dead on return. `phase` is where the run stands (the emulator has
/// just started); each poll turns what arrived into [`phase::Event`]s and the phase says when
/// to ask the hypervisor to end the run and when the run is over. `interrupted` is Ctrl-C's flag
/// ([`super::interrupt::presses`] counts the presses). With `web`, the live page gets every
/// record and line as they come, and what it asks for is carried out here.
#[allow(clippy::too_many_arguments)]
pub fn stream(
    lab: &Lab,
    files: &RunFiles,
    emulator: &mut Emulator,
    mut link: Option<Com1>,
    mut phase: Phase,
    interrupted: &AtomicBool,
    console: Console,
    web: Option<WebLink>,
) -> (Ending, Received) {
    let mut com1 = Tail::new(files.com1.clone());
    let mut com2 = Tail::new(files.records.clone());
    let names: Vec<String> = lab.vms.iter().map(|vm| vm.name.clone()).collect();
    let scripts = Scripts::new(lab.vms.iter().map(|vm| vm.script.clone()).collect());
    let debug_port = lab.trace == TraceLevel::Full;
    let weights = lab.vms.iter().map(|vm| vm.weight).collect();
    let (hub, page_controls) = match web {
        Some(web) => (Some(web.hub), web.controls),
        None => (None, None),
    };
    let mut received =
        Received::new(console, names.clone(), weights, scripts, debug_port).with_web(hub.clone());
    let mut input = Input {
        writer: link
            .as_mut()
            .map(|link| FocusWriter::new(link.writer(), names.len())),
        names,
        policy: lab.policy,
        user_focus: 0,
        live: console.prints(),
        hub,
        page_asked_end: false,
    };
    let typed = if console.prints() {
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
    let mut status = StatusLine::new(
        std::io::stdout(),
        status::Mode::for_stdout(console == Console::Live),
        status::stdout_size,
    );
    let mut next_live = Instant::now() + LIVE_PERIOD;
    let mut presses_seen = 0;
    let ending = loop {
        received.com1(&com1.read_new());
        received.com2(&com2.read_new(), lab);
        received.publish_web();
        let now = Instant::now();
        if now >= next_live {
            next_live = now + LIVE_PERIOD;
            if let Some(figures) = received.model.live().take() {
                status.show(&live::line(&figures));
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
        let page_ends = page_controls
            .as_ref()
            .map_or(0, |controls| input.page(controls));
        let presses = super::interrupt::presses(interrupted);
        let ends = presses.saturating_sub(presses_seen) + page_ends;
        for event in received.phase_events(emulator, ends) {
            let (next, action) = phase.next(event, now);
            phase = next;
            input.act(action, &received, lab.vms.len());
        }
        presses_seen = presses;
        if let Some(ending) = phase.ended() {
            break ending;
        }
        std::thread::sleep(POLL);
    };
    emulator.kill();
    status.clear();
    drop(input);
    if let Some(link) = link {
        link.finish();
    }
    // What the emulator wrote before it died.
    received.com1(&com1.read_new());
    received.com2(&com2.read_new(), lab);
    received.finish(lab);
    received.publish_web();
    let ending = if ending == Ending::EmulatorExited && received.run_end_seen() {
        Ending::RunEnd
    } else {
        ending
    };
    (ending, received)
}

impl Received {
    /// What this poll saw, as the run's phase takes it (levels: a phase ignores what changes
    /// nothing), ending with the clock's [`phase::Event::Tick`]; `new_presses` Ctrl-C presses
    /// came since the last poll.
    fn phase_events(&self, emulator: &mut Emulator, new_presses: u32) -> Vec<phase::Event> {
        let mut events = Vec::new();
        if self.model.hello().is_some() {
            events.push(phase::Event::Hello);
        }
        if self.run_end_seen() {
            events.push(phase::Event::RunEnd);
        }
        if emulator.try_exited().is_some() {
            events.push(phase::Event::EmulatorExited);
        }
        if self.fatal_at.is_some() {
            events.push(phase::Event::FatalLine);
        }
        if self.scripts_done() {
            events.push(phase::Event::ScriptsDone);
        }
        events.extend((0..new_presses).map(|_| phase::Event::Interrupt));
        events.push(phase::Event::Tick);
        events
    }
}

/// Console input during a run: the scripts' sends and the user's typed lines, both through
/// one [`FocusWriter`] (the user's focus is restored before each typed line).
struct Input<W: Write> {
    writer: Option<FocusWriter<W>>,
    names: Vec<String>,
    /// The run's policy (caps are refused here, not sent, unless it is credit).
    policy: SchedulerPolicy,
    /// The VM the user's lines go to.
    user_focus: usize,
    /// Print what happens (`Console::Live`).
    live: bool,
    /// The live page: it shows what the tool says too.
    hub: Option<Arc<Hub>>,
    /// The page asked to end the run (once is enough: a second request changes nothing).
    page_asked_end: bool,
}

impl<W: Write> Input<W> {
    fn say(&self, text: String) {
        if let Some(hub) = &self.hub {
            hub.console(None, &escape::console_line(&text), None);
        }
        if self.live {
            println!("{text}");
        }
    }

    /// Carries out what the live page asked for since the last poll; returns 1 when it asked
    /// to end the run (the run loop takes that as one Ctrl-C), else 0.
    fn page(&mut self, controls: &Receiver<Control>) -> u32 {
        let mut end = 0;
        while let Ok(control) = controls.try_recv() {
            match control {
                Control::Input { vm, text } if vm < self.names.len() => self.send(vm, &text),
                Control::Input { vm, .. } => self.say(format!(
                    "[carousel] the page typed into VM {vm}, which the lab does not have"
                )),
                Control::EndRun if !self.page_asked_end => {
                    self.page_asked_end = true;
                    end = 1;
                    if let Some(hub) = &self.hub {
                        hub.marker("end of the run asked for from the page");
                    }
                    self.say("[carousel] the web page asked to end the run".to_string());
                }
                Control::EndRun => {}
                Control::Setting(setting) => self.ask_setting(setting),
            }
        }
        end
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

    /// Carries out what the run's phase asked for: the in-band request to end the run, and what
    /// the user is told.
    fn act(&mut self, action: Action, received: &Received, vm_count: usize) {
        match action {
            Action::Nothing => {}
            Action::Ask(why) => {
                self.say(match why {
                    Why::Scripts => {
                        let failed = (0..vm_count)
                            .filter(|&vm| received.scripts.failed_step(vm).is_some())
                            .count();
                        if failed == 0 {
                            "[carousel] all scripts finished; ending the run".to_string()
                        } else {
                            format!(
                                "[carousel] all scripts finished ({failed} failed); ending the run"
                            )
                        }
                    }
                    Why::Timeout => "[carousel] the timeout has come; ending the run".to_string(),
                    Why::Interrupt => format!(
                        "[carousel] interrupted (Ctrl-C): ending the run within {} ms \
                         (Ctrl-C again ends it at once)",
                        phase::INTERRUPT_GRACE.as_millis()
                    ),
                });
                self.end_run();
            }
            Action::Hurry => self.say(format!(
                "[carousel] interrupted (Ctrl-C): the run ends within {} ms (Ctrl-C again \
                 ends it at once)",
                phase::INTERRUPT_GRACE.as_millis()
            )),
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

    /// Sends a typed setting in band, if it passes the checks the hypervisor makes (an error
    /// in what was typed is told here, and nothing is sent).
    fn ask_setting(&mut self, setting: Setting) {
        if let Err(reason) = setting.check(self.names.len(), self.policy) {
            self.say(format!("[carousel] not sent: {reason}"));
            return;
        }
        let what = describe_setting(setting, &self.names);
        let result = match self.writer.as_mut() {
            Some(writer) => writer.setting(setting).map_err(|e| e.to_string()),
            None => Err("no COM1 connection".to_string()),
        };
        match result {
            Ok(()) => {
                self.say(format!(
                    "[carousel] asked for {what} (made between two slices)"
                ));
                if let Some(hub) = &self.hub {
                    hub.marker(&format!("asked for {what}"));
                }
            }
            Err(error) => self.say(format!("[carousel] cannot ask for {what}: {error}")),
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
                Command::Setting(setting) => self.ask_setting(setting),
                Command::Refused(reason) => self.say(format!("[carousel] {reason}")),
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

    /// Input routing for VMs "a" and "b" under round robin, with a live page's hub.
    fn page_input() -> (Input<Vec<u8>>, std::sync::Arc<crate::web::hub::Hub>) {
        use crate::web::hub::{Hub, Limits, Mode};
        let names = vec!["a".to_string(), "b".to_string()];
        let (hub, _page_controls) = Hub::new(Mode::Live, &names, Limits::LIVE);
        let input = Input {
            writer: Some(FocusWriter::new(Vec::new(), 2)),
            names,
            policy: SchedulerPolicy::RoundRobin,
            user_focus: 0,
            live: false,
            hub: Some(hub.clone()),
            page_asked_end: false,
        };
        (input, hub)
    }

    /// Everything the hub has for a page, as one string.
    fn page_saw(hub: &crate::web::hub::Hub) -> String {
        let mut cursor = crate::web::hub::Cursor::default();
        let mut seen = String::new();
        while let Some(message) = hub.take(&mut cursor) {
            seen.push_str(&message);
        }
        seen
    }

    /// The console bytes that ask for `settings` in band, for two VMs.
    fn in_band(settings: &[Setting]) -> FocusWriter<Vec<u8>> {
        let mut expected = FocusWriter::new(Vec::new(), 2);
        for setting in settings {
            expected.setting(*setting).unwrap();
        }
        expected
    }

    /// What the page types goes to its VM as `~N` input would (focus, then the text), the
    /// user's next typed line goes back to the user's VM, and an end request counts once.
    #[test]
    fn the_page_types_through_the_same_routing_and_ends_the_run_once() {
        let (mut input, hub) = page_input();
        let (send, controls) = std::sync::mpsc::channel();
        send.send(Control::Input {
            vm: 1,
            text: "ping\n".to_string(),
        })
        .unwrap();
        send.send(Control::Input {
            vm: 7,
            text: "x".to_string(),
        })
        .unwrap();
        send.send(Control::EndRun).unwrap();
        send.send(Control::EndRun).unwrap();
        assert_eq!(input.page(&controls), 1, "one end request");
        let (typed_send, typed) = std::sync::mpsc::channel();
        typed_send.send("ls".to_string()).unwrap();
        input.typed(&typed);
        // The same bytes as `~1`, "ping", then the user's line after `~0`.
        let mut expected = FocusWriter::new(Vec::new(), 2);
        expected.send(1, b"ping\n").unwrap();
        expected.send(0, b"ls\n").unwrap();
        assert_eq!(input.writer.as_ref().unwrap().get_ref(), expected.get_ref());
        // The page hears of the VM it does not have, and sees the end as a marker.
        let seen = page_saw(&hub);
        assert!(seen.contains("VM 7, which the lab does not have"), "{seen}");
        assert!(
            seen.contains("[\"M\",null,\"end of the run asked for from the page\"]"),
            "{seen}"
        );
        assert_eq!(input.page(&controls), 0);
    }

    /// Typed settings go in band only when they pass the hypervisor's checks; an error in
    /// what was typed is told locally (on the page too) and nothing is sent.
    #[test]
    fn typed_settings_are_checked_before_they_are_sent() {
        let (mut input, hub) = page_input();
        let (typed_send, typed) = std::sync::mpsc::channel();
        for line in [
            "~weight b 65",
            "~cap b 50",
            "~policy credit",
            "~quantum 0us",
            "~quantum 4ms",
            "~weight b 3",
        ] {
            typed_send.send(line.to_string()).unwrap();
        }
        input.typed(&typed);
        let mut expected = in_band(&[
            Setting::Quantum { us: 4_000 },
            Setting::Weight { vm: 1, weight: 3 },
        ]);
        assert_eq!(input.writer.as_ref().unwrap().get_ref(), expected.get_ref());
        let seen = page_saw(&hub);
        for words in [
            "not sent: weight 65 is outside 1..=64",
            "not sent: caps need the credit policy; this run's is round-robin",
            "keeps the policy it started with",
            "asked for quantum 4 ms",
            "asked for weight of b 3",
        ] {
            assert!(seen.contains(words), "{words}: {seen}");
        }
        // Under credit the cap goes.
        input.policy = SchedulerPolicy::Credit;
        typed_send.send("~cap b 50".to_string()).unwrap();
        input.typed(&typed);
        expected
            .setting(Setting::Cap { vm: 1, cap_pct: 50 })
            .unwrap();
        assert_eq!(input.writer.as_ref().unwrap().get_ref(), expected.get_ref());
    }

    /// A knob set from the page goes through the same check and the same in-band request as
    /// the typed `~quantum`/`~weight`/`~cap`, and shows as a marker; a refused one sends nothing.
    #[test]
    fn page_settings_are_checked_and_sent_as_typed_ones() {
        let (mut input, hub) = page_input();
        let (send, controls) = std::sync::mpsc::channel();
        for setting in [
            Setting::Quantum { us: 0 },
            Setting::Weight { vm: 5, weight: 2 },
            Setting::Cap { vm: 1, cap_pct: 50 },
            Setting::Quantum { us: 2_000 },
            Setting::Weight { vm: 1, weight: 3 },
        ] {
            send.send(Control::Setting(setting)).unwrap();
        }
        assert_eq!(input.page(&controls), 0, "no end asked for");
        let expected = in_band(&[
            Setting::Quantum { us: 2_000 },
            Setting::Weight { vm: 1, weight: 3 },
        ]);
        assert_eq!(input.writer.as_ref().unwrap().get_ref(), expected.get_ref());
        let seen = page_saw(&hub);
        for words in [
            "not sent: a quantum of 0 us is outside",
            "not sent: there is no vm 5",
            "not sent: caps need the credit policy",
            "[\"M\",null,\"asked for quantum 2 ms\"]",
            "[\"M\",null,\"asked for weight of b 3\"]",
        ] {
            assert!(seen.contains(words), "{words}: {seen}");
        }
    }

    /// A lab of one VM "a", and a quiet stream for it without scripts.
    fn quiet_vm_a() -> (Lab, Received) {
        let lab = Lab::parse(
            Path::new("lab.toml"),
            "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n",
        )
        .unwrap();
        let received = Received::new(
            Console::Quiet,
            vec!["a".to_string()],
            Vec::new(),
            Scripts::new(vec![Vec::new()]),
            false,
        );
        (lab, received)
    }

    /// A setting change is marked on the live page at the hypervisor's time of it, as the
    /// deltas count time, not at whatever time the records had reached.
    #[test]
    fn setting_markers_sit_at_the_change() {
        use crate::web::hub::{Hub, Limits, Mode};
        use carousel_protocol::record::{ChangeSource, Event};
        let (lab, received) = quiet_vm_a();
        let (hub, _controls) = Hub::new(Mode::Live, &["a".to_string()], Limits::LIVE);
        let mut received = received.with_web(Some(hub.clone()));
        received.record(
            Record::Events {
                tsc: 1_000,
                events: vec![Event::Run { dt: 0, vm: 0 }],
            },
            &lab,
        );
        received.record(
            Record::Events {
                tsc: 9_000,
                events: vec![Event::Run { dt: 0, vm: 0 }],
            },
            &lab,
        );
        received.record(
            Record::SettingChanged {
                tsc: 4_000,
                setting: Setting::Quantum { us: 2_000 },
                source: ChangeSource::Console,
            },
            &lab,
        );
        received.publish_web();
        let seen = page_saw(&hub);
        assert!(
            seen.contains("[\"M\",3000,\"setting changed (console): quantum 2 ms\"]"),
            "{seen}"
        );
    }

    #[test]
    fn quiet_runs_keep_stream_warnings_for_the_caller() {
        use carousel_protocol::wire::{encode_vec, Frame};
        let (lab, mut received) = quiet_vm_a();
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
            label: None,
            repeat: 1,
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
