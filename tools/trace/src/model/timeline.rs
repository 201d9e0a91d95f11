//! Who ran when, rebuilt from a trace's scheduler events.
//!
//! What is here: [`Timeline::from_records`] replays the `Events` records of a trace (level
//! `switches` or `full`) into each VM's runstates (running, runnable, blocked, stopped) as
//! spans that cover the traced time without gaps, the CPU's slices (which VM held it, and how
//! each slice ended) and, in full-rate traces, every exit. [`intervals`] cuts a timeline into
//! fixed-length intervals (`carousel report --interval`), and [`Timeline::to_micros`] converts
//! its times. The Perfetto export, the HTML page and the interval report all read timelines.
//!
//! What is not: the hypervisor's own accounting (its end-of-run summaries, in
//! [`super::accounting`]). A timeline only knows what the events said: events lost to a gap in
//! the trace show up as [`Timeline::problems`], and the replay goes on from the next event.
//!
//! Rules of the replay: at the first event every VM is runnable. `Run` makes a VM running,
//! `Descheduled` makes it runnable (preempted, yielded), blocked or stopped, and `Wake` makes a
//! blocked VM runnable. The timeline ends at the `RunEnd` record, or at the last event when the
//! trace has no `RunEnd`.

use carousel_protocol::record::{timed_events, BlockedOn, Event, Record, SliceEnd};

use super::samples::ExitInterval;

/// Microseconds in one second.
const MICROS_PER_SECOND: f64 = 1_000_000.0;

/// A VM's runstate, after Xen's (xenalyze).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RunState {
    /// Holding the CPU.
    Running,
    /// Able to run, waiting for the CPU.
    Runnable,
    /// Halted, waiting for an event.
    Blocked,
    /// Out of the run.
    Stopped,
}

impl RunState {
    /// Every runstate, in report order.
    pub const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Runnable,
        RunState::Blocked,
        RunState::Stopped,
    ];

    /// Lower-case name, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Runnable => "runnable",
            RunState::Blocked => "blocked",
            RunState::Stopped => "stopped",
        }
    }

    /// The runstate a slice's end leaves its VM in.
    pub fn after(why: SliceEnd) -> Self {
        match why {
            SliceEnd::Preempted | SliceEnd::Yielded => RunState::Runnable,
            SliceEnd::Blocked(_) => RunState::Blocked,
            SliceEnd::Stopped => RunState::Stopped,
        }
    }
}

/// What a slice's end leaves its VM blocked on (None: it did not block).
fn blocked_on(why: SliceEnd) -> Option<BlockedOn> {
    match why {
        SliceEnd::Blocked(on) => Some(on),
        SliceEnd::Preempted | SliceEnd::Yielded | SliceEnd::Stopped => None,
    }
}

/// One stretch of time a VM spent in one runstate: `[start, end)` in TSC cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub state: RunState,
    pub start: u64,
    pub end: u64,
    /// What a blocked VM waited for (None in the other states, and in traces whose events did
    /// not say).
    pub on: Option<BlockedOn>,
}

/// One slice of the CPU: VM `vm` held it over `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub vm: u16,
    pub start: u64,
    pub end: u64,
    /// How the slice ended; `None` when the trace ended first, or the next `Run` came without a
    /// `Descheduled` (events lost).
    pub ended: Option<SliceEnd>,
}

/// One VM exit of a full-rate trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitEvent {
    pub vm: u16,
    /// When the exit happened.
    pub tsc: u64,
    /// Basic exit reason.
    pub reason: u16,
    /// Root-mode cycles until the next entry.
    pub cycles: u32,
}

/// Something that happened at one time: console output or the drop counter growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant {
    pub tsc: u64,
    /// The VM it is about (none for the drop counter).
    pub vm: Option<u16>,
    /// Console: bytes written. Drop counter: records dropped so far.
    pub value: u64,
}

