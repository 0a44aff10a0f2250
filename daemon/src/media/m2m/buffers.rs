//! How an I420 picture is laid into an OUTPUT buffer of a memory-to-memory encoder (the
//! queues themselves are the HAL's [`Queue`](onair_hal::v4l2::queue::Queue)).

/// The raw formats the encoder can feed: the I420 it is given, or NV12 made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Raw {
    /// `YU12`: planar Y, U, V (I420).
    Yu12,
    /// `NV12`: Y, then interleaved U,V.
    Nv12,
}

impl Raw {
    pub(super) fn fourcc(self) -> &'static [u8; 4] {
        match self {
            Raw::Yu12 => b"YU12",
            Raw::Nv12 => b"NV12",
        }
    }
}

/// Where the planes of an OUTPUT buffer are, as the driver set the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) raw: Raw,
    /// The picture's size.
    pub(super) width: usize,
    pub(super) height: usize,
    /// Bytes per luma line (`bytesperline`).
    pub(super) stride: usize,
    /// Lines of the luma plane in the buffer (the format's height; some drivers align it).
    pub(super) lines: usize,
}

impl Layout {
    /// Bytes the planes take.
    pub(super) fn len(&self) -> usize {
        self.stride * self.lines * 3 / 2
    }

    /// Writes the I420 picture `i420` into `dst`; the bytes used, or why it cannot.
    pub(super) fn fill(&self, i420: &[u8], dst: &mut [u8]) -> Result<usize, String> {
        let (w, h) = (self.width, self.height);
        let (luma, chroma) = (w * h, w * h / 4);
        if i420.len() < luma + 2 * chroma {
            return Err(format!(
                "picture of {} bytes, want {w}x{h} I420",
                i420.len()
            ));
        }
        if dst.len() < self.len() {
            return Err(format!(
                "OUTPUT buffer of {} bytes, the format needs {}",
                dst.len(),
                self.len()
            ));
        }
        let (y, uv) = dst.split_at_mut(self.stride * self.lines);
        copy_plane(&i420[..luma], w, y, self.stride, h);
        let (u, v) = (&i420[luma..luma + chroma], &i420[luma + chroma..][..chroma]);
        match self.raw {
            Raw::Yu12 => {
                let (cs, cl) = (self.stride / 2, self.lines / 2);
                let (dst_u, dst_v) = uv.split_at_mut(cs * cl);
                copy_plane(u, w / 2, dst_u, cs, h / 2);
                copy_plane(v, w / 2, dst_v, cs, h / 2);
            }
            Raw::Nv12 => interleave(u, v, w / 2, uv, self.stride, h / 2),
        }
        Ok(self.len())
    }
}

/// Copies `rows` lines of `width` bytes from `src` (packed) to `dst` (lines `stride` apart).
fn copy_plane(src: &[u8], width: usize, dst: &mut [u8], stride: usize, rows: usize) {
    if stride == width {
        dst[..width * rows].copy_from_slice(&src[..width * rows]);
        return;
    }
    for (from, to) in src
        .chunks_exact(width)
        .zip(dst.chunks_mut(stride))
        .take(rows)
    {
        to[..width].copy_from_slice(from);
    }
}

/// Interleaves the chroma planes `u` and `v` (`width` x `rows`) into NV12's `dst`.
fn interleave(u: &[u8], v: &[u8], width: usize, dst: &mut [u8], stride: usize, rows: usize) {
    for row in 0..rows {
        let line = &mut dst[row * stride..][..width * 2];
        let (u, v) = (&u[row * width..][..width], &v[row * width..][..width]);
        for ((pair, &cb), &cr) in line.chunks_exact_mut(2).zip(u).zip(v) {
            pair[0] = cb;
            pair[1] = cr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x2 I420 picture: Y 1..=8, U 10,11, V 20,21.
    const I420: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 20, 21];

    #[test]
    fn packed_yu12_is_a_copy() {
        let layout = Layout {
            raw: Raw::Yu12,
            width: 4,
            height: 2,
            stride: 4,
            lines: 2,
        };
        let mut dst = [0u8; 12];
        assert_eq!(layout.fill(&I420, &mut dst), Ok(12));
        assert_eq!(dst, I420);
    }

    #[test]
    fn padded_lines_and_aligned_height_are_honoured() {
        // Stride 6 and 4 lines (the driver aligned both): Y 6x4, U 3x2, V 3x2.
        let layout = Layout {
            raw: Raw::Yu12,
            width: 4,
            height: 2,
            stride: 6,
            lines: 4,
        };
        let mut dst = [0u8; 36];
        assert_eq!(layout.fill(&I420, &mut dst), Ok(36));
        assert_eq!(&dst[..12], &[1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0]);
        assert_eq!(&dst[24..26], &[10, 11]);
        assert_eq!(&dst[30..32], &[20, 21]);
    }

    #[test]
    fn nv12_interleaves_chroma() {
        let layout = Layout {
            raw: Raw::Nv12,
            width: 4,
            height: 2,
            stride: 4,
            lines: 2,
        };
        let mut dst = [0u8; 12];
        assert_eq!(layout.fill(&I420, &mut dst), Ok(12));
        assert_eq!(dst, [1, 2, 3, 4, 5, 6, 7, 8, 10, 20, 11, 21]);
    }

    #[test]
    fn short_pictures_and_buffers_are_errors() {
        let layout = Layout {
            raw: Raw::Yu12,
            width: 4,
            height: 2,
            stride: 4,
            lines: 2,
        };
        assert!(layout.fill(&I420[..11], &mut [0u8; 12]).is_err());
        assert!(layout.fill(&I420, &mut [0u8; 11]).is_err());
    }
}
