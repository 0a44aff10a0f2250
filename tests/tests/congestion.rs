//! Viewers on bad links (`onair_tests::link`): each viewer's bandwidth estimate, from its own
//! transport-wide congestion control feedback, and the quality layer it is moved to, as
//! `/api/status` shows them; what the viewers decode meanwhile.

use std::time::{Duration, Instant};

use onair_tests::daemon::{Daemon, operator_access, operator_status};
use onair_tests::link::{Link, Shape};
use onair_tests::viewer::{Network, Via, Viewer, Watch};

/// These tests run one at a time: each encodes the stream and decodes it in its viewers, and
/// on two cores a bottleneck test must not measure its neighbour's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The session id of `viewer` (the end of its WHEP resource URL).
fn id_of(viewer: &Viewer) -> String {
    let url = viewer.session_url().expect("a WHEP viewer");
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// `/api/status` as the operator sees it (with the sessions).
fn status(daemon: &Daemon) -> serde_json::Value {
    operator_status(&daemon.base_url).unwrap()
}

/// The daemon, with an operator token (to read the sessions' figures) and `config` before it.
fn start(config: &str) -> Daemon {
    Daemon::start(&format!("{config}{}", operator_access())).unwrap()
}

/// `/api/status`'s entry for session `id`.
fn peer(daemon: &Daemon, id: &str) -> serde_json::Value {
    let status = status(daemon);
    let peers = status["peers"].as_array().expect("peers in /api/status");
    peers
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no peer {id} in {status}"))
}

/// The default stream (1280x720, 2000 kb/s, two layers) and a link of `kbps` to it.
async fn default_stream_behind(kbps: u64) -> (Daemon, Link) {
    let daemon =
        start("[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n");
    let link = Link::start(
        ([127, 0, 0, 1], daemon.media_port).into(),
        Shape::kbps(kbps),
    )
    .await
    .unwrap();
    (daemon, link)
}

/// aiortc (`whep_client.py`, receiver reports and NACKs, no TWCC) watching `daemon` through
/// `link` with `args`; its JSON result.
fn aiortc(
    daemon: &Daemon,
    link: &Link,
    args: &[&str],
) -> tokio::task::JoinHandle<anyhow::Result<serde_json::Value>> {
    let mut command = std::process::Command::new(onair_tests::metrics::whep_python().unwrap());
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/whep/whep_client.py"))
        .arg(format!("{}/whep", daemon.base_url))
        .args(["--relay", &link.addr().to_string(), "--json"])
        .args(args);
    tokio::task::spawn_blocking(move || {
        onair_tests::bench::latency::run_json(command, Duration::from_secs(120))
    })
}

/// The link dropped packets: it was a bottleneck, and the viewer did not go round it.
fn assert_dropped(link: &Link) {
    let dropped = link
        .counters()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        dropped > 0,
        "the link dropped nothing: no bottleneck, or the viewer went round it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_behind_a_narrow_link_is_estimated_below_it_and_one_beside_it_is_not() {
    let _one = ONE_AT_A_TIME.lock().await;
    // 1000 kb/s of video; one viewer behind 400 kb/s.
    let daemon = start(
        "[video]\nwidth = 640\nheight = 480\nbitrate_kbps = 1000\n[audio]\nenabled = false\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n",
    );
    let whep = format!("{}/whep", daemon.base_url);
    let link = Link::start(([127, 0, 0, 1], daemon.media_port).into(), Shape::kbps(400))
        .await
        .unwrap();
    let how = Watch::decoding(100_000, Duration::from_secs(60));
    let free = Viewer::join(Via::Whep(whep.clone()), how).await.unwrap();
    let narrow = Viewer::join_over(Via::Whep(whep), how, Network::Link(link.addr()))
        .await
        .unwrap();
    let (free_id, narrow_id) = (id_of(&free), id_of(&narrow));

    // Soon the narrow viewer's estimate is below its link (about 1 s on a quiet machine; the
    // limit is for a loaded one).
    let joined = Instant::now();
    let below = loop {
        let entry = peer(&daemon, &narrow_id);
        if entry["estimate_kbps"]
            .as_f64()
            .is_some_and(|kbps| kbps < 400.0)
        {
            break entry;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(30),
            "no estimate below the link's 400 kb/s within 30 s: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("narrow viewer after {:?}: {below}", joined.elapsed());

    // The free one, beside it, is estimated at the stream's rate or more and keeps decoding
    // (30 pictures a second on a quiet machine; a loaded one encodes fewer, and a stalled
    // viewer would get none).
    let before = free.frames();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pictures = free.frames() - before;
    let entry = peer(&daemon, &free_id);
    eprintln!("free viewer: {pictures} pictures in 5 s, {entry}");
    let estimate = entry["estimate_kbps"].as_f64().expect("an estimate");
    assert!(estimate >= 1000.0, "{entry}");
    assert_eq!(entry["estimate_from"], "twcc");
    assert!(pictures >= 50, "{pictures} pictures in 5 s");
    assert_eq!(entry["state"], "connected");
    // The link really was the bottleneck.
    let dropped = link
        .counters()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped > 0, "the link dropped nothing");
    let _ = free.leave().await;
    let _ = narrow.leave().await;
}

/// Polls `/api/status` every 250 ms until session `id` is on `layer`, at most `within`;
/// how long it took. Every poll also checks `steady` (another session) is on the top layer.
async fn wait_for_layer(
    daemon: &Daemon,
    id: &str,
    layer: u64,
    within: Duration,
    steady: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let entry = peer(daemon, id);
        let other = peer(daemon, steady);
        assert_eq!(
            other["layer"], 0,
            "the free viewer left the top layer: {other}"
        );
        if entry["layer"] == layer {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not on layer {layer} within {within:?}: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_behind_600_kbps_moves_to_the_low_layer_and_back_while_one_beside_it_stays_on_top()
{
    let _one = ONE_AT_A_TIME.lock().await;
    // The default stream (1280x720, 2000 kb/s; its low layer 640x360 at 400 kb/s), without
    // periodic IDRs: every IDR the free viewer gets is one somebody caused.
    let daemon = start(
        "[video]\nkeyframe_interval_ms = 60000\n[audio]\nenabled = false\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n",
    );
    let whep = format!("{}/whep", daemon.base_url);
    let link = Link::start(([127, 0, 0, 1], daemon.media_port).into(), Shape::kbps(600))
        .await
        .unwrap();
    let how = Watch::decoding(100_000, Duration::from_secs(90));
    let free = Viewer::join(Via::Whep(whep.clone()), how).await.unwrap();
    let narrow = Viewer::join_over(Via::Whep(whep), how, Network::Link(link.addr()))
        .await
        .unwrap();
    let (free_id, narrow_id) = (id_of(&free), id_of(&narrow));

    let down = wait_for_layer(&daemon, &narrow_id, 1, Duration::from_secs(30), &free_id).await;
    eprintln!("narrow viewer on the low layer after {down:?}");
    // On the low layer it plays: 15 pictures a second or more over 5 s on a quiet machine
    // (about 1 a second without congestion control); 8 or more on a loaded one.
    let before = narrow.frames();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let limited = narrow.frames() - before;
    let r = narrow.report();
    eprintln!(
        "narrow viewer, limited: {limited} pictures in 5 s ({} IDRs, {} partial, {} skipped at the start, {} errors): {}",
        r.keyframes,
        r.partial_keyframes,
        r.start_skipped,
        r.decode_errors,
        peer(&daemon, &narrow_id)
    );
    assert!(limited >= 40, "{limited} pictures in 5 s on the low layer");

    link.reshape(Shape::free());
    let up = wait_for_layer(&daemon, &narrow_id, 0, Duration::from_secs(40), &free_id).await;
    eprintln!("narrow viewer back on the top layer {up:?} after the limit was lifted");
    let report = narrow
        .wait_for(narrow.frames() + 30, Duration::from_secs(60))
        .await;
    let last = report.last.as_ref().expect("a picture");
    assert_eq!(
        (last.width, last.height),
        (1280, 720),
        "back at the top layer's size"
    );

    // The free viewer: its own IDR to start from, at most one a second from the other's
    // requests while it was still on the top layer, and the other's move back up; none for
    // what the other asked on the low layer.
    let free_report = free.report();
    let allowed = 2 + down.as_secs_f64().ceil() as usize;
    eprintln!(
        "free viewer: IDRs at {:?} of {} pictures ({allowed} allowed)",
        free_report.keyframe_at, free_report.frames_decoded
    );
    assert!(
        free_report.keyframes <= allowed,
        "IDRs at {:?}",
        free_report.keyframe_at
    );
    assert_eq!(free_report.decode_errors, 0);
    let _ = free.leave().await;
    let _ = narrow.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_behind_1_mbps_keeps_playing_the_default_stream_with_little_delay() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The default stream (1280x720, 2000 kb/s) through a 1 Mbit/s bottleneck with a 400 ms
    // queue: Chromium is moved to the low layer and plays on. On a quiet machine it presents
    // 23 pictures a second with a glass-to-glass p95 of about 200 ms (docs/PERFORMANCE.md);
    // without congestion control, 1-1.4 a second at a p95 of 1.35 s. The bounds tell the two
    // apart on a loaded machine too.
    let (daemon, link) = default_stream_behind(1000).await;
    let mut command = std::process::Command::new("node");
    command
        .arg(onair_tests::bench::latency::tests_dir().join("browser/latency.mjs"))
        .args(["--whep", &format!("{}/whep", daemon.base_url)])
        .args(["--width", "1280", "--height", "720", "--seconds", "20"])
        .args(["--joins", "0", "--relay", &link.addr().to_string()]);
    let measured = tokio::task::spawn_blocking(move || {
        onair_tests::bench::latency::run_json(command, Duration::from_secs(90))
    })
    .await
    .unwrap()
    .unwrap();
    let glass = &measured["glass"];
    eprintln!("Chromium through 1 Mbit/s: {glass}");
    let fps = glass["fps"].as_f64().expect("frames presented");
    let p95 = glass["display"]["p95"].as_f64().expect("stamps read");
    assert!(fps >= 8.0, "{fps} pictures a second");
    assert!(p95 <= 900.0, "glass-to-glass p95 {p95} ms");
    assert!(glass["measured"].as_u64().unwrap_or(0) >= 300, "{glass}");
    assert_dropped(&link);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_losing_15_percent_of_packets_gets_video_resent_and_audio_with_fec() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The test tone and 1000 kb/s of video through a link that loses 15 % of what the camera
    // sends, at random.
    let daemon = start(
        "[video]\nwidth = 640\nheight = 480\nbitrate_kbps = 1000\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n",
    );
    let link = Link::start(
        ([127, 0, 0, 1], daemon.media_port).into(),
        Shape::lossy(0.15),
    )
    .await
    .unwrap();
    // Its jitter buffer waits 300 ms for resends (a NACK goes out within 100 ms of a gap).
    let how = Watch {
        jitter_buffer: Some(Duration::from_millis(300)),
        ..Watch::decoding(100_000, Duration::from_secs(60))
    };
    let viewer = Viewer::join_over(
        Via::Whep(format!("{}/whep", daemon.base_url)),
        how,
        Network::Link(link.addr()),
    )
    .await
    .unwrap();
    let id = id_of(&viewer);

    // Once its receiver reports have been heard, 5 s of watching.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = viewer.report();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = viewer.report();
    let entry = peer(&daemon, &id);
    let overall = status(&daemon);
    let pictures = during.frames_decoded - before.frames_decoded;
    let audio = during.audio_frames - before.audio_frames;
    let with_fec = during.audio_fec_packets - before.audio_fec_packets;
    eprintln!(
        "15 % lost: {pictures} pictures in 5 s ({} decode errors); {audio} audio packets, \
         {with_fec} with FEC, {} lost, {} restored; FEC for {} %; {entry}",
        during.decode_errors - before.decode_errors,
        during.audio_lost - before.audio_lost,
        during.audio_recovered - before.audio_recovered,
        overall["audio_fec_loss_percent"]
    );
    // Lost video packets were sent again: the picture goes on.
    assert!(entry["nacks"].as_u64().unwrap_or(0) > 0, "{entry}");
    assert!(entry["retransmitted"].as_u64().unwrap_or(0) > 0, "{entry}");
    // 20 a second or more on a quiet machine; a stalled picture would give none.
    assert!(pictures >= 50, "{pictures} pictures in 5 s");
    // Audio carries the frame before in most packets, and lost frames came back from it.
    assert!(
        overall["audio_fec_loss_percent"].as_u64().unwrap_or(0) >= 5,
        "{overall}"
    );
    assert!(
        with_fec * 2 >= audio,
        "{with_fec} of {audio} packets with FEC"
    );
    assert!(during.audio_recovered > 0, "no lost audio frame restored");

    // The loss ends: the encoder soon stops adding FEC (the figure halves with each report).
    link.reshape(Shape::free());
    let lifted = Instant::now();
    while status(&daemon)["audio_fec_loss_percent"] != 0 {
        assert!(
            lifted.elapsed() < Duration::from_secs(30),
            "FEC still on 30 s after the loss ended: {}",
            status(&daemon)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("FEC off {:?} after the loss ended", lifted.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = viewer.report();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = viewer.report();
    let with_fec = after.audio_fec_packets - before.audio_fec_packets;
    assert_eq!(with_fec, 0, "packets with FEC after the loss ended");
    let _ = viewer.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_which_sends_no_twcc_is_moved_to_the_low_layer_by_its_receiver_reports() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The default stream through 600 kb/s to aiortc (receiver reports, NACKs and PLIs, no
    // TWCC feedback): its estimate comes from the loss it reports. (With sound: aiortc
    // refuses an answer whose audio section is rejected.)
    let (daemon, link) = default_stream_behind(600).await;
    let aiortc = aiortc(&daemon, &link, &["--watch", "25", "--frames", "150"]);

    // On the low layer soon after joining (a few seconds on a quiet machine).
    let start = Instant::now();
    let moved = loop {
        let overall = status(&daemon);
        let entry = overall["peers"].get(0).cloned().unwrap_or_default();
        if entry["layer"] == 1 {
            break entry;
        }
        if aiortc.is_finished() || start.elapsed() > Duration::from_secs(30) {
            let result = aiortc.await.unwrap();
            panic!("aiortc not on the low layer within 30 s: {overall}; aiortc: {result:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "aiortc on the low layer after {:?}: {moved}",
        start.elapsed()
    );
    assert!(moved["estimate_kbps"].as_f64().unwrap_or(f64::MAX) < 1600.0);
    assert_eq!(moved["estimate_from"], "receiver reports");

    // And there it plays: most of its 25 s are 640x360 pictures. (Without loss its estimate
    // climbs again and it may try the top layer near the end, so the last picture is not
    // asked to be small.)
    let result = aiortc.await.unwrap().unwrap();
    let viewer = &result["viewers"][0];
    eprintln!("aiortc: {viewer}");
    assert_eq!(viewer["errors"], serde_json::json!([]), "{viewer}");
    let low = viewer["frames_by_size"]["640x360"].as_u64().unwrap_or(0);
    let all = viewer["frames"].as_u64().unwrap_or(0);
    assert!(
        low >= 300 && low * 2 > all,
        "{low} of {all} pictures 640x360 in 25 s"
    );
    assert_dropped(&link);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_which_sends_no_twcc_behind_1_mbps_sees_pictures_a_few_hundred_ms_old() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The default stream (1280x720, 2000 kb/s) through 1 Mbit/s with a 400 ms drop-tail queue
    // to aiortc, whose estimate comes from its receiver reports alone. Every decoded picture's
    // stamp is read: glass-to-glass, after its first 2 s.
    let (daemon, link) = default_stream_behind(1000).await;
    let aiortc = aiortc(
        &daemon,
        &link,
        &["--watch", "30", "--frames", "150", "--glass", "1280x720"],
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let during = peer_summary(&daemon);
    let result = aiortc.await.unwrap().unwrap();
    let viewer = &result["viewers"][0];
    let glass = &viewer["glass"];
    eprintln!(
        "aiortc through 1 Mbit/s: {} pictures {}; glass-to-glass {glass}; after 20 s: {during}",
        viewer["frames"], viewer["frames_by_size"],
    );
    assert_eq!(viewer["errors"], serde_json::json!([]), "{viewer}");
    // 8.3 s before a jump in sequence numbers cleared aiortc's jitter buffer at its first
    // IDR after loss (`webrtc::forward::Gaps`); about 60-75 ms since, on a quiet machine.
    let p95 = glass["p95"].as_f64().expect("stamps read");
    assert!(glass["measured"].as_u64().unwrap_or(0) >= 300, "{glass}");
    assert!(p95 <= 400.0, "glass-to-glass p95 {p95} ms: {glass}");
    assert_dropped(&link);
}

/// What `/api/status` says of the sessions, in short.
fn peer_summary(daemon: &Daemon) -> String {
    status(daemon)["peers"].to_string()
}
