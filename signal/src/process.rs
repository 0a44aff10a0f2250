//! What both binaries, onaird and onair-signal, do around their service: logs fit for a
//! terminal and for journald, the async runtime, and stopping on SIGTERM or Ctrl-C.

use std::future::Future;
use std::io::IsTerminal as _;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

/// How long blocking tasks still running after the service stopped may take to finish.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Completes when the program should stop.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Logs to stderr, filtered by `RUST_LOG` or else by `default_filter`; colours only on a
/// terminal, and no timestamps under journald (`JOURNAL_STREAM`), which stamps every line
/// itself. Whatever `RUST_LOG` says, warnings and what the WebRTC stack logs are [`Quieted`].
pub fn init_logs(default_filter: &str) {
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let quieted = Quieted::default();
    let quiet = tracing_subscriber::filter::filter_fn(move |meta| quieted.passes(meta));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match std::env::var_os("JOURNAL_STREAM") {
        Some(_) => logs.without_time().boxed(),
        None => logs.boxed(),
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter).with_filter(quiet))
        .init();
}

/// Targets (and those under them) whose debug and trace lines carry secrets: webrtc-rs's ICE
/// agent logs the viewer's ICE password when it starts, the HTTP and WebSocket clients the
/// URLs they fetch (WHIP ingest keys, tokens in query strings). They log at `info` at most.
const SECRET_BEARING: [&str; 4] = ["rtc_ice::agent", "ureq", "tungstenite", "tokio_tungstenite"];

/// How often one warning, or one line of the WebRTC stack, may be logged.
const STACK_LINE_EVERY: Duration = Duration::from_secs(10);

/// What may be logged: nothing from [`SECRET_BEARING`] below `info`, and each warning, and
/// each line of the WebRTC stack (webrtc-rs, targets `rtc…` and `webrtc…`), at most once
/// every [`STACK_LINE_EVERY`] (by source line). Much of that a stranger can cause (an offer
/// that never connected made ~100 warnings, every refused connection one), and a camera's
/// log is on an SD card.
#[derive(Default)]
struct Quieted {
    /// When each line (a hash of its file, line and target) was last let through.
    last: std::sync::Mutex<std::collections::HashMap<u64, Instant>>,
}

impl Quieted {
    fn passes(&self, meta: &tracing::Metadata<'_>) -> bool {
        let target = meta.target();
        if *meta.level() > tracing::Level::INFO
            && SECRET_BEARING.iter().any(|t| target.starts_with(t))
        {
            return false;
        }
        let stack = target.starts_with("rtc") || target.starts_with("webrtc");
        if !meta.is_event() || !(stack || *meta.level() == tracing::Level::WARN) {
            return true;
        }
        let key = {
            use std::hash::{Hash as _, Hasher as _};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (meta.file(), meta.line(), target).hash(&mut hasher);
            hasher.finish()
        };
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 10_000 {
            last.clear();
        }
        match last.get(&key) {
            Some(at) if now.duration_since(*at) < STACK_LINE_EVERY => false,
            _ => {
                last.insert(key, now);
                true
            }
        }
    }
}

/// Runs `serve(stop)` to its end on a new runtime, `stop` completing on SIGTERM or Ctrl-C.
/// Neither program reloads its config (every setting shapes what is running, so a reload
/// would be a restart): SIGHUP is logged with that advice for `program` instead of ending
/// it. Failure is logged and gives a failing exit code.
pub fn run<F, Fut>(program: &'static str, serve: F) -> ExitCode
where
    F: FnOnce(Stop) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    raise_file_limit(program);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(serve(Box::pin(stop_requested(program))));
    // Dropping a runtime waits for its blocking tasks without limit (a webhook POST in
    // flight, a read that hangs): give them a moment, then exit anyway.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every connection and every viewer's socket is a file descriptor; the usual soft limit of
/// 1024 would cap them long before memory does. Raised to the hard limit (systemd's is
/// 524288), as Go and nginx do.
fn raise_file_limit(program: &str) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("{program}: up to {limit} open files"),
        Err(err) => tracing::warn!("{program}: cannot raise the open-file limit: {err}"),
    }
}

async fn stop_requested(program: &'static str) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => tracing::warn!(
                "SIGHUP: {program} does not reload its config; restart it (systemctl restart {program}) to apply changes"
            ),
        }
    }
    tracing::info!("stop requested");
}
