//! The test pattern as a camera that encodes H.264 would deliver it: what
//! `video.source = "test"` gives with `video.encoder = "passthrough"`, so the passthrough
//! path runs, and is tested, without such a camera.
//!
//! Like many UVC H.264 webcams it keeps a fixed key-frame period that nobody can shorten and
//! sends SPS and PPS once, before its first IDR only.

use std::time::Duration;

use onair_hal::synthetic::TestPattern;
use onair_hal::{HalError, PixelFormat, VideoFormat, VideoFrame, VideoSource};

use super::h264::{H264Encoder, H264Settings};
use super::passthrough::nal_units;

/// See the module documentation.
pub struct H264TestCamera {
    pattern: TestPattern,
    encoder: H264Encoder,
    picture: VideoFrame,
    /// Pictures from one IDR to the next.
    idr_period: u64,
    /// Pictures since the last IDR; the next one is an IDR when this reaches the period.
    since_idr: u64,
    /// SPS and PPS have been sent (with the first IDR).
    parameter_sets_sent: bool,
}

impl H264TestCamera {
    /// A `width` x `height` pattern at `fps`, encoded at `bitrate_kbps` with an IDR every
    /// `idr_every`.
    pub fn new(
        width: u32,
        height: u32,
        fps: u32,
        bitrate_kbps: u32,
        idr_every: Duration,
    ) -> Result<Self, openh264::Error> {
        let pattern = TestPattern::new(width, height, fps);
        let fps = pattern.format().fps;
        let encoder = H264Encoder::new(H264Settings {
            width,
            height,
            fps,
            bitrate_kbps,
        })?;
        let idr_period = (idr_every.as_millis() as u64 * u64::from(fps) / 1000).max(1);
        Ok(H264TestCamera {
            pattern,
            encoder,
            picture: VideoFrame::new(),
            idr_period,
            since_idr: idr_period,
            parameter_sets_sent: false,
        })
    }
}

impl VideoSource for H264TestCamera {
    fn format(&self) -> VideoFormat {
        VideoFormat {
            pixel: PixelFormat::H264,
            ..self.pattern.format()
        }
    }

    fn describe(&self) -> String {
        format!(
            "test pattern from an H.264 camera (IDR every {} pictures)",
            self.idr_period
        )
    }

    fn read_frame(&mut self, frame: &mut VideoFrame) -> Result<(), HalError> {
        loop {
            self.pattern.read_frame(&mut self.picture)?;
            let idr = self.since_idr >= self.idr_period;
            let pts = Duration::from_secs(self.picture.sequence) / self.pattern.format().fps;
            let encoded = match self.encoder.encode(&self.picture.data, idr, pts) {
                Ok(encoded) => encoded,
                Err(e) => {
                    return Err(HalError::Read {
                        device: "test pattern".into(),
                        reason: format!("H.264 encoder: {e}"),
                    });
                }
            };
            // A skipped picture (rate control) is a frame the camera did not send.
            let Some(encoded) = encoded else { continue };
            frame.data.clear();
            let keep_parameter_sets = !self.parameter_sets_sent;
            for nal in nal_units(encoded.annex_b) {
                if keep_parameter_sets || !matches!(nal[0] & 0x1f, 7 | 8) {
                    frame.data.extend_from_slice(&[0, 0, 0, 1]);
                    frame.data.extend_from_slice(nal);
                }
            }
            if encoded.keyframe {
                self.since_idr = 1;
                self.parameter_sets_sent = true;
            } else {
                self.since_idr += 1;
            }
            frame.sequence = self.picture.sequence;
            frame.captured = self.picture.captured;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::nal_types;

    #[test]
    fn fixed_key_frame_period_and_parameter_sets_only_once() {
        let mut camera =
            H264TestCamera::new(160, 120, 60, 300, Duration::from_millis(100)).unwrap();
        assert_eq!(camera.format().pixel, PixelFormat::H264);
        let mut frame = VideoFrame::new();
        let mut idrs = Vec::new();
        for n in 0..20 {
            camera.read_frame(&mut frame).unwrap();
            let types = nal_types(&frame.data);
            if types.contains(&5) {
                idrs.push(n);
                let parameter_sets = types.contains(&7) && types.contains(&8);
                assert_eq!(parameter_sets, n == 0, "picture {n}: {types:?}");
            } else {
                assert!(types.contains(&1), "picture {n}: {types:?}");
            }
        }
        // 100 ms at 60 fps: an IDR every 6 pictures (rate control may skip one now and then).
        assert!(idrs.len() >= 3 && idrs[0] == 0, "{idrs:?}");
    }
}
