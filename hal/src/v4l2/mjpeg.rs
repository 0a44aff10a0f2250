//! MJPEG frames to I420, for cameras whose best mode is MJPEG.
//!
//! Each frame is a JPEG. [`zune_jpeg`] (pure Rust) decodes it to interleaved full-resolution
//! Y, Cb, Cr; the chroma is then averaged over 2x2 blocks into the I420 planes.
//!
//! Two details matter for what viewers see:
//!
//! - **Range.** JPEG (JFIF) samples use the full range 0–255; H.264 without a full-range flag,
//!   and so every browser, assumes limited ("TV") range, 16–235 for luma and 16–240 for
//!   chroma, like the raw YUV formats cameras deliver and the test pattern. The samples are
//!   scaled into limited range, or blacks would look grey and whites clipped.
//! - **Missing Huffman tables.** Many USB cameras leave the Huffman tables out of their MJPEG
//!   frames to save bandwidth, relying on the "typical" tables of ITU-T T.81 Annex K.3 (as
//!   the AVI MJPEG format does). A frame without a DHT segment gets those tables inserted
//!   before decoding.
//!
//! The decoder keeps its scratch buffers between frames, so a steady stream allocates only
//! what the JPEG decoder itself allocates per frame.

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Decodes MJPEG frames of one size into I420.
#[derive(Debug)]
pub struct MjpegDecoder {
    /// Frame size negotiated with the driver; frames of another size are refused.
    width: u32,
    height: u32,
    /// Decoded samples, 3 (Y, Cb, Cr) or 1 (Y) bytes per pixel.
    samples: Vec<u8>,
    /// The frame with Huffman tables inserted, when it came without.
    patched: Vec<u8>,
    /// Full-range to limited-range luma.
    luma: [u8; 256],
    /// Full-range to limited-range chroma.
    chroma: [u8; 256],
}

impl MjpegDecoder {
    /// A decoder for frames of `width` x `height` (even).
    pub fn new(width: u32, height: u32) -> MjpegDecoder {
        MjpegDecoder {
            width,
            height,
            samples: Vec::new(),
            patched: Vec::new(),
            luma: std::array::from_fn(|v| scale(v, 219.0, 16.0)),
            chroma: std::array::from_fn(|v| scale(v, 224.0, 16.0)),
        }
    }

    /// Decodes one JPEG into `dst` as I420 (resized; allocation reused).
    pub fn decode(&mut self, jpeg: &[u8], dst: &mut Vec<u8>) -> Result<(), String> {
        let input = if has_huffman_tables(jpeg) {
            jpeg
        } else {
            insert_default_huffman_tables(jpeg, &mut self.patched)?;
            &self.patched
        };
        let (width, height) = (self.width as usize, self.height as usize);
        let options = DecoderOptions::default()
            .set_max_width(width)
            .set_max_height(height)
            .jpeg_set_out_colorspace(ColorSpace::YCbCr);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(input), options);
        decoder
            .decode_headers()
            .map_err(|e| format!("JPEG: {e:?}"))?;
        let info = decoder.info().ok_or("JPEG: no header")?;
        if (usize::from(info.width), usize::from(info.height)) != (width, height) {
            return Err(format!(
                "JPEG is {}x{}, {width}x{height} was negotiated",
                info.width, info.height
            ));
        }
        let grey = decoder.input_colorspace() == Some(ColorSpace::Luma);
        if grey {
            decoder.set_options(options.jpeg_set_out_colorspace(ColorSpace::Luma));
        }
        let size = decoder.output_buffer_size().ok_or("JPEG: no size")?;
        self.samples.resize(size, 0);
        decoder
            .decode_into(&mut self.samples)
            .map_err(|e| format!("JPEG: {e:?}"))?;
        if grey {
            luma_to_i420(&self.samples, width, height, &self.luma, dst);
        } else {
            ycbcr_to_i420(&self.samples, width, height, &self.luma, &self.chroma, dst);
        }
        Ok(())
    }
}

/// `value` (0–255) scaled to `span` levels from `floor`: full to limited range.
fn scale(value: usize, span: f32, floor: f32) -> u8 {
    (floor + value as f32 * span / 255.0).round() as u8
}

