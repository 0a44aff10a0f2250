//! Recording: the encoded stream into MP4 segments on disk, with retention.
//!
//! - [`recorder`]: takes the encoded units (the same ones viewers get) and writes segments.
//! - [`fmp4`]: the bytes of fragmented MP4, built with mp4-atom.
//! - [`retention`]: which segments go (age, bytes, free space), a pure function.

pub mod fmp4;
pub mod recorder;
pub mod retention;
