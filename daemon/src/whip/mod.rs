//! Who joins through a media server: onaird publishes its stream once over WHIP (RFC 9725)
//! to an SFU or a CDN's ingest (`[whip] url`, `token`), which fans it out to its audience.
//!
//! - [`exchange`]: the HTTP requests (POST the offer, redirects, `Location`, `Link`, DELETE).
//! - [`retry`]: how long to wait after each kind of failure.
//!
//! The server is one more viewer of the [`Sessions`]: onaird offers (send only, H.264 and
//! Opus from the same encoders, all candidates in the offer: no trickle), applies the
//! server's answer, and the session is then like any other: its PLI and FIR reach the
//! encoder, its feedback drives congestion control and the quality layer.
//!
//! The publication is kept up for the daemon's life:
//! - the POST fails (the network, 5xx, a bad answer) → again after 1, 2, 4, 8, 10, 10 … s
//!   (jittered), so a server or network that comes back has the stream within about 10 s;
//! - 429 or 503 with `Retry-After` → not before then (at most 10 min);
//! - 401 or 403 → an error in the log and `/api/status`, and again every minute;
//! - the session does not connect (20 s), fails, or goes `disconnected` (the server has not
//!   answered for about 5 s: it went away, or the network did) → it is ended, DELETEd, and
//!   published anew. A media server is no Wi-Fi viewer: republishing at once gets viewers
//!   back sooner than waiting for ICE to recover.
//!
//! On shutdown the session is DELETEd (at most [`DELETE_WAIT`]). What is not done: ICE
//! restarts and trickle through PATCH (a new POST does their work, with any server), and
//! simulcast (the server gets the top layer, or the lower one when congestion control
//! picks it). The ICE servers in the answer's `Link` headers are listed in the status;
//! onaird gathers through none of them (see `webrtc::peer`): the server learns the camera's
//! public address from its connectivity checks.

pub mod exchange;
pub mod retry;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};
use url::Url;

use crate::lifecycle::{Lifecycle, Stop};
use crate::signaling::backoff::Backoff;
use crate::webrtc::figures::Phase;
use crate::webrtc::{OfferError, Sessions};
use exchange::{Created, Endpoint};
use retry::Failure;

/// How often the published session's state is looked at.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a DELETE may take (on shutdown, and for a session given up).
pub const DELETE_WAIT: Duration = Duration::from_secs(2);

/// Where the publication is, for `/api/status` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct WhipStatus {
    /// `whip.url` (the token is never shown).
    pub url: String,
    /// "connecting" (POST sent), "negotiating" (answered; ICE and DTLS under way),
    /// "publishing", "waiting" (to try again) or "unauthorized" (the token was refused).
    pub state: &'static str,
    /// The session's URL on the server (`Location`), while there is one.
    pub resource: Option<String>,
    /// Our session's id (as in `peers`).
    pub session: Option<String>,
    /// Why the last attempt failed or the last session ended.
    pub last_error: Option<String>,
    /// Seconds until the next attempt, while waiting.
    pub retry_in_s: Option<f64>,
    /// Sessions that reached the server (connected) since the start.
    pub publishes: u64,
    /// Attempts that failed and sessions that were lost, since the start.
    pub failures: u64,
    /// The ICE servers the server named (`Link` headers), by URL.
    pub ice_servers: Vec<String>,
}

impl WhipStatus {
    /// As a viewer may see it: the endpoint's and the session's URLs redacted (an ingest URL
    /// often carries the stream key), the session id left out.
    pub fn redacted(self) -> WhipStatus {
        WhipStatus {
            url: onair_signal::redact::url(&self.url),
            resource: self.resource.as_deref().map(onair_signal::redact::url),
            session: None,
            ..self
        }
    }
}

/// The publication to `whip.url`. [`Publisher::stop`] ends it.
pub struct Publisher {
    /// Ends the publishing task.
    stop: Stop,
    /// Where the last DELETE runs.
    lifecycle: Lifecycle,
    shared: Arc<Shared>,
    stopping: tokio::sync::Mutex<Stopping>,
}

struct Shared {
    endpoint: Endpoint,
    status: Mutex<WhipStatus>,
    /// The session on the server, while there is one: ours, and its URL there.
    current: Mutex<Option<(String, Url)>>,
    /// Sessions given up whose DELETE failed: tried again before each POST (at most
    /// [`MAX_STALE`]; the oldest is forgotten).
    stale: Mutex<Vec<Url>>,
}

/// Failed DELETEs kept to try again.
const MAX_STALE: usize = 4;

impl Shared {
    fn update(&self, change: impl FnOnce(&mut WhipStatus)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
    }
}

