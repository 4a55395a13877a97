//! Held messages, indexed so that per-`Store` work does not grow with how
//! many are held: by sender (for the quota), by recipient (for pushes and
//! pulls) and by the recipient's distance from us (for eviction).

use std::collections::{BTreeMap, BTreeSet};

use super::route::Route;
use crate::address::{Address, Distance};
use crate::message::{Envelope, MessageId};

/// A message this node holds and relays towards its recipient.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) envelope: Envelope,
    pub(crate) route: Route,
    /// Our own message (never evicted, not under any quota).
    pub(crate) own: bool,
}

/// Every held message and its indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeldSet {
    map: BTreeMap<MessageId, Held>,
    by_sender: BTreeMap<Address, usize>,
    by_recipient: BTreeMap<Address, BTreeSet<MessageId>>,
    /// Others' messages by their recipient's distance from us.
    by_distance: BTreeSet<(Distance, MessageId)>,
    bytes: usize,
}

impl HeldSet {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Body bytes of everything held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&Held> {
        self.map.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut Held> {
        self.map.get_mut(id)
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.map.contains_key(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&MessageId, &Held)> {
        self.map.iter()
    }

    /// Others' messages held from `sender`.
    pub(crate) fn count_from(&self, sender: &Address) -> usize {
        self.by_sender.get(sender).copied().unwrap_or(0)
    }

    /// Ids of held messages for `recipient`.
    pub(crate) fn for_recipient(&self, recipient: &Address) -> Vec<MessageId> {
        self.by_recipient
            .get(recipient)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Number of held messages for `recipient`.
    pub(crate) fn count_for(&self, recipient: &Address) -> usize {
        self.by_recipient.get(recipient).map_or(0, BTreeSet::len)
    }

    /// The others' message whose recipient is farthest from `me`.
    pub(crate) fn farthest(&self) -> Option<(Distance, MessageId)> {
        self.by_distance.last().copied()
    }

    pub(crate) fn insert(&mut self, me: &Address, held: Held) {
        let id = held.envelope.id();
        self.remove(me, &id);
        self.bytes += held.envelope.body().len();
        self.by_recipient
            .entry(held.envelope.recipient())
            .or_default()
            .insert(id);
        if !held.own {
            *self.by_sender.entry(held.envelope.sender()).or_insert(0) += 1;
            self.by_distance
                .insert((held.envelope.recipient().distance(me), id));
        }
        self.map.insert(id, held);
    }

    pub(crate) fn remove(&mut self, me: &Address, id: &MessageId) -> Option<Held> {
        let held = self.map.remove(id)?;
        self.bytes = self.bytes.saturating_sub(held.envelope.body().len());
        let r = held.envelope.recipient();
        if let Some(set) = self.by_recipient.get_mut(&r) {
            set.remove(id);
            if set.is_empty() {
                self.by_recipient.remove(&r);
            }
        }
        if !held.own {
            let s = held.envelope.sender();
            if let Some(n) = self.by_sender.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    self.by_sender.remove(&s);
                }
            }
            self.by_distance.remove(&(r.distance(me), *id));
        }
        Some(held)
    }
}
