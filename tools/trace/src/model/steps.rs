//! Task latencies from the console, for any guest, in TSC cycles from the hypervisor's own
//! events:
//! - **Keystroke response**: from an [`Event::Input`] (the hypervisor put host input into a
//!   VM's UART) to the VM's next [`Record::Answer`] (its first console byte after that input).
//!   Input that comes while an earlier one still waits for its answer counts from the earlier.
//! - **Keystroke wait**: the part of a keystroke response the VM spent runnable but not running
//!   (woken or preempted, waiting for its turn on the CPU), from the scheduler's `Run`,
//!   `Descheduled` and `Wake` events (the replay rules of [`super::timeline`]: every VM is
//!   runnable at the trace's first event). The rest of the response is the VM's own running
//!   (its exits included) and the time it was blocked, halted for the next byte.
//! - **Step durations**: a script step that sends, from the first input delivered to the VM
//!   after the console line that matched the step (the script types only once it has seen the
//!   line), to the console line that matched the VM's next step. Which line matched which step
//!   is the host's knowledge ([`StepMatch`], from `carousel run`'s script engine); when each
//!   line was written is the trace's ([`ConsoleLog`]: the n-th console event of a VM is its
//!   n-th line).
//!
//! Keystrokes typed by hand while a script runs are input too: a step is timed from the first
//! input after its line, whoever typed it.

use carousel_protocol::record::{timed_events, Event, Record, SliceEnd};
use serde::{Deserialize, Serialize};

use super::console::{ConsoleLog, ConsoleMark};

/// One script step (one repetition of it) a VM's script matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMatch {
    /// The step's index in the VM's script (0-based; repetitions share it).
    pub step: usize,
    /// The step's `label`, if it has one.
    pub label: Option<String>,
    /// The index of the VM's console line that matched it (0 for its first line).
    pub line: usize,
    /// True when the step sends something once it matched (only such a step is timed).
    pub sends: bool,
}

/// The file beside a run's trace that holds each VM's [`StepMatch`]es.
pub const STEPS_FILE: &str = "steps.json";

/// What [`STEPS_FILE`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepsFile {
    /// The steps each VM matched, by VM id.
    pub vms: Vec<Vec<StepMatch>>,
}

/// Most runstate changes (between runnable and not) the [`KeyLog`] keeps of one VM while one
/// of its inputs may still wait for its answer (the answer's record comes late: when the next
/// input reaches the VM, or at the end of the run). A VM that got one keystroke and then none
/// for a long run stops keeping them there: an answer after the kept ones has no known wait.
/// 65,536 changes are 32,768 of its slices, in 1.5 MiB.
pub const WAIT_HISTORY_MAX: usize = 65_536;

/// One keystroke: its response and the part of it spent waiting for the CPU, in cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keystroke {
    /// When the input it answers reached the VM, TSC cycles.
    pub input: u64,
    /// From the input to the answer.
    pub response: u64,
    /// Runnable, not running, within the response; None when the trace cannot tell (records
    /// were dropped, or the answer lies where its VM's clock kept no runstates).
    pub wait: Option<u64>,
}

/// A VM's runnable cycles up to a point: from `tsc` on it is runnable or not, until its next
/// change, and it had been runnable for `total` cycles before `tsc`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    tsc: u64,
    total: u64,
    runnable: bool,
}

impl Mark {
    /// Runnable cycles by `tsc`, at or after this mark and before the next.
    fn total_at(self, tsc: u64) -> u64 {
        self.total
            + if self.runnable {
                tsc.saturating_sub(self.tsc)
            } else {
                0
            }
    }
}

