//! A lab as the hypervisor receives it: its [`RunConfig`], and the names of the boot image's
//! modules that carry each VM's kernel (and, with `disk_backend = "memory"`, its disk).

use carousel_protocol::config::{
    CompressionConfig, DiskSource, RunConfig, ScheduledChange, VmConfig,
};

use std::path::Path;

use super::definition::{Disk, DiskBackend, Lab};
use crate::image::drive::{Extent, Manifest, ManifestVm, Source};
pub use crate::image::iso::{disk_module, kernel_module};

impl Lab {
    /// The run configuration the hypervisor receives, with the TSC frequency the backend
    /// implies (Bochs: `ips`; elsewhere 0, calibrate at boot) and, with the drive backend, the
    /// run's drive (`drive`: where each VM's extent lies).
    pub fn run_config(&self, tsc_hz: u64, drive: Option<&Manifest>) -> RunConfig {
        let extent = |name: &str| -> Option<Extent> {
            drive?
                .vms
                .iter()
                .find(|vm| vm.name == name)
                .map(|vm| vm.extent)
        };
        let vms = self
            .vms
            .iter()
            .enumerate()
            .map(|(index, vm)| VmConfig {
                name: vm.name.clone(),
                kernel_module: kernel_module(index),
                disk: vm.disk.as_ref().and_then(|_| match self.disk_backend {
                    DiskBackend::Memory => Some(DiskSource::Module {
                        name: disk_module(index),
                    }),
                    DiskBackend::Drive => extent(&vm.name).map(|extent| DiskSource::Drive {
                        start: extent.start,
                        sectors: extent.sectors,
                    }),
                }),
                memory_bytes: u64::from(vm.memory_mib) << 20,
                weight: vm.weight,
                cap_pct: vm.cap_pct,
                disk_weight: vm.disk_weight,
                disk_mib_per_s: vm.disk_mib_per_s,
                args: vm.args.clone(),
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
        config.compression = CompressionConfig {
            after_samples: self.compression.after_samples,
            scan_pages: self.compression.scan_pages,
            pool_pages: self.compression.pool_mib.saturating_mul(256),
        };
        config.boot_stagger_us = self.boot_stagger_ms.saturating_mul(1000);
        if let Some((pct, step_mib)) = self.balloon_rule {
            config.balloon_when_free_below_pct = Some(pct);
            config.balloon_step_pages = u64::from(step_mib) << 8;
        }
        config.guest_page_budget = self.guest_memory_budget_mib.map(|mib| u64::from(mib) << 8);
        config.commit = crate::repo::commit();
        config.policy = self.policy;
        config.credit = self.credit;
        config.disk = self.disk_model;
        config.quantum_clock = self.quantum_clock;
        config.drive = drive.map(crate::image::drive::drive_config);
        config.changes = self
            .changes
            .iter()
            .map(|change| ScheduledChange {
                at_us: u64::from(change.at_ms) * 1000,
                setting: change.setting,
            })
            .collect();
        config
    }
}

impl Lab {
    /// The bytes of VM `index`'s disk, if it has one (an image file's size as it is now).
    pub fn disk_bytes(&self, index: usize) -> Option<u64> {
        match self.vms.get(index)?.disk.as_ref()? {
            Disk::File(path) => Some(std::fs::metadata(path).map_or(0, |meta| meta.len())),
            Disk::Blank { kib } => Some(u64::from(*kib) * 1024),
        }
    }

    /// MiB of emulator RAM the disks take with `disk_backend = "memory"` (0 on the drive).
    pub fn memory_disk_mib(&self) -> u64 {
        if self.disk_backend != DiskBackend::Memory {
            return 0;
        }
        let bytes: u64 = (0..self.vms.len()).filter_map(|i| self.disk_bytes(i)).sum();
        bytes.div_ceil(1 << 20)
    }

    /// The shared drive of a run in `out` (drive backend, some VM with a disk): each VM's
    /// extent, the image it persists into and whether it does (`persist_all`: `carousel run
    /// --persist`), and what fills each extent.
    pub fn drive_manifest(
        &self,
        out: &Path,
        run_id: u64,
        persist_all: bool,
    ) -> Option<(Manifest, Vec<(Extent, Source)>)> {
        if self.disk_backend != DiskBackend::Drive || self.vms.iter().all(|vm| vm.disk.is_none()) {
            return None;
        }
        let sizes: Vec<Option<u64>> = (0..self.vms.len()).map(|i| self.disk_bytes(i)).collect();
        let (extents, sectors) = crate::image::drive::plan(&sizes);
        let mut vms = Vec::new();
        let mut sources = Vec::new();
        for (index, (vm, extent)) in self.vms.iter().zip(extents).enumerate() {
            let (Some(disk), Some(extent)) = (&vm.disk, extent) else {
                continue;
            };
            vms.push(ManifestVm {
                name: vm.name.clone(),
                extent,
                image: disk.path(out, &vm.name),
                persist: self.persists(index, persist_all),
            });
            sources.push((
                extent,
                match disk {
                    Disk::File(path) => Source::File(path.clone()),
                    Disk::Blank { .. } => Source::Blank,
                },
            ));
        }
        Some((
            Manifest {
                run_id,
                sectors,
                vms,
            },
            sources,
        ))
    }
}
