//! WHEP (draft-ietf-wish-whep): a viewer POSTs an SDP offer and gets the answer.
//!
//! - The answer carries all of our candidates (host candidates gather in milliseconds), and
//!   `Link` headers name the configured STUN/TURN servers (RFC 9725 §4.4).
//! - A viewer that trickles sends its candidates later in PATCH requests
//!   (`application/trickle-ice-sdpfrag`), answered `204`. The `201`'s `ETag` names the ICE
//!   session; a PATCH with another `If-Match` gets `412`.
//! - A viewer whose network changed restarts ICE (RFC 9725 §4.3.2): a PATCH with
//!   `If-Match: *` and its new `ice-ufrag`/`ice-pwd` is answered `200` with ours (new too) and
//!   our candidates, and a new `ETag`.

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::AppState;
use crate::webrtc::OfferError;

use onair_signal::ice_http::{IceFragment, MAX_FRAGMENT, TRICKLE_TYPE};
pub use onair_signal::whep::MAX_OFFER;
use onair_signal::whep::{plain, sdp_offer};

use crate::webrtc::{IceCredentials, Undelivered};

/// `POST /whep`: offer in, `201 Created` with `Location` and the answer out.
pub async fn create(
    State(state): State<AppState>,
    source: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match sdp_offer(&headers, &body) {
        Ok(offer) => offer,
        Err((status, why)) => return plain(status, why),
    };
    let source = source.map(|Extension(ConnectInfo(peer))| peer.ip());
    match state.sessions.offer(offer.to_owned(), source).await {
        Ok((id, answer)) => {
            let location = format!("/whep/{id}");
            let mut response = (StatusCode::CREATED, answer).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/sdp"),
            );
            if let Ok(value) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, value);
            }
            if let Some(value) = state
                .sessions
                .ice_tag(&id)
                .await
                .and_then(|tag| HeaderValue::from_str(&tag).ok())
            {
                h.insert(header::ETAG, value);
            }
            for link in state.ice_links.iter() {
                h.append(header::LINK, link.clone());
            }
            response
        }
        Err(err @ (OfferError::BadOffer(_) | OfferError::NoVideo(_))) => {
            plain(StatusCode::BAD_REQUEST, format!("{err}\n"))
        }
        Err(
            err @ (OfferError::Full
            | OfferError::Crowded(_)
            | OfferError::ShuttingDown
            | OfferError::NotReady
            | OfferError::NoPicture(_)),
        ) => {
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, format!("{err}\n"));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
        Err(err @ (OfferError::Internal(_) | OfferError::NoSession)) => {
            warn!("WHEP offer failed: {err}");
            plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"))
        }
    }
}

/// `DELETE /whep/{id}`: the viewer leaves.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if state.sessions.delete(&id) {
        StatusCode::OK.into_response()
    } else {
        plain(StatusCode::NOT_FOUND, "no such session\n")
    }
}

/// `PATCH /whep/{id}`: the viewer's trickled candidates (`If-Match` the session's `ETag`,
/// or none: `204`), or an ICE restart (`If-Match: *` and new credentials: `200` with ours,
/// and a new `ETag`).
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(tag) = state.sessions.ice_tag(&id).await else {
        return plain(StatusCode::NOT_FOUND, "no such session\n");
    };
    let fragment = match fragment(&headers, &body) {
        Ok(fragment) => fragment,
        Err((status, why)) => return plain(status, why),
    };
    let restart = match headers.get(header::IF_MATCH).map(HeaderValue::to_str) {
        Some(Ok("*")) => true,
        Some(Ok(asked)) if asked.trim() != tag => {
            return plain(
                StatusCode::PRECONDITION_FAILED,
                format!("If-Match {asked} is not this session's ICE session ({tag})\n"),
            );
        }
        Some(Err(_)) => return plain(StatusCode::BAD_REQUEST, "If-Match is not text\n"),
        _ => false,
    };
    let ours = if restart {
        match restart_ice(&state, &id, &fragment).await {
            Ok(ours) => Some(ours),
            Err((status, why)) => return plain(status, why),
        }
    } else {
        None
    };
    if let Some(response) = add_candidates(&state, &id, fragment.candidates) {
        return response;
    }
    match ours {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(ours) => {
            let mut response = (StatusCode::OK, ours).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TRICKLE_TYPE));
            if let Some(value) = state
                .sessions
                .ice_tag(&id)
                .await
                .and_then(|tag| HeaderValue::from_str(&tag).ok())
            {
                h.insert(header::ETAG, value);
            }
            response
        }
    }
}

/// The PATCH body as an ICE fragment, or the status and text saying what is wrong with it.
fn fragment(headers: &HeaderMap, body: &[u8]) -> Result<IceFragment, (StatusCode, String)> {
    let is_fragment = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(TRICKLE_TYPE));
    if !is_fragment {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("PATCH bodies must be sent as Content-Type: {TRICKLE_TYPE}\n"),
        ));
    }
    if body.len() > MAX_FRAGMENT {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("PATCH body larger than {MAX_FRAGMENT} bytes\n"),
        ));
    }
    std::str::from_utf8(body)
        .map_err(|_| "not UTF-8 text".to_owned())
        .and_then(IceFragment::parse)
        .map_err(|why| {
            (
                StatusCode::BAD_REQUEST,
                format!("bad ICE fragment: {why}\n"),
            )
        })
}

/// Restarts ICE with the fragment's credentials; our fragment, or the status and text
/// saying why not.
async fn restart_ice(
    state: &AppState,
    id: &str,
    fragment: &IceFragment,
) -> Result<String, (StatusCode, String)> {
    let (Some(ufrag), Some(pwd)) = (&fragment.ufrag, &fragment.pwd) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "an ICE restart (If-Match: *) needs a=ice-ufrag and a=ice-pwd\n".into(),
        ));
    };
    let credentials = IceCredentials {
        ufrag: ufrag.clone(),
        pwd: pwd.clone(),
    };
    state
        .sessions
        .restart_ice(id, credentials)
        .await
        .map_err(|err| match err {
            OfferError::NoSession => (StatusCode::NOT_FOUND, "no such session\n".into()),
            OfferError::BadOffer(_) => (StatusCode::BAD_REQUEST, format!("{err}\n")),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
        })
}

/// Hands the viewer's candidates to its session; the response if they could not all go.
fn add_candidates(state: &AppState, id: &str, candidates: Vec<(String, u16)>) -> Option<Response> {
    for (candidate, section) in candidates {
        match state.sessions.add_candidate(id, candidate, section) {
            Ok(()) => {}
            Err(Undelivered::NoSession) => {
                return Some(plain(StatusCode::NOT_FOUND, "no such session\n"));
            }
            Err(Undelivered::Full) => {
                let mut response = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many candidates waiting; send the rest again shortly\n",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Some(response);
            }
        }
    }
    None
}
