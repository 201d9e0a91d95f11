//! The model of a run: everything its records say, folded into one value a record at a time
//! ([`ModelBuilder::add`]), the same way while a run streams and for a finished trace. Every
//! report reads the model, never the records.
//!
//! Its parts, each a fold of its own: the hypervisor's accounting and the guests' metrics
//! ([`accounting`]), who ran when ([`timeline`]), what was sampled over time: memory maps, disk
//! transfers, exit intervals ([`samples`]), when each console line was written ([`console`]),
//! what the verdict reads ([`verdict`]) and the live line's window ([`live`]); beside them the
//! Hello record, the sectors each VM wrote (for `persist`) and the damage the decoder found.
//!
//! A new record type is decoded by `carousel-protocol` and folded here, into the part it
//! belongs to; the reports then show it from the model.

pub mod accounting;
pub mod console;
pub mod disk;
pub mod feed;
pub mod live;
pub mod phases;
pub mod samples;
pub mod settings;
pub mod steps;
pub mod timeline;
pub mod verdict;

use carousel_protocol::record::{Record, TraceLevel, TscSource};

use self::accounting::{Accounting, AccountingBuilder};
use self::console::ConsoleLog;
use self::disk::disk_intervals;
use self::live::LiveWindow;
use self::samples::Samples;
use self::steps::{KeyLog, VmSteps};
use self::timeline::{intervals, Interval, Timeline, TimelineBuilder, MAX_INTERVALS};
use self::verdict::VerdictInputs;
use crate::decode::{decode_trace, Damage, Item};
use crate::escape;

/// What the Hello record said about the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The hypervisor's format version.
    pub version: u16,
    pub lab_hash: u64,
    /// TSC frequency in Hz (0: unknown).
    pub tsc_hz: u64,
    pub tsc_source: TscSource,
    pub preemption_timer_rate: u8,
    pub cpu: String,
    /// VM names, by id.
    pub vms: Vec<String>,
    pub commit: String,
    pub level: TraceLevel,
    pub weights: Vec<u32>,
    /// What a quantum measured.
    pub quantum_clock: carousel_protocol::config::QuantumClock,
}

/// How much of the run the model keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Totals, the verdict's facts and console times: what a run and the text, CSV and JSON
    /// reports need, in memory that does not grow with the run's length (but for the guests'
    /// metric reports and console lines).
    Totals,
    /// [`Keep::Totals`] and the live line's window (`carousel run`).
    Live,
    /// Everything: also the timeline of every slice and every sample (the HTML page, the
    /// Perfetto export, per-interval rows).
    Everything,
}

/// The model of a run.
#[derive(Debug, Clone)]
pub struct Model {
    /// The first Hello record, if one arrived.
    pub hello: Option<Hello>,
    pub accounting: Accounting,
    /// Who ran when, with [`Keep::Everything`] and a trace that carries scheduler events.
    pub timeline: Option<Timeline>,
    /// Memory maps, disk transfers and exit intervals, with [`Keep::Everything`].
    pub samples: Samples,
    pub console: ConsoleLog,
    /// Console input and keystroke responses.
    pub keys: KeyLog,
    /// Each VM's script steps, timed ([`steps::time_steps`]): set by whoever knows which line
    /// matched which step (`carousel run`, or `carousel report` from the run's `steps.json`).
    pub steps: Option<Vec<VmSteps>>,
    pub verdict: VerdictInputs,
    /// What did not decode, in stream order.
    pub damage: Vec<Damage>,
    /// Records folded in.
    pub frames: u64,
}

/// A [`Model`] in the making.
#[derive(Debug)]
pub struct ModelBuilder {
    keep: Keep,
    hello: Option<Hello>,
    accounting: AccountingBuilder,
    timeline: TimelineBuilder,
    samples: Samples,
    console: ConsoleLog,
    keys: KeyLog,
    verdict: VerdictInputs,
    live: LiveWindow,
    damage: Vec<Damage>,
    frames: u64,
}

impl ModelBuilder {
    /// An empty model that keeps what `keep` says; weights as the Hello record gives them.
    pub fn new(keep: Keep) -> Self {
        Self::with_weights(keep, Vec::new())
    }

    /// [`ModelBuilder::new`] with the lab's weights (`weights[id]`; VMs past its end weigh 1);
    /// weights only divide guest cycles for Jain's index.
    pub fn with_weights(keep: Keep, weights: Vec<u32>) -> Self {
        Self {
            keep,
            hello: None,
            accounting: AccountingBuilder::new(weights),
            timeline: TimelineBuilder::default(),
            samples: Samples::default(),
            console: ConsoleLog::default(),
            keys: KeyLog::default(),
            verdict: VerdictInputs::default(),
            live: LiveWindow::new(),
            damage: Vec::new(),
            frames: 0,
        }
    }

