//! Fakes of the hardware seams for host tests: guest RAM in a vector, host frames in a map, a
//! vCPU whose guest is a program of exits, and a host with a clock that moves only when told
//! (or by a fixed cost per reading, to model root-mode work).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;

use carousel_vmx::addr::HostPhysAddr;
use carousel_vmx::controls::cycles_to_preemption_ticks;

use crate::console::ConsoleMux;
use crate::exit::Exit;
use crate::export::Exporter;
use crate::host::Host;
use crate::memory::{Frames, Table};
use crate::vcpu::{Entered, Event, GuestRegisters, Reg, Vcpu, VcpuError};
use crate::PAGE_SIZE;

/// Guest RAM backed by a vector, for loader tests.
#[derive(Debug)]
pub struct VecRam(pub Vec<u8>);

impl crate::GuestRam for VecRam {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn write(&mut self, gpa: u64, bytes: &[u8]) {
        self.0[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
    }
    fn fill(&mut self, gpa: u64, len: u64, value: u8) {
        self.0[gpa as usize..(gpa + len) as usize].fill(value);
    }
}

/// Host frames in a map, at most `capacity` at once, numbered from 1 MiB up.
#[derive(Debug)]
pub struct FakeFrames {
    frames: BTreeMap<u64, Box<Table>>,
    capacity: u64,
    next: u64,
    freed: Vec<u64>,
}

impl FakeFrames {
    pub fn new(capacity: u64) -> Self {
        Self {
            frames: BTreeMap::new(),
            capacity,
            next: 0x10_0000 / PAGE_SIZE,
            freed: Vec::new(),
        }
    }

    /// Frames given out and not returned.
    pub fn in_use(&self) -> u64 {
        self.frames.len() as u64
    }
}

impl Frames for FakeFrames {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        if self.frames.len() as u64 >= self.capacity {
            return None;
        }
        let number = self.freed.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.frames.insert(number, Box::new([0; 512]));
        Some(HostPhysAddr(number * PAGE_SIZE))
    }

    fn free(&mut self, frame: HostPhysAddr) {
        let number = frame.as_u64() / PAGE_SIZE;
        assert!(
            self.frames.remove(&number).is_some(),
            "frame {frame} freed twice or never given out"
        );
        self.freed.push(number);
    }

    fn free_frames(&self) -> u64 {
        self.capacity - self.frames.len() as u64
    }

    fn table(&self, frame: HostPhysAddr) -> &Table {
        self.frames
            .get(&(frame.as_u64() / PAGE_SIZE))
            .unwrap_or_else(|| panic!("frame {frame} read but never given out"))
    }

    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut Table {
        self.frames
            .get_mut(&(frame.as_u64() / PAGE_SIZE))
            .unwrap_or_else(|| panic!("frame {frame} written but never given out"))
    }
}

/// A clock shared by the fake host and its vCPUs.
pub type Clock = Rc<Cell<u64>>;

/// The TSC at which a [`FakeRun`]'s clock starts.
pub const CLOCK_START: u64 = 1_000;

/// What a fake guest does when entered: given its vCPU's state and the cycles until the
/// preemption timer fires, it returns the exit that ends this stay and the guest cycles it ran
/// (at most the timer's when the exit is [`Exit::Timer`]).
pub type Program = Box<dyn FnMut(&mut FakeState, u64) -> (Exit, u64)>;

/// The architectural state of a fake vCPU.
#[derive(Debug, Default, Clone)]
pub struct FakeState {
    pub registers: GuestRegisters,
    pub regs: BTreeMap<Reg, u64>,
    /// The event queued for the next entry.
    pub queued: Option<Event>,
    /// Every event delivered at an entry, in order.
    pub delivered: Vec<Event>,
    pub interrupt_window: bool,
    pub linear_flushes: u64,
    pub physical_flushes: u64,
    pub entries: u64,
    pub switched_in: u64,
    pub switched_out: u64,
    /// The TSC at this entry: what the guest's first RDTSC would read.
    pub tsc: u64,
}

impl FakeState {
    pub fn get(&self, reg: Reg) -> u64 {
        self.regs.get(&reg).copied().unwrap_or(match reg {
            Reg::CodeBits => 32,
            Reg::Rflags => 0x2,
            _ => 0,
        })
    }

    pub fn set(&mut self, reg: Reg, value: u64) {
        self.regs.insert(reg, value);
    }
}

