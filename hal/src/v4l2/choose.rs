//! Which of a camera's modes to capture in: a pure function of what the camera enumerates.
//!
//! A camera lists pixel formats; for each, frame sizes (a discrete list, or a stepwise range
//! as the Pi's camera drivers report); for each size, frame intervals (discrete, stepwise or
//! continuous). The rules, in order of importance:
//!
//! 1. **Closest size**: the smallest difference in area from the request; between equal
//!    differences the one not larger than asked (less to convert and encode). A stepwise
//!    range offers the size on its grid closest to the request.
//! 2. **Closest rate** at that size: the smallest difference in frames per second, where a
//!    rate within 1 % counts as exact (29.97 serves a request for 30); between equal
//!    differences the slower one.
//! 3. **Cheapest format** among modes that tie on both: YUYV, NV12, YU12 (I420) are used as
//!    they come; MJPEG costs a JPEG decode per frame, so it is the last resort. This is what
//!    makes a typical USB webcam, which offers 720p YUYV at 10 fps but 720p MJPEG at 30 fps,
//!    stream MJPEG when 30 fps is asked for.
//!
//! A request for H.264 ([`VideoFormatRequest::h264`], the passthrough encoder) considers the
//! camera's `H264` format only, by the same size and rate rules; a request for pictures
//! never chooses it. Odd widths and heights are skipped, because every format the HAL
//! delivers is 4:2:0 or 4:2:2 with even dimensions.
//!
//! The enumeration of intervals depends on the size, and a stepwise size range only becomes
//! a size once fitted to the request, so [`choose`] asks for intervals through a callback:
//! the device edge answers with `VIDIOC_ENUM_FRAMEINTERVALS`, the tests with a table.

use std::fmt;

use crate::{PixelFormat, VideoFormatRequest};

/// A capture pixel format, by what onair can do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureFormat {
    /// `YUYV`: packed 4:2:2, delivered as [`PixelFormat::Yuyv`].
    Yuyv,
    /// `NV12`: delivered as [`PixelFormat::Nv12`].
    Nv12,
    /// `YU12`: planar 4:2:0, delivered as [`PixelFormat::I420`].
    Yu12,
    /// `MJPG` or `JPEG`: each frame a JPEG, decoded to [`PixelFormat::I420`].
    Mjpeg,
    /// `H264`: the camera encodes; delivered as [`PixelFormat::H264`] when asked for.
    H264,
    /// Anything else, by its four character code.
    Other([u8; 4]),
}

impl CaptureFormat {
    /// The format a V4L2 four character code stands for.
    pub fn from_fourcc(fourcc: [u8; 4]) -> CaptureFormat {
        match &fourcc {
            b"YUYV" => CaptureFormat::Yuyv,
            b"NV12" => CaptureFormat::Nv12,
            b"YU12" => CaptureFormat::Yu12,
            b"MJPG" | b"JPEG" => CaptureFormat::Mjpeg,
            b"H264" => CaptureFormat::H264,
            _ => CaptureFormat::Other(fourcc),
        }
    }

    /// The four character code to ask the driver for.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            CaptureFormat::Yuyv => *b"YUYV",
            CaptureFormat::Nv12 => *b"NV12",
            CaptureFormat::Yu12 => *b"YU12",
            CaptureFormat::Mjpeg => *b"MJPG",
            CaptureFormat::H264 => *b"H264",
            CaptureFormat::Other(code) => code,
        }
    }

    /// What the HAL hands the daemon for this capture format, if it can use it at all.
    pub fn delivered(self) -> Option<PixelFormat> {
        match self {
            CaptureFormat::Yuyv => Some(PixelFormat::Yuyv),
            CaptureFormat::Nv12 => Some(PixelFormat::Nv12),
            CaptureFormat::Yu12 | CaptureFormat::Mjpeg => Some(PixelFormat::I420),
            CaptureFormat::H264 => Some(PixelFormat::H264),
            CaptureFormat::Other(_) => None,
        }
    }

    /// Preference among the formats usable for pictures, lower is better; `None` for the
    /// others.
    fn rank(self) -> Option<u8> {
        match self {
            CaptureFormat::Yuyv => Some(0),
            CaptureFormat::Nv12 => Some(1),
            CaptureFormat::Yu12 => Some(2),
            CaptureFormat::Mjpeg => Some(3),
            CaptureFormat::H264 | CaptureFormat::Other(_) => None,
        }
    }

    /// Preference for a request: pictures by [`Self::rank`], or H.264 alone.
    fn rank_for(self, wanted: VideoFormatRequest) -> Option<u8> {
        match wanted.h264 {
            true => (self == CaptureFormat::H264).then_some(0),
            false => self.rank(),
        }
    }
}

