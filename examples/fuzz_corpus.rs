//! Writes the seed corpus for the fuzz targets in `fuzz/`.
//!
//! ```text
//! cargo run --example fuzz_corpus -- fuzz/corpus/decode_datagram
//! cargo run --example fuzz_corpus -- --node-records fuzz/corpus/node_datagrams
//! cargo run --example fuzz_corpus -- --roundtrip fuzz/corpus/roundtrip
//! cargo run --example fuzz_corpus -- --records fuzz/corpus/decode_record
//! cargo run --example fuzz_corpus -- --identity-records fuzz/corpus/decode_identity_record
//! ```
//!
//! Without a flag: one valid datagram of every body type per file. With
//! `--node-records`: the same datagrams, and a few multi-step scenarios, in
//! the record framing that `fuzz/fuzz_targets/node_datagrams.rs` documents.
//! With `--roundtrip`: inputs in the layout `fuzz/fuzz_targets/roundtrip.rs`
//! documents. The peer table below must match the one in `node_datagrams.rs`.

use std::error::Error;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use bytes::Bytes;
use comm::identity::proof_message;
use comm::message::{Ack, Envelope, IdentityRecord, MessageId};
use comm::wire::{encode, encode_identity_record, Body, Contact, Packet, Proof, StoreStatus};
use comm::Identity;

type Res<T> = Result<T, Box<dyn Error>>;

/// A seed file: its stem and contents.
type Seed = (String, Vec<u8>);

