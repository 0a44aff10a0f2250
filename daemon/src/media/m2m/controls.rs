//! The codec controls the encoder sets, and what it does when a driver lacks one.
//!
//! Drivers implement different subsets: the Pi's bcm2835-codec has bitrate, profile, level,
//! I-period, repeat-sequence-header and force-key-frame; vicodec only a GOP size and its own
//! FWHT quantisers. A control the driver lacks is reported once, at info, with what that
//! means for the stream, and is not an error.

use std::collections::HashSet;

use tracing::info;
use v4l2r::bindings::{self, v4l2_ext_control, v4l2_ext_control__bindgen_ty_1, v4l2_queryctrl};
use v4l2r::device::Device;
use v4l2r::ioctl::{self, CtrlId, CtrlWhich, QueryCtrlFlags};

use super::{Coded, M2mSettings};
use crate::media::h264;

/// A control onair sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Control {
    Profile,
    Level,
    BitrateMode,
    Bitrate,
    GopSize,
    IPeriod,
    HeaderMode,
    RepeatSeqHeader,
    PrependSpsPps,
    ForceKeyFrame,
}

impl Control {
    pub(super) fn id(self) -> u32 {
        match self {
            Control::Profile => bindings::V4L2_CID_MPEG_VIDEO_H264_PROFILE,
            Control::Level => bindings::V4L2_CID_MPEG_VIDEO_H264_LEVEL,
            Control::BitrateMode => bindings::V4L2_CID_MPEG_VIDEO_BITRATE_MODE,
            Control::Bitrate => bindings::V4L2_CID_MPEG_VIDEO_BITRATE,
            Control::GopSize => bindings::V4L2_CID_MPEG_VIDEO_GOP_SIZE,
            Control::IPeriod => bindings::V4L2_CID_MPEG_VIDEO_H264_I_PERIOD,
            Control::HeaderMode => bindings::V4L2_CID_MPEG_VIDEO_HEADER_MODE,
            Control::RepeatSeqHeader => bindings::V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER,
            Control::PrependSpsPps => bindings::V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR,
            Control::ForceKeyFrame => bindings::V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME,
        }
    }

    /// Its name in the kernel's headers, for the log.
    pub(super) fn name(self) -> &'static str {
        match self {
            Control::Profile => "V4L2_CID_MPEG_VIDEO_H264_PROFILE",
            Control::Level => "V4L2_CID_MPEG_VIDEO_H264_LEVEL",
            Control::BitrateMode => "V4L2_CID_MPEG_VIDEO_BITRATE_MODE",
            Control::Bitrate => "V4L2_CID_MPEG_VIDEO_BITRATE",
            Control::GopSize => "V4L2_CID_MPEG_VIDEO_GOP_SIZE",
            Control::IPeriod => "V4L2_CID_MPEG_VIDEO_H264_I_PERIOD",
            Control::HeaderMode => "V4L2_CID_MPEG_VIDEO_HEADER_MODE",
            Control::RepeatSeqHeader => "V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER",
            Control::PrependSpsPps => "V4L2_CID_MPEG_VIDEO_PREPEND_SPSPPS_TO_IDR",
            Control::ForceKeyFrame => "V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME",
        }
    }

    /// What a driver without it means for the stream.
    fn without(self) -> &'static str {
        match self {
            Control::Profile => "the driver picks the H.264 profile",
            Control::Level => "the driver picks the H.264 level",
            Control::BitrateMode => "the driver's own rate control mode",
            Control::Bitrate => "the bitrate is the driver's, and changes to it are ignored",
            Control::GopSize | Control::IPeriod => "the driver's own key-frame period",
            Control::HeaderMode => "SPS and PPS may come in a buffer of their own",
            Control::RepeatSeqHeader | Control::PrependSpsPps => {
                "SPS and PPS are kept and put in front of every IDR here"
            }
            Control::ForceKeyFrame => {
                "a forced key frame restarts the CAPTURE queue (the stateful encoder's reset)"
            }
        }
    }

    /// The controls worth setting for `coded`.
    fn for_coded(coded: Coded) -> &'static [Control] {
        match coded {
            Coded::H264 => &[
                Control::Profile,
                Control::Level,
                Control::BitrateMode,
                Control::Bitrate,
                Control::GopSize,
                Control::IPeriod,
                Control::HeaderMode,
                Control::RepeatSeqHeader,
                Control::PrependSpsPps,
                Control::ForceKeyFrame,
            ],
            Coded::Fwht => &[
                Control::BitrateMode,
                Control::Bitrate,
                Control::GopSize,
                Control::ForceKeyFrame,
            ],
        }
    }
}

/// What a control is to be set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Want {
    /// The first of these the driver accepts (menus: constrained baseline, else baseline).
    FirstOf(Vec<i32>),
    /// The largest value it allows (a GOP of 0: as long as the driver goes).
    Maximum,
}

impl Want {
    fn one(value: i64) -> Want {
        Want::FirstOf(vec![value.clamp(0, i64::from(i32::MAX)) as i32])
    }
}

