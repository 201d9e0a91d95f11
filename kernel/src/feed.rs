//! When a serial line next wants bytes. A 16550 takes a FIFO's worth (16 bytes) at once, and
//! only when its FIFO is empty; fed only at guest exits, a line sits idle while the guests run
//! without exiting, and its queue overflows. A [`FeedClock`] gives the run loop a deadline at
//! about the moment the FIFO runs dry, so the hypervisor takes an exit of its own to refill it
//! (an exit the slice does not pay for: the run loop excludes it as foreign).
//!
//! The drain time is learned, not assumed: the hypervisor's TSC rate need not match the UART's
//! baud clock (in Bochs the TSC counts instructions and `ips` paces the UART). Each feed after a
//! whole FIFO went in bounds it: the line still sending its FIFO says the drain takes longer
//! than the time since, the line silent says shorter, the FIFO just empty with its last byte on
//! the wire says about that long.
//!
//! The interruptless design is deliberate: Bochs 2.7 re-evaluates its interrupt mask only when
//! RFLAGS.IF changes, so with IF = 0 in root mode and in the guest a UART's transmit interrupt
//! never makes a `spin` with interrupts off exit, and that is the very guest that starves the
//! line. A deadline works on every backend.

/// What a UART's line status said when it was fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStatus {
    /// The FIFO still held bytes: it took none.
    Busy,
    /// The FIFO was empty and the last byte still on the wire: just in time.
    Draining,
    /// Nothing was being sent at all: the line idled for a while.
    Idle,
}

/// The feed deadline of one serial line.
#[derive(Clone, Debug)]
pub struct FeedClock {
    /// The current estimate of the time the FIFO takes to drain, in TSC cycles.
    interval: u64,
    /// Its bounds: the floor bounds the hypervisor's own exits, the ceiling the learning time.
    min: u64,
    max: u64,
    /// When the FIFO was last filled whole (bytes were left over), while bytes still wait.
    filled: Option<u64>,
}

impl FeedClock {
    /// A clock whose first guess is `interval` cycles, kept within [`min`, `max`].
    pub fn new(interval: u64, min: u64, max: u64) -> Self {
        let min = min.max(1);
        let max = max.max(min);
        Self {
            interval: interval.clamp(min, max),
            min,
            max,
            filled: None,
        }
    }

    /// A clock for a UART at `baud` (8N1: 10 bits a byte) when the TSC runs at `tsc_hz`: the
    /// first guess is the nominal drain time of a 16-byte FIFO, at most 64 times that, and at
    /// least [`MIN_INTERVAL_US`] of TSC time or [`MIN_INTERVAL_CYCLES`], whichever is longer
    /// (the floor bounds the exits feeding costs when the TSC rate says little about the
    /// UART's).
    pub fn for_uart(baud: u64, tsc_hz: u64) -> Self {
        /// Bytes in the FIFO, times bits per byte.
        const FIFO_BITS: u64 = 16 * 10;
        let nominal = (u128::from(tsc_hz) * u128::from(FIFO_BITS) / u128::from(baud.max(1)))
            .try_into()
            .unwrap_or(u64::MAX);
        let floor = (tsc_hz / (1_000_000 / MIN_INTERVAL_US)).max(MIN_INTERVAL_CYCLES);
        Self::new(nominal, floor.min(nominal), nominal.saturating_mul(64))
    }

    /// The current drain estimate.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// When the line next wants bytes, if any wait.
    pub fn next(&self) -> Option<u64> {
        self.filled
            .map(|filled| filled.saturating_add(self.interval))
    }

    /// The line was fed at `now`, found in `status`; `waiting` tells whether bytes are still
    /// queued for it afterwards.
    pub fn fed(&mut self, now: u64, status: LineStatus, waiting: bool) {
        // What the line did since a whole FIFO went in bounds the drain time.
        if let Some(filled) = self.filled {
            let elapsed = now.saturating_sub(filled);
            match status {
                // Still sending after `elapsed`: if the deadline had come, it was early.
                LineStatus::Busy if elapsed >= self.interval => {
                    self.interval = (elapsed + elapsed / 4 + 1).clamp(self.min, self.max);
                }
                LineStatus::Busy => {}
                // Silent already: the FIFO drained well within `elapsed`.
                LineStatus::Idle => {
                    let shorter = self.interval.min(elapsed);
                    self.interval = (shorter - shorter / 8).clamp(self.min, self.max);
                }
                // The FIFO just ran dry: `elapsed` is the drain time.
                LineStatus::Draining => self.interval = elapsed.clamp(self.min, self.max),
            }
        }
        self.filled = match (waiting, status) {
            (false, _) => None,
            // It took nothing: the fill being timed goes on.
            (true, LineStatus::Busy) => self.filled.or(Some(now)),
            (true, _) => Some(now),
        };
    }
}

