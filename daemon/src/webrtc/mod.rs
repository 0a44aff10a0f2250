//! One WebRTC session per viewer, all fed from the one encoder.
//!
//! - [`session`]: when a session starts media and when it ends (pure state machine).
//! - [`forward`]: shared encoded units → one viewer's RTP packets.
//! - [`peer`]: building a webrtc-rs peer connection for a viewer.
//! - [`keyframe_requests`]: lets PLI/FIR reach the encoder.
//!
//! [`Sessions`] is the registry the HTTP (WHEP) and signaling front ends talk to: an offer in,
//! an answer and a session id out; delete by id; count; close all on shutdown.

pub mod forward;
pub mod keyframe_requests;
pub mod nat;
pub mod peer;
pub mod session;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onair_config::WebRtc;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use crate::media::MediaHandle;
use forward::Outgoing;
use peer::{PeerError, PeerFactory};
use session::{Action, Event, Session};

/// More sessions than this at once are refused (a Pi's uplink is long full by then).
pub const MAX_SESSIONS: usize = 100;
/// How long the answer waits for local ICE candidates; host candidates take milliseconds.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an offer was not answered.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The offer is not usable SDP, or webrtc-rs rejected it.
    #[error("bad offer: {0}")]
    BadOffer(String),
    /// The offer is fine but has nothing we can send: no H.264 of our profile (named).
    #[error(
        "offer has no video section accepting H.264 {} with packetization-mode=1",
        describe_profile(.0)
    )]
    NoVideo(String),
    /// A passthrough camera has not sent its first key frame (or sends a profile browsers
    /// cannot decode): there is nothing to offer yet.
    #[error("the camera's H.264 stream has not started yet; try again shortly")]
    NotReady,
    /// [`MAX_SESSIONS`] are running.
    #[error("too many viewers ({MAX_SESSIONS}); try again later")]
    Full,
    /// Every port of `webrtc.udp_port_range` is in use.
    #[error("every UDP port of webrtc.udp_port_range is in use; try again later")]
    NoPort,
    /// The daemon is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// Something on our side failed.
    #[error("cannot create a session: {0}")]
    Internal(String),
}

impl From<PeerError> for OfferError {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::NoPort => OfferError::NoPort,
            PeerError::WebRtc(err) => OfferError::Internal(err.to_string()),
        }
    }
}

/// The registry of live sessions. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    media: MediaHandle,
    factory: PeerFactory,
    live: Mutex<Live>,
    /// One permit per session, taken before any work is done for an offer.
    permits: Arc<Semaphore>,
    /// Sessions with media flowing.
    viewers: AtomicUsize,
    /// Every session task and negotiation, so shutdown can wait for them.
    tasks: TaskTracker,
}

#[derive(Default)]
struct Live {
    /// Control channel of every live session, by id.
    sessions: HashMap<String, mpsc::UnboundedSender<Event>>,
    /// Set by shutdown: no session may be added any more.
    closing: bool,
}

