//! The audio capture-and-encode thread: PCM periods → 20 ms Opus frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use bytes::Bytes;
use onair_config::Audio;
use onair_hal::alsa::AlsaMicrophone;
use onair_hal::synthetic::Tone;
use onair_hal::{AudioFrame, AudioSource, HalError};
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use super::fec::LossReports;
use super::input::Supervised;
use super::{AudioUnit, LogThrottle, MediaStats, RtpClock};
use crate::lifecycle::{Lifecycle, Stop};

/// WebRTC's Opus runs at 48 kHz; 20 ms frames are what every browser expects by default.
pub const SAMPLE_RATE: u32 = 48_000;
const FRAME_MS: u32 = 20;
const FRAME_SAMPLES: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;
/// Largest Opus packet (RFC 6716 §3.2.1 bounds a 20 ms frame well below this).
const MAX_PACKET: usize = 1500;

/// A source and its encoder, opened but not yet running.
pub struct AudioThread {
    input: Supervised<dyn AudioSource>,
    encoder: opus::Encoder,
    channels: usize,
    clock: RtpClock,
    stats: Arc<MediaStats>,
    /// While set, periods are silenced before encoding (see [`silence`]).
    privacy: Arc<AtomicBool>,
    /// What the viewers lose, for the encoder's in-band FEC (see [`super::fec`]).
    loss: Arc<LossReports>,
}

/// How often (in periods: once a second) the encoder's expected loss follows the viewers'.
const FOLLOW_LOSS_EVERY: u32 = 1000 / FRAME_MS;

/// Opens `audio.source`: the test tone, or an ALSA capture device by name. `channels` pins
/// the channel count when reopening, because the encoder was made for it.
fn open_source(name: &str, channels: Option<u16>) -> Result<Box<dyn AudioSource>, HalError> {
    match name {
        "test" => Ok(Box::new(Tone::new(
            SAMPLE_RATE,
            channels.unwrap_or(1),
            FRAME_MS,
            440.0,
        ))),
        device => Ok(Box::new(AlsaMicrophone::open(device, channels)?)),
    }
}

impl AudioThread {
    /// Opens the configured microphone (or test tone) and an Opus encoder for it.
    /// `Ok(None)`: the microphone is missing and `audio.required` is false, so the camera
    /// broadcasts without sound.
    pub fn open(
        audio: &Audio,
        clock: RtpClock,
        stats: Arc<MediaStats>,
    ) -> anyhow::Result<Option<Self>> {
        let source = match open_source(&audio.source, None) {
            Ok(source) => source,
            Err(err) if audio.required => {
                return Err(err)
                    .context("audio.required = true and the microphone cannot be opened");
            }
            Err(err) => {
                warn!(
                    "{err}; broadcasting without audio (set audio.required = true to refuse to start)"
                );
                return Ok(None);
            }
        };
        let format = source.format();
        anyhow::ensure!(
            format.rate == SAMPLE_RATE && format.period_frames as usize == FRAME_SAMPLES,
            "{}: delivers {} Hz in periods of {} frames; the encoder needs {SAMPLE_RATE} Hz in {FRAME_SAMPLES}",
            source.describe(),
            format.rate,
            format.period_frames
        );
        let channels = match format.channels {
            1 => opus::Channels::Mono,
            2 => opus::Channels::Stereo,
            n => anyhow::bail!(
                "{}: {n} channels; only 1 or 2 are supported",
                source.describe()
            ),
        };
        let encoder = opus_encoder(channels, audio.bitrate_kbps)?;
        info!(source = %source.describe(), "audio: {} Hz, {} channel(s) → Opus at {} kb/s", format.rate, format.channels, audio.bitrate_kbps);
        let name = source.describe();
        let device = audio.source.clone();
        let pinned = Some(format.channels);
        Ok(Some(AudioThread {
            input: Supervised::new(name, Some(source), move || open_source(&device, pinned)),
            encoder,
            channels: usize::from(format.channels),
            clock,
            stats,
            privacy: Arc::default(),
            loss: Arc::default(),
        }))
    }

    /// Encodes silence instead of the microphone while `privacy` is set.
    pub fn with_privacy(mut self, privacy: Arc<AtomicBool>) -> Self {
        self.privacy = privacy;
        self
    }

