//! A bounded histogram of request round trips: fixed log-spaced buckets
//! (each √2 wider than the last, from 0.5 ms to about 12 minutes), so
//! percentiles cost 48 counters whatever the traffic.

use std::time::Duration;

/// Number of buckets (the last one also takes everything above it).
pub const LATENCY_BUCKETS: usize = 48;

/// Upper bound of bucket `i`, in microseconds: 500 µs × √2^i.
fn bound_us(i: usize) -> u64 {
    let whole = 500u64 << (i / 2);
    if i % 2 == 0 {
        whole
    } else {
        // × √2, in integers (1.41421356…).
        whole.saturating_mul(141_421_356) / 100_000_000
    }
}

/// Round trips of answered requests, counted in log-spaced buckets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; LATENCY_BUCKETS],
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; LATENCY_BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    /// Count one round trip.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = (0..LATENCY_BUCKETS)
            .find(|&i| us <= bound_us(i))
            .unwrap_or(LATENCY_BUCKETS - 1);
        self.counts[i] += 1;
        self.total += 1;
    }

    /// Round trips counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `p`-th percentile (0 to 100) of each of `ps`, as the upper
    /// bound of the bucket it falls in (at most √2 too high); `None` when
    /// nothing was counted or `p` is not a number in 0..=100.
    pub fn percentiles(&self, ps: &[f64]) -> Vec<Option<Duration>> {
        ps.iter().map(|&p| self.percentile(p)).collect()
    }

    fn percentile(&self, p: f64) -> Option<Duration> {
        if self.total == 0 || !(0.0..=100.0).contains(&p) {
            return None;
        }
        // The rank of the sample wanted, 1-based (nearest-rank method).
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(bound_us(i)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_bounded_log_buckets() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.percentiles(&[50.0]), vec![None]);
        for _ in 0..90 {
            h.record(Duration::from_millis(10));
        }
        for _ in 0..9 {
            h.record(Duration::from_millis(100));
        }
        h.record(Duration::from_secs(2));
        assert_eq!(h.count(), 100);
        let p = h.percentiles(&[50.0, 90.0, 99.0, 100.0, 101.0]);
        let within = |got: Option<Duration>, want: Duration| {
            let got = got.expect("a value");
            got >= want && got <= want.mul_f64(1.42)
        };
        assert!(within(p[0], Duration::from_millis(10)), "{p:?}");
        assert!(within(p[1], Duration::from_millis(10)), "{p:?}");
        assert!(within(p[2], Duration::from_millis(100)), "{p:?}");
        assert!(within(p[3], Duration::from_secs(2)), "{p:?}");
        assert_eq!(p[4], None);
        // Anything past the last bound lands in the last bucket.
        h.record(Duration::from_secs(100_000));
        assert_eq!(h.count(), 101);
        assert!(bound_us(LATENCY_BUCKETS - 1) > 600_000_000);
    }
}
