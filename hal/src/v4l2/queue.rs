//! One V4L2 buffer queue, on v4l2r's ioctl layer: MMAP buffers mapped once when they are
//! allocated (and exported as DMABUFs when asked), or DMABUF slots that take another device's
//! buffers. Cameras here capture through it; onaird's memory-to-memory encoder feeds and
//! drains its two queues through it.
//!
//! Not the `v4l` crate's stream: it hides which buffer a frame is in, which a DMABUF export
//! needs, and panics when stopping fails. Not v4l2r's `device::queue`: it maps a buffer anew
//! on every access and panics on a buffer index it did not expect. Here an index the driver
//! returns is checked rather than trusted.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use v4l2r::QueueType;
use v4l2r::ioctl::{
    self, DqBufIoctlError, ExpbufFlags, IoctlConvertError, MemoryConsistency, PlaneMapping,
    QBufPlane, QBuffer, QueryBuffer, V4l2Buffer,
};
use v4l2r::memory::{DmaBufHandle, DmaBufSource, MemoryType, MmapHandle};
use v4l2r::nix::errno::Errno;

/// A failed queue operation: what was done, and the driver's error number if it gave one
/// (`ENODEV`: the device is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueError {
    /// The ioctl and what it was about: "VIDIOC_DQBUF Video Capture".
    pub what: String,
    /// The error number, when the driver answered with one.
    pub errno: Option<Errno>,
    /// What was wrong when there is no error number (a buffer index out of range).
    pub detail: String,
}

impl QueueError {
    fn errno(what: String, errno: Errno) -> Self {
        QueueError {
            what,
            errno: Some(errno),
            detail: String::new(),
        }
    }

    fn other(what: String, detail: impl fmt::Display) -> Self {
        QueueError {
            what,
            errno: None,
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(errno) => write!(f, "{}: {errno}", self.what),
            None => write!(f, "{}: {}", self.what, self.detail),
        }
    }
}

impl std::error::Error for QueueError {}

/// A buffer exported as a DMABUF: its file descriptor (shared; closed with the last holder)
/// and its length in bytes.
#[derive(Debug, Clone)]
pub struct Dmabuf {
    fd: Arc<OwnedFd>,
    len: u64,
}

