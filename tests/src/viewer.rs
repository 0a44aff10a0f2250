//! A WHEP viewer built on webrtc-rs that decodes what it receives.
//!
//! It is the receiving end a browser would be, minus the screen: it negotiates over WHEP,
//! depacketizes H.264, decodes every picture with openh264 and Opus with libopus, and
//! reports what it saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::BytesMut;
use onaird::media::h264::nal_types;
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{JitterBufferBuilder, Slot};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::Notify;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer,
    RTCIceTransportPolicy, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use crate::consumer::{ChannelSession, Consumer};
use crate::daemon::agent;
use crate::picture::{Picture, read_picture};

/// What a viewer saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Pictures decoded.
    pub frames_decoded: usize,
    /// Access units the decoder rejected once it had decoded a picture (each time, the
    /// viewer asks for an IDR with a PLI, at most every 250 ms, as browsers do).
    pub decode_errors: usize,
    /// Access units before the first decoded picture that could not start one (no IDR, or
    /// rejected by the decoder); the viewer asked for an IDR with a PLI, as browsers do.
    pub start_skipped: usize,
    /// Whole access units that held an IDR.
    pub keyframes: usize,
    /// IDR access units that arrived with their first packets missing (not counted in
    /// `keyframes`): webrtc-rs drops SRTP that arrives in the same read burst as the DTLS
    /// server's Finished, before it has keys, so a loaded viewer can lose the head of the
    /// first picture. Browsers keep them.
    pub partial_keyframes: usize,
    /// Bytes of video RTP payload received (what the sender's bitrate delivered).
    pub video_bytes: u64,
    /// Index (in pictures decoded before it) of every whole IDR.
    pub keyframe_at: Vec<usize>,
    /// The RTP timestamp (90 kHz, from the capture time) of every whole IDR: how far apart
    /// in time they were, however many pictures a loaded sender skipped in between.
    pub keyframe_rtp: Vec<u32>,
    /// Decoded pictures that were not black ([`Picture::is_black`]).
    pub not_black: usize,
    /// The first decoded picture, read.
    pub first: Option<Picture>,
    /// The last decoded picture, read.
    pub last: Option<Picture>,
    /// From POST to the first decoded picture.
    pub time_to_first_frame: Option<Duration>,
    /// Opus packets decoded.
    pub audio_frames: usize,
    /// RMS of the decoded audio (full scale 1.0); the test tone is about 0.16.
    pub audio_rms: f64,
    /// Opus packets that carry in-band FEC: the frame before them comes back from them
    /// alone (decoded with FEC by a fresh decoder, louder than -35 dBFS).
    pub audio_fec_packets: usize,
    /// Opus packets that never arrived (gaps in the sequence numbers).
    pub audio_lost: usize,
    /// Of those, frames restored from the next packet's FEC (single losses only, as a
    /// browser's jitter buffer does).
    pub audio_recovered: usize,
    /// HTTP status of the DELETE; 0 if nothing answered it.
    pub delete_status: u16,
    /// The daemon ended the connection (closed, failed or dropped) before the viewer left.
    pub connection_ended: bool,
}

/// How a viewer watches.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Leave after this many decoded pictures (or received pictures, without `decode`).
    pub frames: usize,
    /// Leave after this long whatever happened.
    pub within: Duration,
    /// Decode video; without it, pictures are only counted (benchmarks use this so the
    /// viewers' own CPU does not crowd out the daemon's).
    pub decode: bool,
    /// Send a Picture Loss Indication once this many pictures have arrived.
    pub pli_at_frame: Option<usize>,
    /// Send a Picture Loss Indication every this many pictures (a viewer on a lossy link).
    pub pli_every: Option<usize>,
    /// Hold packets this long in a jitter buffer (rtc-interceptor's), so that resent ones
    /// take their place in order, as a browser's does; without, packets are used as they
    /// arrive and a resend comes too late for its picture.
    pub jitter_buffer: Option<Duration>,
}

impl Watch {
    /// Decode `frames` pictures within `within`.
    pub fn decoding(frames: usize, within: Duration) -> Self {
        Watch {
            frames,
            within,
            decode: true,
            pli_at_frame: None,
            pli_every: None,
            jitter_buffer: None,
        }
    }
}

