//! Cameras through libcamera (`video.source = "libcamera"`): Raspberry Pi camera modules, SoC
//! ISPs, and the kernel's vimc test pipeline.
//!
//! onaird does not link libcamera: every libcamera release breaks its ABI, and a daemon linked
//! against one would not start where another is installed. Instead a small C++ helper,
//! `onair-camera` (`cross/libcamera/onair-camera.cpp`), is built once per libcamera ABI and
//! installed as `/usr/libexec/onair/onair-camera-<abi>`. [`LibcameraCamera::open`] looks for
//! the `libcamera.so.<abi>` that is installed, starts the matching helper, and reads frames from
//! its stdout:
//!
//! - a packet is a 56-byte header ([`Header`]) and a tightly packed picture; the first packet
//!   ("OLCC") only announces the format, the others ("OLCF") are frames;
//! - a reader thread parses them and hands the newest one over through a channel of one, so
//!   [`VideoSource::read_frame`] waits with a timeout and never blocks forever; when the
//!   daemon is slower than the camera the helper drops frames (it never queues old ones);
//! - the helper's stderr (libcamera's warnings, its one-line errors) goes to the log, and its
//!   last line is kept for errors;
//! - the helper is killed when the camera is dropped; a helper that exits is a read error
//!   that names the camera and says why.
//!
//! No libcamera, or one this build has no helper for: [`HalError::Open`] saying what was found
//! and which versions are supported; the daemon's supervisor keeps retrying meanwhile.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::v4l2::clock::{capture_instant, monotonic_now};
use crate::{HalError, PixelFormat, VideoFormat, VideoFormatRequest, VideoFrame, VideoSource};

/// The libcamera ABIs this build of onair has helpers for (the part of `libcamera.so.<abi>`
/// after `.so.`): Debian 12's 0.0.3 and Debian 13's 0.4.
pub const SUPPORTED_ABIS: &[&str] = &["0.0.3", "0.4"];
/// Where the helpers are installed.
pub const HELPER_DIR: &str = "/usr/libexec/onair";
/// Environment variable naming a helper to use instead of looking for one (tests).
pub const HELPER_ENV: &str = "ONAIR_LIBCAMERA_HELPER";
/// Length of a packet header.
pub const HEADER_LEN: usize = 56;
/// Wait for the format announcement: the helper starts libcamera's camera manager, which
/// enumerates every media device, and configures the camera.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// Wait for the first frame, then for each later one (unless four frame intervals are longer).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Helper stderr lines logged per helper before they are only counted (libcamera can be loud).
const MAX_LOGGED_LINES: u32 = 100;

/// Where to look for `libcamera.so.<abi>`.
fn library_dirs() -> Vec<PathBuf> {
    let triplet = match std::env::consts::ARCH {
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "x86_64" => "x86_64-linux-gnu",
        other => other,
    };
    [
        format!("/usr/lib/{triplet}"),
        format!("/lib/{triplet}"),
        "/usr/local/lib".into(),
        format!("/usr/local/lib/{triplet}"),
        "/usr/lib".into(),
        "/usr/lib64".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// The ABIs of the `libcamera.so.<abi>` files in `dirs` (not `libcamera-base`, not the
/// unversioned development link), sorted, without duplicates.
fn installed_abis(dirs: &[PathBuf]) -> Vec<String> {
    let mut abis: Vec<String> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let abi = name.strip_prefix("libcamera.so.")?;
            (!abi.is_empty()).then(|| abi.to_string())
        })
        .collect();
    abis.sort();
    abis.dedup();
    abis
}

