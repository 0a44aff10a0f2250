//! Cutting captured audio into exact periods, each stamped with the capture time of its
//! first sample.
//!
//! The Opus encoder takes exactly 20 ms (960 frames at 48 kHz), but reads from ALSA come in
//! whatever size they come: short reads after a signal or an overrun, and the hardware's own
//! period size, which drivers round to what their DMA can do (1024 frames is common). So
//! reads go into a [`Rechunker`], and periods come out of it.
//!
//! **Timestamps.** Right after a read, ALSA's delay says how many frames were captured but
//! not yet read; the read's first frame was captured `delay + frames read` frames before now
//! ([`first_frame_time`]). Every read is such an anchor, and a period's time is counted from
//! the anchor of the read its first frame came in, so the sound card's clock and the
//! monotonic clock are compared afresh on every read and cannot drift apart.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Collects interleaved 16-bit frames and hands them out in periods of a fixed size.
#[derive(Debug)]
pub struct Rechunker {
    /// Samples per second per channel.
    rate: u32,
    /// Interleaved channels.
    channels: usize,
    /// Frames per period handed out.
    period_frames: usize,
    /// Frames received and not yet handed out, interleaved.
    samples: Vec<i16>,
    /// `(frame index in samples, capture time)` of the first frame of each read still in
    /// `samples`, oldest first; the first is at index 0 whenever `samples` is not empty.
    anchors: VecDeque<(usize, Instant)>,
}

impl Rechunker {
    /// A rechunker for `channels` interleaved channels at `rate` frames per second, handing
    /// out periods of `period_frames` frames.
    pub fn new(rate: u32, channels: u16, period_frames: usize) -> Rechunker {
        let channels = usize::from(channels.max(1));
        let period_frames = period_frames.max(1);
        Rechunker {
            rate: rate.max(1),
            channels,
            period_frames,
            samples: Vec::with_capacity(4 * period_frames * channels),
            anchors: VecDeque::with_capacity(8),
        }
    }

    /// Frames still needed before the next period is complete.
    pub fn missing_frames(&self) -> usize {
        self.period_frames
            .saturating_sub(self.samples.len() / self.channels)
    }

    /// Adds one read of signed 16-bit little-endian interleaved frames whose first frame
    /// was captured at `first_captured`. A trailing partial frame is ignored.
    pub fn push_s16le(&mut self, bytes: &[u8], first_captured: Instant) {
        let frame_bytes = 2 * self.channels;
        let whole = bytes.len() / frame_bytes * frame_bytes;
        if whole == 0 {
            return;
        }
        self.anchors
            .push_back((self.samples.len() / self.channels, first_captured));
        self.samples.extend(
            bytes[..whole]
                .chunks_exact(2)
                .map(|pair| i16::from_le_bytes([pair[0], pair[1]])),
        );
    }

    /// Writes the next whole period into `out` (replacing its contents; allocation reused)
    /// and returns the capture time of its first frame, or returns `None` if there is not a
    /// whole period yet.
    pub fn pop(&mut self, out: &mut Vec<i16>) -> Option<Instant> {
        let period = self.period_frames;
        if self.samples.len() / self.channels < period {
            return None;
        }
        let (_, captured) = *self.anchors.front()?;
        let period_samples = period * self.channels;
        out.clear();
        out.extend_from_slice(&self.samples[..period_samples]);
        self.samples.drain(..period_samples);

        // The leftover starts inside the last read that began at or before frame `period`;
        // it becomes the first anchor, moved to the leftover's first frame.
        while self.anchors.len() > 1 && self.anchors[1].0 <= period {
            self.anchors.pop_front();
        }
        if self.samples.is_empty() {
            self.anchors.clear();
        } else if let Some(first) = self.anchors.front_mut() {
            first.1 += frames_to_duration((period - first.0) as u64, self.rate);
            first.0 = period;
            for anchor in self.anchors.iter_mut() {
                anchor.0 -= period;
            }
        }
        Some(captured)
    }

