//! TURN (issue 12): a viewer that may only use relay candidates plays through a TURN server
//! (Debian's coturn, on loopback); the camera needs no TURN configuration of its own.

use std::time::Duration;

use onair_tests::daemon::Daemon;
use onair_tests::picture::bars_match;
use onair_tests::turn::Coturn;
use onair_tests::viewer::{Network, Report, Via, Viewer, Watch};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n";
/// Pictures the viewer must decode.
const FRAMES: usize = 100;
/// Colour tolerance per channel after H.264 at the default bitrate.
const TOLERANCE: u8 = 24;
/// How long coturn may take to log a closed allocation's usage.
const USAGE_WITHIN: Duration = Duration::from_secs(10);

/// What a person would see: moving pictures of the test pattern, and sound.
fn check_pictures(report: &Report) {
    assert!(report.frames_decoded >= FRAMES, "{report:?}");
    let (first, last) = (report.first.as_ref(), report.last.as_ref());
    let last = last.expect("a decoded picture");
    assert!(bars_match(&last.bars, TOLERANCE), "bars {:?}", last.bars);
    let (first, last) = (
        first
            .and_then(|p| p.stamp)
            .expect("stamp in the first picture"),
        last.stamp.expect("stamp in the last picture"),
    );
    assert!(last.sequence > first.sequence, "{first:?} → {last:?}");
    assert!(report.audio_frames > 0, "no audio: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_viewer_plays_through_coturn() {
    let coturn = Coturn::start().unwrap();
    let daemon = Daemon::start(SMALL).unwrap();
    let how = Watch::decoding(FRAMES, Duration::from_secs(60));
    let via = Via::Whep(format!("{}/whep", daemon.base_url));
    let relay = Network::Relay(coturn.turn.clone());
    let viewer = Viewer::join_over(via, how, relay).await.unwrap();
    viewer.wait_for(FRAMES, how.within).await;
    let report = viewer.leave().await.unwrap();
    check_pictures(&report);
    assert_eq!(report.delete_status, 200, "{report:?}");

    // The viewer closed its allocation; coturn logs what it relayed. All the video the
    // viewer decoded must have come through it (SRTP and TURN framing only add bytes).
    let user = &coturn.turn.username;
    let usage = tokio::task::block_in_place(|| coturn.usage_of(user, USAGE_WITHIN));
    let usage = usage.unwrap_or_else(|| {
        panic!(
            "coturn logged no closed allocation of {user}:\n{}",
            coturn.log().join("\n")
        )
    });
    assert!(
        usage.from_peers_bytes >= report.video_bytes && usage.to_client_bytes >= report.video_bytes,
        "the viewer got {} bytes of video, coturn relayed only {usage:?}",
        report.video_bytes
    );
}
