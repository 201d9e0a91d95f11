//! `carousel-trace`, Carousel's trace library: what a run's record stream says, and every form
//! the tool shows it in.
//!
//! What is here: reading a stream (the record frames, and the damage between them), the
//! accounting and the timeline built from the records, the verdict of a run, and the reports:
//! text tables, CSV, JSON, the HTML page, the Perfetto export and the live line. What is not:
//! running anything (no processes, no terminal, no command line); the `carousel` tool does that
//! and hands the records here. The wire format itself is `carousel-protocol`'s.

use carousel_protocol::record::TraceLevel;

pub mod accounting;
pub mod console_lines;
#[cfg(test)]
mod fixtures;
pub mod html;
pub mod live;
pub mod outcome;
pub mod perfetto;
pub mod report;
pub mod timeline;

/// Trace levels by the name a lab file's `run.trace` gives them.
pub const TRACE_LEVELS: [(&str, TraceLevel); 4] = [
    ("off", TraceLevel::Off),
    ("aggregate", TraceLevel::Aggregate),
    ("switches", TraceLevel::Switches),
    ("full", TraceLevel::Full),
];
