//! Building one viewer's peer connection: codecs, interceptors, addresses, ports.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use onair_config::WebRtc;
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

use super::figures::RtcpSeen;
use super::keyframe_requests::{self, KeyframeRequests};
use super::nomination;
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

/// Hands out UDP ports from `webrtc.udp_port_range`, one per peer connection, so a
/// firewall or a port forward can be set up for a known range.
#[derive(Debug)]
pub struct PortPool {
    range: Option<(u16, u16)>,
    used: Mutex<BTreeSet<u16>>,
}

/// A port taken from the pool; returned when dropped. Port 0 means "any".
#[derive(Debug)]
pub struct PortLease {
    pool: Option<Arc<PortPool>>,
    /// The port to bind.
    pub port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool
            && let Ok(mut used) = pool.used.lock()
        {
            used.remove(&self.port);
        }
    }
}

impl PortPool {
    /// A pool over `range`, or ephemeral ports when there is none.
    pub fn new(range: Option<(u16, u16)>) -> Arc<Self> {
        Arc::new(PortPool {
            range,
            used: Mutex::new(BTreeSet::new()),
        })
    }

    /// A port free on every address in `ips`, or `None` when the range is exhausted.
    pub fn acquire(self: &Arc<Self>, ips: &[IpAddr]) -> Option<PortLease> {
        let Some((min, max)) = self.range else {
            return Some(PortLease {
                pool: None,
                port: 0,
            });
        };
        let mut used = self.used.lock().ok()?;
        let port = (min..=max).find(|port| {
            !used.contains(port)
                && ips
                    .iter()
                    .all(|ip| UdpSocket::bind(SocketAddr::new(*ip, *port)).is_ok())
        })?;
        used.insert(port);
        Some(PortLease {
            pool: Some(self.clone()),
            port,
        })
    }
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
    ports: Arc<PortPool>,
    audio_codec: Option<RTCRtpCodec>,
}

/// A freshly built peer connection and what came with it.
pub struct NewPeer {
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// The newest connection state change (`None` before the first).
    pub events: watch::Receiver<Option<Event>>,
    /// Fires once ICE gathering is complete.
    pub gathered: Arc<Notify>,
    /// Keeps the UDP port reserved for the life of the connection.
    pub port: PortLease,
    /// The viewer's RTCP, counted for `/metrics`.
    pub rtcp: Arc<RtcpSeen>,
}

/// Why a peer connection could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Every port of `webrtc.udp_port_range` is taken.
    #[error("no free UDP port left in webrtc.udp_port_range")]
    NoPort,
    /// webrtc-rs refused.
    #[error(transparent)]
    WebRtc(#[from] webrtc::error::Error),
}

impl PeerFactory {
    /// Reads the `[webrtc]` settings.
    pub fn new(config: &WebRtc, audio: bool) -> Self {
        let bind_ips = if config.bind_ips.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            config.bind_ips.clone()
        };
        PeerFactory {
            ice_servers: config
                .ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
            nat_ips: config.nat_ips.clone(),
            bind_ips,
            ports: PortPool::new(config.udp_port_range.as_ref().map(|r| (r.min, r.max))),
            audio_codec: audio.then(opus_codec),
        }
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
        let port = self
            .ports
            .acquire(&self.bind_ips)
            .ok_or(PeerError::NoPort)?;

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
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?.with(
            keyframe_requests::SLOT.into(),
            KeyframeRequests::counting(rtcp.clone()),
        );

        // Answer as the DTLS server (`a=setup:passive`). As the client, onaird sent its
        // ClientHello the moment ICE connected, often before a WHEP viewer had even read the
        // HTTP answer; the viewer dropped it and the handshake waited for the 200 ms
        // retransmission timer (docs/PERFORMANCE.md, "Where the time to first frame goes").
        // As the server, the viewer's ClientHello starts the handshake when it is ready.
        let mut settings =
            SettingEngineBuilder::new().with_answering_dtls_role(RTCDtlsRole::Server);
        if self.bind_ips.iter().any(IpAddr::is_loopback) {
            settings = settings.with_include_loopback_candidate(true);
        }

        let (events_tx, events) = watch::channel(None);
        let gathered = Arc::new(Notify::new());
        let handler = Arc::new(PeerEvents {
            events: events_tx,
            gathered: gathered.clone(),
        });
        let udp_addrs: Vec<SocketAddr> = self
            .bind_ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, port.port))
            .collect();

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
            .with_runtime(nomination::runtime())
            .with_udp_addrs(udp_addrs)
            .build()
            .await?;
        Ok(NewPeer {
            pc: Arc::new(pc),
            events,
            gathered,
            port,
            rtcp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pool_hands_out_distinct_ports_and_takes_them_back() {
        let pool = PortPool::new(Some((40_000, 40_999)));
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let a = pool.acquire(&ips).unwrap();
        let b = pool.acquire(&ips).unwrap();
        assert_ne!(a.port, b.port);
        let freed = a.port;
        drop(a);
        assert_eq!(pool.acquire(&ips).unwrap().port, freed);
    }

    #[test]
    fn exhausted_range_is_refused() {
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let probe = PortPool::new(Some((41_000, 41_999)))
            .acquire(&ips)
            .unwrap()
            .port;
        let pool = PortPool::new(Some((probe, probe)));
        let _only = pool.acquire(&ips).unwrap();
        assert!(pool.acquire(&ips).is_none());
    }

    #[test]
    fn no_range_means_ephemeral() {
        assert_eq!(PortPool::new(None).acquire(&[]).unwrap().port, 0);
    }
}
