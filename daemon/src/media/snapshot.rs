//! Still pictures (`GET /snapshot.jpg`): a JPEG of the current picture, for thumbnails in
//! Home Assistant, Frigate or a browser tab.
//!
//! The picture comes from the raw frames, not the H.264: the video thread copies the
//! picture it is about to encode when one is asked for ([`Snapshots::wanted`]), so nothing
//! is copied while nobody asks. A passthrough camera's pictures are never decoded by onair,
//! so its snapshot is its latest IDR, decoded here ([`Snapshots::from_gop`]).
//!
//! JPEGs are made at most once a second for each size asked, however many clients ask:
//! requests queue behind one lock and the ones after the first get its JPEG. A picture is
//! likewise taken at most once a second. The encode runs on tokio's blocking pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};

use super::VideoUnit;

/// A picture or a JPEG is reused for this long.
const FRESH: Duration = Duration::from_secs(1);

/// How long a request waits for the video thread's next picture.
const PICTURE_WAIT: Duration = Duration::from_secs(2);

/// JPEGs kept, one per size asked (the oldest go first): every size `/snapshot.jpg` makes
/// (its widths, and the picture's own).
const SIZES_KEPT: usize = crate::http::snapshot::MADE_WIDTHS.len() + 1;

/// JPEG quality (0 to 100).
const QUALITY: u8 = 85;

/// Why no snapshot could be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No picture came (the camera is away, or nothing was encoded yet).
    #[error("no picture from the camera within {0:?}")]
    NoPicture(Duration),
    /// The JPEG encoder or the decoder of a passthrough camera's IDR failed.
    #[error("cannot make the snapshot: {0}")]
    Failed(String),
}

/// One raw picture: I420, video range (as encoded).
#[derive(Debug)]
pub struct Still {
    width: u32,
    height: u32,
    i420: Vec<u8>,
    at: Instant,
    /// A privacy picture (black).
    private: bool,
}

impl Still {
    /// A copy of `i420` (`width` x `height`, planes packed) taken at `at`; `None` if the
    /// buffer is too short for the size.
    pub fn copy(i420: &[u8], width: u32, height: u32, at: Instant) -> Option<Still> {
        let len = i420_len(width, height);
        (width > 0 && height > 0 && i420.len() >= len).then(|| Still {
            width,
            height,
            i420: i420[..len].to_vec(),
            at,
            private: false,
        })
    }

    /// The same, marked as a privacy picture or not.
    pub fn private(self, private: bool) -> Still {
        Still { private, ..self }
    }

    /// Its size.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

fn i420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
}

/// One JPEG made.
struct Made {
    width: u32,
    at: Instant,
    jpeg: Bytes,
    /// [`Snapshots::cut`] when it was made: one from before privacy was switched or the camera
    /// went away is not served.
    cut: u64,
}

/// Where snapshot requests meet the video thread.
#[derive(Default)]
pub struct Snapshots {
    /// Set by a request: the video thread hands over its next picture.
    wanted: AtomicBool,
    /// The last picture handed over.
    still: Mutex<Option<Arc<Still>>>,
    handed: tokio::sync::Notify,
    /// The JPEGs made lately; requests queue here.
    made: tokio::sync::Mutex<Vec<Made>>,
    /// JPEGs encoded since the start.
    encoded: AtomicU64,
    /// Counts privacy switches and camera losses: what was made before the last is not served.
    cut: AtomicU64,
    /// Privacy is on: only privacy pictures are served (only the camera's while it is off).
    private: AtomicBool,
}

impl Snapshots {
    /// Whether a request waits for a picture (the video thread asks this every picture).
    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// The video thread's picture, for the requests waiting.
    pub fn hand_over(&self, still: Still) {
        if let Ok(mut slot) = self.still.lock() {
            *slot = Some(Arc::new(still));
        }
        self.wanted.store(false, Ordering::Relaxed);
        self.handed.notify_waiters();
    }

    /// Privacy was switched (`private`: to on): nothing made before is served again, and
    /// only pictures of the new state are.
    pub fn cut(&self, private: bool) {
        self.private.store(private, Ordering::SeqCst);
        self.forget();
    }

