//! The WHEP gateway: `POST /whep/{channel}` turns a WHEP offer into a session with the
//! channel's camera (a consumer that sends its offer with `startSession`) and answers with
//! the camera's answer; `DELETE /whep/{channel}/{session}` ends it. Any WHEP player can
//! so watch a camera that is connected only outbound, from behind NAT.
//!
//! WHEP has no way to trickle the server's candidates to the player, so a producer that
//! trickles them (GStreamer's webrtcsink does) gets up to [`TRICKLE_WAIT`] to send them,
//! and they are written into the answer. onaird puts all of its candidates in its SDP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gst_plugin_webrtc_signalling_protocol as p;
use p::{IncomingMessage, OutgoingMessage, PeerMessageInner, SdpMessage};
use rtc_sdp::description::common::Attribute;
use rtc_sdp::description::session::SessionDescription;
use tokio::sync::oneshot;
use tracing::{debug, info};

use crate::server::{TokenQuery, token};
use crate::service::{Connection, Service};

/// How long the camera has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a trickling camera has to send its candidates after its answer.
pub const TRICKLE_WAIT: Duration = Duration::from_secs(2);
/// Largest offer accepted.
pub const MAX_OFFER: usize = 64 * 1024;

/// The gateway's sessions. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    service: Service,
    /// Session id → how to end it.
    sessions: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

/// Why an offer could not be turned into a session.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No camera publishes that channel now.
    #[error("channel {0:?} is not live")]
    NotLive(String),
    /// The viewer token is missing or wrong.
    #[error("a valid viewer token is needed (Authorization: Bearer, or ?token=)")]
    Unauthorized,
    /// The service refused the session (e.g. the channel has its maximum of viewers).
    #[error("{0}")]
    Refused(String),
    /// The camera ended the session instead of answering (it could not use the offer).
    #[error("the camera ended the session without answering (does the offer accept H.264?)")]
    Ended,
    /// The camera did not answer in time.
    #[error("the camera did not answer within {} s", ANSWER_TIMEOUT.as_secs())]
    Timeout,
}

impl Gateway {
    /// A gateway into `service`.
    pub fn new(service: Service) -> Self {
        Gateway {
            service,
            sessions: Arc::default(),
        }
    }

    /// Starts a session with `channel`'s camera for `offer`; returns the session id and the
    /// camera's answer.
    pub async fn create(
        &self,
        channel: &str,
        token: Option<String>,
        offer: String,
    ) -> Result<(String, String), GatewayError> {
        if !self.service.may_watch(token.as_deref()) {
            return Err(GatewayError::Unauthorized);
        }
        let producer = self
            .service
            .producer_of(channel)
            .ok_or_else(|| GatewayError::NotLive(channel.to_owned()))?;
        let mut conn = self.service.connect(token);
        let _welcome = conn.recv().await;
        conn.send(IncomingMessage::StartSession(p::StartSessionMessage {
            peer_id: producer,
            offer: Some(offer),
        }));
        let (session, answer) = tokio::time::timeout(ANSWER_TIMEOUT, negotiate(&mut conn))
            .await
            .map_err(|_| GatewayError::Timeout)??;
        let (end_tx, end_rx) = oneshot::channel();
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(session.clone(), end_tx);
        }
        info!(%channel, %session, "WHEP viewer joined");
        tokio::spawn(hold(conn, session.clone(), end_rx, self.sessions.clone()));
        Ok((session, answer))
    }

    /// Ends a session; `false` if there is no such session.
    pub fn delete(&self, session: &str) -> bool {
        let end = self
            .sessions
            .lock()
            .ok()
            .and_then(|mut sessions| sessions.remove(session));
        end.is_some_and(|end| end.send(()).is_ok())
    }
}

