//! One virtual machine: its vCPU, RAM and EPT, devices and run state, and what happens to them
//! between exits: interrupt injection, wake-ups, balloon calls, working-set samples.

use alloc::string::String;
use alloc::vec::Vec;

use carousel_devices::mptable::{
    self, bda_words, mp_tables, BASE_MEMORY_KIB, CONFIG_TABLE_GPA, EBDA_SEGMENT, LOCAL_APIC_ADDRESS,
};
use carousel_protocol::config::VmConfig;
use carousel_protocol::hypercall::{self, Error as HypercallError};
use carousel_protocol::record::{BlockedOn, PageState, Record, StopReason};
use carousel_vmx::addr::{GuestPhysAddr, HostPhysAddr};
use carousel_vmx::ept::{EptPointer, Permissions, Tables, EPT};

use crate::balloon::Balloon;
use crate::bootinfo::{self, MULTIBOOT1_BOOTLOADER_MAGIC};
use crate::compress::Ages;
use crate::disk::Backing;
use crate::exitstats::ExitStats;
use crate::host::Host;
use crate::memory::{Frames, GuestMemory, HostMemory, RamView, RamWriter};
use crate::platform::{Platform, IOAPIC_ID};
use crate::spaces::AddressSpaces;
use crate::vcpu::{Event, GuestRegisters, Reg, Vcpu, VcpuError};
use crate::workingset::WorkingSet;
use crate::{loader, GuestRam, PAGE_SIZE};

/// Why a blocked VM waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// HLT at this RIP. With `interrupts` (RFLAGS.IF was set) an interrupt wakes it; without,
    /// only its SET_TIMER deadline does.
    Halted { rip: u64, interrupts: bool },
    /// Its start is staggered: it waits for its timer deadline before it first runs.
    Held,
    /// Its share of COM1 is full: it waits (since this instant) for its console lines to leave.
    /// The instruction that wanted to write (an OUT, a console hypercall) runs again then.
    Console { since: u64 },
    /// Its record quota on COM2 is full: it waits (since this instant) for its records to
    /// leave. The hypercall runs again then.
    Records { since: u64 },
}

/// Where a VM stands in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Ready to run.
    Runnable,
    /// Waits for an event.
    Blocked(Blocked),
    /// Out of the run, for this reason.
    Stopped(StopReason),
}

/// What the handlers need to know about the CPU the guests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFacts {
    /// CR4 bits a guest may set (the CPU's, less those Carousel keeps to itself).
    pub cr4_allowed: u64,
    /// XCR0 bits the CPU supports (CPUID.(EAX=0DH,ECX=0):EDX:EAX), 0 without XSAVE.
    pub xcr0_supported: u64,
    /// The EPT records accessed and dirty flags.
    pub accessed_dirty: bool,
    /// MAXPHYADDR (`CPUID.80000008H:EAX[7:0]`).
    pub physical_address_bits: u8,
    /// The format of the VM's second-level page tables.
    pub nested: NestedPaging,
}

/// Which second-level translation the hardware does: its page tables' entry format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedPaging {
    /// Intel's EPT.
    Ept,
    /// AMD's nested paging, with the NX bit for pages that are not executable when the host
    /// runs with EFER.NXE.
    Npt { no_execute: bool },
}

impl NestedPaging {
    /// The entry format of the tables.
    pub fn format(self) -> &'static dyn carousel_vmx::ept::EntryFormat {
        match self {
            Self::Ept => &EPT,
            Self::Npt { no_execute: true } => &carousel_svm::npt::NPT,
            Self::Npt { no_execute: false } => &carousel_svm::npt::NPT_WITHOUT_NX,
        }
    }
}

/// What building a vCPU needs from the VM.
#[derive(Debug, Clone)]
pub struct VcpuSetup {
    /// The VM's EPT pointer (VMX).
    pub eptp: EptPointer,
    /// The root of the VM's second-level tables (the nested CR3 of SVM).
    pub root: HostPhysAddr,
    /// Its tag for cached translations (VPID or ASID), never 0.
    pub tag: u16,
    /// The guest's first instruction.
    pub entry: u64,
    /// Its registers at entry.
    pub registers: GuestRegisters,
}

