//! The phases of one run as a state machine: what the run loop waits for, until when, and what
//! it does next. A step is a pure function of (phase, event, now) ([`Phase::next`]), so the
//! tests drive it with a fake clock; the run loop ([`super::stream`]) feeds it what it saw in
//! each poll and the real clock.
//!
//! ```text
//! Building ──EmulatorStarted──▶ Booting ──Hello──▶ Running ──ScriptsDone──▶ ScriptsDone
//!                                  │                  │                        │ SCRIPT_GRACE
//!                                  │ timeout          │ timeout                ▼
//!                                  └────────────────▶ Asked { Timeout }    Asked { Scripts }
//! Ctrl-C from Booting, Running, ScriptsDone ──▶ Asked { Interrupt } (INTERRUPT_GRACE)
//! Asked { why } ──RunEnd──▶ Ending ──emulator exited, or its grace──▶ Ended
//! Asked { why } ──its grace, or the emulator exited──▶ Ended
//! a second Ctrl-C, or Ctrl-C while Building ──▶ Ended(Interrupted), at once
//! ```
//!
//! "Asked" means the tool sent the hypervisor the in-band request to end the run (COM1's
//! `0x1D 0x7F`, [`super::script::FocusWriter::end_run`]): every VM stops, the summaries and
//! RunEnd follow, then the hypervisor exits the emulator. Each phase after
//! the start has a deadline; the loop ends the emulator itself at the last one. Ctrl-C never
//! waits longer than [`INTERRUPT_GRACE`], whatever the phase.
//!
//! What is not here: reading the COM files, the records and the scripts (the loop turns them into
//! [`Event`]s), and ending the emulator (the loop does that once the phase is [`Phase::Ended`]).

use std::time::{Duration, Instant};

use carousel_trace::verdict::Ending;

/// How long the emulator may take to exit by itself after the RunEnd record.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long the hypervisor may keep writing after a fatal COM1 line (an error before Hello, or
/// a panic) before the tool ends the run.
pub const FATAL_GRACE: Duration = Duration::from_secs(2);
/// Once every VM has stopped or finished its script, how long the tool waits for the run to
/// end by itself (the VMs still running may stop, their last records arrive) before it asks the
/// hypervisor to end it.
pub const SCRIPT_GRACE: Duration = Duration::from_secs(1);
/// How long the hypervisor gets to end the run in order once asked (it may be sending back
/// persisted disk sectors) before the tool ends the emulator itself.
pub const END_RUN_GRACE: Duration = Duration::from_secs(60);
/// At the timeout the hypervisor is asked to end the run, so that the report still comes (and
/// the log says where each VM stood); this long, before the tool ends the emulator itself.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(15);
/// After Ctrl-C, how long the hypervisor gets to end the run in order (its summaries make the
/// accounting report) before the tool ends the emulator. In Bochs it takes about 0.15 s to send
/// RunEnd and 0.35 s to exit; with the loop's poll and the final reads the run ends within
/// [`INTERRUPT_LIMIT`].
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(600);
/// The promise to the user: Ctrl-C ends the run within this long, whatever it is doing.
pub const INTERRUPT_LIMIT: Duration = Duration::from_secs(1);

/// Why the tool asked the hypervisor to end the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Every VM stopped or finished its script (and the grace passed).
    Scripts,
    /// The whole-run timeout came.
    Timeout,
    /// Ctrl-C.
    Interrupt,
}

impl Why {
    /// How long the hypervisor gets once asked.
    pub fn grace(self) -> Duration {
        match self {
            Why::Scripts => END_RUN_GRACE,
            Why::Timeout => TIMEOUT_GRACE,
            Why::Interrupt => INTERRUPT_GRACE,
        }
    }

