//! Raw camera layouts to the planar I420 the encoder takes.
//!
//! Cameras deliver YUYV (most UVC webcams), NV12 (the Pi's ISP) or I420, and a few packed
//! RGB (libcamera's vimc test pipeline). Converting is a copy with chroma shuffling, done once
//! per frame into a reused buffer; an I420 source is passed through untouched. RGB becomes
//! BT.601 limited-range Y'CbCr, what the encoder signals, with each 2x2 block's chroma from
//! the block's mean colour.

use onair_hal::PixelFormat;

/// Converts `src` (`format`, `width` x `height`) to I420 in `dst`, or borrows `src` when it
/// already is I420. `dst` keeps its allocation between frames. `None` for H.264, which is
/// not a picture.
pub fn to_i420<'a>(
    format: PixelFormat,
    width: u32,
    height: u32,
    src: &'a [u8],
    dst: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    let (w, h) = (width as usize, height as usize);
    let luma = w * h;
    let chroma = luma / 4;
    match format {
        PixelFormat::I420 => Some(src),
        PixelFormat::H264 => None,
        PixelFormat::Nv12 => {
            dst.resize(luma + 2 * chroma, 0);
            let (y, uv) = dst.split_at_mut(luma);
            let (u, v) = uv.split_at_mut(chroma);
            y.copy_from_slice(&src[..luma]);
            for (i, pair) in src[luma..luma + 2 * chroma].chunks_exact(2).enumerate() {
                u[i] = pair[0];
                v[i] = pair[1];
            }
            Some(dst)
        }
        PixelFormat::Yuyv => {
            dst.resize(luma + 2 * chroma, 0);
            let (y, uv) = dst.split_at_mut(luma);
            let (u, v) = uv.split_at_mut(chroma);
            for row in 0..h {
                let line = &src[row * w * 2..(row + 1) * w * 2];
                for (x, px) in line.chunks_exact(4).enumerate() {
                    y[row * w + 2 * x] = px[0];
                    y[row * w + 2 * x + 1] = px[2];
                    // 4:2:2 → 4:2:0: take chroma from even rows only.
                    if row % 2 == 0 {
                        let c = (row / 2) * (w / 2) + x;
                        u[c] = px[1];
                        v[c] = px[3];
                    }
                }
            }
            Some(dst)
        }
        PixelFormat::Rgb24 => Some(rgb_to_i420::<0, 2>(w, h, src, dst)),
        PixelFormat::Bgr24 => Some(rgb_to_i420::<2, 0>(w, h, src, dst)),
    }
}

