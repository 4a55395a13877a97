//! protocol.md is normative: its schema appendix must be the schema the
//! code is built from, and every test vector in Appendix B (and the worked
//! example of §3.4) must be exactly what this implementation produces.

use std::net::SocketAddr;

use bytes::Bytes;
use comm::identity::proof_message;
use comm::message::{Ack, Envelope, IdentityRecord};
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
    assert!(ack.matches(&e, &comm::signing::ED25519));
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

/// An RNG that yields one byte forever: HPKE's ephemeral key then comes
/// from `ikmE` = 32 × that byte (RFC 9180 DeriveKeyPair), as in the vector.
struct Fixed(u8);

impl rand::RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        u32::from_ne_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_ne_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        dest.fill(self.0);
        Ok(())
    }
}

impl rand::CryptoRng for Fixed {}

fn sealed_message() -> Envelope {
    comm::crypto::sealed_envelope(
        &mut Fixed(0x42),
        &a(),
        &b().public_key(),
        1_700_000_000_000,
        259_200,
        4,
        b"Hi there!",
    )
    .expect("seal")
}

fn a_record() -> IdentityRecord {
    IdentityRecord::sign(&a(), 1_700_000_000_000, 1_700_604_800_000)
}

const TOKEN: [u8; 16] = [0x5a; 16];

fn record_packets() -> Vec<(&'static str, String)> {
    vec![
        (
            "\n11. ",
            packet(
                &b(),
                5,
                Body::FindRecord {
                    target: a().address(),
                },
            ),
        ),
        (
            "\n12. ",
            packet(
                &a(),
                5,
                Body::Record {
                    record: Some(Box::new(a_record())),
                    contacts: vec![],
                    token: Some(TOKEN),
                },
            ),
        ),
        (
            "\n13. ",
            packet(
                &b(),
                6,
                Body::PutRecord {
                    record: Box::new(IdentityRecord::sign(
                        &b(),
                        1_700_000_000_000,
                        1_700_604_800_000,
                    )),
                    token: TOKEN,
                },
            ),
        ),
        (
            "\n14. ",
            packet(&a(), 6, Body::RecordStored { stored: true }),
        ),
    ]
}

