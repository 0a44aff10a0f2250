//! From the shared encoded units to one viewer's RTP stream.
//!
//! Payloads are cut once by the encoder thread; per viewer only the 12-byte RTP header is
//! written (its own SSRC and sequence numbers, the negotiated payload type) around the
//! shared payload bytes.
//!
//! A joining viewer starts from the newest IDR and the pictures since it (the GOP kept by
//! `media::gop`), replayed fast until it is live (`webrtc::catch_up`), so its first picture
//! is on screen as soon as SRTP is up and nobody else's stream gets an IDR for it. Only when
//! no GOP is at hand does the viewer ask the encoder for an IDR (reason `join`).
//!
//! A viewer that falls so far behind that the broadcast ring overwrote pictures it had not
//! sent skips to the next IDR (and asks for one, reason `lag`): sending P frames whose
//! references it never got would only show corruption. It rejoins at the live end of the
//! ring, not at the oldest unit still in it, so it does not replay seconds of old pictures.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::rtp::{Header, Packet};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use super::catch_up::CatchUp;
use super::congestion::Estimate;
use super::engine::RtpOut;
use super::figures::Watched;
use super::layer_choice::LayerChoice;
use crate::media::keyframe::ViewerAsks;
use crate::media::{AudioUnit, Joined, KeyframeReason, LayerSpec, MediaHandle, VideoUnit};

/// One of a viewer's outgoing tracks, negotiated and ready to feed.
pub struct Outgoing {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Where its RTP goes: the sender on the viewer's connection, in the engine.
    pub rtp: RtpOut,
    /// Our SSRC on it.
    pub ssrc: u32,
    /// The payload type the answer gave the codec.
    pub payload_type: u8,
}

/// Starts feeding a connected viewer's tracks; `session` names the viewer in key frame
/// requests (which come from `feedback`), `watched` holds its estimate and gets its layer.
/// The tasks end when aborted (the session closes) or when their connection is gone.
pub fn start(
    media: &MediaHandle,
    outgoing: &[Outgoing],
    feedback: Option<mpsc::Receiver<KeyframeReason>>,
    session: &str,
    watched: &Arc<Watched>,
    tasks: &mut JoinSet<()>,
) {
    let session: Arc<str> = session.into();
    let mut feedback = feedback;
    for out in outgoing {
        let track = out.rtp.clone();
        match out.kind {
            RtpCodecKind::Audio => {
                if let Some(units) = media.subscribe_audio() {
                    let stamper = RtpStamper::new(out.ssrc, out.payload_type, false);
                    let loss = Loss {
                        media: media.clone(),
                        session: session.clone(),
                        watched: watched.clone(),
                    };
                    tasks.spawn(audio(track, stamper, units, loss));
                }
            }
            _ => {
                let stamper = RtpStamper::new(out.ssrc, out.payload_type, true);
                let joined = media.join_video();
                let viewer = Viewer {
                    media: media.clone(),
                    session: session.clone(),
                    asks: Arc::default(),
                    watched: watched.clone(),
                };
                tasks.spawn(video(track, stamper, joined, viewer.clone()));
                if let Some(feedback) = feedback.take() {
                    tasks.spawn(keyframe_requests(feedback, viewer));
                }
            }
        }
    }
}

/// Writes RTP headers for one viewer's stream of one medium.
#[derive(Debug)]
pub struct RtpStamper {
    ssrc: u32,
    payload_type: u8,
    next_sequence: u16,
    /// Timestamp of the last picture sent: the next must be later.
    last_timestamp: Option<u32>,
    /// Video only: nothing is sent until an IDR arrives.
    waiting_for_keyframe: bool,
}

impl RtpStamper {
    /// A stream with a random first sequence number (RFC 3550 §5.1).
    pub fn new(ssrc: u32, payload_type: u8, wait_for_keyframe: bool) -> Self {
        RtpStamper {
            ssrc,
            payload_type,
            next_sequence: rand::random(),
            last_timestamp: None,
            waiting_for_keyframe: wait_for_keyframe,
        }
    }