/// Packed 3-byte RGB (red at byte `R`, blue at byte `B`) to BT.601 limited-range I420, in
/// 8-bit fixed point (the usual coefficients times 256).
fn rgb_to_i420<'a, const R: usize, const B: usize>(
    w: usize,
    h: usize,
    src: &[u8],
    dst: &'a mut Vec<u8>,
) -> &'a [u8] {
    let luma = w * h;
    let chroma = (w / 2) * (h / 2);
    dst.resize(luma + 2 * chroma, 0);
    let (y, uv) = dst.split_at_mut(luma);
    let (u, v) = uv.split_at_mut(chroma);
    let rgb = |px: &[u8]| (i32::from(px[R]), i32::from(px[1]), i32::from(px[B]));
    for (row, (line, out)) in src
        .chunks_exact(w * 3)
        .zip(y.chunks_exact_mut(w))
        .enumerate()
    {
        for (px, luma) in line.chunks_exact(3).zip(out.iter_mut()) {
            let (r, g, b) = rgb(px);
            *luma = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
        if row % 2 == 1 || row + 1 >= h {
            continue;
        }
        let below = &src[(row + 1) * w * 3..(row + 2) * w * 3];
        for x in 0..w / 2 {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for px in [
                &line[x * 6..],
                &line[x * 6 + 3..],
                &below[x * 6..],
                &below[x * 6 + 3..],
            ] {
                let (pr, pg, pb) = rgb(px);
                (r, g, b) = (r + pr, g + pg, b + pb);
            }
            // Sums of four: the coefficients over 1024 instead of 256 give the mean's.
            let c = (row / 2) * (w / 2) + x;
            u[c] = (((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128).clamp(0, 255) as u8;
            v[c] = (((112 * r - 94 * g - 18 * b + 512) >> 10) + 128).clamp(0, 255) as u8;
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i420_is_borrowed() {
        let src = vec![7u8; 4 * 2 * 3 / 2];
        let mut dst = Vec::new();
        let out = to_i420(PixelFormat::I420, 4, 2, &src, &mut dst).unwrap();
        assert_eq!(out.as_ptr(), src.as_ptr());
    }

    #[test]
    fn nv12_deinterleaves_chroma() {
        // 4x2: 8 luma bytes, then U,V pairs for the two 2x2 blocks.
        let src = [1, 2, 3, 4, 5, 6, 7, 8, 10, 20, 11, 21];
        let mut dst = Vec::new();
        let out = to_i420(PixelFormat::Nv12, 4, 2, &src, &mut dst).unwrap();
        assert_eq!(out, &[1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 20, 21]);
    }

    /// A 4x2 picture of two 2x2 blocks, `left` and `right`, packed as R,G,B.
    fn two_blocks(left: [u8; 3], right: [u8; 3]) -> Vec<u8> {
        [left, left, right, right, left, left, right, right].concat()
    }

    #[test]
    fn rgb_converts_known_colours_to_bt601_limited() {
        use onair_hal::synthetic::{BARS, rgb_to_yuv};
        let mut colours = BARS.to_vec();
        colours.extend([
            [0, 0, 0],
            [255, 255, 255],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
        ]);
        let mut dst = Vec::new();
        for pair in colours.chunks(2) {
            let (a, b) = (pair[0], *pair.get(1).unwrap_or(&pair[0]));
            let src = two_blocks(a, b);
            let out = to_i420(PixelFormat::Rgb24, 4, 2, &src, &mut dst)
                .unwrap()
                .to_vec();
            // The same picture as B,G,R bytes gives the same I420.
            let bgr: Vec<u8> = src.chunks(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
            assert_eq!(
                to_i420(PixelFormat::Bgr24, 4, 2, &bgr, &mut dst).unwrap(),
                &out[..]
            );
            for (block, colour) in [(0, a), (1, b)] {
                let [y, u, v] = rgb_to_yuv(colour);
                let got = [out[block * 2], out[8 + block], out[10 + block]];
                for (g, want) in got.into_iter().zip([y, u, v]) {
                    assert!(
                        g.abs_diff(want) <= 1,
                        "{colour:?}: got {got:?}, want {:?}",
                        [y, u, v]
                    );
                }
                assert_eq!(
                    out[block * 2],
                    out[block * 2 + 5],
                    "{colour:?}: luma of the block"
                );
            }
        }
        // Exact values of the corners of the range.
        let src = two_blocks([0; 3], [255; 3]);
        let out = to_i420(PixelFormat::Rgb24, 4, 2, &src, &mut dst).unwrap();
        assert_eq!(
            out,
            &[16, 16, 235, 235, 16, 16, 235, 235, 128, 128, 128, 128]
        );
    }

    #[test]
    fn rgb_chroma_is_the_mean_of_the_block() {
        // One 2x2 block: red, green, blue, white → mean (127.5, 127.5, 127.5) ≈ grey.
        let src = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let mut dst = Vec::new();
        let out = to_i420(PixelFormat::Rgb24, 2, 2, &src, &mut dst).unwrap();
        assert_eq!(&out[..4], &[82, 144, 41, 235]);
        assert!(
            out[4].abs_diff(128) <= 1 && out[5].abs_diff(128) <= 1,
            "{out:?}"
        );
    }

    #[test]
    fn yuyv_splits_planes() {
        // 4x2, two rows of Y0 U Y1 V Y2 U Y3 V.
        let src = [
            1, 10, 2, 20, 3, 11, 4, 21, //
            5, 12, 6, 22, 7, 13, 8, 23,
        ];
        let mut dst = Vec::new();
        let out = to_i420(PixelFormat::Yuyv, 4, 2, &src, &mut dst).unwrap();
        assert_eq!(out, &[1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 20, 21]);
    }
}
