//! `carousel report TRACE --html FILE`: the report as one self-contained page.
//!
//! What is here: [`page`] turns a trace's records into one HTML file that needs no network:
//! inline CSS, inline SVG drawn here, and a short inline script of our own (it highlights a VM
//! across the charts when the pointer rests on it, and records any script error in the page so
//! the headless-browser test can see it). The page holds: the run at a glance; donuts of CPU
//! time by exit reason, overall and per VM, with guest time as its own slice; each VM's CPU share
//! over time; a Gantt timeline of who ran when; a memory page grid and a disk block grid per VM;
//! and the tables of the text report.
//!
//! What is not: any figure of its own. Everything comes from the [`Model`]: its [`Accounting`]
//! (the hypervisor's summaries and exit intervals), its [`Timeline`] (the scheduler events) and
//! its samples (memory maps, disk transfers). Every string that comes from the trace is escaped ([`escape`]); none reaches
//! the script.
//!
//! Size: timelines with many slices are drawn with neighbouring slices narrower than a pixel
//! merged into one bar ([`merge_bars`]), and grids with many cells show several per square, so
//! a 10 s run stays well under a few MB.

use std::collections::BTreeMap;
use std::fmt::Write;

use carousel_protocol::record::{exit_reason_name, BlockedOn, PageState};

use super::chart::{escape, nice_count, series_colour, short_seconds, TimeAxis};
use super::table::{Align, Table};
use super::text::{events_table, exit_table, time_table};
use crate::format::{format_micros, group};
use crate::model::accounting::{fraction, Accounting, VmAccount};
use crate::model::disk::disk_intervals;
use crate::model::samples::MemoryMap;
use crate::model::settings::describe;
use crate::model::timeline::{intervals, Interval, RunState, Timeline};
use crate::model::Model;
use crate::TRACE_LEVELS;

/// Where the records came from, for the page's header.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The trace file as the user named it.
    pub name: &'a str,
    /// `--vm NAME`, when the page shows one VM.
    pub only_vm: Option<&'a str>,
}

/// Width of the time charts' plotting area, in SVG units (pixels at 100 % zoom).
const PLOT_WIDTH: f64 = 1000.0;
/// Width of the label column left of the time charts.
const LABEL_WIDTH: f64 = 110.0;
/// Intervals the CPU-share chart aims for (it rounds the interval to 1, 2 or 5 × 10^k cycles).
const SHARE_INTERVALS: u64 = 200;
/// Height of one Gantt row, and of the bar in it.
const GANTT_ROW: f64 = 22.0;
const GANTT_BAR: f64 = 16.0;
/// Most squares a memory or disk grid shows; more cells are folded several per square.
const GRID_SQUARES: usize = 1024;
/// Squares per grid row, and a square's side.
const GRID_COLUMNS: usize = 64;
const GRID_SQUARE: f64 = 9.0;
/// Slices the Gantt close-up shows.
const CLOSE_UP_SLICES: usize = 48;
/// Exit reasons with a colour of their own in the donuts; the rest are "other exits".
const DONUT_REASONS: usize = 8;

/// Colours of the exit reasons in the donuts, costliest first.
pub const REASON_COLOURS: [&str; DONUT_REASONS] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
];
/// Donut slices that are not an exit reason.
const GUEST_COLOUR: &str = "#59a14f";
const ROOT_COLOUR: &str = "#3e4c59";
pub const OTHER_EXITS_COLOUR: &str = "#bab0ac";
const OTHER_ROOT_COLOUR: &str = "#9aa5b1";
const IDLE_COLOUR: &str = "#e5e7eb";
/// Runstates in the Gantt rows (running is the VM's own colour).
pub const BLOCKED_COLOUR: &str = "#9ca3af";
/// Blocked on the shared disk, in the runstate rows (apart from the other reasons' grey).
pub const BLOCKED_DISK_COLOUR: &str = "#b45309";
/// Memory cell states by [`PageState`] number: name and colour (the Perfetto export uses the
/// names too).
pub const PAGE_STATES: [(&str, &str); 6] = [
    ("untouched", "#eef0f3"),
    ("touched", "#76b7b2"),
    ("dirty", "#e15759"),
    ("merged", "#b07aa1"),
    ("ballooned", "#edc948"),
    ("idle", "#9fb3c8"),
];
/// Disk blocks: untouched, read, written, both.
pub const DISK_STATES: [(&str, &str); 4] = [
    ("untouched", "#eef0f3"),
    ("read", "#4e79a7"),
    ("written", "#e15759"),
    ("read and written", "#b07aa1"),
];

/// Everything the page's parts read.
struct Page<'a> {
    model: &'a Model,
    accounting: Accounting,
    timeline: Option<&'a Timeline>,
}

/// The report page of a model (the whole run's, or one VM's from [`crate::decode::only_vm`]).
pub fn page(model: &Model, source: &Source) -> String {
    let mut accounting = model.accounting.clone();
    accounting.partial = source.only_vm.is_some();
    let page = Page {
        model,
        accounting,
        timeline: model.timeline.as_ref(),
    };
    let mut out = String::with_capacity(256 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        out,
        "<title>Carousel report: {}</title>",
        escape(source.name)
    );
    let _ = writeln!(out, "<style>{STYLE}</style>");
    let _ = writeln!(out, "<script>{ERROR_CAPTURE}</script>");
    out.push_str("</head>\n<body>\n");
    page.header(&mut out, source);
    page.notes(&mut out);
    page.cards(&mut out);
    page.donuts(&mut out);
    page.share_chart(&mut out);
    page.gantt(&mut out);
    page.memory(&mut out);
    page.disk(&mut out);
    page.disk_contention(&mut out);
    page.tables(&mut out);
    out.push_str(
        "<footer><p>Made by <code>carousel report --html</code>: one file, no network. Times \
         are TSC time as the hypervisor counted it.</p>\n<h3>Page errors</h3>\n<ol \
         id=\"page-errors\" data-count=\"0\"></ol></footer>\n",
    );
    let _ = writeln!(out, "<script>{SCRIPT}</script>\n</body>\n</html>");
    out
}