impl fmt::Display for CaptureFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.fourcc();
        if code.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            f.write_str(String::from_utf8_lossy(&code).trim_end())
        } else {
            write!(f, "0x{:08x}", u32::from_le_bytes(code))
        }
    }
}

/// A time per frame in seconds, `numerator / denominator`, as V4L2 expresses frame rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Seconds, numerator.
    pub numerator: u32,
    /// Seconds, denominator.
    pub denominator: u32,
}

impl Interval {
    /// An interval of `numerator / denominator` seconds.
    pub const fn new(numerator: u32, denominator: u32) -> Interval {
        Interval {
            numerator,
            denominator,
        }
    }

    /// Frames per second, or `None` for a zero in either part (drivers do report those).
    pub fn fps(self) -> Option<f64> {
        if self.numerator == 0 || self.denominator == 0 {
            None
        } else {
            Some(f64::from(self.denominator) / f64::from(self.numerator))
        }
    }

    /// Frames per second rounded to a whole number, at least 1, for [`crate::VideoFormat`].
    pub fn whole_fps(self) -> Option<u32> {
        self.fps().map(|fps| (fps.round() as u32).max(1))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fps() {
            Some(fps) if (fps - fps.round()).abs() < 0.005 => write!(f, "{fps:.0} fps"),
            Some(fps) => write!(f, "{fps:.2} fps"),
            None => write!(f, "{}/{} s", self.numerator, self.denominator),
        }
    }
}

/// One entry of `VIDIOC_ENUM_FRAMESIZES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSizes {
    /// Exactly this size.
    Discrete {
        /// Pixels.
        width: u32,
        /// Pixels.
        height: u32,
    },
    /// Any size on a grid (continuous ranges have steps of 1).
    Stepwise {
        /// Smallest width.
        min_width: u32,
        /// Largest width.
        max_width: u32,
        /// Width increment.
        step_width: u32,
        /// Smallest height.
        min_height: u32,
        /// Largest height.
        max_height: u32,
        /// Height increment.
        step_height: u32,
    },
}

/// One entry of `VIDIOC_ENUM_FRAMEINTERVALS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameIntervals {
    /// Exactly this interval.
    Discrete(Interval),
    /// Any interval from `min` to `max`, on a grid of `step` (`None`: continuous).
    Stepwise {
        /// Shortest interval (fastest rate).
        min: Interval,
        /// Longest interval (slowest rate).
        max: Interval,
        /// Grid; `None` for a continuous range.
        step: Option<Interval>,
    },
}

/// One format a camera offers, with its sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOffer {
    /// The pixel format.
    pub format: CaptureFormat,
    /// Its sizes; empty when the driver does not enumerate them (it then adjusts whatever
    /// size is asked for).
    pub sizes: Vec<FrameSizes>,
}

/// The mode picked: what to ask the driver for with `VIDIOC_S_FMT` and `VIDIOC_S_PARM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// Pixel format to capture in.
    pub format: CaptureFormat,
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Time per frame; `None` when the driver lists no intervals for this size.
    pub interval: Option<Interval>,
}

/// How far a candidate is from the request; compared field by field, smaller is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Miss {
    /// Difference in area from the requested size, in pixels.
    area: u64,
    /// Larger than requested (only decides between equal differences).
    larger: bool,
    /// The driver lists no sizes; the requested one is asked for and it adjusts.
    size_unknown: bool,
    /// Difference in rate from the requested one, in thousandths of a frame per second; 0
    /// within 1 %; `u64::MAX` when the driver lists no intervals.
    rate: u64,
    /// Faster than requested (only decides between equal differences).
    faster: bool,
    /// Format preference.
    format: u8,
}

