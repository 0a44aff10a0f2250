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

use crate::auth::Admission;
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
/// How long one write may take: a peer that does not read (its TCP window stays shut) is
/// disconnected after this, however busy it keeps its side, and its memory freed.
const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// Messages a peer that publishes no channel may send at once ([`Budget`]).
const BURST: f64 = 200.0;
/// ... and a second, on average.
const PER_SECOND: f64 = 50.0;
/// Connections that may be cameras ([`Admission::Device`]) at once, beside `max_websockets`.
const DEVICE_SLOTS: usize = 64;
/// How long one of them has to publish its channel.
const REGISTER_WITHIN: Duration = Duration::from_secs(10);

/// The routes of the service, to serve alone or merge into onaird's router (which has a
/// `/whep/{id}` route of its own, so it mounts [`whep_create`] itself). At most
/// `max_websockets` WebSocket connections at once; more are answered `503`.
pub fn router(service: Service, max_websockets: usize) -> Router {
    let slots = WebSocketSlots {
        others: Arc::new(Semaphore::new(max_websockets)),
        devices: Arc::new(Semaphore::new(DEVICE_SLOTS)),
    };
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

/// WebSocket connections that may still open: those that may be cameras apart from the
/// others, so that strangers never keep cameras out (see [`Admission`]).
#[derive(Clone)]
struct WebSocketSlots {
    others: Arc<Semaphore>,
    devices: Arc<Semaphore>,
}

async fn websocket(
    State(service): State<Service>,
    Extension(slots): Extension<WebSocketSlots>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = token(&headers, &query);
    let (slots, register_by) = match service.admission(token.as_deref()) {
        Admission::Refused => return unauthorized(),
        Admission::Device => (slots.devices, Some(Instant::now() + REGISTER_WITHIN)),
        Admission::Other => (slots.others, None),
    };
    let Ok(slot) = slots.try_acquire_owned() else {
        warn!("refusing a WebSocket connection: all slots are taken");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            "too many WebSocket connections; try again later\n",
        )
            .into_response();
    };
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| async move {
            serve(socket, service.connect(token), register_by).await;
            drop(slot);
        })
}

/// What a peer may still send: [`BURST`] messages, refilled at [`PER_SECOND`] (a token
/// bucket). Time is an input.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: f64,
    at: Instant,
}

impl Budget {
    fn new(now: Instant) -> Self {
        Budget {
            left: BURST,
            at: now,
        }
    }

    /// Takes one message's worth; `false` if there is none left.
    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * PER_SECOND;
        self.left = (self.left + refill).min(BURST);
        self.at = now;
        if self.left < 1.0 {
            return false;
        }
        self.left -= 1.0;
        true
    }
}

/// Pumps one WebSocket: text frames in as messages, queued messages out, pings while quiet.
/// A peer that publishes no channel and sends over its [`Budget`] is disconnected, one that
/// was admitted as a camera and has not published by `register_by` too, and so is one that
/// does not take a write within [`WRITE_LIMIT`].
async fn serve(mut socket: WebSocket, mut conn: Connection, register_by: Option<Instant>) {
    let id = conn.id().to_owned();
    debug!(peer = %id, "connected");
    let mut last_heard = Instant::now();
    let mut budget = Budget::new(last_heard);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let registered = sleep_until(register_by);
    tokio::pin!(registered);
    // Checked once: a finished future must not be polled again.
    let mut awaiting_registration = register_by.is_some();
    let why = loop {
        tokio::select! {
            outgoing = conn.recv() => {
                let Some(message) = outgoing else { break "disconnected by the service" };
                if let Err(why) = send(&mut socket, &message).await {
                    break why;
                }
            }
            incoming = socket.recv() => {
                last_heard = Instant::now();
                let flooding = matches!(incoming, Some(Ok(Message::Text(_) | Message::Binary(_))))
                    && !budget.take(last_heard)
                    && !conn.publishes();
                if flooding {
                    let details = format!(
                        "over {BURST} messages at once or {PER_SECOND} a second: disconnected"
                    );
                    let _ = send(&mut socket, &OutgoingMessage::Error { details }).await;
                    break "sent too many messages";
                }
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
                if let Err(why) = write(&mut socket, Message::Ping(Default::default())).await {
                    break why;
                }
            }
            () = &mut registered, if awaiting_registration => {
                awaiting_registration = false;
                if !conn.publishes() {
                    break "presented a camera's token but published no channel in time";
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
    // A camera's connection ending is news; a viewer's at info level would let strangers
    // write the log as fast as they connect.
    match conn.publishes() {
        true => info!(peer = %id, "camera connection ended: {why}"),
        false => debug!(peer = %id, "connection ended: {why}"),
    }
}

/// Completes at `at`, never without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn send(socket: &mut WebSocket, message: &OutgoingMessage) -> Result<(), &'static str> {
    let text = serde_json::to_string(message).unwrap_or_default();
    write(socket, Message::Text(text.into())).await
}

/// Sends one frame, within [`WRITE_LIMIT`].
async fn write(socket: &mut WebSocket, frame: Message) -> Result<(), &'static str> {
    match tokio::time::timeout(WRITE_LIMIT, socket.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("send failed"),
        Err(_) => Err("does not read: a write waited too long"),
    }
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
    fn a_budget_allows_a_burst_then_its_rate() {
        let t = Instant::now();
        let mut budget = Budget::new(t);
        let burst = (0..1000).take_while(|_| budget.take(t)).count();
        assert_eq!(burst as f64, BURST);
        assert!(!budget.take(t));
        // A second later, a second's worth; never more than the burst, however long it waited.
        let later = t + Duration::from_secs(1);
        let refilled = (0..1000).take_while(|_| budget.take(later)).count();
        assert_eq!(refilled as f64, PER_SECOND);
        let much_later = later + Duration::from_secs(3600);
        let again = (0..1000).take_while(|_| budget.take(much_later)).count();
        assert_eq!(again as f64, BURST);
    }

    #[test]
    fn the_query_token_counts_without_a_header() {
        let query = TokenQuery {
            token: Some("q".into()),
        };
        assert_eq!(token(&HeaderMap::new(), &query).as_deref(), Some("q"));
    }
}
