//! Fan-out, side by side: what onaird costs with 0, 1, 10, 20 and 50 viewers, beside the
//! fan-out anchor, Janus's streaming plugin forwarding one H.264 stream of the same pictures
//! at the same size and bitrate without re-encoding it.
//!
//! Both serve video only (onaird's audio is off, Janus's mountpoint has none). The viewers are
//! webrtc-rs peers in another process (`onair-crowd`) that count pictures without decoding
//! them; each window's report shows every viewer got the whole stream. CPU is utime + stime
//! of the server's process (all its threads) over a fixed window after the viewers settled,
//! RSS its VmRSS at the window's end.
//!
//! What the figures include: onaird's are the whole daemon, its capture and H.264 encoder
//! included, so its 0-viewer figure is mostly the encoder; Janus's are Janus's process alone,
//! while the feed that encodes for it (onair-pattern | ffmpeg libx264) is measured apart and
//! not counted. The per-viewer increment, (CPU(N) − CPU(0)) / N, compares like with like.

pub mod crowd;
pub mod janus_peer;
pub mod procfs;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use self::crowd::CrowdProcess;
use self::janus_peer::{JanusPeer, Stream};
use self::procfs::{CpuMark, MachineMark, rss_mb};
use crate::daemon::{Daemon, built};

/// What to measure, and how long.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The stream both servers send.
    pub stream: Stream,
    /// Viewer counts, in order (0 is the server alone).
    pub counts: Vec<usize>,
    /// From every viewer's first picture to the window's start.
    pub settle: Duration,
    /// The measuring window.
    pub window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream: Stream {
                width: 640,
                height: 480,
                fps: 30,
                bitrate_kbps: 1000,
                keyframe_interval_ms: 2000,
            },
            counts: vec![0, 1, 10, 20, 50],
            settle: Duration::from_secs(3),
            window: Duration::from_secs(10),
        }
    }
}

/// One server with some viewers, over one window.
#[derive(Debug, Clone, Default)]
pub struct Point {
    /// Viewers asked for.
    pub viewers: usize,
    /// The server's CPU, % of one core.
    pub cpu_percent: f64,
    /// The server's VmRSS at the window's end.
    pub rss_mb: f64,
    /// All cores together, % busy (100 = every core).
    pub machine_percent: f64,
    /// The crowd process's CPU, % of one core.
    pub crowd_percent: f64,
    /// What feeds the server from outside its process (Janus: onair-pattern + ffmpeg).
    pub feed_percent: Option<f64>,
    /// The window's length as the crowd measured it.
    pub seconds: f64,
    /// Pictures each viewer received in the window: fewest, most.
    pub pictures: (u64, u64),
    /// Video payload each viewer received, kb/s: least, most.
    pub kbps: (f64, f64),
    /// Viewers that failed to join, or whose connection ended during the window.
    pub lost: usize,
    /// The crowd's own lines, kept in the JSON.
    pub crowd: Value,
}

/// Runs both sides and prints the table; writes it as JSON under `target/bench/`.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    println!(
        "fan-out: {}x{} at {} fps, H.264 {} kb/s, key frame every {} ms, video only, loopback; \
         a {} s window {} s after every viewer's first picture",
        settings.stream.width,
        settings.stream.height,
        settings.stream.fps,
        settings.stream.bitrate_kbps,
        settings.stream.keyframe_interval_ms,
        settings.window.as_secs(),
        settings.settle.as_secs(),
    );
    let onair = measure_onaird(settings)?;
    let janus = measure_janus(settings)?;
    print_table(settings, &onair, &janus);
    let path = write_json(settings, &onair, &janus)?;
    println!("fan-out figures written to {}", path.display());
    Ok(())
}

/// onaird (release build) at every count.
fn measure_onaird(settings: &Settings) -> anyhow::Result<Vec<Point>> {
    let s = settings.stream;
    let daemon = Daemon::start(&format!(
        "[video]\nsource = \"test\"\nwidth = {}\nheight = {}\nfps = {}\nbitrate_kbps = {}\n\
         keyframe_interval_ms = {}\n[audio]\nenabled = false\n",
        s.width, s.height, s.fps, s.bitrate_kbps, s.keyframe_interval_ms
    ))?;
    let whep = format!("{}/whep", daemon.base_url);
    let crowd = |viewers: usize| {
        let mut command = Command::new(built("onair-crowd", "ONAIR_CROWD_BIN"));
        command.args(["--viewers", &viewers.to_string(), "--whep", &whep]);
        command
    };
    let mut points = Vec::new();
    for &viewers in &settings.counts {
        let point = measure_point(settings, viewers, daemon.pid(), &[], &crowd)
            .with_context(|| format!("onaird with {viewers} viewers"))?;
        print_point("onaird", &point);
        points.push(point);
    }
    daemon.stop()?;
    Ok(points)
}