/// Which helper to run, given the installed ABIs and whether a helper file exists; the error
/// says what is missing in words.
fn choose_helper(
    installed: &[String],
    dirs: &[PathBuf],
    helper_dir: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    let supported = SUPPORTED_ABIS.join(", ");
    if installed.is_empty() {
        let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        return Err(format!(
            "libcamera not found (no libcamera.so.* in {}); this onair supports libcamera {supported} \
             (Debian 12: libcamera0.0.3, Debian 13: libcamera0.4)",
            searched.join(", ")
        ));
    }
    let mut missing = Vec::new();
    // An ABI may be matched exactly (0.0.3) or by its full version file (libcamera.so.0.4.0).
    for abi in SUPPORTED_ABIS {
        if installed
            .iter()
            .any(|i| i == abi || i.strip_prefix(abi).is_some_and(|r| r.starts_with('.')))
        {
            let helper = helper_dir.join(format!("onair-camera-{abi}"));
            if exists(&helper) {
                return Ok(helper);
            }
            missing.push(helper.display().to_string());
        }
    }
    let found = installed.join(", ");
    if missing.is_empty() {
        Err(format!(
            "libcamera {found} is installed, but this onair supports libcamera {supported} only"
        ))
    } else {
        Err(format!(
            "libcamera {found} is installed, but its helper {} is missing (reinstall onair)",
            missing.join(" / ")
        ))
    }
}

/// The helper to run: `$ONAIR_LIBCAMERA_HELPER`, else the one for the installed libcamera.
pub fn find_helper() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(HELPER_ENV) {
        return Ok(PathBuf::from(path));
    }
    let dirs = library_dirs();
    choose_helper(
        &installed_abis(&dirs),
        &dirs,
        Path::new(HELPER_DIR),
        Path::is_file,
    )
}

/// A packet header from the helper (little-endian; see `onair-camera.cpp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `true` for the format announcement ("OLCC"), `false` for a frame ("OLCF").
    pub announce: bool,
    /// Picture size.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// What the bytes are.
    pub pixel: PixelFormat,
    /// libcamera's frame sequence number.
    pub sequence: u64,
    /// Capture time on `CLOCK_MONOTONIC`, in nanoseconds (0: unknown).
    pub timestamp_ns: u64,
    /// Bytes that follow the header.
    pub payload_len: usize,
    /// Frames the helper dropped so far because onaird was slow.
    pub dropped: u32,
}

/// DRM fourcc codes of the formats the helper sends.
const YU12: u32 = u32::from_le_bytes(*b"YU12");
const NV12: u32 = u32::from_le_bytes(*b"NV12");
/// libcamera `RGB888`: bytes B, G, R.
const RG24: u32 = u32::from_le_bytes(*b"RG24");
/// libcamera `BGR888`: bytes R, G, B.
const BG24: u32 = u32::from_le_bytes(*b"BG24");

fn fourcc_text(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| match b {
            b' '..=b'~' => b as char,
            _ => '?',
        })
        .collect()
}

/// Parses and checks one header: magic, length, a format onair takes, even sizes, tight
/// strides, a payload of exactly one picture (or none for the announcement).
pub fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, String> {
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | u64::from(u32_at(at + 4)) << 32;
    let announce = match &bytes[..4] {
        b"OLCC" => true,
        b"OLCF" => false,
        other => {
            return Err(format!(
                "bad packet magic {other:02x?} (not an onair-camera helper?)"
            ));
        }
    };
    if u32_at(4) as usize != HEADER_LEN {
        return Err(format!(
            "header length {} (this onair reads {HEADER_LEN})",
            u32_at(4)
        ));
    }
    let (width, height, fourcc) = (u32_at(8), u32_at(12), u32_at(16));
    let pixel = match fourcc {
        YU12 => PixelFormat::I420,
        NV12 => PixelFormat::Nv12,
        RG24 => PixelFormat::Bgr24,
        BG24 => PixelFormat::Rgb24,
        other => return Err(format!("unknown pixel format {}", fourcc_text(other))),
    };
    if width == 0
        || height == 0
        || width % 2 != 0
        || height % 2 != 0
        || width > 8192
        || height > 8192
    {
        return Err(format!("bad picture size {width}x{height}"));
    }
    let strides = [u32_at(20), u32_at(24), u32_at(28)];
    let tight = match pixel {
        PixelFormat::I420 => [width, width / 2, width / 2],
        PixelFormat::Nv12 => [width, width, 0],
        _ => [width * 3, 0, 0],
    };
    if strides != tight {
        return Err(format!("strides {strides:?} are not tight ({tight:?})"));
    }
    let payload_len = u32_at(48) as usize;
    let want = match announce {
        true => 0,
        false => pixel.frame_len(width, height).unwrap_or(0),
    };
    if payload_len != want {
        return Err(format!("payload of {payload_len} bytes, expected {want}"));
    }
    Ok(Header {
        announce,
        width,
        height,
        pixel,
        sequence: u64_at(32),
        timestamp_ns: u64_at(40),
        payload_len,
        dropped: u32_at(52),
    })
}

