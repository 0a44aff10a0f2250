//! Devices → convert → encode, once, for every viewer.
//!
//! One capture thread per medium reads the HAL source (reads block), converts to what the
//! encoder takes, encodes, splits the result into RTP payloads once and publishes it on a
//! broadcast channel. Viewers subscribe; the channel is a bounded ring, so a viewer that
//! falls behind loses old frames instead of holding up capture, the encoder or anyone else
//! (it then waits for the next IDR, see `webrtc::forward`).
//!
//! Both media stamp RTP timestamps from the capture time on one monotonic clock, so the
//! sender reports of the two streams agree and the browser can keep lips in sync.

pub mod audio;
pub mod convert;
pub mod encoder;
pub mod fec;
pub mod gop;
pub mod h264;
pub mod h264_camera;
pub mod input;
pub mod keyframe;
pub mod layers;
pub mod m2m;
pub mod passthrough;
pub mod snapshot;
pub mod stats;
pub mod video;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::lifecycle::Lifecycle;
use bytes::Bytes;
use onair_config::{Config, VideoEncoder};
use tokio::sync::broadcast;

pub use gop::{Joined, VideoFeed};
pub use keyframe::KeyframeReason;
pub use layers::LayerSpec;
pub use stats::MediaStats;

use keyframe::KeyframeMailbox;

/// How many encoded units a viewer may be behind before it starts losing them. About two
/// seconds of video at 30 fps: enough to ride out a scheduling hiccup, small enough that a
/// viewer that lost them is better served by the next IDR.
const VIDEO_QUEUE: usize = 64;
/// Two seconds of 20 ms Opus frames.
const AUDIO_QUEUE: usize = 100;

/// One encoded picture, for every consumer: viewers take its RTP payloads (cut once, not per
/// viewer), the recorder and snapshots its access unit.
#[derive(Debug)]
pub struct VideoUnit {
    /// The access unit as the encoder (or camera) made it: Annex-B NAL units.
    pub access_unit: Bytes,
    /// RTP payloads (FU-A fragments, STAP-A for SPS+PPS, single NAL units), cut once.
    pub payloads: Vec<Bytes>,
    /// An IDR: a viewer can start decoding here.
    pub keyframe: bool,
    /// 90 kHz RTP timestamp derived from the capture time.
    pub rtp_timestamp: u32,
    /// A privacy picture (black): sent only while privacy is on, the camera's pictures only
    /// while it is off (see [`MediaHandle::set_privacy`]).
    pub private: bool,
}

/// One encoded 20 ms Opus frame.
#[derive(Debug)]
pub struct AudioUnit {
    /// The Opus packet, which is the whole RTP payload.
    pub payload: Bytes,
    /// 48 kHz RTP timestamp derived from the capture time.
    pub rtp_timestamp: u32,
}

/// What the SDP and the sessions need to know about the encoded video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoDescription {
    /// Who encodes it.
    pub encoder: VideoEncoder,
    /// Which encoder and why: "/dev/video11 (bcm2835-codec-encode); video.encoder = …",
    /// "openh264; video.encoder = \"auto\": no V4L2 H.264 encoder: …".
    pub encoder_detail: String,
    /// `profile-level-id` of the stream, e.g. `42e01f`; `None` while a passthrough camera
    /// has not sent its SPS yet.
    pub profile_level_id: Option<String>,
    /// Encoded size.
    pub width: u32,
    /// Encoded size.
    pub height: u32,
}

/// Frames older than this mean the pipeline has stalled: `/healthz` 503, the status LED's "no
/// camera", and no new viewer (nothing to show them).
pub const STALL: Duration = Duration::from_secs(2);

