//! The web page's feed: what is new since the page was last told, as [`Delta`]s its charts
//! append. The same fold serves a live run (`carousel run --web`, a poll at a time) and a
//! finished trace (`carousel view`, all at once), so the page draws both from one stream.
//!
//! What is here: [`Feed`], folded a record at a time like the rest of the model ([`Feed::add`])
//! and drained with [`Feed::take`]. Who ran when comes from the model's own replay of the
//! scheduler events ([`TimelineBuilder`], asked for what ended since the last take, so nothing
//! piles up); exits, memory maps, disk transfers, wakes, drops, timer lag, stops and checks come
//! from their records. Times are TSC cycles since the feed's first timed record
//! ([`Delta::Origin`]); they may be negative for a record about time before it.
//!
//! What is not: the page's scrollback, its backlog or the console lines (the tool's web server
//! keeps those), and any drawing. Memory grids go out as the cells that changed since the VM's
//! previous map, so a steady VM costs little.

use std::collections::BTreeSet;

use carousel_protocol::record::{
    exit_reason_name, timed_events, BlockedOn, Event, Record, SliceEnd,
};

use super::disk::DiskServed;
use super::settings;
use super::timeline::{RunState, TimelineBuilder};
use crate::decode::Damage;
use crate::escape;

/// One thing the page learns. Times are cycles since [`Delta::Origin`].
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// The run: VM names (escaped), TSC frequency (0: unknown), the lab's weights.
    Hello {
        vms: Vec<String>,
        tsc_hz: u64,
        weights: Vec<u32>,
    },
    /// The TSC of time 0 in every later delta.
    Origin { tsc: u64 },
    /// The first scheduler event: where the timeline (and `carousel report --interval`'s
    /// intervals) start.
    Start { tsc: i64 },
    /// A slice of the CPU that ended: `why` is `None` when it was cut (the run ended, events
    /// lost).
    Slice {
        vm: u16,
        start: i64,
        end: i64,
        why: Option<SliceEnd>,
    },
    /// A VM spent `[start, end)` runnable, blocked or stopped (running is [`Delta::Slice`]);
    /// `on` is what a blocked VM waited for, when its events said.
    Span {
        vm: u16,
        state: RunState,
        start: i64,
        end: i64,
        on: Option<BlockedOn>,
    },
    /// The name of an exit reason, the first time it appears.
    ReasonName { reason: u16, name: String },
    /// One VM's exits over one interval that ended at `tsc` and lasted `interval` cycles:
    /// `(reason, count, root cycles)`.
    Exits {
        vm: u16,
        tsc: i64,
        interval: u64,
        exits: Vec<(u16, u64, u64)>,
    },
    /// A VM's memory map at `tsc`: `cells` in all, of `pages_per_cell` pages; `changed` lists
    /// `(cell, state)` for every cell that differs from the VM's previous map (all of them the
    /// first time).
    Memory {
        vm: u16,
        tsc: i64,
        pages_per_cell: u32,
        cells: usize,
        changed: Vec<(u16, u8)>,
    },
    /// A disk transfer.
    Disk {
        vm: u16,
        tsc: i64,
        lba: u32,
        sectors: u16,
        write: bool,
    },
    /// A request through the timed shared disk's queue completed at `tsc`: it waited `wait`
    /// cycles for the device, which took `service` cycles (it arrived at `tsc - wait - service`).
    DiskServed {
        vm: u16,
        tsc: i64,
        sectors: u32,
        write: bool,
        wait: u64,
        service: u64,
    },
    /// A blocked VM woke at `tsc` and got the CPU `latency` cycles later.
    Wake { vm: u16, tsc: i64, latency: u64 },
    /// The hypervisor had dropped `total` records by `tsc`.
    Dropped { tsc: i64, total: u64 },
    /// `records` records never arrived (a gap in the sequence numbers, or a corrupt frame).
    Lost { records: u64 },
    /// A VM's LAPIC timer at the end of the run: ticks delivered, ticks folded into them, the
    /// lag from deadline to delivery (sum and largest).
    TimerLag {
        vm: u16,
        ticks: u64,
        coalesced: u64,
        lag_total: u64,
        lag_max: u64,
    },
    /// A VM stopped, and why (escaped).
    Stopped { vm: u16, tsc: i64, reason: String },
    /// A VM's named check (name escaped).
    Check {
        vm: u16,
        tsc: i64,
        name: String,
        passed: bool,
    },
    /// A setting changed or was refused at `tsc` ([`settings::news`], VM names escaped): a
    /// marker on the timelines.
    Setting { tsc: i64, text: String },
    /// The run ended in order at `tsc`.
    RunEnd { tsc: i64 },
}

