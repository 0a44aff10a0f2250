//! Session-end notices that are never lost and never pile up.
//!
//! A front end that must tell someone when a session ends (the signalling producer tells the
//! service, which tells the viewer) subscribes once and then *watches* each session it
//! started. Every watched session is reported exactly once when it ends, however many end at
//! the same moment and however late the subscriber reads: each subscriber has a mailbox of
//! its own, and an end is put there only if that subscriber watches the session. So a
//! mailbox holds at most as many ids as the subscriber has sessions (each session ends
//! once, and at most [`super::MAX_SESSIONS`] run at a time); sessions nobody watches (WHEP
//! viewers) are reported to nobody. A broadcast ring would instead drop notices for a
//! subscriber that falls behind.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

/// The publishing side, owned by the session registry.
#[derive(Default)]
pub struct EndNotices {
    subscribers: Mutex<Vec<Weak<Mailbox>>>,
}

#[derive(Default)]
struct Mailbox {
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Default)]
struct State {
    /// Sessions the subscriber watches that have not ended yet.
    watched: HashSet<String>,
    /// Watched sessions that ended, oldest first, not yet read.
    ended: VecDeque<String>,
}

impl Mailbox {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `id` ended: queue it if it is watched (once: it stops being watched).
    fn deliver(&self, id: &str) {
        let mut state = self.state();
        if state.watched.remove(id) {
            state.ended.push_back(id.to_owned());
            drop(state);
            self.ready.notify_one();
        }
    }
}

/// One subscriber's mailbox. Dropping it unsubscribes.
pub struct EndSubscription {
    mailbox: Arc<Mailbox>,
}

impl EndNotices {
    /// A new subscriber, watching nothing yet.
    pub fn subscribe(&self) -> EndSubscription {
        let mailbox = Arc::new(Mailbox::default());
        let mut subscribers = self.subscribers();
        subscribers.retain(|s| s.strong_count() > 0);
        subscribers.push(Arc::downgrade(&mailbox));
        EndSubscription { mailbox }
    }

    /// Session `id` has ended (call after it left the live set).
    pub fn publish(&self, id: &str) {
        let subscribers: Vec<Arc<Mailbox>> = self
            .subscribers()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for mailbox in subscribers {
            mailbox.deliver(id);
        }
    }

    fn subscribers(&self) -> MutexGuard<'_, Vec<Weak<Mailbox>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EndSubscription {
    /// Reports session `id` when it ends. `is_live` tells whether it is still running; it is
    /// asked after `id` is watched, so a session that ends meanwhile, or had already ended,
    /// is reported once all the same.
    pub fn watch(&self, id: &str, is_live: impl FnOnce() -> bool) {
        self.mailbox.state().watched.insert(id.to_owned());
        if !is_live() {
            self.mailbox.deliver(id);
        }
    }

    /// Stops watching `id` (its end is of no interest any more).
    pub fn forget(&self, id: &str) {
        self.mailbox.state().watched.remove(id);
    }

    /// The next watched session that ended; waits for one.
    pub async fn recv(&self) -> String {
        loop {
            // Registered before looking, so a delivery in between is not missed.
            let ready = self.mailbox.ready.notified();
            if let Some(id) = self.mailbox.state().ended.pop_front() {
                return id;
            }
            ready.await;
        }
    }

    /// Sessions watched or ended and not yet read (what the mailbox holds).
    pub fn pending(&self) -> usize {
        let state = self.mailbox.state();
        state.watched.len() + state.ended.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_ends_reaches_a_slow_subscriber_in_full() {
        let notices = Arc::new(EndNotices::default());
        let slow = notices.subscribe();
        let other = notices.subscribe();
        // 300 sessions (far more than the 64 a broadcast ring held) end at once, from many
        // tasks, while neither subscriber reads.
        let ids: Vec<String> = (0..300).map(|n| format!("s{n}")).collect();
        for id in &ids {
            slow.watch(id, || true);
        }
        for id in ids.iter().step_by(2) {
            other.watch(id, || true);
        }
        let tasks: Vec<_> = ids
            .iter()
            .cloned()
            .map(|id| {
                let notices = notices.clone();
                tokio::spawn(async move { notices.publish(&id) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // An id nobody watches (a WHEP session) goes nowhere.
        notices.publish("whep");
        let mut heard = HashSet::new();
        for _ in 0..300 {
            let id = tokio::time::timeout(Duration::from_secs(5), slow.recv())
                .await
                .expect("a notice is missing");
            assert!(heard.insert(id), "a notice came twice");
        }
        assert_eq!(heard, ids.iter().cloned().collect::<HashSet<_>>());
        assert_eq!(slow.pending(), 0);
        assert_eq!(other.pending(), 150);
        let mut second = HashSet::new();
        for _ in 0..150 {
            second.insert(other.recv().await);
        }
        assert_eq!(second.len(), 150);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slow.recv())
                .await
                .is_err(),
            "nothing more"
        );
    }

    #[tokio::test]
    async fn a_session_that_ended_before_it_was_watched_is_reported_once() {
        let notices = EndNotices::default();
        let sub = notices.subscribe();
        notices.publish("early");
        sub.watch("early", || false);
        assert_eq!(sub.recv().await, "early");
        // Ended between `watch` and the liveness check: the publish delivers it, the check
        // finds nothing left to deliver.
        sub.watch("racing", || {
            notices.publish("racing");
            false
        });
        assert_eq!(sub.recv().await, "racing");
        assert_eq!(sub.pending(), 0);
    }

    #[tokio::test]
    async fn forgotten_and_unsubscribed_sessions_are_not_kept() {
        let notices = EndNotices::default();
        let sub = notices.subscribe();
        sub.watch("a", || true);
        sub.forget("a");
        notices.publish("a");
        assert_eq!(sub.pending(), 0);
        drop(sub);
        notices.publish("b");
        let _fresh = notices.subscribe();
        assert_eq!(notices.subscribers().len(), 1, "the dropped one is pruned");
    }
}
