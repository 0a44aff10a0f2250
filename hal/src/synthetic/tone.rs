//! The test tone: a sine wave that dips once a second, paced like a sound card.
//!
//! A tone at a known frequency and level lets the far end check that audio arrives, is not
//! pitched up or down by a rate mismatch, and is not clipped or attenuated. The phase runs on
//! across periods so the tone has no clicks even when periods are skipped.
//!
//! For the last 200 ms of every second it is 18 dB quieter (with 10 ms ramps). A perfectly
//! steady tone is what a voice activity detector learns to call background noise, and Opus
//! then codes no in-band FEC for it (see onaird's `media::fec`); the beat makes it sound like
//! a signal, as speech does. The dip also marks whole seconds for whoever listens.

use super::pace::Pacer;
use crate::{AudioFormat, AudioFrame, AudioSource, HalError};

/// Peak level of the tone relative to full scale, in dB.
const LEVEL_DBFS: f64 = -12.0;

/// How much quieter the dip at the end of each second is, in dB.
const DIP_DB: f64 = -18.0;

/// The dip starts this far into each second (s) and lasts to its end.
const DIP_FROM_S: f64 = 0.8;

/// The level moves into and out of the dip over this long (s).
const RAMP_S: f64 = 0.01;

/// A synthetic microphone playing a sine wave at about -12 dBFS, paced in real time.
///
/// Period `n` is due `n * period` after the first read; a reader that falls behind gets the
/// latest period, not a burst.
#[derive(Debug, Clone)]
pub struct Tone {
    format: AudioFormat,
    frequency_hz: f32,
    /// Peak amplitude in sample units.
    amplitude: f64,
    /// Position in the current cycle, in cycles: `0.0..1.0`.
    phase: f64,
    /// Cycles per sample.
    phase_step: f64,
    /// Samples (per channel) rendered so far, modulo the rate: where in the second we are.
    position: u64,
    pacer: Pacer,
}

impl Tone {
    /// A tone of `frequency_hz` at `rate` samples per second on `channels` interleaved
    /// channels (the same signal on each), delivered in periods of `period_ms` milliseconds.
    /// The caller validates the values; zeros count as one. The usual choice is
    /// `Tone::new(48000, 1, 20, 440.0)`: 960 frames per period.
    pub fn new(rate: u32, channels: u16, period_ms: u32, frequency_hz: f32) -> Tone {
        let rate = rate.max(1);
        let period_frames = (u64::from(rate) * u64::from(period_ms) / 1000).max(1);
        let period_frames = u32::try_from(period_frames).unwrap_or(u32::MAX);
        Tone {
            format: AudioFormat {
                rate,
                channels: channels.max(1),
                period_frames,
            },
            frequency_hz,
            amplitude: f64::from(i16::MAX) * 10f64.powf(LEVEL_DBFS / 20.0),
            phase: 0.0,
            phase_step: f64::from(frequency_hz) / f64::from(rate),
            position: 0,
            // Paced by whole sample periods so the pacing and the sample count never drift.
            pacer: Pacer::new(u64::from(period_frames), u64::from(rate)),
        }
    }

    /// Writes the next period of the wave into `samples` (resized; allocation reused).
    fn render(&mut self, samples: &mut Vec<i16>) {
        let channels = usize::from(self.format.channels);
        samples.clear();
        samples.reserve(self.format.period_frames as usize * channels);
        let rate = u64::from(self.format.rate);
        for _ in 0..self.format.period_frames {
            let gain = envelope(self.position as f64 / rate as f64);
            let wave = (std::f64::consts::TAU * self.phase).sin();
            let sample = (self.amplitude * gain * wave).round() as i16;
            samples.extend(std::iter::repeat_n(sample, channels));
            self.phase = (self.phase + self.phase_step).rem_euclid(1.0);
            self.position = (self.position + 1) % rate;
        }
    }
}

/// The gain (0 to 1) at `second` (0 to 1) into a second: 1, then the dip, with ramps into
/// and out of it.
fn envelope(second: f64) -> f64 {
    let dip = 10f64.powf(DIP_DB / 20.0);
    let (from, ramp) = (DIP_FROM_S, RAMP_S);
    // How far into the dip, 0 (full level) to 1 (all the way down).
    let depth = if second < from {
        0.0
    } else if second < 1.0 - ramp {
        ((second - from) / ramp).min(1.0)
    } else {
        (1.0 - second) / ramp
    };
    1.0 - (1.0 - dip) * depth
}

