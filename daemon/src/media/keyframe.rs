//! When the encoder must produce an IDR, and why.
//!
//! A viewer can only start decoding at an IDR, and a viewer that lost packets asks for one
//! with PLI/FIR. Many viewers asking at once, or one with a lossy link, must not turn the
//! stream into a run of IDRs (each is several times the size of a P frame), so requests are
//! coalesced: at most one forced IDR per [`KeyframePolicy::min_gap`]. A request that arrives
//! inside the gap is kept and served when the gap ends, never dropped. A joining viewer
//! normally asks for nothing: it starts from the newest IDR, kept with the pictures since it
//! (see `media::gop`).
//!
//! Every request has a [`KeyframeReason`]; requests reach the encoder thread through a
//! [`KeyframeMailbox`] (lock-free, one bit per reason, so it can never fill), and the
//! [`KeyframePolicy`] (pure logic with time as an input) says for each picture whether it
//! must be an IDR and for which reason.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Why an IDR was produced or asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyframeReason {
    /// The stream (re)started: the first picture, a new camera format.
    Start,
    /// Nobody asked for one within the key frame interval.
    Periodic,
    /// A viewer joined and there was no recent IDR to start it from.
    Join,
    /// A viewer's decoder lost pictures (RTCP PLI).
    Pli,
    /// A viewer asked for a full intra refresh (RTCP FIR).
    Fir,
    /// A viewer fell so far behind that pictures it had not sent were overwritten.
    Lag,
    /// A viewer moves to this layer and starts at its next IDR.
    Switch,
    /// The encoder decided on its own (e.g. a scene change).
    Encoder,
    /// Privacy was switched on or off: the first picture of the new state.
    Privacy,
}

impl KeyframeReason {
    /// Every reason, in the order of their bits in the mailbox.
    pub const ALL: [KeyframeReason; 9] = [
        KeyframeReason::Start,
        KeyframeReason::Periodic,
        KeyframeReason::Join,
        KeyframeReason::Pli,
        KeyframeReason::Fir,
        KeyframeReason::Lag,
        KeyframeReason::Switch,
        KeyframeReason::Encoder,
        KeyframeReason::Privacy,
    ];

    /// The name used in logs, `/api/status` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyframeReason::Start => "start",
            KeyframeReason::Periodic => "periodic",
            KeyframeReason::Join => "join",
            KeyframeReason::Pli => "pli",
            KeyframeReason::Fir => "fir",
            KeyframeReason::Lag => "lag",
            KeyframeReason::Switch => "switch",
            KeyframeReason::Encoder => "encoder",
            KeyframeReason::Privacy => "privacy",
        }
    }

    /// Position in [`Self::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn bit(self) -> u16 {
        1 << self.index()
    }
}

/// Key frame requests on their way to the encoder thread: one bit per reason, so any number
/// of askers can post from any thread without blocking and nothing is queued twice.
#[derive(Debug, Default)]
pub struct KeyframeMailbox(AtomicU16);

impl KeyframeMailbox {
    /// A mailbox holding `reason` already (the first picture is an IDR anyway).
    pub fn with(reason: KeyframeReason) -> Self {
        KeyframeMailbox(AtomicU16::new(reason.bit()))
    }

    /// Posts a request.
    pub fn post(&self, reason: KeyframeReason) {
        self.0.fetch_or(reason.bit(), Ordering::Relaxed);
    }

    /// Takes every request posted since the last call; the first reason (in
    /// [`KeyframeReason::ALL`] order) stands for them all.
    pub fn take(&self) -> Option<KeyframeReason> {
        let bits = self.0.swap(0, Ordering::Relaxed);
        KeyframeReason::ALL
            .into_iter()
            .find(|r| bits & r.bit() != 0)
    }
}

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
    /// The first request that has not been served yet.
    pending: Option<KeyframeReason>,
    /// The last forced IDR never went out (rate control skipped the frame): force the next,
    /// for the same reason.
    retry: Option<KeyframeReason>,
}