/// A cheap, cloneable view of the running pipeline for sessions and HTTP handlers.
#[derive(Clone)]
pub struct MediaHandle {
    /// The video's quality layers, top first.
    layers: Arc<[Layer]>,
    audio: Option<broadcast::Sender<Arc<AudioUnit>>>,
    /// The clock both media are stamped with.
    clock: RtpClock,
    /// While on, the video thread encodes black pictures and the audio thread silence;
    /// viewers stay connected.
    privacy: Privacy,
    /// What viewers lose, for the audio encoder's in-band FEC.
    loss: Arc<fec::LossReports>,
    /// Still pictures for `/snapshot.jpg`.
    snapshots: Arc<snapshot::Snapshots>,
    /// Counters and rates for status, health and metrics.
    pub stats: Arc<MediaStats>,
    /// The encoded video's format; the video thread updates it when the camera changes.
    video_description: Arc<RwLock<VideoDescription>>,
}

/// One quality layer of the video: what it is, where it is published, and where key frames
/// are asked of its encoder.
#[derive(Debug)]
pub struct Layer {
    /// What it is encoded as.
    pub spec: LayerSpec,
    feed: Arc<VideoFeed>,
    keyframes: Arc<KeyframeMailbox>,
}

impl Layer {
    fn new(spec: LayerSpec, keyframes: KeyframeMailbox) -> Self {
        Layer {
            spec,
            feed: Arc::new(VideoFeed::new(VIDEO_QUEUE)),
            keyframes: Arc::new(keyframes),
        }
    }
}

impl MediaHandle {
    /// A new viewer of the encoded video (its top layer): the newest IDR and the pictures
    /// since it, then the live pictures (see [`gop`]).
    pub fn join_video(&self) -> Joined {
        self.layers[0].feed.join()
    }

    /// The newest IDR of the top layer and the pictures since it (see [`gop`]); empty when
    /// there is none at hand.
    pub fn kept_gop(&self) -> Vec<Arc<VideoUnit>> {
        self.layers[0].feed.kept()
    }

    /// The live pictures of `layer` only, from the next one encoded; `None` if there is no
    /// such layer. Subscribing is what makes a lower layer be encoded.
    pub fn subscribe_layer(&self, layer: usize) -> Option<broadcast::Receiver<Arc<VideoUnit>>> {
        self.layers.get(layer).map(|l| l.feed.subscribe())
    }

    /// What each layer is, top first.
    pub fn layers(&self) -> Vec<LayerSpec> {
        self.layers.iter().map(|l| l.spec).collect()
    }

    /// The clock the media's RTP timestamps come from.
    pub fn rtp_clock(&self) -> RtpClock {
        self.clock
    }

    /// The live encoded video (its top layer) only, from the next picture encoded.
    pub fn subscribe_video(&self) -> broadcast::Receiver<Arc<VideoUnit>> {
        self.layers[0].feed.subscribe()
    }

    /// A new subscription to the encoded audio, if audio is on.
    pub fn subscribe_audio(&self) -> Option<broadcast::Receiver<Arc<AudioUnit>>> {
        self.audio.as_ref().map(broadcast::Sender::subscribe)
    }

