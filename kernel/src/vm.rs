//! One virtual machine: its VMCS, EPT, RAM, devices and run state.

use alloc::string::String;
use alloc::vec::Vec;

use carousel_devices::mptable::{
    self, bda_words, mp_tables, BASE_MEMORY_KIB, CONFIG_TABLE_GPA, EBDA_SEGMENT, LOCAL_APIC_ADDRESS,
};
use carousel_kernel::balloon::Balloon;
use carousel_kernel::bootinfo::{self, MULTIBOOT1_BOOTLOADER_MAGIC};
use carousel_kernel::loader;
use carousel_kernel::workingset::WorkingSet;
use carousel_kernel::{GuestRam, PAGE_SIZE};
use carousel_protocol::config::VmConfig;
use carousel_protocol::hypercall::{self, Error as HypercallError};
use carousel_protocol::record::{PageState, Record, StopReason};
use carousel_vmx::addr::{GuestPhysAddr, HostPhysAddr};
use carousel_vmx::controls::{Negotiated, PrimaryProcessorBased};
use carousel_vmx::ept::{Ept, EptPointer, FrameSource, Permissions};
use carousel_vmx::fail::VmFail;
use carousel_vmx::fields::*;
use carousel_vmx::instructions::{self as vmx, GuestRegisters};

use crate::memory::{self, GuestMemory};
use crate::platform::{Platform, IOAPIC_ID};
use crate::vmm::Vmx;
use crate::{arch, export};
use carousel_kernel::exitstats::ExitStats;
use carousel_kernel::spaces::AddressSpaces;

/// Where a VM stands in the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Ready to run.
    Runnable,
    /// Executed HLT at this RIP; waits for an event. With `interrupts` (RFLAGS.IF was set), an
    /// interrupt wakes it; without, only its SET_TIMER deadline does.
    Blocked { rip: u64, interrupts: bool },
    /// Out of the run, for this reason.
    Stopped(StopReason),
}

#[derive(Debug)]
pub struct Vm {
    pub id: u16,
    pub name: String,
    pub state: RunState,
    pub regs: GuestRegisters,
    vmcs: HostPhysAddr,
    launched: bool,
    pub memory: GuestMemory,
    pub platform: Platform,
    /// Primary processor-based controls as last written (interrupt-window exiting toggles).
    pub primary_controls: u32,
    /// What this VM's exits cost in the current metrics interval.
    pub exit_stats: ExitStats,
    /// Guest time by address space, and the idle one.
    pub spaces: AddressSpaces,
    /// Fixed CR0/CR4 bits and other negotiated facts the exit handlers need.
    pub negotiated: Negotiated,
    /// TSC deadline of the one-shot timer the guest armed (SET_TIMER), if any.
    pub timer_deadline: Option<u64>,
    /// The TSC frequency the run uses (the TSC_KHZ hypercall answers with it).
    pub tsc_hz: u64,
    /// The VM's EPT and its pointer (for the working-set walk and the INVEPT after it).
    ept: Ept,
    eptp: EptPointer,
    /// Page history for working-set samples.
    working_set: WorkingSet,
    /// The pages the guest gave back.
    pub balloon: Balloon,
    /// The guest has made a balloon call (it has a driver the balloon rule may ask).
    pub balloon_driver: bool,
    /// Pages accessed in the last working-set sample's period.
    pub last_wss: u64,
    /// Working-set samples taken (the memory map goes out with every [`MAP_EVERY`]th).
    samples: u64,
    /// Its start is staggered: it waits, blocked, for its timer deadline before it first runs.
    pub held: bool,
}

/// A memory map (up to 1 KiB) goes out with every this many working-set samples; the counts go
/// out with each. COM2 is narrow.
const MAP_EVERY: u64 = 8;

/// The EPT builder takes frames from the hypervisor's allocator.
struct HostFrames;

impl FrameSource for HostFrames {
    fn allocate_zeroed(&mut self) -> Option<HostPhysAddr> {
        memory::allocate_frame()
    }
    fn table_mut(&mut self, frame: HostPhysAddr) -> &mut [u64; 512] {
        memory::frame_table(frame)
    }
    fn table(&self, frame: HostPhysAddr) -> &[u64; 512] {
        memory::frame_table(frame)
    }
}

