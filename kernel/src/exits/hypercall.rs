//! VMCALL: EAX = number, EBX/ECX/EDX/ESI = arguments, EAX = result (negative: an error). Every
//! argument is checked before anything changes; an address range must lie wholly in the
//! calling VM's RAM.

use alloc::string::String;

use carousel_protocol::hypercall::{self, Error as HypercallError};
use carousel_protocol::record::{Record, StopReason};

use super::Context;
use crate::host::Host;
use crate::memory::Frames;
use crate::vcpu::{Vcpu, VcpuError};
use crate::vm::{self, BalloonFailure};
use crate::PAGE_SIZE;

/// How a hypercall ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned (its result is in EAX): move RIP past VMCALL.
    Done,
    /// It raised an exception in the guest instead (RIP stays).
    Fault,
    /// It ends the VM.
    Stop(StopReason),
}

/// Handles the VMCALL of the VM in `cx`.
pub fn hypercall<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
) -> Result<Outcome, VcpuError> {
    let regs = cx.vm.vcpu.registers();
    let (number, b, c, d, si) = (
        regs.rax as u32,
        regs.rbx as u32,
        regs.rcx as u32,
        regs.rdx as u32,
        regs.rsi as u32,
    );
    let result: Result<u32, HypercallError> = match number {
        hypercall::CONSOLE_WRITE => console_write(cx, u64::from(b), c),
        hypercall::EXIT => return Ok(Outcome::Stop(StopReason::Exited { status: b })),
        hypercall::VERSION => Ok(u32::from(carousel_protocol::FORMAT_VERSION)),
        hypercall::CHECK => check(cx, u64::from(b), c, d),
        hypercall::METRIC => metric(cx, u64::from(b), c, (u64::from(si) << 32) | u64::from(d)),
        hypercall::SET_TIMER => {
            let deadline = (u64::from(c) << 32) | u64::from(b);
            cx.vm.timer_deadline = (deadline != 0).then_some(deadline);
            Ok(0)
        }
        hypercall::TSC_KHZ => {
            u32::try_from(cx.vm.tsc_hz / 1000).map_err(|_| HypercallError::InvalidArgument)
        }
        hypercall::BALLOON_TARGET => {
            cx.vm.balloon_driver = true;
            Ok(cx.vm.balloon.target as u32)
        }
        hypercall::BALLOON_INFLATE | hypercall::BALLOON_DEFLATE => {
            let inflate = number == hypercall::BALLOON_INFLATE;
            let done = if inflate {
                cx.vm.balloon_inflate(u64::from(b), c, cx.pool)
            } else {
                cx.vm.balloon_deflate(u64::from(b), c, cx.pool)
            };
            match done {
                Ok(count) => {
                    balloon_record(cx, inflate, count);
                    Ok(count)
                }
                Err(BalloonFailure::Call(error)) => Err(error),
                Err(BalloonFailure::Hypervisor(error)) => {
                    return Ok(Outcome::Stop(StopReason::VmxError {
                        message: alloc::format!("{error}"),
                    }))
                }
            }
        }
        hypercall::BALLOON_STATS => match b {
            0 => Ok(cx.vm.balloon.count() as u32),
            1 => Ok((cx.vm.memory.size() / PAGE_SIZE) as u32),
            2 => Ok(cx
                .pool
                .guest_pages_available()
                .min(u64::from(u32::MAX >> 1)) as u32),
            _ => Err(HypercallError::InvalidArgument),
        },
        _ => Err(HypercallError::UnknownCall),
    };
    cx.vm.vcpu.registers().rax = u64::from(result.unwrap_or_else(HypercallError::as_eax));
    Ok(Outcome::Done)
}

fn console_write<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    gpa: u64,
    len: u32,
) -> Result<u32, HypercallError> {
    if len > hypercall::CONSOLE_WRITE_MAX {
        return Err(HypercallError::InvalidArgument);
    }
    if !vm::in_ram(cx.vm, gpa, u64::from(len)) {
        return Err(HypercallError::BadAddress);
    }
    // Copied through a small buffer: a 4 KiB one would cost its zeroing on every call.
    let mut buffer = [0u8; 128];
    let mut out = super::Output {
        host: cx.host,
        vm: cx.vm.id,
    };
    for offset in (0..u64::from(len)).step_by(buffer.len()) {
        let chunk = &mut buffer[..(u64::from(len) - offset).min(128) as usize];
        if !cx.vm.memory.read(&cx.pool.frames, gpa + offset, chunk) {
            return Err(HypercallError::BadAddress);
        }
        for &byte in chunk.iter() {
            cx.vm.platform.console.transmit(byte, &mut out);
        }
    }
    Ok(len)
}

/// Reads a name argument (CHECK, METRIC) from guest RAM.
fn read_name<V: Vcpu, F: Frames, H>(
    cx: &Context<'_, V, F, H>,
    gpa: u64,
    len: u32,
) -> Result<String, HypercallError> {
    if len > hypercall::CHECK_NAME_MAX {
        return Err(HypercallError::InvalidArgument);
    }
    let mut buffer = [0u8; hypercall::CHECK_NAME_MAX as usize];
    let bytes = &mut buffer[..len as usize];
    if !cx.vm.memory.read(&cx.pool.frames, gpa, bytes) {
        return Err(HypercallError::BadAddress);
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn check<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    gpa: u64,
    len: u32,
    passed: u32,
) -> Result<u32, HypercallError> {
    if passed > 1 {
        return Err(HypercallError::InvalidArgument);
    }
    let name = read_name(cx, gpa, len)?;
    let tsc = cx.host.now();
    cx.host.exporter().emit(&Record::Check {
        tsc,
        vm: cx.vm.id,
        name,
        passed: passed == 1,
    });
    Ok(0)
}

fn metric<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    gpa: u64,
    len: u32,
    value: u64,
) -> Result<u32, HypercallError> {
    let name = read_name(cx, gpa, len)?;
    let tsc = cx.host.now();
    cx.host.exporter().emit_or_drop(&Record::GuestMetric {
        tsc,
        vm: cx.vm.id,
        name,
        value,
    });
    Ok(0)
}

fn balloon_record<V: Vcpu, F, H: Host>(cx: &mut Context<'_, V, F, H>, inflate: bool, pages: u32) {
    let tsc = cx.host.now();
    cx.host.exporter().emit(&Record::Balloon {
        tsc,
        vm: cx.vm.id,
        inflate,
        pages,
        ballooned: cx.vm.balloon.count(),
        target: cx.vm.balloon.target,
    });
}
