//! Strangers on the network attacking a camera, replayed against the real binaries on
//! loopback (the attacker from 127.0.0.2 where its address matters): the victim keeps
//! working — the camera stays registered and watchable, a new viewer joins and decodes —,
//! its memory comes back, and its log stays short. Each attack is bounded in count and time.
//! (The answers themselves are tabled in `answers.rs`, restarts in `whep_ice.rs`.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use onair_tests::consumer::Consumer;
use onair_tests::daemon::{Daemon, get};
use onair_tests::signal::SignalServer;
use onair_tests::viewer::{Network, Via, Viewer, Watch, plain_offer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n";
/// A camera whose built-in service carries channel `porch`.
const PORCH: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n\
    [device]\nchannel = \"porch\"\n";
const VIEWER_TOKEN: &str = "viewer-token-0123456789";
const DEVICE_TOKEN: &str = "porch-token-0123456789";
/// Where the attacker comes from (all of 127/8 is loopback on Linux).
const STRANGER: [u8; 4] = [127, 0, 0, 2];

/// A viewer of `channel` through `ws_url`, decoding as long as it is asked.
async fn channel_viewer(ws_url: &str, token: Option<&str>) -> Viewer {
    let via = Via::Channel {
        ws_url: ws_url.to_owned(),
        channel: "porch".into(),
        token: token.map(str::to_owned),
        we_offer: true,
    };
    let how = Watch::decoding(usize::MAX, Duration::from_secs(300));
    let viewer = Viewer::join(via, how).await.unwrap();
    let seen = viewer.wait_for(10, Duration::from_secs(30)).await;
    assert!(seen.frames_decoded >= 10, "{seen:?}");
    viewer
}

/// Asserts `viewer` decodes 15 more pictures (it kept watching through the attack).
async fn still_decodes(viewer: &Viewer, what: &str) {
    let before = viewer.frames();
    let after = viewer.wait_for(before + 15, Duration::from_secs(30)).await;
    assert!(
        after.frames_decoded >= before + 15 && !viewer.ended(),
        "{what}: the viewer stopped: {after:?}"
    );
}

/// The daemon's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A new WHEP viewer of `base_url` that has decoded 10 pictures.
async fn whep_viewer(base_url: &str) -> Viewer {
    let whep = format!("{base_url}/whep");
    let how = Watch::decoding(usize::MAX, Duration::from_secs(300));
    let viewer = Viewer::join(Via::Whep(whep), how).await.unwrap();
    let seen = viewer.wait_for(10, Duration::from_secs(30)).await;
    assert!(seen.frames_decoded >= 10, "{seen:?}");
    viewer
}

/// Waits (10 s at most) until the camera has no session.
async fn all_gone(base_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions(base_url) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Has one viewer watch `camera` and leave, then gives the daemon's resident memory (KiB):
/// the baseline, with what the first session sets up for good (the encoder's first IDR,
/// buffers, pools) in it.
async fn warmed_rss(camera: &Daemon) -> u64 {
    whep_viewer(&camera.base_url).await.leave().await.unwrap();
    all_gone(&camera.base_url).await;
    rss_kib(camera.pid())
}

/// Asserts the daemon's resident memory is within 20% of `before` (KiB).
fn memory_came_back(camera: &Daemon, before: u64) {
    let after = rss_kib(camera.pid());
    eprintln!("RSS {before} KiB before, {after} KiB after");
    assert!(after * 10 <= before * 12, "RSS {before} → {after} KiB");
}

/// Log lines the daemon printed since the last call.
fn drain(log: &std::sync::mpsc::Receiver<String>) -> Vec<String> {
    log.try_iter().collect()
}

/// Asserts at most 100 lines a minute (pro rata, over at least a minute) came in `spent`.
fn quiet(lines: &[String], spent: Duration, what: &str) {
    let allowed = 100.0 * spent.as_secs_f64().max(60.0) / 60.0;
    assert!(
        lines.len() as f64 <= allowed,
        "{what}: {} log lines in {spent:?}:\n{}",
        lines.len(),
        lines[..lines.len().min(40)].join("\n")
    );
}

/// Asserts the camera's `log` (since the attack began) shows no new registration: it was
/// never knocked off its channel.
fn never_registered_again(log: &[String]) {
    let again: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("channel registered"))
        .collect();
    assert!(again.is_empty(), "the camera registered again: {again:#?}");
}

/// Joins the camera's channel as a viewer and sends `count` ICE candidates as fast as it
/// can; returns how many went out before the service cut it off (and whether it did).
async fn flood(ws_url: &str, token: Option<&str>, count: usize) -> (usize, bool) {
    let mut attacker = Consumer::connect(ws_url, token).await.unwrap();
    let producer = attacker.find_channel("porch").await.unwrap().unwrap();
    let start = format!(r#"{{"type":"startSession","peerId":"{producer}"}}"#);
    attacker.send_text(&start).await.unwrap();
    let session = loop {
        match attacker.recv().await.unwrap() {
            gst_plugin_webrtc_signalling_protocol::OutgoingMessage::SessionStarted {
                session_id,
                ..
            } => break session_id,
            _ => continue,
        }
    };
    let candidate = format!(
        r#"{{"type":"peer","sessionId":"{session}","ice":{{"candidate":"candidate:1 1 udp 2122260223 127.0.0.1 9 typ host","sdpMLineIndex":0}}}}"#
    );
    let mut sent = 0;
    while sent < count && attacker.send_text(&candidate).await.is_ok() {
        sent += 1;
    }
    // Whatever it was sent, the service ends the connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cut = loop {
        match attacker.recv_or_closed().await {
            Ok(None) => break true,
            Ok(Some(_)) if Instant::now() < deadline => continue,
            _ => break false,
        }
    };
    (sent, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_flooding_its_camera_is_cut_off_and_the_camera_stays_on_its_channel() {
    // On onair-signal with device and viewer tokens: the camera connected outbound.
    let signal = SignalServer::start(&format!(
        "[auth]\nviewer_tokens = [\"{VIEWER_TOKEN}\"]\n\
         [[channels]]\nname = \"porch\"\ntoken = \"{DEVICE_TOKEN}\"\n"
    ))
    .unwrap();
    let camera = Daemon::start(&format!(
        "{SMALL}[device]\nchannel = \"porch\"\n[signaling]\nurl = \"{}\"\ntoken = \"{DEVICE_TOKEN}\"\n",
        signal.ws_url()
    ))
    .unwrap();
    let ws = signal.ws_url();
    // A camera must publish within 10 s of connecting with a device token; once it has, it
    // stays past that (registered once, not again).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let log = drain(&camera.log);
    let registrations = log
        .iter()
        .filter(|l| l.contains("channel registered with ws://"))
        .count();
    assert_eq!(registrations, 1, "{}", log.join("\n"));
    let watching = channel_viewer(&ws, Some(VIEWER_TOKEN)).await;
    let attacked = Instant::now();
    let _ = drain(&camera.log);
    for round in 0..3 {
        let (sent, cut) = flood(&ws, Some(VIEWER_TOKEN), 20_000).await;
        eprintln!("round {round}: {sent} candidates sent before the cut");
        assert!(
            cut && sent < 20_000,
            "round {round}: not cut off after {sent}"
        );
    }
    still_decodes(&watching, "onair-signal").await;
    let listed = get(&format!(
        "{}/api/channels?token={VIEWER_TOKEN}",
        signal.base_url
    ))
    .unwrap();
    assert!(listed.1.contains("\"porch\""), "{listed:?}");
    let log = drain(&camera.log);
    never_registered_again(&log);
    quiet(&log, attacked.elapsed(), "the camera");
    let newcomer = channel_viewer(&ws, Some(VIEWER_TOKEN)).await;
    drop((newcomer, watching, camera));

    // On the service built into the camera (its producer in the same process).
    let camera = Daemon::start(PORCH).unwrap();
    let ws = format!("{}/ws", camera.base_url.replacen("http://", "ws://", 1));
    let watching = channel_viewer(&ws, None).await;
    let attacked = Instant::now();
    let _ = drain(&camera.log);
    let rss = rss_kib(camera.pid());
    for round in 0..3 {
        let (sent, cut) = flood(&ws, None, 20_000).await;
        eprintln!("built in, round {round}: {sent} candidates sent before the cut");
        assert!(
            cut && sent < 20_000,
            "round {round}: not cut off after {sent}"
        );
    }
    still_decodes(&watching, "built in").await;
    let log = drain(&camera.log);
    never_registered_again(&log);
    quiet(&log, attacked.elapsed(), "the camera");
    let (_, listed) = get(&format!("{}/api/channels", camera.base_url)).unwrap();
    assert!(listed.contains("\"porch\""), "{listed}");
    let newcomer = channel_viewer(&ws, None).await;
    drop(newcomer);
    memory_came_back(&camera, rss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_take_no_place_and_the_camera_always_has_room() {
    let signal = SignalServer::start(&format!(
        "[limits]\nmax_websockets = 30\n\
         [auth]\nviewer_tokens = [\"{VIEWER_TOKEN}\"]\n\
         [[channels]]\nname = \"porch\"\ntoken = \"{DEVICE_TOKEN}\"\n"
    ))
    .unwrap();
    let ws = signal.ws_url();
    // Strangers without a token can do nothing there: refused before they take a place.
    for _ in 0..40 {
        match tokio_tungstenite::connect_async(ws.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 401);
            }
            other => panic!("a stranger got in: {:?}", other.map(|_| ())),
        }
    }
    // Thirty idle connections with a viewer token hold every viewer's place, answering pings.
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(Consumer::connect(&ws, Some(VIEWER_TOKEN)).await.unwrap());
    }
    let url = format!("{ws}?token={VIEWER_TOKEN}");
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        other => panic!("a 31st viewer got in: {:?}", other.map(|_| ())),
    }
    // The camera still gets in and registers, and is watchable once a place frees.
    let camera = Daemon::start(&format!(
        "{SMALL}[device]\nchannel = \"porch\"\n[signaling]\nurl = \"{ws}\"\ntoken = \"{DEVICE_TOKEN}\"\n"
    ))
    .unwrap();
    let channels = format!("{}/api/channels?token={VIEWER_TOKEN}", signal.base_url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(&channels).unwrap().1.contains("\"porch\"") {
        assert!(Instant::now() < deadline, "the camera never registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(idle.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let viewer = loop {
        let via = Via::Channel {
            ws_url: ws.clone(),
            channel: "porch".into(),
            token: Some(VIEWER_TOKEN.into()),
            we_offer: true,
        };
        match Viewer::join(via, Watch::decoding(10, Duration::from_secs(30))).await {
            Ok(viewer) => break viewer,
            Err(err) if Instant::now() < deadline => {
                eprintln!("not yet: {err:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("no viewer got the freed place: {err:#}"),
        }
    };
    let seen = viewer.wait_for(10, Duration::from_secs(30)).await;
    assert!(seen.frames_decoded >= 10, "{seen:?}");
    drop(camera);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_dropped_and_their_memory_comes_back() {
    let camera = Daemon::start(&format!(
        "{PORCH}[access]\nviewer_token = \"{VIEWER_TOKEN}\"\n"
    ))
    .unwrap();
    let ws = format!(
        "{}/ws?token={VIEWER_TOKEN}",
        camera.base_url.replacen("http://", "ws://", 1)
    );
    let watching = channel_viewer(&ws, None).await;
    let rss = rss_kib(camera.pid());
    let _ = drain(&camera.log);
    let attacked = Instant::now();
    // 50 connections each send 80 messages of 60 KB and never read a byte.
    let junk = "x".repeat(60_000);
    let mut attackers = Vec::new();
    for _ in 0..50 {
        let (socket, _) = tokio_tungstenite::connect_async(ws.as_str()).await.unwrap();
        attackers.push(socket);
    }
    for socket in &mut attackers {
        use futures_util::SinkExt as _;
        for _ in 0..80 {
            let frame = tokio_tungstenite::tungstenite::Message::Text(junk.clone().into());
            if socket.send(frame).await.is_err() {
                break;
            }
        }
    }
    // All of them are gone within the silence limit and a ping's interval (25 s), then
    // some for a loaded machine. (Read as raw TCP: a WebSocket read would answer the pings.)
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, socket) in attackers.iter_mut().enumerate() {
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = socket.get_mut() else {
            unreachable!("plain ws://");
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, tcp.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => continue,
                Err(_) => panic!("attacker {i} still connected after 60 s"),
            }
        }
    }
    let spent = attacked.elapsed();
    eprintln!("50 non-readers gone after {spent:?}");
    drop(attackers);
    still_decodes(&watching, "non-readers").await;
    let newcomer = channel_viewer(&ws, None).await;
    drop(newcomer);
    quiet(&drain(&camera.log), spent, "the camera");
    memory_came_back(&camera, rss);
}

/// Sends `request` (a whole HTTP/1.1 request) from `from` to `to`; the response's status.
async fn http_from(from: [u8; 4], to: SocketAddr, request: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:.200}"))
}

fn addr_of(base_url: &str) -> SocketAddr {
    base_url.trim_start_matches("http://").parse().unwrap()
}

/// `sessions` of `/api/status`.
fn sessions(base_url: &str) -> u64 {
    let (_, body) = get(&format!("{base_url}/api/status")).unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["sessions"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_that_never_connect_hold_few_places_briefly_and_log_little() {
    let camera = Daemon::start(SMALL).unwrap();
    let addr = addr_of(&camera.base_url);
    let offer: String = plain_offer()
        .await
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let request = format!(
        "POST /whep HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        offer.len()
    );
    let rss = warmed_rss(&camera).await;
    let _ = drain(&camera.log);
    let attacked = Instant::now();
    let mut answered = std::collections::BTreeMap::new();
    for _ in 0..99 {
        *answered
            .entry(http_from(STRANGER, addr, &request).await)
            .or_insert(0) += 1;
    }
    eprintln!("99 offers from {STRANGER:?}: {answered:?}");
    assert_eq!(answered.get(&201).copied(), Some(16), "{answered:?}");
    assert_eq!(answered.get(&503).copied(), Some(83), "{answered:?}");
    // A viewer from elsewhere joins meanwhile and decodes.
    let viewer = whep_viewer(&camera.base_url).await;
    // The stranger's sessions are gone once they had 5 s to start ICE.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sessions(&camera.base_url) > 1 {
        assert!(
            Instant::now() < deadline,
            "offers that never connected stayed"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "the stranger's sessions gone {:?} after the attack began",
        attacked.elapsed()
    );
    still_decodes(&viewer, "pending offers").await;
    quiet(&drain(&camera.log), attacked.elapsed(), "the camera");
    // Memory once everyone has left, as in the baseline.
    viewer.leave().await.unwrap();
    all_gone(&camera.base_url).await;
    memory_came_back(&camera, rss);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ice_tcp_connections_from_one_address_keep_no_viewer_out() {
    let camera = Daemon::start(&format!(
        "{SMALL}[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n"
    ))
    .unwrap();
    let media = SocketAddr::from(([127, 0, 0, 1], camera.media_port));
    let rss = warmed_rss(&camera).await;
    let _ = drain(&camera.log);
    let attacked = Instant::now();
    // 64 idle connections from one address, and ~20 new ones a second while a viewer joins.
    let mut idle = Vec::new();
    for _ in 0..64 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((STRANGER, 0))).unwrap();
        idle.push(socket.connect(media).await.unwrap());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut opened = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::from((STRANGER, 0))).unwrap();
                if let Ok(stream) = socket.connect(media).await {
                    opened.push(stream);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            opened.len()
        }
    });
    let whep = format!("{}/whep", camera.base_url);
    let viewer = Viewer::join_over(
        Via::Whep(whep),
        Watch::decoding(30, Duration::from_secs(60)),
        Network::Tcp,
    )
    .await
    .unwrap();
    let seen = viewer.wait_for(30, Duration::from_secs(60)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "the stranger opened {} more meanwhile",
        churn.await.unwrap()
    );
    assert!(seen.frames_decoded >= 30, "over ICE-TCP: {seen:?}");
    drop(idle);
    quiet(&drain(&camera.log), attacked.elapsed(), "the camera");
    memory_came_back(&camera, rss);
}

/// `GET` `url` → the status.
fn status_of(url: &str) -> u16 {
    get(url).map_or(0, |(code, _)| code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_snapshot_widths_and_wrong_offers_leave_the_camera_watchable() {
    let camera = Daemon::start(SMALL).unwrap();
    let base = camera.base_url.clone();
    let whep = format!("{base}/whep");
    let viewer = whep_viewer(&base).await;
    let rss = rss_kib(camera.pid());
    let _ = drain(&camera.log);
    let attacked = Instant::now();

    // Snapshots at 200 widths: a few sizes made, not 200.
    let snapshots = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            (16..=615)
                .step_by(3)
                .filter(|w| status_of(&format!("{base}/snapshot.jpg?width={w}")) == 200)
                .count()
        }
    })
    .await
    .unwrap();
    assert_eq!(snapshots, 200);
    let metrics = get(&format!("{base}/metrics")).unwrap().1;
    let encoded: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("onair_snapshots_encoded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let allowed = 3.0 * (1.0 + attacked.elapsed().as_secs_f64().ceil());
    assert!(encoded <= allowed, "{encoded} JPEGs for 200 widths");

    // Offers in the wrong mode or profile, and restarts with unusable credentials.
    let plain = plain_offer().await.unwrap();
    for (from, to) in [
        ("packetization-mode=1", "packetization-mode=0"),
        ("profile-level-id=42e0", "profile-level-id=6400"),
    ] {
        for _ in 0..25 {
            let mut response = onair_tests::daemon::agent()
                .post(&whep)
                .header("content-type", "application/sdp")
                .send(plain.replace(from, to))
                .unwrap();
            let body = response.body_mut().read_to_string().unwrap_or_default();
            assert_eq!(response.status().as_u16(), 400, "{to}: {body}");
        }
    }
    let session = viewer.session_url().unwrap();
    for _ in 0..25 {
        let response = onair_tests::daemon::agent()
            .patch(&session)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("if-match", "*")
            .send("a=ice-ufrag:\r\na=ice-pwd:x\r\n")
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
    }
    let spent = attacked.elapsed();
    still_decodes(&viewer, "snapshots and wrong offers").await;
    // The session still restarts: the failed restarts left it as it was.
    let restarted = viewer.restart_ice().await.unwrap();
    assert!(restarted.etag.ends_with(".1\""), "{restarted:?}");
    still_decodes(&viewer, "after the restart").await;
    drop(whep_viewer(&base).await);
    quiet(&drain(&camera.log), spent, "the camera");
    eprintln!("{encoded} JPEGs for 200 widths in {spent:?}");
    memory_came_back(&camera, rss);
}
