//! A whole `comm::Node` driven by a sequence of records cut out of the fuzz
//! input. It must never panic, every datagram it sends must fit
//! `MAX_DATAGRAM` and decode, and its write batches are made durable by an
//! in-memory store that fails when told to.
//!
//! Framing (examples/fuzz_corpus.rs writes seeds in it; keep the two in step):
//!
//! ```text
//! input  := record*                     (a trailing partial header is ignored)
//! record := step:u16 LE  op:u8  len:u16 LE  payload[len]
//!                                       (len is cut to the bytes that remain)
//! step   := milliseconds the clock advances before the record, capped at 10 000
//! op     := low nibble: peer index p into PEERS (the datagram's source)
//!           high nibble: kind
//!             0 (and 5..=15) datagram: payload is delivered as-is from PEERS[p];
//!                            an empty payload only advances the clock
//!             1 answer:   the harness answers, as peer p (identity
//!                         Identity::from_seed([0x10 + p; 32])), a request the
//!                         node sent to PEERS[p]: payload[0] picks which one
//!                         (mod the number pending; nothing happens if none),
//!                         payload[1] bit 0 = pong carries `observed`,
//!                         payload[2..] one byte per contact of a Nodes reply
//!                         (at most 8): low nibble = peer index q, bit 4 = id is
//!                         the node's own address, bit 5 = id is [byte; 20],
//!                         else PEERS[q]'s real id; endpoint is always PEERS[q]
//!             2 command:  payload[0] bit 0 = 0: bootstrap(PEERS[b & 15] for each
//!                         b in payload[1..], at most 8); = 1: lookup(target =
//!                         payload[1..21], zero-padded)
//!             3 disk:     the next commit fails (the one after succeeds)
//!             4 credit:   the front end takes payload[0] more messages
//!                         (255: unlimited again)
//! ```
//!
//! Before each record the clock advances by `step`; if `poll_timeout` is due,
//! `handle_timeout` runs (as a driver would). After every input the harness
//! drains `poll_transmit` and `poll_event`, checks each transmit, and
//! remembers the requests among them so that `answer` records can reply
//! with valid proofs, which the fuzzer could never forge itself.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::time::{SystemTime, UNIX_EPOCH};

use comm::identity::proof_message;
use comm::node::DEFAULT_EPOCH_MS;
use comm::store::{self, MemoryStore, Store, StoreError};
use comm::wire::records::{Snapshot, WriteBatch};
use comm::wire::{self, Body, Contact, Packet, Proof, MAX_DATAGRAM};
use comm::{Address, Config, Identity, Node};
use libfuzzer_sys::fuzz_target;

/// Longest clock step between two records.
const MAX_STEP_MS: u64 = 10_000;
/// Records processed per input; the rest is ignored.
const MAX_RECORDS: usize = 512;
/// Requests remembered for `answer` records (oldest forgotten first).
const MAX_PENDING: usize = 256;
/// Where the node would see itself (the `observed` of harness pongs).
const NODE_ENDPOINT: ([u8; 4], u16) = ([10, 9, 9, 9], 5000);

/// The 16 peer endpoints a record can come from. Chosen to hit the
/// per-prefix limit (/24, /48), loopback exemption, same host on two ports,
/// IPv6 and an IPv4-mapped IPv6 form of PEERS[0].
fn peer_addr(i: usize) -> SocketAddr {
    let v4 = |a, b, c, d, port| SocketAddr::new(Ipv4Addr::new(a, b, c, d).into(), port);
    let v6 = |segs: [u16; 8], port| SocketAddr::new(Ipv6Addr::from(segs).into(), port);
    match i & 15 {
        0 => v4(10, 0, 0, 1, 4000),
        1 => v4(10, 0, 1, 1, 4000),
        2 => v4(10, 0, 2, 1, 4000),
        3 => v4(10, 0, 3, 1, 4000),
        4 => v4(10, 0, 4, 1, 4000),
        5 => v4(10, 0, 0, 2, 4000),
        6 => v4(10, 0, 0, 3, 4000),
        7 => v4(10, 0, 0, 1, 4001),
        8 => v4(127, 0, 0, 1, 5000),
        9 => v4(127, 0, 0, 1, 5001),
        10 => v4(192, 0, 2, 7, 65535),
        11 => v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 4000),
        12 => v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2], 4000),
        13 => v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 1], 4000),
        14 => v6([0, 0, 0, 0, 0, 0, 0, 1], 4000),
        _ => v6([0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001], 4000),
    }
}

struct Fixtures {
    node: Identity,
    peers: Vec<Identity>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| Fixtures {
        node: Identity::from_seed([1; 32]),
        peers: (0..16u8)
            .map(|i| Identity::from_seed([0x10 + i; 32]))
            .collect(),
    })
}

/// A disk that fails on demand.
#[derive(Default)]
struct Disk {
    inner: MemoryStore,
    fail_next: bool,
}

