//! The sans-IO core: one overlay node with no socket, clock, thread or
//! randomness of its own.
//!
//! Contract (as in quinn-proto and str0m): feed inputs with
//! [`Node::handle_datagram`], [`Node::handle_timeout`] and the command
//! methods, always passing the current time; after each input drain
//! [`Node::poll_transmit`] and [`Node::poll_event`] until they return `None`,
//! then sleep until [`Node::poll_timeout`] or the next datagram.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

use crate::address::Address;
use crate::config::{Config, CHALLENGE_LEN};
use crate::identity::{self, proof_message, Identity};
use crate::lookup::{Lookup, LookupResult};
use crate::message::MessageId;
use crate::relay::RelayState;
use crate::routing::{Insert, RoutingTable};
use crate::store::{MemoryStore, Store};
use crate::wire::{self, Body, Contact, Packet, Proof};

/// Largest number of undrained transmits or events kept; beyond it the
/// newest is dropped and counted (`tx_queue_full`, `event_queue_full`).
pub const MAX_QUEUE: usize = 8192;

/// A datagram the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// The encoded packet (at most `MAX_DATAGRAM` bytes).
    pub payload: Bytes,
}

/// Identifies a lookup started with [`Node::lookup`].
pub type LookupId = u64;

/// Something the user (or a test) should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A bootstrap node answered and the lookup of our own address finished.
    Joined {
        /// Contacts in the routing table now.
        contacts: usize,
    },
    /// No bootstrap address answered this round; another round follows.
    BootstrapFailed {
        /// The addresses tried.
        addrs: Vec<SocketAddr>,
        /// Datagrams sent to each address this round.
        tries: u32,
        /// When the next round starts, from now.
        retry_in: Duration,
    },
    /// A lookup started with [`Node::lookup`] finished.
    LookupDone {
        /// Its id.
        id: LookupId,
        /// What it found.
        result: LookupResult,
    },
    /// Our message's first copies are placed.
    MessageSent {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: Address,
        /// Relays that confirmed holding a copy.
        relays: usize,
    },
    /// A message for us arrived (shown once, however many copies come).
    MessageReceived {
        /// The message.
        id: MessageId,
        /// Its sender (verified signature).
        from: Address,
        /// The text.
        body: Bytes,
        /// When the sender created it, ms since the Unix epoch.
        created_at_ms: u64,
    },
    /// The recipient's signed ack for our message arrived.
    Delivered {
        /// The message.
        id: MessageId,
        /// Its recipient.
        to: Address,
    },
    /// Our message expired without an ack.
    MessageExpired {
        /// The message.
        id: MessageId,
    },
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeError {
    /// `max_lookups` lookups are already running.
    #[error("too many lookups in progress ({0}); try again shortly")]
    TooManyLookups(usize),
    /// The message text is over the size limit.
    #[error("message of {0} bytes is over the {max}-byte limit", max = crate::config::MAX_BODY)]
    BodyTooLarge(usize),
    /// Sending to our own address.
    #[error("that is this node's own address")]
    ToSelf,
    /// Too many undelivered messages.
    #[error("{0} messages are still undelivered; wait for some to be delivered or expire")]
    OutboxFull(usize),
}

/// Counters for `/stats` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_in: u64,
    /// Datagrams queued for sending (retransmissions included).
    pub datagrams_out: u64,
    /// Requests re-sent after a timeout.
    pub retransmits: u64,
    /// Requests that got no answer after all retries.
    pub rpc_timeouts: u64,
    /// `Store` requests sent (message transfers).
    pub stores_sent: u64,
    /// `Acknowledge` requests sent (ack transfers).
    pub acks_sent: u64,
    /// Inputs dropped, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Challenge ping to a bootstrap endpoint whose address we do not know.
    Bootstrap,
    /// Challenge ping to a node that contacted us, before it may enter the table.
    Verify,
    /// Liveness ping of a full bucket's oldest entry.
    CheckOldest,
    /// One step of a lookup.
    FindNode(LookupId),
    /// Placing a copy of a held message.
    Store(MessageId),
    /// Routing or purging with an ack.
    Acknowledge(MessageId),
    /// Asking a neighbour for messages held for us.
    Pull,
}