/// Picks the mode closest to `wanted` (see the module documentation for the rules), asking
/// `intervals(format, width, height)` for the frame intervals of each candidate size. Returns
/// an explanation of what the camera offers when none of it is usable.
pub fn choose(
    offers: &[FormatOffer],
    wanted: VideoFormatRequest,
    mut intervals: impl FnMut(CaptureFormat, u32, u32) -> Vec<FrameIntervals>,
) -> Result<Mode, String> {
    let mut best: Option<(Miss, Mode)> = None;
    for offer in offers {
        let Some(rank) = offer.format.rank_for(wanted) else {
            continue;
        };
        let (sizes, size_unknown) = if offer.sizes.is_empty() {
            (vec![(wanted.width, wanted.height)], true)
        } else {
            (candidate_sizes(&offer.sizes, wanted), false)
        };
        for (width, height) in sizes {
            let interval = best_interval(&intervals(offer.format, width, height), wanted.fps);
            let miss = Miss {
                area: area_miss(width, height, wanted),
                larger: u64::from(width) * u64::from(height)
                    > u64::from(wanted.width) * u64::from(wanted.height),
                size_unknown,
                rate: interval.map_or(u64::MAX, |interval| rate_miss(interval, wanted.fps)),
                faster: interval
                    .and_then(Interval::fps)
                    .is_some_and(|fps| fps > f64::from(wanted.fps)),
                format: rank,
            };
            let mode = Mode {
                format: offer.format,
                width,
                height,
                interval,
            };
            if best.as_ref().is_none_or(|(best_miss, _)| miss < *best_miss) {
                best = Some((miss, mode));
            }
        }
    }
    best.map(|(_, mode)| mode)
        .ok_or_else(|| nothing_usable(offers, wanted))
}

/// Why nothing in `offers` can be used for `wanted`, in words.
fn nothing_usable(offers: &[FormatOffer], wanted: VideoFormatRequest) -> String {
    if offers.is_empty() {
        return "the device lists no capture formats".to_string();
    }
    let listed = list_formats(offers);
    let offers_h264 = offers
        .iter()
        .any(|offer| offer.format == CaptureFormat::H264);
    if offers
        .iter()
        .any(|offer| offer.format.rank_for(wanted).is_some())
    {
        format!("no even frame size in any usable format (offers {listed})")
    } else if wanted.h264 {
        format!(
            "offers only {listed}; video.encoder = \"passthrough\" needs a camera that encodes H264 (use \"openh264\")"
        )
    } else if offers_h264 {
        format!(
            "offers only {listed}; set video.encoder = \"passthrough\" to send its H.264, or use a camera with YUYV, NV12, YU12 or MJPEG"
        )
    } else {
        format!("offers only {listed}; YUYV, NV12, YU12 or MJPEG is needed")
    }
}

/// The formats in `offers`, comma separated: the ones onair can use (or report) first, and
/// at most a few others by name, since test drivers such as vivid list eighty.
fn list_formats(offers: &[FormatOffer]) -> String {
    const OTHERS_NAMED: usize = 8;
    let relevant =
        |offer: &&FormatOffer| offer.format.rank().is_some() || offer.format == CaptureFormat::H264;
    let mut names: Vec<String> = offers
        .iter()
        .filter(relevant)
        .map(|offer| offer.format.to_string())
        .collect();
    let others: Vec<String> = offers
        .iter()
        .filter(|offer| !relevant(offer))
        .map(|offer| offer.format.to_string())
        .collect();
    if others.len() <= OTHERS_NAMED {
        names.extend(others);
    } else {
        names.extend(others[..OTHERS_NAMED].iter().cloned());
        names.push(format!("and {} more", others.len() - OTHERS_NAMED));
    }
    names.join(", ")
}

/// One line for the log: what was asked, what was chosen, what else there was.
pub fn describe_choice(wanted: VideoFormatRequest, mode: Mode, offers: &[FormatOffer]) -> String {
    let rate = match mode.interval {
        Some(interval) => interval.to_string(),
        None => "the driver's rate".to_string(),
    };
    let conversion = match mode.format {
        CaptureFormat::Mjpeg => " (decoded to I420)",
        CaptureFormat::H264 => " (passed through)",
        _ => "",
    };
    let mut line = format!(
        "asked for {}x{} at {} fps; chose {} {}x{} at {rate}{conversion}; the camera offers {}",
        wanted.width,
        wanted.height,
        wanted.fps,
        mode.format,
        mode.width,
        mode.height,
        list_formats(offers)
    );
    if mode.format != CaptureFormat::H264
        && offers
            .iter()
            .any(|offer| offer.format == CaptureFormat::H264)
    {
        line.push_str(" (video.encoder = \"passthrough\" would send its own H.264)");
    }
    line
}

/// The sizes worth trying from one format's list: every even discrete size, and for each
/// stepwise range the size on its grid closest to the request.
fn candidate_sizes(sizes: &[FrameSizes], wanted: VideoFormatRequest) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for size in sizes {
        match *size {
            FrameSizes::Discrete { width, height } => {
                if width > 0 && height > 0 && width.is_multiple_of(2) && height.is_multiple_of(2) {
                    out.push((width, height));
                }
            }
            FrameSizes::Stepwise {
                min_width,
                max_width,
                step_width,
                min_height,
                max_height,
                step_height,
            } => {
                let width = fit_axis(min_width, max_width, step_width, wanted.width);
                let height = fit_axis(min_height, max_height, step_height, wanted.height);
                if let (Some(width), Some(height)) = (width, height) {
                    out.push((width, height));
                }
            }
        }
    }
    out
}

