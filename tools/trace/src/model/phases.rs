//! A run cut at its setting changes: each phase is the stretch between two changes the
//! hypervisor made (a `[[run.change]]` at its time, or a console request), with every VM's
//! runstates, slices, wake-to-run latencies and keystroke responses inside it, so that the
//! figures before and after a change can be compared within one run.
//!
//! Refused requests do not cut (nothing changed). Changes made at the same instant (the
//! hypervisor makes them between two slices) open one phase together. A wake belongs to the
//! phase its wait began in, a keystroke response to the phase of its input: a figure is
//! counted where the thing it measures started, never split.

use carousel_protocol::config::Setting;

use super::settings::Settings;
use super::steps::KeyLog;
use super::timeline::{RunState, Timeline};

/// One VM over one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseVm {
    /// Cycles holding the CPU.
    pub running: u64,
    /// Cycles able to run, waiting for the CPU.
    pub runnable: u64,
    /// Slices begun.
    pub switches: u64,
    /// Wake-to-run latencies, cycles: each wait for the CPU that followed a block (its
    /// Runnable span after a Blocked one), in order.
    pub wakes: Vec<u64>,
    /// Keystroke responses whose input came in the phase, cycles, in order.
    pub keystrokes: Vec<u64>,
}

/// One stretch of the run between two setting changes: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub start: u64,
    pub end: u64,
    /// The changes made at its start, in the order made (none for the first phase).
    pub changes: Vec<Setting>,
    /// Per VM, by id.
    pub vms: Vec<PhaseVm>,
}

impl Phase {
    /// Cycles the phase lasts.
    pub fn length(&self) -> u64 {
        self.end - self.start
    }
}

/// The run's phases, in time order; `None` when the run made no change (or the trace holds no
/// scheduler events). A change at or before the timeline's start joins the first phase's
/// changes; one at or after its end is left out (no time followed it).
pub fn phases(timeline: &Timeline, settings: &Settings, keys: &KeyLog) -> Option<Vec<Phase>> {
    let vms = timeline.runstates.len();
    let empty = |start, end| Phase {
        start,
        end,
        changes: Vec::new(),
        vms: vec![PhaseVm::default(); vms],
    };
    let mut phases = vec![empty(timeline.start, timeline.end)];
    for change in settings.changes.iter().filter(|change| change.made()) {
        if change.tsc >= timeline.end {
            continue;
        }
        let last = phases.last_mut().expect("at least one phase");
        if change.tsc > last.start {
            last.end = change.tsc;
            phases.push(empty(change.tsc, timeline.end));
        }
        phases
            .last_mut()
            .expect("at least one phase")
            .changes
            .push(change.setting);
    }
    if phases.len() == 1 && phases[0].changes.is_empty() {
        return None;
    }
    // The phase holding `tsc` (times before the start in the first, after the end in the last).
    let bounds: Vec<(u64, u64)> = phases
        .iter()
        .map(|phase| (phase.start, phase.end))
        .collect();
    let index_of = |tsc: u64| {
        bounds
            .partition_point(|&(start, _)| start <= tsc)
            .saturating_sub(1)
    };
    for (vm, spans) in timeline.runstates.iter().enumerate() {
        let mut previous = None;
        for span in spans {
            if span.state == RunState::Runnable && previous == Some(RunState::Blocked) {
                phases[index_of(span.start)].vms[vm]
                    .wakes
                    .push(span.end - span.start);
            }
            previous = Some(span.state);
            // Runstate cycles are clipped to each phase they overlap.
            let mut at = span.start;
            while at < span.end {
                let index = index_of(at);
                let until = span.end.min(bounds[index].1).max(at + 1);
                let row = &mut phases[index].vms[vm];
                match span.state {
                    RunState::Running => row.running += until - at,
                    RunState::Runnable => row.runnable += until - at,
                    RunState::Blocked | RunState::Stopped => {}
                }
                at = until;
            }
        }
    }
    for slice in &timeline.slices {
        if let Some(row) = phases[index_of(slice.start)]
            .vms
            .get_mut(usize::from(slice.vm))
        {
            row.switches += 1;
        }
    }
    for vm in 0..keys.vm_count().min(vms) {
        for (input, response) in keys.timed_responses_of(vm) {
            phases[index_of(input)].vms[vm].keystrokes.push(response);
        }
    }
    Some(phases)
}

#[cfg(test)]
mod tests {
    use carousel_protocol::config::SettingError;
    use carousel_protocol::record::{ChangeSource, Event, Record};

    use super::super::settings::SettingChange;
    use super::super::timeline::{Slice, Span};
    use super::*;

    fn span(state: RunState, start: u64, end: u64) -> Span {
        Span {
            state,
            start,
            end,
            on: None,
        }
    }

    fn slice(vm: u16, start: u64, end: u64) -> Slice {
        Slice {
            vm,
            start,
            end,
            ended: None,
        }
    }

