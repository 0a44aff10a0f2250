//! Prints onair's performance figures (docs/PERFORMANCE.md). Figures, not pass/fail.
//!
//! `./dev bench` builds release binaries and runs this. It measures:
//! - encode time per frame (the daemon's own encoder setup) at 1280x720 and 640x480;
//! - daemon CPU and RSS idle (from /proc/PID/stat and /proc/PID/status);
//! - time from WHEP POST to the first decoded frame (median of 5 joins);
//! - then the `latency` and `fanout` sections below.
//!
//! `./dev bench latency [--seconds 20] [--joins 10]`: onaird beside an aiortc caster serving
//! the same stamped pattern: Chromium glass-to-glass p50/p95 and time to first frame (Chromium
//! and the aiortc viewer) at 640x480 and 1280x720 (tests/src/bench/latency.rs).
//!
//! `./dev bench fanout [--window 10] [--viewers 0,1,10,20,50]`: onaird's CPU and RSS by
//! viewer count beside Janus's streaming plugin forwarding the same stream
//! (tests/src/bench/fanout.rs).
//!
//! `./dev bench badlink [--kbps 1000] [--seconds 20]`: Chromium watches onaird's default
//! stream through a bottleneck of its own: frames per second, glass-to-glass, pictures
//! missing, and onaird's estimate of the link (tests/src/bench/badlink.rs).
//!
//! `./dev bench churn [--minutes 10]` is the soak: a viewer joins every second, decodes,
//! and leaves (one in three without DELETE), first for a minute to warm up, then for the
//! minutes asked; it prints what the daemon holds (RSS, descriptors, sockets, threads,
//! sessions) as it goes and once everyone has left.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use onair_hal::synthetic::TestPattern;
use onair_hal::{VideoFrame, VideoSource};
use onair_tests::bench::fanout::procfs::{CpuMark, rss_mb};
use onair_tests::bench::{badlink, fanout, latency};
use onair_tests::churn::{self, Plan};
use onair_tests::daemon::Daemon;
use onair_tests::viewer::{Watch, watch};
use onaird::media::h264::{H264Encoder, H264Settings};

fn encode_ms_per_frame(width: u32, height: u32, bitrate_kbps: u32) -> f64 {
    let fps = 30;
    let pattern = TestPattern::new(width, height, fps);
    let mut encoder = H264Encoder::new(H264Settings {
        width,
        height,
        fps,
        bitrate_kbps,
    })
    .expect("encoder");
    let mut frame = VideoFrame::new();
    let frames = 150u32;
    let mut total = Duration::ZERO;
    for i in 0..frames {
        pattern.render(u64::from(i), 0, &mut frame.data);
        let start = Instant::now();
        let _ = encoder
            .encode(
                &frame.data,
                i % 60 == 0,
                Duration::from_millis(u64::from(i) * 33),
            )
            .expect("encode");
        total += start.elapsed();
    }
    // The source is not read through `read_frame` here so that pacing does not count.
    let _ = pattern.format();
    total.as_secs_f64() * 1000.0 / f64::from(frames)
}

#[derive(Parser)]
#[command(about = "onair's performance figures (docs/PERFORMANCE.md)")]
struct Args {
    /// Without one: encode time, idle CPU and RSS, time to first frame, then `latency` and
    /// `fanout`.
    #[command(subcommand)]
    mode: Option<Mode>,
}

