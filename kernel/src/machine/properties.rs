//! The scheduling rules, checked on the real run loop: [`Machine`](super::Machine) over the
//! fakes, with CPU-bound guests and bursty ones (they run, arm SET_TIMER and halt, as `sleepy`
//! does), judged on what the run sends the host: the switch and wake events, each VM's summary
//! and the run's, the figures a researcher reads.
//!
//! Root-mode work on the fakes is the host's clock readings, `cost` cycles each, so the bounds
//! on overhead are counts of readings. An exit and the entry after it take 4 readings and
//! CPUID's handling one more; a preemption timer that fires up to a tick early (it counts whole
//! ticks) costs one more entry and exit: at most 9 readings, as measured on this code. Between
//! two slices the loop takes 3. The bounds allow [`EXIT_READINGS`] and [`SWITCH_READINGS`]; at
//! the largest cost drawn (200 cycles) an exit's allowance is 2,400 cycles, 2.4 % of the
//! smallest quantum drawn (100 µs). A VM that waits through one slice more than the rules allow
//! is caught by the count of slices it waited through, exactly; the bounds in cycles catch
//! slices that run long, wake-ups noticed late and a CPU that idles while a VM is runnable.
//!
//! No exit yields in this kernel: a guest gives the CPU up by halting, and a HLT whose timer is
//! already due goes straight on. So `SliceEnd::Yielded` never occurs here; the policy's
//! `yielded` is unit-tested in `carousel-scheduler`, as are the run queue's invariants (each VM
//! in it at most once, exactly the runnable ones) against a naive model.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use carousel_protocol::config::{
    CreditConfig, QuantumClock, RunConfig, ScheduledChange, SchedulerPolicy, Setting, SettingError,
};
use carousel_protocol::record::{self, ChangeSource, Event, Record, RunSummary, VmSummary};
use carousel_scheduler::jain_index;
use proptest::prelude::*;

use crate::exit::Exit;
use crate::testing::{bursts, program, summaries, until, vm_config, FakeRun, Program, CLOCK_START};

/// A TSC of 1 GHz: a microsecond is 1,000 cycles.
const TSC_HZ: u64 = 1_000_000_000;
/// Clock readings allowed for one exit: its handling and the entry after it, with the re-entry
/// after a timer that fired a tick early (9 measured).
const EXIT_READINGS: u64 = 12;
/// Clock readings allowed between two slices: housekeeping, feeding the serial lines, waking,
/// the switch (3 measured).
const SWITCH_READINGS: u64 = 6;

/// What a VM's guest does. Each makes a CPUID exit every [`Scenario::exit_every`] guest cycles
/// while it runs.
#[derive(Clone, Debug)]
enum Workload {
    /// Runs this many guest cycles, never giving up the CPU, then exits.
    CpuBound(u64),
    /// CPU-bound until its first entry at or after this TSC, then exits.
    CpuBoundUntil(u64),
    /// Takes `rounds` turns through its phases `(run, sleep)`, then exits.
    Bursty {
        phases: Vec<(u64, u64)>,
        rounds: u64,
    },
}

/// One run.
#[derive(Clone, Debug)]
struct Scenario {
    quantum_us: u32,
    weights: Vec<u32>,
    workloads: Vec<Workload>,
    /// Guest cycles between two CPUID exits of a running guest (0: it makes none).
    exit_every: u64,
    /// Cycles one clock reading costs: the root-mode work.
    cost: u64,
    /// The preemption timer counts once per `2^timer_rate` cycles.
    timer_rate: u8,
    policy: SchedulerPolicy,
    clock: QuantumClock,
    /// Per VM, its cap under the credit policy (0: uncapped); empty: none capped.
    caps: Vec<u32>,
    /// The credit policy's settings.
    credit: CreditConfig,
}

impl Scenario {
    /// `workloads` with weight 1 each, a quantum of `quantum_us`, no CPUID exits, root work of
    /// `cost` cycles a reading, round robin on the wall clock, timer rate 0.
    fn new(quantum_us: u32, workloads: Vec<Workload>, cost: u64) -> Self {
        Self {
            quantum_us,
            weights: vec![1; workloads.len()],
            workloads,
            exit_every: 0,
            cost,
            timer_rate: 0,
            policy: SchedulerPolicy::RoundRobin,
            clock: QuantumClock::Wall,
            caps: Vec::new(),
            credit: CreditConfig::default(),
        }
    }

    fn quantum(&self) -> u64 {
        u64::from(self.quantum_us) * (TSC_HZ / 1_000_000)
    }

    fn slice(&self, weight: u32) -> u64 {
        self.quantum() * u64::from(weight)
    }

    fn vm_count(&self) -> u64 {
        self.weights.len() as u64
    }

    fn tick(&self) -> u64 {
        1 << self.timer_rate
    }

    /// Root-mode cycles one exit may take.
    fn exit_cost(&self) -> u64 {
        EXIT_READINGS * self.cost
    }

    /// Root-mode cycles the loop may take between two slices.
    fn switch_cost(&self) -> u64 {
        SWITCH_READINGS * self.cost
    }

    /// The longest a slice of weight `weight` may hold the CPU, from its VM's entry to the end
    /// of its last exit, when `cuts` other VMs woke during it: its length, one timer tick past
    /// the end, the handling of its last exit, and of the exit at each of those VMs' deadlines
    /// (the slice is cut there, and goes on). On the guest clock the VM's own exits come on top
    /// of the length, each with its root time and up to a tick of guest time the timer did not
    /// count (it counts whole ticks).
    fn longest_slice(&self, weight: u32, cuts: u64) -> u64 {
        let length = self.slice(weight);
        let own_exits = match self.clock {
            QuantumClock::Guest if self.exit_every > 0 => {
                (length + self.tick()).div_ceil(self.exit_every)
            }
            _ => 0,
        };
        length + (own_exits + 1) * self.tick() + (own_exits + 1 + cuts) * self.exit_cost()
    }

