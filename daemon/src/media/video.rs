//! The video capture-and-encode thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use onair_config::{Dioptres, LibcameraControls, Video, VideoEncoder, VideoSourceSetting};
use onair_hal::libcamera::{LibcameraCamera, LibcameraSettings};
use onair_hal::synthetic::TestPattern;
use onair_hal::v4l2::{self, V4l2Camera};
use onair_hal::{HalError, PixelFormat, VideoFormat, VideoFormatRequest, VideoFrame, VideoSource};
use tracing::{info, warn};

use super::encoder::{Choice, LayerEncoder, Picture, Sent, set_description};
use super::h264_camera::H264TestCamera;
use super::input::Supervised;
use super::snapshot::{Snapshots, Still};
use super::{Layer, LogThrottle, MediaStats, RtpClock, VideoDescription, convert};
use crate::lifecycle::{Lifecycle, Stop};

/// A source and its encoder, opened but not yet running.
pub struct VideoThread {
    input: Supervised<dyn VideoSource>,
    /// What the encoders are set up for; a reopened camera may deliver something else.
    format: VideoFormat,
    bitrate_kbps: u32,
    /// Who encodes pictures, and why.
    choice: Choice,
    why: String,
    /// What viewers are offered; updated when the camera or its stream changes.
    description: Arc<RwLock<VideoDescription>>,
    stats: Arc<MediaStats>,
    /// The layers, top first: every one encodes the camera's pictures (the ones below the
    /// top halved, and only while watched).
    layers: Vec<LayerEncoder>,
    /// While set, pictures are replaced by black before encoding (see [`black_i420`]).
    privacy: Arc<AtomicBool>,
    /// Where a picture is handed over when a snapshot is asked for.
    snapshots: Arc<Snapshots>,
}

