//! The run loop on the fakes: the real `Machine` over fake vCPUs whose guests are programs of
//! exits, a fake clock, and a host whose clock readings cost root-mode cycles.

use alloc::vec;

use carousel_protocol::config::{QuantumClock, RunConfig};
use carousel_protocol::record::StopReason;

use crate::exit::Exit;
use crate::testing::{program, spin, stops, summaries, vm_config, FakeRun};

/// A TSC of 1 GHz (a 1 ms quantum is 1,000,000 cycles).
const TSC_HZ: u64 = 1_000_000_000;

fn config(quantum_us: u32, names: &[&str]) -> RunConfig {
    RunConfig::new(
        quantum_us,
        TSC_HZ,
        0,
        names.iter().map(|name| vm_config(name, 2)).collect(),
    )
}

/// VM `vm`'s preemption-timer exits (basic reason 52) over the run, from its exit intervals.
fn preemption_timer_exits(records: &[carousel_protocol::record::Record], vm: u16) -> u64 {
    records
        .iter()
        .filter_map(|record| match record {
            carousel_protocol::record::Record::ExitInterval { vm: of, exits, .. } if *of == vm => {
                Some(
                    exits
                        .iter()
                        .filter(|stat| stat.reason == 52)
                        .map(|stat| stat.count)
                        .sum::<u64>(),
                )
            }
            _ => None,
        })
        .sum()
}

/// Of VM `vm`'s life in the run (running or runnable), the share it spent running.
fn share_of_life(records: &[carousel_protocol::record::Record], vm: u16) -> f64 {
    let summary = &summaries(records)[&vm];
    summary.running as f64 / (summary.running + summary.runnable) as f64
}

/// An exit-heavy VM (a CPUID every 1,000 guest cycles, each handled in a few thousand root
/// cycles) beside a CPU-bound one: on the wall clock the spin gets half the CPU while both run;
/// on the guest clock the flood's root time comes on top of its slices and the spin gets far
/// less (issue: "an exit-heavy guest beside a spin").
#[test]
fn root_work_counts_against_the_slice_that_caused_it() {
    let shares = |clock: QuantumClock| {
        let mut config = config(100, &["flood", "spin"]);
        config.quantum_clock = clock;
        // The flood outlasts the spin: the spin's share over its own life is the measure.
        let flood = program(60_000_000, 1_000, Exit::Cpuid { length: 2 }, |_| {});
        let mut run = FakeRun::new(&config, vec![flood, spin(20_000_000)], 400);
        share_of_life(&run.run(), 1)
    };
    let wall = shares(QuantumClock::Wall);
    let guest = shares(QuantumClock::Guest);
    assert!(
        (0.45..=0.55).contains(&wall),
        "wall clock: spin share {wall}"
    );
    assert!(guest < 0.35, "guest clock: spin share {guest}");
}

/// A periodic LAPIC timer of count 1 at divide 1, with interrupts off, beside a spin: the
/// timer's deadline cannot be delivered (IF = 0), so it must not shorten the slices (it once
/// livelocked the machine: one-tick slices, the neighbour at 2 %).
#[test]
fn an_undeliverable_tiny_timer_does_not_shorten_slices() {
    use carousel_devices::lapic::{
        LVT_TIMER, LVT_TIMER_PERIODIC, SVR, TIMER_DIVIDE_CONFIGURATION, TIMER_INITIAL_COUNT,
    };
    let config = config(1_000, &["timer", "spin"]);
    let mut run = FakeRun::new(&config, vec![spin(20_000_000), spin(20_000_000)], 100);
    let now = run.clock.get();
    let lapic = &mut run.machine.vms[0].as_mut().unwrap().platform.lapic;
    lapic.write(SVR, 0x13F, now);
    lapic.write(TIMER_DIVIDE_CONFIGURATION, 0xB, now);
    lapic.write(LVT_TIMER, LVT_TIMER_PERIODIC | 32, now);
    lapic.write(TIMER_INITIAL_COUNT, 1, now);
    let records = run.run();
    let shares = [share_of_life(&records, 0), share_of_life(&records, 1)];
    for share in shares {
        assert!((0.45..=0.55).contains(&share), "shares {shares:?}");
    }
    // 20 M guest cycles each in slices of 1 ms: about 20 slices, each ended by its timer.
    // The tiny timer (stretched to 200 µs) raised its vector once; later expiries cannot be
    // delivered and must not cut the slice.
    let summary = &summaries(&records)[&0];
    let timer_exits = preemption_timer_exits(&records, 0);
    // Beside one exit per slice end, the first expiry stops the guest once (the vector
    // becomes pending; with IF = 0 it stays pending and later expiries fold into it), and the
    // last slice may end on the guest's exit instead.
    assert!(summary.slices <= 25, "{} slices", summary.slices);
    assert!(
        timer_exits <= summary.slices + 2,
        "{timer_exits} timer exits in {} slices",
        summary.slices
    );
}

