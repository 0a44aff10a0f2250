//! What `/metrics` reads of the live sessions: their states, what webrtc-rs counted for
//! each viewer (bytes and packets sent, retransmissions, the ICE round trip), and what the
//! viewer's RTCP said (NACKs, receiver reports).
//!
//! webrtc-rs 0.21 keeps stats of the RTCP it receives only in code it never calls (its
//! `nackCount`, and the loss and round trip of `remote-inbound-rtp`, stay 0), so the
//! last interceptor of the chain, which sees every RTCP packet anyway
//! (`webrtc::keyframe_requests`), counts them in an [`RtcpSeen`].
//!
//! The figures are read when someone asks (a scrape), never on the media path: the loop
//! that owns the viewers ([`super::engine`]) reads every viewer's at once, in one step.
//!
//! **Counters stay monotonic across leaving viewers.** A viewer that ends adds its final
//! figures to a running total of ended sessions, in the same step of the loop that removes
//! it, so a scrape sees each session either live or ended, never both or neither; and a
//! viewer's figures only ever grow ([`Traffic::max`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use rtc::statistics::stats::rtp_stream::received::remote_inbound::RTCRemoteInboundRtpStreamStats;

use serde::Serialize;

use super::congestion::Estimate;
use super::session::State;

/// Where a live session is, as `/metrics` counts them (`onair_sessions{state=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The answer went out; ICE and DTLS are not done yet.
    Negotiating,
    /// Media flows.
    Connected,
    /// Connectivity lost, maybe for a moment.
    Disconnected,
    /// Ended; its peer connection is being closed.
    Closing,
}

impl Phase {
    /// Every phase, in the order of [`SessionFigures::by_phase`].
    pub const ALL: [Phase; 4] = [
        Phase::Negotiating,
        Phase::Connected,
        Phase::Disconnected,
        Phase::Closing,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Negotiating => "negotiating",
            Phase::Connected => "connected",
            Phase::Disconnected => "disconnected",
            Phase::Closing => "closing",
        }
    }

    /// Where a session in `state` is.
    pub fn of(state: State) -> Phase {
        match state {
            State::Negotiating { .. } => Phase::Negotiating,
            State::Connected => Phase::Connected,
            State::Disconnected { .. } => Phase::Disconnected,
            State::Closed(_) => Phase::Closing,
        }
    }
}

/// Counters of what was sent to viewers, summed over their outgoing streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// RTP payload bytes sent (webrtc-rs's `bytesSent`; onair resends the original packet,
    /// not RTX, so resends are counted here too).
    pub bytes_sent: u64,
    /// RTP packets sent, resends included.
    pub packets_sent: u64,
    /// NACKs received from viewers.
    pub nacks_received: u64,
    /// Packets sent again after a NACK.
    pub retransmitted_packets: u64,
    /// Packets the viewers reported lost in their RTCP receiver reports.
    pub packets_lost: u64,
    /// Resends the viewers' NACKs asked for beyond their budgets.
    pub retransmissions_refused: u64,
}

impl Traffic {
    /// Field by field, the larger: counters of one session never go down.
    pub fn max(self, other: Traffic) -> Traffic {
        Traffic {
            bytes_sent: self.bytes_sent.max(other.bytes_sent),
            packets_sent: self.packets_sent.max(other.packets_sent),
            nacks_received: self.nacks_received.max(other.nacks_received),
            retransmitted_packets: self.retransmitted_packets.max(other.retransmitted_packets),
            packets_lost: self.packets_lost.max(other.packets_lost),
            retransmissions_refused: self
                .retransmissions_refused
                .max(other.retransmissions_refused),
        }
    }

    /// Field by field, the sum (saturating).
    pub fn plus(self, other: Traffic) -> Traffic {
        Traffic {
            bytes_sent: self.bytes_sent.saturating_add(other.bytes_sent),
            packets_sent: self.packets_sent.saturating_add(other.packets_sent),
            nacks_received: self.nacks_received.saturating_add(other.nacks_received),
            retransmitted_packets: self
                .retransmitted_packets
                .saturating_add(other.retransmitted_packets),
            packets_lost: self.packets_lost.saturating_add(other.packets_lost),
            retransmissions_refused: self
                .retransmissions_refused
                .saturating_add(other.retransmissions_refused),
        }
    }

