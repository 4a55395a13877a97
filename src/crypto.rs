//! Sealing message bodies to their recipient, so that relays see who writes
//! to whom, when and how much, but not what.
//!
//! The construction is HPKE (RFC 9180) in base mode with the suite
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, from the
//! `hpke` crate. The recipient's X25519 key is its Ed25519 identity key in
//! Montgomery form (the secret is the Ed25519 secret scalar): anyone who
//! knows a node's public key (from its identity record, a proof, a message
//! it sent, or from its owner) can seal to it, with no second key to
//! publish. The joint security of Ed25519 with an X25519-based KEM on one
//! key pair is shown in "On using the same key pair for Ed25519 and an
//! X25519 based KEM" (Thormarker, 2021, eprint 2021/509).
//!
//! A sealed body is `enc (32 bytes) || ciphertext || tag (16 bytes)`; the
//! associated data binds it to the envelope's sender, recipient and times,
//! so a body cannot be moved into another envelope.

use ed25519_dalek::VerifyingKey;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand::{CryptoRng, RngCore};

use bytes::Bytes;

use crate::address::Address;
use crate::identity::Identity;
use crate::message::Envelope;
use crate::wire::MAX_BODY;

/// HPKE `info`: what the key schedule is for.
pub const SEAL_INFO: &[u8] = b"comm/v1/message";

/// Domain prefix of the associated data.
pub const SEAL_AAD_DOMAIN: &[u8] = b"comm/v1/seal";

/// Bytes a sealed body adds to its text: the encapsulated key and the tag.
pub const SEAL_OVERHEAD: usize = 32 + 16;

/// Longest text a message can carry once sealed.
pub const MAX_TEXT: usize = MAX_BODY - SEAL_OVERHEAD;

/// Why a body could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The text is over [`MAX_TEXT`].
    #[error("message of {0} bytes is over the {MAX_TEXT}-byte limit")]
    TooLong(usize),
    /// Sealing failed (the recipient key is not usable).
    #[error("cannot seal to that key")]
    Seal,
    /// Shorter than a sealed body can be.
    #[error("sealed body too short")]
    TooShort,
    /// Not sealed to us, or altered.
    #[error("cannot open the sealed body")]
    Open,
}

/// The associated data of a sealed body: what it may not be moved away
/// from. `"comm/v1/seal" || sender_key || recipient || u64be(created_at_ms)
/// || u32be(ttl_secs) || u32be(hop_limit)`.
pub fn aad(
    sender_key: &VerifyingKey,
    recipient: &Address,
    created_at_ms: u64,
    ttl_secs: u32,
    hop_limit: u32,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(SEAL_AAD_DOMAIN.len() + 72);
    m.extend_from_slice(SEAL_AAD_DOMAIN);
    m.extend_from_slice(sender_key.as_bytes());
    m.extend_from_slice(&recipient.0);
    m.extend_from_slice(&created_at_ms.to_be_bytes());
    m.extend_from_slice(&ttl_secs.to_be_bytes());
    m.extend_from_slice(&hop_limit.to_be_bytes());
    m
}

/// The X25519 public key behind an Ed25519 identity key.
pub fn box_key(key: &VerifyingKey) -> [u8; 32] {
    key.to_montgomery().to_bytes()
}

/// Seal `text` to the holder of `to`, with fresh randomness from `rng`.
pub fn seal<R: RngCore + CryptoRng>(
    rng: &mut R,
    to: &VerifyingKey,
    aad: &[u8],
    text: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if text.len() > MAX_TEXT {
        return Err(CryptoError::TooLong(text.len()));
    }
    let pk = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&box_key(to))
        .map_err(|_| CryptoError::Seal)?;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &pk,
        SEAL_INFO,
        text,
        aad,
        rng,
    )
    .map_err(|_| CryptoError::Seal)?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Open a body sealed to `me`.
pub fn open(me: &Identity, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::TooShort);
    }
    let (enc, ct) = sealed.split_at(32);
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|_| CryptoError::Open)?;
    let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&me.box_secret())
        .map_err(|_| CryptoError::Open)?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk,
        &enc,
        SEAL_INFO,
        ct,
        aad,
    )
    .map_err(|_| CryptoError::Open)
}

