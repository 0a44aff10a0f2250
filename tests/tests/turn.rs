//! TURN (issue 12), with Debian's coturn on loopback:
//! - a viewer that may only use relay candidates plays through it, while the camera needs
//!   no TURN configuration of its own;
//! - a camera with the TURN server in `[webrtc] ice_servers` offers a relay candidate of its
//!   own (its TURN client works through the one UDP port), and a viewer that can reach the
//!   camera only through that candidate plays.
//!
//! Each test proves the relay carried the video from what coturn logs when the allocations
//! close: the bytes it relayed cover all the video the viewer received.

use std::time::Duration;

use onair_tests::daemon::Daemon;
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
async fn a_viewer_that_reaches_the_camera_only_through_its_relay_candidate_plays() {
    // Relayed addresses on 127.0.0.2, and no relaying to 127.0.0.1 where the camera's host
    // candidates are: the viewer's relay can reach the camera's relay, nothing else.
    let coturn = Coturn::start_with(Relaying {
        relay_ip: "127.0.0.2".parse().unwrap(),
        denied_peers: vec!["127.0.0.1".parse().unwrap()],
        users: vec![VIEWER, CAMERA],
    })
    .unwrap();
    let camera = coturn.turn(CAMERA);
    let daemon = Daemon::start(&format!(
        "{SMALL}[[webrtc.ice_servers]]\nurls = [\"{}\"]\nusername = \"{}\"\ncredential = \"{}\"\n",
        camera.url, camera.username, camera.credential
    ))
    .unwrap();
    let report = watch_through(&coturn, &daemon).await;

    // The camera sent the video into its own allocation, the viewer got it from its own.
    let (camera, viewer) = (usage(&coturn, CAMERA), usage(&coturn, VIEWER));
    assert!(
        camera.from_client >= report.video_bytes && viewer.to_client >= report.video_bytes,
        "the viewer got {} bytes of video; the camera's allocation carried {camera:?}, \
         the viewer's {viewer:?}",
        report.video_bytes
    );
}
