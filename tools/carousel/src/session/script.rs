//! Scripted console input (`[[vm.script]]` in a lab file): per VM, steps that wait for a console
//! line matching a regular expression and then, optionally, type something into that VM.
//!
//! What is here: the steps ([`Step`]), the engine that follows every VM's script over the
//! console lines and the clock it is given ([`Scripts`]), and the writer that puts bytes on the
//! hypervisor's COM1 for one VM, switching focus in band as the hypervisor's input router
//! expects ([`FocusWriter`]). Everything is driven by the caller (lines, instants), so it is
//! tested without an emulator. What is not here: reading COM1, or deciding the run's verdict
//! (`carousel_trace::verdict` takes each script's [`ScriptResult`]).
//!
//! Rules: a VM's steps run in order; each console line of that VM (without its `[name] `
//! prefix) can satisfy at most one step; a step's timeout counts from the previous step's match,
//! the first step's from the start of the run ([`Scripts::start`]: the hypervisor's Hello record,
//! so the emulator's BIOS and GRUB, which take seconds and more with much memory, do not count).
//! A step that times out fails the VM's script, which then takes no further lines.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use carousel_protocol::config::Setting;
use carousel_trace::model::steps::StepMatch;
use carousel_trace::verdict::ScriptResult;

use crate::lab::script::Step;

/// Escape byte of the hypervisor's focus protocol (`kernel/src/input.rs`): followed by a VM id
/// it focuses that VM; doubled it is one literal byte for the focused VM.
pub const FOCUS: u8 = 0x1D;
/// After [`FOCUS`]: focus VM (byte − FOCUS_BASE).
pub const FOCUS_BASE: u8 = 0x80;
/// After [`FOCUS`]: ask the hypervisor to end the run in order.
pub const END_RUN: u8 = 0x7F;
/// After [`FOCUS`]: a setting request follows ([`Setting::to_request`]).
pub const SETTING: u8 = 0x7E;
/// Console lines of a VM kept to explain a failed step.
pub const CONTEXT_LINES: usize = 5;

/// Something a script did, for the caller to carry out (sends) or show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Step `step` (1-based) of VM `vm` matched `line`; `send` is what to type into the VM.
    Matched {
        vm: usize,
        step: usize,
        line: String,
        send: Option<String>,
    },
    /// VM `vm`'s last step matched.
    Finished { vm: usize },
    /// VM `vm`'s step `step` timed out.
    Failed {
        vm: usize,
        step: usize,
        reason: String,
        last_lines: Vec<String>,
    },
}

/// Where one VM's script stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for repetition `round` (0-based) of step `next` (0-based) since `since` (None:
    /// the run has not started).
    Waiting {
        next: usize,
        round: u32,
        since: Option<Instant>,
    },
    Finished,
    Failed {
        reason: String,
        step: usize,
    },
}

#[derive(Debug, Clone)]
struct VmScript {
    steps: Vec<Step>,
    state: State,
    recent: VecDeque<String>,
    /// Console lines of the VM so far.
    lines: usize,
    /// Every step (repetition) matched, in order.
    matches: Vec<StepMatch>,
}

/// Every VM's script, followed over the console lines the caller feeds in.
#[derive(Debug, Clone)]
pub struct Scripts {
    vms: Vec<VmScript>,
}

impl Scripts {
    /// The scripts of a run (`steps[vm]`, empty for a VM without one); their clocks start with
    /// [`Scripts::start`].
    pub fn new(steps: Vec<Vec<Step>>) -> Self {
        let vms = steps
            .into_iter()
            .map(|steps| VmScript {
                state: if steps.is_empty() {
                    State::Finished
                } else {
                    State::Waiting {
                        next: 0,
                        round: 0,
                        since: None,
                    }
                },
                steps,
                recent: VecDeque::with_capacity(CONTEXT_LINES),
                lines: 0,
                matches: Vec::new(),
            })
            .collect();
        Self { vms }
    }

