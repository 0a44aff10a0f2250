//! onaird: captures a camera and a microphone, encodes H.264 and Opus once, and casts them
//! over WebRTC to every viewer.
//!
//! The modules follow a frame through the daemon:
//! - [`media`]: devices → convert → encode (one encoder per medium, shared by all viewers).
//! - [`webrtc`]: one session per viewer, fed from the shared encoded units.
//! - [`record`]: the same encoded units into MP4 segments on disk, when `[record]` says so.
//! - [`http`]: who joins directly: the viewer page, WHEP, health and status.
//! - [`signaling`]: who joins by channel name: registration with a signalling service
//!   (remote, or built in and mounted on the HTTP port).
//! - [`whip`]: who joins through a media server: the stream published once over WHIP.
//! - [`gpio`]: on-air LED, status LED and privacy button, when pins are configured.
//!
//! [`run`] wires them together under one [`lifecycle`]; `main.rs` only parses the command
//! line.

pub mod gpio;
pub mod http;
pub mod lifecycle;
pub mod media;
pub mod record;
pub mod service;
pub mod signaling;
pub mod webrtc;
pub mod whip;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use onair_config::Config;
use tracing::{info, warn};

/// How long HTTP requests in flight may take to finish once a stop is requested (sessions
/// close at once, so the daemon is gone within about this long of SIGTERM).
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);
/// How long everything else may take to end after HTTP. A capture thread notices the stop
/// between two reads, so within a frame; one blocked in a device read that does not return
/// (a driver that hangs, a microphone that delivers nothing) is left behind and ends with the
/// process, so SIGTERM is never held up by a device.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs the daemon until `shutdown` completes, then closes every session and stops capture.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // Everything started below runs under it; returning early (an error) gives its stop too.
    let lifecycle = lifecycle::Lifecycle::default();
    let _stop_on_return = lifecycle.stop_signal().on_drop();
    let (tokens, made_tokens) = http::access::Tokens::resolve(&config.access, true)?;
    let tokens = Arc::new(tokens);
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => Some(onair_signal::tls::acceptor("http", cert, key)?),
        _ => None,
    };
    let media = media::Pipeline::start(&config, &lifecycle)?.handle();
    record::recorder::start(&config.record, &media, &lifecycle)?;
    let sessions = webrtc::Sessions::new(media.clone(), &config.webrtc, &lifecycle)
        .with_context(|| format!("webrtc.port = {}: cannot bind", config.webrtc.port))?;
    let identity = signaling::Identity {
        channel: config.device.channel.clone(),
        name: config.device.name.clone(),
        device: format!("{:016x}", rand::random::<u64>()),
    };
    // The channel is always registered with a service running here, on the HTTP port, for
    // local viewers; and with the configured remote service, if any, for everyone else.
    let max_message_bytes = onair_config::signal::Limits::default().max_message_bytes;
    let (local, local_target) = signaling::built_in(&identity, max_message_bytes as usize);
    let local_registration =
        signaling::Signaling::start(local_target, identity.clone(), sessions.clone(), &lifecycle);
    let remote_registration = config.signaling.url.as_ref().map(|url| {
        let target = signaling::Target::Remote {
            url: url.clone(),
            token: config.signaling.token.clone(),
        };
        signaling::Signaling::start(target, identity, sessions.clone(), &lifecycle)
    });
    // Status and the status LED report the registration that matters to remote viewers.
    let registration = remote_registration.as_ref().unwrap_or(&local_registration);
    let signaling_name = config
        .signaling
        .url
        .clone()
        .unwrap_or_else(|| "built-in".to_owned());
    let publisher = match &config.whip.url {
        Some(url) => Some(Arc::new(
            whip::Publisher::start(&config.whip, sessions.clone(), &lifecycle)
                .with_context(|| format!("whip.url = {}", onair_signal::redact::url(url)))?,
        )),
        None => None,
    };
    start_gpio(
        &config,
        &media,
        &sessions,
        registration.registered_flag(),
        &lifecycle,
    );

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen = \"{}\": cannot listen", config.http.listen))?;
    let addr = listener.local_addr()?;
    // HTTP listens: systemd hears READY=1 once a picture is encoded (and the channel
    // registered, with a remote service).
    service::start(
        media.stats.clone(),
        sessions.clone(),
        registration.registered_flag(),
        remote_registration.is_some(),
        &lifecycle,
    );
    info!(channel = %config.device.channel, "onaird {} listening on {}://{addr}", env!("CARGO_PKG_VERSION"), scheme(&config));
    // The viewer token is in the journal once, when the token file is made; after that the
    // journal says how to print it.
    let page = page_url(&config, addr);
    match (tokens.protected(), made_tokens) {
        (true, true) => info!(
            "open {} in a browser to watch (new viewer token; `sudo onaird --print-url` prints this URL again); WHEP endpoint: {page}whep",
            viewer_url(&config, addr, &tokens)
        ),
        (true, false) => info!(
            "open {page}?token=… in a browser to watch (`sudo onaird --print-url` prints the URL with the viewer token); WHEP endpoint: {page}whep"
        ),
        (false, _) => info!("open {page} in a browser to watch; WHEP endpoint: {page}whep"),
    }
    if !tokens.protected() && !addr.ip().is_loopback() {
        warn!("no access.viewer_token: anyone who reaches {addr} may watch (README: \"Access\")");
    }

    let app = http::router(
        http::AppState {
            sessions: sessions.clone(),
            media,
            channel: config.device.channel.clone(),
            name: config.device.name.clone(),
            started,
            signaling: signaling_name,
            registered: registration.registered_flag(),
            signaling_connected: registration.connected_flag(),
            ice_links: onair_signal::ice_http::ice_server_links(&config.webrtc.ice_servers).into(),
            ice_servers: config.webrtc.ice_servers.clone().into(),
            recordings: config
                .record
                .enabled
                .then(|| record::recorder::directory(&config.record).into()),
            publisher: publisher.clone(),
        },
        local,
        tokens,
        &config.http,
    );
    // The signal gives the stop: sessions close at once (viewers see their connection end),
    // the media server's session is DELETEd, capture and the rest end, all in parallel with
    // HTTP finishing the requests in flight; a client that keeps a request open cannot hold
    // shutdown beyond HTTP_DRAIN.
    let stop = lifecycle.stop_signal();
    let stopping = stop.clone();
    lifecycle.spawn(async move {
        shutdown.await;
        service::stopping();
        stopping.stop();
    });
    let stopping = stop.clone();
    let server = onair_signal::http::serve(
        listener,
        tls,
        app,
        onair_signal::http::Limits::default(),
        async move { stopping.stopped().await },
    );
    let drained = async {
        stop.stopped().await;
        info!("shutting down: closing {} session(s)", sessions.len());
        if let Some(publisher) = &publisher {
            publisher.stop(&sessions).await;
        }
        tokio::time::sleep(HTTP_DRAIN).await;
    };
    tokio::select! {
        () = server => {}
        () = drained => warn!("HTTP requests still open {HTTP_DRAIN:?} after the stop signal; closing them"),
    }
    if let Some(publisher) = &publisher {
        publisher.stop(&sessions).await;
    }
    let left = lifecycle.finish(STOP_WAIT).await;
    for name in &left.threads {
        warn!(
            "{name}: still blocked in a device read {STOP_WAIT:?} after the stop; not waiting for it"
        );
    }
    if left.tasks > 0 {
        warn!(
            "{} task(s) still running {STOP_WAIT:?} after the stop; not waiting for them",
            left.tasks
        );
    }
    info!("stopped");
    Ok(())
}