/// One VM.
#[derive(Debug)]
pub struct Vm<V> {
    pub id: u16,
    pub name: String,
    pub state: RunState,
    pub vcpu: V,
    pub memory: GuestMemory,
    pub platform: Platform,
    /// What this VM's exits cost in the current metrics interval.
    pub exit_stats: ExitStats,
    /// The exit statistics of a metrics interval that ended, waiting to be sent, with the
    /// interval's end and length; the run loop sends them a few at a time between slices.
    pub interval_due: Option<(u64, u64)>,
    /// Those statistics (the vector is reused from one interval to the next).
    pub exits_due: Vec<carousel_protocol::record::ExitStat>,
    /// Since when [`Self::exit_stats`] count (the end of the interval last taken out).
    pub stats_since: Option<u64>,
    /// Guest time by address space, and the idle one.
    pub spaces: AddressSpaces,
    pub cpu: CpuFacts,
    /// TSC deadline of the one-shot timer the guest armed (SET_TIMER), if any.
    pub timer_deadline: Option<u64>,
    /// The TSC frequency the run uses (the TSC_KHZ hypercall answers with it).
    pub tsc_hz: u64,
    /// The VM's EPT (its frames come from the host's pool).
    pub ept: Tables,
    /// Page history for working-set samples.
    working_set: WorkingSet,
    /// Samples since each page was last seen touched (empty unless compression is on).
    pub ages: Ages,
    /// Guest cycles run so far; at the last working-set sample (only a sample after the guest
    /// ran ages its pages: a page is cold when its VM ran and left it alone, not when the VM
    /// waited for the CPU); and at the last console quiet check, with its TSC (the console's
    /// quiet spell counts the VM's own time).
    pub guest_cycles: u64,
    sampled_at: u64,
    pub console_mark: (u64, u64),
    /// The pages the guest gave back.
    pub balloon: Balloon,
    /// The guest has made a balloon call (it has a driver the balloon rule may ask).
    pub balloon_driver: bool,
    /// Pages accessed in the last working-set sample's period.
    pub last_wss: u64,
    /// Working-set samples taken (the memory map goes out with every [`MAP_EVERY`]th).
    samples: u64,
    /// Guest pages holding the image it was loaded from (never ballooned).
    pub image_pages: core::ops::Range<u64>,
    /// Cycles spent blocked on console room and on record room.
    pub blocked_console: u64,
    pub blocked_records: u64,
    /// The frame the guest reads its local APIC from (mapped read-only: reads never exit,
    /// writes exit and reach the model), and the model's change counter it was last filled at.
    pub lapic_page: HostPhysAddr,
    lapic_filled: Option<u64>,
}

/// A memory map (up to 1 KiB) goes out with every this many working-set samples; the counts go
/// out with each. COM2 is narrow.
const MAP_EVERY: u64 = 8;

/// The most bytes one record a guest asks for takes on the wire (a CHECK with the longest name,
/// a balloon record): a VM waits for this much room in its quota.
pub const GUEST_RECORD_MAX: usize = 160;

/// Why a balloon call failed: the guest's mistake (an error code for it), or the
/// hypervisor's (the VM stops).
#[derive(Debug)]
pub enum BalloonFailure {
    Call(HypercallError),
    Hypervisor(VcpuError),
}

impl From<HypercallError> for BalloonFailure {
    fn from(error: HypercallError) -> Self {
        Self::Call(error)
    }
}

/// Why a VM could not be built; the VM is then reported as stopped with this message.
pub fn load_failed(message: impl core::fmt::Display) -> StopReason {
    StopReason::LoadFailed {
        message: alloc::format!("{message}"),
    }
}

/// The parts of a VM before its vCPU exists.
#[derive(Debug)]
pub struct Built {
    memory: GuestMemory,
    ept: Tables,
    platform: Platform,
    setup: VcpuSetup,
    image_pages: core::ops::Range<u64>,
    lapic_page: HostPhysAddr,
}

