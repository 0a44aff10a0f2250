//! WHEP offers (and the SDP that comes back through the gateway): what onaird and
//! onair-signal do with the text before webrtc-rs takes it.
//!
//! The first byte picks the Content-Type (see [`CONTENT_TYPES`]); the rest is the body, up to
//! a NUL byte if there is one; after it come candidates, one a line, as a camera trickles them.
//! 1. `onair_signal::whep::sdp_offer`, the check both servers make on `POST /whep`: an offer it
//!    accepts must really be UTF-8 SDP of at most `MAX_OFFER` bytes sent as
//!    `application/sdp`;
//! 2. parsing, as `RTCSessionDescription::offer` (and `::answer`) does it (rtc-sdp);
//! 3. onaird's choice of payload types from negotiated SDP (`negotiate::payload_type`): the
//!    same each time, and one the section's `m=` line lists with that codec;
//! 4. the gateway writing a trickling camera's candidates into its answer
//!    (`whep::with_candidates`): those after the NUL, by m-line 0, 1, 2, 3, 0, …;
//! 5. onaird announcing its host candidates on its port and at NAT addresses (`nat::announce`).
#![no_main]

use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use onair_signal::whep::{MAX_OFFER, sdp_offer, with_candidates};
use onaird::webrtc::nat;
use onaird::webrtc::negotiate::{Wanted, payload_type};
use rtc_sdp::description::session::SessionDescription;

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/sdp"),
    Some("application/sdp; charset=utf-8"),
    Some("Application/SDP"),
    Some(" application/sdp ;x"),
    Some("text/plain"),
    Some("application/sdpx"),
    Some(""),
    None,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (body, trickled) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &[][..]),
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let mut headers = HeaderMap::new();
    if let Some(value) = content_type {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
    }
    let offer = match sdp_offer(&headers, body) {
        Ok(offer) => offer,
        Err((status, why)) => {
            assert!(status.is_client_error(), "{status}");
            assert!(!why.is_empty());
            return;
        }
    };
    // What was accepted is what was sent, and fits the rules.
    assert_eq!(offer.as_bytes(), body);
    assert!(body.len() <= MAX_OFFER);
    let mime = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default();
    assert!(
        mime.trim().eq_ignore_ascii_case("application/sdp"),
        "{content_type:?}"
    );
    assert!(offer.trim_start().starts_with("v=0"));

    let Ok(mut sdp) = SessionDescription::unmarshal(&mut std::io::Cursor::new(offer)) else {
        return;
    };
    let h264 = Wanted::H264 {
        profile_level_id: "42e01f",
    };
    for wanted in [h264, Wanted::Opus] {
        for towards_us_only in ["recvonly", "sendonly"] {
            let chosen = payload_type(&sdp, wanted, towards_us_only);
            assert_eq!(chosen, payload_type(&sdp, wanted, towards_us_only));
            if let Some(pt) = chosen {
                let listed = sdp.media_descriptions.iter().any(|m| {
                    m.media_name.media == wanted.media()
                        && m.media_name.formats.iter().any(|f| f.parse() == Ok(pt))
                        && m.codecs().get(&pt).is_some_and(|c| wanted.fits(c))
                });
                assert!(listed, "payload type {pt} is not a listed {wanted:?}");
            }
        }
    }

    let candidates: Vec<(String, u32)> = String::from_utf8_lossy(trickled)
        .lines()
        .enumerate()
        .map(|(i, line)| (line.to_owned(), i as u32 % 4))
        .collect();
    let merged = with_candidates(offer, &candidates);
    if candidates.is_empty() {
        assert_eq!(merged, offer);
    }

    nat::announce(
        &mut sdp,
        &["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
    );
    let _ = sdp.marshal();
});
