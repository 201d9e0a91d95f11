//! Records for unit tests: the pieces every module's tests build traces from.

use carousel_protocol::record::{Record, TraceLevel, TscSource};

/// A Hello record naming `names` (VM ids in order) at `tsc_hz`, level `switches`.
pub fn hello(names: &[&str], tsc_hz: u64) -> Record {
    Record::Hello {
        version: 1,
        lab_hash: 0,
        tsc_hz,
        tsc_source: TscSource::LabFile,
        preemption_timer_rate: 0,
        cpu: "GenuineIntel".to_string(),
        vms: names.iter().map(|name| name.to_string()).collect(),
        commit: "test".into(),
        level: TraceLevel::Switches,
        weights: Vec::new(),
        quantum_clock: carousel_protocol::config::QuantumClock::Wall,
    }
}