#[derive(Default)]
struct Shared {
    report: Report,
    audio_sum_squares: f64,
    audio_samples: u64,
    started: Option<Instant>,
    /// The connection closed, failed or dropped: nothing more will come.
    ended: bool,
}

struct Handler {
    how: Watch,
    shared: Arc<Mutex<Shared>>,
    gathered: Arc<Notify>,
    progress: Arc<Notify>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Closed
                | RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Disconnected
        ) {
            if let Ok(mut s) = self.shared.lock() {
                s.ended = true;
                s.report.connection_ended = true;
            }
            self.progress.notify_one();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.shared.clone();
        let progress = self.progress.clone();
        match track.kind().await {
            RtpCodecKind::Video => {
                tokio::spawn(decode_video(track, shared, progress, self.how));
            }
            _ => {
                tokio::spawn(decode_audio(track, shared));
            }
        }
    }
}

/// Whether the access unit being gathered arrived whole: it began with the start of a NAL
/// unit and no sequence number is missing inside it.
#[derive(Default)]
struct Whole {
    last_sequence: Option<u16>,
    whole: bool,
}

impl Whole {
    fn packet(&mut self, packet: &rtc::rtp::Packet, first_of_unit: bool) {
        let follows = self
            .last_sequence
            .is_some_and(|last| packet.header.sequence_number == last.wrapping_add(1));
        self.last_sequence = Some(packet.header.sequence_number);
        if first_of_unit {
            // FU-A (type 28) without its start bit continues a NAL unit begun elsewhere.
            let payload = &packet.payload;
            let continuation = payload.first().is_some_and(|b| b & 0x1f == 28)
                && payload.get(1).is_some_and(|b| b & 0x80 == 0);
            self.whole = !continuation;
        } else {
            self.whole &= follows;
        }
    }

    fn is_whole(&self) -> bool {
        self.whole
    }
}

async fn decode_video(
    track: Arc<dyn TrackRemote>,
    shared: Arc<Mutex<Shared>>,
    progress: Arc<Notify>,
    how: Watch,
) {
    let Watch {
        decode,
        pli_at_frame,
        pli_every,
        ..
    } = how;
    let media_ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
    let Ok(mut decoder) = Decoder::new() else {
        return;
    };
    let mut depacketizer = H264Packet::default();
    let mut access_unit = BytesMut::new();
    let mut whole = Whole::default();
    let mut last_pli: Option<Instant> = None;
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        if let Ok(mut s) = shared.lock() {
            s.report.video_bytes += packet.payload.len() as u64;
        }
        whole.packet(&packet, access_unit.is_empty());
        match depacketizer.depacketize(&packet.payload) {
            Ok(nals) => access_unit.extend_from_slice(&nals),
            Err(_) => continue,
        }
        if !packet.header.marker || access_unit.is_empty() {
            continue;
        }
        let au = access_unit.split().freeze();
        let has_idr = nal_types(&au).contains(&5);
        let pictures = if let Ok(mut s) = shared.lock() {
            if has_idr && whole.is_whole() {
                s.report.keyframes += 1;
                let at = s.report.frames_decoded;
                s.report.keyframe_at.push(at);
                s.report.keyframe_rtp.push(packet.header.timestamp);
            } else if has_idr {
                s.report.partial_keyframes += 1;
            }
            s.report.frames_decoded
        } else {
            0
        };
        let every = pli_every.is_some_and(|n| n > 0 && pictures > 0 && pictures % n == 0);
        if pli_at_frame == Some(pictures) || every {
            send_pli(&*track, media_ssrc).await;
        }
        let started = pictures > 0;
        if !decode {
            if let Ok(mut s) = shared.lock() {
                s.report.frames_decoded += 1;
            }
            progress.notify_one();
            continue;
        }
        if !started && !has_idr {
            start_skipped(&shared, &*track, media_ssrc, &mut last_pli).await;
            continue;
        }
        let picture = match decoder.decode(&au) {
            Ok(Some(yuv)) => {
                let (w, h) = yuv.dimensions();
                Some(read_picture(
                    (w as u32, h as u32),
                    (yuv.y(), yuv.u(), yuv.v()),
                    yuv.strides(),
                ))
            }
            Ok(None) => None,
            Err(_) if !started => {
                start_skipped(&shared, &*track, media_ssrc, &mut last_pli).await;
                None
            }
            Err(_) => {
                if let Ok(mut s) = shared.lock() {
                    s.report.decode_errors += 1;
                }
                // As a browser does: a picture it cannot decode asks for an IDR.
                if last_pli.is_none_or(|at| at.elapsed() >= START_PLI_EVERY) {
                    last_pli = Some(Instant::now());
                    send_pli(&*track, media_ssrc).await;
                }
                None
            }
        };
        if let (Some(picture), Ok(mut s)) = (picture, shared.lock()) {
            s.report.frames_decoded += 1;
            s.report.not_black += usize::from(!picture.is_black());
            if s.report.first.is_none() {
                s.report.time_to_first_frame = s.started.map(|t| t.elapsed());
                s.report.first = Some(picture.clone());
            }
            s.report.last = Some(picture);
            progress.notify_one();
        }
    }
}

