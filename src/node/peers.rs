//! What the node knows of its peers beyond the routing table: contacts that
//! proved their key but found no slot, recent lookup results, and the view
//! of both that the relay is given.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::limits::{evict_oldest, trim, FastMap};
use crate::relay::Peers;
use crate::routing::RoutingTable;
use crate::wire::Contact;

/// Bounded set of (address, endpoint) pairs that proved their key but found
/// no slot in the table, so they are not challenged again.
///
/// Direct-mapped: each pair is a 64-bit keyed digest (SipHash-2-4, a
/// pseudorandom function made for short inputs, under a 128-bit key drawn
/// from the node's seed, so no one else can compute it or aim a
/// collision; it replaced a truncated SHA-256 that cost ten times as much), kept in slot `digest % slots`, where a later pair replaces
/// an earlier one. 8 bytes a pair instead of about 130 in an ordered set
/// plus an order queue: at 100,000 simulated nodes the caches filled up
/// and were the largest part of a node. A pair matches only its own
/// digest; another pair with the same 64 bits (2^-64 per pair) would pass
/// for verified, which costs at most one challenge not sent.
#[derive(Clone, Debug)]
pub(crate) struct VerifiedCache {
    key: [u8; 16],
    /// `cap` rounded up to a power of two, allocated on first use; 0 is
    /// an empty slot (a digest of 0 is stored as 1).
    slots: Option<Box<[u64]>>,
}

impl VerifiedCache {
    /// An empty cache whose digests are keyed by `key`.
    pub(crate) fn new(key: [u8; 16]) -> VerifiedCache {
        VerifiedCache { key, slots: None }
    }

    fn digest(&self, c: &Contact) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher24::new_with_key(&self.key);
        h.write(&c.id.0);
        match c.addr {
            SocketAddr::V4(a) => h.write(&a.ip().octets()),
            SocketAddr::V6(a) => h.write(&a.ip().octets()),
        }
        h.write(&c.addr.port().to_be_bytes());
        h.finish().max(1)
    }

    pub(crate) fn contains(&self, c: &Contact) -> bool {
        let Some(slots) = &self.slots else {
            return false;
        };
        let d = self.digest(c);
        slots[(d % slots.len() as u64) as usize] == d
    }

    pub(crate) fn insert(&mut self, c: &Contact, cap: usize) {
        if cap == 0 {
            return;
        }
        let d = self.digest(c);
        let slots = self
            .slots
            .get_or_insert_with(|| vec![0; cap.next_power_of_two()].into_boxed_slice());
        let n = slots.len() as u64;
        slots[(d % n) as usize] = d;
    }
}

/// The routing table and verified cache as the relay sees them.
pub(crate) struct TableView<'a> {
    pub(crate) table: &'a RoutingTable,
    pub(crate) verified: &'a VerifiedCache,
}

impl Peers for TableView<'_> {
    fn closest(&self, target: &Address, n: usize) -> Vec<Contact> {
        self.table.closest(target, n)
    }

    fn verified(&self, c: &Contact) -> bool {
        self.table.contains(&c.id, &c.addr) || self.verified.contains(c)
    }

    fn in_table(&self, c: &Contact) -> bool {
        self.table.contains(&c.id, &c.addr)
    }
}

/// Recent results of relay lookups, so a burst of messages to one address
/// costs one lookup.
#[derive(Clone, Debug, Default)]
pub(crate) struct LookupCache {
    map: BTreeMap<Address, (Instant, Vec<Contact>)>,
    order: VecDeque<(Instant, Address)>,
}

impl LookupCache {
    /// A result for `target` found less than `ttl` ago.
    pub(crate) fn get(&self, target: &Address, now: Instant, ttl: Duration) -> Option<&[Contact]> {
        match self.map.get(target) {
            Some((at, closest)) if now.saturating_duration_since(*at) < ttl => Some(closest),
            _ => None,
        }
    }

    pub(crate) fn insert(
        &mut self,
        target: Address,
        now: Instant,
        closest: Vec<Contact>,
        cap: usize,
    ) {
        if cap == 0 || closest.is_empty() {
            return;
        }
        self.map.insert(target, (now, closest));
        self.order.push_back((now, target));
        while self.map.len() > cap || self.order.len() > 2 * cap {
            let Some((at, t)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&t).is_some_and(|(when, _)| *when == at) {
                self.map.remove(&t);
            }
        }
    }
}

/// Bytes exchanged with endpoints that have not proven they receive at
/// their address, so a spoofed source can make us send at most
/// `AMPLIFICATION` times what it sent (anti-amplification, as in QUIC).
#[derive(Clone, Debug, Default)]
pub(crate) struct Unproven {
    /// Bytes in, bytes out, and the last time either changed.
    map: FastMap<SocketAddr, (u64, u64, Instant)>,
}

/// What we may send an unproven endpoint, as a multiple of what it sent.
pub(crate) const AMPLIFICATION: u64 = 3;

