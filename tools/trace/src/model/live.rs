//! The window behind the live line `carousel run` prints once a second beside the consoles:
//! each VM's share of the CPU, switches and exits per second, and records lost, over the
//! records that arrived since the last line ([`LiveWindow::take`]). Times are the hypervisor's
//! (TSC), so the rates are per second of guest-visible time, not of the host's wall clock. The
//! line itself is [`crate::render::live`]'s.

use carousel_protocol::record::{timed_events, Event, Record};

use crate::escape;

/// One window's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveFigures {
    /// Milliseconds of TSC time the window covers.
    pub millis: f64,
    /// Each VM's name and its share of the window running (0.0 ..= 1.0).
    pub shares: Vec<(String, f64)>,
    pub switches_per_s: f64,
    pub exits_per_s: f64,
    /// Records lost so far in the run.
    pub lost: u64,
}

/// What arrived since the last line.
#[derive(Debug, Default)]
pub struct LiveWindow {
    tsc_hz: u64,
    names: Vec<String>,
    /// TSC span the window covers: its first and latest instant.
    window: Option<(u64, u64)>,
    /// Running cycles per VM in the window.
    running: Vec<u64>,
    /// The VM holding the CPU and since when (counted into `running` up to the window end).
    current: Option<(u16, u64)>,
    switches: u64,
    exits: u64,
    /// Records lost so far in the run: sequence numbers that never arrived, and the
    /// hypervisor's drop counter (the same losses seen from both ends; the larger counts).
    gaps: u64,
    dropped: u64,
}

impl LiveWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sequence numbers that never arrived.
    pub fn gap(&mut self, records: u64) {
        self.gaps += records;
    }

    /// Takes one record into the window.
    pub fn record(&mut self, record: &Record) {
        match record {
            Record::Hello { tsc_hz, vms, .. } => {
                self.tsc_hz = *tsc_hz;
                self.names = vms.iter().map(|name| escape::name(name)).collect();
                self.running = vec![0; vms.len()];
            }
            Record::Events { tsc, events } => {
                for (now, event) in timed_events(*tsc, events) {
                    self.event(now, event);
                }
            }
            Record::ExitInterval { tsc, exits, .. } => {
                self.see(*tsc);
                self.exits += exits.iter().map(|stat| stat.count).sum::<u64>();
            }
            _ => {}
        }
    }

    fn see(&mut self, now: u64) {
        let (start, end) = self.window.get_or_insert((now, now));
        *start = (*start).min(now);
        *end = (*end).max(now);
    }

    fn event(&mut self, now: u64, event: &Event) {
        self.see(now);
        match *event {
            Event::Run { vm, .. } => {
                self.switches += 1;
                self.current = Some((vm, now));
            }
            Event::Descheduled { vm, .. } => {
                if let Some((running, since)) = self.current.take() {
                    if running == vm {
                        self.charge(vm, now.saturating_sub(since));
                    }
                }
            }
            Event::Dropped { total, .. } => self.dropped = self.dropped.max(total),
            Event::Wake { .. }
            | Event::Exit { .. }
            | Event::Console { .. }
            | Event::Input { .. } => {}
        }
    }

    fn charge(&mut self, vm: u16, cycles: u64) {
        if let Some(running) = self.running.get_mut(usize::from(vm)) {
            *running += cycles;
        }
    }

    /// The window's figures, and a new window; None when the window holds no time (nothing
    /// arrived, or the trace carries no events).
    pub fn take(&mut self) -> Option<LiveFigures> {
        let (start, end) = self.window?;
        let span = end.saturating_sub(start);
        // Less than a millisecond of TSC time (records caught up in a burst) gives no rates
        // worth printing: the window grows until the next line.
        if span == 0 || self.tsc_hz == 0 || span < self.tsc_hz / 1_000 {
            return None;
        }
        // A slice still running counts up to the window's end, and goes on in the next one.
        if let Some((vm, since)) = self.current {
            self.charge(vm, end.saturating_sub(since));
            self.current = Some((vm, end));
        }
        let seconds = span as f64 / self.tsc_hz as f64;
        let figures = LiveFigures {
            millis: seconds * 1e3,
            shares: self
                .names
                .iter()
                .zip(&self.running)
                .map(|(name, &running)| (name.clone(), running as f64 / span as f64))
                .collect(),
            switches_per_s: self.switches as f64 / seconds,
            exits_per_s: self.exits as f64 / seconds,
            lost: self.gaps.max(self.dropped),
        };
        self.window = Some((end, end));
        self.running.iter_mut().for_each(|running| *running = 0);
        self.switches = 0;
        self.exits = 0;
        Some(figures)
    }
}