async fn send_pli(track: &dyn TrackRemote, media_ssrc: u32) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    let _ = track.write_rtcp(vec![Box::new(pli)]).await;
}

/// An access unit before the first picture that cannot start one (its IDR was lost): like a
/// browser, the viewer asks for an IDR, at most every [`START_PLI_EVERY`].
async fn start_skipped(
    shared: &Mutex<Shared>,
    track: &dyn TrackRemote,
    media_ssrc: u32,
    last_pli: &mut Option<Instant>,
) {
    if let Ok(mut s) = shared.lock() {
        s.report.start_skipped += 1;
    }
    if last_pli.is_none_or(|at| at.elapsed() >= START_PLI_EVERY) {
        *last_pli = Some(Instant::now());
        send_pli(track, media_ssrc).await;
    }
}

/// How often a viewer still waiting for its first picture repeats its PLI.
const START_PLI_EVERY: Duration = Duration::from_millis(250);

async fn decode_audio(track: Arc<dyn TrackRemote>, shared: Arc<Mutex<Shared>>) {
    let (Ok(mut decoder), Ok(mut scratch)) = (
        opus::Decoder::new(48_000, opus::Channels::Stereo),
        opus::Decoder::new(48_000, opus::Channels::Stereo),
    ) else {
        return;
    };
    let mut pcm = vec![0i16; 5760 * 2];
    let mut last_sequence: Option<u16> = None;
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let sequence = packet.header.sequence_number;
        let lost = last_sequence.map_or(0, |last| {
            usize::from(sequence.wrapping_sub(last).wrapping_sub(1)).min(1000)
        });
        last_sequence = Some(sequence);
        let fec = carries_fec(&mut scratch, &packet.payload, &mut pcm);
        let mut recovered = false;
        if lost == 1 && fec {
            // The frame before this one, from this one's FEC: decoded like any other.
            if let Ok(samples) = decoder.decode(&packet.payload, &mut pcm, true) {
                recovered = true;
                add_audio(&shared, &pcm[..samples * 2]);
            }
        }
        let Ok(samples) = decoder.decode(&packet.payload, &mut pcm, false) else {
            continue;
        };
        add_audio(&shared, &pcm[..samples * 2]);
        if let Ok(mut s) = shared.lock() {
            s.report.audio_frames += 1;
            s.report.audio_fec_packets += usize::from(fec);
            s.report.audio_lost += lost;
            s.report.audio_recovered += usize::from(recovered);
        }
    }
}

/// Whether `payload` carries in-band FEC: the frame before it decoded from it alone by a
/// fresh decoder is sound (without FEC data that is concealment from nothing: silence).
fn carries_fec(scratch: &mut opus::Decoder, payload: &[u8], pcm: &mut [i16]) -> bool {
    if scratch.reset_state().is_err() {
        return false;
    }
    let Ok(samples) = scratch.decode(payload, pcm, true) else {
        return false;
    };
    let decoded = &pcm[..(samples * 2).min(pcm.len())];
    let sum: f64 = decoded
        .iter()
        .map(|&x| (f64::from(x) / 32768.0).powi(2))
        .sum();
    let rms = (sum / decoded.len().max(1) as f64).sqrt();
    // -35 dBFS.
    rms > 0.018
}

/// Adds decoded stereo samples to the audio level.
fn add_audio(shared: &Mutex<Shared>, stereo: &[i16]) {
    if let Ok(mut s) = shared.lock() {
        for &x in stereo {
            let x = f64::from(x) / 32768.0;
            s.audio_sum_squares += x * x;
        }
        s.audio_samples += stereo.len() as u64;
    }
}

