//! What onaird answers to offers of every H.264 kind browsers and players send: `201` with
//! one payload type per format, the one that fits (packetization mode 1, the stream's
//! profile), or `400` naming what is missing — never an answer in a mode or profile the
//! stream is not in.

use onair_tests::daemon::{Daemon, agent};

/// A browser's offer (recvonly video), with the video formats of `formats` from this list:
/// 96 VP8; H.264 102 baseline, 103 baseline in mode 0, 104 constrained baseline, 106
/// constrained baseline in mode 0, 108 main, 112 constrained high, 114 constrained baseline
/// written another way (`42c01f`, which webrtc-rs does not match to `42e0`: refused too).
fn offer(formats: &[u8]) -> String {
    let list: Vec<String> = formats.iter().map(u8::to_string).collect();
    let fingerprint: Vec<String> = (0..32).map(|i| format!("{:02X}", i * 7 % 256)).collect();
    let h264 = |pt: u8, mode: u8, profile: &str| {
        format!(
            "a=rtpmap:{pt} H264/90000\r\na=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n\
             a=fmtp:{pt} level-asymmetry-allowed=1;packetization-mode={mode};profile-level-id={profile}\r\n"
        )
    };
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=ice-options:trickle\r\n\
         a=fingerprint:sha-256 {}\r\na=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
         a=rtpmap:96 VP8/90000\r\n{}{}{}{}{}{}{}",
        list.join(" "),
        fingerprint.join(":"),
        h264(102, 1, "42001f"),
        h264(103, 0, "42001f"),
        h264(104, 1, "42e01f"),
        h264(106, 0, "42e01f"),
        h264(108, 1, "4d001f"),
        h264(112, 1, "640c1f"),
        h264(114, 1, "42c01f"),
    )
}

/// `POST /whep` with `sdp` → (status, body).
fn post(base: &str, sdp: &str) -> (u16, String) {
    let mut response = agent()
        .post(&format!("{base}/whep"))
        .header("content-type", "application/sdp")
        .send(sdp)
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn every_h264_offer_gets_an_answer_in_the_streams_mode_and_profile_or_400() {
    let daemon =
        Daemon::start("[video]\nwidth = 320\nheight = 240\nfps = 15\n[audio]\nenabled = false\n")
            .unwrap();
    // (formats offered, the payload type the answer must send H.264 on, or None for 400)
    let table: [(&[u8], Option<u8>); 9] = [
        (&[96, 102, 103, 104, 106, 108, 112], Some(104)),
        (&[106, 104], Some(104)),
        (&[103, 106], None),
        (&[112], None),
        (&[108], None),
        (&[102], None),
        (&[96], None),
        (&[114], None),
        (&[112, 106, 114, 104], Some(104)),
    ];
    for (formats, sent_on) in table {
        let (status, body) = post(&daemon.base_url, &offer(formats));
        match sent_on {
            None => {
                assert_eq!(status, 400, "{formats:?}: {body}");
                assert!(
                    body.contains("packetization-mode=1") && body.contains("constrained baseline"),
                    "{formats:?}: {body}"
                );
            }
            Some(pt) => {
                assert_eq!(status, 201, "{formats:?}: {body}");
                let m_line = body
                    .lines()
                    .find(|l| l.starts_with("m=video"))
                    .unwrap_or_else(|| panic!("{formats:?}: no m=video in {body}"));
                let answered: Vec<&str> = m_line.split(' ').skip(3).collect();
                let mut unique = answered.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), answered.len(), "{formats:?}: {m_line}");
                assert_eq!(
                    answered.first(),
                    Some(&pt.to_string().as_str()),
                    "{formats:?}: {m_line}"
                );
                // The answer's own format parameters for it are mode 1.
                let fmtp = format!("a=fmtp:{pt} ");
                let params = body.lines().find(|l| l.starts_with(&fmtp)).unwrap_or("");
                assert!(
                    params.contains("packetization-mode=1"),
                    "{formats:?}: {params}"
                );
            }
        }
    }
}
