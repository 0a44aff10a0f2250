//! A camera's own H.264, sent on as it comes (`video.encoder = "passthrough"`).
//!
//! Nothing is decoded or re-encoded, so this costs almost no CPU; the price is that nobody
//! can ask the camera for a key frame. A viewer that joins or loses a packet waits for the
//! camera's next IDR, and whatever the camera's key-frame period is, that is the wait.
//!
//! What must be done to the stream so every viewer can start on any IDR:
//! - cameras often send SPS and PPS once, before the first IDR only: the last ones seen are
//!   kept and put in front of every IDR that comes without them;
//! - until the first IDR (after start, a reconnected camera, or privacy ending) pictures
//!   are dropped: they refer to pictures nobody has;
//! - the SDP `profile-level-id` is read from the SPS, since the camera, not onair, picked
//!   the profile (High, Main or Baseline) and level.

use std::time::Duration;

use onair_config::VideoEncoder;
use onair_hal::PixelFormat;

use super::encoder::{EncodeError, EncodedPicture, Encoder};

/// NAL unit types (ITU-T H.264 table 7-1) that matter here.
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// The NAL units of an Annex-B byte stream, without their start codes.
pub fn nal_units(annex_b: &[u8]) -> impl Iterator<Item = &[u8]> {
    // Positions just after each `00 00 01` (a 4-byte start code is a zero byte before one).
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= annex_b.len() {
        if annex_b[i] == 0 && annex_b[i + 1] == 0 && annex_b[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&next| next - 3)
        .chain(std::iter::once(annex_b.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter_map(move |(start, end)| {
            // Trailing zero bytes belong to the next start code (or are padding).
            let mut end = end;
            while end > start && annex_b[end - 1] == 0 {
                end -= 1;
            }
            (end > start).then(|| &annex_b[start..end])
        })
}

/// Whether an Annex-B buffer holds a picture (a coded slice, NAL unit types 1 to 5), rather
/// than only parameter sets or SEI: some encoders deliver SPS and PPS in a buffer of their own.
pub fn carries_picture(annex_b: &[u8]) -> bool {
    nal_units(annex_b).any(|nal| matches!(nal_type(nal), 1..=NAL_IDR))
}

fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |header| header & 0x1f)
}

/// The SDP `profile-level-id` for a stream with this SPS, spelled as browsers offer it, or
/// why browsers cannot take the stream.
///
/// webrtc-rs (like RFC 6184 answerers) matches the profile part exactly, and one profile has
/// several spellings (constrained baseline is `42e0`, `42c0`, `4240`, `4d40`…), so the SPS's
/// profile is first named (as libwebrtc does) and then written the one way browsers write it.
pub fn profile_level_id(sps: &[u8]) -> Result<String, String> {
    let &[_, profile_idc, constraints, level_idc, ..] = sps else {
        return Err(format!("SPS too short ({} bytes)", sps.len()));
    };
    let (cs0, cs1, cs3) = (
        constraints & 0x80 != 0,
        constraints & 0x40 != 0,
        constraints & 0x10 != 0,
    );
    let profile = match profile_idc {
        66 | 77 if cs1 => "42e0",
        88 if cs0 && cs1 => "42e0",
        66 => "4200",
        77 => "4d00",
        // Constrained high: constraint_set4 and constraint_set5.
        100 if constraints & 0x0c == 0x0c => "640c",
        100 => "6400",
        other => {
            return Err(format!(
                "the camera's H.264 profile (profile_idc {other}) is one browsers do not decode; \
                 it must be baseline, main or high"
            ));
        }
    };
    // Level 1b is level_idc 11 with constraint_set3 in (constrained) baseline and main.
    let level = match level_idc {
        11 if cs3 && matches!(profile_idc, 66 | 77) => 9,
        level => level,
    };
    Ok(format!("{profile}{level:02x}"))
}

/// Makes a camera's access units startable on every IDR; see the module documentation.
#[derive(Debug, Default)]
pub struct Passthrough {
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// An IDR has gone out since the last [`Self::restart`]: later pictures can be sent.
    started: bool,
    out: Vec<u8>,
}

impl Passthrough {
    /// A filter waiting for the first SPS, PPS and IDR.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last SPS seen, if any.
    pub fn sps(&self) -> Option<&[u8]> {
        (!self.sps.is_empty()).then_some(&self.sps[..])
    }

    /// Something else went out in between (privacy pictures) or the camera was reopened:
    /// drop pictures until the next IDR.
    pub fn restart(&mut self) {
        self.started = false;
    }

    /// Takes one access unit from the camera; `None` while it cannot be decoded by itself
    /// or from what was sent before (no IDR yet, or no SPS/PPS known).
    pub fn access_unit(&mut self, annex_b: &[u8]) -> Option<EncodedPicture<'_>> {
        // Parameter sets count as brought only before the IDR: a decoder needs them first.
        let (mut has_sps, mut has_pps, mut keyframe) = (false, false, false);
        for nal in nal_units(annex_b) {
            match nal_type(nal) {
                NAL_SPS => {
                    has_sps |= !keyframe;
                    nal.clone_into(&mut self.sps);
                }
                NAL_PPS => {
                    has_pps |= !keyframe;
                    nal.clone_into(&mut self.pps);
                }
                NAL_IDR => keyframe = true,
                _ => {}
            }
        }
        if keyframe && (self.sps.is_empty() || self.pps.is_empty()) {
            return None;
        }
        if !keyframe && !self.started {
            return None;
        }
        self.started |= keyframe;
        self.out.clear();
        if keyframe {
            // Parameter sets first, the ones this unit brings or the ones kept.
            if !has_sps {
                push_nal(&mut self.out, &self.sps);
            }
            if !has_pps {
                push_nal(&mut self.out, &self.pps);
            }
        }
        for nal in nal_units(annex_b) {
            push_nal(&mut self.out, nal);
        }
        Some(EncodedPicture {
            annex_b: &self.out,
            keyframe,
        })
    }
}

