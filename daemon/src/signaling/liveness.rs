//! Whether a remote signalling service is still there.
//!
//! A service that died without closing the connection (power cut, a network that went away)
//! or that froze leaves a TCP connection that looks open for a long time. So the camera
//! expects traffic: anything from the service counts (a message, a ping, a pong). After
//! [`PING_AFTER`] of quiet it sends a WebSocket ping, which any live service answers; after
//! [`SILENCE_LIMIT`] with nothing at all the connection counts as dead, the channel as not
//! registered (`registered: false` in `/api/status`, the status LED), and the usual backoff
//! reconnects. A pure state machine with time as input; [`super::link`] does the I/O.

use std::time::{Duration, Instant};

/// Quiet this long, the camera pings.
pub const PING_AFTER: Duration = Duration::from_secs(10);
/// Nothing heard for this long, the service is gone. Two pings go unanswered first.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(25);

/// What is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send a ping.
    Ping,
    /// Give the connection up.
    Dead,
}

/// When the service was last heard, and when we last pinged it.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    last_heard: Instant,
    last_ping: Instant,
}

impl Liveness {
    /// A connection that has just opened (which counts as hearing from the service).
    pub fn new(now: Instant) -> Self {
        Liveness {
            last_heard: now,
            last_ping: now,
        }
    }

    /// Something arrived from the service.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// When [`Self::poll`] has something to do next.
    pub fn deadline(&self) -> Instant {
        let ping = self.last_heard.max(self.last_ping) + PING_AFTER;
        ping.min(self.last_heard + SILENCE_LIMIT)
    }

    /// What is due at `now`; a ping counts as sent.
    pub fn poll(&mut self, now: Instant) -> Option<Due> {
        if now >= self.last_heard + SILENCE_LIMIT {
            return Some(Due::Dead);
        }
        if now >= self.last_heard.max(self.last_ping) + PING_AFTER {
            self.last_ping = now;
            return Some(Due::Ping);
        }
        None
    }

    /// How long the service has been silent at `now`.
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Steps from deadline to deadline until the connection is dead; returns what was due
    /// and when (seconds after `t0`).
    fn run_silent(mut live: Liveness, t0: Instant) -> Vec<(u64, Due)> {
        let mut seen = Vec::new();
        while seen.last().is_none_or(|(_, due)| *due != Due::Dead) {
            let at = live.deadline();
            if let Some(due) = live.poll(at) {
                seen.push((at.duration_since(t0).as_secs(), due));
            }
        }
        seen
    }

    #[test]
    fn a_silent_service_is_pinged_twice_then_given_up_within_25_s() {
        let t0 = Instant::now();
        let live = Liveness::new(t0);
        assert_eq!(
            run_silent(live, t0),
            [(10, Due::Ping), (20, Due::Ping), (25, Due::Dead)]
        );
    }

    #[test]
    fn traffic_keeps_the_connection_and_postpones_pings() {
        let t0 = Instant::now();
        let mut live = Liveness::new(t0);
        // The service says something every 8 s: never a ping, never dead.
        for n in 1..=20 {
            let now = t0 + secs(8 * n);
            assert_eq!(live.poll(now), None, "at {} s", 8 * n);
            live.heard(now);
        }
        // Then it falls silent: dead 25 s after the last thing heard.
        let last = t0 + secs(160);
        assert_eq!(live.silent_for(last + secs(5)), secs(5));
        let dues = run_silent(live, t0);
        assert_eq!(dues, [(170, Due::Ping), (180, Due::Ping), (185, Due::Dead)]);
    }

    #[test]
    fn a_pong_after_a_ping_keeps_it_alive() {
        let t0 = Instant::now();
        let mut live = Liveness::new(t0);
        assert_eq!(live.poll(t0 + secs(10)), Some(Due::Ping));
        assert_eq!(live.poll(t0 + secs(11)), None, "one ping per quiet spell");
        live.heard(t0 + secs(11));
        assert_eq!(live.deadline(), t0 + secs(21));
        assert_eq!(live.poll(t0 + secs(30)), Some(Due::Ping));
        assert_eq!(live.poll(t0 + secs(36)), Some(Due::Dead));
    }
}
