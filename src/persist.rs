//! Saving and restoring the node's relay state through a [`Store`].
//!
//! Changes are tracked by message id ([`Node::touch`]) and written in one
//! batch by [`Node::persist`]; the node calls it before it confirms a hop or
//! an ack, and at the end of every input. [`Node::attach_store`] rebuilds
//! the state after a restart and resumes every retry.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tracing::warn;

use crate::address::Distance;
use crate::message::{Ack, Envelope, MessageId};
use crate::node::Node;
use crate::relay::{Held, HeldAck, OutboxState, Outgoing, Route, Tombstone};
use crate::store::{Op, Store, StoreError, Table};
use crate::wire::{self, proto, Contact};

/// Key of the routing-table snapshot in [`Table::Meta`].
const CONTACTS_KEY: &[u8] = b"contacts";

/// The record tables keyed by message id.
const BY_ID: [Table; 5] = [
    Table::Held,
    Table::Acks,
    Table::Tombstones,
    Table::Outbox,
    Table::Inbox,
];

fn distance(bytes: &[u8]) -> Option<Distance> {
    <[u8; 20]>::try_from(bytes).ok().map(Distance)
}

impl Node {
    /// The record of `id` in `table`, encoded, if the node has one.
    fn record(&self, table: Table, id: &MessageId) -> Option<Vec<u8>> {
        let r = &self.relay;
        Some(match table {
            Table::Held => {
                let h = r.held.get(id)?;
                proto::HeldRecord {
                    envelope: Some(wire::envelope_to_proto(&h.envelope)),
                    hops_left: h.route.hops_left,
                    budget: h.route.budget,
                    bound: Bytes::copy_from_slice(&h.route.bound.0),
                }
                .encode_to_vec()
            }
            Table::Acks => {
                let a = r.acks.get(id)?;
                proto::RoutedAckRecord {
                    ack: Some(wire::ack_to_proto(&a.ack)),
                    hops_left: a.route.hops_left,
                    budget: a.route.budget,
                    bound: Bytes::copy_from_slice(&a.route.bound.0),
                }
                .encode_to_vec()
            }
            Table::Tombstones => {
                let t = r.tombstones.get(id)?;
                proto::TombstoneRecord {
                    ack: Some(wire::ack_to_proto(&t.ack)),
                    keep_until_ms: t.keep_until_ms,
                }
                .encode_to_vec()
            }
            Table::Outbox => {
                let o = r.outbox.get(id)?;
                let state = match o.state {
                    OutboxState::Delivered => 2,
                    OutboxState::Expired => 3,
                    _ => 1,
                };
                proto::OutboxRecord {
                    envelope: Some(wire::envelope_to_proto(&o.envelope)),
                    state,
                }
                .encode_to_vec()
            }
            Table::Inbox => proto::InboxRecord {
                keep_until_ms: *r.inbox.get(id)?,
            }
            .encode_to_vec(),
            Table::Meta => return None,
        })
    }

    /// Write every change since the last call in one durable batch.
    /// Returns false (and keeps the changes pending) if the store failed.
    pub(crate) fn persist(&mut self) -> bool {
        if self.relay.dirty.is_empty() && !self.relay.contacts_dirty {
            return true;
        }
        let mut ops = Vec::with_capacity(self.relay.dirty.len() * BY_ID.len() + 1);
        for id in &self.relay.dirty {
            for table in BY_ID {
                ops.push(match self.record(table, id) {
                    Some(v) => Op::Put(table, id.0.to_vec(), v),
                    None => Op::Delete(table, id.0.to_vec()),
                });
            }
        }
        if self.relay.contacts_dirty {
            let contacts = self
                .table
                .buckets()
                .flat_map(|(_, b)| b.entries().iter().map(|e| e.contact))
                .map(|c| proto::Contact {
                    id: Bytes::copy_from_slice(&c.id.0),
                    endpoint: Some(wire::endpoint(&c.addr)),
                })
                .collect();
            ops.push(Op::Put(
                Table::Meta,
                CONTACTS_KEY.to_vec(),
                proto::ContactsRecord { contacts }.encode_to_vec(),
            ));
        }
        match self.store.apply(&ops) {
            Ok(()) => {
                self.relay.dirty.clear();
                self.relay.contacts_dirty = false;
                true
            }
            Err(e) => {
                warn!(error = %e, "could not save state");
                self.count_drop("store_error");
                false
            }
        }
    }

    /// Save the routing table and everything pending; call before exiting.
    pub fn shutdown(&mut self) -> bool {
        self.relay.contacts_dirty = true;
        self.persist()
    }

