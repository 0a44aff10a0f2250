//! How long to wait before publishing again, after each kind of failure (pure).

use std::time::Duration;

use super::exchange::Refused;
use crate::signaling::backoff::Backoff;

/// The longest wait between attempts (but for a refused token or a `Retry-After`): a
/// server or network that comes back has the stream again within about this long.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A refused token is retried this often: someone has to fix `whip.token`, and hammering
/// the endpoint helps nobody (some ban clients that keep failing).
pub const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(60);
/// The longest `Retry-After` obeyed; a larger one is taken as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Why publishing failed, as far as waiting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint refused the token.
    Unauthorized,
    /// The endpoint asked to come back after this long (0: it did not say when).
    RetryAfter(Duration),
    /// Anything else: the network, the endpoint, the session that did not connect or was
    /// lost, or our side (no picture yet).
    Other,
}

impl From<&Refused> for Failure {
    fn from(refused: &Refused) -> Self {
        match refused {
            Refused::Unauthorized { .. } => Failure::Unauthorized,
            Refused::RetryAfter { after, .. } => Failure::RetryAfter(*after),
            _ => Failure::Other,
        }
    }
}

/// The wait after `failure`: the backoff (1 s doubling to [`MAX_BACKOFF`], with `jitter` in
/// `0..1`, from a `Backoff::up_to(MAX_BACKOFF)`),
/// but never less than a `Retry-After`, and a minute after a refused token.
pub fn wait_after(failure: Failure, backoff: &mut Backoff, jitter: f64) -> Duration {
    match failure {
        Failure::Unauthorized => UNAUTHORIZED_RETRY,
        Failure::RetryAfter(after) => backoff.next_delay(jitter).max(after.min(MAX_RETRY_AFTER)),
        Failure::Other => backoff.next_delay(jitter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_obey_retry_after_and_slow_down_for_a_bad_token() {
        let mut backoff = Backoff::up_to(MAX_BACKOFF);
        let waits: Vec<u64> = (0..3)
            .map(|_| wait_after(Failure::Other, &mut backoff, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4]);
        let asked = Failure::RetryAfter(Duration::from_secs(20));
        assert_eq!(wait_after(asked, &mut backoff, 0.0).as_secs(), 20);
        let huge = Failure::RetryAfter(Duration::from_secs(86_400));
        assert_eq!(wait_after(huge, &mut backoff, 0.0), MAX_RETRY_AFTER);
        assert_eq!(
            wait_after(Failure::Unauthorized, &mut backoff, 0.0),
            UNAUTHORIZED_RETRY
        );
        backoff.reset();
        assert_eq!(wait_after(Failure::Other, &mut backoff, 0.0).as_secs(), 1);
    }
}
