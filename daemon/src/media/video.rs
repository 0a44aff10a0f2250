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
use super::{MediaStats, RtpClock, VideoDescription, VideoUnit, convert, running};

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
        let mut read_failures = 0u32;

        while running(stop) {
            if let Err(err) = self.source.read_frame(&mut frame) {
                read_failures += 1;
                // Log the first failure and then every 30th, so a dead camera does not
                // flood the journal; /healthz reports the stall meanwhile.
                if read_failures == 1 || read_failures.is_multiple_of(30) {
                    warn!(failures = read_failures, "video capture: {err}");
                }
                std::thread::sleep(Duration::from_millis(
                    100 * u64::from(read_failures.min(20)),
                ));
                continue;
            }
            read_failures = 0;
            if frame.data.len() < expected_len {
                warn!(
                    got = frame.data.len(),
                    expected = expected_len,
                    "video capture: short frame dropped"
                );
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
            let picture = match self.encoder.encode(i420, force, pts) {
                Ok(Some(picture)) => picture,
                Ok(None) => {
                    // Rate control skipped the frame; a forced IDR must come with the next.
                    if force {
                        policy.idr_not_sent();
                    }
                    continue;
                }
                Err(err) => {
                    error!("H.264 encoder: {err}");
                    continue;
                }
            };
            if picture.keyframe && !force {
                policy.sent_idr(frame.captured);
            }
            let encoded_len = picture.annex_b.len();
            let keyframe = picture.keyframe;
            let payloads = match payloader
                .payload(RTP_PAYLOAD_MTU, &Bytes::copy_from_slice(picture.annex_b))
            {
                Ok(payloads) if !payloads.is_empty() => payloads,
                Ok(_) => continue,
                Err(err) => {
                    error!("H.264 packetizer: {err}");
                    continue;
                }
            };
            self.stats
                .record_video(Instant::now(), encoded_len, keyframe);
            // An error only means nobody is watching right now.
            let _ = tx.send(Arc::new(VideoUnit {
                payloads,
                keyframe,
                rtp_timestamp: self.clock.video(frame.captured),
                captured: frame.captured,
            }));
        }
    }
}
