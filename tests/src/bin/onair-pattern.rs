//! The stamped test pattern as raw I420 on standard output, paced in real time: the same
//! pictures onaird's `test-pattern` source encodes, for the peers of the side-by-side
//! benchmark (an aiortc caster, ffmpeg feeding Janus) so that every system is measured on the
//! same pictures and the same stamp (layout: hal/src/synthetic/stamp.rs).
//!
//! `onair-pattern --width 640 --height 480 --fps 30 | ffmpeg -f rawvideo -pix_fmt yuv420p
//! -s 640x480 -r 30 -i - …`. Ends when the reader goes away, or after `--frames`.

use std::io::Write;

use clap::Parser;
use onair_hal::synthetic::TestPattern;
use onair_hal::{VideoFrame, VideoSource};

#[derive(Parser)]
#[command(about = "Writes the stamped test pattern as raw I420 frames to standard output")]
struct Args {
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Stop after this many frames (default: until the reader closes the pipe).
    #[arg(long)]
    frames: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.width == 0 || args.height == 0 || args.width % 2 == 1 || args.height % 2 == 1 {
        anyhow::bail!("--width and --height must be even and non-zero");
    }
    let mut pattern = TestPattern::new(args.width, args.height, args.fps);
    let mut frame = VideoFrame::new();
    let mut out = std::io::stdout().lock();
    let mut written = 0u64;
    while args.frames.is_none_or(|limit| written < limit) {
        pattern.read_frame(&mut frame)?;
        if let Err(e) = out.write_all(&frame.data).and_then(|()| out.flush()) {
            // The reader went away: the normal end.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
        written += 1;
    }
    Ok(())
}
