//! Cameras through Video4Linux2: USB (UVC) webcams, the Raspberry Pi's camera drivers, vivid.
//!
//! [`V4l2Camera::open`] checks that the device captures video, enumerates its formats, frame
//! sizes and frame intervals, picks the mode closest to the request ([`choose`] has the
//! rules and their reasons), sets it, and maps four buffers for streaming. Each
//! [`VideoSource::read_frame`] dequeues one buffer and copies it, without the drivers' line
//! padding, into the caller's frame: YUYV, NV12 and YU12 as they are, MJPEG decoded to I420.
//! A camera asked to [`share`](VideoSource::share) exports its buffers as DMABUFs and hands
//! each raw picture out in its own buffer (copied only when the caller wants the bytes too),
//! for a hardware encoder to read where it is; the buffer goes back to the camera at the next
//! read.
//!
//! Parts:
//! - [`choose`]: the mode decision, a pure function of the enumeration.
//! - [`pack`]: raw buffers (padded lines) to tight frames.
//! - [`mjpeg`]: JPEG frames to limited-range I420.
//! - [`clock`]: kernel buffer timestamps to [`Instant`]s; frame numbers.
//! - [`queue`]: the buffers (v4l2r's ioctl layer): mapped, queued, exported.
//! - this file: the ioctl edge (the `v4l` crate for the device, its formats and rates) and
//!   the recovery decisions.
//!
//! **Errors while streaming.** An unplugged camera answers `ENODEV`: that is
//! [`HalError::Gone`], and every later read says so at once; the caller drops the camera and
//! reopens it with a backoff. A camera that stops delivering (no frame within the read
//! timeout) or fails a dequeue gives [`HalError::Read`]; the next read picks the stream up
//! again if the camera recovers, at the cost of one frame. A caller that sees only errors
//! for a while should reopen. Frames the driver marks as corrupt, and MJPEG frames that do
//! not decode, are skipped (a gap in [`VideoFrame::sequence`]); a long run of them is a
//! read error.

mod choose;
pub(crate) mod clock;
mod mjpeg;
mod pack;
pub mod queue;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use v4l::capability::Flags as CapabilityFlags;
use v4l::device::Device;
use v4l::device::Handle;
use v4l::format::{Format, FourCC};
use v4l::fraction::Fraction;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::video::Capture;
use v4l::video::capture::Parameters;
use v4l2r::QueueType;
use v4l2r::ioctl::BufferFlags;
use v4l2r::nix::errno::Errno;

pub use choose::CaptureFormat;
use choose::{FormatOffer, FrameIntervals, FrameSizes, Interval, Mode};
use clock::FrameCounter;
use mjpeg::MjpegDecoder;
use pack::RawLayout;
pub use queue::Dmabuf;
use queue::{Done, Queue, QueueError};

use crate::{
    HalError, SharedLayout, SharedPicture, VideoFormat, VideoFormatRequest, VideoFrame, VideoSource,
};

/// `poll(2)`'s "there is data to read".
const POLLIN: i16 = 0x001;

/// The pure parts of this backend, for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::choose::{
        FormatOffer, FrameIntervals, FrameSizes, Interval, Mode, choose, describe_choice,
    };
    pub use super::mjpeg::MjpegDecoder;
}

/// Buffers mapped for streaming: one being copied, the others being filled, and slack for a
/// reader that is a little late.
const BUFFERS: u32 = 4;
/// Wait for the first frame: UVC cameras take a second or more to start (auto exposure).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait for later frames, unless four frame intervals are longer.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive unusable frames (flagged corrupt, undecodable JPEG) that make a read error.
const MAX_BAD_FRAMES: u32 = 30;
/// Immediate retries of a dequeue interrupted by a signal.
const MAX_RETRIES: u32 = 3;
/// Where udev puts stable names of video devices.
const BY_ID: &str = "/dev/v4l/by-id";

