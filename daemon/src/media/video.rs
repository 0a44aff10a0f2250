//! The video capture-and-encode thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use onair_config::{Video, VideoEncoder, VideoSourceSetting};
use onair_hal::synthetic::TestPattern;
use onair_hal::v4l2::{self, V4l2Camera};
use onair_hal::{HalError, PixelFormat, VideoFormat, VideoFormatRequest, VideoFrame, VideoSource};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tracing::{error, info, warn};

use super::gop::VideoFeed;
use super::h264::{H264Encoder, H264Settings, profile_level_id};
use super::h264_camera::H264TestCamera;
use super::input::Supervised;
use super::keyframe::{KeyframeMailbox, KeyframePolicy, KeyframeReason};
use super::layers::{self, LayerSpec};
use super::passthrough::{self, Passthrough};
use super::snapshot::{Snapshots, Still};
use super::{
    Layer, LogThrottle, MediaStats, RtpClock, VideoDescription, VideoUnit, convert, running,
};

/// Largest RTP payload: a 1200-byte packet (safe under every tunnel's MTU) minus the
/// 12-byte RTP header.
pub const RTP_PAYLOAD_MTU: usize = 1200 - 12;

/// Forced IDRs are at least this far apart, however many viewers ask (design note:
/// "coalesced, at most one per ~500 ms").
const KEYFRAME_MIN_GAP: Duration = Duration::from_millis(500);

/// A source and its encoder, opened but not yet running.
pub struct VideoThread {
    input: Supervised<dyn VideoSource>,
    /// What the encoder is set up for; a reopened camera may deliver something else.
    format: VideoFormat,
    bitrate_kbps: u32,
    /// openh264: encodes every picture, or with a passthrough camera only the black
    /// pictures of privacy.
    encoder: H264Encoder,
    /// The camera's own H.264 (`video.encoder = "passthrough"`).
    passthrough: Option<Passthrough>,
    /// What viewers are offered; updated when the camera or its stream changes.
    description: Arc<RwLock<VideoDescription>>,
    keyframe_interval: Duration,
    clock: RtpClock,
    stats: Arc<MediaStats>,
    /// Where the top layer is published.
    feed: Arc<VideoFeed>,
    keyframes: Arc<KeyframeMailbox>,
    /// The layers below the top, encoded from its pictures while watched.
    lower: Vec<Lower>,
    /// While set, pictures are replaced by black before encoding (see [`black_i420`]).
    privacy: Arc<AtomicBool>,
    /// Where a picture is handed over when a snapshot is asked for.
    snapshots: Arc<Snapshots>,
}

/// A layer below the top: the top's pictures halved and encoded by an encoder of its own,
/// which exists only while someone watches the layer.
struct Lower {
    bitrate_kbps: u32,
    feed: Arc<VideoFeed>,
    keyframes: Arc<KeyframeMailbox>,
    /// The encoder (for the size it was made for) and its key frame policy, while watched.
    encoder: Option<(H264Encoder, (u32, u32), KeyframePolicy)>,
    payloader: H264Payloader,
    halved: Vec<u8>,
    failures: LogThrottle,
}

impl Lower {
    fn new(layer: &Layer) -> Self {
        Lower {
            bitrate_kbps: layer.spec.bitrate_kbps,
            feed: layer.feed.clone(),
            keyframes: layer.keyframes.clone(),
            encoder: None,
            payloader: H264Payloader::default(),
            halved: Vec::new(),
            failures: LogThrottle::new(30),
        }
    }

