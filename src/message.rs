//! Signed messages and signed acknowledgements.
//!
//! An [`Envelope`] is signed by its sender; its id is the SHA-1 of the signed
//! bytes, so the id names the content and cannot be reused for another. An
//! [`Ack`] is signed by the recipient over the message id, the sender's
//! address and the time until which nodes keep it; anyone can check that the
//! key behind the signature hashes to the message's recipient.

use std::fmt;

use bytes::Bytes;
use ed25519_dalek::{Signature, VerifyingKey};
use sha1::{Digest, Sha1};

use crate::address::Address;
use crate::identity::Identity;
use crate::signing::Signatures;

/// Domain-separation prefix of the message signature.
pub const ENVELOPE_DOMAIN: &[u8] = b"comm/v1/message";
/// Domain-separation prefix of the acknowledgement signature.
pub const ACK_DOMAIN: &[u8] = b"comm/v1/ack";

/// A message id: SHA-1 of the envelope's signed bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub [u8; 20]);

impl std::str::FromStr for MessageId {
    type Err = hex::FromHexError;

    /// 40 hex digits, as `Display` writes them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s.trim(), &mut out)?;
        Ok(MessageId(out))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", &self.to_string()[..8])
    }
}

impl MessageId {
    /// First 4 bytes in hex, for display.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

/// A message as it travels: content plus the sender's signature.
///
/// The fields are read through accessors: the id and the sender address are
/// computed once when the envelope is built (signed here or decoded in
/// `wire`), because every relay decision looks them up and recomputing a
/// SHA-1 per lookup made per-datagram work grow with the number held.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    sender_key: VerifyingKey,
    recipient: Address,
    created_at_ms: u64,
    ttl_secs: u32,
    hop_limit: u32,
    body: Bytes,
    signature: Signature,
    id: MessageId,
    sender: Address,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("recipient", &self.recipient)
            .field("created_at_ms", &self.created_at_ms)
            .field("ttl_secs", &self.ttl_secs)
            .field("body_len", &self.body.len())
            .finish()
    }
}

fn content(
    sender_key: &VerifyingKey,
    recipient: &Address,
    created_at_ms: u64,
    ttl_secs: u32,
    hop_limit: u32,
    body: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(ENVELOPE_DOMAIN.len() + 72 + body.len());
    m.extend_from_slice(ENVELOPE_DOMAIN);
    m.extend_from_slice(sender_key.as_bytes());
    m.extend_from_slice(&recipient.0);
    m.extend_from_slice(&created_at_ms.to_be_bytes());
    m.extend_from_slice(&ttl_secs.to_be_bytes());
    m.extend_from_slice(&hop_limit.to_be_bytes());
    m.extend_from_slice(&(body.len() as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

impl Envelope {
    /// Create and sign a message.
    pub fn sign(
        identity: &Identity,
        recipient: Address,
        created_at_ms: u64,
        ttl_secs: u32,
        hop_limit: u32,
        body: Bytes,
    ) -> Envelope {
        let key = identity.public_key();
        let signed = content(&key, &recipient, created_at_ms, ttl_secs, hop_limit, &body);
        let signature = identity.sign(&signed);
        Envelope::assemble(
            key,
            recipient,
            created_at_ms,
            ttl_secs,
            hop_limit,
            body,
            signature,
            &signed,
        )
    }

    /// An envelope from its fields as they travel; the signature is not
    /// checked here (see [`Envelope::verify`]).
    pub fn from_parts(
        sender_key: VerifyingKey,
        recipient: Address,
        created_at_ms: u64,
        ttl_secs: u32,
        hop_limit: u32,
        body: Bytes,
        signature: Signature,
    ) -> Envelope {
        let signed = content(
            &sender_key,
            &recipient,
            created_at_ms,
            ttl_secs,
            hop_limit,
            &body,
        );
        Envelope::assemble(
            sender_key,
            recipient,
            created_at_ms,
            ttl_secs,
            hop_limit,
            body,
            signature,
            &signed,
        )
    }

    /// The envelope, with its id hashed from `signed` (its signed bytes).
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        sender_key: VerifyingKey,
        recipient: Address,
        created_at_ms: u64,
        ttl_secs: u32,
        hop_limit: u32,
        body: Bytes,
        signature: Signature,
        signed: &[u8],
    ) -> Envelope {
        let mut id = [0u8; 20];
        id.copy_from_slice(&Sha1::digest(signed));
        Envelope {
            sender: Address::of_key(sender_key.as_bytes()),
            id: MessageId(id),
            sender_key,
            recipient,
            created_at_ms,
            ttl_secs,
            hop_limit,
            body,
            signature,
        }
    }

    /// The bytes the sender signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        content(
            &self.sender_key,
            &self.recipient,
            self.created_at_ms,
            self.ttl_secs,
            self.hop_limit,
            &self.body,
        )
    }

    /// The message id (SHA-1 of the signed bytes), computed once.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The sender's address (SHA-1 of its key), computed once.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// The sender's public key.
    pub fn sender_key(&self) -> &VerifyingKey {
        &self.sender_key
    }

    /// Where the message goes.
    pub fn recipient(&self) -> Address {
        self.recipient
    }

    /// Wall-clock creation time, milliseconds since the Unix epoch.
    pub fn created_at_ms(&self) -> u64 {
        self.created_at_ms
    }

    /// Lifetime in seconds from `created_at_ms`.
    pub fn ttl_secs(&self) -> u32 {
        self.ttl_secs
    }

    /// How many relay hops copies may travel from the sender.
    pub fn hop_limit(&self) -> u32 {
        self.hop_limit
    }

    /// The text.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The sender's Ed25519 signature over [`Envelope::signed_bytes`].
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// When the message expires, ms since the Unix epoch.
    pub fn expires_at_ms(&self) -> u64 {
        self.created_at_ms
            .saturating_add(u64::from(self.ttl_secs) * 1000)
    }

    /// Whether the sender's signature is valid (with Ed25519: strict
    /// verification).
    pub fn verify(&self, signatures: &dyn Signatures) -> bool {
        signatures.verify(&self.sender_key, &self.signed_bytes(), &self.signature)
    }
}