/// What the camera was asked for besides the size: which camera, and controls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibcameraSettings {
    /// The camera's libcamera id or its index in libcamera's list; `None`: the first.
    pub camera: Option<String>,
    /// More helper arguments (`--rotation 180`, `--af-mode continuous`, …).
    pub extra_args: Vec<String>,
}

/// A frame (or the end of the stream) from the reader thread.
type Delivery = Result<(Header, Vec<u8>), String>;

/// The helper's stderr: its last line, and whether it has ended.
#[derive(Debug, Default)]
struct Stderr {
    last: String,
    closed: bool,
}

/// A libcamera camera, streaming through its helper.
pub struct LibcameraCamera {
    /// "libcamera camera 0", "libcamera camera /base/…", for errors.
    name: String,
    description: String,
    format: VideoFormat,
    child: Child,
    /// Held so the helper sees EOF on stdin when onaird goes.
    _stdin: Option<ChildStdin>,
    frames: Receiver<Delivery>,
    /// Spent frame buffers back to the reader thread, so it does not allocate per frame.
    spare: SyncSender<Vec<u8>>,
    stderr: Arc<Mutex<Stderr>>,
    frame_timeout: Duration,
    started: bool,
    /// Set when the helper has gone: later reads fail at once with this.
    dead: Option<String>,
    dropped: u32,
}

impl LibcameraCamera {
    /// Starts the helper for the installed libcamera (or `$ONAIR_LIBCAMERA_HELPER`) and waits
    /// until it has configured the camera.
    pub fn open(
        settings: &LibcameraSettings,
        wanted: VideoFormatRequest,
    ) -> Result<LibcameraCamera, HalError> {
        let name = match &settings.camera {
            Some(camera) => format!("libcamera camera {camera}"),
            None => "libcamera camera 0".to_string(),
        };
        let open_error = |reason: String| HalError::Open {
            device: name.clone(),
            reason,
        };
        if wanted.h264 {
            return Err(open_error(
                "libcamera cameras deliver pictures, not H.264: use video.encoder = \"openh264\""
                    .into(),
            ));
        }
        let helper = find_helper().map_err(open_error)?;
        Self::spawn(&helper, name, settings, wanted)
    }

