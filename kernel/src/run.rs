//! The run loop: build every VM, then take turns until none is left.
//!
//! For now the turns are plain round robin with one quantum for everybody; the scheduler crate
//! takes over the choice (weights, accounting) in the scheduling work.

use alloc::string::String;
use alloc::vec::Vec;

use carousel_protocol::config::RunConfig;
use carousel_protocol::record::{Record, StopReason};
use carousel_vmx::controls::cycles_to_preemption_ticks;
use carousel_vmx::fail::VmFail;
use carousel_vmx::fields::VMX_PREEMPTION_TIMER_VALUE;
use carousel_vmx::instructions as vmx;

use crate::exits::{self, Next};
use crate::vm::{load_failed, RunState, Vm};
use crate::vmm::Vmx;
use crate::{arch, export};

/// Builds the VMs of `config` and runs them until every one has stopped.
pub fn run(vmx: &Vmx, config: &RunConfig, modules: &[(String, &[u8])], tsc_hz: u64) {
    let mut vms: Vec<Vm> = Vec::with_capacity(config.vms.len());
    let quantum_cycles = tsc_hz.saturating_mul(u64::from(config.quantum_us)) / 1_000_000;
    let quantum_ticks =
        cycles_to_preemption_ticks(quantum_cycles, vmx.negotiated.preemption_timer_rate).max(1);
    for (id, vm_config) in config.vms.iter().enumerate() {
        let id = id as u16;
        let image = modules
            .iter()
            .find(|(name, _)| *name == vm_config.kernel_module);
        let built = match image {
            Some((_, bytes)) => Vm::new(vmx, id, vm_config, bytes),
            None => Err(load_failed(format_args!(
                "module `{}` is missing",
                vm_config.kernel_module
            ))),
        };
        match built {
            Ok(vm) => {
                log::info!(
                    "vm {} ready: {} MiB, quantum {} us = {} timer ticks",
                    vm.name,
                    vm_config.memory_bytes >> 20,
                    config.quantum_us,
                    quantum_ticks
                );
                vms.push(vm);
            }
            Err(reason) => {
                log::error!("vm {} not started: {reason}", vm_config.name);
                export::emit(Record::VmStopped {
                    tsc: arch::rdtsc(),
                    vm: id,
                    reason,
                });
            }
        }
    }
    let mut current = 0;
    while let Some(index) = next_runnable(&vms, current) {
        run_slice(&mut vms[index], quantum_ticks);
        if vms.iter().all(|vm| vm.state != RunState::Runnable) {
            // Nothing can wake a blocked VM yet (no virtual timers or device interrupts): a
            // VM that halted is stuck for good.
            for vm in vms.iter_mut() {
                if let RunState::Blocked { rip } = vm.state {
                    vm.stop(StopReason::HaltedForever { rip });
                }
            }
        }
        current = index + 1;
    }
    for vm in vms {
        vm.memory.release();
    }
}

/// The first runnable VM at or after `start`, wrapping around.
fn next_runnable(vms: &[Vm], start: usize) -> Option<usize> {
    let count = vms.len();
    (0..count)
        .map(|step| (start + step) % count)
        .find(|&index| vms[index].state == RunState::Runnable)
}

/// Runs `vm` until its slice ends, it blocks, or it stops.
fn run_slice(vm: &mut Vm, quantum_ticks: u32) {
    let fail = |vm: &mut Vm, error: VmFail| {
        vm.stop(StopReason::VmxError {
            message: alloc::format!("{error}"),
        });
    };
    if let Err(error) = vm.make_current() {
        return fail(vm, error);
    }
    // SAFETY: this VM's VMCS is current; the timer value is a plain count.
    if let Err(error) = unsafe { vmx::vmwrite32(VMX_PREEMPTION_TIMER_VALUE, quantum_ticks) } {
        return fail(vm, error);
    }
    loop {
        if let Err(error) = vm.enter() {
            return fail(vm, error);
        }
        let outcome = vmx::read_exit().and_then(|raw| exits::handle(vm, &raw));
        match outcome {
            Ok(Next::Resume) => continue,
            Ok(Next::Switch | Next::Leave) => return,
            Err(error) => return fail(vm, error),
        }
    }
}