/// A video capture device found by [`list_capture_devices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device node, e.g. `/dev/video0`.
    pub path: PathBuf,
    /// What the driver calls the device, e.g. the USB product name.
    pub card: String,
    /// Driver name, e.g. `uvcvideo`, `vivid`, `bcm2835-v4l2`.
    pub driver: String,
    /// Where it is attached, e.g. `usb-0000:01:00.0-1.3`.
    pub bus: String,
}

impl DeviceInfo {
    /// One line for logs: `/dev/video0 (UVC Camera, uvcvideo, usb-…)`.
    fn describe(&self) -> String {
        format!(
            "{} ({}, {}, {})",
            self.path.display(),
            self.card,
            self.driver,
            self.bus
        )
    }
}

/// The single-planar streaming capture devices, in `/dev/videoN` order, for
/// `video.source = "auto"` (the first one). Metadata nodes (every UVC camera has one),
/// codecs and other memory-to-memory devices are left out. Devices that cannot be opened
/// (busy is fine, permissions are not) are left out too.
pub fn list_capture_devices() -> Vec<DeviceInfo> {
    let Ok(entries) = std::fs::read_dir("/dev") else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let number = video_node_number(entry.file_name().to_str()?)?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();
    nodes
        .into_iter()
        .filter_map(|(_, path)| {
            let device = Device::with_path(&path).ok()?;
            let caps = guarded(|| device.query_caps()).ok()?;
            check_capabilities(caps.capabilities.bits()).ok()?;
            Some(DeviceInfo {
                path,
                card: caps.card,
                driver: caps.driver,
                bus: caps.bus,
            })
        })
        .collect()
}

/// A V4L2 camera, streaming.
pub struct V4l2Camera {
    /// The device as the caller named it, for errors.
    name: String,
    /// One line about the device, for logs.
    description: String,
    /// What was asked for and what was chosen, for logs.
    negotiation: String,
    /// What [`VideoSource::read_frame`] delivers.
    format: VideoFormat,
    /// How a dequeued buffer becomes a frame.
    unpack: Unpack,
    /// The open device.
    handle: Arc<Handle>,
    /// Its capture buffers, mapped. The one last read is ours until the next read, which
    /// queues it again.
    buffers: Queue,
    /// Whether streaming is on.
    streaming: bool,
    /// Every buffer exported as a DMABUF, once the caller asked to [`share`](VideoSource::share).
    shared: Option<(Vec<Dmabuf>, SharedLayout)>,
    /// Set once the device is gone: every later read fails at once.
    gone: Option<String>,
    /// Dequeue timeout: longer for the first frame.
    timeout: Duration,
    /// Dequeue timeout once frames flow.
    frame_timeout: Duration,
    /// Driver sequence numbers → frame numbers.
    frames: FrameCounter,
    /// Unusable frames in a row.
    bad_frames: u32,
}

/// The `v4l` crate's device handle as v4l2r's ioctls and `mmap` take it.
struct Fd<'a>(&'a Handle);

impl AsRawFd for Fd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.fd()
    }
}

impl AsFd for Fd<'_> {
    #[allow(unsafe_code)]
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the `Handle` owns the descriptor and closes it only when it is dropped; the
        // borrow lives no longer than the `Handle` it comes from.
        unsafe { BorrowedFd::borrow_raw(self.0.fd()) }
    }
}

/// What to do about a failed ioctl while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The device is gone (unplugged, driver unbound).
    Gone,
    /// Interrupted by a signal, or not ready: try again now.
    Again,
    /// Anything else (timeout, I/O error): report, and resume on the next read.
    Stall,
}

fn classify(errno: Option<Errno>) -> Fault {
    match errno {
        Some(Errno::ENODEV | Errno::ENXIO) => Fault::Gone,
        Some(Errno::EINTR | Errno::EAGAIN) => Fault::Again,
        _ => Fault::Stall,
    }
}

