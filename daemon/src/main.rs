//! `onaird`: parse the command line and the config, start logging, run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use onair_config::{Config, VideoSourceSetting};

/// Used when `--config` is not given and the file exists.
const SYSTEM_CONFIG: &str = "/etc/onair/onair.toml";

/// `onaird --help`.
const HELP: &str = "\
Camera appliance daemon: captures, encodes once, and casts to WebRTC viewers.

Usage: onaird [OPTIONS]

Options:
      --config <FILE>        Config file (TOML). Default: /etc/onair/onair.toml if it exists,
                             else built-in defaults
      --check-config <FILE>  Check a config file, print OK or every error, and exit
      --listen <ADDR>        HTTP listen address, overriding http.listen (e.g. 127.0.0.1:8080)
      --video-source <SRC>   Video source, overriding video.source: \"test\", \"auto\",
                             \"libcamera\" or a device path (/dev/videoN)
      --print-url            Print the viewer page's URL, with the viewer token when one is
                             needed, and exit
  -h, --help                 Print help
  -V, --version              Print version
";

/// The command line. (Five options: parsed with `lexopt`, which costs the arm64 binary
/// about 200 kB less than clap.)
#[derive(Debug, Default)]
struct Cli {
    config: Option<PathBuf>,
    check_config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    video_source: Option<VideoSourceSetting>,
    print_url: bool,
}

/// What the command line asks for.
enum Asked {
    Run(Cli),
    Help,
    Version,
}

impl Cli {
    fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Asked, lexopt::Error> {
        use lexopt::prelude::*;
        let mut cli = Cli::default();
        let mut parser = lexopt::Parser::from_args(args);
        while let Some(arg) = parser.next()? {
            match arg {
                Long("config") => cli.config = Some(parser.value()?.into()),
                Long("check-config") => cli.check_config = Some(parser.value()?.into()),
                Long("listen") => cli.listen = Some(parser.value()?.parse()?),
                Long("video-source") => cli.video_source = Some(parser.value()?.parse()?),
                Long("print-url") => cli.print_url = true,
                Short('h') | Long("help") => return Ok(Asked::Help),
                Short('V') | Long("version") => return Ok(Asked::Version),
                _ => return Err(arg.unexpected()),
            }
        }
        if cli.config.is_some() && cli.check_config.is_some() {
            return Err("--check-config cannot be used with --config".into());
        }
        Ok(Asked::Run(cli))
    }
}

fn main() -> ExitCode {
    let cli = match Cli::parse(std::env::args_os().skip(1)) {
        Ok(Asked::Run(cli)) => cli,
        Ok(Asked::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Asked::Version) => {
            println!("onaird {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("onaird: {err}\n\nFor more information, try '--help'.");
            return ExitCode::from(2);
        }
    };
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