    /// Starts the first steps' timeouts at `now` (once; later calls change nothing).
    pub fn start(&mut self, now: Instant) {
        for script in &mut self.vms {
            if let State::Waiting {
                since: since @ None,
                ..
            } = &mut script.state
            {
                *since = Some(now);
            }
        }
    }

    /// True when some VM has a script.
    pub fn any(&self) -> bool {
        self.vms.iter().any(|vm| !vm.steps.is_empty())
    }

    /// True when VM `vm` has a script.
    pub fn has_script(&self, vm: usize) -> bool {
        self.vms.get(vm).is_some_and(|vm| !vm.steps.is_empty())
    }

    /// True when VM `vm` has a script and it finished or failed (no line can change it).
    pub fn done(&self, vm: usize) -> bool {
        self.vms
            .get(vm)
            .is_some_and(|vm| !vm.steps.is_empty() && !matches!(vm.state, State::Waiting { .. }))
    }

    /// One console line of VM `vm` (without its prefix), arrived at `now`.
    pub fn line(&mut self, vm: usize, text: &str, now: Instant) -> Vec<Event> {
        let Some(script) = self.vms.get_mut(vm) else {
            return Vec::new();
        };
        if script.recent.len() == CONTEXT_LINES {
            script.recent.pop_front();
        }
        script.recent.push_back(text.to_string());
        let line = script.lines;
        script.lines += 1;
        let State::Waiting { next, round, since } = script.state else {
            return Vec::new();
        };
        let step = &script.steps[next];
        // A line that arrives after the deadline does not rescue the step (the caller may
        // look at lines and the clock in either order).
        let late = since.is_some_and(|since| now.saturating_duration_since(since) > step.timeout);
        if late || !step.expect.is_match(text) {
            return Vec::new();
        }
        script.matches.push(StepMatch {
            step: next,
            label: step.label.clone(),
            line,
            sends: step.send.is_some(),
        });
        let mut events = vec![Event::Matched {
            vm,
            step: next + 1,
            line: text.to_string(),
            send: step.send.clone(),
        }];
        if round + 1 < step.repeat {
            script.state = State::Waiting {
                next,
                round: round + 1,
                since: Some(now),
            };
        } else if next + 1 == script.steps.len() {
            script.state = State::Finished;
            events.push(Event::Finished { vm });
        } else {
            script.state = State::Waiting {
                next: next + 1,
                round: 0,
                since: Some(now),
            };
        }
        events
    }

    /// Fails every step whose timeout has passed at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for (vm, script) in self.vms.iter_mut().enumerate() {
            let State::Waiting {
                next,
                round,
                since: Some(since),
            } = script.state
            else {
                continue;
            };
            let step = &script.steps[next];
            if now.saturating_duration_since(since) <= step.timeout {
                continue;
            }
            let repetition = if step.repeat > 1 {
                format!(" (repetition {} of {})", round + 1, step.repeat)
            } else {
                String::new()
            };
            let reason = format!(
                "script step {}{repetition}: no line matched {} within {} s",
                next + 1,
                step.expect,
                format_seconds(step.timeout)
            );
            script.state = State::Failed {
                reason: reason.clone(),
                step: next + 1,
            };
            events.push(Event::Failed {
                vm,
                step: next + 1,
                reason,
                last_lines: script.recent.iter().cloned().collect(),
            });
        }
        events
    }

    /// Each VM's script as it stands (None for a VM without one), for the verdict.
    pub fn results(&self) -> Vec<Option<ScriptResult>> {
        self.vms
            .iter()
            .map(|script| {
                if script.steps.is_empty() {
                    return None;
                }
                Some(match &script.state {
                    State::Finished => ScriptResult::Finished {
                        steps: script.steps.len(),
                    },
                    State::Failed { reason, .. } => ScriptResult::Failed {
                        reason: reason.clone(),
                        last_lines: script.recent.iter().cloned().collect(),
                    },
                    State::Waiting { next, .. } => ScriptResult::Pending {
                        step: next + 1,
                        expect: script.steps[*next].expect.to_string(),
                    },
                })
            })
            .collect()
    }

    /// The steps VM `vm` matched so far, each repetition apart, with the index of the console
    /// line that matched (for [`carousel_trace::model::steps`] to time them).
    pub fn matches(&self, vm: usize) -> &[StepMatch] {
        self.vms.get(vm).map_or(&[], |vm| &vm.matches)
    }

    /// The step (1-based) VM `vm` failed at, if its script failed.
    pub fn failed_step(&self, vm: usize) -> Option<usize> {
        match self.vms.get(vm)?.state {
            State::Failed { step, .. } => Some(step),
            _ => None,
        }
    }
}