/// Waits for the session id and the camera's answer, with its trickled candidates.
async fn negotiate(conn: &mut Connection) -> Result<(String, String), GatewayError> {
    let mut session = None;
    let mut candidates = Vec::new();
    let answer = loop {
        match conn.recv().await {
            Some(OutgoingMessage::SessionStarted { session_id, .. }) => session = Some(session_id),
            Some(OutgoingMessage::Peer(message))
                if Some(&message.session_id) == session.as_ref() =>
            {
                match message.peer_message {
                    PeerMessageInner::Sdp(SdpMessage::Answer { sdp }) => break sdp,
                    PeerMessageInner::Ice {
                        candidate,
                        sdp_m_line_index,
                    } => candidates.push((candidate, sdp_m_line_index)),
                    PeerMessageInner::Sdp(SdpMessage::Offer { .. }) => {
                        return Err(GatewayError::Refused(
                            "the camera sent an offer instead of answering".into(),
                        ));
                    }
                }
            }
            Some(OutgoingMessage::Error { details }) => return Err(GatewayError::Refused(details)),
            Some(OutgoingMessage::EndSession(_)) | None => return Err(GatewayError::Ended),
            Some(_) => {}
        }
    };
    let session = session.ok_or(GatewayError::Ended)?;
    if !answer.contains("a=candidate:") {
        // A trickling camera: take its candidates for a moment, up to its end-of-candidates.
        let deadline = tokio::time::Instant::now() + TRICKLE_WAIT;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, conn.recv()).await {
            if let OutgoingMessage::Peer(p::PeerMessage {
                peer_message:
                    PeerMessageInner::Ice {
                        candidate,
                        sdp_m_line_index,
                    },
                ..
            }) = message
            {
                if candidate.is_empty() {
                    break;
                }
                candidates.push((candidate, sdp_m_line_index));
            }
        }
    }
    Ok((session, with_candidates(&answer, &candidates)))
}

/// `sdp` with `candidates` (as `candidate:…` attribute values, by m-line) added.
pub fn with_candidates(sdp: &str, candidates: &[(String, u32)]) -> String {
    if candidates.is_empty() {
        return sdp.to_owned();
    }
    let Ok(mut parsed) = SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp)) else {
        return sdp.to_owned();
    };
    for (candidate, index) in candidates {
        let value = candidate.strip_prefix("a=").unwrap_or(candidate);
        let value = value.strip_prefix("candidate:").unwrap_or(value);
        if let Some(media) = parsed.media_descriptions.get_mut(*index as usize) {
            media.attributes.push(Attribute {
                key: "candidate".into(),
                value: Some(value.to_owned()),
            });
        }
    }
    parsed.marshal()
}

/// Keeps the session's connection until the viewer leaves (DELETE) or the camera ends it.
async fn hold(
    mut conn: Connection,
    session: String,
    mut end: oneshot::Receiver<()>,
    sessions: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
) {
    loop {
        tokio::select! {
            _ = &mut end => {
                conn.send(IncomingMessage::EndSession(p::EndSessionMessage {
                    session_id: session.clone(),
                }));
                info!(%session, "WHEP viewer left");
                break;
            }
            message = conn.recv() => match message {
                Some(OutgoingMessage::EndSession(_)) | None => {
                    debug!(%session, "the camera ended the WHEP session");
                    if let Ok(mut sessions) = sessions.lock() {
                        sessions.remove(&session);
                    }
                    break;
                }
                // Later candidates cannot reach a WHEP player.
                Some(_) => {}
            },
        }
    }
}

/// A plain-text response.
pub fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.into(),
    )
        .into_response()
}

/// The SDP offer of a WHEP POST, or the status and text that refuse it: `415` for another
/// content type, `413` above [`MAX_OFFER`], `400` for text that is not SDP.
pub fn sdp_offer<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<&'a str, (StatusCode, String)> {
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "WHEP offers must be sent as Content-Type: application/sdp\n".into(),
        ));
    }
    if body.len() > MAX_OFFER {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("offer larger than {MAX_OFFER} bytes\n"),
        ));
    }
    let Ok(offer) = std::str::from_utf8(body) else {
        return Err((StatusCode::BAD_REQUEST, "offer is not UTF-8 text\n".into()));
    };
    if !offer.trim_start().starts_with("v=0") {
        return Err((
            StatusCode::BAD_REQUEST,
            "bad offer: not an SDP session description (must start with v=0)\n".into(),
        ));
    }
    // Parsed here too, so that the gateway refuses what no camera could use with a 400
    // naming the problem, instead of a 502 once the camera has given up on it.
    match SessionDescription::unmarshal(&mut std::io::Cursor::new(offer)) {
        Err(err) => {
            // The parser names the line it choked on, or nothing when the text ended early.
            let why = err.to_string();
            let why = match why.trim_end().ends_with(':') {
                true => "it ends before the lines an offer needs (s=, t=, m=)".to_owned(),
                false => why,
            };
            Err((
                StatusCode::BAD_REQUEST,
                format!("bad offer: not valid SDP: {why}\n"),
            ))
        }
        Ok(sdp) if sdp.media_descriptions.is_empty() => Err((
            StatusCode::BAD_REQUEST,
            "bad offer: no media section (m=)\n".into(),
        )),
        Ok(_) => Ok(offer),
    }
}

