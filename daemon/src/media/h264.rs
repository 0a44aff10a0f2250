//! The one H.264 encoder (openh264) every viewer shares.
//!
//! Browsers (Safari included) all decode constrained baseline with packetization mode 1, so
//! that is what we produce: profile 42e0xx, no B-frames, SPS and PPS in front of every IDR.
//! The level is the smallest one whose limits fit the configured size, rate and bitrate.

use std::time::Duration;

use onair_config::VideoEncoder;
use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Level, Profile,
    RateControlMode, UsageType, VuiConfig,
};
use openh264::formats::YUVSlices;
use openh264_sys2::{ENCODER_OPTION_BITRATE, SBitrateInfo, SPATIAL_LAYER_ALL};

pub use super::encoder::EncodedPicture;
use super::encoder::{EncodeError, Encoder as LayerCodec};

/// An H.264 level with the limits that decide whether a stream fits it (ITU-T H.264 table A-1,
/// baseline bitrates).
struct LevelLimits {
    /// `level_idc`, as it appears in profile-level-id (31 = level 3.1).
    idc: u8,
    /// Macroblocks per second.
    max_mbps: u64,
    /// Macroblocks per frame.
    max_fs: u64,
    /// Kilobits per second.
    max_kbps: u64,
    /// The same level in openh264's terms.
    openh264: Level,
}

const LEVELS: &[LevelLimits] = &[
    LevelLimits {
        idc: 10,
        max_mbps: 1_485,
        max_fs: 99,
        max_kbps: 64,
        openh264: Level::Level_1_0,
    },
    LevelLimits {
        idc: 11,
        max_mbps: 3_000,
        max_fs: 396,
        max_kbps: 192,
        openh264: Level::Level_1_1,
    },
    LevelLimits {
        idc: 12,
        max_mbps: 6_000,
        max_fs: 396,
        max_kbps: 384,
        openh264: Level::Level_1_2,
    },
    LevelLimits {
        idc: 13,
        max_mbps: 11_880,
        max_fs: 396,
        max_kbps: 768,
        openh264: Level::Level_1_3,
    },
    LevelLimits {
        idc: 20,
        max_mbps: 11_880,
        max_fs: 396,
        max_kbps: 2_000,
        openh264: Level::Level_2_0,
    },
    LevelLimits {
        idc: 21,
        max_mbps: 19_800,
        max_fs: 792,
        max_kbps: 4_000,
        openh264: Level::Level_2_1,
    },
    LevelLimits {
        idc: 22,
        max_mbps: 20_250,
        max_fs: 1_620,
        max_kbps: 4_000,
        openh264: Level::Level_2_2,
    },
    LevelLimits {
        idc: 30,
        max_mbps: 40_500,
        max_fs: 1_620,
        max_kbps: 10_000,
        openh264: Level::Level_3_0,
    },
    LevelLimits {
        idc: 31,
        max_mbps: 108_000,
        max_fs: 3_600,
        max_kbps: 14_000,
        openh264: Level::Level_3_1,
    },
    LevelLimits {
        idc: 32,
        max_mbps: 216_000,
        max_fs: 5_120,
        max_kbps: 20_000,
        openh264: Level::Level_3_2,
    },
    LevelLimits {
        idc: 40,
        max_mbps: 245_760,
        max_fs: 8_192,
        max_kbps: 20_000,
        openh264: Level::Level_4_0,
    },
    LevelLimits {
        idc: 41,
        max_mbps: 245_760,
        max_fs: 8_192,
        max_kbps: 50_000,
        openh264: Level::Level_4_1,
    },
    LevelLimits {
        idc: 42,
        max_mbps: 522_240,
        max_fs: 8_704,
        max_kbps: 50_000,
        openh264: Level::Level_4_2,
    },
    LevelLimits {
        idc: 50,
        max_mbps: 589_824,
        max_fs: 22_080,
        max_kbps: 135_000,
        openh264: Level::Level_5_0,
    },
    LevelLimits {
        idc: 51,
        max_mbps: 983_040,
        max_fs: 36_864,
        max_kbps: 240_000,
        openh264: Level::Level_5_1,
    },
    LevelLimits {
        idc: 52,
        max_mbps: 2_073_600,
        max_fs: 36_864,
        max_kbps: 240_000,
        openh264: Level::Level_5_2,
    },
];

