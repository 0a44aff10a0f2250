//! The machine-readable stamp at the bottom of the test pattern.
//!
//! Every frame of the [`TestPattern`](super::TestPattern) carries its frame number and the wall
//! clock at capture, drawn as a grid of black and white blocks. A viewer on the same machine
//! reads the stamp off the decoded picture and subtracts the wall clock from its own to get the
//! glass-to-glass latency; the frame numbers reveal dropped and repeated frames.
//!
//! The stamp has to survive H.264 at 1–2 Mbit/s and browser scaling, so it uses few, large,
//! saturated blocks aligned to 16x16 macroblocks where the picture allows, reads only the
//! middle of each block (edges are where compression and scaling smear), and carries fixed
//! sync blocks and a CRC-16 so that a damaged stamp is rejected rather than misread.
//!
//! # Layout
//!
//! Everything below is integer arithmetic with division rounding down; `W` and `H` are the
//! picture width and height at which the stamp was drawn (the source resolution).
//!
//! The grid has 3 rows of 36 square cells of side `B` pixels, placed as follows:
//!
//! ```text
//! bars   = 2H/3, rounded down to a multiple of 16 if >= 16, else to a multiple of 2
//! m      = min(W / 36, 2 * (H - bars) / 7)
//! B      = m rounded down to a multiple of 16 if m >= 16,
//!          else m rounded down to a multiple of 2 if m >= 2,
//!          else the picture has no stamp
//! a      = 16 if B is a multiple of 16, else 2          (alignment)
//! left   = ((W - 36B) / 2) rounded down to a multiple of a
//! top    = (H - 3B - B/2) rounded down to a multiple of a
//! cell (row r, column c) covers x in [left + cB, left + (c+1)B), y in [top + rB, top + (r+1)B)
//! ```
//!
//! For example 1280x720: B=32, left=64, top=608; 640x480: B=16, left=32, top=416;
//! 640x360: B=16, left=32, top=304; 320x240: B=8, left=16, top=212.
//!
//! Each cell is white (luma 235, the top of the limited range) or black (luma 16). The stamp
//! band around the grid is black. In every row, columns 0 and 35 are white and columns 1 and 34
//! are black (sync); columns 2..=33 hold 32 payload bits, white = 1. Row `r` column `c`
//! carries payload bit `32r + (c - 2)`, bit 0 being the most significant.
//!
//! The 96-bit payload is, most significant first:
//!
//! | bits  | field                                                  |
//! |-------|--------------------------------------------------------|
//! | 0–31  | `sequence`, the frame number (u32, wraps)              |
//! | 32–79 | `wallclock_ms`, ms since the Unix epoch, low 48 bits   |
//! | 80–95 | CRC-16 of the 10 bytes `sequence` (4, big-endian) followed by `wallclock_ms` (6, big-endian) |
//!
//! So row 0 is the sequence, row 1 the upper 32 bits of the wall clock and row 2 its lower 16
//! bits followed by the CRC. The CRC is CRC-16/CCITT-FALSE: polynomial 0x1021, initial value
//! 0xFFFF, bits fed most significant first, no reflection, no final XOR (the check value of
//! the ASCII bytes `123456789` is 0x29B1).
//!
//! # Reading
//!
//! For each cell take the mean luma of its centre square, `[x0 + B/4, x0 + B/4 + max(B/2, 1))`
//! horizontally and likewise vertically, where `(x0, y0)` is the cell's top-left corner. A mean
//! of 128 or more is white. Reject the stamp unless all 12 sync cells read as expected and the
//! CRC matches. A reader of a scaled picture (a browser canvas, or WebRTC lowering the
//! resolution) computes the layout for the source size and multiplies every coordinate by
//! picture size / source size; see [`read_stamp_scaled`]. On RGB pixels, the mean of R, G
//! and B works as luma, with the same threshold.

use super::pattern::bars_height;

/// Rows of cells in the stamp grid.
pub const STAMP_ROWS: u32 = 3;
/// Cells per row of the stamp grid: 2 sync, 32 payload bits, 2 sync.
pub const STAMP_COLUMNS: u32 = 36;
/// Payload bits in a stamp, CRC included.
pub const STAMP_BITS: usize = 96;

/// Payload bits per row.
const BITS_PER_ROW: u32 = 32;
/// Column of the first payload bit in a row.
const FIRST_BIT_COLUMN: u32 = 2;
/// Sync cells of every row: (column, is white).
const SYNC: [(u32, bool); 4] = [(0, true), (1, false), (34, false), (35, true)];
/// Luma of a white cell (limited range).
pub(crate) const WHITE_LUMA: u8 = 235;
/// Luma of a black cell (limited range).
pub(crate) const BLACK_LUMA: u8 = 16;
/// Cells whose centre mean is at least this are white.
const THRESHOLD: u32 = 128;
/// The wall clock carries this many bits.
const WALLCLOCK_MASK: u64 = (1 << 48) - 1;