impl KeyframePolicy {
    /// Requests closer together than `min_gap` are merged; an IDR comes every `periodic`.
    pub fn new(min_gap: Duration, periodic: Duration) -> Self {
        KeyframePolicy {
            min_gap,
            periodic,
            last_idr: None,
            pending: None,
            retry: None,
        }
    }

    /// Someone (a PLI or FIR, a viewer that fell behind) wants an IDR.
    pub fn request(&mut self, reason: KeyframeReason) {
        self.pending.get_or_insert(reason);
    }

    /// Called once per frame before encoding it: whether this frame must be an IDR, and
    /// why. Answering `Some` counts as having sent one at `now`.
    pub fn decide(&mut self, now: Instant) -> Option<KeyframeReason> {
        let reason = match (self.retry, self.last_idr) {
            (Some(reason), _) => Some(reason),
            (None, None) => Some(KeyframeReason::Start),
            (None, Some(last)) => {
                let since = now.saturating_duration_since(last);
                match self.pending {
                    Some(reason) if since >= self.min_gap => Some(reason),
                    _ if since >= self.periodic => Some(KeyframeReason::Periodic),
                    _ => None,
                }
            }
        };
        if reason.is_some() {
            self.sent_idr(now);
        }
        reason
    }

    /// The encoder produced an IDR on its own (e.g. scene change): it serves pending requests
    /// and restarts the periodic timer.
    pub fn sent_idr(&mut self, now: Instant) {
        self.last_idr = Some(now);
        self.pending = None;
        self.retry = None;
    }

    /// The frame [`decide`](Self::decide) made an IDR produced no output: the next frame
    /// must be one, whatever the gap.
    pub fn idr_not_sent(&mut self, reason: KeyframeReason) {
        self.force(reason);
    }

    /// The next frame must be an IDR, whatever the gap (privacy was switched: nothing of the
    /// new state may refer to a picture of the old one).
    pub fn force(&mut self, reason: KeyframeReason) {
        self.retry = Some(reason);
    }
}

/// One viewer's key frame requests (PLI, FIR), limited to one every
/// [`ViewerAsks::GAP`]: a viewer on a lossy link asks again and again, and every IDR it
/// gets goes to everyone watching the same stream. A request inside the gap is held, and
/// served when the gap ends unless an IDR reached the viewer meanwhile.
#[derive(Debug, Clone, Default)]
pub struct ViewerAsks {
    /// When the viewer's last request went to the encoder.
    last: Option<Instant>,
    /// A request not passed on yet.
    held: Option<KeyframeReason>,
}

impl ViewerAsks {
    /// Shortest time between two of one viewer's requests reaching the encoder.
    pub const GAP: Duration = Duration::from_secs(1);