impl Publisher {
    /// Keeps the stream of `sessions` published to `whip.url` with `whip.token`, until
    /// [`Self::stop`] or `lifecycle`'s stop.
    pub fn start(
        whip: &onair_config::Whip,
        sessions: Sessions,
        lifecycle: &Lifecycle,
    ) -> Result<Self, url::ParseError> {
        let url = whip.url.as_deref().unwrap_or_default();
        let endpoint = Endpoint::new(url, whip.token.clone(), &whip.allow_redirect_hosts)?;
        let shared = Arc::new(Shared {
            status: Mutex::new(WhipStatus {
                url: endpoint.url().to_string(),
                state: "connecting",
                resource: None,
                session: None,
                last_error: None,
                retry_in_s: None,
                publishes: 0,
                failures: 0,
                ice_servers: Vec::new(),
            }),
            endpoint,
            current: Mutex::new(None),
            stale: Mutex::new(Vec::new()),
        });
        let stop = lifecycle.stop_signal().child();
        let publishing = keep_published(shared.clone(), sessions);
        let publishing_stop = stop.clone();
        lifecycle.spawn(async move {
            tokio::select! {
                () = publishing_stop.stopped() => {}
                () = publishing => {}
            }
        });
        Ok(Publisher {
            stop,
            lifecycle: lifecycle.clone(),
            shared,
            stopping: tokio::sync::Mutex::new(Stopping::Not),
        })
    }

    /// Where the publication is now.
    pub fn status(&self) -> Option<WhipStatus> {
        self.shared.status.lock().ok().map(|s| s.clone())
    }

    /// Stops publishing: the session on the server is DELETEd (waiting at most
    /// [`DELETE_WAIT`]) and ours ended. A second call (or one after the first was dropped
    /// half-way) waits for the same DELETE.
    pub async fn stop(&self, sessions: &Sessions) {
        self.stop.stop();
        let mut stopping = self.stopping.lock().await;
        if let Stopping::Not = *stopping {
            let current = self.shared.current.lock().ok().and_then(|mut c| c.take());
            let (endpoint, sessions) = (self.shared.endpoint.clone(), sessions.clone());
            *stopping = Stopping::Deleting(self.lifecycle.track(async move {
                if let Some((id, resource)) = current {
                    sessions.delete(&id);
                    delete(&endpoint, resource).await;
                }
            }));
        }
        if let Stopping::Deleting(deleting) = &mut *stopping {
            let _ = deleting.await;
            *stopping = Stopping::Done;
        }
    }
}

/// Where [`Publisher::stop`] is.
enum Stopping {
    Not,
    /// The DELETE runs in a task of its own, so that a caller giving up does not cut it off.
    Deleting(JoinHandle<()>),
    Done,
}

/// A session the server created.
struct Published {
    id: String,
    resource: Url,
}

