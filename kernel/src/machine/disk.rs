//! The shared disk in front of every VM's virtual IDE: when the lab gives the device a service
//! time (`run.disk`) or caps a VM (`vm.disk_mib_per_s`), each VM's IDE channel is timed: a
//! command the guest has made waits (BSY) in one queue ([`carousel_scheduler::DiskQueue`], FIFO
//! or weighted fair) and completes, with its interrupt, when the queue says the device served
//! it. The data itself moves as before (a write reaches the drive as the guest writes it); only
//! the completion waits. Untimed, nothing here runs and commands complete at once.
//!
//! Per VM it keeps what the DiskQueue record reports at the end: requests and sectors, each
//! request's wait for the device and its service time, and the time the VM sat blocked (halted
//! or idle) with a request outstanding: "blocked on disk".

use alloc::vec::Vec;

use carousel_devices::ide::DiskIoKind;
use carousel_protocol::config::{DiskQueuePolicy, RunConfig};
use carousel_protocol::record::DiskQueueSummary;
use carousel_scheduler::{
    Cycles, DiskCompletion, DiskConfigError, DiskPolicy, DiskQueue, DiskShare, DiskTiming,
    LatencyHistogram, VmId,
};

use super::us_to_cycles;
use crate::platform::Platform;

/// Bytes per sector, as the rates count them.
const SECTOR_BYTES: u128 = 512;
/// Bytes per MiB.
const MIB: u128 = 1 << 20;

/// TSC cycles one sector takes at `mib_per_s` (0: none, the rate is unlimited); at least one
/// cycle for any finite rate.
fn cycles_per_sector(mib_per_s: u32, tsc_hz: u64) -> Cycles {
    if mib_per_s == 0 {
        return 0;
    }
    let cycles = (u128::from(tsc_hz) * SECTOR_BYTES).div_ceil(u128::from(mib_per_s) * MIB);
    cycles.clamp(1, u128::from(u64::MAX)) as Cycles
}

/// One VM's requests so far.
#[derive(Debug, Default)]
struct VmDisk {
    requests: u64,
    sectors: u64,
    waits: LatencyHistogram,
    services: LatencyHistogram,
    /// Cycles blocked with a request outstanding, and since when it is so now.
    blocked: u64,
    blocked_since: Option<Cycles>,
}

/// The queue and every VM's figures.
#[derive(Debug)]
pub(super) struct SharedDisk {
    queue: DiskQueue,
    vms: Vec<VmDisk>,
}

impl SharedDisk {
    /// The shared disk `config` asks for; None when it has no service time and no VM is capped
    /// (commands then complete at once, as the drive answers).
    pub(super) fn new(config: &RunConfig, tsc_hz: u64) -> Result<Option<Self>, DiskConfigError> {
        let capped = config.vms.iter().any(|vm| vm.disk_mib_per_s > 0);
        if !config.disk.has_service_time() && !capped {
            return Ok(None);
        }
        let timing = DiskTiming {
            latency: us_to_cycles(u64::from(config.disk.latency_us), tsc_hz),
            cycles_per_sector: cycles_per_sector(config.disk.mib_per_s, tsc_hz),
        };
        let policy = match config.disk.policy {
            DiskQueuePolicy::Fifo => DiskPolicy::Fifo,
            DiskQueuePolicy::Wfq => DiskPolicy::Wfq,
        };
        let shares: Vec<DiskShare> = config
            .vms
            .iter()
            .map(|vm| DiskShare {
                weight: vm.disk_weight,
                cap_cycles_per_sector: (vm.disk_mib_per_s > 0)
                    .then(|| cycles_per_sector(vm.disk_mib_per_s, tsc_hz)),
            })
            .collect();
        let anticipate = us_to_cycles(u64::from(config.disk.anticipate_us), tsc_hz);
        let queue = DiskQueue::with_anticipation(policy, timing, anticipate, &shares)?;
        log::info!(
            "shared disk: {} us a request, {} MiB/s ({} cycles a sector), {} queue (anticipating {} us), {} VMs capped",
            config.disk.latency_us,
            config.disk.mib_per_s,
            timing.cycles_per_sector,
            policy.name(),
            config.disk.anticipate_us,
            shares
                .iter()
                .filter(|share| share.cap_cycles_per_sector.is_some())
                .count(),
        );
        let vms = (0..config.vms.len()).map(|_| VmDisk::default()).collect();
        Ok(Some(Self { queue, vms }))
    }

