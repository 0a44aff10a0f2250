//! Webhooks: every [`Event`] is POSTed as JSON to the `[[webhooks]]` URLs that want it.
//!
//! Each URL has a queue and a task of its own, so a slow or dead endpoint delays nothing but
//! its own deliveries, and never signalling. The service puts each event straight into the
//! queues of the URLs that want it ([`Webhooks::publish`], no queue in between); a queue
//! holds at most 1000 events, and one that is full (the endpoint has been down for a long
//! while) drops its oldest event, with a warning. A failed delivery (no answer, or not 2xx)
//! is retried after 1, 2, 4, 8 s; then it is given up and logged.

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

/// The configured webhooks, each with its queue and delivery task. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    hooks: Arc<Vec<(Webhook, Arc<Queue>)>>,
    /// Also handed every event (see [`observed`]).
    observer: Option<mpsc::UnboundedSender<Event>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.hooks
                    .iter()
                    .map(|(hook, _)| crate::redact::url(&hook.url)),
            )
            .finish()
    }
}

/// Starts one delivery task per webhook (`None` without webhooks). Must run inside a tokio
/// runtime.
pub fn start(hooks: &[Webhook]) -> Option<Webhooks> {
    if hooks.is_empty() {
        return None;
    }
    let hooks = hooks
        .iter()
        .map(|hook| {
            let queue = Arc::new(Queue::default());
            tokio::spawn(deliver(hook.url.clone(), queue.clone()));
            (hook.clone(), queue)
        })
        .collect();
    Some(Webhooks {
        hooks: Arc::new(hooks),
        observer: None,
    })
}

/// Webhooks without URLs that hand every event to the receiver instead, for the fuzz target
/// and tests that check the events add up. Unbounded: the reader drains it after every step.
#[doc(hidden)]
pub fn observed() -> (Webhooks, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let webhooks = Webhooks {
        hooks: Arc::default(),
        observer: Some(tx),
    };
    (webhooks, rx)
}

impl Webhooks {
    /// Queues `event` for every URL that wants it. Never waits: a full queue drops its
    /// oldest event.
    pub fn publish(&self, event: &Event) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(event.clone());
        }
        let Ok(body) = serde_json::to_string(&Delivery {
            event,
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }) else {
            return;
        };
        for (hook, queue) in self.hooks.iter() {
            if hook.events.is_empty() || hook.events.contains(&kind(event)) {
                queue.push(&hook.url, body.clone());
            }
        }
    }
}

/// One URL's events waiting for delivery: at most [`QUEUE`], the oldest dropped first.
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
                warn!(url = %crate::redact::url(url), "webhook queue full: dropped the oldest event");
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
    // A webhook URL usually carries its secret in its path: logs show it redacted.
    let shown = crate::redact::url(&url);
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
                    debug!(url = %shown, status, "webhook delivered");
                    break;
                }
                Ok(Ok(status)) => warn!(url = %shown, attempt, "webhook answered HTTP {status}"),
                Ok(Err(err)) => warn!(url = %shown, attempt, "webhook: {err}"),
                Err(err) => warn!(url = %shown, attempt, "webhook: {err}"),
            }
            if attempt == ATTEMPTS {
                warn!(url = %shown, "webhook: giving up on an event after {ATTEMPTS} attempts: {body}");
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

    #[test]
    fn a_full_queue_drops_its_oldest_events() {
        let queue = Queue::default();
        for n in 0..QUEUE + 5 {
            queue.push("http://hook.example", n.to_string());
        }
        assert_eq!(queue.items.lock().unwrap().len(), QUEUE);
        assert_eq!(queue.pop().as_deref(), Some("5"));
    }

    #[tokio::test]
    async fn events_go_only_to_the_urls_that_want_them() {
        let hook = |url: &str, events: Vec<WebhookEvent>| Webhook {
            url: url.into(),
            events,
        };
        // Nothing listens on port 9: deliveries fail and stay queued meanwhile.
        let hooks = start(&[
            hook("http://127.0.0.1:9/all", vec![]),
            hook("http://127.0.0.1:9/up", vec![WebhookEvent::ChannelUp]),
        ])
        .unwrap();
        for _ in 0..3 {
            hooks.publish(&Event::ChannelDown {
                channel: "porch".into(),
            });
        }
        let queued: Vec<usize> = hooks
            .hooks
            .iter()
            .map(|(_, q)| q.items.lock().unwrap().len())
            .collect();
        // No await above: the delivery tasks have not run yet.
        assert_eq!(queued, [3, 0]);
    }
}
