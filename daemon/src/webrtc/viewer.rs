//! One viewer, in one place: everything onaird keeps and does for one viewer's connection.
//!
//! **Where a viewer's state lives.** In its [`Viewer`], owned by the one loop
//! ([`super::engine`]) under its one [`SessionId`], and nowhere else: its webrtc-rs core (ICE,
//! DTLS, SRTP, the interceptors with its congestion control and pacer), its session state
//! machine ([`Session`]), what the negotiation agreed ([`Tracks`]), its video's stamper,
//! catch-up, layer choice and key frame asks ([`Video`]), its audio's stamper, and its
//! figures. The loop's tables (routes, ICE-TCP streams) only point at it by id; the session
//! registry ([`super::Sessions`]) only knows which ids are live.
//!
//! **How an offer travels.** HTTP (WHEP) or signalling → one request on the loop's queue →
//! the loop builds the core, applies the offer, adds our candidates (once STUN has answered,
//! [`super::reflexive`]), answers, and replies: one round trip.
//!
//! **How a picture travels.** The encoder publishes it once per layer; the loop holds one
//! subscription per layer that someone watches and, in one wake, hands it to every viewer on
//! that layer ([`Viewer::video`]): 12 bytes of RTP header per packet around the shared
//! payload, into the core, whose pacer lets the packets out; the loop sends them.
//!
//! Every method takes the time as an input; none does I/O (the loop sends what
//! [`Viewer::transmit`] gives and acts on what [`Viewer::poll`] says).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtp::Packet;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::sdp::description::session::SessionDescription;
use rtc::shared::{TaggedBytesMut, TransportContext};
use rtc::statistics::StatsSelector;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};

use super::catch_up::CatchUp;
use super::congestion::Estimate;
use super::figures::{Phase, Reading, RtcpSeen, Traffic};
use super::forward::{FLUSH, Gaps, RtpStamper};
use super::layer_choice::LayerChoice;
use super::negotiate::Added;
use super::nomination::Nominations;
use super::pending::Pending;
use super::session::{Action, Event, Session, SessionId};
use super::{MAX_REMOTE_CANDIDATES, OfferError, negotiate};
use crate::media::keyframe::ViewerAsks;
use crate::media::{AudioUnit, KeyframeReason, MediaHandle, VideoUnit};

/// One of a viewer's outgoing tracks, negotiated and ready to feed.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// Its sender on the viewer's connection.
    pub sender: RTCRtpSenderId,
    /// Our SSRC on it.
    pub ssrc: u32,
    /// The payload type the negotiation gave the codec.
    pub payload_type: u8,
}

/// What a viewer is sent: known once it has agreed (in its offer or its answer).
pub enum Tracks {
    /// Agreed.
    Agreed(Vec<Track>),
    /// We offered; the viewer has not answered yet.
    AwaitingAnswer(Vec<Added>),
}

/// One viewer's video, from the moment it connects.
struct Video {
    sender: RTCRtpSenderId,
    stamper: RtpStamper,
    gaps: Gaps,
    /// The kept GOP it joined with, replayed fast until it is live.
    catch_up: CatchUp,
    /// The RTP timestamp of the newest picture of that GOP: live pictures up to it were in
    /// the GOP, and are not sent again.
    joined_at: Option<u32>,
    choice: LayerChoice,
    /// The layer it is moving to, on that layer's next IDR.
    switching: Option<usize>,
    /// Its PLIs and FIRs, limited.
    asks: ViewerAsks,
}

/// One viewer's audio.
struct Audio {
    sender: RTCRtpSenderId,
    stamper: RtpStamper,
}

/// One viewer; see the module docs.
pub struct Viewer {
    /// Its one id.
    pub id: SessionId,
    /// The id as text, for logs and for the encoders' per-viewer bookkeeping.
    pub name: Arc<str>,
    pc: Box<RTCPeerConnection>,
    session: Session,
    tracks: Tracks,
    /// H.264's `profile-level-id` it was offered.
    profile: String,
    video: Option<Video>,
    audio: Option<Audio>,
    /// Its RTCP, counted by the last interceptor.
    rtcp: Arc<RtcpSeen>,
    /// Its bandwidth estimate, published by congestion control.
    estimate: Arc<Estimate>,
    nominations: Nominations,
    /// Something from the viewer has reached the core (its first ICE check).
    heard: bool,
    /// The core's next timer.
    due: Option<Instant>,
    /// Remote candidates taken (at most [`MAX_REMOTE_CANDIDATES`] per ICE session).
    candidates_taken: usize,
    /// ICE restarts so far (its WHEP entity tag).
    pub ice_generation: u32,
    /// Its place among the sessions connecting: given back once connected.
    pending: Option<Pending>,
    /// Its place among all sessions: held to the end.
    _permit: OwnedSemaphorePermit,
    /// Counted among the viewers receiving media (the loop sets it, and takes it off once).
    pub counted: bool,
    /// The largest traffic figures read so far (they never go down).
    traffic: Traffic,
}

