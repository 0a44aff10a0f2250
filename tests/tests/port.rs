//! One port for every viewer (`[webrtc] port`): a dozen viewers watch at once while onaird
//! holds one UDP socket, every answer announces that socket's port, and a viewer without
//! UDP watches over ICE-TCP on the same port number.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use onair_tests::churn::Held;
use onair_tests::daemon::{Daemon, agent};
use onair_tests::viewer::{Network, Via, Viewer, Watch};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n";
const VIEWERS: usize = 12;

/// onaird on a port it picks (free for both UDP and TCP) and reports: `(daemon, port)`.
fn start() -> (Daemon, u16) {
    let daemon = Daemon::start(&format!(
        "{SMALL}[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n"
    ))
    .unwrap();
    let port = daemon.media_port;
    (daemon, port)
}

/// The candidate lines of a fresh answer from `daemon`.
async fn answer_candidates(daemon: &Daemon) -> Vec<String> {
    let mut response = agent()
        .post(&format!("{}/whep", daemon.base_url))
        .header("content-type", "application/sdp")
        .send(onair_tests::viewer::plain_offer().await.unwrap())
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let answer = response.body_mut().read_to_string().unwrap();
    answer
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_viewers_watch_through_one_udp_socket() {
    let (daemon, port) = start();
    let idle = Held::sample(daemon.pid(), &daemon.base_url).unwrap();
    assert_eq!(idle.udp_sockets, 1, "before any viewer: {idle:?}");

    let whep = format!("{}/whep", daemon.base_url);
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let how = Watch::decoding(usize::MAX, Duration::from_secs(120));
        viewers.push(Viewer::join(Via::Whep(whep.clone()), how).await.unwrap());
    }
    for (i, viewer) in viewers.iter().enumerate() {
        let report = viewer.wait_for(30, Duration::from_secs(60)).await;
        assert!(report.frames_decoded >= 30, "viewer {i}: {report:?}");
    }
    let watching = Held::sample(daemon.pid(), &daemon.base_url).unwrap();
    assert_eq!(watching.viewers, VIEWERS as u64, "{watching:?}");
    assert_eq!(
        watching.udp_sockets, 1,
        "{VIEWERS} viewers must share the one socket: {watching:?}"
    );

    // A thirteenth offer's answer: its host candidates are on the port, nothing else.
    let candidates = answer_candidates(&daemon).await;
    let ports: Vec<&str> = candidates
        .iter()
        .filter(|l| l.contains(" typ host"))
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert!(!ports.is_empty(), "no host candidate in {candidates:?}");
    assert!(
        ports.iter().all(|p| *p == port.to_string()),
        "host candidates not on port {port}: {ports:?}"
    );

    for viewer in viewers {
        let report = viewer.leave().await.unwrap();
        assert_eq!(report.delete_status, 200, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_udp_watches_over_ice_tcp_on_the_same_port_number() {
    let (daemon, port) = start();

    // The answer offers a passive TCP candidate on the port's number, and no active one
    // (onaird never dials out).
    let candidates = answer_candidates(&daemon).await;
    let passive = format!(" 127.0.0.1 {port} typ host tcptype passive");
    assert!(
        candidates
            .iter()
            .any(|c| c.contains(" tcp ") && c.contains(&passive)),
        "no passive TCP candidate on {port}: {candidates:?}"
    );
    assert!(
        !candidates.iter().any(|c| c.contains("tcptype active")),
        "{candidates:?}"
    );

    let how = Watch::decoding(100, Duration::from_secs(60));
    let viewer = Viewer::join_over(
        Via::Whep(format!("{}/whep", daemon.base_url)),
        how,
        Network::Tcp,
    )
    .await
    .unwrap();
    let report = viewer.wait_for(100, Duration::from_secs(60)).await;
    while let Ok(l) = daemon.log.try_recv() {
        eprintln!("D {l}");
    } // DEBUG
    assert!(report.frames_decoded >= 100, "{report:?}");
    assert!(
        report.first.as_ref().is_some_and(|p| p.stamp.is_some()),
        "{report:?}"
    );
    let report = viewer.leave().await.unwrap();
    assert_eq!(report.delete_status, 200, "{report:?}");
}

#[test]
fn a_tcp_connection_that_is_not_ice_is_closed() {
    let (_daemon, port) = start();
    // An HTTP request on the media port: the first "frame" is not a STUN check.
    let mut stranger = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stranger.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let read = stranger.read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the port answered a stranger: {read:?}"
    );
}