/// VMCALL from ring 3 raises #UD and does nothing: a user process can neither end its VM as
/// passed nor reach any other hypercall.
#[test]
fn a_hypercall_from_ring_3_is_an_invalid_opcode() {
    use crate::vcpu::{Event, Reg};
    let config = config(100, &["user"]);
    let mut calls = 0;
    let user = alloc::boxed::Box::new(move |state: &mut crate::testing::FakeState, timer| {
        calls += 1;
        match calls {
            // From CPL 3: EXIT with success.
            1 => {
                state.set(Reg::Cpl, 3);
                state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
                state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_SUCCESS);
                (Exit::Hypercall { length: 3 }, 10)
            }
            // Back in the kernel, with the #UD delivered: exit with failure.
            2 => {
                assert_eq!(state.delivered, [Event::INVALID_OPCODE]);
                state.set(Reg::Cpl, 0);
                state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
                state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_FAILURE);
                (Exit::Hypercall { length: 3 }, 10)
            }
            _ => (Exit::Timer, timer),
        }
    });
    let mut run = FakeRun::new(&config, vec![user], 10);
    let records = run.run();
    assert_eq!(
        stops(&records)[&0],
        StopReason::Exited {
            status: carousel_protocol::hypercall::EXIT_FAILURE
        }
    );
}

/// SET_TIMER beyond the limit is refused, so a VM cannot hold the run with a timer it will
/// never reach; a halt with nothing to wake it then ends that VM.
#[test]
fn a_timer_far_in_the_future_is_refused() {
    use carousel_protocol::hypercall::{Error, SET_TIMER};
    let config = config(100, &["sleeper"]);
    let mut calls = 0;
    let sleeper = alloc::boxed::Box::new(move |state: &mut crate::testing::FakeState, timer| {
        calls += 1;
        match calls {
            1 => {
                state.registers.rax = u64::from(SET_TIMER);
                state.registers.rbx = u64::from(u32::MAX);
                state.registers.rcx = u64::from(u32::MAX >> 1);
                (Exit::Hypercall { length: 3 }, 10)
            }
            2 => {
                assert_eq!(
                    state.registers.rax,
                    u64::from(Error::InvalidArgument.as_eax())
                );
                (Exit::Hlt { length: 1 }, 10)
            }
            _ => (Exit::Timer, timer),
        }
    });
    let mut run = FakeRun::new(&config, vec![sleeper], 10);
    let records = run.run();
    assert!(
        matches!(stops(&records)[&0], StopReason::HaltedForever { .. }),
        "{:?}",
        stops(&records)
    );
}

/// Runs one VM of `program` with `bytes` poked into its RAM (address, bytes) first; how it
/// stopped.
fn stop_of_one(program: crate::testing::Program, bytes: &[(u64, &[u8])]) -> StopReason {
    let config = config(100, &["one"]);
    let mut run = FakeRun::new(&config, vec![program], 10);
    for &(gpa, data) in bytes {
        poke(&mut run, 0, gpa, data);
    }
    let records = run.run();
    stops(&records)[&0].clone()
}

/// The stop of a guest that exited with success.
const PASSED: StopReason = StopReason::Exited {
    status: carousel_protocol::hypercall::EXIT_SUCCESS,
};

/// Writes `bytes` into VM `vm`'s RAM at `gpa` before the run.
fn poke(run: &mut FakeRun, vm: usize, gpa: u64, bytes: &[u8]) {
    let machine = &mut run.machine;
    let memory = &mut machine.vms[vm].as_mut().unwrap().memory;
    assert!(machine.pool.write(memory, gpa, bytes));
}

