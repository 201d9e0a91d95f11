//! A simulated single-CPU kernel on a fake clock, driving [`RoundRobin`] and [`Accounting`] the way
//! the run loop does, and the scheduling properties checked against it.
//!
//! One decision: wake the blocked VMs whose deadline passed, `pick_next`, pay the switch cost in
//! root mode (unattributed), run the guest until the preemption timer fires or its workload blocks,
//! yields or finishes (with a VM exit handled in root mode, on the VM's behalf, every
//! `exit_interval` guest cycles and at the end), then report how the slice ended. With nothing
//! runnable the clock jumps to the earliest wake deadline and the gap is idle. Every cycle the
//! clock advances is reported exactly once, so conservation must hold exactly.
//!
//! The preemption timer counts in units of `2^timer_rate` cycles (SDM 325462-083US 27.5.1
//! "VMX-Preemption Timer"), so a slice of `s` cycles gives the guest `s` rounded up to that unit:
//! the quantum error the accounting sees.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use crate::{Accounting, Cycles, Policy, RoundRobin, Runstate, SliceEnd, Summary, VmId};

/// A clock that only moves when told to.
#[derive(Debug, Default)]
struct FakeClock {
    /// The current instant.
    now: Cycles,
}

impl FakeClock {
    fn now(&self) -> Cycles {
        self.now
    }

    fn advance(&mut self, cycles: Cycles) {
        self.now += cycles;
    }
}

/// What a VM's guest does.
#[derive(Clone, Debug)]
enum Workload {
    /// Never gives up the CPU.
    CpuBound,
    /// Cycles through `(run, block)` phases: runs `run` guest cycles, then blocks for `block`
    /// cycles (yields when `block` is 0).
    Bursty(Vec<(Cycles, Cycles)>),
}

/// One simulated run.
#[derive(Clone, Debug)]
struct Scenario {
    /// Quantum before weights.
    quantum: Cycles,
    /// Per-VM weight.
    weights: Vec<u32>,
    /// Per-VM workload.
    workloads: Vec<Workload>,
    /// Per-VM guest cycles before it finishes for good, if it ever does.
    lifetimes: Vec<Option<Cycles>>,
    /// Root cycles of one switch (unattributed), at least 1 so that time always moves.
    switch_cost: Cycles,
    /// Guest cycles between two VM exits.
    exit_interval: Cycles,
    /// Root cycles to handle one VM exit (attributed to the VM).
    exit_cost: Cycles,
    /// The preemption timer counts every `2^timer_rate` cycles.
    timer_rate: u8,
    /// No new slice starts at or after this instant.
    duration: Cycles,
    /// Run the policy with the wake-up boost.
    boost: bool,
}

impl Scenario {
    /// Guest cycles a slice of `slice` cycles really gets: rounded up to a whole timer tick.
    fn timer_slice(&self, slice: Cycles) -> Cycles {
        slice.next_multiple_of(1 << self.timer_rate)
    }

    /// The longest any runnable VM may wait: the slices of the `n − 1` VMs ahead of it, each with
    /// its switch and exits, then its own switch.
    fn wait_bound(&self) -> Cycles {
        let longest =
            self.timer_slice(self.quantum * Cycles::from(*self.weights.iter().max().unwrap()));
        let exits = longest.div_ceil(self.exit_interval).max(1);
        let per_slice = self.switch_cost + longest + exits * self.exit_cost;
        (self.weights.len() as Cycles - 1) * per_slice + self.switch_cost
    }
}

/// What the simulated kernel believes about a VM (the ground truth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Truth {
    Runnable,
    Running,
    Blocked { until: Cycles },
    Finished,
}

/// One VM in the simulation.
#[derive(Clone, Debug)]
struct SimVm {
    truth: Truth,
    /// Index into the bursty workload's phases.
    phase: usize,
    /// Guest cycles left before the current burst ends.
    burst_left: Cycles,
    /// Guest cycles left before the VM finishes.
    life_left: Option<Cycles>,
    /// When it last became runnable.
    runnable_since: Cycles,
    /// Slices of other VMs since it last became runnable.
    overtaken: usize,
}

