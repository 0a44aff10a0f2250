//! SDP offer/answer with one viewer, either way round: the viewer offers (WHEP, a consumer
//! that sends its offer with `startSession`) and we answer, or we offer (a consumer that asks
//! the producer to) and the viewer answers. Either way every one of our candidates is in
//! our SDP: no trickle needed from our side.
//!
//! Each step is a function over the connection's core, run by the loop that owns it
//! (`webrtc::engine`): applying the remote description and adding our tracks first, then
//! (once our candidates are in the core) describing ours.

use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::sdp::{RTCSdpType, RTCSessionDescription};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sdp::description::session::SessionDescription;
use tracing::debug;

use super::peer::{self, PeerFactory};
use super::viewer::Track;
use super::{OfferError, nat};

/// One of our tracks on a viewer's connection, before the viewer has agreed on a payload type.
pub struct Added {
    kind: RtpCodecKind,
    sender: RTCRtpSenderId,
    ssrc: u32,
}

/// What we send: H.264 of `profile_level_id`, and Opus when audio is on.
fn codecs(factory: &PeerFactory, profile_level_id: &str) -> Vec<(RtpCodecKind, RTCRtpCodec)> {
    let mut codecs = vec![(RtpCodecKind::Video, peer::h264_codec(profile_level_id))];
    if let Some(audio) = factory.audio_codec() {
        codecs.push((RtpCodecKind::Audio, audio.clone()));
    }
    codecs
}

/// The viewer offered: applies the offer and adds our tracks; the answer is described
/// once our candidates are in ([`describe`], then [`agreed`]). Fails if the answer would not
/// carry H.264 video (audio is optional for the viewer).
pub fn take_offer(
    factory: &PeerFactory,
    profile_level_id: &str,
    pc: &mut RTCPeerConnection,
    now: Instant,
    offer: RTCSessionDescription,
) -> Result<Vec<Added>, OfferError> {
    // webrtc-rs falls back to any H.264 when none fits (packetization mode 0, another
    // profile): such an offer gets no answer at all.
    let parsed = offer
        .unmarshal()
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    if payload_type(&parsed, Wanted::H264 { profile_level_id }, "sendonly").is_none() {
        return Err(OfferError::NoVideo(profile_level_id.to_owned()));
    }
    pc.set_remote_description(now, offer)
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    let mut added = Vec::new();
    for (kind, codec) in codecs(factory, profile_level_id) {
        let (track, ssrc) = local_track(kind, codec);
        // webrtc-rs refuses a track whose codec the offer does not accept.
        match pc.add_track(track) {
            Ok(sender) => added.push(Added { kind, sender, ssrc }),
            Err(err) if kind == RtpCodecKind::Video => {
                debug!("video track refused: {err}");
                return Err(OfferError::NoVideo(profile_level_id.to_owned()));
            }
            Err(err) => debug!("viewer takes no Opus audio: {err}"),
        }
    }
    send_only(pc);
    Ok(added)
}

/// No media from a viewer is taken: every section of our answer sends only (or is inactive,
/// where we send nothing), whatever the offer proposed. webrtc-rs would answer an
/// offer's `sendrecv` with `sendrecv`, and take in the viewer's camera and microphone.
fn send_only(pc: &mut RTCPeerConnection) {
    let ids: Vec<_> = pc.get_transceivers().collect();
    for id in ids {
        if let Some(mut transceiver) = pc.rtp_transceiver(id) {
            let direction = match transceiver.sender() {
                Some(_) => RTCRtpTransceiverDirection::Sendonly,
                None => RTCRtpTransceiverDirection::Inactive,
            };
            transceiver.set_direction(direction);
        }
    }
}

