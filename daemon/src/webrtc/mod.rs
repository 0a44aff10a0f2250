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
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use crate::media::MediaHandle;
use forward::RtpStamper;
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
    /// [`MAX_SESSIONS`] are running.
    #[error("too many viewers ({MAX_SESSIONS}); try again later")]
    Full,
    /// Something on our side failed.
    #[error("cannot create a session: {0}")]
    Internal(String),
}

impl From<PeerError> for OfferError {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::NoPort => OfferError::Full,
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
    /// Control channel of every live session, by id.
    live: Mutex<HashMap<String, mpsc::UnboundedSender<Event>>>,
    /// Sessions with media flowing.
    viewers: AtomicUsize,
    /// Session tasks, so shutdown can wait for them.
    tasks: tokio::sync::Mutex<JoinSet<()>>,
}

/// A viewer's local tracks with what is needed to feed them.
struct Outgoing {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
}

impl Sessions {
    /// An empty registry serving `media` with the `[webrtc]` settings.
    pub fn new(media: MediaHandle, webrtc: &WebRtc) -> Self {
        let audio = media.has_audio();
        let factory = PeerFactory::new(webrtc, &media.video_description, audio);
        Sessions {
            inner: Arc::new(Inner {
                media,
                factory,
                live: Mutex::new(HashMap::new()),
                viewers: AtomicUsize::new(0),
                tasks: tokio::sync::Mutex::new(JoinSet::new()),
            }),
        }
    }

    /// Viewers currently receiving media.
    pub fn viewers(&self) -> usize {
        self.inner.viewers.load(Ordering::Relaxed)
    }

    /// Sessions in any state (negotiating included).
    pub fn len(&self) -> usize {
        self.inner.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers a viewer's offer (non-trickle: the answer holds all our candidates) and starts
    /// the session. Returns the session id and the answer SDP.
    pub async fn offer(&self, offer_sdp: String) -> Result<(String, String), OfferError> {
        if self.len() >= MAX_SESSIONS {
            return Err(OfferError::Full);
        }
        let offer = RTCSessionDescription::offer(offer_sdp)
            .map_err(|e| OfferError::BadOffer(e.to_string()))?;
        let peer = self.inner.factory.build().await?;
        let pc = peer.pc.clone();
        match self.negotiate(&pc, offer, &peer.gathered).await {
            Ok((answer, outgoing)) => {
                let id = session_id();
                let (control_tx, control_rx) = mpsc::unbounded_channel();
                if let Ok(mut live) = self.inner.live.lock() {
                    live.insert(id.clone(), control_tx);
                }
                info!(session = %id, "viewer negotiating");
                let task = run_session(self.inner.clone(), id.clone(), peer, control_rx, outgoing);
                self.inner.tasks.lock().await.spawn(task);
                Ok((id, answer))
            }
            Err(err) => {
                let _ = pc.close().await;
                Err(err)
            }
        }
    }

    async fn negotiate(
        &self,
        pc: &Arc<dyn PeerConnection>,
        offer: RTCSessionDescription,
        gathered: &tokio::sync::Notify,
    ) -> Result<(String, Vec<(RtpCodecKind, Outgoing)>), OfferError> {
        pc.set_remote_description(offer)
            .await
            .map_err(|e| OfferError::BadOffer(e.to_string()))?;
        let mut outgoing = Vec::new();
        let factory = &self.inner.factory;
        let mut kinds = vec![(RtpCodecKind::Video, factory.video_codec().clone())];
        if let Some(audio) = factory.audio_codec() {
            kinds.push((RtpCodecKind::Audio, audio.clone()));
        }
        for (kind, codec) in kinds {
            let (track, ssrc) = local_track(kind, codec);
            let sender = pc
                .add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(|e| OfferError::Internal(format!("adding the {kind} track: {e}")))?;
            outgoing.push((
                kind,
                Outgoing {
                    track,
                    sender,
                    ssrc,
                },
            ));
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
            warn!(
                "ICE gathering not complete after {GATHER_TIMEOUT:?}; answering with what we have"
            );
        }
        let answer = pc
            .local_description()
            .await
            .ok_or_else(|| OfferError::Internal("no local description after answering".into()))?;
        Ok((answer.sdp, outgoing))
    }

    /// Ends a session (WHEP DELETE). `false` if there is no such session.
    pub fn delete(&self, id: &str) -> bool {
        let control = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|live| live.get(id).cloned());
        match control {
            Some(tx) => tx.send(Event::Delete).is_ok(),
            None => false,
        }
    }

    /// Closes every session and waits until they have released their resources.
    pub async fn shutdown(&self) {
        if let Ok(live) = self.inner.live.lock() {
            for tx in live.values() {
                let _ = tx.send(Event::Shutdown);
            }
        }
        let mut tasks = self.inner.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}

fn session_id() -> String {
    format!("{:032x}", rand::random::<u128>())
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

/// The payload type the viewer negotiated for a sender's codec.
async fn negotiated_payload_type(sender: &Arc<dyn RtpSender>) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    params.rtp_parameters.codecs.first().map(|c| c.payload_type)
}

/// Drives one session from answer to teardown.
async fn run_session(
    inner: Arc<Inner>,
    id: String,
    peer: peer::NewPeer,
    mut control: mpsc::UnboundedReceiver<Event>,
    outgoing: Vec<(RtpCodecKind, Outgoing)>,
) {
    let peer::NewPeer {
        pc,
        mut events,
        port: _port,
        ..
    } = peer;
    let mut session = Session::new(Instant::now());
    let mut media_tasks = JoinSet::new();
    let mut counted = false;
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
                start_media(&inner.media, &outgoing, &mut media_tasks).await;
                inner.viewers.fetch_add(1, Ordering::Relaxed);
                counted = true;
                info!(session = %id, viewers = inner.viewers.load(Ordering::Relaxed), "viewer connected");
            }
            Action::Close(reason) => break reason,
        }
    };
    media_tasks.abort_all();
    if let Err(err) = pc.close().await {
        debug!(session = %id, "closing peer connection: {err}");
    }
    if let Ok(mut live) = inner.live.lock() {
        live.remove(&id);
    }
    if counted {
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

async fn start_media(
    media: &MediaHandle,
    outgoing: &[(RtpCodecKind, Outgoing)],
    tasks: &mut JoinSet<()>,
) {
    for (kind, out) in outgoing {
        let Some(payload_type) = negotiated_payload_type(&out.sender).await else {
            warn!("{kind} track has no negotiated codec; not sending it");
            continue;
        };
        let track: Arc<dyn TrackLocal> = out.track.clone();
        match kind {
            RtpCodecKind::Audio => {
                if let Some(units) = media.subscribe_audio() {
                    tasks.spawn(forward::audio(
                        track,
                        RtpStamper::new(out.ssrc, payload_type, false),
                        units,
                    ));
                }
            }
            _ => {
                let stamper = RtpStamper::new(out.ssrc, payload_type, true);
                tasks.spawn(forward::video(
                    track.clone(),
                    stamper,
                    media.subscribe_video(),
                    media.clone(),
                ));
                // PLI/FIR from this viewer → an IDR for everyone (coalesced by the encoder).
                let media = media.clone();
                tasks.spawn(async move {
                    while let Some(TrackLocalEvent::OnRtcpPacket(_)) = track.poll().await {
                        debug!("keyframe requested by viewer");
                        media.request_keyframe();
                    }
                });
            }
        }
    }
}
