//! EPT violations: the guest touched guest-physical memory its EPT does not map as it asked.
//! In order: a device page (the instruction decoded and emulated on the device model), the
//! first touch of a lazily backed page (it gets its frame), a write to a merged page (it gets
//! its copy), a page the guest gave back (the VM stops), anything else (outside its RAM: the VM
//! stops).

use alloc::string::String;

use carousel_protocol::record::StopReason;

use super::io::GuestPaging;
use super::{Context, EmulatedRegisters, Next};
use crate::exit::Fault;
use crate::host::Host;
use crate::memory::Frames;
use crate::mmio;
use crate::paging::{self, PagingMode};
use crate::platform::Mmio;
use crate::vcpu::{Reg, Vcpu, VcpuError};
use crate::PAGE_SIZE;

/// Handles an EPT violation.
pub fn fault<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    fault: &Fault,
) -> Result<Next, VcpuError> {
    let gpa = fault.gpa;
    let page = gpa / PAGE_SIZE;
    let rip = cx.rip()?;
    if let Some(device) = Mmio::at(gpa) {
        return match emulate(cx, device, rip)? {
            Ok(length) => {
                cx.vm
                    .vcpu
                    .write(Reg::Rip, rip.wrapping_add(u64::from(length)))?;
                Ok(Next::Resume)
            }
            Err(message) => Ok(cx.stop(StopReason::BadMmio { gpa, rip, message })),
        };
    }
    if cx.vm.memory.is_lazy(page) {
        // The first touch of a lazily backed page: it gets its frame, and the access is retried.
        return Ok(match cx.pool.back(&mut cx.vm.memory, page) {
            Some(_) => {
                cx.vm.sync_ept(cx.pool)?;
                Next::Resume
            }
            None => cx.stop(StopReason::OutOfMemory { gpa, rip }),
        });
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

/// An access to the local or I/O APIC page: fetch the instruction at RIP through the guest's
/// page tables, decode it (iced-x86), and perform it on the device model. Returns the
/// instruction's length, or why it cannot be emulated.
fn emulate<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    device: Mmio,
    rip: u64,
) -> Result<Result<u8, String>, VcpuError> {
    let fail = |error: &dyn core::fmt::Display| Err(alloc::format!("{error}"));
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
        Err(error) => return Ok(fail(&error)),
    };
    let instruction = match mmio::decode(&bytes[..fetched], bitness) {
        Ok(instruction) => instruction,
        Err(error) => return Ok(fail(&error)),
    };
    let now = cx.host.now();
    let rsp = cx.vm.vcpu.read(Reg::Rsp)?;
    let mut regs = EmulatedRegisters {
        regs: cx.vm.vcpu.registers(),
        rsp,
    };
    match mmio::store_value(&instruction, &regs) {
        Some(value) => cx
            .vm
            .platform
            .mmio_write(device, instruction.size, value, now),
        None => {
            let value = cx.vm.platform.mmio_read(device, instruction.size, now);
            mmio::complete_load(&instruction, value, &mut regs);
            let new_rsp = regs.rsp;
            if new_rsp != rsp {
                // The guest loaded its own stack pointer.
                cx.vm.vcpu.write(Reg::Rsp, new_rsp)?;
            }
        }
    }
    Ok(Ok(instruction.length))
}