/// A recipient's signed statement that it received a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ack {
    /// The message acknowledged.
    pub id: MessageId,
    /// The message's sender, where the ack is routed.
    pub sender: Address,
    /// Until when nodes keep the ack as a tombstone, ms since the Unix epoch
    /// (the message's expiry; nodes add a margin).
    pub expires_at_ms: u64,
    /// The recipient's public key.
    pub recipient_key: VerifyingKey,
    /// Signature over [`Ack::signed_bytes`].
    pub signature: Signature,
}

impl Ack {
    fn content(id: &MessageId, sender: &Address, expires_at_ms: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(ACK_DOMAIN.len() + 48);
        m.extend_from_slice(ACK_DOMAIN);
        m.extend_from_slice(&id.0);
        m.extend_from_slice(&sender.0);
        m.extend_from_slice(&expires_at_ms.to_be_bytes());
        m
    }

    /// The recipient acknowledges `envelope`.
    pub fn sign(identity: &Identity, envelope: &Envelope) -> Ack {
        let id = envelope.id();
        let sender = envelope.sender();
        let expires_at_ms = envelope.expires_at_ms();
        Ack {
            id,
            sender,
            expires_at_ms,
            recipient_key: identity.public_key(),
            signature: identity.sign(&Ack::content(&id, &sender, expires_at_ms)),
        }
    }

    /// The bytes the recipient signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        Ack::content(&self.id, &self.sender, self.expires_at_ms)
    }

    /// The address of the key that signed (the claimed recipient).
    pub fn recipient(&self) -> Address {
        Address::of_key(self.recipient_key.as_bytes())
    }

    /// Whether the signature is valid for the key it carries.
    pub fn verify(&self, signatures: &dyn Signatures) -> bool {
        signatures.verify(&self.recipient_key, &self.signed_bytes(), &self.signature)
    }

    /// Whether this ack really acknowledges `envelope`: same id and sender,
    /// signed by the key behind the envelope's recipient address.
    pub fn matches(&self, envelope: &Envelope, signatures: &dyn Signatures) -> bool {
        self.id == envelope.id()
            && self.sender == envelope.sender()
            && self.recipient() == envelope.recipient()
            && self.verify(signatures)
    }
}

