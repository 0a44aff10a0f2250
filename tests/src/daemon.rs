//! `onaird` as a child process on a free port.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

/// The `onaird` binary: `$ONAIRD_BIN`, else the one cargo built next to the tests.
pub fn binary() -> PathBuf {
    built("onaird", "ONAIRD_BIN")
}

/// Binary `name` of this workspace: `$env_var`, else the one cargo built next to the tests.
pub fn built(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return path.into();
    }
    // A test: target/<profile>/deps/e2e-xxxx → target/<profile>/<name>; a binary of this
    // crate (onair-bench): target/<profile>/onair-bench → target/<profile>/<name>.
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    dir.join(name)
}

/// Starts `bin args…` with its output collected line by line, and waits (20 s at most)
/// until it logs "listening on URL". Returns the child, the URL and the log lines.
pub fn spawn(
    bin: &std::path::Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<(Child, String, mpsc::Receiver<String>)> {
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --workspace)",
            bin.display()
        );
    }
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(bin)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("ONAIR_TEST_LOG").unwrap_or_else(|_| "info,webrtc=warn,rtc=warn".into()),
        )
        .env("NO_COLOR", "1")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let (tx, rx) = mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if std::env::var_os("ONAIR_TEST_VERBOSE").is_some() {
                    eprintln!("{name}| {line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches('/')
                        .to_owned();
                    return Ok((child, url, rx));
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "{name} did not report its address; it printed:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

/// A running daemon; stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Child,
    /// e.g. `http://127.0.0.1:41234`
    pub base_url: String,
    /// Log lines the daemon printed (stdout and stderr), as they arrive.
    pub log: mpsc::Receiver<String>,
    _config: tempfile_path::TempConfig,
}

mod tempfile_path {
    use std::path::PathBuf;

    /// A config file that is removed when dropped.
    pub struct TempConfig(pub PathBuf);

    impl Drop for TempConfig {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Config every test starts from: loopback only, ephemeral HTTP port.
pub const LOOPBACK: &str = r#"
[http]
listen = "127.0.0.1:0"

[webrtc]
bind_ips = ["127.0.0.1"]
port = 0
"#;

impl Daemon {
    /// Starts `onaird --config <toml>` (with [`LOOPBACK`] prepended unless `toml` has its own
    /// `[http]`), and waits until it says where it listens.
    pub fn start(toml: &str) -> anyhow::Result<Daemon> {
        Self::start_with_env(toml, &[])
    }

    /// [`Daemon::start`] with extra environment variables.
    pub fn start_with_env(toml: &str, envs: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<Daemon> {
        let bin = binary();
        let text = if toml.contains("[http]") {
            toml.to_owned()
        } else {
            format!("{LOOPBACK}\n{toml}")
        };
        let path = std::env::temp_dir().join(format!(
            "onair-test-{}-{}.toml",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, text)?;
        let config = tempfile_path::TempConfig(path.clone());
        let (child, base_url, log) = spawn(&bin, &["--config".as_ref(), path.as_os_str()], envs)?;
        let daemon = Daemon {
            child,
            base_url,
            log,
            _config: config,
        };
        daemon.wait_healthy()?;
        Ok(daemon)
    }

    /// Waits until `/healthz` answers 200 (frames are being encoded), at most 20 s: tests
    /// start from a daemon that streams, however loaded the machine is.
    fn wait_healthy(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.base_url);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match get(&url) {
                Ok((200, _)) => return Ok(()),
                other if std::time::Instant::now() > deadline => {
                    bail!("onaird never became healthy: last answer {other:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        terminate(&mut self.child)
    }

    /// Sends SIGTERM, waits for the exit status, and returns it with the log lines not read
    /// yet (all of them, up to the exit).
    pub fn stop_with_log(mut self) -> anyhow::Result<(ExitStatus, Vec<String>)> {
        let status = terminate(&mut self.child)?;
        let mut lines = Vec::new();
        // The readers end when the process's pipes close, right after the exit.
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(2)) {
            lines.push(line);
        }
        Ok((status, lines))
    }

    /// Process id, for CPU and memory measurements.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}

/// Sends SIGTERM and waits (5 s at most, then SIGKILL) for the exit status.
pub fn terminate(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..100 {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    bail!("process {} did not exit within 5 s of SIGTERM", child.id())
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id())
}

/// `GET url` → (status, body).
pub fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let agent = agent();
    let mut response = agent.get(url).call()?;
    let status = response.status().as_u16();
    Ok((
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    ))
}

/// An HTTP client that reports 4xx/5xx as responses, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}
