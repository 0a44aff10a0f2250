//! What turns a layer's pictures into H.264: one interface for every encoder.
//!
//! - [`H264Encoder`](super::h264::H264Encoder): openh264, in software, on every board;
//! - [`M2mEncoder`](super::m2m::M2mEncoder): a V4L2 memory-to-memory encoder (the Pi's
//!   bcm2835-codec at `/dev/video11`);
//! - [`Passthrough`](super::passthrough::Passthrough): the camera's own H.264, passed on.
//!
//! Every quality layer is a [`LayerEncoder`]: the same code for the top layer and the ones
//! below it. It makes its encoder for the size of the pictures it is given (and again when
//! that changes), asks for IDRs when its [`KeyframePolicy`] says so, cuts what comes out into
//! RTP payloads once and publishes them on the layer's [`VideoFeed`]. A passthrough camera's
//! H.264 goes through [`Passthrough`] and its privacy pictures through the configured
//! encoder; an encoder other than openh264 that fails at run time is replaced by openh264,
//! with an IDR, while viewers keep watching.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use std::path::PathBuf;

use onair_config::{Video, VideoEncoder};
use onair_hal::{PixelFormat, SharedPicture, VideoFormat};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tracing::{error, info};

use super::gop::VideoFeed;
use super::h264::{H264Encoder, H264Settings, profile_level_id};
use super::keyframe::{KeyframeMailbox, KeyframePolicy, KeyframeReason};
use super::layers::halve_i420;
use super::m2m::{self, Coded, Input, M2mEncoder, M2mSettings};
use super::passthrough::{self, Passthrough, nal_units};
use super::{Layer, LogThrottle, RtpClock, VideoDescription, VideoUnit};

/// Largest RTP payload: a 1200-byte packet (safe under every tunnel's MTU) minus the
/// 12-byte RTP header.
pub const RTP_PAYLOAD_MTU: usize = 1200 - 12;

/// Forced IDRs are at least this far apart, however many viewers ask (design note:
/// "coalesced, at most one per ~500 ms").
const KEYFRAME_MIN_GAP: Duration = Duration::from_millis(500);

/// One encoded access unit in Annex B form (start codes before every NAL unit).
#[derive(Debug, PartialEq, Eq)]
pub struct EncodedPicture<'a> {
    /// SPS, PPS (before an IDR) and the slices of one picture.
    pub annex_b: &'a [u8],
    /// Whether this picture is an IDR a decoder can start from.
    pub keyframe: bool,
}

/// Why an encoder could not take a picture or a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl From<openh264::Error> for EncodeError {
    fn from(err: openh264::Error) -> Self {
        EncodeError(format!("openh264: {err}"))
    }
}

/// An H.264 encoder of one layer's pictures.
pub trait Encoder: Send {
    /// Which kind it is (for `/api/status`, the SDP and the log).
    fn kind(&self) -> VideoEncoder;

    /// What it is, for the log: "openh264", "/dev/video11 (bcm2835-codec-encode)".
    fn describe(&self) -> String;

    /// What [`Self::encode`] takes: [`PixelFormat::I420`] pictures of the layer's size, or
    /// (passthrough) the camera's H.264.
    fn input(&self) -> PixelFormat {
        PixelFormat::I420
    }

    /// Encodes one picture; `force_idr` makes it an IDR with SPS and PPS in front (an
    /// encoder that cannot, a passthrough camera, ignores it). `None` when nothing came out
    /// for this picture (rate control skipped it, or the stream cannot be started yet).
    fn encode(
        &mut self,
        picture: &[u8],
        force_idr: bool,
        pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError>;

    /// Encodes the picture in a camera's buffer where it is (a memory-to-memory encoder
    /// made for [`Input::Imported`]); the others cannot.
    fn encode_shared(
        &mut self,
        picture: &SharedPicture,
        force_idr: bool,
        pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        let _ = (picture, force_idr, pts);
        Err(EncodeError(format!(
            "{} cannot take a camera's buffer",
            self.describe()
        )))
    }

    /// Changes the target bitrate from the next picture on.
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError>;

    /// Something else went out in between (privacy pictures from another encoder): the next
    /// picture this one sends must be an IDR. Encoders that can force one need nothing here.
    fn restart(&mut self) {}
}

/// Which encoder a layer makes for its pictures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// openh264, in software.
    Openh264,
    /// A V4L2 memory-to-memory H.264 encoder: its device node and what it is.
    M2m(PathBuf, String),
    /// Test only (`ONAIR_TEST_ENCODER_FAILS_AFTER`): openh264 that fails for good after this
    /// many pictures, as a hardware encoder that lost its device would; the layer then falls
    /// back to a new openh264.
    FailsAfter(u64),
}