    /// The camera went away: nothing made before is served again.
    pub fn forget(&self) {
        self.cut.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut slot) = self.still.lock() {
            *slot = None;
        }
    }

    /// Whether privacy is on, as the last [`Self::cut`] said.
    pub fn private(&self) -> bool {
        self.private.load(Ordering::SeqCst)
    }

    /// JPEGs encoded since the start (`onair_snapshots_encoded_total`).
    pub fn encoded(&self) -> u64 {
        self.encoded.load(Ordering::Relaxed)
    }

    /// A JPEG `width` wide (the picture's own width if `None`; never wider than it), of a
    /// picture at most [`FRESH`] old: from the video thread, or with `gop` (a passthrough
    /// camera's) from its IDR.
    pub async fn jpeg(
        &self,
        width: Option<u32>,
        gop: Option<Vec<Arc<VideoUnit>>>,
    ) -> Result<Bytes, SnapshotError> {
        let mut made = self.made.lock().await;
        let now = Instant::now();
        let cut = self.cut.load(Ordering::SeqCst);
        made.retain(|m| m.cut == cut && now.saturating_duration_since(m.at) < FRESH);
        let still = match gop {
            Some(gop) => self.decoded(gop, now).await?,
            None => self.picture(now).await?,
        };
        let width = width.unwrap_or(still.width).clamp(1, still.width);
        if let Some(m) = made.iter().find(|m| m.width == width) {
            return Ok(m.jpeg.clone());
        }
        let jpeg = tokio::task::spawn_blocking(move || encode(&still, width))
            .await
            .map_err(|e| SnapshotError::Failed(e.to_string()))??;
        self.encoded.fetch_add(1, Ordering::Relaxed);
        if made.len() >= SIZES_KEPT {
            made.remove(0);
        }
        made.push(Made {
            width,
            at: now,
            jpeg: jpeg.clone(),
            cut,
        });
        Ok(jpeg)
    }

    /// The last picture if fresh, else the video thread's next one.
    async fn picture(&self, now: Instant) -> Result<Arc<Still>, SnapshotError> {
        if let Some(still) = self.fresh(now) {
            return Ok(still);
        }
        let handed = self.handed.notified();
        tokio::pin!(handed);
        handed.as_mut().enable();
        self.wanted.store(true, Ordering::Relaxed);
        if tokio::time::timeout(PICTURE_WAIT, handed).await.is_err() {
            return Err(SnapshotError::NoPicture(PICTURE_WAIT));
        }
        self.fresh(Instant::now())
            .ok_or(SnapshotError::NoPicture(PICTURE_WAIT))
    }

    /// The last picture if fresh, else `gop`'s IDR decoded.
    async fn decoded(
        &self,
        gop: Vec<Arc<VideoUnit>>,
        now: Instant,
    ) -> Result<Arc<Still>, SnapshotError> {
        if let Some(still) = self.fresh(now) {
            return Ok(still);
        }
        let idr = gop
            .into_iter()
            .find(|unit| unit.keyframe)
            .ok_or(SnapshotError::NoPicture(PICTURE_WAIT))?;
        let private = idr.private;
        let still = tokio::task::spawn_blocking(move || decode_idr(&idr))
            .await
            .map_err(|e| SnapshotError::Failed(e.to_string()))??;
        let still = Arc::new(still.private(private));
        if let Ok(mut slot) = self.still.lock() {
            *slot = Some(still.clone());
        }
        Ok(still)
    }

    /// The last picture handed over, if fresh and of the privacy state now.
    fn fresh(&self, now: Instant) -> Option<Arc<Still>> {
        let slot = self.still.lock().ok()?;
        let private = self.private();
        slot.as_ref()
            .filter(|s| s.private == private && now.saturating_duration_since(s.at) < FRESH)
            .cloned()
    }
}

/// An IDR decoded with openh264.
fn decode_idr(idr: &VideoUnit) -> Result<Still, SnapshotError> {
    let access_unit = &idr.access_unit;
    let failed = |e: openh264::Error| SnapshotError::Failed(format!("decoding the key frame: {e}"));
    let mut decoder = openh264::decoder::Decoder::new().map_err(failed)?;
    if let Some(yuv) = decoder.decode(access_unit).map_err(failed)? {
        return Ok(still_of(&yuv));
    }
    // openh264 may hold the picture back until told the stream ended.
    let remaining = decoder.flush_remaining().map_err(failed)?;
    remaining
        .first()
        .map(still_of)
        .ok_or(SnapshotError::NoPicture(PICTURE_WAIT))
}

/// A decoded picture, planes packed.
fn still_of(yuv: &impl openh264::formats::YUVSource) -> Still {
    let (w, h) = yuv.dimensions();
    let (ys, us, vs) = yuv.strides();
    let mut i420 = Vec::with_capacity(i420_len(w as u32, h as u32));
    let rows = |plane: &[u8], stride: usize, width: usize, height: usize, out: &mut Vec<u8>| {
        for row in plane.chunks(stride).take(height) {
            out.extend_from_slice(&row[..width.min(row.len())]);
        }
    };
    rows(yuv.y(), ys, w, h, &mut i420);
    rows(yuv.u(), us, w.div_ceil(2), h.div_ceil(2), &mut i420);
    rows(yuv.v(), vs, w.div_ceil(2), h.div_ceil(2), &mut i420);
    Still {
        width: w as u32,
        height: h as u32,
        i420,
        at: Instant::now(),
        private: false,
    }
}

