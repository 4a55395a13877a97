//! Hot paths of the core: decoding and encoding datagrams, checking a
//! message signature, and one lookup's worth of routing-table queries.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use comm::message::Envelope;
use comm::routing::RoutingTable;
use comm::wire::{self, Body, Contact, Packet};
use comm::{Address, Identity};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::SeedableRng;

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

fn bench(c: &mut Criterion) {
    let bytes = nodes_packet();
    c.bench_function("decode NODES with 8 contacts", |b| {
        b.iter(|| wire::decode(black_box(&bytes), 8))
    });
    let packet = wire::decode(&bytes, 8).expect("valid");
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
        b.iter(|| black_box(&envelope).verify())
    });

    let mut rng = StdRng::seed_from_u64(3);
    let now = Instant::now();
    let me = Address::random(&mut rng);
    let mut table = RoutingTable::new(me, 8, 4, 8, now);
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
