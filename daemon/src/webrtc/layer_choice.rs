//! Which quality layer a viewer should be on, from its bandwidth estimate: pure logic, time
//! as an input.
//!
//! A viewer starts on the top layer. It moves down as soon as its estimate has stayed below
//! [`SHORT`] of its layer's bitrate for [`DOWN_AFTER`] (to the best layer the estimate
//! carries): GCC answers one sign of queueing with 85 % of what arrived, so a viewer that
//! receives the whole layer and sees one hiccup (a busy receiver) stays. Below [`FAR_SHORT`]
//! it moves at once: that is a narrower link, and every moment on the layer is a frozen
//! picture. It moves up
//! one layer once the estimate has had [`HEADROOM`] over the next layer's bitrate for
//! [`UP_AFTER`]: quick to spare a viewer a frozen picture, slow to risk one. Without an
//! estimate (a viewer that sends no TWCC feedback) it stays where it is.
//!
//! On a lower layer the estimate is not tested by what is sent (GCC raises it while the
//! link carries the little it gets), so moving up is a trial: one that ends with a move back
//! down within [`TRIAL`] doubles the wait before the next (up to [`UP_AFTER_MAX`]); a move up
//! that holds for [`TRIAL`] brings the wait back to [`UP_AFTER`]. While on trial, an
//! estimate below the layer's bitrate moves the viewer back down at once.

use std::time::{Duration, Instant};

/// How long an estimate below [`SHORT`] of the layer's bitrate is borne before moving down.
pub const DOWN_AFTER: Duration = Duration::from_secs(1);
/// An estimate below this share of the layer's bitrate is short of it.
pub const SHORT: f64 = 0.8;
/// An estimate below this share is no hiccup (the link narrowed): the viewer moves down at
/// once.
pub const FAR_SHORT: f64 = 0.7;
/// How long the estimate must have room for the layer above before moving up.
pub const UP_AFTER: Duration = Duration::from_secs(3);
/// The room asked for: the layer above's bitrate times this.
pub const HEADROOM: f64 = 1.05;
/// A move up that is undone within this long failed.
pub const TRIAL: Duration = Duration::from_secs(10);
/// The longest wait before moving up after failed trials.
pub const UP_AFTER_MAX: Duration = Duration::from_secs(64);

/// One viewer's choice of layer.
#[derive(Debug, Clone)]
pub struct LayerChoice {
    /// Each layer's bitrate (bits per second), top first.
    rates: Vec<f64>,
    /// The layer the viewer is on.
    current: usize,
    /// Since when the estimate has been below the current layer's bitrate.
    short_since: Option<Instant>,
    /// Since when the estimate has had room for the layer above.
    room_since: Option<Instant>,
    /// How long the room must last now ([`UP_AFTER`], doubled by every failed trial).
    up_after: Duration,
    /// When the viewer last moved up, while that is on trial.
    moved_up: Option<Instant>,
}

impl LayerChoice {
    /// A viewer on the top layer of layers of these bitrates (bits per second, top first).
    pub fn new(rates: Vec<f64>) -> Self {
        LayerChoice {
            rates,
            current: 0,
            short_since: None,
            room_since: None,
            up_after: UP_AFTER,
            moved_up: None,
        }
    }

    /// The layer the viewer is on.
    pub fn current(&self) -> usize {
        self.current
    }

    /// The viewer now receives `layer` (since `now`).
    pub fn switched(&mut self, now: Instant, layer: usize) {
        let layer = layer.min(self.rates.len().saturating_sub(1));
        if layer < self.current {
            self.moved_up = Some(now);
        } else if let Some(up) = self.moved_up.take()
            && now.saturating_duration_since(up) < TRIAL
        {
            self.up_after = (self.up_after * 2).min(UP_AFTER_MAX);
        }
        self.current = layer;
        self.short_since = None;
        self.room_since = None;
    }

    /// The estimate at `now` (`None`: none yet); the layer the viewer should be on.
    pub fn update(&mut self, now: Instant, estimate: Option<f64>) -> usize {
        if self
            .moved_up
            .is_some_and(|up| now.saturating_duration_since(up) >= TRIAL)
        {
            self.moved_up = None;
            self.up_after = UP_AFTER;
        }
        let Some(estimate) = estimate else {
            return self.current;
        };
        let rate = self.rates.get(self.current).copied().unwrap_or(0.0);
        if estimate < rate * SHORT {
            self.room_since = None;
            let since = *self.short_since.get_or_insert(now);
            // A move up on trial is undone at once, and so is a layer far beyond the link.
            if self.moved_up.is_some()
                || estimate < rate * FAR_SHORT
                || now.saturating_duration_since(since) >= DOWN_AFTER
            {
                return self.fitting(estimate);
            }
            return self.current;
        }
        self.short_since = None;
        let Some(above) = self.current.checked_sub(1) else {
            return self.current;
        };
        if estimate < self.rates[above] * HEADROOM {
            self.room_since = None;
            return self.current;
        }
        let since = *self.room_since.get_or_insert(now);
        match now.saturating_duration_since(since) >= self.up_after {
            true => above,
            false => self.current,
        }
    }