impl Page<'_> {
    /// A time axis over `[start, end)` across the plot.
    fn axis(&self, start: u64, end: u64) -> TimeAxis {
        TimeAxis::new(start, end, self.accounting.tsc_hz, LABEL_WIDTH, PLOT_WIDTH)
    }

    fn vm_name(&self, id: usize) -> String {
        self.accounting
            .vms
            .get(id)
            .map_or_else(|| format!("vm{id}"), |vm| vm.name.clone())
    }

    /// VM count: every VM any record or event names.
    fn vm_count(&self) -> usize {
        let events = self.timeline.map_or(0, |t| t.runstates.len());
        self.accounting.vms.len().max(events)
    }

    /// `cycles` as time: µs, ms or s when the TSC frequency is known, else cycles.
    fn duration(&self, cycles: u64) -> String {
        match self.accounting.micros(cycles) {
            Some(us) => format_micros(us),
            None => format!("{} cycles", group(cycles)),
        }
    }

    /// `cycles` as a short time (`1.5 s`, `250 µs`), or cycles without a TSC frequency.
    fn short_duration(&self, cycles: u64) -> String {
        match self.accounting.tsc_hz {
            Some(hz) => short_seconds(cycles as f64 / hz as f64),
            None => format!("{} cyc", group(cycles)),
        }
    }

    fn header(&self, out: &mut String, source: &Source) {
        let hello = self.model.hello.as_ref();
        out.push_str("<header>\n<h1>Carousel report</h1>\n<p class=\"sub\">");
        let mut facts = vec![format!("trace <code>{}</code>", escape(source.name))];
        if let Some(vm) = source.only_vm {
            facts.push(format!("VM {} only", escape(vm)));
        }
        match &hello {
            Some(hello) => {
                facts.push(format!("commit {}", escape(&hello.commit)));
                facts.push(format!("CPU {}", escape(&hello.cpu)));
                facts.push(format!("TSC {} Hz", group(hello.tsc_hz)));
                let level = TRACE_LEVELS.iter().find(|(_, level)| *level == hello.level);
                if let Some((level, _)) = level {
                    facts.push(format!("trace level {level}"));
                }
                facts.push(format!("format v{}", hello.version));
            }
            None => facts.push("no Hello record".to_string()),
        }
        facts.push(format!("{} VMs", self.vm_count()));
        out.push_str(&facts.join(" · "));
        out.push_str("</p>\n</header>\n");
    }

    /// Damage, warnings and replay problems; or a line saying there are none.
    fn notes(&self, out: &mut String) {
        let mut notes: Vec<String> = self
            .model
            .damage
            .iter()
            .map(|damage| format!("trace damage: {damage}"))
            .collect();
        notes.extend(self.accounting.problems());
        if let Some(timeline) = self.timeline {
            notes.extend(
                timeline
                    .problems
                    .iter()
                    .map(|problem| format!("events: {problem}")),
            );
        }
        if notes.is_empty() {
            let conservation = match self.accounting.conservation() {
                Some(_) => "; guest + root + idle time adds up to the elapsed time exactly",
                None => "",
            };
            let _ = writeln!(
                out,
                "<section class=\"notes ok\"><p>The trace decoded without damage{conservation}.</p></section>"
            );
            return;
        }
        out.push_str("<section class=\"notes warn\">\n<h2>Damage and warnings</h2>\n<ul>\n");
        for note in notes {
            let _ = writeln!(out, "<li>{}</li>", escape(&note));
        }
        out.push_str("</ul>\n</section>\n");
    }

    /// The run at a glance.
    fn cards(&self, out: &mut String) {
        let Some(run) = &self.accounting.run else {
            out.push_str(
                "<section class=\"cards\"><p class=\"empty\">No RunSummary in this trace: the \
                 run did not end in order, so its totals are missing.</p></section>\n",
            );
            return;
        };
        let percent = |share: Option<f64>| {
            share.map_or("-".to_string(), |share| format!("{:.2} %", share * 100.0))
        };
        let guest = fraction(self.accounting.guest_total(), run.elapsed.into());
        let mut cards = vec![
            ("elapsed", self.short_duration(run.elapsed)),
            ("guest", percent(guest)),
            ("root", percent(self.accounting.share_of_elapsed(run.root))),
            ("idle", percent(self.accounting.share_of_elapsed(run.idle))),
            ("switches", group(run.switches)),
            (
                "switch cost, median",
                self.short_duration(run.switch_median),
            ),
            ("quantum", self.short_duration(run.quantum_cycles)),
            ("dropped records", group(run.dropped_records)),
        ];
        if let Some(jain) = self.accounting.jain_guest(|_| true) {
            cards.push(("fairness (Jain)", format!("{jain:.4}")));
        }
        out.push_str("<section class=\"cards\">\n");
        for (label, value) in cards {
            let _ = writeln!(
                out,
                "<div class=\"card\"><div class=\"value\">{}</div><div class=\"label\">{}</div></div>",
                escape(&value),
                escape(label)
            );
        }
        let _ = writeln!(
            out,
            "<p class=\"policy\">policy {}</p>",
            escape(&run.policy)
        );
        out.push_str("</section>\n");
    }

    /// Donuts of CPU time, overall and per VM: the outer ring splits it into guest, root (and,
    /// overall, idle) time; the inner ring splits the root time by exit reason.
    fn donuts(&self, out: &mut String) {
        out.push_str("<section>\n<h2>Where the CPU time went</h2>\n");
        // The costliest reasons over the whole run get colours; the same ones in every donut.
        let mut reasons: BTreeMap<u16, u128> = BTreeMap::new();
        for vm in &self.accounting.vms {
            for (&reason, totals) in &vm.exits {
                *reasons.entry(reason).or_default() += totals.cycles;
            }
        }
        let mut ranked: Vec<(u16, u128)> = reasons.into_iter().collect();
        ranked.sort_by_key(|&(reason, cycles)| (std::cmp::Reverse(cycles), reason));
        let coloured: Vec<u16> = ranked
            .iter()
            .take(DONUT_REASONS)
            .map(|&(reason, _)| reason)
            .collect();
        // The root time of `vms` by exit reason, plus what their exits do not explain of
        // `root` (switching, housekeeping).
        let by_reason = |vms: &[&VmAccount], root: Option<u64>| {
            let mut cycles = vec![0u128; coloured.len()];
            let mut other = 0u128;
            for vm in vms {
                for (reason, totals) in &vm.exits {
                    match coloured.iter().position(|r| r == reason) {
                        Some(index) => cycles[index] += totals.cycles,
                        None => other += totals.cycles,
                    }
                }
            }
            let mut slices: Vec<DonutSlice> = coloured
                .iter()
                .zip(cycles)
                .enumerate()
                .map(|(index, (&reason, cycles))| {
                    DonutSlice::new(exit_reason_name(reason), REASON_COLOURS[index], cycles)
                })
                .collect();
            slices.push(DonutSlice::new("other exits", OTHER_EXITS_COLOUR, other));
            let exits: u128 = slices.iter().map(|slice| slice.cycles).sum();
            if let Some(root) = root {
                let rest = u128::from(root).saturating_sub(exits);
                slices.push(DonutSlice::new(
                    "root, not in exits",
                    OTHER_ROOT_COLOUR,
                    rest,
                ));
            }
            slices
        };
        let all: Vec<&VmAccount> = self.accounting.vms.iter().collect();
        let run = self.accounting.run.as_ref();
        let inner = by_reason(&all, run.map(|run| run.root));
        let root: u128 = inner.iter().map(|slice| slice.cycles).sum();
        let mut outer = vec![
            DonutSlice::new("guest", GUEST_COLOUR, self.accounting.guest_total()),
            DonutSlice::new("root", ROOT_COLOUR, root),
        ];
        if let Some(run) = run {
            outer.push(DonutSlice::new("idle", IDLE_COLOUR, u128::from(run.idle)));
        }
        if outer.iter().all(|slice| slice.cycles == 0) {
            out.push_str(
                "<p class=\"empty\">No guest or exit time in this trace (no summaries, no exit \
                 intervals).</p>\n</section>\n",
            );
            return;
        }
        out.push_str("<div class=\"donut-main\">\n");
        out.push_str(&donut("all VMs", &outer, &inner, 240.0, None));
        out.push_str("<div class=\"legends\">");
        out.push_str(&self.donut_legend("CPU time (outer ring)", &outer));
        out.push_str(&self.donut_legend("Root time by exit reason (inner ring)", &inner));
        out.push_str("</div>\n</div>\n<div class=\"donut-grid\">\n");
        for vm in &self.accounting.vms {
            let root = vm.summary.as_ref().map(|summary| summary.root);
            let inner = by_reason(&[vm], root);
            let root: u128 = inner.iter().map(|slice| slice.cycles).sum();
            let guest = u128::from(vm.guest().unwrap_or(0));
            let outer = [
                DonutSlice::new("guest", GUEST_COLOUR, guest),
                DonutSlice::new("root", ROOT_COLOUR, root),
            ];
            let id = usize::from(vm.id);
            out.push_str("<figure class=\"donut-vm\">");
            out.push_str(&donut(&vm.name, &outer, &inner, 150.0, Some(id)));
            let _ = writeln!(
                out,
                "<figcaption><span class=\"swatch\" style=\"background:{}\"></span>{}<br><span class=\"muted\">root {}</span></figcaption></figure>",
                series_colour(id),
                escape(&vm.name),
                escape(&self.duration(u64::try_from(root).unwrap_or(u64::MAX)))
            );
        }
        out.push_str(
            "</div>\n<p class=\"hint\">Root-mode cycles by exit reason come from the \
             hypervisor's exit intervals; guest time and the rest of root time from its \
             summaries. Point at a ring for its figures.</p>\n</section>\n",
        );
    }

    /// A legend table for `slices`: colour, name, share and time.
    fn donut_legend(&self, title: &str, slices: &[DonutSlice]) -> String {
        let total: u128 = slices.iter().map(|slice| slice.cycles).sum();
        let mut out = format!(
            "<table class=\"legend\"><caption>{}</caption>\n",
            escape(title)
        );
        for slice in slices.iter().filter(|slice| slice.cycles > 0) {
            let cycles = u64::try_from(slice.cycles).unwrap_or(u64::MAX);
            let _ = writeln!(
                out,
                "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td class=\"num\">{:.2} %</td><td class=\"num\">{}</td></tr>",
                slice.colour,
                escape(slice.label),
                slice.cycles as f64 * 100.0 / total.max(1) as f64,
                escape(&self.duration(cycles))
            );
        }
        out.push_str("</table>\n");
        out
    }

    /// Opens a section titled `title` for a chart of the timeline, and returns the timeline; or
    /// says in a whole section that the trace has no scheduler events.
    fn open_timeline_section(&self, out: &mut String, title: &str) -> Option<&Timeline> {
        let _ = writeln!(out, "<section>\n<h2>{title}</h2>");
        let timeline = self.timeline.filter(|t| t.length() > 0);
        if timeline.is_none() {
            out.push_str(
                "<p class=\"empty\">No scheduler events in this trace (it was recorded at trace \
                 level <code>aggregate</code>; set <code>run.trace = \"switches\"</code> in the \
                 lab).</p>\n</section>\n",
            );
        }
        timeline
    }

    /// Each VM's share of the CPU per interval, stacked.
    fn share_chart(&self, out: &mut String) {
        let Some(timeline) = self.open_timeline_section(out, "CPU share over time") else {
            return;
        };
        let length = nice_count(timeline.length().div_ceil(SHARE_INTERVALS));
        let Some(rows) = intervals(timeline, &self.model.samples.exit_intervals, length) else {
            out.push_str(
                "<p class=\"empty\">The run is too short to cut into intervals.</p>\n</section>\n",
            );
            return;
        };
        let height = 220.0;
        let top = 10.0;
        let axis = self.axis(timeline.start, timeline.end);
        let _ = writeln!(
            out,
            "<svg class=\"share-chart\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"CPU share over time\">",
            LABEL_WIDTH + PLOT_WIDTH + 10.0,
            top + height + 30.0
        );
        // Horizontal grid lines and their labels.
        for percent in [0, 25, 50, 75, 100] {
            let y = top + height * (1.0 - f64::from(percent) / 100.0);
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{LABEL_WIDTH}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{percent} %</text>",
                LABEL_WIDTH + PLOT_WIDTH,
                LABEL_WIDTH - 6.0,
                y + 4.0
            );
        }
        let vms = rows.first().map_or(0, |row| row.vms.len());
        let mut below = vec![0.0f64; rows.len()];
        for vm in 0..vms {
            let mut upper = Vec::with_capacity(rows.len() * 2);
            let mut lower = Vec::with_capacity(rows.len() * 2);
            for (index, row) in rows.iter().enumerate() {
                let (x0, x1) = (axis.x(row.start), axis.x(row.end));
                let base = below[index];
                let level = base + row.share(row.vms[vm].running);
                below[index] = level;
                let y = |share: f64| top + height * (1.0 - share.min(1.0));
                upper.push(format!("{x0:.1},{:.1} {x1:.1},{:.1}", y(level), y(level)));
                lower.push(format!("{x1:.1},{:.1} {x0:.1},{:.1}", y(base), y(base)));
            }
            lower.reverse();
            let mean = mean_share(&rows, vm);
            let _ = writeln!(
                out,
                "<polygon data-vm=\"{vm}\" fill=\"{}\" points=\"{} {}\"><title>{}: {:.1} % of the CPU on average</title></polygon>",
                series_colour(vm),
                upper.join(" "),
                lower.join(" "),
                escape(&self.vm_name(vm)),
                mean * 100.0
            );
        }
        axis.render(out, top + height);
        out.push_str("</svg>\n");
        out.push_str(&self.vm_legend(vms));
        let _ = writeln!(
            out,
            "<p class=\"hint\">Running time per interval of {} (from the scheduler events), \
             stacked; the space above the stack is root mode and idle time.</p>\n</section>",
            escape(&self.duration(length))
        );
    }

    /// A legend of VM colours; pointing at a name highlights that VM everywhere.
    fn vm_legend(&self, vms: usize) -> String {
        let mut out = String::from("<ul class=\"vm-legend\">");
        for vm in 0..vms {
            let _ = write!(
                out,
                "<li data-vm=\"{vm}\"><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
                series_colour(vm),
                escape(&self.vm_name(vm))
            );
        }
        out.push_str("</ul>\n");
        out
    }

    /// Who ran when: the whole run, then a close-up of [`CLOSE_UP_SLICES`] slices from its
    /// middle, each drawn exactly.
    fn gantt(&self, out: &mut String) {
        let Some(timeline) = self.open_timeline_section(out, "Who ran when") else {
            return;
        };
        let whole = self.axis(timeline.start, timeline.end);
        self.gantt_chart(out, timeline, &whole);
        out.push_str(
            "<ul class=\"vm-legend states\"><li><span class=\"swatch\" style=\"background:#4e79a7\"></span>running</li>\
             <li><span class=\"swatch\" style=\"background:#4e79a7;opacity:.22\"></span>runnable (waiting for the CPU)</li>\
             <li><span class=\"swatch\" style=\"background:#9ca3af;opacity:.55\"></span>blocked</li>\
             <li><span class=\"swatch\" style=\"background:#b45309;opacity:.75\"></span>blocked on disk</li>\
             <li><span class=\"swatch empty-swatch\"></span>stopped</li></ul>\n",
        );
        let _ = writeln!(
            out,
            "<p class=\"hint\">{} slices. Where they are narrower than a pixel ({}), neighbours \
             are merged: the CPU row then stacks the VMs' shares of the bar, a VM row shows how \
             much of it the VM ran by how strong its colour is.</p>",
            group(timeline.slices.len() as u64),
            escape(&self.duration(whole.pixel()))
        );
        if timeline.slices.len() > CLOSE_UP_SLICES {
            let first = (timeline.slices.len() - CLOSE_UP_SLICES) / 2;
            let from = timeline.slices[first].start;
            let to = timeline.slices[first + CLOSE_UP_SLICES - 1]
                .end
                .max(from + 1);
            let _ = writeln!(
                out,
                "<h3>Close-up: {CLOSE_UP_SLICES} slices from the middle of the run, {} to {}</h3>",
                escape(&whole.label(from)),
                escape(&whole.label(to))
            );
            let close_up = self.axis(from, to).counting_from(timeline.start);
            self.gantt_chart(out, timeline, &close_up);
        }
        out.push_str("</section>\n");
    }

    /// One Gantt chart of the time `axis` spans: a row for the CPU, then a row per VM with its
    /// runstates.
    fn gantt_chart(&self, out: &mut String, timeline: &Timeline, axis: &TimeAxis) {
        let vms = timeline.runstates.len();
        let pixel = axis.pixel();
        let height = GANTT_ROW * (vms + 1) as f64;
        let _ = writeln!(
            out,
            "<svg class=\"gantt\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"Gantt timeline\">",
            LABEL_WIDTH + PLOT_WIDTH + 10.0,
            height + 30.0
        );
        let label = |out: &mut String, row: usize, text: &str, vm: Option<usize>| {
            let y = GANTT_ROW * row as f64 + GANTT_ROW / 2.0 + 4.0;
            let data = vm.map_or(String::new(), |vm| format!(" data-vm=\"{vm}\""));
            let _ = writeln!(
                out,
                "<text class=\"row-label\"{data} x=\"{}\" y=\"{y:.1}\" text-anchor=\"end\">{}</text>",
                LABEL_WIDTH - 8.0,
                escape(text)
            );
        };
        // The CPU row: each slice in its VM's colour; a merged bar stacks its VMs' shares.
        label(out, 0, "CPU", None);
        let slices = timeline
            .slices
            .iter()
            .filter_map(|slice| axis.clip(usize::from(slice.vm), slice.start, slice.end));
        let top = (GANTT_ROW - GANTT_BAR) / 2.0;
        for bar in merge_bars(slices, vms, pixel) {
            let Some(shares) = &bar.shares else {
                let title = format!(
                    "{} from {} for {}",
                    escape(&self.vm_name(bar.key)),
                    escape(&axis.label(bar.start)),
                    escape(&self.duration(bar.end - bar.start))
                );
                let fill = series_colour(bar.key);
                bar_rect(out, axis, &bar, (top, GANTT_BAR), &fill, 1.0, &title);
                continue;
            };
            let mut parts: Vec<String> = Vec::new();
            let mut y = top;
            out.push_str("<g>");
            for (vm, &share) in shares.iter().enumerate().filter(|(_, &s)| s > 0.0) {
                let height = GANTT_BAR * share.min(1.0);
                bar_rect(out, axis, &bar, (y, height), &series_colour(vm), 1.0, "");
                y += height;
                parts.push(format!(
                    "{} {:.0} %",
                    escape(&self.vm_name(vm)),
                    share * 100.0
                ));
            }
            let _ = writeln!(
                out,
                "<title>{} slices merged over {}: {}</title></g>",
                bar.merged,
                escape(&self.duration(bar.end - bar.start)),
                parts.join(", ")
            );
        }
        // A row per VM: running in its colour, runnable pale, blocked grey (blocked on the
        // shared disk amber), stopped empty. Keys: the runstates, then blocked on each reason.
        let keys = RunState::ALL.len() + BlockedOn::ALL.len();
        for (vm, spans) in timeline.runstates.iter().enumerate() {
            let row = vm + 1;
            label(out, row, &self.vm_name(vm), Some(vm));
            let y = GANTT_ROW * row as f64 + (GANTT_ROW - GANTT_BAR) / 2.0;
            let _ = writeln!(out, "<g data-vm=\"{vm}\">");
            let states = spans.iter().filter_map(|span| {
                let reason = span
                    .on
                    .and_then(|on| BlockedOn::ALL.iter().position(|&reason| reason == on));
                let key = match reason {
                    Some(reason) if span.state == RunState::Blocked => RunState::ALL.len() + reason,
                    _ => RunState::ALL
                        .iter()
                        .position(|&state| state == span.state)
                        .unwrap_or(0),
                };
                axis.clip(key, span.start, span.end)
            });
            for bar in merge_bars(states, keys, pixel) {
                let title;
                let (colour, opacity) = match &bar.shares {
                    // A merged bar shows how much of it the VM ran.
                    Some(shares) => {
                        let blocked: f64 =
                            shares[2] + shares[RunState::ALL.len()..].iter().sum::<f64>();
                        let disk = BlockedOn::ALL
                            .iter()
                            .position(|&on| on == BlockedOn::Disk)
                            .map_or(0, |reason| RunState::ALL.len() + reason);
                        let on_disk = shares.get(disk).copied().unwrap_or(0.0);
                        title = format!(
                            "{} spans merged: running {:.0} %, runnable {:.0} %, blocked {:.0} % \
                             (on disk {:.0} %)",
                            bar.merged,
                            shares[0] * 100.0,
                            shares[1] * 100.0,
                            blocked * 100.0,
                            on_disk * 100.0
                        );
                        (series_colour(vm), 0.15 + 0.85 * shares[0])
                    }
                    None => {
                        let on = bar
                            .key
                            .checked_sub(RunState::ALL.len())
                            .map(|reason| BlockedOn::ALL[reason]);
                        let (name, state) = match on {
                            Some(on) => (format!("blocked on {}", on.name()), RunState::Blocked),
                            None => (
                                RunState::ALL[bar.key].name().to_string(),
                                RunState::ALL[bar.key],
                            ),
                        };
                        title = format!(
                            "{name} from {} for {}",
                            escape(&axis.label(bar.start)),
                            escape(&self.duration(bar.end - bar.start))
                        );
                        match state {
                            RunState::Running => (series_colour(vm), 1.0),
                            RunState::Runnable => (series_colour(vm), 0.22),
                            RunState::Blocked if on == Some(BlockedOn::Disk) => {
                                (BLOCKED_DISK_COLOUR.to_string(), 0.75)
                            }
                            RunState::Blocked => (BLOCKED_COLOUR.to_string(), 0.55),
                            RunState::Stopped => continue,
                        }
                    }
                };
                bar_rect(out, axis, &bar, (y, GANTT_BAR), &colour, opacity, &title);
            }
            out.push_str("</g>\n");
        }
        // Each setting changed in the span: a line across every row at its moment.
        let names: Vec<String> = (0..vms).map(|vm| self.vm_name(vm)).collect();
        for change in self.accounting.settings.made() {
            if axis.clip(0, change.tsc, change.tsc + 1).is_none() {
                continue;
            }
            let x = axis.x(change.tsc);
            let _ = writeln!(
                out,
                "<line class=\"marker setting\" x1=\"{x:.2}\" x2=\"{x:.2}\" y1=\"0\" y2=\"{height:.1}\"><title>{} at {}</title></line>",
                escape(&describe(change.setting, &names)),
                escape(&axis.label(change.tsc))
            );
        }
        axis.render(out, height);
        out.push_str("</svg>\n");
    }

    /// Each VM's memory over time: up to [`MEMORY_SNAPSHOTS`] samples (the first, the last and
    /// evenly between), each a grid of cells coloured by page state.
    fn memory(&self, out: &mut String) {
        out.push_str("<section>\n<h2>Memory</h2>\n");
        let mut samples: BTreeMap<u16, Vec<&MemoryMap>> = BTreeMap::new();
        for map in &self.model.samples.memory_maps {
            samples.entry(map.vm).or_default().push(map);
        }
        if samples.is_empty() {
            out.push_str("<p class=\"empty\">No memory samples in this trace.</p>\n</section>\n");
            return;
        }
        out.push_str("<div class=\"grids\">\n");
        for (&vm, list) in &samples {
            for (shown, index) in snapshot_indices(list.len()).into_iter().enumerate() {
                let MemoryMap {
                    tsc,
                    pages_per_cell,
                    cells,
                    ..
                } = list[index];
                let states: Vec<usize> = cells
                    .iter()
                    .map(|&byte| PageState::from_byte(byte) as usize)
                    .collect();
                // Folded cells show the liveliest state among them.
                const LIVELINESS: [usize; 6] = [0, 3, 5, 2, 1, 4];
                let grid = Grid::fold(&states, PAGE_STATES.len(), |a, b| {
                    if LIVELINESS[a] >= LIVELINESS[b] {
                        a
                    } else {
                        b
                    }
                });
                let pages = u64::from(*pages_per_cell) * grid.per_square as u64;
                let caption = format!(
                    "{}: sample {} of {}, at {}; a square is {} page{} ({})",
                    self.vm_name(usize::from(vm)),
                    index + 1,
                    list.len(),
                    self.time_of(*tsc),
                    group(pages),
                    if pages == 1 { "" } else { "s" },
                    bytes_text(pages * 4096),
                );
                let counts = count_states(&states, PAGE_STATES.len());
                out.push_str(&grid.render(
                    "memgrid",
                    usize::from(vm) * MEMORY_SNAPSHOTS + shown,
                    &caption,
                    &PAGE_STATES,
                    &counts,
                    ("cell", "cells"),
                ));
            }
        }
        out.push_str(
            "</div>\n<p class=\"hint\">Each VM's memory over the run: its first and last \
             samples and evenly between.</p>\n</section>\n",
        );
    }

    /// The shared disk's contention over time (a timed disk's requests only): each VM's wait
    /// p99 per interval as a step line above, the device's queue length (average per interval)
    /// below.
    fn disk_contention(&self, out: &mut String) {
        let served = &self.model.samples.disk_served;
        let (Some(first), Some(last)) = (
            served.iter().map(|request| request.arrived()).min(),
            served.iter().map(|request| request.tsc).max(),
        ) else {
            return;
        };
        out.push_str("<section>\n<h2>Shared disk contention</h2>\n");
        let (start, end) = match self.timeline {
            Some(timeline) if timeline.length() > 0 => (timeline.start, timeline.end),
            _ => (first, last.max(first + 1)),
        };
        let length = nice_count(end.saturating_sub(start).div_ceil(SHARE_INTERVALS)).max(1);
        let windows: Vec<(u64, u64)> = (start..end)
            .step_by(usize::try_from(length).unwrap_or(usize::MAX))
            .map(|from| (from, (from + length).min(end)))
            .collect();
        let rows = disk_intervals(served, &windows, self.accounting.vms.len());
        let vms = rows.first().map_or(0, |row| row.vms.len());
        let axis = self.axis(start, end);
        let (top, wait_height, gap, queue_height) = (10.0, 160.0, 30.0, 70.0);
        let wait_max = rows
            .iter()
            .flat_map(|row| row.vms.iter().filter_map(|vm| vm.wait.map(|wait| wait.p99)))
            .max()
            .unwrap_or(0)
            .max(1);
        let queue_max = rows
            .iter()
            .map(|row| row.queue_max)
            .max()
            .unwrap_or(0)
            .max(1);
        let queue_top = top + wait_height + gap;
        let _ = writeln!(
            out,
            "<svg class=\"disk-chart\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"Shared disk contention\">",
            LABEL_WIDTH + PLOT_WIDTH + 10.0,
            queue_top + queue_height + 30.0
        );
        for (y, label) in [
            (top, format!("wait p99 {}", self.duration(wait_max))),
            (top + wait_height, "0".to_string()),
            (queue_top, format!("queue {queue_max}")),
            (queue_top + queue_height, "0".to_string()),
        ] {
            let _ = writeln!(
                out,
                "<line class=\"grid\" x1=\"{LABEL_WIDTH}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LABEL_WIDTH + PLOT_WIDTH,
                LABEL_WIDTH - 6.0,
                y + 4.0,
                escape(&label)
            );
        }
        for vm in 0..vms {
            let points: Vec<String> = rows
                .iter()
                .zip(&windows)
                .filter_map(|(row, &(from, to))| {
                    let p99 = row.vms[vm].wait?.p99;
                    let y = top + wait_height * (1.0 - p99 as f64 / wait_max as f64);
                    Some(format!(
                        "{:.1},{y:.1} {:.1},{y:.1}",
                        axis.x(from),
                        axis.x(to)
                    ))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "<polyline data-vm=\"{vm}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}: wait for the disk, p99 per interval</title></polyline>",
                series_colour(vm),
                points.join(" "),
                escape(&self.vm_name(vm))
            );
        }
        let mut area = vec![format!(
            "{:.1},{:.1}",
            axis.x(start),
            queue_top + queue_height
        )];
        for (row, &(from, to)) in rows.iter().zip(&windows) {
            let level = row.queue_average(to - from) / queue_max as f64;
            let y = queue_top + queue_height * (1.0 - level.min(1.0));
            area.push(format!(
                "{:.1},{y:.1} {:.1},{y:.1}",
                axis.x(from),
                axis.x(to)
            ));
        }
        area.push(format!(
            "{:.1},{:.1}",
            axis.x(end),
            queue_top + queue_height
        ));
        let _ = writeln!(
            out,
            "<polygon class=\"disk-queue\" fill=\"{BLOCKED_DISK_COLOUR}\" opacity=\"0.6\" points=\"{}\"><title>requests waiting or in service, average per interval</title></polygon>",
            area.join(" ")
        );
        axis.render(out, queue_top + queue_height);
        out.push_str("</svg>\n");
        out.push_str(&self.vm_legend(vms));
        let _ = writeln!(
            out,
            "<p class=\"hint\">Per interval of {}: above, each VM's wait for the device (its \
             requests' arrival to their service, p99 of those completed in the interval); \
             below, the requests waiting or in service on average. From {} requests the \
             shared disk served.</p>\n</section>",
            escape(&self.duration(length)),
            group(served.len() as u64)
        );
    }

    /// Each VM's disk as a grid of blocks, coloured by whether they were read or written.
    fn disk(&self, out: &mut String) {
        out.push_str("<section>\n<h2>Disk</h2>\n");
        let mut transfers: BTreeMap<u16, Vec<(u64, u64, bool)>> = BTreeMap::new();
        for transfer in &self.model.samples.disk_transfers {
            transfers.entry(transfer.vm).or_default().push((
                u64::from(transfer.lba),
                u64::from(transfer.sectors),
                transfer.write,
            ));
        }
        if transfers.is_empty() {
            out.push_str("<p class=\"empty\">No disk transfers in this trace.</p>\n</section>\n");
            return;
        }
        out.push_str("<div class=\"grids\">\n");
        for (&vm, list) in &transfers {
            let extent = list
                .iter()
                .map(|&(lba, sectors, _)| lba + sectors.max(1))
                .max()
                .unwrap_or(1);
            // Sectors per cell so that the grid has at most GRID_SQUARES cells.
            let per_cell = extent.div_ceil(GRID_SQUARES as u64).max(1);
            let cells = extent.div_ceil(per_cell) as usize;
            let mut states = vec![0usize; cells];
            for &(lba, sectors, write) in list {
                let bit = if write { 2 } else { 1 };
                let first = (lba / per_cell) as usize;
                let last = ((lba + sectors.max(1) - 1) / per_cell) as usize;
                for state in &mut states[first..=last.min(cells - 1)] {
                    *state |= bit;
                }
            }
            let grid = Grid::fold(&states, DISK_STATES.len(), |a, b| a | b);
            let account = self.accounting.vms.get(usize::from(vm));
            let disk = account.map(|vm| vm.disk).unwrap_or_default();
            let caption = format!(
                "{}: {} read{} ({} sectors), {} write{} ({} sectors); a square is {} sector{}, \
                 up to sector {}",
                self.vm_name(usize::from(vm)),
                group(disk.reads),
                if disk.reads == 1 { "" } else { "s" },
                group(disk.read_sectors),
                group(disk.writes),
                if disk.writes == 1 { "" } else { "s" },
                group(disk.written_sectors),
                group(per_cell),
                if per_cell == 1 { "" } else { "s" },
                group(extent),
            );
            let counts = count_states(&states, DISK_STATES.len());
            out.push_str(&grid.render(
                "diskgrid",
                usize::from(vm),
                &caption,
                &DISK_STATES,
                &counts,
                ("block", "blocks"),
            ));
        }
        out.push_str(
            "</div>\n<p class=\"hint\">Blocks from sector 0 to the highest one touched.</p>\n</section>\n",
        );
    }

    /// `tsc` as time since the timeline's start (or the raw TSC without events).
    fn time_of(&self, tsc: u64) -> String {
        match self.timeline {
            Some(timeline) => format!(
                "{} into the run",
                self.short_duration(tsc.saturating_sub(timeline.start))
            ),
            None => format!("TSC {}", group(tsc)),
        }
    }

    /// The tables of the text report.
    fn tables(&self, out: &mut String) {
        out.push_str("<section>\n<h2>Tables</h2>\n");
        if !self.accounting.has_summaries() {
            out.push_str(
                "<p class=\"empty\">The hypervisor sent no summary records: no runstate or \
                 scheduler tables.</p>\n",
            );
        } else {
            out.push_str("<h3>Runstates and CPU time (cycles; % of the elapsed time)</h3>\n");
            out.push_str(&html_table(&time_table(&self.accounting)));
            out.push_str("<h3>Scheduling and guest metrics</h3>\n");
            out.push_str(&html_table(&events_table(&self.accounting)));
        }
        let exits = exit_table(&self.accounting, None);
        if !exits.rows().is_empty() {
            out.push_str(
                "<h3>Exits, all VMs (cost = root-mode cycles from the exit to the next entry)</h3>\n",
            );
            out.push_str(&html_table(&exits));
            for vm in self.accounting.vms.iter().filter(|vm| !vm.exits.is_empty()) {
                let _ = writeln!(
                    out,
                    "<details><summary>Exits of {}</summary>",
                    escape(&vm.name)
                );
                out.push_str(&html_table(&exit_table(&self.accounting, Some(vm.id))));
                out.push_str("</details>\n");
            }
        }
        let mut timer = Table::new(&[
            ("VM", Align::Left),
            ("TICKS", Align::Right),
            ("FOLDED IN", Align::Right),
            ("LAG mean", Align::Right),
            ("LAG max", Align::Right),
        ]);
        for vm in &self.accounting.vms {
            if let Some(lag) = vm.timer {
                timer.push(vec![
                    vm.name.clone(),
                    group(lag.ticks),
                    group(lag.coalesced),
                    self.duration(lag.lag_total / lag.ticks.max(1)),
                    self.duration(lag.lag_max),
                ]);
            }
        }
        if !timer.rows().is_empty() {
            out.push_str("<h3>Timer ticks and their lag from the deadline</h3>\n");
            out.push_str(&html_table(&timer));
        }
        let mut disk = Table::new(&[
            ("VM", Align::Left),
            ("READS", Align::Right),
            ("SECTORS READ", Align::Right),
            ("WRITES", Align::Right),
            ("SECTORS WRITTEN", Align::Right),
        ]);
        for vm in self.accounting.vms.iter().filter(|vm| vm.disk.any()) {
            disk.push(vec![
                vm.name.clone(),
                group(vm.disk.reads),
                group(vm.disk.read_sectors),
                group(vm.disk.writes),
                group(vm.disk.written_sectors),
            ]);
        }
        if !disk.rows().is_empty() {
            out.push_str("<h3>Disk</h3>\n");
            out.push_str(&html_table(&disk));
        }
        let mut spaces = Table::new(&[
            ("VM", Align::Left),
            ("CR3", Align::Left),
            ("GUEST TIME %", Align::Right),
            ("LOADS", Align::Right),
        ]);
        for vm in &self.accounting.vms {
            let total: u64 = vm.spaces.iter().map(|space| space.cycles).sum();
            for space in &vm.spaces {
                spaces.push(vec![
                    vm.name.clone(),
                    if space.cr3 == u64::MAX {
                        "other".to_string()
                    } else {
                        format!("{:#x}", space.cr3)
                    },
                    format!("{:.1}", space.cycles as f64 * 100.0 / total.max(1) as f64),
                    group(space.loads),
                ]);
            }
        }
        if !spaces.rows().is_empty() {
            out.push_str("<h3>Guest address spaces by time</h3>\n");
            out.push_str(&html_table(&spaces));
        }
        out.push_str("</section>\n");
    }
}

