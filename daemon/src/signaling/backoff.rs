//! How long to wait before reconnecting: exponential with jitter, so a fleet of cameras that
//! lost the service at the same moment does not come back at the same moment.

use std::time::Duration;

/// First wait.
pub const FIRST: Duration = Duration::from_secs(1);
/// Longest wait.
pub const MAX: Duration = Duration::from_secs(30);

/// Reconnection delays: 1, 2, 4 … 30 s, each shortened by up to a fifth at random.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::up_to(MAX)
    }
}

impl Backoff {
    /// Delays from [`FIRST`] doubling up to `max`.
    pub fn up_to(max: Duration) -> Self {
        Backoff { next: FIRST, max }
    }

    /// The next delay, with `jitter` in `0.0..1.0` choosing how much of the last fifth is
    /// left out.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
    }

    /// A connection worked (the camera registered): start again from [`FIRST`].
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| backoff.next_delay(0.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), FIRST);
        let mut short = Backoff::up_to(Duration::from_secs(10));
        let waits: Vec<u64> = (0..6).map(|_| short.next_delay(0.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn jitter_shortens_by_at_most_a_fifth() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(1.0), Duration::from_millis(800));
        assert_eq!(backoff.next_delay(0.5), Duration::from_millis(1800));
        assert_eq!(backoff.next_delay(7.0), Duration::from_millis(3200));
    }
}