impl AudioSource for Tone {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn describe(&self) -> String {
        format!("test tone {} Hz", self.frequency_hz)
    }

    fn read_period(&mut self, frame: &mut AudioFrame) -> Result<(), HalError> {
        let (_, captured) = self.pacer.wait();
        self.render(&mut frame.samples);
        frame.captured = captured;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One second of the default tone, channel 0 only.
    fn one_second(tone: &mut Tone) -> Vec<i16> {
        let channels = usize::from(tone.format.channels);
        let periods = tone.format.rate / tone.format.period_frames;
        let mut all = Vec::new();
        let mut period = Vec::new();
        for _ in 0..periods {
            tone.render(&mut period);
            all.extend(period.iter().step_by(channels));
        }
        all
    }

    #[test]
    fn default_format_is_960_frame_periods() {
        let tone = Tone::new(48_000, 1, 20, 440.0);
        let format = tone.format();
        assert_eq!(format.rate, 48_000);
        assert_eq!(format.channels, 1);
        assert_eq!(format.period_frames, 960);
        assert_eq!(tone.describe(), "test tone 440 Hz");
    }

    #[test]
    fn frequency_is_right() {
        for frequency in [440.0, 1000.0, 97.5] {
            let mut tone = Tone::new(48_000, 1, 20, frequency);
            let samples = one_second(&mut tone);
            assert_eq!(samples.len(), 48_000);
            let rising = samples
                .windows(2)
                .filter(|pair| pair[0] < 0 && pair[1] >= 0)
                .count() as f32;
            assert!(
                (rising - frequency).abs() <= 1.0,
                "{frequency} Hz: {rising}"
            );
        }
    }

    /// RMS of `samples` in dB relative to full scale.
    fn rms_db(samples: &[i16]) -> f64 {
        let mean_square =
            samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64;
        20.0 * (mean_square.sqrt() / f64::from(i16::MAX)).log10()
    }

    #[test]
    fn level_is_minus_12_dbfs_then_18_db_lower_for_the_last_200_ms_of_each_second() {
        let mut tone = Tone::new(48_000, 1, 20, 440.0);
        let samples = one_second(&mut tone);
        let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        let peak_db = 20.0 * (f64::from(peak) / f64::from(i16::MAX)).log10();
        assert!((peak_db + 12.0).abs() < 0.1, "peak {peak_db} dBFS");
        // A sine's RMS is its peak / sqrt(2): -15 dB below full-scale peak.
        let loud = rms_db(&samples[..38_400]);
        assert!((loud + 15.01).abs() < 0.1, "rms {loud} dB");
        let dip = rms_db(&samples[38_400 + 480..48_000 - 480]);
        assert!((dip + 33.01).abs() < 0.1, "rms in the dip {dip} dB");
        // The next second starts at full level again.
        let next = one_second(&mut tone);
        assert!((rms_db(&next[..9_600]) + 15.01).abs() < 0.1);
    }

    #[test]
    fn phase_is_continuous_across_periods() {
        let mut tone = Tone::new(48_000, 1, 20, 440.0);
        let samples = one_second(&mut tone);
        // The largest step of a sampled sine is about amplitude * 2π f / rate.
        let limit = (tone.amplitude * std::f64::consts::TAU * 440.0 / 48_000.0).ceil() as i32 + 1;
        for pair in samples.windows(2) {
            assert!((i32::from(pair[1]) - i32::from(pair[0])).abs() <= limit);
        }
    }

    #[test]
    fn channels_carry_the_same_signal() {
        let mut tone = Tone::new(48_000, 2, 10, 440.0);
        let mut frame = AudioFrame::new();
        tone.read_period(&mut frame)
            .expect("synthetic reads cannot fail");
        assert_eq!(frame.samples.len(), 2 * 480);
        for pair in frame.samples.chunks(2) {
            assert_eq!(pair[0], pair[1]);
        }
    }

    #[test]
    fn reads_paced_periods() {
        let mut tone = Tone::new(48_000, 1, 1, 440.0);
        let mut frame = AudioFrame::new();
        tone.read_period(&mut frame)
            .expect("synthetic reads cannot fail");
        let first = frame.captured;
        tone.read_period(&mut frame)
            .expect("synthetic reads cannot fail");
        assert_eq!(frame.samples.len(), 48);
        // Paced: the second period is captured at least one period (1 ms) after the first.
        // A lower bound only, so a loaded machine cannot make it fail.
        assert!(frame.captured.duration_since(first) >= std::time::Duration::from_millis(1));
    }
}
