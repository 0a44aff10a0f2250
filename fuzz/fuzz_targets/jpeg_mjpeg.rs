//! MJPEG frames from a camera, through the HAL's decoder to I420 (`zune-jpeg` and onair's
//! Huffman-table insertion, range scaling and chroma averaging).
//!
//! The input is one frame as the driver hands it over. The decoder is made for the size the
//! frame's own header states when that is a size a driver could negotiate (even, and small
//! enough to keep a run quick), so the whole decode runs; otherwise for 16x16, and the
//! frame is refused. A decoded frame must be I420 of the negotiated size in limited range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair_hal::v4l2::fuzzing::MjpegDecoder;

/// Largest picture decoded, in pixels (a 1280x800 frame; each decode costs 3 bytes a pixel).
const MAX_PIXELS: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (width, height) = match stated_size(data) {
        Some((w, h))
            if w.is_multiple_of(2) && h.is_multiple_of(2) && w * h > 0 && w * h <= MAX_PIXELS =>
        {
            (w, h)
        }
        _ => (16, 16),
    };
    let mut decoder = MjpegDecoder::new(width as u32, height as u32);
    let mut i420 = vec![0xAA; 7];
    // Twice with the same decoder: the scratch buffers are reused from frame to frame.
    for _ in 0..2 {
        match decoder.decode(data, &mut i420) {
            Ok(()) => {
                assert_eq!(i420.len(), width * height * 3 / 2);
                let (luma, chroma) = i420.split_at(width * height);
                assert!(
                    luma.iter().all(|v| (16..=235).contains(v)),
                    "luma out of range"
                );
                assert!(
                    chroma.iter().all(|v| (16..=240).contains(v)),
                    "chroma out of range"
                );
            }
            Err(why) => assert!(!why.is_empty()),
        }
    }
});

/// Width and height from the first start-of-frame marker (SOF0 to SOF15, not DHT/JPG/DAC).
fn stated_size(jpeg: &[u8]) -> Option<(usize, usize)> {
    let at = jpeg.windows(2).position(|w| {
        w[0] == 0xFF && matches!(w[1], 0xC0..=0xCF) && !matches!(w[1], 0xC4 | 0xC8 | 0xCC)
    })?;
    // FF Cn, length (2), precision (1), height (2), width (2).
    let sof = jpeg.get(at + 5..at + 9)?;
    let height = usize::from(u16::from_be_bytes([sof[0], sof[1]]));
    let width = usize::from(u16::from_be_bytes([sof[2], sof[3]]));
    Some((width, height))
}