impl Built {
    /// What the vCPU needs.
    pub fn setup(&self) -> &VcpuSetup {
        &self.setup
    }
}

/// What a VM is built from.
#[derive(Debug, Clone, Copy)]
pub struct Blueprint<'a> {
    pub id: u16,
    pub config: &'a VmConfig,
    pub cpu: CpuFacts,
    pub tsc_hz: u64,
}

/// Builds the memory, EPT and devices of a VM: RAM holding the guest image, its boot
/// information and the firmware tables, mapped in a fresh EPT beside the shared read-only
/// LAPIC page.
pub fn build<F: Frames>(
    pool: &mut HostMemory<F>,
    blueprint: &Blueprint<'_>,
    image: &[u8],
    disk: Backing,
) -> Result<Built, StopReason> {
    let Blueprint {
        id,
        config,
        cpu,
        tsc_hz,
    } = *blueprint;
    if !config.memory_bytes.is_multiple_of(PAGE_SIZE) || config.memory_bytes == 0 {
        return Err(load_failed(format_args!(
            "memory size {:#x} is not whole pages",
            config.memory_bytes
        )));
    }
    let mut memory = if config.lazy_memory {
        pool.lazy_guest_memory(config.memory_bytes)
    } else {
        pool.guest_memory(config.memory_bytes).map_err(|error| {
            load_failed(format_args!(
                "needs {} MiB of RAM, {} MiB free",
                error.wanted_bytes >> 20,
                error.free_bytes >> 20
            ))
        })?
    };
    let built = (|| {
        let mut ram = RamWriter {
            memory: &mut memory,
            pool,
        };
        let loaded = loader::load(image, &mut ram).map_err(load_failed)?;
        let image_start = 0x10_0000u64.min(loaded.end);
        let info = bootinfo::write(&mut ram, &config.args, image_start, loaded.end)
            .map_err(load_failed)?;
        write_low_memory_tables(&mut ram).map_err(load_failed)?;
        let lapic_page = pool
            .allocate()
            .ok_or_else(|| load_failed("no frame for the local APIC page"))?;
        let mut ept = Tables::new(pool, cpu.nested.format()).map_err(load_failed)?;
        let frames: Vec<(u64, HostPhysAddr)> = memory.frames().collect();
        for (page, hpa) in frames {
            ept.map_4k(
                GuestPhysAddr(page * PAGE_SIZE),
                hpa,
                Permissions::READ_WRITE_EXECUTE,
                pool,
            )
            .map_err(load_failed)?;
        }
        ept.map_4k(
            GuestPhysAddr(u64::from(LOCAL_APIC_ADDRESS)),
            lapic_page,
            Permissions::READ,
            pool,
        )
        .map_err(load_failed)?;
        let platform = Platform::new(disk, tsc_hz).map_err(load_failed)?;
        let setup = VcpuSetup {
            eptp: ept.pointer(cpu.accessed_dirty),
            root: ept.root(),
            tag: id + 1,
            entry: u64::from(loaded.entry),
            registers: GuestRegisters {
                rax: u64::from(MULTIBOOT1_BOOTLOADER_MAGIC),
                rbx: u64::from(info),
                ..GuestRegisters::default()
            },
        };
        let image_pages = image_start / PAGE_SIZE..loaded.end.div_ceil(PAGE_SIZE);
        Ok((ept, platform, setup, image_pages, lapic_page))
    })();
    match built {
        Ok((ept, platform, setup, image_pages, lapic_page)) => Ok(Built {
            memory,
            ept,
            platform,
            setup,
            image_pages,
            lapic_page,
        }),
        Err(reason) => {
            pool.release(memory);
            Err(reason)
        }
    }
}

