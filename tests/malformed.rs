//! Malformed datagrams fed to a whole `Node`: each is dropped and counted
//! under its reason, none is answered, and the node still answers a valid
//! PING afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use comm::identity::proof_message;
use comm::wire::{self, proto, Body, Packet, Proof, MAX_DATAGRAM};
use comm::{Address, Config, Identity, Node};
use prost::Message;

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(comm::node::DEFAULT_EPOCH_MS)
}

/// Drops counted under the counter named `reason`.
fn dropped(node: &Node, reason: &str) -> u64 {
    node.stats()
        .dropped
        .iter()
        .filter(|(k, _)| k.as_str() == reason)
        .map(|(_, n)| *n)
        .sum()
}

fn raw_ping() -> proto::Packet {
    proto::Packet {
        version: 1,
        sender: Bytes::from(vec![7u8; 20]),
        txid: 99,
        challenge: Bytes::new(),
        proof: None,
        padding: Bytes::new(),
        body: Some(proto::packet::Body::Ping(proto::Ping {})),
    }
}

fn contact(i: u8) -> proto::Contact {
    proto::Contact {
        id: Bytes::from(vec![i; 20]),
        endpoint: Some(proto::Endpoint {
            ip: Bytes::from(vec![10, 0, 0, i]),
            port: 4000,
        }),
    }
}

fn nodes(contacts: Vec<proto::Contact>) -> Vec<u8> {
    proto::Packet {
        body: Some(proto::packet::Body::Nodes(proto::Nodes { contacts })),
        ..raw_ping()
    }
    .encode_to_vec()
}

fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let valid = raw_ping().encode_to_vec();
    let mut unknown_type = proto::Packet {
        body: None,
        ..raw_ping()
    }
    .encode_to_vec();
    // Field 99, length-delimited, empty: a body type from a future version.
    unknown_type.extend_from_slice(&[0x9a, 0x06, 0x00]);
    vec![
        ("empty", vec![], "empty"),
        (
            "truncated",
            valid[..valid.len() - 3].to_vec(),
            "undecodable",
        ),
        ("garbage", vec![0xff; 40], "undecodable"),
        ("oversize", vec![0u8; MAX_DATAGRAM + 1], "oversize"),
        (
            "sender id of 19 bytes",
            proto::Packet {
                sender: Bytes::from(vec![7u8; 19]),
                ..raw_ping()
            }
            .encode_to_vec(),
            "bad_id_length",
        ),
        (
            "target id of 21 bytes",
            proto::Packet {
                body: Some(proto::packet::Body::FindNode(proto::FindNode {
                    target: Bytes::from(vec![1u8; 21]),
                })),
                ..raw_ping()
            }
            .encode_to_vec(),
            "bad_id_length",
        ),
        (
            "contact id of 10 bytes",
            nodes(vec![proto::Contact {
                id: Bytes::from(vec![1u8; 10]),
                ..contact(1)
            }]),
            "bad_id_length",
        ),
        (
            "nine contacts",
            nodes((1..=9).map(contact).collect()),
            "too_many_contacts",
        ),
        (
            "port zero",
            nodes(vec![proto::Contact {
                endpoint: Some(proto::Endpoint {
                    ip: Bytes::from(vec![10, 0, 0, 1]),
                    port: 0,
                }),
                ..contact(1)
            }]),
            "bad_endpoint",
        ),
        ("unknown type", unknown_type, "unknown_type"),
        (
            "version 2",
            proto::Packet {
                version: 2,
                ..raw_ping()
            }
            .encode_to_vec(),
            "bad_version",
        ),
        (
            "challenge of 15 bytes",
            proto::Packet {
                challenge: Bytes::from(vec![1u8; 15]),
                ..raw_ping()
            }
            .encode_to_vec(),
            "bad_challenge",
        ),
        (
            "signature of 10 bytes",
            proto::Packet {
                body: Some(proto::packet::Body::Pong(proto::Pong { observed: None })),
                proof: Some(proto::Proof {
                    public_key: Bytes::from(
                        Identity::from_seed([1; 32])
                            .public_key()
                            .to_bytes()
                            .to_vec(),
                    ),
                    signature: Bytes::from(vec![0u8; 10]),
                }),
                ..raw_ping()
            }
            .encode_to_vec(),
            "bad_signature_length",
        ),
        (
            "unsolicited pong",
            proto::Packet {
                body: Some(proto::packet::Body::Pong(proto::Pong { observed: None })),
                ..raw_ping()
            }
            .encode_to_vec(),
            "unsolicited",
        ),
    ]
}

#[test]
fn malformed_datagrams_are_dropped_counted_and_harmless() {
    let now = Instant::now();
    let me = Identity::from_seed([1; 32]);
    let mut node = Node::new(Config::default(), me, [3; 32], now).expect("config");
    let peer: SocketAddr = "10.9.9.9:4000".parse().unwrap();
    for (name, bytes, reason) in cases() {
        let before = dropped(&node, reason);
        node.handle_datagram(now, wall(), peer, &bytes);
        let after = dropped(&node, reason);
        assert_eq!(after, before + 1, "{name}: not counted as {reason}");
        assert!(node.poll_transmit().is_none(), "{name}: was answered");
    }
    assert_eq!(node.stats().dropped_total(), cases().len() as u64);

    // A valid PING is still answered.
    let ping = wire::encode(&Packet {
        sender: Address([7; 20]),
        txid: 1234,
        challenge: Some([4; 16]),
        proof: None,
        body: Body::Ping,
    });
    node.handle_datagram(now, wall(), peer, &ping);
    let reply = node.poll_transmit().expect("a pong");
    assert_eq!(reply.to, peer);
    let pong = wire::decode(&reply.payload).expect("valid pong");
    assert_eq!(pong.txid, 1234);
    assert!(matches!(pong.body, Body::Pong { observed: Some(a) } if a == peer));
    assert!(pong.proof.is_some());
}

#[test]
fn a_pong_with_a_bad_signature_is_dropped_and_counted() {
    let now = Instant::now();
    let mut node = Node::new(
        Config::default(),
        Identity::from_seed([1; 32]),
        [3; 32],
        now,
    )
    .expect("config");
    let peer: SocketAddr = "10.9.9.9:4000".parse().unwrap();
    node.bootstrap(now, wall(), vec![peer]);
    let ping = node.poll_transmit().expect("bootstrap ping");
    let request = wire::decode(&ping.payload).expect("valid ping");
    let challenge = request.challenge.expect("challenge");
    let them = Identity::from_seed([2; 32]);
    let mut signature = them.sign(&proof_message(&challenge)).to_bytes();
    signature[0] ^= 1;
    let forged = wire::encode(&Packet {
        sender: them.address(),
        txid: request.txid,
        challenge: None,
        proof: Some(Proof {
            key: them.public_key(),
            signature: ed25519_dalek::Signature::from_bytes(&signature),
        }),
        body: Body::Pong { observed: None },
    });
    node.handle_datagram(now, wall(), peer, &forged);
    assert_eq!(dropped(&node, "bad_signature"), 1);
    assert!(node.table().is_empty());
    // A proof signed for another challenge fails the same way.
    let replayed = wire::encode(&Packet {
        sender: them.address(),
        txid: request.txid,
        challenge: None,
        proof: Some(Proof {
            key: them.public_key(),
            signature: them.sign(&proof_message(&[0; 16])),
        }),
        body: Body::Pong { observed: None },
    });
    node.handle_datagram(now, wall(), peer, &replayed);
    assert_eq!(dropped(&node, "bad_signature"), 2);
    assert!(node.table().is_empty());
}
