//! onair-signal: where cameras behind NAT register their channel and viewers join them.
//!
//! - [`hub`]: the protocol (GStreamer's webrtcsink signalling protocol) and onair's rules on
//!   top of it, as a pure state machine.
//! - [`auth`]: device and viewer tokens.
//! - [`service`]: the hub behind a lock with a message queue per peer; every transport
//!   talks to it.
//! - [`server`]: HTTP and WebSocket routes (`/ws`, `/api/channels`).
//! - [`whep`]: the WHEP gateway (`POST /whep/{channel}`).
//! - [`webhooks`]: channel and viewer events POSTed to configured URLs.
//! - [`http`]: serving the routes with timeouts and a connection cap (onaird's too).
//! - [`tls`]: HTTPS and WSS when a certificate is configured.
//! - [`process`]: logs, runtime and signals for the binaries (onair-signal's and onaird's).
//! - [`redact`]: URLs that may hold secrets, as logs and viewers may see them.
//!
//! [`run`] serves all of it on the configured address; onaird, with no signaling URL of its
//! own, mounts the same routes in its HTTP server instead.

pub mod auth;
pub mod http;
pub mod hub;
pub mod ice_http;
pub mod process;
pub mod redact;
pub mod server;
pub mod service;
pub mod tls;
pub mod webhooks;
pub mod whep;

use std::future::Future;

use anyhow::Context as _;
use onair_config::SignalConfig;
use tracing::{info, warn};

pub use service::{Connection, Service};

/// A service configured by `config`, delivering its events to the configured webhooks.
/// Must run inside a tokio runtime (the webhook tasks start here).
pub fn service(config: &SignalConfig) -> Service {
    Service::new(
        auth::Policy::new(config),
        config.limits.max_sessions_per_channel as usize,
        config.limits.max_message_bytes as usize,
        webhooks::start(&config.webhooks),
    )
}

/// Serves the signalling service until `shutdown` completes.
pub async fn run(
    config: SignalConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !config.devices_need_tokens() {
        warn!("no auth.device_key and no [[channels]]: any camera may publish any free channel");
    }
    let service = service(&config);
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "server.listen = \"{}\": cannot listen",
                config.server.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let app = server::router(service.clone(), config.limits.max_websockets as usize)
        .merge(server::ice_servers_router(
            service.clone(),
            config.ice_servers.clone(),
        ))
        .merge(server::whep_router(whep::Gateway::new(service)));
    let (tls, scheme) = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => (Some(tls::acceptor("server", cert, key)?), "s"),
        _ => (None, ""),
    };
    info!(
        "onair-signal {} listening on http{scheme}://{addr} (WebSocket: ws{scheme}://{addr}/ws)",
        env!("CARGO_PKG_VERSION")
    );
    let limits = http::Limits {
        max_connections: config.limits.max_connections as usize,
        ..http::Limits::default()
    };
    http::serve(listener, tls, app, limits, shutdown).await;
    info!("stopped");
    Ok(())
}