    /// The longest any runnable VM may wait: a slice of each of the `n − 1` others, and the
    /// switch before each and before its own. A VM woken while it waits cuts the slice in
    /// progress; each other VM wakes at most twice in that time (once before its turn, once
    /// after). A woken VM waits from its deadline: inside a slice the deadline is noticed at
    /// most a tick and one exit after it (the slice is cut there); between slices, at the next
    /// slice's first exit, within that slice's switch.
    fn wait_bound(&self) -> u64 {
        let others = self.vm_count() - 1;
        let longest = self.longest_slice(*self.weights.iter().max().unwrap(), 0);
        others * (longest + self.switch_cost() + 2 * self.exit_cost())
            + self.switch_cost()
            + self.tick()
            + self.exit_cost()
    }

    fn config(&self) -> RunConfig {
        let vms = self
            .weights
            .iter()
            .enumerate()
            .map(|(vm, &weight)| {
                let cap_pct = self.caps.get(vm).copied().unwrap_or(0);
                let mut vm = vm_config(&format!("vm{vm}"), 2);
                vm.weight = weight;
                vm.cap_pct = cap_pct;
                vm
            })
            .collect();
        let mut config = RunConfig::new(self.quantum_us, TSC_HZ, 0, vms);
        config.policy = self.policy;
        config.credit = self.credit;
        config.quantum_clock = self.clock;
        config
    }

    fn program(&self, workload: &Workload) -> Program {
        let exits = |life| program(life, self.exit_every, Exit::Cpuid { length: 2 }, |_| {});
        match workload {
            Workload::CpuBound(life) => exits(*life),
            Workload::CpuBoundUntil(deadline) => until(*deadline, exits(u64::MAX)),
            Workload::Bursty { phases, rounds } => bursts(phases.clone(), *rounds, self.exit_every),
        }
    }

    /// Runs the scenario on the real loop.
    fn run(&self) -> Observed {
        let programs = self.workloads.iter().map(|w| self.program(w)).collect();
        let mut run = FakeRun::new(&self.config(), programs, self.cost);
        run.set_timer_rate(self.timer_rate);
        let records = run.run();
        let summary = records
            .iter()
            .find_map(|record| match record {
                Record::RunSummary(summary) => Some(summary.clone()),
                _ => None,
            })
            .expect("the run sent its summary");
        Observed {
            run: summary,
            vms: summaries(&records),
            timeline: timeline(&records, self.weights.len()),
            intervals: intervals(&records, self.weights.len()),
            start: run.machine.start,
            ignored_calls: run.machine.policy.ignored_calls()
                + run.machine.accounting.ignored_calls(),
        }
    }
}

/// What one run sent, and what the loop's policy and accounting say at its end.
#[derive(Debug)]
struct Observed {
    run: RunSummary,
    vms: BTreeMap<u16, VmSummary>,
    timeline: Timeline,
    /// Per VM, its slices as `[entry, end)`, from the events.
    intervals: Vec<Vec<(u64, u64)>>,
    /// The run's first instant (the credit policy's first accounting period starts there).
    start: u64,
    /// Calls the policy and the accounting ignored because they did not fit a VM's state.
    ignored_calls: u64,
}

impl Observed {
    fn vm(&self, vm: u16) -> &VmSummary {
        &self.vms[&vm]
    }

    /// Of all guest cycles, VM `vm`'s share.
    fn guest_share(&self, vm: u16) -> f64 {
        let total: u64 = self.vms.values().map(|summary| summary.guest).sum();
        self.vm(vm).guest as f64 / total as f64
    }

    /// Jain's index of the guest cycles per weight of the VMs `vms`.
    fn jain(&self, vms: impl IntoIterator<Item = (u16, u32)>) -> f64 {
        let values: Vec<f64> = vms
            .into_iter()
            .map(|(vm, weight)| self.vm(vm).guest as f64 / f64::from(weight))
            .collect();
        jain_index(&values)
    }
}

/// Where a VM stands, as the event stream tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Runnable {
        since: u64,
        /// Slices of other VMs since it became runnable.
        overtaken: usize,
        /// It became runnable by waking.
        woken: bool,
    },
    Running {
        since: u64,
        /// Other VMs woken since it entered: each cut its slice at the deadline.
        cuts: u64,
    },
    Blocked,
    Stopped,
}

/// The run as its switch and wake events tell it; per-VM figures are indexed by VM id.
#[derive(Debug, Default)]
struct Timeline {
    /// Longest time a runnable VM waited for the CPU, and most slices of others it waited
    /// through.
    longest_wait: u64,
    most_overtaken: usize,
    /// Longest time the CPU went without a slice while some VM was runnable.
    longest_gap: u64,
    /// Cycles during which no VM was running or runnable.
    nothing_runnable: u64,
    /// Per VM, the longest it waited for the CPU after a wake (from the wake's event: the
    /// instant the loop noticed the deadline).
    longest_wake_wait: Vec<u64>,
    /// Per VM: its slices as `(cycles from its entry to the end of its last exit, other VMs
    /// woken meanwhile)`, their cycles in all, how many the timer ended, how many it gave up,
    /// and its wakes.
    slices: Vec<Vec<(u64, u64)>>,
    running: Vec<u64>,
    preempted: Vec<u64>,
    gave_up: Vec<u64>,
    wakes: Vec<u64>,
}

/// Per VM, its slices as `[run event, descheduled event)` in TSC cycles.
fn intervals(records: &[Record], vm_count: usize) -> Vec<Vec<(u64, u64)>> {
    let mut intervals = vec![Vec::new(); vm_count];
    let mut running = None;
    for record in records {
        let Record::Events { tsc, events } = record else {
            continue;
        };
        for (now, event) in record::timed_events(*tsc, events) {
            match *event {
                Event::Run { vm, .. } => running = Some((vm, now)),
                Event::Descheduled { vm, .. } => {
                    if let Some((_, since)) = running.take().filter(|&(id, _)| id == vm) {
                        intervals[usize::from(vm)].push((since, now));
                    }
                }
                _ => {}
            }
        }
    }
    intervals
}