    /// Units were lost before this viewer sent them: wait for the next IDR.
    pub fn lost_units(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// Leaves out the next `count` sequence numbers (see [`Gaps`]); the next one used.
    pub fn skip(&mut self, count: u16) -> u16 {
        self.next_sequence = self.next_sequence.wrapping_add(count);
        self.next_sequence
    }

    /// The RTP packets of one picture, none while waiting for an IDR. The marker bit ends
    /// the picture.
    pub fn video<'a>(&'a mut self, unit: &'a VideoUnit) -> impl Iterator<Item = Packet> + 'a {
        self.video_at(unit, unit.rtp_timestamp)
    }

    /// The RTP packets of one picture sent with `timestamp` instead of its own (a picture
    /// caught up with, see `webrtc::catch_up`). Timestamps stay increasing: a picture
    /// stamped before the last one sent goes one tick after it.
    pub fn video_at<'a>(
        &'a mut self,
        unit: &'a VideoUnit,
        timestamp: u32,
    ) -> impl Iterator<Item = Packet> + 'a {
        if unit.keyframe {
            self.waiting_for_keyframe = false;
        }
        let timestamp = match self.last_timestamp {
            Some(last) if timestamp.wrapping_sub(last) as i32 <= 0 => last.wrapping_add(1),
            _ => timestamp,
        };
        if !self.waiting_for_keyframe {
            self.last_timestamp = Some(timestamp);
        }
        let payloads = match self.waiting_for_keyframe {
            true => &unit.payloads[..0],
            false => &unit.payloads[..],
        };
        let last = payloads.len().saturating_sub(1);
        payloads
            .iter()
            .enumerate()
            .map(move |(i, payload)| self.packet(i == last, timestamp, payload.clone()))
    }

    /// The RTP packet of one Opus frame.
    pub fn audio(&mut self, unit: &AudioUnit) -> Packet {
        self.packet(false, unit.rtp_timestamp, unit.payload.clone())
    }

    fn packet(&mut self, marker: bool, timestamp: u32, payload: bytes::Bytes) -> Packet {
        let sequence_number = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        Packet {
            header: Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        }
    }
}

/// Who a viewer's key frame requests come from.
#[derive(Clone)]
struct Viewer {
    media: MediaHandle,
    session: Arc<str>,
    /// Its PLIs and FIRs, limited (shared by its video and key frame request tasks).
    asks: Arc<Mutex<ViewerAsks>>,
    /// Its estimate, and the layer it is on.
    watched: Arc<Watched>,
}

impl Viewer {
    /// An IDR of the layer the viewer is on.
    fn request_keyframe(&self, reason: KeyframeReason) {
        let layer = self.watched.layer();
        self.media.request_keyframe(layer, reason, &self.session);
    }

    /// The viewer asked (PLI or FIR): passed on now, or held (see [`ViewerAsks`]).
    fn ask(&self, reason: KeyframeReason) {
        let now = Instant::now();
        if let Some(reason) = self.asks.lock().ok().and_then(|mut a| a.ask(now, reason)) {
            self.request_keyframe(reason);
        }
    }

    /// Passes on a held request whose time has come.
    fn release(&self) {
        let now = Instant::now();
        if let Some(reason) = self.asks.lock().ok().and_then(|mut a| a.release(now)) {
            self.request_keyframe(reason);
        }
    }

    fn held_until(&self) -> Option<Instant> {
        self.asks.lock().ok().and_then(|a| a.due())
    }

    /// The switch to make for `target` while on `current`, given the one under way:
    /// none when staying, the one under way if it goes there already, else a new one (which
    /// subscribes to the layer, making it encoded, and asks for its IDR).
    fn switch(&self, target: usize, current: usize, under_way: Option<Switch>) -> Option<Switch> {
        if target == current {
            return None;
        }
        if let Some(switch) = under_way.filter(|s| s.layer == target) {
            return Some(switch);
        }
        let live = self.media.subscribe_layer(target)?;
        debug!(session = %self.session, from = current, to = target, "moving the viewer to another layer");
        self.media
            .request_keyframe(target, KeyframeReason::Switch, &self.session);
        Some(Switch {
            layer: target,
            live,
        })
    }

    /// An IDR went out to this viewer.
    fn idr_sent(&self) {
        if let Ok(mut asks) = self.asks.lock() {
            asks.idr_sent();
        }
    }
}

