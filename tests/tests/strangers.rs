//! What a stranger on the camera's network cannot do: find or end another viewer's session,
//! reach the camera from another site's page (a WebSocket, a POST) or through another host
//! name (DNS rebinding), or act as an operator without the operator token.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use onair_tests::daemon::{Daemon, agent, get, operator_access, operator_status};
use onair_tests::viewer::{Via, Viewer, Watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n";
const VIEWER: &str = "viewer-token-0123456789";

/// `method path` with `headers` → (status, body).
fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = agent().run(request.body(body.to_owned()).unwrap()).unwrap();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), text)
}

/// `GET path` sent by hand to `base_url`'s address with `Host: host` → the status.
fn status_for_host(base_url: &str, path: &str, host: &str) -> u16 {
    let addr = base_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("Host {host}: no status in {answer:?}"))
}

/// The status a WebSocket handshake to `url` from a page of `origin` gets (101: open).
async fn websocket(url: &str, origin: Option<&str>) -> u16 {
    let mut handshake = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        handshake
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(handshake).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("{url} from {origin:?}: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_viewer_can_neither_see_nor_end_nor_restart_a_session() {
    let daemon = Daemon::start(&format!("{SMALL}{}", operator_access())).unwrap();
    let base = daemon.base_url.clone();
    let how = Watch::decoding(usize::MAX, Duration::from_secs(120));
    let first = Viewer::join(Via::Whep(format!("{base}/whep")), how)
        .await
        .unwrap();
    let seen = first.wait_for(10, Duration::from_secs(30)).await;
    assert!(seen.frames_decoded >= 10, "{seen:?}");
    let resource = first.session_url().unwrap();
    let id = resource.rsplit('/').next().unwrap().to_owned();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "128 random bits: {id}"
    );

    // Another viewer reads the counts, never the id.
    for path in ["/api/status", "/metrics", "/api/channels"] {
        let (code, body) = get(&format!("{base}{path}")).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        assert!(!body.contains(&id), "{path} shows the session id: {body}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&get(&format!("{base}/api/status")).unwrap().1).unwrap();
    assert_eq!(status["sessions"], 1, "{status}");
    assert!(status.get("peers").is_none(), "{status}");
    let operator = operator_status(&base).unwrap();
    assert_eq!(operator["peers"][0]["id"], id.as_str(), "{operator}");

    // Guesses end nothing and restart nothing.
    let upper = id.to_uppercase();
    let restart = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901234\r\n";
    let guesses = [
        "0123456789abcdef0123456789abcdef",
        &id[..31],
        &upper,
        "",
        "%2e%2e",
    ];
    for guess in guesses {
        let url = format!("{base}/whep/{guess}");
        let (code, body) = request("DELETE", &url, &[], "");
        assert!(code == 404 || code == 405, "DELETE {url}: {code} {body}");
        let fragment = [
            ("content-type", "application/trickle-ice-sdpfrag"),
            ("if-match", "*"),
        ];
        let (code, body) = request("PATCH", &url, &fragment, restart);
        assert!(code == 404 || code == 405, "PATCH {url}: {code} {body}");
    }

    // The first viewer never noticed; its own id ends its session.
    let before = first.frames();
    let after = first.wait_for(before + 15, Duration::from_secs(30)).await;
    assert!(
        after.frames_decoded >= before + 15 && !first.ended(),
        "{after:?}"
    );
    let report = first.leave().await.unwrap();
    assert_eq!(report.delete_status, 200, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_pages_and_other_host_names_get_nothing_without_a_token() {
    let open = Daemon::start(SMALL).unwrap();
    let base = open.base_url.clone();
    let ws = format!("{}/ws", base.replacen("http://", "ws://", 1));

    // A page of another site, opened in a browser on the camera's network: refused; the
    // camera's own page and clients that are not browsers (no Origin) are not.
    assert_eq!(websocket(&ws, Some("http://evil.example")).await, 403);
    assert_eq!(websocket(&ws, Some("null")).await, 403);
    assert_eq!(websocket(&ws, Some(&base)).await, 101);
    assert_eq!(websocket(&ws, None).await, 101);
    let evil = [
        ("origin", "http://evil.example"),
        ("content-type", "application/sdp"),
    ];
    let (code, body) = request("POST", &format!("{base}/whep"), &evil, "v=0\r\n");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cors_origins"), "{body}");
    let (code, body) = request("GET", &format!("{base}/snapshot.jpg"), &evil, "");
    assert_eq!(code, 403, "{body}");

    // DNS rebinding: a request naming another host gets nothing, not even health.
    let port = base.rsplit(':').next().unwrap();
    for host in ["evil.example", &format!("evil.example:{port}")] {
        for path in ["/api/status", "/healthz", "/snapshot.jpg", "/ws"] {
            assert_eq!(status_for_host(&base, path, host), 421, "{host} {path}");
        }
    }
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        assert_eq!(status_for_host(&base, "/api/status", &host), 200, "{host}");
    }

    // Operator actions with no operator token configured: refused, naming the key.
    for (method, path, body) in [
        ("DELETE", "/recordings/2026-12-07T00-00-00Z.mp4", ""),
        ("PUT", "/api/privacy", "{\"on\": true}"),
    ] {
        let json = [("content-type", "application/json")];
        let (code, text) = request(method, &format!("{base}{path}"), &json, body);
        assert_eq!(code, 403, "{method} {path}: {text}");
        assert!(text.contains("access.operator_token"), "{text}");
    }
    drop(open);

    // An origin listed in [http] cors_origins may; with a viewer token, a player of any
    // site presenting it may (the token guards the stream), one without it may not.
    let listed = Daemon::start(&format!(
        "{SMALL}[http]\nlisten = \"127.0.0.1:0\"\ncors_origins = [\"https://home.example\"]\n\
         [webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n"
    ))
    .unwrap();
    let ws = format!("{}/ws", listed.base_url.replacen("http://", "ws://", 1));
    assert_eq!(websocket(&ws, Some("https://home.example")).await, 101);
    assert_eq!(websocket(&ws, Some("https://evil.example")).await, 403);
    drop(listed);
    let guarded =
        Daemon::start(&format!("{SMALL}[access]\nviewer_token = \"{VIEWER}\"\n")).unwrap();
    let ws = format!("{}/ws", guarded.base_url.replacen("http://", "ws://", 1));
    let player = Some("https://player.example");
    assert_eq!(
        websocket(&format!("{ws}?token={VIEWER}"), player).await,
        101
    );
    assert_eq!(websocket(&ws, player).await, 403);
    let port = guarded.base_url.rsplit(':').next().unwrap();
    let rebound = format!("evil.example:{port}");
    let path = format!("/api/status?token={VIEWER}");
    assert_eq!(status_for_host(&guarded.base_url, &path, &rebound), 421);
}