impl V4l2Camera {
    /// Opens `device` (`/dev/video0`, `video0`, or a name in `/dev/v4l/by-id/`), picks the
    /// mode closest to `wanted` and prepares streaming. Streaming starts with the first read.
    pub fn open(device: &str, wanted: VideoFormatRequest) -> Result<V4l2Camera, HalError> {
        let open_error = |reason: String| HalError::Open {
            device: device.to_string(),
            reason,
        };
        let path = resolve_device_path(device);
        let handle = Device::with_path(&path).map_err(|e| open_error(open_failure(&e)))?;
        let caps = guarded(|| handle.query_caps())
            .map_err(|e| open_error(format!("not a V4L2 device (VIDIOC_QUERYCAP: {e})")))?;
        check_capabilities(caps.capabilities.bits()).map_err(open_error)?;
        let info = DeviceInfo {
            path: path.clone(),
            card: caps.card,
            driver: caps.driver,
            bus: caps.bus,
        };
        let mut description = info.describe();
        if let Ok(real) = std::fs::canonicalize(&path)
            && real != path
        {
            description = format!("{} = {description}", real.display());
        }

        let offers = enumerate(&handle).map_err(open_error)?;
        let chosen = choose::choose(&offers, wanted, |format, width, height| {
            enumerate_intervals(&handle, format, width, height)
        })
        .map_err(open_error)?;
        let mut negotiation = choose::describe_choice(wanted, chosen, &offers);

        let fourcc = FourCC::new(&chosen.format.fourcc());
        let set = guarded(|| handle.set_format(&Format::new(chosen.width, chosen.height, fourcc)))
            .map_err(|e| open_error(format!("VIDIOC_S_FMT {}: {e}", describe_mode(chosen))))?;
        let (width, height) =
            accept_format(chosen, set.fourcc.repr, set.width, set.height).map_err(open_error)?;
        if (width, height) != (chosen.width, chosen.height) {
            negotiation.push_str(&format!("; the driver set {width}x{height}"));
        }
        let fps = set_rate(&handle, chosen.interval).unwrap_or(wanted.fps.max(1));
        if chosen.interval.and_then(Interval::whole_fps) != Some(fps) {
            negotiation.push_str(&format!("; the driver runs at {fps} fps"));
        }

        let pixel = chosen
            .format
            .delivered()
            .ok_or_else(|| open_error(format!("{} cannot be delivered", chosen.format)))?;
        let unpack = match chosen.format {
            CaptureFormat::Mjpeg => Unpack::Mjpeg(Box::new(MjpegDecoder::new(width, height))),
            CaptureFormat::H264 => Unpack::H264,
            _ => {
                let layout = RawLayout {
                    format: chosen.format,
                    width,
                    height,
                    stride: set.stride,
                };
                if layout.required_len().is_none() {
                    return Err(open_error(format!(
                        "the driver's line length ({} bytes) is too short for {} {width}x{height}",
                        set.stride, chosen.format
                    )));
                }
                Unpack::Raw(layout)
            }
        };

        let handle = handle.handle();
        let buffers =
            Queue::allocate(&Fd(&handle), QueueType::VideoCapture, BUFFERS).map_err(|e| {
                open_error(format!(
                    "mapping {BUFFERS} buffers: {}",
                    busy_hint(&e, e.errno)
                ))
            })?;
        let interval = Duration::from_secs(1) / fps;
        Ok(V4l2Camera {
            name: device.to_string(),
            description,
            negotiation,
            format: VideoFormat {
                pixel,
                width,
                height,
                fps,
            },
            unpack,
            handle,
            buffers,
            streaming: false,
            shared: None,
            gone: None,
            timeout: FIRST_FRAME_TIMEOUT,
            frame_timeout: FRAME_TIMEOUT.max(interval * 4),
            frames: FrameCounter::default(),
            bad_frames: 0,
        })
    }

