//! The budget of sessions still connecting (and, with other limits, of ICE-TCP connections
//! that have not sent their first check: [`super::tcp`]).
//!
//! An offer costs one of the [`super::MAX_SESSIONS`] slots from the moment it is taken. A
//! stranger who posts offers and never follows them up would hold them all; so sessions that
//! have not connected yet also count against a smaller budget, overall
//! ([`MAX_PENDING`]) and per source address ([`MAX_PENDING_PER_SOURCE`]). An offer beyond it
//! is refused (`503`); a session leaves the budget when it connects or ends, which for one
//! that never starts ICE is within seconds ([`super::session::ICE_START_TIMEOUT`]). So one
//! address can never keep others from joining, and connected viewers are never touched.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Sessions connecting at once, from everywhere.
pub const MAX_PENDING: usize = 40;
/// Sessions connecting at once from one address (a household behind one NAT joins a few).
pub const MAX_PENDING_PER_SOURCE: usize = 16;

/// Which limit an offer met, and the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Crowded {
    /// The overall one.
    #[error("{0} viewers are connecting already")]
    Everywhere(usize),
    /// The one per source address.
    #[error("{0} connections from this address are connecting already")]
    Source(usize),
}

/// The counts. Cheap to clone.
#[derive(Clone)]
pub struct PendingBudget {
    counts: Arc<Mutex<Counts>>,
    total: usize,
    per_source: usize,
}

impl Default for PendingBudget {
    /// [`MAX_PENDING`], [`MAX_PENDING_PER_SOURCE`].
    fn default() -> Self {
        PendingBudget::new(MAX_PENDING, MAX_PENDING_PER_SOURCE)
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// One session's place in the budget, given back when dropped.
pub struct Pending {
    counts: Arc<Mutex<Counts>>,
    source: Option<IpAddr>,
}

impl PendingBudget {
    /// At most `total` at once, `per_source` from one address.
    pub fn new(total: usize, per_source: usize) -> Self {
        PendingBudget {
            counts: Arc::default(),
            total,
            per_source,
        }
    }

    /// A place for a session from `source` (`None`: not known, e.g. through signalling).
    pub fn take(&self, source: Option<IpAddr>) -> Result<Pending, Crowded> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.total {
            return Err(Crowded::Everywhere(self.total));
        }
        if let Some(source) = source {
            let from = counts.by_source.entry(source).or_default();
            if *from >= self.per_source {
                return Err(Crowded::Source(self.per_source));
            }
            *from += 1;
        }
        counts.total += 1;
        Ok(Pending {
            counts: self.counts.clone(),
            source,
        })
    }

    /// Sessions connecting now.
    pub fn len(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.total)
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(source) = self.source
            && let Some(from) = counts.by_source.get_mut(&source)
        {
            *from = from.saturating_sub(1);
            if *from == 0 {
                counts.by_source.remove(&source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_fills_its_share_only_and_places_come_back() {
        let budget = PendingBudget::default();
        let stranger: IpAddr = [192, 168, 1, 66].into();
        let mut held: Vec<Pending> = (0..MAX_PENDING_PER_SOURCE)
            .map(|_| budget.take(Some(stranger)).unwrap())
            .collect();
        assert_eq!(
            budget.take(Some(stranger)).err(),
            Some(Crowded::Source(MAX_PENDING_PER_SOURCE))
        );
        let viewer = budget.take(Some([192, 168, 1, 20].into())).unwrap();
        drop(held.pop());
        let again = budget.take(Some(stranger)).unwrap();
        drop((held, again, viewer));
        assert!(budget.is_empty());
        assert!(budget.counts.lock().unwrap().by_source.is_empty());
    }

    #[test]
    fn the_total_is_capped_whatever_the_addresses() {
        let budget = PendingBudget::default();
        let held: Vec<Pending> = (0..MAX_PENDING)
            .map(|i| budget.take(Some([10, 0, 0, i as u8].into())).unwrap())
            .collect();
        assert_eq!(
            budget.take(None).err(),
            Some(Crowded::Everywhere(MAX_PENDING))
        );
        drop(held);
        assert!(budget.take(None).is_ok());
    }
}