/// Why a balloon call failed: the guest's mistake (an error code for it), or the
/// hypervisor's (the VM stops).
#[derive(Debug)]
pub enum BalloonFailure {
    Call(HypercallError),
    Hypervisor(String),
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

impl Vm {
    /// Builds VM `id`: RAM, EPT, the guest image and boot information, devices and a VMCS in
    /// the state a multiboot kernel expects at entry.
    pub fn new(
        vmx: &Vmx,
        id: u16,
        config: &VmConfig,
        image: &[u8],
        disk: Option<&[u8]>,
        tsc_hz: u64,
    ) -> Result<Self, StopReason> {
        if !config.memory_bytes.is_multiple_of(PAGE_SIZE) || config.memory_bytes == 0 {
            return Err(load_failed(format_args!(
                "memory size {:#x} is not whole pages",
                config.memory_bytes
            )));
        }
        let mut memory = GuestMemory::new(config.memory_bytes).map_err(|error| {
            load_failed(format_args!(
                "needs {} MiB of RAM, {} MiB free",
                error.wanted_bytes >> 20,
                error.free_bytes >> 20
            ))
        })?;
        let loaded = loader::load(image, &mut memory).map_err(load_failed)?;
        let image_start = 0x10_0000u64.min(loaded.end);
        let info = bootinfo::write(&mut memory, &config.args, image_start, loaded.end)
            .map_err(load_failed)?;

        let mut frames = HostFrames;
        let mut ept = Ept::new(&mut frames).map_err(load_failed)?;
        for (gpa, hpa) in memory.frames() {
            ept.map_4k(gpa, hpa, Permissions::READ_WRITE_EXECUTE, &mut frames)
                .map_err(load_failed)?;
        }

        write_low_memory_tables(&mut memory).map_err(load_failed)?;
        let lapic_page =
            lapic_constant_page().ok_or_else(|| load_failed("no frame for the LAPIC page"))?;
        ept.map_4k(
            GuestPhysAddr(u64::from(LOCAL_APIC_ADDRESS)),
            lapic_page,
            Permissions::READ,
            &mut frames,
        )
        .map_err(load_failed)?;
        let platform = Platform::new(id, &config.name, disk.map(<[u8]>::to_vec), tsc_hz)
            .map_err(load_failed)?;

        let vmcs = memory::allocate_frame().ok_or_else(|| load_failed("no frame for the VMCS"))?;
        memory::frame_bytes(vmcs)[..4].copy_from_slice(&vmx.negotiated.vmcs_revision.to_le_bytes());
        let regs = GuestRegisters {
            rax: u64::from(MULTIBOOT1_BOOTLOADER_MAGIC),
            rbx: u64::from(info),
            ..GuestRegisters::default()
        };
        let vm = Self {
            id,
            name: config.name.clone(),
            state: RunState::Runnable,
            regs,
            vmcs,
            launched: false,
            memory,
            platform,
            primary_controls: vmx.negotiated.primary.bits(),
            exit_stats: ExitStats::new(),
            spaces: AddressSpaces::new(),
            negotiated: vmx.negotiated,
            timer_deadline: None,
            tsc_hz,
            eptp: ept.pointer(vmx.negotiated.ept_accessed_dirty),
            ept,
            working_set: WorkingSet::new(config.memory_bytes / PAGE_SIZE),
            balloon: Balloon::new(config.memory_bytes / PAGE_SIZE, config.balloon_target_pages),
            balloon_driver: false,
            last_wss: 0,
            samples: 0,
            held: false,
        };
        export::emit(Record::MemoryInfo {
            vm: id,
            ram_pages: config.memory_bytes / PAGE_SIZE,
            accessed_dirty: vmx.negotiated.ept_accessed_dirty,
            initial_balloon: config
                .initial_balloon_pages
                .min(config.memory_bytes / PAGE_SIZE),
        });
        // SAFETY: the VMCS region is a fresh frame carrying the revision identifier; VMCLEAR
        // and VMPTRLD make it current, and every VMWRITE below describes state this VM owns
        // (its EPT, its entry point) or the hypervisor's own host state.
        unsafe {
            vmx::vmclear(vmcs).map_err(entry_setup_failed)?;
            vmx::vmptrld(vmcs).map_err(entry_setup_failed)?;
            vmx.write_controls(vm.eptp, id + 1)
                .map_err(entry_setup_failed)?;
            vmx.write_host_state().map_err(entry_setup_failed)?;
            write_guest_entry_state(u64::from(loaded.entry)).map_err(entry_setup_failed)?;
        }
        // Lazily backed RAM: the pages still all zeros lose their frames and mappings until
        // the guest touches them (nothing has run in this EPT yet: no INVEPT needed).
        let mut vm = vm;
        if config.lazy_memory {
            for page in vm.memory.make_lazy() {
                vm.ept
                    .unmap_4k(GuestPhysAddr(page * PAGE_SIZE), &mut HostFrames);
            }
        }
        // The initial balloon: the top pages, given back before the guest starts (the image
        // and the boot information sit low).
        let pages = config.memory_bytes / PAGE_SIZE;
        let initial = config.initial_balloon_pages.min(pages);
        let top: Vec<u32> = (pages - initial..pages).map(|page| page as u32).collect();
        for chunk in top.chunks(hypercall::BALLOON_BATCH_MAX as usize) {
            vm.inflate(chunk)
                .map_err(|_| load_failed("cannot set up the initial balloon"))?;
        }
        vm.balloon.inflated_total = 0;
        Ok(vm)
    }