/// Domain-separation prefix of the identity-record signature.
pub const RECORD_DOMAIN: &[u8] = b"comm/v1/record";

/// A node's signed statement of its public key, kept at the k nodes
/// closest to its address so that others can seal messages to it. It is
/// self-verifying: the key hashes to the address and signed the rest.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IdentityRecord {
    /// The node's Ed25519 public key.
    pub key: VerifyingKey,
    /// A higher one replaces a lower (the reference uses the time of
    /// signing, in ms).
    pub seq: u64,
    /// Until when it may be kept, ms since the Unix epoch.
    pub expires_at_ms: u64,
    /// Signature by `key` over [`IdentityRecord::signed_bytes`].
    pub signature: Signature,
}

impl IdentityRecord {
    fn content(key: &VerifyingKey, seq: u64, expires_at_ms: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(RECORD_DOMAIN.len() + 48);
        m.extend_from_slice(RECORD_DOMAIN);
        m.extend_from_slice(key.as_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(&expires_at_ms.to_be_bytes());
        m
    }

    /// `identity` signs its record.
    pub fn sign(identity: &Identity, seq: u64, expires_at_ms: u64) -> IdentityRecord {
        let key = identity.public_key();
        IdentityRecord {
            key,
            seq,
            expires_at_ms,
            signature: identity.sign(&Self::content(&key, seq, expires_at_ms)),
        }
    }

    /// The bytes the key signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        Self::content(&self.key, self.seq, self.expires_at_ms)
    }

    /// The address the record is for (SHA-1 of its key).
    pub fn address(&self) -> Address {
        Address::of_key(self.key.as_bytes())
    }

    /// Whether the signature is valid (with Ed25519: strict verification).
    pub fn verify(&self, signatures: &dyn Signatures) -> bool {
        signatures.verify(&self.key, &self.signed_bytes(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(from: &Identity, to: &Identity) -> Envelope {
        Envelope::sign(
            from,
            to.address(),
            1_700_000_000_000,
            3600,
            4,
            Bytes::from_static(b"hi"),
        )
    }

    #[test]
    fn envelope_signature_and_id() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let e = env(&a, &b);
        assert!(e.verify(&crate::signing::ED25519));
        assert_eq!(e.sender(), a.address());
        assert_eq!(e.expires_at_ms(), 1_700_000_000_000 + 3_600_000);
        let tampered = Envelope::from_parts(
            *e.sender_key(),
            e.recipient(),
            e.created_at_ms(),
            e.ttl_secs(),
            e.hop_limit(),
            Bytes::from_static(b"ho"),
            *e.signature(),
        );
        assert!(!tampered.verify(&crate::signing::ED25519));
        assert_ne!(tampered.id(), e.id());
    }

    #[test]
    fn a_record_verifies_for_its_own_key_only() {
        let a = Identity::from_seed([1; 32]);
        let r = IdentityRecord::sign(&a, 5, 1000);
        assert!(r.verify(&crate::signing::ED25519));
        assert_eq!(r.address(), a.address());
        let mut later = r;
        later.seq = 6;
        assert!(!later.verify(&crate::signing::ED25519));
        let b = Identity::from_seed([2; 32]);
        let mut stolen = IdentityRecord::sign(&b, 5, 1000);
        stolen.key = a.public_key();
        assert!(!stolen.verify(&crate::signing::ED25519));
    }

    #[test]
    fn only_the_recipient_can_acknowledge() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let mallory = Identity::from_seed([3; 32]);
        let e = env(&a, &b);
        assert!(Ack::sign(&b, &e).matches(&e, &crate::signing::ED25519));
        assert!(!Ack::sign(&mallory, &e).matches(&e, &crate::signing::ED25519));
        let other = env(&a, &mallory);
        assert!(!Ack::sign(&b, &other).matches(&e, &crate::signing::ED25519));
        let mut stretched = Ack::sign(&b, &e);
        stretched.expires_at_ms += 1;
        assert!(!stretched.matches(&e, &crate::signing::ED25519));
    }
}