#[derive(Clone, Debug)]
struct Rpc {
    to: SocketAddr,
    expect: Option<Address>,
    challenge: Option<[u8; CHALLENGE_LEN]>,
    payload: Bytes,
    deadline: Instant,
    retries_left: u32,
    purpose: Purpose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LookupKind {
    User,
    Join,
    Refresh,
    Send(MessageId),
    AckRoute(MessageId),
}

#[derive(Clone, Debug, Default)]
struct Bootstrap {
    addrs: Vec<SocketAddr>,
    outstanding: usize,
    answered: bool,
    next_retry: Option<Instant>,
    backoff: Duration,
}

/// Bounded set of (address, endpoint) pairs that proved their key but found
/// no slot in the table, so they are not challenged again.
#[derive(Clone, Debug, Default)]
struct VerifiedCache {
    order: VecDeque<(Address, SocketAddr)>,
    set: HashSet<(Address, SocketAddr)>,
}

impl VerifiedCache {
    fn contains(&self, c: &Contact) -> bool {
        self.set.contains(&(c.id, c.addr))
    }

    fn insert(&mut self, c: &Contact, cap: usize) {
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

/// Wall-clock time assumed at construction until
/// [`Node::with_wall_clock`] says otherwise (2023-11-14, ms since the epoch);
/// the simulator and fuzzers run on it.
pub const DEFAULT_EPOCH_MS: u64 = 1_700_000_000_000;

/// One overlay node.
pub struct Node {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) me: Address,
    pub(crate) rng: StdRng,
    pub(crate) table: RoutingTable,
    rpcs: BTreeMap<u64, Rpc>,
    lookups: BTreeMap<LookupId, (Lookup, LookupKind)>,
    next_lookup: LookupId,
    verified: VerifiedCache,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pub(crate) stats: Stats,
    boot: Bootstrap,
    next_refresh_check: Instant,
    pub(crate) relay: RelayState,
    /// (instant, wall-clock ms at that instant).
    pub(crate) clock: (Instant, u64),
    /// Where held messages, acks, outbox and inbox survive a restart.
    pub(crate) store: Box<dyn Store>,
}

impl Node {
    /// A node with `identity`, whose randomness all comes from `seed`.
    pub fn new(config: Config, identity: Identity, seed: [u8; 32], now: Instant) -> Node {
        let me = identity.address();
        let table = RoutingTable::new(
            me,
            config.k,
            config.replacement_cache,
            config.max_per_prefix,
            now,
        );
        let next_refresh_check = now + config.refresh_check;
        Node {
            boot: Bootstrap {
                backoff: config.bootstrap_retry,
                ..Bootstrap::default()
            },
            config,
            identity,
            me,
            rng: StdRng::from_seed(seed),
            table,
            rpcs: BTreeMap::new(),
            lookups: BTreeMap::new(),
            next_lookup: 1,
            verified: VerifiedCache::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_refresh_check,
            relay: RelayState::default(),
            clock: (now, DEFAULT_EPOCH_MS),
            store: Box::new(MemoryStore::default()),
        }
    }

