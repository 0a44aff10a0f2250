//! The signalling hub: who is connected, which channels are live, which sessions run.
//!
//! It speaks the GStreamer webrtcsink signalling protocol (the message types come from
//! `gst-plugin-webrtc-signalling-protocol`) and behaves as GStreamer's own server does, so
//! `webrtcsink`, `webrtcsrc` and `gstwebrtc-api` work with it unchanged. On top of that:
//!
//! - a producer names its **channel** in `meta.channel`; channel names are unique. A second
//!   producer for a live channel is refused ("already live") until the first one is gone
//!   (it disconnects, or the transport drops it for silence), unless it presents that
//!   channel's device token ([`Policy::is_device_of`]): then it is the camera reconnecting
//!   and replaces its own stale entry at once. `meta` is never an identity: anyone may copy
//!   it from `list`;
//! - device tokens decide who may publish a channel, viewer tokens who may watch
//!   ([`Policy`]);
//! - at most `limits.max_sessions_per_channel` sessions per channel;
//! - [`Event`]s for webhooks and logs.
//!
//! The hub is pure: a message in gives [`Effects`] out (messages to peers, events, peers to
//! disconnect). The WebSocket server, the in-process connection of onaird's own producer and
//! the WHEP gateway are transports around it, so all of this is tested without sockets.

use std::collections::HashMap;
use std::time::SystemTime;

use gst_plugin_webrtc_signalling_protocol as p;
use p::{IncomingMessage, OutgoingMessage, PeerStatus};
use serde::Serialize;

use crate::auth::Policy;

/// A connection's id, given in `welcome`.
pub type PeerId = String;

/// What a message to the hub makes happen.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Messages to send, in order.
    pub messages: Vec<(PeerId, OutgoingMessage)>,
    /// Things that happened, for webhooks and logs.
    pub events: Vec<Event>,
    /// Peers whose connection must be closed (after their messages are sent).
    pub close: Vec<PeerId>,
}

impl Effects {
    fn send(&mut self, to: &str, message: OutgoingMessage) {
        self.messages.push((to.to_owned(), message));
    }

    fn error(&mut self, to: &str, details: impl Into<String>) {
        self.send(
            to,
            OutgoingMessage::Error {
                details: details.into(),
            },
        );
    }
}

/// Something webhooks and logs are told about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A camera registered its channel.
    ChannelUp {
        /// The channel.
        channel: String,
        /// Its human-readable name.
        name: String,
    },
    /// A channel's camera went away.
    ChannelDown {
        /// The channel.
        channel: String,
    },
    /// A viewer joined.
    ViewerJoin {
        /// The channel.
        channel: String,
        /// The session.
        session: String,
        /// Viewers of the channel now.
        viewers: usize,
    },
    /// A viewer left.
    ViewerLeave {
        /// The channel.
        channel: String,
        /// The session.
        session: String,
        /// Viewers of the channel now.
        viewers: usize,
    },
}

/// One live channel, for `GET /api/channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelInfo {
    /// Channel name.
    pub channel: String,
    /// Human-readable name.
    pub name: String,
    /// Sessions running.
    pub viewers: usize,
    /// When the camera registered (RFC 3339).
    pub live_since: String,
    /// The producer's peer id (what `startSession` takes).
    pub peer_id: String,
}

struct Peer {
    status: PeerStatus,
    /// The token the connection presented.
    token: Option<String>,
    /// The channel it publishes, once registered as a producer.
    channel: Option<String>,
    live_since: SystemTime,
}

struct Session {
    producer: PeerId,
    consumer: PeerId,
    channel: String,
}

impl Session {
    fn other(&self, id: &str) -> Option<&str> {
        if self.producer == id {
            Some(&self.consumer)
        } else if self.consumer == id {
            Some(&self.producer)
        } else {
            None
        }
    }
}

/// See the module documentation.
pub struct Hub {
    policy: Policy,
    max_sessions_per_channel: usize,
    peers: HashMap<PeerId, Peer>,
    sessions: HashMap<String, Session>,
    /// Live channels and their producer.
    channels: HashMap<String, PeerId>,
}

/// `text` (an id or a name a peer sent) quoted for an error message, cut to its first 64
/// characters: a reply never echoes a message back whole.
fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{:?}…", &text[..at]),
        None => format!("{text:?}"),
    }
}

/// The string field `key` of a peer's `meta`.
fn meta_str<'a>(status: &'a PeerStatus, key: &str) -> Option<&'a str> {
    status.meta.as_ref()?.get(key)?.as_str()
}

