//! A direct decoder for the four bodies that make up most traffic (`Ping`,
//! `Pong`, `FindNode`, `Nodes`), straight from the datagram's bytes to the
//! typed [`Packet`], without prost's schema structs.
//!
//! It only *accepts* plain encodings: every field known, at most once (but
//! contacts, which repeat), with its schema's wire type, varints of at
//! most 9 bytes. For anything else, and for any value that fails a check,
//! it answers `None` and [`super::decode`] decodes with prost as always, so
//! prost stays the reference for what a datagram means and which error it
//! earns. On what it accepts both agree: the same fields, read the same
//! way, through the same checks (`decode_fast_agrees_with_prost` and the
//! `decode_datagram` fuzz target compare them).
//!
//! Why: prost builds a struct per message and a `Bytes` per field (two per
//! contact, each an atomic reference count), then the typed conversion
//! copies them out; that was about 15% of a simulator run, most of it on
//! `Nodes` answers.

use super::{address, key, signature, Body, Contact, Packet, Proof};
use super::{CHALLENGE_LEN, MAX_CONTACTS, PROTOCOL_VERSION};

/// Wire types of the protobuf encoding used here.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// A cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn done(&self) -> bool {
        self.buf.is_empty()
    }

    /// A varint of at most 9 bytes (63 bits); longer ones are left to
    /// prost, which has its own rules for the tenth byte.
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..9 {
            let b = *self.buf.get(i)?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Some(v);
            }
        }
        None
    }

    /// A field's number and wire type.
    fn key(&mut self) -> Option<(u32, u8)> {
        let k = u32::try_from(self.varint()?).ok()?;
        let field = k >> 3;
        (field != 0).then_some((field, (k & 7) as u8))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.buf.len() {
            return None;
        }
        let (field, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(field)
    }

    fn fixed64(&mut self) -> Option<u64> {
        let (word, rest) = self.buf.split_first_chunk::<8>()?;
        self.buf = rest;
        Some(u64::from_le_bytes(*word))
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }
}

/// Marks fields seen, so that a repeated one sends the datagram to prost.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn first(&mut self, field: u32) -> Option<()> {
        let bit = 1u32.checked_shl(field)?;
        if self.0 & bit != 0 {
            return None;
        }
        self.0 |= bit;
        Some(())
    }
}

/// Walk the fields of a message in which each field may appear once,
/// handing each to `f`; `None` if one repeats or `f` refuses one.
fn each_once<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(u32, u8, &mut Reader<'a>) -> Option<()>,
) -> Option<()> {
    let mut r = Reader::new(bytes);
    let mut seen = Seen::default();
    while !r.done() {
        let (field, wire) = r.key()?;
        seen.first(field)?;
        f(field, wire, &mut r)?;
    }
    Some(())
}

/// Decode `bytes` if it is one of the plain shapes this module takes and
/// passes every check; `None` otherwise (the caller then uses prost).
pub(super) fn decode(bytes: &[u8]) -> Option<Packet> {
    let mut r = Reader::new(bytes);
    let mut seen = Seen::default();
    let mut version = 0u32;
    let mut sender: &[u8] = &[];
    let mut txid = 0u64;
    let mut challenge: &[u8] = &[];
    let mut proof: Option<&[u8]> = None;
    let mut body = None;
    while !r.done() {
        let (field, wire) = r.key()?;
        // The four bodies share one oneof: one mark for all of them.
        seen.first(if (10..=13).contains(&field) {
            10
        } else {
            field
        })?;
        match (field, wire) {
            (1, VARINT) => version = r.u32()?,
            (2, LEN) => sender = r.bytes()?,
            (3, FIXED64) => txid = r.fixed64()?,
            (4, LEN) => challenge = r.bytes()?,
            (5, LEN) => proof = Some(r.bytes()?),
            (6, LEN) => {
                r.bytes()?;
            }
            (10, LEN) => body = Some(ping(r.bytes()?)?),
            (11, LEN) => body = Some(pong(r.bytes()?)?),
            (12, LEN) => body = Some(find_node(r.bytes()?)?),
            (13, LEN) => body = Some(nodes(r.bytes()?)?),
            _ => return None,
        }
    }
    // The checks of `packet_from_proto`, in its terms.
    if version != PROTOCOL_VERSION {
        return None;
    }
    let sender = address("sender", sender).ok()?;
    let body = body?;
    let challenge = if challenge.is_empty() {
        None
    } else {
        if !body.is_request() {
            return None;
        }
        Some(<[u8; CHALLENGE_LEN]>::try_from(challenge).ok()?)
    };
    let proof = match proof {
        None => None,
        Some(_) if body.is_request() => return None,
        Some(p) => Some(proof_of(p)?),
    };
    Some(Packet {
        sender,
        txid,
        challenge,
        proof,
        body,
    })
}

