//! `GET /snapshot.jpg`: a JPEG of the current picture, decoded and looked at.

use std::time::{Duration, Instant};

use onair_hal::synthetic::{BARS, bar_probe_points};
use onair_tests::daemon::{Daemon, agent};
use onair_tests::metrics::scrape;

/// A snapshot as fetched: status, content type and body.
fn fetch(url: &str) -> (u16, String, Vec<u8>) {
    let mut response = agent().get(url).call().unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_vec()
        .unwrap();
    (status, kind, body)
}

/// A JPEG decoded: its size and RGB pixels.
struct Decoded {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

fn decode(jpeg: &[u8]) -> Decoded {
    let mut decoder = zune_jpeg::JpegDecoder::new(std::io::Cursor::new(jpeg));
    let rgb = decoder.decode().expect("a JPEG");
    let info = decoder.info().expect("its header");
    Decoded {
        width: u32::from(info.width),
        height: u32::from(info.height),
        rgb,
    }
}

impl Decoded {
    /// The mean RGB of the 4x4 pixels around (`x`, `y`).
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        let mut sum = [0u32; 3];
        for yy in y - 2..y + 2 {
            for xx in x - 2..x + 2 {
                let i = (yy * self.width + xx) as usize * 3;
                for (total, value) in sum.iter_mut().zip(&self.rgb[i..i + 3]) {
                    *total += u32::from(*value);
                }
            }
        }
        sum.map(|s| (s / 16) as u8)
    }

    /// Every colour bar of the test pattern where it should be, ±`tolerance` per channel.
    fn assert_bars(&self, tolerance: u8) {
        let points = bar_probe_points(self.width, self.height);
        for (want, (x, y)) in BARS.iter().zip(points) {
            let got = self.at(x, y);
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(g, w)| g.abs_diff(*w) <= tolerance),
                "bar at ({x}, {y}): rgb{got:?}, want rgb{want:?} ±{tolerance}"
            );
        }
    }
}

#[test]
fn the_snapshot_is_a_jpeg_of_the_current_picture_at_the_streams_size_or_the_width_asked() {
    let daemon = Daemon::start("[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n").unwrap();
    let url = format!("{}/snapshot.jpg", daemon.base_url);
    let (status, kind, jpeg) = fetch(&url);
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    let full = decode(&jpeg);
    assert_eq!((full.width, full.height), (1280, 720));
    full.assert_bars(12);

    let (status, _, jpeg) = fetch(&format!("{url}?width=640"));
    assert_eq!(status, 200);
    let small = decode(&jpeg);
    assert_eq!((small.width, small.height), (640, 360));
    small.assert_bars(12);

    for bad in ["0", "abc", "5000"] {
        let (status, _, body) = fetch(&format!("{url}?width={bad}"));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "width={bad}: {body}");
        assert!(body.starts_with("width: "), "{body}");
    }
}

#[test]
fn many_clients_at_once_cost_one_encode() {
    let daemon = Daemon::start("[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n").unwrap();
    let url = format!("{}/snapshot.jpg?width=320", daemon.base_url);
    let before = scrape(&daemon.base_url, None)
        .unwrap()
        .value("onair_snapshots_encoded_total", &[])
        .unwrap();
    let asked = Instant::now();
    let bodies: Vec<_> = std::thread::scope(|s| {
        let asks: Vec<_> = (0..20).map(|_| s.spawn(|| fetch(&url))).collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let spent = asked.elapsed();
    assert!(bodies.iter().all(|(status, _, _)| *status == 200));
    let after = scrape(&daemon.base_url, None)
        .unwrap()
        .value("onair_snapshots_encoded_total", &[])
        .unwrap();
    // 20 clients at once: one encode a second whatever their number (a quiet machine answers
    // them all within the second; a loaded one may take longer), and each JPEG made is the
    // one everybody asking in its second got.
    let mut distinct: Vec<&Vec<u8>> = bodies.iter().map(|(_, _, jpeg)| jpeg).collect();
    distinct.sort();
    distinct.dedup();
    let encodes = after - before;
    let allowed = 1.0 + spent.as_secs_f64().ceil();
    eprintln!(
        "20 clients in {spent:?}: {encodes} encodes, {} different JPEGs",
        distinct.len()
    );
    assert!(
        (1.0..=allowed).contains(&encodes),
        "{before} → {after} in {spent:?}"
    );
    assert!(distinct.len() as f64 <= encodes, "{} JPEGs", distinct.len());
    // A second later the picture is new.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, _, later) = fetch(&url);
    assert_ne!(later, bodies[0].2);
}

#[test]
fn a_passthrough_cameras_snapshot_is_its_latest_key_frame() {
    let daemon = Daemon::start(
        "[video]\nencoder = \"passthrough\"\nwidth = 640\nheight = 480\n\
         keyframe_interval_ms = 1000\n[audio]\nenabled = false\n[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n",
    )
    .unwrap();
    let url = format!("{}/snapshot.jpg", daemon.base_url);
    let (status, kind, jpeg) = fetch(&url);
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
    let picture = decode(&jpeg);
    assert_eq!((picture.width, picture.height), (640, 480));
    picture.assert_bars(16);
}

#[test]
fn without_the_viewer_token_there_is_no_snapshot() {
    let daemon = Daemon::start(
        "[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n[access]\nviewer_token = \"viewer-token-0123456789\"\n",
    )
    .unwrap();
    let url = format!("{}/snapshot.jpg", daemon.base_url);
    assert_eq!(fetch(&url).0, 401);
    let (status, kind, _) = fetch(&format!("{url}?token=viewer-token-0123456789"));
    assert_eq!((status, kind.as_str()), (200, "image/jpeg"));
}

#[test]
fn a_client_rotating_widths_costs_no_more_encodes_than_a_few_sizes() {
    let daemon = Daemon::start("[http]\nlisten = \"127.0.0.1:0\"\n[webrtc]\nport = 0\n").unwrap();
    let url = format!("{}/snapshot.jpg", daemon.base_url);
    let encoded = || {
        scrape(&daemon.base_url, None)
            .unwrap()
            .value("onair_snapshots_encoded_total", &[])
            .unwrap()
    };
    let before = encoded();
    let asked = Instant::now();
    let mut sizes = std::collections::BTreeSet::new();
    for width in (16..=615).step_by(3) {
        let (status, _, jpeg) = fetch(&format!("{url}?width={width}"));
        assert_eq!(status, 200, "width={width}");
        let picture = decode(&jpeg);
        assert!(
            picture.width <= width.max(160),
            "{width}: {}",
            picture.width
        );
        sizes.insert(picture.width);
    }
    let spent = asked.elapsed();
    let encodes = encoded() - before;
    eprintln!("200 widths in {spent:?}: {encodes} encodes, sizes {sizes:?}");
    // 16..=615 rounds to 160, 320 or 480: three encodes a second at most.
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [160, 320, 480]);
    let allowed = 3.0 * (1.0 + spent.as_secs_f64().ceil());
    assert!(encodes <= allowed, "{encodes} encodes in {spent:?}");
}
