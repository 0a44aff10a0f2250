//! A V4L2 memory-to-memory (stateful) encoder: the Pi's bcm2835-codec at `/dev/video11`, or
//! vicodec in tests (FWHT, the same API).
//!
//! Synchronous, one picture at a time: [`M2mEncoder::encode`] copies the I420 picture into an
//! OUTPUT buffer (as YU12, or NV12 when the device lacks YU12), queues it and waits (at most
//! [`TIMEOUT`]) for the CAPTURE buffer with the coded picture. Anything the device does wrong
//! at run time (gone, EIO, a timeout) comes back as an [`EncodeError`] so the caller can fall
//! back to openh264; nothing from the device can make this code panic or hang.
//!
//! H.264 comes out constrained baseline at the level [`h264`](super::h264) computes for the SDP, with SPS
//! and PPS before every IDR: the driver is asked to repeat them, and whatever it does they
//! are also kept and put in front of any IDR that comes without them
//! ([`Passthrough`] does this for cameras' streams too).
//!
//! v4l2r's high-level `encoder::Encoder` does not fit: it takes only multi-planar devices,
//! runs a thread of its own that polls without a timeout, and `unwrap`s or panics on device
//! errors (a failed STREAMON, EPOLLERR, an unexpected buffer); its `stop` joins that thread
//! without a timeout. This module uses v4l2r's `Device`, `Poller` and ioctl layer instead.

mod buffers;
mod controls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use onair_config::VideoEncoder;
use onair_hal::v4l2::queue::Queue;
use onair_hal::{SharedLayout, SharedPicture};
use tracing::{info, warn};
use v4l2r::controls::codec::FwhtFlags;
use v4l2r::device::poller::{DeviceEvent, PollError, Poller};
use v4l2r::device::{Device, DeviceConfig, DeviceOpenError};
use v4l2r::ioctl::{
    self, BufferFlags, Capabilities, EncoderCommand, FormatFlags, FormatIterator, SelectionFlags,
    SelectionTarget, SelectionType,
};
use v4l2r::{Format, PixelFormat, PlaneLayout, QueueType, Rect, bindings};

use self::buffers::{Layout, Raw};
use self::controls::{Control, Controls, Want};
use super::encoder::{EncodeError, EncodedPicture, Encoder};
use super::passthrough::{self, Passthrough};

/// Longest wait for a coded picture, a free OUTPUT buffer, or the end of a drain.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// OUTPUT (pictures) and CAPTURE (coded) buffers asked for; drivers may give more.
const BUFFERS: u32 = 3;

/// What the encoder produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coded {
    /// H.264 in Annex-B form: what onaird sends.
    H264,
    /// vicodec's FWHT, for tests: the same code exercised on a driver every kernel has.
    Fwht,
}

impl Coded {
    fn fourcc(self) -> PixelFormat {
        match self {
            Coded::H264 => PixelFormat::from(b"H264"),
            Coded::Fwht => PixelFormat::from(b"FWHT"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Coded::H264 => "H.264",
            Coded::Fwht => "FWHT",
        }
    }
}

/// What the encoder is asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct M2mSettings {
    /// Picture width in pixels (even).
    pub width: u32,
    /// Picture height in pixels (even).
    pub height: u32,
    /// Frames per second the source delivers.
    pub fps: u32,
    /// Target bitrate.
    pub bitrate_kbps: u32,
    /// Pictures between the encoder's own key frames; 0: only forced ones (onaird schedules
    /// IDRs itself), i.e. the longest period the driver allows.
    pub gop: u32,
    /// The coded format.
    pub coded: Coded,
    /// Where the pictures come from.
    pub input: Input,
}

/// Where an encoder's pictures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// I420 pictures ([`Encoder::encode`]), copied into the encoder's own buffers as YU12 or
    /// NV12.
    Copied,
    /// The camera's own buffers ([`M2mEncoder::encode_shared`]), imported as DMABUFs: no copy.
    /// The encoder takes the camera's pixel format and line length as they are, or refuses.
    Imported(SharedLayout),
}

/// How pictures reach the OUTPUT queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    /// Copied into MMAP buffers laid out so.
    Copy(Layout),
    /// Imported from the camera's buffers laid out so.
    Import(SharedLayout),
}

