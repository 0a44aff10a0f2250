//! Copying a raw V4L2 buffer into the tight layout the HAL promises.
//!
//! Drivers may pad every line (`bytesperline` larger than the bytes of pixels in it), e.g. to
//! a multiple of 32 or 64 for DMA; [`crate::VideoFrame`] has no padding. For single-planar
//! formats V4L2 puts the planes one after another, each chroma line of planar 4:2:0 (YU12)
//! being half as long as a luma line, and each line of NV12's interleaved chroma plane as
//! long as a luma line.

use super::choose::CaptureFormat;

/// Where the lines of one plane are in a driver's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plane {
    /// Offset of the first line in the buffer.
    offset: usize,
    /// Bytes from one line to the next in the buffer.
    stride: usize,
    /// Bytes of pixels in a line.
    row: usize,
    /// Number of lines.
    rows: usize,
}

/// Geometry of a raw capture buffer: what `VIDIOC_S_FMT` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLayout {
    /// YUYV, NV12 or YU12.
    pub format: CaptureFormat,
    /// Pixels (even).
    pub width: u32,
    /// Pixels (even).
    pub height: u32,
    /// Bytes per line of the first plane (`bytesperline`); 0 (some drivers say so for
    /// planar formats) means no padding.
    pub stride: u32,
}

impl RawLayout {
    /// The planes of the layout, or `None` for a format that is not raw YUV or a stride
    /// shorter than a line.
    fn planes(&self) -> Option<Vec<Plane>> {
        let (w, h) = (self.width as usize, self.height as usize);
        let line = match self.format {
            CaptureFormat::Yuyv => w * 2,
            CaptureFormat::Nv12 | CaptureFormat::Yu12 => w,
            _ => return None,
        };
        let stride = if self.stride == 0 {
            line
        } else {
            self.stride as usize
        };
        if stride < line {
            return None;
        }
        let luma = Plane {
            offset: 0,
            stride,
            row: line,
            rows: h,
        };
        Some(match self.format {
            CaptureFormat::Yuyv => vec![luma],
            CaptureFormat::Nv12 => vec![
                luma,
                Plane {
                    offset: stride * h,
                    stride,
                    row: w,
                    rows: h / 2,
                },
            ],
            _ => {
                let chroma = Plane {
                    offset: stride * h,
                    stride: stride / 2,
                    row: w / 2,
                    rows: h / 2,
                };
                let second = Plane {
                    offset: chroma.offset + chroma.stride * chroma.rows,
                    ..chroma
                };
                vec![luma, chroma, second]
            }
        })
    }

    /// Bytes of a driver buffer that holds a whole frame in this layout (the last line of
    /// the last plane needs no padding after it).
    pub fn required_len(&self) -> Option<usize> {
        self.planes()?
            .iter()
            .map(|plane| plane.offset + plane.stride * (plane.rows.max(1) - 1) + plane.row)
            .max()
    }
}