    /// How the run ended if the hypervisor does not answer (or answers with RunEnd, for a
    /// timeout or Ctrl-C: the run was cut short all the same).
    fn ending(self) -> Ending {
        match self {
            Why::Scripts => Ending::ScriptsFinished,
            Why::Timeout => Ending::TimedOut,
            Why::Interrupt => Ending::Interrupted,
        }
    }
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Building the hypervisor and guests, the ISO, starting the emulator, connecting COM1.
    Building,
    /// The emulator runs; no Hello record yet. The whole-run timeout comes at `timeout_at`.
    Booting { timeout_at: Instant },
    /// The hypervisor said Hello; the VMs run.
    Running { timeout_at: Instant },
    /// Every VM stopped or finished its script; until `until` the run may end by itself.
    ScriptsDone { until: Instant },
    /// The tool asked the hypervisor to end the run, for `why`; at `deadline` it ends the
    /// emulator itself.
    Asked { why: Why, deadline: Instant },
    /// The run is over (`ending`); the emulator may exit by itself until `deadline` (after
    /// RunEnd its last bytes leave the UARTs; after a fatal line the hypervisor may say more).
    Ending { ending: Ending, deadline: Instant },
    /// The run loop ends the emulator (if it still runs) and reads what is left.
    Ended(Ending),
}

/// What the run loop saw (edge or level: an event that changes nothing in a phase is ignored
/// there, so the loop may repeat one every poll).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The emulator started; the run may last `timeout` from now.
    EmulatorStarted { timeout: Duration },
    /// The Hello record arrived.
    Hello,
    /// Every VM has stopped or finished (or failed) its script, and some VM has a script.
    ScriptsDone,
    /// A fatal COM1 line: an error before Hello, or a panic.
    FatalLine,
    /// The RunEnd record arrived.
    RunEnd,
    /// The emulator process exited.
    EmulatorExited,
    /// Ctrl-C (one press; a second is a second event).
    Interrupt,
    /// Time passed: the timeout and the graces are looked at.
    Tick,
}

/// What the run loop does after a step, beside taking the new phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Ask the hypervisor to end the run (in band), and say why.
    Ask(Why),
    /// Ctrl-C came while the run was already ending: say that it ends within
    /// [`INTERRUPT_GRACE`] (the deadline was brought forward).
    Hurry,
}