/// A VM's mean running share over `rows`, weighted by their lengths.
fn mean_share(rows: &[Interval], vm: usize) -> f64 {
    let running: u64 = rows.iter().map(|row| row.vms[vm].running).sum();
    let total: u64 = rows.iter().map(Interval::length).sum();
    running as f64 / total.max(1) as f64
}

/// A byte count with a binary unit.
fn bytes_text(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else if bytes >= 1 << 10 {
        format!("{:.0} KiB", bytes as f64 / f64::from(1 << 10))
    } else {
        format!("{bytes} B")
    }
}

/// One slice of a donut.
#[derive(Debug, Clone)]
struct DonutSlice {
    label: &'static str,
    colour: &'static str,
    cycles: u128,
}

impl DonutSlice {
    fn new(label: &'static str, colour: &'static str, cycles: u128) -> Self {
        DonutSlice {
            label,
            colour,
            cycles,
        }
    }
}

/// One ring of a donut: `slices` (empty ones left out) as arcs of one circle's stroke.
/// `pathLength` 100 makes the dash lengths percentages, so one slice of 100 % needs no special
/// case.
fn ring(out: &mut String, slices: &[DonutSlice], centre: f64, radius: f64, width: f64) {
    let total: u128 = slices.iter().map(|slice| slice.cycles).sum();
    let _ = write!(
        out,
        "<circle cx=\"{centre}\" cy=\"{centre}\" r=\"{radius:.1}\" fill=\"none\" stroke=\"#f3f4f6\" stroke-width=\"{width:.1}\"/>"
    );
    let mut offset = 0.0;
    for slice in slices.iter().filter(|slice| slice.cycles > 0) {
        let percent = slice.cycles as f64 * 100.0 / total.max(1) as f64;
        let _ = write!(
            out,
            "<circle class=\"slice\" cx=\"{centre}\" cy=\"{centre}\" r=\"{radius:.1}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{width:.1}\" pathLength=\"100\" stroke-dasharray=\"{percent:.3} {:.3}\" stroke-dashoffset=\"{:.3}\" transform=\"rotate(-90 {centre} {centre})\"><title>{}: {percent:.2} %</title></circle>",
            slice.colour,
            100.0 - percent,
            -offset,
            escape(slice.label),
        );
        offset += percent;
    }
}

