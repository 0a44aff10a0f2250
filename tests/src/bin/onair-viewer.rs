//! A command-line WHEP viewer: joins, decodes, prints what it saw as one line of JSON.
//!
//! `onair-viewer http://127.0.0.1:8080/whep [FRAMES] [SECONDS] [--vanish] [--tcp]`
//!
//! The end-to-end tests run it as a separate process so that they can make it leave the way
//! a viewer's machine dies: without a DELETE. Killed, or with `--vanish`, which prints the
//! report once FRAMES pictures are decoded and exits at once: no DELETE, no DTLS close,
//! nothing more on the wire.

use std::time::Duration;

use clap::Parser;
use onair_tests::viewer::{Network, Via, Viewer, Watch};

#[derive(Parser)]
#[command(about = "A WHEP viewer that decodes and prints what it saw as JSON")]
struct Args {
    /// The WHEP endpoint, e.g. http://127.0.0.1:8080/whep
    url: String,
    /// Leave after this many decoded pictures.
    #[arg(default_value_t = 60)]
    frames: usize,
    /// Leave after this many seconds whatever happened.
    #[arg(default_value_t = 10)]
    seconds: u64,
    /// Exit without leaving: no DELETE, no close (the daemon must time the session out).
    #[arg(long)]
    vanish: bool,
    /// Gather TCP candidates only (ICE-TCP), as a viewer on a network that blocks UDP.
    #[arg(long)]
    tcp: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let how = Watch::decoding(args.frames, Duration::from_secs(args.seconds));
    let network = if args.tcp { Network::Tcp } else { Network::Udp };
    let viewer = Viewer::join_over(Via::Whep(args.url), how, network).await?;
    let report = if args.vanish {
        viewer.wait_for(how.frames, how.within).await
    } else {
        viewer.wait_for(how.frames, how.within).await;
        viewer.leave().await?
    };
    let last = report.last.as_ref();
    println!(
        "{}",
        serde_json::json!({
            "frames_decoded": report.frames_decoded,
            "decode_errors": report.decode_errors,
            "start_skipped": report.start_skipped,
            "partial_keyframes": report.partial_keyframes,
            "width": last.map(|p| p.width),
            "height": last.map(|p| p.height),
            "bars": last.map(|p| p.bars),
            "time_to_first_frame_ms": report.time_to_first_frame.map(|t| t.as_millis() as u64),
            "audio_frames": report.audio_frames,
            "audio_rms": report.audio_rms,
            "delete_status": report.delete_status,
        })
    );
    if args.vanish {
        // Straight out: destructors would close the peer connection politely.
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    }
    Ok(())
}
