//! `carousel report TRACE --html FILE`: the report as one self-contained page.
//!
//! What is here: [`page`] writes one HTML file that needs no network. Its charts are the web
//! page's own ([`web::PAGE_SCRIPT`], the components `carousel run --web` and `carousel view`
//! draw with), inlined with their style and fed the trace's deltas from an inline JSON element:
//! CPU share per VM over time, who ran when, root time by exit reason, each VM's memory and
//! disk grids, the shared disk's queue, timer lag, wake latency and dropped records, with the
//! time slider that scrubs them all. Around them, drawn here: the run at a glance, the damage
//! and warnings, and the tables of the text report.
//!
//! What is not: a second set of charts. Everything comes from the [`Model`] (the cards and
//! tables) and the [`Feed`](crate::model::feed::Feed)'s deltas (the charts). Every string from
//! the trace is escaped ([`escape`]) here, or is put in by the script as text; none can end the
//! inline JSON element ([`web::inline_json`]).

use std::fmt::Write;

use super::chart::{escape, short_seconds};
use super::table::{Align, Table};
use super::text::{events_table, exit_table, time_table};
use super::web;
use crate::format::{format_micros, group};
use crate::model::accounting::{fraction, Accounting};
use crate::model::feed::Delta;
use crate::model::timeline::Timeline;
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

/// Everything the page's parts read.
struct Page<'a> {
    model: &'a Model,
    accounting: Accounting,
    timeline: Option<&'a Timeline>,
}

/// The report page of a model (the whole run's, or one VM's from [`crate::decode::only_vm`])
/// and the feed of the same records ([`crate::model::feed::Feed::of_trace`]).
pub fn page(model: &Model, deltas: &[Delta], source: &Source) -> String {
    page_within(model, deltas, source, ITEMS_MAX)
}

/// Most bytes of chart items a page inlines (a browser parses them in well under a second);
/// past it the timelines stop, and the page says where.
pub const ITEMS_MAX: usize = 24 << 20;

/// [`page`] with at most about `budget` bytes of chart items.
fn page_within(model: &Model, deltas: &[Delta], source: &Source, budget: usize) -> String {
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
    let _ = writeln!(out, "<style>{}{STYLE}</style>", web::PAGE_STYLE);
    out.push_str("</head>\n<body data-rendered=\"no\" data-mode=\"report\">\n");
    let names = model.vm_names(0);
    let status = format!("report of {}", escape(source.name));
    let items = web::finished_items(deltas, &names, "report", &status, budget);
    page.header(&mut out, source);
    page.notes(&mut out, items.cut, items.others_cut);
    page.cards(&mut out);
    out.push_str("<section class=\"charts\">\n<h2>Charts</h2>\n");
    out.push_str(web::page_part("scrub"));
    out.push_str(web::page_part("charts"));
    out.push_str("</section>\n");
    page.tables(&mut out);
    out.push_str(
        "<footer><p>Made by <code>carousel report --html</code>: one file, no network. Its \
         charts are the live page's. Times are TSC time as the hypervisor counted it.</p>\n\
         <h3>Page errors</h3>\n<ol id=\"page-errors\" data-count=\"0\"></ol></footer>\n",
    );
    let _ = writeln!(
        out,
        "<script type=\"application/json\" id=\"carousel-items\">{}</script>",
        items.json
    );
    let _ = writeln!(
        out,
        "<script>{}</script>\n</body>\n</html>",
        web::PAGE_SCRIPT
    );
    out
}