/// `POST /whep/{channel}`.
pub async fn create(
    State(gateway): State<Gateway>,
    Path(channel): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Who asks comes before what they sent: without a valid token, nothing is said about
    // the offer.
    let token = token(&headers, &query);
    if !gateway.service.may_watch(token.as_deref()) {
        return refusal(GatewayError::Unauthorized);
    }
    let offer = match sdp_offer(&headers, &body) {
        Ok(offer) => offer,
        Err((status, why)) => return plain(status, why),
    };
    match gateway.create(&channel, token, offer.to_owned()).await {
        Ok((session, answer)) => {
            let mut response = (StatusCode::CREATED, answer).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(location) = HeaderValue::from_str(&format!("/whep/{channel}/{session}")) {
                h.insert(header::LOCATION, location);
            }
            response
        }
        Err(err) => refusal(err),
    }
}

/// The response that tells a WHEP player why its offer led to no session.
fn refusal(err: GatewayError) -> Response {
    match err {
        GatewayError::NotLive(_) => plain(StatusCode::NOT_FOUND, format!("{err}\n")),
        GatewayError::Unauthorized => {
            let mut response = plain(StatusCode::UNAUTHORIZED, format!("{err}\n"));
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        GatewayError::Refused(_) => {
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n"));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        GatewayError::Ended | GatewayError::Timeout => {
            plain(StatusCode::BAD_GATEWAY, format!("{err}\n"))
        }
    }
}

/// `DELETE /whep/{channel}/{session}`.
pub async fn delete(
    State(gateway): State<Gateway>,
    Path((_channel, session)): Path<(String, String)>,
) -> Response {
    if gateway.delete(&session) {
        StatusCode::OK.into_response()
    } else {
        plain(StatusCode::NOT_FOUND, "no such session\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(offer: &str) -> (StatusCode, String) {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/sdp"),
        );
        sdp_offer(&headers, offer.as_bytes()).expect_err(offer)
    }

    #[test]
    fn offers_that_are_not_sdp_with_media_are_refused_with_the_reason() {
        for (offer, says) in [
            ("hello", "must start with v=0"),
            ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n", "ends before"),
            ("v=0\r\nthis is not sdp\r\n", "not valid SDP"),
            (
                "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                "no media section",
            ),
        ] {
            let (status, why) = refusal(offer);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{offer:?}");
            assert!(why.contains(says), "{offer:?}: {why}");
        }
    }

    #[test]
    fn trickled_candidates_are_written_into_their_media_section() {
        let answer = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n";
        let candidates = [
            (
                "candidate:1 1 UDP 2015363327 10.0.0.2 50000 typ host".to_owned(),
                1,
            ),
            (
                "candidate:2 1 UDP 2015363327 10.0.0.2 50002 typ host".to_owned(),
                0,
            ),
            ("candidate:3 1 UDP 1 10.0.0.2 1 typ host".to_owned(), 7),
        ];
        let merged = with_candidates(answer, &candidates);
        let video = merged.split("m=audio").next().unwrap();
        let audio = merged.split("m=audio").nth(1).unwrap();
        assert!(
            video.contains("a=candidate:2 1 UDP 2015363327 10.0.0.2 50002 typ host"),
            "{merged}"
        );
        assert!(
            audio.contains("a=candidate:1 1 UDP 2015363327 10.0.0.2 50000 typ host"),
            "{merged}"
        );
        assert!(!merged.contains("candidate:3"), "no m-line 7: {merged}");
        assert_eq!(with_candidates(answer, &[]), answer);
    }
}