    /// What a session's stats `report` (if one came), its `rtcp` and its `estimate` (the
    /// resends our budget let out and refused) count.
    pub fn of(report: Option<&RTCStatsReport>, rtcp: &RtcpSeen, estimate: &Estimate) -> Traffic {
        let sent = report
            .into_iter()
            .flat_map(RTCStatsReport::outbound_rtp_streams)
            .map(|s| Traffic {
                bytes_sent: s.sent_rtp_stream_stats.bytes_sent,
                packets_sent: s.sent_rtp_stream_stats.packets_sent,
                retransmitted_packets: s.retransmitted_packets_sent,
                ..Traffic::default()
            })
            .fold(Traffic::default(), Traffic::plus);
        // webrtc-rs counts resends only on an RTX stream, and onair sends none.
        Traffic {
            nacks_received: rtcp.nacks(),
            packets_lost: rtcp.lost(),
            retransmitted_packets: sent.retransmitted_packets.max(estimate.retransmitted()),
            retransmissions_refused: estimate.refused(),
            ..sent
        }
    }
}

/// The RTCP one viewer sent us, as far as `/metrics` needs it. Filled by the interceptor
/// (from webrtc-rs's thread), read by scrapes.
#[derive(Debug, Default)]
pub struct RtcpSeen {
    /// Generic NACK packets (each may ask for several packets), as WebRTC's `nackCount`.
    nacks: AtomicU64,
    /// The newest receiver report block per SSRC of ours.
    reports: Mutex<HashMap<u32, Reception>>,
}

/// One receiver report block: how one of our streams arrives at the viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reception {
    /// Packets lost since the stream began (cumulative, 24 bits signed on the wire).
    total_lost: u32,
    /// Fraction lost since the previous report, in 256ths.
    fraction_lost: u8,
}

impl RtcpSeen {
    /// Takes note of one RTCP packet from the viewer.
    pub fn record(&self, packet: &dyn rtc::rtcp::Packet) {
        let any = packet.as_any();
        if any.is::<TransportLayerNack>() {
            self.nacks.fetch_add(1, Ordering::Relaxed);
        }
        // A viewer that also sends media puts its report blocks in a sender report.
        let blocks = match (
            any.downcast_ref::<ReceiverReport>(),
            any.downcast_ref::<SenderReport>(),
        ) {
            (Some(rr), _) => &rr.reports,
            (None, Some(sr)) => &sr.reports,
            (None, None) => return,
        };
        if let Ok(mut reports) = self.reports.lock() {
            for block in blocks {
                let reception = Reception {
                    total_lost: block.total_lost,
                    fraction_lost: block.fraction_lost,
                };
                reports.insert(block.ssrc, reception);
            }
        }
    }

    /// NACK packets received.
    pub fn nacks(&self) -> u64 {
        self.nacks.load(Ordering::Relaxed)
    }

    /// Packets lost, as the newest reports say, over our streams.
    pub fn lost(&self) -> u64 {
        self.reports.lock().map_or(0, |reports| {
            reports.values().map(|r| u64::from(r.total_lost)).sum()
        })
    }

    /// The largest fraction lost (0 to 1) in the newest reports; `None` before the first.
    pub fn fraction_lost(&self) -> Option<f64> {
        let reports = self.reports.lock().ok()?;
        reports
            .values()
            .map(|r| f64::from(r.fraction_lost) / 256.0)
            .reduce(f64::max)
    }
}

/// The viewer's receiver reports on our streams.
fn remote_inbound(
    report: &RTCStatsReport,
) -> impl Iterator<Item = &RTCRemoteInboundRtpStreamStats> {
    report.iter().filter_map(|entry| match entry {
        RTCStatsReportEntry::RemoteInboundRtp(stats) => Some(stats),
        _ => None,
    })
}

/// One viewer's link now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Link {
    /// Round-trip time in seconds, if measured.
    rtt_seconds: Option<f64>,
    /// Fraction of packets lost in the last receiver report (0 to 1), if one came.
    fraction_lost: Option<f64>,
}

impl Link {
    fn of(report: Option<&RTCStatsReport>, rtcp: &RtcpSeen) -> Link {
        // The receiver reports' round trip as webrtc-rs reports it (0.21: always 0), else
        // the ICE connectivity checks' on the pair in use.
        let rtcp_rtt = report
            .into_iter()
            .flat_map(remote_inbound)
            .map(|s| s.round_trip_time)
            .reduce(f64::max);
        let rtt_seconds = rtcp_rtt
            .filter(|rtt| *rtt > 0.0)
            .or_else(|| report.and_then(ice_rtt));
        Link {
            rtt_seconds,
            fraction_lost: rtcp.fraction_lost(),
        }
    }
}

