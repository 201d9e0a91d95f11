//! EPT violations: the guest touched guest-physical memory its EPT does not map as it asked.
//! In order: its own page walk reaching a device page (the VM stops: no hardware lets a page
//! table live in an APIC), a device page (the instruction decoded and emulated on the device
//! model), the first touch of a lazily backed page (it gets its frame), a touch of a
//! compressed page (it is unpacked into a fresh frame), a write to a merged
//! page (it gets its copy), a page the guest gave back (the VM stops), anything else (outside
//! its RAM: the VM stops).

use core::fmt;

use carousel_protocol::record::StopReason;

use super::io::GuestPaging;
use super::{Context, EmulatedRegisters, Next};
use crate::exit::Fault;
use crate::host::Host;
use crate::memory::Frames;
use crate::mmio::{self, DecodeError, MmioInstruction, MmioOp};
use crate::paging::{self, PagingMode, WalkError};
use crate::platform::Mmio;
use crate::vcpu::{Event, Reg, Vcpu, VcpuError};
use crate::PAGE_SIZE;

/// RFLAGS.DF: string instructions run backwards.
const RFLAGS_DF: u64 = 1 << 10;
/// #PF's vector.
const PAGE_FAULT: u8 = 14;

/// Handles an EPT violation.
pub fn fault<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    fault: &Fault,
) -> Result<Next, VcpuError> {
    let gpa = fault.gpa;
    let page = gpa / PAGE_SIZE;
    let rip = cx.rip()?;
    if let Some(device) = cx.vm.platform.mmio_at(gpa) {
        if fault.paging_structure {
            return Ok(cx.stop(StopReason::GuestFault {
                rip,
                message: alloc::format!(
                    "its page walk used a paging-structure entry at guest-physical {gpa:#x}, \
                     in the {} page (device memory holds no page table)",
                    device.name()
                ),
            }));
        }
        return Ok(match emulate(cx, device, fault, rip)? {
            Ok(Emulated::Done(length)) => {
                cx.vm
                    .vcpu
                    .write(Reg::Rip, rip.wrapping_add(u64::from(length)))?;
                Next::Resume
            }
            Ok(Emulated::Again) | Ok(Emulated::Faulted) => Next::Resume,
            Ok(Emulated::Stop(reason)) => cx.stop(reason),
            Err(error) => cx.stop(StopReason::BadMmio {
                gpa,
                rip,
                message: alloc::format!("{error}"),
            }),
        });
    }
    if cx.vm.memory.is_lazy(page) {
        // The first touch of a lazily backed page: it gets its frame (and its lazy neighbours
        // theirs), and the access is retried.
        return Ok(match cx.pool.back_around(&mut cx.vm.memory, page) {
            Some(around) => {
                for other in around {
                    cx.vm.ages.seen(other);
                }
                cx.vm.sync_ept(cx.pool)?;
                Next::Resume
            }
            None => cx.stop(StopReason::OutOfMemory { gpa, rip }),
        });
    }
    if cx.vm.memory.is_compressed(page) {
        // A touch of a compressed page: it is unpacked into a fresh frame, and the access is
        // retried. Its root cycles count as compression's.
        let started = cx.host.now();
        let unpacked = cx.pool.decompress(&mut cx.vm.memory, page);
        cx.vm.ages.seen(page);
        if unpacked.is_none() {
            return Ok(cx.stop(StopReason::OutOfMemory { gpa, rip }));
        }
        cx.vm.sync_ept(cx.pool)?;
        cx.pool
            .count_decompress_cycles(cx.host.now().saturating_sub(started));
        return Ok(Next::Resume);
    }
    if cx.vm.memory.is_shared(page) {
        // A write to a merged page: it gets its own copy, and the write is retried.
        return Ok(match cx.pool.copy_on_write(&mut cx.vm.memory, page) {
            Ok(_) => {
                cx.vm.sync_ept(cx.pool)?;
                Next::Resume
            }
            Err(_) => cx.stop(StopReason::OutOfMemory { gpa, rip }),
        });
    }
    if cx.vm.balloon.contains(page) {
        return Ok(cx.stop(StopReason::BalloonedPageTouched { gpa, rip }));
    }
    Ok(cx.stop(StopReason::EptViolation {
        gpa,
        rip,
        qualification: fault.detail,
    }))
}

