//! `GET /metrics`: the daemon's figures in the Prometheus text format (version 0.0.4), for
//! Prometheus, VictoriaMetrics, Grafana Agent and the like. Same access rule as
//! `/api/status`.
//!
//! Every figure is read when the scrape comes (the pipeline's counters, the sessions'
//! webrtc-rs stats, `/proc/self`), put into a registry of `prometheus-client` and encoded by
//! it; nothing is kept between scrapes except the encode-time histogram, which the video
//! thread fills. Reading the sessions' stats is bounded (see `webrtc::figures`), so a
//! scrape answers within about a quarter of a second.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `onair_viewers` | gauge | viewers receiving media |
//! | `onair_sessions{state}` | gauge | sessions by state: negotiating, connected, disconnected, closing |
//! | `onair_video_frames_captured_total` | counter | pictures read from the camera |
//! | `onair_video_frames_encoded_total` | counter | pictures encoded and sent out |
//! | `onair_video_frames_dropped_total` | counter | pictures read but not sent (short, unusable format, skipped or failed by the encoder) |
//! | `onair_video_encode_duration_seconds` | histogram | openh264's time per picture (with packetizing) |
//! | `onair_video_keyframes_total{reason}` | counter | IDRs by reason: start, periodic, join, pli, fir, lag, encoder |
//! | `onair_audio_frames_encoded_total` | counter | Opus frames encoded |
//! | `onair_sent_bytes_total` | counter | RTP payload bytes sent to viewers, those gone included |
//! | `onair_sent_packets_total` | counter | RTP packets sent to viewers |
//! | `onair_nacks_received_total` | counter | NACKs from viewers |
//! | `onair_retransmitted_packets_total` | counter | packets sent again after a NACK |
//! | `onair_packets_lost_total` | counter | packets viewers reported lost (RTCP receiver reports) |
//! | `onair_viewer_rtt_max_seconds`, `…_mean_seconds` | gauge | round-trip time over viewers (absent without one) |
//! | `onair_viewer_fraction_lost_max_ratio`, `…_mean_ratio` | gauge | fraction lost in the last receiver report, over viewers |
//! | `onair_viewer_estimate_min_bits_per_second`, `…_mean_bits_per_second` | gauge | bandwidth estimates over viewers (absent before one is heard) |
//! | `onair_viewers_by_layer{layer}` | gauge | connected viewers on each quality layer (0: the top) |
//! | `onair_retransmissions_refused_total` | counter | resends asked for beyond the viewers' budgets |
//! | `onair_audio_fec_loss_ratio` | gauge | the loss Opus adds in-band FEC for (0: none) |
//! | `onair_snapshots_encoded_total` | counter | JPEGs made for `/snapshot.jpg` |
//! | `onair_capture_reopen_attempts_total` | counter | attempts to open the camera again |
//! | `onair_capture_reopens_total` | counter | attempts that worked |
//! | `onair_signaling_connected`, `onair_signaling_registered` | gauge | 1 while connected to / registered with the signalling service of `/api/status` |
//! | `onair_whip_publishing` | gauge | 1 while the stream reaches the WHIP server (with a `whip.url`) |
//! | `onair_whip_publishes_total`, `onair_whip_failures_total` | counter | WHIP sessions that connected; attempts that failed and sessions lost |
//! | `process_cpu_seconds_total` | counter | CPU time of the process, user and system |
//! | `process_resident_memory_bytes` | gauge | resident set size |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::prometheus_text::{CONTENT_TYPE, encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::AppState;
use crate::media::KeyframeReason;
use crate::media::stats::StatsSnapshot;
use crate::webrtc::figures::{Phase, SessionFigures};

