//! A camera's H.264 as passthrough takes it: Annex-B splitting into NAL units, the SDP
//! `profile-level-id` read from an SPS, and the filter that makes every IDR startable.
//!
//! The input is an Annex-B byte stream, as a camera (or `ffmpeg -f h264`) writes it. It goes
//! to the filter once as one access unit, as a camera that delivers anything would, and then
//! cut into access units (a new one at each AUD, SPS, or second picture), as cameras send it.
//! Checked for every unit the filter lets through: it is a keyframe exactly when it holds an
//! IDR, a keyframe has an SPS and a PPS before its IDR, and its NAL units are the ones that
//! came in, with only the kept SPS and PPS put in front.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onaird::media::h264::nal_types;
use onaird::media::passthrough::{Passthrough, nal_units, profile_level_id};

const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;
const AUD: u8 = 9;

fuzz_target!(|data: &[u8]| {
    let mut filter = Passthrough::new();
    feed(&mut filter, data);
    filter.restart();
    for unit in access_units(data) {
        feed(&mut filter, unit);
    }
});

fn feed(filter: &mut Passthrough, unit: &[u8]) {
    let nals: Vec<&[u8]> = nal_units(unit).collect();
    assert!(
        nals.iter()
            .all(|nal| !nal.is_empty() && nal.last() != Some(&0))
    );
    let types = nal_types(unit);
    assert_eq!(types, nals.iter().map(|n| n[0] & 0x1f).collect::<Vec<_>>());
    let kept_sps = filter.sps().map(<[u8]>::to_vec);
    let Some(out) = filter.access_unit(unit) else {
        return;
    };
    assert_eq!(out.keyframe, types.contains(&IDR));
    let out_nals: Vec<&[u8]> = nal_units(out.annex_b).collect();
    assert!(out_nals.ends_with(&nals), "the unit's NAL units changed");
    let added = &out_nals[..out_nals.len() - nals.len()];
    if out.keyframe {
        let out_types = nal_types(out.annex_b);
        let idr = out_types.iter().position(|&t| t == IDR).unwrap();
        assert!(out_types[..idr].contains(&SPS) && out_types[..idr].contains(&PPS));
        assert!(added.len() <= 2);
        if !types.contains(&SPS) {
            assert_eq!(
                added.first().map(|n| n.to_vec()),
                kept_sps,
                "not the kept SPS"
            );
        }
    } else {
        assert!(added.is_empty(), "parameter sets added to a non-IDR");
    }
    if let Some(sps) = filter.sps() {
        check_profile_level_id(sps);
    }
}

fn check_profile_level_id(sps: &[u8]) {
    match profile_level_id(sps) {
        Ok(id) => {
            assert_eq!(id.len(), 6, "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert!(
                ["42e0", "4200", "4d00", "640c", "6400"].contains(&&id[..4]),
                "{id}"
            );
        }
        Err(why) => assert!(!why.is_empty()),
    }
}

/// The input cut before each NAL unit that starts a new access unit.
fn access_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut cuts = vec![0];
    let mut has_picture = false;
    let mut i = 0;
    while i + 3 < stream.len() {
        if stream[i..i + 3] != [0, 0, 1] {
            i += 1;
            continue;
        }
        let kind = stream[i + 3] & 0x1f;
        let picture = matches!(kind, 1..=5);
        if matches!(kind, AUD | SPS) || (picture && has_picture) {
            // A 4-byte start code's leading zero goes with the NAL unit it starts.
            let at = if i > 0 && stream[i - 1] == 0 {
                i - 1
            } else {
                i
            };
            if at > *cuts.last().unwrap() {
                cuts.push(at);
            }
            has_picture = false;
        }
        has_picture |= picture;
        i += 3;
    }
    cuts.push(stream.len());
    cuts.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}