impl<V: Vcpu> Vm<V> {
    /// The VM from its parts and its vCPU. Lazily backed RAM gives up its zero pages here, and
    /// the initial balloon its pages (the top ones: the image and boot information sit low).
    pub fn new<F: Frames>(
        built: Built,
        vcpu: V,
        blueprint: &Blueprint<'_>,
        pool: &mut HostMemory<F>,
        host: &mut impl Host,
    ) -> Result<Self, StopReason> {
        let Blueprint {
            id,
            config,
            cpu,
            tsc_hz,
        } = *blueprint;
        let pages = config.memory_bytes / PAGE_SIZE;
        let mut vm = Self {
            id,
            name: config.name.clone(),
            state: RunState::Runnable,
            vcpu,
            memory: built.memory,
            platform: built.platform,
            exit_stats: ExitStats::new(),
            interval_due: None,
            exits_due: Vec::new(),
            stats_since: None,
            spaces: AddressSpaces::new(),
            cpu,
            timer_deadline: None,
            tsc_hz,
            ept: built.ept,
            working_set: WorkingSet::new(pages),
            ages: Ages::default(),
            guest_cycles: 0,
            sampled_at: 0,
            console_mark: (0, 0),
            balloon: Balloon::new(pages, config.balloon_target_pages),
            balloon_driver: false,
            last_wss: 0,
            samples: 0,
            image_pages: built.image_pages,
            blocked_console: 0,
            blocked_records: 0,
            lapic_page: built.lapic_page,
            lapic_filled: None,
        };
        host.exporter().emit(&Record::MemoryInfo {
            vm: id,
            ram_pages: pages,
            accessed_dirty: cpu.accessed_dirty,
            initial_balloon: config.initial_balloon_pages.min(pages),
        });
        // Nothing has run in this EPT yet: no flush needed for these unmappings.
        if config.lazy_memory {
            for page in pool.make_lazy(&mut vm.memory) {
                vm.ept.unmap_4k(GuestPhysAddr(page * PAGE_SIZE), pool);
            }
            vm.memory.pending.clear();
        }
        let initial = config.initial_balloon_pages.min(pages);
        let top: Vec<u32> = (pages - initial..pages).map(|page| page as u32).collect();
        for chunk in top.chunks(hypercall::BALLOON_BATCH_MAX as usize) {
            vm.inflate(chunk, pool)
                .map_err(|_| load_failed("cannot set up the initial balloon"))?;
        }
        vm.balloon.inflated_total = 0;
        Ok(vm)
    }

    /// Brings the page the guest reads its local APIC from up to date with the model, if the
    /// model changed since (the timer's current count is as of `now`).
    pub fn refresh_lapic_page<F: Frames>(&mut self, pool: &mut HostMemory<F>, now: u64) {
        let lapic = &mut self.platform.lapic;
        let generation = lapic.generation();
        if self.lapic_filled == Some(generation) {
            return;
        }
        let page = pool.frames.bytes_mut(self.lapic_page);
        for offset in carousel_devices::Lapic::READABLE {
            let value = lapic.read(offset, now).to_le_bytes();
            page[offset as usize..offset as usize + 4].copy_from_slice(&value);
        }
        self.lapic_filled = Some(lapic.generation());
    }

    /// True when the VM has left the run.
    pub fn is_stopped(&self) -> bool {
        matches!(self.state, RunState::Stopped(_))
    }

    /// Takes the VM out of the run and says so on COM1 and COM2.
    pub fn stop(&mut self, reason: StopReason, host: &mut impl Host) {
        if self.is_stopped() {
            return;
        }
        self.platform
            .console
            .flush(&mut crate::exits::Output { host, vm: self.id });
        log::info!("vm {} stopped: {reason}", self.name);
        let now = host.now();
        host.exporter().emit(&Record::VmStopped {
            tsc: now,
            vm: self.id,
            reason: reason.clone(),
        });
        self.state = RunState::Stopped(reason);
    }