/// One VM's runnable time as its scheduler events tell it, at each of its inputs and answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct WaitClock {
    /// The VM's state since the latest change.
    current: Mark,
    /// The marks before `current`, oldest first, kept from the first input that may still wait
    /// for its answer (none while every input has one).
    history: Vec<Mark>,
    /// True when `history` reached [`WAIT_HISTORY_MAX`] and changes were not kept: between its
    /// last mark and `current`, nothing is known.
    truncated: bool,
    /// Runnable cycles by each input (as [`KeyLog::inputs`]).
    at_inputs: Vec<u64>,
    /// Runnable cycles by each answer, in arrival order (as [`KeyLog::answers`]); None for an
    /// answer the clock cannot place.
    at_answers: Vec<Option<u64>>,
    /// Answers (indices) later than every event so far: placed once the events pass them.
    pending: Vec<usize>,
}

impl WaitClock {
    /// A VM first seen in a trace whose events began at `start`: runnable since then.
    fn new(start: u64) -> Self {
        Self {
            current: Mark {
                tsc: start,
                total: 0,
                runnable: true,
            },
            ..Self::default()
        }
    }

    /// The VM is runnable (or not) from `now`; `keeping`: one of its inputs may still wait for
    /// its answer, so the change is kept.
    fn change(&mut self, now: u64, runnable: bool, keeping: bool) {
        if runnable == self.current.runnable {
            return;
        }
        let next = Mark {
            tsc: now.max(self.current.tsc),
            total: self.current.total_at(now),
            runnable,
        };
        if keeping {
            if self.history.len() < WAIT_HISTORY_MAX {
                self.history.push(self.current);
            } else {
                self.truncated = true;
            }
        }
        self.current = next;
    }

    /// Runnable cycles by `tsc` (no later than the events seen), if the clock still knows.
    fn total_at(&self, tsc: u64) -> Option<u64> {
        if tsc >= self.current.tsc {
            return Some(self.current.total_at(tsc));
        }
        let after = self.history.partition_point(|mark| mark.tsc <= tsc);
        let mark = self.history.get(after.checked_sub(1)?)?;
        let last = after == self.history.len();
        (!(last && self.truncated)).then(|| mark.total_at(tsc))
    }

    /// Forgets the marks no later answer can need: those before `answer` (answers come in their
    /// VM's time order), or all of them when no input waits (`keeping` false).
    fn forget_before(&mut self, answer: u64, keeping: bool) {
        if !keeping {
            self.history.clear();
            self.truncated = false;
            return;
        }
        let after = self.history.partition_point(|mark| mark.tsc <= answer);
        self.history.drain(..after.saturating_sub(1));
    }
}

/// Each VM's console input and its answers, from the record stream, with the VM's runnable
/// time at each (for the keystrokes' waits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLog {
    /// TSC of every input delivery, per VM id, in order.
    pub inputs: Vec<Vec<u64>>,
    /// TSC of every answer, per VM id (the records come late: sorted when read).
    pub answers: Vec<Vec<u64>>,
    /// Per VM id: its runnable time.
    clocks: Vec<WaitClock>,
    /// The first event's time, and the latest (events come in time order: the runstates are
    /// known up to here).
    start: Option<u64>,
    clock: u64,
    /// Records were dropped: the runstates may be wrong, so no wait is known.
    lost: bool,
}

impl KeyLog {
    /// Keeps the input events and answer records of the next record, and the runstate changes
    /// the waits need.
    pub fn add(&mut self, record: &Record) {
        match record {
            Record::Events { tsc, events } => {
                for (now, event) in timed_events(*tsc, events) {
                    self.event(now, event);
                }
            }
            Record::Answer { tsc, vm } => {
                let vm = self.grow(*vm);
                let index = self.answers[vm].len();
                self.answers[vm].push(*tsc);
                let clock = &mut self.clocks[vm];
                if *tsc > self.clock {
                    clock.at_answers.push(None);
                    clock.pending.push(index);
                } else {
                    let total = clock.total_at(*tsc);
                    clock.at_answers.push(total);
                    let keeping = self.keeping(vm);
                    self.clocks[vm].forget_before(*tsc, keeping);
                }
            }
            _ => {}
        }
    }

