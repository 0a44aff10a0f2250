//! The recorder: the top layer's pictures and the Opus frames, exactly as viewers get them,
//! into fragmented MP4 segments on disk (see [`super::fmp4`]).
//!
//! A segment begins at an IDR and ends at the first IDR `segment_seconds` after it began (or
//! when the camera's SPS changes). Each second's samples are a fragment, written and synced
//! at once, so a crash or power cut loses at most the last second; every earlier fragment,
//! and every earlier segment, stays playable. File names are the UTC start time
//! (`2026-12-02T05-50-12Z.mp4`), so they sort in time order.
//!
//! A task takes the units off the pipeline's broadcast rings and hands them, bounded, to a
//! thread of its own that writes: the disk never holds up the runtime or a viewer. If the
//! disk fails (full, gone), the recorder warns, drops the segment and tries again with a new
//! one ten seconds later; live viewers notice nothing.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use onair_config::Record;
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

use super::fmp4::{self, AudioTrack, Sample, VideoTrack};
use super::retention::{self, Limits};
use crate::lifecycle::{Lifecycle, Stop};
use crate::media::{AudioUnit, Joined, MediaHandle, RtpClock, VideoUnit};

/// Units waiting for the writing thread; more are dropped (and the segment resumes at the
/// next IDR).
const QUEUE: usize = 512;

/// A fragment holds about this much (in 90 kHz ticks): one second.
const FRAGMENT_TICKS: u64 = 90_000;

/// A key frame this close to a segment's length (90 kHz ticks: 250 ms) ends it: key frames
/// come on capture times, which jitter, and one due exactly then may come a little early.
const SEGMENT_SLACK: u64 = 22_500;

/// After a write fails, the next segment is tried this much later.
const RETRY: Duration = Duration::from_secs(10);

/// Retention is checked at least this often, besides at every new segment.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Opus frames (20 ms each) a fragment may gather without a picture: 5 s.
const AUDIO_WITHOUT_PICTURES: usize = 250;

/// An Opus frame: 20 ms at 48 kHz.
const OPUS_FRAME_TICKS: u32 = 960;

/// The directory recordings go to: `record.dir`, else `recordings` in the state directory.
pub fn directory(config: &Record) -> PathBuf {
    config.dir.clone().unwrap_or_else(|| {
        let state = std::env::var_os("STATE_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/onair"));
        state.join("recordings")
    })
}

/// How long the writer may take after the stop to write what it has and close its segment
/// (syncing it to an SD card can take a while): the daemon waits that long for it.
const CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// Starts recording `media` as `config` says, as part of `lifecycle` (at its stop the writer
/// writes what it has, closes its segment and ends, within about a second, waited for up to
/// [`CLOSE_WITHIN`]); does nothing when recording is off. Fails when the directory cannot be
/// made or written.
pub fn start(config: &Record, media: &MediaHandle, lifecycle: &Lifecycle) -> anyhow::Result<()> {
    if !config.enabled {
        return Ok(());
    }
    let dir = directory(config);
    writable(&dir).with_context(|| {
        format!(
            "record.dir {}: cannot record there (record.enabled = true)",
            dir.display()
        )
    })?;
    repair(&dir);
    let limits = Limits {
        max_age: config.max_age(),
        max_bytes: config.max_bytes,
        min_free: config.min_free_mb.saturating_mul(1_000_000),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let writer = Writer::new(
        dir.clone(),
        limits,
        u64::from(config.segment_seconds) * 90_000,
        media.clone(),
    );
    lifecycle.thread_ending_within("onair-record", CLOSE_WITHIN, move |stop| {
        writer.run(&rx, &stop)
    })?;
    lifecycle.spawn(feed(media.clone(), tx));
    info!(dir = %dir.display(), "recording: {} s segments", config.segment_seconds);
    Ok(())
}

/// Makes `dir` if need be and checks a file can be written in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".onair-write-test");
    std::fs::write(&probe, b"onair")?;
    std::fs::remove_file(&probe)
}

