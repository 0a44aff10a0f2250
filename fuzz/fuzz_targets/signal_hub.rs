//! Signalling messages into the hub, through `onair_signal::Service` as every transport uses
//! it (the WebSocket server, onaird's own producer, the WHEP gateway).
//!
//! The input is a script, one step a line, so the seeds are real protocol messages:
//!
//! ```text
//! policy tokens                 (first line only: device and viewer tokens required)
//! connect [TOKEN]               a new peer, presenting TOKEN
//! N {"type":"list"}             peer N (modulo the peers) sends this text
//! close N                       peer N hangs up
//! mute N                        peer N stops reading (its queue fills up)
//! repeat K                      the step before, K more times (at most 300)
//! ```
//!
//! In messages and tokens `$pN` becomes peer N's id, `$sN` the N-th session id seen,
//! `$dCHANNEL` the device token of CHANNEL and `$v` the viewer token.
//!
//! Checked after every step: each peer hears `welcome` first; every live channel has a valid
//! name, is published by a connected peer that `list` shows as a producer, and has at most
//! the allowed viewers; the webhook events (channel up/down, viewer join/leave) add up to
//! exactly the channels and viewers the service reports. When everyone has left, no channel
//! and no session is left, in the service or in the events.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use gst_plugin_webrtc_signalling_protocol::OutgoingMessage;
use libfuzzer_sys::fuzz_target;
use onair_config::SignalConfig;
use onair_signal::auth::{Policy, device_token};
use onair_signal::hub::Event;
use onair_signal::{Connection, Service};
use tokio::sync::mpsc;

const DEVICE_KEY: &str = "fuzz-device-key-0123456789";
const VIEWER_TOKEN: &str = "fuzz-viewer-token-0123456789";
const MAX_SESSIONS: usize = 3;
const MAX_MESSAGE_BYTES: usize = 4096;
/// Lines per input, and repeats of one step, so one input stays quick.
const MAX_STEPS: usize = 400;
const MAX_REPEAT: usize = 300;

fuzz_target!(|data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = script.lines().take(MAX_STEPS).peekable();
    let tokens = lines.next_if(|l| l.trim() == "policy tokens").is_some();
    let mut run = Run::new(tokens);
    let mut last = "";
    for line in lines {
        let times = match line.strip_prefix("repeat ") {
            Some(k) => k.trim().parse::<usize>().map_or(0, |k| k.min(MAX_REPEAT)),
            None => {
                last = line;
                1
            }
        };
        for _ in 0..times {
            run.step(last);
            run.check();
        }
    }
    run.finish();
});

struct Peer {
    conn: Connection,
    id: String,
    welcomed: bool,
    muted: bool,
}

struct Run {
    service: Service,
    events: mpsc::UnboundedReceiver<Event>,
    observer: Connection,
    /// Every peer connected so far, by index; `None` once gone.
    peers: Vec<Option<Peer>>,
    /// Every id handed out, by index, for `$pN` (also of peers that are gone).
    ids: Vec<String>,
    sessions: Vec<String>,
    /// What the events say: live channels, and sessions with their channel.
    live: HashSet<String>,
    viewing: HashMap<String, String>,
}

impl Run {
    fn new(tokens: bool) -> Run {
        let policy = if tokens {
            let config = SignalConfig::from_toml_str(
                &format!(
                    "[auth]\ndevice_key = \"{DEVICE_KEY}\"\nviewer_tokens = [\"{VIEWER_TOKEN}\"]\n\
                     [[channels]]\nname = \"porch\"\ntoken = \"porch-token-0123456789\"\n"
                ),
                "fuzz",
            )
            .expect("the fuzz policy is a valid configuration");
            Policy::new(&config)
        } else {
            Policy::open()
        };
        let (webhooks, events) = onair_signal::webhooks::observed();
        let service = Service::new(policy, MAX_SESSIONS, MAX_MESSAGE_BYTES, Some(webhooks));
        let mut observer = service.connect(Some(VIEWER_TOKEN.to_owned()));
        assert!(matches!(
            poll(&mut observer),
            Poll::Ready(Some(OutgoingMessage::Welcome { .. }))
        ));
        Run {
            service,
            events,
            observer,
            peers: Vec::new(),
            ids: Vec::new(),
            sessions: Vec::new(),
            live: HashSet::new(),
            viewing: HashMap::new(),
        }
    }

    fn step(&mut self, line: &str) {
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        match head {
            "connect" => {
                let token = Some(self.expand(rest)).filter(|t| !t.is_empty());
                let conn = self.service.connect(token);
                let id = conn.id().to_owned();
                self.ids.push(id.clone());
                self.peers.push(Some(Peer {
                    conn,
                    id,
                    welcomed: false,
                    muted: false,
                }));
            }
            "close" => {
                if let Some(i) = self.pick(rest) {
                    self.peers[i] = None;
                }
            }
            "mute" => {
                if let Some(i) = self.pick(rest)
                    && let Some(peer) = &mut self.peers[i]
                {
                    peer.muted = true;
                }
            }
            _ => {
                if let Some(i) = self.pick(head) {
                    let text = self.expand(rest);
                    if let Some(peer) = &self.peers[i] {
                        peer.conn.send_text(&text);
                    }
                }
            }
        }
    }

