//! The web page's wire form: each [`Delta`] of the feed as one short JSON array (its kind a
//! letter, then its fields in a fixed order), the console lines and control markers the tool
//! adds, and the page's legend (the report page's palette, so both pages colour alike).
//!
//! Arrays rather than objects keep a delta small (a slice is about 20 bytes); the page's script
//! reads them by position (`tools/trace/web/page.js`, `apply`). Strings in them are already
//! escaped for display ([`crate::escape`]); the page puts them in as text, never as markup.

use carousel_protocol::record::{BlockedOn, SliceEnd};
use serde_json::{json, Value};

use super::chart::{
    BLOCKED_COLOUR, BLOCKED_DISK_COLOUR, DISK_STATES, OTHER_EXITS_COLOUR, PAGE_STATES,
    REASON_COLOURS, SERIES,
};
use crate::model::feed::Delta;
use crate::model::timeline::RunState;

/// The page's markup, script and style (`tools/trace/web/`): the one set of chart components
/// that `carousel run --web` and `carousel view` serve and `carousel report --html` inlines.
pub const PAGE_HTML: &str = include_str!("../../web/index.html");
pub const PAGE_SCRIPT: &str = include_str!("../../web/page.js");
pub const PAGE_STYLE: &str = include_str!("../../web/page.css");

/// The part of [`PAGE_HTML`] between `<!-- part NAME -->` and `<!-- end NAME -->` (the charts,
/// the time slider) for a page that has its own frame; empty if there is no such part.
pub fn page_part(name: &str) -> &'static str {
    let open = format!("<!-- part {name} -->");
    let close = format!("<!-- end {name} -->");
    PAGE_HTML
        .split_once(open.as_str())
        .and_then(|(_, rest)| rest.split_once(close.as_str()))
        .map_or("", |(part, _)| part)
}

/// The items of a finished run's page, as one JSON array to inline in it
/// ([`finished_items`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Inlined {
    /// The array, safe inside a `<script>` element ([`inline_json`]).
    pub json: String,
    /// When the budget ran out: the time (since the origin) of the first slice or span left
    /// out, and how many were.
    pub cut: Option<(i64, usize)>,
    /// Other chart deltas (exits, memory maps, disk transfers and requests, wakes, checks,
    /// settings, drops) left out past their own budget: a flood of them (a disk-hammering
    /// guest over a long run) cannot grow the page without bound either.
    pub others_cut: usize,
}

/// What a delta is to the page's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The run's frame and its end-of-run figures, one or a few per VM: always kept.
    Frame,
    /// Slices and spans: kept in time order while the budget lasts.
    Timeline,
    /// Everything else: kept in order while a budget of their own lasts.
    Other,
}

fn kind(delta: &Delta) -> Kind {
    match delta {
        Delta::Slice { .. } | Delta::Span { .. } => Kind::Timeline,
        Delta::Hello { .. }
        | Delta::Origin { .. }
        | Delta::Start { .. }
        | Delta::ReasonName { .. }
        | Delta::Lost { .. }
        | Delta::TimerLag { .. }
        | Delta::Stopped { .. }
        | Delta::RunEnd { .. } => Kind::Frame,
        _ => Kind::Other,
    }
}

