use serde_json::json;

use super::*;

fn hub() -> Hub {
    Hub::new(Policy::open(), 100)
}

fn status(roles: &[p::PeerRole], meta: serde_json::Value) -> IncomingMessage {
    IncomingMessage::SetPeerStatus(PeerStatus {
        roles: roles.to_vec(),
        meta: Some(meta),
        peer_id: None,
    })
}

fn producer(channel: &str) -> IncomingMessage {
    status(
        &[p::PeerRole::Producer],
        json!({"channel": channel, "name": format!("{channel} camera")}),
    )
}

fn start(peer: &str, offer: Option<&str>) -> IncomingMessage {
    IncomingMessage::StartSession(p::StartSessionMessage {
        peer_id: peer.to_owned(),
        offer: offer.map(str::to_owned),
    })
}

fn errors(fx: &Effects) -> Vec<&str> {
    fx.messages
        .iter()
        .filter_map(|(_, m)| match m {
            OutgoingMessage::Error { details } => Some(details.as_str()),
            _ => None,
        })
        .collect()
}

/// Connects `id` and drops the welcome.
fn join(hub: &mut Hub, id: &str, token: Option<&str>) {
    let fx = hub.connect(id, token.map(str::to_owned));
    assert_eq!(
        fx.messages,
        [(
            id.to_owned(),
            OutgoingMessage::Welcome {
                peer_id: id.to_owned()
            }
        )]
    );
}

/// The session id the consumer was told about.
fn session_of(fx: &Effects) -> String {
    fx.messages
        .iter()
        .find_map(|(_, m)| match m {
            OutgoingMessage::SessionStarted { session_id, .. } => Some(session_id.clone()),
            _ => None,
        })
        .expect("sessionStarted")
}

#[test]
fn consumer_joins_a_channel_and_messages_are_relayed() {
    let mut hub = hub();
    join(&mut hub, "cam", None);
    join(&mut hub, "viewer", None);
    let fx = hub.handle("cam", producer("porch"));
    assert!(fx.messages.is_empty(), "{fx:?}");
    assert_eq!(
        fx.events,
        [Event::ChannelUp {
            channel: "porch".into(),
            name: "porch camera".into()
        }]
    );
    assert_eq!(hub.producer_of("porch"), Some("cam"));

    let fx = hub.handle("viewer", IncomingMessage::List);
    let OutgoingMessage::List { producers } = &fx.messages[0].1 else {
        panic!("{fx:?}");
    };
    assert_eq!(producers.len(), 1);
    assert_eq!(producers[0].id, "cam");
    assert_eq!(producers[0].meta.as_ref().unwrap()["channel"], "porch");

    let fx = hub.handle("viewer", start("cam", Some("v=0 offer")));
    let session = session_of(&fx);
    assert_eq!(
        fx.messages[1],
        (
            "cam".to_owned(),
            OutgoingMessage::StartSession {
                peer_id: "viewer".into(),
                session_id: session.clone(),
                offer: Some("v=0 offer".into()),
            }
        )
    );
    assert_eq!(hub.channels()[0].viewers, 1);

    let answer = p::PeerMessage {
        session_id: session.clone(),
        peer_message: p::PeerMessageInner::Sdp(p::SdpMessage::Answer { sdp: "v=0".into() }),
    };
    let fx = hub.handle("cam", IncomingMessage::Peer(answer));
    assert_eq!(fx.messages[0].0, "viewer");

    let ice = p::PeerMessage {
        session_id: session.clone(),
        peer_message: p::PeerMessageInner::Ice {
            candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host".into(),
            sdp_m_line_index: 0,
        },
    };
    let fx = hub.handle("viewer", IncomingMessage::Peer(ice));
    assert_eq!(fx.messages[0].0, "cam");

    let fx = hub.handle(
        "viewer",
        IncomingMessage::EndSession(p::EndSessionMessage {
            session_id: session.clone(),
        }),
    );
    assert_eq!(
        fx.messages,
        [(
            "cam".to_owned(),
            OutgoingMessage::EndSession(p::EndSessionMessage {
                session_id: session.clone()
            })
        )]
    );
    assert!(matches!(
        fx.events[0],
        Event::ViewerLeave { viewers: 0, .. }
    ));
}

/// The start of the refusal a producer gets for a channel that is live elsewhere.
const ALREADY_LIVE: &str = "channel \"porch\" is already live";