/// The even value on the grid `min, min + step, … ≤ max` closest to `wanted` (ties: the
/// smaller), or `None` if the grid holds no even value above zero.
fn fit_axis(min: u32, max: u32, step: u32, wanted: u32) -> Option<u32> {
    if min > max {
        return None;
    }
    let step = step.max(1);
    let target = wanted.clamp(min, max);
    let k = (target - min).div_ceil(step);
    // The grid points within two steps either side of the target include the nearest even
    // one, whatever the parity of min and step.
    (k.saturating_sub(2)..=k.saturating_add(2))
        .filter_map(|k| {
            k.checked_mul(step)
                .and_then(|offset| min.checked_add(offset))
        })
        .filter(|&value| value <= max && value > 0 && value.is_multiple_of(2))
        .min_by_key(|&value| (value.abs_diff(target), value))
}

/// Difference in area between `width` x `height` and the request.
fn area_miss(width: u32, height: u32, wanted: VideoFormatRequest) -> u64 {
    let area = u64::from(width) * u64::from(height);
    area.abs_diff(u64::from(wanted.width) * u64::from(wanted.height))
}

/// Difference in rate, in thousandths of a frame per second; 0 within 1 % of the request.
fn rate_miss(interval: Interval, wanted_fps: u32) -> u64 {
    let Some(fps) = interval.fps() else {
        return u64::MAX;
    };
    let wanted = f64::from(wanted_fps);
    let miss = (fps - wanted).abs();
    if miss <= wanted * 0.01 {
        0
    } else {
        (miss * 1000.0).round() as u64
    }
}

/// The interval closest to `wanted_fps` among one size's enumerated intervals.
fn best_interval(intervals: &[FrameIntervals], wanted_fps: u32) -> Option<Interval> {
    intervals
        .iter()
        .filter_map(|entry| match *entry {
            FrameIntervals::Discrete(interval) => interval.fps().map(|_| interval),
            FrameIntervals::Stepwise { min, max, step } => fit_interval(min, max, step, wanted_fps),
        })
        .min_by(|a, b| {
            let key = |interval: &Interval| {
                let fps = interval.fps().unwrap_or(0.0);
                (
                    rate_miss(*interval, wanted_fps),
                    fps > f64::from(wanted_fps),
                )
            };
            key(a).cmp(&key(b))
        })
}

/// The interval in a stepwise or continuous range closest to `1 / wanted_fps` seconds.
fn fit_interval(
    min: Interval,
    max: Interval,
    step: Option<Interval>,
    wanted_fps: u32,
) -> Option<Interval> {
    let (fastest, slowest) = (min.fps()?, max.fps()?);
    let wanted = f64::from(wanted_fps.max(1));
    if wanted >= fastest {
        return Some(min);
    }
    if wanted <= slowest {
        return Some(max);
    }
    let step = match step {
        Some(step) if step.numerator > 0 && step.denominator > 0 => step,
        // Continuous: any interval in the range, so exactly the one asked for.
        _ => return Some(Interval::new(1, wanted_fps.max(1))),
    };
    // Grid point k is min + k * step; find the k just below 1 / wanted, in exact integers:
    // k = (1/f - n/d) / (sn/sd) = (d - f n) sd / (f d sn).
    let (n, d) = (u128::from(min.numerator), u128::from(min.denominator));
    let (sn, sd) = (u128::from(step.numerator), u128::from(step.denominator));
    let f = u128::from(wanted_fps);
    let below = (d.checked_sub(f * n)? * sd) / (f * d * sn);
    [below, below + 1]
        .into_iter()
        .filter_map(|k| {
            // min + k * step = (n sd + k sn d) / (d sd), reduced to fit in u32.
            let numerator = n * sd + k * sn * d;
            let denominator = d * sd;
            let divisor = gcd(numerator, denominator);
            let interval = Interval::new(
                u32::try_from(numerator / divisor).ok()?,
                u32::try_from(denominator / divisor).ok()?,
            );
            // Beyond the slowest end of the range when k overshoots.
            (interval.fps()? >= slowest).then_some(interval)
        })
        .min_by_key(|interval| {
            let fps = interval.fps().unwrap_or(0.0);
            ((fps - wanted).abs() * 1e6).round() as u64
        })
}

