//! A joining viewer's way from the kept GOP to the live pictures.
//!
//! The viewer needs every picture since the newest IDR (`media::gop`), which was captured up
//! to a key frame interval ago. Two ways of sending them fail:
//! - all at once: up to 0.75 MB in a millisecond overflows the receiver's socket buffer
//!   (about 200 KB on Linux), and a lost P frame spoils the rest of the GOP;
//! - at their own pace and timestamps: the viewer's jitter buffer then plays them, and
//!   everything after, that far behind live for good.
//!
//! So the IDR goes at once (the first picture is on screen as soon as SRTP is up), and the
//! pictures after it follow at [`SPEED`] times their real pace, each stamped with the RTP
//! time it is sent at, so that the viewer sees a steady stream that plays fast forward.
//! Pictures published meanwhile join the queue. Once the queue is empty the viewer is live,
//! and later pictures go with their own capture timestamps, a few milliseconds (capture to
//! publish) before their send time: the first one or two may be stamped before the last
//! caught-up picture, so the stamper keeps timestamps increasing (`RtpStamper::video_at`).
//!
//! Pure logic with time as an input; `webrtc::forward` does the sending and the waiting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::{RtpClock, VideoUnit};

/// How much faster than real time the GOP is replayed: a GOP of age `a` is caught up in
/// about `a / (SPEED - 1)` (290 ms for the default 2 s key frame interval).
pub const SPEED: u32 = 8;
/// How much faster than real time the pictures after a drained link's key frame go (see
/// [`CatchUp::after`]).
pub const DRAINED_SPEED: u32 = 2;
/// The longest wait between two caught-up pictures, whatever their timestamps say.
const MAX_GAP: Duration = Duration::from_millis(100);

/// What to send next.
#[derive(Debug)]
pub struct Next {
    /// The picture.
    pub unit: Arc<VideoUnit>,
    /// The RTP timestamp to send it with.
    pub timestamp: u32,
}

/// The pictures a joining viewer still has to be sent before it is live.
#[derive(Debug)]
pub struct CatchUp {
    queue: VecDeque<Arc<VideoUnit>>,
    clock: RtpClock,
    /// When the next picture is due; `None` before the first.
    due: Option<Instant>,
    /// How much faster than real time they go.
    speed: u32,
}

impl CatchUp {
    /// Starts from `gop` (oldest first; empty when there is none).
    pub fn new(gop: Vec<Arc<VideoUnit>>, clock: RtpClock) -> Self {
        CatchUp {
            queue: gop.into(),
            clock,
            due: None,
            speed: SPEED,
        }
    }

    /// Starts from `gop`, whose first picture is due at `first`, the pictures after it
    /// going at [`DRAINED_SPEED`] (a viewer moved to a lower layer because its link is full:
    /// the link drains first, and is not filled again at once).
    pub fn after(gop: Vec<Arc<VideoUnit>>, clock: RtpClock, first: Instant) -> Self {
        CatchUp {
            queue: gop.into(),
            clock,
            due: Some(first),
            speed: DRAINED_SPEED,
        }
    }

    /// A picture published while catching up: it is sent after the ones queued.
    pub fn push(&mut self, unit: Arc<VideoUnit>) {
        if !self.queue.is_empty() {
            self.queue.push_back(unit);
        }
    }

    /// Whether nothing is left to catch up: from now on pictures go as they come.
    pub fn is_live(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the next picture is due; `None` once live, and before the first, which is due
    /// at once.
    pub fn due(&self) -> Option<Instant> {
        self.due.filter(|_| !self.queue.is_empty())
    }

    /// The next picture to send at `now`, if one is due.
    pub fn next(&mut self, now: Instant) -> Option<Next> {
        if self.due.is_some_and(|due| now < due) {
            return None;
        }
        let unit = self.queue.pop_front()?;
        let timestamp = self.clock.video(now);
        self.due = self.queue.front().map(|following| {
            let ticks = following.rtp_timestamp.wrapping_sub(unit.rtp_timestamp);
            let real = Duration::from_micros(u64::from(ticks) * 1000 / 90);
            now + (real / self.speed).min(MAX_GAP)
        });
        Some(Next { unit, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_micros(33_333);

    fn gop(clock: &RtpClock, captured: Instant, pictures: usize) -> Vec<Arc<VideoUnit>> {
        (0..pictures)
            .map(|i| {
                Arc::new(VideoUnit {
                    access_unit: bytes::Bytes::new(),
                    payloads: vec![bytes::Bytes::from_static(b"x")],
                    keyframe: i == 0,
                    rtp_timestamp: clock.video(captured + FRAME * i as u32),
                    private: false,
                })
            })
            .collect()
    }

    #[test]
    fn the_idr_goes_at_once_and_the_rest_at_eight_times_their_pace() {
        let clock = RtpClock::new();
        let start = Instant::now() + Duration::from_secs(10);
        let mut catch_up = CatchUp::new(gop(&clock, start - Duration::from_secs(1), 30), clock);
        let first = catch_up.next(start).unwrap();
        assert!(first.unit.keyframe);
        assert!(catch_up.next(start).is_none(), "the second is not due yet");
        let due = catch_up.due().unwrap();
        assert_eq!(due - start, FRAME / SPEED);
        let second = catch_up.next(due).unwrap();
        // Stamped with the send time: as far apart as they were sent.
        assert_eq!(
            second.timestamp.wrapping_sub(first.timestamp),
            clock.video(due).wrapping_sub(clock.video(start))
        );
    }

    #[test]
    fn pictures_published_meanwhile_are_caught_up_then_the_viewer_is_live() {
        let clock = RtpClock::new();
        let start = Instant::now() + Duration::from_secs(10);
        let age = Duration::from_millis(700);
        let mut catch_up = CatchUp::new(gop(&clock, start - age, 21), clock);
        let (mut now, mut next_capture) = (start, start);
        let mut sent = Vec::new();
        while !catch_up.is_live() {
            // The live stream goes on: a picture every frame interval.
            while next_capture <= now {
                catch_up.push(gop(&clock, next_capture, 2)[1].clone());
                next_capture += FRAME;
            }
            if let Some(next) = catch_up.next(now) {
                sent.push(next.timestamp);
            }
            now = catch_up
                .due()
                .unwrap_or(now)
                .max(now + Duration::from_millis(1));
        }
        let took = now - start;
        assert!(took < age / (SPEED - 1) + FRAME * 2, "{took:?}");
        assert!(sent.windows(2).all(|w| w[1].wrapping_sub(w[0]) as i32 > 0));
        // Stamped with their send times: the last is now.
        assert_eq!(
            *sent.last().unwrap(),
            clock.video(now - Duration::from_millis(1))
        );
    }

    #[test]
    fn without_a_gop_the_viewer_is_live_at_once() {
        let mut catch_up = CatchUp::new(Vec::new(), RtpClock::new());
        assert!(catch_up.is_live());
        assert!(catch_up.due().is_none());
        catch_up.push(gop(&RtpClock::new(), Instant::now(), 1)[0].clone());
        assert!(catch_up.is_live(), "a live picture is not queued");
        assert!(catch_up.next(Instant::now()).is_none());
    }
}