/// The feed in progress.
#[derive(Debug, Default)]
pub struct Feed {
    timeline: TimelineBuilder,
    origin: Option<u64>,
    /// Each VM's last memory map, to send only what changed.
    maps: Vec<Vec<u8>>,
    /// Each VM's wake that has not yet got the CPU.
    woken: Vec<Option<u64>>,
    reasons: BTreeSet<u16>,
    /// The VM names of the Hello record, escaped, for the settings' markers.
    names: Vec<String>,
    started: bool,
    out: Vec<Delta>,
}

impl Feed {
    /// An empty feed.
    pub fn new() -> Self {
        Self::default()
    }

    /// `tsc` as a time since the origin (which the first timed record sets).
    fn at(&mut self, tsc: u64) -> i64 {
        if self.origin.is_none() {
            self.origin = Some(tsc);
            self.out.push(Delta::Origin { tsc });
        }
        self.since_origin(tsc).unwrap_or(0)
    }

    /// `tsc` as the deltas give times: since the origin, once the first timed record has set it.
    pub fn since_origin(&self, tsc: u64) -> Option<i64> {
        self.origin.map(|origin| tsc as i64 - origin as i64)
    }

    /// Folds in the next record of the run.
    pub fn add(&mut self, record: &Record) {
        self.timeline.add(record);
        match record {
            Record::Hello {
                vms,
                tsc_hz,
                weights,
                ..
            } => {
                self.names = vms.iter().map(|name| escape::name(name)).collect();
                self.out.push(Delta::Hello {
                    vms: self.names.clone(),
                    tsc_hz: *tsc_hz,
                    weights: weights.clone(),
                })
            }
            Record::SettingChanged { .. } | Record::SettingRefused { .. } => {
                if let Some((tsc, text)) = settings::news(record, &self.names) {
                    let tsc = self.at(tsc);
                    self.out.push(Delta::Setting {
                        tsc,
                        text: escape::message(&text),
                    });
                }
            }
            Record::Events { tsc, events } => {
                for (now, event) in timed_events(*tsc, events) {
                    self.event(now, event);
                }
            }
            Record::ExitInterval {
                tsc,
                vm,
                interval,
                exits,
            } => {
                for stat in exits {
                    if self.reasons.insert(stat.reason) {
                        self.out.push(Delta::ReasonName {
                            reason: stat.reason,
                            name: exit_reason_name(stat.reason).to_string(),
                        });
                    }
                }
                let tsc = self.at(*tsc);
                self.out.push(Delta::Exits {
                    vm: *vm,
                    tsc,
                    interval: *interval,
                    exits: exits
                        .iter()
                        .map(|stat| (stat.reason, stat.count, stat.cycles))
                        .collect(),
                });
            }
            Record::MemoryMap {
                tsc,
                vm,
                pages_per_cell,
                cells,
            } => {
                let tsc = self.at(*tsc);
                let index = usize::from(*vm);
                if self.maps.len() <= index {
                    self.maps.resize(index + 1, Vec::new());
                }
                // A map of another size starts a fresh grid, all untouched (0), on the page.
                let previous = &self.maps[index];
                let fresh = previous.len() != cells.len();
                let changed = cells
                    .iter()
                    .enumerate()
                    .filter(|&(cell, &state)| state != if fresh { 0 } else { previous[cell] })
                    .map(|(cell, &state)| (cell as u16, state))
                    .collect();
                self.maps[index] = cells.clone();
                self.out.push(Delta::Memory {
                    vm: *vm,
                    tsc,
                    pages_per_cell: *pages_per_cell,
                    cells: cells.len(),
                    changed,
                });
            }
            Record::DiskIo {
                tsc,
                vm,
                lba,
                sectors,
                write,
            } => {
                let tsc = self.at(*tsc);
                self.out.push(Delta::Disk {
                    vm: *vm,
                    tsc,
                    lba: *lba,
                    sectors: *sectors,
                    write: *write,
                });
            }
            Record::DiskServed { .. } => {
                if let Some(served) = DiskServed::from_record(record) {
                    let tsc = self.at(served.tsc);
                    self.out.push(Delta::DiskServed {
                        vm: served.vm,
                        tsc,
                        sectors: served.sectors,
                        write: served.write,
                        wait: served.wait,
                        service: served.service,
                    });
                }
            }
            Record::TimerLag {
                vm,
                ticks,
                coalesced,
                lag_total,
                lag_max,
            } => self.out.push(Delta::TimerLag {
                vm: *vm,
                ticks: *ticks,
                coalesced: *coalesced,
                lag_total: *lag_total,
                lag_max: *lag_max,
            }),
            Record::VmStopped { tsc, vm, reason } => {
                let tsc = self.at(*tsc);
                self.out.push(Delta::Stopped {
                    vm: *vm,
                    tsc,
                    reason: escape::message(&reason.to_string()),
                });
            }
            Record::Check {
                tsc,
                vm,
                name,
                passed,
            } => {
                let tsc = self.at(*tsc);
                self.out.push(Delta::Check {
                    vm: *vm,
                    tsc,
                    name: escape::name(name),
                    passed: *passed,
                });
            }
            Record::RunEnd { tsc } => {
                self.timeline.close(*tsc);
                self.ended();
                let tsc = self.at(*tsc);
                self.out.push(Delta::RunEnd { tsc });
            }
            _ => {}
        }
    }

