//! A viewer on a bad link: headless Chromium (tests/browser/latency.mjs) watches onaird's
//! default stream (1280x720 at 30 fps, 2000 kb/s) through a bottleneck of its own
//! (`crate::link`: a UDP relay with a rate and a 400 ms drop-tail queue), and reports what it
//! could play (frames per second, glass-to-glass p50/p95, pictures missing) while
//! `/api/status` shows onaird's estimate of its link and the layer it is on.
//!
//! Before that, what the second layer costs: onaird's CPU over a window with one viewer on
//! the top layer, then over a window with a second viewer behind 600 kb/s, on the low layer
//! (both encoded). Figures only.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::fanout::procfs::CpuMark;
use super::latency::{run_json, tests_dir};
use crate::daemon::{Daemon, OPERATOR, get, operator_access, operator_status};
use crate::link::{Link, Shape};
use crate::viewer::{Network, Via, Viewer, Watch};

/// onaird's CPU (% of one core) over `window`.
async fn cpu_over(pid: u32, window: Duration) -> anyhow::Result<f64> {
    let before = CpuMark::read(pid)?;
    tokio::time::sleep(window).await;
    Ok(CpuMark::read(pid)?.percent_since(&before))
}

/// CPU with one viewer on the top layer, then with another on the low layer too.
async fn layer_cost(daemon: &Daemon, port: u16) -> anyhow::Result<(f64, f64)> {
    let whep = format!("{}/whep", daemon.base_url);
    let counting = Watch {
        decode: false,
        ..Watch::decoding(usize::MAX, Duration::from_secs(600))
    };
    let top = Viewer::join(Via::Whep(whep.clone()), counting).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let one = cpu_over(daemon.pid(), Duration::from_secs(10)).await?;
    let link = Link::start(([127, 0, 0, 1], port).into(), Shape::kbps(600)).await?;
    let low = Viewer::join_over(Via::Whep(whep), counting, Network::Link(link.addr())).await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let both = cpu_over(daemon.pid(), Duration::from_secs(10)).await?;
    let parsed = operator_status(&daemon.base_url)?;
    let layers: Vec<&Value> = parsed["peers"]
        .as_array()
        .map(|peers| peers.iter().map(|p| &p["layer"]).collect())
        .unwrap_or_default();
    println!(
        "  CPU: {one:.1} % of a core with one viewer on the top layer, {both:.1} % with another \
         behind 600 kb/s (layers now {layers:?}): {:.2} ×",
        both / one
    );
    let _ = low.leave().await;
    let _ = top.leave().await;
    Ok((one, both))
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The bottleneck, kbit/s.
    pub kbps: u64,
    /// Seconds of playing (after a 2 s warm-up).
    pub seconds: u32,
}

/// A port number free right now on 127.0.0.1 for both UDP and TCP.
fn free_port() -> u16 {
    loop {
        let Ok(udp) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", addr.port())).is_ok() {
            return addr.port();
        }
    }
}

/// Runs the measurement and prints it; returns the JSON it also writes.
pub async fn run(settings: Settings) -> anyhow::Result<Value> {
    let port = free_port();
    let daemon = Daemon::start(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = {port}\n{}",
        operator_access()
    ))?;
    println!(
        "bad link: onaird's default stream (1280x720 at 30 fps, 2000 kb/s, low layer 640x360 \
         at 400 kb/s)"
    );
    let (one, both) = layer_cost(&daemon, port).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let link = Link::start(([127, 0, 0, 1], port).into(), Shape::kbps(settings.kbps)).await?;
    let whep = format!("{}/whep", daemon.base_url);
    println!(
        "  Chromium through {} kb/s with a 400 ms queue; {} s after a 2 s warm-up",
        settings.kbps, settings.seconds
    );
    let mut command = Command::new("node");
    command
        .arg(tests_dir().join("browser/latency.mjs"))
        .args(["--whep", &whep, "--width", "1280", "--height", "720"])
        .args(["--seconds", &settings.seconds.to_string(), "--joins", "0"])
        .args(["--relay", &link.addr().to_string()]);
    let budget = Duration::from_secs(u64::from(settings.seconds) + 60);
    let chromium = tokio::task::spawn_blocking(move || run_json(command, budget));
    // The estimate as the viewer plays, every second.
    let status = format!("{}/api/status?token={OPERATOR}", daemon.base_url);
    let mut estimates = Vec::new();
    let mut layers = Vec::new();
    while !chromium.is_finished() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = status.clone();
        let body = tokio::task::spawn_blocking(move || get(&status)).await??.1;
        let parsed: Value = serde_json::from_str(&body).context("/api/status")?;
        if let Some(kbps) = parsed
            .pointer("/peers/0/estimate_kbps")
            .and_then(Value::as_f64)
        {
            estimates.push(kbps);
        }
        if let Some(layer) = parsed.pointer("/peers/0/layer").and_then(Value::as_u64) {
            layers.push(layer);
        }
    }
    let chromium = chromium.await??;
    let glass = &chromium["glass"];
    let counters = link.counters();
    let (delivered, dropped) = (
        counters
            .delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "  Chromium: {} fps presented, {} stamps read, glass-to-glass p50/p95 {}/{} ms, {} \
         pictures missing (at most {} in a row)",
        glass["fps"],
        glass["read"],
        glass["display"]["p50"],
        glass["display"]["p95"],
        glass["sequence"]["missing"],
        glass["sequence"]["largest"]
    );
    println!(
        "  link: {delivered} packets delivered, {dropped} dropped; onaird's estimate each \
         second (kb/s): {estimates:?}; Chromium's layer each second: {layers:?}"
    );
    let out = json!({
        "kbps": settings.kbps,
        "seconds": settings.seconds,
        "chromium": chromium,
        "link": { "delivered": delivered, "dropped": dropped },
        "estimates_kbps": estimates,
        "layers": layers,
        "cpu": { "top_only": one, "both_layers": both },
    });
    let path = super::output_path("badlink")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&out)?)?;
    println!("bad-link figures written to {}", path.display());
    daemon.stop()?;
    Ok(out)
}