/// Sends the shared video to one viewer until the track is gone or the source stops:
/// first the GOP it joined with (or, without one, an IDR asked for), then live pictures.
async fn video(track: RtpOut, mut stamper: RtpStamper, joined: Joined, viewer: Viewer) {
    let Joined { gop, mut live } = joined;
    let mut gaps = Gaps::default();
    if gop.is_empty() {
        viewer.request_keyframe(KeyframeReason::Join);
    } else {
        debug!(session = %viewer.session, pictures = gop.len(), "catching up from the kept GOP");
    }
    let mut catch_up = CatchUp::new(gop, viewer.media.rtp_clock());
    while !catch_up.is_live() {
        // What was published meanwhile goes behind the queue (before the queue can run dry:
        // once it has, pictures come from `live` below).
        loop {
            match live.try_recv() {
                Ok(unit) => catch_up.push(unit),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(_)) => {
                    // Only if sending stalls for seconds: go live from the next IDR.
                    catch_up = CatchUp::new(Vec::new(), viewer.media.rtp_clock());
                    fell_behind(&viewer, &mut stamper, &mut live);
                    break;
                }
                Err(TryRecvError::Closed) => return,
            }
        }
        if let Some(next) = catch_up.next(Instant::now())
            && !send(
                &track,
                (&mut stamper, &mut gaps),
                &next.unit,
                next.timestamp,
                &viewer,
            )
            .await
        {
            return;
        }
        if let Some(due) = catch_up.due() {
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let mut choice = LayerChoice::new(viewer.media.layers().iter().map(bits_per_second).collect());
    let mut switching: Option<Switch> = None;
    let mut choose = tokio::time::interval(CHOOSE_EVERY);
    choose.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            received = live.recv() => match received {
                Ok(unit) => {
                    if !send(&track, (&mut stamper, &mut gaps), &unit, unit.rtp_timestamp, &viewer).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => fell_behind(&viewer, &mut stamper, &mut live),
                Err(RecvError::Closed) => return,
            },
            Some(unit) = next_of(&mut switching) => {
                // The target layer's IDR: the viewer moves there with it.
                let Some(Switch { layer, live: target }) = switching.take() else {
                    continue;
                };
                if !send(&track, (&mut stamper, &mut gaps), &unit, unit.rtp_timestamp, &viewer).await {
                    return;
                }
                live = target;
                choice.switched(Instant::now(), layer);
                viewer.watched.set_layer(layer);
                debug!(session = %viewer.session, layer, "viewer moved to another layer");
            }
            _ = choose.tick() => {
                let target = choice.update(Instant::now(), viewer.watched.estimate());
                switching = viewer.switch(target, choice.current(), switching.take());
            }
        }
    }
}

/// How often a viewer's layer is reconsidered.
const CHOOSE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A viewer on its way to another layer: that layer's pictures, until its next IDR.
struct Switch {
    layer: usize,
    live: Receiver<Arc<VideoUnit>>,
}

/// The next IDR of the layer being switched to (other pictures are skipped); pending
/// without a switch under way.
async fn next_of(switching: &mut Option<Switch>) -> Option<Arc<VideoUnit>> {
    let Some(switch) = switching.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match switch.live.recv().await {
            Ok(unit) if unit.keyframe => return Some(unit),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return std::future::pending().await,
        }
    }
}

fn bits_per_second(spec: &LayerSpec) -> f64 {
    f64::from(spec.bitrate_kbps) * 1000.0
}

/// Sends one picture stamped `timestamp`; `false` once the track is gone. A picture of the
/// other privacy state (encoded just before privacy was switched, and still on its way) is
/// not sent: the next one is the new state's IDR.
async fn send(
    track: &RtpOut,
    (stamper, gaps): (&mut RtpStamper, &mut Gaps),
    unit: &VideoUnit,
    timestamp: u32,
    viewer: &Viewer,
) -> bool {
    if unit.private != viewer.media.privacy() {
        return true;
    }
    if unit.keyframe && gaps.flush(viewer.watched.feedback(), Instant::now()) {
        debug!(session = %viewer.session, "viewer may wait for lost packets: the IDR starts after a jump in sequence numbers");
        let first = stamper.skip(FLUSH);
        viewer.watched.feedback().jumped(first, FLUSH);
    }
    let mut sent = false;
    for packet in stamper.video_at(unit, timestamp) {
        if track.write_rtp(packet).await.is_err() {
            return false;
        }
        sent = true;
    }
    if sent && unit.keyframe {
        viewer.idr_sent();
    }
    true
}

/// Sequence numbers a viewer's video skips at an IDR to clear its receiver of gaps it will
/// never fill: more than aiortc's video jitter buffer holds (512 packets in aiortc 1.16).
pub const FLUSH: u16 = 1024;

