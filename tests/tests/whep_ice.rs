//! WHEP and ICE over HTTP: the answer names the configured ICE servers in `Link` headers (and
//! `/api/ice-servers` gives them to pages) and
//! its ICE session in an `ETag`; a viewer that trickles PATCHes its candidates (RFC 9725 §4.3,
//! RFC 8840 fragments) and gets `204`; what is not a trickle gets the status that says why.

use std::time::Duration;

use onair_tests::daemon::{Daemon, agent};
use onair_tests::viewer::{Via, Viewer, Watch};

const CONFIG: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n\
    [http]\nlisten = \"127.0.0.1:0\"\n\
    [webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n\
    [[webrtc.ice_servers]]\nurls = [\"turn:127.0.0.1:9?transport=udp\"]\nusername = \"cam\"\ncredential = \"pass-word\"\n";

const FRAGMENT: &str = "a=ice-ufrag:trkl\r\na=ice-pwd:trickle-password-0123456789\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\n\
    a=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host\r\n\
    a=end-of-candidates\r\n";

struct Patch<'a> {
    content_type: &'a str,
    if_match: Option<&'a str>,
    body: &'a str,
}

fn patch(url: &str, p: Patch<'_>) -> (u16, String) {
    let mut request = agent().patch(url).header("content-type", p.content_type);
    if let Some(tag) = p.if_match {
        request = request.header("if-match", tag);
    }
    let mut response = request.send(p.body).unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_name_ice_servers_and_trickled_candidates_are_taken() {
    let daemon = Daemon::start(CONFIG).unwrap();
    let offer = onair_tests::viewer::plain_offer().await.unwrap();
    let response = agent()
        .post(&format!("{}/whep", daemon.base_url))
        .header("content-type", "application/sdp")
        .send(offer)
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let header = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        header("link"),
        [
            "<turn:127.0.0.1:9?transport=udp>; rel=\"ice-server\"; username=\"cam\"; credential=\"pass-word\"; credential-type=\"password\""
        ]
    );
    // Pages joining over signalling get the same servers from /api/ice-servers, in the
    // shape of WebRTC's RTCIceServer.
    let mut servers = agent()
        .get(&format!("{}/api/ice-servers", daemon.base_url))
        .call()
        .unwrap();
    assert_eq!(servers.status().as_u16(), 200);
    let servers: serde_json::Value =
        serde_json::from_str(&servers.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        servers,
        serde_json::json!([{
            "urls": ["turn:127.0.0.1:9?transport=udp"],
            "username": "cam",
            "credential": "pass-word"
        }])
    );
    let etag = header("etag").pop().expect("an ETag");
    let location = header("location").pop().expect("a Location");
    let session = format!("{}{location}", daemon.base_url);
    let trickle = |if_match, body| Patch {
        content_type: "application/trickle-ice-sdpfrag",
        if_match,
        body,
    };

    assert_eq!(patch(&session, trickle(Some(&etag), FRAGMENT)).0, 204);
    assert_eq!(
        patch(&session, trickle(None, FRAGMENT)).0,
        204,
        "If-Match is optional"
    );
    let (status, why) = patch(&session, trickle(Some("\"another\""), FRAGMENT));
    assert_eq!(status, 412, "{why}");
    // An ICE restart without credentials says what it needs.
    let (status, why) = patch(&session, trickle(Some("*"), "a=end-of-candidates\r\n"));
    assert_eq!((status, why.contains("a=ice-ufrag")), (400, true), "{why}");
    let (status, why) = patch(&session, trickle(Some(&etag), "no fragment at all"));
    assert_eq!((status, why.contains("line 1")), (400, true), "{why}");
    let sdp = Patch {
        content_type: "application/sdp",
        if_match: None,
        body: FRAGMENT,
    };
    assert_eq!(patch(&session, sdp).0, 415);
    let gone = format!("{}/whep/0123456789abcdef", daemon.base_url);
    assert_eq!(patch(&gone, trickle(None, FRAGMENT)).0, 404);

    let mut deleted = agent().delete(&session).call().unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    let _ = deleted.body_mut().read_to_string();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_restarts_ice_over_patch_and_keeps_watching() {
    let daemon = Daemon::start(CONFIG).unwrap();
    let whep = format!("{}/whep", daemon.base_url);
    let how = Watch::decoding(usize::MAX, Duration::from_secs(60));
    let viewer = Viewer::join(Via::Whep(whep), how).await.unwrap();
    let before = viewer.wait_for(30, Duration::from_secs(60)).await;
    assert!(before.frames_decoded >= 30, "{before:?}");

    // Restarts with unusable credentials are refused, naming them, and leave the session as
    // it was: the next, good restart is taken.
    let session = viewer.session_url().unwrap();
    for (body, named) in [
        (
            "a=ice-ufrag:\r\na=ice-pwd:0123456789012345678901234\r\n",
            "ice-ufrag",
        ),
        ("a=ice-ufrag:abcd\r\na=ice-pwd:short\r\n", "ice-pwd"),
        (
            "a=ice-ufrag:ab cd\r\na=ice-pwd:0123456789012345678901234\r\n",
            "ice-ufrag",
        ),
    ] {
        let bad = Patch {
            content_type: "application/trickle-ice-sdpfrag",
            if_match: Some("*"),
            body,
        };
        let (code, why) = patch(&session, bad);
        assert_eq!(code, 400, "{body:?}: {why}");
        assert!(why.contains(named), "{body:?}: {why}");
    }

    let restarted = viewer.restart_ice().await.unwrap();
    // New credentials from the camera, and a new entity tag for the new ICE session.
    let ufrag = restarted
        .fragment
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap_or_default();
    assert!(
        !ufrag.is_empty() && ufrag != restarted.old_ufrag,
        "{restarted:?}"
    );
    assert!(restarted.fragment.contains("a=candidate:"), "{restarted:?}");
    assert!(restarted.etag.ends_with(".1\""), "{restarted:?}");

    // The old ICE session is gone (its checks fail at once), so pictures that keep coming
    // come over the new one.
    let want = before.frames_decoded + 60;
    let after = viewer.wait_for(want, Duration::from_secs(60)).await;
    assert!(after.frames_decoded >= want, "after the restart: {after:?}");
    assert!(!after.connection_ended, "{after:?}");

    // A trickle for the old ICE session is refused; for the new one, taken.
    let old_tag = restarted.etag.replace(".1\"", ".0\"");
    let trickle = |tag| Patch {
        content_type: "application/trickle-ice-sdpfrag",
        if_match: Some(tag),
        body: "a=end-of-candidates\r\n",
    };
    assert_eq!(patch(&session, trickle(&old_tag)).0, 412);
    assert_eq!(patch(&session, trickle(&restarted.etag)).0, 204);
    let report = viewer.leave().await.unwrap();
    assert_eq!(report.delete_status, 200, "{report:?}");
}
