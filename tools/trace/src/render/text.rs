//! The accounting as text: the tables `carousel run` prints after a run and `carousel report`
//! prints from a trace (the run, per-VM time, scheduling events and guest metrics, exits,
//! memory, disk, address spaces, fairness, conservation and warnings).

use std::fmt::Write;

use carousel_protocol::record::{exit_reason_name, BlockedOn};

use super::rows::{latency_rows, millis, setting_rows, LatencyRow};
use super::table::{Align, Table};
use crate::format::{format_micros, group, plural};
use crate::model::accounting::{
    fraction, ppm_to_percent, Accounting, CompressionTotals, ExitTotals, MemoryAccount, VmAccount,
    SPIN_ITERATIONS,
};
use crate::model::settings::describe;
use crate::model::timeline::Interval;
use crate::model::Model;

/// The accounting tables `carousel run` prints: the run, per-VM time, per-VM scheduling
/// events and guest metrics, fairness, conservation, and warnings.
pub fn report(accounting: &Accounting) -> String {
    let mut out = String::new();
    let Some(run) = &accounting.run else {
        if accounting.vms.iter().any(|vm| vm.summary.is_some()) {
            out.push_str("accounting: VM summaries arrived, but no RunSummary\n");
        } else {
            out.push_str("accounting: the hypervisor sent no summary records\n");
        }
        // What the interval records say still stands (memory, merging, ballooning, settings).
        out.push_str(&memory_table(accounting));
        out.push_str(&settings_lines(accounting));
        return out;
    };
    let micros = |cycles: u64| -> String {
        accounting
            .micros(cycles)
            .map(|us| format!(" = {}", format_micros(us)))
            .unwrap_or_default()
    };
    let percent = |cycles: u64| {
        accounting
            .share_of_elapsed(cycles)
            .map(|share| format!("{:.2}%", share * 100.0))
            .unwrap_or_else(|| "-".to_string())
    };
    let _ = writeln!(
        out,
        "ACCOUNTING  policy {}, quantum {} cycles{} of {} time, TSC {} Hz",
        run.policy,
        group(run.quantum_cycles),
        micros(run.quantum_cycles),
        accounting
            .quantum_clock
            .map_or("unknown", |clock| clock.name()),
        accounting.tsc_hz.map_or("unknown".to_string(), group)
    );
    let _ = writeln!(
        out,
        "run: elapsed {} cycles{}; guest {}, root {}, idle {} of it",
        group(run.elapsed),
        micros(run.elapsed),
        match fraction(accounting.guest_total(), u128::from(run.elapsed)) {
            Some(share) => format!("{:.2}%", share * 100.0),
            None => "-".to_string(),
        },
        percent(run.root),
        percent(run.idle)
    );
    let _ = writeln!(
        out,
        "switches: {}, cost median {} / max {} cycles; dropped records {}",
        group(run.switches),
        group(run.switch_median),
        group(run.switch_max),
        run.dropped_records
    );
    let against: Vec<String> = accounting
        .vms
        .iter()
        .filter_map(|vm| {
            let dropped = vm.summary.as_ref()?.guest_records_dropped;
            (dropped > 0).then(|| format!("{} {}", vm.name, group(dropped)))
        })
        .collect();
    if !against.is_empty() {
        let _ = writeln!(
            out,
            "records dropped against the VM that caused them (its quota or its share of the ring): {}",
            against.join(", ")
        );
    }
    out.push('\n');
    out.push_str(&time_table(accounting).render());
    out.push('\n');
    out.push_str(&events_table(accounting).render());
    out.push('\n');
    let mut fairness = Vec::new();
    let all = accounting
        .vms
        .iter()
        .filter(|vm| vm.summary.is_some())
        .count();
    if let Some(jain) = accounting.jain_guest(|_| true) {
        fairness.push(format!("guest cycles/weight {jain:.4} ({all} VMs)"));
    }
    let busy = accounting
        .vms
        .iter()
        .filter(|vm| Accounting::never_blocked(vm))
        .count();
    if busy > 1 && busy < all {
        if let Some(jain) = accounting.jain_guest(Accounting::never_blocked) {
            fairness.push(format!(
                "guest cycles/weight {jain:.4} ({busy} never-blocked VMs)"
            ));
        }
    }
    let reporting = accounting
        .vms
        .iter()
        .filter(|vm| vm.metric(SPIN_ITERATIONS).is_some())
        .count();
    if reporting > 1 {
        if let Some(jain) = accounting.jain_metric(SPIN_ITERATIONS) {
            fairness.push(format!(
                "{SPIN_ITERATIONS}/weight {jain:.4} ({reporting} VMs)"
            ));
        }
    }
    let exits = exit_table(accounting, None);
    if !exits.rows().is_empty() {
        let _ = writeln!(
            out,
            "\nEXITS (all VMs; cost = root-mode cycles from the exit to the next entry)"
        );
        out.push_str(&exits.render());
        out.push('\n');
    }
    for vm in &accounting.vms {
        if let Some(timer) = vm.timer {
            let mean = timer.lag_total / timer.ticks.max(1);
            let _ = writeln!(
                out,
                "timer {}: {} ticks delivered, {} more folded into a tick still pending; lag from deadline mean {} / max {}",
                vm.name,
                group(u128::from(timer.ticks)),
                group(u128::from(timer.coalesced)),
                cycles_text(accounting, mean),
                cycles_text(accounting, timer.lag_max),
            );
        }
    }
    out.push_str(&memory_table(accounting));
    for vm in accounting.vms.iter().filter(|vm| vm.disk.any()) {
        let disk = vm.disk;
        let _ = writeln!(
            out,
            "disk {}: read {} sector{} in {} transfer{}, wrote {} sector{} in {} transfer{}",
            vm.name,
            group(disk.read_sectors),
            plural(disk.read_sectors),
            group(disk.reads),
            plural(disk.reads),
            group(disk.written_sectors),
            plural(disk.written_sectors),
            group(disk.writes),
            plural(disk.writes),
        );
    }
    out.push_str(&disk_queue_table(accounting));
    out.push_str(&blocked_on_table(accounting));
    for vm in accounting.vms.iter().filter(|vm| vm.spaces.len() > 1) {
        let total: u64 = vm.spaces.iter().map(|space| space.cycles).sum();
        let top: Vec<String> = vm
            .spaces
            .iter()
            .take(3)
            .map(|space| {
                let share = space.cycles as f64 * 100.0 / total.max(1) as f64;
                let cr3 = if space.cr3 == u64::MAX {
                    "other".to_string()
                } else {
                    format!("{:#x}", space.cr3)
                };
                format!("{cr3} {share:.1}% ({} loads)", space.loads)
            })
            .collect();
        let _ = writeln!(out, "address spaces {}: {}", vm.name, top.join(", "));
    }
    if !fairness.is_empty() {
        let _ = writeln!(
            out,
            "fairness (Jain's index, 1 = fair): {}",
            fairness.join("; ")
        );
    }
    if let Some(conservation) = accounting.conservation() {
        let sum =
            conservation.guest + u128::from(conservation.root) + u128::from(conservation.idle);
        let _ = writeln!(
            out,
            "conservation: guest {} + root {} + idle {} = {} cycles; elapsed {}: {}",
            group(conservation.guest),
            group(conservation.root),
            group(conservation.idle),
            group(sum),
            group(conservation.elapsed),
            if conservation.holds() {
                "holds".to_string()
            } else {
                format!("DOES NOT HOLD ({:+} cycles)", conservation.error())
            }
        );
    }
    out.push_str(&settings_lines(accounting));
    for problem in accounting.problems() {
        let _ = writeln!(out, "warning: {problem}");
    }
    out
}