/// Whole seconds as `30`, fractions as `0.5`.
fn format_seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{:.3}", duration.as_secs_f64())
            .trim_end_matches('0')
            .to_string()
    }
}

/// Why bytes cannot go to a VM.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The focus protocol names VMs 0 to 127 only.
    #[error("VM ids above 127 cannot be focused")]
    Unfocusable,
    #[error("no VM has id {0}")]
    NoSuchVm(u16),
    #[error("cannot write to the hypervisor's COM1: {0}")]
    Io(#[from] io::Error),
}

/// Whether the focus protocol can focus VM `vm` (ids 0 to 127).
pub fn focusable(vm: usize) -> bool {
    vm < usize::from(u8::MAX - FOCUS_BASE) + 1
}

/// Writes console input for chosen VMs onto the hypervisor's COM1, in the in-band protocol of
/// `kernel/src/input.rs`: it remembers which VM the hypervisor has focused (VM 0 at start),
/// sends `0x1D, 0x80 + id` only when the target changes, and doubles every 0x1D in the data.
#[derive(Debug)]
pub struct FocusWriter<W: Write> {
    out: W,
    vm_count: usize,
    focused: u16,
}

impl<W: Write> FocusWriter<W> {
    /// A writer for a run of `vm_count` VMs; the hypervisor starts focused on VM 0.
    pub fn new(out: W, vm_count: usize) -> Self {
        Self {
            out,
            vm_count,
            focused: 0,
        }
    }

    /// The VM the hypervisor has focused, as far as this writer knows.
    pub fn focused(&self) -> u16 {
        self.focused
    }

    /// Focuses VM `vm` (nothing is sent when it has the focus already).
    pub fn focus(&mut self, vm: u16) -> Result<(), SendError> {
        if usize::from(vm) >= self.vm_count {
            return Err(SendError::NoSuchVm(vm));
        }
        if vm == self.focused {
            return Ok(());
        }
        if !focusable(usize::from(vm)) {
            return Err(SendError::Unfocusable);
        }
        self.out.write_all(&[FOCUS, FOCUS_BASE + vm as u8])?;
        self.out.flush()?;
        self.focused = vm;
        Ok(())
    }

    /// Sends `bytes` to VM `vm`, focusing it first if needed.
    pub fn send(&mut self, vm: u16, bytes: &[u8]) -> Result<(), SendError> {
        self.focus(vm)?;
        let mut escaped = Vec::with_capacity(bytes.len());
        for &byte in bytes {
            if byte == FOCUS {
                escaped.push(FOCUS);
            }
            escaped.push(byte);
        }
        self.out.write_all(&escaped)?;
        self.out.flush()?;
        Ok(())
    }

    /// Asks the hypervisor to end the run in order: VMs still running stop ("ended by the
    /// host"), then it sends its summaries, persisted disk sectors and RunEnd.
    pub fn end_run(&mut self) -> Result<(), SendError> {
        self.out.write_all(&[FOCUS, END_RUN])?;
        self.out.flush()?;
        Ok(())
    }