    /// Tie the node's clock to the wall clock: at `now` it is `unix_ms`
    /// milliseconds since the Unix epoch. Message times derive from this.
    pub fn with_wall_clock(mut self, now: Instant, unix_ms: u64) -> Node {
        self.clock = (now, unix_ms);
        self
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.me
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table, for inspection.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Lookups in progress.
    pub fn lookups_running(&self) -> usize {
        self.lookups.len()
    }

    /// Next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rpc = self.rpcs.values().map(|r| r.deadline).min();
        [
            rpc,
            self.boot.next_retry,
            Some(self.next_refresh_check),
            self.relay_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn count_drop(&mut self, reason: &'static str) {
        *self.stats.dropped.entry(reason).or_insert(0) += 1;
    }

    pub(crate) fn emit(&mut self, event: Event) {
        if self.events.len() >= MAX_QUEUE {
            self.count_drop("event_queue_full");
            return;
        }
        self.events.push_back(event);
    }

    fn transmit(&mut self, to: SocketAddr, payload: Bytes) {
        if self.transmits.len() >= MAX_QUEUE {
            self.count_drop("tx_queue_full");
            return;
        }
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit { to, payload });
    }

    /// Join the overlay through `addrs`: ping each with a challenge; the
    /// first to answer enters the table and a lookup of our own address
    /// follows. Rounds repeat with backoff while nobody answers.
    pub fn bootstrap(&mut self, now: Instant, addrs: Vec<SocketAddr>) {
        self.boot = Bootstrap {
            addrs,
            backoff: self.config.bootstrap_retry,
            ..Bootstrap::default()
        };
        self.bootstrap_round(now);
    }

    fn bootstrap_round(&mut self, now: Instant) {
        self.boot.next_retry = None;
        self.boot.answered = false;
        self.boot.outstanding = 0;
        for addr in self.boot.addrs.clone() {
            if self
                .request(now, addr, None, Body::Ping, true, Purpose::Bootstrap)
                .is_some()
            {
                self.boot.outstanding += 1;
            }
        }
        if self.boot.outstanding == 0 && !self.boot.addrs.is_empty() {
            self.bootstrap_failed(now);
        }
    }

    fn bootstrap_failed(&mut self, now: Instant) {
        let retry_in = self.boot.backoff;
        self.boot.next_retry = Some(now + retry_in);
        self.boot.backoff = (retry_in * 2).min(self.config.bootstrap_retry_max);
        self.emit(Event::BootstrapFailed {
            addrs: self.boot.addrs.clone(),
            tries: self.config.rpc_retries + 1,
            retry_in,
        });
    }

    /// Start an iterative lookup of `target`; its result arrives as
    /// [`Event::LookupDone`].
    pub fn lookup(&mut self, now: Instant, target: Address) -> Result<LookupId, NodeError> {
        self.start_lookup(now, target, LookupKind::User)
    }

    fn start_lookup(
        &mut self,
        now: Instant,
        target: Address,
        kind: LookupKind,
    ) -> Result<LookupId, NodeError> {
        if self.lookups.len() >= self.config.max_lookups {
            return Err(NodeError::TooManyLookups(self.lookups.len()));
        }
        self.table.mark_activity(&target, now);
        let seeds = self.table.closest(&target, self.config.k);
        let lookup = Lookup::new(
            target,
            self.me,
            seeds,
            self.config.k,
            self.config.alpha,
            self.config.lookup_candidates,
        );
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.lookups.insert(id, (lookup, kind));
        self.drive_lookup(now, id);
        Ok(id)
    }

    fn drive_lookup(&mut self, now: Instant, id: LookupId) {
        loop {
            let Some((lookup, _)) = self.lookups.get_mut(&id) else {
                return;
            };
            let target = lookup.target();
            let queries = lookup.next_queries();
            if queries.is_empty() {
                break;
            }
            let mut refused = Vec::new();
            for c in queries {
                let challenge = self.needs_proof(&c);
                let sent = self.request(
                    now,
                    c.addr,
                    Some(c.id),
                    Body::FindNode { target },
                    challenge,
                    Purpose::FindNode(id),
                );
                if sent.is_none() {
                    refused.push(c.id);
                }
            }
            if refused.is_empty() {
                break;
            }
            if let Some((lookup, _)) = self.lookups.get_mut(&id) {
                for r in refused {
                    lookup.on_failure(&r);
                }
            }
        }
        let finished = self
            .lookups
            .get(&id)
            .is_some_and(|(lookup, _)| lookup.is_finished());
        if finished {
            if let Some((lookup, kind)) = self.lookups.remove(&id) {
                self.lookup_finished(now, id, kind, lookup.result());
            }
        }
    }

    fn lookup_finished(&mut self, now: Instant, id: LookupId, kind: LookupKind, r: LookupResult) {
        trace!(
            lookup = id,
            rounds = r.rounds,
            rpcs = r.rpcs,
            "lookup finished"
        );
        match kind {
            LookupKind::User => self.emit(Event::LookupDone { id, result: r }),
            LookupKind::Refresh => {}
            LookupKind::Send(message) => self.send_lookup_done(now, message, &r.closest),
            LookupKind::AckRoute(message) => self.ack_lookup_done(now, message, &r.closest),
            LookupKind::Join => {
                self.emit(Event::Joined {
                    contacts: self.table.len(),
                });
                // Ask our neighbourhood for messages and acks held for us.
                let near = self.table.closest(&self.me, self.config.k);
                self.pull(now, &near);
                // Fill the buckets farther than our nearest neighbour (Kademlia join).
                let Some(nearest) = self.table.nearest_bucket() else {
                    return;
                };
                let k = self.config.k;
                let sparse: Vec<usize> = self
                    .table
                    .buckets()
                    .skip(nearest + 1)
                    .filter(|(_, b)| b.entries().len() < k)
                    .map(|(i, _)| i)
                    .collect();
                for i in sparse {
                    let target = self.me.random_in_bucket(i, &mut self.rng);
                    if self.start_lookup(now, target, LookupKind::Refresh).is_err() {
                        break;
                    }
                }
            }
        }
    }

    pub(crate) fn start_send_lookup(&mut self, now: Instant, id: MessageId, to: Address) {
        if self.start_lookup(now, to, LookupKind::Send(id)).is_err() {
            // Too busy for a lookup: place copies with what the table knows.
            self.send_lookup_done(now, id, &[]);
        }
    }

    pub(crate) fn start_ack_lookup(&mut self, now: Instant, id: MessageId, sender: Address) {
        if self
            .start_lookup(now, sender, LookupKind::AckRoute(id))
            .is_err()
        {
            let near = self.table.closest(&sender, self.config.k);
            self.ack_lookup_done(now, id, &near);
        }
    }

    pub(crate) fn needs_proof(&self, c: &Contact) -> bool {
        !self.table.contains(&c.id, &c.addr) && !self.verified.contains(c)
    }

    /// Send a request and remember it. `None` if `max_inflight_rpcs` are open.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        expect: Option<Address>,
        body: Body,
        challenge: bool,
        purpose: Purpose,
    ) -> Option<u64> {
        if self.rpcs.len() >= self.config.max_inflight_rpcs {
            self.count_drop("rpc_limit");
            return None;
        }
        let mut txid: u64 = self.rng.gen();
        while self.rpcs.contains_key(&txid) {
            txid = self.rng.gen();
        }
        let challenge = challenge.then(|| self.rng.gen::<[u8; CHALLENGE_LEN]>());
        let payload = wire::encode(&Packet {
            sender: self.me,
            txid,
            challenge,
            proof: None,
            body,
        });
        self.transmit(to, payload.clone());
        self.rpcs.insert(
            txid,
            Rpc {
                to,
                expect,
                challenge,
                payload,
                deadline: now + self.config.rpc_timeout,
                retries_left: self.config.rpc_retries,
                purpose,
            },
        );
        Some(txid)
    }