    fn event(&mut self, now: u64, event: &Event) {
        if !self.started {
            self.started = true;
            let tsc = self.at(now);
            self.out.push(Delta::Start { tsc });
        }
        match *event {
            Event::Wake { vm, .. } => {
                let index = usize::from(vm);
                if self.woken.len() <= index {
                    self.woken.resize(index + 1, None);
                }
                self.woken[index].get_or_insert(now);
            }
            Event::Run { vm, .. } => {
                if let Some(woke) = self.woken.get_mut(usize::from(vm)).and_then(Option::take) {
                    let tsc = self.at(woke);
                    self.out.push(Delta::Wake {
                        vm,
                        tsc,
                        latency: now.saturating_sub(woke),
                    });
                }
            }
            Event::Dropped { total, .. } => {
                let tsc = self.at(now);
                self.out.push(Delta::Dropped { tsc, total });
            }
            Event::Descheduled { .. }
            | Event::Exit { .. }
            | Event::Console { .. }
            | Event::Input { .. } => {}
        }
    }

    /// Notes `records` records that never arrived.
    pub fn lost(&mut self, records: u64) {
        if records > 0 {
            self.out.push(Delta::Lost { records });
        }
    }

    /// Moves the slices and spans that ended into the output.
    fn ended(&mut self) {
        let ended = self.timeline.take_ended();
        let mut deltas = Vec::with_capacity(ended.slices.len() + ended.spans.len());
        for slice in ended.slices {
            deltas.push(Delta::Slice {
                vm: slice.vm,
                start: self.at(slice.start),
                end: self.at(slice.end),
                why: slice.ended,
            });
        }
        for (vm, span) in ended.spans {
            if span.state != RunState::Running {
                deltas.push(Delta::Span {
                    vm,
                    state: span.state,
                    start: self.at(span.start),
                    end: self.at(span.end),
                    on: span.on,
                });
            }
        }
        self.out.extend(deltas);
    }

    /// What is new since the last take, in the order it happened (finished slices and spans
    /// after the records of the same take).
    pub fn take(&mut self) -> Vec<Delta> {
        self.ended();
        std::mem::take(&mut self.out)
    }

    /// The feed of a finished trace: its records, and what its `damage` lost.
    pub fn of_trace(records: &[Record], damage: &[Damage]) -> Vec<Delta> {
        let mut feed = Feed::new();
        for record in records {
            feed.add(record);
        }
        for damage in damage {
            feed.lost(damage.lost_records());
        }
        feed.take()
    }

    /// The feed of a finished run's records, all of it.
    pub fn of_records(records: &[Record]) -> Vec<Delta> {
        Self::of_trace(records, &[])
    }
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{BlockedOn, ExitStat, StopReason};

    use super::*;
    use crate::fixtures::hello;

    fn events(tsc: u64, events: Vec<Event>) -> Record {
        Record::Events { tsc, events }
    }