/// A guest that makes the hypercall `number` with EBX..EDX = `args` `times` times, then exits
/// with success.
fn caller(number: u32, args: [u32; 3], times: u32) -> crate::testing::Program {
    let mut made = 0;
    alloc::boxed::Box::new(move |state: &mut crate::testing::FakeState, _| {
        if made == times {
            state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
            state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_SUCCESS);
        } else {
            // A result other than a count means the call was refused.
            assert!((state.registers.rax as i32) >= 0 || made == 0);
            state.registers.rax = u64::from(number);
            state.registers.rbx = u64::from(args[0]);
            state.registers.rcx = u64::from(args[1]);
            state.registers.rdx = u64::from(args[2]);
        }
        // A call whose RIP stayed (it waited) comes back the same: count only the ones the
        // guest moved past (the fake guest does not look at RIP, so count every exit).
        made += 1;
        (Exit::Hypercall { length: 3 }, 100)
    })
}

/// A VM that floods its console, on a COM1 that drains slowly, beside a spin: the flood waits
/// (blocked on console) instead of the machine, the spin keeps its share, and every line of the
/// flood arrives.
#[test]
fn a_console_flood_blocks_its_vm_and_loses_nothing() {
    use carousel_protocol::hypercall::CONSOLE_WRITE;
    let config = config(100, &["chatty", "spin"]);
    let line: alloc::vec::Vec<u8> = (0..99u8).map(|i| b'a' + i % 26).chain([b'\n']).collect();
    let text: alloc::vec::Vec<u8> = line.iter().copied().cycle().take(4000).collect();
    let mut run = FakeRun::new(
        &config,
        vec![
            caller(CONSOLE_WRITE, [0x15_0000, 200, 0], 20_000),
            spin(20_000_000),
        ],
        50,
    );
    poke(&mut run, 0, 0x15_0000, &text);
    run.machine.host.com1_per_feed = Some(64);
    let records = run.run();
    let summary = &summaries(&records)[&0];
    assert!(summary.blocked_console > 0, "{summary:?}");
    let com1 = run.machine.host.com1_text();
    let lines = com1
        .lines()
        .filter(|text| text.starts_with("[chatty] abc"))
        .count();
    // Each call wrote what fitted; the guest's next call started over from the buffer, so
    // count whole lines: at least one per call that wrote anything, and none cut or merged.
    assert!(lines > 100, "{lines} lines arrived");
    for text in com1.lines().filter(|text| text.starts_with("[chatty] ")) {
        assert_eq!(text.len(), "[chatty] ".len() + 99, "{text:?}");
    }
    let spin = share_of_life(&records, 1);
    assert!(spin >= 0.45, "spin share {spin}");
}

/// The run ends with RunEnd, and only once COM1 has carried every console byte: the tool ends
/// the emulator soon after RunEnd arrives, so console text sent after it (a chatty VM's last
/// lines, queued behind a slow COM1) would be lost.
#[test]
fn run_end_follows_the_last_console_byte() {
    use carousel_protocol::hypercall::CONSOLE_WRITE;
    use carousel_protocol::record::Record;
    let config = config(100, &["chatty", "spin"]);
    let text: alloc::vec::Vec<u8> = (0..199u8).map(|i| b'a' + i % 26).chain([b'\n']).collect();
    let mut run = FakeRun::new(
        &config,
        vec![
            caller(CONSOLE_WRITE, [0x15_0000, 200, 0], 50),
            spin(2_000_000),
        ],
        50,
    );
    poke(&mut run, 0, 0x15_0000, &text);
    run.machine.host.com1_per_feed = Some(16);
    run.machine.run();
    let host = &run.machine.host;
    let records = host.records();
    assert!(
        matches!(records.last(), Some(Record::RunEnd { .. })),
        "{:?}",
        records.last()
    );
    assert!(host.com1_text().contains("[chatty] abc"));
    // RunEnd's frame starts after the zero that ends the frame before it.
    let com2 = &host.com2;
    let run_end_starts = com2[..com2.len() - 1]
        .iter()
        .rposition(|&byte| byte == 0)
        .map_or(0, |zero| zero + 1);
    let carried = host
        .feeds
        .iter()
        .position(|&(_, com2)| com2 > run_end_starts)
        .expect("RunEnd left");
    let before = carried.checked_sub(1).map_or(0, |feed| host.feeds[feed].0);
    assert_eq!(
        before,
        host.com1.len(),
        "COM1 still had {} bytes to send when RunEnd went",
        host.com1.len() - before
    );
}

