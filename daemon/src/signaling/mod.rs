//! Who joins through a signalling service: the camera registers its channel as a producer
//! (GStreamer's webrtcsink signalling protocol) and serves every viewer the service sends.
//!
//! - [`producer`]: the protocol on one connection.
//! - [`link`]: the connection, to a remote service over WebSocket or to the service running
//!   inside onaird (the default, with no `signaling.url`). Both take the same path above.
//! - [`liveness`]: noticing a remote service that died or froze without closing.
//! - [`backoff`]: reconnection delays.
//!
//! The connection is kept up for the daemon's life: when it drops, falls silent for 25 s, or
//! the service refuses the channel, onaird reconnects after a jittered exponential backoff
//! (1 s → 30 s). A channel refused as "already live" is usually this camera's own previous
//! connection, which the service has not dropped yet: the retries get it back once it has
//! (at once with a device token). Local WHEP viewers are served all along.

pub mod backoff;
pub mod link;
pub mod liveness;
pub mod producer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{error, info, warn};

use crate::lifecycle::Lifecycle;
use crate::webrtc::{MAX_SESSIONS, Sessions};
use backoff::Backoff;
use link::Link;
pub use producer::Identity;

/// Where the service is.
#[derive(Clone)]
pub enum Target {
    /// A remote service: `signaling.url` and `signaling.token`.
    Remote {
        /// `ws://` or `wss://` URL.
        url: String,
        /// Device token.
        token: Option<String>,
    },
    /// The service inside this process (see [`built_in`]).
    Local {
        /// The service.
        service: onair_signal::Service,
        /// The device token that proves this camera to it.
        token: String,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The URL may carry a secret (a token in its query): shown redacted.
            Target::Remote { url, .. } => f.write_str(&onair_signal::redact::url(url)),
            Target::Local { .. } => f.write_str("the built-in service"),
        }
    }
}

/// The signalling service built into onaird, and how this camera reaches it. Viewers list
/// and join without a token; only this camera may publish, and only its own channel: it
/// presents a device token made at random for this run. So nobody on the network registers
/// channels on the camera's port, or takes the camera's channel while the camera's own
/// connection is being replaced (which the token then does at once).
pub fn built_in(identity: &Identity, max_message_bytes: usize) -> (onair_signal::Service, Target) {
    let token = format!("{:032x}", rand::random::<u128>());
    let policy = onair_signal::auth::Policy::one_camera(&identity.channel, token.clone());
    let service = onair_signal::Service::new(policy, MAX_SESSIONS, max_message_bytes, None);
    let target = Target::Local {
        service: service.clone(),
        token,
    };
    (service, target)
}

/// The running registration (it ends at the daemon's stop): what it reports.
pub struct Signaling {
    registered: Arc<AtomicBool>,
    /// Connected to the service (registered or not), for `/metrics`.
    connected: Arc<AtomicBool>,
}

impl Signaling {
    /// Keeps `identity`'s channel registered with `target`, serving viewers from `sessions`,
    /// until `lifecycle`'s stop.
    pub fn start(
        target: Target,
        identity: Identity,
        sessions: Sessions,
        lifecycle: &Lifecycle,
    ) -> Self {
        let registered = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let flags = Flags {
            registered: registered.clone(),
            connected: connected.clone(),
        };
        let registration = keep_registered(target, identity, sessions, flags, lifecycle.clone());
        lifecycle.spawn(registration);
        Signaling {
            registered,
            connected,
        }
    }

    /// Whether the channel is registered right now.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// The flag behind [`Self::registered`], for status and the status LED.
    pub fn registered_flag(&self) -> Arc<AtomicBool> {
        self.registered.clone()
    }

    /// Set while connected to the service, registered or not.
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }
}

/// What [`keep_registered`] reports on.
struct Flags {
    registered: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
}

async fn keep_registered(
    target: Target,
    identity: Identity,
    sessions: Sessions,
    flags: Flags,
    lifecycle: Lifecycle,
) {
    let mut backoff = Backoff::default();
    loop {
        match connect(&target).await {
            Ok(mut link) => {
                info!(channel = %identity.channel, "signaling: connected to {target}");
                let service = target.to_string();
                flags.connected.store(true, Ordering::Relaxed);
                let outcome = producer::run(
                    link.as_mut(),
                    &service,
                    &identity,
                    (&sessions, &lifecycle),
                    &flags.registered,
                )
                .await;
                flags.connected.store(false, Ordering::Relaxed);
                match outcome {
                    producer::Outcome::Ended { registered: true } => {
                        backoff.reset();
                        warn!("signaling: lost {target}; reconnecting");
                    }
                    producer::Outcome::Ended { registered: false } => {
                        warn!(
                            "signaling: {target} closed the connection before the channel was registered"
                        );
                    }
                    producer::Outcome::Refused(reason) => {
                        error!(channel = %identity.channel, "signaling: {target} refused the channel: {reason}");
                    }
                }
            }
            Err(err) => warn!("signaling: cannot connect to {target}: {err:#}"),
        }
        let delay = backoff.next_delay(rand::random());
        info!("signaling: next attempt in {:.1} s", delay.as_secs_f64());
        tokio::time::sleep(delay).await;
    }
}

async fn connect(target: &Target) -> anyhow::Result<Box<dyn Link>> {
    Ok(match target {
        Target::Remote { url, token } => {
            Box::new(link::WebSocket::connect(url, token.as_deref()).await?)
        }
        Target::Local { service, token } => Box::new(service.connect(Some(token.clone()))),
    })
}