/// Interleaved full-range Y, Cb, Cr at full resolution → limited-range I420, each chroma
/// sample the average of a 2x2 block.
fn ycbcr_to_i420(
    samples: &[u8],
    width: usize,
    height: usize,
    luma: &[u8; 256],
    chroma: &[u8; 256],
    dst: &mut Vec<u8>,
) {
    dst.clear();
    dst.extend(
        samples
            .chunks_exact(3)
            .map(|pixel| luma[usize::from(pixel[0])]),
    );
    for plane in [1, 2] {
        for pair in 0..height / 2 {
            let top = &samples[2 * pair * width * 3..][..width * 3];
            let bottom = &samples[(2 * pair + 1) * width * 3..][..width * 3];
            for x in (0..width).step_by(2) {
                let sum = u16::from(top[3 * x + plane])
                    + u16::from(top[3 * x + 3 + plane])
                    + u16::from(bottom[3 * x + plane])
                    + u16::from(bottom[3 * x + 3 + plane]);
                dst.push(chroma[usize::from((sum + 2) / 4)]);
            }
        }
    }
}

/// Full-range grey → limited-range I420 with neutral chroma.
fn luma_to_i420(samples: &[u8], width: usize, height: usize, luma: &[u8; 256], dst: &mut Vec<u8>) {
    dst.clear();
    dst.extend(samples.iter().map(|&y| luma[usize::from(y)]));
    dst.resize(width * height * 3 / 2, 128);
}

/// Whether a DHT (Huffman table) segment comes before the first scan.
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    let mut at = 2; // after SOI
    while at + 4 <= jpeg.len() {
        if jpeg[at] != 0xFF {
            return false;
        }
        match jpeg[at + 1] {
            0xC4 => return true,
            0xDA | 0xD9 => return false,   // start of scan, end of image
            0xFF => at += 1,               // fill byte
            0xD0..=0xD7 | 0x01 => at += 2, // markers without a length
            _ => {
                let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
                at += 2 + length;
            }
        }
    }
    false
}

/// Copies `jpeg` into `out` with a DHT segment holding the Annex K.3 tables after the SOI.
fn insert_default_huffman_tables(jpeg: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    if jpeg.len() < 4 || jpeg[..2] != [0xFF, 0xD8] {
        return Err("not a JPEG: no start-of-image marker".to_string());
    }
    out.clear();
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, 0xC4]);
    let tables = [
        (0x00, &LUMA_DC_LENGTHS, &DC_VALUES[..]),
        (0x10, &LUMA_AC_LENGTHS, &LUMA_AC_VALUES[..]),
        (0x01, &CHROMA_DC_LENGTHS, &DC_VALUES[..]),
        (0x11, &CHROMA_AC_LENGTHS, &CHROMA_AC_VALUES[..]),
    ];
    let length: usize = 2 + tables
        .iter()
        .map(|(_, lengths, values)| 1 + lengths.len() + values.len())
        .sum::<usize>();
    out.extend_from_slice(&(length as u16).to_be_bytes());
    for (class_and_id, lengths, values) in tables {
        out.push(class_and_id);
        out.extend_from_slice(lengths);
        out.extend_from_slice(values);
    }
    out.extend_from_slice(&jpeg[2..]);
    Ok(())
}

// ITU-T T.81 Annex K.3: the typical Huffman tables, as counts of codes of each length 1–16
// and the values in code order.

const LUMA_DC_LENGTHS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const CHROMA_DC_LENGTHS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

const LUMA_AC_LENGTHS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
#[rustfmt::skip]
const LUMA_AC_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

