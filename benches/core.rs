//! Hot paths of the core: decoding and encoding datagrams, checking a
//! message signature, one lookup's worth of routing-table queries, and a
//! node handling one `Store` with an empty relay and with 4,000 messages
//! held (the cost must not grow with what is held).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use comm::message::{Ack, Envelope};
use comm::node::DEFAULT_EPOCH_MS;
use comm::routing::{RoutingTable, TablePolicy};
use comm::store::{self, MemoryStore};
use comm::wire::{self, Body, Contact, Packet};
use comm::{Address, Config, Identity, Node};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn nodes_packet() -> Bytes {
    let contacts = (0..8u8)
        .map(|i| Contact {
            id: Address([i; 20]),
            addr: SocketAddr::from(([10, 0, i, 1], 4000)),
        })
        .collect();
    wire::encode(&Packet {
        sender: Address([9; 20]),
        txid: 7,
        challenge: None,
        proof: None,
        body: Body::Nodes { contacts },
    })
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(DEFAULT_EPOCH_MS)
}

fn request(from: Address, txid: u64, body: Body) -> Bytes {
    wire::encode(&Packet {
        sender: from,
        txid,
        challenge: None,
        proof: None,
        body,
    })
}

/// Feed `bytes`, make its writes durable, drop its output.
fn feed(node: &mut Node, disk: &mut MemoryStore, now: Instant, from: SocketAddr, bytes: &[u8]) {
    node.handle_datagram(now, wall(), from, bytes);
    let _ = store::commit(node, disk);
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
}

/// A relay node already holding `held` messages for random recipients.
fn relay_holding(held: usize, rng: &mut StdRng) -> (Node, MemoryStore) {
    let now = Instant::now();
    let mut node = Node::new(
        Config::default(),
        Identity::from_seed([1; 32]),
        [1; 32],
        now,
    )
    .expect("default config");
    let mut disk = MemoryStore::default();
    // Many senders on many networks, as a relay meets them: the quotas per
    // sender and per source network (§16.10) and the request rate per
    // network (§13.1) stay out of the way.
    let senders: Vec<Identity> = (0..64u8)
        .map(|i| Identity::from_seed([100 + i; 32]))
        .collect();
    for i in 0..held {
        let s = &senders[i % senders.len()];
        let from = SocketAddr::from(([10, 1, (i % 250) as u8, 2], 4000));
        let e = Envelope::sign(
            s,
            Address::random(rng),
            DEFAULT_EPOCH_MS,
            3600,
            4,
            Bytes::from(vec![b'x'; 100]),
        );
        let body = Body::Store {
            envelope: Box::new(e),
            hops_left: 2,
        };
        feed(
            &mut node,
            &mut disk,
            now,
            from,
            &request(s.address(), i as u64, body),
        );
    }
    assert_eq!(node.relay().held_count(), held);
    (node, disk)
}

fn bench_store(c: &mut Criterion, held: usize) {
    let mut rng = StdRng::seed_from_u64(9);
    let (mut node, mut disk) = relay_holding(held, &mut rng);
    let author = Identity::from_seed([42; 32]);
    let now = Instant::now();
    let mut txid = 1_000_000u64;
    c.bench_function(&format!("node: handle a Store with {held} held"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Untimed: a fresh message for a fresh recipient.
                let recipient = Identity::from_seed(rng.gen());
                let e = Envelope::sign(
                    &author,
                    recipient.address(),
                    DEFAULT_EPOCH_MS,
                    3600,
                    4,
                    Bytes::from(vec![b'y'; 100]),
                );
                let ack = Ack::sign(&recipient, &e);
                txid += 2;
                let from = SocketAddr::from(([10, 2, (txid / 2 % 250) as u8, 3], 4000));
                let store = request(
                    author.address(),
                    txid,
                    Body::Store {
                        envelope: Box::new(e),
                        hops_left: 2,
                    },
                );
                let t = Instant::now();
                feed(&mut node, &mut disk, now, from, &store);
                total += t.elapsed();
                // Untimed: its ack takes it out again, so the count stays.
                let purge = request(
                    recipient.address(),
                    txid + 1,
                    Body::Acknowledge {
                        ack: Box::new(ack),
                        hops_left: 0,
                    },
                );
                feed(&mut node, &mut disk, now, from, &purge);
            }
            total
        })
    });
    assert_eq!(node.relay().held_count(), held);
}

fn bench(c: &mut Criterion) {
    let bytes = nodes_packet();
    c.bench_function("decode NODES with 8 contacts", |b| {
        b.iter(|| wire::decode(black_box(&bytes)))
    });
    let packet = wire::decode(&bytes).expect("valid");
    c.bench_function("encode NODES with 8 contacts", |b| {
        b.iter(|| wire::encode(black_box(&packet)))
    });

    let author = Identity::from_seed([1; 32]);
    let envelope = Envelope::sign(
        &author,
        Address([2; 20]),
        1_700_000_000_000,
        3600,
        4,
        Bytes::from(vec![b'x'; 1000]),
    );
    c.bench_function("verify a 1000-byte message", |b| {
        b.iter(|| black_box(&envelope).verify(&comm::signing::ED25519))
    });

    let mut rng = StdRng::seed_from_u64(3);
    let now = Instant::now();
    let me = Address::random(&mut rng);
    let mut table = RoutingTable::new(me, TablePolicy::from_config(&Config::default()), now);
    for i in 0..4000u32 {
        let id = Address::random(&mut rng);
        let addr = SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 4000));
        table.insert(Contact { id, addr }, now);
    }
    let target = Address::random(&mut rng);
    c.bench_function(
        "routing table: 8 closest after 4000 offered contacts",
        |b| b.iter(|| table.closest(black_box(&target), 8)),
    );

    // A table as a node in a network of millions has it: every bucket from
    // the farthest down to bucket 140 full (160 contacts), the shape the
    // load generator (`comm-bench findnode`) gives the real node. A
    // `FindNode` answer asks for k + 1 (the requester is left out).
    let me = Address::random(&mut rng);
    let mut full = RoutingTable::new(me, TablePolicy::from_config(&Config::default()), now);
    for bucket in 140..160 {
        for j in 0..8u32 {
            let id = me.random_in_bucket(bucket, &mut rng);
            let addr = SocketAddr::from(([10, bucket as u8, j as u8, 1], 4000));
            full.insert(Contact { id, addr }, now);
        }
    }
    assert_eq!(full.len(), 160);
    let targets: Vec<Address> = (0..64).map(|_| Address::random(&mut rng)).collect();
    let mut next = 0;
    c.bench_function("routing table: 9 closest of 160 contacts", |b| {
        b.iter(|| {
            next = (next + 1) % targets.len();
            full.closest(black_box(&targets[next]), 9)
        })
    });

    bench_store(c, 0);
    bench_store(c, 4000);
}

criterion_group!(benches, bench);
criterion_main!(benches);
