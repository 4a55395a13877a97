//! One structure for every deadline of a node: request retransmissions and
//! soft timeouts, relay attempts, bootstrap retries and maintenance.
//!
//! Each key has at most one deadline; setting it again moves it. Popping
//! returns due keys in deadline order (ties in key order), so a run is
//! deterministic.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::Hash;
use std::time::Instant;

use crate::limits::{trim, FastMap};
use crate::relay::RouteKey;

/// What a node's deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// Request `txid`'s soft timeout, then its retransmission deadline.
    Rpc(u64),
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
///
/// A heap of `(deadline, key)` with lazy deletion: moving or cancelling a
/// deadline only updates `by_key`, and a heap entry that no longer matches
/// it is skipped when it reaches the top. The top is always a live entry
/// (every change cleans it), and the heap is rebuilt from `by_key` when
/// stale entries outnumber live ones, so it stays within twice the live
/// deadlines plus a constant. A request sets two deadlines and an answer
/// cancels both; a heap makes that two pushes, where ordered sets took
/// eight tree updates.
#[derive(Clone, Debug)]
pub(crate) struct TimerTable<K: Ord + Hash + Copy> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    by_key: FastMap<K, Instant>,
}

/// Stale heap entries tolerated beyond the live ones before a rebuild.
const STALE_SLACK: usize = 64;

impl<K: Ord + Hash + Copy> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            heap: BinaryHeap::new(),
            by_key: FastMap::default(),
        }
    }
}

impl<K: Ord + Hash + Copy> TimerTable<K> {
    /// Whether a heap entry is the key's current deadline.
    fn live(&self, (at, key): &(Instant, K)) -> bool {
        self.by_key.get(key) == Some(at)
    }

    /// Drop stale entries from the top, and rebuild when too many piled up.
    fn clean(&mut self) {
        if self.heap.len() > 2 * self.by_key.len() + STALE_SLACK {
            self.heap = self
                .by_key
                .iter()
                .map(|(k, at)| Reverse((*at, *k)))
                .collect();
            return;
        }
        if self.heap.capacity() > 8 && self.heap.capacity() > 4 * self.heap.len() {
            self.heap.shrink_to(2 * self.heap.len());
        }
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.live(top) {
                return;
            }
            self.heap.pop();
        }
    }

    /// Set (or move) `key`'s deadline to `at`.
    pub(crate) fn set(&mut self, key: K, at: Instant) {
        if self.by_key.insert(key, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, key)));
        self.clean();
    }

    /// Remove `key`'s deadline, if any.
    pub(crate) fn cancel(&mut self, key: &K) {
        if self.by_key.remove(key).is_some() {
            trim(&mut self.by_key);
            self.clean();
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Remove and return a key whose deadline is at or before `now`, the
    /// earliest first (ties in key order).
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &Reverse((at, key)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.by_key.remove(&key);
        trim(&mut self.by_key);
        self.clean();
        Some(key)
    }

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

    #[test]
    fn moved_and_cancelled_deadlines_leave_a_bounded_heap_and_the_right_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = TimerTable::default();
        // A model: the same operations on a plain map.
        let mut model: std::collections::BTreeMap<u32, Instant> = Default::default();
        let mut x: u64 = 7;
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = (x >> 33) as u32 % 50;
            let at = t0 + ms((x >> 20) % 1000 + i / 10);
            match x % 3 {
                0 => {
                    t.cancel(&key);
                    model.remove(&key);
                }
                _ => {
                    t.set(key, at);
                    model.insert(key, at);
                }
            }
            let earliest = model.iter().map(|(k, at)| (*at, *k)).min();
            assert_eq!(t.next(), earliest.map(|(at, _)| at));
            assert!(t.heap.len() <= 2 * t.len() + STALE_SLACK + 1);
            if i % 7 == 0 {
                let now = t0 + ms(i / 10 + 300);
                while let Some(k) = t.pop_due(now) {
                    let (at, want) = model.iter().map(|(k, at)| (*at, *k)).min().unwrap();
                    assert!(at <= now);
                    assert_eq!(k, want);
                    model.remove(&k);
                }
            }
        }
        assert_eq!(t.len(), model.len());
    }
}