    /// Takes a working-set sample (when the CPU has EPT accessed/dirty flags) and sends it:
    /// the counts and the memory map. The walk clears the flags; the INVEPT after it makes the
    /// CPU set them again on the next access.
    pub fn sample_memory(&mut self, now: u64) -> Result<(), VmFail> {
        if !self.negotiated.ept_accessed_dirty {
            return Ok(());
        }
        let pages = self.memory.size() / PAGE_SIZE;
        let ept = &mut self.ept;
        let mut sample = self.working_set.sample(|seen| {
            ept.take_accessed_dirty(pages, &mut HostFrames, |page, accessed, dirty| {
                seen(page, accessed, dirty)
            });
        });
        for page in self.balloon.pages() {
            if let Some(cell) = sample
                .cells
                .get_mut((page / sample.pages_per_cell) as usize)
            {
                *cell = PageState::Ballooned as u8;
            }
        }
        for page in (0..pages).filter(|&page| self.memory.is_shared(page)) {
            let cell = sample
                .cells
                .get_mut((page / sample.pages_per_cell) as usize);
            if let Some(cell) = cell.filter(|cell| **cell != PageState::Ballooned as u8) {
                *cell = PageState::Merged as u8;
            }
        }
        // SAFETY: the pointer is this VM's own EPT, as loaded into its VMCS.
        unsafe { vmx::invept_single_context(self.eptp)? };
        self.last_wss = sample.accessed;
        export::emit_or_drop(Record::WorkingSet {
            tsc: now,
            vm: self.id,
            accessed: sample.accessed,
            dirty: sample.dirty,
            ever: sample.ever,
        });
        self.samples += 1;
        if self.samples % MAP_EVERY != 1 {
            return Ok(());
        }
        export::emit_or_drop(Record::MemoryMap {
            tsc: now,
            vm: self.id,
            pages_per_cell: u32::try_from(sample.pages_per_cell).unwrap_or(u32::MAX),
            cells: sample.cells,
        });
        Ok(())
    }

    /// The guest touched lazy page `page` for the first time: it gets a zeroed frame, mapped
    /// writable. False when the host has no frame.
    pub fn back_lazy(&mut self, page: u64) -> bool {
        let Some(frame) = self.memory.back(page) else {
            return false;
        };
        let gpa = GuestPhysAddr(page * PAGE_SIZE);
        self.ept
            .map_4k(gpa, frame, Permissions::READ_WRITE_EXECUTE, &mut HostFrames)
            .is_ok()
    }

