//! Identity records kept for others (the k nodes closest to an address keep
//! its record), and the write tokens that let only a node that receives at
//! its endpoint store one here (as BEP 5's tokens do for announces).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::message::IdentityRecord;
use crate::signing::Signatures;
use crate::wire::TOKEN_LEN;

/// Why a record is not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its signature fails, or it is expired, or it claims to live longer
    /// than allowed.
    Invalid,
    /// We keep a newer one (or this very one).
    Stale,
    /// No room, and it is for an address farther from us than all we keep.
    Full,
}

/// Records kept for others, capped; the one for the address farthest from
/// us gives way first.
#[derive(Clone, Debug)]
pub struct RecordStore {
    me: Address,
    cap: usize,
    max_ttl_ms: u64,
    /// Boxed: a record is about 270 bytes (its key is kept decompressed),
    /// and an ordered map's node has room for 11 values whether it holds
    /// 1 or 11.
    map: BTreeMap<Address, Box<IdentityRecord>>,
    /// No record expires before this (a lower bound: a record replaced or
    /// evicted may have set it), so the minutely sweep skips the walk
    /// until one may have.
    earliest_expiry_ms: u64,
    signatures: &'static dyn Signatures,
}

impl RecordStore {
    /// An empty store for node `me`, keeping at most `cap` records that
    /// live at most `max_ttl` from when they are stored, checking their
    /// signatures with `signatures`.
    pub fn new(
        me: Address,
        cap: usize,
        max_ttl: Duration,
        signatures: &'static dyn Signatures,
    ) -> RecordStore {
        RecordStore {
            me,
            cap,
            max_ttl_ms: max_ttl.as_millis() as u64,
            map: BTreeMap::new(),
            earliest_expiry_ms: u64::MAX,
            signatures,
        }
    }

    /// Number of records kept.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The record kept for `a`, if any (and not expired at `now_ms`).
    pub fn get(&self, a: &Address, now_ms: u64) -> Option<&IdentityRecord> {
        self.map
            .get(a)
            .map(|r| &**r)
            .filter(|r| r.expires_at_ms > now_ms)
    }

    /// Whether `r` is a record anyone may rely on at `now_ms`.
    pub fn valid(&self, r: &IdentityRecord, now_ms: u64) -> bool {
        r.expires_at_ms > now_ms
            && r.expires_at_ms <= now_ms.saturating_add(self.max_ttl_ms)
            && r.verify(self.signatures)
    }

    /// Keep `r`, checked, if it is newer than what we keep for its address
    /// and there is room.
    pub fn put(&mut self, r: IdentityRecord, now_ms: u64) -> Result<(), Refusal> {
        if !self.valid(&r, now_ms) {
            return Err(Refusal::Invalid);
        }
        let a = r.address();
        if let Some(old) = self.map.get(&a) {
            if old.seq >= r.seq {
                return Err(Refusal::Stale);
            }
        } else if self.map.len() >= self.cap {
            self.expire(now_ms);
            if self.map.len() >= self.cap {
                let mine = a.distance(&self.me);
                let farthest = self
                    .map
                    .keys()
                    .max_by_key(|k| k.distance(&self.me))
                    .copied();
                match farthest {
                    Some(f) if f.distance(&self.me) > mine => {
                        self.map.remove(&f);
                    }
                    _ => return Err(Refusal::Full),
                }
            }
        }
        self.earliest_expiry_ms = self.earliest_expiry_ms.min(r.expires_at_ms);
        self.map.insert(a, Box::new(r));
        Ok(())
    }

    /// Forget records expired at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        if now_ms < self.earliest_expiry_ms {
            return;
        }
        self.map.retain(|_, r| r.expires_at_ms > now_ms);
        self.earliest_expiry_ms = self
            .map
            .values()
            .map(|r| r.expires_at_ms)
            .min()
            .unwrap_or(u64::MAX);
    }
}