/// What a stamp says about its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Frame number (the low 32 bits of [`VideoFrame::sequence`](crate::VideoFrame)).
    pub sequence: u32,
    /// Milliseconds since the Unix epoch at capture; only the low 48 bits are carried.
    pub wallclock_ms: u64,
}

impl Stamp {
    /// The 96-bit payload: sequence, wall clock, CRC; bit 0 of the layout is bit 95 here.
    fn payload(self) -> u128 {
        let wallclock = self.wallclock_ms & WALLCLOCK_MASK;
        let crc = crc16(&message(self.sequence, wallclock));
        (u128::from(self.sequence) << 64) | (u128::from(wallclock) << 16) | u128::from(crc)
    }

    /// The stamp a payload carries, if its CRC matches.
    fn from_payload(payload: u128) -> Option<Stamp> {
        let sequence = (payload >> 64) as u32;
        let wallclock_ms = (payload >> 16) as u64 & WALLCLOCK_MASK;
        let crc = payload as u16;
        (crc16(&message(sequence, wallclock_ms)) == crc).then_some(Stamp {
            sequence,
            wallclock_ms,
        })
    }
}

/// The bytes the CRC covers: sequence (4) and wall clock (6), big-endian.
fn message(sequence: u32, wallclock_ms: u64) -> [u8; 10] {
    let mut bytes = [0; 10];
    bytes[..4].copy_from_slice(&sequence.to_be_bytes());
    bytes[4..].copy_from_slice(&wallclock_ms.to_be_bytes()[2..]);
    bytes
}

/// CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF, unreflected, no final XOR).
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Where the stamp grid sits in a picture; see the module docs for how it is derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampLayout {
    /// Side of one square cell, in pixels.
    pub block: u32,
    /// X of the left edge of column 0.
    pub left: u32,
    /// Y of the top edge of row 0.
    pub top: u32,
}

impl StampLayout {
    /// Top-left pixel of the cell at `row`, `column`.
    pub fn cell_origin(&self, row: u32, column: u32) -> (u32, u32) {
        (self.left + column * self.block, self.top + row * self.block)
    }

    /// Centre pixel of the cell at `row`, `column`.
    pub fn cell_centre(&self, row: u32, column: u32) -> (u32, u32) {
        let (x, y) = self.cell_origin(row, column);
        (x + self.block / 2, y + self.block / 2)
    }

    /// Row and column of payload bit `bit` (0 = most significant, below [`STAMP_BITS`]).
    pub fn bit_cell(bit: usize) -> (u32, u32) {
        let bit = bit as u32;
        (bit / BITS_PER_ROW, FIRST_BIT_COLUMN + bit % BITS_PER_ROW)
    }

    /// Centre pixel of the cell carrying payload bit `bit`.
    pub fn bit_centre(&self, bit: usize) -> (u32, u32) {
        let (row, column) = Self::bit_cell(bit);
        self.cell_centre(row, column)
    }

    /// The square a reader averages for the cell at `row`, `column`: `(x0, y0, x1, y1)`,
    /// end-exclusive; the middle half of the cell.
    pub fn sample_area(&self, row: u32, column: u32) -> (u32, u32, u32, u32) {
        let (x, y) = self.cell_origin(row, column);
        let inset = self.block / 4;
        let side = (self.block / 2).max(1);
        (x + inset, y + inset, x + inset + side, y + inset + side)
    }

    /// Whether the cell at `row`, `column` is white for a stamp with this 96-bit `payload`.
    fn cell_is_white(row: u32, column: u32, payload: u128) -> bool {
        if let Some(&(_, white)) = SYNC.iter().find(|(c, _)| *c == column) {
            return white;
        }
        let bit = row * BITS_PER_ROW + (column - FIRST_BIT_COLUMN);
        (payload >> (STAMP_BITS as u32 - 1 - bit)) & 1 == 1
    }
}