/// A trace's scheduling, replayed from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// The first event's time: where the timeline starts.
    pub start: u64,
    /// The `RunEnd` record's time (or the last event's, without one).
    pub end: u64,
    /// TSC frequency from the Hello record, if it named one.
    pub tsc_hz: Option<u64>,
    /// Per VM (by id): its runstates, in order, covering `[start, end)` without gaps or overlaps,
    /// no two neighbours in the same state.
    pub runstates: Vec<Vec<Span>>,
    /// The CPU's slices in order; they never overlap.
    pub slices: Vec<Slice>,
    /// Every exit of a full-rate trace, in order.
    pub exits: Vec<ExitEvent>,
    /// Console writes, in order.
    pub consoles: Vec<Instant>,
    /// Drop-counter updates, in order.
    pub dropped: Vec<Instant>,
    /// What did not fit the rules: events that contradict the state they found (a sign of
    /// events lost to a gap), times that went backwards.
    pub problems: Vec<String>,
}

/// Counts of events that did not fit the replay's rules.
#[derive(Debug, Default)]
struct Misfits {
    /// A `Run` while another VM still held the CPU.
    run_while_running: u64,
    /// A `Descheduled` of a VM that did not hold the CPU.
    descheduled_idle: u64,
    /// An event earlier than the one before it (then taken as simultaneous).
    backwards: u64,
}

/// The replay in progress.
#[derive(Debug)]
struct Replay {
    start: u64,
    /// Per VM: its current runstate (and what it waits for, if blocked), since when, and its
    /// finished spans.
    current: Vec<(RunState, Option<BlockedOn>, u64)>,
    runstates: Vec<Vec<Span>>,
    /// The VM holding the CPU, since when.
    holder: Option<(u16, u64)>,
    slices: Vec<Slice>,
    misfits: Misfits,
}

impl Replay {
    fn new(start: u64, vms: usize) -> Self {
        let mut replay = Replay {
            start,
            current: Vec::new(),
            runstates: Vec::new(),
            holder: None,
            slices: Vec::new(),
            misfits: Misfits::default(),
        };
        replay.grow(vms);
        replay
    }

    /// Makes room for VM ids below `vms`; a VM first named late was runnable from the start.
    fn grow(&mut self, vms: usize) {
        while self.current.len() < vms {
            self.current.push((RunState::Runnable, None, self.start));
            self.runstates.push(Vec::new());
        }
    }

    fn state(&self, vm: u16) -> RunState {
        self.current[usize::from(vm)].0
    }

    /// VM `vm` enters `state` at `now` (blocked `on` something, for a blocked VM).
    fn enter(&mut self, vm: u16, state: RunState, now: u64) {
        self.enter_on(vm, state, None, now);
    }

    fn enter_on(&mut self, vm: u16, state: RunState, on: Option<BlockedOn>, now: u64) {
        let index = usize::from(vm);
        let (old, old_on, since) = self.current[index];
        if (old, old_on) != (state, on) {
            push_span(&mut self.runstates[index], (old, old_on), since, now);
            self.current[index] = (state, on, now);
        }
    }

    /// The CPU's current slice ends at `now`.
    fn end_slice(&mut self, now: u64, ended: Option<SliceEnd>) {
        if let Some((vm, since)) = self.holder.take() {
            self.slices.push(Slice {
                vm,
                start: since,
                end: now,
                ended,
            });
        }
    }

    fn event(&mut self, now: u64, event: &Event) {
        if let Some(vm) = event.vm() {
            self.grow(usize::from(vm) + 1);
        }
        match *event {
            Event::Run { vm, .. } => {
                if let Some((holder, _)) = self.holder {
                    self.misfits.run_while_running += 1;
                    self.end_slice(now, None);
                    if holder != vm {
                        self.enter(holder, RunState::Runnable, now);
                    }
                }
                self.holder = Some((vm, now));
                self.enter(vm, RunState::Running, now);
            }
            Event::Descheduled { vm, why, .. } => {
                if self.holder.is_some_and(|(holder, _)| holder == vm) {
                    self.end_slice(now, Some(why));
                } else {
                    self.misfits.descheduled_idle += 1;
                }
                self.enter_on(vm, RunState::after(why), blocked_on(why), now);
            }
            Event::Wake { vm, .. } => {
                if self.state(vm) == RunState::Blocked {
                    self.enter(vm, RunState::Runnable, now);
                }
            }
            Event::Exit { .. }
            | Event::Console { .. }
            | Event::Dropped { .. }
            | Event::Input { .. } => {}
        }
    }

