//! The choice of a capture mode from what a camera's driver enumerates
//! (`VIDIOC_ENUM_FMT`, `_FRAMESIZES`, `_FRAMEINTERVALS`), which is input from outside too: a
//! driver may list anything.
//!
//! The input is the driver's answer in a compact text form, one size of one format a line,
//! so the seeds are real cameras' lists:
//!
//! ```text
//! want 1280x720@30 [h264]        the request (as a valid onair.toml can make it)
//! YUYV 640x480 1/30 1/15         discrete size, discrete intervals
//! MJPG 16-1920/2x16-1080/2 1/30..1/1        stepwise size, continuous intervals
//! NV12 1280x720 1/60..1/1:1/60   stepwise intervals
//! H264                           a format that lists no sizes
//! ```
//!
//! Checked: the chosen mode is one the driver listed (or the request, for a format without
//! sizes) in a format that serves the request; its size is even; its interval is one the
//! driver listed for that size or lies in a listed range; the choice is the same when made
//! again; intervals are asked only for listed sizes; and the log line describing it is
//! written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair_hal::VideoFormatRequest;
use onair_hal::v4l2::CaptureFormat;
use onair_hal::v4l2::fuzzing::{
    FormatOffer, FrameIntervals, FrameSizes, Interval, choose, describe_choice,
};

/// One line: a size of a format and the intervals the driver lists for it.
struct Listed {
    format: CaptureFormat,
    size: Option<FrameSizes>,
    intervals: Vec<FrameIntervals>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (wanted, listed) = parse(text);
    let offers = offers(&listed);
    let mut asked = Vec::new();
    let result = choose(&offers, wanted, |format, width, height| {
        asked.push((format, width, height));
        intervals_of(&listed, format, width, height)
    });
    for &(format, width, height) in &asked {
        assert!(
            lists(&listed, format, width, height)
                || request_size(&offers, format, wanted, width, height),
            "asked for intervals of {format} {width}x{height}, which the driver did not list"
        );
    }
    let again = choose(&offers, wanted, |format, width, height| {
        intervals_of(&listed, format, width, height)
    });
    assert_eq!(result, again, "a different choice the second time");
    let mode = match result {
        Ok(mode) => mode,
        Err(why) => {
            assert!(!why.is_empty());
            return;
        }
    };
    if wanted.h264 {
        assert_eq!(mode.format, CaptureFormat::H264);
    } else {
        assert!(mode.format.delivered().is_some() && mode.format != CaptureFormat::H264);
    }
    let (width, height) = (mode.width, mode.height);
    let listed_size = lists(&listed, mode.format, width, height);
    assert!(
        listed_size || request_size(&offers, mode.format, wanted, width, height),
        "{mode:?} is not a listed mode"
    );
    if listed_size {
        assert!(
            width > 0 && height > 0 && width.is_multiple_of(2) && height.is_multiple_of(2),
            "{mode:?}"
        );
    }
    if let Some(interval) = mode.interval {
        let fps = interval.fps().expect("a chosen interval has a rate");
        let ok = intervals_of(&listed, mode.format, width, height)
            .iter()
            .any(|entry| within(entry, interval, fps));
        assert!(ok, "{mode:?}: the interval is not one listed for the size");
    }
    let line = describe_choice(wanted, mode, &offers);
    assert!(line.contains(&mode.format.to_string()), "{line}");
});

/// The request and the driver's lines. Lines that do not parse are left out.
fn parse(text: &str) -> (VideoFormatRequest, Vec<Listed>) {
    let mut wanted = VideoFormatRequest {
        width: 1280,
        height: 720,
        fps: 30,
        h264: false,
    };
    let mut listed = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first == "want" {
            if let Some(request) = words.next().and_then(request) {
                wanted = VideoFormatRequest {
                    h264: words.next() == Some("h264"),
                    ..request
                };
            }
            continue;
        }
        let mut code = [b' '; 4];
        for (c, b) in code.iter_mut().zip(first.bytes()) {
            *c = b;
        }
        let size = match words.next() {
            None => None,
            Some(size) => match frame_size(size) {
                Some(size) => Some(size),
                None => continue,
            },
        };
        let intervals = words.filter_map(frame_interval).collect();
        listed.push(Listed {
            format: CaptureFormat::from_fourcc(code),
            size,
            intervals,
        });
    }
    (wanted, listed)
}

/// `1280x720@30`, within what onair.toml allows.
fn request(text: &str) -> Option<VideoFormatRequest> {
    let (size, fps) = text.split_once('@')?;
    let (width, height) = size.split_once('x')?;
    let (width, height, fps) = (width.parse().ok()?, height.parse().ok()?, fps.parse().ok()?);
    let even = |v: u32| (16..=4096).contains(&v) && v.is_multiple_of(2);
    (even(width) && even(height) && (1..=60).contains(&fps)).then_some(VideoFormatRequest {
        width,
        height,
        fps,
        h264: false,
    })
}