/// PEERS[i] of `node_datagrams.rs`: endpoint of peer `i`.
fn peer_addr(i: u8) -> SocketAddr {
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

/// Identity of peer `i` in `node_datagrams.rs`.
fn peer(i: u8) -> Identity {
    Identity::from_seed([0x10 + (i & 15); 32])
}

const CHALLENGE: [u8; 16] = *b"fuzz-corpus-seed";

/// A packet from peer `from`; requests get `CHALLENGE` if `extra`, responses
/// a proof signed over it.
fn packet(from: u8, txid: u64, extra: bool, body: Body) -> Packet {
    let id = peer(from);
    let request = body.is_request();
    Packet {
        sender: id.address(),
        txid,
        challenge: (extra && request).then_some(CHALLENGE),
        proof: (extra && !request).then(|| Proof {
            key: id.public_key(),
            signature: id.sign(&proof_message(&CHALLENGE)),
        }),
        body,
    }
}

/// Eight contacts, alternating IPv4 and IPv6 peers.
fn eight_contacts() -> Vec<Contact> {
    [0, 11, 1, 12, 2, 13, 8, 15]
        .into_iter()
        .map(|i| Contact {
            id: peer(i).address(),
            addr: peer_addr(i),
        })
        .collect()
}

/// Peer `i`'s identity record, valid for a day from the fuzzers' epoch.
fn identity_record(i: u8) -> IdentityRecord {
    let t = comm::node::DEFAULT_EPOCH_MS;
    IdentityRecord::sign(&peer(i), t, t + 86_400_000)
}

/// Identity records, as `decode_identity_record` reads them.
fn identity_records() -> Vec<Seed> {
    let good = identity_record(1);
    let mut forged = identity_record(2);
    forged.key = peer(3).public_key();
    vec![
        ("valid".into(), encode_identity_record(&good).to_vec()),
        ("forged".into(), encode_identity_record(&forged).to_vec()),
        ("empty".into(), Vec::new()),
    ]
}

/// One valid datagram of every body type, by file stem.
fn datagrams() -> Vec<(&'static str, Vec<u8>)> {
    let target = Identity::from_seed([1; 32]).address();
    let v4 = Some(peer_addr(10));
    let v6 = Some(peer_addr(13));
    let packets = [
        ("ping", packet(0, 1, false, Body::Ping)),
        ("ping_challenge", packet(0, 2, true, Body::Ping)),
        ("pong", packet(0, 3, false, Body::Pong { observed: None })),
        (
            "pong_proof",
            packet(0, 4, true, Body::Pong { observed: None }),
        ),
        (
            "pong_observed_v4",
            packet(0, 5, false, Body::Pong { observed: v4 }),
        ),
        (
            "pong_observed_v6_proof",
            packet(11, 6, true, Body::Pong { observed: v6 }),
        ),
        ("find_node", packet(0, 7, false, Body::FindNode { target })),
        (
            "find_node_challenge",
            packet(1, 8, true, Body::FindNode { target }),
        ),
        (
            "nodes_empty",
            packet(0, 9, false, Body::Nodes { contacts: vec![] }),
        ),
        (
            "nodes_empty_proof",
            packet(0, 10, true, Body::Nodes { contacts: vec![] }),
        ),
        (
            "nodes_8_v4_v6",
            packet(
                0,
                11,
                false,
                Body::Nodes {
                    contacts: eight_contacts(),
                },
            ),
        ),
        (
            "nodes_8_v4_v6_proof",
            packet(
                12,
                u64::MAX,
                true,
                Body::Nodes {
                    contacts: eight_contacts(),
                },
            ),
        ),
    ];
    // Message bodies: a message from peer 2 to peer 3, created at the
    // node's default epoch so a fresh node accepts it.
    let envelope = Envelope::sign(
        &peer(2),
        peer(3).address(),
        comm::node::DEFAULT_EPOCH_MS,
        3600,
        4,
        bytes::Bytes::from_static(b"Hi there!"),
    );
    let id = envelope.id();
    let ack = Box::new(Ack::sign(&peer(3), &envelope));
    let relay = [
        (
            "store",
            packet(
                2,
                12,
                false,
                Body::Store {
                    envelope: Box::new(envelope.clone()),
                    hops_left: 3,
                },
            ),
        ),
        (
            "store_challenge",
            packet(
                2,
                13,
                true,
                Body::Store {
                    envelope: Box::new(envelope),
                    hops_left: 0,
                },
            ),
        ),
        (
            "stored_held",
            packet(
                4,
                14,
                false,
                Body::Stored {
                    id,
                    status: StoreStatus::Held,
                },
            ),
        ),
        (
            "stored_busy",
            packet(
                4,
                19,
                false,
                Body::Stored {
                    id,
                    status: StoreStatus::Busy,
                },
            ),
        ),
        (
            "stored_delivered",
            packet(
                3,
                15,
                false,
                Body::Stored {
                    id,
                    status: StoreStatus::Delivered(ack.clone()),
                },
            ),
        ),
        (
            "acknowledge",
            packet(3, 16, false, Body::Acknowledge { ack, hops_left: 2 }),
        ),
        (
            "acknowledged",
            packet(4, 17, false, Body::Acknowledged { id }),
        ),
        ("pull", packet(3, 18, false, Body::Pull)),
        ("pulled", packet(4, 19, false, Body::Pulled { count: 1 })),
        (
            "find_record",
            packet(5, 20, true, Body::FindRecord { target }),
        ),
        (
            "record",
            packet(
                5,
                21,
                true,
                Body::Record {
                    record: Some(Box::new(identity_record(6))),
                    contacts: eight_contacts(),
                    token: Some([3; 16]),
                },
            ),
        ),
        (
            "record_none",
            packet(
                5,
                22,
                false,
                Body::Record {
                    record: None,
                    contacts: vec![],
                    token: None,
                },
            ),
        ),
        (
            "put_record",
            packet(
                6,
                23,
                false,
                Body::PutRecord {
                    record: Box::new(identity_record(6)),
                    token: [3; 16],
                },
            ),
        ),
        (
            "record_stored",
            packet(7, 24, false, Body::RecordStored { stored: true }),
        ),
        (
            "offer",
            packet(
                3,
                25,
                false,
                Body::Offer {
                    ids: vec![id, MessageId([0x42; 20])],
                },
            ),
        ),
        (
            "offered",
            packet(
                4,
                26,
                false,
                Body::Offered {
                    want: vec![id],
                    held: vec![MessageId([0x42; 20])],
                },
            ),
        ),
    ];
    packets
        .into_iter()
        .chain(relay)
        .map(|(name, p)| (name, encode(&p).to_vec()))
        .collect()
}

/// Builds inputs in the `node_datagrams` record framing.
#[derive(Default)]
struct Records(Vec<u8>);

impl Records {
    fn record(mut self, step_ms: u16, op: u8, payload: &[u8]) -> Res<Self> {
        let len = u16::try_from(payload.len())?;
        self.0.extend_from_slice(&step_ms.to_le_bytes());
        self.0.push(op);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(payload);
        Ok(self)
    }

    /// A raw datagram from peer `p`.
    fn datagram(self, step_ms: u16, p: u8, bytes: &[u8]) -> Res<Self> {
        self.record(step_ms, p & 15, bytes)
    }

    /// Peer `p` answers pending request number `pick` to it (pongs with
    /// `observed`); a Nodes answer carries `contacts` (contact bytes).
    fn answer(self, p: u8, pick: u8, contacts: &[u8]) -> Res<Self> {
        let mut payload = vec![pick, 1];
        payload.extend_from_slice(contacts);
        self.record(0, 0x10 | (p & 15), &payload)
    }

    fn bootstrap(self, peers: &[u8]) -> Res<Self> {
        let mut payload = vec![0];
        payload.extend_from_slice(peers);
        self.record(0, 0x20, &payload)
    }

    fn lookup(self, target: &[u8; 20]) -> Res<Self> {
        let mut payload = vec![1];
        payload.extend_from_slice(target);
        self.record(0, 0x20, &payload)
    }

    /// Only let `n` steps of `step_ms` pass.
    fn wait(mut self, n: usize, step_ms: u16) -> Res<Self> {
        for _ in 0..n {
            self = self.record(step_ms, 0, &[])?;
        }
        Ok(self)
    }
}

/// A challenged ping from peer `p`, then the harness proves peer `p`'s key
/// when the node pings back, so `p` enters the routing table.
fn introduce(r: Records, p: u8) -> Res<Records> {
    let ping = encode(&packet(p, 0x100 + u64::from(p), true, Body::Ping));
    r.datagram(5, p, &ping)?.answer(p, 0, &[])
}

fn node_records() -> Res<Vec<Seed>> {
    let mut out = Vec::new();
    for (name, bytes) in datagrams() {
        out.push((
            format!("one_{name}"),
            Records::default().datagram(0, 0, &bytes)?.0,
        ));
    }
    let find = encode(&packet(
        1,
        77,
        true,
        Body::FindNode {
            target: peer(5).address(),
        },
    ));
    let verify = introduce(Records::default(), 0)?.datagram(100, 1, &find)?;
    out.push(("verify_then_find_node".into(), verify.0));

    let all_peers: Vec<u8> = (0..16).collect();
    let mut join = Records::default().bootstrap(&[0, 11])?.answer(0, 0, &[])?;
    join = join.answer(0, 0, &[1, 2, 3, 4, 11, 12, 13, 8])?;
    for round in 0..3u8 {
        for p in 1..16 {
            join = join.answer(p, round, &all_peers[..8])?;
        }
    }
    out.push(("bootstrap_join".into(), join.wait(6, 10_000)?.0));

    let silent = Records::default()
        .bootstrap(&[0, 1, 14])?
        .wait(80, 10_000)?;
    out.push(("bootstrap_silent".into(), silent.0));

    let lookup = Records::default().lookup(&[0xab; 20])?;
    out.push(("lookup_empty_table".into(), lookup.0));

    let mut full = Records::default();
    for p in 0..16 {
        full = introduce(full, p)?;
    }
    // Bucket-full pings of the oldest entries (no challenge) get answered too.
    for p in 0..16 {
        full = full.answer(p, 0, &[])?;
    }
    let full = full.lookup(&[0x5a; 20])?;
    out.push(("fill_table_then_lookup".into(), full.0.clone()));
    // An hour of ten-second steps reaches the bucket refresh.
    let refresh = Records(full.0).wait(370, 10_000)?;
    out.push(("fill_table_then_refresh".into(), refresh.0));

    // A message for the node itself while its disk fails and its front end
    // takes nothing; then both recover (records 3 and 4 of the framing).
    let me = Identity::from_seed([1; 32]).address();
    let me_key = Identity::from_seed([1; 32]).public_key();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_seed([4; 32]);
    let e = comm::crypto::sealed_envelope(
        &mut rng,
        &peer(0),
        &me_key,
        comm::node::DEFAULT_EPOCH_MS,
        3600,
        4,
        b"for the node",
    )?;
    debug_assert_eq!(e.recipient(), me);
    let store = encode(&packet(
        0,
        9,
        false,
        Body::Store {
            envelope: Box::new(e),
            hops_left: 0,
        },
    ));
    let flaky = Records::default()
        .record(0, 0x30, &[])?
        .record(0, 0x40, &[0])?
        .datagram(10, 0, &store)?
        .datagram(1000, 0, &store)?
        .record(0, 0x40, &[255])?
        .wait(3, 1000)?;
    out.push(("deliver_with_failing_disk".into(), flaky.0));
    Ok(out)
}

/// Inputs in the `roundtrip` layout, one per body type.
fn roundtrip_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let head = |flags: u8, fill: u8| {
        let mut v = vec![flags];
        v.extend_from_slice(&[fill; 20]);
        v.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        v
    };
    let endpoint_v4 = [0u8, 192, 0, 2, 1, 0x39, 0x30];
    let mut endpoint_v6 = vec![1u8];
    endpoint_v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    endpoint_v6.extend_from_slice(&[0; 11]);
    endpoint_v6.extend_from_slice(&[1, 0xff, 0xff]);
    let proof = |v: &mut Vec<u8>| {
        v.push(7);
        v.extend_from_slice(&CHALLENGE);
    };

    let ping = head(0, 1);
    let mut ping_challenge = head(4, 2);
    ping_challenge.extend_from_slice(&CHALLENGE);
    let mut pong = head(1 | 4 | 8, 3);
    pong.extend_from_slice(&endpoint_v6);
    proof(&mut pong);
    let mut find_node = head(2 | 4, 4);
    find_node.extend_from_slice(&[0xee; 20]);
    find_node.extend_from_slice(&CHALLENGE);
    let mut nodes = head(3 | 4, 5);
    nodes.push(8);
    for i in 0..8u8 {
        nodes.extend_from_slice(&[i; 20]);
        if i % 2 == 0 {
            nodes.extend_from_slice(&endpoint_v4);
        } else {
            nodes.extend_from_slice(&endpoint_v6);
        }
    }
    proof(&mut nodes);
    let mut nodes_empty = head(3, 6);
    nodes_empty.push(0);
    vec![
        ("ping", ping),
        ("ping_challenge", ping_challenge),
        ("pong_observed_v6_proof", pong),
        ("find_node_challenge", find_node),
        ("nodes_8_v4_v6_proof", nodes),
        ("nodes_empty", nodes_empty),
    ]
}

