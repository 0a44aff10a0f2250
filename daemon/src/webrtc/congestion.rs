//! Each viewer's bandwidth estimate, and the pacer that spreads its packets out.
//!
//! Per connection, rtc-interceptor's congestion control numbers every packet we send
//! (transport-wide sequence numbers), reads the viewer's TWCC feedback and hands what
//! arrived when to Google congestion control (GCC: delay and loss based). Its estimate is
//! what the viewer's link carries; [`Estimate`] publishes it to the rest of onaird.
//!
//! The pacer sends a picture's packets spread out instead of in one burst. It follows the
//! rate congestion control announces, so that rate is the estimate times
//! [`PACING_FACTOR`], never below the stream's own bitrate times the same factor: the pacer
//! smooths bursts, it does not hold back the stream (moving a viewer to a smaller stream
//! is what answers a low estimate). Viewers that send no TWCC feedback (aiortc) keep the
//! starting estimate and the pacer its starting rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, PacerBuilder, PacketReport,
    Registry, Slot, TwccSenderBuilder,
};

/// The pacer may send this many times the estimate (as libwebrtc's pacer does).
pub const PACING_FACTOR: f64 = 2.5;

/// GCC never estimates below this.
const MIN_ESTIMATE_BPS: f64 = 100_000.0;

/// GCC never estimates above this.
const MAX_ESTIMATE_BPS: f64 = 20_000_000.0;

/// At most this many packets wait in a viewer's pacer; more are dropped (then NACKed).
const PACER_QUEUE_PACKETS: usize = 1024;

/// One viewer's estimate as the rest of onaird reads it.
#[derive(Debug)]
pub struct Estimate {
    /// f64 bits per second, as bits.
    bps: AtomicU64,
    /// Whether any feedback has moved it from where it started.
    measured: AtomicU64,
}

impl Estimate {
    fn new(start_bps: f64) -> Self {
        Estimate {
            bps: AtomicU64::new(start_bps.to_bits()),
            measured: AtomicU64::new(0),
        }
    }

    /// The estimate in bits per second.
    pub fn bps(&self) -> f64 {
        f64::from_bits(self.bps.load(Ordering::Relaxed))
    }

    /// Whether the viewer's feedback has been heard (else the estimate is where it
    /// started).
    pub fn measured(&self) -> bool {
        self.measured.load(Ordering::Relaxed) != 0
    }

    fn publish(&self, bps: f64, measured: bool) {
        self.bps.store(bps.to_bits(), Ordering::Relaxed);
        if measured {
            self.measured.store(1, Ordering::Relaxed);
        }
    }
}

/// GCC, publishing its estimate and telling the chain (the pacer) a pacing rate.
struct Publishing {
    gcc: Gcc,
    estimate: Arc<Estimate>,
    /// The pacing rate never goes below this.
    floor_bps: f64,
}

impl Publishing {
    fn publish(&self, measured: bool) {
        self.estimate.publish(self.gcc.target_bitrate(), measured);
    }
}

impl BandwidthEstimator for Publishing {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        self.publish(!reports.is_empty());
    }

    /// What the chain reads: the pacing rate.
    fn target_bitrate(&self) -> f64 {
        pacing_rate(self.gcc.target_bitrate(), self.floor_bps)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
        self.publish(false);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// How fast the pacer may send for an estimate of `estimate_bps`, a stream of
/// `stream_bps` at the least.
pub fn pacing_rate(estimate_bps: f64, stream_bps: f64) -> f64 {
    estimate_bps.max(stream_bps) * PACING_FACTOR
}

/// Adds congestion control (TWCC sequence numbers, feedback into GCC) and a pacer to
/// `registry`, for a stream of `stream_bps`; the estimate starts there.
pub fn register(registry: Registry, stream_bps: f64) -> (Registry, Arc<Estimate>) {
    let start = stream_bps.clamp(MIN_ESTIMATE_BPS, MAX_ESTIMATE_BPS);
    let estimate = Arc::new(Estimate::new(start));
    let publishing = Publishing {
        gcc: Gcc::new(start, MIN_ESTIMATE_BPS, MAX_ESTIMATE_BPS),
        estimate: estimate.clone(),
        floor_bps: stream_bps,
    };
    let pacer = PacerBuilder::new()
        .with_target_bitrate(pacing_rate(start, stream_bps))
        .with_queue_limit(PACER_QUEUE_PACKETS)
        .build();
    let registry = registry
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(publishing).build(),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build())
        .with(Slot::Pacer, pacer);
    (registry, estimate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_never_holds_the_stream_back() {
        assert_eq!(pacing_rate(300_000.0, 2_000_000.0), 5_000_000.0);
        assert_eq!(pacing_rate(4_000_000.0, 2_000_000.0), 10_000_000.0);
    }
}
