//! One WebRTC session per viewer, all fed from the one encoder.
//!
//! - [`session`]: when a session starts media and when it ends (pure state machine).
//! - [`forward`]: shared encoded units → one viewer's RTP packets.
//! - [`peer`]: building a viewer's peer connection (webrtc-rs's sans-IO core).
//! - [`engine`]: the one loop that drives every connection over the one `webrtc.port`
//!   ([`port`], [`tcp`]), learns its public address ([`reflexive`]), and answers a
//!   browser's first ICE check at once ([`nomination`]).
//! - [`keyframe_requests`]: lets PLI/FIR reach the encoder.
//!
//! - [`negotiate`]: SDP offer/answer, with the viewer or with us offering.
//! - [`ended`]: session-end notices for the front ends that must pass them on.
//! - [`figures`]: the sessions' states and traffic, for `/metrics`.
//!
//! [`Sessions`] is the registry the HTTP (WHEP) and signaling front ends talk to: an offer in,
//! an answer and a session id out (or our offer out, the viewer's answer in); the viewer's
//! ICE candidates; delete by id; count; close all on shutdown.
//!
//! **What a viewer can queue.** Each session task takes its orders from outside through
//! two channels: a one-slot [`watch`] for "end now" (delete, shutdown: the newest wins, it
//! cannot fill), and a queue of [`CONTROL_QUEUE`] for the answer and trickled ICE
//! candidates. A candidate that finds the queue full is dropped (a viewer sends a handful;
//! one that floods them loses some, and nobody else notices), an answer waits up to
//! [`ANSWER_WAIT`] for room; and a session takes at most [`MAX_REMOTE_CANDIDATES`] remote
//! candidates in all. Connection state changes from the engine come through a one-slot
//! watch too (see [`engine`]): the session acts on the newest state.

pub mod catch_up;
pub mod congestion;
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
pub mod tcp;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onair_config::WebRtc;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceCandidateInit;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::media::MediaHandle;
use ended::{EndNotices, EndSubscription};
use engine::Conn;
use figures::{Phase, Traffic, Watched};
use forward::Outgoing;
use peer::{PeerError, PeerFactory};
use session::{Action, CloseReason, Event, Session};

/// More sessions than this at once are refused (a Pi's uplink is long full by then).
pub const MAX_SESSIONS: usize = 100;
/// Orders (the answer, trickled candidates) a session may have waiting. Policy: a candidate
/// that finds the queue full is dropped; an answer waits for room (see [`ANSWER_WAIT`]).
pub const CONTROL_QUEUE: usize = 32;
/// How long the viewer's answer may wait for room in a full control queue before it is
/// refused.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// Remote ICE candidates one session takes; more are ignored. Browsers send a few per
/// network interface; each one taken costs connectivity checks.
pub const MAX_REMOTE_CANDIDATES: usize = 50;
/// How long shutdown waits for sessions to close their peer connections.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

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