    /// Protects against the loss viewers report in `loss`.
    pub fn with_loss_reports(mut self, loss: Arc<LossReports>) -> Self {
        self.loss = loss;
        self
    }

    /// Runs capture → encode on a thread of its own until the stop.
    pub fn spawn(
        self,
        tx: broadcast::Sender<Arc<AudioUnit>>,
        lifecycle: &Lifecycle,
    ) -> std::io::Result<()> {
        lifecycle.thread("onair-audio", move |stop| self.run(&tx, &stop))
    }

    fn run(mut self, tx: &broadcast::Sender<Arc<AudioUnit>>, stop: &Stop) {
        let mut period = AudioFrame::new();
        let mut packet = vec![0u8; MAX_PACKET];
        let mut timeline = AudioTimeline::default();
        let mut bad_periods = LogThrottle::new(50);
        let mut encode_failures = LogThrottle::new(50);
        let mut expected_loss = 0;
        let mut periods = 0u32;
        while !stop.is_stopped() {
            let Some(source) = self.input.get(stop) else {
                continue;
            };
            if let Err(err) = source.read_period(&mut period) {
                self.input.failed(err, stop);
                continue;
            }
            self.input.succeeded();
            if period.samples.len() != FRAME_SAMPLES * self.channels {
                if let Some(count) = bad_periods.hit() {
                    warn!(
                        count,
                        got = period.samples.len(),
                        "audio capture: period of unexpected length dropped"
                    );
                }
                continue;
            }
            if self.privacy.load(Ordering::Relaxed) {
                silence(&mut period.samples);
            }
            periods = periods.wrapping_add(1);
            if periods.is_multiple_of(FOLLOW_LOSS_EVERY) {
                self.follow_loss(&mut expected_loss);
            }
            match self.encoder.encode(&period.samples, &mut packet) {
                Ok(len) => {
                    encode_failures.reset();
                    self.stats.record_audio();
                    let _ = tx.send(Arc::new(AudioUnit {
                        payload: Bytes::copy_from_slice(&packet[..len]),
                        rtp_timestamp: timeline.next(self.clock.audio(period.captured)),
                    }));
                }
                Err(err) => {
                    if let Some(count) = encode_failures.hit() {
                        error!(count, "Opus encoder: {err}");
                    }
                }
            }
        }
    }
}

/// The Opus encoder: `kbps`, in-band FEC on (it costs nothing until viewers report loss,
/// see [`super::fec`]).
fn opus_encoder(channels: opus::Channels, kbps: u32) -> anyhow::Result<opus::Encoder> {
    let mut encoder = opus::Encoder::new(SAMPLE_RATE, channels, opus::Application::Audio)
        .context("starting the Opus encoder")?;
    encoder
        .set_bitrate(opus::Bitrate::Bits(kbps as i32 * 1000))
        .context("setting the Opus bitrate")?;
    encoder
        .set_inband_fec(true)
        .context("turning on Opus in-band FEC")?;
    Ok(encoder)
}

impl AudioThread {
    /// Tells the encoder the loss the viewers now report, if it changed from `expected`.
    fn follow_loss(&mut self, expected: &mut u8) {
        let now = self.loss.expected_percent(std::time::Instant::now());
        if now == *expected {
            return;
        }
        match self.encoder.set_packet_loss_perc(i32::from(now)) {
            Ok(()) => {
                self.loss.protect(now);
                info!(
                    "audio: viewers lose up to {now} % of packets; Opus in-band FEC {}",
                    if now > 0 { "protects for it" } else { "off" }
                );
                *expected = now;
            }
            Err(err) => warn!("Opus encoder: cannot expect {now} % loss: {err}"),
        }
    }
}

/// Privacy: the period becomes digital silence. The stream goes on (viewers' players keep
/// their clock and jitter buffer), Opus just spends almost nothing on it.
pub fn silence(samples: &mut [i16]) {
    samples.fill(0);
}

/// RTP timestamps for consecutive Opus frames.
///
/// Capture times carry the jitter of whoever woke the thread; stamping each frame with its
/// own would make consecutive timestamps differ by 960 ± a few dozen, which a receiver hears
/// as tiny gaps and overlaps. So frames follow each other exactly 960 ticks apart, and the
/// timeline is re-anchored to the capture clock (which keeps lip sync) only when the two
/// drift more than a frame apart: after a dropped period, or at the start.
#[derive(Debug, Default)]
struct AudioTimeline {
    next: Option<u32>,
}

