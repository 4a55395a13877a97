//! protocol.md is normative: its schema appendix must be the schema the
//! code is built from, and every test vector in Appendix B (and the worked
//! example of §3.4) must be exactly what this implementation produces.

use std::net::SocketAddr;

use bytes::Bytes;
use comm::identity::proof_message;
use comm::message::{Ack, Envelope};
use comm::wire::{self, Body, Contact, Packet, Proof, StoreStatus};
use comm::{Address, Identity};

const SPEC: &str = include_str!("../protocol.md");
const PROTO: &str = include_str!("../proto/comm.proto");

fn appendix(name: &str) -> &'static str {
    let start = SPEC
        .find(&format!("## Appendix {name}."))
        .unwrap_or_else(|| panic!("no Appendix {name}"));
    let rest = &SPEC[start..];
    match rest[3..].find("\n## ") {
        Some(end) => &rest[..end + 3],
        None => rest,
    }
}

/// The hex of the first fenced block after `label` in `text`, whitespace
/// removed.
fn block_after(text: &str, label: &str) -> String {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in protocol.md"));
    let rest = &text[at..];
    let open = rest.find("```").expect("a block") + 3;
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("newline") + 1..];
    let close = body.find("```").expect("block end");
    body[..close].split_whitespace().collect()
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn a() -> Identity {
    Identity::from_seed([1; 32])
}

fn b() -> Identity {
    Identity::from_seed([2; 32])
}

const CHALLENGE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn message() -> Envelope {
    Envelope::sign(
        &a(),
        b().address(),
        1_700_000_000_000,
        259_200,
        4,
        Bytes::from_static(b"hello"),
    )
}

fn packet(from: &Identity, txid: u64, body: Body) -> String {
    hex(&wire::encode(&Packet {
        sender: from.address(),
        txid,
        challenge: None,
        proof: None,
        body,
    }))
}

#[test]
fn appendix_a_is_the_schema_verbatim() {
    let a = appendix("A");
    let open = a.find("```proto\n").expect("proto block") + "```proto\n".len();
    let close = a[open..].find("```").expect("block end");
    assert_eq!(
        &a[open..open + close],
        PROTO,
        "Appendix A differs from proto/comm.proto"
    );
}

#[test]
fn key_and_identity_vectors() {
    let b_text = appendix("B");
    for id in [a(), b()] {
        assert!(b_text.contains(&hex(id.public_key().as_bytes())));
        assert!(b_text.contains(&id.address().to_string()));
    }
    let derived = Identity::from_secret("correct horse battery staple").expect("kdf");
    assert!(b_text.contains(&hex(derived.public_key().as_bytes())));
    assert!(b_text.contains(&derived.address().to_string()));
    let proof = hex(&b().sign(&proof_message(&CHALLENGE)).to_bytes());
    assert!(b_text.contains(&proof[..64]) && b_text.contains(&proof[64..]));
    assert!(b_text.contains(&hex(&proof_message(&CHALLENGE))));
}

#[test]
fn overlay_packet_vectors() {
    let ping = hex(&wire::encode(&Packet {
        sender: a().address(),
        txid: 0x0102030405060708,
        challenge: Some(CHALLENGE),
        proof: None,
        body: Body::Ping,
    }));
    assert_eq!(block_after(SPEC, "53 bytes in total"), ping, "§3.4");
    let b_text = appendix("B");
    let pong = hex(&wire::encode(&Packet {
        sender: b().address(),
        txid: 0x0102030405060708,
        challenge: None,
        proof: Some(Proof {
            key: b().public_key(),
            signature: b().sign(&proof_message(&CHALLENGE)),
        }),
        body: Body::Pong {
            observed: Some(SocketAddr::from(([192, 0, 2, 1], 4000))),
        },
    }));
    assert_eq!(block_after(b_text, "\n2. "), pong, "packet 2");
    let target = Address([0xab; 20]);
    assert_eq!(
        block_after(b_text, "\n3. "),
        packet(&a(), 1, Body::FindNode { target }),
        "packet 3"
    );
    // §8: the requester is left out, closest to the target first.
    let contacts = vec![
        Contact {
            id: target,
            addr: "[2001:db8::1]:65535".parse().expect("v6"),
        },
        Contact {
            id: Address([0xcd; 20]),
            addr: SocketAddr::from(([192, 0, 2, 1], 4000)),
        },
    ];
    assert!(contacts
        .windows(2)
        .all(|w| w[0].id.distance(&target) < w[1].id.distance(&target)));
    assert_eq!(
        block_after(b_text, "\n4. "),
        packet(&b(), 1, Body::Nodes { contacts }),
        "packet 4"
    );
}

#[test]
fn message_and_ack_vectors() {
    let b_text = appendix("B");
    let e = message();
    assert_eq!(
        block_after(b_text, "- Signed bytes (92"),
        hex(&e.signed_bytes())
    );
    assert!(b_text.contains(&e.id().to_string()));
    let sig = hex(&e.signature().to_bytes());
    assert!(b_text.contains(&sig[..64]) && b_text.contains(&sig[64..]));
    let ack = Ack::sign(&b(), &e);
    assert_eq!(
        block_after(b_text, "- B's ack, signed bytes (59)"),
        hex(&ack.signed_bytes())
    );
    let ack_sig = hex(&ack.signature.to_bytes());
    assert!(b_text.contains(&ack_sig[..64]) && b_text.contains(&ack_sig[64..]));
    assert!(ack.matches(&e));
}

#[test]
fn relay_packet_vectors() {
    let b_text = appendix("B");
    let e = message();
    let ack = Ack::sign(&b(), &e);
    let id = e.id();
    let cases = [
        (
            "\n5. ",
            packet(
                &a(),
                2,
                Body::Store {
                    envelope: Box::new(e.clone()),
                    hops_left: 0,
                },
            ),
        ),
        (
            "\n6. ",
            packet(
                &b(),
                2,
                Body::Stored {
                    id,
                    status: StoreStatus::Delivered(Box::new(ack)),
                },
            ),
        ),
        (
            "\n7. ",
            packet(
                &b(),
                3,
                Body::Acknowledge {
                    ack: Box::new(ack),
                    hops_left: 3,
                },
            ),
        ),
        (
            "\n8. ",
            hex(&wire::encode(&Packet {
                sender: Address([0xab; 20]),
                txid: 3,
                challenge: None,
                proof: None,
                body: Body::Acknowledged { id },
            })),
        ),
        ("\n9. ", packet(&b(), 4, Body::Pull)),
        ("\n10. ", packet(&a(), 4, Body::Pulled { count: 1 })),
    ];
    for (label, want) in cases {
        assert_eq!(block_after(b_text, label), want, "packet{label}");
    }
}

/// Every vector also decodes to what it says.
#[test]
fn every_vector_decodes() {
    let b_text = appendix("B");
    for n in 2..=10 {
        let bytes = hex::decode(block_after(b_text, &format!("\n{n}. "))).expect("hex");
        assert!(wire::decode(&bytes).is_ok(), "packet {n}");
    }
}
