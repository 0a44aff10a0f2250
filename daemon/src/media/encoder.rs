//! What turns a layer's pictures into H.264: one interface for every encoder.
//!
//! - [`H264Encoder`](super::h264::H264Encoder): openh264, in software, on every board;
//! - [`M2mEncoder`](super::m2m::M2mEncoder): a V4L2 memory-to-memory encoder (the Pi's
//!   bcm2835-codec at `/dev/video11`);
//! - [`Passthrough`](super::passthrough::Passthrough): the camera's own H.264, passed on.
//!
//! A layer ([`super::layer::LayerEncoder`]) holds one of them, and openh264 beside it for the
//! pictures the first cannot take (a passthrough camera's privacy pictures) and for when it
//! fails at run time.

use std::fmt;
use std::time::Duration;

use onair_config::VideoEncoder;
use onair_hal::PixelFormat;

/// One encoded access unit in Annex B form (start codes before every NAL unit).
pub struct EncodedPicture<'a> {
    /// SPS, PPS (before an IDR) and the slices of one picture.
    pub annex_b: &'a [u8],
    /// Whether this picture is an IDR a decoder can start from.
    pub keyframe: bool,
}

/// Why an encoder could not take a picture or a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

impl From<openh264::Error> for EncodeError {
    fn from(err: openh264::Error) -> Self {
        EncodeError(format!("openh264: {err}"))
    }
}

/// An H.264 encoder of one layer's pictures.
pub trait Encoder: Send {
    /// Which kind it is (for `/api/status`, the SDP and the log).
    fn kind(&self) -> VideoEncoder;

    /// What it is, for the log: "openh264", "/dev/video11 (bcm2835-codec-encode)".
    fn describe(&self) -> String;

    /// What [`Self::encode`] takes: [`PixelFormat::I420`] pictures of the layer's size, or
    /// (passthrough) the camera's H.264.
    fn input(&self) -> PixelFormat {
        PixelFormat::I420
    }

    /// Encodes one picture; `force_idr` makes it an IDR with SPS and PPS in front (an
    /// encoder that cannot, a passthrough camera, ignores it). `None` when nothing came out
    /// for this picture (rate control skipped it, or the stream cannot be started yet).
    fn encode(
        &mut self,
        picture: &[u8],
        force_idr: bool,
        pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError>;

    /// Changes the target bitrate from the next picture on.
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError>;

    /// Something else went out in between (privacy pictures from another encoder): the next
    /// picture this one sends must be an IDR. Encoders that can force one need nothing here.
    fn restart(&mut self) {}
}