    /// Feed one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        // IPv4 peers on a dual-stack socket appear as ::ffff:a.b.c.d.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let packet = match wire::decode(bytes, self.config.k) {
            Ok(p) => p,
            Err(e) => {
                debug!(%from, error = %e, "dropped datagram");
                self.count_drop(e.kind());
                return;
            }
        };
        if packet.sender == self.me {
            self.count_drop("own_address");
            return;
        }
        if packet.body.is_request() {
            self.handle_request(now, from, packet);
        } else {
            self.handle_response(now, from, packet);
        }
        self.persist();
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, packet: Packet) {
        let body = match packet.body {
            Body::Ping => Body::Pong {
                observed: Some(from),
            },
            Body::FindNode { target } => {
                let mut contacts = self.table.closest(&target, self.config.k + 1);
                contacts.retain(|c| c.id != packet.sender);
                contacts.truncate(self.config.k);
                Body::Nodes { contacts }
            }
            Body::Store {
                envelope,
                hops_left,
            } => self.on_store(
                now,
                Contact {
                    id: packet.sender,
                    addr: from,
                },
                *envelope,
                hops_left,
            ),
            Body::Acknowledge { ack, hops_left } => {
                let id = ack.id;
                if !self.on_ack(now, Some(packet.sender), *ack, hops_left) {
                    // Forged: say nothing, change nothing.
                    return;
                }
                // Confirm only what is saved; unsaved, the peer will retry.
                if !self.persist() {
                    return;
                }
                Body::Acknowledged { id }
            }
            Body::Pull => Body::Pulled {
                count: self.on_pull(
                    now,
                    Contact {
                        id: packet.sender,
                        addr: from,
                    },
                ),
            },
            Body::Pong { .. }
            | Body::Nodes { .. }
            | Body::Stored { .. }
            | Body::Acknowledged { .. }
            | Body::Pulled { .. } => return,
        };
        let proof = packet.challenge.map(|c| Proof {
            key: self.identity.public_key(),
            signature: self.identity.sign(&proof_message(&c)),
        });
        let reply = wire::encode(&Packet {
            sender: self.me,
            txid: packet.txid,
            challenge: None,
            proof,
            body,
        });
        self.transmit(from, reply);
        // Learn about the requester, but let it into the table only once it
        // has proven its key and that it receives at `from`.
        let contact = Contact {
            id: packet.sender,
            addr: from,
        };
        if !self.table.touch(&contact.id, &from, now) {
            if self.verified.contains(&contact) {
                self.offer(now, contact);
            } else if self.rpcs.len() < self.config.max_inflight_rpcs / 2
                && !self.rpcs.values().any(|r| r.to == from)
            {
                self.request(
                    now,
                    from,
                    Some(contact.id),
                    Body::Ping,
                    true,
                    Purpose::Verify,
                );
            }
        }
    }