/// One picture for the OUTPUT queue.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// I420 bytes.
    Bytes(&'a [u8]),
    /// A camera's buffer.
    Shared(&'a SharedPicture),
}

/// A V4L2 memory-to-memory encoder, streaming.
pub struct M2mEncoder {
    /// "/dev/video11 (bcm2835-codec-encode)".
    name: String,
    device: Arc<Device>,
    poller: Poller,
    settings: M2mSettings,
    feed: Feed,
    output: Queue,
    capture: Queue,
    controls: Controls,
    /// H.264: the last SPS and PPS, put in front of IDRs that come without them.
    params: Passthrough,
    /// The last coded picture, copied out of its CAPTURE buffer.
    coded: Vec<u8>,
    /// Why a picture failed: the device is in an unknown state (a coded picture may still
    /// come, for the wrong picture), so every later picture fails too and the caller falls
    /// back or reopens.
    failed: Option<String>,
    /// A LAST buffer came: the encoder has stopped, there is nothing to drain.
    stopped: bool,
}

impl M2mEncoder {
    /// Opens `device`, sets it up for `settings` and starts streaming.
    pub fn open(device: &Path, settings: M2mSettings) -> Result<M2mEncoder, EncodeError> {
        let fail =
            |what: &dyn std::fmt::Display| EncodeError(format!("{}: {what}", device.display()));
        let mut handle = Device::open(device, DeviceConfig::new().non_blocking_dqbuf())
            .map_err(|e| fail(&open_error(e)))?;
        let caps = handle.caps();
        let name = format!("{} ({})", device.display(), caps.card);
        let (output_kind, capture_kind) = queue_types(caps.device_caps())
            .ok_or_else(|| fail(&format!("{} is not a memory-to-memory device", caps.card)))?;
        let raw =
            choose_raw(&handle, output_kind, capture_kind, settings.coded).map_err(|e| fail(&e))?;
        set_coded_format(&mut handle, capture_kind, &settings).map_err(|e| fail(&e))?;
        let feed = match settings.input {
            Input::Copied => {
                set_raw_format(&mut handle, output_kind, raw, &settings).map(Feed::Copy)
            }
            Input::Imported(shared) => {
                set_imported_format(&mut handle, output_kind, shared).map(|()| Feed::Import(shared))
            }
        }
        .map_err(|e| fail(&e))?;
        set_frame_rate(&handle, output_kind, settings.fps, &name);
        let mut controls = Controls::query(&handle, name.clone(), settings.coded);
        apply_initial(&handle, &mut controls, &settings, &name);
        let device = Arc::new(handle);
        let output = match feed {
            Feed::Copy(_) => Queue::allocate(&*device, output_kind, BUFFERS),
            Feed::Import(shared) => Queue::import(&*device, output_kind, shared.buffers as u32),
        }
        .map_err(|e| fail(&e))?;
        let mut capture = Queue::allocate(&*device, capture_kind, BUFFERS).map_err(|e| fail(&e))?;
        capture.queue_all(&*device).map_err(|e| fail(&e))?;
        output.stream_on(&*device).map_err(|e| fail(&e))?;
        capture.stream_on(&*device).map_err(|e| fail(&e))?;
        let poller = poller(&device).map_err(|e| fail(&e))?;
        let pictures = match feed {
            Feed::Copy(layout) => format!(
                "pictures copied in as {}",
                String::from_utf8_lossy(layout.raw.fourcc())
            ),
            Feed::Import(shared) => format!(
                "the camera's {} buffers read where they are (DMABUF import)",
                String::from_utf8_lossy(&shared.fourcc)
            ),
        };
        info!(
            "{name}: encoding {}x{} to {} ({} OUTPUT buffers, {pictures}; {} CAPTURE buffers; {})",
            settings.width,
            settings.height,
            settings.coded.name(),
            output.len(),
            capture.len(),
            if output_kind.is_multiplanar() {
                "multi-planar"
            } else {
                "single-planar"
            }
        );
        Ok(M2mEncoder {
            name,
            device,
            poller,
            settings,
            feed,
            output,
            capture,
            controls,
            params: Passthrough::new(),
            coded: Vec::with_capacity(256 * 1024),
            failed: None,
            stopped: false,
        })
    }

    /// The settings it was opened with, bitrate and GOP as last changed.
    pub fn settings(&self) -> M2mSettings {
        self.settings
    }

    /// The controls the driver lacks (their names), as reported in the log.
    pub fn lacks(&self) -> Vec<&'static str> {
        self.controls.missing()
    }

    /// Changes the pictures between the encoder's own key frames (0: only forced ones) from
    /// the next picture on. A driver without a GOP control is reported once and ignored.
    pub fn set_gop(&mut self, pictures: u32) -> Result<(), EncodeError> {
        self.settings.gop = pictures;
        let want = controls::gop(pictures);
        self.set(Control::GopSize, &want)?;
        if self.settings.coded == Coded::H264 {
            self.set(Control::IPeriod, &want)?;
        }
        Ok(())
    }

    fn set(&mut self, control: Control, want: &Want) -> Result<(), EncodeError> {
        self.controls
            .set(&self.device, control, want)
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    fn error(&self, what: impl std::fmt::Display) -> EncodeError {
        EncodeError(format!("{}: {what}", self.name))
    }

    /// Encodes the picture in a camera's buffer without copying it; the encoder must have
    /// been opened with [`Input::Imported`] for the buffer's layout. The buffer is the
    /// camera's again when this returns: the encoder has let go of it.
    pub fn encode_shared(
        &mut self,
        picture: &SharedPicture,
        force_idr: bool,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        if self.feed != Feed::Import(picture.layout) {
            return Err(self.error(format!(
                "the camera's buffers are laid out as {:?}, the encoder was set up for {:?}",
                picture.layout, self.settings.input
            )));
        }
        self.encode_picture(Source::Shared(picture), force_idr)
    }

    /// Encodes one picture; the coded picture and whether a decoder can start there.
    fn encode_picture(
        &mut self,
        picture: Source<'_>,
        force_key_frame: bool,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        if let Some(why) = &self.failed {
            return Err(self.error(format!("failed before ({why})")));
        }
        let flagged = match self.code(picture, force_key_frame) {
            Ok(flagged) => flagged,
            Err(e) => {
                self.failed = Some(e.0.clone());
                return Err(e);
            }
        };
        Ok(match self.settings.coded {
            Coded::Fwht => Some(EncodedPicture {
                keyframe: flagged || fwht_key_frame(&self.coded),
                annex_b: &self.coded,
            }),
            Coded::H264 => self
                .params
                .access_unit(&self.coded)
                .map(|unit| EncodedPicture {
                    annex_b: unit.annex_b,
                    keyframe: unit.keyframe,
                }),
        })
    }

    /// Has `picture` coded into `self.coded` (H.264 parameter sets in a buffer of their own
    /// are kept and the wait goes on); whether the driver flagged it as a key frame.
    fn code(&mut self, picture: Source<'_>, force_key_frame: bool) -> Result<bool, EncodeError> {
        let deadline = Instant::now() + TIMEOUT;
        if force_key_frame {
            self.force_key_frame()?;
        }
        let index = self.queue_picture(picture, deadline)?;
        let flagged = loop {
            let flagged = self.await_coded(deadline)?;
            if self.settings.coded == Coded::Fwht
                || !keep_parameter_sets(&mut self.params, &self.coded)
            {
                break flagged;
            }
        };
        if let Source::Shared(_) = picture {
            self.await_released(index, deadline)?;
        }
        Ok(flagged)
    }

    /// Waits until the driver has given OUTPUT buffer `index` back: a camera's buffer in it
    /// may then be filled again.
    fn await_released(&mut self, index: usize, deadline: Instant) -> Result<(), EncodeError> {
        loop {
            self.reclaim_output()?;
            if !self.output.is_queued(index) {
                return Ok(());
            }
            self.wait(deadline, "the encoder to let go of the camera's buffer")?;
        }
    }

    /// Makes the next picture a key frame: the driver's button, or else the stateful
    /// encoder's reset (CAPTURE streamed off and on; nothing is in flight between pictures).
    fn force_key_frame(&mut self) -> Result<(), EncodeError> {
        if self.controls.has(Control::ForceKeyFrame) {
            return controls::set_value(&self.device, Control::ForceKeyFrame.id(), 1)
                .map_err(|e| self.error(format!("{}: {e}", Control::ForceKeyFrame.name())));
        }
        let device = &self.device;
        self.capture
            .stream_off(device)
            .and_then(|()| self.capture.queue_all(device))
            .and_then(|()| self.capture.stream_on(device))
            .map_err(|e| self.error(e))
    }

    /// Puts `picture` into a free OUTPUT buffer (a copy, or the camera's buffer imported) and
    /// queues it; which buffer.
    fn queue_picture(
        &mut self,
        picture: Source<'_>,
        deadline: Instant,
    ) -> Result<usize, EncodeError> {
        let index = loop {
            self.reclaim_output()?;
            // A camera's buffer goes into the same slot each time, where the driver can keep
            // it attached.
            let slot = match picture {
                Source::Shared(shared) => Some(shared.index % self.output.len())
                    .filter(|&slot| !self.output.is_queued(slot))
                    .or_else(|| self.output.free()),
                Source::Bytes(_) => self.output.free(),
            };
            if let Some(index) = slot {
                break index;
            }
            self.wait(deadline, "a free OUTPUT buffer")?;
        };
        let device = &*self.device;
        let queued = match (picture, self.feed) {
            (Source::Bytes(i420), Feed::Copy(layout)) => match self.output.memory(index) {
                Some(memory) => layout.fill(i420, memory).and_then(|used| {
                    self.output
                        .queue(device, index, used)
                        .map_err(|e| e.to_string())
                }),
                None => Err(format!("no OUTPUT buffer {index}")),
            },
            (Source::Shared(shared), Feed::Import(_)) => self
                .output
                .queue_imported(device, index, &shared.dmabuf, shared.bytes_used)
                .map_err(|e| e.to_string()),
            (Source::Bytes(_), Feed::Import(_)) => {
                Err("set up for a camera's buffers, given a picture".into())
            }
            (Source::Shared(_), Feed::Copy(_)) => {
                Err("set up for pictures, given a camera's buffer".into())
            }
        };
        queued.map(|()| index).map_err(|e| self.error(e))
    }

    /// Takes back the OUTPUT buffers the driver is done with.
    fn reclaim_output(&mut self) -> Result<(), EncodeError> {
        while self
            .output
            .dequeue(&*self.device)
            .map_err(|e| self.error(e))?
            .is_some()
        {}
        Ok(())
    }

    /// Waits for the next coded buffer and copies it to `self.coded`; whether the driver
    /// flagged it as a key frame.
    fn await_coded(&mut self, deadline: Instant) -> Result<bool, EncodeError> {
        loop {
            self.reclaim_output()?;
            let Some(done) = self
                .capture
                .dequeue(&*self.device)
                .map_err(|e| self.error(e))?
            else {
                self.wait(deadline, "the coded picture")?;
                continue;
            };
            let flags = done.buffer.flags();
            if flags.contains(BufferFlags::LAST) {
                self.stopped = true;
                return Err(self.error("the encoder stopped (LAST buffer)"));
            }
            let payload = self.capture.payload(&done).unwrap_or_default();
            let broken = flags.contains(BufferFlags::ERROR);
            self.coded.clear();
            self.coded.extend_from_slice(payload);
            self.capture
                .queue(&*self.device, done.index, 0)
                .map_err(|e| self.error(e))?;
            if broken {
                return Err(self.error("the driver marked the coded picture broken"));
            }
            if !self.coded.is_empty() {
                return Ok(flags.contains(BufferFlags::KEYFRAME));
            }
        }
    }

    /// Polls the device until something is ready or `deadline`; an error after it.
    fn wait(&mut self, deadline: Instant, what: &str) -> Result<(), EncodeError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.error(format!("no {what} within {} ms", TIMEOUT.as_millis())));
        }
        match self.poller.poll(Some(left)) {
            Ok(_) | Err(PollError::EPollWait(v4l2r::nix::errno::Errno::EINTR)) => Ok(()),
            Err(e) => Err(self.error(format!("waiting for {what}: {e}"))),
        }
    }

    /// Drains the encoder (V4L2_ENC_CMD_STOP, then CAPTURE buffers until the LAST one, at
    /// most [`TIMEOUT`]) and streams both queues off.
    fn stop(&mut self) {
        let command = &EncoderCommand::Stop(false);
        let drained = match ioctl::encoder_cmd::<_, ()>(&*self.device, command) {
            Ok(()) if !self.stopped => self.drain(),
            Ok(()) => Ok(()),
            Err(e) => Err(format!("V4L2_ENC_CMD_STOP: {e}")),
        };
        if let Err(e) = drained {
            info!("{}: stopped without draining: {e}", self.name);
        }
        for queue in [&mut self.capture, &mut self.output] {
            if let Err(e) = queue.stream_off(&*self.device) {
                info!("{}: {e}", self.name);
            }
        }
    }

    fn drain(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self
                .capture
                .dequeue(&*self.device)
                .map_err(|e| e.to_string())?
            {
                Some(done) if done.buffer.is_last() => return Ok(()),
                Some(_) => {}
                None => self.wait(deadline, "the LAST buffer").map_err(|e| e.0)?,
            }
        }
    }
}