impl Phase {
    /// The phase after `event` at `now`, and what to do.
    pub fn next(self, event: Event, now: Instant) -> (Phase, Action) {
        use Action::Nothing;
        let ask = |why: Why| {
            (
                Phase::Asked {
                    why,
                    deadline: now + why.grace(),
                },
                Action::Ask(why),
            )
        };
        let soon = |deadline: Instant, grace: Duration| deadline.min(now + grace);
        match (self, event) {
            (Phase::Ended(_), _) => (self, Nothing),

            (Phase::Building, Event::EmulatorStarted { timeout }) => (
                Phase::Booting {
                    timeout_at: now + timeout,
                },
                Nothing,
            ),
            // Nothing runs yet that could be asked.
            (Phase::Building, Event::Interrupt) => (Phase::Ended(Ending::Interrupted), Nothing),
            (Phase::Building, _) => (self, Nothing),

            (Phase::Booting { timeout_at }, Event::Hello) => {
                (Phase::Running { timeout_at }, Nothing)
            }
            (
                Phase::Booting { .. } | Phase::Running { .. } | Phase::ScriptsDone { .. },
                Event::Interrupt,
            ) => ask(Why::Interrupt),
            (
                Phase::Booting { .. } | Phase::Running { .. } | Phase::ScriptsDone { .. },
                Event::RunEnd,
            ) => (
                Phase::Ending {
                    ending: Ending::RunEnd,
                    deadline: now + EXIT_GRACE,
                },
                Nothing,
            ),
            (
                Phase::Booting { .. } | Phase::Running { .. } | Phase::ScriptsDone { .. },
                Event::EmulatorExited,
            ) => (Phase::Ended(Ending::EmulatorExited), Nothing),
            (
                Phase::Booting { .. } | Phase::Running { .. } | Phase::ScriptsDone { .. },
                Event::FatalLine,
            ) => (
                Phase::Ending {
                    ending: Ending::FatalLine,
                    deadline: now + FATAL_GRACE,
                },
                Nothing,
            ),
            (Phase::Booting { .. } | Phase::Running { .. }, Event::ScriptsDone) => (
                Phase::ScriptsDone {
                    until: now + SCRIPT_GRACE,
                },
                Nothing,
            ),
            (Phase::Booting { timeout_at } | Phase::Running { timeout_at }, Event::Tick)
                if now >= timeout_at =>
            {
                ask(Why::Timeout)
            }
            (Phase::ScriptsDone { until }, Event::Tick) if now >= until => ask(Why::Scripts),
            (Phase::Booting { .. } | Phase::Running { .. } | Phase::ScriptsDone { .. }, _) => {
                (self, Nothing)
            }

            (Phase::Asked { why, deadline }, Event::Interrupt) => match why {
                // The second press: at once.
                Why::Interrupt => (Phase::Ended(Ending::Interrupted), Nothing),
                // Already asked: no need to ask again, only to wait less.
                Why::Scripts | Why::Timeout => (
                    Phase::Asked {
                        why: Why::Interrupt,
                        deadline: soon(deadline, INTERRUPT_GRACE),
                    },
                    Action::Hurry,
                ),
            },
            (Phase::Asked { why, deadline }, Event::RunEnd) => (
                Phase::Ending {
                    ending: match why {
                        Why::Scripts => Ending::RunEnd,
                        Why::Timeout | Why::Interrupt => why.ending(),
                    },
                    deadline: soon(deadline, EXIT_GRACE),
                },
                Nothing,
            ),
            (Phase::Asked { why, .. }, Event::EmulatorExited) => (
                Phase::Ended(match why {
                    // Asked, it exited without RunEnd: the hypervisor did not finish the run.
                    Why::Scripts => Ending::EmulatorExited,
                    Why::Timeout | Why::Interrupt => why.ending(),
                }),
                Nothing,
            ),
            // A panic while ending: no RunEnd will come, so waiting long is pointless.
            (Phase::Asked { why, deadline }, Event::FatalLine) => (
                Phase::Asked {
                    why,
                    deadline: soon(deadline, FATAL_GRACE),
                },
                Nothing,
            ),
            (Phase::Asked { why, deadline }, Event::Tick) if now >= deadline => {
                (Phase::Ended(why.ending()), Nothing)
            }
            (Phase::Asked { .. }, _) => (self, Nothing),

            (Phase::Ending { ending, deadline }, Event::Interrupt) => match ending {
                Ending::Interrupted => (Phase::Ended(Ending::Interrupted), Nothing),
                _ => (
                    Phase::Ending {
                        ending: Ending::Interrupted,
                        deadline: soon(deadline, INTERRUPT_GRACE),
                    },
                    Action::Hurry,
                ),
            },
            // The hypervisor finished the run after all: its records decide.
            (
                Phase::Ending {
                    ending: Ending::FatalLine,
                    deadline,
                },
                Event::RunEnd,
            ) => (
                Phase::Ending {
                    ending: Ending::RunEnd,
                    deadline: soon(deadline, EXIT_GRACE),
                },
                Nothing,
            ),
            (Phase::Ending { ending, .. }, Event::EmulatorExited) => {
                (Phase::Ended(ending), Nothing)
            }
            (Phase::Ending { ending, deadline }, Event::Tick) if now >= deadline => {
                (Phase::Ended(ending), Nothing)
            }
            (Phase::Ending { .. }, _) => (self, Nothing),
        }
    }

    /// How the run ended, once it has.
    pub fn ended(self) -> Option<Ending> {
        match self {
            Phase::Ended(ending) => Some(ending),
            _ => None,
        }
    }

