//! The live line `carousel run` prints once a second beside the consoles: each VM's share of
//! the CPU, switches and exits per second, and records lost (the window is
//! [`crate::model::live::LiveWindow`]).

use crate::format::group;
use crate::model::live::LiveFigures;

/// The line for one window: `[carousel] live 1000 ms: a 60% b 30% | 3 switches/s, …`.
pub fn line(figures: &LiveFigures) -> String {
    let shares: Vec<String> = figures
        .shares
        .iter()
        .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
        .collect();
    format!(
        "[carousel] live {:.0} ms: {} | {} switches/s, {} exits/s, {} lost",
        figures.millis,
        shares.join(" "),
        group(figures.switches_per_s as u64),
        group(figures.exits_per_s as u64),
        figures.lost
    )
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{Event, ExitStat, Record, SliceEnd, TraceLevel, TscSource};

    use super::*;
    use crate::model::live::LiveWindow;

    fn take_line(live: &mut LiveWindow) -> Option<String> {
        live.take().map(|figures| line(&figures))
    }

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
        let mut live = LiveWindow::new();
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
        let line = take_line(&mut live).expect("a line");
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
        let line = take_line(&mut live).expect("a second line");
        assert!(line.contains("a 100%"), "{line}");
        assert!(line.contains("0 switches/s"), "{line}");
    }

    #[test]
    fn a_window_under_a_millisecond_waits_for_more() {
        let mut live = LiveWindow::new();
        let mut hello = hello();
        if let Record::Hello { tsc_hz, .. } = &mut hello {
            *tsc_hz = 1_000_000;
        }
        live.record(&hello);
        live.record(&Record::Events {
            tsc: 0,
            events: slice(0, 0, 3).to_vec(),
        });
        assert_eq!(take_line(&mut live), None, "3 cycles of a 1 MHz TSC");
        live.record(&Record::Events {
            tsc: 2_000,
            events: slice(1, 0, 2_000).to_vec(),
        });
        let line = take_line(&mut live).expect("4 ms make a line");
        assert!(line.starts_with("[carousel] live 4 ms:"), "{line}");
        assert!(line.contains("500 switches/s"), "{line}");
    }

    #[test]
    fn nothing_new_gives_no_line() {
        let mut live = LiveWindow::new();
        assert_eq!(take_line(&mut live), None);
        live.record(&hello());
        assert_eq!(take_line(&mut live), None);
    }

    #[test]
    fn guest_names_reach_the_line_escaped() {
        // The status line is drawn with cursor movements: a name must not carry its own.
        let mut live = LiveWindow::new();
        let mut hello = hello();
        if let Record::Hello { vms, .. } = &mut hello {
            vms[0] = "a\x1b[2J\r\u{202e}".into();
        }
        live.record(&hello);
        live.record(&Record::Events {
            tsc: 0,
            events: slice(0, 0, 10).to_vec(),
        });
        let line = take_line(&mut live).expect("a line");
        assert!(!line.chars().any(crate::escape::unsafe_char), "{line:?}");
        assert!(line.contains("a\\x1b[2J"), "{line:?}");
    }

    #[test]
    fn losses_add_up_from_gaps_and_drop_counters() {
        let mut live = LiveWindow::new();
        live.record(&hello());
        live.gap(3);
        let mut events = slice(0, 0, 10).to_vec();
        events.push(Event::Dropped { dt: 0, total: 2 });
        live.record(&Record::Events { tsc: 0, events });
        assert!(take_line(&mut live).expect("a line").ends_with("3 lost"));
    }
}