/// The newest STUN round trip of the nominated candidate pair.
fn ice_rtt(report: &RTCStatsReport) -> Option<f64> {
    report
        .candidate_pairs()
        .filter(|pair| pair.nominated && pair.current_round_trip_time > 0.0)
        .map(|pair| pair.current_round_trip_time)
        .reduce(f64::max)
}

/// One session as a scrape saw it.
pub struct Reading {
    phase: Phase,
    traffic: Traffic,
    link: Link,
    /// The bandwidth estimate (bits per second), once the viewer's feedback moved it.
    estimate_bps: Option<f64>,
    /// What that feedback was.
    estimate_from: Option<&'static str>,
    /// The quality layer it receives.
    layer: usize,
}

impl Reading {
    /// A viewer in `phase` that sent `traffic`, on `layer`, as its stats `report`, its
    /// `rtcp` and its `estimate` say.
    pub fn new(
        phase: Phase,
        traffic: Traffic,
        report: &RTCStatsReport,
        rtcp: &RtcpSeen,
        estimate: &Estimate,
        layer: usize,
    ) -> Self {
        Reading {
            phase,
            traffic,
            link: Link::of(Some(report), rtcp),
            estimate_bps: estimate.measured().then(|| estimate.bps()),
            estimate_from: estimate.measured_from(),
            layer,
        }
    }

    /// What it sent.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }
}

/// The sessions as `/metrics` reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionFigures {
    /// Live sessions in each [`Phase`] (in [`Phase::ALL`] order).
    pub by_phase: [usize; Phase::ALL.len()],
    /// What was sent to every viewer since the start, those gone included.
    pub traffic: Traffic,
    /// Each viewer's round-trip time in seconds, where measured.
    pub rtt_seconds: Vec<f64>,
    /// Each viewer's fraction lost (0 to 1) from its last receiver report, where one came.
    pub fraction_lost: Vec<f64>,
    /// Each viewer's bandwidth estimate (bits per second), once its feedback was heard.
    pub estimates_bps: Vec<f64>,
    /// Connected viewers on each quality layer (index 0: the top).
    pub by_layer: Vec<usize>,
}

impl SessionFigures {
    /// Counts one live session in.
    pub fn count(mut self, reading: Reading) -> Self {
        if let Some(count) = Phase::ALL
            .iter()
            .position(|p| *p == reading.phase)
            .and_then(|i| self.by_phase.get_mut(i))
        {
            *count += 1;
        }
        self.traffic = self.traffic.plus(reading.traffic);
        self.rtt_seconds.extend(reading.link.rtt_seconds);
        self.fraction_lost.extend(reading.link.fraction_lost);
        self.estimates_bps.extend(reading.estimate_bps);
        if reading.phase == Phase::Connected {
            if self.by_layer.len() <= reading.layer {
                self.by_layer.resize(reading.layer + 1, 0);
            }
            self.by_layer[reading.layer] += 1;
        }
        self
    }
}

/// One live viewer, as `/api/status` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerFigures {
    /// The session id (the last part of its WHEP resource URL).
    pub id: String,
    /// Where the session is: "negotiating", "connected", "closing".
    pub state: &'static str,
    /// The quality layer it receives: 0 the top, 1 the lower.
    pub layer: usize,
    /// Its bandwidth estimate in kb/s; `null` until its feedback has been heard.
    pub estimate_kbps: Option<f64>,
    /// What the estimate comes from: "twcc" (its transport-wide congestion control
    /// feedback, through GCC) or "receiver reports" (the loss in them, for viewers that send
    /// no TWCC feedback).
    pub estimate_from: Option<&'static str>,
    /// Round-trip time in milliseconds, where measured.
    pub rtt_ms: Option<f64>,
    /// Fraction lost (0 to 1) in its last receiver report.
    pub fraction_lost: Option<f64>,
    /// NACK packets it sent.
    pub nacks: u64,
    /// RTP packets sent to it, retransmissions included.
    pub packets_sent: u64,
    /// Packets resent for its NACKs.
    pub retransmitted: u64,
    /// Resends its NACKs asked for beyond its budget (a quarter of its estimate).
    pub retransmissions_refused: u64,
}

