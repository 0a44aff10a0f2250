//! What a viewer's link has been seen to deliver, from its TWCC feedback: the ceiling on
//! its estimate. Pure logic, time as an input.
//!
//! GCC raises its estimate while no queue builds, whatever is sent: on the low layer of a
//! 1 Mbit/s link (≈ 0.5 Mbit/s sent) it climbs past the top layer's rate within a minute,
//! and the viewer is moved up into a link that cannot carry it (a frozen picture, found by
//! the simulation, `webrtc::sim`). So, as libwebrtc does, an estimate may not rise above
//! [`ACKED_FACTOR`] times what the viewer acknowledged receiving over the last
//! [`WINDOW`]…
//!
//! …or above what the link was *seen* to carry: each picture's packets leave the pacer
//! close together (it sends at least 2.5 times the top layer's rate), and arrive spread out
//! by the narrowest link on the way. The spread of a train of them (at least
//! [`TRAIN_PACKETS`]) is the link's capacity (a packet train's dispersion); a train that
//! arrives as close as it left only says the link carries at least its sending rate. Every
//! picture of more than one packet is such a train (the median of the newest five counts),
//! so a viewer on a lower layer whose link has cleared shows it, and moves up, without a
//! probe that would congest it if it had not.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// The estimate may rise to this many times the rate acknowledged (libwebrtc's 1.5)…
pub const ACKED_FACTOR: f64 = 1.5;
/// …plus this, bits per second.
const ACKED_EXTRA_BPS: f64 = 10_000.0;
/// Acknowledged and lost packets are counted over this long.
pub const WINDOW: Duration = Duration::from_millis(300);
/// The least one-way delay is forgotten after this long (the clocks drift apart).
const LEAST_DELAY_KEPT: Duration = Duration::from_secs(30);
/// A window that lost more than this share of its packets was sent into a full link.
pub const LOSSY: f64 = 0.1;
/// Packets sent this close together belong to one train.
const TRAIN_GAP: Duration = Duration::from_millis(4);
/// A train this long (packets) says something: a picture of the low layer is two.
pub const TRAIN_PACKETS: usize = 2;
/// A train ends after this many packets (a stream sent faster than [`TRAIN_GAP`] apart, at
/// a high bitrate, would otherwise be one train that grows without end).
const TRAIN_MOST: usize = 64;
/// The capacity offered is the median of the newest this many trains.
const TRAINS_KEPT: usize = 5;
/// A train's measurement counts this long.
const CAPACITY_KEPT: Duration = Duration::from_secs(5);
/// Of a measured capacity, this share is offered (cross traffic, a measurement on the
/// high side).
const CAPACITY_SHARE: f64 = 0.9;

/// One arrived packet.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    departure: Instant,
    arrival: Duration,
    size: usize,
}

/// One packet reported on: when it left, its size if it arrived.
#[derive(Debug, Clone, Copy)]
struct Reported {
    departure: Instant,
    arrived: Option<usize>,
}

#[derive(Debug, Default)]
pub struct Delivered {
    /// Packets reported on, over the last [`WINDOW`] of departures.
    window: VecDeque<Reported>,
    /// Of those, the bytes that arrived, and the packets lost.
    acked_bytes: usize,
    lost: usize,
    /// The train being gathered.
    train: Vec<Arrived>,
    /// What the newest trains measured, and when (at most [`TRAINS_KEPT`]).
    capacity: VecDeque<(f64, Instant)>,
    /// One-way delays (arrival on the viewer's clock less departure on ours, seconds, from
    /// an unknown offset): the newest, and the least lately (what the path takes with no
    /// queue), with when that was.
    delay: Option<f64>,
    least_delay: Option<(f64, Instant)>,
    /// Departures are counted from this one.
    origin: Option<Instant>,
}