/// The end of a run does no work per guest page: the summaries and RunEnd go out without the
/// VMs' memory being walked and given back (with merging on, that walk outlasted the tool's
/// grace).
#[test]
fn the_end_of_a_run_leaves_guest_memory_as_it_is() {
    let config = config(100, &["a", "b"]);
    let mut run = FakeRun::new(&config, vec![spin(200_000), spin(200_000)], 50);
    let backed = run.machine.pool.guest_pages_backed();
    assert!(backed > 0);
    let records = run.run();
    assert!(matches!(
        records.last(),
        Some(carousel_protocol::record::Record::RunEnd { .. })
    ));
    assert_eq!(run.machine.pool.guest_pages_backed(), backed);
}

/// A VM that floods CHECK and METRIC beside one that sends a few checks, on a COM2 that drains
/// slowly: the flood's checks wait (blocked on records) and its metrics beyond its quota drop,
/// counted against it; none of the other VM's records is lost.
#[test]
fn a_record_flood_never_drops_another_vms_records() {
    use carousel_protocol::hypercall::{CHECK, METRIC};
    use carousel_protocol::record::Record;
    let config = config(100, &["flood", "metrics", "quiet"]);
    let mut run = FakeRun::new(
        &config,
        vec![
            caller(CHECK, [0x15_0000, 5, 1], 3_000),
            caller(METRIC, [0x15_0000, 5, 7], 3_000),
            caller(CHECK, [0x15_0000, 5, 1], 20),
        ],
        50,
    );
    for vm in 0..3 {
        poke(&mut run, vm, 0x15_0000, b"check");
    }
    run.machine.host.com2_per_feed = Some(4);
    let records = run.run();
    let summaries = summaries(&records);
    let checks = |vm: u16| {
        records
            .iter()
            .filter(|record| matches!(record, Record::Check { vm: id, .. } if *id == vm))
            .count()
    };
    assert!(summaries[&0].blocked_records > 0, "{:?}", summaries[&0]);
    assert_eq!(checks(2), 20);
    assert!(summaries[&1].guest_records_dropped > 0);
    assert_eq!(summaries[&2].guest_records_dropped, 0);
    assert_eq!(
        summaries[&0].guest_records_dropped, 0,
        "checks are never dropped"
    );
}

/// Two VMs that never exit, on a COM2 that takes 16 bytes a feed: fed only between slices the
/// line falls ever further behind; with the host's feed deadlines it keeps up while they run,
/// and the feeding exits are charged to no slice.
#[test]
fn the_serial_lines_keep_up_with_guests_that_never_exit() {
    let run_with = |feed_interval: Option<u64>| {
        let mut config = config(10_000, &["a", "b"]);
        config.interval_us = 100;
        let mut run = FakeRun::new(&config, vec![spin(400_000_000), spin(400_000_000)], 10);
        run.machine.host.com2_per_feed = Some(16);
        run.machine.host.feed_interval = feed_interval;
        let records = run.run();
        (run.machine.host.max_backlog, records)
    };
    let (starved, _) = run_with(None);
    let (fed, records) = run_with(Some(20_000));
    assert!(
        starved > 2_000,
        "without feed deadlines the backlog reached {starved} bytes"
    );
    assert!(
        fed < 600,
        "with feed deadlines the backlog reached {fed} bytes"
    );
    // The slices are still 10 ms of wall time each, none cut short by a feed.
    for vm in 0..2 {
        let summary = &summaries(&records)[&vm];
        assert!(summary.slices <= 41, "{summary:?}");
        let share = share_of_life(&records, vm);
        assert!((0.45..=0.55).contains(&share), "vm {vm}: share {share}");
    }
}

