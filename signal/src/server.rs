//! HTTP and WebSocket in front of the [`Service`]: `GET /ws` (the signalling protocol),
//! `GET /api/channels`, the viewer page `GET /c/{channel}`, the browser SDK `GET /onair.js`
//! and the WHEP gateway (`POST /whep/{channel}`,
//! `DELETE /whep/{channel}/{session}`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Query, State};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use axum::routing::{MethodRouter, delete, post};
use gst_plugin_webrtc_signalling_protocol::OutgoingMessage;
use onair_config::IceServer;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tower_http::cors::{Any, CorsLayer};
use tracing::{debug, info, warn};

use crate::service::{Connection, Service};
use crate::whep::{self, Gateway};

/// A quiet connection is pinged this often.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A connection that sends nothing (not even a pong) for this long is dead. Checked at each
/// ping, so a dead peer is dropped 20–25 s after it fell silent: that frees the channel of a
/// camera that lost power or its network, for its next connection (see the hub).
const SILENCE_LIMIT: Duration = Duration::from_secs(20);
/// Frames beyond this size end the connection (the WebSocket layer refuses them); frames
/// above `limits.max_message_bytes` but below this are answered with an `error`.
const HARD_FRAME_LIMIT: usize = 4 << 20;

/// The routes of the service, to serve alone or merge into onaird's router (which has a
/// `/whep/{id}` route of its own, so it mounts [`whep_create`] itself). At most
/// `max_websockets` WebSocket connections at once; more are answered `503`.
pub fn router(service: Service, max_websockets: usize) -> Router {
    let slots = WebSocketSlots(Arc::new(Semaphore::new(max_websockets)));
    Router::new()
        .route("/ws", get(websocket).layer(Extension(slots)))
        .route("/api/channels", get(channels))
        .route("/c/{channel}", get(viewer_page))
        .route("/onair.js", get(sdk))
        .with_state(service)
}

/// The viewer page: joins the channel in its path (or, served at onaird's `/`, the camera's
/// own channel) with onair.js.
pub const VIEWER_PAGE: &str = include_str!("web/viewer.html");
/// The browser SDK.
pub const ONAIR_JS: &str = include_str!("web/onair.js");

/// `GET /c/{channel}` (and onaird's `GET /`).
pub async fn viewer_page() -> Html<&'static str> {
    Html(VIEWER_PAGE)
}

async fn sdk() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        ONAIR_JS,
    )
        .into_response()
}

/// The WHEP gateway's routes, with CORS open for players served from elsewhere.
pub fn whep_router(gateway: Gateway) -> Router {
    Router::new()
        .route("/whep/{channel}", whep_create(gateway.clone()))
        .route(
            "/whep/{channel}/{session}",
            delete(whep::delete).with_state(gateway),
        )
        .layer(cors())
}

/// `POST /whep/{channel}`, for routers that add other methods on the same path.
pub fn whep_create<S: Clone + Send + Sync + 'static>(gateway: Gateway) -> MethodRouter<S> {
    post(whep::create)
        .layer(DefaultBodyLimit::max(whep::MAX_OFFER))
        .with_state(gateway)
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .expose_headers([header::LOCATION])
}

/// `?token=` on any route.
#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The token a request presents: `Authorization: Bearer …` (the scheme in any case, RFC 9110
/// §11.1), else `?token=…`.
pub fn token(headers: &HeaderMap, query: &TokenQuery) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .map(str::to_owned)
        .or_else(|| query.token.clone())
        .filter(|t| !t.is_empty())
}

/// The credentials of an `Authorization` value of the Bearer scheme.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// `GET /api/channels`: what is live (needs a viewer token when `auth.viewer_tokens` is set).
async fn channels(
    State(service): State<Service>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if !service.may_watch(token(&headers, &query).as_deref()) {
        return unauthorized();
    }
    Json(service.channels()).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid viewer token is needed (Authorization: Bearer, or ?token=)\n",
    )
        .into_response()
}

/// `GET /api/ice-servers` of onair-signal serving alone (onaird answers it with its own
/// `webrtc.ice_servers`): the `[[ice_servers]]` that onair.js hands to the browser.
pub fn ice_servers_router(service: Service, servers: Vec<IceServer>) -> Router {
    Router::new()
        .route("/api/ice-servers", get(ice_servers))
        .with_state((service, Arc::<[IceServer]>::from(servers)))
}

/// The configured STUN/TURN servers as `RTCIceServer`s (viewer token as `/api/channels`).
async fn ice_servers(
    State((service, servers)): State<(Service, Arc<[IceServer]>)>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Response {
    if !service.may_watch(token(&headers, &query).as_deref()) {
        return unauthorized();
    }
    Json(servers.to_vec()).into_response()
}

/// WebSocket connections that may still open.
#[derive(Clone)]
struct WebSocketSlots(Arc<Semaphore>);

async fn websocket(
    State(service): State<Service>,
    Extension(WebSocketSlots(slots)): Extension<WebSocketSlots>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(slot) = slots.try_acquire_owned() else {
        warn!("refusing a WebSocket connection: all slots are taken");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            "too many WebSocket connections; try again later\n",
        )
            .into_response();
    };
    let token = token(&headers, &query);
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| async move {
            serve(socket, service.connect(token)).await;
            drop(slot);
        })
}

/// Pumps one WebSocket: text frames in as messages, queued messages out, pings while quiet.
async fn serve(mut socket: WebSocket, mut conn: Connection) {
    let id = conn.id().to_owned();
    debug!(peer = %id, "connected");
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let why = loop {
        tokio::select! {
            outgoing = conn.recv() => {
                let Some(message) = outgoing else { break "disconnected by the service" };
                if send(&mut socket, &message).await.is_err() {
                    break "send failed";
                }
            }
            incoming = socket.recv() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => conn.send_text(text.as_str()),
                    Some(Ok(Message::Binary(_))) => {
                        conn.reply_error("binary frames are not part of the protocol; send JSON text".into());
                    }
                    Some(Ok(Message::Close(_))) | None => break "closed by the peer",
                    Some(Ok(_)) => {}
                    Some(Err(_)) => break "receive failed",
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    break "silent for too long";
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break "send failed";
                }
            }
        }
    };
    let _ = socket.send(Message::Close(None)).await;
    info!(peer = %id, "connection ended: {why}");
}

async fn send(socket: &mut WebSocket, message: &OutgoingMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(authorization: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        token(&headers, &TokenQuery::default())
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR  abc "] {
            assert_eq!(presented(value).as_deref(), Some("abc"), "{value}");
        }
        for value in ["Basic abc", "Bearerabc", "Bearer", "Bearer   ", "abc"] {
            assert_eq!(presented(value), None, "{value}");
        }
    }

    #[test]
    fn the_query_token_counts_without_a_header() {
        let query = TokenQuery {
            token: Some("q".into()),
        };
        assert_eq!(token(&HeaderMap::new(), &query).as_deref(), Some("q"));
    }
}