/// Codecs like a browser offers them. The numbering differs from the daemon's own preference
/// (42e01f at 102) on purpose, so a daemon that sent its own payload type instead of the one
/// in its answer would be caught.
fn media_engine(h264: bool) -> anyhow::Result<MediaEngine> {
    let mut engine = MediaEngine::default();
    if !h264 {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                payload_type: 96,
            },
            RtpCodecKind::Video,
        )?;
    }
    let profiles: &[(&str, u8)] = if h264 {
        &[("42001f", 102), ("42e01f", 106)]
    } else {
        &[]
    };
    for &(profile, pt) in profiles {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_H264.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!(
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                    ),
                    rtcp_feedback: vec![RTCPFeedback {
                        typ: "nack".into(),
                        parameter: "pli".into(),
                    }],
                },
                payload_type: pt,
            },
            RtpCodecKind::Video,
        )?;
    }
    engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(engine)
}

/// How a viewer reaches the camera.
#[derive(Debug, Clone)]
pub enum Via {
    /// WHEP at this URL (e.g. `http://127.0.0.1:8080/whep`, with `?token=…` if needed);
    /// leaves with DELETE (with the same query).
    Whep(String),
    /// WHEP at `url` with `Authorization: Bearer token` (RFC 9725) on POST and DELETE.
    WhepBearer {
        /// e.g. `http://127.0.0.1:8080/whep`
        url: String,
        /// The viewer token.
        token: String,
    },
    /// A channel by name through a signalling service's WebSocket; leaves with `endSession`.
    Channel {
        /// e.g. `ws://127.0.0.1:8443/ws`
        ws_url: String,
        /// The channel.
        channel: String,
        /// Viewer token, if the service wants one.
        token: Option<String>,
        /// Send our offer with `startSession` (like `webrtcsrc`); else answer the
        /// producer's offer (like `gstwebrtc-api`).
        we_offer: bool,
    },
    /// A mountpoint of Janus's streaming plugin through Janus's HTTP API (Janus offers);
    /// leaves by destroying the session.
    Janus {
        /// e.g. `http://127.0.0.1:8088/janus`
        api: String,
        /// The mountpoint's id.
        mountpoint: u64,
        /// The local address to receive on (Janus pairs no loopback candidate, so the
        /// benchmark gives it and its viewers a private address of their own).
        bind: std::net::IpAddr,
    },
}

impl Via {
    /// Where the viewer's peer connection binds: loopback, unless `via` says otherwise.
    fn bind(&self) -> String {
        match self {
            Via::Janus { bind, .. } => std::net::SocketAddr::new(*bind, 0).to_string(),
            _ => "127.0.0.1:0".to_owned(),
        }
    }
}

/// Joins `whep_url` (e.g. `http://127.0.0.1:8080/whep`), watches as `how` says, then leaves
/// with DELETE. Fails only if negotiation fails; the caller judges the report.
pub async fn watch(whep_url: &str, how: Watch) -> anyhow::Result<Report> {
    watch_via(Via::Whep(whep_url.to_owned()), how).await
}

/// Joins as `via` says, watches as `how` says, then leaves. Fails only if negotiation
/// fails; the caller judges the report. For a channel, the report's `delete_status` is 200
/// once `endSession` was sent; for Janus, it is the status of the session's `destroy`.
pub async fn watch_via(via: Via, how: Watch) -> anyhow::Result<Report> {
    let viewer = Viewer::join(via, how).await?;
    viewer.wait_for(how.frames, how.within).await;
    viewer.leave().await
}

/// Which of its network paths a viewer may use.
#[derive(Debug, Clone, Default)]
pub enum Network {
    /// UDP host candidates on loopback (or `Via`'s address), as a viewer on the same network.
    #[default]
    Udp,
    /// TCP only (RFC 6544 active candidates): a viewer on a network that blocks UDP.
    Tcp,
    /// Relay candidates only, through this TURN server: a viewer that can reach the camera
    /// only through a relay.
    Relay(Turn),
    /// UDP to the camera only through this address: a [`crate::link::Link`] (a bad link of
    /// this viewer's own). WHEP only.
    Link(std::net::SocketAddr),
}

