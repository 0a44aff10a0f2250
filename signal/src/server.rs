//! HTTP and WebSocket in front of the [`Service`]: `GET /ws` (the signalling protocol) and
//! `GET /api/channels`.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use gst_plugin_webrtc_signalling_protocol::OutgoingMessage;
use serde::Deserialize;
use tracing::{debug, info};

use crate::service::{Connection, Service};

/// A quiet connection is pinged this often.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A connection that sends nothing (not even a pong) for this long is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// Frames beyond this size end the connection (the WebSocket layer refuses them); frames
/// above `limits.max_message_bytes` but below this are answered with an `error`.
const HARD_FRAME_LIMIT: usize = 4 << 20;

/// The routes of the service, to serve alone or merge into onaird's router.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/ws", get(websocket))
        .route("/api/channels", get(channels))
        .with_state(service)
}

/// `?token=` on any route.
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The token a request presents: `Authorization: Bearer …`, else `?token=…`.
pub fn token(headers: &HeaderMap, query: &TokenQuery) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| query.token.clone())
        .filter(|t| !t.is_empty())
}

async fn channels(State(service): State<Service>) -> Response {
    Json(service.channels()).into_response()
}

async fn websocket(
    State(service): State<Service>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = token(&headers, &query);
    upgrade
        .max_message_size(HARD_FRAME_LIMIT)
        .max_frame_size(HARD_FRAME_LIMIT)
        .on_upgrade(move |socket| serve(socket, service.connect(token)))
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