/// A LAPIC deadline that passes while the guest runs with interrupts off (xv6 in a spinlock)
/// still stops the guest: the tick becomes pending and is delivered as soon as the guest
/// enables interrupts, in the same slice. It once waited for the guest's next slice, a whole
/// rotation later (8 xv6 at 5 ms: timer lag up to 40 ms against the 35 ms of the others'
/// slices).
#[test]
fn a_tick_due_while_interrupts_are_off_arrives_once_they_are_on() {
    use alloc::rc::Rc;
    use core::cell::Cell;

    use carousel_devices::lapic::{
        LVT_TIMER, SVR, TIMER_DIVIDE_CONFIGURATION, TIMER_INITIAL_COUNT,
    };
    use carousel_protocol::record::Record;

    use crate::vcpu::{Event, Reg};

    /// RFLAGS.IF.
    const IF: u64 = 1 << 9;
    const VECTOR: u8 = 0x20;
    // IF = 0 for the first 2 ms of guest time, then IF = 1; the tick is due at 1 ms.
    let ran = Rc::new(Cell::new(0u64));
    let seen_at = Rc::new(Cell::new(None::<u64>));
    let ticker: crate::testing::Program = {
        let (ran, seen_at) = (ran.clone(), seen_at.clone());
        Box::new(move |state, timer| {
            if seen_at.get().is_none() && state.delivered.contains(&Event::Interrupt(VECTOR)) {
                seen_at.set(Some(ran.get()));
            }
            let masked_until = 2_000_000u64;
            let mut exit = Exit::Timer;
            let step = if ran.get() + timer <= masked_until {
                // The whole stay with interrupts off.
                state.set(Reg::Rflags, 0x2);
                timer
            } else {
                // STI within the stay (or before it): with a vector waiting and the window
                // armed the processor exits right after it, else the guest runs on.
                let before_sti = masked_until.saturating_sub(ran.get());
                state.set(Reg::Rflags, 0x2 | IF);
                if state.interrupt_window {
                    exit = Exit::InterruptWindow;
                    before_sti
                } else {
                    timer
                }
            };
            ran.set(ran.get() + step);
            if ran.get() >= 20_000_000 {
                state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
                state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_SUCCESS);
                return (Exit::Hypercall { length: 3 }, step);
            }
            (exit, step)
        })
    };
    let config = config(5_000, &["ticker", "spin"]);
    let mut run = FakeRun::new(&config, vec![ticker, spin(20_000_000)], 50);
    let now = run.clock.get();
    let lapic = &mut run.machine.vms[0].as_mut().unwrap().platform.lapic;
    lapic.write(SVR, 0x1FF, now);
    lapic.write(TIMER_DIVIDE_CONFIGURATION, 0xB, now);
    lapic.write(LVT_TIMER, u32::from(VECTOR), now);
    lapic.write(TIMER_INITIAL_COUNT, 1_000_000, now);
    let records = run.run();
    let seen = seen_at.get().expect("the tick reached the guest");
    assert!(
        (2_000_000..2_100_000).contains(&seen),
        "the tick reached the guest after {seen} guest cycles (interrupts came on at 2,000,000)"
    );
    let lag = records
        .iter()
        .find_map(|record| match record {
            Record::TimerLag { vm: 0, lag_max, .. } => Some(*lag_max),
            _ => None,
        })
        .expect("a TimerLag record");
    assert!(lag < 100_000, "lag {lag} cycles");
}

