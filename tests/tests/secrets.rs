//! Secrets stay secret: a WHIP URL's stream key is in neither the log (at debug level) nor a
//! viewer's `/api/status`, and the WHIP token goes to `whip.url`'s origin only, not to the
//! host a redirect names.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use onair_tests::daemon::{Daemon, get};
use onair_tests::viewer::{Via, Viewer, Watch};

use onair_tests::daemon::OPERATOR;
const WHIP_TOKEN: &str = "whip-token-0123456789";

/// One request a [`FakeServer`] received: its path and `Authorization` header.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

/// An HTTP server on 127.0.0.1 (a port it picks) that answers every request with `answer`
/// and keeps what it was sent.
struct FakeServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    fn start(answer: String) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
                let (mut authorization, mut length) = (None, 0usize);
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or_default();
                    match name.trim().to_ascii_lowercase().as_str() {
                        "authorization" => authorization = Some(value.trim().to_owned()),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
                let mut body = vec![0; length.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                kept.lock().unwrap().push(Seen {
                    path,
                    authorization,
                });
                let _ = (&stream).write_all(answer.as_bytes());
            }
        });
        FakeServer { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[test]
fn the_whip_stream_key_is_not_shown_and_a_redirect_elsewhere_gets_no_token() {
    // The ingest a redirect names: another origin (another port), busy.
    let elsewhere = FakeServer::start(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
    );
    let front = FakeServer::start(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{}/ingest/SECRETKEY\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        elsewhere.port
    ));
    let url = format!("http://127.0.0.1:{}/whip/SECRETKEY", front.port);
    let daemon = Daemon::start_with_env(
        &format!(
            "[video]\nwidth = 320\nheight = 240\n[audio]\nenabled = false\n\
             [access]\noperator_token = \"{OPERATOR}\"\n\
             [whip]\nurl = \"{url}\"\ntoken = \"{WHIP_TOKEN}\"\n"
        ),
        &[("RUST_LOG", "debug".as_ref())],
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while elsewhere.seen().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no POST reached the redirect's target"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (to_front, to_elsewhere) = (front.seen(), elsewhere.seen());
    eprintln!("front: {to_front:?}; elsewhere: {to_elsewhere:?}");
    assert_eq!(
        to_front[0].authorization.as_deref(),
        Some(format!("Bearer {WHIP_TOKEN}").as_str())
    );
    assert_eq!(to_elsewhere[0].path, "/ingest/SECRETKEY");
    assert_eq!(
        to_elsewhere[0].authorization, None,
        "the token went elsewhere"
    );

    // A viewer's status shows the endpoint without its key; the operator's shows it.
    let (code, viewer) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
    assert_eq!(code, 200);
    assert!(!viewer.contains("SECRETKEY"), "{viewer}");
    let status: serde_json::Value = serde_json::from_str(&viewer).unwrap();
    let shown = status["whip"]["url"].as_str().unwrap_or_default();
    assert!(
        shown.starts_with(&format!("http://127.0.0.1:{}/", front.port)),
        "{status}"
    );
    let (_, operator) = get(&format!("{}/api/status?token={OPERATOR}", daemon.base_url)).unwrap();
    assert!(operator.contains(&url), "{operator}");

    // Nothing the daemon logged at debug level shows the key or the token.
    let (_, log) = daemon.stop_with_log().unwrap();
    assert_no_secret(&log, " DEBUG ", &["SECRETKEY", WHIP_TOKEN]);
}

/// Asserts `log` has lines at `level` (so the test logged what it meant to) and none holding
/// any of `secrets`.
fn assert_no_secret(log: &[String], level: &str, secrets: &[&str]) {
    assert!(
        log.iter().any(|l| l.contains(level)),
        "{level} is on: {log:?}"
    );
    let leaks: Vec<&String> = log
        .iter()
        .filter(|line| secrets.iter().any(|secret| line.contains(secret)))
        .collect();
    assert!(leaks.is_empty(), "{leaks:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_passwords_are_not_logged_even_at_trace_level() {
    let daemon = Daemon::start_with_env(
        "[video]\nwidth = 320\nheight = 240\nfps = 15\n[audio]\nenabled = false\n",
        &[("RUST_LOG", "trace".as_ref())],
    )
    .unwrap();
    let whep = format!("{}/whep", daemon.base_url);
    let how = Watch::decoding(10, Duration::from_secs(30));
    let viewer = Viewer::join(Via::Whep(whep), how).await.unwrap();
    let seen = viewer.wait_for(10, Duration::from_secs(30)).await;
    assert!(seen.frames_decoded >= 10, "{seen:?}");
    let passwords = viewer.ice_passwords().await;
    assert_eq!(
        passwords.len(),
        2,
        "the viewer's and the camera's: {passwords:?}"
    );
    viewer.leave().await.unwrap();
    let (_, log) = daemon.stop_with_log().unwrap();
    let passwords: Vec<&str> = passwords.iter().map(String::as_str).collect();
    assert_no_secret(&log, " TRACE ", &passwords);
}
