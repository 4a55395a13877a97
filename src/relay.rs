//! Store-and-forward: held messages, acks and tombstones, and the rules of
//! protocol.md for relaying, backoff, delivery, ack propagation and purge.
//!
//! This is part of the sans-IO [`Node`]; it extends it with the message
//! half of the protocol. Every container here is bounded by a `Config` cap.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tracing::debug;

use crate::address::{Address, Distance};
use crate::message::{Ack, Envelope, MessageId};
use crate::node::{Event, Node, NodeError, Purpose};
use crate::wire::{Body, Contact, StoreStatus};

/// How a held message or a routed ack travels: towards `target` (the
/// recipient, or the sender for an ack), inside `bound`, spending `budget`.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// Where copies go.
    pub(crate) target: Address,
    /// Further hops the copies we send may travel.
    pub(crate) hops_left: u32,
    /// Transmissions left.
    pub(crate) budget: u32,
    pub(crate) next_attempt: Instant,
    pub(crate) backoff: Duration,
    /// Peers that confirmed holding a copy.
    pub(crate) holders: BTreeSet<Address>,
    /// Peers that refused it, or to which a request is in flight.
    pub(crate) skip: BTreeSet<Address>,
    /// Endpoints of the peers in `holders` and `skip`, to purge them later.
    pub(crate) addrs: BTreeMap<Address, SocketAddr>,
    /// Copies go only to nodes nearer `target` than this: our own distance
    /// for a relay (copies move inwards and gather at the k closest), just
    /// past the k-th lookup result for the originator.
    pub(crate) bound: Distance,
}

impl Route {
    pub(crate) fn new(
        target: Address,
        hops_left: u32,
        budget: u32,
        now: Instant,
        backoff: Duration,
        bound: Distance,
    ) -> Route {
        Route {
            target,
            hops_left,
            budget,
            next_attempt: now,
            backoff,
            holders: BTreeSet::new(),
            skip: BTreeSet::new(),
            addrs: BTreeMap::new(),
            bound,
        }
    }

    /// Choose from `candidates` the peers to send a copy to now, spending
    /// one unit of budget on each, with the `hops_left` each copy carries.
    fn pick(&mut self, me: &Address, candidates: Vec<Contact>) -> Vec<(Contact, u32)> {
        let mut out = Vec::new();
        for c in candidates {
            let is_target = c.id == self.target;
            let inside = is_target || c.id.distance(&self.target) < self.bound;
            if c.id == *me
                || self.holders.contains(&c.id)
                || self.skip.contains(&c.id)
                || (self.hops_left == 0 && !is_target)
                || !inside
            {
                continue;
            }
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            self.skip.insert(c.id);
            self.addrs.insert(c.id, c.addr);
            let hops = if is_target {
                0
            } else {
                self.hops_left.saturating_sub(1)
            };
            out.push((c, hops));
        }
        out
    }

    /// A picked copy could not be sent (no request slot): no budget spent.
    fn unsent(&mut self, peer: &Address) {
        self.skip.remove(peer);
        self.budget += 1;
    }
}

/// A message this node holds and relays towards its recipient.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub(crate) envelope: Envelope,
    pub(crate) route: Route,
}

/// An ack this node routes towards the message's sender.
#[derive(Clone, Debug)]
pub(crate) struct HeldAck {
    pub(crate) ack: Ack,
    pub(crate) route: Route,
}

/// State of a message we sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxState {
    /// Looking up the recipient's neighbourhood.
    Finding,
    /// First copies sent; this many confirmations still awaited.
    Placing(usize),
    /// Held by relays; waiting for the ack.
    Sent,
    /// The recipient's signed ack arrived.
    Delivered,
    /// Expired before any ack arrived.
    Expired,
}

/// A message we sent.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) envelope: Envelope,
    pub(crate) state: OutboxState,
}

/// A received ack kept to answer late copies.
#[derive(Clone, Debug)]
pub(crate) struct Tombstone {
    pub(crate) ack: Ack,
    pub(crate) keep_until_ms: u64,
}