/// What a simulation observed, for the properties to judge.
#[derive(Debug)]
struct Observations {
    summary: Summary,
    /// Longest time a runnable VM waited for the CPU.
    longest_wait: Cycles,
    /// Most slices of other VMs a runnable VM waited through.
    most_overtaken: usize,
    /// Times the CPU idled while some VM was runnable.
    idle_while_runnable: u64,
    /// Slices run.
    slices: u64,
}

/// Most decisions one simulation takes, a guard against a scenario that never ends.
const MAX_DECISIONS: u64 = 200_000;

fn simulate(scenario: &Scenario) -> Observations {
    let n = scenario.weights.len();
    let mut clock = FakeClock::default();
    let mut policy = RoundRobin::new(scenario.quantum, &scenario.weights).unwrap();
    if scenario.boost {
        policy = policy.with_wake_boost();
    }
    let mut accounting = Accounting::new(n, clock.now());
    let mut vms: Vec<SimVm> = (0..n)
        .map(|vm| SimVm {
            truth: Truth::Runnable,
            phase: 0,
            burst_left: match &scenario.workloads[vm] {
                Workload::CpuBound => Cycles::MAX,
                Workload::Bursty(phases) => phases[0].0,
            },
            life_left: scenario.lifetimes[vm],
            runnable_since: clock.now(),
            overtaken: 0,
        })
        .collect();
    let mut observed = Observations {
        summary: accounting.summary(clock.now()),
        longest_wait: 0,
        most_overtaken: 0,
        idle_while_runnable: 0,
        slices: 0,
    };
    let mut decisions = 0;
    while clock.now() < scenario.duration && decisions < MAX_DECISIONS {
        decisions += 1;
        for (vm, sim) in vms.iter_mut().enumerate() {
            if let Truth::Blocked { until } = sim.truth {
                if until <= clock.now() {
                    policy.woken(vm as VmId);
                    accounting.woken(vm as VmId, clock.now());
                    sim.truth = Truth::Runnable;
                    sim.runnable_since = clock.now();
                    sim.overtaken = 0;
                }
            }
        }
        check_queue(&policy, &accounting, &vms);

        let Some((vm, slice)) = policy.pick_next() else {
            if vms.iter().any(|sim| sim.truth == Truth::Runnable) {
                observed.idle_while_runnable += 1;
            }
            let next_wake = vms
                .iter()
                .filter_map(|sim| match sim.truth {
                    Truth::Blocked { until } => Some(until),
                    _ => None,
                })
                .min();
            let Some(next_wake) = next_wake else {
                break; // everybody finished
            };
            let gap = next_wake - clock.now();
            clock.advance(gap);
            accounting.idle(gap);
            continue;
        };

        let index = usize::from(vm);
        assert_eq!(
            vms[index].truth,
            Truth::Runnable,
            "picked vm {vm} is not runnable"
        );
        assert_eq!(
            slice,
            scenario.quantum * Cycles::from(scenario.weights[index])
        );
        clock.advance(scenario.switch_cost);
        accounting.root(None, scenario.switch_cost);
        accounting.switch_in(vm, clock.now());
        observed.slices += 1;
        observed.longest_wait = observed
            .longest_wait
            .max(clock.now() - vms[index].runnable_since);
        observed.most_overtaken = observed.most_overtaken.max(vms[index].overtaken);
        for (other, sim) in vms.iter_mut().enumerate() {
            if other != index && sim.truth == Truth::Runnable {
                sim.overtaken += 1;
            }
        }
        let sim = &mut vms[index];
        sim.truth = Truth::Running;

        // Run the guest until the timer fires or the workload stops first.
        let budget = scenario.timer_slice(slice);
        let wanted = sim.burst_left.min(sim.life_left.unwrap_or(Cycles::MAX));
        let ran = wanted.min(budget);
        let mut left = ran;
        loop {
            let chunk = left.min(scenario.exit_interval);
            clock.advance(chunk);
            accounting.guest(vm, chunk);
            left -= chunk;
            clock.advance(scenario.exit_cost);
            accounting.root(Some(vm), scenario.exit_cost);
            if left == 0 {
                break;
            }
        }
        sim.burst_left = sim.burst_left.saturating_sub(ran);
        if let Some(life) = &mut sim.life_left {
            *life -= ran;
        }

        let now = clock.now();
        if sim.life_left == Some(0) {
            policy.finished(vm);
            accounting.switch_out(vm, now, SliceEnd::Stopped);
            sim.truth = Truth::Finished;
        } else if wanted > budget || matches!(scenario.workloads[index], Workload::CpuBound) {
            policy.slice_expired(vm);
            accounting.switch_out(vm, now, SliceEnd::Preempted);
            accounting.slice_quantum(vm, slice, ran);
            sim.truth = Truth::Runnable;
        } else {
            // The burst ended within the slice: block, or yield for a zero-length block.
            let Workload::Bursty(phases) = &scenario.workloads[index] else {
                unreachable!("only bursty workloads end a burst");
            };
            let block = phases[sim.phase].1;
            sim.phase = (sim.phase + 1) % phases.len();
            sim.burst_left = phases[sim.phase].0;
            if block == 0 {
                policy.yielded(vm);
                accounting.switch_out(vm, now, SliceEnd::Yielded);
                sim.truth = Truth::Runnable;
            } else {
                policy.blocked(vm);
                accounting.switch_out(vm, now, SliceEnd::Blocked);
                sim.truth = Truth::Blocked { until: now + block };
            }
        }
        if sim.truth == Truth::Runnable {
            sim.runnable_since = now;
            sim.overtaken = 0;
        }
    }
    assert!(decisions < MAX_DECISIONS, "the simulation did not end");
    check_queue(&policy, &accounting, &vms);
    assert_eq!(policy.ignored_calls(), 0);
    assert_eq!(accounting.ignored_calls(), 0);
    observed.summary = accounting.summary(clock.now());
    observed
}