/// The exposition, or 500 if encoding failed (it does not: it writes to a `String`).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let sessions = state.sessions.figures().await;
    let registry = collect(&state, &sessions);
    let mut text = String::new();
    match encode(&mut text, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Every metric, read now.
fn collect(state: &AppState, sessions: &SessionFigures) -> Registry {
    let mut out = Exposition::default();
    let stats = state.media.stats.snapshot(Instant::now());
    out.gauge(
        "onair_viewers",
        "Viewers receiving media",
        state.sessions.viewers() as f64,
    );
    sessions_by_state(&mut out, sessions);
    video(&mut out, &stats);
    out.counter(
        "onair_snapshots_encoded",
        "JPEGs made for /snapshot.jpg (at most one a second for each size asked)",
        state.media.snapshots_encoded(),
    );
    out.registry.register(
        "onair_video_encode_duration_seconds",
        "Time openh264 took per picture, with cutting it into RTP payloads",
        state.media.stats.encode_seconds().clone(),
    );
    traffic(&mut out, sessions);
    let reopens = &state.media.stats.video_reopens;
    out.counter(
        "onair_capture_reopen_attempts",
        "Attempts to open the camera again after it failed or was missing",
        reopens.attempts(),
    );
    out.counter(
        "onair_capture_reopens",
        "Attempts to open the camera again that worked",
        reopens.successes(),
    );
    adaptation(&mut out, state, sessions);
    signaling(&mut out, state);
    whip(&mut out, state);
    process(&mut out);
    out.registry
}

fn sessions_by_state(out: &mut Exposition, sessions: &SessionFigures) {
    let counts = Phase::ALL
        .iter()
        .zip(sessions.by_phase)
        .map(|(phase, count)| (phase.as_str(), count as f64));
    out.gauges_by(
        "onair_sessions",
        "Viewer sessions by state",
        "state",
        counts,
    );
}

fn video(out: &mut Exposition, stats: &StatsSnapshot) {
    out.counter(
        "onair_video_frames_captured",
        "Pictures read from the camera or test pattern",
        stats.frames_captured,
    );
    out.counter(
        "onair_video_frames_encoded",
        "Pictures encoded (or passed through) and sent to viewers",
        stats.video_frames,
    );
    out.counter(
        "onair_video_frames_dropped",
        "Pictures read but not sent: short, in a format that cannot be encoded, skipped or failed by the encoder",
        stats.frames_dropped,
    );
    let reasons = KeyframeReason::ALL
        .iter()
        .zip(stats.keyframes_by_reason)
        .map(|(reason, count)| (reason.as_str(), count));
    out.counters_by(
        "onair_video_keyframes",
        "Key frames (IDRs) sent, by why",
        "reason",
        reasons,
    );
    out.counter(
        "onair_audio_frames_encoded",
        "Opus frames encoded",
        stats.audio_frames,
    );
}

fn traffic(out: &mut Exposition, sessions: &SessionFigures) {
    let sent = sessions.traffic;
    out.counter(
        "onair_sent_bytes",
        "RTP payload bytes sent to viewers, those gone included",
        sent.bytes_sent,
    );
    out.counter(
        "onair_sent_packets",
        "RTP packets sent to viewers, those gone included",
        sent.packets_sent,
    );
    out.counter(
        "onair_nacks_received",
        "NACKs received from viewers",
        sent.nacks_received,
    );
    out.counter(
        "onair_retransmitted_packets",
        "Packets sent again after a NACK",
        sent.retransmitted_packets,
    );
    out.counter(
        "onair_packets_lost",
        "Packets the viewers reported lost in RTCP receiver reports",
        sent.packets_lost,
    );
    out.counter(
        "onair_retransmissions_refused",
        "Resends the viewers' NACKs asked for beyond their budgets (a quarter of each one's estimate)",
        sent.retransmissions_refused,
    );
    let rtt = "Round-trip time to the viewers: RTCP receiver reports' where webrtc-rs measures it, else the ICE checks' on the pair in use";
    let rtts = &sessions.rtt_seconds;
    out.spread("onair_viewer_rtt", "seconds", rtt, rtts, Worst::Largest);
    let lost = "Fraction of packets lost in the viewers' last RTCP receiver reports";
    out.spread(
        "onair_viewer_fraction_lost",
        "ratio",
        lost,
        &sessions.fraction_lost,
        Worst::Largest,
    );
}

/// Where the viewers are: their estimates and quality layers, and the audio's FEC.
fn adaptation(out: &mut Exposition, state: &AppState, sessions: &SessionFigures) {
    out.spread(
        "onair_viewer_estimate",
        "bits_per_second",
        "Bandwidth estimates of the viewers (from TWCC feedback, or receiver reports)",
        &sessions.estimates_bps,
        Worst::Smallest,
    );
    let layers = state.media.layers().len().max(sessions.by_layer.len());
    let names: Vec<String> = (0..layers).map(|layer| layer.to_string()).collect();
    let counts = names.iter().enumerate().map(|(layer, name)| {
        let count = sessions.by_layer.get(layer).copied().unwrap_or(0);
        (name.as_str(), count as f64)
    });
    out.gauges_by(
        "onair_viewers_by_layer",
        "Connected viewers on each quality layer (0: the top)",
        "layer",
        counts,
    );
    out.gauge(
        "onair_audio_fec_loss_ratio",
        "The packet loss Opus adds in-band FEC for: the worst viewers report lately (0: none)",
        f64::from(state.media.audio_fec_percent()) / 100.0,
    );
}

fn signaling(out: &mut Exposition, state: &AppState) {
    let flag =
        |flag: &std::sync::atomic::AtomicBool| f64::from(u8::from(flag.load(Ordering::Relaxed)));
    out.gauge(
        "onair_signaling_connected",
        "1 while connected to the signalling service named in /api/status",
        flag(&state.signaling_connected),
    );
    out.gauge(
        "onair_signaling_registered",
        "1 while the channel is registered with the signalling service named in /api/status",
        flag(&state.registered),
    );
}

fn whip(out: &mut Exposition, state: &AppState) {
    let Some(status) = state.publisher.as_ref().and_then(|p| p.status()) else {
        return;
    };
    out.gauge(
        "onair_whip_publishing",
        "1 while the stream reaches the WHIP server of /api/status",
        f64::from(u8::from(status.state == "publishing")),
    );
    out.counter(
        "onair_whip_publishes",
        "WHIP sessions that connected to the server",
        status.publishes,
    );
    out.counter(
        "onair_whip_failures",
        "WHIP attempts that failed, and WHIP sessions that were lost",
        status.failures,
    );
}

fn process(out: &mut Exposition) {
    if let Some(cpu) = proc_self::cpu_seconds() {
        let counter = Counter::<f64, AtomicU64>::default();
        counter.inc_by(cpu);
        out.registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the process",
            counter,
        );
    }
    if let Some(rss) = proc_self::resident_bytes() {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident set size of the process",
            rss as f64,
        );
    }
}