    /// Closes every open span and slice at `end`.
    fn finish(mut self, end: u64) -> (Vec<Vec<Span>>, Vec<Slice>, Misfits) {
        self.end_slice(end, None);
        for (spans, &(state, on, since)) in self.runstates.iter_mut().zip(&self.current) {
            push_span(spans, (state, on), since, end);
        }
        (self.runstates, self.slices, self.misfits)
    }
}

/// Appends `[start, end)` in `state` (blocked on `on`), merged into the last span when that one
/// has the same state and reason; an empty span is left out.
fn push_span(
    spans: &mut Vec<Span>,
    (state, on): (RunState, Option<BlockedOn>),
    start: u64,
    end: u64,
) {
    if end <= start {
        return;
    }
    match spans.last_mut() {
        Some(last) if last.state == state && last.on == on && last.end == start => last.end = end,
        _ => spans.push(Span {
            state,
            start,
            end,
            on,
        }),
    }
}

/// What a [`TimelineBuilder`] saw end since it was last asked ([`TimelineBuilder::take_ended`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// Finished runstate spans, with their VM's id, by end time.
    pub spans: Vec<(u16, Span)>,
    /// Finished slices, in order.
    pub slices: Vec<Slice>,
}

/// Gathers a [`Timeline`] a record at a time, as a trace decodes.
#[derive(Debug, Default)]
pub struct TimelineBuilder {
    tsc_hz: Option<u64>,
    named: usize,
    run_end: Option<u64>,
    replay: Option<Replay>,
    now: u64,
    exits: Vec<ExitEvent>,
    consoles: Vec<Instant>,
    dropped: Vec<Instant>,
    backwards: u64,
}

impl TimelineBuilder {
    /// Replays the next record of the trace (only Hello, Events and RunEnd matter).
    pub fn add(&mut self, record: &Record) {
        let (batch, events) = match record {
            Record::Hello {
                tsc_hz: hz, vms, ..
            } => {
                self.tsc_hz = (*hz != 0).then_some(*hz);
                self.named = vms.len();
                return;
            }
            Record::RunEnd { tsc } => {
                self.run_end = Some(*tsc);
                return;
            }
            Record::Events { tsc, events } => (*tsc, events),
            _ => return,
        };
        for (at, event) in timed_events(batch, events) {
            let named = self.named;
            let now = &mut self.now;
            let replay = self.replay.get_or_insert_with(|| {
                *now = at;
                Replay::new(at, named)
            });
            if at < *now {
                self.backwards += 1;
            } else {
                *now = at;
            }
            let now = *now;
            replay.event(now, event);
            match *event {
                Event::Exit {
                    vm, reason, cycles, ..
                } => self.exits.push(ExitEvent {
                    vm,
                    tsc: now,
                    reason,
                    cycles,
                }),
                Event::Console { vm, bytes, .. } => self.consoles.push(Instant {
                    tsc: now,
                    vm: Some(vm),
                    value: u64::from(bytes),
                }),
                Event::Dropped { total, .. } => self.dropped.push(Instant {
                    tsc: now,
                    vm: None,
                    value: total,
                }),
                Event::Run { .. }
                | Event::Descheduled { .. }
                | Event::Wake { .. }
                | Event::Input { .. } => {}
            }
        }
    }

    /// What ended since the last call, for a feed that forgets as it goes (the web page's):
    /// each VM's finished runstate spans (by VM id) and the CPU's finished slices, in the order
    /// they ended. The builder keeps none of it, nor its exit, console and drop instants, so
    /// its memory stays bounded; [`TimelineBuilder::finish`] then lacks what was taken.
    pub fn take_ended(&mut self) -> Ended {
        self.exits.clear();
        self.consoles.clear();
        self.dropped.clear();
        let Some(replay) = &mut self.replay else {
            return Ended::default();
        };
        let mut spans = Vec::new();
        for (vm, list) in replay.runstates.iter_mut().enumerate() {
            spans.extend(list.drain(..).map(|span| (vm as u16, span)));
        }
        spans.sort_by_key(|(_, span)| span.end);
        Ended {
            spans,
            slices: std::mem::take(&mut replay.slices),
        }
    }