    /// Rewrites the EPT entries of the pages whose frame or sharing changed (same-page
    /// merging, copy on write), then INVEPT: shared pages read-only, private ones writable.
    pub fn sync_ept(&mut self) -> Result<(), VmFail> {
        if self.memory.pending.is_empty() {
            return Ok(());
        }
        let mut pending = core::mem::take(&mut self.memory.pending);
        for &page in &pending {
            if let Some((frame, shared)) = self.memory.frame(page) {
                let permissions = if shared {
                    Permissions::READ | Permissions::EXECUTE
                } else {
                    Permissions::READ_WRITE_EXECUTE
                };
                let gpa = GuestPhysAddr(page * PAGE_SIZE);
                // A page backed for the first time has no mapping yet.
                if !self.ept.remap_4k(gpa, frame, permissions, &mut HostFrames) {
                    let _ = self.ept.map_4k(gpa, frame, permissions, &mut HostFrames);
                }
            }
        }
        // Keep the vector's room for the next changes.
        pending.clear();
        self.memory.pending = pending;
        // SAFETY: the pointer is this VM's own EPT, as loaded into its VMCS.
        unsafe { vmx::invept_single_context(self.eptp) }
    }

    /// BALLOON_INFLATE: the guest gives back the pages listed at `gpa` (`count` of them).
    pub fn balloon_inflate(&mut self, gpa: u64, count: u32) -> Result<u32, BalloonFailure> {
        let list = self.page_list(gpa, count)?;
        self.balloon.check_inflate(&list)?;
        self.inflate(&list)?;
        self.balloon_record(true, count);
        Ok(count)
    }

    /// BALLOON_DEFLATE: the guest takes back the ballooned pages listed at `gpa`, each with a
    /// zeroed frame, if the host can back them all now.
    pub fn balloon_deflate(&mut self, gpa: u64, count: u32) -> Result<u32, BalloonFailure> {
        let list = self.page_list(gpa, count)?;
        self.balloon.check_deflate(&list)?;
        if memory::guest_pages_available() < u64::from(count) {
            return Err(HypercallError::NoMemory.into());
        }
        for &page in &list {
            let page = u64::from(page);
            let frame = self
                .memory
                .back(page)
                .ok_or(BalloonFailure::Call(HypercallError::NoMemory))?;
            self.ept
                .map_4k(
                    GuestPhysAddr(page * PAGE_SIZE),
                    frame,
                    Permissions::READ_WRITE_EXECUTE,
                    &mut HostFrames,
                )
                .map_err(|error| BalloonFailure::Hypervisor(alloc::format!("{error}")))?;
        }
        self.balloon.deflated(&list);
        self.balloon_record(false, count);
        Ok(count)
    }

    /// Unmaps and frees the listed pages (checked already), then INVEPT: the CPU may hold
    /// their translations.
    fn inflate(&mut self, list: &[u32]) -> Result<(), BalloonFailure> {
        for &page in list {
            let page = u64::from(page);
            self.ept
                .unmap_4k(GuestPhysAddr(page * PAGE_SIZE), &mut HostFrames);
            self.memory.unback(page);
            self.memory.forget_lazy(page);
        }
        // SAFETY: the pointer is this VM's own EPT, as loaded into its VMCS.
        unsafe { vmx::invept_single_context(self.eptp) }
            .map_err(|error| BalloonFailure::Hypervisor(alloc::format!("INVEPT: {error}")))?;
        self.balloon.inflated(list);
        Ok(())
    }

    /// The page list of a balloon call: `count` 32-bit page numbers at `gpa`.
    fn page_list(&self, gpa: u64, count: u32) -> Result<Vec<u32>, BalloonFailure> {
        if count == 0 || count > hypercall::BALLOON_BATCH_MAX {
            return Err(HypercallError::InvalidArgument.into());
        }
        let mut bytes = alloc::vec![0u8; count as usize * 4];
        if !self.memory.read(gpa, &mut bytes) {
            return Err(HypercallError::BadAddress.into());
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
            .collect())
    }

