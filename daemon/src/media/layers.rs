//! Quality layers: the configured stream, and below it a smaller one for viewers whose link
//! cannot carry the first (`video.layers`).
//!
//! Each layer is encoded once, for every viewer on it, and only while someone watches it: the
//! lower layer is the top layer's picture halved (a 2x2 average of each plane), encoded by an
//! openh264 of its own at a fifth of the bitrate. A passthrough camera's stream has no lower
//! layer: onair never decodes the camera's H.264.

use super::h264::{H264Encoder, H264Settings};

/// What one layer is encoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Encoder bitrate, kbit/s.
    pub bitrate_kbps: u32,
}

/// A lower layer's bitrate is this fraction of the one above…
const BITRATE_DIVISOR: u32 = 5;
/// …but at least this (kbit/s).
const MIN_BITRATE_KBPS: u32 = 100;
/// A layer smaller than this (either side) is not made.
const MIN_SIDE: u32 = 16;

/// The layers of a stream of `width`x`height` at `bitrate_kbps`, top first: `layers` of them
/// (1 or 2), fewer when the lower one would be smaller than 16 pixels a side.
pub fn specs(width: u32, height: u32, bitrate_kbps: u32, layers: u32) -> Vec<LayerSpec> {
    let top = LayerSpec {
        width,
        height,
        bitrate_kbps,
    };
    let mut out = vec![top];
    let low = LayerSpec {
        width: (width / 2) & !1,
        height: (height / 2) & !1,
        bitrate_kbps: (bitrate_kbps / BITRATE_DIVISOR).max(MIN_BITRATE_KBPS),
    };
    if layers >= 2 && low.width >= MIN_SIDE && low.height >= MIN_SIDE {
        out.push(low);
    }
    out
}

/// An encoder for `spec` at `fps`.
pub fn encoder(spec: LayerSpec, fps: u32) -> Result<H264Encoder, openh264::Error> {
    H264Encoder::new(H264Settings {
        width: spec.width,
        height: spec.height,
        fps,
        bitrate_kbps: spec.bitrate_kbps,
    })
}

/// Writes `src` (I420, `sw`x`sh`) halved into `dst` as I420 of `dw`x`dh` (each at most half
/// of the source's): every output sample is the average of a 2x2 block.
pub fn halve_i420(src: &[u8], (sw, sh): (u32, u32), (dw, dh): (u32, u32), dst: &mut Vec<u8>) {
    let (sw, sh, dw, dh) = (sw as usize, sh as usize, dw as usize, dh as usize);
    dst.clear();
    dst.resize(dw * dh + 2 * (dw / 2) * (dh / 2), 0);
    let (src_y, src_chroma) = src.split_at((sw * sh).min(src.len()));
    let (src_u, src_v) = src_chroma.split_at(((sw / 2) * (sh / 2)).min(src_chroma.len()));
    let (dst_y, dst_chroma) = dst.split_at_mut(dw * dh);
    let (dst_u, dst_v) = dst_chroma.split_at_mut((dw / 2) * (dh / 2));
    halve_plane(src_y, sw, dst_y, dw, dh);
    halve_plane(src_u, sw / 2, dst_u, dw / 2, dh / 2);
    halve_plane(src_v, sw / 2, dst_v, dw / 2, dh / 2);
}

/// One plane: `dst` (`dw`x`dh`) from the 2x2 blocks of `src` (rows of `stride`).
fn halve_plane(src: &[u8], stride: usize, dst: &mut [u8], dw: usize, dh: usize) {
    for y in 0..dh {
        let (top, bottom) = (2 * y * stride, (2 * y + 1) * stride);
        let (Some(top), Some(bottom)) =
            (src.get(top..top + 2 * dw), src.get(bottom..bottom + 2 * dw))
        else {
            return;
        };
        for (x, out) in dst[y * dw..(y + 1) * dw].iter_mut().enumerate() {
            let sum = u16::from(top[2 * x])
                + u16::from(top[2 * x + 1])
                + u16::from(bottom[2 * x])
                + u16::from(bottom[2 * x + 1]);
            *out = ((sum + 2) / 4) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_layer_is_half_the_size_at_a_fifth_of_the_bitrate() {
        let layers = specs(1280, 720, 2000, 2);
        assert_eq!(layers.len(), 2);
        assert_eq!(
            layers[1],
            LayerSpec {
                width: 640,
                height: 360,
                bitrate_kbps: 400
            }
        );
        assert_eq!(specs(1280, 720, 2000, 1).len(), 1);
        assert_eq!(specs(200, 150, 300, 2)[1].bitrate_kbps, 100);
        // 74 / 2 = 37 → 36 (even).
        assert_eq!(
            specs(20, 74, 300, 2).len(),
            1,
            "10 pixels wide is too small"
        );
        assert_eq!(specs(40, 74, 300, 2)[1].height, 36);
    }

    #[test]
    fn halving_averages_each_2x2_block_of_every_plane() {
        // 4x2 luma: two blocks, (0,2,4,6) → 3 and (100,100,200,200) → 150; chroma 2x1 each.
        let src = [
            0, 2, 100, 100, //
            4, 6, 200, 200, //
            10, 20, // U
            30, 40, // V
        ];
        let mut dst = Vec::new();
        halve_i420(&src, (4, 2), (2, 1), &mut dst);
        // Luma 2x1; chroma planes of 1x0 are empty.
        assert_eq!(dst, [3, 150]);
        let mut big = vec![0u8; 8 * 8 + 2 * 16];
        big[..64].fill(80);
        big[64..80].fill(90);
        big[80..].fill(100);
        halve_i420(&big, (8, 8), (4, 4), &mut dst);
        assert_eq!(dst.len(), 16 + 2 * 4);
        assert!(dst[..16].iter().all(|&v| v == 80));
        assert!(dst[16..20].iter().all(|&v| v == 90));
        assert!(dst[20..].iter().all(|&v| v == 100));
    }
}
