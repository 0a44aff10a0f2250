//! `onaird`: parse the command line and the config, start logging, run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use onair_config::{Config, VideoSourceSetting};

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
    /// Video source, overriding video.source: "test", "auto", "libcamera" or a device path (/dev/videoN).
    #[arg(long, value_name = "SRC")]
    video_source: Option<VideoSourceSetting>,
    /// Print the viewer page's URL, with the viewer token when one is needed, and exit.
    #[arg(long)]
    print_url: bool,
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

    onair_signal::process::init_logs("info,webrtc=warn,rtc=warn");

    let config = match load(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    if cli.print_url {
        return print_url(&config);
    }
    onair_signal::process::run("onaird", |stop| onaird::run(config, stop))
}

/// `--print-url`: reads the tokens (the token file is made by onaird's first start).
fn print_url(config: &Config) -> ExitCode {
    match onaird::http::access::Tokens::resolve(&config.access, false) {
        Ok((tokens, _)) => {
            println!(
                "{}",
                onaird::viewer_url(config, config.http.listen, &tokens)
            );
            if !tokens.protected() {
                eprintln!("no access.viewer_token: anyone who reaches the camera may watch");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err:#}");
            if config.access.token_file.is_some() {
                eprintln!(
                    "(onaird makes the token file when it first starts; reading it needs root: sudo onaird --print-url)"
                );
            }
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
