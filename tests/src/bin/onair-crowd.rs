//! N viewers in one process, counting pictures without decoding them: the audience of the
//! fan-out benchmark (tests/src/bench/fanout.rs), kept out of the server's process.
//!
//! `onair-crowd --viewers 10 --whep http://127.0.0.1:8080/whep`
//! `onair-crowd --viewers 10 --janus http://127.0.0.1:8088/janus --mountpoint 1 --bind IP`
//!
//! Prints `{"event":"ready",…}` once every viewer has a picture, then reads lines on its
//! input: `mark` starts the window, `stop` (or the end of input) makes every viewer leave and
//! prints `{"event":"report",…}`: pictures and bytes each viewer received in the window.

use clap::Parser;
use onair_tests::bench::fanout::crowd::{Crowd, READY_WITHIN};
use onair_tests::viewer::Via;

#[derive(Parser)]
#[command(about = "Viewers that count pictures without decoding them, for the fan-out benchmark")]
struct Args {
    /// How many viewers.
    #[arg(long)]
    viewers: usize,
    /// Join onaird (or any WHEP server) at this endpoint.
    #[arg(long, conflicts_with = "janus", required_unless_present = "janus")]
    whep: Option<String>,
    /// Join a Janus streaming mountpoint through this HTTP API root.
    #[arg(long, requires = "mountpoint")]
    janus: Option<String>,
    /// The Janus mountpoint's id.
    #[arg(long)]
    mountpoint: Option<u64>,
    /// The local address Janus viewers receive on (WHEP viewers use 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let via = match (args.whep, args.janus, args.mountpoint) {
        (Some(url), _, _) => Via::Whep(url),
        (None, Some(api), Some(mountpoint)) => Via::Janus {
            api,
            mountpoint,
            bind: args.bind,
        },
        _ => anyhow::bail!("--whep URL or --janus API --mountpoint ID"),
    };
    let mut crowd = Crowd::join(via, args.viewers).await;
    println!("{}", crowd.ready(READY_WITHIN).await);
    let mut input = input_lines();
    while let Some(line) = input.recv().await {
        match line.trim() {
            "mark" => crowd.mark(),
            "stop" => break,
            _ => {}
        }
    }
    println!("{}", crowd.leave().await);
    Ok(())
}

/// Lines of standard input, read on a thread of their own; the channel closes at its end.
fn input_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
