//! The encoded video as viewers receive it: the live broadcast, and the newest IDR with the
//! pictures since it (the group of pictures, GOP) so that a joining viewer can start at once.
//!
//! Without it a joining viewer waited for an IDR forced for it, which every other viewer
//! then received too, and which the coalescing gap could hold back for up to half a second.
//! With it a join costs nobody anything: the viewer gets the GOP in one burst (its decoder
//! needs every picture since the IDR), then the live stream, with no gap and no repeat
//! between the two because both are taken under one lock.
//!
//! The GOP is bounded: a key frame interval longer than [`GOP_LIMIT`] pictures (or a
//! passthrough camera that sends IDRs rarely) leaves the GOP empty until the next IDR, and
//! a viewer joining then asks the encoder for one (reason `join`).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::VideoUnit;

/// Most pictures kept since the IDR: 3 s at 30 fps, more than the default key frame interval
/// (2 s). About 0.75 MB at 2000 kb/s.
pub const GOP_LIMIT: usize = 90;

/// The newest IDR and the pictures since it, at most [`GOP_LIMIT`].
#[derive(Debug, Default)]
struct Gop {
    units: Vec<Arc<VideoUnit>>,
    /// The GOP outgrew the limit: keep nothing until the next IDR.
    overflowed: bool,
    /// Privacy is on: only privacy pictures are kept (and only the camera's while it is off).
    private: bool,
}

impl Gop {
    fn push(&mut self, unit: &Arc<VideoUnit>) {
        if unit.private != self.private {
            // Encoded before privacy was switched, published after: nobody starts from it.
            return;
        }
        if unit.keyframe {
            self.units.clear();
            self.overflowed = false;
        } else if self.overflowed || self.units.is_empty() {
            return;
        } else if self.units.len() >= GOP_LIMIT {
            self.units = Vec::new();
            self.overflowed = true;
            return;
        }
        self.units.push(unit.clone());
    }
}

/// What a joining viewer starts from.
pub struct Joined {
    /// The newest IDR and every picture since it, oldest first; empty when none is at hand.
    pub gop: Vec<Arc<VideoUnit>>,
    /// Every picture after the last one in `gop`.
    pub live: broadcast::Receiver<Arc<VideoUnit>>,
}

/// The encoded video, published once by the video thread, joined by any number of viewers.
#[derive(Debug)]
pub struct VideoFeed {
    live: broadcast::Sender<Arc<VideoUnit>>,
    gop: Mutex<Gop>,
}

impl VideoFeed {
    /// A feed whose live ring holds `queue` pictures: a viewer that falls further behind
    /// loses pictures (and then waits for the next IDR, see `webrtc::forward`).
    pub fn new(queue: usize) -> Self {
        VideoFeed {
            live: broadcast::channel(queue).0,
            gop: Mutex::default(),
        }
    }

    fn gop(&self) -> MutexGuard<'_, Gop> {
        // A panic while holding the lock can only have left a consistent Vec behind.
        self.gop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends a picture to every viewer and keeps it for those who join later.
    pub fn publish(&self, unit: VideoUnit) {
        let unit = Arc::new(unit);
        let mut gop = self.gop();
        gop.push(&unit);
        // An error only means nobody is watching right now.
        let _ = self.live.send(unit);
    }

    /// The GOP so far and the live pictures after it.
    pub fn join(&self) -> Joined {
        let gop = self.gop();
        Joined {
            live: self.live.subscribe(),
            gop: gop.units.clone(),
        }
    }

    /// The GOP so far (oldest first).
    pub fn kept(&self) -> Vec<Arc<VideoUnit>> {
        self.gop().units.clone()
    }

    /// The live pictures only, from the next one published.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<VideoUnit>> {
        self.live.subscribe()
    }

    /// Whether anyone receives the live pictures.
    pub fn watched(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Forgets the GOP (its layer stopped being encoded: nobody may start from it later).
    pub fn forget(&self) {
        let mut gop = self.gop();
        *gop = Gop {
            private: gop.private,
            ..Gop::default()
        };
    }

    /// Forgets the GOP, and from now on keeps only privacy pictures (`private`) or only the
    /// camera's: privacy was switched, or the camera went away.
    pub fn reset(&self, private: bool) {
        *self.gop() = Gop {
            private,
            ..Gop::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(keyframe: bool, ts: u32) -> VideoUnit {
        VideoUnit {
            access_unit: bytes::Bytes::new(),
            payloads: vec![bytes::Bytes::from_static(b"x")],
            keyframe,
            rtp_timestamp: ts,
            private: false,
        }
    }

    fn timestamps(units: &[Arc<VideoUnit>]) -> Vec<u32> {
        units.iter().map(|u| u.rtp_timestamp).collect()
    }

    #[test]
    fn a_viewer_joins_with_the_newest_idr_and_what_followed_then_the_live_pictures() {
        let feed = VideoFeed::new(8);
        feed.publish(unit(false, 0));
        assert!(
            feed.join().gop.is_empty(),
            "nothing to start from before an IDR"
        );
        for (i, keyframe) in [true, false, false, true, false].into_iter().enumerate() {
            feed.publish(unit(keyframe, 10 + i as u32));
        }
        let mut joined = feed.join();
        assert_eq!(timestamps(&joined.gop), [13, 14]);
        feed.publish(unit(false, 15));
        assert_eq!(joined.live.try_recv().unwrap().rtp_timestamp, 15);
        assert!(joined.live.try_recv().is_err());
    }

    #[test]
    fn a_gop_longer_than_the_limit_is_dropped_until_the_next_idr() {
        let feed = VideoFeed::new(8);
        feed.publish(unit(true, 0));
        for ts in 1..GOP_LIMIT as u32 {
            feed.publish(unit(false, ts));
        }
        assert_eq!(feed.join().gop.len(), GOP_LIMIT);
        feed.publish(unit(false, 1000));
        feed.publish(unit(false, 1001));
        assert!(feed.join().gop.is_empty());
        feed.publish(unit(true, 2000));
        assert_eq!(timestamps(&feed.join().gop), [2000]);
    }

    #[test]
    fn after_privacy_is_switched_nobody_starts_from_a_picture_of_before() {
        let private = |keyframe, ts| VideoUnit {
            private: true,
            ..unit(keyframe, ts)
        };
        let feed = VideoFeed::new(8);
        feed.publish(unit(true, 0));
        feed.publish(unit(false, 1));
        feed.reset(true);
        assert!(feed.join().gop.is_empty(), "the camera's GOP is dropped");
        // The camera's IDR encoded before the switch and published after it is not kept.
        feed.publish(unit(true, 2));
        assert!(feed.join().gop.is_empty());
        feed.publish(private(true, 3));
        feed.publish(private(false, 4));
        feed.publish(unit(false, 5));
        assert_eq!(timestamps(&feed.join().gop), [3, 4]);
        // Off again: only the camera's pictures, from its next IDR.
        feed.reset(false);
        feed.publish(private(true, 6));
        assert!(feed.join().gop.is_empty());
        feed.publish(unit(true, 7));
        assert_eq!(timestamps(&feed.join().gop), [7]);
        // A layer that stops being encoded forgets its GOP but not the privacy state.
        feed.reset(true);
        feed.forget();
        feed.publish(unit(true, 8));
        assert!(feed.join().gop.is_empty());
    }
}