/// A TURN server and the long-term credentials to allocate on it.
#[derive(Debug, Clone)]
pub struct Turn {
    /// e.g. `turn:127.0.0.1:3478?transport=udp`
    pub url: String,
    /// The TURN username.
    pub username: String,
    /// The TURN password.
    pub credential: String,
}

/// A viewer that has joined: it receives (and decodes) in the background until it leaves.
/// Tests that must see pictures keep arriving while something else happens read
/// [`Viewer::frames`] as they go.
pub struct Viewer {
    pc: Box<dyn PeerConnection>,
    shared: Arc<Mutex<Shared>>,
    progress: Arc<Notify>,
    leave: Leave,
}

impl Viewer {
    /// Joins as `via` says, receiving as `how` says (`decode`, `pli_at_frame`; `frames` and
    /// `within` are for [`Viewer::wait_for`]). Returns once the answer is applied.
    pub async fn join(via: Via, how: Watch) -> anyhow::Result<Viewer> {
        Self::join_over(via, how, Network::Udp).await
    }

    /// [`Viewer::join`], with only the paths `network` allows.
    pub async fn join_over(via: Via, how: Watch, network: Network) -> anyhow::Result<Viewer> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let progress = Arc::new(Notify::new());
        let gathered = Arc::new(Notify::new());
        let handler = Handler {
            how,
            shared: shared.clone(),
            gathered: gathered.clone(),
            progress: progress.clone(),
        };
        let pc: Box<dyn PeerConnection> = Box::new(
            recvonly_peer(
                true,
                &[RtpCodecKind::Video, RtpCodecKind::Audio],
                &via.bind(),
                &network,
                handler,
            )
            .await?,
        );
        if let Ok(mut s) = shared.lock() {
            s.started = Some(Instant::now());
        }
        let negotiated = match negotiate(via, pc.as_ref(), &gathered, &network).await {
            Ok(leave) if matches!(network, Network::Tcp) => {
                dial_passive_candidates(pc.as_ref()).await.map(|()| leave)
            }
            negotiated => negotiated,
        };
        match negotiated {
            Ok(leave) => Ok(Viewer {
                pc,
                shared,
                progress,
                leave,
            }),
            Err(err) => {
                let _ = pc.close().await;
                Err(err)
            }
        }
    }

    /// The ICE passwords of both sides (`a=ice-pwd` of the offer and the answer): secrets
    /// neither side may log.
    pub async fn ice_passwords(&self) -> Vec<String> {
        let mut sdp = String::new();
        for description in [
            self.pc.local_description().await,
            self.pc.remote_description().await,
        ]
        .into_iter()
        .flatten()
        {
            sdp += &description.sdp;
        }
        let mut passwords: Vec<String> = sdp
            .lines()
            .filter_map(|line| line.trim().strip_prefix("a=ice-pwd:"))
            .map(str::to_owned)
            .collect();
        passwords.dedup();
        passwords
    }

    /// Pictures received so far (decoded ones, when decoding).
    pub fn frames(&self) -> usize {
        self.shared.lock().map_or(0, |s| s.report.frames_decoded)
    }

    /// Whether the daemon ended the connection (closed, failed or dropped).
    pub fn ended(&self) -> bool {
        self.shared.lock().map_or(true, |s| s.ended)
    }

    /// What the viewer has seen so far.
    pub fn report(&self) -> Report {
        report_of(&self.shared)
    }

    /// Waits until `frames` pictures have arrived in all, the connection ended, or `within`
    /// passed, whichever comes first; returns what was seen by then.
    pub async fn wait_for(&self, frames: usize, within: Duration) -> Report {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the check, so progress made in between is not missed.
            let notified = self.progress.notified();
            if self.frames() >= frames || self.ended() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        self.report()
    }

    /// The WHEP session URL (`None` for other ways of joining).
    pub fn session_url(&self) -> Option<String> {
        match &self.leave {
            Leave::Whep(resource, _) => Some(resource.clone()),
            _ => None,
        }
    }

    /// Restarts ICE as a viewer whose network changed does over WHEP (RFC 9725 §4.3.2): new
    /// credentials in a PATCH with `If-Match: *`, the camera's new ones from the `200`, applied
    /// as the answer. Returns the camera's fragment, its `ETag`, and the camera's ufrag before.
    pub async fn restart_ice(&self) -> anyhow::Result<Restarted> {
        let Leave::Whep(resource, token) = &self.leave else {
            bail!("ICE restarts over PATCH are for WHEP sessions");
        };
        let before = self.pc.remote_description().await.context("no answer")?;
        let old_ufrag = before
            .sdp
            .lines()
            .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
            .unwrap_or_default()
            .to_owned();
        self.pc.restart_ice().await?;
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        let ours = restart_fragment(self.pc.as_ref()).await?;
        let (url, token) = (resource.clone(), token.clone());
        let (status, etag, theirs) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut request = agent()
                .patch(&url)
                .header("Content-Type", "application/trickle-ice-sdpfrag")
                .header("If-Match", "*");
            if let Some(token) = token {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let mut response = request.send(ours.as_bytes())?;
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let status = response.status().as_u16();
            Ok((status, etag, response.body_mut().read_to_string()?))
        })
        .await??;
        ensure!(
            status == 200,
            "ICE restart PATCH answered {status}: {theirs}"
        );
        let answer = self.pc.remote_description().await.context("no answer")?;
        let answer = restarted_answer(&answer.sdp, &theirs).context("no credentials in the 200")?;
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer)?)
            .await?;
        Ok(Restarted {
            fragment: theirs,
            old_ufrag,
            etag: etag.unwrap_or_default(),
        })
    }

    /// Leaves (WHEP DELETE, `endSession` for a channel, `destroy` for Janus), closes the connection and
    /// returns the final report.
    pub async fn leave(self) -> anyhow::Result<Report> {
        let Viewer {
            pc, shared, leave, ..
        } = self;
        let delete_status = match leave {
            Leave::Whep(resource, token) => {
                tokio::task::spawn_blocking(move || {
                    let mut delete = agent().delete(&resource);
                    if let Some(token) = token {
                        delete = delete.header("Authorization", format!("Bearer {token}"));
                    }
                    delete.call().map(|r| r.status().as_u16())
                })
                .await?
                // No answer at all (the daemon is gone) reads as 0.
                .unwrap_or(0)
            }
            Leave::Channel(session) => match session.leave().await {
                Ok(()) => 200,
                Err(_) => 0,
            },
            Leave::Janus(session) => session.leave().await,
        };
        let _ = pc.close().await;
        let mut report = report_of(&shared);
        report.delete_status = delete_status;
        Ok(report)
    }
}