/// Folds the events in `records` (one CPU, `vm_count` VMs runnable at the first event), checking
/// as it goes that each event fits the VM's state: only a runnable VM runs, one at a time, only
/// a running VM is descheduled, only a blocked one wakes, and every VM has stopped at the end.
fn timeline(records: &[Record], vm_count: usize) -> Timeline {
    let events: Vec<(u64, Event)> = records
        .iter()
        .filter_map(|record| match record {
            Record::Events { tsc, events } => Some(record::timed_events(*tsc, events)),
            _ => None,
        })
        .flatten()
        .map(|(tsc, event)| (tsc, *event))
        .collect();
    let start = events.first().map_or(0, |&(tsc, _)| tsc);
    let runnable = |since, woken| Seen::Runnable {
        since,
        overtaken: 0,
        woken,
    };
    let mut seen = vec![runnable(start, false); vm_count];
    let mut line = Timeline {
        longest_wake_wait: vec![0; vm_count],
        slices: vec![Vec::new(); vm_count],
        running: vec![0; vm_count],
        preempted: vec![0; vm_count],
        gave_up: vec![0; vm_count],
        wakes: vec![0; vm_count],
        ..Timeline::default()
    };
    // Since when the CPU has been free with a VM runnable.
    let mut free_since = start;
    let mut last = start;
    for (now, event) in events {
        let is = |matches: fn(&Seen) -> bool| seen.iter().any(matches);
        let running = is(|state| matches!(state, Seen::Running { .. }));
        let any_runnable = is(|state| matches!(state, Seen::Runnable { .. }));
        if !running && !any_runnable {
            line.nothing_runnable += now - last;
        }
        last = now;
        match event {
            Event::Run { vm, .. } => {
                let id = usize::from(vm);
                let Seen::Runnable {
                    since,
                    overtaken,
                    woken,
                } = seen[id]
                else {
                    panic!("vm {vm} ran while {:?}", seen[id]);
                };
                assert!(!running, "vm {vm} ran while another held the CPU");
                line.longest_wait = line.longest_wait.max(now - since);
                if woken {
                    let longest = &mut line.longest_wake_wait[id];
                    *longest = (*longest).max(now - since);
                }
                line.most_overtaken = line.most_overtaken.max(overtaken);
                line.longest_gap = line.longest_gap.max(now - free_since);
                for state in &mut seen {
                    if let Seen::Runnable { overtaken, .. } = state {
                        *overtaken += 1;
                    }
                }
                seen[id] = Seen::Running {
                    since: now,
                    cuts: 0,
                };
            }
            Event::Descheduled { vm, why, .. } => {
                let id = usize::from(vm);
                let Seen::Running { since, cuts } = seen[id] else {
                    panic!("vm {vm} descheduled while {:?}", seen[id]);
                };
                line.running[id] += now - since;
                line.slices[id].push((now - since, cuts));
                free_since = now;
                seen[id] = match why {
                    record::SliceEnd::Preempted => {
                        line.preempted[id] += 1;
                        runnable(now, false)
                    }
                    record::SliceEnd::Yielded => {
                        line.gave_up[id] += 1;
                        runnable(now, false)
                    }
                    record::SliceEnd::Blocked(_) => {
                        line.gave_up[id] += 1;
                        Seen::Blocked
                    }
                    record::SliceEnd::Stopped => Seen::Stopped,
                };
            }
            Event::Wake { vm, .. } => {
                let id = usize::from(vm);
                assert_eq!(seen[id], Seen::Blocked, "vm {vm} woke");
                if !running && !any_runnable {
                    free_since = now;
                }
                for state in &mut seen {
                    if let Seen::Running { cuts, .. } = state {
                        *cuts += 1;
                    }
                }
                seen[id] = runnable(now, true);
                line.wakes[id] += 1;
            }
            _ => {}
        }
    }
    assert!(
        seen.iter().all(|state| *state == Seen::Stopped),
        "the run ended with {seen:?}"
    );
    line
}

/// The rules every run keeps, whatever its guests do: every cycle accounted exactly once, the
/// summaries agree with the events, no VM waits through another's slice twice or longer than
/// the bound, no idling while a VM is runnable, slices that end on time, and the quantum error
/// the timer's tick and one exit allow.
fn check_rules(scenario: &Scenario, observed: &Observed) -> Result<(), TestCaseError> {
    let (run, line) = (&observed.run, &observed.timeline);
    let n = scenario.weights.len();
    prop_assert_eq!(observed.ignored_calls, 0);
    prop_assert_eq!(run.dropped_records, 0);
    // Conservation, to the cycle: guest + root + idle = elapsed, and each VM's runstates add up
    // to elapsed.
    let guest: u64 = observed.vms.values().map(|vm| vm.guest).sum();
    prop_assert_eq!(guest + run.root + run.idle, run.elapsed);
    for vm in observed.vms.values() {
        let runstates = vm.running + vm.runnable + vm.blocked + vm.stopped;
        prop_assert_eq!(runstates, run.elapsed, "vm {}", vm.vm);
    }
    // The summaries say what the events say.
    for (&id, vm) in &observed.vms {
        let i = usize::from(id);
        prop_assert_eq!(vm.slices, line.slices[i].len() as u64, "vm {}", id);
        prop_assert_eq!(vm.preemptions, line.preempted[i], "vm {}", id);
        prop_assert_eq!(vm.yields, line.gave_up[i], "vm {}", id);
        prop_assert_eq!(vm.wakes, line.wakes[i], "vm {}", id);
        prop_assert_eq!(vm.running, line.running[i], "vm {}", id);
    }
    // No VM waits through the same VM's slice twice, nor longer than the bound; its wake
    // latency (from its deadline) keeps the same bound.
    prop_assert!(
        line.most_overtaken < n,
        "a VM waited through {} slices with {} VMs",
        line.most_overtaken,
        n
    );
    let bound = scenario.wait_bound();
    prop_assert!(
        line.longest_wait <= bound,
        "a VM waited {} cycles, bound {}",
        line.longest_wait,
        bound
    );
    for vm in observed.vms.values() {
        prop_assert!(
            vm.wake_max <= bound,
            "vm {} woke {} cycles after its deadline, bound {}",
            vm.vm,
            vm.wake_max,
            bound
        );
    }
    // Wake-ups are noticed on time: the latency from the deadline is the wait from the wake's
    // event and at most a switch, a tick and an exit before it (a deadline inside a slice cuts
    // it; one between slices is seen before the next).
    let notice = scenario.switch_cost() + scenario.tick() + scenario.exit_cost();
    for (&id, vm) in &observed.vms {
        let waited = line.longest_wake_wait[usize::from(id)];
        prop_assert!(
            vm.wake_max <= waited + notice,
            "vm {} woke {} cycles after its deadline, and waited {} after the wake was seen",
            id,
            vm.wake_max,
            waited
        );
    }
    // No idling while a VM is runnable: between slices only the switch, and idle only while
    // nothing could run.
    prop_assert!(
        line.longest_gap <= scenario.switch_cost(),
        "the CPU went {} cycles without a slice while a VM was runnable",
        line.longest_gap
    );
    prop_assert!(run.idle <= line.nothing_runnable);
    for (&id, vm) in &observed.vms {
        let weight = scenario.weights[usize::from(id)];
        for &(cycles, cuts) in &line.slices[usize::from(id)] {
            let longest = scenario.longest_slice(weight, cuts);
            prop_assert!(
                cycles <= longest,
                "vm {} held the CPU for {} cycles ({} cuts), bound {}",
                id,
                cycles,
                cuts,
                longest
            );
        }
        if vm.preemptions > 0 {
            let (low, high) = quantum_error_range(scenario, weight);
            prop_assert!(
                (low..=high).contains(&vm.quantum_error_median_ppm)
                    && vm.quantum_error_max_ppm <= high.max(-low),
                "vm {}: quantum error median {} max {} ppm, not within {}..={}",
                id,
                vm.quantum_error_median_ppm,
                vm.quantum_error_max_ppm,
                low,
                high
            );
        }
    }
    Ok(())
}

