//! `carousel bench web`: what the live page sustains. The synthetic trace of `bench decode`
//! (16 busy VMs, a default run at the `switches` level; [`super::decode::synthetic_trace`]) is
//! fed through the same feed and hub a run uses, to one headless Chromium showing the page, in
//! batches of [`BATCH_RECORDS`] records with a console line for every `Console` event; each
//! batch waits until the page's socket took the one before. The clock stops when the page has
//! drawn every slice. It prints the records per second and the bytes sent per record, beside
//! their goals ([`GOAL_RATE_FACTOR`], [`GOAL_BYTES_PER_RECORD`]), and the page's largest lag.

use std::time::{Duration, Instant};

use carousel_protocol::record::{Event, Record};
use carousel_trace::decode::read_trace;
use carousel_trace::model::feed::{Delta, Feed};
use carousel_trace::render::json;
use serde::Serialize;

use super::decode::synthetic_trace;
use crate::web::browser::Browser;
use crate::web::hub::{Hub, Limits, Mode};
use crate::web::{Server, DEFAULT_ADDR};

/// Bytes of the synthetic trace.
const TRACE_BYTES: usize = 4 << 20;
/// Records in one batch (a run's session publishes what 50 ms brought; a hardware run of 16
/// VMs brings about that many in 50 ms).
pub const BATCH_RECORDS: usize = 200;
/// Goal for records a second: this many times the rate of the run the trace follows (a
/// default 16-VM run on hardware), so that the page keeps up and catches up a stall of a
/// second within a second.
pub const GOAL_RATE_FACTOR: f64 = 2.0;
/// Goal for bytes sent per record: the page's wire may cost what the COM2 stream costs,
/// twice over (JSON text against binary frames), and no more.
pub const GOAL_BYTES_PER_RECORD: f64 = 2.0;
/// How long the page may take to draw the last batch.
const DRAW_LIMIT: Duration = Duration::from_secs(120);

/// What `bench web --json` prints.
#[derive(Debug, Serialize)]
struct WebBench {
    records: usize,
    console_lines: usize,
    run_seconds: f64,
    run_records_per_s: f64,
    seconds: f64,
    records_per_s: f64,
    goal_records_per_s: f64,
    bytes_sent: u64,
    bytes_per_record: f64,
    trace_bytes_per_record: f64,
    goal_bytes_per_record: f64,
    page_lag_max_ms: u64,
    skipped: u64,
}

/// A number the page's script gives (0 when it gives none).
fn number(browser: &mut Browser, expression: &str) -> u64 {
    browser
        .eval(expression)
        .ok()
        .and_then(|value| value.as_u64())
        .unwrap_or(0)
}

