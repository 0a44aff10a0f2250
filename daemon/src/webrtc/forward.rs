//! From the shared encoded units to one viewer's RTP stream.
//!
//! Payloads are cut once by the encoder thread; per viewer only the 12-byte RTP header is
//! written (its own SSRC and sequence numbers, the negotiated payload type) around the
//! shared payload bytes.
//!
//! A joining viewer starts from the newest IDR and the pictures since it (the GOP kept by
//! `media::gop`), replayed fast until it is live (`webrtc::catch_up`), so its first picture
//! is on screen as soon as SRTP is up and nobody else's stream gets an IDR for it. Only when
//! no GOP is at hand does the viewer ask the encoder for an IDR (reason `join`). A viewer
//! whose pictures were lost before it got them (the loop fell behind the broadcast ring)
//! skips to the next IDR ([`RtpStamper::lost_units`]): P frames whose references it never
//! got would only show corruption. `webrtc::viewer` decides what to send when.

use std::time::Instant;

use rtc::rtp::{Header, Packet};

use super::congestion::Estimate;
use crate::media::{AudioUnit, VideoUnit};

/// Writes RTP headers for one viewer's stream of one medium.
#[derive(Debug)]
pub struct RtpStamper {
    ssrc: u32,
    payload_type: u8,
    next_sequence: u16,
    /// Timestamp of the last picture sent: the next must be later.
    last_timestamp: Option<u32>,
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
            last_timestamp: None,
            waiting_for_keyframe: wait_for_keyframe,
        }
    }

    /// Units were lost before this viewer sent them: wait for the next IDR.
    pub fn lost_units(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// The sequence number the next packet gets.
    pub fn next_sequence(&self) -> u16 {
        self.next_sequence
    }

    /// Leaves out the next `count` sequence numbers (see [`Gaps`]); the next one used.
    pub fn skip(&mut self, count: u16) -> u16 {
        self.next_sequence = self.next_sequence.wrapping_add(count);
        self.next_sequence
    }

    /// The RTP packets of one picture, none while waiting for an IDR. The marker bit ends
    /// the picture.
    pub fn video<'a>(&'a mut self, unit: &'a VideoUnit) -> impl Iterator<Item = Packet> + 'a {
        self.video_at(unit, unit.rtp_timestamp)
    }

    /// The RTP packets of one picture sent with `timestamp` instead of its own (a picture
    /// caught up with, see `webrtc::catch_up`). Timestamps stay increasing: a picture
    /// stamped before the last one sent goes one tick after it.
    pub fn video_at<'a>(
        &'a mut self,
        unit: &'a VideoUnit,
        timestamp: u32,
    ) -> impl Iterator<Item = Packet> + 'a {
        if unit.keyframe {
            self.waiting_for_keyframe = false;
        }
        let timestamp = match self.last_timestamp {
            Some(last) if timestamp.wrapping_sub(last) as i32 <= 0 => last.wrapping_add(1),
            _ => timestamp,
        };
        if !self.waiting_for_keyframe {
            self.last_timestamp = Some(timestamp);
        }
        let payloads = match self.waiting_for_keyframe {
            true => &unit.payloads[..0],
            false => &unit.payloads[..],
        };
        let last = payloads.len().saturating_sub(1);
        payloads
            .iter()
            .enumerate()
            .map(move |(i, payload)| self.packet(i == last, timestamp, payload.clone()))
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

/// Sequence numbers a viewer's video skips at an IDR to clear its receiver of gaps it will
/// never fill: more than aiortc's video jitter buffer holds (512 packets in aiortc 1.16).
pub const FLUSH: u16 = 1024;

/// Whether a viewer is owed a fresh run of sequence numbers at its next IDR.
///
/// A receiver that assembles pictures strictly in sequence order (aiortc's jitter buffer)
/// waits at a lost packet until it comes again or until the buffer overflows, which takes
/// 512 packets, seconds of video; the pictures behind it wait too and then play seconds late
/// (measured: 8.5 s behind a 1 Mbit/s link, tests/tests/congestion.rs). A browser drops what
/// it cannot complete at the next key frame; such a receiver only drops its buffer when the
/// sequence numbers jump further than it holds. So when an IDR goes to a viewer that may
/// still wait for packets it will not get (its estimate comes from receiver reports — it
/// sends no TWCC, as browsers do — and it reported loss or had resends refused since the
/// last IDR), the IDR starts after a jump of [`FLUSH`]. Its receiver reports then count the
/// jump as lost; congestion control takes it out again (`Estimate::skipped`). At most one
/// jump every [`FLUSH_EVERY`]: the receiver answers a jump with a PLI, whose IDR must not
/// jump again while the link is still losing.
#[derive(Debug, Default)]
pub struct Gaps {
    /// The viewer's lossy reports and refused resends when its last IDR went out.
    at_idr: (u64, u64),
    /// When the last jump was.
    last: Option<Instant>,
}

