//! onaird as a producer on one connection to a signalling service: registers the channel,
//! turns the sessions the service starts into WebRTC sessions, relays SDP and ICE, and ends
//! sessions whichever side ends them.
//!
//! What the service (and the viewers behind it) can make pile up here is bounded:
//! - sessions being negotiated: at most [`MAX_SESSIONS`]; a `startSession` beyond that is
//!   refused with `endSession` at once;
//! - a viewer's candidates that arrive while our SDP is being made: at most
//!   [`MAX_PENDING_CANDIDATES`] are kept, later ones are dropped (after that the session
//!   has its own bounded queue, see [`crate::webrtc`]);
//! - reports of the negotiation tasks: a queue of [`REPORTS`]; a task waits for room (there
//!   are at most two per session: its negotiation, and applying the viewer's one answer);
//! - session ends: a mailbox that holds only our sessions ([`crate::webrtc::ended`]), so
//!   none is lost however many end at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use gst_plugin_webrtc_signalling_protocol as p;
use p::{IncomingMessage, OutgoingMessage, PeerMessageInner, SdpMessage};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::link::Link;
use crate::lifecycle::Lifecycle;
use crate::webrtc::ended::EndSubscription;
use crate::webrtc::{MAX_SESSIONS, OfferError, Sessions, Undelivered};

/// A viewer's candidates kept while our SDP is being made; later ones are dropped. A browser
/// sends one or two per network interface.
pub const MAX_PENDING_CANDIDATES: usize = 32;
/// Negotiation reports waiting to be handled; a negotiation task waits for room.
pub const REPORTS: usize = 16;

/// How this camera presents itself to the service.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `device.channel`.
    pub channel: String,
    /// `device.name`.
    pub name: String,
    /// Random for each run of onaird, in `meta.device`: tells people (and logs) which run of
    /// a camera they see. Not an identity: anyone can copy it from the service's `list`; only
    /// a device token proves a camera (see onair-signal's hub).
    pub device: String,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The service refused the registration.
    Refused(String),
    /// The connection ended; whether the channel had been registered on it.
    Ended {
        /// The channel was live on this connection.
        registered: bool,
    },
}

/// A session the service started, by the service's session id.
enum Local {
    /// Our SDP is being made; the viewer's candidates wait, and an `endSession` that comes
    /// meanwhile is remembered.
    Negotiating {
        candidates: Vec<(String, u32)>,
        ended: bool,
    },
    /// Our session.
    Live {
        /// Our session id.
        local: String,
        /// We offered and the viewer has not answered yet: the one answer it may send.
        awaiting_answer: bool,
    },
}

/// What the negotiation tasks report back.
enum Report {
    Negotiated {
        session: String,
        result: Result<(String, SdpMessage), OfferError>,
    },
    AnswerRefused {
        session: String,
        error: OfferError,
    },
}

/// Runs the producer on `link` (to `service`, named in logs) until the connection ends or the
/// registration is refused.
/// `registered` is set while the channel is live on this connection.
pub async fn run(
    link: &mut dyn Link,
    service: &str,
    me: &Identity,
    (sessions, lifecycle): (&Sessions, &Lifecycle),
    registered: &AtomicBool,
) -> Outcome {
    let ended = sessions.ended();
    let Some(OutgoingMessage::Welcome { peer_id }) = link.recv().await else {
        return Outcome::Ended { registered: false };
    };
    let status = IncomingMessage::SetPeerStatus(p::PeerStatus {
        roles: vec![p::PeerRole::Producer],
        meta: Some(json!({"channel": me.channel, "name": me.name, "device": me.device})),
        peer_id: None,
    });
    // The protocol does not acknowledge a registration: listing the producers right after
    // it does (an error would come first).
    if link.send(status).await.is_err() || link.send(IncomingMessage::List).await.is_err() {
        return Outcome::Ended { registered: false };
    }

    let (reports_tx, mut reports) = mpsc::channel(REPORTS);
    let mut driver = Driver {
        sessions,
        lifecycle,
        ended: &ended,
        by_session: HashMap::new(),
        by_local: HashMap::new(),
        reports: reports_tx,
    };
    let mut live = false;
    let outcome = 'connection: loop {
        let to_send = tokio::select! {
            message = link.recv() => {
                let Some(message) = message else {
                    break Outcome::Ended { registered: live };
                };
                match message {
                    OutgoingMessage::Error { details } if !live => break Outcome::Refused(details),
                    OutgoingMessage::List { producers } if !live => {
                        if !producers.iter().any(|p| p.id == peer_id) {
                            break Outcome::Refused("the service does not list us after registering".into());
                        }
                        live = true;
                        registered.store(true, Ordering::Relaxed);
                        info!(channel = %me.channel, peer = %peer_id, "signaling: channel registered with {service}");
                        Vec::new()
                    }
                    message => driver.on_message(message),
                }
            }
            Some(report) = reports.recv() => driver.on_report(report),
            local = ended.recv() => driver.on_local_end(&local),
        };
        for message in to_send {
            if let Err(err) = link.send(message).await {
                warn!("signaling: cannot send to {service}: {err:#}");
                break 'connection Outcome::Ended { registered: live };
            }
        }
    };
    registered.store(false, Ordering::Relaxed);
    // The service ends these sessions for the viewers as the connection goes; end ours too.
    for local in driver.by_local.keys() {
        sessions.delete(local);
    }
    outcome
}