/// We offer: adds our tracks (send only); the offer is described once our candidates are
/// in ([`describe`]) and the tracks wait for the viewer's answer ([`accept`]).
pub fn add_tracks(
    factory: &PeerFactory,
    profile_level_id: &str,
    pc: &mut RTCPeerConnection,
) -> Result<Vec<Added>, OfferError> {
    let mut added = Vec::new();
    for (kind, codec) in codecs(factory, profile_level_id) {
        let (track, ssrc) = local_track(kind, codec);
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            ..Default::default()
        };
        let transceiver = pc
            .add_transceiver_from_track(track, Some(init))
            .map_err(|e| OfferError::Internal(format!("adding our {kind} track: {e}")))?;
        let sender = RTCRtpSenderId::from(transceiver);
        added.push(Added { kind, sender, ssrc });
    }
    Ok(added)
}

/// The viewer answered our offer: applies the answer and returns what to send.
pub fn accept(
    pc: &mut RTCPeerConnection,
    now: Instant,
    answer: &str,
    added: Vec<Added>,
    profile_level_id: &str,
) -> Result<Vec<Track>, OfferError> {
    let answer = RTCSessionDescription::answer(answer.to_owned())
        .map_err(|e| OfferError::BadOffer(format!("bad answer: {e}")))?;
    let sdp = answer
        .unmarshal()
        .map_err(|e| OfferError::BadOffer(format!("bad answer: {e}")))?;
    pc.set_remote_description(now, answer)
        .map_err(|e| OfferError::BadOffer(format!("bad answer: {e}")))?;
    agreed(&sdp, "sendonly", added, profile_level_id)
}

/// Creates our offer or answer (`kind`) and applies it; our candidates must be in the core
/// already. Returns it parsed, and its ICE username fragment (checks addressed to it are
/// this connection's).
pub fn describe(
    pc: &mut RTCPeerConnection,
    now: Instant,
    kind: RTCSdpType,
) -> Result<(SessionDescription, String), OfferError> {
    let description = match kind {
        RTCSdpType::Offer => pc.create_offer(None),
        _ => pc.create_answer(None),
    }
    .map_err(|e| OfferError::Internal(format!("creating our {kind}: {e}")))?;
    pc.set_local_description(now, description)
        .map_err(|e| OfferError::Internal(e.to_string()))?;
    let local = pc
        .local_description()
        .ok_or_else(|| OfferError::Internal("no local description".into()))?;
    let ufrag = ice_credentials(&local.sdp)
        .map(|(ufrag, _)| ufrag)
        .ok_or_else(|| OfferError::Internal("our local description has no ICE ufrag".into()))?;
    let parsed = local
        .unmarshal()
        .map_err(|e| OfferError::Internal(format!("our own SDP: {e}")))?;
    Ok((parsed, ufrag))
}

/// Our SDP as viewers must see it (`webrtc.nat_ips`).
pub fn announced(factory: &PeerFactory, mut sdp: SessionDescription) -> String {
    nat::announce(&mut sdp, factory.nat_ips());
    sdp.marshal()
}

/// The first `a=ice-ufrag` and `a=ice-pwd` of an SDP.
fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let value = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(key))
            .map(str::to_owned)
    };
    Some((value("a=ice-ufrag:")?, value("a=ice-pwd:")?))
}

/// The viewer restarts ICE with new credentials (a WHEP PATCH, RFC 9725 §4.3.2): its offer
/// again with them (and without the old candidates; new ones come trickled). Our answer is
/// then described as for a new offer, and sent as its ICE part only ([`ice_fragment`],
/// `application/trickle-ice-sdpfrag`).
pub fn restart(
    pc: &mut RTCPeerConnection,
    now: Instant,
    (ufrag, pwd): (&str, &str),
) -> Result<(), OfferError> {
    for (name, value, shortest) in [("ice-ufrag", ufrag, 4), ("ice-pwd", pwd, 22)] {
        if let Some(problem) = ice_credential_problem(value, shortest) {
            return Err(OfferError::BadOffer(format!(
                "ICE restart: {name} {problem}"
            )));
        }
    }
    let remote = pc
        .remote_description()
        .filter(|d| d.sdp_type == RTCSdpType::Offer)
        .ok_or_else(|| {
            OfferError::BadOffer("only a session the viewer offered restarts over WHEP".into())
        })?;
    let offer = RTCSessionDescription::offer(with_credentials(&remote.sdp, ufrag, pwd))
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    pc.set_remote_description(now, offer).map_err(|e| {
        // webrtc-rs may have moved to have-remote-offer before failing: back to stable,
        // so that the next restart can be taken.
        if let Ok(rollback) = RTCSessionDescription::rollback(None) {
            let _ = pc.set_remote_description(now, rollback);
        }
        OfferError::BadOffer(format!("ICE restart: {e}"))
    })?;
    // The offer taken again turns webrtc-rs's directions back to what it proposed.
    send_only(pc);
    Ok(())
}

