//! `carousel-trace`, Carousel's trace library: what a run's record stream says, and every form
//! the tool shows it in.
//!
//! What is here, in the order a trace flows through it: reading a stream, its frames and the
//! damage between them ([`decode`]); one model of the run folded from its records
//! ([`model`]: accounting, timeline, samples, console times, the verdict's facts, the live
//! window); the verdict of a run ([`verdict`]); and the reports, which read only the model
//! ([`render`]: text tables, CSV, JSON, the HTML page, the Perfetto export, the live line, the
//! outcome table), with numbers written the same way everywhere ([`format`](mod@format)) and every string a
//! guest supplied shown safely ([`escape`]). What is not:
//! running anything (no processes, no terminal, no command line); the `carousel` tool does that
//! and hands the records here. The wire format itself is `carousel-protocol`'s.

use carousel_protocol::record::TraceLevel;

pub mod decode;
pub mod escape;
#[cfg(test)]
mod fixtures;
pub mod format;
pub mod model;
pub mod render;
pub mod verdict;

/// Trace levels by the name a lab file's `run.trace` gives them.
pub const TRACE_LEVELS: [(&str, TraceLevel); 4] = [
    ("off", TraceLevel::Off),
    ("aggregate", TraceLevel::Aggregate),
    ("switches", TraceLevel::Switches),
    ("full", TraceLevel::Full),
];