/// The run queue holds each VM at most once and exactly the runnable ones, and the accounting's
/// runstates agree with the ground truth.
fn check_queue(policy: &RoundRobin, accounting: &Accounting, vms: &[SimVm]) {
    let mut queued = vec![false; vms.len()];
    for vm in policy.run_queue() {
        let vm = usize::from(vm);
        assert!(!queued[vm], "vm {vm} is in the run queue twice");
        queued[vm] = true;
    }
    for (vm, sim) in vms.iter().enumerate() {
        assert_eq!(
            queued[vm],
            sim.truth == Truth::Runnable,
            "vm {vm} queued wrongly: {sim:?}"
        );
        let runstate = match sim.truth {
            Truth::Runnable => Runstate::Runnable,
            Truth::Running => Runstate::Running,
            Truth::Blocked { .. } => Runstate::Blocked,
            Truth::Finished => Runstate::Stopped,
        };
        assert_eq!(accounting.runstate(vm as VmId), Some(runstate));
    }
}

fn workload(quantum: Cycles) -> impl Strategy<Value = Workload> {
    prop_oneof![
        1 => Just(Workload::CpuBound),
        2 => prop::collection::vec(
            (
                prop_oneof![Just(0), 1..quantum * 3],
                prop_oneof![Just(0), 1..quantum * 10],
            )
                // Every phase moves time on by a quarter quantum at least: a workload made only of
                // empty bursts and zero-length blocks would yield forever at no cost and never
                // reach the end of the simulation.
                .prop_map(move |(burst, block)| {
                    (burst, block.max((quantum / 4).saturating_sub(burst)))
                }),
            1..4,
        )
        .prop_map(Workload::Bursty),
    ]
}

