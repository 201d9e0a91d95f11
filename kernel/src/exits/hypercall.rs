//! VMCALL: EAX = number, EBX/ECX/EDX/ESI = arguments, EAX = result (negative: an error). Every
//! argument is checked before anything changes; an address range must lie wholly in the
//! calling VM's RAM.

use alloc::string::String;

use carousel_protocol::hypercall::{self, Error as HypercallError};
use carousel_protocol::record::{Record, StopReason};

use super::Context;
use crate::host::Host;
use crate::memory::Frames;
use crate::vcpu::{Event, Reg, Vcpu, VcpuError};
use crate::vm::{self, BalloonFailure};
use crate::PAGE_SIZE;

/// The furthest ahead SET_TIMER may arm the VM's timer, in seconds of TSC time (a longer sleep
/// arms the timer again when it fires).
pub const SET_TIMER_MAX_AHEAD_S: u64 = 60;

/// The most bytes one CONSOLE_WRITE takes (it returns how many it took; the guest writes the
/// rest again).
pub const CONSOLE_WRITE_CHUNK: u32 = 256;

/// How a hypercall ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It returned (its result is in EAX): move RIP past VMCALL.
    Done,
    /// It raised an exception in the guest instead (RIP stays).
    Fault,
    /// It must wait for room on a serial line, and runs again then (RIP stays).
    Wait(super::Wait),
    /// It ends the VM.
    Stop(StopReason),
}

/// Handles the VMCALL of the VM in `cx`.
pub fn hypercall<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
) -> Result<Outcome, VcpuError> {
    if cx.vm.vcpu.read(Reg::Cpl)? != 0 {
        // Hypercalls are the guest kernel's: from a user process VMCALL is an invalid opcode
        // (so a process cannot, say, end its VM as passed or balloon its kernel's pages).
        cx.vm.vcpu.inject(Event::INVALID_OPCODE)?;
        return Ok(Outcome::Fault);
    }
    let regs = cx.vm.vcpu.registers();
    let (number, b, c, d, si) = (
        regs.rax as u32,
        regs.rbx as u32,
        regs.rcx as u32,
        regs.rdx as u32,
        regs.rsi as u32,
    );
    let result: Result<u32, HypercallError> = match number {
        hypercall::CONSOLE_WRITE => match console_write(cx, u64::from(b), c) {
            Ok(0) if c > 0 => return Ok(Outcome::Wait(super::Wait::Console)),
            other => other,
        },
        hypercall::EXIT => return Ok(Outcome::Stop(StopReason::Exited { status: b })),
        hypercall::VERSION => Ok(u32::from(carousel_protocol::FORMAT_VERSION)),
        hypercall::CHECK => match check(cx, u64::from(b), c, d) {
            Err(Refused::Quota) => return Ok(Outcome::Wait(super::Wait::Records)),
            Err(Refused::Call(error)) => Err(error),
            Ok(value) => Ok(value),
        },
        hypercall::METRIC => metric(cx, u64::from(b), c, (u64::from(si) << 32) | u64::from(d)),
        hypercall::SET_TIMER => {
            let deadline = (u64::from(c) << 32) | u64::from(b);
            let now = cx.host.now();
            let limit = now.saturating_add(cx.vm.tsc_hz.saturating_mul(SET_TIMER_MAX_AHEAD_S));
            if deadline > limit {
                // Further than a VM may sleep in one go: refused, so that a VM cannot hold the
                // run with a timer nothing will ever reach.
                Err(HypercallError::InvalidArgument)
            } else {
                cx.vm.timer_deadline = (deadline != 0).then_some(deadline);
                Ok(0)
            }
        }
        hypercall::TSC_KHZ => {
            u32::try_from(cx.vm.tsc_hz / 1000).map_err(|_| HypercallError::InvalidArgument)
        }
        hypercall::BALLOON_TARGET => {
            cx.vm.balloon_driver = true;
            Ok(cx.vm.balloon.target as u32)
        }
        hypercall::BALLOON_INFLATE | hypercall::BALLOON_DEFLATE
            if !cx
                .host
                .exporter()
                .guest_room(cx.vm.id, crate::vm::GUEST_RECORD_MAX) =>
        {
            // Its record must not be lost: the call waits for room before it changes anything.
            return Ok(Outcome::Wait(super::Wait::Records));
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
    let mut written = 0u32;
    // At most a chunk per call, so that one exit's handling stays short: the guest writes the
    // rest with its next call.
    let len = len.min(CONSOLE_WRITE_CHUNK);
    for offset in (0..u64::from(len)).step_by(buffer.len()) {
        let chunk = &mut buffer[..(u64::from(len) - offset).min(128) as usize];
        if !cx.vm.memory.read(&cx.pool.frames, gpa + offset, chunk) {
            return Err(HypercallError::BadAddress);
        }
        for &byte in chunk.iter() {
            // A byte may end a line: without room for one, the write stops here (the guest
            // writes the rest again; with nothing written, the call waits for room).
            if !out.host.console_has_room(out.vm) {
                return Ok(written);
            }
            cx.vm.platform.console.transmit(byte, &mut out);
            written += 1;
        }
    }
    Ok(written)
}

/// Why a record a guest asked for did not go out.
enum Refused {
    /// The call's arguments are wrong.
    Call(HypercallError),
    /// The VM's record quota is full.
    Quota,
}

impl From<HypercallError> for Refused {
    fn from(error: HypercallError) -> Self {
        Self::Call(error)
    }
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
) -> Result<u32, Refused> {
    if passed > 1 {
        return Err(HypercallError::InvalidArgument.into());
    }
    let name = read_name(cx, gpa, len)?;
    let tsc = cx.host.now();
    let record = Record::Check {
        tsc,
        vm: cx.vm.id,
        name,
        passed: passed == 1,
    };
    // A check is never lost: beyond the VM's quota it waits.
    cx.host
        .exporter()
        .emit_guest(cx.vm.id, &record)
        .map_err(|_| Refused::Quota)?;
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
    let record = Record::GuestMetric {
        tsc,
        vm: cx.vm.id,
        name,
        value,
    };
    // A measurement beyond the VM's quota is dropped and counted against that VM.
    let exporter = cx.host.exporter();
    if exporter.emit_guest(cx.vm.id, &record).is_err() {
        exporter.count_guest_drop(cx.vm.id);
    }
    Ok(0)
}

/// The record of a balloon call that happened (room for it was checked before the call).
fn balloon_record<V: Vcpu, F, H: Host>(cx: &mut Context<'_, V, F, H>, inflate: bool, pages: u32) {
    let tsc = cx.host.now();
    let record = Record::Balloon {
        tsc,
        vm: cx.vm.id,
        inflate,
        pages,
        ballooned: cx.vm.balloon.count(),
        target: cx.vm.balloon.target,
    };
    let exporter = cx.host.exporter();
    if exporter.emit_guest(cx.vm.id, &record).is_err() {
        exporter.count_guest_drop(cx.vm.id);
    }
}
