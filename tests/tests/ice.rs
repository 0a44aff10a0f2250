//! ICE as a browser does it: Chromium nominates (USE-CANDIDATE) on its very first
//! connectivity check, from an address onaird has never heard of (a browser keeps its own
//! addresses out of the offer). onaird must answer that very check once its own check back has
//! succeeded, not leave the browser to repeat it ~50 ms later
//! (daemon/src/webrtc/nomination.rs).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use onair_tests::daemon::{Daemon, agent};
use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, TransactionId};
use rtc::stun::textattrs::Username;
use rtc::stun::xoraddr::XorMappedAddress;

const UFRAG: &str = "onairtst";
const PWD: &str = "onair-test-password-0123";

/// A browser-like offer: recvonly H.264, no candidates of its own.
fn offer() -> String {
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 102",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        &format!("a=ice-ufrag:{UFRAG}"),
        &format!("a=ice-pwd:{PWD}"),
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 2E:1B:29:4B:8C:3D:77:10:5A:C2:6F:49:9E:0D:A1:B3:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33",
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:102 H264/90000",
        "a=rtcp-fb:102 nack",
        "a=rtcp-fb:102 nack pli",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "",
    ]
    .join("\r\n")
}

/// The answer's ICE credentials and its first UDP candidate.
fn ice_of(answer: &str) -> (String, String, SocketAddr) {
    let value = |key: &str| {
        answer
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the answer:\n{answer}"))
            .to_owned()
    };
    let candidate = answer
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[2].eq_ignore_ascii_case("udp"))
        .unwrap_or_else(|| panic!("no UDP candidate in the answer:\n{answer}"));
    let addr = format!("{}:{}", candidate[4], candidate[5])
        .parse()
        .unwrap();
    (value("a=ice-ufrag:"), value("a=ice-pwd:"), addr)
}

fn build(setters: Vec<Box<dyn Setter + '_>>) -> Message {
    let mut m = Message::new();
    m.build(&setters).expect("a STUN message");
    m
}

#[test]
fn a_first_check_that_nominates_is_answered_without_being_repeated() {
    let daemon = Daemon::start("[video]\nwidth = 320\nheight = 240\nfps = 15\n").unwrap();
    let mut response = agent()
        .post(&format!("{}/whep", daemon.base_url))
        .header("content-type", "application/sdp")
        .send(offer())
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let answer = response.body_mut().read_to_string().unwrap();
    let (their_ufrag, their_pwd, onaird) = ice_of(&answer);

    let provider = rtc::crypto::default_provider().unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    // One check, nominating at once, as Chromium's first one does. Never repeated.
    let check = build(vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(
            ATTR_USERNAME,
            format!("{their_ufrag}:{UFRAG}"),
        )),
        Box::new(AttrControlling(0x0123_4567_89ab_cdef)),
        Box::new(PriorityAttr(1_853_817_087)),
        Box::new(UseCandidateAttr),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            their_pwd,
            provider.crypto(),
        )),
        Box::new(FINGERPRINT),
    ]);
    socket.send_to(&check.raw, onaird).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut checks_answered = 0;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let mut m = Message::new();
        if m.unmarshal_binary(&buf[..n]).is_err() {
            continue;
        }
        if m.typ == BINDING_REQUEST {
            // onaird's own (triggered) check back to us: answer it, as a browser does.
            let reply = build(vec![
                Box::new(m.clone()),
                Box::new(BINDING_SUCCESS),
                Box::new(XorMappedAddress {
                    ip: from.ip(),
                    port: from.port(),
                }),
                Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                    PWD.to_owned(),
                    provider.crypto(),
                )),
                Box::new(FINGERPRINT),
            ]);
            socket.send_to(&reply.raw, from).unwrap();
            checks_answered += 1;
        } else if m.typ == BINDING_SUCCESS && m.transaction_id == check.transaction_id {
            eprintln!(
                "our one nominating check was answered after we answered {checks_answered} of onaird's"
            );
            return;
        }
    }
    panic!(
        "onaird never answered our one nominating check (we answered {checks_answered} checks of its own); \
         a browser would have had to repeat it"
    );
}