/// What a new viewer comes with.
pub struct Parts {
    /// Its core, negotiated as far as `tracks` says.
    pub pc: Box<RTCPeerConnection>,
    /// Its RTCP, counted.
    pub rtcp: Arc<RtcpSeen>,
    /// Its estimate.
    pub estimate: Arc<Estimate>,
    /// What it is to be sent.
    pub tracks: Tracks,
    /// We answer its offer (else we offer, and wait for its answer).
    pub answering: bool,
    /// H.264's `profile-level-id`.
    pub profile: String,
    /// Its slot and its place among those connecting.
    pub places: (OwnedSemaphorePermit, Pending),
}

/// The longest a viewer moving to a lower layer waits for its link to drain.
const MAX_DRAIN: Duration = Duration::from_millis(500);

impl Viewer {
    /// A viewer whose offer we answered, or whom we offered to (`tracks` says which).
    pub fn new(id: SessionId, parts: Parts, now: Instant) -> Self {
        let Parts {
            pc,
            rtcp,
            estimate,
            tracks,
            answering,
            profile,
            places: (permit, pending),
        } = parts;
        Viewer {
            id,
            name: id.to_string().into(),
            pc,
            session: Session::new(now, answering),
            tracks,
            profile,
            video: None,
            audio: None,
            rtcp,
            estimate,
            nominations: Nominations::default(),
            heard: false,
            due: None,
            candidates_taken: 0,
            ice_generation: 0,
            pending: Some(pending),
            _permit: permit,
            counted: false,
            traffic: Traffic::default(),
        }
    }

    /// Our SDP went out at `now`: its session's timers start.
    pub fn described(&mut self, now: Instant) {
        let answering = matches!(self.tracks, Tracks::Agreed(_));
        self.session = Session::new(now, answering);
    }

    /// The largest traffic figures read so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Its core (negotiation steps run on it).
    pub fn pc(&mut self) -> &mut RTCPeerConnection {
        &mut self.pc
    }

    /// Where its session is.
    pub fn phase(&self) -> Phase {
        Phase::of(self.session.state())
    }

    /// Whether media has started (it counts among the viewers).
    pub fn media_started(&self) -> bool {
        self.session.media_started()
    }

    /// The layer it receives, and the one it is moving to.
    pub fn layers(&self) -> (Option<usize>, Option<usize>) {
        match &self.video {
            Some(video) => (Some(video.choice.current()), video.switching),
            None => (None, None),
        }
    }

    /// Whether it is sent audio.
    pub fn hears(&self) -> bool {
        self.audio.is_some()
    }