fn level_for(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> &'static LevelLimits {
    let frame_mbs = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16));
    let mbps = frame_mbs * u64::from(fps);
    LEVELS
        .iter()
        .find(|l| {
            frame_mbs <= l.max_fs && mbps <= l.max_mbps && u64::from(bitrate_kbps) <= l.max_kbps
        })
        .unwrap_or(&LEVELS[LEVELS.len() - 1])
}

/// The `level_idc` (31 = level 3.1) of the smallest level whose limits fit the stream: what
/// the SDP offers, and what a hardware encoder is asked for.
pub fn level_idc(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> u8 {
    level_for(width, height, fps, bitrate_kbps).idc
}

/// The SDP `profile-level-id` for constrained baseline at the level that fits the stream.
pub fn profile_level_id(width: u32, height: u32, fps: u32, bitrate_kbps: u32) -> String {
    format!("42e0{:02x}", level_idc(width, height, fps, bitrate_kbps))
}

/// What the encoder is asked to produce.
#[derive(Debug, Clone, Copy)]
pub struct H264Settings {
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Frames per second the source delivers.
    pub fps: u32,
    /// Target bitrate.
    pub bitrate_kbps: u32,
}

/// openh264 configured for WebRTC.
pub struct H264Encoder {
    encoder: Encoder,
    settings: H264Settings,
    /// Reused output buffer: no allocation per frame once it has grown.
    out: Vec<u8>,
}

impl H264Encoder {
    /// Builds the encoder; fails only if openh264 refuses the parameters.
    pub fn new(settings: H264Settings) -> Result<Self, openh264::Error> {
        let level = level_for(
            settings.width,
            settings.height,
            settings.fps,
            settings.bitrate_kbps,
        );
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(level.openh264)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(settings.bitrate_kbps * 1000))
            .max_frame_rate(FrameRate::from_hz(settings.fps as f32))
            // openh264 only holds the bitrate if it may skip a frame now and then; an uplink
            // that overflows would cost every viewer far more than a rare skipped frame.
            .skip_frames(true)
            // IDRs are scheduled by KeyframePolicy, which also serves viewers' requests.
            .intra_frame_period(IntraFramePeriod::from_num_frames(0))
            // Say what the pixels are: decoders that are not told assume BT.709 for HD and
            // shift every colour. Sources and the converter produce BT.601 limited range.
            .vui(VuiConfig::bt601());
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)?;
        Ok(H264Encoder {
            encoder,
            settings,
            out: Vec::with_capacity(256 * 1024),
        })
    }

    /// The settings the encoder was built with.
    pub fn settings(&self) -> H264Settings {
        self.settings
    }

    /// Encodes one I420 picture. `force_idr` makes it an IDR (with SPS/PPS in front).
    /// `None` when the encoder produced nothing for this picture.
    pub fn encode(
        &mut self,
        i420: &[u8],
        force_idr: bool,
        pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, openh264::Error> {
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        let luma = w * h;
        let chroma = luma / 4;
        let yuv = YUVSlices::new(
            (
                &i420[..luma],
                &i420[luma..luma + chroma],
                &i420[luma + chroma..luma + 2 * chroma],
            ),
            (w, h),
            (w, w / 2, w / 2),
        );
        if force_idr {
            self.encoder.force_intra_frame();
        }
        let timestamp = openh264::Timestamp::from_millis(pts.as_millis() as u64);
        let stream = self.encoder.encode_at(&yuv, timestamp)?;
        let keyframe = stream.frame_type() == FrameType::IDR;
        if matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.out.clear();
        stream.write_vec(&mut self.out);
        if self.out.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedPicture {
            annex_b: &self.out,
            keyframe,
        }))
    }
}