    /// What was asked for, what was chosen and what else the camera offers: one line for the
    /// log, e.g. "asked for 1280x720 at 30 fps; chose MJPG 1280x720 at 30 fps (decoded to
    /// I420); the camera offers YUYV, MJPG".
    pub fn negotiation(&self) -> &str {
        &self.negotiation
    }

    fn read_error(&self, reason: String) -> HalError {
        HalError::Read {
            device: self.name.clone(),
            reason,
        }
    }

    /// Turns a failed ioctl into an error; a device that is gone stays gone.
    fn fail(&mut self, error: &QueueError) -> HalError {
        match classify(error.errno) {
            Fault::Gone => {
                let reason = error.to_string();
                self.gone = Some(reason.clone());
                HalError::Gone {
                    device: self.name.clone(),
                    reason,
                }
            }
            Fault::Again | Fault::Stall => self.read_error(error.to_string()),
        }
    }

    /// Gives the driver back the buffer last read, starts streaming if it is not on, and
    /// waits for the next filled buffer.
    fn next_buffer(&mut self) -> Result<Done, QueueError> {
        let fd = Fd(&self.handle);
        self.buffers.queue_all(&fd)?;
        if !self.streaming {
            self.buffers.stream_on(&fd)?;
            self.streaming = true;
        }
        let waited = self.timeout.as_millis().min(i32::MAX as u128) as i32;
        let ready = self.handle.poll(POLLIN, waited).map_err(|e| QueueError {
            what: "poll".into(),
            errno: errno(&e),
            detail: e.to_string(),
        })?;
        if ready == 0 {
            return Err(QueueError {
                what: "VIDIOC_DQBUF".into(),
                errno: Some(Errno::ETIMEDOUT),
                detail: String::new(),
            });
        }
        self.buffers.dequeue(&fd)?.ok_or(QueueError {
            what: "VIDIOC_DQBUF".into(),
            errno: Some(Errno::EAGAIN),
            detail: String::new(),
        })
    }

    /// The buffer `done` as the frame: copied or decoded into `frame.data` (unless it is
    /// shared and the caller wants no bytes), shared if the caller asked for that.
    fn deliver(&mut self, done: &Done, frame: &mut VideoFrame) -> Result<(), String> {
        if done.buffer.flags().contains(BufferFlags::ERROR) {
            return Err("the driver marked the frame corrupt".to_string());
        }
        let whole = self.buffers.data(done.index).unwrap_or_default();
        let data = match (self.buffers.payload(done), &self.unpack) {
            // Raw formats have a fixed size; a driver that leaves bytesused unset is trusted.
            (Some([]) | None, Unpack::Raw(_)) if done.bytes_used() == 0 => whole,
            (Some(data), _) => data,
            (None, _) => &[],
        };
        if data.is_empty() {
            return Err("empty frame".to_string());
        }
        frame.shared = None;
        if let (Some((dmabufs, layout)), Unpack::Raw(raw)) = (&self.shared, &self.unpack) {
            let need = raw.required_len().unwrap_or(usize::MAX);
            if data.len() < need {
                return Err(format!("{} bytes, a picture takes {need}", data.len()));
            }
            frame.shared = dmabufs.get(done.index).map(|dmabuf| SharedPicture {
                dmabuf: dmabuf.clone(),
                index: done.index,
                bytes_used: data.len(),
                layout: *layout,
            });
            if !frame.want_data {
                frame.data.clear();
                return Ok(());
            }
        }
        convert(&mut self.unpack, data, &mut frame.data)
    }
}

