//! From the shared encoded units to one viewer's RTP stream.
//!
//! Payloads are cut once by the encoder thread; per viewer only the 12-byte RTP header is
//! written (its own SSRC and sequence numbers, the negotiated payload type) around the
//! shared payload bytes. A viewer that joins mid-stream, or falls so far behind that the
//! broadcast ring overwrote frames it had not sent, skips to the next IDR: sending P frames
//! whose references it never got would only show corruption. After falling behind it
//! rejoins at the live end of the ring, not at the oldest unit still in it, so it does not
//! replay seconds of old pictures.

use std::sync::Arc;

use rtc::rtp::{Header, Packet};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::task::JoinSet;
use tracing::debug;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::media::{AudioUnit, MediaHandle, VideoUnit};

/// One of a viewer's outgoing tracks, negotiated and ready to feed.
pub struct Outgoing {
    /// Audio or video.
    pub kind: RtpCodecKind,
    /// The webrtc-rs track bound to the viewer's peer connection.
    pub track: Arc<TrackLocalStaticRTP>,
    /// Our SSRC on it.
    pub ssrc: u32,
    /// The payload type the answer gave the codec.
    pub payload_type: u8,
}

/// Starts feeding a connected viewer's tracks. The tasks end when aborted (the session
/// closes) or when their track is gone.
pub fn start(media: &MediaHandle, outgoing: &[Outgoing], tasks: &mut JoinSet<()>) {
    for out in outgoing {
        let track: Arc<dyn TrackLocal> = out.track.clone();
        match out.kind {
            RtpCodecKind::Audio => {
                if let Some(units) = media.subscribe_audio() {
                    let stamper = RtpStamper::new(out.ssrc, out.payload_type, false);
                    tasks.spawn(audio(track, stamper, units));
                }
            }
            _ => {
                let stamper = RtpStamper::new(out.ssrc, out.payload_type, true);
                let units = media.subscribe_video();
                tasks.spawn(video(track.clone(), stamper, units, media.clone()));
                tasks.spawn(keyframe_requests(track, media.clone()));
            }
        }
    }
}

/// Writes RTP headers for one viewer's stream of one medium.
#[derive(Debug)]
pub struct RtpStamper {
    ssrc: u32,
    payload_type: u8,
    next_sequence: u16,
    /// Video only: nothing is sent until an IDR arrives.
    waiting_for_keyframe: bool,
}

impl RtpStamper {
    /// A stream with a random first sequence number (RFC 3550 §5.1).
    pub fn new(ssrc: u32, payload_type: u8, wait_for_keyframe: bool) -> Self {
        RtpStamper {
            ssrc,
            payload_type,
            next_sequence: rand::random(),
            waiting_for_keyframe: wait_for_keyframe,
        }
    }