impl Choice {
    /// What `video.encoder` and `video.encoder_device` come to on this board (the test-only
    /// fault if its variable is set), and why, for the log and `/api/status`. Passthrough
    /// cameras' privacy pictures are encoded like any camera's.
    pub fn resolve(video: &Video) -> (Choice, String) {
        if let Ok(Ok(after)) = std::env::var("ONAIR_TEST_ENCODER_FAILS_AFTER").map(|n| n.parse()) {
            return (Choice::FailsAfter(after), "fault injected".into());
        }
        let found = match (&video.encoder, &video.encoder_device) {
            (VideoEncoder::Openh264 | VideoEncoder::Passthrough, _) => {
                return (Choice::Openh264, "configured".into());
            }
            (_, Some(device)) => Ok((device.clone(), device.display().to_string())),
            (_, None) => m2m::find_encoder(Coded::H264),
        };
        let asked = match video.encoder {
            VideoEncoder::Auto => "video.encoder = \"auto\"",
            _ => "video.encoder = \"v4l2m2m\"",
        };
        match found {
            Ok((path, card)) => {
                let why = format!("{asked}: {} ({card})", path.display());
                (Choice::M2m(path, card), why)
            }
            Err(none) => (Choice::Openh264, format!("{asked}: {none}")),
        }
    }

    /// An encoder of pictures of `width`x`height` at `fps` that come as `input` says (only a
    /// memory-to-memory encoder takes a camera's buffers).
    fn make(
        &self,
        (width, height): (u32, u32),
        fps: u32,
        bitrate_kbps: u32,
        input: Input,
    ) -> Maker {
        let settings = H264Settings {
            width,
            height,
            fps,
            bitrate_kbps,
        };
        Ok(match self {
            Choice::Openh264 => Box::new(H264Encoder::new(settings)?),
            Choice::M2m(path, _) => Box::new(M2mEncoder::open(
                path,
                M2mSettings {
                    width,
                    height,
                    fps,
                    bitrate_kbps,
                    gop: 0,
                    coded: Coded::H264,
                    input,
                },
            )?),
            Choice::FailsAfter(after) => Box::new(FailsAfter {
                inner: H264Encoder::new(settings)?,
                left: *after,
            }),
        })
    }

    /// What the SDP offers for a stream this choice encodes: constrained baseline at the
    /// level that fits, which is also what a memory-to-memory encoder is asked for.
    pub fn describe(&self, format: VideoFormat, bitrate_kbps: u32, why: &str) -> VideoDescription {
        let (encoder, name) = match self {
            Choice::M2m(path, card) => (
                VideoEncoder::V4l2m2m,
                format!("{} ({card})", path.display()),
            ),
            _ => (VideoEncoder::Openh264, "openh264".to_owned()),
        };
        VideoDescription {
            encoder,
            encoder_detail: format!("{name}; {why}"),
            profile_level_id: Some(profile_level_id(
                format.width,
                format.height,
                format.fps,
                bitrate_kbps,
            )),
            width: format.width,
            height: format.height,
        }
    }
}

type Maker = Result<Box<dyn Encoder>, EncodeError>;

/// What a layer's encoder was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Made {
    size: (u32, u32),
    input: Input,
}

/// See [`Choice::FailsAfter`].
struct FailsAfter {
    inner: H264Encoder,
    left: u64,
}

impl Encoder for FailsAfter {
    fn kind(&self) -> VideoEncoder {
        VideoEncoder::Openh264
    }

    fn describe(&self) -> String {
        "openh264 with a fault injected (ONAIR_TEST_ENCODER_FAILS_AFTER)".into()
    }

    fn encode(
        &mut self,
        picture: &[u8],
        force_idr: bool,
        pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        self.left = self
            .left
            .checked_sub(1)
            .ok_or_else(|| EncodeError("injected fault: the device is gone".into()))?;
        Encoder::encode(&mut self.inner, picture, force_idr, pts)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        self.inner.set_bitrate(kbps)
    }
}