impl Drop for M2mEncoder {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Encoder for M2mEncoder {
    fn kind(&self) -> VideoEncoder {
        VideoEncoder::V4l2m2m
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn encode(
        &mut self,
        picture: &[u8],
        force_idr: bool,
        _pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        self.encode_picture(Source::Bytes(picture), force_idr)
    }

    fn encode_shared(
        &mut self,
        picture: &SharedPicture,
        force_idr: bool,
        _pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        M2mEncoder::encode_shared(self, picture, force_idr)
    }

    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        self.settings.bitrate_kbps = kbps;
        self.set(Control::Bitrate, &Want::FirstOf(vec![bitrate_bps(kbps)]))
    }
}

fn bitrate_bps(kbps: u32) -> i32 {
    (i64::from(kbps) * 1000).min(i64::from(i32::MAX)) as i32
}

/// v4l2r's open error, with the reason it leaves out of its message.
fn open_error(error: DeviceOpenError) -> String {
    match error {
        DeviceOpenError::OpenError(errno) => format!("cannot open: {errno}"),
        DeviceOpenError::QueryCapError(e) => format!("not a V4L2 device (VIDIOC_QUERYCAP: {e})"),
    }
}

/// The OUTPUT and CAPTURE queue types of a memory-to-memory device.
fn queue_types(caps: Capabilities) -> Option<(QueueType, QueueType)> {
    if caps.contains(Capabilities::VIDEO_M2M_MPLANE) {
        Some((QueueType::VideoOutputMplane, QueueType::VideoCaptureMplane))
    } else if caps.contains(Capabilities::VIDEO_M2M) {
        Some((QueueType::VideoOutput, QueueType::VideoCapture))
    } else {
        None
    }
}

/// The pixel formats a queue offers, with whether they are compressed.
fn formats(device: &Device, kind: QueueType) -> Vec<(PixelFormat, bool)> {
    FormatIterator::new(device, kind)
        .map(|f| (f.pixelformat, f.flags.contains(FormatFlags::COMPRESSED)))
        .collect()
}

/// YU12 if the OUTPUT queue takes it, else NV12; and the CAPTURE queue must offer `coded`.
fn choose_raw(
    device: &Device,
    output: QueueType,
    capture: QueueType,
    coded: Coded,
) -> Result<Raw, String> {
    let coded_formats = formats(device, capture);
    if !coded_formats.iter().any(|(f, _)| *f == coded.fourcc()) {
        return Err(format!(
            "does not encode {} (it codes: {})",
            coded.name(),
            list(&coded_formats)
        ));
    }
    let raw_formats = formats(device, output);
    [Raw::Yu12, Raw::Nv12]
        .into_iter()
        .find(|raw| {
            raw_formats
                .iter()
                .any(|(f, _)| *f == PixelFormat::from(raw.fourcc()))
        })
        .ok_or_else(|| {
            format!(
                "takes neither YU12 nor NV12 (it takes: {})",
                list(&raw_formats)
            )
        })
}

fn list(formats: &[(PixelFormat, bool)]) -> String {
    let names: Vec<String> = formats.iter().map(|(f, _)| f.to_string()).collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

/// S_FMT on the CAPTURE queue: the coded format at the picture's size.
fn set_coded_format(
    device: &mut Device,
    kind: QueueType,
    settings: &M2mSettings,
) -> Result<(), String> {
    let (w, h) = (settings.width, settings.height);
    let wanted = Format {
        width: w,
        height: h,
        pixelformat: settings.coded.fourcc(),
        plane_fmt: vec![PlaneLayout {
            sizeimage: w * h * 3 / 2,
            bytesperline: 0,
        }],
    };
    let set: Format = ioctl::s_fmt(device, (kind, &wanted))
        .map_err(|e| format!("VIDIOC_S_FMT {kind} {} {w}x{h}: {e}", settings.coded.name()))?;
    if set.pixelformat != settings.coded.fourcc() {
        return Err(format!(
            "the driver set {} instead of {}",
            set.pixelformat,
            settings.coded.name()
        ));
    }
    Ok(())
}

/// S_FMT on the OUTPUT queue: `raw` at the picture's size; where its planes are. A driver
/// that makes the picture larger (alignment) is asked to crop it back.
fn set_raw_format(
    device: &mut Device,
    kind: QueueType,
    raw: Raw,
    settings: &M2mSettings,
) -> Result<Layout, String> {
    let (w, h) = (settings.width, settings.height);
    let fourcc = PixelFormat::from(raw.fourcc());
    let wanted = Format {
        width: w,
        height: h,
        pixelformat: fourcc,
        plane_fmt: vec![PlaneLayout::default()],
    };
    let set: Format = ioctl::s_fmt(device, (kind, &wanted))
        .map_err(|e| format!("VIDIOC_S_FMT {kind} {fourcc} {w}x{h}: {e}"))?;
    let [plane] = &set.plane_fmt[..] else {
        return Err(format!(
            "{fourcc} in {} planes is not supported",
            set.plane_fmt.len()
        ));
    };
    if set.pixelformat != fourcc || set.width < w || set.height < h {
        return Err(format!(
            "asked for {fourcc} {w}x{h}, the driver set {} {}x{}",
            set.pixelformat, set.width, set.height
        ));
    }
    if (set.width, set.height) != (w, h) {
        crop(device, w, h);
    }
    Ok(Layout {
        raw,
        width: w as usize,
        height: h as usize,
        stride: (plane.bytesperline.max(set.width)) as usize,
        lines: set.height as usize,
    })
}

/// S_FMT on the OUTPUT queue for a camera's buffers: its pixel format, size and line length
/// exactly, or an error saying what the encoder wanted instead.
fn set_imported_format(
    device: &mut Device,
    kind: QueueType,
    shared: SharedLayout,
) -> Result<(), String> {
    let (w, h) = (shared.width, shared.height);
    let fourcc = PixelFormat::from(&shared.fourcc);
    let wanted = Format {
        width: w,
        height: h,
        pixelformat: fourcc,
        plane_fmt: vec![PlaneLayout {
            sizeimage: 0,
            bytesperline: shared.stride,
        }],
    };
    let set: Format = ioctl::s_fmt(device, (kind, &wanted))
        .map_err(|e| format!("VIDIOC_S_FMT {kind} {fourcc} {w}x{h}: {e}"))?;
    let stride = set.plane_fmt.first().map_or(0, |plane| plane.bytesperline);
    if set.pixelformat != fourcc
        || (set.width, set.height) != (w, h)
        || set.plane_fmt.len() != 1
        || stride != shared.stride
    {
        return Err(format!(
            "it takes {} {}x{} in {} plane(s) with lines of {stride} bytes, not the camera's {fourcc} \
             {w}x{h} with lines of {} bytes",
            set.pixelformat,
            set.width,
            set.height,
            set.plane_fmt.len(),
            shared.stride
        ));
    }
    Ok(())
}

/// Asks the encoder to code only the top-left `width` x `height` of its OUTPUT pictures.
fn crop(device: &Device, width: u32, height: u32) {
    let rect = Rect::new(0, 0, width, height);
    let result: Result<Rect, _> = ioctl::s_selection(
        device,
        SelectionType::Output,
        SelectionTarget::Crop,
        rect,
        SelectionFlags::empty(),
    );
    if let Err(e) = result {
        warn!("cropping the encoder's pictures to {width}x{height}: {e}");
    }
}

/// VIDIOC_S_PARM on the OUTPUT queue: the frame interval, for the driver's rate control.
fn set_frame_rate(device: &Device, kind: QueueType, fps: u32, name: &str) {
    let parm = bindings::v4l2_streamparm {
        type_: kind as u32,
        parm: bindings::v4l2_streamparm__bindgen_ty_1 {
            output: bindings::v4l2_outputparm {
                timeperframe: bindings::v4l2_fract {
                    numerator: 1,
                    denominator: fps.max(1),
                },
                ..Default::default()
            },
        },
    };
    let result: Result<bindings::v4l2_streamparm, _> = ioctl::s_parm(device, parm);
    if let Err(e) = result {
        info!("{name} takes no frame rate (VIDIOC_S_PARM: {e}): its rate control assumes its own");
    }
}

/// Sets the controls for `settings`; one the driver lacks is reported, one it refuses is
/// logged, neither stops the encoder.
fn apply_initial(device: &Device, controls: &mut Controls, settings: &M2mSettings, name: &str) {
    for (control, want) in controls::initial(settings) {
        if let Err(e) = controls.set(device, control, &want) {
            warn!("{name}: {e}");
        }
    }
    if !controls.has(Control::ForceKeyFrame) {
        controls.report_missing(Control::ForceKeyFrame);
    }
}

/// A poller that wakes up when either queue has a buffer done.
fn poller(device: &Arc<Device>) -> Result<Poller, String> {
    let mut poller = Poller::new(Arc::clone(device)).map_err(|e| format!("epoll: {e}"))?;
    for event in [DeviceEvent::CaptureReady, DeviceEvent::OutputReady] {
        poller
            .enable_event(event)
            .map_err(|e| format!("epoll: {e}"))?;
    }
    Ok(poller)
}

/// A CAPTURE buffer of H.264 holding parameter sets alone (some encoders send SPS and PPS in
/// a buffer of their own): they are kept for the IDR that follows, which is still to come.
fn keep_parameter_sets(params: &mut Passthrough, coded: &[u8]) -> bool {
    if passthrough::carries_picture(coded) {
        return false;
    }
    params.access_unit(coded);
    true
}

/// Whether an FWHT frame is an I-frame (vicodec's encoder does not flag its buffers): the
/// `flags` word of its header (big-endian, after the 8-byte magic, version, width, height).
fn fwht_key_frame(frame: &[u8]) -> bool {
    frame
        .get(20..24)
        .and_then(|word| word.try_into().ok())
        .is_some_and(|word: [u8; 4]| {
            FwhtFlags::from_bits_truncate(u32::from_be_bytes(word)).contains(FwhtFlags::I_FRAME)
        })
}

/// The first memory-to-memory device (in `/dev/video*` order) whose CAPTURE queue offers
/// `coded`: its path and card name; otherwise what each device is. Devices are only opened
/// for VIDIOC_QUERYCAP and VIDIOC_ENUM_FMT.
pub fn find_encoder(coded: Coded) -> Result<(PathBuf, String), String> {
    find_encoder_in(Path::new("/dev"), coded)
}

fn find_encoder_in(dir: &Path, coded: Coded) -> Result<(PathBuf, String), String> {
    let mut seen = Vec::new();
    for path in video_nodes(dir) {
        match probe(&path, coded) {
            Ok(card) => return Ok((path, card)),
            Err(what) => seen.push(format!("{}{what}", path.display())),
        }
    }
    if seen.is_empty() {
        seen.push(format!("no video device in {}", dir.display()));
    }
    Err(format!(
        "no V4L2 {} encoder: {}",
        coded.name(),
        seen.join("; ")
    ))
}

/// `videoN` entries of `dir`, by number.
fn video_nodes(dir: &Path) -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let number = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, path)| path).collect()
}

/// The card name of an encoder of `coded`, or what the device is instead (to follow its
/// path: " (vicodec) is a decoder", ": cannot open: EACCES: Permission denied").
fn probe(path: &Path, coded: Coded) -> Result<String, String> {
    let device =
        Device::open(path, DeviceConfig::new()).map_err(|e| format!(": {}", open_error(e)))?;
    let card = device.caps().card.clone();
    let Some((output, capture)) = queue_types(device.caps().device_caps()) else {
        return Err(format!(" ({card}) is not a memory-to-memory device"));
    };
    let coded_out: Vec<_> = formats(&device, capture)
        .into_iter()
        .filter(|(_, c)| *c)
        .collect();
    if formats(&device, output)
        .iter()
        .any(|(_, compressed)| *compressed)
    {
        return Err(format!(" ({card}) is a decoder"));
    }
    match coded_out.iter().any(|(f, _)| *f == coded.fourcc()) {
        true => Ok(card),
        false if coded_out.is_empty() => Err(format!(" ({card}) codes nothing (a converter)")),
        false => Err(format!(" ({card}) codes {} only", list(&coded_out))),
    }
}

#[cfg(test)]
mod tests;