async fn keep_published(shared: Arc<Shared>, sessions: Sessions) {
    let url = shared.endpoint.shown();
    let mut backoff = Backoff::up_to(retry::MAX_BACKOFF);
    loop {
        shared.update(|s| {
            s.state = "connecting";
            s.retry_in_s = None;
        });
        let failure = match publish(&shared, &sessions).await {
            Ok(published) => {
                let lost = watch(&shared, &sessions, &published, &mut backoff).await;
                warn!("whip: {url}: {lost}; publishing again");
                shared.update(|s| s.last_error = Some(lost));
                unpublish(&shared, &sessions, published).await;
                Failure::Other
            }
            Err((failure, why)) => {
                if failure == Failure::Unauthorized {
                    error!("whip: {url}: {why}; trying again every minute");
                } else {
                    warn!("whip: {url}: {why}");
                }
                shared.update(|s| s.last_error = Some(why));
                failure
            }
        };
        let wait = retry::wait_after(failure, &mut backoff, rand::random());
        shared.update(|s| {
            s.failures += 1;
            s.state = if failure == Failure::Unauthorized {
                "unauthorized"
            } else {
                "waiting"
            };
            s.retry_in_s = Some((wait.as_secs_f64() * 10.0).round() / 10.0);
        });
        info!("whip: next attempt in {:.1} s", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
    }
}

/// Offers, POSTs and applies the answer; the session then connects on its own.
async fn publish(shared: &Shared, sessions: &Sessions) -> Result<Published, (Failure, String)> {
    delete_stale(shared).await;
    let (id, offer) = sessions.offer_to_viewer().await.map_err(|err| {
        let why = match err {
            OfferError::NotReady => "no picture to publish yet".to_owned(),
            err => format!("cannot make an offer: {err}"),
        };
        (Failure::Other, why)
    })?;
    // Not the SDP itself: it holds the ICE password.
    debug!(session = %id, bytes = offer.len(), "whip: posting our offer");
    let endpoint = shared.endpoint.clone();
    let posted = tokio::task::spawn_blocking(move || endpoint.publish(&offer)).await;
    let created = match posted {
        Ok(Ok(created)) => created,
        Ok(Err(refused)) => {
            sessions.delete(&id);
            return Err((Failure::from(&refused), refused.to_string()));
        }
        Err(err) => {
            sessions.delete(&id);
            return Err((Failure::Other, err.to_string()));
        }
    };
    let Created {
        resource,
        answer,
        ice_servers,
    } = created;
    if let Ok(mut current) = shared.current.lock() {
        *current = Some((id.clone(), resource.clone()));
    }
    shared.update(|s| {
        s.state = "negotiating";
        s.resource = Some(resource.to_string());
        s.session = Some(id.clone());
        s.ice_servers = ice_servers.iter().flat_map(|i| i.urls.clone()).collect();
    });
    debug!(session = %id, bytes = answer.len(), "whip: the answer came");
    let published = Published { id, resource };
    if let Err(err) = sessions.answer(&published.id, answer).await {
        let why = format!("the server's answer was not taken: {err}");
        unpublish(shared, sessions, published).await;
        return Err((Failure::Other, why));
    }
    info!(
        session = %published.id,
        "whip: {} created {}",
        shared.endpoint.shown(),
        onair_signal::redact::url(published.resource.as_str())
    );
    Ok(published)
}

/// Follows the published session until it is lost; returns why.
async fn watch(
    shared: &Shared,
    sessions: &Sessions,
    published: &Published,
    backoff: &mut Backoff,
) -> String {
    let started = Instant::now();
    let mut connected = false;
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        match sessions.phase(&published.id).await {
            Some(Phase::Connected) if !connected => {
                connected = true;
                backoff.reset();
                shared.update(|s| {
                    s.state = "publishing";
                    s.publishes += 1;
                    s.last_error = None;
                });
                info!(
                    session = %published.id,
                    "whip: publishing to {} (connected {:.1} s after the offer was answered)",
                    shared.endpoint.shown(),
                    started.elapsed().as_secs_f64()
                );
            }
            Some(Phase::Connected | Phase::Negotiating) => {}
            Some(Phase::Disconnected) => {
                return "the server stopped answering (ICE disconnected)".into();
            }
            Some(Phase::Closing) | None if connected => {
                return "the session ended (the server closed it, or ICE or DTLS failed)".into();
            }
            Some(Phase::Closing) | None => {
                return "the session did not connect (ICE or DTLS failed, or timed out)".into();
            }
        }
    }
}

/// Ends our session and DELETEs the server's.
async fn unpublish(shared: &Shared, sessions: &Sessions, published: Published) {
    if let Ok(mut current) = shared.current.lock() {
        *current = None;
    }
    shared.update(|s| {
        s.resource = None;
        s.session = None;
    });
    sessions.delete(&published.id);
    if !delete(&shared.endpoint, published.resource.clone()).await
        && let Ok(mut stale) = shared.stale.lock()
    {
        if stale.len() == MAX_STALE {
            stale.remove(0);
        }
        stale.push(published.resource);
    }
}

/// DELETEs the sessions whose DELETE failed (the network was gone), so the server does not
/// keep a dead publisher beside the new one until its own timeout.
async fn delete_stale(shared: &Shared) {
    let stale = shared
        .stale
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    for resource in stale {
        if !delete(&shared.endpoint, resource.clone()).await
            && let Ok(mut left) = shared.stale.lock()
        {
            left.push(resource);
        }
    }
}

/// DELETEs `resource`, waiting at most [`DELETE_WAIT`]; whether the server has it no more
/// (2xx, 404). Failures are logged.
async fn delete(endpoint: &Endpoint, resource: Url) -> bool {
    let endpoint = endpoint.clone();
    let shown = onair_signal::redact::url(resource.as_str());
    let deleted = tokio::time::timeout(
        DELETE_WAIT,
        tokio::task::spawn_blocking(move || endpoint.delete(&resource)),
    )
    .await;
    match deleted {
        Ok(Ok(Ok(status))) if (200..300).contains(&status) || status == 404 => {
            info!("whip: deleted {shown} (HTTP {status})");
            return true;
        }
        Ok(Ok(Ok(status))) => warn!("whip: DELETE {shown}: HTTP {status}"),
        Ok(Ok(Err(err))) => warn!("whip: DELETE {shown}: {err}"),
        Ok(Err(err)) => warn!("whip: DELETE {shown}: {err}"),
        Err(_) => warn!("whip: DELETE {shown}: no answer within {DELETE_WAIT:?}"),
    }
    false
}