/// The quantum error a preempted slice of weight `weight` may show, in ppm. On the wall clock it
/// is the slice's last exit against its end, either way: at most a timer tick and the entry past
/// it, or short by the handling of an exit that came just before it, and a slice after an
/// overrun is armed that much shorter. On the guest clock the timer counts guest cycles in whole
/// ticks and the slice goes on until it has its length: never short, long by less than a tick.
fn quantum_error_range(scenario: &Scenario, weight: u32) -> (i64, i64) {
    let ppm = |cycles: u64| (cycles * 1_000_000).div_ceil(scenario.slice(weight)) as i64;
    match scenario.clock {
        QuantumClock::Wall => {
            let error = ppm(scenario.tick() + scenario.exit_cost());
            (-error, error)
        }
        QuantumClock::Guest => (0, ppm(scenario.tick() - 1)),
    }
}

fn workload(quantum: u64) -> impl Strategy<Value = Workload> {
    prop_oneof![
        1 => (0..=quantum * 40).prop_map(Workload::CpuBound),
        2 => (
            prop::collection::vec(
                (
                    prop_oneof![Just(0), 1..quantum * 3],
                    prop_oneof![Just(0), 1..quantum * 10],
                ),
                1..4,
            ),
            1u64..=20,
        )
            .prop_map(|(phases, rounds)| Workload::Bursty { phases, rounds }),
    ]
}

fn policy() -> impl Strategy<Value = SchedulerPolicy> {
    prop_oneof![
        Just(SchedulerPolicy::RoundRobin),
        Just(SchedulerPolicy::Boost)
    ]
}

/// Random VM counts, weights, quanta, exits, costs, timer rates, policies and workloads, on the
/// wall clock (on the guest clock a VM's own exits lengthen its slices without bound, so the
/// bounds on waiting only hold for CPU-bound VMs; see `cpu_bound_scenario`).
fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=16, 100u32..=1_000).prop_flat_map(|(n, quantum_us)| {
        let quantum = u64::from(quantum_us) * (TSC_HZ / 1_000_000);
        (
            prop::collection::vec(1u32..=8, n),
            prop::collection::vec(workload(quantum), n),
            prop_oneof![Just(0), quantum / 4..=quantum * 4],
            0u64..=200,
            0u8..=5,
            policy(),
        )
            .prop_map(
                move |(weights, workloads, exit_every, cost, timer_rate, policy)| Scenario {
                    quantum_us,
                    weights,
                    workloads,
                    exit_every,
                    cost,
                    timer_rate,
                    policy,
                    clock: QuantumClock::Wall,
                    caps: Vec::new(),
                    credit: CreditConfig::default(),
                },
            )
    })
}

/// Full rounds the CPU-bound VMs of [`cpu_bound_scenario`] run for.
const ROUNDS: u64 = 150;