impl From<PeerError> for OfferError {
    fn from(err: PeerError) -> Self {
        match err {
            PeerError::WebRtc(err) => OfferError::Internal(err.to_string()),
            PeerError::Gone(_) => OfferError::ShuttingDown,
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
    /// Sessions not connected yet (see [`pending`]).
    pending: pending::PendingBudget,
    /// Sessions with media flowing.
    viewers: AtomicUsize,
    /// Every session task and negotiation, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Ids of sessions that ended, for front ends that must tell someone (signaling).
    ended: EndNotices,
}

/// What a session task is told from outside, in order (bounded: [`CONTROL_QUEUE`]).
enum Control {
    /// The viewer's answer to our offer, with where to report whether it was taken.
    Answer(String, oneshot::Sender<Result<(), OfferError>>),
    /// One of the viewer's ICE candidates (trickled).
    Candidate(RTCIceCandidateInit),
    /// The viewer restarts ICE with these credentials; the reply is our ICE fragment.
    Restart(IceCredentials, oneshot::Sender<Result<String, OfferError>>),
}

/// A viewer's new ICE username fragment and password.
pub struct IceCredentials {
    /// `ice-ufrag`.
    pub ufrag: String,
    /// `ice-pwd`.
    pub pwd: String,
}

/// What a session sends: known once the viewer has agreed (in its offer or its answer).
enum Media {
    Agreed(Vec<Outgoing>),
    AwaitingAnswer(Vec<negotiate::Added>),
}

/// How to reach one session's task.
#[derive(Clone)]
struct Handle {
    /// The answer and candidates.
    control: mpsc::Sender<Control>,
    /// "End now" ([`Event::Delete`] or [`Event::Shutdown`]): one slot, never full.
    end: Arc<watch::Sender<Option<Event>>>,
    /// Its state and traffic, for `/metrics`.
    watched: Arc<Watched>,
    /// ICE restarts so far: the ICE session's number, in its entity tag.
    ice_generation: Arc<AtomicU32>,
}

/// Why an order did not reach a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Undelivered {
    /// No such session (any more).
    #[error("no such session")]
    NoSession,
    /// Its queue is full ([`CONTROL_QUEUE`]): the order was dropped.
    #[error("the session's queue is full")]
    Full,
}

#[derive(Default)]
struct Live {
    /// How to reach every live session, by id.
    sessions: HashMap<String, Handle>,
    /// Set by shutdown: no session may be added any more.
    closing: bool,
    /// What the sessions that ended had sent, so `/metrics` counters never go down
    /// (see [`figures`]).
    ended: Traffic,
}

impl Sessions {
    /// An empty registry serving `media` with the `[webrtc]` settings, with `webrtc.port`
    /// bound (or the error binding it).
    pub fn new(media: MediaHandle, webrtc: &WebRtc) -> std::io::Result<Self> {
        let layers = media.layers();
        let kbps = |spec: Option<&crate::media::LayerSpec>| spec.map_or(0, |s| s.bitrate_kbps);
        let (top, lowest) = (kbps(layers.first()), kbps(layers.last()));
        let factory = PeerFactory::new(webrtc, media.has_audio(), top, lowest)?;
        tracing::info!(
            "webrtc: every viewer's media on port {} (webrtc.port), UDP and ICE-TCP",
            factory.port()
        );
        Ok(Sessions {
            inner: Arc::new(Inner {
                media,
                factory,
                live: Mutex::new(Live::default()),
                permits: Arc::new(Semaphore::new(MAX_SESSIONS)),
                pending: pending::PendingBudget::default(),
                viewers: AtomicUsize::new(0),
                tasks: TaskTracker::new(),
                ended: EndNotices::default(),
            }),
        })
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
    /// `source` is the address the offer came from, when known (see [`pending`]).
    pub async fn offer(
        &self,
        offer_sdp: String,
        source: Option<std::net::IpAddr>,
    ) -> Result<(String, String), OfferError> {
        self.negotiate(Some(offer_sdp), source).await
    }

    /// Makes an offer for a new viewer (a signaling consumer that asked the producer to
    /// offer) and starts the session. Returns the session id and the offer SDP; the answer
    /// goes to [`Self::answer`].
    pub async fn offer_to_viewer(&self) -> Result<(String, String), OfferError> {
        self.negotiate(None, None).await
    }

    async fn negotiate(
        &self,
        offer: Option<String>,
        source: Option<std::net::IpAddr>,
    ) -> Result<(String, String), OfferError> {
        let permit = self
            .inner
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| OfferError::Full)?;
        let pending = self
            .inner
            .pending
            .take(source)
            .map_err(OfferError::Crowded)?;
        let inner = self.inner.clone();
        let task = self
            .inner
            .tasks
            .spawn(negotiate_and_start(inner, offer, (permit, pending)));
        task.await
            .map_err(|e| OfferError::Internal(e.to_string()))?
    }

    /// The viewer's answer to the offer of session `id`.
    pub async fn answer(&self, id: &str, answer: String) -> Result<(), OfferError> {
        let (reply, replied) = oneshot::channel();
        let control = self.handle(id).ok_or(OfferError::NoSession)?.control;
        match tokio::time::timeout(ANSWER_WAIT, control.send(Control::Answer(answer, reply))).await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(OfferError::NoSession),
            Err(_) => {
                return Err(OfferError::Internal(format!(
                    "the session's queue stayed full for {ANSWER_WAIT:?}"
                )));
            }
        }
        replied.await.unwrap_or(Err(OfferError::NoSession))
    }

