//! Capture times and frame numbers from what the driver stamps on each buffer.
//!
//! A buffer flagged `V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC` carries the `CLOCK_MONOTONIC` time
//! the driver took the frame (UVC: when the first packet arrived; vivid and most SoC
//! drivers: at the end of the frame). [`std::time::Instant`] reads the same clock on Linux
//! but cannot be built from a raw time without unsafe code, so the buffer's age is measured
//! instead: read `CLOCK_MONOTONIC` and `Instant::now()` together and subtract the age from
//! the `Instant`. The two reads are microseconds apart, far below a frame interval. Buffers
//! with another kind of timestamp (`COPY`, `UNKNOWN`) get the time they were dequeued.

use std::time::{Duration, Instant};

use rustix::time::{ClockId, clock_gettime};

/// Buffers older than this are assumed to carry a broken timestamp and get the dequeue time.
/// Four buffers at 1 fps are 4 s old at most.
const MAX_AGE: Duration = Duration::from_secs(10);

/// The buffer's timestamp, if it is on `CLOCK_MONOTONIC` and set.
pub fn buffer_time(monotonic: bool, seconds: i64, microseconds: i64) -> Option<Duration> {
    if !monotonic || seconds < 0 || !(0..1_000_000).contains(&microseconds) {
        return None;
    }
    let time = Duration::from_secs(seconds as u64) + Duration::from_micros(microseconds as u64);
    (!time.is_zero()).then_some(time)
}

/// `CLOCK_MONOTONIC` now, as a duration since its (boot-time) origin.
pub fn monotonic_now() -> Duration {
    let now = clock_gettime(ClockId::Monotonic);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// The `Instant` of a buffer stamped `buffer` when `CLOCK_MONOTONIC` reads `monotonic_now`
/// and `Instant::now()` reads `now`; `now` itself for unstamped buffers, stamps in the future
/// or implausibly old ones.
pub fn capture_instant(buffer: Option<Duration>, monotonic_now: Duration, now: Instant) -> Instant {
    buffer
        .and_then(|stamp| monotonic_now.checked_sub(stamp))
        .filter(|age| *age <= MAX_AGE)
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

/// Turns the driver's 32-bit buffer sequence numbers into the HAL's frame counter: 0 for the
/// first frame, and gaps where the driver dropped frames (or onair skipped a bad one).
#[derive(Debug, Default)]
pub struct FrameCounter {
    /// The driver's number of the previous frame, and onair's.
    last: Option<(u32, u64)>,
}

impl FrameCounter {
    /// Counts a frame the driver numbered `sequence`.
    pub fn count(&mut self, sequence: u32) -> u64 {
        let number = match self.last {
            None => 0,
            Some((previous, number)) => {
                // Drivers that do not number frames repeat 0; one that restarted its count
                // jumps back. Both count as the next frame.
                let step = match sequence.wrapping_sub(previous) {
                    0 => 1,
                    step if step > 1 << 30 => 1,
                    step => u64::from(step),
                };
                number + step
            }
        };
        self.last = Some((sequence, number));
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_stamps_become_instants_in_the_past() {
        let now = Instant::now();
        let kernel_now = Duration::from_millis(100_030);
        let stamp = buffer_time(true, 100, 0);
        assert_eq!(stamp, Some(Duration::from_secs(100)));
        let captured = capture_instant(stamp, kernel_now, now);
        assert_eq!(now.duration_since(captured), Duration::from_millis(30));
        // Microseconds count too.
        let stamp = buffer_time(true, 100, 12_345);
        let captured = capture_instant(stamp, kernel_now, now);
        assert_eq!(now.duration_since(captured), Duration::from_micros(17_655));
    }

    #[test]
    fn other_stamps_fall_back_to_now() {
        let now = Instant::now();
        let kernel_now = Duration::from_secs(100);
        // Not monotonic (TIMESTAMP_COPY / UNKNOWN), zero, or malformed.
        assert_eq!(buffer_time(false, 99, 0), None);
        assert_eq!(buffer_time(true, 0, 0), None);
        assert_eq!(buffer_time(true, -1, 0), None);
        assert_eq!(buffer_time(true, 1, 1_000_000), None);
        assert_eq!(capture_instant(None, kernel_now, now), now);
        // In the future, or absurdly old.
        let future = Some(Duration::from_secs(101));
        assert_eq!(capture_instant(future, kernel_now, now), now);
        let ancient = Some(Duration::from_secs(10));
        assert_eq!(capture_instant(ancient, kernel_now, now), now);
    }

    #[test]
    fn monotonic_clock_reads_and_advances() {
        let first = monotonic_now();
        let second = monotonic_now();
        assert!(first > Duration::ZERO);
        assert!(second >= first);
    }

    #[test]
    fn frame_counter_starts_at_zero_and_keeps_gaps() {
        let mut counter = FrameCounter::default();
        assert_eq!(counter.count(500), 0);
        assert_eq!(counter.count(501), 1);
        assert_eq!(counter.count(504), 4); // the driver dropped 502 and 503
        // Wrapping at 2^32.
        let mut counter = FrameCounter::default();
        assert_eq!(counter.count(u32::MAX), 0);
        assert_eq!(counter.count(0), 1);
        assert_eq!(counter.count(1), 2);
    }

    #[test]
    fn frame_counter_copes_with_drivers_that_do_not_number_frames() {
        let mut counter = FrameCounter::default();
        assert_eq!(counter.count(0), 0);
        assert_eq!(counter.count(0), 1);
        assert_eq!(counter.count(0), 2);
        // A restart of the driver's count goes on from where onair was.
        let mut counter = FrameCounter::default();
        assert_eq!(counter.count(1000), 0);
        assert_eq!(counter.count(3), 1);
        assert_eq!(counter.count(4), 2);
    }
}