impl AudioTimeline {
    fn next(&mut self, from_clock: u32) -> u32 {
        let ts = match self.next {
            Some(next)
                if from_clock.wrapping_sub(next).cast_signed().unsigned_abs()
                    <= FRAME_SAMPLES as u32 =>
            {
                next
            }
            _ => from_clock,
        };
        self.next = Some(ts.wrapping_add(FRAME_SAMPLES as u32));
        ts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_silences_the_period() {
        let mut tone = Tone::new(SAMPLE_RATE, 2, FRAME_MS, 440.0);
        let mut period = AudioFrame::new();
        tone.read_period(&mut period).unwrap();
        assert!(period.samples.iter().any(|&s| s != 0));
        silence(&mut period.samples);
        assert_eq!(period.samples.len(), FRAME_SAMPLES * 2);
        assert!(period.samples.iter().all(|&s| s == 0));
    }

    /// Encodes 3 s of a 440 Hz tone at 64 kb/s expecting `loss` per cent, 18 dB quieter for
    /// the last 200 ms of each second if `beat` (like the test tone; else steady), and counts
    /// the packets of the last 2 s from whose FEC alone the full-level frame before them
    /// comes back (decoded on its own: without FEC data that is concealment from nothing,
    /// silence), of how many.
    fn frames_restored_from_fec(loss: i32, beat: bool) -> (usize, usize) {
        let mut encoder = opus_encoder(opus::Channels::Mono, 64).unwrap();
        encoder.set_packet_loss_perc(loss).unwrap();
        let mut packet = vec![0u8; MAX_PACKET];
        let mut pcm = vec![0i16; FRAME_SAMPLES];
        let loud = |frame: usize| !beat || frame % 50 < 40;
        let (mut restored, mut of) = (0, 0);
        for frame in 0..150 {
            let gain = if loud(frame) { 0.25 } else { 0.25 / 8.0 };
            let samples: Vec<i16> = (0..FRAME_SAMPLES)
                .map(|i| {
                    let t = (frame * FRAME_SAMPLES + i) as f64 / f64::from(SAMPLE_RATE);
                    (gain * 32767.0 * (std::f64::consts::TAU * 440.0 * t).sin()) as i16
                })
                .collect();
            let len = encoder.encode(&samples, &mut packet).unwrap();
            if frame < 50 || !loud(frame - 1) {
                continue;
            }
            of += 1;
            let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
            let n = decoder.decode(&packet[..len], &mut pcm, true).unwrap();
            let sum: f64 = pcm[..n]
                .iter()
                .map(|&s| (f64::from(s) / 32768.0).powi(2))
                .sum();
            if (sum / n as f64).sqrt() > 0.05 {
                restored += 1;
            }
        }
        (restored, of)
    }

    #[test]
    fn packets_carry_the_frame_before_them_once_viewers_report_loss() {
        let (restored, of) = frames_restored_from_fec(10, true);
        assert!(restored * 10 >= of * 9, "10 % loss: {restored} of {of}");
        assert_eq!(frames_restored_from_fec(0, true).0, 0, "no loss, no FEC");
    }

    #[test]
    fn a_steady_tone_gets_no_fec_as_libopus_takes_it_for_background_noise() {
        assert_eq!(frames_restored_from_fec(20, false).0, 0);
    }

    #[test]
    fn timeline_is_exactly_one_frame_apart_despite_jitter() {
        let mut t = AudioTimeline::default();
        let jitter = [0i32, 37, -12, 55, -40, 8];
        let stamps: Vec<u32> = jitter
            .iter()
            .enumerate()
            .map(|(i, j)| t.next((1_000_000 + 960 * i as i64 + i64::from(*j)) as u32))
            .collect();
        assert!(
            stamps.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 960),
            "{stamps:?}"
        );
        assert_eq!(stamps[0], 1_000_000);
    }

    #[test]
    fn timeline_follows_the_clock_after_a_gap_and_across_wrap() {
        let mut t = AudioTimeline::default();
        let a = t.next(u32::MAX - 100);
        assert_eq!(t.next(a.wrapping_add(960)), a.wrapping_add(960));
        // Three periods lost: the clock jumped; follow it.
        let after_gap = a.wrapping_add(960 * 5 + 3);
        assert_eq!(t.next(after_gap), after_gap);
    }
}