/// `640x480` or `16-1920/2x16-1080/2`.
fn frame_size(text: &str) -> Option<FrameSizes> {
    let (width, height) = text.split_once('x')?;
    let axis = |t: &str| -> Option<(u32, u32, u32, bool)> {
        match t.split_once('-') {
            None => t.parse().ok().map(|v| (v, v, 1, false)),
            Some((min, rest)) => {
                let (max, step) = rest.split_once('/').unwrap_or((rest, "1"));
                Some((
                    min.parse().ok()?,
                    max.parse().ok()?,
                    step.parse().ok()?,
                    true,
                ))
            }
        }
    };
    let (w, h) = (axis(width)?, axis(height)?);
    Some(if w.3 || h.3 {
        FrameSizes::Stepwise {
            min_width: w.0,
            max_width: w.1,
            step_width: w.2,
            min_height: h.0,
            max_height: h.1,
            step_height: h.2,
        }
    } else {
        FrameSizes::Discrete {
            width: w.0,
            height: h.0,
        }
    })
}

/// `1/30`, `1/30..1/1` or `1/30..1/1:1/30`.
fn frame_interval(text: &str) -> Option<FrameIntervals> {
    let fraction = |t: &str| -> Option<Interval> {
        let (n, d) = t.split_once('/')?;
        Some(Interval::new(n.parse().ok()?, d.parse().ok()?))
    };
    let Some((min, rest)) = text.split_once("..") else {
        return fraction(text).map(FrameIntervals::Discrete);
    };
    let (max, step) = match rest.split_once(':') {
        Some((max, step)) => (max, Some(fraction(step)?)),
        None => (rest, None),
    };
    Some(FrameIntervals::Stepwise {
        min: fraction(min)?,
        max: fraction(max)?,
        step,
    })
}

/// The formats in the order listed, each with its sizes; a format listed again after
/// another one is a second entry, as a driver could list it.
fn offers(listed: &[Listed]) -> Vec<FormatOffer> {
    let mut offers: Vec<FormatOffer> = Vec::new();
    for line in listed {
        match offers.last_mut() {
            Some(last) if last.format == line.format => last.sizes.extend(line.size),
            _ => offers.push(FormatOffer {
                format: line.format,
                sizes: line.size.into_iter().collect(),
            }),
        }
    }
    offers
}

/// What the driver answers `VIDIOC_ENUM_FRAMEINTERVALS` with: the intervals of the first
/// line of that format whose size takes `width` x `height`.
fn intervals_of(listed: &[Listed], format: CaptureFormat, w: u32, h: u32) -> Vec<FrameIntervals> {
    listed
        .iter()
        .find(|l| l.format == format && l.size.is_some_and(|s| takes(s, w, h)))
        .map(|l| l.intervals.clone())
        .unwrap_or_default()
}

fn lists(listed: &[Listed], format: CaptureFormat, w: u32, h: u32) -> bool {
    listed
        .iter()
        .any(|l| l.format == format && l.size.is_some_and(|s| takes(s, w, h)))
}

/// A format listed without sizes takes the request as it is.
fn request_size(
    offers: &[FormatOffer],
    format: CaptureFormat,
    wanted: VideoFormatRequest,
    w: u32,
    h: u32,
) -> bool {
    (w, h) == (wanted.width, wanted.height)
        && offers
            .iter()
            .any(|o| o.format == format && o.sizes.is_empty())
}

fn takes(size: FrameSizes, w: u32, h: u32) -> bool {
    let on_grid = |v: u32, min: u32, max: u32, step: u32| {
        (min..=max).contains(&v) && (v - min).is_multiple_of(step.max(1))
    };
    match size {
        FrameSizes::Discrete { width, height } => (width, height) == (w, h),
        FrameSizes::Stepwise {
            min_width,
            max_width,
            step_width,
            min_height,
            max_height,
            step_height,
        } => {
            on_grid(w, min_width, max_width, step_width)
                && on_grid(h, min_height, max_height, step_height)
        }
    }
}

/// Whether `interval` (of `fps` frames a second) is `entry`, or inside its range.
fn within(entry: &FrameIntervals, interval: Interval, fps: f64) -> bool {
    match *entry {
        FrameIntervals::Discrete(listed) => listed == interval,
        FrameIntervals::Stepwise { min, max, .. } if interval == min || interval == max => true,
        FrameIntervals::Stepwise { min, max, .. } => match (min.fps(), max.fps()) {
            (Some(fastest), Some(slowest)) => {
                let slack = 1e-9 * fastest.max(1.0);
                fps <= fastest + slack && fps >= slowest - slack
            }
            _ => false,
        },
    }
}