    /// Runs `helper` (for tests: any program that speaks the protocol).
    pub fn spawn(
        helper: &Path,
        name: String,
        settings: &LibcameraSettings,
        wanted: VideoFormatRequest,
    ) -> Result<LibcameraCamera, HalError> {
        let mut command = Command::new(helper);
        command
            .arg("--size")
            .arg(format!("{}x{}", wanted.width, wanted.height))
            .arg("--fps")
            .arg(wanted.fps.max(1).to_string());
        if let Some(camera) = &settings.camera {
            command.arg("--camera").arg(camera);
        }
        command
            .args(&settings.extra_args)
            .env("LIBCAMERA_LOG_NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("LIBCAMERA_LOG_LEVELS").is_none() {
            command.env("LIBCAMERA_LOG_LEVELS", "*:WARN");
        }
        let mut child = command.spawn().map_err(|e| HalError::Open {
            device: name.clone(),
            reason: format!("cannot start {}: {e}", helper.display()),
        })?;
        let stdin = child.stdin.take();
        let (frames_tx, frames) = sync_channel(1);
        let (spare, spare_rx) = sync_channel(2);
        let stderr = Arc::new(Mutex::new(Stderr::default()));
        let spawned = (|| {
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let err = child.stderr.take().ok_or("no stderr")?;
            let log_name = name.clone();
            let state = stderr.clone();
            std::thread::Builder::new()
                .name("onair-lcam-err".into())
                .spawn(move || read_stderr(err, &log_name, &state))
                .map_err(|_| "cannot start a thread")?;
            std::thread::Builder::new()
                .name("onair-lcam".into())
                .spawn(move || read_packets(stdout, &frames_tx, &spare_rx))
                .map_err(|_| "cannot start a thread")?;
            Ok::<(), &str>(())
        })();
        let mut camera = LibcameraCamera {
            description: format!("{name} (libcamera, {})", helper.display()),
            name,
            format: VideoFormat {
                pixel: PixelFormat::I420,
                width: wanted.width,
                height: wanted.height,
                fps: wanted.fps.max(1),
            },
            child,
            _stdin: stdin,
            frames,
            spare,
            stderr,
            frame_timeout: FRAME_TIMEOUT.max(Duration::from_secs(4) / wanted.fps.max(1)),
            started: false,
            dead: None,
            dropped: 0,
        };
        if let Err(e) = spawned {
            return Err(camera.open_error(e.to_string()));
        }
        match camera.frames.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok((header, _))) if header.announce => {
                camera.format.pixel = header.pixel;
                camera.format.width = header.width;
                camera.format.height = header.height;
                if (header.width, header.height) != (wanted.width, wanted.height) {
                    warn!(
                        "{}: asked for {}x{}, the camera gives {}x{}",
                        camera.name, wanted.width, wanted.height, header.width, header.height
                    );
                }
                info!(
                    "{}: streaming {:?} {}x{} at {} fps",
                    camera.name, header.pixel, header.width, header.height, camera.format.fps
                );
                Ok(camera)
            }
            Ok(Ok(_)) => Err(camera.open_error("a frame came before the format".into())),
            Ok(Err(e)) => Err(camera.open_error(e)),
            Err(RecvTimeoutError::Timeout) => Err(camera.open_error(format!(
                "the helper did not configure the camera within {} s",
                OPEN_TIMEOUT.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(camera.open_error("helper gone".into())),
        }
    }

    fn open_error(&mut self, what: String) -> HalError {
        HalError::Open {
            device: self.name.clone(),
            reason: self.why_dead(what),
        }
    }

    /// `what`, with the helper's exit status and last stderr line once it has exited.
    fn why_dead(&mut self, what: String) -> String {
        let status = wait_briefly(&mut self.child, Duration::from_millis(1500));
        // Its stderr ends when it exits; give the log thread a moment to read the last line.
        let deadline = Instant::now() + Duration::from_millis(500);
        let last = loop {
            let state = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
            if state.closed || Instant::now() >= deadline {
                break state.last.clone();
            }
            drop(state);
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut reason = what;
        match status {
            Some(status) => reason.push_str(&format!("; the helper {}", exit_text(status))),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if !last.is_empty() {
            reason.push_str(&format!(": {last}"));
        }
        reason
    }

    /// The helper has gone: this handle never delivers again, so the camera is opened anew
    /// (a new helper) at once, then with a backoff.
    fn gone(&self, reason: String) -> HalError {
        HalError::Gone {
            device: self.name.clone(),
            reason,
        }
    }

    fn read_error(&self, reason: String) -> HalError {
        HalError::Read {
            device: self.name.clone(),
            reason,
        }
    }
}

/// The exit status in words; 127 is the loader's "cannot load libcamera".
fn exit_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(127), _) => "could not start (exit 127: a library is missing)".into(),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".into(),
    }
}

/// The child's exit status if it exits within `limit`.
fn wait_briefly(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Reader thread: packets from the helper's stdout into `frames` until either side ends.
fn read_packets(mut out: impl Read, frames: &SyncSender<Delivery>, spare: &Receiver<Vec<u8>>) {
    let mut header = [0u8; HEADER_LEN];
    loop {
        if let Err(e) = out.read_exact(&mut header) {
            let end = match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "the helper stopped sending".to_string(),
                _ => format!("reading from the helper: {e}"),
            };
            let _ = frames.send(Err(end));
            return;
        }
        let parsed = match parse_header(&header) {
            Ok(parsed) => parsed,
            Err(e) => {
                let _ = frames.send(Err(e));
                return;
            }
        };
        let mut data = spare.try_recv().unwrap_or_default();
        data.resize(parsed.payload_len, 0);
        if let Err(e) = out.read_exact(&mut data) {
            let _ = frames.send(Err(format!("reading a frame from the helper: {e}")));
            return;
        }
        // Blocks while the daemon has not taken the previous frame; meanwhile the helper's
        // pipe fills and the helper drops frames.
        if frames.send(Ok((parsed, data))).is_err() {
            return;
        }
    }
}

