//! `onair-signal`: parse the command line and the config, start logging, serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use onair_config::SignalConfig;

/// Used when `--config` is not given and the file exists.
const SYSTEM_CONFIG: &str = "/etc/onair/onair-signal.toml";

/// Signalling service for onair cameras: channels, viewers, a WHEP gateway.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Default: /etc/onair/onair-signal.toml if it exists, else defaults.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Check a config file, print OK or every error, and exit.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Listen address, overriding server.listen (e.g. 127.0.0.1:8443; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the device token of CHANNEL (derived from auth.device_key), for its camera's
    /// signaling.token.
    Token {
        /// The channel name.
        channel: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_config {
        return match SignalConfig::load(path) {
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
    let config = match load(&cli) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Token { channel }) = &cli.command {
        return print_token(&config, channel);
    }

    onair_signal::process::init_logs("info");
    onair_signal::process::run("onair-signal", |stop| onair_signal::run(config, stop))
}

fn print_token(config: &SignalConfig, channel: &str) -> ExitCode {
    if let Some(problem) = onair_config::channel_name_problem(channel) {
        eprintln!("channel {channel:?}: {problem}");
        return ExitCode::FAILURE;
    }
    if let Some(entry) = config.channels.iter().find(|c| c.name == channel) {
        eprintln!("channel {channel:?} has its own token in [[channels]]:");
        println!("{}", entry.token);
        return ExitCode::SUCCESS;
    }
    match &config.auth.device_key {
        Some(key) => {
            println!("{}", onair_signal::auth::device_token(key, channel));
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("auth.device_key is not set in the config: there is no token to derive");
            ExitCode::FAILURE
        }
    }
}

/// The config file (or defaults) with command-line overrides applied and checked.
fn load(cli: &Cli) -> Result<SignalConfig, String> {
    let path = cli.config.clone().or_else(|| {
        let system = Path::new(SYSTEM_CONFIG);
        system.exists().then(|| system.to_path_buf())
    });
    let mut config = match &path {
        Some(path) => SignalConfig::load(path).map_err(|e| e.to_string())?,
        None => SignalConfig::default(),
    };
    if let Some(listen) = cli.listen {
        config.server.listen = listen;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}