/// Janus (and its feed) at every count.
fn measure_janus(settings: &Settings) -> anyhow::Result<Vec<Point>> {
    let mut peer = JanusPeer::start(settings.stream)?;
    let mut points = Vec::new();
    for &viewers in &settings.counts {
        let point = measure_point(
            settings,
            viewers,
            peer.janus_pid(),
            &peer.feed_pids(),
            &|n| peer.crowd(n),
        )
        .with_context(|| format!("Janus with {viewers} viewers"))?;
        peer.check_running()?;
        print_point("Janus", &point);
        points.push(point);
    }
    Ok(points)
}

/// `viewers` join (a crowd process made by `crowd`), settle, and the server `pid` is
/// measured over the window; `feed` are processes that feed it, measured apart.
fn measure_point(
    settings: &Settings,
    viewers: usize,
    pid: u32,
    feed: &[u32],
    crowd: &dyn Fn(usize) -> Command,
) -> anyhow::Result<Point> {
    let mut audience = match viewers {
        0 => None,
        n => Some(CrowdProcess::start(crowd(n))?.0),
    };
    std::thread::sleep(settings.settle);
    if let Some(audience) = audience.as_mut() {
        audience.mark()?;
    }
    let crowd_pid = audience.as_ref().map(CrowdProcess::pid);
    let before = Marks::read(pid, crowd_pid, feed)?;
    std::thread::sleep(settings.window);
    let after = Marks::read(pid, crowd_pid, feed)?;
    let rss = rss_mb(pid)?;
    let report = match audience {
        Some(audience) => audience.stop()?,
        None => json!({ "seconds": settings.window.as_secs_f64(), "viewers": [] }),
    };
    let mut point = received(viewers, &report);
    point.cpu_percent = after.server.percent_since(&before.server);
    point.rss_mb = rss;
    point.machine_percent = after.machine.percent_since(&before.machine);
    point.crowd_percent = match (after.crowd, before.crowd) {
        (Some(a), Some(b)) => a.percent_since(&b),
        _ => 0.0,
    };
    point.feed_percent = (!feed.is_empty()).then(|| {
        after
            .feed
            .iter()
            .zip(&before.feed)
            .map(|(a, b)| a.percent_since(b))
            .sum()
    });
    point.crowd = report;
    Ok(point)
}

/// CPU counters of everything measured, at one instant.
struct Marks {
    server: CpuMark,
    machine: MachineMark,
    crowd: Option<CpuMark>,
    feed: Vec<CpuMark>,
}