/// Ticks that fold into a vector the guest has not taken yet (it runs with interrupts off, as
/// xv6 does through its boot) are coalesced, not ticks of their own: the lag the report shows is
/// that of each tick the timer raised, so the guest's own masking is not charged to the
/// scheduler. (Counted from their own deadlines they put 8 xv6's lag at 38 ms: memset of all
/// RAM with interrupts off, while the ticks were due.)
#[test]
fn ticks_folded_into_a_pending_vector_add_no_lag() {
    use carousel_devices::lapic::{
        LVT_TIMER, LVT_TIMER_PERIODIC, SVR, TIMER_DIVIDE_CONFIGURATION, TIMER_INITIAL_COUNT,
    };
    use carousel_protocol::record::Record;

    let config = config(5_000, &["masked", "spin"]);
    let mut run = FakeRun::new(&config, vec![spin(40_000_000), spin(40_000_000)], 50);
    let now = run.clock.get();
    let lapic = &mut run.machine.vms[0].as_mut().unwrap().platform.lapic;
    lapic.write(SVR, 0x1FF, now);
    lapic.write(TIMER_DIVIDE_CONFIGURATION, 0xB, now);
    lapic.write(LVT_TIMER, LVT_TIMER_PERIODIC | 0x20, now);
    lapic.write(TIMER_INITIAL_COUNT, 2_000_000, now);
    let records = run.run();
    let (ticks, coalesced, lag_max) = records
        .iter()
        .find_map(|record| match record {
            Record::TimerLag {
                vm: 0,
                ticks,
                coalesced,
                lag_max,
                ..
            } => Some((*ticks, *coalesced, *lag_max)),
            _ => None,
        })
        .expect("a TimerLag record");
    // IF = 0 throughout: the first expiry raises the vector, every later one folds into it.
    assert_eq!(ticks, 1, "{coalesced} coalesced, lag max {lag_max}");
    assert!(coalesced > 10, "{coalesced} coalesced");
    assert!(lag_max < 100_000, "lag max {lag_max} cycles");
}

/// Idle detection never blocks a VM inside an interrupt handler: with a vector in service the
/// VM does not look idle, however long it has been in its idle address space.
#[test]
fn a_vm_in_an_interrupt_handler_never_looks_idle() {
    let config = config(100, &["xv6"]);
    let mut run = FakeRun::new(&config, vec![spin(1_000)], 10);
    let vm = run.machine.vms[0].as_mut().expect("the VM");
    // The address space entered from three others is the idle one (xv6's kpgdir).
    for process in [0x1000, 0x2000, 0x3000] {
        vm.spaces.load(process);
        vm.spaces.load(0x9000);
    }
    vm.spaces.charge(500);
    assert!(vm.looks_idle(100), "idle for 500 cycles: idle");
    // The LAPIC software-enabled, vector 0x2E raised and taken: its handler runs.
    vm.platform.lapic.write(0xF0, 0x1FF, 0);
    vm.platform.lapic.raise(0x2E).expect("raised");
    assert!(!vm.looks_idle(100), "pending: not idle");
    vm.platform.lapic.acknowledge(0x2E).expect("acknowledged");
    assert!(vm.platform.lapic.pending_vector().is_none());
    assert!(!vm.looks_idle(100), "in service: not idle");
    // EOI: idle again.
    vm.platform.lapic.write(0xB0, 0, 0);
    assert!(vm.looks_idle(100));
}

/// A VM in its idle address space past the idle threshold, but inside an interrupt handler
/// (a vector in service), cannot be called idle, so the moment idle detection would call it
/// idle is no deadline: it must not end every entry at once. It once did (xv6 in its timer
/// handler on kpgdir under the boost at 30 ms): a preemption-timer exit per instruction, each
/// charged to no slice, so the VM's slice never ended, its neighbours got 0.1 % of the CPU and
/// it crawled through its handler for minutes.
#[test]
fn an_idle_deadline_that_cannot_make_the_vm_idle_does_not_stop_it() {
    let mut config = config(1_000, &["xv6", "spin"]);
    config.idle_threshold_us = Some(1);
    // The guest progresses at least one cycle an entry (a real one retires an instruction).
    let crawl = {
        let mut left: u64 = 20_000_000;
        alloc::boxed::Box::new(move |state: &mut crate::testing::FakeState, timer: u64| {
            if left == 0 {
                state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
                state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_SUCCESS);
                return (Exit::Hypercall { length: 3 }, 0);
            }
            let ran = timer.clamp(1, left);
            left -= ran;
            (Exit::Timer, ran)
        })
    };
    let mut run = FakeRun::new(&config, vec![crawl, spin(20_000_000)], 100);
    let now = run.clock.get();
    let vm = run.machine.vms[0].as_mut().expect("the VM");
    // In the idle address space (entered from three others), long past the threshold...
    for process in [0x1000, 0x2000, 0x3000] {
        vm.spaces.load(process);
        vm.spaces.load(0x9000);
    }
    vm.spaces.charge(1_000_000);
    // ...with a vector in service that it never ends (its handler runs on).
    vm.platform.lapic.write(0xF0, 0x1FF, now);
    vm.platform.lapic.raise(0x2E).expect("raised");
    vm.platform.lapic.acknowledge(0x2E).expect("acknowledged");
    let records = run.run();
    let shares = [share_of_life(&records, 0), share_of_life(&records, 1)];
    for share in shares {
        assert!((0.45..=0.55).contains(&share), "shares {shares:?}");
    }
    let summary = &summaries(&records)[&0];
    let timer_exits = preemption_timer_exits(&records, 0);
    // 20 M guest cycles in 1 ms slices: about 20 slices, each ended by its own timer.
    assert!(summary.slices <= 25, "{} slices", summary.slices);
    assert!(
        timer_exits <= summary.slices + 2,
        "{timer_exits} timer exits in {} slices",
        summary.slices
    );
}