/// The settings changed during the run, one line each: when (ms from the run's first event),
/// who asked, what, and why a refused one was refused. Empty when none changed.
pub fn settings_lines(accounting: &Accounting) -> String {
    let settings = &accounting.settings;
    let mut out = String::new();
    for row in setting_rows(accounting) {
        let at = row.at_ms.map_or_else(
            || format!("TSC {}", group(row.tsc)),
            |ms| format!("{ms:.3} ms"),
        );
        let (what, source) = (&row.setting, &row.source);
        let _ = if row.made {
            writeln!(out, "setting changed at {at} ({source}): {what}")
        } else {
            writeln!(
                out,
                "setting refused at {at} ({source}): {what}: {}",
                row.reason
            )
        };
    }
    if settings.dropped > 0 {
        let _ = writeln!(
            out,
            "settings: {} more changes not kept",
            group(settings.dropped)
        );
    }
    out
}

/// The memory table: per VM its RAM, its balloon (pages ballooned now, given back and
/// taken back over the run), and from the working-set samples the pages touched at all,
/// the working set (pages accessed in the last sampling period, and the most in any) and
/// pages written in the last one. Empty when nothing happened to any VM's memory; sampled
/// columns read "-" without samples, and a line says so when the CPU has no EPT
/// The compression line under the memory table: pages compressed now and the frames that
/// saves, the pool's size and ratio (pages in LZ4 blobs against their frames; pattern pages
/// cost none), and the root cycles of both directions.
fn compression_line(accounting: &Accounting, totals: &CompressionTotals) -> String {
    let share = |cycles: u64| {
        accounting
            .share_of_elapsed(cycles)
            .map_or(String::new(), |share| {
                format!(" ({:.2}% of elapsed)", share * 100.0)
            })
    };
    let saved = totals.compressed_pages.saturating_sub(totals.pool_frames);
    let ratio = if totals.pool_frames > 0 {
        format!(
            " ({:.1} pages a frame)",
            totals.blob_pages as f64 / totals.pool_frames as f64
        )
    } else {
        String::new()
    };
    format!(
        "compression: {} pages compressed now ({:.1} MiB saved; {} of them patterns, no \
         storage); pool {} frames holding {} LZ4 pages in {} bytes{ratio}; {} compressed, {} decompressed, {} left as they were \
         (incompressible {}, pool full {}) over the run; {} root cycles compressing{}, {} \
         decompressing{}\n",
        group(totals.compressed_pages),
        saved as f64 / 256.0,
        group(totals.compressed_pages.saturating_sub(totals.blob_pages)),
        group(totals.pool_frames),
        group(totals.blob_pages),
        group(totals.pool_bytes),
        group(totals.compressed),
        group(totals.decompressed),
        group(totals.incompressible + totals.pool_full),
        group(totals.incompressible),
        group(totals.pool_full),
        group(totals.cycles),
        share(totals.cycles),
        group(totals.decompress_cycles),
        share(totals.decompress_cycles),
    )
}

