//! WHEP (draft-ietf-wish-whep): a viewer POSTs an SDP offer and gets the answer.
//!
//! - The answer carries all of our candidates (host candidates gather in milliseconds), and
//!   `Link` headers name the configured STUN/TURN servers (RFC 9725 §4.4).
//! - A viewer that trickles sends its candidates later in PATCH requests
//!   (`application/trickle-ice-sdpfrag`), answered `204`. The `201`'s `ETag` names the ICE
//!   session; a PATCH with another `If-Match` gets `412`. ICE restarts (`If-Match: *`) are
//!   not supported: `422`, as RFC 9725 §4.3 asks of a session that trickles but does not
//!   restart.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::AppState;
use crate::webrtc::OfferError;

use onair_signal::ice_http::{IceFragment, MAX_FRAGMENT, TRICKLE_TYPE};
pub use onair_signal::whep::MAX_OFFER;
use onair_signal::whep::{plain, sdp_offer};

use crate::webrtc::Undelivered;

/// `POST /whep`: offer in, `201 Created` with `Location` and the answer out.
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let offer = match sdp_offer(&headers, &body) {
        Ok(offer) => offer,
        Err((status, why)) => return plain(status, why),
    };
    match state.sessions.offer(offer.to_owned()).await {
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
            if let Ok(value) = HeaderValue::from_str(&etag(&id)) {
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
        Err(err @ (OfferError::Full | OfferError::ShuttingDown | OfferError::NotReady)) => {
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

/// The entity tag of session `id`'s ICE session (it never changes: no ICE restarts).
fn etag(id: &str) -> String {
    format!("\"{id}\"")
}

/// `PATCH /whep/{id}`: the viewer's trickled candidates.
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.sessions.contains(&id) {
        return plain(StatusCode::NOT_FOUND, "no such session\n");
    }
    let is_fragment = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(TRICKLE_TYPE));
    if !is_fragment {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("PATCH bodies must be sent as Content-Type: {TRICKLE_TYPE}\n"),
        );
    }
    match headers.get(header::IF_MATCH).map(HeaderValue::to_str) {
        Some(Ok("*")) => {
            return plain(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ICE restarts are not supported; POST a new offer instead\n",
            );
        }
        Some(Ok(tag)) if tag.trim() != etag(&id) => {
            return plain(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "If-Match {tag} is not this session's ICE session ({})\n",
                    etag(&id)
                ),
            );
        }
        Some(Err(_)) => return plain(StatusCode::BAD_REQUEST, "If-Match is not text\n"),
        _ => {}
    }
    if body.len() > MAX_FRAGMENT {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("PATCH body larger than {MAX_FRAGMENT} bytes\n"),
        );
    }
    let fragment = match std::str::from_utf8(&body).map_err(|_| "not UTF-8 text".to_owned()) {
        Ok(text) => IceFragment::parse(text),
        Err(why) => Err(why),
    };
    let fragment = match fragment {
        Ok(fragment) => fragment,
        Err(why) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("bad ICE fragment: {why}\n"),
            );
        }
    };
    for (candidate, section) in fragment.candidates {
        match state.sessions.add_candidate(&id, candidate, section) {
            Ok(()) => {}
            Err(Undelivered::NoSession) => {
                return plain(StatusCode::NOT_FOUND, "no such session\n");
            }
            Err(Undelivered::Full) => {
                let mut response = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many candidates waiting; send the rest again shortly\n",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}