    /// The encoded video's format now.
    pub fn video_description(&self) -> VideoDescription {
        match self.video_description.read() {
            Ok(description) => description.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether audio is being encoded.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// `asker` (a session id) asks the encoder of `layer` for an IDR for `reason`. Cheap and
    /// safe to call from anywhere, as often as wanted: the encoder coalesces requests (see
    /// [`keyframe::KeyframePolicy`]).
    pub fn request_keyframe(&self, layer: usize, reason: KeyframeReason, asker: &str) {
        tracing::debug!(
            asker,
            layer,
            reason = reason.as_str(),
            "key frame requested"
        );
        if let Some(layer) = self.layers.get(layer) {
            layer.keyframes.post(reason);
        }
    }

    /// `viewer` (a session id) lost `fraction` (0 to 1) of what reached it lately: the
    /// audio encoder protects for the worst viewer (see [`fec`]).
    pub fn report_loss(&self, viewer: &Arc<str>, fraction: f64) {
        self.loss.report(viewer, fraction, Instant::now());
    }

    /// A JPEG of the current picture, `width` wide (else at the stream's size); see
    /// [`snapshot`].
    pub async fn snapshot(&self, width: Option<u32>) -> Result<Bytes, snapshot::SnapshotError> {
        let passthrough = self.video_description().encoder == VideoEncoder::Passthrough;
        let gop = passthrough.then(|| self.join_video().gop);
        self.snapshots.jpeg(width, gop).await
    }

    /// JPEG snapshots encoded since the start.
    pub fn snapshots_encoded(&self) -> u64 {
        self.snapshots.encoded()
    }

    /// The packet loss (per cent) the audio encoder adds in-band FEC for; 0: none.
    pub fn audio_fec_percent(&self) -> u8 {
        self.loss.protecting()
    }

    /// Whether privacy is on: black pictures and silence go out instead of what the camera
    /// and microphone capture.
    pub fn privacy(&self) -> bool {
        self.privacy.is_on()
    }

    /// Why there is no picture to show at `now` (the camera is gone, failed, or has not
    /// delivered yet); `None` while pictures flow.
    pub fn no_picture(&self, now: Instant) -> Option<String> {
        match self.stats.since_last_frame(now) {
            Some(age) if age <= STALL => None,
            Some(_) => self.camera_gone(now),
            None => Some("no video frame yet".into()),
        }
    }

    /// Why the camera stopped delivering pictures (it failed or was unplugged), if it did:
    /// nobody may start watching then. (Before its first picture a viewer may join and wait
    /// for it, as at start; so may one while a passthrough camera's pictures wait for its
    /// next IDR.)
    pub fn camera_gone(&self, now: Instant) -> Option<String> {
        let age = self.stats.since_last_capture(now)?;
        (age > STALL).then(|| format!("no picture from the camera for {:.1} s", age.as_secs_f64()))
    }

    /// The privacy switch, for whoever turns it (the GPIO button, `PUT /api/privacy`).
    pub fn privacy_switch(&self) -> Privacy {
        self.privacy.clone()
    }
}

/// A handle with no capture or encoder behind it, for tests that publish the layers
/// themselves (the transport's simulation, `webrtc::sim`).
#[cfg(test)]
impl MediaHandle {
    /// Layers as `specs` (top first) announcing H.264 `profile_level_id`, and an audio
    /// stream if `audio`.
    pub fn detached(specs: &[LayerSpec], audio: bool, profile_level_id: &str) -> MediaHandle {
        let layers: Arc<[Layer]> = specs
            .iter()
            .map(|spec| Layer::new(*spec, KeyframeMailbox::default()))
            .collect();
        let snapshots = Arc::new(snapshot::Snapshots::default());
        let top = specs[0];
        MediaHandle {
            privacy: Privacy {
                on: Arc::default(),
                layers: layers.clone(),
                snapshots: snapshots.clone(),
                switching: Arc::default(),
            },
            layers,
            audio: audio.then(|| broadcast::channel(AUDIO_QUEUE).0),
            clock: RtpClock::new(),
            loss: Arc::default(),
            snapshots,
            stats: Arc::new(MediaStats::new()),
            video_description: Arc::new(RwLock::new(VideoDescription {
                encoder: VideoEncoder::Openh264,
                encoder_detail: "simulated".into(),
                profile_level_id: Some(profile_level_id.into()),
                width: top.width,
                height: top.height,
            })),
        }
    }

    /// Layer `index`'s feed and the key frames asked of it.
    pub fn layer_parts(&self, index: usize) -> (&VideoFeed, &KeyframeMailbox) {
        let layer = &self.layers[index];
        (&layer.feed, &layer.keyframes)
    }

    /// Where the audio is published.
    pub fn audio_sender(&self) -> Option<&broadcast::Sender<Arc<AudioUnit>>> {
        self.audio.as_ref()
    }
}

/// Privacy: black pictures and silence instead of what the camera and the microphone
/// capture, for every viewer, the recorder and snapshots; viewers stay connected.
#[derive(Clone)]
pub struct Privacy {
    on: Arc<AtomicBool>,
    layers: Arc<[Layer]>,
    snapshots: Arc<snapshot::Snapshots>,
    /// One switch at a time (the button and HTTP may switch together): each is whole before
    /// the next begins.
    switching: Arc<std::sync::Mutex<()>>,
}

impl Privacy {
    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Switches it on or off; whether that changed it. A change cuts every layer at once:
    /// the kept GOPs are dropped (and take only pictures of the new state from then on),
    /// every encoder makes its next picture an IDR (black going in, the camera's coming out),
    /// the snapshots made are dropped, sessions send nothing of the old state still on its
    /// way, and the recorder starts a new segment. Nobody who joins after this returns is
    /// shown a picture from before it.
    pub fn set(&self, on: bool) -> bool {
        let _one = self.switching.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_on() == on {
            return false;
        }
        // What new viewers may start from goes first, then the flag the encoders and the
        // sessions read: the first picture of the new state is then kept.
        for layer in self.layers.iter() {
            layer.feed.reset(on);
        }
        self.snapshots.cut(on);
        self.on.store(on, Ordering::SeqCst);
        tracing::info!(
            "privacy {}",
            match on {
                true => "on: black pictures and silence",
                false => "off: the camera and the microphone again",
            }
        );
        true
    }

    /// Switches it over (the privacy button); whether it is on now. Two presses at once
    /// each switch it once: [`Self::set`] with the opposite of what is, until one sticks.
    pub fn toggle(&self) -> bool {
        loop {
            let on = !self.is_on();
            if self.set(on) {
                return on;
            }
        }
    }

    /// The flag the capture threads read.
    fn flag(&self) -> Arc<AtomicBool> {
        self.on.clone()
    }

    /// A switch with no pipeline behind it (tests of what turns it).
    #[cfg(test)]
    pub fn detached() -> Privacy {
        Privacy {
            on: Arc::default(),
            layers: Arc::new([]),
            snapshots: Arc::default(),
            switching: Arc::default(),
        }
    }
}

/// The capture and encoder threads, started; they run until the [`Lifecycle`]'s stop.
pub struct Pipeline {
    handle: MediaHandle,
}

impl Pipeline {
    /// Opens the configured sources and starts capturing and encoding, as part of
    /// `lifecycle`.
    pub fn start(config: &Config, lifecycle: &Lifecycle) -> anyhow::Result<Pipeline> {
        let clock = RtpClock::new();
        let stats = Arc::new(MediaStats::new());
        let loss = Arc::new(fec::LossReports::default());
        let snapshots = Arc::new(snapshot::Snapshots::default());
        let v = &config.video;
        let layers = match v.encoder {
            VideoEncoder::Passthrough => 1,
            // Every layer is encoded from the same pictures by the same kind of encoder.
            VideoEncoder::Openh264 | VideoEncoder::V4l2m2m | VideoEncoder::Auto => v.layers,
        };
        let layers: Arc<[Layer]> = layers::specs(v.width, v.height, v.bitrate_kbps, layers)
            .into_iter()
            .map(|spec| Layer::new(spec, KeyframeMailbox::default()))
            .collect();
        let privacy = Privacy {
            on: Arc::default(),
            layers: layers.clone(),
            snapshots: snapshots.clone(),
            switching: Arc::default(),
        };

        // Open everything before starting anything, so a failure leaves no thread behind.
        let video = video::VideoThread::open(&config.video, clock, stats.clone(), &layers)?
            .with_privacy(privacy.flag())
            .with_snapshots(snapshots.clone());
        let audio = match config.audio.enabled {
            true => audio::AudioThread::open(&config.audio, clock, stats.clone())?.map(|audio| {
                audio
                    .with_privacy(privacy.flag())
                    .with_loss_reports(loss.clone())
            }),
            false => None,
        };
        let audio_tx = audio.as_ref().map(|_| broadcast::channel(AUDIO_QUEUE).0);
        let pipeline = Pipeline {
            handle: MediaHandle {
                layers,
                audio: audio_tx.clone(),
                clock,
                privacy,
                loss,
                snapshots,
                stats,
                video_description: video.description(),
            },
        };
        // An error below drops `lifecycle`'s last clone, stopping what was started.
        video.spawn(lifecycle)?;
        if let (Some(audio), Some(tx)) = (audio, audio_tx) {
            audio.spawn(tx, lifecycle)?;
        }
        Ok(pipeline)
    }

    /// A handle for sessions and HTTP.
    pub fn handle(&self) -> MediaHandle {
        self.handle.clone()
    }
}

/// Maps capture instants to RTP timestamps. Audio and video share the origin, so equal
/// capture times give timestamps that the sender reports map to the same wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct RtpClock {
    origin: Instant,
    /// Random start values (RFC 3550 §5.1) per medium.
    video_offset: u32,
    audio_offset: u32,
}

impl RtpClock {
    /// A clock starting now with random offsets.
    pub fn new() -> Self {
        RtpClock {
            origin: Instant::now(),
            video_offset: rand::random(),
            audio_offset: rand::random(),
        }
    }