/// Each VM's exit statistics are sent at the start of its next slice (charged to it), not
/// between slices; deferred so, none is lost or counted twice: the timer exits in the exit
/// intervals of each spin add up to its slices, every record keeps the end of the interval it
/// belongs to, and a VM that stopped early has its last interval sent at the end of the run.
#[test]
fn exit_statistics_are_sent_once_each_with_their_interval() {
    let mut config = config(100, &["short", "long", "other"]);
    config.interval_us = 250;
    let mut run = FakeRun::new(
        &config,
        vec![spin(1_000_000), spin(8_000_000), spin(8_000_000)],
        100,
    );
    let records = run.run();
    let summaries = summaries(&records);
    for vm in 0..3u16 {
        let mut ends = alloc::vec::Vec::new();
        let timer_exits: u64 = records
            .iter()
            .filter_map(|record| match record {
                carousel_protocol::record::Record::ExitInterval {
                    vm: of, tsc, exits, ..
                } if *of == vm => {
                    ends.push(*tsc);
                    Some(
                        exits
                            .iter()
                            .filter(|stat| stat.reason == 52)
                            .map(|stat| stat.count)
                            .sum::<u64>(),
                    )
                }
                _ => None,
            })
            .sum();
        let slices = summaries[&vm].slices;
        // Every slice but possibly the last ends on its timer.
        assert!(
            timer_exits + 1 >= slices && timer_exits <= slices,
            "vm {vm}: {timer_exits} timer exits in {slices} slices"
        );
        let mut sorted = ends.clone();
        sorted.dedup();
        assert_eq!(sorted, ends, "vm {vm}: one record per interval, in order");
        assert!(ends.len() >= 2, "vm {vm}: {} intervals", ends.len());
    }
}

/// Under SVM the guests' VMCALL arrives as #UD: the handler reads the instruction at CS:RIP and,
/// when it is VMCALL (`0F 01 C1`), makes the hypercall and moves RIP past its 3 bytes; any
/// other invalid opcode is the guest's own #UD, delivered with RIP left on it.
#[test]
fn an_invalid_opcode_at_vmcall_is_the_hypercall_and_any_other_is_delivered() {
    use crate::vcpu::{Event, Reg};
    let mut calls = 0;
    let guest = alloc::boxed::Box::new(move |state: &mut crate::testing::FakeState, timer| {
        calls += 1;
        match calls {
            // UD2 (`0F 0B`) at 0x2000: not VMCALL.
            1 => {
                state.set(Reg::Rip, 0x2000);
                (Exit::InvalidOpcode, 10)
            }
            // The #UD was delivered and RIP stayed; now VMCALL at 0x3000: EXIT with success.
            2 => {
                assert_eq!(state.delivered, [Event::INVALID_OPCODE]);
                assert_eq!(state.get(Reg::Rip), 0x2000);
                state.set(Reg::Rip, 0x3000);
                state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
                state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_SUCCESS);
                (Exit::InvalidOpcode, 10)
            }
            _ => (Exit::Timer, timer),
        }
    });
    let bytes: [(u64, &[u8]); 2] = [(0x2000, &[0x0F, 0x0B]), (0x3000, &crate::exits::VMCALL)];
    assert_eq!(stop_of_one(guest, &bytes), PASSED);
}