/// The items a finished run's page takes at once (`carousel report --html` inlines them): the
/// setup object for `mode` and the VMs `names` (escaped), the deltas, and a status `text`
/// (escaped) that says the run is over, which opens the time slider. At most about `budget`
/// bytes: the run's frame is kept; other chart deltas are kept in order while `budget` bytes
/// of them last ([`Inlined::others_cut`] counts the rest); slices and spans are kept in time
/// order while the budget lasts with all that (the rest are counted in [`Inlined::cut`]).
pub fn finished_items(
    deltas: &[Delta],
    names: &[String],
    mode: &str,
    text: &str,
    budget: usize,
) -> Inlined {
    let setup = json!({ "mode": mode, "vms": names, "legend": legend() }).to_string();
    let status = status(text, true).to_string();
    let mut others = 0usize;
    let mut others_cut = 0;
    // Each delta's text, and whether it goes in (a timeline item: decided below).
    let items: Vec<(Kind, String, bool)> = deltas
        .iter()
        .map(|d| {
            let text = delta(d).to_string();
            let kind = kind(d);
            let keep = match kind {
                Kind::Frame | Kind::Timeline => true,
                Kind::Other if others_cut == 0 && others + text.len() < budget => {
                    others += text.len() + 1;
                    true
                }
                Kind::Other => {
                    others_cut += 1;
                    false
                }
            };
            (kind, text, keep)
        })
        .collect();
    let mut used = setup.len()
        + status.len()
        + items
            .iter()
            .filter(|(kind, _, keep)| *kind != Kind::Timeline && *keep)
            .map(|(_, item, _)| item.len() + 1)
            .sum::<usize>();
    let mut cut = None;
    let mut json = String::with_capacity(used.min(budget) + 2);
    json.push('[');
    json.push_str(&setup);
    for (index, (kind, item, keep)) in items.iter().enumerate() {
        if !keep {
            continue;
        }
        if *kind == Kind::Timeline {
            if cut.is_some() || used + item.len() + 1 > budget {
                let (_, left) = cut.get_or_insert((timeline_start(&deltas[index]), 0));
                *left += 1;
                continue;
            }
            used += item.len() + 1;
        }
        json.push(',');
        json.push_str(item);
    }
    json.push(',');
    json.push_str(&status);
    json.push(']');
    Inlined {
        json: inline_json(&json),
        cut,
        others_cut,
    }
}

/// Where a slice or span starts (0 for any other delta).
fn timeline_start(delta: &Delta) -> i64 {
    match *delta {
        Delta::Slice { start, .. } | Delta::Span { start, .. } => start,
        _ => 0,
    }
}

/// JSON `text` made safe inside an HTML `<script>` element: `<`, `>` and `&` are written as
/// `\u` escapes (JSON reads them back the same; outside a string JSON has none of them), so no
/// string in it can close the element or open a comment.
pub fn inline_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            // JSON allows these raw; older script parsers took them for line ends.
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// How a slice ended, as the page numbers it: preempted, yielded, blocked, stopped; -1 cut.
fn why_number(why: Option<SliceEnd>) -> i8 {
    match why {
        Some(SliceEnd::Preempted) => 0,
        Some(SliceEnd::Yielded) => 1,
        Some(SliceEnd::Blocked(_)) => 2,
        Some(SliceEnd::Stopped) => 3,
        None => -1,
    }
}

/// What a blocked VM waited for, as the page numbers it (the order of [`BlockedOn::ALL`]:
/// 0 is the disk); null when not known.
fn on_number(on: Option<BlockedOn>) -> Option<usize> {
    on.and_then(|on| BlockedOn::ALL.iter().position(|&reason| reason == on))
}

/// A runstate as the page numbers it (the order of [`RunState::ALL`]).
fn state_number(state: RunState) -> usize {
    RunState::ALL
        .iter()
        .position(|&candidate| candidate == state)
        .unwrap_or(0)
}

