//! A crowd of viewers in a process of its own (`onair-crowd`), so that what they cost is
//! not counted as the server's: both halves of it.
//!
//! - [`Crowd`] is what runs inside `onair-crowd`: N webrtc-rs viewers that count pictures
//!   and bytes without decoding them.
//! - [`CrowdProcess`] is the benchmark's handle on that process.
//!
//! They talk in lines: the crowd prints `{"event":"ready",…}` once every viewer has a
//! picture, reads `mark` (start of the measuring window) and `stop` (or the end of its
//! input), then leaves and prints `{"event":"report",…}` with what every viewer received in
//! the window, which is the proof that each one got the whole stream.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::viewer::{Via, Viewer, Watch};

/// How many viewers join at the same time: a real audience does not arrive in one
/// millisecond either, and a burst of 50 handshakes on two cores would time some out. The
/// next batch waits until this one sees pictures (or [`BATCH_WITHIN`]): onaird lets at most
/// 16 sessions from one address connect at a time (`webrtc::pending`).
const JOIN_AT_ONCE: usize = 10;
/// How long a batch may take to see its first pictures before the next one joins anyway.
const BATCH_WITHIN: Duration = Duration::from_secs(10);

/// How long a crowd may take from its start to every viewer's first picture.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// Viewers that have joined, inside the crowd process.
pub struct Crowd {
    viewers: Vec<Viewer>,
    failed: Vec<String>,
    /// Pictures and bytes of each viewer at `mark`, and when.
    marked: Option<(Vec<(usize, u64)>, Instant)>,
}

impl Crowd {
    /// Joins `count` viewers as `via` says, [`JOIN_AT_ONCE`] at a time. A viewer that fails
    /// to join is recorded, not fatal: the report shows it.
    pub async fn join(via: Via, count: usize) -> Crowd {
        let hold = Watch {
            decode: false,
            ..Watch::decoding(usize::MAX, Duration::MAX)
        };
        let mut crowd = Crowd {
            viewers: Vec::with_capacity(count),
            failed: Vec::new(),
            marked: None,
        };
        let mut left = count;
        while left > 0 {
            let batch = left.min(JOIN_AT_ONCE);
            let mut joins = tokio::task::JoinSet::new();
            for _ in 0..batch {
                joins.spawn(Viewer::join(via.clone(), hold));
            }
            while let Some(joined) = joins.join_next().await {
                match joined.map_err(anyhow::Error::from).and_then(|r| r) {
                    Ok(viewer) => crowd.viewers.push(viewer),
                    Err(err) => crowd.failed.push(format!("{err:#}")),
                }
            }
            left -= batch;
            let deadline = tokio::time::Instant::now() + BATCH_WITHIN;
            while left > 0
                && tokio::time::Instant::now() < deadline
                && crowd.viewers.iter().any(|v| v.frames() == 0 && !v.ended())
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        crowd
    }

    /// Waits until every viewer has received a picture (or `within` passed); returns the
    /// `ready` line.
    pub async fn ready(&self, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline
            && self.viewers.iter().any(|v| v.frames() == 0 && !v.ended())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let receiving = self.viewers.iter().filter(|v| v.frames() > 0).count();
        json!({
            "event": "ready",
            "joined": self.viewers.len(),
            "receiving": receiving,
            "failed": self.failed,
        })
    }

    /// Starts the measuring window: what each viewer has received so far.
    pub fn mark(&mut self) {
        let counts = self
            .viewers
            .iter()
            .map(|v| {
                let report = v.report();
                (report.frames_decoded, report.video_bytes)
            })
            .collect();
        self.marked = Some((counts, Instant::now()));
    }

    /// Ends the window, has every viewer leave, and returns the `report` line.
    pub async fn leave(self) -> Value {
        let Crowd {
            viewers,
            failed,
            marked,
        } = self;
        let (at_mark, since) = marked.unwrap_or_else(|| (Vec::new(), Instant::now()));
        let seconds = since.elapsed().as_secs_f64();
        let in_window: Vec<(usize, u64, bool)> = viewers
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let report = v.report();
                let (frames, bytes) = at_mark.get(i).copied().unwrap_or((0, 0));
                (
                    report.frames_decoded - frames,
                    report.video_bytes - bytes,
                    v.ended(),
                )
            })
            .collect();
        let mut leaving = tokio::task::JoinSet::new();
        for viewer in viewers {
            leaving.spawn(viewer.leave());
        }
        let mut statuses = Vec::new();
        while let Some(left) = leaving.join_next().await {
            statuses.push(
                left.ok()
                    .and_then(|r| r.ok())
                    .map_or(0, |r| r.delete_status),
            );
        }
        let viewers: Vec<Value> = in_window
            .iter()
            .map(|&(pictures, bytes, ended)| {
                json!({ "pictures": pictures, "bytes": bytes, "ended": ended })
            })
            .collect();
        json!({
            "event": "report",
            "seconds": seconds,
            "viewers": viewers,
            "failed": failed,
            "leave_statuses": statuses,
        })
    }
}

/// The benchmark's handle on an `onair-crowd` process; killed if dropped before it ends.
pub struct CrowdProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl CrowdProcess {
    /// Starts `command` (an `onair-crowd` invocation) and waits for its `ready` line.
    pub fn start(mut command: Command) -> anyhow::Result<(CrowdProcess, Value)> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting onair-crowd")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let crowd = CrowdProcess {
            child,
            stdin,
            lines,
        };
        let ready = crowd.next_event("ready", READY_WITHIN + Duration::from_secs(60))?;
        Ok((crowd, ready))
    }

    /// The process id, to tell what the viewers themselves cost.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the measuring window.
    pub fn mark(&mut self) -> anyhow::Result<()> {
        self.send("mark")
    }

    /// Ends the window: the viewers leave; returns the crowd's `report` line.
    pub fn stop(mut self) -> anyhow::Result<Value> {
        self.send("stop")?;
        let report = self.next_event("report", Duration::from_secs(60))?;
        // Its input closed, the crowd exits on its own.
        drop(self.stdin.take());
        crate::daemon::terminate(&mut self.child)?;
        Ok(report)
    }

    fn send(&mut self, command: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("crowd input closed")?;
        writeln!(stdin, "{command}")?;
        Ok(stdin.flush()?)
    }

    /// The next line that is a JSON object with `"event": event`.
    fn next_event(&self, event: &str, within: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => bail!("onair-crowd printed no {event} line within {within:?}"),
            };
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && value["event"] == event
            {
                return Ok(value);
            }
        }
    }
}

impl Drop for CrowdProcess {
    fn drop(&mut self) {
        let _ = crate::daemon::terminate(&mut self.child);
    }
}
