//! Test doubles shared by the device models' tests.

use crate::InterruptLine;

/// An interrupt line that records its level and counts rising edges, and fails the test if a
/// device reports a level that is not a change.
#[derive(Debug, Default)]
pub struct RecordingIrq {
    pub level: bool,
    pub raises: usize,
}

impl InterruptLine for RecordingIrq {
    fn set_level(&mut self, asserted: bool) {
        assert_ne!(asserted, self.level, "set_level reports changes only");
        self.level = asserted;
        self.raises += usize::from(asserted);
    }
}