#[derive(Subcommand)]
enum Mode {
    /// Viewers join every second and leave; what the daemon holds before, during and after.
    Churn {
        /// How long viewers keep coming.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Every n-th viewer vanishes without DELETE (0: none).
        #[arg(long, default_value_t = 3)]
        vanish_every: usize,
    },
    /// onaird's CPU and RSS with 0, 1, 10, 20 and 50 viewers, beside Janus's streaming
    /// plugin forwarding the same stream (640x480 at 30 fps, 1000 kb/s).
    Fanout {
        /// The measuring window, in seconds.
        #[arg(long, default_value_t = 10)]
        window: u64,
        /// Viewer counts, comma-separated (0 is the server alone).
        #[arg(long, value_delimiter = ',', default_value = "0,1,10,20,50")]
        viewers: Vec<usize>,
    },
    /// Chromium watching the default stream through a bottleneck of its own.
    Badlink {
        /// The bottleneck, kbit/s.
        #[arg(long, default_value_t = 1000)]
        kbps: u64,
        /// Seconds of playing (after a 2 s warm-up).
        #[arg(long, default_value_t = 20)]
        seconds: u32,
    },
    /// Chromium glass-to-glass and time to first frame, onaird beside an aiortc caster.
    Latency {
        /// Seconds of glass-to-glass per server and size (after a 2 s warm-up).
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// Joins per viewer kind (Chromium, aiortc) for time to first frame.
        #[arg(long, default_value_t = 10)]
        joins: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().mode {
        None => {
            figures().await?;
            latency::run(latency::Settings {
                seconds: 20,
                joins: 10,
            })?;
            fanout::run(&fanout::Settings::default())
        }
        Some(Mode::Fanout { window, viewers }) => fanout::run(&fanout::Settings {
            counts: viewers,
            window: Duration::from_secs(window),
            ..fanout::Settings::default()
        }),
        Some(Mode::Badlink { kbps, seconds }) => badlink::run(badlink::Settings { kbps, seconds })
            .await
            .map(drop),
        Some(Mode::Latency { seconds, joins }) => {
            latency::run(latency::Settings { seconds, joins }).map(drop)
        }
        Some(Mode::Churn {
            minutes,
            vanish_every,
        }) => churn(Duration::from_secs(minutes * 60), vanish_every).await,
    }
}

/// Pictures each churning viewer decodes before it leaves (a second of video).
const CHURN_FRAMES: usize = 30;
/// How long the daemon may take to give everything back after the last viewer: vanished
/// viewers' sessions must time out first.
const CHURN_SETTLE: Duration = Duration::from_secs(120);

async fn churn(duration: Duration, vanish_every: usize) -> anyhow::Result<()> {
    let daemon = Daemon::start("")?;
    let (pid, url) = (daemon.pid(), daemon.base_url.clone());
    println!(
        "churn: onaird (default config: 1280x720 at 30 fps, loopback); a viewer joins every \
         second, decodes {CHURN_FRAMES} pictures and leaves{}: {WARM_UP:?} to warm up, then \
         {} min",
        match vanish_every {
            0 => String::new(),
            n => format!(" (one in {n} without DELETE)"),
        },
        duration.as_secs() / 60,
    );
    churn::one_viewer(format!("{url}/whep"), CHURN_FRAMES, false)
        .await
        .map_err(anyhow::Error::msg)?;
    let cold = churn::idle(pid, &url, Duration::from_secs(10)).await?;
    println!("cold start (after one viewer): {cold}");
    let plan = Plan {
        duration: WARM_UP,
        join_every: Duration::from_secs(1),
        vanish_every,
        frames: CHURN_FRAMES,
        sample_every: Duration::from_secs(60),
    };
    let (warm, warm_up) = churn_phase(pid, &url, plan, &cold).await?;
    println!("start (after the warm-up): {warm}");
    let (end, outcome) = churn_phase(pid, &url, Plan { duration, ..plan }, &warm).await?;
    println!("end: {end}");
    let failed = warm_up.failures.len() + outcome.failures.len();
    println!(
        "viewers: {} joined, {} vanished, {failed} failed",
        warm_up.joined + outcome.joined,
        warm_up.vanished + outcome.vanished,
    );
    let drift =
        |from: &churn::Held| (end.rss_kb as f64 - from.rss_kb as f64) * 100.0 / from.rss_kb as f64;
    println!(
        "RSS drift start → end: {:+.1} % (target ≤ 5 %); from the cold start: {:+.1} %",
        drift(&warm),
        drift(&cold)
    );
    println!(
        "back to the start (no session, fds/sockets/threads ≤ start): {}",
        if end.back_to(&warm) { "yes" } else { "NO" }
    );
    println!(
        "sessions ended, by reason: {:?}",
        churn::ended_by_reason(
            &daemon.log,
            warm_up.joined + outcome.joined + 1,
            Duration::from_secs(5)
        )
    );
    daemon.stop()?;
    Ok(())
}

/// The first minute of churn, before the baseline: the allocator keeps the high-water mark
/// of the busiest moment (freed memory is not given back to the system), so drift is growth
/// beyond that.
const WARM_UP: Duration = Duration::from_secs(60);

/// Runs `plan`, printing samples as they come, and waits until the daemon is back to
/// `baseline`; returns what it holds then and what happened.
async fn churn_phase(
    pid: u32,
    url: &str,
    plan: Plan,
    baseline: &churn::Held,
) -> anyhow::Result<(churn::Held, churn::Outcome)> {
    let outcome = churn::run(pid, url, plan, |at, held| {
        println!("  {:>2} min: {held}", at.as_secs() / 60);
    })
    .await?;
    for failure in &outcome.failures {
        println!("  failed: {failure}");
    }
    let (held, took) = churn::settle(pid, url, baseline, CHURN_SETTLE).await?;
    println!(
        "  {} viewers, peak {} sessions; {:.0} s after the last one left: {held}",
        outcome.joined,
        outcome.peak_sessions(),
        took.as_secs_f64()
    );
    Ok((held, outcome))
}

async fn figures() -> anyhow::Result<()> {
    println!(
        "onair benchmarks ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for (w, h, kbps) in [(1280, 720, 2000), (640, 480, 1000)] {
        println!(
            "encode {w}x{h} @ {kbps} kb/s: {:.2} ms/frame",
            encode_ms_per_frame(w, h, kbps)
        );
    }

    let daemon = Daemon::start("")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_before = CpuMark::read(daemon.pid())?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = CpuMark::read(daemon.pid())?.percent_since(&idle_before);
    println!(
        "daemon idle (720p30, 0 viewers): {:.2} CPU s over 10 s ({idle:.1} % of a core), RSS {:.1} MB",
        idle / 10.0,
        rss_mb(daemon.pid())?
    );

    let mut ttff = Vec::new();
    for _ in 0..5 {
        let report = watch(
            &format!("{}/whep", daemon.base_url),
            Watch::decoding(1, Duration::from_secs(10)),
        )
        .await?;
        if let Some(t) = report.time_to_first_frame {
            ttff.push(t.as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    ttff.sort_by(f64::total_cmp);
    println!(
        "WHEP POST → first decoded frame: median {:.0} ms (min {:.0}, max {:.0}, n={})",
        ttff.get(ttff.len() / 2).copied().unwrap_or(f64::NAN),
        ttff.first().copied().unwrap_or(f64::NAN),
        ttff.last().copied().unwrap_or(f64::NAN),
        ttff.len()
    );
    daemon.stop()?;
    Ok(())
}