    fn handle_response(&mut self, now: Instant, from: SocketAddr, packet: Packet) {
        let Some(rpc) = self.rpcs.get(&packet.txid) else {
            self.count_drop("unsolicited");
            return;
        };
        if rpc.to != from || rpc.expect.is_some_and(|id| id != packet.sender) {
            self.count_drop("unsolicited");
            return;
        }
        let fits = matches!(
            (&rpc.purpose, &packet.body),
            (Purpose::FindNode(_), Body::Nodes { .. })
                | (Purpose::Store(_), Body::Stored { .. })
                | (Purpose::Acknowledge(_), Body::Acknowledged { .. })
                | (Purpose::Pull, Body::Pulled { .. })
                | (
                    Purpose::Bootstrap | Purpose::Verify | Purpose::CheckOldest,
                    Body::Pong { .. }
                )
        );
        if !fits {
            self.count_drop("wrong_response_type");
            return;
        }
        let verified = match (rpc.challenge, &packet.proof) {
            (Some(challenge), Some(proof)) => {
                if !identity::verify(
                    &packet.sender,
                    &proof.key,
                    &proof_message(&challenge),
                    &proof.signature,
                ) {
                    // Leave the request open: the genuine answer may still come.
                    debug!(%from, "bad proof signature");
                    self.count_drop("bad_signature");
                    return;
                }
                true
            }
            (Some(_), None) => {
                self.count_drop("missing_proof");
                return;
            }
            (None, _) => false,
        };
        let Some(rpc) = self.rpcs.remove(&packet.txid) else {
            return;
        };
        let contact = Contact {
            id: packet.sender,
            addr: from,
        };
        if verified {
            self.offer(now, contact);
        } else {
            self.table.touch(&contact.id, &from, now);
        }
        match rpc.purpose {
            Purpose::Bootstrap => {
                self.boot.outstanding = self.boot.outstanding.saturating_sub(1);
                if !self.boot.answered {
                    self.boot.answered = true;
                    self.boot.next_retry = None;
                    self.boot.backoff = self.config.bootstrap_retry;
                    let me = self.me;
                    if self.start_lookup(now, me, LookupKind::Join).is_err() {
                        let contacts = self.table.len();
                        self.emit(Event::Joined { contacts });
                    }
                }
            }
            Purpose::Verify => {}
            Purpose::CheckOldest => self.table.ping_result(&contact.id, true, now),
            Purpose::FindNode(id) => {
                if let Body::Nodes { contacts } = &packet.body {
                    let me = self.me;
                    if let Some((lookup, _)) = self.lookups.get_mut(&id) {
                        lookup.on_response(&contact.id, contacts, &me);
                    }
                    self.drive_lookup(now, id);
                }
            }
            Purpose::Store(id) => {
                if let Body::Stored { id: got, status } = packet.body {
                    if got == id {
                        self.on_stored(now, contact.id, id, status);
                    } else {
                        self.count_drop("wrong_response_type");
                        self.store_failed(Some(contact.id), id);
                    }
                }
            }
            Purpose::Acknowledge(id) => self.on_acknowledged(contact.id, id),
            Purpose::Pull => {}
        }
    }