/// One delta as the page reads it.
pub fn delta(delta: &Delta) -> Value {
    match delta {
        Delta::Hello {
            vms,
            tsc_hz,
            weights,
        } => json!(["h", vms, tsc_hz, weights]),
        Delta::Origin { tsc } => json!(["O", tsc]),
        Delta::Start { tsc } => json!(["b", tsc]),
        Delta::Slice {
            vm,
            start,
            end,
            why,
        } => json!(["s", vm, start, end, why_number(*why)]),
        Delta::Span {
            vm,
            state,
            start,
            end,
            on,
        } => json!(["r", vm, state_number(*state), start, end, on_number(*on)]),
        Delta::ReasonName { reason, name } => json!(["n", reason, name]),
        Delta::Exits {
            vm,
            tsc,
            interval,
            exits,
        } => json!(["x", vm, tsc, interval, exits]),
        Delta::Memory {
            vm,
            tsc,
            pages_per_cell,
            cells,
            changed,
        } => json!(["m", vm, tsc, pages_per_cell, cells, changed]),
        Delta::Disk {
            vm,
            tsc,
            lba,
            sectors,
            write,
        } => json!(["d", vm, tsc, lba, sectors, u8::from(*write)]),
        Delta::DiskServed {
            vm,
            tsc,
            sectors,
            write,
            wait,
            service,
        } => json!(["D", vm, tsc, sectors, u8::from(*write), wait, service]),
        Delta::Wake { vm, tsc, latency } => json!(["w", vm, tsc, latency]),
        Delta::Dropped { tsc, total } => json!(["l", tsc, total]),
        Delta::Lost { records } => json!(["g", records]),
        Delta::TimerLag {
            vm,
            ticks,
            coalesced,
            lag_total,
            lag_max,
        } => json!(["t", vm, ticks, coalesced, lag_total, lag_max]),
        Delta::Stopped { vm, tsc, reason } => json!(["q", vm, tsc, reason]),
        Delta::Check {
            vm,
            tsc,
            name,
            passed,
        } => json!(["c", vm, tsc, name, u8::from(*passed)]),
        Delta::Setting { tsc, text } => marker(Some(*tsc), text),
        Delta::RunEnd { tsc } => json!(["e", tsc]),
    }
}

/// A console line of VM `vm` (already escaped), written at `tsc` (since the origin) when known.
pub fn console(vm: usize, text: &str, tsc: Option<i64>) -> Value {
    json!(["o", vm, text, tsc])
}

/// The server skipped `lines` of VM `vm`'s console lines (the page fell behind its backlog).
pub fn skipped_console(vm: usize, lines: u64) -> Value {
    json!(["k", vm, lines])
}

/// The server skipped `deltas` chart deltas the page had not yet taken.
pub fn skipped_deltas(deltas: u64) -> Value {
    json!(["K", deltas])
}

/// A control the user gave (`text`, escaped), at `tsc` since the origin (the latest time the
/// records had reached), for the timelines' markers.
pub fn marker(tsc: Option<i64>, text: &str) -> Value {
    json!(["M", tsc, text])
}

/// A batch of deltas left the tool at `millis` (wall clock, ms since the Unix epoch).
pub fn published(millis: u64) -> Value {
    json!(["T", millis])
}

/// The run's state as the tool sees it: `live` while it runs, then how it ended.
pub fn status(text: &str, done: bool) -> Value {
    json!(["S", text, done])
}