/// A vCPU whose guest is a [`Program`].
pub struct FakeVcpu {
    pub state: FakeState,
    /// The preemption timer counts down once every `2^timer_rate` TSC cycles (IA32_VMX_MISC[4:0]:
    /// Bochs 0, nested KVM 5).
    pub timer_rate: u8,
    program: Program,
    clock: Clock,
}

impl core::fmt::Debug for FakeVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeVcpu")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl FakeVcpu {
    /// A vCPU on `clock` running `program`, in 32-bit protected mode at CPL 0.
    pub fn new(clock: Clock, program: Program) -> Self {
        let mut state = FakeState::default();
        state.set(Reg::Cr0, 0x11);
        Self {
            state,
            timer_rate: 0,
            program,
            clock,
        }
    }

    /// A guest that never exits by itself: every stay ends with the timer.
    pub fn spinning(clock: Clock) -> Self {
        Self::new(clock, Box::new(|_, timer| (Exit::Timer, timer)))
    }

    /// A guest that exits with `exit` after every `every` cycles it runs.
    pub fn exiting(clock: Clock, every: u64, exit: Exit) -> Self {
        Self::new(
            clock,
            Box::new(move |_, timer| {
                if every >= timer {
                    (Exit::Timer, timer)
                } else {
                    (exit, every)
                }
            }),
        )
    }
}

impl Vcpu for FakeVcpu {
    fn registers(&mut self) -> &mut GuestRegisters {
        &mut self.state.registers
    }

    fn read(&mut self, reg: Reg) -> Result<u64, VcpuError> {
        Ok(self.state.get(reg))
    }

    fn write(&mut self, reg: Reg, value: u64) -> Result<(), VcpuError> {
        if matches!(reg, Reg::CodeBits | Reg::Cpl | Reg::NmiBlocked) {
            return Err(VcpuError::ReadOnlyRegister(reg));
        }
        self.state.set(reg, value);
        Ok(())
    }

    fn inject(&mut self, event: Event) -> Result<(), VcpuError> {
        self.state.queued = Some(event);
        Ok(())
    }

    fn event_queued(&mut self) -> Result<bool, VcpuError> {
        Ok(self.state.queued.is_some())
    }

    fn set_interrupt_window(&mut self, open: bool) -> Result<(), VcpuError> {
        self.state.interrupt_window = open;
        Ok(())
    }

    fn flush_linear(&mut self) -> Result<(), VcpuError> {
        self.state.linear_flushes += 1;
        Ok(())
    }

    fn flush_physical(&mut self) -> Result<(), VcpuError> {
        self.state.physical_flushes += 1;
        Ok(())
    }

    /// The timer is armed as the hardware vCPU arms it: `timer` cycles rounded down to whole
    /// ticks, at least one. It fires when bit `timer_rate` of the TSC has changed that many
    /// times (SDM 26.5.1 "VMX-Preemption Timer"), so the guest runs up to two ticks less than
    /// `timer` (the rounding and the TSC's phase), or up to a tick more when `timer` is shorter
    /// than a tick; what it used is counted in whole ticks, as the hardware's saved value says.
    fn enter(&mut self, timer: u64) -> Result<Entered, VcpuError> {
        self.state.entries += 1;
        if let Some(event) = self.state.queued.take() {
            self.state.delivered.push(event);
        }
        let rate = self.timer_rate;
        let ticks = u64::from(cycles_to_preemption_ticks(timer, rate).max(1));
        let entry = self.clock.get();
        let fires = ((entry >> rate) + ticks) << rate;
        self.state.tsc = entry;
        let (exit, cycles) = (self.program)(&mut self.state, fires - entry);
        self.clock.set(entry + cycles);
        let counted = (((entry + cycles) >> rate) - (entry >> rate)).min(ticks);
        let reason = match exit {
            Exit::Timer => 52,
            Exit::Io { .. } => 30,
            Exit::Hypercall { .. } => 18,
            Exit::Cpuid { .. } => 10,
            Exit::Hlt { .. } => 12,
            Exit::Fault(_) => 48,
            _ => 0,
        };
        Ok(Entered {
            exit,
            reason,
            timer_used: counted << rate,
        })
    }

    fn switch_in(&mut self) -> Result<(), VcpuError> {
        self.state.switched_in += 1;
        Ok(())
    }

    fn switch_out(&mut self) -> Result<(), VcpuError> {
        self.state.switched_out += 1;
        Ok(())
    }

    fn describe(&mut self) -> String {
        alloc::format!("rip {:#x}", self.state.get(Reg::Rip))
    }
}

