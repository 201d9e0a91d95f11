//! A lab as the hypervisor receives it: its [`RunConfig`], and the names of the boot image's
//! modules that carry each VM's kernel and disk.

use carousel_protocol::config::{RunConfig, VmConfig};

use super::definition::Lab;

impl Lab {
    /// The run configuration the hypervisor receives, with the TSC frequency the backend
    /// implies (Bochs: `ips`; elsewhere 0, calibrate at boot); `persist_all` is `carousel run
    /// --persist`.
    pub fn run_config(&self, tsc_hz: u64, persist_all: bool) -> RunConfig {
        let vms = self
            .vms
            .iter()
            .enumerate()
            .map(|(index, vm)| VmConfig {
                name: vm.name.clone(),
                kernel_module: kernel_module(index),
                disk_module: vm.disk.as_ref().map(|_| disk_module(index)),
                memory_bytes: u64::from(vm.memory_mib) << 20,
                weight: vm.weight,
                args: vm.args.clone(),
                persist: self.persists(index, persist_all),
                initial_balloon_pages: u64::from(vm.balloon_mib) << 8,
                lazy_memory: self.lazy_memory,
                balloon_target_pages: u64::from(vm.balloon_target_mib) << 8,
            })
            .collect();
        let mut config = RunConfig::new(self.quantum_us, tsc_hz, self.hash, vms);
        config.idle_threshold_us = self.idle_threshold_us;
        config.interval_us = self.interval_us;
        config.trace = self.trace;
        config.memory_sample_us = self.memory_sample_ms.saturating_mul(1000);
        config.merge_scan_pages = self.merge_scan_pages;
        config.boot_stagger_us = self.boot_stagger_ms.saturating_mul(1000);
        if let Some((pct, step_mib)) = self.balloon_rule {
            config.balloon_when_free_below_pct = Some(pct);
            config.balloon_step_pages = u64::from(step_mib) << 8;
        }
        config.guest_page_budget = self.guest_memory_budget_mib.map(|mib| u64::from(mib) << 8);
        config.commit = crate::repo::commit();
        config.policy = self.policy;
        config.quantum_clock = self.quantum_clock;
        config
    }
}

/// Multiboot2 module command line of VM `index`'s kernel.
pub fn kernel_module(index: usize) -> String {
    format!("vm{index}.kernel")
}

/// Multiboot2 module command line of VM `index`'s disk image.
pub fn disk_module(index: usize) -> String {
    format!("vm{index}.disk")
}
