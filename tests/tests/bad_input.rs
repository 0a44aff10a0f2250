//! The bad-input matrix: malformed and hostile requests against one running onaird (and one
//! onair-signal) while viewers watch. Each case must get its clear refusal (a 4xx whose body
//! names the problem, or an `error` message / a close on the WebSocket), and every viewer
//! already watching must keep decoding pictures across every case, not just survive.
//!
//! The cases are rows of a table ([`Case`]): to try something new, add a row. A token row is
//! a `Probe::Http` with an `authorization` header (or `?token=` in its path) expecting
//! `Expect::Status(401, …)`; something that is not one request (hundreds of stalled
//! connections) is a new `Probe` variant with its arm in `Target::probe`.

use std::time::Duration;

use anyhow::Context as _;
use gst_plugin_webrtc_signalling_protocol::{IncomingMessage, OutgoingMessage};
use onair_tests::consumer::Consumer;
use onair_tests::daemon::{Daemon, get};
use onair_tests::signal::SignalServer;
use onair_tests::viewer::{Via, Viewer, Watch, audio_only_offer, offer_without_h264};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n";

/// Pictures every watching viewer must decode after each case (a third of a second at
/// 15 fps), within [`PROGRESS_WITHIN`].
const PROGRESS: usize = 5;
/// A generous bound: a stalled stream, not a slow machine, is what fails.
const PROGRESS_WITHIN: Duration = Duration::from_secs(30);

/// One bad input and what must come back.
struct Case {
    /// What is tried, as the failure list and the printed table say it.
    name: &'static str,
    probe: Probe,
    expect: Expect,
}

/// What is sent.
enum Probe {
    /// One HTTP request to `path` (relative to the server's base URL).
    Http {
        method: &'static str,
        path: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: Body,
    },
    /// One frame on a fresh `/ws` connection, after its welcome.
    Ws(Frame),
    /// This many connections that send half a request, or nothing, and then stall; seen as
    /// `Closed` once the server has closed every one of them (60 s at most).
    Stalled(usize),
}