    /// Ends every open span and slice at `end` (the run ended there); later events open new
    /// ones. [`TimelineBuilder::take_ended`] then hands them out.
    pub fn close(&mut self, end: u64) {
        let Some(replay) = &mut self.replay else {
            return;
        };
        replay.end_slice(end, None);
        for (vm, (state, on, since)) in replay.current.iter_mut().enumerate() {
            push_span(&mut replay.runstates[vm], (*state, *on), *since, end);
            *since = end.max(*since);
        }
    }

    /// The timeline of the records added; `None` when they held no event at all (a trace at
    /// level `aggregate`).
    pub fn finish(self) -> Option<Timeline> {
        let replay = self.replay?;
        let start = replay.start;
        let end = self.run_end.map_or(self.now, |end| end.max(self.now));
        let (runstates, slices, mut misfits) = replay.finish(end);
        misfits.backwards = self.backwards;
        Some(Timeline {
            start,
            end,
            tsc_hz: self.tsc_hz,
            runstates,
            slices,
            exits: self.exits,
            consoles: self.consoles,
            dropped: self.dropped,
            problems: misfits.describe(),
        })
    }
}

impl Timeline {
    /// The timeline of a trace's records; `None` when they hold no event at all (a trace at
    /// level `aggregate`).
    pub fn from_records(records: &[Record]) -> Option<Timeline> {
        let mut builder = TimelineBuilder::default();
        for record in records {
            builder.add(record);
        }
        builder.finish()
    }

    /// Cycles the timeline covers.
    pub fn length(&self) -> u64 {
        self.end - self.start
    }

    /// Cycles since the timeline's start, in microseconds (at 1 GHz when the trace names no
    /// TSC frequency: one cycle per nanosecond).
    pub fn to_micros(&self, tsc: u64) -> f64 {
        let hz = self.tsc_hz.unwrap_or(1_000_000_000);
        tsc.saturating_sub(self.start) as f64 * MICROS_PER_SECOND / hz as f64
    }
}

impl Misfits {
    fn describe(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.run_while_running > 0 {
            problems.push(format!(
                "{} Run event(s) came while a VM still held the CPU (Descheduled events lost?); \
                 its slice ends there",
                self.run_while_running
            ));
        }
        if self.descheduled_idle > 0 {
            problems.push(format!(
                "{} Descheduled event(s) named a VM that did not hold the CPU (Run events lost?)",
                self.descheduled_idle
            ));
        }
        if self.backwards > 0 {
            problems.push(format!(
                "{} event(s) were earlier than the one before; taken as simultaneous",
                self.backwards
            ));
        }
        problems
    }
}

/// One VM over one interval: cycles in each runstate (clipped to the interval), exits and their
/// root-mode cycles, and slices begun.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmInterval {
    pub running: u64,
    pub runnable: u64,
    pub blocked: u64,
    pub stopped: u64,
    /// Of `blocked`, the cycles blocked on the shared disk.
    pub blocked_disk: u64,
    pub exits: u64,
    pub exit_cycles: u64,
    /// Slices the VM began in the interval (switches to it).
    pub switches: u64,
}

impl VmInterval {
    fn add(&mut self, state: RunState, on: Option<BlockedOn>, cycles: u64) {
        if on == Some(BlockedOn::Disk) {
            self.blocked_disk += cycles;
        }
        match state {
            RunState::Running => self.running += cycles,
            RunState::Runnable => self.runnable += cycles,
            RunState::Blocked => self.blocked += cycles,
            RunState::Stopped => self.stopped += cycles,
        }
    }
}

/// One interval of a timeline: `[start, end)`, and every VM's figures over it (by VM id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub start: u64,
    pub end: u64,
    pub vms: Vec<VmInterval>,
    /// The shared disk over the interval, in a trace with a timed disk's requests.
    pub disk: Option<super::disk::DiskInterval>,
}

impl Interval {
    /// Cycles the interval lasts.
    pub fn length(&self) -> u64 {
        self.end - self.start
    }

    /// `cycles` as a share of the interval (0.0 ..= 1.0).
    pub fn share(&self, cycles: u64) -> f64 {
        cycles as f64 / self.length().max(1) as f64
    }
}

