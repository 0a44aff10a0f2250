//! Device traits for onair and their backends.
//!
//! The daemon sees a camera as a [`VideoSource`] and a microphone as an [`AudioSource`]. Both
//! are blocking, pull-based and meant to run on a capture thread of their own: V4L2 `DQBUF`
//! and ALSA reads block, and so does the synthetic source, which paces itself to the
//! configured rate. Every frame and audio period carries its capture time on the monotonic
//! clock ([`std::time::Instant`], which is `CLOCK_MONOTONIC` on Linux), so RTP timestamps of
//! both media come from one clock and stay in sync.
//!
//! Parts:
//! - [`synthetic`]: moving colour bars with a machine-readable stamp, and a tone. The
//!   embedded default and the test suites use it; hardware backends slot in beside it.
//! - [`v4l2`]: cameras through Video4Linux2 (USB UVC webcams, the Pi's camera drivers,
//!   vivid), raw YUV or MJPEG decoded to I420.
//! - [`libcamera`]: cameras through libcamera (Raspberry Pi camera modules, SoC ISPs), by a
//!   helper process built against the installed libcamera, so onaird never links it.
//! - [`alsa`]: microphones through ALSA, delivered in exact 20 ms periods at 48 kHz.
//! - [`gpio`]: indicator LEDs and a privacy button on a Raspberry Pi's header (`rppal`),
//!   and a fake for tests.
//!
//! Hardware backends keep every decision (which format, which size, how to recover) in pure
//! functions with unit tests; the ioctl and PCM calls are a thin edge around them, because
//! the machines that build and test onair have no camera or sound card.

// One audited exception: `v4l2::Fd` borrows the `v4l` crate's file descriptor.
#![deny(unsafe_code)]

use std::time::Instant;

pub mod alsa;
pub mod gpio;
pub mod libcamera;
pub mod synthetic;
pub mod v4l2;

/// Layout of the bytes in a [`VideoFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Planar 4:2:0: Y plane, then U (Cb) and V (Cr) planes at half width and height.
    I420,
    /// Semi-planar 4:2:0: Y plane, then one plane of interleaved U,V pairs.
    Nv12,
    /// Packed 4:2:2: Y0 U Y1 V for every two pixels.
    Yuyv,
    /// Packed RGB, 3 bytes a pixel in the order R, G, B (V4L2 `RGB24`, libcamera `BGR888`).
    Rgb24,
    /// Packed RGB, 3 bytes a pixel in the order B, G, R (V4L2 `BGR24`, libcamera `RGB888`).
    Bgr24,
    /// Not pictures but H.264 the camera encoded: one access unit per frame, as an Annex-B
    /// byte stream (NAL units behind `00 00 01` or `00 00 00 01` start codes).
    H264,
}

impl PixelFormat {
    /// Bytes one frame of `width` x `height` takes (width and height are even); `None` for
    /// H.264, whose frames vary in length.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self {
            PixelFormat::I420 | PixelFormat::Nv12 => Some(w * h * 3 / 2),
            PixelFormat::Yuyv => Some(w * h * 2),
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(w * h * 3),
            PixelFormat::H264 => None,
        }
    }
}

/// What a video source delivers; fixed for the life of an opened source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    /// Pixel layout of [`VideoFrame::data`].
    pub pixel: PixelFormat,
    /// Picture width in pixels (even).
    pub width: u32,
    /// Picture height in pixels (even).
    pub height: u32,
    /// Nominal frames per second; the encoder's rate control and RTP clock assume it.
    pub fps: u32,
}

/// One captured picture.
///
/// Sources fill a frame the caller owns (see [`VideoSource::read_frame`]) so that the capture
/// loop reuses one buffer and allocates nothing per frame.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// The picture, laid out as the source's [`VideoFormat::pixel`] says. Empty when the
    /// picture is [`shared`](Self::shared) and the caller did not [`want`](Self::want_data)
    /// its bytes.
    pub data: Vec<u8>,
    /// Frame counter of the source, from 0; a gap means the source dropped frames.
    pub sequence: u64,
    /// When the picture was captured (monotonic clock): drives RTP timestamps and latency.
    pub captured: Instant,
    /// The source's own buffer the picture is in, as a DMABUF, when the source shares its
    /// buffers ([`VideoSource::share`]). It is the caller's until its next `read_frame`.
    pub shared: Option<SharedPicture>,
    /// Set by the caller before a read: fill `data` even when the picture is shared (true
    /// unless changed; a source that does not share fills `data` whatever it says).
    pub want_data: bool,
}

impl VideoFrame {
    /// An empty frame to hand to [`VideoSource::read_frame`].
    pub fn new() -> Self {
        VideoFrame {
            data: Vec::new(),
            sequence: 0,
            captured: Instant::now(),
            shared: None,
            want_data: true,
        }
    }
}