/// Where the stamp goes in a `width` x `height` picture, or `None` if the picture is too
/// small to carry one (under 72 pixels wide or 20 high).
///
/// Blocks come out at 8 pixels or more from 288x160 up; smaller pictures get smaller blocks,
/// which still read back from uncompressed frames but are unlikely to survive an encoder.
pub fn stamp_layout(width: u32, height: u32) -> Option<StampLayout> {
    let below_bars = height - bars_height(height);
    let fit = (width / STAMP_COLUMNS).min(2 * below_bars / (2 * STAMP_ROWS + 1));
    let block = if fit >= 16 {
        fit / 16 * 16
    } else if fit >= 2 {
        fit / 2 * 2
    } else {
        return None;
    };
    let align = if block % 16 == 0 { 16 } else { 2 };
    let left = (width - STAMP_COLUMNS * block) / 2 / align * align;
    let top = (height - STAMP_ROWS * block - block / 2) / align * align;
    Some(StampLayout { block, left, top })
}

/// Draws `stamp` into the Y plane `luma` (rows `stride` bytes apart) at `layout`.
///
/// Only luma is written: the pattern's stamp band is black with neutral chroma, and the cells
/// are aligned to 2x2 chroma blocks, so chroma needs no change.
pub(crate) fn draw_stamp(luma: &mut [u8], stride: usize, layout: &StampLayout, stamp: Stamp) {
    let payload = stamp.payload();
    let block = layout.block as usize;
    for row in 0..STAMP_ROWS {
        for column in 0..STAMP_COLUMNS {
            let value = if StampLayout::cell_is_white(row, column, payload) {
                WHITE_LUMA
            } else {
                BLACK_LUMA
            };
            let (x, y) = layout.cell_origin(row, column);
            let (x, y) = (x as usize, y as usize);
            for line in y..y + block {
                let start = line * stride + x;
                if let Some(pixels) = luma.get_mut(start..start + block) {
                    pixels.fill(value);
                }
            }
        }
    }
}

/// Reads the stamp from the Y plane of a decoded `width` x `height` picture whose rows are
/// `stride` bytes apart. `None` if the picture has no readable stamp: too small, damaged,
/// or not a test pattern at all.
pub fn read_stamp(luma: &[u8], stride: usize, width: u32, height: u32) -> Option<Stamp> {
    read_stamp_scaled(luma, stride, width, height, width, height)
}