    /// One scheduler event at `now`.
    fn event(&mut self, now: u64, event: &Event) {
        let now = now.max(self.clock);
        self.start.get_or_insert(now);
        self.place_pending(now);
        self.clock = now;
        let runnable = match *event {
            Event::Run { .. } => false,
            Event::Descheduled { why, .. } => {
                matches!(why, SliceEnd::Preempted | SliceEnd::Yielded)
            }
            Event::Wake { .. } => true,
            Event::Input { vm, .. } => {
                let vm = self.grow(vm);
                self.inputs[vm].push(now);
                let clock = &mut self.clocks[vm];
                clock.at_inputs.push(clock.current.total_at(now));
                return;
            }
            Event::Dropped { total, .. } => {
                self.lost |= total > 0;
                return;
            }
            Event::Exit { .. } | Event::Console { .. } => return,
        };
        if let Some(vm) = event.vm() {
            let vm = self.grow(vm);
            let keeping = self.keeping(vm);
            self.clocks[vm].change(now, runnable, keeping);
        }
    }

    /// Places the answers the events have now passed (`now` is the next event's time: until
    /// then, every VM stays as it is).
    fn place_pending(&mut self, now: u64) {
        for vm in 0..self.clocks.len() {
            if self.clocks[vm].pending.is_empty() {
                continue;
            }
            let mut placed = None;
            let clock = &mut self.clocks[vm];
            let answers = &self.answers[vm];
            clock.pending.retain(|&index| {
                let answer = answers[index];
                if answer > now {
                    return true;
                }
                clock.at_answers[index] = Some(clock.current.total_at(answer));
                placed = placed.max(Some(answer));
                false
            });
            if let Some(answer) = placed {
                let keeping = self.keeping(vm);
                self.clocks[vm].forget_before(answer, keeping);
            }
        }
    }

    /// True while VM `vm` has an input later than its latest answer: that answer's record is
    /// still to come, so its runstate changes are kept.
    fn keeping(&self, vm: usize) -> bool {
        self.inputs[vm].last() > self.answers[vm].last()
    }

    fn grow(&mut self, vm: u16) -> usize {
        let index = usize::from(vm);
        if self.inputs.len() <= index {
            let start = self.start.unwrap_or(self.clock);
            self.inputs.resize(index + 1, Vec::new());
            self.answers.resize(index + 1, Vec::new());
            self.clocks.resize(index + 1, WaitClock::new(start));
        }
        index
    }

    /// How many VMs the log has seen.
    pub fn vm_count(&self) -> usize {
        self.inputs.len()
    }

    /// VM `vm`'s keystroke responses in cycles, in order: each answer from the first input
    /// after the previous answer (none for a VM that got no input).
    pub fn responses_of(&self, vm: usize) -> Vec<u64> {
        self.keystrokes_of(vm)
            .iter()
            .map(|keystroke| keystroke.response)
            .collect()
    }

    /// VM `vm`'s keystroke responses as [`KeyLog::responses_of`] gives them, each with the TSC
    /// time of the input it answers.
    pub fn timed_responses_of(&self, vm: usize) -> Vec<(u64, u64)> {
        self.keystrokes_of(vm)
            .iter()
            .map(|keystroke| (keystroke.input, keystroke.response))
            .collect()
    }