/// The camera encodes: a key frame cannot be forced, the bitrate cannot be changed.
impl Encoder for Passthrough {
    fn kind(&self) -> VideoEncoder {
        VideoEncoder::Passthrough
    }

    fn describe(&self) -> String {
        "the camera's own H.264".into()
    }

    fn input(&self) -> PixelFormat {
        PixelFormat::H264
    }

    fn encode(
        &mut self,
        picture: &[u8],
        _force_idr: bool,
        _pts: Duration,
    ) -> Result<Option<EncodedPicture<'_>>, EncodeError> {
        Ok(self.access_unit(picture))
    }

    fn set_bitrate(&mut self, _kbps: u32) -> Result<(), EncodeError> {
        Ok(())
    }

    fn restart(&mut self) {
        Passthrough::restart(self);
    }
}

fn push_nal(out: &mut Vec<u8>, nal: &[u8]) {
    out.extend_from_slice(&[0, 0, 0, 1]);
    out.extend_from_slice(nal);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xac, 0xd9];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x10];
    const P: &[u8] = &[0x41, 0x9a, 0x24];
    const AUD: &[u8] = &[0x09, 0xf0];

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, nal) in nals.iter().enumerate() {
            // Mixed start code lengths, as cameras write them.
            out.extend_from_slice(if i % 2 == 0 {
                &[0, 0, 0, 1]
            } else {
                &[0, 0, 1]
            });
            out.extend_from_slice(nal);
        }
        out
    }

    fn types(annex_b: &[u8]) -> Vec<u8> {
        nal_units(annex_b).map(nal_type).collect()
    }

    #[test]
    fn nal_units_split_on_both_start_codes() {
        let stream = annex_b(&[AUD, SPS, PPS, IDR]);
        let nals: Vec<&[u8]> = nal_units(&stream).collect();
        assert_eq!(nals, [AUD, SPS, PPS, IDR]);
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
        assert_eq!(nal_units(b"no start code").count(), 0);
    }

    #[test]
    fn pictures_are_told_from_parameter_sets() {
        assert!(!carries_picture(&annex_b(&[SPS, PPS])));
        assert!(!carries_picture(&annex_b(&[AUD, SPS, PPS])));
        assert!(carries_picture(&annex_b(&[SPS, PPS, IDR])));
        assert!(carries_picture(&annex_b(&[P])));
        assert!(!carries_picture(b""));
    }

    #[test]
    fn waits_for_the_first_idr_and_parameter_sets() {
        let mut pt = Passthrough::new();
        assert_eq!(pt.access_unit(&annex_b(&[P])), None);
        // An IDR without ever having seen SPS/PPS cannot be decoded.
        assert_eq!(pt.access_unit(&annex_b(&[IDR])), None);
        let unit = pt.access_unit(&annex_b(&[AUD, SPS, PPS, IDR])).unwrap();
        assert!(unit.keyframe);
        assert_eq!(types(unit.annex_b), [9, 7, 8, 5]);
        let unit = pt.access_unit(&annex_b(&[P])).unwrap();
        assert!(!unit.keyframe);
        assert_eq!(types(unit.annex_b), [1]);
    }

    #[test]
    fn later_idrs_get_the_kept_parameter_sets() {
        let mut pt = Passthrough::new();
        pt.access_unit(&annex_b(&[SPS, PPS, IDR])).unwrap();
        let unit = pt.access_unit(&annex_b(&[IDR])).unwrap();
        assert_eq!(types(unit.annex_b), [7, 8, 5]);
        let nals: Vec<&[u8]> = nal_units(unit.annex_b).collect();
        assert_eq!(nals, [SPS, PPS, IDR]);
        // Only the missing one is added.
        let unit = pt.access_unit(&annex_b(&[PPS, IDR])).unwrap();
        assert_eq!(types(unit.annex_b), [7, 8, 5]);
    }

    #[test]
    fn parameter_sets_after_the_idr_are_also_put_before_it() {
        // Found by the fuzz target h264_annexb: a unit whose PPS comes after its IDR went out
        // as it was, and a viewer starting there could not decode the IDR.
        let mut pt = Passthrough::new();
        let unit = pt.access_unit(&annex_b(&[SPS, IDR, PPS])).unwrap();
        assert!(unit.keyframe);
        assert_eq!(types(unit.annex_b), [8, 7, 5, 8]);
        let unit = pt.access_unit(&annex_b(&[IDR, SPS, PPS])).unwrap();
        assert_eq!(types(unit.annex_b), [7, 8, 5, 7, 8]);
    }

    #[test]
    fn restart_drops_pictures_until_the_next_idr() {
        let mut pt = Passthrough::new();
        pt.access_unit(&annex_b(&[SPS, PPS, IDR])).unwrap();
        pt.restart();
        assert_eq!(pt.access_unit(&annex_b(&[P])), None);
        assert!(pt.access_unit(&annex_b(&[IDR])).unwrap().keyframe);
        assert!(pt.access_unit(&annex_b(&[P])).is_some());
    }

    #[test]
    fn profile_level_id_is_spelled_as_browsers_offer_it() {
        let sps = |profile: u8, constraints: u8, level: u8| [0x67, profile, constraints, level];
        // openh264 writes constrained baseline as 42c0; browsers offer 42e0.
        assert_eq!(profile_level_id(&sps(66, 0xc0, 0x1f)).unwrap(), "42e01f");
        assert_eq!(profile_level_id(&sps(66, 0x40, 0x1e)).unwrap(), "42e01e");
        assert_eq!(profile_level_id(&sps(77, 0x40, 0x1f)).unwrap(), "42e01f");
        assert_eq!(profile_level_id(&sps(66, 0x00, 0x1f)).unwrap(), "42001f");
        assert_eq!(profile_level_id(&sps(77, 0x00, 0x28)).unwrap(), "4d0028");
        assert_eq!(profile_level_id(&sps(100, 0x00, 0x28)).unwrap(), "640028");
        assert_eq!(profile_level_id(&sps(100, 0x0c, 0x1f)).unwrap(), "640c1f");
        assert_eq!(profile_level_id(&sps(66, 0x50, 11)).unwrap(), "42e009");
        let high10 = profile_level_id(&sps(110, 0, 0x28)).unwrap_err();
        assert!(high10.contains("profile_idc 110"), "{high10}");
        assert!(profile_level_id(&[0x67, 66]).is_err());
    }
}
