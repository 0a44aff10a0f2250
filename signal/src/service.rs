//! The hub behind a lock, with a queue per connected peer: what every transport (WebSocket,
//! onaird's in-process producer, the WHEP gateway) talks to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use gst_plugin_webrtc_signalling_protocol::{IncomingMessage, OutgoingMessage};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::auth::{Admission, Policy};
use crate::hub::{ChannelInfo, Effects, Hub, PeerId};
use crate::webhooks::Webhooks;

/// Messages a peer may have waiting before it counts as stuck and is disconnected (the
/// policy for a peer that does not read: disconnect, so it holds no memory and no slot).
/// When what fills a camera's queue comes from one of its viewers, the viewer is the one
/// disconnected: a viewer can never knock a camera off its channel.
const QUEUE: usize = 256;
/// Places in a camera's queue its viewers' messages never take (see [`Service::apply_from`]).
const CAMERA_RESERVE: usize = 64;

/// A running signalling service. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Mutex<Hub>,
    queues: Mutex<HashMap<PeerId, mpsc::Sender<OutgoingMessage>>>,
    max_message_bytes: usize,
    /// Where events go besides the log.
    webhooks: Option<Webhooks>,
}

/// One peer's connection to the service. Dropping it disconnects the peer.
pub struct Connection {
    id: PeerId,
    service: Service,
    rx: mpsc::Receiver<OutgoingMessage>,
}

impl Service {
    /// A service with `policy`, limits, and (optionally) webhooks to tell about events.
    pub fn new(
        policy: Policy,
        max_sessions_per_channel: usize,
        max_message_bytes: usize,
        webhooks: Option<Webhooks>,
    ) -> Self {
        Service {
            inner: Arc::new(Inner {
                hub: Mutex::new(Hub::new(policy, max_sessions_per_channel)),
                queues: Mutex::new(HashMap::new()),
                max_message_bytes,
                webhooks,
            }),
        }
    }

    /// Largest message [`Connection::send_text`] accepts.
    pub fn max_message_bytes(&self) -> usize {
        self.inner.max_message_bytes
    }

    /// Connects a new peer that presented `token`; it receives its `welcome` first.
    pub fn connect(&self, token: Option<String>) -> Connection {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = mpsc::channel(QUEUE);
        lock(&self.inner.queues).insert(id.clone(), tx);
        let effects = lock(&self.inner.hub).connect(&id, token);
        self.apply(effects);
        Connection {
            id,
            service: self.clone(),
            rx,
        }
    }

    /// The live channels.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        lock(&self.inner.hub).channels()
    }

    /// Whether the bearer of `token` may list and join channels.
    pub fn may_watch(&self, token: Option<&str>) -> bool {
        lock(&self.inner.hub).may_watch(token)
    }

    /// The producer peer of a live channel.
    pub fn producer_of(&self, channel: &str) -> Option<PeerId> {
        lock(&self.inner.hub)
            .producer_of(channel)
            .map(str::to_owned)
    }

    /// Whether the bearer of `token` may connect, and to which room (see [`Admission`]).
    pub fn admission(&self, token: Option<&str>) -> Admission {
        lock(&self.inner.hub).admission(token)
    }

    /// Whether peer `id` publishes a channel.
    pub fn publishes(&self, id: &str) -> bool {
        lock(&self.inner.hub).publishes(id)
    }

    fn handle(&self, from: &str, message: IncomingMessage) {
        let effects = lock(&self.inner.hub).handle(from, message);
        self.apply_from(Some(from), effects);
    }

    fn disconnect(&self, id: &str) {
        lock(&self.inner.queues).remove(id);
        let effects = lock(&self.inner.hub).disconnect(id);
        self.apply(effects);
    }

    /// Queues the messages, logs and forwards the events, and disconnects whom the hub (or
    /// a full queue) says to.
    fn apply(&self, effects: Effects) {
        self.apply_from(None, effects);
    }

    /// [`Self::apply`] for effects of a message from peer `from`: what it sends a camera
    /// goes into the camera's queue only while [`CAMERA_RESERVE`] places stay free there
    /// (for the service's own messages: sessions starting and ending); one that finds no more
    /// room disconnects `from`, not the camera.
    fn apply_from(&self, from: Option<&str>, effects: Effects) {
        let Effects {
            messages,
            events,
            close,
        } = effects;
        let to_camera: Vec<bool> = messages
            .iter()
            .map(|(to, _)| from.is_some_and(|from| from != to) && self.publishes(to))
            .collect();
        let mut stuck = Vec::new();
        {
            let queues = lock(&self.inner.queues);
            for ((to, message), to_camera) in messages.into_iter().zip(to_camera) {
                let Some(queue) = queues.get(&to) else {
                    continue;
                };
                if let (true, Some(from)) = (to_camera, from)
                    && queue.capacity() <= CAMERA_RESERVE
                {
                    warn!(peer = %from, camera = %to, "the camera's queue is full of this peer's messages: disconnecting the peer");
                    stuck.push(from.to_owned());
                    break;
                }
                if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(message) {
                    warn!(peer = %to, "{QUEUE} messages waiting: disconnecting a stuck peer");
                    stuck.push(to);
                }
            }
        }
        for event in events {
            info!(?event, "signal");
            if let Some(webhooks) = &self.inner.webhooks {
                webhooks.publish(&event);
            }
        }
        // Their queues close: the transport sends what is queued, then hangs up.
        for id in close.into_iter().chain(stuck) {
            lock(&self.inner.queues).remove(&id);
            let effects = lock(&self.inner.hub).disconnect(&id);
            self.apply(effects);
        }
    }
}

