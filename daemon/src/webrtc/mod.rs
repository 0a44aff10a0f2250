//! One WebRTC session per viewer, all fed from the one encoder, all driven by one loop.
//!
//! - [`viewer`]: one viewer's state, all in one place, and how a picture and an offer
//!   travel to it (read its docs first).
//! - [`engine`]: the one loop that owns every viewer and the one `webrtc.port` ([`port`],
//!   [`tcp`]), learns its public address ([`reflexive`]), and answers a browser's first ICE
//!   check at once ([`nomination`]).
//! - [`session`]: when a session starts media and when it ends (pure state machine).
//! - [`forward`]: RTP headers around the shared payloads; [`catch_up`]: the GOP replayed;
//!   [`layer_choice`]: which layer; [`congestion`]: the estimate and the pacer, under
//!   what the link was seen to [`delivered`];
//!   [`keyframe_requests`]: PLI/FIR to the encoder.
//! - [`negotiate`]: SDP offer/answer, with the viewer or with us offering.
//! - [`ended`]: session-end notices for the front ends that must pass them on.
//! - [`figures`]: the sessions' states and traffic, for `/metrics`.
//! - `sim` (tests only): the loop's core against str0m viewers through emulated links, in
//!   simulated time.
//!
//! [`Sessions`] is what the HTTP (WHEP) and signalling front ends hold: each of its calls is
//! one [`engine::Request`] to the loop and one reply (an offer in, an answer and a session id
//! out; the viewer's answer; its ICE candidates; figures), and deleting a session is one
//! [`engine::Engine::end`]. It keeps the slots ([`MAX_SESSIONS`]) and the budget of sessions
//! connecting ([`pending`]), which are taken before the loop is asked anything.
//!
//! **What a viewer can queue.** Nothing of its own: requests share the loop's one bounded
//! queue, which the loop empties in microseconds per request. A candidate that finds it full
//! is refused (`503`, try again); an offer, answer or restart waits up to [`ANSWER_WAIT`] for
//! room. A session takes at most [`MAX_REMOTE_CANDIDATES`] remote candidates per ICE session,
//! and at most one end of it waits.

pub mod catch_up;
pub mod congestion;
pub mod delivered;
pub mod ended;
pub mod engine;
pub mod figures;
pub mod forward;
pub mod keyframe_requests;
pub mod layer_choice;
pub mod nat;
pub mod negotiate;
pub mod nomination;
pub mod peer;
pub mod pending;
pub mod port;
pub mod reflexive;
pub mod session;
#[cfg(test)]
mod sim;
pub mod tcp;
pub mod viewer;

use std::sync::Arc;
use std::time::Duration;

use onair_config::WebRtc;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::lifecycle::Lifecycle;
use crate::media::MediaHandle;
use ended::EndSubscription;
use engine::{Engine, Request};
use figures::{PeerFigures, Phase, SessionFigures};
use peer::PeerFactory;
use session::SessionId;
use viewer::{Parts, Tracks};

/// More sessions than this at once are refused (a Pi's uplink is long full by then).
pub const MAX_SESSIONS: usize = 100;
/// How long an offer, an answer or an ICE restart may wait for room in the loop's queue
/// before it is refused.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// Remote ICE candidates one session takes; more are ignored. Browsers send a few per
/// network interface; each one taken costs connectivity checks.
pub const MAX_REMOTE_CANDIDATES: usize = 50;

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
    /// There is no picture to show: the camera is gone or failed (why).
    #[error("no picture from the camera ({0}); try again when it is back")]
    NoPicture(String),
    /// [`MAX_SESSIONS`] are running.
    #[error("too many viewers ({MAX_SESSIONS}); try again later")]
    Full,
    /// Too many sessions are connecting, from everywhere or from the offer's address.
    #[error("{0}; try again shortly")]
    Crowded(pending::Crowded),
    /// An answer or candidate for a session that does not exist (any more).
    #[error("no such session")]
    NoSession,
    /// The daemon is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// Something on our side failed.
    #[error("cannot create a session: {0}")]
    Internal(String),
}

/// The registry of live sessions: the way to the loop. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    engine: Engine,
    media: MediaHandle,
    factory: Arc<PeerFactory>,
    /// One permit per session, taken before any work is done for an offer.
    permits: Arc<Semaphore>,
    /// Sessions not connected yet (see [`pending`]).
    pending: Arc<pending::PendingBudget>,
}

/// A viewer's new ICE username fragment and password.
pub struct IceCredentials {
    /// `ice-ufrag`.
    pub ufrag: String,
    /// `ice-pwd`.
    pub pwd: String,
}

/// Why an order did not reach a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undelivered {
    /// No such session (any more).
    #[error("no such session")]
    NoSession,
    /// The loop's queue is full: the order was dropped.
    #[error("the session's queue is full")]
    Full,
}