    /// VM `vm`'s keystrokes, in order: each answer from the first input after the previous
    /// answer, and the cycles between them that the VM was runnable but not running.
    pub fn keystrokes_of(&self, vm: usize) -> Vec<Keystroke> {
        let (Some(inputs), Some(answers), Some(clock)) = (
            self.inputs.get(vm),
            self.answers.get(vm),
            self.clocks.get(vm),
        ) else {
            return Vec::new();
        };
        // An answer still pending lies beyond the last event: the VM stayed as it was.
        let at_answer = |index: usize| {
            if clock.pending.contains(&index) {
                Some(clock.current.total_at(answers[index]))
            } else {
                clock.at_answers[index]
            }
        };
        let mut order: Vec<usize> = (0..answers.len()).collect();
        order.sort_by_key(|&index| answers[index]);
        let mut previous = None;
        let mut keystrokes = Vec::new();
        for index in order {
            let answer = answers[index];
            let from =
                previous.map_or(0, |previous| inputs.partition_point(|&tsc| tsc <= previous));
            if let Some(&input) = inputs.get(from).filter(|&&input| input <= answer) {
                let wait = at_answer(index)
                    .filter(|_| !self.lost)
                    .and_then(|total| total.checked_sub(clock.at_inputs[from]));
                keystrokes.push(Keystroke {
                    input,
                    response: answer - input,
                    wait,
                });
            }
            previous = Some(answer);
        }
        keystrokes
    }
}

/// p50, p99 and the largest of some cycles, nearest rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub mean: u64,
    pub p50: u64,
    pub p99: u64,
    pub min: u64,
    pub max: u64,
}

