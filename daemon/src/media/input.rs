//! Keeping a device open: a camera or microphone that disappears is opened again.
//!
//! Cameras get unplugged, USB hubs reset, drivers get unbound. The daemon must not exit on
//! that: the capture thread drops the dead handle and tries to open the device again with a
//! growing backoff (0.5 s → 5 s), while `/healthz` reports the stall. When the device is
//! back, frames flow again by themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use onair_hal::HalError;
use tracing::{info, warn};

use super::LogThrottle;
use crate::lifecycle::Stop;

/// Read failures in a row after which a device that did not say it is gone is reopened anyway.
const REOPEN_AFTER_FAILURES: u32 = 10;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often a supervised device was opened again, for `/metrics`: attempts that fail
/// while the camera is away, and the one that brings it back.
#[derive(Debug, Default)]
pub struct ReopenCounts {
    attempts: AtomicU64,
    successes: AtomicU64,
}

impl ReopenCounts {
    /// Attempts to open the device again (after a failure, or while it never opened).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Attempts that opened it.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }
}

/// Opens a source of type `S` (`dyn VideoSource`, `dyn AudioSource`), and again after it
/// failed.
pub struct Supervised<S: ?Sized> {
    /// What to call the device in logs.
    name: String,
    open: Box<dyn FnMut() -> Result<Box<S>, HalError> + Send>,
    current: Option<Box<S>>,
    /// Consecutive failed opens or reads: drives the backoff and the reopen decision.
    failures: u32,
    log: LogThrottle,
    /// Counted for `/metrics`; nobody reads them unless [`Self::counting`] shares them.
    reopens: Arc<ReopenCounts>,
}

impl<S: ?Sized> Supervised<S> {
    /// A supervisor around `open`, starting with `first` if that attempt already succeeded.
    pub fn new(
        name: String,
        first: Option<Box<S>>,
        open: impl FnMut() -> Result<Box<S>, HalError> + Send + 'static,
    ) -> Self {
        Supervised {
            name,
            open: Box::new(open),
            current: first,
            failures: 0,
            log: LogThrottle::new(20),
            reopens: Arc::default(),
        }
    }

    /// Counts reopen attempts and successes in `reopens`.
    pub fn counting(mut self, reopens: Arc<ReopenCounts>) -> Self {
        self.reopens = reopens;
        self
    }

    /// The open source; opens it if needed. `None` (after a backoff sleep) when it cannot be
    /// opened right now; the caller loops.
    pub fn get(&mut self, stop: &Stop) -> Option<&mut S> {
        if self.current.is_none() {
            self.reopens.attempts.fetch_add(1, Ordering::Relaxed);
            match (self.open)() {
                Ok(source) => {
                    self.reopens.successes.fetch_add(1, Ordering::Relaxed);
                    info!("{}: open again", self.name);
                    self.current = Some(source);
                    self.failures = 0;
                    self.log.reset();
                }
                Err(err) => {
                    if let Some(attempts) = self.log.hit() {
                        warn!(attempts, "{}: {err}; retrying", self.name);
                    }
                    self.failures = self.failures.saturating_add(1);
                    backoff(self.failures, stop);
                    return None;
                }
            }
        }
        self.current.as_deref_mut()
    }

    /// A read worked.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.log.reset();
    }

    /// A read failed: decides whether to reopen, and waits before the next attempt.
    pub fn failed(&mut self, err: HalError, stop: &Stop) {
        self.failures = self.failures.saturating_add(1);
        if let Some(count) = self.log.hit() {
            warn!(count, "{}: {err}", self.name);
        }
        if matches!(err, HalError::Gone { .. }) || self.failures >= REOPEN_AFTER_FAILURES {
            self.current = None;
        }
        backoff(self.failures, stop);
    }
}

/// 0.5 s, 1 s, 2 s, 4 s, then 5 s; in short slices so a stop request is not held up.
fn backoff(failures: u32, stop: &Stop) {
    let wait = backoff_for(failures);
    let slice = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while waited < wait && !stop.is_stopped() {
        std::thread::sleep(slice);
        waited += slice;
    }
}

fn backoff_for(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(4);
    (Duration::from_millis(500) * (1 << exp)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn timeout() -> HalError {
        HalError::Read {
            device: "cam".into(),
            reason: "timeout".into(),
        }
    }

    fn gone() -> HalError {
        HalError::Gone {
            device: "/dev/video0".into(),
            reason: "No such device".into(),
        }
    }

    #[test]
    fn backoff_grows_to_five_seconds() {
        let waits: Vec<_> = (1..=7).map(|n| backoff_for(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[test]
    fn a_gone_device_is_reopened_and_a_flaky_one_after_ten_failures() {
        let opens = Arc::new(AtomicU32::new(0));
        let counter = opens.clone();
        let mut input: Supervised<u32> =
            Supervised::new("cam".into(), Some(Box::new(0)), move || {
                Ok(Box::new(counter.fetch_add(1, Ordering::Relaxed) + 1))
            });
        // Stop is set so backoffs return at once; only the decisions are tested.
        // Stopped: no backoff sleeps.
        let stop = Stop::default();
        stop.stop();
        assert_eq!(input.get(&stop).copied(), Some(0));
        input.failed(gone(), &stop);
        assert_eq!(input.get(&stop).copied(), Some(1), "reopened after Gone");
        for _ in 0..REOPEN_AFTER_FAILURES - 1 {
            input.failed(timeout(), &stop);
            assert_eq!(
                input.get(&stop).copied(),
                Some(1),
                "kept while failures are few"
            );
        }
        input.failed(timeout(), &stop);
        assert_eq!(
            input.get(&stop).copied(),
            Some(2),
            "reopened after ten failures in a row"
        );
        assert_eq!(opens.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_device_that_cannot_be_opened_yields_nothing_until_it_can() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counter = attempts.clone();
        let input: Supervised<u32> = Supervised::new("mic".into(), None, move || {
            match counter.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(HalError::Open {
                    device: "hw:1,0".into(),
                    reason: "No such file".into(),
                }),
                n => Ok(Box::new(n)),
            }
        });
        let reopens = Arc::new(ReopenCounts::default());
        let mut input = input.counting(reopens.clone());
        // Stopped: no backoff sleeps.
        let stop = Stop::default();
        stop.stop();
        assert!(input.get(&stop).is_none());
        assert!(input.get(&stop).is_none());
        assert_eq!(input.get(&stop).copied(), Some(2));
        assert_eq!(input.get(&stop).copied(), Some(2), "kept: no attempt");
        assert_eq!((reopens.attempts(), reopens.successes()), (3, 1));
    }
}
