//! Each viewer's bandwidth estimate, and the pacer that spreads its packets out.
//!
//! Per connection, rtc-interceptor's congestion control numbers every packet we send
//! (transport-wide sequence numbers), reads the viewer's TWCC feedback and hands what
//! arrived when to Google congestion control (GCC: delay and loss based). Its estimate,
//! held under what the link was seen to deliver ([`super::delivered`]), is what the viewer's
//! link carries; [`Estimate`] publishes it to the rest of onaird.
//!
//! The pacer sends a picture's packets spread out instead of in one burst. It follows the
//! rate congestion control announces, so that rate is the estimate times
//! [`PACING_FACTOR`], never below the stream's own bitrate times the same factor: the pacer
//! smooths bursts, it does not hold back the stream (moving a viewer to a smaller stream
//! is what answers a low estimate).
//!
//! Viewers that send no TWCC feedback (aiortc) are estimated from their RTCP receiver
//! reports instead: GCC's loss-based controller alone (down in proportion to the loss above
//! 10 %, up 5 % a report below 2 %). It hears of a full queue only once packets are lost
//! and climbs slowly, but it moves such a viewer to the low layer when its link cannot carry
//! the top one. The pacer keeps its starting rate for them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::interceptor::{
    Attribute, BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, Interceptor,
    LossController, PacerBuilder, Packet, PacketReport, Registry, Slot, StreamInfo, TaggedPacket,
    TwccSenderBuilder,
};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

use super::delivered::Delivered;

/// The pacer may send this many times the estimate (as libwebrtc's pacer does).
pub const PACING_FACTOR: f64 = 2.5;

/// GCC never estimates below this.
const MIN_ESTIMATE_BPS: f64 = 100_000.0;

/// GCC never estimates above this.
const MAX_ESTIMATE_BPS: f64 = 20_000_000.0;

/// At most this many packets wait in a viewer's pacer; more are dropped (then NACKed).
const PACER_QUEUE_PACKETS: usize = 1024;

/// One viewer's estimate as the rest of onaird reads it, and what was resent to it.
#[derive(Debug)]
pub struct Estimate {
    /// f64 bits per second, as bits.
    bps: AtomicU64,
    /// What it comes from: [`Source`] as a number.
    source: AtomicU64,
    /// Packets resent for its NACKs.
    retransmitted: AtomicU64,
    /// Resends its NACKs asked for that the budget refused.
    refused: AtomicU64,
    /// Its receiver reports that showed loss.
    lossy_reports: AtomicU64,
    /// Jumps in the video's sequence numbers made on purpose (`webrtc::forward`'s flush)
    /// that no receiver report has accounted for yet: what they skip is not loss.
    jumps: Mutex<VecDeque<Jump>>,
    /// How long its packets wait in queues on the way, microseconds (TWCC only).
    queued_us: AtomicU64,
    /// The video sequence number from which the viewer is on its present layer (bit 16 set
    /// once it moved): what came before is of no use to it any more, and is not resent.
    moved_at: AtomicU32,
}

/// A jump in the video's sequence numbers: `count` left out before `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Jump {
    first: u16,
    count: u16,
}

/// Jumps kept until a receiver report accounts for them (they are at least 2 s apart).
const JUMPS_KEPT: usize = 8;

/// Where a viewer's estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
enum Source {
    /// Nothing yet: where it started.
    Start = 0,
    /// The loss in its receiver reports (no TWCC heard so far).
    Reports = 1,
    /// Its TWCC feedback, through GCC; receiver reports no longer count.
    Twcc = 2,
}

impl Estimate {
    fn new(start_bps: f64) -> Self {
        Estimate {
            bps: AtomicU64::new(start_bps.to_bits()),
            source: AtomicU64::new(Source::Start as u64),
            retransmitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            lossy_reports: AtomicU64::new(0),
            jumps: Mutex::new(VecDeque::new()),
            moved_at: AtomicU32::new(0),
            queued_us: AtomicU64::new(0),
        }
    }

