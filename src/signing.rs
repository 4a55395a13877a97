//! The signature scheme a node signs and verifies with, behind a small trait.
//!
//! Every real node (the `comm` binary, the runtime, every test over real
//! sockets) uses [`Ed25519`]: strict verification, as protocol.md requires.
//! The simulator may give its nodes [`SimSignatures`] instead, a cheap
//! deterministic stand-in that keeps the logic of every check (a signature
//! over other bytes, or by another key, still fails) at a small fraction of
//! the CPU, so that ten thousand nodes fit in one process. The stand-in is
//! **not a signature**: anyone who knows a public key can compute it. Nothing
//! outside [`crate::sim`] selects it, and `Identity::from_seed`,
//! `from_secret` and `from_key_file` always give Ed25519.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signs and verifies on behalf of an [`crate::Identity`].
pub trait Signatures: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and reports.
    fn name(&self) -> &'static str;
    /// Sign `message` with `key`.
    fn sign(&self, key: &SigningKey, message: &[u8]) -> Signature;
    /// Whether `signature` by `key` covers exactly `message`.
    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool;
}

/// Ed25519 with strict verification (rejects malleable and small-order
/// forms): the scheme of the protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ed25519;

impl Signatures for Ed25519 {
    fn name(&self) -> &'static str {
        "ed25519"
    }

    fn sign(&self, key: &SigningKey, message: &[u8]) -> Signature {
        key.sign(message)
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
        key.verify_strict(message, signature).is_ok()
    }
}

/// The simulator's stand-in: the "signature" is SHA-256 of a domain tag,
/// the public key and the message, twice (64 bytes). It fails exactly where
/// Ed25519 fails for honest-looking inputs (other bytes, another key), which
/// is what the simulated protocol checks; it resists no forger.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimSignatures;

impl SimSignatures {
    fn tag(key: &VerifyingKey, message: &[u8]) -> [u8; 64] {
        let first: [u8; 32] = Sha256::new()
            .chain_update(b"comm/sim-signature/1")
            .chain_update(key.as_bytes())
            .chain_update(message)
            .finalize()
            .into();
        let second: [u8; 32] = Sha256::new()
            .chain_update(b"comm/sim-signature/2")
            .chain_update(first)
            .finalize()
            .into();
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&first);
        out[32..].copy_from_slice(&second);
        out
    }
}

impl Signatures for SimSignatures {
    fn name(&self) -> &'static str {
        "sim-stand-in"
    }

    fn sign(&self, key: &SigningKey, message: &[u8]) -> Signature {
        Signature::from_bytes(&Self::tag(&key.verifying_key(), message))
    }

    fn verify(&self, key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
        Self::tag(key, message) == signature.to_bytes()
    }
}

/// The scheme of every real node.
pub static ED25519: Ed25519 = Ed25519;
/// The simulator's stand-in (see [`SimSignatures`]).
pub static SIM_SIGNATURES: SimSignatures = SimSignatures;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(s: &dyn Signatures) {
        let a = SigningKey::from_bytes(&[1; 32]);
        let b = SigningKey::from_bytes(&[2; 32]);
        let sig = s.sign(&a, b"hello");
        assert!(s.verify(&a.verifying_key(), b"hello", &sig));
        assert!(!s.verify(&a.verifying_key(), b"hellp", &sig));
        assert!(!s.verify(&b.verifying_key(), b"hello", &sig));
        let mut bytes = sig.to_bytes();
        bytes[40] ^= 1;
        assert!(!s.verify(&a.verifying_key(), b"hello", &Signature::from_bytes(&bytes)));
    }

    #[test]
    fn both_schemes_reject_other_bytes_keys_and_tampering() {
        check(&ED25519);
        check(&SIM_SIGNATURES);
    }

    #[test]
    fn the_schemes_do_not_accept_each_other() {
        let a = SigningKey::from_bytes(&[1; 32]);
        let sim = SIM_SIGNATURES.sign(&a, b"m");
        assert!(!ED25519.verify(&a.verifying_key(), b"m", &sim));
        let real = ED25519.sign(&a, b"m");
        assert!(!SIM_SIGNATURES.verify(&a.verifying_key(), b"m", &real));
    }
}