/// One picture from the camera (or the black one of privacy), for every layer.
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    /// I420, or the camera's H.264 access unit.
    pub data: &'a [u8],
    /// What `data` is: `pixel` is [`PixelFormat::I420`] or [`PixelFormat::H264`].
    pub format: VideoFormat,
    /// When it was captured.
    pub captured: Instant,
    /// The same picture where the camera captured it (not a privacy picture), for an encoder
    /// that reads it there; `data` may then be empty if no layer wanted its bytes.
    pub shared: Option<&'a SharedPicture>,
    /// It is a privacy picture.
    pub private: bool,
    /// Privacy was switched since the last picture: this one must start a new stream.
    pub privacy_switched: bool,
}

/// What a layer sent for one picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The access unit's size.
    pub bytes: usize,
    /// Why it is an IDR, if it is one.
    pub keyframe: Option<KeyframeReason>,
}

/// One quality layer's encoding; see the module documentation.
pub struct LayerEncoder {
    /// Layer number, 0 = top (for the log).
    index: usize,
    /// The layer's pictures are the camera's divided by this in each direction.
    divisor: u32,
    bitrate_kbps: u32,
    choice: Choice,
    /// The memory-to-memory encoder could not take the camera's buffers: it is given copies.
    import_refused: bool,
    /// Encodes the layer's pictures, made for this size and input.
    encoder: Option<(Box<dyn Encoder>, Made)>,
    /// Passes the camera's own H.264 on.
    camera: Passthrough,
    /// What the last picture sent was: switching between the two starts the other anew.
    last_input: Option<PixelFormat>,
    policy: KeyframePolicy,
    payloader: H264Payloader,
    halved: Vec<u8>,
    failures: LogThrottle,
    feed: Arc<VideoFeed>,
    keyframes: Arc<KeyframeMailbox>,
    clock: RtpClock,
    /// The top layer keeps what viewers are offered up to date.
    description: Option<Arc<RwLock<VideoDescription>>>,
}

impl LayerEncoder {
    /// Layer `index` of `layers` (each one half the size of the one above), encoded by
    /// `choice`, with an IDR at least every `keyframe_interval`.
    pub fn new(
        index: usize,
        layer: &Layer,
        choice: Choice,
        keyframe_interval: Duration,
        clock: RtpClock,
    ) -> Self {
        LayerEncoder {
            index,
            divisor: 1 << index.min(8),
            bitrate_kbps: layer.spec.bitrate_kbps,
            choice,
            import_refused: false,
            encoder: None,
            camera: Passthrough::new(),
            last_input: None,
            policy: KeyframePolicy::new(KEYFRAME_MIN_GAP, keyframe_interval),
            payloader: H264Payloader::default(),
            halved: Vec::new(),
            failures: LogThrottle::new(30),
            feed: layer.feed.clone(),
            keyframes: layer.keyframes.clone(),
            clock,
            description: None,
        }
    }

    /// The top layer updates `description` when its encoder changes or a camera's SPS
    /// says what its stream is.
    pub fn describing(mut self, description: Arc<RwLock<VideoDescription>>) -> Self {
        self.description = Some(description);
        self
    }

    /// Makes the encoder for pictures of `format` now rather than at the first picture, so
    /// one that cannot be made is known at start.
    /// An encoder other than openh264 that cannot be made is replaced by openh264 here too.
    pub fn prepare(&mut self, format: VideoFormat) -> Result<(), EncodeError> {
        if let Err(err) = self.encoder(format, Input::Copied) {
            if self.choice == Choice::Openh264 {
                return Err(err);
            }
            self.failed(err);
            self.encoder(format, Input::Copied)?;
        }
        Ok(())
    }

    /// Whether the next picture's bytes are needed here, or only the camera's buffer it is
    /// in (if the camera shares them): the top layer on a memory-to-memory encoder reads
    /// the buffer; a lower layer (halved) needs bytes while someone watches it.
    pub fn wants_bytes(&self) -> bool {
        match self.index {
            0 => !self.imports(),
            _ => self.feed.watched(),
        }
    }

    /// Whether the layer's encoder takes the camera's buffers.
    fn imports(&self) -> bool {
        self.divisor == 1 && matches!(self.choice, Choice::M2m(..)) && !self.import_refused
    }

