//! Building one viewer's peer connection: codecs, interceptors, addresses, ports.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::congestion::{self, Estimate};
use super::engine::Engine;
use super::figures::RtcpSeen;
use super::keyframe_requests::{self, KeyframeRequests};
use onair_config::WebRtc;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};

/// Payload types we prefer; an answer follows the offer's numbering anyway.
const H264_PAYLOAD_TYPE: u8 = 102;
const OPUS_PAYLOAD_TYPE: u8 = 111;

/// The codec every viewer gets: H.264 of `profile_level_id` (constrained baseline from
/// openh264, whatever the camera sends with passthrough), packetization mode 1.
pub fn h264_codec(profile_level_id: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: format!(
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile_level_id}"
        ),
        rtcp_feedback: vec![
            RTCPFeedback {
                typ: "ccm".into(),
                parameter: "fir".into(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            },
            RTCPFeedback {
                typ: "nack".into(),
                parameter: "pli".into(),
            },
        ],
    }
}

/// Opus as WebRTC signals it (always "2 channels"; mono is sent as such inside).
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The STUN servers of `webrtc.ice_servers`, for the port's server-reflexive address.
/// TURN servers are for viewers (WHEP `Link` headers, `/api/ice-servers`): a viewer's relay
/// reaches the port like any viewer. onaird allocates nothing itself: every connection's
/// allocation would come from the one port, and a TURN server keeps one allocation per
/// client address (coturn answers the second with 437).
pub fn stun_servers(servers: &[onair_config::IceServer]) -> Vec<String> {
    let turn = servers
        .iter()
        .flat_map(|s| &s.urls)
        .filter(|url| url.starts_with("turn"))
        .count();
    if turn > 0 {
        tracing::info!(
            "webrtc.ice_servers: {turn} TURN URL(s) offered to viewers; onaird relays through none itself"
        );
    }
    servers
        .iter()
        .flat_map(|s| &s.urls)
        .filter_map(|url| url.strip_prefix("stun:"))
        .map(|host| host.split('?').next().unwrap_or(host).to_owned())
        .collect()
}

/// How often the STUN servers' names are looked up again (and soon after a failure).
const RESOLVE_EVERY: Duration = Duration::from_secs(600);
const RESOLVE_RETRY: Duration = Duration::from_secs(30);
/// How long one lookup may take.
const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

/// Looks up the STUN servers now and then, and tells the engine where they are.
pub async fn resolve_stun_servers(names: Vec<String>, engine: Engine) {
    loop {
        let mut found = Vec::new();
        for name in &names {
            let with_port = if name
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                name.clone()
            } else {
                format!("{name}:3478")
            };
            match tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host(&with_port)).await {
                Ok(Ok(addrs)) => found.extend(addrs),
                Ok(Err(err)) => tracing::warn!("webrtc.ice_servers: stun:{name}: {err}"),
                Err(_) => tracing::warn!(
                    "webrtc.ice_servers: stun:{name}: no answer from DNS within {RESOLVE_WITHIN:?}"
                ),
            }
        }
        found.dedup();
        let wait = if found.is_empty() {
            RESOLVE_RETRY
        } else {
            RESOLVE_EVERY
        };
        if engine.set_stun_servers(found).await.is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Everything needed to build peer connections, made once from the config.
pub struct PeerFactory {
    /// `webrtc.nat_ips`, applied to answers by [`super::nat`].
    nat_ips: Vec<IpAddr>,
    /// The addresses `webrtc.port` is bound on.
    bind_ips: Vec<IpAddr>,
    port: u16,
    loopback: bool,
    audio_codec: Option<RTCRtpCodec>,
    /// What the video's top and lowest layers send, in bits per second (see
    /// [`congestion::register`]).
    video_bps: (f64, f64),
}

/// A freshly built peer connection and what came with it.
pub struct NewPeer {
    /// The connection's core.
    pub pc: Box<rtc::peer_connection::RTCPeerConnection>,
    /// The viewer's RTCP, counted for `/metrics`.
    pub rtcp: Arc<RtcpSeen>,
    /// The viewer's bandwidth estimate.
    pub estimate: Arc<Estimate>,
}

impl PeerFactory {
    /// Reads the `[webrtc]` settings, for video whose top and lowest layers send `top_kbps`
    /// and `lowest_kbps`.
    pub fn new(config: &WebRtc, audio: bool, top_kbps: u32, lowest_kbps: u32) -> Self {
        let bind_ips = if config.bind_ips.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            config.bind_ips.clone()
        };
        PeerFactory {
            nat_ips: config.nat_ips.clone(),
            loopback: bind_ips.iter().any(IpAddr::is_loopback),
            bind_ips,
            port: config.port,
            audio_codec: audio.then(opus_codec),
            video_bps: (
                f64::from(top_kbps) * 1000.0,
                f64::from(lowest_kbps) * 1000.0,
            ),
        }
    }

    /// Where `webrtc.port` is to be bound: the addresses and the number (0: any).
    pub fn binding(&self) -> (&[IpAddr], u16) {
        (&self.bind_ips, self.port)
    }

    /// Addresses to announce instead of the bound ones (`webrtc.nat_ips`).
    pub fn nat_ips(&self) -> &[IpAddr] {
        &self.nat_ips
    }

    /// The audio codec, if audio is on.
    pub fn audio_codec(&self) -> Option<&RTCRtpCodec> {
        self.audio_codec.as_ref()
    }

    /// A peer connection that offers exactly our two codecs (the video one as it is now),
    /// made at `now`.
    pub fn build(
        &self,
        video_codec: &RTCRtpCodec,
        now: Instant,
    ) -> Result<NewPeer, rtc::shared::error::Error> {
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: video_codec.clone(),
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )?;
        if let Some(audio) = &self.audio_codec {
            media_engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: audio.clone(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )?;
        }
        let rtcp = Arc::new(RtcpSeen::default());
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let (top, lowest) = self.video_bps;
        let (registry, estimate) = congestion::register(registry, top, lowest);
        let registry = registry.with(
            keyframe_requests::SLOT.into(),
            KeyframeRequests::counting(rtcp.clone()),
        );

        // Answer as the DTLS server (`a=setup:passive`). As the client, onaird sent its
        // ClientHello the moment ICE connected, often before a WHEP viewer had even read the
        // HTTP answer; the viewer dropped it and the handshake waited for the 200 ms
        // retransmission timer (docs/PERFORMANCE.md, "Where the time to first frame goes").
        // As the server, the viewer's ClientHello starts the handshake when it is ready.
        let mut settings = SettingEngineBuilder::new()
            .with_answering_dtls_role(RTCDtlsRole::Server)
            // No mDNS: a browser's ".local" candidates are learnt as peer-reflexive from
            // its checks instead.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled);
        if self.loopback {
            settings = settings.with_include_loopback_candidate(true);
        }
        let pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .build(now)?;
        Ok(NewPeer {
            pc: Box::new(pc),
            rtcp,
            estimate,
        })
    }
}

#[cfg(test)]
mod tests {
    use onair_config::IceServer;

    #[test]
    fn onaird_uses_the_stun_servers_and_leaves_turn_to_viewers() {
        let servers = [
            IceServer {
                urls: vec!["stun:a:3478".into(), "turn:a:3478".into()],
                username: Some("u".into()),
                credential: Some("p".into()),
            },
            IceServer {
                urls: vec!["turns:b:5349".into()],
                username: Some("u".into()),
                credential: Some("p".into()),
            },
        ];
        let used = super::stun_servers(&servers);
        assert_eq!(used, ["a:3478"]);
    }
}