    /// Encodes the top layer's picture `i420` (of `format`) halved, if anyone watches this
    /// layer; otherwise lets go of the encoder and the kept GOP.
    fn encode(&mut self, i420: &[u8], format: VideoFormat, captured: Instant, ctx: &LayerContext) {
        if !self.feed.watched() {
            if self.encoder.take().is_some() {
                self.feed.forget();
                info!(
                    kbps = self.bitrate_kbps,
                    "video: nobody on the lower layer; stopped encoding it"
                );
            }
            return;
        }
        let size = ((format.width / 2) & !1, (format.height / 2) & !1);
        let spec = LayerSpec {
            width: size.0,
            height: size.1,
            bitrate_kbps: self.bitrate_kbps,
        };
        if self
            .encoder
            .as_ref()
            .is_none_or(|(_, made_for, _)| *made_for != size)
        {
            match layers::encoder(spec, format.fps) {
                Ok(encoder) => {
                    info!(
                        width = size.0,
                        height = size.1,
                        kbps = self.bitrate_kbps,
                        "video: encoding the lower layer"
                    );
                    let policy = KeyframePolicy::new(KEYFRAME_MIN_GAP, ctx.keyframe_interval);
                    self.encoder = Some((encoder, size, policy));
                }
                Err(err) => {
                    if let Some(count) = self.failures.hit() {
                        error!(count, "lower layer: H.264 encoder: {err}");
                    }
                    return;
                }
            }
        }
        let Some((encoder, _, policy)) = self.encoder.as_mut() else {
            return;
        };
        layers::halve_i420(i420, (format.width, format.height), size, &mut self.halved);
        if let Some(reason) = self.keyframes.take() {
            policy.request(reason);
        }
        if ctx.privacy_switched {
            policy.force(KeyframeReason::Privacy);
        }
        let force = policy.decide(captured);
        let pts = ctx.clock.since_origin(captured);
        let unit = encode(encoder, &mut self.payloader, &self.halved, force, pts);
        policy.encoded(force, &unit, captured);
        match unit {
            Ok(Some((payloads, keyframe, access_unit))) => self.feed.publish(VideoUnit {
                access_unit,
                payloads,
                keyframe: keyframe.is_some(),
                rtp_timestamp: ctx.clock.video(captured),
                private: ctx.private,
            }),
            Ok(None) => {}
            Err(err) => {
                if let Some(count) = self.failures.hit() {
                    error!(count, "lower layer: {err}");
                }
            }
        }
    }
}

/// What every lower layer's encoding needs from the video thread.
struct LayerContext {
    clock: RtpClock,
    keyframe_interval: Duration,
    /// The picture is a privacy picture.
    private: bool,
    /// Privacy was switched since the last picture: this one must be an IDR.
    privacy_switched: bool,
}

/// `auto` → the first V4L2 capture device, or the test pattern (with a warning) if there is
/// none; anything else as it is.
fn resolve(setting: &VideoSourceSetting) -> VideoSourceSetting {
    if *setting != VideoSourceSetting::Auto {
        return setting.clone();
    }
    match v4l2::list_capture_devices().into_iter().next() {
        Some(device) => {
            info!(
                "video.source = \"auto\": using {} ({})",
                device.path.display(),
                device.card
            );
            VideoSourceSetting::Device(device.path)
        }
        None => {
            warn!("video.source = \"auto\": no V4L2 capture device found; using the test pattern");
            VideoSourceSetting::Test
        }
    }
}

/// Opens a (resolved) source.
fn open_source(
    setting: &VideoSourceSetting,
    wanted: VideoFormatRequest,
    video: &Video,
) -> Result<Box<dyn VideoSource>, HalError> {
    match setting {
        VideoSourceSetting::Device(path) => {
            let camera = V4l2Camera::open(&path.to_string_lossy(), wanted)?;
            info!("{}", camera.negotiation());
            Ok(Box::new(camera))
        }
        _ if wanted.h264 => {
            let idr_every = Duration::from_millis(u64::from(video.keyframe_interval_ms));
            H264TestCamera::new(
                wanted.width,
                wanted.height,
                wanted.fps,
                video.bitrate_kbps,
                idr_every,
            )
            .map(|camera| Box::new(camera) as Box<dyn VideoSource>)
            .map_err(|e| HalError::Open {
                device: setting.to_string(),
                reason: format!("H.264 encoder: {e}"),
            })
        }
        _ => Ok(Box::new(TestPattern::new(
            wanted.width,
            wanted.height,
            wanted.fps,
        ))),
    }
}

