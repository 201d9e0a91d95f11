//! The shared disk over time, rebuilt from its `DiskServed` records (one per request of a timed
//! disk: when it completed, how long it waited for the device and how long the device took).
//!
//! What is here: [`DiskServed`], one request with its arrival, start and completion; and
//! [`disk_intervals`], which cuts the run into the report's intervals and gives each the
//! device's queue length (requests outstanding: waiting or in service, averaged over the
//! interval, and its largest), the share of it the device was busy, and per VM its requests
//! completed in the interval, their sectors read and written, and their wait and service times
//! (p50/p99/max, nearest rank, exact).
//!
//! What is not: the hypervisor's end-of-run figures (the `DiskQueue` records, in
//! [`super::accounting`]). Requests whose records were lost to a gap in the trace are missing
//! here, and nowhere else: the report says the trace had gaps.

use carousel_protocol::record::Record;

/// One request the shared disk served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskServed {
    /// When the device completed it.
    pub tsc: u64,
    pub vm: u16,
    pub sectors: u32,
    pub write: bool,
    /// Cycles from its arrival to the start of its service.
    pub wait: u64,
    /// Cycles the device took.
    pub service: u64,
}

impl DiskServed {
    /// The record's request, if it is a `DiskServed` record.
    pub fn from_record(record: &Record) -> Option<Self> {
        match *record {
            Record::DiskServed {
                tsc,
                vm,
                sectors,
                write,
                wait,
                service,
            } => Some(Self {
                tsc,
                vm,
                sectors,
                write,
                wait,
                service,
            }),
            _ => None,
        }
    }

    /// When the device began serving it.
    pub fn started(&self) -> u64 {
        self.tsc.saturating_sub(self.service)
    }

    /// When it arrived in the queue.
    pub fn arrived(&self) -> u64 {
        self.started().saturating_sub(self.wait)
    }
}

/// Three figures of a set of cycle counts: the median, the 99th percentile and the largest
/// (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spread {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Spread {
    /// The spread of `values` (sorted here); None when there are none.
    fn of(values: &mut [u64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let at = |per_mille: usize| {
            let rank = (values.len() * per_mille).div_ceil(1000).max(1);
            values[rank - 1]
        };
        Some(Spread {
            p50: at(500),
            p99: at(990),
            max: *values.last()?,
        })
    }
}

/// One VM's requests completed in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskVmInterval {
    pub requests: u64,
    pub sectors_read: u64,
    pub sectors_written: u64,
    /// Their waits for the device and their service times (None without a request).
    pub wait: Option<Spread>,
    pub service: Option<Spread>,
}

/// The shared disk over one interval `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInterval {
    /// Requests outstanding (waiting or in service) integrated over the interval: cycles ×
    /// requests ([`Self::queue_average`] divides it by the interval).
    pub queue_area: u128,
    /// The most requests outstanding at once in the interval.
    pub queue_max: u64,
    /// Cycles of the interval the device was serving a request.
    pub busy: u64,
    /// Per VM (by id), its requests that completed in the interval.
    pub vms: Vec<DiskVmInterval>,
}

impl DiskInterval {
    /// Requests outstanding on average over an interval of `length` cycles.
    pub fn queue_average(&self, length: u64) -> f64 {
        self.queue_area as f64 / length.max(1) as f64
    }
}

/// The shared disk over each of `windows` (`[start, end)`, in order, not overlapping), for VMs
/// `0..vms` (more when a request names a higher id). A request counts in the window holding
/// its completion; the queue length and busy time are cut at the windows' bounds. Empty when
/// there are no requests (the disk was not timed).
pub fn disk_intervals(
    served: &[DiskServed],
    windows: &[(u64, u64)],
    vms: usize,
) -> Vec<DiskInterval> {
    if served.is_empty() || windows.is_empty() {
        return Vec::new();
    }
    let vms = served
        .iter()
        .map(|request| usize::from(request.vm) + 1)
        .max()
        .unwrap_or(0)
        .max(vms);
    let window_of = |tsc: u64| -> Option<usize> {
        let index = windows.partition_point(|&(_, end)| end <= tsc);
        (index < windows.len() && windows[index].0 <= tsc).then_some(index)
    };
    // Per window and VM: the waits and service times of its completions.
    let mut waits = vec![vec![Vec::new(); vms]; windows.len()];
    let mut services = vec![vec![Vec::new(); vms]; windows.len()];
    let mut rows: Vec<DiskInterval> = windows
        .iter()
        .map(|_| DiskInterval {
            queue_area: 0,
            queue_max: 0,
            busy: 0,
            vms: vec![DiskVmInterval::default(); vms],
        })
        .collect();
    for request in served {
        if let Some(index) = window_of(request.tsc) {
            let vm = usize::from(request.vm);
            let figures = &mut rows[index].vms[vm];
            figures.requests += 1;
            if request.write {
                figures.sectors_written += u64::from(request.sectors);
            } else {
                figures.sectors_read += u64::from(request.sectors);
            }
            waits[index][vm].push(request.wait);
            services[index][vm].push(request.service);
        }
        add_span(
            &mut rows,
            windows,
            request.started(),
            request.tsc,
            |row, cycles| {
                row.busy += cycles;
            },
        );
    }
    for (index, row) in rows.iter_mut().enumerate() {
        for (vm, figures) in row.vms.iter_mut().enumerate() {
            figures.wait = Spread::of(&mut waits[index][vm]);
            figures.service = Spread::of(&mut services[index][vm]);
        }
    }
    queue_lengths(served, windows, &mut rows);
    rows
}

