//! Cameras registering channels with a signalling service, viewers joining by channel name:
//! onaird ↔ onair-signal (or the service built into onaird) ↔ a webrtc-rs consumer that
//! decodes what it gets.

use std::time::{Duration, Instant};

use onair_tests::consumer::Consumer;
use onair_tests::daemon::{Daemon, get};
use onair_tests::picture::bars_match;
use onair_tests::signal::SignalServer;
use onair_tests::viewer::{Report, Via, Watch, watch, watch_via};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n";

fn camera(signal: &SignalServer, channel: &str, token: Option<&str>) -> Daemon {
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    Daemon::start(&format!(
        "{SMALL}[device]\nchannel = \"{channel}\"\n[signaling]\nurl = \"{}\"\n{token}",
        signal.ws_url()
    ))
    .unwrap()
}

/// The channels `/api/channels` lists, by name.
fn channels(base_url: &str) -> Vec<serde_json::Value> {
    match get(&format!("{base_url}/api/channels")) {
        Ok((200, body)) => serde_json::from_str(&body).unwrap(),
        _ => Vec::new(),
    }
}

/// Waits until `channel` is listed; returns how long it took, or `None` after `limit`.
fn wait_listed(base_url: &str, channel: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if channels(base_url).iter().any(|c| c["channel"] == channel) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn via(ws_url: &str, channel: &str, we_offer: bool) -> Via {
    Via::Channel {
        ws_url: ws_url.to_owned(),
        channel: channel.to_owned(),
        token: None,
        we_offer,
    }
}

fn check(report: &Report, size: (u32, u32)) {
    assert!(report.frames_decoded >= 30, "{report:?}");
    assert_eq!(report.decode_errors, 0, "{report:?}");
    let last = report.last.as_ref().expect("a picture");
    assert_eq!((last.width, last.height), size);
    assert!(bars_match(&last.bars, 24), "bars {:?}", last.bars);
    assert!(report.audio_frames > 0, "no audio: {report:?}");
    assert_eq!(report.delete_status, 200, "endSession not sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joins_by_channel_name_through_onair_signal() {
    let signal = SignalServer::start("").unwrap();
    let daemon = camera(&signal, "porch", None);
    let took = wait_listed(&signal.base_url, "porch", Duration::from_secs(30));
    eprintln!("channel listed {took:?} after the camera was healthy");
    assert!(took.is_some(), "porch never listed");
    let listed = channels(&signal.base_url);
    assert_eq!(listed[0]["name"], "onair camera");
    assert_eq!(listed[0]["viewers"], 0);

    // Both ways round: the viewer offers (webrtcsrc), the camera offers (gstwebrtc-api).
    for we_offer in [true, false] {
        let how = Watch::decoding(30, Duration::from_secs(60));
        let report = watch_via(via(&signal.ws_url(), "porch", we_offer), how)
            .await
            .unwrap();
        eprintln!(
            "we_offer={we_offer}: {} frames, first after {:?}",
            report.frames_decoded, report.time_to_first_frame
        );
        check(&report, (320, 240));
    }
    // The sessions ended on the camera too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (_, body) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status["sessions"] == 0 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["sessions"], 0, "{status}");
    assert_eq!(status["signaling"]["registered"], true, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_service_serves_the_channel_on_the_camera_port() {
    let daemon = Daemon::start(SMALL).unwrap();
    assert!(wait_listed(&daemon.base_url, "onair", Duration::from_secs(30)).is_some());
    let ws = format!("{}/ws", daemon.base_url.replacen("http://", "ws://", 1));
    let report = watch_via(
        via(&ws, "onair", false),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    check(&report, (320, 240));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_service_restart_the_camera_registers_again() {
    let mut signal = SignalServer::start("").unwrap();
    let _daemon = camera(&signal, "porch", None);
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    signal.kill_and_restart().unwrap();
    let restarted = Instant::now();
    let listed = wait_listed(&signal.base_url, "porch", Duration::from_secs(30));
    eprintln!("channel listed again {listed:?} after the service restarted");
    assert!(listed.is_some(), "the camera did not register again");
    let joined = restarted.elapsed();
    let report = watch_via(
        via(&signal.ws_url(), "porch", true),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let first_frame = report.time_to_first_frame.map(|t| joined + t);
    eprintln!("service restart → a new viewer's first decoded frame: {first_frame:?}");
    // How long it took is a figure (printed above); that it came back is the check.
    check(&report, (320, 240));
}

#[test]
fn a_second_camera_waits_until_the_live_channel_is_free() {
    let signal = SignalServer::start("").unwrap();
    let first = camera(&signal, "porch", None);
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    let owner = channels(&signal.base_url)[0]["peer_id"].clone();
    let second = camera(&signal, "porch", None);
    let refused = wait_log(&second, "refused the channel", Duration::from_secs(30));
    assert!(
        refused
            .as_deref()
            .is_some_and(|l| l.contains("already live")),
        "{refused:?}"
    );
    // It says when it tries again, and keeps being refused while the first camera is there.
    assert!(wait_log(&second, "next attempt in", Duration::from_secs(30)).is_some());
    assert!(wait_log(&second, "refused the channel", Duration::from_secs(30)).is_some());
    assert_eq!(channels(&signal.base_url)[0]["peer_id"], owner);
    // The first camera goes away (its connection closes): the second one's retries take the
    // channel.
    drop(first);
    let gone = Instant::now();
    let took = wait_registered(&second, Duration::from_secs(40));
    eprintln!("first camera stopped → the second registered after {took:?}");
    assert!(took.is_some(), "the second camera never got the channel");
    let listed = channels(&signal.base_url);
    assert_eq!(listed.len(), 1);
    assert_ne!(listed[0]["peer_id"], owner, "{listed:?}");
    assert!(gone.elapsed() < Duration::from_secs(40));
}

/// Waits until `daemon` logs that its channel is registered; how long that took.
fn wait_registered(daemon: &Daemon, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    wait_log(daemon, "channel registered with ws://", limit).map(|_| start.elapsed())
}

/// Registers a producer on `ws_url` with the `meta` that `list` shows for `channel`'s
/// camera (channel, name, device id and all), then with `meta.channel = other`; returns
/// whether each was refused, and why.
async fn copy_and_register(ws_url: &str, channel: &str, other: &str) -> [Result<(), String>; 2] {
    use gst_plugin_webrtc_signalling_protocol as p;
    let mut intruder = Consumer::connect(ws_url, None).await.unwrap();
    intruder.send(&p::IncomingMessage::List).await.unwrap();
    let mut meta = loop {
        if let p::OutgoingMessage::List { producers } = intruder.recv().await.unwrap() {
            let camera = producers
                .into_iter()
                .find(|p| p.meta.as_ref().is_some_and(|m| m["channel"] == channel));
            break camera.and_then(|p| p.meta).expect("the camera is listed");
        }
    };
    assert!(meta["device"].is_string(), "{meta}");
    let mut answers = Vec::new();
    for name in [channel, other] {
        meta["channel"] = name.into();
        intruder
            .send(&p::IncomingMessage::SetPeerStatus(p::PeerStatus {
                roles: vec![p::PeerRole::Producer],
                meta: Some(meta.clone()),
                peer_id: None,
            }))
            .await
            .unwrap();
        // Registrations are not acknowledged: a refusal comes before the answer to a list.
        intruder.send(&p::IncomingMessage::List).await.unwrap();
        let mut answer = Ok(());
        loop {
            match intruder.recv().await.unwrap() {
                p::OutgoingMessage::Error { details } => answer = Err(details),
                p::OutgoingMessage::List { .. } => break,
                _ => {}
            }
        }
        answers.push(answer);
    }
    answers.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_copying_a_live_cameras_meta_is_refused_and_the_camera_stays_watchable() {
    let signal = SignalServer::start("").unwrap();
    let _camera = camera(&signal, "porch", None);
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    let owner = channels(&signal.base_url)[0]["peer_id"].clone();
    let [copied, other] = copy_and_register(&signal.ws_url(), "porch", "garden").await;
    assert!(
        copied.as_ref().is_err_and(|e| e.contains("already live")),
        "{copied:?}"
    );
    // A free channel is anyone's on a service without device tokens.
    assert_eq!(other, Ok(()));
    // The channel is still the camera's, and a viewer still decodes it.
    assert_eq!(owner_of(&signal.base_url, "porch"), owner);
    let report = watch_via(
        via(&signal.ws_url(), "porch", true),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    check(&report, (320, 240));
    assert_eq!(owner_of(&signal.base_url, "porch"), owner);
}

/// The `peer_id` `/api/channels` gives for `channel` (null if it is not live).
fn owner_of(base_url: &str, channel: &str) -> serde_json::Value {
    channels(base_url)
        .into_iter()
        .find(|c| c["channel"] == channel)
        .map_or(serde_json::Value::Null, |c| c["peer_id"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_service_takes_no_producer_but_its_camera() {
    let daemon = Daemon::start(SMALL).unwrap();
    assert!(wait_listed(&daemon.base_url, "onair", Duration::from_secs(30)).is_some());
    let owner = channels(&daemon.base_url)[0]["peer_id"].clone();
    let ws = format!("{}/ws", daemon.base_url.replacen("http://", "ws://", 1));
    let [copied, other] = copy_and_register(&ws, "onair", "garden").await;
    for refused in [&copied, &other] {
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("device token")),
            "{refused:?}"
        );
    }
    let listed = channels(&daemon.base_url);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["peer_id"], owner);
    let report = watch_via(
        via(&ws, "onair", true),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    check(&report, (320, 240));
}

/// `signaling.registered` in the camera's `/api/status`.
fn registered(daemon: &Daemon) -> Option<bool> {
    let (_, body) = get(&format!("{}/api/status", daemon.base_url)).ok()?;
    let status: serde_json::Value = serde_json::from_str(&body).ok()?;
    status["signaling"]["registered"].as_bool()
}

/// Polls `registered` until it is `want`; how long that took, or `None` after `limit`.
fn wait_status_registered(daemon: &Daemon, want: bool, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if registered(daemon) == Some(want) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Thaws a frozen process however the test ends, so it can be stopped.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-CONT")
            .arg(self.0.to_string())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_service_is_noticed_and_the_camera_registers_again_when_it_thaws() {
    let signal = SignalServer::start("").unwrap();
    let daemon = camera(&signal, "porch", None);
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    assert!(wait_status_registered(&daemon, true, Duration::from_secs(30)).is_some());
    // Frozen: its sockets stay open, it answers nothing.
    let thaw = Thaw(signal.pid());
    send_signal(signal.pid(), "STOP");
    let frozen = Instant::now();
    let noticed = tokio::task::block_in_place(|| {
        wait_status_registered(&daemon, false, Duration::from_secs(40))
    });
    eprintln!("service frozen → camera reports registered: false after {noticed:?}");
    // The silence limit is 25 s; the wait allows a loaded machine 15 s more.
    assert!(noticed.is_some(), "not noticed within 40 s");
    send_signal(signal.pid(), "CONT");
    drop(thaw);
    let thawed = Instant::now();
    let again = tokio::task::block_in_place(|| {
        wait_status_registered(&daemon, true, Duration::from_secs(60))
    });
    eprintln!(
        "service thawed → camera registered again after {again:?} (frozen for {:?})",
        thawed - frozen
    );
    assert!(again.is_some(), "the camera did not register again");
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    let report = watch_via(
        via(&signal.ws_url(), "porch", true),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    check(&report, (320, 240));
}

#[test]
fn device_tokens_are_checked() {
    let signal =
        SignalServer::start("[[channels]]\nname = \"porch\"\ntoken = \"porch-token-0123456\"\n")
            .unwrap();
    let wrong = camera(&signal, "porch", Some("porch-token-XXXXXXX"));
    let refused = wait_log(&wrong, "refused the channel", Duration::from_secs(30));
    assert!(
        refused
            .as_deref()
            .is_some_and(|l| l.contains("wrong or missing device token")),
        "{refused:?}"
    );
    assert!(channels(&signal.base_url).is_empty());
    drop(wrong);
    let _right = camera(&signal, "porch", Some("porch-token-0123456"));
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
}

#[test]
fn a_camera_with_its_device_token_replaces_its_stale_entry_at_once() {
    let token = "porch-token-0123456";
    let signal = SignalServer::start(&format!(
        "[[channels]]\nname = \"porch\"\ntoken = \"{token}\"\n"
    ))
    .unwrap();
    let old = camera(&signal, "porch", Some(token));
    assert!(wait_registered(&old, Duration::from_secs(30)).is_some());
    let stale = owner_of(&signal.base_url, "porch");
    // The camera hangs (or loses power): its connection stays open on the service, silent.
    let thaw = Thaw(old.pid());
    send_signal(old.pid(), "STOP");
    // The same camera comes back (a reboot): with its token it takes the channel at once,
    // without waiting for the service to drop the stale connection.
    let rebooted = camera(&signal, "porch", Some(token));
    let took = wait_registered(&rebooted, Duration::from_secs(30));
    eprintln!("rebooted camera with its device token registered after {took:?}");
    // Without the token it would wait out the stale connection's 25 s of silence.
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(15)),
        "{took:?}"
    );
    let owner = owner_of(&signal.base_url, "porch");
    assert!(
        owner.is_string() && owner != stale,
        "{owner} (stale {stale})"
    );
    send_signal(old.pid(), "KILL");
    drop(thaw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_get_an_error_and_nothing_else_changes() {
    // Small, but with room for the camera's offer, UDP and ICE-TCP candidates included.
    let signal = SignalServer::start("[limits]\nmax_message_bytes = 4096\n").unwrap();
    let _daemon = camera(&signal, "porch", None);
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    let mut rude = Consumer::connect(&signal.ws_url(), None).await.unwrap();
    for (text, expected) in [
        ("{\"type\": ", "malformed message"),
        (
            "{\"type\": \"teleport\"}",
            "not a message of the signalling protocol",
        ),
        (
            &format!("{{\"type\":\"list\",\"pad\":\"{}\"}}", "x".repeat(8192)),
            "larger than the limit",
        ),
        (
            "{\"type\":\"startSession\",\"peerId\":\"nobody\"}",
            "no peer",
        ),
    ] {
        rude.send_text(text).await.unwrap();
        match rude.recv().await.unwrap() {
            gst_plugin_webrtc_signalling_protocol::OutgoingMessage::Error { details } => {
                assert!(details.contains(expected), "{text:.40}: {details}")
            }
            other => panic!("{text:.40}: expected an error, got {other:?}"),
        }
    }
    // The rude connection still works, and so does everything else.
    assert!(rude.find_channel("porch").await.unwrap().is_some());
    let report = watch_via(
        via(&signal.ws_url(), "porch", true),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    check(&report, (320, 240));
}

/// The first log line of `daemon` containing `needle`, within `limit`.
fn wait_log(daemon: &Daemon, needle: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match daemon.log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whep_gateway_reaches_a_camera_connected_only_outbound() {
    let signal = SignalServer::start("").unwrap();
    let _daemon = camera(&signal, "porch", None);
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    let report = watch(
        &format!("{}/whep/porch", signal.base_url),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    eprintln!(
        "WHEP gateway: {} frames, first after {:?}",
        report.frames_decoded, report.time_to_first_frame
    );
    check(&report, (320, 240));
    // A channel nobody publishes.
    let offer = onair_tests::viewer::offer_without_h264().await.unwrap();
    let status = post_sdp(&format!("{}/whep/garden", signal.base_url), offer.clone());
    assert_eq!(status.0, 404, "{status:?}");
    // An offer the camera cannot serve: it ends the session, the gateway says so.
    let status = post_sdp(&format!("{}/whep/porch", signal.base_url), offer);
    assert_eq!(status.0, 502, "{status:?}");
    assert!(status.1.contains("H.264"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_in_whep_gateway_serves_the_channel_too() {
    let daemon = Daemon::start(SMALL).unwrap();
    assert!(wait_listed(&daemon.base_url, "onair", Duration::from_secs(30)).is_some());
    let report = watch(
        &format!("{}/whep/onair", daemon.base_url),
        Watch::decoding(30, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    check(&report, (320, 240));
}

fn post_sdp(url: &str, offer: String) -> (u16, String) {
    let mut response = onair_tests::daemon::agent()
        .post(url)
        .header("Content-Type", "application/sdp")
        .send(offer.as_bytes())
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// A webhook receiver: records every JSON body; answers 500 to the very first POST (so a
/// retry is needed), 200 after.
async fn webhook_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let failed_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let (record, failed_once) = (record.clone(), failed_once.clone());
            async move {
                if !failed_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                record.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_hear_channels_and_viewers_come_and_go() {
    let (url, seen) = webhook_receiver().await;
    let signal = SignalServer::start(&format!("[[webhooks]]\nurl = \"{url}\"\n")).unwrap();
    let daemon = camera(&signal, "porch", None);
    assert!(wait_listed(&signal.base_url, "porch", Duration::from_secs(30)).is_some());
    let report = watch_via(
        via(&signal.ws_url(), "porch", true),
        Watch::decoding(10, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert!(report.frames_decoded >= 10, "{report:?}");
    drop(daemon);
    let expected = ["channel_up", "viewer_join", "viewer_leave", "channel_down"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
            .collect();
        if events.len() >= expected.len() || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The first delivery was refused once and retried: nothing is missing.
    assert_eq!(events, expected);
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(first["channel"], "porch");
    assert!(
        first["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_and_viewers_reach_the_service_over_tls() {
    let dir = std::env::temp_dir().join(format!("onair-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let signal = SignalServer::start(&format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ))
    .unwrap();
    assert!(
        signal.base_url.starts_with("https://"),
        "{}",
        signal.base_url
    );
    // The camera trusts the certificate through SSL_CERT_FILE, as it would a private CA.
    let daemon = Daemon::start_with_env(
        &format!(
            "{SMALL}[device]\nchannel = \"porch\"\n[signaling]\nurl = \"{}\"\n",
            signal.ws_url()
        ),
        &[("SSL_CERT_FILE", cert.as_os_str())],
    )
    .unwrap();
    let registered = wait_log(
        &daemon,
        "channel registered with wss://",
        Duration::from_secs(30),
    );
    assert!(registered.is_some(), "the camera did not register over wss");
    let mut viewer = Consumer::connect_trusting(&signal.ws_url(), None, Some(&cert_pem))
        .await
        .unwrap();
    assert!(viewer.find_channel("porch").await.unwrap().is_some());
    // Without trusting it, the connection fails.
    assert!(Consumer::connect(&signal.ws_url(), None).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn viewer_tokens_guard_the_channel_list_and_the_gateway() {
    let signal =
        SignalServer::start("[auth]\nviewer_tokens = [\"viewer-token-0123456\"]\n").unwrap();
    let _camera = camera(&signal, "porch", None);
    let url = format!("{}/api/channels", signal.base_url);
    // A hang check: on a loaded machine the camera's start can take seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (code, body) = get(&format!("{url}?token=viewer-token-0123456")).unwrap();
        if (code == 200 && body.contains("porch")) || Instant::now() > deadline {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(listed.0 == 200 && listed.1.contains("porch"), "{listed:?}");
    assert_eq!(get(&url).unwrap().0, 401);
    assert_eq!(get(&format!("{url}?token=nope")).unwrap().0, 401);
    let status = post_sdp(&format!("{}/whep/porch", signal.base_url), "v=0\r\n".into());
    assert_eq!(status.0, 401, "{status:?}");
}

#[test]
fn onair_signal_hands_its_ice_servers_to_viewer_pages() {
    let signal = SignalServer::start(
        "[auth]\nviewer_tokens = [\"viewer-token-0123456\"]\n\
         [[ice_servers]]\nurls = [\"stun:127.0.0.1:3478\"]\n\
         [[ice_servers]]\nurls = [\"turn:127.0.0.1:3478?transport=udp\"]\n\
         username = \"fleet\"\ncredential = \"fleet-secret\"\n",
    )
    .unwrap();
    let url = format!("{}/api/ice-servers", signal.base_url);
    // TURN credentials only for viewers.
    assert_eq!(get(&url).unwrap().0, 401);
    let (code, body) = get(&format!("{url}?token=viewer-token-0123456")).unwrap();
    assert_eq!(code, 200, "{body}");
    let servers: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        servers,
        serde_json::json!([
            { "urls": ["stun:127.0.0.1:3478"] },
            {
                "urls": ["turn:127.0.0.1:3478?transport=udp"],
                "username": "fleet",
                "credential": "fleet-secret"
            }
        ])
    );
}
