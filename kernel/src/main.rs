//! The Carousel hypervisor: GRUB loads it with multiboot2, it switches to long mode, reads the
//! run configuration and guest images from the GRUB modules, turns VMX on and runs the VMs until
//! none is left.
//!
//! The binary is the hardware half ([`hw`]): boot, the frame allocator, the serial lines, VMX
//! and the VMX vCPU. What the VMs do, and what the hypervisor decides about it, is the library
//! `carousel_kernel` (host-tested): this file wires the two together.
#![no_std]
#![no_main]

extern crate alloc;

mod hw;

use alloc::string::String;
use alloc::vec::Vec;

use carousel_kernel::console::PREFIX;
use carousel_kernel::host::Host;
use carousel_kernel::machine::{self, Machine};
use carousel_kernel::memory::{Frames, HostMemory};
use carousel_protocol::config::{DiskSource, RunConfig};
use carousel_protocol::record::Record;
use carousel_protocol::RUN_CONFIG_MODULE;
use multiboot2::{BootInformation, BootInformationHeader};

use hw::host::{self as host, HwHost};
use hw::svm::{self, SvmVcpu};
use hw::vcpu::VmxVcpu;
use hw::{arch, physical, vmm};

/// EAX value from a multiboot2 loader (Multiboot2 1.6, 3.3).
const MULTIBOOT2_BOOTLOADER_MAGIC: u32 = 0x36D7_6289;

/// How the hypervisor ends the emulator, as the host tool reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Every VM ran to its end (whatever the VMs' own outcomes).
    RunEnded = 0x10,
    /// The hypervisor failed (panic, broken boot).
    HypervisorFailed = 0x11,
    /// This CPU cannot run Carousel (no VMX, a missing VMX feature).
    Unsupported = 0x12,
}

/// Ends the emulator: QEMU's isa-debug-exit (port 0xF4) carries the code; Bochs takes the
/// "Shutdown" string on port 0x8900; ACPI S5 on port 0xB004 is the last resort.
pub fn exit_emulator(code: ExitCode) -> ! {
    // The last bytes (the RunEnd record above all) must leave the UARTs first: an emulator
    // powered off mid-transmission loses them.
    host::flush_console();
    // SAFETY: COM1 and COM2 are the hypervisor's own UARTs.
    unsafe {
        arch::drain_uart(host::COM1);
        arch::drain_uart(host::COM2);
    }
    // SAFETY: these ports are the emulators' power-off devices; the run is over, so nothing the
    // hypervisor does afterwards matters.
    unsafe {
        arch::outb(0xF4, code as u8);
        for &byte in b"Shutdown" {
            arch::outb(0x8900, byte);
        }
        arch::outw(0xB004, 0x2000);
    }
    arch::halt_forever()
}

/// Reports why the hypervisor cannot go on and ends the emulator.
fn fail(code: ExitCode, message: core::fmt::Arguments<'_>) -> ! {
    log::error!("{message}");
    exit_emulator(code)
}

