//! WHEP (draft-ietf-wish-whep): a viewer POSTs an SDP offer and gets the answer.
//!
//! The answer carries all of our candidates (host candidates gather in milliseconds), so
//! the server needs no trickle; PATCH is therefore answered 405 for now.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::warn;

use super::AppState;
use crate::webrtc::OfferError;

pub use onair_signal::whep::MAX_OFFER;
use onair_signal::whep::{plain, sdp_offer};

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

/// `PATCH /whep/{id}`: trickle ICE and ICE restarts are not supported yet.
pub async fn patch(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if !state.sessions.contains(&id) {
        return plain(StatusCode::NOT_FOUND, "no such session\n");
    }
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported; send all candidates in the offer\n",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("DELETE"));
    response
}
