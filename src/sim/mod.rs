//! A virtual network: many [`Node`]s in one process on a virtual clock.
//!
//! Datagrams travel with a per-link latency and may be lost; nodes can go
//! offline (they hear nothing and their timers stop) and come back. All
//! randomness comes from one seed, so the same seed replays the same run.
//! The simulator calls exactly the API the tokio runtime calls.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod queue;
pub mod report;
pub mod scenario;

use queue::EventQueue;

use crate::address::Address;
use crate::config::Config;
use crate::identity::Identity;
use crate::limits::FastMap;
use crate::message::MessageId;
use crate::node::{Event, LookupId, Node, NodeError, DEFAULT_EPOCH_MS};
use crate::store::shown::ShownLog;
use crate::store::{MemoryStore, Store};
use crate::wire::records::{id_of_key, Op, Table};

/// Properties of the virtual network.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// Smallest one-way latency of a link.
    pub latency_min: Duration,
    /// Largest one-way latency of a link.
    pub latency_max: Duration,
    /// Probability that a datagram is lost, 0.0 to 1.0.
    pub loss: f64,
    /// How the simulated nodes sign and verify: Ed25519 unless the run
    /// asks for the cheap stand-in ([`crate::signing::SIM_SIGNATURES`]).
    pub signatures: &'static dyn crate::signing::Signatures,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(150),
            loss: 0.0,
            signatures: &crate::signing::ED25519,
        }
    }
}

/// Network-wide counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams sent by all nodes.
    pub sent: u64,
    /// Datagrams delivered to an online node.
    pub delivered: u64,
    /// Datagrams lost on the link.
    pub lost: u64,
    /// Datagrams that reached an offline node or an unknown address.
    pub unreachable: u64,
    /// `Store` requests sent by nodes since replaced by a restart (their
    /// `Node` counters went with them).
    pub retired_stores: u64,
    /// `Acknowledge` requests sent by nodes since replaced by a restart.
    pub retired_acks: u64,
    /// `Store`s that found the copy already held, at nodes since restarted.
    pub retired_duplicates: u64,
    /// `Offer` requests sent by nodes since relaunched.
    pub retired_offers: u64,
    /// Actions that reached a node (datagrams handed to an online node and
    /// timers fired): the simulator's unit of work.
    pub events: u64,
}

/// How a simulated node behaves on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// It runs the protocol as written.
    #[default]
    Honest,
    /// An attacker: it answers as the protocol says (so it looks alive and
    /// takes copies: "held"), but never passes a message or an ack on; it
    /// answers every lookup with attackers only (an eclipse attempt); it
    /// answers every copy it is handed with a forged ack to whoever handed
    /// it, and can replay it to its recipient later.
    Attacker,
}

struct SimNode {
    behaviour: Behaviour,
    /// Copies an attacker took, to replay later.
    loot: Vec<crate::message::Envelope>,
    node: Node,
    addr: SocketAddr,
    online: bool,
    timer: Option<Instant>,
    /// Its durable records: every write batch is committed at once.
    store: MemoryStore,
    config: Config,
    identity: Identity,
}

enum Action {
    Deliver {
        to: usize,
        from: SocketAddr,
        payload: Bytes,
    },
    Timer {
        node: usize,
    },
}

/// The simulator.
pub struct Sim {
    cfg: SimConfig,
    start: Instant,
    now: Instant,
    rng: StdRng,
    nodes: Vec<Box<SimNode>>,
    queue: EventQueue,
    /// The actions of the queued entries, by slot; `None` in a free slot.
    actions: Vec<Option<Action>>,
    /// Free slots of `actions`.
    free: Vec<u32>,
    seq: u64,
    events: Vec<(usize, Event)>,
    /// When each of `events` was emitted.
    event_at: Vec<Instant>,
    stats: SimStats,
    /// Added to the wall clock (a suspend, an NTP step).
    wall_offset: Duration,
    /// Running hash of every action processed, in order (see
    /// [`Sim::trace_hash`]).
    trace: u64,
    /// Which nodes hold a copy of each message (online or not), kept from
    /// the `Held` records their write batches put and delete, so that
    /// counting copies does not ask every node.
    copies: FastMap<MessageId, Vec<u32>>,
    /// The most nodes that held each message at once.
    peak_copies: FastMap<MessageId, usize>,
    /// When each message was first written to an inbox (its recipient
    /// stored it, and acknowledges it from then on).
    stored_at: FastMap<MessageId, Instant>,
}

