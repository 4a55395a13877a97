//! Messages waiting for their recipient's key, and the keys we know.
//!
//! A message is sealed to its recipient's key before it leaves the node
//! (see [`crate::crypto`]). A key comes from the recipient's identity record,
//! a proof it gave us, a message it sent us, or our own user; until one of
//! them does, the message waits here as a draft, plaintext, on our own node
//! only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ed25519_dalek::VerifyingKey;

use crate::address::Address;
use crate::message::MessageId;

/// A message not yet sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Draft {
    pub(crate) to: Address,
    pub(crate) text: Bytes,
    pub(crate) created_at_ms: u64,
    pub(crate) ttl_secs: u32,
}

impl Draft {
    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.created_at_ms
            .saturating_add(u64::from(self.ttl_secs) * 1000)
    }
}

/// Drafts by their id and by recipient.
#[derive(Clone, Debug, Default)]
pub(crate) struct Drafts {
    map: BTreeMap<MessageId, Draft>,
    by_to: BTreeMap<Address, BTreeSet<MessageId>>,
}

impl Drafts {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&Draft> {
        self.map.get(id)
    }

    pub(crate) fn insert(&mut self, id: MessageId, d: Draft) {
        self.by_to.entry(d.to).or_default().insert(id);
        self.map.insert(id, d);
    }

    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Draft> {
        let d = self.map.remove(id)?;
        if let Some(set) = self.by_to.get_mut(&d.to) {
            set.remove(id);
            if set.is_empty() {
                self.by_to.remove(&d.to);
            }
        }
        Some(d)
    }

    /// Ids of drafts for `to`.
    pub(crate) fn for_recipient(&self, to: &Address) -> Vec<MessageId> {
        self.by_to
            .get(to)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Recipients with drafts waiting.
    pub(crate) fn recipients(&self) -> Vec<Address> {
        self.by_to.keys().copied().collect()
    }

    /// Ids of drafts expired at `now_ms`.
    pub(crate) fn expired(&self, now_ms: u64) -> Vec<MessageId> {
        self.map
            .iter()
            .filter(|(_, d)| d.expires_at_ms() <= now_ms)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Public keys of addresses, learned as they come; the earliest learned is
/// forgotten first beyond the cap.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyBook {
    /// Boxed: a key is kept decompressed (about 190 bytes), and an
    /// ordered map's node has room for 11 values whether it holds 1 or 11.
    map: BTreeMap<Address, Box<VerifyingKey>>,
    order: VecDeque<Address>,
}

impl KeyBook {
    pub(crate) fn get(&self, a: &Address) -> Option<&VerifyingKey> {
        self.map.get(a).map(|k| &**k)
    }

    /// Remember `key` (under the address it hashes to). Returns whether it
    /// was new.
    pub(crate) fn learn(&mut self, key: VerifyingKey, cap: usize) -> bool {
        let a = Address::of_key(key.as_bytes());
        if self.map.contains_key(&a) || cap == 0 {
            return false;
        }
        while self.map.len() >= cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.map.insert(a, Box::new(key));
        self.order.push_back(a);
        true
    }
}
