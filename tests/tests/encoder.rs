//! The encoder a layer uses may fail at run time (a hardware encoder whose device went away):
//! the layer falls back to openh264 and viewers keep decoding, with an IDR and nothing else
//! to notice. The fault is injected with `ONAIR_TEST_ENCODER_FAILS_AFTER`.

use std::time::{Duration, Instant};

use onair_tests::daemon::{Daemon, get};
use onair_tests::viewer::{Via, Viewer, Watch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_that_fails_while_watched_is_replaced_and_the_viewer_keeps_decoding() {
    // 15 pictures a second: the fault comes 20 s after start, long after the viewer joined.
    let pictures = "300";
    let daemon = Daemon::start_with_env(
        "[video]\nwidth = 640\nheight = 480\nfps = 15\n",
        &[("ONAIR_TEST_ENCODER_FAILS_AFTER", pictures.as_ref())],
    )
    .unwrap();
    let whep = format!("{}/whep", daemon.base_url);
    let viewer = Viewer::join(
        Via::Whep(whep),
        Watch::decoding(usize::MAX, Duration::from_secs(240)),
    )
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    let fault = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = daemon
            .log
            .recv_timeout(left)
            .expect("no fallback line within 120 s");
        if line.contains("encoding with openh264 from now on") {
            break line;
        }
    };
    let before = viewer.report();
    eprintln!("{fault}\nbefore the fault: {before:?}");
    assert!(fault.contains("injected fault"), "{fault}");
    assert!(
        before.frames_decoded > 0,
        "the viewer was watching when it failed"
    );

    let after = viewer
        .wait_for(before.frames_decoded + 45, Duration::from_secs(60))
        .await;
    eprintln!("after: {after:?}");
    assert!(
        after.frames_decoded >= before.frames_decoded + 45,
        "{after:?}"
    );
    assert!(!after.connection_ended, "{after:?}");
    let last = after.last.as_ref().expect("a picture");
    assert_eq!((last.width, last.height), (640, 480));
    assert!(
        last.stamp.is_some(),
        "the stamp reads after the fallback: {last:?}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&get(&format!("{}/api/status", daemon.base_url)).unwrap().1).unwrap();
    assert_eq!(status["video"]["encoder"], "openh264", "{status}");
    let detail = status["video"]["encoder_detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("failed: injected fault"), "{status}");
    viewer.leave().await.unwrap();
}
