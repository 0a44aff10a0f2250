//! What both binaries, onaird and onair-signal, do around their service: logs fit for a
//! terminal and for journald, the async runtime, and stopping on SIGTERM or Ctrl-C.

use std::future::Future;
use std::io::IsTerminal as _;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tracing::subscriber::Interest;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

/// How long blocking tasks still running after the service stopped may take to finish.
const BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Completes when the program should stop.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Logs to stderr, filtered by `RUST_LOG` or else by `default_filter` (both a list of
/// `target=level` and `level`, e.g. `info,onaird=debug`; a `RUST_LOG` that is not one is
/// said so and ignored); colours only on a terminal, and no timestamps under journald
/// (`JOURNAL_STREAM`), which stamps every line itself. Whatever `RUST_LOG` says, warnings and
/// what the WebRTC stack logs are [`Quieted`].
pub fn init_logs(default_filter: &str) {
    use tracing_subscriber::util::SubscriberInitExt as _;
    let given = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let parsed = given.as_deref().map(str::parse::<Targets>);
    if let Some(Err(err)) = &parsed {
        eprintln!("RUST_LOG: {err}; logging {default_filter:?} instead");
    }
    let filter = match parsed {
        Some(Ok(filter)) => filter,
        _ => default_filter.parse().unwrap_or_default(),
    };
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    logs(filter, std::io::stderr, journal).init();
}

/// What [`init_logs`] installs, writing to `writer`. Its filters are the whole subscriber's
/// (no per-layer filters: their state is per thread, and nested ones have lost events).
fn logs<W>(filter: Targets, writer: W, journal: bool) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal() && !journal);
    let logs = match journal {
        true => logs.without_time().boxed(),
        false => logs.boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(Quieted::default())
        .with(logs)
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

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Quieted {
    /// Decided event by event ([`Self::enabled`]): a callsite's interest is cached for good,
    /// and `log` records share a few callsites whatever their target.
    fn register_callsite(&self, meta: &'static tracing::Metadata<'static>) -> Interest {
        match meta.is_event() {
            true => Interest::sometimes(),
            false => Interest::always(),
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        self.passes(meta)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what is written.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Written {
        type Writer = Written;
        fn make_writer(&'w self) -> Written {
            self.clone()
        }
    }

    #[test]
    fn repeated_warnings_are_quieted_secrets_dropped_and_nothing_else_lost() {
        let written = Written::default();
        let subscriber = logs("debug".parse().unwrap(), written.clone(), true);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..100 {
                tracing::warn!(target: "rtc_ice::agent", "pingAllCandidates {i}");
                tracing::debug!(target: "rtc_ice::agent", "remotePwd: SECRET{i}");
                tracing::debug!(target: "ureq::run", "POST http://sfu/whip/KEY{i}");
                tracing::info!(target: "onaird::webrtc", "viewer gone {i}");
                tracing::warn!(target: "onaird::webrtc", "refused {i}");
            }
        });
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        let count = |what: &str| text.lines().filter(|l| l.contains(what)).count();
        assert_eq!(count("viewer gone"), 100, "{text}");
        assert_eq!(count("pingAllCandidates"), 1, "{text}");
        assert_eq!(count("refused"), 1, "{text}");
        assert_eq!(count("SECRET") + count("KEY"), 0, "{text}");
    }
}