impl Spread {
    /// The spread of `values` (None when there are none).
    pub fn of(values: &[u64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let rank = |percent: usize| {
            let rank = (percent * sorted.len()).div_ceil(100).max(1);
            sorted[rank - 1]
        };
        let total: u128 = sorted.iter().map(|&value| u128::from(value)).sum();
        Some(Self {
            count: sorted.len(),
            mean: (total / sorted.len() as u128) as u64,
            p50: rank(50),
            p99: rank(99),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// One step of a VM's script with the durations of its repetitions (cycles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepDurations {
    /// The step's index in the script (0-based).
    pub step: usize,
    pub label: Option<String>,
    pub durations: Vec<u64>,
}

impl StepDurations {
    /// The step's name in reports: its label, or `step N` (1-based).
    pub fn name(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("step {}", self.step + 1))
    }
}

/// One VM's timed steps, and the whole script's time from its first send to its last match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VmSteps {
    pub steps: Vec<StepDurations>,
    /// From the first timed send to the last match, in cycles.
    pub script: Option<u64>,
}

/// Each VM's step durations: `matches[vm]` are the steps VM `vm` matched, in order. Fails when
/// records were dropped (the console events no longer pair up with the lines) or a match names
/// a line the trace has no event for.
pub fn time_steps(
    matches: &[Vec<StepMatch>],
    console: &ConsoleLog,
    keys: &KeyLog,
) -> Result<Vec<VmSteps>, String> {
    let mut lines: Vec<Vec<u64>> = vec![Vec::new(); matches.len()];
    for mark in &console.marks {
        match *mark {
            ConsoleMark::Line { vm, tsc } => {
                if let Some(lines) = lines.get_mut(usize::from(vm)) {
                    lines.push(tsc);
                }
            }
            ConsoleMark::Dropped { total } => {
                return Err(format!(
                    "{total} records were dropped, so script steps cannot be timed"
                ))
            }
        }
    }
    matches
        .iter()
        .enumerate()
        .map(|(vm, matches)| {
            let line = |index: usize| {
                lines[vm].get(index).copied().ok_or_else(|| {
                    format!(
                        "VM {vm}: a script step matched its console line {index}, but the trace \
                         has only {} console events for it",
                        lines[vm].len()
                    )
                })
            };
            let inputs = keys.inputs.get(vm).map_or(&[][..], Vec::as_slice);
            let mut out = VmSteps::default();
            let mut first_send = None;
            let mut last_end = None;
            for pair in matches.windows(2) {
                let (this, next) = (&pair[0], &pair[1]);
                if !this.sends {
                    continue;
                }
                let (matched, end) = (line(this.line)?, line(next.line)?);
                // The first input at or after the matching line, before the next match.
                let at = inputs.partition_point(|&tsc| tsc < matched);
                let Some(&sent) = inputs.get(at).filter(|&&sent| sent <= end) else {
                    continue;
                };
                first_send.get_or_insert(sent);
                last_end = Some(end);
                let duration = end - sent;
                match out
                    .steps
                    .iter_mut()
                    .find(|row| row.step == this.step && row.label == this.label)
                {
                    Some(row) => row.durations.push(duration),
                    None => out.steps.push(StepDurations {
                        step: this.step,
                        label: this.label.clone(),
                        durations: vec![duration],
                    }),
                }
            }
            out.script = first_send.zip(last_end).map(|(from, to)| to - from);
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(tsc: u64, events: Vec<Event>) -> Record {
        Record::Events { tsc, events }
    }

    fn matched(step: usize, label: Option<&str>, line: usize, sends: bool) -> StepMatch {
        StepMatch {
            step,
            label: label.map(str::to_string),
            line,
            sends,
        }
    }

    #[test]
    fn keystroke_response_runs_from_the_first_unanswered_input() {
        let input = |dt, vm| Event::Input { dt, vm, bytes: 1 };
        let records = vec![
            // A second byte before the answer counts from the first.
            events(1_000, vec![input(0, 1), input(50, 1)]),
            Record::Answer { tsc: 1_300, vm: 1 },
            events(5_000, vec![input(0, 1), input(7, 0)]),
            // Answers come late, and not in time order across VMs.
            Record::Answer { tsc: 6_000, vm: 1 },
            Record::Answer { tsc: 5_100, vm: 0 },
            // An answer without input after the previous one (the kernel sends none) is none.
            Record::Answer { tsc: 7_000, vm: 1 },
        ];
        let mut keys = KeyLog::default();
        for record in &records {
            keys.add(record);
        }
        assert_eq!(keys.responses_of(1), [300, 1_000]);
        assert_eq!(keys.responses_of(0), [93]);
        assert_eq!(keys.responses_of(2), [] as [u64; 0]);
        assert_eq!(keys.inputs[1], [1_000, 1_050, 5_000]);
        assert_eq!(keys.vm_count(), 2);
    }

    fn run(dt: u64, vm: u16) -> Event {
        Event::Run { dt, vm }
    }

    fn off(dt: u64, vm: u16, why: SliceEnd) -> Event {
        Event::Descheduled { dt, vm, why }
    }

    fn wake(dt: u64, vm: u16) -> Event {
        Event::Wake { dt, vm }
    }

    fn key(dt: u64, vm: u16) -> Event {
        Event::Input { dt, vm, bytes: 1 }
    }

    fn log(records: &[Record]) -> KeyLog {
        let mut keys = KeyLog::default();
        for record in records {
            keys.add(record);
        }
        keys
    }

    /// VM 0 halts; a byte reaches it at 1 000 while VM 1 holds the CPU until 3 000; it takes
    /// the byte, halts, gets a second at 4 000 and runs at 4 200, answering at 4 300. Its wait:
    /// 1 000 → 3 000 and 4 000 → 4 200; the blocked time between is not waiting.
    fn two_bytes() -> Vec<Record> {
        use carousel_protocol::record::BlockedOn;
        use SliceEnd::{Blocked, Preempted};
        vec![
            events(
                0,
                vec![
                    run(0, 0),
                    off(100, 0, Blocked(BlockedOn::Interrupt)),
                    run(0, 1),
                    key(900, 0),
                    wake(0, 0),
                    off(2_000, 1, Preempted),
                    run(0, 0),
                    off(500, 0, Blocked(BlockedOn::Interrupt)),
                ],
            ),
            events(
                3_500,
                vec![
                    run(0, 1),
                    key(500, 0),
                    wake(0, 0),
                    off(200, 1, Preempted),
                    run(0, 0),
                    off(200, 0, Blocked(BlockedOn::Interrupt)),
                    run(0, 1),
                ],
            ),
        ]
    }

    #[test]
    fn a_keystroke_waits_while_its_vm_is_runnable_not_running() {
        let mut records = two_bytes();
        records.push(Record::Answer { tsc: 4_300, vm: 0 });
        let keys = log(&records);
        assert_eq!(
            keys.keystrokes_of(0),
            [Keystroke {
                input: 1_000,
                response: 3_300,
                wait: Some(2_200)
            }]
        );
        // VM 1 got no input: no keystrokes, whatever its runstates.
        assert_eq!(keys.keystrokes_of(1), []);
    }

    #[test]
    fn an_answer_ahead_of_its_events_waits_for_them() {
        // The answer's record comes first: it is placed once the events pass it.
        let mut records = two_bytes();
        records.insert(1, Record::Answer { tsc: 4_300, vm: 0 });
        let keys = log(&records);
        assert_eq!(keys.keystrokes_of(0)[0].wait, Some(2_200));
        // Beyond the last event: the VM stays as it was (runnable, from 4 000).
        let keys = log(&[
            two_bytes().remove(0),
            events(
                3_500,
                vec![
                    run(0, 1),
                    key(500, 0),
                    wake(0, 0),
                    off(200, 1, SliceEnd::Preempted),
                ],
            ),
            Record::Answer { tsc: 4_300, vm: 0 },
        ]);
        assert_eq!(keys.keystrokes_of(0)[0].wait, Some(2_300));
    }

    #[test]
    fn later_keystrokes_wait_from_their_own_input() {
        use SliceEnd::Preempted;
        // The next keystroke: a byte at 10 000, VM 0 preempted at 10 100 and back at 10 400,
        // the answer at 10 500, preempted again at 10 600 (its answer's record comes after
        // that: the kept changes place it).
        let next = events(
            10_000,
            vec![
                off(0, 1, Preempted),
                key(0, 0),
                wake(0, 0),
                run(0, 0),
                off(100, 0, Preempted),
                run(0, 1),
                off(300, 1, Preempted),
                run(0, 0),
                off(200, 0, Preempted),
                run(0, 1),
            ],
        );
        let first = Record::Answer { tsc: 4_300, vm: 0 };
        let second = Record::Answer { tsc: 10_500, vm: 0 };
        // The first answer's record before the next input (as the hypervisor sends it), and
        // after it: both keystrokes' changes are kept until their answers came.
        for order in [
            [first.clone(), next.clone(), second.clone()],
            [next.clone(), first.clone(), second.clone()],
        ] {
            let mut records = two_bytes();
            records.extend(order);
            let keys = log(&records);
            let waits: Vec<_> = keys.keystrokes_of(0).iter().map(|k| k.wait).collect();
            assert_eq!(waits, [Some(2_200), Some(300)]);
            assert_eq!(keys.responses_of(0), [3_300, 500]);
        }
    }

    #[test]
    fn dropped_records_leave_waits_unknown() {
        let mut records = two_bytes();
        records.push(events(5_000, vec![Event::Dropped { dt: 0, total: 3 }]));
        records.push(Record::Answer { tsc: 4_300, vm: 0 });
        let keys = log(&records);
        assert_eq!(
            keys.keystrokes_of(0),
            [Keystroke {
                input: 1_000,
                response: 3_300,
                wait: None
            }]
        );
    }

    /// VM 0 gets a byte at 10 and runs from 20; then it and VM 1 take turns every 10 cycles,
    /// more times than a clock keeps while the answer's record has not come.
    fn long_wait(answer: u64) -> KeyLog {
        let mut turns = vec![key(10, 0), run(10, 0)];
        for _ in 0..WAIT_HISTORY_MAX {
            turns.extend([
                off(10, 0, SliceEnd::Preempted),
                run(0, 1),
                off(10, 1, SliceEnd::Preempted),
                run(0, 0),
            ]);
        }
        log(&[events(0, turns), Record::Answer { tsc: answer, vm: 0 }])
    }

    #[test]
    fn a_clock_keeps_a_bounded_history() {
        // Early in the kept changes: known (runnable 10 → 20, and 30 → 40).
        assert_eq!(long_wait(45).keystrokes_of(0)[0].wait, Some(20));
        // Past them, before the last change: unknown.
        let keys = long_wait(1_000_000);
        assert_eq!(keys.keystrokes_of(0)[0].response, 999_990);
        assert_eq!(keys.keystrokes_of(0)[0].wait, None);
        assert!(keys.clocks[0].history.len() <= WAIT_HISTORY_MAX);
    }

    #[test]
    fn spreads_are_nearest_rank() {
        let values: Vec<u64> = (1..=200).rev().collect();
        let spread = Spread::of(&values).unwrap();
        assert_eq!((spread.count, spread.p50, spread.p99), (200, 100, 198));
        assert_eq!((spread.min, spread.max, spread.mean), (1, 200, 100));
        assert_eq!(Spread::of(&[7]).unwrap().p99, 7);
        assert_eq!(Spread::of(&[]), None);
    }

    /// VM 0: lines at 100 (prompt), 400 (prompt), 900 (prompt), 1 500 (done); the script sends
    /// at each prompt; input arrives 20 cycles after each of the first two prompts.
    fn trace() -> (ConsoleLog, KeyLog) {
        let console = |dt| Event::Console {
            dt,
            vm: 0,
            bytes: 3,
        };
        let input = |dt| Event::Input {
            dt,
            vm: 0,
            bytes: 8,
        };
        let records = vec![events(
            100,
            vec![
                console(0),
                input(20),
                console(280),
                input(20),
                console(480),
                console(600),
            ],
        )];
        let mut log = ConsoleLog::default();
        let mut keys = KeyLog::default();
        for record in &records {
            log.add(record);
            keys.add(record);
        }
        (log, keys)
    }

    #[test]
    fn steps_run_from_their_input_to_the_next_match() {
        let (log, keys) = trace();
        let matches = vec![vec![
            matched(0, Some("echo"), 0, true),
            matched(0, Some("echo"), 1, true),
            matched(1, None, 3, false),
        ]];
        let steps = time_steps(&matches, &log, &keys).unwrap();
        assert_eq!(steps.len(), 1);
        let vm = &steps[0];
        assert_eq!(vm.steps.len(), 1, "the repetitions make one row");
        assert_eq!(vm.steps[0].name(), "echo");
        // 120 → 400 and 420 → 1 500 (line 2 at 900 matched nothing).
        assert_eq!(vm.steps[0].durations, [280, 1_080]);
        assert_eq!(vm.script, Some(1_380));
    }

    #[test]
    fn a_send_without_input_or_next_match_is_not_timed() {
        let (log, keys) = trace();
        let matches = vec![
            vec![
                matched(0, None, 0, true),
                // The third line: no input came between it and the last line.
                matched(1, None, 2, true),
                matched(2, None, 3, true),
            ],
            Vec::new(),
        ];
        let steps = time_steps(&matches, &log, &keys).unwrap();
        assert_eq!(steps[0].steps.len(), 1);
        assert_eq!(steps[0].steps[0].name(), "step 1");
        // 120 → 900.
        assert_eq!(steps[0].steps[0].durations, [780]);
        assert_eq!(steps[1], VmSteps::default());
    }

    #[test]
    fn unpaired_streams_are_refused() {
        let (mut log, keys) = trace();
        let beyond = vec![vec![matched(0, None, 0, true), matched(1, None, 9, false)]];
        let error = time_steps(&beyond, &log, &keys).unwrap_err();
        assert!(
            error.contains("line 9") && error.contains("only 4"),
            "{error}"
        );
        log.marks.push(ConsoleMark::Dropped { total: 2 });
        let error = time_steps(&[Vec::new()], &log, &keys).unwrap_err();
        assert!(error.contains("2 records were dropped"), "{error}");
    }
}