/// A host on a fake clock: records into a vector, COM1 text into a string.
#[derive(Debug)]
pub struct FakeHost {
    pub clock: Clock,
    /// Cycles each reading of the clock costs (root-mode work, roughly).
    pub cost_per_reading: u64,
    pub exporter: Exporter,
    pub console: ConsoleMux,
    /// What left on COM2 and COM1.
    pub com2: Vec<u8>,
    pub com1: Vec<u8>,
    /// Bytes COM2 and COM1 take per feed (None: all).
    pub com2_per_feed: Option<usize>,
    pub com1_per_feed: Option<usize>,
    /// With bytes waiting, the lines want feeding this many cycles after each feed (None: the
    /// host never asks for an exit).
    pub feed_interval: Option<u64>,
    /// When the lines were last fed, and the most bytes left waiting for COM2 after a feed.
    pub last_feed: u64,
    pub max_backlog: usize,
    pub input: VecDeque<u8>,
    /// The shared drive, if the run has one.
    pub drive: Option<crate::disk::FakeDrive>,
    /// After each feed, how many bytes had left on COM1 and on COM2 in all: the order in
    /// which the two lines carried what they carried.
    pub feeds: Vec<(usize, usize)>,
}

impl FakeHost {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            cost_per_reading: 0,
            exporter: Exporter::new(),
            console: ConsoleMux::new(),
            com2: Vec::new(),
            com1: Vec::new(),
            com2_per_feed: None,
            com1_per_feed: None,
            feed_interval: None,
            last_feed: 0,
            max_backlog: 0,
            input: VecDeque::new(),
            drive: None,
            feeds: Vec::new(),
        }
    }

    /// Every record that left on COM2, decoded (a damaged stream fails the test).
    pub fn records(&self) -> Vec<carousel_protocol::record::Record> {
        carousel_protocol::wire::decode_all(&self.com2)
            .into_iter()
            .map(|item| match item {
                carousel_protocol::wire::Decoded::Frame(frame) => frame.record,
                other => panic!("damaged record stream: {other:?}"),
            })
            .collect()
    }

    /// COM1 as text.
    pub fn com1_text(&self) -> String {
        String::from_utf8_lossy(&self.com1).into_owned()
    }
}

impl Host for FakeHost {
    fn now(&mut self) -> u64 {
        let now = self.clock.get() + self.cost_per_reading;
        self.clock.set(now);
        now
    }

    fn exporter(&mut self) -> &mut Exporter {
        &mut self.exporter
    }

    fn console_has_room(&mut self, vm: u16) -> bool {
        self.console.vm_has_room(vm)
    }

    fn console_line(&mut self, vm: u16, line: &[u8]) {
        self.console.vm_line(vm, line);
    }

    fn feed_serial(&mut self) {
        let mut budget = self.com2_per_feed.unwrap_or(usize::MAX);
        let com2 = &mut self.com2;
        self.exporter.drain(|bytes| {
            let take = bytes.len().min(budget);
            budget -= take;
            com2.extend_from_slice(&bytes[..take]);
            take
        });
        self.exporter
            .drain_debug(|bytes| com2.extend_from_slice(bytes));
        let mut budget = self.com1_per_feed.unwrap_or(usize::MAX);
        let com1 = &mut self.com1;
        self.console.drain(|bytes| {
            let take = bytes.len().min(budget);
            budget -= take;
            com1.extend_from_slice(&bytes[..take]);
            take
        });
        self.feeds.push((self.com1.len(), self.com2.len()));
        self.last_feed = self.clock.get();
        self.max_backlog = self.max_backlog.max(self.exporter.queued_bytes());
    }

    fn next_feed(&mut self) -> Option<u64> {
        let waiting = self.exporter.queued_bytes() > 0 || self.console.pending();
        self.feed_interval
            .filter(|_| waiting)
            .map(|interval| self.last_feed + interval)
    }

    fn flush_serial(&mut self) {
        let (com1, com2) = (self.com1_per_feed.take(), self.com2_per_feed.take());
        self.feed_serial();
        self.com1_per_feed = com1;
        self.com2_per_feed = com2;
    }

    fn poll_input(&mut self) -> Option<u8> {
        self.input.pop_front()
    }

