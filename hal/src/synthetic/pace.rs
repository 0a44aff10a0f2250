//! Real-time pacing shared by the synthetic sources.
//!
//! A real camera or sound card delivers at its own rate and drops data when the reader is
//! slow; the synthetic sources imitate that. Slot `n` falls due at `start + n * period`, where
//! `start` is the first read, so rounding never accumulates into drift. A reader that falls
//! behind gets the most recent due slot at once, not a burst of stale ones, and the skipped
//! slot numbers show up as a gap, exactly like frames a camera dropped.
//!
//! The decision is [`Pacer::schedule`], a pure function of the elapsed time, so it is tested
//! without sleeping; [`Pacer::wait`] only adds the clock and the sleep.

use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Hands out slot numbers 0, 1, 2, … at `start + n * numerator / denominator` seconds.
#[derive(Debug, Clone)]
pub(super) struct Pacer {
    /// Period numerator, in seconds (≥ 1).
    numerator: u64,
    /// Period denominator (≥ 1).
    denominator: u64,
    /// Time of slot 0; set by the first [`Pacer::wait`].
    start: Option<Instant>,
    /// The slot to deliver next unless the reader has fallen behind.
    next: u64,
}

impl Pacer {
    /// A pacer whose period is `numerator / denominator` seconds; zeros count as one.
    pub(super) fn new(numerator: u64, denominator: u64) -> Pacer {
        Pacer {
            numerator: numerator.max(1),
            denominator: denominator.max(1),
            start: None,
            next: 0,
        }
    }

    /// Time from slot 0 to slot `slot`.
    fn offset(&self, slot: u64) -> Duration {
        let nanos = u128::from(slot) * u128::from(self.numerator) * NANOS_PER_SECOND
            / u128::from(self.denominator);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The last slot that is due `elapsed` after slot 0.
    fn due(&self, elapsed: Duration) -> u64 {
        let slots = elapsed.as_nanos() * u128::from(self.denominator)
            / (u128::from(self.numerator) * NANOS_PER_SECOND);
        u64::try_from(slots).unwrap_or(u64::MAX)
    }

    /// Picks the slot to deliver when `elapsed` has passed since slot 0, and how long to wait
    /// for it. Skips ahead to the latest due slot when more than one period behind.
    fn schedule(&mut self, elapsed: Duration) -> (u64, Duration) {
        let due = self.due(elapsed);
        if due > self.next {
            self.next = due;
        }
        let slot = self.next;
        self.next = slot.saturating_add(1);
        (slot, self.offset(slot).saturating_sub(elapsed))
    }

    /// Blocks until the next slot is due; returns its number and the time it was reached.
    pub(super) fn wait(&mut self) -> (u64, Instant) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let (slot, wait) = self.schedule(start.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        (slot, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn on_time_reader_gets_consecutive_slots_and_waits_for_each() {
        let mut pacer = Pacer::new(1, 50); // 20 ms
        assert_eq!(pacer.schedule(ms(0)), (0, ms(0)));
        assert_eq!(pacer.schedule(ms(1)), (1, ms(19)));
        assert_eq!(pacer.schedule(ms(20)), (2, ms(20)));
        assert_eq!(pacer.schedule(ms(45)), (3, ms(15)));
    }

    #[test]
    fn slightly_late_reader_is_served_at_once_without_skipping() {
        let mut pacer = Pacer::new(1, 50);
        assert_eq!(pacer.schedule(ms(0)), (0, ms(0)));
        assert_eq!(pacer.schedule(ms(25)), (1, ms(0)));
        assert_eq!(pacer.schedule(ms(26)), (2, ms(14)));
    }

    #[test]
    fn reader_far_behind_skips_to_the_latest_due_slot_instead_of_bursting() {
        let mut pacer = Pacer::new(1, 50);
        assert_eq!(pacer.schedule(ms(0)), (0, ms(0)));
        // 130 ms later slots 1..=6 are all due; only 6 is delivered.
        assert_eq!(pacer.schedule(ms(130)), (6, ms(0)));
        // The next one is not due yet, so the reader waits rather than receiving slot 7 now.
        assert_eq!(pacer.schedule(ms(131)), (7, ms(9)));
    }

    #[test]
    fn fractional_periods_do_not_drift() {
        let mut pacer = Pacer::new(1, 30);
        let mut last = (0, Duration::ZERO);
        for _ in 0..=3000 {
            last = pacer.schedule(Duration::ZERO);
        }
        // Slot 3000 of a 30 Hz clock is due at exactly 100 s.
        assert_eq!(last, (3000, Duration::from_secs(100)));
    }

    #[test]
    fn wait_hands_out_increasing_slots() {
        let mut pacer = Pacer::new(1, 10_000);
        let (first, t0) = pacer.wait();
        let (second, t1) = pacer.wait();
        assert_eq!(first, 0);
        assert!(second > first);
        // The second slot is due one period (100 µs) after the first; a lower bound only.
        assert!(t1.duration_since(t0) >= std::time::Duration::from_micros(100));
    }
}