/// The GOP controls' value for `pictures` (0: only forced key frames).
pub(super) fn gop(pictures: u32) -> Want {
    match pictures {
        0 => Want::Maximum,
        n => Want::one(i64::from(n)),
    }
}

/// The controls to set when the encoder opens, in this order (profile and level before
/// the rest, as some drivers derive limits from them). The force-key-frame button is only
/// looked up.
pub(super) fn initial(settings: &M2mSettings) -> Vec<(Control, Want)> {
    let level = h264::level_idc(
        settings.width,
        settings.height,
        settings.fps,
        settings.bitrate_kbps,
    );
    let one = |value: u32| Want::FirstOf(vec![value as i32]);
    Control::for_coded(settings.coded)
        .iter()
        .filter_map(|&control| {
            let want = match control {
                Control::Profile => Want::FirstOf(vec![
                    bindings::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE as i32,
                    bindings::v4l2_mpeg_video_h264_profile_V4L2_MPEG_VIDEO_H264_PROFILE_BASELINE as i32,
                ]),
                Control::Level => one(v4l2_level(level)),
                Control::BitrateMode => Want::FirstOf(vec![
                    bindings::v4l2_mpeg_video_bitrate_mode_V4L2_MPEG_VIDEO_BITRATE_MODE_CBR as i32,
                    bindings::v4l2_mpeg_video_bitrate_mode_V4L2_MPEG_VIDEO_BITRATE_MODE_VBR as i32,
                ]),
                Control::Bitrate => Want::one(i64::from(settings.bitrate_kbps) * 1000),
                Control::GopSize | Control::IPeriod => gop(settings.gop),
                Control::HeaderMode => one(
                    bindings::v4l2_mpeg_video_header_mode_V4L2_MPEG_VIDEO_HEADER_MODE_JOINED_WITH_1ST_FRAME,
                ),
                Control::RepeatSeqHeader | Control::PrependSpsPps => one(1),
                Control::ForceKeyFrame => return None,
            };
            Some((control, want))
        })
        .collect()
}

/// V4L2's `enum v4l2_mpeg_video_h264_level` for a `level_idc` (9 is level 1b).
fn v4l2_level(idc: u8) -> u32 {
    use bindings::*;
    match idc {
        9 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_1B,
        ..=10 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_1_0,
        11 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_1_1,
        12 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_1_2,
        13 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_1_3,
        20 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_2_0,
        21 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_2_1,
        22 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_2_2,
        30 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_3_0,
        31 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_3_1,
        32 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_3_2,
        40 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0,
        41 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_1,
        42 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_2,
        50 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_5_0,
        51 => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_5_1,
        _ => v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_5_2,
    }
}

/// The range QUERYCTRL reported for a control the driver has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) min: i32,
    pub(super) max: i32,
}

/// The values to try for `want` within `range`, in order.
pub(super) fn candidates(want: &Want, range: Range) -> Vec<i32> {
    match want {
        Want::Maximum => vec![range.max],
        Want::FirstOf(values) => values
            .iter()
            .map(|v| (*v).clamp(range.min, range.max.max(range.min)))
            .collect(),
    }
}

/// The controls of one opened encoder: which it has, and which were reported missing.
pub(super) struct Controls {
    /// "/dev/video11 (bcm2835-codec-encode)", for the log.
    name: String,
    ranges: Vec<(Control, Range)>,
    reported: HashSet<Control>,
}

impl Controls {
    /// Looks up every control worth setting for `coded` (QUERYCTRL).
    pub(super) fn query(device: &Device, name: String, coded: Coded) -> Controls {
        let ranges = Control::for_coded(coded)
            .iter()
            .filter_map(|&control| Some((control, query(device, control)?)))
            .collect();
        Controls {
            name,
            ranges,
            reported: HashSet::new(),
        }
    }

    /// The names of the controls reported missing so far, in the order they were set.
    pub(super) fn missing(&self) -> Vec<&'static str> {
        let mut missing: Vec<Control> = self.reported.iter().copied().collect();
        missing.sort_by_key(|control| *control as u8);
        missing.into_iter().map(Control::name).collect()
    }

    /// Whether the driver has `control`.
    pub(super) fn has(&self, control: Control) -> bool {
        self.range(control).is_some()
    }

    fn range(&self, control: Control) -> Option<Range> {
        self.ranges
            .iter()
            .find(|(c, _)| *c == control)
            .map(|(_, range)| *range)
    }

    /// Sets `control` to what `want` says. `Ok(None)` when the driver lacks it (reported the
    /// first time), `Ok(Some(value))` with the value set, or why no value was accepted.
    pub(super) fn set(
        &mut self,
        device: &Device,
        control: Control,
        want: &Want,
    ) -> Result<Option<i32>, String> {
        let Some(range) = self.range(control) else {
            self.report_missing(control);
            return Ok(None);
        };
        let mut last = String::new();
        for value in candidates(want, range) {
            match set_value(device, control.id(), value) {
                Ok(()) => return Ok(Some(value)),
                Err(e) => last = format!("{} = {value}: {e}", control.name()),
            }
        }
        Err(last)
    }

    /// Logs once that the driver lacks `control` (unless a control doing the same job is
    /// there: repeating SPS/PPS has two).
    pub(super) fn report_missing(&mut self, control: Control) {
        let covered = match control {
            Control::RepeatSeqHeader => self.has(Control::PrependSpsPps),
            Control::PrependSpsPps => self.has(Control::RepeatSeqHeader),
            _ => false,
        };
        if covered || !self.reported.insert(control) {
            return;
        }
        info!(
            "{} has no control {}: {}",
            self.name,
            control.name(),
            control.without()
        );
    }
}