#[test]
fn sealing_and_record_vectors() {
    let b_text = appendix("B");
    let e = sealed_message();
    let print = std::env::var("PRINT_VECTORS").is_ok();
    let aad = comm::crypto::aad(
        &a().public_key(),
        &b().address(),
        1_700_000_000_000,
        259_200,
        4,
    );
    let r = a_record();
    let values = [
        ("box key", hex(&comm::crypto::box_key(&b().public_key()))),
        ("box secret", hex(&b().box_secret())),
        ("aad", hex(&aad)),
        ("body", hex(e.body())),
        ("id", e.id().to_string()),
        ("signature", hex(&e.signature().to_bytes())),
        ("record signed", hex(&r.signed_bytes())),
        ("record signature", hex(&r.signature.to_bytes())),
        ("record", hex(&wire::encode_identity_record(&r))),
    ];
    if print {
        for (k, v) in &values {
            println!("{k}: {v}");
        }
        for (k, v) in record_packets() {
            println!("packet{}: {v}", k.trim_end());
        }
    }
    assert_eq!(
        comm::crypto::open_envelope(&b(), &e).expect("opens"),
        b"Hi there!"
    );
    assert_eq!(block_after(b_text, "- Associated data (80"), values[2].1);
    assert_eq!(block_after(b_text, "- Sealed body (57"), values[3].1);
    assert_eq!(
        block_after(b_text, "- A's record, signed bytes (62"),
        values[6].1
    );
    assert_eq!(block_after(b_text, "- A's record encoded"), values[8].1);
    for (name, v) in &values {
        if ["aad", "body", "record signed", "record"].contains(name) {
            continue;
        }
        let found = b_text.contains(v.as_str())
            || (v.len() == 128 && b_text.contains(&v[..64]) && b_text.contains(&v[64..]));
        assert!(found, "{name} {v} not in Appendix B");
    }
    for (label, want) in record_packets() {
        assert_eq!(block_after(b_text, label), want, "packet{label}");
        let bytes = hex::decode(&want).expect("hex");
        assert!(wire::decode(&bytes).is_ok(), "packet{label}");
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn key_of(hex: &str) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes: [u8; 32] = unhex(hex).try_into().expect("32 bytes");
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

fn signature_of(hex: &str) -> ed25519_dalek::Signature {
    let bytes: [u8; 64] = unhex(hex).try_into().expect("64 bytes");
    ed25519_dalek::Signature::from_bytes(&bytes)
}

#[test]
fn strict_verification_vectors() {
    use comm::signing::{Ed25519, Signatures};
    use ed25519_dalek::Verifier;
    let b_text = appendix("B");
    let m = proof_message(&CHALLENGE);
    let b_key = hex(b().public_key().as_bytes());
    let r = "64a71c8ea548eba2d3a26e642b87ba3178a375e8373dfe0939bce68b684183fd";
    let s = "32e5f79c7c9b07e405bb9feec263bcbdfefefb0c08d8695e6b85f2d02be8e404";
    let s_plus_l = "1fb9edf996fe193cdc579791a15d9bd2fefefb0c08d8695e6b85f2d02be8e414";
    let identity = "0100000000000000000000000000000000000000000000000000000000000000";
    let zero = "0000000000000000000000000000000000000000000000000000000000000000";
    let s4 = "2add1485cbd609edddee6a5741d78ff05745425152699c95518e7df1499b5e01";
    for v in [s_plus_l, identity, s4] {
        assert!(b_text.contains(v), "{v} not in Appendix B");
    }
    let rows = [
        (&b_key[..], format!("{r}{s}"), true, true),
        (&b_key[..], format!("{r}{s_plus_l}"), false, false),
        (identity, format!("{identity}{zero}"), false, true),
        (&b_key[..], format!("{identity}{s4}"), false, true),
    ];
    for (i, (key, sig, valid, cofactorless)) in rows.iter().enumerate() {
        let key = key_of(key).expect("decodes");
        let sig = signature_of(sig);
        assert_eq!(Ed25519.verify(&key, &m, &sig), *valid, "row {}", i + 1);
        // The lenient check (no small-order test) shows which rule the row tests.
        assert_eq!(key.verify(&m, &sig).is_ok(), *cofactorless, "row {}", i + 1);
    }
    // Key decoding, and the wire check behind `bad_key`.
    let keys = [
        (
            "0200000000000000000000000000000000000000000000000000000000000000",
            false,
        ),
        (
            "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            true,
        ),
        (
            "0100000000000000000000000000000000000000000000000000000000000080",
            true,
        ),
    ];
    for (k, decodes) in keys {
        assert!(b_text.contains(k), "{k} not in Appendix B");
        assert_eq!(key_of(k).is_some(), decodes, "{k}");
        // A Pong with a proof carrying this key: `bad_key` exactly when it
        // does not decode.
        let pong = Packet {
            sender: Address::of_key(&unhex(k)),
            txid: 3,
            challenge: None,
            proof: None,
            body: Body::Pong { observed: None },
        };
        let mut raw = wire::encode(&pong).to_vec();
        let mut proof = vec![0x2a, 0x64, 0x0a, 0x20];
        proof.extend_from_slice(&unhex(k));
        proof.extend_from_slice(&[0x12, 0x40]);
        proof.extend_from_slice(&[0u8; 64]);
        raw.extend_from_slice(&proof);
        let got = wire::decode(&raw).map(|_| ());
        if decodes {
            assert_eq!(got, Ok(()), "{k}");
        } else {
            assert_eq!(got.map_err(|e| e.kind().as_str()), Err("bad_key"), "{k}");
        }
    }
}

/// Packets 15 to 18 of Appendix B: a padded request, an offer and its
/// answer, and an IPv6 endpoint in a `Pong`.
fn more_packets() -> Vec<(u32, String)> {
    let find = Packet {
        sender: a().address(),
        txid: 1,
        challenge: None,
        proof: None,
        body: Body::FindNode {
            target: Address([0xab; 20]),
        },
    };
    let id = message().id();
    vec![
        (15, hex(&wire::encode_padded(&find, wire::PADDED_REQUEST))),
        (16, packet(&a(), 7, Body::Offer { ids: vec![id] })),
        (
            17,
            packet(
                &b(),
                7,
                Body::Offered {
                    want: vec![id],
                    held: vec![comm::message::MessageId([0x11; 20])],
                },
            ),
        ),
        (
            18,
            packet(
                &b(),
                8,
                Body::Pong {
                    observed: Some("[2001:db8::1]:4000".parse().expect("v6")),
                },
            ),
        ),
    ]
}

#[test]
fn padded_offer_and_ipv6_packet_vectors() {
    let b_text = appendix("B");
    for (n, want) in more_packets() {
        assert_eq!(block_after(b_text, &format!("\n{n}. ")), want, "packet {n}");
        let bytes = hex::decode(&want).expect("hex");
        assert!(wire::decode(&bytes).is_ok(), "packet {n}");
    }
}
