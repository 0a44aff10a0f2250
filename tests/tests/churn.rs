//! A minute of viewers joining and leaving onaird, one a second, every third one vanishing
//! without a DELETE: afterwards the daemon holds what it held before (no session, the same
//! descriptors, sockets and threads) and its memory has not run away. The 10-minute version,
//! with figures, is `./dev bench churn` (docs/PERFORMANCE.md).

use std::time::Duration;

use onair_tests::churn::{self, Plan, ended_by_reason, one_viewer, settle};
use onair_tests::daemon::Daemon;

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n";

/// Pictures every viewer decodes before it leaves: proof it was really connected.
const FRAMES: usize = 10;

/// How long the daemon may take to give everything back once the last viewer is gone: a
/// vanished viewer's session ends after ICE notices the silence and the 10 s grace
/// (daemon/src/webrtc/session.rs), and tokio lets an idle blocking thread go after 10 s.
const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_viewers_joining_and_leaving_leaks_nothing() {
    let daemon = Daemon::start(SMALL).unwrap();
    let (pid, url) = (daemon.pid(), daemon.base_url.clone());
    // One viewer first, so that what the first session sets up once for good (the encoder's
    // first IDR, pools, caches) is in the baseline.
    one_viewer(format!("{url}/whep"), FRAMES, false)
        .await
        .unwrap();
    let baseline = churn::idle(pid, &url, Duration::from_secs(10))
        .await
        .unwrap();
    eprintln!("baseline: {baseline}");

    let plan = Plan {
        duration: Duration::from_secs(60),
        join_every: Duration::from_secs(1),
        vanish_every: 3,
        frames: FRAMES,
        sample_every: Duration::from_secs(10),
    };
    let outcome = churn::run(pid, &url, plan, |at, held| {
        eprintln!("{:>3} s: {held}", at.as_secs())
    })
    .await
    .unwrap();
    eprintln!(
        "{} viewers joined, {} vanished, peak {} sessions",
        outcome.joined,
        outcome.vanished,
        outcome.peak_sessions()
    );
    assert!(
        outcome.joined >= 55,
        "only {} viewers joined",
        outcome.joined
    );
    assert!(
        outcome.failures.is_empty(),
        "{} viewers failed:\n{}",
        outcome.failures.len(),
        outcome.failures.join("\n")
    );
    assert!(outcome.peak_sessions() > 0, "no session ever seen");

    let (end, took) = settle(pid, &url, &baseline, SETTLE).await.unwrap();
    eprintln!("{:.1} s after the last viewer: {end}", took.as_secs_f64());
    assert!(
        end.back_to(&baseline),
        "not back after {SETTLE:?}:\nbefore: {baseline}\nafter:  {end}"
    );
    // Every session ended, each the way its viewer left: by DELETE, or timed out.
    // + 1: the warm-up viewer.
    let reasons = ended_by_reason(&daemon.log, outcome.joined + 1, Duration::from_secs(5));
    eprintln!("sessions ended: {reasons:?}");
    let deleted = reasons.get("Deleted").copied().unwrap_or(0);
    let timed_out: usize = ["Lost", "Failed", "PeerClosed"]
        .iter()
        .filter_map(|r| reasons.get(*r))
        .sum();
    // + 1: the warm-up viewer.
    assert_eq!(
        deleted,
        outcome.joined - outcome.vanished + 1,
        "{reasons:?}"
    );
    assert_eq!(timed_out, outcome.vanished, "{reasons:?}");
    // A runaway check, not a figure (small leaks are the soak benchmark's to show, as RSS
    // drift). RSS rises once by the allocator's high-water mark of the busiest moment (~1 MB
    // per concurrent session, docs/PERFORMANCE.md) and then stays; twice the baseline leaves
    // room for a loaded machine's larger crowd of sessions.
    assert!(
        end.rss_kb < baseline.rss_kb * 2,
        "RSS grew from {} to {} KiB",
        baseline.rss_kb,
        end.rss_kb
    );
}