    /// Offer a contact that has proven its key to the routing table.
    fn offer(&mut self, now: Instant, contact: Contact) {
        let outcome = self.table.insert(contact, now);
        // Even a contact parked outside the table gets what is addressed to it.
        if outcome != Insert::Updated {
            self.contact_appeared(now, contact);
        }
        match outcome {
            Insert::Added | Insert::Updated => {}
            Insert::PingOldest { oldest } => {
                self.verified.insert(&contact, self.config.verified_cache);
                let sent = self.request(
                    now,
                    oldest.addr,
                    Some(oldest.id),
                    Body::Ping,
                    false,
                    Purpose::CheckOldest,
                );
                if sent.is_none() {
                    // Cannot check now; keep the oldest (it has seniority).
                    self.table.ping_result(&oldest.id, true, now);
                }
            }
            Insert::Cached | Insert::Rejected => {
                self.verified.insert(&contact, self.config.verified_cache)
            }
        }
    }

    /// Advance timers: retransmit or fail overdue requests, retry bootstrap,
    /// refresh idle buckets.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .rpcs
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for txid in due {
            let Some(rpc) = self.rpcs.get_mut(&txid) else {
                continue;
            };
            if rpc.retries_left > 0 {
                rpc.retries_left -= 1;
                rpc.deadline = now + self.config.rpc_timeout;
                let (to, payload) = (rpc.to, rpc.payload.clone());
                self.stats.retransmits += 1;
                self.transmit(to, payload);
                continue;
            }
            if let Some(rpc) = self.rpcs.remove(&txid) {
                self.rpc_failed(now, rpc);
            }
        }
        self.relay_timers(now);
        if self.boot.next_retry.is_some_and(|t| t <= now) {
            self.boot.next_retry = None;
            // Contacts may have arrived on their own meanwhile.
            if self.table.is_empty() {
                self.bootstrap_round(now);
            }
        }
        if now >= self.next_refresh_check {
            self.next_refresh_check = now + self.config.refresh_check;
            self.relay_sweep(now);
            for i in self.table.stale_buckets(now, self.config.bucket_refresh) {
                let target = self.me.random_in_bucket(i, &mut self.rng);
                if self.start_lookup(now, target, LookupKind::Refresh).is_err() {
                    break;
                }
            }
            // Lost every contact: go back to the bootstrap nodes.
            if self.table.is_empty()
                && !self.boot.addrs.is_empty()
                && self.boot.next_retry.is_none()
                && self.boot.outstanding == 0
            {
                self.bootstrap_round(now);
            }
        }
        self.persist();
    }

    fn rpc_failed(&mut self, now: Instant, rpc: Rpc) {
        self.stats.rpc_timeouts += 1;
        // Only a failure at the endpoint we know counts against a contact,
        // so nobody can get it dropped by naming it at another endpoint.
        if let Some(id) = rpc.expect.filter(|id| self.table.contains(id, &rpc.to)) {
            if let Some(gone) = self.table.failed(&id, self.config.max_failures, now) {
                debug!(contact = %gone.id, "dropped unresponsive contact");
            }
        }
        match rpc.purpose {
            Purpose::Bootstrap => {
                self.boot.outstanding = self.boot.outstanding.saturating_sub(1);
                if self.boot.outstanding == 0 && !self.boot.answered {
                    self.bootstrap_failed(now);
                }
            }
            Purpose::Verify => {}
            Purpose::CheckOldest => {
                if let Some(id) = rpc.expect {
                    self.table.ping_result(&id, false, now);
                }
            }
            Purpose::FindNode(lookup) => {
                if let (Some(id), Some((l, _))) = (rpc.expect, self.lookups.get_mut(&lookup)) {
                    l.on_failure(&id);
                }
                self.drive_lookup(now, lookup);
            }
            Purpose::Store(id) => self.store_failed(rpc.expect, id),
            Purpose::Acknowledge(id) => self.ack_failed(rpc.expect, id),
            Purpose::Pull => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(seed: u8, now: Instant) -> Node {
        Node::new(
            Config::default(),
            Identity::from_seed([seed; 32]),
            [seed; 32],
            now,
        )
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, n, 0, 1], 4000))
    }

    /// Deliver everything between two nodes until both are quiet.
    fn pump(a: &mut Node, a_addr: SocketAddr, b: &mut Node, b_addr: SocketAddr, now: Instant) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(t) = a.poll_transmit() {
                if t.to == b_addr {
                    b.handle_datagram(now, a_addr, &t.payload);
                    moved = true;
                }
            }
            while let Some(t) = b.poll_transmit() {
                if t.to == a_addr {
                    a.handle_datagram(now, b_addr, &t.payload);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("nodes never went quiet");
    }

    #[test]
    fn bootstrap_verifies_and_joins_both_ways() {
        let now = Instant::now();
        let mut a = node(1, now);
        let mut b = node(2, now);
        b.bootstrap(now, vec![addr(1)]);
        pump(&mut b, addr(2), &mut a, addr(1), now);
        assert!(b.table().contains(&a.address(), &addr(1)));
        assert!(a.table().contains(&b.address(), &addr(2)));
        assert_eq!(b.poll_event(), Some(Event::Joined { contacts: 1 }));
    }

    #[test]
    fn silent_bootstrap_reports_failure_and_retries() {
        let now = Instant::now();
        let mut b = node(2, now);
        b.bootstrap(now, vec![addr(1)]);
        assert_eq!(b.poll_transmit().map(|t| t.to), Some(addr(1)));
        let t1 = b.poll_timeout().unwrap();
        b.handle_timeout(t1);
        assert_eq!(b.poll_transmit().map(|t| t.to), Some(addr(1)));
        let t2 = b.poll_timeout().unwrap();
        b.handle_timeout(t2);
        match b.poll_event() {
            Some(Event::BootstrapFailed {
                tries, retry_in, ..
            }) => {
                assert_eq!(tries, 2);
                assert_eq!(retry_in, Config::default().bootstrap_retry);
            }
            other => panic!("unexpected {other:?}"),
        }
        let retry = b.poll_timeout().unwrap();
        assert!(retry >= t2 + Config::default().bootstrap_retry - Duration::from_secs(1));
        b.handle_timeout(t2 + Config::default().bootstrap_retry);
        assert_eq!(b.poll_transmit().map(|t| t.to), Some(addr(1)));
    }

    #[test]
    fn a_forged_proof_keeps_a_contact_out() {
        let now = Instant::now();
        let mut a = node(1, now);
        let mut b = node(2, now);
        let evil = Identity::from_seed([9; 32]);
        b.bootstrap(now, vec![addr(1)]);
        let ping = b.poll_transmit().unwrap();
        let req = wire::decode(&ping.payload, 8).unwrap();
        // Answer with a's address but the wrong key.
        let forged = wire::encode(&Packet {
            sender: a.address(),
            txid: req.txid,
            challenge: None,
            proof: Some(Proof {
                key: evil.public_key(),
                signature: evil.sign(&proof_message(&req.challenge.unwrap())),
            }),
            body: Body::Pong { observed: None },
        });
        b.handle_datagram(now, addr(1), &forged);
        assert!(b.table().is_empty());
        assert_eq!(b.stats().dropped.get("bad_signature"), Some(&1));
        // The genuine answer still counts.
        a.handle_datagram(now, addr(2), &ping.payload);
        let pong = a.poll_transmit().unwrap();
        b.handle_datagram(now, addr(1), &pong.payload);
        assert!(b.table().contains(&a.address(), &addr(1)));
    }

    #[test]
    fn lookup_with_empty_table_finishes_at_once() {
        let now = Instant::now();
        let mut a = node(1, now);
        let id = a.lookup(now, Address([5; 20])).unwrap();
        match a.poll_event() {
            Some(Event::LookupDone { id: got, result }) => {
                assert_eq!(got, id);
                assert!(result.closest.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
