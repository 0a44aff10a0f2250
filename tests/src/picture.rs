//! Reading a decoded picture the way a person looks at it: colours at points, the stamp.

use onair_hal::synthetic::{BARS, Stamp, bar_probe_points, read_stamp};

/// What one decoded picture showed.
#[derive(Debug, Clone)]
pub struct Picture {
    /// Decoded size.
    pub width: u32,
    /// Decoded size.
    pub height: u32,
    /// RGB at the centre of each colour bar, left to right.
    pub bars: [[u8; 3]; 8],
    /// The frame number and capture time drawn into the picture, if readable.
    pub stamp: Option<Stamp>,
}

/// BT.601 limited range, as a browser renders H.264 without colour information.
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = f32::from(y) - 16.0;
    let d = f32::from(u) - 128.0;
    let e = f32::from(v) - 128.0;
    let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [
        clamp(1.164 * c + 1.596 * e),
        clamp(1.164 * c - 0.392 * d - 0.813 * e),
        clamp(1.164 * c + 2.017 * d),
    ]
}

/// Reads a decoded I420 picture given its planes and strides.
pub fn read_picture(
    (width, height): (u32, u32),
    (y, u, v): (&[u8], &[u8], &[u8]),
    (ys, us, vs): (usize, usize, usize),
) -> Picture {
    let mut bars = [[0u8; 3]; 8];
    for (bar, (px, py)) in bars.iter_mut().zip(bar_probe_points(width, height)) {
        // Average a 4x4 area so single-pixel coding noise does not decide.
        let mut sum = [0u32; 3];
        let mut n = 0;
        for dy in 0..4 {
            for dx in 0..4 {
                let (x, yy) = ((px + dx - 2) as usize, (py + dy - 2) as usize);
                let rgb = yuv_to_rgb(
                    y[yy * ys + x],
                    u[(yy / 2) * us + x / 2],
                    v[(yy / 2) * vs + x / 2],
                );
                for c in 0..3 {
                    sum[c] += u32::from(rgb[c]);
                }
                n += 1;
            }
        }
        *bar = sum.map(|s| (s / n) as u8);
    }
    Picture {
        width,
        height,
        bars,
        stamp: read_stamp(y, ys, width, height),
    }
}

impl Picture {
    /// Whether it is black where the test pattern has its bars (privacy's picture): every
    /// channel at most 20 of 255 at every probe.
    pub fn is_black(&self) -> bool {
        self.bars.iter().flatten().all(|&c| c <= 20)
    }
}

/// Whether every bar is within `tolerance` of the test pattern's colour, per channel.
pub fn bars_match(bars: &[[u8; 3]; 8], tolerance: u8) -> bool {
    bars.iter().zip(BARS.iter()).all(|(got, want)| {
        got.iter()
            .zip(want)
            .all(|(g, w)| g.abs_diff(*w) <= tolerance)
    })
}