impl Connection {
    /// The peer id the service gave this connection.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether this peer publishes a channel.
    pub fn publishes(&self) -> bool {
        self.service.publishes(&self.id)
    }

    /// Sends a message to the service.
    pub fn send(&self, message: IncomingMessage) {
        self.service.handle(&self.id, message);
    }

    /// Sends a message as its JSON text. Text that is too long or not a message of the
    /// protocol is answered with an `error` message; nothing else happens.
    pub fn send_text(&self, text: &str) {
        let max = self.service.max_message_bytes();
        let problem = if text.len() > max {
            format!(
                "message of {} bytes is larger than the limit of {max} bytes",
                text.len()
            )
        } else {
            match serde_json::from_str::<IncomingMessage>(text) {
                Ok(IncomingMessage::NewPeer) => "newPeer is not a message peers send".into(),
                Ok(message) => return self.send(message),
                Err(err) => malformed(&err),
            }
        };
        self.reply_error(problem);
    }

    /// Sends an `error` message to this peer only; dropped if its queue is full (the next
    /// message the service queues for it then disconnects it).
    pub fn reply_error(&self, details: String) {
        let queues = lock(&self.service.inner.queues);
        if let Some(queue) = queues.get(&self.id) {
            let _ = queue.try_send(OutgoingMessage::Error { details });
        }
    }

    /// The next message for this peer; `None` once the service has disconnected it.
    pub async fn recv(&mut self) -> Option<OutgoingMessage> {
        self.rx.recv().await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.service.disconnect(&self.id);
    }
}

/// What is wrong with a message that does not parse, without quoting it (serde's messages
/// quote the values they did not expect: a reply never echoes the input).
fn malformed(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => "not JSON",
        Category::Data => {
            "not a message of the signalling protocol (a `type` it has, with its fields)"
        }
    };
    format!(
        "malformed message: {what} (line {}, column {})",
        err.line(),
        err.column()
    )
}