    /// Takes a working-set sample (when the CPU has EPT accessed/dirty flags) and sends it: the
    /// counts and the memory map. The walk clears the flags; the flush after it makes the CPU
    /// set them again on the next access.
    pub fn sample_memory<F: Frames>(
        &mut self,
        now: u64,
        pool: &mut HostMemory<F>,
        host: &mut impl Host,
    ) -> Result<(), VcpuError> {
        if !self.cpu.accessed_dirty {
            return Ok(());
        }
        let started = host.now();
        // The memory map goes out with the first sample and every MAP_EVERY-th after it; the
        // others need no cells.
        let map = self.samples.is_multiple_of(MAP_EVERY);
        let pages = self.memory.size_pages();
        let ept = &mut self.ept;
        let ages = &mut self.ages;
        let memory = &mut self.memory;
        memory.begin_sample();
        let mut sample = self.working_set.sample(
            |seen| {
                // Ages follow no page unless compression is on (then this is a no-op).
                ept.take_accessed_dirty(pages, pool, |page, dirty| {
                    ages.seen(page);
                    if dirty {
                        ages.written(page);
                    }
                    memory.sampled(page, dirty);
                    seen(page, dirty);
                });
            },
            map,
        );
        if core::mem::replace(&mut self.sampled_at, self.guest_cycles) != self.guest_cycles {
            self.ages.tick();
        }
        if map {
            sample.raise(self.memory.compressed_bits(), PageState::Compressed);
            sample.raise(self.balloon.bits(), PageState::Ballooned);
            sample.raise(self.memory.shared_bits(), PageState::Merged);
        }
        self.vcpu.flush_physical()?;
        let cycles = host.now().saturating_sub(started);
        self.last_wss = sample.accessed;
        host.exporter().emit_or_drop(&Record::WorkingSet {
            tsc: now,
            vm: self.id,
            accessed: sample.accessed,
            dirty: sample.dirty,
            ever: sample.ever,
            cycles,
        });
        self.samples += 1;
        if !map {
            return Ok(());
        }
        host.exporter().emit_or_drop(&Record::MemoryMap {
            tsc: now,
            vm: self.id,
            pages_per_cell: u32::try_from(sample.pages_per_cell).unwrap_or(u32::MAX),
            cells: sample.cells,
        });
        Ok(())
    }

    /// Rewrites the EPT entries of the pages whose frame or sharing changed (same-page merging,
    /// copy on write, first touches), then flushes: shared pages read-only, private ones
    /// writable. The vCPU must be the current one.
    pub fn sync_ept<F: Frames>(&mut self, pool: &mut HostMemory<F>) -> Result<(), VcpuError> {
        if self.memory.pending.is_empty() {
            return Ok(());
        }
        let mut pending = core::mem::take(&mut self.memory.pending);
        for &page in &pending {
            let gpa = GuestPhysAddr(page * PAGE_SIZE);
            match self.memory.frame(page) {
                Some((frame, shared)) => {
                    let permissions = if shared {
                        Permissions::READ | Permissions::EXECUTE
                    } else {
                        Permissions::READ_WRITE_EXECUTE
                    };
                    // A page backed for the first time has no mapping yet.
                    if !self.ept.remap_4k(gpa, frame, permissions, pool) {
                        self.ept
                            .map_4k(gpa, frame, permissions, pool)
                            .map_err(|error| VcpuError::EptMapping {
                                gpa: gpa.as_u64(),
                                error,
                            })?;
                    }
                }
                None => {
                    self.ept.unmap_4k(gpa, pool);
                }
            }
        }
        // Keep the vector's room for the next changes.
        pending.clear();
        self.memory.pending = pending;
        self.vcpu.flush_physical()
    }

    /// BALLOON_INFLATE: the guest gives back the pages listed at `gpa` (`count` of them).
    pub fn balloon_inflate<F: Frames>(
        &mut self,
        gpa: u64,
        count: u32,
        pool: &mut HostMemory<F>,
    ) -> Result<u32, BalloonFailure> {
        let list = self.page_list(gpa, count, pool)?;
        self.balloon.check_inflate(&list)?;
        if list
            .iter()
            .any(|&page| self.image_pages.contains(&u64::from(page)))
        {
            // The pages the guest's own image was loaded into: refused, as a driver that gives
            // back its kernel's code is broken (or a user process is attacking its kernel).
            return Err(HypercallError::BadAddress.into());
        }
        self.inflate(&list, pool)?;
        Ok(count)
    }