const CHROMA_AC_LENGTHS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const CHROMA_AC_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0,
    0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PixelFormat;
    use crate::synthetic::rgb_to_yuv;
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

    /// Quadrant colours of the test picture: top left, top right, bottom left, bottom right.
    const QUADRANTS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

    /// A `width` x `height` RGB picture of four coloured quadrants, as a JPEG.
    fn quadrants_jpeg(width: u16, height: u16, sampling: SamplingFactor) -> Vec<u8> {
        let mut rgb = Vec::new();
        for y in 0..height {
            for x in 0..width {
                let quadrant = usize::from(y >= height / 2) * 2 + usize::from(x >= width / 2);
                rgb.extend_from_slice(&QUADRANTS[quadrant]);
            }
        }
        let mut jpeg = Vec::new();
        let mut encoder = Encoder::new(&mut jpeg, 95);
        encoder.set_sampling_factor(sampling);
        encoder
            .encode(&rgb, width, height, ColorType::Rgb)
            .expect("encodes");
        jpeg
    }

    /// Y, U, V of the I420 picture at (x, y).
    fn yuv_at(i420: &[u8], width: usize, height: usize, x: usize, y: usize) -> [u8; 3] {
        let chroma = (y / 2) * (width / 2) + x / 2;
        let u_plane = width * height;
        let v_plane = u_plane + width * height / 4;
        [
            i420[y * width + x],
            i420[u_plane + chroma],
            i420[v_plane + chroma],
        ]
    }

    fn assert_quadrant_colours(i420: &[u8], width: usize, height: usize) {
        let centres = [
            (width / 4, height / 4),
            (3 * width / 4, height / 4),
            (width / 4, 3 * height / 4),
            (3 * width / 4, 3 * height / 4),
        ];
        for (rgb, (x, y)) in QUADRANTS.iter().zip(centres) {
            let got = yuv_at(i420, width, height, x, y);
            let expected = rgb_to_yuv(*rgb);
            for (g, e) in got.iter().zip(expected) {
                assert!(
                    g.abs_diff(e) <= 6,
                    "{rgb:?} at ({x}, {y}): got YUV {got:?}, expected about {expected:?}"
                );
            }
        }
    }

    #[test]
    fn decodes_to_limited_range_i420_of_the_right_size_and_colours() {
        for sampling in [
            SamplingFactor::R_4_2_0,
            SamplingFactor::R_4_2_2,
            SamplingFactor::R_4_4_4,
        ] {
            let jpeg = quadrants_jpeg(64, 48, sampling);
            let mut decoder = MjpegDecoder::new(64, 48);
            let mut i420 = vec![9; 3];
            decoder.decode(&jpeg, &mut i420).expect("decodes");
            assert_eq!(i420.len(), PixelFormat::I420.frame_len(64, 48).unwrap());
            assert_quadrant_colours(&i420, 64, 48);
            // Limited range: nothing below 16 or above 240.
            assert!(i420.iter().all(|&v| (16..=240).contains(&v)));
        }
    }

    #[test]
    fn frames_without_huffman_tables_get_the_standard_ones() {
        let jpeg = quadrants_jpeg(32, 16, SamplingFactor::R_4_2_2);
        assert!(has_huffman_tables(&jpeg));
        let stripped = strip_segments(&jpeg, 0xC4);
        assert!(!has_huffman_tables(&stripped));
        let mut decoder = MjpegDecoder::new(32, 16);
        let (mut from_full, mut from_stripped) = (Vec::new(), Vec::new());
        decoder.decode(&jpeg, &mut from_full).expect("decodes");
        decoder
            .decode(&stripped, &mut from_stripped)
            .expect("decodes with the Annex K tables");
        assert_eq!(from_full, from_stripped);
    }

    #[test]
    fn wrong_size_and_garbage_are_errors_not_panics() {
        let jpeg = quadrants_jpeg(32, 16, SamplingFactor::R_4_2_0);
        let mut decoder = MjpegDecoder::new(64, 48);
        let error = decoder.decode(&jpeg, &mut Vec::new()).unwrap_err();
        assert!(error.contains("32x16"), "{error}");
        let mut decoder = MjpegDecoder::new(32, 16);
        assert!(decoder.decode(&[], &mut Vec::new()).is_err());
        assert!(
            decoder
                .decode(&[0xFF, 0xD8, 0xFF], &mut Vec::new())
                .is_err()
        );
        // A truncated or corrupted JPEG may decode (with garbage in it) or fail; either is
        // fine as long as it does not panic.
        let _ = decoder.decode(&jpeg[..jpeg.len() / 3], &mut Vec::new());
        let mut corrupt = jpeg.clone();
        for byte in corrupt.iter_mut().skip(200).step_by(7) {
            *byte = 0xFF;
        }
        let _ = decoder.decode(&corrupt, &mut Vec::new());
    }

    #[test]
    fn range_scaling_maps_the_ends() {
        let decoder = MjpegDecoder::new(2, 2);
        assert_eq!((decoder.luma[0], decoder.luma[255]), (16, 235));
        assert_eq!(
            (decoder.chroma[0], decoder.chroma[128], decoder.chroma[255]),
            (16, 128, 240)
        );
    }

    #[test]
    fn grey_jpegs_get_neutral_chroma() {
        let grey = vec![200u8; 16 * 8];
        let mut jpeg = Vec::new();
        Encoder::new(&mut jpeg, 95)
            .encode(&grey, 16, 8, ColorType::Luma)
            .expect("encodes");
        let mut i420 = Vec::new();
        MjpegDecoder::new(16, 8)
            .decode(&jpeg, &mut i420)
            .expect("decodes");
        assert_eq!(i420.len(), PixelFormat::I420.frame_len(16, 8).unwrap());
        assert!(
            i420[..128]
                .iter()
                .all(|&y| y.abs_diff(scale(200, 219.0, 16.0)) <= 2)
        );
        assert!(i420[128..].iter().all(|&c| c == 128));
    }

    /// `jpeg` without the segments of marker `0xFF marker` before the first scan.
    fn strip_segments(jpeg: &[u8], marker: u8) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut at = 2;
        while jpeg[at + 1] != 0xDA {
            let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            if jpeg[at + 1] != marker {
                out.extend_from_slice(&jpeg[at..at + 2 + length]);
            }
            at += 2 + length;
        }
        out.extend_from_slice(&jpeg[at..]);
        out
    }
}