/// The lock's data even if a panic poisoned it: the hub's state stays consistent message by
/// message, and a signalling service must not stop over one bad request.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        Service::new(Policy::open(), 100, 1024, None)
    }

    async fn welcome(conn: &mut Connection) {
        assert!(matches!(
            conn.recv().await,
            Some(OutgoingMessage::Welcome { peer_id }) if peer_id == conn.id()
        ));
    }

    async fn error(conn: &mut Connection) -> String {
        match conn.recv().await {
            Some(OutgoingMessage::Error { details }) => details,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_and_oversized_messages_get_an_error_and_the_peer_stays() {
        let service = service();
        let mut conn = service.connect(None);
        welcome(&mut conn).await;
        conn.send_text("{not json");
        assert!(
            error(&mut conn)
                .await
                .starts_with("malformed message: not JSON")
        );
        conn.send_text(r#"{"type":"dance"}"#);
        let details = error(&mut conn).await;
        assert!(
            details.contains("not a message of the signalling"),
            "{details}"
        );
        // Nothing of what was sent comes back.
        let long = format!(r#"{{"type":"peer","sessionId":"{}"}}"#, "x".repeat(900));
        conn.send_text(&long);
        let details = error(&mut conn).await;
        assert!(
            details.len() < 200 && !details.contains("xxxx"),
            "{details}"
        );
        let unknown = format!(
            r#"{{"type":"endSession","sessionId":"{}"}}"#,
            "y".repeat(900)
        );
        conn.send_text(&unknown);
        let details = error(&mut conn).await;
        assert!(details.len() < 200, "{details}");
        conn.send_text(&format!(r#"{{"type":"list","x":"{}"}}"#, "a".repeat(2000)));
        assert!(
            error(&mut conn)
                .await
                .contains("larger than the limit of 1024 bytes")
        );
        conn.send_text(r#"{"type":"list"}"#);
        assert!(matches!(
            conn.recv().await,
            Some(OutgoingMessage::List { producers }) if producers.is_empty()
        ));
    }

    #[tokio::test]
    async fn a_viewer_that_fills_its_cameras_queue_is_cut_off_not_the_camera() {
        let service = service();
        let mut camera = service.connect(None);
        welcome(&mut camera).await;
        camera.send_text(
            r#"{"type":"setPeerStatus","roles":["producer"],"meta":{"channel":"porch"}}"#,
        );
        let mut viewer = service.connect(None);
        welcome(&mut viewer).await;
        viewer.send_text(&format!(
            r#"{{"type":"startSession","peerId":"{}"}}"#,
            camera.id()
        ));
        let session = match viewer.recv().await {
            Some(OutgoingMessage::SessionStarted { session_id, .. }) => session_id,
            other => panic!("{other:?}"),
        };
        // The camera is busy and reads nothing meanwhile; the viewer floods it.
        let candidate = format!(
            r#"{{"type":"peer","sessionId":"{session}","ice":{{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMLineIndex":0}}}}"#
        );
        for _ in 0..2 * QUEUE {
            viewer.send_text(&candidate);
        }
        assert_eq!(service.producer_of("porch").as_deref(), Some(camera.id()));
        while viewer.recv().await.is_some() {}
        // The camera reads what was queued and is still the channel's, its viewer gone.
        let mut seen = 0;
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), camera.recv()).await
        {
            seen += 1;
        }
        assert!(seen > QUEUE - CAMERA_RESERVE, "{seen}");
        assert_eq!(service.producer_of("porch").as_deref(), Some(camera.id()));
        assert_eq!(service.channels()[0].viewers, 0);
    }

    #[tokio::test]
    async fn a_producer_replaced_by_its_device_token_is_disconnected() {
        let config = onair_config::SignalConfig::from_toml_str(
            "[[channels]]\nname = \"porch\"\ntoken = \"porch-token-0123456\"\n",
            "t",
        )
        .unwrap();
        let service = Service::new(Policy::new(&config), 100, 1024, None);
        let register =
            r#"{"type":"setPeerStatus","roles":["producer"],"meta":{"channel":"porch"}}"#;
        let mut old = service.connect(Some("porch-token-0123456".into()));
        welcome(&mut old).await;
        old.send_text(register);
        // Without the token, the same registration is refused and changes nothing.
        let mut intruder = service.connect(None);
        welcome(&mut intruder).await;
        intruder.send_text(register);
        assert!(error(&mut intruder).await.contains("device token"));
        assert_eq!(service.producer_of("porch").as_deref(), Some(old.id()));
        let mut new = service.connect(Some("porch-token-0123456".into()));
        welcome(&mut new).await;
        new.send_text(register);
        assert!(error(&mut old).await.contains("taken over"));
        assert!(old.recv().await.is_none(), "the stale connection is closed");
        assert_eq!(service.producer_of("porch").as_deref(), Some(new.id()));
        drop(new);
        assert!(service.channels().is_empty());
    }
}
