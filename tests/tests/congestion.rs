//! Viewers on bad links (`onair_tests::link`): each viewer's bandwidth estimate, from its own
//! transport-wide congestion control feedback, as `/api/status` shows it.

use std::time::{Duration, Instant};

use onair_tests::daemon::{Daemon, get};
use onair_tests::link::{Link, Shape};
use onair_tests::viewer::{Network, Via, Viewer, Watch};

/// A port number free right now on 127.0.0.1 for both UDP and TCP.
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The session id of `viewer` (the end of its WHEP resource URL).
fn id_of(viewer: &Viewer) -> String {
    let url = viewer.session_url().expect("a WHEP viewer");
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

/// `/api/status`'s entry for session `id`.
fn peer(daemon: &Daemon, id: &str) -> serde_json::Value {
    let (code, body) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let peers = status["peers"].as_array().expect("peers in /api/status");
    peers
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no peer {id} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_behind_a_narrow_link_is_estimated_below_it_and_one_beside_it_is_not() {
    // 1000 kb/s of video; one viewer behind 400 kb/s.
    let port = free_port();
    let daemon = Daemon::start(&format!(
        "[video]\nwidth = 640\nheight = 480\nbitrate_kbps = 1000\n[audio]\nenabled = false\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = {port}\n"
    ))
    .unwrap();
    let whep = format!("{}/whep", daemon.base_url);
    let link = Link::start(([127, 0, 0, 1], port).into(), Shape::kbps(400))
        .await
        .unwrap();
    let how = Watch::decoding(100_000, Duration::from_secs(60));
    let free = Viewer::join(Via::Whep(whep.clone()), how).await.unwrap();
    let narrow = Viewer::join_over(Via::Whep(whep), how, Network::Link(link.addr()))
        .await
        .unwrap();
    let (free_id, narrow_id) = (id_of(&free), id_of(&narrow));

    // Within 5 s the narrow viewer's estimate is below its link.
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
            joined.elapsed() < Duration::from_secs(5),
            "no estimate below the link's 400 kb/s within 5 s: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("narrow viewer after {:?}: {below}", joined.elapsed());

    // The free one, beside it, is estimated at the stream's rate or more and keeps decoding
    // at the full rate.
    let before = free.frames();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pictures = free.frames() - before;
    let entry = peer(&daemon, &free_id);
    eprintln!("free viewer: {pictures} pictures in 5 s, {entry}");
    let estimate = entry["estimate_kbps"].as_f64().expect("an estimate");
    assert!(estimate >= 1000.0, "{entry}");
    assert!(pictures >= 125, "{pictures} pictures in 5 s");
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