/// Cuts the newest segment back to its last whole fragment if it ends in a torn one (a
/// crash or power cut in the middle of a write): ffmpeg (and so Chromium) refuses a whole
/// file whose last `moof` is cut short. Older segments were closed, or were repaired when
/// they were the newest.
fn repair(dir: &Path) {
    let Ok(segments) = list(dir) else {
        return;
    };
    if let Some(segment) = segments.into_iter().max_by(|a, b| a.name.cmp(&b.name)) {
        let path = dir.join(&segment.name);
        let cut = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .and_then(|mut file| {
                let whole = whole_length(&mut file)?;
                if whole < segment.bytes {
                    file.set_len(whole)?;
                }
                Ok(segment.bytes - whole.min(segment.bytes))
            });
        match cut {
            Ok(0) => {}
            Ok(bytes) => warn!(
                segment = %segment.name,
                "recording: the segment ended in a torn fragment (a crash or power cut); cut its last {bytes} bytes"
            ),
            Err(err) => {
                warn!(segment = %segment.name, "recording: cannot check the segment: {err}")
            }
        }
    }
}

/// How much of an MP4 file is whole boxes at the top level, a `moof` counting only with the
/// `mdat` after it.
fn whole_length(file: &mut (impl std::io::Read + std::io::Seek)) -> std::io::Result<u64> {
    let len = file.seek(std::io::SeekFrom::End(0))?;
    let (mut at, mut whole) = (0u64, 0u64);
    let mut header = [0u8; 16];
    while at + 8 <= len {
        file.seek(std::io::SeekFrom::Start(at))?;
        file.read_exact(&mut header[..8])?;
        let mut size = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if size == 1 && at + 16 <= len {
            file.read_exact(&mut header[8..])?;
            size = u64::from_be_bytes(header[8..16].try_into().unwrap_or([0; 8]));
        }
        if size < 8 || at + size > len {
            break;
        }
        at += size;
        if &header[4..8] != b"moof" {
            whole = at;
        }
    }
    Ok(whole)
}

/// What the writing thread gets.
enum Unit {
    Video(Arc<VideoUnit>),
    Audio(Arc<AudioUnit>),
    /// Units were lost on the way: resume at the next IDR.
    Gap,
}

/// Takes the units off the pipeline into the writing thread's queue.
async fn feed(media: MediaHandle, tx: SyncSender<Unit>) {
    let Joined { gop, mut live } = media.join_video();
    let mut audio = media.subscribe_audio();
    let mut queue = Handing {
        tx,
        owed_gap: false,
    };
    for unit in gop {
        queue.hand(Unit::Video(unit));
    }
    loop {
        let unit = tokio::select! {
            video = live.recv() => match video {
                Ok(unit) => Unit::Video(unit),
                Err(RecvError::Lagged(_)) => Unit::Gap,
                Err(RecvError::Closed) => return,
            },
            Some(sound) = next_audio(&mut audio) => match sound {
                Ok(unit) => Unit::Audio(unit),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => { audio = None; continue }
            },
        };
        if !queue.hand(unit) {
            return;
        }
    }
}

async fn next_audio(
    audio: &mut Option<tokio::sync::broadcast::Receiver<Arc<AudioUnit>>>,
) -> Option<Result<Arc<AudioUnit>, RecvError>> {
    match audio {
        Some(rx) => Some(rx.recv().await),
        None => std::future::pending().await,
    }
}

/// The writing thread's queue, from the feeding side.
struct Handing {
    tx: SyncSender<Unit>,
    /// Units were dropped (the queue was full): the thread must hear of the gap before
    /// anything after it.
    owed_gap: bool,
}