/// A session's slot (held to its end) and its place among those connecting (given back when
/// it connects).
pub type Places = (OwnedSemaphorePermit, pending::Pending);

impl Sessions {
    /// A registry serving `media` with the `[webrtc]` settings, with `webrtc.port` bound (or
    /// the error binding it) and the loop started, as part of `lifecycle` (at its stop every
    /// session is closed).
    pub fn new(
        media: MediaHandle,
        webrtc: &WebRtc,
        lifecycle: &Lifecycle,
    ) -> std::io::Result<Self> {
        let layers = media.layers();
        let kbps = |spec: Option<&crate::media::LayerSpec>| spec.map_or(0, |s| s.bitrate_kbps);
        let (top, lowest) = (kbps(layers.first()), kbps(layers.last()));
        let factory = Arc::new(PeerFactory::new(webrtc, media.has_audio(), top, lowest));
        let engine = Engine::start(factory.clone(), media.clone(), lifecycle)?;
        let stun = peer::stun_servers(&webrtc.ice_servers);
        if !stun.is_empty() {
            lifecycle.spawn(peer::resolve_stun_servers(stun, engine.clone()));
        }
        tracing::info!(
            "webrtc: every viewer's media on port {} (webrtc.port), UDP and ICE-TCP",
            engine.number()
        );
        Ok(Sessions {
            engine,
            media,
            factory,
            permits: Arc::new(Semaphore::new(MAX_SESSIONS)),
            pending: Arc::default(),
        })
    }

    /// Viewers currently receiving media.
    pub fn viewers(&self) -> usize {
        self.engine.directory().viewers()
    }