/// A signed envelope from `from` to the holder of `to`, its text sealed:
/// what a node sends, and what tests, the simulator and benchmarks build.
pub fn sealed_envelope<R: RngCore + CryptoRng>(
    rng: &mut R,
    from: &Identity,
    to: &VerifyingKey,
    created_at_ms: u64,
    ttl_secs: u32,
    hop_limit: u32,
    text: &[u8],
) -> Result<Envelope, CryptoError> {
    let recipient = Address::of_key(to.as_bytes());
    let a = aad(
        &from.public_key(),
        &recipient,
        created_at_ms,
        ttl_secs,
        hop_limit,
    );
    let body = seal(rng, to, &a, text)?;
    Ok(Envelope::sign(
        from,
        recipient,
        created_at_ms,
        ttl_secs,
        hop_limit,
        Bytes::from(body),
    ))
}

/// The text of an envelope sealed to `me`.
pub fn open_envelope(me: &Identity, e: &Envelope) -> Result<Vec<u8>, CryptoError> {
    let a = aad(
        e.sender_key(),
        &e.recipient(),
        e.created_at_ms(),
        e.ttl_secs(),
        e.hop_limit(),
    );
    open(me, &a, e.body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn keys_of_small_order_cannot_be_sealed_to_and_a_small_order_enc_does_not_open() {
        let mut rng = StdRng::seed_from_u64(1);
        let bob = Identity::from_seed([2; 32]);
        let a = aad(&bob.public_key(), &bob.address(), 5, 6, 4);
        // Encodings of points of order 1, 2, 4 and 8 (y = 1, y = -1, y = 0,
        // and one of the two order-8 points): each decodes, but its X25519
        // form gives an all-zero shared secret, which HPKE refuses.
        let mut minus_one = [0xff; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let order8 = [
            0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10,
            0x67, 0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77,
            0x92, 0xac, 0x03, 0x7a,
        ];
        for bytes in [identity, minus_one, [0u8; 32], order8] {
            let key = VerifyingKey::from_bytes(&bytes).expect("decodes");
            assert_eq!(seal(&mut rng, &key, &a, b"x"), Err(CryptoError::Seal));
            // An `enc` of small order makes the recipient's shared secret zero.
            let mut body = box_key(&key).to_vec();
            body.extend_from_slice(&[0u8; 17]);
            assert_eq!(open(&bob, &a, &body), Err(CryptoError::Open));
        }
    }

    #[test]
    fn only_the_recipient_opens_and_nothing_can_be_moved() {
        let mut rng = StdRng::seed_from_u64(1);
        let alice = Identity::from_seed([1; 32]);
        let bob = Identity::from_seed([2; 32]);
        let eve = Identity::from_seed([3; 32]);
        let a = aad(&alice.public_key(), &bob.address(), 5, 6, 4);
        let sealed = seal(&mut rng, &bob.public_key(), &a, b"hello").unwrap();
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(open(&bob, &a, &sealed).unwrap(), b"hello");
        assert_eq!(open(&eve, &a, &sealed), Err(CryptoError::Open));
        let other = aad(&alice.public_key(), &bob.address(), 5, 7, 4);
        assert_eq!(open(&bob, &other, &sealed), Err(CryptoError::Open));
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert_eq!(open(&bob, &a, &flipped), Err(CryptoError::Open));
        assert_eq!(open(&bob, &a, &sealed[..10]), Err(CryptoError::TooShort));
        let long = vec![b'x'; MAX_TEXT + 1];
        assert_eq!(
            seal(&mut rng, &bob.public_key(), &a, &long),
            Err(CryptoError::TooLong(MAX_TEXT + 1))
        );
        let max = vec![b'x'; MAX_TEXT];
        assert_eq!(
            seal(&mut rng, &bob.public_key(), &a, &max).unwrap().len(),
            MAX_BODY
        );
    }
}
