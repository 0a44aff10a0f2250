//! The two queues of a memory-to-memory device, their MMAP buffers, and how an I420 picture
//! is laid into an OUTPUT buffer.
//!
//! Built on v4l2r's ioctl layer: each buffer is mapped once, when it is allocated (v4l2r's
//! `device::queue` maps a buffer anew on every access), and a buffer index the driver returns
//! is checked rather than trusted (`device::queue` panics on one it did not expect).

use v4l2r::QueueType;
use v4l2r::device::Device;
use v4l2r::ioctl::{
    self, DqBufIoctlError, IoctlConvertError, MemoryConsistency, PlaneMapping, QBufPlane, QBuffer,
    QueryBuffer, V4l2Buffer,
};
use v4l2r::memory::{MemoryType, MmapHandle};

/// One queue (OUTPUT: pictures in; CAPTURE: coded data out) and its mapped buffers.
pub(super) struct Queue {
    pub(super) kind: QueueType,
    /// Plane 0 of each buffer (the formats used here have one plane).
    maps: Vec<PlaneMapping>,
    /// Which buffers the driver has.
    queued: Vec<bool>,
}

/// A buffer the driver gave back.
pub(super) struct Done {
    pub(super) index: usize,
    pub(super) buffer: V4l2Buffer,
}

impl Queue {
    /// Allocates `count` MMAP buffers (the driver may give more or fewer) and maps them.
    pub(super) fn allocate(device: &Device, kind: QueueType, count: u32) -> Result<Queue, String> {
        let got: usize = ioctl::reqbufs(
            device,
            kind,
            MemoryType::Mmap,
            count,
            MemoryConsistency::empty(),
        )
        .map_err(|e| format!("VIDIOC_REQBUFS {kind}: {e}"))?;
        if got == 0 {
            return Err(format!("VIDIOC_REQBUFS {kind}: no buffers"));
        }
        let mut maps = Vec::with_capacity(got);
        for index in 0..got {
            let info: QueryBuffer = ioctl::querybuf(device, kind, index)
                .map_err(|e| format!("VIDIOC_QUERYBUF {kind} {index}: {e}"))?;
            let plane = info
                .planes
                .first()
                .ok_or_else(|| format!("{kind} buffer {index} has no plane"))?;
            let map = ioctl::mmap(device, plane.mem_offset, plane.length)
                .map_err(|e| format!("mapping {kind} buffer {index}: {e}"))?;
            maps.push(map);
        }
        Ok(Queue {
            kind,
            queued: vec![false; maps.len()],
            maps,
        })
    }

    /// How many buffers the queue has.
    pub(super) fn len(&self) -> usize {
        self.maps.len()
    }

    /// A buffer the driver does not have, if any.
    pub(super) fn free(&self) -> Option<usize> {
        self.queued.iter().position(|queued| !queued)
    }

    /// The memory of buffer `index`.
    pub(super) fn memory(&mut self, index: usize) -> Option<&mut [u8]> {
        self.maps.get_mut(index).map(|map| &mut map[..])
    }

    /// Bytes `bytesused` of a dequeued buffer (after its data offset), if they are within it.
    pub(super) fn payload(&self, done: &Done) -> Option<&[u8]> {
        let plane = done.buffer.get_first_plane();
        let end = *plane.bytesused as usize;
        let start = plane.data_offset.map_or(0, |offset| *offset as usize);
        self.maps.get(done.index)?.get(start.min(end)..end)
    }

    /// Hands buffer `index` to the driver with `bytes_used` bytes of data (0 for CAPTURE).
    pub(super) fn queue(
        &mut self,
        device: &Device,
        index: usize,
        bytes_used: usize,
    ) -> Result<(), String> {
        let mut buffer = QBuffer::<MmapHandle>::new(self.kind, index as u32);
        buffer.planes.push(QBufPlane::new(bytes_used));
        ioctl::qbuf::<_, ()>(device, buffer)
            .map_err(|e| format!("VIDIOC_QBUF {} {index}: {e}", self.kind))?;
        if let Some(queued) = self.queued.get_mut(index) {
            *queued = true;
        }
        Ok(())
    }

    /// Hands every buffer the driver does not have to it (CAPTURE).
    pub(super) fn queue_all(&mut self, device: &Device) -> Result<(), String> {
        while let Some(index) = self.free() {
            self.queue(device, index, 0)?;
        }
        Ok(())
    }

    /// A buffer the driver is done with, or `None` when none is ready (the device is opened
    /// non-blocking).
    pub(super) fn dequeue(&mut self, device: &Device) -> Result<Option<Done>, String> {
        let buffer: V4l2Buffer = match ioctl::dqbuf(device, self.kind) {
            Ok(buffer) => buffer,
            Err(IoctlConvertError::IoctlError(DqBufIoctlError::NotReady)) => return Ok(None),
            Err(e) => return Err(format!("VIDIOC_DQBUF {}: {e}", self.kind)),
        };
        let index = buffer.index() as usize;
        let Some(queued) = self.queued.get_mut(index) else {
            return Err(format!(
                "VIDIOC_DQBUF {}: buffer {index} of {}",
                self.kind,
                self.maps.len()
            ));
        };
        *queued = false;
        Ok(Some(Done { index, buffer }))
    }

    /// Streaming on.
    pub(super) fn stream_on(&self, device: &Device) -> Result<(), String> {
        ioctl::streamon(device, self.kind)
            .map_err(|e| format!("VIDIOC_STREAMON {}: {e}", self.kind))
    }

    /// Streaming off: the driver gives every buffer back.
    pub(super) fn stream_off(&mut self, device: &Device) -> Result<(), String> {
        ioctl::streamoff(device, self.kind)
            .map_err(|e| format!("VIDIOC_STREAMOFF {}: {e}", self.kind))?;
        self.queued.iter_mut().for_each(|queued| *queued = false);
        Ok(())
    }
}

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