/// accessed/dirty flags (no figures are made up).
pub fn memory_table(accounting: &Accounting) -> String {
    let described: Vec<(&VmAccount, &MemoryAccount)> = accounting
        .vms
        .iter()
        .filter_map(|vm| vm.memory.as_ref().map(|memory| (vm, memory)))
        .collect();
    let ballooning = described
        .iter()
        .any(|(_, memory)| memory.ballooned > 0 || memory.inflated > 0 || memory.deflated > 0);
    let sampled = described.iter().any(|(_, memory)| memory.samples > 0);
    if !ballooning && !sampled && accounting.merging.is_none() && accounting.compression.is_none() {
        return String::new();
    }
    let mut table = Table::new(&[
        ("VM", Align::Left),
        ("RAM pages", Align::Right),
        ("BALLOONED", Align::Right),
        ("GAVE", Align::Right),
        ("TOOK", Align::Right),
        ("MERGED", Align::Right),
        ("COMPRESSED", Align::Right),
        ("TOUCHED", Align::Right),
        ("WSS", Align::Right),
        ("WSS max", Align::Right),
        ("DIRTY", Align::Right),
        ("SAMPLES", Align::Right),
    ]);
    for (vm, memory) in &described {
        let sampled = |pages: u64| {
            if memory.samples > 0 {
                group(pages)
            } else {
                "-".to_string()
            }
        };
        table.push(vec![
            vm.name.clone(),
            group(memory.ram_pages),
            group(memory.ballooned),
            group(memory.inflated),
            group(memory.deflated),
            group(memory.merged),
            group(memory.compressed),
            sampled(memory.ever),
            sampled(memory.last_accessed),
            sampled(memory.max_accessed),
            sampled(memory.last_dirty),
            group(memory.samples),
        ]);
    }
    let mut out = format!(
        "\nMEMORY (4 KiB pages; GAVE/TOOK = ballooned out/back over the run; from EPT \
         accessed/dirty samples, WSS = pages touched in the last period)\n{}",
        table.render()
    );
    if let Some(pages) = &accounting.host_pages {
        out.push_str(&format!(
            "host memory for guests: {:.1} MiB at the end, {:.1} MiB at most; {:.1} MiB free\n",
            pages.last as f64 / 256.0,
            pages.peak as f64 / 256.0,
            pages.free_last as f64 / 256.0
        ));
    }
    if let Some(merging) = &accounting.merging {
        let share = accounting
            .share_of_elapsed(merging.cycles)
            .map_or(String::new(), |share| {
                format!(" ({:.2}% of elapsed)", share * 100.0)
            });
        out.push_str(&format!(
            "merging: {} pages scanned in {} root cycles{share}; {} merges, {} copies on \
             write; {} shared frames stand for {} more pages: {:.1} MiB saved\n",
            group(merging.scanned),
            group(merging.cycles),
            group(merging.merges),
            group(merging.cow_breaks),
            group(merging.shared_frames),
            group(merging.frames_saved),
            merging.frames_saved as f64 / 256.0
        ));
    }
    if let Some(compression) = &accounting.compression {
        out.push_str(&compression_line(accounting, compression));
    }
    let (samples, cycles, most) = described.iter().fold((0, 0, 0), |(n, sum, most), (_, m)| {
        (
            n + m.samples,
            sum + m.sample_cycles,
            most.max(m.sample_cycles_max),
        )
    });
    if samples > 0 && cycles > 0 {
        let share = accounting
            .share_of_elapsed(cycles)
            .map_or(String::new(), |share| {
                format!(" ({:.2}% of elapsed)", share * 100.0)
            });
        out.push_str(&format!(
            "working-set samples: {} in {} root cycles{share}; {} cycles a sample on average, \
             {} at most\n",
            group(samples),
            group(cycles),
            group(cycles / samples),
            group(most)
        ));
    }
    if described.iter().any(|(_, memory)| !memory.accessed_dirty) {
        out.push_str(
            "memory: this CPU has no EPT accessed/dirty flags, so there are no working-set \
             figures\n",
        );
    }
    out
}

/// Exits summed per reason over every VM (`vm` None) or one VM, in the columns of `perf kvm
/// stat`: samples and their share, time share, min, max and mean cycles; the costliest reason
/// first.
pub fn exit_table(accounting: &Accounting, vm: Option<u16>) -> Table {
    let totals = accounting.exits_by_reason(vm);
    let count: u64 = totals.values().map(|t| t.count).sum();
    let cycles: u128 = totals.values().map(|t| t.cycles).sum();
    let mut rows: Vec<(u16, ExitTotals)> = totals.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.cycles));
    let mut table = Table::new(&[
        ("REASON", Align::Left),
        ("SAMPLES", Align::Right),
        ("SAMPLES%", Align::Right),
        ("TIME%", Align::Right),
        ("MIN cyc", Align::Right),
        ("MAX cyc", Align::Right),
        ("AVG cyc", Align::Right),
    ]);
    for (reason, t) in rows {
        table.push(vec![
            exit_reason_name(reason).to_string(),
            group(t.count),
            format!("{:.2}", t.count as f64 * 100.0 / count.max(1) as f64),
            format!("{:.2}", t.cycles as f64 * 100.0 / cycles.max(1) as f64),
            group(t.min),
            group(t.max),
            format!("{:.0}", t.mean()),
        ]);
    }
    table
}