/// `[video.libcamera]` as the helper's arguments (cross/libcamera/README.md).
fn libcamera_args(controls: &LibcameraControls) -> Vec<String> {
    // The spelling of the config file, which is the helper's.
    fn name(value: &impl serde::Serialize) -> String {
        serde_json::to_value(value)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
    let mut args = Vec::new();
    let mut push = |flag: &str, value: Option<String>| {
        args.push(flag.to_owned());
        args.extend(value);
    };
    if controls.rotation != 0 {
        push("--rotation", Some(controls.rotation.to_string()));
    }
    if controls.hflip {
        push("--hflip", None);
    }
    if controls.vflip {
        push("--vflip", None);
    }
    if let Some(mode) = controls.autofocus {
        push("--af-mode", Some(name(&mode)));
    }
    if let Some(Dioptres(d)) = controls.lens_position {
        push("--lens-position", Some(d.to_string()));
    }
    if let Some(us) = controls.exposure_us {
        push("--exposure", Some(us.to_string()));
    }
    if let Some(mode) = controls.white_balance {
        push("--awb-mode", Some(name(&mode)));
    }
    if let Some(mode) = controls.hdr {
        push("--hdr-mode", Some(name(&mode)));
    }
    args
}

/// What viewers are offered for `format`, before anything was encoded (`why`: how the
/// encoder was chosen).
fn describe(
    format: VideoFormat,
    bitrate_kbps: u32,
    choice: &Choice,
    why: &str,
) -> VideoDescription {
    match format.pixel {
        // A passthrough camera's profile is known from its first SPS.
        PixelFormat::H264 => VideoDescription {
            encoder: VideoEncoder::Passthrough,
            encoder_detail: "the camera's own H.264".into(),
            profile_level_id: None,
            width: format.width,
            height: format.height,
        },
        _ => choice.describe(format, bitrate_kbps, why),
    }
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

/// Opens a (resolved) source; a V4L2 camera shares its buffers with a memory-to-memory
/// encoder if `share` and it can.
fn open_source(
    setting: &VideoSourceSetting,
    wanted: VideoFormatRequest,
    video: &Video,
    share: bool,
) -> Result<Box<dyn VideoSource>, HalError> {
    match setting {
        VideoSourceSetting::Device(path) => {
            let mut camera = V4l2Camera::open(&path.to_string_lossy(), wanted)?;
            info!("{}", camera.negotiation());
            if share {
                match camera.share() {
                    Ok(layout) => info!(
                        "video: the camera's {} buffers are shared with the encoder (DMABUF)",
                        layout.buffers
                    ),
                    Err(why) => info!("video: the camera's buffers are not shared: {why}"),
                }
            }
            Ok(Box::new(camera))
        }
        VideoSourceSetting::Libcamera => {
            let settings = LibcameraSettings {
                camera: video.camera.clone(),
                extra_args: libcamera_args(&video.libcamera),
            };
            Ok(Box::new(LibcameraCamera::open(&settings, wanted)?))
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
        anyhow::ensure!(!layers.is_empty(), "no video layer");
        let setting = resolve(&video.source);
        let (choice, why) = Choice::resolve(video);
        let share = matches!(choice, Choice::M2m(..));
        let passthrough = video.encoder == VideoEncoder::Passthrough;
        let wanted = VideoFormatRequest {
            width: video.width,
            height: video.height,
            fps: video.fps,
            h264: passthrough,
        };
        let first = match open_source(&setting, wanted, video, share) {
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
        let description = Arc::new(RwLock::new(describe(
            format,
            video.bitrate_kbps,
            &choice,
            &why,
        )));
        let keyframe_interval = Duration::from_millis(u64::from(video.keyframe_interval_ms));
        let mut layers: Vec<_> = layers
            .iter()
            .enumerate()
            .map(|(index, layer)| {
                let encoder =
                    LayerEncoder::new(index, layer, choice.clone(), keyframe_interval, clock);
                match index {
                    0 => encoder.describing(description.clone()),
                    _ => encoder,
                }
            })
            .collect();
        if format.pixel != PixelFormat::H264 {
            layers[0]
                .prepare(format)
                .context("starting the H.264 encoder")?;
        }
        let description_now = description
            .read()
            .map(|d| d.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        match &description_now.profile_level_id {
            Some(profile) => info!(
                source = %name,
                encoder = %description_now.encoder_detail,
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
            input: Supervised::new(name, first, move || {
                open_source(&setting, wanted, &config, share)
            })
            .counting(stats.video_reopens.clone()),
            format,
            bitrate_kbps: video.bitrate_kbps,
            choice,
            why,
            description,
            stats,
            layers,
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

    /// Runs capture → convert → encode → packetize on a thread of its own until the stop.
    pub fn spawn(self, lifecycle: &Lifecycle) -> std::io::Result<()> {
        lifecycle.thread("onair-video", move |stop| self.run(&stop))
    }

    fn run(mut self, stop: &Stop) {
        let mut work = Work::new();
        while !stop.is_stopped() {
            self.stats.beat();
            let Some(format) = self.capture(&mut work, stop) else {
                continue;
            };
            match self.encode_picture(&mut work, format) {
                Some(sent) => {
                    self.stats
                        .record_video(Instant::now(), sent.bytes, sent.keyframe);
                }
                None => self.stats.record_dropped(),
            }
        }
    }

    /// Reads the next picture into `work.frame`; its format, or `None` when there is
    /// nothing to encode this turn (no camera, a failed read, a short frame).
    fn capture(&mut self, work: &mut Work, stop: &Stop) -> Option<VideoFormat> {
        work.frame.want_data = self.wants_bytes();
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
        if format != self.format {
            self.adopt(format);
        }
        let expected_len = format.pixel.frame_len(format.width, format.height);
        // A shared picture without bytes was checked by the source.
        let shared_only = work.frame.data.is_empty() && work.frame.shared.is_some();
        if !shared_only && work.frame.data.len() < expected_len.unwrap_or(1) {
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

    /// Whether the next picture's bytes are needed, or (if the camera shares its buffers)
    /// only the buffer: nobody needs them while private, and otherwise a snapshot or any layer
    /// that cannot read the buffer does.
    fn wants_bytes(&self) -> bool {
        !self.privacy.load(Ordering::Relaxed)
            && (self.snapshots.wanted() || self.layers.iter().any(LayerEncoder::wants_bytes))
    }

    /// The camera failed or went away: nobody may start from its last pictures (the kept
    /// GOPs and snapshots are dropped; joiners wait, and `POST /whep` answers 503, until
    /// pictures come again).
    fn lost_camera(&mut self) {
        for layer in &self.layers {
            layer.forget();
        }
        self.snapshots.forget();
    }

    /// A camera that came back differently: encode (or pass on) what it delivers now. The
    /// layers make new encoders for the new size themselves; every one starts anew.
    fn adopt(&mut self, format: VideoFormat) {
        warn!(?format, "video format changed (viewers get an IDR)");
        self.format = format;
        let description = describe(format, self.bitrate_kbps, &self.choice, &self.why);
        set_description(&self.description, description);
        for layer in &mut self.layers {
            layer.restart();
        }
    }

    /// The picture in `work.frame` through every layer: the camera's H.264 as it is, or a
    /// picture converted to I420 (black while private). What the top layer sent.
    fn encode_picture(&mut self, work: &mut Work, format: VideoFormat) -> Option<Sent> {
        let private = self.privacy.load(Ordering::Relaxed);
        let was_private = std::mem::replace(&mut work.was_private, private);
        let Work {
            frame,
            converted,
            black,
            ..
        } = work;
        let (data, format) = match (private, format.pixel) {
            (true, _) => (
                black_i420(format.width, format.height, black),
                VideoFormat {
                    pixel: PixelFormat::I420,
                    ..format
                },
            ),
            (false, PixelFormat::H264) => (&frame.data[..], format),
            // In the camera's buffer only: the top layer's encoder reads it there.
            (false, _) if frame.data.is_empty() && frame.shared.is_some() => (
                &[][..],
                VideoFormat {
                    pixel: PixelFormat::I420,
                    ..format
                },
            ),
            (false, pixel) => (
                convert::to_i420(pixel, format.width, format.height, &frame.data, converted)?,
                VideoFormat {
                    pixel: PixelFormat::I420,
                    ..format
                },
            ),
        };
        if format.pixel == PixelFormat::I420
            && self.snapshots.wanted()
            && let Some(still) = Still::copy(data, format.width, format.height, frame.captured)
        {
            self.snapshots.hand_over(still.private(private));
        }
        let picture = Picture {
            data,
            format,
            captured: frame.captured,
            shared: frame.shared.as_ref().filter(|_| !private),
            private,
            privacy_switched: private != was_private,
        };
        let started = Instant::now();
        let mut layers = self.layers.iter_mut();
        let top = layers.next()?.encode(&picture);
        for layer in layers {
            layer.encode(&picture);
        }
        if top.is_some() && format.pixel == PixelFormat::I420 {
            self.stats.record_encode_time(started.elapsed());
        }
        top
    }
}

/// What the video loop keeps from one picture to the next.
struct Work {
    frame: VideoFrame,
    converted: Vec<u8>,
    black: Vec<u8>,
    was_private: bool,
    /// Logged on the first occurrence and then every 30th (about once a second).
    bad_frames: LogThrottle,
}

impl Work {
    fn new() -> Self {
        Work {
            frame: VideoFrame::new(),
            converted: Vec::new(),
            black: Vec::new(),
            was_private: false,
            bad_frames: LogThrottle::new(30),
        }
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
    fn libcamera_controls_become_the_helpers_arguments() {
        use onair_config::{Autofocus, Hdr, WhiteBalance};
        assert!(libcamera_args(&LibcameraControls::default()).is_empty());
        let all = LibcameraControls {
            rotation: 180,
            hflip: true,
            vflip: true,
            autofocus: Some(Autofocus::Manual),
            lens_position: Some(Dioptres(0.5)),
            exposure_us: Some(10_000),
            white_balance: Some(WhiteBalance::Daylight),
            hdr: Some(Hdr::Single),
        };
        assert_eq!(
            libcamera_args(&all).join(" "),
            "--rotation 180 --hflip --vflip --af-mode manual --lens-position 0.5 \
             --exposure 10000 --awb-mode daylight --hdr-mode single"
        );
    }
}