/// Greatest common divisor (`gcd(0, 0)` is 1, so it can always divide).
fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(width: u32, height: u32, fps: u32) -> VideoFormatRequest {
        VideoFormatRequest {
            width,
            height,
            fps,
            h264: false,
        }
    }

    fn want_h264(width: u32, height: u32, fps: u32) -> VideoFormatRequest {
        VideoFormatRequest {
            h264: true,
            ..want(width, height, fps)
        }
    }

    fn discrete(sizes: &[(u32, u32)]) -> Vec<FrameSizes> {
        sizes
            .iter()
            .map(|&(width, height)| FrameSizes::Discrete { width, height })
            .collect()
    }

    fn offer(format: CaptureFormat, sizes: &[(u32, u32)]) -> FormatOffer {
        FormatOffer {
            format,
            sizes: discrete(sizes),
        }
    }

    fn rates(fps: &[u32]) -> Vec<FrameIntervals> {
        fps.iter()
            .map(|&fps| FrameIntervals::Discrete(Interval::new(1, fps)))
            .collect()
    }

    fn mode(format: CaptureFormat, width: u32, height: u32, fps: u32) -> Mode {
        Mode {
            format,
            width,
            height,
            interval: Some(Interval::new(1, fps)),
        }
    }

    use CaptureFormat::{H264, Mjpeg, Nv12, Yu12, Yuyv};

    /// A typical UVC webcam over USB 2: raw YUYV is limited by bandwidth, MJPEG is not.
    fn webcam() -> Vec<FormatOffer> {
        let sizes = [(640, 480), (1280, 720), (1920, 1080)];
        vec![
            offer(Yuyv, &sizes),
            offer(Mjpeg, &sizes),
            offer(H264, &sizes),
        ]
    }

    fn webcam_rates(format: CaptureFormat, width: u32, _height: u32) -> Vec<FrameIntervals> {
        match (format, width) {
            (Yuyv, 640) => rates(&[30, 15]),
            (Yuyv, 1280) => rates(&[10, 5]),
            (Yuyv, _) => rates(&[5]),
            _ => rates(&[30, 15]),
        }
    }

    #[test]
    fn table_of_cameras_and_requests() {
        struct Case {
            name: &'static str,
            offers: Vec<FormatOffer>,
            rates: fn(CaptureFormat, u32, u32) -> Vec<FrameIntervals>,
            wanted: VideoFormatRequest,
            expected: Mode,
        }
        fn thirty(_: CaptureFormat, _: u32, _: u32) -> Vec<FrameIntervals> {
            rates(&[30, 25, 15])
        }
        fn sixty_or_fifteen(_: CaptureFormat, _: u32, _: u32) -> Vec<FrameIntervals> {
            rates(&[60, 15])
        }
        fn ntsc_yuyv(format: CaptureFormat, _: u32, _: u32) -> Vec<FrameIntervals> {
            match format {
                Yuyv => vec![FrameIntervals::Discrete(Interval::new(1001, 30000))],
                _ => rates(&[30]),
            }
        }
        let cases = vec![
            Case {
                name: "webcam, 480p30: raw YUYV fits",
                offers: webcam(),
                rates: webcam_rates,
                wanted: want(640, 480, 30),
                expected: mode(Yuyv, 640, 480, 30),
            },
            Case {
                name: "webcam, 720p30: YUYV only does 10 fps there, MJPEG does 30",
                offers: webcam(),
                rates: webcam_rates,
                wanted: want(1280, 720, 30),
                expected: mode(Mjpeg, 1280, 720, 30),
            },
            Case {
                name: "webcam, 720p10: YUYV fits and beats MJPEG",
                offers: webcam(),
                rates: webcam_rates,
                wanted: want(1280, 720, 10),
                expected: mode(Yuyv, 1280, 720, 10),
            },
            Case {
                name: "MJPEG-only camera",
                offers: vec![offer(Mjpeg, &[(640, 480), (1280, 720)])],
                rates: thirty,
                wanted: want(1280, 720, 30),
                expected: mode(Mjpeg, 1280, 720, 30),
            },
            Case {
                name: "format order YUYV, NV12, YU12, MJPEG when all fit",
                offers: vec![
                    offer(Mjpeg, &[(1280, 720)]),
                    offer(Yu12, &[(1280, 720)]),
                    offer(Nv12, &[(1280, 720)]),
                    offer(Yuyv, &[(1280, 720)]),
                ],
                rates: thirty,
                wanted: want(1280, 720, 30),
                expected: mode(Yuyv, 1280, 720, 30),
            },
            Case {
                name: "NV12 before YU12 before MJPEG",
                offers: vec![
                    offer(Mjpeg, &[(1280, 720)]),
                    offer(Yu12, &[(1280, 720)]),
                    offer(Nv12, &[(1280, 720)]),
                ],
                rates: thirty,
                wanted: want(1280, 720, 30),
                expected: mode(Nv12, 1280, 720, 30),
            },
            Case {
                name: "YU12 before MJPEG",
                offers: vec![offer(Mjpeg, &[(1280, 720)]), offer(Yu12, &[(1280, 720)])],
                rates: thirty,
                wanted: want(1280, 720, 30),
                expected: mode(Yu12, 1280, 720, 30),
            },
            Case {
                name: "an exact size in a worse format beats a near size in a better one",
                offers: vec![offer(Yuyv, &[(1280, 800)]), offer(Mjpeg, &[(1280, 720)])],
                rates: thirty,
                wanted: want(1280, 720, 30),
                expected: mode(Mjpeg, 1280, 720, 30),
            },
            Case {
                name: "camera that only does larger sizes: the smallest of them",
                offers: vec![offer(Yuyv, &[(3840, 2160), (1920, 1080), (2560, 1440)])],
                rates: thirty,
                wanted: want(640, 480, 30),
                expected: mode(Yuyv, 1920, 1080, 30),
            },
            Case {
                name: "camera that only does smaller sizes: the largest of them",
                offers: vec![offer(Yuyv, &[(320, 240), (640, 480), (160, 120)])],
                rates: thirty,
                wanted: want(1280, 720, 30),
                expected: mode(Yuyv, 640, 480, 30),
            },
            Case {
                name: "equal area difference: the smaller size",
                // 1280x720 = 921600; 1280x640 is 102400 less, 1280x800 102400 more.
                offers: vec![offer(Yuyv, &[(1280, 800), (1280, 640)])],
                rates: thirty,
                wanted: want(1280, 720, 30),
                expected: mode(Yuyv, 1280, 640, 30),
            },
            Case {
                name: "closest rate; between 60 and 15 for 30, 15 is closer",
                offers: vec![offer(Yuyv, &[(640, 480)])],
                rates: sixty_or_fifteen,
                wanted: want(640, 480, 30),
                expected: mode(Yuyv, 640, 480, 15),
            },
            Case {
                name: "closest rate; for 50, 60 is closer than 15",
                offers: vec![offer(Yuyv, &[(640, 480)])],
                rates: sixty_or_fifteen,
                wanted: want(640, 480, 50),
                expected: mode(Yuyv, 640, 480, 60),
            },
            Case {
                name: "29.97 counts as 30, so YUYV keeps its precedence",
                offers: vec![offer(Nv12, &[(640, 480)]), offer(Yuyv, &[(640, 480)])],
                rates: ntsc_yuyv,
                wanted: want(640, 480, 30),
                expected: Mode {
                    format: Yuyv,
                    width: 640,
                    height: 480,
                    interval: Some(Interval::new(1001, 30000)),
                },
            },
            Case {
                name: "odd sizes are skipped",
                offers: vec![offer(Yuyv, &[(641, 480), (320, 240)])],
                rates: thirty,
                wanted: want(640, 480, 30),
                expected: mode(Yuyv, 320, 240, 30),
            },
        ];
        for case in cases {
            let chosen = choose(&case.offers, case.wanted, case.rates);
            assert_eq!(chosen, Ok(case.expected), "{}", case.name);
        }
    }

    #[test]
    fn stepwise_sizes_fit_the_request() {
        // What bcm2835-v4l2 (the Pi's legacy camera driver) reports.
        let offers = vec![FormatOffer {
            format: Yu12,
            sizes: vec![FrameSizes::Stepwise {
                min_width: 32,
                max_width: 2592,
                step_width: 2,
                min_height: 32,
                max_height: 1944,
                step_height: 2,
            }],
        }];
        let stepwise_rates = |_, _, _| {
            vec![FrameIntervals::Stepwise {
                min: Interval::new(1, 90),
                max: Interval::new(1, 1),
                step: Some(Interval::new(1, 90_000)),
            }]
        };
        let chosen = choose(&offers, want(1280, 720, 30), stepwise_rates).expect("usable");
        assert_eq!(
            (chosen.format, chosen.width, chosen.height),
            (Yu12, 1280, 720)
        );
        assert_eq!(chosen.interval.and_then(Interval::whole_fps), Some(30));
        // Beyond the sensor: clamped to the largest size.
        let chosen = choose(&offers, want(4096, 2160, 30), stepwise_rates).expect("usable");
        assert_eq!((chosen.width, chosen.height), (2592, 1944));
    }

    #[test]
    fn stepwise_size_beats_a_farther_discrete_one() {
        let offers = vec![
            offer(Yuyv, &[(640, 480)]),
            FormatOffer {
                format: Mjpeg,
                sizes: vec![FrameSizes::Stepwise {
                    min_width: 16,
                    max_width: 1920,
                    step_width: 16,
                    min_height: 16,
                    max_height: 1080,
                    step_height: 16,
                }],
            },
        ];
        let chosen = choose(&offers, want(1000, 500, 30), |_, _, _| rates(&[30])).expect("usable");
        // 1000 is between 992 and 1008 (equally far: the smaller); 500 nearest is 496.
        assert_eq!(chosen, mode(Mjpeg, 992, 496, 30));
    }

    #[test]
    fn fit_axis_stays_on_even_grid_points() {
        assert_eq!(fit_axis(32, 2592, 2, 1280), Some(1280));
        assert_eq!(fit_axis(32, 2592, 2, 1281), Some(1280));
        assert_eq!(fit_axis(32, 2592, 2, 10), Some(32));
        assert_eq!(fit_axis(32, 2592, 2, 9999), Some(2592));
        // Odd start, odd step: 1, 4, 7, 10, 13 … → the even ones are 4, 10, 16, …
        assert_eq!(fit_axis(1, 100, 3, 12), Some(10));
        // Odd start, even step: no even value at all.
        assert_eq!(fit_axis(1, 99, 2, 50), None);
        // A step of zero (continuous ranges sometimes say so) counts as one.
        assert_eq!(fit_axis(2, 100, 0, 51), Some(50));
        assert_eq!(fit_axis(100, 2, 1, 50), None);
    }

    #[test]
    fn stepwise_and_continuous_intervals() {
        let grid = fit_interval(
            Interval::new(1, 60),
            Interval::new(1, 1),
            Some(Interval::new(1, 600)),
            30,
        );
        assert_eq!(grid, Some(Interval::new(1, 30)));
        // Coarse grid: 1/10 s + k/10 s has nothing near 1/30 s but 1/10 s itself.
        let coarse = fit_interval(
            Interval::new(1, 10),
            Interval::new(1, 1),
            Some(Interval::new(1, 10)),
            30,
        );
        assert_eq!(coarse, Some(Interval::new(1, 10)));
        // Grid of 1/60 s from 1/60 s: 2/60 s is exactly 30 fps.
        let sixtieths = fit_interval(
            Interval::new(1, 60),
            Interval::new(1, 2),
            Some(Interval::new(1, 60)),
            30,
        )
        .expect("in range");
        assert_eq!(sixtieths.whole_fps(), Some(30));
        let continuous = fit_interval(Interval::new(1, 120), Interval::new(1, 1), None, 25);
        assert_eq!(continuous, Some(Interval::new(1, 25)));
        // Asking faster than the range allows gives its fastest, slower its slowest.
        let range = (Interval::new(1, 30), Interval::new(1, 5));
        assert_eq!(fit_interval(range.0, range.1, None, 60), Some(range.0));
        assert_eq!(fit_interval(range.0, range.1, None, 2), Some(range.1));
        // Broken ranges are ignored.
        assert_eq!(fit_interval(Interval::new(0, 0), range.1, None, 30), None);
    }

    #[test]
    fn no_intervals_listed_ranks_below_listed_ones() {
        let offers = vec![offer(Yuyv, &[(640, 480)]), offer(Mjpeg, &[(640, 480)])];
        let chosen = choose(&offers, want(640, 480, 30), |format, _, _| match format {
            Yuyv => Vec::new(),
            _ => rates(&[30]),
        });
        assert_eq!(chosen, Ok(mode(Mjpeg, 640, 480, 30)));
        // If nothing lists intervals, the size still decides and the interval stays open.
        let chosen = choose(&offers, want(640, 480, 30), |_, _, _| Vec::new()).expect("usable");
        assert_eq!((chosen.format, chosen.interval), (Yuyv, None));
    }

    #[test]
    fn driver_without_size_enumeration_gets_the_request() {
        let offers = vec![FormatOffer {
            format: Yuyv,
            sizes: Vec::new(),
        }];
        let chosen = choose(&offers, want(800, 600, 30), |_, _, _| rates(&[30]));
        assert_eq!(chosen, Ok(mode(Yuyv, 800, 600, 30)));
    }

    #[test]
    fn unusable_cameras_are_explained() {
        let h264 = vec![offer(H264, &[(1920, 1080)])];
        let why = choose(&h264, want(1280, 720, 30), |_, _, _| rates(&[30])).unwrap_err();
        assert!(
            why.contains("offers only H264") && why.contains("video.encoder = \"passthrough\""),
            "{why}"
        );
        let raw = vec![offer(Yuyv, &[(1280, 720)]), offer(Mjpeg, &[(1280, 720)])];
        let why = choose(&raw, want_h264(1280, 720, 30), |_, _, _| rates(&[30])).unwrap_err();
        assert!(
            why.contains("offers only YUYV, MJPG") && why.contains("needs a camera that encodes"),
            "{why}"
        );
        let bayer = vec![offer(CaptureFormat::from_fourcc(*b"RGGB"), &[(640, 480)])];
        let why = choose(&bayer, want(640, 480, 30), |_, _, _| rates(&[30])).unwrap_err();
        assert!(why.contains("RGGB"), "{why}");
        let why = choose(&[], want(640, 480, 30), |_, _, _| rates(&[30])).unwrap_err();
        assert!(why.contains("no capture formats"), "{why}");
        let odd = vec![offer(Yuyv, &[(639, 479)])];
        let why = choose(&odd, want(640, 480, 30), |_, _, _| rates(&[30])).unwrap_err();
        assert!(why.contains("no even frame size"), "{why}");
    }

    #[test]
    fn choice_is_described_for_the_log() {
        let offers = webcam();
        let wanted = want(1280, 720, 30);
        let chosen = choose(&offers, wanted, webcam_rates).expect("usable");
        assert_eq!(
            describe_choice(wanted, chosen, &offers),
            "asked for 1280x720 at 30 fps; chose MJPG 1280x720 at 30 fps (decoded to I420); \
             the camera offers YUYV, MJPG, H264 (video.encoder = \"passthrough\" would send its own H.264)"
        );
        let wanted = want_h264(1280, 720, 30);
        let chosen = choose(&offers, wanted, webcam_rates).expect("usable");
        assert_eq!(
            describe_choice(wanted, chosen, &offers),
            "asked for 1280x720 at 30 fps; chose H264 1280x720 at 30 fps (passed through); \
             the camera offers YUYV, MJPG, H264"
        );
    }

    #[test]
    fn h264_requests_take_the_h264_format_by_size_and_rate() {
        // A UVC H.264 webcam: the closest H.264 mode wins even where a raw one is closer.
        let offers = vec![
            offer(Yuyv, &[(640, 480)]),
            offer(H264, &[(1280, 720), (1920, 1080)]),
        ];
        let chosen = choose(&offers, want_h264(640, 480, 30), |_, _, _| rates(&[15, 30]));
        assert_eq!(chosen, Ok(mode(H264, 1280, 720, 30)));
        let chosen = choose(&offers, want_h264(1920, 1080, 24), |_, _, _| {
            rates(&[15, 30])
        });
        assert_eq!(chosen, Ok(mode(H264, 1920, 1080, 30)));
        // And a picture request never takes it.
        let chosen = choose(&offers, want(1920, 1080, 30), |_, _, _| rates(&[30]));
        assert_eq!(chosen, Ok(mode(Yuyv, 640, 480, 30)));
    }

    #[test]
    fn long_format_lists_are_cut_short() {
        // vivid lists some eighty formats; the log line names the useful ones first.
        let mut offers: Vec<FormatOffer> = (0..20u8)
            .map(|i| {
                offer(
                    CaptureFormat::from_fourcc([b'X', b'0' + i / 10, b'0' + i % 10, b' ']),
                    &[(640, 480)],
                )
            })
            .collect();
        offers.push(offer(Nv12, &[(640, 480)]));
        offers.push(offer(Yuyv, &[(640, 480)]));
        let listed = list_formats(&offers);
        assert_eq!(
            listed,
            "NV12, YUYV, X00, X01, X02, X03, X04, X05, X06, X07, and 12 more"
        );
    }

    #[test]
    fn fourcc_round_trip_and_names() {
        for code in [b"YUYV", b"NV12", b"YU12", b"MJPG", b"H264", b"GREY"] {
            assert_eq!(CaptureFormat::from_fourcc(*code).fourcc(), *code);
        }
        assert_eq!(CaptureFormat::from_fourcc(*b"JPEG"), Mjpeg);
        assert_eq!(CaptureFormat::from_fourcc(*b"Y10 ").to_string(), "Y10");
        assert_eq!(
            CaptureFormat::from_fourcc([0, 1, 2, 3]).to_string(),
            "0x03020100"
        );
        assert_eq!(Yu12.delivered(), Some(PixelFormat::I420));
        assert_eq!(Mjpeg.delivered(), Some(PixelFormat::I420));
        assert_eq!(H264.delivered(), Some(PixelFormat::H264));
        assert_eq!(CaptureFormat::from_fourcc(*b"GREY").delivered(), None);
    }
}
