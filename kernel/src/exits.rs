//! What each VM exit means: the run loop reads the raw exit fields, `carousel_vmx::exit::decode`
//! turns them into a [`VmExit`], and [`handle`] acts on it.

use alloc::string::String;

use carousel_protocol::hypercall::{self, Error as HypercallError};
use carousel_protocol::record::{Record, StopReason};
use carousel_vmx::exit::{
    self, CrAccess, CrAccessQualification, Direction, IoQualification, RawExit, VmExit,
};
use carousel_vmx::fail::VmFail;
use carousel_vmx::fields::*;
use carousel_vmx::instructions as vmx;

use carousel_kernel::mmio::{self, Gpr, Registers};
use carousel_kernel::paging::{self, PagingMode, WalkError};
use carousel_kernel::{GuestRam, PAGE_SIZE};

use crate::memory::{self, GuestMemory};
use crate::platform::{Mmio, Platform};
use crate::vm::{self, BalloonFailure, RunState, Vm};
use crate::{arch, export};

/// What the run loop does after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The VM can go on (whether its slice has time left is the run loop's business).
    Resume,
    /// The VM blocked or stopped: pick the next VM.
    Leave,
}

/// Handles one exit of `vm`, whose VMCS is current.
pub fn handle(vm: &mut Vm, raw: &RawExit) -> Result<Next, VmFail> {
    let decoded = exit::decode(raw);
    match decoded {
        // The slice or another VM's wake-up deadline: the run loop tells which. The commonest
        // exit of all (every switch ends with one), so it returns before reading anything.
        VmExit::PreemptionTimer => return Ok(Next::Resume),
        // A host interrupt (acknowledged on exit): the host masks its PIC, so nothing should
        // arrive; if something does, it is not the guest's.
        VmExit::ExternalInterrupt => return Ok(Next::Resume),
        _ => {}
    }
    let rip = vmx::vmread_natural(GUEST_RIP)?;
    let next = match decoded {
        VmExit::PreemptionTimer | VmExit::ExternalInterrupt => Next::Resume,
        VmExit::Cpuid => {
            cpuid(vm);
            skip_instruction(raw, rip)?;
            Next::Resume
        }
        VmExit::Io(io) => match port_io(vm, &io, raw) {
            Ok(Progress::Done) => {
                skip_instruction(raw, rip)?;
                Next::Resume
            }
            Ok(Progress::Again) => Next::Resume,
            Err(reason) => stop(vm, reason),
        },
        VmExit::Vmcall => match vmcall(vm) {
            Some(reason) => stop(vm, reason),
            None => {
                skip_instruction(raw, rip)?;
                Next::Resume
            }
        },
        VmExit::Hlt => {
            skip_instruction(raw, rip)?;
            /// RFLAGS.IF: an interrupt can end the halt.
            const RFLAGS_IF: u64 = 1 << 9;
            let interrupts = vmx::vmread_natural(GUEST_RFLAGS)? & RFLAGS_IF != 0;
            let now = arch::rdtsc();
            vm.platform.advance_timer(now);
            // A HLT whose wake-up is already due just continues.
            let timer_due = vm.timer_deadline.is_some_and(|deadline| deadline <= now);
            if timer_due || (interrupts && vm.platform.lapic.pending_vector().is_some()) {
                if timer_due {
                    vm.timer_deadline = None;
                }
                Next::Resume
            } else {
                vm.state = RunState::Blocked { rip, interrupts };
                Next::Leave
            }
        }
        VmExit::ControlRegister(access) => match control_register(vm, &access)? {
            Some(reason) => stop(vm, reason),
            None => {
                skip_instruction(raw, rip)?;
                Next::Resume
            }
        },
        // IF went to 1 with a vector pending: the entry path injects it.
        VmExit::InterruptWindow => Next::Resume,
        VmExit::Rdmsr | VmExit::Wrmsr => {
            if msr_access(vm, matches!(decoded, VmExit::Wrmsr))? {
                skip_instruction(raw, rip)?;
            } else {
                inject_general_protection()?;
            }
            Next::Resume
        }
        VmExit::EptViolation { gpa, .. } => match Mmio::at(gpa.as_u64()) {
            Some(device) => match mmio(vm, device, rip) {
                Ok(length) => {
                    // SAFETY: the VM's VMCS is current; the decoded instruction is complete.
                    unsafe { vmx::vmwrite_natural(GUEST_RIP, rip + u64::from(length))? };
                    Next::Resume
                }
                Err(message) => stop(
                    vm,
                    StopReason::BadMmio {
                        gpa: gpa.as_u64(),
                        rip,
                        message,
                    },
                ),
            },
            // The first touch of a lazily backed page: it gets its frame, and the access is
            // retried.
            None if vm.memory.is_lazy(gpa.as_u64() / PAGE_SIZE) => {
                if vm.back_lazy(gpa.as_u64() / PAGE_SIZE) {
                    Next::Resume
                } else {
                    stop(
                        vm,
                        StopReason::OutOfMemory {
                            gpa: gpa.as_u64(),
                            rip,
                        },
                    )
                }
            }
            // A write to a merged page: it gets its own copy, and the write is retried.
            None if vm.memory.is_shared(gpa.as_u64() / PAGE_SIZE) => {
                match crate::merge::copy_on_write(&mut vm.memory, gpa.as_u64() / PAGE_SIZE) {
                    Ok(()) => {
                        vm.sync_ept()?;
                        Next::Resume
                    }
                    Err(_) => stop(
                        vm,
                        StopReason::OutOfMemory {
                            gpa: gpa.as_u64(),
                            rip,
                        },
                    ),
                }
            }
            None if vm.balloon.contains(gpa.as_u64() / PAGE_SIZE) => stop(
                vm,
                StopReason::BalloonedPageTouched {
                    gpa: gpa.as_u64(),
                    rip,
                },
            ),
            None => stop(
                vm,
                StopReason::EptViolation {
                    gpa: gpa.as_u64(),
                    rip,
                    qualification: raw.qualification,
                },
            ),
        },
        VmExit::TripleFault => stop(vm, StopReason::TripleFault { rip }),
        VmExit::EntryFailure {
            reason,
            qualification,
        } => stop(
            vm,
            StopReason::EntryFailed {
                reason: reason.number(),
                detail: qualification,
            },
        ),
        other => stop(
            vm,
            StopReason::UnhandledExit {
                reason: other.basic_reason().number(),
                rip,
                qualification: raw.qualification,
            },
        ),
    };
    Ok(next)
}