impl PeerFigures {
    /// Session `id` as `reading` saw it.
    pub fn of(id: String, reading: Reading) -> Self {
        PeerFigures {
            id,
            state: reading.phase.as_str(),
            layer: reading.layer,
            estimate_kbps: reading.estimate_bps.map(|bps| (bps / 1000.0).round()),
            estimate_from: reading.estimate_from,
            rtt_ms: reading.link.rtt_seconds.map(|s| s * 1000.0),
            fraction_lost: reading.link.fraction_lost,
            nacks: reading.traffic.nacks_received,
            packets_sent: reading.traffic.packets_sent,
            retransmitted: reading.traffic.retransmitted_packets,
            retransmissions_refused: reading.traffic.retransmissions_refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(n: u64) -> Traffic {
        Traffic {
            bytes_sent: 1000 * n,
            packets_sent: n,
            nacks_received: n / 10,
            retransmitted_packets: n / 20,
            packets_lost: n / 100,
            retransmissions_refused: n / 50,
        }
    }

    #[test]
    fn traffic_adds_and_keeps_the_larger() {
        assert_eq!(traffic(100).plus(traffic(200)), traffic(300));
        let mixed = Traffic {
            packets_lost: 9,
            ..traffic(100)
        };
        assert_eq!(
            mixed.max(traffic(200)),
            Traffic {
                packets_lost: 9,
                ..traffic(200)
            }
        );
    }

    #[test]
    fn rtcp_from_the_viewer_is_counted() {
        use rtc::rtcp::reception_report::ReceptionReport;
        let seen = RtcpSeen::default();
        assert_eq!(
            (seen.nacks(), seen.lost(), seen.fraction_lost()),
            (0, 0, None)
        );
        let block = |ssrc, total_lost, fraction_lost| ReceptionReport {
            ssrc,
            total_lost,
            fraction_lost,
            ..ReceptionReport::default()
        };
        let rr = |reports| ReceiverReport {
            reports,
            ..ReceiverReport::default()
        };
        seen.record(&rr(vec![block(1, 10, 64), block(2, 3, 0)]));
        seen.record(&TransportLayerNack::default());
        seen.record(&TransportLayerNack::default());
        // A newer report of stream 1 replaces the older one.
        seen.record(&rr(vec![block(1, 12, 32)]));
        assert_eq!(seen.nacks(), 2);
        assert_eq!(seen.lost(), 15);
        assert_eq!(seen.fraction_lost(), Some(0.125));
    }

    #[test]
    fn phases_of_states() {
        assert_eq!(Phase::of(State::Connected), Phase::Connected);
    }

    #[test]
    fn a_peer_is_listed_with_its_estimate_in_kilobits() {
        let reading = Reading {
            phase: Phase::Connected,
            traffic: traffic(100),
            link: Link {
                rtt_seconds: Some(0.012),
                fraction_lost: Some(0.25),
            },
            estimate_bps: Some(1_234_567.0),
            estimate_from: Some("twcc"),
            layer: 1,
        };
        let peer = PeerFigures::of("abc".into(), reading);
        assert_eq!(peer.state, "connected");
        assert_eq!(peer.estimate_kbps, Some(1235.0));
        assert_eq!(peer.rtt_ms, Some(12.0));
        assert_eq!((peer.nacks, peer.packets_sent), (10, 100));
        assert_eq!((peer.layer, peer.retransmissions_refused), (1, 2));
    }

    #[test]
    fn readings_fold_into_figures() {
        let reading = |phase, n, rtt| Reading {
            phase,
            traffic: traffic(n),
            link: Link {
                rtt_seconds: rtt,
                fraction_lost: rtt.map(|_| 0.0),
            },
            estimate_bps: None,
            estimate_from: None,
            layer: 0,
        };
        let figures = [
            reading(Phase::Connected, 100, Some(0.01)),
            reading(Phase::Connected, 200, None),
            reading(Phase::Negotiating, 0, None),
        ]
        .into_iter()
        .fold(SessionFigures::default(), SessionFigures::count);
        assert_eq!(figures.by_phase, [1, 2, 0, 0]);
        assert_eq!(figures.traffic, traffic(300));
        assert_eq!(figures.rtt_seconds, [0.01]);
        assert_eq!(figures.fraction_lost, [0.0]);
        assert_eq!(
            figures.by_layer,
            [2],
            "connected viewers, all on the top layer"
        );
        assert!(figures.estimates_bps.is_empty());
    }
}
