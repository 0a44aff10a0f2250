//! TURN and STUN, with Debian's coturn on loopback:
//! - a viewer that may only use relay candidates plays through it, while the camera needs
//!   no TURN configuration of its own;
//! - a camera with the TURN server in `[webrtc] ice_servers` offers it to viewers and
//!   allocates nothing itself (its one port would get one allocation, not one per viewer):
//!   two relay-only viewers with those credentials play at once;
//! - a camera with a STUN server there learns its public address through its one port (the
//!   STUN request leaves from it, coturn answers the port's address).
//!
//! Each relay test proves the relay carried the video from what coturn logs when the allocations
//! close: the bytes it relayed cover all the video the viewer received.

use std::time::Duration;

use onair_tests::daemon::{Daemon, agent};
use onair_tests::picture::bars_match;
use onair_tests::turn::{Coturn, Relaying, Usage, VIEWER};
use onair_tests::viewer::{Network, Report, Via, Viewer, Watch};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n";
/// Pictures the viewer must decode.
const FRAMES: usize = 100;
/// Colour tolerance per channel after H.264 at the default bitrate.
const TOLERANCE: u8 = 24;
/// How long coturn may take to log a closed allocation's usage.
const USAGE_WITHIN: Duration = Duration::from_secs(10);
/// The camera's account on coturn.
const CAMERA: &str = "camera";

/// What a person would see: moving pictures of the test pattern, and sound.
fn check_pictures(report: &Report) {
    assert!(report.frames_decoded >= FRAMES, "{report:?}");
    let last = report.last.as_ref().expect("a decoded picture");
    assert!(bars_match(&last.bars, TOLERANCE), "bars {:?}", last.bars);
    let (first, last) = (
        (report.first.as_ref())
            .and_then(|p| p.stamp)
            .expect("stamp in the first picture"),
        last.stamp.expect("stamp in the last picture"),
    );
    assert!(last.sequence > first.sequence, "{first:?} → {last:?}");
    assert!(report.audio_frames > 0, "no audio: {report:?}");
}

/// Joins `daemon` over WHEP through `coturn` with relay candidates only, watches
/// [`FRAMES`] pictures, leaves, and returns what the viewer saw.
async fn watch_through(coturn: &Coturn, daemon: &Daemon) -> Report {
    let how = Watch::decoding(FRAMES, Duration::from_secs(60));
    let via = Via::Whep(format!("{}/whep", daemon.base_url));
    let relay = Network::Relay(coturn.turn(VIEWER));
    let viewer = Viewer::join_over(via, how, relay).await.unwrap();
    viewer.wait_for(FRAMES, how.within).await;
    let report = viewer.leave().await.unwrap();
    check_pictures(&report);
    assert_eq!(report.delete_status, 200, "{report:?}");
    report
}

/// What went through `user`'s allocations, once they are closed.
fn usage(coturn: &Coturn, user: &str) -> Usage {
    let usage = tokio::task::block_in_place(|| coturn.usage_of(user, USAGE_WITHIN));
    usage.unwrap_or_else(|| {
        panic!(
            "coturn logged no closed allocation of {user} within {USAGE_WITHIN:?}:\n{}",
            coturn.log().join("\n")
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_viewer_plays_through_coturn() {
    let coturn = Coturn::start().unwrap();
    let daemon = Daemon::start(SMALL).unwrap();
    let report = watch_through(&coturn, &daemon).await;

    // Everything the viewer got came to its relayed address from the camera and on to the
    // viewer (SRTP and TURN framing only add bytes).
    let viewer = usage(&coturn, VIEWER);
    assert!(
        viewer.from_peers >= report.video_bytes && viewer.to_client >= report.video_bytes,
        "the viewer got {} bytes of video, coturn relayed {viewer:?}",
        report.video_bytes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relay_only_viewers_play_at_once_with_the_turn_server_the_camera_offers() {
    let coturn = Coturn::start_with(Relaying {
        relay_ip: "127.0.0.1".parse().unwrap(),
        denied_peers: vec![],
        users: vec![VIEWER, CAMERA],
    })
    .unwrap();
    let turn = coturn.turn(CAMERA);
    let daemon = Daemon::start(&format!(
        "{SMALL}[[webrtc.ice_servers]]\nurls = [\"{}\"]\nusername = \"{}\"\ncredential = \"{}\"\n",
        turn.url, turn.username, turn.credential
    ))
    .unwrap();

    // The camera's answer names the server for the viewer and has no relay candidate.
    let mut response = agent()
        .post(&format!("{}/whep", daemon.base_url))
        .header("content-type", "application/sdp")
        .send(onair_tests::viewer::plain_offer().await.unwrap())
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let link = response
        .headers()
        .get("link")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(link.starts_with(&format!("<{}>", turn.url)), "Link: {link}");
    let answer = response.body_mut().read_to_string().unwrap();
    assert!(!answer.contains(" typ relay"), "{answer}");

    // Two viewers with those credentials, relay candidates only, at once.
    let how = Watch::decoding(FRAMES, Duration::from_secs(60));
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let via = Via::Whep(format!("{}/whep", daemon.base_url));
        let relay = Network::Relay(turn.clone());
        viewers.push(Viewer::join_over(via, how, relay).await.unwrap());
    }
    let mut video_bytes = 0;
    for viewer in viewers {
        viewer.wait_for(FRAMES, how.within).await;
        let report = viewer.leave().await.unwrap();
        check_pictures(&report);
        video_bytes += report.video_bytes;
    }
    // Both viewers' video went through their allocations.
    let relayed = usage(&coturn, CAMERA);
    assert!(
        relayed.from_peers >= video_bytes && relayed.to_client >= video_bytes,
        "the viewers got {video_bytes} bytes of video, coturn relayed {relayed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_camera_learns_its_public_address_from_stun_through_its_one_port() {
    let coturn = Coturn::start().unwrap();
    let stun = coturn
        .turn(VIEWER)
        .url
        .replacen("turn:", "stun:", 1)
        .replace("?transport=udp", "");
    let daemon = Daemon::start(&format!(
        "{SMALL}[[webrtc.ice_servers]]\nurls = [\"{stun}\"]\n"
    ))
    .unwrap();
    let mut response = agent()
        .post(&format!("{}/whep", daemon.base_url))
        .header("content-type", "application/sdp")
        .send(onair_tests::viewer::plain_offer().await.unwrap())
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let answer = response.body_mut().read_to_string().unwrap();
    // "candidate:F 1 udp PRIO 127.0.0.1 PORT typ host|srflx …": the port of each type.
    let port_of = |kind: &str| {
        answer
            .lines()
            .filter(|l| l.contains(" udp ") && l.contains(&format!(" typ {kind}")))
            .find_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
    };
    let (host, srflx) = (port_of("host"), port_of("srflx"));
    assert!(srflx.is_some(), "no server-reflexive candidate:\n{answer}");
    // The STUN server saw the request come from the one port.
    assert_eq!(srflx, host, "{answer}");
}
