//! Building one viewer's peer connection: codecs, interceptors, addresses, ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use onair_config::WebRtc;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use tokio::sync::{Notify, watch};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use super::congestion::{self, Estimate};
use super::figures::RtcpSeen;
use super::keyframe_requests::{self, KeyframeRequests};
use super::port::Port;
use super::runtime::{self, PeerRuntime};
use super::session::Event;

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

/// The STUN servers of `webrtc.ice_servers`, for our server-reflexive candidates. TURN
/// servers are for viewers (WHEP `Link` headers, `/api/ice-servers`): a viewer's relay
/// reaches the port like any viewer. onaird allocates nothing itself: every connection's
/// allocation would come from the one port, and a TURN server keeps one allocation per
/// client address (coturn answers the second with 437, and webrtc-rs 0.21.1 then waits for
/// gathering until onaird's 2 s limit).
fn stun_servers(servers: &[onair_config::IceServer]) -> Vec<RTCIceServer> {
    let turn = servers
        .iter()
        .flat_map(|s| &s.urls)
        .filter(|url| !url.starts_with("stun:") && !url.starts_with("stuns:"))
        .count();
    if turn > 0 {
        tracing::info!(
            "webrtc.ice_servers: {turn} TURN URL(s) offered to viewers; onaird relays through none itself"
        );
    }
    servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s
                .urls
                .iter()
                .filter(|url| url.starts_with("stun:") || url.starts_with("stuns:"))
                .cloned()
                .collect(),
            ..Default::default()
        })
        .filter(|s| !s.urls.is_empty())
        .collect()
}

/// Turns webrtc-rs callbacks into session events. The newest connection state is all a
/// session needs, so they go through a one-slot watch: it never fills, whatever webrtc-rs
/// reports (a flapping connection overwrites its older states).
struct PeerEvents {
    events: watch::Sender<Option<Event>>,
    gathered: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerEvents {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let event = match state {
            RTCPeerConnectionState::Connected => Event::Connected,
            RTCPeerConnectionState::Disconnected => Event::Disconnected,
            RTCPeerConnectionState::Failed => Event::Failed,
            RTCPeerConnectionState::Closed => Event::Closed,
            _ => return,
        };
        self.events.send_replace(Some(event));
    }
}

/// Everything needed to build peer connections, made once from the config.
pub struct PeerFactory {
    ice_servers: Vec<RTCIceServer>,
    /// `webrtc.nat_ips`, applied to answers by [`super::nat`].
    nat_ips: Vec<IpAddr>,
    bind_ips: Vec<IpAddr>,
    /// `webrtc.port`: every connection's UDP goes through it.
    port: Arc<Port>,
    audio_codec: Option<RTCRtpCodec>,
    /// What the video's top and lowest layers send, in bits per second (see
    /// [`congestion::register`]).
    video_bps: (f64, f64),
}

/// A freshly built peer connection and what came with it.
pub struct NewPeer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// The newest connection state change (`None` before the first).
    pub events: watch::Receiver<Option<Event>>,
    /// Fires once ICE gathering is complete.
    pub gathered: Arc<Notify>,
    /// The viewer's RTCP, counted for `/metrics`.
    pub rtcp: Arc<RtcpSeen>,
    /// The viewer's bandwidth estimate.
    pub estimate: Arc<Estimate>,
    /// Its runtime, to be told the ICE username fragment of each local description.
    pub runtime: Arc<PeerRuntime>,
}

/// Why a peer connection could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// webrtc-rs refused.
    #[error(transparent)]
    WebRtc(#[from] webrtc::error::Error),
}

impl PeerFactory {
    /// Reads the `[webrtc]` settings and binds `webrtc.port`, for video whose top and lowest
    /// layers send `top_kbps` and `lowest_kbps`.
    pub fn new(
        config: &WebRtc,
        audio: bool,
        top_kbps: u32,
        lowest_kbps: u32,
    ) -> std::io::Result<Self> {
        let bind_ips = if config.bind_ips.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            config.bind_ips.clone()
        };
        let port = Arc::new(Port::bind(&bind_ips, config.port)?);
        Ok(PeerFactory {
            ice_servers: stun_servers(&config.ice_servers),
            nat_ips: config.nat_ips.clone(),
            bind_ips,
            port,
            audio_codec: audio.then(opus_codec),
            video_bps: (
                f64::from(top_kbps) * 1000.0,
                f64::from(lowest_kbps) * 1000.0,
            ),
        })
    }

    /// The number of `webrtc.port` (the one chosen, if it was 0).
    pub fn port(&self) -> u16 {
        self.port.number()
    }

    /// Addresses to announce instead of the bound ones (`webrtc.nat_ips`).
    pub fn nat_ips(&self) -> &[IpAddr] {
        &self.nat_ips
    }

    /// The audio codec, if audio is on.
    pub fn audio_codec(&self) -> Option<&RTCRtpCodec> {
        self.audio_codec.as_ref()
    }

    /// A peer connection that offers exactly our two codecs (the video one as it is now).
    pub async fn build(&self, video_codec: &RTCRtpCodec) -> Result<NewPeer, PeerError> {
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
            // No mDNS: it would take a multicast socket per connection; a browser's
            // ".local" candidates are learnt as peer-reflexive from its checks instead.
            .with_multicast_dns_mode(MulticastDnsMode::Disabled);
        if self.bind_ips.iter().any(IpAddr::is_loopback) {
            settings = settings.with_include_loopback_candidate(true);
        }

        let (events_tx, events) = watch::channel(None);
        let gathered = Arc::new(Notify::new());
        let handler = Arc::new(PeerEvents {
            events: events_tx,
            gathered: gathered.clone(),
        });
        // Bound only to be closed: the runtime swaps them for views onto the port.
        let addrs: Vec<SocketAddr> = self
            .bind_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, 0))
            .collect();

        let runtime = runtime::for_peer(self.port.clone());
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(self.ice_servers.clone())
                    .build(),
            )
            .with_media_engine(media_engine)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_runtime(runtime.clone())
            .with_udp_addrs(addrs.clone())
            .with_tcp_addrs(addrs)
            .build()
            .await?;
        Ok(NewPeer {
            pc: Arc::new(pc),
            events,
            gathered,
            rtcp,
            estimate,
            runtime,
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
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].urls, ["stun:a:3478"]);
        assert!(used[0].username.is_empty() && used[0].credential.is_empty());
    }
}