#[unsafe(no_mangle)]
extern "C" fn kernel_main(magic: u32, info_address: u32) -> ! {
    host::init_console();
    let host_tables = arch::init_tables();
    arch::mask_legacy_pic();
    log::info!("Carousel hypervisor {} starting", env!("CARGO_PKG_VERSION"));
    if magic != MULTIBOOT2_BOOTLOADER_MAGIC {
        fail(
            ExitCode::HypervisorFailed,
            format_args!("not booted by a multiboot2 loader (EAX {magic:#x})"),
        );
    }
    // SAFETY: GRUB passed the address of its multiboot2 information in EBX; it stays intact
    // because the frame allocator reserves it before handing out memory.
    let boot_info =
        match unsafe { BootInformation::load(info_address as *const BootInformationHeader) } {
            Ok(info) => info,
            Err(error) => fail(
                ExitCode::HypervisorFailed,
                format_args!("bad multiboot2 information: {error:?}"),
            ),
        };
    let (mut frames, report) = match physical::init(&boot_info) {
        Ok(initialised) => initialised,
        Err(error) => fail(ExitCode::HypervisorFailed, format_args!("memory: {error}")),
    };
    log::info!(
        "memory: {} MiB available, {} MiB free for guests",
        report.available_bytes >> 20,
        report.free_after_heap_bytes >> 20
    );
    // Where GRUB put each module: [start, start + length) below 4 GiB (identity mapped), which
    // the frame allocator reserved, so it stays untouched for the whole run.
    let placed: Vec<(String, usize, usize)> = boot_info
        .module_tags()
        .map(|module| {
            (
                String::from(module.cmdline().unwrap_or("")),
                module.start_address() as usize,
                module.module_size() as usize,
            )
        })
        .collect();
    let Some(&(_, config_start, config_length)) =
        placed.iter().find(|(name, _, _)| name == RUN_CONFIG_MODULE)
    else {
        fail(
            ExitCode::HypervisorFailed,
            format_args!("no `{RUN_CONFIG_MODULE}` module: boot through `carousel run`"),
        )
    };
    // SAFETY: the module's placement (above); the configuration is only read.
    let config_bytes =
        unsafe { core::slice::from_raw_parts(config_start as *const u8, config_length) };
    let config = match RunConfig::from_bytes(config_bytes) {
        Ok(config) => config,
        Err(error) => fail(ExitCode::HypervisorFailed, format_args!("{error}")),
    };
    host::start_buffering(config.vms.iter().map(|vm| vm.name.as_str()));
    let mut hw_host = HwHost::new();
    hw_host.exporter().set_vms(config.vms.len());
    let cpu = vmm::cpu_name();
    log::info!("cpu: {cpu}");
    // Disk modules (`disk_backend = "memory"`) are served in place and written: each is handed
    // out once, as the only reference to its bytes; every other module is only read.
    let is_disk = |name: &str| {
        config
            .vms
            .iter()
            .any(|vm| matches!(&vm.disk, Some(DiskSource::Module { name: disk }) if disk == name))
    };
    let mut disks: Vec<Option<(String, usize, usize)>> = placed
        .iter()
        .filter(|(name, _, _)| is_disk(name))
        .cloned()
        .map(Some)
        .collect();
    let module = |name: &str| {
        placed
            .iter()
            .find(|(cmdline, _, _)| cmdline == name && !is_disk(name))
            // SAFETY: the module's placement (above); no module that is a disk (and so written)
            // is ever read through this shared slice.
            .map(|&(_, start, length)| unsafe {
                core::slice::from_raw_parts(start as *const u8, length)
            })
    };
    let disk_module = |name: &str| -> Option<&'static mut [u8]> {
        let slot = disks
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|(cmdline, _, _)| cmdline == name))?;
        let (_, start, length) = slot.take()?;
        // SAFETY: the module's placement (above); the slot was taken, so this is the only
        // reference to these bytes for the rest of the run.
        Some(unsafe { core::slice::from_raw_parts_mut(start as *mut u8, length) })
    };
    if let Some(drive) = &config.drive {
        match hw::ata::AtaDrive::probe(drive) {
            Ok(found) => hw_host.set_drive(found),
            Err(error) => log::error!("shared drive: {error}; VMs with disks there cannot start"),
        }
    }
    // VMX where CPUID offers it, else SVM; with neither, VMX's message says what is missing.
    const CPUID_ECX_VMX: u32 = 1 << 5;
    if arch::cpuid(1, 0)[2] & CPUID_ECX_VMX == 0 && svm::offered() {
        let (tsc_hz, tsc_source) = vmm::tsc_frequency(config.tsc_hz);
        let svm = match svm::Svm::enable(tsc_hz) {
            Ok(svm) => svm,
            Err(error) => fail(
                ExitCode::Unsupported,
                format_args!("this CPU cannot run Carousel: {error}"),
            ),
        };
        log::info!(
            "SVM on: revision {}, {} ASIDs, features {:#x}, TSC {} Hz ({:?})",
            svm.features.revision,
            svm.features.asids,
            svm.features.edx,
            tsc_hz,
            tsc_source
        );
        hello(&config, &mut hw_host, cpu, tsc_hz, tsc_source, 0);
        let facts = svm.cpu_facts();
        let pool = HostMemory::new(frames, config.guest_page_budget);
        run(
            &config,
            module,
            disk_module,
            pool,
            hw_host,
            facts,
            tsc_hz,
            |setup, _| Ok(SvmVcpu::create(&svm, setup)),
        )
    }
    let vmx = match vmm::Vmx::enable(host_tables, &mut frames) {
        Ok(vmx) => vmx,
        Err(error) => fail(
            ExitCode::Unsupported,
            format_args!("this CPU cannot run Carousel: {error}"),
        ),
    };
    let (tsc_hz, tsc_source) = vmm::tsc_frequency(config.tsc_hz);
    log::info!(
        "VMX on: VMCS revision {:#x}, preemption timer rate {}, TSC {} Hz ({:?})",
        vmx.negotiated.vmcs_revision,
        vmx.negotiated.preemption_timer_rate,
        tsc_hz,
        tsc_source
    );
    let rate = vmx.negotiated.preemption_timer_rate;
    hello(&config, &mut hw_host, cpu, tsc_hz, tsc_source, rate);
    let facts = vmm::cpu_facts(&vmx);
    let pool = HostMemory::new(frames, config.guest_page_budget);
    let revision = vmx.negotiated.vmcs_revision;
    run(
        &config,
        module,
        disk_module,
        pool,
        hw_host,
        facts,
        tsc_hz,
        |setup, pool| {
            let region = pool
                .allocate()
                .ok_or_else(|| carousel_kernel::vm::load_failed("no frame for the VMCS"))?;
            pool.frames.bytes_mut(region)[..4].copy_from_slice(&revision.to_le_bytes());
            VmxVcpu::create(&vmx, setup, region).map_err(|error| {
                carousel_kernel::vm::load_failed(format_args!("VMCS setup failed: {error}"))
            })
        },
    )
}

