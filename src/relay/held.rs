//! Held messages, indexed so that per-`Store` work does not grow with how
//! many are held: by sender and by source network (for the quotas), by
//! recipient (for pushes and pulls), and per source by the recipient's
//! distance from us (for eviction: the largest source gives way first).

use std::collections::{BTreeMap, BTreeSet};

use super::route::Route;
use crate::address::{Address, Distance};
use crate::message::{Envelope, MessageId};
use crate::routing::Prefix;

/// A message this node holds and relays towards its recipient.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) envelope: Envelope,
    pub(crate) route: Route,
    /// Our own message (never evicted, not under any quota).
    pub(crate) own: bool,
    /// The network it came from (`None`: exempt, e.g. loopback, or not
    /// recorded); quotas and eviction are per source.
    pub(crate) source: Option<Prefix>,
    /// When this node took it (or restored it from the store).
    pub(crate) taken_at: std::time::Instant,
}

/// Every held message and its indices.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeldSet {
    /// Boxed: a held copy is about 500 bytes, and an ordered map's node
    /// has room for 11 values whether it holds 1 or 11.
    map: BTreeMap<MessageId, Box<Held>>,
    by_sender: BTreeMap<Address, usize>,
    by_recipient: BTreeMap<Address, BTreeSet<MessageId>>,
    /// Others' messages per source, by their recipient's distance from us.
    by_source: BTreeMap<Option<Prefix>, BTreeSet<(Distance, MessageId)>>,
    /// Sources by how many messages they have held here.
    sizes: BTreeSet<(usize, Option<Prefix>)>,
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
        self.map.get(id).map(|h| &**h)
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut Held> {
        self.map.get_mut(id).map(|h| &mut **h)
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.map.contains_key(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&MessageId, &Held)> {
        self.map.iter().map(|(id, h)| (id, &**h))
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

    /// Others' messages held from `source`.
    pub(crate) fn count_from_source(&self, source: &Option<Prefix>) -> usize {
        self.by_source.get(source).map_or(0, BTreeSet::len)
    }

    /// The source holding the most others' messages here, with its count
    /// and its message whose recipient is farthest from us.
    pub(crate) fn largest_source(&self) -> Option<(Option<Prefix>, usize, MessageId)> {
        let &(n, source) = self.sizes.last()?;
        let &(_, id) = self.by_source.get(&source)?.last()?;
        Some((source, n, id))
    }

    fn resize(&mut self, source: Option<Prefix>, old: usize, new: usize) {
        self.sizes.remove(&(old, source));
        if new > 0 {
            self.sizes.insert((new, source));
        }
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
            let group = self.by_source.entry(held.source).or_default();
            let old = group.len();
            group.insert((held.envelope.recipient().distance(me), id));
            let new = group.len();
            self.resize(held.source, old, new);
        }
        self.map.insert(id, Box::new(held));
    }

    pub(crate) fn remove(&mut self, me: &Address, id: &MessageId) -> Option<Held> {
        let held = *self.map.remove(id)?;
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
            if let Some(group) = self.by_source.get_mut(&held.source) {
                let old = group.len();
                group.remove(&(r.distance(me), *id));
                let new = group.len();
                if new == 0 {
                    self.by_source.remove(&held.source);
                }
                self.resize(held.source, old, new);
            }
        }
        Some(held)
    }
}
