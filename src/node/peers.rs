//! What the node knows of its peers beyond the routing table: contacts that
//! proved their key but found no slot, recent lookup results, and the view
//! of both that the relay is given.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::limits::trim;
use crate::relay::Peers;
use crate::routing::RoutingTable;
use crate::wire::Contact;

/// Bounded set of (address, endpoint) pairs that proved their key but found
/// no slot in the table, so they are not challenged again.
#[derive(Clone, Debug, Default)]
pub(crate) struct VerifiedCache {
    order: VecDeque<(Address, SocketAddr)>,
    set: BTreeSet<(Address, SocketAddr)>,
}

impl VerifiedCache {
    pub(crate) fn contains(&self, c: &Contact) -> bool {
        self.set.contains(&(c.id, c.addr))
    }

    pub(crate) fn insert(&mut self, c: &Contact, cap: usize) {
        if cap == 0 || !self.set.insert((c.id, c.addr)) {
            return;
        }
        self.order.push_back((c.id, c.addr));
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
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
    map: HashMap<SocketAddr, (u64, u64, Instant)>,
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
            let mut idle: Vec<(Instant, SocketAddr)> =
                self.map.iter().map(|(a, e)| (e.2, *a)).collect();
            let drop = (UNPROVEN_CAP / 8).min(idle.len());
            if drop > 0 {
                idle.select_nth_unstable(drop - 1);
                for (_, a) in &idle[..drop] {
                    self.map.remove(a);
                }
            }
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