    fn wait(&mut self, deadline: u64) {
        // Jump to the deadline (a long wait for "forever").
        let now = self.clock.get();
        self.clock.set(deadline.min(now + 1_000_000).max(now + 1));
    }

    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        match leaf {
            // Family 6, with VMX (ECX bit 5) and x2APIC (bit 21), as a host CPU would say.
            1 => [0x0005_0654, 0, 1 << 5 | 1 << 21, 0],
            _ => [0; 4],
        }
    }

    fn drive(&mut self) -> Option<&mut dyn crate::disk::Drive> {
        self.drive
            .as_mut()
            .map(|drive| drive as &mut dyn crate::disk::Drive)
    }
}

/// A whole run on the fakes: the real run loop over fake vCPUs, frames and host.
pub struct FakeRun {
    pub machine: crate::machine::Machine<FakeVcpu, FakeFrames, FakeHost>,
    pub clock: Clock,
}

impl core::fmt::Debug for FakeRun {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FakeRun").finish_non_exhaustive()
    }
}

/// The image every fake VM loads: a multiboot ELF32 with one page of code at 1 MiB (the fake
/// vCPU never runs it; the loader and the balloon's image check see it).
pub fn guest_image() -> Vec<u8> {
    use crate::loader::tests::{build_elf, Seg};
    build_elf(
        false,
        0x10_0000,
        &[Seg {
            paddr: 0x10_0000,
            data: alloc::vec![0xF4; 64],
            memsz: 0x1000,
        }],
        true,
    )
}

/// A VM of `memory_mib` MiB (at least 2) called `name`.
pub fn vm_config(name: &str, memory_mib: u64) -> carousel_protocol::config::VmConfig {
    carousel_protocol::config::VmConfig {
        name: String::from(name),
        kernel_module: String::from("guest"),
        disk: None,
        memory_bytes: memory_mib.max(2) << 20,
        args: String::new(),
        weight: 1,
        cap_pct: 0,
        disk_weight: 1,
        disk_mib_per_s: 0,
        balloon_target_pages: 0,
        initial_balloon_pages: 0,
        lazy_memory: false,
    }
}

impl FakeRun {
    /// The run of `config`, VM `i` running `programs[i]`, on a host whose clock readings cost
    /// `cost_per_reading` cycles each.
    pub fn new(
        config: &carousel_protocol::config::RunConfig,
        programs: Vec<Program>,
        cost_per_reading: u64,
    ) -> Self {
        let clock: Clock = Rc::new(Cell::new(CLOCK_START));
        let mut host = FakeHost::new(clock.clone());
        host.cost_per_reading = cost_per_reading;
        host.console
            .set_vms(config.vms.iter().map(|vm| vm.name.as_str()));
        host.exporter.set_vms(config.vms.len());
        host.exporter.set_level(config.trace);
        host.drive = config
            .drive
            .map(|drive| crate::disk::FakeDrive::new(drive.sectors));
        let pages: u64 = config
            .vms
            .iter()
            .map(|vm| vm.memory_bytes / PAGE_SIZE)
            .sum();
        let mut pool = crate::memory::HostMemory::new(FakeFrames::new(pages + 4096), None);
        let image = guest_image();
        let cpu = crate::vm::CpuFacts {
            cr4_allowed: 0x3F_FFFF,
            xcr0_supported: 0x7,
            accessed_dirty: true,
            physical_address_bits: 39,
            nested: crate::vm::NestedPaging::Ept,
        };
        let mut programs = programs.into_iter();
        let vms = crate::machine::build_vms(
            config,
            |name| (name == "guest").then_some(image.as_slice()),
            |_| None,
            &mut pool,
            &mut host,
            cpu,
            config.tsc_hz,
            |setup, _| {
                let program = programs
                    .next()
                    .unwrap_or_else(|| Box::new(|_, timer| (Exit::Timer, timer)));
                let mut vcpu = FakeVcpu::new(clock.clone(), program);
                vcpu.state.registers = setup.registers.clone();
                vcpu.state.set(Reg::Rip, setup.entry);
                Ok(vcpu)
            },
        );
        let machine = crate::machine::Machine::new(config, vms, pool, host, config.tsc_hz)
            .expect("the fake machine starts");
        Self { machine, clock }
    }

    /// Every vCPU's preemption timer counts once per `2^rate` TSC cycles.
    pub fn set_timer_rate(&mut self, rate: u8) {
        for vm in self.machine.vms.iter_mut().flatten() {
            vm.vcpu.timer_rate = rate;
        }
    }

    /// Runs until every VM has stopped; the records it sent.
    pub fn run(&mut self) -> Vec<carousel_protocol::record::Record> {
        self.machine.run();
        self.machine.host.flush_serial();
        self.machine.host.records()
    }
}