impl Store for Disk {
    fn apply(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        if std::mem::take(&mut self.fail_next) {
            return Err(StoreError::Db("fuzzed failure".into()));
        }
        self.inner.apply(batch)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
}

struct Harness {
    node: Node,
    now: Instant,
    start: Instant,
    disk: Disk,
    pending: Vec<(SocketAddr, Packet)>,
}

impl Harness {
    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(DEFAULT_EPOCH_MS) + (self.now - self.start)
    }

    fn drain(&mut self) {
        let _ = store::commit(&mut self.node, &mut self.disk);
        while let Some(t) = self.node.poll_transmit() {
            assert!(
                t.payload.len() <= MAX_DATAGRAM,
                "{}-byte transmit to {}",
                t.payload.len(),
                t.to
            );
            let packet = match wire::decode(&t.payload) {
                Ok(p) => p,
                Err(e) => panic!("node sent an undecodable datagram ({e}) to {}", t.to),
            };
            if packet.body.is_request() {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.remove(0);
                }
                self.pending.push((t.to, packet));
            }
        }
        while self.node.poll_event().is_some() {}
    }

    fn answer(&mut self, p: usize, payload: &[u8]) {
        let from = peer_addr(p);
        let mine: Vec<usize> = (0..self.pending.len())
            .filter(|&i| self.pending[i].0 == from)
            .collect();
        if mine.is_empty() {
            return;
        }
        let pick = mine[usize::from(payload.first().copied().unwrap_or(0)) % mine.len()];
        let (_, request) = self.pending.remove(pick);
        let f = fixtures();
        let me = &f.peers[p];
        let flags = payload.get(1).copied().unwrap_or(0);
        let body = match request.body {
            Body::Ping => Body::Pong {
                observed: (flags & 1 != 0).then(|| SocketAddr::from(NODE_ENDPOINT)),
            },
            Body::FindNode { .. } => Body::Nodes {
                contacts: payload
                    .get(2..)
                    .unwrap_or_default()
                    .iter()
                    .take(self.node.config().k.get())
                    .map(|&b| {
                        let q = usize::from(b & 15);
                        let id = if b & 0x10 != 0 {
                            self.node.address()
                        } else if b & 0x20 != 0 {
                            Address([b; 20])
                        } else {
                            f.peers[q].address()
                        };
                        Contact {
                            id,
                            addr: peer_addr(q),
                        }
                    })
                    .collect(),
            },
            // Responses, and request types the harness does not answer.
            _ => return,
        };
        let reply = Packet {
            sender: me.address(),
            txid: request.txid,
            challenge: None,
            proof: request.challenge.map(|c| Proof {
                key: me.public_key(),
                signature: me.sign(&proof_message(&c)),
            }),
            body,
        };
        let bytes = wire::encode(&reply);
        let wall = self.wall();
        self.node.handle_datagram(self.now, wall, from, &bytes);
    }

    fn command(&mut self, payload: &[u8]) {
        let Some((&first, rest)) = payload.split_first() else {
            return;
        };
        if first & 1 == 0 {
            let addrs = rest
                .iter()
                .take(8)
                .map(|&b| peer_addr(usize::from(b)))
                .collect();
            let wall = self.wall();
            self.node.bootstrap(self.now, wall, addrs);
        } else {
            let mut target = [0u8; 20];
            let n = rest.len().min(20);
            target[..n].copy_from_slice(&rest[..n]);
            // Refused when too many lookups run; that is fine here.
            let wall = self.wall();
            let _ = self.node.lookup(self.now, wall, Address(target));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixtures();
    let start = Instant::now();
    let Ok(node) = Node::new(Config::default(), f.node.clone(), [2; 32], start) else {
        return;
    };
    let mut h = Harness {
        node,
        now: start,
        start,
        disk: Disk::default(),
        pending: Vec::new(),
    };
    let mut elapsed = Duration::ZERO;
    let mut rest = data;
    for _ in 0..MAX_RECORDS {
        if rest.len() < 5 {
            break;
        }
        let step = u64::from(u16::from_le_bytes([rest[0], rest[1]])).min(MAX_STEP_MS);
        let op = rest[2];
        let len = usize::from(u16::from_le_bytes([rest[3], rest[4]]));
        rest = &rest[5..];
        let (payload, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;

        elapsed += Duration::from_millis(step);
        h.now = start + elapsed;
        if h.node.poll_timeout().is_some_and(|t| t <= h.now) {
            let wall = h.wall();
            h.node.handle_timeout(h.now, wall);
            h.drain();
        }

        let p = usize::from(op & 15);
        match op >> 4 {
            1 => h.answer(p, payload),
            2 => h.command(payload),
            3 => h.disk.fail_next = true,
            4 => {
                let n = payload.first().copied().unwrap_or(0);
                h.node
                    .set_message_credit(if n == 255 { usize::MAX } else { usize::from(n) });
            }
            _ if payload.is_empty() => {}
            _ => {
                let wall = h.wall();
                h.node.handle_datagram(h.now, wall, peer_addr(p), payload)
            }
        }
        h.drain();
    }
});