fn proof_of(bytes: &[u8]) -> Option<Proof> {
    let (mut public_key, mut sig): (&[u8], &[u8]) = (&[], &[]);
    each_once(bytes, |field, wire, r| {
        match (field, wire) {
            (1, LEN) => public_key = r.bytes()?,
            (2, LEN) => sig = r.bytes()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(Proof {
        key: key(public_key).ok()?,
        signature: signature(sig).ok()?,
    })
}

fn ping(bytes: &[u8]) -> Option<Body> {
    bytes.is_empty().then_some(Body::Ping)
}

fn pong(bytes: &[u8]) -> Option<Body> {
    let mut observed = None;
    each_once(bytes, |field, wire, r| {
        match (field, wire) {
            (1, LEN) => observed = Some(socket_addr(r.bytes()?)?),
            _ => return None,
        }
        Some(())
    })?;
    Some(Body::Pong { observed })
}

fn find_node(bytes: &[u8]) -> Option<Body> {
    let mut target: &[u8] = &[];
    each_once(bytes, |field, wire, r| {
        match (field, wire) {
            (1, LEN) => target = r.bytes()?,
            _ => return None,
        }
        Some(())
    })?;
    Some(Body::FindNode {
        target: address("target", target).ok()?,
    })
}

fn nodes(bytes: &[u8]) -> Option<Body> {
    let mut r = Reader::new(bytes);
    let mut contacts = Vec::with_capacity(MAX_CONTACTS);
    while !r.done() {
        match r.key()? {
            (1, LEN) => {
                if contacts.len() == MAX_CONTACTS {
                    return None;
                }
                contacts.push(contact(r.bytes()?)?);
            }
            _ => return None,
        }
    }
    Some(Body::Nodes { contacts })
}

fn contact(bytes: &[u8]) -> Option<Contact> {
    let mut id: &[u8] = &[];
    let mut addr = None;
    each_once(bytes, |field, wire, r| {
        match (field, wire) {
            (1, LEN) => id = r.bytes()?,
            (2, LEN) => addr = Some(socket_addr(r.bytes()?)?),
            _ => return None,
        }
        Some(())
    })?;
    Some(Contact {
        id: address("contact id", id).ok()?,
        addr: addr?,
    })
}

/// An `Endpoint` message.
fn socket_addr(bytes: &[u8]) -> Option<std::net::SocketAddr> {
    let (mut ip, mut port): (&[u8], u32) = (&[], 0);
    each_once(bytes, |field, wire, r| {
        match (field, wire) {
            (1, LEN) => ip = r.bytes()?,
            (2, VARINT) => port = r.u32()?,
            _ => return None,
        }
        Some(())
    })?;
    super::socket_addr(ip, port).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::identity::{proof_message, Identity};
    use crate::wire::{encode, encode_padded, WireError};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::net::SocketAddr;

    /// The prost path alone, as `decode` ran before this module.
    fn slow(bytes: &[u8]) -> Result<Packet, WireError> {
        crate::wire::decode_with_prost(bytes)
    }

    fn packets(rng: &mut StdRng) -> Vec<Packet> {
        let id = Identity::from_seed([3; 32]);
        let challenge: [u8; CHALLENGE_LEN] = rng.gen();
        let proof = Proof {
            key: id.public_key(),
            signature: id.sign(&proof_message(&challenge)),
        };
        let contact = |i: u8| Contact {
            id: Address([i; 20]),
            addr: if i % 2 == 0 {
                SocketAddr::from(([10, i, 0, 1], 1 + u16::from(i)))
            } else {
                SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, u16::from(i)], 65535))
            },
        };
        let mut out = Vec::new();
        for n in 0..=MAX_CONTACTS {
            let contacts = (0..n as u8).map(contact).collect();
            out.push((Body::Nodes { contacts }, false));
        }
        out.push((Body::Ping, true));
        out.push((Body::Ping, false));
        out.push((
            Body::FindNode {
                target: Address(rng.gen()),
            },
            true,
        ));
        out.push((Body::Pong { observed: None }, false));
        out.push((
            Body::Pong {
                observed: Some(contact(3).addr),
            },
            false,
        ));
        out.into_iter()
            .flat_map(|(body, asks)| {
                let request = body.is_request();
                [false, true].map(|extra| Packet {
                    sender: Address(rng.gen()),
                    txid: rng.gen(),
                    challenge: (request && (asks || extra)).then_some(challenge),
                    proof: (!request && extra).then_some(proof),
                    body: body.clone(),
                })
            })
            .collect()
    }

    #[test]
    fn what_the_node_sends_takes_the_fast_path_and_decodes_as_prost_does() {
        let mut rng = StdRng::seed_from_u64(9);
        for p in packets(&mut rng) {
            for bytes in [encode(&p), encode_padded(&p, 210)] {
                assert_eq!(decode(&bytes), Some(p.clone()), "{p:?}");
                assert_eq!(slow(&bytes).ok(), Some(p.clone()));
            }
        }
    }

    #[test]
    fn on_mangled_datagrams_it_agrees_with_prost_or_steps_aside() {
        let mut rng = StdRng::seed_from_u64(10);
        let mut fast = 0;
        for p in packets(&mut rng) {
            let good = encode(&p);
            for _ in 0..2_000 {
                let mut b = good.to_vec();
                match rng.gen_range(0..4) {
                    0 => {
                        let i = rng.gen_range(0..b.len());
                        b[i] ^= 1 << rng.gen_range(0..8);
                    }
                    1 => b.truncate(rng.gen_range(0..b.len())),
                    2 => {
                        let i = rng.gen_range(0..b.len());
                        b[i] = rng.gen();
                    }
                    _ => {
                        // A field repeated or appended.
                        let i = rng.gen_range(0..b.len());
                        let j = rng.gen_range(i..=b.len().min(i + 40));
                        let piece = b[i..j].to_vec();
                        b.extend_from_slice(&piece);
                    }
                }
                if let Some(q) = decode(&b) {
                    fast += 1;
                    assert_eq!(slow(&b).ok(), Some(q), "{b:02x?}");
                }
            }
        }
        assert!(fast > 1_000, "the fast path took only {fast}");
    }

    #[test]
    fn other_bodies_and_odd_encodings_go_to_prost() {
        // An unknown field, a repeated sender, a 10-byte varint.
        let p = Packet {
            sender: Address([1; 20]),
            txid: 7,
            challenge: None,
            proof: None,
            body: Body::Ping,
        };
        let plain = encode(&p).to_vec();
        let mut unknown = plain.clone();
        unknown.extend_from_slice(&[0x38, 0x01]); // field 7, varint 1
        assert_eq!(decode(&unknown), None);
        assert_eq!(slow(&unknown).ok(), Some(p.clone()), "prost skips it");
        let mut twice = plain.clone();
        twice.extend_from_slice(&[0x12, 20]);
        twice.extend_from_slice(&[2; 20]);
        assert_eq!(decode(&twice), None);
        let long_version = [
            &[
                0x08, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ][..],
            &plain[2..],
        ]
        .concat();
        assert_eq!(decode(&long_version), None);
        let pull = encode(&Packet {
            body: Body::Pull,
            ..p
        });
        assert_eq!(decode(&pull), None);
        assert!(slow(&pull).is_ok());
    }
}
