//! The commands of `carousel`: each reads its inputs, calls the session or the trace library,
//! prints and returns the exit code. `carousel sweep` has a folder of its own (`crate::sweep`).

pub mod bench;
pub mod doctor;
pub mod export;
pub mod persist;
pub mod report;
pub mod run;
pub mod view;