/// A registry being filled with figures read at one scrape.
#[derive(Default)]
struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// `name` without `_total` (the encoder adds it).
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        self.registry.register(name, help, counter);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let gauge = Gauge::<f64, AtomicU64>::default();
        gauge.set(value);
        self.registry.register(name, help, gauge);
    }

    fn counters_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl Iterator<Item = (&'a str, u64)>,
    ) {
        let family = Family::<[(&'static str, String); 1], Counter>::default();
        for (value, count) in values {
            family
                .get_or_create(&[(label, value.to_owned())])
                .inc_by(count);
        }
        self.registry.register(name, help, family);
    }

    fn gauges_by<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &'static str,
        values: impl Iterator<Item = (&'a str, f64)>,
    ) {
        let family = Family::<[(&'static str, String); 1], Gauge<f64, AtomicU64>>::default();
        for (value, figure) in values {
            family
                .get_or_create(&[(label, value.to_owned())])
                .set(figure);
        }
        self.registry.register(name, help, family);
    }

    /// `{name}_{max or min}_{unit}` and `{name}_mean_{unit}` of per-viewer `values`;
    /// nothing when there are none (no viewer, or none measured yet).
    fn spread(&mut self, name: &str, unit: &str, help: &str, values: &[f64], worst: Worst) {
        let (extreme, pick, which): (_, fn(f64, f64) -> f64, _) = match worst {
            Worst::Largest => ("max", f64::max, "the largest"),
            Worst::Smallest => ("min", f64::min, "the smallest"),
        };
        let Some(extreme_value) = values.iter().copied().reduce(pick) else {
            return;
        };
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        self.gauge(
            &format!("{name}_{extreme}_{unit}"),
            &format!("{help}: {which}"),
            extreme_value,
        );
        self.gauge(
            &format!("{name}_mean_{unit}"),
            &format!("{help}: the mean"),
            mean,
        );
    }
}

/// Which end of a spread over viewers is the one to watch.
#[derive(Clone, Copy)]
enum Worst {
    Largest,
    Smallest,
}

/// The process's own CPU time and memory, from procfs (Linux).
mod proc_self {
    /// Clock ticks per second of `/proc`'s CPU times: `USER_HZ`, 100 on every Linux
    /// architecture (what `sysconf(_SC_CLK_TCK)` answers).
    const USER_HZ: f64 = 100.0;

    /// User plus system time, from `/proc/self/stat`.
    pub fn cpu_seconds() -> Option<f64> {
        cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?).map(|t| t as f64 / USER_HZ)
    }

    /// `VmRSS` of `/proc/self/status`, in bytes.
    pub fn resident_bytes() -> Option<u64> {
        vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// utime + stime: fields 14 and 15 of `stat`, counted after the command name, which is
    /// in parentheses and may hold spaces and parentheses itself.
    pub(super) fn cpu_ticks(stat: &str) -> Option<u64> {
        let (_, after_name) = stat.rsplit_once(')')?;
        let mut fields = after_name.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        utime.checked_add(stime)
    }

    pub(super) fn vm_rss(status: &str) -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    }
}

#[cfg(test)]
mod tests {
    use super::proc_self::{cpu_ticks, vm_rss};
    use super::*;

    #[test]
    fn proc_figures_parse() {
        let stat = "4242 (onaird (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 37 0 0 20 0 9 0";
        assert_eq!(cpu_ticks(stat), Some(287));
        assert_eq!(cpu_ticks("4242 (onaird) S 1"), None);
        let status = "Name:\tonaird\nVmPeak:\t  90000 kB\nVmRSS:\t   23456 kB\nThreads:\t9\n";
        assert_eq!(vm_rss(status), Some(23456 * 1024));
        assert_eq!(vm_rss("Name: x\n"), None);
        assert!(proc_self::cpu_seconds().is_some() && proc_self::resident_bytes().is_some());
    }

    #[test]
    fn names_and_labels_come_out_as_prometheus_expects() {
        let mut out = Exposition::default();
        out.counter("onair_sent_bytes", "Bytes", 7);
        out.counters_by(
            "onair_video_keyframes",
            "IDRs",
            "reason",
            [("pli", 2)].into_iter(),
        );
        out.spread(
            "onair_viewer_rtt",
            "seconds",
            "RTT",
            &[0.01, 0.03],
            Worst::Largest,
        );
        let estimates = [400_000.0, 2_000_000.0];
        out.spread(
            "onair_viewer_estimate",
            "bps",
            "BWE",
            &estimates,
            Worst::Smallest,
        );
        out.spread(
            "onair_viewer_fraction_lost",
            "ratio",
            "Lost",
            &[],
            Worst::Largest,
        );
        let mut text = String::new();
        encode(&mut text, &out.registry).unwrap();
        for line in [
            "# TYPE onair_sent_bytes_total counter",
            "onair_sent_bytes_total 7",
            "onair_video_keyframes_total{reason=\"pli\"} 2",
            "onair_viewer_rtt_max_seconds 0.03",
            "onair_viewer_rtt_mean_seconds 0.02",
            "onair_viewer_estimate_min_bps 400000.0",
            "onair_viewer_estimate_mean_bps 1200000.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains("fraction_lost"), "{text}");
    }
}
