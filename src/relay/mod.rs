//! Store-and-forward, as a part of its own: held messages, the outbox, the
//! inbox, tombstones and routed acks, and the rules of protocol.md §15–§16
//! for holding, relaying, backoff, delivery, ack propagation and purge.
//!
//! The relay owns its state and nothing else. What it needs from the node
//! (the time, the routing table's view, the identity to sign acks with)
//! comes in a [`Ctx`] with every call; what it wants done (requests to
//! send, lookups to start, events, timers) it queues as [`Action`]s for the
//! node to drain with [`Relay::poll_action`]; the records that changed are
//! collected with [`Relay::take_writes`]. Every container is capped by a
//! `Config` value. The unit tests in `tests.rs` drive it with no `Node`.

mod acks;
mod cancel;
mod drafts;
mod held;
mod inbox;
mod outbox;
mod report;
mod route;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::debug;

pub use cancel::{CancelError, CancelReport};
pub use outbox::OutboxState;
pub use report::{HeldRow, TombstoneRow};

use crate::address::Address;
use crate::config::Config;
use crate::crypto::{self, MAX_TEXT};
use crate::drops::DropReason;
use crate::event::Event;
use crate::identity::Identity;
use crate::limits::{Rate, TokenBuckets};
use crate::message::{Ack, Envelope, MessageId};
use crate::routing::{prefix, Prefix};
use crate::wire::records::{
    self, AckRecord, DraftRecord, HeldRecord, InboxRecord, Op, OutboxRecord, SentState, Snapshot,
    Table, TombstoneRecord,
};
use crate::wire::{Body, Contact, StoreStatus};
use acks::{AckRoutes, HeldAck, IdMemory, Tombstone, Tombstones};
use drafts::{Draft, Drafts, KeyBook};
use ed25519_dalek::VerifyingKey;
use held::{Held, HeldSet};
use inbox::{Inbox, Received};
use outbox::{Outbox, Outgoing};
use route::{just_past, Route, ANYWHERE};
use sha1::{Digest, Sha1};

/// What the relay needs to know of the routing table.
pub trait Peers {
    /// Up to `n` table contacts closest to `target`, closest first.
    fn closest(&self, target: &Address, n: usize) -> Vec<Contact>;
    /// Whether `c` proved its key at that endpoint (in the table there, or
    /// in the verified cache).
    fn verified(&self, c: &Contact) -> bool;
    /// Whether `c` is in the table at that endpoint.
    fn in_table(&self, c: &Contact) -> bool;
}

/// What every relay call is given.
pub struct Ctx<'a> {
    /// Monotonic time now.
    pub now: Instant,
    /// Wall-clock time now, ms since the Unix epoch.
    pub wall_ms: u64,
    /// The routing table's view.
    pub peers: &'a dyn Peers,
    /// Our identity, to sign messages and acks.
    pub identity: &'a Identity,
}

/// Names a held message (`ack == false`) or a routed ack, for timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    /// The message id.
    pub id: MessageId,
    /// The ack for it rather than the message.
    pub ack: bool,
}

/// Which relay request an RPC is, so its answer comes back here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayRequest {
    /// A `Store` of this message.
    Store(MessageId),
    /// An `Acknowledge` of this message.
    Acknowledge(MessageId),
    /// A `Pull`.
    Pull,
    /// An `Offer` of this message (its id only; the `Store` follows if the
    /// peer wants it).
    Offer(MessageId),
}

/// Something the relay wants the node to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a request; report an answer, failure or soft timeout back.
    Request {
        /// To whom.
        to: Contact,
        /// The request.
        body: Body,
        /// Whether it must carry a challenge (the peer is not verified).
        challenge: bool,
        /// Which request it is.
        purpose: RelayRequest,
        /// It serves our own messages (it may use the slots kept for the
        /// node's own traffic).
        own: bool,
    },
    /// Find the k closest nodes to this address, then call
    /// [`Relay::lookup_done`] (a fresh earlier result will do).
    Lookup(Address),
    /// Tell the user.
    Event(Event),
    /// Call [`Relay::on_timer`] for this key at this time.
    Schedule(RouteKey, Instant),
    /// Forget the timer of this key.
    Cancel(RouteKey),
    /// Count a drop or refusal.
    Count(DropReason),
    /// Find the public key of this address (its identity record); report
    /// it with [`Relay::learn_key`].
    FindKey(Address),
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The text is over the size limit.
    #[error("message of {0} bytes is over the {MAX_TEXT}-byte limit")]
    BodyTooLarge(usize),
    /// Sending to our own address.
    #[error("that is this node's own address")]
    ToSelf,
    /// Too many undelivered messages.
    #[error("{0} messages are still undelivered; wait for some to be delivered or expire")]
    OutboxFull(usize),
    /// The recipient's key cannot be sealed to.
    #[error("the recipient's key cannot be used to seal a message")]
    CannotSeal,
}

/// The store-and-forward state of one node.
pub struct Relay {
    config: Config,
    me: Address,
    rng: StdRng,
    held: HeldSet,
    acks: AckRoutes,
    tombstones: Tombstones,
    outbox: Outbox,
    inbox: Inbox,
    /// Messages and acks waiting for a lookup of their target.
    awaiting: BTreeMap<Address, BTreeSet<RouteKey>>,
    /// Records to write (inbox records are encoded at once, see `eager`).
    dirty: BTreeSet<(Table, MessageId)>,
    /// `Store`s received for a message already held (wasted transfers).
    duplicate_stores: u64,
    /// `Offer`s of a message already held (each saved a `Store`).
    duplicate_offers: u64,
    /// Copies dropped because enough closer holders were known.
    surplus_drops: u64,
    /// Messages accepted created at or before the replay floor (shown
    /// marked as possible repeats).
    maybe_repeats: u64,
    /// Inbox writes encoded when they happened: a shown message's text is
    /// not kept in memory, so its record cannot be rebuilt later.
    eager: Vec<Op>,
    actions: VecDeque<Action>,
    /// A message for us was answered busy: pull again once there is room.
    refused_for_room: bool,
    /// Messages we held and no longer do: their recipient and sender, so a
    /// late ack can still be checked in full (a tombstone only ever comes
    /// from an ack that matches a message we hold, held or sent).
    gone: IdMemory<(Address, Address)>,
    /// Acks we routed without knowing their message: not routed twice.
    routed: IdMemory<()>,
    /// Body bytes stored per second per source network.
    stored_bytes: TokenBuckets<Prefix>,
    /// Our messages waiting for their recipient's key.
    drafts: Drafts,
    /// Public keys we know, to seal to.
    keys: KeyBook,
    /// Messages created at or before this (ms) whose id we no longer
    /// remember count as already received: forgetting ids early (a full
    /// inbox) must not let an old message be shown twice.
    replay_floor_ms: u64,
}

/// Key of the replay floor in `Table::Meta`.
const REPLAY_FLOOR_KEY: &[u8] = b"replay_floor";

impl Relay {
    /// An empty relay for node `me`, whose jitter comes from `seed`.
    pub fn new(config: &Config, me: Address, seed: [u8; 32]) -> Relay {
        Relay {
            config: config.clone(),
            me,
            rng: StdRng::from_seed(seed),
            held: HeldSet::default(),
            acks: AckRoutes::default(),
            tombstones: Tombstones::default(),
            outbox: Outbox::default(),
            inbox: Inbox::default(),
            awaiting: BTreeMap::new(),
            dirty: BTreeSet::new(),
            duplicate_stores: 0,
            duplicate_offers: 0,
            surplus_drops: 0,
            maybe_repeats: 0,
            eager: Vec::new(),
            actions: VecDeque::new(),
            refused_for_room: false,
            gone: IdMemory::default(),
            routed: IdMemory::default(),
            replay_floor_ms: 0,
            stored_bytes: TokenBuckets::new(
                Rate {
                    per_sec: config.stored_bytes_per_sec as f64,
                    burst: config.max_held_bytes as f64 / 4.0,
                },
                4096,
            ),
            drafts: Drafts::default(),
            keys: KeyBook::default(),
        }
    }