fn report_of(shared: &Mutex<Shared>) -> Report {
    let Ok(s) = shared.lock() else {
        return Report::default();
    };
    let mut report = s.report.clone();
    if s.audio_samples > 0 {
        report.audio_rms = (s.audio_sum_squares / s.audio_samples as f64).sqrt();
    }
    report
}

/// Negotiates `pc` as `via` says; returns how to leave.
async fn negotiate(
    via: Via,
    pc: &dyn PeerConnection,
    gathered: &Notify,
    network: &Network,
) -> anyhow::Result<Leave> {
    let link = match network {
        Network::Link(addr) => Some(*addr),
        _ => None,
    };
    ensure!(
        link.is_none() || matches!(via, Via::Whep(_) | Via::WhepBearer { .. }),
        "a viewer joins through a link over WHEP only"
    );
    Ok(match via {
        Via::Whep(url) => {
            let offer = local_offer(pc, gathered).await?;
            Leave::Whep(whep_post(&url, None, offer, pc, link).await?, None)
        }
        Via::WhepBearer { url, token } => {
            let offer = local_offer(pc, gathered).await?;
            let resource = whep_post(&url, Some(&token), offer, pc, link).await?;
            Leave::Whep(resource, Some(token))
        }
        Via::Channel {
            ws_url,
            channel,
            token,
            we_offer,
        } => {
            let consumer = Consumer::connect(&ws_url, token.as_deref()).await?;
            Leave::Channel(Box::new(
                consumer.join(&channel, we_offer, pc, gathered).await?,
            ))
        }
        Via::Janus {
            api, mountpoint, ..
        } => Leave::Janus(crate::janus::watch(&api, mountpoint, pc, gathered).await?),
    })
}

/// What an ICE restart over WHEP got back.
#[derive(Debug)]
pub struct Restarted {
    /// The camera's `200` body: its new credentials and its candidates.
    pub fragment: String,
    /// The camera's ICE username fragment before the restart.
    pub old_ufrag: String,
    /// The `ETag` of the restarted ICE session.
    pub etag: String,
}

