//! A real SFU for the WHIP client's tests: Janus 1.1.2 (Debian's `janus`) with its VideoRoom
//! plugin, behind the thin WHIP front `tests/whip/janus_whip.py`. onaird publishes to the
//! front (`POST /whip/<room>`), Janus does all the media, and viewers watch from Janus
//! (`tests/whip/sfu_viewers.py`, `tests/browser/sfu.mjs`), never from the camera.
//!
//! Everything runs in a network namespace of its own (see [`janus_peer`]): Janus gathers its
//! ICE candidates on [`ICE_ADDRESS`] only (never on loopback), so whatever talks to it,
//! onaird included, runs inside the namespace through [`Sfu::command`]. The front listens
//! on [`FRONT`] there, Janus's HTTP API on [`API`].
//!
//! Janus runs with `session_timeout = 0`, and the front sends a keepalive every 20 s anyway.
//! [`Sfu::kill_janus`] and [`Sfu::restart_janus`] stop and start Janus under the running
//! front (its rooms and sessions are then gone; the front creates the room again on the next
//! POST).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

pub use crate::bench::fanout::janus_peer::{API, ICE_ADDRESS};
use crate::bench::fanout::janus_peer::{
    Guard, Namespace, TempDir, start_janus, write_janus_configs,
};

/// The WHIP front's base URL, inside the namespace.
pub const FRONT: &str = "http://127.0.0.1:8090";
/// The VideoRoom room the front's `/state` and `/watch.html` default to.
pub const ROOM: u64 = 1234;
/// What Janus logs once the VideoRoom plugin is up.
const VIDEOROOM_READY: &str = "VideoRoom plugin initialized";

/// Janus (VideoRoom) and the WHIP front in their namespace; all stopped when dropped.
pub struct Sfu {
    // Dropped in this order: the front, Janus, the namespace, the files.
    front: Guard,
    janus: Option<Guard>,
    namespace: Namespace,
    dir: TempDir,
    token: String,
    python: PathBuf,
}

