//! Token buckets keyed by a source (a network prefix, an endpoint): how
//! much one source may ask of a node per second, with a burst. Bounded: when
//! `cap` keys are remembered, the buckets that have refilled completely are
//! forgotten (a full bucket is the same as none), and if that frees too
//! little, the eighth touched longest ago goes too (and starts full again,
//! which gives an attacker nothing it could not get from a fresh source).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// The hash map the node's hot paths use: std's map with foldhash instead
/// of SipHash. Its keys (endpoints, transaction ids, timer keys) can be
/// chosen by a remote peer, so the hasher is still seeded at random per
/// process; foldhash with a random seed resists the collision floods
/// SipHash guards against while costing a fraction of it (SipHash was
/// about 4% of a simulator run).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Give back a hash map's spare room once it holds under a quarter of its
/// capacity: a map that grew in a burst (requests in flight, deadlines)
/// would otherwise keep its peak size for the node's lifetime, and a
/// simulator runs thousands of nodes. Halving at a quarter keeps the
/// amortised cost constant.
pub(crate) fn trim<K: Eq + Hash, V>(map: &mut FastMap<K, V>) {
    if map.capacity() > 8 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// Remove the `n` entries of `map` whose `last_seen` is oldest, ties broken
/// by key so that the choice does not depend on the map's order. Linear in
/// the map's size; callers drop an eighth of their cap at a time, so the
/// cost per new key stays constant even under a flood of new keys.
pub(crate) fn evict_oldest<K: Eq + Hash + Ord + Copy, V>(
    map: &mut FastMap<K, V>,
    n: usize,
    last_seen: impl Fn(&V) -> Instant,
) {
    let n = n.min(map.len());
    if n == 0 {
        return;
    }
    let mut ages: Vec<(Instant, K)> = map.iter().map(|(k, v)| (last_seen(v), *k)).collect();
    ages.select_nth_unstable(n - 1);
    for (_, k) in &ages[..n] {
        map.remove(k);
    }
}

/// Rate and burst of one kind of bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Units added per second.
    pub per_sec: f64,
    /// Most units a bucket holds.
    pub burst: f64,
}

/// Token buckets per key, at most `cap` of them.
#[derive(Clone, Debug)]
pub struct TokenBuckets<K: Ord + Hash + Copy> {
    rate: Rate,
    cap: usize,
    /// Tokens left and when they were counted.
    buckets: FastMap<K, (f64, Instant)>,
    /// Size at which refilled buckets are next swept out: twice the size
    /// after the last sweep, so the map tracks the sources active within
    /// a refill time instead of growing to `cap`.
    sweep_at: usize,
}

/// Smallest `sweep_at`.
const SWEEP_MIN: usize = 32;

impl<K: Ord + Hash + Copy> TokenBuckets<K> {
    /// Buckets refilling at `rate`, at most `cap` keys remembered.
    pub fn new(rate: Rate, cap: usize) -> Self {
        TokenBuckets {
            rate,
            cap: cap.max(1),
            buckets: FastMap::default(),
            sweep_at: SWEEP_MIN,
        }
    }

    /// Tokens in a bucket last counted `(tokens, at)`, refilled up to `now`.
    fn refilled(&self, (tokens, at): (f64, Instant), now: Instant) -> f64 {
        let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate.per_sec;
        (tokens + refill).min(self.rate.burst)
    }

    /// Make room for one more key: drop the buckets that are full again;
    /// if fewer than an eighth of `cap` were, also the eighth (at least one)
    /// counted longest ago, ties broken by key so the result does not
    /// depend on the map's order.
    fn make_room(&mut self, now: Instant) {
        self.sweep(now);
        let batch = (self.cap / 8).max(1);
        if self.buckets.len() + batch <= self.cap {
            return;
        }
        let drop = self.buckets.len() + batch - self.cap;
        evict_oldest(&mut self.buckets, drop, |v| v.1);
    }

    /// Forget the buckets that have refilled completely.
    fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate.per_sec, self.rate.burst);
        self.buckets.retain(|_, &mut (t, at)| {
            t + now.saturating_duration_since(at).as_secs_f64() * rate < burst
        });
        trim(&mut self.buckets);
        self.sweep_at = (self.buckets.len() * 2).max(SWEEP_MIN);
    }

    /// Take `n` units from `key`'s bucket at `now`; false (and nothing
    /// taken) if it does not hold them.
    pub fn take(&mut self, key: K, n: f64, now: Instant) -> bool {
        if let Some(&entry) = self.buckets.get(&key) {
            let tokens = self.refilled(entry, now);
            let ok = tokens >= n;
            let left = if ok { tokens - n } else { tokens };
            self.buckets.insert(key, (left, entry.1.max(now)));
            return ok;
        }
        if self.buckets.len() >= self.cap {
            self.make_room(now);
        } else if self.buckets.len() >= self.sweep_at {
            self.sweep(now);
        }
        let tokens = self.rate.burst;
        let ok = tokens >= n;
        let left = if ok { tokens - n } else { tokens };
        self.buckets.insert(key, (left, now));
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBuckets::new(
            Rate {
                per_sec: 10.0,
                burst: 5.0,
            },
            2,
        );
        for _ in 0..5 {
            assert!(b.take(1u8, 1.0, t0));
        }
        assert!(!b.take(1, 1.0, t0));
        assert!(b.take(2, 1.0, t0), "another key has its own");
        assert!(b.take(1, 1.0, t0 + Duration::from_millis(100)));
        assert!(!b.take(1, 1.0, t0 + Duration::from_millis(100)));
        // A third key pushes out the one touched longest ago.
        assert!(b.take(3, 5.0, t0 + Duration::from_millis(200)));
        assert_eq!(b.buckets.len(), 2);
        assert!(b.buckets.contains_key(&1) && b.buckets.contains_key(&3));
    }

    #[test]
    fn the_map_stays_bounded_and_refilled_buckets_are_forgotten_first() {
        let t0 = Instant::now();
        let rate = Rate {
            per_sec: 1.0,
            burst: 2.0,
        };
        let mut b = TokenBuckets::new(rate, 64);
        for k in 0..10_000u32 {
            b.take(k, 1.0, t0 + Duration::from_millis(u64::from(k)));
            assert!(b.buckets.len() <= 64);
        }
        // An emptied bucket outlives one that has refilled.
        let mut b = TokenBuckets::new(rate, 2);
        assert!(b.take(1u8, 2.0, t0));
        assert!(b.take(2u8, 1.0, t0));
        let later = t0 + Duration::from_millis(1500);
        assert!(b.take(3u8, 1.0, later), "key 2 refilled and made room");
        assert!(
            !b.take(1u8, 2.0, later),
            "key 1 still remembered: 1.5 tokens"
        );
    }
}