    /// Encodes and publishes `picture` if this layer is encoded now: the top layer always,
    /// the ones below while someone watches them. What was sent, if anything.
    pub fn encode(&mut self, picture: &Picture) -> Option<Sent> {
        if self.index > 0 && !self.feed.watched() {
            self.idle();
            return None;
        }
        if let Some(reason) = self.keyframes.take() {
            self.policy.request(reason);
        }
        if picture.privacy_switched {
            self.policy.force(KeyframeReason::Privacy);
        }
        let input = picture.format.pixel;
        if self
            .last_input
            .replace(input)
            .is_some_and(|last| last != input)
        {
            self.restart();
        }
        let outcome = match input {
            PixelFormat::H264 => self.pass_on(picture),
            _ => self.encode_picture(picture),
        };
        match outcome {
            Ok(Some((annex_b, keyframe))) => self.publish(annex_b, keyframe, picture),
            Ok(None) => None,
            Err(err) => {
                self.failed(err);
                None
            }
        }
    }

    /// Changes the layer's bitrate from the next picture on.
    pub fn set_bitrate(&mut self, kbps: u32) {
        self.bitrate_kbps = kbps;
        if let Some((encoder, _)) = self.encoder.as_mut()
            && let Err(err) = encoder.set_bitrate(kbps)
        {
            self.failed(err);
        }
    }

    /// The next picture starts a new stream: an IDR, or a passthrough camera's next one.
    pub fn restart(&mut self) {
        self.policy.idr_not_sent(KeyframeReason::Start);
        self.camera.restart();
    }

    /// The camera went away: nobody may start from its last pictures.
    pub fn forget(&self) {
        self.feed.forget();
    }

    /// Nobody watches a lower layer: let go of its encoder and its kept GOP.
    fn idle(&mut self) {
        if self.encoder.take().is_some() {
            self.feed.forget();
            info!(
                layer = self.index,
                kbps = self.bitrate_kbps,
                "video: nobody on the layer; stopped encoding it"
            );
        }
    }

    /// The encoder for this layer's pictures of a camera delivering `format` as `input`,
    /// made (again) when the size or the input changed.
    fn encoder(
        &mut self,
        format: VideoFormat,
        input: Input,
    ) -> Result<&mut Box<dyn Encoder>, EncodeError> {
        let size = (
            (format.width / self.divisor) & !1,
            (format.height / self.divisor) & !1,
        );
        let wanted = Made { size, input };
        if self
            .encoder
            .as_ref()
            .is_none_or(|(_, made_for)| *made_for != wanted)
        {
            // The old one stops (and lets go of its device) before the new one opens.
            self.encoder = None;
            let encoder = self
                .choice
                .make(size, format.fps, self.bitrate_kbps, input)?;
            info!(
                layer = self.index,
                width = size.0,
                height = size.1,
                kbps = self.bitrate_kbps,
                "video: encoding the layer with {}",
                encoder.describe()
            );
            self.policy.idr_not_sent(KeyframeReason::Start);
            self.encoder = Some((encoder, wanted));
        }
        match self.encoder.as_mut() {
            Some((encoder, _)) => Ok(encoder),
            None => Err(EncodeError("no encoder".into())),
        }
    }

