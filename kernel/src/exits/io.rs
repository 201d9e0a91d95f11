//! Port I/O: IN and OUT reach the VM's platform; INS and OUTS move their data between the
//! platform and guest memory through the guest's page tables, a bounded chunk per exit.

use carousel_protocol::record::StopReason;

use super::Context;
use crate::exit::Io;
use crate::host::Host;
use crate::memory::{Frames, HostMemory};
use crate::paging::{self, PagingMode, WalkError};
use crate::platform::Platform;
use crate::vcpu::{Reg, Segment, Vcpu, VcpuError};
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
    /// It raised an exception in the guest (RIP stays).
    Fault,
    /// The guest did something that stops it.
    Stop(StopReason),
}

/// One IN or OUT (string forms included), through the VM's platform.
pub fn port_io<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    io: &Io,
) -> Result<Progress, VcpuError> {
    if io.string {
        return string_io(cx, io);
    }
    let mask = crate::mmio::size_mask(io.size);
    if !io.input && io.port == COM1_DATA && !cx.host.console_has_room(cx.vm.id) {
        // The byte may end a line, and the VM's share of COM1 has no room for one.
        return Ok(Progress::Wait(super::Wait::Console));
    }
    if io.input {
        let value = u64::from(cx.vm.platform.port_in(io.port, io.size, cx.host.drive()));
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

/// How a string I/O instruction addresses its memory operand: the address size and the
/// segment, from its legacy prefixes (0x67 toggles the address size; a segment override
/// applies to OUTS's DS:rSI only, INS always writes ES:rDI) and the default operand size of the
/// code (`code_bits`, 16, 32 or 64). For SVM, which reports neither (QEMU-SVM.md).
pub fn string_operand(prefixes: &[u8], code_bits: u8, input: bool) -> (u8, Segment) {
    let mut toggled = false;
    let mut segment = Segment::Ds;
    for &byte in prefixes {
        match byte {
            0x67 => toggled = true,
            0x26 => segment = Segment::Es,
            0x2E => segment = Segment::Cs,
            0x36 => segment = Segment::Ss,
            0x3E => segment = Segment::Ds,
            0x64 => segment = Segment::Fs,
            0x65 => segment = Segment::Gs,
            0x66 | 0xF0 | 0xF2 | 0xF3 => {}
            0x40..=0x4F if code_bits == 64 => {}
            _ => break,
        }
    }
    let bits = match (code_bits, toggled) {
        (64, false) => 64,
        (64, true) | (32, false) | (16, true) => 32,
        _ => 16,
    };
    (bits, if input { Segment::Es } else { segment })
}

/// Completes a string I/O exit the hardware left without its address size and linear address
/// (`address_bits` 0): reads the instruction (`length` bytes at CS:RIP), takes its prefixes
/// with [`string_operand`] and computes seg:rSI or ES:rDI. In 64-bit mode only FS and GS have
/// a base. Err is the walk failure of fetching the instruction.
pub fn complete_string<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    io: &Io,
    length: u8,
) -> Result<Result<Io, WalkError>, VcpuError> {
    let paging = GuestPaging::read(&mut cx.vm.vcpu)?;
    let rip = cx.vm.vcpu.read(Reg::Rip)?;
    let cs_base = cx.vm.vcpu.read(Reg::CsBase)?;
    let code_bits = cx.vm.vcpu.read(Reg::CodeBits)? as u8;
    let mut bytes = [0u8; 15];
    let bytes = &mut bytes[..usize::from(length.clamp(1, 15))];
    let view = cx.vm.ram(cx.pool);
    if let Err(error) = paging::read_linear(
        paging.mode,
        paging.cr3,
        cs_base.wrapping_add(rip),
        bytes,
        &view,
    ) {
        return Ok(Err(error));
    }
    let (address_bits, segment) = string_operand(bytes, code_bits, io.input);
    let base = match segment {
        Segment::Fs | Segment::Gs => cx.vm.vcpu.read(Reg::SegmentBase(segment))?,
        _ if code_bits == 64 => 0,
        _ => cx.vm.vcpu.read(Reg::SegmentBase(segment))?,
    };
    let regs = cx.vm.vcpu.registers();
    let index = if io.input { regs.rdi } else { regs.rsi };
    let mask = match address_bits {
        16 => 0xFFFF,
        32 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    let mut linear = base.wrapping_add(index & mask);
    if code_bits != 64 {
        linear &= 0xFFFF_FFFF;
    }
    Ok(Ok(Io {
        address_bits,
        linear,
        ..*io
    }))
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

/// Most elements one string I/O exit moves to or from a port other than the IDE data port (each
/// goes through the device model one by one): a longer `rep` resumes where it stopped, so one
/// exit's handling stays short.
pub const DEVICE_STRING_CHUNK: usize = 64;

/// INS/OUTS, with or without REP, a bounded chunk per exit: xv6's `rep insl` of 128 dwords from
/// the IDE data port is one block transfer (XV6-CONTRACT §8). The buffer is the guest's linear
/// address from the exit information, translated through its page tables; with RFLAGS.DF set
/// the elements run downwards from it, as the processor moves them.
fn string_io<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    io: &Io,
) -> Result<Progress, VcpuError> {
    if io.address_bits == 0 {
        // The hardware gave neither the address size nor the address: nothing to go on, a
        // hypervisor fault (the SVM path completes the exit first, `complete_string`).
        return Ok(Progress::Stop(StopReason::UnhandledExit {
            reason: 30,
            rip: cx.vm.vcpu.read(Reg::Rip)?,
            qualification: u64::from(io.port),
        }));
    }
    /// RFLAGS.DF: string instructions run backwards.
    const RFLAGS_DF: u64 = 1 << 10;
    let port = io.port;
    let rip = cx.vm.vcpu.read(Reg::Rip)?;
    let paging = GuestPaging::read(&mut cx.vm.vcpu)?;
    let backwards = cx.vm.vcpu.read(Reg::Rflags)? & RFLAGS_DF != 0;
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
    let most = if Platform::is_ide_data(port) {
        STRING_IO_CHUNK / size
    } else {
        DEVICE_STRING_CHUNK
    };
    let elements = count.min(most);
    let bytes = elements * size;
    // The elements occupy [lowest, lowest + bytes) in linear memory; backwards, the first one
    // is the highest.
    let lowest = if backwards && elements > 0 {
        io.linear.wrapping_sub(((elements - 1) * size) as u64)
    } else {
        io.linear
    };
    let mut buffer = [0u8; STRING_IO_CHUNK];
    let buffer = &mut buffer[..bytes];
    let mut done = bytes;
    if io.input {
        if Platform::is_ide_data(port) {
            cx.vm.platform.ide_read_block(buffer, cx.host.drive());
        } else {
            for element in buffer.chunks_mut(size) {
                let value = cx
                    .vm
                    .platform
                    .port_in(port, io.size, cx.host.drive())
                    .to_le_bytes();
                element.copy_from_slice(&value[..size]);
            }
        }
        if backwards {
            reverse_elements(buffer, size);
        }
        if let Err(error) = write_linear(paging, &mut cx.vm.memory, cx.pool, lowest, buffer) {
            return failed(cx, error, true, rip);
        }
    } else {
        let view = cx.vm.ram(cx.pool);
        if let Err(error) = paging::read_linear(paging.mode, paging.cr3, lowest, buffer, &view) {
            return failed(cx, error, false, rip);
        }
        if backwards {
            reverse_elements(buffer, size);
        }
        if Platform::is_ide_data(port) {
            cx.vm.platform.ide_write_block(buffer, cx.host.drive());
        } else {
            let mut out = super::Output {
                host: cx.host,
                vm: cx.vm.id,
            };
            for (index, element) in buffer.chunks(size).enumerate() {
                if port == COM1_DATA && !out.host.console_has_room(out.vm) {
                    done = index * size;
                    break;
                }
                let mut value = [0u8; 4];
                value[..size].copy_from_slice(element);
                cx.vm
                    .platform
                    .port_out(port, io.size, u32::from_le_bytes(value), &mut out);
            }
        }
    }
    let moved = (done / size) as u64;
    let distance = if backwards {
        (done as u64).wrapping_neg()
    } else {
        done as u64
    };
    let regs = cx.vm.vcpu.registers();
    let index = if io.input {
        &mut regs.rdi
    } else {
        &mut regs.rsi
    };
    *index = (*index & !address_mask) | (index.wrapping_add(distance) & address_mask);
    if io.rep {
        let left = (regs.rcx & address_mask) - moved;
        regs.rcx = (regs.rcx & !address_mask) | left;
        if done < bytes {
            // COM1 had no room for the rest: what was sent is done, the instruction waits.
            return Ok(Progress::Wait(super::Wait::Console));
        }
        if left > 0 {
            // Not done: leave RIP on the instruction, which resumes with the registers as they
            // now stand.
            return Ok(Progress::Again);
        }
    } else if done < bytes {
        return Ok(Progress::Wait(super::Wait::Console));
    }
    Ok(Progress::Done)
}

/// Reverses the order of the `size`-byte elements of `buffer`.
fn reverse_elements(buffer: &mut [u8], size: usize) {
    let count = buffer.len() / size;
    for index in 0..count / 2 {
        let (low, high) = (index * size, (count - 1 - index) * size);
        for byte in 0..size {
            buffer.swap(low + byte, high + byte);
        }
    }
}

/// A string instruction's memory operand could not be reached: #PF or #GP in the guest (RIP
/// stays), or a stop for memory outside RAM or given back.
fn failed<V: Vcpu, F, H>(
    cx: &mut Context<'_, V, F, H>,
    error: WalkError,
    write: bool,
    rip: u64,
) -> Result<Progress, VcpuError> {
    Ok(match super::fault::walk_failure(cx, error, write, rip)? {
        Some(reason) => Progress::Stop(reason),
        None => Progress::Fault,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_operands_from_prefixes() {
        // xv6's `rep insl` (F3 6D) in 32-bit code: ES:EDI, 32-bit addresses.
        assert_eq!(string_operand(&[0xF3, 0x6D], 32, true), (32, Segment::Es));
        // `rep outsb` with an FS override and 0x67 in 32-bit code: FS:SI.
        assert_eq!(
            string_operand(&[0x64, 0x67, 0xF3, 0x6E], 32, false),
            (16, Segment::Fs)
        );
        // INS ignores an override: ES always.
        assert_eq!(string_operand(&[0x2E, 0x6C], 32, true), (32, Segment::Es));
        // 16-bit code: 0x67 gives 32-bit addresses.
        assert_eq!(string_operand(&[0x67, 0x6E], 16, false), (32, Segment::Ds));
        assert_eq!(string_operand(&[0x6E], 16, false), (16, Segment::Ds));
        // 64-bit code: REX skipped, 0x67 gives 32.
        assert_eq!(string_operand(&[0x48, 0x6F], 64, false), (64, Segment::Ds));
        assert_eq!(string_operand(&[0x67, 0x6F], 64, false), (32, Segment::Ds));
        // A REX byte outside 64-bit mode is an opcode (INC): prefixes end there.
        assert_eq!(
            string_operand(&[0x40, 0x67, 0x6E], 32, false),
            (32, Segment::Ds)
        );
    }
}