/// The page's colours and names, the report page's: VM series, runstates, exit reasons, memory
/// cell and disk block states.
pub fn legend() -> Value {
    json!({
        "series": SERIES,
        "runstates": RunState::ALL.iter().map(|state| state.name()).collect::<Vec<_>>(),
        "blocked": BLOCKED_COLOUR,
        "blocked_disk": BLOCKED_DISK_COLOUR,
        "reasons": REASON_COLOURS,
        "other_exits": OTHER_EXITS_COLOUR,
        "pages": PAGE_STATES,
        "disk": DISK_STATES,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_short_arrays() {
        let slice = delta(&Delta::Slice {
            vm: 3,
            start: 1_000,
            end: 51_000,
            why: Some(SliceEnd::Preempted),
        });
        assert_eq!(slice.to_string(), r#"["s",3,1000,51000,0]"#);
        let on_disk = delta(&Delta::Span {
            vm: 1,
            state: RunState::Blocked,
            start: 5,
            end: 9,
            on: Some(BlockedOn::Disk),
        });
        assert_eq!(
            on_disk.to_string(),
            r#"["r",1,2,5,9,0]"#,
            "blocked, on the disk"
        );
        let memory = delta(&Delta::Memory {
            vm: 0,
            tsc: -5,
            pages_per_cell: 4,
            cells: 1024,
            changed: vec![(7, 2)],
        });
        assert_eq!(memory.to_string(), r#"["m",0,-5,4,1024,[[7,2]]]"#);
        assert_eq!(
            console(1, "<b>", None).to_string(),
            r#"["o",1,"<b>",null]"#,
            "markup stays a string the page shows as text"
        );
        assert_eq!(legend()["pages"][2][0], "dirty");
    }

    #[test]
    fn the_shared_parts_are_in_the_page() {
        for (name, id) in [("charts", "id=\"charts\""), ("scrub", "id=\"slider\"")] {
            assert!(page_part(name).contains(id), "no {name} part");
        }
        assert!(page_part("charts").contains("id=\"disk-queue\""));
        assert!(!page_part("charts").contains("id=\"consoles\""));
        assert_eq!(page_part("nothing"), "");
    }

    #[test]
    fn inlined_json_cannot_end_its_script() {
        let hostile = json!([
            "</script><script>alert(1)</script>",
            "<!--",
            "a&b",
            "\u{2028}"
        ]);
        let text = inline_json(&hostile.to_string());
        assert!(
            !text.contains('<') && !text.contains('>') && !text.contains('&'),
            "{text}"
        );
        assert!(!text.contains('\u{2028}'));
        let back: Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(back, hostile);
    }

    /// Four slices and a span of one VM, and an exit interval after them.
    fn run_deltas() -> Vec<Delta> {
        let mut deltas: Vec<Delta> = (0..4)
            .map(|k| Delta::Slice {
                vm: 0,
                start: k * 100,
                end: k * 100 + 90,
                why: Some(SliceEnd::Preempted),
            })
            .collect();
        deltas.push(Delta::Span {
            vm: 0,
            state: RunState::Runnable,
            start: 390,
            end: 400,
            on: None,
        });
        deltas.push(Delta::Exits {
            vm: 0,
            tsc: 400,
            interval: 400,
            exits: vec![(1, 2, 3)],
        });
        deltas
    }

    #[test]
    fn finished_items_keep_the_timeline_while_the_budget_lasts() {
        let names = ["a".to_string()];
        let all = finished_items(&run_deltas(), &names, "report", "done", usize::MAX);
        assert_eq!(all.cut, None);
        let items: Vec<Value> = serde_json::from_str(&all.json).unwrap();
        assert_eq!(items.len(), 8, "setup, six deltas, status");
        assert_eq!(items[0]["mode"], "report");
        assert_eq!(items[7], json!(["S", "done", true]));
        // Room for two slices beyond the rest: the later ones and the span are counted out,
        // and the exit interval after them stays.
        let slice = delta(&run_deltas()[0]).to_string().len() + 1;
        let rest = all.json.len() - 4 * slice - delta(&run_deltas()[4]).to_string().len() - 1;
        let cut = finished_items(&run_deltas(), &names, "report", "done", rest + 2 * slice);
        assert_eq!(cut.cut, Some((200, 3)));
        let items: Vec<Value> = serde_json::from_str(&cut.json).unwrap();
        let kinds: Vec<&str> = items[1..].iter().map(|i| i[0].as_str().unwrap()).collect();
        assert_eq!(kinds, ["s", "s", "x", "S"]);
    }

    /// A flood of disk transfers (a guest hammering its disk for a long run) stops at the
    /// budget too, while the run's frame (its end, the timer figures) stays.
    #[test]
    fn a_flood_of_other_deltas_stops_at_the_budget() {
        let mut deltas: Vec<Delta> = (0..10_000)
            .map(|k| Delta::Disk {
                vm: 0,
                tsc: k,
                lba: 0,
                sectors: 1,
                write: true,
            })
            .collect();
        deltas.push(Delta::TimerLag {
            vm: 0,
            ticks: 1,
            coalesced: 0,
            lag_total: 5,
            lag_max: 5,
        });
        deltas.push(Delta::RunEnd { tsc: 10_000 });
        let inlined = finished_items(&deltas, &["a".to_string()], "report", "done", 20_000);
        assert!(inlined.json.len() < 25_000, "{} bytes", inlined.json.len());
        assert!(inlined.others_cut > 8_000, "{} cut", inlined.others_cut);
        let items: Vec<Value> = serde_json::from_str(&inlined.json).unwrap();
        let kinds: Vec<&str> = items[1..].iter().map(|i| i[0].as_str().unwrap()).collect();
        assert_eq!(kinds[kinds.len() - 3..], ["t", "e", "S"]);
        assert_eq!(kinds.len() - 3 + inlined.others_cut, 10_000);
    }
}