    /// Drops a partial period, after frames were lost (an overrun): a period is always
    /// continuous sound.
    pub fn clear(&mut self) {
        self.samples.clear();
        self.anchors.clear();
    }
}

/// The duration of `frames` frames at `rate` frames per second, to the nanosecond.
pub fn frames_to_duration(frames: u64, rate: u32) -> Duration {
    let nanos = u128::from(frames) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Capture time of the first frame of a read of `frames` frames that returned at `now`, when
/// ALSA reports `delay` frames captured and not yet read (negative delays, which some
/// plugins report around an overrun, count as none).
pub fn first_frame_time(now: Instant, delay: i64, frames: usize, rate: u32) -> Instant {
    let behind = u64::try_from(delay).unwrap_or(0) + frames as u64;
    now.checked_sub(frames_to_duration(behind, rate))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 48_000;

    /// Bytes of the frames `first..first + count`, each channel `c` of frame `n` holding
    /// `(n * channels + c) as i16`, so continuity can be checked sample by sample.
    fn counting(first: usize, count: usize, channels: usize) -> Vec<u8> {
        (first * channels..(first + count) * channels)
            .flat_map(|n| (n as i16).to_le_bytes())
            .collect()
    }

    /// Feeds reads of `sizes` frames (cycled) whose first frame was captured exactly at
    /// `origin + position / rate`, until `periods` periods came out; returns them.
    fn run(sizes: &[usize], channels: u16, periods: usize) -> (Instant, Vec<(Vec<i16>, Instant)>) {
        let origin = Instant::now();
        let mut chunker = Rechunker::new(RATE, channels, 960);
        let mut position = 0;
        let mut out = Vec::new();
        let mut got = Vec::new();
        for &size in sizes.iter().cycle() {
            let at = origin + frames_to_duration(position as u64, RATE);
            chunker.push_s16le(&counting(position, size, usize::from(channels)), at);
            position += size;
            while let Some(captured) = chunker.pop(&mut out) {
                got.push((out.clone(), captured));
            }
            if got.len() >= periods {
                break;
            }
        }
        (origin, got)
    }

    fn assert_continuous_periods(sizes: &[usize], channels: u16) {
        let (origin, periods) = run(sizes, channels, 50);
        let channels = usize::from(channels);
        for (k, (samples, captured)) in periods.iter().enumerate() {
            assert_eq!(samples.len(), 960 * channels, "{sizes:?}: period {k}");
            let first = k * 960 * channels;
            let expected: Vec<i16> = (first..first + 960 * channels).map(|n| n as i16).collect();
            assert_eq!(samples, &expected, "{sizes:?}: period {k} samples");
            let due = origin + frames_to_duration(k as u64 * 960, RATE);
            // Exact to the nanosecond rounding of each anchor and offset.
            let error = captured.max(&due).duration_since(*captured.min(&due));
            assert!(
                error <= Duration::from_nanos(2),
                "{sizes:?}: period {k} off by {error:?}"
            );
        }
    }

    #[test]
    fn reads_of_441_frames_make_960_frame_periods() {
        assert_continuous_periods(&[441], 1);
    }

    #[test]
    fn reads_of_1024_frames_make_960_frame_periods() {
        assert_continuous_periods(&[1024], 1);
    }

    #[test]
    fn reads_of_960_frames_pass_through() {
        assert_continuous_periods(&[960], 1);
    }

    #[test]
    fn mixed_and_tiny_reads_in_stereo() {
        assert_continuous_periods(&[441, 1024, 960, 1, 3000, 17], 2);
    }

    #[test]
    fn each_period_takes_its_time_from_the_read_it_starts_in() {
        // Two reads whose anchors disagree with a steady clock (the sound card runs fast):
        // the period starting in the second read follows the second anchor.
        let origin = Instant::now();
        let mut chunker = Rechunker::new(RATE, 1, 960);
        let mut out = Vec::new();
        chunker.push_s16le(&counting(0, 1000, 1), origin);
        assert_eq!(chunker.pop(&mut out), Some(origin));
        let second = origin + Duration::from_millis(19); // 1000 frames are 20.83 ms
        chunker.push_s16le(&counting(1000, 1000, 1), second);
        // Frame 960 came in the first read.
        assert_eq!(
            chunker.pop(&mut out),
            Some(origin + Duration::from_millis(20))
        );
        assert_eq!(out[0], 960);
        assert_eq!(chunker.missing_frames(), 960 - 80);
        // Frame 1920 came in the second read, 920 frames after its first.
        chunker.push_s16le(&counting(2000, 880, 1), second + Duration::from_millis(21));
        assert_eq!(
            chunker.pop(&mut out),
            Some(second + frames_to_duration(920, RATE))
        );
        assert_eq!(out[0], 1920);
        assert_eq!(chunker.missing_frames(), 960);
    }

    #[test]
    fn nothing_comes_out_before_a_whole_period() {
        let mut chunker = Rechunker::new(RATE, 2, 960);
        let mut out = vec![7; 3];
        assert_eq!(chunker.missing_frames(), 960);
        chunker.push_s16le(&counting(0, 959, 2), Instant::now());
        assert_eq!(chunker.pop(&mut out), None);
        assert_eq!(out, [7; 3]);
        assert_eq!(chunker.missing_frames(), 1);
        // A partial frame (odd byte, or one channel of two) is ignored.
        chunker.push_s16le(&[1, 2, 3], Instant::now());
        assert_eq!(chunker.missing_frames(), 1);
    }

    #[test]
    fn clear_drops_the_partial_period_after_an_overrun() {
        let origin = Instant::now();
        let mut chunker = Rechunker::new(RATE, 1, 960);
        chunker.push_s16le(&counting(0, 500, 1), origin);
        chunker.clear();
        assert_eq!(chunker.missing_frames(), 960);
        let later = origin + Duration::from_millis(100);
        chunker.push_s16le(&counting(5000, 960, 1), later);
        let mut out = Vec::new();
        assert_eq!(chunker.pop(&mut out), Some(later));
        assert_eq!(out[0], 5000);
    }

    #[test]
    fn little_endian_samples_are_decoded() {
        let mut chunker = Rechunker::new(RATE, 1, 2);
        chunker.push_s16le(&[0x01, 0x00, 0xFF, 0xFF], Instant::now());
        let mut out = Vec::new();
        chunker.pop(&mut out);
        assert_eq!(out, [1, -1]);
        chunker.push_s16le(&[0x00, 0x80, 0xFF, 0x7F], Instant::now());
        chunker.pop(&mut out);
        assert_eq!(out, [i16::MIN, i16::MAX]);
    }

    #[test]
    fn delay_moves_the_first_frame_back() {
        let now = Instant::now();
        // 960 frames just read, 480 more waiting: the first was captured 30 ms ago.
        let first = first_frame_time(now, 480, 960, RATE);
        assert_eq!(now.duration_since(first), Duration::from_millis(30));
        // No delay: one read's length ago.
        let first = first_frame_time(now, 0, 960, RATE);
        assert_eq!(now.duration_since(first), Duration::from_millis(20));
        // Negative delays count as none.
        assert_eq!(first_frame_time(now, -100, 960, RATE), first);
        // 44.1 kHz arithmetic is exact to the nanosecond.
        let first = first_frame_time(now, 0, 441, 44_100);
        assert_eq!(now.duration_since(first), Duration::from_millis(10));
    }

    #[test]
    fn durations_of_frames() {
        assert_eq!(frames_to_duration(960, 48_000), Duration::from_millis(20));
        assert_eq!(frames_to_duration(1, 48_000), Duration::from_nanos(20_833));
        assert_eq!(
            frames_to_duration(48_000 * 3600, 48_000),
            Duration::from_secs(3600)
        );
    }
}
