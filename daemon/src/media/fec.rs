//! Opus in-band FEC for viewers who lose packets.
//!
//! Audio is encoded once for everyone, so the one encoder protects for the worst viewer:
//! each viewer's audio task reports the fraction lost from its receiver reports about once
//! a second ([`LossReports::report`]), and the audio thread tells libopus the largest
//! (smoothed) loss among the viewers heard from lately as its expected packet loss. With
//! in-band FEC on, libopus then adds to each packet a low-bitrate copy of the previous frame
//! (LBRR), from which a receiver that lost that frame recovers it; at 0 % it adds nothing,
//! so a camera whose viewers lose nothing pays nothing. (libopus also moves to its SILK or
//! hybrid mode for this, which carries LBRR; with a few per cent loss and music-like sound
//! it may stay in CELT and add no FEC: it weighs that itself.)
//!
//! Audio has no retransmissions (viewers NACK video only), so this is what keeps sound
//! whole on a lossy link.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A viewer not heard from for this long no longer counts (it left, or stopped reporting).
const FRESH: Duration = Duration::from_secs(5);

/// Each report moves a viewer's figure this share of the way to the new one: receiver
/// reports cover about a second each and jump around; the encoder should not.
const SMOOTHING: f64 = 0.5;

/// Expected loss is never set above this (libopus's LBRR then takes as much as it will).
const MAX_PERCENT: u8 = 50;

/// The viewers' reported loss, smoothed per viewer.
#[derive(Debug, Default)]
pub struct LossReports {
    viewers: Mutex<HashMap<Arc<str>, Reported>>,
    /// The loss (per cent) the encoder was last told to expect.
    protecting: AtomicU8,
}

#[derive(Debug, Clone, Copy)]
struct Reported {
    /// Smoothed fraction lost, 0 to 1.
    fraction: f64,
    at: Instant,
}

impl LossReports {
    /// `viewer` lost `fraction` (0 to 1) of what reached it lately, as of `now`.
    pub fn report(&self, viewer: &Arc<str>, fraction: f64, now: Instant) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let Ok(mut viewers) = self.viewers.lock() else {
            return;
        };
        viewers.retain(|_, r| now.saturating_duration_since(r.at) < FRESH);
        let smoothed = match viewers.get(viewer) {
            Some(before) => before.fraction + SMOOTHING * (fraction - before.fraction),
            None => fraction,
        };
        viewers.insert(
            viewer.clone(),
            Reported {
                fraction: smoothed,
                at: now,
            },
        );
    }

    /// The packet loss (in per cent) to tell the encoder to expect at `now`: the largest of
    /// the viewers heard from in the last [`FRESH`], 0 without any.
    pub fn expected_percent(&self, now: Instant) -> u8 {
        let Ok(viewers) = self.viewers.lock() else {
            return 0;
        };
        let worst = viewers
            .values()
            .filter(|r| now.saturating_duration_since(r.at) < FRESH)
            .map(|r| r.fraction)
            .fold(0.0, f64::max);
        ((worst * 100.0).round() as u8).min(MAX_PERCENT)
    }

    /// The encoder now expects `percent` loss.
    pub fn protect(&self, percent: u8) {
        self.protecting.store(percent, Ordering::Relaxed);
    }

    /// The loss (per cent) the encoder expects and adds FEC for; 0: none.
    pub fn protecting(&self) -> u8 {
        self.protecting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoder_protects_for_the_worst_viewer_heard_from_lately() {
        let reports = LossReports::default();
        let t = Instant::now();
        assert_eq!(reports.expected_percent(t), 0);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        reports.report(&a, 0.02, t);
        reports.report(&b, 0.12, t);
        assert_eq!(reports.expected_percent(t), 12);
        // b's next report is smoothed: half way to 0.
        reports.report(&b, 0.0, t + Duration::from_secs(1));
        assert_eq!(reports.expected_percent(t + Duration::from_secs(1)), 6);
        // b stops reporting (it left): after FRESH only a counts.
        reports.report(&a, 0.02, t + Duration::from_secs(6));
        assert_eq!(reports.expected_percent(t + Duration::from_secs(6)), 2);
        assert_eq!(reports.expected_percent(t + Duration::from_secs(12)), 0);
    }

    #[test]
    fn nonsense_is_read_as_no_loss_and_total_loss_is_capped() {
        let reports = LossReports::default();
        let t = Instant::now();
        let v: Arc<str> = "v".into();
        reports.report(&v, f64::NAN, t);
        assert_eq!(reports.expected_percent(t), 0);
        reports.report(&"w".into(), 1.0, t);
        assert_eq!(reports.expected_percent(t), MAX_PERCENT);
    }
}
