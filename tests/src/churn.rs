//! Viewers joining and leaving a running onaird, and what the daemon holds before and after:
//! shared by the churn test (tests/tests/churn.rs) and `onair-bench churn`.
//!
//! Every viewer is an `onair-viewer` process that connects (ICE, DTLS), decodes pictures and
//! then leaves: most with a WHEP DELETE, some by vanishing (`--vanish`: the process exits
//! without a DELETE or a DTLS close, so the daemon has to time the session out). What the
//! daemon holds is read from /proc (RSS, file descriptors, UDP and TCP sockets, threads) and
//! from its `/api/status` (sessions, viewers).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinSet;

use crate::daemon::{built, get};

/// What a daemon holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Resident set size (VmRSS), KiB.
    pub rss_kb: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// UDP sockets among them (the one `webrtc.port`, per address family or bind address).
    pub udp_sockets: usize,
    /// TCP sockets among them (listener, HTTP and WebSocket connections).
    pub tcp_sockets: usize,
    /// Threads.
    pub threads: usize,
    /// `sessions` of /api/status: sessions in any state.
    pub sessions: u64,
    /// `viewers` of /api/status: sessions with media flowing.
    pub viewers: u64,
}

impl Held {
    /// Reads what process `pid` (an onaird serving `base_url`) holds now.
    pub fn sample(pid: u32, base_url: &str) -> anyhow::Result<Held> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(proc.join("status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let sockets = socket_inodes(&proc)?;
        let udp = inodes_in(&proc, &["net/udp", "net/udp6"]);
        let tcp = inodes_in(&proc, &["net/tcp", "net/tcp6"]);
        let (code, body) = get(&format!("{base_url}/api/status"))?;
        anyhow::ensure!(code == 200, "/api/status answered {code}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)?;
        Ok(Held {
            rss_kb: field("VmRSS:"),
            fds: sockets.fds,
            udp_sockets: sockets.inodes.intersection(&udp).count(),
            tcp_sockets: sockets.inodes.intersection(&tcp).count(),
            threads: field("Threads:") as usize,
            sessions: json["sessions"]
                .as_u64()
                .context("no sessions in /api/status")?,
            viewers: json["viewers"]
                .as_u64()
                .context("no viewers in /api/status")?,
        })
    }

    /// Whether nothing is held beyond what `baseline` held, and no session is left.
    pub fn back_to(&self, baseline: &Held) -> bool {
        self.sessions == 0
            && self.viewers == 0
            && self.fds <= baseline.fds
            && self.udp_sockets <= baseline.udp_sockets
            && self.tcp_sockets <= baseline.tcp_sockets
            && self.threads <= baseline.threads
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RSS {:.1} MB, {} fds ({} UDP, {} TCP sockets), {} threads, {} sessions, {} viewers",
            self.rss_kb as f64 / 1024.0,
            self.fds,
            self.udp_sockets,
            self.tcp_sockets,
            self.threads,
            self.sessions,
            self.viewers
        )
    }
}

struct Fds {
    fds: usize,
    inodes: HashSet<u64>,
}

/// The process's descriptor count and the inodes of its sockets (`socket:[123]` links).
fn socket_inodes(proc: &std::path::Path) -> anyhow::Result<Fds> {
    let mut fds = Fds {
        fds: 0,
        inodes: HashSet::new(),
    };
    let dir = proc.join("fd");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
        let Ok(entry) = entry else { continue };
        fds.fds += 1;
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|n| n.parse().ok())
        {
            fds.inodes.insert(inode);
        }
    }
    Ok(fds)
}

/// Socket inodes listed in the process's /proc/PID/net tables (`net/udp`…): every socket
/// of its network namespace, to be intersected with its own.
fn inodes_in(proc: &std::path::Path, tables: &[&str]) -> HashSet<u64> {
    tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(proc.join(t)).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(9)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// How viewers come and go.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// How long new viewers keep coming.
    pub duration: Duration,
    /// A new viewer joins this often.
    pub join_every: Duration,
    /// Every `vanish_every`-th viewer vanishes instead of sending DELETE (0: none do).
    pub vanish_every: usize,
    /// Pictures each viewer decodes before it leaves.
    pub frames: usize,
    /// What the daemon holds is sampled this often.
    pub sample_every: Duration,
}

/// A viewer has this long to connect and decode its pictures.
const VIEWER_WITHIN: Duration = Duration::from_secs(20);

/// What happened during a churn.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Viewers started.
    pub joined: usize,
    /// Of them, viewers that left by vanishing.
    pub vanished: usize,
    /// Viewers that did not decode their pictures or did not leave cleanly, with why.
    pub failures: Vec<String>,
    /// Samples taken during the churn, by time since it started.
    pub samples: Vec<(Duration, Held)>,
}

impl Outcome {
    /// The largest session count seen in the samples.
    pub fn peak_sessions(&self) -> u64 {
        self.samples
            .iter()
            .map(|(_, h)| h.sessions)
            .max()
            .unwrap_or(0)
    }
}

