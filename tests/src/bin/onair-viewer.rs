//! A command-line WHEP viewer: joins, decodes, prints what it saw as one line of JSON.
//!
//! `onair-viewer http://127.0.0.1:8080/whep [FRAMES] [SECONDS]`
//!
//! The end-to-end tests run it as a separate process so that they can kill it the way a
//! viewer's machine dies: without a DELETE.

use std::time::Duration;

use onair_tests::viewer::{Watch, watch};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: onair-viewer WHEP_URL [FRAMES] [SECONDS]"))?;
    let frames = args.next().map(|a| a.parse()).transpose()?.unwrap_or(60);
    let seconds = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let report = watch(&url, Watch::decoding(frames, Duration::from_secs(seconds))).await?;
    let last = report.last.as_ref();
    println!(
        "{}",
        serde_json::json!({
            "frames_decoded": report.frames_decoded,
            "decode_errors": report.decode_errors,
            "width": last.map(|p| p.width),
            "height": last.map(|p| p.height),
            "bars": last.map(|p| p.bars),
            "time_to_first_frame_ms": report.time_to_first_frame.map(|t| t.as_millis() as u64),
            "audio_frames": report.audio_frames,
            "audio_rms": report.audio_rms,
            "delete_status": report.delete_status,
        })
    );
    Ok(())
}