/// A donut `size` units across: `outer` as the outer ring, `inner` as the inner ring, and the
/// first outer slice's share (guest time) in the middle.
fn donut(
    name: &str,
    outer: &[DonutSlice],
    inner: &[DonutSlice],
    size: f64,
    vm: Option<usize>,
) -> String {
    let centre = size / 2.0;
    let data = vm.map_or(String::new(), |vm| format!(" data-vm=\"{vm}\""));
    let mut out = format!(
        "<svg class=\"donut\"{data} viewBox=\"0 0 {size} {size}\" width=\"{size}\" height=\"{size}\" role=\"img\" aria-label=\"CPU time of {}\">",
        escape(name)
    );
    ring(&mut out, outer, centre, size * 0.42, size * 0.14);
    ring(&mut out, inner, centre, size * 0.29, size * 0.09);
    let total: u128 = outer.iter().map(|slice| slice.cycles).sum();
    let first = outer.first().map_or(0, |slice| slice.cycles);
    let share = first as f64 * 100.0 / total.max(1) as f64;
    let label = outer.first().map_or("", |slice| slice.label);
    let _ = write!(
        out,
        "<text class=\"donut-value\" x=\"{centre}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"{:.1}\">{share:.1} %</text><text class=\"donut-label\" x=\"{centre}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text></svg>",
        centre + size * 0.02,
        size * 0.09,
        centre + size * 0.11
    );
    out
}

