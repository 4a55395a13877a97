//! One structure for every deadline of a node: request retransmissions and
//! soft timeouts, relay attempts, bootstrap retries and maintenance.
//!
//! Each key has at most one deadline; setting it again moves it. Popping
//! returns due keys in deadline order (ties in key order), so a run is
//! deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::relay::RouteKey;

/// What a node's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Retransmit or fail request `txid`.
    Rpc(u64),
    /// Request `txid` has been open for the soft timeout.
    Soft(u64),
    /// Next relay attempt of a held message or routed ack.
    Relay(RouteKey),
    /// Next bootstrap round.
    Bootstrap,
    /// Bucket refresh, expiry sweep, contacts snapshot.
    Maintenance,
    /// The catch-up window may close (its quiet period or its cap).
    CatchUp,
}

/// Deadlines keyed by `K`.
#[derive(Clone, Debug)]
pub(crate) struct TimerTable<K: Ord + Copy> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Copy> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy> TimerTable<K> {
    /// Set (or move) `key`'s deadline to `at`.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.by_time.remove(&(old, key));
        }
        self.by_time.insert((at, key));
    }

    /// Remove `key`'s deadline, if any.
    pub(crate) fn cancel(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, *key));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// Remove and return the earliest key due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, key) = self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, key));
        self.by_key.remove(&key);
        Some(key)
    }

    /// Number of deadlines set.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_pop_in_deadline_order_and_moving_replaces() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = TimerTable::default();
        t.set(1u32, t0 + s(5));
        t.set(2, t0 + s(1));
        t.set(3, t0 + s(3));
        t.set(1, t0 + s(2)); // moved earlier
        t.cancel(&3);
        assert_eq!(t.len(), 2);
        assert_eq!(t.next(), Some(t0 + s(1)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + s(10)), Some(2));
        assert_eq!(t.pop_due(t0 + s(10)), Some(1));
        assert_eq!(t.pop_due(t0 + s(10)), None);
        assert_eq!(t.len(), 0);
    }
}
