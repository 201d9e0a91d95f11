//! Port I/O: IN and OUT reach the VM's platform; INS and OUTS move their data between the
//! platform and guest memory through the guest's page tables, a bounded chunk per exit.

use carousel_protocol::record::StopReason;

use super::Context;
use crate::exit::Io;
use crate::host::Host;
use crate::memory::{Frames, HostMemory};
use crate::paging::{self, PagingMode, WalkError};
use crate::platform::Platform;
use crate::vcpu::{Reg, Vcpu, VcpuError};
use crate::PAGE_SIZE;

/// Whether an emulated instruction finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Move RIP past it.
    Done,
    /// A `rep` string instruction with work left: leave RIP on it, the CPU executes it again
    /// with the updated count.
    Again,
    /// The instruction must wait (RIP stays on it; whatever part of a string instruction was
    /// done is reflected in its registers).
    Wait(super::Wait),
    /// The guest did something that stops it.
    Stop(StopReason),
}

/// The low `size` bytes of a register.
pub fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// One IN or OUT (string forms included), through the VM's platform.
pub fn port_io<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    io: &Io,
) -> Result<Progress, VcpuError> {
    if io.string {
        return string_io(cx, io);
    }
    let mask = size_mask(io.size);
    if !io.input && io.port == COM1_DATA && !cx.host.console_has_room(cx.vm.id) {
        // The byte may end a line, and the VM's share of COM1 has no room for one.
        return Ok(Progress::Wait(super::Wait::Console));
    }
    if io.input {
        let value = u64::from(cx.vm.platform.port_in(io.port, io.size));
        let regs = cx.vm.vcpu.registers();
        regs.rax = (regs.rax & !mask) | (value & mask);
    } else {
        let value = cx.vm.vcpu.registers().rax as u32;
        let mut out = super::Output {
            host: cx.host,
            vm: cx.vm.id,
        };
        cx.vm.platform.port_out(io.port, io.size, value, &mut out);
    }
    Ok(Progress::Done)
}

/// Most bytes one string I/O exit moves; a longer `rep` resumes where it stopped.
pub const STRING_IO_CHUNK: usize = 4096;

/// COM1's data register (THR when written).
const COM1_DATA: u16 = 0x3F8;

/// The guest's paging state, for following its linear addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuestPaging {
    pub mode: PagingMode,
    pub cr3: u64,
}

impl GuestPaging {
    /// Reads the paging state of the vCPU.
    pub fn read(vcpu: &mut impl Vcpu) -> Result<Self, VcpuError> {
        let cr0 = vcpu.read(Reg::Cr0)?;
        let cr4 = vcpu.read(Reg::Cr4)?;
        let efer = vcpu.read(Reg::Efer)?;
        Ok(Self {
            mode: PagingMode::from_registers(cr0, cr4, efer),
            cr3: vcpu.read(Reg::Cr3)?,
        })
    }
}

/// Copies `data` to guest linear memory at `linear`, page by page.
pub fn write_linear<F: Frames>(
    paging: GuestPaging,
    memory: &mut crate::memory::GuestMemory,
    pool: &mut HostMemory<F>,
    linear: u64,
    data: &[u8],
) -> Result<(), WalkError> {
    let mut done = 0;
    while done < data.len() {
        let at = linear.wrapping_add(done as u64);
        let chunk = (PAGE_SIZE - at % PAGE_SIZE).min((data.len() - done) as u64) as usize;
        let view = crate::memory::RamView {
            memory,
            frames: &pool.frames,
        };
        let gpa = paging::translate(paging.mode, paging.cr3, at, &view)?;
        if !pool.write(memory, gpa, &data[done..done + chunk]) {
            return Err(WalkError::DataOutsideRam { gpa });
        }
        done += chunk;
    }
    Ok(())
}