impl Sessions {
    /// An empty registry serving `media` with the `[webrtc]` settings.
    pub fn new(media: MediaHandle, webrtc: &WebRtc) -> Self {
        let factory = PeerFactory::new(webrtc, media.has_audio());
        Sessions {
            inner: Arc::new(Inner {
                media,
                factory,
                live: Mutex::new(Live::default()),
                permits: Arc::new(Semaphore::new(MAX_SESSIONS)),
                viewers: AtomicUsize::new(0),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// Viewers currently receiving media.
    pub fn viewers(&self) -> usize {
        self.inner.viewers.load(Ordering::Relaxed)
    }

    /// Sessions in any state (negotiating included).
    pub fn len(&self) -> usize {
        self.inner
            .live
            .lock()
            .map(|l| l.sessions.len())
            .unwrap_or(0)
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers a viewer's offer (non-trickle: the answer holds all our candidates) and starts
    /// the session. Returns the session id and the answer SDP.
    ///
    /// The work runs in a task of its own: if the caller gives up (the HTTP client went
    /// away), the negotiation still finishes and its peer connection is closed or handed to
    /// a session that times out, instead of leaking.
    pub async fn offer(&self, offer_sdp: String) -> Result<(String, String), OfferError> {
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| OfferError::Full)?;
        let inner = self.inner.clone();
        let task = self
            .inner
            .tasks
            .spawn(negotiate_and_start(inner, offer_sdp, permit));
        task.await
            .map_err(|e| OfferError::Internal(e.to_string()))?
    }

    /// Ends a session (WHEP DELETE). `false` if there is no such session.
    pub fn delete(&self, id: &str) -> bool {
        let control = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|live| live.sessions.get(id).cloned());
        match control {
            Some(tx) => tx.send(Event::Delete).is_ok(),
            None => false,
        }
    }

    /// Whether a session with this id is live.
    pub fn contains(&self, id: &str) -> bool {
        self.inner
            .live
            .lock()
            .is_ok_and(|live| live.sessions.contains_key(id))
    }

    /// Closes every session, refuses new ones, and waits until all have released their
    /// resources.
    pub async fn shutdown(&self) {
        if let Ok(mut live) = self.inner.live.lock() {
            live.closing = true;
            for tx in live.sessions.values() {
                let _ = tx.send(Event::Shutdown);
            }
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// "constrained baseline (profile-level-id 42e01f)", for errors a person reads.
fn describe_profile(profile_level_id: &str) -> String {
    let name = match profile_level_id.get(..4) {
        Some("42e0") => "constrained baseline",
        Some("4200") => "baseline",
        Some("4d00") => "main",
        Some("6400") => "high",
        Some("640c") => "constrained high",
        _ => "",
    };
    format!("{name} (profile-level-id {profile_level_id})")
        .trim_start()
        .to_string()
}

async fn negotiate_and_start(
    inner: Arc<Inner>,
    offer_sdp: String,
    permit: OwnedSemaphorePermit,
) -> Result<(String, String), OfferError> {
    let offer =
        RTCSessionDescription::offer(offer_sdp).map_err(|e| OfferError::BadOffer(e.to_string()))?;
    let profile = inner.media.video_description().profile_level_id;
    let profile = profile.ok_or(OfferError::NotReady)?;
    let peer = inner.factory.build(&peer::h264_codec(&profile)).await?;
    let negotiated = negotiate(&inner.factory, &profile, &peer.pc, offer, &peer.gathered);
    let (answer, outgoing) = match negotiated.await {
        Ok(negotiated) => negotiated,
        Err(err) => {
            let _ = peer.pc.close().await;
            return Err(err);
        }
    };
    let id = format!("{:032x}", rand::random::<u128>());
    if let Err(peer) = register(&inner, &id, peer, outgoing, permit) {
        let _ = peer.pc.close().await;
        return Err(OfferError::ShuttingDown);
    }
    info!(session = %id, "viewer negotiating");
    Ok((id, answer))
}

/// Adds the session to the registry and starts its task, under one lock with no await in
/// between, so shutdown either sees the session or has refused it (then the peer comes back
/// to be closed).
fn register(
    inner: &Arc<Inner>,
    id: &str,
    peer: peer::NewPeer,
    outgoing: Vec<Outgoing>,
    permit: OwnedSemaphorePermit,
) -> Result<(), peer::NewPeer> {
    let Ok(mut live) = inner.live.lock() else {
        return Err(peer);
    };
    if live.closing {
        return Err(peer);
    }
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    live.sessions.insert(id.to_owned(), control_tx);
    let task = run_session(
        inner.clone(),
        id.to_owned(),
        peer,
        control_rx,
        outgoing,
        permit,
    );
    inner.tasks.spawn(task);
    Ok(())
}

/// Applies the offer, adds our tracks and answers. Fails if the answer would not carry
/// H.264 video (audio is optional for the viewer).
async fn negotiate(
    factory: &PeerFactory,
    profile_level_id: &str,
    pc: &Arc<dyn PeerConnection>,
    offer: RTCSessionDescription,
    gathered: &tokio::sync::Notify,
) -> Result<(String, Vec<Outgoing>), OfferError> {
    pc.set_remote_description(offer)
        .await
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    let mut tracks = vec![(RtpCodecKind::Video, peer::h264_codec(profile_level_id))];
    if let Some(audio) = factory.audio_codec() {
        tracks.push((RtpCodecKind::Audio, audio.clone()));
    }
    let mut added = Vec::new();
    for (kind, codec) in tracks {
        let (track, ssrc) = local_track(kind, codec);
        // webrtc-rs refuses a track whose codec the offer does not accept.
        match pc.add_track(track.clone() as Arc<dyn TrackLocal>).await {
            Ok(_) => added.push((kind, track, ssrc)),
            Err(err) if kind == RtpCodecKind::Video => {
                debug!("video track refused: {err}");
                return Err(OfferError::NoVideo(profile_level_id.to_owned()));
            }
            Err(err) => debug!("viewer takes no Opus audio: {err}"),
        }
    }
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| OfferError::Internal(e.to_string()))?;
    if tokio::time::timeout(GATHER_TIMEOUT, gathered.notified())
        .await
        .is_err()
    {
        warn!("ICE gathering not complete after {GATHER_TIMEOUT:?}; answering with what we have");
    }
    let answer = pc
        .local_description()
        .await
        .ok_or_else(|| OfferError::Internal("no local description after answering".into()))?;

    // What the answer agreed to send is what we send: its payload types, per medium.
    let mut sdp = answer
        .unmarshal()
        .map_err(|e| OfferError::Internal(format!("our own answer: {e}")))?;
    let mut outgoing = Vec::new();
    for (kind, track, ssrc) in added {
        let (media, codec) = match kind {
            RtpCodecKind::Audio => ("audio", "opus"),
            _ => ("video", "H264"),
        };
        let payload_type = sdp
            .media_descriptions
            .iter()
            .filter(|m| m.media_name.media == media && m.media_name.port.value != 0)
            .filter(|m| !m.has_attribute("recvonly") && !m.has_attribute("inactive"))
            .find_map(|m| {
                m.codecs()
                    .into_values()
                    .find(|c| c.name.eq_ignore_ascii_case(codec))
                    .map(|c| c.payload_type)
            });
        match payload_type {
            Some(payload_type) => outgoing.push(Outgoing {
                kind,
                track,
                ssrc,
                payload_type,
            }),
            None if kind == RtpCodecKind::Video => {
                return Err(OfferError::NoVideo(profile_level_id.to_owned()));
            }
            None => debug!("viewer takes no Opus audio"),
        }
    }
    nat::announce(&mut sdp, factory.nat_ips());
    Ok((sdp.marshal(), outgoing))
}

fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = rand::random::<u32>();
    let name = match kind {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    };
    let track = MediaStreamTrack::new(
        "onair".to_owned(),
        name.to_owned(),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    (Arc::new(TrackLocalStaticRTP::new(track)), ssrc)
}

/// Drives one session from answer to teardown. Holds the session's permit until the end.
async fn run_session(
    inner: Arc<Inner>,
    id: String,
    peer: peer::NewPeer,
    mut control: mpsc::UnboundedReceiver<Event>,
    outgoing: Vec<Outgoing>,
    _permit: OwnedSemaphorePermit,
) {
    let peer::NewPeer {
        pc,
        mut events,
        port: _port,
        ..
    } = peer;
    let mut session = Session::new(Instant::now());
    let mut media_tasks = tokio::task::JoinSet::new();
    let reason = loop {
        let deadline = session.deadline();
        let event = tokio::select! {
            Some(event) = events.recv() => event,
            event = control.recv() => event.unwrap_or(Event::Shutdown),
            () = sleep_until(deadline) => Event::Tick,
        };
        match session.handle(event, Instant::now()) {
            Action::None => {}
            Action::StartMedia => {
                forward::start(&inner.media, &outgoing, &mut media_tasks);
                let viewers = inner.viewers.fetch_add(1, Ordering::Relaxed) + 1;
                info!(session = %id, viewers, "viewer connected");
            }
            Action::Close(reason) => break reason,
        }
    };
    media_tasks.abort_all();
    if let Err(err) = pc.close().await {
        debug!(session = %id, "closing peer connection: {err}");
    }
    if let Ok(mut live) = inner.live.lock() {
        live.sessions.remove(&id);
    }
    if session.media_started() {
        inner.viewers.fetch_sub(1, Ordering::Relaxed);
    }
    info!(session = %id, ?reason, viewers = inner.viewers.load(Ordering::Relaxed), "viewer gone");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