    /// How long its packets wait in queues on the way, as its newest TWCC feedback says.
    pub fn queued(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.queued_us.load(Ordering::Relaxed))
    }

    /// The viewer moved to another layer, whose first key frame starts at video sequence
    /// number `first`.
    pub fn moved_at(&self, first: u16) {
        self.moved_at
            .store(0x1_0000 | u32::from(first), Ordering::Relaxed);
    }

    /// Whether video packet `sequence_number` was sent before the viewer's last move.
    fn before_move(&self, sequence_number: u16) -> bool {
        let moved_at = self.moved_at.load(Ordering::Relaxed);
        moved_at & 0x1_0000 != 0 && (sequence_number.wrapping_sub(moved_at as u16) as i16) < 0
    }

    /// For tests: an estimate from receiver reports (or not yet measured), with so many lossy
    /// reports and refused resends.
    #[cfg(test)]
    pub(crate) fn reporting(from_reports: bool, lossy_reports: u64, refused: u64) -> Self {
        let estimate = Estimate::new(1_000_000.0);
        if from_reports {
            estimate.publish_reports(1_000_000.0);
        }
        estimate
            .lossy_reports
            .store(lossy_reports, Ordering::Relaxed);
        estimate.refused.store(refused, Ordering::Relaxed);
        estimate
    }

    /// Whether the estimate comes from receiver reports (the viewer sends no TWCC).
    pub fn from_reports(&self) -> bool {
        self.source() == Source::Reports
    }

    /// Receiver reports that showed loss, so far.
    pub fn lossy_reports(&self) -> u64 {
        self.lossy_reports.load(Ordering::Relaxed)
    }

    /// The video left out `count` sequence numbers on purpose, before `first`: the receiver
    /// report whose range takes them in is corrected.
    pub fn jumped(&self, first: u16, count: u16) {
        if let Ok(mut jumps) = self.jumps.lock() {
            if jumps.len() == JUMPS_KEPT {
                jumps.pop_front();
            }
            jumps.push_back(Jump { first, count });
        }
    }

    /// The sequence numbers left out on purpose in a receiver's report range after
    /// `before` up to `highest` (extended sequence numbers); jumps the receiver has passed
    /// are forgotten, later ones kept.
    fn skipped_between(&self, before: u32, highest: u32) -> u64 {
        let span = highest.wrapping_sub(before);
        let Ok(mut jumps) = self.jumps.lock() else {
            return 0;
        };
        let mut skipped = 0;
        jumps.retain(|jump| {
            let offset = u32::from(jump.first.wrapping_sub(before as u16));
            match offset {
                // In the range (the jump itself and its first packet).
                _ if offset >= 1 && offset <= span && span < 0x8000 => {
                    skipped += u64::from(jump.count);
                    false
                }
                // Behind what the receiver has seen: nothing to correct any more.
                0 | 0x8000.. => false,
                _ => true,
            }
        });
        skipped
    }

    /// Packets resent for the viewer's NACKs.
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted.load(Ordering::Relaxed)
    }

    /// Resends the viewer asked for that would have gone over its budget.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The estimate in bits per second.
    pub fn bps(&self) -> f64 {
        f64::from_bits(self.bps.load(Ordering::Relaxed))
    }

    /// Whether the viewer's feedback has been heard (else the estimate is where it
    /// started).
    pub fn measured(&self) -> bool {
        self.source() != Source::Start
    }

    /// What the estimate comes from, once measured: "twcc" or "receiver reports".
    pub fn measured_from(&self) -> Option<&'static str> {
        match self.source() {
            Source::Start => None,
            Source::Reports => Some("receiver reports"),
            Source::Twcc => Some("twcc"),
        }
    }

    fn source(&self) -> Source {
        match self.source.load(Ordering::Relaxed) {
            2 => Source::Twcc,
            1 => Source::Reports,
            _ => Source::Start,
        }
    }

    /// GCC's estimate; `measured` if TWCC feedback moved it. Once TWCC has been heard it is
    /// what counts; before, only while receiver reports have not set the estimate.
    fn publish_twcc(&self, bps: f64, measured: bool) {
        if measured {
            self.source.store(Source::Twcc as u64, Ordering::Relaxed);
        }
        if self.source() != Source::Reports {
            self.bps.store(bps.to_bits(), Ordering::Relaxed);
        }
    }

    /// The estimate from receiver reports, unless TWCC has been heard.
    fn publish_reports(&self, bps: f64) {
        if self.source() == Source::Twcc {
            return;
        }
        self.source.store(Source::Reports as u64, Ordering::Relaxed);
        self.bps.store(bps.to_bits(), Ordering::Relaxed);
    }
}

/// GCC, held under what the link was seen to deliver, publishing its estimate and telling
/// the chain (the pacer) a pacing rate.
struct Publishing {
    gcc: Gcc,
    delivered: Delivered,
    /// GCC's estimate under the ceiling, as of the last feedback or timeout.
    bps: f64,
    estimate: Arc<Estimate>,
    /// The pacing rate never goes below this.
    floor_bps: f64,
}