    /// Sessions in any state (negotiating included).
    pub fn len(&self) -> usize {
        self.engine.directory().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers a viewer's offer (non-trickle: the answer holds all our candidates) and starts
    /// the session. Returns the session id and the answer SDP. If the caller gives up (the
    /// HTTP client went away), the session times out unconnected.
    /// `source` is the address the offer came from, when known (see [`pending`]).
    pub async fn offer(
        &self,
        offer_sdp: String,
        source: Option<std::net::IpAddr>,
    ) -> Result<(String, String), OfferError> {
        let offer = RTCSessionDescription::offer(offer_sdp)
            .map_err(|e| OfferError::BadOffer(e.to_string()))?;
        self.negotiate(Some(offer), source).await
    }

    /// Makes an offer for a new viewer (a signaling consumer that asked the producer to
    /// offer) and starts the session. Returns the session id and the offer SDP; the answer
    /// goes to [`Self::answer`].
    pub async fn offer_to_viewer(&self) -> Result<(String, String), OfferError> {
        self.negotiate(None, None).await
    }

    async fn negotiate(
        &self,
        offer: Option<RTCSessionDescription>,
        source: Option<std::net::IpAddr>,
    ) -> Result<(String, String), OfferError> {
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| OfferError::Full)?;
        let pending = self.pending.take(source).map_err(OfferError::Crowded)?;
        // A panic in webrtc-rs over what a stranger sent ends this request, nothing else.
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let now = std::time::Instant::now();
            prepare(&self.factory, &self.media, offer, (permit, pending), now)
        }));
        let parts = prepared
            .map_err(|_| OfferError::Internal("webrtc-rs failed on the offer".into()))??;
        let (id, sdp) = self
            .ask(|reply| Request::Offer(Box::new(parts), reply))
            .await?;
        Ok((id.to_string(), sdp))
    }

    /// Asks the loop (waiting up to [`ANSWER_WAIT`] for room) and waits for its reply.
    async fn ask<T>(
        &self,
        request: impl FnOnce(engine::Reply<T>) -> Request,
    ) -> Result<T, OfferError> {
        let (reply, replied) = oneshot::channel();
        match tokio::time::timeout(ANSWER_WAIT, self.engine.ask(request(reply))).await {
            Ok(asked) => asked?,
            Err(_) => {
                return Err(OfferError::Internal(format!(
                    "the sessions' queue stayed full for {ANSWER_WAIT:?}"
                )));
            }
        }
        // A reply dropped unsent: the session ended meanwhile, or the loop stopped.
        replied
            .await
            .unwrap_or_else(|_| match self.engine.stopped() {
                true => Err(OfferError::ShuttingDown),
                false => Err(OfferError::NoSession),
            })
    }

    /// Asks the loop something only a live session answers; `None` if there is no such
    /// session (or the loop has stopped).
    async fn query<T>(
        &self,
        id: &str,
        request: impl FnOnce(SessionId, oneshot::Sender<Option<T>>) -> Request,
    ) -> Option<T> {
        let id = SessionId::parse(id)?;
        let (reply, replied) = oneshot::channel();
        self.engine.ask(request(id, reply)).await.ok()?;
        replied.await.ok().flatten()
    }

    /// The viewer's answer to the offer of session `id`.
    pub async fn answer(&self, id: &str, answer: String) -> Result<(), OfferError> {
        let id = self.live(id).ok_or(OfferError::NoSession)?;
        self.ask(|reply| Request::Answer(id, answer, reply)).await
    }

    /// One of the viewer's ICE candidates for session `id`; refused when the loop's queue is
    /// full.
    pub fn add_candidate(
        &self,
        id: &str,
        candidate: String,
        sdp_mline_index: u16,
    ) -> Result<(), Undelivered> {
        let id = self.live(id).ok_or(Undelivered::NoSession)?;
        let candidate = RTCIceCandidateInit {
            candidate,
            sdp_mline_index: Some(sdp_mline_index),
            ..Default::default()
        };
        self.engine.try_ask(Request::Candidate(id, candidate))
    }

    /// The viewer of session `id` restarts ICE (a WHEP PATCH with new credentials). Returns
    /// our new credentials and candidates as an SDP fragment.
    pub async fn restart_ice(
        &self,
        id: &str,
        credentials: IceCredentials,
    ) -> Result<String, OfferError> {
        let id = self.live(id).ok_or(OfferError::NoSession)?;
        self.ask(|reply| Request::Restart(id, credentials, reply))
            .await
    }

    /// The entity tag of session `id`'s ICE session (WHEP's `ETag`): new after each restart.
    pub async fn ice_tag(&self, id: &str) -> Option<String> {
        let generation = self.query(id, Request::IceGeneration).await?;
        Some(format!("\"{id}.{generation}\""))
    }

    /// Where session `id` is; `None` once it has ended.
    pub async fn phase(&self, id: &str) -> Option<Phase> {
        self.query(id, Request::Phase).await
    }

    /// Each live session's figures.
    pub async fn peers(&self) -> Vec<PeerFigures> {
        let (reply, replied) = oneshot::channel();
        match self.engine.ask(Request::Peers(reply)).await {
            Ok(()) => replied.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The live sessions' states and the traffic of all sessions so far.
    pub async fn figures(&self) -> SessionFigures {
        let (reply, replied) = oneshot::channel();
        match self.engine.ask(Request::Figures(reply)).await {
            Ok(()) => replied.await.unwrap_or_default(),
            Err(_) => SessionFigures::default(),
        }
    }

    /// A subscription to session ends: each session it [watches](Self::watch_end) is
    /// reported once when it ends, whatever ended it (see [`ended`]).
    pub fn ended(&self) -> EndSubscription {
        self.engine.directory().ended.subscribe()
    }

    /// Has `subscription` report session `id` when it ends (at once if it has already).
    pub fn watch_end(&self, subscription: &EndSubscription, id: &str) {
        subscription.watch(id, || self.contains(id));
    }

    /// Ends a session (WHEP DELETE). `false` if there is no such session.
    pub fn delete(&self, id: &str) -> bool {
        SessionId::parse(id).is_some_and(|id| self.engine.end(id))
    }

    /// Whether a session with this id is live.
    pub fn contains(&self, id: &str) -> bool {
        self.live(id).is_some()
    }

    fn live(&self, id: &str) -> Option<SessionId> {
        SessionId::parse(id).filter(|id| self.engine.directory().contains(*id))
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

/// A new viewer's core, built by the caller rather than in the loop (making its DTLS
/// certificate takes a while), with `offer` applied or, without one, our tracks added, at
/// `now`.
pub(crate) fn prepare(
    factory: &PeerFactory,
    media: &MediaHandle,
    offer: Option<RTCSessionDescription>,
    places: Places,
    now: std::time::Instant,
) -> Result<Parts, OfferError> {
    if let Some(why) = media.camera_gone(now) {
        return Err(OfferError::NoPicture(why));
    }
    let profile = media.video_description().profile_level_id;
    let profile = profile.ok_or(OfferError::NotReady)?;
    let peer = factory
        .build(&peer::h264_codec(&profile), now)
        .map_err(|e| OfferError::Internal(e.to_string()))?;
    let mut pc = peer.pc;
    let answering = offer.is_some();
    let added = match offer {
        Some(offer) => negotiate::take_offer(factory, &profile, &mut pc, now, offer)?,
        None => negotiate::add_tracks(factory, &profile, &mut pc)?,
    };
    Ok(Parts {
        pc,
        rtcp: peer.rtcp,
        estimate: peer.estimate,
        tracks: Tracks::AwaitingAnswer(added),
        answering,
        profile,
        places,
    })
}
