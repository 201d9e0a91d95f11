//! What each VM exit means: the run loop reads the raw exit fields, `carousel_vmx::exit::decode`
//! turns them into a [`VmExit`], and [`handle`] acts on it.

use alloc::string::String;

use carousel_protocol::hypercall::{self, Error as HypercallError};
use carousel_protocol::record::{Record, StopReason};
use carousel_vmx::exit::{self, Direction, IoQualification, RawExit, VmExit};
use carousel_vmx::fail::VmFail;
use carousel_vmx::fields::*;
use carousel_vmx::instructions as vmx;

use crate::vm::{self, PortDevice, RunState, Vm};
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
    let rip = vmx::vmread_natural(GUEST_RIP)?;
    let decoded = exit::decode(raw);
    let next = match decoded {
        // The slice or another VM's wake-up deadline: the run loop tells which.
        VmExit::PreemptionTimer => Next::Resume,
        // A host interrupt (acknowledged on exit): the host masks its PIC, so nothing should
        // arrive; if something does, it is not the guest's.
        VmExit::ExternalInterrupt => Next::Resume,
        VmExit::Cpuid => {
            cpuid(vm);
            skip_instruction(raw, rip)?;
            Next::Resume
        }
        VmExit::Io(io) => match port_io(vm, &io) {
            Ok(()) => {
                skip_instruction(raw, rip)?;
                Next::Resume
            }
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
            // A HLT whose wake-up is already due just continues.
            if vm
                .timer_deadline
                .is_some_and(|deadline| deadline <= arch::rdtsc())
            {
                vm.timer_deadline = None;
                Next::Resume
            } else {
                vm.state = RunState::Blocked { rip };
                Next::Leave
            }
        }
        VmExit::Rdmsr | VmExit::Wrmsr => {
            if msr_access(vm, matches!(decoded, VmExit::Wrmsr))? {
                skip_instruction(raw, rip)?;
            } else {
                inject_general_protection()?;
            }
            Next::Resume
        }
        VmExit::EptViolation { gpa, .. } => stop(
            vm,
            StopReason::EptViolation {
                gpa: gpa.as_u64(),
                rip,
                qualification: raw.qualification,
            },
        ),
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
/// SDM 28.2.5 "Information for VM Exits Due to Instruction Execution").
fn skip_instruction(raw: &RawExit, rip: u64) -> Result<(), VmFail> {
    // SAFETY: the VM's VMCS is current; advancing RIP by the exiting instruction's length is
    // what the instruction's completion would have done.
    unsafe { vmx::vmwrite_natural(GUEST_RIP, rip + u64::from(raw.instruction_length)) }
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

/// One IN or OUT. Ports no device claims read as all ones and ignore writes, as on a bus with
/// nothing attached.
fn port_io(vm: &mut Vm, io: &IoQualification) -> Result<(), StopReason> {
    if io.string {
        return Err(StopReason::UnhandledExit {
            reason: exit::BasicExitReason::IoInstruction.number(),
            rip: 0,
            qualification: u64::from(io.port),
        });
    }
    let mask = match io.size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    };
    let device = vm.ports.lookup(io.port);
    match io.direction {
        Direction::In => {
            let value = match device {
                Some((PortDevice::Com1, offset)) => {
                    u64::from(vm.com1.read(offset as u8, &mut vm.com1_irq))
                }
                None => mask,
            };
            vm.regs.rax = (vm.regs.rax & !mask) | (value & mask);
        }
        Direction::Out => {
            if let Some((PortDevice::Com1, offset)) = device {
                vm.com1.write(
                    offset as u8,
                    vm.regs.rax as u8,
                    &mut vm.console,
                    &mut vm.com1_irq,
                );
            }
        }
    }
    Ok(())
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
            carousel_devices::SerialSink::transmit(&mut vm.console, byte);
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
    export::emit(Record::GuestMetric {
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