#[test]
fn a_second_producer_for_a_live_channel_is_refused() {
    let mut hub = hub();
    join(&mut hub, "cam", None);
    join(&mut hub, "intruder", None);
    hub.handle("cam", producer("porch"));
    let fx = hub.handle("intruder", producer("porch"));
    assert!(
        matches!(&errors(&fx)[..], [e] if e.starts_with(ALREADY_LIVE)),
        "{fx:?}"
    );
    assert!(fx.close.is_empty() && fx.events.is_empty());
    assert_eq!(hub.producer_of("porch"), Some("cam"));
    // Another name is fine.
    assert!(errors(&hub.handle("intruder", producer("garden"))).is_empty());
}

#[test]
fn copying_a_live_producers_meta_does_not_take_its_channel() {
    let mut hub = hub();
    join(&mut hub, "cam", None);
    join(&mut hub, "viewer", None);
    join(&mut hub, "intruder", None);
    let meta = json!({"channel": "porch", "name": "Porch", "device": "d-1"});
    hub.handle("cam", status(&[p::PeerRole::Producer], meta));
    let session = session_of(&hub.handle("viewer", start("cam", None)));
    // The intruder lists the producers and registers with the camera's meta, device id and
    // all.
    let fx = hub.handle("intruder", IncomingMessage::List);
    let OutgoingMessage::List { producers } = &fx.messages[0].1 else {
        panic!("{fx:?}");
    };
    let copied = producers[0].meta.clone().unwrap();
    assert_eq!(copied["device"], "d-1");
    let fx = hub.handle("intruder", status(&[p::PeerRole::Producer], copied.clone()));
    assert!(
        matches!(&errors(&fx)[..], [e] if e.starts_with(ALREADY_LIVE)),
        "{fx:?}"
    );
    assert!(fx.close.is_empty() && fx.events.is_empty(), "{fx:?}");
    // The camera keeps its channel and its viewer.
    assert_eq!(hub.producer_of("porch"), Some("cam"));
    assert_eq!(hub.session_channel(&session), Some("porch"));
    assert_eq!(hub.channels()[0].viewers, 1);

    // Once the camera's connection is gone (it disconnected, or the transport dropped it
    // for silence), the channel is free for whoever registers it next: its camera after a
    // reboot, without a device token.
    hub.disconnect("cam");
    join(&mut hub, "rebooted", None);
    let fx = hub.handle("rebooted", status(&[p::PeerRole::Producer], copied));
    assert!(errors(&fx).is_empty(), "{fx:?}");
    assert_eq!(hub.producer_of("porch"), Some("rebooted"));
}

#[test]
fn device_tokens_decide_who_publishes() {
    let config = onair_config::SignalConfig::from_toml_str(
        "[[channels]]\nname = \"porch\"\ntoken = \"porch-token-0123456\"\n",
        "t",
    )
    .unwrap();
    let mut hub = Hub::new(Policy::new(&config), 100);
    join(&mut hub, "nobody", None);
    join(&mut hub, "wrong", Some("porch-token-XXXXXXX"));
    join(&mut hub, "cam", Some("porch-token-0123456"));
    let refused = "wrong or missing device token for channel \"porch\"";
    assert_eq!(errors(&hub.handle("nobody", producer("porch"))), [refused]);
    assert_eq!(errors(&hub.handle("wrong", producer("porch"))), [refused]);
    assert!(errors(&hub.handle("cam", producer("porch"))).is_empty());
    join(&mut hub, "viewer", None);
    let session = session_of(&hub.handle("viewer", start("cam", None)));
    // With the token, a second connection is the camera reconnecting (its old connection
    // went stale): it replaces the stale entry at once. The stale connection is told and
    // closed, its viewer's session ends, the channel belongs to the new connection.
    join(&mut hub, "cam2", Some("porch-token-0123456"));
    let fx = hub.handle("cam2", producer("porch"));
    assert_eq!(
        errors(&fx),
        ["channel \"porch\" was taken over by a new connection of its camera"]
    );
    assert_eq!(
        fx.messages[0].0, "cam",
        "the error goes to the stale connection"
    );
    assert_eq!(fx.close, ["cam"]);
    assert!(fx.messages.contains(&(
        "viewer".to_owned(),
        OutgoingMessage::EndSession(p::EndSessionMessage {
            session_id: session
        })
    )));
    assert_eq!(hub.producer_of("porch"), Some("cam2"));
    // When the transport then reports the stale connection gone, nothing more happens.
    assert_eq!(hub.disconnect("cam"), Effects::default());
    assert_eq!(hub.producer_of("porch"), Some("cam2"));
    // A channel nobody has a token for cannot be published at all.
    assert_eq!(errors(&hub.handle("nobody", producer("garden"))).len(), 1);
}