/// Copies the frame in `src` (a driver buffer laid out as `layout` says) into `dst` without
/// line padding. `dst` is resized; its allocation is reused.
pub fn pack(layout: RawLayout, src: &[u8], dst: &mut Vec<u8>) -> Result<(), String> {
    let planes = layout.planes().ok_or_else(|| {
        format!(
            "cannot unpack {} with stride {}",
            layout.format, layout.stride
        )
    })?;
    let required = layout.required_len().unwrap_or(usize::MAX);
    if src.len() < required {
        return Err(format!(
            "short frame: {} bytes, {required} needed for {} {}x{} with stride {}",
            src.len(),
            layout.format,
            layout.width,
            layout.height,
            layout.stride
        ));
    }
    dst.clear();
    for plane in planes {
        if plane.stride == plane.row {
            // No padding: the plane is one run of bytes.
            dst.extend_from_slice(&src[plane.offset..plane.offset + plane.row * plane.rows]);
        } else {
            for line in 0..plane.rows {
                let start = plane.offset + line * plane.stride;
                dst.extend_from_slice(&src[start..start + plane.row]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PixelFormat;

    /// A buffer of `rows` lines of `stride` bytes whose pixel bytes count up from `first`
    /// and whose padding is 0xEE.
    fn padded(rows: usize, row: usize, stride: usize, first: u8) -> (Vec<u8>, Vec<u8>) {
        let mut buffer = Vec::new();
        let mut tight = Vec::new();
        let mut value = first;
        for _ in 0..rows {
            for _ in 0..row {
                buffer.push(value);
                tight.push(value);
                value = value.wrapping_add(1);
            }
            buffer.extend(std::iter::repeat_n(0xEE, stride - row));
        }
        (buffer, tight)
    }

    #[test]
    fn yuyv_with_padded_lines_is_packed_tight() {
        let layout = RawLayout {
            format: CaptureFormat::Yuyv,
            width: 6,
            height: 4,
            stride: 16,
        };
        let (src, expected) = padded(4, 12, 16, 0);
        let mut dst = vec![1, 2, 3];
        pack(layout, &src, &mut dst).expect("complete frame");
        assert_eq!(dst, expected);
        assert_eq!(dst.len(), PixelFormat::Yuyv.frame_len(6, 4).unwrap());
        assert!(!dst.contains(&0xEE));
    }

    #[test]
    fn nv12_chroma_lines_have_the_luma_stride() {
        let layout = RawLayout {
            format: CaptureFormat::Nv12,
            width: 4,
            height: 4,
            stride: 8,
        };
        let (mut src, mut expected) = padded(4, 4, 8, 0);
        let (chroma, chroma_tight) = padded(2, 4, 8, 100);
        src.extend(chroma);
        expected.extend(chroma_tight);
        let mut dst = Vec::new();
        pack(layout, &src, &mut dst).expect("complete frame");
        assert_eq!(dst, expected);
        assert_eq!(dst.len(), PixelFormat::Nv12.frame_len(4, 4).unwrap());
    }

    #[test]
    fn yu12_chroma_planes_have_half_the_stride() {
        let layout = RawLayout {
            format: CaptureFormat::Yu12,
            width: 4,
            height: 2,
            stride: 8,
        };
        let (mut src, mut expected) = padded(2, 4, 8, 0);
        for first in [100, 200] {
            let (plane, tight) = padded(1, 2, 4, first);
            src.extend(plane);
            expected.extend(tight);
        }
        let mut dst = Vec::new();
        pack(layout, &src, &mut dst).expect("complete frame");
        assert_eq!(dst, expected);
        assert_eq!(dst, [0, 1, 2, 3, 4, 5, 6, 7, 100, 101, 200, 201]);
        assert_eq!(dst.len(), PixelFormat::I420.frame_len(4, 2).unwrap());
    }

    #[test]
    fn tight_buffers_are_copied_whole_and_zero_stride_means_tight() {
        for stride in [0, 8] {
            let layout = RawLayout {
                format: CaptureFormat::Yu12,
                width: 8,
                height: 2,
                stride,
            };
            let src: Vec<u8> = (0..24).collect();
            let mut dst = Vec::new();
            pack(layout, &src, &mut dst).expect("complete frame");
            assert_eq!(dst, src);
        }
    }

    #[test]
    fn the_last_line_needs_no_padding_but_short_frames_are_refused() {
        let layout = RawLayout {
            format: CaptureFormat::Yuyv,
            width: 2,
            height: 2,
            stride: 8,
        };
        assert_eq!(layout.required_len(), Some(12));
        let mut dst = Vec::new();
        pack(layout, &[7; 12], &mut dst).expect("last line unpadded");
        assert_eq!(dst, [7; 8]);
        let error = pack(layout, &[7; 11], &mut dst).unwrap_err();
        assert!(
            error.contains("short frame: 11 bytes, 12 needed"),
            "{error}"
        );
    }

    #[test]
    fn impossible_layouts_are_refused() {
        let narrow = RawLayout {
            format: CaptureFormat::Yuyv,
            width: 8,
            height: 2,
            stride: 8,
        };
        assert!(pack(narrow, &[0; 64], &mut Vec::new()).is_err());
        let jpeg = RawLayout {
            format: CaptureFormat::Mjpeg,
            width: 8,
            height: 2,
            stride: 0,
        };
        assert!(pack(jpeg, &[0; 64], &mut Vec::new()).is_err());
    }
}