    /// The next thing the relay wants done.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn act(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn count(&mut self, reason: DropReason) {
        self.act(Action::Count(reason));
    }

    fn k(&self) -> usize {
        self.config.k.get()
    }

    // ---- durability -------------------------------------------------

    /// Whether records changed since the last [`Relay::take_writes`].
    pub fn has_writes(&self) -> bool {
        !self.dirty.is_empty() || !self.eager.is_empty()
    }

    /// Append the records that changed, as puts and deletes, to `ops`.
    pub fn take_writes(&mut self, ops: &mut Vec<Op>) {
        ops.append(&mut self.eager);
        for (table, id) in std::mem::take(&mut self.dirty) {
            ops.push(match self.record(table, &id) {
                Some(v) => Op::Put(table, records::key(&id), v),
                None => Op::Delete(table, records::key(&id)),
            });
        }
    }

    /// A batch with these changes was not made durable: write them again.
    /// Records that can be rebuilt from memory are; inbox records (whose
    /// text memory no longer holds once shown) are replayed as they were,
    /// before any later change to them.
    pub fn rewrite(&mut self, failed: Vec<Op>) {
        let mut replay = Vec::new();
        for op in failed {
            match op.key() {
                (Table::Inbox | Table::Shown | Table::Damaged, _) => replay.push(op),
                (Table::Meta, key) if key == REPLAY_FLOOR_KEY => replay.push(op),
                (Table::Meta, _) => {}
                (t, key) => {
                    if let Some(id) = records::id_of_key(key) {
                        self.dirty.insert((t, id));
                    }
                }
            }
        }
        replay.append(&mut self.eager);
        self.eager = replay;
    }

    fn touch(&mut self, table: Table, id: MessageId) {
        self.dirty.insert((table, id));
    }

    fn write_inbox(&mut self, id: &MessageId, envelope: Option<&Envelope>) {
        let op = match self.inbox.get(id) {
            Some(r) => Op::Put(
                Table::Inbox,
                records::key(id),
                InboxRecord {
                    keep_until_ms: r.keep_until_ms,
                    envelope: envelope.cloned(),
                    unshown: r.envelope.is_some(),
                    maybe_repeat: r.maybe_repeat,
                }
                .encode(),
            ),
            None => {
                // Forgotten: the front end's mark goes with it.
                self.eager.push(Op::Delete(Table::Shown, records::key(id)));
                Op::Delete(Table::Inbox, records::key(id))
            }
        };
        self.eager.push(op);
    }

    fn record(&self, table: Table, id: &MessageId) -> Option<Vec<u8>> {
        Some(match table {
            Table::Held => {
                let h = self.held.get(id)?;
                HeldRecord {
                    envelope: h.envelope.clone(),
                    hops_left: h.route.hops_left,
                    budget: h.route.budget,
                    bound: h.route.bound,
                    source: h.source,
                }
                .encode()
            }
            Table::Acks => {
                let a = self.acks.get(id)?;
                AckRecord {
                    ack: a.ack,
                    hops_left: a.route.hops_left,
                    budget: a.route.budget,
                    bound: a.route.bound,
                }
                .encode()
            }
            Table::Tombstones => {
                let t = self.tombstones.get(id)?;
                TombstoneRecord {
                    ack: t.ack,
                    keep_until_ms: t.keep_until_ms,
                    routed: t.routed,
                }
                .encode()
            }
            Table::Outbox => {
                let o = self.outbox.get(id)?;
                OutboxRecord {
                    envelope: o.envelope.clone(),
                    state: match o.state {
                        OutboxState::Delivered => SentState::Delivered,
                        OutboxState::Expired => SentState::Expired,
                        _ => SentState::Sent,
                    },
                    user_id: (o.user_id != *id).then_some(o.user_id),
                }
                .encode()
            }
            Table::Drafts => {
                let d = self.drafts.get(id)?;
                DraftRecord {
                    recipient: d.to,
                    text: d.text.clone(),
                    created_at_ms: d.created_at_ms,
                    ttl_secs: d.ttl_secs,
                }
                .encode()
            }
            Table::Inbox | Table::Shown | Table::Damaged | Table::Meta => return None,
        })
    }

    /// Rebuild the state from stored records, dropping what has expired
    /// or cannot be read (each unreadable record is counted and deleted).
    /// Every held message and routed ack is retried at once.
    pub fn restore(&mut self, now: Instant, wall_ms: u64, snapshot: &Snapshot) {
        let empty = Vec::new();
        let rows = |t: Table| snapshot.get(&t).unwrap_or(&empty);
        let backoff = self.config.relay_backoff;
        let mut corrupt = Vec::new();
        let mut stale = Vec::new();
        for (key, value) in rows(Table::Outbox) {
            match OutboxRecord::decode(key, value) {
                Ok(r) => {
                    let state = match r.state {
                        SentState::Sent => OutboxState::Sent,
                        SentState::Delivered => OutboxState::Delivered,
                        SentState::Expired => OutboxState::Expired,
                    };
                    let user_id = r.user_id.unwrap_or(r.envelope.id());
                    self.outbox.insert(Outgoing {
                        envelope: r.envelope,
                        state,
                        placing: BTreeSet::new(),
                        user_id,
                        no_contacts: false,
                    });
                }
                Err(e) => corrupt.push((Table::Outbox, key.clone(), value.clone(), e.to_string())),
            }
        }
        for (key, value) in rows(Table::Drafts) {
            match DraftRecord::decode(key, value) {
                Ok(r) => {
                    if let Some(id) = records::id_of_key(key) {
                        self.drafts.insert(
                            id,
                            Draft {
                                to: r.recipient,
                                text: r.text,
                                created_at_ms: r.created_at_ms,
                                ttl_secs: r.ttl_secs,
                            },
                        );
                    }
                }
                Err(e) => corrupt.push((Table::Drafts, key.clone(), value.clone(), e.to_string())),
            }
        }
        for (key, value) in rows(Table::Held) {
            match HeldRecord::decode(key, value) {
                Ok(r) if r.envelope.expires_at_ms() > wall_ms => {
                    let id = r.envelope.id();
                    let own = self.outbox.contains(&id);
                    let mut route = Route::new(
                        r.envelope.recipient(),
                        r.hops_left,
                        r.budget,
                        backoff,
                        r.bound,
                    );
                    route.next_attempt = Some(now);
                    let me = self.me;
                    self.held.insert(
                        &me,
                        Held {
                            envelope: r.envelope,
                            route,
                            own,
                            source: r.source,
                            taken_at: now,
                        },
                    );
                    self.act(Action::Schedule(RouteKey { id, ack: false }, now));
                }
                Ok(_) => stale.push((Table::Held, key.clone())),
                Err(e) => corrupt.push((Table::Held, key.clone(), value.clone(), e.to_string())),
            }
        }
        for (key, value) in rows(Table::Acks) {
            match AckRecord::decode(key, value) {
                Ok(r) if r.ack.expires_at_ms > wall_ms => {
                    let id = r.ack.id;
                    let mut route =
                        Route::new(r.ack.sender, r.hops_left, r.budget, backoff, r.bound);
                    route.next_attempt = Some(now);
                    self.acks.insert(HeldAck { ack: r.ack, route }, usize::MAX);
                    self.act(Action::Schedule(RouteKey { id, ack: true }, now));
                }
                Ok(_) => stale.push((Table::Acks, key.clone())),
                Err(e) => corrupt.push((Table::Acks, key.clone(), value.clone(), e.to_string())),
            }
        }
        for (key, value) in rows(Table::Tombstones) {
            match TombstoneRecord::decode(key, value) {
                Ok(r) if r.keep_until_ms > wall_ms => {
                    self.tombstones.insert(
                        Tombstone {
                            ack: r.ack,
                            keep_until_ms: r.keep_until_ms,
                            routed: r.routed,
                        },
                        usize::MAX,
                    );
                }
                Ok(_) => stale.push((Table::Tombstones, key.clone())),
                Err(e) => {
                    corrupt.push((Table::Tombstones, key.clone(), value.clone(), e.to_string()))
                }
            }
        }
        for (key, value) in rows(Table::Meta) {
            if key[..] == *REPLAY_FLOOR_KEY {
                if let Ok(b) = <[u8; 8]>::try_from(&value[..]) {
                    self.replay_floor_ms = u64::from_be_bytes(b);
                }
            }
        }
        let shown: BTreeSet<&[u8]> = rows(Table::Shown).iter().map(|(k, _)| &k[..]).collect();
        let mut known: BTreeSet<&[u8]> = BTreeSet::new();
        for (key, value) in rows(Table::Inbox) {
            match InboxRecord::decode(key, value) {
                Ok(r) if (r.unshown && !shown.contains(&key[..])) || r.keep_until_ms > wall_ms => {
                    let Some(id) = records::id_of_key(key) else {
                        continue;
                    };
                    known.insert(key);
                    let unshown = r.unshown && !shown.contains(&key[..]);
                    let created_at_ms = r.envelope.as_ref().map_or(0, Envelope::created_at_ms);
                    self.inbox.insert(
                        id,
                        Received {
                            envelope: if unshown { r.envelope } else { None },
                            text: None,
                            created_at_ms,
                            keep_until_ms: r.keep_until_ms,
                            maybe_repeat: r.maybe_repeat,
                        },
                    );
                }
                Ok(_) => stale.push((Table::Inbox, key.clone())),
                Err(e) => corrupt.push((Table::Inbox, key.clone(), value.clone(), e.to_string())),
            }
        }
        // Marks of messages no longer remembered.
        for key in shown.iter().filter(|k| !known.contains(*k)) {
            stale.push((Table::Shown, key.to_vec()));
        }
        for (table, key, value, error) in corrupt {
            // Kept aside, not lost: someone may want to look at it.
            tracing::warn!(
                table = table.name(),
                key = %hex::encode(&key),
                %error,
                "stored record unreadable; moved to the damaged table"
            );
            self.count(DropReason::StoreCorrupt);
            self.eager.push(Op::Put(
                Table::Damaged,
                records::damaged_key(table, &key),
                value,
            ));
            self.eager.push(Op::Delete(table, key));
        }
        for (table, key) in stale {
            self.eager.push(Op::Delete(table, key));
        }
    }

    // ---- sending ----------------------------------------------------

    /// Send `text` to `to`: seal it to the recipient's key, sign it, keep
    /// it in the outbox, hold it, and ask for a lookup of the recipient to
    /// place the first copies. Without the recipient's key the message
    /// waits as a draft (reported with [`Event::MessageQueued`]) and is
    /// sealed as soon as the key is learned. Returns the id the user will
    /// know the message by.
    pub fn send(&mut self, ctx: &Ctx, to: Address, text: Bytes) -> Result<MessageId, SendError> {
        if text.len() > MAX_TEXT {
            return Err(SendError::BodyTooLarge(text.len()));
        }
        if to == self.me {
            return Err(SendError::ToSelf);
        }
        let pending = self.outbox.pending() + self.drafts.len();
        if pending >= self.config.max_outbox {
            return Err(SendError::OutboxFull(pending));
        }
        let draft = Draft {
            to,
            text,
            created_at_ms: ctx.wall_ms,
            ttl_secs: self.config.default_ttl.as_secs().min(u64::from(u32::MAX)) as u32,
        };
        let Some(key) = self.keys.get(&to).copied() else {
            // A draft id: not the envelope's (there is none yet), unique.
            let mut h = Sha1::new();
            h.update(b"comm/v1/draft");
            h.update(to.0);
            h.update(draft.created_at_ms.to_be_bytes());
            h.update(&draft.text);
            h.update(self.rng.gen::<[u8; 8]>());
            let mut id = [0u8; 20];
            id.copy_from_slice(&h.finalize());
            let id = MessageId(id);
            let expires_at_ms = draft.expires_at_ms();
            self.drafts.insert(id, draft);
            self.touch(Table::Drafts, id);
            self.act(Action::Event(Event::MessageQueued {
                id,
                to,
                expires_at_ms,
            }));
            self.act(Action::FindKey(to));
            return Ok(id);
        };
        self.place(ctx, &key, draft, None)
    }

    /// Seal `draft` to `key`, sign it and start placing it.
    fn place(
        &mut self,
        ctx: &Ctx,
        key: &VerifyingKey,
        draft: Draft,
        user_id: Option<MessageId>,
    ) -> Result<MessageId, SendError> {
        let to = draft.to;
        let envelope = crypto::sealed_envelope(
            &mut self.rng,
            ctx.identity,
            key,
            draft.created_at_ms,
            draft.ttl_secs,
            self.config.hop_limit,
            &draft.text,
        )
        .map_err(|_| SendError::CannotSeal)?;
        let id = envelope.id();
        let user_id = user_id.unwrap_or(id);
        self.outbox.insert(Outgoing {
            envelope: envelope.clone(),
            state: OutboxState::Finding,
            placing: BTreeSet::new(),
            user_id,
            no_contacts: false,
        });
        self.touch(Table::Outbox, id);
        for gone in self.outbox.trim(self.config.max_outbox) {
            self.touch(Table::Outbox, gone);
        }
        let route = Route::new(
            to,
            self.config.hop_limit,
            self.config.relay_budget,
            self.config.relay_backoff,
            ANYWHERE,
        );
        let me = self.me;
        self.held.insert(
            &me,
            Held {
                envelope,
                route,
                own: true,
                source: None,
                taken_at: ctx.now,
            },
        );
        self.touch(Table::Held, id);
        self.await_lookup(to, RouteKey { id, ack: false });
        Ok(user_id)
    }

    /// We learned a public key (a proof, a record, a message, our user):
    /// remember it, and seal what waited for it.
    pub fn learn_key(&mut self, ctx: &Ctx, key: VerifyingKey) {
        // A key of small order cannot be sealed to (§14.5): learning it
        // would only drop the drafts waiting for its address. None comes
        // from the network (it cannot sign); the front end refuses it too.
        if key.is_weak() {
            self.count(DropReason::CannotSeal);
            return;
        }
        let to = Address::of_key(key.as_bytes());
        self.keys.learn(key, self.config.max_keys);
        for id in self.drafts.for_recipient(&to) {
            let Some(draft) = self.drafts.remove(&id) else {
                continue;
            };
            self.touch(Table::Drafts, id);
            if draft.expires_at_ms() <= ctx.wall_ms {
                self.act(Action::Event(Event::MessageExpired { id }));
                continue;
            }
            if self.place(ctx, &key, draft, Some(id)).is_err() {
                self.count(DropReason::CannotSeal);
            }
        }
    }

    /// A key seen in passing (a contact's proof, a record kept for
    /// others): remembered only if a draft waits for it, so that the keys
    /// kept grow with the people this node writes to, not with traffic.
    pub fn offer_key(&mut self, ctx: &Ctx, key: VerifyingKey) {
        if !self
            .drafts
            .for_recipient(&Address::of_key(key.as_bytes()))
            .is_empty()
        {
            self.learn_key(ctx, key);
        }
    }

    /// How many drafts wait for `to`'s key.
    pub fn drafts_for(&self, to: &Address) -> usize {
        self.drafts.for_recipient(to).len()
    }

    /// Recipients whose key we still look for (drafts wait for them),
    /// in order.
    pub fn wanted_keys(&self) -> Vec<Address> {
        self.drafts.recipients()
    }

    fn await_lookup(&mut self, target: Address, key: RouteKey) {
        let waiting = self.awaiting.entry(target).or_default();
        let first = waiting.is_empty();
        waiting.insert(key);
        if first {
            self.act(Action::Lookup(target));
        }
    }

    /// A lookup of `target` finished with `closest` (empty if none could
    /// run): place the first copies of what waited for it.
    pub fn lookup_done(&mut self, ctx: &Ctx, target: Address, closest: &[Contact]) {
        let Some(keys) = self.awaiting.remove(&target) else {
            return;
        };
        for key in keys {
            if key.ack {
                self.first_ack_round(ctx, key.id, closest);
            } else {
                self.first_round(ctx, key.id, closest);
            }
        }
    }

    fn first_round(&mut self, ctx: &Ctx, id: MessageId, closest: &[Contact]) {
        let Some(held) = self.held.get(&id) else {
            return;
        };
        let recipient = held.envelope.recipient();
        let k = self.k();
        // Lookup results are fresher than the table; both are candidates,
        // but a table contact farther than the lookup's farthest answer is
        // not: the lookup went past it, and under churn such contacts lie
        // far outside the recipient's circle (a short answer would
        // otherwise scatter copies there, and widen the bound with them).
        let reach = closest.iter().map(|c| c.id.distance(&recipient)).max();
        let mut targets: Vec<Contact> = closest.to_vec();
        for c in ctx.peers.closest(&recipient, k) {
            let within = reach.map_or(true, |r| c.id.distance(&recipient) <= r);
            if within && !targets.iter().any(|t| t.id == c.id) {
                targets.push(c);
            }
        }
        targets.sort_by_key(|c| c.id.distance(&recipient));
        targets.truncate(k);
        if targets.is_empty() {
            if let Some(o) = self.outbox.get_mut(&id) {
                o.no_contacts = true;
            }
        }
        if targets.len() >= k {
            if let (Some(far), Some(h)) = (targets.last(), self.held.get_mut(&id)) {
                // Just past the k-th closest: later copies stay in that circle.
                h.route.bound = just_past(far.id.distance(&recipient));
            }
        }
        // Nobody can hold it yet: the body goes at once.
        let sent = self.store_to(ctx, id, &targets, false);
        if let Some(placing) = self.outbox.get_mut_placing(&id) {
            placing.extend(sent.iter().copied());
        }
        let n = sent.len();
        if self.outbox.get(&id).map(|o| &o.state) == Some(&OutboxState::Finding) {
            self.outbox.set_state(&id, OutboxState::Placing(n));
        }
        if n == 0 {
            self.first_round_done(id);
        }
        self.schedule_attempt(ctx.now, RouteKey { id, ack: false });
    }

    fn first_round_done(&mut self, id: MessageId) {
        let Some(o) = self.outbox.get(&id) else {
            return;
        };
        if !matches!(o.state, OutboxState::Finding | OutboxState::Placing(_)) {
            return;
        }
        let to = o.envelope.recipient();
        let (relays, direct) = match self.held.get(&id) {
            Some(h) => (
                h.route.holders().filter(|(p, _)| **p != to).count(),
                h.route.is_holder(&to),
            ),
            None => (0, false),
        };
        let (user_id, no_contacts) = (o.user_id, o.no_contacts && relays == 0 && !direct);
        let expires_at_ms = o.envelope.expires_at_ms();
        self.outbox.set_state(&id, OutboxState::Sent);
        self.act(Action::Event(Event::MessageSent {
            id: user_id,
            wire_id: id,
            to,
            relays,
            direct,
            no_contacts,
            expires_at_ms,
        }));
    }

    /// A first-round peer answered, failed, or went past the soft timeout.
    fn first_round_step(&mut self, id: MessageId, peer: &Address) {
        let done = match self.outbox.get_mut_placing(&id) {
            Some(placing) => placing.remove(peer) && placing.is_empty(),
            None => false,
        };
        if done {
            self.first_round_done(id);
        } else if let Some(o) = self.outbox.get(&id) {
            if let OutboxState::Placing(_) = o.state {
                let left = o.placing.len();
                self.outbox.set_state(&id, OutboxState::Placing(left));
            }
        }
    }

    /// Send held message `id` to those of `targets` its route allows.
    /// With `offer`, a peer other than the recipient is first sent an
    /// `Offer` of the id alone, and the `Store` follows only if it wants
    /// it (§15.5); a peer that left an earlier transmission of this
    /// message unanswered gets the `Store` itself (it may not know
    /// `Offer`). Returns the peers sent to.
    fn store_to(
        &mut self,
        ctx: &Ctx,
        id: MessageId,
        targets: &[Contact],
        offer: bool,
    ) -> Vec<Address> {
        let me = self.me;
        let Some(held) = self.held.get_mut(&id) else {
            return Vec::new();
        };
        let picks = held.route.pick(&me, targets);
        if picks.is_empty() {
            return Vec::new();
        }
        self.touch(Table::Held, id);
        let (envelope, own, failures) = match self.held.get(&id) {
            Some(h) => (
                h.envelope.clone(),
                h.own,
                picks
                    .iter()
                    .map(|(c, _)| h.route.has_failed(&c.id))
                    .collect::<Vec<bool>>(),
            ),
            None => return Vec::new(),
        };
        let mut sent = Vec::with_capacity(picks.len());
        for ((c, hops_left), failed) in picks.into_iter().zip(failures) {
            sent.push(c.id);
            if offer && c.id != envelope.recipient() && !failed {
                self.act(Action::Request {
                    to: c,
                    body: Body::Offer { ids: vec![id] },
                    challenge: !ctx.peers.verified(&c),
                    purpose: RelayRequest::Offer(id),
                    own,
                });
                continue;
            }
            // The recipient must prove its key afresh at that endpoint,
            // whatever the table says: whoever took over its old port must
            // not be handed its messages.
            let challenge = !ctx.peers.verified(&c) || c.id == envelope.recipient();
            self.act(Action::Request {
                to: c,
                body: Body::Store {
                    envelope: Box::new(envelope.clone()),
                    hops_left,
                },
                challenge,
                purpose: RelayRequest::Store(id),
                own,
            });
        }
        sent
    }

    fn ack_to(&mut self, id: MessageId, targets: &[Contact]) {
        let me = self.me;
        let Some(h) = self.acks.get_mut(&id) else {
            return;
        };
        // The recipient signed the ack: it has it already (unless it is
        // also the sender, writing to itself).
        let (recipient, sender) = (h.ack.recipient(), h.ack.sender);
        let targets: Vec<Contact> = targets
            .iter()
            .filter(|c| c.id != recipient || c.id == sender)
            .copied()
            .collect();
        let picks = h.route.pick(&me, &targets);
        if picks.is_empty() {
            return;
        }
        let ack = h.ack;
        // Ours if we are the recipient that signed it (it started here).
        let own = ack.recipient() == me;
        self.touch(Table::Acks, id);
        for (c, hops_left) in picks {
            self.act(Action::Request {
                to: c,
                body: Body::Acknowledge {
                    ack: Box::new(ack),
                    hops_left,
                },
                challenge: false,
                purpose: RelayRequest::Acknowledge(id),
                own,
            });
        }
    }

    /// Purge-only acks (hops 0) to `peers`: sent once, not retried later.
    fn purge(&mut self, ack: &Ack, peers: Vec<Contact>) {
        for to in peers {
            self.act(Action::Request {
                to,
                body: Body::Acknowledge {
                    ack: Box::new(*ack),
                    hops_left: 0,
                },
                challenge: false,
                purpose: RelayRequest::Acknowledge(ack.id),
                own: false,
            });
        }
    }

    fn schedule_attempt(&mut self, now: Instant, key: RouteKey) {
        let factor = self.rng.gen_range(0.75..1.25);
        let cap = self.config.relay_backoff_max;
        let route = if key.ack {
            self.acks.get_mut(&key.id).map(|a| &mut a.route)
        } else {
            self.held.get_mut(&key.id).map(|h| &mut h.route)
        };
        if let Some(route) = route {
            let at = route.schedule(now, factor, cap);
            self.act(Action::Schedule(key, at));
        }
    }

    /// A timer set with [`Action::Schedule`] is due.
    pub fn on_timer(&mut self, ctx: &Ctx, key: RouteKey) {
        self.attempt(ctx, key);
    }

    fn attempt(&mut self, ctx: &Ctx, key: RouteKey) {
        let id = key.id;
        let k = self.k();
        if key.ack {
            let Some(a) = self.acks.get(&id) else {
                return;
            };
            if a.ack.expires_at_ms <= ctx.wall_ms || a.route.budget == 0 {
                self.stop_routing(&id);
                return;
            }
            let targets = ctx.peers.closest(&a.ack.sender, k);
            self.ack_to(id, &targets);
            self.schedule_attempt(ctx.now, key);
        } else {
            let Some(h) = self.held.get(&id) else {
                return;
            };
            if h.envelope.expires_at_ms() <= ctx.wall_ms {
                self.expire(id);
                return;
            }
            if h.own && h.route.bound == ANYWHERE {
                // Our first round found fewer than k nodes around the
                // recipient: look again rather than spread copies over
                // whatever our table knows (§16.3).
                let to = h.envelope.recipient();
                self.await_lookup(to, key);
                return;
            }
            let targets = ctx.peers.closest(&h.envelope.recipient(), k);
            self.store_to(ctx, id, &targets, true);
            if self.held.get(&id).is_some_and(|h| h.route.budget == 0) {
                // Spent: no more attempts, but the copy stays until it
                // expires or is acknowledged, for its recipient to collect
                // (a push on appearance or a pull costs no budget). Silent
                // peers can drain a budget, never make us drop a copy.
                debug!(id = %id.short(), "relay budget spent; holding passively");
                return;
            }
            self.schedule_attempt(ctx.now, key);
        }
    }

    fn stop_routing(&mut self, id: &MessageId) {
        if self.acks.remove(id).is_some() {
            self.touch(Table::Acks, *id);
            self.act(Action::Cancel(RouteKey { id: *id, ack: true }));
        }
    }

    fn unhold(&mut self, id: &MessageId) -> Option<Held> {
        let me = self.me;
        let h = self.held.remove(&me, id)?;
        let e = &h.envelope;
        let until = e
            .expires_at_ms()
            .saturating_add(self.config.tombstone_margin.as_millis() as u64);
        self.gone.insert(
            *id,
            (e.recipient(), e.sender()),
            until,
            self.config.max_tombstones,
        );
        self.touch(Table::Held, *id);
        self.act(Action::Cancel(RouteKey {
            id: *id,
            ack: false,
        }));
        Some(h)
    }

    fn expire(&mut self, id: MessageId) {
        self.unhold(&id);
        let pending = self
            .outbox
            .get(&id)
            .filter(|o| !o.state.is_finished())
            .map(|o| o.user_id);
        if let Some(user_id) = pending {
            self.outbox.set_state(&id, OutboxState::Expired);
            self.touch(Table::Outbox, id);
            self.act(Action::Event(Event::MessageExpired { id: user_id }));
        }
    }

    /// Drop what has expired: held messages, outbox entries, routed acks,
    /// tombstones and shown inbox entries.
    pub fn sweep(&mut self, ctx: &Ctx) {
        let now_ms = ctx.wall_ms;
        let expired: Vec<MessageId> = self
            .held
            .iter()
            .filter(|(_, h)| h.envelope.expires_at_ms() <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired.into_iter().chain(self.outbox.expired(now_ms)) {
            self.expire(id);
        }
        for id in self.drafts.expired(now_ms) {
            self.drafts.remove(&id);
            self.touch(Table::Drafts, id);
            self.act(Action::Event(Event::MessageExpired { id }));
        }
        for id in self.acks.expired(now_ms) {
            self.stop_routing(&id);
        }
        for id in self.tombstones.expire(now_ms) {
            self.touch(Table::Tombstones, id);
        }
        for id in self.inbox.expire(now_ms) {
            self.write_inbox(&id, None);
        }
        self.gone.expire(now_ms);
        self.routed.expire(now_ms);
    }

    // ---- receiving a Store --------------------------------------------

    /// Answer a `Store` from `from` (protocol.md §15.1).
    pub fn on_store(
        &mut self,
        ctx: &Ctx,
        from: Contact,
        envelope: Envelope,
        hops_left: u32,
    ) -> StoreStatus {
        let id = envelope.id();
        // 1. A late copy of an acknowledged message meets its ack.
        if let Some(t) = self.tombstones.get(&id) {
            if t.ack.matches(&envelope, ctx.identity.signatures()) {
                return StoreStatus::Acknowledged(Box::new(t.ack));
            }
            // A tombstone that does not match is a forgery: forget it.
            self.count(DropReason::ForgedAck);
            self.tombstones.remove(&id);
            self.touch(Table::Tombstones, id);
        }
        // 2. A duplicate: its requester holds a copy.
        if self.held.contains(&id) {
            self.duplicate_stores += 1;
            self.note_holder(ctx, id, from);
            return StoreStatus::Held;
        }
        // 3. Acceptance checks.
        if let Some(reason) = self.invalid(ctx, &envelope) {
            self.count(reason);
            return StoreStatus::Refused;
        }
        // Its sender's key, proven by its signature: the recipient keeps it
        // to answer; a relay only if a draft of ours waits for it.
        if !self.drafts.for_recipient(&envelope.sender()).is_empty() {
            self.learn_key(ctx, *envelope.sender_key());
        } else if envelope.recipient() == self.me {
            self.keys
                .learn(*envelope.sender_key(), self.config.max_keys);
        }
        // 4. Delivery.
        if envelope.recipient() == self.me {
            return self.deliver(ctx, from, envelope);
        }
        if !self.config.relay {
            self.count(DropReason::NotRelaying);
            return StoreStatus::Refused;
        }
        // 5. Room, within the sender's and the source network's share.
        let source = prefix(&from.addr, self.config.loopback);
        if let Err(reason) = self.make_room(ctx, &envelope, source) {
            self.count(reason);
            return StoreStatus::Busy;
        }
        // 6. Hold, and relay on at once.
        let route = Route::new(
            envelope.recipient(),
            hops_left,
            self.config.relay_budget,
            self.config.relay_backoff,
            self.me.distance(&envelope.recipient()),
        );
        let me = self.me;
        self.held.insert(
            &me,
            Held {
                envelope,
                route,
                own: false,
                source,
                taken_at: ctx.now,
            },
        );
        self.touch(Table::Held, id);
        self.note_holder(ctx, id, from);
        let key = RouteKey { id, ack: false };
        if ctx.peers.verified(&from) {
            self.attempt(ctx, key);
        } else {
            // From a source that has not proven its address: no instant
            // fan-out to third parties (it could be spoofed); the first
            // attempt comes after the usual backoff.
            self.schedule_attempt(ctx.now, key);
        }
        StoreStatus::Held
    }

    /// Why `e` is unacceptable now, if it is (the signature last: it is
    /// the only expensive check).
    fn invalid(&self, ctx: &Ctx, e: &Envelope) -> Option<DropReason> {
        let now_ms = ctx.wall_ms;
        if u64::from(e.ttl_secs()) > self.config.max_ttl.as_secs() {
            Some(DropReason::TtlTooLong)
        } else if e.created_at_ms()
            > now_ms.saturating_add(self.config.clock_skew.as_millis() as u64)
        {
            Some(DropReason::FutureDated)
        } else if e.expires_at_ms() <= now_ms {
            Some(DropReason::Expired)
        } else if !e.verify(ctx.identity.signatures()) {
            Some(DropReason::BadMessageSignature)
        } else {
            None
        }
    }

    /// Make room for `e`, which came from network `source`, under the
    /// quotas and caps of §16.10: per sender, per source network (count
    /// and stored bytes per second), then the totals, making room by
    /// evicting from the source that holds the most here, never from a
    /// smaller one than the newcomer's.
    fn make_room(
        &mut self,
        ctx: &Ctx,
        e: &Envelope,
        source: Option<Prefix>,
    ) -> Result<(), DropReason> {
        if self.held.count_from(&e.sender()) >= self.config.max_held_per_sender {
            return Err(DropReason::SenderQuota);
        }
        let size = e.body().len();
        if let Some(p) = source {
            if self.held.count_from_source(&source) >= self.config.max_held_per_source {
                return Err(DropReason::SourceQuota);
            }
            if !self.stored_bytes.take(p, size as f64, ctx.now) {
                return Err(DropReason::SourceRate);
            }
        }
        let mine = self.held.count_from_source(&source);
        while self.held.len() >= self.config.max_held
            || self.held.bytes() + size > self.config.max_held_bytes
        {
            match self.held.largest_source() {
                Some((victim_source, n, victim)) if victim_source != source && n > mine + 1 => {
                    self.count(DropReason::EvictedHeld);
                    self.unhold(&victim);
                }
                _ => return Err(DropReason::RelayFull),
            }
        }
        Ok(())
    }

    /// Remember that `from`, which sent us a copy of `id`, holds it. Only a
    /// verified contact at that endpoint counts, and never the recipient:
    /// an unproven claim must not stop us from delivering.
    fn note_holder(&mut self, ctx: &Ctx, id: MessageId, from: Contact) {
        let cap = self.config.max_tracked_peers;
        let verified = ctx.peers.verified(&from);
        if let Some(h) = self.held.get_mut(&id) {
            if verified && from.id != h.envelope.recipient() {
                h.route.add_holder(from, cap);
            }
        }
        self.drop_if_surplus(&id);
    }

    /// Drop our copy of someone else's message `id` if we know holders
    /// closer to its recipient in `surplus_holders` distinct networks
    /// (§16.3): copies stay with the nodes nearest the recipient, and their
    /// number stays bounded however many nodes the churn brings inside the
    /// circle. Counting networks, not identities, keeps one network's
    /// sybils, which need not hold anything to claim a copy, from talking
    /// us out of ours.
    fn drop_if_surplus(&mut self, id: &MessageId) {
        let cap = self.config.surplus_holders;
        let (me, loopback) = (self.me, self.config.loopback);
        let surplus = cap > 0
            && self
                .held
                .get(id)
                .is_some_and(|h| !h.own && h.route.closer_holder_networks(&me, loopback) >= cap);
        if surplus {
            debug!(id = %id.short(), "closer holders known; copy dropped");
            self.surplus_drops += 1;
            self.unhold(id);
        }
    }

    /// Answer an `Offer` of `ids` from `from` (§15.5): the ids we want
    /// (held neither now nor before, not acknowledged, and we relay), and
    /// the ids we hold (whose offerer holds them too: a holder learned).
    /// For an id we know acknowledged, a verified offerer is sent the ack
    /// (purge only) instead of a `Store` being asked for.
    pub fn on_offer(
        &mut self,
        ctx: &Ctx,
        from: Contact,
        ids: &[MessageId],
    ) -> (Vec<MessageId>, Vec<MessageId>) {
        let (mut want, mut held) = (Vec::new(), Vec::new());
        let verified = ctx.peers.verified(&from);
        for id in ids {
            if self.held.contains(id) {
                self.duplicate_offers += 1;
                self.note_holder(ctx, *id, from);
                held.push(*id);
            } else if let Some(t) = self.tombstones.get(id) {
                if verified {
                    let ack = t.ack;
                    self.purge(&ack, vec![from]);
                }
            } else if self.config.relay && !self.gone.contains(id) && !self.inbox.contains(id) {
                want.push(*id);
            }
        }
        (want, held)
    }

    /// `peer` answered our `Offer` of `id`: send the `Store` if it wants
    /// it, remember it as a holder if it holds it; otherwise it stays
    /// tried (it would decline again).
    pub fn on_offered(&mut self, ctx: &Ctx, peer: Contact, id: MessageId, want: bool, held: bool) {
        let cap = self.config.max_tracked_peers;
        let Some(h) = self.held.get_mut(&id) else {
            return;
        };
        if held && !want {
            h.route.add_holder(peer, cap);
            self.drop_if_surplus(&id);
            return;
        }
        if !want || !h.route.is_tried(&peer.id) {
            return;
        }
        let hops_left = h.route.hops_left.saturating_sub(1);
        let (envelope, own) = (h.envelope.clone(), h.own);
        self.act(Action::Request {
            to: peer,
            body: Body::Store {
                envelope: Box::new(envelope),
                hops_left,
            },
            challenge: !ctx.peers.verified(&peer),
            purpose: RelayRequest::Store(id),
            own,
        });
    }

    /// We are the recipient: store the message, then acknowledge it
    /// (§16.4). It is shown later, through [`Relay::release_messages`].
    fn deliver(&mut self, ctx: &Ctx, from: Contact, envelope: Envelope) -> StoreStatus {
        let id = envelope.id();
        let ack = Ack::sign(ctx.identity, &envelope);
        if self.inbox.contains(&id) {
            return StoreStatus::Delivered(Box::new(ack));
        }
        if self.inbox.unshown_len() >= self.config.max_unshown {
            self.refused_for_room = true;
            self.count(DropReason::InboxFull);
            return StoreStatus::Busy;
        }
        // Only a body sealed to us, for this very envelope, is a message.
        let Ok(text) = crypto::open_envelope(ctx.identity, &envelope) else {
            self.count(DropReason::Undecryptable);
            return StoreStatus::Refused;
        };
        let keep_until_ms = envelope
            .expires_at_ms()
            .saturating_add(self.config.tombstone_margin.as_millis() as u64);
        let sender = envelope.sender();
        // Created no later than ids we had to forget: it may be one of them,
        // shown before, or a message never received. It is stored and shown
        // either way, marked, never acknowledged and dropped: losing a real
        // message is worse than showing a repeat that says it may be one.
        let maybe_repeat = envelope.created_at_ms() <= self.replay_floor_ms;
        if maybe_repeat {
            self.maybe_repeats += 1;
        }
        self.inbox.insert(
            id,
            Received {
                created_at_ms: envelope.created_at_ms(),
                envelope: Some(envelope.clone()),
                text: Some(Bytes::from(text)),
                keep_until_ms,
                maybe_repeat,
            },
        );
        self.write_inbox(&id, Some(&envelope));
        let forgotten = self.inbox.trim(self.config.max_inbox);
        for (gone, created_at_ms) in &forgotten {
            self.write_inbox(gone, None);
            self.replay_floor_ms = self.replay_floor_ms.max(*created_at_ms);
        }
        if !forgotten.is_empty() {
            self.eager.push(Op::Put(
                Table::Meta,
                REPLAY_FLOOR_KEY.to_vec(),
                self.replay_floor_ms.to_be_bytes().to_vec(),
            ));
        }
        self.keep_tombstone(ctx, ack);
        // The sender itself, verified, learns of delivery from our answer;
        // anyone else's copy means the ack must travel to the sender.
        let from_sender = from.id == sender && ctx.peers.verified(&from);
        if !from_sender {
            self.route_ack(ctx, ack, self.config.hop_limit, true, None);
        }
        // Tell our neighbourhood (where the copies gather) to drop theirs.
        let near: Vec<Contact> = ctx
            .peers
            .closest(&self.me, self.k())
            .into_iter()
            .filter(|c| c.id != from.id)
            .collect();
        self.purge(&ack, near);
        StoreStatus::Delivered(Box::new(ack))
    }

    /// Hand up to `n` unshown messages to the user, in the order they were
    /// written (once per run). Returns how many.
    pub fn release_messages(&mut self, me: &Identity, n: usize) -> usize {
        let mut released = 0;
        while released < n {
            let Some(id) = self.inbox.next_unshown() else {
                break;
            };
            let Some((e, text, maybe_repeat)) = self.inbox.mark_shown(&id) else {
                break;
            };
            // Stored sealed; opened when accepted, and again after a restart.
            let text = match text {
                Some(t) => t,
                None => match crypto::open_envelope(me, &e) {
                    Ok(t) => Bytes::from(t),
                    Err(_) => {
                        self.count(DropReason::Undecryptable);
                        continue;
                    }
                },
            };
            // Handed out, not yet shown: the front end records it shown
            // (`Table::Shown`) just before it shows it, so a crash between
            // here and the screen shows it again on start, never loses it.
            self.act(Action::Event(Event::MessageReceived {
                id,
                from: e.sender(),
                body: text,
                created_at_ms: e.created_at_ms(),
                maybe_repeat,
            }));
            released += 1;
        }
        released
    }

    /// Whether a message for us was refused for want of room and room has
    /// been made since: the node should pull again. Clears the flag.
    pub fn wants_pull(&mut self) -> bool {
        if self.refused_for_room && self.inbox.unshown_len() < self.config.max_unshown / 2 {
            self.refused_for_room = false;
            return true;
        }
        false
    }

    // ---- acks -------------------------------------------------------

    fn keep_tombstone(&mut self, ctx: &Ctx, ack: Ack) {
        let cap = ctx
            .wall_ms
            .saturating_add(self.config.max_ttl.as_millis() as u64);
        let keep_until_ms = ack
            .expires_at_ms
            .min(cap)
            .saturating_add(self.config.tombstone_margin.as_millis() as u64);
        let routed = self.tombstones.get(&ack.id).is_some_and(|t| t.routed);
        let evicted = self.tombstones.insert(
            Tombstone {
                ack,
                keep_until_ms,
                routed,
            },
            self.config.max_tombstones,
        );
        self.touch(Table::Tombstones, ack.id);
        for id in evicted {
            self.touch(Table::Tombstones, id);
        }
    }

    /// Start routing `ack` towards its sender (§16.7). `bearer`, the peer
    /// that handed it to us, is recorded as having it before the first
    /// attempt, so that attempt does not send it straight back.
    fn route_ack(
        &mut self,
        ctx: &Ctx,
        ack: Ack,
        hops_left: u32,
        origin: bool,
        bearer: Option<Contact>,
    ) {
        // Never twice (§16.7): not while routing it, nor after routing an
        // ack for this id once (the tombstone's mark), even a genuine one
        // that differs from the one routed.
        let routed_before = self.tombstones.get(&ack.id).is_some_and(|t| t.routed);
        if ack.sender == self.me || self.acks.contains(&ack.id) || routed_before {
            return;
        }
        if self.tombstones.set_routed(&ack.id) {
            self.touch(Table::Tombstones, ack.id);
        }
        let bound = if origin {
            ANYWHERE
        } else {
            self.me.distance(&ack.sender)
        };
        let route = Route::new(
            ack.sender,
            hops_left,
            self.config.relay_budget,
            self.config.relay_backoff,
            bound,
        );
        let evicted = self
            .acks
            .insert(HeldAck { ack, route }, self.config.max_routed_acks);
        self.touch(Table::Acks, ack.id);
        for id in evicted {
            self.count(DropReason::EvictedAck);
            self.touch(Table::Acks, id);
            self.act(Action::Cancel(RouteKey { id, ack: true }));
        }
        self.ack_holder(&ack.id, bearer);
        let key = RouteKey {
            id: ack.id,
            ack: true,
        };
        if origin {
            // Find the sender's neighbourhood first, as for a message.
            self.await_lookup(ack.sender, key);
        } else {
            self.attempt(ctx, key);
        }
    }

    fn first_ack_round(&mut self, ctx: &Ctx, id: MessageId, closest: &[Contact]) {
        let k = self.k();
        let Some(h) = self.acks.get_mut(&id) else {
            return;
        };
        let sender = h.ack.sender;
        let targets = if closest.is_empty() {
            ctx.peers.closest(&sender, k)
        } else {
            closest.to_vec()
        };
        if targets.len() >= k {
            if let Some(far) = targets.last() {
                h.route.bound = just_past(far.id.distance(&sender));
            }
        }
        self.ack_to(id, &targets);
        self.schedule_attempt(ctx.now, RouteKey { id, ack: true });
    }

    /// Act on an ack from `peer` (from a `Stored` answer, `hops_left` 0),
    /// as in §16.5. Returns false if it is forged.
    pub fn on_ack(&mut self, ctx: &Ctx, peer: Option<Contact>, ack: Ack, hops_left: u32) -> bool {
        // Our hop limit bounds how far we carry anyone's ack.
        let hops_left = hops_left.min(self.config.hop_limit);
        if let Some(t) = self.tombstones.get(&ack.id) {
            if t.ack == ack {
                // Known already (perhaps from a purge): carry it on towards
                // the sender if asked and never done before.
                if hops_left > 0 {
                    self.route_ack(ctx, ack, hops_left, false, peer);
                }
                self.ack_holder(&ack.id, peer);
                return true;
            }
        }
        let known = self
            .held
            .get(&ack.id)
            .map(|h| &h.envelope)
            .or_else(|| self.outbox.get(&ack.id).map(|o| &o.envelope));
        let genuine = match (known, self.gone.get(&ack.id)) {
            (Some(e), _) => Some(ack.matches(e, ctx.identity.signatures())),
            // A message we held: its recipient and sender are remembered.
            (None, Some((recipient, sender))) => Some(
                ack.recipient() == *recipient
                    && ack.sender == *sender
                    && ack.verify(ctx.identity.signatures()),
            ),
            // Never seen: only the signature can be checked, and an ack
            // claiming a longer life than any message may have is bogus.
            (None, None) => {
                let longest = ctx.wall_ms.saturating_add(
                    (self.config.max_ttl + self.config.clock_skew).as_millis() as u64,
                );
                if ack.expires_at_ms <= longest && ack.verify(ctx.identity.signatures()) {
                    None
                } else {
                    Some(false)
                }
            }
        };
        let Some(genuine) = genuine else {
            // Not ours to keep (no tombstone: strangers cannot fill them),
            // but an ack on its way to its sender is carried on if a
            // verified contact hands it to us, once.
            let trusted = peer.is_some_and(|p| ctx.peers.verified(&p));
            if hops_left > 0 && trusted && !self.routed.contains(&ack.id) {
                let cap = self.config.max_tombstones;
                self.routed.insert(
                    ack.id,
                    (),
                    ack.expires_at_ms.min(
                        ctx.wall_ms
                            .saturating_add(self.config.max_ttl.as_millis() as u64),
                    ),
                    cap,
                );
                self.route_ack(ctx, ack, hops_left, false, peer);
            }
            self.ack_holder(&ack.id, peer);
            return true;
        };
        if !genuine {
            self.count(DropReason::ForgedAck);
            return false;
        }
        self.keep_tombstone(ctx, ack);
        let pending = self
            .outbox
            .get(&ack.id)
            .filter(|o| o.state != OutboxState::Delivered)
            .map(|o| (o.envelope.recipient(), o.user_id));
        if let Some((to, user_id)) = pending {
            self.first_round_done(ack.id);
            self.outbox.set_state(&ack.id, OutboxState::Delivered);
            self.touch(Table::Outbox, ack.id);
            self.act(Action::Event(Event::Delivered { id: user_id, to }));
        }
        if let Some(h) = self.unhold(&ack.id) {
            // Everyone we know has a copy or was sent one, but the bearer
            // and the recipient (which has it).
            let peers: Vec<Contact> = h
                .route
                .known_peers()
                .into_iter()
                .filter(|c| Some(c.id) != peer.map(|p| p.id) && c.id != h.envelope.recipient())
                .collect();
            self.purge(&ack, peers);
        }
        if hops_left > 0 {
            self.route_ack(ctx, ack, hops_left, false, peer);
        }
        self.ack_holder(&ack.id, peer);
        true
    }

    fn ack_holder(&mut self, id: &MessageId, peer: Option<Contact>) {
        let cap = self.config.max_tracked_peers;
        if let (Some(p), Some(a)) = (peer, self.acks.get_mut(id)) {
            a.route.add_holder(p, cap);
        }
    }

    // ---- answers to our requests ------------------------------------

    /// `peer` answered our `Store` of `id` with `status`.
    pub fn on_stored(&mut self, ctx: &Ctx, peer: Contact, id: MessageId, status: StoreStatus) {
        let cap = self.config.max_tracked_peers;
        match status {
            StoreStatus::Held => {
                if let Some(h) = self.held.get_mut(&id) {
                    h.route.add_holder(peer, cap);
                }
                self.drop_if_surplus(&id);
            }
            StoreStatus::Delivered(ack) | StoreStatus::Acknowledged(ack) => {
                // The recipient took it itself: the placement was direct.
                if let Some(h) = self.held.get_mut(&id) {
                    if peer.id == h.envelope.recipient()
                        && ack.matches(&h.envelope, ctx.identity.signatures())
                    {
                        h.route.add_holder(peer, cap);
                    }
                }
                self.on_ack(ctx, Some(peer), *ack, 0);
            }
            // Stays tried: it would refuse again.
            StoreStatus::Refused => {}
            // No room for now: offer it again at a later attempt, free.
            StoreStatus::Busy => {
                if let Some(h) = self.held.get_mut(&id) {
                    h.route.untry(&peer.id, true);
                }
            }
        }
        self.first_round_step(id, &peer.id);
    }

    /// Our `Store` of `id` to `peer` failed (or could not be sent, `unsent`).
    pub fn store_failed(&mut self, peer: &Address, id: MessageId, unsent: bool) {
        if let Some(h) = self.held.get_mut(&id) {
            if unsent {
                h.route.untry(peer, true);
            } else {
                h.route.failed(peer);
            }
        }
        self.first_round_step(id, peer);
    }

    /// Our `Store` of `id` to `peer` is past the soft timeout: it still
    /// counts if it is answered, but the sender stops waiting for it.
    pub fn store_slow(&mut self, peer: &Address, id: MessageId) {
        self.first_round_step(id, peer);
    }

    /// `peer` answered our `Acknowledge` of `id`.
    pub fn on_acknowledged(&mut self, peer: Contact, id: MessageId) {
        let cap = self.config.max_tracked_peers;
        let done = match self.acks.get_mut(&id) {
            Some(a) => {
                a.route.add_holder(peer, cap);
                a.ack.sender == peer.id
            }
            None => false,
        };
        if done {
            // The sender has it: nothing left to route.
            self.stop_routing(&id);
        }
    }

    /// Our `Acknowledge` of `id` to `peer` failed (or was not sent).
    pub fn ack_failed(&mut self, peer: &Address, id: MessageId, unsent: bool) {
        if let Some(a) = self.acks.get_mut(&id) {
            if unsent {
                a.route.untry(peer, true);
            } else {
                a.route.failed(peer);
            }
        }
    }

    // ---- contacts ---------------------------------------------------

    /// `contact` proved its key and was offered to the routing table (not
    /// merely refreshed; `moved` if it proved itself at a new endpoint):
    /// hand it what we hold for it, and copies it is now among the closest
    /// for (§16.8).
    pub fn contact_appeared(&mut self, ctx: &Ctx, contact: Contact, moved: bool) {
        let k = self.k();
        if moved {
            // Whatever went to its old endpoint may never have arrived.
            self.forget_tries(&contact.id);
        }
        let mut stores: Vec<MessageId> = Vec::new();
        for (id, h) in self.held.iter() {
            if h.route.knows(&contact.id) || h.envelope.expires_at_ms() <= ctx.wall_ms {
                continue;
            }
            let r = h.envelope.recipient();
            // A message of ours not yet placed within a circle (§16.2 step
            // 6) waits for its lookup: while our table fills after a
            // restart, every contact would rank among our k closest to
            // anyone, and each would get a copy.
            let placed = h.route.bound != ANYWHERE;
            let wanted = contact.id == r
                || (placed
                    && h.route.hops_left > 0
                    && (h.route.holder_count() < k
                        || h.route
                            .farthest_holder()
                            .is_some_and(|far| contact.id.distance(&r) < far)));
            if wanted {
                stores.push(*id);
            }
        }
        for id in stores {
            let Some(r) = self.held.get(&id).map(|h| h.envelope.recipient()) else {
                continue;
            };
            // Only if the newcomer is among our k closest to the recipient.
            let in_k =
                contact.id == r || ctx.peers.closest(&r, k).iter().any(|c| c.id == contact.id);
            if in_k {
                self.store_to(ctx, id, &[contact], true);
            }
        }
        for id in self.acks.for_sender(&contact.id) {
            self.ack_to(id, &[contact]);
        }
    }

    /// Forget that `peer` was tried with what is addressed to it (messages
    /// for it, acks for its messages), so they are offered to it again.
    fn forget_tries(&mut self, peer: &Address) {
        for id in self.held.for_recipient(peer) {
            if let Some(h) = self.held.get_mut(&id) {
                h.route.forget(peer);
            }
        }
        for id in self.acks.for_sender(peer) {
            if let Some(a) = self.acks.get_mut(&id) {
                a.route.forget(peer);
            }
        }
    }

    /// Answer a `Pull` from `contact`. Returns the count to report, and
    /// whether we hold anything for it at all. Only a requester verified
    /// at that endpoint learns the count (anyone else could learn who gets
    /// mail); if it is in our table there, what we hold is pushed now.
    pub fn on_pull(&mut self, ctx: &Ctx, contact: Contact) -> (u32, bool) {
        let count = self.held.count_for(&contact.id) + self.acks.count_for(&contact.id);
        if count > 0 {
            // Earlier attempts, and failures that may have dropped it from
            // the table, must not keep its messages from it now.
            self.forget_tries(&contact.id);
            // In our table there: pushed now. Otherwise the node's
            // verification runs first; once the contact proves its key and
            // enters the table, §16.8 gives it the messages.
            if ctx.peers.in_table(&contact) {
                self.contact_appeared(ctx, contact, false);
            }
        }
        let reported = if ctx.peers.verified(&contact) {
            count
        } else {
            0
        };
        (u32::try_from(reported).unwrap_or(u32::MAX), count > 0)
    }

    /// Ask `near` (our closest contacts) for what they hold for us.
    pub fn pull(&mut self, near: &[Contact]) {
        for c in near.iter().take(self.k()) {
            self.act(Action::Request {
                to: *c,
                body: Body::Pull,
                challenge: false,
                purpose: RelayRequest::Pull,
                own: true,
            });
        }
    }

    // ---- inspection -------------------------------------------------

    /// Whether we hold a copy of message `id` to relay.
    pub fn holds(&self, id: &MessageId) -> bool {
        self.held.contains(id)
    }

    /// The ids of the messages held (our own undelivered ones included).
    pub fn held_ids(&self) -> Vec<MessageId> {
        self.held.iter().map(|(id, _)| *id).collect()
    }

    /// Our messages waiting for their recipient's key.
    pub fn drafts_count(&self) -> usize {
        self.drafts.len()
    }

    /// `Store`s received for a message this node already held.
    pub fn duplicate_stores(&self) -> u64 {
        self.duplicate_stores
    }

    /// Ids offered to this node that it already held: each a `Store`
    /// that the offer saved.
    pub fn duplicate_offers(&self) -> u64 {
        self.duplicate_offers
    }

    /// Copies dropped because `surplus_holders` closer holders were known.
    pub fn surplus_drops(&self) -> u64 {
        self.surplus_drops
    }

    /// Messages accepted although created at or before the replay floor
    /// (§16.4): each was shown marked as a possible repeat.
    pub fn maybe_repeats(&self) -> u64 {
        self.maybe_repeats
    }

    /// Held messages (including our own undelivered ones).
    pub fn held_count(&self) -> usize {
        self.held.len()
    }

    /// Acks kept as tombstones.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Acks being routed to senders.
    pub fn routing_acks(&self) -> usize {
        self.acks.len()
    }

    /// State of a message we sent.
    pub fn outbox_state(&self, id: &MessageId) -> Option<OutboxState> {
        self.outbox.get(id).map(|o| o.state.clone())
    }

    /// Our messages neither delivered nor expired.
    pub fn outbox_pending(&self) -> usize {
        self.outbox.pending()
    }

    /// Received messages remembered.
    pub fn inbox_count(&self) -> usize {
        self.inbox.len()
    }

    /// Received messages not yet handed to the user.
    pub fn unshown_count(&self) -> usize {
        self.inbox.unshown_len()
    }

    /// Remaining budget and hops of a held message, for tests and `/stats`.
    pub fn route_of(&self, key: RouteKey) -> Option<(u32, u32)> {
        if key.ack {
            self.acks
                .get(&key.id)
                .map(|a| (a.route.budget, a.route.hops_left))
        } else {
            self.held
                .get(&key.id)
                .map(|h| (h.route.budget, h.route.hops_left))
        }
    }
}