/// Random VM counts, weights, quanta, costs and workloads.
fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=16, 1_000u64..=1_000_000).prop_flat_map(|(n, quantum)| {
        (
            prop::collection::vec(1u32..=8, n),
            prop::collection::vec(workload(quantum), n),
            prop::collection::vec(prop::option::weighted(0.2, 0..quantum * 40), n),
            1u64..5_000,
            (quantum / 4).max(1)..=quantum * 4,
            0u64..2_000,
            0u8..=5,
            any::<bool>(),
        )
            .prop_map(
                move |(
                    weights,
                    workloads,
                    lifetimes,
                    switch_cost,
                    exit_interval,
                    exit_cost,
                    rate,
                    boost,
                )| {
                    Scenario {
                        quantum,
                        duration: quantum * 100 * weights.len() as Cycles,
                        weights,
                        workloads,
                        lifetimes,
                        switch_cost,
                        exit_interval,
                        exit_cost,
                        timer_rate: rate,
                        boost,
                    }
                },
            )
    })
}

/// All VMs CPU-bound for long enough that a partial last round moves no share by 0.5 %.
fn cpu_bound_scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(1u32..=8, 1..=16),
        100_000u64..=1_000_000,
        1u64..5_000,
        0u64..2_000,
        0u8..=5,
        any::<bool>(),
    )
        .prop_map(|(weights, quantum, switch_cost, exit_cost, rate, boost)| {
            let round: Cycles = weights.iter().map(|&w| quantum * Cycles::from(w)).sum();
            Scenario {
                quantum,
                workloads: vec![Workload::CpuBound; weights.len()],
                lifetimes: vec![None; weights.len()],
                duration: round * 250,
                weights,
                switch_cost,
                exit_interval: quantum,
                exit_cost,
                timer_rate: rate,
                boost,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No starvation, no idling while a VM is runnable, every cycle accounted exactly once, and a
    /// queue that never holds a VM twice (checked at every decision inside `simulate`); the
    /// wake-up boost keeps the same bound on waiting.
    #[test]
    fn mixed_workloads_keep_the_scheduling_rules(scenario in scenario()) {
        let observed = simulate(&scenario);
        let n = scenario.weights.len();
        prop_assert!(
            observed.most_overtaken < n,
            "a VM waited through {} slices with {} VMs", observed.most_overtaken, n
        );
        prop_assert!(
            observed.longest_wait <= scenario.wait_bound(),
            "a VM waited {} cycles, bound {}", observed.longest_wait, scenario.wait_bound()
        );
        prop_assert_eq!(observed.idle_while_runnable, 0);
        prop_assert_eq!(observed.summary.conservation_error(), 0);
        let summary = &observed.summary;
        let slices: u64 = summary.vms.iter().map(|vm| vm.slices).sum();
        prop_assert_eq!(slices, observed.slices);
        for vm in &summary.vms {
            prop_assert_eq!(vm.runstates.total(), u128::from(summary.elapsed));
            if let Some(latency) = vm.wake_latency {
                prop_assert!(latency.count <= vm.wakes);
                prop_assert!(latency.max <= scenario.wait_bound());
            }
            if let Some(error) = vm.quantum_error {
                // The timer only ever rounds up, by less than one tick.
                let slice = scenario.quantum * Cycles::from(scenario.weights[usize::from(vm.vm)]);
                let tick = (1u64 << scenario.timer_rate) - 1;
                prop_assert!(error.median_ppm >= 0);
                prop_assert!(error.max_abs_ppm <= tick * 1_000_000 / slice);
                prop_assert!(error.count <= vm.preemptions);
            }
        }
    }

    /// With every VM CPU-bound, each gets its weight's share of the guest time within 1 %, and
    /// never waits more than one round.
    #[test]
    fn cpu_bound_vms_share_by_weight(scenario in cpu_bound_scenario()) {
        let observed = simulate(&scenario);
        let summary = &observed.summary;
        prop_assert_eq!(summary.conservation_error(), 0);
        prop_assert_eq!(observed.idle_while_runnable, 0);
        prop_assert!(observed.longest_wait <= scenario.wait_bound());
        prop_assert_eq!(summary.idle, 0);
        let total_weight: u32 = scenario.weights.iter().sum();
        for (vm, &weight) in scenario.weights.iter().enumerate() {
            let expected = f64::from(weight) / f64::from(total_weight);
            let share = summary.guest_share(vm as VmId).unwrap();
            prop_assert!(
                (share - expected).abs() <= 0.01 * expected,
                "vm {} (weight {}): share {} expected {}", vm, weight, share, expected
            );
        }
        let weights = scenario.weights.iter().enumerate().map(|(vm, &w)| (vm as VmId, w));
        let jain = summary.weighted_jain_index(weights);
        prop_assert!(jain > 0.999, "weighted Jain index {}", jain);
    }
}

#[test]
fn one_cpu_bound_vm_never_waits_for_another() {
    let scenario = Scenario {
        quantum: 10_000,
        weights: vec![2],
        workloads: vec![Workload::CpuBound],
        lifetimes: vec![None],
        switch_cost: 100,
        exit_interval: 5_000,
        exit_cost: 10,
        timer_rate: 0,
        duration: 1_000_000,
        boost: false,
    };
    let observed = simulate(&scenario);
    let vm = &observed.summary.vms[0];
    assert_eq!(observed.longest_wait, scenario.switch_cost);
    assert_eq!(vm.slices, vm.preemptions);
    assert_eq!(vm.quantum_error.unwrap().max_abs_ppm, 0);
    assert_eq!(observed.summary.conservation_error(), 0);
}

#[test]
fn a_blocked_vm_is_woken_after_its_deadline_and_the_gap_is_idle() {
    let scenario = Scenario {
        quantum: 10_000,
        weights: vec![1],
        workloads: vec![Workload::Bursty(vec![(1_000, 50_000)])],
        lifetimes: vec![None],
        switch_cost: 100,
        exit_interval: 10_000,
        exit_cost: 0,
        timer_rate: 0,
        duration: 200_000,
        boost: false,
    };
    let observed = simulate(&scenario);
    let summary = &observed.summary;
    let vm = &summary.vms[0];
    // Each round: 100 switch + 1 000 guest, then 50 000 blocked and idle.
    assert_eq!(vm.slices, 4);
    assert_eq!(vm.wakes, 3);
    assert_eq!(vm.yields, 4);
    assert_eq!(summary.idle, 4 * 50_000);
    assert_eq!(vm.wake_latency.unwrap().max, 100);
    assert_eq!(summary.conservation_error(), 0);
}

/// Three CPU-bound VMs and one that runs briefly and sleeps 2.5 rounds: with the wake-up boost
/// the sleeper wakes to the head of the queue and waits only for the slice in progress; plain
/// round robin queues it behind the three others.
#[test]
fn the_boost_lowers_wake_latency_and_keeps_the_shares() {
    let quantum = 10_000;
    let scenario = |boost| Scenario {
        quantum,
        weights: vec![1; 4],
        workloads: vec![
            Workload::CpuBound,
            Workload::CpuBound,
            Workload::CpuBound,
            Workload::Bursty(vec![(500, 75_000)]),
        ],
        lifetimes: vec![None; 4],
        switch_cost: 100,
        exit_interval: quantum,
        exit_cost: 0,
        timer_rate: 0,
        duration: quantum * 1_000,
        boost,
    };
    let plain = simulate(&scenario(false));
    let boosted = simulate(&scenario(true));
    let wake_max = |observed: &Observations| observed.summary.vms[3].wake_latency.unwrap().max;
    // One slice in progress at most, and its switch.
    assert!(
        wake_max(&boosted) <= quantum + 2 * 100,
        "{}",
        wake_max(&boosted)
    );
    assert!(wake_max(&plain) > 2 * quantum, "{}", wake_max(&plain));
    assert!(boosted.summary.vms[3].wakes > plain.summary.vms[3].wakes);
    // The CPU-bound VMs still share equally.
    let spins = (0..3).map(|vm| (vm as VmId, 1));
    assert!(boosted.summary.weighted_jain_index(spins) > 0.999);
}
