//! The device's HTTP surface: viewer page, WHEP, health and status.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `GET /viewer.js` | viewer page |
//! | `POST /whep`, `DELETE`/`PATCH /whep/{id}`, `OPTIONS` | WHEP (see [`whep`]) |
//! | `GET /healthz` | 200 while frames flow, 503 otherwise |
//! | `GET /api/status` | JSON: channel, viewers, fps, bitrate, uptime, signaling |
//!
//! With no `signaling.url`, onair-signal's routes (`/ws`, `/api/channels`) are mounted here
//! too (see [`crate::run`]).

pub mod status;
pub mod whep;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
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
/// them (WHEP §4.2); the page itself is same-origin.
pub fn router(state: AppState) -> Router {
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
        .route("/", get(index))
        .route("/viewer.js", get(viewer_js))
        .route(
            "/whep",
            post(whep::create).layer(DefaultBodyLimit::max(whep::MAX_OFFER)),
        )
        .route(
            "/whep/{id}",
            axum::routing::delete(whep::delete).patch(whep::patch),
        )
        .route("/healthz", get(status::healthz))
        .route("/api/status", get(status::status))
        .layer(cors)
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("viewer/index.html"))
}

async fn viewer_js() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        include_str!("viewer/viewer.js"),
    )
}