    /// The viewer asks at `now`: the request to pass on now, if any.
    pub fn ask(&mut self, now: Instant, reason: KeyframeReason) -> Option<KeyframeReason> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < Self::GAP => {
                self.held.get_or_insert(reason);
                None
            }
            _ => {
                self.last = Some(now);
                self.held = None;
                Some(reason)
            }
        }
    }

    /// When a held request is due.
    pub fn due(&self) -> Option<Instant> {
        self.held.and(self.last.map(|last| last + Self::GAP))
    }

    /// The held request, if its time has come by `now`.
    pub fn release(&mut self, now: Instant) -> Option<KeyframeReason> {
        let reason = self.held?;
        self.ask(now, reason)
    }

    /// An IDR went to the viewer: what it asked for before has come.
    pub fn idr_sent(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_asking_again_and_again_gets_one_request_through_per_gap() {
        let t = Instant::now();
        let mut asks = ViewerAsks::default();
        assert_eq!(asks.ask(t, KeyframeReason::Pli), Some(KeyframeReason::Pli));
        let ms = |n| t + Duration::from_millis(n);
        assert_eq!(asks.ask(ms(100), KeyframeReason::Pli), None);
        assert_eq!(asks.ask(ms(200), KeyframeReason::Fir), None);
        assert_eq!(asks.due(), Some(ms(1000)));
        assert_eq!(asks.release(ms(999)), None);
        // The first held reason stands for both.
        assert_eq!(asks.release(ms(1000)), Some(KeyframeReason::Pli));
        assert_eq!(asks.due(), None);
        assert_eq!(asks.release(ms(3000)), None);
    }

    #[test]
    fn an_idr_that_reached_the_viewer_answers_its_held_request() {
        let t = Instant::now();
        let mut asks = ViewerAsks::default();
        asks.ask(t, KeyframeReason::Pli);
        asks.ask(t + Duration::from_millis(300), KeyframeReason::Pli);
        asks.idr_sent();
        assert_eq!(asks.due(), None);
        assert_eq!(asks.release(t + Duration::from_secs(2)), None);
        // Asking after the gap goes straight through.
        assert_eq!(
            asks.ask(t + Duration::from_secs(2), KeyframeReason::Fir),
            Some(KeyframeReason::Fir)
        );
    }

    const GAP: Duration = Duration::from_millis(500);
    const PERIOD: Duration = Duration::from_secs(2);

    fn frames(start: Instant, count: u32, interval_ms: u64) -> impl Iterator<Item = Instant> {
        (0..count).map(move |i| start + Duration::from_millis(u64::from(i) * interval_ms))
    }

    #[test]
    fn first_frame_is_an_idr() {
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert_eq!(policy.decide(Instant::now()), Some(KeyframeReason::Start));
    }

    #[test]
    fn periodic_idr_without_requests() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        let idrs: Vec<_> = frames(start, 181, 33)
            .filter(|&t| policy.decide(t).is_some())
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
        assert!(policy.decide(start).is_some());
        let mut forced = Vec::new();
        for t in frames(start + Duration::from_millis(33), 20, 33) {
            // Ten viewers join on every frame for ~two thirds of a second: the requests
            // inside the gap wait, and one IDR at 500 ms serves them all.
            for _ in 0..10 {
                policy.request(KeyframeReason::Pli);
            }
            forced.extend(policy.decide(t));
        }
        assert_eq!(forced, [KeyframeReason::Pli]);
    }

    #[test]
    fn request_inside_the_gap_is_served_when_it_ends() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(start).is_some());
        policy.request(KeyframeReason::Fir);
        policy.request(KeyframeReason::Lag);
        assert_eq!(policy.decide(start + Duration::from_millis(100)), None);
        assert_eq!(policy.decide(start + Duration::from_millis(400)), None);
        // The first request names the IDR that serves both.
        assert_eq!(
            policy.decide(start + Duration::from_millis(500)),
            Some(KeyframeReason::Fir)
        );
        // Served: no further IDR until the next request or period.
        assert_eq!(policy.decide(start + Duration::from_millis(1100)), None);
    }

    #[test]
    fn a_skipped_forced_idr_is_forced_again_on_the_next_frame() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(start).is_some());
        policy.idr_not_sent(KeyframeReason::Pli);
        assert_eq!(
            policy.decide(start + Duration::from_millis(33)),
            Some(KeyframeReason::Pli)
        );
        assert_eq!(policy.decide(start + Duration::from_millis(66)), None);
    }

    #[test]
    fn encoder_chosen_idr_restarts_the_period() {
        let start = Instant::now();
        let mut policy = KeyframePolicy::new(GAP, PERIOD);
        assert!(policy.decide(start).is_some());
        policy.sent_idr(start + Duration::from_millis(1500));
        assert_eq!(policy.decide(start + Duration::from_millis(2100)), None);
        assert_eq!(
            policy.decide(start + Duration::from_millis(3500)),
            Some(KeyframeReason::Periodic)
        );
    }

    #[test]
    fn the_mailbox_hands_over_every_reason_once() {
        let mailbox = KeyframeMailbox::default();
        assert_eq!(mailbox.take(), None);
        mailbox.post(KeyframeReason::Lag);
        mailbox.post(KeyframeReason::Pli);
        mailbox.post(KeyframeReason::Pli);
        assert_eq!(mailbox.take(), Some(KeyframeReason::Pli));
        assert_eq!(mailbox.take(), None);
    }
}
