//! Microphones through ALSA, delivered as 20 ms periods of 48 kHz signed 16-bit PCM.
//!
//! [`AlsaMicrophone::open`] opens a capture PCM by name (`default`, `hw:1,0`,
//! `plughw:CARD=Device,DEV=0`, …) for interleaved S16_LE at exactly 48 kHz, mono if the
//! device can, else stereo, and asks for a hardware period of 960 frames (20 ms) in a buffer
//! of eight. The daemon's Opus encoder takes exactly that, so whatever period the hardware
//! settles on, reads go through a [`Rechunker`](chunk::Rechunker) and
//! [`AudioSource::read_period`] always returns exactly 960 frames, stamped with the capture
//! time of its first frame on the monotonic clock (see [`chunk`]).
//!
//! `hw:` devices take only what the hardware does; a USB microphone that captures only 44.1
//! kHz or only four channels fails to open with a message saying so, and the `plughw:` name
//! of the same device converts in alsa-lib.
//!
//! **Recovery** ([`decide`]): an overrun (`EPIPE`, reads were late and the buffer filled)
//! prepares the stream and reads on; a suspend (`ESTRPIPE`) resumes, or prepares when the
//! driver cannot resume. Either way the partial period is dropped so that every period is
//! continuous sound, and [`AlsaMicrophone::recoveries`] counts them. An unplugged device
//! (`ENODEV`) is [`HalError::Gone`]; other failures are [`HalError::Read`].

mod chunk;
mod decide;

use std::time::{Duration, Instant};

use ::alsa::pcm::{Access, Format, HwParams, PCM};
use ::alsa::{Direction, ValueOr};

use self::chunk::{Rechunker, first_frame_time};
use self::decide::{AfterResume, Recovery, after_resume, choose_channels, open_hint, recovery_for};
use crate::{AudioFormat, AudioFrame, AudioSource, HalError};

/// The rate the Opus encoder needs.
pub const RATE: u32 = 48_000;
/// 20 ms at 48 kHz: the Opus frame.
pub const PERIOD_FRAMES: u32 = 960;
/// Hardware periods in the buffer: 160 ms of slack for a capture thread that is late (a
/// capture buffer adds no latency; it only decides how late a read may be before an overrun).
const BUFFER_PERIODS: ::alsa::pcm::Frames = 8;
/// Recoveries in a row, with no successful read between them, that make a read error.
const MAX_RECOVERIES_IN_A_ROW: u32 = 5;
/// How long to wait for the hardware to wake up after a suspend, in steps of [`RESUME_WAIT`].
const RESUME_ATTEMPTS: u32 = 20;
const RESUME_WAIT: Duration = Duration::from_millis(100);

/// How often an [`AlsaMicrophone`] recovered from trouble since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recoveries {
    /// Overruns: reads came too late, audio was lost and the stream prepared again.
    pub overruns: u64,
    /// Resumes after the system was suspended.
    pub suspends: u64,
}

/// An ALSA capture device, open for 48 kHz S16_LE.
pub struct AlsaMicrophone {
    /// The device name as given, for errors.
    name: String,
    /// One line about the device and its settings, for logs.
    description: String,
    pcm: PCM,
    format: AudioFormat,
    /// Reads in, 960-frame periods out.
    chunker: Rechunker,
    /// Bytes of one read; kept to reuse its allocation.
    scratch: Vec<u8>,
    recoveries: Recoveries,
}

impl AlsaMicrophone {
    /// Opens the capture device `name` at 48 kHz, S16_LE, with `wanted_channels` (1 or 2)
    /// or, if `None`, mono if the device can and stereo otherwise. Capture starts with the
    /// first read.
    pub fn open(name: &str, wanted_channels: Option<u16>) -> Result<AlsaMicrophone, HalError> {
        let open_error = |reason: String| HalError::Open {
            device: name.to_string(),
            reason,
        };
        let alsa_error = |what: &str, error: ::alsa::Error| {
            let hint = open_hint(error.errno())
                .map(|hint| format!(" ({hint})"))
                .unwrap_or_default();
            open_error(format!("{what}: {error}{hint}"))
        };
        let pcm = PCM::new(name, Direction::Capture, false)
            .map_err(|e| alsa_error("opening for capture", e))?;
        let channels;
        {
            let hw = HwParams::any(&pcm).map_err(|e| alsa_error("reading its parameters", e))?;
            hw.set_access(Access::RWInterleaved)
                .map_err(|e| alsa_error("interleaved read access", e))?;
            hw.set_format(Format::S16LE)
                .map_err(|e| alsa_error("S16_LE samples (a plughw: device converts)", e))?;
            hw.set_rate(RATE, ValueOr::Nearest)
                .map_err(|e| alsa_error("48000 Hz (a plughw: device resamples)", e))?;
            channels = choose_channels(wanted_channels, |n| hw.test_channels(u32::from(n)).is_ok())
                .map_err(open_error)?;
            hw.set_channels(u32::from(channels))
                .map_err(|e| alsa_error("setting the channels", e))?;
            let period = hw
                .set_period_size_near(PERIOD_FRAMES as ::alsa::pcm::Frames, ValueOr::Nearest)
                .map_err(|e| alsa_error("setting the period size", e))?;
            hw.set_buffer_size_near(period * BUFFER_PERIODS)
                .map_err(|e| alsa_error("setting the buffer size", e))?;
            pcm.hw_params(&hw)
                .map_err(|e| alsa_error("applying the parameters", e))?;
        }
        let (period, buffer) = pcm
            .hw_params_current()
            .and_then(|hw| Ok((hw.get_period_size()?, hw.get_buffer_size()?)))
            .map_err(|e| alsa_error("reading back the parameters", e))?;
        let description = format!(
            "ALSA {name}{}: {RATE} Hz {}, hardware period {period} frames, buffer {buffer}",
            card_name(&pcm)
                .map(|card| format!(" ({card})"))
                .unwrap_or_default(),
            if channels == 1 { "mono" } else { "stereo" },
        );
        Ok(AlsaMicrophone {
            name: name.to_string(),
            description,
            pcm,
            format: AudioFormat {
                rate: RATE,
                channels,
                period_frames: PERIOD_FRAMES,
            },
            chunker: Rechunker::new(RATE, channels, PERIOD_FRAMES as usize),
            scratch: Vec::new(),
            recoveries: Recoveries::default(),
        })
    }

