//! onaird publishing over WHIP (RFC 9725) to a real SFU: Janus 1.1.2's VideoRoom behind the
//! thin WHIP front of `tests/whip/janus_whip.py` (see `onair_tests::sfu`). The audience
//! watches from Janus, never from the camera.
//!
//! Each test's thread enters the SFU's network namespace (root), so onaird, its HTTP port
//! and the viewers all live there.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use onair_tests::daemon::{Daemon, OPERATOR, get};
use onair_tests::sfu::{ROOM, Sfu};
use serde_json::Value;

/// The front's token for onaird.
const TOKEN: &str = "whip-test-token-0123";

/// One test at a time: ten decoding viewers, Chromium, Janus and onaird fill two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// onaird publishing `url` with `token`: 640x480 at 800 kb/s (and the low layer), on the
/// namespace's address (Janus pairs with no loopback candidate).
fn camera(url: &str, token: &str) -> anyhow::Result<Daemon> {
    Daemon::start(&format!(
        r#"
[http]
listen = "127.0.0.1:0"
[webrtc]
bind_ips = ["10.200.0.1"]
port = 0
[video]
width = 640
height = 480
bitrate_kbps = 800
[access]
operator_token = "{OPERATOR}"
[whip]
url = "{url}"
token = "{token}"
"#
    ))
}

/// `/api/status`, as an operator sees it (with the WHIP URLs whole).
fn status(daemon: &Daemon) -> anyhow::Result<Value> {
    onair_tests::daemon::operator_status(&daemon.base_url)
}