    /// The encoder for `picture`: one that reads the camera's buffer where it is, if the
    /// picture is in one and this layer's encoder can; otherwise one that takes bytes. The
    /// buffer to read, if any. An encoder that will not take the camera's buffers is asked
    /// once; `Ok(None)` here means this picture has no bytes to give it instead.
    fn encoder_for<'a>(
        &mut self,
        picture: &Picture<'a>,
    ) -> Result<Option<Option<&'a SharedPicture>>, EncodeError> {
        let format = picture.format;
        if let Some(shared) = picture.shared.filter(|_| self.imports()) {
            match self.encoder(format, Input::Imported(shared.layout)) {
                Ok(_) => return Ok(Some(Some(shared))),
                Err(err) => {
                    info!(
                        layer = self.index,
                        "video: the encoder cannot read the camera's buffers ({err}); pictures are copied into it"
                    );
                    self.import_refused = true;
                }
            }
        }
        let needed = PixelFormat::I420.frame_len(format.width, format.height);
        if picture.data.len() < needed.unwrap_or(usize::MAX) {
            return Ok(None);
        }
        self.encoder(format, Input::Copied)?;
        Ok(Some(None))
    }

    /// A picture (halved for a lower layer) through the encoder: its I420 bytes, or the
    /// camera's buffer it is in.
    fn encode_picture(&mut self, picture: &Picture) -> Outcome {
        let format = picture.format;
        // Made first: a new encoder's first picture is the IDR decided below.
        let Some(shared) = self.encoder_for(picture)? else {
            return Ok(None);
        };
        let force = self.policy.decide(picture.captured);
        let pts = self.clock.since_origin(picture.captured);
        let size = (
            (format.width / self.divisor) & !1,
            (format.height / self.divisor) & !1,
        );
        let data = match self.divisor {
            1 => picture.data,
            _ => {
                let (width, height) = (format.width, format.height);
                halve_i420(picture.data, (width, height), size, &mut self.halved);
                &self.halved[..]
            }
        };
        let result = match (self.encoder.as_mut(), shared) {
            (Some((encoder, _)), Some(shared)) => encoder
                .encode_shared(shared, force.is_some(), pts)
                .map(|out| out.map(|p| (Bytes::copy_from_slice(p.annex_b), p.keyframe))),
            (Some((encoder, _)), None) => encoder
                .encode(data, force.is_some(), pts)
                .map(|out| out.map(|p| (Bytes::copy_from_slice(p.annex_b), p.keyframe))),
            (None, _) => Err(EncodeError("no encoder".into())),
        };
        let keyframe = result
            .as_ref()
            .ok()
            .and_then(|out| out.as_ref().map(|(_, k)| *k));
        self.policy.encoded(force, keyframe, picture.captured);
        let reason = |keyframe: bool| keyframe.then(|| force.unwrap_or(KeyframeReason::Encoder));
        result.map(|out| out.map(|(annex_b, keyframe)| (annex_b, reason(keyframe))))
    }

    /// A passthrough camera's access unit, made startable; its key frames are its own.
    fn pass_on(&mut self, picture: &Picture) -> Outcome {
        let out = Encoder::encode(&mut self.camera, picture.data, false, Duration::ZERO)?;
        Ok(out.map(|p| {
            let keyframe = p.keyframe.then_some(KeyframeReason::Encoder);
            (Bytes::copy_from_slice(p.annex_b), keyframe)
        }))
    }

    /// Cuts an access unit into RTP payloads and publishes it.
    fn publish(
        &mut self,
        annex_b: Bytes,
        keyframe: Option<KeyframeReason>,
        picture: &Picture,
    ) -> Option<Sent> {
        let payloads = match self.payloader.payload(RTP_PAYLOAD_MTU, &annex_b) {
            Ok(payloads) if !payloads.is_empty() => payloads,
            Ok(_) => return None,
            Err(err) => {
                self.failed(EncodeError(format!("H.264 packetizer: {err}")));
                return None;
            }
        };
        self.failures.reset();
        if keyframe.is_some() && picture.format.pixel == PixelFormat::H264 {
            self.describe_camera(&annex_b);
        }
        let sent = Sent {
            bytes: annex_b.len(),
            keyframe,
        };
        self.feed.publish(VideoUnit {
            access_unit: annex_b,
            payloads,
            keyframe: keyframe.is_some(),
            rtp_timestamp: self.clock.video(picture.captured),
            private: picture.private,
        });
        Some(sent)
    }

    /// An encoder failed: one reading the camera's buffers is given copies from now on;
    /// otherwise one that is not openh264 is replaced by openh264 for good (viewers get an
    /// IDR from it and keep watching); openh264 is made anew.
    fn failed(&mut self, err: EncodeError) {
        let failed = self.encoder.take();
        self.policy.idr_not_sent(KeyframeReason::Start);
        if let Some((
            encoder,
            Made {
                input: Input::Imported(_),
                ..
            },
        )) = &failed
        {
            error!(
                layer = self.index,
                "video: {} failed reading the camera's buffers: {err}; pictures are copied into it from now on",
                encoder.describe()
            );
            self.import_refused = true;
        } else if self.choice != Choice::Openh264 {
            let what = failed.map_or_else(|| format!("{:?}", self.choice), |(e, _)| e.describe());
            error!(
                layer = self.index,
                "video: {what} failed: {err}; encoding with openh264 from now on"
            );
            self.choice = Choice::Openh264;
            self.update_description(|d| {
                d.encoder = VideoEncoder::Openh264;
                d.encoder_detail = format!("openh264; {what} failed: {err}");
            });
        } else if let Some(count) = self.failures.hit() {
            error!(count, layer = self.index, "video: {err}");
        }
    }

    /// A passthrough camera sent an IDR: offer its profile and level (from its SPS).
    fn describe_camera(&self, annex_b: &[u8]) {
        let Some(sps) = nal_units(annex_b).find(|nal| nal[0] & 0x1f == 7) else {
            return;
        };
        match passthrough::profile_level_id(sps) {
            Ok(profile) => self.update_description(|d| d.profile_level_id = Some(profile)),
            Err(reason) => self.update_description(|d| {
                if d.profile_level_id.take().is_some() {
                    error!("{reason}; viewers are refused");
                }
            }),
        }
    }

    fn update_description(&self, change: impl FnOnce(&mut VideoDescription)) {
        if let Some(shared) = &self.description {
            let mut next = match shared.read() {
                Ok(d) => d.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            change(&mut next);
            set_description(shared, next);
        }
    }
}