/// One bar of a time chart: `[start, end)` shown as key `key` (a VM, or a runstate's index).
/// A bar that merges several narrow items has `shares`: each key's share of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub key: usize,
    pub start: u64,
    pub end: u64,
    /// Items merged into the bar.
    pub merged: usize,
    pub shares: Option<Vec<f64>>,
}

/// Bars for `items` (`(key, start, end)` in order, keys below `keys`): an item at least `pixel`
/// cycles long is a bar of its own; runs of shorter neighbours (no more than `pixel` apart) merge
/// into bars about `pixel` long, keyed by the key that covers most of them. Neighbouring merged
/// bars that look alike (same key, shares within 10 %) merge further, so a long stretch of
/// regular round robin becomes one bar.
pub fn merge_bars(
    items: impl Iterator<Item = (usize, u64, u64)>,
    keys: usize,
    pixel: u64,
) -> Vec<Bar> {
    let pixel = pixel.max(1);
    /// A merged bar in the making.
    struct Pending {
        start: u64,
        end: u64,
        cycles: Vec<u64>,
        merged: usize,
    }
    fn close(pending: Pending, bars: &mut Vec<Bar>, pixel: u64) {
        let total: u64 = pending.cycles.iter().sum();
        if pending.merged == 1 || total == 0 {
            let key = (0..pending.cycles.len())
                .max_by_key(|&key| pending.cycles[key])
                .unwrap_or(0);
            bars.push(Bar {
                key,
                start: pending.start,
                end: pending.end,
                merged: pending.merged,
                shares: None,
            });
            return;
        }
        let span = (pending.end - pending.start).max(1) as f64;
        let shares: Vec<f64> = pending
            .cycles
            .iter()
            .map(|&cycles| cycles as f64 / span)
            .collect();
        if let Some(last) = bars.last_mut() {
            let alike = pending.start.saturating_sub(last.end) <= pixel
                && last.shares.as_ref().is_some_and(|old| {
                    old.iter()
                        .zip(&shares)
                        .all(|(old, new)| (old - new).abs() <= 0.1)
                });
            if let (true, Some(old)) = (alike, &mut last.shares) {
                // Weighted by length, so the merged bar's shares stay true.
                let old_span = (last.end - last.start) as f64;
                let new_span = (pending.end - last.end) as f64;
                for (old, new) in old.iter_mut().zip(&shares) {
                    *old = (*old * old_span + new * new_span) / (old_span + new_span).max(1.0);
                }
                last.key = largest(old);
                last.end = pending.end;
                last.merged += pending.merged;
                return;
            }
        }
        bars.push(Bar {
            key: largest(&shares),
            start: pending.start,
            end: pending.end,
            merged: pending.merged,
            shares: Some(shares),
        });
    }
    /// The index of the largest share.
    fn largest(shares: &[f64]) -> usize {
        (0..shares.len())
            .max_by(|&a, &b| shares[a].total_cmp(&shares[b]))
            .unwrap_or(0)
    }
    let mut bars = Vec::new();
    let mut pending: Option<Pending> = None;
    for (key, start, end) in items {
        let key = key.min(keys.saturating_sub(1));
        let length = end.saturating_sub(start);
        if let Some(open) = pending.take() {
            if length >= pixel || start.saturating_sub(open.end) > pixel {
                close(open, &mut bars, pixel);
            } else {
                pending = Some(open);
            }
        }
        if length >= pixel {
            bars.push(Bar {
                key,
                start,
                end,
                merged: 1,
                shares: None,
            });
            continue;
        }
        let open = pending.get_or_insert_with(|| Pending {
            start,
            end: start,
            cycles: vec![0; keys.max(1)],
            merged: 0,
        });
        open.cycles[key] += length;
        open.end = end.max(open.end);
        open.merged += 1;
        if open.end - open.start >= pixel {
            if let Some(open) = pending.take() {
                close(open, &mut bars, pixel);
            }
        }
    }
    if let Some(open) = pending {
        close(open, &mut bars, pixel);
    }
    bars
}

