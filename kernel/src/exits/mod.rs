//! What each VM exit means. The backend decodes the hardware's exit information into an
//! [`Exit`]; [`handle`] acts on it through the [`Vcpu`] seam, the VM's devices and memory, and
//! the host's serial lines. Every decision a guest can influence is made here, host-tested
//! against a fake vCPU (`testing::FakeVcpu`).
//!
//! - [`io`]: port I/O through the VM's platform, string I/O in bounded chunks.
//! - [`hypercall`]: VMCALL: every argument checked before anything changes.
//! - [`cr`]: control registers, MSRs and XSETBV, checked as the hardware checks them.
//! - [`fault`]: EPT violations: lazy and merged pages, ballooned pages, device pages (the
//!   instruction decoded and emulated), and everything outside RAM.
//! - [`cpuid`]: what the guest's CPUID says.

pub mod cpuid;
pub mod cr;
pub mod fault;
pub mod hypercall;
pub mod io;

use carousel_devices::DiskIo;
use carousel_protocol::record::{Event, Record, StopReason};

use crate::exit::Exit;
use crate::host::Host;
use crate::memory::{Frames, HostMemory};
use crate::mmio::{Gpr, Registers};
use crate::platform::PlatformOutput;
use crate::vcpu::{Event as Inject, GuestRegisters, Reg, Vcpu, VcpuError};
use crate::vm::{Blocked, RunState, Vm};

/// What a guest's instruction must wait for before it can complete: guest-driven work that
/// has to wait blocks its VM, never the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Room in the VM's share of COM1.
    Console,
    /// Room in the VM's record quota on COM2.
    Records,
}

/// What the run loop does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The VM can go on (whether its slice has time left is the run loop's business).
    Resume,
    /// The VM blocked or stopped: pick the next VM.
    Leave,
}

/// Everything an exit handler works with.
#[allow(missing_debug_implementations)]
pub struct Context<'a, V, F, H> {
    pub vm: &'a mut Vm<V>,
    pub pool: &'a mut HostMemory<F>,
    pub host: &'a mut H,
}

impl<V: Vcpu, F: Frames, H: Host> Context<'_, V, F, H> {
    /// Blocks the VM until `wait` is over; the instruction that exited runs again then (RIP
    /// stays on it).
    fn block(&mut self, wait: Wait) -> Next {
        let since = self.host.now();
        self.vm.state = RunState::Blocked(match wait {
            Wait::Console => Blocked::Console { since },
            Wait::Records => Blocked::Records { since },
        });
        Next::Leave
    }

    /// Stops the VM for `reason`.
    fn stop(&mut self, reason: StopReason) -> Next {
        self.vm.stop(reason, self.host);
        Next::Leave
    }

    /// The guest's RIP.
    fn rip(&mut self) -> Result<u64, VcpuError> {
        self.vm.vcpu.read(Reg::Rip)
    }
}