/// Most intervals [`intervals`] makes; a shorter length is refused.
pub const MAX_INTERVALS: u64 = 1_000_000;

/// The timeline cut into intervals of `length` cycles from its start (the last one may be
/// shorter). Exits come from the trace's exit intervals: each counts in the interval
/// that holds its own interval's midpoint (earlier ones in the first, later ones in the last).
/// `None` when `length` is 0 or would make more than [`MAX_INTERVALS`].
pub fn intervals(
    timeline: &Timeline,
    exit_intervals: &[ExitInterval],
    length: u64,
) -> Option<Vec<Interval>> {
    if length == 0 || timeline.length() / length >= MAX_INTERVALS {
        return None;
    }
    let count = timeline.length().div_ceil(length).max(1);
    let exit_vms = exit_intervals
        .iter()
        .map(|sample| usize::from(sample.vm) + 1)
        .max()
        .unwrap_or(0);
    let vms = timeline.runstates.len().max(exit_vms);
    let mut rows: Vec<Interval> = (0..count)
        .map(|index| {
            let start = timeline.start + index * length;
            Interval {
                start,
                end: (start + length).min(timeline.end.max(start + 1)),
                vms: vec![VmInterval::default(); vms],
                disk: None,
            }
        })
        .collect();
    let index_of = |tsc: u64| -> usize {
        let offset = tsc.saturating_sub(timeline.start) / length;
        offset.min(count - 1) as usize
    };
    for (vm, spans) in timeline.runstates.iter().enumerate() {
        for span in spans {
            let mut at = span.start;
            while at < span.end {
                let index = index_of(at);
                // The row holding `at` ends after it (the last one where the timeline does).
                let until = span.end.min(rows[index].end);
                rows[index].vms[vm].add(span.state, span.on, until - at);
                at = until;
            }
        }
    }
    for slice in &timeline.slices {
        rows[index_of(slice.start)].vms[usize::from(slice.vm)].switches += 1;
    }
    for sample in exit_intervals {
        let middle = sample.tsc.saturating_sub(sample.interval / 2);
        let row = &mut rows[index_of(middle)].vms[usize::from(sample.vm)];
        row.exits += sample.exits;
        row.exit_cycles = row.exit_cycles.saturating_add(sample.cycles);
    }
    Some(rows)
}

#[cfg(test)]
pub(crate) mod tests {
    use carousel_protocol::record::ExitStat;

    use super::*;

    /// The exit intervals of `records`, as the model keeps them.
    pub(crate) fn exit_intervals(records: &[Record]) -> Vec<ExitInterval> {
        let mut samples = crate::model::samples::Samples::default();
        for record in records {
            samples.add(record);
        }
        samples.exit_intervals
    }

    /// A Hello naming `names` at 1 MHz (a cycle is a microsecond).
    pub(crate) fn hello(names: &[&str]) -> Record {
        crate::fixtures::hello(names, 1_000_000)
    }

    /// Events at absolute times, packed into one batch starting at 0.
    pub(crate) fn batch(events: &[(u64, Event)]) -> Record {
        let mut last = 0;
        let events = events
            .iter()
            .map(|&(at, event)| {
                let dt = at - last;
                last = at;
                event.with_dt(dt)
            })
            .collect();
        Record::Events { tsc: 0, events }
    }

    pub(crate) fn run(vm: u16) -> Event {
        Event::Run { dt: 0, vm }
    }

    pub(crate) fn off(vm: u16, why: SliceEnd) -> Event {
        Event::Descheduled { dt: 0, vm, why }
    }

    pub(crate) fn wake(vm: u16) -> Event {
        Event::Wake { dt: 0, vm }
    }

    /// Two VMs: a runs 100..400 and is preempted, b runs 410..600 and blocks, a runs 610..900,
    /// b wakes at 700 and runs 910..1000 until it stops; the run ends at 1200.
    pub(crate) fn two_vms() -> Vec<Record> {
        two_vms_with(&[])
    }

