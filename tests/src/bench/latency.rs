//! Latency and start-up beside a peer: onaird and an aiortc caster (tests/bench/aiortc_caster.py,
//! libx264 with an encoder per viewer) serve the same stamped test pattern at the same size,
//! frame rate and bitrate, one after the other on loopback, and the same viewers measure both:
//!
//! - headless Chromium (tests/browser/latency.mjs): glass-to-glass p50/p95, read from the stamp
//!   on every presented frame, and time from WHEP POST to the first presented frame;
//! - the aiortc viewer (tests/whep/whep_client.py `--joins`): time from POST to the first
//!   decoded frame.
//!
//! Figures only: nothing here passes or fails on a number. The servers run one at a time so
//! that neither takes CPU from the other on a two-core machine.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::daemon::{self, Daemon};

/// Frame rate of every case.
pub const FPS: u32 = 30;

/// One picture size and the bitrate both casters encode it at.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// H.264 bitrate, kbit/s: onaird's `video.bitrate_kbps` and the caster's pinned rate.
    pub kbps: u32,
}

/// The sizes measured: the target size and onaird's default.
pub const CASES: [Case; 2] = [
    Case {
        width: 640,
        height: 480,
        kbps: 1000,
    },
    Case {
        width: 1280,
        height: 720,
        kbps: 2000,
    },
];

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Seconds of glass-to-glass per server and size (after a 2 s warm-up).
    pub seconds: u32,
    /// Joins per viewer kind for time to first frame, one after another, 1 s apart.
    pub joins: u32,
}

/// Which server is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Onaird,
    AiortcCaster,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Onaird => "onaird",
            Kind::AiortcCaster => "aiortc caster",
        }
    }
}

/// A server under test; stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
enum Server {
    Onaird(Daemon),
    Caster(Caster),
}

impl Server {
    fn start(kind: Kind, case: Case) -> anyhow::Result<Server> {
        Ok(match kind {
            Kind::Onaird => Server::Onaird(Daemon::start(&format!(
                "[video]\nwidth = {}\nheight = {}\nfps = {FPS}\nbitrate_kbps = {}\n",
                case.width, case.height, case.kbps
            ))?),
            Kind::AiortcCaster => Server::Caster(Caster::start(case)?),
        })
    }

    fn whep_url(&self) -> String {
        match self {
            Server::Onaird(daemon) => format!("{}/whep", daemon.base_url),
            Server::Caster(caster) => format!("{}/whep", caster.base_url),
        }
    }
}

/// tests/bench/aiortc_caster.py as a child process (stopped when dropped).
struct Caster {
    _process: daemon::Process,
    base_url: String,
    /// Its output lines (kept so that its pipes stay open).
    _log: Receiver<String>,
}

impl Caster {
    fn start(case: Case) -> anyhow::Result<Caster> {
        let pattern = daemon::built("onair-pattern", "ONAIR_PATTERN_BIN");
        let script = tests_dir().join("bench/aiortc_caster.py");
        let args: Vec<std::ffi::OsString> = vec![
            script.into(),
            "--pattern".into(),
            pattern.into(),
            "--width".into(),
            case.width.to_string().into(),
            "--height".into(),
            case.height.to_string().into(),
            "--fps".into(),
            FPS.to_string().into(),
            "--bitrate-kbps".into(),
            case.kbps.to_string().into(),
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let spawned = daemon::spawn(&python()?, &args, &[])?;
        Ok(Caster {
            _process: spawned.process,
            base_url: spawned.url,
            _log: spawned.log,
        })
    }
}

/// The `tests/` directory of the workspace (scripts live there).
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with aiortc: `$ONAIR_WHEP_PYTHON` (`./dev bench` sets it to its venv).
fn python() -> anyhow::Result<PathBuf> {
    std::env::var_os("ONAIR_WHEP_PYTHON")
        .map(PathBuf::from)
        .context("set ONAIR_WHEP_PYTHON to the Python of the venv with tests/whep/requirements.txt")
}

/// Runs `command`, which prints one JSON document, and parses it; kills it after `timeout`.
/// A non-zero exit is accepted when the JSON came out (whep_client.py exits 1 when a viewer
/// failed a check, and says which in the JSON).
pub fn run_json(mut command: Command, timeout: Duration) -> anyhow::Result<Value> {
    let what = format!("{command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = reader.join().map_err(|_| anyhow::anyhow!("reader"))??;
    serde_json::from_str(&text)
        .with_context(|| format!("{what} exited with {status} and printed no JSON: {text}"))
}

/// Glass-to-glass and time to first frame in headless Chromium.
fn chromium(whep: &str, case: Case, settings: Settings) -> anyhow::Result<Value> {
    let mut command = Command::new("node");
    command
        .arg(tests_dir().join("browser/latency.mjs"))
        .args(["--whep", whep])
        .args(["--width", &case.width.to_string()])
        .args(["--height", &case.height.to_string()])
        .args(["--seconds", &settings.seconds.to_string()])
        .args(["--joins", &settings.joins.to_string()]);
    let budget = u64::from(settings.seconds) + 15 * u64::from(settings.joins) + 60;
    run_json(command, Duration::from_secs(budget))
}

/// Time to first decoded frame with the aiortc viewer, `settings.joins` joins.
fn aiortc_viewer(whep: &str, kind: Kind, settings: Settings) -> anyhow::Result<Value> {
    let mut command = Command::new(python()?);
    command
        .arg(tests_dir().join("whep/whep_client.py"))
        .arg(whep)
        .args(["--frames", "5", "--within", "10", "--json"])
        .args(["--joins", &settings.joins.to_string()]);
    if kind == Kind::AiortcCaster {
        // libx264 writes no colour description; the pattern is BT.601 (only the bar check
        // looks at it).
        command.args(["--assume-matrix", "bt601"]);
    }
    run_json(
        command,
        Duration::from_secs(15 * u64::from(settings.joins) + 30),
    )
}

/// Everything measured of one server at one size.
fn measure(kind: Kind, case: Case, settings: Settings) -> anyhow::Result<Value> {
    let server = Server::start(kind, case)?;
    let whep = server.whep_url();
    let browser = chromium(&whep, case, settings)?;
    let viewer = aiortc_viewer(&whep, kind, settings)?;
    drop(server);
    Ok(json!({ "chromium": browser, "aiortc_viewer": viewer }))
}

/// A figure at `path` (JSON pointer) of a measurement, if it is a number.
fn figure(measured: &Value, path: &str) -> Option<f64> {
    measured.pointer(path).and_then(Value::as_f64)
}

/// One line of the table: what, onaird's figure, the caster's, in ms.
struct Row {
    what: String,
    onair: Option<f64>,
    peer: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        Some(self.onair? / self.peer?)
    }

    fn json(&self) -> Value {
        json!({ "what": self.what, "onaird_ms": self.onair, "aiortc_caster_ms": self.peer,
                "ratio": self.ratio() })
    }
}

/// The rows for one size: (label, JSON pointer into a measurement).
fn rows(case: Case, onair: &Value, peer: &Value) -> Vec<Row> {
    let size = format!("{}x{}", case.width, case.height);
    [
        (
            "glass-to-glass p50, Chromium",
            "/chromium/glass/display/p50",
        ),
        (
            "glass-to-glass p95, Chromium",
            "/chromium/glass/display/p95",
        ),
        (
            "POST → first presented frame p50, Chromium",
            "/chromium/firstFrame/p50",
        ),
        (
            "POST → first decoded frame p50, aiortc viewer",
            "/aiortc_viewer/first_frame_ms/median",
        ),
    ]
    .into_iter()
    .map(|(what, path)| Row {
        what: format!("{size}: {what}"),
        onair: figure(onair, path),
        peer: figure(peer, path),
    })
    .collect()
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.1} ms"))
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<56} {:>10} {:>14} {:>11}",
        "", "onaird", "aiortc caster", "onair/peer"
    );
    for row in rows {
        println!(
            "{:<56} {:>10} {:>14} {:>11}",
            row.what,
            ms(row.onair),
            ms(row.peer),
            row.ratio()
                .map_or_else(|| "—".into(), |r| format!("{r:.2}"))
        );
    }
}

