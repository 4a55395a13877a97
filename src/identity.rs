//! A node's identity: an Ed25519 key pair, and its address SHA-1(public key).
//!
//! The key is derived from the user's SECRET with Argon2id (so guessing a
//! secret costs real memory and time per guess) or loaded from a key file.

use std::fs;
use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use crate::address::Address;
use crate::signing::{Signatures, ED25519};

/// Argon2id memory cost in KiB (64 MiB), from RFC 9106's second recommended setting.
pub const KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes over memory.
pub const KDF_ITERATIONS: u32 = 3;
/// Argon2id lanes.
pub const KDF_PARALLELISM: u32 = 1;
/// Fixed salt: the same SECRET must give the same address on any machine.
pub const KDF_SALT: &[u8] = b"comm/identity/v1";

/// Why an identity could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The secret was empty.
    #[error("the secret must not be empty")]
    EmptySecret,
    /// Argon2 refused its parameters or input.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file does not hold a 32-byte seed in 64 hex characters.
    #[error("key file {0}: expected 64 hex characters (a 32-byte Ed25519 seed)")]
    BadKeyFile(String),
}

/// A node's key pair and the address derived from it.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    address: Address,
    /// How it signs and how its node verifies others: always Ed25519 but in
    /// the simulator (see [`crate::signing`]).
    signatures: &'static dyn Signatures,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.address)
    }
}

impl Identity {
    /// The identity for a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        let signing = SigningKey::from_bytes(&seed);
        let address = Address::of_key(signing.verifying_key().as_bytes());
        Identity {
            signing,
            address,
            signatures: &ED25519,
        }
    }

    /// The same identity signing with `signatures`: only the simulator
    /// uses this, to give its nodes the cheap stand-in.
    pub fn with_signatures(mut self, signatures: &'static dyn Signatures) -> Identity {
        self.signatures = signatures;
        self
    }

    /// The scheme this identity signs with, and its node verifies with.
    pub fn signatures(&self) -> &'static dyn Signatures {
        self.signatures
    }

    /// A 32-byte key for encrypting this identity's own files (the
    /// conversation log), derived from the private key with HKDF-SHA256
    /// and `label`: only the holder of the secret can read them, and each
    /// label gives an unrelated key.
    pub fn storage_key(&self, label: &[u8]) -> [u8; 32] {
        let hk =
            hkdf::Hkdf::<sha2::Sha256>::new(Some(b"comm/v1/storage"), &self.signing.to_bytes());
        let mut out = [0u8; 32];
        // Fails only for outputs over 255 * 32 bytes; 32 always fits.
        let _ = hk.expand(label, &mut out);
        out
    }

    /// Derive the identity from a secret with Argon2id (parameters above).
    pub fn from_secret(secret: &str) -> Result<Identity, IdentityError> {
        if secret.is_empty() {
            return Err(IdentityError::EmptySecret);
        }
        let params = Params::new(KDF_MEMORY_KIB, KDF_ITERATIONS, KDF_PARALLELISM, Some(32))
            .map_err(|e| IdentityError::Kdf(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut seed = [0u8; 32];
        argon
            .hash_password_into(secret.as_bytes(), KDF_SALT, &mut seed)
            .map_err(|e| IdentityError::Kdf(e.to_string()))?;
        Ok(Identity::from_seed(seed))
    }

    /// Load the seed from `path` (64 hex characters), or create the file with
    /// a fresh random seed if it does not exist.
    pub fn from_key_file(path: &Path) -> Result<Identity, IdentityError> {
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io {
            path: shown.clone(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => {
                let mut seed = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut seed)
                    .map_err(|_| IdentityError::BadKeyFile(shown.clone()))?;
                Ok(Identity::from_seed(seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
                let mut options = fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io)?;
                file.write_all(hex::encode(seed).as_bytes()).map_err(io)?;
                file.write_all(b"\n").map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(Identity::from_seed(seed))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// A warning if the key file at `path` can be read by others than its
    /// owner (anyone who reads it can act as this identity).
    pub fn key_file_warning(path: &Path) -> Option<String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(path).ok()?.permissions().mode();
            if mode & 0o077 != 0 {
                return Some(format!(
                    "key file {} can be read by others (mode {:o}); anyone who reads it can act as you: chmod 600 it",
                    path.display(),
                    mode & 0o777
                ));
            }
        }
        #[cfg(not(unix))]
        let _ = path;
        None
    }

    /// This node's overlay address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Sign `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signatures.sign(&self.signing, message)
    }

    /// The X25519 secret that opens bodies sealed to this identity: the
    /// Ed25519 secret scalar (see [`crate::crypto`]).
    pub fn box_secret(&self) -> [u8; 32] {
        self.signing.to_scalar_bytes()
    }
}

/// Domain-separation prefix of the proof-of-key signature.
pub const PROOF_DOMAIN: &[u8] = b"comm/v1/proof";

/// The bytes signed to answer `challenge`.
pub fn proof_message(challenge: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROOF_DOMAIN.len() + challenge.len());
    m.extend_from_slice(PROOF_DOMAIN);
    m.extend_from_slice(challenge);
    m
}

/// Check that `key` belongs to `address` and signed `message` (with
/// Ed25519, strict verification rejects malleable and small-order forms).
pub fn verify(
    signatures: &dyn Signatures,
    address: &Address,
    key: &VerifyingKey,
    message: &[u8],
    sig: &Signature,
) -> bool {
    Address::of_key(key.as_bytes()) == *address && signatures.verify(key, message, sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_same_address() {
        let a = Identity::from_secret("correct horse").unwrap();
        let b = Identity::from_secret("correct horse").unwrap();
        let c = Identity::from_secret("battery staple").unwrap();
        assert_eq!(a.address(), b.address());
        assert_ne!(a.address(), c.address());
        assert_eq!(a.address(), Address::of_key(a.public_key().as_bytes()));
    }

    #[test]
    fn empty_secret_is_refused() {
        assert!(matches!(
            Identity::from_secret(""),
            Err(IdentityError::EmptySecret)
        ));
    }

    #[test]
    fn proof_verifies_only_for_owner() {
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let msg = proof_message(&[9; 16]);
        let sig = a.sign(&msg);
        assert!(verify(&ED25519, &a.address(), &a.public_key(), &msg, &sig));
        assert!(!verify(&ED25519, &b.address(), &a.public_key(), &msg, &sig));
        assert!(!verify(
            &ED25519,
            &a.address(),
            &a.public_key(),
            &proof_message(&[8; 16]),
            &sig
        ));
    }

    #[test]
    fn key_file_is_created_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let a = Identity::from_key_file(&path).unwrap();
        let b = Identity::from_key_file(&path).unwrap();
        assert_eq!(a.address(), b.address());
        assert_eq!(Identity::key_file_warning(&path), None, "created 0600");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(Identity::key_file_warning(&path).is_some_and(|w| w.contains("644")));
        }
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            Identity::from_key_file(&path),
            Err(IdentityError::BadKeyFile(_))
        ));
    }
}