/// Handles one exit of the VM.
pub fn handle<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    exit: &Exit,
) -> Result<Next, VcpuError> {
    let next = match *exit {
        // The slice or another VM's wake-up deadline: the run loop tells which. The commonest
        // exit of all (every switch ends with one), so it returns before reading anything.
        Exit::Timer => Next::Resume,
        // A host interrupt: the host's business, handled before the guest runs again.
        Exit::HostInterrupt => Next::Resume,
        // IF went to 1 with a vector pending: the entry path injects it.
        Exit::InterruptWindow => Next::Resume,
        Exit::Cpuid { length } => {
            cpuid::cpuid(cx)?;
            skip(cx, length)?
        }
        Exit::Io { io, length } if io.string && io.address_bits == 0 => {
            match io::complete_string(cx, &io, length)? {
                Ok(io) => handle(cx, &Exit::Io { io, length })?,
                Err(error) => {
                    let rip = cx.rip()?;
                    match fault::walk_failure(cx, error, false, rip)? {
                        Some(reason) => cx.stop(reason),
                        None => Next::Resume,
                    }
                }
            }
        }
        Exit::Io { io, length } => match io::port_io(cx, &io)? {
            io::Progress::Done => skip(cx, length)?,
            io::Progress::Again | io::Progress::Fault => Next::Resume,
            io::Progress::Wait(wait) => cx.block(wait),
            io::Progress::Stop(reason) => cx.stop(reason),
        },
        Exit::Hypercall { length } => match hypercall::hypercall(cx)? {
            hypercall::Outcome::Done => skip(cx, length)?,
            hypercall::Outcome::Fault => Next::Resume,
            hypercall::Outcome::Wait(wait) => cx.block(wait),
            hypercall::Outcome::Stop(reason) => cx.stop(reason),
        },
        Exit::ControlRegister { cr, write } => match decode_cr(cx)? {
            Some((instruction, length)) => {
                let decoded = match instruction {
                    cr::CrInstruction::Write { cr, gpr } => Exit::CrWrite { cr, gpr, length },
                    cr::CrInstruction::Read { cr, gpr } => Exit::CrRead { cr, gpr, length },
                    cr::CrInstruction::Clts => Exit::Clts { length },
                    cr::CrInstruction::Lmsw { gpr } => Exit::Lmsw {
                        source: gpr_value(&mut cx.vm.vcpu, gpr)? as u16,
                        length,
                    },
                };
                handle(cx, &decoded)?
            }
            None => {
                let rip = cx.rip()?;
                cx.stop(StopReason::UnhandledExit {
                    reason: REASON_CONTROL_REGISTER,
                    rip,
                    qualification: u64::from(cr) | u64::from(write) << 4,
                })
            }
        },
        // Under SVM the guests' VMCALL (0F 01 C1) is an invalid opcode: it is the hypercall
        // there too. Anything else is the guest's own #UD.
        Exit::InvalidOpcode => {
            if at_vmcall(cx)? {
                handle(cx, &Exit::Hypercall { length: 3 })?
            } else {
                cx.vm.vcpu.inject(Inject::INVALID_OPCODE)?;
                Next::Resume
            }
        }
        Exit::Hlt { length } => {
            let rip = cx.rip()?;
            skip(cx, length)?;
            halt(cx, rip)?
        }
        Exit::CrWrite { cr, gpr, length } => match cr::write(cx, cr, gpr)? {
            cr::Outcome::Done => skip(cx, length)?,
            cr::Outcome::Fault => Next::Resume,
            cr::Outcome::Stop(reason) => cx.stop(reason),
        },
        Exit::CrRead { cr, gpr, length } if cr::read(cx, cr, gpr)? => skip(cx, length)?,
        Exit::CrRead { .. } | Exit::Clts { .. } | Exit::Lmsw { .. } => {
            let rip = cx.rip()?;
            let cr = match *exit {
                Exit::CrRead { cr, .. } => cr,
                _ => 0,
            };
            cx.stop(StopReason::UnhandledExit {
                reason: REASON_CONTROL_REGISTER,
                rip,
                qualification: u64::from(cr),
            })
        }
        Exit::Xsetbv { length } => {
            if cr::xsetbv(cx)? {
                skip(cx, length)?
            } else {
                Next::Resume
            }
        }
        // INVD would throw away what the caches hold; the hypervisor does as WBINVD does, and
        // both need nothing of a VM whose memory is ordinary RAM.
        Exit::Invd { length } | Exit::Wbinvd { length } => skip(cx, length)?,
        // VMX is not offered (CPUID hides it): its instructions are invalid opcodes.
        Exit::VirtualizationInstruction { .. } => {
            cx.vm.vcpu.inject(Inject::INVALID_OPCODE)?;
            Next::Resume
        }
        Exit::Msr { write, length } => {
            if cr::msr(cx, write)? {
                skip(cx, length)?
            } else {
                cx.vm.vcpu.inject(Inject::GENERAL_PROTECTION)?;
                Next::Resume
            }
        }
        Exit::Fault(fault) => fault::fault(cx, &fault)?,
        Exit::TripleFault => {
            let rip = cx.rip()?;
            cx.stop(StopReason::TripleFault { rip })
        }
        Exit::EntryFailed { reason, detail } => cx.stop(StopReason::EntryFailed { reason, detail }),
        Exit::Misconfigured { .. } | Exit::Other { .. } => {
            let rip = cx.rip()?;
            let (reason, detail) = match *exit {
                Exit::Other { reason, detail } => (reason, detail),
                Exit::Misconfigured { gpa } => (REASON_EPT_MISCONFIGURATION, gpa),
                _ => (0, 0),
            };
            cx.stop(StopReason::UnhandledExit {
                reason,
                rip,
                qualification: detail,
            })
        }
    };
    Ok(next)
}

/// The control-register instruction at CS:RIP, decoded (None when it cannot be read or is not
/// one).
fn decode_cr<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
) -> Result<Option<(cr::CrInstruction, u8)>, VcpuError> {
    let paging = io::GuestPaging::read(&mut cx.vm.vcpu)?;
    let linear = cx.vm.vcpu.read(Reg::CsBase)?.wrapping_add(cx.rip()?);
    let code_bits = cx.vm.vcpu.read(Reg::CodeBits)? as u8;
    let mut bytes = [0u8; 15];
    let view = cx.vm.ram(cx.pool);
    let fetched =
        crate::paging::read_linear_prefix(paging.mode, paging.cr3, linear, &mut bytes, &view);
    Ok(fetched
        .ok()
        .and_then(|fetched| cr::decode_cr_instruction(&bytes[..fetched], code_bits)))
}