/// The run's first record.
fn hello(
    config: &RunConfig,
    hw_host: &mut HwHost,
    cpu: String,
    tsc_hz: u64,
    tsc_source: carousel_protocol::record::TscSource,
    preemption_timer_rate: u8,
) {
    hw_host.set_tsc_hz(tsc_hz);
    hw_host.exporter().set_level(config.trace);
    hw_host.exporter().emit(&Record::Hello {
        version: carousel_protocol::FORMAT_VERSION,
        lab_hash: config.lab_hash,
        tsc_hz,
        tsc_source,
        preemption_timer_rate,
        cpu,
        vms: config.vms.iter().map(|vm| vm.name.clone()).collect(),
        commit: config.commit.clone(),
        level: config.trace,
        weights: config.vms.iter().map(|vm| vm.weight).collect(),
        quantum_clock: config.quantum_clock,
    });
}

/// Builds the VMs with `make_vcpu`, runs them to the end and ends the emulator.
#[allow(clippy::too_many_arguments)]
fn run<'m, V: carousel_kernel::vcpu::Vcpu>(
    config: &RunConfig,
    module: impl Fn(&str) -> Option<&'m [u8]>,
    disk_module: impl FnMut(&str) -> Option<&'static mut [u8]>,
    mut pool: HostMemory<physical::HwFrames>,
    mut hw_host: HwHost,
    facts: carousel_kernel::vm::CpuFacts,
    tsc_hz: u64,
    make_vcpu: impl FnMut(
        &carousel_kernel::vm::VcpuSetup,
        &mut HostMemory<physical::HwFrames>,
    ) -> Result<V, carousel_protocol::record::StopReason>,
) -> ! {
    let vms = machine::build_vms(
        config,
        module,
        disk_module,
        &mut pool,
        &mut hw_host,
        facts,
        tsc_hz,
        make_vcpu,
    );
    let mut machine = match Machine::new(config, vms, pool, hw_host, tsc_hz) {
        Ok(machine) => machine,
        Err(error) => fail(ExitCode::HypervisorFailed, format_args!("{error}")),
    };
    // Ends with the RunEnd record, after every console byte.
    machine.run();
    log::info!("run ended");
    exit_emulator(ExitCode::RunEnded)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    host::take_over_for_panic();
    host::write_fmt(format_args!("{PREFIX}PANIC: {info}\n"));
    exit_emulator(ExitCode::HypervisorFailed)
}