impl Marks {
    fn read(server: u32, crowd: Option<u32>, feed: &[u32]) -> anyhow::Result<Marks> {
        Ok(Marks {
            server: CpuMark::read(server)?,
            machine: MachineMark::read()?,
            crowd: crowd.map(CpuMark::read).transpose()?,
            feed: feed
                .iter()
                .map(|&pid| CpuMark::read(pid))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// What the crowd's report says the viewers received.
fn received(viewers: usize, report: &Value) -> Point {
    let seconds = report["seconds"].as_f64().unwrap_or(0.0).max(0.001);
    let each: Vec<&Value> = report["viewers"].as_array().into_iter().flatten().collect();
    let pictures: Vec<u64> = each.iter().filter_map(|v| v["pictures"].as_u64()).collect();
    let kbps: Vec<f64> = each
        .iter()
        .filter_map(|v| v["bytes"].as_f64())
        .map(|bytes| bytes * 8.0 / 1000.0 / seconds)
        .collect();
    let ended = each.iter().filter(|v| v["ended"] == true).count();
    Point {
        viewers,
        seconds,
        pictures: (
            pictures.iter().copied().min().unwrap_or(0),
            pictures.iter().copied().max().unwrap_or(0),
        ),
        kbps: (
            kbps.iter().copied().reduce(f64::min).unwrap_or(0.0),
            kbps.iter().copied().reduce(f64::max).unwrap_or(0.0),
        ),
        lost: viewers.saturating_sub(each.len()) + ended,
        ..Point::default()
    }
}

fn print_point(server: &str, p: &Point) {
    let received = if p.viewers == 0 {
        String::new()
    } else {
        format!(
            "; each viewer received {}–{} pictures ({:.0}–{:.0} kb/s) in {:.1} s{}",
            p.pictures.0,
            p.pictures.1,
            p.kbps.0,
            p.kbps.1,
            p.seconds,
            match p.lost {
                0 => String::new(),
                n => format!(", {n} LOST"),
            }
        )
    };
    println!(
        "  {server} with {:>2} viewers: CPU {:5.1} %, RSS {:5.1} MB (machine {:.0} % busy, \
         viewers' process {:.0} %{}){received}",
        p.viewers,
        p.cpu_percent,
        p.rss_mb,
        p.machine_percent,
        p.crowd_percent,
        p.feed_percent
            .map(|f| format!(", feed {f:.0} %"))
            .unwrap_or_default(),
    );
}

/// (CPU(N) − CPU(0)) / N, in % of one core per viewer; None at 0 viewers.
fn per_viewer(points: &[Point], p: &Point) -> Option<f64> {
    let idle = points.iter().find(|q| q.viewers == 0)?;
    (p.viewers > 0).then(|| (p.cpu_percent - idle.cpu_percent) / p.viewers as f64)
}

/// `a / b`, unless `b` is too small to divide by (under 0.05 % of a core: noise).
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b.abs() >= 0.05).then(|| a / b)
}

fn cpu_at(points: &[Point], viewers: usize) -> Option<f64> {
    points
        .iter()
        .find(|p| p.viewers == viewers)
        .map(|p| p.cpu_percent)
}

fn print_table(settings: &Settings, onair: &[Point], janus: &[Point]) {
    let cell =
        |x: Option<f64>, digits: usize| x.map_or("—".to_owned(), |x| format!("{x:.digits$}"));
    println!(
        "\nfan-out (CPU in % of one core over {} s; onaird includes its encoder, Janus does not: \
         its feed is another process)",
        settings.window.as_secs()
    );
    println!(
        "{:>7} | {:>10} {:>10} {:>8} | {:>9} {:>10} {:>8} | {:>9} {:>11} | pictures/viewer (onaird; Janus)",
        "viewers",
        "onaird CPU",
        "+/viewer",
        "RSS MB",
        "Janus CPU",
        "+/viewer",
        "RSS MB",
        "CPU ratio",
        "+/v ratio"
    );
    for (o, j) in onair.iter().zip(janus) {
        let (po, pj) = (per_viewer(onair, o), per_viewer(janus, j));
        println!(
            "{:>7} | {:>10.1} {:>10} {:>8.1} | {:>9.1} {:>10} {:>8.1} | {:>9} {:>11} | {}",
            o.viewers,
            o.cpu_percent,
            cell(po, 2),
            o.rss_mb,
            j.cpu_percent,
            cell(pj, 2),
            j.rss_mb,
            cell(ratio(Some(o.cpu_percent), Some(j.cpu_percent)), 2),
            cell(ratio(po, pj), 2),
            if o.viewers == 0 {
                "—".to_owned()
            } else {
                format!(
                    "{}–{}; {}–{} of {:.0}",
                    o.pictures.0,
                    o.pictures.1,
                    j.pictures.0,
                    j.pictures.1,
                    f64::from(settings.stream.fps) * settings.window.as_secs_f64()
                )
            }
        );
    }
    if let (Some(one), Some(twenty)) = (cpu_at(onair, 1), cpu_at(onair, 20)) {
        println!(
            "onaird CPU with 20 viewers / with 1: {:.2} (target ≤ 2: {})",
            twenty / one,
            if twenty <= 2.0 * one {
                "met"
            } else {
                "not met"
            }
        );
    }
}

fn point_json(p: &Point, points: &[Point]) -> Value {
    json!({
        "viewers": p.viewers,
        "cpu_percent": p.cpu_percent,
        "cpu_percent_per_viewer": per_viewer(points, p),
        "rss_mb": p.rss_mb,
        "machine_busy_percent": p.machine_percent,
        "viewers_process_cpu_percent": p.crowd_percent,
        "feed_cpu_percent": p.feed_percent,
        "window_seconds": p.seconds,
        "pictures_per_viewer": [p.pictures.0, p.pictures.1],
        "kbps_per_viewer": [p.kbps.0, p.kbps.1],
        "viewers_lost": p.lost,
        "crowd_report": p.crowd,
    })
}

/// Writes `target/bench/fanout-YYYYMMDD-HHMMSSZ.json`; returns its path.
fn write_json(settings: &Settings, onair: &[Point], janus: &[Point]) -> anyhow::Result<PathBuf> {
    let s = settings.stream;
    let ratios: Vec<Value> = onair
        .iter()
        .zip(janus)
        .map(|(o, j)| {
            json!({
                "viewers": o.viewers,
                "cpu": ratio(Some(o.cpu_percent), Some(j.cpu_percent)),
                "cpu_per_viewer": ratio(per_viewer(onair, o), per_viewer(janus, j)),
            })
        })
        .collect();
    let figures = json!({
        "benchmark": "fanout",
        "stream": {
            "width": s.width, "height": s.height, "fps": s.fps,
            "bitrate_kbps": s.bitrate_kbps, "keyframe_interval_ms": s.keyframe_interval_ms,
            "audio": false,
        },
        "settle_seconds": settings.settle.as_secs_f64(),
        "window_seconds": settings.window.as_secs_f64(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "onaird": onair.iter().map(|p| point_json(p, onair)).collect::<Vec<_>>(),
        "janus": janus.iter().map(|p| point_json(p, janus)).collect::<Vec<_>>(),
        "ratio_onair_over_janus": ratios,
        "onaird_cpu_20_over_1": ratio(cpu_at(onair, 20), cpu_at(onair, 1)),
    });
    let path = super::output_path("fanout")?;
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&figures)?)?;
    Ok(path)
}