    /// BALLOON_DEFLATE: the guest takes back the ballooned pages listed at `gpa`, each with a
    /// zeroed frame, if the host can back them all now.
    pub fn balloon_deflate<F: Frames>(
        &mut self,
        gpa: u64,
        count: u32,
        pool: &mut HostMemory<F>,
    ) -> Result<u32, BalloonFailure> {
        let list = self.page_list(gpa, count, pool)?;
        self.balloon.check_deflate(&list)?;
        if pool.guest_pages_available() < u64::from(count) {
            return Err(HypercallError::NoMemory.into());
        }
        for &page in &list {
            pool.back(&mut self.memory, u64::from(page))
                .ok_or(BalloonFailure::Call(HypercallError::NoMemory))?;
        }
        self.sync_ept(pool).map_err(BalloonFailure::Hypervisor)?;
        self.balloon.deflated(&list);
        Ok(count)
    }

    /// Unmaps and frees the listed pages (checked already), then flushes: the CPU may hold
    /// their translations.
    fn inflate<F: Frames>(
        &mut self,
        list: &[u32],
        pool: &mut HostMemory<F>,
    ) -> Result<(), BalloonFailure> {
        for &page in list {
            let page = u64::from(page);
            self.ept.unmap_4k(GuestPhysAddr(page * PAGE_SIZE), pool);
            pool.unback(&mut self.memory, page);
        }
        self.vcpu
            .flush_physical()
            .map_err(BalloonFailure::Hypervisor)?;
        self.balloon.inflated(list);
        Ok(())
    }

    /// The page list of a balloon call: `count` 32-bit page numbers at `gpa`.
    fn page_list<F: Frames>(
        &self,
        gpa: u64,
        count: u32,
        pool: &HostMemory<F>,
    ) -> Result<Vec<u32>, BalloonFailure> {
        if count == 0 || count > hypercall::BALLOON_BATCH_MAX {
            return Err(HypercallError::InvalidArgument.into());
        }
        let mut bytes = alloc::vec![0u8; count as usize * 4];
        if !self.memory.read(&pool.frames, gpa, &mut bytes) {
            return Err(HypercallError::BadAddress.into());
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
            .collect())
    }

    /// The guest's RAM as the page-table walker reads it.
    pub fn ram<'a, F: Frames>(&'a self, pool: &'a HostMemory<F>) -> RamView<'a, F> {
        RamView {
            memory: &self.memory,
            frames: &pool.frames,
        }
    }

    /// When this blocked VM may next wake (None: not blocked, or nothing can wake it by itself).
    pub fn wake_deadline(&self) -> Option<u64> {
        match self.state {
            RunState::Blocked(Blocked::Held) => self.timer_deadline,
            RunState::Blocked(Blocked::Halted { interrupts, .. }) => {
                // Only a timer expiry that can raise an interrupt wakes it.
                let lapic = if interrupts {
                    self.platform.lapic.deliverable_deadline()
                } else {
                    None
                };
                self.timer_deadline.into_iter().chain(lapic).min()
            }
            _ => None,
        }
    }

    /// What this VM, blocked, waits for (None while it is not blocked). `disk`: a request of
    /// its is outstanding at the shared disk, which comes first (`BlockedOn` says why).
    pub fn blocked_on(&self, disk: bool) -> Option<BlockedOn> {
        let RunState::Blocked(blocked) = self.state else {
            return None;
        };
        Some(match blocked {
            Blocked::Console { .. } => BlockedOn::Console,
            Blocked::Records { .. } => BlockedOn::Records,
            _ if disk => BlockedOn::Disk,
            Blocked::Held => BlockedOn::Timer,
            Blocked::Halted { .. } if self.wake_deadline().is_some() => BlockedOn::Timer,
            Blocked::Halted { .. } => BlockedOn::Interrupt,
        })
    }

