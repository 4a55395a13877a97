//! Messages received for us: stored before they are acknowledged, handed
//! to the user in the order they were written, remembered after that so
//! each is shown once.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::message::{Envelope, MessageId};

/// One received message.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    /// The message, kept in memory only until it is shown.
    pub(crate) envelope: Option<Envelope>,
    /// Its opened text, in memory only, from when it was accepted until it
    /// is shown (after a restart it is opened again).
    pub(crate) text: Option<Bytes>,
    pub(crate) created_at_ms: u64,
    pub(crate) keep_until_ms: u64,
    /// It arrived created at or before the replay floor, its id no longer
    /// remembered: it may repeat a message shown before (§16.4).
    pub(crate) maybe_repeat: bool,
}

/// The inbox.
#[derive(Clone, Debug, Default)]
pub(crate) struct Inbox {
    map: BTreeMap<MessageId, Received>,
    /// Not yet shown, in writing order.
    unshown: BTreeSet<(u64, MessageId)>,
    /// Shown, by keep-until time (the expiry order).
    shown: BTreeSet<(u64, MessageId)>,
    /// Shown, by creation time (the order they are forgotten in when over
    /// the cap: the oldest first, so the replay floor rises slowly).
    shown_by_age: BTreeSet<(u64, MessageId)>,
}

impl Inbox {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn unshown_len(&self) -> usize {
        self.unshown.len()
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.map.contains_key(id)
    }

    pub(crate) fn get(&self, id: &MessageId) -> Option<&Received> {
        self.map.get(id)
    }

    /// Add a message; `envelope` is `None` for one already shown.
    pub(crate) fn insert(&mut self, id: MessageId, r: Received) {
        self.remove(&id);
        if r.envelope.is_some() {
            self.unshown.insert((r.created_at_ms, id));
        } else {
            self.shown.insert((r.keep_until_ms, id));
            self.shown_by_age.insert((r.created_at_ms, id));
        }
        self.map.insert(id, r);
    }

    pub(crate) fn remove(&mut self, id: &MessageId) -> Option<Received> {
        let r = self.map.remove(id)?;
        self.unshown.remove(&(r.created_at_ms, *id));
        self.shown.remove(&(r.keep_until_ms, *id));
        self.shown_by_age.remove(&(r.created_at_ms, *id));
        Some(r)
    }

    /// The next message to show, in writing order.
    pub(crate) fn next_unshown(&self) -> Option<MessageId> {
        self.unshown.first().map(|(_, id)| *id)
    }

    /// Mark `id` shown; returns its message, its text if still known, and
    /// whether it may repeat one shown before.
    pub(crate) fn mark_shown(&mut self, id: &MessageId) -> Option<(Envelope, Option<Bytes>, bool)> {
        let r = self.map.get_mut(id)?;
        let e = r.envelope.take()?;
        let text = r.text.take();
        self.unshown.remove(&(r.created_at_ms, *id));
        self.shown.insert((r.keep_until_ms, *id));
        self.shown_by_age.insert((r.created_at_ms, *id));
        Some((e, text, r.maybe_repeat))
    }

    /// Forget shown messages beyond `cap` entries in all, the oldest
    /// written first; unshown ones are never forgotten. Returns the ids
    /// forgotten with their creation times.
    pub(crate) fn trim(&mut self, cap: usize) -> Vec<(MessageId, u64)> {
        let mut gone = Vec::new();
        while self.map.len() > cap {
            let Some(&(created, id)) = self.shown_by_age.first() else {
                break;
            };
            self.remove(&id);
            gone.push((id, created));
        }
        gone
    }

    /// Forget shown messages kept until `now_ms` or earlier.
    pub(crate) fn expire(&mut self, now_ms: u64) -> Vec<MessageId> {
        let mut gone = Vec::new();
        while let Some(&(until, id)) = self.shown.first() {
            if until > now_ms {
                break;
            }
            self.remove(&id);
            gone.push(id);
        }
        gone
    }
}