impl Hub {
    /// An empty hub.
    pub fn new(policy: Policy, max_sessions_per_channel: usize) -> Self {
        Hub {
            policy,
            max_sessions_per_channel,
            peers: HashMap::new(),
            sessions: HashMap::new(),
            channels: HashMap::new(),
        }
    }

    /// A connection arrived with `token` (from its `Authorization: Bearer` header or
    /// `?token=`): it is welcomed with its id.
    pub fn connect(&mut self, id: &str, token: Option<String>) -> Effects {
        self.peers.insert(
            id.to_owned(),
            Peer {
                status: PeerStatus::default(),
                token,
                channel: None,
                live_since: SystemTime::now(),
            },
        );
        let mut fx = Effects::default();
        fx.send(
            id,
            OutgoingMessage::Welcome {
                peer_id: id.to_owned(),
            },
        );
        fx
    }

    /// A connection is gone: its sessions end and, if it published a channel, the channel
    /// goes down.
    pub fn disconnect(&mut self, id: &str) -> Effects {
        let mut fx = Effects::default();
        self.remove_peer(id, &mut fx);
        fx
    }

    /// Handles one message from peer `from`. Whatever is wrong with it is answered with an
    /// `error` message to `from` and changes nothing.
    pub fn handle(&mut self, from: &str, message: IncomingMessage) -> Effects {
        let mut fx = Effects::default();
        if !self.peers.contains_key(from) {
            fx.error(from, "not connected");
            return fx;
        }
        let result = match message {
            IncomingMessage::NewPeer => Err("newPeer is not a message peers send".to_owned()),
            IncomingMessage::SetPeerStatus(status) => self.set_status(from, status, &mut fx),
            IncomingMessage::StartSession(start) => {
                self.start_session(from, &start.peer_id, start.offer, &mut fx)
            }
            IncomingMessage::Peer(message) => self.relay(from, message, &mut fx),
            IncomingMessage::EndSession(end) => self.end_session(from, &end.session_id, &mut fx),
            IncomingMessage::List => self.list(from, |s| s.producing()).map(|producers| {
                fx.send(from, OutgoingMessage::List { producers });
            }),
            IncomingMessage::ListConsumers => self.list(from, |s| s.consuming()).map(|consumers| {
                fx.send(from, OutgoingMessage::ListConsumers { consumers });
            }),
        };
        if let Err(details) = result {
            fx.error(from, details);
        }
        fx
    }

