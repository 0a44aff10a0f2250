//! `/healthz` and `/api/status`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use onair_config::{IceServer, VideoEncoder};
use serde::Serialize;

use super::AppState;
use super::access::Role;
use crate::webrtc::figures::PeerFigures;
use crate::whip::WhipStatus;

/// 200 while encoded frames flow, 503 (with the reason) otherwise.
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, String) {
    match state.media.no_picture(Instant::now()) {
        None => (StatusCode::OK, "ok\n".into()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// The body of `/api/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    channel: String,
    name: String,
    viewers: usize,
    sessions: usize,
    fps: f64,
    bitrate_kbps: f64,
    uptime_s: u64,
    video: VideoStatus,
    audio: bool,
    /// The packet loss (per cent) Opus adds in-band FEC for: the worst any viewer reports
    /// lately; 0 while nobody loses audio.
    audio_fec_loss_percent: u8,
    /// Privacy is on: black pictures and silence are being sent.
    privacy: bool,
    frames_encoded: u64,
    keyframes: u64,
    signaling: SignalingStatus,
    /// The publication to a media server (`whip.url`); `null` without one.
    whip: Option<WhipStatus>,
    /// Every session: its id, its state and how its link is doing. Operators only: a
    /// session's id is its WHEP resource, which ends or restarts it (viewers see the counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerFigures>>,
}

#[derive(Debug, Serialize)]
struct SignalingStatus {
    /// The service's URL, or "built-in".
    service: String,
    /// The channel is registered there.
    registered: bool,
}

#[derive(Debug, Serialize)]
struct VideoStatus {
    codec: &'static str,
    /// "openh264", "v4l2m2m" or "passthrough".
    encoder: VideoEncoder,
    /// Which encoder (the device) and why it was chosen, or why it was given up.
    encoder_detail: String,
    /// `null` while a passthrough camera has not sent its first SPS.
    profile_level_id: Option<String>,
    width: u32,
    height: u32,
}

/// Channel, viewers and encoder figures. URLs that may carry secrets (the signalling
/// service's, the WHIP endpoint's and session's) are shown whole to operators only, redacted
/// to viewers; the sessions (with their ids) to operators only.
pub async fn status(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
) -> Json<Status> {
    let operator = role >= Role::Operator;
    let shown = |url: &str| match operator {
        true => url.to_owned(),
        false => onair_signal::redact::url(url),
    };
    let now = Instant::now();
    let stats = state.media.stats.snapshot(now);
    let video = state.media.video_description();
    Json(Status {
        channel: state.channel.clone(),
        name: state.name.clone(),
        viewers: state.sessions.viewers(),
        sessions: state.sessions.len(),
        fps: stats.fps,
        bitrate_kbps: stats.bitrate_kbps,
        uptime_s: now.duration_since(state.started).as_secs(),
        video: VideoStatus {
            codec: "H264",
            encoder: video.encoder,
            encoder_detail: video.encoder_detail,
            profile_level_id: video.profile_level_id,
            width: video.width,
            height: video.height,
        },
        audio: state.media.has_audio(),
        audio_fec_loss_percent: state.media.audio_fec_percent(),
        privacy: state.media.privacy(),
        frames_encoded: stats.video_frames,
        keyframes: stats.video_keyframes,
        signaling: SignalingStatus {
            service: shown(&state.signaling),
            registered: state.registered.load(Ordering::Relaxed),
        },
        whip: (state.publisher.as_ref())
            .and_then(|p| p.status())
            .map(|w| if operator { w } else { w.redacted() }),
        peers: match operator {
            true => Some(state.sessions.peers().await),
            false => None,
        },
    })
}

/// `GET /api/ice-servers`: the STUN and TURN servers of `webrtc.ice_servers`, in the shape of
/// WebRTC's `RTCIceServer` (`urls`, `username`, `credential`). onair.js gives them to the
/// browser's peer connection, as WHEP's `Link` headers do for WHEP players.
pub async fn ice_servers(State(state): State<AppState>) -> Json<Vec<IceServer>> {
    Json(state.ice_servers.to_vec())
}