/// Fold `word` into the running trace hash `h` (a multiply-xorshift mix:
/// fast, stable across machines and Rust versions, not cryptographic).
fn mix(h: u64, word: u64) -> u64 {
    let mut x = (h ^ word).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 32)
}

/// Hash of a datagram's bytes: four independent lanes of eight bytes
/// each (a multiply and a rotate per word, so the lanes overlap in the
/// CPU), folded together with [`mix`] at the end.
fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    };
    let lane = |h: u64, w: u64| (h ^ w).wrapping_mul(K).rotate_left(29);
    let mut lanes = [1u64, 2, 3, 4];
    let mut blocks = bytes.chunks_exact(32);
    for b in &mut blocks {
        for (i, l) in lanes.iter_mut().enumerate() {
            *l = lane(*l, word(&b[i * 8..i * 8 + 8]));
        }
    }
    let mut h = bytes.len() as u64;
    for l in lanes {
        h = mix(h, l);
    }
    for c in blocks.remainder().chunks(8) {
        h = mix(h, word(c));
    }
    h
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Sim {
        let start = Instant::now();
        Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            start,
            now: start,
            nodes: Vec::new(),
            queue: EventQueue::default(),
            actions: Vec::new(),
            free: Vec::new(),
            seq: 0,
            events: Vec::new(),
            event_at: Vec::new(),
            stats: SimStats::default(),
            wall_offset: Duration::ZERO,
            trace: 0,
            copies: FastMap::default(),
            peak_copies: FastMap::default(),
            stored_at: FastMap::default(),
        }
    }

    /// The wall-clock time the nodes see now.
    pub fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_millis(DEFAULT_EPOCH_MS)
            + (self.now - self.start)
            + self.wall_offset
    }

    /// Move every node's wall clock forward by `d` without moving virtual
    /// (monotonic) time, as a suspended laptop or a clock step does.
    pub fn step_wall_clock(&mut self, d: Duration) {
        self.wall_offset += d;
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A hash of every action the run processed so far (when, to which
    /// node, from where, and each datagram's bytes): the same seed and the
    /// same calls give the same hash on any machine.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// Network counters.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Number of nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Add a node with a random identity; it starts online and alone.
    ///
    /// # Panics
    /// If `config` does not validate: the simulator's configurations are
    /// written by its caller, not read from anywhere.
    pub fn add_node(&mut self, config: Config) -> usize {
        let identity = Identity::from_seed(self.rng.gen()).with_signatures(self.cfg.signatures);
        self.add_node_as(config, identity)
    }

    /// Add a second node with node `of`'s identity (the same secret
    /// started twice) at an address of its own; it starts online and alone.
    ///
    /// # Panics
    /// As [`Sim::add_node`].
    pub fn add_twin(&mut self, of: usize, config: Config) -> usize {
        let identity = self.nodes[of].identity.clone();
        self.add_node_as(config, identity)
    }

    /// Node `i`'s address: 10.x.y.1:4000, one /24 per node.
    fn addr_of(i: usize) -> SocketAddr {
        let net = i as u32 + (10 << 16);
        SocketAddr::from(([(net >> 16) as u8, (net >> 8) as u8, net as u8, 1], 4000))
    }

    /// The node at `addr`, if any: the inverse of [`Sim::addr_of`], with no
    /// map to hash into on every datagram.
    fn index_at(&self, addr: &SocketAddr) -> Option<usize> {
        let SocketAddr::V4(a) = addr else {
            return None;
        };
        let ip = u32::from(*a.ip());
        if a.port() != 4000 || ip & 0xff != 1 {
            return None;
        }
        let i = ((ip >> 8) as usize).checked_sub(10 << 16)?;
        (i < self.nodes.len()).then_some(i)
    }

    fn add_node_as(&mut self, config: Config, identity: Identity) -> usize {
        let i = self.nodes.len();
        let mut node = match Node::new(config.clone(), identity.clone(), self.rng.gen(), self.now) {
            Ok(n) => n,
            Err(e) => panic!("simulated node: {e}"),
        };
        // One /24 per node (10.0.0.0 upwards: 10.x.y.1), as on the
        // internet, so the per-network limits (§7.6) see every node as a
        // network of its own.
        let addr = Sim::addr_of(i);
        node.set_local_addr(addr);
        self.nodes.push(Box::new(SimNode {
            behaviour: Behaviour::Honest,
            loot: Vec::new(),
            node,
            addr,
            online: true,
            timer: None,
            store: MemoryStore::default(),
            config,
            identity,
        }));
        self.flush(i);
        i
    }

    /// Crash node `i` and start it again at once from its stored records
    /// (what a `kill -9` and a restart do): everything not yet durable is
    /// lost, and it rejoins through its saved contacts.
    pub fn restart(&mut self, i: usize) {
        let seed = self.rng.gen();
        let (now, wall) = (self.now, self.wall());
        let n = &mut self.nodes[i];
        let mut node = match Node::new(n.config.clone(), n.identity.clone(), seed, now) {
            Ok(node) => node,
            Err(e) => panic!("simulated node: {e}"),
        };
        node.set_local_addr(n.addr);
        self.stats.retired_stores += n.node.stats().stores_sent;
        self.stats.retired_acks += n.node.stats().acks_sent;
        self.stats.retired_offers += n.node.stats().offers_sent;
        self.stats.retired_duplicates += n.node.relay().duplicate_stores();
        let snapshot = n.store.load().unwrap_or_default();
        let contacts = node.restore(now, wall, &snapshot);
        let old = std::mem::replace(&mut n.node, node);
        n.timer = None;
        if !contacts.is_empty() {
            n.node.bootstrap(now, wall, contacts);
        }
        // What the new process holds is what it restored, whatever the
        // old one held in memory.
        for id in old.relay().held_ids() {
            self.note_copy(i, id, false);
        }
        for id in self.nodes[i].node.relay().held_ids() {
            self.note_copy(i, id, true);
        }
        self.flush(i);
    }

    /// Node `i` comes back after being offline the way a person reopens
    /// the program: a fresh process restored from its stored records,
    /// rejoining through its saved contacts.
    pub fn relaunch(&mut self, i: usize) {
        self.nodes[i].online = true;
        self.restart(i);
    }

    /// `Store` and `Acknowledge` requests sent by every node so far,
    /// restarts included: message and ack transfers.
    pub fn transfers(&self) -> (u64, u64) {
        let (mut stores, mut acks) = (self.stats.retired_stores, self.stats.retired_acks);
        for n in &self.nodes {
            stores += n.node.stats().stores_sent;
            acks += n.node.stats().acks_sent;
        }
        (stores, acks)
    }

    /// `Offer` requests sent by every node so far, restarts included:
    /// datagrams of ids only, each answered before any `Store` follows.
    pub fn offers(&self) -> u64 {
        self.stats.retired_offers
            + self
                .nodes
                .iter()
                .map(|n| n.node.stats().offers_sent)
                .sum::<u64>()
    }

    /// `Store`s that reached a node already holding the copy, restarts
    /// included: transfers that changed nothing.
    pub fn duplicate_stores(&self) -> u64 {
        self.stats.retired_duplicates
            + self
                .nodes
                .iter()
                .map(|n| n.node.relay().duplicate_stores())
                .sum::<u64>()
    }

    /// The simulated nodes in node `i`'s routing table (its neighbours).
    pub fn neighbours(&self, i: usize) -> Vec<usize> {
        self.nodes[i]
            .node
            .table()
            .buckets()
            .flat_map(|(_, b)| b.entries.iter())
            .filter_map(|e| self.index_at(&e.contact.addr))
            .collect()
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    /// Node `i`'s endpoint.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// Whether node `i` is online.
    pub fn is_online(&self, i: usize) -> bool {
        self.nodes[i].online
    }

    /// Run `f` on node `i` at the current (monotonic and wall) time, then
    /// collect its output.
    pub fn with_node<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Node, Instant, SystemTime) -> T,
    ) -> T {
        let (now, wall) = (self.now, self.wall());
        let out = f(&mut self.nodes[i].node, now, wall);
        self.flush(i);
        out
    }

    /// Node `i` joins through node `via`.
    pub fn bootstrap(&mut self, i: usize, via: &[usize]) {
        let addrs = via.iter().map(|&v| self.nodes[v].addr).collect();
        self.with_node(i, |n, now, wall| n.bootstrap(now, wall, addrs));
    }

    /// Node `from`'s user sends `text` to node `to`, giving its public key
    /// as a user who has it from a contact card would (so the message is
    /// sealed at once, even to a node that was never online).
    pub fn send(
        &mut self,
        from: usize,
        to: usize,
        text: &'static [u8],
    ) -> Result<crate::message::MessageId, NodeError> {
        let key = self.nodes[to].node.public_key();
        let address = self.nodes[to].node.address();
        self.with_node(from, |n, now, wall| {
            n.learn_key(now, wall, key);
            n.send(now, wall, address, Bytes::from_static(text))
        })
    }

    /// A message from `author` to node `to`, created now, sealed to it.
    pub fn sealed(
        &mut self,
        author: &Identity,
        to: usize,
        ttl_secs: u32,
        text: &[u8],
    ) -> crate::message::Envelope {
        let key = self.nodes[to].node.public_key();
        let created = crate::node::unix_ms(self.wall());
        crate::crypto::sealed_envelope(&mut self.rng, author, &key, created, ttl_secs, 4, text)
            .expect("a node's key can be sealed to")
    }

    /// Start a lookup of `target` on node `i`.
    pub fn lookup(&mut self, i: usize, target: Address) -> Result<LookupId, NodeError> {
        self.with_node(i, |n, now, wall| n.lookup(now, wall, target))
    }

    /// Take node `i` off the network (silently) or bring it back.
    pub fn set_online(&mut self, i: usize, online: bool) {
        let was = self.nodes[i].online;
        self.nodes[i].online = online;
        if online && !was {
            self.nodes[i].timer = None;
            self.with_node(i, |n, now, wall| n.handle_timeout(now, wall));
        }
    }

    /// Deliver `payload` to node `to` now, as if sent from `from` (which
    /// need not be a simulated node: answers to it are lost).
    pub fn inject(&mut self, to: usize, from: SocketAddr, payload: &[u8]) {
        let (now, wall) = (self.now, self.wall());
        if self.nodes[to].online {
            self.nodes[to]
                .node
                .handle_datagram(now, wall, from, payload);
            self.flush(to);
        }
    }

    /// Make node `i` behave as `b` from now on.
    pub fn set_behaviour(&mut self, i: usize, b: Behaviour) {
        self.nodes[i].behaviour = b;
    }

    /// Whether node `i` is an attacker.
    pub fn is_attacker(&self, i: usize) -> bool {
        self.nodes[i].behaviour == Behaviour::Attacker
    }

    /// Every attacker replays the copies it took to their recipients (as
    /// if sent by itself). Returns how many datagrams that was.
    pub fn replay_loot(&mut self) -> usize {
        let mut sent = 0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].behaviour != Behaviour::Attacker || !self.nodes[i].online {
                continue;
            }
            let loot = self.nodes[i].loot.clone();
            let from = self.nodes[i].addr;
            let sender = self.nodes[i].node.address();
            for e in loot {
                let to = e.recipient();
                let Some(j) = self.index_of(&to) else {
                    continue;
                };
                let bytes = crate::wire::encode(&crate::wire::Packet {
                    sender,
                    txid: self.rng.gen(),
                    challenge: None,
                    proof: None,
                    body: crate::wire::Body::Store {
                        envelope: Box::new(e),
                        hops_left: 0,
                    },
                });
                let at = self.now + self.latency(i, j);
                self.schedule(
                    at,
                    Action::Deliver {
                        to: j,
                        from,
                        payload: bytes,
                    },
                );
                sent += 1;
            }
        }
        sent
    }

    /// Attacker `from` floods node `to`, spread evenly over `over`: `stores`
    /// `Store`s of fresh 200-byte messages, from a fresh key every 256 (keys
    /// are free), for recipients sharing `to`'s first two address bytes (so
    /// they compete with what `to` holds for its own neighbourhood); and
    /// `acks` self-signed acks for ids nobody sent, with the most hops.
    /// Returns the datagrams scheduled.
    pub fn flood(
        &mut self,
        from: usize,
        to: usize,
        stores: usize,
        acks: usize,
        over: Duration,
    ) -> usize {
        use crate::message::{Ack, Envelope};
        use crate::wire::{encode, Body, Packet};
        let total = stores + acks;
        if total == 0 {
            return 0;
        }
        let sender = self.nodes[from].node.address();
        let me = self.nodes[from].addr;
        let target = self.nodes[to].node.address();
        let created = crate::node::unix_ms(self.wall());
        let mut author = Identity::from_seed(self.rng.gen()).with_signatures(self.cfg.signatures);
        let step = over / total as u32;
        let base = self.now + self.latency(from, to);
        for n in 0..total {
            if n % 256 == 255 {
                author = Identity::from_seed(self.rng.gen()).with_signatures(self.cfg.signatures);
            }
            let mut near = Address::random(&mut self.rng);
            near.0[..2].copy_from_slice(&target.0[..2]);
            let junk: Vec<u8> = (0..200).map(|_| self.rng.gen()).collect();
            let e = Envelope::sign(&author, near, created, 3600, 4, Bytes::from(junk));
            let body = if n < stores {
                Body::Store {
                    envelope: Box::new(e),
                    hops_left: 4,
                }
            } else {
                Body::Acknowledge {
                    ack: Box::new(Ack::sign(&author, &e)),
                    hops_left: 4,
                }
            };
            let payload = encode(&Packet {
                sender,
                txid: self.rng.gen(),
                challenge: None,
                proof: None,
                body,
            });
            self.schedule(
                base + step * n as u32,
                Action::Deliver {
                    to,
                    from: me,
                    payload,
                },
            );
        }
        total
    }

    fn index_of(&self, address: &Address) -> Option<usize> {
        self.nodes.iter().position(|n| n.node.address() == *address)
    }

    /// What an attacker does to a datagram it is about to send: `None`
    /// drops it.
    fn tamper(&mut self, i: usize, payload: Bytes) -> Option<Bytes> {
        use crate::wire::{decode, encode, Body, Contact};
        let Ok(mut p) = decode(&payload) else {
            return Some(payload);
        };
        match &mut p.body {
            // Never pass anything on, never purge.
            Body::Store { .. } | Body::Acknowledge { .. } | Body::Offer { .. } => None,
            // Only attackers are worth knowing (the proof signs the
            // challenge, not the answer, so it stays valid).
            Body::Nodes { contacts } if !contacts.is_empty() => {
                let near = contacts[0].id;
                let k = contacts.len();
                let mut others: Vec<Contact> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, n)| *j != i && n.behaviour == Behaviour::Attacker)
                    .map(|(_, n)| Contact {
                        id: n.node.address(),
                        addr: n.addr,
                    })
                    .collect();
                others.sort_by_key(|c| c.id.distance(&near));
                others.truncate(k);
                *contacts = others;
                Some(encode(&p))
            }
            _ => Some(payload),
        }
    }

    /// What an attacker does with a datagram it receives: keeps a copy of
    /// every message handed to it and answers the bearer with a forged ack.
    fn plunder(&mut self, i: usize, from: SocketAddr, payload: &[u8]) {
        use crate::message::Ack;
        use crate::wire::{decode, encode, Body, Packet};
        let Ok(p) = decode(payload) else {
            return;
        };
        let Body::Store { envelope, .. } = p.body else {
            return;
        };
        let forged = Ack::sign(&self.nodes[i].identity, &envelope);
        if self.nodes[i].loot.len() < 10_000 {
            self.nodes[i].loot.push(*envelope);
        }
        let bytes = encode(&Packet {
            sender: self.nodes[i].node.address(),
            txid: self.rng.gen(),
            challenge: None,
            proof: None,
            body: Body::Acknowledge {
                ack: Box::new(forged),
                hops_left: 4,
            },
        });
        if let Some(j) = self.index_at(&from) {
            let at = self.now + self.latency(i, j);
            let me = self.nodes[i].addr;
            self.schedule(
                at,
                Action::Deliver {
                    to: j,
                    from: me,
                    payload: bytes,
                },
            );
        }
    }

    /// Indices of online nodes holding message `id`, in increasing order.
    pub fn holders(&self, id: &MessageId) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .all_holders(id)
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| self.nodes[i].online)
            .collect();
        v.sort_unstable();
        v
    }

    /// Indices of every node holding message `id`, online or not, in no
    /// particular order. Kept up to date from the nodes' durable writes,
    /// so it costs nothing like asking every node.
    pub fn all_holders(&self, id: &MessageId) -> &[u32] {
        self.copies.get(id).map_or(&[], |v| v.as_slice())
    }

    /// The most nodes (online or not) that held message `id` at the same
    /// virtual instant so far.
    pub fn peak_copies(&self, id: &MessageId) -> usize {
        self.peak_copies.get(id).copied().unwrap_or(0)
    }

    /// When message `id` first reached an inbox: its recipient stored it
    /// (durably, before acknowledging it), which may be seconds before the
    /// user is shown it (the catch-up window, protocol.md §12).
    pub fn stored_at(&self, id: &MessageId) -> Option<Instant> {
        self.stored_at.get(id).copied()
    }

    /// Indices of every node holding message `id`, found by asking each
    /// node (slow: for checking [`Sim::all_holders`]).
    pub fn scan_holders(&self, id: &MessageId) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.holds(id))
            .collect()
    }

    fn note_copy(&mut self, i: usize, id: MessageId, held: bool) {
        let i = i as u32;
        if held {
            let v = self.copies.entry(id).or_default();
            if !v.contains(&i) {
                v.push(i);
                let peak = self.peak_copies.entry(id).or_default();
                *peak = (*peak).max(v.len());
            }
        } else if let Some(v) = self.copies.get_mut(&id) {
            v.retain(|&j| j != i);
            if v.is_empty() {
                self.copies.remove(&id);
            }
        }
    }

    /// Events emitted and not yet taken, with the index of their node.
    pub fn events(&self) -> &[(usize, Event)] {
        &self.events
    }

    /// Events emitted since the last call, with the index of their node.
    pub fn take_events(&mut self) -> Vec<(usize, Event)> {
        self.event_at.clear();
        std::mem::take(&mut self.events)
    }

    /// Like [`Sim::take_events`], with the virtual time each was emitted.
    pub fn take_timed_events(&mut self) -> Vec<(Instant, usize, Event)> {
        let at = std::mem::take(&mut self.event_at);
        at.into_iter()
            .zip(std::mem::take(&mut self.events))
            .map(|(t, (i, e))| (t, i, e))
            .collect()
    }

    fn latency(&mut self, a: usize, b: usize) -> Duration {
        // A fixed base per link, so paths have stable geography, plus jitter.
        let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
        let h = (lo.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ hi.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
            .rotate_left(31)
            .wrapping_mul(0x1656_67B1_9E37_79F9);
        let span = self.cfg.latency_max.saturating_sub(self.cfg.latency_min);
        let base = self.cfg.latency_min + span.mul_f64((h >> 11) as f64 / (1u64 << 53) as f64);
        let jitter = base.mul_f64(self.rng.gen_range(0.0..0.1));
        base + jitter
    }

    fn schedule(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.actions[slot as usize] = Some(action);
                slot
            }
            None => {
                self.actions.push(Some(action));
                (self.actions.len() - 1) as u32
            }
        };
        let nanos = self.nanos_since_start(at);
        self.queue.push(nanos, self.seq, slot);
    }

    /// `at` as the event queue keys it: nanoseconds since the run began.
    fn nanos_since_start(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    fn flush(&mut self, i: usize) {
        // The simulator's disk is instant and never fails.
        while let Some(batch) = self.nodes[i].node.poll_write() {
            for op in &batch.ops {
                let (held, key) = match op {
                    Op::Put(Table::Held, k, _) => (true, k),
                    Op::Delete(Table::Held, k) => (false, k),
                    Op::Put(Table::Inbox, k, _) => {
                        if let Some(id) = id_of_key(k) {
                            self.stored_at.entry(id).or_insert(self.now);
                        }
                        continue;
                    }
                    _ => continue,
                };
                if let Some(id) = id_of_key(key) {
                    self.note_copy(i, id, held);
                }
            }
            let n = &mut self.nodes[i];
            if n.store.apply(&batch).is_err() {
                n.node.handle_write_failed(batch.id);
                break;
            }
            n.node.handle_written(batch.id);
        }
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            self.stats.sent += 1;
            let Some(to) = self.index_at(&t.to) else {
                self.stats.unreachable += 1;
                continue;
            };
            if self.cfg.loss > 0.0 && self.rng.gen_bool(self.cfg.loss.clamp(0.0, 1.0)) {
                self.stats.lost += 1;
                continue;
            }
            let payload = if self.nodes[i].behaviour == Behaviour::Attacker {
                match self.tamper(i, t.payload) {
                    Some(p) => p,
                    None => continue,
                }
            } else {
                t.payload
            };
            let t = crate::node::Transmit { to: t.to, payload };
            let at = self.now + self.latency(i, to);
            let from = self.nodes[i].addr;
            self.schedule(
                at,
                Action::Deliver {
                    to,
                    from,
                    payload: t.payload,
                },
            );
        }
        while let Some(e) = self.nodes[i].node.poll_event() {
            // The simulated user sees every message at once.
            if let Event::MessageReceived { id, .. } = &e {
                let _ = self.nodes[i].store.showing(&[*id]);
            }
            self.events.push((i, e));
            self.event_at.push(self.now);
        }
        if let Some(t) = self.nodes[i].node.poll_timeout() {
            if self.nodes[i].timer != Some(t) {
                self.nodes[i].timer = Some(t);
                self.schedule(t.max(self.now), Action::Timer { node: i });
            }
        }
    }

    /// Process the next scheduled action if it is due at or before
    /// `deadline`. Returns false when nothing is due.
    pub fn step(&mut self, deadline: Instant) -> bool {
        let limit = self.nanos_since_start(deadline);
        let Some((nanos, slot)) = self.queue.pop_due(limit) else {
            return false;
        };
        let Some(action) = self.actions.get_mut(slot as usize).and_then(Option::take) else {
            return true;
        };
        self.free.push(slot);
        let s_at = self.start + Duration::from_nanos(nanos);
        self.now = self.now.max(s_at);
        let at = (self.now - self.start).as_nanos() as u64;
        match action {
            Action::Deliver { to, from, payload } => {
                let from_word = match from {
                    SocketAddr::V4(a) => u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port()),
                    SocketAddr::V6(a) => hash_bytes(&a.ip().octets()) ^ u64::from(a.port()),
                };
                self.trace = mix(
                    mix(mix(mix(self.trace, at), to as u64), from_word),
                    hash_bytes(&payload),
                );
                if !self.nodes[to].online {
                    self.stats.unreachable += 1;
                    return true;
                }
                self.stats.delivered += 1;
                self.stats.events += 1;
                if self.nodes[to].behaviour == Behaviour::Attacker {
                    self.plunder(to, from, &payload);
                }
                let (now, wall) = (self.now, self.wall());
                self.nodes[to]
                    .node
                    .handle_datagram(now, wall, from, &payload);
                self.flush(to);
            }
            Action::Timer { node } => {
                if self.nodes[node].timer != Some(s_at) || !self.nodes[node].online {
                    return true;
                }
                self.stats.events += 1;
                self.trace = mix(mix(mix(self.trace, at), node as u64), u64::MAX);
                self.nodes[node].timer = None;
                let (now, wall) = (self.now, self.wall());
                self.nodes[node].node.handle_timeout(now, wall);
                self.flush(node);
            }
        }
        true
    }

    /// Run until virtual time `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        while self.step(deadline) {}
        self.now = self.now.max(deadline);
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline);
    }

    /// Run until `done` holds (checked after every action) or `limit` of
    /// virtual time passes. Returns whether `done` held.
    pub fn run_while(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(deadline) {
                self.now = self.now.max(deadline);
                return done(self);
            }
        }
    }

    /// Build a network of `n` nodes: node 0 starts alone, each later node
    /// joins through a random earlier one, `spacing` apart, then the network
    /// settles for `settle`. Returns the indices of the new nodes.
    pub fn grow(
        &mut self,
        n: usize,
        config: &Config,
        spacing: Duration,
        settle: Duration,
    ) -> Vec<usize> {
        let first = self.nodes.len();
        let mut added = Vec::with_capacity(n);
        for j in 0..n {
            let i = self.add_node(config.clone());
            if i > 0 {
                let via = if j == 0 {
                    self.rng.gen_range(0..i)
                } else {
                    self.rng.gen_range(first.min(i - 1)..i)
                };
                self.bootstrap(i, &[via]);
            }
            added.push(i);
            self.run_for(spacing);
        }
        self.run_for(settle);
        added
    }

    /// The `k` online nodes closest to `target`, excluding `except`: the
    /// ground truth a lookup is judged against.
    pub fn true_closest(&self, target: &Address, k: usize, except: Option<usize>) -> Vec<Address> {
        let mut ids: Vec<Address> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.online && Some(*i) != except)
            .map(|(_, n)| n.node.address())
            .collect();
        ids.sort_by_key(|a| a.distance(target));
        ids.truncate(k);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_back_to_their_nodes_and_nothing_else_does() {
        let mut sim = Sim::new(SimConfig::default());
        for _ in 0..300 {
            sim.add_node(Config::default());
        }
        for i in 0..300 {
            assert_eq!(sim.index_at(&sim.addr(i)), Some(i));
        }
        for other in [
            "10.1.44.1:4000",   // the address node 300 would have
            "10.0.0.2:4000",    // not .1
            "10.0.0.1:4001",    // another port
            "9.255.255.1:4000", // below the first
            "[::1]:4000",
        ] {
            let addr: SocketAddr = other.parse().expect("test address");
            assert_eq!(sim.index_at(&addr), None, "{other}");
        }
    }
}
