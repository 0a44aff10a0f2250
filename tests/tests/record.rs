//! `[record]`: segments on disk, read back with ffprobe and decoded with ffmpeg.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use onair_tests::daemon::{Daemon, binary};

/// A fresh directory for one test's recordings.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onair-record-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The segments in `dir`, oldest first (their names are their UTC start times).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    all.retain(|p| p.extension().is_some_and(|e| e == "mp4"));
    all.sort();
    all
}

/// What ffprobe says of a file: codec names and the duration in seconds.
fn probe(file: &Path) -> (Vec<String>, f64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name:format=duration",
        ])
        .args(["-of", "json"])
        .arg(file)
        .output()
        .expect("ffprobe (Debian's ffmpeg package)");
    assert!(out.status.success(), "ffprobe {}: {out:?}", file.display());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codecs = json["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["codec_name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let duration = json["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    (codecs, duration)
}

/// ffmpeg decodes every frame of `file`: its complaints (empty when none). Pictures keep
/// their capture times, a few milliseconds off a 30 fps grid: the null output keeps the
/// file's time base (`-enc_time_base -1`) rather than round them onto 1/30 s, where two
/// could meet.
fn decode_errors(file: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-enc_time_base", "-1", "-f", "null", "-"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        errors
    } else {
        format!("exit {}: {errors}", out.status)
    }
}

/// The stamp's frame number on the first (`first`) or last picture of `file`.
fn stamp(file: &Path, first: bool) -> Option<u64> {
    let (w, h) = (1280usize, 720usize);
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error"]);
    if !first {
        command.args(["-sseof", "-0.5"]);
    }
    let out = command
        .arg("-i")
        .arg(file)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .unwrap();
    let frame = w * h;
    let luma = match first {
        true => out.stdout.get(..frame)?,
        false => out.stdout.get(out.stdout.len().checked_sub(frame)?..)?,
    };
    onair_hal::synthetic::read_stamp(luma, w, w as u32, h as u32).map(|s| u64::from(s.sequence))
}