/// What is wrong with an ICE username fragment or password (RFC 8839 §5.4: `shortest` to 256
/// characters of A-Z a-z 0-9 + /), if anything.
fn ice_credential_problem(value: &str, shortest: usize) -> Option<String> {
    let fits = |c: char| c.is_ascii_alphanumeric() || c == '+' || c == '/';
    (!(shortest..=256).contains(&value.len()) || !value.chars().all(fits))
        .then(|| format!("must be {shortest} to 256 characters of A-Z a-z 0-9 + / (RFC 8839)"))
}

/// `sdp` with `ufrag` and `pwd` as its ICE credentials and without its candidates.
fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out += &format!("a=ice-ufrag:{ufrag}\r\n");
        } else if line.starts_with("a=ice-pwd:") {
            out += &format!("a=ice-pwd:{pwd}\r\n");
        } else {
            out += line;
            out += "\r\n";
        }
    }
    out
}

/// The ICE part of `sdp` as a trickle fragment (RFC 8840): credentials, then the first media
/// section's `m=` and `a=mid` lines with its candidates (bundled: they serve every section).
pub fn ice_fragment(sdp: &str) -> String {
    let (ufrag, pwd) = ice_credentials(sdp).unwrap_or_default();
    let mut out = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let Some(at) = sdp.find("\nm=") else {
        return out;
    };
    let section = &sdp[at + 1..];
    let section = section.find("\nm=").map_or(section, |end| &section[..end]);
    for line in section.lines().map(str::trim_end) {
        if line.starts_with("m=")
            || line.starts_with("a=mid:")
            || line.starts_with("a=candidate:")
            || line == "a=end-of-candidates"
        {
            out += line;
            out += "\r\n";
        }
    }
    out
}

/// The payload type each added track got in the negotiated SDP (our answer or the viewer's);
/// see [`payload_type`].
pub fn agreed(
    sdp: &SessionDescription,
    towards_us_only: &str,
    added: Vec<Added>,
    profile_level_id: &str,
) -> Result<Vec<Track>, OfferError> {
    let mut tracks = Vec::new();
    for Added { kind, sender, ssrc } in added {
        let wanted = match kind {
            RtpCodecKind::Audio => Wanted::Opus,
            _ => Wanted::H264 { profile_level_id },
        };
        match payload_type(sdp, wanted, towards_us_only) {
            Some(payload_type) => tracks.push(Track {
                kind,
                sender,
                ssrc,
                payload_type,
            }),
            None if kind == RtpCodecKind::Video => {
                return Err(OfferError::NoVideo(profile_level_id.to_owned()));
            }
            None => debug!("viewer takes no Opus audio"),
        }
    }
    Ok(tracks)
}

/// A codec we send, as a viewer's SDP must accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// H.264 with `packetization-mode=1` and the profile of ours (the first two bytes of
    /// `profile-level-id`, as webrtc-rs matches them; any level), as RFC 6184 §8.2.2 asks.
    H264 {
        /// Ours, e.g. `42e01f`.
        profile_level_id: &'a str,
    },
    /// Opus.
    Opus,
}