fn stop(vm: &mut Vm, reason: StopReason) -> Next {
    vm.stop(reason);
    Next::Leave
}

/// Moves RIP past the instruction that exited (its length is valid for instruction exits:
/// SDM 28.2.5 "Information for VM Exits Due to Instruction Execution"), and ends any blocking
/// by STI or MOV SS, which covered only that instruction (an `sti; hlt` pair would otherwise
/// keep interrupts blocked after the HLT).
fn skip_instruction(raw: &RawExit, rip: u64) -> Result<(), VmFail> {
    /// Interruptibility state: blocking by STI (bit 0) and by MOV SS (bit 1).
    const BLOCKING: u32 = 0b11;
    let interruptibility = vmx::vmread32(GUEST_INTERRUPTIBILITY_STATE)?;
    // SAFETY: the VM's VMCS is current; advancing RIP by the exiting instruction's length and
    // dropping the one-instruction blocking is what the instruction's completion would do.
    unsafe {
        if interruptibility & BLOCKING != 0 {
            vmx::vmwrite32(GUEST_INTERRUPTIBILITY_STATE, interruptibility & !BLOCKING)?;
        }
        vmx::vmwrite_natural(GUEST_RIP, rip + u64::from(raw.instruction_length))
    }
}

/// CPUID as the guest sees it: the host's answers, with VMX hidden, the hypervisor bit set,
/// and Carousel's signature at the hypervisor leaf.
fn cpuid(vm: &mut Vm) {
    /// CPUID.1:ECX bit 5: VMX.
    const ECX_VMX: u32 = 1 << 5;
    /// CPUID.1:ECX bit 21: x2APIC (not offered: no x2APIC MSRs are emulated).
    const ECX_X2APIC: u32 = 1 << 21;
    /// CPUID.1:ECX bit 31: running under a hypervisor.
    const ECX_HYPERVISOR: u32 = 1 << 31;
    let (leaf, subleaf) = (vm.regs.rax as u32, vm.regs.rcx as u32);
    let [eax, ebx, ecx, edx] = match leaf {
        1 => {
            let [eax, ebx, ecx, edx] = arch::cpuid(1, 0);
            [
                eax,
                ebx,
                (ecx & !(ECX_VMX | ECX_X2APIC)) | ECX_HYPERVISOR,
                edx,
            ]
        }
        hypercall::CPUID_HYPERVISOR_LEAF => {
            let word = |i: usize| {
                u32::from_le_bytes(
                    hypercall::CPUID_SIGNATURE[i..i + 4]
                        .try_into()
                        .unwrap_or([0; 4]),
                )
            };
            [hypercall::CPUID_HYPERVISOR_LEAF, word(0), word(4), word(8)]
        }
        0x4000_0001..=0x4FFF_FFFF => [0; 4],
        _ => arch::cpuid(leaf, subleaf),
    };
    vm.regs.rax = u64::from(eax);
    vm.regs.rbx = u64::from(ebx);
    vm.regs.rcx = u64::from(ecx);
    vm.regs.rdx = u64::from(edx);
}