impl Dmabuf {
    /// A DMABUF (or, in tests, any file) of `len` bytes.
    pub fn new(fd: OwnedFd, len: u64) -> Self {
        Dmabuf {
            fd: Arc::new(fd),
            len,
        }
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the buffer has no bytes (never, for an exported V4L2 buffer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRawFd for Dmabuf {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Dmabuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl DmaBufSource for Dmabuf {
    fn len(&self) -> u64 {
        self.len
    }
}

/// What holds a queue's buffers.
enum Backing {
    /// MMAP buffers, plane 0 of each mapped (the formats used here have one plane).
    Mmap(Vec<PlaneMapping>),
    /// DMABUF slots: another device's buffers are queued into them.
    Imported,
}

/// One queue of a device and its buffers.
pub struct Queue {
    kind: QueueType,
    backing: Backing,
    /// Which buffers the driver has.
    queued: Vec<bool>,
}

/// A buffer the driver gave back.
pub struct Done {
    /// Which buffer.
    pub index: usize,
    /// What the driver said about it (bytes used, flags, timestamp, sequence).
    pub buffer: V4l2Buffer,
}

impl Done {
    /// Bytes the driver filled (plane 0).
    pub fn bytes_used(&self) -> usize {
        *self.buffer.get_first_plane().bytesused as usize
    }
}

impl Queue {
    /// Allocates `count` MMAP buffers (the driver may give more or fewer) and maps them.
    pub fn allocate(
        device: &(impl AsRawFd + AsFd),
        kind: QueueType,
        count: u32,
    ) -> Result<Queue, QueueError> {
        let got = request(device, kind, MemoryType::Mmap, count)?;
        let mut maps = Vec::with_capacity(got);
        for index in 0..got {
            let what = || format!("VIDIOC_QUERYBUF {kind} {index}");
            let info: QueryBuffer =
                ioctl::querybuf(device, kind, index).map_err(|e| QueueError::other(what(), e))?;
            let plane = info
                .planes
                .first()
                .ok_or_else(|| QueueError::other(what(), "the buffer has no plane"))?;
            let map = ioctl::mmap(device, plane.mem_offset, plane.length).map_err(|e| {
                QueueError::errno(format!("mapping {kind} buffer {index}"), e.into())
            })?;
            maps.push(map);
        }
        Ok(Queue {
            kind,
            queued: vec![false; maps.len()],
            backing: Backing::Mmap(maps),
        })
    }

    /// Asks for `count` DMABUF slots (the driver may give more or fewer), to queue other
    /// devices' buffers into with [`Queue::queue_imported`].
    pub fn import(device: &impl AsRawFd, kind: QueueType, count: u32) -> Result<Queue, QueueError> {
        let got = request(device, kind, MemoryType::DmaBuf, count)?;
        Ok(Queue {
            kind,
            queued: vec![false; got],
            backing: Backing::Imported,
        })
    }

    /// Which queue this is.
    pub fn kind(&self) -> QueueType {
        self.kind
    }

    /// How many buffers the queue has.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether it has none (never: allocating refuses that).
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// A buffer the driver does not have, if any.
    pub fn free(&self) -> Option<usize> {
        self.queued.iter().position(|queued| !queued)
    }

    /// Whether the driver has buffer `index`.
    pub fn is_queued(&self, index: usize) -> bool {
        self.queued.get(index).copied().unwrap_or(false)
    }

    /// Whether the driver has any buffer of this queue.
    pub fn any_queued(&self) -> bool {
        self.queued.iter().any(|&queued| queued)
    }

    /// The memory of MMAP buffer `index`.
    pub fn memory(&mut self, index: usize) -> Option<&mut [u8]> {
        match &mut self.backing {
            Backing::Mmap(maps) => maps.get_mut(index).map(|map| &mut map[..]),
            Backing::Imported => None,
        }
    }

    /// The whole memory of MMAP buffer `index`.
    pub fn data(&self, index: usize) -> Option<&[u8]> {
        match &self.backing {
            Backing::Mmap(maps) => maps.get(index).map(|map| &map[..]),
            Backing::Imported => None,
        }
    }

    /// Bytes `bytesused` of a dequeued MMAP buffer (after its data offset), if they are
    /// within it.
    pub fn payload(&self, done: &Done) -> Option<&[u8]> {
        let Backing::Mmap(maps) = &self.backing else {
            return None;
        };
        let plane = done.buffer.get_first_plane();
        let end = *plane.bytesused as usize;
        let start = plane.data_offset.map_or(0, |offset| *offset as usize);
        maps.get(done.index)?.get(start.min(end)..end)
    }

    /// Exports MMAP buffer `index` as a DMABUF (read-only for whoever imports it).
    pub fn export(&self, device: &impl AsRawFd, index: usize) -> Result<Dmabuf, QueueError> {
        let what = || format!("VIDIOC_EXPBUF {} {index}", self.kind);
        let Backing::Mmap(maps) = &self.backing else {
            return Err(QueueError::other(what(), "not an MMAP buffer"));
        };
        let len = maps
            .get(index)
            .map(|map| map.len() as u64)
            .ok_or_else(|| QueueError::other(what(), "no such buffer"))?;
        let flags = ExpbufFlags::CLOEXEC | ExpbufFlags::RDONLY;
        let fd: OwnedFd = ioctl::expbuf(device, self.kind, index, 0, flags)
            .map_err(|e| QueueError::errno(what(), e.into()))?;
        Ok(Dmabuf {
            fd: Arc::new(fd),
            len,
        })
    }

    /// Hands MMAP buffer `index` to the driver with `bytes_used` bytes of data (0 to fill).
    pub fn queue(
        &mut self,
        device: &impl AsRawFd,
        index: usize,
        bytes_used: usize,
    ) -> Result<(), QueueError> {
        let mut buffer = QBuffer::<MmapHandle>::new(self.kind, index as u32);
        buffer.planes.push(QBufPlane::new(bytes_used));
        self.submit(device, index, buffer)
    }

    /// Queues `dmabuf` (`bytes_used` of it: a picture) into DMABUF slot `index`.
    pub fn queue_imported(
        &mut self,
        device: &impl AsRawFd,
        index: usize,
        dmabuf: &Dmabuf,
        bytes_used: usize,
    ) -> Result<(), QueueError> {
        let handle = DmaBufHandle(dmabuf.clone());
        let mut buffer = QBuffer::<DmaBufHandle<Dmabuf>>::new(self.kind, index as u32);
        buffer
            .planes
            .push(QBufPlane::new_from_handle(&handle, bytes_used));
        self.submit(device, index, buffer)
    }

    fn submit<H: v4l2r::memory::PlaneHandle>(
        &mut self,
        device: &impl AsRawFd,
        index: usize,
        buffer: QBuffer<H>,
    ) -> Result<(), QueueError> {
        let what = || format!("VIDIOC_QBUF {} {index}", self.kind);
        if index >= self.queued.len() {
            return Err(QueueError::other(what(), "no such buffer"));
        }
        ioctl::qbuf::<_, ()>(device, buffer).map_err(|e| match e {
            IoctlConvertError::IoctlError(e) => QueueError::errno(what(), e.into()),
            e => QueueError::other(what(), e),
        })?;
        self.queued[index] = true;
        Ok(())
    }

    /// Hands every MMAP buffer the driver does not have to it, empty.
    pub fn queue_all(&mut self, device: &impl AsRawFd) -> Result<(), QueueError> {
        while let Some(index) = self.free() {
            self.queue(device, index, 0)?;
        }
        Ok(())
    }

    /// A buffer the driver is done with, or `None` when none is ready (on a device opened
    /// non-blocking, or after a poll said so).
    pub fn dequeue(&mut self, device: &impl AsRawFd) -> Result<Option<Done>, QueueError> {
        let what = || format!("VIDIOC_DQBUF {}", self.kind);
        let buffer: V4l2Buffer = match ioctl::dqbuf(device, self.kind) {
            Ok(buffer) => buffer,
            Err(IoctlConvertError::IoctlError(DqBufIoctlError::NotReady)) => return Ok(None),
            Err(IoctlConvertError::IoctlError(DqBufIoctlError::Eos)) => {
                return Err(QueueError::errno(what(), Errno::EPIPE));
            }
            Err(IoctlConvertError::IoctlError(DqBufIoctlError::Other(errno))) => {
                return Err(QueueError::errno(what(), errno));
            }
            Err(e) => return Err(QueueError::other(what(), e)),
        };
        if buffer.num_planes() == 0 {
            return Err(QueueError::other(what(), "a buffer with no plane"));
        }
        let index = buffer.index() as usize;
        let count = self.queued.len();
        let Some(queued) = self.queued.get_mut(index) else {
            return Err(QueueError::other(
                what(),
                format!("buffer {index} of {count}"),
            ));
        };
        *queued = false;
        Ok(Some(Done { index, buffer }))
    }

    /// Streaming on.
    pub fn stream_on(&self, device: &impl AsRawFd) -> Result<(), QueueError> {
        ioctl::streamon(device, self.kind)
            .map_err(|e| QueueError::errno(format!("VIDIOC_STREAMON {}", self.kind), e.into()))
    }

    /// Streaming off: the driver gives every buffer back.
    pub fn stream_off(&mut self, device: &impl AsRawFd) -> Result<(), QueueError> {
        ioctl::streamoff(device, self.kind)
            .map_err(|e| QueueError::errno(format!("VIDIOC_STREAMOFF {}", self.kind), e.into()))?;
        self.queued.iter_mut().for_each(|queued| *queued = false);
        Ok(())
    }
}

/// More buffers than any queue here asks for; a driver that gives more has the rest unused.
const MOST_BUFFERS: usize = 32;

/// VIDIOC_REQBUFS: how many buffers the driver gave (at least one; at most
/// [`MOST_BUFFERS`] are used).
fn request(
    device: &impl AsRawFd,
    kind: QueueType,
    memory: MemoryType,
    count: u32,
) -> Result<usize, QueueError> {
    let what = || format!("VIDIOC_REQBUFS {kind} {memory:?}");
    let got: usize = ioctl::reqbufs(device, kind, memory, count, MemoryConsistency::empty())
        .map_err(|e| QueueError::errno(what(), e.into()))?;
    if got == 0 {
        return Err(QueueError::other(what(), "no buffers"));
    }
    Ok(got.min(MOST_BUFFERS))
}
