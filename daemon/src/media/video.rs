//! The video capture-and-encode thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use onair_config::{Video, VideoSourceSetting};
use onair_hal::synthetic::TestPattern;
use onair_hal::{VideoFrame, VideoSource};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;
use tokio::sync::broadcast;
use tracing::{error, info, warn};

use super::h264::{H264Encoder, H264Settings, profile_level_id};
use super::keyframe::KeyframePolicy;
use super::{LogThrottle, MediaStats, RtpClock, VideoDescription, VideoUnit, convert, running};

/// Largest RTP payload: a 1200-byte packet (safe under every tunnel's MTU) minus the
/// 12-byte RTP header.
pub const RTP_PAYLOAD_MTU: usize = 1200 - 12;

/// Forced IDRs are at least this far apart, however many viewers ask (design note:
/// "coalesced, at most one per ~500 ms").
const KEYFRAME_MIN_GAP: Duration = Duration::from_millis(500);

/// A source and its encoder, opened but not yet running.
pub struct VideoThread {
    source: Box<dyn VideoSource>,
    encoder: H264Encoder,
    keyframe_interval: Duration,
    clock: RtpClock,
    stats: Arc<MediaStats>,
    keyframe_wanted: Arc<AtomicBool>,
}

/// Opens the source `video.source` names.
fn open_source(video: &Video) -> anyhow::Result<Box<dyn VideoSource>> {
    match &video.source {
        VideoSourceSetting::Test => Ok(Box::new(TestPattern::new(
            video.width,
            video.height,
            video.fps,
        ))),
        VideoSourceSetting::Auto => {
            warn!(
                "video.source = \"auto\": no camera backend is built in yet, using the test pattern"
            );
            Ok(Box::new(TestPattern::new(
                video.width,
                video.height,
                video.fps,
            )))
        }
        VideoSourceSetting::Device(path) => anyhow::bail!(
            "video.source = {:?}: capture from V4L2 devices is not supported by this build yet; use \"test\"",
            path.display().to_string()
        ),
    }
}

impl VideoThread {
    /// Opens the configured camera (or test pattern) and an encoder for what it delivers.
    pub fn open(
        video: &Video,
        clock: RtpClock,
        stats: Arc<MediaStats>,
        keyframe_wanted: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let source = open_source(video)?;
        let format = source.format();
        let encoder = H264Encoder::new(H264Settings {
            width: format.width,
            height: format.height,
            fps: format.fps,
            bitrate_kbps: video.bitrate_kbps,
        })
        .context("starting the H.264 encoder")?;
        info!(
            source = %source.describe(),
            "video: {}x{}@{} {:?} → H.264 constrained baseline {} at {} kb/s, IDR every {} ms",
            format.width,
            format.height,
            format.fps,
            format.pixel,
            profile_level_id(format.width, format.height, format.fps, video.bitrate_kbps),
            video.bitrate_kbps,
            video.keyframe_interval_ms
        );
        Ok(VideoThread {
            source,
            encoder,
            keyframe_interval: Duration::from_millis(u64::from(video.keyframe_interval_ms)),
            clock,
            stats,
            keyframe_wanted,
        })
    }

    /// What the encoded stream looks like.
    pub fn description(&self) -> VideoDescription {
        let s = self.encoder.settings();
        VideoDescription {
            profile_level_id: profile_level_id(s.width, s.height, s.fps, s.bitrate_kbps),
            width: s.width,
            height: s.height,
        }
    }

    /// Runs capture → convert → encode → packetize on a thread of its own until `stop`.
    pub fn spawn(
        self,
        tx: broadcast::Sender<Arc<VideoUnit>>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("onair-video".into())
            .spawn(move || self.run(&tx, &stop))
    }

    fn run(mut self, tx: &broadcast::Sender<Arc<VideoUnit>>, stop: &AtomicBool) {
        let format = self.source.format();
        let expected_len = format.pixel.frame_len(format.width, format.height);
        let mut frame = VideoFrame::new();
        let mut converted = Vec::new();
        let mut policy = KeyframePolicy::new(KEYFRAME_MIN_GAP, self.keyframe_interval);
        let mut payloader = H264Payloader::default();
        // Logged on the first occurrence and then every 30th (about once a second).
        let mut read_failures = LogThrottle::new(30);
        let mut bad_frames = LogThrottle::new(30);
        let mut encode_failures = LogThrottle::new(30);

        while running(stop) {
            if let Err(err) = self.source.read_frame(&mut frame) {
                if let Some(failures) = read_failures.hit() {
                    warn!(failures, "video capture: {err}");
                }
                // Back off up to 2 s between attempts; /healthz reports the stall meanwhile.
                let backoff = 100 * u64::from(read_failures.count().min(20));
                std::thread::sleep(Duration::from_millis(backoff));
                continue;
            }
            read_failures.reset();
            if frame.data.len() < expected_len {
                if let Some(count) = bad_frames.hit() {
                    warn!(
                        count,
                        got = frame.data.len(),
                        expected = expected_len,
                        "video capture: short frame dropped"
                    );
                }
                continue;
            }

            let i420 = convert::to_i420(
                format.pixel,
                format.width,
                format.height,
                &frame.data,
                &mut converted,
            );
            if self.keyframe_wanted.swap(false, Ordering::Relaxed) {
                policy.request();
            }
            let force = policy.decide(frame.captured);
            let pts = self.clock.since_origin(frame.captured);
            let unit = match encode(&mut self.encoder, &mut payloader, i420, force, pts) {
                Ok(unit) => unit,
                Err(err) => {
                    if let Some(count) = encode_failures.hit() {
                        error!(count, "{err}");
                    }
                    None
                }
            };
            match &unit {
                // A forced IDR that did not come out (rate control skipped the frame, or an
                // error) must come with the next frame: someone is waiting for it.
                Some((_, keyframe, _)) if force && !keyframe => policy.idr_not_sent(),
                None if force => policy.idr_not_sent(),
                Some((_, true, _)) if !force => policy.sent_idr(frame.captured),
                _ => {}
            }
            let Some((payloads, keyframe, encoded_len)) = unit else {
                continue;
            };
            encode_failures.reset();
            self.stats
                .record_video(Instant::now(), encoded_len, keyframe);
            // An error only means nobody is watching right now.
            let _ = tx.send(Arc::new(VideoUnit {
                payloads,
                keyframe,
                rtp_timestamp: self.clock.video(frame.captured),
            }));
        }
    }
}

/// Encodes one picture and cuts it into RTP payloads: `(payloads, keyframe, encoded bytes)`,
/// or `None` when the encoder skipped the picture.
fn encode(
    encoder: &mut H264Encoder,
    payloader: &mut H264Payloader,
    i420: &[u8],
    force_idr: bool,
    pts: Duration,
) -> Result<Option<(Vec<Bytes>, bool, usize)>, String> {
    let picture = encoder
        .encode(i420, force_idr, pts)
        .map_err(|e| format!("H.264 encoder: {e}"))?;
    let Some(picture) = picture else {
        return Ok(None);
    };
    let annex_b = Bytes::copy_from_slice(picture.annex_b);
    let payloads = payloader
        .payload(RTP_PAYLOAD_MTU, &annex_b)
        .map_err(|e| format!("H.264 packetizer: {e}"))?;
    if payloads.is_empty() {
        return Ok(None);
    }
    Ok(Some((payloads, picture.keyframe, annex_b.len())))
}