/// What viewers are offered for `format`, before anything was encoded.
fn describe(format: VideoFormat, bitrate_kbps: u32) -> VideoDescription {
    let passthrough = format.pixel == PixelFormat::H264;
    VideoDescription {
        encoder: match passthrough {
            true => VideoEncoder::Passthrough,
            false => VideoEncoder::Openh264,
        },
        // A passthrough camera's profile is known from its first SPS.
        profile_level_id: (!passthrough)
            .then(|| profile_level_id(format.width, format.height, format.fps, bitrate_kbps)),
        width: format.width,
        height: format.height,
    }
}

fn encoder_for(format: VideoFormat, bitrate_kbps: u32) -> Result<H264Encoder, openh264::Error> {
    H264Encoder::new(H264Settings {
        width: format.width,
        height: format.height,
        fps: format.fps,
        bitrate_kbps,
    })
}

impl VideoThread {
    /// Opens the configured camera (or test pattern) and an encoder for what it delivers.
    /// A camera that cannot be opened yet is not an error: the thread keeps trying, and
    /// `/healthz` reports 503 until frames flow.
    pub fn open(
        video: &Video,
        clock: RtpClock,
        stats: Arc<MediaStats>,
        layers: &[Layer],
    ) -> anyhow::Result<Self> {
        let (top, lower) = layers.split_first().context("no video layer")?;
        let setting = resolve(&video.source);
        let passthrough = video.encoder == VideoEncoder::Passthrough;
        let wanted = VideoFormatRequest {
            width: video.width,
            height: video.height,
            fps: video.fps,
            h264: passthrough,
        };
        let first = match open_source(&setting, wanted, video) {
            Ok(source) => Some(source),
            Err(err) => {
                warn!("{err}; retrying until it opens (/healthz answers 503 meanwhile)");
                None
            }
        };
        let format = first.as_ref().map_or(
            VideoFormat {
                pixel: match passthrough {
                    true => PixelFormat::H264,
                    false => PixelFormat::I420,
                },
                width: video.width,
                height: video.height,
                fps: video.fps,
            },
            |source| source.format(),
        );
        let name = first
            .as_ref()
            .map_or_else(|| setting.to_string(), |source| source.describe());
        let encoder =
            encoder_for(format, video.bitrate_kbps).context("starting the H.264 encoder")?;
        let description = describe(format, video.bitrate_kbps);
        match &description.profile_level_id {
            Some(profile) => info!(
                source = %name,
                "video: {}x{}@{} {:?} → H.264 constrained baseline {profile} at {} kb/s, IDR every {} ms",
                format.width,
                format.height,
                format.fps,
                format.pixel,
                video.bitrate_kbps,
                video.keyframe_interval_ms
            ),
            None => info!(
                source = %name,
                "video: {}x{}@{} H.264 from the camera, passed through (key frames when the camera sends them)",
                format.width,
                format.height,
                format.fps,
            ),
        }
        let config = video.clone();
        Ok(VideoThread {
            input: Supervised::new(name, first, move || open_source(&setting, wanted, &config))
                .counting(stats.video_reopens.clone()),
            format,
            bitrate_kbps: video.bitrate_kbps,
            encoder,
            passthrough: passthrough.then(Passthrough::new),
            description: Arc::new(RwLock::new(description)),
            keyframe_interval: Duration::from_millis(u64::from(video.keyframe_interval_ms)),
            clock,
            stats,
            feed: top.feed.clone(),
            keyframes: top.keyframes.clone(),
            lower: lower.iter().map(Lower::new).collect(),
            privacy: Arc::default(),
            snapshots: Arc::default(),
        })
    }

    /// Hands pictures to `snapshots` when asked.
    pub fn with_snapshots(mut self, snapshots: Arc<Snapshots>) -> Self {
        self.snapshots = snapshots;
        self
    }

    /// Encodes black pictures instead of the camera's while `privacy` is set.
    pub fn with_privacy(mut self, privacy: Arc<AtomicBool>) -> Self {
        self.privacy = privacy;
        self
    }

    /// What the encoded stream looks like, kept up to date by the thread.
    pub fn description(&self) -> Arc<RwLock<VideoDescription>> {
        self.description.clone()
    }

