//! What a trace samples over time, kept as it came for the charts and counters: each VM's
//! memory maps, its disk transfers, its exit intervals and the shared disk's requests.

use carousel_protocol::record::Record;

use super::disk::DiskServed;

/// One sample of a VM's guest-physical memory: one [`PageState`] byte per cell of
/// `pages_per_cell` pages, from guest-physical 0 up.
///
/// [`PageState`]: carousel_protocol::record::PageState
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryMap {
    pub tsc: u64,
    pub vm: u16,
    pub pages_per_cell: u32,
    pub cells: Vec<u8>,
}

/// One transfer a VM's disk accepted (an IDE command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskTransfer {
    pub tsc: u64,
    pub vm: u16,
    pub lba: u32,
    pub sectors: u16,
    pub write: bool,
}

/// One VM's exits over one metrics interval (which ended at `tsc` and lasted `interval`
/// cycles), summed over the exit reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInterval {
    pub tsc: u64,
    pub vm: u16,
    pub interval: u64,
    pub exits: u64,
    pub cycles: u64,
}

/// Each VM's compressed pages after one compression pass (a `Compression` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedPages {
    pub tsc: u64,
    /// Indexed by VM id.
    pub pages: Vec<u64>,
}

/// Every sample of a trace, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Samples {
    pub memory_maps: Vec<MemoryMap>,
    pub disk_transfers: Vec<DiskTransfer>,
    pub exit_intervals: Vec<ExitInterval>,
    /// The requests the shared disk served (a timed disk's `DiskServed` records).
    pub disk_served: Vec<DiskServed>,
    /// Each VM's compressed pages, pass by pass.
    pub compressed: Vec<CompressedPages>,
    /// The earliest time a timed record names (an exit interval counts from its start).
    pub earliest: Option<u64>,
}

impl Samples {
    /// Keeps what the next record samples.
    pub fn add(&mut self, record: &Record) {
        let tsc = match record {
            Record::MemoryMap {
                tsc,
                vm,
                pages_per_cell,
                cells,
            } => {
                self.memory_maps.push(MemoryMap {
                    tsc: *tsc,
                    vm: *vm,
                    pages_per_cell: *pages_per_cell,
                    cells: cells.clone(),
                });
                *tsc
            }
            Record::DiskIo {
                tsc,
                vm,
                lba,
                sectors,
                write,
            } => {
                self.disk_transfers.push(DiskTransfer {
                    tsc: *tsc,
                    vm: *vm,
                    lba: *lba,
                    sectors: *sectors,
                    write: *write,
                });
                *tsc
            }
            Record::ExitInterval {
                tsc,
                vm,
                interval,
                exits,
            } => {
                self.exit_intervals.push(ExitInterval {
                    tsc: *tsc,
                    vm: *vm,
                    interval: *interval,
                    exits: exits.iter().map(|stat| stat.count).sum(),
                    cycles: exits
                        .iter()
                        .fold(0u64, |sum, stat| sum.saturating_add(stat.cycles)),
                });
                tsc.saturating_sub(*interval)
            }
            Record::DiskServed { .. } => {
                let Some(request) = DiskServed::from_record(record) else {
                    return;
                };
                self.disk_served.push(request);
                request.arrived()
            }
            Record::Compression {
                tsc,
                compressed_pages,
                ..
            } => {
                self.compressed.push(CompressedPages {
                    tsc: *tsc,
                    pages: compressed_pages.clone(),
                });
                *tsc
            }
            Record::VmStopped { tsc, .. }
            | Record::Check { tsc, .. }
            | Record::GuestMetric { tsc, .. } => *tsc,
            _ => return,
        };
        self.earliest = Some(self.earliest.map_or(tsc, |earliest| earliest.min(tsc)));
    }
}