/// Stderr thread: every line to the log (the first ones), the last one kept for errors.
fn read_stderr(err: impl Read, name: &str, state: &Mutex<Stderr>) {
    let mut lines = 0u32;
    for line in BufReader::new(err).lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        lines += 1;
        // At info: the log keeps one warning per source line every 10 s (onair_signal::process),
        // which would leave one of the helper's lines (a control the camera lacks, libcamera's
        // own warnings) and drop the rest. MAX_LOGGED_LINES bounds them; a failure's last line
        // comes back in the error.
        if lines <= MAX_LOGGED_LINES {
            info!("{name}: {line}");
        } else if lines.is_multiple_of(1000) {
            info!("{name}: {lines} lines from the helper so far; latest: {line}");
        }
        state.lock().unwrap_or_else(|p| p.into_inner()).last = line;
    }
    state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
}

impl VideoSource for LibcameraCamera {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn read_frame(&mut self, frame: &mut VideoFrame) -> Result<(), HalError> {
        if let Some(reason) = &self.dead {
            return Err(self.gone(reason.clone()));
        }
        let timeout = match self.started {
            true => self.frame_timeout,
            false => FIRST_FRAME_TIMEOUT,
        };
        let (header, data) = match self.frames.recv_timeout(timeout) {
            Ok(Ok(packet)) if !packet.0.announce => packet,
            Ok(Ok(_)) => return Err(self.read_error("a second format announcement".into())),
            Err(RecvTimeoutError::Timeout) => {
                return Err(self.read_error(format!(
                    "no frame within {} s; the camera stopped",
                    timeout.as_secs_f32()
                )));
            }
            Ok(Err(e)) => {
                let reason = self.why_dead(e);
                self.dead = Some(reason.clone());
                return Err(self.gone(reason));
            }
            Err(RecvTimeoutError::Disconnected) => {
                let reason = self.why_dead("the helper's reader stopped".into());
                self.dead = Some(reason.clone());
                return Err(self.gone(reason));
            }
        };
        self.started = true;
        if header.dropped > self.dropped {
            // The daemon fell behind; the helper kept only the newest frames.
            self.dropped = header.dropped;
        }
        if (header.pixel, header.width, header.height)
            != (self.format.pixel, self.format.width, self.format.height)
        {
            self.format.pixel = header.pixel;
            self.format.width = header.width;
            self.format.height = header.height;
        }
        let old = std::mem::replace(&mut frame.data, data);
        let _ = self.spare.try_send(old);
        frame.sequence = header.sequence;
        let stamp = (header.timestamp_ns != 0).then(|| Duration::from_nanos(header.timestamp_ns));
        frame.captured = capture_instant(stamp, monotonic_now(), Instant::now());
        Ok(())
    }
}

