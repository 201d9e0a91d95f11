//! `carousel view TRACE [--web ADDR]`: the live page over a finished trace, with a time slider
//! that scrubs every chart and the consoles to any moment.
//!
//! The trace is decoded once, folded into the same feed a live run sends ([`Feed`]), and the
//! consoles come from the run's COM1 text (`com1.txt` beside the trace, as in a run directory,
//! or `--com1 FILE`), each line timed by its console event ([`timed_lines`]). The page gets it
//! all at once and draws the moment the slider names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use carousel_trace::decode::read_trace;
use carousel_trace::escape;
use carousel_trace::model::console::{split_vm_line, timed_lines, ConsoleLog};
use carousel_trace::model::feed::{Delta, Feed};
use carousel_trace::model::{Keep, ModelBuilder};

use crate::web::hub::{Hub, Limits, Mode};
use crate::web::Server;

/// What `view` was given.
#[derive(Debug, Clone)]
pub struct ViewOptions {
    pub trace: PathBuf,
    /// The run's COM1 text; default `com1.txt` beside the trace.
    pub com1: Option<PathBuf>,
    pub addr: std::net::SocketAddr,
}

/// The hub of a finished trace: its feed, its console lines (timed where the console events
/// allow) and a status line. The second value is the hub's status text.
pub fn load(trace: &Path, com1: Option<&Path>) -> Result<(Arc<Hub>, String), String> {
    let bytes = std::fs::read(trace)
        .map_err(|error| format!("cannot read {}: {error}", trace.display()))?;
    let (records, damage) = read_trace(&bytes);
    if records.is_empty() {
        return Err(format!("{} holds no record", trace.display()));
    }
    let mut model = ModelBuilder::new(Keep::Totals);
    for record in &records {
        model.add(record);
    }
    let model = model.finish();
    let names = model.vm_names(0);
    let deltas = Feed::of_trace(&records, &damage);
    let origin = deltas
        .iter()
        .find_map(|delta| match delta {
            Delta::Origin { tsc } => Some(*tsc),
            _ => None,
        })
        .unwrap_or(0);
    let (hub, _controls) = Hub::new(Mode::View, &names, Limits::VIEW);
    hub.publish(&deltas);
    let com1 = com1.map_or_else(
        || trace.parent().unwrap_or(Path::new(".")).join("com1.txt"),
        Path::to_path_buf,
    );
    let raw_names: Vec<String> = records
        .iter()
        .find_map(|record| match record {
            carousel_protocol::record::Record::Hello { vms, .. } => Some(vms.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let lines = match std::fs::read(&com1) {
        Ok(text) => {
            let text = String::from_utf8_lossy(&text);
            console_lines(&hub, &text, &raw_names, &model.console, origin)
        }
        Err(_) => {
            hub.console(
                None,
                &escape::console_line(&format!(
                    "[carousel] no COM1 text at {} (give --com1 FILE): the consoles are empty",
                    com1.display()
                )),
                None,
            );
            0
        }
    };
    let status = format!(
        "trace {}: {} records, {} console lines{}",
        escape::name(&trace.display().to_string()),
        records.len(),
        lines,
        if damage.is_empty() {
            String::new()
        } else {
            format!(", {} damaged parts", damage.len())
        }
    );
    hub.status(&status, true);
    Ok((hub, status))
}

/// Puts the console lines of a run's COM1 `text` into `hub`, each VM line at the time of its
/// console event (since `origin`); lines that cannot be timed go untimed (the page shows them
/// whatever the cursor), the hypervisor's own lines too. Returns how many VM lines there were.
fn console_lines(hub: &Hub, text: &str, names: &[String], log: &ConsoleLog, origin: u64) -> usize {
    match timed_lines(text, names, log) {
        Ok(per_vm) => {
            for (vm, lines) in per_vm.iter().enumerate() {
                for line in lines {
                    let at = line.tsc as i64 - origin as i64;
                    hub.console(Some(vm), &escape::console_line(&line.text), Some(at));
                }
            }
            for line in text.lines() {
                if split_vm_line(names, line).is_none() {
                    hub.console(None, &escape::console_line(line), None);
                }
            }
            per_vm.iter().map(Vec::len).sum()
        }
        Err(why) => {
            hub.console(
                None,
                &escape::console_line(&format!("[carousel] console lines untimed: {why}")),
                None,
            );
            let mut count = 0;
            for line in text.lines() {
                match split_vm_line(names, line) {
                    Some((vm, text)) => {
                        count += 1;
                        hub.console(Some(vm), &escape::console_line(text), None)
                    }
                    None => hub.console(None, &escape::console_line(line), None),
                }
            }
            count
        }
    }
}

/// `carousel view`: serves the page until Ctrl-C; the exit code.
pub fn view_command(options: &ViewOptions, interrupted: &AtomicBool) -> i32 {
    let (hub, status) = match load(&options.trace, options.com1.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("carousel view: {error}");
            return 2;
        }
    };
    let server = match Server::start(options.addr, hub) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("carousel view: cannot serve on {}: {error}", options.addr);
            return 5;
        }
    };
    if let Some(warning) = crate::web::exposure_warning(server.addr()) {
        eprintln!("{warning}");
    }
    println!("{status}");
    println!("[carousel] web page: {}", server.url());
    println!("[carousel] Ctrl-C stops the server");
    while !interrupted.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    0
}