    #[test]
    fn slices_spans_and_wakes_come_once_as_they_end() {
        let mut feed = Feed::new();
        feed.add(&hello(&["a", "b"], 1_000));
        feed.add(&events(
            100,
            vec![
                Event::Run { dt: 0, vm: 0 },
                Event::Descheduled {
                    dt: 50,
                    vm: 0,
                    why: SliceEnd::Blocked(BlockedOn::Timer),
                },
                Event::Run { dt: 5, vm: 1 },
            ],
        ));
        let first = feed.take();
        assert!(matches!(first[0], Delta::Hello { .. }));
        assert_eq!(first[1], Delta::Origin { tsc: 100 });
        assert!(first.contains(&Delta::Slice {
            vm: 0,
            start: 0,
            end: 50,
            why: Some(SliceEnd::Blocked(BlockedOn::Timer))
        }));
        // b waited for the CPU from the start until 55.
        assert!(first.contains(&Delta::Span {
            vm: 1,
            state: RunState::Runnable,
            start: 0,
            end: 55,
            on: None,
        }));
        assert!(feed.take().is_empty(), "nothing is sent twice");
        feed.add(&events(
            155,
            vec![
                Event::Wake { dt: 45, vm: 0 },
                Event::Descheduled {
                    dt: 10,
                    vm: 1,
                    why: SliceEnd::Preempted,
                },
                Event::Run { dt: 2, vm: 0 },
            ],
        ));
        feed.add(&Record::RunEnd { tsc: 300 });
        let second = feed.take();
        assert!(second.contains(&Delta::Wake {
            vm: 0,
            tsc: 100,
            latency: 12
        }));
        assert!(second.contains(&Delta::Span {
            vm: 0,
            state: RunState::Blocked,
            start: 50,
            end: 100,
            on: Some(BlockedOn::Timer),
        }));
        // The run's end cuts a's last slice.
        assert!(second.contains(&Delta::Slice {
            vm: 0,
            start: 112,
            end: 200,
            why: None
        }));
        assert_eq!(second.last(), Some(&Delta::RunEnd { tsc: 200 }));
    }

    /// A served disk request reaches the page once, at its completion from the origin, with
    /// its wait and service as the hypervisor measured them.
    #[test]
    fn served_disk_requests_come_once_from_the_origin() {
        let mut feed = Feed::new();
        feed.add(&hello(&["a", "b"], 1_000));
        feed.add(&events(100, vec![Event::Run { dt: 0, vm: 0 }]));
        feed.take();
        feed.add(&Record::DiskServed {
            tsc: 400,
            vm: 1,
            sectors: 8,
            write: true,
            wait: 120,
            service: 80,
        });
        assert_eq!(
            feed.take(),
            [Delta::DiskServed {
                vm: 1,
                tsc: 300,
                sectors: 8,
                write: true,
                wait: 120,
                service: 80,
            }]
        );
        assert!(feed.take().is_empty(), "nothing is sent twice");
        assert_eq!(
            feed.since_origin(250),
            Some(150),
            "as the deltas count time"
        );
        assert_eq!(Feed::new().since_origin(250), None, "no origin yet");
    }

    #[test]
    fn memory_maps_send_only_the_cells_that_changed() {
        let mut feed = Feed::new();
        let map = |tsc, cells: Vec<u8>| Record::MemoryMap {
            tsc,
            vm: 1,
            pages_per_cell: 4,
            cells,
        };
        feed.add(&map(10, vec![0, 1, 2]));
        feed.add(&map(20, vec![0, 3, 2]));
        let deltas = feed.take();
        let changed: Vec<_> = deltas
            .iter()
            .filter_map(|delta| match delta {
                Delta::Memory { changed, cells, .. } => Some((changed.clone(), *cells)),
                _ => None,
            })
            .collect();
        assert_eq!(
            changed,
            // The first map: only the cells that are not untouched (0).
            vec![(vec![(1, 1), (2, 2)], 3), (vec![(1, 3)], 3)]
        );
    }

    #[test]
    fn exits_name_each_reason_once_and_guest_strings_are_escaped() {
        let stat = |reason| ExitStat {
            reason,
            count: 2,
            cycles: 70,
            min: 30,
            max: 40,
            log2: Vec::new(),
        };
        let interval = |tsc| Record::ExitInterval {
            tsc,
            vm: 0,
            interval: 10,
            exits: vec![stat(30), stat(12)],
        };
        let deltas = Feed::of_records(&[
            interval(10),
            interval(20),
            Record::VmStopped {
                tsc: 25,
                vm: 0,
                reason: StopReason::GuestFault {
                    rip: 1,
                    message: "\x1b[2Jforged".to_string(),
                },
            },
        ]);
        let names: Vec<_> = deltas
            .iter()
            .filter_map(|delta| match delta {
                Delta::ReasonName { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["IO_INSTRUCTION", "HLT"]);
        let reason = deltas.iter().find_map(|delta| match delta {
            Delta::Stopped { reason, tsc, .. } => Some((reason.clone(), *tsc)),
            _ => None,
        });
        let (reason, tsc) = reason.expect("a stop");
        assert_eq!(tsc, 15);
        assert!(!reason.contains('\x1b'), "{reason}");
    }
}