    /// The next instant at which a [`Event::Tick`] changes the phase; None while building and
    /// once ended.
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Building | Phase::Ended(_) => None,
            Phase::Booting { timeout_at } | Phase::Running { timeout_at } => Some(timeout_at),
            Phase::ScriptsDone { until } => Some(until),
            Phase::Asked { deadline, .. } | Phase::Ending { deadline, .. } => Some(deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A clock that only moves when told.
    struct FakeClock {
        now: Instant,
    }

    impl FakeClock {
        fn new() -> Self {
            Self {
                now: Instant::now(),
            }
        }

        fn advance(&mut self, by: Duration) -> Instant {
            self.now += by;
            self.now
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    /// Feeds `events` at the clock's time; returns the actions.
    fn feed(phase: &mut Phase, clock: &FakeClock, events: &[Event]) -> Vec<Action> {
        events
            .iter()
            .map(|&event| {
                let (next, action) = phase.next(event, clock.now);
                *phase = next;
                action
            })
            .collect()
    }

    /// Ticks every 50 ms (as the loop polls) until the phase ends or `limit` passes; returns
    /// how long it took.
    fn tick_until_ended(phase: &mut Phase, clock: &mut FakeClock, limit: Duration) -> Duration {
        let start = clock.now;
        while phase.ended().is_none() && clock.now - start <= limit {
            clock.advance(Duration::from_millis(50));
            *phase = phase.next(Event::Tick, clock.now).0;
        }
        clock.now - start
    }

    /// A phase reached the way the loop reaches it: `path` events, one second apart.
    fn reach(clock: &mut FakeClock, path: &[Event]) -> Phase {
        let mut phase = Phase::Building;
        for &event in path {
            clock.advance(Duration::from_secs(1));
            phase = phase.next(event, clock.now).0;
        }
        phase
    }

    const BOOTING: &[Event] = &[Event::EmulatorStarted { timeout: TIMEOUT }];
    const RUNNING: &[Event] = &[Event::EmulatorStarted { timeout: TIMEOUT }, Event::Hello];
    const SCRIPTS_DONE: &[Event] = &[
        Event::EmulatorStarted { timeout: TIMEOUT },
        Event::Hello,
        Event::ScriptsDone,
    ];
    /// ScriptsDone, then its grace: asked.
    const ASKED_SCRIPTS: &[Event] = &[
        Event::EmulatorStarted { timeout: TIMEOUT },
        Event::Hello,
        Event::ScriptsDone,
        Event::Tick,
    ];
    const RUN_ENDED: &[Event] = &[
        Event::EmulatorStarted { timeout: TIMEOUT },
        Event::Hello,
        Event::RunEnd,
    ];
    const FATAL: &[Event] = &[
        Event::EmulatorStarted { timeout: TIMEOUT },
        Event::FatalLine,
    ];

    #[test]
    fn a_run_that_ends_by_itself() {
        let mut clock = FakeClock::new();
        let mut phase = reach(&mut clock, RUNNING);
        assert!(matches!(phase, Phase::Running { .. }));
        assert_eq!(
            feed(&mut phase, &clock, &[Event::Tick, Event::RunEnd]),
            [Action::Nothing; 2]
        );
        assert!(matches!(
            phase,
            Phase::Ending {
                ending: Ending::RunEnd,
                ..
            }
        ));
        clock.advance(Duration::from_millis(300));
        feed(&mut phase, &clock, &[Event::EmulatorExited]);
        assert_eq!(phase, Phase::Ended(Ending::RunEnd));
    }

    #[test]
    fn after_run_end_the_emulator_gets_its_grace_then_is_ended() {
        let mut clock = FakeClock::new();
        let mut phase = reach(&mut clock, RUN_ENDED);
        let took = tick_until_ended(&mut phase, &mut clock, Duration::from_secs(5));
        assert_eq!(phase, Phase::Ended(Ending::RunEnd));
        assert!(took >= EXIT_GRACE && took <= EXIT_GRACE + Duration::from_millis(50));
    }

    #[test]
    fn the_emulator_exiting_on_its_own_ends_the_run() {
        for path in [BOOTING, RUNNING, SCRIPTS_DONE] {
            let mut clock = FakeClock::new();
            let mut phase = reach(&mut clock, path);
            feed(&mut phase, &clock, &[Event::EmulatorExited]);
            assert_eq!(phase, Phase::Ended(Ending::EmulatorExited), "{path:?}");
        }
    }

    #[test]
    fn a_fatal_line_ends_the_run_after_its_grace() {
        let mut clock = FakeClock::new();
        let mut phase = reach(&mut clock, FATAL);
        let took = tick_until_ended(&mut phase, &mut clock, Duration::from_secs(5));
        assert_eq!(phase, Phase::Ended(Ending::FatalLine));
        assert!(took >= FATAL_GRACE && took <= FATAL_GRACE + Duration::from_millis(50));
        // Unless RunEnd comes after all.
        let mut phase = reach(&mut clock, FATAL);
        feed(&mut phase, &clock, &[Event::RunEnd, Event::EmulatorExited]);
        assert_eq!(phase, Phase::Ended(Ending::RunEnd));
    }

    #[test]
    fn scripts_done_waits_its_grace_then_asks_and_gives_the_hypervisor_its_grace() {
        let mut clock = FakeClock::new();
        let mut phase = reach(&mut clock, SCRIPTS_DONE);
        let start = clock.now;
        let mut asked_at = None;
        while asked_at.is_none() {
            let now = clock.advance(Duration::from_millis(50));
            let (next, action) = phase.next(Event::Tick, now);
            phase = next;
            if action == Action::Ask(Why::Scripts) {
                asked_at = Some(now);
            }
        }
        assert_eq!(asked_at.unwrap() - start, SCRIPT_GRACE);
        // Answered: RunEnd, and the emulator exits.
        let mut answered = phase;
        feed(
            &mut answered,
            &clock,
            &[Event::RunEnd, Event::EmulatorExited],
        );
        assert_eq!(answered, Phase::Ended(Ending::RunEnd));
        // Exited without RunEnd.
        let mut exited = phase;
        feed(&mut exited, &clock, &[Event::EmulatorExited]);
        assert_eq!(exited, Phase::Ended(Ending::EmulatorExited));
        // Never answered.
        let took = tick_until_ended(&mut phase, &mut clock, END_RUN_GRACE * 2);
        assert_eq!(phase, Phase::Ended(Ending::ScriptsFinished));
        assert!(took >= END_RUN_GRACE && took <= END_RUN_GRACE + Duration::from_millis(50));
    }

    #[test]
    fn the_timeout_asks_and_its_grace_bounds_the_end() {
        for path in [BOOTING, RUNNING] {
            let mut clock = FakeClock::new();
            let phase = reach(&mut clock, path);
            // The timeout counts from the emulator's start, the first step of `path`.
            let started = clock.now - Duration::from_secs(path.len() as u64 - 1);
            let just_before = started + TIMEOUT - Duration::from_millis(1);
            assert_eq!(phase.next(Event::Tick, just_before).1, Action::Nothing);
            let now = started + TIMEOUT;
            let (next, action) = phase.next(Event::Tick, now);
            assert_eq!(action, Action::Ask(Why::Timeout), "{path:?}");
            clock.now = now;
            // Answered: the verdict is still "timed out".
            let mut answered = next;
            feed(&mut answered, &clock, &[Event::RunEnd]);
            feed(&mut answered, &clock, &[Event::EmulatorExited]);
            assert_eq!(answered, Phase::Ended(Ending::TimedOut));
            // Not answered.
            let mut unanswered = next;
            let took = tick_until_ended(&mut unanswered, &mut clock, TIMEOUT_GRACE * 2);
            assert_eq!(unanswered, Phase::Ended(Ending::TimedOut));
            assert!(took <= TIMEOUT_GRACE + Duration::from_millis(50));
        }
    }

    #[test]
    fn ctrl_c_while_building_ends_at_once() {
        let (phase, action) = Phase::Building.next(Event::Interrupt, Instant::now());
        assert_eq!(phase, Phase::Ended(Ending::Interrupted));
        assert_eq!(action, Action::Nothing);
    }

    /// Every phase the loop can be in, by the path that leads there.
    const PHASES: &[&[Event]] = &[
        BOOTING,
        RUNNING,
        SCRIPTS_DONE,
        ASKED_SCRIPTS,
        RUN_ENDED,
        FATAL,
        // Timed out (asked).
        &[
            Event::EmulatorStarted {
                timeout: Duration::from_secs(1),
            },
            Event::Tick,
        ],
        // Timed out, then RunEnd.
        &[
            Event::EmulatorStarted {
                timeout: Duration::from_secs(1),
            },
            Event::Tick,
            Event::RunEnd,
        ],
    ];

    #[test]
    fn ctrl_c_in_every_phase_ends_the_run_within_its_limit() {
        for path in PHASES {
            let mut clock = FakeClock::new();
            let mut phase = reach(&mut clock, path);
            assert!(phase.ended().is_none(), "{path:?}");
            // The hypervisor is asked once: not again when the run is ending already.
            let expected = match phase {
                Phase::Booting { .. } | Phase::Running { .. } | Phase::ScriptsDone { .. } => {
                    Action::Ask(Why::Interrupt)
                }
                _ => Action::Hurry,
            };
            let actions = feed(&mut phase, &clock, &[Event::Interrupt]);
            assert_eq!(actions, [expected], "{path:?}");
            let took = tick_until_ended(&mut phase, &mut clock, INTERRUPT_LIMIT * 2);
            assert_eq!(phase, Phase::Ended(Ending::Interrupted), "{path:?}");
            assert!(took <= INTERRUPT_GRACE, "{path:?}: {took:?}");
        }
    }

    #[test]
    fn the_hypervisor_answering_ctrl_c_keeps_the_verdict_interrupted() {
        for path in [BOOTING, RUNNING, SCRIPTS_DONE] {
            let mut clock = FakeClock::new();
            let mut phase = reach(&mut clock, path);
            feed(&mut phase, &clock, &[Event::Interrupt]);
            clock.advance(Duration::from_millis(150));
            feed(&mut phase, &clock, &[Event::RunEnd]);
            let deadline = phase.deadline().unwrap();
            assert!(deadline <= clock.now + INTERRUPT_GRACE);
            clock.advance(Duration::from_millis(200));
            feed(&mut phase, &clock, &[Event::EmulatorExited]);
            assert_eq!(phase, Phase::Ended(Ending::Interrupted), "{path:?}");
        }
    }

    #[test]
    fn a_second_ctrl_c_ends_at_once_in_every_phase() {
        for path in PHASES {
            let mut clock = FakeClock::new();
            let mut phase = reach(&mut clock, path);
            feed(&mut phase, &clock, &[Event::Interrupt]);
            clock.advance(Duration::from_millis(100));
            feed(&mut phase, &clock, &[Event::Interrupt]);
            assert_eq!(phase, Phase::Ended(Ending::Interrupted), "{path:?}");
        }
    }

    #[test]
    fn an_ended_run_stays_ended() {
        let now = Instant::now();
        let phase = Phase::Ended(Ending::RunEnd);
        for event in [Event::Interrupt, Event::Tick, Event::Hello, Event::RunEnd] {
            assert_eq!(phase.next(event, now), (phase, Action::Nothing));
        }
        assert_eq!(phase.deadline(), None);
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Hello),
            Just(Event::ScriptsDone),
            Just(Event::FatalLine),
            Just(Event::RunEnd),
            Just(Event::EmulatorExited),
            Just(Event::Tick),
            (1u64..120).prop_map(|secs| Event::EmulatorStarted {
                timeout: Duration::from_secs(secs)
            }),
        ]
    }

    proptest! {
        /// Whatever happened before (any events, any spacing), once Ctrl-C is pressed the run
        /// ends within INTERRUPT_GRACE of it, whatever else happens meanwhile; and no phase
        /// ever waits past its deadline.
        #[test]
        fn ctrl_c_always_ends_within_the_grace(
            before in proptest::collection::vec((event(), 0u64..5_000), 0..30),
            after in proptest::collection::vec((event(), 0u64..100), 0..10),
        ) {
            let mut now = Instant::now();
            let mut phase = Phase::Building;
            for (event, millis) in before {
                now += Duration::from_millis(millis);
                let previous = phase;
                phase = phase.next(event, now).0;
                if let (Some(deadline), Event::Tick) = (previous.deadline(), event) {
                    prop_assert!(now < deadline || phase != previous, "{previous:?} outlived its deadline");
                }
            }
            let pressed = now;
            phase = phase.next(Event::Interrupt, now).0;
            for (event, millis) in after {
                now += Duration::from_millis(millis);
                phase = phase.next(event, now).0;
            }
            if let Some(deadline) = phase.deadline() {
                prop_assert!(deadline <= pressed + INTERRUPT_GRACE, "{phase:?}");
            }
            phase = phase.next(Event::Tick, pressed.max(now) + INTERRUPT_GRACE).0;
            prop_assert!(phase.ended().is_some(), "{phase:?}");
        }
    }
}