impl Delivered {
    /// Takes a batch of feedback (in send order) at `now`.
    pub fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        for report in reports {
            let arrived = match (report.arrived, report.arrival) {
                (true, Some(arrival)) => Arrived {
                    departure: report.departure,
                    arrival,
                    size: report.size,
                },
                _ => {
                    self.count(report.departure, None);
                    // A loss ends a train: its spread would count the gap.
                    self.end_train(now);
                    continue;
                }
            };
            self.count(arrived.departure, Some(arrived.size));
            self.delayed(&arrived);
            let joins = self.train.len() < TRAIN_MOST
                && self.train.last().is_some_and(|last| {
                    arrived.departure.saturating_duration_since(last.departure) <= TRAIN_GAP
                });
            if !joins {
                self.end_train(now);
            }
            self.train.push(arrived);
        }
    }

    /// An arrived packet's one-way delay.
    fn delayed(&mut self, arrived: &Arrived) {
        let origin = *self.origin.get_or_insert(arrived.departure);
        let sent = arrived
            .departure
            .saturating_duration_since(origin)
            .as_secs_f64();
        let delay = arrived.arrival.as_secs_f64() - sent;
        self.delay = Some(delay);
        let stale = |(_, at): &(f64, Instant)| {
            arrived.departure.saturating_duration_since(*at) > LEAST_DELAY_KEPT
        };
        match self.least_delay {
            Some((least, at)) if least <= delay && !stale(&(least, at)) => {}
            _ => self.least_delay = Some((delay, arrived.departure)),
        }
    }

    /// How long the newest packet waited in queues on the way, beyond the least lately.
    pub fn queued(&self) -> Duration {
        match (self.delay, self.least_delay) {
            // Whatever the feedback claims, no panic: an absurd delay is "very long".
            (Some(delay), Some((least, _))) => {
                Duration::try_from_secs_f64((delay - least).max(0.0)).unwrap_or(Duration::MAX)
            }
            _ => Duration::ZERO,
        }
    }

    /// A packet reported on joins the window; those older than [`WINDOW`] leave it.
    fn count(&mut self, departure: Instant, arrived: Option<usize>) {
        self.window.push_back(Reported { departure, arrived });
        match arrived {
            Some(size) => self.acked_bytes += size,
            None => self.lost += 1,
        }
        while let Some(oldest) = self.window.front()
            && departure.saturating_duration_since(oldest.departure) > WINDOW
        {
            match oldest.arrived {
                Some(size) => self.acked_bytes -= size,
                None => self.lost -= 1,
            }
            self.window.pop_front();
        }
    }

    fn end_train(&mut self, now: Instant) {
        let train = std::mem::take(&mut self.train);
        if train.len() < TRAIN_PACKETS {
            return;
        }
        let (first, last) = (train[0], train[train.len() - 1]);
        let bits = train[1..].iter().map(|a| a.size as f64 * 8.0).sum::<f64>();
        let spread = last.arrival.saturating_sub(first.arrival).as_secs_f64();
        let sent_over = last
            .departure
            .saturating_duration_since(first.departure)
            .as_secs_f64();
        // Arrived as close as it left (or closer: the receiver's clock ticks in 250 µs):
        // the link carries at least the sending rate.
        let seconds = spread.max(sent_over);
        if seconds <= 0.0 {
            return;
        }
        if self.capacity.len() == TRAINS_KEPT {
            self.capacity.pop_front();
        }
        self.capacity.push_back((bits / seconds, now));
    }

    /// The median of what the trains of the last [`CAPACITY_KEPT`] measured: one train
    /// says little (a receiver that reads in bursts, Wi-Fi's aggregation).
    fn capacity(&self, now: Instant) -> Option<f64> {
        let mut recent: Vec<f64> = self
            .capacity
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(*at) < CAPACITY_KEPT)
            .map(|(bps, _)| *bps)
            .collect();
        recent.sort_by(f64::total_cmp);
        recent.get(recent.len() / 2).copied()
    }

    /// The highest the estimate may be at `now`; `None` until a window of feedback has come.
    /// While more than [`LOSSY`] of the window was lost, what arrived, and no more: the link
    /// is full.
    pub fn ceiling(&self, now: Instant) -> Option<f64> {
        let (first, last) = (self.window.front()?, self.window.back()?);
        let span = last.departure.saturating_duration_since(first.departure);
        if span < WINDOW / 2 {
            return None;
        }
        // What followed the first packet, over the time from it to the last.
        let after_first = self.acked_bytes - first.arrived.unwrap_or(0);
        let acked = after_first as f64 * 8.0 / span.as_secs_f64();
        if self.lost as f64 > self.window.len() as f64 * LOSSY {
            return Some(acked);
        }
        let seen = self.capacity(now).map_or(0.0, |bps| bps * CAPACITY_SHARE);
        Some((acked * ACKED_FACTOR + ACKED_EXTRA_BPS).max(seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

    const MS: Duration = Duration::from_millis(1);

    fn report(departure: Instant, arrival: Duration, size: usize) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id: 0,
            rtp_sequence_number: 0,
            is_twcc: true,
            twcc_sequence_number: 0,
            size,
            arrived: true,
            departure,
            arrival: Some(arrival),
            ecn: Ecn::NotEct,
        }
    }

    /// A stream of `bps` for a second: one 1250-byte packet at a time, sent as they arrive.
    fn stream(t: Instant, bps: f64) -> Vec<PacketReport> {
        let every = Duration::from_secs_f64(1250.0 * 8.0 / bps);
        (0..(bps / 10_000.0) as u32)
            .map(|i| report(t + every * i, every * i, 1250))
            .collect()
    }

    #[test]
    fn the_ceiling_is_half_again_what_was_acknowledged() {
        let t = Instant::now();
        let mut delivered = Delivered::default();
        assert_eq!(delivered.ceiling(t), None);
        delivered.on_reports(t, &stream(t, 500_000.0));
        let ceiling = delivered.ceiling(t + WINDOW).unwrap();
        assert!((740_000.0..=770_000.0).contains(&ceiling), "{ceiling}");
    }

    #[test]
    fn a_stream_with_no_gaps_is_cut_into_bounded_trains() {
        let t = Instant::now();
        let mut delivered = Delivered::default();
        let stream: Vec<_> = (0..10_000u32)
            .map(|i| report(t + MS * i, MS * i, 1250))
            .collect();
        delivered.on_reports(t, &stream);
        assert!(delivered.train.len() <= TRAIN_MOST);
        assert!(delivered.capacity.len() <= TRAINS_KEPT);
        // 10 Mbit/s, as it was sent and arrived.
        let ceiling = delivered.ceiling(t + Duration::from_secs(10)).unwrap();
        assert!((8_900_000.0..=15_100_000.0).contains(&ceiling), "{ceiling}");
    }

    #[test]
    fn the_queue_on_the_way_is_the_delay_beyond_the_least() {
        let t = Instant::now();
        let mut delivered = Delivered::default();
        // 40 ms on the way, on the viewer's clock 5 s ahead; then 150 ms more.
        let ahead = Duration::from_secs(5);
        delivered.on_reports(t, &[report(t, ahead + 40 * MS, 1000)]);
        delivered.on_reports(t, &[report(t + 10 * MS, ahead + 50 * MS, 1000)]);
        assert_eq!(delivered.queued(), Duration::ZERO);
        delivered.on_reports(t, &[report(t + 20 * MS, ahead + 210 * MS, 1000)]);
        let queued = delivered.queued();
        assert!(queued.abs_diff(150 * MS) < MS, "{queued:?}");
        // Feedback claiming an arrival at the end of time: a long queue, no panic.
        let never = Duration::from_secs(u64::MAX);
        delivered.on_reports(t, &[report(t + 30 * MS, never, 1000)]);
        assert!(delivered.queued() > Duration::from_secs(3600));
    }

    #[test]
    fn a_train_spread_by_a_narrow_link_measures_it_and_one_that_is_not_gives_a_floor() {
        let t = Instant::now();
        let mut delivered = Delivered::default();
        delivered.on_reports(t, &stream(t, 500_000.0));
        // Six packets sent 2 ms apart (5 Mbit/s) arrive 10 ms apart: a 1 Mbit/s link.
        let at = t + Duration::from_millis(990);
        let train: Vec<_> = (0..6u32)
            .map(|i| {
                report(
                    at + 2 * MS * i,
                    Duration::from_millis(990) + 10 * MS * i,
                    1250,
                )
            })
            .collect();
        delivered.on_reports(at, &train);
        // The next packet, later, ends the train.
        delivered.on_reports(at, &[report(at + 100 * MS, Duration::from_secs(2), 1250)]);
        let ceiling = delivered.ceiling(at).unwrap();
        assert!((890_000.0..=910_000.0).contains(&ceiling), "{ceiling}");

        // The same train arriving as it left: the link carries at least 5 Mbit/s.
        let later = t + Duration::from_secs(10);
        let mut delivered = Delivered::default();
        delivered.on_reports(later, &stream(later, 500_000.0));
        let at = later + Duration::from_millis(990);
        let train: Vec<_> = (0..6u32)
            .map(|i| {
                report(
                    at + 2 * MS * i,
                    Duration::from_millis(990) + 2 * MS * i,
                    1250,
                )
            })
            .collect();
        delivered.on_reports(at, &train);
        delivered.on_reports(at, &[report(at + 100 * MS, Duration::from_secs(2), 1250)]);
        let ceiling = delivered.ceiling(at).unwrap();
        assert!((4_400_000.0..=4_600_000.0).contains(&ceiling), "{ceiling}");
        // Forgotten after a while: the acknowledged rate alone again.
        let ceiling = delivered.ceiling(at + CAPACITY_KEPT).unwrap();
        assert!(ceiling < 900_000.0, "{ceiling}");
    }
}