    /// Runs capture → convert → encode → packetize on a thread of its own until `stop`.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("onair-video".into())
            .spawn(move || self.run(&stop))
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut work = Work::new(self.keyframe_interval);
        while running(stop) {
            self.stats.beat();
            let Some(format) = self.capture(&mut work, stop) else {
                continue;
            };
            let unit = self.encode_picture(&mut work, format);
            let Some((payloads, keyframe, access_unit)) = work.log_failure(unit) else {
                self.stats.record_dropped();
                continue;
            };
            self.stats
                .record_video(Instant::now(), access_unit.len(), keyframe);
            self.feed.publish(VideoUnit {
                access_unit,
                payloads,
                keyframe: keyframe.is_some(),
                rtp_timestamp: self.clock.video(work.frame.captured),
                private: work.was_private,
            });
        }
    }

    /// Reads the next picture into `work.frame`; its format, or `None` when there is
    /// nothing to encode this turn (no camera, a failed read, a short frame).
    fn capture(&mut self, work: &mut Work, stop: &AtomicBool) -> Option<VideoFormat> {
        let source = self.input.get(stop)?;
        let read = source.read_frame(&mut work.frame).map(|()| source.format());
        let format = match read {
            Ok(format) => format,
            Err(err) => {
                self.lost_camera();
                self.input.failed(err, stop);
                return None;
            }
        };
        self.input.succeeded();
        self.stats.record_captured();
        if format != self.format && !self.adopt(format, &mut work.policy) {
            self.stats.record_dropped();
            return None;
        }
        let expected_len = format.pixel.frame_len(format.width, format.height);
        if work.frame.data.len() < expected_len.unwrap_or(1) {
            if let Some(count) = work.bad_frames.hit() {
                warn!(
                    count,
                    got = work.frame.data.len(),
                    expected = expected_len,
                    "video capture: short frame dropped"
                );
            }
            self.stats.record_dropped();
            return None;
        }
        Some(format)
    }

    /// The camera failed or went away: nobody may start from its last pictures (the kept
    /// GOPs and snapshots are dropped; joiners wait, and `POST /whep` answers 503, until
    /// pictures come again).
    fn lost_camera(&mut self) {
        self.feed.forget();
        for lower in &self.lower {
            lower.feed.forget();
        }
        self.snapshots.forget();
    }

    /// A camera that came back differently: encode (or pass on) what it delivers now.
    /// Whether that is possible.
    fn adopt(&mut self, format: VideoFormat, policy: &mut KeyframePolicy) -> bool {
        match encoder_for(format, self.bitrate_kbps) {
            Ok(encoder) => {
                warn!(
                    ?format,
                    "video format changed; new encoder (viewers get an IDR)"
                );
                self.encoder = encoder;
                self.format = format;
                self.passthrough = (format.pixel == PixelFormat::H264).then(Passthrough::new);
                set_description(&self.description, describe(format, self.bitrate_kbps));
                policy.idr_not_sent(KeyframeReason::Start);
                true
            }
            Err(err) => {
                error!(?format, "cannot encode the new video format: {err}");
                false
            }
        }
    }

    /// The picture in `work.frame` as RTP payloads: passed on from a passthrough camera, or
    /// encoded (black while private).
    fn encode_picture(&mut self, work: &mut Work, format: VideoFormat) -> Encoded {
        let private = self.privacy.load(Ordering::Relaxed);
        let was_private = std::mem::replace(&mut work.was_private, private);
        let requested = self.keyframes.take();
        match self.passthrough.as_mut() {
            Some(passthrough) if !private => {
                // Nobody can make the camera send a key frame: requests are dropped.
                if was_private {
                    passthrough.restart();
                }
                let unit = pass_on(passthrough, &mut work.payloader, &work.frame.data);
                if let Ok(Some((_, Some(_), _))) = &unit
                    && let Some(sps) = passthrough.sps()
                {
                    update_profile(&self.description, sps);
                }
                unit
            }
            _ => {
                // The first picture of the new state is an IDR (black pictures in place of a
                // camera's H.264 start a new stream too).
                if private != was_private {
                    work.policy.force(KeyframeReason::Privacy);
                }
                if let Some(reason) = requested {
                    work.policy.request(reason);
                }
                let Work {
                    frame,
                    converted,
                    black,
                    policy,
                    payloader,
                    ..
                } = work;
                let i420 = match private {
                    true => Some(black_i420(format.width, format.height, black)),
                    // H.264 always goes the passthrough way.
                    false => convert::to_i420(
                        format.pixel,
                        format.width,
                        format.height,
                        &frame.data,
                        converted,
                    ),
                };
                let Some(i420) = i420 else {
                    return Ok(None);
                };
                if self.snapshots.wanted()
                    && let Some(still) =
                        Still::copy(i420, format.width, format.height, frame.captured)
                            .map(|still| still.private(private))
                {
                    self.snapshots.hand_over(still);
                }
                let force = policy.decide(frame.captured);
                let pts = self.clock.since_origin(frame.captured);
                let started = Instant::now();
                let unit = encode(&mut self.encoder, payloader, i420, force, pts);
                self.stats.record_encode_time(started.elapsed());
                policy.encoded(force, &unit, frame.captured);
                let ctx = LayerContext {
                    clock: self.clock,
                    keyframe_interval: self.keyframe_interval,
                    private,
                    privacy_switched: private != was_private,
                };
                for lower in &mut self.lower {
                    lower.encode(i420, format, frame.captured, &ctx);
                }
                unit
            }
        }
    }
}