struct Driver<'a> {
    sessions: &'a Sessions,
    /// Where negotiations run (each is one request to the sessions, bounded in time).
    lifecycle: &'a Lifecycle,
    /// Where the ends of our sessions arrive; each live one is watched.
    ended: &'a EndSubscription,
    by_session: HashMap<String, Local>,
    /// Our session id → the service's.
    by_local: HashMap<String, String>,
    reports: mpsc::Sender<Report>,
}

fn end(session: &str) -> IncomingMessage {
    IncomingMessage::EndSession(p::EndSessionMessage {
        session_id: session.to_owned(),
    })
}

impl Driver<'_> {
    /// A message from the service; returns what to send back.
    fn on_message(&mut self, message: OutgoingMessage) -> Vec<IncomingMessage> {
        match message {
            OutgoingMessage::StartSession {
                peer_id,
                session_id,
                offer,
            } => self.on_start(peer_id, session_id, offer),
            OutgoingMessage::Peer(p::PeerMessage {
                session_id,
                peer_message,
            }) => self.on_peer_message(session_id, peer_message),
            OutgoingMessage::EndSession(p::EndSessionMessage { session_id }) => {
                match self.by_session.remove(&session_id) {
                    Some(Local::Live { local, .. }) => {
                        self.by_local.remove(&local);
                        self.ended.forget(&local);
                        self.sessions.delete(&local);
                    }
                    Some(Local::Negotiating { candidates, .. }) => {
                        // Deleted when the negotiation reports.
                        self.by_session.insert(
                            session_id,
                            Local::Negotiating {
                                candidates,
                                ended: true,
                            },
                        );
                    }
                    None => {}
                }
                Vec::new()
            }
            OutgoingMessage::Error { details } => {
                warn!("signaling: the service reports: {details}");
                Vec::new()
            }
            other => {
                debug!(?other, "signaling: ignored");
                Vec::new()
            }
        }
    }

    /// The service starts a session: negotiate it in a task of its own, which reports back.
    fn on_start(
        &mut self,
        viewer: String,
        session_id: String,
        offer: Option<String>,
    ) -> Vec<IncomingMessage> {
        if self.by_session.contains_key(&session_id) {
            warn!(session = %session_id, "signaling: the service started a session twice; ignored");
            return Vec::new();
        }
        if self.by_session.len() >= MAX_SESSIONS {
            warn!(session = %session_id, viewer = %viewer, "signaling: {MAX_SESSIONS} sessions already; refusing another");
            return vec![end(&session_id)];
        }
        info!(session = %session_id, viewer = %viewer, with_offer = offer.is_some(), "signaling: viewer joins");
        self.by_session.insert(
            session_id.clone(),
            Local::Negotiating {
                candidates: Vec::new(),
                ended: false,
            },
        );
        let sessions = self.sessions.clone();
        let reports = self.reports.clone();
        self.lifecycle.spawn(async move {
            let result = match offer {
                Some(offer) => sessions
                    .offer(offer, None)
                    .await
                    .map(|(id, sdp)| (id, SdpMessage::Answer { sdp })),
                None => sessions
                    .offer_to_viewer()
                    .await
                    .map(|(id, sdp)| (id, SdpMessage::Offer { sdp })),
            };
            let report = Report::Negotiated {
                session: session_id,
                result,
            };
            if let Err(mpsc::error::SendError(Report::Negotiated {
                result: Ok((local, _)),
                ..
            })) = reports.send(report).await
            {
                // The connection is gone: nobody will hand this session to a viewer.
                sessions.delete(&local);
            }
        });
        Vec::new()
    }

    fn on_peer_message(
        &mut self,
        session: String,
        message: PeerMessageInner,
    ) -> Vec<IncomingMessage> {
        match (self.by_session.get_mut(&session), message) {
            (
                Some(Local::Live {
                    local,
                    awaiting_answer: awaiting @ true,
                }),
                PeerMessageInner::Sdp(SdpMessage::Answer { sdp }),
            ) => {
                *awaiting = false;
                let (sessions, local) = (self.sessions.clone(), local.clone());
                let reports = self.reports.clone();
                self.lifecycle.spawn(async move {
                    if let Err(error) = sessions.answer(&local, sdp).await {
                        let _ = reports.send(Report::AnswerRefused { session, error }).await;
                    }
                });
            }
            (
                Some(Local::Live { local, .. }),
                PeerMessageInner::Ice {
                    candidate,
                    sdp_m_line_index,
                },
            ) => {
                add_candidate(self.sessions, local, candidate, sdp_m_line_index);
            }
            (
                Some(Local::Negotiating { candidates, .. }),
                PeerMessageInner::Ice {
                    candidate,
                    sdp_m_line_index,
                },
            ) => {
                if candidates.len() < MAX_PENDING_CANDIDATES {
                    candidates.push((candidate, sdp_m_line_index));
                } else {
                    debug!(%session, "signaling: {MAX_PENDING_CANDIDATES} candidates wait already; dropped one");
                }
            }
            (Some(_), PeerMessageInner::Sdp(_)) => {
                // Not the SDP itself: it holds the viewer's ICE password.
                warn!(%session, "signaling: unexpected SDP; ending the session");
                self.forget(&session);
                return vec![end(&session)];
            }
            (None, _) => debug!(%session, "signaling: message for an unknown session"),
        }
        Vec::new()
    }

    fn on_report(&mut self, report: Report) -> Vec<IncomingMessage> {
        match report {
            Report::Negotiated {
                session,
                result: Ok((local, sdp)),
            } => match self.by_session.remove(&session) {
                Some(Local::Negotiating {
                    candidates,
                    ended: false,
                }) => {
                    for (candidate, index) in candidates {
                        add_candidate(self.sessions, &local, candidate, index);
                    }
                    self.by_local.insert(local.clone(), session.clone());
                    // Reported here when it ends, even if that was a moment ago.
                    self.sessions.watch_end(self.ended, &local);
                    let awaiting_answer = matches!(sdp, SdpMessage::Offer { .. });
                    self.by_session.insert(
                        session.clone(),
                        Local::Live {
                            local,
                            awaiting_answer,
                        },
                    );
                    vec![IncomingMessage::Peer(p::PeerMessage {
                        session_id: session,
                        peer_message: PeerMessageInner::Sdp(sdp),
                    })]
                }
                _ => {
                    self.sessions.delete(&local);
                    Vec::new()
                }
            },
            Report::Negotiated {
                session,
                result: Err(error),
            } => {
                warn!(%session, "signaling: cannot serve the viewer: {error}");
                let was_ended = matches!(
                    self.by_session.remove(&session),
                    Some(Local::Negotiating { ended: true, .. })
                );
                if was_ended {
                    Vec::new()
                } else {
                    vec![end(&session)]
                }
            }
            Report::AnswerRefused { session, error } => {
                warn!(%session, "signaling: the viewer's answer: {error}");
                self.forget(&session);
                vec![end(&session)]
            }
        }
    }

    /// One of our sessions ended (ICE failed, timed out, shutdown): tell the service.
    fn on_local_end(&mut self, local: &str) -> Vec<IncomingMessage> {
        match self.by_local.remove(local) {
            Some(session) => {
                self.by_session.remove(&session);
                vec![end(&session)]
            }
            None => Vec::new(),
        }
    }

    fn forget(&mut self, session: &str) {
        if let Some(Local::Live { local, .. }) = self.by_session.remove(session) {
            self.by_local.remove(&local);
            self.ended.forget(&local);
            self.sessions.delete(&local);
        }
    }
}

fn add_candidate(sessions: &Sessions, local: &str, candidate: String, index: u32) {
    // An empty candidate marks the end of the viewer's candidates: nothing to add.
    if candidate.is_empty() {
        return;
    }
    let index = u16::try_from(index).unwrap_or(u16::MAX);
    match sessions.add_candidate(local, candidate, index) {
        Ok(()) => {}
        Err(Undelivered::NoSession) => {
            debug!(session = %local, "signaling: candidate for a session that has ended")
        }
        Err(Undelivered::Full) => {
            debug!(session = %local, "signaling: the session's queue is full; dropped a candidate")
        }
    }
}