    /// Asks the hypervisor to change `setting` (it checks the request again, and makes it
    /// between two slices). The focus does not move.
    pub fn setting(&mut self, setting: Setting) -> Result<(), SendError> {
        self.out.write_all(&[FOCUS, SETTING])?;
        self.out.write_all(&setting.to_request())?;
        self.out.flush()?;
        Ok(())
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::script::Pattern;

    fn step(expect: &str, send: Option<&str>, timeout_s: u64) -> Step {
        Step {
            expect: Pattern::new(expect).unwrap(),
            send: send.map(str::to_string),
            timeout: Duration::from_secs(timeout_s),
            label: None,
            repeat: 1,
        }
    }

    fn secs(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    /// The sends among `events`, as (vm, text).
    fn sends(events: &[Event]) -> Vec<(usize, String)> {
        events
            .iter()
            .filter_map(|event| match event {
                Event::Matched {
                    vm,
                    send: Some(send),
                    ..
                } => Some((*vm, send.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_repeated_step_waits_and_sends_each_time_and_records_its_lines() {
        let start = Instant::now();
        let mut echo = step(r"^\$ $", Some("echo hi\n"), 5);
        echo.label = Some("echo".to_string());
        echo.repeat = 3;
        let mut scripts = Scripts::new(vec![vec![echo, step("^bye$", None, 5)], Vec::new()]);
        scripts.start(start);
        let mut sent = Vec::new();
        for (second, line) in ["boot", "$ ", "hi", "$ ", "$ ", "hi", "bye", "bye"]
            .into_iter()
            .enumerate()
        {
            sent.extend(sends(&scripts.line(0, line, secs(start, second as u64))));
        }
        assert_eq!(sent.len(), 3, "three repetitions, three sends: {sent:?}");
        assert!(scripts.done(0));
        let lines: Vec<(usize, usize, bool)> = scripts
            .matches(0)
            .iter()
            .map(|m| (m.step, m.line, m.sends))
            .collect();
        assert_eq!(
            lines,
            [(0, 1, true), (0, 3, true), (0, 4, true), (1, 6, false)]
        );
        assert_eq!(scripts.matches(0)[0].label.as_deref(), Some("echo"));
        assert!(scripts.matches(1).is_empty() && scripts.matches(9).is_empty());
        assert_eq!(
            scripts.results()[0],
            Some(ScriptResult::Finished { steps: 2 })
        );
    }

    #[test]
    fn a_repetition_that_times_out_is_named() {
        let start = Instant::now();
        let mut echo = step("^ok$", Some("x"), 5);
        echo.repeat = 4;
        let mut scripts = Scripts::new(vec![vec![echo]]);
        scripts.start(start);
        assert_eq!(sends(&scripts.line(0, "ok", secs(start, 1))).len(), 1);
        let events = scripts.tick(secs(start, 7));
        let Some(Event::Failed { reason, step, .. }) = events.first() else {
            panic!("the second repetition times out: {events:?}");
        };
        assert_eq!(*step, 1);
        assert!(reason.contains("step 1 (repetition 2 of 4)"), "{reason}");
    }

    #[test]
    fn steps_match_in_order_one_line_each() {
        let start = Instant::now();
        let mut scripts = Scripts::new(vec![vec![
            step(r"^\$ $", Some("ls\n"), 30),
            step("README", None, 30),
            step(r"^\$ $", Some("stressfs\n"), 30),
        ]]);
        scripts.start(start);
        assert!(scripts.any() && scripts.has_script(0) && !scripts.done(0));
        // Not yet: the README line before the prompt does not count for step 2 later.
        assert!(scripts
            .line(0, "README 2 2 2290", secs(start, 1))
            .is_empty());
        assert!(scripts.line(0, "$  ", secs(start, 1)).is_empty());
        let events = scripts.line(0, "$ ", secs(start, 2));
        assert_eq!(sends(&events), [(0, "ls\n".to_string())]);
        assert_eq!(
            events[0],
            Event::Matched {
                vm: 0,
                step: 1,
                line: "$ ".to_string(),
                send: Some("ls\n".to_string())
            }
        );
        // One line satisfies one step only: this prompt does not also satisfy step 3.
        assert!(scripts.line(0, "ls", secs(start, 2)).is_empty());
        let events = scripts.line(0, ".              1 1 512", secs(start, 3));
        assert!(events.is_empty());
        let events = scripts.line(0, "README         2 2 2290", secs(start, 3));
        assert!(sends(&events).is_empty());
        assert_eq!(events.len(), 1);
        let events = scripts.line(0, "$ ", secs(start, 4));
        assert_eq!(sends(&events), [(0, "stressfs\n".to_string())]);
        assert_eq!(events.last(), Some(&Event::Finished { vm: 0 }));
        assert!(scripts.done(0));
        // Finished scripts take no more lines and never time out.
        assert!(scripts.line(0, "$ ", secs(start, 5)).is_empty());
        assert!(scripts.tick(secs(start, 1000)).is_empty());
        assert_eq!(
            scripts.results(),
            [Some(ScriptResult::Finished { steps: 3 })]
        );
    }

    #[test]
    fn timeout_counts_from_the_previous_match_and_shows_the_last_lines() {
        let start = Instant::now();
        let mut scripts = Scripts::new(vec![vec![
            step("ready", None, 10),
            step("never", Some("x"), 5),
        ]]);
        scripts.start(start);
        assert!(scripts.tick(secs(start, 10)).is_empty(), "not after 10 s");
        assert_eq!(scripts.line(0, "ready", secs(start, 9)).len(), 1);
        for n in 0..7 {
            scripts.line(0, &format!("line {n}"), secs(start, 10));
        }
        // Step 2's 5 s run from the match at 9 s, not from the start.
        assert!(scripts.tick(secs(start, 14)).is_empty());
        let events = scripts.tick(secs(start, 15) + Duration::from_millis(1));
        assert_eq!(
            events,
            [Event::Failed {
                vm: 0,
                step: 2,
                reason: "script step 2: no line matched /never/ within 5 s".to_string(),
                last_lines: (2..7).map(|n| format!("line {n}")).collect(),
            }]
        );
        assert!(scripts.done(0));
        assert_eq!(scripts.failed_step(0), Some(2));
        // A failed script takes no more lines, and fails once.
        assert!(scripts.line(0, "never", secs(start, 16)).is_empty());
        assert!(scripts.tick(secs(start, 100)).is_empty());
        match &scripts.results()[0] {
            Some(ScriptResult::Failed { reason, last_lines }) => {
                assert!(reason.starts_with("script step 2:"), "{reason}");
                assert_eq!(last_lines.len(), CONTEXT_LINES);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_times_out_before_the_run_starts() {
        let start = Instant::now();
        let mut scripts = Scripts::new(vec![vec![step("go", None, 2), step("on", None, 2)]]);
        assert!(scripts.tick(secs(start, 100)).is_empty());
        // Lines before the start still count.
        assert_eq!(scripts.line(0, "go", secs(start, 100)).len(), 1);
        scripts.start(secs(start, 200));
        // Step 2 counts from its predecessor's match, not from the (later) start.
        assert_eq!(scripts.tick(secs(start, 103)).len(), 1);
        scripts.start(secs(start, 300));
        assert_eq!(scripts.failed_step(0), Some(2));
    }

    #[test]
    fn a_late_line_does_not_rescue_a_step() {
        let start = Instant::now();
        let mut scripts = Scripts::new(vec![vec![step("go", None, 2)]]);
        scripts.start(start);
        assert!(scripts.line(0, "go", secs(start, 3)).is_empty());
        assert_eq!(scripts.tick(secs(start, 3)).len(), 1);
    }

    #[test]
    fn vms_are_independent_and_unscripted_vms_have_no_result() {
        let start = Instant::now();
        let mut scripts = Scripts::new(vec![
            vec![step("a", Some("1"), 60)],
            Vec::new(),
            vec![step("b", Some("2"), 60), step("c", None, 60)],
        ]);
        scripts.start(start);
        assert!(!scripts.has_script(1) && !scripts.done(1));
        assert!(scripts.line(1, "a", start).is_empty());
        assert!(scripts.line(2, "a", start).is_empty());
        assert_eq!(sends(&scripts.line(2, "b", start)), [(2, "2".to_string())]);
        assert_eq!(sends(&scripts.line(0, "a", start)), [(0, "1".to_string())]);
        assert!(scripts.done(0) && !scripts.done(2));
        assert_eq!(
            scripts.results(),
            [
                Some(ScriptResult::Finished { steps: 1 }),
                None,
                Some(ScriptResult::Pending {
                    step: 2,
                    expect: "/c/".to_string()
                }),
            ]
        );
        // Out-of-range VMs are ignored.
        assert!(scripts.line(9, "a", start).is_empty());
    }

    #[test]
    fn focus_writer_switches_only_when_needed_and_escapes() {
        let mut writer = FocusWriter::new(Vec::new(), 4);
        writer.send(0, b"ls\n").unwrap();
        writer.send(2, b"x\n").unwrap();
        writer.send(2, b"y").unwrap();
        writer.send(0, &[b'a', FOCUS, b'b']).unwrap();
        writer.focus(0).unwrap();
        writer.focus(3).unwrap();
        assert_eq!(writer.focused(), 3);
        assert_eq!(
            writer.get_ref().as_slice(),
            [
                b"ls\n".as_slice(),
                &[FOCUS, FOCUS_BASE + 2],
                b"x\n",
                b"y",
                &[FOCUS, FOCUS_BASE],
                &[b'a', FOCUS, FOCUS, b'b'],
                &[FOCUS, FOCUS_BASE + 3],
            ]
            .concat()
        );
        assert!(matches!(writer.send(4, b"z"), Err(SendError::NoSuchVm(4))));
        assert_eq!(writer.focused(), 3);
    }

    #[test]
    fn a_setting_request_is_escaped_and_keeps_the_focus() {
        let mut writer = FocusWriter::new(Vec::new(), 3);
        writer.send(2, b"x").unwrap();
        writer
            .setting(Setting::Weight { vm: 1, weight: 4 })
            .unwrap();
        assert_eq!(writer.focused(), 2);
        assert_eq!(
            writer.get_ref().as_slice(),
            [
                FOCUS,
                FOCUS_BASE + 2,
                b'x',
                FOCUS,
                SETTING,
                2,
                1,
                0,
                4,
                0,
                0,
                0
            ]
        );
    }

    #[test]
    fn focus_ids_are_offset_past_the_escape_byte() {
        let mut writer = FocusWriter::new(Vec::new(), 40);
        writer.send(29, b"z").unwrap();
        writer.end_run().unwrap();
        assert_eq!(
            writer.get_ref().as_slice(),
            [FOCUS, FOCUS_BASE + 29, b'z', FOCUS, END_RUN]
        );
        assert!(focusable(29) && focusable(127) && !focusable(128));
    }

    /// The script engine and the writer together: sends reach the right VM when the bytes are
    /// routed the way `kernel/src/input.rs` routes them.
    #[test]
    fn scripted_sends_route_to_their_vms() {
        let start = Instant::now();
        let mut scripts = Scripts::new(vec![
            vec![step("^login", Some("root\n"), 60)],
            vec![step("^login", Some("guest\n"), 60)],
        ]);
        scripts.start(start);
        let mut writer = FocusWriter::new(Vec::new(), 2);
        for (vm, line) in [(1, "login:"), (0, "login:")] {
            for (vm, text) in sends(&scripts.line(vm, line, start)) {
                writer.send(vm as u16, text.as_bytes()).unwrap();
            }
        }
        // A model of the hypervisor's router.
        let mut focused = 0usize;
        let mut escaped = false;
        let mut delivered = vec![Vec::new(), Vec::new()];
        for &byte in writer.get_ref() {
            if escaped {
                escaped = false;
                if byte == FOCUS {
                    delivered[focused].push(byte);
                } else {
                    focused = usize::from(byte - FOCUS_BASE);
                }
            } else if byte == FOCUS {
                escaped = true;
            } else {
                delivered[focused].push(byte);
            }
        }
        assert_eq!(delivered, [b"root\n".to_vec(), b"guest\n".to_vec()]);
    }

    #[test]
    fn seconds_format() {
        assert_eq!(format_seconds(Duration::from_secs(30)), "30");
        assert_eq!(format_seconds(Duration::from_millis(1500)), "1.5");
    }
}