/// The floor of a UART's feed interval, microseconds of TSC time and cycles.
pub const MIN_INTERVAL_US: u64 = 10;
pub const MIN_INTERVAL_CYCLES: u64 = 5_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated UART: a FIFO of 16 bytes drains in `drain` cycles, the last byte leaving
    /// `drain / 16` after the FIFO empties. Fed only at its clock's deadlines, with `bytes`
    /// queued; returns how many feeds it took, and the cycles the line spent idle.
    fn simulate(clock: &mut FeedClock, drain: u64, mut bytes: u64) -> (u64, u64) {
        let byte = drain / 16;
        let mut now = 0;
        // When the FIFO empties, and when the wire falls silent.
        let mut fifo_empty_at = 0;
        let mut silent_at = 0;
        let mut feeds = 0;
        let mut idle = 0;
        loop {
            let status = if now < fifo_empty_at {
                LineStatus::Busy
            } else if now < silent_at {
                LineStatus::Draining
            } else {
                idle += now - silent_at;
                LineStatus::Idle
            };
            if status != LineStatus::Busy {
                let sent = bytes.min(16);
                bytes -= sent;
                fifo_empty_at = now + byte * sent.saturating_sub(1);
                silent_at = fifo_empty_at + byte;
            }
            feeds += 1;
            clock.fed(now, status, bytes > 0);
            match clock.next() {
                Some(next) => now = next,
                None => return (feeds, idle),
            }
        }
    }

    #[test]
    fn nothing_waiting_means_no_deadline() {
        let mut clock = FeedClock::new(1000, 10, 100_000);
        clock.fed(5, LineStatus::Draining, false);
        assert_eq!(clock.next(), None);
        clock.fed(6, LineStatus::Idle, true);
        assert_eq!(clock.next(), Some(1006));
        clock.fed(7, LineStatus::Busy, false);
        assert_eq!(clock.next(), None);
    }

    #[test]
    fn a_guess_fifty_times_too_long_is_learned() {
        // The Bochs labs' case: a 50 MHz TSC, but the UART paced by 1 M instructions a second.
        let mut clock = FeedClock::new(69_444, 69_444 / 64, 69_444 * 64);
        let (feeds, _) = simulate(&mut clock, 1_389, 64 << 10);
        // One feed a FIFO, and a few probes that found it still busy while the guess grew.
        assert!(feeds <= (64 << 10) / 16 + 64, "{feeds} feeds");
        assert!(
            clock.interval() < 2_000,
            "the interval {} should approach the drain time 1,389",
            clock.interval()
        );
    }

    #[test]
    fn a_guess_far_too_short_backs_off() {
        let mut clock = FeedClock::new(100, 10, 10_000_000);
        let (_, _) = simulate(&mut clock, 100_000, 64 << 10);
        assert!(
            clock.interval() > 60_000,
            "the interval {} should approach the drain time 100,000",
            clock.interval()
        );
    }

    #[test]
    fn once_learned_the_line_stays_busy() {
        let mut clock = FeedClock::new(1_400, 20, 100_000);
        // Learn first, then measure the idle time of a second backlog.
        simulate(&mut clock, 1_389, 16 << 10);
        clock.fed(0, LineStatus::Idle, false);
        let (feeds, idle) = simulate(&mut clock, 1_389, 16 << 10);
        let busy = 1_389 * (16 << 10) / 16;
        assert!(
            idle * 20 < busy,
            "the line idled {idle} cycles of {busy} ({feeds} feeds)"
        );
    }

    #[test]
    fn an_early_busy_feed_teaches_nothing() {
        let mut clock = FeedClock::new(1_000, 10, 100_000);
        clock.fed(0, LineStatus::Draining, true);
        // A guest exit feeds early and finds the FIFO busy: neither the estimate nor the
        // deadline moves.
        clock.fed(300, LineStatus::Busy, true);
        assert_eq!(clock.interval(), 1_000);
        assert_eq!(clock.next(), Some(1_000));
    }

    #[test]
    fn feeds_before_the_deadline_teach_too() {
        // A guess far too long, never reached because slices are shorter: the feeds at the
        // slice ends find the line silent, and the estimate comes down to what they saw.
        let mut clock = FeedClock::new(1_000_000, 10, 10_000_000);
        clock.fed(0, LineStatus::Draining, true);
        clock.fed(100_000, LineStatus::Idle, true);
        assert!(clock.interval() < 100_000, "{}", clock.interval());
        // A feed that finds the FIFO just empty measures the drain time itself.
        clock.fed(101_389, LineStatus::Draining, true);
        assert_eq!(clock.interval(), 1_389);
        assert_eq!(clock.next(), Some(101_389 + 1_389));
    }

    #[test]
    fn for_uart_is_the_nominal_drain_time() {
        // 16 bytes of 10 bits at 115,200 baud: 1.389 ms; at 1 GHz, 1,388,888 cycles.
        let clock = FeedClock::for_uart(115_200, 1_000_000_000);
        assert_eq!(clock.interval(), 1_388_888);
        // The floor: 10 µs of a 1 GHz TSC, 5,000 cycles of a slow one.
        let mut clock = FeedClock::for_uart(115_200, 1_000_000_000);
        clock.fed(0, LineStatus::Draining, true);
        clock.fed(1, LineStatus::Draining, true);
        assert_eq!(clock.interval(), 10_000);
        let mut clock = FeedClock::for_uart(115_200, 50_000_000);
        clock.fed(0, LineStatus::Draining, true);
        clock.fed(1, LineStatus::Draining, true);
        assert_eq!(clock.interval(), 5_000);
        let clock = FeedClock::for_uart(0, u64::MAX);
        assert!(clock.interval() > 0);
    }
}
