//! The sans-IO core: one overlay node with no socket, clock, disk, thread or
//! randomness of its own.
//!
//! `Node` coordinates parts that own their state: the routing table
//! ([`crate::routing`]), the request layer (`rpc`), lookups
//! ([`crate::lookup`]), the relay ([`crate::relay`]) and one timer table.
//!
//! Contract (as in quinn-proto and str0m): feed inputs with
//! [`Node::handle_datagram`], [`Node::handle_timeout`] and the command
//! methods, always passing the monotonic time and the wall-clock time. After
//! each input drain [`Node::poll_write`] (make each batch durable, then call
//! [`Node::handle_written`]), [`Node::poll_transmit`] and
//! [`Node::poll_event`] until they return `None`, then sleep until
//! [`Node::poll_timeout`] or the next datagram.
//!
//! Durability is an output like a datagram: a reply or event produced while
//! records are waiting to be made durable is held back until the driver
//! reports the batch holding them durable, so nothing is confirmed (a
//! `Stored`, an `Acknowledged`, a shown message) that a crash could undo.

mod catchup;
mod latency;
mod peers;
mod rpc;
mod timers;
mod twin;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

use crate::address::Address;
use crate::config::{Config, ConfigError};
use crate::drops::DropReason;
pub use crate::event::Event;
use crate::identity::{self, proof_message, Identity};
use crate::limits::{Rate, TokenBuckets};
pub use crate::lookup::LookupId;
use crate::lookup::{Lookup, LookupResult};
use crate::message::{IdentityRecord, MessageId};
use crate::records::{RecordStore, Refusal, Tokens};
use crate::relay::{Action, Ctx, OutboxState, Relay, RelayRequest, SendError};
pub use crate::relay::{CancelError, CancelReport, HeldRow, TombstoneRow};
use crate::routing::{prefix, Insert, Prefix, RoutingTable, TablePolicy};
use crate::wire::records::{self, BatchId, Op, Snapshot, Table, WriteBatch};
use crate::wire::{self, Body, Contact, Packet, Proof, CHALLENGE_LEN, TOKEN_LEN};
use catchup::CatchUp;
pub use latency::{LatencyHistogram, LATENCY_BUCKETS};
use peers::{LookupCache, TableView, Unproven, VerifiedCache};
use rpc::{Deadline, Purpose, Rpc, Rpcs, TxId};
use timers::{Timer, TimerTable};

/// Room kept in the drained transmit queue (a receive batch's answers).
const TRANSMITS_KEPT: usize = 8;
/// Largest number of undrained transmits or status events kept; beyond it
/// the newest is dropped and counted (`tx_queue_full`, `event_queue_full`).
/// Received messages are never dropped: they wait in the inbox.
pub const MAX_QUEUE: usize = 8192;

/// A datagram the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// The encoded packet (at most `MAX_DATAGRAM` bytes).
    pub payload: Bytes,
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeError {
    /// `max_lookups` lookups are already running.
    #[error("too many lookups in progress ({0}); try again shortly")]
    TooManyLookups(usize),
    /// The message could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The configuration cannot run a node.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
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
    /// Answers that came after their request had failed, and were used.
    pub late_answers: u64,
    /// Requests past their soft timeout (a lookup stopped waiting for them).
    pub soft_timeouts: u64,
    /// Answers that came after the soft timeout (the peer was slow, not gone).
    pub slow_answers: u64,
    /// `Store` requests sent (message transfers).
    pub stores_sent: u64,
    /// `Acknowledge` requests sent (ack transfers).
    pub acks_sent: u64,
    /// `Offer` requests sent (ids only, before a `Store`).
    pub offers_sent: u64,
    /// Write batches emitted.
    pub write_batches: u64,
    /// Inputs dropped or refused, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Round trips of answered requests (those not retransmitted: an
    /// answer to a retransmission cannot be timed), in fixed buckets.
    pub rpc_latency: LatencyHistogram,
}

impl Stats {
    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Percentiles (0 to 100) of the answered requests' round trips, at
    /// most √2 above the true value; `None` for each before any answer.
    pub fn rpc_latency_percentiles(&self, ps: &[f64]) -> Vec<Option<Duration>> {
        self.rpc_latency.percentiles(ps)
    }

    /// Requests answered and timed (the histogram's count).
    pub fn rpc_answered(&self) -> u64 {
        self.rpc_latency.count()
    }

    /// Drops counted under `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LookupKind {
    User,
    Join,
    Refresh,
    /// For the relay: messages or acks wait for the target's neighbourhood.
    Relay(Address),
    /// For the relay: messages wait for the target's identity record.
    Key(Address),
    /// Our own neighbourhood, to publish our identity record there.
    Publish,
}

impl LookupKind {
    /// Whether its steps ask for the target's identity record (and write
    /// tokens): the join and publish lookups of our own address, and key
    /// lookups.
    fn wants_record(self) -> bool {
        matches!(
            self,
            LookupKind::Join | LookupKind::Publish | LookupKind::Key(_)
        )
    }
}

/// Publishing our identity record at the k nodes closest to us.
#[derive(Clone, Debug, Default)]
struct Publishing {
    /// When the last finished publish lookup started (at a maintenance
    /// tick, or at the join): the next tick `refresh_check` on is then
    /// at least that far from it.
    last: Option<Instant>,
    /// When the running publish lookup started (`None`: none runs).
    started: Option<Instant>,
    /// Nodes that confirmed keeping it since.
    confirmed: BTreeSet<Address>,
    /// The record we give out now (refreshed at each publish).
    record: Option<IdentityRecord>,
}

/// How long to wait before looking again for a key not found.
#[derive(Clone, Copy, Debug)]
struct KeyRetry {
    at: Instant,
    backoff: Duration,
}

#[derive(Clone, Debug, Default)]
struct Bootstrap {
    addrs: Vec<SocketAddr>,
    outstanding: usize,
    answered: bool,
    scheduled: bool,
    backoff: Duration,
}

/// An output held back until a write batch is durable.
#[derive(Clone, Debug)]
enum Gated {
    Transmit(Transmit),
    Event(Event),
}

/// One contact of the routing table, as `/peers` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReport {
    /// Its bucket (the length of the prefix it shares with us).
    pub bucket: usize,
    /// Who and where.
    pub contact: Contact,
    /// Since it last answered us or sent us a request.
    pub last_seen: Duration,
    /// Smoothed round trip of its answers; `None` until one was timed.
    pub rtt: Option<Duration>,
    /// Requests to it that failed in a row (it is dropped at
    /// `max_failures`).
    pub failures: u32,
}

/// Milliseconds since the Unix epoch at `t` (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Size of a challenge `Ping` to a requester (padded, so that its `Pong`
/// with proof fits the requester's own limit, even over IPV6), counted
/// against the requester's allowance before it is sent.
const VERIFY_PING_MAX: usize = wire::PADDED_PING;

/// Wall-clock time the simulator and the fuzzers start at (2023-11-14,
/// ms since the Unix epoch).
pub const DEFAULT_EPOCH_MS: u64 = 1_700_000_000_000;

/// Call a relay method with a [`Ctx`] built from the node's parts (the
/// fields are borrowed separately, so the relay can be borrowed mutably).
macro_rules! with_relay {
    ($node:ident, $now:expr, |$relay:ident, $ctx:ident| $body:expr) => {{
        let view = TableView {
            table: &$node.table,
            verified: &$node.verified,
        };
        let $ctx = Ctx {
            now: $now,
            wall_ms: $node.wall_ms,
            peers: &view,
            identity: &$node.identity,
        };
        let $relay = &mut $node.relay;
        $body
    }};
}