    /// [`two_vms`] with `extra` events among its own (each after those of its time).
    pub(crate) fn two_vms_with(extra: &[(u64, Event)]) -> Vec<Record> {
        let mut events = vec![
            (100, run(0)),
            (400, off(0, SliceEnd::Preempted)),
            (410, run(1)),
            (600, off(1, SliceEnd::Blocked(BlockedOn::Timer))),
            (610, run(0)),
            (700, wake(1)),
            (900, off(0, SliceEnd::Yielded)),
            (910, run(1)),
            (1000, off(1, SliceEnd::Stopped)),
        ];
        events.extend_from_slice(extra);
        events.sort_by_key(|&(at, _)| at);
        vec![
            hello(&["a", "b"]),
            batch(&events),
            Record::RunEnd { tsc: 1200 },
        ]
    }

    fn spans(timeline: &Timeline, vm: usize) -> Vec<(RunState, u64, u64)> {
        timeline.runstates[vm]
            .iter()
            .map(|span| (span.state, span.start, span.end))
            .collect()
    }

    #[test]
    fn runstates_follow_the_events_and_cover_the_run() {
        use RunState::*;
        let timeline = Timeline::from_records(&two_vms()).expect("events");
        assert_eq!((timeline.start, timeline.end), (100, 1200));
        assert_eq!(
            spans(&timeline, 0),
            [
                (Running, 100, 400),
                (Runnable, 400, 610),
                (Running, 610, 900),
                (Runnable, 900, 1200)
            ]
        );
        assert_eq!(
            spans(&timeline, 1),
            [
                (Runnable, 100, 410),
                (Running, 410, 600),
                (Blocked, 600, 700),
                (Runnable, 700, 910),
                (Running, 910, 1000),
                (Stopped, 1000, 1200)
            ]
        );
        let slices: Vec<(u16, u64, u64)> = timeline
            .slices
            .iter()
            .map(|slice| (slice.vm, slice.start, slice.end))
            .collect();
        assert_eq!(
            slices,
            [(0, 100, 400), (1, 410, 600), (0, 610, 900), (1, 910, 1000)]
        );
        assert_eq!(
            timeline.slices[1].ended,
            Some(SliceEnd::Blocked(BlockedOn::Timer))
        );
        assert!(timeline.problems.is_empty(), "{:?}", timeline.problems);
    }

    #[test]
    fn no_events_no_timeline() {
        let records = [hello(&["a"]), Record::RunEnd { tsc: 5 }];
        assert_eq!(Timeline::from_records(&records), None);
    }

    #[test]
    fn lost_events_are_named_and_the_replay_goes_on() {
        let records = [
            hello(&["a", "b"]),
            batch(&[
                (10, run(0)),
                (20, run(1)),
                (30, off(0, SliceEnd::Preempted)),
            ]),
            Record::Events {
                tsc: 5,
                events: vec![Event::Run { dt: 0, vm: 0 }],
            },
        ];
        let timeline = Timeline::from_records(&records).expect("events");
        assert_eq!(timeline.problems.len(), 3, "{:?}", timeline.problems);
        assert_eq!(timeline.end, 30);
        // The slices still never overlap.
        for pair in timeline.slices.windows(2) {
            assert!(pair[0].end <= pair[1].start, "{:?}", timeline.slices);
        }
        assert_eq!(timeline.slices[0].ended, None);
    }

    #[test]
    fn a_run_without_run_end_ends_at_its_last_event() {
        let records = [hello(&["a"]), batch(&[(10, run(0)), (50, wake(0))])];
        let timeline = Timeline::from_records(&records).expect("events");
        assert_eq!(timeline.end, 50);
        assert_eq!(timeline.slices.len(), 1);
        assert_eq!(timeline.slices[0].end, 50);
        assert_eq!(timeline.to_micros(60), 50.0);
    }