    /// One of the viewer's ICE candidates for session `id`; dropped when the session has
    /// [`CONTROL_QUEUE`] orders waiting.
    pub fn add_candidate(
        &self,
        id: &str,
        candidate: String,
        sdp_mline_index: u16,
    ) -> Result<(), Undelivered> {
        let candidate = RTCIceCandidateInit {
            candidate,
            sdp_mline_index: Some(sdp_mline_index),
            ..Default::default()
        };
        let handle = self.handle(id).ok_or(Undelivered::NoSession)?;
        handle
            .control
            .try_send(Control::Candidate(candidate))
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => Undelivered::Full,
                mpsc::error::TrySendError::Closed(_) => Undelivered::NoSession,
            })
    }

    /// The viewer of session `id` restarts ICE (a WHEP PATCH with new credentials). Returns
    /// our new credentials and candidates as an SDP fragment.
    pub async fn restart_ice(
        &self,
        id: &str,
        credentials: IceCredentials,
    ) -> Result<String, OfferError> {
        let (reply, replied) = oneshot::channel();
        let control = self.handle(id).ok_or(OfferError::NoSession)?.control;
        let order = Control::Restart(credentials, reply);
        match tokio::time::timeout(ANSWER_WAIT, control.send(order)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(OfferError::NoSession),
            Err(_) => {
                return Err(OfferError::Internal(format!(
                    "the session's queue stayed full for {ANSWER_WAIT:?}"
                )));
            }
        }
        replied.await.unwrap_or(Err(OfferError::NoSession))
    }

    /// The entity tag of session `id`'s ICE session (WHEP's `ETag`): new after each restart.
    pub fn ice_tag(&self, id: &str) -> Option<String> {
        let generation = self.handle(id)?.ice_generation.load(Ordering::Relaxed);
        Some(format!("\"{id}.{generation}\""))
    }

    /// A subscription to session ends: each session it [watches](Self::watch_end) is
    /// reported once when it ends, whatever ended it (see [`ended`]).
    pub fn ended(&self) -> EndSubscription {
        self.inner.ended.subscribe()
    }

    /// Has `subscription` report session `id` when it ends (at once if it has already).
    pub fn watch_end(&self, subscription: &EndSubscription, id: &str) {
        subscription.watch(id, || self.contains(id));
    }

    /// Ends a session (WHEP DELETE). `false` if there is no such session.
    pub fn delete(&self, id: &str) -> bool {
        self.end(id, Event::Delete)
    }

    /// Tells session `id` to end; never waits, never fills (one slot, the newest wins).
    fn end(&self, id: &str, why: Event) -> bool {
        self.handle(id)
            .is_some_and(|handle| handle.end.send(Some(why)).is_ok())
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        self.inner
            .live
            .lock()
            .ok()
            .and_then(|live| live.sessions.get(id).cloned())
    }

    /// Whether a session with this id is live.
    pub fn contains(&self, id: &str) -> bool {
        self.inner
            .live
            .lock()
            .is_ok_and(|live| live.sessions.contains_key(id))
    }

    /// Closes every session, refuses new ones, and waits (at most `SHUTDOWN_WAIT`) until
    /// all have released their resources.
    pub async fn shutdown(&self) {
        if let Ok(mut live) = self.inner.live.lock() {
            live.closing = true;
            for handle in live.sessions.values() {
                let _ = handle.end.send(Some(Event::Shutdown));
            }
        }
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                "{} session task(s) still closing {SHUTDOWN_WAIT:?} after shutdown; not waiting for them",
                self.inner.tasks.len()
            );
        }
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

/// Negotiates a new viewer's session, answering `offer` or, without one, offering, and
/// starts it. Returns the session id and our SDP.
async fn negotiate_and_start(
    inner: Arc<Inner>,
    offer: Option<String>,
    places: Places,
) -> Result<(String, String), OfferError> {
    let offer = offer
        .map(|sdp| {
            RTCSessionDescription::offer(sdp).map_err(|e| OfferError::BadOffer(e.to_string()))
        })
        .transpose()?;
    if let Some(why) = inner.media.camera_gone(Instant::now()) {
        return Err(OfferError::NoPicture(why));
    }
    let profile = inner.media.video_description().profile_level_id;
    let profile = profile.ok_or(OfferError::NotReady)?;
    let peer = inner.factory.build(&peer::h264_codec(&profile)).await?;
    let factory = &inner.factory;
    let negotiated = match offer {
        Some(offer) => negotiate::answer(factory, &profile, &peer, offer)
            .await
            .map(|(answer, outgoing)| (answer, Media::Agreed(outgoing))),
        None => negotiate::offer(factory, &profile, &peer)
            .await
            .map(|(offer, added)| (offer, Media::AwaitingAnswer(added))),
    };
    let (sdp, media) = match negotiated {
        Ok(negotiated) => negotiated,
        // Dropping the peer closes its connection.
        Err(err) => return Err(err),
    };
    let id = format!("{:032x}", rand::random::<u128>());
    if register(&inner, &id, peer, media, profile, places).is_err() {
        return Err(OfferError::ShuttingDown);
    }
    debug!(session = %id, "viewer negotiating");
    Ok((id, sdp))
}

