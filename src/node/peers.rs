//! What the node knows of its peers beyond the routing table: contacts that
//! proved their key but found no slot, recent lookup results, and the view
//! of both that the relay is given.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::address::Address;
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