    /// The best layer `estimate` carries, else the lowest.
    fn fitting(&self, estimate: f64) -> usize {
        self.rates
            .iter()
            .position(|&rate| rate <= estimate)
            .unwrap_or(self.rates.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: f64 = 2_000_000.0;
    const LOW: f64 = 400_000.0;

    #[test]
    fn moves_down_once_the_estimate_stayed_short_for_a_second_or_at_once_when_far_short() {
        let t = Instant::now();
        let s = |n: f64| t + Duration::from_secs_f64(n);
        let mut choice = LayerChoice::new(vec![TOP, LOW]);
        assert_eq!(choice.update(t, None), 0, "no estimate: stay");
        let short = Some(1_500_000.0);
        assert_eq!(choice.update(t, short), 0);
        assert_eq!(choice.update(s(0.5), short), 0);
        // Back above for a moment: the second starts again.
        assert_eq!(choice.update(s(0.6), Some(2_100_000.0)), 0);
        assert_eq!(choice.update(s(0.7), short), 0);
        assert_eq!(choice.update(s(1.69), short), 0);
        assert_eq!(choice.update(s(1.7), short), 1);
        // Less than half the layer: at once.
        let mut choice = LayerChoice::new(vec![TOP, LOW]);
        assert_eq!(choice.update(t, Some(900_000.0)), 1);
        choice.switched(t, 1);
        assert_eq!(choice.current(), 1);
        // Even below the lowest layer, the lowest is where it goes.
        assert_eq!(choice.update(s(2.0), Some(100_000.0)), 1);
        assert_eq!(choice.update(s(5.0), Some(100_000.0)), 1);
    }

    #[test]
    fn moves_up_after_seconds_of_room_for_the_layer_above() {
        let t = Instant::now();
        let s = |n: f64| t + Duration::from_secs_f64(n);
        let mut choice = LayerChoice::new(vec![TOP, LOW]);
        choice.switched(t, 1);
        // Enough for the top layer, but without the headroom.
        assert_eq!(choice.update(t, Some(2_050_000.0)), 1);
        assert_eq!(choice.update(s(5.0), Some(2_050_000.0)), 1);
        assert_eq!(choice.update(s(5.0), Some(2_200_000.0)), 1);
        assert_eq!(choice.update(s(7.9), Some(2_200_000.0)), 1);
        assert_eq!(choice.update(s(8.0), Some(2_200_000.0)), 0);
    }

    #[test]
    fn a_move_up_undone_at_once_doubles_the_wait_for_the_next() {
        let t = Instant::now();
        let s = |n: f64| t + Duration::from_secs_f64(n);
        let mut choice = LayerChoice::new(vec![TOP, LOW]);
        choice.switched(t, 1);
        let room = Some(3_000_000.0);
        assert_eq!(choice.update(t, room), 1);
        assert_eq!(choice.update(s(3.0), room), 0);
        choice.switched(s(3.5), 0);
        // The top layer was too much after all: back down at the first short estimate.
        assert_eq!(choice.update(s(5.0), Some(1_000_000.0)), 1);
        choice.switched(s(6.0), 1);
        assert_eq!(choice.update(s(6.0), room), 1);
        assert_eq!(choice.update(s(9.0), room), 1, "3 s is not enough any more");
        assert_eq!(choice.update(s(12.0), room), 0, "6 s is");
        choice.switched(s(12.0), 0);
        // This time it holds: after the trial, the wait is back to 3 s.
        assert_eq!(choice.update(s(23.0), room), 0);
        choice.switched(s(30.0), 1);
        assert_eq!(choice.update(s(30.0), room), 1);
        assert_eq!(choice.update(s(33.0), room), 0);
    }

    #[test]
    fn one_backing_off_from_the_whole_layer_is_not_short() {
        let t = Instant::now();
        let mut choice = LayerChoice::new(vec![TOP, LOW]);
        // GCC's answer to one overuse while the whole top layer arrived: 85 % of it.
        for i in 0..20 {
            let now = t + Duration::from_millis(250 * i);
            assert_eq!(choice.update(now, Some(0.85 * TOP)), 0);
        }
    }

    #[test]
    fn a_viewer_with_room_on_the_top_layer_stays_there() {
        let t = Instant::now();
        let mut choice = LayerChoice::new(vec![TOP, LOW]);
        for i in 0..100 {
            let now = t + Duration::from_millis(250 * i);
            assert_eq!(choice.update(now, Some(TOP + 1000.0 * i as f64)), 0);
        }
    }
}
