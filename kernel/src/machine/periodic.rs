//! When the run loop's periodic work is due: housekeeping between slices (at most once per
//! period), the metrics interval inside it, and working-set samples. Pure bookkeeping over TSC
//! instants, so that the loop only asks "what is due now" and the rule is host-tested alone.

use carousel_scheduler::Cycles;

/// What one housekeeping pass must do besides its every-pass work (console input, prompts,
/// wake-ups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Due {
    /// The metrics interval ended: flush the exit statistics (and merging's share).
    pub interval: bool,
    /// A working-set sample is due.
    pub memory_sample: bool,
}

/// The periods and the next instants of the loop's periodic work.
#[derive(Debug, Clone)]
pub struct Periodic {
    /// Housekeeping runs at most once per `housekeeping` cycles.
    housekeeping: Cycles,
    next_housekeeping: Cycles,
    /// The metrics interval: its length, when the current one started, when it ends.
    interval: Cycles,
    interval_start: Cycles,
    next_interval: Cycles,
    /// Working-set sampling period (0: off) and when the next sample is due.
    memory_sample: Cycles,
    next_memory_sample: Cycles,
}

impl Periodic {
    /// Periodic work from `now` on: housekeeping every `housekeeping` cycles, metrics intervals
    /// of `interval` (at least 1), working-set samples every `memory_sample` (0: none). The first
    /// pass, and the first interval and sample, are due at once.
    pub fn new(now: Cycles, housekeeping: Cycles, interval: Cycles, memory_sample: Cycles) -> Self {
        Self {
            housekeeping,
            next_housekeeping: 0,
            interval: interval.max(1),
            interval_start: now,
            next_interval: now,
            memory_sample,
            next_memory_sample: now,
        }
    }

    /// A housekeeping pass may run at `now`: None before its period is up, else what it must do
    /// besides its every-pass work. Each thing due is taken: the next comes one period on.
    pub fn pass(&mut self, now: Cycles) -> Option<Due> {
        if now < self.next_housekeeping {
            return None;
        }
        self.next_housekeeping = now.saturating_add(self.housekeeping);
        let interval = now >= self.next_interval;
        if interval {
            self.next_interval = now.saturating_add(self.interval);
        }
        let memory_sample = self.memory_sample > 0 && now >= self.next_memory_sample;
        if memory_sample {
            self.next_memory_sample = now.saturating_add(self.memory_sample);
        }
        Some(Due {
            interval,
            memory_sample,
        })
    }

    /// The metrics interval that ends at `now`: its length. The next starts at `now`.
    pub fn close_interval(&mut self, now: Cycles) -> Cycles {
        let length = now.saturating_sub(self.interval_start);
        self.interval_start = now;
        length
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn housekeeping_runs_at_most_once_a_period() {
        let mut periodic = Periodic::new(1_000, 100, 1_000, 0);
        assert!(periodic.pass(1_000).is_some());
        assert_eq!(periodic.pass(1_050), None);
        assert_eq!(periodic.pass(1_099), None);
        assert!(periodic.pass(1_100).is_some());
        // A late pass moves the next one a whole period on from itself.
        assert!(periodic.pass(1_500).is_some());
        assert_eq!(periodic.pass(1_599), None);
    }

    #[test]
    fn intervals_and_samples_come_due_on_their_own_periods() {
        let mut periodic = Periodic::new(0, 10, 100, 250);
        let due = |periodic: &mut Periodic, now| periodic.pass(now).unwrap_or_default();
        assert_eq!(
            due(&mut periodic, 0),
            Due {
                interval: true,
                memory_sample: true
            }
        );
        assert_eq!(due(&mut periodic, 50), Due::default());
        assert_eq!(
            due(&mut periodic, 100),
            Due {
                interval: true,
                memory_sample: false
            }
        );
        assert_eq!(
            due(&mut periodic, 250),
            Due {
                interval: true,
                memory_sample: true
            }
        );
        assert_eq!(periodic.close_interval(250), 250);
        assert_eq!(periodic.close_interval(330), 80);
    }

    #[test]
    fn sampling_off_never_comes_due_and_nothing_overflows() {
        let mut periodic = Periodic::new(0, u64::MAX, u64::MAX, 0);
        assert_eq!(
            periodic.pass(u64::MAX - 1).map(|due| due.memory_sample),
            Some(false)
        );
        assert_eq!(periodic.pass(u64::MAX - 1), None);
    }
}