/// One valid stored record of each kind, in the framing of
/// `fuzz/fuzz_targets/decode_record.rs`: kind, key length, key, value.
fn stored_records() -> Vec<Seed> {
    use comm::address::Distance;
    use comm::wire::records::{
        encode_contacts, AckRecord, DraftRecord, HeldRecord, InboxRecord, OutboxRecord, SentState,
        TombstoneRecord,
    };
    let e = Envelope::sign(
        &peer(1),
        peer(2).address(),
        comm::node::DEFAULT_EPOCH_MS,
        3600,
        4,
        Bytes::from_static(b"stored"),
    );
    let ack = Ack::sign(&peer(2), &e);
    let key = e.id().0.to_vec();
    let frame = |kind: u8, key: &[u8], value: Vec<u8>| {
        let mut out = vec![kind, key.len() as u8];
        out.extend_from_slice(key);
        out.extend_from_slice(&value);
        out
    };
    vec![
        (
            "held".into(),
            frame(
                0,
                &key,
                HeldRecord {
                    envelope: e.clone(),
                    hops_left: 3,
                    budget: 30,
                    bound: Distance([0x7f; 20]),
                    source: None,
                }
                .encode(),
            ),
        ),
        (
            "ack".into(),
            frame(
                1,
                &key,
                AckRecord {
                    ack,
                    hops_left: 2,
                    budget: 31,
                    bound: Distance([0xff; 20]),
                }
                .encode(),
            ),
        ),
        (
            "tombstone".into(),
            frame(
                2,
                &key,
                TombstoneRecord {
                    ack,
                    keep_until_ms: 1,
                    routed: true,
                }
                .encode(),
            ),
        ),
        (
            "outbox".into(),
            frame(
                3,
                &key,
                OutboxRecord {
                    envelope: e.clone(),
                    state: SentState::Sent,
                    user_id: Some(comm::message::MessageId([7; 20])),
                }
                .encode(),
            ),
        ),
        (
            "draft".into(),
            frame(
                6,
                &key,
                DraftRecord {
                    recipient: peer(2).address(),
                    text: Bytes::from_static(b"waits for a key"),
                    created_at_ms: comm::node::DEFAULT_EPOCH_MS,
                    ttl_secs: 3600,
                }
                .encode(),
            ),
        ),
        (
            "inbox".into(),
            frame(
                4,
                &key,
                InboxRecord {
                    keep_until_ms: 9,
                    envelope: Some(e.clone()),
                    unshown: true,
                    maybe_repeat: false,
                }
                .encode(),
            ),
        ),
        (
            "contacts".into(),
            frame(
                5,
                b"contacts",
                encode_contacts(&[Contact {
                    id: peer(3).address(),
                    addr: peer_addr(3),
                }]),
            ),
        ),
    ]
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fuzz_corpus [--node-records | --roundtrip | --records | --identity-records] OUT_DIR";
    let (mode, dir) = match args.as_slice() {
        [dir] => ("datagrams", dir),
        [flag, dir] if flag == "--node-records" => ("node", dir),
        [flag, dir] if flag == "--roundtrip" => ("roundtrip", dir),
        [flag, dir] if flag == "--records" => ("records", dir),
        [flag, dir] if flag == "--identity-records" => ("identity", dir),
        _ => return Err(usage.into()),
    };
    let files: Vec<Seed> = match mode {
        "node" => node_records()?,
        "records" => stored_records(),
        "identity" => identity_records(),
        "roundtrip" => roundtrip_inputs()
            .into_iter()
            .map(|(n, b)| (n.to_string(), b))
            .collect(),
        _ => datagrams()
            .into_iter()
            .map(|(n, b)| (n.to_string(), b))
            .collect(),
    };
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in &files {
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, bytes)?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
