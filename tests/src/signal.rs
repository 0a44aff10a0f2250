//! `onair-signal` as a child process, on a port it picks and keeps across restarts.

use anyhow::Context as _;
use std::sync::mpsc;

use crate::daemon::{Process, built, spawn};

/// A running onair-signal; stopped with SIGTERM when dropped.
pub struct SignalServer {
    process: Process,
    /// e.g. `http://127.0.0.1:41234`
    pub base_url: String,
    /// Log lines, as they arrive.
    pub log: mpsc::Receiver<String>,
    port: u16,
    config: std::path::PathBuf,
}

impl SignalServer {
    /// Starts onair-signal with `toml` as its config on a loopback port it picks itself.
    pub fn start(toml: &str) -> anyhow::Result<SignalServer> {
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let config = std::env::temp_dir().join(format!(
            "onair-signal-test-{}-{}.toml",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&config, toml)?;
        Self::start_on(0, config)
    }

    /// Starts it on `port` (0: any free one, which it reports).
    fn start_on(port: u16, config: std::path::PathBuf) -> anyhow::Result<SignalServer> {
        let listen = format!("127.0.0.1:{port}");
        let bin = built("onair-signal", "ONAIR_SIGNAL_BIN");
        let spawned = spawn(
            &bin,
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--listen".as_ref(),
                listen.as_ref(),
            ],
            &[],
        )?;
        let port = spawned
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in onair-signal's URL {}", spawned.url))?;
        Ok(SignalServer {
            process: spawned.process,
            base_url: spawned.url,
            log: spawned.log,
            port,
            config,
        })
    }

    /// The WebSocket URL cameras and viewers connect to.
    pub fn ws_url(&self) -> String {
        let url = match self.base_url.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => self.base_url.replacen("http://", "ws://", 1),
        };
        format!("{url}/ws")
    }

    /// Process id (to freeze it with SIGSTOP in tests).
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Kills the service (SIGKILL: nothing is closed cleanly) and starts it again on the same
    /// port with the same config.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.process.child.kill()?;
        self.process.child.wait()?;
        let fresh = Self::start_on(self.port, self.config.clone())?;
        let old = std::mem::replace(self, fresh);
        // The old value's child has exited and its config is this one's: nothing to drop.
        std::mem::forget(old);
        Ok(())
    }
}

impl Drop for SignalServer {
    fn drop(&mut self) {
        let _ = self.process.stop();
        let _ = std::fs::remove_file(&self.config);
    }
}
