//! A viewer on a bad link: headless Chromium (tests/browser/latency.mjs) watches onaird's
//! default stream (1280x720 at 30 fps, 2000 kb/s) through a bottleneck of its own
//! (`crate::link`: a UDP relay with a rate and a 400 ms drop-tail queue), and reports what it
//! could play (frames per second, glass-to-glass p50/p95, pictures missing) while
//! `/api/status` shows onaird's estimate of its link. Figures only.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use super::latency::{run_json, tests_dir};
use crate::daemon::{Daemon, get};
use crate::link::{Link, Shape};

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
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = {port}\n"
    ))?;
    let link = Link::start(([127, 0, 0, 1], port).into(), Shape::kbps(settings.kbps)).await?;
    let whep = format!("{}/whep", daemon.base_url);
    println!(
        "bad link: onaird's default stream (1280x720 at 30 fps, 2000 kb/s) to Chromium through \
         {} kb/s with a 400 ms queue; {} s after a 2 s warm-up",
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
    let status = format!("{}/api/status", daemon.base_url);
    let mut estimates = Vec::new();
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
         second (kb/s): {estimates:?}"
    );
    let out = json!({
        "kbps": settings.kbps,
        "seconds": settings.seconds,
        "chromium": chromium,
        "link": { "delivered": delivered, "dropped": dropped },
        "estimates_kbps": estimates,
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
