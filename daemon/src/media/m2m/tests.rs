//! What can be checked without a device: key frames of FWHT, the SPS/PPS handling on a real
//! H.264 stream, and what `find_encoder` says when there is no encoder.

use std::time::Duration;

use super::*;
use crate::media::h264::{H264Encoder, H264Settings, nal_types};

/// An FWHT header (magic, version 3, 640x360) with `flags`, then some payload.
fn fwht_frame(flags: u32) -> Vec<u8> {
    let mut frame = vec![0x4f, 0x4f, 0x4f, 0x4f, 0xff, 0xff, 0xff, 0xff];
    for word in [3u32, 640, 360, flags, 0, 0, 0, 0, 100] {
        frame.extend_from_slice(&word.to_be_bytes());
    }
    frame.extend_from_slice(&[0; 100]);
    frame
}

#[test]
fn fwht_i_frames_are_key_frames() {
    let i_frame = FwhtFlags::I_FRAME.bits();
    assert!(fwht_key_frame(&fwht_frame(i_frame | 0x0018_0000)));
    assert!(!fwht_key_frame(&fwht_frame(0x0018_0000)));
    // Too short to say: not a key frame, and no panic.
    assert!(!fwht_key_frame(&fwht_frame(i_frame)[..22]));
    assert!(!fwht_key_frame(b""));
}

/// A short openh264 stream with IDRs at pictures 0, 4 and 8, one access unit per picture.
fn h264_stream() -> Vec<Vec<u8>> {
    let mut encoder = H264Encoder::new(H264Settings {
        width: 320,
        height: 240,
        fps: 30,
        bitrate_kbps: 500,
    })
    .unwrap();
    (0..12u8)
        .map(|i| {
            let mut picture = vec![16 + i * 8; 320 * 240];
            picture.resize(320 * 240 * 3 / 2, 128);
            let pts = Duration::from_millis(u64::from(i) * 33);
            let unit = encoder.encode(&picture, i % 4 == 0, pts).unwrap();
            unit.expect("openh264 skipped a picture").annex_b.to_vec()
        })
        .collect()
}

/// `annex_b` without the NAL units of `types`, and those units.
fn split(annex_b: &[u8], types: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for nal in passthrough::nal_units(annex_b) {
        let out = if types.contains(&(nal[0] & 0x1f)) {
            &mut taken
        } else {
            &mut kept
        };
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
    }
    (kept, taken)
}

#[test]
fn parameter_sets_from_a_buffer_of_their_own_go_before_every_idr() {
    // A driver that sends SPS and PPS once, in a buffer of their own, and IDRs without them.
    let stream = h264_stream();
    let (_, headers) = split(&stream[0], &[7, 8]);
    let mut params = Passthrough::new();
    assert!(
        keep_parameter_sets(&mut params, &headers),
        "a buffer of SPS and PPS alone"
    );
    let mut idrs = 0;
    for (i, unit) in stream.iter().enumerate() {
        let (bare, _) = split(unit, &[7, 8]);
        assert!(
            !keep_parameter_sets(&mut params, &bare),
            "picture {i} is a picture"
        );
        let out = params
            .access_unit(&bare)
            .expect("every picture can be sent");
        let types = nal_types(out.annex_b);
        assert_eq!(out.keyframe, i % 4 == 0, "picture {i}: {types:?}");
        if out.keyframe {
            idrs += 1;
            let idr = types.iter().position(|&t| t == 5).unwrap();
            assert_eq!(&types[..idr], [7, 8], "picture {i}: {types:?}");
            // The very parameter sets the encoder made.
            assert!(out.annex_b.starts_with(&headers), "picture {i}");
        } else {
            assert!(
                !types.contains(&7) && !types.contains(&8),
                "picture {i}: {types:?}"
            );
        }
    }
    assert_eq!(idrs, 3);
}

#[test]
fn idrs_that_bring_their_parameter_sets_are_left_alone() {
    // A driver asked to repeat SPS and PPS (V4L2_CID_MPEG_VIDEO_REPEAT_SEQ_HEADER) and did.
    let mut params = Passthrough::new();
    for (i, unit) in h264_stream().iter().enumerate() {
        assert!(!keep_parameter_sets(&mut params, unit));
        let out = params.access_unit(unit).unwrap();
        assert_eq!(out.annex_b, nal_units_again(unit), "picture {i}");
        assert_eq!(out.keyframe, i % 4 == 0);
    }
}

/// `annex_b` with 4-byte start codes, as the filter writes it.
fn nal_units_again(annex_b: &[u8]) -> Vec<u8> {
    split(annex_b, &[]).0
}

#[test]
fn find_encoder_says_what_it_saw() {
    let dir = std::env::temp_dir().join(format!("onair-m2m-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = find_encoder_in(&dir, Coded::H264).unwrap_err();
    assert_eq!(
        err,
        format!(
            "no V4L2 H.264 encoder: no video device in {}",
            dir.display()
        )
    );
    // Files that are no V4L2 devices, listed by number (video10 after video2).
    for name in ["video10", "video2", "videox", "media0"] {
        std::fs::write(dir.join(name), b"").unwrap();
    }
    let err = find_encoder_in(&dir, Coded::Fwht).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let (video2, video10) = (err.find("video2:").unwrap(), err.find("video10:").unwrap());
    assert!(err.starts_with("no V4L2 FWHT encoder: "), "{err}");
    assert!(video2 < video10, "{err}");
    assert!(err.contains("not a V4L2 device"), "{err}");
    assert!(!err.contains("videox") && !err.contains("media0"), "{err}");
}
