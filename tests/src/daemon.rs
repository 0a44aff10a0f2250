//! `onaird` as a child process on a free port.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
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

/// The last lines a process printed, kept whatever the test reads from its log, so that a
/// failing test can show them.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

/// How long a process may take to say where it listens, on a loaded machine.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM before it is killed (a debug build on a
/// loaded machine drains HTTP, closes its viewers and finishes a recording).
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// How many lines a [`Tail`] keeps.
const TAIL_LINES: usize = 300;

impl Tail {
    fn push(&self, line: &str) {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    /// The kept lines.
    pub fn lines(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect()
    }

    /// The kept lines, one a line.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Prints the kept lines to the test's output when the test is failing (called from
    /// `Drop`): a failure then shows what the process said, not only what the test saw.
    pub fn print_if_panicking(&self, what: &str) {
        if !std::thread::panicking() {
            return;
        }
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!("---- the last {} lines of {what} ----", lines.len());
        for line in lines.iter() {
            eprintln!("{what}| {line}");
        }
        eprintln!("---- end of {what} ----");
    }
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped, printing its last
/// log lines first if the test is failing: no test leaves one running, whatever fails.
pub struct Process {
    /// The process.
    pub child: Child,
    /// Its last log lines.
    pub tail: Tail,
    /// What it is, for those lines ("onaird 1234").
    what: String,
}

impl Process {
    /// Process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status ([`terminate`]).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        terminate(&mut self.child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
        self.tail.print_if_panicking(&self.what);
    }
}

/// A process started by [`spawn`].
pub struct Spawned {
    /// The process (stopped when dropped).
    pub process: Process,
    /// The URL it said it listens on.
    pub url: String,
    /// The media port it reported before listening ("… media on port N …"), if any.
    pub media_port: Option<u16>,
    /// Its log lines, as they arrive.
    pub log: mpsc::Receiver<String>,
}

/// Starts `bin args…` with its output collected line by line, and waits ([`START_WITHIN`]
/// at most) until it logs "listening on URL".
pub fn spawn(
    bin: &std::path::Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &std::ffi::OsStr)],
) -> anyhow::Result<Spawned> {
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
    let tail = Tail::default();
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
        let tail = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if std::env::var_os("ONAIR_TEST_VERBOSE").is_some() {
                    eprintln!("{name}| {line}");
                }
                tail.push(&line);
                // The test may have stopped reading: the tail still keeps the lines.
                let _ = tx.send(line);
            }
        });
    }
    // The log channel keeps every line for the test (one logged before "listening on", such
    // as a registration, included); the address is looked for in the tail.
    let deadline = std::time::Instant::now() + START_WITHIN;
    loop {
        let lines = tail.lines();
        if let Some(rest) = lines.iter().find_map(|l| l.split("listening on ").nth(1)) {
            let url = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned();
            let media_port = lines.iter().find_map(|l| media_port(l));
            let what = format!("{name} {}", child.id());
            return Ok(Spawned {
                process: Process { child, tail, what },
                url,
                media_port,
                log: rx,
            });
        }
        let exited = child.try_wait()?;
        if exited.is_some() || std::time::Instant::now() > deadline {
            let _ = child.kill();
            // What it printed last, once its pipes are drained.
            std::thread::sleep(Duration::from_millis(200));
            bail!(
                "{name} did not report its address ({}); it printed:\n{}",
                exited.map_or(format!("not within {START_WITHIN:?}"), |s| format!(
                    "it exited: {s}"
                )),
                tail.text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The port in "… media on port N …" (onaird says so as it binds `webrtc.port`).
fn media_port(line: &str) -> Option<u16> {
    let rest = line.split("media on port ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A running daemon; stopped with SIGTERM when dropped (printing its last log lines if the
/// test is failing: [`Process`]).
pub struct Daemon {
    process: Process,
    /// e.g. `http://127.0.0.1:41234`
    pub base_url: String,
    /// The port of every viewer's media (UDP and ICE-TCP), as onaird reported it.
    pub media_port: u16,
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
        let spawned = spawn(&bin, &["--config".as_ref(), path.as_os_str()], envs)?;
        let daemon = Daemon {
            media_port: spawned
                .media_port
                .context("onaird's \"listening on\" line names no media port")?,
            process: spawned.process,
            base_url: spawned.url,
            log: spawned.log,
            _config: config,
        };
        daemon.wait_healthy()?;
        Ok(daemon)
    }

    /// Waits until `/healthz` answers 200 (frames are being encoded), at most 30 s: tests
    /// start from a daemon that streams, however loaded the machine is.
    fn wait_healthy(&self) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.base_url);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match get(&url) {
                Ok((200, _)) => return Ok(()),
                other if std::time::Instant::now() > deadline => {
                    bail!(
                        "onaird never became healthy within 30 s: last answer {other:?}; it printed:\n{}",
                        self.process.tail.text()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        self.process.stop()
    }

    /// Sends SIGTERM, waits for the exit status, and returns it with the log lines not read
    /// yet (all of them, up to the exit).
    pub fn stop_with_log(mut self) -> anyhow::Result<(ExitStatus, Vec<String>)> {
        let status = self.process.stop()?;
        let mut lines = Vec::new();
        // The readers end when the process's pipes close, right after the exit.
        while let Ok(line) = self.log.recv_timeout(Duration::from_secs(2)) {
            lines.push(line);
        }
        Ok((status, lines))
    }

    /// Process id, for CPU and memory measurements.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

/// Sends SIGTERM and waits ([`STOP_WITHIN`] at most, then SIGKILL) for the exit status.
pub fn terminate(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + STOP_WITHIN;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    let _ = child.wait();
    bail!(
        "process {} did not exit within {STOP_WITHIN:?} of SIGTERM",
        child.id()
    )
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id())
}

/// The operator token of tests that read or do what only operators may.
pub const OPERATOR: &str = "operator-token-0123456789";

/// `[access]` with [`OPERATOR`] as its operator token (anyone may still watch).
pub fn operator_access() -> String {
    format!("[access]\noperator_token = \"{OPERATOR}\"\n")
}

/// `/api/status` as an operator sees it (the daemon has [`operator_access`]), with the
/// sessions' `peers`.
pub fn operator_status(base_url: &str) -> anyhow::Result<serde_json::Value> {
    let (code, body) = get(&format!("{base_url}/api/status?token={OPERATOR}"))?;
    anyhow::ensure!(
        code == 200,
        "GET /api/status as the operator: {code} {body}"
    );
    Ok(serde_json::from_str(&body)?)
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