/// Everything the relay keeps.
#[derive(Clone, Debug, Default)]
pub(crate) struct RelayState {
    pub(crate) held: BTreeMap<MessageId, Held>,
    pub(crate) held_bytes: usize,
    pub(crate) acks: BTreeMap<MessageId, HeldAck>,
    pub(crate) tombstones: BTreeMap<MessageId, Tombstone>,
    pub(crate) outbox: BTreeMap<MessageId, Outgoing>,
    /// Received message ids and until when to remember them.
    pub(crate) inbox: BTreeMap<MessageId, u64>,
    /// Ids whose records changed since the last [`Node::persist`].
    pub(crate) dirty: BTreeSet<MessageId>,
    /// The routing-table snapshot is due to be saved.
    pub(crate) contacts_dirty: bool,
    /// (due, is_ack, id); stale entries are skipped when popped.
    pub(crate) schedule: std::collections::BinaryHeap<Reverse<(Instant, bool, MessageId)>>,
}

/// The smallest distance greater than `d` (saturating), so a `<` bound
/// includes `d` itself.
fn bump(d: &mut Distance) {
    for byte in d.0.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return;
        }
    }
    d.0 = [0xff; 20];
}

impl Node {
    /// Note that the records of message `id` changed and must be saved.
    pub(crate) fn touch(&mut self, id: MessageId) {
        self.relay.dirty.insert(id);
    }

    /// Wall-clock milliseconds at `now`.
    pub(crate) fn wall_ms(&self, now: Instant) -> u64 {
        let (anchor, ms) = self.clock;
        if now >= anchor {
            ms.saturating_add((now - anchor).as_millis() as u64)
        } else {
            ms.saturating_sub((anchor - now).as_millis() as u64)
        }
    }

    /// Send `body` to `to`: sign it, keep it in the outbox, look up the
    /// recipient's neighbourhood and place copies there.
    pub fn send(&mut self, now: Instant, to: Address, body: Bytes) -> Result<MessageId, NodeError> {
        if body.len() > crate::config::MAX_BODY {
            return Err(NodeError::BodyTooLarge(body.len()));
        }
        if to == self.me {
            return Err(NodeError::ToSelf);
        }
        let pending = self
            .relay
            .outbox
            .values()
            .filter(|o| {
                matches!(
                    o.state,
                    OutboxState::Finding | OutboxState::Placing(_) | OutboxState::Sent
                )
            })
            .count();
        if pending >= self.config.max_outbox {
            return Err(NodeError::OutboxFull(pending));
        }
        let envelope = Envelope::sign(
            &self.identity,
            to,
            self.wall_ms(now),
            self.config.default_ttl.as_secs().min(u64::from(u32::MAX)) as u32,
            self.config.hop_limit,
            body,
        );
        let id = envelope.id();
        self.touch(id);
        self.relay.outbox.insert(
            id,
            Outgoing {
                envelope: envelope.clone(),
                state: OutboxState::Finding,
            },
        );
        self.trim_outbox();
        self.hold(now, envelope, self.config.hop_limit, false);
        self.start_send_lookup(now, id, to);
        self.persist();
        Ok(id)
    }

    fn trim_outbox(&mut self) {
        // Finished entries (delivered, expired) go first, oldest first.
        while self.relay.outbox.len() > self.config.max_outbox {
            let victim = self
                .relay
                .outbox
                .iter()
                .filter(|(_, o)| matches!(o.state, OutboxState::Delivered | OutboxState::Expired))
                .min_by_key(|(_, o)| o.envelope.created_at_ms)
                .map(|(id, _)| *id);
            match victim {
                Some(id) => {
                    self.relay.outbox.remove(&id);
                    self.touch(id);
                }
                None => break,
            }
        }
    }

    /// The sender's lookup finished: place the first copies.
    pub(crate) fn send_lookup_done(&mut self, now: Instant, id: MessageId, closest: &[Contact]) {
        self.touch(id);
        let Some(held) = self.relay.held.get(&id) else {
            return;
        };
        let recipient = held.envelope.recipient;
        // Lookup results are fresher than the table; send to them first.
        let mut targets: Vec<Contact> = closest.to_vec();
        for c in self.table.closest(&recipient, self.config.k) {
            if !targets.iter().any(|t| t.id == c.id) {
                targets.push(c);
            }
        }
        targets.sort_by_key(|c| c.id.distance(&recipient));
        targets.truncate(self.config.k);
        if let (Some(far), Some(h)) = (targets.last(), self.relay.held.get_mut(&id)) {
            if targets.len() >= self.config.k {
                // Just past the k-th closest: later copies stay in that circle.
                let mut d = far.id.distance(&recipient);
                bump(&mut d);
                h.route.bound = d;
            }
        }
        let sent = self.store_to(now, id, targets);
        if let Some(o) = self.relay.outbox.get_mut(&id) {
            if o.state == OutboxState::Finding {
                o.state = OutboxState::Placing(sent);
            }
        }
        if sent == 0 {
            self.first_round_done(id);
        }
        self.schedule_attempt(now, id, false);
    }

