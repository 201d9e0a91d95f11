//! The live summary `carousel run` prints once a second beside the consoles: each VM's share of
//! the CPU, switches and exits per second, and records lost, over the records that arrived
//! since the last line. Times are the hypervisor's (TSC), so the rates are per second of
//! guest-visible time, not of the host's wall clock.

use carousel_protocol::record::{timed_events, Event, Record};

use crate::accounting::group;

/// What arrived since the last line.
#[derive(Debug, Default)]
pub struct LiveSummary {
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

impl LiveSummary {
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
                self.names = vms.clone();
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
            Event::Wake { .. } | Event::Exit { .. } | Event::Console { .. } => {}
        }
    }

    fn charge(&mut self, vm: u16, cycles: u64) {
        if let Some(running) = self.running.get_mut(usize::from(vm)) {
            *running += cycles;
        }
    }

    /// The line for the window, which then starts anew; None when the window holds no time
    /// (nothing arrived, or the trace carries no events).
    pub fn line(&mut self) -> Option<String> {
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
        let shares: Vec<String> = self
            .names
            .iter()
            .zip(&self.running)
            .map(|(name, &running)| format!("{name} {:.0}%", running as f64 * 100.0 / span as f64))
            .collect();
        let line = format!(
            "[carousel] live {:.0} ms: {} | {} switches/s, {} exits/s, {} lost",
            seconds * 1e3,
            shares.join(" "),
            group((self.switches as f64 / seconds) as u64),
            group((self.exits as f64 / seconds) as u64),
            self.gaps.max(self.dropped)
        );
        self.window = Some((end, end));
        self.running.iter_mut().for_each(|running| *running = 0);
        self.switches = 0;
        self.exits = 0;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{ExitStat, SliceEnd, TraceLevel, TscSource};

    use super::*;

    fn hello() -> Record {
        Record::Hello {
            version: 1,
            lab_hash: 0,
            tsc_hz: 1_000,
            tsc_source: TscSource::LabFile,
            preemption_timer_rate: 0,
            cpu: String::new(),
            vms: vec!["a".into(), "b".into()],
            commit: String::new(),
            level: TraceLevel::Switches,
            weights: Vec::new(),
            quantum_clock: carousel_protocol::config::QuantumClock::Wall,
        }
    }

    fn slice(vm: u16, dt_run: u64, length: u64) -> [Event; 2] {
        [
            Event::Run { dt: dt_run, vm },
            Event::Descheduled {
                dt: length,
                vm,
                why: SliceEnd::Preempted,
            },
        ]
    }

    #[test]
    fn shares_and_rates_cover_the_window() {
        let mut live = LiveSummary::new();
        live.record(&hello());
        // 1,000 cycles = 1 s: a runs 600, b runs 300, 100 of switching.
        let mut events = slice(0, 0, 600).to_vec();
        events.extend(slice(1, 50, 300));
        events.push(Event::Run { dt: 50, vm: 0 });
        live.record(&Record::Events { tsc: 0, events });
        live.record(&Record::ExitInterval {
            tsc: 1_000,
            vm: 0,
            interval: 1_000,
            exits: vec![ExitStat {
                reason: 30,
                count: 40,
                cycles: 0,
                min: 0,
                max: 0,
                log2: vec![],
            }],
        });
        let line = live.line().expect("a line");
        assert!(line.contains("a 60%"), "{line}");
        assert!(line.contains("b 30%"), "{line}");
        assert!(line.contains("3 switches/s"), "{line}");
        assert!(line.contains("40 exits/s"), "{line}");
        // a's slice that began at 1,000 runs on: the next window charges it from there.
        live.record(&Record::Events {
            tsc: 1_500,
            events: vec![Event::Descheduled {
                dt: 0,
                vm: 0,
                why: SliceEnd::Preempted,
            }],
        });
        let line = live.line().expect("a second line");
        assert!(line.contains("a 100%"), "{line}");
        assert!(line.contains("0 switches/s"), "{line}");
    }

    #[test]
    fn a_window_under_a_millisecond_waits_for_more() {
        let mut live = LiveSummary::new();
        let mut hello = hello();
        if let Record::Hello { tsc_hz, .. } = &mut hello {
            *tsc_hz = 1_000_000;
        }
        live.record(&hello);
        live.record(&Record::Events {
            tsc: 0,
            events: slice(0, 0, 3).to_vec(),
        });
        assert_eq!(live.line(), None, "3 cycles of a 1 MHz TSC");
        live.record(&Record::Events {
            tsc: 2_000,
            events: slice(1, 0, 2_000).to_vec(),
        });
        let line = live.line().expect("4 ms make a line");
        assert!(line.starts_with("[carousel] live 4 ms:"), "{line}");
        assert!(line.contains("500 switches/s"), "{line}");
    }

    #[test]
    fn nothing_new_gives_no_line() {
        let mut live = LiveSummary::new();
        assert_eq!(live.line(), None);
        live.record(&hello());
        assert_eq!(live.line(), None);
    }

    #[test]
    fn losses_add_up_from_gaps_and_drop_counters() {
        let mut live = LiveSummary::new();
        live.record(&hello());
        live.gap(3);
        let mut events = slice(0, 0, 10).to_vec();
        events.push(Event::Dropped { dt: 0, total: 2 });
        live.record(&Record::Events { tsc: 0, events });
        assert!(live.line().expect("a line").ends_with("3 lost"));
    }
}