    /// How often the stream recovered from overruns and suspends since it was opened.
    pub fn recoveries(&self) -> Recoveries {
        self.recoveries
    }

    fn read_error(&self, reason: String) -> HalError {
        HalError::Read {
            device: self.name.clone(),
            reason,
        }
    }

    /// Gets the stream going again after `error`, or says why it cannot.
    fn recover(&mut self, error: ::alsa::Error) -> Result<(), HalError> {
        match recovery_for(error.errno()) {
            Recovery::Retry => Ok(()),
            Recovery::Prepare => {
                self.recoveries.overruns += 1;
                self.chunker.clear();
                tracing::debug!(device = %self.name, %error, "overrun; preparing the stream");
                self.prepare()
            }
            Recovery::Resume => {
                self.recoveries.suspends += 1;
                self.chunker.clear();
                tracing::debug!(device = %self.name, "suspended; resuming the stream");
                for _ in 0..RESUME_ATTEMPTS {
                    let result = self.pcm.resume().map_err(|e| e.errno());
                    match after_resume(result) {
                        AfterResume::Done => return Ok(()),
                        AfterResume::Wait => std::thread::sleep(RESUME_WAIT),
                        AfterResume::Prepare => break,
                    }
                }
                self.prepare()
            }
            Recovery::Gone => Err(HalError::Gone {
                device: self.name.clone(),
                reason: error.to_string(),
            }),
            Recovery::Fail => Err(self.read_error(error.to_string())),
        }
    }

    fn prepare(&mut self) -> Result<(), HalError> {
        self.pcm
            .prepare()
            .map_err(|error| match recovery_for(error.errno()) {
                Recovery::Gone => HalError::Gone {
                    device: self.name.clone(),
                    reason: error.to_string(),
                },
                _ => self.read_error(format!("preparing after an overrun: {error}")),
            })
    }
}

/// The sound card's name, when the PCM is on one (not for e.g. a PulseAudio PCM).
fn card_name(pcm: &PCM) -> Option<String> {
    let info = pcm.info().ok()?;
    let card = ::alsa::Card::new(info.get_card());
    let card_name = card.get_name().ok();
    let device_name = info.get_name().ok().map(str::to_string);
    match (card_name, device_name) {
        (Some(card), Some(device)) if !device.is_empty() && device != card => {
            Some(format!("{card}: {device}"))
        }
        (Some(card), _) => Some(card),
        (None, device) => device.filter(|d| !d.is_empty()),
    }
}

impl AudioSource for AlsaMicrophone {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn read_period(&mut self, frame: &mut AudioFrame) -> Result<(), HalError> {
        let frame_bytes = 2 * usize::from(self.format.channels);
        let mut recoveries_in_a_row = 0;
        loop {
            if let Some(captured) = self.chunker.pop(&mut frame.samples) {
                frame.captured = captured;
                return Ok(());
            }
            // Read no more than the period lacks: the rest stays in ALSA's buffer, where
            // the next read finds it, and nothing sits here for longer than it must.
            let bytes = self.chunker.missing_frames() * frame_bytes;
            self.scratch.resize(bytes, 0);
            let read = self.pcm.io_bytes().readi(&mut self.scratch);
            match read {
                Ok(frames) => {
                    // `Frames` is a C long: i64 on 64-bit boards, i32 on armhf.
                    #[allow(clippy::unnecessary_cast)]
                    let delay = self.pcm.delay().unwrap_or(0) as i64;
                    let first = first_frame_time(Instant::now(), delay, frames, RATE);
                    self.chunker
                        .push_s16le(&self.scratch[..frames * frame_bytes], first);
                    recoveries_in_a_row = 0;
                }
                Err(error) => {
                    recoveries_in_a_row += 1;
                    if recoveries_in_a_row > MAX_RECOVERIES_IN_A_ROW {
                        return Err(self.read_error(format!(
                            "{MAX_RECOVERIES_IN_A_ROW} recoveries in a row did not help; the last error: {error}"
                        )));
                    }
                    self.recover(error)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_missing_card_names_the_device_and_says_why() {
        // No machine has a 100th sound card; the error must come back, not a panic.
        let error = AlsaMicrophone::open("hw:99,0", None)
            .err()
            .expect("there is no card 99");
        assert!(matches!(error, HalError::Open { .. }), "{error}");
        assert_eq!(error.device(), "hw:99,0");
        let text = error.to_string();
        assert!(
            text.starts_with("hw:99,0: cannot open: opening for capture: "),
            "{text}"
        );
    }

    #[test]
    fn opening_a_name_alsa_does_not_know_is_an_open_error() {
        let error = AlsaMicrophone::open("onair_no_such_pcm", Some(1))
            .err()
            .expect("unknown PCM");
        assert!(matches!(error, HalError::Open { .. }), "{error}");
        assert!(error.to_string().contains("onair_no_such_pcm"), "{error}");
    }

    #[test]
    fn the_format_is_what_the_encoder_needs() {
        // The constants the daemon's Opus encoder relies on.
        assert_eq!(RATE, 48_000);
        assert_eq!(PERIOD_FRAMES, RATE / 50);
    }
}
