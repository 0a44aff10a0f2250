//! The device's HTTP surface: viewer page, WHEP, health and status.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | viewer page (onair-signal's, joining this camera's channel with onair.js) |
//! | `POST /whep`, `DELETE`/`PATCH /whep/{id}`, `OPTIONS` | WHEP (see [`whep`]) |
//! | `GET /healthz` | 200 while frames flow, 503 otherwise |
//! | `GET /api/status` | JSON: channel, viewers, fps, bitrate, uptime, signaling |
//! | `GET /api/ice-servers` | JSON: `webrtc.ice_servers` as `RTCIceServer`s, for the viewer page |
//! | `GET`/`PUT /api/privacy` | privacy, `{"on": …}`; switching needs the operator token ([`privacy`]) |
//! | `GET /metrics` | Prometheus text format: viewers, sessions, frames, key frames, traffic ([`metrics`]) |
//!
//! With `[access]` tokens, all but `/healthz` and `/onair.js` need one ([`access`]). Every
//! request must name the device in its `Host`, and a browser's from another site's page
//! needs a token ([`sites`]).
//!
//! onair-signal's routes are mounted here too (see [`crate::run`]): `/ws`, `/api/channels`,
//! `/c/{channel}`, `/onair.js` and the WHEP gateway.

pub mod access;
pub mod metrics;
pub mod privacy;
pub mod recordings;
pub mod sites;
pub mod snapshot;
pub mod status;
pub mod whep;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{MethodRouter, get, post};
use axum::{Router, middleware};
use onair_config::IceServer;
use tower_http::cors::{AllowOrigin, CorsLayer};

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
    /// Whether the daemon is connected to that service now (registered or not).
    pub signaling_connected: Arc<AtomicBool>,
    /// `Link` headers naming `webrtc.ice_servers`, for WHEP answers.
    pub ice_links: Arc<[HeaderValue]>,
    /// `webrtc.ice_servers`, for pages joining over signalling (`/api/ice-servers`).
    pub ice_servers: Arc<[IceServer]>,
    /// Where recordings are, while `record.enabled`.
    pub recordings: Option<Arc<std::path::Path>>,
    /// The publication to a media server, with a `whip.url`.
    pub publisher: Option<Arc<crate::whip::Publisher>>,
}

/// All routes: the direct ones, the built-in signalling service's (`service`), and its WHEP
/// gateway (`POST /whep/{channel}`, `DELETE /whep/{channel}/{session}`, beside the direct
/// `POST /whep`); every route but `/healthz` and `/onair.js` needs a viewer's token when one
/// is configured ([`access`]).
///
/// CORS: with a viewer token, WHEP players and pages of any origin may use the routes (the
/// token guards them, WHEP §4.2); without one only `http.cors_origins` may, so a page from
/// elsewhere opened on the camera's network cannot pull the stream to itself.
pub fn router(
    state: AppState,
    service: onair_signal::Service,
    tokens: Arc<access::Tokens>,
    http: &onair_config::Http,
) -> Router {
    let gateway = onair_signal::whep::Gateway::new(service.clone());
    let cors = cors(&tokens, &http.cors_origins);
    let gate = Arc::new(access::Gate {
        tokens,
        sites: sites::Sites::of_this_machine(&http.hostnames, &http.cors_origins),
    });
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
        .route("/api/ice-servers", get(status::ice_servers))
        .route("/api/privacy", get(privacy::get).put(privacy::put))
        .route("/metrics", get(metrics::metrics))
        .route("/snapshot.jpg", get(snapshot::snapshot))
        .route("/api/recordings", get(recordings::list))
        .route(
            "/recordings/{name}",
            get(recordings::get).delete(recordings::delete),
        )
        .with_state(state)
        .merge(onair_signal::server::router(service, MAX_WEBSOCKETS))
        .layer(middleware::from_fn_with_state(gate, access::viewers_only))
        .layer(cors)
}

/// WebSocket connections at once: a viewer page keeps one open, and more viewers than
/// [`crate::webrtc::MAX_SESSIONS`] cannot watch anyway.
const MAX_WEBSOCKETS: usize = 2 * crate::webrtc::MAX_SESSIONS;

fn cors(tokens: &access::Tokens, origins: &[String]) -> CorsLayer {
    let origin = if tokens.protected() {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
            Method::PUT,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK])
}

/// `/whep/{id}`: DELETE and PATCH of a direct WHEP session, POST to a channel through the
/// gateway.
fn session_routes(gateway: onair_signal::whep::Gateway) -> MethodRouter<AppState> {
    onair_signal::server::whep_create(gateway)
        .delete(whep::delete)
        .patch(whep::patch)
}