/// One overlay node.
pub struct Node {
    config: Config,
    identity: Identity,
    me: Address,
    rng: StdRng,
    table: RoutingTable,
    rpcs: Rpcs,
    timers: TimerTable<Timer>,
    lookups: BTreeMap<LookupId, (Lookup, LookupKind)>,
    relay_lookups: BTreeMap<Address, LookupId>,
    lookup_cache: LookupCache,
    next_lookup: LookupId,
    verified: VerifiedCache,
    unproven: Unproven,
    /// Requests per second per source network.
    requests: TokenBuckets<Prefix>,
    relay: Relay,
    /// Identity records kept for others.
    records: RecordStore,
    /// Write tokens we hand out.
    tokens: Tokens,
    /// Write tokens handed to us by the steps of record lookups.
    lookup_tokens: BTreeMap<LookupId, BTreeMap<Address, (Contact, [u8; TOKEN_LEN])>>,
    /// Running key lookups, by the address whose key they look for.
    key_lookups: BTreeMap<Address, LookupId>,
    /// When to look again for keys not found.
    key_retry: BTreeMap<Address, KeyRetry>,
    publishing: Publishing,
    boot: Bootstrap,
    stats: Stats,
    /// Time of the current (or last) input.
    now: Instant,
    wall_ms: u64,
    sink: Vec<(SocketAddr, Bytes)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    gated: VecDeque<(BatchId, Gated)>,
    /// Number of the next write batch.
    next_batch: BatchId,
    /// Highest batch reported durable.
    written: BatchId,
    /// Emitted batches not yet reported durable (normally at most one).
    in_flight: BTreeMap<BatchId, Vec<Op>>,
    contacts_dirty: bool,
    /// Fingerprint of the contacts last saved, and when (see
    /// [`Node::maintenance`]).
    contacts_saved: (u64, Option<Instant>),
    /// How many more received messages the front end will take.
    message_credit: usize,
    /// Received messages kept back after a start or rejoin, to be shown
    /// together in written order.
    catchup: CatchUp,
    /// Signs that our identity runs elsewhere too.
    twins: twin::Twins,
}

/// Where the outputs of one input start, to hold them back if needed.
struct Mark {
    transmits: usize,
    events: usize,
}

impl Node {
    /// A node with `identity`, whose randomness all comes from `seed`.
    pub fn new(
        config: Config,
        identity: Identity,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let me = identity.address();
        let mut rng = StdRng::from_seed(seed);
        let verified_key: [u8; 16] = rng.gen();
        let table = RoutingTable::new(me, TablePolicy::from_config(&config), now);
        let mut timers = TimerTable::default();
        timers.set(Timer::Maintenance, now + config.refresh_check);
        let requests = TokenBuckets::new(
            Rate {
                per_sec: f64::from(config.requests_per_sec),
                burst: f64::from(config.requests_burst),
            },
            4096,
        );
        Ok(Node {
            boot: Bootstrap {
                backoff: config.bootstrap_retry,
                ..Bootstrap::default()
            },
            rpcs: Rpcs::new(&config),
            relay: Relay::new(&config, me, rng.gen()),
            records: RecordStore::new(
                me,
                config.max_records,
                config.max_record_ttl,
                identity.signatures(),
            ),
            tokens: Tokens::new(rng.gen(), now, config.token_rotation),
            lookup_tokens: BTreeMap::new(),
            key_lookups: BTreeMap::new(),
            key_retry: BTreeMap::new(),
            publishing: Publishing::default(),
            config,
            identity,
            me,
            rng,
            table,
            timers,
            lookups: BTreeMap::new(),
            relay_lookups: BTreeMap::new(),
            lookup_cache: LookupCache::default(),
            next_lookup: 1,
            verified: VerifiedCache::new(verified_key),
            unproven: Unproven::default(),
            requests,
            stats: Stats::default(),
            now,
            wall_ms: DEFAULT_EPOCH_MS,
            sink: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            gated: VecDeque::new(),
            next_batch: 1,
            written: 0,
            in_flight: BTreeMap::new(),
            contacts_dirty: false,
            contacts_saved: (0, None),
            message_credit: usize::MAX,
            catchup: CatchUp::default(),
            twins: twin::Twins::default(),
        })
    }

    /// This node's address.
    pub fn address(&self) -> Address {
        self.me
    }

