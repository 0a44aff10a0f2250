//! What the pipeline has done, for `/api/status`, `/healthz`, `/metrics` and logs.
//!
//! The encoder thread records every frame; readers take a snapshot. Rates are measured over
//! windows of about a second so a reader sees a steady figure without keeping history.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::KeyframeReason;
use super::input::ReopenCounts;

/// Counters and rates of the encoded media.
#[derive(Debug)]
pub struct MediaStats {
    /// Origin of `last_frame_us`.
    started: Instant,
    /// Pictures read from the camera (or test pattern).
    frames_captured: AtomicU64,
    /// Pictures read but never published: short, in a format that cannot be encoded,
    /// skipped by the encoder's rate control, or failed.
    frames_dropped: AtomicU64,
    video_frames: AtomicU64,
    video_keyframes: AtomicU64,
    /// IDRs by [`KeyframeReason::index`].
    keyframes_by_reason: [AtomicU64; KeyframeReason::ALL.len()],
    video_bytes: AtomicU64,
    audio_frames: AtomicU64,
    /// Microseconds after `started` of the last encoded picture, 0 before the first.
    last_frame_us: AtomicU64,
    /// Microseconds after `started` of the last picture read from the camera, 0 before the
    /// first (a passthrough camera's pictures before its IDR are read but not sent).
    last_captured_us: AtomicU64,
    /// Turns of the video thread's loop (a frame, a failed read, an attempt to reopen): it
    /// moves while the thread is alive, camera or not.
    heartbeat: AtomicU64,
    window: Mutex<RateWindow>,
    /// Seconds openh264 took per picture, with cutting it into RTP payloads (not capture or
    /// pixel conversion), for `/metrics`. A passthrough camera's pictures are not encoded.
    encode_seconds: Histogram,
    /// Attempts to open the camera again after it failed, and those that worked.
    pub video_reopens: std::sync::Arc<ReopenCounts>,
}

#[derive(Debug)]
struct RateWindow {
    start: Instant,
    frames: u32,
    bytes: u64,
    /// Figures of the last completed window.
    fps: f64,
    kbps: f64,
}

/// A consistent read of [`MediaStats`].
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StatsSnapshot {
    /// Pictures read from the source since start.
    #[serde(skip)]
    pub frames_captured: u64,
    /// Pictures read but not published (see [`MediaStats`]).
    #[serde(skip)]
    pub frames_dropped: u64,
    /// Pictures encoded since start.
    pub video_frames: u64,
    /// IDRs among them.
    pub video_keyframes: u64,
    /// IDRs by [`KeyframeReason::index`].
    #[serde(skip)]
    pub keyframes_by_reason: [u64; KeyframeReason::ALL.len()],
    /// Opus frames encoded since start.
    pub audio_frames: u64,
    /// Encoded pictures per second over the last second.
    pub fps: f64,
    /// Encoded video bitrate over the last second.
    pub bitrate_kbps: f64,
}