/// The shortest time between two jumps (see [`Gaps`]).
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl Gaps {
    /// An IDR goes at `now` to the viewer whose feedback is `feedback`: whether to jump
    /// first.
    pub fn flush(&mut self, feedback: &Estimate, now: Instant) -> bool {
        let seen = (feedback.lossy_reports(), feedback.refused());
        if seen == self.at_idr || !feedback.from_reports() {
            self.at_idr = seen;
            return false;
        }
        // Too soon after the last jump: the loss counts toward the next IDR.
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < FLUSH_EVERY)
        {
            return false;
        }
        self.at_idr = seen;
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn unit(keyframe: bool, ts: u32, payloads: usize) -> VideoUnit {
        VideoUnit {
            access_unit: Bytes::new(),
            payloads: (0..payloads)
                .map(|i| Bytes::from(vec![i as u8; 10]))
                .collect(),
            keyframe,
            rtp_timestamp: ts,
            private: false,
        }
    }

    #[test]
    fn an_idr_after_loss_jumps_for_a_viewer_without_twcc_only() {
        let mut gaps = Gaps::default();
        let t = Instant::now();
        let at = |s: u64| t + std::time::Duration::from_secs(s);
        // No loss yet: no jump.
        assert!(!gaps.flush(&Estimate::reporting(true, 0, 0), at(0)));
        // Loss reported, or resends refused, since the last IDR: a jump, once.
        assert!(gaps.flush(&Estimate::reporting(true, 1, 0), at(1)));
        assert!(!gaps.flush(&Estimate::reporting(true, 1, 0), at(2)));
        // More loss, but too soon after the jump: the next IDR after FLUSH_EVERY jumps.
        assert!(!gaps.flush(&Estimate::reporting(true, 1, 7), at(2)));
        assert!(gaps.flush(&Estimate::reporting(true, 1, 7), at(3)));
        // A viewer whose estimate comes from TWCC (a browser) never.
        let mut browser = Gaps::default();
        assert!(!browser.flush(&Estimate::reporting(false, 3, 9), at(0)));
        // The jump: the IDR's packets start FLUSH further on.
        let mut s = RtpStamper::new(42, 102, false);
        let before: Vec<u16> = s
            .video(&unit(false, 0, 2))
            .map(|p| p.header.sequence_number)
            .collect();
        s.skip(FLUSH);
        let after = s
            .video(&unit(true, 3000, 1))
            .next()
            .unwrap()
            .header
            .sequence_number;
        assert_eq!(after, before[1].wrapping_add(1).wrapping_add(FLUSH));
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

    #[test]
    fn timestamps_keep_increasing_after_pictures_sent_with_later_ones() {
        let mut s = RtpStamper::new(7, 102, true);
        let caught_up: Vec<_> = s.video_at(&unit(true, 3000, 2), 9000).collect();
        assert!(caught_up.iter().all(|p| p.header.timestamp == 9000));
        // A live picture captured before the last caught-up one was sent.
        let early: Vec<_> = s.video(&unit(false, 8000, 2)).collect();
        assert!(early.iter().all(|p| p.header.timestamp == 9001));
        let live: Vec<_> = s.video(&unit(false, 12000, 1)).collect();
        assert_eq!(live[0].header.timestamp, 12000);
        assert_eq!(
            live[0].header.sequence_number,
            early[1].header.sequence_number.wrapping_add(1)
        );
    }

    #[test]
    fn increasing_timestamps_wrap_like_rtp_timestamps() {
        let mut s = RtpStamper::new(7, 102, true);
        let _ = s.video_at(&unit(true, 0, 1), u32::MAX).count();
        let next: Vec<_> = s.video(&unit(false, u32::MAX - 5, 1)).collect();
        assert_eq!(next[0].header.timestamp, 0);
        let later: Vec<_> = s.video(&unit(false, 3000, 1)).collect();
        assert_eq!(later[0].header.timestamp, 3000);
    }
}
