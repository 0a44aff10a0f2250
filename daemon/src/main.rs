//! `onaird`: parse the command line and the config, start logging, run.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use onair_config::{Config, VideoSourceSetting};
use tracing_subscriber::EnvFilter;

/// Used when `--config` is not given and the file exists.
const SYSTEM_CONFIG: &str = "/etc/onair/onair.toml";

/// Camera appliance daemon: captures, encodes once, and casts to WebRTC viewers.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Default: /etc/onair/onair.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check a config file, print OK or every error, and exit.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// HTTP listen address, overriding http.listen (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Video source, overriding video.source: "test", "auto" or a device path (/dev/videoN).
    #[arg(long, value_name = "SRC")]
    video_source: Option<VideoSourceSetting>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(_) => {
                println!("{}: OK", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        };
    }

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,webrtc=warn,rtc=warn"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    // Under systemd the journal stamps every line itself: no second timestamp.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logs.without_time().init();
    } else {
        logs.init();
    }

    let config = match load(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(onaird::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The config file (or defaults) with command-line overrides applied and checked.
fn load(cli: &Cli) -> Result<Config, String> {
    let path = cli.config.clone().or_else(|| {
        Path::new(SYSTEM_CONFIG)
            .exists()
            .then(|| SYSTEM_CONFIG.into())
    });
    let mut config = match &path {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.http.listen = listen;
    }
    if let Some(source) = &cli.video_source {
        config.video.source = source.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    match &path {
        Some(path) => tracing::info!("config: {}", path.display()),
        None => tracing::info!("config: built-in defaults (no {SYSTEM_CONFIG})"),
    }
    Ok(config)
}

/// Completes on Ctrl-C or SIGTERM. SIGHUP does not reload (every setting shapes the capture
/// and encode pipeline and the open sessions, so a reload would be a restart): it is logged
/// with that advice instead of ending the daemon.
async fn shutdown_signal() {
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
                "SIGHUP: onaird does not reload its config; restart it (systemctl restart onaird) to apply changes"
            ),
        }
    }
    tracing::info!("stop requested");
}