    /// The live peer a number names (modulo the live peers).
    fn pick(&self, number: &str) -> Option<usize> {
        let n: usize = number.trim().parse().ok()?;
        let live: Vec<usize> = (0..self.peers.len())
            .filter(|&i| self.peers[i].is_some())
            .collect();
        (!live.is_empty()).then(|| live[n % live.len()])
    }

    fn expand(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let kind = rest.chars().next();
            match kind {
                Some('p' | 's') => {
                    let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                    let n: usize = rest[1..1 + digits].parse().unwrap_or(0);
                    let list = if kind == Some('p') {
                        &self.ids
                    } else {
                        &self.sessions
                    };
                    if !list.is_empty() {
                        out.push_str(&list[n % list.len()]);
                    }
                    rest = &rest[1 + digits..];
                }
                Some('d') => {
                    let name = rest[1..]
                        .split(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
                        .next()
                        .unwrap_or("");
                    out.push_str(&device_token(DEVICE_KEY, name));
                    rest = &rest[1 + name.len()..];
                }
                Some('v') => {
                    out.push_str(VIEWER_TOKEN);
                    rest = &rest[1..];
                }
                _ => out.push('$'),
            }
        }
        out.push_str(rest);
        out
    }

    /// Reads what every peer that is not muted has been sent, and the events.
    fn drain(&mut self) {
        for slot in &mut self.peers {
            let Some(peer) = slot else { continue };
            if peer.muted {
                continue;
            }
            let hung_up = loop {
                match poll(&mut peer.conn) {
                    Poll::Pending => break false,
                    // The service hung up on this peer.
                    Poll::Ready(None) => break true,
                    Poll::Ready(Some(message)) => {
                        if !peer.welcomed {
                            assert!(
                                matches!(&message, OutgoingMessage::Welcome { peer_id } if *peer_id == peer.id),
                                "first message is not the welcome: {message:?}"
                            );
                            peer.welcomed = true;
                        }
                        match message {
                            OutgoingMessage::SessionStarted { session_id, .. }
                            | OutgoingMessage::StartSession { session_id, .. } => {
                                self.sessions.push(session_id)
                            }
                            OutgoingMessage::Error { details } => {
                                assert!(!details.is_empty(), "an empty error")
                            }
                            _ => {}
                        }
                    }
                }
            };
            if hung_up {
                *slot = None;
            }
        }
        while let Ok(event) = self.events.try_recv() {
            self.apply(event);
        }
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::ChannelUp { channel, .. } => {
                self.live.insert(channel);
            }
            Event::ChannelDown { channel } => {
                assert!(self.live.remove(&channel), "{channel} down but not up");
                assert!(
                    !self.viewing.values().any(|c| *c == channel),
                    "{channel} down with sessions left"
                );
            }
            Event::ViewerJoin {
                channel,
                session,
                viewers,
            } => {
                assert!(self.live.contains(&channel), "joined {channel}, not live");
                assert!(self.viewing.insert(session, channel.clone()).is_none());
                assert_eq!(viewers, self.viewers(&channel), "viewers of {channel}");
            }
            Event::ViewerLeave {
                channel,
                session,
                viewers,
            } => {
                assert_eq!(
                    self.viewing.remove(&session).as_ref(),
                    Some(&channel),
                    "{session} left {channel} without joining it"
                );
                assert_eq!(viewers, self.viewers(&channel), "viewers of {channel}");
            }
        }
    }

    fn viewers(&self, channel: &str) -> usize {
        self.viewing.values().filter(|c| *c == channel).count()
    }

    fn check(&mut self) {
        self.drain();
        let channels = self.service.channels();
        let producers = self.producers();
        let connected: HashSet<&str> = self.peers.iter().flatten().map(|p| p.id.as_str()).collect();
        for info in &channels {
            assert_eq!(
                onair_config::channel_name_problem(&info.channel),
                None,
                "{info:?}"
            );
            assert_eq!(
                self.service.producer_of(&info.channel).as_deref(),
                Some(info.peer_id.as_str())
            );
            assert!(connected.contains(info.peer_id.as_str()), "{info:?}: gone");
            assert!(producers.contains(&info.peer_id), "{info:?}: not listed");
            assert!(info.viewers <= MAX_SESSIONS, "{info:?}");
            assert_eq!(info.viewers, self.viewers(&info.channel), "{info:?}");
        }
        let reported: HashSet<&String> = channels.iter().map(|c| &c.channel).collect();
        assert_eq!(
            reported,
            self.live.iter().collect(),
            "events and channels differ"
        );
    }

    /// The producers `list` shows.
    fn producers(&mut self) -> HashSet<String> {
        self.observer.send_text(r#"{"type":"list"}"#);
        match poll(&mut self.observer) {
            Poll::Ready(Some(OutgoingMessage::List { producers })) => {
                producers.into_iter().map(|p| p.id).collect()
            }
            other => panic!("list answered {other:?}"),
        }
    }

    fn finish(mut self) {
        self.peers.clear();
        self.drain();
        assert!(self.service.channels().is_empty(), "channels left");
        assert!(
            self.live.is_empty(),
            "no channel-down event for {:?}",
            self.live
        );
        assert!(
            self.viewing.is_empty(),
            "no viewer-leave event for {:?}",
            self.viewing
        );
    }
}

/// The next message for `conn` if one is waiting.
fn poll(conn: &mut Connection) -> Poll<Option<OutgoingMessage>> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(conn.recv()).poll(&mut cx)
}