/// Whether an emulated instruction finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Move RIP past it.
    Done,
    /// A `rep` string instruction with work left: leave RIP on it, the CPU executes it again
    /// with the updated count.
    Again,
}

/// One IN or OUT (string forms included), through the VM's platform.
fn port_io(vm: &mut Vm, io: &IoQualification, raw: &RawExit) -> Result<Progress, StopReason> {
    if io.string {
        return string_io(vm, io, raw);
    }
    let mask = size_mask(io.size);
    match io.direction {
        Direction::In => {
            let value = u64::from(vm.platform.port_in(io.port, io.size));
            vm.regs.rax = (vm.regs.rax & !mask) | (value & mask);
        }
        Direction::Out => vm.platform.port_out(io.port, io.size, vm.regs.rax as u32),
    }
    Ok(Progress::Done)
}

/// The low `size` bytes of a register.
fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// Most bytes one string I/O exit moves; a longer `rep` resumes where it stopped.
const STRING_IO_CHUNK: usize = 4096;

/// INS/OUTS, with or without REP, served in one exit: xv6's `rep insl` of 128 dwords from the
/// IDE data port is one block transfer (XV6-CONTRACT §8). The buffer is the guest's linear
/// address from the exit information, translated through its page tables.
fn string_io(vm: &mut Vm, io: &IoQualification, raw: &RawExit) -> Result<Progress, StopReason> {
    /// RFLAGS.DF: string instructions run backwards.
    const RFLAGS_DF: u64 = 1 << 10;
    let bad = |message: &str| StopReason::VmxError {
        message: alloc::format!("string I/O on port {:#x}: {message}", io.port),
    };
    let view = GuestView::read().map_err(|error| bad(&alloc::format!("{error}")))?;
    if view.rflags & RFLAGS_DF != 0 {
        return Err(bad("backwards (RFLAGS.DF = 1) is not supported"));
    }
    // VM-exit instruction information bits 9:7: address size (SDM 28.2.5, Table 28-8).
    let address_mask = match (raw.instruction_info >> 7) & 7 {
        0 => 0xFFFF,
        1 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    let size = usize::from(io.size);
    let count = if io.rep {
        (vm.regs.rcx & address_mask) as usize
    } else {
        1
    };
    let elements = count.min(STRING_IO_CHUNK / size);
    let bytes = elements * size;
    let mut buffer = [0u8; STRING_IO_CHUNK];
    let buffer = &mut buffer[..bytes];
    match io.direction {
        Direction::In => {
            if Platform::is_ide_data(io.port) {
                vm.platform.ide_read_block(buffer);
            } else {
                for element in buffer.chunks_mut(size) {
                    let value = vm.platform.port_in(io.port, io.size).to_le_bytes();
                    element.copy_from_slice(&value[..size]);
                }
            }
            view.write_linear(&mut vm.memory, raw.guest_linear, buffer)
                .map_err(|error| bad(&alloc::format!("{error}")))?;
            vm.regs.rdi = (vm.regs.rdi & !address_mask)
                | (vm.regs.rdi.wrapping_add(bytes as u64) & address_mask);
        }
        Direction::Out => {
            paging::read_linear(view.mode, view.cr3, raw.guest_linear, buffer, &vm.memory)
                .map_err(|error| bad(&alloc::format!("{error}")))?;
            if Platform::is_ide_data(io.port) {
                vm.platform.ide_write_block(buffer);
            } else {
                for element in buffer.chunks(size) {
                    let mut value = [0u8; 4];
                    value[..size].copy_from_slice(element);
                    vm.platform
                        .port_out(io.port, io.size, u32::from_le_bytes(value));
                }
            }
            vm.regs.rsi = (vm.regs.rsi & !address_mask)
                | (vm.regs.rsi.wrapping_add(bytes as u64) & address_mask);
        }
    }
    if io.rep {
        let left = (vm.regs.rcx & address_mask) - elements as u64;
        vm.regs.rcx = (vm.regs.rcx & !address_mask) | left;
        if left > 0 {
            // Not done: leave RIP on the instruction, which resumes with the registers as
            // they now stand.
            return Ok(Progress::Again);
        }
    }
    Ok(Progress::Done)
}

/// VMCALL: EAX = number, EBX/ECX/EDX/ESI = arguments, EAX = result. Returns a stop reason
/// when the call ends the VM.
fn vmcall(vm: &mut Vm) -> Option<StopReason> {
    let (number, b, c, d) = (
        vm.regs.rax as u32,
        vm.regs.rbx as u32,
        vm.regs.rcx as u32,
        vm.regs.rdx as u32,
    );
    let result: Result<u32, HypercallError> = match number {
        hypercall::CONSOLE_WRITE => console_write(vm, u64::from(b), c),
        hypercall::EXIT => return Some(StopReason::Exited { status: b }),
        hypercall::VERSION => Ok(u32::from(carousel_protocol::FORMAT_VERSION)),
        hypercall::CHECK => check(vm, u64::from(b), c, d),
        hypercall::METRIC => metric(
            vm,
            u64::from(b),
            c,
            (u64::from(vm.regs.rsi as u32) << 32) | u64::from(d),
        ),
        hypercall::SET_TIMER => {
            let deadline = (u64::from(c) << 32) | u64::from(b);
            vm.timer_deadline = (deadline != 0).then_some(deadline);
            Ok(0)
        }
        hypercall::TSC_KHZ => {
            u32::try_from(vm.tsc_hz / 1000).map_err(|_| HypercallError::InvalidArgument)
        }
        hypercall::BALLOON_TARGET => {
            vm.balloon_driver = true;
            Ok(vm.balloon.target as u32)
        }
        hypercall::BALLOON_INFLATE | hypercall::BALLOON_DEFLATE => {
            let done = if number == hypercall::BALLOON_INFLATE {
                vm.balloon_inflate(u64::from(b), c)
            } else {
                vm.balloon_deflate(u64::from(b), c)
            };
            match done {
                Ok(count) => Ok(count),
                Err(BalloonFailure::Call(error)) => Err(error),
                Err(BalloonFailure::Hypervisor(message)) => {
                    return Some(StopReason::VmxError { message })
                }
            }
        }
        hypercall::BALLOON_STATS => match b {
            0 => Ok(vm.balloon.count() as u32),
            1 => Ok((vm.memory.size() / PAGE_SIZE) as u32),
            2 => Ok(memory::guest_pages_available().min(u64::from(u32::MAX >> 1)) as u32),
            _ => Err(HypercallError::InvalidArgument),
        },
        _ => Err(HypercallError::UnknownCall),
    };
    vm.regs.rax = u64::from(result.unwrap_or_else(HypercallError::as_eax));
    None
}

fn console_write(vm: &mut Vm, gpa: u64, len: u32) -> Result<u32, HypercallError> {
    if len > hypercall::CONSOLE_WRITE_MAX {
        return Err(HypercallError::InvalidArgument);
    }
    if !vm::in_ram(vm, gpa, u64::from(len)) {
        return Err(HypercallError::BadAddress);
    }
    // Copied through a small buffer: a 4 KiB one would cost its zeroing on every call.
    let mut buffer = [0u8; 128];
    for offset in (0..u64::from(len)).step_by(buffer.len()) {
        let chunk = &mut buffer[..(u64::from(len) - offset).min(128) as usize];
        vm.memory.read(gpa + offset, chunk);
        for &byte in chunk.iter() {
            carousel_devices::SerialSink::transmit(&mut vm.platform.console, byte);
        }
    }
    Ok(len)
}

/// Reads a name argument (CHECK, METRIC) from guest RAM.
fn read_name(vm: &Vm, gpa: u64, len: u32) -> Result<String, HypercallError> {
    if len > hypercall::CHECK_NAME_MAX {
        return Err(HypercallError::InvalidArgument);
    }
    let mut buffer = [0u8; hypercall::CHECK_NAME_MAX as usize];
    let bytes = &mut buffer[..len as usize];
    if !vm.memory.read(gpa, bytes) {
        return Err(HypercallError::BadAddress);
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn check(vm: &mut Vm, gpa: u64, len: u32, passed: u32) -> Result<u32, HypercallError> {
    if passed > 1 {
        return Err(HypercallError::InvalidArgument);
    }
    let name = read_name(vm, gpa, len)?;
    export::emit(Record::Check {
        tsc: arch::rdtsc(),
        vm: vm.id,
        name,
        passed: passed == 1,
    });
    Ok(0)
}

fn metric(vm: &mut Vm, gpa: u64, len: u32, value: u64) -> Result<u32, HypercallError> {
    let name = read_name(vm, gpa, len)?;
    export::emit_or_drop(Record::GuestMetric {
        tsc: arch::rdtsc(),
        vm: vm.id,
        name,
        value,
    });
    Ok(0)
}

/// RDMSR/WRMSR. Only IA32_EFER is the guest's (kept in the VMCS); any other MSR raises #GP in
/// the guest, as on a CPU without it. Returns false when #GP is due.
fn msr_access(vm: &mut Vm, write: bool) -> Result<bool, VmFail> {
    /// EFER bits a guest may set: SCE (0), LME (8), NXE (11).
    const EFER_WRITABLE: u64 = (1 << 0) | (1 << 8) | (1 << 11);
    /// EFER.LMA (10): maintained by the CPU, read-only to software.
    const EFER_LMA: u64 = 1 << 10;
    if vm.regs.rcx as u32 != arch::IA32_EFER {
        return Ok(false);
    }
    let current = vmx::vmread64(GUEST_IA32_EFER)?;
    if write {
        let value = (vm.regs.rdx << 32) | (vm.regs.rax & 0xFFFF_FFFF);
        if value & !(EFER_WRITABLE | EFER_LMA) != 0 {
            return Ok(false);
        }
        // SAFETY: the VM's VMCS is current; the value only has bits a guest may own, LMA kept.
        unsafe {
            vmx::vmwrite64(
                GUEST_IA32_EFER,
                (value & EFER_WRITABLE) | (current & EFER_LMA),
            )?
        };
    } else {
        vm.regs.rax = current & 0xFFFF_FFFF;
        vm.regs.rdx = current >> 32;
    }
    Ok(true)
}

/// Queues #GP(0) for delivery at the next VM entry (SDM 27.6 "Event Injection").
fn inject_general_protection() -> Result<(), VmFail> {
    /// Vector 13, type 3 (hardware exception), deliver error code, valid.
    const GP_INJECTION: u32 = 13 | (3 << 8) | (1 << 11) | (1 << 31);
    // SAFETY: the VM's VMCS is current; a #GP with error code 0 is a valid event to inject.
    unsafe {
        vmx::vmwrite32(VM_ENTRY_EXCEPTION_ERROR_CODE, 0)?;
        vmx::vmwrite32(VM_ENTRY_INTERRUPTION_INFORMATION, GP_INJECTION)
    }
}

/// The guest's view of memory: what the exit handlers need to follow its linear addresses.
pub struct GuestView {
    pub mode: PagingMode,
    pub cr3: u64,
    pub rflags: u64,
}

impl GuestView {
    /// Reads the paging state of the VM whose VMCS is current.
    pub fn read() -> Result<Self, VmFail> {
        let cr0 = vmx::vmread_natural(GUEST_CR0)?;
        let cr4 = vmx::vmread_natural(GUEST_CR4)?;
        let efer = vmx::vmread64(GUEST_IA32_EFER)?;
        Ok(Self {
            mode: PagingMode::from_registers(cr0, cr4, efer),
            cr3: vmx::vmread_natural(GUEST_CR3)?,
            rflags: vmx::vmread_natural(GUEST_RFLAGS)?,
        })
    }

    /// Copies `data` to guest linear memory at `linear`, page by page.
    fn write_linear(
        &self,
        memory: &mut GuestMemory,
        linear: u64,
        data: &[u8],
    ) -> Result<(), WalkError> {
        let mut done = 0;
        while done < data.len() {
            let at = linear.wrapping_add(done as u64);
            let chunk = (PAGE_SIZE - at % PAGE_SIZE).min((data.len() - done) as u64) as usize;
            let gpa = paging::translate(self.mode, self.cr3, at, memory)?;
            if !carousel_kernel::range_in_ram(gpa, chunk as u64, memory.size()) {
                return Err(WalkError::DataOutsideRam { gpa });
            }
            memory.write(gpa, &data[done..done + chunk]);
            done += chunk;
        }
        Ok(())
    }
}

/// The guest's registers as the instruction emulator sees them (RSP lives in the VMCS).
struct EmulatedRegisters<'a> {
    regs: &'a mut vmx::GuestRegisters,
    rsp: u64,
}

impl Registers for EmulatedRegisters<'_> {
    fn get(&self, gpr: Gpr) -> u64 {
        let r = &self.regs;
        match gpr {
            Gpr::Rax => r.rax,
            Gpr::Rcx => r.rcx,
            Gpr::Rdx => r.rdx,
            Gpr::Rbx => r.rbx,
            Gpr::Rsp => self.rsp,
            Gpr::Rbp => r.rbp,
            Gpr::Rsi => r.rsi,
            Gpr::Rdi => r.rdi,
            Gpr::R8 => r.r8,
            Gpr::R9 => r.r9,
            Gpr::R10 => r.r10,
            Gpr::R11 => r.r11,
            Gpr::R12 => r.r12,
            Gpr::R13 => r.r13,
            Gpr::R14 => r.r14,
            Gpr::R15 => r.r15,
        }
    }

    fn set(&mut self, gpr: Gpr, value: u64) {
        let r = &mut self.regs;
        let slot = match gpr {
            Gpr::Rax => &mut r.rax,
            Gpr::Rcx => &mut r.rcx,
            Gpr::Rdx => &mut r.rdx,
            Gpr::Rbx => &mut r.rbx,
            Gpr::Rsp => &mut self.rsp,
            Gpr::Rbp => &mut r.rbp,
            Gpr::Rsi => &mut r.rsi,
            Gpr::Rdi => &mut r.rdi,
            Gpr::R8 => &mut r.r8,
            Gpr::R9 => &mut r.r9,
            Gpr::R10 => &mut r.r10,
            Gpr::R11 => &mut r.r11,
            Gpr::R12 => &mut r.r12,
            Gpr::R13 => &mut r.r13,
            Gpr::R14 => &mut r.r14,
            Gpr::R15 => &mut r.r15,
        };
        *slot = value;
    }
}

/// An access to the local or I/O APIC page: fetch the instruction at RIP through the guest's
/// page tables, decode it (iced-x86), and perform it on the device model. Returns the
/// instruction's length.
fn mmio(vm: &mut Vm, device: Mmio, rip: u64) -> Result<u8, String> {
    /// Segment access rights: L (64-bit code) and D/B (32-bit default) bits.
    const AR_LONG: u32 = 1 << 13;
    const AR_DEFAULT_32: u32 = 1 << 14;
    let fail = |error: &dyn core::fmt::Display| alloc::format!("{error}");
    let view = GuestView::read().map_err(|e| fail(&e))?;
    let cs_base = vmx::vmread_natural(GUEST_CS_BASE).map_err(|e| fail(&e))?;
    let cs_access = vmx::vmread32(GUEST_CS_ACCESS_RIGHTS).map_err(|e| fail(&e))?;
    let bitness = if view.mode == PagingMode::FourLevel64 && cs_access & AR_LONG != 0 {
        64
    } else if cs_access & AR_DEFAULT_32 != 0 {
        32
    } else {
        16
    };
    let mut bytes = [0u8; mmio::MAX_INSTRUCTION_LENGTH];
    let fetched = paging::read_linear_prefix(
        view.mode,
        view.cr3,
        cs_base.wrapping_add(rip),
        &mut bytes,
        &vm.memory,
    )
    .map_err(|e| fail(&e))?;
    let instruction = mmio::decode(&bytes[..fetched], bitness).map_err(|e| fail(&e))?;
    let now = arch::rdtsc();
    let rsp = vmx::vmread_natural(GUEST_RSP).map_err(|e| fail(&e))?;
    let mut regs = EmulatedRegisters {
        regs: &mut vm.regs,
        rsp,
    };
    match mmio::store_value(&instruction, &regs) {
        Some(value) => vm.platform.mmio_write(device, instruction.size, value, now),
        None => {
            let value = vm.platform.mmio_read(device, instruction.size, now);
            mmio::complete_load(&instruction, value, &mut regs);
            if regs.rsp != rsp {
                // SAFETY: the VM's VMCS is current; the guest loaded its own stack pointer.
                unsafe { vmx::vmwrite_natural(GUEST_RSP, regs.rsp).map_err(|e| fail(&e))? };
            }
        }
    }
    Ok(instruction.length)
}

/// MOV to CR0, CR3 or CR4 (the exits the guest/host masks and CR3-load exiting cause).
/// Returns a stop reason for an access Carousel does not emulate.
///
/// - CR3: the VMCS takes the new root, the VPID's cached translations go (a real MOV to CR3
///   flushes them), and the address-space clock moves on.
/// - CR0/CR4: the guest sees its own value (read shadow); the CPU gets it with the bits VMX
///   fixes (SDM 25.6.6 "Guest/Host Masks and Read Shadows for CR0 and CR4"). A CR4 value with
///   a bit this CPU cannot have raises #GP, as it would natively.
fn control_register(
    vm: &mut Vm,
    access: &CrAccessQualification,
) -> Result<Option<StopReason>, VmFail> {
    let CrAccess::MovTo { gpr } = access.access else {
        return Ok(Some(StopReason::UnhandledExit {
            reason: exit::BasicExitReason::ControlRegisterAccesses.number(),
            rip: vmx::vmread_natural(GUEST_RIP)?,
            qualification: u64::from(access.cr),
        }));
    };
    let value = match Gpr::ALL.get(usize::from(gpr)) {
        Some(Gpr::Rsp) => vmx::vmread_natural(GUEST_RSP)?,
        Some(&register) => EmulatedRegisters {
            regs: &mut vm.regs,
            rsp: 0,
        }
        .get(register),
        None => 0,
    };
    let negotiated = vm.negotiated;
    match access.cr {
        // SAFETY: the VM's VMCS is current; the new root is the guest's own value (EPT keeps it
        // inside its memory), and flushing its VPID only drops cached translations.
        3 => unsafe {
            vmx::vmwrite_natural(GUEST_CR3, value)?;
            vmx::invvpid_single_context(vm.vpid())?;
            vm.spaces.load(value);
        },
        // SAFETY: the VM's VMCS is current; the guest sees its own CR0 and the CPU gets it with
        // the bits VMX operation fixes.
        0 => unsafe {
            vmx::vmwrite_natural(CR0_READ_SHADOW, value)?;
            vmx::vmwrite_natural(GUEST_CR0, negotiated.fixed_cr0(value))?;
        },
        4 => {
            if value & !negotiated.cr4_fixed1 & !crate::vmm::CR4_VMXE != 0 {
                inject_general_protection()?;
                return Ok(None);
            }
            // SAFETY: the VM's VMCS is current; the value has only bits this CPU allows, and the
            // CPU gets it with the bits VMX operation fixes.
            unsafe {
                vmx::vmwrite_natural(CR4_READ_SHADOW, value)?;
                vmx::vmwrite_natural(GUEST_CR4, negotiated.fixed_cr4(value))?;
            }
        }
        cr => {
            return Ok(Some(StopReason::UnhandledExit {
                reason: exit::BasicExitReason::ControlRegisterAccesses.number(),
                rip: vmx::vmread_natural(GUEST_RIP)?,
                qualification: u64::from(cr),
            }))
        }
    }
    Ok(None)
}