    /// When it next needs the loop: its core's timer, its session's deadline, its next
    /// caught-up picture, a held key frame request.
    pub fn deadline(&self) -> Option<Instant> {
        let video = self.video.as_ref();
        [
            self.due,
            self.session.deadline(),
            video.and_then(|v| v.catch_up.due()),
            video.and_then(|v| v.asks.due()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A datagram (or ICE-TCP frame) from the viewer, and a kept nomination after it (see
    /// [`Nominations`]).
    pub fn read(&mut self, now: Instant, transport: TransportContext, data: BytesMut) {
        if !self.heard {
            self.heard = true;
            self.session.handle(Event::Heard, now);
        }
        let again = self.nominations.inspect(now, transport.peer_addr, &data);
        self.read_one(now, transport, data);
        if let Some(again) = again {
            debug!(peer = %transport.peer_addr, "ICE: the peer's nomination given again once our check to it succeeded");
            self.read_one(now, transport, BytesMut::from(&again[..]));
        }
    }

    fn read_one(&mut self, now: Instant, transport: TransportContext, message: BytesMut) {
        let tagged = TaggedBytesMut {
            now,
            transport,
            message,
        };
        if let Err(err) = self.pc.handle_read(tagged) {
            debug!(session = %self.name, "webrtc: {err}");
        }
    }

    /// What its core has to send now.
    pub fn transmit(&mut self) -> Option<TaggedBytesMut> {
        self.pc.poll_write()
    }

    /// Takes in what its core has to say (state changes, key frame requests) and whether
    /// time is up, and says what the loop must do.
    pub fn poll(&mut self, now: Instant, media: &MediaHandle) -> Action {
        let mut action = Action::None;
        while let Some(event) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = event {
                let event = match state {
                    RTCPeerConnectionState::Connected => Event::Connected,
                    RTCPeerConnectionState::Disconnected => Event::Disconnected,
                    RTCPeerConnectionState::Failed => Event::Failed,
                    RTCPeerConnectionState::Closed => Event::Closed,
                    _ => continue,
                };
                action = stronger(action, self.session.handle(event, now));
            }
        }
        while let Some(message) = self.pc.poll_read() {
            // Only PLI and FIR come this far (see `keyframe_requests`); what the viewer
            // sends us (it sends no media) is dropped.
            if let RTCMessage::RtcpPacket(_, packets) = message.message {
                let fir = packets.iter().any(|p| p.as_any().is::<FullIntraRequest>());
                let reason = match fir {
                    true => KeyframeReason::Fir,
                    false => KeyframeReason::Pli,
                };
                self.asked(now, reason, media);
            }
        }
        action = stronger(action, self.session.handle(Event::Tick, now));
        if !self.session.pending() {
            self.pending.take();
        }
        self.due = self.pc.poll_timeout();
        action
    }

    /// An event from outside (its answer applied, delete, shutdown): what to do.
    pub fn event(&mut self, event: Event, now: Instant) -> Action {
        self.session.handle(event, now)
    }

    /// Its time has come: the core's timers, held key frame requests, caught-up pictures.
    pub fn on_time(&mut self, now: Instant, media: &MediaHandle) {
        if self.due.is_some_and(|due| due <= now)
            && let Err(err) = self.pc.handle_timeout(now)
        {
            debug!(session = %self.name, "webrtc: timer: {err}");
        }
        let Some(video) = self.video.as_mut() else {
            return;
        };
        if let Some(reason) = video.asks.release(now) {
            media.request_keyframe(video.choice.current(), reason, &self.name);
        }
        self.catch_up(now, media);
    }

    /// One of the viewer's ICE candidates (trickled), unless it has sent
    /// [`MAX_REMOTE_CANDIDATES`] in this ICE session.
    pub fn add_remote_candidate(&mut self, candidate: RTCIceCandidateInit) {
        if self.candidates_taken >= MAX_REMOTE_CANDIDATES {
            if self.candidates_taken == MAX_REMOTE_CANDIDATES {
                warn!(session = %self.name, "the viewer sent over {MAX_REMOTE_CANDIDATES} ICE candidates; ignoring the rest");
                self.candidates_taken += 1;
            }
            return;
        }
        self.candidates_taken += 1;
        if let Err(err) = self.pc.add_remote_candidate(candidate) {
            debug!(session = %self.name, "viewer's ICE candidate refused: {err}");
        }
    }

    /// ICE restarted: its candidates count afresh.
    pub fn restarted(&mut self) {
        self.ice_generation += 1;
        self.candidates_taken = 0;
    }

    /// Applies the viewer's answer to our offer.
    pub fn take_answer(&mut self, answer: &str, now: Instant) -> Result<(), OfferError> {
        let Tracks::AwaitingAnswer(_) = &self.tracks else {
            return Err(OfferError::BadOffer(
                "an answer came for a session that has one".into(),
            ));
        };
        let Tracks::AwaitingAnswer(added) =
            std::mem::replace(&mut self.tracks, Tracks::Agreed(Vec::new()))
        else {
            unreachable!("checked above");
        };
        let tracks = negotiate::accept(&mut self.pc, now, answer, added, &self.profile)?;
        self.tracks = Tracks::Agreed(tracks);
        Ok(())
    }

    /// Our answer to its offer is `sdp`: what it agrees to send is what we send, with its
    /// payload types.
    pub fn answered(&mut self, sdp: &SessionDescription) -> Result<(), OfferError> {
        if let Tracks::AwaitingAnswer(added) =
            std::mem::replace(&mut self.tracks, Tracks::Agreed(Vec::new()))
        {
            let tracks = negotiate::agreed(sdp, "recvonly", added, &self.profile)?;
            self.tracks = Tracks::Agreed(tracks);
        }
        Ok(())
    }

    /// Starts its media: video from the kept GOP it `joined` with (oldest first), audio if
    /// agreed. Returns whether it has video.
    pub fn start_media(&mut self, joined: Vec<Arc<VideoUnit>>, media: &MediaHandle) -> bool {
        let Tracks::Agreed(tracks) = &self.tracks else {
            warn!(session = %self.name, "connected before the answer was applied");
            return false;
        };
        for track in tracks {
            match track.kind {
                RtpCodecKind::Audio if media.has_audio() => {
                    self.audio = Some(Audio {
                        sender: track.sender,
                        stamper: RtpStamper::new(track.ssrc, track.payload_type, false),
                    });
                }
                RtpCodecKind::Audio => {}
                _ => {
                    if joined.is_empty() {
                        media.request_keyframe(0, KeyframeReason::Join, &self.name);
                    } else {
                        debug!(session = %self.name, pictures = joined.len(), "catching up from the kept GOP");
                    }
                    let rates = media
                        .layers()
                        .iter()
                        .map(|l| f64::from(l.bitrate_kbps) * 1000.0)
                        .collect();
                    self.video = Some(Video {
                        sender: track.sender,
                        stamper: RtpStamper::new(track.ssrc, track.payload_type, true),
                        gaps: Gaps::default(),
                        joined_at: joined.last().map(|u| u.rtp_timestamp),
                        catch_up: CatchUp::new(joined.clone(), media.rtp_clock()),
                        choice: LayerChoice::new(rates),
                        switching: None,
                        asks: ViewerAsks::default(),
                    });
                }
            }
        }
        self.video.is_some()
    }

    /// A picture of `layer`, as published: sent if the viewer is on that layer (or moving
    /// there and it is that layer's IDR), queued behind the GOP while catching up.
    pub fn video(
        &mut self,
        layer: usize,
        unit: &Arc<VideoUnit>,
        now: Instant,
        media: &MediaHandle,
    ) {
        let Some(video) = self.video.as_mut() else {
            return;
        };
        let current = video.choice.current();
        if video.switching == Some(layer) && unit.keyframe {
            video.switching = None;
            video.joined_at = None;
            video.choice.switched(now, layer);
            self.estimate.moved_at(video.stamper.next_sequence());
            debug!(session = %self.name, layer, "viewer moved to another layer");
            // Down, because the link is full: its queue drains before the key frame goes
            // into it (it would be lost there), the pictures after it catching up.
            let queued = self.estimate.queued().min(MAX_DRAIN);
            if layer > current && !queued.is_zero() {
                video.catch_up =
                    CatchUp::after(vec![unit.clone()], media.rtp_clock(), now + queued);
                return;
            }
            video.catch_up = CatchUp::new(Vec::new(), media.rtp_clock());
        } else if layer != current || video.switching.is_some_and(|to| to > current) {
            // Not its layer, or one it is leaving for a lower one: every picture more only
            // fills the link that the lower layer's key frame has to get through.
            return;
        }
        // Published before the GOP it joined with was taken: sent already.
        if let Some(joined_at) = video.joined_at {
            if unit.rtp_timestamp.wrapping_sub(joined_at) as i32 <= 0 {
                return;
            }
            video.joined_at = None;
        }
        if !video.catch_up.is_live() {
            video.catch_up.push(unit.clone());
            return;
        }
        self.send_picture(unit, unit.rtp_timestamp, now, media);
    }

    /// Sends the caught-up pictures that are due.
    fn catch_up(&mut self, now: Instant, media: &MediaHandle) {
        while let Some(next) = self.video.as_mut().and_then(|v| v.catch_up.next(now)) {
            self.send_picture(&next.unit, next.timestamp, now, media);
        }
    }

    /// The viewer's layer's pictures were lost before it got them (the loop fell behind):
    /// it waits for the next IDR, and asks for one.
    pub fn lost_pictures(&mut self, layer: usize, media: &MediaHandle) {
        let Some(video) = self.video.as_mut() else {
            return;
        };
        if video.choice.current() != layer {
            return;
        }
        debug!(session = %self.name, "viewer fell behind; skipping to the next IDR");
        video.catch_up = CatchUp::new(Vec::new(), media.rtp_clock());
        video.joined_at = None;
        video.stamper.lost_units();
        media.request_keyframe(layer, KeyframeReason::Lag, &self.name);
    }

    /// Sends one picture stamped `timestamp`. A picture of the other privacy state (encoded
    /// just before privacy was switched, and still on its way) is not sent: the next one is
    /// the new state's IDR.
    fn send_picture(
        &mut self,
        unit: &VideoUnit,
        timestamp: u32,
        now: Instant,
        media: &MediaHandle,
    ) {
        let Some(video) = self.video.as_mut() else {
            return;
        };
        if unit.private != media.privacy() {
            return;
        }
        if unit.keyframe && video.gaps.flush(&self.estimate, now) {
            debug!(session = %self.name, "viewer may wait for lost packets: the IDR starts after a jump in sequence numbers");
            let first = video.stamper.skip(FLUSH);
            self.estimate.jumped(first, FLUSH);
        }
        let mut sent = false;
        let packets: Vec<Packet> = video.stamper.video_at(unit, timestamp).collect();
        let sender = video.sender;
        for packet in packets {
            sent |= self.write(sender, packet, now);
        }
        self.release(now);
        if sent
            && unit.keyframe
            && let Some(video) = self.video.as_mut()
        {
            video.asks.idr_sent();
        }
    }

    /// An Opus frame.
    pub fn audio(&mut self, unit: &AudioUnit, now: Instant) {
        let Some(audio) = self.audio.as_mut() else {
            return;
        };
        let packet = audio.stamper.audio(unit);
        let sender = audio.sender;
        self.write(sender, packet, now);
        self.release(now);
    }

    /// Lets its pacer release at once what its budget allows of what was just written: it
    /// holds every packet until its timer runs, and the loop's pass over the viewers whose
    /// time has come would otherwise have to take every viewer a second time per picture.
    fn release(&mut self, now: Instant) {
        if let Err(err) = self.pc.handle_timeout(now) {
            debug!(session = %self.name, "webrtc: timer: {err}");
        }
    }

    fn write(&mut self, sender: RTCRtpSenderId, packet: Packet, now: Instant) -> bool {
        let Some(mut sender) = self.pc.rtp_sender(sender) else {
            return false;
        };
        match sender.write_rtp(now, packet) {
            Ok(()) => true,
            Err(err) => {
                debug!(session = %self.name, "webrtc: RTP not sent: {err}");
                false
            }
        }
    }

    /// The viewer asked for a key frame (PLI or FIR): passed on now, or held (see
    /// [`ViewerAsks`]).
    fn asked(&mut self, now: Instant, reason: KeyframeReason, media: &MediaHandle) {
        let Some(video) = self.video.as_mut() else {
            return;
        };
        if let Some(reason) = video.asks.ask(now, reason) {
            media.request_keyframe(video.choice.current(), reason, &self.name);
        }
    }

    /// Reconsiders its layer from its estimate: the layer to move to when a new move
    /// starts (the loop subscribes to it and asks for its IDR).
    pub fn choose_layer(&mut self, now: Instant) -> Option<usize> {
        let estimate = self.estimate.measured().then(|| self.estimate.bps());
        let video = self.video.as_mut()?;
        if !video.catch_up.is_live() {
            return None;
        }
        let target = video.choice.update(now, estimate);
        if target == video.choice.current() {
            video.switching = None;
            return None;
        }
        if video.switching == Some(target) {
            return None;
        }
        debug!(session = %self.name, from = video.choice.current(), to = target, "moving the viewer to another layer");
        video.switching = Some(target);
        Some(target)
    }

    /// The loss in its newest receiver reports, for the audio encoder's in-band FEC.
    pub fn report_loss(&self, media: &MediaHandle) {
        if self.audio.is_some()
            && let Some(fraction) = self.rtcp.fraction_lost()
        {
            media.report_loss(&self.name, fraction);
        }
    }

    /// Its figures now, as a scrape reads them (they never go down).
    pub fn reading(&mut self, now: Instant) -> Reading {
        let report = self.pc.get_stats(now, StatsSelector::None);
        let fresh = Traffic::of(Some(&report), &self.rtcp, &self.estimate);
        self.traffic = self.traffic.max(fresh);
        let video_layer = self.video.as_ref().map_or(0, |v| v.choice.current());
        Reading::new(
            self.phase(),
            self.traffic,
            &report,
            &self.rtcp,
            &self.estimate,
            video_layer,
        )
    }

    /// Closes its connection (the DTLS close alert goes out with [`Self::transmit`]) and
    /// returns its final figures.
    pub fn close(&mut self, now: Instant) -> Traffic {
        let last = self.reading(now).traffic();
        let _ = self.pc.close();
        last
    }
}

/// Of two actions, the one that matters more: closing over starting media over nothing.
fn stronger(a: Action, b: Action) -> Action {
    match (a, b) {
        (Action::Close(reason), _) | (_, Action::Close(reason)) => Action::Close(reason),
        (Action::StartMedia, _) | (_, Action::StartMedia) => Action::StartMedia,
        _ => Action::None,
    }
}
