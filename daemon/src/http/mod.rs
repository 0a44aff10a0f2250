//! The device's HTTP surface: viewer page, WHEP, health and status.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | viewer page (onair-signal's, joining this camera's channel with onair.js) |
//! | `POST /whep`, `DELETE`/`PATCH /whep/{id}`, `OPTIONS` | WHEP (see [`whep`]) |
//! | `GET /healthz` | 200 while frames flow, 503 otherwise |
//! | `GET /api/status` | JSON: channel, viewers, fps, bitrate, uptime, signaling |
//!
//! onair-signal's routes are mounted here too (see [`crate::run`]): `/ws`, `/api/channels`,
//! `/c/{channel}`, `/onair.js` and the WHEP gateway.

pub mod status;
pub mod whep;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, header};
use axum::routing::{MethodRouter, get, post};
use tower_http::cors::{Any, CorsLayer};

use crate::media::MediaHandle;
use crate::webrtc::Sessions;

/// What every handler may need.
#[derive(Clone)]
pub struct AppState {
    /// The viewers' sessions.
    pub sessions: Sessions,
    /// The encoded media, for status and health.
    pub media: MediaHandle,
    /// `device.channel`.
    pub channel: String,
    /// `device.name`.
    pub name: String,
    /// When the daemon started, for uptime.
    pub started: Instant,
    /// The signalling service the channel is registered with, for status.
    pub signaling: String,
    /// Whether the channel is registered there now.
    pub registered: Arc<AtomicBool>,
}

/// All routes. WHEP players are often served from another origin, so CORS is open for
/// them (WHEP §4.2); the page itself is same-origin. `gateway` (the built-in service's WHEP
/// gateway: `POST /whep/{channel}`, `DELETE /whep/{channel}/{session}`) sits beside the direct
/// `POST /whep`.
pub fn router(state: AppState, gateway: onair_signal::whep::Gateway) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK]);
    Router::new()
        .route("/", get(onair_signal::server::viewer_page))
        .route(
            "/whep",
            post(whep::create).layer(DefaultBodyLimit::max(whep::MAX_OFFER)),
        )
        .route("/whep/{id}", session_routes(gateway.clone()))
        .route(
            "/whep/{channel}/{session}",
            axum::routing::delete(onair_signal::whep::delete).with_state(gateway),
        )
        .route("/healthz", get(status::healthz))
        .route("/api/status", get(status::status))
        .layer(cors)
        .with_state(state)
}

/// `/whep/{id}`: DELETE and PATCH of a direct WHEP session, POST to a channel through the
/// gateway.
fn session_routes(gateway: onair_signal::whep::Gateway) -> MethodRouter<AppState> {
    onair_signal::server::whep_create(gateway)
        .delete(whep::delete)
        .patch(whep::patch)
}
