//! Build a valid `wire::Packet` from the fuzz input, encode it, and check that
//! it fits `MAX_DATAGRAM` and decodes to the very same packet.
//!
//! Input layout (read front to back; missing bytes read as zero, so every
//! input gives a packet; trailing bytes are ignored):
//!
//! ```text
//! flags:u8       bits 0-1 body: 0 ping, 1 pong, 2 find_node, 3 nodes
//!                bit 2    requests: carry a challenge; responses: carry a proof
//!                bit 3    pong: observed endpoint present
//! sender[20]  txid:u64 LE
//! body           ping:      nothing
//!                pong:      endpoint (if bit 3)
//!                find_node: target[20]
//!                nodes:     count:u8 (taken mod 9), then count x (id[20], endpoint)
//! extra          request with bit 2:          challenge[16]
//!                response with bit 2: seed:u8 challenge[16]; the proof is
//!                    Identity::from_seed([seed; 32]) signing proof_message(challenge)
//! endpoint       kind:u8 (bit 0: IPv6), ip[4 or 16], port:u16 LE (0 becomes 1)
//! ```
//!
//! Arbitrary key and signature bytes are not built here: `decode_datagram`
//! already round-trips every proof the decoder accepts.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use comm::identity::proof_message;
use comm::wire::{decode, encode, Body, Contact, Packet, Proof, MAX_DATAGRAM};
use comm::{Address, Identity};
use libfuzzer_sys::fuzz_target;

/// Reads fixed-size fields, padding with zeros once the input runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    fn endpoint(&mut self) -> SocketAddr {
        let v6 = self.u8() & 1 == 1;
        let ip = if v6 {
            Ipv6Addr::from(self.array::<16>()).into()
        } else {
            Ipv4Addr::from(self.array::<4>()).into()
        };
        let port = u16::from_le_bytes(self.array()).max(1);
        SocketAddr::new(ip, port)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader(data);
    let flags = r.u8();
    let sender = Address(r.array());
    let txid = u64::from_le_bytes(r.array());
    let body = match flags & 3 {
        0 => Body::Ping,
        1 => Body::Pong {
            observed: (flags & 8 != 0).then(|| r.endpoint()),
        },
        2 => Body::FindNode {
            target: Address(r.array()),
        },
        _ => {
            let count = usize::from(r.u8() % 9);
            let contacts = (0..count)
                .map(|_| Contact {
                    id: Address(r.array()),
                    addr: r.endpoint(),
                })
                .collect();
            Body::Nodes { contacts }
        }
    };
    let extra = flags & 4 != 0;
    let (challenge, proof) = if body.is_request() {
        (extra.then(|| r.array()), None)
    } else if !extra {
        (None, None)
    } else {
        let signer = Identity::from_seed([r.u8(); 32]);
        let challenge: [u8; 16] = r.array();
        let proof = Proof {
            key: signer.public_key(),
            signature: signer.sign(&proof_message(&challenge)),
        };
        (None, Some(proof))
    };
    let packet = Packet {
        sender,
        txid,
        challenge,
        proof,
        body,
    };
    let bytes = encode(&packet);
    assert!(
        bytes.len() <= MAX_DATAGRAM,
        "{} bytes for {packet:?}",
        bytes.len()
    );
    assert_eq!(decode(&bytes), Ok(packet));
});