/// `carousel bench web [--json]`; the exit code (0 measured, 1 the page fell short, 5 no
/// browser or no server).
pub fn web_command(json_output: bool) -> i32 {
    let (bytes, _) = synthetic_trace(TRACE_BYTES);
    let (records, _) = read_trace(&bytes);
    let names: Vec<String> = records
        .iter()
        .find_map(|record| match record {
            Record::Hello { vms, .. } => Some(vms.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let tsc_hz = records
        .iter()
        .find_map(|record| match record {
            Record::Hello { tsc_hz, .. } => Some(*tsc_hz),
            _ => None,
        })
        .unwrap_or(1);
    let (hub, _controls) = Hub::new(Mode::Live, &names, Limits::LIVE);
    let server = match Server::start(DEFAULT_ADDR, hub.clone()) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("carousel bench web: cannot serve: {error}");
            return 5;
        }
    };
    let mut browser = match Browser::open(&server.url(), (1400, 1000)) {
        Ok(browser) => browser,
        Err(error) => {
            eprintln!("carousel bench web: {error}");
            return 5;
        }
    };
    let panes = format!(
        "document.querySelectorAll('#consoles .pane').length === {}",
        names.len() + 1
    );
    if let Err(error) = browser.wait_for(&panes, Duration::from_secs(30)) {
        eprintln!("carousel bench web: the page did not set up: {error}");
        return 5;
    }
    eprintln!(
        "bench: {} records of a synthetic {}-VM run to one headless Chromium…",
        records.len(),
        names.len()
    );
    let mut feed = Feed::new();
    let (mut slices, mut lines, mut last_tsc) = (0u64, 0usize, 0i64);
    let start = Instant::now();
    for batch in records.chunks(BATCH_RECORDS) {
        for record in batch {
            feed.add(record);
            if let Record::Events { events, .. } = record {
                for event in events {
                    if let Event::Console { vm, .. } = *event {
                        lines += 1;
                        let text = format!("{}: line {lines} of the benchmark's consoles", vm);
                        hub.console(Some(usize::from(vm)), &text, None);
                    }
                }
            }
        }
        let deltas = feed.take();
        for delta in &deltas {
            match *delta {
                Delta::Slice { end, .. } => {
                    slices += 1;
                    last_tsc = last_tsc.max(end);
                }
                Delta::RunEnd { tsc } => last_tsc = last_tsc.max(tsc),
                _ => {}
            }
        }
        hub.publish(&deltas);
        let until = Instant::now() + DRAW_LIMIT;
        while !server.pages_caught_up() && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let drawn = format!("Number(document.getElementById('share').dataset.records) >= {slices}");
    let complete = browser.wait_for(&drawn, DRAW_LIMIT).is_ok();
    let seconds = start.elapsed().as_secs_f64();
    let lag = number(
        &mut browser,
        "Number(document.getElementById('lag').dataset.maxMs)",
    );
    let skipped = number(
        &mut browser,
        "Number((document.querySelector('#dropped .figure').textContent.match(/(\\d+) deltas skipped/) || [0, 0])[1])",
    );
    let errors = browser.errors.len()
        + number(
            &mut browser,
            "Number(document.getElementById('page-errors').dataset.count)",
        ) as usize;
    let run_seconds = last_tsc.max(1) as f64 / tsc_hz as f64;
    let result = WebBench {
        records: records.len(),
        console_lines: lines,
        run_seconds,
        run_records_per_s: records.len() as f64 / run_seconds,
        seconds,
        records_per_s: records.len() as f64 / seconds,
        goal_records_per_s: GOAL_RATE_FACTOR * records.len() as f64 / run_seconds,
        bytes_sent: server.bytes_sent(),
        bytes_per_record: server.bytes_sent() as f64 / records.len() as f64,
        trace_bytes_per_record: bytes.len() as f64 / records.len() as f64,
        goal_bytes_per_record: GOAL_BYTES_PER_RECORD * bytes.len() as f64 / records.len() as f64,
        page_lag_max_ms: lag,
        skipped,
    };
    if json_output {
        println!("{}", json::value(&result));
    } else {
        println!(
            "{} records ({:.1} s of a 16-VM run, {:.0} records/s; {} console lines) to one page in {:.2} s",
            result.records, result.run_seconds, result.run_records_per_s, lines, seconds
        );
        println!(
            "records/s sustained: {:.0} (goal ≥ {:.0}, {GOAL_RATE_FACTOR}× the run's rate)",
            result.records_per_s, result.goal_records_per_s
        );
        println!(
            "bytes sent per record: {:.1} (goal ≤ {:.1}, {GOAL_BYTES_PER_RECORD}× the trace's {:.1})",
            result.bytes_per_record, result.goal_bytes_per_record, result.trace_bytes_per_record
        );
        println!("page lag behind the feed: max {lag} ms; deltas skipped: {skipped}");
    }
    if !complete || errors > 0 {
        eprintln!(
            "carousel bench web: the page did not draw every slice ({complete}) or had {errors} errors: {:?}",
            browser.errors
        );
        return 1;
    }
    0
}