    /// This node's public key (its address is the SHA-1 of it).
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.identity.public_key()
    }

    /// The identity record this node keeps for `a`, if any (inspection).
    pub fn record_for(&self, a: &Address) -> Option<IdentityRecord> {
        self.records.get(a, self.wall_ms).copied()
    }

    /// Identity records kept for others.
    pub fn records_kept(&self) -> usize {
        self.records.len()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table, for inspection.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The relay, for inspection.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// One row per routing-table contact, bucket by bucket (least
    /// recently seen first in each): for `/peers`.
    pub fn peer_rows(&self, now: Instant) -> Vec<PeerReport> {
        let now = now.max(self.now);
        self.table
            .buckets()
            .flat_map(|(i, b)| {
                b.entries().iter().map(move |e| PeerReport {
                    bucket: i,
                    contact: e.contact,
                    last_seen: now.saturating_duration_since(e.last_seen),
                    rtt: e.rtt,
                    failures: e.failures,
                })
            })
            .collect()
    }

    /// Lookups in progress.
    pub fn lookups_running(&self) -> usize {
        self.lookups.len()
    }

    /// Requests open and waiting for a slot.
    pub fn requests(&self) -> (usize, usize) {
        (self.rpcs.open_len(), self.rpcs.queued_len())
    }

    /// Next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.transmits.capacity() > TRANSMITS_KEPT {
            // A burst's queue is given back once drained: thousands of
            // simulated nodes would otherwise each keep their peak.
            self.transmits.shrink_to(TRANSMITS_KEPT);
        }
        t
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    // ---- inputs and their bookkeeping ---------------------------------

    fn begin(&mut self, now: Instant, wall: SystemTime) -> Mark {
        // Time never runs backwards inside the core, whatever the caller.
        self.now = self.now.max(now);
        self.wall_ms = unix_ms(wall);
        self.twins.start(self.wall_ms);
        Mark {
            transmits: self.transmits.len(),
            events: self.events.len(),
        }
    }

    /// End of an input: hand out what the front end can take, then hold
    /// back this input's outputs if any change is not yet durable.
    fn finish(&mut self, mark: Mark) {
        let batch = self.catchup_check();
        if self.message_credit > 0 && self.relay.unshown_count() > 0 && !self.catchup.is_open() {
            // Anything queued first, so that `CatchUp` precedes the batch.
            self.pump();
            let n = self
                .relay
                .release_messages(&self.identity, self.message_credit);
            self.message_credit -= n;
            if batch && n > 0 {
                self.emit(Event::CatchUp { count: n });
            }
            self.pump();
        }
        if self.relay.wants_pull() {
            let near = self.table.closest(&self.me, self.config.k.get());
            self.relay.pull(&near);
            self.pump();
        }
        let barrier = if self.relay.has_writes() {
            Some(self.next_batch)
        } else if self.next_batch - 1 > self.written {
            Some(self.next_batch - 1)
        } else {
            None
        };
        if let Some(b) = barrier {
            let tx: Vec<Transmit> = self.transmits.drain(mark.transmits..).collect();
            let ev: Vec<Event> = self.events.drain(mark.events..).collect();
            for t in tx {
                // While the disk fails, outputs pile up here: bounded like
                // the transmit queue (a dropped reply is retried by its
                // requester; received messages are never dropped).
                if self.gated.len() >= 2 * MAX_QUEUE {
                    self.count_drop(DropReason::TxQueueFull);
                } else {
                    self.gated.push_back((b, Gated::Transmit(t)));
                }
            }
            for e in ev {
                let is_message = matches!(e, Event::MessageReceived { .. });
                if self.gated.len() >= 2 * MAX_QUEUE && !is_message {
                    self.count_drop(DropReason::EventQueueFull);
                } else {
                    self.gated.push_back((b, Gated::Event(e)));
                }
            }
        }
    }

    /// Count arrivals in the catch-up window and close it if it is due
    /// (true: it just closed, what is released now is its batch), else
    /// set its timer.
    fn catchup_check(&mut self) -> bool {
        if !self.catchup.is_open() {
            return false;
        }
        let (quiet, max) = (self.config.catchup_quiet, self.config.catchup_max);
        // Due before this input's arrivals are counted: no timer runs while
        // nothing is kept back, so the window closed when it fell due and
        // what arrives now is a later message, handed out at once (a batch
        // only if something was kept back).
        if self.catchup.due(self.now, quiet, max) {
            let kept = self.catchup.kept_back();
            self.catchup.close();
            self.timers.cancel(&Timer::CatchUp);
            return kept;
        }
        self.catchup.observe(self.now, self.relay.unshown_count());
        if self.catchup.due(self.now, quiet, max) {
            self.catchup.close();
            self.timers.cancel(&Timer::CatchUp);
            return true;
        }
        // A timer only while something is kept back: with nothing waiting,
        // the next arrival's own input closes the window if it is due.
        match self.catchup.deadline(quiet, max) {
            Some(at) if self.relay.unshown_count() > 0 => self.timers.set(Timer::CatchUp, at),
            _ => self.timers.cancel(&Timer::CatchUp),
        }
        false
    }

    /// Open the catch-up window (see [`Config::catchup_quiet`]).
    fn open_catchup(&mut self) {
        self.catchup.open(self.now, self.relay.unshown_count());
    }

    /// Whether received messages are being kept back for now, to be shown
    /// together in written order once the catch-up window closes (after a
    /// start or a rejoin: see [`Config::catchup_quiet`]).
    pub fn catching_up(&self) -> bool {
        self.catchup.is_open()
    }

    /// Records to make durable, all or nothing, before the outputs waiting
    /// on them are released; `None` when nothing changed.
    pub fn poll_write(&mut self) -> Option<WriteBatch> {
        if !self.relay.has_writes() && !self.contacts_dirty {
            return None;
        }
        let mut ops = Vec::new();
        self.relay.take_writes(&mut ops);
        if std::mem::take(&mut self.contacts_dirty) {
            let contacts: Vec<Contact> = self
                .table
                .buckets()
                .flat_map(|(_, b)| b.entries().iter().map(|e| e.contact))
                .collect();
            ops.push(Op::Put(
                Table::Meta,
                records::CONTACTS_KEY.to_vec(),
                records::encode_contacts(&contacts),
            ));
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.stats.write_batches += 1;
        self.in_flight.insert(id, ops.clone());
        Some(WriteBatch { id, ops })
    }

    /// The driver made batch `id` (and every earlier one) durable: release
    /// the replies and events that waited for it.
    pub fn handle_written(&mut self, id: BatchId) {
        self.written = self.written.max(id);
        self.in_flight.retain(|b, _| *b > id);
        let written = self.written;
        let mut keep = VecDeque::with_capacity(self.gated.len());
        for (b, g) in std::mem::take(&mut self.gated) {
            if b > written {
                keep.push_back((b, g));
                continue;
            }
            match g {
                Gated::Transmit(t) if self.transmits.len() < MAX_QUEUE => {
                    self.transmits.push_back(t)
                }
                Gated::Transmit(_) => self.count_drop(DropReason::TxQueueFull),
                Gated::Event(e) => self.emit(e),
            }
        }
        self.gated = keep;
    }

    /// The driver could not make batch `id` durable: its records will be
    /// written again in the next batch, and what waited for it waits on.
    pub fn handle_write_failed(&mut self, id: BatchId) {
        self.count_drop(DropReason::StoreError);
        let Some(ops) = self.in_flight.remove(&id) else {
            return;
        };
        if ops.iter().any(|o| o.key().0 == Table::Meta) {
            self.contacts_dirty = true;
        }
        self.relay.rewrite(ops);
        let next = self.next_batch;
        for (b, _) in self.gated.iter_mut() {
            if *b == id {
                *b = next;
            }
        }
    }

    /// Rebuild held messages, acks, tombstones, outbox and inbox from what
    /// the driver stored; their retries resume at once and unshown messages
    /// are shown. Returns the saved contacts' endpoints, to rejoin through.
    pub fn restore(
        &mut self,
        now: Instant,
        wall: SystemTime,
        snapshot: &Snapshot,
    ) -> Vec<SocketAddr> {
        let mark = self.begin(now, wall);
        self.relay.restore(self.now, self.wall_ms, snapshot);
        let mut contacts: Vec<SocketAddr> = snapshot
            .get(&Table::Meta)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k[..] == *records::CONTACTS_KEY)
            .filter_map(|(_, v)| records::decode_contacts(v).ok())
            .flatten()
            .map(|c| c.addr)
            .collect();
        contacts.sort();
        contacts.dedup();
        if !contacts.is_empty() {
            // The caller rejoins through them: what arrives meanwhile is
            // shown together, in order (and what the store held with it).
            self.open_catchup();
        }
        self.pump();
        self.finish(mark);
        contacts
    }

    /// Mark the routing table to be saved; call before exiting, then drain
    /// [`Node::poll_write`].
    pub fn shutdown(&mut self) {
        self.contacts_dirty = true;
    }

    /// Let the front end take up to `n` more received messages (the
    /// default is unlimited). Messages beyond the credit wait, stored, in
    /// the inbox. Each is handed out once per run; the front end records
    /// what it showed (`store::shown`), and what it did not is handed out
    /// again after a restart.
    pub fn set_message_credit(&mut self, n: usize) {
        let mark = Mark {
            transmits: self.transmits.len(),
            events: self.events.len(),
        };
        self.message_credit = n;
        self.finish(mark);
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        *self.stats.dropped.entry(reason).or_insert(0) += 1;
    }

    fn emit(&mut self, event: Event) {
        let is_message = matches!(event, Event::MessageReceived { .. });
        if self.events.len() >= MAX_QUEUE && !is_message {
            self.count_drop(DropReason::EventQueueFull);
            return;
        }
        self.events.push_back(event);
    }

    fn transmit(&mut self, to: SocketAddr, payload: Bytes) {
        if self.transmits.len() >= MAX_QUEUE {
            self.count_drop(DropReason::TxQueueFull);
            return;
        }
        self.stats.datagrams_out += 1;
        self.transmits.push_back(Transmit { to, payload });
    }

    fn flush_sink(&mut self) {
        for (to, payload) in std::mem::take(&mut self.sink) {
            self.transmit(to, payload);
        }
    }

    /// Carry out what the relay asked for.
    fn pump(&mut self) {
        let now = self.now;
        while let Some(action) = self.relay.poll_action() {
            match action {
                Action::Request {
                    to,
                    body,
                    challenge,
                    purpose,
                    own,
                } => {
                    let pull = purpose == RelayRequest::Pull;
                    match purpose {
                        RelayRequest::Store(_) => self.stats.stores_sent += 1,
                        RelayRequest::Acknowledge(_) => self.stats.acks_sent += 1,
                        RelayRequest::Offer(_) => self.stats.offers_sent += 1,
                        RelayRequest::Pull => {}
                    }
                    let sent = self.request(
                        now,
                        to.addr,
                        Some(to.id),
                        body,
                        challenge,
                        Purpose::Relay(purpose, own),
                    );
                    if sent && pull {
                        self.catchup.pull_sent();
                    }
                    if !sent {
                        match purpose {
                            RelayRequest::Store(id) | RelayRequest::Offer(id) => {
                                self.relay.store_failed(&to.id, id, true)
                            }
                            RelayRequest::Acknowledge(id) => {
                                self.relay.ack_failed(&to.id, id, true)
                            }
                            RelayRequest::Pull => {}
                        }
                    }
                }
                Action::Lookup(target) => self.relay_lookup(now, target),
                Action::Event(e) => self.emit(e),
                Action::Schedule(key, at) => self.timers.set(Timer::Relay(key), at),
                Action::Cancel(key) => self.timers.cancel(&Timer::Relay(key)),
                Action::Count(reason) => self.count_drop(reason),
                Action::FindKey(address) => self.find_key(now, address),
            }
        }
    }

    // ---- commands ---------------------------------------------------

    /// Join the overlay through `addrs`: ping each with a challenge; the
    /// first to answer enters the table and a lookup of our own address
    /// follows. Rounds repeat with backoff while nobody answers.
    pub fn bootstrap(&mut self, now: Instant, wall: SystemTime, addrs: Vec<SocketAddr>) {
        let mark = self.begin(now, wall);
        if !addrs.is_empty() {
            self.open_catchup();
        }
        self.boot = Bootstrap {
            addrs,
            backoff: self.config.bootstrap_retry,
            ..Bootstrap::default()
        };
        self.bootstrap_round(self.now);
        self.finish(mark);
    }

    fn bootstrap_round(&mut self, now: Instant) {
        self.boot.scheduled = false;
        self.timers.cancel(&Timer::Bootstrap);
        self.boot.answered = false;
        self.boot.outstanding = 0;
        for addr in self.boot.addrs.clone() {
            if self.request(now, addr, None, Body::Ping, true, Purpose::Bootstrap) {
                self.boot.outstanding += 1;
            }
        }
        if self.boot.outstanding == 0 && !self.boot.addrs.is_empty() {
            self.bootstrap_failed(now);
        }
    }

    fn bootstrap_failed(&mut self, now: Instant) {
        let retry_in = self.boot.backoff;
        self.boot.scheduled = true;
        self.timers.set(Timer::Bootstrap, now + retry_in);
        self.boot.backoff = (retry_in * 2).min(self.config.bootstrap_retry_max);
        self.emit(Event::BootstrapFailed {
            addrs: self.boot.addrs.clone(),
            tries: self.config.rpc_retries + 1,
            retry_in,
        });
    }

    /// Start an iterative lookup of `target`; its result arrives as
    /// [`Event::LookupDone`].
    pub fn lookup(
        &mut self,
        now: Instant,
        wall: SystemTime,
        target: Address,
    ) -> Result<LookupId, NodeError> {
        let mark = self.begin(now, wall);
        let r = self.start_lookup(self.now, target, LookupKind::User);
        self.finish(mark);
        r
    }

    /// Send `body` to `to`: sign it, keep it in the outbox, look up the
    /// recipient's neighbourhood and place copies there.
    pub fn send(
        &mut self,
        now: Instant,
        wall: SystemTime,
        to: Address,
        body: Bytes,
    ) -> Result<MessageId, NodeError> {
        let mark = self.begin(now, wall);
        let now = self.now;
        let r = with_relay!(self, now, |relay, ctx| relay.send(&ctx, to, body));
        self.pump();
        self.finish(mark);
        Ok(r?)
    }

    /// Withdraw our own message `id` (as [`Node::send`] returned it) that
    /// is not yet delivered: forget its draft, or its outbox entry and our
    /// own held copy, and stop relaying it. The removal is written with the
    /// next batch ([`Node::poll_write`]), so it does not come back after a
    /// restart. Copies already placed stay with their relays until their
    /// TTL or budget runs out (a node cannot recall what it does not hold),
    /// so the recipient may still receive it; the report says how many
    /// relays are known to hold one. No `MessageSent`, `Delivered` or
    /// `MessageExpired` follows for it; an ack that still arrives is kept
    /// as a tombstone, silently.
    pub fn cancel(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: MessageId,
    ) -> Result<CancelReport, CancelError> {
        let mark = self.begin(now, wall);
        let r = self.relay.cancel(id);
        self.pump();
        self.finish(mark);
        r
    }

    /// Every message this node holds (for others, and our own undelivered
    /// ones flagged `own`), soonest to expire first: for `/held`.
    pub fn held_report(&self, now: Instant, wall: SystemTime) -> Vec<HeldRow> {
        self.relay.held_report(now.max(self.now), unix_ms(wall))
    }

    /// Every ack tombstone kept, soonest forgotten first: for
    /// `/tombstones`.
    pub fn tombstones_report(&self, wall: SystemTime) -> Vec<TombstoneRow> {
        self.relay.tombstones_report(unix_ms(wall))
    }

    /// Tell the node `key` belongs to the address it hashes to (the user
    /// typed it, or read it from a contact card): messages to that address
    /// can be sealed at once.
    pub fn learn_key(&mut self, now: Instant, wall: SystemTime, key: ed25519_dalek::VerifyingKey) {
        let mark = self.begin(now, wall);
        let now = self.now;
        with_relay!(self, now, |relay, ctx| relay.learn_key(&ctx, key));
        self.pump();
        self.finish(mark);
    }

    // ---- lookups ----------------------------------------------------

    fn start_lookup(
        &mut self,
        now: Instant,
        target: Address,
        kind: LookupKind,
    ) -> Result<LookupId, NodeError> {
        if self.lookups.len() >= self.config.max_lookups.get() {
            return Err(NodeError::TooManyLookups(self.lookups.len()));
        }
        self.table.mark_activity(&target, now);
        let k = self.config.k.get();
        let seeds = self.table.closest(&target, self.config.lookup_seeds);
        let lookup = Lookup::new(
            target,
            self.me,
            seeds,
            k,
            self.config.alpha.get(),
            self.config.lookup_candidates,
        );
        let id = self.next_lookup;
        self.next_lookup += 1;
        let mut lookup = lookup;
        lookup.widen(self.config.lookup_widen);
        if kind == LookupKind::User {
            lookup.record_path(self.config.lookup_path_max);
        }
        self.lookups.insert(id, (lookup, kind));
        match kind {
            LookupKind::Relay(t) => {
                self.relay_lookups.insert(t, id);
            }
            LookupKind::Key(t) => {
                self.key_lookups.insert(t, id);
            }
            LookupKind::Publish => {
                self.publishing.started = Some(now);
            }
            _ => {}
        }
        self.drive_lookup(now, id);
        Ok(id)
    }

    /// The relay wants `target`'s neighbourhood: a fresh result, a running
    /// lookup, a new one, or (at the lookup limit) the routing table.
    fn relay_lookup(&mut self, now: Instant, target: Address) {
        if let Some(closest) = self
            .lookup_cache
            .get(&target, now, self.config.lookup_cache_ttl)
            .map(<[Contact]>::to_vec)
        {
            with_relay!(self, now, |relay, ctx| relay
                .lookup_done(&ctx, target, &closest));
            return;
        }
        if self.relay_lookups.contains_key(&target) {
            return;
        }
        if self
            .start_lookup(now, target, LookupKind::Relay(target))
            .is_err()
        {
            with_relay!(self, now, |relay, ctx| relay.lookup_done(&ctx, target, &[]));
        }
    }

    fn drive_lookup(&mut self, now: Instant, id: LookupId) {
        loop {
            let Some((lookup, kind)) = self.lookups.get_mut(&id) else {
                return;
            };
            let target = lookup.target();
            let queries = lookup.next_queries();
            if queries.is_empty() {
                break;
            }
            let (body, purpose) = if kind.wants_record() {
                (Body::FindRecord { target }, Purpose::FindRecord(id))
            } else {
                (Body::FindNode { target }, Purpose::FindNode(id))
            };
            // A side query asks for another target (see `Lookup::query_target`),
            // always as a FindNode.
            let queries: Vec<(Contact, Body, Purpose)> = queries
                .into_iter()
                .map(|c| match lookup.query_target(&c.id) {
                    t if t == target => (c, body.clone(), purpose),
                    t => (c, Body::FindNode { target: t }, Purpose::FindNode(id)),
                })
                .collect();
            let mut refused = Vec::new();
            for (c, body, purpose) in queries {
                let challenge = self.needs_proof(&c);
                let sent = self.request(now, c.addr, Some(c.id), body, challenge, purpose);
                if !sent {
                    refused.push(c.id);
                }
            }
            if refused.is_empty() {
                break;
            }
            if let Some((lookup, _)) = self.lookups.get_mut(&id) {
                for r in refused {
                    lookup.on_refused(&r);
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
        let k = self.config.k.get();
        let tokens = self.lookup_tokens.remove(&id).unwrap_or_default();
        match kind {
            LookupKind::User => self.emit(Event::LookupDone { id, result: r }),
            LookupKind::Refresh => {}
            LookupKind::Key(target) => self.key_not_found(now, target),
            LookupKind::Publish => self.put_record(now, &r.closest, &tokens),
            LookupKind::Relay(target) => {
                self.relay_lookups.remove(&target);
                self.lookup_cache
                    .insert(target, now, r.closest.clone(), self.config.lookup_cache);
                with_relay!(self, now, |relay, ctx| relay
                    .lookup_done(&ctx, target, &r.closest));
                self.pump();
            }
            LookupKind::Join => {
                self.emit(Event::Joined {
                    contacts: self.table.len(),
                });
                // Save the table at once: a node killed before its first
                // scheduled snapshot must still rejoin through its contacts.
                self.contacts_dirty = true;
                self.contacts_saved = (self.contacts_fingerprint(), Some(now));
                // Tell our neighbourhood our key, and look for the keys our
                // queued messages wait for.
                self.put_record(now, &r.closest, &tokens);
                self.retry_keys(now, true);
                // Ask our neighbourhood for messages and acks held for us,
                // keeping back what arrives until the answers are in.
                self.open_catchup();
                let near = self.table.closest(&self.me, k);
                self.relay.pull(&near);
                self.pump();
                // Fill the buckets farther than our nearest neighbour.
                let Some(nearest) = self.table.nearest_bucket() else {
                    return;
                };
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

    // ---- identity records --------------------------------------------

    /// The relay wants `target`'s key: look for its identity record, unless
    /// a lookup for it already runs.
    fn find_key(&mut self, now: Instant, target: Address) {
        if self.key_lookups.contains_key(&target) {
            return;
        }
        // At the lookup limit, the next maintenance tries again.
        let _ = self.start_lookup(now, target, LookupKind::Key(target));
    }

    /// A key lookup ended without a record: if messages still wait for
    /// it, say so and try again later, backing off.
    fn key_not_found(&mut self, now: Instant, target: Address) {
        self.key_lookups.remove(&target);
        let queued = self.relay.drafts_for(&target);
        if queued == 0 {
            self.key_retry.remove(&target);
            return;
        }
        let backoff = self
            .key_retry
            .get(&target)
            .map_or(self.config.key_retry, |r| {
                (r.backoff * 2).min(self.config.key_retry_max)
            });
        self.key_retry.insert(
            target,
            KeyRetry {
                at: now + backoff,
                backoff,
            },
        );
        self.emit(Event::KeyNotFound {
            to: target,
            queued,
            retry_in: backoff,
        });
    }

    /// Look again for the keys queued messages wait for: those whose retry
    /// is due, or all of them if `now_all` (we just joined).
    fn retry_keys(&mut self, now: Instant, now_all: bool) {
        let wanted = self.relay.wanted_keys();
        self.key_retry
            .retain(|a, _| wanted.binary_search(a).is_ok());
        for a in wanted {
            if self.lookups.len() + 1 >= self.config.max_lookups.get() {
                break;
            }
            let waiting = matches!(self.key_retry.get(&a), Some(r) if r.at > now);
            let due = now_all || !waiting;
            if due {
                self.find_key(now, a);
            }
        }
    }

    /// A record arrived in an answer to a step of lookup `id`: if it is
    /// the target's and checks, the key is learned (and a key lookup ends).
    fn record_found(&mut self, now: Instant, id: LookupId, record: IdentityRecord) {
        let Some((lookup, kind)) = self.lookups.get(&id) else {
            return;
        };
        let (target, kind) = (lookup.target(), *kind);
        if record.address() != target || !self.records.valid(&record, self.wall_ms) {
            self.count_drop(DropReason::BadRecord);
            return;
        }
        if target == self.me {
            let every = self.config.twin_warning_interval;
            if self.twins.own_record(record.seq, now, every) {
                self.emit(Event::SameIdentityElsewhere { endpoint: None });
            }
        }
        let key = record.key;
        with_relay!(self, now, |relay, ctx| relay.learn_key(&ctx, key));
        if let LookupKind::Key(t) = kind {
            self.lookups.remove(&id);
            self.lookup_tokens.remove(&id);
            self.key_lookups.remove(&t);
            self.key_retry.remove(&t);
        }
    }

    /// Tell the node the endpoint its socket is bound to, so that a
    /// datagram from our own address at another endpoint can be told from
    /// one of our own (see [`Event::SameIdentityElsewhere`]).
    pub fn set_local_addr(&mut self, addr: SocketAddr) {
        self.twins.set_local(addr);
    }

    /// Our identity record as we give it out now.
    fn own_record(&mut self) -> IdentityRecord {
        let wall = self.wall_ms;
        let fresh_until = wall.saturating_add(self.config.record_republish.as_millis() as u64);
        match self.publishing.record {
            Some(r) if r.expires_at_ms > fresh_until => r,
            _ => {
                let ttl = self.config.record_ttl.as_millis() as u64;
                let r = IdentityRecord::sign(&self.identity, wall, wall.saturating_add(ttl));
                self.twins.signed(r.seq);
                self.publishing.record = Some(r);
                r
            }
        }
    }

    /// Store our record at the closest nodes of a lookup of our address
    /// that gave us a write token.
    fn put_record(
        &mut self,
        now: Instant,
        closest: &[Contact],
        tokens: &BTreeMap<Address, (Contact, [u8; TOKEN_LEN])>,
    ) {
        self.publishing.last = Some(self.publishing.started.take().unwrap_or(now));
        self.publishing.confirmed.clear();
        self.publishing.record = None;
        let record = self.own_record();
        for c in closest {
            let Some((at, token)) = tokens.get(&c.id) else {
                continue;
            };
            self.request(
                now,
                at.addr,
                Some(at.id),
                Body::PutRecord {
                    record: Box::new(record),
                    token: *token,
                },
                false,
                Purpose::PutRecord,
            );
        }
    }

    /// Publish our record if it is time: every `record_republish`, or
    /// sooner while fewer than k nodes confirmed keeping it and the table
    /// knows more.
    fn maybe_publish(&mut self, now: Instant) {
        if self.publishing.started.is_some() || self.table.is_empty() {
            return;
        }
        let k = self.config.k.get();
        let confirmed = self.publishing.confirmed.len();
        let due = match self.publishing.last {
            None => true,
            Some(t) => {
                let since = now.saturating_duration_since(t);
                since >= self.config.record_republish
                    || (confirmed < k
                        && self.table.len() > confirmed
                        && since >= self.config.refresh_check)
            }
        };
        if due {
            let me = self.me;
            let _ = self.start_lookup(now, me, LookupKind::Publish);
        }
    }

    fn needs_proof(&self, c: &Contact) -> bool {
        !self.table.contains(&c.id, &c.addr) && !self.verified.contains(c)
    }

    /// Send a request now, or queue it for a free slot. False if even the
    /// queue is full (counted as `rpc_limit`).
    fn request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        expect: Option<Address>,
        body: Body,
        challenge: bool,
        purpose: Purpose,
    ) -> bool {
        let mut txid: TxId = self.rng.gen();
        while self.rpcs.contains(txid) {
            txid = self.rng.gen();
        }
        let challenge = challenge.then(|| self.rng.gen::<[u8; CHALLENGE_LEN]>());
        // Padded, a request earns a full answer (and a challenge back) from
        // a peer that has not verified us yet, under its amplification
        // limit: a FindNode's answer can be 522 bytes, a bootstrap Pong and
        // the challenge that follows it 201.
        let pad = match (&body, purpose) {
            (Body::FindNode { .. }, _) => wire::PADDED_REQUEST,
            (Body::FindRecord { .. }, _) => wire::PADDED_FIND_RECORD,
            (Body::Ping, Purpose::Bootstrap | Purpose::Verify) | (Body::Pull, _) => {
                wire::PADDED_PING
            }
            _ => 0,
        };
        let packet = Packet {
            sender: self.me,
            txid,
            challenge,
            proof: None,
            body,
        };
        let payload = wire::encode_padded(&packet, pad);
        let rpc = Rpc::new(to, expect, challenge, payload, purpose);
        let ok = self
            .rpcs
            .submit(now, txid, rpc, &mut self.timers, &mut self.sink);
        self.flush_sink();
        if !ok {
            self.count_drop(DropReason::RpcLimit);
        }
        ok
    }

    // ---- datagrams --------------------------------------------------

    /// Feed one received datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let mark = self.begin(now, wall);
        self.datagram(from, bytes);
        self.pump();
        self.finish(mark);
    }

    fn datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        // IPv4 peers on a dual-stack socket appear as ::ffff:a.b.c.d.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let packet = match wire::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                debug!(%from, error = %e, "dropped datagram");
                self.count_drop(e.kind());
                return;
            }
        };
        if packet.sender == self.me {
            let every = self.config.twin_warning_interval;
            if self.twins.own_datagram(from, self.now, every) {
                self.emit(Event::SameIdentityElsewhere {
                    endpoint: Some(from),
                });
            }
            self.count_drop(DropReason::OwnAddress);
            return;
        }
        let now = self.now;
        if packet.body.is_request() {
            self.handle_request(now, from, packet, bytes.len());
        } else {
            self.handle_response(now, from, packet);
        }
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, packet: Packet, len: usize) {
        let contact = Contact {
            id: packet.sender,
            addr: from,
        };
        // No network may ask more than its share of us.
        if let Some(p) = prefix(&from, self.config.loopback) {
            if !self.requests.take(p, 1.0, now) {
                self.count_drop(DropReason::RateLimited);
                return;
            }
        }
        // An endpoint that has not proven it receives at its address may be
        // a spoofed one: we send it at most 3 times what it sent us.
        let proven = self.table.contains(&contact.id, &from) || self.verified.contains(&contact);
        if !proven {
            self.unproven.received(from, len, now);
        }
        let mut holding_for_it = false;
        let body = match packet.body {
            Body::Ping => Body::Pong {
                observed: Some(from),
            },
            Body::FindNode { target } => {
                let k = self.config.k.get();
                let mut contacts = self.table.closest(&target, k + 1);
                contacts.retain(|c| c.id != packet.sender);
                contacts.truncate(k);
                Body::Nodes { contacts }
            }
            Body::FindRecord { target } => {
                let k = self.config.k.get();
                let mut contacts = self.table.closest(&target, k + 1);
                contacts.retain(|c| c.id != packet.sender);
                contacts.truncate(k);
                let record = if target == self.me {
                    Some(self.own_record())
                } else {
                    self.records.get(&target, self.wall_ms).copied()
                };
                Body::Record {
                    record: record.map(Box::new),
                    contacts,
                    token: Some(self.tokens.make(&from)),
                }
            }
            Body::PutRecord { record, token } => {
                let stored = if !self.tokens.check(&from, &token) {
                    self.count_drop(DropReason::WrongToken);
                    false
                } else {
                    let key = record.key;
                    match self.records.put(*record, self.wall_ms) {
                        Ok(()) => {
                            with_relay!(self, now, |relay, ctx| relay.offer_key(&ctx, key));
                            true
                        }
                        // We keep one at least as new.
                        Err(Refusal::Stale) => true,
                        Err(Refusal::Invalid) => {
                            self.count_drop(DropReason::BadRecord);
                            false
                        }
                        Err(Refusal::Full) => false,
                    }
                };
                Body::RecordStored { stored }
            }
            Body::Store {
                envelope,
                hops_left,
            } => {
                let id = envelope.id();
                let status = with_relay!(self, now, |relay, ctx| relay
                    .on_store(&ctx, contact, *envelope, hops_left));
                Body::Stored { id, status }
            }
            Body::Acknowledge { ack, hops_left } => {
                let id = ack.id;
                let genuine = with_relay!(self, now, |relay, ctx| relay.on_ack(
                    &ctx,
                    Some(contact),
                    *ack,
                    hops_left
                ));
                if !genuine {
                    // Forged: say nothing, change nothing.
                    return;
                }
                Body::Acknowledged { id }
            }
            Body::Pull => {
                let (count, holding) =
                    with_relay!(self, now, |relay, ctx| relay.on_pull(&ctx, contact));
                holding_for_it = holding;
                Body::Pulled { count }
            }
            Body::Offer { ids } => {
                let (want, held) =
                    with_relay!(self, now, |relay, ctx| relay.on_offer(&ctx, contact, &ids));
                Body::Offered { want, held }
            }
            Body::Pong { .. }
            | Body::Offered { .. }
            | Body::Nodes { .. }
            | Body::Record { .. }
            | Body::RecordStored { .. }
            | Body::Stored { .. }
            | Body::Acknowledged { .. }
            | Body::Pulled { .. } => return,
        };
        let proof = packet.challenge.map(|c| Proof {
            key: self.identity.public_key(),
            signature: self.identity.sign(&proof_message(&c)),
        });
        let mut reply = Packet {
            sender: self.me,
            txid: packet.txid,
            challenge: None,
            proof,
            body,
        };
        let mut bytes = wire::encode(&reply);
        if !proven {
            let allowance = self.unproven.allowance(&from);
            // A long list of contacts is cut to what the limit allows.
            while bytes.len() as u64 > allowance {
                match &mut reply.body {
                    Body::Nodes { contacts } | Body::Record { contacts, .. }
                        if !contacts.is_empty() =>
                    {
                        contacts.pop();
                        bytes = wire::encode(&reply);
                    }
                    _ => break,
                }
            }
            if bytes.len() as u64 > allowance {
                self.count_drop(DropReason::Amplification);
                return;
            }
            self.unproven.sent(&from, bytes.len());
        }
        self.transmit(from, bytes);
        // Learn about the requester, but let it into the table only once it
        // has proven its key and that it receives at `from`, and only
        // challenge it if it would be placed (or would set off a check).
        // A puller we hold something for is always worth it: proving its
        // key is how it gets its messages (§16.9).
        if !self.table.touch(&contact.id, &from, now) {
            if self.verified.contains(&contact) {
                self.offer(now, contact);
            } else if self.rpcs.open_len() < self.config.max_inflight_rpcs.get() / 2
                && !self.rpcs.has_request_to(&from)
                && (holding_for_it || self.table.worth_verifying(&contact, now))
                && self.unproven.allowance(&from) >= VERIFY_PING_MAX as u64
            {
                self.unproven.sent(&from, VERIFY_PING_MAX);
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
        let Some((rpc, late)) = self.rpcs.peek(now, packet.txid) else {
            self.count_drop(DropReason::Unsolicited);
            return;
        };
        if rpc.to != from || rpc.expect.is_some_and(|id| id != packet.sender) {
            self.count_drop(DropReason::Unsolicited);
            return;
        }
        let fits = matches!(
            (&rpc.purpose, &packet.body),
            (Purpose::FindNode(_), Body::Nodes { .. })
                | (Purpose::FindRecord(_), Body::Record { .. })
                | (Purpose::PutRecord, Body::RecordStored { .. })
                | (
                    Purpose::Relay(RelayRequest::Store(_), _),
                    Body::Stored { .. }
                )
                | (
                    Purpose::Relay(RelayRequest::Acknowledge(_), _),
                    Body::Acknowledged { .. }
                )
                | (Purpose::Relay(RelayRequest::Pull, _), Body::Pulled { .. })
                | (
                    Purpose::Relay(RelayRequest::Offer(_), _),
                    Body::Offered { .. }
                )
                | (
                    Purpose::Bootstrap | Purpose::Verify | Purpose::CheckOldest,
                    Body::Pong { .. }
                )
        );
        if !fits {
            self.count_drop(DropReason::WrongResponseType);
            return;
        }
        // How this peer sees us: one of our endpoints (behind a NAT, the
        // only way to know it).
        if let Body::Pong {
            observed: Some(o), ..
        } = &packet.body
        {
            self.twins.observe(*o);
        }
        let verified = match (rpc.challenge, &packet.proof) {
            (Some(challenge), Some(proof)) => {
                if !identity::verify(
                    self.identity.signatures(),
                    &packet.sender,
                    &proof.key,
                    &proof_message(&challenge),
                    &proof.signature,
                ) {
                    // Leave the request open: the genuine answer may still come.
                    debug!(%from, "bad proof signature");
                    self.count_drop(DropReason::BadSignature);
                    return;
                }
                true
            }
            (Some(_), None) => {
                self.count_drop(DropReason::MissingProof);
                return;
            }
            (None, _) => false,
        };
        let Some(rpc) = self
            .rpcs
            .answered(now, packet.txid, &mut self.timers, &mut self.sink)
        else {
            return;
        };
        self.flush_sink();
        if late {
            self.stats.late_answers += 1;
        }
        if let Some(r) = rpc.rtt {
            self.stats.rpc_latency.record(r);
            self.table.record_rtt(&packet.sender, &from, r);
        }
        if rpc.slow {
            self.stats.slow_answers += 1;
        }
        let contact = Contact {
            id: packet.sender,
            addr: from,
        };
        if verified {
            self.unproven.forget(&from);
            // Its key, proven: drafts waiting for it can be sealed.
            if let Some(proof) = &packet.proof {
                let key = proof.key;
                with_relay!(self, now, |relay, ctx| relay.offer_key(&ctx, key));
            }
            self.offer(now, contact);
        } else {
            self.table.touch(&contact.id, &from, now);
        }
        match rpc.purpose {
            Purpose::Bootstrap => {
                // A late answer's request was already counted as failed.
                if !late {
                    self.boot.outstanding = self.boot.outstanding.saturating_sub(1);
                }
                if !self.boot.answered {
                    self.boot.answered = true;
                    self.boot.scheduled = false;
                    self.timers.cancel(&Timer::Bootstrap);
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
            Purpose::FindNode(id) | Purpose::FindRecord(id) => {
                let (contacts, record, token) = match packet.body {
                    Body::Nodes { contacts } => (contacts, None, None),
                    Body::Record {
                        contacts,
                        record,
                        token,
                    } => (contacts, record, token),
                    _ => return,
                };
                // Match the form datagrams arrive from (plain IPv4).
                let contacts: Vec<Contact> = contacts
                    .iter()
                    .map(|c| Contact {
                        id: c.id,
                        addr: SocketAddr::new(c.addr.ip().to_canonical(), c.addr.port()),
                    })
                    .collect();
                let me = self.me;
                if let Some((lookup, _)) = self.lookups.get_mut(&id) {
                    lookup.on_response(&contact.id, &contacts, &me);
                    if let Some(r) = rpc.rtt {
                        lookup.note_rtt(&contact.id, r);
                    }
                    if let Some(token) = token {
                        // At most one per candidate the lookup asked.
                        self.lookup_tokens
                            .entry(id)
                            .or_default()
                            .insert(contact.id, (contact, token));
                    }
                }
                if let Some(record) = record {
                    self.record_found(now, id, *record);
                }
                self.drive_lookup(now, id);
            }
            Purpose::PutRecord => {
                if let Body::RecordStored { stored: true } = packet.body {
                    self.publishing.confirmed.insert(contact.id);
                }
            }
            Purpose::Relay(RelayRequest::Store(id), _) => {
                if let Body::Stored { id: got, status } = packet.body {
                    if got == id {
                        with_relay!(self, now, |relay, ctx| relay
                            .on_stored(&ctx, contact, id, status));
                    } else {
                        self.count_drop(DropReason::WrongResponseType);
                        self.relay.store_failed(&contact.id, id, false);
                    }
                }
            }
            Purpose::Relay(RelayRequest::Acknowledge(id), _) => {
                self.relay.on_acknowledged(contact, id)
            }
            Purpose::Relay(RelayRequest::Offer(id), _) => {
                if let Body::Offered { want, held } = packet.body {
                    let (want, held) = (want.contains(&id), held.contains(&id));
                    with_relay!(self, now, |relay, ctx| relay
                        .on_offered(&ctx, contact, id, want, held));
                }
            }
            Purpose::Relay(RelayRequest::Pull, _) => {
                if let Body::Pulled { count } = packet.body {
                    self.catchup.pull_done(now, Some(count), !late);
                }
            }
        }
    }

    /// Offer a contact that has proven its key to the routing table.
    fn offer(&mut self, now: Instant, contact: Contact) {
        let outcome = self.table.insert(contact, now);
        let cap = self.config.verified_cache;
        // Even a contact parked outside the table gets what is addressed to it.
        let appeared = match outcome {
            Insert::Added => Some(false),
            Insert::Updated { moved } => moved.then_some(true),
            Insert::PingOldest { .. } | Insert::Cached | Insert::Rejected => {
                self.verified.insert(&contact, cap);
                Some(false)
            }
        };
        if let Some(moved) = appeared {
            with_relay!(self, now, |relay, ctx| relay
                .contact_appeared(&ctx, contact, moved));
        }
        if let Insert::PingOldest { oldest } = outcome {
            let sent = self.request(
                now,
                oldest.addr,
                Some(oldest.id),
                Body::Ping,
                false,
                Purpose::CheckOldest,
            );
            if !sent {
                // Cannot check now; keep the oldest (it has seniority).
                self.table.ping_result(&oldest.id, true, now);
            }
        }
    }

    // ---- time -------------------------------------------------------

    /// Advance timers: retransmit or fail overdue requests, stop waiting
    /// for slow lookup peers, run relay attempts, retry bootstrap, refresh
    /// idle buckets and sweep expired state.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        let mark = self.begin(now, wall);
        let now = self.now;
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Rpc(txid) => {
                    let outcome = self
                        .rpcs
                        .deadline(now, txid, &mut self.timers, &mut self.sink);
                    self.flush_sink();
                    match outcome {
                        Some(Deadline::Soft) => self.soft_timeout(now, txid),
                        Some(Deadline::Retransmitted) => self.stats.retransmits += 1,
                        Some(Deadline::Failed(rpc)) => self.rpc_failed(now, rpc),
                        None => {}
                    }
                }
                Timer::Relay(key) => {
                    with_relay!(self, now, |relay, ctx| relay.on_timer(&ctx, key));
                }
                Timer::Bootstrap => {
                    self.boot.scheduled = false;
                    // Contacts may have arrived on their own meanwhile.
                    if self.table.is_empty() {
                        self.bootstrap_round(now);
                    }
                }
                Timer::Maintenance => self.maintenance(now),
                // `finish` closes it.
                Timer::CatchUp => {}
            }
            self.pump();
        }
        self.finish(mark);
    }

    fn soft_timeout(&mut self, now: Instant, txid: TxId) {
        let Some(rpc) = self.rpcs.open_rpc(txid) else {
            return;
        };
        self.stats.soft_timeouts += 1;
        let (purpose, expect) = (rpc.purpose, rpc.expect);
        let Some(peer) = expect else {
            return;
        };
        match purpose {
            Purpose::FindNode(l) | Purpose::FindRecord(l) => {
                if let Some((lookup, _)) = self.lookups.get_mut(&l) {
                    lookup.on_unresponsive(&peer);
                }
                self.drive_lookup(now, l);
            }
            Purpose::Relay(RelayRequest::Store(id), _) => self.relay.store_slow(&peer, id),
            _ => {}
        }
    }

    /// A hash of the routing table's contacts (who and where).
    fn contacts_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (_, b) in self.table.buckets() {
            for e in b.entries() {
                e.contact.hash(&mut h);
            }
        }
        h.finish()
    }

    fn maintenance(&mut self, now: Instant) {
        self.timers
            .set(Timer::Maintenance, now + self.config.refresh_check);
        with_relay!(self, now, |relay, ctx| relay.sweep(&ctx));
        let rng = &mut self.rng;
        self.tokens.rotate(now, || rng.gen());
        self.records.expire(self.wall_ms);
        self.unproven.expire(now, peers::UNPROVEN_IDLE);
        self.retry_keys(now, false);
        self.maybe_publish(now);
        // Save the routing table now and then, to rejoin after a restart
        // (when it changed, and not more often than `contacts_snapshot`:
        // encoding it is much of a quiet node's work).
        let due = self.contacts_saved.1.map_or(true, |at| {
            now.saturating_duration_since(at) >= self.config.contacts_snapshot
        });
        if due {
            // Checked at most once per `contacts_snapshot` whether or not
            // it changed: hashing the whole table every minute of a quiet
            // node was 1.2% of a simulator run.
            let fingerprint = self.contacts_fingerprint();
            self.contacts_dirty |= fingerprint != self.contacts_saved.0;
            self.contacts_saved = (fingerprint, Some(now));
        }
        for i in self.table.stale_buckets(now, self.config.bucket_refresh) {
            let target = self.me.random_in_bucket(i, &mut self.rng);
            if self.start_lookup(now, target, LookupKind::Refresh).is_err() {
                break;
            }
        }
        // Lost every contact: go back to the bootstrap nodes.
        if self.table.is_empty()
            && !self.boot.addrs.is_empty()
            && !self.boot.scheduled
            && self.boot.outstanding == 0
        {
            self.bootstrap_round(now);
        }
    }

    fn rpc_failed(&mut self, now: Instant, rpc: Rpc) {
        self.stats.rpc_timeouts += 1;
        // Only a failure at the endpoint we know counts against a contact,
        // so nobody can get it dropped by naming it at another endpoint;
        // and an unanswered Acknowledge does not count, because a forged
        // ack is answered with silence on purpose (§15.2).
        let silent_by_design =
            matches!(rpc.purpose, Purpose::Relay(RelayRequest::Acknowledge(_), _));
        if let Some(id) = rpc
            .expect
            .filter(|id| !silent_by_design && self.table.contains(id, &rpc.to))
        {
            if let Some(gone) = self.table.failed(&id, self.config.max_failures.get(), now) {
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
            Purpose::PutRecord => {}
            Purpose::FindNode(lookup) | Purpose::FindRecord(lookup) => {
                if let (Some(id), Some((l, _))) = (rpc.expect, self.lookups.get_mut(&lookup)) {
                    l.on_failure(&id);
                }
                self.drive_lookup(now, lookup);
            }
            Purpose::Relay(RelayRequest::Store(id) | RelayRequest::Offer(id), _) => {
                if let Some(p) = rpc.expect {
                    self.relay.store_failed(&p, id, false);
                }
            }
            Purpose::Relay(RelayRequest::Acknowledge(id), _) => {
                if let Some(p) = rpc.expect {
                    self.relay.ack_failed(&p, id, false);
                }
            }
            Purpose::Relay(RelayRequest::Pull, _) => self.catchup.pull_done(now, None, true),
        }
    }

    // ---- relay inspection ---------------------------------------------

    /// Whether this node holds a copy of message `id` to relay.
    pub fn holds(&self, id: &MessageId) -> bool {
        self.relay.holds(id)
    }

    /// State of a message we sent.
    pub fn outbox_state(&self, id: &MessageId) -> Option<OutboxState> {
        self.relay.outbox_state(id)
    }
}

#[cfg(test)]
mod tests;