    #[test]
    fn intervals_clip_runstates_and_place_exits() {
        let mut records = two_vms();
        records.push(Record::ExitInterval {
            tsc: 600,
            vm: 1,
            interval: 200,
            exits: vec![ExitStat {
                reason: 30,
                count: 4,
                cycles: 80,
                min: 10,
                max: 30,
                log2: vec![],
            }],
        });
        let timeline = Timeline::from_records(&records).expect("events");
        let rows = intervals(&timeline, &exit_intervals(&records), 500).expect("intervals");
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].start, rows[0].end), (100, 600));
        assert_eq!((rows[2].start, rows[2].end), (1100, 1200));
        // a: running 100..400 in the first interval, then 610..900 in the second.
        assert_eq!(rows[0].vms[0].running, 300);
        assert_eq!(rows[0].vms[0].runnable, 200);
        assert_eq!(rows[1].vms[0].running, 290);
        assert_eq!(rows[0].vms[0].switches, 1);
        // b's exits: their interval 400..600 has its middle (500) in the first.
        assert_eq!(rows[0].vms[1].exits, 4);
        assert_eq!(rows[0].vms[1].exit_cycles, 80);
        assert_eq!(rows[1].vms[1].stopped, 100);
        assert_eq!(rows[2].vms[1].stopped, 100);
        assert_eq!(rows[2].share(50), 0.5);
        for row in &rows {
            for vm in &row.vms {
                let total = vm.running + vm.runnable + vm.blocked + vm.stopped;
                assert_eq!(total, row.length(), "{rows:?}");
            }
        }
        assert!(intervals(&timeline, &exit_intervals(&records), 0).is_none());
    }

    /// An event of any kind from `(kind, vm, why)`.
    pub(crate) fn any_event(kind: u8, vm: u16, why: u8) -> Event {
        let reason = u16::from(why) * 17;
        let why = [
            SliceEnd::Preempted,
            SliceEnd::Yielded,
            SliceEnd::Blocked(BlockedOn::Timer),
            SliceEnd::Stopped,
        ][usize::from(why % 4)];
        match kind % 6 {
            0 | 1 => run(vm),
            2 => off(vm, why),
            3 => wake(vm),
            4 => Event::Exit {
                dt: 0,
                vm,
                reason,
                cycles: 50,
            },
            _ => Event::Console {
                dt: 0,
                vm,
                bytes: 3,
            },
        }
    }

    /// Random event batches (some starting before the previous batch ended), with or without
    /// a RunEnd.
    pub(crate) fn any_records() -> impl proptest::strategy::Strategy<Value = Vec<Record>> {
        use proptest::prelude::*;
        let event = (0u64..2_000, 0u8..6, 0u16..5, 0u8..4);
        (
            proptest::collection::vec(proptest::collection::vec(event, 0..40), 1..4),
            proptest::option::of(0u64..100_000),
            0u64..3_000,
        )
            .prop_map(|(batches, run_end, rewind)| {
                let mut records = vec![hello(&["a", "b", "c"])];
                let mut tsc = 0u64;
                for batch in batches {
                    let events: Vec<Event> = batch
                        .into_iter()
                        .map(|(dt, kind, vm, why)| any_event(kind, vm, why).with_dt(dt))
                        .collect();
                    let base = tsc.saturating_sub(rewind);
                    tsc = base + events.iter().map(Event::dt).sum::<u64>();
                    records.push(Record::Events { tsc: base, events });
                }
                if let Some(end) = run_end {
                    records.push(Record::RunEnd { tsc: end });
                }
                records
            })
    }

    proptest::proptest! {
        /// Whatever the events, the replay keeps its promises: each VM's runstates cover the
        /// timeline without gaps or overlaps, the CPU's slices never overlap, and intervals
        /// account for every cycle.
        #[test]
        fn any_events_replay_into_a_consistent_timeline(records in any_records()) {
            let Some(timeline) = Timeline::from_records(&records) else {
                return Ok(());
            };
            for spans in &timeline.runstates {
                let mut at = timeline.start;
                for span in spans {
                    proptest::prop_assert_eq!(span.start, at);
                    proptest::prop_assert!(span.end > span.start);
                    at = span.end;
                }
                proptest::prop_assert_eq!(at.max(timeline.start), timeline.end);
            }
            for pair in timeline.slices.windows(2) {
                proptest::prop_assert!(pair[0].end <= pair[1].start);
            }
            let length = (timeline.length() / 7).max(1);
            let rows = intervals(&timeline, &exit_intervals(&records), length).expect("few intervals");
            for row in &rows {
                for vm in &row.vms {
                    let total = vm.running + vm.runnable + vm.blocked + vm.stopped;
                    proptest::prop_assert!(
                        total == row.length() || timeline.length() == 0,
                        "{:?}", row
                    );
                }
            }
        }
    }
}