/// Each VM's summary in `records`, by VM id.
pub fn summaries(
    records: &[carousel_protocol::record::Record],
) -> BTreeMap<u16, carousel_protocol::record::VmSummary> {
    records
        .iter()
        .filter_map(|record| match record {
            carousel_protocol::record::Record::VmSummary(summary) => {
                Some((summary.vm, summary.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Each VM's stop reason in `records`, by VM id.
pub fn stops(
    records: &[carousel_protocol::record::Record],
) -> BTreeMap<u16, carousel_protocol::record::StopReason> {
    records
        .iter()
        .filter_map(|record| match record {
            carousel_protocol::record::Record::VmStopped { vm, reason, .. } => {
                Some((*vm, reason.clone()))
            }
            _ => None,
        })
        .collect()
}

/// A program that runs `total` guest cycles, returning `exit` (with `setup` applied to its state
/// first) every `every` cycles (never, when `every` is 0), then ends with the EXIT hypercall
/// (success).
pub fn program(
    total: u64,
    every: u64,
    exit: Exit,
    mut setup: impl FnMut(&mut FakeState) + 'static,
) -> Program {
    let mut ran = 0u64;
    let mut since_exit = 0u64;
    Box::new(move |state, timer| {
        if ran >= total {
            return exit_success(state);
        }
        let to_exit = if every == 0 {
            u64::MAX
        } else {
            every - since_exit
        };
        let run = timer.min(to_exit).min(total - ran);
        ran += run;
        if run == to_exit {
            since_exit = 0;
            setup(state);
            (exit, run)
        } else {
            since_exit += run;
            (Exit::Timer, run)
        }
    })
}

/// A CPU-bound program of `total` guest cycles.
pub fn spin(total: u64) -> Program {
    program(total, 0, Exit::Timer, |_| {})
}

/// The EXIT hypercall with success, made at once: what a guest does when it is done.
fn exit_success(state: &mut FakeState) -> (Exit, u64) {
    state.registers.rax = u64::from(carousel_protocol::hypercall::EXIT);
    state.registers.rbx = u64::from(carousel_protocol::hypercall::EXIT_SUCCESS);
    (Exit::Hypercall { length: 3 }, 0)
}

/// `guest` until its first entry at or after TSC `deadline`, where it ends with the EXIT
/// hypercall (success), as `spin ms=N` ends: VMs that all run until the same instant share the
/// CPU over the same stretch of time.
pub fn until(deadline: u64, mut guest: Program) -> Program {
    Box::new(move |state, timer| {
        if state.tsc >= deadline {
            exit_success(state)
        } else {
            guest(state, timer)
        }
    })
}

/// A guest that takes turns at running and sleeping, `rounds` turns in all, then ends with the
/// EXIT hypercall (success). Turn `i` takes phase `phases[i % phases.len()]`, `(run, sleep)`:
/// it runs `run` guest cycles (with a CPUID exit every `exit_every` of them; never when 0), then
/// arms its timer `sleep` cycles ahead of that instant with SET_TIMER and halts, as the `sleepy`
/// guest does. A sleep of 0 arms a deadline that is already due: the HLT goes straight on.
pub fn bursts(phases: Vec<(u64, u64)>, rounds: u64, exit_every: u64) -> Program {
    assert!(!phases.is_empty(), "a bursty guest needs a phase");
    let mut turn = 0u64;
    let mut left = phases[0].0;
    let mut since_exit = 0u64;
    let mut halt_next = false;
    Box::new(move |state, timer| {
        if halt_next {
            halt_next = false;
            return (Exit::Hlt { length: 1 }, 0);
        }
        if turn == rounds {
            return exit_success(state);
        }
        let to_exit = if exit_every == 0 {
            u64::MAX
        } else {
            exit_every - since_exit
        };
        let run = timer.min(to_exit).min(left);
        left -= run;
        since_exit = if run == to_exit { 0 } else { since_exit + run };
        if left == 0 {
            let sleep = phases[turn as usize % phases.len()].1;
            let deadline = state.tsc + run + sleep;
            state.registers.rax = u64::from(carousel_protocol::hypercall::SET_TIMER);
            state.registers.rbx = deadline & 0xFFFF_FFFF;
            state.registers.rcx = deadline >> 32;
            turn += 1;
            left = phases[turn as usize % phases.len()].0;
            halt_next = true;
            (Exit::Hypercall { length: 3 }, run)
        } else if run == to_exit {
            (Exit::Cpuid { length: 2 }, run)
        } else {
            (Exit::Timer, run)
        }
    })
}