impl Publishing {
    fn publish(&mut self, now: Instant, measured: bool) {
        let gcc = self.gcc.target_bitrate();
        self.bps = match self.delivered.ceiling(now) {
            Some(ceiling) => gcc.min(ceiling),
            None => gcc,
        };
        self.estimate.publish_twcc(self.bps, measured);
        let queued = u64::try_from(self.delivered.queued().as_micros()).unwrap_or(u64::MAX);
        self.estimate.queued_us.store(queued, Ordering::Relaxed);
    }
}

impl BandwidthEstimator for Publishing {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        self.delivered.on_reports(now, reports);
        if tracing::enabled!(tracing::Level::TRACE) {
            // Per stream: packets reported, and of those arrived.
            let mut by_ssrc = std::collections::BTreeMap::<u32, (usize, usize)>::new();
            for report in reports {
                let counts = by_ssrc.entry(report.ssrc).or_default();
                counts.0 += 1;
                counts.1 += usize::from(report.arrived);
            }
            let target = self.gcc.target_bitrate();
            tracing::trace!(?by_ssrc, target, "TWCC feedback");
        }
        self.publish(now, !reports.is_empty());
    }

    /// What the chain reads: the pacing rate.
    fn target_bitrate(&self) -> f64 {
        pacing_rate(self.bps, self.floor_bps)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
        self.publish(now, false);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// Resends may take this share of the estimate: a viewer's NACKs on a congested link must
/// not add more than the link can carry (each lost packet asked for again is more load on
/// the very queue that lost it).
pub const RETRANSMIT_SHARE: f64 = 0.25;

/// A receiver report that lost more than this (in 256ths, 10 %) says the link is full.
const LOSSY_REPORT: u8 = 26;

/// Slot between the NACK responder (4000, where resends come from) and the pacer (3000,
/// toward the wire).
const FEEDBACK_SLOT: usize = 3500;

/// The resend budget may save up this long of its rate, so the few packets one NACK asks
/// for can go out together.
const RETRANSMIT_BURST_SECONDS: f64 = 0.25;

/// ... and at least this much (two full packets), however low the estimate: below it a
/// full-size packet could never be resent at all.
const RETRANSMIT_BURST_MIN_BITS: f64 = 2.0 * 1500.0 * 8.0;

/// What a viewer's feedback does besides GCC: its NACKs' resends of video sent before it
/// moved to its present layer are refused, the others go out only within [`RETRANSMIT_SHARE`] of the
/// estimate (a token bucket holding [`RETRANSMIT_BURST_SECONDS`]
/// of it; what it passes and refuses is counted), and its receiver reports estimate its link
/// while it sends no TWCC feedback.
struct Feedback {
    estimate: Arc<Estimate>,
    budget_bits: f64,
    last: Option<Instant>,
    /// The estimate from receiver reports.
    reports: LossController,
    /// The lowest it may be.
    floor_bps: f64,
    /// Bytes of RTP sent so far, and (when, how many) at the last receiver report.
    sent_bytes: u64,
    at_report: Option<(Instant, u64)>,
    /// Our video streams (SSRC): their last report block's highest sequence number and
    /// packets lost, once one came.
    video: HashMap<u32, Option<(u32, u32)>>,
    inbound: VecDeque<TaggedPacket>,
    outbound: VecDeque<TaggedPacket>,
}

impl Feedback {
    fn new(estimate: Arc<Estimate>, start_bps: f64, floor_bps: f64) -> Self {
        Feedback {
            estimate,
            budget_bits: 0.0,
            last: None,
            reports: LossController::new(start_bps, floor_bps, MAX_ESTIMATE_BPS),
            floor_bps,
            sent_bytes: 0,
            at_report: None,
            video: HashMap::new(),
            inbound: VecDeque::new(),
            outbound: VecDeque::new(),
        }
    }

    /// A receiver report at `now`: `fraction_lost` (in 256ths) of our packets since the last
    /// one did not arrive. More than [`LOSSY_REPORT`] lost: the link carried what arrived of
    /// what was sent since, and that is the estimate (GCC's loss controller alone, down by
    /// half the loss a report, takes many seconds to come down from a layer the link cannot
    /// carry, the picture frozen meanwhile).
    fn reported(&mut self, now: Instant, fraction_lost: u8) {
        let since = self.at_report.replace((now, self.sent_bytes));
        if self.estimate.source() == Source::Twcc {
            return;
        }
        if fraction_lost > 0 {
            self.estimate.lossy_reports.fetch_add(1, Ordering::Relaxed);
        }
        let mut bps = self.reports.update(now, usize::from(fraction_lost), 256);
        let seconds = since.map_or(0.0, |(at, _)| {
            now.saturating_duration_since(at).as_secs_f64()
        });
        if fraction_lost > LOSSY_REPORT
            && seconds >= 0.2
            && let Some((_, sent_then)) = since
        {
            let arrived = 1.0 - f64::from(fraction_lost) / 256.0;
            let delivered = (self.sent_bytes - sent_then) as f64 * 8.0 * arrived / seconds;
            if delivered < bps {
                bps = delivered.max(self.floor_bps);
                self.reports = LossController::new(bps, self.floor_bps, MAX_ESTIMATE_BPS);
            }
        }
        self.estimate.publish_reports(bps);
    }

    /// The loss (in 256ths) of a report block on stream `ssrc` (its extended `highest`
    /// sequence number, `lost` so far, its own `fraction` lost): its own, unless it is our
    /// video's and takes in a jump made on purpose (which it counts as lost); then the loss
    /// between this block and the one before without the jump.
    fn loss(&mut self, ssrc: u32, highest: u32, lost: u32, fraction: u8) -> u8 {
        let Some(last) = self.video.get_mut(&ssrc) else {
            return fraction;
        };
        let Some((highest_before, lost_before)) = last.replace((highest, lost)) else {
            return fraction;
        };
        let skipped = self.estimate.skipped_between(highest_before, highest);
        let expected = u64::from(highest.wrapping_sub(highest_before));
        if skipped == 0 || expected < skipped {
            return fraction;
        }
        // Packets lost is 24 bits, signed: duplicates (resends that came after all) lower it.
        let lost = i64::from(((lost.wrapping_sub(lost_before) << 8) as i32) >> 8);
        let lost = (lost - skipped as i64).max(0) as u64;
        match expected - skipped {
            0 => 0,
            expected => (lost * 256 / expected).min(255) as u8,
        }
    }

    /// Whether a resend of `bits` fits at `now`.
    fn allows(&mut self, now: Instant, bits: f64) -> bool {
        let rate = self.estimate.bps().max(MIN_ESTIMATE_BPS) * RETRANSMIT_SHARE;
        let most = (rate * RETRANSMIT_BURST_SECONDS).max(RETRANSMIT_BURST_MIN_BITS);
        let elapsed = self.last.map_or(RETRANSMIT_BURST_SECONDS, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        self.last = Some(now);
        self.budget_bits = (self.budget_bits + elapsed * rate).min(most);
        if self.budget_bits < bits {
            return false;
        }
        self.budget_bits -= bits;
        true
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Feedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            // Report blocks come in receiver reports, and in sender reports from a viewer
            // that sends too (str0m does, even receiving only).
            let blocks: Vec<(u32, u32, u32, u8)> = packets
                .iter()
                .flat_map(|p| {
                    let any = p.as_any();
                    let rr = any.downcast_ref::<ReceiverReport>().map(|r| &r.reports);
                    let sr = any.downcast_ref::<SenderReport>().map(|s| &s.reports);
                    rr.or(sr).into_iter().flatten()
                })
                .map(|b| {
                    (
                        b.ssrc,
                        b.last_sequence_number,
                        b.total_lost,
                        b.fraction_lost,
                    )
                })
                .collect();
            let losses: Vec<u8> = blocks
                .into_iter()
                .map(|(ssrc, highest, lost, fraction)| self.loss(ssrc, highest, lost, fraction))
                .collect();
            if let Some(worst) = losses.into_iter().max() {
                self.reported(msg.now, worst);
            }
        }
        self.inbound.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.inbound.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if msg.message.has(&Attribute::Retransmission) {
            let (bits, stale) = match &msg.message.packet {
                Packet::Rtp(packet) => (
                    (packet.payload.len() + 12) as f64 * 8.0,
                    self.video.contains_key(&packet.header.ssrc)
                        && self.estimate.before_move(packet.header.sequence_number),
                ),
                _ => (0.0, false),
            };
            // The viewer starts again from its new layer's key frame: the old layer's packets
            // would take the room that key frame needs (a viewer just moved down, on a link
            // full of what was sent of the layer above).
            if stale {
                self.estimate.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if !self.allows(msg.now, bits) {
                self.estimate.refused.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            self.estimate.retransmitted.fetch_add(1, Ordering::Relaxed);
        }
        if let Packet::Rtp(packet) = &msg.message.packet {
            self.sent_bytes += (packet.payload.len() + 12) as u64;
        }
        self.outbound.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.outbound.pop_front()
    }
}

impl Interceptor for Feedback {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("video/") {
            self.video.entry(info.ssrc).or_insert(None);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.video.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// Congestion control on video only: the TWCC sender numbers, and GCC's recorder expects
/// feedback on, the streams bound to them, and rtc binds a stream with the header extensions
/// *it* registered, whatever the other side's SDP took. When we offer and the answer takes
/// transport-wide sequence numbers for video alone (Janus does), audio packets were numbered
/// all the same; the other side, reading no number on them, reported every one lost, and GCC
/// sank to its floor at once. (Not numbering audio but still recording it was as bad: GCC
/// counted audio as lost for want of feedback.) Audio is a few per cent of what is sent.
struct VideoOnly<I>(I);

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for VideoOnly<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_read(msg)
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.poll_read()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_write(msg)
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.poll_write()
    }
    fn handle_event(&mut self, event: ()) -> Result<(), Error> {
        self.0.handle_event(event)
    }
    fn poll_event(&mut self) -> Option<()> {
        self.0.poll_event()
    }
    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.0.handle_timeout(now)
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }
    fn close(&mut self) -> Result<(), Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for VideoOnly<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("video/") {
            self.0.bind_local_stream(info);
        }
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_local_stream(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

/// How fast the pacer may send for an estimate of `estimate_bps`, a stream of
/// `stream_bps` at the least.
pub fn pacing_rate(estimate_bps: f64, stream_bps: f64) -> f64 {
    estimate_bps.max(stream_bps) * PACING_FACTOR
}

/// Where an estimate starts, as a multiple of the stream's bitrate: GCC's first reports,
/// taken while a joining viewer's first pictures arrive in a burst, often cut it by a step
/// or two, and a viewer whose link has room should not be moved off the top layer for that.
const START_FACTOR: f64 = 1.5;

/// Adds congestion control (TWCC sequence numbers, feedback into GCC), a pacer and the
/// budget for resends to `registry`, for a stream whose top layer sends `stream_bps` and
/// lowest `lowest_bps`. The estimate never goes below the lowest layer's rate: nothing less
/// is ever sent, and the lower it sinks, the longer it takes to climb back once the link
/// clears.
pub fn register(registry: Registry, stream_bps: f64, lowest_bps: f64) -> (Registry, Arc<Estimate>) {
    let start = (stream_bps * START_FACTOR).clamp(MIN_ESTIMATE_BPS, MAX_ESTIMATE_BPS);
    let floor = lowest_bps.clamp(MIN_ESTIMATE_BPS, start);
    let estimate = Arc::new(Estimate::new(start));
    let publishing = Publishing {
        gcc: Gcc::new(start, floor, MAX_ESTIMATE_BPS),
        delivered: Delivered::default(),
        bps: start,
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
            VideoOnly(CongestionControlBuilder::new(publishing).build()),
        )
        .with(
            Slot::TwccSender,
            VideoOnly(TwccSenderBuilder::new().build()),
        )
        .with(Slot::Pacer, pacer)
        .with(
            FEEDBACK_SLOT.into(),
            Feedback::new(estimate.clone(), start, floor),
        );
    (registry, estimate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A viewer's feedback handling, its estimate starting at `start`, floored at 100 kb/s.
    fn feedback(start: f64) -> Feedback {
        Feedback::new(Arc::new(Estimate::new(start)), start, MIN_ESTIMATE_BPS)
    }

    #[test]
    fn without_twcc_receiver_reports_estimate_the_link_at_what_arrived() {
        let t = Instant::now();
        let second = |n: u64| t + std::time::Duration::from_secs(n);
        let mut viewer = feedback(3_000_000.0);
        assert!(!viewer.estimate.measured());
        viewer.reported(second(0), 0);
        // 2.1 Mbit/s sent a second, two thirds of it lost: the link carries 0.7 Mbit/s.
        viewer.sent_bytes += 262_500;
        viewer.reported(second(1), 170);
        let down = viewer.estimate.bps();
        assert!(viewer.estimate.measured());
        assert!((700_000.0..=720_000.0).contains(&down), "{down}");
        // Nothing lost: it climbs 5 % a report from there.
        for n in 2..=30 {
            viewer.sent_bytes += 90_000;
            viewer.reported(second(n), 0);
        }
        assert!(
            viewer.estimate.bps() > down * 1.5,
            "{}",
            viewer.estimate.bps()
        );
        // A little loss is no sign of a full link.
        let before = viewer.estimate.bps();
        viewer.sent_bytes += 90_000;
        viewer.reported(second(31), 10);
        assert_eq!(viewer.estimate.bps(), before);
    }

    #[test]
    fn sequence_numbers_skipped_on_purpose_are_not_counted_as_loss() {
        let mut viewer = feedback(2_000_000.0);
        let (video, audio) = (0x1111, 0x2222);
        viewer.video.insert(video, None);
        assert_eq!(
            viewer.loss(video, 1000, 10, 5),
            5,
            "the first block as it says"
        );
        assert_eq!(viewer.loss(audio, 500, 0, 0), 0);
        // A jump of 1024 before sequence number 1020, then 40 more sent, 2 of them lost:
        // the block says 1026 of 1064 lost.
        viewer.estimate.jumped(1020 + 1024, 1024);
        assert_eq!(
            viewer.loss(audio, 2000, 1, 5),
            5,
            "audio's block is left alone"
        );
        assert_eq!(
            viewer.loss(video, 1000 + 1064, 10 + 1026, 245),
            (2 * 256 / 40) as u8
        );
        // Later blocks are read as they come.
        assert_eq!(viewer.loss(video, 1000 + 1104, 10 + 1030, 25), 25);
        // A report from before a jump (however long its range) is not corrected, and the
        // one that takes the jump in is.
        let first = (2104 + 300 + 1024) as u16;
        viewer.estimate.jumped(first, 1024);
        assert_eq!(viewer.loss(video, 2104 + 200, 1040, 0), 0);
        assert_eq!(viewer.loss(video, 2104 + 200 + 1124, 1040 + 1024, 240), 0);
        // With fewer lost than before in all (24 bits, signed; resends that came late):
        // no loss either.
        viewer.estimate.jumped((3428 + 10 + 1024) as u16, 1024);
        assert_eq!(viewer.loss(video, 3428 + 1100, 2064 + 1024 - 2000, 0), 0);
        // A jump the receiver never saw (its report went past it): forgotten.
        viewer.estimate.jumped(100, 1024);
        assert_eq!(viewer.loss(video, 4528 + 40, 1088, 0), 0);
        assert!(viewer.estimate.jumps.lock().unwrap().is_empty());
        assert_eq!(viewer.estimate.lossy_reports(), 0, "loss() only reads");
        viewer.reported(Instant::now(), 25);
        assert_eq!(viewer.estimate.lossy_reports(), 1);
    }

    #[test]
    fn once_twcc_is_heard_receiver_reports_no_longer_count() {
        let t = Instant::now();
        let mut viewer = feedback(3_000_000.0);
        viewer.estimate.publish_twcc(2_500_000.0, true);
        viewer.reported(t, 200);
        assert_eq!(viewer.estimate.bps(), 2_500_000.0);
        // GCC's own updates still do.
        viewer.estimate.publish_twcc(2_000_000.0, false);
        assert_eq!(viewer.estimate.bps(), 2_000_000.0);
    }

    #[test]
    fn resends_get_a_quarter_of_the_estimate_and_a_full_packet_always_fits() {
        let full = 1200.0 * 8.0;
        let t = Instant::now();
        // 200 kb/s: 50 kb/s for resends, yet a full packet fits in its burst.
        let mut budget = feedback(200_000.0);
        assert!(budget.allows(t, full));
        // Asked for 10 full packets every 100 ms for 10 s: what goes out is about a quarter
        // of the estimate.
        let mut sent = 0.0;
        for tick in 1..=100 {
            let now = t + std::time::Duration::from_millis(100 * tick);
            for _ in 0..10 {
                if budget.allows(now, full) {
                    sent += full;
                }
            }
        }
        let rate = sent / 10.0;
        assert!((45_000.0..=60_000.0).contains(&rate), "{rate} b/s resent");
    }

    #[test]
    fn the_pacer_never_holds_the_stream_back() {
        assert_eq!(pacing_rate(300_000.0, 2_000_000.0), 5_000_000.0);
        assert_eq!(pacing_rate(4_000_000.0, 2_000_000.0), 10_000_000.0);
    }
}