#[test]
fn ten_second_segments_survive_kill_9_and_play_back_to_back() {
    let dir = scratch("kill");
    let daemon = Daemon::start(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n\
         [record]\nenabled = true\ndir = \"{}\"\nsegment_seconds = 10\nmin_free_mb = 0\n",
        dir.display()
    ))
    .unwrap();
    // Three whole segments and a fourth begun (35 s on a quiet machine), then the kill.
    let deadline = Instant::now() + Duration::from_secs(120);
    while segments(&dir).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(5));
    let killed = Command::new("kill")
        .args(["-9", &daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(daemon);

    let all = segments(&dir);
    assert!(all.len() >= 4, "{all:?}");
    let (whole, cut) = all.split_at(all.len() - 1);
    for segment in whole {
        let (codecs, duration) = probe(segment);
        eprintln!("{}: {codecs:?}, {duration} s", segment.display());
        assert_eq!(codecs, ["h264", "opus"], "{}", segment.display());
        assert!(
            (9.5..=10.5).contains(&duration),
            "{}: {duration} s",
            segment.display()
        );
        assert_eq!(decode_errors(segment), "", "{}", segment.display());
    }
    // The segment the kill cut short is readable up to its last whole fragment.
    let (codecs, duration) = probe(&cut[0]);
    eprintln!("cut: {codecs:?}, {duration} s");
    assert_eq!(codecs, ["h264", "opus"]);
    assert!(duration > 0.5, "{duration} s");
    // Back to back: each segment's first picture follows the one before's last (the next
    // frame number; a loaded machine's camera may skip one or two, as a real one does).
    for pair in all.windows(2) {
        let last = stamp(&pair[0], false).expect("a stamp on the last picture");
        let first = stamp(&pair[1], true).expect("a stamp on the first picture");
        assert!(
            (last + 1..=last + 3).contains(&first),
            "{last} → {first}: {} → {}",
            pair[0].display(),
            pair[1].display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_keeps_the_directory_under_max_bytes_deleting_the_oldest() {
    let dir = scratch("bytes");
    // 2 s segments of about 0.5 MB; room for about three.
    let max_bytes = 1_500_000u64;
    let daemon = Daemon::start(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n\
         [record]\nenabled = true\ndir = \"{}\"\nsegment_seconds = 2\n\
         max_bytes = {max_bytes}\nmin_free_mb = 0\n",
        dir.display()
    ))
    .unwrap();
    let start = Instant::now();
    let mut seen: Vec<PathBuf> = Vec::new();
    while start.elapsed() < Duration::from_secs(16) {
        let now = segments(&dir);
        let bytes: u64 = now
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        // Retention runs once a second, on a loaded machine sometimes later: at most about
        // two seconds' growth of the segment being written over.
        assert!(bytes <= max_bytes + 600_000, "{bytes} bytes in {now:?}");
        // What is left is always the newest: nothing newer went before something older.
        if let Some(oldest) = now.first() {
            assert!(
                seen.iter()
                    .filter(|s| *s < oldest)
                    .all(|s| !now.contains(s)),
                "{now:?}"
            );
        }
        for segment in now {
            if !seen.contains(&segment) {
                seen.push(segment);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The final listing is of a directory nobody writes to any more.
    assert!(daemon.stop().unwrap().success());
    let left = segments(&dir);
    for segment in &left {
        if !seen.contains(segment) {
            seen.push(segment.clone());
        }
    }
    assert!(seen.len() > left.len() + 2, "made {seen:?}, left {left:?}");
    assert_eq!(left, seen[seen.len() - left.len()..], "the newest are kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_directory_that_cannot_be_written_stops_onaird_at_start() {
    let config = scratch("unwritable").with_extension("toml");
    std::fs::write(
        &config,
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n\
         [record]\nenabled = true\ndir = \"/proc/onair-recordings\"\n",
    )
    .unwrap();
    let mut child = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "onaird kept running");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("record.dir /proc/onair-recordings: cannot record there"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&config);
}

#[test]
fn a_passthrough_cameras_stream_is_recorded_as_it_comes() {
    let dir = scratch("passthrough");
    let daemon = Daemon::start(&format!(
        "[video]\nencoder = \"passthrough\"\nwidth = 640\nheight = 480\nkeyframe_interval_ms = 1000\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n\
         [record]\nenabled = true\ndir = \"{}\"\nsegment_seconds = 2\nmin_free_mb = 0\n",
        dir.display()
    ))
    .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    drop(daemon);
    let all = segments(&dir);
    assert!(all.len() >= 3, "{all:?}");
    for (i, segment) in all.iter().enumerate() {
        let (codecs, duration) = probe(segment);
        eprintln!("{}: {codecs:?}, {duration} s", segment.display());
        assert_eq!(codecs, ["h264", "opus"], "{}", segment.display());
        assert_eq!(decode_errors(segment), "", "{}", segment.display());
        // The camera's IDRs come every second: segments of 2 s, but the last, cut short.
        if i + 1 < all.len() {
            assert!(
                (1.5..=2.5).contains(&duration),
                "{}: {duration} s",
                segment.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const VIEWER: &str = "viewer-token-0123456789";
use onair_tests::daemon::OPERATOR;

/// A request to the daemon with `token`: status, headers of interest, body.
fn request(method: &str, url: &str, token: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    let agent = onair_tests::daemon::agent();
    let auth = format!("Bearer {token}");
    let mut response = match method {
        "DELETE" => agent.delete(url).header("Authorization", &auth).call(),
        _ => {
            let mut get = agent.get(url).header("Authorization", &auth);
            if let Some(range) = range {
                get = get.header("Range", range);
            }
            get.call()
        }
    }
    .unwrap();
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let headers = format!("{} {}", header("content-type"), header("content-range"));
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    (status, headers, body)
}

#[test]
fn recordings_are_listed_served_with_ranges_and_deleted_by_operators() {
    let dir = scratch("api");
    let daemon = Daemon::start(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n\
         [access]\nviewer_token = \"{VIEWER}\"\noperator_token = \"{OPERATOR}\"\n\
         [record]\nenabled = true\ndir = \"{}\"\nsegment_seconds = 2\nmin_free_mb = 0\n",
        dir.display()
    ))
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let base = &daemon.base_url;
    let (status, _, body) = request("GET", &format!("{base}/api/recordings"), VIEWER, None);
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let listed = listed.as_array().expect("a list").clone();
    assert!(listed.len() >= 2, "{listed:?}");
    assert!(
        listed[0]["name"].as_str() > listed[1]["name"].as_str(),
        "newest first"
    );
    let finished = &listed[1];
    let name = finished["name"].as_str().unwrap();
    let on_disk = std::fs::read(dir.join(name)).unwrap();
    assert_eq!(finished["bytes"], on_disk.len());
    // A 2 s segment: its start is named to the second, its end is its last write.
    let duration = finished["duration_s"].as_f64().unwrap();
    assert!((1.0..=4.0).contains(&duration), "{finished}");
    assert!(
        finished["start"].as_str().unwrap().ends_with('Z'),
        "{finished}"
    );

    let url = format!("{base}/recordings/{name}");
    let (status, headers, body) = request("GET", &url, VIEWER, None);
    assert_eq!((status, headers.trim()), (200, "video/mp4"));
    assert_eq!(body, on_disk);
    let (status, headers, body) = request("GET", &url, VIEWER, Some("bytes=100-199"));
    assert_eq!(status, 206, "{headers}");
    assert!(
        headers.contains(&format!("bytes 100-199/{}", on_disk.len())),
        "{headers}"
    );
    assert_eq!(body, on_disk[100..200]);

    for bad in ["..%2Fonair.toml", "notes.txt", "2026-01-01T00-00-00Z.mp4"] {
        let (status, _, _) = request("GET", &format!("{base}/recordings/{bad}"), VIEWER, None);
        assert_eq!(status, 404, "{bad}");
    }
    assert_eq!(request("DELETE", &url, VIEWER, None).0, 403);
    assert!(dir.join(name).exists());
    assert_eq!(request("DELETE", &url, OPERATOR, None).0, 204);
    assert!(!dir.join(name).exists());
    assert_eq!(request("GET", &url, VIEWER, None).0, 404);
    assert_eq!(request("DELETE", &url, OPERATOR, None).0, 404);
    let (status, _, _) = request(
        "GET",
        &format!("{base}/api/recordings"),
        "wrong-token-0123456789",
        None,
    );
    assert_eq!(status, 401);
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_recording_there_are_no_recordings() {
    let daemon = Daemon::start("[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n").unwrap();
    let (status, _, body) = request(
        "GET",
        &format!("{}/api/recordings", daemon.base_url),
        "",
        None,
    );
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("record.enabled"));
}

#[test]
fn chromium_plays_a_recording_from_the_viewer_page() {
    let dir = scratch("page");
    let daemon = Daemon::start(&format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n\
         [access]\nviewer_token = \"{VIEWER}\"\n\
         [record]\nenabled = true\ndir = \"{}\"\nsegment_seconds = 2\nmin_free_mb = 0\n",
        dir.display()
    ))
    .unwrap();
    // A finished segment and the one being written.
    std::thread::sleep(Duration::from_secs(5));
    let mut command = Command::new("node");
    command
        .arg(onair_tests::bench::latency::tests_dir().join("browser/recordings.mjs"))
        .args(["--url", &format!("{}/?token={VIEWER}", daemon.base_url)]);
    let played = onair_tests::bench::latency::run_json(command, Duration::from_secs(60)).unwrap();
    eprintln!("Chromium played {played}");
    assert_eq!(played["error"], serde_json::Value::Null, "{played}");
    assert_eq!(played["pageErrors"], serde_json::json!([]), "{played}");
    assert!(
        played["currentTime"].as_f64().unwrap_or(0.0) >= 1.5,
        "{played}"
    );
    assert_eq!(
        (played["width"].as_u64(), played["height"].as_u64()),
        (Some(1280), Some(720))
    );
    let name = played["name"].as_str().expect("a segment");
    assert!(dir.join(name).exists(), "{name}");
    let bars = played["bars"].as_array().expect("bars");
    for (got, want) in bars.iter().zip(onair_hal::synthetic::BARS) {
        let got: Vec<u64> = got
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        assert!(
            got.iter()
                .zip(want)
                .all(|(g, w)| g.abs_diff(u64::from(w)) <= 24),
            "bar rgb{got:?}, want rgb{want:?}: {played}"
        );
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_warning_and_the_viewers_watch_on() {
    use onair_tests::viewer::{Via, Viewer, Watch};
    // A 2 MB file system of our own (a mount namespace, as an unprivileged user may make):
    // full within seconds, nothing deleted to make room.
    let dir = scratch("full");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nbind_ips = [\"127.0.0.1\"]\nport = 0\n\
             [record]\nenabled = true\ndir = \"{}\"\nmin_free_mb = 0\n",
            dir.display()
        ),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs -o size=2m onair-test {} && exec {} --config {}",
        dir.display(),
        binary().display(),
        config.display()
    );
    let spawned = onair_tests::daemon::spawn(
        Path::new("/usr/bin/unshare"),
        &[
            "-rm".as_ref(),
            "sh".as_ref(),
            "-c".as_ref(),
            script.as_ref(),
        ],
        &[],
    )
    .unwrap();
    let (mut daemon, base, log) = (spawned.process, spawned.url, spawned.log);
    let viewer = Viewer::join(
        Via::Whep(format!("{base}/whep")),
        Watch::decoding(100_000, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    // The disk fills: a warning that names the trouble and says viewers are fine.
    let deadline = Instant::now() + Duration::from_secs(30);
    let warning = loop {
        let line = log.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        if line.contains("recording:") && line.contains("No space left") {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no warning of a full disk in 30 s"
        );
    };
    eprintln!("{warning}");
    assert!(
        warning.contains("live viewers are not affected"),
        "{warning}"
    );
    // The viewer watches on, and the camera is healthy.
    let before = viewer.frames();
    let report = viewer.wait_for(before + 60, Duration::from_secs(60)).await;
    assert!(report.frames_decoded >= before + 60, "{report:?}");
    let (status, _) = onair_tests::daemon::get(&format!("{base}/healthz")).unwrap();
    assert_eq!(status, 200);
    let _ = viewer.leave().await;
    let _ = daemon.stop();
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&dir);
}
