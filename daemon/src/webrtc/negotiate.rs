//! SDP offer/answer with one viewer, either way round: the viewer offers (WHEP, a consumer
//! that sends its offer with `startSession`) and we answer, or we offer (a consumer that asks
//! the producer to) and the viewer answers. Either way every one of our candidates is in
//! our SDP: no trickle needed from our side.

use std::sync::Arc;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sdp::description::session::SessionDescription;
use tokio::sync::Notify;
use tracing::{debug, warn};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::peer_connection::{PeerConnection, RTCSdpType, RTCSessionDescription};

use super::forward::Outgoing;
use super::peer::{self, NewPeer, PeerFactory};
use super::runtime::PeerRuntime;
use super::{GATHER_TIMEOUT, OfferError, nat};

/// One of our tracks on a viewer's connection, before the viewer has agreed on a payload type.
pub struct Added {
    kind: RtpCodecKind,
    track: Arc<TrackLocalStaticRTP>,
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

/// The viewer offered: applies the offer, adds our tracks and answers. Fails if the answer
/// would not carry H.264 video (audio is optional for the viewer).
pub async fn answer(
    factory: &PeerFactory,
    profile_level_id: &str,
    peer: &NewPeer,
    offer: RTCSessionDescription,
) -> Result<(String, Vec<Outgoing>), OfferError> {
    let pc = &peer.pc;
    pc.set_remote_description(offer)
        .await
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    let mut added = Vec::new();
    for (kind, codec) in codecs(factory, profile_level_id) {
        let (track, ssrc) = local_track(kind, codec);
        // webrtc-rs refuses a track whose codec the offer does not accept.
        match pc.add_track(track.clone() as Arc<dyn TrackLocal>).await {
            Ok(_) => added.push(Added { kind, track, ssrc }),
            Err(err) if kind == RtpCodecKind::Video => {
                debug!("video track refused: {err}");
                return Err(OfferError::NoVideo(profile_level_id.to_owned()));
            }
            Err(err) => debug!("viewer takes no Opus audio: {err}"),
        }
    }
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| OfferError::Internal(e.to_string()))?;
    answer_as_local(pc, &peer.runtime).await?;
    let mut sdp = gathered_description(pc, &peer.gathered).await?;
    // What the answer agreed to send is what we send: its payload types, per medium.
    let outgoing = agreed(&sdp, "recvonly", added, profile_level_id)?;
    nat::announce(&mut sdp, factory.nat_ips(), factory.port());
    Ok((sdp.marshal(), outgoing))
}

/// We offer: adds our tracks (send only) and returns the offer, with the tracks waiting for
/// the viewer's answer ([`accept`]).
pub async fn offer(
    factory: &PeerFactory,
    profile_level_id: &str,
    peer: &NewPeer,
) -> Result<(String, Vec<Added>), OfferError> {
    let pc = &peer.pc;
    let mut added = Vec::new();
    for (kind, codec) in codecs(factory, profile_level_id) {
        let (track, ssrc) = local_track(kind, codec);
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            ..Default::default()
        };
        pc.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init))
            .await
            .map_err(|e| OfferError::Internal(format!("adding our {kind} track: {e}")))?;
        added.push(Added { kind, track, ssrc });
    }
    let offer = pc
        .create_offer(None)
        .await
        .map_err(|e| OfferError::Internal(format!("creating an offer: {e}")))?;
    pc.set_local_description(offer)
        .await
        .map_err(|e| OfferError::Internal(e.to_string()))?;
    answer_as_local(pc, &peer.runtime).await?;
    let mut sdp = gathered_description(pc, &peer.gathered).await?;
    nat::announce(&mut sdp, factory.nat_ips(), factory.port());
    Ok((sdp.marshal(), added))
}

/// The viewer answered our offer: applies the answer and returns what to send.
pub async fn accept(
    pc: &Arc<dyn PeerConnection>,
    answer: &str,
    added: Vec<Added>,
    profile_level_id: &str,
) -> Result<Vec<Outgoing>, OfferError> {
    let answer = RTCSessionDescription::answer(answer.to_owned())
        .map_err(|e| OfferError::BadOffer(format!("bad answer: {e}")))?;
    let sdp = answer
        .unmarshal()
        .map_err(|e| OfferError::BadOffer(format!("bad answer: {e}")))?;
    pc.set_remote_description(answer)
        .await
        .map_err(|e| OfferError::BadOffer(format!("bad answer: {e}")))?;
    agreed(&sdp, "sendonly", added, profile_level_id)
}