/// Whether a viewer is owed a fresh run of sequence numbers at its next IDR.
///
/// A receiver that assembles pictures strictly in sequence order (aiortc's jitter buffer)
/// waits at a lost packet until it comes again or until the buffer overflows, which takes
/// 512 packets, seconds of video; the pictures behind it wait too and then play seconds late
/// (measured: 8.5 s behind a 1 Mbit/s link, tests/tests/congestion.rs). A browser drops what
/// it cannot complete at the next key frame; such a receiver only drops its buffer when the
/// sequence numbers jump further than it holds. So when an IDR goes to a viewer that may
/// still wait for packets it will not get (its estimate comes from receiver reports — it
/// sends no TWCC, as browsers do — and it reported loss or had resends refused since the
/// last IDR), the IDR starts after a jump of [`FLUSH`]. Its receiver reports then count the
/// jump as lost; congestion control takes it out again (`Estimate::skipped`). At most one
/// jump every [`FLUSH_EVERY`]: the receiver answers a jump with a PLI, whose IDR must not
/// jump again while the link is still losing.
#[derive(Debug, Default)]
pub struct Gaps {
    /// The viewer's lossy reports and refused resends when its last IDR went out.
    at_idr: (u64, u64),
    /// When the last jump was.
    last: Option<Instant>,
}

/// The shortest time between two jumps (see [`Gaps`]).
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Gaps {
    /// An IDR goes at `now` to the viewer whose feedback is `feedback`: whether to jump
    /// first.
    pub fn flush(&mut self, feedback: &Estimate, now: Instant) -> bool {
        let seen = (feedback.lossy_reports(), feedback.refused());
        if seen == self.at_idr || !feedback.from_reports() {
            self.at_idr = seen;
            return false;
        }
        // Too soon after the last jump: the loss counts toward the next IDR.
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < FLUSH_EVERY)
        {
            return false;
        }
        self.at_idr = seen;
        self.last = Some(now);
        true
    }
}

/// The ring overwrote pictures this viewer had not sent: skip to the next IDR (of its layer),
/// from the live end.
fn fell_behind(viewer: &Viewer, stamper: &mut RtpStamper, live: &mut Receiver<Arc<VideoUnit>>) {
    debug!(session = %viewer.session, "viewer fell behind; skipping to the next IDR");
    *live = live.resubscribe();
    stamper.lost_units();
    viewer.request_keyframe(KeyframeReason::Lag);
}

/// Where a viewer's loss is reported from, for the audio encoder's in-band FEC.
struct Loss {
    media: MediaHandle,
    session: Arc<str>,
    watched: Arc<Watched>,
}

/// How often a viewer's loss is reported to the audio encoder.
const REPORT_LOSS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends the shared audio to one viewer until the track is gone or the source stops, and
/// reports what the viewer loses (`media::fec`).
async fn audio(
    track: RtpOut,
    mut stamper: RtpStamper,
    mut units: Receiver<Arc<AudioUnit>>,
    loss: Loss,
) {
    let mut report = tokio::time::interval(REPORT_LOSS_EVERY);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            received = units.recv() => match received {
                Ok(unit) => {
                    if track.write_rtp(stamper.audio(&unit)).await.is_err() {
                        return;
                    }
                }
                // Opus frames stand alone: carry on from the live end.
                Err(RecvError::Lagged(_)) => units = units.resubscribe(),
                Err(RecvError::Closed) => return,
            },
            _ = report.tick() => {
                if let Some(fraction) = loss.watched.fraction_lost() {
                    loss.media.report_loss(&loss.session, fraction);
                }
            }
        }
    }
}

