//! `/metrics` as a monitoring system sees it: fetched with the viewer token, parsed by the
//! Prometheus project's own parser, following real viewers as they join, watch and leave.

use std::time::Duration;

use onair_tests::daemon::Daemon;
use onair_tests::metrics::{Scrape, fetch, scrape};
use onair_tests::viewer::{Via, Viewer, Watch};

const TOKEN: &str = "viewer-token-0123456789";

/// Every family the README lists, with its type.
const FAMILIES: [(&str, &str); 23] = [
    ("onair_viewers", "gauge"),
    ("onair_sessions", "gauge"),
    ("onair_video_frames_captured", "counter"),
    ("onair_video_frames_encoded", "counter"),
    ("onair_video_frames_dropped", "counter"),
    ("onair_video_encode_duration_seconds", "histogram"),
    ("onair_video_keyframes", "counter"),
    ("onair_audio_frames_encoded", "counter"),
    ("onair_sent_bytes", "counter"),
    ("onair_sent_packets", "counter"),
    ("onair_nacks_received", "counter"),
    ("onair_retransmitted_packets", "counter"),
    ("onair_packets_lost", "counter"),
    ("onair_retransmissions_refused", "counter"),
    ("onair_viewers_by_layer", "gauge"),
    ("onair_audio_fec_loss_ratio", "gauge"),
    ("onair_snapshots_encoded", "counter"),
    ("onair_capture_reopen_attempts", "counter"),
    ("onair_capture_reopens", "counter"),
    ("onair_signaling_connected", "gauge"),
    ("onair_signaling_registered", "gauge"),
    ("process_cpu_seconds", "counter"),
    ("process_resident_memory_bytes", "gauge"),
];

const REASONS: [&str; 9] = [
    "start", "periodic", "join", "pli", "fir", "lag", "switch", "encoder", "privacy",
];

fn scraped(base: &str) -> Scrape {
    scrape(base, Some(TOKEN)).unwrap()
}

fn value(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .value(name, &[])
        .unwrap_or_else(|| panic!("{name} missing from {scrape:#?}"))
}

/// Scrapes until `onair_viewers` reads `viewers`, for 15 s at most; the last scrape.
async fn until_viewers(base: &str, viewers: f64) -> Scrape {
    until(base, |now| value(now, "onair_viewers") == viewers).await
}

/// Scrapes until `done` holds, for 15 s at most; the last scrape.
async fn until(base: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let base = base.to_owned();
        let now = tokio::task::spawn_blocking(move || scraped(&base))
            .await
            .unwrap();
        if done(&now) || tokio::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn join(base: &str) -> Viewer {
    let via = Via::WhepBearer {
        url: format!("{base}/whep"),
        token: TOKEN.into(),
    };
    let viewer = Viewer::join(via, Watch::decoding(usize::MAX, Duration::from_secs(60)))
        .await
        .unwrap();
    let seen = viewer.wait_for(10, Duration::from_secs(60)).await;
    assert!(seen.frames_decoded >= 10, "{seen:?}");
    viewer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_follow_viewers() {
    let daemon = Daemon::start(&format!(
        "[video]\nwidth = 320\nheight = 240\nfps = 15\n[access]\nviewer_token = \"{TOKEN}\"\n"
    ))
    .unwrap();
    let base = daemon.base_url.clone();
    assert_eq!(fetch(&base, None).unwrap().0, 401, "no token");
    assert_eq!(fetch(&base, Some("wrong-token-0123456789")).unwrap().0, 401);

    let idle = until_viewers(&base, 0.0).await;
    for (family, kind) in FAMILIES {
        assert_eq!(idle.kind(family), Some(kind), "{family} in {idle:#?}");
    }
    assert_eq!(value(&idle, "onair_viewers"), 0.0);
    assert_eq!(value(&idle, "onair_sent_bytes_total"), 0.0);
    assert!(value(&idle, "onair_video_frames_encoded_total") > 0.0);
    assert!(value(&idle, "process_resident_memory_bytes") > 0.0);
    assert_eq!(value(&idle, "onair_signaling_registered"), 1.0);
    keyframes_by_reason(&idle);

    let first = join(&base).await;
    let one = until_viewers(&base, 1.0).await;
    assert_eq!(value(&one, "onair_viewers"), 1.0);
    assert_eq!(
        one.value("onair_sessions", &[("state", "connected")]),
        Some(1.0)
    );
    assert!(value(&one, "onair_sent_bytes_total") > 0.0, "{one:#?}");
    assert!(value(&one, "onair_sent_packets_total") > 0.0);

    let second = join(&base).await;
    let two = until_viewers(&base, 2.0).await;
    assert_eq!(value(&two, "onair_viewers"), 2.0);
    // Bytes sent grow while the viewers watch.
    let more = second.report().frames_decoded + 15;
    second.wait_for(more, Duration::from_secs(60)).await;
    let watched = until_viewers(&base, 2.0).await;
    assert!(
        value(&watched, "onair_sent_bytes_total") > value(&two, "onair_sent_bytes_total"),
        "{two:#?}\n{watched:#?}"
    );
    assert!(value(&watched, "onair_sent_bytes_total") > value(&one, "onair_sent_bytes_total"));
    // The viewers' receiver reports (about one a second) and ICE checks give their links.
    let links = until(&base, |now| {
        now.value("onair_viewer_fraction_lost_max_ratio", &[])
            .is_some()
            && now.value("onair_viewer_rtt_max_seconds", &[]).is_some()
    })
    .await;
    let lost = value(&links, "onair_viewer_fraction_lost_max_ratio");
    assert!((0.0..=1.0).contains(&lost), "{links:#?}");
    assert!(value(&links, "onair_viewer_rtt_max_seconds") > 0.0);
    // Their TWCC feedback gives estimates; both are on the top layer.
    let estimated = until(&base, |now| {
        now.value("onair_viewer_estimate_min_bits_per_second", &[])
            .is_some()
    })
    .await;
    assert!(value(&estimated, "onair_viewer_estimate_min_bits_per_second") > 0.0);
    assert_eq!(
        estimated.value("onair_viewers_by_layer", &[("layer", "0")]),
        Some(2.0),
        "{estimated:#?}"
    );
    assert_eq!(
        estimated.value("onair_viewers_by_layer", &[("layer", "1")]),
        Some(0.0)
    );

    assert_eq!(first.leave().await.unwrap().delete_status, 200);
    assert_eq!(second.leave().await.unwrap().delete_status, 200);
    let gone = until_viewers(&base, 0.0).await;
    assert_eq!(value(&gone, "onair_viewers"), 0.0);
    // What the viewers that left were sent still counts: the counter never goes down.
    assert!(
        value(&gone, "onair_sent_bytes_total") >= value(&watched, "onair_sent_bytes_total"),
        "{watched:#?}\n{gone:#?}"
    );
    keyframes_by_reason(&gone);
}

/// Key frames are counted with their reasons: every reason has a sample, the stream's first
/// IDR counts as `start`.
fn keyframes_by_reason(scrape: &Scrape) {
    let samples: Vec<_> = scrape.samples("onair_video_keyframes_total").collect();
    assert_eq!(samples.len(), REASONS.len(), "{samples:#?}");
    for reason in REASONS {
        let count = scrape.value("onair_video_keyframes_total", &[("reason", reason)]);
        assert!(count.is_some_and(|c| c >= 0.0), "{reason}: {samples:#?}");
    }
    let start = scrape.value("onair_video_keyframes_total", &[("reason", "start")]);
    assert!(start.is_some_and(|c| c >= 1.0), "{samples:#?}");
}