/// One line on what a measurement rests on: stamps read, rejected, gaps, joins that failed.
fn describe(kind: Kind, case: Case, measured: &Value) -> String {
    let glass = &measured["chromium"]["glass"];
    let viewer = &measured["aiortc_viewer"];
    let failed = viewer["viewers"]
        .as_array()
        .map_or(0, |v| v.iter().filter(|r| r["errors"] != json!([])).count());
    format!(
        "  {} {}x{}: Chromium read {} stamps ({} measured after the warm-up; rejected {} sync, \
         {} CRC), {} rVFC callbacks for {} frames presented ({} fps), sequence gaps {} ({} missing, at most {} in a row), \
         {} {}; Chromium joins {} ms; aiortc viewer {} joins, {failed} failed a check",
        kind.name(),
        case.width,
        case.height,
        glass["read"],
        glass["measured"],
        glass["rejected"]["sync"],
        glass["rejected"]["crc"],
        glass["callbacks"],
        glass["presented"],
        glass["fps"],
        glass["sequence"]["gaps"],
        glass["sequence"]["missing"],
        glass["sequence"]["largest"],
        glass["stats"]["size"].as_str().unwrap_or("?"),
        glass["stats"]["codec"].as_str().unwrap_or("?"),
        measured["chromium"]["firstFrame"]["joins"],
        viewer["first_frame_ms"]["n"],
    )
}

fn write_json(path: &Path, value: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Measures onaird and the aiortc caster at every size, prints the table and writes the JSON;
/// returns the JSON's path.
pub fn run(settings: Settings) -> anyhow::Result<PathBuf> {
    println!(
        "latency and start-up: onaird beside an aiortc caster (libx264, an encoder per viewer), \
         same stamped pattern, {FPS} fps, loopback; {} s of glass-to-glass and {} joins each",
        settings.seconds, settings.joins
    );
    let (mut table, mut cases) = (Vec::new(), Vec::new());
    for case in CASES {
        let onair = measure(Kind::Onaird, case, settings)?;
        println!("{}", describe(Kind::Onaird, case, &onair));
        let peer = measure(Kind::AiortcCaster, case, settings)?;
        println!("{}", describe(Kind::AiortcCaster, case, &peer));
        table.extend(rows(case, &onair, &peer));
        cases.push(json!({
            "width": case.width, "height": case.height, "fps": FPS, "kbps": case.kbps,
            "onaird": onair, "aiortc_caster": peer,
        }));
    }
    print_table(&table);
    let path = super::output_path("latency")?;
    write_json(
        &path,
        &json!({
            "settings": { "seconds": settings.seconds, "joins": settings.joins },
            "rows": table.iter().map(Row::json).collect::<Vec<_>>(),
            "cases": cases,
        }),
    )?;
    println!("written: {}", path.display());
    Ok(path)
}
