//! The audio capture-and-encode thread: PCM periods → 20 ms Opus frames.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use onair_config::Audio;
use onair_hal::synthetic::Tone;
use onair_hal::{AudioFrame, AudioSource};
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use super::{AudioUnit, MediaStats, RtpClock, running};

/// WebRTC's Opus runs at 48 kHz; 20 ms frames are what every browser expects by default.
pub const SAMPLE_RATE: u32 = 48_000;
const FRAME_MS: u32 = 20;
const FRAME_SAMPLES: usize = (SAMPLE_RATE / 1000 * FRAME_MS) as usize;
/// Largest Opus packet (RFC 6716 §3.2.1 bounds a 20 ms frame well below this).
const MAX_PACKET: usize = 1500;

/// A source and its encoder, opened but not yet running.
pub struct AudioThread {
    source: Box<dyn AudioSource>,
    encoder: opus::Encoder,
    channels: usize,
    clock: RtpClock,
    stats: Arc<MediaStats>,
}

impl AudioThread {
    /// Opens the configured microphone (or test tone) and an Opus encoder for it.
    pub fn open(audio: &Audio, clock: RtpClock, stats: Arc<MediaStats>) -> anyhow::Result<Self> {
        let source: Box<dyn AudioSource> = match audio.source.as_str() {
            "test" => Box::new(Tone::new(SAMPLE_RATE, 1, FRAME_MS, 440.0)),
            other => anyhow::bail!(
                "audio.source = {other:?}: capture from ALSA devices is not supported by this build yet; use \"test\" or set audio.enabled = false"
            ),
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
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, channels, opus::Application::Audio)
            .context("starting the Opus encoder")?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(audio.bitrate_kbps as i32 * 1000))
            .context("setting the Opus bitrate")?;
        info!(source = %source.describe(), "audio: {} Hz, {} channel(s) → Opus at {} kb/s", format.rate, format.channels, audio.bitrate_kbps);
        Ok(AudioThread {
            source,
            encoder,
            channels: usize::from(format.channels),
            clock,
            stats,
        })
    }

    /// Runs capture → encode on a thread of its own until `stop`.
    pub fn spawn(
        self,
        tx: broadcast::Sender<Arc<AudioUnit>>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("onair-audio".into())
            .spawn(move || self.run(&tx, &stop))
    }

    fn run(mut self, tx: &broadcast::Sender<Arc<AudioUnit>>, stop: &AtomicBool) {
        let mut period = AudioFrame::new();
        let mut packet = vec![0u8; MAX_PACKET];
        let mut failures = 0u32;
        while running(stop) {
            if let Err(err) = self.source.read_period(&mut period) {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(50) {
                    warn!(failures, "audio capture: {err}");
                }
                std::thread::sleep(Duration::from_millis(20 * u64::from(failures.min(50))));
                continue;
            }
            failures = 0;
            if period.samples.len() != FRAME_SAMPLES * self.channels {
                warn!(
                    got = period.samples.len(),
                    "audio capture: period of unexpected length dropped"
                );
                continue;
            }
            match self.encoder.encode(&period.samples, &mut packet) {
                Ok(len) => {
                    self.stats.record_audio();
                    let _ = tx.send(Arc::new(AudioUnit {
                        payload: Bytes::copy_from_slice(&packet[..len]),
                        rtp_timestamp: self.clock.audio(period.captured),
                    }));
                }
                Err(err) => error!("Opus encoder: {err}"),
            }
        }
    }
}