impl Handing {
    /// Queues `unit`, after the gap owed if any; a full queue drops it and owes a gap.
    /// `false` once the thread is gone.
    fn hand(&mut self, unit: Unit) -> bool {
        if self.owed_gap {
            match self.tx.try_send(Unit::Gap) {
                Ok(()) => self.owed_gap = false,
                Err(TrySendError::Full(_)) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match self.tx.try_send(unit) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.owed_gap = true;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Extends a wrapping 32-bit timestamp to 64 bits.
#[derive(Debug, Default)]
struct Unwrap {
    last: Option<u64>,
}

impl Unwrap {
    fn extend(&mut self, ticks: u32) -> u64 {
        let extended = match self.last {
            None => u64::from(ticks),
            Some(last) => {
                let delta = ticks.wrapping_sub(last as u32).cast_signed();
                last.saturating_add_signed(i64::from(delta))
            }
        };
        self.last = Some(extended);
        extended
    }
}

/// The writing thread's state.
struct Writer {
    dir: PathBuf,
    limits: Limits,
    segment_ticks: u64,
    /// The pipeline: its clock, and the picture size for a new segment's header.
    media: MediaHandle,
    clock: RtpClock,
    video_time: Unwrap,
    audio_time: Unwrap,
    segment: Option<Segment>,
    /// After a failure, no new segment before this.
    paused_until: Option<Instant>,
    /// Opus channels, from the packets' TOC byte.
    channels: u16,
    last_retention: Option<Instant>,
    /// The segment being written holds privacy pictures: switching privacy cuts it.
    private: bool,
}

/// The segment being written.
struct Segment {
    file: File,
    name: String,
    sps: Bytes,
    pps: Bytes,
    /// 90 kHz and 48 kHz ticks (since the clock's origin) at its start.
    video_origin: u64,
    audio_origin: u64,
    sequence: u32,
    fragment: Fragment,
}

/// The samples of the fragment being gathered; the newest of each track waits for the next
/// one, which gives its duration.
#[derive(Default)]
struct Fragment {
    /// 90 kHz ticks since the segment's start at which it began.
    start: u64,
    video: Vec<Sample>,
    video_start: Option<u64>,
    pending_video: Option<(u64, Bytes, bool)>,
    audio: Vec<Sample>,
    audio_start: Option<u64>,
    pending_audio: Option<(u64, Bytes)>,
}

impl Writer {
    fn new(dir: PathBuf, limits: Limits, segment_ticks: u64, media: MediaHandle) -> Self {
        Writer {
            dir,
            limits,
            segment_ticks,
            clock: media.rtp_clock(),
            media,
            video_time: Unwrap::default(),
            audio_time: Unwrap::default(),
            segment: None,
            paused_until: None,
            channels: 1,
            last_retention: None,
            private: false,
        }
    }

    fn run(mut self, rx: &Receiver<Unit>, stop: &Stop) {
        let _ = self.retain();
        while !stop.is_stopped() {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(Unit::Video(unit)) => self.video(&unit),
                Ok(Unit::Audio(unit)) => self.audio(&unit),
                Ok(Unit::Gap) => self.close(None),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self
                .last_retention
                .is_none_or(|at| at.elapsed() >= RETENTION_EVERY)
            {
                let _ = self.retain();
            }
        }
        self.close(None);
    }

    fn video(&mut self, unit: &VideoUnit) {
        let ticks = self
            .video_time
            .extend(self.clock.video_ticks(unit.rtp_timestamp));
        let (parameters, sample) = split_parameter_sets(&avcc(&unit.access_unit));
        let starts = unit.keyframe && parameters.is_some();
        if let (Some(segment), true) = (&self.segment, starts) {
            let long =
                ticks.saturating_sub(segment.video_origin) + SEGMENT_SLACK >= self.segment_ticks;
            let changed = parameters.as_ref() != Some(&(segment.sps.clone(), segment.pps.clone()));
            if long || changed || unit.private != self.private {
                self.close(Some(ticks));
            }
        }
        if self.segment.is_none() {
            let Some((sps, pps)) = parameters.filter(|_| starts) else {
                return;
            };
            self.open(ticks, sps, pps);
            self.private = unit.private;
        }
        let Some(segment) = self.segment.as_mut() else {
            return;
        };
        let at = ticks.saturating_sub(segment.video_origin);
        segment.fragment.video_sample(at, sample, unit.keyframe);
        if at.saturating_sub(segment.fragment.start) >= FRAGMENT_TICKS {
            self.flush();
        }
    }

    fn audio(&mut self, unit: &AudioUnit) {
        let ticks = self
            .audio_time
            .extend(self.clock.audio_ticks(unit.rtp_timestamp));
        if let Some(toc) = unit.payload.first() {
            self.channels = if toc & 0x04 != 0 { 2 } else { 1 };
        }
        let Some(segment) = self.segment.as_mut() else {
            return;
        };
        // Sound from before the segment's first picture belongs to the one before.
        let Some(at) = ticks.checked_sub(segment.audio_origin) else {
            return;
        };
        segment.fragment.audio_sample(at, unit.payload.clone());
        // Fragments end on pictures: without any (the camera is gone) the segment ends, and
        // the next begins with the camera's next IDR.
        if segment.fragment.audio.len() > AUDIO_WITHOUT_PICTURES {
            warn!("recording: no pictures for 5 s; the segment ends until the camera is back");
            self.close(None);
        }
    }

    fn open(&mut self, ticks: u64, sps: Bytes, pps: Bytes) {
        if self
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            return;
        }
        if !self.retain() {
            warn!("recording: less than record.min_free_mb free on the disk; waiting for room");
            self.paused_until = Some(Instant::now() + RETRY);
            return;
        }
        match self.create(ticks, sps, pps) {
            Ok(segment) => {
                info!(segment = %segment.name, "recording: new segment");
                self.segment = Some(segment);
            }
            Err(err) => self.failed(&err),
        }
    }

    fn create(&self, ticks: u64, sps: Bytes, pps: Bytes) -> anyhow::Result<Segment> {
        let description = self.media.video_description();
        let video = VideoTrack {
            width: description.width,
            height: description.height,
            sps: sps.to_vec(),
            pps: pps.to_vec(),
        };
        let audio = self.media.has_audio().then_some(AudioTrack {
            channels: self.channels,
        });
        let init = fmp4::init_segment(&video, audio.as_ref())
            .map_err(|e| anyhow::anyhow!("the MP4 header: {e}"))?;
        let name = self.free_name();
        let path = self.dir.join(&name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.write_all(&init)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Segment {
            file,
            name,
            sps,
            pps,
            video_origin: ticks,
            audio_origin: ticks * 48_000 / 90_000,
            sequence: 0,
            fragment: Fragment::default(),
        })
    }

    /// A file name for a segment starting now that is not taken.
    fn free_name(&self) -> String {
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
            .to_string()
            .replace(':', "-");
        let stem = stamp.trim_end_matches('Z');
        (0..)
            .map(|n| match n {
                0 => format!("{stem}Z.mp4"),
                n => format!("{stem}Z-{n}.mp4"),
            })
            .find(|name| !self.dir.join(name).exists())
            .unwrap_or_else(|| format!("{stem}Z.mp4"))
    }

    /// Writes the fragment gathered so far (without the samples still waiting).
    fn flush(&mut self) {
        let Some(segment) = self.segment.as_mut() else {
            return;
        };
        let (ready, carried) = std::mem::take(&mut segment.fragment).split();
        let written = segment.write(&ready);
        segment.fragment = carried;
        if let Err(err) = written {
            self.segment = None;
            self.failed(&err);
            return;
        }
        // Every second, so the limits hold while a segment grows.
        if !self.retain() {
            self.close(None);
            self.failed(&anyhow::anyhow!(
                "less than record.min_free_mb free on the disk with every older segment deleted"
            ));
        }
    }

    /// Ends the segment: the waiting samples go in its last fragment (the picture's lasting
    /// until `next` if known, else one frame).
    fn close(&mut self, next: Option<u64>) {
        let Some(mut segment) = self.segment.take() else {
            return;
        };
        let next = next.map(|ticks| ticks.saturating_sub(segment.video_origin));
        let last = std::mem::take(&mut segment.fragment).last(next);
        match segment.write(&last) {
            Ok(()) => info!(segment = %segment.name, "recording: segment closed"),
            Err(err) => self.failed(&err),
        }
    }

    fn failed(&mut self, err: &anyhow::Error) {
        warn!(
            "recording: {err:#}; live viewers are not affected, trying a new segment in {} s",
            RETRY.as_secs()
        );
        self.paused_until = Some(Instant::now() + RETRY);
    }

    /// Deletes what the limits say must go; whether the disk then has the free space
    /// `min_free_mb` asks for.
    fn retain(&mut self) -> bool {
        self.last_retention = Some(Instant::now());
        let segments = match list(&self.dir) {
            Ok(segments) => segments,
            Err(err) => {
                warn!(dir = %self.dir.display(), "recording: cannot list the segments: {err}");
                return true;
            }
        };
        let free = free_bytes(&self.dir).unwrap_or(u64::MAX);
        let keep = self.segment.as_ref().map(|s| s.name.as_str());
        let mut freed = 0;
        for name in retention::to_delete(&segments, keep, SystemTime::now(), free, self.limits) {
            let size = segments
                .iter()
                .find(|s| s.name == name)
                .map_or(0, |s| s.bytes);
            match std::fs::remove_file(self.dir.join(&name)) {
                Ok(()) => {
                    freed += size;
                    info!(segment = %name, "recording: deleted (retention)");
                }
                Err(err) => warn!(segment = %name, "recording: cannot delete: {err}"),
            }
        }
        free.saturating_add(freed) >= self.limits.min_free
    }
}

impl Segment {
    fn write(&mut self, fragment: &Fragment) -> anyhow::Result<()> {
        if fragment.video.is_empty() && fragment.audio.is_empty() {
            return Ok(());
        }
        self.sequence += 1;
        let bytes = fmp4::fragment(
            self.sequence,
            &fragment.video,
            fragment.video_start.unwrap_or(fragment.start),
            &fragment.audio,
            fragment.audio_start.unwrap_or(0),
        )
        .map_err(|e| anyhow::anyhow!("an MP4 fragment: {e}"))?;
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("writing {}", self.name))
    }
}

impl Fragment {
    fn video_sample(&mut self, at: u64, data: Bytes, keyframe: bool) {
        if let Some((before, data, keyframe)) = self.pending_video.take() {
            let duration = u32::try_from(at.saturating_sub(before)).unwrap_or(u32::MAX);
            self.video_start.get_or_insert(before);
            self.video.push(Sample {
                data,
                duration: duration.max(1),
                keyframe,
            });
        }
        self.pending_video = Some((at, data, keyframe));
    }

    fn audio_sample(&mut self, at: u64, data: Bytes) {
        if let Some((before, data)) = self.pending_audio.take() {
            let duration = u32::try_from(at.saturating_sub(before)).unwrap_or(OPUS_FRAME_TICKS);
            self.audio_start.get_or_insert(before);
            self.audio.push(Sample {
                data,
                duration: duration.clamp(1, 4 * OPUS_FRAME_TICKS),
                keyframe: true,
            });
        }
        self.pending_audio = Some((at, data));
    }

    /// The samples ready to write, and the fragment that follows with the waiting ones.
    fn split(mut self) -> (Fragment, Fragment) {
        let pending_video = self.pending_video.take();
        let carried = Fragment {
            start: pending_video.as_ref().map_or(self.start, |(at, _, _)| *at),
            pending_video,
            pending_audio: self.pending_audio.take(),
            ..Fragment::default()
        };
        (self, carried)
    }

    /// Everything, the waiting samples too: the picture lasting until `next` (else as long
    /// as the one before it), the sound one frame.
    fn last(mut self, next: Option<u64>) -> Fragment {
        if let Some((at, data, keyframe)) = self.pending_video.take() {
            let previous = self.video.last().map_or(3000, |s| s.duration);
            let duration = next.map_or(previous, |n| {
                u32::try_from(n.saturating_sub(at)).unwrap_or(previous)
            });
            self.video_start.get_or_insert(at);
            self.video.push(Sample {
                data,
                duration: duration.max(1),
                keyframe,
            });
        }
        if let Some((at, data)) = self.pending_audio.take() {
            self.audio_start.get_or_insert(at);
            self.audio.push(Sample {
                data,
                duration: OPUS_FRAME_TICKS,
                keyframe: true,
            });
        }
        self
    }
}

/// An Annex-B access unit (NAL units after start codes) as AVCC (each NAL unit after its
/// 4-byte length), as MP4 wants. Zero bytes before a start code (allowed padding) are
/// not part of the NAL unit before it.
fn avcc(annex_b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(annex_b.len() + 16);
    let mut nal_start: Option<usize> = None;
    let mut i = 0;
    let push = |nal: &[u8], out: &mut Vec<u8>| {
        let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        if end > 0 {
            out.extend_from_slice(&(end as u32).to_be_bytes());
            out.extend_from_slice(&nal[..end]);
        }
    };
    while i + 3 <= annex_b.len() {
        if annex_b[i..i + 3] == [0, 0, 1] {
            if let Some(start) = nal_start {
                push(&annex_b[start..i], &mut out);
            }
            i += 3;
            nal_start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(start) = nal_start {
        push(&annex_b[start..], &mut out);
    }
    out
}

/// The finished segments in `dir`, with their sizes and last writes.
fn list(dir: &Path) -> std::io::Result<Vec<retention::Segment>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".mp4") {
            continue;
        }
        let meta = entry.metadata()?;
        segments.push(retention::Segment {
            name,
            bytes: meta.len(),
            start: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(segments)
}

/// Bytes free for us on the file system holding `dir`.
// statvfs counts are u64 on 64-bit Linux but u32 on 32-bit ARM (armhf).
#[allow(clippy::useless_conversion)]
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).ok()?;
    let blocks = u64::from(stat.blocks_available());
    Some(blocks.saturating_mul(u64::from(stat.fragment_size())))
}

/// The SPS and PPS of an AVCC access unit, and the access unit without them.
fn split_parameter_sets(au: &[u8]) -> (Option<(Bytes, Bytes)>, Bytes) {
    let (mut sps, mut pps) = (None, None);
    let mut rest = Vec::with_capacity(au.len());
    let mut at = 0;
    while at + 4 <= au.len() {
        let len = u32::from_be_bytes([au[at], au[at + 1], au[at + 2], au[at + 3]]) as usize;
        let end = (at + 4 + len).min(au.len());
        let nal = &au[at + 4..end];
        match nal.first().map(|b| b & 0x1f) {
            Some(7) => sps = Some(Bytes::copy_from_slice(nal)),
            Some(8) => pps = Some(Bytes::copy_from_slice(nal)),
            // Access unit delimiters carry nothing a file needs.
            Some(9) => {}
            _ => rest.extend_from_slice(&au[at..end]),
        }
        at = end;
    }
    (sps.zip(pps), Bytes::from(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A top-level box of `size` bytes (header included).
    fn mp4_box(kind: &[u8; 4], size: u32) -> Vec<u8> {
        let mut bytes = size.to_be_bytes().to_vec();
        bytes.extend_from_slice(kind);
        bytes.resize(size as usize, 0);
        bytes
    }

    #[test]
    fn a_torn_fragment_is_not_counted_whole() {
        let mut file: Vec<u8> = [
            mp4_box(b"ftyp", 16),
            mp4_box(b"moov", 40),
            mp4_box(b"moof", 24),
            mp4_box(b"mdat", 100),
        ]
        .concat();
        let whole = file.len() as u64;
        let length = |bytes: &[u8]| whole_length(&mut std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(length(&file), whole);
        // The next fragment cut inside its moof, then inside its mdat, then whole.
        file.extend(mp4_box(b"moof", 24));
        assert_eq!(length(&file[..file.len() - 10]), whole);
        assert_eq!(length(&file), whole, "a moof without its mdat");
        file.extend(mp4_box(b"mdat", 50));
        assert_eq!(length(&file[..file.len() - 1]), whole);
        assert_eq!(length(&file), whole + 74);
    }

    #[test]
    fn timestamps_are_extended_across_the_wrap() {
        let mut time = Unwrap::default();
        assert_eq!(time.extend(u32::MAX - 10), u64::from(u32::MAX - 10));
        assert_eq!(time.extend(5), u64::from(u32::MAX) + 6);
        assert_eq!(time.extend(3), u64::from(u32::MAX) + 4, "a step back");
    }

    #[test]
    fn a_dropped_unit_is_a_gap_before_anything_after_it() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let mut queue = Handing {
            tx,
            owed_gap: false,
        };
        let audio = || {
            Unit::Audio(Arc::new(AudioUnit {
                payload: Bytes::from_static(b"x"),
                rtp_timestamp: 0,
            }))
        };
        assert!(queue.hand(audio()) && queue.hand(audio()));
        assert!(queue.hand(audio()), "full: dropped");
        assert!(matches!(rx.try_recv(), Ok(Unit::Audio(_))));
        assert!(matches!(rx.try_recv(), Ok(Unit::Audio(_))));
        // Room again: the gap comes first, then the unit.
        assert!(queue.hand(audio()));
        assert!(matches!(rx.try_recv(), Ok(Unit::Gap)));
        assert!(matches!(rx.try_recv(), Ok(Unit::Audio(_))));
        assert!(rx.try_recv().is_err());
        drop(rx);
        assert!(!queue.hand(audio()), "the thread is gone");
    }

    #[test]
    fn annex_b_becomes_length_prefixed() {
        // 4- and 3-byte start codes, and a zero byte of padding before the second.
        let annex_b = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 4, 5, 6,
        ];
        assert_eq!(
            avcc(&annex_b),
            [
                0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 4, 0x65, 4, 5, 6
            ]
        );
        assert!(avcc(&[1, 2, 3]).is_empty(), "no start code, no NAL unit");
    }

    #[test]
    fn parameter_sets_come_out_of_the_access_unit() {
        let nal = |kind: u8, len: usize| {
            let mut n = (len as u32).to_be_bytes().to_vec();
            n.push(kind);
            n.resize(4 + len, 0xAB);
            n
        };
        let au = [nal(9, 2), nal(7, 10), nal(8, 4), nal(5, 30)].concat();
        let (parameters, rest) = split_parameter_sets(&au);
        let (sps, pps) = parameters.unwrap();
        assert_eq!((sps.len(), pps.len()), (10, 4));
        assert_eq!(sps[0], 7);
        assert_eq!(&rest[..], &nal(5, 30)[..], "the picture alone, no AUD");
    }
}
