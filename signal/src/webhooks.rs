//! Webhooks: every [`Event`] is POSTed as JSON to the `[[webhooks]]` URLs that want it.
//!
//! Each URL has a queue and a task of its own, so a slow or dead endpoint delays nothing but
//! its own deliveries, and never signalling. A failed delivery (no answer, or not 2xx) is
//! retried after 1, 2, 4, 8 s; then it is given up and logged. A queue that is full (the
//! endpoint has been down for a long while) drops its oldest event.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use onair_config::signal::{Webhook, WebhookEvent};
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use crate::hub::Event;

/// Events kept for one endpoint while it is not answering.
const QUEUE: usize = 1000;
/// Attempts per event.
const ATTEMPTS: u32 = 5;
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The body of a webhook POST.
#[derive(Debug, Serialize)]
pub struct Delivery<'a> {
    /// What happened, with its details (`event`, `channel`, …).
    #[serde(flatten)]
    pub event: &'a Event,
    /// When (RFC 3339).
    pub at: String,
}

/// The configuration's name for an event.
pub fn kind(event: &Event) -> WebhookEvent {
    match event {
        Event::ChannelUp { .. } => WebhookEvent::ChannelUp,
        Event::ChannelDown { .. } => WebhookEvent::ChannelDown,
        Event::ViewerJoin { .. } => WebhookEvent::ViewerJoin,
        Event::ViewerLeave { .. } => WebhookEvent::ViewerLeave,
    }
}

/// Starts one delivery task per webhook; returns where to send events (`None` without
/// webhooks).
pub fn start(hooks: &[Webhook]) -> Option<mpsc::UnboundedSender<Event>> {
    if hooks.is_empty() {
        return None;
    }
    let queues: Vec<(Webhook, Arc<Queue>)> = hooks
        .iter()
        .map(|hook| {
            let queue = Arc::new(Queue::default());
            tokio::spawn(deliver(hook.url.clone(), queue.clone()));
            (hook.clone(), queue)
        })
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            let body = match serde_json::to_string(&Delivery {
                event: &event,
                at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            }) {
                Ok(body) => body,
                Err(_) => continue,
            };
            for (hook, queue) in &queues {
                if hook.events.is_empty() || hook.events.contains(&kind(&event)) {
                    queue.push(&hook.url, body.clone());
                }
            }
        }
    });
    Some(tx)
}

#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<String>>,
    ready: Notify,
}

impl Queue {
    fn push(&self, url: &str, body: String) {
        if let Ok(mut items) = self.items.lock() {
            if items.len() >= QUEUE {
                items.pop_front();
                warn!(%url, "webhook queue full: dropped the oldest event");
            }
            items.push_back(body);
        }
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<String> {
        self.items.lock().ok()?.pop_front()
    }
}

async fn deliver(url: String, queue: Arc<Queue>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    loop {
        let Some(body) = queue.pop() else {
            queue.ready.notified().await;
            continue;
        };
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let (agent, url_, body_) = (agent.clone(), url.clone(), body.clone());
            let sent = tokio::task::spawn_blocking(move || {
                agent
                    .post(&url_)
                    .header("Content-Type", "application/json")
                    .send(body_.as_bytes())
                    .map(|response| response.status().as_u16())
            })
            .await;
            match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    debug!(%url, status, "webhook delivered");
                    break;
                }
                Ok(Ok(status)) => warn!(%url, attempt, "webhook answered HTTP {status}"),
                Ok(Err(err)) => warn!(%url, attempt, "webhook: {err}"),
                Err(err) => warn!(%url, attempt, "webhook: {err}"),
            }
            if attempt == ATTEMPTS {
                warn!(%url, "webhook: giving up on an event after {ATTEMPTS} attempts: {body}");
            } else {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_flat_json() {
        let event = Event::ViewerJoin {
            channel: "porch".into(),
            session: "s-1".into(),
            viewers: 2,
        };
        let body = serde_json::to_value(Delivery {
            event: &event,
            at: "2026-11-21T02:00:00Z".into(),
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "event": "viewer_join", "channel": "porch", "session": "s-1", "viewers": 2,
                "at": "2026-11-21T02:00:00Z"
            })
        );
        assert_eq!(kind(&event), WebhookEvent::ViewerJoin);
    }
}