/// Per VM: weight, CPU share, guest and root cycles, and the four runstates (cycles and
/// share of the elapsed time).
pub fn time_table(accounting: &Accounting) -> Table {
    let mut table = Table::new(&[
        ("VM", Align::Left),
        ("W", Align::Right),
        ("CPU%", Align::Right),
        ("GUEST cyc", Align::Right),
        ("ROOT cyc", Align::Right),
        ("RUNNING cyc", Align::Right),
        ("%", Align::Right),
        ("RUNNABLE cyc", Align::Right),
        ("%", Align::Right),
        ("BLOCKED cyc", Align::Right),
        ("%", Align::Right),
        ("STOPPED cyc", Align::Right),
        ("%", Align::Right),
    ]);
    for vm in &accounting.vms {
        let mut row = vec![vm.name.clone(), vm.weight.to_string()];
        match &vm.summary {
            Some(s) => {
                row.push(
                    accounting
                        .cpu_share(vm.id)
                        .map_or("-".to_string(), |share| format!("{:.2}", share * 100.0)),
                );
                row.push(group(s.guest));
                row.push(group(s.root));
                for cycles in [s.running, s.runnable, s.blocked, s.stopped] {
                    row.push(group(cycles));
                    row.push(
                        accounting
                            .share_of_elapsed(cycles)
                            .map_or("-".to_string(), |share| format!("{:.1}", share * 100.0)),
                    );
                }
            }
            None => row.push("(no summary)".to_string()),
        }
        table.push(row);
    }
    table
}

