//! Task latencies from the console, for any guest, in TSC cycles from the hypervisor's own
//! events:
//! - **Keystroke response**: from an [`Event::Input`] (the hypervisor put host input into a
//!   VM's UART) to the VM's next [`Record::Answer`] (its first console byte after that input).
//!   Input that comes while an earlier one still waits for its answer counts from the earlier.
//! - **Step durations**: a script step that sends, from the first input delivered to the VM
//!   after the console line that matched the step (the script types only once it has seen the
//!   line), to the console line that matched the VM's next step. Which line matched which step
//!   is the host's knowledge ([`StepMatch`], from `carousel run`'s script engine); when each
//!   line was written is the trace's ([`ConsoleLog`]: the n-th console event of a VM is its
//!   n-th line).
//!
//! Keystrokes typed by hand while a script runs are input too: a step is timed from the first
//! input after its line, whoever typed it.

use carousel_protocol::record::{timed_events, Event, Record};
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

/// Each VM's console input and its answers, from the record stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLog {
    /// TSC of every input delivery, per VM id, in order.
    pub inputs: Vec<Vec<u64>>,
    /// TSC of every answer, per VM id (the records come late: sorted when read).
    pub answers: Vec<Vec<u64>>,
}

impl KeyLog {
    /// Keeps the input events and answer records of the next record.
    pub fn add(&mut self, record: &Record) {
        match record {
            Record::Events { tsc, events } => {
                for (now, event) in timed_events(*tsc, events) {
                    if let Event::Input { vm, .. } = *event {
                        let vm = self.grow(vm);
                        self.inputs[vm].push(now);
                    }
                }
            }
            Record::Answer { tsc, vm } => {
                let vm = self.grow(*vm);
                self.answers[vm].push(*tsc);
            }
            _ => {}
        }
    }

    fn grow(&mut self, vm: u16) -> usize {
        let index = usize::from(vm);
        if self.inputs.len() <= index {
            self.inputs.resize(index + 1, Vec::new());
            self.answers.resize(index + 1, Vec::new());
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
        self.timed_responses_of(vm)
            .into_iter()
            .map(|(_, response)| response)
            .collect()
    }

    /// VM `vm`'s keystroke responses as [`KeyLog::responses_of`] gives them, each with the TSC
    /// time of the input it answers.
    pub fn timed_responses_of(&self, vm: usize) -> Vec<(u64, u64)> {
        let (Some(inputs), Some(answers)) = (self.inputs.get(vm), self.answers.get(vm)) else {
            return Vec::new();
        };
        let mut answers = answers.clone();
        answers.sort_unstable();
        let mut previous = None;
        let mut responses = Vec::new();
        for answer in answers {
            let from =
                previous.map_or(0, |previous| inputs.partition_point(|&tsc| tsc <= previous));
            if let Some(&input) = inputs.get(from).filter(|&&input| input <= answer) {
                responses.push((input, answer - input));
            }
            previous = Some(answer);
        }
        responses
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