    /// The live channels, by name.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        let mut list: Vec<ChannelInfo> = self
            .channels
            .iter()
            .filter_map(|(channel, id)| {
                let peer = self.peers.get(id)?;
                Some(ChannelInfo {
                    channel: channel.clone(),
                    name: meta_str(&peer.status, "name").unwrap_or(channel).to_owned(),
                    viewers: self.viewers(channel),
                    live_since: humantime::format_rfc3339_seconds(peer.live_since).to_string(),
                    peer_id: id.clone(),
                })
            })
            .collect();
        list.sort_by(|a, b| a.channel.cmp(&b.channel));
        list
    }

    /// How a connection presenting `token` is admitted (see [`Policy::admission`]).
    pub fn admission(&self, token: Option<&str>) -> crate::auth::Admission {
        self.policy.admission(token)
    }

    /// Whether the bearer of `token` may watch (see [`Policy::may_watch`]).
    pub fn may_watch(&self, token: Option<&str>) -> bool {
        self.policy.may_watch(token)
    }

    /// Whether peer `id` publishes a channel.
    pub fn publishes(&self, id: &str) -> bool {
        self.peers
            .get(id)
            .is_some_and(|peer| peer.channel.is_some())
    }

    /// The producer of a live channel.
    pub fn producer_of(&self, channel: &str) -> Option<&str> {
        self.channels.get(channel).map(String::as_str)
    }

    /// The channel a session belongs to.
    pub fn session_channel(&self, session: &str) -> Option<&str> {
        self.sessions.get(session).map(|s| s.channel.as_str())
    }

    fn viewers(&self, channel: &str) -> usize {
        self.sessions
            .values()
            .filter(|s| s.channel == channel)
            .count()
    }

    fn set_status(
        &mut self,
        from: &str,
        mut status: PeerStatus,
        fx: &mut Effects,
    ) -> Result<(), String> {
        status.peer_id = Some(from.to_owned());
        let peer = &self.peers[from];
        if peer.status == status {
            return Ok(());
        }
        if status.producing() && status.consuming() {
            return Err("a peer cannot be both producer and consumer".into());
        }
        let token = peer.token.clone();
        if (status.listening() || status.consuming()) && !self.policy.may_watch(token.as_deref()) {
            return Err("a viewer token is needed to listen or consume".into());
        }
        let channel = match status.producing() {
            true => Some(self.claim_channel(from, &status, token.as_deref(), fx)?),
            false => None,
        };
        let old = &self.peers[from];
        let stops_producing =
            old.status.producing() && channel.as_deref() != old.channel.as_deref();
        let stops_consuming = old.status.consuming() && !status.consuming();
        if stops_producing {
            self.stop_producing(from, fx);
        }
        if stops_consuming {
            self.end_sessions_of(from, fx);
        }
        if let Some(channel) = &channel
            && self.channels.get(channel).map(String::as_str) != Some(from)
        {
            self.channels.insert(channel.clone(), from.to_owned());
            fx.events.push(Event::ChannelUp {
                channel: channel.clone(),
                name: meta_str(&status, "name").unwrap_or(channel).to_owned(),
            });
        }
        if let Some(peer) = self.peers.get_mut(from) {
            peer.status = status.clone();
            peer.channel = channel;
            peer.live_since = SystemTime::now();
        }
        self.notify_listeners(status, fx);
        Ok(())
    }

    /// Checks that `from` may publish the channel in `status.meta`, and frees it when a
    /// connection presenting the channel's device token replaces a stale one. Returns the
    /// channel.
    fn claim_channel(
        &mut self,
        from: &str,
        status: &PeerStatus,
        token: Option<&str>,
        fx: &mut Effects,
    ) -> Result<String, String> {
        let Some(channel) = meta_str(status, "channel") else {
            return Err("a producer must name its channel in meta.channel".into());
        };
        if let Some(problem) = onair_config::channel_name_problem(channel) {
            return Err(format!("meta.channel {}: {problem}", shown(channel)));
        }
        if !self.policy.may_publish(token, channel) {
            return Err(format!(
                "wrong or missing device token for channel {channel:?}"
            ));
        }
        let Some(holder) = self.channels.get(channel).cloned() else {
            return Ok(channel.to_owned());
        };
        if holder == from {
            return Ok(channel.to_owned());
        }
        // Only a device token proves who is asking; `meta` (device id included) is public.
        if !self.policy.is_device_of(token, channel) {
            return Err(format!(
                "channel {channel:?} is already live (its camera gets it back once the old \
                 connection is gone, or at once with the channel's device token)"
            ));
        }
        // A reconnect: the old connection is stale.
        fx.error(
            &holder,
            format!("channel {channel:?} was taken over by a new connection of its camera"),
        );
        fx.close.push(holder.clone());
        self.remove_peer_quietly(&holder, fx);
        Ok(channel.to_owned())
    }

    fn start_session(
        &mut self,
        from: &str,
        to: &str,
        offer: Option<String>,
        fx: &mut Effects,
    ) -> Result<(), String> {
        let Some(target) = self.peers.get(to) else {
            return Err(format!("no peer {}", shown(to)));
        };
        let (producer, consumer) = if target.status.producing() {
            let token = self.peers[from].token.as_deref();
            if !self.policy.may_watch(token) {
                return Err("a viewer token is needed to start a session".into());
            }
            (to, from)
        } else if target.status.consuming() && self.peers[from].status.producing() {
            (from, to)
        } else {
            return Err(format!(
                "peer {} is neither a producer nor a consumer",
                shown(to)
            ));
        };
        if producer == consumer {
            return Err("a peer cannot start a session with itself".into());
        }
        let Some(channel) = self.peers[producer].channel.clone() else {
            return Err(format!("peer {producer:?} publishes no channel"));
        };
        if self.viewers(&channel) >= self.max_sessions_per_channel {
            return Err(format!(
                "channel {channel:?} has its maximum of {} viewers",
                self.max_sessions_per_channel
            ));
        }
        let session_id = uuid::Uuid::new_v4().to_string();
        self.sessions.insert(
            session_id.clone(),
            Session {
                producer: producer.to_owned(),
                consumer: consumer.to_owned(),
                channel: channel.clone(),
            },
        );
        fx.send(
            consumer,
            OutgoingMessage::SessionStarted {
                peer_id: producer.to_owned(),
                session_id: session_id.clone(),
            },
        );
        fx.send(
            producer,
            OutgoingMessage::StartSession {
                peer_id: consumer.to_owned(),
                session_id: session_id.clone(),
                offer,
            },
        );
        let viewers = self.viewers(&channel);
        fx.events.push(Event::ViewerJoin {
            channel,
            session: session_id,
            viewers,
        });
        Ok(())
    }

    fn relay(
        &mut self,
        from: &str,
        message: p::PeerMessage,
        fx: &mut Effects,
    ) -> Result<(), String> {
        let Some(session) = self.sessions.get(&message.session_id) else {
            return Err(format!("no session {}", shown(&message.session_id)));
        };
        let Some(other) = session.other(from) else {
            return Err(format!("not in session {}", shown(&message.session_id)));
        };
        if matches!(
            message.peer_message,
            p::PeerMessageInner::Sdp(p::SdpMessage::Offer { .. })
        ) && from == session.consumer
        {
            return Err("a consumer's offer goes in startSession, not in a peer message".into());
        }
        fx.send(other, OutgoingMessage::Peer(message));
        Ok(())
    }

    fn end_session(
        &mut self,
        from: &str,
        session_id: &str,
        fx: &mut Effects,
    ) -> Result<(), String> {
        match self.sessions.get(session_id) {
            None => Err(format!("no session {}", shown(session_id))),
            Some(session) if session.other(from).is_none() => {
                Err(format!("not in session {}", shown(session_id)))
            }
            Some(_) => {
                self.close_session(session_id, Some(from), fx);
                Ok(())
            }
        }
    }

    /// Removes a session and tells its peers (but `except`, who ended it).
    fn close_session(&mut self, session_id: &str, except: Option<&str>, fx: &mut Effects) {
        let Some(session) = self.sessions.remove(session_id) else {
            return;
        };
        for peer in [&session.producer, &session.consumer] {
            if Some(peer.as_str()) != except && self.peers.contains_key(peer) {
                fx.send(
                    peer,
                    OutgoingMessage::EndSession(p::EndSessionMessage {
                        session_id: session_id.to_owned(),
                    }),
                );
            }
        }
        let viewers = self.viewers(&session.channel);
        fx.events.push(Event::ViewerLeave {
            channel: session.channel,
            session: session_id.to_owned(),
            viewers,
        });
    }

    fn list(
        &self,
        from: &str,
        filter: impl Fn(&PeerStatus) -> bool,
    ) -> Result<Vec<p::Peer>, String> {
        // A camera lists the producers to see its registration taken (the protocol has no
        // acknowledgement); without a viewer token it sees itself only.
        let watcher = self.policy.may_watch(self.peers[from].token.as_deref());
        if !watcher && !self.publishes(from) {
            return Err("a viewer token is needed to list peers".into());
        }
        let mut peers: Vec<p::Peer> = self
            .peers
            .iter()
            .filter(|(id, _)| watcher || id.as_str() == from)
            .filter(|(_, peer)| filter(&peer.status))
            .map(|(id, peer)| p::Peer {
                id: id.clone(),
                meta: peer.status.meta.clone(),
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(peers)
    }

    fn end_sessions_of(&mut self, id: &str, fx: &mut Effects) {
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.other(id).is_some())
            .map(|(session_id, _)| session_id.clone())
            .collect();
        for session_id in ids {
            self.close_session(&session_id, Some(id), fx);
        }
    }

    fn stop_producing(&mut self, id: &str, fx: &mut Effects) {
        self.end_sessions_of(id, fx);
        let channel = self.peers.get_mut(id).and_then(|peer| peer.channel.take());
        if let Some(channel) = channel
            && self.channels.get(&channel).map(String::as_str) == Some(id)
        {
            self.channels.remove(&channel);
            fx.events.push(Event::ChannelDown { channel });
        }
    }

    fn remove_peer(&mut self, id: &str, fx: &mut Effects) {
        let Some(peer) = self.peers.get(id) else {
            return;
        };
        let was_visible = peer.status.producing() || peer.status.consuming();
        let meta = peer.status.meta.clone();
        self.stop_producing(id, fx);
        self.end_sessions_of(id, fx);
        self.peers.remove(id);
        if was_visible {
            self.notify_listeners(
                PeerStatus {
                    roles: Vec::new(),
                    meta,
                    peer_id: Some(id.to_owned()),
                },
                fx,
            );
        }
    }

    /// Removes a replaced producer: its sessions end, its channel stays up for its successor.
    fn remove_peer_quietly(&mut self, id: &str, fx: &mut Effects) {
        self.end_sessions_of(id, fx);
        if let Some(peer) = self.peers.remove(id) {
            if let Some(channel) = peer.channel {
                self.channels.remove(&channel);
            }
            self.notify_listeners(
                PeerStatus {
                    roles: Vec::new(),
                    meta: peer.status.meta,
                    peer_id: Some(id.to_owned()),
                },
                fx,
            );
        }
    }

    fn notify_listeners(&self, status: PeerStatus, fx: &mut Effects) {
        let mut listeners: Vec<&PeerId> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.status.listening())
            .map(|(id, _)| id)
            .collect();
        listeners.sort();
        for id in listeners {
            fx.send(id, OutgoingMessage::PeerStatusChanged(status.clone()));
        }
    }
}

#[cfg(test)]
mod tests;