    fn ticks(&self, at: Instant, rate: u64) -> u32 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        (nanos * u128::from(rate) / 1_000_000_000) as u32
    }

    /// 90 kHz timestamp for a picture captured at `at`.
    pub fn video(&self, at: Instant) -> u32 {
        self.ticks(at, 90_000).wrapping_add(self.video_offset)
    }

    /// 48 kHz timestamp for audio captured at `at`.
    pub fn audio(&self, at: Instant) -> u32 {
        self.ticks(at, 48_000).wrapping_add(self.audio_offset)
    }

    /// A video timestamp of this clock as 90 kHz ticks since its origin (wrapping).
    pub fn video_ticks(&self, timestamp: u32) -> u32 {
        timestamp.wrapping_sub(self.video_offset)
    }

    /// An audio timestamp of this clock as 48 kHz ticks since its origin (wrapping).
    pub fn audio_ticks(&self, timestamp: u32) -> u32 {
        timestamp.wrapping_sub(self.audio_offset)
    }

    /// Time since the clock started (encoder presentation timestamps).
    pub fn since_origin(&self, at: Instant) -> std::time::Duration {
        at.saturating_duration_since(self.origin)
    }
}

impl Default for RtpClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Lets the first of a run of repeated problems through to the log, then every `every`th,
/// so a dead camera or a broken encoder does not flood the journal at frame rate.
#[derive(Debug)]
struct LogThrottle {
    every: u32,
    count: u32,
}

impl LogThrottle {
    const fn new(every: u32) -> Self {
        LogThrottle { every, count: 0 }
    }

    /// Another occurrence: `Some(count)` when it should be logged.
    fn hit(&mut self) -> Option<u32> {
        self.count = self.count.saturating_add(1);
        (self.count == 1 || self.count.is_multiple_of(self.every)).then_some(self.count)
    }

    /// Things work again.
    fn reset(&mut self) {
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn log_throttle_lets_the_first_and_every_nth_through() {
        let mut t = LogThrottle::new(10);
        let logged: Vec<_> = (0..25).filter_map(|_| t.hit()).collect();
        assert_eq!(logged, [1, 10, 20]);
        t.reset();
        assert_eq!(t.hit(), Some(1));
    }

    #[test]
    fn rtp_clocks_advance_at_their_rates() {
        let clock = RtpClock::new();
        let t0 = clock.origin + Duration::from_secs(10);
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(clock.video(t1).wrapping_sub(clock.video(t0)), 1800);
        assert_eq!(clock.audio(t1).wrapping_sub(clock.audio(t0)), 960);
    }
}