    /// Idle detection: the VM has spent `threshold` guest cycles in its idle address space
    /// (without loading another) and has no interrupt to take. A guest that never halts (xv6)
    /// is then treated as halted with interrupts enabled: it runs again at its next interrupt.
    ///
    /// Never while an interrupt handler runs (a vector in service): xv6 takes the IDE interrupt
    /// in its scheduler's address space, and a VM blocked there would wait for an interrupt
    /// its own unfinished handler keeps from being delivered (a slow `insl` under QEMU's TCG
    /// took longer than the threshold, and four xv6 stalled at their first disk read).
    pub fn looks_idle(&self, threshold: u64) -> bool {
        self.spaces
            .idle_for()
            .is_some_and(|spent| spent >= threshold)
            && self.may_look_idle()
    }

    /// Guest cycles until idle detection would call this VM idle, if nothing else changes:
    /// None when it is not in its idle address space, or when it cannot be called idle however
    /// long it stays there (an interrupt pending or in service: only an exit, an EOI or the
    /// interrupt's delivery, changes that). So the moment is a deadline worth stopping the
    /// guest for only when it can make the VM idle.
    pub fn idle_in(&self, threshold: u64) -> Option<u64> {
        let spent = self.spaces.idle_for()?;
        self.may_look_idle()
            .then(|| threshold.saturating_sub(spent))
    }

    /// Nothing but time keeps idle detection from calling this VM idle: no interrupt pending,
    /// none in service.
    fn may_look_idle(&self) -> bool {
        self.platform.lapic.pending_vector().is_none()
            && self.platform.lapic.in_service().is_empty()
    }

    /// True when this VM halted with interrupts enabled and console input could still wake it
    /// (an interrupt source is routed).
    pub fn waits_for_interrupt(&self) -> bool {
        matches!(
            self.state,
            RunState::Blocked(Blocked::Halted {
                interrupts: true,
                ..
            })
        ) && self.platform.input_can_interrupt()
    }

    /// True when nothing can ever wake this blocked VM: no timer deadline, no interrupt it could
    /// take, no serial line to wait for.
    pub fn can_never_wake(&self) -> bool {
        matches!(self.state, RunState::Blocked(_))
            && self.wake_deadline().is_none()
            && !self.waits_for_interrupt()
            && !self.waits_for_serial()
            && !self.interrupt_waiting_now()
    }

    /// True when this VM halted with interrupts enabled and has an interrupt pending already.
    fn interrupt_waiting_now(&self) -> bool {
        matches!(
            self.state,
            RunState::Blocked(Blocked::Halted {
                interrupts: true,
                ..
            })
        ) && self.platform.lapic.pending_vector().is_some()
    }

    /// True when this VM halted with interrupts enabled and now has one to take.
    pub fn interrupt_waiting(&self) -> bool {
        self.interrupt_waiting_now()
    }

    /// True when this VM waits for room on a serial line.
    pub fn waits_for_serial(&self) -> bool {
        matches!(
            self.state,
            RunState::Blocked(Blocked::Console { .. } | Blocked::Records { .. })
        )
    }

    /// If this blocked VM has something to wake for by `now`, the instant of that event.
    pub fn wake_event(&mut self, now: u64, host: &mut impl Host) -> Option<u64> {
        let interrupts = match self.state {
            RunState::Blocked(Blocked::Held) => false,
            RunState::Blocked(Blocked::Halted { interrupts, .. }) => interrupts,
            RunState::Blocked(Blocked::Console { since }) => {
                if !host.console_has_room(self.id) {
                    return None;
                }
                self.blocked_console += now.saturating_sub(since);
                return Some(now);
            }
            RunState::Blocked(Blocked::Records { since }) => {
                if !host.exporter().guest_room(self.id, GUEST_RECORD_MAX) {
                    return None;
                }
                self.blocked_records += now.saturating_sub(since);
                return Some(now);
            }
            _ => return None,
        };
        if let Some(deadline) = self.timer_deadline.filter(|&deadline| deadline <= now) {
            self.timer_deadline = None;
            return Some(deadline);
        }
        if interrupts {
            let tick = self
                .platform
                .next_deadline()
                .filter(|&deadline| deadline <= now);
            self.platform.advance_timer(now);
            if self.platform.lapic.pending_vector().is_some() {
                self.spaces.restart_idle_clock();
                return Some(tick.unwrap_or(now));
            }
        }
        None
    }