/// Runs `plan` against the daemon `pid` serving `base_url`; `on_sample` sees every sample
/// as it is taken (the benchmark prints them). Returns once every viewer has finished.
pub async fn run(
    pid: u32,
    base_url: &str,
    plan: Plan,
    mut on_sample: impl FnMut(Duration, &Held),
) -> anyhow::Result<Outcome> {
    let whep = format!("{base_url}/whep");
    let mut outcome = Outcome::default();
    let mut viewers = JoinSet::new();
    let started = Instant::now();
    let mut joins = tokio::time::interval(plan.join_every);
    let mut next_sample = Duration::ZERO;
    while started.elapsed() < plan.duration {
        joins.tick().await;
        let vanish = plan.vanish_every > 0 && outcome.joined % plan.vanish_every == 0;
        viewers.spawn(one_viewer(whep.clone(), plan.frames, vanish));
        outcome.joined += 1;
        outcome.vanished += usize::from(vanish);
        while let Some(done) = viewers.try_join_next() {
            record(&mut outcome, done);
        }
        if started.elapsed() >= next_sample {
            let at = started.elapsed();
            let held = sample(pid, base_url).await?;
            on_sample(at, &held);
            outcome.samples.push((at, held));
            next_sample += plan.sample_every;
        }
    }
    while let Some(done) = viewers.join_next().await {
        record(&mut outcome, done);
    }
    Ok(outcome)
}

fn record(outcome: &mut Outcome, done: Result<Result<(), String>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(())) => {}
        Ok(Err(why)) => outcome.failures.push(why),
        Err(err) => outcome.failures.push(format!("viewer task: {err}")),
    }
}

/// [`Held::sample`] off the async workers.
pub async fn sample(pid: u32, base_url: &str) -> anyhow::Result<Held> {
    let base_url = base_url.to_owned();
    tokio::task::spawn_blocking(move || Held::sample(pid, &base_url)).await?
}

/// One `onair-viewer` process: joins `whep`, decodes `frames` pictures, then leaves with
/// DELETE or (`vanish`) just exits. `Err` says what went wrong.
pub async fn one_viewer(whep: String, frames: usize, vanish: bool) -> Result<(), String> {
    let mut command = tokio::process::Command::new(built("onair-viewer", "ONAIR_VIEWER_BIN"));
    command
        .arg(&whep)
        .arg(frames.to_string())
        .arg(VIEWER_WITHIN.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if vanish {
        command.arg("--vanish");
    }
    let how = if vanish { "vanishing" } else { "leaving" };
    let output = tokio::time::timeout(VIEWER_WITHIN + Duration::from_secs(10), command.output())
        .await
        .map_err(|_| format!("{how} viewer still running after {VIEWER_WITHIN:?}"))?
        .map_err(|e| format!("starting onair-viewer: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|_| {
        format!(
            "{how} viewer failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    let decoded = report["frames_decoded"].as_u64().unwrap_or(0) as usize;
    if decoded < frames {
        return Err(format!(
            "{how} viewer decoded {decoded} of {frames}: {report}"
        ));
    }
    if !vanish && report["delete_status"] != 200 {
        return Err(format!("DELETE not answered 200: {report}"));
    }
    Ok(())
}

/// Waits (at most `limit`) until the daemon has no session, and returns what it holds then:
/// the baseline a churn is compared with.
pub async fn idle(pid: u32, base_url: &str, limit: Duration) -> anyhow::Result<Held> {
    let started = Instant::now();
    loop {
        let held = sample(pid, base_url).await?;
        if held.sessions == 0 && held.viewers == 0 {
            return Ok(held);
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "sessions still open after {limit:?}: {held}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most `limit`) until the daemon holds no more than `baseline` and has no
/// session left (vanished viewers' sessions must time out first). Returns the last sample
/// and how long it took; the caller judges a sample that never got back.
pub async fn settle(
    pid: u32,
    base_url: &str,
    baseline: &Held,
    limit: Duration,
) -> anyhow::Result<(Held, Duration)> {
    let started = Instant::now();
    loop {
        let held = sample(pid, base_url).await?;
        if held.back_to(baseline) || started.elapsed() >= limit {
            return Ok((held, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How many sessions the daemon's log says ended for each reason (`viewer gone … reason=X`),
/// reading `log` until `expected` sessions are accounted for or `within` has passed (a
/// session leaves the registry a moment before its line is logged).
pub fn ended_by_reason(
    log: &std::sync::mpsc::Receiver<String>,
    expected: usize,
    within: Duration,
) -> std::collections::BTreeMap<String, usize> {
    let deadline = Instant::now() + within;
    let mut reasons = std::collections::BTreeMap::new();
    while reasons.values().sum::<usize>() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = log.recv_timeout(left) else {
            break;
        };
        if !line.contains("viewer gone") {
            continue;
        }
        if let Some(reason) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("reason="))
        {
            *reasons.entry(reason.to_owned()).or_insert(0) += 1;
        }
    }
    reasons
}