/// `still` as a JPEG `width` wide (height in proportion).
fn encode(still: &Still, width: u32) -> Result<Bytes, SnapshotError> {
    let height = (u64::from(width) * u64::from(still.height) / u64::from(still.width)).max(1);
    let scaled = Scaled {
        still,
        width: u16::try_from(width).unwrap_or(u16::MAX),
        height: u16::try_from(height).unwrap_or(u16::MAX),
    };
    let mut jpeg = Vec::new();
    let mut encoder = Encoder::new(&mut jpeg, QUALITY);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode_image(scaled)
        .map_err(|e| SnapshotError::Failed(format!("JPEG: {e}")))?;
    Ok(Bytes::from(jpeg))
}

/// A picture as the JPEG encoder reads it: scaled (each output pixel the mean of the source
/// pixels it covers) and in JPEG's full-range YCbCr. Both are BT.601, so only the range
/// changes.
struct Scaled<'a> {
    still: &'a Still,
    width: u16,
    height: u16,
}

impl Scaled<'_> {
    /// The mean over the source area output pixel (`x`, `y`) covers in a plane of
    /// `plane_w` x `plane_h`.
    fn sample(&self, plane: &[u8], (plane_w, plane_h): (usize, usize), x: usize, y: usize) -> u8 {
        let (out_w, out_h) = (usize::from(self.width), usize::from(self.height));
        let span = |at: usize, out: usize, size: usize| {
            let from = at * size / out;
            let to = ((at + 1) * size / out).max(from + 1).min(size);
            from..to
        };
        let (xs, ys) = (span(x, out_w, plane_w), span(y, out_h, plane_h));
        let mut sum = 0u32;
        let mut n = 0u32;
        for row in ys {
            for &v in &plane[row * plane_w + xs.start..row * plane_w + xs.end] {
                sum += u32::from(v);
                n += 1;
            }
        }
        (sum / n.max(1)) as u8
    }
}

/// Video range (16–235 luma, 16–240 chroma) to full range (0–255).
fn full_range(value: u8, luma: bool) -> u8 {
    let v = f32::from(value);
    let full = match luma {
        true => (v - 16.0) * 255.0 / 219.0,
        false => (v - 128.0) * 255.0 / 224.0 + 128.0,
    };
    full.round().clamp(0.0, 255.0) as u8
}

impl ImageBuffer for Scaled<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let (w, h) = (self.still.width as usize, self.still.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let (luma, chroma) = self.still.i420.split_at(w * h);
        let (u, v) = chroma.split_at(cw * ch);
        let y = usize::from(y);
        for x in 0..usize::from(self.width) {
            buffers[0].push(full_range(self.sample(luma, (w, h), x, y), true));
            buffers[1].push(full_range(self.sample(u, (cw, ch), x, y), false));
            buffers[2].push(full_range(self.sample(v, (cw, ch), x, y), false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `width` x `height` I420 picture: left half luma 16 (black), right half 235 (white),
    /// neutral chroma.
    fn halves(width: u32, height: u32) -> Still {
        let (w, h) = (width as usize, height as usize);
        let mut i420 = vec![128u8; i420_len(width, height)];
        for row in 0..h {
            for x in 0..w {
                i420[row * w + x] = if x < w / 2 { 16 } else { 235 };
            }
        }
        Still {
            width,
            height,
            i420,
            at: Instant::now(),
            private: false,
        }
    }

    #[test]
    fn video_range_becomes_full_range() {
        assert_eq!(full_range(16, true), 0);
        assert_eq!(full_range(235, true), 255);
        assert_eq!(full_range(128, false), 128);
        assert_eq!(full_range(240, false), 255);
        assert_eq!(full_range(0, true), 0, "below black clamps");
    }

    #[test]
    fn scaling_averages_what_each_pixel_covers() {
        let still = halves(8, 4);
        let scaled = Scaled {
            still: &still,
            width: 2,
            height: 1,
        };
        let mut rows: [Vec<u8>; 4] = Default::default();
        scaled.fill_buffers(0, &mut rows);
        assert_eq!(rows[0], [0, 255]);
        // Half width straddling the edge: one pixel of 3 source columns each side… 8 → 3.
        let scaled = Scaled {
            still: &still,
            width: 3,
            height: 1,
        };
        let mut rows: [Vec<u8>; 4] = Default::default();
        scaled.fill_buffers(0, &mut rows);
        assert_eq!(rows[0][0], 0);
        assert_eq!(rows[0][2], 255);
        assert!(rows[0][1] > 0 && rows[0][1] < 255, "{:?}", rows[0]);
    }

    #[test]
    fn a_jpeg_comes_out_at_the_width_asked_and_the_height_in_proportion() {
        let jpeg = encode(&halves(64, 36), 32).unwrap();
        assert_eq!(&jpeg[..2], [0xFF, 0xD8], "SOI");
        // SOF0: FF C0, length, precision, height, width.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let height = u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]);
        let width = u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]);
        assert_eq!((width, height), (32, 18));
    }

    #[test]
    fn a_short_buffer_is_no_picture() {
        assert!(Still::copy(&[0; 10], 4, 4, Instant::now()).is_none());
        assert!(Still::copy(&[0; 24], 4, 4, Instant::now()).is_some());
    }
}