/// One bar as an SVG rectangle `(y, height)` in a Gantt row, with a tooltip unless `title` is
/// empty (it is escaped already).
fn bar_rect(
    out: &mut String,
    axis: &TimeAxis,
    bar: &Bar,
    (y, height): (f64, f64),
    colour: &str,
    opacity: f64,
    title: &str,
) {
    let x = axis.x(bar.start);
    // At least a fifth of a unit wide, so that a short slice still shows.
    let width = (axis.x(bar.end) - x).max(0.2);
    let opacity = if opacity >= 1.0 {
        String::new()
    } else {
        format!(" fill-opacity=\"{opacity:.2}\"")
    };
    let _ = write!(
        out,
        "<rect x=\"{x:.2}\" y=\"{y:.2}\" width=\"{width:.2}\" height=\"{height:.2}\" fill=\"{colour}\"{opacity}"
    );
    if title.is_empty() {
        out.push_str("/>\n");
    } else {
        let _ = writeln!(out, "><title>{title}</title></rect>");
    }
}

/// How many cells are in each state.
fn count_states(states: &[usize], kinds: usize) -> Vec<u64> {
    let mut counts = vec![0u64; kinds];
    for &state in states {
        if let Some(count) = counts.get_mut(state) {
            *count += 1;
        }
    }
    counts
}

/// A grid of squares, each one state (an index into a legend).
struct Grid {
    squares: Vec<usize>,
    /// Cells folded into one square.
    per_square: usize,
}

impl Grid {
    /// `cells` folded `per_square` at a time (with `combine`) so that at most [`GRID_SQUARES`]
    /// remain.
    fn fold(cells: &[usize], kinds: usize, combine: impl Fn(usize, usize) -> usize) -> Grid {
        let per_square = cells.len().div_ceil(GRID_SQUARES).max(1);
        let squares = cells
            .chunks(per_square)
            .map(|chunk| {
                chunk
                    .iter()
                    .copied()
                    .reduce(&combine)
                    .unwrap_or(0)
                    .min(kinds - 1)
            })
            .collect();
        Grid {
            squares,
            per_square,
        }
    }

    /// The grid as a figure: an SVG of squares (runs of one state in a row drawn as one
    /// rectangle, the square borders laid over them as a pattern), a caption and a legend with
    /// each state's count of `unit` (singular, plural).
    fn render(
        &self,
        class: &str,
        vm: usize,
        caption: &str,
        legend: &[(&str, &str)],
        counts: &[u64],
        unit: (&str, &str),
    ) -> String {
        let rows = self.squares.len().div_ceil(GRID_COLUMNS).max(1);
        let width = GRID_COLUMNS as f64 * GRID_SQUARE;
        let height = rows as f64 * GRID_SQUARE;
        let pattern = format!("{class}-{vm}");
        let mut out = format!(
            "<figure class=\"grid-figure\" data-vm=\"{vm}\"><svg class=\"{class}\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
            escape(caption)
        );
        let _ = write!(
            out,
            "<defs><pattern id=\"{pattern}\" width=\"{GRID_SQUARE}\" height=\"{GRID_SQUARE}\" patternUnits=\"userSpaceOnUse\"><path d=\"M{GRID_SQUARE} 0V{GRID_SQUARE}H0\" fill=\"none\" stroke=\"#fff\" stroke-width=\"1.5\"/></pattern></defs>"
        );
        for (row, chunk) in self.squares.chunks(GRID_COLUMNS).enumerate() {
            let mut column = 0;
            for run in chunk.chunk_by(|a, b| a == b) {
                let state = run[0];
                let _ = write!(
                    out,
                    "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"{:.0}\" height=\"{GRID_SQUARE}\" fill=\"{}\"/>",
                    column as f64 * GRID_SQUARE,
                    row as f64 * GRID_SQUARE,
                    run.len() as f64 * GRID_SQUARE,
                    legend[state].1
                );
                column += run.len();
            }
        }
        let _ = write!(
            out,
            "<rect width=\"{width}\" height=\"{height}\" fill=\"url(#{pattern})\"/></svg><figcaption>{}<ul class=\"vm-legend\">",
            escape(caption)
        );
        let total: u64 = counts.iter().sum();
        for (index, (name, colour)) in legend.iter().enumerate() {
            let count = counts.get(index).copied().unwrap_or(0);
            if count == 0 {
                continue;
            }
            let _ = write!(
                out,
                "<li><span class=\"swatch\" style=\"background:{colour}\"></span>{name} {} {} ({:.1} %)</li>",
                group(count),
                if count == 1 { unit.0 } else { unit.1 },
                count as f64 * 100.0 / total.max(1) as f64
            );
        }
        out.push_str("</ul></figcaption></figure>\n");
        out
    }
}

