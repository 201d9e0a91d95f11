//! The web page's wire form: each [`Delta`] of the feed as one short JSON array (its kind a
//! letter, then its fields in a fixed order), the console lines and control markers the tool
//! adds, and the page's legend (the report page's palette, so both pages colour alike).
//!
//! Arrays rather than objects keep a delta small (a slice is about 20 bytes); the page's script
//! reads them by position (`tools/carousel/web/page.js`, `apply`). Strings in them are already
//! escaped for display ([`crate::escape`]); the page puts them in as text, never as markup.

use carousel_protocol::record::SliceEnd;
use serde_json::{json, Value};

use super::chart::SERIES;
use super::html::{BLOCKED_COLOUR, DISK_STATES, OTHER_EXITS_COLOUR, PAGE_STATES, REASON_COLOURS};
use crate::model::feed::Delta;
use crate::model::timeline::RunState;

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
        } => json!(["r", vm, state_number(*state), start, end]),
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
}