/// An access unit and why it is an IDR, if it is one; `None` when nothing came out.
type Outcome = Result<Option<(Bytes, Option<KeyframeReason>)>, EncodeError>;

/// Replaces the description viewers are offered, logging the change.
pub fn set_description(shared: &RwLock<VideoDescription>, description: VideoDescription) {
    let mut current = match shared.write() {
        Ok(current) => current,
        Err(poisoned) => poisoned.into_inner(),
    };
    if *current != description {
        info!(?description, "video description changed");
        *current = description;
    }
}

impl KeyframePolicy {
    /// Tells the policy what came of a picture (`keyframe`: whether what came out is an IDR;
    /// `None`: nothing came out): a forced IDR that did not come out (rate control skipped
    /// the frame, or an error) must come with the next frame, since someone is waiting for
    /// it; an IDR the encoder chose itself restarts the period.
    fn encoded(&mut self, forced: Option<KeyframeReason>, keyframe: Option<bool>, at: Instant) {
        match (forced, keyframe) {
            (Some(reason), Some(false) | None) => self.idr_not_sent(reason),
            (None, Some(true)) => self.sent_idr(at),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::keyframe::KeyframeMailbox;
    use crate::media::layers::LayerSpec;
    use crate::media::video::black_i420;
    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;
    use tokio::sync::broadcast::Receiver;

    const FORMAT: VideoFormat = VideoFormat {
        pixel: PixelFormat::I420,
        width: 320,
        height: 240,
        fps: 30,
    };

    fn layer(bitrate_kbps: u32) -> Layer {
        let spec = LayerSpec {
            width: FORMAT.width,
            height: FORMAT.height,
            bitrate_kbps,
        };
        Layer::new(spec, KeyframeMailbox::default())
    }

    /// A picture that changes every time (a moving gradient and noise), so rate control has
    /// work to do.
    fn picture(n: u32) -> Vec<u8> {
        let (w, h) = (FORMAT.width, FORMAT.height);
        let mut seed = n.wrapping_mul(2_654_435_761);
        let mut out: Vec<u8> = (0..w * h)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                ((i % w + i / w + n * 3) as u8).wrapping_add((seed & 0x3) as u8)
            })
            .collect();
        out.resize((w * h * 3 / 2) as usize, 128);
        out
    }

    struct Run {
        start: Instant,
        clock: RtpClock,
    }

    impl Run {
        fn new() -> Self {
            Run {
                start: Instant::now(),
                clock: RtpClock::new(),
            }
        }

        fn encoder(&self, layer: &Layer, index: usize, choice: Choice) -> LayerEncoder {
            LayerEncoder::new(index, layer, choice, Duration::from_secs(60), self.clock)
        }

        fn send(
            &self,
            encoder: &mut LayerEncoder,
            n: u32,
            data: &[u8],
            private: bool,
        ) -> Option<Sent> {
            encoder.encode(&Picture {
                shared: None,
                data,
                format: FORMAT,
                captured: self.start + Duration::from_millis(u64::from(n) * 33),
                private,
                privacy_switched: false,
            })
        }
    }

