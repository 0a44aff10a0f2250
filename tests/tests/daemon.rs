//! onaird as a process, watched by real WebRTC viewers that decode what they get.

use std::time::Duration;

use onair_tests::daemon::{Daemon, agent, get};
use onair_tests::picture::bars_match;
use onair_tests::viewer::{Report, Via, Viewer, Watch, offer_without_h264, watch};

/// Colour tolerance per channel after H.264 at the default bitrate.
const TOLERANCE: u8 = 24;

fn check_viewer(report: &Report, min_frames: usize, size: (u32, u32)) {
    assert!(
        report.frames_decoded >= min_frames,
        "decoded only {} frames: {report:?}",
        report.frames_decoded
    );
    let last = report.last.as_ref().expect("a decoded picture");
    assert_eq!((last.width, last.height), size);
    assert!(
        bars_match(&last.bars, TOLERANCE),
        "bar colours {:?}",
        last.bars
    );
    let (first, last) = (
        report
            .first
            .as_ref()
            .and_then(|p| p.stamp)
            .expect("stamp in the first picture"),
        last.stamp.expect("stamp in the last picture"),
    );
    assert!(
        last.sequence > first.sequence,
        "pictures do not advance: {first:?} → {last:?}"
    );
    assert!(report.audio_frames > 0, "no audio decoded");
    assert!(
        report.audio_rms > 0.05,
        "audio is silent: rms {}",
        report.audio_rms
    );
    assert_eq!(report.delete_status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_viewer_decodes_the_test_pattern_at_720p() {
    let daemon = Daemon::start("").unwrap();
    let report = watch(
        &format!("{}/whep", daemon.base_url),
        Watch::decoding(60, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    eprintln!(
        "decoded {} frames, first after {:?}, {} audio frames",
        report.frames_decoded, report.time_to_first_frame, report.audio_frames
    );
    check_viewer(&report, 60, (1280, 720));
    assert_eq!(report.decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_viewers_at_once_all_decode() {
    let daemon =
        Daemon::start("[video]\nwidth = 640\nheight = 480\nbitrate_kbps = 1000\n").unwrap();
    let url = format!("{}/whep", daemon.base_url);
    let viewers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(watch_owned(url.clone())))
        .collect();
    for (i, viewer) in viewers.into_iter().enumerate() {
        let report = viewer
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("viewer {i}: {e:#}"));
        check_viewer(&report, 30, (640, 480));
    }
    // Every session is torn down after DELETE.
    let mut viewers = usize::MAX;
    for _ in 0..300 {
        let (_, body) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        viewers = status["sessions"].as_u64().unwrap() as usize;
        if viewers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(viewers, 0, "sessions left after every viewer left");
}

async fn watch_owned(url: String) -> anyhow::Result<Report> {
    watch(&url, Watch::decoding(30, Duration::from_secs(60))).await
}

#[test]
fn whep_refuses_what_is_not_an_sdp_offer() {
    let daemon = Daemon::start("[audio]\nenabled = false\n").unwrap();
    let url = format!("{}/whep", daemon.base_url);
    let http = agent();
    let wrong_type = http
        .post(&url)
        .header("Content-Type", "application/json")
        .send("{}")
        .unwrap();
    assert_eq!(wrong_type.status().as_u16(), 415);
    let no_type = http.post(&url).send("v=0\r\n").unwrap();
    assert_eq!(no_type.status().as_u16(), 415);
    let garbage = http
        .post(&url)
        .header("Content-Type", "application/sdp")
        .send("hello")
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    let truncated = http
        .post(&url)
        .header("Content-Type", "application/sdp")
        .send("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n")
        .unwrap();
    assert_eq!(truncated.status().as_u16(), 400);
    let unknown = http.delete(&format!("{url}/0123")).call().unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let patch = http
        .patch(&format!("{url}/0123"))
        .header("Content-Type", "application/trickle-ice-sdpfrag")
        .send("a=x")
        .unwrap();
    assert_eq!(patch.status().as_u16(), 404);
    let preflight = http
        .options(&url)
        .header("Origin", "http://player.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .call()
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    // No viewer token: no other origin is granted (tests/tests/access.rs has the rest).
    assert!(
        preflight
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The daemon survived all of that.
    assert_eq!(get(&format!("{}/healthz", daemon.base_url)).unwrap().0, 200);
}

#[test]
fn health_and_status_report_the_stream() {
    let daemon = Daemon::start("[device]\nchannel = \"porch\"\nname = \"Porch camera\"\n").unwrap();
    let mut healthy = false;
    for _ in 0..50 {
        if get(&format!("{}/healthz", daemon.base_url)).unwrap().0 == 200 {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(healthy, "/healthz never turned 200");
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["channel"], "porch");
    assert_eq!(status["name"], "Porch camera");
    assert_eq!(status["viewers"], 0);
    assert_eq!(status["privacy"], false);
    assert_eq!(status["video"]["width"], 1280);
    assert_eq!(status["video"]["profile_level_id"], "42e01f");
    assert_eq!(status["video"]["encoder"], "openh264");
    // Frames are being encoded; how many per second depends on the machine's load, so
    // the rate is a benchmark figure, not asserted here.
    assert!(status["fps"].as_f64().unwrap() > 0.0, "{status}");
    assert!(status["frames_encoded"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["signaling"]["service"], "built-in", "{status}");
    let (code, page) = get(&format!("{}/", daemon.base_url)).unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("/onair.js"));
    let (code, sdk) = get(&format!("{}/onair.js", daemon.base_url)).unwrap();
    assert_eq!(code, 200);
    assert!(sdk.contains("export class OnAirViewer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_sessions_and_stops_the_daemon() {
    let daemon = Daemon::start("").unwrap();
    let url = format!("{}/whep", daemon.base_url);
    // A viewer that would watch for two minutes, decoding pictures before the stop.
    let viewer = Viewer::join(
        Via::Whep(url),
        Watch::decoding(usize::MAX, Duration::from_secs(120)),
    )
    .await
    .unwrap();
    let seen = viewer.wait_for(10, Duration::from_secs(60)).await;
    assert!(seen.frames_decoded >= 10, "{seen:?}");
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || daemon.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // A figure: about 1 s (HTTP's drain) on a quiet machine; the stop itself has a limit.
    eprintln!("stopping took {:?}", started.elapsed());
    // The daemon closed the viewer's connection: it ends long before its two minutes.
    let report = viewer.wait_for(usize::MAX, Duration::from_secs(30)).await;
    assert!(
        report.connection_ended,
        "viewer still connected 30 s after the daemon stopped: {report:?}"
    );
}

/// A microphone whose reads never return: an ALSA `file` PCM whose input is a FIFO that has
/// a writer (this test) who never writes. The ALSA config that defines it is handed to
/// onaird through `ALSA_CONFIG_PATH`; the FIFO lives in `dir`.
struct StalledMicrophone {
    dir: std::path::PathBuf,
    config: std::path::PathBuf,
    _writer: std::fs::File,
}

impl StalledMicrophone {
    fn new() -> StalledMicrophone {
        let dir = std::env::temp_dir().join(format!("onair-stall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        // Read and write: opening does not wait for a reader, and the FIFO has a writer, so
        // reads wait for data instead of seeing the end of the file.
        let writer = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        let config = dir.join("asound.conf");
        std::fs::write(
            &config,
            format!(
                "pcm.stall {{\n type file\n slave.pcm {{ type null }}\n file \"/dev/null\"\n \
                 infile \"{}\"\n format \"raw\"\n}}\n",
                fifo.display()
            ),
        )
        .unwrap();
        StalledMicrophone {
            dir,
            config,
            _writer: writer,
        }
    }
}

impl Drop for StalledMicrophone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn sigterm_ends_the_daemon_while_a_device_read_blocks() {
    let microphone = StalledMicrophone::new();
    let daemon = Daemon::start_with_env(
        "[video]\nwidth = 320\nheight = 240\nfps = 15\n\
         [audio]\nsource = \"stall\"\nrequired = true\n",
        &[("ALSA_CONFIG_PATH", microphone.config.as_os_str())],
    )
    .unwrap();
    // Video flows (the daemon is healthy); the audio thread sits in a read that never
    // returns.
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    // Gives up (and fails) 5 s after SIGTERM.
    let (status, log) = daemon.stop_with_log().unwrap();
    let took = started.elapsed();
    eprintln!("SIGTERM → exit with the microphone's read blocked: {took:?}");
    assert!(status.success(), "{status:?}\n{}", log.join("\n"));
    assert!(
        log.iter()
            .any(|l| l.contains("onair-audio: still blocked in a device read")),
        "the read did not block, so this test proves nothing:\n{}",
        log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_without_h264_is_refused_with_the_reason() {
    let daemon = Daemon::start("").unwrap();
    let offer = offer_without_h264().await.unwrap();
    let url = format!("{}/whep", daemon.base_url);
    let (status, body) = tokio::task::spawn_blocking(move || {
        let mut r = agent()
            .post(&url)
            .header("Content-Type", "application/sdp")
            .send(offer.as_bytes())
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("H.264"), "{body}");
    let (_, status) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
    assert!(status.contains("\"sessions\":0"), "{status}");
}

#[test]
fn a_viewer_that_vanishes_without_delete_is_torn_down() {
    let daemon = Daemon::start("[audio]\nenabled = false\n").unwrap();
    let status = |key: &str| -> u64 {
        let (_, body) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()[key]
            .as_u64()
            .unwrap()
    };
    let mut viewer = std::process::Command::new(env!("CARGO_BIN_EXE_onair-viewer"))
        .args([&format!("{}/whep", daemon.base_url), "1000000", "120"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status("viewers") != 1 {
        if std::time::Instant::now() > deadline {
            let _ = viewer.kill();
            panic!("viewer never connected");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The viewer's machine dies: no DELETE, no DTLS close.
    viewer.kill().unwrap();
    viewer.wait().unwrap();
    let killed = std::time::Instant::now();
    while status("sessions") != 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "session of a dead viewer still alive after 60 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "dead viewer's session torn down {:.1} s after it died",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(status("viewers"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_loss_indication_brings_an_idr() {
    // No periodic IDRs: only the join and the PLI can cause one.
    let daemon = Daemon::start("[video]\nwidth = 640\nheight = 480\nkeyframe_interval_ms = 60000\n[audio]\nenabled = false\n").unwrap();
    let how = Watch {
        pli_at_frame: Some(45),
        ..Watch::decoding(90, Duration::from_secs(60))
    };
    let report = watch(&format!("{}/whep", daemon.base_url), how)
        .await
        .unwrap();
    assert!(report.frames_decoded >= 90, "{report:?}");
    assert_eq!(
        report.keyframe_at.first(),
        Some(&0),
        "the stream starts at an IDR"
    );
    // The PLI at picture 45 comes 1.5 s after the join's IDR, past the 500 ms coalescing gap:
    // an IDR follows within a few pictures, and nothing else causes one.
    let answered = report.keyframe_at.iter().any(|&at| (46..=55).contains(&at));
    assert!(
        answered,
        "no IDR after the PLI: IDRs at {:?}",
        report.keyframe_at
    );
    assert!(report.keyframes <= 2, "IDRs at {:?}", report.keyframe_at);
    assert_eq!(report.decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_asking_for_key_frames_again_and_again_gets_one_a_second_at_most() {
    // No periodic IDRs. One viewer sends a PLI every 3 pictures (10 a second, as a viewer on a
    // lossy link may); another, beside it, watches 6 s and counts the IDRs it is sent.
    let daemon = Daemon::start(
        "[video]\nwidth = 320\nheight = 240\nkeyframe_interval_ms = 60000\n[audio]\nenabled = false\n",
    )
    .unwrap();
    let whep = format!("{}/whep", daemon.base_url);
    let asking = Watch {
        pli_every: Some(3),
        ..Watch::decoding(100_000, Duration::from_secs(60))
    };
    let lossy = Viewer::join(Via::Whep(whep.clone()), asking).await.unwrap();
    let beside = Viewer::join(
        Via::Whep(whep),
        Watch::decoding(180, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let report = beside.wait_for(180, Duration::from_secs(60)).await;
    let asked = lossy.report();
    eprintln!(
        "beside a viewer asking 10 times a second: IDRs at {:?} of {} pictures",
        report.keyframe_at, report.frames_decoded
    );
    assert!(report.frames_decoded >= 180, "{report:?}");
    assert_eq!(report.decode_errors, 0);
    // Its own IDR to start from, then one a second at most for the other's requests (500 ms
    // apart without the limit): judged by the time the pictures span (their stamps), as a
    // loaded machine skips pictures.
    let stamp = |p: &Option<onair_tests::picture::Picture>| {
        p.as_ref()
            .and_then(|p| p.stamp)
            .map(|s| s.wallclock_ms)
            .expect("stamped pictures")
    };
    let seconds = stamp(&report.last).saturating_sub(stamp(&report.first)) as f64 / 1000.0;
    let allowed = 2 + seconds.ceil() as usize;
    assert!(
        report.keyframes <= allowed,
        "{} IDRs in {seconds:.1} s, at {:?}",
        report.keyframes,
        report.keyframe_at
    );
    // The asking viewer is still served: more IDRs than the join's.
    assert!(report.keyframes >= 4, "IDRs at {:?}", report.keyframe_at);
    assert!(asked.frames_decoded > 100, "{asked:?}");
    let _ = lossy.leave().await;
    let _ = beside.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_sends_the_cameras_own_h264_and_its_key_frames_only() {
    // The test source as an H.264 camera: an IDR every second that nobody can shorten, SPS
    // and PPS only before its first one. The viewer joins later, so it can only decode if
    // onair puts the kept SPS/PPS in front of the next IDR.
    let daemon = Daemon::start(
        "[video]\nencoder = \"passthrough\"\nwidth = 640\nheight = 480\nkeyframe_interval_ms = 1000\n[audio]\nenabled = false\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = get(&format!("{}/api/status", daemon.base_url)).unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["video"]["encoder"], "passthrough", "{status}");
    // openh264 writes constrained baseline as 42c0; viewers are offered the spelling
    // browsers use.
    assert_eq!(status["video"]["profile_level_id"], "42e01e", "{status}");

    let how = Watch {
        pli_at_frame: Some(45),
        ..Watch::decoding(100, Duration::from_secs(60))
    };
    let report = watch(&format!("{}/whep", daemon.base_url), how)
        .await
        .unwrap();
    eprintln!(
        "passthrough: first picture {:?} after the POST, IDRs at {:?}",
        report.time_to_first_frame, report.keyframe_at
    );
    assert!(report.frames_decoded >= 100, "{report:?}");
    assert_eq!(report.decode_errors, 0);
    let last = report.last.as_ref().expect("a decoded picture");
    assert_eq!((last.width, last.height), (640, 480));
    assert!(bars_match(&last.bars, TOLERANCE), "{:?}", last.bars);
    // Only the camera's IDRs, a second apart: neither the join nor the PLI at picture 45
    // produced one. The first came from the kept GOP, re-timed for the catch-up: it is judged
    // by pictures (a second is 30; a join's or a PLI's IDR would come within a few, and a
    // loaded machine skips some); those after it by their RTP timestamps (capture times).
    assert_eq!(report.keyframe_at.first(), Some(&0), "{report:?}");
    if let [first, second, ..] = report.keyframe_at[..] {
        assert!(
            second - first >= 15,
            "IDRs at pictures {:?}",
            report.keyframe_at
        );
    }
    for pair in report.keyframe_rtp.windows(2).skip(1) {
        let apart = f64::from(pair[1].wrapping_sub(pair[0])) / 90_000.0;
        assert!(
            apart >= 0.8,
            "IDRs {apart:.2} s apart, closer than the camera's period: at pictures {:?}",
            report.keyframe_at
        );
    }
}
