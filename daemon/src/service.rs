//! Life under systemd (`Type=notify`): `READY=1` once the camera is live, `STATUS=` lines, and
//! watchdog pings only while the capture thread is alive.
//!
//! Readiness means HTTP listens (the caller starts this after binding), a first picture was
//! encoded, and — with a `signaling.url` — the channel is registered there. The watchdog
//! (`WatchdogSec=` in the unit) is pinged at a quarter of its period while the video thread's
//! heartbeat moves; the heartbeat moves with every frame and every attempt to reopen a missing
//! camera, so a camera that is away does not get the daemon restarted, but a stuck pipeline
//! (or a stopped process) does. Outside systemd (no `NOTIFY_SOCKET`) all of this is a no-op.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{debug, info};

use crate::lifecycle::Lifecycle;
use crate::media::MediaStats;
use crate::webrtc::Sessions;

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Whether the daemon runs under a systemd that listens for notifications.
pub fn supervised() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Starts the notification task (only under systemd), until `lifecycle`'s stop.
pub fn start(
    stats: Arc<MediaStats>,
    sessions: Sessions,
    registered: Arc<AtomicBool>,
    needs_registration: bool,
    lifecycle: &Lifecycle,
) {
    if !supervised() {
        return;
    }
    let watchdog = watchdog_period().map(|period| period / 4);
    lifecycle.spawn(async move {
        let tick = watchdog.unwrap_or(STATUS_EVERY).min(Duration::from_secs(1));
        let mut ready = false;
        let mut last_beat = stats.heartbeat();
        let mut last_ping = Instant::now();
        let mut last_status = Instant::now() - STATUS_EVERY;
        loop {
            tokio::time::sleep(tick).await;
            let now = Instant::now();
            if !ready
                && stats.since_last_frame(now).is_some()
                && (!needs_registration || registered.load(Ordering::Relaxed))
            {
                ready = true;
                let _ = sd_notify::notify(false, &[NotifyState::Ready]);
                info!("ready: notified systemd");
            }
            if let Some(period) = watchdog
                && now.duration_since(last_ping) >= period
            {
                let beat = stats.heartbeat();
                if beat != last_beat {
                    last_beat = beat;
                    last_ping = now;
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                } else {
                    debug!("video thread did not move: no watchdog ping");
                }
            }
            if now.duration_since(last_status) >= STATUS_EVERY {
                last_status = now;
                let snapshot = stats.snapshot(now);
                let viewers = sessions.viewers();
                let status = format!(
                    "{viewers} viewer{}, {:.0} fps, {:.0} kb/s{}",
                    if viewers == 1 { "" } else { "s" },
                    snapshot.fps,
                    snapshot.bitrate_kbps,
                    if needs_registration && !registered.load(Ordering::Relaxed) {
                        ", not registered with the signalling service"
                    } else {
                        ""
                    }
                );
                let _ = sd_notify::notify(false, &[NotifyState::Status(&status)]);
            }
        }
    });
}

/// `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process (sd_watchdog_enabled(3):
/// systemd sets both; a test or a wrapper may set only the period).
fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID")
        .ok()
        .map(|pid| pid.parse::<u32>())
    {
        Some(Ok(pid)) if pid != std::process::id() => None,
        _ => (usec > 0).then(|| Duration::from_micros(usec)),
    }
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    if supervised() {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    }
}
