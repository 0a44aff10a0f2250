//! The test pattern: colour bars, a moving square and the stamp.
//!
//! The picture is built so that each part of the pipeline can be checked from the far end:
//!
//! - the top two thirds are the eight 75 % SMPTE colour bars, static, so a viewer can compare
//!   colours at fixed points ([`bar_probe_points`]) and catch swapped planes or a wrong
//!   colour matrix;
//! - a dark grey band below holds a white square that moves a few pixels per frame and wraps
//!   around, so a frozen stream is visible at a glance, over fresh luma noise ("snow") every
//!   frame, so the encoder spends its configured bitrate as it would on a camera's picture
//!   and the cost of sending to each viewer is measured at a realistic rate;
//! - the bottom band holds the [stamp](super::stamp) with the frame number and wall clock.
//!
//! Colours are BT.601 limited ("TV") range, which is what browsers assume for H.264 without
//! a full-range flag in the VUI.
//!
//! Rendering has to cost next to nothing next to the encoder, so everything static is
//! converted to I420 once; a frame is a copy of that plus the square and the stamp, written
//! into the caller's buffer.

use std::time::{SystemTime, UNIX_EPOCH};

use super::pace::Pacer;
use super::stamp::{Stamp, StampLayout, WHITE_LUMA, draw_stamp, stamp_layout};
use crate::{HalError, PixelFormat, VideoFormat, VideoFrame, VideoSource};

/// The eight 75 % colour bars in SMPTE order, as RGB: white, yellow, cyan, green, magenta,
/// red, blue, black.
pub const BARS: [[u8; 3]; 8] = [
    [191, 191, 191],
    [191, 191, 0],
    [0, 191, 191],
    [0, 191, 0],
    [191, 0, 191],
    [191, 0, 0],
    [0, 0, 191],
    [0, 0, 0],
];

/// Background of the band the square moves in.
const MOTION_BACKGROUND: [u8; 3] = [48, 48, 48];
/// Background of the stamp band.
const STAMP_BACKGROUND: [u8; 3] = [0, 0, 0];

/// Converts an RGB colour to BT.601 limited-range Y, Cb, Cr.
pub fn rgb_to_yuv(rgb: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = rgb.map(f32::from);
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as u8)
}

/// Height of the colour bar area: two thirds of the picture, rounded down to whole
/// macroblock rows (or to an even number of lines in tiny pictures).
pub(crate) fn bars_height(height: u32) -> u32 {
    let bars = (u64::from(height) * 2 / 3) as u32;
    if bars >= 16 {
        bars / 16 * 16
    } else {
        bars / 2 * 2
    }
}

/// Index of the bar at column `x`: each is `width / 8` wide, the last takes the remainder.
fn bar_index(x: u32, width: u32) -> usize {
    let bar_width = (width / 8).max(1);
    (x / bar_width).min(7) as usize
}

/// A pixel in the middle of each colour bar, in [`BARS`] order: `(x, y)`.
///
/// The y is the middle of the bar area, the x the middle of the bar.
pub fn bar_probe_points(width: u32, height: u32) -> [(u32, u32); 8] {
    let bar_width = width / 8;
    let y = bars_height(height) / 2;
    std::array::from_fn(|i| {
        let left = i as u32 * bar_width;
        let right = if i == 7 { width } else { left + bar_width };
        ((left + right) / 2, y)
    })
}

/// Where the parts of the picture are; fixed for a given size.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    width: u32,
    height: u32,
    /// Lines `0..bars` are colour bars.
    bars: u32,
    /// Lines `bars..stamp_band` are the motion band; lines from here on the stamp band.
    stamp_band: u32,
    /// The stamp grid, if the picture is big enough for one.
    stamp: Option<StampLayout>,
    /// Side of the moving square (even; 0 if there is no room).
    square: u32,
    /// Top line of the moving square (even).
    square_top: u32,
    /// Pixels the square moves per frame (even).
    step: u32,
}

impl Geometry {
    fn new(width: u32, height: u32) -> Geometry {
        let bars = bars_height(height);
        let stamp = stamp_layout(width, height);
        // A quiet zone of half a block above the grid, on an even line for chroma.
        let stamp_band = match stamp {
            Some(layout) => (layout.top.saturating_sub(layout.block / 2) / 2 * 2).max(bars),
            None => height,
        };
        let motion = stamp_band - bars;
        let square = (motion / 2).min(width) / 2 * 2;
        let square_top = bars + (motion - square) / 4 * 2;
        let step = (width / 160 / 2 * 2).max(2);
        Geometry {
            width,
            height,
            bars,
            stamp_band,
            stamp,
            square,
            square_top,
            step,
        }
    }

