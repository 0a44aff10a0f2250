//! `onair-signal` as a child process, on a port that stays the same across restarts.

use std::process::Child;
use std::sync::mpsc;

use crate::daemon::{built, spawn, terminate};

/// A running onair-signal; stopped with SIGTERM when dropped.
pub struct SignalServer {
    child: Child,
    /// e.g. `http://127.0.0.1:41234`
    pub base_url: String,
    /// Log lines, as they arrive.
    pub log: mpsc::Receiver<String>,
    port: u16,
    config: std::path::PathBuf,
}

impl SignalServer {
    /// Starts onair-signal with `toml` as its config on a free loopback port.
    pub fn start(toml: &str) -> anyhow::Result<SignalServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = std::env::temp_dir().join(format!(
            "onair-signal-test-{}-{port}.toml",
            std::process::id()
        ));
        std::fs::write(&config, toml)?;
        Self::start_on(port, config)
    }

    fn start_on(port: u16, config: std::path::PathBuf) -> anyhow::Result<SignalServer> {
        let listen = format!("127.0.0.1:{port}");
        let bin = built("onair-signal", "ONAIR_SIGNAL_BIN");
        let (child, base_url, log) = spawn(
            &bin,
            &[
                "--config".as_ref(),
                config.as_os_str(),
                "--listen".as_ref(),
                listen.as_ref(),
            ],
            &[],
        )?;
        Ok(SignalServer {
            child,
            base_url,
            log,
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
        self.child.id()
    }

    /// Kills the service (SIGKILL: nothing is closed cleanly) and starts it again on the same
    /// port with the same config.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        let fresh = Self::start_on(self.port, self.config.clone())?;
        let old = std::mem::replace(self, fresh);
        // The old value's child has exited and its config is this one's: nothing to drop.
        std::mem::forget(old);
        Ok(())
    }
}

impl Drop for SignalServer {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
        let _ = std::fs::remove_file(&self.config);
    }
}