/// `pc`'s new local offer (after `restart_ice`) as a trickle fragment: its credentials, and
/// its candidates under the first media section once gathered (15 s at most).
async fn restart_fragment(pc: &dyn PeerConnection) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sdp = String::new();
    while Instant::now() < deadline {
        sdp = pc.local_description().await.context("no offer")?.sdp;
        if sdp.contains("a=end-of-candidates") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let value = |key: &str| sdp.lines().find_map(|l| l.trim_end().strip_prefix(key));
    let (ufrag, pwd) = (value("a=ice-ufrag:"), value("a=ice-pwd:"));
    let (Some(ufrag), Some(pwd)) = (ufrag, pwd) else {
        bail!("restart offer without credentials:\n{sdp}");
    };
    let mut fragment = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    fragment += "m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    let candidates: std::collections::BTreeSet<&str> = sdp
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    for candidate in candidates {
        fragment += candidate;
        fragment += "\r\n";
    }
    Ok(fragment + "a=end-of-candidates\r\n")
}

/// The answer `old` with the credentials and candidates of `fragment` (the camera's reply to
/// an ICE restart) in every media section.
fn restarted_answer(old: &str, fragment: &str) -> Option<String> {
    let value = |key: &str| {
        fragment
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(key))
    };
    let (ufrag, pwd) = (value("a=ice-ufrag:")?, value("a=ice-pwd:")?);
    let candidates: Vec<&str> = fragment
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let mut out = String::new();
    for line in old.lines().map(str::trim_end) {
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out += &format!("a=ice-ufrag:{ufrag}\r\n");
            continue;
        }
        if line.starts_with("a=ice-pwd:") {
            out += &format!("a=ice-pwd:{pwd}\r\n");
            for candidate in &candidates {
                out += candidate;
                out += "\r\n";
            }
            continue;
        }
        out += line;
        out += "\r\n";
    }
    Some(out)
}