/// QUERYCTRL: the control's range, or `None` when the driver lacks it or has it disabled.
fn query(device: &Device, control: Control) -> Option<Range> {
    let id = CtrlId::new(control.id()).ok()?;
    let found: v4l2_queryctrl = ioctl::queryctrl(device, id, QueryCtrlFlags::empty()).ok()?;
    (found.flags & bindings::V4L2_CTRL_FLAG_DISABLED == 0).then_some(Range {
        min: found.minimum,
        max: found.maximum,
    })
}

/// VIDIOC_S_EXT_CTRLS of one control.
pub(super) fn set_value(device: &Device, id: u32, value: i32) -> Result<(), String> {
    let mut control = [v4l2_ext_control {
        id,
        __bindgen_anon_1: v4l2_ext_control__bindgen_ty_1 { value },
        ..Default::default()
    }];
    ioctl::s_ext_ctrls(device, CtrlWhich::Current, &mut control[..]).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(coded: Coded, gop: u32) -> M2mSettings {
        M2mSettings {
            width: 1280,
            height: 720,
            fps: 30,
            bitrate_kbps: 2000,
            gop,
            coded,
            input: crate::media::m2m::Input::Copied,
        }
    }

    fn want(list: &[(Control, Want)], control: Control) -> Option<&Want> {
        list.iter().find(|(c, _)| *c == control).map(|(_, w)| w)
    }

    #[test]
    fn h264_asks_for_constrained_baseline_at_the_level_of_h264_rs() {
        let list = initial(&settings(Coded::H264, 60));
        assert_eq!(list[0].0, Control::Profile);
        assert_eq!(
            want(&list, Control::Profile),
            Some(&Want::FirstOf(vec![1, 0])),
            "constrained baseline, else baseline"
        );
        // 720p30 at 2 Mb/s is level 3.1, as h264.rs says for the SDP (42e01f).
        assert_eq!(
            want(&list, Control::Level),
            Some(&Want::FirstOf(vec![
                bindings::v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_3_1 as i32
            ]))
        );
        assert_eq!(
            want(&list, Control::Bitrate),
            Some(&Want::FirstOf(vec![2_000_000]))
        );
        assert_eq!(
            want(&list, Control::GopSize),
            Some(&Want::FirstOf(vec![60]))
        );
        assert_eq!(
            want(&list, Control::IPeriod),
            Some(&Want::FirstOf(vec![60]))
        );
        assert_eq!(
            want(&list, Control::RepeatSeqHeader),
            Some(&Want::FirstOf(vec![1]))
        );
        // A button is pressed per picture, never at open.
        assert_eq!(want(&list, Control::ForceKeyFrame), None);
    }

    #[test]
    fn fwht_sets_no_h264_controls() {
        let list = initial(&settings(Coded::Fwht, 5));
        let controls: Vec<Control> = list.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            controls,
            [Control::BitrateMode, Control::Bitrate, Control::GopSize]
        );
    }

    #[test]
    fn a_gop_of_zero_is_the_longest_the_driver_allows() {
        let list = initial(&settings(Coded::Fwht, 0));
        let gop = want(&list, Control::GopSize).unwrap();
        assert_eq!(gop, &Want::Maximum);
        // vicodec's GOP size is 1 to 16.
        assert_eq!(candidates(gop, Range { min: 1, max: 16 }), [16]);
    }

    #[test]
    fn values_are_clamped_to_the_drivers_range() {
        let range = Range {
            min: 25_000,
            max: 25_000_000,
        };
        let bitrate = Want::one(50_000_000);
        assert_eq!(candidates(&bitrate, range), [25_000_000]);
        assert_eq!(candidates(&Want::one(1_000), range), [25_000]);
        // Menus keep their order of preference.
        let profile = Want::FirstOf(vec![1, 0]);
        assert_eq!(candidates(&profile, Range { min: 0, max: 4 }), [1, 0]);
    }

    #[test]
    fn levels_map_to_v4l2s_enum() {
        use bindings::*;
        assert_eq!(
            v4l2_level(9),
            v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_1B
        );
        assert_eq!(
            v4l2_level(40),
            v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_4_0
        );
        assert_eq!(
            v4l2_level(52),
            v4l2_mpeg_video_h264_level_V4L2_MPEG_VIDEO_H264_LEVEL_5_2
        );
    }
}