impl VideoSource for V4l2Camera {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn read_frame(&mut self, frame: &mut VideoFrame) -> Result<(), HalError> {
        // The buffer the last frame shared goes back to the driver below.
        frame.shared = None;
        if let Some(reason) = &self.gone {
            return Err(HalError::Gone {
                device: self.name.clone(),
                reason: reason.clone(),
            });
        }
        let mut retries = 0;
        loop {
            let done = match self.next_buffer() {
                Ok(done) => done,
                Err(error) => {
                    if classify(error.errno) == Fault::Again && retries < MAX_RETRIES {
                        retries += 1;
                        continue;
                    }
                    if error.errno == Some(Errno::ETIMEDOUT) {
                        return Err(self
                            .read_error("no frame within the timeout; the camera stopped".into()));
                    }
                    return Err(self.fail(&error));
                }
            };
            let (kernel_now, now) = (clock::monotonic_now(), Instant::now());
            self.timeout = self.frame_timeout;
            let sequence = self.frames.count(done.buffer.sequence());
            if let Err(reason) = self.deliver(&done, frame) {
                self.bad_frames += 1;
                tracing::debug!(device = %self.name, sequence, %reason, "frame skipped");
                if self.bad_frames >= MAX_BAD_FRAMES {
                    self.bad_frames = 0;
                    return Err(self.read_error(format!(
                        "{MAX_BAD_FRAMES} unusable frames in a row; the last: {reason}"
                    )));
                }
                continue;
            }
            self.bad_frames = 0;
            let monotonic = done
                .buffer
                .flags()
                .contains(BufferFlags::TIMESTAMP_MONOTONIC);
            let timestamp = done.buffer.timestamp();
            // `time_t` is 32 bits on some 32-bit targets.
            #[allow(clippy::useless_conversion)]
            let (seconds, micros) = (i64::from(timestamp.tv_sec), i64::from(timestamp.tv_usec));
            let stamp = clock::buffer_time(monotonic, seconds, micros);
            frame.sequence = sequence;
            frame.captured = clock::capture_instant(stamp, kernel_now, now);
            return Ok(());
        }
    }

    fn share(&mut self) -> Result<SharedLayout, String> {
        let Unpack::Raw(raw) = &self.unpack else {
            return Err(format!(
                "{} delivers {}, not raw pictures an encoder can read",
                self.description,
                match self.unpack {
                    Unpack::Mjpeg(_) => "MJPEG",
                    _ => "H.264",
                }
            ));
        };
        let layout = SharedLayout {
            fourcc: raw.format.fourcc(),
            width: raw.width,
            height: raw.height,
            stride: raw.stride,
            buffers: self.buffers.len(),
        };
        let fd = Fd(&self.handle);
        let dmabufs = (0..self.buffers.len())
            .map(|index| self.buffers.export(&fd, index))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", self.description))?;
        self.shared = Some((dmabufs, layout));
        Ok(layout)
    }
}

impl Drop for V4l2Camera {
    fn drop(&mut self) {
        if self.streaming {
            let _ = self.buffers.stream_off(&Fd(&self.handle));
        }
    }
}
/// How a dequeued buffer becomes a frame.
enum Unpack {
    /// Raw pictures: copied without the driver's line padding.
    Raw(RawLayout),
    /// JPEG pictures: decoded to I420.
    Mjpeg(Box<MjpegDecoder>),
    /// The camera's H.264: copied as it is.
    H264,
}

/// Copies (raw, H.264) or decodes (MJPEG) the bytes of one dequeued buffer into `out`.
fn convert(unpack: &mut Unpack, data: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    match unpack {
        Unpack::Raw(layout) => pack::pack(*layout, data, out),
        Unpack::Mjpeg(decoder) => decoder.decode(data, out),
        Unpack::H264 => {
            out.clear();
            out.extend_from_slice(data);
            Ok(())
        }
    }
}

/// Runs a `v4l` call, turning a panic inside the crate (it unwraps driver strings as UTF-8
/// and expects known enum values) into an error.
fn guarded<T>(call: impl FnOnce() -> io::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(busy_hint(&error, errno(&error))),
        Err(_) => Err("the v4l crate could not parse the driver's answer".to_string()),
    }
}