    fn balloon_record(&self, inflate: bool, pages: u32) {
        // Rare, and the memory table adds them up: waits for room rather than dropping.
        export::emit(Record::Balloon {
            tsc: arch::rdtsc(),
            vm: self.id,
            inflate,
            pages,
            ballooned: self.balloon.count(),
            target: self.balloon.target,
        });
    }

    /// The VPID tagging this VM's TLB entries.
    pub fn vpid(&self) -> u16 {
        self.id + 1
    }

    /// Makes this VM's VMCS the current one (before any VMREAD/VMWRITE for it).
    pub fn make_current(&self) -> Result<(), VmFail> {
        // SAFETY: the VMCS was initialised in `new` and is only ever loaded on this CPU.
        unsafe { vmx::vmptrld(self.vmcs) }
    }

    /// Enters the guest until the next VM exit. The VMCS must be current.
    pub fn enter(&mut self) -> Result<(), VmFail> {
        // SAFETY: this VM's VMCS is current (the run loop calls make_current first) and holds
        // a complete host and guest state; `regs` is this VM's register file.
        let result = unsafe { vmx::enter(&mut self.regs, self.launched) };
        if result.is_ok() {
            self.launched = true;
        }
        result
    }

    /// Takes the VM out of the run and says so on COM1 and COM2.
    pub fn stop(&mut self, reason: StopReason) {
        self.platform.console.flush();
        log::info!("vm {} stopped: {reason}", self.name);
        export::emit(Record::VmStopped {
            tsc: arch::rdtsc(),
            vm: self.id,
            reason: reason.clone(),
        });
        self.state = RunState::Stopped(reason);
    }
}

impl Vm {
    /// When this blocked VM may next wake (None: not blocked, or nothing can wake it by itself).
    pub fn wake_deadline(&self) -> Option<u64> {
        let RunState::Blocked { interrupts, .. } = self.state else {
            return None;
        };
        let lapic = if interrupts {
            self.platform.next_deadline()
        } else {
            None
        };
        self.timer_deadline.into_iter().chain(lapic).min()
    }

    /// Idle detection: the VM has spent `threshold` guest cycles in its idle address space
    /// (without loading another) and has no interrupt to take. A guest that never halts (xv6)
    /// is then treated as halted with interrupts enabled: it runs again at its next interrupt.
    pub fn looks_idle(&self, threshold: u64) -> bool {
        self.spaces
            .idle_for()
            .is_some_and(|spent| spent >= threshold)
            && self.platform.lapic.pending_vector().is_none()
    }

    /// True when this VM halted with interrupts enabled (an interrupt, even console input,
    /// wakes it).
    pub fn waits_for_interrupt(&self) -> bool {
        matches!(
            self.state,
            RunState::Blocked {
                interrupts: true,
                ..
            }
        )
    }

    /// True when this VM halted with interrupts enabled and now has one to take.
    pub fn interrupt_waiting(&self) -> bool {
        self.waits_for_interrupt() && self.platform.lapic.pending_vector().is_some()
    }

