//! One UDP port for every viewer (`[webrtc] port`): a dozen viewers watch at once while
//! onaird holds one UDP socket, and every answer announces that socket's port.

use std::time::Duration;

use onair_tests::churn::Held;
use onair_tests::daemon::{Daemon, agent};
use onair_tests::viewer::{Via, Viewer, Watch};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n";
const VIEWERS: usize = 12;

/// A UDP port free right now on 127.0.0.1.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_viewers_watch_through_one_udp_socket() {
    let port = free_udp_port();
    let daemon = Daemon::start(&format!(
        "{SMALL}[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = {port}\n"
    ))
    .unwrap();
    let idle = Held::sample(daemon.pid(), &daemon.base_url).unwrap();
    assert_eq!(idle.udp_sockets, 1, "before any viewer: {idle:?}");

    let whep = format!("{}/whep", daemon.base_url);
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let how = Watch::decoding(usize::MAX, Duration::from_secs(120));
        viewers.push(Viewer::join(Via::Whep(whep.clone()), how).await.unwrap());
    }
    for (i, viewer) in viewers.iter().enumerate() {
        let report = viewer.wait_for(30, Duration::from_secs(30)).await;
        assert!(report.frames_decoded >= 30, "viewer {i}: {report:?}");
    }
    let watching = Held::sample(daemon.pid(), &daemon.base_url).unwrap();
    assert_eq!(watching.viewers, VIEWERS as u64, "{watching:?}");
    assert_eq!(
        watching.udp_sockets, 1,
        "{VIEWERS} viewers must share the one socket: {watching:?}"
    );

    // A thirteenth offer's answer: its host candidates are on the port, nothing else.
    let mut response = agent()
        .post(&whep)
        .header("content-type", "application/sdp")
        .send(onair_tests::viewer::plain_offer().await.unwrap())
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let answer = response.body_mut().read_to_string().unwrap();
    let ports: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" typ host"))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert!(!ports.is_empty(), "no host candidate in:\n{answer}");
    assert!(
        ports.iter().all(|p| *p == port.to_string()),
        "host candidates not on port {port}: {ports:?}"
    );

    for viewer in viewers {
        let report = viewer.leave().await.unwrap();
        assert_eq!(report.delete_status, 200, "{report:?}");
    }
}