/// An HTTP response as `curl` saw it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Sfu {
    /// Starts Janus and the front (which wants `Authorization: Bearer <token>` on WHIP
    /// requests) in a new namespace; returns once both listen.
    pub fn start(token: &str) -> anyhow::Result<Sfu> {
        let python = crate::metrics::whep_python()?;
        // One directory per Sfu: tests of one process may run several at once.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = TempDir::new(&format!(
            "onair-sfu{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))?;
        write_janus_configs(dir.path(), "libjanus_videoroom.so")?;
        // The VideoRoom reads its config file if there is one; rooms are made by the front.
        fs::write(
            dir.path().join("janus.plugin.videoroom.jcfg"),
            "general: {\n}\n",
        )?;
        let namespace = Namespace::new()?;
        let janus = start_janus(&namespace, dir.path(), VIDEOROOM_READY)?;
        let front = start_front(&namespace, dir.path(), &python, token)?;
        Ok(Sfu {
            front,
            janus: Some(janus),
            namespace,
            dir,
            token: token.to_owned(),
            python,
        })
    }

    /// `program` to be run inside the namespace (onaird, a viewer, curl…).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.namespace.command(program)
    }

    /// The token the front wants.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The WHIP endpoint of `room`, for onaird: `http://10.200.0.1:8090/whip/<room>` (on
    /// [`ICE_ADDRESS`], so that [`Sfu::cut_network`] cuts it).
    pub fn whip_url(&self, room: u64) -> String {
        format!("http://{ICE_ADDRESS}:8090/whip/{room}")
    }

    /// An URL that answers 307 with `Location: /whip/<room>` (on [`ICE_ADDRESS`] too).
    pub fn redirect_url(&self, room: u64) -> String {
        format!("http://{ICE_ADDRESS}:8090/redirect/{room}")
    }

    /// An URL that answers `429` with `Retry-After: 3` the first time, then 307 to
    /// `/whip/<room>`.
    pub fn busy_url(&self, room: u64) -> String {
        format!("http://{ICE_ADDRESS}:8090/busy/{room}")
    }

    /// Moves the calling thread into the namespace: what it connects to, and the processes
    /// it starts (onaird), are then inside. Needs root (`setns`; a thread of a process with
    /// several cannot enter a user namespace, which an unprivileged namespace would need).
    pub fn enter(&self) -> anyhow::Result<()> {
        self.namespace.enter()
    }

    /// Cuts the network to and from [`ICE_ADDRESS`] (Janus's media and the front as onaird
    /// reaches them), as if the camera's uplink were gone: packets are refused (EACCES) by
    /// a routing rule ahead of the local table. The test's `curl` to the front on 127.0.0.1
    /// still gets through.
    pub fn cut_network(&self) -> anyhow::Result<()> {
        for rule in [
            "add pref 100 lookup local",
            "del pref 0",
            "add pref 10 prohibit to 10.200.0.1",
            "add pref 11 prohibit from 10.200.0.1",
        ] {
            self.ip_rule(rule)?;
        }
        Ok(())
    }

    /// Undoes [`Sfu::cut_network`].
    pub fn restore_network(&self) -> anyhow::Result<()> {
        for rule in ["del pref 10", "del pref 11"] {
            self.ip_rule(rule)?;
        }
        Ok(())
    }

    fn ip_rule(&self, rule: &str) -> anyhow::Result<()> {
        let status = self
            .command("ip")
            .arg("rule")
            .args(rule.split(' '))
            .status()
            .context("running ip (iproute2)")?;
        ensure!(status.success(), "ip rule {rule} failed in the namespace");
        Ok(())
    }

    /// The directory of the configs and logs (janus.log, front.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops Janus (SIGTERM, then SIGKILL); the front keeps running and answers 502.
    pub fn kill_janus(&mut self) {
        self.janus = None;
    }

    /// Stops Janus if it runs and starts it again (same configs; the old log is kept as
    /// janus.log.<n>). Rooms and sessions do not survive it.
    pub fn restart_janus(&mut self) -> anyhow::Result<()> {
        self.kill_janus();
        let log = self.dir().join("janus.log");
        if log.exists() {
            let n = (1..).find(|n| !self.dir().join(format!("janus.log.{n}")).exists());
            fs::rename(
                &log,
                self.dir().join(format!("janus.log.{}", n.unwrap_or(0))),
            )?;
        }
        self.janus = Some(start_janus(
            &self.namespace,
            self.dir.path(),
            VIDEOROOM_READY,
        )?);
        Ok(())
    }

    /// Fails (with the logs' tails) if the front or Janus has stopped (Janus only if it
    /// should run).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let logs = self.logs();
        self.front
            .check_running("janus_whip.py")
            .with_context(|| logs.clone())?;
        if let Some(janus) = &mut self.janus {
            janus.check_running("janus").with_context(|| logs)?;
        }
        Ok(())
    }

    /// The last lines of Janus's and the front's logs.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["janus.log", "front.log"] {
            let log = fs::read_to_string(self.dir().join(name)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            text += &format!("--- {name}:\n{}\n", tail.join("\n"));
        }
        text
    }

    /// An HTTP request to the front (`path` like `/whip/1234`), made with `curl` inside the
    /// namespace; redirects are not followed. `headers` are `("Name", "value")`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> anyhow::Result<Response> {
        let mut curl = self.command("curl");
        curl.args(["-sS", "-i", "-m", "15", "-X", method, "-H", "Expect:"]);
        for (name, value) in headers {
            curl.arg("-H").arg(format!("{name}: {value}"));
        }
        if body.is_some() {
            curl.args(["--data-binary", "@-"]);
        }
        curl.arg(format!("{FRONT}{path}"));
        let mut child = curl
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running curl in the namespace")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("curl's stdin")?;
            stdin.write_all(body.unwrap_or("").as_bytes())?;
        }
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        parse_response(&String::from_utf8_lossy(&out.stdout))
    }

    /// The front's `GET /state`: posts, created, deleted, unauthorized, publishers (Janus's
    /// participants of [`ROOM`] that publish)…
    pub fn state(&self) -> anyhow::Result<Value> {
        let response = self.request("GET", "/state", &[], None)?;
        ensure!(response.status == 200, "GET /state: {}", response.status);
        serde_json::from_str(&response.body).context("GET /state: not JSON")
    }

    /// Waits up to `within` until `/state` satisfies `ready`; returns that state.
    pub fn wait_state(
        &self,
        within: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let state = self.state()?;
            if ready(&state) {
                return Ok(state);
            }
            if Instant::now() > deadline {
                bail!("the SFU's state did not become as wanted within {within:?}: {state}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `viewers` aiortc viewers watching `room` from Janus for `seconds`, and on until each
    /// has decoded `min_frames` (sfu_viewers.py, inside the namespace; 60 s more at most);
    /// prints one JSON object, exits 1 on a failure.
    pub fn viewers(&self, room: u64, viewers: usize, (seconds, min_frames): (f64, u64)) -> Command {
        let mut command = self.command(&self.python);
        command
            .arg(tests_dir().join("whip/sfu_viewers.py"))
            .args(["--front", FRONT, "--room", &room.to_string()])
            .args(["--viewers", &viewers.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .args(["--min-frames", &min_frames.to_string()]);
        command
    }

    /// Headless Chromium watching `room` from Janus (tests/browser/sfu.mjs, inside the
    /// namespace); prints one JSON object, exits 1 on a failure.
    pub fn browser(&self, room: u64) -> Command {
        let browser = tests_dir().join("browser");
        let mut command = self.command("node");
        command
            .arg(browser.join("sfu.mjs"))
            .args(["--front", FRONT, "--room", &room.to_string()])
            .current_dir(browser);
        command
    }
}

/// This crate's directory (tests/).
fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts janus_whip.py with the venv's Python in the namespace, logging to `dir/front.log`,
/// and waits (10 s at most) until it listens.
fn start_front(
    namespace: &Namespace,
    dir: &Path,
    python: &Path,
    token: &str,
) -> anyhow::Result<Guard> {
    let log = fs::File::create(dir.join("front.log"))?;
    let child = namespace
        .command(python)
        .arg(tests_dir().join("whip/janus_whip.py"))
        // Every address of the namespace: onaird reaches it on ICE_ADDRESS, so that
        // cutting the network there cuts both its HTTP and its media.
        .args(["--listen", "0.0.0.0:8090"])
        .args([
            "--janus",
            API,
            "--token",
            token,
            "--room",
            &ROOM.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting tests/whip/janus_whip.py")?;
    let mut front = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(dir.join("front.log")).unwrap_or_default();
        if text.contains("listening on") {
            return Ok(front);
        }
        front
            .check_running("janus_whip.py")
            .with_context(|| text.clone())?;
        if Instant::now() > deadline {
            bail!("janus_whip.py did not listen within 10 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `curl -i` output → status, headers and body (the last header block counts, after any
/// `100 Continue`).
fn parse_response(text: &str) -> anyhow::Result<Response> {
    let mut rest = text;
    loop {
        let (head, body) = rest
            .split_once("\r\n\r\n")
            .with_context(|| format!("no HTTP header in curl's output: {text:?}"))?;
        let mut lines = head.lines();
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {status_line:?}"))?;
        if status == 100 {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        return Ok(Response {
            status,
            headers,
            body: body.to_owned(),
        });
    }
}