    /// If this blocked VM has something to wake for by `now`, the instant of that event.
    pub fn wake_event(&mut self, now: u64) -> Option<u64> {
        let RunState::Blocked { interrupts, .. } = self.state else {
            return None;
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
    /// exiting). See: SDM 27.6 "Event Injection", 26.7.5 "Interrupt-Window Exiting".
    pub fn inject_pending_interrupt(&mut self, now: u64) -> Result<(), VmFail> {
        /// RFLAGS.IF.
        const RFLAGS_IF: u64 = 1 << 9;
        /// Interruptibility: blocking by STI or by MOV SS.
        const BLOCKING: u32 = 0b11;
        /// Interruption information: valid bit; type 0 is an external interrupt.
        const VALID: u32 = 1 << 31;
        self.platform.advance_timer(now);
        let Some(vector) = self.platform.lapic.pending_vector() else {
            return self.set_interrupt_window(false);
        };
        let queued = vmx::vmread32(VM_ENTRY_INTERRUPTION_INFORMATION)? & VALID != 0;
        let open = vmx::vmread_natural(GUEST_RFLAGS)? & RFLAGS_IF != 0
            && vmx::vmread32(GUEST_INTERRUPTIBILITY_STATE)? & BLOCKING == 0;
        if queued || !open {
            return self.set_interrupt_window(true);
        }
        // SAFETY: this VM's VMCS is current; an external interrupt of a vector the guest
        // programmed (the LAPIC only holds those) is a valid event to inject.
        unsafe { vmx::vmwrite32(VM_ENTRY_INTERRUPTION_INFORMATION, u32::from(vector) | VALID)? };
        // The vector came from pending_vector just now, so acknowledging it cannot fail.
        let _ = self.platform.lapic.acknowledge(vector);
        self.set_interrupt_window(false)
    }

    /// Turns interrupt-window exiting on or off (the cached control value spares a VMREAD).
    fn set_interrupt_window(&mut self, on: bool) -> Result<(), VmFail> {
        let bit = PrimaryProcessorBased::INTERRUPT_WINDOW_EXITING.bits();
        let wanted = if on {
            self.primary_controls | bit
        } else {
            self.primary_controls & !bit
        };
        if wanted != self.primary_controls {
            // SAFETY: this VM's VMCS is current; only the interrupt-window bit changes, which
            // the capability MSRs allow (negotiated at VMX start).
            unsafe { vmx::vmwrite32(PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, wanted)? };
            self.primary_controls = wanted;
        }
        Ok(())
    }

    /// Where this VM stands, for the log at the end of a run: the guest's RIP, RFLAGS and
    /// interrupt blocking, an event queued for the next entry, interrupt-window exiting, the
    /// local APIC's requested and in-service vectors, and the disk's interrupt line and status.
    /// A VM stuck waiting for an interrupt shows here why. Makes this VM's VMCS current.
    pub fn state_line(&self) -> String {
        let vectors = |set: carousel_devices::interrupts::VectorSet| {
            (0..=255u8)
                .filter(|&vector| set.contains(vector))
                .collect::<Vec<u8>>()
        };
        let guest = self.make_current().and_then(|()| {
            Ok((
                vmx::vmread_natural(GUEST_RIP)?,
                vmx::vmread_natural(GUEST_RFLAGS)?,
                vmx::vmread32(GUEST_INTERRUPTIBILITY_STATE)?,
                vmx::vmread32(VM_ENTRY_INTERRUPTION_INFORMATION)?,
            ))
        });
        let guest = match guest {
            Ok((rip, rflags, blocking, queued)) => alloc::format!(
                "rip {rip:#x} rflags {rflags:#x} blocking {blocking:#x} queued {queued:#x}"
            ),
            Err(error) => alloc::format!("VMCS unreadable ({error})"),
        };
        let window =
            self.primary_controls & PrimaryProcessorBased::INTERRUPT_WINDOW_EXITING.bits() != 0;
        let lapic = &self.platform.lapic;
        alloc::format!(
            "{guest} window {window} irr {:?} isr {:?} ppr {:#x} ide line {} status {:#x} \
             ioapic pin 14 {:#x}",
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

    /// After a VM exit: an event whose delivery the exit interrupted (IDT-vectoring
    /// information valid) is delivered again at the next entry (SDM 28.2.4 "Information for
    /// VM Exits During Event Delivery").
    pub fn reinject_interrupted_event(&mut self) -> Result<(), VmFail> {
        const VALID: u32 = 1 << 31;
        const ERROR_CODE_VALID: u32 = 1 << 11;
        let vectoring = vmx::vmread32(IDT_VECTORING_INFORMATION)?;
        if vectoring & VALID == 0 {
            return Ok(());
        }
        // SAFETY: this VM's VMCS is current; the event is the one the CPU was delivering.
        unsafe {
            if vectoring & ERROR_CODE_VALID != 0 {
                let code = vmx::vmread32(IDT_VECTORING_ERROR_CODE)?;
                vmx::vmwrite32(VM_ENTRY_EXCEPTION_ERROR_CODE, code)?;
            }
            let length = vmx::vmread32(VM_EXIT_INSTRUCTION_LENGTH)?;
            vmx::vmwrite32(VM_ENTRY_INSTRUCTION_LENGTH, length)?;
            // Bit 12 (NMI unblocking) is reserved in the entry field.
            vmx::vmwrite32(VM_ENTRY_INTERRUPTION_INFORMATION, vectoring & !(1 << 12))?;
        }
        Ok(())
    }
}

fn entry_setup_failed(error: VmFail) -> StopReason {
    load_failed(format_args!("VMCS setup failed: {error}"))
}

/// Access rights (SDM 25.4.1 "Guest Register State", Table 25-2): flat 32-bit code, execute/read,
/// accessed, present, DPL 0, 4 KiB granularity.
const CODE32_ACCESS: u32 = 0xC09B;
/// Flat 32-bit data, read/write, accessed, present, DPL 0.
const DATA32_ACCESS: u32 = 0xC093;
/// Busy 32-bit TSS, present: TR must be usable at VM entry (SDM 27.3.1.2).
const TSS32_BUSY_ACCESS: u32 = 0x008B;
/// Segment-unusable bit.
const UNUSABLE: u32 = 1 << 16;
/// CR0.PE | CR0.ET: protected mode, paging off (the multiboot machine state).
const GUEST_CR0_AT_ENTRY: u64 = 0x11;
/// RFLAGS bit 1 is always set; IF = 0.
const RFLAGS_RESERVED: u64 = 0x2;

/// Guest state of a multiboot entry (Multiboot 0.6.96, 3.2 "Machine state"; xv6 also needs
/// CS = 0x08 and DS/ES/SS = 0x10, XV6-CONTRACT 1.3).
///
/// # Safety
/// The VM's VMCS must be current.
unsafe fn write_guest_entry_state(entry: u64) -> Result<(), VmFail> {
    // SAFETY: the caller made this VM's VMCS current; these are guest-state fields only.
    unsafe {
        vmx::vmwrite16(GUEST_CS_SELECTOR, 0x08)?;
        vmx::vmwrite32(GUEST_CS_ACCESS_RIGHTS, CODE32_ACCESS)?;
        for (selector, access) in [
            (GUEST_DS_SELECTOR, GUEST_DS_ACCESS_RIGHTS),
            (GUEST_ES_SELECTOR, GUEST_ES_ACCESS_RIGHTS),
            (GUEST_SS_SELECTOR, GUEST_SS_ACCESS_RIGHTS),
            (GUEST_FS_SELECTOR, GUEST_FS_ACCESS_RIGHTS),
            (GUEST_GS_SELECTOR, GUEST_GS_ACCESS_RIGHTS),
        ] {
            vmx::vmwrite16(selector, 0x10)?;
            vmx::vmwrite32(access, DATA32_ACCESS)?;
        }
        for (base, limit) in [
            (GUEST_CS_BASE, GUEST_CS_LIMIT),
            (GUEST_DS_BASE, GUEST_DS_LIMIT),
            (GUEST_ES_BASE, GUEST_ES_LIMIT),
            (GUEST_SS_BASE, GUEST_SS_LIMIT),
            (GUEST_FS_BASE, GUEST_FS_LIMIT),
            (GUEST_GS_BASE, GUEST_GS_LIMIT),
        ] {
            vmx::vmwrite_natural(base, 0)?;
            vmx::vmwrite32(limit, 0xFFFF_FFFF)?;
        }
        vmx::vmwrite16(GUEST_LDTR_SELECTOR, 0)?;
        vmx::vmwrite_natural(GUEST_LDTR_BASE, 0)?;
        vmx::vmwrite32(GUEST_LDTR_LIMIT, 0)?;
        vmx::vmwrite32(GUEST_LDTR_ACCESS_RIGHTS, UNUSABLE)?;
        vmx::vmwrite16(GUEST_TR_SELECTOR, 0)?;
        vmx::vmwrite_natural(GUEST_TR_BASE, 0)?;
        vmx::vmwrite32(GUEST_TR_LIMIT, 0x67)?;
        vmx::vmwrite32(GUEST_TR_ACCESS_RIGHTS, TSS32_BUSY_ACCESS)?;
        vmx::vmwrite_natural(GUEST_GDTR_BASE, 0)?;
        vmx::vmwrite32(GUEST_GDTR_LIMIT, 0xFFFF)?;
        vmx::vmwrite_natural(GUEST_IDTR_BASE, 0)?;
        vmx::vmwrite32(GUEST_IDTR_LIMIT, 0xFFFF)?;

        vmx::vmwrite_natural(GUEST_CR0, GUEST_CR0_AT_ENTRY | crate::vmm::CR0_NE)?;
        vmx::vmwrite_natural(CR0_READ_SHADOW, GUEST_CR0_AT_ENTRY)?;
        vmx::vmwrite_natural(GUEST_CR3, 0)?;
        vmx::vmwrite_natural(GUEST_CR4, crate::vmm::CR4_VMXE)?;
        vmx::vmwrite_natural(CR4_READ_SHADOW, 0)?;
        vmx::vmwrite_natural(GUEST_DR7, 0x400)?;
        vmx::vmwrite_natural(GUEST_RSP, 0)?;
        vmx::vmwrite_natural(GUEST_RIP, entry)?;
        vmx::vmwrite_natural(GUEST_RFLAGS, RFLAGS_RESERVED)?;
        vmx::vmwrite64(GUEST_IA32_EFER, 0)?;
        vmx::vmwrite64(GUEST_IA32_DEBUGCTL, 0)?;
        vmx::vmwrite32(GUEST_IA32_SYSENTER_CS, 0)?;
        vmx::vmwrite_natural(GUEST_IA32_SYSENTER_ESP, 0)?;
        vmx::vmwrite_natural(GUEST_IA32_SYSENTER_EIP, 0)?;
        vmx::vmwrite_natural(GUEST_PENDING_DEBUG_EXCEPTIONS, 0)?;
        vmx::vmwrite32(GUEST_INTERRUPTIBILITY_STATE, 0)?;
        vmx::vmwrite32(GUEST_ACTIVITY_STATE, 0)?;
        vmx::vmwrite64(VMCS_LINK_POINTER, u64::MAX)?;
        vmx::vmwrite32(VM_ENTRY_INTERRUPTION_INFORMATION, 0)?;
    }
    Ok(())
}

/// Guest-physical address in this VM's RAM: the check every hypercall argument goes through.
pub fn in_ram(vm: &Vm, gpa: u64, len: u64) -> bool {
    carousel_kernel::range_in_ram(gpa, len, carousel_kernel::GuestRam::size(&vm.memory))
}

/// Writes what the firmware would leave in low memory for xv6: the BIOS data area words and
/// the MP floating pointer and configuration table (XV6-CONTRACT §2).
fn write_low_memory_tables(memory: &mut GuestMemory) -> Result<(), mptable::MpTableError> {
    for word in bda_words(EBDA_SEGMENT, BASE_MEMORY_KIB)? {
        memory.write(u64::from(word.gpa), &word.bytes());
    }
    let tables = mp_tables(IOAPIC_ID, CONFIG_TABLE_GPA)?;
    memory.write(
        u64::from(mptable::FLOATING_POINTER_GPA),
        &tables.floating_pointer,
    );
    memory.write(u64::from(CONFIG_TABLE_GPA), &tables.config_table);
    Ok(())
}

/// The frame every VM's local APIC page maps read-only: ID 0, the version, and an ICR low
/// word with delivery status clear, the only registers xv6 reads (XV6-CONTRACT §3). Reads
/// never exit; writes exit as EPT violations and reach the LAPIC model.
fn lapic_constant_page() -> Option<HostPhysAddr> {
    static PAGE: spin::Once<Option<HostPhysAddr>> = spin::Once::new();
    *PAGE.call_once(|| {
        let frame = memory::allocate_frame()?;
        let bytes = memory::frame_bytes(frame);
        let version = carousel_devices::lapic::VERSION_VALUE.to_le_bytes();
        bytes[carousel_devices::lapic::VERSION as usize..][..4].copy_from_slice(&version);
        Some(frame)
    })
}
