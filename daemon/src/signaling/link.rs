//! The connection to a signalling service, whichever way it goes: a WebSocket to a remote
//! service, or straight into the service running inside onaird. The producer above does not
//! know which.
//!
//! The WebSocket keeps itself honest ([`super::liveness`]): it pings a quiet service and
//! ends when nothing came back for
//! [`super::liveness::SILENCE_LIMIT`]; a send that cannot complete within
//! [`SEND_TIMEOUT`] (the service stopped reading) ends it too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use gst_plugin_webrtc_signalling_protocol::{IncomingMessage, OutgoingMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use super::liveness::{Due, Liveness};

/// Largest message accepted from the service.
const MAX_MESSAGE: usize = 1 << 20;
/// How long one message may take to go out.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the service: messages out, messages in.
#[async_trait::async_trait]
pub trait Link: Send {
    /// Sends one message.
    async fn send(&mut self, message: IncomingMessage) -> anyhow::Result<()>;
    /// The next message; `None` once the connection has ended.
    async fn recv(&mut self) -> Option<OutgoingMessage>;
}

/// The service inside this process.
#[async_trait::async_trait]
impl Link for onair_signal::Connection {
    async fn send(&mut self, message: IncomingMessage) -> anyhow::Result<()> {
        onair_signal::Connection::send(self, message);
        Ok(())
    }

    async fn recv(&mut self) -> Option<OutgoingMessage> {
        onair_signal::Connection::recv(self).await
    }
}

/// A remote service over WebSocket (`ws://` or `wss://`).
pub struct WebSocket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// When the service was last heard from, and pinged.
    liveness: Liveness,
}

impl WebSocket {
    /// Connects to `url`, presenting `token` as `Authorization: Bearer` (onair-signal also
    /// takes `?token=` in the URL, for clients that cannot set headers).
    pub async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<WebSocket> {
        let mut request = url
            .into_client_request()
            .with_context(|| format!("signaling.url {}", onair_signal::redact::url(url)))?;
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("signaling.token is not valid in an HTTP header")?;
            request.headers_mut().insert("authorization", value);
        }
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            false,
            Some(tls_connector()?),
        );
        let (stream, _) = tokio::time::timeout(std::time::Duration::from_secs(10), connect)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within 10 s"))?
            .map_err(describe)?;
        Ok(WebSocket {
            stream,
            liveness: Liveness::new(Instant::now()),
        })
    }
}

/// wss:// with the public web's root certificates and the system's (which include a private
/// CA installed in /usr/local/share/ca-certificates, or one named by `SSL_CERT_FILE`), on
/// the ring provider.
fn tls_connector() -> anyhow::Result<Connector> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let system = rustls_native_certs::load_native_certs();
    for error in &system.errors {
        debug!("system certificates: {error}");
    }
    roots.add_parsable_certificates(system.certs);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

/// A connection error in words a person can act on.
fn describe(error: tungstenite::Error) -> anyhow::Error {
    match error {
        tungstenite::Error::Http(response) => anyhow::anyhow!(
            "the service answered HTTP {} instead of accepting a WebSocket (wrong URL or token?)",
            response.status()
        ),
        other => anyhow::Error::new(other),
    }
}

impl WebSocket {
    /// Sends a frame, within [`SEND_TIMEOUT`].
    async fn send_frame(&mut self, frame: Message) -> anyhow::Result<()> {
        tokio::time::timeout(SEND_TIMEOUT, self.stream.send(frame))
            .await
            .map_err(|_| anyhow::anyhow!("the service took no data for {SEND_TIMEOUT:?}"))??;
        Ok(())
    }

    /// The liveness deadline passed: pings if due; `false` once the service counts as gone.
    async fn keep_alive(&mut self) -> bool {
        let now = Instant::now();
        match self.liveness.poll(now) {
            None => true,
            Some(Due::Ping) => match self.send_frame(Message::Ping(Default::default())).await {
                Ok(()) => true,
                Err(err) => {
                    warn!("signaling: cannot ping the service: {err:#}");
                    false
                }
            },
            Some(Due::Dead) => {
                warn!(
                    "signaling: nothing from the service for {:.0} s (no message, no answer to pings): giving the connection up",
                    self.liveness.silent_for(now).as_secs_f64()
                );
                false
            }
        }
    }
}

#[async_trait::async_trait]
impl Link for WebSocket {
    async fn send(&mut self, message: IncomingMessage) -> anyhow::Result<()> {
        let text = serde_json::to_string(&message)?;
        self.send_frame(Message::Text(text.into())).await
    }

    async fn recv(&mut self) -> Option<OutgoingMessage> {
        loop {
            let deadline = self.liveness.deadline();
            let frame = tokio::select! {
                frame = self.stream.next() => frame?,
                () = tokio::time::sleep_until(deadline.into()) => {
                    if !self.keep_alive().await {
                        return None;
                    }
                    continue;
                }
            };
            self.liveness.heard(Instant::now());
            match frame {
                Ok(Message::Text(text)) => match serde_json::from_str(text.as_str()) {
                    Ok(message) => return Some(message),
                    Err(err) => warn!("signaling: ignoring a message we do not understand: {err}"),
                },
                Ok(Message::Close(frame)) => {
                    debug!(?frame, "signaling: the service closed the connection");
                    return None;
                }
                // Pings, pongs: the service is there. tungstenite answers pings by itself.
                Ok(_) => {}
                Err(err) => {
                    debug!("signaling: {err}");
                    return None;
                }
            }
        }
    }
}