    /// Use `store` from now on, restoring what it holds: held messages and
    /// acks (their retries resume at once), tombstones, outbox, inbox.
    /// Returns the saved contacts' endpoints, to rejoin through.
    pub fn attach_store(
        &mut self,
        now: Instant,
        store: Box<dyn Store>,
    ) -> Result<Vec<SocketAddr>, StoreError> {
        let snapshot = store.load()?;
        self.store = store;
        let now_ms = self.wall_ms(now);
        let backoff = self.config.relay_backoff;
        let empty = Vec::new();
        let rows = |t: Table| snapshot.get(&t).unwrap_or(&empty);
        for (key, value) in rows(Table::Held) {
            match restore_held(key, value, now, backoff) {
                Some(h) if h.envelope.expires_at_ms() > now_ms => {
                    let id = h.envelope.id();
                    self.relay.held_bytes += h.envelope.body.len();
                    self.relay.held.insert(id, h);
                    self.relay.schedule.push(Reverse((now, false, id)));
                }
                _ => self.forget(key),
            }
        }
        for (key, value) in rows(Table::Acks) {
            match restore_ack(key, value, now, backoff) {
                Some(a) if a.ack.expires_at_ms > now_ms => {
                    let id = a.ack.id;
                    self.relay.acks.insert(id, a);
                    self.relay.schedule.push(Reverse((now, true, id)));
                }
                _ => self.forget(key),
            }
        }
        for (key, value) in rows(Table::Tombstones) {
            let t = proto::TombstoneRecord::decode(&value[..])
                .ok()
                .and_then(|r| {
                    let ack = Ack::try_from(r.ack?).ok()?;
                    (ack.id.0[..] == key[..]).then_some(Tombstone {
                        ack,
                        keep_until_ms: r.keep_until_ms,
                    })
                });
            match t {
                Some(t) if t.keep_until_ms > now_ms => {
                    self.relay.tombstones.insert(t.ack.id, t);
                }
                _ => self.forget(key),
            }
        }
        for (key, value) in rows(Table::Outbox) {
            let o = proto::OutboxRecord::decode(&value[..]).ok().and_then(|r| {
                let envelope = Envelope::try_from(r.envelope?).ok()?;
                let state = match r.state {
                    2 => OutboxState::Delivered,
                    3 => OutboxState::Expired,
                    _ => OutboxState::Sent,
                };
                (envelope.id().0[..] == key[..]).then_some(Outgoing { envelope, state })
            });
            match o {
                Some(o) => {
                    self.relay.outbox.insert(o.envelope.id(), o);
                }
                None => self.forget(key),
            }
        }
        for (key, value) in rows(Table::Inbox) {
            let until = proto::InboxRecord::decode(&value[..])
                .ok()
                .map(|r| r.keep_until_ms);
            match (until, <[u8; 20]>::try_from(&key[..])) {
                (Some(until), Ok(id)) if until > now_ms => {
                    self.relay.inbox.insert(MessageId(id), until);
                }
                _ => self.forget(key),
            }
        }
        let contacts = rows(Table::Meta)
            .iter()
            .filter(|(k, _)| k[..] == *CONTACTS_KEY)
            .filter_map(|(_, v)| proto::ContactsRecord::decode(&v[..]).ok())
            .flat_map(|r| r.contacts)
            .filter_map(|c| Contact::try_from(c).ok())
            .map(|c| c.addr)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Drop what was found expired or unreadable.
        self.persist();
        Ok(contacts)
    }

    /// A stored record that is expired or unreadable: delete it.
    fn forget(&mut self, key: &[u8]) {
        match <[u8; 20]>::try_from(key) {
            Ok(id) => {
                self.relay.dirty.insert(MessageId(id));
            }
            Err(_) => self.count_drop("store_corrupt"),
        }
    }
}

fn restore_held(key: &[u8], value: &[u8], now: Instant, backoff: Duration) -> Option<Held> {
    let r = proto::HeldRecord::decode(value).ok()?;
    let envelope = Envelope::try_from(r.envelope?).ok()?;
    if envelope.id().0[..] != key[..] {
        return None;
    }
    let bound = distance(&r.bound)?;
    let route = Route::new(
        envelope.recipient,
        r.hops_left,
        r.budget,
        now,
        backoff,
        bound,
    );
    Some(Held { envelope, route })
}

fn restore_ack(key: &[u8], value: &[u8], now: Instant, backoff: Duration) -> Option<HeldAck> {
    let r = proto::RoutedAckRecord::decode(value).ok()?;
    let ack = Ack::try_from(r.ack?).ok()?;
    if ack.id.0[..] != key[..] {
        return None;
    }
    let bound = distance(&r.bound)?;
    let route = Route::new(ack.sender, r.hops_left, r.budget, now, backoff, bound);
    Some(HeldAck { ack, route })
}