/// Starts the LED and privacy-button thread if `[gpio]` sets a pin and GPIO opens; otherwise
/// the daemon runs without it (see [`gpio::open`]).
fn start_gpio(
    config: &Config,
    media: &media::MediaHandle,
    sessions: &webrtc::Sessions,
    registered: std::sync::Arc<std::sync::atomic::AtomicBool>,
    lifecycle: &lifecycle::Lifecycle,
) {
    let Some(device) = gpio::open(&config.gpio) else {
        return;
    };
    let privacy = media.privacy_switch();
    let (stats, sessions) = (media.stats.clone(), sessions.clone());
    let sense = move |now| gpio::Health {
        viewers: sessions.viewers(),
        camera_ok: stats
            .since_last_frame(now)
            .is_some_and(|age| age <= media::STALL),
        signaling_ok: registered.load(std::sync::atomic::Ordering::Relaxed),
    };
    if let Err(err) = gpio::Poller::new(device, privacy).spawn(sense, lifecycle) {
        warn!("cannot start the GPIO thread: {err}; running without it");
    }
}

fn scheme(config: &Config) -> &'static str {
    if config.http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The page's URL for people: a wildcard listen address is reachable by the machine's name.
fn page_url(config: &Config, addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    format!("{}://{host}:{}/", scheme(config), addr.port())
}

/// The viewer page's URL with the viewer token, if one is needed.
pub fn viewer_url(config: &Config, addr: SocketAddr, tokens: &http::access::Tokens) -> String {
    let page = page_url(config, addr);
    match &tokens.viewer_token {
        Some(token) => format!("{page}?token={token}"),
        None => page,
    }
}
