//! Messages we sent, from the lookup of their recipient to their ack or
//! expiry.

use std::collections::{BTreeMap, BTreeSet};

use crate::address::Address;
use crate::message::{Envelope, MessageId};

/// State of a message we sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxState {
    /// Looking up the recipient's neighbourhood.
    Finding,
    /// First copies sent; this many answers still awaited.
    Placing(usize),
    /// Held by relays (or taken by the recipient); waiting for the ack.
    Sent,
    /// The recipient's signed ack arrived.
    Delivered,
    /// Expired before any ack arrived.
    Expired,
}

impl OutboxState {
    /// Delivered or expired: nothing more will happen to it.
    pub fn is_finished(&self) -> bool {
        matches!(self, OutboxState::Delivered | OutboxState::Expired)
    }
}

/// A message we sent.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) envelope: Envelope,
    pub(crate) state: OutboxState,
    /// First-round peers whose answer is still awaited.
    pub(crate) placing: BTreeSet<Address>,
    /// The id its user knows it by: the draft's, if it waited for a key,
    /// else the envelope's.
    pub(crate) user_id: MessageId,
    /// The first round found no contact at all to send to.
    pub(crate) no_contacts: bool,
}

/// The outbox: pending and finished messages.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outbox {
    map: BTreeMap<MessageId, Outgoing>,
    /// Finished ones in creation order (the first to forget).
    finished: BTreeSet<(u64, MessageId)>,
}

impl Outbox {
    pub(crate) fn get(&self, id: &MessageId) -> Option<&Outgoing> {
        self.map.get(id)
    }

    /// Every entry, by envelope id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&MessageId, &Outgoing)> {
        self.map.iter()
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.map.contains_key(id)
    }

    /// Messages neither delivered nor expired.
    pub(crate) fn pending(&self) -> usize {
        self.map.len() - self.finished.len()
    }

    pub(crate) fn insert(&mut self, o: Outgoing) {
        let id = o.envelope.id();
        self.remove(&id);
        if o.state.is_finished() {
            self.finished.insert((o.envelope.created_at_ms(), id));
        }
        self.map.insert(id, o);
    }

    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Outgoing> {
        let o = self.map.remove(id)?;
        self.finished.remove(&(o.envelope.created_at_ms(), *id));
        Some(o)
    }

    /// Change `id`'s state (keeping the finished index right).
    pub(crate) fn set_state(&mut self, id: &MessageId, state: OutboxState) {
        if let Some(o) = self.map.get_mut(id) {
            let key = (o.envelope.created_at_ms(), *id);
            if state.is_finished() {
                self.finished.insert(key);
            } else {
                self.finished.remove(&key);
            }
            o.state = state;
        }
    }

    pub(crate) fn get_mut(&mut self, id: &MessageId) -> Option<&mut Outgoing> {
        self.map.get_mut(id)
    }

    pub(crate) fn get_mut_placing(&mut self, id: &MessageId) -> Option<&mut BTreeSet<Address>> {
        self.map.get_mut(id).map(|o| &mut o.placing)
    }

    /// Forget finished messages while more than `cap` are kept; returns them.
    pub(crate) fn trim(&mut self, cap: usize) -> Vec<MessageId> {
        let mut gone = Vec::new();
        while self.map.len() > cap {
            let Some((_, id)) = self.finished.pop_first() else {
                break;
            };
            self.map.remove(&id);
            gone.push(id);
        }
        gone
    }

    /// Pending messages expired at `now_ms`.
    pub(crate) fn expired(&self, now_ms: u64) -> Vec<MessageId> {
        self.map
            .iter()
            .filter(|(_, o)| !o.state.is_finished() && o.envelope.expires_at_ms() <= now_ms)
            .map(|(id, _)| *id)
            .collect()
    }
}