impl MediaStats {
    /// Empty statistics starting now.
    pub fn new() -> Self {
        let now = Instant::now();
        MediaStats {
            started: now,
            frames_captured: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            video_frames: AtomicU64::new(0),
            video_keyframes: AtomicU64::new(0),
            keyframes_by_reason: Default::default(),
            video_bytes: AtomicU64::new(0),
            audio_frames: AtomicU64::new(0),
            last_frame_us: AtomicU64::new(0),
            last_captured_us: AtomicU64::new(0),
            heartbeat: AtomicU64::new(0),
            window: Mutex::new(RateWindow {
                start: now,
                frames: 0,
                bytes: 0,
                fps: 0.0,
                kbps: 0.0,
            }),
            // 0.5 ms to 256 ms: a small picture on a desktop to a large one on a Pi Zero.
            encode_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 10)),
            video_reopens: Default::default(),
        }
    }

    /// A picture was read from the source.
    pub fn record_captured(&self) {
        self.frames_captured.fetch_add(1, Ordering::Relaxed);
        let us = self.started.elapsed().as_micros() as u64;
        self.last_captured_us.store(us.max(1), Ordering::Relaxed);
    }

    /// How long ago the last picture was read from the camera; `None` if none yet.
    pub fn since_last_capture(&self, now: Instant) -> Option<Duration> {
        match self.last_captured_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(now.saturating_duration_since(self.started + Duration::from_micros(us))),
        }
    }

    /// A picture that was read will not be published.
    pub fn record_dropped(&self) {
        self.frames_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The encoder took `took` for one picture.
    pub fn record_encode_time(&self, took: Duration) {
        self.encode_seconds.observe(took.as_secs_f64());
    }

    /// Seconds per encoded picture (shared: observing and encoding need no copy).
    pub fn encode_seconds(&self) -> &Histogram {
        &self.encode_seconds
    }

    /// The video thread went round its loop once.
    pub fn beat(&self) {
        self.heartbeat.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the video thread went round its loop (see [`Self::beat`]).
    pub fn heartbeat(&self) -> u64 {
        self.heartbeat.load(Ordering::Relaxed)
    }

    /// One picture of `bytes` was encoded at `now`; an IDR if `keyframe` says why.
    pub fn record_video(&self, now: Instant, bytes: usize, keyframe: Option<KeyframeReason>) {
        self.video_frames.fetch_add(1, Ordering::Relaxed);
        self.video_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(reason) = keyframe {
            self.video_keyframes.fetch_add(1, Ordering::Relaxed);
            self.keyframes_by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        }
        let us = now.saturating_duration_since(self.started).as_micros() as u64;
        self.last_frame_us.store(us.max(1), Ordering::Relaxed);
        if let Ok(mut w) = self.window.lock() {
            w.frames += 1;
            w.bytes += bytes as u64;
            let span = now.saturating_duration_since(w.start);
            if span >= Duration::from_secs(1) {
                let secs = span.as_secs_f64();
                w.fps = f64::from(w.frames) / secs;
                w.kbps = w.bytes as f64 * 8.0 / 1000.0 / secs;
                w.start = now;
                w.frames = 0;
                w.bytes = 0;
            }
        }
    }

    /// One audio frame was encoded.
    pub fn record_audio(&self) {
        self.audio_frames.fetch_add(1, Ordering::Relaxed);
    }

    /// How long ago the last picture was encoded; `None` if none yet.
    pub fn since_last_frame(&self, now: Instant) -> Option<Duration> {
        match self.last_frame_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(now.saturating_duration_since(self.started + Duration::from_micros(us))),
        }
    }

    /// Current figures. Rates read 0 once frames stop arriving for over two seconds.
    pub fn snapshot(&self, now: Instant) -> StatsSnapshot {
        let stalled = self
            .since_last_frame(now)
            .is_none_or(|d| d > Duration::from_secs(2));
        let (fps, kbps) = match self.window.lock() {
            Ok(w) if !stalled => (w.fps, w.kbps),
            _ => (0.0, 0.0),
        };
        StatsSnapshot {
            frames_captured: self.frames_captured.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            video_frames: self.video_frames.load(Ordering::Relaxed),
            video_keyframes: self.video_keyframes.load(Ordering::Relaxed),
            keyframes_by_reason: std::array::from_fn(|i| {
                self.keyframes_by_reason[i].load(Ordering::Relaxed)
            }),
            audio_frames: self.audio_frames.load(Ordering::Relaxed),
            fps: (fps * 10.0).round() / 10.0,
            bitrate_kbps: kbps.round(),
        }
    }
}

impl Default for MediaStats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_a_second() {
        let stats = MediaStats::new();
        let t0 = Instant::now();
        for i in 0..=30u64 {
            stats.record_video(
                t0 + Duration::from_millis(i * 1000 / 30),
                1000,
                (i == 0).then_some(KeyframeReason::Start),
            );
        }
        let snap = stats.snapshot(t0 + Duration::from_millis(1000));
        assert_eq!(snap.video_frames, 31);
        assert_eq!(snap.video_keyframes, 1);
        assert_eq!(snap.keyframes_by_reason[KeyframeReason::Start.index()], 1);
        assert!((snap.fps - 31.0).abs() < 1.5, "{snap:?}");
        assert!((snap.bitrate_kbps - 248.0).abs() < 12.0, "{snap:?}");
    }

    #[test]
    fn stalled_stream_reads_zero_and_reports_age() {
        let stats = MediaStats::new();
        let t0 = Instant::now();
        assert!(stats.since_last_frame(t0).is_none());
        stats.record_video(t0, 10, Some(KeyframeReason::Start));
        let later = t0 + Duration::from_secs(5);
        assert!(stats.since_last_frame(later).unwrap() >= Duration::from_secs(4));
        assert_eq!(stats.snapshot(later).fps, 0.0);
    }
}