/// How a source's shared buffers hold a picture: what an importer (a hardware encoder) has
/// to be set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedLayout {
    /// The V4L2 four character code: `YUYV`, `NV12`, `YU12`.
    pub fourcc: [u8; 4],
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Bytes from one line to the next (of the first plane).
    pub stride: u32,
    /// How many buffers the source cycles through.
    pub buffers: usize,
}

/// A picture in a source's buffer, exported as a DMABUF (see [`VideoSource::share`]).
#[derive(Debug, Clone)]
pub struct SharedPicture {
    /// The buffer.
    pub dmabuf: v4l2::Dmabuf,
    /// Which of the source's buffers it is (`0..layout.buffers`); the same number is always
    /// the same buffer.
    pub index: usize,
    /// Bytes of the buffer the picture takes.
    pub bytes_used: usize,
    /// How the picture lies in the buffer.
    pub layout: SharedLayout,
}

impl Default for VideoFrame {
    fn default() -> Self {
        Self::new()
    }
}

/// The picture a caller would like from a camera; the backend picks the closest the device
/// offers and reports it in [`VideoSource::format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormatRequest {
    /// Wanted width in pixels.
    pub width: u32,
    /// Wanted height in pixels.
    pub height: u32,
    /// Wanted frames per second.
    pub fps: u32,
    /// The camera's own H.264 ([`PixelFormat::H264`]) instead of pictures: for cameras that
    /// encode, whose stream is passed through to viewers as it comes.
    pub h264: bool,
}

/// A camera, or anything that produces pictures like one.
pub trait VideoSource: Send {
    /// What the source delivers.
    fn format(&self) -> VideoFormat;

    /// Human-readable name for logs ("test pattern", "/dev/video0 (UVC Camera)").
    fn describe(&self) -> String;

    /// Blocks until the next picture is captured, then writes it into `frame`.
    ///
    /// `frame.data` is resized to the frame's length; its allocation is reused.
    fn read_frame(&mut self, frame: &mut VideoFrame) -> Result<(), HalError>;

    /// From the next read on, hand out each picture in the source's own buffer as a DMABUF
    /// ([`VideoFrame::shared`]) so that a hardware encoder can read it where it is, and copy
    /// it into [`VideoFrame::data`] only when the caller wants it. How the buffers hold a
    /// picture; an error (in words) when the source cannot share (the default).
    fn share(&mut self) -> Result<SharedLayout, String> {
        Err(format!("{} does not share its buffers", self.describe()))
    }
}

/// What an audio source delivers; fixed for the life of an opened source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    /// Samples per second per channel.
    pub rate: u32,
    /// Interleaved channels, 1 or 2.
    pub channels: u16,
    /// Samples per channel in one period.
    pub period_frames: u32,
}

/// One captured period of signed 16-bit PCM.
#[derive(Debug, Clone)]
pub struct AudioFrame {
    /// Interleaved samples, `period_frames * channels` of them.
    pub samples: Vec<i16>,
    /// When the first sample of the period was captured (monotonic clock).
    pub captured: Instant,
}

impl AudioFrame {
    /// An empty period to hand to [`AudioSource::read_period`].
    pub fn new() -> Self {
        AudioFrame {
            samples: Vec::new(),
            captured: Instant::now(),
        }
    }
}

impl Default for AudioFrame {
    fn default() -> Self {
        Self::new()
    }
}

/// A microphone, or anything that produces sound like one.
pub trait AudioSource: Send {
    /// What the source delivers.
    fn format(&self) -> AudioFormat;

    /// Human-readable name for logs.
    fn describe(&self) -> String;

    /// Blocks until the next period is captured, then writes it into `frame`.
    fn read_period(&mut self, frame: &mut AudioFrame) -> Result<(), HalError>;
}

/// Why a device could not be opened or read. Every variant names the device.
#[derive(Debug, thiserror::Error)]
pub enum HalError {
    /// The device could not be opened with the requested settings.
    #[error("{device}: cannot open: {reason}")]
    Open {
        /// Path or name of the device.
        device: String,
        /// What went wrong, in words.
        reason: String,
    },
    /// The device was open but a read failed (unplugged, driver error).
    #[error("{device}: read failed: {reason}")]
    Read {
        /// Path or name of the device.
        device: String,
        /// What went wrong, in words.
        reason: String,
    },
    /// The device has disappeared (unplugged, driver unbound): this handle will never deliver
    /// again. Drop it and open the device anew, with a backoff, until it is back.
    #[error("{device}: device gone: {reason}")]
    Gone {
        /// Path or name of the device.
        device: String,
        /// What went wrong, in words.
        reason: String,
    },
}

impl HalError {
    /// Whether the device has gone away, so the caller should reopen it rather than read on.
    pub fn is_gone(&self) -> bool {
        matches!(self, HalError::Gone { .. })
    }

    /// The path or name of the device the error is about.
    pub fn device(&self) -> &str {
        match self {
            HalError::Open { device, .. }
            | HalError::Read { device, .. }
            | HalError::Gone { device, .. } => device,
        }
    }
}