/// How an emulated device access ended.
#[derive(Debug)]
enum Emulated {
    /// Done: RIP moves past the instruction (this many bytes).
    Done(u8),
    /// A `rep` string instruction with elements left: RIP stays, the registers moved on.
    Again,
    /// The instruction raised an exception in the guest (RIP stays).
    Faulted,
    /// The access reached memory no hardware would let it go on from.
    Stop(StopReason),
}

/// Why an access to a device page cannot be emulated (the VM stops with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unemulated {
    /// The instruction bytes at RIP cannot be read through the guest's page tables.
    Fetch(WalkError),
    /// The bytes are not an instruction the emulator performs.
    Decode(DecodeError),
}

impl fmt::Display for Unemulated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fetch(error) => write!(f, "{error}"),
            Self::Decode(error) => write!(f, "{error}"),
        }
    }
}

/// What a failed walk of the guest's own page tables means for the instruction at `rip`: a
/// #PF or #GP the hardware would raise (injected), or a stop for memory outside RAM or given
/// back.
pub fn walk_failure<V: Vcpu, F, H>(
    cx: &mut Context<'_, V, F, H>,
    error: WalkError,
    write: bool,
    rip: u64,
) -> Result<Option<StopReason>, VcpuError> {
    match error {
        WalkError::NotPresent { linear, .. } => {
            let user = cx.vm.vcpu.read(Reg::Cpl)? == 3;
            let code = u32::from(write) << 1 | u32::from(user) << 2;
            cx.vm.vcpu.registers().cr2 = linear;
            cx.vm.vcpu.inject(Event::Exception {
                vector: PAGE_FAULT,
                error_code: Some(code),
            })?;
            Ok(None)
        }
        WalkError::NonCanonical { .. } => {
            cx.vm.vcpu.inject(Event::GENERAL_PROTECTION)?;
            Ok(None)
        }
        WalkError::DataOutsideRam { gpa } | WalkError::EntryOutsideRam { gpa, .. } => {
            Ok(Some(if cx.vm.balloon.contains(gpa / PAGE_SIZE) {
                StopReason::BalloonedPageTouched { gpa, rip }
            } else {
                StopReason::EptViolation {
                    gpa,
                    rip,
                    qualification: 0,
                }
            }))
        }
    }
}

/// An access to the local or I/O APIC page: fetch the instruction at RIP through the guest's
/// page tables, decode it (iced-x86), and perform it on the device model.
fn emulate<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    device: Mmio,
    fault: &Fault,
    rip: u64,
) -> Result<Result<Emulated, Unemulated>, VcpuError> {
    let paging = GuestPaging::read(&mut cx.vm.vcpu)?;
    let cs_base = cx.vm.vcpu.read(Reg::CsBase)?;
    let bitness = match cx.vm.vcpu.read(Reg::CodeBits)? {
        64 if paging.mode == PagingMode::FourLevel64 => 64,
        64 | 32 => 32,
        _ => 16,
    };
    let mut bytes = [0u8; mmio::MAX_INSTRUCTION_LENGTH];
    let fetched = match paging::read_linear_prefix(
        paging.mode,
        paging.cr3,
        cs_base.wrapping_add(rip),
        &mut bytes,
        &cx.vm.ram(cx.pool),
    ) {
        Ok(fetched) => fetched,
        Err(error) => return Ok(Err(Unemulated::Fetch(error))),
    };
    let instruction = match mmio::decode(&bytes[..fetched], bitness) {
        Ok(instruction) => instruction,
        Err(error) => return Ok(Err(Unemulated::Decode(error))),
    };
    let now = cx.host.now();
    let rsp = cx.vm.vcpu.read(Reg::Rsp)?;
    let rflags = cx.vm.vcpu.read(Reg::Rflags)?;
    let size = instruction.size;
    let mut regs = EmulatedRegisters {
        regs: cx.vm.vcpu.registers(),
        rsp,
    };
    let platform = &mut cx.vm.platform;
    let mut new_rflags = rflags;
    let outcome = match instruction.op {
        MmioOp::Load { .. } => {
            let value = platform.mmio_read(device, size, now);
            mmio::complete_load(&instruction, value, &mut regs);
            Emulated::Done(instruction.length)
        }
        MmioOp::Store { value } => {
            let value = value.value(size, &regs);
            platform.mmio_write(device, size, value, now);
            Emulated::Done(instruction.length)
        }
        MmioOp::Hint => Emulated::Done(instruction.length),
        MmioOp::Exchange { register } => {
            let old = platform.mmio_read(device, size, now);
            platform.mmio_write(device, size, register.read(&regs), now);
            register.write(&mut regs, old);
            Emulated::Done(instruction.length)
        }
        MmioOp::CompareExchange { register } => {
            let accumulator = mmio::accumulator(size);
            let memory = platform.mmio_read(device, size, now);
            let expected = accumulator.read(&regs);
            let (mask, flags) = mmio::compare_flags(expected, memory, size);
            new_rflags = (rflags & !mask) | flags;
            if expected & mmio::size_mask(size) == memory & mmio::size_mask(size) {
                platform.mmio_write(device, size, register.read(&regs), now);
            } else {
                accumulator.write(&mut regs, memory);
            }
            Emulated::Done(instruction.length)
        }
        MmioOp::StringStore { .. } | MmioOp::StringMove { .. } => {
            return string(cx, device, fault, &instruction, paging, rflags, now, rip).map(Ok);
        }
    };
    let new_rsp = regs.rsp;
    if new_rsp != rsp {
        // The guest loaded its own stack pointer.
        cx.vm.vcpu.write(Reg::Rsp, new_rsp)?;
    }
    if new_rflags != rflags {
        cx.vm.vcpu.write(Reg::Rflags, new_rflags)?;
    }
    Ok(Ok(outcome))
}