    fn first_round_done(&mut self, id: MessageId) {
        self.touch(id);
        let relays = self
            .relay
            .held
            .get(&id)
            .map_or(0, |h| h.route.holders.len());
        if let Some(o) = self.relay.outbox.get_mut(&id) {
            if matches!(o.state, OutboxState::Placing(_) | OutboxState::Finding) {
                o.state = OutboxState::Sent;
                let to = o.envelope.recipient;
                self.emit(Event::MessageSent { id, to, relays });
            }
        }
    }

    fn first_round_step(&mut self, id: MessageId) {
        let done = match self.relay.outbox.get_mut(&id) {
            Some(Outgoing {
                state: OutboxState::Placing(n),
                ..
            }) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            _ => false,
        };
        if done {
            self.first_round_done(id);
        }
    }

    /// Send `Store` for held message `id` to `targets` within its budget.
    /// Returns how many were sent.
    fn store_to(&mut self, now: Instant, id: MessageId, targets: Vec<Contact>) -> usize {
        self.touch(id);
        let me = self.me;
        let Some(held) = self.relay.held.get_mut(&id) else {
            return 0;
        };
        let picks = held.route.pick(&me, targets);
        let envelope = held.envelope.clone();
        let mut sent = 0;
        for (c, hops_left) in picks {
            let body = Body::Store {
                envelope: Box::new(envelope.clone()),
                hops_left,
            };
            let challenge = self.needs_proof(&c);
            self.stats.stores_sent += 1;
            if self
                .request(now, c.addr, Some(c.id), body, challenge, Purpose::Store(id))
                .is_some()
            {
                sent += 1;
            } else if let Some(held) = self.relay.held.get_mut(&id) {
                held.route.unsent(&c.id);
            }
        }
        sent
    }

    fn ack_to(&mut self, now: Instant, id: MessageId, targets: Vec<Contact>) {
        self.touch(id);
        let me = self.me;
        let Some(h) = self.relay.acks.get_mut(&id) else {
            return;
        };
        let picks = h.route.pick(&me, targets);
        let ack = h.ack;
        for (c, hops_left) in picks {
            let body = Body::Acknowledge {
                ack: Box::new(ack),
                hops_left,
            };
            self.stats.acks_sent += 1;
            let purpose = Purpose::Acknowledge(id);
            if self
                .request(now, c.addr, Some(c.id), body, false, purpose)
                .is_none()
            {
                if let Some(h) = self.relay.acks.get_mut(&id) {
                    h.route.unsent(&c.id);
                }
            }
        }
    }

    /// Remember that `from`, which sent us a copy of `id`, holds it. Only a
    /// verified contact at that endpoint counts, and never the recipient:
    /// an unproven claim must not stop us from delivering. At most
    /// `max_tracked_peers` are remembered per message.
    fn note_holder(&mut self, id: MessageId, from: Contact) {
        let verified = !self.needs_proof(&from);
        let cap = self.config.max_tracked_peers;
        let Some(h) = self.relay.held.get_mut(&id) else {
            return;
        };
        if !verified || from.id == h.envelope.recipient {
            return;
        }
        if h.route.addrs.len() >= cap && !h.route.addrs.contains_key(&from.id) {
            return;
        }
        h.route.holders.insert(from.id);
        h.route.addrs.insert(from.id, from.addr);
    }

    /// Purge-only acks (hops 0) to peers known to hold a copy.
    fn forward_purge(&mut self, now: Instant, ack: &Ack, peers: Vec<Contact>) {
        for Contact { id: p, addr } in peers {
            self.stats.acks_sent += 1;
            let body = Body::Acknowledge {
                ack: Box::new(*ack),
                hops_left: 0,
            };
            self.request(
                now,
                addr,
                Some(p),
                body,
                false,
                Purpose::Acknowledge(ack.id),
            );
        }
    }

    fn route_mut(&mut self, id: &MessageId, is_ack: bool) -> Option<&mut Route> {
        if is_ack {
            self.relay.acks.get_mut(id).map(|a| &mut a.route)
        } else {
            self.relay.held.get_mut(id).map(|h| &mut h.route)
        }
    }