    /// Colour of the static background at `(x, y)`.
    fn background(&self, x: u32, y: u32) -> [u8; 3] {
        if y < self.bars {
            BARS[bar_index(x, self.width)]
        } else if y < self.stamp_band {
            MOTION_BACKGROUND
        } else {
            STAMP_BACKGROUND
        }
    }

    /// The static background as an I420 frame; chroma is the mean of each 2x2 block.
    fn render_background(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = (w / 2, h / 2);
        let mut data = vec![
            0;
            PixelFormat::I420
                .frame_len(self.width, self.height)
                .unwrap_or_default()
        ];
        let (luma, chroma) = data.split_at_mut(w * h);
        let (cb, cr) = chroma.split_at_mut(cw * ch);
        for y in 0..h {
            for x in 0..w {
                luma[y * w + x] = rgb_to_yuv(self.background(x as u32, y as u32))[0];
            }
        }
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut u, mut v) = (0u32, 0u32);
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let x = (2 * cx + dx) as u32;
                    let y = (2 * cy + dy) as u32;
                    let [_, pu, pv] = rgb_to_yuv(self.background(x, y));
                    u += u32::from(pu);
                    v += u32::from(pv);
                }
                cb[cy * cw + cx] = ((u + 2) / 4) as u8;
                cr[cy * cw + cx] = ((v + 2) / 4) as u8;
            }
        }
        data
    }
}

/// Replaces the luma of the motion band with noise of ±16 around its grey, different in
/// every frame (xorshift64, seeded by the frame number: cheap and reproducible).
fn snow(luma: &mut [u8], geometry: &Geometry, sequence: u64) {
    let stride = geometry.width as usize;
    let start = (geometry.bars as usize * stride).min(luma.len());
    let end = (geometry.stamp_band as usize * stride).min(luma.len());
    let grey = rgb_to_yuv(MOTION_BACKGROUND)[0];
    let mut state = sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in luma[start..end].chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        for (pixel, byte) in chunk.iter_mut().zip(state.to_le_bytes()) {
            *pixel = grey.saturating_add(byte & 31).saturating_sub(16);
        }
    }
}

/// Sets the luma of the rectangle at `(x, y)`, `width` x `height`, clipped to the plane.
fn fill_luma(plane: &mut [u8], geometry: &Geometry, rect: (u32, u32, u32, u32), value: u8) {
    let (x, y, width, height) = rect;
    let stride = geometry.width as usize;
    let x0 = x.min(geometry.width) as usize;
    let x1 = x.saturating_add(width).min(geometry.width) as usize;
    let y1 = y.saturating_add(height).min(geometry.height);
    for line in y..y1 {
        let start = line as usize * stride;
        if let Some(pixels) = plane.get_mut(start + x0..start + x1) {
            pixels.fill(value);
        }
    }
}

/// A synthetic camera: colour bars, a moving square and a machine-readable stamp, in I420,
/// paced in real time.
///
/// Frame `n` is due `n / fps` seconds after the first read. A reader that falls behind gets
/// the latest frame and a gap in [`VideoFrame::sequence`], as with a real camera.
#[derive(Debug, Clone)]
pub struct TestPattern {
    format: VideoFormat,
    geometry: Geometry,
    /// The static part of every frame, in I420.
    background: Vec<u8>,
    pacer: Pacer,
}

impl TestPattern {
    /// A pattern of `width` x `height` pixels (both even, validated by the caller) at `fps`
    /// frames per second (0 counts as 1). Renders the static background once.
    pub fn new(width: u32, height: u32, fps: u32) -> TestPattern {
        let fps = fps.max(1);
        let geometry = Geometry::new(width, height);
        TestPattern {
            format: VideoFormat {
                pixel: PixelFormat::I420,
                width,
                height,
                fps,
            },
            background: geometry.render_background(),
            geometry,
            pacer: Pacer::new(1, u64::from(fps)),
        }
    }