impl Drop for LibcameraCamera {
    fn drop(&mut self) {
        // SIGKILL: the helper has nothing to save, and libcamera's own cleanup can hang on a
        // wedged driver. The kernel releases the camera with the process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(
        magic: &[u8; 4],
        w: u32,
        h: u32,
        fourcc: &[u8; 4],
        strides: [u32; 3],
        len: u32,
    ) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(magic);
        b[4..8].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[8..12].copy_from_slice(&w.to_le_bytes());
        b[12..16].copy_from_slice(&h.to_le_bytes());
        b[16..20].copy_from_slice(fourcc);
        for (i, s) in strides.iter().enumerate() {
            b[20 + 4 * i..24 + 4 * i].copy_from_slice(&s.to_le_bytes());
        }
        b[32..40].copy_from_slice(&0x1_0000_0002u64.to_le_bytes());
        b[40..48].copy_from_slice(&123_456_789_000u64.to_le_bytes());
        b[48..52].copy_from_slice(&len.to_le_bytes());
        b[52..56].copy_from_slice(&7u32.to_le_bytes());
        b
    }

    #[test]
    fn parses_frames_of_every_format() {
        let cases = [
            (
                b"YU12",
                [480, 240, 240],
                480 * 360 * 3 / 2,
                PixelFormat::I420,
            ),
            (b"NV12", [480, 480, 0], 480 * 360 * 3 / 2, PixelFormat::Nv12),
            (b"RG24", [1440, 0, 0], 480 * 360 * 3, PixelFormat::Bgr24),
            (b"BG24", [1440, 0, 0], 480 * 360 * 3, PixelFormat::Rgb24),
        ];
        for (fourcc, strides, len, pixel) in cases {
            let h = parse_header(&header(b"OLCF", 480, 360, fourcc, strides, len)).unwrap();
            assert_eq!(
                h,
                Header {
                    announce: false,
                    width: 480,
                    height: 360,
                    pixel,
                    sequence: 0x1_0000_0002,
                    timestamp_ns: 123_456_789_000,
                    payload_len: len as usize,
                    dropped: 7,
                }
            );
            let a = parse_header(&header(b"OLCC", 480, 360, fourcc, strides, 0)).unwrap();
            assert!(a.announce && a.payload_len == 0);
        }
    }

    #[test]
    fn rejects_what_it_cannot_take() {
        let ok = header(b"OLCF", 480, 360, b"BG24", [1440, 0, 0], 480 * 360 * 3);
        assert!(parse_header(&ok).is_ok());
        let err = |b: [u8; HEADER_LEN]| parse_header(&b).unwrap_err();
        assert!(err(header(b"XXXX", 480, 360, b"BG24", [1440, 0, 0], 518400)).contains("magic"));
        assert!(err(header(b"OLCF", 480, 360, b"YUYV", [960, 0, 0], 345600)).contains("YUYV"));
        assert!(err(header(b"OLCF", 481, 360, b"BG24", [1443, 0, 0], 519480)).contains("size"));
        assert!(err(header(b"OLCF", 480, 360, b"BG24", [1536, 0, 0], 518400)).contains("tight"));
        assert!(err(header(b"OLCF", 480, 360, b"BG24", [1440, 0, 0], 1000)).contains("payload"));
        assert!(err(header(b"OLCC", 480, 360, b"BG24", [1440, 0, 0], 5)).contains("payload"));
        let mut bad_len = ok;
        bad_len[4] = 64;
        assert!(err(bad_len).contains("header length"));
    }

    #[test]
    fn helper_matches_the_installed_abi() {
        let dirs = [PathBuf::from("/usr/lib/aarch64-linux-gnu")];
        let dir = Path::new("/usr/libexec/onair");
        let all = |_: &Path| true;
        let abis = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            choose_helper(&abis(&["0.0.3"]), &dirs, dir, all).unwrap(),
            dir.join("onair-camera-0.0.3")
        );
        // Debian 13 ships libcamera.so.0.4 → libcamera.so.0.4.0.
        assert_eq!(
            choose_helper(&abis(&["0.4", "0.4.0"]), &dirs, dir, all).unwrap(),
            dir.join("onair-camera-0.4")
        );
        let none = choose_helper(&[], &dirs, dir, all).unwrap_err();
        assert!(
            none.contains("libcamera not found") && none.contains("0.0.3, 0.4"),
            "{none}"
        );
        assert!(none.contains("/usr/lib/aarch64-linux-gnu"), "{none}");
        let newer = choose_helper(&abis(&["0.5", "0.5.2"]), &dirs, dir, all).unwrap_err();
        assert!(
            newer.contains("libcamera 0.5, 0.5.2 is installed")
                && newer.contains("0.0.3, 0.4 only"),
            "{newer}"
        );
        // 0.4 must not match 0.40.
        assert!(choose_helper(&abis(&["0.40"]), &dirs, dir, all).is_err());
        let missing = choose_helper(&abis(&["0.0.3"]), &dirs, dir, |_| false).unwrap_err();
        assert!(
            missing.contains("onair-camera-0.0.3 is missing"),
            "{missing}"
        );
    }

    #[test]
    fn finds_libcamera_files_by_name() {
        let dir = std::env::temp_dir().join(format!("onair-lcam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in [
            "libcamera.so.0.4",
            "libcamera.so.0.4.0",
            "libcamera-base.so.0.4",
            "libcamera.so",
            "libcamera.so.",
        ] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        assert_eq!(installed_abis(std::slice::from_ref(&dir)), ["0.4", "0.4.0"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A stand-in helper: a shell script that writes an announcement and two 4x2 BG24 frames
    /// (printf with octal escapes), then says something on stderr and exits 3.
    fn fake_helper(dir: &Path, frames: u32, then: &str) -> PathBuf {
        let mut script = String::from("#!/bin/sh\n");
        let packet = |magic: &[u8; 4], len: u32| {
            let b = header(magic, 4, 2, b"BG24", [12, 0, 0], len);
            let mut s = String::from("printf '");
            for byte in b {
                s.push_str(&format!("\\{byte:03o}"));
            }
            s.push_str("'\n");
            s
        };
        script.push_str(&packet(b"OLCC", 0));
        for _ in 0..frames {
            script.push_str(&packet(b"OLCF", 24));
            script.push_str("printf 'RGBRGBRGBRGBRGBRGBRGBRGB'\n");
        }
        script.push_str(then);
        let path = dir.join(format!("helper-{frames}"));
        install_script(&path, &script);
        path
    }

    /// Writes an executable script. Another process writes it (`install`): a file this
    /// process had open for writing could be inherited by a child another test thread is
    /// forking just then, and executing it would fail with "Text file busy" until that child
    /// execs.
    fn install_script(path: &Path, text: &str) {
        let source = path.with_extension("txt");
        std::fs::write(&source, text).unwrap();
        let status = std::process::Command::new("install")
            .arg("-m")
            .arg("755")
            .arg(&source)
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "install {}", path.display());
    }

    fn request() -> VideoFormatRequest {
        VideoFormatRequest {
            width: 4,
            height: 2,
            fps: 30,
            h264: false,
        }
    }

    #[test]
    fn streams_from_a_helper_and_reports_its_death() {
        let dir = std::env::temp_dir().join(format!("onair-lcam-h-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let helper = fake_helper(
            &dir,
            2,
            "echo 'onair-camera: camera unplugged' >&2\nexit 3\n",
        );
        let settings = LibcameraSettings::default();
        let mut camera =
            LibcameraCamera::spawn(&helper, "libcamera camera 0".into(), &settings, request())
                .unwrap();
        assert_eq!(camera.format().pixel, PixelFormat::Rgb24);
        let mut frame = VideoFrame::new();
        for _ in 0..2 {
            camera.read_frame(&mut frame).unwrap();
            assert_eq!(frame.data, b"RGBRGBRGBRGBRGBRGBRGBRGB");
            assert_eq!(frame.sequence, 0x1_0000_0002);
        }
        let err = camera.read_frame(&mut frame).unwrap_err();
        assert!(err.is_gone(), "a dead helper is opened anew at once: {err}");
        let err = err.to_string();
        assert!(err.starts_with("libcamera camera 0: device gone"), "{err}");
        assert!(
            err.contains("exited with status 3: onair-camera: camera unplugged"),
            "{err}"
        );
        // And it stays dead, at once.
        assert_eq!(camera.read_frame(&mut frame).unwrap_err().to_string(), err);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_helper_that_fails_at_start_is_an_open_error_with_its_words() {
        let dir = std::env::temp_dir().join(format!("onair-lcam-o-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("failing");
        install_script(
            &path,
            "#!/bin/sh\necho \"onair-camera: no camera 'x'; cameras: 0: /base/vimc\" >&2\nexit 3\n",
        );
        let settings = LibcameraSettings {
            camera: Some("x".into()),
            extra_args: Vec::new(),
        };
        let err = LibcameraCamera::spawn(&path, "libcamera camera x".into(), &settings, request())
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(matches!(err, HalError::Open { .. }));
        assert!(text.contains("libcamera camera x: cannot open"), "{text}");
        assert!(
            text.contains(
                "exited with status 3: onair-camera: no camera 'x'; cameras: 0: /base/vimc"
            ),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_silent_helper_times_out_and_is_killed_on_drop() {
        let dir = std::env::temp_dir().join(format!("onair-lcam-s-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let helper = fake_helper(&dir, 0, "exec sleep 60\n");
        let mut camera = LibcameraCamera::spawn(
            &helper,
            "libcamera camera 0".into(),
            &LibcameraSettings::default(),
            request(),
        )
        .unwrap();
        camera.started = true;
        camera.frame_timeout = Duration::from_millis(200);
        let started = Instant::now();
        let err = camera
            .read_frame(&mut VideoFrame::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no frame within 0.2 s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let pid = camera.child.id();
        drop(camera);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "helper {pid} still there"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