/// Tells the port which ICE username fragment `pc`'s local description has: checks
/// addressed to it reach the connection from now on.
async fn answer_as_local(
    pc: &Arc<dyn PeerConnection>,
    runtime: &PeerRuntime,
) -> Result<(), OfferError> {
    let local = pc.local_description().await;
    let ufrag = local
        .as_ref()
        .and_then(|d| ice_credentials(&d.sdp))
        .map(|(ufrag, _)| ufrag)
        .ok_or_else(|| OfferError::Internal("our local description has no ICE ufrag".into()))?;
    runtime.answer_as(&ufrag);
    Ok(())
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
/// again with them (and without the old candidates; new ones come trickled), then our answer.
/// Returns our new credentials and candidates as an SDP fragment
/// (`application/trickle-ice-sdpfrag`).
pub async fn restart(
    factory: &PeerFactory,
    pc: &Arc<dyn PeerConnection>,
    runtime: &PeerRuntime,
    (ufrag, pwd): (&str, &str),
) -> Result<String, OfferError> {
    let remote = pc
        .remote_description()
        .await
        .filter(|d| d.sdp_type == RTCSdpType::Offer)
        .ok_or_else(|| {
            OfferError::BadOffer("only a session the viewer offered restarts over WHEP".into())
        })?;
    let offer = RTCSessionDescription::offer(with_credentials(&remote.sdp, ufrag, pwd))
        .map_err(|e| OfferError::BadOffer(e.to_string()))?;
    pc.set_remote_description(offer)
        .await
        .map_err(|e| OfferError::BadOffer(format!("ICE restart: {e}")))?;
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| OfferError::Internal(format!("ICE restart: {e}")))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| OfferError::Internal(format!("ICE restart: {e}")))?;
    answer_as_local(pc, runtime).await?;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| OfferError::Internal("no local description".into()))?;
    let mut sdp = local
        .unmarshal()
        .map_err(|e| OfferError::Internal(format!("our own SDP: {e}")))?;
    nat::announce(&mut sdp, factory.nat_ips(), factory.port());
    Ok(ice_fragment(&sdp.marshal()))
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
fn ice_fragment(sdp: &str) -> String {
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

/// Our local description once ICE gathering is complete (or [`GATHER_TIMEOUT`] passed).
async fn gathered_description(
    pc: &Arc<dyn PeerConnection>,
    gathered: &Notify,
) -> Result<SessionDescription, OfferError> {
    if tokio::time::timeout(GATHER_TIMEOUT, gathered.notified())
        .await
        .is_err()
    {
        warn!("ICE gathering not complete after {GATHER_TIMEOUT:?}; sending what we have");
    }
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| OfferError::Internal("no local description".into()))?;
    local
        .unmarshal()
        .map_err(|e| OfferError::Internal(format!("our own SDP: {e}")))
}

/// The payload type each added track got in the negotiated SDP (our answer or the viewer's);
/// see [`payload_type`].
fn agreed(
    sdp: &SessionDescription,
    towards_us_only: &str,
    added: Vec<Added>,
    profile_level_id: &str,
) -> Result<Vec<Outgoing>, OfferError> {
    let mut outgoing = Vec::new();
    for Added { kind, track, ssrc } in added {
        let (media, codec) = match kind {
            RtpCodecKind::Audio => ("audio", "opus"),
            _ => ("video", "H264"),
        };
        match payload_type(sdp, media, codec, towards_us_only) {
            Some(payload_type) => outgoing.push(Outgoing {
                kind,
                track,
                ssrc,
                payload_type,
            }),
            None if kind == RtpCodecKind::Video => {
                return Err(OfferError::NoVideo(profile_level_id.to_owned()));
            }
            None => debug!("viewer takes no Opus audio"),
        }
    }
    Ok(outgoing)
}

/// The payload type `codec` (`"H264"`, `"opus"`; any case) has in `sdp`: the first one in the
/// `m=` line's order, in the first `media` section (`"video"`, `"audio"`) that is neither
/// disabled (port 0), `inactive` nor `towards_us_only` (`recvonly` in our answer, `sendonly`
/// in the viewer's) and has that codec. Pure, for the fuzz target `sdp_offer` too.
pub fn payload_type(
    sdp: &SessionDescription,
    media: &str,
    codec: &str,
    towards_us_only: &str,
) -> Option<u8> {
    sdp.media_descriptions
        .iter()
        .filter(|m| m.media_name.media == media && m.media_name.port.value != 0)
        .filter(|m| !m.has_attribute(towards_us_only) && !m.has_attribute("inactive"))
        .find_map(|m| {
            let codecs = m.codecs();
            m.media_name
                .formats
                .iter()
                .filter_map(|format| format.parse::<u8>().ok())
                .find(|pt| {
                    codecs
                        .get(pt)
                        .is_some_and(|c| c.name.eq_ignore_ascii_case(codec))
                })
        })
}

fn local_track(kind: RtpCodecKind, codec: RTCRtpCodec) -> (Arc<TrackLocalStaticRTP>, u32) {
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
    (Arc::new(TrackLocalStaticRTP::new(track)), ssrc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sdp: &str) -> SessionDescription {
        SessionDescription::unmarshal(&mut std::io::Cursor::new(sdp)).unwrap()
    }

    const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";

    #[test]
    fn the_first_h264_payload_type_of_the_m_line_is_taken_every_time() {
        // Chromium offers several H.264 payload types; the m= line's order is the preference.
        let sdp = parse(&format!(
            "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96 102 106 108 127\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtpmap:127 H264/90000\r\n\
             a=rtpmap:108 H264/90000\r\na=rtpmap:106 h264/90000\r\n\
             a=rtpmap:102 H264/90000\r\na=rtpmap:99 H264/90000\r\n"
        ));
        // codecs() is a HashMap: asking often enough would have shown any of them.
        for _ in 0..50 {
            assert_eq!(payload_type(&sdp, "video", "H264", "recvonly"), Some(102));
        }
    }

    #[test]
    fn payload_types_the_m_line_does_not_list_or_closed_sections_are_not_taken() {
        let sdp = parse(&format!(
            "{HEAD}m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 H264/90000\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=recvonly\r\na=rtpmap:97 H264/90000\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:99 H264/90000\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
        ));
        assert_eq!(payload_type(&sdp, "video", "H264", "recvonly"), None);
        assert_eq!(payload_type(&sdp, "video", "H264", "sendonly"), Some(97));
        assert_eq!(payload_type(&sdp, "audio", "opus", "recvonly"), Some(111));
        assert_eq!(payload_type(&sdp, "audio", "H264", "recvonly"), None);
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