    fn change(tsc: u64, setting: Setting, refused: Option<SettingError>) -> SettingChange {
        SettingChange {
            tsc,
            setting,
            source: ChangeSource::Lab,
            refused,
        }
    }

    /// Two VMs over [0, 1000): VM 0 runs [0, 300), waits [300, 500), runs [500, 1000); VM 1
    /// blocks, waits 50 cycles after its wake at 250, runs [300, 500), blocks, waits 50 after its
    /// wake at 700, blocks again.
    fn timeline() -> Timeline {
        use RunState::*;
        Timeline {
            start: 0,
            end: 1_000,
            tsc_hz: Some(1_000),
            runstates: vec![
                vec![
                    span(Running, 0, 300),
                    span(Runnable, 300, 500),
                    span(Running, 500, 1_000),
                ],
                vec![
                    span(Blocked, 0, 250),
                    span(Runnable, 250, 300),
                    span(Running, 300, 500),
                    span(Blocked, 500, 700),
                    span(Runnable, 700, 750),
                    span(Blocked, 750, 1_000),
                ],
            ],
            slices: vec![slice(0, 0, 300), slice(1, 300, 500), slice(0, 500, 1_000)],
            exits: Vec::new(),
            consoles: Vec::new(),
            dropped: Vec::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn a_run_without_changes_has_no_phases() {
        let mut settings = Settings::default();
        // A refused request changes nothing.
        settings.changes.push(change(
            400,
            Setting::Quantum { us: 0 },
            Some(SettingError::Quantum { us: 0 }),
        ));
        assert_eq!(phases(&timeline(), &settings, &KeyLog::default()), None);
    }

    #[test]
    fn changes_cut_the_run_and_each_figure_counts_where_it_began() {
        let mut settings = Settings::default();
        let quantum = Setting::Quantum { us: 4_000 };
        let weight = Setting::Weight { vm: 1, weight: 3 };
        settings.changes.push(change(400, quantum, None));
        // Made at the same instant: the same phase.
        settings.changes.push(change(400, weight, None));
        // Past the end: no time followed it.
        settings.changes.push(change(1_000, quantum, None));
        let mut keys = KeyLog::default();
        for record in [
            Record::Events {
                tsc: 100,
                events: vec![
                    Event::Input {
                        dt: 0,
                        vm: 1,
                        bytes: 1,
                    },
                    Event::Input {
                        dt: 500,
                        vm: 1,
                        bytes: 1,
                    },
                ],
            },
            Record::Answer { tsc: 320, vm: 1 },
            Record::Answer { tsc: 640, vm: 1 },
        ] {
            keys.add(&record);
        }
        let phases = phases(&timeline(), &settings, &keys).expect("one change was made");
        assert_eq!(phases.len(), 2);
        assert_eq!((phases[0].start, phases[0].end), (0, 400));
        assert_eq!((phases[1].start, phases[1].end), (400, 1_000));
        assert!(phases[0].changes.is_empty());
        assert_eq!(phases[1].changes, [quantum, weight]);
        // VM 0: runs [0, 300) and [500, 1000), waits [300, 500), which the cut splits.
        assert_eq!(
            (phases[0].vms[0].running, phases[0].vms[0].runnable),
            (300, 100)
        );
        assert_eq!(
            (phases[1].vms[0].running, phases[1].vms[0].runnable),
            (500, 100)
        );
        // VM 0 never blocked, so none of its waits is a wake.
        assert!(phases.iter().all(|phase| phase.vms[0].wakes.is_empty()));
        // VM 1's two wakes, 50 cycles each, one each side of the cut.
        assert_eq!(phases[0].vms[1].wakes, [50]);
        assert_eq!(phases[1].vms[1].wakes, [50]);
        // VM 1 runs [300, 500): 100 cycles in each phase.
        assert_eq!(phases[0].vms[1].running, 100);
        assert_eq!(phases[1].vms[1].running, 100);
        // Slices counted where they begin.
        assert_eq!(phases[0].vms[0].switches, 1);
        assert_eq!(phases[0].vms[1].switches, 1);
        assert_eq!(phases[1].vms[0].switches, 1);
        // Keystrokes go where their input came.
        assert_eq!(phases[0].vms[1].keystrokes, [220]);
        assert_eq!(phases[1].vms[1].keystrokes, [40]);
    }

    #[test]
    fn a_change_at_the_start_opens_the_first_phase() {
        let mut settings = Settings::default();
        let quantum = Setting::Quantum { us: 2_000 };
        settings.changes.push(change(0, quantum, None));
        let phases = phases(&timeline(), &settings, &KeyLog::default()).expect("a change");
        assert_eq!(phases.len(), 1);
        assert_eq!(phases[0].changes, [quantum]);
        assert_eq!(phases[0].vms[0].running, 800);
    }
}