    /// Renders frame `sequence`, stamped with `wallclock_ms`, into `data` (resized to the
    /// frame length; its allocation is reused). Depends on nothing but its arguments.
    pub fn render(&self, sequence: u64, wallclock_ms: u64, data: &mut Vec<u8>) {
        data.clear();
        data.extend_from_slice(&self.background);
        let g = &self.geometry;
        let luma_len = (g.width as usize * g.height as usize).min(data.len());
        let luma = &mut data[..luma_len];

        snow(luma, g, sequence);

        // The square sits on a neutral background and is neutral itself: luma only.
        if g.square > 0 && g.width > 0 {
            let width = u64::from(g.width);
            let x = ((sequence % width) * u64::from(g.step) % width) as u32;
            let white = WHITE_LUMA;
            fill_luma(luma, g, (x, g.square_top, g.square, g.square), white);
            if x + g.square > g.width {
                let wrapped = x + g.square - g.width;
                fill_luma(luma, g, (0, g.square_top, wrapped, g.square), white);
            }
        }

        if let Some(layout) = &g.stamp {
            let stamp = Stamp {
                sequence: sequence as u32,
                wallclock_ms,
            };
            draw_stamp(luma, g.width as usize, layout, stamp);
        }
    }
}

/// Milliseconds since the Unix epoch now; 0 if the clock is set before 1970.
fn wallclock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl VideoSource for TestPattern {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn describe(&self) -> String {
        let VideoFormat {
            width, height, fps, ..
        } = self.format;
        format!("test pattern {width}x{height}@{fps}")
    }

    fn read_frame(&mut self, frame: &mut VideoFrame) -> Result<(), HalError> {
        let (sequence, captured) = self.pacer.wait();
        self.render(sequence, wallclock_ms(), &mut frame.data);
        frame.sequence = sequence;
        frame.captured = captured;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snow_changes_every_frame_and_stays_grey() {
        let pattern = TestPattern::new(320, 240, 30);
        let g = &pattern.geometry;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        pattern.render(1, 0, &mut a);
        pattern.render(2, 0, &mut b);
        // A line of the band above the square: only snow there.
        let line = g.bars as usize * 320;
        let (la, lb) = (&a[line..line + 320], &b[line..line + 320]);
        let differing = la.iter().zip(lb).filter(|(x, y)| x != y).count();
        assert!(differing > 280, "only {differing} of 320 pixels changed");
        let grey = rgb_to_yuv(MOTION_BACKGROUND)[0];
        assert!(la.iter().all(|&y| y.abs_diff(grey) <= 16));
        // Same frame number, same picture: reproducible.
        pattern.render(1, 0, &mut b);
        assert_eq!(a, b);
    }

    /// BT.601 limited-range Y, Cb, Cr back to RGB.
    fn yuv_to_rgb([y, u, v]: [u8; 3]) -> [u8; 3] {
        let y = (f32::from(y) - 16.0) * 255.0 / 219.0;
        let u = (f32::from(u) - 128.0) * 255.0 / 224.0;
        let v = (f32::from(v) - 128.0) * 255.0 / 224.0;
        let r = y + 1.402 * v;
        let g = y - 0.344_136 * u - 0.714_136 * v;
        let b = y + 1.772 * u;
        [r, g, b].map(|c| c.round().clamp(0.0, 255.0) as u8)
    }

    /// Y, Cb, Cr of pixel `(x, y)` of an I420 frame.
    fn pixel(data: &[u8], width: u32, height: u32, x: u32, y: u32) -> [u8; 3] {
        let (w, h) = (width as usize, height as usize);
        let (x, y) = (x as usize, y as usize);
        let chroma = (y / 2) * (w / 2) + x / 2;
        [
            data[y * w + x],
            data[w * h + chroma],
            data[w * h + (w / 2) * (h / 2) + chroma],
        ]
    }

    fn render(pattern: &TestPattern, sequence: u64) -> Vec<u8> {
        let mut data = Vec::new();
        pattern.render(sequence, 1_700_000_000_000, &mut data);
        data
    }

    #[test]
    fn stamp_cells_use_the_backgrounds_luma_levels() {
        assert_eq!(
            rgb_to_yuv(STAMP_BACKGROUND)[0],
            super::super::stamp::BLACK_LUMA
        );
        assert_eq!(rgb_to_yuv([255, 255, 255])[0], WHITE_LUMA);
    }

    #[test]
    fn colour_conversion_hits_the_limited_range_corners() {
        assert_eq!(rgb_to_yuv([0, 0, 0]), [16, 128, 128]);
        assert_eq!(rgb_to_yuv([255, 255, 255]), [235, 128, 128]);
        assert_eq!(rgb_to_yuv([255, 0, 0]), [81, 90, 240]);
        assert_eq!(rgb_to_yuv([0, 0, 255]), [41, 240, 110]);
    }

    #[test]
    fn bars_read_back_at_the_probe_points() {
        for (width, height) in [(1280, 720), (640, 480), (320, 240), (202, 150)] {
            let pattern = TestPattern::new(width, height, 30);
            let data = render(&pattern, 17);
            let probes = bar_probe_points(width, height);
            for (bar, &(x, y)) in probes.iter().enumerate() {
                let rgb = yuv_to_rgb(pixel(&data, width, height, x, y));
                for channel in 0..3 {
                    let diff = i32::from(rgb[channel]) - i32::from(BARS[bar][channel]);
                    assert!(
                        diff.abs() <= 6,
                        "{width}x{height} bar {bar} at ({x}, {y}): got {rgb:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn probe_points_are_in_the_middle_of_the_bars() {
        let probes = bar_probe_points(1280, 720);
        assert_eq!(probes[0], (80, 240));
        assert_eq!(probes[7], (1200, 240));
        // 650 / 8 = 81: the last bar is 83 wide.
        assert_eq!(bar_probe_points(650, 480)[7], (567 + 83 / 2, 160));
    }

    /// X of the left edge of the square in the motion band: the first white pixel after a
    /// non-white one, scanning the square's middle line.
    fn square_x(pattern: &TestPattern, data: &[u8]) -> Option<u32> {
        let g = &pattern.geometry;
        let line = (g.square_top + g.square / 2) as usize * g.width as usize;
        let row = &data[line..line + g.width as usize];
        (0..g.width as usize)
            .find(|&x| row[x] == WHITE_LUMA && row[(x + row.len() - 1) % row.len()] != WHITE_LUMA)
            .map(|x| x as u32)
    }

    #[test]
    fn square_moves_and_wraps_while_the_bars_stay() {
        let (width, height) = (640, 480);
        let pattern = TestPattern::new(width, height, 30);
        let bars_len = (bars_height(height) * width) as usize;
        let first = render(&pattern, 0);
        let second = render(&pattern, 1);
        assert_eq!(square_x(&pattern, &first), Some(0));
        assert_eq!(square_x(&pattern, &second), Some(pattern.geometry.step));
        assert_eq!(first[..bars_len], second[..bars_len]);

        // Near the right edge the square continues at the left.
        let step = pattern.geometry.step;
        let late = render(&pattern, u64::from((width - step) / step));
        let line = (pattern.geometry.square_top + 2) * width;
        assert_eq!(late[line as usize], WHITE_LUMA);
        assert_eq!(late[(line + width - 1) as usize], WHITE_LUMA);
    }

    #[test]
    fn render_reuses_the_buffer_and_has_the_frame_length() {
        let pattern = TestPattern::new(320, 240, 30);
        let mut data = Vec::with_capacity(PixelFormat::I420.frame_len(320, 240).unwrap());
        let before = data.as_ptr();
        pattern.render(3, 0, &mut data);
        assert_eq!(data.len(), PixelFormat::I420.frame_len(320, 240).unwrap());
        assert_eq!(data.as_ptr(), before);
    }

    #[test]
    fn odd_and_tiny_sizes_render_without_panicking() {
        for (width, height) in [(2, 2), (8, 6), (64, 48), (100, 20), (20, 400), (330, 250)] {
            let pattern = TestPattern::new(width, height, 30);
            for sequence in [0, 1, 1_000_001] {
                let data = render(&pattern, sequence);
                assert_eq!(
                    data.len(),
                    PixelFormat::I420.frame_len(width, height).unwrap()
                );
            }
        }
    }

    #[test]
    fn reads_paced_frames_with_the_format_length_and_stamp() {
        let mut pattern = TestPattern::new(320, 240, 1000);
        assert_eq!(pattern.describe(), "test pattern 320x240@1000");
        assert_eq!(pattern.format().pixel, PixelFormat::I420);
        let mut frame = VideoFrame::new();
        let mut last: Option<(u64, std::time::Instant)> = None;
        for _ in 0..5 {
            pattern
                .read_frame(&mut frame)
                .expect("synthetic reads cannot fail");
            assert_eq!(
                frame.data.len(),
                PixelFormat::I420.frame_len(320, 240).unwrap()
            );
            let stamp = super::super::read_stamp(&frame.data, 320, 320, 240);
            assert_eq!(stamp.map(|s| u64::from(s.sequence)), Some(frame.sequence));
            if let Some((sequence, captured)) = last {
                assert!(frame.sequence > sequence);
                assert!(frame.captured >= captured);
            }
            last = Some((frame.sequence, frame.captured));
        }
    }
}