    fn schedule_attempt(&mut self, now: Instant, id: MessageId, is_ack: bool) {
        if self.route_mut(&id, is_ack).is_none() {
            return;
        }
        let factor = self.rng.gen_range(0.75..1.25);
        let cap = self.config.relay_backoff_max;
        let Some(route) = self.route_mut(&id, is_ack) else {
            return;
        };
        let next = now + route.backoff.mul_f64(factor);
        route.next_attempt = next;
        route.backoff = (route.backoff * 2).min(cap);
        self.relay.schedule.push(Reverse((next, is_ack, id)));
    }

    /// Earliest relay deadline (may be a stale entry: an early wake-up is harmless).
    pub(crate) fn relay_timeout(&self) -> Option<Instant> {
        self.relay.schedule.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Run due relay attempts.
    pub(crate) fn relay_timers(&mut self, now: Instant) {
        while let Some(Reverse((due, is_ack, id))) = self.relay.schedule.peek().copied() {
            if due > now {
                break;
            }
            self.relay.schedule.pop();
            let current = if is_ack {
                self.relay.acks.get(&id).map(|a| a.route.next_attempt)
            } else {
                self.relay.held.get(&id).map(|h| h.route.next_attempt)
            };
            if current != Some(due) {
                continue;
            }
            self.attempt(now, id, is_ack);
        }
    }

    fn attempt(&mut self, now: Instant, id: MessageId, is_ack: bool) {
        self.touch(id);
        let now_ms = self.wall_ms(now);
        if is_ack {
            let Some(a) = self.relay.acks.get(&id) else {
                return;
            };
            if a.ack.expires_at_ms <= now_ms || a.route.budget == 0 {
                self.relay.acks.remove(&id);
                return;
            }
            let targets = self.table.closest(&a.ack.sender, self.config.k);
            self.ack_to(now, id, targets);
            self.schedule_attempt(now, id, true);
        } else {
            let Some(h) = self.relay.held.get(&id) else {
                return;
            };
            if h.envelope.expires_at_ms() <= now_ms {
                self.expire(id);
                return;
            }
            if h.route.budget == 0 {
                debug!(id = %id.short(), "relay budget spent");
                self.unhold(&id);
                return;
            }
            let recipient = h.envelope.recipient;
            let targets = self.table.closest(&recipient, self.config.k);
            self.store_to(now, id, targets);
            self.schedule_attempt(now, id, false);
        }
    }

    fn expire(&mut self, id: MessageId) {
        self.touch(id);
        self.unhold(&id);
        if let Some(o) = self.relay.outbox.get_mut(&id) {
            if !matches!(o.state, OutboxState::Delivered | OutboxState::Expired) {
                o.state = OutboxState::Expired;
                self.emit(Event::MessageExpired { id });
            }
        }
    }

    fn unhold(&mut self, id: &MessageId) -> Option<Held> {
        let h = self.relay.held.remove(id)?;
        self.relay.dirty.insert(*id);
        self.relay.held_bytes = self.relay.held_bytes.saturating_sub(h.envelope.body.len());
        Some(h)
    }

    /// Drop what has expired: held messages, acks, tombstones, inbox ids.
    pub(crate) fn relay_sweep(&mut self, now: Instant) {
        let now_ms = self.wall_ms(now);
        let expired: Vec<MessageId> = self
            .relay
            .held
            .iter()
            .filter(|(_, h)| h.envelope.expires_at_ms() <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.expire(id);
        }
        let outbox_expired: Vec<MessageId> = self
            .relay
            .outbox
            .iter()
            .filter(|(_, o)| {
                o.envelope.expires_at_ms() <= now_ms
                    && !matches!(o.state, OutboxState::Delivered | OutboxState::Expired)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in outbox_expired {
            self.expire(id);
        }
        let relay = &mut self.relay;
        let mut gone: Vec<MessageId> = Vec::new();
        gone.extend(
            relay
                .acks
                .iter()
                .filter(|(_, a)| a.ack.expires_at_ms <= now_ms)
                .map(|(id, _)| *id),
        );
        gone.extend(
            relay
                .tombstones
                .iter()
                .filter(|(_, t)| t.keep_until_ms <= now_ms)
                .map(|(id, _)| *id),
        );
        gone.extend(
            relay
                .inbox
                .iter()
                .filter(|(_, until)| **until <= now_ms)
                .map(|(id, _)| *id),
        );
        relay.acks.retain(|_, a| a.ack.expires_at_ms > now_ms);
        relay.tombstones.retain(|_, t| t.keep_until_ms > now_ms);
        relay.inbox.retain(|_, until| *until > now_ms);
        relay.dirty.extend(gone);
        // Save the routing table now and then, to rejoin after a restart.
        relay.contacts_dirty = true;
    }

    /// Start holding `envelope`. `replace` allows evicting others to make room.
    /// Returns false if there is no room.
    fn hold(&mut self, now: Instant, envelope: Envelope, hops_left: u32, from_peer: bool) -> bool {
        let id = envelope.id();
        if from_peer {
            let sender = envelope.sender();
            let from_sender = self
                .relay
                .held
                .values()
                .filter(|h| h.envelope.sender() == sender)
                .count();
            if from_sender >= self.config.max_held_per_sender {
                self.count_drop("sender_quota");
                return false;
            }
            let size = envelope.body.len();
            let me = self.me;
            while self.relay.held.len() >= self.config.max_held
                || self.relay.held_bytes + size > self.config.max_held_bytes
            {
                // Evict the message whose recipient is farthest from us,
                // never our own outgoing ones, and only if it is farther
                // than the newcomer's.
                let victim = self
                    .relay
                    .held
                    .iter()
                    .filter(|(vid, _)| !self.relay.outbox.contains_key(vid))
                    .max_by_key(|(_, h)| h.envelope.recipient.distance(&me))
                    .map(|(vid, h)| (*vid, h.envelope.recipient.distance(&me)));
                match victim {
                    Some((vid, d)) if d > envelope.recipient.distance(&me) => {
                        self.count_drop("evicted_held");
                        self.unhold(&vid);
                    }
                    _ => {
                        self.count_drop("relay_full");
                        return false;
                    }
                }
            }
        }
        // The sender's bound is set from its lookup; until then, anywhere.
        let bound = if from_peer {
            self.me.distance(&envelope.recipient)
        } else {
            Distance([0xff; 20])
        };
        self.relay.held_bytes += envelope.body.len();
        self.relay.dirty.insert(id);
        self.relay.held.insert(
            id,
            Held {
                route: Route::new(
                    envelope.recipient,
                    hops_left,
                    self.config.relay_budget,
                    now,
                    self.config.relay_backoff,
                    bound,
                ),
                envelope,
            },
        );
        true
    }

    fn tombstone(&mut self, now: Instant, ack: Ack) {
        let cap = self.wall_ms(now) + self.config.max_ttl.as_millis() as u64;
        let keep_until_ms =
            ack.expires_at_ms.min(cap) + self.config.tombstone_margin.as_millis() as u64;
        self.relay.dirty.insert(ack.id);
        self.relay
            .tombstones
            .insert(ack.id, Tombstone { ack, keep_until_ms });
        while self.relay.tombstones.len() > self.config.max_tombstones {
            let victim = self
                .relay
                .tombstones
                .iter()
                .min_by_key(|(_, t)| t.keep_until_ms)
                .map(|(id, _)| *id);
            match victim {
                Some(v) => {
                    self.relay.tombstones.remove(&v);
                    self.relay.dirty.insert(v);
                }
                None => break,
            }
        }
    }

    /// Check a Store's envelope against our clock and limits; the reason
    /// for refusal is counted.
    fn valid_envelope(&mut self, now: Instant, e: &Envelope) -> bool {
        let now_ms = self.wall_ms(now);
        let reason = if u64::from(e.ttl_secs) > self.config.max_ttl.as_secs() {
            Some("ttl_too_long")
        } else if e.created_at_ms > now_ms + self.config.clock_skew.as_millis() as u64 {
            Some("future_dated")
        } else if e.expires_at_ms() <= now_ms {
            Some("expired")
        } else if !e.verify() {
            Some("bad_message_signature")
        } else {
            None
        };
        match reason {
            Some(r) => {
                self.count_drop(r);
                false
            }
            None => true,
        }
    }

    /// Answer a `Store` request from `peer`.
    pub(crate) fn on_store(
        &mut self,
        now: Instant,
        from: Contact,
        envelope: Envelope,
        hops_left: u32,
    ) -> Body {
        let id = envelope.id();
        // A late copy of an acknowledged message meets its ack.
        if let Some(t) = self.relay.tombstones.get(&id) {
            if t.ack.matches(&envelope) {
                let ack = t.ack;
                return Body::Stored {
                    id,
                    status: StoreStatus::Acknowledged(Box::new(ack)),
                };
            }
            // A tombstone that does not match is a forgery: forget it.
            self.count_drop("forged_ack");
            self.relay.tombstones.remove(&id);
            self.touch(id);
        }
        if self.relay.held.contains_key(&id) {
            self.note_holder(id, from);
            return Body::Stored {
                id,
                status: StoreStatus::Held,
            };
        }
        if !self.valid_envelope(now, &envelope) {
            return Body::Stored {
                id,
                status: StoreStatus::Refused,
            };
        }
        if envelope.recipient == self.me {
            return self.deliver(now, envelope);
        }
        if !self.hold(now, envelope, hops_left, true) {
            return Body::Stored {
                id,
                status: StoreStatus::Refused,
            };
        }
        // Confirm the hop only once the copy is durably stored.
        if !self.persist() {
            self.unhold(&id);
            return Body::Stored {
                id,
                status: StoreStatus::Refused,
            };
        }
        self.note_holder(id, from);
        // Relay on at once; later attempts back off.
        self.attempt(now, id, false);
        Body::Stored {
            id,
            status: StoreStatus::Held,
        }
    }

    /// We are the recipient: show the message once, ack it.
    fn deliver(&mut self, now: Instant, envelope: Envelope) -> Body {
        let id = envelope.id();
        let ack = Ack::sign(&self.identity, &envelope);
        if !self.relay.inbox.contains_key(&id) {
            let keep = envelope.expires_at_ms() + self.config.tombstone_margin.as_millis() as u64;
            self.relay.inbox.insert(id, keep);
            self.touch(id);
            while self.relay.inbox.len() > self.config.max_inbox {
                let victim = self
                    .relay
                    .inbox
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(id, _)| *id);
                match victim {
                    Some(v) => {
                        self.relay.inbox.remove(&v);
                        self.touch(v);
                    }
                    None => break,
                }
            }
            self.tombstone(now, ack);
            // Shown and acknowledged only once saved: a crash must not make
            // us ack a message we then forget we received.
            if !self.persist() {
                self.relay.inbox.remove(&id);
                self.relay.tombstones.remove(&id);
                return Body::Stored {
                    id,
                    status: StoreStatus::Refused,
                };
            }
            self.emit(Event::MessageReceived {
                id,
                from: envelope.sender(),
                body: envelope.body.clone(),
                created_at_ms: envelope.created_at_ms,
            });
            // Route the ack to the sender, and tell our neighbourhood (where
            // the copies are) to drop theirs.
            self.route_ack(now, ack, self.config.hop_limit, true);
            let near = self.table.closest(&self.me, self.config.k);
            self.forward_purge(now, &ack, near);
        }
        Body::Stored {
            id,
            status: StoreStatus::Delivered(Box::new(ack)),
        }
    }

    fn route_ack(&mut self, now: Instant, ack: Ack, hops_left: u32, origin: bool) {
        if ack.sender == self.me || self.relay.acks.contains_key(&ack.id) {
            return;
        }
        let bound = if origin {
            Distance([0xff; 20])
        } else {
            self.me.distance(&ack.sender)
        };
        self.touch(ack.id);
        self.relay.acks.insert(
            ack.id,
            HeldAck {
                route: Route::new(
                    ack.sender,
                    hops_left,
                    self.config.relay_budget,
                    now,
                    self.config.relay_backoff,
                    bound,
                ),
                ack,
            },
        );
        if origin {
            // Find the sender's neighbourhood first, as for a message.
            self.start_ack_lookup(now, ack.id, ack.sender);
        } else {
            self.attempt(now, ack.id, true);
        }
    }

    /// The recipient's lookup of the sender finished: place the ack.
    pub(crate) fn ack_lookup_done(&mut self, now: Instant, id: MessageId, closest: &[Contact]) {
        self.touch(id);
        let Some(h) = self.relay.acks.get_mut(&id) else {
            return;
        };
        let sender = h.ack.sender;
        if closest.len() >= self.config.k {
            if let Some(far) = closest.last() {
                let mut d = far.id.distance(&sender);
                bump(&mut d);
                h.route.bound = d;
            }
        }
        self.ack_to(now, id, closest.to_vec());
        self.schedule_attempt(now, id, true);
    }

    /// Act on an ack from `peer` (None: from a Stored answer we asked for).
    /// Returns false if it was forged or mismatched.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        peer: Option<Address>,
        ack: Ack,
        hops_left: u32,
    ) -> bool {
        // Our hop limit bounds how far we carry anyone's ack.
        let hops_left = hops_left.min(self.config.hop_limit);
        if let Some(t) = self.relay.tombstones.get(&ack.id) {
            if t.ack == ack {
                // Known already (perhaps from a purge): still carry it on
                // towards the sender if asked to.
                if hops_left > 0 {
                    self.route_ack(now, ack, hops_left, false);
                }
                if let (Some(p), Some(h)) = (peer, self.relay.acks.get_mut(&ack.id)) {
                    h.route.holders.insert(p);
                }
                return true;
            }
        }
        let envelope = self
            .relay
            .held
            .get(&ack.id)
            .map(|h| h.envelope.clone())
            .or_else(|| self.relay.outbox.get(&ack.id).map(|o| o.envelope.clone()));
        let longest =
            self.wall_ms(now) + (self.config.max_ttl + self.config.clock_skew).as_millis() as u64;
        let genuine = match &envelope {
            Some(e) => ack.matches(e),
            // Without the message only the signature can be checked; an
            // ack claiming a longer life than any message may have is bogus.
            None => ack.verify() && ack.expires_at_ms <= longest,
        };
        if !genuine {
            self.count_drop("forged_ack");
            return false;
        }
        self.tombstone(now, ack);
        self.touch(ack.id);
        if let Some(h) = self.unhold(&ack.id) {
            // Everyone we know has a copy or was sent one.
            let peers: Vec<Contact> = h
                .route
                .addrs
                .iter()
                .filter(|(p, _)| Some(**p) != peer)
                .map(|(id, addr)| Contact {
                    id: *id,
                    addr: *addr,
                })
                .collect();
            self.forward_purge(now, &ack, peers);
        }
        if let Some(o) = self.relay.outbox.get_mut(&ack.id) {
            if o.state != OutboxState::Delivered {
                let first_round = matches!(o.state, OutboxState::Placing(_) | OutboxState::Finding);
                let to = o.envelope.recipient;
                if first_round {
                    self.first_round_done(ack.id);
                }
                if let Some(o) = self.relay.outbox.get_mut(&ack.id) {
                    o.state = OutboxState::Delivered;
                }
                self.emit(Event::Delivered { id: ack.id, to });
            }
        }
        if hops_left > 0 {
            self.route_ack(now, ack, hops_left, false);
        }
        if let (Some(p), Some(h)) = (peer, self.relay.acks.get_mut(&ack.id)) {
            h.route.holders.insert(p);
        }
        true
    }

    /// Response to one of our Store requests.
    pub(crate) fn on_stored(
        &mut self,
        now: Instant,
        peer: Address,
        id: MessageId,
        status: StoreStatus,
    ) {
        match status {
            StoreStatus::Held => {
                if let Some(h) = self.relay.held.get_mut(&id) {
                    h.route.holders.insert(peer);
                }
            }
            StoreStatus::Delivered(ack) | StoreStatus::Acknowledged(ack) => {
                self.on_ack(now, Some(peer), *ack, 0);
            }
            StoreStatus::Refused => {}
        }
        self.first_round_step(id);
    }

    /// A Store request of ours failed: try that peer again at the next attempt.
    pub(crate) fn store_failed(&mut self, peer: Option<Address>, id: MessageId) {
        if let (Some(p), Some(h)) = (peer, self.relay.held.get_mut(&id)) {
            h.route.skip.remove(&p);
        }
        self.first_round_step(id);
    }

    /// An Acknowledge of ours was answered.
    pub(crate) fn on_acknowledged(&mut self, peer: Address, id: MessageId) {
        self.touch(id);
        let done = match self.relay.acks.get_mut(&id) {
            Some(h) => {
                h.route.holders.insert(peer);
                h.ack.sender == peer
            }
            None => false,
        };
        if done {
            // The sender has it: nothing left to route.
            self.relay.acks.remove(&id);
        }
    }

    /// An Acknowledge of ours failed.
    pub(crate) fn ack_failed(&mut self, peer: Option<Address>, id: MessageId) {
        if let (Some(p), Some(h)) = (peer, self.relay.acks.get_mut(&id)) {
            h.route.skip.remove(&p);
        }
    }

    /// `contact` just entered the routing table (or asked to pull): hand it
    /// what we hold for it, and copies it is now among the closest for.
    pub(crate) fn contact_appeared(&mut self, now: Instant, contact: Contact) {
        let now_ms = self.wall_ms(now);
        let mut stores = Vec::new();
        for (id, h) in &self.relay.held {
            if h.route.holders.contains(&contact.id)
                || h.route.skip.contains(&contact.id)
                || h.envelope.expires_at_ms() <= now_ms
            {
                continue;
            }
            let r = h.envelope.recipient;
            let closer = contact.id == r
                || (h.route.hops_left > 0
                    && h.route.holders.len() >= self.config.k
                    && h.route
                        .holders
                        .iter()
                        .map(|x| x.distance(&r))
                        .max()
                        .is_some_and(|far| contact.id.distance(&r) < far));
            if closer || (h.route.hops_left > 0 && h.route.holders.len() < self.config.k) {
                stores.push(*id);
            }
        }
        for id in stores {
            let Some(h) = self.relay.held.get(&id) else {
                continue;
            };
            // Only send if the newcomer is among our k closest to the recipient.
            let r = h.envelope.recipient;
            let in_k = contact.id == r
                || self
                    .table
                    .closest(&r, self.config.k)
                    .iter()
                    .any(|c| c.id == contact.id);
            if in_k {
                self.store_to(now, id, vec![contact]);
            }
        }
        let acks: Vec<MessageId> = self
            .relay
            .acks
            .iter()
            .filter(|(_, a)| a.ack.sender == contact.id && !a.route.skip.contains(&contact.id))
            .map(|(id, _)| *id)
            .collect();
        for id in acks {
            self.ack_to(now, id, vec![contact]);
        }
    }

    /// Answer a `Pull` from `peer`: if it is verified at this endpoint, push
    /// what we hold for it.
    pub(crate) fn on_pull(&mut self, now: Instant, contact: Contact) -> u32 {
        let for_it = self
            .relay
            .held
            .values()
            .filter(|h| h.envelope.recipient == contact.id)
            .count()
            + self
                .relay
                .acks
                .values()
                .filter(|a| a.ack.sender == contact.id)
                .count();
        if for_it == 0 {
            return 0;
        }
        if self.table.contains(&contact.id, &contact.addr) {
            // Clear earlier attempts to it so they are retried now.
            for h in self.relay.held.values_mut() {
                if h.envelope.recipient == contact.id {
                    h.route.skip.remove(&contact.id);
                }
            }
            for a in self.relay.acks.values_mut() {
                if a.ack.sender == contact.id {
                    a.route.skip.remove(&contact.id);
                }
            }
            self.contact_appeared(now, contact);
        }
        // Otherwise the node's verification ping runs first; once the
        // contact enters the table it gets the messages.
        for_it as u32
    }

    /// After joining: ask our neighbourhood for what it holds for us.
    pub(crate) fn pull(&mut self, now: Instant, near: &[Contact]) {
        for c in near.iter().take(self.config.k) {
            self.request(now, c.addr, Some(c.id), Body::Pull, false, Purpose::Pull);
        }
    }

    /// Whether this node holds a copy of message `id` to relay.
    pub fn holds(&self, id: &MessageId) -> bool {
        self.relay.held.contains_key(id)
    }

    /// Number of held messages (including our own undelivered ones).
    pub fn held_count(&self) -> usize {
        self.relay.held.len()
    }

    /// Number of acks kept (tombstones).
    pub fn tombstone_count(&self) -> usize {
        self.relay.tombstones.len()
    }

    /// Number of acks being routed to senders.
    pub fn routing_acks(&self) -> usize {
        self.relay.acks.len()
    }

    /// State of a message we sent.
    pub fn outbox_state(&self, id: &MessageId) -> Option<OutboxState> {
        self.relay.outbox.get(id).map(|o| o.state.clone())
    }

    /// Messages in the outbox not yet delivered or expired.
    pub fn outbox_pending(&self) -> usize {
        self.relay
            .outbox
            .values()
            .filter(|o| !matches!(o.state, OutboxState::Delivered | OutboxState::Expired))
            .count()
    }

    /// Received message ids remembered.
    pub fn inbox_count(&self) -> usize {
        self.relay.inbox.len()
    }
}