/// PLI/FIR from this viewer → an IDR for everyone (limited per viewer, then coalesced by
/// the encoder). Only PLI and FIR reach here (see `webrtc::keyframe_requests`).
async fn keyframe_requests(mut feedback: mpsc::Receiver<KeyframeReason>, viewer: Viewer) {
    loop {
        let held_until = viewer.held_until();
        let release = async {
            match held_until {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            asked = feedback.recv() => match asked {
                Some(reason) => viewer.ask(reason),
                None => return,
            },
            () = release => viewer.release(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn unit(keyframe: bool, ts: u32, payloads: usize) -> VideoUnit {
        VideoUnit {
            access_unit: Bytes::new(),
            payloads: (0..payloads)
                .map(|i| Bytes::from(vec![i as u8; 10]))
                .collect(),
            keyframe,
            rtp_timestamp: ts,
            private: false,
        }
    }

    #[test]
    fn an_idr_after_loss_jumps_for_a_viewer_without_twcc_only() {
        let mut gaps = Gaps::default();
        let t = Instant::now();
        let at = |s: u64| t + std::time::Duration::from_secs(s);
        // No loss yet: no jump.
        assert!(!gaps.flush(&Estimate::reporting(true, 0, 0), at(0)));
        // Loss reported, or resends refused, since the last IDR: a jump, once.
        assert!(gaps.flush(&Estimate::reporting(true, 1, 0), at(1)));
        assert!(!gaps.flush(&Estimate::reporting(true, 1, 0), at(2)));
        // More loss, but too soon after the jump: the next IDR after FLUSH_EVERY jumps.
        assert!(!gaps.flush(&Estimate::reporting(true, 1, 7), at(2)));
        assert!(gaps.flush(&Estimate::reporting(true, 1, 7), at(3)));
        // A viewer whose estimate comes from TWCC (a browser) never.
        let mut browser = Gaps::default();
        assert!(!browser.flush(&Estimate::reporting(false, 3, 9), at(0)));
        // The jump: the IDR's packets start FLUSH further on.
        let mut s = RtpStamper::new(42, 102, false);
        let before: Vec<u16> = s
            .video(&unit(false, 0, 2))
            .map(|p| p.header.sequence_number)
            .collect();
        s.skip(FLUSH);
        let after = s
            .video(&unit(true, 3000, 1))
            .next()
            .unwrap()
            .header
            .sequence_number;
        assert_eq!(after, before[1].wrapping_add(1).wrapping_add(FLUSH));
    }

    #[test]
    fn joins_at_an_idr_and_numbers_packets_consecutively() {
        let mut s = RtpStamper::new(42, 102, true);
        assert_eq!(s.video(&unit(false, 0, 3)).count(), 0);
        let idr: Vec<_> = s.video(&unit(true, 3000, 3)).collect();
        let p: Vec<_> = s.video(&unit(false, 6000, 2)).collect();
        let all: Vec<_> = idr.iter().chain(p.iter()).collect();
        assert_eq!(all.len(), 5);
        for pair in all.windows(2) {
            assert_eq!(
                pair[1].header.sequence_number,
                pair[0].header.sequence_number.wrapping_add(1)
            );
        }
        assert_eq!(
            idr.iter().map(|p| p.header.marker).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert!(
            all.iter()
                .all(|p| p.header.ssrc == 42 && p.header.payload_type == 102)
        );
        assert_eq!(p[0].header.timestamp, 6000);
    }

    #[test]
    fn after_a_loss_waits_for_the_next_idr_without_a_sequence_gap() {
        let mut s = RtpStamper::new(1, 96, true);
        let first: Vec<_> = s.video(&unit(true, 0, 1)).collect();
        s.lost_units();
        assert_eq!(s.video(&unit(false, 3000, 4)).count(), 0);
        let next: Vec<_> = s.video(&unit(true, 6000, 1)).collect();
        assert_eq!(
            next[0].header.sequence_number,
            first[0].header.sequence_number.wrapping_add(1)
        );
    }

    #[test]
    fn payload_bytes_are_shared_not_copied() {
        let u = unit(true, 0, 2);
        let mut a = RtpStamper::new(1, 96, true);
        let mut b = RtpStamper::new(2, 96, true);
        let pa: Vec<_> = a.video(&u).collect();
        let pb: Vec<_> = b.video(&u).collect();
        assert_eq!(pa[0].payload.as_ptr(), pb[0].payload.as_ptr());
        assert_eq!(pa[0].payload.as_ptr(), u.payloads[0].as_ptr());
    }

    #[test]
    fn timestamps_keep_increasing_after_pictures_sent_with_later_ones() {
        let mut s = RtpStamper::new(7, 102, true);
        let caught_up: Vec<_> = s.video_at(&unit(true, 3000, 2), 9000).collect();
        assert!(caught_up.iter().all(|p| p.header.timestamp == 9000));
        // A live picture captured before the last caught-up one was sent.
        let early: Vec<_> = s.video(&unit(false, 8000, 2)).collect();
        assert!(early.iter().all(|p| p.header.timestamp == 9001));
        let live: Vec<_> = s.video(&unit(false, 12000, 1)).collect();
        assert_eq!(live[0].header.timestamp, 12000);
        assert_eq!(
            live[0].header.sequence_number,
            early[1].header.sequence_number.wrapping_add(1)
        );
    }

    #[test]
    fn increasing_timestamps_wrap_like_rtp_timestamps() {
        let mut s = RtpStamper::new(7, 102, true);
        let _ = s.video_at(&unit(true, 0, 1), u32::MAX).count();
        let next: Vec<_> = s.video(&unit(false, u32::MAX - 5, 1)).collect();
        assert_eq!(next[0].header.timestamp, 0);
        let later: Vec<_> = s.video(&unit(false, 3000, 1)).collect();
        assert_eq!(later[0].header.timestamp, 3000);
    }
}