/// A text-report table as an HTML table (numbers right-aligned, as in the text).
fn html_table(table: &Table) -> String {
    let mut out = String::from("<div class=\"table-wrap\"><table class=\"data\">\n<thead><tr>");
    let class = |column: usize| match table.align(column) {
        Align::Left => "",
        Align::Right => " class=\"num\"",
    };
    for (column, name) in table.header().iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", class(column), escape(name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in table.rows() {
        out.push_str("<tr>");
        for column in 0..table.header().len() {
            let cell = row.get(column).map_or("", String::as_str);
            let _ = write!(out, "<td{}>{}</td>", class(column), escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// The page's style sheet.
const STYLE: &str = r#"
.marker { stroke: #b45309; stroke-width: 1.5; }
:root { --ink: #1f2933; --muted: #66727f; --line: #e4e7eb; --bg: #f7f8fa; --card: #fff;
  --accent: #4e79a7; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header h1 { margin: 0 0 4px; font-size: 26px; letter-spacing: -0.01em; }
header .sub { margin: 0 0 18px; color: var(--muted); }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 22px 0 8px; color: #3e4c59; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 22px; margin: 0 0 18px; box-shadow: 0 1px 2px rgba(15, 23, 42, 0.04); }
section.notes { padding: 10px 22px; }
section.notes.ok { border-left: 4px solid #59a14f; }
section.notes.warn { border-left: 4px solid #e15759; background: #fff8f7; }
section.notes ul { margin: 0; padding-left: 18px; }
section.cards { display: flex; flex-wrap: wrap; gap: 12px; align-items: stretch; }
.card { flex: 1 1 auto; min-width: 112px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
  background: #fbfcfd; }
.card .value { font-size: 19px; font-weight: 600; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.policy { flex-basis: 100%; margin: 2px 0 0; color: var(--muted); }
.empty { color: var(--muted); font-style: italic; margin: 4px 0; }
.hint { color: var(--muted); font-size: 12.5px; margin: 8px 0 0; }
.donut-main { display: flex; flex-wrap: wrap; gap: 28px; align-items: center; }
.donut-grid { display: flex; flex-wrap: wrap; gap: 10px 18px; margin-top: 14px; }
.donut-vm { margin: 0; text-align: center; }
.donut-vm figcaption { font-weight: 600; }
.donut .slice { transition: stroke-width .15s; }
.donut .slice:hover { opacity: .8; }
.donut-value { font-weight: 700; fill: var(--ink); }
.donut-label { font-size: 11px; fill: var(--muted); }
table.legend { border-collapse: collapse; }
table.legend caption { text-align: left; font-weight: 600; color: #3e4c59; padding-bottom: 4px; }
.legends { display: flex; flex-wrap: wrap; gap: 12px 36px; align-items: flex-start; }
.muted { color: var(--muted); font-weight: 400; font-size: 12px; }
table.legend td { padding: 3px 10px 3px 0; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 3px; margin-right: 7px;
  vertical-align: -1px; }
.empty-swatch { border: 1px dashed #9aa5b1; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
svg.share-chart, svg.gantt { width: 100%; height: auto; display: block; }
svg .grid { stroke: #eef0f3; }
svg .axis { stroke: #9aa5b1; }
svg .tick { font-size: 11px; fill: var(--muted); }
svg .row-label { font-size: 12px; fill: var(--ink); }
ul.vm-legend { list-style: none; padding: 0; margin: 10px 0 0; display: flex; flex-wrap: wrap;
  gap: 4px 16px; }
ul.vm-legend li { cursor: default; }
.grids { display: flex; flex-wrap: wrap; gap: 18px 28px; }
.grid-figure { margin: 0; max-width: 600px; }
.grid-figure svg { display: block; border-radius: 4px; max-width: 100%; height: auto; }
.grid-figure figcaption { margin-top: 6px; font-size: 12.5px; }
.grid-figure ul.vm-legend { margin-top: 4px; font-size: 12px; }
.table-wrap { overflow-x: auto; }
table.data { border-collapse: collapse; font-size: 12.5px; min-width: 50%; }
table.data th { text-align: left; font-weight: 600; color: #3e4c59; border-bottom: 2px solid var(--line);
  padding: 6px 12px 6px 0; white-space: nowrap; }
table.data td { padding: 4px 12px 4px 0; border-bottom: 1px solid #f0f2f4; white-space: nowrap; }
table.data th.num { text-align: right; }
table.data tbody tr:hover { background: #f5f8fc; }
details { margin: 6px 0; }
summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: 12px; }
footer h3 { font-size: 12px; margin: 8px 0 2px; }
#page-errors:empty::after { content: "none"; }
body.focus [data-vm] { opacity: .25; transition: opacity .1s; }
body.focus [data-vm].focused { opacity: 1; }
"#;

/// Runs first: records every script error and console error in the page (the list
/// `#page-errors`), so a headless browser's DOM dump shows them.
const ERROR_CAPTURE: &str = r#"
window.carouselErrors = [];
function carouselNote(message) {
  window.carouselErrors.push(String(message));
  var list = document.getElementById("page-errors");
  if (list) {
    var item = document.createElement("li");
    item.textContent = String(message);
    list.appendChild(item);
    list.setAttribute("data-count", String(window.carouselErrors.length));
  }
}
window.addEventListener("error", function (event) { carouselNote(event.message || "error"); });
window.addEventListener("unhandledrejection", function (event) { carouselNote("unhandled rejection: " + event.reason); });
(function () {
  var original = console.error;
  console.error = function () {
    carouselNote(Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
"#;

/// Runs last: catches up on errors noted before the list existed, wires the VM highlight, and
/// marks the page rendered.
const SCRIPT: &str = r#"
(function () {
  var list = document.getElementById("page-errors");
  window.carouselErrors.forEach(function (message) {
    var item = document.createElement("li");
    item.textContent = message;
    list.appendChild(item);
  });
  list.setAttribute("data-count", String(window.carouselErrors.length));
  var marked = document.querySelectorAll("[data-vm]");
  function focus(vm) {
    document.body.classList.add("focus");
    marked.forEach(function (element) {
      element.classList.toggle("focused", element.getAttribute("data-vm") === vm);
    });
  }
  function unfocus() {
    document.body.classList.remove("focus");
    marked.forEach(function (element) { element.classList.remove("focused"); });
  }
  document.querySelectorAll(".vm-legend li[data-vm], .row-label[data-vm], .donut[data-vm]")
    .forEach(function (element) {
      element.addEventListener("mouseenter", function () { focus(element.getAttribute("data-vm")); });
      element.addEventListener("mouseleave", unfocus);
    });
  document.documentElement.setAttribute("data-rendered", "yes");
})();
"#;

/// Memory samples shown per VM.
const MEMORY_SNAPSHOTS: usize = 4;

/// Which of `count` samples to show: the first, the last and evenly between, at most
/// [`MEMORY_SNAPSHOTS`], in order.
fn snapshot_indices(count: usize) -> Vec<usize> {
    if count <= MEMORY_SNAPSHOTS {
        return (0..count).collect();
    }
    (0..MEMORY_SNAPSHOTS)
        .map(|shown| shown * (count - 1) / (MEMORY_SNAPSHOTS - 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{ExitStat, RunSummary, SliceEnd, VmSummary};

    use carousel_protocol::record::Record;

    use super::*;
    use crate::decode::Damage;
    use crate::model::timeline::tests::{batch, off, run, two_vms};
    use crate::model::{Keep, ModelBuilder};

    fn source() -> Source<'static> {
        Source {
            name: "test.trace",
            only_vm: None,
        }
    }

    /// The page of `records`.
    fn page(records: &[Record], source: &Source) -> String {
        super::page(&Model::of_records(records), source)
    }

    /// A summary that agrees with the events of [`two_vms`] (VM 0 is preempted once and yields
    /// once; VM 1 blocks, wakes once and stops).
    fn summary(vm: u16, guest: u64) -> VmSummary {
        VmSummary {
            vm,
            running: guest + 10,
            runnable: 1_100 - guest - 10,
            blocked: 0,
            stopped: 0,
            guest,
            root: 10,
            slices: 2,
            preemptions: u64::from(vm == 0),
            yields: 1,
            wakes: u64::from(vm == 1),
            wake_p50: 0,
            wake_p95: 0,
            wake_p99: 0,
            wake_max: 0,
            quantum_error_median_ppm: 0,
            quantum_error_max_ppm: 0,
            blocked_console: 0,
            blocked_records: 0,
            guest_records_dropped: 0,
        }
    }

    /// Two VMs with events, exits, summaries, a memory map and disk transfers.
    fn full_trace() -> Vec<Record> {
        let mut records = two_vms();
        records.insert(
            1,
            Record::ExitInterval {
                tsc: 600,
                vm: 0,
                interval: 500,
                exits: vec![ExitStat {
                    reason: 30,
                    count: 3,
                    cycles: 60,
                    min: 10,
                    max: 30,
                    log2: vec![],
                }],
            },
        );
        records.insert(
            1,
            Record::MemoryMap {
                tsc: 500,
                vm: 1,
                pages_per_cell: 4,
                cells: vec![0, 0, 1, 1, 2, 3, 4, 5, 9],
            },
        );
        records.insert(
            1,
            Record::DiskIo {
                tsc: 450,
                vm: 1,
                lba: 10,
                sectors: 4,
                write: true,
            },
        );
        records.push(Record::VmSummary(summary(0, 500)));
        records.push(Record::VmSummary(summary(1, 250)));
        records.push(Record::RunSummary(RunSummary {
            policy: "round-robin".into(),
            quantum_cycles: 300,
            elapsed: 1_100,
            root: 60,
            idle: 290,
            switch_median: 10,
            switch_max: 10,
            switches: 4,
            dropped_records: 0,
        }));
        records
    }

    #[test]
    fn the_page_has_every_part() {
        let html = page(&full_trace(), &source());
        for part in [
            "class=\"donut\"",
            "class=\"share-chart\"",
            "class=\"gantt\"",
            "class=\"memgrid\"",
            "class=\"diskgrid\"",
            "IO_INSTRUCTION",
            "id=\"page-errors\"",
            "Runstates and CPU time",
        ] {
            assert!(html.contains(part), "no {part}");
        }
        // Nothing is fetched: no URL at all.
        assert!(!html.contains("http:") && !html.contains("https:"), "a URL");
        assert!(!html.contains("src="), "an external resource");
        assert!(html.contains("The trace decoded without damage"));
    }

    /// A timed disk's requests draw the contention chart: a wait line per VM that waited, and
    /// the queue; a trace without them has no such section.
    #[test]
    fn served_requests_draw_the_disk_contention_chart() {
        assert!(!page(&full_trace(), &source()).contains("Shared disk contention"));
        let mut records = full_trace();
        for (tsc, vm, wait) in [(300, 0, 0), (400, 1, 100), (600, 0, 50)] {
            records.insert(
                1,
                Record::DiskServed {
                    tsc,
                    vm,
                    sectors: 8,
                    write: vm == 1,
                    wait,
                    service: 100,
                },
            );
        }
        let html = page(&records, &source());
        assert!(html.contains("Shared disk contention"));
        assert!(html.contains("class=\"disk-chart\""));
        assert!(html.contains("class=\"disk-queue\""));
        assert!(html.contains("<polyline data-vm=\"0\""));
        assert!(html.contains("<polyline data-vm=\"1\""));
        assert!(html.contains("From 3 requests"));
    }

    #[test]
    fn names_from_the_trace_are_escaped() {
        let mut records = full_trace();
        records[0] = crate::fixtures::hello(&["<script>alert(1)</script>", "b&\"'"], 1_000_000);
        let html = page(&records, &source());
        assert!(!html.contains("<script>alert"), "unescaped name");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("b&\"'"));
        assert!(html.contains("b&amp;&quot;&#39;"));
        // The page's own scripts are the only ones.
        assert_eq!(html.matches("<script>").count(), 2);
    }

    #[test]
    fn without_events_or_samples_the_page_says_so() {
        let records: Vec<Record> = full_trace()
            .into_iter()
            .filter(|record| {
                !matches!(
                    record,
                    Record::Events { .. } | Record::MemoryMap { .. } | Record::DiskIo { .. }
                )
            })
            .collect();
        let html = page(&records, &source());
        assert!(html.contains("No scheduler events in this trace"));
        assert!(html.contains("No memory samples in this trace."));
        assert!(html.contains("No disk transfers in this trace."));
        assert!(html.contains("class=\"donut\""));
        let html = page(&[], &source());
        assert!(html.contains("no Hello record"));
        assert!(html.contains("No RunSummary"));
    }

    #[test]
    fn damage_is_named_on_the_page() {
        let mut model = ModelBuilder::new(Keep::Everything);
        for record in full_trace() {
            model.add(&record);
        }
        model.add_damage(Damage::Gap { from: 3, to: 5 });
        let source = Source {
            name: "x",
            only_vm: None,
        };
        let html = super::page(&model.finish(), &source);
        assert!(html.contains("trace damage: records 3..5 never arrived"));
    }

    #[test]
    fn memory_snapshots_span_the_run() {
        assert_eq!(snapshot_indices(0), Vec::<usize>::new());
        assert_eq!(snapshot_indices(3), vec![0, 1, 2]);
        assert_eq!(snapshot_indices(10), vec![0, 3, 6, 9]);
        assert_eq!(snapshot_indices(5), vec![0, 1, 2, 4]);
    }

    #[test]
    fn memory_cells_are_counted_by_state() {
        let html = page(&full_trace(), &source());
        // Nine cells: two untouched, two touched, and an unknown byte read as untouched.
        assert!(html.contains("untouched 3 cells (33.3 %)"), "{html}");
        assert!(html.contains("touched 2 cells (22.2 %)"));
        assert!(html.contains("a square is 4 pages (16 KiB)"));
        // Disk: sectors 10..14 written, out of 14.
        assert!(html.contains("written 4 blocks (28.6 %)"));
    }

    #[test]
    fn many_tiny_slices_merge_into_few_bars() {
        // 10,000 slices of 100 cycles, round robin over 4 VMs, on a 1,000-pixel axis.
        let slices = (0..10_000u64).map(|i| ((i % 4) as usize, i * 100, i * 100 + 90));
        let bars = merge_bars(slices, 4, 1_000);
        assert!(bars.len() < 50, "{} bars", bars.len());
        let shares = bars[0].shares.as_ref().expect("merged");
        assert!((shares[0] - 0.225).abs() < 0.05, "{shares:?}");
        // Wide items stay as they are.
        let wide = [(0, 0, 5_000), (1, 5_000, 9_000), (0, 9_000, 9_500)];
        let bars = merge_bars(wide.into_iter(), 2, 1_000);
        assert_eq!(bars.len(), 3);
        assert_eq!(bars[2].merged, 1);
        assert_eq!(bars[2].shares, None);
        assert_eq!((bars[1].key, bars[1].start, bars[1].end), (1, 5_000, 9_000));
    }

    #[test]
    fn a_long_run_stays_small() {
        // 10 s at 1 GHz, 1 ms slices over 4 VMs: 10,000 slices.
        let mut events = Vec::new();
        for slice in 0..10_000u64 {
            let vm = (slice % 4) as u16;
            events.push((slice * 1_000_000 + 1, run(vm)));
            events.push((slice * 1_000_000 + 999_000, off(vm, SliceEnd::Preempted)));
        }
        let records = vec![
            crate::fixtures::hello(&["a", "b", "c", "d"], 1_000_000_000),
            batch(&events),
        ];
        let html = page(&records, &source());
        assert!(html.len() < 1_000_000, "{} bytes", html.len());
        assert!(html.contains("10,000 slices"));
    }

    proptest::proptest! {
        /// Any events, disk transfers and memory samples make a page and a Perfetto export
        /// (valid JSON) without a panic.
        #[test]
        fn anything_makes_a_page_and_an_export(
            mut records in crate::model::timeline::tests::any_records(),
            disk in proptest::collection::vec((0u32.., 0u16.., proptest::bool::ANY, 0u16..6), 0..8),
            cells in proptest::collection::vec(proptest::num::u8::ANY, 0..5_000),
            pages_per_cell in 0u32..8,
        ) {
            for (lba, sectors, write, vm) in disk {
                records.push(Record::DiskIo { tsc: 1, vm, lba, sectors, write });
            }
            records.push(Record::MemoryMap { tsc: 5, vm: 1, pages_per_cell, cells });
            let html = page(&records, &source());
            proptest::prop_assert!(html.ends_with("</html>\n"));
            let mut bytes = Vec::new();
            crate::render::perfetto::write(&Model::of_records(&records), &mut bytes).expect("writes to memory");
            proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
        }
    }
}