    /// Decodes what a viewer of `rx` got: the size of every picture decoded.
    fn decode_all(rx: &mut Receiver<Arc<VideoUnit>>) -> Vec<(usize, usize)> {
        let mut decoder = Decoder::new().unwrap();
        let mut sizes = Vec::new();
        while let Ok(unit) = rx.try_recv() {
            if let Ok(Some(yuv)) = decoder.decode(&unit.access_unit) {
                sizes.push(yuv.dimensions());
            }
        }
        sizes
    }

    #[test]
    fn every_layer_is_the_same_encoder_at_its_own_size_and_lower_ones_only_while_watched() {
        let run = Run::new();
        let (top, low) = (layer(800), layer(200));
        let mut encoders = [
            run.encoder(&top, 0, Choice::Openh264),
            run.encoder(&low, 1, Choice::Openh264),
        ];
        let mut top_rx = top.feed.subscribe();
        for n in 0..10 {
            let data = picture(n);
            let sent: Vec<_> = encoders
                .iter_mut()
                .map(|e| run.send(e, n, &data, false))
                .collect();
            assert!(
                sent[0].is_some() && sent[1].is_none(),
                "picture {n}: {sent:?}"
            );
        }
        let mut low_rx = low.feed.subscribe();
        for n in 10..20 {
            let data = picture(n);
            for e in &mut encoders {
                run.send(e, n, &data, false);
            }
        }
        let top_sizes = decode_all(&mut top_rx);
        let low_sizes = decode_all(&mut low_rx);
        assert!(
            top_sizes.len() >= 18 && top_sizes.iter().all(|&s| s == (320, 240)),
            "{top_sizes:?}"
        );
        // The lower layer starts with an IDR the moment someone watches it.
        assert!(
            low_sizes.len() >= 9 && low_sizes.iter().all(|&s| s == (160, 120)),
            "{low_sizes:?}"
        );
    }

    #[test]
    fn the_bitrate_changes_while_encoding_without_forcing_a_key_frame() {
        let run = Run::new();
        let top = layer(3000);
        let mut encoder = run.encoder(&top, 0, Choice::Openh264);
        // Bytes sent, and key frames other than the encoder's own choice (scene changes).
        let bytes = |encoder: &mut LayerEncoder, range: std::ops::Range<u32>| {
            let sent: Vec<_> = range
                .filter_map(|n| run.send(encoder, n, &picture(n), false))
                .collect();
            let forced = sent
                .iter()
                .filter(|s| s.keyframe.is_some_and(|k| k != KeyframeReason::Encoder))
                .count();
            (sent.iter().map(|s| s.bytes).sum::<usize>(), forced)
        };
        bytes(&mut encoder, 0..30);
        let (high, _) = bytes(&mut encoder, 30..90);
        encoder.set_bitrate(300);
        let (_, forced_settling) = bytes(&mut encoder, 90..120);
        let (low, forced) = bytes(&mut encoder, 120..180);
        assert_eq!(forced + forced_settling, 0, "a new bitrate forces no IDR");
        assert!(
            low * 3 < high,
            "{high} bytes at 3000 kb/s, {low} at 300 kb/s"
        );
    }

    #[test]
    fn an_encoder_that_fails_is_replaced_by_openh264_and_viewers_keep_decoding() {
        let run = Run::new();
        let top = layer(800);
        let description = Arc::new(RwLock::new(Choice::Openh264.describe(
            FORMAT,
            800,
            "configured",
        )));
        let mut encoder = run
            .encoder(&top, 0, Choice::FailsAfter(10))
            .describing(description.clone());
        let mut rx = top.feed.subscribe();
        let sent: Vec<_> = (0..30)
            .map(|n| run.send(&mut encoder, n, &picture(n), false))
            .collect();
        // Picture 10 is lost to the fault; picture 11 is the new encoder's IDR.
        assert!(
            sent[..10].iter().all(Option::is_some) && sent[10].is_none(),
            "{sent:?}"
        );
        assert_eq!(
            sent[11].and_then(|s| s.keyframe),
            Some(KeyframeReason::Start)
        );
        assert!(
            sent[12..]
                .iter()
                .all(|s| s.is_some_and(|s| s.keyframe.is_none()))
        );
        let sizes = decode_all(&mut rx);
        assert_eq!(sizes.len(), 29, "every picture but the lost one decodes");
        assert_eq!(description.read().unwrap().encoder, VideoEncoder::Openh264);
    }