/// Waits up to `within` until onaird's `whip` status satisfies `ready`; returns it.
fn wait_whip(
    daemon: &Daemon,
    within: Duration,
    ready: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let whip = status(daemon)?["whip"].clone();
        if ready(&whip) {
            return Ok(whip);
        }
        if Instant::now() > deadline {
            bail!("onaird's whip status did not get there within {within:?}: {whip}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Janus lists a publisher in the room once its media is up.
fn has_publisher(state: &Value) -> bool {
    state["publishers"]
        .as_array()
        .is_some_and(|p| !p.is_empty())
}

/// The sample `series` (a name with its labels) of onaird's `/metrics`.
fn metric(daemon: &Daemon, series: &str) -> anyhow::Result<f64> {
    let (code, body) = get(&format!("{}/metrics", daemon.base_url))?;
    ensure!(code == 200, "GET /metrics: {code}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {series} in /metrics"))
}

/// `onair_sent_bytes_total` of onaird's `/metrics`.
fn sent_bytes(daemon: &Daemon) -> anyhow::Result<f64> {
    metric(daemon, "onair_sent_bytes_total")
}

/// A finished helper's stdout as JSON, or its failure with stderr.
fn json_of(what: &str, output: Output) -> anyhow::Result<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    serde_json::from_str(stdout.trim()).with_context(|| format!("{what} printed: {stdout}"))
}

fn spawn_piped(mut command: std::process::Command) -> anyhow::Result<Child> {
    Ok(command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// aiortc viewers that each decoded at least `min_frames` pictures and heard the tone.
fn check_viewers(result: &Value, count: usize, min_frames: u64) -> anyhow::Result<()> {
    let viewers = result["viewers"].as_array().context("no viewers")?;
    ensure!(
        viewers.len() == count,
        "{} viewers ran: {result}",
        viewers.len()
    );
    for viewer in viewers {
        let frames = viewer["video_frames"].as_u64().unwrap_or(0);
        ensure!(frames >= min_frames, "a viewer decoded {frames}: {viewer}");
        ensure!(
            viewer["width"] == 640 && viewer["height"] == 480,
            "a viewer got another size: {viewer}"
        );
        let audio = viewer["audio_frames"].as_u64().unwrap_or(0);
        let peak = viewer["audio_peak_dbfs"].as_f64().unwrap_or(-200.0);
        ensure!(
            audio > 0 && peak > -40.0,
            "a viewer heard no tone: {viewer}"
        );
    }
    Ok(())
}

#[test]
fn onaird_publishes_once_to_janus_and_the_audience_watches_there() -> anyhow::Result<()> {
    let _serial = one_at_a_time();
    let sfu = Sfu::start(TOKEN)?;
    sfu.enter()?;
    // Through a 307, as a load-balanced ingest answers.
    let daemon = camera(&sfu.redirect_url(ROOM), TOKEN)?;
    let started = Instant::now();
    let state = sfu.wait_state(Duration::from_secs(30), has_publisher)?;
    eprintln!(
        "Janus has onaird's stream {:.1} s after onaird was healthy",
        started.elapsed().as_secs_f64()
    );
    let created = state["created"].as_array().context("no created")?.clone();
    ensure!(created.len() == 1, "one session created: {state}");
    let whip = wait_whip(&daemon, Duration::from_secs(20), |w| {
        w["state"] == "publishing"
    })?;
    ensure!(
        whip["resource"]
            .as_str()
            .is_some_and(|r| r.contains("/whip/1234/")),
        "the resource is the redirect target's: {whip}"
    );
    ensure!(
        whip["ice_servers"] == serde_json::json!(["stun:10.200.0.1:3478"]),
        "the Link header's ICE server: {whip}"
    );

    // Ten aiortc viewers and Chromium, all from Janus; onaird sends one stream meanwhile.
    let (bytes_before, at_before) = (sent_bytes(&daemon)?, Instant::now());
    let aiortc = spawn_piped(sfu.viewers(ROOM, 10, (6.0, 60)))?;
    let chromium = spawn_piped(sfu.browser(ROOM))?;
    let viewers = json_of("sfu_viewers.py", aiortc.wait_with_output()?)?;
    let browser = json_of("sfu.mjs", chromium.wait_with_output()?)?;
    let (bytes_after, at_after) = (sent_bytes(&daemon)?, Instant::now());
    let uplink_kbps =
        (bytes_after - bytes_before) * 8.0 / 1000.0 / (at_after - at_before).as_secs_f64();
    let frames: Vec<u64> = viewers["viewers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["video_frames"].as_u64().unwrap_or(0))
        .collect();
    eprintln!(
        "10 aiortc viewers decoded {frames:?} pictures in 6 s; Chromium {} ({}x{}); onaird sent {uplink_kbps:.0} kb/s",
        browser["framesDecoded"], browser["width"], browser["height"]
    );
    check_viewers(&viewers, 10, 60)?;
    ensure!(
        browser["framesDecoded"].as_u64().unwrap_or(0) >= 30
            && browser["totalSamplesReceived"].as_u64().unwrap_or(0) > 0,
        "Chromium: {browser}"
    );
    // One stream: 800 kb/s of video and 64 of audio, with headroom for RTP and key frames;
    // eleven would be over 9 Mb/s.
    ensure!(
        uplink_kbps < 1500.0,
        "onaird sent {uplink_kbps:.0} kb/s while 11 watched from Janus: not one stream"
    );
    // Janus asks for a key frame (PLI) for each viewer that joins; onaird honours it as a
    // viewer's.
    let plis = metric(&daemon, "onair_video_keyframes_total{reason=\"pli\"}")?;
    ensure!(plis >= 1.0, "no IDR for Janus's PLIs");
    let peers = status(&daemon)?["peers"].clone();
    let count = peers.as_array().map_or(0, Vec::len);
    ensure!(count == 1, "onaird has {count} sessions, want Janus's only");
    // Janus's feedback keeps it on the top layer: the link has room.
    let janus = &peers[0];
    eprintln!("Janus's session: {janus}");
    ensure!(
        janus["layer"] == 0 && janus["estimate_kbps"].as_f64().unwrap_or(0.0) > 800.0,
        "Janus was moved off the top layer on a free link: {janus}"
    );

    ensure!(metric(&daemon, "onair_whip_publishing")? == 1.0);
    ensure!(metric(&daemon, "onair_whip_publishes_total")? == 1.0);

    // SIGTERM: the session on Janus is DELETEd.
    let (exit, log) = daemon.stop_with_log()?;
    ensure!(exit.success(), "onaird exited with {exit}");
    let state = sfu.wait_state(Duration::from_secs(20), |s| {
        s["deleted"].as_array().is_some_and(|d| !d.is_empty())
    })?;
    ensure!(state["deleted"] == Value::Array(created), "{state}");
    ensure!(
        log.iter().any(|l| l.contains("whip: deleted")),
        "no DELETE in onaird's log: {log:?}"
    );
    Ok(())
}

#[test]
fn onaird_publishes_again_after_janus_restarts_and_after_the_network_comes_back()
-> anyhow::Result<()> {
    let _serial = one_at_a_time();
    let mut sfu = Sfu::start(TOKEN)?;
    sfu.enter()?;
    let daemon = camera(&sfu.whip_url(ROOM), TOKEN)?;
    sfu.wait_state(Duration::from_secs(30), has_publisher)?;

    // Janus killed and started again, as a service restart does.
    sfu.restart_janus()?;
    let restarted = Instant::now();
    // About 6 s (ICE notices the silence in about 5 s); the limit is for a loaded machine.
    sfu.wait_state(Duration::from_secs(40), has_publisher)?;
    let back = restarted.elapsed();
    eprintln!(
        "republished {:.1} s after Janus restarted",
        back.as_secs_f64()
    );
    let viewers = json_of(
        "sfu_viewers.py",
        spawn_piped(sfu.viewers(ROOM, 1, (3.0, 30)))?.wait_with_output()?,
    )?;
    check_viewers(&viewers, 1, 30)?;

    // The network to the SFU gone for 30 s: onaird notices, retries, and is back by itself.
    let before_cut = sfu.state()?["created"]
        .as_array()
        .and_then(|c| c.last().cloned())
        .context("no session created")?;
    sfu.cut_network()?;
    let whip = wait_whip(&daemon, Duration::from_secs(30), |w| {
        w["state"] != "publishing"
    })?;
    eprintln!("with the network cut: {whip}");
    std::thread::sleep(Duration::from_secs(30));
    sfu.restore_network()?;
    let restored = Instant::now();
    // Attempts are at most 10 s apart (jittered), and connecting takes a moment.
    wait_whip(&daemon, Duration::from_secs(30), |w| {
        w["state"] == "publishing"
    })?;
    sfu.wait_state(Duration::from_secs(20), has_publisher)?;
    eprintln!(
        "publishing again {:.1} s after the network came back",
        restored.elapsed().as_secs_f64()
    );
    // The session lost in the cut, whose DELETE could not go out then, is DELETEd now: no
    // dead publisher is left beside the new one.
    sfu.wait_state(Duration::from_secs(20), |s| {
        s["deleted"]
            .as_array()
            .is_some_and(|d| d.contains(&before_cut))
    })?;
    let viewers = json_of(
        "sfu_viewers.py",
        spawn_piped(sfu.viewers(ROOM, 1, (3.0, 30)))?.wait_with_output()?,
    )?;
    check_viewers(&viewers, 1, 30)?;
    Ok(())
}

#[test]
fn a_refused_token_is_a_clear_error_retried_slowly() -> anyhow::Result<()> {
    let _serial = one_at_a_time();
    let sfu = Sfu::start(TOKEN)?;
    sfu.enter()?;
    let daemon = camera(&sfu.whip_url(ROOM), "not-the-token")?;
    let whip = wait_whip(&daemon, Duration::from_secs(30), |w| {
        w["state"] == "unauthorized"
    })?;
    eprintln!("{whip}");
    let error = whip["last_error"].as_str().unwrap_or_default();
    ensure!(
        error.contains("HTTP 401") && error.contains("whip.token"),
        "{whip}"
    );
    ensure!(
        whip["retry_in_s"].as_f64().unwrap_or(0.0) >= 50.0,
        "retried too soon: {whip}"
    );
    // Nothing more within the next seconds: one refused POST in all.
    std::thread::sleep(Duration::from_secs(3));
    let state = sfu.state()?;
    ensure!(
        state["unauthorized"] == 1 && !has_publisher(&state),
        "{state}"
    );
    let (_, log) = daemon.stop_with_log()?;
    ensure!(
        log.iter()
            .any(|l| l.contains("ERROR") && l.contains("refused the token")),
        "no error in the log: {log:?}"
    );
    Ok(())
}

#[test]
fn a_busy_server_is_asked_again_no_sooner_than_it_said() -> anyhow::Result<()> {
    let _serial = one_at_a_time();
    let sfu = Sfu::start(TOKEN)?;
    sfu.enter()?;
    let daemon = camera(&sfu.busy_url(ROOM), TOKEN)?;
    let whip = wait_whip(&daemon, Duration::from_secs(30), |w| {
        w["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 429"))
    })?;
    eprintln!("{whip}");
    ensure!(
        whip["retry_in_s"].as_f64().unwrap_or(0.0) >= 3.0,
        "Retry-After: 3 not obeyed: {whip}"
    );
    wait_whip(&daemon, Duration::from_secs(30), |w| {
        w["state"] == "publishing"
    })?;
    let state = sfu.state()?;
    let posts: Vec<f64> = state["busy_posts"]
        .as_array()
        .context("no busy_posts")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    eprintln!("POSTs to the busy endpoint at {posts:?}");
    ensure!(
        posts.len() == 2 && posts[1] - posts[0] >= 3.0,
        "asked again too soon: {posts:?}"
    );
    Ok(())
}
