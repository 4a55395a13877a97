//! Token buckets keyed by a source (a network prefix, an endpoint): how
//! much one source may ask of a node per second, with a burst. Bounded: the
//! bucket touched longest ago is forgotten first (and starts full again,
//! which gives an attacker nothing it could not get from a fresh source).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

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
pub struct TokenBuckets<K: Ord + Copy> {
    rate: Rate,
    cap: usize,
    buckets: BTreeMap<K, (f64, Instant)>,
    by_time: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> TokenBuckets<K> {
    /// Buckets refilling at `rate`, at most `cap` keys remembered.
    pub fn new(rate: Rate, cap: usize) -> Self {
        TokenBuckets {
            rate,
            cap: cap.max(1),
            buckets: BTreeMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// Take `n` units from `key`'s bucket at `now`; false (and nothing
    /// taken) if it does not hold them.
    pub fn take(&mut self, key: K, n: f64, now: Instant) -> bool {
        let (tokens, at) = match self.buckets.remove(&key) {
            Some((t, at)) => {
                self.by_time.remove(&(at, key));
                let refill = now.saturating_duration_since(at).as_secs_f64() * self.rate.per_sec;
                ((t + refill).min(self.rate.burst), at.max(now))
            }
            None => {
                while self.buckets.len() >= self.cap {
                    let Some((_, old)) = self.by_time.pop_first() else {
                        break;
                    };
                    self.buckets.remove(&old);
                }
                (self.rate.burst, now)
            }
        };
        let ok = tokens >= n;
        let left = if ok { tokens - n } else { tokens };
        self.buckets.insert(key, (left, at));
        self.by_time.insert((at, key));
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
    }
}