impl Wanted<'_> {
    /// The `m=` section kind it goes in.
    pub fn media(&self) -> &'static str {
        match self {
            Wanted::H264 { .. } => "video",
            Wanted::Opus => "audio",
        }
    }

    /// Whether `codec`, as a section describes it, is this one.
    pub fn fits(&self, codec: &rtc::sdp::util::Codec) -> bool {
        match self {
            Wanted::Opus => codec.name.eq_ignore_ascii_case("opus"),
            Wanted::H264 { profile_level_id } => {
                let profile = |id: &str| id.get(..4).map(str::to_ascii_lowercase);
                codec.name.eq_ignore_ascii_case("H264")
                    && fmtp(&codec.fmtp, "packetization-mode") == Some("1")
                    && fmtp(&codec.fmtp, "profile-level-id")
                        .filter(|theirs| {
                            theirs.len() == 6 && theirs.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                        .and_then(profile)
                        .is_some_and(|theirs| Some(theirs) == profile(profile_level_id))
            }
        }
    }
}

/// The value of `key` in an `a=fmtp` parameter list (`a=1;b=2`, any case of key).
fn fmtp<'f>(parameters: &'f str, key: &str) -> Option<&'f str> {
    parameters
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, value)| value.trim())
}

/// The payload type `wanted` has in `sdp`: the first one in the `m=` line's order that
/// [fits](Wanted::fits), in the first section of its kind that is neither disabled (port 0),
/// `inactive` nor `towards_us_only` (`recvonly` in our answer, `sendonly` in the viewer's
/// SDP) and has one. Pure, for the fuzz target `sdp_offer` too.
pub fn payload_type(sdp: &SessionDescription, wanted: Wanted, towards_us_only: &str) -> Option<u8> {
    sdp.media_descriptions
        .iter()
        .filter(|m| m.media_name.media == wanted.media() && m.media_name.port.value != 0)
        .filter(|m| !m.has_attribute(towards_us_only) && !m.has_attribute("inactive"))
        .find_map(|m| {
            let codecs = m.codecs();
            m.media_name
                .formats
                .iter()
                .filter_map(|format| format.parse::<u8>().ok())
                .find(|pt| codecs.get(pt).is_some_and(|c| wanted.fits(c)))
        })
}

fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec) -> (MediaStreamTrack, u32) {
    let ssrc = rand::random::<u32>();
    let name = match kind {
        RtpCodecKind::Audio => "audio",
        _ => "video",
    };
    let track = MediaStreamTrack::new(
        "onair".to_owned(),
        name.to_owned(),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    (track, ssrc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sdp: &str) -> SessionDescription {
        SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp)).unwrap()
    }

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

    const CB: Wanted = Wanted::H264 {
        profile_level_id: "42e01f",
    };

    /// `a=rtpmap` and `a=fmtp` of an H.264 payload type with these format parameters.
    fn h264(pt: u8, fmtp: &str) -> String {
        format!("a=rtpmap:{pt} H264/90000\r\na=fmtp:{pt} {fmtp}\r\n")
    }

    const FITS: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

    #[test]
    fn the_first_fitting_h264_payload_type_of_the_m_line_is_taken_every_time() {
        // Chromium offers several H.264 payload types; the m= line's order is the preference.
        let sdp = parse(&format!(
            "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96 104 102 106 108 127\r\n\
             a=rtpmap:96 VP8/90000\r\n{}{}{}{}{}{}",
            h264(104, "packetization-mode=0;profile-level-id=42e01f"),
            h264(127, FITS),
            h264(108, FITS),
            h264(106, FITS),
            h264(102, FITS),
            h264(99, FITS),
        ));
        // codecs() is a HashMap: asking often enough would have shown any of them.
        for _ in 0..50 {
            assert_eq!(payload_type(&sdp, CB, "recvonly"), Some(102));
        }
    }

    #[test]
    fn payload_types_the_m_line_does_not_list_or_closed_sections_are_not_taken() {
        let sdp = parse(&format!(
            "{HEAD}m=video 0 UDP/TLS/RTP/SAVPF 96\r\n{}\
             m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=recvonly\r\n{}\
             m=video 9 UDP/TLS/RTP/SAVPF 98\r\n{}\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n",
            h264(96, FITS),
            h264(97, FITS),
            h264(99, FITS),
        ));
        assert_eq!(payload_type(&sdp, CB, "recvonly"), None);
        assert_eq!(payload_type(&sdp, CB, "sendonly"), Some(97));
        assert_eq!(payload_type(&sdp, Wanted::Opus, "recvonly"), Some(111));
    }

    #[test]
    fn restart_credentials_are_what_rfc_8839_allows() {
        for (value, shortest, fine) in [
            ("abcd", 4, true),
            ("a+b/", 4, true),
            ("abc", 4, false),
            ("", 4, false),
            ("ab cd", 4, false),
            ("abcd\r\na=x", 4, false),
            ("abcé", 4, false),
            ("0123456789012345678901", 22, true),
            ("012345678901234567890", 22, false),
        ] {
            assert_eq!(
                ice_credential_problem(value, shortest).is_none(),
                fine,
                "{value:?}"
            );
        }
        assert!(ice_credential_problem(&"a".repeat(256), 22).is_none());
        assert!(ice_credential_problem(&"a".repeat(257), 22).is_some());
    }

    #[test]
    fn h264_fits_with_packetization_mode_1_and_our_profile_at_any_level() {
        let codec = |name: &str, fmtp: &str| rtc::sdp::util::Codec {
            name: name.into(),
            fmtp: fmtp.into(),
            ..Default::default()
        };
        for (name, fmtp, fits) in [
            ("H264", FITS, true),
            (
                "h264",
                "profile-level-id=42E034; packetization-mode=1",
                true,
            ),
            ("H264", "packetization-mode=1;profile-level-id=42e00a", true),
            (
                "H264",
                "packetization-mode=0;profile-level-id=42e01f",
                false,
            ),
            ("H264", "profile-level-id=42e01f", false),
            ("H264", "packetization-mode=1", false),
            (
                "H264",
                "packetization-mode=1;profile-level-id=42001f",
                false,
            ),
            (
                "H264",
                "packetization-mode=1;profile-level-id=42c01f",
                false,
            ),
            (
                "H264",
                "packetization-mode=1;profile-level-id=4d001f",
                false,
            ),
            ("H264", "packetization-mode=1;profile-level-id=42e01", false),
            (
                "H264",
                "packetization-mode=1;profile-level-id=42e0zz",
                false,
            ),
            (
                "H264",
                "packetization-mode=1;profile-level-id=640c1f",
                false,
            ),
            ("H264", "packetization-mode=1;profile-level-id=4", false),
            ("H264", "", false),
            ("VP8", FITS, false),
        ] {
            assert_eq!(CB.fits(&codec(name, fmtp)), fits, "{name} {fmtp}");
        }
        assert!(Wanted::Opus.fits(&codec("OPUS", "")));
        let high = Wanted::H264 {
            profile_level_id: "640028",
        };
        assert!(high.fits(&codec(
            "H264",
            "packetization-mode=1;profile-level-id=64001f"
        )));
        assert!(!high.fits(&codec("H264", FITS)));
        assert!(!high.fits(&codec(
            "H264",
            "packetization-mode=1;profile-level-id=640c1f"
        )));
    }

    const RESTART: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 8190 typ host\r\na=end-of-candidates\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n\
        a=candidate:1 1 udp 2130706431 127.0.0.1 8190 typ host\r\n";

    #[test]
    fn a_restart_offer_has_the_new_credentials_and_no_old_candidates() {
        let offer = with_credentials(RESTART, "new", "newpwd");
        assert_eq!(offer.matches("a=ice-ufrag:new\r\n").count(), 2, "{offer}");
        assert_eq!(offer.matches("a=ice-pwd:newpwd\r\n").count(), 2, "{offer}");
        assert!(
            !offer.contains("old") && !offer.contains("candidate"),
            "{offer}"
        );
    }

    #[test]
    fn our_restart_fragment_has_credentials_and_the_first_sections_candidates() {
        assert_eq!(
            ice_fragment(RESTART),
            "a=ice-ufrag:old\r\na=ice-pwd:oldpwd\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 8190 typ host\r\na=end-of-candidates\r\n"
        );
    }
}