/// One element of `stos` or `movs` with the device on one side: the device side is the access
/// that faulted; the other is guest RAM through the guest's page tables. With `rep`, rCX counts
/// down and RIP stays until it reaches 0 (the next element exits again if it is on the device).
#[allow(clippy::too_many_arguments)]
fn string<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    device: Mmio,
    fault: &Fault,
    instruction: &MmioInstruction,
    paging: GuestPaging,
    rflags: u64,
    now: u64,
    rip: u64,
) -> Result<Emulated, VcpuError> {
    let (rep, address_bits, moving) = match instruction.op {
        MmioOp::StringStore { rep, address_bits } => (rep, address_bits, false),
        MmioOp::StringMove { rep, address_bits } => (rep, address_bits, true),
        _ => return Ok(Emulated::Done(instruction.length)),
    };
    let size = instruction.size;
    let mask = match address_bits {
        16 => 0xFFFF,
        32 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    let regs = cx.vm.vcpu.registers();
    if rep && regs.rcx & mask == 0 {
        return Ok(Emulated::Done(instruction.length));
    }
    let (rsi, rdi) = (regs.rsi & mask, regs.rdi & mask);
    let value = if !moving {
        regs.rax & mmio::size_mask(size)
    } else if fault.write {
        // Memory to the device: the source is RAM.
        let mut element = [0u8; 8];
        let view = cx.vm.ram(cx.pool);
        if let Err(error) = paging::read_linear(
            paging.mode,
            paging.cr3,
            rsi,
            &mut element[..usize::from(size)],
            &view,
        ) {
            return walk_failure(cx, error, false, rip)
                .map(|stop| stop.map_or(Emulated::Faulted, Emulated::Stop));
        }
        u64::from_le_bytes(element)
    } else {
        cx.vm.platform.mmio_read(device, size, now)
    };
    if !moving || fault.write {
        cx.vm.platform.mmio_write(device, size, value, now);
    } else {
        // The device to memory: the destination is RAM.
        let bytes = value.to_le_bytes();
        if let Err(error) = super::io::write_linear(
            paging,
            &mut cx.vm.memory,
            cx.pool,
            rdi,
            &bytes[..usize::from(size)],
        ) {
            return walk_failure(cx, error, true, rip)
                .map(|stop| stop.map_or(Emulated::Faulted, Emulated::Stop));
        }
    }
    let step = if rflags & RFLAGS_DF != 0 {
        u64::from(size).wrapping_neg()
    } else {
        u64::from(size)
    };
    let regs = cx.vm.vcpu.registers();
    let advance = |register: u64| (register & !mask) | (register.wrapping_add(step) & mask);
    regs.rdi = advance(regs.rdi);
    if moving {
        regs.rsi = advance(regs.rsi);
    }
    if rep {
        let left = (regs.rcx & mask) - 1;
        regs.rcx = (regs.rcx & !mask) | left;
        if left > 0 {
            return Ok(Emulated::Again);
        }
    }
    Ok(Emulated::Done(instruction.length))
}
