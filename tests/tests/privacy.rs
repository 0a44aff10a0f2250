//! Privacy (`PUT /api/privacy`, the same switch as the GPIO button's): nobody is shown a
//! picture from before it, on either layer, however soon they join; snapshots are black; only
//! an operator switches it.

use std::time::{Duration, Instant};

use onair_tests::daemon::{Daemon, agent, get};
use onair_tests::link::{Link, Shape};
use onair_tests::picture::bars_match;
use onair_tests::viewer::{Network, Via, Viewer, Watch, watch};

use onair_tests::daemon::OPERATOR;

/// `PUT /api/privacy` with `body`, presenting `token`: (status, body).
fn put(base: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut request = agent()
        .put(&format!("{base}/api/privacy"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", &format!("Bearer {token}"));
    }
    let mut response = request.send(body).unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// Whether `/snapshot.jpg` is black (or refused): every pixel at most 20 of 255.
fn snapshot_is_black(base: &str) -> bool {
    let mut response = agent().get(&format!("{base}/snapshot.jpg")).call().unwrap();
    if response.status().as_u16() == 503 {
        return true;
    }
    assert_eq!(response.status().as_u16(), 200);
    let jpeg = response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .unwrap();
    let rgb = zune_jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg))
        .decode()
        .expect("a JPEG");
    let brightest = rgb.iter().copied().max().unwrap_or(0);
    eprintln!("snapshot: brightest channel {brightest}");
    brightest <= 20
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_just_after_privacy_is_switched_on_sees_only_black() {
    // No periodic IDR, 15 pictures a second: the kept GOP holds the camera's pictures since
    // the last IDR for up to 6 s (90 pictures).
    let daemon = Daemon::start(&format!(
        "[video]\nwidth = 640\nheight = 480\nfps = 15\nkeyframe_interval_ms = 60000\n\
         [access]\noperator_token = \"{OPERATOR}\"\n"
    ))
    .unwrap();
    let base = daemon.base_url.clone();
    let whep = format!("{base}/whep");
    // A viewer watches and asks for an IDR at its 20th picture: the GOP starts afresh with
    // the camera's picture just before the switch.
    let watching = Viewer::join(
        Via::Whep(whep.clone()),
        Watch {
            pli_at_frame: Some(20),
            ..Watch::decoding(usize::MAX, Duration::from_secs(180))
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !watching.report().keyframe_at.iter().any(|&at| at >= 20) {
        assert!(
            Instant::now() < deadline,
            "no IDR for the PLI: {:?}",
            watching.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = watching.report();
    assert!(seen.not_black > 0, "{seen:?}");
    assert!(!snapshot_is_black(&base), "the camera's picture before");

    // Only an operator switches it.
    let (status, body) = put(&base, r#"{"on": true}"#, None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("access.operator_token"), "{body}");
    assert_eq!(put(&base, r#"{"on": 1}"#, Some(OPERATOR)).0, 400);
    let (status, body) = put(&base, r#"{"on": true}"#, Some(OPERATOR));
    assert_eq!((status, body.trim()), (200, r#"{"on":true}"#));
    let switched = Instant::now();
    // The snapshot made a moment ago (snapshots are kept for a second) is not served again.
    assert!(snapshot_is_black(&base));
    assert_eq!(
        get(&format!("{base}/api/privacy")).unwrap().1,
        r#"{"on":true}"#
    );
    let status: serde_json::Value =
        serde_json::from_str(&get(&format!("{base}/api/status")).unwrap().1).unwrap();
    assert_eq!(status["privacy"], true);

    // 0.1 s later a new viewer joins: every picture it decodes is black, the first included.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let joined = watch(&whep, Watch::decoding(30, Duration::from_secs(60)))
        .await
        .unwrap();
    eprintln!(
        "joined {:?} after the switch: {} pictures, {} not black",
        switched.elapsed(),
        joined.frames_decoded,
        joined.not_black
    );
    assert!(joined.frames_decoded >= 30, "{joined:?}");
    assert_eq!(joined.not_black, 0, "{joined:?}");
    // The viewer who watched all along sees black too, and its connection stays.
    let before = watching.report();
    let after = watching
        .wait_for(before.frames_decoded + 30, Duration::from_secs(60))
        .await;
    assert!(
        after.frames_decoded >= before.frames_decoded + 30,
        "{after:?}"
    );
    assert!(
        after.last.as_ref().is_some_and(|p| p.is_black()),
        "{after:?}"
    );

    // Off: a new viewer decodes the camera's colour bars again.
    let (status, body) = put(&base, r#"{"on": false}"#, Some(OPERATOR));
    assert_eq!((status, body.trim()), (200, r#"{"on":false}"#));
    let again = watch(&whep, Watch::decoding(30, Duration::from_secs(60)))
        .await
        .unwrap();
    let last = again.last.as_ref().expect("a picture");
    assert!(bars_match(&last.bars, 24), "{again:?}");
    assert!(!snapshot_is_black(&base));
    let _ = watching.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_the_low_layer_sees_black_from_the_switch_on() {
    // A viewer behind 600 kb/s watches the default stream on its 640x360 layer; privacy
    // comes on: from then on it decodes only black there.
    let daemon = Daemon::start(&format!("[access]\noperator_token = \"{OPERATOR}\"\n")).unwrap();
    let base = daemon.base_url.clone();
    let link = Link::start(([127, 0, 0, 1], daemon.media_port).into(), Shape::kbps(600))
        .await
        .unwrap();
    let narrow = Viewer::join_over(
        Via::Whep(format!("{base}/whep")),
        Watch::decoding(usize::MAX, Duration::from_secs(180)),
        Network::Link(link.addr()),
    )
    .await
    .unwrap();
    let low = |v: &Viewer| {
        v.report()
            .last
            .as_ref()
            .is_some_and(|p| (p.width, p.height) == (640, 360))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !low(&narrow) {
        assert!(
            Instant::now() < deadline,
            "not on the low layer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = narrow.report();
    assert!(before.not_black > 0, "{before:?}");
    assert_eq!(put(&base, r#"{"on": true}"#, Some(OPERATOR)).0, 200);
    // What was on its way when the switch came is decoded within a moment; after that,
    // nothing but black.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cut = narrow.report();
    let after = narrow
        .wait_for(cut.frames_decoded + 30, Duration::from_secs(60))
        .await;
    eprintln!(
        "low layer: {} pictures after the switch, {} not black; the last {}x{}",
        after.frames_decoded - cut.frames_decoded,
        after.not_black - cut.not_black,
        after.last.as_ref().map_or(0, |p| p.width),
        after.last.as_ref().map_or(0, |p| p.height),
    );
    assert!(after.frames_decoded >= cut.frames_decoded + 30, "{after:?}");
    assert_eq!(after.not_black, cut.not_black, "{after:?}");
    assert!(low(&narrow), "{after:?}");
    let _ = narrow.leave().await;
}