impl LayerCodec for H264Encoder {
    fn kind(&self) -> VideoEncoder {
        VideoEncoder::Openh264
    }

    fn describe(&self) -> String {
        "openh264".into()
    }

    fn encode(
        &mut self,
        picture: &[u8],
        force_idr: bool,
        pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        Ok(H264Encoder::encode(self, picture, force_idr, pts)?)
    }

    /// openh264's own run-time option (what WebRTC's wrapper does): no new encoder, no IDR.
    fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        let bps = i32::try_from(u64::from(kbps) * 1000)
            .map_err(|_| EncodeError(format!("{kbps} kb/s is too high a bitrate")))?;
        let mut info = SBitrateInfo {
            iLayer: SPATIAL_LAYER_ALL,
            iBitrate: bps,
        };
        // SAFETY: the encoder is initialised (`new` made it); SetOption reads the struct,
        // which lives until the call returns; the bitrate is an option openh264 documents for
        // use between frames.
        let status = unsafe {
            self.encoder
                .raw_api()
                .set_option(ENCODER_OPTION_BITRATE, (&raw mut info).cast())
        };
        if status != 0 {
            return Err(EncodeError(format!(
                "openh264 refused a bitrate of {kbps} kb/s (status {status})"
            )));
        }
        self.settings.bitrate_kbps = kbps;
        Ok(())
    }
}

/// NAL unit types in an Annex B buffer, in order (for tests and diagnostics).
pub fn nal_types(annex_b: &[u8]) -> Vec<u8> {
    super::passthrough::nal_units(annex_b)
        .map(|nal| nal[0] & 0x1f)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_matches_size_and_rate() {
        assert_eq!(profile_level_id(1280, 720, 30, 2000), "42e01f");
        assert_eq!(profile_level_id(640, 480, 30, 1000), "42e01e");
        assert_eq!(profile_level_id(1920, 1080, 30, 4000), "42e028");
        assert_eq!(profile_level_id(320, 240, 15, 300), "42e00c");
    }

    fn grey_frame(w: u32, h: u32, shade: u8) -> Vec<u8> {
        let luma = (w * h) as usize;
        let mut f = vec![shade; luma];
        f.resize(luma * 3 / 2, 128);
        f
    }

    #[test]
    fn every_idr_carries_sps_and_pps() {
        let mut enc = H264Encoder::new(H264Settings {
            width: 320,
            height: 240,
            fps: 30,
            bitrate_kbps: 500,
        })
        .unwrap();
        let mut idrs = 0;
        for i in 0..20u32 {
            let frame = grey_frame(320, 240, (i * 10) as u8);
            let force = i % 7 == 0;
            let pic = enc
                .encode(&frame, force, Duration::from_millis(u64::from(i) * 33))
                .unwrap();
            let Some(pic) = pic else { continue };
            let types = nal_types(pic.annex_b);
            assert_eq!(pic.keyframe, types.contains(&5), "frame {i}: {types:?}");
            if pic.keyframe {
                idrs += 1;
                let idr_at = types.iter().position(|&t| t == 5).unwrap();
                assert!(
                    types[..idr_at].contains(&7) && types[..idr_at].contains(&8),
                    "frame {i}: {types:?}"
                );
            }
            if force {
                assert!(pic.keyframe, "forced frame {i} was not an IDR");
            }
            // Baseline: no B slices, so slice types are IDR (5) or non-IDR (1) only.
            assert!(
                types.iter().all(|t| matches!(t, 1 | 5 | 6 | 7 | 8 | 9)),
                "{types:?}"
            );
        }
        assert_eq!(idrs, 3);
    }
}
