//! When the encoder must produce an IDR.
//!
//! A viewer can only start decoding at an IDR, and a viewer that lost packets asks for one
//! with PLI/FIR. Many viewers joining at once, or one with a lossy link, must not turn the
//! stream into a run of IDRs (each is several times the size of a P frame), so requests are
//! coalesced: at most one forced IDR per [`KeyframePolicy::min_gap`]. A request that arrives
//! inside the gap is kept and served when the gap ends, never dropped.
//!
//! Pure logic with time as an input; the encoder thread is the only caller.

use std::time::{Duration, Instant};

/// Coalesces keyframe requests and schedules periodic IDRs.
#[derive(Debug, Clone)]
pub struct KeyframePolicy {
    /// Shortest time between two forced IDRs.
    min_gap: Duration,
    /// An IDR at least this often even if nobody asks, so a viewer that missed a request
    /// (or a decoder that silently broke) recovers on its own.
    periodic: Duration,
    /// When the last IDR went out; `None` before the first frame.
    last_idr: Option<Instant>,
    /// A request arrived that has not been served yet.
    pending: bool,
    /// The last forced IDR never went out (rate control skipped the frame): force the next.
    retry: bool,
}

impl KeyframePolicy {
    /// Requests closer together than `min_gap` are merged; an IDR comes every `periodic`.
    pub fn new(min_gap: Duration, periodic: Duration) -> Self {
        KeyframePolicy {
            min_gap,
            periodic,
            last_idr: None,
            pending: false,
            retry: false,
        }
    }

    /// Someone (a joining viewer, a PLI or FIR) wants an IDR.
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// Called once per frame before encoding it: whether this frame must be an IDR.
    /// Answering `true` counts as having sent one at `now`.
    pub fn decide(&mut self, now: Instant) -> bool {
        let due = self.retry
            || match self.last_idr {
                None => true,
                Some(last) => {
                    let since = now.saturating_duration_since(last);
                    since >= self.periodic || (self.pending && since >= self.min_gap)
                }
            };
        if due {
            self.sent_idr(now);
        }
        due
    }

    /// The encoder produced an IDR on its own (e.g. scene change): it serves pending requests
    /// and restarts the periodic timer.
    pub fn sent_idr(&mut self, now: Instant) {
        self.last_idr = Some(now);
        self.pending = false;
        self.retry = false;
    }

    /// The frame [`decide`](Self::decide) made an IDR produced no output: the next frame
    /// must be one, whatever the gap.
    pub fn idr_not_sent(&mut self) {
        self.retry = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_millis(500);
    const PERIOD: Duration = Duration::from_secs(2);

    fn frames(start: Instant, count: u32, interval_ms: u64) -> impl Iterator<Item = Instant> {
        (0..count).map(move |i| start + Duration::from_millis(u64::from(i) * interval_ms))
    }

    #[test]
    fn first_frame_is_an_idr() {
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(Instant::now()));
    }

    #[test]
    fn periodic_idr_without_requests() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        let idrs: Vec<_> = frames(start, 181, 33)
            .filter(|&t| policy.decide(t))
            .map(|t| t.duration_since(start).as_millis())
            .collect();
        // 6 s at 30 fps: the first frame, then one every ~2 s.
        assert_eq!(idrs.len(), 3, "{idrs:?}");
        assert!(idrs[1] >= 2000 && idrs[1] < 2040, "{idrs:?}");
    }

    #[test]
    fn many_requests_inside_the_gap_make_one_idr() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(start));
        let mut forced = 0;
        for t in frames(start + Duration::from_millis(33), 20, 33) {
            // Ten viewers join on every frame for ~two thirds of a second: the requests
            // inside the gap wait, and one IDR at 500 ms serves them all.
            for _ in 0..10 {
                policy.request();
            }
            forced += u32::from(policy.decide(t));
        }
        assert_eq!(forced, 1);
    }

    #[test]
    fn request_inside_the_gap_is_served_when_it_ends() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(start));
        policy.request();
        assert!(!policy.decide(start + Duration::from_millis(100)));
        assert!(!policy.decide(start + Duration::from_millis(400)));
        assert!(policy.decide(start + Duration::from_millis(500)));
        // Served: no further IDR until the next request or period.
        assert!(!policy.decide(start + Duration::from_millis(1100)));
    }

    #[test]
    fn a_skipped_forced_idr_is_forced_again_on_the_next_frame() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(start));
        policy.idr_not_sent();
        assert!(policy.decide(start + Duration::from_millis(33)));
        assert!(!policy.decide(start + Duration::from_millis(66)));
    }

    #[test]
    fn encoder_chosen_idr_restarts_the_period() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(start));
        policy.sent_idr(start + Duration::from_millis(1500));
        assert!(!policy.decide(start + Duration::from_millis(2100)));
        assert!(policy.decide(start + Duration::from_millis(3500)));
    }
}