/// Under SVM a MOV to CR4 arrives undecoded: the handler decodes `0F 22 /r` at CS:RIP, so a
/// guest setting a CR4 bit the CPU lacks (bit 30, reserved) gets #GP with RIP on the
/// instruction, as the hardware would give it, and its next instruction is reached only by a
/// MOV CR4 the checks allow.
#[test]
fn an_undecoded_cr4_write_is_decoded_and_checked() {
    use crate::vcpu::{Event, Reg};
    let mut calls = 0;
    let guest = alloc::boxed::Box::new(move |state: &mut crate::testing::FakeState, timer| {
        calls += 1;
        match calls {
            // `mov cr4, eax` at 0x2000 with EAX = bit 30.
            1 => {
                state.set(Reg::Rip, 0x2000);
                state.registers.rax = 1 << 30;
                (Exit::ControlRegister { cr: 4, write: true }, 10)
            }
            // #GP, RIP stayed; then EAX = PSE: allowed, RIP moves 3 bytes, CR4 is written.
            2 => {
                assert_eq!(state.delivered, [Event::GENERAL_PROTECTION]);
                assert_eq!(state.get(Reg::Rip), 0x2000);
                state.registers.rax = 1 << 4;
                (Exit::ControlRegister { cr: 4, write: true }, 10)
            }
            3 => {
                assert_eq!(state.get(Reg::Rip), 0x2003);
                assert_eq!(state.get(Reg::Cr4) & (1 << 4), 1 << 4);
                state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
                state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_SUCCESS);
                (Exit::Hypercall { length: 3 }, 10)
            }
            _ => (Exit::Timer, timer),
        }
    });
    assert_eq!(stop_of_one(guest, &[(0x2000, &[0x0F, 0x22, 0xE0])]), PASSED);
}

/// The reasons VM `vm`'s slices blocked on, in order, from the run's event batches.
fn blocked_reasons(
    records: &[carousel_protocol::record::Record],
    vm: u16,
) -> alloc::vec::Vec<carousel_protocol::record::BlockedOn> {
    use carousel_protocol::record::{Event, Record, SliceEnd};
    records
        .iter()
        .filter_map(|record| match record {
            Record::Events { events, .. } => Some(events),
            _ => None,
        })
        .flatten()
        .filter_map(|event| match *event {
            Event::Descheduled {
                vm: of,
                why: SliceEnd::Blocked(on),
                ..
            } if of == vm => Some(on),
            _ => None,
        })
        .collect()
}

/// A blocked slice says what its VM waits for: a sleeper that arms SET_TIMER and halts is
/// blocked on its timer; a console flood on a slow COM1 is blocked on the console.
#[test]
fn a_blocked_slice_says_what_its_vm_waits_for() {
    use carousel_protocol::hypercall::CONSOLE_WRITE;
    use carousel_protocol::record::BlockedOn;
    let config = config(100, &["sleepy", "chatty", "spin"]);
    let line: alloc::vec::Vec<u8> = (0..99u8).map(|i| b'a' + i % 26).chain([b'\n']).collect();
    let text: alloc::vec::Vec<u8> = line.iter().copied().cycle().take(4000).collect();
    let mut run = FakeRun::new(
        &config,
        vec![
            crate::testing::bursts(vec![(20_000, 200_000)], 10, 0),
            caller(CONSOLE_WRITE, [0x15_0000, 200, 0], 20_000),
            spin(20_000_000),
        ],
        50,
    );
    poke(&mut run, 1, 0x15_0000, &text);
    run.machine.host.com1_per_feed = Some(64);
    let records = run.run();
    let sleepy = blocked_reasons(&records, 0);
    assert!(sleepy.len() >= 9, "{sleepy:?}");
    assert!(
        sleepy.iter().all(|&on| on == BlockedOn::Timer),
        "{sleepy:?}"
    );
    assert!(summaries(&records)[&1].blocked_console > 0);
    let chatty = blocked_reasons(&records, 1);
    assert!(!chatty.is_empty(), "the flood never blocked");
    assert!(
        chatty.iter().all(|&on| on == BlockedOn::Console),
        "{chatty:?}"
    );
    assert!(blocked_reasons(&records, 2).is_empty());
}