/// Every VM CPU-bound until the same instant, [`ROUNDS`] rounds of their slices after the start,
/// on either clock.
fn cpu_bound_scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(1u32..=8, 1..=12),
        100u32..=1_000,
        prop_oneof![Just(0u64), 1u64..=4],
        0u64..=20,
        0u8..=5,
        policy(),
        prop_oneof![Just(QuantumClock::Wall), Just(QuantumClock::Guest)],
    )
        .prop_map(
            |(weights, quantum_us, exits_per_quantum, cost, timer_rate, policy, clock)| {
                let quantum = u64::from(quantum_us) * (TSC_HZ / 1_000_000);
                let round: u64 = weights.iter().map(|&w| quantum * u64::from(w)).sum();
                let deadline = CLOCK_START + ROUNDS * round;
                Scenario {
                    quantum_us,
                    workloads: vec![Workload::CpuBoundUntil(deadline); weights.len()],
                    weights,
                    exit_every: quantum.checked_div(exits_per_quantum).unwrap_or(0),
                    cost,
                    timer_rate,
                    policy,
                    clock,
                    caps: Vec::new(),
                    credit: CreditConfig::default(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Mixed CPU-bound and bursty VMs, either policy: the scheduling rules hold. The wake-up
    /// boost keeps the same bound on waiting.
    #[test]
    fn mixed_workloads_keep_the_scheduling_rules(scenario in scenario()) {
        check_rules(&scenario, &scenario.run())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// With every VM CPU-bound, each gets its weight's share of the guest time, the CPU never
    /// idles, and the rules hold on either clock.
    ///
    /// The share is within `1/K + 2 (tick + exit) / quantum` of its weight's, `K` the fewest
    /// slices any VM had: the VMs stop at the same instant, so each had `K` or `K + 1` slices;
    /// and each slice of a VM gives up to the entry path and its last exit (a timer tick and one
    /// exit's root time) of guest time to root mode, against a slice of at least a quantum. With
    /// 150 rounds and the costs drawn that is at most about 0.7 % + 0.55 %. On the wall clock
    /// the CPUID exits cost every VM the same fraction of its slice, so they change no share.
    #[test]
    fn cpu_bound_vms_share_by_weight(scenario in cpu_bound_scenario()) {
        let observed = scenario.run();
        check_rules(&scenario, &observed)?;
        prop_assert_eq!(observed.run.idle, 0);
        let fewest = observed.vms.values().map(|vm| vm.slices).min().unwrap();
        let tolerance = 1.0 / fewest as f64
            + 2.0 * (scenario.tick() + scenario.exit_cost()) as f64 / scenario.quantum() as f64;
        let total: u32 = scenario.weights.iter().sum();
        for (vm, &weight) in scenario.weights.iter().enumerate() {
            let expected = f64::from(weight) / f64::from(total);
            let share = observed.guest_share(vm as u16);
            prop_assert!(
                (share - expected).abs() <= tolerance * expected,
                "vm {} (weight {}): share {} expected {} ± {:.3} %",
                vm, weight, share, expected, tolerance * 100.0
            );
        }
        let jain = observed.jain((0..).zip(scenario.weights.iter().copied()));
        prop_assert!(jain > 0.999, "weighted Jain index {}", jain);
    }
}

/// One CPU-bound VM never waits for another: it is runnable only for the switch between its
/// slices, all but its last slice end by the timer, and the quantum error is its entry path
/// alone. With root work free, all of that is exact: never runnable, no error at all.
#[test]
fn one_cpu_bound_vm_never_waits_for_another() {
    for cost in [0, 10] {
        let mut scenario = Scenario::new(100, vec![Workload::CpuBound(20_000_000)], cost);
        scenario.weights = vec![2];
        let observed = scenario.run();
        check_rules(&scenario, &observed).unwrap();
        let vm = observed.vm(0);
        assert!(
            observed.timeline.longest_wait <= scenario.switch_cost(),
            "cost {cost}: waited {}",
            observed.timeline.longest_wait
        );
        assert!(vm.runnable <= vm.slices * scenario.switch_cost(), "{vm:?}");
        assert_eq!(vm.preemptions, vm.slices - 1, "{vm:?}");
        assert_eq!(vm.yields, 0);
        assert_eq!(observed.run.idle, 0);
        let (_, high) = quantum_error_range(&scenario, 2);
        assert!(vm.quantum_error_max_ppm <= high, "{vm:?}");
        if cost == 0 {
            assert_eq!((vm.runnable, vm.quantum_error_max_ppm), (0, 0), "{vm:?}");
        }
    }
}

/// A VM that runs 1,000 cycles and sleeps 50,000, four times: it gives the CPU up at each HLT,
/// wakes at each deadline, and the CPU idles through every sleep. With root work free the
/// figures are exact; with it, the sleep loses to idle only the root work after the guest's
/// SET_TIMER and the wake comes within a switch of the deadline.
#[test]
fn a_blocked_vm_is_woken_at_its_deadline_and_the_gap_is_idle() {
    let (run, sleep, rounds) = (1_000, 50_000, 4);
    for cost in [0, 20] {
        let phases = vec![(run, sleep)];
        let scenario = Scenario::new(10, vec![Workload::Bursty { phases, rounds }], cost);
        let observed = scenario.run();
        check_rules(&scenario, &observed).unwrap();
        let (vm, idle) = (observed.vm(0), observed.run.idle);
        // Four slices that end in HLT, and the fifth that exits.
        assert_eq!(
            (vm.slices, vm.preemptions, vm.yields, vm.wakes),
            (rounds + 1, 0, rounds, rounds),
            "{vm:?}"
        );
        assert!(vm.wake_max <= scenario.switch_cost(), "{vm:?}");
        let root_after_sleep = scenario.exit_cost() + scenario.switch_cost();
        assert!(vm.blocked <= rounds * sleep, "{vm:?}");
        assert!(idle <= vm.blocked, "idle {idle}, {vm:?}");
        assert!(idle >= rounds * (sleep - root_after_sleep), "idle {idle}");
        if cost == 0 {
            assert_eq!(
                (idle, vm.blocked, vm.wake_max),
                (rounds * sleep, rounds * sleep, 0)
            );
        }
    }
}

/// A sleep of zero arms a deadline that is already due: each HLT goes straight on, so the VM
/// never gives the CPU up (this kernel has no yield).
#[test]
fn a_sleep_already_due_does_not_give_up_the_cpu() {
    let phases = vec![(10_000, 0)];
    let scenario = Scenario::new(1_000, vec![Workload::Bursty { phases, rounds: 20 }], 10);
    let observed = scenario.run();
    check_rules(&scenario, &observed).unwrap();
    let vm = observed.vm(0);
    assert_eq!((vm.slices, vm.yields, vm.wakes), (1, 0, 0), "{vm:?}");
}

/// Three CPU-bound VMs and one that runs briefly and sleeps 2.5 rounds of the other three: with
/// the wake-up boost the sleeper wakes to the head of the queue and waits only for the slice in
/// progress; plain round robin queues it behind the others. Both keep the rules, and the
/// CPU-bound VMs share equally either way.
#[test]
fn the_boost_lowers_wake_latency_and_keeps_the_shares() {
    let (quantum_us, quantum) = (100, 100_000);
    let run = |policy| {
        let deadline = CLOCK_START + 1_000 * quantum;
        let sleeper = Workload::Bursty {
            phases: vec![(5_000, 3 * quantum * 5 / 2)],
            rounds: 50,
        };
        let mut workloads = vec![Workload::CpuBoundUntil(deadline); 3];
        workloads.push(sleeper);
        let mut scenario = Scenario::new(quantum_us, workloads, 10);
        scenario.policy = policy;
        assert_eq!(scenario.quantum(), quantum);
        let observed = scenario.run();
        check_rules(&scenario, &observed).unwrap();
        (scenario, observed)
    };
    let (scenario, plain) = run(SchedulerPolicy::RoundRobin);
    let (_, boosted) = run(SchedulerPolicy::Boost);
    let (plain_sleeper, boosted_sleeper) = (plain.vm(3), boosted.vm(3));
    // One slice in progress at most, its switch, and the wake noticed at the deadline.
    let boosted_wait =
        quantum + scenario.tick() + 2 * scenario.exit_cost() + scenario.switch_cost();
    assert!(
        boosted_sleeper.wake_max <= boosted_wait,
        "{boosted_sleeper:?}"
    );
    assert!(plain_sleeper.wake_max > 2 * quantum, "{plain_sleeper:?}");
    // Waking sooner, the sleeper is done sooner: stopped for longer before the end.
    assert!(boosted_sleeper.stopped > plain_sleeper.stopped);
    for observed in [&plain, &boosted] {
        let jain = observed.jain((0..3).map(|vm| (vm, 1)));
        assert!(jain > 0.999, "Jain index of the CPU-bound VMs {jain}");
    }
}

/// Cycles of `slices` within [from, to).
fn ran_within(slices: &[(u64, u64)], from: u64, to: u64) -> u64 {
    slices
        .iter()
        .map(|&(start, end)| end.min(to).saturating_sub(start.max(from)))
        .sum()
}

/// CPU-bound VMs under the credit policy, VM 0 capped and the others capped or not, for 30
/// accounting periods of 1 to 6 quanta.
fn capped_scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=4, 100u32..=1_000).prop_flat_map(|(n, quantum_us)| {
        (
            prop::collection::vec(1u32..=8, n),
            prop::collection::vec(prop_oneof![Just(0u32), 5u32..=100], n),
            5u32..=100,
            1u32..=6,
            0u32..=1_000,
            prop_oneof![Just(0u64), 1u64..=4],
            0u64..=100,
            0u8..=5,
        )
            .prop_map(
                move |(weights, mut caps, first_cap, periods, ratelimit_us, exits, cost, rate)| {
                    caps[0] = first_cap;
                    let quantum = u64::from(quantum_us) * (TSC_HZ / 1_000_000);
                    let period_us = quantum_us * periods;
                    let deadline = CLOCK_START + 30 * u64::from(period_us) * 1_000;
                    Scenario {
                        quantum_us,
                        workloads: vec![Workload::CpuBoundUntil(deadline); n],
                        weights,
                        exit_every: quantum.checked_div(exits).unwrap_or(0),
                        cost,
                        timer_rate: rate,
                        policy: SchedulerPolicy::Credit,
                        clock: QuantumClock::Wall,
                        caps,
                        credit: CreditConfig {
                            ratelimit_us,
                            period_us,
                        },
                    }
                },
            )
    })
}

/// The rules of any run, whatever the policy: every cycle accounted once, the summaries agree
/// with the events, no call the policy or the accounting had to ignore.
fn check_accounting(observed: &Observed) -> Result<(), TestCaseError> {
    let (run, line) = (&observed.run, &observed.timeline);
    prop_assert_eq!(observed.ignored_calls, 0);
    prop_assert_eq!(run.dropped_records, 0);
    let guest: u64 = observed.vms.values().map(|vm| vm.guest).sum();
    prop_assert_eq!(guest + run.root + run.idle, run.elapsed);
    for (&id, vm) in &observed.vms {
        let i = usize::from(id);
        prop_assert_eq!(
            vm.running + vm.runnable + vm.blocked + vm.stopped,
            run.elapsed
        );
        prop_assert_eq!(vm.slices, line.slices[i].len() as u64, "vm {}", id);
        prop_assert_eq!(vm.running, line.running[i], "vm {}", id);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Credit caps on the real loop: over every accounting period [start + kP, start + (k+1)P),
    /// a VM capped at c % holds the CPU (from its slice's start to its end, the cycles the
    /// policy is charged) at most its budget P × c / 100 plus one slice's overshoot: the timer's
    /// tick past the slice's end and the handling of the exit that ends it, with the entry
    /// path before (one exit's allowance each). When every VM is capped the CPU idles the rest
    /// (the loop waits for the refill instead of running a capped VM); with an uncapped VM
    /// beside them it idles only at the end, for at most a period.
    #[test]
    fn credit_caps_hold_on_the_real_loop(scenario in capped_scenario()) {
        let observed = scenario.run();
        check_accounting(&observed)?;
        prop_assert_eq!(observed.run.policy.as_str(), "credit");
        let period = u64::from(scenario.credit.period_us) * (TSC_HZ / 1_000_000);
        let slack = scenario.tick() + 2 * scenario.exit_cost();
        let periods = (observed.run.elapsed / period).max(1);
        for (vm, &cap) in scenario.caps.iter().enumerate() {
            if cap == 0 {
                continue;
            }
            let budget = period * u64::from(cap) / 100;
            for k in 0..periods {
                let from = observed.start + k * period;
                let ran = ran_within(&observed.intervals[vm], from, from + period);
                prop_assert!(
                    ran <= budget + slack,
                    "vm {} capped at {} % held the CPU {} cycles in period {} (budget {}, slack {})",
                    vm, cap, ran, k, budget, slack
                );
            }
        }
        let all_capped = scenario.caps.iter().all(|&cap| cap > 0);
        let total_cap: u32 = scenario.caps.iter().sum();
        if all_capped && total_cap < 100 {
            // At least the uncapped part of each whole period, less a slice's overshoot per VM.
            let free = period * u64::from(100 - total_cap) / 100;
            let overshoot = slack * scenario.vm_count() + scenario.switch_cost();
            let floor = (periods - 1) * free.saturating_sub(overshoot);
            prop_assert!(
                observed.run.idle >= floor,
                "idle {} with caps {:?} (at least {} expected)",
                observed.run.idle, scenario.caps, floor
            );
        }
        if !all_capped {
            // Only at the end: the uncapped VMs stop at their deadline, and a capped one that
            // is parked then waits (idle) for the refill to take its last entry.
            prop_assert!(observed.run.idle <= period, "idle {}", observed.run.idle);
        }
    }
}

/// Three CPU-bound VMs of weights 1, 2 and 3 under credit, uncapped, for 20,000 quanta: each
/// gets its weight's share of the guest time within 1 %. The credit a VM may hold or owe is
/// bounded (2 periods and a quantum per VM: 9 quanta), so its share of the CPU used is its
/// weight's to within twice that and a period and a quantum (22 quanta) of the 3,333 quanta
/// the lightest should get (0.66 %); each slice gives its entry path and last exit to root
/// mode, the same for every VM.
#[test]
fn credit_weights_hold_on_the_real_loop() {
    let quantum = 100_000;
    let deadline = CLOCK_START + 20_000 * quantum;
    let mut scenario = Scenario::new(100, vec![Workload::CpuBoundUntil(deadline); 3], 10);
    scenario.weights = vec![1, 2, 3];
    scenario.policy = SchedulerPolicy::Credit;
    scenario.credit.period_us = 300;
    let observed = scenario.run();
    check_accounting(&observed).unwrap();
    assert_eq!(observed.run.idle, 0);
    for (vm, weight) in [(0u16, 1.0), (1, 2.0), (2, 3.0)] {
        let expected = weight / 6.0;
        let share = observed.guest_share(vm);
        assert!(
            (share - expected).abs() <= 0.01 * expected,
            "vm {vm}: share {share}, expected {expected}"
        );
    }
}

/// Two CPU-bound VMs and a sleeper that runs 5 µs and sleeps 2.5 ms, quantum 1 ms, rate limit
/// 100 µs: under credit the sleeper wakes with credit (it uses far less than its third), is
/// boosted and preempts the running VM once that has run 100 µs, so it waits at most the rate
/// limit, the exit that ends the slice (a tick and an exit late), the switch, and the wake
/// noticed at its deadline; round robin queues it behind the slices of the others. The CPU-bound
/// VMs share equally either way.
#[test]
fn a_credit_waker_runs_within_the_rate_limit_on_the_real_loop() {
    let (quantum_us, quantum) = (1_000, 1_000_000);
    let ratelimit = 100_000;
    let run = |policy| {
        let deadline = CLOCK_START + 400 * quantum;
        let sleeper = Workload::Bursty {
            phases: vec![(5_000, 5 * quantum / 2)],
            rounds: 100,
        };
        let mut workloads = vec![Workload::CpuBoundUntil(deadline); 2];
        workloads.push(sleeper);
        let mut scenario = Scenario::new(quantum_us, workloads, 10);
        scenario.policy = policy;
        scenario.credit.ratelimit_us = 100;
        let observed = scenario.run();
        check_accounting(&observed).unwrap();
        (scenario, observed)
    };
    let (scenario, credit) = run(SchedulerPolicy::Credit);
    let (_, plain) = run(SchedulerPolicy::RoundRobin);
    let bound = ratelimit + scenario.tick() + 2 * scenario.exit_cost() + scenario.switch_cost();
    let sleeper = credit.vm(2);
    assert_eq!(sleeper.wakes, 100, "{sleeper:?}");
    assert!(sleeper.wake_max <= bound, "{sleeper:?}, bound {bound}");
    assert!(plain.vm(2).wake_max > quantum / 2, "{:?}", plain.vm(2));
    for observed in [&credit, &plain] {
        let jain = observed.jain((0..2).map(|vm| (vm, 1)));
        assert!(jain > 0.999, "Jain index of the CPU-bound VMs {jain}");
    }
}

/// A run of CPU-bound VMs that asks for `changes` (`(µs into the run, setting)`) from the lab
/// and `typed` (whole settings) on the console before the first slice; its records.
fn run_with_changes(
    scenario: &Scenario,
    changes: &[(u64, Setting)],
    typed: &[Setting],
) -> (Vec<Record>, u64) {
    let mut config = scenario.config();
    config.changes = changes
        .iter()
        .map(|&(at_us, setting)| ScheduledChange { at_us, setting })
        .collect();
    let programs = scenario
        .workloads
        .iter()
        .map(|w| scenario.program(w))
        .collect();
    let mut run = FakeRun::new(&config, programs, scenario.cost);
    for &setting in typed {
        run.machine.host.input.push_back(crate::input::FOCUS);
        run.machine
            .host
            .input
            .extend(crate::input::setting_request(setting));
    }
    let records = run.run();
    (records, run.machine.settings_refused())
}

/// The `(tsc, setting, source)` of every change made, in order.
fn changes_made(records: &[Record]) -> Vec<(u64, Setting, ChangeSource)> {
    records
        .iter()
        .filter_map(|record| match *record {
            Record::SettingChanged {
                tsc,
                setting,
                source,
            } => Some((tsc, setting, source)),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// After a quantum change the lab scheduled at T, the change is made between two slices
    /// within a slice of T; every slice that started before it has the old length, every slice
    /// after it the new one (each within an exit's cost and a timer tick), under every policy.
    #[test]
    fn a_scheduled_quantum_change_splits_the_slices(
        before_us in 100u32..2_000,
        after_us in 100u32..2_000,
        at_us in 5_000u64..20_000,
        cost in 0u64..50,
        policy in prop::sample::select(SchedulerPolicy::ALL.to_vec()),
    ) {
        let deadline = CLOCK_START + 40_000_000;
        let mut scenario = Scenario::new(before_us, vec![Workload::CpuBoundUntil(deadline); 2], cost);
        scenario.policy = policy;
        let change = Setting::Quantum { us: after_us };
        let (records, refused) = run_with_changes(&scenario, &[(at_us, change)], &[]);
        prop_assert_eq!(refused, 0);
        let made = changes_made(&records);
        prop_assert_eq!(made.len(), 1);
        let (at, setting, source) = made[0];
        prop_assert_eq!((setting, source), (change, ChangeSource::Lab));
        let (old, new) = (u64::from(before_us) * 1_000, u64::from(after_us) * 1_000);
        // The run's clock starts a few readings after CLOCK_START.
        let due = CLOCK_START + at_us * 1_000;
        let slack = 40 * cost + 2;
        prop_assert!(at >= due && at <= due + old + slack, "change at {at}, due {due}");
        let summary = records.iter().find_map(|record| match record {
            Record::RunSummary(summary) => Some(summary.quantum_cycles),
            _ => None,
        });
        prop_assert_eq!(summary, Some(new));
        for (vm, slices) in intervals(&records, 2).iter().enumerate() {
            // The last slice of each VM ends where it exits: of any length.
            let whole = &slices[..slices.len() - 1];
            let (before, after): (Vec<_>, Vec<_>) = whole.iter().partition(|&&(start, _)| start < at);
            prop_assert!(!before.is_empty() && !after.is_empty(), "vm {vm}: {slices:?}");
            for &(start, end) in &before {
                prop_assert!(end <= at, "vm {vm}: slice [{start}, {end}) spans the change at {at}");
                prop_assert!(end - start <= old + slack && end - start + slack >= old,
                    "vm {vm}: slice of {} before the change, quantum {old}", end - start);
            }
            for &(start, end) in &after {
                prop_assert!(end - start <= new + slack && end - start + slack >= new,
                    "vm {vm}: slice of {} after the change, quantum {new}", end - start);
            }
        }
    }

    /// Whatever the console sends as a setting, the run neither panics nor trusts it: it is
    /// made exactly when the lab's checks pass, refused and counted otherwise.
    #[test]
    fn console_settings_are_checked_like_lab_keys(
        kind in 0u8..3,
        vm in 0u16..4,
        value in prop_oneof![0u32..200, any::<u32>()],
        policy in prop::sample::select(SchedulerPolicy::ALL.to_vec()),
    ) {
        let setting = match kind {
            0 => Setting::Quantum { us: value },
            1 => Setting::Weight { vm, weight: value },
            _ => Setting::Cap { vm, cap_pct: value },
        };
        let deadline = CLOCK_START + 3_000_000;
        let mut scenario = Scenario::new(500, vec![Workload::CpuBoundUntil(deadline); 2], 5);
        scenario.policy = policy;
        let (records, refused) = run_with_changes(&scenario, &[], &[setting]);
        let made = changes_made(&records);
        let refusals: Vec<_> = records
            .iter()
            .filter_map(|record| match *record {
                Record::SettingRefused { setting, reason, refused, source, .. } => {
                    Some((setting, reason, refused, source))
                }
                _ => None,
            })
            .collect();
        match setting.check(2, policy) {
            Ok(()) => {
                prop_assert_eq!(made.len(), 1);
                prop_assert_eq!((made[0].1, made[0].2), (setting, ChangeSource::Console));
                prop_assert_eq!(refused, 0);
                prop_assert!(refusals.is_empty());
            }
            Err(reason) => {
                prop_assert!(made.is_empty());
                prop_assert_eq!(refused, 1);
                prop_assert_eq!(refusals, vec![(setting, reason, 1, ChangeSource::Console)]);
            }
        }
    }
}

/// A weight change mid-run under round robin: the VM's slices grow to the new multiple of the
/// quantum from the change on; a cap under round robin is refused and changes nothing.
#[test]
fn a_weight_change_lengthens_the_slices_and_a_cap_needs_credit() {
    let deadline = CLOCK_START + 30_000_000;
    let scenario = Scenario::new(1_000, vec![Workload::CpuBoundUntil(deadline); 2], 0);
    let weight = Setting::Weight { vm: 1, weight: 3 };
    let cap = Setting::Cap { vm: 0, cap_pct: 10 };
    let (records, refused) = run_with_changes(&scenario, &[(10_000, weight), (10_000, cap)], &[]);
    assert_eq!(refused, 1);
    let made = changes_made(&records);
    assert_eq!(made.len(), 1, "{made:?}");
    let at = made[0].0;
    let refusal = records.iter().find_map(|record| match *record {
        Record::SettingRefused { reason, .. } => Some(reason),
        _ => None,
    });
    assert_eq!(
        refusal,
        Some(SettingError::CapNeedsCredit {
            policy: SchedulerPolicy::RoundRobin
        })
    );
    let slices = intervals(&records, 2);
    let lengths = |vm: usize, after: bool| -> Vec<u64> {
        let whole = &slices[vm][..slices[vm].len() - 1];
        whole
            .iter()
            .filter(|&&(start, _)| (start > at) == after)
            .map(|&(start, end)| end - start)
            .collect()
    };
    assert!(lengths(1, false)
        .iter()
        .all(|&l| l.abs_diff(1_000_000) < 1_000));
    assert!(lengths(1, true)
        .iter()
        .all(|&l| l.abs_diff(3_000_000) < 1_000));
    assert!(lengths(0, true)
        .iter()
        .all(|&l| l.abs_diff(1_000_000) < 1_000));
    assert!(lengths(1, true).len() >= 3);
    // From the change on VM 1 gets three quarters of the CPU.
    let share = |vm: usize| -> u64 { lengths(vm, true).iter().sum() };
    let ratio = share(1) as f64 / (share(0) + share(1)) as f64;
    assert!((ratio - 0.75).abs() < 0.05, "{ratio}");
}

/// A scheduled change while every VM sleeps is made on time, not at the next wake.
#[test]
fn a_change_is_made_on_time_while_every_vm_sleeps() {
    let mut scenario = Scenario::new(
        1_000,
        vec![Workload::Bursty {
            phases: vec![(100_000, 50_000_000)],
            rounds: 2,
        }],
        1,
    );
    scenario.weights = vec![1];
    let change = Setting::Quantum { us: 2_000 };
    let (records, _) = run_with_changes(&scenario, &[(10_000, change)], &[]);
    let made = changes_made(&records);
    assert_eq!(made.len(), 1);
    let due = CLOCK_START + 10_000_000;
    assert!(made[0].0 >= due && made[0].0 < due + 100_000, "{made:?}");
}