/// INS/OUTS, with or without REP, served a chunk per exit: xv6's `rep insl` of 128 dwords
/// from the IDE data port is one block transfer (XV6-CONTRACT §8). The buffer is the guest's
/// linear address from the exit information, translated through its page tables.
fn string_io<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    io: &Io,
) -> Result<Progress, VcpuError> {
    /// RFLAGS.DF: string instructions run backwards.
    const RFLAGS_DF: u64 = 1 << 10;
    let port = io.port;
    let bad = |message: &str| {
        Progress::Stop(StopReason::VmxError {
            message: alloc::format!("string I/O on port {port:#x}: {message}"),
        })
    };
    let paging = GuestPaging::read(&mut cx.vm.vcpu)?;
    if cx.vm.vcpu.read(Reg::Rflags)? & RFLAGS_DF != 0 {
        return Ok(bad("backwards (RFLAGS.DF = 1) is not supported"));
    }
    let address_mask = match io.address_bits {
        16 => 0xFFFF,
        32 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    let size = usize::from(io.size);
    let count = if io.rep {
        (cx.vm.vcpu.registers().rcx & address_mask) as usize
    } else {
        1
    };
    let elements = count.min(STRING_IO_CHUNK / size);
    let bytes = elements * size;
    let mut buffer = [0u8; STRING_IO_CHUNK];
    let buffer = &mut buffer[..bytes];
    if io.input {
        if Platform::is_ide_data(port) {
            cx.vm.platform.ide_read_block(buffer);
        } else {
            for element in buffer.chunks_mut(size) {
                let value = cx.vm.platform.port_in(port, io.size).to_le_bytes();
                element.copy_from_slice(&value[..size]);
            }
        }
        if let Err(error) = write_linear(paging, &mut cx.vm.memory, cx.pool, io.linear, buffer) {
            return Ok(bad(&alloc::format!("{error}")));
        }
        let regs = cx.vm.vcpu.registers();
        regs.rdi =
            (regs.rdi & !address_mask) | (regs.rdi.wrapping_add(bytes as u64) & address_mask);
    } else {
        let view = cx.vm.ram(cx.pool);
        if let Err(error) = paging::read_linear(paging.mode, paging.cr3, io.linear, buffer, &view) {
            return Ok(bad(&alloc::format!("{error}")));
        }
        let mut sent = bytes;
        if Platform::is_ide_data(port) {
            cx.vm.platform.ide_write_block(buffer);
        } else {
            let mut out = super::Output {
                host: cx.host,
                vm: cx.vm.id,
            };
            for (index, element) in buffer.chunks(size).enumerate() {
                if port == COM1_DATA && !out.host.console_has_room(out.vm) {
                    sent = index * size;
                    break;
                }
                let mut value = [0u8; 4];
                value[..size].copy_from_slice(element);
                cx.vm
                    .platform
                    .port_out(port, io.size, u32::from_le_bytes(value), &mut out);
            }
        }
        if sent < bytes {
            // COM1 had no room for the rest: what was sent is done, the instruction waits.
            let done = (sent / size) as u64;
            let regs = cx.vm.vcpu.registers();
            regs.rsi =
                (regs.rsi & !address_mask) | (regs.rsi.wrapping_add(sent as u64) & address_mask);
            if io.rep {
                let left = (regs.rcx & address_mask) - done;
                regs.rcx = (regs.rcx & !address_mask) | left;
            }
            return Ok(Progress::Wait(super::Wait::Console));
        }
        let regs = cx.vm.vcpu.registers();
        regs.rsi =
            (regs.rsi & !address_mask) | (regs.rsi.wrapping_add(bytes as u64) & address_mask);
    }
    if io.rep {
        let regs = cx.vm.vcpu.registers();
        let left = (regs.rcx & address_mask) - elements as u64;
        regs.rcx = (regs.rcx & !address_mask) | left;
        if left > 0 {
            // Not done: leave RIP on the instruction, which resumes with the registers as they
            // now stand.
            return Ok(Progress::Again);
        }
    }
    Ok(Progress::Done)
}