    /// Before VM entry: runs the LAPIC timer up to `now`, then injects the highest pending
    /// vector if the guest can take it, or asks for an exit when it can (interrupt-window
    /// exiting). See: SDM 28.6 "Event Injection", 28.7.5 "Interrupt-Window Exiting and
    /// Virtual-Interrupt Delivery" (paraphrased: with "interrupt-window exiting" set, a VM exit
    /// occurs before any instruction at which RFLAGS.IF is 1 and neither STI nor MOV SS blocks
    /// interrupts).
    pub fn inject_pending_interrupt(&mut self, now: u64) -> Result<(), VcpuError> {
        /// RFLAGS.IF.
        const RFLAGS_IF: u64 = 1 << 9;
        self.platform.advance_timer(now);
        // An NMI goes first, once the guest is out of its NMI handler and no event or shadow is
        // in the way (it stays pending until then).
        if self.platform.lapic.nmi_pending()
            && !self.vcpu.event_queued()?
            && self.vcpu.read(Reg::NmiBlocked)? == 0
            && self.vcpu.read(Reg::InterruptShadow)? == 0
        {
            self.platform.lapic.take_nmi();
            self.vcpu.inject(Event::Nmi)?;
            return self
                .vcpu
                .set_interrupt_window(self.platform.lapic.pending_vector().is_some());
        }
        let Some(vector) = self.platform.lapic.pending_vector() else {
            return self.vcpu.set_interrupt_window(false);
        };
        let open = self.vcpu.read(Reg::Rflags)? & RFLAGS_IF != 0
            && self.vcpu.read(Reg::InterruptShadow)? == 0;
        if self.vcpu.event_queued()? || !open {
            return self.vcpu.set_interrupt_window(true);
        }
        self.vcpu.inject(Event::Interrupt(vector))?;
        // The vector came from pending_vector just now, so acknowledging it cannot fail.
        let _ = self.platform.lapic.acknowledge(vector);
        self.vcpu.set_interrupt_window(false)
    }

    /// Where this VM stands, for the log at the end of a run: the vCPU's state, the local
    /// APIC's requested and in-service vectors, and the disk's interrupt line and status. A VM
    /// stuck waiting for an interrupt shows here why.
    pub fn state_line(&mut self) -> String {
        let vectors = |set: carousel_devices::interrupts::VectorSet| {
            (0..=255u8)
                .filter(|&vector| set.contains(vector))
                .collect::<Vec<u8>>()
        };
        let guest = self.vcpu.describe();
        let lapic = &self.platform.lapic;
        alloc::format!(
            "{guest} irr {:?} isr {:?} ppr {:#x} ide line {} status {:#x} ioapic pin 14 {:#x}",
            vectors(lapic.requested()),
            vectors(lapic.in_service()),
            lapic.processor_priority(),
            self.platform.ide.irq_level(),
            self.platform.ide.status(),
            self.platform
                .ioapic
                .entry(carousel_devices::ide::PRIMARY_IRQ)
                .map_or(0, |entry| entry.bits()),
        )
    }
}

/// Guest-physical range [gpa, gpa + len) inside this VM's RAM: the check every hypercall
/// argument goes through.
pub fn in_ram<V>(vm: &Vm<V>, gpa: u64, len: u64) -> bool {
    crate::range_in_ram(gpa, len, vm.memory.size())
}

/// Writes what the firmware would leave in low memory for xv6: the BIOS data area words and the
/// MP floating pointer and configuration table (XV6-CONTRACT §2).
fn write_low_memory_tables(ram: &mut impl GuestRam) -> Result<(), mptable::MpTableError> {
    for word in bda_words(EBDA_SEGMENT, BASE_MEMORY_KIB)? {
        ram.write(u64::from(word.gpa), &word.bytes());
    }
    let tables = mp_tables(IOAPIC_ID, CONFIG_TABLE_GPA)?;
    ram.write(
        u64::from(mptable::FLOATING_POINTER_GPA),
        &tables.floating_pointer,
    );
    ram.write(u64::from(CONFIG_TABLE_GPA), &tables.config_table);
    Ok(())
}
