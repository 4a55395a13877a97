//! Noticing that this node's identity runs twice (the same secret started
//! on two machines, or twice on one): the two would split its messages and
//! acks between them, so the user is warned.
//!
//! Two signs, both cheap:
//! - an identity record for our address, validly signed by our key, that
//!   this run did not sign and that is newer than this run's start: only a
//!   holder of our key can make one (it arrives in the `Record` answers of
//!   our own publishing lookup, so it is seen within `record_republish`);
//! - a datagram whose sender is our own address from an endpoint that is
//!   not ours (for example the second instance bootstrapping through the
//!   first). Anyone can write our address into a datagram, so this sign
//!   only ever produces a rate-limited warning, never an action.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Endpoints others reported seeing us at (`Pong.observed`), kept.
pub const MAX_OBSERVED: usize = 4;

/// Record sequence numbers this run signed, kept (one per republish).
const MAX_SIGNED: usize = 64;

/// Distinct endpoints remembered for the warning's rate limit.
pub const MAX_WARNED: usize = 16;

/// What the node knows of its own endpoints and signatures.
#[derive(Debug, Default)]
pub struct Twins {
    local: Option<SocketAddr>,
    observed: VecDeque<SocketAddr>,
    signed: VecDeque<u64>,
    started_ms: Option<u64>,
    /// Endpoint (None: seen through a record) → when last warned.
    warned: BTreeMap<Option<SocketAddr>, Instant>,
}

impl Twins {
    /// The endpoint the socket is bound to (the runtime tells it).
    pub fn set_local(&mut self, addr: SocketAddr) {
        self.local = Some(addr);
    }

    /// Note the wall clock of the first input: records signed before it
    /// may be an earlier run's own.
    pub fn start(&mut self, wall_ms: u64) {
        self.started_ms.get_or_insert(wall_ms);
    }

    /// A peer saw us at `addr`.
    pub fn observe(&mut self, addr: SocketAddr) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        if !self.observed.contains(&addr) {
            if self.observed.len() == MAX_OBSERVED {
                self.observed.pop_front();
            }
            self.observed.push_back(addr);
        }
    }

    /// We signed a record with sequence number `seq`.
    pub fn signed(&mut self, seq: u64) {
        if !self.signed.contains(&seq) {
            if self.signed.len() == MAX_SIGNED {
                self.signed.pop_front();
            }
            self.signed.push_back(seq);
        }
    }

    fn is_own(&self, from: &SocketAddr) -> bool {
        if self.observed.contains(from) {
            return true;
        }
        match self.local {
            Some(l) => {
                l.port() == from.port()
                    && (l.ip().is_unspecified() || l.ip() == from.ip() || from.ip().is_loopback())
            }
            // Our endpoint is unknown: never claim a twin from datagrams.
            None => true,
        }
    }

    fn warn(&mut self, key: Option<SocketAddr>, now: Instant, every: Duration) -> bool {
        if let Some(&t) = self.warned.get(&key) {
            if now.saturating_duration_since(t) < every {
                return false;
            }
        }
        if !self.warned.contains_key(&key) && self.warned.len() >= MAX_WARNED {
            // Full: only an endpoint warned about longer than `every` ago
            // makes room. Evicting a recent one instead would let anyone
            // rotating through MAX_WARNED + 1 endpoints draw a warning
            // from every datagram; this way at most MAX_WARNED warnings
            // come from datagrams in any `every`.
            self.warned
                .retain(|_, t| now.saturating_duration_since(*t) < every);
            if self.warned.len() >= MAX_WARNED {
                return false;
            }
        }
        self.warned.insert(key, now);
        true
    }

    /// A datagram with our own address as its sender came from `from`:
    /// whether to warn now.
    pub fn own_datagram(&mut self, from: SocketAddr, now: Instant, every: Duration) -> bool {
        !self.is_own(&from) && self.warn(Some(from), now, every)
    }

    /// A valid record for our address with sequence `seq` was served to
    /// us: whether to warn now.
    pub fn own_record(&mut self, seq: u64, now: Instant, every: Duration) -> bool {
        let Some(started) = self.started_ms else {
            return false;
        };
        seq > started && !self.signed.contains(&seq) && self.warn(None, now, every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_record_we_did_not_sign_after_we_started_is_a_twin() {
        let now = Instant::now();
        let mut t = Twins::default();
        t.start(1_000);
        t.signed(1_500);
        assert!(!t.own_record(900, now, HOUR), "an earlier run's record");
        assert!(!t.own_record(1_500, now, HOUR), "our own");
        assert!(t.own_record(1_600, now, HOUR));
        assert!(!t.own_record(1_700, now, HOUR), "once an hour");
        assert!(t.own_record(1_700, now + HOUR, HOUR));
    }

    #[test]
    fn only_a_foreign_endpoint_counts_and_warnings_are_bounded() {
        let now = Instant::now();
        let mut t = Twins::default();
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(
            !t.own_datagram(a("10.0.0.9:4000"), now, HOUR),
            "own endpoint unknown"
        );
        t.set_local(a("0.0.0.0:4000"));
        t.observe(a("203.0.113.7:61000"));
        assert!(!t.own_datagram(a("127.0.0.1:4000"), now, HOUR));
        assert!(!t.own_datagram(a("203.0.113.7:61000"), now, HOUR));
        assert!(t.own_datagram(a("127.0.0.1:4001"), now, HOUR));
        assert!(!t.own_datagram(a("127.0.0.1:4001"), now, HOUR));
        // Rotating through more endpoints than are remembered draws at
        // most MAX_WARNED warnings an hour in all.
        let mut warnings = 1;
        for round in 0..10 {
            for port in 5000..5000 + MAX_WARNED as u16 + 1 {
                let at = now + Duration::from_secs(round);
                warnings += usize::from(t.own_datagram(a(&format!("10.0.0.1:{port}")), at, HOUR));
            }
        }
        assert_eq!(warnings, MAX_WARNED);
        assert!(t.warned.len() <= MAX_WARNED);
        // An hour on, they warn again.
        assert!(t.own_datagram(a("10.0.0.1:5000"), now + HOUR + HOUR, HOUR));
    }
}
