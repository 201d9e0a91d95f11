//! A token bucket: what a page may send, so that a page (or a script that holds the token)
//! cannot flood a VM's console or the session with controls.

use std::time::{Duration, Instant};

/// Up to `burst` units at once, refilled at `rate` units a second.
#[derive(Debug, Clone)]
pub struct Bucket {
    burst: f64,
    rate: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(burst: u32, rate: u32, now: Instant) -> Self {
        Self {
            burst: f64::from(burst),
            rate: f64::from(rate),
            level: f64::from(burst),
            at: now,
        }
    }

    /// Takes `units` at `now` if there are that many; false (and nothing taken) otherwise.
    pub fn take(&mut self, units: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now.max(self.at);
        self.level = (self.level + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.level >= f64::from(units) {
            self.level -= f64::from(units);
            true
        } else {
            false
        }
    }

    /// How long until `units` can be taken (zero when they can now).
    pub fn wait(&self, units: u32) -> Duration {
        let missing = (f64::from(units) - self.level).max(0.0);
        Duration::from_secs_f64(missing / self.rate.max(f64::MIN_POSITIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(10, 5, start);
        assert!(bucket.take(10, start));
        assert!(!bucket.take(1, start), "empty");
        assert_eq!(bucket.wait(5), Duration::from_secs(1));
        assert!(!bucket.take(3, start + Duration::from_millis(500)));
        assert!(bucket.take(2, start + Duration::from_millis(500)));
        // Never above the burst, however long it rests.
        assert!(!bucket.take(11, start + Duration::from_secs(100)));
        assert!(bucket.take(10, start + Duration::from_secs(100)));
    }
}