/// What the device offers: formats with their frame sizes.
fn enumerate(device: &Device) -> Result<Vec<FormatOffer>, String> {
    let formats = guarded(|| device.enum_formats()).map_err(|e| format!("VIDIOC_ENUM_FMT: {e}"))?;
    let offers: Vec<FormatOffer> = formats
        .iter()
        .map(|description| {
            let format = CaptureFormat::from_fourcc(description.fourcc.repr);
            // A driver without VIDIOC_ENUM_FRAMESIZES adjusts whatever size it is given.
            let sizes = guarded(|| device.enum_framesizes(description.fourcc))
                .unwrap_or_default()
                .into_iter()
                .map(|size| match size.size {
                    FrameSizeEnum::Discrete(d) => FrameSizes::Discrete {
                        width: d.width,
                        height: d.height,
                    },
                    FrameSizeEnum::Stepwise(s) => FrameSizes::Stepwise {
                        min_width: s.min_width,
                        max_width: s.max_width,
                        step_width: s.step_width,
                        min_height: s.min_height,
                        max_height: s.max_height,
                        step_height: s.step_height,
                    },
                })
                .collect();
            FormatOffer { format, sizes }
        })
        .collect();
    tracing::debug!(?offers, "V4L2 formats and sizes");
    Ok(offers)
}

/// The frame intervals of one size; empty when the driver does not enumerate them.
fn enumerate_intervals(
    device: &Device,
    format: CaptureFormat,
    width: u32,
    height: u32,
) -> Vec<FrameIntervals> {
    let fourcc = FourCC::new(&format.fourcc());
    let continuous = v4l::v4l_sys::v4l2_frmivaltypes_V4L2_FRMIVAL_TYPE_CONTINUOUS;
    let interval = |f: Fraction| Interval::new(f.numerator, f.denominator);
    guarded(|| device.enum_frameintervals(fourcc, width, height))
        .unwrap_or_default()
        .into_iter()
        .map(|entry| match entry.interval {
            FrameIntervalEnum::Discrete(f) => FrameIntervals::Discrete(interval(f)),
            FrameIntervalEnum::Stepwise(s) => FrameIntervals::Stepwise {
                min: interval(s.min),
                max: interval(s.max),
                step: (entry.typ != continuous).then(|| interval(s.step)),
            },
        })
        .collect()
}

/// Sets the frame interval (if one was chosen) and returns the rate the driver runs at, or
/// `None` if it does not say.
fn set_rate(device: &Device, interval: Option<Interval>) -> Option<u32> {
    let running = match interval {
        Some(interval) => {
            let wanted = Parameters::new(Fraction::new(interval.numerator, interval.denominator));
            // Drivers without VIDIOC_S_PARM run at their one rate: the enumerated one.
            guarded(|| device.set_params(&wanted))
                .map(|set| Interval::new(set.interval.numerator, set.interval.denominator))
                .unwrap_or(interval)
        }
        None => guarded(|| device.params())
            .ok()
            .map(|set| Interval::new(set.interval.numerator, set.interval.denominator))?,
    };
    running.whole_fps()
}

/// The size the driver set, if it is the format asked for and usable.
fn accept_format(
    chosen: Mode,
    fourcc: [u8; 4],
    width: u32,
    height: u32,
) -> Result<(u32, u32), String> {
    let set = CaptureFormat::from_fourcc(fourcc);
    if set != chosen.format {
        return Err(format!(
            "asked for {}, the driver set {set} {width}x{height}",
            describe_mode(chosen)
        ));
    }
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(format!(
            "asked for {}, the driver set {width}x{height}; width and height must be even",
            describe_mode(chosen)
        ));
    }
    Ok((width, height))
}

fn describe_mode(mode: Mode) -> String {
    format!("{} {}x{}", mode.format, mode.width, mode.height)
}