/// Hands the answer's passive TCP candidates (each once: they repeat in every media
/// section) to `pc` again, as trickled ones: webrtc-rs 0.21 dials a passive candidate only
/// when it comes through `add_ice_candidate`, not in a remote description.
async fn dial_passive_candidates(pc: &dyn PeerConnection) -> anyhow::Result<()> {
    let answer = pc.remote_description().await.context("no answer")?;
    let passive = answer
        .sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a="))
        .filter(|c| c.starts_with("candidate:") && c.contains(" tcptype passive"))
        .collect::<std::collections::BTreeSet<_>>();
    for candidate in passive {
        pc.add_ice_candidate(RTCIceCandidateInit {
            candidate: candidate.to_owned(),
            sdp_mid: Some("0".to_owned()),
            sdp_mline_index: Some(0),
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

/// How to leave once done watching.
enum Leave {
    /// DELETE this session URL, with this bearer token.
    Whep(String, Option<String>),
    /// Send `endSession`.
    Channel(Box<ChannelSession>),
    /// Destroy the Janus session.
    Janus(crate::janus::JanusSession),
}

/// POSTs `offer` to `whep_url` (with `bearer` as the token), applies the answer to `pc`
/// (its candidates replaced by `link`'s address, if given) and returns the session URL (with
/// `whep_url`'s query, which may carry a token).
async fn whep_post(
    whep_url: &str,
    bearer: Option<&str>,
    offer: String,
    pc: &dyn PeerConnection,
    link: Option<std::net::SocketAddr>,
) -> anyhow::Result<String> {
    let url = whep_url.to_owned();
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let (status, location, content_type, answer) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut request = agent().post(&url).header("Content-Type", "application/sdp");
            if let Some(authorization) = authorization {
                request = request.header("Authorization", authorization);
            }
            let mut response = request.send(offer.as_bytes())?;
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let (location, content_type) = (header("location"), header("content-type"));
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string()?;
            Ok((status, location, content_type, body))
        })
        .await??;
    if status != 201 {
        bail!("WHEP POST answered {status}: {answer}");
    }
    let location = location.context("201 without Location")?;
    ensure!(
        content_type.as_deref() == Some("application/sdp"),
        "answer content type {content_type:?}"
    );
    let answer = match link {
        Some(relay) => crate::link::through(&answer, relay),
        None => answer,
    };
    pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await?;
    let query = whep_url.find('?').map_or("", |at| &whep_url[at..]);
    Ok(resolve(whep_url, &location) + query)
}

/// Resolves a `Location` header against the URL it answered.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|i| base[i..].find('/').map(|j| i + j))
        .unwrap_or(base.len());
    format!("{}{}", &base[..origin_end], location)
}

/// A complete, valid offer (video + audio, all candidates) that offers VP8 and no H.264.
pub async fn offer_without_h264() -> anyhow::Result<String> {
    offer_of(false, &[RtpCodecKind::Video, RtpCodecKind::Audio]).await
}

/// A complete, valid offer as a viewer sends it: H.264 video and Opus audio, receive only.
pub async fn plain_offer() -> anyhow::Result<String> {
    offer_of(true, &[RtpCodecKind::Video, RtpCodecKind::Audio]).await
}

/// A complete, valid offer that receives audio (Opus) only: no video section at all.
pub async fn audio_only_offer() -> anyhow::Result<String> {
    offer_of(true, &[RtpCodecKind::Audio]).await
}

/// The offer of a peer that receives `kinds`, with H.264 (else VP8) for video.
async fn offer_of(h264: bool, kinds: &[RtpCodecKind]) -> anyhow::Result<String> {
    let handler = Handler {
        how: Watch {
            decode: false,
            ..Watch::decoding(0, Duration::ZERO)
        },
        shared: Arc::default(),
        gathered: Arc::default(),
        progress: Arc::default(),
    };
    let gathered = handler.gathered.clone();
    let pc = recvonly_peer(h264, kinds, "127.0.0.1:0", &Network::Udp, handler).await?;
    let offer = local_offer(&pc, &gathered).await;
    pc.close().await?;
    offer
}

/// A peer connection on `addr` (loopback for all but Janus), over the paths `network`
/// allows, that receives `kinds` (video and audio for a viewer). `h264: false` takes VP8
/// instead.
async fn recvonly_peer(
    h264: bool,
    kinds: &[RtpCodecKind],
    addr: &str,
    network: &Network,
    handler: Handler,
) -> anyhow::Result<impl PeerConnection> {
    let mut engine = media_engine(h264)?;
    let mut registry = register_default_interceptors(Registry::new(), &mut engine)?;
    if let Some(depth) = handler.how.jitter_buffer {
        let buffer = JitterBufferBuilder::new().with_depth(depth).build();
        registry = registry.with(Slot::JitterBuffer, buffer);
    }
    let mut settings = SettingEngineBuilder::new().with_include_loopback_candidate(true);
    let mut configuration = RTCConfigurationBuilder::new();
    let (mut udp, mut tcp) = (vec![addr.to_owned()], vec![]);
    match network {
        Network::Udp | Network::Link(_) => {}
        Network::Tcp => {
            settings = settings.with_network_types(vec![NetworkType::Tcp4, NetworkType::Tcp6]);
            (udp, tcp) = (vec![], vec![addr.to_owned()]);
        }
        Network::Relay(turn) => {
            configuration = configuration
                .with_ice_servers(vec![RTCIceServer {
                    urls: vec![turn.url.clone()],
                    username: turn.username.clone(),
                    credential: turn.credential.clone(),
                }])
                .with_ice_transport_policy(RTCIceTransportPolicy::Relay);
        }
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(configuration.build())
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings.build())
        .with_handler(Arc::new(handler))
        .with_udp_addrs(udp)
        .with_tcp_addrs(tcp)
        .build()
        .await?;
    for &kind in kinds {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        };
        pc.add_transceiver_from_kind(kind, Some(init)).await?;
    }
    Ok(pc)
}

/// `pc`'s offer with all its candidates.
async fn local_offer(pc: &dyn PeerConnection, gathered: &Notify) -> anyhow::Result<String> {
    pc.set_local_description(pc.create_offer(None).await?)
        .await?;
    // Gathering ends at once on loopback, later with a TURN server on a loaded machine.
    let _ = tokio::time::timeout(Duration::from_secs(15), gathered.notified()).await;
    Ok(pc.local_description().await.context("no local offer")?.sdp)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolves_relative_locations() {
        assert_eq!(
            super::resolve("http://127.0.0.1:80/whep", "/whep/abc"),
            "http://127.0.0.1:80/whep/abc"
        );
        assert_eq!(super::resolve("http://h/whep", "http://x/y"), "http://x/y");
    }
}