/// Adds `[from, to)` cut at the windows' bounds: `add` gets each window's row and its part.
fn add_span(
    rows: &mut [DiskInterval],
    windows: &[(u64, u64)],
    from: u64,
    to: u64,
    mut add: impl FnMut(&mut DiskInterval, u64),
) {
    let first = windows.partition_point(|&(_, end)| end <= from);
    for (row, &(start, end)) in rows.iter_mut().zip(windows).skip(first) {
        if start >= to {
            break;
        }
        let part = to.min(end).saturating_sub(from.max(start));
        if part > 0 {
            add(row, part);
        }
    }
}

/// Every change of the device's queue length, in time order: `(tsc, +1)` at a request's
/// arrival, `(tsc, -1)` at its completion. At equal times completions come first, so a request
/// that completes as the next arrives does not count twice.
pub fn queue_changes(served: &[DiskServed]) -> Vec<(u64, i64)> {
    let mut changes: Vec<(u64, i64)> = served
        .iter()
        .flat_map(|request| [(request.arrived(), 1), (request.tsc, -1)])
        .collect();
    changes.sort_unstable();
    changes
}

/// Each window's average and largest queue length: the requests arrived and not yet completed,
/// replayed over [`queue_changes`].
fn queue_lengths(served: &[DiskServed], windows: &[(u64, u64)], rows: &mut [DiskInterval]) {
    let changes = queue_changes(served);
    let mut length = 0i64;
    let mut since = changes.first().map_or(0, |&(at, _)| at);
    for (at, change) in changes {
        if length > 0 && at > since {
            let outstanding = length as u64;
            add_span(rows, windows, since, at, |row, part| {
                row.queue_max = row.queue_max.max(outstanding);
                row.queue_area += u128::from(part) * u128::from(outstanding);
            });
        }
        length += change;
        since = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(tsc: u64, vm: u16, sectors: u32, write: bool, wait: u64, service: u64) -> DiskServed {
        DiskServed {
            tsc,
            vm,
            sectors,
            write,
            wait,
            service,
        }
    }

    /// Two VMs on a device of 100 cycles a request: vm0 arrives at 0 and is served 0..100; vm1
    /// arrives at 50, waits to 100 and is served to 200; vm0 again arrives at 250, served
    /// 250..350. Windows of 100 cycles.
    #[test]
    fn intervals_count_requests_where_they_complete_and_cut_the_queue_at_the_bounds() {
        let requests = [
            served(100, 0, 8, false, 0, 100),
            served(200, 1, 16, true, 50, 100),
            served(350, 0, 1, true, 0, 100),
        ];
        let windows = [(0, 100), (100, 200), (200, 300), (300, 400)];
        let rows = disk_intervals(&requests, &windows, 2);
        assert_eq!(rows.len(), 4);
        // 0..100: vm0 served all of it (completes at 100: counted in the next window), vm1
        // waiting from 50: queue 1 for 50 cycles, 2 for 50.
        assert_eq!(rows[0].vms[0].requests, 0);
        assert_eq!(rows[0].busy, 100);
        assert_eq!(rows[0].queue_max, 2);
        assert!(
            (rows[0].queue_average(100) - 1.5).abs() < 1e-9,
            "{:?}",
            rows[0]
        );
        // 100..200: vm0's read completed at 100; vm1 served, alone in the queue.
        assert_eq!(rows[1].vms[0].requests, 1);
        assert_eq!(rows[1].vms[0].sectors_read, 8);
        assert_eq!(rows[1].vms[1].requests, 0);
        assert_eq!(rows[1].queue_max, 1);
        assert!((rows[1].queue_average(100) - 1.0).abs() < 1e-9);
        // 200..300: vm1's write completed at 200, waited 50; vm0's next arrives at 250.
        assert_eq!(rows[2].vms[1].sectors_written, 16);
        assert_eq!(
            rows[2].vms[1].wait,
            Some(Spread {
                p50: 50,
                p99: 50,
                max: 50
            })
        );
        assert_eq!(rows[2].busy, 50);
        assert!((rows[2].queue_average(100) - 0.5).abs() < 1e-9);
        // 300..400: vm0's write completes at 350.
        assert_eq!(rows[3].vms[0].requests, 1);
        assert_eq!(rows[3].vms[0].sectors_written, 1);
        assert_eq!(rows[3].busy, 50);
        assert_eq!(rows[3].vms[1].wait, None);
    }

    #[test]
    fn no_requests_make_no_rows() {
        assert!(disk_intervals(&[], &[(0, 10)], 2).is_empty());
    }

    #[test]
    fn spreads_are_nearest_rank() {
        let mut values: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(
            Spread::of(&mut values),
            Some(Spread {
                p50: 100,
                p99: 198,
                max: 200
            })
        );
        assert_eq!(Spread::of(&mut []), None);
    }
}
