//! The commands of `carousel` beyond `run` and `sweep`: each reads its inputs, calls the
//! library, prints and returns the exit code.

pub mod export;
pub mod report;
