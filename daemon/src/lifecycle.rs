//! One lifecycle for everything onaird runs: one stop signal, one tracker of tasks, and the
//! threads, all joined with a bound.
//!
//! [`run`](crate::run) makes one [`Lifecycle`] and hands it to every part it starts. A part
//! runs its async work with [`Lifecycle::spawn`] (ended at the stop) or [`Lifecycle::track`]
//! (ends on its own: the loop that closes every viewer's connection at shutdown), and its
//! blocking work (capture, encoding, the recorder's writer, GPIO) with [`Lifecycle::thread`],
//! which reads the same stop as a flag ([`Stop::is_stopped`]). At the end, [`Lifecycle::finish`]
//! gives the stop and waits a bounded time for all of them; a thread blocked in a device read
//! that does not return is named in the log and left behind, never waited on for ever. `run`
//! gives the stop however it returns, an error half way through the start included.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The stop signal, as a part reads it.
#[derive(Debug, Clone, Default)]
pub struct Stop(CancellationToken);

impl Stop {
    /// Whether the stop was given (for threads, between two pieces of work).
    pub fn is_stopped(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once the stop is given.
    pub async fn stopped(&self) {
        self.0.cancelled().await;
    }

    /// Gives the stop.
    pub fn stop(&self) {
        self.0.cancel();
    }

    /// A stop of its own, given with this one or alone.
    pub fn child(&self) -> Stop {
        Stop(self.0.child_token())
    }

    /// Gives the stop when dropped (whichever way a function returns).
    pub fn on_drop(&self) -> tokio_util::sync::DropGuard {
        self.0.clone().drop_guard()
    }
}

/// Everything onaird runs, and its stop. Cheap to clone.
#[derive(Clone, Default)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    stop: Stop,
    tasks: TaskTracker,
    /// Each thread, and how long it may take after the stop at most.
    threads: Mutex<Vec<(JoinHandle<()>, Duration)>>,
}

impl Lifecycle {
    /// The stop signal.
    pub fn stop_signal(&self) -> Stop {
        self.inner.stop.clone()
    }

    /// Gives the stop: every [`spawn`](Self::spawn)ed task ends, every thread sees it.
    pub fn stop(&self) {
        self.inner.stop.stop();
    }

    /// Runs `task` until it ends or the stop is given.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop_signal();
        self.inner.tasks.spawn(async move {
            tokio::select! {
                () = stop.stopped() => {}
                () = task => {}
            }
        });
    }

    /// Runs `task`, which ends on its own (it is not cancelled by the stop), and waits for it
    /// at the [`finish`](Self::finish).
    pub fn track<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.inner.tasks.spawn(task)
    }

    /// Runs `work` on a thread of its own named `name`; `work` ends when its stop is given.
    pub fn thread(
        &self,
        name: &str,
        work: impl FnOnce(Stop) + Send + 'static,
    ) -> std::io::Result<()> {
        self.thread_ending_within(name, Duration::ZERO, work)
    }

    /// [`Self::thread`], for work that may take up to `grace` after the stop to end well
    /// (writing out a file) however short the [`finish`](Self::finish)'s bound.
    pub fn thread_ending_within(
        &self,
        name: &str,
        grace: Duration,
        work: impl FnOnce(Stop) + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = self.stop_signal();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || work(stop))?;
        self.threads().push((thread, grace));
        Ok(())
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<(JoinHandle<()>, Duration)>> {
        self.inner
            .threads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives the stop and waits, `within` in all, for every task and thread to end. Returns
    /// what was still running then, which is left behind.
    pub async fn finish(&self, within: Duration) -> Left {
        let start = Instant::now();
        self.stop();
        self.inner.tasks.close();
        let waited = tokio::time::timeout(within, self.inner.tasks.wait()).await;
        let tasks = match waited {
            Ok(()) => 0,
            Err(_) => self.inner.tasks.len(),
        };
        let threads = std::mem::take(&mut *self.threads())
            .into_iter()
            .map(|(thread, grace)| (thread, start + within.max(grace)))
            .collect();
        let joined = tokio::task::spawn_blocking(move || join_until(threads)).await;
        Left {
            tasks,
            threads: joined.unwrap_or_default(),
        }
    }
}

/// What did not end in time at the [`Lifecycle::finish`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Left {
    /// Tasks still running.
    pub tasks: usize,
    /// Threads still running (blocked in a device read, most likely), by name.
    pub threads: Vec<String>,
}

impl Left {
    /// Whether everything ended.
    pub fn is_empty(&self) -> bool {
        self.tasks == 0 && self.threads.is_empty()
    }
}

/// Joins each thread that ends by its deadline and leaves the others running (detached);
/// returns the names of those.
fn join_until(mut threads: Vec<(JoinHandle<()>, Instant)>) -> Vec<String> {
    let mut late = Vec::new();
    while !threads.is_empty() {
        let now = Instant::now();
        let (ended, running): (Vec<_>, Vec<_>) =
            threads.into_iter().partition(|(t, _)| t.is_finished());
        for (thread, _) in ended {
            let _ = thread.join();
        }
        let (waited, running): (Vec<_>, Vec<_>) = running
            .into_iter()
            .partition(|(_, deadline)| now >= *deadline);
        late.extend(waited);
        threads = running;
        if !threads.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    late.iter()
        .map(|(t, _)| t.thread().name().unwrap_or("a thread").to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_blocked_in_a_read_does_not_hold_the_stop() {
        // A read that never returns: a pipe whose writer stays open and never writes.
        let (mut reader, writer) = std::io::pipe().unwrap();
        let blocked = std::thread::Builder::new()
            .name("onair-audio".into())
            .spawn(move || {
                let _ = std::io::Read::read(&mut reader, &mut [0; 1]);
            })
            .unwrap();
        let quick = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(20)));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let left = join_until(vec![(blocked, deadline), (quick, deadline)]);
        let took = started.elapsed();
        assert_eq!(left, ["onair-audio"]);
        assert!(took >= Duration::from_millis(300), "{took:?}");
        // Generous: only a hang fails this.
        assert!(took < Duration::from_secs(5), "{took:?}");
        drop(writer);
    }

    #[tokio::test]
    async fn the_stop_ends_tasks_and_threads_and_tracked_tasks_are_awaited() {
        let lifecycle = Lifecycle::default();
        lifecycle.spawn(std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let closing = lifecycle.track(async move {
            // Ends on its own a moment after the stop (closing connections).
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(());
        });
        lifecycle
            .thread("onair-test", |stop| {
                while !stop.is_stopped() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        let left = lifecycle.finish(Duration::from_secs(30)).await;
        assert!(left.is_empty(), "{left:?}");
        assert!(closing.is_finished());
        assert!(rx.await.is_ok());
    }

    #[tokio::test]
    async fn what_does_not_end_is_named_and_left_behind() {
        let lifecycle = Lifecycle::default();
        lifecycle.track(std::future::pending::<()>());
        let (mut reader, writer) = std::io::pipe().unwrap();
        lifecycle
            .thread("onair-stuck", move |_| {
                let _ = std::io::Read::read(&mut reader, &mut [0; 1]);
            })
            .unwrap();
        let left = lifecycle.finish(Duration::from_millis(200)).await;
        assert_eq!(left.tasks, 1);
        assert_eq!(left.threads, ["onair-stuck"]);
        drop(writer);
    }
}