    /// Units were lost before this viewer sent them: wait for the next IDR.
    pub fn lost_units(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// The RTP packets of one picture, none while waiting for an IDR. The marker bit ends
    /// the picture.
    pub fn video<'a>(&'a mut self, unit: &'a VideoUnit) -> impl Iterator<Item = Packet> + 'a {
        if unit.keyframe {
            self.waiting_for_keyframe = false;
        }
        let payloads = match self.waiting_for_keyframe {
            true => &unit.payloads[..0],
            false => &unit.payloads[..],
        };
        let last = payloads.len().saturating_sub(1);
        payloads
            .iter()
            .enumerate()
            .map(move |(i, payload)| self.packet(i == last, unit.rtp_timestamp, payload.clone()))
    }

    /// The RTP packet of one Opus frame.
    pub fn audio(&mut self, unit: &AudioUnit) -> Packet {
        self.packet(false, unit.rtp_timestamp, unit.payload.clone())
    }

    fn packet(&mut self, marker: bool, timestamp: u32, payload: bytes::Bytes) -> Packet {
        let sequence_number = self.next_sequence;
        self.next_sequence = self.next_sequence.wrapping_add(1);
        Packet {
            header: Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload,
        }
    }
}

/// Sends the shared video to one viewer until the track is gone or the source stops.
/// Asks for an IDR at the start and whenever it had to skip.
async fn video(
    track: Arc<dyn TrackLocal>,
    mut stamper: RtpStamper,
    mut units: Receiver<Arc<VideoUnit>>,
    media: MediaHandle,
) {
    media.request_keyframe();
    loop {
        match units.recv().await {
            Ok(unit) => {
                for packet in stamper.video(&unit) {
                    if track.write_rtp(packet).await.is_err() {
                        return;
                    }
                }
            }
            Err(RecvError::Lagged(skipped)) => {
                debug!(skipped, "viewer fell behind; skipping to the next IDR");
                units = units.resubscribe();
                stamper.lost_units();
                media.request_keyframe();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Sends the shared audio to one viewer until the track is gone or the source stops.
async fn audio(
    track: Arc<dyn TrackLocal>,
    mut stamper: RtpStamper,
    mut units: Receiver<Arc<AudioUnit>>,
) {
    loop {
        match units.recv().await {
            Ok(unit) => {
                if track.write_rtp(stamper.audio(&unit)).await.is_err() {
                    return;
                }
            }
            // Opus frames stand alone: carry on from the live end.
            Err(RecvError::Lagged(_)) => units = units.resubscribe(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// PLI/FIR from this viewer → an IDR for everyone (coalesced by the encoder).
async fn keyframe_requests(track: Arc<dyn TrackLocal>, media: MediaHandle) {
    while let Some(event) = track.poll().await {
        // Other (future) events are not ours to act on; keep listening.
        if let TrackLocalEvent::OnRtcpPacket(_) = event {
            debug!("keyframe requested by viewer");
            media.request_keyframe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn unit(keyframe: bool, ts: u32, payloads: usize) -> VideoUnit {
        VideoUnit {
            payloads: (0..payloads)
                .map(|i| Bytes::from(vec![i as u8; 10]))
                .collect(),
            keyframe,
            rtp_timestamp: ts,
        }
    }

    #[test]
    fn joins_at_an_idr_and_numbers_packets_consecutively() {
        let mut s = RtpStamper::new(42, 102, true);
        assert_eq!(s.video(&unit(false, 0, 3)).count(), 0);
        let idr: Vec<_> = s.video(&unit(true, 3000, 3)).collect();
        let p: Vec<_> = s.video(&unit(false, 6000, 2)).collect();
        let all: Vec<_> = idr.iter().chain(p.iter()).collect();
        assert_eq!(all.len(), 5);
        for pair in all.windows(2) {
            assert_eq!(
                pair[1].header.sequence_number,
                pair[0].header.sequence_number.wrapping_add(1)
            );
        }
        assert_eq!(
            idr.iter().map(|p| p.header.marker).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert!(
            all.iter()
                .all(|p| p.header.ssrc == 42 && p.header.payload_type == 102)
        );
        assert_eq!(p[0].header.timestamp, 6000);
    }

    #[test]
    fn after_a_loss_waits_for_the_next_idr_without_a_sequence_gap() {
        let mut s = RtpStamper::new(1, 96, true);
        let first: Vec<_> = s.video(&unit(true, 0, 1)).collect();
        s.lost_units();
        assert_eq!(s.video(&unit(false, 3000, 4)).count(), 0);
        let next: Vec<_> = s.video(&unit(true, 6000, 1)).collect();
        assert_eq!(
            next[0].header.sequence_number,
            first[0].header.sequence_number.wrapping_add(1)
        );
    }

    #[test]
    fn payload_bytes_are_shared_not_copied() {
        let u = unit(true, 0, 2);
        let mut a = RtpStamper::new(1, 96, true);
        let mut b = RtpStamper::new(2, 96, true);
        let pa: Vec<_> = a.video(&u).collect();
        let pb: Vec<_> = b.video(&u).collect();
        assert_eq!(pa[0].payload.as_ptr(), pb[0].payload.as_ptr());
        assert_eq!(pa[0].payload.as_ptr(), u.payloads[0].as_ptr());
    }
}