/// What the video loop keeps from one picture to the next.
struct Work {
    frame: VideoFrame,
    converted: Vec<u8>,
    black: Vec<u8>,
    policy: KeyframePolicy,
    payloader: H264Payloader,
    was_private: bool,
    /// Logged on the first occurrence and then every 30th (about once a second).
    bad_frames: LogThrottle,
    encode_failures: LogThrottle,
}

impl Work {
    fn new(keyframe_interval: Duration) -> Self {
        Work {
            frame: VideoFrame::new(),
            converted: Vec::new(),
            black: Vec::new(),
            policy: KeyframePolicy::new(KEYFRAME_MIN_GAP, keyframe_interval),
            payloader: H264Payloader::default(),
            was_private: false,
            bad_frames: LogThrottle::new(30),
            encode_failures: LogThrottle::new(30),
        }
    }

    /// The encoded picture, if any; a failure is logged (throttled) and skipped.
    fn log_failure(&mut self, unit: Encoded) -> Packetized {
        match unit {
            Ok(unit) => {
                self.encode_failures.reset();
                unit
            }
            Err(err) => {
                if let Some(count) = self.encode_failures.hit() {
                    error!(count, "{err}");
                }
                None
            }
        }
    }
}

impl KeyframePolicy {
    /// Tells the policy what came of a picture: a forced IDR that did not come out (rate
    /// control skipped the frame, or an error) must come with the next frame, since someone
    /// is waiting for it; an IDR the encoder chose itself restarts the period.
    fn encoded(&mut self, forced: Option<KeyframeReason>, unit: &Encoded, at: Instant) {
        match (forced, unit) {
            (Some(reason), Ok(Some((_, None, _))) | Ok(None) | Err(_)) => self.idr_not_sent(reason),
            (None, Ok(Some((_, Some(_), _)))) => self.sent_idr(at),
            _ => {}
        }
    }
}

/// A passthrough camera sent an SPS: offer its profile and level to viewers.
fn update_profile(shared: &RwLock<VideoDescription>, sps: &[u8]) {
    let current = shared.read().map(|d| d.clone());
    let Ok(mut description) = current else {
        return;
    };
    match passthrough::profile_level_id(sps) {
        Ok(profile) => {
            description.profile_level_id = Some(profile);
            set_description(shared, description);
        }
        Err(reason) if description.profile_level_id.is_some() => {
            error!("{reason}; viewers are refused");
            description.profile_level_id = None;
            set_description(shared, description);
        }
        Err(_) => {}
    }
}

/// Replaces the description viewers are offered, logging the change.
fn set_description(shared: &RwLock<VideoDescription>, description: VideoDescription) {
    let mut current = match shared.write() {
        Ok(current) => current,
        Err(poisoned) => poisoned.into_inner(),
    };
    if *current != description {
        info!(?description, "video description changed");
        *current = description;
    }
}