impl Page<'_> {
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

    /// Damage, warnings and replay problems, where the charts' timelines stop (`cut`) and how
    /// many of their other items were left out (`others_cut`); or a line saying there are none.
    fn notes(&self, out: &mut String, cut: Option<(i64, usize)>, others_cut: usize) {
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
        if let Some((at, left)) = cut {
            notes.push(format!(
                "the charts' timelines (CPU share, who ran when) stop {} after the origin: the \
                 {} slices and spans after that are more than this page holds; the tables \
                 count all of them, and `carousel view` draws them all",
                self.short_duration(u64::try_from(at).unwrap_or(0)),
                group(left as u64),
            ));
        }
        if others_cut > 0 {
            notes.push(format!(
                "the charts other than the timelines stop early: {} more exit, memory, disk, \
                 wake and check items than this page holds are left out; the tables count all \
                 of them, and `carousel view` draws them all",
                group(others_cut as u64)
            ));
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

    /// `tsc` as time since the timeline's start (or the raw TSC without events).
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
:root { --ink: #1f2933; --muted: #66727f; --line: #e4e7eb; --bg: #f7f8fa; --card: #fff;
  --accent: #4e79a7; }
body { margin: 0; padding: 24px 32px 48px; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
body > header { display: block; position: static; padding: 0; border: 0; background: none; }
header h1 { margin: 0 0 4px; font-size: 26px; letter-spacing: -0.01em; }
header .sub { margin: 0 0 18px; color: var(--muted); }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
h2 { font-size: 17px; margin: 0 0 12px; }
h3 { font-size: 14px; margin: 22px 0 8px; color: #3e4c59; }
body > section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 22px; margin: 0 0 18px; box-shadow: 0 1px 2px rgba(15, 23, 42, 0.04); }
section.charts #scrub { padding: 6px 0; }
section.charts #charts { margin-top: 8px; }
section.charts figure { font-size: 13px; }
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
.num { text-align: right; font-variant-numeric: tabular-nums; }
.table-wrap { overflow-x: auto; }
table.data { border-collapse: collapse; font-size: 12.5px; min-width: 50%; }
table.data th { text-align: left; font-weight: 600; color: #3e4c59; border-bottom: 2px solid var(--line);
  padding: 6px 12px 6px 0; white-space: nowrap; }
table.data td { padding: 4px 12px 4px 0; border-bottom: 1px solid #f0f2f4; white-space: nowrap; }
table.data th.num { text-align: right; }
table.data tbody tr:hover { background: #f5f8fc; }
details { margin: 6px 0; }
summary { cursor: pointer; color: var(--accent); }
footer { color: var(--muted); font-size: 12px; padding: 0; border: 0; }
footer h3 { font-size: 12px; margin: 8px 0 2px; }
#page-errors:empty::after { content: "none"; }
"#;

#[cfg(test)]
mod tests {
    use carousel_protocol::record::{ExitStat, RunSummary, SliceEnd, VmSummary};

    use carousel_protocol::record::Record;

    use super::*;
    use crate::decode::Damage;
    use crate::model::feed::Feed;
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
        super::page(
            &Model::of_records(records),
            &Feed::of_records(records),
            source,
        )
    }

    /// The items the page inlines for its charts.
    fn items(html: &str) -> Vec<serde_json::Value> {
        let open = "<script type=\"application/json\" id=\"carousel-items\">";
        let (_, rest) = html.split_once(open).expect("inlined items");
        let (json, _) = rest.split_once("</script>").expect("the element ends");
        let value: serde_json::Value = serde_json::from_str(json).expect("JSON");
        value.as_array().expect("an array").clone()
    }

    /// How many of `items` are of `kind` (the wire's letter).
    fn count(items: &[serde_json::Value], kind: &str) -> usize {
        items.iter().filter(|item| item[0] == kind).count()
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
            "id=\"share\"",
            "id=\"gantt\"",
            "id=\"donuts\"",
            "id=\"memory\"",
            "id=\"disk\"",
            "id=\"disk-queue\"",
            "id=\"wakes\"",
            "id=\"slider\"",
            "IO_INSTRUCTION",
            "id=\"page-errors\"",
            "Runstates and CPU time",
        ] {
            assert!(html.contains(part), "no {part}");
        }
        // The charts are the web page's, fed its deltas; the page leaves out the consoles and
        // the controls.
        assert!(html.contains(web::PAGE_SCRIPT));
        assert!(!html.contains("id=\"consoles\"") && !html.contains("id=\"knobs\""));
        let items = items(&html);
        assert_eq!(items[0]["mode"], "report");
        assert_eq!(items[0]["vms"], serde_json::json!(["a", "b"]));
        assert_eq!(count(&items, "s"), 4, "{items:?}");
        assert_eq!(count(&items, "x"), 1);
        assert_eq!(count(&items, "m"), 1);
        let transfers = full_trace()
            .iter()
            .filter(|record| matches!(record, Record::DiskIo { .. }))
            .count();
        assert_eq!(count(&items, "d"), transfers);
        assert_eq!(
            items.last().unwrap()[0],
            "S",
            "the status that opens the slider"
        );
        // Nothing is fetched: no external resource, and no secure URL.
        assert!(
            !html.contains(" src=") && !html.contains("<link"),
            "an external resource"
        );
        assert!(!html.contains("https://"), "a URL");
        assert_eq!(
            html.matches("http://").count(),
            html.matches("http://www.w3.org/2000/svg").count(),
            "a URL but the SVG namespace"
        );
        assert!(html.contains("The trace decoded without damage"));
    }

    /// A timed disk's requests reach the page's disk queue chart; a trace without them sends it
    /// none.
    #[test]
    fn served_requests_reach_the_disk_queue_chart() {
        assert_eq!(count(&items(&page(&full_trace(), &source())), "D"), 0);
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
        let items = items(&page(&records, &source()));
        assert_eq!(count(&items, "D"), 3);
        let waits: Vec<u64> = items
            .iter()
            .filter(|item| item[0] == "D")
            .map(|item| item[5].as_u64().unwrap())
            .collect();
        assert_eq!(waits, [50, 100, 0]);
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
        // The page's own script and its inline items are the only script elements, and the
        // names in the items come back as they were.
        assert_eq!(html.matches("<script").count(), 2);
        assert_eq!(items(&html)[0]["vms"][0], "<script>alert(1)</script>");
    }

    #[test]
    fn without_events_or_samples_the_page_still_has_its_charts() {
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
        assert!(html.contains("id=\"gantt\"") && html.contains("id=\"memory\""));
        let items = items(&html);
        assert_eq!(
            count(&items, "s") + count(&items, "m") + count(&items, "d"),
            0
        );
        let html = page(&[], &source());
        assert!(html.contains("no Hello record"));
        assert!(html.contains("No RunSummary"));
        assert_eq!(items_of(&html).len(), 2, "the setup and the status");
    }

    fn items_of(html: &str) -> Vec<serde_json::Value> {
        items(html)
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
        let html = super::page(&model.finish(), &[], &source);
        assert!(html.contains("trace damage: records 3..5 never arrived"));
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
        assert_eq!(count(&items(&html), "s"), 10_000);
        assert!(!html.contains("more than this page holds"));
        // Past its budget the page keeps the timeline's start and says where it stops.
        let model = Model::of_records(&records);
        let deltas = Feed::of_records(&records);
        let html = page_within(&model, &deltas, &source(), 100_000);
        assert!(
            html.len() < 100_000 + web::PAGE_SCRIPT.len() + 60_000,
            "{}",
            html.len()
        );
        let kept = count(&items(&html), "s");
        assert!(kept > 1_000 && kept < 5_000, "{kept} slices kept");
        assert!(
            html.contains("stop ") && html.contains("more than this page holds"),
            "no note of the cut"
        );
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
