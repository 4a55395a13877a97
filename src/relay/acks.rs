//! Acks: tombstones kept to answer late copies, and acks being routed
//! towards their message's sender. Both are capped and evict the entry
//! that would expire soonest.

use std::collections::{BTreeMap, BTreeSet};

use super::route::Route;
use crate::address::Address;
use crate::message::{Ack, MessageId};

/// A received ack kept to answer late copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub(crate) ack: Ack,
    pub(crate) keep_until_ms: u64,
    /// We have started routing it towards its sender once already.
    pub(crate) routed: bool,
}

/// Tombstones by id and by keep-until time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tombstones {
    /// Boxed: a tombstone is about 300 bytes (the ack's key is kept
    /// decompressed), and an ordered map's node has room for 11 values
    /// whether it holds 1 or 11.
    map: BTreeMap<MessageId, Box<Tombstone>>,
    order: BTreeSet<(u64, MessageId)>,
}

impl Tombstones {
    /// Every tombstone, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Tombstone> {
        self.map.values().map(|t| &**t)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&Tombstone> {
        self.map.get(id).map(|t| &**t)
    }

    pub(crate) fn set_routed(&mut self, id: &MessageId) -> bool {
        match self.map.get_mut(id) {
            Some(t) if !t.routed => {
                t.routed = true;
                true
            }
            _ => false,
        }
    }

    /// Keep `t`, replacing any earlier one for its id; returns the ids
    /// evicted to stay within `cap`.
    pub(crate) fn insert(&mut self, t: Tombstone, cap: usize) -> Vec<MessageId> {
        let id = t.ack.id;
        self.remove(&id);
        self.order.insert((t.keep_until_ms, id));
        self.map.insert(id, Box::new(t));
        let mut evicted = Vec::new();
        while self.map.len() > cap {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&victim);
            evicted.push(victim);
        }
        evicted
    }

    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Tombstone> {
        let t = *self.map.remove(id)?;
        self.order.remove(&(t.keep_until_ms, *id));
        Some(t)
    }

    /// Remove and return the ids kept until `now_ms` or earlier.
    pub(crate) fn expire(&mut self, now_ms: u64) -> Vec<MessageId> {
        let mut gone = Vec::new();
        while let Some(&(until, id)) = self.order.first() {
            if until > now_ms {
                break;
            }
            self.order.pop_first();
            self.map.remove(&id);
            gone.push(id);
        }
        gone
    }
}

/// An ack this node routes towards the message's sender.
#[derive(Clone, Debug)]
pub(crate) struct HeldAck {
    pub(crate) ack: Ack,
    pub(crate) route: Route,
}

/// Routed acks by id, by expiry and by the sender they go to.
#[derive(Clone, Debug, Default)]
pub(crate) struct AckRoutes {
    /// Boxed, as tombstones are.
    map: BTreeMap<MessageId, Box<HeldAck>>,
    order: BTreeSet<(u64, MessageId)>,
    by_sender: BTreeMap<Address, BTreeSet<MessageId>>,
}

impl AckRoutes {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&HeldAck> {
        self.map.get(id).map(|a| &**a)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut HeldAck> {
        self.map.get_mut(id).map(|a| &mut **a)
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.map.contains_key(id)
    }

    /// Ids of acks routed to `sender`.
    pub(crate) fn for_sender(&self, sender: &Address) -> Vec<MessageId> {
        self.by_sender
            .get(sender)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Number routed to `sender`.
    pub(crate) fn count_for(&self, sender: &Address) -> usize {
        self.by_sender.get(sender).map_or(0, BTreeSet::len)
    }

    /// Start routing `a`; returns the ids evicted to stay within `cap`.
    pub(crate) fn insert(&mut self, a: HeldAck, cap: usize) -> Vec<MessageId> {
        let id = a.ack.id;
        self.remove(&id);
        self.order.insert((a.ack.expires_at_ms, id));
        self.by_sender.entry(a.ack.sender).or_default().insert(id);
        self.map.insert(id, Box::new(a));
        let mut evicted = Vec::new();
        while self.map.len() > cap {
            let Some(&(_, victim)) = self.order.first() else {
                break;
            };
            self.remove(&victim);
            evicted.push(victim);
        }
        evicted
    }

    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<HeldAck> {
        let a = *self.map.remove(id)?;
        self.order.remove(&(a.ack.expires_at_ms, *id));
        if let Some(set) = self.by_sender.get_mut(&a.ack.sender) {
            set.remove(id);
            if set.is_empty() {
                self.by_sender.remove(&a.ack.sender);
            }
        }
        Some(a)
    }

    /// Ids of acks expired at `now_ms`.
    pub(crate) fn expired(&self, now_ms: u64) -> Vec<MessageId> {
        self.order
            .iter()
            .take_while(|(exp, _)| *exp <= now_ms)
            .map(|(_, id)| *id)
            .collect()
    }
}

/// A bounded memory of message ids until a time each: when full, the one
/// remembered for the shortest time goes first.
#[derive(Clone, Debug)]
pub(crate) struct IdMemory<V> {
    map: BTreeMap<MessageId, (V, u64)>,
    order: BTreeSet<(u64, MessageId)>,
}

impl<V> Default for IdMemory<V> {
    fn default() -> Self {
        IdMemory {
            map: BTreeMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<V> IdMemory<V> {
    pub(crate) fn get(&self, id: &MessageId) -> Option<&V> {
        self.map.get(id).map(|(v, _)| v)
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.map.contains_key(id)
    }

    /// Remember `id` with `v` until `until_ms`, within `cap` entries.
    pub(crate) fn insert(&mut self, id: MessageId, v: V, until_ms: u64, cap: usize) {
        if let Some((_, old)) = self.map.remove(&id) {
            self.order.remove(&(old, id));
        }
        if cap == 0 {
            return;
        }
        while self.map.len() >= cap {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&victim);
        }
        self.order.insert((until_ms, id));
        self.map.insert(id, (v, until_ms));
    }

    /// Forget what is remembered until `now_ms` or earlier.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        while let Some(&(until, id)) = self.order.first() {
            if until > now_ms {
                break;
            }
            self.order.pop_first();
            self.map.remove(&id);
        }
    }
}