/// A black I420 picture of `width` x `height` (Y = 16, U = V = 128: black in the video range
/// H.264 signals), kept in `buf`. `buf` holds nothing else, so it is filled only when the size
/// changes: privacy costs no conversion and no per-frame work.
pub fn black_i420(width: u32, height: u32, buf: &mut Vec<u8>) -> &[u8] {
    let luma = width as usize * height as usize;
    let len = PixelFormat::I420
        .frame_len(width, height)
        .unwrap_or_default();
    if buf.len() != len {
        buf.clear();
        buf.resize(luma, 16);
        buf.resize(len, 128);
    }
    buf
}

/// RTP payloads of one access unit, why it is an IDR if it is one, and the access unit
/// itself (Annex-B); `None` when there is nothing to send for this picture.
type Packetized = Option<(Vec<Bytes>, Option<KeyframeReason>, Bytes)>;

/// A picture's outcome: packetized, or why the encoder or packetizer failed.
type Encoded = Result<Packetized, String>;

/// Encodes one picture and cuts it into RTP payloads; `None` when the encoder skipped it.
fn encode(
    encoder: &mut H264Encoder,
    payloader: &mut H264Payloader,
    i420: &[u8],
    force_idr: Option<KeyframeReason>,
    pts: Duration,
) -> Encoded {
    let picture = encoder
        .encode(i420, force_idr.is_some(), pts)
        .map_err(|e| format!("H.264 encoder: {e}"))?;
    match picture {
        Some(picture) => {
            let reason = picture
                .keyframe
                .then(|| force_idr.unwrap_or(KeyframeReason::Encoder));
            packetize(payloader, picture.annex_b, reason)
        }
        None => Ok(None),
    }
}

/// Cuts one of a passthrough camera's access units into RTP payloads; `None` while it
/// cannot be decoded (see [`Passthrough::access_unit`]).
fn pass_on(
    passthrough: &mut Passthrough,
    payloader: &mut H264Payloader,
    annex_b: &[u8],
) -> Encoded {
    match passthrough.access_unit(annex_b) {
        // The camera's encoder chose its key frames.
        Some(unit) => packetize(
            payloader,
            unit.annex_b,
            unit.keyframe.then_some(KeyframeReason::Encoder),
        ),
        None => Ok(None),
    }
}

fn packetize(
    payloader: &mut H264Payloader,
    annex_b: &[u8],
    keyframe: Option<KeyframeReason>,
) -> Encoded {
    let annex_b = Bytes::copy_from_slice(annex_b);
    let payloads = payloader
        .payload(RTP_PAYLOAD_MTU, &annex_b)
        .map_err(|e| format!("H.264 packetizer: {e}"))?;
    if payloads.is_empty() {
        return Ok(None);
    }
    Ok(Some((payloads, keyframe, annex_b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_picture_is_video_range_black() {
        let mut buf = Vec::new();
        let picture = black_i420(64, 48, &mut buf);
        let (y, uv) = picture.split_at(64 * 48);
        assert_eq!(uv.len(), 2 * 32 * 24);
        assert!(y.iter().all(|&b| b == 16));
        assert!(uv.iter().all(|&b| b == 128));
        // A new size refills; the same size keeps the buffer.
        assert_eq!(black_i420(16, 16, &mut buf).len(), 384);
        assert!(buf[..256].iter().all(|&b| b == 16) && buf[256..].iter().all(|&b| b == 128));
    }

    #[test]
    fn privacy_picture_encodes() {
        let settings = H264Settings {
            width: 64,
            height: 48,
            fps: 30,
            bitrate_kbps: 200,
        };
        let mut encoder = H264Encoder::new(settings).unwrap();
        let mut payloader = H264Payloader::default();
        let mut buf = Vec::new();
        let black = black_i420(64, 48, &mut buf);
        let (payloads, keyframe, _) = encode(
            &mut encoder,
            &mut payloader,
            black,
            Some(KeyframeReason::Start),
            Duration::ZERO,
        )
        .unwrap()
        .expect("a forced IDR comes out");
        assert!(keyframe == Some(KeyframeReason::Start) && !payloads.is_empty());
    }
}
