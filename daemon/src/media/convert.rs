//! Raw camera layouts to the planar I420 the encoder takes.
//!
//! Cameras deliver YUYV (most UVC webcams), NV12 (the Pi's ISP) or I420. Converting is a
//! copy with chroma shuffling, done once per frame into a reused buffer; an I420 source is
//! passed through untouched.

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
    }
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