/// Adds the session to the registry and starts its task, under one lock with no await in
/// between, so shutdown either sees the session or has refused it (then the peer comes back
/// to be closed).
fn register(
    inner: &Arc<Inner>,
    id: &str,
    peer: peer::NewPeer,
    media: Media,
    profile: String,
    places: Places,
) -> Result<(), peer::NewPeer> {
    let Ok(mut live) = inner.live.lock() else {
        return Err(peer);
    };
    if live.closing {
        return Err(peer);
    }
    let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let (end_tx, end_rx) = watch::channel(None);
    let watched = Arc::new(Watched::new(
        peer.conn.clone(),
        peer.rtcp.clone(),
        peer.estimate.clone(),
    ));
    let ice_generation = Arc::new(AtomicU32::new(0));
    let handle = Handle {
        control: control_tx,
        end: Arc::new(end_tx),
        watched: watched.clone(),
        ice_generation: ice_generation.clone(),
    };
    live.sessions.insert(id.to_owned(), handle);
    let orders = Orders {
        control: control_rx,
        end: end_rx,
        candidates_taken: 0,
        watched,
        ice_generation,
    };
    let task = run_session(
        inner.clone(),
        id.to_owned(),
        peer,
        orders,
        media,
        profile,
        places,
    );
    inner.tasks.spawn(task);
    Ok(())
}

/// A session's slot (held to its end) and its place among those connecting (given back when
/// it connects).
type Places = (OwnedSemaphorePermit, pending::Pending);

/// The outside's orders to one session task (see [`Handle`] for the sending side).
struct Orders {
    control: mpsc::Receiver<Control>,
    end: watch::Receiver<Option<Event>>,
    /// Remote candidates taken so far (at most [`MAX_REMOTE_CANDIDATES`]).
    candidates_taken: usize,
    /// Where the session reports its state, and leaves its final figures, for `/metrics`.
    watched: Arc<Watched>,
    /// Counts the session's ICE restarts (see [`Sessions::ice_tag`]).
    ice_generation: Arc<AtomicU32>,
}

/// How long closing a peer connection may take before the session is released anyway.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long an ending session waits for its final stats (what it sent, for `/metrics`).
const FINAL_STATS_WAIT: Duration = Duration::from_millis(100);