    /// Folds in the next record of the run.
    pub fn add(&mut self, record: &Record) {
        self.frames += 1;
        self.accounting.add(record);
        self.verdict.add(record);
        self.console.add(record);
        self.keys.add(record);
        match self.keep {
            Keep::Totals => {}
            Keep::Live => self.live.record(record),
            Keep::Everything => {
                self.timeline.add(record);
                self.samples.add(record);
            }
        }
        match record {
            Record::Hello {
                version,
                lab_hash,
                tsc_hz,
                tsc_source,
                preemption_timer_rate,
                cpu,
                vms,
                commit,
                level,
                weights,
                quantum_clock,
            } if self.hello.is_none() => {
                self.hello = Some(Hello {
                    version: *version,
                    lab_hash: *lab_hash,
                    tsc_hz: *tsc_hz,
                    tsc_source: *tsc_source,
                    preemption_timer_rate: *preemption_timer_rate,
                    cpu: escape::message(cpu),
                    vms: vms.iter().map(|name| escape::name(name)).collect(),
                    commit: escape::name(commit),
                    level: *level,
                    weights: weights.clone(),
                    quantum_clock: *quantum_clock,
                });
            }
            _ => {}
        }
    }

    /// Notes a part of the stream that did not decode.
    pub fn add_damage(&mut self, damage: Damage) {
        self.live.gap(damage.lost_records());
        self.damage.push(damage);
    }

    /// Folds in what the decoder found next.
    pub fn add_item(&mut self, item: Item) {
        match item {
            Item::Record(record) => self.add(&record),
            Item::Damage(damage) => self.add_damage(damage),
        }
    }

    /// The first Hello record, once it arrived.
    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// The verdict's facts so far.
    pub fn verdict(&self) -> &VerdictInputs {
        &self.verdict
    }

    /// The live line's window ([`Keep::Live`]).
    pub fn live(&mut self) -> &mut LiveWindow {
        &mut self.live
    }

    /// The model of everything added.
    pub fn finish(self) -> Model {
        Model {
            hello: self.hello,
            accounting: self.accounting.finish(),
            timeline: self.timeline.finish(),
            samples: self.samples,
            console: self.console,
            keys: self.keys,
            steps: None,
            verdict: self.verdict,
            damage: self.damage,
            frames: self.frames,
        }
    }
}

/// Why a trace has no per-interval rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IntervalError {
    #[error(
        "the trace holds no scheduler events (it was recorded at trace level `aggregate`); \
         per-interval rows need `run.trace = \"switches\"` (the default) or `\"full\"` in the lab"
    )]
    NoEvents,
    #[error("the trace names no TSC frequency, so {ms} ms cannot be converted to cycles")]
    NoTscFrequency { ms: f64 },
    #[error(
        "{ms} ms intervals would cut this trace into more than {MAX_INTERVALS} rows; \
         choose a longer interval"
    )]
    TooMany { ms: f64 },
}

impl Model {
    /// The whole model of `records` ([`Keep::Everything`]).
    pub fn of_records(records: &[Record]) -> Model {
        let mut builder = ModelBuilder::new(Keep::Everything);
        for record in records {
            builder.add(record);
        }
        builder.finish()
    }

    /// The model of a finished trace's bytes, its damage included.
    pub fn read(bytes: &[u8], keep: Keep) -> Model {
        let mut builder = ModelBuilder::new(keep);
        decode_trace(bytes, |item| builder.add_item(item));
        builder.finish()
    }

    /// The names of the VMs (from Hello; `vm<id>` for ids it does not name), at least `count`
    /// of them.
    pub fn vm_names(&self, count: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .accounting
            .vms
            .iter()
            .map(|vm| vm.name.clone())
            .collect();
        while names.len() < count {
            names.push(format!("vm{}", names.len()));
        }
        names
    }

    /// The timeline cut into intervals of `ms` milliseconds of TSC time.
    pub fn intervals(&self, ms: f64) -> Result<Vec<Interval>, IntervalError> {
        let timeline = self.timeline.as_ref().ok_or(IntervalError::NoEvents)?;
        let hz = timeline
            .tsc_hz
            .ok_or(IntervalError::NoTscFrequency { ms })?;
        let length = (ms / 1_000.0 * hz as f64).round();
        if !(1.0..=u64::MAX as f64).contains(&length) {
            return Err(IntervalError::TooMany { ms });
        }
        let mut rows = intervals(timeline, &self.samples.exit_intervals, length as u64)
            .ok_or(IntervalError::TooMany { ms })?;
        let windows: Vec<(u64, u64)> = rows.iter().map(|row| (row.start, row.end)).collect();
        let vms = rows.first().map_or(0, |row| row.vms.len());
        let disk = disk_intervals(&self.samples.disk_served, &windows, vms);
        for (row, disk) in rows.iter_mut().zip(disk) {
            row.disk = Some(disk);
        }
        Ok(rows)
    }
}
