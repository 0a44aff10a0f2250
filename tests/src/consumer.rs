//! A consumer of the signalling protocol: finds a channel's producer by name and negotiates a
//! session with it over the service's WebSocket, the way `webrtcsrc` (the consumer offers)
//! or `gstwebrtc-api` (the producer offers) do.

use anyhow::{Context, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use gst_plugin_webrtc_signalling_protocol as p;
use p::{IncomingMessage, OutgoingMessage, PeerMessageInner, SdpMessage};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::peer_connection::{PeerConnection, RTCIceCandidateInit, RTCSessionDescription};

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connection to a signalling service.
pub struct Consumer {
    ws: Stream,
    /// Our peer id.
    pub peer_id: String,
}

/// A session with a channel's producer; [`ChannelSession::leave`] ends it. Meanwhile a task
/// keeps reading the connection, as a browser does, so the service's pings are answered.
pub struct ChannelSession {
    /// The service's session id.
    pub session_id: String,
    leave: oneshot::Sender<oneshot::Sender<anyhow::Result<()>>>,
}

impl Consumer {
    /// Connects to `ws_url` with `token` (as a Bearer header) and takes the welcome.
    pub async fn connect(ws_url: &str, token: Option<&str>) -> anyhow::Result<Consumer> {
        Self::connect_trusting(ws_url, token, None).await
    }

    /// [`Consumer::connect`] to a `wss://` service whose certificate is signed by `root` (PEM)
    /// rather than a public CA.
    pub async fn connect_trusting(
        ws_url: &str,
        token: Option<&str>,
        root: Option<&str>,
    ) -> anyhow::Result<Consumer> {
        let mut request = ws_url.into_client_request()?;
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse()?);
        }
        let connector = match root {
            Some(pem) => {
                use rustls::pki_types::{CertificateDer, pem::PemObject as _};
                let mut roots = rustls::RootCertStore::empty();
                roots.add(CertificateDer::from_pem_slice(pem.as_bytes())?)?;
                let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
                    config,
                )))
            }
            None => None,
        };
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
                .await
                .with_context(|| format!("connecting to {ws_url}"))?;
        let mut consumer = Consumer {
            ws,
            peer_id: String::new(),
        };
        match consumer.recv().await? {
            OutgoingMessage::Welcome { peer_id } => consumer.peer_id = peer_id,
            other => bail!("expected welcome, got {other:?}"),
        }
        Ok(consumer)
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &IncomingMessage) -> anyhow::Result<()> {
        self.send_text(&serde_json::to_string(message)?).await
    }

    /// Sends raw text (tests of malformed messages).
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Sends a binary frame (tests of what the protocol does not allow).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    /// The next protocol message (10 s at most).
    pub async fn recv(&mut self) -> anyhow::Result<OutgoingMessage> {
        self.recv_or_closed()
            .await?
            .context("the service closed the connection")
    }

    /// The next protocol message, or `None` once the service has closed the connection (a
    /// close frame, or the TCP connection ended). Fails after 10 s of silence.
    pub async fn recv_or_closed(&mut self) -> anyhow::Result<Option<OutgoingMessage>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("no message from the service within 10 s")?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Ok(Some(serde_json::from_str(text.as_str())?));
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(None),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The producer whose `meta.channel` is `channel`, if it is live.
    pub async fn find_channel(&mut self, channel: &str) -> anyhow::Result<Option<String>> {
        self.send(&IncomingMessage::List).await?;
        loop {
            match self.recv().await? {
                OutgoingMessage::List { producers } => {
                    return Ok(producers
                        .into_iter()
                        .find(|p| {
                            p.meta
                                .as_ref()
                                .and_then(|m| m.get("channel"))
                                .and_then(|c| c.as_str())
                                == Some(channel)
                        })
                        .map(|p| p.id));
                }
                OutgoingMessage::Error { details } => bail!("list: {details}"),
                _ => {}
            }
        }
    }

    /// Starts a session with `channel`'s producer and negotiates `pc` (a receive-only peer
    /// connection): with our offer in `startSession` if `we_offer`, else answering the
    /// producer's offer. `gathered` fires when `pc` has all its candidates.
    pub async fn join(
        mut self,
        channel: &str,
        we_offer: bool,
        pc: &dyn PeerConnection,
        gathered: &Notify,
    ) -> anyhow::Result<ChannelSession> {
        let producer = self
            .find_channel(channel)
            .await?
            .with_context(|| format!("channel {channel:?} is not live"))?;
        let offer = match we_offer {
            true => {
                pc.set_local_description(pc.create_offer(None).await?)
                    .await?;
                Some(local_sdp(pc, gathered).await?)
            }
            false => None,
        };
        self.send(&IncomingMessage::StartSession(p::StartSessionMessage {
            peer_id: producer,
            offer,
        }))
        .await?;
        let mut session_id = None;
        loop {
            match self.recv().await? {
                OutgoingMessage::SessionStarted { session_id: id, .. } => session_id = Some(id),
                OutgoingMessage::Peer(p::PeerMessage {
                    session_id: id,
                    peer_message,
                }) if Some(&id) == session_id.as_ref() => match peer_message {
                    PeerMessageInner::Sdp(SdpMessage::Answer { sdp }) if we_offer => {
                        pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                            .await?;
                        break;
                    }
                    PeerMessageInner::Sdp(SdpMessage::Offer { sdp }) if !we_offer => {
                        pc.set_remote_description(RTCSessionDescription::offer(sdp)?)
                            .await?;
                        pc.set_local_description(pc.create_answer(None).await?)
                            .await?;
                        let answer = local_sdp(pc, gathered).await?;
                        self.send(&IncomingMessage::Peer(p::PeerMessage {
                            session_id: id,
                            peer_message: PeerMessageInner::Sdp(SdpMessage::Answer { sdp: answer }),
                        }))
                        .await?;
                        break;
                    }
                    PeerMessageInner::Ice {
                        candidate,
                        sdp_m_line_index,
                    } => {
                        pc.add_ice_candidate(RTCIceCandidateInit {
                            candidate,
                            sdp_mline_index: u16::try_from(sdp_m_line_index).ok(),
                            ..Default::default()
                        })
                        .await?;
                    }
                    other => bail!("unexpected peer message {other:?}"),
                },
                OutgoingMessage::Error { details } => bail!("startSession: {details}"),
                OutgoingMessage::EndSession(_) => bail!("the producer ended the session"),
                _ => {}
            }
        }
        let session_id = session_id.context("no sessionStarted")?;
        let (leave, asked) = oneshot::channel();
        tokio::spawn(self.hold(session_id.clone(), asked));
        Ok(ChannelSession { session_id, leave })
    }

    /// Reads (and so answers pings) until asked to leave, then ends the session and closes.
    async fn hold(
        mut self,
        session_id: String,
        mut asked: oneshot::Receiver<oneshot::Sender<anyhow::Result<()>>>,
    ) {
        let reply = loop {
            tokio::select! {
                frame = self.ws.next() => if !matches!(frame, Some(Ok(_))) {
                    break (&mut asked).await.ok();
                },
                reply = &mut asked => break reply.ok(),
            }
        };
        let end = IncomingMessage::EndSession(p::EndSessionMessage { session_id });
        let sent = self.send(&end).await;
        let _ = self.ws.close(None).await;
        if let Some(reply) = reply {
            let _ = reply.send(sent);
        }
    }
}

impl ChannelSession {
    /// Ends the session (`endSession`) and closes the connection.
    pub async fn leave(self) -> anyhow::Result<()> {
        let (reply, replied) = oneshot::channel();
        self.leave
            .send(reply)
            .map_err(|_| anyhow::anyhow!("the connection task is gone"))?;
        replied.await?
    }
}

async fn local_sdp(pc: &dyn PeerConnection, gathered: &Notify) -> anyhow::Result<String> {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), gathered.notified()).await;
    Ok(pc
        .local_description()
        .await
        .context("no local description")?
        .sdp)
}