/// Drives one session from negotiation to teardown. Holds the session's permit until the end,
/// its place among those connecting until it connects.
async fn run_session(
    inner: Arc<Inner>,
    id: String,
    peer: peer::NewPeer,
    mut orders: Orders,
    mut media: Media,
    profile: String,
    (_permit, pending): Places,
) {
    let mut pending = Some(pending);
    let peer::NewPeer {
        conn,
        mut events,
        feedback,
        ..
    } = peer;
    let mut feedback = Some(feedback);
    let mut session = Session::new(Instant::now(), matches!(media, Media::Agreed(_)));
    let mut media_tasks = tokio::task::JoinSet::new();
    let reason = loop {
        let deadline = session.deadline();
        let event = tokio::select! {
            Ok(()) = events.changed() => match *events.borrow_and_update() {
                Some(event) => event,
                None => continue,
            },
            Ok(()) = orders.end.changed() => orders.end.borrow_and_update().unwrap_or(Event::Shutdown),
            order = orders.control.recv() => match order {
                Some(Control::Answer(answer, reply)) => {
                    let taken = take_answer(&conn, &mut media, &answer, &profile).await;
                    let failed = taken.is_err();
                    if let Err(err) = &taken {
                        warn!(session = %id, "{err}");
                    }
                    let _ = reply.send(taken);
                    if failed {
                        break CloseReason::Failed;
                    }
                    Event::Answered
                }
                Some(Control::Candidate(candidate)) => {
                    add_remote_candidate(&id, &conn, &mut orders.candidates_taken, candidate).await;
                    continue;
                }
                Some(Control::Restart(credentials, reply)) => {
                    let restarted = restart_ice(&inner.factory, &conn, &mut orders, credentials).await;
                    match &restarted {
                        Ok(_) => info!(session = %id, "ICE restarted"),
                        Err(err) => warn!(session = %id, "ICE restart failed: {err}"),
                    }
                    let _ = reply.send(restarted);
                    continue;
                }
                None => Event::Shutdown,
            },
            () = sleep_until(deadline) => Event::Tick,
        };
        let action = session.handle(event, Instant::now());
        orders.watched.set_state(session.state());
        if !session.pending() {
            drop(pending.take());
        }
        match action {
            Action::None => {}
            Action::StartMedia => {
                let Media::Agreed(outgoing) = &media else {
                    warn!(session = %id, "connected before the answer was applied");
                    continue;
                };
                forward::start(
                    &inner.media,
                    outgoing,
                    feedback.take(),
                    &id,
                    &orders.watched,
                    &mut media_tasks,
                );
                let viewers = inner.viewers.fetch_add(1, Ordering::Relaxed) + 1;
                info!(session = %id, viewers, "viewer connected");
            }
            Action::Close(reason) => break reason,
        }
    };
    media_tasks.abort_all();
    orders.watched.set_phase(Phase::Closing);
    // At shutdown nobody scrapes again: no need to hold it up.
    let last_report = match reason {
        CloseReason::Shutdown => None,
        _ => orders.watched.report(FINAL_STATS_WAIT).await,
    };
    let sent = orders.watched.retire(last_report.as_ref());
    if tokio::time::timeout(CLOSE_WAIT, conn.close())
        .await
        .is_err()
    {
        warn!(session = %id, "closing the peer connection took over {CLOSE_WAIT:?}; releasing the session anyway");
    }
    if let Ok(mut live) = inner.live.lock() {
        live.sessions.remove(&id);
        live.ended = live.ended.plus(sent);
    }
    if session.media_started() {
        inner.viewers.fetch_sub(1, Ordering::Relaxed);
    }
    inner.ended.publish(&id);
    // Only viewers who watched are news: an offer that never connected is a stranger's to
    // repeat at will (debug).
    let viewers = inner.viewers.load(Ordering::Relaxed);
    match session.media_started() {
        true => info!(session = %id, ?reason, viewers, "viewer gone"),
        false => debug!(session = %id, ?reason, viewers, "session that never connected gone"),
    }
}

/// Adds one of the viewer's candidates, unless it has sent [`MAX_REMOTE_CANDIDATES`]
/// already.
async fn add_remote_candidate(
    id: &str,
    conn: &Conn,
    taken: &mut usize,
    candidate: RTCIceCandidateInit,
) {
    if *taken >= MAX_REMOTE_CANDIDATES {
        if *taken == MAX_REMOTE_CANDIDATES {
            warn!(session = %id, "the viewer sent over {MAX_REMOTE_CANDIDATES} ICE candidates; ignoring the rest");
            *taken += 1;
        }
        return;
    }
    *taken += 1;
    let added = conn.with(move |pc, _| pc.add_remote_candidate(candidate));
    if let Ok(Err(err)) = added.await {
        debug!(session = %id, "viewer's ICE candidate refused: {err}");
    }
}

/// Restarts ICE with the viewer's new credentials; its remote candidates count afresh.
async fn restart_ice(
    factory: &PeerFactory,
    conn: &Conn,
    orders: &mut Orders,
    IceCredentials { ufrag, pwd }: IceCredentials,
) -> Result<String, OfferError> {
    let fragment = negotiate::restart(factory, conn, (&ufrag, &pwd)).await?;
    orders.ice_generation.fetch_add(1, Ordering::Relaxed);
    orders.candidates_taken = 0;
    Ok(fragment)
}

/// Applies the viewer's answer to our offer.
async fn take_answer(
    conn: &Conn,
    media: &mut Media,
    answer: &str,
    profile: &str,
) -> Result<(), OfferError> {
    let Media::AwaitingAnswer(_) = media else {
        return Err(OfferError::BadOffer(
            "an answer came for a session that has one".into(),
        ));
    };
    let Media::AwaitingAnswer(added) = std::mem::replace(media, Media::Agreed(Vec::new())) else {
        unreachable!("checked above");
    };
    let outgoing = negotiate::accept(conn, answer, added, profile).await?;
    *media = Media::Agreed(outgoing);
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