/// VMCALL's encoding.
pub const VMCALL: [u8; 3] = [0x0F, 0x01, 0xC1];

/// True when the instruction at CS:RIP is VMCALL (bytes that cannot be read are not).
fn at_vmcall<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
) -> Result<bool, VcpuError> {
    let paging = io::GuestPaging::read(&mut cx.vm.vcpu)?;
    let linear = cx.vm.vcpu.read(Reg::CsBase)?.wrapping_add(cx.rip()?);
    let mut bytes = [0u8; 3];
    let view = cx.vm.ram(cx.pool);
    let read = crate::paging::read_linear(paging.mode, paging.cr3, linear, &mut bytes, &view);
    Ok(read.is_ok() && bytes == VMCALL)
}

/// Basic exit-reason numbers for stop reasons (SDM Appendix C).
const REASON_CONTROL_REGISTER: u16 = 28;
const REASON_EPT_MISCONFIGURATION: u16 = 49;

/// Moves RIP past the instruction that exited and ends any blocking by STI or MOV SS, which
/// covered only that instruction (an `sti; hlt` pair would otherwise keep interrupts blocked
/// after the HLT).
fn skip<V: Vcpu, F, H>(cx: &mut Context<'_, V, F, H>, length: u8) -> Result<Next, VcpuError> {
    let vcpu = &mut cx.vm.vcpu;
    if vcpu.read(Reg::InterruptShadow)? != 0 {
        vcpu.write(Reg::InterruptShadow, 0)?;
    }
    let rip = vcpu.read(Reg::Rip)?;
    vcpu.write(Reg::Rip, rip.wrapping_add(u64::from(length)))?;
    Ok(Next::Resume)
}

/// HLT at `rip` (RIP already past it): blocks the VM unless a wake-up is already due.
fn halt<V: Vcpu, F: Frames, H: Host>(
    cx: &mut Context<'_, V, F, H>,
    rip: u64,
) -> Result<Next, VcpuError> {
    /// RFLAGS.IF: an interrupt can end the halt.
    const RFLAGS_IF: u64 = 1 << 9;
    let interrupts = cx.vm.vcpu.read(Reg::Rflags)? & RFLAGS_IF != 0;
    let now = cx.host.now();
    let vm = &mut *cx.vm;
    vm.platform.advance_timer(now);
    // A HLT whose wake-up is already due just continues.
    let timer_due = vm.timer_deadline.is_some_and(|deadline| deadline <= now);
    if timer_due || (interrupts && vm.platform.lapic.pending_vector().is_some()) {
        if timer_due {
            vm.timer_deadline = None;
        }
        Ok(Next::Resume)
    } else {
        vm.state = RunState::Blocked(Blocked::Halted { rip, interrupts });
        Ok(Next::Leave)
    }
}

/// A VM's platform output: console lines to COM1 (with a console event), disk transfers as
/// records.
#[allow(missing_debug_implementations)]
pub struct Output<'a, H> {
    pub host: &'a mut H,
    pub vm: u16,
}

impl<H: Host> PlatformOutput for Output<'_, H> {
    fn console_line(&mut self, line: &[u8], ended: bool) {
        self.host.console_line(self.vm, line);
        let now = self.host.now();
        let bytes = u32::try_from(line.len() + usize::from(ended)).unwrap_or(u32::MAX);
        self.host.exporter().event(
            now,
            Event::Console {
                dt: 0,
                vm: self.vm,
                bytes,
            },
        );
    }

    fn disk_io(&mut self, io: DiskIo) {
        let now = self.host.now();
        self.host.exporter().emit_caused(
            self.vm,
            &Record::DiskIo {
                tsc: now,
                vm: self.vm,
                lba: io.lba,
                sectors: io.sectors,
                write: io.kind == carousel_devices::DiskIoKind::Write,
            },
        );
    }

    fn now(&mut self) -> u64 {
        self.host.now()
    }

    fn drive(&mut self) -> Option<&mut dyn crate::disk::Drive> {
        self.host.drive()
    }
}

/// The guest's registers as the instruction emulator sees them (RSP read and written apart).
#[derive(Debug)]
pub struct EmulatedRegisters<'a> {
    pub regs: &'a mut GuestRegisters,
    pub rsp: u64,
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

/// The value of general-purpose register number `gpr` (0 = RAX ... 15 = R15).
fn gpr_value<V: Vcpu>(vcpu: &mut V, gpr: u8) -> Result<u64, VcpuError> {
    match Gpr::ALL.get(usize::from(gpr)) {
        Some(Gpr::Rsp) => vcpu.read(Reg::Rsp),
        Some(&register) => Ok(EmulatedRegisters {
            regs: vcpu.registers(),
            rsp: 0,
        }
        .get(register)),
        None => Ok(0),
    }
}