/// Whether V4L2 capability bits (`device_caps`) describe a camera this backend can stream
/// from, and if not, why.
fn check_capabilities(bits: u32) -> Result<(), String> {
    let caps = CapabilityFlags::from(bits);
    if caps.intersects(CapabilityFlags::VIDEO_M2M | CapabilityFlags::VIDEO_M2M_MPLANE) {
        return Err("a memory-to-memory device (codec, scaler or ISP), not a camera".into());
    }
    if !caps.contains(CapabilityFlags::VIDEO_CAPTURE) {
        if caps.contains(CapabilityFlags::VIDEO_CAPTURE_MPLANE) {
            return Err(
                "captures only through the multi-planar API, which is not supported".into(),
            );
        }
        if caps.contains(CapabilityFlags::META_CAPTURE) {
            return Err(
                "a metadata node, not a picture; try the camera's other /dev/video node".into(),
            );
        }
        return Err("not a video capture device".into());
    }
    if !caps.contains(CapabilityFlags::STREAMING) {
        return Err("cannot stream (no mmap I/O)".into());
    }
    Ok(())
}

/// The device node for what the configuration names: a path as it is, `videoN` in `/dev`,
/// anything else in `/dev/v4l/by-id`.
fn resolve_device_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else if video_node_number(name).is_some() {
        Path::new("/dev").join(name)
    } else {
        Path::new(BY_ID).join(name)
    }
}

/// N for `videoN`.
fn video_node_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("video")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a device node could not be opened, with the usual remedy.
fn open_failure(error: &io::Error) -> String {
    match errno(error) {
        Some(Errno::ENOENT) => "no such device".into(),
        Some(Errno::EACCES | Errno::EPERM) => {
            "permission denied (is the user in the video group?)".into()
        }
        Some(Errno::ENODEV | Errno::ENXIO) => "the device is gone".into(),
        _ => busy_hint(error, errno(error)),
    }
}

fn errno(error: &io::Error) -> Option<Errno> {
    error.raw_os_error().map(Errno::from_raw)
}

