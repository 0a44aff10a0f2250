//! Synthetic devices: a test pattern camera and a test tone microphone.
//!
//! They let the daemon run with no hardware (the embedded default) and give the test suites
//! media whose content is known, so the far end of a stream can be checked rather than just
//! observed:
//!
//! - [`TestPattern`] shows static colour bars (colour fidelity, see [`BARS`] and
//!   [`bar_probe_points`]), a moving square (motion; a frozen picture is obvious) and a
//!   [stamp](read_stamp) with the frame number and capture wall clock (dropped frames and
//!   glass-to-glass latency). The [`stamp`] module documents the stamp's exact layout so
//!   that readers in other languages can be written from it.
//! - [`Tone`] plays a sine at a fixed frequency and level.
//!
//! Both pace themselves in real time like the devices they stand in for: a read blocks until
//! the next frame or period is due, and a reader that falls behind gets the newest one, with
//! a gap in the frame numbers, instead of a burst of stale ones.

mod pace;
mod pattern;
pub mod stamp;
mod tone;

pub use pattern::{BARS, TestPattern, bar_probe_points, rgb_to_yuv};
pub use stamp::{
    STAMP_BITS, STAMP_COLUMNS, STAMP_ROWS, Stamp, StampLayout, read_stamp, read_stamp_scaled,
    stamp_layout,
};
pub use tone::Tone;