/// Per VM: slices, how they ended, wakes and wake-to-run latency, quantum error, and the
/// guest's metrics.
pub fn events_table(accounting: &Accounting) -> Table {
    let unit = if accounting.tsc_hz.is_some() {
        "µs"
    } else {
        "cyc"
    };
    let wake_header = format!("WAKE p50/p95/p99/max {unit}");
    let mut table = Table::new(&[
        ("VM", Align::Left),
        ("SLICES", Align::Right),
        ("PREEMPT", Align::Right),
        ("YIELDS", Align::Right),
        ("WAKES", Align::Right),
        (wake_header.as_str(), Align::Left),
        ("QERR med/max %", Align::Left),
        ("GUEST METRICS (last, max, reports)", Align::Left),
    ]);
    for vm in &accounting.vms {
        let mut row = vec![vm.name.clone()];
        match &vm.summary {
            Some(s) => {
                row.push(group(s.slices));
                row.push(group(s.preemptions));
                row.push(group(s.yields));
                row.push(group(s.wakes));
                row.push(if s.wakes == 0 {
                    "-".to_string()
                } else {
                    [s.wake_p50, s.wake_p95, s.wake_p99, s.wake_max]
                        .iter()
                        .map(|&cycles| match accounting.micros(cycles) {
                            Some(us) => format!("{us:.1}"),
                            None => group(cycles),
                        })
                        .collect::<Vec<_>>()
                        .join("/")
                });
                row.push(if s.preemptions == 0 {
                    "-".to_string()
                } else {
                    format!(
                        "{:+.3}/{:.3}",
                        ppm_to_percent(s.quantum_error_median_ppm),
                        ppm_to_percent(s.quantum_error_max_ppm)
                    )
                });
            }
            None => {
                row.extend(std::iter::repeat_n("-".to_string(), 6));
            }
        }
        row.push(
            vm.metrics
                .iter()
                .map(|metric| {
                    if metric.count == 1 {
                        format!("{} {}", metric.name, group(metric.last))
                    } else {
                        format!(
                            "{} {}, {}, {}",
                            metric.name,
                            group(metric.last),
                            group(metric.max),
                            metric.count
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join("; "),
        );
        table.push(row);
    }
    table
}

/// `cycles` in µs when the TSC frequency is known, else in cycles.
fn cycles_text(accounting: &Accounting, cycles: u64) -> String {
    match accounting.micros(cycles) {
        Some(us) => format!("{us:.1} µs"),
        None => format!("{} cycles", group(cycles)),
    }
}

/// The STEPS table (each VM's timed script steps) and the KEYSTROKE table (each VM's
/// keystroke response, and the part of it waiting for its turn), each under its heading; nothing for a table without rows. Times in
/// microseconds (cycles when the trace gives no TSC frequency); p50, p99 and max only for a
/// figure with more than one sample.
pub fn latencies(model: &Model) -> String {
    let rows = latency_rows(model);
    let time = |us: Option<f64>, cycles: Option<u64>| match (us, cycles) {
        (Some(us), _) => format_micros(us),
        (None, Some(cycles)) => format!("{} cycles", group(cycles)),
        (None, None) => "-".to_string(),
    };
    let table = |kinds: &[&str], first: &str| {
        let mut table = Table::new(&[
            ("VM", Align::Left),
            (first, Align::Left),
            ("COUNT", Align::Right),
            ("MEAN", Align::Right),
            ("P50", Align::Right),
            ("P99", Align::Right),
            ("MAX", Align::Right),
        ]);
        for row in rows
            .iter()
            .filter(|row: &&LatencyRow| kinds.contains(&row.kind.as_str()))
        {
            table.push(vec![
                row.vm.clone(),
                row.name.clone(),
                row.count.to_string(),
                time(row.mean_us, Some(row.mean_cycles)),
                time(row.p50_us, row.p50_cycles),
                time(row.p99_us, row.p99_cycles),
                time(row.max_us, row.max_cycles),
            ]);
        }
        table
    };
    let mut out = String::new();
    for (kinds, heading, first) in [
        (
            &["step"][..],
            "STEPS (from a send reaching the VM to the line the next step matched)",
            "STEP",
        ),
        (
            &["keystroke", "keystroke_wait"][..],
            "KEYSTROKE RESPONSE (from input reaching the VM to its next output byte, and the \
             part of it runnable, not running)",
            "WHAT",
        ),
    ] {
        let table = table(kinds, first);
        if !table.rows().is_empty() {
            let _ = writeln!(out, "\n{heading}");
            out.push_str(&table.render());
        }
    }
    out
}

/// The per-interval rows as a text table: one row per interval and VM.
pub fn intervals(model: &Model, rows: &[Interval]) -> String {
    let hz = model.accounting.tsc_hz.unwrap_or(1);
    let origin = rows.first().map_or(0, |row| row.start);
    let names = model.vm_names(rows.first().map_or(0, |row| row.vms.len()));
    let mut table = Table::new(&[
        ("FROM ms", Align::Right),
        ("TO ms", Align::Right),
        ("VM", Align::Left),
        ("CPU%", Align::Right),
        ("RUNNABLE%", Align::Right),
        ("BLOCKED%", Align::Right),
        ("ON DISK%", Align::Right),
        ("STOPPED%", Align::Right),
        ("SWITCHES", Align::Right),
        ("EXITS", Align::Right),
        ("EXIT cyc", Align::Right),
        ("CHANGED", Align::Left),
    ]);
    let percent = |row: &Interval, cycles: u64| format!("{:.1}", row.share(cycles) * 100.0);
    for row in rows {
        // The settings changed in this interval: figures before and after a change fall in
        // different rows once the interval is short enough.
        let changed: Vec<String> = model
            .accounting
            .settings
            .made()
            .filter(|change| (row.start..row.end).contains(&change.tsc))
            .map(|change| describe(change.setting, &names))
            .collect();
        let changed = if changed.is_empty() {
            "-".to_string()
        } else {
            changed.join("; ")
        };
        for (vm, figures) in row.vms.iter().enumerate() {
            table.push(vec![
                format!("{:.3}", millis(row.start, origin, hz)),
                format!("{:.3}", millis(row.end, origin, hz)),
                names[vm].clone(),
                percent(row, figures.running),
                percent(row, figures.runnable),
                percent(row, figures.blocked),
                percent(row, figures.blocked_disk),
                percent(row, figures.stopped),
                group(figures.switches),
                group(figures.exits),
                group(figures.exit_cycles),
                changed.clone(),
            ]);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "INTERVALS  from the first event; shares of each interval's TSC time (ON DISK: of the \
         blocked time, blocked on the shared disk); SWITCHES = slices begun; exits from the hypervisor's exit intervals, each counted where its middle falls; \
         CHANGED = settings changed in the interval"
    );
    out.push_str(&table.render());
    out.push_str(&disk_intervals_table(model, rows));
    out.push_str(&settings_lines(&model.accounting));
    out
}

/// The SHARED DISK BY INTERVAL table: per interval the device's queue (requests outstanding,
/// average and most) and busy share, and each VM's requests that completed in it with their
/// sectors, wait and service (p50/p99/max). Empty without a timed disk's requests.
fn disk_intervals_table(model: &Model, rows: &[Interval]) -> String {
    let accounting = &model.accounting;
    let hz = accounting.tsc_hz.unwrap_or(1);
    let origin = rows.first().map_or(0, |row| row.start);
    let vms = rows
        .iter()
        .filter_map(|row| row.disk.as_ref().map(|disk| disk.vms.len()))
        .max();
    let Some(vms) = vms else {
        return String::new();
    };
    let names = model.vm_names(vms);
    let mut table = Table::new(&[
        ("FROM ms", Align::Right),
        ("TO ms", Align::Right),
        ("QUEUE avg/max", Align::Right),
        ("BUSY%", Align::Right),
        ("VM", Align::Left),
        ("REQUESTS", Align::Right),
        ("READ", Align::Right),
        ("WRITTEN", Align::Right),
        ("WAIT p50/p99/max", Align::Right),
        ("SERVICE p50/p99/max", Align::Right),
    ]);
    let spread = |spread: Option<crate::model::disk::Spread>| {
        spread.map_or("-".to_string(), |spread| {
            format!(
                "{}/{}/{}",
                cycles_text(accounting, spread.p50),
                cycles_text(accounting, spread.p99),
                cycles_text(accounting, spread.max)
            )
        })
    };
    for row in rows {
        let Some(disk) = &row.disk else {
            continue;
        };
        let device = [
            format!("{:.3}", millis(row.start, origin, hz)),
            format!("{:.3}", millis(row.end, origin, hz)),
            format!("{:.2}/{}", disk.queue_average(row.length()), disk.queue_max),
            format!("{:.1}", row.share(disk.busy) * 100.0),
        ];
        let mut any = false;
        for (vm, figures) in disk.vms.iter().enumerate() {
            if figures.requests == 0 {
                continue;
            }
            any = true;
            let mut cells = device.to_vec();
            cells.extend([
                names[vm].clone(),
                group(figures.requests),
                group(figures.sectors_read),
                group(figures.sectors_written),
                spread(figures.wait),
                spread(figures.service),
            ]);
            table.push(cells);
        }
        if !any {
            let mut cells = device.to_vec();
            cells.extend(["-", "0", "0", "0", "-", "-"].map(String::from));
            table.push(cells);
        }
    }
    format!(
        "\nSHARED DISK BY INTERVAL (queue: requests waiting or in service; a VM's requests count \
         where they completed)\n{}",
        table.render()
    )
}

/// The BLOCKED ON table: per VM that blocked, the cycles it sat blocked on each reason (the
/// scheduler events' runstate reasons), with each one's share of its blocked time. Empty
/// without events, or when no VM blocked.
fn blocked_on_table(accounting: &Accounting) -> String {
    let mut columns = vec![("VM", Align::Left)];
    let headers: Vec<String> = BlockedOn::ALL
        .iter()
        .map(|on| on.name().to_uppercase())
        .collect();
    columns.extend(headers.iter().map(|name| (name.as_str(), Align::Right)));
    let mut table = Table::new(&columns);
    for vm in &accounting.vms {
        let total: u64 = vm.events.blocked_on.iter().sum();
        if total == 0 {
            continue;
        }
        let mut row = vec![vm.name.clone()];
        for on in BlockedOn::ALL {
            let cycles = vm.events.blocked_on(on);
            row.push(if cycles == 0 {
                "-".to_string()
            } else {
                format!(
                    "{} {:.1}%",
                    cycles_text(accounting, cycles),
                    cycles as f64 * 100.0 / total as f64
                )
            });
        }
        table.push(row);
    }
    if table.rows().is_empty() {
        return String::new();
    }
    format!(
        "\nBLOCKED ON (what each VM waited for while blocked, from the scheduler events; disk: a \
         request outstanding at the shared disk; timer: a deadline armed; interrupt: none, only \
         an interrupt wakes it; console/records: its serial output to leave)\n{}",
        table.render()
    )
}

/// The SHARED DISK table: per VM with requests through the shared disk's queue, how many and
/// their sectors, the wait for the device and the device's service time (p50/p99/max), and the
/// time the VM sat blocked on its disk. Empty when the disk had no service time or cap.
fn disk_queue_table(accounting: &Accounting) -> String {
    let mut table = Table::new(&[
        ("VM", Align::Left),
        ("REQUESTS", Align::Right),
        ("SECTORS", Align::Right),
        ("WAIT p50/p99/max", Align::Right),
        ("SERVICE p50/p99/max", Align::Right),
        ("BLOCKED ON DISK", Align::Right),
    ]);
    let three = |a, b, c| {
        format!(
            "{}/{}/{}",
            cycles_text(accounting, a),
            cycles_text(accounting, b),
            cycles_text(accounting, c)
        )
    };
    for vm in &accounting.vms {
        let Some(queue) = vm.disk_queue else {
            continue;
        };
        table.push(vec![
            vm.name.clone(),
            group(queue.requests),
            group(queue.sectors),
            three(queue.wait_p50, queue.wait_p99, queue.wait_max),
            three(queue.service_p50, queue.service_p99, queue.service_max),
            cycles_text(accounting, queue.blocked_disk),
        ]);
    }
    if table.rows().is_empty() {
        return String::new();
    }
    format!(
        "\nSHARED DISK (wait: a request's arrival to its service; service: the device's time; \
         blocked on disk: the VM idle with a request outstanding)\n{}",
        table.render()
    )
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{AddressSpace, ExitStat, Record};

    use super::*;
    use crate::fixtures::{busy, hello, run, two_vm_records};
    use crate::model::accounting::cycles_to_micros;

    #[test]
    fn the_memory_table_says_what_the_samples_cost() {
        let mut records = vec![hello(&["a"], 1_000_000)];
        for (tsc, cycles) in [(10, 1_000), (20, 3_000)] {
            records.push(Record::WorkingSet {
                tsc,
                vm: 0,
                accessed: 5,
                dirty: 1,
                ever: 5,
                cycles,
            });
        }
        let table = memory_table(&Accounting::from_records(&records, &[]));
        assert!(
            table.contains(
                "working-set samples: 2 in 4,000 root cycles; 2,000 cycles a sample on \
                 average, 3,000 at most"
            ),
            "{table}"
        );
    }

    #[test]
    fn the_memory_table_shows_compressed_pages_and_the_pool() {
        let mut records = vec![hello(&["a", "b"], 1_000_000)];
        for (tsc, compressed, pages) in [(10, 100, vec![60, 40]), (20, 300, vec![250, 30])] {
            records.push(Record::Compression {
                tsc,
                compressed_now: 0,
                cycles: 5_000,
                compressed,
                decompressed: 20,
                decompress_cycles: 700,
                incompressible: 3,
                pool_full: 1,
                pool_frames: 4,
                pool_bytes: 9_000,
                blob_pages: 30,
                compressed_pages: pages,
            });
        }
        // The peak between two interval ends counts, not only what they saw.
        records.push(Record::HostMemory {
            tsc: 30,
            backed_pages: 256,
            peak_pages: 2_560,
            free_pages: 0,
        });
        let accounting = Accounting::from_records(&records, &[]);
        assert_eq!(accounting.vms[0].memory.unwrap().compressed, 250);
        let table = memory_table(&accounting);
        assert!(table.contains("COMPRESSED"), "{table}");
        assert!(
            table.contains("host memory for guests: 1.0 MiB at the end, 10.0 MiB at most"),
            "{table}"
        );
        assert!(
            table.contains(
                "compression: 280 pages compressed now (1.1 MiB saved; 250 of them patterns, no \
                 storage); pool 4 frames holding 30 LZ4 pages in 9,000 bytes (7.5 pages a frame); \
                 300 compressed, 20 decompressed, 4 left as they were (incompressible 3, pool \
                 full 1) over the run; 10,000 root cycles compressing"
            ),
            "{table}"
        );
    }

    #[test]
    fn exits_sum_over_intervals_and_vms_into_one_table() {
        let stat = |reason, count, cycles, min, max| ExitStat {
            reason,
            count,
            cycles,
            min,
            max,
            log2: vec![],
        };
        let mut records = two_vm_records();
        for (vm, exits) in [
            (
                0,
                vec![stat(30, 3, 3_000, 500, 1_500), stat(52, 1, 900, 900, 900)],
            ),
            (0, vec![stat(30, 1, 1_000, 1_000, 1_000)]),
            (1, vec![stat(30, 4, 2_000, 100, 800)]),
        ] {
            records.insert(
                1,
                Record::ExitInterval {
                    tsc: 1,
                    vm,
                    interval: 10,
                    exits,
                },
            );
        }
        let accounting = Accounting::from_records(&records, &[1, 1]);
        assert_eq!(accounting.vms[0].exits[&30].count, 4);
        assert_eq!(accounting.vms[0].exits[&30].min, 500);
        let table = exit_table(&accounting, None);
        assert_eq!(table.rows().len(), 2);
        assert_eq!(
            table.rows()[0][..4],
            ["IO_INSTRUCTION", "8", "88.89", "86.96"]
        );
        assert_eq!(table.rows()[0][4..], ["100", "1,500", "750"]);
        assert_eq!(table.rows()[1][0], "PREEMPTION_TIMER");
    }

    #[test]
    fn timer_lag_and_address_spaces_are_reported() {
        let mut records = two_vm_records();
        records.insert(
            1,
            Record::TimerLag {
                vm: 0,
                ticks: 10,
                coalesced: 3,
                lag_total: 20_000,
                lag_max: 5_000,
            },
        );
        records.insert(
            1,
            Record::AddressSpaces {
                vm: 0,
                spaces: vec![
                    AddressSpace {
                        cr3: 0x3ff000,
                        cycles: 300,
                        loads: 7,
                    },
                    AddressSpace {
                        cr3: 0xdf76000,
                        cycles: 100,
                        loads: 2,
                    },
                ],
            },
        );
        let report = super::report(&Accounting::from_records(&records, &[1, 1]));
        assert!(
            report.contains("timer a: 10 ticks delivered, 3 more folded into a tick still pending; lag from deadline mean 2000.0 µs / max 5000.0 µs"),
            "{report}"
        );
        assert!(
            report
                .contains("address spaces a: 0x3ff000 75.0% (7 loads), 0xdf76000 25.0% (2 loads)"),
            "{report}"
        );
        assert!(!report.contains("address spaces b"), "{report}");
    }

    #[test]
    fn disk_transfers_are_summed_per_vm() {
        let mut records = two_vm_records();
        for (lba, sectors, write) in [(0, 8, false), (8, 1, false), (100, 2, true)] {
            records.insert(
                1,
                Record::DiskIo {
                    tsc: 1,
                    vm: 1,
                    lba,
                    sectors,
                    write,
                },
            );
        }
        let accounting = Accounting::from_records(&records, &[]);
        assert!(!accounting.vms[0].disk.any());
        let disk = accounting.vms[1].disk;
        assert_eq!((disk.reads, disk.read_sectors), (2, 9));
        assert_eq!((disk.writes, disk.written_sectors), (1, 2));
        let report = super::report(&accounting);
        assert!(
            report
                .contains("disk b: read 9 sectors in 2 transfers, wrote 2 sectors in 1 transfer\n"),
            "{report}"
        );
        assert!(!report.contains("disk a"), "{report}");
    }

    #[test]
    fn conservation_is_checked_exactly() {
        let accounting = Accounting::from_records(&two_vm_records(), &[]);
        let conservation = accounting.conservation().unwrap();
        assert_eq!(conservation.guest, 400);
        assert_eq!(conservation.error(), 0);
        assert!(conservation.holds());
        assert!(super::report(&accounting).contains("holds"));

        // One cycle missing, then one counted twice.
        for (idle, error) in [(49, 1), (51, -1)] {
            let mut records = two_vm_records();
            records[6] = Record::RunSummary(run(500, 50, idle));
            let accounting = Accounting::from_records(&records, &[]);
            assert_eq!(accounting.conservation().unwrap().error(), error);
            let problems = accounting.problems();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with("conservation does not hold"),
                "{problems:?}"
            );
            assert!(
                problems[0].contains(&format!("{error:+} cycles")),
                "{problems:?}"
            );
            assert!(super::report(&accounting).contains("DOES NOT HOLD"));
        }
        assert_eq!(Accounting::from_records(&[], &[]).conservation(), None);
    }

    #[test]
    fn records_dropped_against_a_vm_are_named_in_every_format() {
        let mut records = two_vm_records();
        let Record::VmSummary(summary) = &mut records[5] else {
            panic!("the fixture's second VM summary moved");
        };
        summary.guest_records_dropped = 1_234;
        let accounting = Accounting::from_records(&records, &[]);
        let text = super::report(&accounting);
        assert!(
            text.contains("records dropped against the VM that caused them (its quota or its share of the ring): b 1,234"),
            "{text}"
        );
        let json = crate::render::json::report(&accounting);
        assert_eq!(json["vms"][1]["records_dropped"], 1_234);
        assert_eq!(json["vms"][0]["records_dropped"], 0);
        let csv = crate::render::csv::vms(&accounting);
        assert!(
            csv.lines().next().unwrap().contains("records_dropped"),
            "{csv}"
        );
        // Without drops the line stays out of the text report.
        let clean = Accounting::from_records(&two_vm_records(), &[]);
        assert!(!super::report(&clean).contains("dropped against"));
    }

    #[test]
    fn missing_and_extra_records_warn() {
        let records = [
            hello(&["a", "b"], 1_000),
            Record::VmSummary(busy(0, 10, 0, 20)),
            Record::VmSummary(busy(0, 10, 0, 20)),
            Record::VmSummary(busy(2, 10, 0, 20)),
            Record::RunSummary(run(20, 0, 0)),
        ];
        let accounting = Accounting::from_records(&records, &[]);
        let problems = accounting.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("second VmSummary for VM a")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("names 2 VMs")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p == "no VmSummary arrived for VM b"),
            "{problems:?}"
        );

        let nothing = Accounting::from_records(&[hello(&["a"], 1_000)], &[]);
        assert!(!nothing.has_summaries());
        assert_eq!(
            super::report(&nothing),
            "accounting: the hypervisor sent no summary records\n"
        );
    }

    #[test]
    fn percentiles_convert_to_microseconds() {
        assert_eq!(cycles_to_micros(50_000, 50_000_000), 1_000.0);
        assert_eq!(cycles_to_micros(1_500, 1_000_000_000), 1.5);
        assert_eq!(cycles_to_micros(1, 1_000_000), 1.0);
        let mut records = two_vm_records();
        let mut sleepy = busy(1, 100, 10, 500);
        sleepy.wakes = 30;
        sleepy.wake_p50 = 2_500;
        sleepy.wake_p95 = 25_000;
        sleepy.wake_p99 = 50_000;
        sleepy.wake_max = 60_000;
        records[0] = hello(&["a", "b"], 50_000_000);
        records[5] = Record::VmSummary(sleepy);
        let accounting = Accounting::from_records(&records, &[]);
        assert_eq!(accounting.micros(60_000), Some(1_200.0));
        let report = super::report(&accounting);
        assert!(report.contains("WAKE p50/p95/p99/max µs"), "{report}");
        assert!(report.contains("50.0/500.0/1000.0/1200.0"), "{report}");
        // Without a frequency, cycles.
        records[0] = hello(&["a", "b"], 0);
        let accounting = Accounting::from_records(&records, &[]);
        assert_eq!(accounting.micros(60_000), None);
        let report = super::report(&accounting);
        assert!(report.contains("2,500/25,000/50,000/60,000"), "{report}");
    }

    #[test]
    fn quantum_error_is_ppm_in_percent() {
        assert_eq!(ppm_to_percent(10_000), 1.0);
        assert_eq!(ppm_to_percent(-2_500), -0.25);
        assert_eq!(ppm_to_percent(0), 0.0);
        let mut records = two_vm_records();
        let mut summary = busy(1, 100, 10, 500);
        summary.quantum_error_median_ppm = 300;
        records[5] = Record::VmSummary(summary);
        let accounting = Accounting::from_records(&records, &[]);
        // Median of 100 and 300 ppm.
        assert_eq!(accounting.median_quantum_error_percent(), Some(0.02));
        let report = super::report(&accounting);
        assert!(report.contains("+0.010/0.200"), "{report}");
    }

    #[test]
    fn report_is_aligned_and_names_units() {
        let report = super::report(&Accounting::from_records(&two_vm_records(), &[1, 3]));
        assert!(report.starts_with("ACCOUNTING  policy round-robin, quantum 50,000 cycles = 50.000 ms of wall time, TSC 1,000,000 Hz\n"), "{report}");
        assert!(
            report.contains(
                "run: elapsed 500 cycles = 500.0 µs; guest 80.00%, root 10.00%, idle 10.00% of it"
            ),
            "{report}"
        );
        assert!(
            report.contains("switches: 40, cost median 900 / max 1,400 cycles"),
            "{report}"
        );
        let lines: Vec<&str> = report.lines().collect();
        let header = lines
            .iter()
            .position(|line| line.starts_with("VM "))
            .unwrap();
        // Columns line up: every row of the time table has its CPU% figure ending where the
        // header's does.
        let end = lines[header].find("CPU%").unwrap() + "CPU%".len();
        assert_eq!(&lines[header + 1][end - 5..end], "75.00", "{report}");
        assert_eq!(&lines[header + 2][end - 5..end], "25.00", "{report}");
        let first_two = |line: &str| {
            line.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(first_two(lines[header + 1]), "a 1", "{report}");
        assert_eq!(first_two(lines[header + 2]), "b 3", "{report}");
        assert!(report.contains("iterations 30, 30, 2"), "{report}");
        assert!(
            report.contains("fairness (Jain's index, 1 = fair): guest cycles/weight"),
            "{report}"
        );
        assert!(!report.lines().any(|line| line.ends_with(' ')), "{report}");
    }
}
