//! What the web server holds for its pages: the run's deltas and console lines as the session
//! publishes them, each page's place in them, and the controls the pages send back.
//!
//! Memory is bounded: chart deltas are kept up to [`Limits::chart_bytes`], each VM's console to
//! [`Limits::console_lines`] lines; older ones go. A page that falls further behind than that
//! (a slow browser, a tab that slept) is told how much it missed (`["K", n]` for deltas,
//! `["k", vm, n]` for a console) and carries on from the oldest item still kept. What a page
//! needs from the start whatever it missed (the Hello delta, the origin, exit reason names,
//! control markers) is kept apart and sent to every page first.
//!
//! What is not here: HTTP, sockets or the session; the session publishes through
//! [`Hub::publish`], [`Hub::console`] and [`Hub::marker`], the server reads with [`Hub::take`].

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use carousel_protocol::config::Setting;
use carousel_trace::model::feed::Delta;
use carousel_trace::render::web;
use serde_json::Value;
use tokio::sync::watch;

/// What a page asks the run to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Type `text` into VM `vm`'s console (the same in-band routing as `~N`).
    Input { vm: usize, text: String },
    /// End the run (as one Ctrl-C: the hypervisor is asked to end it in order).
    EndRun,
    /// Change an in-run knob: the session checks it as it checks `~quantum`, `~weight` and
    /// `~cap`, and sends it in band the same way.
    Setting(Setting),
}

/// Whether the pages watch a run or a finished trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `carousel run --web`: deltas arrive as the run goes; the page can type and end the run.
    Live,
    /// `carousel view`: everything is there from the start; the page scrubs through it.
    View,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::View => "view",
        }
    }
}

/// How much the hub keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of chart deltas (as JSON text).
    pub chart_bytes: usize,
    /// Console lines per VM.
    pub console_lines: usize,
    /// Most bytes of items in one message to a page.
    pub message_bytes: usize,
}

impl Limits {
    /// A live run's: a few minutes of a busy 16-VM run's deltas, and more scrollback per pane
    /// than a page shows.
    pub const LIVE: Limits = Limits {
        chart_bytes: 16 << 20,
        console_lines: 2_000,
        message_bytes: 512 << 10,
    };
    /// A finished trace's: all of it, up to a limit that keeps the tool's memory in hand.
    pub const VIEW: Limits = Limits {
        chart_bytes: 256 << 20,
        console_lines: 200_000,
        message_bytes: 1 << 20,
    };
}

/// A queue of JSON items that forgets its oldest beyond a limit; items are numbered from 0 in
/// the order they came.
#[derive(Debug)]
struct Bounded {
    items: VecDeque<Arc<str>>,
    /// The number of the oldest item kept.
    first: u64,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl Bounded {
    fn new(max_items: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            first: 0,
            bytes: 0,
            max_items,
            max_bytes,
        }
    }

    fn push(&mut self, item: Arc<str>) {
        self.bytes += item.len();
        self.items.push_back(item);
        while self.items.len() > self.max_items || self.bytes > self.max_bytes {
            let Some(old) = self.items.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.first += 1;
        }
    }

    /// The number the next item will get.
    fn end(&self) -> u64 {
        self.first + self.items.len() as u64
    }

    /// How many items from number `next` on are no longer kept.
    fn skipped(&self, next: u64) -> u64 {
        self.first.saturating_sub(next)
    }

    /// Items from number `*next` on (or the oldest kept), while `budget` lasts; `*next` moves
    /// past them.
    fn take(&self, next: &mut u64, out: &mut Vec<Arc<str>>, budget: &mut usize) {
        *next = (*next).max(self.first);
        while *next < self.end() && *budget > 0 {
            let item = &self.items[(*next - self.first) as usize];
            *budget = budget.saturating_sub(item.len() + 1);
            out.push(item.clone());
            *next += 1;
        }
    }
}

/// Where one page stands.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    started: bool,
    sticky: u64,
    charts: u64,
    consoles: Vec<u64>,
    status: u64,
}

/// Most items the sticky list keeps (markers beyond it are dropped; pages rate-limit controls).
const STICKY_MAX: usize = 10_000;

#[derive(Debug)]
struct State {
    sticky: Bounded,
    charts: Bounded,
    /// One per VM, then the hypervisor's own lines.
    consoles: Vec<Bounded>,
    status: Option<Arc<str>>,
    status_version: u64,
    /// The latest time the deltas reached (for markers).
    latest: Option<i64>,
    /// What every page learns first.
    start: Arc<str>,
}

/// The shared state of the server and the session.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    limits: Limits,
    version: watch::Sender<u64>,
    controls: mpsc::Sender<Control>,
}

/// Milliseconds since the Unix epoch (the page compares them with its own clock, on the same
/// machine or one kept in time).
fn wall_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The time a delta is about, if it has one.
fn delta_time(delta: &Delta) -> Option<i64> {
    match *delta {
        Delta::Slice { end, .. } | Delta::Span { end, .. } => Some(end),
        Delta::Exits { tsc, .. }
        | Delta::Memory { tsc, .. }
        | Delta::Disk { tsc, .. }
        | Delta::Wake { tsc, .. }
        | Delta::Dropped { tsc, .. }
        | Delta::Stopped { tsc, .. }
        | Delta::Check { tsc, .. }
        | Delta::Setting { tsc, .. }
        | Delta::RunEnd { tsc } => Some(tsc),
        _ => None,
    }
}