#[test]
fn viewer_tokens_guard_listing_and_joining() {
    let config = onair_config::SignalConfig::from_toml_str(
        "[auth]\nviewer_tokens = [\"viewer-token-0123456\"]\n",
        "t",
    )
    .unwrap();
    let mut hub = Hub::new(Policy::new(&config), 100);
    join(&mut hub, "cam", None);
    join(&mut hub, "anon", None);
    join(&mut hub, "viewer", Some("viewer-token-0123456"));
    hub.handle("cam", producer("porch"));
    assert_eq!(errors(&hub.handle("anon", IncomingMessage::List)).len(), 1);
    assert_eq!(errors(&hub.handle("anon", start("cam", None))).len(), 1);
    assert_eq!(
        errors(&hub.handle("anon", status(&[p::PeerRole::Listener], json!({})))).len(),
        1
    );
    assert!(errors(&hub.handle("viewer", start("cam", None))).is_empty());
    // A camera without a viewer token lists to see its registration, and sees itself only.
    join(&mut hub, "cam2", None);
    hub.handle("cam2", producer("garden"));
    let listed = hub.handle("cam2", IncomingMessage::List);
    assert!(errors(&listed).is_empty(), "{listed:?}");
    match &listed.messages[..] {
        [(to, OutgoingMessage::List { producers })] => {
            assert_eq!(to, "cam2");
            let ids: Vec<&str> = producers.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(ids, ["cam2"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sessions_per_channel_are_limited() {
    let mut hub = Hub::new(Policy::open(), 2);
    join(&mut hub, "cam", None);
    hub.handle("cam", producer("porch"));
    for viewer in ["a", "b", "c"] {
        join(&mut hub, viewer, None);
    }
    assert!(errors(&hub.handle("a", start("cam", None))).is_empty());
    assert!(errors(&hub.handle("b", start("cam", None))).is_empty());
    assert_eq!(
        errors(&hub.handle("c", start("cam", None))),
        ["channel \"porch\" has its maximum of 2 viewers"]
    );
}

#[test]
fn a_producer_that_leaves_ends_its_sessions_and_its_channel() {
    let mut hub = hub();
    join(&mut hub, "cam", None);
    join(&mut hub, "viewer", None);
    join(&mut hub, "watcher", None);
    hub.handle("watcher", status(&[p::PeerRole::Listener], json!({})));
    let fx = hub.handle("cam", producer("porch"));
    // Listeners hear about the new producer.
    assert!(matches!(
        &fx.messages[..],
        [(to, OutgoingMessage::PeerStatusChanged(s))] if to == "watcher" && s.producing()
    ));
    let session = session_of(&hub.handle("viewer", start("cam", None)));
    let fx = hub.disconnect("cam");
    assert!(fx.messages.contains(&(
        "viewer".to_owned(),
        OutgoingMessage::EndSession(p::EndSessionMessage {
            session_id: session
        })
    )));
    assert!(fx.messages.iter().any(|(to, m)| to == "watcher"
        && matches!(m, OutgoingMessage::PeerStatusChanged(s) if s.roles.is_empty())));
    assert!(fx.events.contains(&Event::ChannelDown {
        channel: "porch".into()
    }));
    assert!(hub.channels().is_empty());
}

#[test]
fn bad_requests_get_an_error_and_change_nothing() {
    let mut hub = hub();
    join(&mut hub, "cam", None);
    join(&mut hub, "viewer", None);
    assert_eq!(
        errors(&hub.handle("cam", status(&[p::PeerRole::Producer], json!({})))),
        ["a producer must name its channel in meta.channel"]
    );
    assert_eq!(
        errors(&hub.handle("cam", producer("front door"))),
        ["meta.channel \"front door\": invalid character ' ' (allowed: A-Z a-z 0-9 _ . -)"]
    );
    assert_eq!(
        errors(&hub.handle("viewer", start("nobody", None))),
        ["no peer \"nobody\""]
    );
    assert_eq!(
        errors(&hub.handle(
            "viewer",
            IncomingMessage::EndSession(p::EndSessionMessage {
                session_id: "s".into()
            })
        )),
        ["no session \"s\""]
    );
    assert_eq!(
        errors(&hub.handle(
            "cam",
            status(
                &[p::PeerRole::Producer, p::PeerRole::Consumer],
                json!({"channel": "x"})
            )
        )),
        ["a peer cannot be both producer and consumer"]
    );
    assert!(hub.channels().is_empty());
    // A consumer may not send an offer in a peer message.
    hub.handle("cam", producer("porch"));
    let session = session_of(&hub.handle("viewer", start("cam", None)));
    let offer = p::PeerMessage {
        session_id: session,
        peer_message: p::PeerMessageInner::Sdp(p::SdpMessage::Offer { sdp: "v=0".into() }),
    };
    assert_eq!(
        errors(&hub.handle("viewer", IncomingMessage::Peer(offer))).len(),
        1
    );
}