/// An HTTP request body.
enum Body {
    None,
    Text(&'static str),
    /// Made when the case runs (large or binary bodies).
    Made(fn() -> Vec<u8>),
    /// A real offer (webrtc-rs) with VP8 and no H.264.
    Vp8Offer,
    /// A real offer with an audio section only.
    AudioOnlyOffer,
}

/// A WebSocket frame.
enum Frame {
    Text(&'static str),
    /// Text made when the case runs (large messages).
    MadeText(fn() -> String),
    /// A binary frame of this many bytes.
    Binary(usize),
}

/// What must come back.
#[derive(Debug)]
enum Expect {
    /// This status, with a body that says this (case-insensitive).
    Status(u16, &'static str),
    /// An `error` message that says this; the connection still answers `list` after it.
    Error(&'static str),
    /// The service closes the connection.
    Closed,
}

/// What came back.
#[derive(Debug)]
enum Seen {
    Status(u16, String),
    /// An `error` message with these details, and the connection still works.
    Error(String),
    Closed,
    /// Anything else: another message, a transport failure, a timeout.
    Other(String),
}

impl Expect {
    fn accepts(&self, seen: &Seen) -> bool {
        let says = |text: &str, what: &str| text.to_lowercase().contains(&what.to_lowercase());
        match (self, seen) {
            (Expect::Status(code, what), Seen::Status(got, body)) => {
                code == got && says(body, what)
            }
            (Expect::Error(what), Seen::Error(details)) => says(details, what),
            (Expect::Closed, Seen::Closed) => true,
            _ => false,
        }
    }
}

fn ten_megabytes() -> Vec<u8> {
    vec![b'a'; 10 << 20]
}

fn not_utf8() -> Vec<u8> {
    b"v=0\r\no=- 1 1 IN IP4 \xff\xfe\r\n".to_vec()
}

/// Larger than onair-signal's default `limits.max_message_bytes` (64 KiB), far below the
/// WebSocket layer's hard limit.
fn message_of_100_kb() -> String {
    format!(r#"{{"type":"list","padding":"{}"}}"#, "x".repeat(100 << 10))
}

/// Beyond the WebSocket layer's hard limit (4 MiB): the connection is closed.
fn message_of_5_mb() -> String {
    "x".repeat(5 << 20)
}

const SDP: &[(&str, &str)] = &[("content-type", "application/sdp")];

/// What both servers refuse the same way on their `/ws`.
fn websocket_cases() -> Vec<Case> {
    let error = |name, frame, says| Case {
        name,
        probe: Probe::Ws(frame),
        expect: Expect::Error(says),
    };
    vec![
        error(
            "ws: text that is not JSON",
            Frame::Text("hello"),
            "malformed",
        ),
        error("ws: JSON array", Frame::Text("[1,2,3]"), "malformed"),
        error(
            "ws: unknown message type",
            Frame::Text(r#"{"type":"launchMissiles"}"#),
            "malformed",
        ),
        error(
            "ws: startSession without peerId",
            Frame::Text(r#"{"type":"startSession"}"#),
            "malformed",
        ),
        error(
            "ws: newPeer from a peer",
            Frame::Text(r#"{"type":"newPeer"}"#),
            "newPeer",
        ),
        error(
            "ws: startSession with an unknown peer",
            Frame::Text(r#"{"type":"startSession","peerId":"nobody"}"#),
            "no peer",
        ),
        error(
            "ws: endSession of an unknown session",
            Frame::Text(r#"{"type":"endSession","sessionId":"nope"}"#),
            "no session",
        ),
        error(
            "ws: peer message for an unknown session",
            Frame::Text(
                r#"{"type":"peer","sessionId":"nope","ice":{"candidate":"x","sdpMLineIndex":0}}"#,
            ),
            "no session",
        ),
        error(
            "ws: 100 KB message (limit 64 KiB)",
            Frame::MadeText(message_of_100_kb),
            "larger than the limit",
        ),
        error("ws: binary frame", Frame::Binary(16), "binary"),
        Case {
            name: "ws: 5 MB text message",
            probe: Probe::Ws(Frame::MadeText(message_of_5_mb)),
            expect: Expect::Closed,
        },
        Case {
            name: "ws: 5 MB binary frame",
            probe: Probe::Ws(Frame::Binary(5 << 20)),
            expect: Expect::Closed,
        },
    ]
}

/// WHEP offers that are not usable, POSTed to `path`, and what each gets; a valid offer
/// without H.264 gets `no_h264`.
fn bad_offers(path: &'static str, no_h264: fn() -> Expect) -> Vec<Case> {
    let post = |name, headers, body, expect| Case {
        name,
        probe: Probe::Http {
            method: "POST",
            path,
            headers,
            body,
        },
        expect,
    };
    vec![
        post(
            "POST: text that is not SDP",
            SDP,
            Body::Text("hello"),
            Expect::Status(400, "not an SDP session description"),
        ),
        post(
            "POST: empty offer",
            SDP,
            Body::None,
            Expect::Status(400, "not an SDP session description"),
        ),
        post(
            "POST: offer that is not UTF-8",
            SDP,
            Body::Made(not_utf8),
            Expect::Status(400, "UTF-8"),
        ),
        post(
            "POST: truncated SDP",
            SDP,
            Body::Text("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"),
            Expect::Status(400, "ends before the lines an offer needs"),
        ),
        post(
            "POST: SDP with garbage lines",
            SDP,
            Body::Text("v=0\r\nthis is not sdp\r\n\x01\x02\r\n"),
            Expect::Status(400, "not valid SDP"),
        ),
        post(
            "POST: SDP without media sections",
            SDP,
            Body::Text("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"),
            Expect::Status(400, "no media section"),
        ),
        post(
            "POST: offer with VP8 and no H.264",
            SDP,
            Body::Vp8Offer,
            no_h264(),
        ),
        post(
            "POST: audio-only offer",
            SDP,
            Body::AudioOnlyOffer,
            no_h264(),
        ),
        post(
            "POST: Content-Type application/json",
            &[("content-type", "application/json")],
            Body::Text("{}"),
            Expect::Status(415, "application/sdp"),
        ),
        post(
            "POST: no Content-Type",
            &[],
            Body::Text("v=0\r\n"),
            Expect::Status(415, "application/sdp"),
        ),
        post(
            "POST: 10 MB body",
            SDP,
            Body::Made(ten_megabytes),
            Expect::Status(413, "limit"),
        ),
    ]
}

fn http(name: &'static str, method: &'static str, path: &'static str, expect: Expect) -> Case {
    Case {
        name,
        probe: Probe::Http {
            method,
            path,
            headers: &[("content-type", "application/trickle-ice-sdpfrag")],
            body: Body::None,
        },
        expect,
    }
}

/// A WHEP offer to a channel nobody publishes (the gateway's route).
fn not_live() -> Case {
    Case {
        name: "POST to a channel that is not live",
        probe: Probe::Http {
            method: "POST",
            path: "/whep/nowhere",
            headers: SDP,
            body: Body::Vp8Offer,
        },
        expect: Expect::Status(404, "not live"),
    }
}

/// Real offers that onaird must refuse, made once.
struct Offers {
    vp8: String,
    audio_only: String,
}

/// A server under test and the viewers watching it.
struct Target {
    base_url: String,
    ws_url: String,
    watchers: Vec<(&'static str, Viewer)>,
    offers: Offers,
}

impl Target {
    async fn new(base_url: String, watchers: Vec<(&'static str, Via)>) -> Target {
        let ws_url = format!("{}/ws", base_url.replacen("http://", "ws://", 1));
        let mut joined = Vec::new();
        for (name, via) in watchers {
            let how = Watch::decoding(usize::MAX, Duration::from_secs(600));
            let viewer = Viewer::join(via, how)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let report = viewer.wait_for(PROGRESS, Duration::from_secs(60)).await;
            assert!(
                report.frames_decoded >= PROGRESS,
                "{name} decodes nothing: {report:?}"
            );
            joined.push((name, viewer));
        }
        Target {
            base_url,
            ws_url,
            watchers: joined,
            offers: Offers {
                vp8: offer_without_h264().await.unwrap(),
                audio_only: audio_only_offer().await.unwrap(),
            },
        }
    }

    /// Runs every case; returns what went wrong (empty if nothing did).
    async fn run(&self, cases: &[Case]) -> Vec<String> {
        let mut failures = Vec::new();
        for case in cases {
            let before: Vec<usize> = self.watchers.iter().map(|(_, v)| v.frames()).collect();
            let seen = self.probe(&case.probe).await;
            let ok = case.expect.accepts(&seen);
            if !ok {
                failures.push(format!(
                    "{}: expected {:?}, got {seen:?}",
                    case.name, case.expect
                ));
            }
            let mut decoded = Vec::new();
            for ((name, viewer), before) in self.watchers.iter().zip(before) {
                let report = viewer.wait_for(before + PROGRESS, PROGRESS_WITHIN).await;
                if report.frames_decoded < before + PROGRESS || viewer.ended() {
                    failures.push(format!(
                        "{}: {name} stopped decoding ({before} → {} pictures, ended: {})",
                        case.name,
                        report.frames_decoded,
                        viewer.ended()
                    ));
                }
                decoded.push(report.frames_decoded);
            }
            eprintln!(
                "{} {:<45} {:<60} pictures {decoded:?}",
                if ok { "ok  " } else { "FAIL" },
                case.name,
                short(&seen)
            );
        }
        failures
    }

    async fn probe(&self, probe: &Probe) -> Seen {
        match probe {
            Probe::Http {
                method,
                path,
                headers,
                body,
            } => {
                let body = match body {
                    Body::None => Vec::new(),
                    Body::Text(text) => text.as_bytes().to_vec(),
                    Body::Made(make) => make(),
                    Body::Vp8Offer => self.offers.vp8.clone().into_bytes(),
                    Body::AudioOnlyOffer => self.offers.audio_only.clone().into_bytes(),
                };
                let url = format!("{}{path}", self.base_url);
                let (method, headers) = (*method, *headers);
                tokio::task::spawn_blocking(move || send_http(method, &url, headers, body))
                    .await
                    .unwrap_or_else(|e| Seen::Other(format!("request task: {e}")))
            }
            Probe::Ws(frame) => send_ws(&self.ws_url, frame)
                .await
                .unwrap_or_else(|e| Seen::Other(format!("{e:#}"))),
            Probe::Stalled(count) => {
                let (url, count) = (self.base_url.clone(), *count);
                tokio::task::spawn_blocking(move || stall(&url, count))
                    .await
                    .unwrap_or_else(|e| Seen::Other(format!("stall task: {e}")))
            }
        }
    }

    /// Every viewer has decoded throughout without a decoder error; they leave cleanly.
    async fn finish(self) {
        for (name, viewer) in self.watchers {
            let report = viewer.leave().await.unwrap();
            assert_eq!(report.decode_errors, 0, "{name}: {report:?}");
            assert_eq!(report.delete_status, 200, "{name} could not leave");
        }
    }
}

/// One HTTP/1.1 request on its own connection, written the way a browser or curl would: the
/// response is read while the body is still being sent, so a server that refuses a large
/// body early (and closes) is heard rather than seen as a broken pipe.
fn send_http(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Seen {
    match exchange(method, url, headers, body) {
        Ok(seen) => seen,
        Err(e) => Seen::Other(format!("no response: {e:#}")),
    }
}

fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<Seen> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://").context("not an http:// URL")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone()?;
    let sending = std::thread::spawn(move || {
        // A server that has answered may close before the body is through: that is fine.
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
    });
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    let _ = sending.join();
    if response.is_empty() {
        read?;
        anyhow::bail!("the connection closed without a response");
    }
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {text:.80}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(Seen::Status(status, body.to_owned()))
}

/// Opens `count` connections to `base_url` (every other one sends half a request head) and
/// waits until the server has closed them all.
fn stall(base_url: &str, count: usize) -> Seen {
    use std::io::{Read as _, Write as _};
    let host = base_url.trim_start_matches("http://");
    let opened = std::time::Instant::now();
    let mut streams = Vec::new();
    for i in 0..count {
        match std::net::TcpStream::connect(host) {
            Ok(mut stream) => {
                if i % 2 == 1 {
                    let _ = stream.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n");
                }
                streams.push(stream);
            }
            Err(e) => return Seen::Other(format!("connection {i}: {e}")),
        }
    }
    for stream in &mut streams {
        let left = Duration::from_secs(60).saturating_sub(opened.elapsed());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Seen::Other("still open 60 s after they opened".into());
        }
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => return Seen::Other("still open 60 s after they opened".into()),
            }
        }
    }
    eprintln!(
        "     {count} stalled connections closed by the server {:.1} s after they opened",
        opened.elapsed().as_secs_f64()
    );
    Seen::Closed
}

async fn send_ws(ws_url: &str, frame: &Frame) -> anyhow::Result<Seen> {
    let mut ws = Consumer::connect(ws_url, None).await?;
    let sent = match frame {
        Frame::Text(text) => ws.send_text(text).await,
        Frame::MadeText(make) => ws.send_text(&make()).await,
        Frame::Binary(len) => ws.send_binary(vec![0x5a; *len]).await,
    };
    if sent.is_err() {
        // The service closed the connection while the frame was being sent.
        return Ok(Seen::Closed);
    }
    Ok(match ws.recv_or_closed().await? {
        None => Seen::Closed,
        Some(OutgoingMessage::Error { details }) => {
            // Refused, and the connection still works.
            ws.send(&IncomingMessage::List).await?;
            match ws.recv().await? {
                OutgoingMessage::List { .. } => Seen::Error(details),
                other => Seen::Other(format!("error {details:?}, then {other:?} to a list")),
            }
        }
        Some(other) => Seen::Other(format!("{other:?}")),
    })
}

/// One line of what came back, for the printed table.
fn short(seen: &Seen) -> String {
    let text = match seen {
        Seen::Status(code, body) => format!("{code} {}", body.trim()),
        Seen::Error(details) => format!("error: {details}"),
        Seen::Closed => "closed".into(),
        Seen::Other(what) => format!("other: {what}"),
    };
    text.chars().take(60).collect()
}

/// Waits until `/api/status` says `key` is `value` (10 s at most).
fn wait_status(base_url: &str, key: &str, value: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(&format!("{base_url}/api/status")).unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        if status[key] == value || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onaird_refuses_bad_input_while_its_viewers_keep_decoding() {
    let daemon = Daemon::start(SMALL).unwrap();
    let base = daemon.base_url.clone();
    let ws = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let target = Target::new(
        base.clone(),
        vec![
            ("WHEP viewer", Via::Whep(format!("{base}/whep"))),
            (
                "channel viewer (built-in /ws)",
                Via::Channel {
                    ws_url: ws,
                    channel: "onair".into(),
                    token: None,
                    we_offer: true,
                },
            ),
        ],
    )
    .await;

    let mut cases = bad_offers("/whep", || {
        Expect::Status(400, "no video section accepting H.264")
    });
    cases.extend([
        http(
            "DELETE of an unknown session",
            "DELETE",
            "/whep/0123456789abcdef",
            Expect::Status(404, "no such session"),
        ),
        http(
            "PATCH of an unknown session",
            "PATCH",
            "/whep/0123456789abcdef",
            Expect::Status(404, "no such session"),
        ),
        http(
            "DELETE of an unknown gateway session",
            "DELETE",
            "/whep/onair/0123456789abcdef",
            Expect::Status(404, "no such session"),
        ),
        not_live(),
        Case {
            name: "600 stalled connections",
            probe: Probe::Stalled(600),
            expect: Expect::Closed,
        },
    ]);
    cases.extend(websocket_cases());
    let failures = target.run(&cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // Nothing refused left a session behind; the viewers are the only ones.
    let status = wait_status(&base, "sessions", 2);
    assert_eq!(status["sessions"], 2, "{status}");
    assert_eq!(status["viewers"], 2, "{status}");
    target.finish().await;
    assert_eq!(get(&format!("{base}/healthz")).unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onair_signal_refuses_bad_input_while_its_viewers_keep_decoding() {
    let signal = SignalServer::start("").unwrap();
    let daemon = Daemon::start(&format!(
        "{SMALL}[device]\nchannel = \"porch\"\n[signaling]\nurl = \"{}\"\n",
        signal.ws_url()
    ))
    .unwrap();
    wait_status(&daemon.base_url, "sessions", 0);
    let base = signal.base_url.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !get(&format!("{base}/api/channels"))
        .map(|(_, body)| body.contains("porch"))
        .unwrap_or(false)
    {
        assert!(std::time::Instant::now() < deadline, "porch never listed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let target = Target::new(
        base.clone(),
        vec![
            (
                "WHEP gateway viewer",
                Via::Whep(format!("{base}/whep/porch")),
            ),
            (
                "channel viewer",
                Via::Channel {
                    ws_url: signal.ws_url(),
                    channel: "porch".into(),
                    token: None,
                    we_offer: false,
                },
            ),
        ],
    )
    .await;

    // The gateway cannot read H.264 support out of an offer for any producer (GStreamer's
    // webrtcsink may send VP8); the camera ends the session, and the signalling protocol
    // has no way for it to say why: 502, with the likely reason.
    let mut cases = bad_offers("/whep/porch", || Expect::Status(502, "accept H.264"));
    cases.extend([
        not_live(),
        http(
            "DELETE of an unknown gateway session",
            "DELETE",
            "/whep/porch/0123456789abcdef",
            Expect::Status(404, "no such session"),
        ),
    ]);
    cases.extend(websocket_cases());
    let failures = target.run(&cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    let status = wait_status(&daemon.base_url, "sessions", 2);
    assert_eq!(status["sessions"], 2, "{status}");
    target.finish().await;
    let (code, channels) = get(&format!("{base}/api/channels")).unwrap();
    assert_eq!(code, 200);
    assert!(channels.contains("porch"), "{channels}");
}

const VIEWER_TOKEN: &str = "viewer-token-0123456789";

/// A request with a token (`Authorization` header or query) that must be refused.
fn unauthorized(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> Case {
    Case {
        name,
        probe: Probe::Http {
            method,
            path,
            headers,
            body: Body::Vp8Offer,
        },
        expect: Expect::Status(401, "a valid token is needed"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_onaird_refuses_missing_and_wrong_tokens_while_its_viewers_keep_decoding() {
    let daemon = Daemon::start(&format!(
        "{SMALL}[access]\nviewer_token = \"{VIEWER_TOKEN}\"\n"
    ))
    .unwrap();
    let base = daemon.base_url.clone();
    let ws = format!("{}/ws", base.replacen("http://", "ws://", 1));
    let target = Target::new(
        base.clone(),
        vec![
            (
                "WHEP viewer with a Bearer token",
                Via::WhepBearer {
                    url: format!("{base}/whep"),
                    token: VIEWER_TOKEN.into(),
                },
            ),
            (
                "channel viewer with ?token=",
                Via::Channel {
                    ws_url: ws,
                    channel: "onair".into(),
                    token: Some(VIEWER_TOKEN.into()),
                    we_offer: true,
                },
            ),
        ],
    )
    .await;
    const WRONG: &[(&str, &str)] = &[
        ("content-type", "application/sdp"),
        ("authorization", "Bearer viewer-token-0123456788"),
    ];
    const NOT_BEARER: &[(&str, &str)] = &[
        ("content-type", "application/sdp"),
        ("authorization", "Basic dmlld2VyOnRva2Vu"),
    ];
    let cases = [
        unauthorized("POST /whep without a token", "POST", "/whep", SDP),
        unauthorized(
            "POST /whep with a wrong Bearer token",
            "POST",
            "/whep",
            WRONG,
        ),
        unauthorized("POST /whep with Basic auth", "POST", "/whep", NOT_BEARER),
        unauthorized(
            "POST /whep with a wrong ?token=",
            "POST",
            "/whep?token=viewer-token-0123456788",
            SDP,
        ),
        unauthorized(
            "POST /whep with an empty ?token=",
            "POST",
            "/whep?token=",
            SDP,
        ),
        unauthorized(
            "POST to the gateway without a token",
            "POST",
            "/whep/onair",
            SDP,
        ),
        unauthorized("GET / without a token", "GET", "/", &[]),
        unauthorized("GET /api/status without a token", "GET", "/api/status", &[]),
        unauthorized("GET /metrics without a token", "GET", "/metrics", &[]),
        unauthorized(
            "GET /api/channels without a token",
            "GET",
            "/api/channels",
            &[],
        ),
        unauthorized("GET /c/onair without a token", "GET", "/c/onair", &[]),
        unauthorized("GET /ws without a token", "GET", "/ws", &[]),
        unauthorized(
            "DELETE /whep/{id} without a token",
            "DELETE",
            "/whep/0123456789abcdef",
            &[],
        ),
    ];
    let failures = target.run(&cases).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Health stays open for monitoring.
    assert_eq!(get(&format!("{base}/healthz")).unwrap().0, 200);
    target.finish().await;
}