/// Unproven endpoints tracked; at the cap, the eighth idle longest is
/// forgotten (and starts again from nothing, which costs an attacker its
/// credit too).
const UNPROVEN_CAP: usize = 4096;

/// An unproven endpoint's counts are forgotten after this long without a
/// datagram either way (at the next maintenance tick).
pub(crate) const UNPROVEN_IDLE: Duration = Duration::from_secs(120);

impl Unproven {
    /// `from` sent us `n` bytes at `now`.
    pub(crate) fn received(&mut self, from: SocketAddr, n: usize, now: Instant) {
        if self.map.len() >= UNPROVEN_CAP && !self.map.contains_key(&from) {
            // The eighth idle longest (ties by endpoint, so the choice
            // does not depend on the map's order): amortised, a constant
            // cost per new endpoint even under a flood of spoofed ones.
            evict_oldest(&mut self.map, UNPROVEN_CAP / 8, |e| e.2);
        }
        let e = self.map.entry(from).or_insert((0, 0, now));
        e.0 = e.0.saturating_add(n as u64);
        e.2 = now;
    }

    /// Forget endpoints idle for `idle` (`UNPROVEN_IDLE`) and `proven` ones:
    /// forgetting never grants credit, since the count starts again from
    /// zero received.
    pub(crate) fn expire(&mut self, now: Instant, idle: Duration) {
        self.map
            .retain(|_, e| now.saturating_duration_since(e.2) < idle);
        trim(&mut self.map);
    }

    /// `addr` proved it receives there: its counts are no longer needed.
    pub(crate) fn forget(&mut self, addr: &SocketAddr) {
        self.map.remove(addr);
    }

    /// How many more bytes we may send `to`.
    pub(crate) fn allowance(&self, to: &SocketAddr) -> u64 {
        match self.map.get(to) {
            Some((i, o, _)) => i.saturating_mul(AMPLIFICATION).saturating_sub(*o),
            None => 0,
        }
    }

    /// We sent `to` `n` bytes.
    pub(crate) fn sent(&mut self, to: &SocketAddr, n: usize) {
        if let Some(e) = self.map.get_mut(to) {
            e.1 = e.1.saturating_add(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(i: u32) -> SocketAddr {
        SocketAddr::from((i.to_be_bytes(), 4000))
    }

    #[test]
    fn the_verified_cache_remembers_pairs_exactly_and_stays_small() {
        let c = |i: u32, port: u16| Contact {
            id: Address([i as u8; 20]),
            addr: SocketAddr::from((i.to_be_bytes(), port)),
        };
        let mut v = VerifiedCache::new([1; 16]);
        assert!(!v.contains(&c(1, 4000)));
        v.insert(&c(1, 4000), 256);
        assert!(v.contains(&c(1, 4000)));
        assert!(!v.contains(&c(1, 4001)), "another endpoint is another pair");
        assert!(!v.contains(&c(2, 4000)));
        // Another node's key gives other digests.
        let w = VerifiedCache::new([2; 16]);
        assert_ne!(v.digest(&c(1, 4000)), w.digest(&c(1, 4000)));
        // Thousands of pairs: 256 slots, the latest pairs remembered.
        for i in 0..5000 {
            v.insert(&c(i, 5000), 256);
        }
        assert_eq!(v.slots.as_ref().map(|s| s.len()), Some(256));
        assert!(v.contains(&c(4999, 5000)));
        let kept = (0..5000).filter(|&i| v.contains(&c(i, 5000))).count();
        assert!(kept <= 256 && kept > 100, "{kept}");
        let mut none = VerifiedCache::new([1; 16]);
        none.insert(&c(1, 4000), 0);
        assert!(!none.contains(&c(1, 4000)), "cap 0 remembers nothing");
    }

    #[test]
    fn unproven_counts_stay_bounded_and_the_longest_idle_go_first() {
        let t0 = Instant::now();
        let mut u = Unproven::default();
        for i in 0..UNPROVEN_CAP as u32 {
            u.received(endpoint(i), 100, t0 + Duration::from_millis(u64::from(i)));
        }
        // Endpoint 0 is the longest idle, until it sends again.
        u.received(endpoint(0), 100, t0 + Duration::from_secs(10));
        u.received(endpoint(1_000_000), 10, t0 + Duration::from_secs(11));
        assert!(u.map.len() <= UNPROVEN_CAP);
        assert_eq!(u.allowance(&endpoint(0)), 600, "recently active: kept");
        assert_eq!(u.allowance(&endpoint(1)), 0, "idle longest: forgotten");
        assert_eq!(u.allowance(&endpoint(1_000_000)), 30);
        for i in 0..20_000u32 {
            u.received(endpoint(2_000_000 + i), 1, t0 + Duration::from_secs(12));
            assert!(u.map.len() <= UNPROVEN_CAP);
        }
        u.sent(&endpoint(2_019_999), 2);
        assert_eq!(u.allowance(&endpoint(2_019_999)), 1);
        u.expire(t0 + Duration::from_secs(200), UNPROVEN_IDLE);
        assert!(u.map.is_empty());
    }
}
