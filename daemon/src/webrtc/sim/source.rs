//! The camera and encoders of a simulation: every layer's pictures at the frame rate, at the
//! layer's bitrate, with IDRs when the encoder thread would make them (the same
//! [`KeyframePolicy`], the same mailboxes, a lower layer only while watched), and Opus-sized
//! audio every 20 ms.
//!
//! A picture is not a real H.264 slice but has the shape of one (SPS, PPS and an IDR slice,
//! or a non-IDR slice; cut into RTP payloads by the same packetizer) and says in its text
//! what it is: [`Stamp`]. A viewer that reads the stamps knows which pictures it could have
//! decoded: an IDR always, any other picture only right after its predecessor on its layer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

use crate::media::encoder::RTP_PAYLOAD_MTU;
use crate::media::keyframe::KeyframePolicy;
use crate::media::{AudioUnit, KeyframeReason, MediaHandle, RtpClock, VideoUnit};

/// As the encoder thread's.
const KEYFRAME_MIN_GAP: Duration = Duration::from_millis(500);
/// What the text of a picture says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub layer: usize,
    /// The picture's number on its layer (every picture the layer's encoder made).
    pub number: u64,
    /// When it was captured, from the start of the simulation.
    pub captured: Duration,
    pub keyframe: bool,
    /// Its size in bytes, Annex-B.
    pub size: usize,
}

impl Stamp {
    const TAG: &'static [u8] = b"onair-sim ";

    /// The access unit this stamp describes: `size` bytes of Annex-B.
    fn access_unit(&self) -> Vec<u8> {
        let text = format!(
            "onair-sim L{} N{} C{} S{};",
            self.layer,
            self.number,
            self.captured.as_micros(),
            self.size
        );
        let mut unit = Vec::with_capacity(self.size);
        if self.keyframe {
            unit.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40]);
            unit.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
            unit.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        } else {
            unit.extend_from_slice(&[0, 0, 0, 1, 0x41]);
        }
        unit.extend_from_slice(text.as_bytes());
        // Filler that can never look like a start code.
        unit.resize(self.size.max(unit.len()), b'.');
        unit
    }

    /// The stamp of a picture a viewer put together, if it is whole.
    pub fn read(frame: &[u8]) -> Option<Stamp> {
        let at = frame
            .windows(Self::TAG.len())
            .position(|w| w == Self::TAG)?;
        let keyframe = frame[..at].windows(5).any(|w| w == [0, 0, 0, 1, 0x65]);
        let text = &frame[at + Self::TAG.len()..];
        let end = text.iter().position(|b| *b == b';')?;
        let text = std::str::from_utf8(&text[..end]).ok()?;
        let mut fields = text.split(' ');
        let mut field =
            |key: char| -> Option<u64> { fields.next()?.strip_prefix(key)?.parse().ok() };
        let stamp = Stamp {
            layer: field('L')? as usize,
            number: field('N')?,
            captured: Duration::from_micros(field('C')?),
            size: field('S')? as usize,
            keyframe,
        };
        // Whole: as long as it was made (one start code may come back four bytes long).
        (frame.len() >= stamp.size && frame.len() <= stamp.size + 16).then_some(stamp)
    }
}

/// One layer's encoder.
struct Encoder {
    policy: KeyframePolicy,
    payloader: H264Payloader,
    /// Pictures made.
    made: u64,
    /// Bytes of a picture at the layer's bitrate.
    average: usize,
    /// Not encoding: nobody watches this lower layer.
    idle: bool,
}

/// The camera, the encoders and the microphone.
pub struct Source {
    media: MediaHandle,
    clock: RtpClock,
    start: Instant,
    encoders: Vec<Encoder>,
    frame_every: Duration,
    keyframe_every: Duration,
    next_picture: Instant,
    next_audio: Option<Instant>,
}

impl Source {
    pub fn new(media: MediaHandle, fps: u32, keyframe_every: Duration, start: Instant) -> Self {
        let encoders = media
            .layers()
            .iter()
            .map(|spec| Encoder {
                policy: KeyframePolicy::new(KEYFRAME_MIN_GAP, keyframe_every),
                payloader: H264Payloader::default(),
                made: 0,
                average: (spec.bitrate_kbps as usize * 1000 / 8) / fps as usize,
                idle: false,
            })
            .collect();
        Source {
            clock: media.rtp_clock(),
            next_audio: media.has_audio().then_some(start),
            media,
            start,
            encoders,
            frame_every: Duration::from_secs(1) / fps,
            keyframe_every,
            next_picture: start,
        }
    }

    /// When it next has something.
    pub fn next(&self) -> Instant {
        self.next_audio
            .map_or(self.next_picture, |audio| audio.min(self.next_picture))
    }

    /// Publishes what is due at `now`.
    pub fn run(&mut self, now: Instant) {
        if now >= self.next_picture {
            self.next_picture += self.frame_every;
            for layer in 0..self.encoders.len() {
                self.picture(layer, now);
            }
        }
        if let Some(at) = self.next_audio.filter(|at| now >= *at) {
            self.next_audio = Some(at + Duration::from_millis(20));
            if let Some(audio) = self.media.audio_sender() {
                let _ = audio.send(Arc::new(AudioUnit {
                    payload: Bytes::from(vec![0xfc; 160]),
                    rtp_timestamp: self.clock.audio(now),
                }));
            }
        }
    }

    fn picture(&mut self, layer: usize, now: Instant) {
        let (feed, keyframes) = self.media.layer_parts(layer);
        let encoder = &mut self.encoders[layer];
        if layer > 0 && !feed.watched() {
            if !encoder.idle {
                encoder.idle = true;
                feed.forget();
                encoder.policy.force(KeyframeReason::Start);
            }
            return;
        }
        encoder.idle = false;
        if let Some(reason) = keyframes.take() {
            encoder.policy.request(reason);
        }
        let keyframe = encoder.policy.decide(now).is_some();
        // IDRs cost about four pictures; the others share what is left of a period's bytes.
        let per_period =
            (self.keyframe_every.as_secs_f64() / self.frame_every.as_secs_f64()).max(5.0) as usize;
        let size = match keyframe {
            true => encoder.average * 4,
            false => encoder.average * (per_period - 4) / (per_period - 1),
        };
        let stamp = Stamp {
            layer,
            number: encoder.made,
            captured: now - self.start,
            keyframe,
            size,
        };
        encoder.made += 1;
        let access_unit = Bytes::from(stamp.access_unit());
        let payloads = encoder
            .payloader
            .payload(RTP_PAYLOAD_MTU, &access_unit)
            .expect("the packetizer takes any Annex-B");
        feed.publish(VideoUnit {
            access_unit,
            payloads,
            keyframe,
            rtp_timestamp: self.clock.video(now),
            private: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back_only_from_a_whole_picture() {
        for keyframe in [true, false] {
            let stamp = Stamp {
                layer: 1,
                number: 42,
                captured: Duration::from_micros(1_234_567),
                keyframe,
                size: 3000,
            };
            let unit = stamp.access_unit();
            assert_eq!(unit.len(), 3000);
            assert_eq!(Stamp::read(&unit), Some(stamp));
            assert_eq!(Stamp::read(&unit[..2000]), None);
        }
    }
}