impl Hub {
    /// A hub for a run (or trace) of the VMs `names` (escaped); the receiver gets what the pages
    /// ask for.
    pub fn new(
        mode: Mode,
        names: &[String],
        limits: Limits,
    ) -> (Arc<Hub>, mpsc::Receiver<Control>) {
        let (controls, receiver) = mpsc::channel();
        let start = serde_json::json!({
            "mode": mode.name(),
            "vms": names,
            "legend": web::legend(),
        });
        let state = State {
            sticky: Bounded::new(STICKY_MAX, usize::MAX),
            charts: Bounded::new(usize::MAX, limits.chart_bytes),
            consoles: (0..=names.len())
                .map(|_| Bounded::new(limits.console_lines, usize::MAX))
                .collect(),
            status: None,
            status_version: 0,
            latest: None,
            start: start.to_string().into(),
        };
        let hub = Hub {
            state: Mutex::new(state),
            limits,
            version: watch::channel(0).0,
            controls,
        };
        (Arc::new(hub), receiver)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A page's task that panicked holding the lock left consistent state: every change
        // is a push.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn changed(&self) {
        self.version.send_modify(|version| *version += 1);
    }

    /// Adds the feed's new deltas.
    pub fn publish(&self, deltas: &[Delta]) {
        if deltas.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            for delta in deltas {
                let text: Arc<str> = web::delta(delta).to_string().into();
                if let Some(tsc) = delta_time(delta) {
                    state.latest = Some(state.latest.map_or(tsc, |latest| latest.max(tsc)));
                }
                match delta {
                    Delta::Hello { .. }
                    | Delta::Origin { .. }
                    | Delta::Start { .. }
                    | Delta::ReasonName { .. } => state.sticky.push(text),
                    _ => state.charts.push(text),
                }
            }
            // When this batch left the tool: the page measures its lag behind the run by it.
            let stamp = web::published(wall_millis());
            state.charts.push(stamp.to_string().into());
        }
        self.changed();
    }

    /// Adds a console line of VM `vm` (`None`: the hypervisor's own line), escaped, written at
    /// `tsc` since the origin when known.
    pub fn console(&self, vm: Option<usize>, text: &str, tsc: Option<i64>) {
        {
            let mut state = self.lock();
            let hypervisor = state.consoles.len() - 1;
            let index = vm.filter(|&vm| vm < hypervisor).unwrap_or(hypervisor);
            let item = match vm {
                Some(vm) if vm < hypervisor => web::console(vm, text, tsc),
                _ => serde_json::json!(["o", Value::Null, text, tsc]),
            };
            state.consoles[index].push(item.to_string().into());
        }
        self.changed();
    }

    /// Adds a marker for a control the user gave, at the latest time the run reached.
    pub fn marker(&self, text: &str) {
        self.marker_at(None, text);
    }

    /// Adds a marker at `tsc` since the origin (the hypervisor's time of what it marks), or at
    /// the latest time the run reached when that is not known.
    pub fn marker_at(&self, tsc: Option<i64>, text: &str) {
        {
            let mut state = self.lock();
            let item = web::marker(tsc.or(state.latest), text).to_string().into();
            state.sticky.push(item);
        }
        self.changed();
    }

    /// Says how the run stands (`done`: it is over).
    pub fn status(&self, text: &str, done: bool) {
        {
            let mut state = self.lock();
            state.status = Some(web::status(text, done).to_string().into());
            state.status_version += 1;
        }
        self.changed();
    }

    /// A page asks for `control`. False once the session no longer listens.
    pub fn control(&self, control: Control) -> bool {
        self.controls.send(control).is_ok()
    }

    /// A watch that changes whenever something is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The next message for the page at `cursor`: a JSON array of items (the first message
    /// starts with the page's setup object), or `None` when it has everything.
    pub fn take(&self, cursor: &mut Cursor) -> Option<String> {
        let state = self.lock();
        let mut items: Vec<Arc<str>> = Vec::new();
        let mut budget = self.limits.message_bytes;
        if !cursor.started {
            cursor.started = true;
            cursor.consoles = vec![0; state.consoles.len()];
            items.push(state.start.clone());
        }
        state
            .sticky
            .take(&mut cursor.sticky, &mut items, &mut budget);
        // A notice of what was skipped comes before the items kept after it.
        let skipped = state.charts.skipped(cursor.charts);
        if skipped > 0 {
            items.push(web::skipped_deltas(skipped).to_string().into());
        }
        state
            .charts
            .take(&mut cursor.charts, &mut items, &mut budget);
        for (vm, console) in state.consoles.iter().enumerate() {
            let skipped = console.skipped(cursor.consoles[vm]);
            if skipped > 0 {
                items.push(web::skipped_console(vm, skipped).to_string().into());
            }
            console.take(&mut cursor.consoles[vm], &mut items, &mut budget);
        }
        // The status last, once the page has all the rest: "done" means it has everything.
        let rest_taken = cursor.sticky >= state.sticky.end()
            && cursor.charts >= state.charts.end()
            && state
                .consoles
                .iter()
                .zip(&cursor.consoles)
                .all(|(console, &next)| next >= console.end());
        if rest_taken && cursor.status != state.status_version {
            if let Some(status) = &state.status {
                items.push(status.clone());
            }
            cursor.status = state.status_version;
        }
        drop(state);
        if items.is_empty() {
            return None;
        }
        let mut message =
            String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
        message.push('[');
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                message.push(',');
            }
            message.push_str(item);
        }
        message.push(']');
        Some(message)
    }

    /// True when the page at `cursor` has everything published so far.
    pub fn caught_up(&self, cursor: &Cursor) -> bool {
        let state = self.lock();
        cursor.started
            && cursor.sticky >= state.sticky.end()
            && cursor.charts >= state.charts.end()
            && cursor.status == state.status_version
            && state
                .consoles
                .iter()
                .zip(&cursor.consoles)
                .all(|(console, &next)| next >= console.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".to_string(), "b".to_string()]
    }

    fn items(message: &str) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(message).expect("a JSON array")
    }

    #[test]
    fn a_page_gets_its_setup_then_only_what_is_new() {
        let (hub, _controls) = Hub::new(Mode::Live, &names(), Limits::LIVE);
        let mut cursor = Cursor::default();
        hub.publish(&[Delta::Origin { tsc: 5 }, Delta::RunEnd { tsc: 9 }]);
        hub.console(Some(1), "hello", None);
        hub.console(None, "[carousel] hypervisor line", None);
        let first = items(&hub.take(&mut cursor).expect("a message"));
        assert_eq!(first[0]["mode"], "live");
        assert_eq!(first[0]["vms"][1], "b");
        assert_eq!(first[1], serde_json::json!(["O", 5]));
        assert_eq!(first[2], serde_json::json!(["e", 9]));
        assert_eq!(first[3][0], "T", "the batch's stamp");
        assert_eq!(first[4], serde_json::json!(["o", 1, "hello", null]));
        assert_eq!(first[5][1], Value::Null);
        assert!(hub.caught_up(&cursor));
        assert_eq!(hub.take(&mut cursor), None);
        hub.marker("end of the run asked for");
        hub.status("passed", true);
        let second = items(&hub.take(&mut cursor).expect("a message"));
        assert_eq!(
            second,
            [
                serde_json::json!(["M", 9, "end of the run asked for"]),
                serde_json::json!(["S", "passed", true])
            ]
        );
    }

    #[test]
    fn a_page_that_falls_behind_is_told_what_it_missed() {
        let limits = Limits {
            chart_bytes: 100,
            console_lines: 3,
            message_bytes: 1 << 20,
        };
        let (hub, _controls) = Hub::new(Mode::Live, &names(), limits);
        let mut slow = Cursor::default();
        hub.publish(&[Delta::Hello {
            vms: names(),
            tsc_hz: 1,
            weights: Vec::new(),
        }]);
        for tsc in 0..50 {
            hub.publish(&[Delta::RunEnd { tsc }]);
            hub.console(Some(0), &format!("line {tsc}"), None);
        }
        let message = items(&hub.take(&mut slow).expect("a message"));
        // The Hello delta is kept whatever happens.
        assert!(message.iter().any(|item| item[0] == "h"));
        let charts: Vec<_> = message
            .iter()
            .filter(|item| item[0] == "e" || item[0] == "T")
            .collect();
        assert!(charts.len() < 100 && !charts.is_empty());
        assert_eq!(charts[charts.len() - 2][1], 49, "the newest is kept");
        let skipped = message.iter().find(|item| item[0] == "K").expect("told");
        // 50 deltas and 51 stamps (one for the Hello delta's batch).
        assert_eq!(skipped[1].as_u64().unwrap() as usize + charts.len(), 101);
        let lines: Vec<_> = message.iter().filter(|item| item[0] == "o").collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0][2], "line 47");
        assert!(message.contains(&serde_json::json!(["k", 0, 47])));
    }

    #[test]
    fn a_message_stops_at_its_budget_and_the_rest_follows() {
        let limits = Limits {
            message_bytes: 64,
            ..Limits::LIVE
        };
        let (hub, _controls) = Hub::new(Mode::View, &names(), limits);
        for tsc in 0..40 {
            hub.publish(&[Delta::RunEnd { tsc }]);
        }
        hub.status("done", true);
        let mut cursor = Cursor::default();
        let mut seen = 0;
        let mut messages = 0;
        while let Some(message) = hub.take(&mut cursor) {
            messages += 1;
            let items = items(&message);
            seen += items.iter().filter(|item| item[0] == "e").count();
            // The status comes in the last message, after every delta.
            let done = items.iter().any(|item| item[0] == "S");
            assert_eq!(done, seen == 40, "status after {seen} deltas");
        }
        assert_eq!(seen, 40);
        assert!(messages > 3, "{messages} messages");
    }
}