/// Write tokens: a token names an endpoint and is valid for two rotations
/// of a secret only this node knows, so nobody can store a record here
/// from an endpoint it does not receive at.
#[derive(Clone, Debug)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated_at: Instant,
    every: Duration,
}

impl Tokens {
    /// Tokens from `secret`, rotated every `every`.
    pub fn new(secret: [u8; 16], now: Instant, every: Duration) -> Tokens {
        Tokens {
            current: secret,
            previous: secret,
            rotated_at: now,
            every,
        }
    }

    /// Rotate if due, taking the next secret from `fresh`.
    pub fn rotate(&mut self, now: Instant, fresh: impl FnOnce() -> [u8; 16]) {
        if now.saturating_duration_since(self.rotated_at) >= self.every {
            self.previous = self.current;
            self.current = fresh();
            self.rotated_at = now;
        }
    }

    fn make_with(secret: &[u8; 16], endpoint: &SocketAddr) -> [u8; TOKEN_LEN] {
        let mut h = Sha256::new();
        h.update(b"comm/v1/token");
        h.update(secret);
        match endpoint.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => h.update(v4.octets()),
            std::net::IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.update(endpoint.port().to_be_bytes());
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(&h.finalize()[..TOKEN_LEN]);
        out
    }

    /// The token for `endpoint` now.
    pub fn make(&self, endpoint: &SocketAddr) -> [u8; TOKEN_LEN] {
        Self::make_with(&self.current, endpoint)
    }

    /// Whether `token` is one we gave `endpoint` this or the last period.
    pub fn check(&self, endpoint: &SocketAddr, token: &[u8; TOKEN_LEN]) -> bool {
        Self::make_with(&self.current, endpoint) == *token
            || Self::make_with(&self.previous, endpoint) == *token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn records_are_checked_replaced_by_newer_and_capped_by_distance() {
        let me = Address([0; 20]);
        let mut store = RecordStore::new(me, 1, Duration::from_secs(100), &crate::signing::ED25519);
        let a = Identity::from_seed([1; 32]);
        let b = Identity::from_seed([2; 32]);
        let now = 1_000;
        assert_eq!(
            store.put(IdentityRecord::sign(&a, 1, now + 50_000), now),
            Ok(())
        );
        assert_eq!(
            store.put(IdentityRecord::sign(&a, 1, now + 50_000), now),
            Err(Refusal::Stale)
        );
        assert_eq!(
            store.put(IdentityRecord::sign(&a, 2, now + 60_000), now),
            Ok(())
        );
        assert_eq!(store.get(&a.address(), now).map(|r| r.seq), Some(2));
        assert_eq!(
            store.put(IdentityRecord::sign(&a, 3, now + 500_000), now),
            Err(Refusal::Invalid),
            "lives longer than allowed"
        );
        let mut forged = IdentityRecord::sign(&b, 9, now + 1000);
        forged.key = a.public_key();
        assert_eq!(store.put(forged, now), Err(Refusal::Invalid));
        // Full: b goes in only if nearer us than a.
        let b_nearer = b.address().distance(&me) < a.address().distance(&me);
        let r = store.put(IdentityRecord::sign(&b, 1, now + 1000), now);
        assert_eq!(r.is_ok(), b_nearer);
        assert_eq!(store.len(), 1);
        assert!(store.get(&a.address(), now + 70_000).is_none(), "expired");
    }

    #[test]
    fn a_token_is_good_for_its_endpoint_for_two_periods() {
        let t0 = Instant::now();
        let every = Duration::from_secs(300);
        let mut t = Tokens::new([1; 16], t0, every);
        let a: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:4001".parse().unwrap();
        let tok = t.make(&a);
        assert!(t.check(&a, &tok));
        assert!(!t.check(&b, &tok));
        t.rotate(t0 + every, || [2; 16]);
        assert!(t.check(&a, &tok), "previous period");
        t.rotate(t0 + every * 2, || [3; 16]);
        assert!(!t.check(&a, &tok), "two rotations on");
    }
}