    /// After an exit of VM `id`: a command its channel dropped (a reset) leaves the queue, a
    /// command it began waiting for the disk joins it. True when the queue changed (its next
    /// event may have).
    pub(super) fn take_from(&mut self, now: Cycles, id: VmId, platform: &mut Platform) -> bool {
        let mut changed = false;
        if platform.ide.take_cancel() {
            self.queue.forget(now, id);
            changed = true;
        }
        if let Some(request) = platform.ide.take_request() {
            // The channel hands out one command at a time (a BSY drive ignores commands), so
            // the queue cannot refuse it; were it to, the refusal is counted there and the
            // command completes at once rather than stay BSY for ever.
            let write = request.kind == DiskIoKind::Write;
            if self.queue.submit(now, id, request.sectors, write).is_err() {
                platform.complete_disk();
            }
            changed = true;
        }
        changed
    }

    /// VM `id` left the run at `now`: its request leaves the queue (one in service finishes
    /// silently), and its time blocked on disk ends.
    pub(super) fn stopped(&mut self, id: VmId, now: Cycles) {
        self.queue.forget(now, id);
        self.woken(id, now);
    }

    /// When the queue must next be advanced: a completion, or a capped request's turn.
    pub(super) fn next_event(&self) -> Option<Cycles> {
        self.queue.next_event()
    }

    /// The requests the device has served by `now`, each counted for its VM; `complete` ends
    /// each one's command in its VM (and sends its record).
    pub(super) fn complete_due(&mut self, now: Cycles, mut complete: impl FnMut(&DiskCompletion)) {
        let Self { queue, vms } = self;
        for completion in queue.advance(now) {
            if let Some(vm) = vms.get_mut(usize::from(completion.vm)) {
                vm.requests += 1;
                vm.sectors += u64::from(completion.sectors);
                vm.waits.record(completion.wait());
                vm.services.record(completion.service());
            }
            complete(&completion);
        }
    }

    /// Whether a request of VM `id` waits for the device or is being served.
    pub(super) fn outstanding(&self, id: VmId) -> bool {
        self.queue.outstanding(id)
    }

    /// VM `id` blocked at `now`: blocked on its disk if a request of its is outstanding.
    pub(super) fn blocked(&mut self, id: VmId, now: Cycles) {
        let waiting = self.queue.outstanding(id);
        if let Some(vm) = self.vms.get_mut(usize::from(id)) {
            vm.blocked_since = waiting.then_some(now);
        }
    }

    /// VM `id` woke (or left the run) at `at`: the time it sat blocked on its disk ends.
    pub(super) fn woken(&mut self, id: VmId, at: Cycles) {
        if let Some(vm) = self.vms.get_mut(usize::from(id)) {
            if let Some(since) = vm.blocked_since.take() {
                vm.blocked += at.saturating_sub(since);
            }
        }
    }

    /// Each VM's figures, for the DiskQueue records at the end of the run.
    pub(super) fn summaries(&self) -> impl Iterator<Item = DiskQueueSummary> + '_ {
        self.vms.iter().enumerate().map(|(id, vm)| {
            let permille = |histogram: &LatencyHistogram, per_mille| {
                histogram.percentile(per_mille).unwrap_or(0)
            };
            DiskQueueSummary {
                vm: id as u16,
                requests: vm.requests,
                sectors: vm.sectors,
                wait_p50: permille(&vm.waits, 500),
                wait_p99: permille(&vm.waits, 990),
                wait_max: vm.waits.max().unwrap_or(0),
                service_p50: permille(&vm.services, 500),
                service_p99: permille(&vm.services, 990),
                service_max: vm.services.max().unwrap_or(0),
                blocked_disk: vm.blocked,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_cycles_per_sector() {
        // 1 MiB/s at 1 GHz: 2,048 sectors a second, 488,282 cycles each (rounded up).
        assert_eq!(cycles_per_sector(1, 1_000_000_000), 488_282);
        assert_eq!(cycles_per_sector(0, 1_000_000_000), 0);
        // A very fast device is never free.
        assert_eq!(cycles_per_sector(100_000, 1_000), 1);
    }
}