/// The error, saying so when another program holds the camera.
fn busy_hint(error: &impl std::fmt::Display, errno: Option<Errno>) -> String {
    if errno == Some(Errno::EBUSY) {
        format!("{error}: another program is using the camera")
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_resolve_to_nodes() {
        assert_eq!(
            resolve_device_path("/dev/video2"),
            PathBuf::from("/dev/video2")
        );
        assert_eq!(
            resolve_device_path("video10"),
            PathBuf::from("/dev/video10")
        );
        assert_eq!(
            resolve_device_path("usb-046d_C270_HD_WEBCAM_2D4AA0A0-video-index0"),
            PathBuf::from("/dev/v4l/by-id/usb-046d_C270_HD_WEBCAM_2D4AA0A0-video-index0")
        );
        assert_eq!(resolve_device_path("./video0"), PathBuf::from("./video0"));
        assert_eq!(video_node_number("video0"), Some(0));
        assert_eq!(video_node_number("video31"), Some(31));
        assert_eq!(video_node_number("video"), None);
        assert_eq!(video_node_number("video0p"), None);
        assert_eq!(video_node_number("vbi0"), None);
    }

    #[test]
    fn capabilities_decide_what_is_a_camera() {
        let capture = CapabilityFlags::VIDEO_CAPTURE | CapabilityFlags::STREAMING;
        assert_eq!(check_capabilities(capture.bits()), Ok(()));
        let with_extras = capture | CapabilityFlags::READ_WRITE | CapabilityFlags::EXT_PIX_FORMAT;
        assert_eq!(check_capabilities(with_extras.bits()), Ok(()));
        let meta = CapabilityFlags::META_CAPTURE | CapabilityFlags::STREAMING;
        assert!(
            check_capabilities(meta.bits())
                .unwrap_err()
                .contains("metadata")
        );
        let codec = CapabilityFlags::VIDEO_M2M_MPLANE | CapabilityFlags::STREAMING;
        assert!(
            check_capabilities(codec.bits())
                .unwrap_err()
                .contains("memory-to-memory")
        );
        let mplane = CapabilityFlags::VIDEO_CAPTURE_MPLANE | CapabilityFlags::STREAMING;
        assert!(
            check_capabilities(mplane.bits())
                .unwrap_err()
                .contains("multi-planar")
        );
        let read_only = CapabilityFlags::VIDEO_CAPTURE | CapabilityFlags::READ_WRITE;
        assert!(
            check_capabilities(read_only.bits())
                .unwrap_err()
                .contains("stream")
        );
        let output = CapabilityFlags::VIDEO_OUTPUT | CapabilityFlags::STREAMING;
        assert!(check_capabilities(output.bits()).is_err());
    }

    #[test]
    fn errors_are_classified_for_recovery() {
        assert_eq!(classify(Some(Errno::ENODEV)), Fault::Gone);
        assert_eq!(classify(Some(Errno::ENXIO)), Fault::Gone);
        assert_eq!(classify(Some(Errno::EINTR)), Fault::Again);
        assert_eq!(classify(Some(Errno::EAGAIN)), Fault::Again);
        assert_eq!(classify(Some(Errno::EIO)), Fault::Stall);
        assert_eq!(classify(Some(Errno::EINVAL)), Fault::Stall);
        assert_eq!(classify(Some(Errno::ETIMEDOUT)), Fault::Stall);
        assert_eq!(classify(None), Fault::Stall);
    }

    #[test]
    fn open_failures_say_what_to_do() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(open_failure(&os(Errno::ENOENT as i32)), "no such device");
        assert!(open_failure(&os(Errno::EACCES as i32)).contains("video group"));
        assert!(open_failure(&os(Errno::EBUSY as i32)).contains("another program"));
    }

    #[test]
    fn the_driver_must_set_the_format_asked_for() {
        let chosen = Mode {
            format: CaptureFormat::Yuyv,
            width: 1280,
            height: 720,
            interval: None,
        };
        assert_eq!(accept_format(chosen, *b"YUYV", 1280, 720), Ok((1280, 720)));
        assert_eq!(accept_format(chosen, *b"YUYV", 640, 480), Ok((640, 480)));
        assert!(accept_format(chosen, *b"MJPG", 1280, 720).is_err());
        assert!(accept_format(chosen, *b"YUYV", 1279, 720).is_err());
    }

    #[test]
    fn opening_a_missing_device_names_it() {
        let wanted = VideoFormatRequest {
            width: 640,
            height: 480,
            fps: 30,
            h264: false,
        };
        let error = V4l2Camera::open("/dev/onair-no-such-camera", wanted)
            .err()
            .expect("no such device");
        assert!(matches!(error, HalError::Open { .. }), "{error}");
        assert_eq!(error.device(), "/dev/onair-no-such-camera");
        assert!(error.to_string().contains("no such device"), "{error}");
        let error = V4l2Camera::open("usb-Nobody_Nothing-video-index0", wanted)
            .err()
            .expect("no such device");
        assert!(error.to_string().contains("usb-Nobody_Nothing"), "{error}");
    }

    #[test]
    fn a_file_that_is_not_a_camera_is_refused() {
        let wanted = VideoFormatRequest {
            width: 640,
            height: 480,
            fps: 30,
            h264: false,
        };
        // /dev/null opens but answers no V4L2 ioctl.
        let error = V4l2Camera::open("/dev/null", wanted)
            .err()
            .expect("not a camera");
        assert!(matches!(error, HalError::Open { .. }), "{error}");
        assert!(error.to_string().contains("not a V4L2 device"), "{error}");
    }

    #[test]
    fn listing_without_cameras_is_empty_not_an_error() {
        // This machine may or may not have cameras; listing must not fail either way, and
        // whatever it finds must be a capture device node.
        for device in list_capture_devices() {
            assert!(
                device.path.to_string_lossy().starts_with("/dev/video"),
                "{device:?}"
            );
        }
    }
}