/// Like [`read_stamp`], for a picture the source drew at `source_width` x `source_height`
/// and something (the encoder's resolution adaptation, a browser) scaled to `width` x `height`.
pub fn read_stamp_scaled(
    luma: &[u8],
    stride: usize,
    width: u32,
    height: u32,
    source_width: u32,
    source_height: u32,
) -> Option<Stamp> {
    let layout = stamp_layout(source_width, source_height)?;
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || stride < w || luma.len() < (h - 1) * stride + w {
        return None;
    }
    // Maps a source coordinate to the picture, rounding down.
    let map = |value: u32, picture: u32, source: u32| -> usize {
        (u64::from(value) * u64::from(picture) / u64::from(source)) as usize
    };
    let is_white = |row: u32, column: u32| -> bool {
        let (x0, y0, x1, y1) = layout.sample_area(row, column);
        let (x0, x1) = (map(x0, width, source_width), map(x1, width, source_width));
        let (y0, y1) = (
            map(y0, height, source_height),
            map(y1, height, source_height),
        );
        let x1 = x1.max(x0 + 1).min(w);
        let y1 = y1.max(y0 + 1).min(h);
        let (mut sum, mut count) = (0u64, 0u64);
        for y in y0..y1 {
            let start = y * stride;
            for &pixel in &luma[start + x0.min(x1)..start + x1] {
                sum += u64::from(pixel);
                count += 1;
            }
        }
        count > 0 && sum >= u64::from(THRESHOLD) * count
    };

    for row in 0..STAMP_ROWS {
        if SYNC
            .iter()
            .any(|&(column, white)| is_white(row, column) != white)
        {
            return None;
        }
    }
    let mut payload = 0u128;
    for bit in 0..STAMP_BITS {
        let (row, column) = StampLayout::bit_cell(bit);
        payload = (payload << 1) | u128::from(is_white(row, column));
    }
    Stamp::from_payload(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::TestPattern;

    const WALLCLOCK: u64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z

    /// A rendered I420 frame and its dimensions.
    fn frame(width: u32, height: u32, sequence: u64, wallclock_ms: u64) -> Vec<u8> {
        let pattern = TestPattern::new(width, height, 30);
        let mut data = Vec::new();
        pattern.render(sequence, wallclock_ms, &mut data);
        data
    }

    fn luma(data: &[u8], width: u32, height: u32) -> Vec<u8> {
        data[..(width * height) as usize].to_vec()
    }

    /// xorshift32: deterministic noise without a dependency.
    struct Noise(u32);

    impl Noise {
        fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }

        /// Uniform in -25..=25.
        fn offset(&mut self) -> i32 {
            (self.next() % 51) as i32 - 25
        }
    }

    /// One pass of a 3x3 box blur, edges clamped.
    fn box_blur(plane: &[u8], width: u32, height: u32) -> Vec<u8> {
        let (w, h) = (width as i64, height as i64);
        let mut out = vec![0; plane.len()];
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u32;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let xx = (x + dx).clamp(0, w - 1);
                        let yy = (y + dy).clamp(0, h - 1);
                        sum += u32::from(plane[(yy * w + xx) as usize]);
                    }
                }
                out[(y * w + x) as usize] = (sum / 9) as u8;
            }
        }
        out
    }

    const SIZES: [(u32, u32); 3] = [(1280, 720), (640, 480), (320, 240)];

    #[test]
    fn crc_matches_the_published_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn layouts_of_common_sizes_match_the_documented_examples() {
        let layout = |w, h| stamp_layout(w, h).map(|l| (l.block, l.left, l.top));
        assert_eq!(layout(1280, 720), Some((32, 64, 608)));
        assert_eq!(layout(640, 480), Some((16, 32, 416)));
        assert_eq!(layout(640, 360), Some((16, 32, 304)));
        assert_eq!(layout(320, 240), Some((8, 16, 212)));
        assert_eq!(layout(1920, 1080), Some((48, 96, 912)));
        assert_eq!(layout(64, 48), None);
        assert_eq!(layout(2, 2), None);
    }

    #[test]
    fn grid_fits_inside_the_picture_below_the_bars() {
        for width in (2..=1000).step_by(14) {
            for height in (2..=800).step_by(18) {
                let Some(layout) = stamp_layout(width, height) else {
                    continue;
                };
                let (right, bottom) = layout.cell_origin(STAMP_ROWS, STAMP_COLUMNS);
                assert!(right <= width && bottom <= height, "{width}x{height}");
                assert!(layout.top >= bars_height(height), "{width}x{height}");
            }
        }
    }

    #[test]
    fn stamp_reads_back_at_common_sizes() {
        for (width, height) in SIZES {
            for (sequence, wallclock_ms) in [(0, 0), (1, WALLCLOCK), (123_456, WALLCLOCK + 17)] {
                let data = frame(width, height, sequence, wallclock_ms);
                let stamp = read_stamp(&data, width as usize, width, height);
                let expected = Stamp {
                    sequence: sequence as u32,
                    wallclock_ms,
                };
                assert_eq!(stamp, Some(expected), "{width}x{height}");
            }
        }
    }

    #[test]
    fn extreme_values_survive() {
        let data = frame(640, 480, u64::from(u32::MAX), WALLCLOCK_MASK);
        let stamp = read_stamp(&data, 640, 640, 480);
        assert_eq!(
            stamp,
            Some(Stamp {
                sequence: u32::MAX,
                wallclock_ms: WALLCLOCK_MASK
            })
        );
    }

    #[test]
    fn stamp_reads_with_row_padding() {
        let (width, height) = (320u32, 240u32);
        let plane = luma(&frame(width, height, 77, WALLCLOCK), width, height);
        let stride = width as usize + 32;
        let mut padded = vec![0; stride * height as usize];
        for (row, src) in padded.chunks_mut(stride).zip(plane.chunks(width as usize)) {
            row[..width as usize].copy_from_slice(src);
        }
        let stamp = read_stamp(&padded, stride, width, height);
        assert_eq!(stamp.map(|s| s.sequence), Some(77));
    }

    #[test]
    fn stamp_survives_noise() {
        let mut noise = Noise(0x1234_5678);
        for (width, height) in SIZES {
            let mut plane = luma(&frame(width, height, 4242, WALLCLOCK), width, height);
            for pixel in &mut plane {
                *pixel = (i32::from(*pixel) + noise.offset()).clamp(0, 255) as u8;
            }
            let stamp = read_stamp(&plane, width as usize, width, height);
            assert_eq!(
                stamp,
                Some(Stamp {
                    sequence: 4242,
                    wallclock_ms: WALLCLOCK
                }),
                "{width}x{height}"
            );
        }
    }

    #[test]
    fn stamp_survives_blur() {
        for (width, height) in SIZES {
            let plane = luma(&frame(width, height, 99, WALLCLOCK), width, height);
            let blurred = box_blur(&box_blur(&plane, width, height), width, height);
            let stamp = read_stamp(&blurred, width as usize, width, height);
            assert_eq!(stamp.map(|s| s.sequence), Some(99), "{width}x{height}");
        }
    }

    #[test]
    fn stamp_survives_noise_then_blur() {
        let mut noise = Noise(0x0bad_cafe);
        let (width, height) = (320, 240);
        let mut plane = luma(&frame(width, height, 5, WALLCLOCK), width, height);
        for pixel in &mut plane {
            *pixel = (i32::from(*pixel) + noise.offset()).clamp(0, 255) as u8;
        }
        let blurred = box_blur(&box_blur(&plane, width, height), width, height);
        let stamp = read_stamp(&blurred, width as usize, width, height);
        assert_eq!(stamp.map(|s| s.wallclock_ms), Some(WALLCLOCK));
    }

    #[test]
    fn stamp_reads_from_a_downscaled_picture() {
        // 1280x720 halved (2x2 box average), as WebRTC does when bandwidth drops.
        let (width, height) = (1280u32, 720u32);
        let plane = luma(&frame(width, height, 31337, WALLCLOCK), width, height);
        let (half_w, half_h) = (width / 2, height / 2);
        let mut half = vec![0u8; (half_w * half_h) as usize];
        for y in 0..half_h as usize {
            for x in 0..half_w as usize {
                let at = |dx: usize, dy: usize| {
                    u32::from(plane[(2 * y + dy) * width as usize + 2 * x + dx])
                };
                half[y * half_w as usize + x] =
                    ((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1)) / 4) as u8;
            }
        }
        let stamp = read_stamp_scaled(&half, half_w as usize, half_w, half_h, width, height);
        assert_eq!(stamp.map(|s| s.sequence), Some(31337));
    }

    /// Inverts the luma of one whole cell.
    fn flip_cell(plane: &mut [u8], width: u32, layout: &StampLayout, row: u32, column: u32) {
        let (x, y) = layout.cell_origin(row, column);
        for line in y..y + layout.block {
            let start = (line * width + x) as usize;
            for pixel in &mut plane[start..start + layout.block as usize] {
                *pixel = if *pixel >= 128 {
                    BLACK_LUMA
                } else {
                    WHITE_LUMA
                };
            }
        }
    }

    #[test]
    fn any_single_flipped_block_is_rejected() {
        let (width, height) = (640, 480);
        let layout = stamp_layout(width, height).expect("640x480 has a stamp");
        let plane = luma(&frame(width, height, 1000, WALLCLOCK), width, height);
        assert!(read_stamp(&plane, width as usize, width, height).is_some());
        for row in 0..STAMP_ROWS {
            for column in 0..STAMP_COLUMNS {
                let mut damaged = plane.clone();
                flip_cell(&mut damaged, width, &layout, row, column);
                let stamp = read_stamp(&damaged, width as usize, width, height);
                assert_eq!(stamp, None, "row {row} column {column}");
            }
        }
    }

    #[test]
    fn pictures_without_a_stamp_are_rejected() {
        let (width, height) = (640u32, 480u32);
        for value in [0u8, 16, 128, 235, 255] {
            let plane = vec![value; (width * height) as usize];
            assert_eq!(read_stamp(&plane, width as usize, width, height), None);
        }
        // Too short a buffer, a stride below the width, a tiny picture: no panic, no stamp.
        assert_eq!(read_stamp(&[0; 100], 640, 640, 480), None);
        assert_eq!(read_stamp(&[0; 640 * 480], 320, 640, 480), None);
        assert_eq!(read_stamp(&[0; 4], 2, 2, 2), None);
        assert_eq!(read_stamp(&[], 0, 0, 0), None);
    }

    #[test]
    fn bit_positions_follow_the_documented_order() {
        let layout = stamp_layout(1280, 720).expect("720p has a stamp");
        assert_eq!(StampLayout::bit_cell(0), (0, 2));
        assert_eq!(StampLayout::bit_cell(31), (0, 33));
        assert_eq!(StampLayout::bit_cell(32), (1, 2));
        assert_eq!(StampLayout::bit_cell(95), (2, 33));
        assert_eq!(layout.bit_centre(0), (64 + 2 * 32 + 16, 608 + 16));
        assert_eq!(layout.sample_area(0, 0), (72, 616, 88, 632));

        // The most significant bit of the sequence is its own cell.
        let data = frame(1280, 720, 1 << 31, 0);
        let (x, y) = layout.bit_centre(0);
        assert_eq!(data[(y * 1280 + x) as usize], WHITE_LUMA);
        let (x, y) = layout.bit_centre(1);
        assert_eq!(data[(y * 1280 + x) as usize], BLACK_LUMA);
    }
}
