//! Who may watch: `[access]` tokens, CORS, HTTPS and the token file, seen from outside.

use std::time::Duration;

use onair_tests::daemon::{Daemon, agent, binary, get};
use onair_tests::viewer::{Report, Via, Watch, watch, watch_via};

const VIEWER: &str = "viewer-token-0123456789";
use onair_tests::daemon::OPERATOR;
const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n";

fn protected() -> Daemon {
    Daemon::start(&format!(
        "{SMALL}[access]\nviewer_token = \"{VIEWER}\"\noperator_token = \"{OPERATOR}\"\n"
    ))
    .unwrap()
}

/// `method url` with `headers` → (status, response headers as `name: value` lines, body).
fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut request = axum::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = agent().run(request.body(body.to_owned()).unwrap()).unwrap();
    let head = response
        .headers()
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap_or("")))
        .collect();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), head, text)
}

fn decoded(report: &Report) {
    assert!(report.frames_decoded >= 10, "{report:?}");
    assert_eq!(report.delete_status, 200, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_token_guards_everything_but_health() {
    let daemon = protected();
    let base = daemon.base_url.clone();
    for path in [
        "/",
        "/api/status",
        "/metrics",
        "/api/channels",
        "/c/onair",
        "/ws",
    ] {
        let (status, head, body) = request("GET", &format!("{base}{path}"), &[], "");
        assert_eq!(status, 401, "GET {path}: {body}");
        assert!(
            head.contains("www-authenticate: Bearer"),
            "GET {path}: {head}"
        );
        let wrong = request(
            "GET",
            &format!("{base}{path}?token=wrong-token-0123456789"),
            &[],
            "",
        );
        assert_eq!(wrong.0, 401, "GET {path} with a wrong token");
    }
    let offer = "v=0\r\n";
    let (status, _, _) = request(
        "POST",
        &format!("{base}/whep"),
        &[("content-type", "application/sdp")],
        offer,
    );
    assert_eq!(status, 401, "POST /whep without a token");
    assert_eq!(get(&format!("{base}/healthz")).unwrap().0, 200);
    assert_eq!(get(&format!("{base}/onair.js")).unwrap().0, 200);

    let page = get(&format!("{base}/?token={VIEWER}")).unwrap();
    assert!(page.0 == 200 && page.1.contains("onair.js"), "{page:?}");
    for token in [VIEWER, OPERATOR] {
        let bearer = format!("Bearer {token}");
        let (status, _, body) = request(
            "GET",
            &format!("{base}/api/status"),
            &[("authorization", &bearer)],
            "",
        );
        assert!(
            status == 200 && body.contains("\"channel\""),
            "{status} {body}"
        );
    }

    // An independent check of the media path: Bearer (RFC 9725), then ?token=.
    let how = || Watch::decoding(10, Duration::from_secs(60));
    let url = format!("{base}/whep");
    let report = watch_via(
        Via::WhepBearer {
            url: url.clone(),
            token: VIEWER.into(),
        },
        how(),
    )
    .await
    .unwrap();
    decoded(&report);
    let report = watch(&format!("{url}?token={VIEWER}"), how())
        .await
        .unwrap();
    decoded(&report);
    let refused = watch(&url, how()).await.unwrap_err().to_string();
    assert!(refused.contains("401"), "{refused}");

    // Tokens that clients present are never logged.
    let log: Vec<String> = daemon.log.try_iter().collect();
    assert!(
        !log.iter()
            .any(|line| line.contains("wrong-token") || line.contains(OPERATOR)),
        "a token in the log:\n{}",
        log.join("\n")
    );
}

fn preflight(base: &str, origin: &str) -> String {
    let (status, head, _) = request(
        "OPTIONS",
        &format!("{base}/whep"),
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type, authorization",
            ),
        ],
        "",
    );
    assert!(status < 500, "preflight answered {status}");
    head.lines()
        .find_map(|l| l.strip_prefix("access-control-allow-origin: "))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn other_origins_are_granted_only_when_a_token_guards_the_stream_or_they_are_listed() {
    let open = Daemon::start(SMALL).unwrap();
    assert_eq!(preflight(&open.base_url, "http://evil.example"), "");
    // A simple cross-origin read gets no grant either.
    let (_, head, _) = request(
        "GET",
        &format!("{}/api/status", open.base_url),
        &[("origin", "http://evil.example")],
        "",
    );
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    drop(open);

    let listed = Daemon::start(&format!("{SMALL}\n[http]\nlisten = \"127.0.0.1:0\"\ncors_origins = [\"https://home.example\"]\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n")).unwrap();
    assert_eq!(
        preflight(&listed.base_url, "https://home.example"),
        "https://home.example"
    );
    assert_eq!(preflight(&listed.base_url, "http://evil.example"), "");
    drop(listed);

    let guarded = protected();
    assert_eq!(preflight(&guarded.base_url, "http://evil.example"), "*");
}

#[test]
fn the_token_file_is_made_on_first_start_and_print_url_shows_it() {
    let dir = std::env::temp_dir().join(format!("onair-access-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access.toml");
    let config_text = format!(
        "{SMALL}[http]\nlisten = \"127.0.0.1:18089\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n[access]\ntoken_file = \"{}\"\n",
        file.display()
    );
    let config = dir.join("onair.toml");
    std::fs::write(&config, &config_text).unwrap();
    // The daemon itself listens where it can; --print-url only reads the config's address.
    let daemon_text = config_text.replace("127.0.0.1:18089", "127.0.0.1:0");
    let print_url = || {
        std::process::Command::new(binary())
            .args(["--print-url", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let before = print_url();
    assert!(!before.status.success());
    assert!(
        String::from_utf8_lossy(&before.stderr).contains("access.token_file: cannot read"),
        "{before:?}"
    );

    let daemon = Daemon::start(&daemon_text).unwrap();
    let made = std::fs::read_to_string(&file).unwrap();
    let after = print_url();
    assert!(after.status.success(), "{after:?}");
    let url = String::from_utf8(after.stdout).unwrap().trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:18089/?token="), "{url}");
    let token = url.rsplit('=').next().unwrap().to_owned();
    assert_eq!(token.len(), 32, "{url}");
    assert!(made.contains(&token), "{made}");
    eprintln!("--print-url: {url}");
    assert_eq!(
        get(&format!("{}/api/status", daemon.base_url)).unwrap().0,
        401
    );
    assert_eq!(
        get(&format!("{}/api/status?token={token}", daemon.base_url))
            .unwrap()
            .0,
        200
    );
    // The journal shows the new viewer URL when the tokens are made.
    let (_, first_log) = daemon.stop_with_log().unwrap();
    assert!(
        first_log
            .iter()
            .any(|l| l.contains(&format!("?token={token}"))),
        "{first_log:?}"
    );

    // A restart keeps the tokens, and the journal no longer shows them.
    let again = Daemon::start(&daemon_text).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), made);
    assert_eq!(
        get(&format!("{}/api/status?token={token}", again.base_url))
            .unwrap()
            .0,
        200
    );
    let (_, log) = again.stop_with_log().unwrap();
    assert!(!log.iter().any(|l| l.contains(&token)), "{log:?}");
    assert!(log.iter().any(|l| l.contains("--print-url")), "{log:?}");

    // A token file emptied or garbled (a crash, a bad edit) stops onaird, naming the file:
    // it never runs open.
    for text in ["", "viewer_token = \""] {
        std::fs::write(&file, text).unwrap();
        let (status, stderr) = exits_within(&config, Duration::from_secs(30));
        assert!(status.is_some_and(|s| !s.success()), "{text:?}: {stderr}");
        assert!(
            stderr.contains(&format!("access.token_file {}", file.display())),
            "{text:?}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn https_with_a_certificate() {
    let dir = std::env::temp_dir().join(format!("onair-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key, config) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("onair.toml"),
    );
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::write(
        &config,
        format!(
            "{SMALL}[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n[access]\nviewer_token = \"{VIEWER}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let spawned =
        onair_tests::daemon::spawn(&binary(), &["--config".as_ref(), config.as_os_str()], &[])
            .unwrap();
    let (mut daemon, base) = (spawned.process, spawned.url);
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let trusted: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    ureq::tls::Certificate::from_pem(cert_pem.as_bytes()).unwrap(),
                ])))
                .build(),
        )
        .build()
        .into();
    let status = |path: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answer = trusted
                .get(&format!("{base}{path}"))
                .call()
                .map(|r| r.status().as_u16());
            match answer {
                Ok(503) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                other => break other.unwrap(),
            }
        }
    };
    assert_eq!(status("/healthz"), 200);
    assert_eq!(status("/api/status"), 401);
    assert_eq!(status(&format!("/api/status?token={VIEWER}")), 200);
    let mut answer = trusted
        .post(&format!("{base}/whep"))
        .header("content-type", "application/sdp")
        .header("authorization", format!("Bearer {VIEWER}"))
        .send(&b"v=0\r\n"[..])
        .unwrap();
    assert_eq!(
        answer.status().as_u16(),
        400,
        "{:?}",
        answer.body_mut().read_to_string()
    );
    // Plain HTTP on the HTTPS port is not served, and the certificate is checked.
    let plain = base.replacen("https://", "http://", 1);
    assert!(get(&format!("{plain}/healthz")).is_err());
    assert!(
        get(&format!("{base}/healthz")).is_err(),
        "an untrusted certificate"
    );
    daemon.stop().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `onaird --config config`; its exit status (`None` if it still ran after `limit`, and
/// was killed) and what it printed on stderr.
fn exits_within(
    config: &std::path::Path,
    limit: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let mut child = std::process::Command::new(binary())
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (status, stderr)
}