    #[test]
    fn an_encoder_that_cannot_read_the_cameras_buffers_gets_copies_then_openh264_takes_over() {
        let run = Run::new();
        let top = layer(800);
        // Not an encoder: reading the camera's buffer fails, and so does taking copies.
        let choice = Choice::M2m("/dev/null".into(), "null".into());
        let mut encoder = run.encoder(&top, 0, choice);
        let mut rx = top.feed.subscribe();
        // A "camera buffer": any file will do for a device that refuses it anyway.
        let file = std::fs::File::open("/dev/null").unwrap();
        let shared = SharedPicture {
            dmabuf: onair_hal::v4l2::Dmabuf::new(file.into(), 0),
            index: 0,
            bytes_used: 320 * 240 * 2,
            layout: onair_hal::SharedLayout {
                fourcc: *b"YUYV",
                width: 320,
                height: 240,
                stride: 640,
                buffers: 4,
            },
        };
        assert!(
            !encoder.wants_bytes(),
            "the top layer would read the buffer"
        );
        let send = |encoder: &mut LayerEncoder, n: u32, data: &[u8]| {
            encoder.encode(&Picture {
                shared: Some(&shared),
                data,
                format: FORMAT,
                captured: run.start + Duration::from_millis(u64::from(n) * 33),
                private: false,
                privacy_switched: false,
            })
        };
        // The buffer alone: refused, and there are no bytes to copy: nothing this time.
        assert_eq!(send(&mut encoder, 0, &[]), None);
        assert!(encoder.wants_bytes(), "copies are wanted from now on");
        // With bytes: the copying encoder cannot be made either (that picture is lost);
        // openh264 from the next one on, starting with an IDR.
        let sent: Vec<_> = (1..10)
            .map(|n| send(&mut encoder, n, &picture(n)))
            .collect();
        assert!(
            sent[0].is_none() && sent[1..].iter().all(Option::is_some),
            "{sent:?}"
        );
        assert_eq!(
            sent[1].and_then(|s| s.keyframe),
            Some(KeyframeReason::Start)
        );
        assert_eq!(decode_all(&mut rx).len(), 8);
    }

    #[test]
    fn privacy_switches_are_idrs_and_a_passthrough_camera_waits_for_its_next_idr() {
        let run = Run::new();
        let top = layer(800);
        let mut encoder = run.encoder(&top, 0, Choice::Openh264);
        // A "camera" that encodes H.264 itself, key frame every 5 pictures.
        let mut camera = H264Encoder::new(H264Settings {
            width: FORMAT.width,
            height: FORMAT.height,
            fps: 30,
            bitrate_kbps: 800,
        })
        .unwrap();
        let mut black = Vec::new();
        let mut rx = top.feed.subscribe();
        let mut sent = Vec::new();
        for n in 0..20u32 {
            let private = (5..12).contains(&n);
            let camera_unit = camera
                .encode(&picture(n), n % 5 == 0, Duration::ZERO)
                .unwrap()
                .map(|p| p.annex_b.to_vec());
            let switched = n == 5 || n == 12;
            let out = match private {
                true => encoder.encode(&Picture {
                    shared: None,
                    data: black_i420(FORMAT.width, FORMAT.height, &mut black),
                    format: FORMAT,
                    captured: run.start,
                    private,
                    privacy_switched: switched,
                }),
                false => encoder.encode(&Picture {
                    shared: None,
                    data: camera_unit.as_deref().unwrap_or_default(),
                    format: VideoFormat {
                        pixel: PixelFormat::H264,
                        ..FORMAT
                    },
                    captured: run.start,
                    private,
                    privacy_switched: switched,
                }),
            };
            sent.push(out.map(|s| s.keyframe.is_some()));
        }
        // Camera IDRs at 0 and 15; privacy (5..12) starts with an IDR of its own; after it,
        // the camera's pictures 12..14 refer to pictures nobody has: dropped until 15.
        assert_eq!(sent[0], Some(true));
        assert_eq!(sent[5], Some(true));
        assert!(sent[6..12].iter().all(|s| *s == Some(false)), "{sent:?}");
        assert!(sent[12..15].iter().all(Option::is_none), "{sent:?}");
        assert_eq!(sent[15], Some(true));
        let sizes = decode_all(&mut rx);
        assert_eq!(
            sizes.len(),
            sent.iter().flatten().count(),
            "everything sent decodes"
        );
    }
}
